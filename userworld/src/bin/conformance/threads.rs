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

    r.check("futex_requeue_moves_the_waiter_to_the_second_word", || {
        let words = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
        let done = Arc::new(AtomicU32::new(0));
        let (w2, d2) = (Arc::clone(&words), Arc::clone(&done));
        let h = thread::spawn(move || {
            let ts = libc::timespec { tv_sec: 60, tv_nsec: 0 };
            let r = futex(&w2.0, FUTEX_WAIT_PRIVATE, 0, Some(&ts));
            d2.store(1, Ordering::Release);
            r
        });
        // Once the thread waits on the first word, move it to the second
        // (wake 0, requeue 1: the count goes in the timeout slot).
        let deadline = Instant::now() + Duration::from_secs(10);
        let requeued = loop {
            // SAFETY: both words are live, aligned u32s for the whole call.
            let n = sys(unsafe {
                libc::syscall(libc::SYS_futex, words.0.as_ptr(), FUTEX_REQUEUE_PRIVATE, 0u32, 1usize, words.1.as_ptr(), 0u32)
            });
            match n {
                Ok(1) => break true,
                Ok(0) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
                _ => break false,
            }
        };
        // The requeued waiter sleeps on until the second word is woken.
        thread::sleep(Duration::from_millis(200));
        let asleep = done.load(Ordering::Acquire) == 0;
        let woken = futex(&words.1, FUTEX_WAKE_PRIVATE, 1, None);
        if !requeued || woken != Ok(1) {
            // Release the waiter wherever it is, so it can be joined.
            let _ = futex(&words.0, FUTEX_WAKE_PRIVATE, 1, None);
            let _ = futex(&words.1, FUTEX_WAKE_PRIVATE, 1, None);
        }
        let waiter = h.join().map_err(|_| "waiter panicked".to_string())?;
        expect_eq("FUTEX_REQUEUE moved the waiter", requeued, true)?;
        expect_eq("the requeued waiter still asleep", asleep, true)?;
        expect_eq("FUTEX_WAKE on the second word", woken, Ok(1))?;
        expect_eq("waiter's FUTEX_WAIT result", waiter, Ok(0))
    });

    r.check("clone_vfork_thread_returns_when_the_thread_ends", || {
        // In a child process, so a parent left waiting cannot stall the run.
        let pid = fork_child(|| i32::from(clone_vfork_thread() <= 0))?;
        let status = wait_child(pid, Duration::from_secs(20))?;
        expect_eq("child's status", describe_status(status), describe_status(0))
    });
}

const FUTEX_REQUEUE_PRIVATE: i32 = libc::FUTEX_REQUEUE | libc::FUTEX_PRIVATE_FLAG;

/// clone(CLONE_VM | CLONE_THREAD | CLONE_VFORK ...) of a thread that exits
/// at once: the caller sleeps until that thread has ended, then gets its
/// tid (a negative errno on failure).
fn clone_vfork_thread() -> i64 {
    let mut stack = vec![0u8; 16 * 1024];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let flags =
        (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_FILES | libc::CLONE_SIGHAND | libc::CLONE_THREAD | libc::CLONE_VFORK) as u64;
    let ret: i64;
    // SAFETY: the new thread runs only the instructions after the first
    // SYSCALL (rax = 0 there): exit(0) of itself, on its own stack, touching
    // no memory; the caller resumes when it has gone (CLONE_VFORK), so the
    // stack outlives it.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov eax, 60",
            "xor edi, edi",
            "syscall",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone => ret,
            in("rdi") flags,
            in("rsi") top,
            in("rdx") 0usize,
            in("r10") 0usize,
            in("r8") 0usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    drop(stack);
    ret
}
