//! Virtual memory areas of one user address space: what `mmap`, `munmap`,
//! `mprotect` and `brk` change, and what the page-fault handler consults.
//!
//! Pure bookkeeping — page tables and frames are the caller's. Operations
//! that drop or change memory return the affected areas so the caller can
//! unmap pages, free frames or rewrite PTEs. Errors are Linux errno values,
//! chosen in the order Linux 6.1 checks them (`do_mmap`, `__vm_munmap`,
//! `do_mprotect_pkey`, `brk`), so programs see the same failures.

use crate::elf::{MMAP_MIN_ADDR, USER_END};
use crate::linux_abi::errno::{
    EACCES, EBADF, EEXIST, EFAULT, EINVAL, ENOMEM, EOPNOTSUPP, EOVERFLOW, EPERM,
};
use crate::linux_abi::flags::mman::*;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub const PAGE_SIZE: u64 = 4096;
/// Top of user space (Linux TASK_SIZE).
pub const TASK_SIZE: u64 = USER_END;
/// Default top of the mmap area: 128 MiB below the top of user space, leaving
/// room for the stack (Linux's minimum gap; what it uses without ASLR).
pub const DEFAULT_MMAP_BASE: u64 = TASK_SIZE - (128 << 20);
/// Where the bottom-up fallback search starts (Linux TASK_UNMAPPED_BASE).
pub const TASK_UNMAPPED_BASE: u64 = (TASK_SIZE / 3) & !(PAGE_SIZE - 1);
/// Linux `vm.max_map_count`.
pub const DEFAULT_MAX_MAP_COUNT: usize = 65530;
/// Kept free below a grows-down stack (Linux `stack_guard_gap`, 256 pages).
pub const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
/// Default RLIMIT_STACK: how far a grows-down area may extend.
pub const DEFAULT_STACK_LIMIT: u64 = 8 << 20;

const RWX: u32 = PROT_READ | PROT_WRITE | PROT_EXEC;
/// PROT_SEM (0x8) is accepted by mprotect on x86 and means nothing.
const PROT_SEM: u32 = 0x8;
/// Flags MAP_SHARED_VALIDATE accepts (Linux LEGACY_MAP_MASK; MAP_UNINITIALIZED is 0x4000000).
const LEGACY_MAP_MASK: u32 = MAP_SHARED
    | MAP_PRIVATE
    | MAP_FIXED
    | MAP_ANONYMOUS
    | MAP_DENYWRITE
    | MAP_EXECUTABLE
    | 0x400_0000
    | MAP_GROWSDOWN
    | MAP_LOCKED
    | MAP_NORESERVE
    | MAP_POPULATE
    | MAP_NONBLOCK
    | MAP_STACK
    | MAP_HUGETLB;

const fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}
/// PAGE_ALIGN; 0 when it wraps (callers treat that as too large).
const fn page_align(a: u64) -> u64 {
    a.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// What an area's pages hold before they are first touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Zero-filled memory.
    Anonymous,
    /// A file (opaque `id` chosen by the caller); `offset` is the file
    /// offset of the area's first byte.
    File { id: u64, offset: u64 },
}

/// One virtual memory area, `[start, end)`, page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// Current PROT_READ/WRITE/EXEC.
    pub prot: u32,
    /// What mprotect may grant (Linux VM_MAY*): no WRITE for a shared
    /// mapping of a file opened read-only.
    pub max_prot: u32,
    /// MAP_SHARED: writes reach the file / other sharers; otherwise private.
    pub shared: bool,
    pub backing: Backing,
    /// MAP_GROWSDOWN (the main stack): faults just below extend it.
    pub grows_down: bool,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }
    /// Private and possibly writable: a fork shares its pages copy-on-write.
    pub fn is_cow(&self) -> bool {
        !self.shared && self.max_prot & PROT_WRITE != 0
    }
    /// Lowest address a new mapping below may end at (keeps the guard gap).
    fn start_gap(&self) -> u64 {
        if self.grows_down {
            self.start.saturating_sub(STACK_GUARD_GAP)
        } else {
            self.start
        }
    }
    /// The part of this area in `[start, end)` (which must intersect it).
    fn clip(&self, start: u64, end: u64) -> Vma {
        let s = start.max(self.start);
        let mut v = Vma {
            start: s,
            end: end.min(self.end),
            ..*self
        };
        if let Backing::File { id, offset } = self.backing {
            v.backing = Backing::File {
                id,
                offset: offset + (s - self.start),
            };
        }
        v
    }
    /// Whether `next` (starting at our end) can become part of this area.
    fn mergeable_with(&self, next: &Vma) -> bool {
        let backing_ok = match (self.backing, next.backing) {
            // Each shared anonymous mapping is its own object.
            (Backing::Anonymous, Backing::Anonymous) => !self.shared,
            (Backing::File { id: a, offset: oa }, Backing::File { id: b, offset: ob }) => {
                a == b && oa + self.len() == ob
            }
            _ => false,
        };
        self.end == next.start
            && backing_ok
            && self.prot == next.prot
            && self.max_prot == next.max_prot
            && self.shared == next.shared
            && self.grows_down == next.grows_down
    }
}

/// A file to map, as the caller resolved it from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmapFile {
    pub id: u64,
    /// The descriptor was opened for reading / writing.
    pub readable: bool,
    pub writable: bool,
}

/// A successful mmap: the address, and what MAP_FIXED replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub addr: u64,
    pub replaced: Vec<Vma>,
}

/// A successful mremap: where the area is now, and what the caller must do
/// with pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remapped {
    pub addr: u64,
    /// Pages to move: `(from, to, len)`.
    pub moved: Option<(u64, u64, u64)>,
    /// Areas removed (their pages are to be unmapped): a shrunk tail, or
    /// what MREMAP_FIXED replaced.
    pub removed: Vec<Vma>,
    /// The part added beyond the old size (empty when not grown).
    pub grown: Option<Vma>,
}

pub const MREMAP_MAYMOVE: u32 = 1;
pub const MREMAP_FIXED: u32 = 2;
pub const MREMAP_DONTUNMAP: u32 = 4;

/// Why a user access faulted, as SIGSEGV's si_code tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No area there (SEGV_MAPERR).
    Unmapped,
    /// An area, but not with this access (SEGV_ACCERR).
    Protection,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// The areas of one address space, plus the program break.
#[derive(Clone, Debug)]
pub struct VmMap {
    areas: BTreeMap<u64, Vma>,
    /// Top of the top-down mmap search.
    pub mmap_base: u64,
    pub max_map_count: usize,
    /// RLIMIT_STACK for grows-down areas.
    pub stack_limit: u64,
    start_brk: u64,
    brk: u64,
}

impl Default for VmMap {
    fn default() -> Self {
        Self::new(DEFAULT_MMAP_BASE)
    }
}

impl VmMap {
    pub fn new(mmap_base: u64) -> Self {
        Self {
            areas: BTreeMap::new(),
            mmap_base,
            max_map_count: DEFAULT_MAX_MAP_COUNT,
            stack_limit: DEFAULT_STACK_LIMIT,
            start_brk: 0,
            brk: 0,
        }
    }

    pub fn areas(&self) -> impl Iterator<Item = &Vma> {
        self.areas.values()
    }
    pub fn len(&self) -> usize {
        self.areas.len()
    }
    pub fn is_empty(&self) -> bool {
        self.areas.is_empty()
    }

    /// The area containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.areas
            .range(..=addr)
            .next_back()
            .map(|(_, v)| v)
            .filter(|v| v.contains(addr))
    }

    /// The first area ending above `addr` (Linux find_vma).
    fn find_vma(&self, addr: u64) -> Option<&Vma> {
        if let Some(v) = self.find(addr) {
            return Some(v);
        }
        self.areas.range(addr..).next().map(|(_, v)| v)
    }

    fn intersects(&self, start: u64, end: u64) -> bool {
        self.find_vma(start).is_some_and(|v| v.start < end)
    }

    /// Splits the area containing `addr` so that an area starts at `addr`.
    fn split_at(&mut self, addr: u64) {
        let Some(v) = self.find(addr).copied() else {
            return;
        };
        if v.start == addr {
            return;
        }
        self.areas.insert(v.start, v.clip(v.start, addr));
        self.areas.insert(addr, v.clip(addr, v.end));
    }

    /// Removes `[start, end)` from every area; returns the removed pieces.
    fn remove_range(&mut self, start: u64, end: u64) -> Vec<Vma> {
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.areas.range(start..end).map(|(k, _)| *k).collect();
        keys.iter().filter_map(|k| self.areas.remove(k)).collect()
    }

    /// Merges the area starting at `key` with its neighbours where possible.
    fn merge_around(&mut self, key: u64) {
        let mut key = key;
        if let Some((&pk, prev)) = self.areas.range(..key).next_back()
            && prev.mergeable_with(&self.areas[&key])
        {
            let cur = self.areas.remove(&key).unwrap();
            self.areas.get_mut(&pk).unwrap().end = cur.end;
            key = pk;
        }
        let end = self.areas[&key].end;
        if let Some(next) = self.areas.get(&end).copied()
            && self.areas[&key].mergeable_with(&next)
        {
            self.areas.remove(&end);
            self.areas.get_mut(&key).unwrap().end = next.end;
        }
    }

    fn insert(&mut self, vma: Vma) {
        debug_assert!(!self.intersects(vma.start, vma.end));
        self.areas.insert(vma.start, vma);
        self.merge_around(vma.start);
    }

    /// Highest free `[a, a + len)` inside `[low, high)` (top-down search).
    fn find_top_down(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut hi = high;
        for v in self.areas.values().rev() {
            if v.end < hi {
                let lo = v.end.max(low);
                if hi >= lo && hi - lo >= len {
                    return Some(hi - len);
                }
            }
            hi = hi.min(v.start_gap());
            if hi <= low {
                return None;
            }
        }
        (hi >= low && hi - low >= len).then(|| hi - len)
    }

    /// Lowest free `[a, a + len)` inside `[low, high)` (bottom-up search).
    fn find_bottom_up(&self, len: u64, low: u64, high: u64) -> Option<u64> {
        let mut lo = low;
        for v in self.areas.values() {
            let top = v.start_gap().min(high);
            if top >= lo && top - lo >= len {
                return Some(lo);
            }
            lo = lo.max(v.end);
        }
        (high >= lo && high - lo >= len).then_some(lo)
    }

    /// Whether `[addr, addr + len)` is free and keeps any stack's guard gap.
    fn hint_fits(&self, addr: u64, len: u64) -> bool {
        if addr < MMAP_MIN_ADDR || addr > TASK_SIZE - len {
            return false;
        }
        match self.find_vma(addr) {
            None => true,
            Some(v) => addr + len <= v.start_gap() && v.start >= addr + len,
        }
    }

    /// mmap(2). `offset` is the file offset (ignored for MAP_ANONYMOUS);
    /// `file` is `None` for MAP_ANONYMOUS (else EBADF).
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u32,
        flags: u32,
        file: Option<MmapFile>,
        offset: u64,
    ) -> Result<Mapped, i32> {
        let anonymous = flags & MAP_ANONYMOUS != 0;
        if offset & (PAGE_SIZE - 1) != 0 {
            return Err(EINVAL);
        }
        let file = if anonymous {
            None
        } else {
            Some(file.ok_or(EBADF)?)
        };
        if len == 0 {
            return Err(EINVAL);
        }
        let flags = if flags & MAP_FIXED_NOREPLACE != 0 {
            flags | MAP_FIXED
        } else {
            flags
        };
        let fixed = flags & MAP_FIXED != 0;
        // Hints below mmap_min_addr are raised to it; hints are page-rounded down.
        let mut hint = page_down(addr);
        if !fixed && hint != 0 && hint < MMAP_MIN_ADDR {
            hint = MMAP_MIN_ADDR;
        }
        let len = page_align(len);
        if len == 0 {
            return Err(ENOMEM);
        }
        let pgoff = offset / PAGE_SIZE;
        if pgoff.checked_add(len / PAGE_SIZE).is_none() {
            return Err(EOVERFLOW);
        }
        if self.areas.len() > self.max_map_count {
            return Err(ENOMEM);
        }

        // get_unmapped_area
        if len > TASK_SIZE {
            return Err(ENOMEM);
        }
        let start = if fixed {
            if addr > TASK_SIZE - len {
                return Err(ENOMEM);
            }
            if addr & (PAGE_SIZE - 1) != 0 {
                return Err(EINVAL);
            }
            if addr < MMAP_MIN_ADDR {
                return Err(EPERM);
            }
            addr
        } else if hint != 0 && self.hint_fits(hint, len) {
            hint
        } else if flags & MAP_32BIT != 0 {
            self.find_bottom_up(len, 0x4000_0000, 0x8000_0000)
                .ok_or(ENOMEM)?
        } else {
            self.find_top_down(len, MMAP_MIN_ADDR, self.mmap_base)
                .or_else(|| self.find_bottom_up(len, TASK_UNMAPPED_BASE, TASK_SIZE))
                .ok_or(ENOMEM)?
        };
        let end = start + len;
        if flags & MAP_FIXED_NOREPLACE != 0 && self.intersects(start, end) {
            return Err(EEXIST);
        }

        let grows_down = flags & MAP_GROWSDOWN != 0;
        let (shared, max_prot, backing) = match file {
            Some(f) => {
                // file_mmap_ok: the mapped range must fit in a file's largest offset.
                const MAX_LFS_FILESIZE: u64 = i64::MAX as u64;
                if offset > MAX_LFS_FILESIZE - len {
                    return Err(EOVERFLOW);
                }
                let shared = match flags & MAP_TYPE {
                    MAP_SHARED | MAP_SHARED_VALIDATE => {
                        let checked = if flags & MAP_TYPE == MAP_SHARED_VALIDATE {
                            flags
                        } else {
                            flags & LEGACY_MAP_MASK
                        };
                        if checked & !LEGACY_MAP_MASK != 0 {
                            return Err(EOPNOTSUPP);
                        }
                        if prot & PROT_WRITE != 0 && !f.writable {
                            return Err(EACCES);
                        }
                        true
                    }
                    MAP_PRIVATE => false,
                    _ => return Err(EINVAL),
                };
                if !f.readable {
                    return Err(EACCES);
                }
                if grows_down {
                    return Err(EINVAL);
                }
                let max = if shared && !f.writable {
                    RWX & !PROT_WRITE
                } else {
                    RWX
                };
                (shared, max, Backing::File { id: f.id, offset })
            }
            None => match flags & MAP_TYPE {
                MAP_SHARED if grows_down => return Err(EINVAL),
                MAP_SHARED => (true, RWX, Backing::Anonymous),
                MAP_PRIVATE => (false, RWX, Backing::Anonymous),
                _ => return Err(EINVAL),
            },
        };

        // mmap_region: unmap what MAP_FIXED covers, then insert.
        if self.would_split_over_limit(start, end) {
            return Err(ENOMEM);
        }
        let replaced = self.remove_range(start, end);
        self.insert(Vma {
            start,
            end,
            prot: prot & RWX,
            max_prot,
            shared,
            backing,
            grows_down,
        });
        Ok(Mapped {
            addr: start,
            replaced,
        })
    }

    /// mremap(2) on the bookkeeping: shrinks in place, grows in place when
    /// the addresses after the area are free, else moves (MREMAP_MAYMOVE)
    /// to a free range or to `new_addr` (MREMAP_FIXED, replacing what is
    /// there). The range must lie in one area (EFAULT). Errors as Linux
    /// 6.1 reports them; MREMAP_DONTUNMAP and old_len 0 are EINVAL here.
    pub fn mremap(&mut self, old: u64, old_len: u64, new_len: u64, flags: u32, new_addr: u64) -> Result<Remapped, i32> {
        if old & (PAGE_SIZE - 1) != 0
            || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP) != 0
            || flags & MREMAP_DONTUNMAP != 0
            || (flags & MREMAP_FIXED != 0 && flags & MREMAP_MAYMOVE == 0)
        {
            return Err(EINVAL);
        }
        let old_len = page_align(old_len);
        let new_len = page_align(new_len);
        if new_len == 0 || old_len == 0 || old > TASK_SIZE || old_len > TASK_SIZE - old || new_len > TASK_SIZE {
            return Err(EINVAL);
        }
        let v = *self.find(old).ok_or(EFAULT)?;
        if old + old_len > v.end {
            return Err(EFAULT);
        }
        let mut removed = Vec::new();
        if flags & MREMAP_FIXED != 0 {
            if new_addr & (PAGE_SIZE - 1) != 0 || new_addr > TASK_SIZE - new_len || new_addr < MMAP_MIN_ADDR {
                return Err(EINVAL);
            }
            if new_addr < old + old_len && old < new_addr + new_len {
                return Err(EINVAL);
            }
            removed = self.remove_range(new_addr, new_addr + new_len);
            let keep = old_len.min(new_len);
            removed.extend(self.remove_range(old + keep, old + old_len));
            return Ok(self.move_area(v, old, keep, new_addr, new_len, removed));
        }
        if new_len <= old_len {
            removed = self.remove_range(old + new_len, old + old_len);
            return Ok(Remapped { addr: old, moved: None, removed, grown: None });
        }
        // Grow in place: the area must end with the range, the space after
        // it be free (and keep any stack's guard gap).
        let grow = new_len - old_len;
        if old + old_len == v.end && v.end <= TASK_SIZE - grow && self.hint_fits(v.end, grow) {
            let g = Vma { start: v.end, end: v.end + grow, ..v.clip(v.start, v.end) };
            let g = match v.backing {
                Backing::File { id, offset } => Vma { backing: Backing::File { id, offset: offset + v.len() }, ..g },
                Backing::Anonymous => g,
            };
            self.insert(g);
            return Ok(Remapped { addr: old, moved: None, removed, grown: Some(g) });
        }
        if flags & MREMAP_MAYMOVE == 0 {
            return Err(ENOMEM);
        }
        let to = self
            .find_top_down(new_len, MMAP_MIN_ADDR, self.mmap_base)
            .or_else(|| self.find_bottom_up(new_len, TASK_UNMAPPED_BASE, TASK_SIZE))
            .ok_or(ENOMEM)?;
        Ok(self.move_area(v, old, old_len, to, new_len, removed))
    }

    /// Moves `[old, old + len)` of area `v` to `to`, `new_len` long.
    fn move_area(&mut self, v: Vma, old: u64, len: u64, to: u64, new_len: u64, removed: Vec<Vma>) -> Remapped {
        let piece = v.clip(old, old + len);
        let _ = self.remove_range(old, old + len);
        let moved = Vma { start: to, end: to + new_len, ..piece };
        self.insert(moved);
        let grown = (new_len > len).then(|| {
            let g = Vma { start: to + len, end: to + new_len, ..moved };
            match moved.backing {
                Backing::File { id, offset } => Vma { backing: Backing::File { id, offset: offset + len }, ..g },
                Backing::Anonymous => g,
            }
        });
        Remapped { addr: to, moved: Some((old, to, len)), removed, grown }
    }

    /// Splitting one area in the middle adds an area; refuse at the limit.
    fn would_split_over_limit(&self, start: u64, end: u64) -> bool {
        self.find(start)
            .is_some_and(|v| v.start < start && end < v.end)
            && self.areas.len() >= self.max_map_count
    }

    /// munmap(2): returns the pieces removed (possibly none).
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<Vec<Vma>, i32> {
        if addr & (PAGE_SIZE - 1) != 0 || addr > TASK_SIZE || len > TASK_SIZE - addr {
            return Err(EINVAL);
        }
        let end = addr + page_align(len);
        if end == addr {
            return Err(EINVAL);
        }
        if self.would_split_over_limit(addr, end) {
            return Err(ENOMEM);
        }
        Ok(self.remove_range(addr, end))
    }

    /// mprotect(2): returns the areas (after the change) whose protections
    /// changed, for the caller to update PTEs. Linux applies the change area
    /// by area and may fail half-way; this checks the whole range first and
    /// then applies it, returning the same errno.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u32) -> Result<Vec<Vma>, i32> {
        let grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP);
        let prot = prot & !(PROT_GROWSDOWN | PROT_GROWSUP);
        if grows == PROT_GROWSDOWN | PROT_GROWSUP {
            return Err(EINVAL);
        }
        if addr & (PAGE_SIZE - 1) != 0 {
            return Err(EINVAL);
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut start = addr;
        let end = addr.wrapping_add(page_align(len));
        if end <= start {
            return Err(ENOMEM);
        }
        if prot & !(RWX | PROT_SEM) != 0 {
            return Err(EINVAL);
        }
        let prot = prot & RWX;
        let first = *self.find_vma(start).ok_or(ENOMEM)?;
        if grows & PROT_GROWSDOWN != 0 {
            if first.start >= end {
                return Err(ENOMEM);
            }
            start = first.start;
            if !first.grows_down {
                return Err(EINVAL);
            }
        } else if grows & PROT_GROWSUP != 0 {
            // No grows-up areas on x86.
            return Err(EINVAL);
        } else if first.start > start {
            return Err(ENOMEM);
        }
        // Walk the range: contiguous areas, each allowing `prot`.
        let mut splits = 0;
        let mut at = start;
        for v in self.areas.range(first.start..end).map(|(_, v)| v) {
            if v.start > at {
                return Err(ENOMEM); // a hole
            }
            if prot & !v.max_prot != 0 {
                return Err(EACCES);
            }
            splits += (v.start < start) as usize + (v.end > end) as usize;
            at = v.end;
            if at >= end {
                break;
            }
        }
        if at < end {
            return Err(ENOMEM);
        }
        if splits > 0 && self.areas.len() >= self.max_map_count {
            return Err(ENOMEM);
        }
        self.split_at(start);
        self.split_at(end);
        let keys: Vec<u64> = self.areas.range(start..end).map(|(k, _)| *k).collect();
        let mut changed = Vec::new();
        for k in &keys {
            let v = self.areas.get_mut(k).unwrap();
            if v.prot != prot {
                v.prot = prot;
                changed.push(*v);
            }
        }
        for k in keys.iter().rev() {
            if self.areas.contains_key(k) {
                self.merge_around(*k);
            }
        }
        Ok(changed)
    }

    /// Sets the initial program break (at exec: the end of the highest
    /// segment, page aligned). The heap grows from here and never below.
    pub fn set_initial_brk(&mut self, brk: u64) {
        self.start_brk = brk;
        self.brk = brk;
    }

    pub fn brk_value(&self) -> u64 {
        self.brk
    }

    /// brk(2): moves the break and returns the new one, or the old one if
    /// the request cannot be met (Linux never returns an error here).
    /// The second value lists the pages dropped when shrinking.
    pub fn brk(&mut self, new: u64) -> (u64, Vec<Vma>) {
        let old = self.brk;
        if new < self.start_brk {
            return (old, Vec::new());
        }
        let newbrk = page_align(new);
        let oldbrk = page_align(old);
        if newbrk == 0 && new != 0 {
            return (old, Vec::new()); // wrapped
        }
        if newbrk == oldbrk {
            self.brk = new;
            return (new, Vec::new());
        }
        if new <= old {
            let dropped = self.remove_range(newbrk, oldbrk);
            self.brk = new;
            return (new, dropped);
        }
        if newbrk > TASK_SIZE {
            return (old, Vec::new());
        }
        // Keep one page (and a stack's guard gap) free above the heap.
        if let Some(next) = self.find_vma(oldbrk)
            && newbrk + PAGE_SIZE > next.start_gap()
        {
            return (old, Vec::new());
        }
        if self.areas.len() >= self.max_map_count {
            return (old, Vec::new());
        }
        self.insert(Vma {
            start: oldbrk,
            end: newbrk,
            prot: PROT_READ | PROT_WRITE,
            max_prot: RWX,
            shared: false,
            backing: Backing::Anonymous,
            grows_down: false,
        });
        self.brk = new;
        (new, Vec::new())
    }

    /// For the page-fault handler: the area that serves `addr` for this
    /// access. A fault just below a grows-down area within the stack limit
    /// extends it (and keeps the guard gap to the area below).
    pub fn fault_lookup(&mut self, addr: u64, access: Access) -> Result<Vma, Fault> {
        let vma = match self.find(addr) {
            Some(v) => *v,
            None => self.expand_stack(addr)?,
        };
        let ok = match access {
            Access::Read => vma.prot & RWX != 0, // x86: write or exec imply read
            Access::Write => vma.prot & PROT_WRITE != 0,
            Access::Exec => vma.prot & PROT_EXEC != 0,
        };
        if ok { Ok(vma) } else { Err(Fault::Protection) }
    }

    fn expand_stack(&mut self, addr: u64) -> Result<Vma, Fault> {
        let next = *self
            .areas
            .range(addr..)
            .next()
            .map(|(_, v)| v)
            .ok_or(Fault::Unmapped)?;
        if !next.grows_down || addr < MMAP_MIN_ADDR {
            return Err(Fault::Unmapped);
        }
        let new_start = page_down(addr);
        if next.end - new_start > self.stack_limit {
            return Err(Fault::Unmapped);
        }
        if let Some((_, prev)) = self.areas.range(..next.start).next_back()
            && new_start < prev.end.saturating_add(STACK_GUARD_GAP)
        {
            return Err(Fault::Unmapped);
        }
        let mut grown = self.areas.remove(&next.start).unwrap();
        grown.start = new_start;
        self.areas.insert(new_start, grown);
        Ok(grown)
    }

    /// Drops every area (execve, exit); returns them.
    pub fn clear(&mut self) -> Vec<Vma> {
        self.start_brk = 0;
        self.brk = 0;
        core::mem::take(&mut self.areas).into_values().collect()
    }
}

#[cfg(test)]
mod tests;
