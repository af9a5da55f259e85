//! What the boot loader tells the kernel, normalised.
//!
//! Multiboot2 (GRUB) and PVH (`hvm_start_info`, QEMU `-kernel`) carry the
//! same facts in different shapes: the physical memory map, the command
//! line, boot modules (the root archive) and where the ACPI RSDP is. Both
//! are parsed here into one [`BootInfo`], from physical memory read through
//! [`PhysRead`], so that the parsers run in host unit tests.

use arrayvec::{ArrayString, ArrayVec};

pub const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;
pub const PVH_MAGIC: u32 = 0x336e_c578;

pub const MAX_REGIONS: usize = 128;
pub const MAX_MODULES: usize = 16;
pub const MAX_CMDLINE: usize = 1024;

/// Reads physical memory (the kernel reads through its direct map).
pub trait PhysRead {
    fn read(&self, phys: u64, buf: &mut [u8]);

    fn u32(&self, phys: u64) -> u32 {
        let mut b = [0; 4];
        self.read(phys, &mut b);
        u32::from_le_bytes(b)
    }
    fn u64(&self, phys: u64) -> u64 {
        let mut b = [0; 8];
        self.read(phys, &mut b);
        u64::from_le_bytes(b)
    }
}

/// E820 / Multiboot2 memory types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Bad,
}

impl RegionKind {
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => Self::Usable,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Bad,
            _ => Self::Reserved,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: RegionKind,
}

impl MemoryRegion {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub len: u64,
    pub name: ArrayString<128>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Multiboot2,
    Pvh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rsdp {
    /// A copy of the RSDP structure (Multiboot2 tags 14/15).
    Copy { revision: u8, rsdt: u32, xsdt: u64 },
    /// The physical address of the RSDP (PVH).
    At(u64),
}

#[derive(Clone, Debug)]
pub struct BootInfo {
    pub protocol: Protocol,
    pub regions: ArrayVec<MemoryRegion, MAX_REGIONS>,
    pub modules: ArrayVec<Module, MAX_MODULES>,
    pub cmdline: ArrayString<MAX_CMDLINE>,
    pub rsdp: Option<Rsdp>,
    /// Physical range of the boot information itself, so the kernel does not
    /// hand it out as free memory before it is done reading it.
    pub info_range: (u64, u64),
}

#[derive(Debug, PartialEq, Eq)]
pub enum BootInfoError {
    UnknownMagic(u32),
    BadPvhMagic(u32),
    TooLarge(u32),
    NoMemoryMap,
}

impl BootInfo {
    fn empty(protocol: Protocol, info: u64) -> Self {
        Self {
            protocol,
            regions: ArrayVec::new(),
            modules: ArrayVec::new(),
            cmdline: ArrayString::new(),
            rsdp: None,
            info_range: (info, info),
        }
    }

    /// Parses what the loader left at `info` given the entry `magic`.
    pub fn parse(magic: u32, info: u64, mem: &impl PhysRead) -> Result<Self, BootInfoError> {
        let bi = match magic {
            MULTIBOOT2_MAGIC => Self::parse_multiboot2(info, mem)?,
            PVH_MAGIC => Self::parse_pvh(info, mem)?,
            m => return Err(BootInfoError::UnknownMagic(m)),
        };
        if bi.regions.is_empty() {
            return Err(BootInfoError::NoMemoryMap);
        }
        Ok(bi)
    }

    fn push_region(&mut self, start: u64, len: u64, kind: RegionKind) {
        if len > 0 {
            let _ = self.regions.try_push(MemoryRegion { start, len, kind });
        }
    }

    fn parse_multiboot2(info: u64, mem: &impl PhysRead) -> Result<Self, BootInfoError> {
        let total = mem.u32(info);
        if !(8..=(1 << 20)).contains(&total) {
            return Err(BootInfoError::TooLarge(total));
        }
        let mut bi = Self::empty(Protocol::Multiboot2, info);
        bi.info_range = (info, info + total as u64);
        let end = info + total as u64;
        let mut tag = info + 8;
        while tag + 8 <= end {
            let ty = mem.u32(tag);
            let size = mem.u32(tag + 4) as u64;
            if ty == 0 || size < 8 {
                break;
            }
            match ty {
                1 => read_cstr(mem, tag + 8, size - 8, &mut bi.cmdline),
                3 if size >= 16 => {
                    let start = mem.u32(tag + 8) as u64;
                    let stop = mem.u32(tag + 12) as u64;
                    let mut name = ArrayString::new();
                    read_cstr(mem, tag + 16, size - 16, &mut name);
                    let _ = bi.modules.try_push(Module {
                        start,
                        len: stop.saturating_sub(start),
                        name,
                    });
                }
                6 if size >= 16 => {
                    let entry_size = (mem.u32(tag + 8) as u64).max(24);
                    let mut e = tag + 16;
                    // A tag never reaches past the structure's total size.
                    while e + 24 <= (tag + size).min(end) {
                        let base = mem.u64(e);
                        let len = mem.u64(e + 8);
                        let kind = RegionKind::from_e820(mem.u32(e + 16));
                        bi.push_region(base, len, kind);
                        e += entry_size;
                    }
                }
                14 | 15 if size >= 8 + 20 => {
                    let mut r = [0u8; 36];
                    let n = ((size - 8) as usize).min(36);
                    mem.read(tag + 8, &mut r[..n]);
                    let new = Rsdp::Copy {
                        revision: r[15],
                        rsdt: u32::from_le_bytes(r[16..20].try_into().unwrap()),
                        xsdt: if n >= 32 { u64::from_le_bytes(r[24..32].try_into().unwrap()) } else { 0 },
                    };
                    // Prefer the ACPI 2.0+ copy (tag 15) when both are given.
                    if ty == 15 || bi.rsdp.is_none() {
                        bi.rsdp = Some(new);
                    }
                }
                _ => {}
            }
            tag += (size + 7) & !7;
        }
        Ok(bi)
    }

    fn parse_pvh(info: u64, mem: &impl PhysRead) -> Result<Self, BootInfoError> {
        let magic = mem.u32(info);
        if magic != PVH_MAGIC {
            return Err(BootInfoError::BadPvhMagic(magic));
        }
        let mut bi = Self::empty(Protocol::Pvh, info);
        bi.info_range = (info, info + 56);
        let version = mem.u32(info + 4);
        let nr_modules = mem.u32(info + 12);
        let modlist = mem.u64(info + 16);
        let cmdline = mem.u64(info + 24);
        let rsdp = mem.u64(info + 32);
        if cmdline != 0 {
            read_cstr(mem, cmdline, MAX_CMDLINE as u64, &mut bi.cmdline);
        }
        for i in 0..nr_modules.min(MAX_MODULES as u32) as u64 {
            // Loader-given addresses: wrap rather than overflow.
            let e = modlist.wrapping_add(i * 32);
            let mut name = ArrayString::new();
            let name_at = mem.u64(e.wrapping_add(16));
            if name_at != 0 {
                read_cstr(mem, name_at, 128, &mut name);
            }
            let _ = bi.modules.try_push(Module { start: mem.u64(e), len: mem.u64(e.wrapping_add(8)), name });
        }
        if rsdp != 0 {
            bi.rsdp = Some(Rsdp::At(rsdp));
        }
        if version >= 1 {
            let memmap = mem.u64(info + 40);
            let entries = mem.u32(info + 48) as u64;
            for i in 0..entries.min(MAX_REGIONS as u64) {
                let e = memmap.wrapping_add(i * 24);
                bi.push_region(mem.u64(e), mem.u64(e.wrapping_add(8)), RegionKind::from_e820(mem.u32(e.wrapping_add(16))));
            }
        }
        Ok(bi)
    }

    /// Bytes of usable RAM in the memory map.
    pub fn usable_bytes(&self) -> u64 {
        self.regions.iter().filter(|r| r.kind == RegionKind::Usable).fold(0u64, |sum, r| sum.saturating_add(r.len))
    }
}

/// Reads a NUL-terminated string of at most `max` bytes into `out`,
/// replacing bytes that are not printable ASCII.
fn read_cstr<const N: usize>(mem: &impl PhysRead, at: u64, max: u64, out: &mut ArrayString<N>) {
    let mut b = [0u8; 1];
    for i in 0..max.min(N as u64) {
        mem.read(at.wrapping_add(i), &mut b);
        let c = match b[0] {
            0 => break,
            c @ 0x20..=0x7e => c as char,
            _ => '?',
        };
        // `out` may already hold a string (a repeated tag): keep what fits.
        if out.try_push(c).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Physical memory as a sparse byte vector starting at 0.
    struct Mem(std::cell::RefCell<Vec<u8>>);
    impl Mem {
        fn new() -> Self {
            Mem(std::cell::RefCell::new(vec![0; 0x10000]))
        }
        fn put(&self, at: usize, bytes: &[u8]) {
            self.0.borrow_mut()[at..at + bytes.len()].copy_from_slice(bytes);
        }
    }
    impl PhysRead for Mem {
        fn read(&self, phys: u64, buf: &mut [u8]) {
            let m = self.0.borrow();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *m.get(phys as usize + i).unwrap_or(&0);
            }
        }
    }

    fn tag(ty: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&ty.to_le_bytes());
        v.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
        v.extend_from_slice(body);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn multiboot2_tags() {
        let mut body = Vec::new();
        body.extend(tag(1, b"loglevel=debug test=all\0"));
        let mut m = Vec::new();
        m.extend_from_slice(&0x20_0000u32.to_le_bytes());
        m.extend_from_slice(&0x20_1000u32.to_le_bytes());
        m.extend_from_slice(b"rootfs\0");
        body.extend(tag(3, &m));
        let mut mm = Vec::new();
        mm.extend_from_slice(&24u32.to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
        for (base, len, ty) in [(0u64, 0x9fc00u64, 1u32), (0x100000, 0x3ff0_0000, 1), (0xfffc0000, 0x40000, 2)] {
            mm.extend_from_slice(&base.to_le_bytes());
            mm.extend_from_slice(&len.to_le_bytes());
            mm.extend_from_slice(&ty.to_le_bytes());
            mm.extend_from_slice(&0u32.to_le_bytes());
        }
        body.extend(tag(6, &mm));
        let mut rsdp = [0u8; 36];
        rsdp[..8].copy_from_slice(b"RSD PTR ");
        rsdp[15] = 2;
        rsdp[16..20].copy_from_slice(&0x7fe0000u32.to_le_bytes());
        rsdp[24..32].copy_from_slice(&0x7fe1000u64.to_le_bytes());
        body.extend(tag(15, &rsdp));
        body.extend(tag(0, &[]));
        let mut info = Vec::new();
        info.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
        info.extend_from_slice(&0u32.to_le_bytes());
        info.extend(body);
        let mem = Mem::new();
        mem.put(0x1000, &info);

        let bi = BootInfo::parse(MULTIBOOT2_MAGIC, 0x1000, &mem).unwrap();
        assert_eq!(bi.protocol, Protocol::Multiboot2);
        assert_eq!(bi.cmdline.as_str(), "loglevel=debug test=all");
        assert_eq!(bi.modules.len(), 1);
        assert_eq!(bi.modules[0].start, 0x20_0000);
        assert_eq!(bi.modules[0].len, 0x1000);
        assert_eq!(bi.modules[0].name.as_str(), "rootfs");
        assert_eq!(bi.regions.len(), 3);
        assert_eq!(bi.regions[2].kind, RegionKind::Reserved);
        assert_eq!(bi.usable_bytes(), 0x9fc00 + 0x3ff0_0000);
        assert_eq!(bi.rsdp, Some(Rsdp::Copy { revision: 2, rsdt: 0x7fe0000, xsdt: 0x7fe1000 }));
        assert_eq!(bi.info_range, (0x1000, 0x1000 + info.len() as u64));
    }

    #[test]
    fn pvh_start_info() {
        let mem = Mem::new();
        // start info at 0x2000, cmdline 0x3000, modlist 0x3100, memmap 0x3200
        let mut si = Vec::new();
        si.extend_from_slice(&PVH_MAGIC.to_le_bytes());
        si.extend_from_slice(&1u32.to_le_bytes()); // version
        si.extend_from_slice(&0u32.to_le_bytes()); // flags
        si.extend_from_slice(&1u32.to_le_bytes()); // nr_modules
        si.extend_from_slice(&0x3100u64.to_le_bytes());
        si.extend_from_slice(&0x3000u64.to_le_bytes());
        si.extend_from_slice(&0xf5000u64.to_le_bytes()); // rsdp
        si.extend_from_slice(&0x3200u64.to_le_bytes());
        si.extend_from_slice(&2u32.to_le_bytes());
        mem.put(0x2000, &si);
        mem.put(0x3000, b"poweroff\0");
        let mut ml = Vec::new();
        ml.extend_from_slice(&0x40_0000u64.to_le_bytes());
        ml.extend_from_slice(&512u64.to_le_bytes());
        ml.extend_from_slice(&0u64.to_le_bytes());
        ml.extend_from_slice(&0u64.to_le_bytes());
        mem.put(0x3100, &ml);
        let mut mm = Vec::new();
        for (b, l, t) in [(0u64, 0xa0000u64, 1u32), (0x100000u64, 0x100_0000u64, 1u32)] {
            mm.extend_from_slice(&b.to_le_bytes());
            mm.extend_from_slice(&l.to_le_bytes());
            mm.extend_from_slice(&t.to_le_bytes());
            mm.extend_from_slice(&0u32.to_le_bytes());
        }
        mem.put(0x3200, &mm);
        let bi = BootInfo::parse(PVH_MAGIC, 0x2000, &mem).unwrap();
        assert_eq!(bi.protocol, Protocol::Pvh);
        assert_eq!(bi.cmdline.as_str(), "poweroff");
        assert_eq!(bi.modules[0].start, 0x40_0000);
        assert_eq!(bi.modules[0].len, 512);
        assert_eq!(bi.regions.len(), 2);
        assert_eq!(bi.rsdp, Some(Rsdp::At(0xf5000)));
    }

    #[test]
    fn rejects_unknown_magic_and_missing_map() {
        let mem = Mem::new();
        assert_eq!(BootInfo::parse(0x1234, 0, &mem).unwrap_err(), BootInfoError::UnknownMagic(0x1234));
        mem.put(0x1000, &16u32.to_le_bytes());
        mem.put(0x1008, &tag(0, &[]));
        assert_eq!(BootInfo::parse(MULTIBOOT2_MAGIC, 0x1000, &mem).unwrap_err(), BootInfoError::NoMemoryMap);
        assert_eq!(BootInfo::parse(PVH_MAGIC, 0x1000, &mem).unwrap_err(), BootInfoError::BadPvhMagic(16));
    }
}
