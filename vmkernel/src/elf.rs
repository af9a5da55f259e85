//! ELF64 x86-64 executables: validation and a load plan.
//!
//! `parse` reads the ELF header and program headers through [`ReadAt`] (the
//! file may be large and live in the VFS) and checks everything the loader
//! will rely on, so that loading can no longer fail on the file's account.
//! Supported: static ET_EXEC (BusyBox at 0x400000) and static-PIE ET_DYN
//! without PT_INTERP (Rust `+crt-static` binaries, which relocate
//! themselves). The plan lists page-aligned mappings; the kernel allocates
//! each, copies the file bytes and zeroes the rest (`Mapping::fill`).

use crate::linux_abi::errno::{EIO, ENOEXEC};
use crate::linux_abi::flags::mman::{PROT_EXEC, PROT_READ, PROT_WRITE};
use alloc::vec::Vec;
use core::fmt;

pub const PAGE_SIZE: u64 = 4096;
/// First address above user space (Linux TASK_SIZE on 4-level paging: the
/// last canonical lower-half page is kept unmapped).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Nothing is mapped below this (Linux `vm.mmap_min_addr`), so NULL faults.
pub const MMAP_MIN_ADDR: u64 = 0x1_0000;
/// Where a static-PIE is put by default: the address Linux uses without
/// address-space randomization (ELF_ET_DYN_BASE, page aligned).
pub const DEFAULT_DYN_BASE: u64 = 0x5555_5555_4000;

pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const EM_X86_64: u16 = 62;
pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PT_INTERP: u32 = 3;
pub const PT_PHDR: u32 = 6;
pub const PT_TLS: u32 = 7;
pub const PT_GNU_STACK: u32 = 0x6474_e551;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;
pub const EHDR_SIZE: usize = 64;
pub const PHDR_SIZE: usize = 56;
/// Linux refuses program-header tables larger than 64 KiB.
const MAX_PHDR_BYTES: usize = 65536;

/// Random access to the executable's bytes.
pub trait ReadAt {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; an error is an errno (e.g. EIO).
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32>;
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        let start = usize::try_from(offset).map_err(|_| EIO)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or(EIO)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Why an executable was refused. All are ENOEXEC except read errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    TooShort,
    BadMagic,
    /// EI_CLASS is not ELFCLASS64.
    NotElf64(u8),
    /// EI_DATA is not little-endian.
    NotLittleEndian(u8),
    BadVersion(u8),
    /// e_machine is not x86-64.
    WrongMachine(u16),
    /// e_type is neither ET_EXEC nor ET_DYN (a relocatable object, a core file).
    NotExecutable(u16),
    /// The file has PT_INTERP: it wants a dynamic linker, which Mantle does
    /// not provide. Link it statically (`-static`, `+crt-static`).
    DynamicallyLinked,
    BadPhentsize(u16),
    BadPhnum(u16),
    /// The program-header table runs past the end of the file.
    PhdrsOutsideFile,
    NoLoadSegments,
    /// Segment `n` has p_filesz > p_memsz.
    FileszExceedsMemsz(usize),
    /// Segment `n`'s file bytes run past the end of the file.
    SegmentOutsideFile(usize),
    /// Segment `n` has p_offset and p_vaddr that differ modulo the page
    /// size, or a p_align that is not a power of two.
    Misaligned(usize),
    /// Segment `n` reaches outside user space (below MMAP_MIN_ADDR, into
    /// the kernel half, non-canonical, or wrapping around).
    BadAddress(usize),
    /// Segments `a` and `b` (program-header indices) overlap in memory
    /// (including sharing a page, which this loader does not support).
    Overlap(usize, usize),
    /// e_entry is not inside any loaded segment.
    EntryOutsideSegments(u64),
    /// Reading the file failed with this errno.
    Io(i32),
}

impl ElfError {
    /// The errno execve returns.
    pub fn errno(&self) -> i32 {
        match self {
            ElfError::Io(e) => *e,
            _ => ENOEXEC,
        }
    }
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ElfError::*;
        match self {
            TooShort => write!(f, "file too short for an ELF header"),
            BadMagic => write!(f, "not an ELF file (bad magic)"),
            NotElf64(c) => write!(f, "not a 64-bit ELF file (class {c})"),
            NotLittleEndian(d) => write!(f, "not a little-endian ELF file (data encoding {d})"),
            BadVersion(v) => write!(f, "unknown ELF version {v}"),
            WrongMachine(m) => write!(f, "not an x86-64 executable (e_machine {m})"),
            NotExecutable(t) => write!(f, "not an executable (e_type {t})"),
            DynamicallyLinked => {
                write!(
                    f,
                    "dynamically linked (has PT_INTERP); only static executables run"
                )
            }
            BadPhentsize(s) => write!(f, "bad program header size {s}"),
            BadPhnum(n) => write!(f, "bad number of program headers {n}"),
            PhdrsOutsideFile => write!(f, "program headers outside the file"),
            NoLoadSegments => write!(f, "no loadable segments"),
            FileszExceedsMemsz(i) => write!(f, "segment {i}: p_filesz > p_memsz"),
            SegmentOutsideFile(i) => write!(f, "segment {i}: file bytes outside the file"),
            Misaligned(i) => write!(f, "segment {i}: p_offset/p_vaddr misaligned"),
            BadAddress(i) => write!(f, "segment {i}: address outside user space"),
            Overlap(a, b) => write!(f, "segments {a} and {b} overlap"),
            EntryOutsideSegments(e) => write!(f, "entry point {e:#x} outside loaded segments"),
            Io(e) => write!(f, "read error (errno {e})"),
        }
    }
}

/// One page-aligned mapping: `[start, end)` with `prot`. The first
/// `file_len` bytes come from the file at `file_offset`; the rest is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// PROT_READ | PROT_WRITE | PROT_EXEC bits.
    pub prot: u32,
    /// Page-aligned offset in the file of the byte that lands at `start`.
    pub file_offset: u64,
    pub file_len: u64,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    /// Bytes zeroed after the file bytes (the .bss and the page tails).
    pub fn zero_len(&self) -> u64 {
        self.len() - self.file_len
    }
    /// Fills `buf` with the mapping's content starting `offset` bytes into
    /// it (e.g. one page at a time): file bytes, then zeros.
    pub fn fill(
        &self,
        file: &(impl ReadAt + ?Sized),
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ElfError> {
        let n = buf.len() as u64;
        if offset.checked_add(n).is_none_or(|e| e > self.len()) {
            return Err(ElfError::Io(EIO));
        }
        let from_file = self.file_len.saturating_sub(offset).min(n) as usize;
        if from_file > 0 {
            file.read_exact_at(self.file_offset + offset, &mut buf[..from_file])
                .map_err(ElfError::Io)?;
        }
        buf[from_file..].fill(0);
        Ok(())
    }
}

/// PT_TLS, for information (a static binary sets up its own TLS from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsInfo {
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// Everything execve needs from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    pub elf_type: u16,
    /// Ascending, non-overlapping.
    pub mappings: Vec<Mapping>,
    /// Where execution starts (bias applied).
    pub entry: u64,
    /// Added to every p_vaddr: 0 for ET_EXEC.
    pub load_bias: u64,
    /// AT_PHDR: address of the program headers in memory, if they are mapped.
    pub phdr: Option<u64>,
    pub phnum: u16,
    pub phentsize: u16,
    /// Initial program break: the end of the highest segment, page aligned.
    pub brk: u64,
    /// PT_GNU_STACK asked for an executable stack (absent: not executable).
    pub stack_executable: bool,
    pub tls: Option<TlsInfo>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Base address for ET_DYN (rounded up to the largest PT_LOAD alignment).
    pub dyn_base: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dyn_base: DEFAULT_DYN_BASE,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Phdr {
    index: usize,
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

const fn page_down(a: u64) -> u64 {
    a & !(PAGE_SIZE - 1)
}
fn page_up(a: u64) -> Option<u64> {
    a.checked_add(PAGE_SIZE - 1).map(page_down)
}

fn prot_of(flags: u32) -> u32 {
    let mut p = 0;
    if flags & PF_R != 0 {
        p |= PROT_READ;
    }
    if flags & PF_W != 0 {
        p |= PROT_WRITE;
    }
    if flags & PF_X != 0 {
        p |= PROT_EXEC;
    }
    p
}

/// Validates an executable and computes its load plan.
pub fn parse(file: &(impl ReadAt + ?Sized), opts: &LoadOptions) -> Result<LoadPlan, ElfError> {
    let size = file.size();
    if size < EHDR_SIZE as u64 {
        return Err(ElfError::TooShort);
    }
    let mut eh = [0u8; EHDR_SIZE];
    file.read_exact_at(0, &mut eh).map_err(ElfError::Io)?;
    if &eh[0..4] != b"\x7fELF" {
        return Err(ElfError::BadMagic);
    }
    if eh[4] != 2 {
        return Err(ElfError::NotElf64(eh[4]));
    }
    if eh[5] != 1 {
        return Err(ElfError::NotLittleEndian(eh[5]));
    }
    if eh[6] != 1 {
        return Err(ElfError::BadVersion(eh[6]));
    }
    let e_type = u16_at(&eh, 16);
    let machine = u16_at(&eh, 18);
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(ElfError::NotExecutable(e_type));
    }
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let e_entry = u64_at(&eh, 24);
    let phoff = u64_at(&eh, 32);
    let phentsize = u16_at(&eh, 54);
    let phnum = u16_at(&eh, 56);
    if phentsize as usize != PHDR_SIZE {
        return Err(ElfError::BadPhentsize(phentsize));
    }
    let table_len = phnum as usize * PHDR_SIZE;
    if phnum == 0 || table_len > MAX_PHDR_BYTES {
        return Err(ElfError::BadPhnum(phnum));
    }
    if phoff
        .checked_add(table_len as u64)
        .is_none_or(|end| end > size)
    {
        return Err(ElfError::PhdrsOutsideFile);
    }
    let mut table = alloc::vec![0u8; table_len];
    file.read_exact_at(phoff, &mut table)
        .map_err(ElfError::Io)?;
    let phdrs: Vec<Phdr> = table
        .chunks_exact(PHDR_SIZE)
        .enumerate()
        .map(|(index, p)| Phdr {
            index,
            p_type: u32_at(p, 0),
            flags: u32_at(p, 4),
            offset: u64_at(p, 8),
            vaddr: u64_at(p, 16),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
            align: u64_at(p, 48),
        })
        .collect();

    if phdrs.iter().any(|p| p.p_type == PT_INTERP) {
        return Err(ElfError::DynamicallyLinked);
    }

    // Per-segment checks that do not depend on where the file is put.
    let mut loads: Vec<Phdr> = Vec::new();
    for p in phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
        let i = p.index;
        if p.filesz > p.memsz {
            return Err(ElfError::FileszExceedsMemsz(i));
        }
        if p.offset.checked_add(p.filesz).is_none_or(|end| end > size) {
            return Err(ElfError::SegmentOutsideFile(i));
        }
        if p.align > 1 && !p.align.is_power_of_two() {
            return Err(ElfError::Misaligned(i));
        }
        if (p.vaddr.wrapping_sub(p.offset)) % PAGE_SIZE != 0 {
            return Err(ElfError::Misaligned(i));
        }
        if p.vaddr.checked_add(p.memsz).is_none() {
            return Err(ElfError::BadAddress(i));
        }
        if p.memsz > 0 {
            loads.push(*p);
        }
    }
    if loads.is_empty() {
        return Err(ElfError::NoLoadSegments);
    }
    loads.sort_by_key(|p| p.vaddr);

    let load_bias = if e_type == ET_DYN {
        let max_align = loads.iter().map(|p| p.align).fold(PAGE_SIZE, u64::max);
        let base = opts
            .dyn_base
            .checked_add(max_align - 1)
            .map(|b| b & !(max_align - 1));
        base.ok_or(ElfError::BadAddress(loads[0].index))?
            .wrapping_sub(page_down(loads[0].vaddr))
    } else {
        0
    };

    let mut mappings = Vec::with_capacity(loads.len());
    let mut prev: Option<(usize, u64)> = None; // (index, end of previous mapping)
    for p in &loads {
        let bad = ElfError::BadAddress(p.index);
        let vstart = p.vaddr.checked_add(load_bias).ok_or(bad)?;
        let vend = vstart.checked_add(p.memsz).ok_or(bad)?;
        let start = page_down(vstart);
        let end = page_up(vend).ok_or(bad)?;
        if start < MMAP_MIN_ADDR || end > USER_END {
            return Err(bad);
        }
        if let Some((pi, pend)) = prev
            && start < pend
        {
            return Err(ElfError::Overlap(pi, p.index));
        }
        prev = Some((p.index, end));
        let head = vstart - start; // bytes of the first page before p_vaddr
        mappings.push(Mapping {
            start,
            end,
            prot: prot_of(p.flags),
            file_offset: p.offset - head,
            file_len: p.filesz + head,
        });
    }

    let entry = e_entry.wrapping_add(load_bias);
    let in_segment = |a: u64| {
        loads.iter().any(|p| {
            let s = p.vaddr.wrapping_add(load_bias);
            a >= s && a - s < p.memsz
        })
    };
    if !in_segment(entry) {
        return Err(ElfError::EntryOutsideSegments(e_entry));
    }

    // AT_PHDR: PT_PHDR if it lies in a file-backed part of a segment, else
    // the segment whose file bytes contain e_phoff (static binaries have no
    // PT_PHDR; the table sits in the first, read-only segment).
    let from_pt_phdr = phdrs.iter().find(|p| p.p_type == PT_PHDR).and_then(|p| {
        let a = p.vaddr.wrapping_add(load_bias);
        mappings
            .iter()
            .any(|m| a >= m.start && a.checked_add(table_len as u64).is_some_and(|e| e <= m.start + m.file_len))
            .then_some(a)
    });
    let phdr = from_pt_phdr.or_else(|| {
        loads
            .iter()
            .find(|p| phoff >= p.offset && phoff + table_len as u64 <= p.offset + p.filesz)
            .map(|p| p.vaddr.wrapping_add(load_bias) + (phoff - p.offset))
    });

    let highest = loads.iter().map(|p| p.vaddr + p.memsz).max().unwrap_or(0);
    let brk = page_up(highest.wrapping_add(load_bias)).ok_or(ElfError::BadAddress(0))?;
    let stack_executable = phdrs
        .iter()
        .any(|p| p.p_type == PT_GNU_STACK && p.flags & PF_X != 0);
    let tls = phdrs.iter().find(|p| p.p_type == PT_TLS).map(|p| TlsInfo {
        vaddr: p.vaddr.wrapping_add(load_bias),
        filesz: p.filesz,
        memsz: p.memsz,
        align: p.align,
    });

    Ok(LoadPlan {
        elf_type: e_type,
        mappings,
        entry,
        load_bias,
        phdr,
        phnum,
        phentsize,
        brk,
        stack_executable,
        tls,
    })
}

#[cfg(test)]
mod tests;
