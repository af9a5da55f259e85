//! eventfd's counter and timerfd's expiry arithmetic, free of files and
//! clocks (the kernel passes `now`).

use crate::vfs::Errno;

/// The largest value an eventfd counter holds (Linux: 2^64 - 2).
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

/// An eventfd's 64-bit counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounter {
    value: u64,
    semaphore: bool,
}

impl EventCounter {
    pub fn new(initial: u32, semaphore: bool) -> Self {
        Self { value: u64::from(initial), semaphore }
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    /// A read: the whole count (or 1 with EFD_SEMAPHORE); EAGAIN at 0.
    pub fn read(&mut self) -> Result<u64, Errno> {
        if self.value == 0 {
            return Err(Errno::EAGAIN);
        }
        if self.semaphore {
            self.value -= 1;
            Ok(1)
        } else {
            Ok(core::mem::take(&mut self.value))
        }
    }

    /// A write adds `n`; EINVAL for 2^64 - 1, EAGAIN if it would overflow.
    pub fn write(&mut self, n: u64) -> Result<(), Errno> {
        if n == u64::MAX {
            return Err(Errno::EINVAL);
        }
        if n > EVENTFD_MAX - self.value {
            return Err(Errno::EAGAIN);
        }
        self.value += n;
        Ok(())
    }

    pub fn readable(&self) -> bool {
        self.value > 0
    }

    /// Whether a write of 1 would succeed.
    pub fn writable(&self) -> bool {
        self.value < EVENTFD_MAX
    }
}

/// A timerfd's schedule on the monotonic clock (ns since boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerSchedule {
    /// The next expiry not yet counted; 0 = disarmed.
    next: u64,
    interval: u64,
}

impl TimerSchedule {
    /// Arms (or with `first` 0, disarms) the timer: `first` is the
    /// absolute first expiry. Expirations not yet read are discarded, as
    /// on Linux. Returns the old setting as `get` would have.
    pub fn set(&mut self, now: u64, first: u64, interval: u64) -> (u64, u64) {
        let old = self.get(now);
        *self = if first == 0 { Self::default() } else { Self { next: first.max(1), interval } };
        old
    }

    /// (time until the next expiry, interval); (0, 0) when disarmed or a
    /// one-shot timer has expired.
    pub fn get(&self, now: u64) -> (u64, u64) {
        if self.next == 0 {
            return (0, 0);
        }
        if now < self.next {
            return (self.next - now, self.interval);
        }
        if self.interval == 0 {
            return (0, 0);
        }
        let periods = (now - self.next) / self.interval + 1;
        let next = self.next.saturating_add(periods.saturating_mul(self.interval));
        (next.saturating_sub(now), self.interval)
    }

    /// Whether a read would return expirations now.
    pub fn expired(&self, now: u64) -> bool {
        self.next != 0 && now >= self.next
    }

    /// The next moment the timer becomes readable, if armed and not yet.
    pub fn deadline(&self, now: u64) -> Option<u64> {
        (self.next != 0 && now < self.next).then_some(self.next)
    }

    /// A read: the expirations since the last read (0 = would block).
    pub fn take(&mut self, now: u64) -> u64 {
        if !self.expired(now) {
            return 0;
        }
        if self.interval == 0 {
            self.next = 0;
            return 1;
        }
        let n = (now - self.next) / self.interval + 1;
        self.next = self.next.saturating_add(n.saturating_mul(self.interval));
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_reads_the_sum() {
        let mut c = EventCounter::new(2, false);
        c.write(5).unwrap();
        assert_eq!(c.read(), Ok(7));
        assert_eq!(c.read(), Err(Errno::EAGAIN));
        assert!(!c.readable());
        assert!(c.writable());
    }

    #[test]
    fn semaphore_reads_one_at_a_time() {
        let mut c = EventCounter::new(0, true);
        c.write(3).unwrap();
        assert_eq!(c.read(), Ok(1));
        assert_eq!(c.read(), Ok(1));
        assert_eq!(c.read(), Ok(1));
        assert_eq!(c.read(), Err(Errno::EAGAIN));
    }

    #[test]
    fn counter_overflow_and_bad_value() {
        let mut c = EventCounter::new(0, false);
        assert_eq!(c.write(u64::MAX), Err(Errno::EINVAL));
        c.write(EVENTFD_MAX).unwrap();
        assert!(!c.writable());
        assert_eq!(c.write(1), Err(Errno::EAGAIN));
        assert_eq!(c.read(), Ok(EVENTFD_MAX));
        c.write(0).unwrap();
        assert!(!c.readable());
    }

    #[test]
    fn one_shot_timer() {
        let mut t = TimerSchedule::default();
        assert_eq!(t.set(100, 150, 0), (0, 0));
        assert_eq!(t.get(120), (30, 0));
        assert_eq!(t.deadline(120), Some(150));
        assert_eq!(t.take(149), 0);
        assert!(t.expired(150));
        assert_eq!(t.get(160), (0, 0));
        assert_eq!(t.take(500), 1);
        assert_eq!(t.take(900), 0);
        assert_eq!(t.deadline(900), None);
    }

    #[test]
    fn periodic_timer_counts_missed_periods() {
        let mut t = TimerSchedule::default();
        t.set(0, 10, 10);
        assert_eq!(t.take(35), 3); // 10, 20, 30
        assert_eq!(t.get(35), (5, 10));
        assert_eq!(t.deadline(35), Some(40));
        assert_eq!(t.take(39), 0);
        assert_eq!(t.take(40), 1);
        // Re-arming discards unread expirations and reports the old setting.
        assert_eq!(t.set(55, 0, 0), (5, 10));
        assert_eq!(t.take(1000), 0);
    }
}
