//! x86-64 4-level page tables: entry encoding, mapping and translation.
//!
//! The walker works on physical table frames through [`TableMemory`], so the
//! same code builds the kernel's tables, user-world address spaces and (the
//! format being identical) AMD nested page tables — and runs in host tests
//! over a simulated memory.

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const WRITE_THROUGH: u64 = 1 << 3;
pub const NO_CACHE: u64 = 1 << 4;
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
pub const NO_EXECUTE: u64 = 1 << 63;
/// Software bit (ignored by the MMU): a private page shared copy-on-write
/// after fork; writable in spirit, read-only in the entry until copied.
pub const COPY_ON_WRITE: u64 = 1 << 9;

/// Physical-address bits of an entry (bits 12..52).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => 1 << 12,
            Self::Size2M => 1 << 21,
            Self::Size1G => 1 << 30,
        }
    }
    /// Level at which a leaf of this size sits (1 = PT, 2 = PD, 3 = PDPT).
    const fn leaf_level(self) -> u32 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }
}

/// Access to page-table frames by physical address.
pub trait TableMemory {
    /// A zeroed frame for a new table, or `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

#[derive(Debug, PartialEq, Eq)]
pub enum MapError {
    NoMemory,
    Misaligned,
    /// Something is already mapped there (a leaf, or a huge page in the way).
    AlreadyMapped(u64),
    NonCanonical(u64),
}

fn index(virt: u64, level: u32) -> usize {
    ((virt >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

pub fn is_canonical(virt: u64) -> bool {
    let top = virt >> 47;
    top == 0 || top == 0x1ffff
}

/// Maps one page of `size` at `virt` to `phys` with `flags` (PRESENT is
/// implied). Intermediate tables get PRESENT|WRITABLE and USER when the leaf
/// is a user page; the leaf's flags decide the access.
pub fn map(
    mem: &mut impl TableMemory,
    root: u64,
    virt: u64,
    phys: u64,
    size: PageSize,
    flags: u64,
) -> Result<(), MapError> {
    if !is_canonical(virt) {
        return Err(MapError::NonCanonical(virt));
    }
    if !virt.is_multiple_of(size.bytes()) || !phys.is_multiple_of(size.bytes()) {
        return Err(MapError::Misaligned);
    }
    let mut table = root;
    let leaf = size.leaf_level();
    for level in (leaf + 1..=4).rev() {
        let i = index(virt, level);
        let e = mem.read(table, i);
        if e & PRESENT == 0 {
            let new = mem.alloc_table().ok_or(MapError::NoMemory)?;
            mem.write(table, i, new | PRESENT | WRITABLE | (flags & USER));
            table = new;
        } else if e & HUGE != 0 {
            return Err(MapError::AlreadyMapped(virt));
        } else {
            if flags & USER != 0 && e & USER == 0 {
                mem.write(table, i, e | USER);
            }
            table = e & ADDR_MASK;
        }
    }
    let i = index(virt, leaf);
    if mem.read(table, i) & PRESENT != 0 {
        return Err(MapError::AlreadyMapped(virt));
    }
    let huge = if size == PageSize::Size4K { 0 } else { HUGE };
    mem.write(table, i, phys | flags | PRESENT | huge);
    Ok(())
}

/// Maps `[virt, virt+len)` to `[phys, ...)` using the largest pages the
/// alignment allows (2 MiB; 1 GiB only if `allow_1g`).
pub fn map_range(
    mem: &mut impl TableMemory,
    root: u64,
    virt: u64,
    phys: u64,
    len: u64,
    flags: u64,
    allow_1g: bool,
) -> Result<(), MapError> {
    let mut off = 0;
    while off < len {
        let (v, p, left) = (virt + off, phys + off, len - off);
        let size = [PageSize::Size1G, PageSize::Size2M, PageSize::Size4K]
            .into_iter()
            .find(|s| {
                (allow_1g || *s != PageSize::Size1G)
                    && v % s.bytes() == 0
                    && p % s.bytes() == 0
                    && left >= s.bytes()
            })
            .unwrap_or(PageSize::Size4K);
        map(mem, root, v, p, size, flags)?;
        off += size.bytes();
    }
    Ok(())
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub phys: u64,
    pub size: PageSize,
    /// The leaf's flags (with the accumulated USER/WRITABLE restrictions of
    /// the upper levels folded in, as the MMU applies them).
    pub flags: u64,
}

pub fn translate(mem: &impl TableMemory, root: u64, virt: u64) -> Option<Translation> {
    if !is_canonical(virt) {
        return None;
    }
    let mut table = root;
    let mut allow = USER | WRITABLE;
    let mut nx = 0;
    for level in (1..=4).rev() {
        let e = mem.read(table, index(virt, level));
        if e & PRESENT == 0 {
            return None;
        }
        allow &= e;
        nx |= e & NO_EXECUTE;
        let size = match level {
            3 if e & HUGE != 0 => Some(PageSize::Size1G),
            2 if e & HUGE != 0 => Some(PageSize::Size2M),
            1 => Some(PageSize::Size4K),
            _ => None,
        };
        if let Some(size) = size {
            let base = e & ADDR_MASK & !(size.bytes() - 1);
            let flags = (e & !(USER | WRITABLE | NO_EXECUTE) & !ADDR_MASK) | allow | nx;
            return Some(Translation { phys: base + (virt & (size.bytes() - 1)), size, flags });
        }
        table = e & ADDR_MASK;
    }
    None
}

/// Removes the 4 KiB mapping at `virt`, returning the frame it mapped.
pub fn unmap_4k(mem: &mut impl TableMemory, root: u64, virt: u64) -> Option<u64> {
    let mut table = root;
    for level in (2..=4).rev() {
        let e = mem.read(table, index(virt, level));
        if e & PRESENT == 0 || e & HUGE != 0 {
            return None;
        }
        table = e & ADDR_MASK;
    }
    let i = index(virt, 1);
    let e = mem.read(table, i);
    if e & PRESENT == 0 {
        return None;
    }
    mem.write(table, i, 0);
    Some(e & ADDR_MASK)
}

/// Whether a page of `size` at `virt` could be mapped without meeting
/// anything already there: no leaf covers it and, for a large page, no
/// table hangs where its leaf would go.
pub fn slot_is_free(mem: &impl TableMemory, root: u64, virt: u64, size: PageSize) -> bool {
    let mut table = root;
    for level in (size.leaf_level() + 1..=4).rev() {
        let e = mem.read(table, index(virt, level));
        if e & PRESENT == 0 {
            return true;
        }
        if e & HUGE != 0 {
            return false;
        }
        table = e & ADDR_MASK;
    }
    mem.read(table, index(virt, size.leaf_level())) & PRESENT == 0
}

/// Calls `leaf(virt, phys, size)` for every leaf of the lower half (the
/// whole of a nested table: guest-physical addresses), in address order.
pub fn for_each_leaf(mem: &impl TableMemory, root: u64, mut leaf: impl FnMut(u64, u64, PageSize)) {
    fn walk(mem: &impl TableMemory, table: u64, level: u32, base: u64, leaf: &mut impl FnMut(u64, u64, PageSize)) {
        for i in 0..512usize {
            let e = mem.read(table, i);
            if e & PRESENT == 0 {
                continue;
            }
            let virt = base + ((i as u64) << (12 + 9 * (level - 1)));
            let size = match level {
                3 if e & HUGE != 0 => Some(PageSize::Size1G),
                2 if e & HUGE != 0 => Some(PageSize::Size2M),
                1 => Some(PageSize::Size4K),
                _ => None,
            };
            match size {
                Some(size) => leaf(virt, e & ADDR_MASK & !(size.bytes() - 1), size),
                None => walk(mem, e & ADDR_MASK, level - 1, virt, leaf),
            }
        }
    }
    for i in 0..256usize {
        let e = mem.read(root, i);
        if e & PRESENT != 0 {
            walk(mem, e & ADDR_MASK, 3, (i as u64) << 39, &mut leaf);
        }
    }
}

/// The lowest page in `[from, end)` (the page holding `from` included;
/// lower half only) that has a
/// present 4 KiB leaf, skipping whole absent tables: a walk over a mapped
/// range costs what is present in it, not its length. (A loop over every
/// page of a 4 GiB read-only area held a CPU for tens of seconds with
/// interrupts off: found by sysfuzz as workers hung in munmap.) Huge
/// leaves are skipped (user address spaces have none).
pub fn next_present_4k(mem: &impl TableMemory, root: u64, from: u64, end: u64) -> Option<u64> {
    let end = end.min(1 << 47);
    let mut va = from & !0xfff;
    'outer: while va < end {
        let mut table = root;
        for level in (2..=4).rev() {
            let e = mem.read(table, index(va, level));
            if e & PRESENT == 0 || e & HUGE != 0 {
                // Nothing below this entry: go on after the span it covers.
                let span = 1u64 << (12 + 9 * (level - 1));
                va = (va & !(span - 1)).checked_add(span)?;
                continue 'outer;
            }
            table = e & ADDR_MASK;
        }
        // A leaf table: scan what is left of it within the range.
        for i in index(va, 1)..512 {
            if va >= end {
                return None;
            }
            if mem.read(table, i) & PRESENT != 0 {
                return Some(va);
            }
            va += 4096;
        }
    }
    None
}

/// Where a 4 KiB leaf entry lives: `(table frame, index)`.
pub fn leaf_slot(mem: &impl TableMemory, root: u64, virt: u64) -> Option<(u64, usize)> {
    let mut table = root;
    for level in (2..=4).rev() {
        let e = mem.read(table, index(virt, level));
        if e & PRESENT == 0 || e & HUGE != 0 {
            return None;
        }
        table = e & ADDR_MASK;
    }
    Some((table, index(virt, 1)))
}

/// Copies the lower half of `src` into the empty lower half of `dst` for
/// fork: page tables are duplicated, page frames shared. Writable pages
/// become read-only + COPY_ON_WRITE in both; `share(frame)` is called for
/// every shared frame so the caller can count references.
pub fn fork_lower_half(
    mem: &mut impl TableMemory,
    src: u64,
    dst: u64,
    mut share: impl FnMut(u64),
) -> Result<(), MapError> {
    fn copy(
        mem: &mut impl TableMemory,
        src: u64,
        dst: u64,
        level: u32,
        range: core::ops::Range<usize>,
        share: &mut dyn FnMut(u64),
    ) -> Result<(), MapError> {
        for i in range {
            let e = mem.read(src, i);
            if e & PRESENT == 0 {
                continue;
            }
            if level == 1 {
                let shared = if e & WRITABLE != 0 || e & COPY_ON_WRITE != 0 {
                    (e & !WRITABLE) | COPY_ON_WRITE
                } else {
                    e
                };
                mem.write(src, i, shared);
                mem.write(dst, i, shared);
                share(e & ADDR_MASK);
            } else if e & HUGE != 0 {
                // User address spaces use 4 KiB pages only.
                return Err(MapError::AlreadyMapped(0));
            } else {
                let t = mem.alloc_table().ok_or(MapError::NoMemory)?;
                mem.write(dst, i, t | (e & !ADDR_MASK));
                copy(mem, e & ADDR_MASK, t, level - 1, 0..512, share)?;
            }
        }
        Ok(())
    }
    copy(mem, src, dst, 4, 0..256, &mut share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct SimMem {
        tables: HashMap<u64, [u64; 512]>,
        next: u64,
        limit: Option<usize>,
    }
    impl TableMemory for SimMem {
        fn alloc_table(&mut self) -> Option<u64> {
            if self.limit.is_some_and(|l| self.tables.len() >= l) {
                return None;
            }
            self.next += 0x1000;
            self.tables.insert(self.next, [0; 512]);
            Some(self.next)
        }
        fn read(&self, t: u64, i: usize) -> u64 {
            self.tables[&t][i]
        }
        fn write(&mut self, t: u64, i: usize, e: u64) {
            self.tables.get_mut(&t).unwrap()[i] = e;
        }
    }

    fn root(m: &mut SimMem) -> u64 {
        m.alloc_table().unwrap()
    }

    #[test]
    fn next_present_4k_skips_absent_tables_and_stops_at_the_end() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        for va in [0x40_0000u64, 0x40_1000, 0x40_3000, 0x7f00_0000_0000, 0x7fff_ffff_f000] {
            map(&mut m, r, va, 0x1000_0000 + va % 0x100_0000, PageSize::Size4K, USER).unwrap();
        }
        let all = |m: &SimMem, from: u64, end: u64| {
            let mut out = Vec::new();
            let mut va = from;
            while let Some(p) = next_present_4k(m, r, va, end) {
                out.push(p);
                va = p + 4096;
            }
            out
        };
        assert_eq!(all(&m, 0, u64::MAX), [0x40_0000, 0x40_1000, 0x40_3000, 0x7f00_0000_0000, 0x7fff_ffff_f000]);
        // The page holding `from` counts; `end` is exclusive.
        assert_eq!(all(&m, 0x40_0800, 0x40_3000), [0x40_0000, 0x40_1000]);
        assert_eq!(all(&m, 0x40_2000, 0x7f00_0000_0001), [0x40_3000, 0x7f00_0000_0000]);
        assert_eq!(all(&m, 0x40_4000, 0x7f00_0000_0000), Vec::<u64>::new());
        assert_eq!(all(&m, 0x8000_0000_0000, u64::MAX), Vec::<u64>::new());
        // An unmapped page inside a present leaf table is skipped.
        unmap_4k(&mut m, r, 0x40_1000).unwrap();
        assert_eq!(all(&m, 0x40_0000, 0x40_4000), [0x40_0000, 0x40_3000]);
        // The whole lower half (2^35 pages) is walked in about as many
        // reads as there are tables, not pages.
        struct Counting<'a>(&'a SimMem, std::cell::Cell<u64>);
        impl TableMemory for Counting<'_> {
            fn alloc_table(&mut self) -> Option<u64> {
                None
            }
            fn read(&self, t: u64, i: usize) -> u64 {
                self.1.set(self.1.get() + 1);
                self.0.read(t, i)
            }
            fn write(&mut self, _: u64, _: usize, _: u64) {}
        }
        let c = Counting(&m, std::cell::Cell::new(0));
        let mut va = 0;
        while let Some(p) = next_present_4k(&c, r, va, 1 << 47) {
            va = p + 4096;
        }
        assert!(c.1.get() < 10_000, "{} reads", c.1.get());
    }

    #[test]
    fn map_and_translate_4k() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        map(&mut m, r, 0x40_0000, 0x1234_5000, PageSize::Size4K, WRITABLE | USER).unwrap();
        let t = translate(&m, r, 0x40_0abc).unwrap();
        assert_eq!(t.phys, 0x1234_5abc);
        assert_eq!(t.size, PageSize::Size4K);
        assert!(t.flags & USER != 0 && t.flags & WRITABLE != 0);
        assert_eq!(translate(&m, r, 0x40_1000), None);
        assert_eq!(m.tables.len(), 4, "root + PDPT + PD + PT");
    }

    #[test]
    fn higher_half_and_huge_pages() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        let base = 0xffff_8000_0000_0000;
        map_range(&mut m, r, base, 0, 1 << 30, WRITABLE | NO_EXECUTE, false).unwrap();
        let t = translate(&m, r, base + 0x3456_789a).unwrap();
        assert_eq!(t.phys, 0x3456_789a);
        assert_eq!(t.size, PageSize::Size2M);
        assert!(t.flags & NO_EXECUTE != 0);
        assert!(t.flags & USER == 0);
        map_range(&mut m, r, 0xffff_9000_0000_0000, 0, 1 << 30, WRITABLE, true).unwrap();
        assert_eq!(translate(&m, r, 0xffff_9000_0000_1000).unwrap().size, PageSize::Size1G);
    }

    #[test]
    fn mixed_range_uses_small_pages_at_edges() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        map_range(&mut m, r, 0x1f_f000, 0x1f_f000, 0x20_2000, WRITABLE, false).unwrap();
        assert_eq!(translate(&m, r, 0x1f_f000).unwrap().size, PageSize::Size4K);
        assert_eq!(translate(&m, r, 0x20_0000).unwrap().size, PageSize::Size2M);
        assert_eq!(translate(&m, r, 0x40_0000).unwrap().size, PageSize::Size4K);
        assert_eq!(translate(&m, r, 0x40_1000), None);
    }

    #[test]
    fn errors() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        assert_eq!(map(&mut m, r, 0x1001, 0, PageSize::Size4K, 0), Err(MapError::Misaligned));
        assert_eq!(
            map(&mut m, r, 0x0000_8000_0000_0000, 0, PageSize::Size4K, 0),
            Err(MapError::NonCanonical(0x0000_8000_0000_0000))
        );
        map(&mut m, r, 0x20_0000, 0, PageSize::Size2M, 0).unwrap();
        assert_eq!(
            map(&mut m, r, 0x20_1000, 0, PageSize::Size4K, 0),
            Err(MapError::AlreadyMapped(0x20_1000))
        );
        map(&mut m, r, 0x1000, 0, PageSize::Size4K, 0).unwrap();
        assert_eq!(map(&mut m, r, 0x1000, 0, PageSize::Size4K, 0), Err(MapError::AlreadyMapped(0x1000)));
        m.limit = Some(m.tables.len());
        assert_eq!(map(&mut m, r, 1 << 40, 0, PageSize::Size4K, 0), Err(MapError::NoMemory));
    }

    #[test]
    fn user_bit_must_be_set_at_every_level() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        map(&mut m, r, 0x1000, 0x5000, PageSize::Size4K, WRITABLE).unwrap();
        assert_eq!(translate(&m, r, 0x1000).unwrap().flags & USER, 0);
        map(&mut m, r, 0x2000, 0x6000, PageSize::Size4K, USER).unwrap();
        let t = translate(&m, r, 0x2000).unwrap();
        assert!(t.flags & USER != 0);
        assert_eq!(t.flags & WRITABLE, 0);
    }

    #[test]
    fn fork_shares_frames_copy_on_write() {
        let mut m = SimMem::default();
        let parent = root(&mut m);
        map(&mut m, parent, 0x40_0000, 0x10_0000, PageSize::Size4K, USER).unwrap(); // text, read-only
        map(&mut m, parent, 0x60_0000, 0x20_0000, PageSize::Size4K, USER | WRITABLE | NO_EXECUTE).unwrap();
        map(&mut m, parent, 0xffff_8000_0000_0000, 0, PageSize::Size2M, WRITABLE).unwrap(); // kernel half: not copied
        let child = root(&mut m);
        let mut shared = Vec::new();
        fork_lower_half(&mut m, parent, child, |f| shared.push(f)).unwrap();
        shared.sort();
        assert_eq!(shared, [0x10_0000, 0x20_0000]);
        for r in [parent, child] {
            let text = translate(&m, r, 0x40_0000).unwrap();
            assert_eq!(text.flags & (WRITABLE | COPY_ON_WRITE), 0, "read-only pages stay plain");
            let data = translate(&m, r, 0x60_0000).unwrap();
            assert_eq!(data.phys, 0x20_0000);
            assert_eq!(data.flags & WRITABLE, 0);
            assert_ne!(data.flags & COPY_ON_WRITE, 0);
            assert_ne!(data.flags & NO_EXECUTE, 0);
        }
        assert_eq!(translate(&m, child, 0xffff_8000_0000_0000), None);
        // The child's tables are its own.
        let (pt_p, _) = leaf_slot(&m, parent, 0x60_0000).unwrap();
        let (pt_c, i) = leaf_slot(&m, child, 0x60_0000).unwrap();
        assert_ne!(pt_p, pt_c);
        assert_eq!(i, 0);
    }

    #[test]
    fn unmap_returns_frame() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        map(&mut m, r, 0x7000, 0x9000, PageSize::Size4K, WRITABLE).unwrap();
        assert_eq!(unmap_4k(&mut m, r, 0x7000), Some(0x9000));
        assert_eq!(translate(&m, r, 0x7000), None);
        assert_eq!(unmap_4k(&mut m, r, 0x7000), None);
    }

    #[test]
    fn free_slots_and_leaf_walk() {
        let mut m = SimMem::default();
        let r = root(&mut m);
        assert!(slot_is_free(&m, r, 0x20_0000, PageSize::Size2M));
        map(&mut m, r, 0x20_0000, 0x80_0000, PageSize::Size2M, WRITABLE).unwrap();
        map(&mut m, r, 0x40_3000, 0x9000, PageSize::Size4K, WRITABLE).unwrap();
        map(&mut m, r, 0x80_0000_0000, 0xa000, PageSize::Size4K, WRITABLE).unwrap();
        assert!(!slot_is_free(&m, r, 0x20_0000, PageSize::Size2M), "a large leaf is there");
        assert!(!slot_is_free(&m, r, 0x2f_f000, PageSize::Size4K), "inside the large leaf");
        assert!(!slot_is_free(&m, r, 0x40_0000, PageSize::Size2M), "a table hangs there");
        assert!(slot_is_free(&m, r, 0x40_2000, PageSize::Size4K));
        assert!(!slot_is_free(&m, r, 0x40_3000, PageSize::Size4K));
        assert!(slot_is_free(&m, r, 0x60_0000, PageSize::Size2M));
        let mut leaves = Vec::new();
        for_each_leaf(&m, r, |v, p, s| leaves.push((v, p, s)));
        assert_eq!(
            leaves,
            [(0x20_0000, 0x80_0000, PageSize::Size2M), (0x40_3000, 0x9000, PageSize::Size4K), (0x80_0000_0000, 0xa000, PageSize::Size4K)]
        );
    }
}
