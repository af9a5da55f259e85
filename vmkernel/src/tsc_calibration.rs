//! The TSC's frequency from two readings of the 8254 PIT's channel 2, each
//! bracketed by TSC reads, so a measuring CPU that loses time at any moment
//! (a vCPU thread of an emulator on a loaded host, an SMI on hardware) adds
//! no error: a disturbed reading has a wide bracket and is not used.
//! Timing one PIT run from its start to its terminal count, as Mantle did,
//! counted every such pause: under QEMU TCG on a loaded 2-core host it
//! measured 3.1 to 6.8 GHz on consecutive boots, so the VMkernel's clock —
//! and its guests' kvmclock — ran up to 2.5 times slow.

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

/// PIT channel 2's count read between two TSC reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    pub tsc_before: u64,
    pub count: u16,
    pub tsc_after: u64,
}

impl Reading {
    /// TSC ticks between the two reads (the reading's uncertainty).
    pub fn width(&self) -> u64 {
        self.tsc_after.saturating_sub(self.tsc_before)
    }

    /// The TSC at the middle of the bracket.
    pub fn tsc_mid(&self) -> u64 {
        self.tsc_before + self.width() / 2
    }
}

/// The reading with the narrowest bracket (the least disturbed one).
pub fn narrowest(readings: &[Reading]) -> Option<Reading> {
    readings.iter().copied().min_by_key(Reading::width)
}

/// A frequency and its error bound in parts per million.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    pub hz: u64,
    pub error_ppm: u64,
}

/// The TSC frequency from two readings of a count falling at [`PIT_HZ`]
/// that did not wrap between them; `None` if the count did not fall or the
/// TSC did not advance.
pub fn estimate(first: Reading, second: Reading) -> Option<Estimate> {
    let ticks = u64::from(first.count.checked_sub(second.count)?);
    let tsc = second.tsc_mid().checked_sub(first.tsc_mid())?;
    if ticks == 0 || tsc == 0 {
        return None;
    }
    // Half of each bracket, plus one PIT tick of quantisation.
    let uncertainty = (first.width() + second.width()) as u128 / 2;
    let error_ppm = (uncertainty * 1_000_000 / tsc as u128 + 1_000_000 / ticks as u128) as u64;
    let hz = (tsc as u128 * PIT_HZ as u128 / ticks as u128) as u64;
    Some(Estimate { hz, error_ppm })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 GHz TSC: PIT count at TSC `t` after a start at count 0xffff.
    fn reading(start_tsc: u64, before: u64, after: u64, read_at: u64) -> Reading {
        let ticks = (read_at - start_tsc) as u128 * PIT_HZ as u128 / 3_000_000_000;
        Reading { tsc_before: before, count: 0xffff - ticks as u16, tsc_after: after }
    }

    #[test]
    fn undisturbed_readings_give_the_frequency() {
        let a = reading(0, 1_000_000, 1_030_000, 1_015_000);
        let b = reading(0, 91_000_000, 91_030_000, 91_015_000);
        let e = estimate(a, b).unwrap();
        assert!(e.hz.abs_diff(3_000_000_000) < 3_000_000_000 / 10_000, "{e:?}");
        assert!(e.error_ppm < 1000, "{e:?}");
    }

    #[test]
    fn a_pause_inside_a_bracket_widens_it_and_is_not_chosen() {
        // The vCPU lost 20 ms (60 M ticks) between the count read and the
        // second TSC read: that reading is wide, a later one is not.
        let paused = Reading { tsc_before: 91_000_000, count: reading(0, 0, 0, 91_015_000).count, tsc_after: 151_000_000 };
        let clean = reading(0, 152_000_000, 152_030_000, 152_015_000);
        let best = narrowest(&[paused, clean]).unwrap();
        assert_eq!(best, clean);
        let e = estimate(reading(0, 1_000_000, 1_030_000, 1_015_000), best).unwrap();
        assert!(e.hz.abs_diff(3_000_000_000) < 3_000_000_000 / 10_000, "{e:?}");
        // Used anyway, the paused one says how little it is worth.
        let bad = estimate(reading(0, 1_000_000, 1_030_000, 1_015_000), paused).unwrap();
        assert!(bad.error_ppm > 100_000, "{bad:?}");
    }

    #[test]
    fn nonsense_is_refused() {
        let a = Reading { tsc_before: 10, count: 100, tsc_after: 20 };
        assert_eq!(estimate(a, a), None, "no time passed");
        assert_eq!(estimate(a, Reading { count: 200, ..a }), None, "the count rose (wrapped)");
        assert_eq!(estimate(a, Reading { tsc_before: 0, tsc_after: 2, count: 50 }), None, "the TSC went back");
        assert_eq!(narrowest(&[]), None);
    }
}
