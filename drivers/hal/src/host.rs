//! Host stand-ins for unit tests (feature `host`): never in the kernel.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ptr::NonNull;

use crate::{Hal, PAGE_SIZE, Registers};

/// DMA memory from the host heap, page-aligned; "physical" addresses are
/// the virtual ones, so a simulated device can follow them.
pub struct HostHal;

fn layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("DMA layout")
}

// SAFETY: the memory comes zeroed from the global allocator, belongs to
// the caller until `dma_free`, and "physical" = virtual on the host.
unsafe impl Hal for HostHal {
    fn dma_alloc(pages: usize) -> Option<(u64, NonNull<u8>)> {
        // SAFETY: the layout has a non-zero size (pages >= 1 from `Dma`).
        let p = NonNull::new(unsafe { alloc_zeroed(layout(pages.max(1))) })?;
        Some((p.as_ptr() as u64, p))
    }

    unsafe fn dma_free(_phys: u64, virt: NonNull<u8>, pages: usize) {
        // SAFETY: allocated by `dma_alloc` with this layout (the caller's contract).
        unsafe { dealloc(virt.as_ptr(), layout(pages.max(1))) }
    }

    fn mmio_map(_phys: u64, _len: usize) -> Option<NonNull<u8>> {
        None
    }

    fn virt_to_phys(virt: usize) -> Option<u64> {
        Some(virt as u64)
    }
}

/// A register file that remembers what was written (plain memory
/// semantics) and logs every write in order.
#[derive(Default)]
pub struct RegisterFile {
    pub values: RefCell<BTreeMap<usize, u32>>,
    pub writes: RefCell<Vec<(usize, u32)>>,
}

impl Registers for RegisterFile {
    fn read32(&self, offset: usize) -> u32 {
        self.values.borrow().get(&offset).copied().unwrap_or(0)
    }
    fn write32(&self, offset: usize, value: u32) {
        self.values.borrow_mut().insert(offset, value);
        self.writes.borrow_mut().push((offset, value));
    }
}
