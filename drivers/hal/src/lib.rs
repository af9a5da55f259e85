//! The small interface Mantle's device drivers are written against.
//!
//! Downward, what a driver needs from the kernel ([`Hal`]): DMA memory
//! (physically contiguous, zeroed pages with their physical address) and
//! MMIO windows onto device registers. The volatile accesses live in two
//! audited types, [`Dma`] and [`Mmio`]; drivers built on them need no
//! `unsafe` of their own for memory they share with a device.
//!
//! Upward, what a NIC driver offers the network stack: [`EthernetDevice`],
//! a token interface shaped like smoltcp's `phy::Device` (so the stack
//! wraps it without allocating or copying), plus the MAC address, link
//! state, interrupt acknowledge/enable and [`Counters`].
//!
//! Lower layers never call upward: the kernel implements [`Hal`], drivers
//! are generic over it, and the stack above only sees [`EthernetDevice`].
#![cfg_attr(not(any(test, feature = "host")), no_std)]

mod dma;
mod ethernet;
mod mmio;

#[cfg(any(test, feature = "host"))]
pub mod host;

pub use dma::Dma;
pub use ethernet::{Counters, EthernetDevice, InterruptCause, MacAddress, RxToken, TxToken, receive_into, transmit_frame};
pub use mmio::{Mmio, Registers};

/// Size of a DMA page.
pub const PAGE_SIZE: usize = 4096;

/// The kernel's side of the driver interface. All functions are
/// associated (no `self`) so a driver is generic over `H: Hal` and carries
/// no pointer to the kernel; the same shape as `virtio-drivers`' `Hal`,
/// which `virtio-net` implements in terms of this one.
///
/// # Safety
///
/// Implementations promise what the functions' documentation says: the
/// memory `dma_alloc` returns is RAM no one else uses, mapped at the
/// returned virtual address, device-visible at the returned physical
/// address and zeroed; `mmio_map` returns a mapping of exactly the device
/// memory asked for, uncached; `virt_to_phys` translates truthfully.
pub unsafe trait Hal {
    /// Allocates `pages` physically contiguous, zeroed 4 KiB pages:
    /// `(physical address, virtual address)`, or `None` when memory is
    /// short.
    fn dma_alloc(pages: usize) -> Option<(u64, core::ptr::NonNull<u8>)>;

    /// Returns pages from `dma_alloc`.
    ///
    /// # Safety
    ///
    /// `phys`/`virt`/`pages` are exactly what one `dma_alloc` returned, no
    /// device still uses the memory and nothing refers to it any more.
    unsafe fn dma_free(phys: u64, virt: core::ptr::NonNull<u8>, pages: usize);

    /// A virtual address at which `[phys, phys + len)` of device memory
    /// (a BAR) is mapped uncached, or `None` if it cannot be mapped.
    fn mmio_map(phys: u64, len: usize) -> Option<core::ptr::NonNull<u8>>;

    /// The physical address of kernel memory at `virt` (for buffers a
    /// library such as `virtio-drivers` hands to a device), if mapped.
    fn virt_to_phys(virt: usize) -> Option<u64>;
}
