//! Wake-ups at a moment: timerfds ask for an I/O notification
//! (`io_wait::notify`) when they expire, so waiters in read, poll, select
//! and epoll_wait re-check them without polling. One system world sleeps
//! until the earliest requested moment.

use alloc::collections::BTreeMap;

use spin::{Mutex, Once};

use crate::{time, world};

/// Pending moments (ns since boot) and how many timers asked for each.
static MOMENTS: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());
static WORLD: Once<Option<world::WorldId>> = Once::new();

/// Bound on pending moments: timers whose moments do not fit are still
/// woken by the periodic sweep below, only later.
const MAX_MOMENTS: usize = 65_536;

/// Sweep interval when nothing is pending, and at most between sweeps.
const IDLE_NS: u64 = 1_000_000_000;

/// A requested notification; dropping it withdraws the request (a timer
/// that is closed or re-armed must not leave its moment behind: random
/// or distant expiries would keep entries for decades).
#[derive(Debug)]
pub struct Moment(u64);

impl Moment {
    /// The moment (ns since boot).
    pub fn at(&self) -> u64 {
        self.0
    }
}

impl Drop for Moment {
    fn drop(&mut self) {
        let mut m = MOMENTS.lock();
        if let Some(n) = m.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.0);
            }
        }
    }
}

/// Asks for an I/O notification at `at` (ns since boot), until the
/// returned request is dropped (None: too many pending, the sweep covers it).
#[must_use = "dropping the request withdraws it"]
pub fn notify_at(at: u64) -> Option<Moment> {
    let earliest = {
        let mut m = MOMENTS.lock();
        if let Some(n) = m.get_mut(&at) {
            *n += 1;
            return Some(Moment(at));
        }
        if m.len() >= MAX_MOMENTS {
            return None;
        }
        m.insert(at, 1);
        m.first_key_value().map(|(&k, _)| k) == Some(at)
    };
    let mut started = false;
    let id = WORLD.call_once(|| {
        started = true;
        world::spawn_system("alarm", world::default_group(), alarm_world).ok()
    });
    if let (Some(id), true, false) = (id, earliest, started) {
        world::wake(*id);
    }
    Some(Moment(at))
}

fn alarm_world() {
    loop {
        let now = time::uptime_ns();
        let (due, next) = {
            let mut m = MOMENTS.lock();
            let later = m.split_off(&now.saturating_add(1));
            let due = !m.is_empty();
            *m = later;
            (due, m.first_key_value().map(|(&k, _)| k))
        };
        if due {
            super::io_wait::notify();
        }
        world::block_until(next.unwrap_or(u64::MAX).min(now.saturating_add(IDLE_NS)));
    }
}
