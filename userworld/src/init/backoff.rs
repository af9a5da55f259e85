//! Restart policy for respawning entries: exponential back-off from 1 s up to 60 s,
//! back to 1 s once a run stayed up for 30 s.

use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(60);
/// A run at least this long counts as healthy and resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(30);

/// Delay before the next start, given the delay used before the run that just
/// ended (`None` if it was the first run) and how long that run stayed up.
pub fn next_delay(previous: Option<Duration>, uptime: Duration) -> Duration {
    match previous {
        _ if uptime >= RESET_AFTER => INITIAL,
        None => INITIAL,
        Some(d) => (d * 2).clamp(INITIAL, MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn doubles_from_one_second_and_caps_at_sixty() {
        let mut prev = None;
        let mut seen = Vec::new();
        for _ in 0..9 {
            let d = next_delay(prev, Duration::from_millis(10));
            seen.push(d.as_secs());
            prev = Some(d);
        }
        assert_eq!(seen, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn long_run_resets() {
        assert_eq!(next_delay(Some(secs(60)), secs(30)), INITIAL);
        assert_eq!(next_delay(Some(secs(60)), secs(29)), MAX);
        assert_eq!(next_delay(Some(secs(8)), secs(29)), secs(16));
    }

    #[test]
    fn first_exit_waits_one_second() {
        assert_eq!(next_delay(None, Duration::ZERO), INITIAL);
    }
}
