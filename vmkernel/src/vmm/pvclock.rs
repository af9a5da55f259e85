//! A KVM-compatible paravirtual clock ("kvmclock"), so a stock Linux guest
//! (`CONFIG_KVM_GUEST=y`) knows its TSC frequency and time without
//! calibrating against emulated timers.
//!
//! The hypervisor leaves at [`KVM_CPUID_BASE`] say "KVMKVMKVM" (Linux scans
//! 0x40000000–0x4000ff00 in steps of 0x100, so Mantle's own leaf at
//! 0x40000000 stays) and offer `KVM_FEATURE_CLOCKSOURCE2` (the MSRs at
//! 0x4b564d00/01), `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT` and
//! `KVM_FEATURE_NOP_IO_DELAY`. The guest writes the guest-physical address
//! of a `pvclock_vcpu_time_info` per vCPU (bit 0 = enable) and of a
//! `pvclock_wall_clock`; the VMM fills them in:
//!
//! - system time = `system_time + scale(tsc - tsc_timestamp)`, with the
//!   same `(tsc_timestamp, system_time)` pair for every vCPU: the VM's clock
//!   starts at 0 when the VM is powered on (host TSC `epoch_tsc`), and the
//!   TSC is constant-rate and synchronised, so the structure never needs
//!   updating (`PVCLOCK_TSC_STABLE_BIT`);
//! - wall clock = the host's real time at system time 0.

/// First hypervisor leaf of the KVM interface.
pub const KVM_CPUID_BASE: u32 = 0x4000_0100;
pub const KVM_CPUID_FEATURES: u32 = KVM_CPUID_BASE + 1;
pub const KVM_FEATURE_NOP_IO_DELAY: u32 = 1 << 1;
pub const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
pub const KVM_FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `pvclock_vcpu_time_info.flags`: the TSC is stable across vCPUs.
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
pub const TIME_INFO_SIZE: usize = 32;
pub const WALL_CLOCK_SIZE: usize = 12;

/// The KVM hypervisor leaves (`None` outside them).
pub fn cpuid(leaf: u32) -> Option<[u32; 4]> {
    match leaf {
        KVM_CPUID_BASE => {
            let s = b"KVMKVMKVM\0\0\0";
            let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
            Some([KVM_CPUID_FEATURES, w(0), w(4), w(8)])
        }
        KVM_CPUID_FEATURES => {
            Some([KVM_FEATURE_NOP_IO_DELAY | KVM_FEATURE_CLOCKSOURCE2 | KVM_FEATURE_CLOCKSOURCE_STABLE_BIT, 0, 0, 0])
        }
        _ => None,
    }
}

/// Whether `msr` is one of the kvmclock MSRs.
pub fn handles_msr(msr: u32) -> bool {
    matches!(msr, MSR_KVM_WALL_CLOCK_NEW | MSR_KVM_SYSTEM_TIME_NEW)
}

/// TSC ticks → nanoseconds as pvclock scales them:
/// `ns = ((ticks << shift) * mul) >> 32` (a right shift when negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeScale {
    pub mul: u32,
    pub shift: i8,
}

impl TimeScale {
    /// The scale for a TSC of `tsc_hz` (1 kHz ..= 2^40 Hz): `mul` in
    /// [2^31, 2^32) for the most precision a 32-bit fraction gives.
    pub fn for_hz(tsc_hz: u64) -> TimeScale {
        let hz = tsc_hz.clamp(1000, 1 << 40) as u128;
        let mul_for = |shift: i32| -> u128 {
            // ns per (tick << shift), as a 32.32 fraction.
            if shift >= 0 { (1_000_000_000u128 << 32) / (hz << shift) } else { (1_000_000_000u128 << (32 - shift)) / hz }
        };
        let mut shift = 0i32;
        while mul_for(shift) >= 1 << 32 {
            shift += 1;
        }
        while mul_for(shift) < 1 << 31 {
            shift -= 1;
        }
        TimeScale { mul: mul_for(shift) as u32, shift: shift as i8 }
    }

    /// Nanoseconds for `ticks`, exactly as the guest computes them.
    pub fn ns(&self, ticks: u64) -> u64 {
        let d = if self.shift >= 0 { ticks << self.shift } else { ticks >> -self.shift };
        ((d as u128 * self.mul as u128) >> 32) as u64
    }
}

/// The VM's paravirtual clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmClock {
    /// Guest TSC when the VM's clock read 0 (power-on).
    pub epoch_tsc: u64,
    pub scale: TimeScale,
}

impl KvmClock {
    pub fn new(epoch_tsc: u64, tsc_hz: u64) -> KvmClock {
        KvmClock { epoch_tsc, scale: TimeScale::for_hz(tsc_hz) }
    }

    /// The VM's clock (ns since power-on) at guest TSC `tsc`.
    pub fn ns_at(&self, tsc: u64) -> u64 {
        self.scale.ns(tsc.wrapping_sub(self.epoch_tsc))
    }

    /// `pvclock_vcpu_time_info` (version even: not being updated).
    pub fn time_info(&self) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0u8; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[8..16].copy_from_slice(&self.epoch_tsc.to_le_bytes());
        b[16..24].copy_from_slice(&0u64.to_le_bytes());
        b[24..28].copy_from_slice(&self.scale.mul.to_le_bytes());
        b[28] = self.scale.shift as u8;
        b[29] = PVCLOCK_TSC_STABLE_BIT;
        b
    }

    /// `pvclock_wall_clock`: the real time (Unix ns) at the VM clock's 0,
    /// given the real time `realtime_ns` at guest TSC `tsc`.
    pub fn wall_clock(&self, realtime_ns: u64, tsc: u64) -> [u8; WALL_CLOCK_SIZE] {
        let boot = realtime_ns.saturating_sub(self.ns_at(tsc));
        let mut b = [0u8; WALL_CLOCK_SIZE];
        b[0..4].copy_from_slice(&2u32.to_le_bytes());
        b[4..8].copy_from_slice(&((boot / 1_000_000_000) as u32).to_le_bytes());
        b[8..12].copy_from_slice(&((boot % 1_000_000_000) as u32).to_le_bytes());
        b
    }
}

/// A write to a kvmclock MSR: where to put which bytes, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockWrite {
    TimeInfo { gpa: u64, bytes: [u8; TIME_INFO_SIZE] },
    WallClock { gpa: u64, bytes: [u8; WALL_CLOCK_SIZE] },
    /// The guest turned its time structure off.
    Disabled,
}

impl KvmClock {
    /// What the guest's WRMSR asks for. The time-info address has the
    /// enable flag in bit 0 and must be 4-byte aligned (KVM's rule).
    pub fn msr_write(&self, msr: u32, value: u64, realtime_ns: u64, tsc: u64) -> Option<ClockWrite> {
        match msr {
            MSR_KVM_SYSTEM_TIME_NEW if value & 1 == 0 => Some(ClockWrite::Disabled),
            MSR_KVM_SYSTEM_TIME_NEW => Some(ClockWrite::TimeInfo { gpa: value & !0x3, bytes: self.time_info() }),
            MSR_KVM_WALL_CLOCK_NEW => Some(ClockWrite::WallClock { gpa: value, bytes: self.wall_clock(realtime_ns, tsc) }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guest's pvclock read (Linux `__pvclock_read_cycles`).
    fn guest_read(info: &[u8; 32], tsc: u64) -> u64 {
        let ts = u64::from_le_bytes(info[8..16].try_into().unwrap());
        let st = u64::from_le_bytes(info[16..24].try_into().unwrap());
        let mul = u32::from_le_bytes(info[24..28].try_into().unwrap());
        let shift = info[28] as i8;
        let mut d = tsc - ts;
        d = if shift < 0 { d >> -shift } else { d << shift };
        st + ((d as u128 * mul as u128) >> 32) as u64
    }

    #[test]
    fn scale_is_accurate_for_common_frequencies() {
        for hz in [1_000_000u64, 100_000_000, 999_999_999, 1_000_000_000, 2_445_411_000, 3_999_999_999, 5_000_000_000] {
            let s = TimeScale::for_hz(hz);
            assert!(s.mul >= 1 << 31, "{hz}: {s:?}");
            // One hour of ticks, within 2 ppb + 1 ns of the exact value.
            let ticks = hz * 3600;
            let exact = 3_600_000_000_000u64;
            let got = s.ns(ticks);
            assert!(got.abs_diff(exact) <= exact / 500_000_000 + 1, "{hz}: {got} vs {exact} ({s:?})");
            assert_eq!(s.ns(0), 0);
        }
        assert_eq!(TimeScale::for_hz(2_000_000_000), TimeScale { mul: 1 << 31, shift: 0 });
        assert_eq!(TimeScale::for_hz(1_000_000_000), TimeScale { mul: 1 << 31, shift: 1 }, "1 GHz is exact");
        assert_eq!(TimeScale::for_hz(1_000_000_000).ns(1234), 1234);
    }

    #[test]
    fn time_info_as_the_guest_reads_it() {
        let c = KvmClock::new(5_000_000_000, 2_500_000_000);
        let info = c.time_info();
        assert_eq!(u32::from_le_bytes(info[0..4].try_into().unwrap()) % 2, 0, "version even");
        assert_eq!(info[29] & PVCLOCK_TSC_STABLE_BIT, PVCLOCK_TSC_STABLE_BIT);
        assert_eq!(guest_read(&info, 5_000_000_000), 0);
        let one_s = guest_read(&info, 5_000_000_000 + 2_500_000_000);
        assert!(one_s.abs_diff(1_000_000_000) <= 1, "{one_s}");
        assert_eq!(guest_read(&info, 7_500_000_000), c.ns_at(7_500_000_000));
    }

    #[test]
    fn wall_clock_is_real_time_at_power_on() {
        let c = KvmClock::new(1_000, 1_000_000_000);
        // 3 s after power-on, real time is 1_800_000_003.25 s.
        let w = c.wall_clock(1_800_000_003_250_000_000, 1_000 + 3_000_000_000);
        let sec = u32::from_le_bytes(w[4..8].try_into().unwrap());
        let nsec = u32::from_le_bytes(w[8..12].try_into().unwrap());
        assert_eq!(sec, 1_800_000_000);
        assert!(nsec.abs_diff(250_000_000) <= 4, "{nsec}");
    }

    #[test]
    fn msr_writes_and_cpuid() {
        let c = KvmClock::new(0, 1_000_000_000);
        assert_eq!(c.msr_write(MSR_KVM_SYSTEM_TIME_NEW, 0x1234_5000, 0, 0), Some(ClockWrite::Disabled));
        match c.msr_write(MSR_KVM_SYSTEM_TIME_NEW, 0x1234_5041, 0, 0) {
            Some(ClockWrite::TimeInfo { gpa, .. }) => assert_eq!(gpa, 0x1234_5040),
            other => panic!("{other:?}"),
        }
        assert!(matches!(c.msr_write(MSR_KVM_WALL_CLOCK_NEW, 0x9000, 5, 0), Some(ClockWrite::WallClock { gpa: 0x9000, .. })));
        assert_eq!(c.msr_write(0x10, 0, 0, 0), None);
        assert!(handles_msr(MSR_KVM_WALL_CLOCK_NEW) && handles_msr(MSR_KVM_SYSTEM_TIME_NEW) && !handles_msr(0x11));
        let base = cpuid(KVM_CPUID_BASE).unwrap();
        assert_eq!(base[0], KVM_CPUID_FEATURES);
        let sig: Vec<u8> = base[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert_ne!(cpuid(KVM_CPUID_FEATURES).unwrap()[0] & KVM_FEATURE_CLOCKSOURCE2, 0);
        assert_eq!(cpuid(0x4000_0000), None);
    }
}
