//! MOV to/from a control register, decoded for SVM: its CR-access exits
//! say which control register but (without decode assists, as under QEMU)
//! not which general register nor how long the instruction is.

use super::decode::CpuMode;

/// `0F 20 /r` (read) or `0F 22 /r` (write): the ModRM reg field (plus
/// REX.R) is the control register, r/m (plus REX.B) the general register,
/// always a register operand. `LOCK` turns CR0 into CR8 (AMD's AltMovCr8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovCr {
    pub write: bool,
    pub cr: u8,
    /// The general register, in decoder order (0 = RAX ... 15 = R15).
    pub gpr: u8,
    pub len: usize,
}

pub fn decode_mov_cr(bytes: &[u8], mode: CpuMode) -> Option<MovCr> {
    let mut i = 0;
    let mut rex = 0u8;
    let mut lock = false;
    // Operand- and address-size prefixes do not change MOV CR; segment
    // and REP prefixes are ignored; REX (64-bit mode only) must come last.
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf2 | 0xf3 => rex = 0,
            0xf0 => {
                lock = true;
                rex = 0;
            }
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
        0x20 => false,
        0x22 => true,
        _ => return None,
    };
    let modrm = *bytes.get(i + 2)?;
    let mut cr = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    if lock {
        if cr != 0 {
            return None; // #UD on hardware
        }
        cr = 8;
    }
    let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    Some(MovCr { write, cr, gpr, len: i + 3 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use CpuMode::*;

    #[test]
    fn decodes_mov_cr_forms() {
        // mov %rax, %cr4 ; mov %cr4, %rbx ; mov %r9, %cr8 ; mov %cr8, %rcx
        assert_eq!(decode_mov_cr(&[0x0f, 0x22, 0xe0], Bits64), Some(MovCr { write: true, cr: 4, gpr: 0, len: 3 }));
        assert_eq!(decode_mov_cr(&[0x0f, 0x20, 0xe3], Bits64), Some(MovCr { write: false, cr: 4, gpr: 3, len: 3 }));
        assert_eq!(decode_mov_cr(&[0x45, 0x0f, 0x22, 0xc1], Bits64), Some(MovCr { write: true, cr: 8, gpr: 9, len: 4 }));
        assert_eq!(decode_mov_cr(&[0x44, 0x0f, 0x20, 0xc1], Bits64), Some(MovCr { write: false, cr: 8, gpr: 1, len: 4 }));
        // AltMovCr8: lock mov %eax, %cr0 is CR8 (32-bit code).
        assert_eq!(decode_mov_cr(&[0xf0, 0x0f, 0x22, 0xc0], Bits32), Some(MovCr { write: true, cr: 8, gpr: 0, len: 4 }));
        assert_eq!(decode_mov_cr(&[0xf0, 0x0f, 0x22, 0xe0], Bits32), None, "LOCK with CR4 is #UD");
        assert_eq!(decode_mov_cr(&[0x41, 0x0f, 0x22, 0xe0], Bits32), None, "0x41 is INC outside 64-bit mode");
        assert_eq!(decode_mov_cr(&[0x0f, 0x23, 0xc0], Bits64), None, "MOV DR is not MOV CR");
        assert_eq!(decode_mov_cr(&[0x0f, 0x22], Bits64), None);
        assert_eq!(decode_mov_cr(&[0x66; 20], Bits64), None);
    }
}
