//! Instruction length for any legacy-encoded instruction.
//!
//! Exits such as CPUID, RDMSR/WRMSR, HLT, IN/OUT, VMMCALL, MOV CR, INVLPG
//! need the next RIP, and QEMU's SVM has no nRIP save. The length follows
//! from the prefixes, the opcode map (one-byte, 0F, 0F 38, 0F 3A), whether
//! the opcode has a ModRM byte (plus SIB and displacement) and the size of
//! its immediate (SDM vol. 2 appendix A). VEX/EVEX/XOP encodings are not
//! handled: they never cause the exits this is used for.

use super::{Cursor, CpuMode, DecodeError, Prefixes, address_size, modrm, operand_size, prefixes};

/// Immediate kinds of the opcode maps.
#[derive(Clone, Copy)]
enum Imm {
    None,
    B,
    W,
    /// Iz: 16 bits with a 16-bit operand size, else 32.
    Z,
    /// Iv: 16/32/64 bits (MOV r, imm with REX.W).
    V,
    /// moffs: address-sized.
    Moffs,
    /// ENTER: Iw, Ib.
    Enter,
    /// Far pointer: Iz offset + 16-bit selector.
    Far,
    /// Near branch displacement: like Iz, but 32 bits in 64-bit mode.
    Rel,
}

/// ModRM and immediate of a one-byte opcode.
fn one_byte(op: u8, mode: CpuMode) -> Result<(bool, Imm), DecodeError> {
    let long = mode == CpuMode::Bits64;
    Ok(match op {
        0x00..=0x3F => match op & 7 {
            0..=3 => (true, Imm::None),
            4 => (false, Imm::B),
            5 => (false, Imm::Z),
            _ => {
                // push/pop ES/CS/SS/DS and DAA/DAS/AAA/AAS: invalid in 64-bit mode.
                if long && !matches!(op, 0x0F) {
                    return Err(DecodeError::Invalid);
                }
                (false, Imm::None)
            }
        },
        0x40..=0x5F => (false, Imm::None),
        0x60 | 0x61 => {
            if long {
                return Err(DecodeError::Invalid);
            }
            (false, Imm::None)
        }
        0x62 => {
            if long {
                // EVEX.
                return Err(DecodeError::Unsupported { opcode: 0x62 });
            }
            (true, Imm::None)
        }
        0x63 => (true, Imm::None),
        0x68 => (false, Imm::Z),
        0x69 => (true, Imm::Z),
        0x6A => (false, Imm::B),
        0x6B => (true, Imm::B),
        0x6C..=0x6F => (false, Imm::None),
        0x70..=0x7F => (false, Imm::B),
        0x80 | 0x82 | 0x83 => {
            if op == 0x82 && long {
                return Err(DecodeError::Invalid);
            }
            (true, Imm::B)
        }
        0x81 => (true, Imm::Z),
        0x84..=0x8F => (true, Imm::None),
        0x9A => {
            if long {
                return Err(DecodeError::Invalid);
            }
            (false, Imm::Far)
        }
        0x90..=0x9F => (false, Imm::None),
        0xA0..=0xA3 => (false, Imm::Moffs),
        0xA8 => (false, Imm::B),
        0xA9 => (false, Imm::Z),
        0xA4..=0xAF => (false, Imm::None),
        0xB0..=0xB7 => (false, Imm::B),
        0xB8..=0xBF => (false, Imm::V),
        0xC0 | 0xC1 => (true, Imm::B),
        0xC2 | 0xCA => (false, Imm::W),
        0xC3 | 0xCB | 0xC9 | 0xCC | 0xCE | 0xCF => (false, Imm::None),
        0xC4 | 0xC5 => {
            // LES/LDS outside 64-bit mode when ModRM.mod != 11; otherwise VEX.
            if long {
                return Err(DecodeError::Unsupported { opcode: op as u16 });
            }
            (true, Imm::None)
        }
        0xC6 => (true, Imm::B),
        0xC7 => (true, Imm::Z),
        0xC8 => (false, Imm::Enter),
        0xCD => (false, Imm::B),
        0xD0..=0xD3 => (true, Imm::None),
        0xD4 | 0xD5 => {
            if long {
                return Err(DecodeError::Invalid);
            }
            (false, Imm::B)
        }
        0xD6 | 0xD7 => (false, Imm::None),
        0xD8..=0xDF => (true, Imm::None),
        0xE0..=0xE7 => (false, Imm::B),
        0xE8 | 0xE9 => (false, Imm::Rel),
        0xEA => {
            if long {
                return Err(DecodeError::Invalid);
            }
            (false, Imm::Far)
        }
        0xEB => (false, Imm::B),
        0xEC..=0xEF => (false, Imm::None),
        0xF1 | 0xF4 | 0xF5 => (false, Imm::None),
        // F6/F7: the immediate of TEST (/0, /1) is handled by the caller.
        0xF6 | 0xF7 => (true, Imm::None),
        0xF8..=0xFD => (false, Imm::None),
        0xFE | 0xFF => (true, Imm::None),
        // Prefixes never reach here.
        _ => return Err(DecodeError::Invalid),
    })
}

/// ModRM and immediate of a 0F-map opcode.
fn two_byte(op: u8) -> Result<(bool, Imm), DecodeError> {
    Ok(match op {
        0x00..=0x03 | 0x0D | 0x10..=0x1F | 0x28..=0x2F => (true, Imm::None),
        0x05..=0x09 | 0x0B | 0x0E | 0x30..=0x35 | 0x37 | 0x77 | 0xA0..=0xA2 | 0xA8..=0xAA | 0xC8..=0xCF => {
            (false, Imm::None)
        }
        // 3DNow!: ModRM, then an opcode suffix byte.
        0x0F => (true, Imm::B),
        0x40..=0x6F | 0x74..=0x76 | 0x78..=0x7F => (true, Imm::None),
        0x70..=0x73 => (true, Imm::B),
        0x80..=0x8F => (false, Imm::Rel),
        0x90..=0x9F | 0xA3 | 0xA5 | 0xAB | 0xAD..=0xB9 | 0xBB..=0xC1 | 0xC3 | 0xC7 | 0xD0..=0xFF => (true, Imm::None),
        0xA4 | 0xAC | 0xBA | 0xC2 | 0xC4..=0xC6 => (true, Imm::B),
        _ => return Err(DecodeError::Invalid),
    })
}

/// Length in bytes of the instruction at the start of `bytes`.
pub fn instruction_length(bytes: &[u8], mode: CpuMode) -> Result<usize, DecodeError> {
    let p: Prefixes = prefixes(bytes, mode)?;
    let mut c = Cursor { bytes, pos: p.len };
    let op = c.u8()?;
    let (has_modrm, imm) = if op == 0x0F {
        let op2 = c.u8()?;
        match op2 {
            // MOV to/from CR/DR (and the old TR forms): ModRM.mod is ignored
            // and always taken as 11, so there is never a SIB or displacement.
            0x20..=0x23 | 0x24 | 0x26 => {
                c.u8()?;
                return Ok(c.pos);
            }
            0x38 => {
                c.u8()?;
                (true, Imm::None)
            }
            0x3A => {
                c.u8()?;
                (true, Imm::B)
            }
            _ => two_byte(op2)?,
        }
    } else {
        one_byte(op, mode)?
    };
    let mut test_imm = false;
    if has_modrm {
        let m = modrm(&mut c, &p, mode)?;
        // TEST Eb,Ib / Ev,Iz are the only F6/F7 forms with an immediate.
        test_imm = matches!(op, 0xF6 | 0xF7) && m.reg < 2;
    }
    let osize = operand_size(&p, mode);
    let z = if osize == 2 { 2 } else { 4 };
    let n = match imm {
        Imm::None if test_imm => {
            if op == 0xF6 {
                1
            } else {
                z
            }
        }
        Imm::None => 0,
        Imm::B => 1,
        Imm::W => 2,
        Imm::Z => z,
        Imm::V => osize,
        Imm::Moffs => address_size(&p, mode),
        Imm::Enter => 3,
        Imm::Far => z + 2,
        Imm::Rel => {
            if mode == CpuMode::Bits64 {
                4
            } else {
                z
            }
        }
    };
    for _ in 0..n {
        c.u8()?;
    }
    Ok(c.pos)
}
