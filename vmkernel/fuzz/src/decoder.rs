//! The x86 instruction decoder and MMIO emulator (`vmm::decode`), as the
//! VMM uses them on an MMIO exit: up to 15 fetched bytes are decoded for the
//! guest's CPU mode, then executed against a random register file and a
//! memory that answers with random values or random faults. The INS/OUTS,
//! MOV DR and length decoders see the same bytes.

use vmkernel::vmm::debug_regs::decode_mov_dr;
use vmkernel::vmm::decode::{
    AccessError, CpuMode, MAX_INSN_LEN, MemoryAccess, REP_BATCH, Regs, Seg, decode, decode_string_io, execute, instruction_length,
};

use crate::Rng;

const PREFIXES: &[u8] = &[0x66, 0x67, 0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65];
/// One-byte opcodes with a memory form that an MMIO access can come from,
/// and some that cannot (they must be refused, not mis-executed).
const OPCODES: &[u8] = &[
    0x88, 0x89, 0x8A, 0x8B, 0xC6, 0xC7, 0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xAA, 0xAB, 0xAC, 0xAD, 0x80, 0x81, 0x83, 0x00,
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x20, 0x21, 0x22, 0x23, 0x28, 0x29, 0x30, 0x31, 0x32, 0x33, 0x38, 0x39, 0x3A,
    0x3B, 0x84, 0x85, 0x86, 0x87, 0xF6, 0xF7, 0xFE, 0xFF, 0x8F, 0xD0, 0xD1, 0xD3, 0x6C, 0x6D, 0x6E, 0x6F, 0xA6, 0xA7, 0xAE,
    0xAF, 0x10, 0x11, 0x18, 0x19, 0xC0, 0xC1, 0xC4, 0xC5, 0x62, 0x8E, 0x8C, 0x8D,
];
const OPCODES_0F: &[u8] = &[
    0xB6, 0xB7, 0xBE, 0xBF, 0xB0, 0xB1, 0xC0, 0xC1, 0xC7, 0xA3, 0xAB, 0xB3, 0xBB, 0xBA, 0x21, 0x23, 0x20, 0x22, 0x01, 0x00,
    0x10, 0x11, 0x28, 0x29, 0x6F, 0x7F, 0xE7, 0xC3, 0xAE, 0x38, 0x3A, 0x0F, 0x18, 0x1F, 0x40, 0x90,
];

/// Instruction bytes: pure random, or prefixes + a relevant opcode +
/// random ModRM/SIB/displacement/immediate bytes, sometimes cut short.
pub fn instruction_bytes(rng: &mut Rng, mode: CpuMode) -> Vec<u8> {
    if rng.chance(1, 4) {
        let n = rng.range(0, MAX_INSN_LEN as u64 + 2) as usize;
        return rng.bytes(n);
    }
    let mut b = Vec::with_capacity(20);
    for _ in 0..rng.below(4) {
        b.push(*rng.pick(PREFIXES));
    }
    if mode == CpuMode::Bits64 && rng.chance(2, 3) {
        b.push(0x40 | rng.below(16) as u8);
    }
    if rng.chance(1, 4) {
        b.push(0x0F);
        b.push(if rng.chance(4, 5) { *rng.pick(OPCODES_0F) } else { rng.u8() });
    } else {
        b.push(if rng.chance(9, 10) { *rng.pick(OPCODES) } else { rng.u8() });
    }
    // ModRM: mostly memory forms (mod != 3), all /reg values.
    let md = if rng.chance(1, 6) { 3 } else { rng.below(3) as u8 };
    b.push(md << 6 | rng.u8() & 0x3f);
    let tail = rng.range(0, 12) as usize;
    b.extend(rng.bytes(tail));
    if rng.chance(1, 8) {
        b.truncate(rng.below(b.len() as u64 + 1) as usize);
    }
    b
}

/// Memory behind the emulated instruction: random values, occasionally a
/// fault (a #PF or #GP the guest must see, or "nothing there").
struct RandomMemory<'a> {
    rng: &'a mut Rng,
    accesses: u64,
}

impl RandomMemory<'_> {
    fn access(&mut self, size: u8) -> Result<(), AccessError> {
        assert!(matches!(size, 1 | 2 | 4 | 8), "access of {size} bytes");
        self.accesses += 1;
        match self.rng.below(200) {
            0 => Err(AccessError::Unhandled),
            1 => Err(AccessError::Exception { vector: 14, error_code: Some(2), cr2: Some(self.rng.next_u64()) }),
            2 => Err(AccessError::Exception { vector: 13, error_code: Some(0), cr2: None }),
            _ => Ok(()),
        }
    }
}

impl MemoryAccess for RandomMemory<'_> {
    fn read(&mut self, _seg: Seg, _ea: u64, size: u8) -> Result<u64, AccessError> {
        self.access(size)?;
        Ok(self.rng.interesting_u64())
    }
    fn write(&mut self, _seg: Seg, _ea: u64, size: u8, _value: u64) -> Result<(), AccessError> {
        self.access(size)
    }
}

fn random_regs(rng: &mut Rng) -> Regs {
    let mut r = Regs::default();
    for g in r.gpr.iter_mut() {
        *g = rng.interesting_u64();
    }
    // RCX small sometimes, so REP strings finish inside one batch.
    if rng.bool() {
        r.gpr[1] = rng.below(3 * REP_BATCH);
    }
    r.rip = rng.interesting_u64();
    r.rflags = rng.next_u64() & 0x3f_7fd7 | 2;
    r
}

pub fn one(rng: &mut Rng) {
    let mode = *rng.pick(&[CpuMode::Bits16, CpuMode::Bits32, CpuMode::Bits64]);
    let bytes = instruction_bytes(rng, mode);

    let length = instruction_length(&bytes, mode);
    if let Ok(n) = length {
        assert!(n >= 1 && n <= bytes.len() && n <= MAX_INSN_LEN, "length {n} of {} bytes", bytes.len());
    }
    if let Ok(s) = decode_string_io(&bytes, mode) {
        assert!(s.len >= 1 && s.len <= bytes.len().min(MAX_INSN_LEN));
        assert!(matches!(s.size, 1 | 2 | 4) && matches!(s.addr_bits, 16 | 32 | 64));
    }
    if let Some(m) = decode_mov_dr(&bytes, mode) {
        assert!(m.len >= 1 && m.len <= bytes.len().min(MAX_INSN_LEN));
        assert!(m.gpr < 16);
    }

    let Ok(insn) = decode(&bytes, mode) else { return };
    assert!(insn.len as usize >= 1 && insn.len as usize <= bytes.len().min(MAX_INSN_LEN), "decoded length {}", insn.len);
    assert!(matches!(insn.size, 1 | 2 | 4 | 8) && matches!(insn.addr_size, 2 | 4 | 8));
    assert!(insn.mem.is_some() || insn.is_string(), "an MMIO instruction without a memory operand: {insn:?}");

    let mut regs = random_regs(rng);
    let before = regs;
    let mut mem = RandomMemory { rng, accesses: 0 };
    let result = execute(&insn, &mut regs, &mut mem);
    let accesses = mem.accesses;
    // A REP string does at most one batch per call (two accesses each).
    assert!(accesses <= 2 * REP_BATCH, "{accesses} memory accesses in one call");
    if result.is_ok() {
        let next = insn.next_rip(before.rip);
        assert!(regs.rip == next || regs.rip == before.rip, "RIP {:#x} after {:#x} (len {})", regs.rip, before.rip, insn.len);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_decoder_and_emulator() {
        crate::run("decoder", super::one);
    }
}
