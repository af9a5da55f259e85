//! Datastore disk images on the host: `image-builder datastore
//! new|ls|put|get`, and the disks `image-builder run` attaches.
//!
//! An image is a sparse raw disk with a GPT holding one FAT partition
//! (FAT32 from 512 MiB up) labelled like ESXi's first datastore,
//! `datastore1`. It is made and read with the kernel's own storage crate
//! (`vmk-storage`: GPT writer, FAT format, datastore API), so the host
//! tools exercise the same code the VMkernel runs; `fsck.fat`, mtools and
//! `qemu-img` check the result in the tests.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vmk_storage::block::{BlockDevice, BlockError, Window};
use vmk_storage::cache::{BlockCache, CacheConfig};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, FileKind, FixedClock, FormatOptions, MountOptions, OpenFlags, format};
use vmk_storage::partition::{GPT_BASIC_DATA, Guid, NewPartition, PartitionError, build_gpt, read_table};
use vmk_storage::stats::NoClock;

/// The default datastore disk: 16 GiB, sparse.
pub const DEFAULT_SIZE: u64 = 16 << 30;
pub const DEFAULT_LABEL: &str = "datastore1";

/// `target/mantle/datastore1.img`.
pub fn default_image() -> PathBuf {
    crate::out_dir().join("datastore1.img")
}

/// How `run` attaches datastore disks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    VirtioBlk,
    Nvme,
}

/// QEMU arguments attaching each image as a raw disk on `bus`.
pub fn qemu_disk_args(images: &[PathBuf], bus: DiskBus) -> Vec<String> {
    let mut args = Vec::new();
    for (i, img) in images.iter().enumerate() {
        args.push("-drive".into());
        args.push(format!("file={},format=raw,if=none,id=ds{i},cache=writeback", img.display()));
        args.push("-device".into());
        args.push(match bus {
            DiskBus::VirtioBlk => format!("virtio-blk-pci,drive=ds{i}"),
            DiskBus::Nvme => format!("nvme,drive=ds{i},serial=mantle-ds{i}"),
        });
    }
    args
}

/// A raw image file as a block device (512-byte sectors).
pub struct FileDisk {
    file: File,
    sectors: u64,
    read_only: bool,
}

impl FileDisk {
    pub fn open(path: &Path, writable: bool) -> Result<FileDisk, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        Ok(FileDisk { file, sectors: len / 512, read_only: !writable })
    }
}

impl BlockDevice for FileDisk {
    fn sector_size(&self) -> u32 {
        512
    }
    fn sector_count(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        vmk_storage::block::check_request(self, lba, buf.len())?;
        self.file.read_exact_at(buf, lba * 512).map_err(|_| BlockError::Io)
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        vmk_storage::block::check_request(self, lba, buf.len())?;
        self.file.write_all_at(buf, lba * 512).map_err(|_| BlockError::Io)
    }
    fn flush(&self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|_| BlockError::Io)
    }
}

/// Host entropy without a dependency: the standard library's randomly
/// keyed hasher, mixed with the time and process id.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

fn random_guid() -> Guid {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&random_u64().to_le_bytes());
    g[8..].copy_from_slice(&random_u64().to_le_bytes());
    g[7] = (g[7] & 0x0F) | 0x40; // version 4 (the mixed-endian field 3's high byte)
    g[8] = (g[8] & 0x3F) | 0x80; // RFC 4122 variant
    Guid(g)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Parses `16G`, `512M`, `64K` or a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("bad size {s:?}: unit must be K, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} too large"))
}

/// Creates a sparse image of `size` bytes: GPT, one basic-data partition
/// named `label` from 1 MiB to the end, formatted FAT (FAT32 from 512 MiB)
/// with the same label. Refuses to overwrite an existing file.
/// Images this large (and larger) get FAT32; smaller ones the FAT the
/// formatter picks for their size (FAT16 or FAT12).
pub const FAT32_FROM_IMAGE_BYTES: u64 = 512 << 20;

pub fn create(path: &Path, size: u64, label: &str) -> Result<(), String> {
    if size < 8 << 20 {
        return Err(format!("a datastore image needs at least 8 MiB (asked for {size} bytes)"));
    }
    if label.is_empty() || label.len() > 11 {
        return Err(format!("label {label:?} must be 1 to 11 characters (a FAT limit)"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(size).map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    drop(file);
    let result = (|| {
        let disk: Arc<dyn BlockDevice> = Arc::new(FileDisk::open(path, true)?);
        let sectors = disk.sector_count();
        let part = NewPartition { kind: GPT_BASIC_DATA, guid: random_guid(), name: label, start: 0, sectors: 0 };
        let (writes, placed) = build_gpt(512, sectors, random_guid(), &[part])?;
        for (lba, data) in writes {
            disk.write_sectors(lba, &data).map_err(|e| format!("writing the GPT: {e}"))?;
        }
        let p = &placed[0];
        let window: Arc<dyn BlockDevice> =
            Arc::new(Window::new(disk.clone(), p.start, p.sectors).map_err(|e| e.to_string())?);
        let cache = Arc::new(BlockCache::new(window, Arc::new(NoClock), CacheConfig::default()));
        // FAT32 from a 512 MiB image (whose partition is 1 MiB and the
        // backup GPT smaller): README's promise. With 4 KiB clusters that is
        // ~130,000 clusters, well inside FAT32's range.
        let kind = (size >= FAT32_FROM_IMAGE_BYTES).then_some(FatKind::Fat32);
        format(&cache, &FormatOptions { label, volume_id: random_u64() as u32, kind, bytes_per_cluster: None })
            .map_err(|e| format!("formatting: {e}"))?;
        // Mount once to lay down the journal and check the result.
        let ds = mount(cache, false)?;
        ds.unmount().map_err(|e| format!("unmounting: {e}"))?;
        disk.flush().map_err(|e| e.to_string())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Creates the default image if it is absent; returns its path.
pub fn ensure_default() -> Result<PathBuf, String> {
    let path = default_image();
    if !path.exists() {
        create(&path, DEFAULT_SIZE, DEFAULT_LABEL)?;
        println!("created datastore disk {} (16 GiB sparse, GPT, FAT32 \"{DEFAULT_LABEL}\")", path.display());
    }
    Ok(path)
}

fn mount(cache: Arc<BlockCache>, read_only: bool) -> Result<Datastore, String> {
    let ds = Datastore::mount(cache, Arc::new(FixedClock(now())), MountOptions { read_only, ..Default::default() })
        .map_err(|e| e.to_string())?;
    for m in ds.messages() {
        eprintln!("datastore {}: {m}", ds.label());
    }
    Ok(ds)
}

/// Mounts the datastore in an image: the first FAT partition of its
/// partition table, or the whole image if it has none.
pub fn open(path: &Path, writable: bool) -> Result<Datastore, String> {
    let disk: Arc<dyn BlockDevice> = Arc::new(FileDisk::open(path, writable)?);
    let volume: Arc<dyn BlockDevice> = match read_table(&*disk) {
        Ok(t) => {
            let p = t
                .partitions
                .iter()
                .find(|p| p.kind.may_be_fat())
                .ok_or_else(|| format!("{}: no FAT partition in its partition table", path.display()))?;
            Arc::new(Window::new(disk.clone(), p.start, p.sectors).map_err(|e| e.to_string())?)
        }
        Err(PartitionError::NoTable) => disk,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let cache = Arc::new(BlockCache::new(volume, Arc::new(NoClock), CacheConfig::default()));
    mount(cache, !writable).map_err(|e| format!("{}: {e}", path.display()))
}

/// `ls`: one line per entry: kind, size, name.
pub fn ls(image: &Path, dir: &str) -> Result<Vec<String>, String> {
    let ds = open(image, false)?;
    let st = ds.stat(dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut entries = if st.kind == FileKind::Dir {
        ds.readdir(dir).map_err(|e| format!("{dir}: {e}"))?
    } else {
        vec![vmk_storage::fat::DirEntry {
            name: dir.rsplit('/').next().unwrap_or(dir).into(),
            kind: st.kind,
            size: st.size,
        }]
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries
        .into_iter()
        .map(|e| match e.kind {
            FileKind::Dir => format!("d {:>12} {}/", "-", e.name),
            FileKind::File => format!("- {:>12} {}", e.size, e.name),
        })
        .collect())
}

fn join(dir: &str, name: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") }
}

fn put_file(ds: &mut Datastore, host: &Path, dest: &str) -> Result<u64, String> {
    let src = File::open(host).map_err(|e| format!("cannot open {}: {e}", host.display()))?;
    let len = src.metadata().map_err(|e| e.to_string())?.len();
    if len > vmk_storage::fat::MAX_FILE_SIZE {
        return Err(format!(
            "{} is {len} bytes: FAT files end at 4 GiB - 1 (split disks with qemu-img convert -O vmdk -o subformat=twoGbMaxExtentSparse)",
            host.display()
        ));
    }
    let h = ds.open(dest, OpenFlags::WRITE_CREATE_TRUNC).map_err(|e| format!("{dest}: {e}"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let n = src.read_at(&mut buf, off).map_err(|e| format!("reading {}: {e}", host.display()))?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += ds.write_at(h, off + done as u64, &buf[done..n]).map_err(|e| format!("{dest}: {e}"))?;
        }
        off += n as u64;
    }
    ds.close(h).map_err(|e| format!("{dest}: {e}"))?;
    Ok(off)
}

fn put_tree(ds: &mut Datastore, host: &Path, dest: &str, count: &mut (u64, u64)) -> Result<(), String> {
    let meta = std::fs::metadata(host).map_err(|e| format!("{}: {e}", host.display()))?;
    if meta.is_dir() {
        match ds.mkdir(dest) {
            Ok(()) | Err(vmk_storage::fat::FsError::Exists) => {}
            Err(e) => return Err(format!("{dest}: {e}")),
        }
        let mut entries: Vec<_> = std::fs::read_dir(host).map_err(|e| e.to_string())?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            put_tree(ds, &e.path(), &join(dest, &name), count)?;
        }
    } else {
        count.1 += put_file(ds, host, dest)?;
        count.0 += 1;
    }
    Ok(())
}

/// `put`: copies a host file or directory (recursively) to `dest` on the
/// datastore; a `dest` that is a directory receives it under its own name.
/// Returns (files, bytes) copied.
pub fn put(image: &Path, host: &Path, dest: &str) -> Result<(u64, u64), String> {
    let mut ds = open(image, true)?;
    let name = host.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let target = match ds.stat(dest) {
        Ok(st) if st.kind == FileKind::Dir => join(dest, &name),
        _ => dest.trim_end_matches('/').to_string(),
    };
    if target.is_empty() {
        return Err("destination is the volume root; name a file or directory".into());
    }
    let mut count = (0, 0);
    let r = put_tree(&mut ds, host, &target, &mut count);
    ds.unmount().map_err(|e| format!("unmounting: {e}"))?;
    r.map(|()| count)
}

/// `get`: copies a file (or directory, recursively) from the datastore to
/// the host. Returns (files, bytes) copied.
pub fn get(image: &Path, src: &str, host: &Path) -> Result<(u64, u64), String> {
    let mut ds = open(image, false)?;
    let st = ds.stat(src).map_err(|e| format!("{src}: {e}"))?;
    let name = src.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string();
    let target = if host.is_dir() && !name.is_empty() { host.join(&name) } else { host.to_path_buf() };
    let mut count = (0, 0);
    get_tree(&mut ds, src, st.kind, &target, &mut count)?;
    Ok(count)
}

fn get_tree(ds: &mut Datastore, src: &str, kind: FileKind, host: &Path, count: &mut (u64, u64)) -> Result<(), String> {
    match kind {
        FileKind::Dir => {
            std::fs::create_dir_all(host).map_err(|e| format!("{}: {e}", host.display()))?;
            for e in ds.readdir(src).map_err(|e| format!("{src}: {e}"))? {
                get_tree(ds, &join(src, &e.name), e.kind, &host.join(&e.name), count)?;
            }
        }
        FileKind::File => {
            let h = ds.open(src, OpenFlags::READ).map_err(|e| format!("{src}: {e}"))?;
            let out = File::create(host).map_err(|e| format!("cannot create {}: {e}", host.display()))?;
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            loop {
                let n = ds.read_at(h, off, &mut buf).map_err(|e| format!("{src}: {e}"))?;
                if n == 0 {
                    break;
                }
                out.write_all_at(&buf[..n], off).map_err(|e| format!("writing {}: {e}", host.display()))?;
                off += n as u64;
            }
            ds.close(h).map_err(|e| format!("{src}: {e}"))?;
            count.0 += 1;
            count.1 += off;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tool(name: &str, package: &str) -> PathBuf {
        crate::hosttools::find_exe(name)
            .or_else(|| ["/usr/sbin", "/sbin"].iter().map(|d| Path::new(d).join(name)).find(|p| p.is_file()))
            .unwrap_or_else(|| panic!("{name} not found: install {package} (.ci/run does)"))
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.env("MTOOLS_SKIP_CHECK", "1").output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{cmd:?}: {}\n{text}", out.status);
        text
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("16G"), Ok(16 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err() && parse_size("G").is_err() && parse_size("99999999999T").is_err());
    }

    #[test]
    fn qemu_args_attach_each_image() {
        let imgs = [PathBuf::from("/a.img"), PathBuf::from("/b.img")];
        assert_eq!(
            qemu_disk_args(&imgs, DiskBus::VirtioBlk),
            [
                "-drive",
                "file=/a.img,format=raw,if=none,id=ds0,cache=writeback",
                "-device",
                "virtio-blk-pci,drive=ds0",
                "-drive",
                "file=/b.img,format=raw,if=none,id=ds1,cache=writeback",
                "-device",
                "virtio-blk-pci,drive=ds1"
            ]
        );
        assert_eq!(qemu_disk_args(&imgs[..1], DiskBus::Nvme)[3], "nvme,drive=ds0,serial=mantle-ds0");
    }

    /// The default 16 GiB image: sparse, raw to qemu-img, GPT with one
    /// FAT32 partition labelled datastore1.
    #[test]
    fn new_default_image_is_sparse_gpt_fat32_and_qemu_img_reads_it() {
        let qemu_img = tool("qemu-img", "qemu-utils");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("datastore1.img");
        create(&img, DEFAULT_SIZE, DEFAULT_LABEL).unwrap();
        assert!(create(&img, DEFAULT_SIZE, DEFAULT_LABEL).is_err(), "overwrote an existing image");
        let info = run(Command::new(&qemu_img).args(["info", "--output=json"]).arg(&img));
        assert!(info.contains("\"virtual-size\": 17179869184"), "{info}");
        assert!(info.contains("\"format\": \"raw\""), "{info}");
        use std::os::unix::fs::MetadataExt;
        let used = std::fs::metadata(&img).unwrap().blocks() * 512;
        assert!(used < 128 << 20, "image is not sparse: {used} bytes allocated");
        let disk = FileDisk::open(&img, false).unwrap();
        let t = read_table(&disk).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].name, "datastore1");
        assert_eq!(t.partitions[0].start, 2048);
        let ds = open(&img, false).unwrap();
        assert_eq!(ds.fat_kind(), FatKind::Fat32);
        assert_eq!(ds.label(), "DATASTORE1");
        let fs = ds.statfs().unwrap();
        assert!(fs.blocks * fs.block_size as u64 > 15 << 30, "{fs:?}");
        assert!(ls(&img, "/").unwrap().is_empty());
    }

    /// README: FAT32 from 512 MiB; smaller images get FAT16. fsck.fat
    /// agrees on the type and finds the volume clean.
    #[test]
    fn fat32_from_512_mib() {
        let fsck = tool("fsck.fat", "dosfstools");
        let dir = tempfile::tempdir().unwrap();
        for (size, want) in [(512u64 << 20, FatKind::Fat32), ((512 << 20) - (1 << 20), FatKind::Fat16)] {
            let img = dir.path().join(format!("ds{size}.img"));
            create(&img, size, "datastore1").unwrap();
            assert_eq!(open(&img, false).unwrap().fat_kind(), want, "{size} bytes");
            let part = dir.path().join("part.img");
            // The partition alone, kept sparse: 1 MiB in, up to the backup GPT.
            let count = size - (1 << 20) - 33 * 512;
            run(Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", part.display()))
                .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none", "skip=1048576"])
                .arg(format!("count={count}")));
            let out = run(Command::new(&fsck).arg("-n").arg("-v").arg(&part));
            let bits = if want == FatKind::Fat32 { "32" } else { "16" };
            assert!(out.contains(&format!("2 FATs, {bits} bit entries")), "{out}");
        }
    }

    /// put/get/ls on a small image; fsck.fat and mtools agree.
    #[test]
    fn put_get_ls_round_trip_checked_by_fsck_and_mtools() {
        let fsck = tool("fsck.fat", "dosfstools");
        let mtype = tool("mtype", "mtools");
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("ds.img");
        create(&img, 64 << 20, "datastore1").unwrap();
        let src = dir.path().join("My ISOs");
        std::fs::create_dir_all(src.join("nested dir")).unwrap();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 1000) as u8).collect();
        std::fs::write(src.join("installer image.iso"), &big).unwrap();
        std::fs::write(src.join("nested dir/readme.txt"), b"hello datastore\n").unwrap();
        assert_eq!(put(&img, &src, "/").unwrap(), (2, big.len() as u64 + 16));
        std::fs::write(dir.path().join("vm.vmx"), b"memsize = \"64\"\n").unwrap();
        put(&img, &dir.path().join("vm.vmx"), "/").unwrap();
        let listing = ls(&img, "/").unwrap();
        assert_eq!(listing, ["d            - My ISOs/", "-           15 vm.vmx"]);
        assert_eq!(ls(&img, "My ISOs").unwrap()[0], "-      3000000 installer image.iso");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        assert_eq!(get(&img, "My ISOs", &out).unwrap().0, 2);
        assert_eq!(std::fs::read(out.join("My ISOs/installer image.iso")).unwrap(), big);
        assert_eq!(std::fs::read(out.join("My ISOs/nested dir/readme.txt")).unwrap(), b"hello datastore\n");
        assert_eq!(get(&img, "missing", &out).unwrap_err(), "missing: no such file or directory");
        // The partition starts at 1 MiB: mtools reads it in place, fsck.fat
        // checks a copy of it.
        let spec = format!("{}@@1M", img.display());
        let t = run(Command::new(&mtype).args(["-i", &spec, "::/My ISOs/nested dir/readme.txt"]));
        assert_eq!(t, "hello datastore\n");
        let part = dir.path().join("part.img");
        let bytes = std::fs::read(&img).unwrap();
        std::fs::write(&part, &bytes[1 << 20..bytes.len() - 33 * 512]).unwrap();
        let report = run(Command::new(&fsck).arg("-n").arg(&part));
        assert!(report.contains(" files, "), "{report}");
    }
}
