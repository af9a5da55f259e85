//! Which guest-physical pages are RAM, and how a page is backed on its
//! first touch (hardware-free policy for `hv::guest_memory`).
//!
//! Guest RAM is backed lazily: creating a VM reserves host frames for all
//! of it (so admission is decided up front and a later touch never finds
//! the host out of memory) but allocates none; the first access to a page —
//! a nested page fault from the guest, or a write by a loader or a device —
//! allocates a zeroed frame and maps it. A touch backs a whole 2 MiB large
//! page where the aligned 2 MiB around it is all RAM and nothing in it is
//! backed yet (fewer faults, table walks and TLB misses), else 4 KiB.

use alloc::vec::Vec;

use crate::paging::PageSize;

const LARGE: u64 = 2 << 20;
const PAGE: u64 = 4096;

/// Guest RAM: `[0, size)` minus the holes (MMIO), page-aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamLayout {
    size: u64,
    holes: Vec<(u64, u64)>,
}

impl RamLayout {
    /// `size` bytes of RAM at guest-physical 0 except `holes` (`[start,
    /// end)` ranges, rounded out to whole pages).
    pub fn new(size: u64, holes: &[(u64, u64)]) -> Self {
        let holes = holes.iter().map(|&(s, e)| (s & !(PAGE - 1), e.next_multiple_of(PAGE))).filter(|&(s, e)| s < e).collect();
        Self { size: size & !(PAGE - 1), holes }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn hole_overlaps(&self, start: u64, end: u64) -> bool {
        self.holes.iter().any(|&(s, e)| start < e && s < end)
    }

    /// Is every byte of `[gpa, gpa + len)` RAM?
    pub fn is_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len.max(1)) else { return false };
        end <= self.size && !self.hole_overlaps(gpa, end)
    }

    /// 4 KiB pages of RAM (what the VM reserves of the host).
    pub fn ram_pages(&self) -> u64 {
        let mut holes: Vec<(u64, u64)> = self.holes.iter().map(|&(s, e)| (s.min(self.size), e.min(self.size))).collect();
        holes.sort_unstable();
        let (mut hole_bytes, mut covered) = (0, 0);
        for (s, e) in holes {
            let s = s.max(covered);
            if e > s {
                hole_bytes += e - s;
                covered = e;
            }
        }
        (self.size - hole_bytes) / PAGE
    }

    /// The page to back on a first touch of `gpa`: the aligned 2 MiB block
    /// around it when `large` allows one and the whole block is RAM, else
    /// its 4 KiB page; None if `gpa` is not RAM. (The caller falls back to
    /// 4 KiB when part of the block is already backed or no host block is
    /// free.)
    pub fn backing_for(&self, gpa: u64, large: bool) -> Option<(u64, PageSize)> {
        if !self.is_ram(gpa, 1) {
            return None;
        }
        let block = gpa & !(LARGE - 1);
        if large && self.is_ram(block, LARGE) {
            Some((block, PageSize::Size2M))
        } else {
            Some((gpa & !(PAGE - 1), PageSize::Size4K))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_holes_and_pages() {
        let l = RamLayout::new((8 << 20) + 0x3000, &[(0x40_0000, 0x40_0800), (0xfec0_0000, 0xfec0_1000)]);
        assert_eq!(l.ram_pages(), ((8 << 20) + 0x3000 - 0x1000) / 4096, "the hole rounds out to a page; one past the end does not count");
        assert!(l.is_ram(0, 1) && l.is_ram(0x3f_f000, 0x1000) && l.is_ram(0x80_2fff, 1));
        assert!(!l.is_ram(0x3f_fff0, 0x20), "runs into the hole");
        assert!(!l.is_ram(0x40_0fff, 1) && !l.is_ram(0x80_3000, 1) && !l.is_ram(u64::MAX, 2));
    }

    #[test]
    fn first_touch_backs_large_pages_where_the_block_is_all_ram() {
        let l = RamLayout::new((8 << 20) + 0x3000, &[(0x40_0000, 0x40_1000)]);
        assert_eq!(l.backing_for(0x20_1234, true), Some((0x20_0000, PageSize::Size2M)));
        assert_eq!(l.backing_for(0x20_1234, false), Some((0x20_1000, PageSize::Size4K)));
        assert_eq!(l.backing_for(0x40_1000, true), Some((0x40_1000, PageSize::Size4K)), "the block has a hole");
        assert_eq!(l.backing_for(0x80_2000, true), Some((0x80_2000, PageSize::Size4K)), "the block runs past the end");
        assert_eq!(l.backing_for(0x40_0000, true), None);
        assert_eq!(l.backing_for(0x80_3000, true), None);
    }

    #[test]
    fn overlapping_holes_count_once() {
        let l = RamLayout::new(1 << 20, &[(0x1000, 0x3000), (0x2000, 0x4000), (0xf_f000, 0x20_0000)]);
        assert_eq!(l.ram_pages(), 256 - 3 - 1);
    }
}
