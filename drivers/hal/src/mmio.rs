//! Device registers.

use core::ptr::NonNull;

use crate::Hal;

/// 32-bit register access at byte offsets: what a driver's register code
/// is generic over, so host tests can put a simulated device behind it.
pub trait Registers {
    fn read32(&self, offset: usize) -> u32;
    fn write32(&self, offset: usize, value: u32);
}

impl<R: Registers + ?Sized> Registers for &R {
    fn read32(&self, offset: usize) -> u32 {
        (**self).read32(offset)
    }
    fn write32(&self, offset: usize, value: u32) {
        (**self).write32(offset, value)
    }
}

/// A window of device memory (part of a BAR). Every access is volatile,
/// naturally aligned and checked against the window: an offset outside it
/// reads as all ones (as an absent device does) and writes nothing.
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the window is device memory, not Rust data; which CPU issues
// the accesses does not matter to it.
unsafe impl Send for Mmio {}

impl Mmio {
    /// Maps `[phys, phys + len)` through the kernel.
    pub fn map<H: Hal>(phys: u64, len: usize) -> Option<Self> {
        H::mmio_map(phys, len).map(|base| Mmio { base, len })
    }

    /// A window at an address the caller mapped itself.
    ///
    /// # Safety
    ///
    /// `[base, base + len)` is mapped device memory (or memory standing in
    /// for it) for as long as the `Mmio` lives, and no Rust reference
    /// points into it.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        Mmio { base, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A sub-window `[offset, offset + len)`, if it lies inside this one.
    pub fn window(&self, offset: usize, len: usize) -> Option<Mmio> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        // `wrapping_add` stays inside (checked), so it is never null.
        inside.then(|| Mmio { base: NonNull::new(self.base.as_ptr().wrapping_add(offset)).unwrap_or(self.base), len })
    }

    fn ptr<T>(&self, offset: usize) -> Option<*mut T> {
        let ok = offset.checked_add(size_of::<T>()).is_some_and(|end| end <= self.len)
            && offset.is_multiple_of(align_of::<T>());
        ok.then(|| self.base.as_ptr().wrapping_add(offset).cast::<T>())
    }

    pub fn read8(&self, offset: usize) -> u8 {
        // SAFETY: inside the mapped window and aligned (`ptr`; `from_raw`'s contract).
        self.ptr::<u8>(offset).map_or(!0, |p| unsafe { p.read_volatile() })
    }

    pub fn read16(&self, offset: usize) -> u16 {
        // SAFETY: inside the mapped window and aligned (`ptr`; `from_raw`'s contract).
        self.ptr::<u16>(offset).map_or(!0, |p| unsafe { p.read_volatile() })
    }

    pub fn write16(&self, offset: usize, value: u16) {
        if let Some(p) = self.ptr::<u16>(offset) {
            // SAFETY: inside the mapped window and aligned; device memory
            // that no Rust reference covers.
            unsafe { p.write_volatile(value) }
        }
    }
}

impl Registers for Mmio {
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: inside the mapped window and aligned (`ptr`; `from_raw`'s contract).
        self.ptr::<u32>(offset).map_or(!0, |p| unsafe { p.read_volatile() })
    }

    fn write32(&self, offset: usize, value: u32) {
        if let Some(p) = self.ptr::<u32>(offset) {
            // SAFETY: inside the mapped window and aligned; device memory
            // that no Rust reference covers.
            unsafe { p.write_volatile(value) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_stay_inside_the_window() {
        let mut backing = vec![0u32; 8];
        let base = NonNull::new(backing.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: `backing` outlives `m` and is only reached through it below.
        let m = unsafe { Mmio::from_raw(base, 16) };
        m.write32(4, 0x1234_5678);
        assert_eq!(m.read32(4), 0x1234_5678);
        assert_eq!(m.read16(6), 0x1234);
        assert_eq!(m.read8(4), 0x78);
        m.write32(16, 1); // outside: ignored
        assert_eq!(m.read32(16), !0);
        assert_eq!(m.read32(2), !0); // misaligned
        let w = m.window(4, 4).unwrap();
        assert_eq!(w.read32(0), 0x1234_5678);
        assert_eq!(w.read32(4), !0);
        assert!(m.window(12, 8).is_none());
        let _ = (m, w);
        assert_eq!(backing[1], 0x1234_5678);
        assert_eq!(backing[4], 0);
    }
}
