//! ITIMER_REAL (`setitimer`, `getitimer`, `alarm`): one real-time timer per
//! process that sends SIGALRM when it expires (and re-arms with its
//! interval). A system world sleeps until the earliest expiry.

use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::{process, signal};
use crate::{time, world};

const SIGALRM: u32 = 14;

/// pid → (expiry in ns since boot, interval in ns).
static TIMERS: Mutex<BTreeMap<u32, (u64, u64)>> = Mutex::new(BTreeMap::new());
static WORLD: AtomicU64 = AtomicU64::new(0);

/// Sets pid's timer (`value_ns` 0 disarms); returns the old (remaining,
/// interval).
pub fn set(pid: u32, value_ns: u64, interval_ns: u64) -> (u64, u64) {
    let now = time::uptime_ns();
    let old = {
        let mut t = TIMERS.lock();
        let old = t.get(&pid).map_or((0, 0), |&(at, iv)| (at.saturating_sub(now).max(1), iv));
        if value_ns == 0 {
            t.remove(&pid);
        } else {
            t.insert(pid, (now.saturating_add(value_ns), interval_ns));
        }
        old
    };
    ensure_world();
    old
}

/// Drops pid's timer (the process has ended): an entry left behind would
/// stay until its expiry, which `alarm` can put decades away.
pub fn forget(pid: u32) {
    TIMERS.lock().remove(&pid);
}

/// pid's timer: (remaining, interval), zeros if disarmed.
pub fn get(pid: u32) -> (u64, u64) {
    let now = time::uptime_ns();
    TIMERS.lock().get(&pid).map_or((0, 0), |&(at, iv)| (at.saturating_sub(now).max(1), iv))
}

fn ensure_world() {
    let id = WORLD.load(Ordering::Acquire);
    if id != 0 {
        world::wake(id);
        return;
    }
    if let Ok(id) = world::spawn_system("itimer", world::default_group(), timer_world) {
        WORLD.store(id, Ordering::Release);
    }
}

fn timer_world() {
    loop {
        let now = time::uptime_ns();
        let mut due = alloc::vec::Vec::new();
        let next = {
            let mut t = TIMERS.lock();
            for (&pid, entry) in t.iter_mut() {
                if entry.0 <= now {
                    due.push(pid);
                    entry.0 = if entry.1 == 0 { 0 } else { now.saturating_add(entry.1) };
                }
            }
            t.retain(|_, e| e.0 != 0);
            t.values().map(|e| e.0).min()
        };
        for pid in due {
            match process::lookup(pid) {
                Some(p) => signal::send_to_process(&p, SIGALRM, None),
                None => {
                    TIMERS.lock().remove(&pid);
                }
            }
        }
        if !TIMERS.lock().is_empty() || next.is_some() {
            super::io_wait::notify();
        }
        world::block_until(next.unwrap_or(now.saturating_add(10_000_000_000)));
    }
}
