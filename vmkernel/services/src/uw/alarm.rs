//! Wake-ups at a moment: timerfds ask for an I/O notification
//! (`io_wait::notify`) when they expire, so waiters in read, poll, select
//! and epoll_wait re-check them without polling. One system world sleeps
//! until the earliest requested moment.

use alloc::collections::BTreeSet;

use spin::{Mutex, Once};

use crate::{time, world};

/// Pending moments (ns since boot); equal requests share one entry.
static MOMENTS: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
static WORLD: Once<Option<world::WorldId>> = Once::new();

/// Bound on pending moments: timers whose moments do not fit are still
/// woken by the periodic sweep below, only later.
const MAX_MOMENTS: usize = 65_536;

/// Sweep interval when nothing is pending, and at most between sweeps.
const IDLE_NS: u64 = 1_000_000_000;

/// Asks for an I/O notification at `at` (ns since boot).
pub fn notify_at(at: u64) {
    let earliest = {
        let mut m = MOMENTS.lock();
        if m.contains(&at) {
            return;
        }
        if m.len() >= MAX_MOMENTS {
            return;
        }
        m.insert(at);
        m.first().copied() == Some(at)
    };
    let mut started = false;
    let id = WORLD.call_once(|| {
        started = true;
        world::spawn_system("alarm", world::default_group(), alarm_world).ok()
    });
    if let (Some(id), true, false) = (id, earliest, started) {
        world::wake(*id);
    }
}

fn alarm_world() {
    loop {
        let now = time::uptime_ns();
        let (due, next) = {
            let mut m = MOMENTS.lock();
            let later = m.split_off(&now.saturating_add(1));
            let due = !m.is_empty();
            *m = later;
            (due, m.first().copied())
        };
        if due {
            super::io_wait::notify();
        }
        world::block_until(next.unwrap_or(u64::MAX).min(now.saturating_add(IDLE_NS)));
    }
}
