//! Multiboot (v0.6.96) kernels.
//!
//! The header is searched in the first 8192 bytes at 4-byte alignment.
//! With flag bit 16 the a.out-kludge address fields say where to load (even
//! for an ELF file, as QEMU does); otherwise the image must be ELF32 or
//! ELF64 and its PT_LOAD segments go to p_paddr (an ELF64 entry point is
//! truncated to 32 bits, as QEMU does).
//!
//! Memory placement: modules follow the kernel's last byte (BSS included),
//! each page-aligned; then, page-aligned, the boot information area: the
//! Multiboot information structure, the memory map, the module list and the
//! strings (command line "<kernel path> <args>" as QEMU passes it, module
//! strings, boot loader name "Mantle"). Nothing is put in low memory, so
//! page 0 and conventional memory stay free for the guest.
//!
//! Flags: bit 0 (page-align modules) is always honoured, bit 1 (memory
//! information) always provided, bit 2 (video mode) is accepted but ignored:
//! no framebuffer information is passed (info flags 11 and 12 stay clear),
//! the guest finds the text console as it would on a BIOS. Any other bit in
//! 0–15 is refused, as the specification requires.

use super::elf;
use super::{GuestMemory, LoadError, VcpuState, overlaps};
use crate::vmm::decode::gpr;
use crate::vmm::firmware::GuestLayout;
use alloc::vec::Vec;

pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
pub const SEARCH_LIMIT: usize = 8192;

pub const FLAG_PAGE_ALIGN: u32 = 1 << 0;
pub const FLAG_MEMORY_INFO: u32 = 1 << 1;
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
pub const FLAG_ADDRESS: u32 = 1 << 16;
const SUPPORTED_REQUIRED: u32 = FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO | FLAG_VIDEO_MODE;

/// Multiboot information flags we set.
pub const INFO_MEMORY: u32 = 1 << 0;
pub const INFO_CMDLINE: u32 = 1 << 2;
pub const INFO_MODS: u32 = 1 << 3;
pub const INFO_MEM_MAP: u32 = 1 << 6;
pub const INFO_BOOT_LOADER_NAME: u32 = 1 << 9;

pub const BOOT_LOADER_NAME: &str = "Mantle";
/// Size of the information structure up to and including the framebuffer
/// fields (spec §3.3).
pub const INFO_SIZE: u64 = 116;

/// Selectors reported in the segment state (the GDT itself is not valid,
/// as the specification allows; the kernel loads its own).
pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;

/// The Multiboot header as found in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    pub flags: u32,
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

/// Finds and checks the header.
pub fn find_header(image: &[u8]) -> Result<Header, LoadError> {
    let limit = image.len().min(SEARCH_LIMIT);
    let mut off = 0;
    while off + 12 <= limit {
        if u32_at(image, off) == Some(HEADER_MAGIC) {
            let flags = u32_at(image, off + 4).unwrap_or(0);
            let sum = u32_at(image, off + 8).unwrap_or(0);
            if HEADER_MAGIC.wrapping_add(flags).wrapping_add(sum) != 0 {
                return Err(LoadError::BadChecksum);
            }
            let mut h = Header { offset: off, flags, header_addr: 0, load_addr: 0, load_end_addr: 0, bss_end_addr: 0, entry_addr: 0 };
            if flags & FLAG_ADDRESS != 0 {
                let f = |k: usize| u32_at(image, off + 12 + 4 * k).ok_or(LoadError::Truncated);
                h.header_addr = f(0)?;
                h.load_addr = f(1)?;
                h.load_end_addr = f(2)?;
                h.bss_end_addr = f(3)?;
                h.entry_addr = f(4)?;
            }
            return Ok(h);
        }
        off += 4;
    }
    Err(LoadError::NoMultibootHeader)
}

/// A boot module and its string.
#[derive(Clone, Copy, Debug)]
pub struct Module<'a> {
    pub image: &'a [u8],
    pub string: &'a str,
}

/// Where things went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub header: Header,
    pub entry: u32,
    /// Kernel physical range [start, end) including BSS.
    pub kernel: (u64, u64),
    /// Module ranges [start, end).
    pub modules: Vec<(u64, u64)>,
    /// The information structure (EBX).
    pub info_addr: u64,
    /// End of the boot information area.
    pub info_end: u64,
}

fn page_up(v: u64) -> u64 {
    (v + 0xFFF) & !0xFFF
}

/// Loads a Multiboot kernel and its modules and writes the boot
/// information. Returns the vCPU state (32-bit protected mode, flat
/// segments, paging off, EAX = 0x2BADB002, EBX = information structure).
pub fn load(
    mem: &mut dyn GuestMemory,
    kernel: &[u8],
    kernel_path: &str,
    args: &str,
    modules: &[Module],
) -> Result<(VcpuState, Loaded), LoadError> {
    let layout = GuestLayout::new(mem.ram_size());
    let h = find_header(kernel)?;
    let required = h.flags & 0xFFFF;
    if required & !SUPPORTED_REQUIRED != 0 {
        return Err(LoadError::UnsupportedFlags(required & !SUPPORTED_REQUIRED));
    }

    // Kernel image.
    let (entry, kstart, kend) = if h.flags & FLAG_ADDRESS != 0 {
        load_aout_kludge(mem, &layout, kernel, &h)?
    } else {
        let e = elf::parse(kernel)?;
        let (lo, hi) = e.physical_range();
        if hi > 1 << 32 {
            return Err(LoadError::OutsideRam { addr: lo, len: hi - lo });
        }
        e.load(kernel, mem, &layout)?;
        (e.physical_entry() as u32, lo, hi)
    };

    // Modules, page-aligned after the kernel.
    let mut at = page_up(kend);
    let mut mods = Vec::new();
    for m in modules {
        let len = m.image.len() as u64;
        if !layout.is_ram(at, len.max(1)) {
            return Err(LoadError::OutsideRam { addr: at, len });
        }
        mem.write(at, m.image)?;
        mods.push((at, at + len));
        at = page_up(at + len.max(1));
    }

    // Boot information area.
    let info_addr = at;
    let e820 = layout.e820();
    let mmap_addr = info_addr + INFO_SIZE.next_multiple_of(8);
    let mmap_len = 24 * e820.len() as u64;
    let mods_addr = mmap_addr + mmap_len;
    let strings_at = mods_addr + 16 * mods.len() as u64;
    let mut strings: Vec<u8> = Vec::new();
    let mut add_string = |s: &[&str]| -> u64 {
        let addr = strings_at + strings.len() as u64;
        for part in s {
            strings.extend_from_slice(part.as_bytes());
        }
        strings.push(0);
        addr
    };
    let cmdline_addr = add_string(&[kernel_path, " ", args]);
    let mod_strings: Vec<u64> = modules.iter().map(|m| add_string(&[m.string])).collect();
    let name_addr = add_string(&[BOOT_LOADER_NAME]);
    let info_end = strings_at + strings.len() as u64;
    if info_end > 1 << 32 || !layout.is_ram(info_addr, info_end - info_addr) {
        return Err(LoadError::OutsideRam { addr: info_addr, len: info_end - info_addr });
    }
    if overlaps(kstart, kend - kstart, info_addr, info_end - info_addr) {
        return Err(LoadError::Overlap { addr: info_addr, len: info_end - info_addr });
    }

    let mut info = [0u8; INFO_SIZE as usize];
    let mut put = |o: usize, v: u32| info[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let mut flags = INFO_MEMORY | INFO_CMDLINE | INFO_MEM_MAP | INFO_BOOT_LOADER_NAME;
    if !mods.is_empty() {
        flags |= INFO_MODS;
    }
    put(0, flags);
    put(4, layout.mem_lower_kib());
    put(8, layout.mem_upper_kib());
    put(16, cmdline_addr as u32);
    put(20, mods.len() as u32);
    put(24, if mods.is_empty() { 0 } else { mods_addr as u32 });
    put(44, mmap_len as u32);
    put(48, mmap_addr as u32);
    put(64, name_addr as u32);
    mem.write(info_addr, &info)?;

    // Memory map entries: size (20, not counting itself), base, length, type.
    let mut mmap = Vec::with_capacity(mmap_len as usize);
    for e in &e820 {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&e.addr.to_le_bytes());
        mmap.extend_from_slice(&e.size.to_le_bytes());
        mmap.extend_from_slice(&(e.kind as u32).to_le_bytes());
    }
    mem.write(mmap_addr, &mmap)?;
    // Module list: mod_start, mod_end, string, reserved.
    let mut list = Vec::new();
    for (&(s, e), &str_addr) in mods.iter().zip(&mod_strings) {
        for v in [s as u32, e as u32, str_addr as u32, 0] {
            list.extend_from_slice(&v.to_le_bytes());
        }
    }
    mem.write(mods_addr, &list)?;
    mem.write(strings_at, &strings)?;

    let mut st = VcpuState::protected32(entry, CODE_SELECTOR, DATA_SELECTOR);
    st.regs.gpr[gpr::RAX as usize] = BOOTLOADER_MAGIC as u64;
    st.regs.gpr[gpr::RBX as usize] = info_addr;
    Ok((st, Loaded { header: h, entry, kernel: (kstart, kend), modules: mods, info_addr, info_end }))
}

/// Loads with the header's address fields (spec §3.1.3): the file from
/// `header_offset - (header_addr - load_addr)` goes to load_addr, up to
/// load_end_addr (0: end of file), then BSS is zeroed up to bss_end_addr.
fn load_aout_kludge(mem: &mut dyn GuestMemory, layout: &GuestLayout, image: &[u8], h: &Header) -> Result<(u32, u64, u64), LoadError> {
    if h.header_addr < h.load_addr {
        return Err(LoadError::BadAddressFields("header_addr below load_addr"));
    }
    let back = (h.header_addr - h.load_addr) as usize;
    if back > h.offset {
        return Err(LoadError::BadAddressFields("load_addr before the start of the file"));
    }
    let file_off = h.offset - back;
    let load_len = if h.load_end_addr == 0 {
        (image.len() - file_off) as u64
    } else {
        if h.load_end_addr <= h.load_addr {
            return Err(LoadError::BadAddressFields("load_end_addr not above load_addr"));
        }
        (h.load_end_addr - h.load_addr) as u64
    };
    if file_off as u64 + load_len > image.len() as u64 {
        return Err(LoadError::Truncated);
    }
    let start = h.load_addr as u64;
    let data_end = start + load_len;
    let end = if h.bss_end_addr == 0 {
        data_end
    } else {
        if (h.bss_end_addr as u64) < data_end {
            return Err(LoadError::BadAddressFields("bss_end_addr below load_end_addr"));
        }
        h.bss_end_addr as u64
    };
    if !layout.is_ram(start, end - start) {
        return Err(LoadError::OutsideRam { addr: start, len: end - start });
    }
    if (h.entry_addr as u64) < start || h.entry_addr as u64 >= data_end {
        return Err(LoadError::BadAddressFields("entry_addr outside the loaded image"));
    }
    mem.write(start, &image[file_off..file_off + load_len as usize])?;
    mem.zero(data_end, end - data_end)?;
    Ok((h.entry_addr, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::firmware::{E820Type, ONE_MIB};
    use crate::vmm::loader::elf::build::elf;
    use crate::vmm::loader::testmem::VecMemory;
    use crate::vmm::loader::{EntryMode, attr};

    fn header(flags: u32, addr: Option<[u32; 5]>) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in addr.unwrap_or([0; 5]) {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    fn cstr(m: &VecMemory, at: u64) -> String {
        let mut s = Vec::new();
        let mut a = at;
        loop {
            let b = m.slice(a, 1)[0];
            if b == 0 {
                break;
            }
            s.push(b);
            a += 1;
        }
        String::from_utf8(s).unwrap()
    }
    use std::string::String;

    #[test]
    fn elf32_kernel_with_modules() {
        let hdr = header(FLAG_PAGE_ALIGN | FLAG_MEMORY_INFO, None);
        let text = [0xF4u8; 0x40];
        let k = elf(false, 0x10_0010, &[(0x10_0000, 0x10_0000, &text, 0x40, elf::PF_X), (0x10_1000, 0x10_1000, b"data", 0x2345, 6)], &hdr);
        let mut m = VecMemory::new(32 << 20);
        let mods = [Module { image: b"initrd-bytes", string: "/boot/initrd root=1" }, Module { image: &[7u8; 0x1800], string: "two" }];
        let (st, l) = load(&mut m, &k, "/boot/kernel.elf", "console=ttyS0 quiet", &mods).unwrap();
        // CPU state.
        assert_eq!(st.mode, EntryMode::Protected32);
        assert_eq!(st.regs.rip, 0x10_0010);
        assert_eq!(st.regs.gpr[0], 0x2BAD_B002);
        assert_eq!(st.regs.gpr[3], l.info_addr);
        assert_eq!(st.regs.rflags, 2);
        assert_eq!(st.cr0 & 0x8000_0001, 1, "PE set, PG clear");
        assert_eq!((st.cs.base, st.cs.limit), (0, 0xFFFF_FFFF));
        assert_ne!(st.cs.attr & attr::DB, 0);
        assert_eq!((st.ds.base, st.ds.limit, st.ss.limit), (0, 0xFFFF_FFFF, 0xFFFF_FFFF));
        // Kernel and layout.
        assert_eq!(l.kernel, (0x10_0000, 0x10_3345));
        assert_eq!(m.slice(0x10_1000, 5), b"data\0");
        assert_eq!(l.modules, [(0x10_4000, 0x10_400C), (0x10_5000, 0x10_6800)]);
        assert_eq!(l.info_addr, 0x10_7000);
        assert_eq!(m.slice(0x10_4000, 12), b"initrd-bytes");
        // Information structure.
        let i = l.info_addr;
        let flags = m.u32(i);
        assert_eq!(flags, INFO_MEMORY | INFO_CMDLINE | INFO_MODS | INFO_MEM_MAP | INFO_BOOT_LOADER_NAME);
        assert_eq!((m.u32(i + 4), m.u32(i + 8)), (640, 31 * 1024));
        assert_eq!(cstr(&m, m.u32(i + 16) as u64), "/boot/kernel.elf console=ttyS0 quiet");
        assert_eq!(cstr(&m, m.u32(i + 64) as u64), "Mantle");
        assert_eq!(m.u32(i + 20), 2);
        let ma = m.u32(i + 24) as u64;
        assert_eq!((m.u32(ma), m.u32(ma + 4)), (0x10_4000, 0x10_400C));
        assert_eq!(cstr(&m, m.u32(ma + 8) as u64), "/boot/initrd root=1");
        assert_eq!((m.u32(ma + 16), m.u32(ma + 20)), (0x10_5000, 0x10_6800));
        assert_eq!(cstr(&m, m.u32(ma + 24) as u64), "two");
        // Memory map = the layout's e820.
        let (len, addr) = (m.u32(i + 44) as u64, m.u32(i + 48) as u64);
        let e820 = GuestLayout::new(32 << 20).e820();
        assert_eq!(len, 24 * e820.len() as u64);
        let mut at = addr;
        for e in &e820 {
            assert_eq!(m.u32(at), 20);
            assert_eq!((m.u64(at + 4), m.u64(at + 12), m.u32(at + 20)), (e.addr, e.size, e.kind as u32));
            at += 4 + m.u32(at) as u64;
        }
        assert_eq!(at, addr + len);
        assert!(e820.iter().any(|e| e.kind == E820Type::Reserved && e.addr == 0xA0000));
        // Everything below the kernel untouched: page 0 is free RAM.
        assert!(m.slice(0, ONE_MIB as usize).iter().all(|&b| b == 0));
        assert!(l.info_end <= 0x10_8000);
    }

    #[test]
    fn empty_args_and_no_modules() {
        let hdr = header(0, None);
        let k = elf(false, 0x20_0000, &[(0x20_0000, 0x20_0000, &[0x90; 16], 16, elf::PF_X)], &hdr);
        let mut m = VecMemory::new(16 << 20);
        let (_, l) = load(&mut m, &k, "kernel", "", &[]).unwrap();
        let i = l.info_addr;
        assert_eq!(l.info_addr, 0x20_1000);
        assert_eq!(m.u32(i) & INFO_MODS, 0);
        assert_eq!((m.u32(i + 20), m.u32(i + 24)), (0, 0));
        // QEMU's "%s %s": a trailing space when there are no arguments.
        assert_eq!(cstr(&m, m.u32(i + 16) as u64), "kernel ");
    }

    #[test]
    fn elf64_kernel_entry_truncated_to_32_bits() {
        let hdr = header(FLAG_MEMORY_INFO, None);
        // Linked high, loaded at 16 MiB; e_entry is a 64-bit virtual address.
        let k = elf(true, 0xFFFF_FFFF_8100_0020, &[(0xFFFF_FFFF_8100_0000, 0x100_0000, &[0xF4; 64], 64, elf::PF_X)], &hdr);
        let mut m = VecMemory::new(64 << 20);
        let (st, l) = load(&mut m, &k, "k64", "", &[]).unwrap();
        assert_eq!((l.entry, st.regs.rip), (0x100_0020, 0x100_0020));
        // Without vaddr != paddr translation the entry is simply truncated.
        let k = elf(true, 0x1_0020_0000, &[(0x20_0000, 0x20_0000, &[0xF4; 64], 64, elf::PF_X)], &hdr);
        let (st, _) = load(&mut m, &k, "k64", "", &[]).unwrap();
        assert_eq!(st.regs.rip, 0x20_0000);
    }

    #[test]
    fn aout_kludge() {
        // A flat image: 0x20 bytes of padding, the header, code; loaded at
        // 1 MiB with 0x3000 bytes of BSS after the 0x100-byte image.
        let mut img = std::vec![0xCCu8; 0x20];
        img.extend(header(FLAG_ADDRESS | FLAG_PAGE_ALIGN, Some([0x10_0020, 0x10_0000, 0x10_0100, 0x10_3100, 0x10_0040])));
        img.resize(0x180, 0xF4); // bytes past load_end_addr are not loaded
        let mut m = VecMemory::new(16 << 20);
        m.bytes[0x10_2000] = 0x55; // must be cleared as BSS
        m.bytes[0x10_0100] = 0x66;
        let (st, l) = load(&mut m, &img, "aout", "x", &[]).unwrap();
        assert_eq!(st.regs.rip, 0x10_0040);
        assert_eq!(l.kernel, (0x10_0000, 0x10_3100));
        assert_eq!(m.slice(0x10_0000, 4), &[0xCC; 4]);
        assert_eq!(m.u32(0x10_0020), HEADER_MAGIC);
        assert_eq!(m.slice(0x10_00FF, 2), &[0xF4, 0]);
        assert_eq!(m.bytes[0x10_2000], 0);
        assert_eq!(l.info_addr, 0x10_4000);
        // load_end_addr 0: the rest of the file.
        let mut img2 = header(FLAG_ADDRESS, Some([0x20_0000, 0x20_0000, 0, 0, 0x20_0000]));
        img2.extend_from_slice(&[0xAB; 100]);
        let (_, l) = load(&mut m, &img2, "aout", "", &[]).unwrap();
        assert_eq!(l.kernel, (0x20_0000, 0x20_0000 + img2.len() as u64));
        // Address fields win over ELF when bit 16 is set.
        let hdr = header(FLAG_ADDRESS, Some([0x30_0000 + 0x54, 0x30_0000, 0, 0, 0x30_0000 + 0x54]));
        let k = elf(false, 0x5_0000, &[(0x5_0000, 0x5_0000, &[1; 8], 8, elf::PF_X)], &hdr);
        let (st, l) = load(&mut m, &k, "k", "", &[]).unwrap();
        assert_eq!(st.regs.rip, 0x30_0054);
        assert_eq!(l.kernel.0, 0x30_0000);
        assert_eq!(m.slice(0x30_0000, 4), b"\x7fELF");
    }

    #[test]
    fn video_flag_is_accepted_and_ignored() {
        let mut hdr = header(FLAG_VIDEO_MODE, None);
        hdr.extend_from_slice(&[0; 16]); // mode_type, width, height, depth
        let k = elf(false, 0x10_0000, &[(0x10_0000, 0x10_0000, &[0x90; 4], 4, elf::PF_X)], &hdr);
        let mut m = VecMemory::new(8 << 20);
        let (_, l) = load(&mut m, &k, "k", "", &[]).unwrap();
        assert_eq!(m.u32(l.info_addr) & (3 << 11), 0, "no framebuffer information");
    }

    #[test]
    fn rejections() {
        let mut m = VecMemory::new(8 << 20);
        let seg = |a: u64| std::vec![(a, a, &[0x90u8; 8][..], 8u64, elf::PF_X)];
        // No header at all, or only beyond 8 KiB.
        let k = elf(false, 0x10_0000, &seg(0x10_0000), &[]);
        assert_eq!(load(&mut m, &k, "k", "", &[]), Err(LoadError::NoMultibootHeader));
        let mut far = std::vec![0u8; 8192];
        far.extend(header(0, None));
        assert_eq!(find_header(&far), Err(LoadError::NoMultibootHeader));
        // At the last aligned slot it is found.
        let mut near = std::vec![0u8; 8192 - 12];
        near.extend(header(0, None));
        assert_eq!(find_header(&near).unwrap().offset, 8180);
        // Bad checksum.
        let mut h = header(0, None);
        h[8] ^= 1;
        assert_eq!(find_header(&h), Err(LoadError::BadChecksum));
        // Unsupported required flag (bit 3 is undefined, bit 15 too).
        for bit in [3, 15] {
            let k = elf(false, 0x10_0000, &seg(0x10_0000), &header(1 << bit, None));
            assert_eq!(load(&mut m, &k, "k", "", &[]), Err(LoadError::UnsupportedFlags(1 << bit)));
        }
        // Optional bits 17..31 are fine.
        let k = elf(false, 0x10_0000, &seg(0x10_0000), &header(1 << 20, None));
        assert!(load(&mut m, &k, "k", "", &[]).is_ok());
        // Segments in the BIOS hole, above RAM, across the end of RAM.
        for a in [0xE_0000u64, 0x80_0000, 0x7F_FFFC] {
            let k = elf(false, a, &seg(a), &header(0, None));
            assert_eq!(load(&mut m, &k, "k", "", &[]), Err(LoadError::OutsideRam { addr: a, len: 8 }));
        }
        // The boot information would not fit after the kernel.
        let k = elf(false, 0x7F_F000, &[(0x7F_F000, 0x7F_F000, &[0x90; 8], 0x1000, elf::PF_X)], &header(0, None));
        assert!(matches!(load(&mut m, &k, "k", "", &[]), Err(LoadError::OutsideRam { addr: 0x80_0000, .. })));
        // Not ELF and no address fields.
        let mut raw = header(0, None);
        raw.extend_from_slice(&[0; 64]);
        assert_eq!(load(&mut m, &raw, "k", "", &[]), Err(LoadError::BadElf("no ELF magic")));
        // Inconsistent address fields.
        let bad = |a: [u32; 5]| {
            let mut img = header(FLAG_ADDRESS, Some(a));
            img.extend_from_slice(&[0; 64]);
            img
        };
        let mut m2 = VecMemory::new(8 << 20);
        let mut l = |img: Vec<u8>| load(&mut m2, &img, "k", "", &[]);
        assert!(matches!(l(bad([0x10_0000, 0x10_0010, 0, 0, 0x10_0010])), Err(LoadError::BadAddressFields(_))));
        assert!(matches!(l(bad([0x10_0010, 0x10_0000, 0, 0, 0x10_0000])), Err(LoadError::BadAddressFields(_))));
        assert!(matches!(l(bad([0x10_0000, 0x10_0000, 0x10_0000, 0, 0x10_0000])), Err(LoadError::BadAddressFields(_))));
        assert!(matches!(l(bad([0x10_0000, 0x10_0000, 0x10_0020, 0x10_0010, 0x10_0000])), Err(LoadError::BadAddressFields(_))));
        assert!(matches!(l(bad([0x10_0000, 0x10_0000, 0, 0, 0x20_0000])), Err(LoadError::BadAddressFields(_))));
        assert_eq!(l(bad([0x10_0000, 0x10_0000, 0x10_1000, 0, 0x10_0000])), Err(LoadError::Truncated));
        assert_eq!(l(bad([0x10_0000, 0x10_0000, 0, 0x90_0000, 0x10_0000])), Err(LoadError::OutsideRam { addr: 0x10_0000, len: 0x80_0000 }));
        // A module too large for RAM.
        let k = elf(false, 0x10_0000, &seg(0x10_0000), &header(0, None));
        let big = std::vec![0u8; 8 << 20];
        assert!(matches!(load(&mut m, &k, "k", "", &[Module { image: &big, string: "" }]), Err(LoadError::OutsideRam { .. })));
    }
}
