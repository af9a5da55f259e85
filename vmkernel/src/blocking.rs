//! A lock for state held across work that may block the holder's world
//! (a file system's disk I/O): waiters sleep instead of spinning.
//!
//! Kernel code runs with interrupts off, so a world spinning on a lock
//! whose holder is blocked keeps its CPU from running anything else, from
//! taking interrupts and from answering IPIs (TLB shootdowns): the holder
//! may then never run again. The framework's `SleepLock` solves that for
//! its own users; this is the same lock for the library (the VFS), which
//! cannot name worlds: how a waiter sleeps is a registration point
//! ([`set_sleeper`], the framework registers one wait queue for every
//! `BlockingLock`). Without one (host tests) waiters spin.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How a waiter sleeps.
pub trait Sleeper: Sync {
    /// Blocks the calling world until `ready()` returns true; `ready` is
    /// checked again after every wake-up.
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool);
    /// Wakes every world waiting in `wait_until`.
    fn wake_all(&self);
}

static SLEEPER: spin::Once<&'static dyn Sleeper> = spin::Once::new();

/// Registers how waiters sleep (once, at boot).
pub fn set_sleeper(s: &'static dyn Sleeper) {
    SLEEPER.call_once(|| s);
}

pub struct BlockingLock<T> {
    busy: AtomicBool,
    /// Waiters between a failed claim and their wake-up: a release wakes
    /// the sleeper's queue only when there are any.
    waiting: AtomicUsize,
    value: spin::Mutex<T>,
}

impl<T> BlockingLock<T> {
    pub const fn new(value: T) -> Self {
        BlockingLock { busy: AtomicBool::new(false), waiting: AtomicUsize::new(0), value: spin::Mutex::new(value) }
    }

    fn try_claim(&self) -> bool {
        self.busy.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }

    /// Takes the lock, sleeping (or, with no sleeper registered, spinning)
    /// while another holds it.
    pub fn lock(&self) -> BlockingLockGuard<'_, T> {
        if !self.try_claim() {
            // Counted before the next claim attempt: a holder that
            // releases after this sees the waiter and wakes it; one that
            // released before leaves the claim to succeed.
            self.waiting.fetch_add(1, Ordering::SeqCst);
            match SLEEPER.get() {
                Some(s) => s.wait_until(&mut || self.try_claim()),
                None => {
                    while !self.try_claim() {
                        core::hint::spin_loop();
                    }
                }
            }
            self.waiting.fetch_sub(1, Ordering::SeqCst);
        }
        // The claim makes this the only holder: the inner lock is free.
        BlockingLockGuard { lock: self, inner: Some(self.value.lock()) }
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<BlockingLockGuard<'_, T>> {
        self.try_claim().then(|| BlockingLockGuard { lock: self, inner: Some(self.value.lock()) })
    }
}

pub struct BlockingLockGuard<'a, T> {
    lock: &'a BlockingLock<T>,
    inner: Option<spin::MutexGuard<'a, T>>,
}

impl<T> Deref for BlockingLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // `inner` is Some until drop.
        self.inner.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<T> DerefMut for BlockingLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.inner.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<T> Drop for BlockingLockGuard<'_, T> {
    fn drop(&mut self) {
        self.inner = None;
        self.lock.busy.store(false, Ordering::SeqCst);
        if self.lock.waiting.load(Ordering::SeqCst) > 0
            && let Some(s) = SLEEPER.get()
        {
            s.wake_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::vec::Vec;

    #[test]
    fn holders_take_turns() {
        let l = Arc::new(BlockingLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mut g = l.lock();
                        let v = *g;
                        std::thread::yield_now();
                        *g = v + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(), 800);
        assert!(l.try_lock().is_some());
        let g = l.lock();
        assert!(l.try_lock().is_none());
        drop(g);
    }
}
