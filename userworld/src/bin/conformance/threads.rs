//! Threads (std on clone + futex) and raw futex semantics.

use crate::harness::*;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

thread_local! {
    static SLOT: Cell<u64> = const { Cell::new(0) };
}

const FUTEX_WAIT_PRIVATE: i32 = libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG;
const FUTEX_WAKE_PRIVATE: i32 = libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG;

fn gettid() -> i64 {
    // SAFETY: gettid has no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn futex(word: &AtomicU32, op: i32, val: u32, timeout: Option<&libc::timespec>) -> Result<i64, i32> {
    let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 and `ts` is null or a valid timespec.
    sys(unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), op, val, ts, 0usize, 0u32) })
}

pub fn run(r: &mut Runner) {
    r.check("thread_mutex_counter_8_threads", || {
        let counter = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let c = Arc::clone(&counter);
                thread::spawn(move || {
                    for _ in 0..10_000 {
                        *c.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "worker panicked".to_string())?;
        }
        expect_eq("counter", *counter.lock().unwrap(), 80_000)
    });

    r.check("thread_mpsc_channel", || {
        let (tx, rx) = mpsc::channel();
        for id in 0..4u64 {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..100u64 {
                    tx.send(id * 1000 + i).unwrap();
                }
            });
        }
        drop(tx);
        let got: Vec<u64> = rx.iter().collect();
        expect_eq("messages", got.len(), 400)?;
        expect_eq("sum", got.iter().sum::<u64>(), (0..4u64).map(|id| id * 100_000 + 4950).sum())
    });

    r.check("thread_join_return_values", || {
        let hs: Vec<_> = (1..=6u64).map(|n| thread::spawn(move || (1..=n).product::<u64>())).collect();
        let got: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        expect_eq("factorials", got, vec![1, 2, 6, 24, 120, 720])
    });

    r.check("thread_local_storage", || {
        SLOT.with(|s| s.set(1));
        let hs: Vec<_> = (2..6u64)
            .map(|v| {
                thread::spawn(move || {
                    let fresh = SLOT.with(|s| s.get());
                    SLOT.with(|s| s.set(v));
                    thread::sleep(Duration::from_millis(5));
                    (fresh, SLOT.with(|s| s.get()))
                })
            })
            .collect();
        for (h, v) in hs.into_iter().zip(2..6u64) {
            expect_eq("thread's own slot", h.join().unwrap(), (0, v))?;
        }
        expect_eq("main thread's slot", SLOT.with(|s| s.get()), 1)
    });

    r.check("thread_ids", || {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as i64;
        let main_tid = gettid();
        // SAFETY: getpid has no preconditions.
        let (tid, tpid) = thread::spawn(|| (gettid(), unsafe { libc::getpid() } as i64)).join().unwrap();
        ensure!(tid != main_tid, "thread has the main thread's tid");
        expect_eq("getpid in thread", tpid, pid)
    });

    r.check("thread_condvar_handoff", || {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = Arc::clone(&pair);
        let h = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            *p2.0.lock().unwrap() = true;
            p2.1.notify_one();
        });
        let (m, cv) = &*pair;
        let (ready, timeout) = cv.wait_timeout_while(m.lock().unwrap(), Duration::from_secs(5), |r| !*r).unwrap();
        ensure!(!timeout.timed_out() && *ready, "condvar was not signalled");
        drop(ready);
        h.join().map_err(|_| "notifier panicked".to_string())
    });

    r.check("futex_wait_value_mismatch_eagain", || {
        let w = AtomicU32::new(1);
        expect_errno("FUTEX_WAIT", futex(&w, libc::FUTEX_WAIT, 0, None), libc::EAGAIN)?;
        expect_errno("FUTEX_WAIT_PRIVATE", futex(&w, FUTEX_WAIT_PRIVATE, 2, None), libc::EAGAIN)
    });

    r.check("futex_wait_timeout_etimedout", || {
        let w = AtomicU32::new(0);
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 50_000_000 };
        let t = Instant::now();
        let r = futex(&w, FUTEX_WAIT_PRIVATE, 0, Some(&ts));
        let took = t.elapsed();
        expect_errno("FUTEX_WAIT with timeout", r, libc::ETIMEDOUT)?;
        ensure!(took >= Duration::from_millis(50), "timed out after only {took:?}");
        Ok(())
    });

    r.check("futex_wake_no_waiters", || {
        let w = AtomicU32::new(0);
        expect_eq("FUTEX_WAKE", futex(&w, FUTEX_WAKE_PRIVATE, 1, None), Ok(0))
    });

    r.check("futex_wait_wake_between_threads", || {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&w);
        // The word stays 0, so the waiter sleeps until explicitly woken; FUTEX_WAKE
        // returning 1 proves the wake reached a sleeping waiter.
        let h = thread::spawn(move || futex(&w2, FUTEX_WAIT_PRIVATE, 0, None));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut woke = 0;
        while Instant::now() < deadline {
            woke = futex(&w, FUTEX_WAKE_PRIVATE, 1, None).map_err(|e| errno_name(e).to_string())?;
            if woke == 1 {
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        if woke != 1 {
            // Release the waiter so the thread can be joined, then fail.
            w.store(1, Ordering::SeqCst);
            let _ = futex(&w, FUTEX_WAKE_PRIVATE, 1, None);
        }
        let waiter = h.join().map_err(|_| "waiter panicked".to_string())?;
        expect_eq("FUTEX_WAKE count", woke, 1)?;
        expect_eq("waiter's FUTEX_WAIT result", waiter, Ok(0))
    });
}
