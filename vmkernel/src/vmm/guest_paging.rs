//! Guest-virtual → guest-physical translation through the guest's own page
//! tables, for instruction fetch and operand access during emulation.
//!
//! Covers every paging mode of SDM vol. 3 chapter 4: no paging (real mode
//! and protected mode with CR0.PG=0: the linear address is the physical
//! one), 32-bit paging (4 KiB, 4 MiB PSE pages with PSE-36 high bits), PAE
//! paging (PDPTE, 2 MiB pages), 4-level and 5-level (CR4.LA57) paging with
//! 2 MiB and 1 GiB pages. Faults come back with the #PF error code the guest
//! would see. The walk does not set Accessed/Dirty bits: the VMM only
//! re-reads what the guest already touched, or injects the fault.
//!
//! Segmentation happens before this: the caller forms the linear address
//! (segment base + offset; in real mode base = selector × 16).

/// Control registers that select the paging mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// MAXPHYADDR (CPUID 0x80000008 EAX[7:0]); physical-address bits above
    /// it in an entry are reserved. 52 if unknown.
    pub max_phys_bits: u8,
}

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// Page-table entry bits.
pub const PTE_P: u64 = 1 << 0;
pub const PTE_RW: u64 = 1 << 1;
pub const PTE_US: u64 = 1 << 2;
pub const PTE_PS: u64 = 1 << 7;
pub const PTE_XD: u64 = 1 << 63;

/// #PF error code bits (SDM vol. 3 §4.7).
pub mod pf {
    pub const P: u32 = 1 << 0;
    pub const W: u32 = 1 << 1;
    pub const U: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const ID: u32 = 1 << 4;
}

/// The paging mode the control registers select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    None,
    Bits32,
    Pae,
    Level4,
    Level5,
}

impl PagingState {
    pub fn mode(&self) -> PagingMode {
        if self.cr0 & CR0_PG == 0 || self.cr0 & CR0_PE == 0 {
            PagingMode::None
        } else if self.cr4 & CR4_PAE == 0 {
            PagingMode::Bits32
        } else if self.efer & EFER_LMA == 0 {
            PagingMode::Pae
        } else if self.cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        }
    }
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    pub write: bool,
    /// CPL 3 access.
    pub user: bool,
    /// Instruction fetch.
    pub fetch: bool,
    /// RFLAGS.AC (SMAP lets supervisor data accesses to user pages through
    /// when it is set).
    pub ac: bool,
}

impl Access {
    pub const FETCH: Access = Access { write: false, user: false, fetch: true, ac: false };
    pub const READ: Access = Access { write: false, user: false, fetch: false, ac: false };
    pub const WRITE: Access = Access { write: true, user: false, fetch: false, ac: false };
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub gpa: u64,
    /// Size of the mapping page (4 KiB, 2 MiB, 4 MiB, 1 GiB); for no paging
    /// the whole address space is one identity "page" and this is 4 KiB.
    pub page_size: u64,
    /// Combined rights along the walk.
    pub writable: bool,
    pub user: bool,
    pub executable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The guest must see #PF with this error code and CR2 = the linear address.
    PageFault { error_code: u32, linear: u64 },
    /// A non-canonical address in 4/5-level paging: #GP(0) (#SS for stack
    /// accesses, the caller knows which).
    NonCanonical,
    /// A paging-structure entry lies outside guest RAM (the read callback
    /// failed): the VMM stops the VM rather than guessing.
    TableOutsideRam { gpa: u64 },
}

/// Reads `size` (4 or 8) bytes of guest-physical memory, little-endian.
pub type ReadPhys<'a> = dyn FnMut(u64, u8) -> Option<u64> + 'a;

fn page_fault(access: Access, present: bool, rsvd: bool, id: bool, linear: u64) -> WalkError {
    let mut e = 0;
    if present {
        e |= pf::P;
    }
    if access.write {
        e |= pf::W;
    }
    if access.user {
        e |= pf::U;
    }
    if rsvd {
        e |= pf::RSVD | pf::P;
    }
    if id && access.fetch {
        e |= pf::ID;
    }
    WalkError::PageFault { error_code: e, linear }
}

/// Translates `linear` for `access` (SDM vol. 3 §4.3–4.6).
pub fn translate(st: &PagingState, linear: u64, access: Access, read: &mut ReadPhys) -> Result<Translation, WalkError> {
    let mode = st.mode();
    let nxe = st.efer & EFER_NXE != 0 && matches!(mode, PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5);
    // I/D is reported for fetches when NX or SMEP could have caused the fault.
    let id = nxe || st.cr4 & CR4_SMEP != 0;
    let maxphy = if st.max_phys_bits == 0 { 52 } else { st.max_phys_bits.min(52) };
    // Bits maxphy..51 of an entry are reserved.
    let high_rsvd = ((1u64 << 52) - 1) & !((1u64 << maxphy) - 1);
    let addr_mask = ((1u64 << maxphy) - 1) & !0xFFF;

    let (leaf, page_size, rights) = match mode {
        PagingMode::None => {
            // Linear addresses are 32 bits outside long mode.
            return Ok(Translation {
                gpa: linear & 0xFFFF_FFFF,
                page_size: 0x1000,
                writable: true,
                user: true,
                executable: true,
            });
        }
        PagingMode::Bits32 => {
            let la = linear & 0xFFFF_FFFF;
            let pde_addr = (st.cr3 & 0xFFFF_F000) | ((la >> 22) << 2);
            let pde = read(pde_addr, 4).ok_or(WalkError::TableOutsideRam { gpa: pde_addr })?;
            if pde & PTE_P == 0 {
                return Err(page_fault(access, false, false, id, la));
            }
            if pde & PTE_PS != 0 && st.cr4 & CR4_PSE != 0 {
                // 4 MiB page: bits 20:13 are PA bits 39:32 (PSE-36); bit 21 reserved.
                let hi = ((pde >> 13) & 0xFF) << 32;
                if pde & (1 << 21) != 0 || hi & !((1u64 << maxphy.min(40)) - 1) != 0 {
                    return Err(page_fault(access, true, true, id, la));
                }
                let base = (pde & 0xFFC0_0000) | hi;
                (base | (la & 0x3F_FFFF), 0x40_0000, pde)
            } else {
                let pte_addr = (pde & 0xFFFF_F000) | (((la >> 12) & 0x3FF) << 2);
                let pte = read(pte_addr, 4).ok_or(WalkError::TableOutsideRam { gpa: pte_addr })?;
                if pte & PTE_P == 0 {
                    return Err(page_fault(access, false, false, id, la));
                }
                ((pte & 0xFFFF_F000) | (la & 0xFFF), 0x1000, pde & pte)
            }
        }
        PagingMode::Pae | PagingMode::Level4 | PagingMode::Level5 => {
            let la = if mode == PagingMode::Pae { linear & 0xFFFF_FFFF } else { linear };
            let mut levels: u32 = match mode {
                PagingMode::Pae => 3,
                PagingMode::Level4 => 4,
                _ => 5,
            };
            if mode != PagingMode::Pae {
                // Canonical: bits 63..(47 or 56) equal.
                let top = if levels == 5 { 56 } else { 47 };
                let s = (la as i64) >> top;
                if s != 0 && s != -1 {
                    return Err(WalkError::NonCanonical);
                }
            }
            let xd_rsvd = if nxe { 0 } else { PTE_XD };
            let mut table = if mode == PagingMode::Pae { st.cr3 & 0xFFFF_FFE0 } else { st.cr3 & addr_mask };
            let mut rw = true;
            let mut us = true;
            let mut xd = false;
            loop {
                let shift = 12 + 9 * (levels - 1);
                let idx = if mode == PagingMode::Pae && levels == 3 { (la >> 30) & 3 } else { (la >> shift) & 0x1FF };
                let ea = table + idx * 8;
                let e = read(ea, 8).ok_or(WalkError::TableOutsideRam { gpa: ea })?;
                if e & PTE_P == 0 {
                    return Err(page_fault(access, false, false, id, la));
                }
                let mut rsvd = e & (high_rsvd | xd_rsvd) != 0;
                if mode == PagingMode::Pae && levels == 3 {
                    // PAE PDPTEs have no R/W, U/S, XD: bits 1,2,5-8 and 63 reserved.
                    rsvd |= e & (0x1E6 | PTE_XD) != 0;
                } else {
                    rw &= e & PTE_RW != 0;
                    us &= e & PTE_US != 0;
                    xd |= nxe && e & PTE_XD != 0;
                }
                let ps = e & PTE_PS != 0;
                // PS is reserved in PML5E/PML4E; the leaf bit at levels 2 and 3.
                let large = match (levels, mode) {
                    (1, _) => false,
                    (2, _) => ps,
                    (3, PagingMode::Pae) => false,
                    (3, _) => ps,
                    _ => {
                        rsvd |= ps;
                        false
                    }
                };
                if rsvd {
                    return Err(page_fault(access, true, true, id, la));
                }
                if levels == 1 || large {
                    let size = 1u64 << shift;
                    // Large pages: bits 12 .. shift-1 except PAT (bit 12) reserved.
                    if large && e & (size - 1) & !0x1FFF != 0 {
                        return Err(page_fault(access, true, true, id, la));
                    }
                    let base = e & addr_mask & !(size - 1);
                    let mut r = 0;
                    if rw {
                        r |= PTE_RW;
                    }
                    if us {
                        r |= PTE_US;
                    }
                    if xd {
                        r |= PTE_XD;
                    }
                    break (base | (la & (size - 1)), size, r);
                }
                table = e & addr_mask;
                levels -= 1;
            }
        }
    };

    // Rights (SDM vol. 3 §4.6).
    let user_page = rights & PTE_US != 0;
    let writable = rights & PTE_RW != 0;
    let executable = rights & PTE_XD == 0;
    let fault = || page_fault(access, true, false, id, linear);
    if access.user {
        if !user_page || (access.write && !writable) || (access.fetch && !executable) {
            return Err(fault());
        }
    } else {
        if access.write && !writable && st.cr0 & CR0_WP != 0 {
            return Err(fault());
        }
        if access.fetch && (!executable || (user_page && st.cr4 & CR4_SMEP != 0)) {
            return Err(fault());
        }
        if !access.fetch && user_page && st.cr4 & CR4_SMAP != 0 && !access.ac {
            return Err(fault());
        }
    }
    Ok(Translation { gpa: leaf, page_size, writable, user: user_page, executable })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Sparse guest-physical memory of 8-byte words.
    #[derive(Default)]
    struct Phys(BTreeMap<u64, u8>);

    impl Phys {
        fn put(&mut self, a: u64, v: u64, size: u8) {
            for k in 0..size as u64 {
                self.0.insert(a + k, (v >> (8 * k)) as u8);
            }
        }
        fn reader(&self) -> impl FnMut(u64, u8) -> Option<u64> + '_ {
            move |a, size| {
                if a >= 0x1_0000_0000 {
                    return None;
                }
                Some((0..size as u64).map(|k| (*self.0.get(&(a + k)).unwrap_or(&0) as u64) << (8 * k)).sum())
            }
        }
    }

    const P: u64 = PTE_P;
    const W: u64 = PTE_RW;
    const U: u64 = PTE_US;

    fn st(cr0: u64, cr3: u64, cr4: u64, efer: u64) -> PagingState {
        PagingState { cr0: cr0 | CR0_PE, cr3, cr4, efer, max_phys_bits: 40 }
    }

    fn tr(s: &PagingState, m: &Phys, la: u64, a: Access) -> Result<Translation, WalkError> {
        translate(s, la, a, &mut m.reader())
    }

    #[test]
    fn no_paging_is_identity() {
        let m = Phys::default();
        for cr0 in [0, CR0_PE, CR0_PG] {
            let s = PagingState { cr0, ..Default::default() };
            assert_eq!(s.mode(), PagingMode::None);
            assert_eq!(tr(&s, &m, 0xF_FFF0, Access::FETCH).unwrap().gpa, 0xF_FFF0);
            // 32-bit linear addresses.
            assert_eq!(tr(&s, &m, 0x1_0000_1000, Access::WRITE).unwrap().gpa, 0x1000);
        }
    }

    #[test]
    fn paging_32bit_4k_and_4m() {
        let mut m = Phys::default();
        // CR3 = 0x1000; PDE[1] -> PT at 0x2000; PTE[2] -> 0x5000 user rw.
        m.put(0x1000 + 4, 0x2000 | P | W | U, 4);
        m.put(0x2000 + 2 * 4, 0x5000 | P | W | U, 4);
        // PDE[2]: 4 MiB page at 0x0C00_0000 | PSE-36 high bits = 0x1 (bit 13).
        m.put(0x1000 + 2 * 4, 0x0C00_0000 | (1 << 13) | PTE_PS | P, 4);
        let s = st(CR0_PG, 0x1000, CR4_PSE, 0);
        assert_eq!(s.mode(), PagingMode::Bits32);
        let la = (1 << 22) | (2 << 12) | 0x123;
        let t = tr(&s, &m, la, Access::WRITE).unwrap();
        assert_eq!((t.gpa, t.page_size, t.writable, t.user), (0x5123, 0x1000, true, true));
        let t = tr(&s, &m, (2 << 22) | 0x12_3456, Access::FETCH).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x1_0C12_3456, 0x40_0000));
        // Without CR4.PSE, PS is ignored and the PDE points to a page table.
        let s2 = st(CR0_PG, 0x1000, 0, 0);
        // (the "page table" at 0x0C00_2000 is empty here).
        assert_eq!(tr(&s2, &m, 2 << 22, Access::READ), Err(WalkError::PageFault { error_code: 0, linear: 2 << 22 }));
        let mut m2 = Phys(m.0.clone());
        m2.put(0x0C00_2000, 0xA000 | P, 4);
        assert_eq!(tr(&s2, &m2, 2 << 22, Access::READ).unwrap().gpa, 0xA000);
        // Not present PDE / PTE.
        assert_eq!(
            tr(&s, &m, 3 << 22, Access { write: true, user: true, ..Default::default() }),
            Err(WalkError::PageFault { error_code: pf::W | pf::U, linear: 3 << 22 })
        );
        assert_eq!(tr(&s, &m, (1 << 22) | (3 << 12), Access::FETCH), Err(WalkError::PageFault { error_code: 0, linear: (1 << 22) | (3 << 12) }));
        // Supervisor write to the read-only 4 MiB page: allowed unless CR0.WP.
        assert!(tr(&s, &m, 2 << 22, Access::WRITE).is_ok());
        let wp = st(CR0_PG | CR0_WP, 0x1000, CR4_PSE, 0);
        assert_eq!(tr(&wp, &m, 2 << 22, Access::WRITE), Err(WalkError::PageFault { error_code: pf::P | pf::W, linear: 2 << 22 }));
        // User access to a supervisor page.
        let user_read = Access { user: true, ..Default::default() };
        assert_eq!(tr(&s, &m, 2 << 22, user_read), Err(WalkError::PageFault { error_code: pf::P | pf::U, linear: 2 << 22 }));
        // 4 MiB page with reserved bit 21.
        m.put(0x1000 + 5 * 4, 0x0C00_0000 | (1 << 21) | PTE_PS | P, 4);
        assert_eq!(tr(&s, &m, 5 << 22, Access::READ), Err(WalkError::PageFault { error_code: pf::P | pf::RSVD, linear: 5 << 22 }));
    }

    #[test]
    fn pae_paging() {
        let mut m = Phys::default();
        // CR3 = 0x3020 (32-byte aligned PDPT).
        m.put(0x3020 + 8, 0x4000 | P, 8); // PDPTE[1]
        m.put(0x4000 + 3 * 8, 0x8000_0000_0060_0000 | PTE_PS | P | W, 8); // 2 MiB, XD
        m.put(0x4000 + 4 * 8, 0x6000 | P | W | U, 8);
        m.put(0x6000 + 5 * 8, 0x7000 | P | U, 8);
        let s = st(CR0_PG, 0x3020, CR4_PAE, EFER_NXE);
        assert_eq!(s.mode(), PagingMode::Pae);
        let la = (1 << 30) | (3 << 21) | 0x1_2345;
        let t = tr(&s, &m, la, Access::WRITE).unwrap();
        assert_eq!((t.gpa, t.page_size, t.executable), (0x61_2345, 0x20_0000, false));
        // NX: fetch faults with I/D.
        assert_eq!(tr(&s, &m, la, Access::FETCH), Err(WalkError::PageFault { error_code: pf::P | pf::ID, linear: la }));
        // Without EFER.NXE the XD bit is reserved.
        let no_nx = st(CR0_PG, 0x3020, CR4_PAE, 0);
        assert_eq!(tr(&no_nx, &m, la, Access::READ), Err(WalkError::PageFault { error_code: pf::P | pf::RSVD, linear: la }));
        let la4 = (1 << 30) | (4 << 21) | (5 << 12) | 0xABC;
        let t = tr(&s, &m, la4, Access { user: true, ..Default::default() }).unwrap();
        assert_eq!((t.gpa, t.writable), (0x7ABC, false));
        assert!(tr(&s, &m, la4, Access { user: true, write: true, ..Default::default() }).is_err());
        // PDPTE with reserved bit 1 (R/W is reserved in PAE PDPTEs).
        m.put(0x3020 + 16, 0x4000 | P | W, 8);
        assert_eq!(tr(&s, &m, 2 << 30, Access::READ), Err(WalkError::PageFault { error_code: pf::P | pf::RSVD, linear: 2 << 30 }));
        // Not-present PDPTE.
        assert_eq!(tr(&s, &m, 3 << 30, Access::READ), Err(WalkError::PageFault { error_code: 0, linear: 3 << 30 }));
    }

    /// Builds 4-level tables at 0x10000.. mapping:
    /// - 0xFFFF_8000_0000_1000 -> 0x9000 (4 KiB, user, rw)
    /// - 0x40_0000 .. -> 2 MiB page at 0x20_0000 (supervisor)
    /// - 0x8000_0000 .. -> 1 GiB page at 0x4000_0000
    fn long_tables() -> Phys {
        let mut m = Phys::default();
        let pml4 = 0x10000;
        m.put(pml4, 0x11000 | P | W | U, 8); // PML4[0]
        m.put(pml4 + 256 * 8, 0x13000 | P | W | U, 8); // PML4[256]
        m.put(0x11000, 0x12000 | P | W, 8); // PDPT[0] -> PD
        m.put(0x11000 + 2 * 8, 0x4000_0000 | PTE_PS | P | W, 8); // PDPT[2]: 1 GiB
        m.put(0x12000 + 2 * 8, 0x20_0000 | PTE_PS | P | W, 8); // PD[2]: 2 MiB
        m.put(0x13000, 0x14000 | P | W | U, 8);
        m.put(0x14000, 0x15000 | P | W | U, 8);
        m.put(0x15000 + 8, 0x9000 | P | W | U, 8);
        m
    }

    #[test]
    fn four_level_paging() {
        let m = long_tables();
        let s = st(CR0_PG, 0x10000, CR4_PAE, EFER_LME | EFER_LMA | EFER_NXE);
        assert_eq!(s.mode(), PagingMode::Level4);
        let t = tr(&s, &m, 0xFFFF_8000_0000_1234, Access { user: true, write: true, ..Default::default() }).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x9234, 0x1000));
        let t = tr(&s, &m, 0x45_6789, Access::FETCH).unwrap();
        assert_eq!((t.gpa, t.page_size, t.user), (0x25_6789, 0x20_0000, false));
        let t = tr(&s, &m, 0x8123_4567, Access::READ).unwrap();
        assert_eq!((t.gpa, t.page_size), (0x4123_4567, 0x4000_0000));
        // Non-canonical.
        assert_eq!(tr(&s, &m, 0x0000_8000_0000_0000, Access::READ), Err(WalkError::NonCanonical));
        // User access through a supervisor PDPTE.
        assert_eq!(
            tr(&s, &m, 0x45_6789, Access { user: true, ..Default::default() }),
            Err(WalkError::PageFault { error_code: pf::P | pf::U, linear: 0x45_6789 })
        );
        // SMEP: supervisor fetch from a user page.
        let smep = PagingState { cr4: CR4_PAE | CR4_SMEP, ..s };
        assert_eq!(
            tr(&smep, &m, 0xFFFF_8000_0000_1000, Access::FETCH),
            Err(WalkError::PageFault { error_code: pf::P | pf::ID, linear: 0xFFFF_8000_0000_1000 })
        );
        // SMAP: supervisor read of a user page unless RFLAGS.AC.
        let smap = PagingState { cr4: CR4_PAE | CR4_SMAP, ..s };
        assert!(tr(&smap, &m, 0xFFFF_8000_0000_1000, Access::READ).is_err());
        assert!(tr(&smap, &m, 0xFFFF_8000_0000_1000, Access { ac: true, ..Access::READ }).is_ok());
        // Not present at PML4.
        assert_eq!(tr(&s, &m, 0x0000_0080_0000_0000, Access::FETCH), Err(WalkError::PageFault { error_code: pf::ID, linear: 0x0000_0080_0000_0000 }));
        // A table outside guest RAM.
        let bad = PagingState { cr3: 0x2_0000_0000, ..s };
        assert_eq!(tr(&bad, &m, 0, Access::READ), Err(WalkError::TableOutsideRam { gpa: 0x2_0000_0000 }));
    }

    #[test]
    fn four_level_reserved_bits() {
        let mut m = long_tables();
        let s = st(CR0_PG, 0x10000, CR4_PAE, EFER_LMA | EFER_NXE);
        let rsvd = |la| Err(WalkError::PageFault { error_code: pf::P | pf::RSVD, linear: la });
        // PS in a PML4E.
        m.put(0x10000 + 8, 0x11000 | P | PTE_PS, 8);
        assert_eq!(tr(&s, &m, 1 << 39, Access::READ), rsvd(1 << 39));
        // 2 MiB page with bit 13 set (reserved; bit 12 is PAT).
        m.put(0x12000 + 3 * 8, 0x20_2000 | PTE_PS | P, 8);
        assert_eq!(tr(&s, &m, 3 << 21, Access::READ), rsvd(3 << 21));
        m.put(0x12000 + 3 * 8, 0x20_1000 | PTE_PS | P, 8);
        assert_eq!(tr(&s, &m, 3 << 21, Access::READ).unwrap().gpa, 0x20_0000);
        // Address bits above MAXPHYADDR (40).
        m.put(0x12000 + 4 * 8, (1 << 45) | PTE_PS | P, 8);
        assert_eq!(tr(&s, &m, 4 << 21, Access::READ), rsvd(4 << 21));
        // XD without NXE.
        let no_nx = PagingState { efer: EFER_LMA, ..s };
        m.put(0x12000 + 5 * 8, PTE_XD | 0x40_0000 | PTE_PS | P, 8);
        assert_eq!(tr(&no_nx, &m, 5 << 21, Access::READ), rsvd(5 << 21));
        // With NXE: a read works, a fetch faults.
        assert!(tr(&s, &m, 5 << 21, Access::READ).is_ok());
        assert_eq!(tr(&s, &m, 5 << 21, Access::FETCH), Err(WalkError::PageFault { error_code: pf::P | pf::ID, linear: 5 << 21 }));
    }

    #[test]
    fn five_level_paging() {
        let mut m = long_tables();
        // PML5 at 0x1F000: entry 0 -> the PML4 at 0x10000; entry 1 -> same.
        m.put(0x1F000, 0x10000 | P | W | U, 8);
        m.put(0x1F000 + 8, 0x10000 | P | W | U, 8);
        let s = st(CR0_PG, 0x1F000, CR4_PAE | CR4_LA57, EFER_LMA);
        assert_eq!(s.mode(), PagingMode::Level5);
        assert_eq!(tr(&s, &m, 0x45_6789, Access::READ).unwrap().gpa, 0x25_6789);
        assert_eq!(tr(&s, &m, (1 << 48) | 0x45_6789, Access::READ).unwrap().gpa, 0x25_6789);
        // Canonical at 57 bits: bit 47 alone is fine now, bit 57 is not.
        assert!(matches!(tr(&s, &m, 1 << 47, Access::READ), Err(WalkError::PageFault { .. })));
        assert_eq!(tr(&s, &m, 1 << 57, Access::READ), Err(WalkError::NonCanonical));
    }
}
