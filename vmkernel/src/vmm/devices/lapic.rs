//! Local APIC of one vCPU: the xAPIC register page (MMIO at the
//! IA32_APIC_BASE address, 0xfee00000 by default) and the x2APIC MSRs
//! (0x800-0x8ff) over the same state, plus IA32_APIC_BASE and
//! IA32_TSC_DEADLINE.
//!
//! The model accepts interrupts into IRR ([`Lapic::accept_fixed`]), offers
//! the highest-priority deliverable one ([`Lapic::pending_vector`]) and moves
//! it to ISR when the VMM injects it ([`Lapic::ack`]). Register writes that
//! need other parts of the platform return a [`LapicEffect`]: an IPI to
//! route, or an EOI of a level-triggered vector to broadcast to the IOAPIC.
//! The timer bus clock is 1 GHz (one tick per nanosecond before the divider,
//! as KVM presents it); the TSC-deadline mode converts TSC values with the
//! guest TSC frequency given at creation (guest TSC = ns × kHz / 10⁶).

use super::ioapic::DeliveryMode;

pub const APIC_BASE_DEFAULT: u64 = 0xfee0_0000;
pub const APIC_PAGE_SIZE: u64 = 0x1000;

pub const MSR_APIC_BASE: u32 = 0x1b;
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;
pub const MSR_X2APIC_FIRST: u32 = 0x800;
pub const MSR_X2APIC_LAST: u32 = 0x8ff;

pub const APIC_BASE_BSP: u64 = 1 << 8;
pub const APIC_BASE_EXTD: u64 = 1 << 10;
pub const APIC_BASE_EN: u64 = 1 << 11;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

// Register offsets in the xAPIC page (x2APIC MSR = 0x800 + offset / 16).
pub const REG_ID: u32 = 0x020;
pub const REG_VERSION: u32 = 0x030;
pub const REG_TPR: u32 = 0x080;
pub const REG_APR: u32 = 0x090;
pub const REG_PPR: u32 = 0x0a0;
pub const REG_EOI: u32 = 0x0b0;
pub const REG_RRD: u32 = 0x0c0;
pub const REG_LDR: u32 = 0x0d0;
pub const REG_DFR: u32 = 0x0e0;
pub const REG_SVR: u32 = 0x0f0;
pub const REG_ISR: u32 = 0x100;
pub const REG_TMR: u32 = 0x180;
pub const REG_IRR: u32 = 0x200;
pub const REG_ESR: u32 = 0x280;
pub const REG_ICR_LO: u32 = 0x300;
pub const REG_ICR_HI: u32 = 0x310;
pub const REG_LVT_TIMER: u32 = 0x320;
pub const REG_LVT_THERMAL: u32 = 0x330;
pub const REG_LVT_PERF: u32 = 0x340;
pub const REG_LVT_LINT0: u32 = 0x350;
pub const REG_LVT_LINT1: u32 = 0x360;
pub const REG_LVT_ERROR: u32 = 0x370;
pub const REG_TIMER_ICR: u32 = 0x380;
pub const REG_TIMER_CCR: u32 = 0x390;
pub const REG_TIMER_DCR: u32 = 0x3e0;
pub const REG_SELF_IPI: u32 = 0x3f0;

/// Version 0x14 (integrated APIC), 6 LVT entries (max LVT index 5).
pub const APIC_VERSION: u32 = 0x0005_0014;

pub const SVR_ENABLE: u32 = 1 << 8;
pub const LVT_MASKED: u32 = 1 << 16;
pub const LVT_TIMER_PERIODIC: u32 = 1 << 17;
pub const LVT_TIMER_TSC_DEADLINE: u32 = 2 << 17;

pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
pub const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

/// Nanoseconds per APIC bus clock (before the divider).
pub const BUS_NS_PER_TICK: u64 = 1;
/// Shortest period of the periodic timer mode (as KVM's 200 µs floor): a
/// guest asking for a period of a few nanoseconds gets this instead of an
/// interrupt storm that only costs the host.
pub const MIN_PERIODIC_NS: u64 = 100_000;

const LVT_TIMER: usize = 0;
// 1 and 2 are the thermal and performance-counter entries.
const LVT_LINT0: usize = 3;
const LVT_LINT1: usize = 4;
const LVT_ERROR: usize = 5;
/// Writable bits per LVT entry (timer, thermal, perf, LINT0, LINT1, error).
const LVT_WRITABLE: [u32; 6] = [0x0007_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];

/// The APIC's global state from IA32_APIC_BASE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    Disabled,
    XApic,
    X2Apic,
}

/// Destination shorthand (ICR bits 18..=19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    None,
    SelfOnly,
    All,
    AllButSelf,
}

/// An IPI written to the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub logical: bool,
    /// Level: assert (1) or de-assert (0) — only INIT de-assert uses 0.
    pub assert: bool,
    pub level_triggered: bool,
    pub shorthand: Shorthand,
    /// 8-bit xAPIC destination or 32-bit x2APIC destination.
    pub dest: u32,
    /// The destination is in x2APIC (32-bit) format.
    pub x2apic: bool,
}

/// What a register write asks of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicEffect {
    Ipi(Ipi),
    /// EOI of a level-triggered vector: broadcast it to the IOAPIC(s).
    EoiBroadcast(u8),
}

/// A #GP the VMM must inject for an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

#[derive(Clone, Copy, Debug, Default)]
struct Bits256([u32; 8]);

impl Bits256 {
    fn set(&mut self, v: u8) {
        self.0[v as usize / 32] |= 1 << (v % 32);
    }
    fn clear(&mut self, v: u8) {
        self.0[v as usize / 32] &= !(1 << (v % 32));
    }
    fn get(&self, v: u8) -> bool {
        self.0[v as usize / 32] & (1 << (v % 32)) != 0
    }
    fn highest(&self) -> Option<u8> {
        (0..8).rev().find(|&i| self.0[i] != 0).map(|i| (i * 32 + 31 - self.0[i].leading_zeros() as usize) as u8)
    }
}

#[derive(Clone, Debug)]
pub struct Lapic {
    /// Initial APIC ID (= x2APIC ID); the vCPU index.
    initial_id: u32,
    /// Whether the virtual CPU offers x2APIC (CPUID.1:ECX[21]); without it
    /// IA32_APIC_BASE.EXTD is reserved (#GP), as on hardware.
    x2apic_offered: bool,
    /// IA32_APIC_BASE bits of the base address that exist (below the
    /// virtual CPU's physical-address width).
    base_addr_mask: u64,
    apic_base: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    esr: u32,
    esr_pending: u32,
    icr_lo: u32,
    icr_hi: u32,
    lvt: [u32; 6],
    irr: Bits256,
    isr: Bits256,
    tmr: Bits256,
    timer_initial: u32,
    timer_dcr: u32,
    timer_start: u64,
    timer_next: Option<u64>,
    tsc_deadline: u64,
    tsc_khz: u64,
    /// The guest's TSC at time 0: the guest reads the host's TSC plus its
    /// offset, which did not start at 0 (see `set_tsc_base`).
    tsc_base: u64,
    nmi_pending: bool,
}

impl Lapic {
    /// The LAPIC of vCPU `index` (APIC ID = index), at its power-up state.
    /// vCPU 0 is the bootstrap processor; its LINT0 is left in virtual-wire
    /// mode (ExtINT) and LINT1 as NMI, as PC firmware leaves them, so
    /// guests that only program the 8259 receive its interrupts.
    pub fn new(index: u32, tsc_khz: u64) -> Self {
        let bsp = index == 0;
        let mut l = Lapic {
            initial_id: index,
            x2apic_offered: true,
            base_addr_mask: APIC_BASE_ADDR_MASK,
            apic_base: APIC_BASE_DEFAULT | APIC_BASE_EN | if bsp { APIC_BASE_BSP } else { 0 },
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            esr: 0,
            esr_pending: 0,
            icr_lo: 0,
            icr_hi: 0,
            lvt: [LVT_MASKED; 6],
            irr: Bits256::default(),
            isr: Bits256::default(),
            tmr: Bits256::default(),
            timer_initial: 0,
            timer_dcr: 0,
            timer_start: 0,
            timer_next: None,
            tsc_deadline: 0,
            tsc_khz: tsc_khz.max(1),
            tsc_base: 0,
            nmi_pending: false,
        };
        l.reset_registers();
        l
    }

    fn is_bsp(&self) -> bool {
        self.apic_base & APIC_BASE_BSP != 0
    }

    /// Register state after power-up, INIT, or a disable via the MSR.
    fn reset_registers(&mut self) {
        self.id = self.initial_id << 24;
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.svr = 0xff;
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_lo = 0;
        self.icr_hi = 0;
        self.lvt = [LVT_MASKED; 6];
        if self.is_bsp() {
            self.lvt[LVT_LINT0] = 7 << 8; // ExtINT, unmasked
            self.lvt[LVT_LINT1] = 4 << 8; // NMI
        }
        self.irr = Bits256::default();
        self.isr = Bits256::default();
        self.tmr = Bits256::default();
        self.timer_initial = 0;
        self.timer_dcr = 0;
        self.timer_next = None;
        self.tsc_deadline = 0;
        self.nmi_pending = false;
        if self.mode() == ApicMode::X2Apic {
            self.enter_x2apic();
        }
    }

    fn enter_x2apic(&mut self) {
        self.id = self.initial_id;
        self.ldr = (self.initial_id >> 4) << 16 | 1 << (self.initial_id & 0xf);
    }

    /// INIT: everything but the APIC ID and IA32_APIC_BASE is reset.
    pub fn init_reset(&mut self) {
        let id = self.id;
        self.reset_registers();
        self.id = id;
    }

    pub fn mode(&self) -> ApicMode {
        match (self.apic_base & APIC_BASE_EN != 0, self.apic_base & APIC_BASE_EXTD != 0) {
            (false, _) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        }
    }

    /// Physical address of the xAPIC page.
    pub fn mmio_base(&self) -> u64 {
        self.apic_base & APIC_BASE_ADDR_MASK
    }

    /// The xAPIC page is decoded only in xAPIC mode.
    pub fn claims_mmio(&self, addr: u64) -> bool {
        self.mode() == ApicMode::XApic && addr.wrapping_sub(self.mmio_base()) < APIC_PAGE_SIZE
    }

    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// APIC ID as used for physical destination matching.
    pub fn apic_id(&self) -> u32 {
        match self.mode() {
            ApicMode::X2Apic => self.id,
            _ => self.id >> 24,
        }
    }

    /// Whether the PIC's INTR reaches the CPU through this APIC: the APIC
    /// is globally disabled (the pin goes straight to the core) or LINT0 is
    /// unmasked in ExtINT mode (virtual wire).
    pub fn accepts_pic_interrupts(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0];
        self.mode() == ApicMode::Disabled || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == 7)
    }

    // --- interrupt state -------------------------------------------------

    fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().unwrap_or(0) as u32;
        if (self.tpr & 0xf0) >= (isrv & 0xf0) { self.tpr & 0xff } else { isrv & 0xf0 }
    }

    /// Accepts a fixed interrupt into IRR. Dropped while the APIC is
    /// software-disabled; vectors 0-15 are illegal (ESR bit 6).
    pub fn accept_fixed(&mut self, vector: u8, level_triggered: bool) -> bool {
        if self.mode() == ApicMode::Disabled || !self.software_enabled() {
            return false;
        }
        if vector < 16 {
            self.signal_error(ESR_RECEIVE_ILLEGAL_VECTOR);
            return false;
        }
        self.irr.set(vector);
        if level_triggered {
            self.tmr.set(vector);
        } else {
            self.tmr.clear(vector);
        }
        true
    }

    /// Marks an NMI pending (LVT NMI, NMI IPI, IOAPIC NMI).
    pub fn raise_nmi(&mut self) {
        self.nmi_pending = true;
    }

    /// Takes a pending NMI for injection.
    /// Offer x2APIC mode or not (it must match what CPUID says).
    /// The virtual CPU's physical-address width: IA32_APIC_BASE bits at and
    /// above it are reserved (#GP).
    pub fn set_phys_addr_bits(&mut self, bits: u8) {
        let bits = bits.clamp(32, 52);
        self.base_addr_mask = APIC_BASE_ADDR_MASK & ((1u64 << bits) - 1);
    }

    pub fn set_x2apic_offered(&mut self, offered: bool) {
        self.x2apic_offered = offered;
    }

    pub fn nmi_pending(&self) -> bool {
        self.nmi_pending
    }

    pub fn take_nmi(&mut self) -> bool {
        core::mem::take(&mut self.nmi_pending)
    }

    fn signal_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && self.software_enabled() && (lvt as u8) >= 16 {
            self.irr.set(lvt as u8);
            self.tmr.clear(lvt as u8);
        }
    }

    /// Delivers a local interrupt source through its LVT entry.
    fn deliver_lvt(&mut self, idx: usize) {
        let lvt = self.lvt[idx];
        if lvt & LVT_MASKED != 0 {
            return;
        }
        match DeliveryMode::from_bits(lvt >> 8) {
            DeliveryMode::Nmi if idx != LVT_TIMER && idx != LVT_ERROR => self.raise_nmi(),
            // ExtINT on LINT0/1 is handled by the platform (PIC path).
            DeliveryMode::ExtInt => {}
            _ => {
                let level = matches!(idx, LVT_LINT0 | LVT_LINT1) && lvt & (1 << 15) != 0;
                self.accept_fixed(lvt as u8, level);
            }
        }
    }

    /// Raises LINT1 (wired to NMI on PCs) or LINT0 in non-ExtINT mode.
    pub fn raise_lint(&mut self, lint: usize) {
        self.deliver_lvt(if lint == 0 { LVT_LINT0 } else { LVT_LINT1 });
    }

    /// Highest IRR vector whose priority class beats PPR.
    pub fn pending_vector(&self) -> Option<u8> {
        if self.mode() == ApicMode::Disabled {
            return None;
        }
        let v = self.irr.highest()?;
        ((v as u32 & 0xf0) > (self.ppr() & 0xf0)).then_some(v)
    }

    /// The CPU took `vector` (IRR -> ISR). False if it was not pending.
    pub fn ack(&mut self, vector: u8) -> bool {
        if !self.irr.get(vector) {
            return false;
        }
        self.irr.clear(vector);
        self.isr.set(vector);
        true
    }

    fn eoi(&mut self) -> Option<LapicEffect> {
        let v = self.isr.highest()?;
        self.isr.clear(v);
        self.tmr.get(v).then_some(LapicEffect::EoiBroadcast(v))
    }

    pub fn irr_has(&self, v: u8) -> bool {
        self.irr.get(v)
    }

    pub fn isr_has(&self, v: u8) -> bool {
        self.isr.get(v)
    }

    // --- destination matching --------------------------------------------

    /// Whether this APIC is a target of a destination. `x2_format`: the
    /// destination is a 32-bit x2APIC one (else 8-bit xAPIC / IOAPIC).
    pub fn matches_dest(&self, dest: u32, logical: bool, x2_format: bool) -> bool {
        let x2 = self.mode() == ApicMode::X2Apic;
        match self.mode() {
            ApicMode::Disabled => false,
            _ if x2_format && dest == 0xffff_ffff => true,
            _ if !x2_format && dest & 0xff == 0xff => true,
            _ if !logical => {
                if x2_format { dest == self.apic_id() } else { dest & 0xff == self.apic_id() & 0xff }
            }
            _ if x2 => {
                // x2APIC logical: cluster in bits 16..=31, bitmap in 0..=15.
                let d = if x2_format { dest } else { dest & 0xff };
                d >> 16 == self.ldr >> 16 && d & self.ldr & 0xffff != 0
            }
            _ => {
                let d = dest & 0xff;
                let ldr = self.ldr >> 24;
                if self.dfr >> 28 == 0xf {
                    ldr & d != 0 // flat model: 8-bit mask
                } else {
                    // cluster model: cluster in the high nibble, 4-bit mask
                    ldr >> 4 == d >> 4 && ldr & d & 0xf != 0
                }
            }
        }
    }

    // --- timer ------------------------------------------------------------

    fn timer_mode(&self) -> u32 {
        (self.lvt[LVT_TIMER] >> 17) & 3
    }

    fn divisor(&self) -> u64 {
        let v = (self.timer_dcr & 3) | ((self.timer_dcr >> 1) & 4);
        if v == 7 { 1 } else { 2 << v }
    }

    fn tick_ns(&self) -> u64 {
        self.divisor() * BUS_NS_PER_TICK
    }

    fn timer_period_ns(&self) -> u64 {
        self.timer_initial as u64 * self.tick_ns()
    }

    /// Guest time at which the guest's TSC reads `tsc` (a deadline in the
    /// past is due at once).
    fn tsc_to_ns(&self, tsc: u64) -> u64 {
        (tsc.saturating_sub(self.tsc_base) as u128 * 1_000_000 / self.tsc_khz as u128).min(u64::MAX as u128) as u64
    }

    /// Guest TSC at guest time `now`.
    pub fn ns_to_tsc(&self, now: u64) -> u64 {
        self.tsc_base.wrapping_add((now as u128 * self.tsc_khz as u128 / 1_000_000) as u64)
    }

    /// What the guest's TSC read at time 0 (host TSC at that time plus the
    /// vCPU's TSC offset): TSC-deadline values are on that scale. Not reset
    /// by INIT (the TSC is not).
    pub fn set_tsc_base(&mut self, base: u64) {
        self.tsc_base = base;
    }

    fn current_count(&self, now: u64) -> u32 {
        // Stopped (expired one-shot, TSC-deadline mode, initial count 0).
        if self.timer_mode() == 2 || self.timer_initial == 0 || self.timer_next.is_none() {
            return 0;
        }
        let elapsed = now.saturating_sub(self.timer_start) / self.tick_ns();
        match self.timer_mode() {
            1 => self.timer_initial - (elapsed % self.timer_initial as u64) as u32,
            _ => (self.timer_initial as u64).saturating_sub(elapsed) as u32,
        }
    }

    fn stop_timer(&mut self) {
        self.timer_initial = 0;
        self.timer_next = None;
        self.tsc_deadline = 0;
    }

    /// Fires the timer if due; returns whether it expired.
    pub fn advance(&mut self, now: u64) -> bool {
        let Some(due) = self.timer_next else { return false };
        if now < due {
            return false;
        }
        match self.timer_mode() {
            1 => {
                let p = self.timer_period_ns().max(MIN_PERIODIC_NS);
                let periods = (now - self.timer_start) / p;
                self.timer_next = Some(self.timer_start + (periods + 1) * p);
            }
            2 => {
                self.timer_next = None;
                self.tsc_deadline = 0;
            }
            _ => self.timer_next = None,
        }
        self.deliver_lvt(LVT_TIMER);
        true
    }

    /// When the timer next expires, for the VMM's host timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timer_next
    }

    // --- registers --------------------------------------------------------

    /// Reads a 32-bit register; `None` for a reserved offset.
    fn read_reg(&self, reg: u32, now: u64) -> Option<u32> {
        Some(match reg {
            REG_ID => self.id,
            REG_VERSION => APIC_VERSION,
            REG_TPR => self.tpr,
            REG_APR => 0,
            REG_PPR => self.ppr(),
            REG_EOI => 0,
            REG_LDR => self.ldr,
            REG_DFR => self.dfr,
            REG_SVR => self.svr,
            0x100..=0x170 => self.isr.0[((reg - REG_ISR) >> 4) as usize],
            0x180..=0x1f0 => self.tmr.0[((reg - REG_TMR) >> 4) as usize],
            0x200..=0x270 => self.irr.0[((reg - REG_IRR) >> 4) as usize],
            REG_ESR => self.esr,
            REG_ICR_LO => self.icr_lo,
            REG_ICR_HI => self.icr_hi,
            REG_LVT_TIMER..=REG_LVT_ERROR => self.lvt[((reg - REG_LVT_TIMER) >> 4) as usize],
            REG_TIMER_ICR => self.timer_initial,
            REG_TIMER_CCR => self.current_count(now),
            REG_TIMER_DCR => self.timer_dcr,
            _ => return None,
        })
    }

    fn write_lvt(&mut self, idx: usize, v: u32) {
        let mut v = v & LVT_WRITABLE[idx];
        if !self.software_enabled() {
            v |= LVT_MASKED;
        }
        if idx == LVT_TIMER {
            let (old, new) = (self.timer_mode(), (v >> 17) & 3);
            if old != new && (old == 2 || new == 2) {
                // Into or out of TSC-deadline mode disarms the timer (SDM
                // 10.5.4.1).
                self.stop_timer();
            } else if old == 1 && new == 0 {
                // Periodic to one-shot: the count goes on from where it is,
                // to zero, as a one-shot count started at this period's start.
                if let Some(next) = self.timer_next {
                    let period = self.timer_period_ns().max(MIN_PERIODIC_NS);
                    self.timer_start = next.saturating_sub(period);
                }
            }
            // One-shot to periodic: the count goes on; the reload happens
            // when it reaches zero (`advance`).
        }
        self.lvt[idx] = v;
    }

    fn send_icr(&mut self) -> Option<LapicEffect> {
        let lo = self.icr_lo;
        let x2 = self.mode() == ApicMode::X2Apic;
        let ipi = Ipi {
            vector: lo as u8,
            mode: DeliveryMode::from_bits(lo >> 8),
            logical: lo & (1 << 11) != 0,
            assert: lo & (1 << 14) != 0,
            level_triggered: lo & (1 << 15) != 0,
            shorthand: match (lo >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::All,
                _ => Shorthand::AllButSelf,
            },
            dest: if x2 { self.icr_hi } else { self.icr_hi >> 24 },
            x2apic: x2,
        };
        if matches!(ipi.mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && ipi.vector < 16 {
            self.signal_error(ESR_SEND_ILLEGAL_VECTOR);
            return None;
        }
        Some(LapicEffect::Ipi(ipi))
    }

    /// Writes a 32-bit register (`Err` for a reserved or read-only one).
    fn write_reg(&mut self, reg: u32, v: u32, now: u64) -> Result<Option<LapicEffect>, ()> {
        let x2 = self.mode() == ApicMode::X2Apic;
        match reg {
            REG_ID if !x2 => self.id = v & 0xff00_0000,
            REG_TPR => self.tpr = v & 0xff,
            REG_EOI => return Ok(self.eoi()),
            REG_LDR if !x2 => self.ldr = v & 0xff00_0000,
            REG_DFR if !x2 => self.dfr = v | 0x0fff_ffff,
            REG_SVR => {
                self.svr = v & 0x11ff;
                if v & SVR_ENABLE == 0 {
                    // Software disable masks every LVT entry.
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
            }
            REG_ESR => {
                // A write latches the errors seen since the previous write.
                self.esr = core::mem::take(&mut self.esr_pending);
            }
            REG_ICR_LO => {
                self.icr_lo = v & 0x000c_cfff;
                return Ok(self.send_icr());
            }
            REG_ICR_HI if !x2 => self.icr_hi = v & 0xff00_0000,
            REG_LVT_TIMER..=REG_LVT_ERROR => self.write_lvt(((reg - REG_LVT_TIMER) >> 4) as usize, v),
            REG_TIMER_ICR => {
                if self.timer_mode() != 2 {
                    self.timer_initial = v;
                    self.timer_start = now;
                    let period = if self.timer_mode() == 1 { self.timer_period_ns().max(MIN_PERIODIC_NS) } else { self.timer_period_ns() };
                    self.timer_next = (v != 0).then(|| now + period);
                }
            }
            REG_TIMER_DCR => self.timer_dcr = v & 0xb,
            REG_SELF_IPI if x2 => {
                return Ok(Some(LapicEffect::Ipi(Ipi {
                    vector: v as u8,
                    mode: DeliveryMode::Fixed,
                    logical: false,
                    assert: true,
                    level_triggered: false,
                    shorthand: Shorthand::SelfOnly,
                    dest: 0,
                    x2apic: true,
                })));
            }
            // Read-only registers ignore writes in xAPIC mode.
            REG_VERSION | REG_PPR | REG_APR | REG_RRD | REG_TIMER_CCR | 0x100..=0x270 if !x2 => {}
            _ => return Err(()),
        }
        Ok(None)
    }

    /// xAPIC page read (32-bit registers on 16-byte boundaries).
    pub fn mmio_read(&self, offset: u64, now: u64) -> u32 {
        if offset & 0xf != 0 || offset >= APIC_PAGE_SIZE {
            return 0;
        }
        self.read_reg(offset as u32, now).unwrap_or(0)
    }

    /// xAPIC page write. Writes to reserved registers set ESR bit 7.
    pub fn mmio_write(&mut self, offset: u64, value: u32, now: u64) -> Option<LapicEffect> {
        if offset & 0xf != 0 || offset >= APIC_PAGE_SIZE {
            return None;
        }
        match self.write_reg(offset as u32, value, now) {
            Ok(e) => e,
            Err(()) => {
                self.signal_error(ESR_ILLEGAL_REGISTER);
                None
            }
        }
    }

    /// Whether `msr` belongs to the LAPIC model.
    pub fn handles_msr(msr: u32) -> bool {
        matches!(msr, MSR_APIC_BASE | MSR_TSC_DEADLINE | MSR_X2APIC_FIRST..=MSR_X2APIC_LAST)
    }

    pub fn msr_read(&self, msr: u32, now: u64) -> Result<u64, GeneralProtection> {
        match msr {
            MSR_APIC_BASE => Ok(self.apic_base),
            MSR_TSC_DEADLINE => Ok(if self.timer_mode() == 2 { self.tsc_deadline } else { 0 }),
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(GeneralProtection);
                }
                let reg = (msr - MSR_X2APIC_FIRST) << 4;
                match reg {
                    REG_ICR_LO => Ok((self.icr_hi as u64) << 32 | self.icr_lo as u64),
                    REG_EOI | REG_DFR | REG_ICR_HI | REG_SELF_IPI => Err(GeneralProtection),
                    _ => self.read_reg(reg, now).map(u64::from).ok_or(GeneralProtection),
                }
            }
            _ => Err(GeneralProtection),
        }
    }

    pub fn msr_write(&mut self, msr: u32, value: u64, now: u64) -> Result<Option<LapicEffect>, GeneralProtection> {
        match msr {
            MSR_APIC_BASE => self.write_apic_base(value).map(|_| None),
            MSR_TSC_DEADLINE => {
                if self.timer_mode() == 2 {
                    self.tsc_deadline = value;
                    self.timer_next = (value != 0).then(|| self.tsc_to_ns(value));
                }
                Ok(None)
            }
            MSR_X2APIC_FIRST..=MSR_X2APIC_LAST => {
                if self.mode() != ApicMode::X2Apic {
                    return Err(GeneralProtection);
                }
                let reg = (msr - MSR_X2APIC_FIRST) << 4;
                if reg == REG_ICR_LO {
                    self.icr_hi = (value >> 32) as u32;
                    self.icr_lo = value as u32 & 0x000c_cfff;
                    return Ok(self.send_icr());
                }
                if value >> 32 != 0 {
                    return Err(GeneralProtection);
                }
                self.write_reg(reg, value as u32, now).map_err(|_| GeneralProtection)
            }
            _ => Err(GeneralProtection),
        }
    }

    /// IA32_APIC_BASE: base address, EN (bit 11), EXTD (bit 10); BSP (bit
    /// 8) is read-only. Legal transitions: disabled <-> xAPIC, xAPIC ->
    /// x2APIC, x2APIC -> disabled. Disabling resets the APIC's registers,
    /// so a later re-enable starts from the power-up state.
    fn write_apic_base(&mut self, value: u64) -> Result<(), GeneralProtection> {
        let extd = if self.x2apic_offered { APIC_BASE_EXTD } else { 0 };
        if value & !(self.base_addr_mask | APIC_BASE_EN | extd | APIC_BASE_BSP) != 0 {
            return Err(GeneralProtection);
        }
        let old = self.mode();
        let new = match (value & APIC_BASE_EN != 0, value & APIC_BASE_EXTD != 0) {
            (false, true) => return Err(GeneralProtection),
            (false, false) => ApicMode::Disabled,
            (true, false) => ApicMode::XApic,
            (true, true) => ApicMode::X2Apic,
        };
        match (old, new) {
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic) => {
                return Err(GeneralProtection);
            }
            _ => {}
        }
        self.apic_base = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
        match (old, new) {
            (ApicMode::Disabled, ApicMode::Disabled) => {}
            (_, ApicMode::Disabled) => self.reset_registers(),
            (ApicMode::XApic, ApicMode::X2Apic) => self.enter_x2apic(),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic_regs::{Icr, timer_divide_config};

    fn divide_config(d: u32) -> u32 {
        timer_divide_config(d).unwrap()
    }

    const TSC_KHZ: u64 = 2_000_000; // 2 GHz

    fn enabled(index: u32) -> Lapic {
        let mut l = Lapic::new(index, TSC_KHZ);
        l.mmio_write(REG_SVR as u64, SVR_ENABLE | 0xff, 0);
        l
    }

    fn w(l: &mut Lapic, reg: u32, v: u32) -> Option<LapicEffect> {
        l.mmio_write(reg as u64, v, 0)
    }

    fn r(l: &Lapic, reg: u32) -> u32 {
        l.mmio_read(reg as u64, 0)
    }

    #[test]
    fn reset_state() {
        let l = Lapic::new(3, TSC_KHZ);
        assert_eq!(r(&l, REG_ID), 3 << 24);
        assert_eq!(r(&l, REG_VERSION), APIC_VERSION);
        assert_eq!(r(&l, REG_SVR), 0xff);
        assert_eq!(r(&l, REG_DFR), 0xffff_ffff);
        assert_eq!(r(&l, REG_LVT_LINT0), LVT_MASKED, "APs: all masked");
        assert_eq!(l.msr_read(MSR_APIC_BASE, 0), Ok(APIC_BASE_DEFAULT | APIC_BASE_EN));
        let bsp = Lapic::new(0, TSC_KHZ);
        assert_eq!(bsp.msr_read(MSR_APIC_BASE, 0).unwrap() & APIC_BASE_BSP, APIC_BASE_BSP);
        assert!(bsp.accepts_pic_interrupts(), "BSP in virtual-wire mode");
        assert!(!l.accepts_pic_interrupts());
        assert!(l.claims_mmio(0xfee0_0030) && !l.claims_mmio(0xfee0_1000));
    }

    #[test]
    fn irr_isr_priority_and_tpr() {
        let mut l = enabled(0);
        assert!(l.accept_fixed(0x31, false));
        assert!(l.accept_fixed(0x52, false));
        assert!(l.accept_fixed(0x51, false));
        assert_eq!(l.pending_vector(), Some(0x52));
        assert!(l.ack(0x52));
        // 0x51 is in the same priority class as 0x52 in service: blocked.
        assert_eq!(l.pending_vector(), None);
        assert_eq!(r(&l, REG_PPR), 0x50);
        assert_eq!(r(&l, REG_ISR + 0x20), 1 << (0x52 - 64));
        assert_eq!(r(&l, REG_IRR + 0x20), 1 << (0x51 - 64));
        assert_eq!(w(&mut l, REG_EOI, 0), None);
        assert_eq!(l.pending_vector(), Some(0x51));
        // TPR 0x60 blocks everything at or below class 6.
        w(&mut l, REG_TPR, 0x60);
        assert_eq!(l.pending_vector(), None);
        assert_eq!(r(&l, REG_PPR), 0x60);
        w(&mut l, REG_TPR, 0x40);
        assert_eq!(l.pending_vector(), Some(0x51));
    }

    #[test]
    fn level_eoi_broadcasts() {
        let mut l = enabled(0);
        l.accept_fixed(0x41, true);
        assert_eq!(r(&l, REG_TMR + 0x20), 1 << 1);
        l.ack(0x41);
        assert_eq!(w(&mut l, REG_EOI, 0), Some(LapicEffect::EoiBroadcast(0x41)));
    }

    #[test]
    fn software_disable_masks_lvts_and_drops_fixed() {
        let mut l = enabled(0);
        w(&mut l, REG_LVT_TIMER, 0x40);
        assert_eq!(r(&l, REG_LVT_TIMER), 0x40);
        w(&mut l, REG_SVR, 0xff);
        assert_eq!(r(&l, REG_LVT_TIMER), 0x40 | LVT_MASKED);
        assert!(!l.accept_fixed(0x40, false));
        // LVT writes stay masked while disabled.
        w(&mut l, REG_LVT_TIMER, 0x40);
        assert_eq!(r(&l, REG_LVT_TIMER) & LVT_MASKED, LVT_MASKED);
        // Re-enable, unmask, and it works again.
        w(&mut l, REG_SVR, 0x1ff);
        w(&mut l, REG_LVT_TIMER, 0x40);
        assert_eq!(r(&l, REG_LVT_TIMER), 0x40);
        assert!(l.accept_fixed(0x40, false));
        assert_eq!(l.pending_vector(), Some(0x40));
    }

    #[test]
    fn illegal_vectors_and_esr() {
        let mut l = enabled(0);
        w(&mut l, REG_LVT_ERROR, 0xfe);
        assert!(!l.accept_fixed(5, false));
        assert_eq!(r(&l, REG_ESR), 0, "latched only on the next ESR write");
        w(&mut l, REG_ESR, 0);
        assert_eq!(r(&l, REG_ESR), ESR_RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(l.pending_vector(), Some(0xfe), "error LVT fired");
        // Sending vector 3 fixed: not sent, ESR bit 5.
        assert_eq!(w(&mut l, REG_ICR_LO, 0x0000_0003), None);
        w(&mut l, REG_ESR, 0);
        assert_eq!(r(&l, REG_ESR), ESR_SEND_ILLEGAL_VECTOR);
        w(&mut l, REG_ESR, 0);
        assert_eq!(r(&l, REG_ESR), 0);
    }

    #[test]
    fn icr_encodings_from_the_kernel_encoder() {
        let mut l = enabled(0);
        let (hi, lo) = Icr::fixed(2, 0x70).xapic();
        w(&mut l, REG_ICR_HI, hi);
        let Some(LapicEffect::Ipi(ipi)) = w(&mut l, REG_ICR_LO, lo) else { panic!() };
        assert_eq!((ipi.vector, ipi.mode, ipi.dest, ipi.shorthand), (0x70, DeliveryMode::Fixed, 2, Shorthand::None));
        let (hi, lo) = Icr::startup(1, 0x9a).xapic();
        w(&mut l, REG_ICR_HI, hi);
        let Some(LapicEffect::Ipi(ipi)) = w(&mut l, REG_ICR_LO, lo) else { panic!() };
        assert_eq!((ipi.vector, ipi.mode, ipi.dest), (0x9a, DeliveryMode::StartUp, 1));
        let (_, lo) = Icr::nmi_all_but_self().xapic();
        let Some(LapicEffect::Ipi(ipi)) = w(&mut l, REG_ICR_LO, lo) else { panic!() };
        assert_eq!((ipi.mode, ipi.shorthand), (DeliveryMode::Nmi, Shorthand::AllButSelf));
        let (_, lo) = Icr::init_deassert(0).xapic();
        let Some(LapicEffect::Ipi(ipi)) = w(&mut l, REG_ICR_LO, lo) else { panic!() };
        assert!(!ipi.assert && ipi.level_triggered && ipi.mode == DeliveryMode::Init);
        assert_eq!(r(&l, REG_ICR_LO) & (1 << 12), 0, "delivery status idle");
    }

    #[test]
    fn logical_destinations_flat_and_cluster() {
        let mut l = enabled(1);
        w(&mut l, REG_LDR, 0x02 << 24);
        assert!(l.matches_dest(0x02, true, false));
        assert!(l.matches_dest(0x03, true, false));
        assert!(!l.matches_dest(0x04, true, false));
        assert!(l.matches_dest(0xff, true, false));
        // Cluster model: cluster 3, member bit 1.
        w(&mut l, REG_DFR, 0x0fff_ffff);
        w(&mut l, REG_LDR, 0x32 << 24);
        assert!(l.matches_dest(0x32, true, false));
        assert!(l.matches_dest(0x3a, true, false));
        assert!(!l.matches_dest(0x22, true, false));
        // Physical.
        assert!(l.matches_dest(1, false, false));
        assert!(!l.matches_dest(2, false, false));
        assert!(l.matches_dest(0xff, false, false));
    }

    #[test]
    fn timer_mode_change_keeps_the_count() {
        let mut l = enabled(0);
        w(&mut l, REG_TIMER_DCR, divide_config(1));
        w(&mut l, REG_LVT_TIMER, 0x20);
        l.mmio_write(REG_TIMER_ICR as u64, 1_000_000, 0); // 1 ms one-shot
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 100_000), 900_000);
        // One-shot -> periodic: initial count kept, counting goes on.
        l.mmio_write(REG_LVT_TIMER as u64, LVT_TIMER_PERIODIC | 0x20, 200_000);
        assert_eq!(r(&l, REG_TIMER_ICR), 1_000_000);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 300_000), 700_000);
        assert_eq!(l.next_deadline(), Some(1_000_000));
        assert!(l.advance(1_000_000));
        assert_eq!(l.next_deadline(), Some(2_000_000), "periodic now: reloads");
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 1_250_000), 750_000);
        // Periodic -> one-shot in the second period: counts down to zero,
        // then stops.
        l.mmio_write(REG_LVT_TIMER as u64, 0x20, 1_500_000);
        assert_eq!(r(&l, REG_TIMER_ICR), 1_000_000);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 1_600_000), 400_000);
        assert!(l.advance(2_000_000));
        assert_eq!(l.next_deadline(), None);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 2_100_000), 0);
        // Expired one-shot -> periodic: stays stopped (count 0).
        l.mmio_write(REG_LVT_TIMER as u64, LVT_TIMER_PERIODIC | 0x20, 2_200_000);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 2_300_000), 0);
        assert_eq!(r(&l, REG_TIMER_ICR), 1_000_000);
        // Into TSC-deadline mode: disarmed.
        l.mmio_write(REG_TIMER_ICR as u64, 1_000_000, 3_000_000);
        l.mmio_write(REG_LVT_TIMER as u64, LVT_TIMER_TSC_DEADLINE | 0x20, 3_100_000);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn apic_base_reserved_bits_above_the_address_width() {
        let mut l = enabled(0);
        l.set_phys_addr_bits(40);
        let base = l.msr_read(MSR_APIC_BASE, 0).unwrap();
        assert!(l.msr_write(MSR_APIC_BASE, base | (1 << 40), 0).is_err(), "bit 40 with a 40-bit address width");
        assert!(l.msr_write(MSR_APIC_BASE, base | (1 << 9), 0).is_err(), "bit 9 is reserved");
        assert!(l.msr_write(MSR_APIC_BASE, base | 1, 0).is_err(), "bits 0-7 are reserved");
        assert_eq!(l.msr_read(MSR_APIC_BASE, 0), Ok(base), "a refused write changes nothing");
        assert!(l.msr_write(MSR_APIC_BASE, (base & !0xffff_f000) | 0xf_fee0_0000, 0).is_ok(), "bit 39 exists");
    }

    #[test]
    fn oneshot_timer_and_current_count() {
        let mut l = enabled(0);
        w(&mut l, REG_TIMER_DCR, divide_config(16));
        w(&mut l, REG_LVT_TIMER, 0x20);
        l.mmio_write(REG_TIMER_ICR as u64, 1000, 5_000);
        assert_eq!(l.next_deadline(), Some(5_000 + 16_000));
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 5_000 + 1600), 900);
        assert!(!l.advance(20_999));
        assert!(l.advance(21_000));
        assert_eq!(l.pending_vector(), Some(0x20));
        assert_eq!(l.next_deadline(), None);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, 30_000), 0);
        assert!(!l.advance(100_000));
    }

    #[test]
    fn periodic_timer_has_a_floor() {
        let mut l = enabled(0);
        w(&mut l, REG_TIMER_DCR, divide_config(1));
        w(&mut l, REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0x50);
        l.mmio_write(REG_TIMER_ICR as u64, 1, 0); // 1 ns
        assert_eq!(l.next_deadline(), Some(MIN_PERIODIC_NS));
        assert!(l.advance(MIN_PERIODIC_NS));
        assert_eq!(l.next_deadline(), Some(2 * MIN_PERIODIC_NS));
    }

    #[test]
    fn periodic_timer_counts_at_the_programmed_rate() {
        let mut l = enabled(0);
        w(&mut l, REG_TIMER_DCR, divide_config(1));
        w(&mut l, REG_LVT_TIMER, LVT_TIMER_PERIODIC | 0xec);
        l.mmio_write(REG_TIMER_ICR as u64, 1_000_000, 0); // 1 ms
        let mut fired = 0;
        let mut now = 0;
        while let Some(d) = l.next_deadline() {
            if d > 10_000_000 {
                break;
            }
            now = d;
            if l.advance(now) {
                fired += 1;
                let v = l.pending_vector().unwrap();
                l.ack(v);
                l.mmio_write(REG_EOI as u64, 0, now);
            }
        }
        assert_eq!(fired, 10);
        assert_eq!(now, 10_000_000);
        assert_eq!(l.mmio_read(REG_TIMER_CCR as u64, now + 250_000), 750_000);
        // Masked: keeps counting, no interrupt.
        w(&mut l, REG_LVT_TIMER, LVT_TIMER_PERIODIC | LVT_MASKED | 0xec);
        assert!(l.advance(11_000_000));
        assert_eq!(l.pending_vector(), None);
        // Initial count 0 stops it.
        w(&mut l, REG_TIMER_ICR, 0);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut l = enabled(0);
        assert_eq!(l.msr_read(MSR_TSC_DEADLINE, 0), Ok(0));
        w(&mut l, REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xef);
        // Initial-count writes are ignored in deadline mode.
        w(&mut l, REG_TIMER_ICR, 5);
        assert_eq!(l.next_deadline(), None);
        let tsc = l.ns_to_tsc(1_000_000); // 1 ms
        assert_eq!(tsc, 2_000_000);
        l.msr_write(MSR_TSC_DEADLINE, tsc, 0).unwrap();
        assert_eq!(l.msr_read(MSR_TSC_DEADLINE, 0), Ok(tsc));
        assert_eq!(l.next_deadline(), Some(1_000_000));
        assert!(l.advance(1_000_000));
        assert_eq!(l.pending_vector(), Some(0xef));
        assert_eq!(l.msr_read(MSR_TSC_DEADLINE, 0), Ok(0), "cleared on expiry");
        // Writing 0 disarms; leaving deadline mode disarms.
        l.msr_write(MSR_TSC_DEADLINE, tsc * 2, 0).unwrap();
        l.msr_write(MSR_TSC_DEADLINE, 0, 0).unwrap();
        assert_eq!(l.next_deadline(), None);
        l.msr_write(MSR_TSC_DEADLINE, tsc * 2, 0).unwrap();
        w(&mut l, REG_LVT_TIMER, 0xef);
        assert_eq!(l.next_deadline(), None);
    }

    /// The guest's TSC did not start at 0 (it is the host's, plus an
    /// offset): deadlines are on that scale, and one already past is due now.
    #[test]
    fn tsc_deadline_on_a_tsc_that_started_long_ago() {
        let mut l = enabled(0);
        l.set_tsc_base(7_000_000_000_000);
        w(&mut l, REG_LVT_TIMER, LVT_TIMER_TSC_DEADLINE | 0xef);
        let now = 3_000_000_000; // 3 s
        let tsc_now = l.ns_to_tsc(now);
        assert_eq!(tsc_now, 7_000_000_000_000 + 6_000_000_000);
        l.msr_write(MSR_TSC_DEADLINE, tsc_now + 100_000_000, now).unwrap(); // 50 ms ahead
        assert_eq!(l.next_deadline(), Some(now + 50_000_000));
        assert!(!l.advance(now + 49_000_000));
        assert!(l.advance(now + 50_000_000));
        l.msr_write(MSR_TSC_DEADLINE, 5, now).unwrap(); // long past
        assert_eq!(l.next_deadline(), Some(0));
        assert!(l.advance(now));
        // INIT keeps the TSC scale.
        l.init_reset();
        assert_eq!(l.ns_to_tsc(0), 7_000_000_000_000);
    }

    #[test]
    fn x2apic_msrs_share_the_state() {
        let mut l = enabled(5);
        assert_eq!(l.msr_read(0x802, 0), Err(GeneralProtection), "x2APIC MSRs #GP in xAPIC mode");
        w(&mut l, REG_TPR, 0x30);
        let base = l.msr_read(MSR_APIC_BASE, 0).unwrap();
        l.msr_write(MSR_APIC_BASE, base | APIC_BASE_EXTD, 0).unwrap();
        assert_eq!(l.mode(), ApicMode::X2Apic);
        assert!(!l.claims_mmio(APIC_BASE_DEFAULT), "xAPIC page gone in x2APIC mode");
        assert_eq!(l.msr_read(0x802, 0), Ok(5));
        assert_eq!(l.msr_read(0x808, 0), Ok(0x30));
        assert_eq!(l.msr_read(0x80d, 0), Ok(1 << 5), "LDR derived: cluster 0, bit 5");
        assert_eq!(l.msr_read(0x80e, 0), Err(GeneralProtection), "no DFR");
        assert_eq!(l.msr_write(0x802, 7, 0), Err(GeneralProtection), "ID read-only");
        // 64-bit ICR.
        let e = l.msr_write(0x830, Icr::fixed(0x1234, 0x80).x2apic(), 0).unwrap();
        let Some(LapicEffect::Ipi(ipi)) = e else { panic!() };
        assert_eq!((ipi.dest, ipi.vector, ipi.x2apic), (0x1234, 0x80, true));
        assert_eq!(l.msr_read(0x830, 0), Ok(0x1234 << 32 | 0x4080));
        // Self IPI.
        let Ok(Some(LapicEffect::Ipi(ipi))) = l.msr_write(0x83f, 0x99, 0) else { panic!() };
        assert_eq!((ipi.vector, ipi.shorthand), (0x99, Shorthand::SelfOnly));
        // Destination matching in x2APIC format.
        assert!(l.matches_dest(5, false, true));
        assert!(l.matches_dest(1 << 5, true, true));
        assert!(!l.matches_dest(1 << 16 | 1 << 5, true, true));
        // x2APIC -> xAPIC is illegal; -> disabled is fine.
        assert_eq!(l.msr_write(MSR_APIC_BASE, base, 0), Err(GeneralProtection));
        l.msr_write(MSR_APIC_BASE, base & !APIC_BASE_EN, 0).unwrap();
        assert_eq!(l.mode(), ApicMode::Disabled);
    }

    #[test]
    fn apic_base_msr_disable_and_reenable() {
        let mut l = enabled(0);
        let base = l.msr_read(MSR_APIC_BASE, 0).unwrap();
        assert_eq!(l.msr_write(MSR_APIC_BASE, base | 1 << 9, 0), Err(GeneralProtection));
        assert_eq!(l.msr_write(MSR_APIC_BASE, APIC_BASE_EXTD, 0), Err(GeneralProtection));
        l.accept_fixed(0x44, false);
        l.msr_write(MSR_APIC_BASE, base & !APIC_BASE_EN, 0).unwrap();
        assert_eq!(l.mode(), ApicMode::Disabled);
        assert!(!l.claims_mmio(APIC_BASE_DEFAULT));
        assert_eq!(l.pending_vector(), None);
        assert!(l.accepts_pic_interrupts(), "INTR goes straight to the core");
        // Disabled -> x2APIC directly is illegal.
        assert_eq!(l.msr_write(MSR_APIC_BASE, base | APIC_BASE_EXTD, 0), Err(GeneralProtection));
        // BSP bit cannot be cleared by the guest.
        l.msr_write(MSR_APIC_BASE, (base | APIC_BASE_EN) & !APIC_BASE_BSP, 0).unwrap();
        assert_eq!(l.msr_read(MSR_APIC_BASE, 0), Ok(base));
        // Re-enabled at the power-up state: software-disabled, IRR empty.
        assert!(!l.software_enabled());
        assert!(!l.irr_has(0x44));
        w(&mut l, REG_SVR, 0x1ff);
        assert!(l.accept_fixed(0x44, false));
        assert_eq!(l.pending_vector(), Some(0x44));
        // Relocation.
        l.msr_write(MSR_APIC_BASE, 0xfed0_0000 | APIC_BASE_EN, 0).unwrap();
        assert!(l.claims_mmio(0xfed0_0020) && !l.claims_mmio(APIC_BASE_DEFAULT));
    }

    #[test]
    fn init_reset_keeps_id() {
        let mut l = enabled(2);
        w(&mut l, REG_ID, 9 << 24);
        w(&mut l, REG_TPR, 0x20);
        l.init_reset();
        assert_eq!(r(&l, REG_ID), 9 << 24);
        assert_eq!(r(&l, REG_TPR), 0);
        assert!(!l.software_enabled());
    }

    #[test]
    fn lint1_nmi_and_lint0_fixed() {
        let mut l = enabled(0);
        l.raise_lint(1);
        assert!(l.take_nmi());
        assert!(!l.take_nmi());
        w(&mut l, REG_LVT_LINT0, 0x33);
        assert!(!l.accepts_pic_interrupts());
        l.raise_lint(0);
        assert_eq!(l.pending_vector(), Some(0x33));
    }
}
