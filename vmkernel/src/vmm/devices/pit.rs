//! 8254 programmable interval timer (ports 0x40-0x43) and the channel 2
//! gate/output bits of port 0x61 (NMI status and control).
//!
//! Counters are not ticked: each channel remembers when it started counting
//! and from which value, and its count and OUT level are computed from the
//! guest time passed in (1.193182 MHz input clock). Channel 0's OUT rising
//! edges are IRQ 0: [`Pit::advance`] returns how many happened since the last
//! call and [`Pit::next_irq0_ns`] says when the next one is due, so the VMM
//! can arm a host timer instead of polling.
//!
//! Supported modes: 0 (interrupt on terminal count), 1 and 5 (treated as 0
//! and 4, triggered by a gate edge), 2 (rate generator), 3 (square wave),
//! 4 (software-triggered strobe). BCD counting is recorded in the status but
//! counts are binary.

/// Input clock of the 8254 on a PC (Hz).
pub const PIT_HZ: u64 = 1_193_182;

pub const PORT_CH0: u16 = 0x40;
pub const PORT_CH1: u16 = 0x41;
pub const PORT_CH2: u16 = 0x42;
pub const PORT_MODE: u16 = 0x43;
pub const PORT_61: u16 = 0x61;

const NS_PER_S: u128 = 1_000_000_000;

/// Whole PIT clocks in `ns` nanoseconds.
pub fn ns_to_ticks(ns: u64) -> u64 {
    (ns as u128 * PIT_HZ as u128 / NS_PER_S) as u64
}

/// The first nanosecond by which `ticks` clocks have elapsed.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    (ticks as u128 * NS_PER_S).div_ceil(PIT_HZ as u128) as u64
}

/// Read/write access mode of a counter (control word bits 5..4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Access {
    Latch = 0,
    Lsb = 1,
    Msb = 2,
    #[default]
    LsbMsb = 3,
}

impl Access {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            1 => Access::Lsb,
            2 => Access::Msb,
            3 => Access::LsbMsb,
            _ => Access::Latch,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Channel {
    pub mode: u8,
    pub access: Access,
    pub bcd: bool,
    /// Reload value, 1..=65536 (a written 0 means 65536).
    pub reload: u32,
    /// A count has been written and counting has (or will have) started.
    armed: bool,
    /// Counting since `start_ns` from `start_value`; `None` while the gate
    /// stops it.
    start_ns: Option<u64>,
    start_value: u32,
    /// Modes 0/1/4/5: terminal count already passed before a pause.
    fired: bool,
    pub gate: bool,
    null_count: bool,
    /// Write state for lsb/msb access: low byte written, waiting for high.
    write_lsb: Option<u8>,
    /// Read state for lsb/msb access: next read returns the high byte.
    read_msb_next: bool,
    /// Latched count (and whether its low byte was read for lsb/msb).
    latched_count: Option<u16>,
    latched_msb_next: bool,
    latched_status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel { gate, reload: 0x10000, ..Default::default() }
    }

    fn ticks_since_start(&self, now: u64) -> Option<u64> {
        self.start_ns.map(|s| ns_to_ticks(now.saturating_sub(s)))
    }

    /// The counting element's value at `now` (16 bits, 0 meaning 65536).
    pub fn count(&self, now: u64) -> u16 {
        if !self.armed {
            return self.start_value as u16;
        }
        let Some(t) = self.ticks_since_start(now) else {
            return self.start_value as u16;
        };
        let n = self.reload as u64;
        match self.mode {
            2 => (n - t % n) as u16,
            // Square wave counts down by two each clock, twice per period.
            3 => (n - (2 * t) % n) as u16 & !1,
            // One-shot modes keep counting down (wrapping) after terminal count.
            _ => (self.start_value as u64).wrapping_sub(t) as u16,
        }
    }

    /// The OUT pin at `now`.
    pub fn out(&self, now: u64) -> bool {
        if !self.armed {
            // After a mode write OUT is low in mode 0 and high otherwise.
            return self.mode != 0 && self.mode != 1;
        }
        let t = self.ticks_since_start(now);
        let n = self.reload as u64;
        match (self.mode, t) {
            (0 | 1, None) => self.fired,
            (0 | 1, Some(t)) => self.fired || t >= self.start_value as u64,
            (2, Some(t)) => t % n != n - 1,
            (3, Some(t)) => t % n < n.div_ceil(2),
            (4 | 5, Some(t)) => self.fired || t != self.start_value as u64,
            _ => true, // 2/3/4/5 with the gate low: OUT high
        }
    }

    /// OUT rising edges up to `now` since counting started (IRQ 0 source).
    fn edges(&self, now: u64) -> u64 {
        let (Some(t), true) = (self.ticks_since_start(now), self.armed) else {
            return 0;
        };
        let n = self.reload as u64;
        match self.mode {
            2 | 3 => t / n,
            _ if self.fired => 0,
            // Mode 0 rises at terminal count; mode 4's strobe ends one clock
            // later — counted at terminal count too, for one event per shot.
            _ => (t >= self.start_value as u64) as u64,
        }
    }

    /// Guest time of the next OUT rising edge after `edges_seen` edges.
    fn next_edge_ns(&self, edges_seen: u64) -> Option<u64> {
        let start = self.start_ns?;
        if !self.armed {
            return None;
        }
        let n = self.reload as u64;
        let ticks = match self.mode {
            2 | 3 => (edges_seen + 1).checked_mul(n)?,
            _ if self.fired || edges_seen > 0 => return None,
            _ => self.start_value as u64,
        };
        Some(start + ticks_to_ns(ticks))
    }

    fn control_bits(&self) -> u8 {
        (self.access as u8) << 4 | self.mode << 1 | self.bcd as u8
    }

    fn status(&self, now: u64) -> u8 {
        (self.out(now) as u8) << 7 | (self.null_count as u8) << 6 | self.control_bits()
    }

    /// Loads a new count (after the full count is written).
    fn load(&mut self, value: u16, now: u64) {
        self.reload = if value == 0 { 0x10000 } else { value as u32 };
        self.null_count = false;
        // A running mode 2/3 counter would switch to the new count at the
        // end of its period; restarting now is off by at most one period
        // and keeps the IRQ 0 accounting simple.
        self.armed = true;
        self.fired = false;
        self.start_value = self.reload;
        // Modes 1 and 5 wait for a gate rising edge.
        let wait_trigger = matches!(self.mode, 1 | 5);
        self.start_ns = (self.gate && !wait_trigger).then_some(now);
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate == self.gate {
            return;
        }
        self.gate = gate;
        if !self.armed {
            return;
        }
        match (self.mode, gate) {
            // Modes 0 and 4: the gate pauses counting.
            (0 | 4, false) => {
                let count = self.count(now);
                if self.ticks_since_start(now).is_some_and(|t| t >= self.start_value as u64) {
                    self.fired = true;
                }
                self.start_value = if count == 0 { 0x10000 } else { count as u32 };
                self.start_ns = None;
            }
            (0 | 4, true) => self.start_ns = Some(now),
            // Modes 2 and 3: gate low stops; a rising edge reloads.
            (2 | 3, false) => self.start_ns = None,
            (2 | 3, true) => self.start_ns = Some(now),
            // Modes 1 and 5: a rising edge (re)triggers.
            (1 | 5, true) => {
                self.start_value = self.reload;
                self.fired = false;
                self.start_ns = Some(now);
            }
            _ => {}
        }
    }

    fn write_control(&mut self, access: Access, mode: u8, bcd: bool) {
        self.access = access;
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = bcd;
        self.armed = false;
        self.fired = false;
        self.start_ns = None;
        self.null_count = true;
        self.write_lsb = None;
        self.read_msb_next = false;
    }

    fn latch(&mut self, now: u64) {
        // A second latch before the first is read is ignored.
        if self.latched_count.is_none() {
            self.latched_count = Some(self.count(now));
            self.latched_msb_next = false;
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.latched_status.take() {
            return s;
        }
        let (value, msb) = match self.latched_count {
            Some(v) => {
                let msb = match self.access {
                    Access::Msb => true,
                    Access::LsbMsb => self.latched_msb_next,
                    _ => false,
                };
                if self.access == Access::LsbMsb && !msb {
                    self.latched_msb_next = true;
                } else {
                    self.latched_count = None;
                }
                (v, msb)
            }
            None => {
                let msb = match self.access {
                    Access::Msb => true,
                    Access::LsbMsb => {
                        let m = self.read_msb_next;
                        self.read_msb_next = !m;
                        m
                    }
                    _ => false,
                };
                (self.count(now), msb)
            }
        };
        if msb { (value >> 8) as u8 } else { value as u8 }
    }

    fn write(&mut self, v: u8, now: u64) {
        match self.access {
            Access::Lsb => self.load(v as u16, now),
            Access::Msb => self.load((v as u16) << 8, now),
            Access::LsbMsb => match self.write_lsb.take() {
                None => {
                    self.write_lsb = Some(v);
                    // Mode 0: writing the first byte stops the count.
                    if self.mode == 0 {
                        self.start_value = self.count(now) as u32;
                        self.armed = false;
                    }
                }
                Some(lo) => self.load((v as u16) << 8 | lo as u16, now),
            },
            Access::Latch => {}
        }
    }
}

/// The three channels plus port 0x61 state.
#[derive(Clone, Debug)]
pub struct Pit {
    pub channels: [Channel; 3],
    /// Channel 0 OUT rising edges already reported by `advance`.
    irq0_edges_seen: u64,
    /// Port 0x61 bits 0..=3 (gate 2, speaker enable, parity/IOCHK enables).
    port61: u8,
    refresh: bool,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    pub fn new() -> Self {
        // Channels 0 and 1 have their gates tied high; channel 2's gate is
        // port 0x61 bit 0.
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            irq0_edges_seen: 0,
            port61: 0,
            refresh: false,
        }
    }

    /// Port read: 0x40-0x42 counters, 0x43 (reads nothing: 0xff), 0x61.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            PORT_CH0..=PORT_CH2 => self.channels[(port - PORT_CH0) as usize].read(now),
            PORT_61 => {
                // Bit 4 is the DRAM refresh toggle: flipped on every read so
                // delay loops that count toggles always make progress.
                self.refresh = !self.refresh;
                let out2 = self.channels[2].out(now);
                (self.port61 & 0x0f) | (self.refresh as u8) << 4 | (out2 as u8) << 5
            }
            _ => 0xff,
        }
    }

    /// Port write: counters, the mode/command register, port 0x61.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            PORT_CH0..=PORT_CH2 => {
                let i = (port - PORT_CH0) as usize;
                self.channels[i].write(value, now);
                if i == 0 {
                    self.irq0_edges_seen = 0;
                }
            }
            PORT_MODE => self.write_command(value, now),
            PORT_61 => {
                self.port61 = value & 0x0f;
                self.channels[2].set_gate(value & 1 != 0, now);
            }
            _ => {}
        }
    }

    fn write_command(&mut self, v: u8, now: u64) {
        let sc = v >> 6;
        if sc == 3 {
            // Read-back: bit 5 clear = latch count, bit 4 clear = latch status,
            // bits 1..=3 select channels 0..=2.
            for i in 0..3 {
                if v & (2 << i) == 0 {
                    continue;
                }
                let ch = &mut self.channels[i];
                if v & 0x10 == 0 && ch.latched_status.is_none() {
                    ch.latched_status = Some(ch.status(now));
                }
                if v & 0x20 == 0 {
                    ch.latch(now);
                }
            }
            return;
        }
        let ch = &mut self.channels[sc as usize];
        let access = Access::from_bits(v >> 4);
        if access == Access::Latch {
            ch.latch(now);
        } else {
            ch.write_control(access, (v >> 1) & 7, v & 1 != 0);
            if sc == 0 {
                self.irq0_edges_seen = 0;
            }
        }
    }

    /// Channel 0 OUT rising edges (IRQ 0 pulses) since the previous call.
    /// Several in one call means the VMM was late; they are reported as a
    /// count so the caller can decide to coalesce them.
    pub fn advance(&mut self, now: u64) -> u64 {
        let total = self.channels[0].edges(now);
        let new = total.saturating_sub(self.irq0_edges_seen);
        self.irq0_edges_seen = total.max(self.irq0_edges_seen);
        new
    }

    /// When channel 0's next IRQ 0 edge is due, if one is.
    pub fn next_irq0_ns(&self) -> Option<u64> {
        self.channels[0].next_edge_ns(self.irq0_edges_seen)
    }

    /// Channel 2 OUT (port 0x61 bit 5).
    pub fn speaker_out(&self, now: u64) -> bool {
        self.channels[2].out(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn program(pit: &mut Pit, ch: u8, mode: u8, count: u16, now: u64) {
        pit.write(PORT_MODE, ch << 6 | 0x30 | mode << 1, now);
        pit.write(PORT_CH0 + ch as u16, count as u8, now);
        pit.write(PORT_CH0 + ch as u16, (count >> 8) as u8, now);
    }

    fn read16(pit: &mut Pit, ch: u8, now: u64) -> u16 {
        let lo = pit.read(PORT_CH0 + ch as u16, now) as u16;
        let hi = pit.read(PORT_CH0 + ch as u16, now) as u16;
        hi << 8 | lo
    }

    #[test]
    fn tick_conversion_round_trips() {
        assert_eq!(ns_to_ticks(1_000_000_000), PIT_HZ);
        for t in [1, 2, 1193, 11932, 65536, 1_000_000] {
            assert!(ns_to_ticks(ticks_to_ns(t)) >= t);
            assert!(ns_to_ticks(ticks_to_ns(t) - 1) < t);
        }
    }

    #[test]
    fn mode2_periodic_irq0_at_1khz() {
        let mut pit = Pit::new();
        let reload = 1193; // ~1000.15 Hz, what Linux uses for HZ=1000
        program(&mut pit, 0, 2, reload, 0);
        assert_eq!(pit.advance(0), 0);
        let first = pit.next_irq0_ns().unwrap();
        assert_eq!(first, ticks_to_ns(1193));
        assert_eq!(pit.advance(first - 1), 0);
        assert_eq!(pit.advance(first), 1);
        assert_eq!(pit.next_irq0_ns().unwrap(), ticks_to_ns(2 * 1193));
        // 10 ms later: ten more periods (minus the fraction).
        assert_eq!(pit.advance(first + 10 * MS), 10);
        // Late by a lot: the count says how many were missed.
        assert_eq!(pit.advance(1000 * MS), ns_to_ticks(1000 * MS) / 1193 - 11);
    }

    #[test]
    fn mode2_count_and_out() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 100, 0);
        let at = |t: u64| ticks_to_ns(t);
        assert_eq!(read16(&mut pit, 0, at(0)), 100);
        assert_eq!(read16(&mut pit, 0, at(30)), 70);
        assert_eq!(read16(&mut pit, 0, at(130)), 70);
        assert!(pit.channels[0].out(at(98)));
        assert!(!pit.channels[0].out(at(99)), "low for one clock at count 1");
        assert!(pit.channels[0].out(at(100)));
    }

    #[test]
    fn mode3_square_wave() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 3, 1000, 0);
        let at = |t: u64| ticks_to_ns(t);
        assert!(pit.channels[0].out(at(499)));
        assert!(!pit.channels[0].out(at(500)));
        assert!(pit.channels[0].out(at(1000)));
        assert_eq!(pit.advance(at(3500)), 3);
        assert_eq!(pit.channels[0].count(at(10)), 980);
    }

    #[test]
    fn mode0_one_shot_fires_once() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 0, 5000, MS);
        assert!(!pit.channels[0].out(MS));
        let due = pit.next_irq0_ns().unwrap();
        assert_eq!(due, MS + ticks_to_ns(5000));
        assert_eq!(pit.advance(due), 1);
        assert!(pit.channels[0].out(due));
        assert_eq!(pit.next_irq0_ns(), None);
        assert_eq!(pit.advance(due + 100 * MS), 0);
        // Counting continues through zero (wraps).
        assert_eq!(pit.channels[0].count(MS + ticks_to_ns(5001)), 0xffff);
    }

    #[test]
    fn mode4_one_shot_as_linux_clockevents_oneshot() {
        // pit_set_oneshot writes 0x38 then the count.
        let mut pit = Pit::new();
        pit.write(PORT_MODE, 0x38, 0);
        pit.write(PORT_CH0, 0x10, 0);
        pit.write(PORT_CH0, 0x00, 0);
        assert!(pit.channels[0].out(0));
        assert!(!pit.channels[0].out(ticks_to_ns(16)), "strobe at terminal count");
        assert_eq!(pit.advance(ticks_to_ns(16)), 1);
        assert!(pit.channels[0].out(ticks_to_ns(17)));
        assert_eq!(pit.advance(ticks_to_ns(100_000)), 0);
    }

    #[test]
    fn latch_freezes_the_read_value() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 0, 0); // 65536
        pit.write(PORT_MODE, 0x00, ticks_to_ns(1000)); // latch channel 0
        assert_eq!(read16(&mut pit, 0, ticks_to_ns(5000)), 64536);
        assert_eq!(read16(&mut pit, 0, ticks_to_ns(5000)), 60536);
    }

    #[test]
    fn read_back_status_and_count() {
        let mut pit = Pit::new();
        pit.write(PORT_MODE, 0x34, 0); // ch0, lohi, mode 2
        // Null count until the count is written.
        pit.write(PORT_MODE, 0xe2, 0); // read-back status only, channel 0
        assert_eq!(pit.read(PORT_CH0, 0), 0x40 | 0x34 & 0x3f | 0x80);
        pit.write(PORT_CH0, 0x00, 0);
        pit.write(PORT_CH0, 0x10, 0);
        // Status and count latched together: status comes first.
        pit.write(PORT_MODE, 0xc2, ticks_to_ns(0x100));
        assert_eq!(pit.read(PORT_CH0, 0), 0x80 | 0x34);
        assert_eq!(read16(&mut pit, 0, ticks_to_ns(0x800)), 0x1000 - 0x100);
    }

    #[test]
    fn access_modes_lsb_and_msb_only() {
        let mut pit = Pit::new();
        pit.write(PORT_MODE, 0x14, 0); // ch0, lsb only, mode 2
        pit.write(PORT_CH0, 200, 0);
        assert_eq!(pit.channels[0].reload, 200);
        assert_eq!(pit.read(PORT_CH0, ticks_to_ns(50)), 150);
        pit.write(PORT_MODE, 0x24, 0); // msb only
        pit.write(PORT_CH0, 0x02, 0);
        assert_eq!(pit.channels[0].reload, 0x200);
        assert_eq!(pit.read(PORT_CH0, ticks_to_ns(0x100)), 0x01);
    }

    /// Linux's pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0,
    /// poll port 0x61 bit 5 until OUT goes high.
    #[test]
    fn channel2_calibration_through_port_61() {
        let mut pit = Pit::new();
        let t0 = 5 * MS;
        let v = pit.read(PORT_61, t0);
        pit.write(PORT_61, (v & !0x02) | 0x01, t0);
        pit.write(PORT_MODE, 0xb0, t0); // ch2, lohi, mode 0
        let latch = (PIT_HZ / 20) as u16; // 50 ms
        pit.write(PORT_CH2, latch as u8, t0);
        pit.write(PORT_CH2, (latch >> 8) as u8, t0);
        assert_eq!(pit.read(PORT_61, t0) & 0x20, 0);
        let end = t0 + ticks_to_ns(latch as u64);
        assert_eq!(pit.read(PORT_61, end - 1) & 0x20, 0);
        assert_eq!(pit.read(PORT_61, end) & 0x21, 0x21);
        // quick_pit_calibrate reads the MSB as the count runs down.
        pit.write(PORT_MODE, 0xb0, end);
        pit.write(PORT_CH2, 0xff, end);
        pit.write(PORT_CH2, 0xff, end);
        let t = end + ticks_to_ns(0x300);
        let _lo = pit.read(PORT_CH2, t);
        assert_eq!(pit.read(PORT_CH2, t), 0xfc);
    }

    #[test]
    fn channel2_gate_low_holds_the_count() {
        let mut pit = Pit::new();
        pit.write(PORT_MODE, 0xb0, 0);
        pit.write(PORT_CH2, 100, 0);
        pit.write(PORT_CH2, 0, 0);
        // Gate low: not counting.
        assert_eq!(pit.channels[2].count(MS), 100);
        pit.write(PORT_61, 0x01, 0);
        assert_eq!(pit.channels[2].count(ticks_to_ns(40)), 60);
        pit.write(PORT_61, 0x00, ticks_to_ns(40));
        assert_eq!(pit.channels[2].count(ticks_to_ns(90)), 60);
        let g = ticks_to_ns(90);
        pit.write(PORT_61, 0x01, g);
        assert!(!pit.speaker_out(g + ticks_to_ns(60) - 1));
        assert!(pit.speaker_out(g + ticks_to_ns(60)));
    }

    #[test]
    fn port61_refresh_bit_toggles_and_bits_are_kept() {
        let mut pit = Pit::new();
        pit.write(PORT_61, 0xf3, 0);
        let a = pit.read(PORT_61, 0);
        let b = pit.read(PORT_61, 0);
        assert_eq!((a ^ b) & 0x10, 0x10);
        assert_eq!(a & 0x0f, 0x03);
    }

    #[test]
    fn reprogramming_restarts_irq_accounting() {
        let mut pit = Pit::new();
        program(&mut pit, 0, 2, 1193, 0);
        assert_eq!(pit.advance(10 * MS), 10);
        // Linux's pit_shutdown: mode 0, count 0.
        pit.write(PORT_MODE, 0x30, 10 * MS);
        pit.write(PORT_CH0, 0, 10 * MS);
        pit.write(PORT_CH0, 0, 10 * MS);
        assert_eq!(pit.advance(20 * MS), 0);
        assert_eq!(pit.next_irq0_ns(), Some(10 * MS + ticks_to_ns(65536)));
    }
}
