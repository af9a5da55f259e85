//! The file systems user worlds see: the root ramfs unpacked from the boot
//! archive, /dev (with the serial console as a tty), /proc, and the
//! kernel's random source and wall clock behind them.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use spin::{Mutex, Once};
use vmkernel::csprng::Csprng;
use vmkernel::vfs::devfs::{self, RandomSource};
use vmkernel::vfs::procfs::text::{CpuTimes, LoadAvg, MemInfo, ProcessInfo, SystemStat, Uptime};
use vmkernel::vfs::procfs::{ProcFs, ProcProvider};
use vmkernel::vfs::ramfs::{RamFs, load::load_cpio};
use vmkernel::vfs::tty::{Tty, TtySink};
use vmkernel::vfs::{Clock, Credentials, Location, MountFlags, MountInfo, Timespec, Vfs};

use super::process;
use crate::{arch, console, mm, time, world};

static VFS: Once<Vfs> = Once::new();
static CONSOLE_TTY: Once<Arc<Tty>> = Once::new();
static RNG: Mutex<Option<Csprng>> = Mutex::new(None);
static KERNEL_CMDLINE: Once<String> = Once::new();
/// What serves `/proc/net/<name>` (registered by the network services,
/// which sit above the user-world layer).
static NET_FILES: Once<fn(&str) -> Option<String>> = Once::new();

/// Registers the source of the `/proc/net` files.
pub fn register_net_files(f: fn(&str) -> Option<String>) {
    NET_FILES.call_once(|| f);
}

pub fn vfs() -> Option<&'static Vfs> {
    VFS.get()
}

pub fn root() -> Option<Location> {
    VFS.get().map(|v| v.root())
}

pub fn console_tty() -> Option<&'static Arc<Tty>> {
    CONSOLE_TTY.get()
}

/// Wall-clock time (CLOCK_REALTIME) in ns since the Unix epoch.
// The wall clock is the framework's (`time::realtime_ns`); `hv` still
// reads it by this path until its next change.
pub use crate::time::realtime_ns;

struct KernelClock;

impl Clock for KernelClock {
    fn now(&self) -> Timespec {
        let ns = realtime_ns();
        Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as u32 }
    }
}

struct KernelRandom;

impl RandomSource for KernelRandom {
    fn fill(&self, buf: &mut [u8]) {
        fill_random(buf);
    }
}

/// Fills `buf` from the kernel CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    let mut g = RNG.lock();
    let rng = g.get_or_insert_with(|| Csprng::new(&seed()));
    rng.fill(buf);
}

/// 32 bytes of entropy: RDSEED/RDRAND when the CPU has them, mixed with
/// the low bits of TSC readings around PIT-timed waits (jitter).
fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    for (i, chunk) in s.chunks_mut(8).enumerate() {
        let mut v = arch::cpu::rdtsc().rotate_left(i as u32 * 13);
        if let Some(r) = arch::cpu::rdrand() {
            v ^= r;
        }
        for _ in 0..64 {
            v = v.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ arch::cpu::rdtsc();
            core::hint::spin_loop();
        }
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    s
}

struct ConsoleSink;

impl TtySink for ConsoleSink {
    fn write(&self, bytes: &[u8]) {
        console::write_bytes(bytes);
    }
}

/// Unpacks the root archive (its cpio bytes) into a ramfs and mounts /dev
/// and /proc; `cmdline` is the kernel command line `/proc/cmdline` shows.
pub fn init(root_archive: Option<&[u8]>, cmdline: &str) {
    KERNEL_CMDLINE.call_once(|| String::from(cmdline));
    let clock: Arc<dyn Clock> = Arc::new(KernelClock);
    let root_fs = RamFs::new(clock.clone());
    match root_archive {
        Some(a) => match load_cpio(&root_fs, a) {
            Ok(r) => log::info!("rootfs: unpacked {:?}", r),
            Err(e) => log::error!("rootfs: cannot unpack the root archive: {e:?}; starting with an empty root"),
        },
        None => log::warn!("rootfs: no root archive; starting with an empty root"),
    }
    let vfs = VFS.call_once(|| Vfs::new(root_fs, "rootfs"));
    let tty = CONSOLE_TTY.call_once(|| Tty::new(Arc::new(ConsoleSink))).clone();
    if let Err(e) = devfs::install(vfs, clock.clone(), Arc::new(KernelRandom), tty) {
        log::error!("devfs: {e:?}");
    }
    let root = vfs.root();
    let cred = Credentials::root();
    for (dir, perm) in [(&b"/proc"[..], 0o555), (b"/tmp", 0o1777), (b"/vmfs", 0o755), (b"/vmfs/volumes", 0o755)] {
        let _ = vfs.mkdir(&cred, &root, dir, perm);
    }
    if let Ok(tmp) = vfs.resolve(&cred, &root, b"/tmp", true) {
        let _ = vfs.chmod(&cred, &tmp, 0o1777);
    }
    if let Err(e) = vfs.mount_at(b"/proc", ProcFs::new(Arc::new(Provider)), "proc", MountFlags::default()) {
        log::error!("procfs: {e:?}");
    }
    console::enable_input(on_console_byte);
}

/// Console input from the UART interrupt: through the line discipline,
/// then signals for the foreground process group and a wake-up for readers.
fn on_console_byte(b: u8) {
    let Some(tty) = CONSOLE_TTY.get() else { return };
    if let Some(sig) = tty.input(b)
        && let Some(pgrp) = sig.pgrp
    {
        super::signal::send_to_group(pgrp, sig.signal);
    }
    super::io_wait::notify();
}

struct Provider;

impl ProcProvider for Provider {
    fn net_file(&self, name: &str) -> Option<String> {
        NET_FILES.get().and_then(|f| f(name))
    }
    fn pids(&self) -> Vec<u32> {
        process::all().iter().map(|p| p.pid).collect()
    }

    fn current_pid(&self) -> u32 {
        process::current().map_or(0, |p| p.pid)
    }

    fn process(&self, pid: u32) -> Option<ProcessInfo> {
        let p = process::lookup(pid)?;
        let ticks = |ns: u64| ns / 10_000_000;
        let ids = p.ids.lock().clone();
        let cmdline: Vec<Vec<u8>> =
            p.cmdline.lock().split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| a.to_vec()).collect();
        let mm = p.mm();
        let vsize: u64 = mm.vm.lock().areas().map(|a| a.len()).sum();
        let tty = console_tty();
        Some(ProcessInfo {
            pid,
            comm: p.name.lock().clone(),
            state: if p.is_zombie() {
                'Z'
            } else if p.stopped.load(Ordering::Relaxed) {
                // Job control stopped it (SIGSTOP and kin): Linux's "T".
                'T'
            } else if p.threads.lock().iter().any(|t| is_running(t.world.load(Ordering::Relaxed))) { 'R' } else { 'S' },
            ppid: p.ppid.load(Ordering::Relaxed),
            pgrp: p.pgid.load(Ordering::Relaxed),
            session: p.sid.load(Ordering::Relaxed),
            tty_nr: devfs::CONSOLE as u32,
            tpgid: tty.map_or(-1, |t| t.foreground_pgrp() as i32),
            utime: ticks(p.cpu_ns()),
            num_threads: p.threads.lock().len() as u64,
            starttime: ticks(p.start_ns),
            vsize_bytes: vsize,
            rss_pages: vsize / 4096,
            uid: ids.uid,
            gid: ids.gid,
            cmdline,
            exe: p.exe.lock().clone(),
            ..Default::default()
        })
    }

    fn meminfo(&self) -> MemInfo {
        let total = mm::usable_bytes() / 1024;
        let free = mm::free_frames() * 4;
        let (claimed, used) = mm::heap::stats();
        MemInfo {
            total_kb: total,
            free_kb: free,
            available_kb: mm::available_user_frames() * 4,
            kernel_heap_kb: claimed as u64 / 1024,
            kernel_heap_used_kb: used as u64 / 1024,
            cached_kb: super::exec::cached_pages() * 4,
            ..Default::default()
        }
    }

    fn stat(&self) -> SystemStat {
        let cpus = arch::gdt::cpus_online();
        let up = time::uptime_ns() / 10_000_000;
        let busy = world::busy_ns_per_cpu();
        SystemStat {
            cpus: (0..cpus as usize)
                .map(|c| {
                    let b = busy.get(c).copied().unwrap_or(0) / 10_000_000;
                    CpuTimes { user: b, idle: up.saturating_sub(b), ..Default::default() }
                })
                .collect(),
            boot_time: time::boot_epoch_secs(),
            processes: process::alloc_pid_peek() as u64,
            procs_running: world::runnable_count() as u64,
            ..Default::default()
        }
    }

    fn uptime(&self) -> Uptime {
        let cs = time::uptime_ns() / 10_000_000;
        let busy: u64 = world::busy_ns_per_cpu().iter().sum::<u64>() / 10_000_000;
        Uptime { uptime_cs: cs, idle_cs: (cs * arch::gdt::cpus_online() as u64).saturating_sub(busy) }
    }

    fn loadavg(&self) -> LoadAvg {
        LoadAvg {
            runnable: world::runnable_count() as u32,
            total: world::count() as u32,
            last_pid: process::alloc_pid_peek().saturating_sub(1),
            ..Default::default()
        }
    }

    fn mounts(&self) -> Vec<MountInfo> {
        VFS.get().map(|v| v.mounts()).unwrap_or_default()
    }
    fn diskstats(&self) -> Vec<u8> {
        crate::storage::diskstats()
    }
    fn kernel_cmdline(&self) -> String {
        KERNEL_CMDLINE.get().cloned().unwrap_or_default()
    }
}

fn is_running(world_id: u64) -> bool {
    world::is_runnable(world_id)
}

pub fn name_of(path: &[u8]) -> String {
    let base = path.rsplit(|&c| c == b'/').next().unwrap_or(path);
    String::from_utf8_lossy(&base[..base.len().min(15)]).into_owned()
}
