//! Monotonic time from the TSC, calibrated against the 8254 PIT.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::{self, Ports};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick in 32.32 fixed point: `uptime_ns` multiplies
/// instead of dividing (a 128-bit division is a library call of a hundred
/// instructions, on every exit and clock read).
static NS_PER_TICK_32: AtomicU64 = AtomicU64::new(0);

use vmkernel::tsc_calibration::{self as cal, PIT_HZ, Reading};

/// PIT channel 2's count, latched between two TSC reads.
fn read_pit2(p: &Ports) -> Reading {
    let tsc_before = cpu::rdtsc();
    p.outb(0x43, 0x80); // latch channel 2
    let lo = p.inb(0x42);
    let hi = p.inb(0x42);
    let tsc_after = cpu::rdtsc();
    Reading { tsc_before, count: u16::from_le_bytes([lo, hi]), tsc_after }
}

/// The least disturbed of a few back-to-back readings.
fn best_pit2(p: &Ports) -> Reading {
    let r = [read_pit2(p), read_pit2(p), read_pit2(p), read_pit2(p), read_pit2(p)];
    cal::narrowest(&r).unwrap_or(r[0])
}

/// Whether channel 2 reached its terminal count (OUT2 on port 0x61).
fn pit2_out(p: &Ports) -> bool {
    p.inb(0x61) & 0x20 != 0
}

/// Measures the TSC frequency over about `ms` (at most 40) milliseconds of
/// PIT channel 2: bracketed readings at both ends
/// (`vmkernel::tsc_calibration`), so time the CPU loses in between adds no
/// error; a run whose readings are disturbed or whose count ran out is
/// repeated (up to 5 runs, the best kept). Returns `None` if the PIT never
/// counts (no legacy PIT).
pub fn measure_tsc_hz(ms: u64) -> Option<u64> {
    // SAFETY: the PIT and port 0x61 are owned by the kernel at boot.
    let p = unsafe { Ports::new() };
    let wanted = (PIT_HZ * ms.clamp(1, 40) / 1000) as u16;
    let mut best: Option<cal::Estimate> = None;
    for _ in 0..5 {
        // Gate high, speaker off; channel 2, lobyte/hibyte, mode 0
        // (interrupt on terminal count) from 0xffff.
        let v = p.inb(0x61);
        p.outb(0x61, (v & !0x02) | 0x01);
        p.outb(0x43, 0xb0);
        p.outb(0x42, 0xff);
        p.outb(0x42, 0xff);
        // The first reading once the new count is surely loaded.
        let mut spins: u64 = 0;
        while read_pit2(&p).count > 0xfff0 {
            spins += 1;
            if spins > 20_000_000 {
                return None;
            }
        }
        let first = best_pit2(&p);
        while first.count.saturating_sub(read_pit2(&p).count) < wanted && !pit2_out(&p) {
            spins += 1;
            if spins > 200_000_000 {
                return None;
            }
        }
        let second = best_pit2(&p);
        if pit2_out(&p) {
            continue; // the count may have wrapped past 0
        }
        if let Some(e) = cal::estimate(first, second) {
            if best.is_none_or(|b| e.error_ppm < b.error_ppm) {
                best = Some(e);
            }
            if e.error_ppm <= 500 {
                break;
            }
        }
    }
    best.map(|e| e.hz)
}

pub fn calibrate() {
    TSC_AT_BOOT.store(cpu::rdtsc(), Ordering::Relaxed);
    let hz = measure_tsc_hz(30).unwrap_or(1_000_000_000);
    TSC_HZ.store(hz.max(1), Ordering::Relaxed);
    NS_PER_TICK_32.store(((1_000_000_000u128 << 32) / hz.max(1) as u128) as u64, Ordering::Relaxed);
}

/// The TSC value at which `uptime_ns` reaches `ns` (u64::MAX beyond the
/// TSC's range): a deadline checked with one RDTSC.
pub fn tsc_at_uptime(ns: u64) -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    let ticks = ns as u128 * hz as u128 / 1_000_000_000;
    u64::try_from(ticks).ok().and_then(|t| t.checked_add(TSC_AT_BOOT.load(Ordering::Relaxed))).unwrap_or(u64::MAX)
}

/// The TSC value at uptime 0.
pub fn tsc_at_boot() -> u64 {
    TSC_AT_BOOT.load(Ordering::Relaxed)
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since boot (0 before calibration).
pub fn uptime_ns() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed);
    if hz == 0 {
        return 0;
    }
    let d = cpu::rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    ((d as u128 * NS_PER_TICK_32.load(Ordering::Relaxed) as u128) >> 32) as u64
}

/// Busy-waits for `us` microseconds.
pub fn delay_us(us: u64) {
    let end = uptime_ns() + us * 1000;
    while uptime_ns() < end {
        cpu::pause();
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch from the CMOS RTC (UTC assumed).
pub fn rtc_epoch_secs() -> u64 {
    // SAFETY: the CMOS ports belong to the kernel.
    let p = unsafe { Ports::new() };
    let read = |reg: u8| {
        p.outb(0x70, reg);
        p.inb(0x71)
    };
    // Wait out an update in progress (bounded).
    for _ in 0..100_000 {
        if read(0x0a) & 0x80 == 0 {
            break;
        }
    }
    let b = read(0x0b);
    let bcd = |v: u8| if b & 0x04 != 0 { v as u64 } else { ((v >> 4) * 10 + (v & 0xf)) as u64 };
    let sec = bcd(read(0x00));
    let min = bcd(read(0x02));
    let hour = bcd(read(0x04) & 0x7f) + if b & 0x02 == 0 && read(0x04) & 0x80 != 0 { 12 } else { 0 };
    let day = bcd(read(0x07));
    let mon = bcd(read(0x08));
    let year = 2000 + bcd(read(0x09));
    days_from_civil(year as i64, mon as i64, day as i64).max(0) as u64 * 86400 + hour * 3600 + min * 60 + sec
}

static BOOT_EPOCH: spin::Once<u64> = spin::Once::new();

/// Reads the wall clock (the CMOS RTC) once, at boot.
pub fn init_wall_clock() {
    BOOT_EPOCH.call_once(rtc_epoch_secs);
}

/// Seconds since the epoch at boot (0 before `init_wall_clock`).
pub fn boot_epoch_secs() -> u64 {
    BOOT_EPOCH.get().copied().unwrap_or(0)
}

/// Wall-clock time: nanoseconds since the epoch (UTC).
pub fn realtime_ns() -> u64 {
    boot_epoch_secs() * 1_000_000_000 + uptime_ns()
}
