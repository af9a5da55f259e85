//! Just enough ELF (System V gABI) to load executables: the file header and
//! the PT_LOAD program headers of ELF32 and ELF64 little-endian images.

use super::{GuestMemory, LoadError};
use crate::vmm::firmware::GuestLayout;
use alloc::vec::Vec;

pub const EM_386: u16 = 3;
pub const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
pub const PF_X: u32 = 1;

/// One PT_LOAD program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage {
    pub class64: bool,
    pub machine: u16,
    /// e_entry as written (a virtual address).
    pub entry: u64,
    pub segments: Vec<LoadSegment>,
}

fn rd(b: &[u8], off: usize, n: usize) -> Result<u64, LoadError> {
    let s = b.get(off..off + n).ok_or(LoadError::Truncated)?;
    Ok(s.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
}

/// Whether `image` starts with the ELF magic.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(b"\x7fELF")
}

/// Parses the file header and the PT_LOAD program headers.
pub fn parse(image: &[u8]) -> Result<ElfImage, LoadError> {
    if !is_elf(image) {
        return Err(LoadError::BadElf("no ELF magic"));
    }
    let class64 = match image.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err(LoadError::BadElf("unknown ELF class")),
    };
    if image.get(5) != Some(&1) {
        return Err(LoadError::BadElf("not little-endian"));
    }
    if rd(image, 16, 2)? != 2 {
        return Err(LoadError::BadElf("not an executable (ET_EXEC)"));
    }
    let machine = rd(image, 18, 2)? as u16;
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(LoadError::BadElf("not an x86 executable"));
    }
    let (entry, phoff, phentsize, phnum) = if class64 {
        (rd(image, 24, 8)?, rd(image, 32, 8)?, rd(image, 54, 2)?, rd(image, 56, 2)?)
    } else {
        (rd(image, 24, 4)?, rd(image, 28, 4)?, rd(image, 42, 2)?, rd(image, 44, 2)?)
    };
    let min = if class64 { 56 } else { 32 };
    if phnum > 0 && phentsize < min {
        return Err(LoadError::BadElf("program header entries too small"));
    }
    let mut segments = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i * phentsize).ok_or(LoadError::Truncated)? as usize;
        let s = if class64 {
            (
                rd(image, ph, 4)? as u32,
                LoadSegment {
                    flags: rd(image, ph + 4, 4)? as u32,
                    offset: rd(image, ph + 8, 8)?,
                    vaddr: rd(image, ph + 16, 8)?,
                    paddr: rd(image, ph + 24, 8)?,
                    filesz: rd(image, ph + 32, 8)?,
                    memsz: rd(image, ph + 40, 8)?,
                },
            )
        } else {
            (
                rd(image, ph, 4)? as u32,
                LoadSegment {
                    offset: rd(image, ph + 4, 4)?,
                    vaddr: rd(image, ph + 8, 4)?,
                    paddr: rd(image, ph + 12, 4)?,
                    filesz: rd(image, ph + 16, 4)?,
                    memsz: rd(image, ph + 20, 4)?,
                    flags: rd(image, ph + 24, 4)? as u32,
                },
            )
        };
        if s.0 != PT_LOAD || s.1.memsz == 0 {
            continue;
        }
        let seg = s.1;
        if seg.filesz > seg.memsz {
            return Err(LoadError::BadElf("p_filesz > p_memsz"));
        }
        if seg.offset.checked_add(seg.filesz).is_none_or(|end| end > image.len() as u64) {
            return Err(LoadError::Truncated);
        }
        segments.push(seg);
    }
    if segments.is_empty() {
        return Err(LoadError::BadElf("no PT_LOAD segments"));
    }
    Ok(ElfImage { class64, machine, entry, segments })
}

impl ElfImage {
    /// The entry point as a physical address. e_entry is virtual; when an
    /// executable segment's p_vaddr ≠ p_paddr and contains it, it is moved
    /// by the same offset (QEMU's ELF loader does this, so kernels linked
    /// high with low load addresses boot the same way).
    pub fn physical_entry(&self) -> u64 {
        for s in &self.segments {
            if s.flags & PF_X != 0 && s.vaddr != s.paddr && self.entry >= s.vaddr && self.entry - s.vaddr < s.filesz {
                return self.entry - s.vaddr + s.paddr;
            }
        }
        self.entry
    }

    /// Lowest and highest (exclusive) physical address of the segments.
    pub fn physical_range(&self) -> (u64, u64) {
        let lo = self.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let hi = self.segments.iter().map(|s| s.paddr.saturating_add(s.memsz)).max().unwrap_or(0);
        (lo, hi)
    }

    /// Checks every segment lies in guest RAM, then copies p_filesz bytes to
    /// p_paddr and zeroes the rest up to p_memsz.
    pub fn load(&self, image: &[u8], mem: &mut dyn GuestMemory, layout: &GuestLayout) -> Result<(), LoadError> {
        for s in &self.segments {
            if !layout.is_ram(s.paddr, s.memsz) {
                return Err(LoadError::OutsideRam { addr: s.paddr, len: s.memsz });
            }
        }
        for s in &self.segments {
            let data = &image[s.offset as usize..(s.offset + s.filesz) as usize];
            mem.write(s.paddr, data)?;
            mem.zero(s.paddr + s.filesz, s.memsz - s.filesz)?;
        }
        Ok(())
    }
}

/// Builds ELF files for tests.
#[cfg(test)]
pub(crate) mod build {
    use std::vec::Vec;

    /// (vaddr, paddr, data, memsz, flags)
    pub type Seg<'a> = (u64, u64, &'a [u8], u64, u32);

    /// An ELF32 (`class64` false) or ELF64 ET_EXEC with the given segments;
    /// segment data follows the headers, and `extra` is placed right after
    /// the program headers (for a Multiboot header in the first 8 KiB).
    pub fn elf(class64: bool, entry: u64, segs: &[Seg], extra: &[u8]) -> Vec<u8> {
        let (ehsize, phentsize) = if class64 { (64usize, 56usize) } else { (52, 32) };
        let phoff = ehsize;
        let mut data_off = phoff + phentsize * segs.len() + extra.len();
        let mut f = std::vec![0u8; data_off];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = if class64 { 2 } else { 1 };
        f[5] = 1;
        f[6] = 1;
        let put = |f: &mut Vec<u8>, at: usize, v: u64, n: usize| f[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
        put(&mut f, 16, 2, 2);
        put(&mut f, 18, if class64 { 62 } else { 3 }, 2);
        put(&mut f, 20, 1, 4);
        if class64 {
            put(&mut f, 24, entry, 8);
            put(&mut f, 32, phoff as u64, 8);
            put(&mut f, 52, ehsize as u64, 2);
            put(&mut f, 54, phentsize as u64, 2);
            put(&mut f, 56, segs.len() as u64, 2);
        } else {
            put(&mut f, 24, entry, 4);
            put(&mut f, 28, phoff as u64, 4);
            put(&mut f, 40, ehsize as u64, 2);
            put(&mut f, 42, phentsize as u64, 2);
            put(&mut f, 44, segs.len() as u64, 2);
        }
        let extra_at = phoff + phentsize * segs.len();
        f[extra_at..extra_at + extra.len()].copy_from_slice(extra);
        for (i, &(vaddr, paddr, data, memsz, flags)) in segs.iter().enumerate() {
            let ph = phoff + i * phentsize;
            if class64 {
                put(&mut f, ph, 1, 4);
                put(&mut f, ph + 4, flags as u64, 4);
                put(&mut f, ph + 8, data_off as u64, 8);
                put(&mut f, ph + 16, vaddr, 8);
                put(&mut f, ph + 24, paddr, 8);
                put(&mut f, ph + 32, data.len() as u64, 8);
                put(&mut f, ph + 40, memsz, 8);
            } else {
                put(&mut f, ph, 1, 4);
                put(&mut f, ph + 4, data_off as u64, 4);
                put(&mut f, ph + 8, vaddr, 4);
                put(&mut f, ph + 12, paddr, 4);
                put(&mut f, ph + 16, data.len() as u64, 4);
                put(&mut f, ph + 20, memsz, 4);
                put(&mut f, ph + 24, flags as u64, 4);
            }
            f.extend_from_slice(data);
            data_off += data.len();
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::build::elf;
    use super::*;
    use crate::vmm::loader::testmem::VecMemory;

    #[test]
    fn parse_and_load_elf32_and_elf64() {
        for class64 in [false, true] {
            let f = elf(class64, 0x10_0000, &[(0x10_0000, 0x10_0000, b"code", 0x10, PF_X), (0x20_0000, 0x20_0000, b"dd", 0x1000, 6)], &[]);
            let e = parse(&f).unwrap();
            assert_eq!((e.class64, e.entry, e.segments.len()), (class64, 0x10_0000, 2));
            assert_eq!(e.physical_range(), (0x10_0000, 0x20_1000));
            let mut m = VecMemory::new(8 << 20);
            m.bytes[0x10_0004] = 0xAA; // must be zeroed as BSS
            e.load(&f, &mut m, &GuestLayout::new(8 << 20)).unwrap();
            assert_eq!(m.slice(0x10_0000, 6), b"code\0\0");
            assert_eq!(m.slice(0x20_0000, 3), b"dd\0");
        }
    }

    #[test]
    fn entry_translation_follows_the_executable_segment() {
        let f = elf(true, 0xFFFF_FFFF_8100_0010, &[(0xFFFF_FFFF_8100_0000, 0x100_0000, &[0x90; 32], 32, PF_X)], &[]);
        let e = parse(&f).unwrap();
        assert_eq!(e.physical_entry(), 0x100_0010);
        // Not inside the executable segment: left alone.
        let f = elf(false, 0x5000, &[(0xC010_0000, 0x10_0000, &[0x90; 32], 32, PF_X)], &[]);
        assert_eq!(parse(&f).unwrap().physical_entry(), 0x5000);
    }

    #[test]
    fn malformed_elves() {
        let good = elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, b"code", 4, PF_X)], &[]);
        assert_eq!(parse(b"MZ\0\0"), Err(LoadError::BadElf("no ELF magic")));
        let mut f = good.clone();
        f[4] = 3;
        assert!(matches!(parse(&f), Err(LoadError::BadElf(_))));
        let mut f = good.clone();
        f[18] = 40; // EM_ARM
        assert_eq!(parse(&f), Err(LoadError::BadElf("not an x86 executable")));
        let mut f = good.clone();
        f[16] = 3; // ET_DYN
        assert!(matches!(parse(&f), Err(LoadError::BadElf(_))));
        // Segment data past the end of the file.
        assert_eq!(parse(&good[..good.len() - 1]), Err(LoadError::Truncated));
        // Header cut short.
        assert_eq!(parse(&good[..30]), Err(LoadError::Truncated));
        // filesz > memsz
        let f = elf(false, 0, &[(0x10_0000, 0x10_0000, b"code", 2, PF_X)], &[]);
        assert_eq!(parse(&f), Err(LoadError::BadElf("p_filesz > p_memsz")));
        // Segments outside RAM or in the BIOS hole.
        let mut m = VecMemory::new(4 << 20);
        let l = GuestLayout::new(4 << 20);
        for addr in [0xF_0000u64, 0x3F_FFFE, 0xFEE0_0000] {
            let f = elf(false, addr, &[(addr, addr, b"code", 4, PF_X)], &[]);
            assert_eq!(parse(&f).unwrap().load(&f, &mut m, &l), Err(LoadError::OutsideRam { addr, len: 4 }));
        }
    }
}
