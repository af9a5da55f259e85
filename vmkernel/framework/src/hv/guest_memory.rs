//! Guest-physical memory: host frames mapped by a nested page table,
//! backed on first touch.
//!
//! Creating guest memory reserves host frames for all of its RAM
//! (`mm::promise_frames`: admission is decided there, and a VM the host
//! cannot hold is refused) but allocates only the table root. The first
//! access to a page backs it with zeroed frames and maps them: a nested
//! page fault from the guest ([`GuestMemory::back`]), or a write by a
//! loader or a device model ([`GuestMemory::write`]); reading a page never
//! touched reads zeros without backing it. Where the aligned 2 MiB around
//! a guest's touch (or a write of 2 MiB or more) is all RAM with nothing
//! backed yet, a whole 2 MiB large page is backed (if the allocator has an
//! aligned 2 MiB free), else 4 KiB (`vmkernel::vmm::guest_ram`). Ranges not backed by RAM (MMIO holes) stay
//! unmapped so guest accesses to them exit to the VMM. Everything touched
//! returns to the host on reset ([`GuestMemory::clear`]) and destroy.
//!
//! The nested table format for SVM is the ordinary x86-64 page-table
//! format (all entries user-accessible: nested walks are user accesses);
//! EPT has its own encoding.
//!
//! Concurrency: vCPUs of one VM fault on other CPUs while a device (the
//! network world delivering a frame) writes guest memory, so the tables
//! and every copy to or from a frame are under one lock: a frame is never
//! freed (reset) while someone copies into it. The hardware walks the
//! tables without the lock; entries only ever go from not-present to
//! present while a vCPU can run (each an aligned 8-byte store), so a walk
//! sees either the old or the new entry, and a fault on an entry another
//! CPU has just filled is resolved by finding it present. Entries are
//! removed only by `clear` and drop, when no vCPU runs; SVM flushes the
//! guest's TLB at every VMRUN and VMX at a VMCS's first launch (`hv::vmx`),
//! and every power-on makes new VMCSes.

use alloc::vec::Vec;
use spin::Mutex;
use vmkernel::paging::{self, NO_EXECUTE, PageSize, TableMemory, USER, WRITABLE};
use vmkernel::vmm::guest_ram::RamLayout;

use crate::mm::{self, Tables};

pub struct GuestMemory {
    /// Root of the nested page table.
    root: u64,
    layout: RamLayout,
    /// Flags of every leaf (EPT: the memory type) besides present/write/user.
    leaf_flags: u64,
    /// May first touches back 2 MiB large pages?
    large_pages: bool,
    /// Frames promised to this VM when it was created (all its RAM).
    promised: u64,
    state: Mutex<Backed>,
}

/// What is backed so far, under the lock.
struct Backed {
    /// Frames of the nested table below the root.
    tables: Vec<u64>,
    /// 4 KiB frames of guest RAM (2 MiB pages count 512).
    ram_frames: u64,
    /// Bytes of guest RAM in 2 MiB pages.
    large_bytes: u64,
}

/// Why a guest-physical page could not be backed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackError {
    /// The address is no RAM (an MMIO hole or past the end).
    NotRam,
    /// The host had no frame, although one was promised (the kernel's own
    /// heap grew past its reserve).
    NoMemory,
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
    /// (guest-physical ranges left unmapped for MMIO). None when the host
    /// cannot promise frames for all of it.
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
        let layout = RamLayout::new(size, holes);
        let promised = layout.ram_pages();
        if !mm::promise_frames(promised) {
            return None;
        }
        let Some(root) = mm::alloc_user_frame() else {
            mm::unpromise_frames(promised);
            return None;
        };
        let state = Mutex::new(Backed { tables: Vec::new(), ram_frames: 0, large_bytes: 0 });
        Some(Self { root, layout, leaf_flags, large_pages, promised, state })
    }

    pub(crate) fn root(&self) -> u64 {
        self.root
    }

    /// The size of the nested page mapping `gpa` (None: not backed).
    pub fn page_size_at(&self, gpa: u64) -> Option<paging::PageSize> {
        let _s = self.state.lock();
        paging::translate(&Tables, self.root, gpa).map(|t| t.size)
    }

    pub fn size(&self) -> u64 {
        self.layout.size()
    }

    /// Is every byte of `[gpa, gpa + len)` guest RAM (backed or not)?
    pub fn is_ram(&self, gpa: u64, len: u64) -> bool {
        self.layout.is_ram(gpa, len)
    }

    /// Host frames (4 KiB) backing guest RAM: what the guest has touched.
    pub fn ram_frames(&self) -> usize {
        self.state.lock().ram_frames as usize
    }

    /// Frames of guest RAM the host has promised this VM (all its RAM).
    pub fn promised_frames(&self) -> u64 {
        self.promised
    }

    /// Guest RAM mapped with 2 MiB nested pages, in bytes.
    pub fn large_page_bytes(&self) -> u64 {
        self.state.lock().large_bytes
    }

    /// Host frames of the nested page table itself.
    pub fn table_frames(&self) -> usize {
        1 + self.state.lock().tables.len()
    }

    /// Backs the page around `gpa` if it is not yet (a nested page fault on
    /// RAM: the guest touched it first). Ok also when another CPU backed it
    /// meanwhile.
    pub fn back(&self, gpa: u64) -> Result<(), BackError> {
        let mut s = self.state.lock();
        self.frame_locked(&mut s, gpa, true).map(|_| ())
    }

    /// The host frame behind the 4 KiB page of `gpa`, backing it first
    /// (with a large page only if `large` allows).
    fn frame_locked(&self, s: &mut Backed, gpa: u64, large: bool) -> Result<u64, BackError> {
        if let Some(t) = paging::translate(&Tables, self.root, gpa & !0xfff) {
            return Ok(t.phys);
        }
        let (base, size) = self.layout.backing_for(gpa, large && self.large_pages).ok_or(BackError::NotRam)?;
        let flags = USER | WRITABLE | self.leaf_flags;
        if size == PageSize::Size2M
            && paging::slot_is_free(&Tables, self.root, base, PageSize::Size2M)
            && let Some(block) = mm::alloc_promised_block_2m()
        {
            if paging::map(&mut CountingTables(&mut s.tables), self.root, base, block, PageSize::Size2M, flags).is_err() {
                mm::free_promised(block, true);
                return Err(BackError::NoMemory);
            }
            s.ram_frames += mm::FRAMES_PER_2M;
            s.large_bytes += PageSize::Size2M.bytes();
            return Ok(block + (gpa & (PageSize::Size2M.bytes() - 1) & !0xfff));
        }
        let page = gpa & !0xfff;
        let frame = mm::alloc_promised_frame().ok_or(BackError::NoMemory)?;
        if paging::map(&mut CountingTables(&mut s.tables), self.root, page, frame, PageSize::Size4K, flags).is_err() {
            mm::free_promised(frame, false);
            return Err(BackError::NoMemory);
        }
        s.ram_frames += 1;
        Ok(frame)
    }

    /// Returns all guest RAM to the host (it reads as zeros again and is
    /// backed anew on its next touch) and empties the nested table. Only
    /// while no vCPU of this memory runs (power-on after a stop).
    pub fn clear(&self) {
        let mut s = self.state.lock();
        paging::for_each_leaf(&Tables, self.root, |_, phys, size| mm::free_promised(phys, size == PageSize::Size2M));
        for t in s.tables.drain(..) {
            let _ = mm::free_frame(t);
        }
        for i in 0..512 {
            Tables.write(self.root, i, 0);
        }
        s.ram_frames = 0;
        s.large_bytes = 0;
    }

    /// Copies `data` into guest memory, backing the pages it touches; false
    /// if any byte is not RAM (nothing is written then) or the host has no
    /// frame. Only writes of a large page's size or more (a kernel, an
    /// initrd) back large pages: a small one (firmware tables, a clock
    /// page, a DMA buffer) would otherwise zero 2 MiB for a few bytes.
    pub fn write(&self, gpa: u64, data: &[u8]) -> bool {
        if !self.layout.is_ram(gpa, data.len() as u64) {
            return false;
        }
        let large = data.len() as u64 >= PageSize::Size2M.bytes();
        let mut off = 0;
        while off < data.len() {
            let a = gpa + off as u64;
            let n = ((4096 - (a & 0xfff)) as usize).min(data.len() - off);
            let mut s = self.state.lock();
            let Ok(f) = self.frame_locked(&mut s, a, large) else { return false };
            // SAFETY: `f` is a frame of this VM's RAM (the lock keeps it
            // from being freed during the copy), mapped by the direct map;
            // `n` bytes stay inside its page.
            unsafe {
                core::ptr::copy_nonoverlapping(data[off..].as_ptr(), (mm::phys_to_virt(f) + (a & 0xfff)) as *mut u8, n)
            };
            drop(s);
            off += n;
        }
        true
    }

    /// Copies guest memory into `buf` (pages never touched read as zeros and
    /// stay unbacked); false if any byte is not RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        if !self.layout.is_ram(gpa, buf.len() as u64) {
            return false;
        }
        let mut off = 0;
        while off < buf.len() {
            let a = gpa + off as u64;
            let n = ((4096 - (a & 0xfff)) as usize).min(buf.len() - off);
            let s = self.state.lock();
            match paging::translate(&Tables, self.root, a & !0xfff) {
                // SAFETY: as in `write`: a frame of this VM's RAM, held by
                // the lock, `n` bytes inside its page.
                Some(t) => unsafe {
                    core::ptr::copy_nonoverlapping((mm::phys_to_virt(t.phys) + (a & 0xfff)) as *const u8, buf[off..].as_mut_ptr(), n)
                },
                None => buf[off..off + n].fill(0),
            }
            drop(s);
            off += n;
        }
        true
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        self.clear();
        let _ = mm::free_frame(self.root);
        mm::unpromise_frames(self.promised);
    }
}

// NX is never set in nested entries: the guest's own tables decide.
const _: u64 = NO_EXECUTE;
