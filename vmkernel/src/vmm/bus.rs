//! Address-range dispatch for port I/O and MMIO.
//!
//! A [`Bus`] maps non-overlapping address ranges to a small handle `H` (for
//! the platform, an enum naming the device). Looking an address up gives the
//! handle and the offset inside the range; the owner then calls the device.
//! Keeping devices out of the bus (instead of `Box<dyn Device>` inside it)
//! lets the platform borrow the PIC, IOAPIC and LAPICs next to the device it
//! dispatched to, which is how interrupt lines are wired without shared
//! ownership or locks. Unclaimed reads return all ones, like an ISA bus with
//! nothing driving the data lines; unclaimed writes are dropped.

use alloc::collections::BTreeMap;

/// Why a range could not be registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError {
    /// The range has length 0 or wraps around the address space.
    BadRange,
    /// The range overlaps one already registered (base of the existing one).
    Overlap { existing_base: u64 },
}

/// Access sizes allowed on a bus: 1, 2, 4 for port I/O; 8 as well for MMIO.
pub fn valid_size(size: u8, mmio: bool) -> bool {
    matches!(size, 1 | 2 | 4) || (mmio && size == 8)
}

/// The value an unclaimed read returns for an access of `size` bytes.
pub const fn all_ones(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Mask of the low `size` bytes.
pub const fn size_mask(size: u8) -> u64 {
    all_ones(size)
}

/// A registered range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range<H> {
    pub base: u64,
    pub len: u64,
    pub handle: H,
}

/// Ranges keyed by base address.
#[derive(Clone, Debug)]
pub struct Bus<H> {
    ranges: BTreeMap<u64, (u64, H)>,
}

impl<H: Copy> Default for Bus<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy> Bus<H> {
    pub const fn new() -> Self {
        Bus { ranges: BTreeMap::new() }
    }

    /// Claims `[base, base + len)` for `handle`. Overlaps are rejected: two
    /// devices answering the same address is a configuration bug.
    pub fn register(&mut self, base: u64, len: u64, handle: H) -> Result<(), BusError> {
        let end = base.checked_add(len).ok_or(BusError::BadRange)?;
        if len == 0 {
            return Err(BusError::BadRange);
        }
        // The closest range starting at or below the new end - 1 is the only
        // one that can overlap (ranges are disjoint and sorted).
        if let Some((&b, &(l, _))) = self.ranges.range(..end).next_back()
            && b + l > base {
                return Err(BusError::Overlap { existing_base: b });
            }
        self.ranges.insert(base, (len, handle));
        Ok(())
    }

    /// Releases the range that starts at `base`, returning its handle.
    pub fn unregister(&mut self, base: u64) -> Option<H> {
        self.ranges.remove(&base).map(|(_, h)| h)
    }

    /// The range containing `addr`.
    pub fn find(&self, addr: u64) -> Option<Range<H>> {
        let (&base, &(len, handle)) = self.ranges.range(..=addr).next_back()?;
        (addr - base < len).then_some(Range { base, len, handle })
    }

    /// The handle for `addr` and the offset of `addr` inside its range.
    pub fn lookup(&self, addr: u64) -> Option<(H, u64)> {
        self.find(addr).map(|r| (r.handle, addr - r.base))
    }

    /// Every registered range, by base address.
    pub fn iter(&self) -> impl Iterator<Item = Range<H>> + '_ {
        self.ranges.iter().map(|(&base, &(len, handle))| Range { base, len, handle })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_gives_handle_and_offset() {
        let mut bus = Bus::new();
        bus.register(0x3f8, 8, 'u').unwrap();
        bus.register(0x20, 2, 'p').unwrap();
        assert_eq!(bus.lookup(0x3f8), Some(('u', 0)));
        assert_eq!(bus.lookup(0x3ff), Some(('u', 7)));
        assert_eq!(bus.lookup(0x400), None);
        assert_eq!(bus.lookup(0x3f7), None);
        assert_eq!(bus.lookup(0x21), Some(('p', 1)));
        assert_eq!(bus.lookup(0), None);
        assert_eq!(bus.len(), 2);
    }

    #[test]
    fn overlaps_are_rejected() {
        let mut bus = Bus::new();
        bus.register(0x40, 4, 1).unwrap();
        assert_eq!(bus.register(0x43, 1, 2), Err(BusError::Overlap { existing_base: 0x40 }));
        assert_eq!(bus.register(0x3c, 5, 2), Err(BusError::Overlap { existing_base: 0x40 }));
        assert_eq!(bus.register(0x30, 0x100, 2), Err(BusError::Overlap { existing_base: 0x40 }));
        // Adjacent ranges are fine.
        bus.register(0x44, 1, 3).unwrap();
        bus.register(0x3c, 4, 4).unwrap();
        assert_eq!(bus.register(0x50, 0, 5), Err(BusError::BadRange));
        assert_eq!(bus.register(u64::MAX, 2, 5), Err(BusError::BadRange));
    }

    #[test]
    fn unregister_frees_the_range() {
        let mut bus = Bus::new();
        bus.register(0xfec0_0000, 0x1000, 7u8).unwrap();
        assert_eq!(bus.unregister(0xfec0_0000), Some(7));
        assert_eq!(bus.unregister(0xfec0_0000), None);
        assert_eq!(bus.lookup(0xfec0_0010), None);
        bus.register(0xfec0_0800, 0x10, 8).unwrap();
        assert!(bus.iter().eq([Range { base: 0xfec0_0800, len: 0x10, handle: 8 }]));
    }

    #[test]
    fn all_ones_per_size() {
        assert_eq!(all_ones(1), 0xff);
        assert_eq!(all_ones(2), 0xffff);
        assert_eq!(all_ones(4), 0xffff_ffff);
        assert_eq!(all_ones(8), u64::MAX);
        assert!(valid_size(4, false) && !valid_size(8, false) && valid_size(8, true) && !valid_size(3, true));
    }
}
