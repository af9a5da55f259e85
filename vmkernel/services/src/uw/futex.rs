//! Futexes: wait queues keyed by the physical address of the futex word,
//! which identifies it for private (same address space) and shared
//! mappings alike.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use spin::Mutex;
use vmkernel::linux_abi::errno::{EAGAIN, EFAULT, EINTR, EINVAL, ETIMEDOUT};

use super::process::{Process, walk_user};
use super::signal;
use crate::time;
use crate::world::{self, WorldId};

static WAITERS: Mutex<BTreeMap<u64, Vec<WorldId>>> = Mutex::new(BTreeMap::new());

fn key(p: &Process, uaddr: u64) -> Result<u64, i32> {
    if !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    let mut phys = 0;
    walk_user(&p.mm(), uaddr, 4, false, |ph, _, _| phys = ph).map_err(|_| EFAULT)?;
    Ok(phys)
}

/// The futex word at `uaddr` (mapped by `key` just before); EFAULT if a
/// thread unmapped it since.
fn read_word(p: &Process, uaddr: u64) -> Result<u32, i32> {
    p.mm().space.read_user_u32(uaddr).ok_or(EFAULT)
}

/// FUTEX_WAIT: sleeps while `*uaddr == val`, until woken, a signal, or the
/// deadline (ns since boot).
pub fn wait(p: &Process, uaddr: u64, val: u32, bitset: u32, deadline: Option<u64>) -> Result<(), i32> {
    let _ = bitset;
    let k = key(p, uaddr)?;
    let me = world::current_id();
    {
        // Compare and enqueue under the lock so a wake cannot slip between.
        let mut w = WAITERS.lock();
        if read_word(p, uaddr)? != val {
            return Err(EAGAIN);
        }
        w.entry(k).or_default().push(me);
    }
    // FUTEX_REQUEUE may move this waiter to another word's queue: it waits
    // wherever it is queued now, and leaves whichever queue holds it (a
    // stale entry would stay in the table for good).
    let queued = || WAITERS.lock().values().any(|v| v.contains(&me));
    let dequeue = || {
        let mut w = WAITERS.lock();
        w.retain(|_, v| {
            v.retain(|&x| x != me);
            !v.is_empty()
        });
    };
    loop {
        if !queued() {
            return Ok(());
        }
        if signal::pending_for_current() {
            dequeue();
            return Err(EINTR);
        }
        let _wakeup = match deadline {
            Some(d) if time::uptime_ns() >= d => {
                dequeue();
                return Err(ETIMEDOUT);
            }
            Some(d) => Some(world::arm_wakeup(d)),
            None => None,
        };
        world::block_current();
    }
}

/// FUTEX_WAKE: wakes up to `n` waiters; returns how many.
pub fn wake(p: &Process, uaddr: u64, n: u32) -> usize {
    let Ok(k) = key(p, uaddr) else { return 0 };
    let woken: Vec<WorldId> = {
        let mut w = WAITERS.lock();
        let Some(v) = w.get_mut(&k) else { return 0 };
        let n = (n as usize).min(v.len());
        let woken: Vec<WorldId> = v.drain(..n).collect();
        if v.is_empty() {
            w.remove(&k);
        }
        woken
    };
    for id in &woken {
        world::wake(*id);
    }
    woken.len()
}

/// FUTEX_REQUEUE / CMP_REQUEUE: wakes `n` and moves up to `m` more to `uaddr2`.
pub fn requeue(p: &Process, uaddr: u64, n: u32, m: u32, uaddr2: u64, cmp: Option<u32>) -> Result<usize, i32> {
    let k1 = key(p, uaddr)?;
    let k2 = key(p, uaddr2)?;
    let (woken, moved) = {
        let mut w = WAITERS.lock();
        if let Some(c) = cmp
            && read_word(p, uaddr)? != c {
                return Err(EAGAIN);
            }
        let mut v = w.remove(&k1).unwrap_or_default();
        let nw = (n as usize).min(v.len());
        let woken: Vec<WorldId> = v.drain(..nw).collect();
        let nm = (m as usize).min(v.len());
        let moved: Vec<WorldId> = v.drain(..nm).collect();
        if !v.is_empty() {
            w.insert(k1, v);
        }
        w.entry(k2).or_default().extend(moved.iter().copied());
        (woken, moved.len())
    };
    for id in &woken {
        world::wake(*id);
    }
    Ok(woken.len() + moved)
}
