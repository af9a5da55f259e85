//! Guest-physical memory: host frames mapped by a nested page table.
//!
//! Frames are zeroed before a guest sees them and all returned when the VM
//! is destroyed. Ranges not backed by RAM (MMIO holes) stay unmapped so
//! guest accesses to them exit to the VMM. The nested table format for SVM
//! is the ordinary x86-64 page-table format (all entries user-accessible:
//! nested walks are user accesses); EPT has its own encoding.

use alloc::vec::Vec;
use vmkernel::paging::{self, NO_EXECUTE, TableMemory, USER, WRITABLE};

use crate::mm::{self, Tables};

pub struct GuestMemory {
    /// Root of the nested page table.
    root: u64,
    /// (guest-physical page, host frame) for every RAM page.
    frames: Vec<(u64, u64)>,
    tables: Vec<u64>,
    size: u64,
}

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
        Self::with_leaf_flags(size, holes, 0)
    }

    /// Guest RAM in Intel's EPT format: the same tree (present/write/user
    /// are EPT's read/write/execute bits 0–2) with the write-back memory
    /// type in every leaf.
    pub fn new_ept(size: u64, holes: &[(u64, u64)]) -> Option<Self> {
        Self::with_leaf_flags(size, holes, vmkernel::vmm::vmx::EPT_LEAF_WRITE_BACK)
    }

    fn with_leaf_flags(size: u64, holes: &[(u64, u64)], leaf_flags: u64) -> Option<Self> {
        let mut tables = Vec::new();
        let root = mm::alloc_user_frame()?;
        tables.push(root);
        let mut gm = Self { root, frames: Vec::new(), tables, size };
        let mut gpa = 0;
        while gpa < size {
            if !holes.iter().any(|&(s, e)| gpa >= s && gpa < e) {
                let Some(f) = mm::alloc_user_frame() else {
                    drop(gm);
                    return None;
                };
                gm.frames.push((gpa, f));
                let mut t = CountingTables(&mut gm.tables);
                if paging::map(&mut t, root, gpa, f, paging::PageSize::Size4K, USER | WRITABLE | leaf_flags).is_err() {
                    drop(gm);
                    return None;
                }
            }
            gpa += 4096;
        }
        Some(gm)
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host frames backing guest RAM.
    pub fn ram_frames(&self) -> usize {
        self.frames.len()
    }

    /// Host frames of the nested page table itself.
    pub fn table_frames(&self) -> usize {
        self.tables.len()
    }

    /// Zeroes all guest RAM (power-on after a stop starts from clean memory).
    pub fn clear(&self) {
        for &(_, f) in &self.frames {
            // SAFETY: `f` is a frame this VM owns, mapped by the direct map.
            unsafe { core::ptr::write_bytes(mm::phys_to_virt(f) as *mut u8, 0, 4096) };
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
        for &(_, f) in &self.frames {
            let _ = mm::free_frame(f);
        }
        for &t in &self.tables {
            let _ = mm::free_frame(t);
        }
    }
}

// NX is never set in nested entries: the guest's own tables decide.
const _: u64 = NO_EXECUTE;
