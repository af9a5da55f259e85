//! Clocks and sleeping.

use crate::harness::*;
use std::time::{Duration, Instant};

fn clock(id: libc::clockid_t) -> Result<libc::timespec, i32> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer. Raw syscall: time must work without a vDSO.
    sys(unsafe { libc::syscall(libc::SYS_clock_gettime, id, &mut ts) })?;
    Ok(ts)
}

fn ns(ts: &libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

pub fn run(r: &mut Runner) {
    r.check("clock_monotonic_never_backwards", || {
        let mut prev = ns(&clock(libc::CLOCK_MONOTONIC).map_err(|e| errno_name(e).to_string())?);
        let first = prev;
        for i in 0..10_000 {
            let ts = clock(libc::CLOCK_MONOTONIC).map_err(|e| errno_name(e).to_string())?;
            ensure!((0..1_000_000_000).contains(&ts.tv_nsec), "tv_nsec out of range: {}", ts.tv_nsec);
            let now = ns(&ts);
            ensure!(now >= prev, "read {i} went backwards by {} ns", prev - now);
            prev = now;
        }
        // Across 10,000 calls the clock must have moved at all.
        ensure!(prev > first, "CLOCK_MONOTONIC did not advance over 10,000 reads");
        Ok(())
    });

    r.check("clock_realtime_after_2020", || {
        let ts = clock(libc::CLOCK_REALTIME).map_err(|e| errno_name(e).to_string())?;
        ensure!(ts.tv_sec > 1_577_836_800, "CLOCK_REALTIME {} is before 2020-01-01", ts.tv_sec);
        let sys_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
        ensure!((sys_now.as_secs() as i64 - ts.tv_sec).abs() <= 2, "SystemTime and CLOCK_REALTIME disagree");
        Ok(())
    });

    r.check("clock_gettime_bad_clock_einval", || {
        expect_errno("clock id 1000", clock(1000).map(|_| 0), libc::EINVAL)
    });

    r.check("clock_getres_monotonic", || {
        let mut ts = libc::timespec { tv_sec: 9, tv_nsec: 9 };
        // SAFETY: valid out-pointer.
        ok("clock_getres", sys(unsafe { libc::syscall(libc::SYS_clock_getres, libc::CLOCK_MONOTONIC, &mut ts) }))?;
        ensure!(ts.tv_sec == 0 && ts.tv_nsec > 0 && ts.tv_nsec <= 10_000_000, "resolution {}s {}ns", ts.tv_sec, ts.tv_nsec);
        Ok(())
    });

    r.check("nanosleep_at_least_requested", || {
        let req = libc::timespec { tv_sec: 0, tv_nsec: 30_000_000 };
        let before = clock(libc::CLOCK_MONOTONIC).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: valid request pointer, null remainder.
        ok("nanosleep", sys(unsafe { libc::syscall(libc::SYS_nanosleep, &req, std::ptr::null_mut::<libc::timespec>()) }))?;
        let after = clock(libc::CLOCK_MONOTONIC).map_err(|e| errno_name(e).to_string())?;
        let slept = ns(&after) - ns(&before);
        ensure!(slept >= 30_000_000, "slept {slept} ns, asked for 30 ms");
        let bad = libc::timespec { tv_sec: 0, tv_nsec: 1_000_000_000 };
        // SAFETY: as above.
        let e = unsafe { libc::syscall(libc::SYS_nanosleep, &bad, std::ptr::null_mut::<libc::timespec>()) };
        expect_errno("nanosleep tv_nsec = 1e9", sys(e), libc::EINVAL)
    });

    r.check("thread_sleep_at_least_requested", || {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(40));
        let took = t.elapsed();
        ensure!(took >= Duration::from_millis(40), "thread::sleep(40ms) returned after {took:?}");
        Ok(())
    });

    r.check("gettimeofday_matches_realtime", || {
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        // SAFETY: valid out-pointer, null timezone.
        ok("gettimeofday", sys(unsafe { libc::syscall(libc::SYS_gettimeofday, &mut tv, 0usize) }))?;
        let rt = clock(libc::CLOCK_REALTIME).map_err(|e| errno_name(e).to_string())?;
        ensure!((0..1_000_000).contains(&tv.tv_usec), "tv_usec out of range");
        ensure!((rt.tv_sec - tv.tv_sec).abs() <= 1, "gettimeofday {} vs CLOCK_REALTIME {}", tv.tv_sec, rt.tv_sec);
        Ok(())
    });
}
