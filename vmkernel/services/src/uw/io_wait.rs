//! Waiting for I/O readiness.
//!
//! The VFS never blocks: an operation that cannot proceed returns EAGAIN
//! and its object reports readiness through `poll`. Anything that may make
//! some object ready (pipe and tty I/O, a process exiting, a signal being
//! sent) bumps one global generation counter and wakes every waiter, which
//! then re-checks its own condition. Broadcasting is cheap at the scale of
//! a hypervisor host's management processes and leaves no wake-up to be
//! lost between a check and a block.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::world::{self, WaitQueue};
use crate::time;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static WAITERS: WaitQueue = WaitQueue::new();

/// Something may have become ready.
pub fn notify() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    WAITERS.wake_all();
}

/// The current generation; pass it to `wait` after a failed attempt.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    /// Something changed: try again.
    Event,
    /// The deadline passed.
    Timeout,
    /// A signal is pending for the caller.
    Signal,
}

/// Blocks until the generation moves past `seen`, a signal is pending, or
/// `deadline` (ns since boot) passes.
pub fn wait(seen: u64, deadline: Option<u64>) -> Woken {
    loop {
        if super::signal::pending_for_current() {
            return Woken::Signal;
        }
        if generation() != seen {
            return Woken::Event;
        }
        let _wakeup = match deadline {
            Some(d) if time::uptime_ns() >= d => return Woken::Timeout,
            Some(d) => Some(world::arm_wakeup(d)),
            None => None,
        };
        WAITERS.wait_until_once(|| {
            generation() != seen
                || super::signal::pending_for_current()
                || deadline.is_some_and(|d| time::uptime_ns() >= d)
        });
    }
}

/// Like [`wait`], but only SIGKILL (or a group exit) ends it early, for
/// waits that must not go back to user space on other signals (a vfork
/// parent). [`wait`] returns at once while any signal is pending, so a
/// loop around it would spin with the CPU held (found by sysfuzz: two
/// vfork parents with a signal pending wedged both CPUs of the host).
pub fn wait_for_event(seen: u64) -> Woken {
    loop {
        if super::signal::kill_pending() {
            return Woken::Signal;
        }
        if generation() != seen {
            return Woken::Event;
        }
        WAITERS.wait_until_once(|| generation() != seen || super::signal::kill_pending());
    }
}
