//! diskbench — file-system throughput on a datastore. The same static
//! binary runs as PID 1 on Mantle (the datastore auto-mounted at
//! `/vmfs/volumes/datastore1`) and on Debian's Linux (the same FAT image
//! mounted at `/mnt` by the initramfs), on the same QEMU disk model, so
//! the ratio of the two figures means something even though the emulator
//! slows both.
//!
//! `diskbench [DIR] [MIB] [TREE [DEVICE]]`: sequential write (1 MiB
//! writes, then fsync) and sequential read of a MIB-MiB file, then 4 KiB
//! random reads and 4 KiB random writes (each followed by fsync) inside
//! it; then, if TREE exists (after mounting DEVICE there as vfat when
//! given, timed: `mount_10k`), a walk reading every directory under TREE
//! (`walk_10k`, `tree_files`). On Mantle (no
//! arguments) TREE is `/vmfs/volumes/MOUNT10K`, which the kernel mounted
//! at boot (its log says how long that took). Before each
//! read pass Linux's page cache is dropped (`/proc/sys/vm/drop_caches`);
//! Mantle has no page cache over its datastores (its block cache is
//! 16 MiB). Prints `diskbench: <name> <value> <unit>` lines, removes the
//! file, and powers off when it is PID 1.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

const CHUNK: usize = 1 << 20;
const RANDOM_OPS: u32 = 2000;
const RANDOM_WRITES: u32 = 300;

fn ensure_console() {
    // SAFETY: fcntl on fd 1 only queries it.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    // SAFETY: plain system calls with valid C strings (Linux initramfs without /dev/console).
    unsafe {
        libc::mkdir(c"/dev".as_ptr(), 0o755);
        libc::mount(c"devtmpfs".as_ptr(), c"/dev".as_ptr(), c"devtmpfs".as_ptr(), 0, std::ptr::null());
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for t in 0..3 {
                libc::dup2(fd, t);
            }
        }
    }
}

fn drop_caches() {
    // Linux only; Mantle has no such file (and no page cache to drop).
    if let Ok(mut f) = OpenOptions::new().write(true).open("/proc/sys/vm/drop_caches") {
        let _ = f.write_all(b"3\n");
    }
}

/// xorshift64: the same offsets on both systems.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn run(dir: &str, mib: usize) -> std::io::Result<()> {
    let path = format!("{dir}/diskbench.dat");
    let mut buf = vec![0u8; CHUNK];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for b in buf.chunks_mut(8) {
        b.copy_from_slice(&rng.next().to_le_bytes()[..b.len()]);
    }
    let bytes = (mib * CHUNK) as f64;

    let t = Instant::now();
    let mut f = File::create(&path)?;
    for i in 0..mib {
        buf[0] = i as u8;
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    drop(f);
    println!("diskbench: seq_write {:.2} MB/s", bytes / t.elapsed().as_secs_f64() / 1e6);

    drop_caches();
    let t = Instant::now();
    let mut f = File::open(&path)?;
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let secs = t.elapsed().as_secs_f64();
    if total != mib * CHUNK {
        println!("diskbench: error read {total} bytes of {}", mib * CHUNK);
    }
    println!("diskbench: seq_read {:.2} MB/s", total as f64 / secs / 1e6);

    drop_caches();
    let blocks = (mib * CHUNK / 4096) as u64;
    let mut block = [0u8; 4096];
    let t = Instant::now();
    for _ in 0..RANDOM_OPS {
        f.read_exact_at(&mut block, rng.next() % blocks * 4096)?;
    }
    println!("diskbench: rand_read_4k {:.0} IOPS", RANDOM_OPS as f64 / t.elapsed().as_secs_f64());
    drop(f);

    let f = OpenOptions::new().write(true).open(&path)?;
    let t = Instant::now();
    for _ in 0..RANDOM_WRITES {
        f.write_all_at(&block, rng.next() % blocks * 4096)?;
        f.sync_data()?;
    }
    println!("diskbench: rand_write_4k_fsync {:.0} IOPS", RANDOM_WRITES as f64 / t.elapsed().as_secs_f64());
    drop(f);
    std::fs::remove_file(&path)
}

/// Files under `dir`, by reading every directory (the entry types come
/// with `getdents64`; no stat per file).
fn walk(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut files = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            files += walk(&e.path())?;
        } else {
            files += 1;
        }
    }
    Ok(files)
}

/// Mounts `device` at `tree` (Linux) timing it, then walks `tree`.
fn tree(tree: &str, device: Option<&str>) -> std::io::Result<()> {
    if let Some(dev) = device {
        std::fs::create_dir_all(tree)?;
        let (dev_c, tree_c) = (std::ffi::CString::new(dev)?, std::ffi::CString::new(tree)?);
        let t = Instant::now();
        // SAFETY: valid C strings; no mount data.
        let r = unsafe { libc::mount(dev_c.as_ptr(), tree_c.as_ptr(), c"vfat".as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        println!("diskbench: mount_10k {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    }
    if !std::path::Path::new(tree).is_dir() {
        return Ok(());
    }
    drop_caches();
    let t = Instant::now();
    let files = walk(std::path::Path::new(tree))?;
    println!("diskbench: walk_10k {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    println!("diskbench: tree_files {files} files");
    Ok(())
}

fn main() {
    ensure_console();
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| String::from("/vmfs/volumes/datastore1"));
    let mib: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let tree_dir = args.get(3).cloned().unwrap_or_else(|| String::from("/vmfs/volumes/MOUNT10K"));
    println!("diskbench: start {dir} {mib} MiB");
    match run(&dir, mib).and_then(|()| tree(&tree_dir, args.get(4).map(String::as_str))) {
        Ok(()) => println!("diskbench: done"),
        Err(e) => println!("diskbench: error {e}\ndiskbench: done"),
    }
    // SAFETY: getpid has no side effects.
    if unsafe { libc::getpid() } == 1 {
        // SAFETY: plain system calls without pointers; as PID 1 the
        // benchmark owns the machine, and powering off is its end.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}
