//! Guest-physical memory: host frames mapped by a nested page table.
//!
//! Frames are zeroed before a guest sees them and all returned when the VM
//! is destroyed. Ranges not backed by RAM (MMIO holes) stay unmapped so
//! guest accesses to them exit to the VMM. RAM is mapped with 2 MiB large
//! pages wherever a whole aligned 2 MiB of guest RAM (no hole in it) can
//! get a whole aligned 2 MiB of host frames, as real hypervisors back guest
//! memory: an eighth of the table walks, 1/512th of the leaf entries, and
//! far fewer TLB misses in the guest; the rest falls back to 4 KiB pages.
//! The nested table format for SVM
//! is the ordinary x86-64 page-table format (all entries user-accessible:
//! nested walks are user accesses); EPT has its own encoding.

use alloc::vec::Vec;
use vmkernel::paging::{self, NO_EXECUTE, PageSize, TableMemory, USER, WRITABLE};

use crate::mm::{self, Tables};

pub struct GuestMemory {
    /// Root of the nested page table.
    root: u64,
    /// Every stretch of guest RAM and the host frames behind it.
    backing: Vec<Backing>,
    tables: Vec<u64>,
    size: u64,
}

/// One nested leaf: a 4 KiB frame or a 2 MiB block of frames.
#[derive(Clone, Copy)]
struct Backing {
    host: u64,
    size: PageSize,
}

impl Backing {
    fn free(self) {
        let _ = match self.size {
            PageSize::Size2M => mm::free_block_2m(self.host),
            _ => mm::free_frame(self.host),
        };
    }
}

const LARGE: u64 = 2 << 20;

/// Counts the table frames it hands out so they can be freed with the VM.
struct CountingTables<'a>(&'a mut Vec<u64>);

impl TableMemory for CountingTables<'_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let f = mm::alloc_user_frame()?;
        self.0.push(f);
        Some(f)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        Tables.read(table, index)
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        Tables.write(table, index, entry)
    }
}

impl GuestMemory {
    /// Guest RAM of `size` bytes at guest-physical 0, except `holes`
    /// (guest-physical ranges left unmapped for MMIO).
    pub fn new(size: u64, holes: &[(u64, u64)]) -> Option<Self> {
        Self::with_leaf_flags(size, holes, 0, true)
    }

    /// Guest RAM in Intel's EPT format: the same tree (present/write/user
    /// are EPT's read/write/execute bits 0–2) with the write-back memory
    /// type in every leaf; 2 MiB leaves only if the CPU has them.
    pub fn new_ept(size: u64, holes: &[(u64, u64)], large_pages: bool) -> Option<Self> {
        Self::with_leaf_flags(size, holes, vmkernel::vmm::vmx::EPT_LEAF_WRITE_BACK, large_pages)
    }

    fn with_leaf_flags(size: u64, holes: &[(u64, u64)], leaf_flags: u64, large_pages: bool) -> Option<Self> {
        let mut tables = Vec::new();
        let root = mm::alloc_user_frame()?;
        tables.push(root);
        // On failure `gm` is dropped, which frees what was allocated so far.
        let mut gm = Self { root, backing: Vec::new(), tables, size };
        let in_hole = |s: u64, e: u64| holes.iter().any(|&(hs, he)| s < he && hs < e);
        let mut gpa = 0;
        while gpa < size {
            let whole_block = gpa % LARGE == 0 && gpa + LARGE <= size && !in_hole(gpa, gpa + LARGE);
            let block = if large_pages && whole_block { mm::alloc_user_block_2m() } else { None };
            let (host, page) = match block {
                Some(b) => (b, PageSize::Size2M),
                None if in_hole(gpa, gpa + 4096) => {
                    gpa += 4096;
                    continue;
                }
                None => (mm::alloc_user_frame()?, PageSize::Size4K),
            };
            gm.backing.push(Backing { host, size: page });
            let mut t = CountingTables(&mut gm.tables);
            paging::map(&mut t, root, gpa, host, page, USER | WRITABLE | leaf_flags).ok()?;
            gpa += page.bytes();
        }
        Some(gm)
    }

    pub(crate) fn root(&self) -> u64 {
        self.root
    }

    /// The size of the nested page mapping `gpa` (None: not guest RAM).
    pub fn page_size_at(&self, gpa: u64) -> Option<paging::PageSize> {
        paging::translate(&Tables, self.root, gpa).map(|t| t.size)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host frames (4 KiB) backing guest RAM.
    pub fn ram_frames(&self) -> usize {
        self.backing.iter().map(|b| (b.size.bytes() / 4096) as usize).sum()
    }

    /// Guest RAM mapped with 2 MiB nested pages, in bytes.
    pub fn large_page_bytes(&self) -> u64 {
        self.backing.iter().filter(|b| b.size == PageSize::Size2M).map(|b| b.size.bytes()).sum()
    }

    /// Host frames of the nested page table itself.
    pub fn table_frames(&self) -> usize {
        self.tables.len()
    }

    /// Zeroes all guest RAM (power-on after a stop starts from clean memory).
    pub fn clear(&self) {
        for b in &self.backing {
            // SAFETY: `b` is memory this VM owns, mapped by the direct map.
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(b.host) as *mut u8, 0, b.size.bytes() as usize) };
        }
    }

    fn frame_for(&self, gpa: u64) -> Option<u64> {
        let t = paging::translate(&Tables, self.root, gpa & !0xfff)?;
        Some(t.phys)
    }

    /// Copies `data` into guest memory; false if any byte is not RAM.
    pub fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let mut off = 0;
        while off < data.len() {
            let a = gpa + off as u64;
            let Some(f) = self.frame_for(a) else { return false };
            let n = ((4096 - (a & 0xfff)) as usize).min(data.len() - off);
            // SAFETY: `f` is a frame this VM owns, mapped by the direct map.
            unsafe {
                core::ptr::copy_nonoverlapping(data[off..].as_ptr(), (mm::phys_to_virt(f) + (a & 0xfff)) as *mut u8, n)
            };
            off += n;
        }
        true
    }

    /// Copies guest memory into `buf`; false if any byte is not RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let mut off = 0;
        while off < buf.len() {
            let a = gpa + off as u64;
            let Some(f) = self.frame_for(a) else { return false };
            let n = ((4096 - (a & 0xfff)) as usize).min(buf.len() - off);
            // SAFETY: as above.
            unsafe {
                core::ptr::copy_nonoverlapping((mm::phys_to_virt(f) + (a & 0xfff)) as *const u8, buf[off..].as_mut_ptr(), n)
            };
            off += n;
        }
        true
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        for &b in &self.backing {
            b.free();
        }
        for &t in &self.tables {
            let _ = mm::free_frame(t);
        }
    }
}

// NX is never set in nested entries: the guest's own tables decide.
const _: u64 = NO_EXECUTE;
