//! Register encodings for the local APIC and the IOAPIC (no hardware access).
//!
//! The kernel's `arch::apic`, `arch::ioapic` and `arch::smp` write these
//! values; keeping the bit layouts here lets the host tests check them
//! against the Intel SDM (vol. 3, ch. 11) and the 82093AA IOAPIC datasheet.

/// ICR delivery modes (bits 8..=10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Delivery {
    Fixed = 0b000,
    LowestPriority = 0b001,
    Smi = 0b010,
    Nmi = 0b100,
    Init = 0b101,
    StartUp = 0b110,
}

/// ICR destination shorthands (bits 18..=19).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Shorthand {
    None = 0b00,
    SelfOnly = 0b01,
    AllIncludingSelf = 0b10,
    AllExcludingSelf = 0b11,
}

/// An interrupt command (inter-processor interrupt) for the ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    pub vector: u8,
    pub delivery: Delivery,
    /// Level: assert (1) or de-assert (0). Only INIT de-assert uses 0.
    pub assert: bool,
    /// Trigger mode: level (only INIT de-assert needs it).
    pub level_triggered: bool,
    pub shorthand: Shorthand,
    /// Physical destination APIC ID (ignored with a shorthand).
    pub dest: u32,
}

impl Icr {
    /// A fixed-vector IPI to one CPU.
    pub const fn fixed(dest: u32, vector: u8) -> Self {
        Icr { vector, delivery: Delivery::Fixed, assert: true, level_triggered: false, shorthand: Shorthand::None, dest }
    }

    /// INIT (assert): puts the target into wait-for-SIPI.
    pub const fn init(dest: u32) -> Self {
        Icr { vector: 0, delivery: Delivery::Init, assert: true, level_triggered: true, shorthand: Shorthand::None, dest }
    }

    /// INIT level de-assert (needed only by pre-Pentium-4 APICs, harmless after).
    pub const fn init_deassert(dest: u32) -> Self {
        Icr { vector: 0, delivery: Delivery::Init, assert: false, level_triggered: true, shorthand: Shorthand::None, dest }
    }

    /// START-UP: the target starts in real mode at `vector << 12`.
    pub const fn startup(dest: u32, vector: u8) -> Self {
        Icr { vector, delivery: Delivery::StartUp, assert: true, level_triggered: false, shorthand: Shorthand::None, dest }
    }

    /// NMI to every CPU but the sender (the fatal-stop broadcast).
    pub const fn nmi_all_but_self() -> Self {
        Icr {
            vector: 0,
            delivery: Delivery::Nmi,
            assert: true,
            level_triggered: false,
            shorthand: Shorthand::AllExcludingSelf,
            dest: 0,
        }
    }

    /// The low 32 bits (the same layout in both modes).
    pub const fn low(&self) -> u32 {
        self.vector as u32
            | (self.delivery as u32) << 8
            | (self.assert as u32) << 14
            | (self.level_triggered as u32) << 15
            | (self.shorthand as u32) << 18
    }

    /// xAPIC: (ICR high at 0x310, ICR low at 0x300). The 8-bit destination
    /// sits in bits 24..=31 of the high word. Write high first: writing the
    /// low word sends the IPI.
    pub const fn xapic(&self) -> (u32, u32) {
        ((self.dest & 0xff) << 24, self.low())
    }

    /// x2APIC: one 64-bit MSR write (0x830), 32-bit destination in 32..=63.
    pub const fn x2apic(&self) -> u64 {
        (self.dest as u64) << 32 | self.low() as u64
    }
}

/// The START-UP vector for a trampoline at `phys`: page-aligned and below
/// 1 MiB, since the AP starts in real mode at CS = vector << 8, IP = 0.
pub const fn startup_vector(phys: u64) -> Option<u8> {
    if phys & 0xfff != 0 || phys >= 0x10_0000 {
        return None;
    }
    Some((phys >> 12) as u8)
}

/// LAPIC timer divide-configuration register value for `divisor`
/// (1, 2, 4, ..., 128). The value's bits 0, 1 and 3 encode log2(div) - 1
/// modulo 8, i.e. divide-by-1 is 0b1011.
pub const fn timer_divide_config(divisor: u32) -> Option<u32> {
    if !divisor.is_power_of_two() || divisor > 128 {
        return None;
    }
    let code = (divisor.trailing_zeros() + 7) % 8; // 1 -> 7, 2 -> 0, ..., 128 -> 6
    Some((code & 0b11) | (code & 0b100) << 1)
}

/// The timer's count rate from a calibration run: `counted` ticks of the
/// (divided) timer during `elapsed_ns` nanoseconds.
pub const fn timer_hz_from_calibration(counted: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return 0;
    }
    (counted as u128 * 1_000_000_000 / elapsed_ns as u128) as u64
}

/// Initial count for a periodic timer firing `tick_hz` times a second on a
/// timer counting at `timer_hz` (rounded to nearest, at least 1).
pub const fn timer_initial_count(timer_hz: u64, tick_hz: u64) -> u32 {
    if tick_hz == 0 {
        return u32::MAX;
    }
    let c = (timer_hz + tick_hz / 2) / tick_hz;
    if c == 0 {
        1
    } else if c > u32::MAX as u64 {
        u32::MAX
    } else {
        c as u32
    }
}

/// Events per second from `count` events over `elapsed_ns`, rounded.
pub const fn rate_hz(count: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return 0;
    }
    ((count as u128 * 1_000_000_000 + elapsed_ns as u128 / 2) / elapsed_ns as u128) as u64
}

/// Number of redirection entries from the IOAPIC version register (index 1):
/// bits 16..=23 hold the highest entry's index.
pub const fn ioapic_entries(version_reg: u32) -> u32 {
    ((version_reg >> 16) & 0xff) + 1
}

/// An IOAPIC redirection-table entry (fixed delivery, physical destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirection {
    pub vector: u8,
    pub active_low: bool,
    pub level_triggered: bool,
    pub masked: bool,
    /// Physical APIC ID; the field has 8 bits (no interrupt remapping).
    pub dest: u8,
}

impl Redirection {
    /// A masked entry with nothing else set (what init writes everywhere).
    pub const MASKED: Redirection =
        Redirection { vector: 0, active_low: false, level_triggered: false, masked: true, dest: 0 };

    /// The 64-bit entry: low word at register 0x10 + 2n, high at 0x11 + 2n.
    pub const fn encode(&self) -> u64 {
        // Delivery mode fixed (000), destination mode physical (bit 11 = 0).
        self.vector as u64
            | (self.active_low as u64) << 13
            | (self.level_triggered as u64) << 15
            | (self.masked as u64) << 16
            | (self.dest as u64) << 56
    }

    pub const fn low(&self) -> u32 {
        self.encode() as u32
    }

    pub const fn high(&self) -> u32 {
        (self.encode() >> 32) as u32
    }
}

/// Where an ISA IRQ arrives and how it signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaRoute {
    pub gsi: u32,
    pub active_low: bool,
    pub level_triggered: bool,
}

/// Applies the MADT interrupt source overrides, given as `(irq, gsi, flags)`
/// with MPS INTI flags: polarity in bits 0..=1 (00 bus default, 01 high,
/// 11 low), trigger in bits 2..=3 (00 bus default, 01 edge, 11 level). The
/// ISA bus default is active-high, edge-triggered, GSI = IRQ.
pub fn isa_route(overrides: impl IntoIterator<Item = (u8, u32, u16)>, irq: u8) -> IsaRoute {
    for (o_irq, gsi, flags) in overrides {
        if o_irq == irq {
            return IsaRoute { gsi, active_low: flags & 0b11 == 0b11, level_triggered: (flags >> 2) & 0b11 == 0b11 };
        }
    }
    IsaRoute { gsi: irq as u32, active_low: false, level_triggered: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_sipi_encodings_match_the_sdm() {
        // The SDM's example values (vol. 3, 9.4.4.1): INIT = 0x000c4500 and
        // SIPI = 0x000c4608 broadcast; here without the shorthand and with
        // INIT level-triggered as for a targeted INIT.
        assert_eq!(Icr::init(3).xapic(), (3 << 24, 0x0000_c500));
        assert_eq!(Icr::init_deassert(3).xapic(), (3 << 24, 0x0000_8500));
        assert_eq!(Icr::startup(1, 0x08).xapic(), (1 << 24, 0x0000_4608));
        assert_eq!(Icr::startup(0x1234, 0x08).x2apic(), 0x0000_1234_0000_4608);
    }

    #[test]
    fn fixed_and_nmi_ipis() {
        assert_eq!(Icr::fixed(2, 0x40).xapic(), (2 << 24, 0x4040));
        assert_eq!(Icr::fixed(7, 0xfd).x2apic(), 7 << 32 | 0x40fd);
        // NMI (100 << 8), assert, all-excluding-self (11 << 18).
        assert_eq!(Icr::nmi_all_but_self().low(), 0x000c_4400);
        assert_eq!(Icr::nmi_all_but_self().xapic().0, 0);
    }

    #[test]
    fn xapic_destination_is_8_bits() {
        assert_eq!(Icr::fixed(0x1ff, 0x30).xapic().0, 0xff << 24);
    }

    #[test]
    fn startup_vector_needs_page_below_1mib() {
        assert_eq!(startup_vector(0x8000), Some(8));
        assert_eq!(startup_vector(0x9f000), Some(0x9f));
        assert_eq!(startup_vector(0x8010), None);
        assert_eq!(startup_vector(0x10_0000), None);
    }

    #[test]
    fn divide_config_table() {
        // SDM table: div 2 = 0000, 4 = 0001, 8 = 0010, 16 = 0011,
        // 32 = 1000, 64 = 1001, 128 = 1010, 1 = 1011.
        let want = [(1, 0b1011), (2, 0b0000), (4, 0b0001), (8, 0b0010), (16, 0b0011), (32, 0b1000), (64, 0b1001), (128, 0b1010)];
        for (div, v) in want {
            assert_eq!(timer_divide_config(div), Some(v), "divide by {div}");
        }
        assert_eq!(timer_divide_config(3), None);
        assert_eq!(timer_divide_config(256), None);
        assert_eq!(timer_divide_config(0), None);
    }

    #[test]
    fn timer_counts() {
        // QEMU's LAPIC: 1 GHz / 16 = 62.5 MHz; 10 ms measured.
        let hz = timer_hz_from_calibration(625_000, 10_000_000);
        assert_eq!(hz, 62_500_000);
        assert_eq!(timer_initial_count(hz, 100), 625_000);
        assert_eq!(timer_initial_count(150, 100), 2); // rounds to nearest
        assert_eq!(timer_initial_count(10, 100), 1); // never 0 (0 stops the timer)
        assert_eq!(timer_initial_count(u64::MAX / 2, 1), u32::MAX);
        assert_eq!(timer_hz_from_calibration(5, 0), 0);
    }

    #[test]
    fn rates() {
        assert_eq!(rate_hz(20, 200_000_000), 100);
        assert_eq!(rate_hz(19, 200_000_000), 95);
        assert_eq!(rate_hz(21, 210_000_000), 100);
        assert_eq!(rate_hz(1, 0), 0);
    }

    #[test]
    fn ioapic_version_register() {
        // QEMU's IOAPIC: version 0x20, 24 entries (max index 23).
        assert_eq!(ioapic_entries(0x0017_0020), 24);
        assert_eq!(ioapic_entries(0x00ff_0011), 256);
    }

    #[test]
    fn redirection_entries() {
        assert_eq!(Redirection::MASKED.encode(), 1 << 16);
        let r = Redirection { vector: 0x24, active_low: false, level_triggered: false, masked: false, dest: 1 };
        assert_eq!(r.low(), 0x24);
        assert_eq!(r.high(), 0x0100_0000);
        let r = Redirection { vector: 0x29, active_low: true, level_triggered: true, masked: true, dest: 0xff };
        assert_eq!(r.low(), 0x0001_a029);
        assert_eq!(r.high(), 0xff00_0000);
    }

    #[test]
    fn isa_overrides() {
        // QEMU's MADT: IRQ0 -> GSI2 (bus default flags), IRQ 5, 9, 10, 11
        // level/active-high, as `-M pc` reports them.
        let ovr = [(0u8, 2u32, 0u16), (5, 5, 0x000d), (9, 9, 0x000d), (10, 10, 0x000f)];
        assert_eq!(isa_route(ovr, 0), IsaRoute { gsi: 2, active_low: false, level_triggered: false });
        assert_eq!(isa_route(ovr, 9), IsaRoute { gsi: 9, active_low: false, level_triggered: true });
        assert_eq!(isa_route(ovr, 10), IsaRoute { gsi: 10, active_low: true, level_triggered: true });
        // No override: identity, ISA defaults.
        assert_eq!(isa_route(ovr, 4), IsaRoute { gsi: 4, active_low: false, level_triggered: false });
        // Explicit edge/active-high (01/01).
        assert_eq!(isa_route([(1u8, 1u32, 0x0005u16)], 1), IsaRoute { gsi: 1, active_low: false, level_triggered: false });
    }
}
