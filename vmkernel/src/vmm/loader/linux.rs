//! The x86-64 Linux boot protocol (Documentation/x86/boot.rst) for a stock
//! bzImage, entered at its 64-bit entry point.
//!
//! The loader
//! - checks the setup header (`HdrS`, protocol 2.12+, `XLF_KERNEL_64`);
//! - puts the protected-mode kernel (the file after its `setup_sects + 1`
//!   real-mode sectors) at its preferred address (`pref_address`, 16 MiB for
//!   Debian's kernels), checking that `init_size` bytes fit in RAM there: the
//!   decompressor works in that window;
//! - writes the zero page (`boot_params`) at [`ZERO_PAGE`]: the setup header
//!   copied from the file, `type_of_loader = 0xff`, the command line
//!   pointer, the initrd, the e820 map of the VM's layout and
//!   `acpi_rsdp_addr`;
//! - puts the command line at [`CMDLINE`] and the initrd page-aligned at the
//!   top of low RAM (below `initrd_addr_max`);
//! - enters in 64-bit mode with the boot GDT (code 0x10, data 0x18) and an
//!   identity map of the first 4 GiB, RSI = zero page, RIP = load address +
//!   0x200 (the 64-bit entry), interrupts off.

use alloc::vec::Vec;

use super::long_mode::{BOOT_STACK, identity_map, long_mode_state, write_gdt, LOW_AREA_END};
use super::{BOOT_GDT, BOOT_PML4, CMDLINE, GuestMemory, LoadError, VcpuState, ZERO_PAGE};
use crate::vmm::decode::gpr;
use crate::vmm::firmware::{E820Entry, GuestLayout};

/// Offsets in `boot_params` (arch/x86/include/uapi/asm/bootparam.h).
pub mod bp {
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    pub const E820_ENTRIES: usize = 0x1e8;
    /// The setup header starts here (`setup_sects`).
    pub const HDR: usize = 0x1f1;
    pub const VID_MODE: usize = 0x1fa;
    pub const JUMP: usize = 0x200;
    pub const HEADER_MAGIC: usize = 0x202;
    pub const VERSION: usize = 0x206;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const CODE32_START: usize = 0x214;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21c;
    pub const HEAP_END_PTR: usize = 0x224;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    pub const XLOADFLAGS: usize = 0x236;
    pub const CMDLINE_SIZE: usize = 0x238;
    pub const PREF_ADDRESS: usize = 0x258;
    pub const INIT_SIZE: usize = 0x260;
    pub const E820_TABLE: usize = 0x2d0;
    pub const E820_MAX: usize = 128;
}

/// `loadflags`: the kernel is loaded at 1 MiB or above.
const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid.
const CAN_USE_HEAP: u8 = 1 << 7;
/// `xloadflags`: the kernel has the 64-bit entry at +0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `type_of_loader` of a loader without an assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;

/// What the setup header says about the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetupHeader {
    pub version: u16,
    pub setup_sects: u32,
    /// Bytes of the header to copy into the zero page (from 0x1f1).
    pub header_end: usize,
    pub pref_address: u64,
    pub init_size: u64,
    pub kernel_alignment: u32,
    pub relocatable: bool,
    pub initrd_addr_max: u32,
    pub cmdline_size: u32,
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, LoadError> {
    b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or(LoadError::Truncated)
}
fn u32_at(b: &[u8], o: usize) -> Result<u32, LoadError> {
    b.get(o..o + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or(LoadError::Truncated)
}
fn u64_at(b: &[u8], o: usize) -> Result<u64, LoadError> {
    Ok(u32_at(b, o)? as u64 | (u32_at(b, o + 4)? as u64) << 32)
}

/// Parses and checks a bzImage's setup header.
pub fn parse_header(bz: &[u8]) -> Result<SetupHeader, LoadError> {
    if bz.get(bp::HEADER_MAGIC..bp::HEADER_MAGIC + 4) != Some(b"HdrS") {
        return Err(LoadError::BadKernel("not a bzImage (no HdrS setup header)"));
    }
    let version = u16_at(bz, bp::VERSION)?;
    if version < 0x20c {
        return Err(LoadError::BadKernel("boot protocol older than 2.12 (no 64-bit entry)"));
    }
    if u16_at(bz, bp::XLOADFLAGS)? & XLF_KERNEL_64 == 0 {
        return Err(LoadError::BadKernel("the kernel has no 64-bit entry point"));
    }
    let setup_sects = match bz.get(bp::HDR).copied().ok_or(LoadError::Truncated)? {
        0 => 4,
        n => n as u32,
    };
    // The header ends where the jump at 0x200 lands: 0x202 + its offset.
    let header_end = 0x202 + *bz.get(bp::JUMP + 1).ok_or(LoadError::Truncated)? as usize;
    let h = SetupHeader {
        version,
        setup_sects,
        header_end: header_end.min(0x1000),
        pref_address: u64_at(bz, bp::PREF_ADDRESS)?,
        init_size: u32_at(bz, bp::INIT_SIZE)? as u64,
        kernel_alignment: u32_at(bz, bp::KERNEL_ALIGNMENT)?,
        relocatable: *bz.get(bp::RELOCATABLE_KERNEL).ok_or(LoadError::Truncated)? != 0,
        initrd_addr_max: u32_at(bz, bp::INITRD_ADDR_MAX)?,
        cmdline_size: u32_at(bz, bp::CMDLINE_SIZE)?,
    };
    if (h.setup_sects as usize + 1) * 512 >= bz.len() {
        return Err(LoadError::Truncated);
    }
    Ok(h)
}

// The zero page, GDT, page tables and command line do not overlap.
const _: () = assert!(ZERO_PAGE >= BOOT_GDT + 32 && ZERO_PAGE + 0x1000 <= BOOT_PML4 && LOW_AREA_END <= CMDLINE);

/// Where things went (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    pub kernel: u64,
    pub kernel_len: u64,
    pub initrd: Option<(u64, u64)>,
    pub cmdline: u64,
}

/// The zero page for `header` (the setup header bytes of the file) with the
/// loader's fields filled in. Pure, so it can be checked on its own.
pub fn zero_page(bz: &[u8], h: &SetupHeader, e820: &[E820Entry], cmdline: u64, initrd: Option<(u64, u64)>, rsdp: u64, kernel: u64) -> Result<Vec<u8>, LoadError> {
    let mut zp = alloc::vec![0u8; 0x1000];
    let hdr = bz.get(bp::HDR..h.header_end).ok_or(LoadError::Truncated)?;
    zp[bp::HDR..bp::HDR + hdr.len()].copy_from_slice(hdr);
    let put32 = |zp: &mut Vec<u8>, o: usize, v: u32| zp[o..o + 4].copy_from_slice(&v.to_le_bytes());
    zp[bp::VID_MODE..bp::VID_MODE + 2].copy_from_slice(&0xffffu16.to_le_bytes()); // "normal"
    zp[bp::TYPE_OF_LOADER] = LOADER_UNDEFINED;
    zp[bp::LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
    // The heap ends below the command line; only the real-mode setup
    // (not run here) uses it.
    zp[bp::HEAP_END_PTR..bp::HEAP_END_PTR + 2].copy_from_slice(&0xfe00u16.to_le_bytes());
    put32(&mut zp, bp::CODE32_START, kernel as u32);
    put32(&mut zp, bp::CMD_LINE_PTR, cmdline as u32);
    put32(&mut zp, bp::EXT_CMD_LINE_PTR, (cmdline >> 32) as u32);
    let (ri, rs) = initrd.unwrap_or((0, 0));
    put32(&mut zp, bp::RAMDISK_IMAGE, ri as u32);
    put32(&mut zp, bp::EXT_RAMDISK_IMAGE, (ri >> 32) as u32);
    put32(&mut zp, bp::RAMDISK_SIZE, rs as u32);
    put32(&mut zp, bp::EXT_RAMDISK_SIZE, (rs >> 32) as u32);
    zp[bp::ACPI_RSDP_ADDR..bp::ACPI_RSDP_ADDR + 8].copy_from_slice(&rsdp.to_le_bytes());
    if e820.len() > bp::E820_MAX {
        return Err(LoadError::BadKernel("more than 128 e820 entries"));
    }
    zp[bp::E820_ENTRIES] = e820.len() as u8;
    for (i, e) in e820.iter().enumerate() {
        let o = bp::E820_TABLE + i * 20;
        zp[o..o + 8].copy_from_slice(&e.addr.to_le_bytes());
        zp[o + 8..o + 16].copy_from_slice(&e.size.to_le_bytes());
        zp[o + 16..o + 20].copy_from_slice(&(e.kind as u32).to_le_bytes());
    }
    Ok(zp)
}

/// Loads a bzImage, its initrd and command line; returns the entry state.
/// `rsdp` is the guest-physical address of the ACPI RSDP (0: none).
pub fn load(mem: &mut dyn GuestMemory, bz: &[u8], initrd: Option<&[u8]>, cmdline: &str, rsdp: u64) -> Result<(VcpuState, LinuxLayout), LoadError> {
    let h = parse_header(bz)?;
    let layout = GuestLayout::new(mem.ram_size());
    let pm = &bz[(h.setup_sects as usize + 1) * 512..];
    let kernel = h.pref_address;
    // The decompressor needs init_size bytes from the load address.
    let window = h.init_size.max(pm.len() as u64);
    if !layout.is_ram(kernel, window) {
        return Err(LoadError::OutsideRam { addr: kernel, len: window });
    }
    // Command line: NUL-terminated, at most cmdline_size bytes.
    let max = (h.cmdline_size as usize).min(0x1_0000 - 1);
    if cmdline.len() > max {
        return Err(LoadError::BadKernel("command line longer than the kernel accepts"));
    }
    let initrd_at = match initrd {
        Some(rd) if !rd.is_empty() => {
            let len = rd.len() as u64;
            let top = layout.low_ram_end().min(h.initrd_addr_max as u64 + 1);
            let at = top.checked_sub(len).ok_or(LoadError::OutsideRam { addr: 0, len })? & !0xfff;
            if at < kernel + window || !layout.is_ram(at, len) {
                return Err(LoadError::OutsideRam { addr: at, len });
            }
            Some((at, len))
        }
        _ => None,
    };
    let zp = zero_page(bz, &h, &layout.e820(), CMDLINE, initrd_at, rsdp, kernel)?;
    mem.write(kernel, pm)?;
    if let (Some((at, _)), Some(rd)) = (initrd_at, initrd) {
        mem.write(at, rd)?;
    }
    let mut cl = Vec::with_capacity(cmdline.len() + 1);
    cl.extend_from_slice(cmdline.as_bytes());
    cl.push(0);
    mem.write(CMDLINE, &cl)?;
    mem.write(ZERO_PAGE, &zp)?;
    let gdtr = write_gdt(mem)?;
    let cr3 = identity_map(mem, BOOT_PML4)?;
    let mut st = long_mode_state(kernel + 0x200, BOOT_STACK, gdtr, cr3);
    st.regs.gpr[gpr::RSI as usize] = ZERO_PAGE;
    Ok((st, LinuxLayout { kernel, kernel_len: pm.len() as u64, initrd: initrd_at, cmdline: CMDLINE }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::firmware::E820Type;
    use crate::vmm::loader::EntryMode;
    use crate::vmm::loader::testmem::VecMemory;

    /// A minimal bzImage: 4 setup sectors, a header as Debian's 6.1 has it,
    /// and `payload` as the protected-mode part.
    fn bzimage(payload: &[u8], init_size: u32) -> Vec<u8> {
        let mut b = alloc::vec![0u8; 5 * 512];
        b[bp::HDR] = 4;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[bp::JUMP] = 0xeb;
        b[bp::JUMP + 1] = 0x6a; // header ends at 0x26c
        b[bp::HEADER_MAGIC..bp::HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
        b[bp::VERSION..bp::VERSION + 2].copy_from_slice(&0x20fu16.to_le_bytes());
        b[bp::LOADFLAGS] = LOADED_HIGH;
        b[bp::INITRD_ADDR_MAX..bp::INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b[bp::KERNEL_ALIGNMENT..bp::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[bp::RELOCATABLE_KERNEL] = 1;
        b[bp::XLOADFLAGS..bp::XLOADFLAGS + 2].copy_from_slice(&0x7fu16.to_le_bytes());
        b[bp::CMDLINE_SIZE..bp::CMDLINE_SIZE + 4].copy_from_slice(&2047u32.to_le_bytes());
        b[bp::PREF_ADDRESS..bp::PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
        b[bp::INIT_SIZE..bp::INIT_SIZE + 4].copy_from_slice(&init_size.to_le_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn header_checks() {
        let bz = bzimage(b"kernel", 0x300_0000);
        let h = parse_header(&bz).unwrap();
        assert_eq!((h.version, h.setup_sects, h.header_end), (0x20f, 4, 0x26c));
        assert_eq!((h.pref_address, h.init_size, h.cmdline_size), (0x100_0000, 0x300_0000, 2047));
        let mut old = bz.clone();
        old[bp::VERSION] = 0x0b;
        assert!(matches!(parse_header(&old), Err(LoadError::BadKernel(_))));
        let mut no64 = bz.clone();
        no64[bp::XLOADFLAGS] = 0;
        assert!(matches!(parse_header(&no64), Err(LoadError::BadKernel(_))));
        assert!(matches!(parse_header(b"\x7fELF"), Err(LoadError::BadKernel(_))));
        assert_eq!(parse_header(&bz[..5 * 512]), Err(LoadError::Truncated));
    }

    #[test]
    fn loads_kernel_initrd_cmdline_and_zero_page() {
        let mut m = VecMemory::new(128 << 20);
        let bz = bzimage(b"\x48\x31\xc0protected-mode kernel", 0x330_0000);
        let rd = alloc::vec![0xa5u8; 3 * 4096 + 17];
        let (st, l) = load(&mut m, &bz, Some(&rd), "console=ttyS0", 0xe_0000).unwrap();
        // 64-bit entry at load address + 0x200, RSI = zero page.
        assert_eq!(st.mode, EntryMode::Long64);
        assert_eq!(st.regs.rip, 0x100_0200);
        assert_eq!(st.regs.gpr[gpr::RSI as usize], ZERO_PAGE);
        assert_eq!((st.cs.selector, st.ds.selector), (0x10, 0x18));
        assert_eq!(m.slice(0x100_0000, 3), b"\x48\x31\xc0");
        // The initrd ends at or below the top of RAM, page-aligned, above
        // the decompressor's window.
        let (at, len) = l.initrd.unwrap();
        assert_eq!((at & 0xfff, len), (0, rd.len() as u64));
        assert!(at + len <= 128 << 20 && at >= 0x100_0000 + 0x330_0000);
        assert_eq!(m.slice(at, rd.len()), &rd[..]);
        assert_eq!(m.slice(CMDLINE, 14), b"console=ttyS0\0");
        // The zero page: the header copied, the loader's fields.
        let zp = ZERO_PAGE;
        assert_eq!(m.slice(zp + 0x202, 4), b"HdrS");
        assert_eq!(m.slice(zp + bp::TYPE_OF_LOADER as u64, 1), [0xff]);
        assert_eq!(m.u32(zp + bp::CMD_LINE_PTR as u64), CMDLINE as u32);
        assert_eq!(m.u32(zp + bp::RAMDISK_IMAGE as u64), at as u32);
        assert_eq!(m.u32(zp + bp::RAMDISK_SIZE as u64), rd.len() as u32);
        assert_eq!(m.u64(zp + bp::ACPI_RSDP_ADDR as u64), 0xe_0000);
        assert_eq!(m.slice(zp + bp::LOADFLAGS as u64, 1)[0] & LOADED_HIGH, LOADED_HIGH);
        // e820: the VM's layout, entry by entry.
        let e820 = GuestLayout::new(128 << 20).e820();
        assert_eq!(m.slice(zp + bp::E820_ENTRIES as u64, 1)[0] as usize, e820.len());
        for (i, e) in e820.iter().enumerate() {
            let o = zp + bp::E820_TABLE as u64 + i as u64 * 20;
            assert_eq!((m.u64(o), m.u64(o + 8), m.u32(o + 16)), (e.addr, e.size, e.kind as u32));
        }
        assert_eq!(m.u64(zp + bp::E820_TABLE as u64 + 40), 0x10_0000, "RAM from 1 MiB is the third entry");
        assert_eq!(e820[2].kind, E820Type::Ram);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        // The decompressor's window runs past 64 MiB of RAM.
        let bz = bzimage(b"k", 0x330_0000);
        let mut small = VecMemory::new(64 << 20);
        assert!(matches!(load(&mut small, &bz, None, "", 0), Err(LoadError::OutsideRam { addr: 0x100_0000, .. })));
        // An initrd that would overlap the kernel's window.
        let mut m = VecMemory::new(80 << 20);
        let rd = alloc::vec![0u8; 20 << 20];
        assert!(matches!(load(&mut m, &bz, Some(&rd), "", 0), Err(LoadError::OutsideRam { .. })));
        // A command line longer than cmdline_size.
        let long = "x".repeat(3000);
        assert!(matches!(load(&mut m, &bz, None, &long, 0), Err(LoadError::BadKernel(_))));
        // Without an initrd the ramdisk fields stay 0.
        let (_, l) = load(&mut m, &bz, None, "quiet", 0).unwrap();
        assert_eq!(l.initrd, None);
        assert_eq!(m.u32(ZERO_PAGE + bp::RAMDISK_SIZE as u64), 0);
    }
}
