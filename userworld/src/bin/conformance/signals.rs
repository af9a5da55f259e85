//! Signal handlers, masks, SIGCHLD.

use crate::harness::*;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Counts handler invocations per signal number (handlers may only touch atomics).
static HITS: [AtomicI32; 65] = [const { AtomicI32::new(0) }; 65];

extern "C" fn count(sig: libc::c_int) {
    if let Some(h) = HITS.get(sig as usize) {
        h.fetch_add(1, Ordering::SeqCst);
    }
}

fn hits(sig: i32) -> i32 {
    HITS[sig as usize].load(Ordering::SeqCst)
}

/// Address last installed by `install`: Rust does not promise one address per
/// function (it can differ between codegen units), so compare against this.
static INSTALLED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Installs `count` for `sig`; returns the previous action.
fn install(sig: i32) -> Result<libc::sigaction, String> {
    // SAFETY: zeroed sigaction structs are valid; `count` is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count as extern "C" fn(libc::c_int) as libc::sighandler_t;
        INSTALLED.store(sa.sa_sigaction, Ordering::SeqCst);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        sys(libc::sigaction(sig, &sa, &mut old)).map_err(|e| format!("sigaction: {}", errno_name(e)))?;
        Ok(old)
    }
}

fn restore(sig: i32, old: &libc::sigaction) {
    // SAFETY: `old` came from a successful sigaction call.
    unsafe { libc::sigaction(sig, old, std::ptr::null_mut()) };
}

/// Waits briefly for a handler to have run `want` times.
fn wait_hits(sig: i32, want: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while hits(sig) < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    hits(sig) >= want
}

fn set_mask(how: i32, sig: i32) -> Result<i64, i32> {
    // SAFETY: zeroed sigset is valid and initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        sys(libc::sigprocmask(how, &set, std::ptr::null_mut()))
    }
}

fn is_pending(sig: i32) -> Result<bool, String> {
    // SAFETY: zeroed sigset is a valid out-value.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        sys(libc::sigpending(&mut set)).map_err(|e| format!("sigpending: {}", errno_name(e)))?;
        Ok(libc::sigismember(&set, sig) == 1)
    }
}

pub fn run(r: &mut Runner) {
    r.check("kill_self_sigusr1_handler", || {
        let old = install(libc::SIGUSR1)?;
        let before = hits(libc::SIGUSR1);
        // SAFETY: signalling ourselves with a handled signal.
        let k = sys(unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) });
        let ran = wait_hits(libc::SIGUSR1, before + 1);
        restore(libc::SIGUSR1, &old);
        expect_eq("kill", k, Ok(0))?;
        ensure!(ran, "SIGUSR1 handler did not run");
        expect_eq("handler runs", hits(libc::SIGUSR1), before + 1)
    });

    r.check("sigaction_reports_installed_handler", || {
        let old = install(libc::SIGUSR2)?;
        // SAFETY: querying only (null new action).
        let cur = unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut cur);
            cur
        };
        restore(libc::SIGUSR2, &old);
        expect_eq("handler address", cur.sa_sigaction, INSTALLED.load(Ordering::SeqCst))?;
        expect_eq("SA_RESTART kept", cur.sa_flags & libc::SA_RESTART, libc::SA_RESTART)?;
        // SAFETY: SIGKILL cannot be caught: this must fail without effect.
        let e = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = libc::SIG_IGN;
            sys(libc::sigaction(libc::SIGKILL, &sa, std::ptr::null_mut()))
        };
        expect_errno("sigaction(SIGKILL)", e, libc::EINVAL)
    });

    r.check("sigprocmask_block_unblock", || {
        let old = install(libc::SIGUSR2)?;
        let before = hits(libc::SIGUSR2);
        let res = (|| {
            ok("block", set_mask(libc::SIG_BLOCK, libc::SIGUSR2))?;
            // SAFETY: raise targets this thread, whose mask blocks the signal.
            ok("raise", sys(unsafe { libc::raise(libc::SIGUSR2) }))?;
            std::thread::sleep(Duration::from_millis(10));
            expect_eq("handler runs while blocked", hits(libc::SIGUSR2), before)?;
            ensure!(is_pending(libc::SIGUSR2)?, "SIGUSR2 not reported by sigpending");
            ok("unblock", set_mask(libc::SIG_UNBLOCK, libc::SIGUSR2))?;
            ensure!(wait_hits(libc::SIGUSR2, before + 1), "handler did not run after unblocking");
            // Standard signals do not queue: exactly one delivery.
            expect_eq("deliveries", hits(libc::SIGUSR2), before + 1)?;
            ensure!(!is_pending(libc::SIGUSR2)?, "still pending after delivery");
            Ok(())
        })();
        let _ = set_mask(libc::SIG_UNBLOCK, libc::SIGUSR2);
        restore(libc::SIGUSR2, &old);
        res
    });

    r.check("sigchld_on_child_exit", || {
        let old = install(libc::SIGCHLD)?;
        let before = hits(libc::SIGCHLD);
        let res = (|| {
            let pid = fork_child(|| 0)?;
            let status = wait_child(pid, Duration::from_secs(10))?;
            expect_exited(status, 0)?;
            ensure!(wait_hits(libc::SIGCHLD, before + 1), "SIGCHLD handler did not run");
            Ok(())
        })();
        restore(libc::SIGCHLD, &old);
        res
    });

    r.check("kill_invalid_signal_einval", || {
        // SAFETY: an invalid signal number is rejected without effect.
        expect_errno("kill(self, 1000)", sys(unsafe { libc::kill(libc::getpid(), 1000) }), libc::EINVAL)?;
        // SAFETY: signal 0 only checks that the target exists.
        expect_eq("kill(self, 0)", sys(unsafe { libc::kill(libc::getpid(), 0) }), Ok(0))
    });

    r.check("sig_ign_discards", || {
        // SAFETY: ignoring, raising and restoring SIGUSR1 in this process.
        unsafe {
            let prev = libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            let r = libc::raise(libc::SIGUSR1);
            let pending = is_pending(libc::SIGUSR1);
            libc::signal(libc::SIGUSR1, prev);
            expect_eq("raise", r, 0)?;
            // An ignored signal is discarded, not left pending (and did not kill us).
            expect_eq("pending", pending?, false)
        }
    });
}
