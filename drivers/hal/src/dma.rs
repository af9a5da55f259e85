//! DMA memory: pages a device reads and writes behind the CPU's back.

use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::{Hal, PAGE_SIZE};

/// Physically contiguous, zeroed pages shared with a device, freed on drop.
///
/// All access goes through bounds-checked methods: word accessors are
/// volatile (the device may change descriptors at any moment), byte
/// slices are for frame buffers the driver owns at that moment (the ring
/// protocol decides when; a slice the device still owns would only read
/// stale bytes, never leave the region). Out-of-range accesses are driver
/// bugs: they read as zero and write nothing rather than touch memory
/// outside the region.
pub struct Dma<H: Hal> {
    phys: u64,
    virt: NonNull<u8>,
    pages: usize,
    _hal: PhantomData<H>,
}

// SAFETY: `Dma` owns its pages exclusively; moving the owner to another
// CPU moves nothing the old one could still reach.
unsafe impl<H: Hal> Send for Dma<H> {}
// SAFETY: shared references only read (volatile or through `&[u8]`);
// every write needs `&mut self`.
unsafe impl<H: Hal> Sync for Dma<H> {}

impl<H: Hal> Dma<H> {
    /// Allocates `pages` (at least one) zeroed pages; `None` when memory is short.
    pub fn new(pages: usize) -> Option<Self> {
        let pages = pages.max(1);
        let (phys, virt) = H::dma_alloc(pages)?;
        Some(Dma { phys, virt, pages, _hal: PhantomData })
    }

    /// Allocates enough pages for `bytes`.
    pub fn for_bytes(bytes: usize) -> Option<Self> {
        Self::new(bytes.div_ceil(PAGE_SIZE))
    }

    /// Device-visible address of the first byte.
    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// Device-visible address of byte `offset` (no range check: for
    /// programming descriptors from offsets the driver computed).
    pub fn phys_at(&self, offset: usize) -> u64 {
        self.phys + offset as u64
    }

    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The kernel virtual address of the first byte (for libraries that
    /// translate it back with `Hal::virt_to_phys`).
    pub fn virt(&self) -> NonNull<u8> {
        self.virt
    }

    fn in_range(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len())
    }

    fn ptr<T>(&self, offset: usize) -> Option<*mut T> {
        let ok = self.in_range(offset, size_of::<T>()) && offset.is_multiple_of(align_of::<T>());
        debug_assert!(ok, "DMA access {offset:#x}+{} outside {:#x} bytes or misaligned", size_of::<T>(), self.len());
        // `wrapping_add` keeps this free of unsafe; `ok` keeps it inside.
        ok.then(|| self.virt.as_ptr().wrapping_add(offset).cast::<T>())
    }

    pub fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: `ptr` checked the access lies inside our pages and is aligned.
        self.ptr::<u16>(offset).map_or(0, |p| unsafe { p.read_volatile() })
    }

    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: `ptr` checked the access lies inside our pages and is aligned.
        self.ptr::<u32>(offset).map_or(0, |p| unsafe { p.read_volatile() })
    }

    pub fn read_u64(&self, offset: usize) -> u64 {
        // SAFETY: `ptr` checked the access lies inside our pages and is aligned.
        self.ptr::<u64>(offset).map_or(0, |p| unsafe { p.read_volatile() })
    }

    pub fn write_u16(&mut self, offset: usize, value: u16) {
        if let Some(p) = self.ptr::<u16>(offset) {
            // SAFETY: inside our pages and aligned (`ptr`), and `&mut self`
            // means no Rust reference to the bytes is alive.
            unsafe { p.write_volatile(value) }
        }
    }

    pub fn write_u32(&mut self, offset: usize, value: u32) {
        if let Some(p) = self.ptr::<u32>(offset) {
            // SAFETY: as in `write_u16`.
            unsafe { p.write_volatile(value) }
        }
    }

    pub fn write_u64(&mut self, offset: usize, value: u64) {
        if let Some(p) = self.ptr::<u64>(offset) {
            // SAFETY: as in `write_u16`.
            unsafe { p.write_volatile(value) }
        }
    }

    /// `len` bytes at `offset`, or `None` if that leaves the region.
    pub fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.in_range(offset, len).then(|| {
            // SAFETY: inside our live allocation (checked); the borrow of
            // `self` keeps it alive and excludes `&mut` access.
            unsafe { core::slice::from_raw_parts(self.virt.as_ptr().add(offset), len) }
        })
    }

    /// `len` bytes at `offset` for writing, or `None` if that leaves the region.
    pub fn bytes_mut(&mut self, offset: usize, len: usize) -> Option<&mut [u8]> {
        self.in_range(offset, len).then(|| {
            // SAFETY: inside our live allocation (checked); `&mut self`
            // makes this the only reference.
            unsafe { core::slice::from_raw_parts_mut(self.virt.as_ptr().add(offset), len) }
        })
    }
}

impl<H: Hal> Drop for Dma<H> {
    fn drop(&mut self) {
        // SAFETY: exactly what `dma_alloc` returned; the driver that owned
        // this region stopped the device from using it before dropping it
        // (drivers reset their device first), and `self` is going away.
        unsafe { H::dma_free(self.phys, self.virt, self.pages) }
    }
}

impl<H: Hal> core::fmt::Debug for Dma<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Dma({:#x}, {} pages)", self.phys, self.pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostHal;

    #[test]
    fn zeroed_aligned_and_bounds_checked() {
        let mut d = Dma::<HostHal>::new(2).unwrap();
        assert_eq!(d.len(), 8192);
        assert_eq!(d.phys() % 4096, 0);
        assert!(d.bytes(0, 8192).unwrap().iter().all(|&b| b == 0));
        d.write_u32(8188, 0xdead_beef);
        assert_eq!(d.read_u32(8188), 0xdead_beef);
        assert_eq!(d.read_u16(8190), 0xdead);
        d.write_u64(16, u64::MAX);
        assert_eq!(d.read_u64(16), u64::MAX);
        assert!(d.bytes(8190, 3).is_none());
        assert!(d.bytes_mut(usize::MAX, 2).is_none());
        d.bytes_mut(100, 4).unwrap().copy_from_slice(b"abcd");
        assert_eq!(d.bytes(100, 4).unwrap(), b"abcd");
        assert_eq!(d.phys_at(100), d.phys() + 100);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "outside"))]
    fn out_of_range_word_reads_zero() {
        let d = Dma::<HostHal>::new(1).unwrap();
        assert_eq!(d.read_u32(4096), 0);
    }
}
