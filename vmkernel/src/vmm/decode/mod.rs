//! x86 instruction decoding for MMIO exits.
//!
//! On a nested-page fault in an MMIO range the VMM knows the faulting
//! guest-physical address but not what the instruction wanted to do: QEMU's
//! SVM offers neither decode assists nor nRIP save, so the VMM fetches up to
//! 15 bytes at the guest RIP and decodes them here. [`decode`] understands
//! the forms compilers and drivers use for device registers (MOV, MOVZX/MOVSX,
//! MOV moffs, string MOVS/STOS/LODS, the ALU group, TEST, XCHG, BT*, NOT/NEG,
//! MOVNTI); [`execute`](exec::execute) applies one to a [`Regs`] file through
//! a [`MemoryAccess`] callback. [`instruction_length`](length::instruction_length)
//! gives the length of any legacy-encoded instruction for the exits that
//! need a next RIP (CPUID, RDMSR, HLT, IN/OUT, VMMCALL, ...).
//!
//! Names follow the Intel SDM vol. 2 (ModRM, SIB, REX.W/R/X/B, moffs, Eb/Ev/Gv).

mod exec;
mod length;
mod string_io;
#[cfg(test)]
mod tests;

pub use exec::{AccessError, ExecError, MemoryAccess, REP_BATCH, execute, read_reg, rflags, write_reg};
pub use length::instruction_length;
pub use string_io::{StringIo, decode_string_io};

/// Longest legal x86 instruction (SDM vol. 2 §2.3.11).
pub const MAX_INSN_LEN: usize = 15;

/// Default operand/address size of the code segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Real mode, virtual-8086 mode, or a 16-bit protected-mode code segment.
    Bits16,
    /// 32-bit protected mode or compatibility mode with CS.D=1.
    Bits32,
    /// 64-bit mode (EFER.LMA=1 and CS.L=1).
    Bits64,
}

impl CpuMode {
    /// The mode from the architectural state: CR0.PE, EFER.LMA, RFLAGS.VM and
    /// the CS descriptor's L and D bits.
    pub fn from_state(cr0_pe: bool, efer_lma: bool, rflags_vm: bool, cs_l: bool, cs_d: bool) -> CpuMode {
        if !cr0_pe || rflags_vm {
            CpuMode::Bits16
        } else if efer_lma && cs_l {
            CpuMode::Bits64
        } else if cs_d {
            CpuMode::Bits32
        } else {
            CpuMode::Bits16
        }
    }
}

/// Segment registers in the SDM's encoding order (ES=0 ... GS=5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

/// General-purpose register numbers (ModRM/REX encoding).
pub mod gpr {
    pub const RAX: u8 = 0;
    pub const RCX: u8 = 1;
    pub const RDX: u8 = 2;
    pub const RBX: u8 = 3;
    pub const RSP: u8 = 4;
    pub const RBP: u8 = 5;
    pub const RSI: u8 = 6;
    pub const RDI: u8 = 7;
    pub const R8: u8 = 8;
    pub const R15: u8 = 15;
}

/// The guest register file the emulation reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15.
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
}

/// A register operand: number 0–15 and, for byte operands encoded without
/// REX, whether it names AH/CH/DH/BH (bits 15:8 of register `num`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    pub num: u8,
    pub high8: bool,
}

impl Reg {
    const fn new(num: u8) -> Reg {
        Reg { num, high8: false }
    }
}

/// Base of a memory operand's effective address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    Reg(u8),
    /// RIP-relative (64-bit mode, ModRM mod=00 r/m=101): relative to the
    /// address of the next instruction.
    Rip,
}

/// A memory operand: `seg:[base + index*scale + disp]`, truncated to the
/// address size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    pub seg: Seg,
    pub base: Option<Base>,
    /// Index register and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    pub disp: i64,
    /// Address size in bytes (2, 4, 8).
    pub addr_size: u8,
}

impl MemOperand {
    /// The effective address (offset within `seg`). `next_rip` is the RIP
    /// after the instruction, used by RIP-relative operands.
    pub fn effective_address(&self, regs: &Regs, next_rip: u64) -> u64 {
        let mut ea = self.disp as u64;
        match self.base {
            Some(Base::Reg(r)) => ea = ea.wrapping_add(regs.gpr[r as usize & 15]),
            Some(Base::Rip) => ea = ea.wrapping_add(next_rip),
            None => {}
        }
        if let Some((i, scale)) = self.index {
            ea = ea.wrapping_add(regs.gpr[i as usize & 15].wrapping_mul(scale as u64));
        }
        mask(ea, self.addr_size)
    }
}

/// The value of an operand of `size` bytes: the low bits of `v`.
pub(crate) fn mask(v: u64, size: u8) -> u64 {
    if size >= 8 { v } else { v & ((1u64 << (size as u32 * 8)) - 1) }
}

/// What an instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Mov,
    /// Zero-extending move from `src_size` to `size`.
    Movzx,
    /// Sign-extending move from `src_size` to `size`.
    Movsx,
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
    Not,
    Neg,
    Xchg,
    Bt,
    Bts,
    Btr,
    Btc,
    /// MOVS: `[ES:rDI] ← [seg:rSI]`.
    Movs,
    /// STOS: `[ES:rDI] ← rAX`.
    Stos,
    /// LODS: `rAX ← [seg:rSI]`.
    Lods,
    /// CMPS: flags of `[seg:rSI] − [ES:rDI]`.
    Cmps,
    /// SCAS: flags of `rAX − [ES:rDI]`.
    Scas,
}

impl Op {
    /// Whether the destination is written (CMP, TEST and BT only set flags).
    pub fn writes_dst(self) -> bool {
        !matches!(self, Op::Cmp | Op::Test | Op::Bt | Op::Cmps | Op::Scas)
    }
}

/// An operand of a decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The instruction's memory operand ([`Instruction::mem`]).
    Mem,
    Reg(Reg),
    /// Immediate, already sign-extended to the operand size as the SDM says
    /// (imm8 of 83, imm32 of REX.W 81/C7), kept in the low `size` bytes.
    Imm(u64),
    /// None (NOT/NEG source, string operands).
    None,
}

/// REP prefix state of a string instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rep {
    None,
    /// F3 (REP/REPE).
    Rep,
    /// F2 (REPNE; for MOVS/STOS/LODS it repeats like F3; CMPS/SCAS stop
    /// when ZF is set, and with F3 when it is clear).
    Repne,
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Length in bytes, prefixes included.
    pub len: u8,
    pub op: Op,
    /// Operand size in bytes (1, 2, 4, 8): of the destination for MOVZX/MOVSX.
    pub size: u8,
    /// Size of the source operand (differs from `size` for MOVZX/MOVSX only).
    pub src_size: u8,
    /// Address size in bytes (2, 4, 8).
    pub addr_size: u8,
    pub dst: Operand,
    pub src: Operand,
    /// The memory operand. For string instructions it is the DS:rSI side for
    /// MOVS/LODS and the ES:rDI side for STOS; see [`Instruction::string_dst`].
    pub mem: Option<MemOperand>,
    pub rep: Rep,
    pub lock: bool,
    pub mode: CpuMode,
}

impl Instruction {
    /// RIP after this instruction (wrapping as the mode's IP width does).
    pub fn next_rip(&self, rip: u64) -> u64 {
        let n = rip.wrapping_add(self.len as u64);
        match self.mode {
            CpuMode::Bits64 => n,
            CpuMode::Bits32 => n & 0xffff_ffff,
            // 16-bit code segment: IP wraps at 64 KiB.
            CpuMode::Bits16 => n & 0xffff,
        }
    }

    /// Effective address of the memory operand with the registers as they
    /// are now (before execution), for checking against the fault address.
    pub fn effective_address(&self, regs: &Regs) -> Option<u64> {
        self.mem.map(|m| m.effective_address(regs, self.next_rip(regs.rip)))
    }

    /// Whether this is a string instruction (MOVS/STOS/LODS/CMPS/SCAS).
    pub fn is_string(&self) -> bool {
        matches!(self.op, Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas)
    }

    /// The ES:rDI second operand of MOVS and CMPS (ES cannot be overridden).
    pub fn string_dst(&self) -> Option<MemOperand> {
        match self.op {
            Op::Movs | Op::Cmps => Some(MemOperand {
                seg: Seg::Es,
                base: Some(Base::Reg(gpr::RDI)),
                index: None,
                disp: 0,
                addr_size: self.addr_size,
            }),
            _ => None,
        }
    }
}

/// Why bytes could not be decoded. The VMM injects #UD for
/// [`DecodeError::Invalid`] and stops the VM with a message for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does: fetch more.
    Truncated,
    /// More than 15 bytes (#GP on real hardware).
    TooLong,
    /// An encoding the CPU itself rejects with #UD (LOCK on a non-lockable
    /// instruction or on a register destination, a reserved /reg, ...).
    Invalid,
    /// A valid instruction the MMIO emulator does not handle.
    Unsupported { opcode: u16 },
    /// The instruction has no memory operand, so it cannot have caused an
    /// MMIO exit (register-form ModRM, immediate-only forms).
    NoMemoryOperand,
}

/// Prefixes of one instruction.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Prefixes {
    pub opsize: bool,
    pub addrsize: bool,
    pub lock: bool,
    pub rep: u8, // 0, 0xF2 or 0xF3: the last one wins
    pub seg: Option<Seg>,
    /// The REX byte if one immediately precedes the opcode (64-bit mode).
    pub rex: Option<u8>,
    /// Bytes consumed by prefixes (REX included).
    pub len: usize,
}

impl Prefixes {
    pub fn rex_w(&self) -> bool {
        self.rex.is_some_and(|r| r & 8 != 0)
    }
    pub fn rex_r(&self) -> u8 {
        self.rex.map_or(0, |r| (r >> 2) & 1) << 3
    }
    pub fn rex_x(&self) -> u8 {
        self.rex.map_or(0, |r| (r >> 1) & 1) << 3
    }
    pub fn rex_b(&self) -> u8 {
        self.rex.map_or(0, |r| r & 1) << 3
    }
}

/// Reads legacy prefixes and, in 64-bit mode, a REX prefix. A REX byte
/// followed by a legacy prefix is ignored (SDM §2.2.1: REX must immediately
/// precede the opcode).
pub(crate) fn prefixes(bytes: &[u8], mode: CpuMode) -> Result<Prefixes, DecodeError> {
    let mut p = Prefixes::default();
    let mut i = 0;
    loop {
        if i >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *bytes.get(i).ok_or(DecodeError::Truncated)?;
        match b {
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0xF0 => p.lock = true,
            0xF2 | 0xF3 => p.rep = b,
            0x26 => p.seg = Some(Seg::Es),
            0x2E => p.seg = Some(Seg::Cs),
            0x36 => p.seg = Some(Seg::Ss),
            0x3E => p.seg = Some(Seg::Ds),
            0x64 => p.seg = Some(Seg::Fs),
            0x65 => p.seg = Some(Seg::Gs),
            0x40..=0x4F if mode == CpuMode::Bits64 => {
                p.rex = Some(b);
                i += 1;
                // Only a REX immediately before the opcode counts.
                let next = *bytes.get(i).ok_or(DecodeError::Truncated)?;
                if matches!(next, 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x40..=0x4F) {
                    p.rex = None;
                    continue;
                }
                p.len = i;
                return Ok(p);
            }
            _ => {
                p.len = i;
                return Ok(p);
            }
        }
        i += 1;
    }
}

/// Operand size for "v"-sized operands.
pub(crate) fn operand_size(p: &Prefixes, mode: CpuMode) -> u8 {
    match mode {
        CpuMode::Bits64 if p.rex_w() => 8,
        CpuMode::Bits64 | CpuMode::Bits32 => {
            if p.opsize {
                2
            } else {
                4
            }
        }
        CpuMode::Bits16 => {
            if p.opsize {
                4
            } else {
                2
            }
        }
    }
}

pub(crate) fn address_size(p: &Prefixes, mode: CpuMode) -> u8 {
    match (mode, p.addrsize) {
        (CpuMode::Bits64, false) => 8,
        (CpuMode::Bits64, true) | (CpuMode::Bits32, false) | (CpuMode::Bits16, true) => 4,
        (CpuMode::Bits32, true) | (CpuMode::Bits16, false) => 2,
    }
}

/// A cursor over the instruction bytes that enforces the 15-byte limit.
pub(crate) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl Cursor<'_> {
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    /// Little-endian unsigned value of `n` bytes.
    pub fn uint(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for k in 0..n {
            v |= (self.u8()? as u64) << (8 * k as u32);
        }
        Ok(v)
    }
    /// Little-endian value of `n` bytes, sign-extended to 64 bits.
    pub fn int(&mut self, n: u8) -> Result<i64, DecodeError> {
        let v = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((v << shift) as i64) >> shift)
    }
}

/// The ModRM byte's fields and, for a memory form, the decoded operand.
pub(crate) struct ModRm {
    /// ModRM.reg (without REX.R).
    pub reg: u8,
    /// The memory operand; `None` for a register form (mod=11).
    pub mem: Option<MemOperand>,
}

/// Decodes ModRM, SIB and displacement (SDM vol. 2 tables 2-1..2-3).
pub(crate) fn modrm(c: &mut Cursor, p: &Prefixes, mode: CpuMode) -> Result<ModRm, DecodeError> {
    let b = c.u8()?;
    let md = b >> 6;
    let reg = (b >> 3) & 7;
    let rm = b & 7;
    if md == 3 {
        return Ok(ModRm { reg, mem: None });
    }
    let addr_size = address_size(p, mode);
    if addr_size == 2 {
        // 16-bit addressing: fixed base/index pairs, no SIB.
        let (base, index): (Option<u8>, Option<u8>) = match rm {
            0 => (Some(gpr::RBX), Some(gpr::RSI)),
            1 => (Some(gpr::RBX), Some(gpr::RDI)),
            2 => (Some(gpr::RBP), Some(gpr::RSI)),
            3 => (Some(gpr::RBP), Some(gpr::RDI)),
            4 => (Some(gpr::RSI), None),
            5 => (Some(gpr::RDI), None),
            6 if md == 0 => (None, None),
            6 => (Some(gpr::RBP), None),
            _ => (Some(gpr::RBX), None),
        };
        let disp = match md {
            0 if rm == 6 => c.int(2)?,
            0 => 0,
            1 => c.int(1)?,
            _ => c.int(2)?,
        };
        let seg = p.seg.unwrap_or(if base == Some(gpr::RBP) { Seg::Ss } else { Seg::Ds });
        let mem = MemOperand { seg, base: base.map(Base::Reg), index: index.map(|i| (i, 1)), disp, addr_size };
        return Ok(ModRm { reg, mem: Some(mem) });
    }
    let base: Option<Base>;
    let mut index = None;
    if rm == 4 {
        let sib = c.u8()?;
        let scale = 1u8 << (sib >> 6);
        let idx = ((sib >> 3) & 7) | p.rex_x();
        if idx != 4 {
            index = Some((idx, scale));
        }
        let b = sib & 7;
        base = if b == 5 && md == 0 { None } else { Some(Base::Reg(b | p.rex_b())) };
    } else if rm == 5 && md == 0 {
        base = if mode == CpuMode::Bits64 { Some(Base::Rip) } else { None };
    } else {
        base = Some(Base::Reg(rm | p.rex_b()));
    }
    let disp = match md {
        0 if base.is_none() || base == Some(Base::Rip) => c.int(4)?,
        0 => 0,
        1 => c.int(1)?,
        _ => c.int(4)?,
    };
    // SS is the default segment for rSP/rBP bases; R12/R13 (REX.B) use DS.
    let seg = p.seg.unwrap_or(match base {
        Some(Base::Reg(gpr::RSP)) | Some(Base::Reg(gpr::RBP)) => Seg::Ss,
        _ => Seg::Ds,
    });
    if base == Some(Base::Rip) {
        // RIP-relative ignores any SIB; only reachable without SIB.
        index = None;
    }
    Ok(ModRm { reg, mem: Some(MemOperand { seg, base, index, disp, addr_size }) })
}

/// A general-purpose register operand of `size` bytes numbered `num`
/// (REX extension included): without any REX, byte registers 4–7 are
/// AH/CH/DH/BH.
pub(crate) fn reg_operand(num: u8, size: u8, p: &Prefixes) -> Reg {
    if size == 1 && p.rex.is_none() && (4..8).contains(&num) {
        Reg { num: num - 4, high8: true }
    } else {
        Reg::new(num)
    }
}

/// Decodes one instruction from `bytes` (up to 15 fetched bytes) for the
/// MMIO emulator. The result always has a memory operand.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<Instruction, DecodeError> {
    let p = prefixes(bytes, mode)?;
    let mut c = Cursor { bytes, pos: p.len };
    let opcode = c.u8()?;
    let osize = operand_size(&p, mode);
    let asize = address_size(&p, mode);
    let rep = match p.rep {
        0xF3 => Rep::Rep,
        0xF2 => Rep::Repne,
        _ => Rep::None,
    };
    let mut insn = Instruction {
        len: 0,
        op: Op::Mov,
        size: osize,
        src_size: osize,
        addr_size: asize,
        dst: Operand::Mem,
        src: Operand::None,
        mem: None,
        rep: Rep::None,
        lock: p.lock,
        mode,
    };
    // Whether LOCK is architecturally allowed (memory destination of a
    // read-modify-write instruction); checked at the end.
    let mut lockable = false;

    // Fetches ModRM and requires its memory form.
    fn mem_modrm(c: &mut Cursor, p: &Prefixes, mode: CpuMode) -> Result<(u8, MemOperand), DecodeError> {
        let m = modrm(c, p, mode)?;
        match m.mem {
            Some(mem) => Ok((m.reg, mem)),
            None => Err(DecodeError::NoMemoryOperand),
        }
    }
    let imm_size = |size: u8| if size == 8 { 4 } else { size };

    match opcode {
        // ALU Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev: ADD OR ADC SBB AND SUB XOR CMP.
        0x00..=0x3F if opcode & 7 < 4 => {
            const OPS: [Op; 8] = [Op::Add, Op::Or, Op::Adc, Op::Sbb, Op::And, Op::Sub, Op::Xor, Op::Cmp];
            let op = OPS[(opcode >> 3) as usize];
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            let r = Operand::Reg(reg_operand(reg | p.rex_r(), size, &p));
            insn.op = op;
            insn.size = size;
            insn.mem = Some(mem);
            if opcode & 2 == 0 {
                insn.dst = Operand::Mem;
                insn.src = r;
                lockable = op != Op::Cmp;
            } else {
                insn.dst = r;
                insn.src = Operand::Mem;
            }
        }
        0x04 | 0x05 | 0x0C | 0x0D | 0x14 | 0x15 | 0x1C | 0x1D | 0x24 | 0x25 | 0x2C | 0x2D | 0x34 | 0x35
        | 0x3C | 0x3D | 0xA8 | 0xA9 => return Err(DecodeError::NoMemoryOperand),
        // Group 1: ALU Eb,Ib / Ev,Iz / Eb,Ib (82, not in 64-bit mode) / Ev,Ib.
        0x80..=0x83 => {
            if opcode == 0x82 && mode == CpuMode::Bits64 {
                return Err(DecodeError::Invalid);
            }
            const OPS: [Op; 8] = [Op::Add, Op::Or, Op::Adc, Op::Sbb, Op::And, Op::Sub, Op::Xor, Op::Cmp];
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            let imm = if opcode == 0x81 { c.int(imm_size(size))? } else { c.int(1)? };
            insn.op = OPS[reg as usize];
            insn.size = size;
            insn.mem = Some(mem);
            insn.src = Operand::Imm(mask(imm as u64, size));
            lockable = insn.op != Op::Cmp;
        }
        // TEST Eb,Gb / Ev,Gv; XCHG Eb,Gb / Ev,Gv.
        0x84..=0x87 => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            insn.op = if opcode < 0x86 { Op::Test } else { Op::Xchg };
            insn.size = size;
            insn.mem = Some(mem);
            insn.src = Operand::Reg(reg_operand(reg | p.rex_r(), size, &p));
            lockable = insn.op == Op::Xchg;
        }
        // MOV Eb,Gb / Ev,Gv / Gb,Eb / Gv,Ev.
        0x88..=0x8B => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            let r = Operand::Reg(reg_operand(reg | p.rex_r(), size, &p));
            insn.size = size;
            insn.mem = Some(mem);
            if opcode < 0x8A {
                insn.src = r;
            } else {
                insn.dst = r;
                insn.src = Operand::Mem;
            }
        }
        // MOV AL/eAX, moffs and moffs, AL/eAX: the offset is address-sized.
        0xA0..=0xA3 => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let off = c.uint(asize)?;
            let mem = MemOperand { seg: p.seg.unwrap_or(Seg::Ds), base: None, index: None, disp: off as i64, addr_size: asize };
            let r = Operand::Reg(Reg::new(gpr::RAX));
            insn.size = size;
            insn.mem = Some(mem);
            if opcode < 0xA2 {
                insn.dst = r;
                insn.src = Operand::Mem;
            } else {
                insn.src = r;
            }
        }
        // String instructions; F2 and F3 both mean REP for MOVS/STOS/LODS,
        // REPNE and REPE for CMPS/SCAS.
        0xA4..=0xA7 | 0xAA..=0xAF => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            insn.size = size;
            insn.rep = rep;
            let si = MemOperand {
                seg: p.seg.unwrap_or(Seg::Ds),
                base: Some(Base::Reg(gpr::RSI)),
                index: None,
                disp: 0,
                addr_size: asize,
            };
            let di = MemOperand { seg: Seg::Es, base: Some(Base::Reg(gpr::RDI)), index: None, disp: 0, addr_size: asize };
            match opcode {
                0xA4 | 0xA5 => {
                    insn.op = Op::Movs;
                    insn.mem = Some(si);
                    insn.src = Operand::Mem;
                    insn.dst = Operand::None; // see string_dst()
                }
                0xA6 | 0xA7 => {
                    insn.op = Op::Cmps;
                    insn.mem = Some(si);
                    insn.src = Operand::Mem;
                    insn.dst = Operand::None; // see string_dst()
                }
                0xAA | 0xAB => {
                    insn.op = Op::Stos;
                    insn.mem = Some(di);
                    insn.src = Operand::Reg(Reg::new(gpr::RAX));
                }
                0xAE | 0xAF => {
                    insn.op = Op::Scas;
                    insn.mem = Some(di);
                    insn.src = Operand::Mem;
                    insn.dst = Operand::Reg(Reg::new(gpr::RAX));
                }
                _ => {
                    insn.op = Op::Lods;
                    insn.mem = Some(si);
                    insn.src = Operand::Mem;
                    insn.dst = Operand::Reg(Reg::new(gpr::RAX));
                }
            }
        }
        // MOV Eb,Ib / Ev,Iz (group 11: only /0 is defined).
        0xC6 | 0xC7 => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            if reg != 0 {
                return Err(DecodeError::Invalid);
            }
            let imm = c.int(imm_size(size))?;
            insn.size = size;
            insn.mem = Some(mem);
            insn.src = Operand::Imm(mask(imm as u64, size));
        }
        // Group 3: TEST Ib/Iz (/0, /1 is an alias), NOT (/2), NEG (/3).
        0xF6 | 0xF7 => {
            let size = if opcode & 1 == 0 { 1 } else { osize };
            let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
            insn.size = size;
            insn.mem = Some(mem);
            match reg {
                0 | 1 => {
                    let imm = c.int(imm_size(size))?;
                    insn.op = Op::Test;
                    insn.src = Operand::Imm(mask(imm as u64, size));
                }
                2 => {
                    insn.op = Op::Not;
                    lockable = true;
                }
                3 => {
                    insn.op = Op::Neg;
                    lockable = true;
                }
                _ => return Err(DecodeError::Unsupported { opcode: opcode as u16 }),
            }
        }
        0x0F => {
            let op2 = c.u8()?;
            let full = 0x0F00 | op2 as u16;
            // None of these have a meaning with a mandatory F2/F3 prefix.
            if p.rep != 0 {
                return Err(DecodeError::Unsupported { opcode: full });
            }
            match op2 {
                0xB6 | 0xB7 | 0xBE | 0xBF => {
                    let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
                    insn.op = if op2 < 0xBE { Op::Movzx } else { Op::Movsx };
                    insn.src_size = if op2 & 1 == 0 { 1 } else { 2 };
                    insn.size = osize;
                    insn.mem = Some(mem);
                    insn.dst = Operand::Reg(Reg::new(reg | p.rex_r()));
                    insn.src = Operand::Mem;
                }
                0xA3 | 0xAB | 0xB3 | 0xBB => {
                    let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
                    insn.op = match op2 {
                        0xA3 => Op::Bt,
                        0xAB => Op::Bts,
                        0xB3 => Op::Btr,
                        _ => Op::Btc,
                    };
                    insn.mem = Some(mem);
                    insn.src = Operand::Reg(Reg::new(reg | p.rex_r()));
                    lockable = insn.op != Op::Bt;
                }
                0xBA => {
                    let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
                    insn.op = match reg {
                        4 => Op::Bt,
                        5 => Op::Bts,
                        6 => Op::Btr,
                        7 => Op::Btc,
                        _ => return Err(DecodeError::Invalid),
                    };
                    let imm = c.uint(1)?;
                    insn.mem = Some(mem);
                    insn.src = Operand::Imm(imm);
                    lockable = insn.op != Op::Bt;
                }
                // MOVNTI My,Gy: a non-temporal store, 32 or 64 bits.
                0xC3 => {
                    if p.opsize {
                        return Err(DecodeError::Invalid);
                    }
                    let (reg, mem) = mem_modrm(&mut c, &p, mode)?;
                    insn.size = if p.rex_w() { 8 } else { 4 };
                    insn.src_size = insn.size;
                    insn.mem = Some(mem);
                    insn.src = Operand::Reg(Reg::new(reg | p.rex_r()));
                }
                _ => return Err(DecodeError::Unsupported { opcode: full }),
            }
        }
        _ => return Err(DecodeError::Unsupported { opcode: opcode as u16 }),
    }
    if insn.op != Op::Movzx && insn.op != Op::Movsx {
        insn.src_size = insn.size;
    }
    // LOCK is legal only with a memory destination of a read-modify-write
    // instruction; every decoded form here has its memory operand in the
    // destination when `lockable` is set.
    if p.lock && !lockable {
        return Err(DecodeError::Invalid);
    }
    insn.len = c.pos as u8;
    Ok(insn)
}
