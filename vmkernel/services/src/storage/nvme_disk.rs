//! NVMe controllers as block-layer disks: bring-up (BAR0 mapped, the
//! controller reset and identified with polled admin commands, then its
//! completions routed to MSI-X entry 0 or MSI), the `BlockDevice` glue,
//! and a normal controller shutdown at power-off.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use framework::hal::KernelHal;
use framework::sleep_lock::SleepLock;
use hal::Mmio;
use pci::Function;
use pci::interrupts;
use spin::Mutex;
use vmk_storage::block::{BlockDevice, BlockError};

use super::{DISK_WAITERS, route_interrupt};
use crate::pci::PortConfigAccess;
use crate::{time, world};

/// A command (or a controller state change) that takes longer than this
/// is given up: the controller is disabled and its disk fails with EIO.
const COMMAND_TIMEOUT_NS: u64 = 30_000_000_000;

type Controller = nvme::Nvme<KernelHal, Mmio>;

pub struct NvmeDisk {
    dev: SleepLock<Controller>,
    block_size: u32,
    blocks: u64,
    read_only: bool,
}

static CONTROLLERS: Mutex<Vec<Arc<NvmeDisk>>> = Mutex::new(Vec::new());

/// Blocks on the disk wait queue until `done` (woken by the completion
/// interrupt; re-checked every 10 ms in case one is lost or the disk is
/// polled); `false` after `COMMAND_TIMEOUT_NS`.
fn wait_for_completion(done: &mut dyn FnMut() -> bool) -> bool {
    let give_up = time::uptime_ns().saturating_add(COMMAND_TIMEOUT_NS);
    loop {
        if done() {
            return true;
        }
        let now = time::uptime_ns();
        if now >= give_up {
            return false;
        }
        let deadline = (now + 10_000_000).min(give_up);
        let _armed = world::arm_wakeup(deadline);
        DISK_WAITERS.wait_until_once(|| done() || time::uptime_ns() >= deadline);
    }
}

fn block_error(e: nvme::Error) -> BlockError {
    match e {
        nvme::Error::OutOfRange => BlockError::OutOfRange,
        nvme::Error::Unaligned => BlockError::Unaligned,
        nvme::Error::ReadOnly => BlockError::ReadOnly,
        nvme::Error::Failed => BlockError::Gone,
        e => {
            log::warn!("storage: nvme: {e}");
            BlockError::Io
        }
    }
}

impl BlockDevice for NvmeDisk {
    fn sector_size(&self) -> u32 {
        self.block_size
    }
    fn sector_count(&self) -> u64 {
        self.blocks
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
        self.dev.lock().flush(&mut wait_for_completion).map_err(block_error)
    }
}

/// Brings up the NVMe controller `f` as disk `index`: the disk and a
/// line for the log.
pub fn bring_up(access: &PortConfigAccess, f: &Function, index: usize) -> Result<(Arc<NvmeDisk>, String), String> {
    let (bar, size) = interrupts::memory_bar(access, f.address, 0).ok_or("BAR0 is no memory BAR")?;
    if bar == 0 || size < 0x2000 {
        return Err(format!("BAR0 at {bar:#x}, {size:#x} bytes: not assigned or too small"));
    }
    interrupts::enable_dma_and_mmio(access, f.address);
    interrupts::set_intx_disabled(access, f.address, true);
    let regs = Mmio::map::<KernelHal>(bar, size as usize).ok_or("BAR0 cannot be mapped")?;
    // MSI-X first: a controller takes an interrupt vector into use when
    // it creates a completion queue on it (QEMU's does so only while
    // MSI-X is on). Both queues interrupt on entry 0.
    let (_, how) = route_interrupt(access, f, index, true, &mut || true);
    let dev = Controller::new(regs, &mut wait_for_completion).map_err(|e| format!("nvme: {e}"))?;
    let id = dev.identity();
    let (block_size, blocks, read_only) = (id.block_size, id.blocks, id.read_only);
    let what = format!(
        "NVMe at {} ({}, serial {}, firmware {}, NVMe {}.{}), namespace {}: {} MiB in {}-byte blocks{}{}; completions {how}",
        f.address,
        id.model(),
        id.serial(),
        id.firmware(),
        id.version.0,
        id.version.1,
        id.nsid,
        (blocks * block_size as u64) >> 20,
        block_size,
        if id.volatile_cache { ", volatile write cache" } else { "" },
        if read_only { ", write-protected (read-only)" } else { "" },
    );
    let disk = Arc::new(NvmeDisk { dev: SleepLock::new(dev), block_size, blocks, read_only });
    CONTROLLERS.lock().push(disk.clone());
    Ok((disk, what))
}

/// Power-off: every controller shut down normally (its caches written
/// back) after the datastores were unmounted.
pub fn shutdown_all() {
    let disks: Vec<Arc<NvmeDisk>> = CONTROLLERS.lock().clone();
    for d in disks {
        let mut dev = d.dev.lock();
        match dev.shutdown(&mut wait_for_completion) {
            Ok(()) => log::info!("storage: nvme {} shut down ({} requests)", dev.identity().serial(), dev.requests()),
            Err(e) => log::warn!("storage: nvme {}: shutdown: {e}", dev.identity().serial()),
        }
    }
}
