//! The guest's debug registers, kept in software.
//!
//! Neither SVM nor VMX switches DR0–DR3 (nor VMX DR6): a guest that wrote
//! them directly would leave its values in the CPU for the next VM or the
//! host to read. So every MOV to or from a debug register exits and lands
//! here, and the guest reads back what it wrote. Its breakpoints still
//! fire: while its DR7 arms any, the VMM loads its DR0–DR3 into the CPU
//! before each entry and runs it with its DR7 (`hv::vm::load_debug_regs`);
//! otherwise the guest runs with DR7 0x400. #DB always exits and is
//! reflected with its DR6 bits, so no guest can wedge the CPU in a #DB
//! delivery loop (CVE-2015-8104).

use super::decode::CpuMode;

/// DR6 bits that read as 1 (SDM 17.2.3: bits 4–11 and 16–31, and bit 12
/// on processors without RTM); the writable ones are B0–B3, BD, BS, BT.
const DR6_FIXED_1: u64 = 0xffff_0ff0;
const DR6_WRITABLE: u64 = 0xf | (1 << 13) | (1 << 14) | (1 << 15);
/// DR7 bit 10 reads as 1; bits 11, 12, 14, 15 read as 0; the rest (enables,
/// GD, conditions and lengths) are writable.
const DR7_FIXED_1: u64 = 1 << 10;
const DR7_WRITABLE: u64 = 0xffff_23ff;

/// What an access does instead of completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrFault {
    /// #UD: DR4/DR5 with CR4.DE set, or a register beyond DR7.
    InvalidOpcode,
    /// #GP(0): a 64-bit write with bits 63:32 set in DR6 or DR7.
    GeneralProtection,
}

/// DR0–DR3, DR6 and DR7 as the guest sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    pub address: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
}

impl Default for DebugRegs {
    /// The power-on and INIT values.
    fn default() -> Self {
        Self { address: [0; 4], dr6: DR6_FIXED_1, dr7: DR7_FIXED_1 }
    }
}

impl DebugRegs {
    /// DR4/DR5 alias DR6/DR7 unless CR4.DE makes them undefined (#UD).
    fn resolve(dr: u8, cr4_de: bool) -> Result<u8, DrFault> {
        match dr {
            0..=3 | 6 | 7 => Ok(dr),
            4 | 5 if !cr4_de => Ok(dr + 2),
            _ => Err(DrFault::InvalidOpcode),
        }
    }

    /// MOV from DRn.
    pub fn read(&self, dr: u8, cr4_de: bool) -> Result<u64, DrFault> {
        Ok(match Self::resolve(dr, cr4_de)? {
            n @ 0..=3 => self.address[n as usize],
            6 => self.dr6,
            _ => self.dr7,
        })
    }

    /// MOV to DRn; `mode` decides the operand size (32 bits outside
    /// 64-bit mode: the upper half is dropped).
    pub fn write(&mut self, dr: u8, value: u64, cr4_de: bool, mode: CpuMode) -> Result<(), DrFault> {
        let dr = Self::resolve(dr, cr4_de)?;
        let value = if mode == CpuMode::Bits64 { value } else { value & 0xffff_ffff };
        match dr {
            n @ 0..=3 => self.address[n as usize] = value,
            6 | 7 if value >> 32 != 0 => return Err(DrFault::GeneralProtection),
            6 => self.dr6 = DR6_FIXED_1 | (value & DR6_WRITABLE),
            _ => self.dr7 = DR7_FIXED_1 | (value & DR7_WRITABLE),
        }
        Ok(())
    }
}

/// What a breakpoint of DR7 watches: an instruction start (execution),
/// or data accesses of a length.
fn breakpoint_kind(dr7: u64, n: usize) -> (u64, u64) {
    let rw = (dr7 >> (16 + 4 * n)) & 3;
    // LEN: 00 one byte, 01 two, 11 four, 10 eight (SDM 17.2.5).
    let len = match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    };
    (rw, len)
}

/// Do `[start, start + len)` and `range` (start, end exclusive) overlap?
fn overlaps(start: u64, len: u64, range: (u64, u64)) -> bool {
    start < range.1 && range.0 < start.saturating_add(len)
}

/// The guest DR7 a host may arm itself (with MOV DR7, before VMRUN) where
/// the hardware's VMRUN does not arm breakpoints (QEMU 7.2 TCG's SVM):
/// `dr7` without the breakpoints that could match what the host itself
/// runs or touches while they are armed — an execution breakpoint on an
/// instruction in `code` (the entry/exit stub), a data breakpoint on
/// `data` (the memory the stub reads between arming and VMRUN and the
/// pages the emulator reads and writes during VMRUN and #VMEXIT, by
/// physical address as by linear). Such a breakpoint would raise #DB in
/// the host; it is left unarmed (it misses in the guest instead). I/O
/// breakpoints (R/W 10) need nothing: the host runs no IN/OUT meanwhile.
/// Returns 0x400 when nothing is left armed.
pub fn host_armable_dr7(dr7: u64, address: &[u64; 4], code: (u64, u64), data: &[(u64, u64)]) -> u64 {
    let mut armed = dr7;
    for (n, &a) in address.iter().enumerate() {
        if dr7 & (3 << (2 * n)) == 0 {
            continue;
        }
        let host_could_hit = match breakpoint_kind(dr7, n) {
            (0, _) => overlaps(a, 1, code),
            (2, _) => false,
            // Data: as the emulator compares (the address as given, for
            // LEN bytes) and as the SDM does (aligned down to LEN).
            (_, len) => data.iter().any(|&r| overlaps(a, len, r) || overlaps(a & !(len - 1), len, r)),
        };
        if host_could_hit {
            armed &= !(3 << (2 * n));
        }
    }
    if armed & 0xff == 0 { 0x400 } else { armed }
}

/// The operands of a MOV to/from a debug register at the start of `bytes`
/// (0F 21 /r reads, 0F 23 /r writes; the ModRM reg field is the debug
/// register, r/m the general register, always a register operand), for
/// SVM, whose exits say which debug register but not which GPR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovDr {
    pub write: bool,
    /// The debug register (REX.R would make it DR8+: #UD on hardware, and
    /// reported here as 8 or more).
    pub dr: u8,
    /// The general register, in decoder order (0 = RAX ... 15 = R15).
    pub gpr: u8,
    pub len: usize,
}

pub fn decode_mov_dr(bytes: &[u8], mode: CpuMode) -> Option<MovDr> {
    let mut i = 0;
    let mut rex = 0u8;
    // Operand- and address-size prefixes do not change MOV DR; segment
    // prefixes are ignored; REX (64-bit mode only) must come last.
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf2 | 0xf3 => rex = 0,
            0x40..=0x4f if mode == CpuMode::Bits64 => rex = b,
            _ => break,
        }
        i += 1;
        if i >= 15 {
            return None;
        }
    }
    if bytes.get(i) != Some(&0x0f) {
        return None;
    }
    let write = match bytes.get(i + 1)? {
        0x21 => false,
        0x23 => true,
        _ => return None,
    };
    let modrm = *bytes.get(i + 2)?;
    let dr = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    Some(MovDr { write, dr, gpr, len: i + 3 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_values_and_round_trips() {
        let mut d = DebugRegs::default();
        assert_eq!(d.read(6, false), Ok(0xffff_0ff0));
        assert_eq!(d.read(7, false), Ok(0x400));
        for n in 0..4 {
            assert_eq!(d.read(n, false), Ok(0));
            d.write(n, 0x1234_5678_9abc_def0 + n as u64, false, CpuMode::Bits64).unwrap();
        }
        assert_eq!(d.read(2, true), Ok(0x1234_5678_9abc_def2));
        d.write(1, 0xffff_ffff_8000_0000, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(1, false), Ok(0x8000_0000), "32-bit writes drop the upper half");
    }

    #[test]
    fn dr6_dr7_fixed_bits_and_faults() {
        let mut d = DebugRegs::default();
        d.write(7, 0xffff_ffff, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(7, false), Ok(0xffff_27ff), "bits 11, 12, 14, 15 read as zero, bit 10 as one");
        d.write(7, 0, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(7, false), Ok(0x400));
        d.write(6, 0, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(6, false), Ok(0xffff_0ff0));
        d.write(6, 0x4001, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(6, false), Ok(0xffff_4ff1));
        assert_eq!(d.write(7, 1 << 32, false, CpuMode::Bits64), Err(DrFault::GeneralProtection));
        assert_eq!(d.write(6, 1 << 40, false, CpuMode::Bits64), Err(DrFault::GeneralProtection));
        assert_eq!(d.read(7, false), Ok(0x400), "a faulting write changes nothing");
    }

    #[test]
    fn dr4_dr5_alias_unless_cr4_de() {
        let mut d = DebugRegs::default();
        d.write(5, 0x1, false, CpuMode::Bits32).unwrap();
        assert_eq!(d.read(7, false), Ok(0x401), "DR5 is DR7 with CR4.DE clear");
        assert_eq!(d.read(4, false), Ok(0xffff_0ff0), "DR4 is DR6");
        assert_eq!(d.read(4, true), Err(DrFault::InvalidOpcode));
        assert_eq!(d.write(5, 0, true, CpuMode::Bits32), Err(DrFault::InvalidOpcode));
        assert_eq!(d.read(8, false), Err(DrFault::InvalidOpcode));
    }

    #[test]
    fn decodes_mov_dr_forms() {
        use CpuMode::*;
        // mov %dr7, %eax ; mov %ebx, %dr0 ; mov %r9, %dr3 ; mov %dr6, %rsp
        assert_eq!(decode_mov_dr(&[0x0f, 0x21, 0xf8], Bits32), Some(MovDr { write: false, dr: 7, gpr: 0, len: 3 }));
        assert_eq!(decode_mov_dr(&[0x0f, 0x23, 0xc3], Bits32), Some(MovDr { write: true, dr: 0, gpr: 3, len: 3 }));
        assert_eq!(decode_mov_dr(&[0x41, 0x0f, 0x23, 0xd9], Bits64), Some(MovDr { write: true, dr: 3, gpr: 9, len: 4 }));
        assert_eq!(decode_mov_dr(&[0x0f, 0x21, 0xf4], Bits64), Some(MovDr { write: false, dr: 6, gpr: 4, len: 3 }));
        assert_eq!(decode_mov_dr(&[0x44, 0x0f, 0x21, 0xc0], Bits64).map(|m| m.dr), Some(8), "REX.R: DR8");
        assert_eq!(decode_mov_dr(&[0x66, 0x0f, 0x21, 0xc0], Bits16).map(|m| m.len), Some(4));
        // In 32-bit mode 0x41 is INC ECX, not a prefix.
        assert_eq!(decode_mov_dr(&[0x41, 0x0f, 0x23, 0xd9], Bits32), None);
        assert_eq!(decode_mov_dr(&[0x0f, 0x22, 0xc0], Bits32), None, "MOV CR is not MOV DR");
        assert_eq!(decode_mov_dr(&[0x0f, 0x21], Bits32), None);
        assert_eq!(decode_mov_dr(&[0x66; 20], Bits32), None);
    }

    #[test]
    fn host_armable_dr7_drops_breakpoints_on_host_code_and_data() {
        let code = (0xffff_8000_0010_0000, 0xffff_8000_0010_0100);
        let data = [(0x20_0000, 0x20_1000), (0xffff_8000_0300_0000, 0xffff_8000_0300_0080)];
        // DR0 execute elsewhere: armed as is.
        assert_eq!(host_armable_dr7(0x401, &[0x1000, 0, 0, 0], code, &data), 0x401);
        // DR0 execute on the stub: nothing left to arm.
        assert_eq!(host_armable_dr7(0x401, &[0xffff_8000_0010_0040, 0, 0, 0], code, &data), 0x400);
        // An execution breakpoint on a data page does not matter (no code runs there).
        assert_eq!(host_armable_dr7(0x403, &[0x20_0800, 0, 0, 0], code, &data), 0x403);
        // DR1 write-watch of 4 bytes on the VMCB page's address: dropped
        // (both L1 and G1); DR0 stays.
        let dr7 = 0x400 | 0x1 | 0xc | (0b1101 << 20);
        assert_eq!(host_armable_dr7(dr7, &[0x5000, 0x20_0ffc, 0, 0], code, &data), (dr7 & !0xc));
        // An unaligned 8-byte read/write watch: the bytes from its address
        // miss the data, those from the aligned address reach it.
        let dr7 = 0x400 | 0x4 | (0b1011 << 20);
        assert_eq!(host_armable_dr7(dr7, &[0, 0x30_0004, 0, 0], code, &[(0x30_0000, 0x30_0004)]), 0x400);
        assert_eq!(host_armable_dr7(dr7, &[0, 0x30_0008, 0, 0], code, &[(0x30_0000, 0x30_0004)]), dr7);
        assert_eq!(host_armable_dr7(dr7, &[0, 0x1f_fff0, 0, 0], code, &data), dr7);
        // Execution on the data range's neighbours, and I/O breakpoints, stay.
        let dr7 = 0x400 | 0x10 | (0b0010 << 24);
        assert_eq!(host_armable_dr7(dr7, &[0, 0, 0x20_0000, 0], code, &data), dr7);
        // A watch at the very top of the address space does not overflow.
        let dr7 = 0x400 | 0x40 | (0b1011 << 28);
        assert_eq!(host_armable_dr7(dr7, &[0, 0, 0, u64::MAX - 3], code, &data), dr7);
        // Disabled breakpoints are not looked at.
        assert_eq!(host_armable_dr7(0x400, &[0xffff_8000_0010_0040; 4], code, &data), 0x400);
    }
}
