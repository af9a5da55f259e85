//! Guest loaders: putting a kernel into guest memory and choosing the
//! initial vCPU state.
//!
//! Every loader writes through [`GuestMemory`] (the VMM's view of guest RAM,
//! addressed by guest-physical address) and returns a [`VcpuState`] for the
//! bootstrap processor. The guest-physical layout is the one of
//! [`GuestLayout`](super::firmware::GuestLayout): RAM from 0 up to 3 GiB,
//! the rest above 4 GiB, the BIOS area 0xA0000–0xFFFFF reserved (it holds the
//! ACPI and MP tables), the IOAPIC/LAPIC pages reserved.
//!
//! - [`multiboot`]: Multiboot v1 kernels (ELF32/ELF64 or the a.out kludge),
//!   entered in 32-bit protected mode as the specification demands.
//! - [`flat`]: a raw binary at a given address, entered in real mode (CS:IP)
//!   or 32-bit protected mode.
//! - [`long_mode`]: an ELF64 entered directly in 64-bit mode with identity-
//!   mapped page tables and a GDT the loader writes into guest memory.
//!
//! - [`linux`]: a stock bzImage through the 64-bit Linux boot protocol
//!   (zero page at [`ZERO_PAGE`], command line at [`CMDLINE`], initrd at
//!   the top of low RAM, e820 from the layout, `acpi_rsdp_addr`).

pub mod elf;
pub mod flat;
pub mod linux;
pub mod long_mode;
pub mod multiboot;

use super::decode::Regs;

/// Fixed low-memory areas the loaders use (all in ordinary RAM below
/// 640 KiB, above the real-mode IVT and BDA). Guests own this memory once
/// they run; each loader documents which of these it uses.
pub const BOOT_GDT: u64 = 0x500;
/// Linux zero page (boot_params).
pub const ZERO_PAGE: u64 = 0x7000;
/// Page tables of the 64-bit entry: PML4, PDPT, then four page directories.
pub const BOOT_PML4: u64 = 0x9000;
/// Linux command line.
pub const CMDLINE: u64 = 0x2_0000;

/// An access outside guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    pub gpa: u64,
    pub len: u64,
}

/// Guest RAM as the loaders see it.
pub trait GuestMemory {
    /// Bytes of guest RAM; the guest-physical layout follows from it
    /// ([`GuestLayout::new`](super::firmware::GuestLayout::new)).
    fn ram_size(&self) -> u64;
    /// Writes `data` at guest-physical `gpa`. The range must be RAM-backed
    /// (any part of low RAM, including the reserved BIOS area, or high RAM).
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Zero-fills `len` bytes at `gpa` (BSS).
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        let zeros = [0u8; 512];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeros.len() as u64);
            self.write(gpa + done, &zeros[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

/// Why a guest image could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No Multiboot header (magic 0x1BADB002) in the first 8192 bytes.
    NoMultibootHeader,
    /// magic + flags + checksum is not 0 mod 2^32.
    BadChecksum,
    /// Flag bits 0–15 this loader does not implement (the spec requires
    /// refusing unknown required features).
    UnsupportedFlags(u32),
    /// A malformed or unsupported ELF file.
    BadElf(&'static str),
    /// The a.out-kludge address fields are inconsistent.
    BadAddressFields(&'static str),
    /// A part of the image falls outside guest RAM or into a reserved hole.
    OutsideRam { addr: u64, len: u64 },
    /// Two things would share memory (e.g. a segment and the boot info).
    Overlap { addr: u64, len: u64 },
    /// The file is shorter than its headers say.
    Truncated,
    /// A Linux kernel (bzImage) this loader cannot boot, or a request it
    /// cannot fulfil (command line too long, ...).
    BadKernel(&'static str),
    Memory(MemError),
}

impl From<MemError> for LoadError {
    fn from(e: MemError) -> Self {
        LoadError::Memory(e)
    }
}

/// A segment register's hidden state. `attr` uses the AMD VMCB packing
/// (type[3:0], S, DPL[1:0], P, AVL, L, D/B, G in bits 0–11);
/// [`Segment::vmx_access_rights`] gives the Intel VMCS form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    pub attr: u16,
}

pub mod attr {
    pub const ACCESSED: u16 = 1;
    pub const TYPE_DATA_RW: u16 = 0x2;
    pub const TYPE_CODE_RX: u16 = 0xA;
    pub const TYPE_TSS_BUSY: u16 = 0xB;
    pub const TYPE_LDT: u16 = 0x2;
    pub const S: u16 = 1 << 4;
    pub const P: u16 = 1 << 7;
    pub const L: u16 = 1 << 9;
    pub const DB: u16 = 1 << 10;
    pub const G: u16 = 1 << 11;
}

impl Segment {
    /// Flat 4 GiB 32-bit code segment.
    pub const fn code32(selector: u16) -> Segment {
        use attr::*;
        Segment { selector, base: 0, limit: 0xFFFF_FFFF, attr: TYPE_CODE_RX | ACCESSED | S | P | DB | G }
    }
    /// Flat 4 GiB data segment.
    pub const fn data32(selector: u16) -> Segment {
        use attr::*;
        Segment { selector, base: 0, limit: 0xFFFF_FFFF, attr: TYPE_DATA_RW | ACCESSED | S | P | DB | G }
    }
    /// 64-bit code segment (L=1, D=0).
    pub const fn code64(selector: u16) -> Segment {
        use attr::*;
        Segment { selector, base: 0, limit: 0xFFFF_FFFF, attr: TYPE_CODE_RX | ACCESSED | S | P | L | G }
    }
    /// Real-mode segment: base = selector × 16, 64 KiB limit.
    pub const fn real(selector: u16, code: bool) -> Segment {
        use attr::*;
        let ty = if code { TYPE_CODE_RX } else { TYPE_DATA_RW };
        Segment { selector, base: (selector as u64) << 4, limit: 0xFFFF, attr: ty | ACCESSED | S | P }
    }
    /// A busy 32-bit TSS at 0 (VM entry requires a usable TR even when the
    /// guest never loaded one).
    pub const fn boot_tr() -> Segment {
        Segment { selector: 0, base: 0, limit: 0xFFFF, attr: attr::TYPE_TSS_BUSY | attr::P }
    }
    pub const fn boot_ldtr() -> Segment {
        Segment { selector: 0, base: 0, limit: 0xFFFF, attr: attr::TYPE_LDT | attr::P }
    }
    /// The VMCS access-rights layout: bits 0–7 as in `attr`, AVL/L/D/G moved
    /// up to bits 12–15.
    pub fn vmx_access_rights(&self) -> u32 {
        let a = self.attr as u32;
        (a & 0xFF) | ((a & 0xF00) << 4)
    }
}

/// Base and limit of the GDT or IDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableRegister {
    pub base: u64,
    pub limit: u16,
}

/// The processor mode a loader leaves the vCPU in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMode {
    Real,
    Protected32,
    Long64,
}

/// Initial state of the bootstrap vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuState {
    pub mode: EntryMode,
    /// GPRs, RIP and RFLAGS.
    pub regs: Regs,
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldtr: Segment,
    pub gdtr: TableRegister,
    pub idtr: TableRegister,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is always set; IF and everything else clear.
pub const RFLAGS_BOOT: u64 = 0x2;

impl VcpuState {
    /// 32-bit protected mode, flat segments, paging off, interrupts off.
    pub fn protected32(entry: u32, code_sel: u16, data_sel: u16) -> VcpuState {
        let data = Segment::data32(data_sel);
        VcpuState {
            mode: EntryMode::Protected32,
            regs: Regs { gpr: [0; 16], rip: entry as u64, rflags: RFLAGS_BOOT },
            cs: Segment::code32(code_sel),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            tr: Segment::boot_tr(),
            ldtr: Segment::boot_ldtr(),
            gdtr: TableRegister::default(),
            idtr: TableRegister { base: 0, limit: 0xFFFF },
            cr0: CR0_PE | CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
        }
    }

    /// Real mode at CS:IP with all data segments = `ds`, SS:SP given.
    pub fn real(cs: u16, ip: u16, ds: u16, ss: u16, sp: u16) -> VcpuState {
        let data = Segment::real(ds, false);
        let mut regs = Regs { gpr: [0; 16], rip: ip as u64, rflags: RFLAGS_BOOT };
        regs.gpr[crate::vmm::decode::gpr::RSP as usize] = sp as u64;
        VcpuState {
            mode: EntryMode::Real,
            regs,
            cs: Segment::real(cs, true),
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: Segment::real(ss, false),
            tr: Segment::boot_tr(),
            ldtr: Segment::boot_ldtr(),
            gdtr: TableRegister { base: 0, limit: 0xFFFF },
            idtr: TableRegister { base: 0, limit: 0x3FF },
            cr0: CR0_ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
        }
    }
}

/// Whether `[a, a+alen)` and `[b, b+blen)` intersect.
pub(crate) fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen != 0 && blen != 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Guest memory backed by a vector, laid out like the VMM's (low RAM at 0,
/// the rest above 4 GiB), for tests.
#[cfg(test)]
pub(crate) mod testmem {
    use super::{GuestMemory, MemError};
    use crate::vmm::firmware::GuestLayout;
    use std::vec::Vec;

    pub struct VecMemory {
        pub bytes: Vec<u8>,
        layout: GuestLayout,
    }

    impl VecMemory {
        pub fn new(ram_size: u64) -> VecMemory {
            VecMemory { bytes: std::vec![0; ram_size as usize], layout: GuestLayout::new(ram_size) }
        }
        fn offset(&self, gpa: u64, len: u64) -> Result<usize, MemError> {
            let err = MemError { gpa, len };
            let end = gpa.checked_add(len).ok_or(err)?;
            let low = self.layout.low_ram_end();
            if end <= low {
                return Ok(gpa as usize);
            }
            let hb = crate::vmm::firmware::HIGH_RAM_BASE;
            if gpa >= hb && end <= self.layout.high_ram_end() {
                return Ok((gpa - hb + low) as usize);
            }
            Err(err)
        }
        pub fn slice(&self, gpa: u64, len: usize) -> &[u8] {
            let o = self.offset(gpa, len as u64).unwrap();
            &self.bytes[o..o + len]
        }
        pub fn u32(&self, gpa: u64) -> u32 {
            u32::from_le_bytes(self.slice(gpa, 4).try_into().unwrap())
        }
        pub fn u64(&self, gpa: u64) -> u64 {
            u64::from_le_bytes(self.slice(gpa, 8).try_into().unwrap())
        }
    }

    impl GuestMemory for VecMemory {
        fn ram_size(&self) -> u64 {
            self.bytes.len() as u64
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
            let o = self.offset(gpa, data.len() as u64)?;
            self.bytes[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let o = self.offset(gpa, buf.len() as u64)?;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
            Ok(())
        }
    }
}
