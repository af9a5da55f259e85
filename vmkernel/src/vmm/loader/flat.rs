//! Flat binaries: raw bytes copied to a guest-physical address and entered
//! in real mode (CS:IP) or in 32-bit protected mode with flat segments.
//!
//! The image may go to RAM or to the reserved BIOS area 0xA0000–0xFFFFF
//! (firmware-like test guests live at the reset vector); overwriting the
//! ACPI/MP tables there is then the caller's choice.

use super::{GuestMemory, LoadError, VcpuState};
use crate::vmm::decode::gpr;
use crate::vmm::firmware::{BIOS_AREA, GuestLayout, ONE_MIB};

fn check(layout: &GuestLayout, addr: u64, len: u64) -> Result<(), LoadError> {
    let in_bios = addr >= BIOS_AREA && addr.saturating_add(len) <= ONE_MIB;
    if len == 0 || !(layout.is_ram(addr, len) || in_bios) || addr.saturating_add(len) > layout.low_ram_end() {
        return Err(LoadError::OutsideRam { addr, len });
    }
    Ok(())
}

/// Loads `image` at `cs:ip` (physical cs × 16 + ip) and enters it in real
/// mode with DS = ES = FS = GS = SS = CS and SP = `sp`. The whole image must
/// fit below 1 MiB + 64 KiB, the real-mode reach.
pub fn load_real(mem: &mut dyn GuestMemory, image: &[u8], cs: u16, ip: u16, sp: u16) -> Result<VcpuState, LoadError> {
    let layout = GuestLayout::new(mem.ram_size());
    let addr = ((cs as u64) << 4) + ip as u64;
    check(&layout, addr, image.len() as u64)?;
    mem.write(addr, image)?;
    Ok(VcpuState::real(cs, ip, cs, cs, sp))
}

/// Loads `image` at `load_addr` and enters it at `entry` in 32-bit protected
/// mode (flat 4 GiB code/data segments 0x08/0x10, paging off, ESP = `esp`).
pub fn load_protected32(mem: &mut dyn GuestMemory, image: &[u8], load_addr: u32, entry: u32, esp: u32) -> Result<VcpuState, LoadError> {
    let layout = GuestLayout::new(mem.ram_size());
    check(&layout, load_addr as u64, image.len() as u64)?;
    mem.write(load_addr as u64, image)?;
    let mut st = VcpuState::protected32(entry, 0x08, 0x10);
    st.regs.gpr[gpr::RSP as usize] = esp as u64;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::loader::testmem::VecMemory;
    use crate::vmm::loader::{EntryMode, attr};

    #[test]
    fn real_mode_at_boot_sector_and_reset_vector() {
        let mut m = VecMemory::new(4 << 20);
        let st = load_real(&mut m, &[0xEB, 0xFE], 0, 0x7C00, 0x7C00).unwrap();
        assert_eq!(st.mode, EntryMode::Real);
        assert_eq!((st.cs.selector, st.cs.base, st.cs.limit, st.regs.rip), (0, 0, 0xFFFF, 0x7C00));
        assert_eq!(st.regs.gpr[4], 0x7C00);
        assert_eq!(st.cr0 & 1, 0);
        assert_eq!(m.slice(0x7C00, 2), &[0xEB, 0xFE]);
        // F000:FFF0, the reset vector, in the BIOS area.
        let st = load_real(&mut m, &[0xEA, 0x5B, 0xE0, 0x00, 0xF0], 0xF000, 0xFFF0, 0).unwrap();
        assert_eq!((st.cs.base, st.regs.rip, st.ds.base), (0xF_0000, 0xFFF0, 0xF_0000));
        assert_eq!(st.cs.attr & 0xF, attr::TYPE_CODE_RX | attr::ACCESSED);
        assert_eq!(m.slice(0xF_FFF0, 5), &[0xEA, 0x5B, 0xE0, 0x00, 0xF0]);
        // Crossing 1 MiB into ordinary RAM is not allowed (mixed regions).
        assert!(load_real(&mut m, &[0; 32], 0xFFFF, 0x0, 0).is_err());
    }

    #[test]
    fn protected_mode_flat() {
        let mut m = VecMemory::new(4 << 20);
        let st = load_protected32(&mut m, &[0xF4], 0x10_0000, 0x10_0000, 0x9_0000).unwrap();
        assert_eq!(st.mode, EntryMode::Protected32);
        assert_eq!((st.regs.rip, st.regs.gpr[4], st.cr0 & 1), (0x10_0000, 0x9_0000, 1));
        assert_eq!(st.cs.vmx_access_rights(), 0xC09B);
        assert_eq!(st.ds.vmx_access_rights(), 0xC093);
        assert_eq!(load_protected32(&mut m, &[0; 16], 0x3F_FFF8, 0, 0), Err(LoadError::OutsideRam { addr: 0x3F_FFF8, len: 16 }));
        assert!(load_protected32(&mut m, &[], 0x10_0000, 0, 0).is_err());
    }
}
