//! MC146818-style CMOS real-time clock (index port 0x70, data port 0x71,
//! IRQ 8) and the CMOS bytes firmware-style guests read for memory size.
//!
//! Time is the host wall-clock value given at creation plus elapsed guest
//! time; a guest that sets the clock (SET bit, then time registers) moves
//! that base. Register A's update-in-progress bit is always 0 and register D
//! reports valid RAM and time, so guests never wait for an update cycle
//! (Linux stalls ~1 s per read otherwise). Interrupt flags in register C are
//! computed from time when C is read or on [`Rtc::advance`], and cleared by
//! reading C; IRQ 8 is the level of C's IRQF bit.

pub const PORT_INDEX: u16 = 0x70;
pub const PORT_DATA: u16 = 0x71;

pub const REG_SECONDS: u8 = 0x00;
pub const REG_SECONDS_ALARM: u8 = 0x01;
pub const REG_MINUTES: u8 = 0x02;
pub const REG_MINUTES_ALARM: u8 = 0x03;
pub const REG_HOURS: u8 = 0x04;
pub const REG_HOURS_ALARM: u8 = 0x05;
pub const REG_WEEKDAY: u8 = 0x06;
pub const REG_DAY: u8 = 0x07;
pub const REG_MONTH: u8 = 0x08;
pub const REG_YEAR: u8 = 0x09;
pub const REG_A: u8 = 0x0a;
pub const REG_B: u8 = 0x0b;
pub const REG_C: u8 = 0x0c;
pub const REG_D: u8 = 0x0d;
pub const REG_CENTURY: u8 = 0x32;

pub const A_UIP: u8 = 0x80;
pub const B_SET: u8 = 0x80;
pub const B_PIE: u8 = 0x40;
pub const B_AIE: u8 = 0x20;
pub const B_UIE: u8 = 0x10;
pub const B_DM_BINARY: u8 = 0x04;
pub const B_24H: u8 = 0x02;
pub const C_IRQF: u8 = 0x80;
pub const C_PF: u8 = 0x40;
pub const C_AF: u8 = 0x20;
pub const C_UF: u8 = 0x10;
pub const D_VRT: u8 = 0x80;

const NS: u64 = 1_000_000_000;

/// What the RTC/CMOS needs to know about the VM.
#[derive(Clone, Copy, Debug)]
pub struct RtcConfig {
    /// Host wall clock (seconds since the Unix epoch, UTC) at guest time 0.
    pub wall_clock_unix_secs: i64,
    /// Guest RAM below and above 4 GiB, in bytes.
    pub ram_below_4g: u64,
    pub ram_above_4g: u64,
    pub cpus: u16,
}

/// Broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 1 = Sunday ... 7 = Saturday, as the RTC counts.
    pub weekday: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
pub fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl DateTime {
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + (month <= 2) as i64;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday (5 in RTC numbering).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, self.month.clamp(1, 12), self.day.max(1)) * 86_400
            + self.hour as i64 * 3600
            + self.minute as i64 * 60
            + self.second as i64
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

#[derive(Clone, Debug)]
pub struct Rtc {
    index: u8,
    /// Port 0x70 bit 7: NMI disabled (kept for the VMM to honour).
    pub nmi_disabled: bool,
    cmos: [u8; 128],
    /// Wall-clock seconds at guest time 0.
    base_secs: i64,
    /// While SET is on: the time being written by the guest.
    frozen: Option<DateTime>,
    reg_c: u8,
    /// Periodic-interrupt periods and whole seconds already accounted.
    periods_seen: u64,
    last_second: i64,
    now: u64,
}

impl Rtc {
    pub fn new(cfg: &RtcConfig) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A as usize] = 0x26; // 32.768 kHz divider, 1024 Hz rate
        cmos[REG_B as usize] = B_24H; // BCD, 24-hour, like PC firmware
        cmos[0x14] = 0x06; // equipment: FPU, PS/2 mouse, no floppy
        let kb = |b: u64| b / 1024;
        cmos[0x15] = (640u16 & 0xff) as u8;
        cmos[0x16] = (640u16 >> 8) as u8;
        // Extended memory (KiB above 1 MiB, max 65535), twice.
        let ext = kb(cfg.ram_below_4g).saturating_sub(1024).min(0xffff);
        cmos[0x17] = ext as u8;
        cmos[0x18] = (ext >> 8) as u8;
        cmos[0x30] = ext as u8;
        cmos[0x31] = (ext >> 8) as u8;
        // Memory above 16 MiB in 64 KiB units (max 65535).
        let above16 = (cfg.ram_below_4g.saturating_sub(16 << 20) >> 16).min(0xffff);
        cmos[0x34] = above16 as u8;
        cmos[0x35] = (above16 >> 8) as u8;
        // Memory above 4 GiB in 64 KiB units (24 bits), as SeaBIOS reads it.
        let high = (cfg.ram_above_4g >> 16).min(0xff_ffff);
        cmos[0x5b] = high as u8;
        cmos[0x5c] = (high >> 8) as u8;
        cmos[0x5d] = (high >> 16) as u8;
        cmos[0x5f] = cfg.cpus.saturating_sub(1).min(255) as u8;
        // Standard checksum over 0x10..=0x2d at 0x2e (high), 0x2f (low).
        let sum: u16 = cmos[0x10..=0x2d].iter().map(|&b| b as u16).sum();
        cmos[0x2e] = (sum >> 8) as u8;
        cmos[0x2f] = sum as u8;
        Rtc {
            index: 0,
            nmi_disabled: false,
            cmos,
            base_secs: cfg.wall_clock_unix_secs,
            frozen: None,
            reg_c: 0,
            periods_seen: 0,
            last_second: cfg.wall_clock_unix_secs,
            now: 0,
        }
    }

    fn reg_b(&self) -> u8 {
        self.cmos[REG_B as usize]
    }

    fn binary(&self) -> bool {
        self.reg_b() & B_DM_BINARY != 0
    }

    /// Wall-clock seconds at guest time `now`.
    pub fn unix_time(&self, now: u64) -> i64 {
        self.base_secs + (now / NS) as i64
    }

    fn current(&self, now: u64) -> DateTime {
        self.frozen.unwrap_or_else(|| DateTime::from_unix(self.unix_time(now)))
    }

    fn enc(&self, v: u8) -> u8 {
        if self.binary() { v } else { to_bcd(v) }
    }

    fn dec(&self, v: u8) -> u8 {
        if self.binary() { v } else { from_bcd(v) }
    }

    fn enc_hour(&self, h: u8) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.enc(h);
        }
        let h12 = if h.is_multiple_of(12) { 12 } else { h % 12 };
        self.enc(h12) | if h >= 12 { 0x80 } else { 0 }
    }

    fn dec_hour(&self, v: u8) -> u8 {
        if self.reg_b() & B_24H != 0 {
            return self.dec(v);
        }
        self.dec(v & 0x7f) % 12 + if v & 0x80 != 0 { 12 } else { 0 }
    }

    /// Period of the periodic interrupt from register A's rate select.
    fn period_ns(&self) -> Option<u64> {
        let a = self.cmos[REG_A as usize];
        let rs = a & 0x0f;
        // Only the normal 32.768 kHz time base (DV = 010) runs the divider.
        if rs == 0 || (a >> 4) & 7 != 2 {
            return None;
        }
        // Rates 1 and 2 alias 8 and 9 (256 and 128 Hz).
        let rs = if rs <= 2 { rs + 7 } else { rs };
        Some((NS << (rs - 1)) / 32_768)
    }

    fn alarm_matches(&self, t: &DateTime) -> bool {
        let ok = |reg: u8, v: u8| {
            let a = self.cmos[reg as usize];
            a >= 0xc0 || a == v
        };
        ok(REG_SECONDS_ALARM, self.enc(t.second))
            && ok(REG_MINUTES_ALARM, self.enc(t.minute))
            && ok(REG_HOURS_ALARM, self.enc_hour(t.hour))
    }

    /// Brings register C's flags up to `now`; returns the IRQ 8 level.
    pub fn advance(&mut self, now: u64) -> bool {
        self.now = self.now.max(now);
        let now = self.now;
        if let Some(p) = self.period_ns() {
            let k = now / p;
            if k > self.periods_seen {
                self.reg_c |= C_PF;
            }
            self.periods_seen = k;
        }
        if self.frozen.is_none() {
            let s = self.unix_time(now);
            if s != self.last_second {
                self.last_second = s;
                self.reg_c |= C_UF;
                if self.alarm_matches(&DateTime::from_unix(s)) {
                    self.reg_c |= C_AF;
                }
            }
        }
        let b = self.reg_b();
        let enabled = (b & B_PIE != 0 && self.reg_c & C_PF != 0)
            || (b & B_AIE != 0 && self.reg_c & C_AF != 0)
            || (b & B_UIE != 0 && self.reg_c & C_UF != 0);
        if enabled {
            self.reg_c |= C_IRQF;
        }
        self.irq_level()
    }

    pub fn irq_level(&self) -> bool {
        self.reg_c & C_IRQF != 0
    }

    /// When an enabled interrupt source next fires, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let b = self.reg_b();
        let mut next: Option<u64> = None;
        if b & B_PIE != 0
            && let Some(p) = self.period_ns() {
                next = Some((self.periods_seen + 1) * p);
            }
        if b & (B_UIE | B_AIE) != 0 && self.frozen.is_none() {
            let sec = (self.now / NS + 1) * NS;
            next = Some(next.map_or(sec, |n| n.min(sec)));
        }
        next
    }

    fn read_reg(&mut self, idx: u8, now: u64) -> u8 {
        let t = self.current(now);
        match idx {
            REG_SECONDS => self.enc(t.second),
            REG_MINUTES => self.enc(t.minute),
            REG_HOURS => self.enc_hour(t.hour),
            REG_WEEKDAY => self.enc(t.weekday),
            REG_DAY => self.enc(t.day),
            REG_MONTH => self.enc(t.month),
            REG_YEAR => self.enc(t.year.rem_euclid(100) as u8),
            REG_CENTURY => self.enc(t.year.div_euclid(100) as u8),
            REG_A => self.cmos[REG_A as usize] & !A_UIP,
            REG_C => {
                self.advance(now);
                core::mem::take(&mut self.reg_c)
            }
            REG_D => D_VRT,
            i => self.cmos[i as usize],
        }
    }

    fn write_time_field(&mut self, idx: u8, v: u8, now: u64) {
        let mut t = self.current(now);
        match idx {
            REG_SECONDS => t.second = self.dec(v).min(59),
            REG_MINUTES => t.minute = self.dec(v).min(59),
            REG_HOURS => t.hour = self.dec_hour(v).min(23),
            REG_WEEKDAY => t.weekday = self.dec(v),
            REG_DAY => t.day = self.dec(v).clamp(1, 31),
            REG_MONTH => t.month = self.dec(v).clamp(1, 12),
            REG_YEAR => t.year = t.year.div_euclid(100) * 100 + self.dec(v) as i64 % 100,
            REG_CENTURY => t.year = self.dec(v) as i64 * 100 + t.year.rem_euclid(100),
            _ => return,
        }
        if self.frozen.is_some() {
            self.frozen = Some(t);
        } else {
            self.set_time(&t, now);
        }
    }

    fn set_time(&mut self, t: &DateTime, now: u64) {
        self.base_secs = t.to_unix() - (now / NS) as i64;
        self.last_second = self.unix_time(now);
    }

    fn write_reg(&mut self, idx: u8, v: u8, now: u64) {
        match idx {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH | REG_YEAR
            | REG_CENTURY => self.write_time_field(idx, v, now),
            REG_A => {
                self.advance(now);
                self.cmos[REG_A as usize] = v & !A_UIP;
                // Restart period accounting at the new rate.
                self.periods_seen = self.period_ns().map_or(0, |p| now / p);
            }
            REG_B => {
                self.advance(now);
                let old = self.reg_b();
                // Setting SET stops updates and clears UIE.
                let v = if v & B_SET != 0 { v & !B_UIE } else { v };
                if v & B_SET != 0 && old & B_SET == 0 {
                    self.frozen = Some(self.current(now));
                }
                // Format bits change how the next write is decoded, so the
                // frozen time must be read in the old format first (done).
                self.cmos[REG_B as usize] = v;
                if v & B_SET == 0
                    && let Some(t) = self.frozen.take() {
                        self.set_time(&t, now);
                    }
            }
            REG_C | REG_D => {} // read-only
            i => self.cmos[i as usize] = v,
        }
    }

    /// Port read at 0x70 (write-only: 0xff) or 0x71.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            PORT_DATA => self.read_reg(self.index, now),
            _ => 0xff,
        }
    }

    /// Port write at 0x70 (index, bit 7 = NMI disable) or 0x71.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            PORT_INDEX => {
                self.index = value & 0x7f;
                self.nmi_disabled = value & 0x80 != 0;
            }
            PORT_DATA => self.write_reg(self.index, value, now),
            _ => {}
        }
    }

    /// Raw CMOS byte (for tests and the VMM).
    pub fn cmos_byte(&self, idx: u8) -> u8 {
        self.cmos[(idx & 0x7f) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-03 21:04:05 UTC, a Tuesday.
    const WALL: i64 = 1_793_739_845;

    fn rtc() -> Rtc {
        Rtc::new(&RtcConfig {
            wall_clock_unix_secs: WALL,
            ram_below_4g: 128 << 20,
            ram_above_4g: 0,
            cpus: 1,
        })
    }

    fn reg(r: &mut Rtc, idx: u8, now: u64) -> u8 {
        r.write(PORT_INDEX, idx, now);
        r.read(PORT_DATA, now)
    }

    fn set(r: &mut Rtc, idx: u8, v: u8, now: u64) {
        r.write(PORT_INDEX, idx, now);
        r.write(PORT_DATA, v, now);
    }

    #[test]
    fn civil_conversion() {
        let t = DateTime::from_unix(WALL);
        assert_eq!((t.year, t.month, t.day), (2026, 11, 3));
        assert_eq!((t.hour, t.minute, t.second), (21, 4, 5));
        assert_eq!(t.weekday, 3); // Tuesday
        assert_eq!(t.to_unix(), WALL);
        assert_eq!(DateTime::from_unix(0).weekday, 5); // Thursday
        let leap = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 28), 2);
    }

    #[test]
    fn reads_time_in_bcd_24h() {
        let mut r = rtc();
        assert_eq!(reg(&mut r, REG_SECONDS, 0), 0x05);
        assert_eq!(reg(&mut r, REG_MINUTES, 0), 0x04);
        assert_eq!(reg(&mut r, REG_HOURS, 0), 0x21);
        assert_eq!(reg(&mut r, REG_DAY, 0), 0x03);
        assert_eq!(reg(&mut r, REG_MONTH, 0), 0x11);
        assert_eq!(reg(&mut r, REG_YEAR, 0), 0x26);
        assert_eq!(reg(&mut r, REG_CENTURY, 0), 0x20);
        assert_eq!(reg(&mut r, REG_WEEKDAY, 0), 0x03);
        // Guest time moves the clock: 56 s later the minute rolls over.
        assert_eq!(reg(&mut r, REG_SECONDS, 56 * NS), 0x01);
        assert_eq!(reg(&mut r, REG_MINUTES, 56 * NS), 0x05);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut r = rtc();
        set(&mut r, REG_B, B_DM_BINARY | B_24H, 0);
        assert_eq!(reg(&mut r, REG_HOURS, 0), 21);
        assert_eq!(reg(&mut r, REG_YEAR, 0), 26);
        set(&mut r, REG_B, B_DM_BINARY, 0);
        assert_eq!(reg(&mut r, REG_HOURS, 0), 0x80 | 9);
        set(&mut r, REG_B, 0, 0);
        assert_eq!(reg(&mut r, REG_HOURS, 0), 0x80 | 0x09);
        // 12 AM is midnight: 3 hours later it is 00:04 -> 12 AM.
        assert_eq!(reg(&mut r, REG_HOURS, 3 * 3600 * NS), 0x12);
    }

    #[test]
    fn uip_never_set_and_vrt_set() {
        let mut r = rtc();
        for t in 0..2000 {
            assert_eq!(reg(&mut r, REG_A, t * 1_000_000) & A_UIP, 0);
        }
        assert_eq!(reg(&mut r, REG_A, 0), 0x26);
        assert_eq!(reg(&mut r, REG_D, 0), D_VRT);
        set(&mut r, REG_D, 0, 0);
        assert_eq!(reg(&mut r, REG_D, 0), D_VRT);
    }

    #[test]
    fn guest_sets_the_clock() {
        let mut r = rtc();
        set(&mut r, REG_B, B_SET | B_24H, 0);
        set(&mut r, REG_HOURS, 0x07, 0);
        set(&mut r, REG_MINUTES, 0x30, 0);
        set(&mut r, REG_SECONDS, 0x00, 0);
        // Frozen while SET is on.
        assert_eq!(reg(&mut r, REG_SECONDS, 10 * NS), 0x00);
        set(&mut r, REG_B, B_24H, 10 * NS);
        assert_eq!(reg(&mut r, REG_HOURS, 12 * NS), 0x07);
        assert_eq!(reg(&mut r, REG_MINUTES, 12 * NS), 0x30);
        assert_eq!(reg(&mut r, REG_SECONDS, 12 * NS), 0x02);
        assert_eq!(reg(&mut r, REG_DAY, 12 * NS), 0x03);
    }

    #[test]
    fn register_c_flags_are_read_to_clear() {
        let mut r = rtc();
        // Update-ended flag after a second boundary, no IRQ while UIE off.
        assert!(!r.advance(NS));
        // PF is set by the (default 1024 Hz) divider even with PIE off.
        assert_eq!(reg(&mut r, REG_C, NS), C_UF | C_PF);
        assert_eq!(reg(&mut r, REG_C, NS), 0);
        // UIE on: IRQF and the IRQ line.
        set(&mut r, REG_B, B_24H | B_UIE, NS);
        assert_eq!(r.next_deadline(), Some(2 * NS));
        assert!(r.advance(2 * NS));
        assert_eq!(reg(&mut r, REG_C, 2 * NS), C_IRQF | C_UF | C_PF);
        assert!(!r.irq_level());
    }

    #[test]
    fn periodic_interrupt_at_1024_hz() {
        let mut r = rtc();
        set(&mut r, REG_B, B_24H | B_PIE, 0);
        let p = NS / 1024;
        assert_eq!(r.next_deadline(), Some(p));
        let mut count = 0;
        let mut t = 0;
        while t < NS / 10 {
            t = r.next_deadline().unwrap();
            if r.advance(t) {
                count += 1;
                assert_eq!(reg(&mut r, REG_C, t) & (C_IRQF | C_PF), C_IRQF | C_PF);
            }
        }
        assert_eq!(count, 103); // 1024 Hz over ~100 ms
        // Rate 15 = 2 Hz.
        set(&mut r, REG_A, 0x2f, t);
        assert_eq!(r.next_deadline(), Some((t / (NS / 2) + 1) * (NS / 2)));
    }

    #[test]
    fn alarm_interrupt() {
        let mut r = rtc();
        set(&mut r, REG_B, B_24H | B_AIE, 0);
        set(&mut r, REG_SECONDS_ALARM, 0x10, 0);
        set(&mut r, REG_MINUTES_ALARM, 0xff, 0); // don't care
        set(&mut r, REG_HOURS_ALARM, 0xc0, 0);
        assert!(!r.advance(4 * NS)); // :09
        assert!(r.advance(5 * NS)); // :10
        assert_eq!(reg(&mut r, REG_C, 5 * NS) & C_AF, C_AF);
    }

    #[test]
    fn cmos_memory_size_bytes() {
        let r = Rtc::new(&RtcConfig {
            wall_clock_unix_secs: 0,
            ram_below_4g: 3 << 30,
            ram_above_4g: 1 << 30,
            cpus: 4,
        });
        assert_eq!(u16::from_le_bytes([r.cmos_byte(0x15), r.cmos_byte(0x16)]), 640);
        assert_eq!(u16::from_le_bytes([r.cmos_byte(0x17), r.cmos_byte(0x18)]), 0xffff);
        assert_eq!(u16::from_le_bytes([r.cmos_byte(0x30), r.cmos_byte(0x31)]), 0xffff);
        let above16 = u16::from_le_bytes([r.cmos_byte(0x34), r.cmos_byte(0x35)]);
        assert_eq!(above16 as u64, ((3u64 << 30) - (16 << 20)) >> 16);
        let high = u32::from_le_bytes([r.cmos_byte(0x5b), r.cmos_byte(0x5c), r.cmos_byte(0x5d), 0]);
        assert_eq!(high, (1 << 30) >> 16);
        assert_eq!(r.cmos_byte(0x5f), 3);
        let small = rtc();
        assert_eq!(u16::from_le_bytes([small.cmos_byte(0x17), small.cmos_byte(0x18)]), 0xffff);
        assert_eq!(u16::from_le_bytes([small.cmos_byte(0x34), small.cmos_byte(0x35)]), 112 * 16);
    }

    #[test]
    fn index_port_nmi_bit_and_scratch_bytes() {
        let mut r = rtc();
        r.write(PORT_INDEX, 0x80 | 0x40, 0);
        assert!(r.nmi_disabled);
        r.write(PORT_DATA, 0xab, 0);
        assert_eq!(r.read(PORT_DATA, 0), 0xab);
        r.write(PORT_INDEX, 0x40, 0);
        assert!(!r.nmi_disabled);
        assert_eq!(r.read(PORT_DATA, 0), 0xab);
        assert_eq!(r.read(PORT_INDEX, 0), 0xff);
    }
}
