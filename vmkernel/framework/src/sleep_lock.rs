//! A lock whose waiters block (leave the CPU) instead of spinning, for
//! state held across device I/O.
//!
//! Kernel code runs with interrupts off: a world spinning on a lock whose
//! holder is blocked waiting for a disk interrupt would keep that
//! interrupt from being taken on its CPU. Waiters here block on a wait
//! queue instead. Outside a world (the boot path on the idle world) the
//! wait degrades to polling, which is what boot needs.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::world::WaitQueue;

pub struct SleepLock<T> {
    busy: AtomicBool,
    waiters: WaitQueue,
    value: spin::Mutex<T>,
}

impl<T> SleepLock<T> {
    pub const fn new(value: T) -> Self {
        SleepLock { busy: AtomicBool::new(false), waiters: WaitQueue::new(), value: spin::Mutex::new(value) }
    }

    fn try_claim(&self) -> bool {
        self.busy.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Takes the lock, blocking the calling world while another holds it.
    pub fn lock(&self) -> SleepLockGuard<'_, T> {
        self.waiters.wait_until(|| self.try_claim());
        // The claim makes this the only holder: the inner lock is free.
        SleepLockGuard { lock: self, inner: Some(self.value.lock()) }
    }

    /// The lock if it is free now.
    pub fn try_lock(&self) -> Option<SleepLockGuard<'_, T>> {
        self.try_claim().then(|| SleepLockGuard { lock: self, inner: Some(self.value.lock()) })
    }
}

pub struct SleepLockGuard<'a, T> {
    lock: &'a SleepLock<T>,
    inner: Option<spin::MutexGuard<'a, T>>,
}

impl<T> Deref for SleepLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // `inner` is Some until drop.
        self.inner.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl<T> DerefMut for SleepLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.inner.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<T> Drop for SleepLockGuard<'_, T> {
    fn drop(&mut self) {
        self.inner = None;
        self.lock.busy.store(false, Ordering::Release);
        self.lock.waiters.wake_all();
    }
}

/// Where the library's `vmkernel::blocking::BlockingLock`s (the VFS's file
/// offsets) wait: one queue for all of them (they are rarely contended;
/// a release wakes the queue only when a waiter is counted).
static LIBRARY_WAITERS: WaitQueue = WaitQueue::new();

struct WorldSleeper;

impl vmkernel::blocking::Sleeper for WorldSleeper {
    fn wait_until(&self, ready: &mut dyn FnMut() -> bool) {
        LIBRARY_WAITERS.wait_until(ready);
    }
    fn wake_all(&self) {
        LIBRARY_WAITERS.wake_all();
    }
}

/// Makes the library's blocking locks block the waiting world (the boot
/// sequence calls it once the scheduler is up; `world` cannot, as this
/// module is built on `world`).
pub fn register_library_sleeper() {
    vmkernel::blocking::set_sleeper(&WorldSleeper);
}
