//! INS/OUTS: what an I/O exit on a string instruction needs beyond what the
//! hardware reports — the address size and the source segment (OUTS takes a
//! segment override; INS always writes ES:rDI), found from the prefixes.

use super::{CpuMode, DecodeError, MAX_INSN_LEN, Seg};

/// A decoded INS/OUTS instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StringIo {
    /// OUTS (memory → port) or INS (port → memory).
    pub output: bool,
    /// Bytes per element: 1, 2 or 4.
    pub size: u8,
    /// Address size in bits: 16, 32 or 64 (masks rSI/rDI/rCX).
    pub addr_bits: u8,
    /// The segment OUTS reads from (DS unless overridden); INS uses ES.
    pub seg: Seg,
    /// REP (F3) or REPNE (F2): both repeat INS/OUTS rCX times.
    pub rep: bool,
    /// Instruction length.
    pub len: usize,
}

impl StringIo {
    /// The mask for rSI/rDI/rCX at this address size.
    pub fn addr_mask(&self) -> u64 {
        match self.addr_bits {
            16 => 0xffff,
            32 => 0xffff_ffff,
            _ => u64::MAX,
        }
    }
}

/// Decodes the INS/OUTS at the start of `bytes`.
pub fn decode_string_io(bytes: &[u8], mode: CpuMode) -> Result<StringIo, DecodeError> {
    let (mut opsize_override, mut addr_override, mut rep) = (false, false, false);
    let mut seg = Seg::Ds;
    let mut i = 0;
    loop {
        let Some(&b) = bytes.get(i) else { return Err(DecodeError::Truncated) };
        if i >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        match b {
            0x66 => opsize_override = true,
            0x67 => addr_override = true,
            0xf2 | 0xf3 => rep = true,
            0xf0 => return Err(DecodeError::Invalid),
            0x26 => seg = Seg::Es,
            0x2e => seg = Seg::Cs,
            0x36 => seg = Seg::Ss,
            0x3e => seg = Seg::Ds,
            0x64 => seg = Seg::Fs,
            0x65 => seg = Seg::Gs,
            // REX changes nothing for INS/OUTS (the element is at most 32 bits).
            0x40..=0x4f if mode == CpuMode::Bits64 => {}
            _ => break,
        }
        i += 1;
    }
    let op = bytes[i];
    if !(0x6c..=0x6f).contains(&op) {
        return Err(DecodeError::Unsupported { opcode: op as u16 });
    }
    let wide = match mode {
        CpuMode::Bits16 => if opsize_override { 4 } else { 2 },
        _ => if opsize_override { 2 } else { 4 },
    };
    let addr_bits = match (mode, addr_override) {
        (CpuMode::Bits16, false) | (CpuMode::Bits32, true) => 16,
        (CpuMode::Bits16, true) | (CpuMode::Bits32, false) | (CpuMode::Bits64, true) => 32,
        (CpuMode::Bits64, false) => 64,
    };
    Ok(StringIo { output: op >= 0x6e, size: if op & 1 == 0 { 1 } else { wide }, addr_bits, seg, rep, len: i + 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        // rep outsb in 32-bit code
        let s = decode_string_io(&[0xf3, 0x6e], CpuMode::Bits32).unwrap();
        assert_eq!(s, StringIo { output: true, size: 1, addr_bits: 32, seg: Seg::Ds, rep: true, len: 2 });
        // insw in 32-bit code (66 6d), ES implied
        let s = decode_string_io(&[0x66, 0x6d], CpuMode::Bits32).unwrap();
        assert_eq!((s.output, s.size, s.len), (false, 2, 2));
        // rep outsd with an FS override and a 16-bit address in real mode
        let s = decode_string_io(&[0x64, 0x66, 0xf3, 0x6f], CpuMode::Bits16).unwrap();
        assert_eq!((s.size, s.addr_bits, s.seg, s.rep, s.len), (4, 16, Seg::Fs, true, 4));
        assert_eq!(s.addr_mask(), 0xffff);
        // 64-bit: REX ignored, 67 makes the address 32 bits
        let s = decode_string_io(&[0x67, 0xf3, 0x48, 0x6d], CpuMode::Bits64).unwrap();
        assert_eq!((s.size, s.addr_bits, s.len), (4, 32, 4));
        let s = decode_string_io(&[0x6c], CpuMode::Bits64).unwrap();
        assert_eq!((s.size, s.addr_bits), (1, 64));
    }

    #[test]
    fn rejects() {
        assert_eq!(decode_string_io(&[0xf3], CpuMode::Bits32), Err(DecodeError::Truncated));
        assert_eq!(decode_string_io(&[0x90], CpuMode::Bits32), Err(DecodeError::Unsupported { opcode: 0x90 }));
        assert_eq!(decode_string_io(&[0xf0, 0x6e], CpuMode::Bits32), Err(DecodeError::Invalid));
        assert_eq!(decode_string_io(&[0x66; 16], CpuMode::Bits32), Err(DecodeError::TooLong));
    }
}
