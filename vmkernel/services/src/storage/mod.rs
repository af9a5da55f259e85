//! Storage: disks found on PCI, the block layer's device registry, and the
//! FAT datastores mounted at `/vmfs/volumes/<uuid>` with the ESXi-style
//! name `/vmfs/volumes/<label>` as a symlink beside it.
//!
//! Every mass-storage PCI function is listed in the log; virtio-blk and
//! NVMe disks are driven (`virtio-blk`, `nvme` in `nvme_disk`; one MSI-X
//! vector each, MSI for NVMe without MSI-X; a request blocks the
//! calling world until the completion interrupt, with a 10 ms re-check in
//! case one is lost; during boot, on the idle world, waiting is polling).
//! Unknown controllers and failed bring-ups are reported, never fatal.
//!
//! Dirty cache blocks reach the disk from the `storage-flush` world (every
//! 2 s, blocks older than the cache's age limit), at `sync`/`fsync`, and at
//! power-off, which unmounts every datastore (`shutdown`).

pub mod fs;
mod nvme_disk;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use framework::hal::KernelHal;
use framework::sleep_lock::SleepLock;
use pci::Function;
use pci::interrupts::{self, MsiMessage, MsixTable};
use spin::Mutex;
use vmk_storage::block::{BlockDevice, BlockError};
use vmk_storage::cache::CacheConfig;
use vmk_storage::fat::{MountOptions, WallClock};
use vmk_storage::registry::{DeviceRegistry, adapter_disk_name};
use vmk_storage::stats::Clock;
use vmk_storage::volumes;
use vmkernel::vfs::{Credentials, MountFlags, Vfs};

use crate::arch::{apic, trap};
use crate::pci::PortConfigAccess;
use crate::{time, world};
use fs::{FatFs, Volume};

const CLASS_MASS_STORAGE: u8 = 0x01;
const MAX_DISKS: usize = 8;
/// How often the writeback world writes blocks dirty for longer than the
/// cache's age limit (`CacheConfig::max_dirty_age_ms`, 5 s).
const WRITEBACK_PERIOD_NS: u64 = 2_000_000_000;

static REGISTRY: Mutex<Option<DeviceRegistry>> = Mutex::new(None);
static VOLUMES: Mutex<Vec<Arc<Volume>>> = Mutex::new(Vec::new());
static DISK_WAITERS: world::WaitQueue = world::WaitQueue::new();
/// Completion interrupts taken, per disk.
pub static IRQ_COUNT: [AtomicU64; MAX_DISKS] = [const { AtomicU64::new(0) }; MAX_DISKS];

struct MonotonicClock;
impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        time::uptime_ns() / 1_000_000
    }
}

struct RealTimeClock;
impl WallClock for RealTimeClock {
    fn unix_time(&self) -> u64 {
        time::realtime_ns() / 1_000_000_000
    }
}

fn on_disk_interrupt<const N: usize>(_frame: &mut trap::TrapFrame) {
    IRQ_COUNT[N].fetch_add(1, Ordering::AcqRel);
    apic::eoi();
    DISK_WAITERS.wake_all();
}

const HANDLERS: [trap::Handler; MAX_DISKS] = [
    on_disk_interrupt::<0>,
    on_disk_interrupt::<1>,
    on_disk_interrupt::<2>,
    on_disk_interrupt::<3>,
    on_disk_interrupt::<4>,
    on_disk_interrupt::<5>,
    on_disk_interrupt::<6>,
    on_disk_interrupt::<7>,
];

/// How a request waits for its completion: blocked on the disk wait
/// queue (woken by the interrupt, or after 10 ms in case it was lost).
fn wait_for_completion(done: &mut dyn FnMut() -> bool) {
    loop {
        if done() {
            return;
        }
        let deadline = time::uptime_ns() + 10_000_000;
        let _wakeup = world::arm_wakeup(deadline);
        DISK_WAITERS.wait_until_once(|| done() || time::uptime_ns() >= deadline);
    }
}

/// A virtio-blk disk as the block layer's `BlockDevice`.
struct VirtioDisk {
    dev: SleepLock<virtio_blk::VirtioBlk<KernelHal>>,
    sectors: u64,
    read_only: bool,
}

fn block_error(e: virtio_blk::Error) -> BlockError {
    match e {
        virtio_blk::Error::OutOfRange => BlockError::OutOfRange,
        virtio_blk::Error::Unaligned => BlockError::Unaligned,
        virtio_blk::Error::ReadOnly => BlockError::ReadOnly,
        _ => BlockError::Io,
    }
}

impl BlockDevice for VirtioDisk {
    fn sector_size(&self) -> u32 {
        virtio_blk::SECTOR_BYTES as u32
    }
    fn sector_count(&self) -> u64 {
        self.sectors
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.dev.lock().read(lba, buf, &mut wait_for_completion).map_err(block_error)
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.dev.lock().write(lba, buf, &mut wait_for_completion).map_err(block_error)
    }
    fn flush(&self) -> Result<(), BlockError> {
        self.dev.lock().flush().map_err(block_error)
    }
    fn write_sectors_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BlockError> {
        self.dev.lock().write_many(writes, &mut wait_for_completion).map_err(block_error)
    }
}

/// Boot: finds the disks, mounts their datastores in `vfs`, starts the
/// writeback world.
pub fn init(functions: &[Function], vfs: Option<&Vfs>) {
    find_disks(functions);
    if let Some(vfs) = vfs {
        mount_datastores(vfs);
        start_writeback();
    }
}

/// Finds the disks, registers them and their partitions. Returns how
/// many disks are driven.
pub fn find_disks(functions: &[Function]) -> usize {
    let access = PortConfigAccess::new();
    let mut registry = DeviceRegistry::new(Arc::new(MonotonicClock));
    let mut disks = 0;
    for f in functions {
        let virtio = virtio_blk::supports(f.vendor_id, f.device_id);
        let nvme = nvme::is_nvme(f.class, f.subclass, f.prog_if);
        if f.class != CLASS_MASS_STORAGE && !virtio {
            continue;
        }
        if !virtio && !nvme {
            log::info!("storage: {f}: no driver for this storage controller (listed, not used)");
            continue;
        }
        if disks == MAX_DISKS {
            log::warn!("storage: {f}: more than {MAX_DISKS} disks; not used");
            continue;
        }
        let disk: Result<(Arc<dyn BlockDevice>, String), String> = if virtio {
            bring_up(&access, f, disks).map(|disk| {
                let ro = if disk.read_only { ", read-only medium" } else { "" };
                let what = format!(
                    "virtio-blk at {}, {} MiB{ro}",
                    f.address,
                    (disk.sectors * virtio_blk::SECTOR_BYTES as u64) >> 20
                );
                (Arc::new(disk) as Arc<dyn BlockDevice>, what)
            })
        } else {
            nvme_disk::bring_up(&access, f, disks).map(|(disk, what)| (disk as Arc<dyn BlockDevice>, what))
        };
        match disk {
            Ok((disk, what)) => {
                let name = adapter_disk_name(disks as u32);
                log::info!("storage: {name}: {what}");
                match registry.add_disk(&name, disk) {
                    Ok(lines) => lines.iter().for_each(|l| log::info!("{l}")),
                    Err(e) => log::warn!("storage: {name}: not registered: {e}"),
                }
                disks += 1;
            }
            Err(e) => log::warn!("storage: {f}: cannot bring it up: {e}"),
        }
    }
    *REGISTRY.lock() = Some(registry);
    disks
}

fn bring_up(access: &PortConfigAccess, f: &Function, index: usize) -> Result<VirtioDisk, String> {
    interrupts::enable_dma_and_mmio(access, f.address);
    let mut dev = virtio_blk::VirtioBlk::<KernelHal>::new(access, f.address).map_err(|e| format!("virtio-blk: {e}"))?;
    let (routed, how) = route_interrupt(access, f, index, false, &mut || dev.route_interrupts_to_msix(0));
    if routed {
        dev.set_interrupts_enabled(true);
    }
    log::info!("storage: {}: completions {how}", f.address);
    let (sectors, read_only) = (dev.sector_count(), dev.read_only());
    Ok(VirtioDisk { dev: SleepLock::new(dev), sectors, read_only })
}

/// MSI-X entry 0 aimed at a fresh vector on this CPU (`accept` tells
/// the device to use that entry), else single-message MSI when
/// `msi_fallback`; otherwise the disk is polled by its waiters (every
/// 10 ms). Returns how completions arrive, for the log.
fn route_interrupt(
    access: &PortConfigAccess,
    f: &Function,
    index: usize,
    msi_fallback: bool,
    accept: &mut dyn FnMut() -> bool,
) -> (bool, String) {
    let support = interrupts::interrupt_support(access, f.address);
    let Some(mut msix) = support.msix else {
        if msi_fallback && let Some(msi) = support.msi {
            let Some(vector) = framework::hal::allocate_vector(HANDLERS[index]) else {
                return (false, String::from("polled (no free interrupt vector)"));
            };
            let Some(message) = MsiMessage::x86(apic::id(), vector) else { return (false, String::from("polled")) };
            interrupts::msi_enable(access, f.address, &msi, message);
            return (true, format!("by MSI vector {vector:#x}"));
        }
        return (false, String::from("polled (no MSI-X)"));
    };
    let Some(vector) = framework::hal::allocate_vector(HANDLERS[index]) else {
        return (false, String::from("polled (no free interrupt vector)"));
    };
    let Some(message) = MsiMessage::x86(apic::id(), vector) else { return (false, String::from("polled")) };
    let table = interrupts::msix_table_location(access, f.address, &msix)
        .and_then(|(phys, len)| hal::Mmio::map::<KernelHal>(phys, len))
        .map(|regs| MsixTable::new(regs, msix.table_size()));
    let Some(table) = table else { return (false, String::from("polled (MSI-X table not mappable)")) };
    interrupts::msix_enable_masked(access, f.address, &mut msix);
    for entry in 1..table.entries() {
        let _ = table.set_masked(entry, true);
    }
    let routed = table.program(0, message).is_ok() && accept();
    interrupts::msix_unmask_function(access, &mut msix);
    if routed {
        (true, format!("by MSI-X vector {vector:#x}"))
    } else {
        msix.set_enabled(false, access);
        (false, String::from("polled (the device refused MSI-X entry 0)"))
    }
}

/// Mounts every FAT volume of the registered disks under /vmfs/volumes.
pub fn mount_datastores(vfs: &Vfs) {
    let reg = REGISTRY.lock();
    let Some(registry) = reg.as_ref() else { return };
    let report = volumes::mount_all(
        registry,
        Arc::new(MonotonicClock),
        Arc::new(RealTimeClock),
        CacheConfig::default(),
        MountOptions::default(),
    );
    for l in &report.log {
        log::info!("{l}");
    }
    let cred = Credentials::root();
    let root = vfs.root();
    let mut names: Vec<String> = Vec::new();
    for m in report.mounted {
        // ESXi's name is the label as the user gave it: the GPT partition
        // name keeps its case (FAT labels are stored upper-case).
        let gpt_name = registry
            .find(&m.device)
            .and_then(|e| e.partition.as_ref())
            .map(|p| String::from(p.name.trim()))
            .filter(|n| !n.is_empty() && n.eq_ignore_ascii_case(m.name.trim()) && !n.contains('/'));
        let name = volumes::unique_name(gpt_name.as_deref().unwrap_or(&m.name), &names);
        let read_only = m.datastore.is_read_only();
        let vol = Arc::new(Volume::new(m.datastore, name.clone(), m.uuid.clone(), m.device.clone()));
        let dir = format!("/vmfs/volumes/{}", m.uuid);
        let _ = vfs.mkdir(&cred, &root, dir.as_bytes(), 0o755);
        let source = format!("/vmfs/devices/disks/{}", m.device);
        match vfs.mount_at(dir.as_bytes(), FatFs::new(vol.clone()), &source, MountFlags { read_only }) {
            Ok(_) => {
                let link = format!("/vmfs/volumes/{name}");
                if let Err(e) = vfs.symlink(&cred, m.uuid.as_bytes(), &root, link.as_bytes()) {
                    log::warn!("storage: {link}: {e:?}");
                }
                log::info!("storage: datastore {name} at {dir}{}", if read_only { " (read-only)" } else { "" });
                names.push(name);
                VOLUMES.lock().push(vol);
            }
            Err(e) => log::warn!("storage: mounting {} at {dir}: {e:?}", m.device),
        }
    }
}

/// Starts the periodic writeback world.
pub fn start_writeback() {
    if VOLUMES.lock().is_empty() {
        return;
    }
    if let Err(e) = world::spawn_system("storage-flush", world::default_group(), writeback_loop) {
        log::warn!("storage: no writeback world ({e}); data reaches the disk at sync and power-off only");
    }
}

fn writeback_loop() {
    // Volumes found busy at the last pass: this pass waits for them, so a
    // datastore that is never idle (a writer in a loop) still has its old
    // dirty blocks — metadata included — written within two periods.
    let mut busy_last: Vec<String> = Vec::new();
    loop {
        world::sleep_ns(WRITEBACK_PERIOD_NS);
        let vols: Vec<Arc<Volume>> = VOLUMES.lock().clone();
        let mut busy_now = Vec::new();
        for v in vols {
            let mut guard = match v.ds.try_lock() {
                Some(g) => g,
                None if busy_last.contains(&v.uuid) => v.ds.lock(),
                None => {
                    busy_now.push(v.uuid.clone());
                    continue;
                }
            };
            let now = time::uptime_ns() / 1_000_000;
            if let Some(ds) = guard.as_mut() {
                v.close_gone(ds);
                if let Err(e) = ds.flush_expired(now) {
                    log::warn!("storage: {}: writeback: {e:?}", v.name);
                }
            }
        }
        busy_last = busy_now;
    }
}

/// sync(2): every datastore's open files, FAT summary and dirty blocks.
pub fn sync_all() {
    let vols: Vec<Arc<Volume>> = VOLUMES.lock().clone();
    for v in vols {
        if let Err(e) = v.with(|ds| ds.sync()) {
            log::warn!("storage: {}: sync: {e:?}", v.name);
        }
    }
}

/// Power-off and reboot: unmount every datastore (files flushed, FSInfo
/// written, the volume marked clean, the cache flushed).
pub fn shutdown() {
    let disks = REGISTRY.lock().as_ref().map_or(0, |r| r.disks().len());
    for (i, n) in IRQ_COUNT.iter().take(disks).enumerate() {
        log::info!(
            "storage: {} took {} completion interrupts",
            adapter_disk_name(i as u32),
            n.load(Ordering::Acquire)
        );
    }
    for l in diskstats().split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        log::info!("storage: diskstats: {}", String::from_utf8_lossy(l).trim());
    }
    let vols: Vec<Arc<Volume>> = VOLUMES.lock().clone();
    for v in vols {
        let ds = v.ds.lock().take();
        if let Some(ds) = ds {
            match ds.unmount() {
                Ok(()) => log::info!("storage: {} ({} on {}) unmounted", v.name, v.uuid, v.device),
                Err(e) => log::warn!("storage: {}: unmount: {e:?}", v.name),
            }
        }
    }
    nvme_disk::shutdown_all();
}

/// /proc/diskstats.
pub fn diskstats() -> Vec<u8> {
    REGISTRY.lock().as_ref().map(|r| r.diskstats().into_bytes()).unwrap_or_default()
}
