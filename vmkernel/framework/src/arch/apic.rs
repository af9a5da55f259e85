//! Local APIC (xAPIC MMIO or x2APIC MSRs): enable, periodic timer tick,
//! IPIs, EOI.
//!
//! Vector map (fixed here so other modules do not collide):
//! - `0x20` LAPIC timer tick ([`TIMER_VECTOR`]);
//! - `0xe0..=0xef` the 8259 PICs, remapped and masked (only spurious IRQ 7/15
//!   can arrive; see `ioapic`);
//! - `0xfe` LAPIC error, `0xff` LAPIC spurious.
//!
//! x2APIC is used whenever CPUID offers it (every CPU then runs in x2APIC
//! mode: the BSP decides, the APs follow). The timer is calibrated once on
//! the BSP against the TSC; the APs share the same bus clock and reuse it.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use vmkernel::apic_regs::{self, Icr};

use super::{cpu, gdt, trap};
use crate::{mm, time};

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const X2APIC_MSR_BASE: u32 = 0x800;

pub const TIMER_VECTOR: u8 = 0x20;
pub const ERROR_VECTOR: u8 = 0xfe;
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// The periodic tick rate.
pub const TICK_HZ: u64 = 100;
/// Timer input divisor: keeps the initial count well inside 32 bits on
/// fast bus clocks while leaving sub-microsecond resolution.
const TIMER_DIVISOR: u32 = 16;
const CALIBRATION_US: u64 = 10_000;

const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_VIRT: AtomicU64 = AtomicU64::new(0);
/// Rate of the divided timer input, counts per second (0 = not calibrated).
static TIMER_FREQ: AtomicU64 = AtomicU64::new(0);
static HANDLERS_REGISTERED: AtomicBool = AtomicBool::new(false);

pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

pub fn has_x2apic() -> bool {
    cpu::cpuid(1, 0).ecx & (1 << 21) != 0
}

/// This CPU's APIC ID from CPUID: usable before the LAPIC is set up (and
/// before per-CPU data exists). Leaf 0xB gives the full x2APIC ID; leaf 1
/// only the low 8 bits.
pub fn cpuid_apic_id() -> u32 {
    if cpu::cpuid(0, 0).eax >= 0xb {
        let l = cpu::cpuid(0xb, 0);
        if l.ebx != 0 {
            return l.edx;
        }
    }
    cpu::cpuid(1, 0).ebx >> 24
}

pub fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so the APIC MSR range exists.
        unsafe { cpu::rdmsr(X2APIC_MSR_BASE + (reg >> 4)) as u32 }
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        if base == 0 {
            return 0;
        }
        // SAFETY: the xAPIC page lies in the direct map (first 4 GiB);
        // firmware MTRRs make it uncached.
        unsafe { core::ptr::read_volatile((base + reg as u64) as *const u32) }
    }
}

pub fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled.
        unsafe { cpu::wrmsr(X2APIC_MSR_BASE + (reg >> 4), v as u64) }
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + reg as u64) as *mut u32, v) }
    }
}

/// Enables this CPU's LAPIC (x2APIC mode when the CPU has it) and starts
/// its periodic tick. The BSP calls it first, which also calibrates the
/// timer and installs the handlers; each AP calls it from `ap_entry`.
pub fn init_this_cpu(lapic_phys: u64) {
    let x2 = has_x2apic();
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC; setting EN
    // then EXTD is the documented xAPIC -> x2APIC transition.
    unsafe {
        let base = cpu::rdmsr(IA32_APIC_BASE);
        let mut nb = base | APIC_BASE_ENABLE;
        if x2 {
            nb |= APIC_BASE_X2APIC;
        }
        cpu::wrmsr(IA32_APIC_BASE, nb);
    }
    X2APIC.store(x2, Ordering::Relaxed);
    XAPIC_VIRT.store(mm::phys_to_virt(lapic_phys), Ordering::Relaxed);

    if !HANDLERS_REGISTERED.swap(true, Ordering::AcqRel) {
        trap::register(TIMER_VECTOR, on_tick);
        trap::register(ERROR_VECTOR, on_error);
        trap::register(SPURIOUS_VECTOR, on_spurious);
        trap::set_unclaimed_interrupt_ack(eoi);
    }

    // Accept every priority; software-enable with the spurious vector.
    write(reg::TPR, 0);
    write(reg::SVR, 0x100 | SPURIOUS_VECTOR as u32);
    // LINT0 carries the 8259's ExtINT in virtual-wire mode; the PICs are
    // masked and devices go through the IOAPIC, so mask it. LINT1 (NMI)
    // stays as the firmware set it.
    write(reg::LVT_LINT0, LVT_MASKED);
    write(reg::LVT_ERROR, ERROR_VECTOR as u32);
    // The ESR must be written before it is read (it latches on write).
    write(reg::ESR, 0);
    write(reg::ESR, 0);

    if TIMER_FREQ.load(Ordering::Acquire) == 0 {
        let hz = calibrate_timer();
        TIMER_FREQ.store(hz, Ordering::Release);
        log::info!(
            "apic: {} mode, id {}, version {:#x}, timer {} kHz (bus / {}), tick {} Hz",
            if x2 { "x2APIC" } else { "xAPIC" },
            id(),
            read(reg::VERSION) & 0xff,
            hz / 1000,
            TIMER_DIVISOR,
            TICK_HZ
        );
    }
    start_timer();
}

/// Counts the divided timer input against the TSC for 10 ms (one-shot,
/// masked, so nothing fires).
fn calibrate_timer() -> u64 {
    write(reg::TIMER_DIVIDE, apic_regs::timer_divide_config(TIMER_DIVISOR).unwrap_or(0b0011));
    write(reg::LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    let t0 = time::uptime_ns();
    write(reg::TIMER_INITIAL, u32::MAX);
    time::delay_us(CALIBRATION_US);
    let left = read(reg::TIMER_CURRENT);
    let t1 = time::uptime_ns();
    write(reg::TIMER_INITIAL, 0);
    apic_regs::timer_hz_from_calibration((u32::MAX - left) as u64, t1.saturating_sub(t0))
}

fn start_timer() {
    let freq = TIMER_FREQ.load(Ordering::Acquire);
    write(reg::TIMER_DIVIDE, apic_regs::timer_divide_config(TIMER_DIVISOR).unwrap_or(0b0011));
    write(reg::LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR as u32);
    write(reg::TIMER_INITIAL, apic_regs::timer_initial_count(freq, TICK_HZ));
}

fn on_tick(frame: &mut trap::TrapFrame) {
    if let Some(c) = gdt::this_cpu() {
        c.ticks.fetch_add(1, Ordering::Relaxed);
    }
    eoi();
    if let Some(handler) = TICK_HANDLER.get() {
        handler(frame.cs & 3 == 3);
    }
}

static TICK_HANDLER: spin::Once<fn(bool)> = spin::Once::new();

/// Registers what runs on every timer tick (the scheduler's tick; its
/// argument says whether the tick interrupted user or guest mode).
pub fn set_tick_handler(handler: fn(bool)) {
    TICK_HANDLER.call_once(|| handler);
}

fn on_error(_: &mut trap::TrapFrame) {
    write(reg::ESR, 0);
    let esr = read(reg::ESR);
    log::warn!("apic: error interrupt, ESR {esr:#x}");
    eoi();
}

/// Spurious interrupts must not be acknowledged.
fn on_spurious(_: &mut trap::TrapFrame) {}

pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// This CPU's APIC ID as the LAPIC reports it (after `init_this_cpu`).
pub fn id() -> u32 {
    let v = read(reg::ID);
    if is_x2apic() { v } else { v >> 24 }
}

pub fn eoi() {
    write(reg::EOI, 0);
}

/// Timer ticks taken on this CPU so far.
pub fn ticks_this_cpu() -> u64 {
    gdt::this_cpu().map_or(0, |c| c.ticks.load(Ordering::Relaxed))
}

/// Sends an interrupt command through this CPU's ICR.
pub fn send(icr: Icr) {
    if is_x2apic() {
        // SAFETY: ICR writes in x2APIC mode are one MSR; only an IPI results.
        unsafe { cpu::wrmsr(X2APIC_MSR_BASE + (reg::ICR_LOW >> 4), icr.x2apic()) };
    } else {
        let (high, low) = icr.xapic();
        wait_icr_idle();
        write(reg::ICR_HIGH, high);
        write(reg::ICR_LOW, low);
        wait_icr_idle();
    }
}

/// xAPIC: waits (bounded) until the previous IPI has been accepted.
fn wait_icr_idle() {
    for _ in 0..1_000_000 {
        if read(reg::ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return;
        }
        cpu::pause();
    }
}

/// A fixed interrupt on `vector` to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    send(Icr::fixed(apic_id, vector));
}

/// NMI to every other CPU (the fatal stop). Safe to call at any time: it
/// does nothing on a CPU whose LAPIC is not (yet) in the mode the kernel
/// uses, where the ICR access itself would fault.
pub fn nmi_others() {
    if is_x2apic() {
        // SAFETY: reading IA32_APIC_BASE is always possible.
        let base = unsafe { cpu::rdmsr(IA32_APIC_BASE) };
        if base & APIC_BASE_X2APIC == 0 {
            return;
        }
    }
    send(Icr::nmi_all_but_self());
}

/// Idles (interrupts enabled only inside `wait_for_interrupt`) for `ms`
/// milliseconds and returns the tick rate every online CPU showed meanwhile,
/// by CPU index: a self-test that every CPU's timer runs at [`TICK_HZ`].
/// Needs this CPU's timer running (it is what ends each `hlt`).
pub fn measure_tick_rates(ms: u64) -> Vec<u64> {
    let n = gdt::cpus_online();
    if TIMER_FREQ.load(Ordering::Acquire) != 0 {
        // Start on a tick boundary. The first tick may be one left pending
        // while interrupts were off (arbitrary phase), so wait for two.
        let t = ticks_this_cpu();
        let limit = time::uptime_ns() + 100_000_000;
        while ticks_this_cpu() < t + 2 && time::uptime_ns() < limit {
            cpu::wait_for_interrupt();
        }
    }
    let read_all = || (0..n).map(|i| gdt::cpu(i).map_or(0, |c| c.ticks.load(Ordering::Relaxed))).collect::<Vec<_>>();
    let before = read_all();
    let t0 = time::uptime_ns();
    let end = t0 + ms * 1_000_000;
    while time::uptime_ns() < end {
        if TIMER_FREQ.load(Ordering::Acquire) == 0 {
            cpu::pause();
        } else {
            cpu::wait_for_interrupt();
        }
    }
    let after = read_all();
    let dt = time::uptime_ns() - t0;
    before.iter().zip(&after).map(|(b, a)| apic_regs::rate_hz(a - b, dt)).collect()
}

// ---- TLB shootdown ----

/// Vector of the "flush your TLB" IPI.
pub const TLB_FLUSH_VECTOR: u8 = 0xf1;
static TLB_LOCK: spin::Mutex<()> = spin::Mutex::new(());
/// The last shootdown request, and per CPU the last request it has flushed
/// for: a CPU acknowledges request `g` by flushing and then storing `g`,
/// in the IPI handler or while it waits for `TLB_LOCK` itself.
static TLB_GEN: AtomicU64 = AtomicU64::new(0);
static TLB_SEEN: [AtomicU64; gdt::MAX_CPUS] = [const { AtomicU64::new(0) }; gdt::MAX_CPUS];

/// Flushes this CPU's TLB if a request came since it last did.
fn serve_tlb_flush() {
    let g = TLB_GEN.load(Ordering::Acquire);
    if let Some(seen) = TLB_SEEN.get(gdt::cpu_index() as usize)
        && seen.load(Ordering::Relaxed) < g
    {
        crate::mm::flush_tlb();
        seen.store(g, Ordering::Release);
    }
}

fn on_tlb_flush(_: &mut trap::TrapFrame) {
    serve_tlb_flush();
    eoi();
}

pub fn init_tlb_shootdown() {
    trap::register(TLB_FLUSH_VECTOR, on_tlb_flush);
    trap::register(KICK_VECTOR, on_kick);
}

/// Vector of the "kick" IPI: it makes the target CPU leave guest mode (a
/// #VMEXIT on the interrupt), so a vCPU running there sees an interrupt
/// or request another vCPU just posted, and it is the scheduler's
/// reschedule IPI (see `set_kick_handler`).
pub const KICK_VECTOR: u8 = 0xf2;

fn on_kick(frame: &mut trap::TrapFrame) {
    eoi();
    if let Some(handler) = KICK_HANDLER.get() {
        handler(frame.cs & 3 == 3);
    }
}

static KICK_HANDLER: spin::Once<fn(bool)> = spin::Once::new();

/// Registers what runs on every kick IPI after its EOI (the scheduler's
/// reschedule check; its argument says whether the IPI interrupted user
/// or guest mode).
pub fn set_kick_handler(handler: fn(bool)) {
    KICK_HANDLER.call_once(|| handler);
}

/// Kicks CPU `index` (no-op for this CPU or an offline one).
pub fn kick_cpu(index: u32) {
    if index == gdt::cpu_index() || TIMER_FREQ.load(Ordering::Acquire) == 0 {
        return;
    }
    if let Some(c) = gdt::cpu(index) {
        send_ipi(c.apic_id, KICK_VECTOR);
    }
}

/// Makes every other CPU drop its non-global TLB entries, and waits (up to
/// 100 ms) until they have: after a user mapping is removed or downgraded,
/// no other CPU may keep using the old translation. CPUs take the IPI in
/// user/guest mode or the idle loop — never while running kernel code,
/// which runs with interrupts off and holds no stale user translation
/// it could use.
pub fn tlb_shootdown() {
    let others = gdt::cpus_online().saturating_sub(1);
    if others == 0 || TIMER_FREQ.load(Ordering::Acquire) == 0 {
        return;
    }
    // A CPU waiting here runs with interrupts off, so it serves the
    // holder's request itself: otherwise the holder waits its full 100 ms
    // for an acknowledgement that cannot come (found by sysfuzz: two CPUs
    // unmapping at once slowed the host to a crawl).
    let _g = loop {
        if let Some(g) = TLB_LOCK.try_lock() {
            break g;
        }
        serve_tlb_flush();
        cpu::pause();
    };
    let g = TLB_GEN.fetch_add(1, Ordering::AcqRel) + 1;
    let me = gdt::cpu_index();
    // This CPU's own translations are its caller's to flush.
    if let Some(seen) = TLB_SEEN.get(me as usize) {
        seen.store(g, Ordering::Release);
    }
    send(Icr { shorthand: apic_regs::Shorthand::AllExcludingSelf, ..Icr::fixed(0, TLB_FLUSH_VECTOR) });
    let deadline = time::uptime_ns() + 100_000_000;
    let pending = || {
        (0..gdt::MAX_CPUS as u32)
            .any(|i| i != me && gdt::cpu(i).is_some() && TLB_SEEN[i as usize].load(Ordering::Acquire) < g)
    };
    while pending() && time::uptime_ns() < deadline {
        cpu::pause();
    }
}
