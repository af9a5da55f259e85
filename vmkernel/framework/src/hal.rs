//! The kernel's side of the driver interface (`hal::Hal`): DMA pages from
//! the frame allocator, device registers through the direct map (BARs
//! above it mapped uncached on demand), and interrupt vectors for
//! message-signalled device interrupts with their handlers registered.
//!
//! The drivers and everything above them live in the services; this is
//! the part that touches raw memory and page tables.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};

use spin::Mutex;
use vmkernel::frames::FRAME_SIZE;
use vmkernel::paging;

use crate::arch::trap;
use crate::mm;

/// DMA from the frame allocator, MMIO and address translation through the
/// direct map.
pub struct KernelHal;

static HIGH_MMIO: Mutex<()> = Mutex::new(());

/// Makes `[phys, phys + len)` of device memory reachable at
/// `phys_to_virt(phys)`: below the direct map's end it already is (the
/// firmware's MTRRs make the PCI hole uncacheable); above, it is mapped
/// here, uncached.
fn map_device_memory(phys: u64, len: u64) -> bool {
    if mm::direct_map_covers(phys, len) {
        return true;
    }
    let Some(end) = phys.checked_add(len) else { return false };
    if end > 1 << 46 {
        return false;
    }
    let _serialised = HIGH_MMIO.lock();
    let mut page = phys & !(FRAME_SIZE - 1);
    while page < end {
        let virt = mm::phys_to_virt(page);
        if mm::translate_kernel(virt).is_none() {
            let flags = paging::WRITABLE | paging::NO_EXECUTE | paging::NO_CACHE | paging::GLOBAL;
            if paging::map(&mut mm::Tables, mm::kernel_pml4(), virt, page, paging::PageSize::Size4K, flags).is_err() {
                return false;
            }
        }
        page += FRAME_SIZE;
    }
    true
}

// SAFETY: DMA pages come zeroed from the frame allocator (RAM nobody
// else owns, inside the direct map, which maps them at `phys_to_virt`);
// MMIO is returned only where the direct map (or `map_device_memory`)
// maps exactly the requested physical range; `virt_to_phys` inverts the
// direct map, or walks the page tables for the kernel image.
unsafe impl hal::Hal for KernelHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        let pages = pages.max(1) as u64;
        let phys = mm::FRAMES.lock().as_mut()?.alloc_contiguous(pages, FRAME_SIZE)?;
        let virt = mm::phys_to_virt(phys) as *mut u8;
        // SAFETY: fresh frames, ours, inside the direct map.
        unsafe { core::ptr::write_bytes(virt, 0, (pages * FRAME_SIZE) as usize) };
        NonNull::new(virt).map(|v| (phys, v))
    }

    unsafe fn dma_free(phys: u64, _virt: NonNull<u8>, pages: usize) {
        if let Some(fa) = mm::FRAMES.lock().as_mut()
            && let Err(e) = fa.free_contiguous(phys, pages.max(1) as u64)
        {
            log::warn!("hal: returning DMA pages {phys:#x}: {e:?}");
        }
    }

    fn mmio_map(phys: u64, len: usize) -> Option<NonNull<u8>> {
        map_device_memory(phys, len as u64).then(|| NonNull::new(mm::phys_to_virt(phys) as *mut u8))?
    }

    fn virt_to_phys(virt: usize) -> Option<u64> {
        let virt = virt as u64;
        // The kernel image — its statics and the bootstrap CPU's boot
        // stack, where boot-time requests keep their headers — is mapped
        // linearly at KERNEL_VMA, outside the direct map.
        if virt >= mm::KERNEL_VMA {
            return mm::translate_kernel(virt).map(|t| t.phys);
        }
        let phys = virt.checked_sub(mm::PHYS_OFFSET)?;
        mm::direct_map_covers(phys, 1).then_some(phys)
    }
}

/// Vectors for device interrupts: `DEVICE_VECTOR_BASE..DEVICE_VECTOR_END`.
pub const DEVICE_VECTOR_BASE: u8 = 0x50;
pub const DEVICE_VECTOR_END: u8 = 0x70;
static NEXT_VECTOR: AtomicU8 = AtomicU8::new(DEVICE_VECTOR_BASE);

/// Takes the next free device interrupt vector and installs `handler` for
/// it (the handler must send the LAPIC its EOI, `arch::apic::eoi`).
/// `None` when all are taken.
pub fn allocate_vector(handler: trap::Handler) -> Option<u8> {
    let v = NEXT_VECTOR
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| (v < DEVICE_VECTOR_END).then_some(v + 1))
        .ok()?;
    trap::register(v, handler);
    Some(v)
}
