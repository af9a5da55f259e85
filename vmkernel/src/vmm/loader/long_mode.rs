//! Entering an ELF64 directly in 64-bit mode.
//!
//! The loader writes, in low memory:
//! - a GDT at [`BOOT_GDT`]: null, null, 64-bit code (0x10), data (0x18) —
//!   the selectors the Linux 64-bit boot protocol uses;
//! - identity-mapped page tables at [`BOOT_PML4`]: PML4, one PDPT and four
//!   page directories of 2 MiB pages covering the first 4 GiB
//!   (0x9000–0xEFFF);
//! - the stack below the page tables (RSP = [`BOOT_STACK`]) unless given.
//!
//! The kernel's PT_LOAD segments must not overlap 0x500–0xEFFF.

use super::elf;
use super::{BOOT_GDT, BOOT_PML4, CR0_ET, CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, EntryMode, GuestMemory, LoadError, Segment, TableRegister, VcpuState, overlaps};
use crate::vmm::decode::{Regs, gpr};
use crate::vmm::firmware::GuestLayout;

pub const BOOT_STACK: u64 = 0x8FF0;
pub const CODE64_SELECTOR: u16 = 0x10;
pub const DATA_SELECTOR: u16 = 0x18;
/// Bytes of low memory the loader uses, from [`BOOT_GDT`].
pub const LOW_AREA_END: u64 = BOOT_PML4 + 6 * 0x1000;

/// GDT descriptors: flat 64-bit code (L=1) and flat data.
pub const GDT: [u64; 4] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

/// Writes page tables at `at` identity-mapping the first 4 GiB with 2 MiB
/// pages (6 pages: PML4, PDPT, 4 PDs). Returns the CR3 value.
pub fn identity_map(mem: &mut dyn GuestMemory, at: u64) -> Result<u64, LoadError> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    let pml4 = at;
    let pdpt = at + 0x1000;
    let mut page = [0u8; 0x1000];
    page[..8].copy_from_slice(&(pdpt | P_RW).to_le_bytes());
    mem.write(pml4, &page)?;
    page = [0; 0x1000];
    for i in 0..4u64 {
        let pd = at + 0x2000 + i * 0x1000;
        page[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&(pd | P_RW).to_le_bytes());
    }
    mem.write(pdpt, &page)?;
    for i in 0..4u64 {
        let mut pd = [0u8; 0x1000];
        for j in 0..512u64 {
            let addr = (i << 30) | (j << 21);
            pd[j as usize * 8..j as usize * 8 + 8].copy_from_slice(&(addr | P_RW | PS).to_le_bytes());
        }
        mem.write(at + 0x2000 + i * 0x1000, &pd)?;
    }
    Ok(pml4)
}

/// Writes the boot GDT and returns GDTR.
pub fn write_gdt(mem: &mut dyn GuestMemory) -> Result<TableRegister, LoadError> {
    let mut b = [0u8; 32];
    for (i, d) in GDT.iter().enumerate() {
        b[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
    }
    mem.write(BOOT_GDT, &b)?;
    Ok(TableRegister { base: BOOT_GDT, limit: (b.len() - 1) as u16 })
}

/// 64-bit mode with the boot GDT and identity map (written by the caller).
pub fn long_mode_state(rip: u64, rsp: u64, gdtr: TableRegister, cr3: u64) -> VcpuState {
    let data = Segment::data32(DATA_SELECTOR);
    let mut regs = Regs { gpr: [0; 16], rip, rflags: super::RFLAGS_BOOT };
    regs.gpr[gpr::RSP as usize] = rsp;
    VcpuState {
        mode: EntryMode::Long64,
        regs,
        cs: Segment::code64(CODE64_SELECTOR),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        tr: Segment::boot_tr(),
        ldtr: Segment::boot_ldtr(),
        gdtr,
        idtr: TableRegister::default(),
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
    }
}

/// Loads an ELF64 and returns the state to enter it in 64-bit mode at its
/// physical entry point, RSP = `rsp` (or [`BOOT_STACK`]).
pub fn load_elf64(mem: &mut dyn GuestMemory, image: &[u8], rsp: Option<u64>) -> Result<VcpuState, LoadError> {
    let layout = GuestLayout::new(mem.ram_size());
    let e = elf::parse(image)?;
    if !e.class64 || e.machine != elf::EM_X86_64 {
        return Err(LoadError::BadElf("not an x86-64 ELF64 image"));
    }
    if !layout.is_ram(BOOT_GDT, LOW_AREA_END - BOOT_GDT) {
        return Err(LoadError::OutsideRam { addr: BOOT_GDT, len: LOW_AREA_END - BOOT_GDT });
    }
    for s in &e.segments {
        if overlaps(s.paddr, s.memsz, BOOT_GDT, LOW_AREA_END - BOOT_GDT) {
            return Err(LoadError::Overlap { addr: s.paddr, len: s.memsz });
        }
    }
    e.load(image, mem, &layout)?;
    let gdtr = write_gdt(mem)?;
    let cr3 = identity_map(mem, BOOT_PML4)?;
    Ok(long_mode_state(e.physical_entry(), rsp.unwrap_or(BOOT_STACK), gdtr, cr3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::guest_paging::{Access, PagingState, translate};
    use crate::vmm::loader::elf::build::elf;
    use crate::vmm::loader::testmem::VecMemory;

    #[test]
    fn elf64_in_long_mode() {
        let k = elf(true, 0x20_0000, &[(0x20_0000, 0x20_0000, &[0xF4; 16], 0x100, elf::PF_X)], &[]);
        let mut m = VecMemory::new(16 << 20);
        let st = load_elf64(&mut m, &k, None).unwrap();
        assert_eq!(st.mode, EntryMode::Long64);
        assert_eq!((st.regs.rip, st.regs.gpr[4]), (0x20_0000, BOOT_STACK));
        assert_eq!((st.cr3, st.cr4 & CR4_PAE, st.efer), (BOOT_PML4, CR4_PAE, EFER_LME | EFER_LMA));
        assert_ne!(st.cs.attr & super::super::attr::L, 0);
        assert_eq!(st.cs.attr & super::super::attr::DB, 0);
        assert_eq!(st.gdtr, TableRegister { base: 0x500, limit: 31 });
        assert_eq!(m.u64(0x500 + 0x10), 0x00AF_9B00_0000_FFFF);
        // The identity map, walked by our own page-table walker.
        let ps = PagingState { cr0: st.cr0, cr3: st.cr3, cr4: st.cr4, efer: st.efer, max_phys_bits: 40 };
        let mut rd = |a: u64, n: u8| {
            let mut b = [0u8; 8];
            (a + n as u64 <= 16 << 20).then(|| {
                b[..n as usize].copy_from_slice(m.slice(a, n as usize));
                u64::from_le_bytes(b)
            })
        };
        for la in [0u64, 0x20_0000, 0x7FF_FFFF, 0xFEE0_0030, 0xFFFF_FFFF] {
            let t = translate(&ps, la, Access::FETCH, &mut rd).unwrap();
            assert_eq!((t.gpa, t.page_size), (la, 0x20_0000));
        }
        assert!(translate(&ps, 0x1_0000_0000, Access::READ, &mut rd).is_err());
    }

    #[test]
    fn rejects_elf32_and_low_overlap() {
        let mut m = VecMemory::new(16 << 20);
        let k = elf(false, 0x20_0000, &[(0x20_0000, 0x20_0000, &[0xF4; 16], 16, elf::PF_X)], &[]);
        assert!(matches!(load_elf64(&mut m, &k, None), Err(LoadError::BadElf(_))));
        let k = elf(true, 0x8000, &[(0x8000, 0x8000, &[0xF4; 16], 0x2000, elf::PF_X)], &[]);
        assert_eq!(load_elf64(&mut m, &k, None), Err(LoadError::Overlap { addr: 0x8000, len: 0x2000 }));
        let k = elf(true, 0x10_0000, &[(0x10_0000, 0x10_0000, &[0xF4; 16], 16, elf::PF_X)], &[]);
        assert_eq!(load_elf64(&mut m, &k, Some(0x7_0000)).unwrap().regs.gpr[4], 0x7_0000);
    }
}
