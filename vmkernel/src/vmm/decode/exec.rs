//! Executing a decoded MMIO instruction against the register file.

use super::{Instruction, MemOperand, Op, Operand, Reg, Regs, Rep, Seg, gpr, mask};

/// RFLAGS bits (SDM vol. 1 §3.4.3).
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    /// The six status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Why a memory access of the emulated instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    /// The guest must see an exception (e.g. #PF with CR2 on a string
    /// operand's RAM side, #GP for a segment limit violation).
    Exception { vector: u8, error_code: Option<u32>, cr2: Option<u64> },
    /// Nothing answers at this address and the VMM wants to stop.
    Unhandled,
}

/// Memory as the emulated instruction sees it. `ea` is the effective address
/// (offset within `seg`); the VMM adds the segment base, translates through
/// the guest page tables and dispatches to the device or to guest RAM (a
/// MOVS between RAM and MMIO touches both).
pub trait MemoryAccess {
    fn read(&mut self, seg: Seg, ea: u64, size: u8) -> Result<u64, AccessError>;
    fn write(&mut self, seg: Seg, ea: u64, size: u8, value: u64) -> Result<(), AccessError>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecError {
    Access(AccessError),
    /// The decoded instruction does not fit the executor (a decoder bug,
    /// never a guest's doing): the VMM stops that VM, nothing else.
    Malformed,
}

impl From<AccessError> for ExecError {
    fn from(e: AccessError) -> Self {
        ExecError::Access(e)
    }
}

/// Iterations of a REP string instruction done per call. When the count is
/// not exhausted RIP stays on the instruction, so the guest re-executes it
/// (and may take interrupts in between, as on hardware).
pub const REP_BATCH: u64 = 4096;

/// Reads a register operand of `size` bytes.
pub fn read_reg(regs: &Regs, r: Reg, size: u8) -> u64 {
    let v = regs.gpr[r.num as usize & 15];
    if r.high8 { (v >> 8) & 0xff } else { mask(v, size) }
}

/// Writes a register operand with the architectural rules: 8- and 16-bit
/// writes merge into the old value, 32-bit writes zero bits 63:32.
pub fn write_reg(regs: &mut Regs, r: Reg, size: u8, value: u64) {
    let slot = &mut regs.gpr[r.num as usize & 15];
    let old = *slot;
    *slot = match (size, r.high8) {
        (1, true) => (old & !0xff00) | ((value & 0xff) << 8),
        (1, false) => (old & !0xff) | (value & 0xff),
        (2, _) => (old & !0xffff) | (value & 0xffff),
        (4, _) => value & 0xffff_ffff,
        _ => value,
    };
}

fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

fn sign_extend(v: u64, size: u8) -> u64 {
    let shift = 64 - size as u32 * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// SF, ZF and PF of a result (PF: even parity of the low byte).
fn szp(res: u64, size: u8) -> u64 {
    let mut f = 0;
    if res & sign_bit(size) != 0 {
        f |= rflags::SF;
    }
    if res == 0 {
        f |= rflags::ZF;
    }
    if (res as u8).count_ones().is_multiple_of(2) {
        f |= rflags::PF;
    }
    f
}

/// The result and status flags of an ALU operation on `size`-byte values.
/// Operations that are not ALU operations compute nothing (flags 0).
fn alu(op: Op, a: u64, b: u64, size: u8, flags_in: u64) -> (u64, u64) {
    let bits = size as u32 * 8;
    let carry_in = (flags_in & rflags::CF != 0) as u128;
    let m = mask(u64::MAX, size) as u128;
    match op {
        Op::Add | Op::Adc => {
            let c = if op == Op::Adc { carry_in } else { 0 };
            let full = a as u128 + b as u128 + c;
            let res = (full & m) as u64;
            let mut f = szp(res, size);
            if full >> bits != 0 {
                f |= rflags::CF;
            }
            if (a ^ res) & (b ^ res) & sign_bit(size) != 0 {
                f |= rflags::OF;
            }
            if (a ^ b ^ res) & 0x10 != 0 {
                f |= rflags::AF;
            }
            (res, f)
        }
        Op::Sub | Op::Sbb | Op::Cmp | Op::Neg | Op::Cmps | Op::Scas => {
            let c = if op == Op::Sbb { carry_in } else { 0 };
            let res = ((a as u128).wrapping_sub(b as u128).wrapping_sub(c) & m) as u64;
            let mut f = szp(res, size);
            if (a as u128) < b as u128 + c {
                f |= rflags::CF;
            }
            if (a ^ b) & (a ^ res) & sign_bit(size) != 0 {
                f |= rflags::OF;
            }
            if (a ^ b ^ res) & 0x10 != 0 {
                f |= rflags::AF;
            }
            (res, f)
        }
        // Logical operations clear CF and OF; AF is undefined (cleared here).
        Op::And | Op::Test => {
            let res = a & b;
            (res, szp(res, size))
        }
        Op::Or => {
            let res = a | b;
            (res, szp(res, size))
        }
        Op::Xor => {
            let res = a ^ b;
            (res, szp(res, size))
        }
        _ => (0, 0),
    }
}

fn read_operand(
    insn: &Instruction,
    opnd: Operand,
    size: u8,
    regs: &Regs,
    ea: u64,
    mem: &mut dyn MemoryAccess,
) -> Result<u64, ExecError> {
    Ok(match opnd {
        Operand::Mem => mem.read(insn.mem.map_or(Seg::Ds, |m| m.seg), ea, size)?,
        Operand::Reg(r) => read_reg(regs, r, size),
        Operand::Imm(v) => mask(v, size),
        Operand::None => 0,
    })
}

/// Performs `insn` (decoded at `regs.rip`): memory through `mem`, register
/// writes with the architectural extension rules, status flags for the
/// arithmetic and logical operations, and RIP advanced by the length.
pub fn execute(insn: &Instruction, regs: &mut Regs, mem: &mut dyn MemoryAccess) -> Result<(), ExecError> {
    if insn.is_string() {
        return string(insn, regs, mem);
    }
    let next_rip = insn.next_rip(regs.rip);
    let m: MemOperand = insn.mem.ok_or(ExecError::Malformed)?;
    let ea = m.effective_address(regs, next_rip);
    let size = insn.size;
    match insn.op {
        Op::Mov => {
            let v = read_operand(insn, insn.src, size, regs, ea, mem)?;
            match insn.dst {
                Operand::Mem => mem.write(m.seg, ea, size, v)?,
                Operand::Reg(r) => write_reg(regs, r, size, v),
                _ => {}
            }
        }
        Op::Movzx | Op::Movsx => {
            let v = mem.read(m.seg, ea, insn.src_size)?;
            let v = if insn.op == Op::Movsx { mask(sign_extend(v, insn.src_size), size) } else { v };
            if let Operand::Reg(r) = insn.dst {
                write_reg(regs, r, size, v);
            }
        }
        Op::Add | Op::Or | Op::Adc | Op::Sbb | Op::And | Op::Sub | Op::Xor | Op::Cmp | Op::Test => {
            let a = read_operand(insn, insn.dst, size, regs, ea, mem)?;
            let b = read_operand(insn, insn.src, size, regs, ea, mem)?;
            let (res, f) = alu(insn.op, a, b, size, regs.rflags);
            if insn.op.writes_dst() {
                match insn.dst {
                    Operand::Mem => mem.write(m.seg, ea, size, res)?,
                    Operand::Reg(r) => write_reg(regs, r, size, res),
                    _ => {}
                }
            }
            regs.rflags = (regs.rflags & !rflags::STATUS) | f;
        }
        Op::Not => {
            let a = mem.read(m.seg, ea, size)?;
            mem.write(m.seg, ea, size, mask(!a, size))?;
        }
        Op::Neg => {
            let a = mem.read(m.seg, ea, size)?;
            let (res, mut f) = alu(Op::Neg, 0, a, size, 0);
            // NEG: CF is set unless the operand was 0 (the SUB rule gives that).
            f = (f & !rflags::CF) | if a != 0 { rflags::CF } else { 0 };
            mem.write(m.seg, ea, size, res)?;
            regs.rflags = (regs.rflags & !rflags::STATUS) | f;
        }
        Op::Xchg => {
            let Operand::Reg(r) = insn.src else { return Err(ExecError::Malformed) };
            let old = mem.read(m.seg, ea, size)?;
            mem.write(m.seg, ea, size, read_reg(regs, r, size))?;
            write_reg(regs, r, size, old);
        }
        Op::Bt | Op::Bts | Op::Btr | Op::Btc => {
            let bits = size as u64 * 8;
            // A register bit offset is signed and may reach outside the
            // operand: the access moves by whole operand-sized units (SDM
            // "BT—Bit Test", bit-base addressing). An immediate is taken
            // modulo the operand width.
            let (addr, bit) = match insn.src {
                Operand::Reg(r) => {
                    let off = sign_extend(read_reg(regs, r, size), size) as i64;
                    let unit = off >> bits.trailing_zeros();
                    let addr = mask(ea.wrapping_add((unit * size as i64) as u64), m.addr_size);
                    (addr, (off as u64) & (bits - 1))
                }
                Operand::Imm(i) => (ea, i & (bits - 1)),
                _ => return Err(ExecError::Malformed),
            };
            let v = mem.read(m.seg, addr, size)?;
            let was = (v >> bit) & 1;
            let new = match insn.op {
                Op::Bts => v | (1 << bit),
                Op::Btr => v & !(1 << bit),
                Op::Btc => v ^ (1 << bit),
                _ => v,
            };
            if insn.op != Op::Bt {
                mem.write(m.seg, addr, size, new)?;
            }
            regs.rflags = (regs.rflags & !rflags::CF) | was;
        }
        Op::Movs | Op::Stos | Op::Lods | Op::Cmps | Op::Scas => return Err(ExecError::Malformed),
    }
    regs.rip = next_rip;
    Ok(())
}

/// MOVS/STOS/LODS/CMPS/SCAS, with REP: rSI/rDI/rCX are used and updated
/// at the address size, stepping by the operand size in the direction of
/// DF; CMPS/SCAS set the flags of the comparison and REPE/REPNE end on ZF.
fn string(insn: &Instruction, regs: &mut Regs, mem: &mut dyn MemoryAccess) -> Result<(), ExecError> {
    let asize = insn.addr_size;
    let size = insn.size;
    let rcx = Reg { num: gpr::RCX, high8: false };
    let rsi = Reg { num: gpr::RSI, high8: false };
    let rdi = Reg { num: gpr::RDI, high8: false };
    let rax = Reg { num: gpr::RAX, high8: false };
    let step = if regs.rflags & rflags::DF != 0 { (size as u64).wrapping_neg() } else { size as u64 };
    let src_seg = insn.mem.map_or(Seg::Ds, |m| m.seg);
    let repeated = insn.rep != Rep::None;
    let mut done = 0;
    loop {
        if repeated {
            if read_reg(regs, rcx, asize) == 0 {
                break;
            }
            if done == REP_BATCH {
                // Resume later: RIP stays on the instruction.
                return Ok(());
            }
        }
        let si = read_reg(regs, rsi, asize);
        let di = read_reg(regs, rdi, asize);
        match insn.op {
            Op::Movs => {
                let v = mem.read(src_seg, si, size)?;
                mem.write(Seg::Es, di, size, v)?;
                write_reg(regs, rsi, asize, si.wrapping_add(step));
                write_reg(regs, rdi, asize, di.wrapping_add(step));
            }
            Op::Stos => {
                mem.write(Seg::Es, di, size, read_reg(regs, rax, size))?;
                write_reg(regs, rdi, asize, di.wrapping_add(step));
            }
            Op::Lods => {
                let v = mem.read(src_seg, si, size)?;
                write_reg(regs, rax, size, v);
                write_reg(regs, rsi, asize, si.wrapping_add(step));
            }
            Op::Cmps => {
                let a = mem.read(src_seg, si, size)?;
                let b = mem.read(Seg::Es, di, size)?;
                let (_, f) = alu(Op::Cmps, a, b, size, 0);
                regs.rflags = (regs.rflags & !rflags::STATUS) | f;
                write_reg(regs, rsi, asize, si.wrapping_add(step));
                write_reg(regs, rdi, asize, di.wrapping_add(step));
            }
            Op::Scas => {
                let b = mem.read(Seg::Es, di, size)?;
                let (_, f) = alu(Op::Scas, read_reg(regs, rax, size), b, size, 0);
                regs.rflags = (regs.rflags & !rflags::STATUS) | f;
                write_reg(regs, rdi, asize, di.wrapping_add(step));
            }
            _ => return Err(ExecError::Malformed),
        }
        done += 1;
        if !repeated {
            break;
        }
        let c = read_reg(regs, rcx, asize);
        write_reg(regs, rcx, asize, c.wrapping_sub(1));
        // REPE stops on a difference, REPNE on a match (after the count).
        if matches!(insn.op, Op::Cmps | Op::Scas) {
            let zf = regs.rflags & rflags::ZF != 0;
            if (insn.rep == Rep::Rep) != zf {
                break;
            }
        }
    }
    regs.rip = insn.next_rip(regs.rip);
    Ok(())
}
