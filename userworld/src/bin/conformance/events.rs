//! epoll, eventfd and timerfd: the readiness calls tokio and other event
//! loops are built on, over pipes, eventfds, timerfds and TCP sockets on
//! the loopback interface.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

fn epoll() -> Result<OwnedFd, String> {
    // SAFETY: integer argument.
    let fd = ok("epoll_create1", sys(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }))?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn ctl(ep: &impl AsRawFd, op: i32, fd: RawFd, events: u32, data: u64) -> Result<i64, i32> {
    let mut e = libc::epoll_event { events, u64: data };
    // SAFETY: a valid epoll_event.
    sys(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut e) })
}

/// epoll_wait into a buffer of `max`: the (events, data) pairs.
fn wait(ep: &impl AsRawFd, max: usize, timeout_ms: i32) -> Result<Vec<(u32, u64)>, i32> {
    let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max];
    // SAFETY: the buffer holds `max` events.
    let n = sys(unsafe { libc::epoll_wait(ep.as_raw_fd(), evs.as_mut_ptr(), max as i32, timeout_ms) })?;
    Ok(evs[..n as usize].iter().map(|e| ({ e.events }, { e.u64 })).collect())
}

fn eventfd(init: u32, flags: i32) -> Result<OwnedFd, String> {
    // SAFETY: integer arguments.
    let fd = ok("eventfd", sys(unsafe { libc::eventfd(init, flags) }))?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn read_u64(fd: &impl AsRawFd) -> Result<u64, i32> {
    let mut b = [0u8; 8];
    read_fd(fd, &mut b)?;
    Ok(u64::from_ne_bytes(b))
}

fn timerfd(clock: i32, flags: i32) -> Result<OwnedFd, i32> {
    // SAFETY: integer arguments.
    let fd = sys(unsafe { libc::timerfd_create(clock, flags) })?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn ts(ns: u64) -> libc::timespec {
    libc::timespec { tv_sec: (ns / 1_000_000_000) as i64, tv_nsec: (ns % 1_000_000_000) as i64 }
}

fn settime(fd: &impl AsRawFd, flags: i32, value_ns: u64, interval_ns: u64) -> Result<i64, i32> {
    let v = libc::itimerspec { it_interval: ts(interval_ns), it_value: ts(value_ns) };
    // SAFETY: a valid itimerspec; no old value wanted.
    sys(unsafe { libc::timerfd_settime(fd.as_raw_fd(), flags, &v, std::ptr::null_mut()) })
}

fn gettime_ns(fd: &impl AsRawFd) -> Result<(u64, u64), i32> {
    let mut v = libc::itimerspec { it_interval: ts(0), it_value: ts(0) };
    // SAFETY: a valid out pointer.
    sys(unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut v) })?;
    let ns = |t: libc::timespec| t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    Ok((ns(v.it_value), ns(v.it_interval)))
}

const BAD_PTR: usize = 0x10;

pub fn run(r: &mut Runner) {
    r.check("epoll_create_flags", || {
        let ep = epoll()?;
        // SAFETY: integer arguments.
        expect_eq("FD_CLOEXEC", sys(unsafe { libc::fcntl(ep.as_raw_fd(), libc::F_GETFD) }), Ok(libc::FD_CLOEXEC as i64))?;
        // SAFETY: integer argument.
        expect_errno("bad flags", sys(unsafe { libc::epoll_create1(0x4) }), libc::EINVAL)?;
        // SAFETY: integer argument.
        expect_errno("epoll_create(0)", sys(unsafe { libc::epoll_create(0) }), libc::EINVAL)
    });

    r.check("epoll_ctl_errors", || {
        let ep = epoll()?;
        let (rd, _wr) = pipe();
        expect_errno("bad fd", ctl(&ep, libc::EPOLL_CTL_ADD, 1000, libc::EPOLLIN as u32, 0), libc::EBADF)?;
        expect_errno("epfd not epoll", ctl(&rd, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::EINVAL)?;
        expect_errno("epoll on itself", ctl(&ep, libc::EPOLL_CTL_ADD, ep.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::EINVAL)?;
        expect_errno("MOD unregistered", ctl(&ep, libc::EPOLL_CTL_MOD, rd.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::ENOENT)?;
        expect_errno("DEL unregistered", ctl(&ep, libc::EPOLL_CTL_DEL, rd.as_raw_fd(), 0, 0), libc::ENOENT)?;
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 0))?;
        expect_errno("ADD twice", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::EEXIST)?;
        expect_errno("bad op", ctl(&ep, 7, rd.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::EINVAL)?;
        let bad = BAD_PTR as *mut libc::epoll_event;
        // SAFETY: the kernel must refuse the bad pointer without touching it.
        expect_errno("bad event pointer", sys(unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_MOD, rd.as_raw_fd(), bad) }), libc::EFAULT)?;
        let excl = (libc::EPOLLIN | libc::EPOLLEXCLUSIVE | libc::EPOLLONESHOT) as u32;
        let (rd2, _wr2) = pipe();
        expect_errno("EXCLUSIVE|ONESHOT", ctl(&ep, libc::EPOLL_CTL_ADD, rd2.as_raw_fd(), excl, 0), libc::EINVAL)?;
        ok("DEL", ctl(&ep, libc::EPOLL_CTL_DEL, rd.as_raw_fd(), 0, 0))?;
        expect_errno("DEL again", ctl(&ep, libc::EPOLL_CTL_DEL, rd.as_raw_fd(), 0, 0), libc::ENOENT)
    });

    r.check("epoll_ctl_regular_file_eperm", || {
        let ep = epoll()?;
        let f = std::fs::File::open("/proc/self/exe").or_else(|_| std::fs::File::open("/bin/sh")).map_err(|e| e.to_string())?;
        expect_errno("regular file", ctl(&ep, libc::EPOLL_CTL_ADD, f.as_raw_fd(), libc::EPOLLIN as u32, 0), libc::EPERM)
    });

    r.check("epoll_wait_errors_and_timeout", || {
        let ep = epoll()?;
        let mut e = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: maxevents 0 must be refused.
        expect_errno("maxevents 0", sys(unsafe { libc::epoll_wait(ep.as_raw_fd(), e.as_mut_ptr(), 0, 0) }), libc::EINVAL)?;
        let (rd, _wr) = pipe();
        {
            // A ready file whose event cannot be stored: EFAULT, and the
            // event is not lost.
            let (rd2, wr2) = pipe();
            write_fd(&wr2, b"x").map_err(errno_name)?;
            ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd2.as_raw_fd(), libc::EPOLLIN as u32, 2))?;
            // SAFETY: the kernel must refuse the bad pointer.
            expect_errno("bad buffer", sys(unsafe { libc::epoll_wait(ep.as_raw_fd(), BAD_PTR as *mut _, 4, 0) }), libc::EFAULT)?;
            // SAFETY: a kernel address is refused before anything else.
            expect_errno("kernel buffer", sys(unsafe { libc::epoll_wait(ep.as_raw_fd(), 0xffff_8000_0000_0000usize as *mut _, 4, 0) }), libc::EFAULT)?;
            expect_eq("still reported", wait(&ep, 4, 0), Ok(vec![(libc::EPOLLIN as u32, 2)]))?;
            ok("DEL", ctl(&ep, libc::EPOLL_CTL_DEL, rd2.as_raw_fd(), 0, 0))?;
        }
        // SAFETY: a pipe is not an epoll instance.
        expect_errno("not epoll", sys(unsafe { libc::epoll_wait(rd.as_raw_fd(), e.as_mut_ptr(), 1, 0) }), libc::EINVAL)?;
        // SAFETY: 1000 is not open.
        expect_errno("bad epfd", sys(unsafe { libc::epoll_wait(1000, e.as_mut_ptr(), 1, 0) }), libc::EBADF)?;
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 1))?;
        expect_eq("nothing ready, timeout 0", wait(&ep, 4, 0), Ok(vec![]))?;
        let t = Instant::now();
        expect_eq("nothing ready, timeout 100 ms", wait(&ep, 4, 100), Ok(vec![]))?;
        let el = t.elapsed();
        ensure!(el >= Duration::from_millis(90) && el < Duration::from_secs(5), "waited {el:?} for a 100 ms timeout");
        Ok(())
    });

    r.check("epoll_level_triggered_pipe", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 7))?;
        ok("ADD write end", ctl(&ep, libc::EPOLL_CTL_ADD, wr.as_raw_fd(), libc::EPOLLOUT as u32, 8))?;
        expect_eq("only writable", wait(&ep, 4, 0), Ok(vec![(libc::EPOLLOUT as u32, 8)]))?;
        ok("DEL write end", ctl(&ep, libc::EPOLL_CTL_DEL, wr.as_raw_fd(), 0, 0))?;
        write_fd(&wr, b"abc").map_err(errno_name)?;
        expect_eq("readable", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 7)]))?;
        expect_eq("still readable (level)", wait(&ep, 4, 0), Ok(vec![(libc::EPOLLIN as u32, 7)]))?;
        let mut b = [0u8; 8];
        expect_eq("drain", read_fd(&rd, &mut b), Ok(3))?;
        expect_eq("drained", wait(&ep, 4, 0), Ok(vec![]))
    });

    r.check("epoll_edge_triggered_pipe", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLET) as u32, 7))?;
        write_fd(&wr, b"abc").map_err(errno_name)?;
        expect_eq("edge", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 7)]))?;
        expect_eq("no second report without a new edge", wait(&ep, 4, 50), Ok(vec![]))?;
        write_fd(&wr, b"more").map_err(errno_name)?;
        expect_eq("new data is a new edge", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 7)]))?;
        let mut b = [0u8; 16];
        expect_eq("drain", read_fd(&rd, &mut b), Ok(7))?;
        write_fd(&wr, b"x").map_err(errno_name)?;
        expect_eq("refilled after drain", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 7)]))
    });

    r.check("epoll_oneshot_rearm_with_mod", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        let ev = (libc::EPOLLIN | libc::EPOLLONESHOT) as u32;
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), ev, 1))?;
        write_fd(&wr, b"a").map_err(errno_name)?;
        expect_eq("first", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 1)]))?;
        write_fd(&wr, b"b").map_err(errno_name)?;
        expect_eq("disabled after one report", wait(&ep, 4, 50), Ok(vec![]))?;
        ok("MOD", ctl(&ep, libc::EPOLL_CTL_MOD, rd.as_raw_fd(), ev, 2))?;
        expect_eq("re-armed with the new data", wait(&ep, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 2)]))
    });

    r.check("epoll_hup_and_err_on_pipes", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        let (rd2, wr2) = pipe();
        ok("ADD read end", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 1))?;
        ok("ADD write end", ctl(&ep, libc::EPOLL_CTL_ADD, wr2.as_raw_fd(), libc::EPOLLOUT as u32, 2))?;
        drop(wr);
        drop(rd2);
        let mut got = wait(&ep, 4, 1000).map_err(errno_name)?;
        got.sort_by_key(|e| e.1);
        ensure!(got.len() == 2, "events {got:?}");
        ensure!(got[0].0 & libc::EPOLLHUP as u32 != 0, "read end without writer: {:#x}", got[0].0);
        ensure!(got[1].0 & libc::EPOLLERR as u32 != 0, "write end without reader: {:#x}", got[1].0);
        Ok(())
    });

    r.check("epoll_closed_fd_is_forgotten", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 1))?;
        write_fd(&wr, b"a").map_err(errno_name)?;
        drop(rd);
        expect_eq("no events for a closed file", wait(&ep, 4, 0), Ok(vec![]))
    });

    r.check("epoll_small_maxevents_serves_all", || {
        let ep = epoll()?;
        let pipes: Vec<_> = (0..4).map(|_| pipe()).collect();
        for (i, (rd, wr)) in pipes.iter().enumerate() {
            ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, i as u64))?;
            write_fd(wr, b"x").map_err(errno_name)?;
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let got = wait(&ep, 1, 1000).map_err(errno_name)?;
            ensure!(got.len() == 1, "one event per call, got {got:?}");
            seen.push(got[0].1);
        }
        seen.sort_unstable();
        expect_eq("every pipe reported in turn", seen, vec![0, 1, 2, 3])
    });

    r.check("epoll_wakes_on_write_from_thread", || {
        let ep = epoll()?;
        let (rd, wr) = pipe();
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLET) as u32, 5))?;
        let t = Instant::now();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let _ = write_fd(&wr, b"wake");
            wr
        });
        let got = wait(&ep, 4, 10_000);
        let el = t.elapsed();
        let _ = h.join();
        expect_eq("woken", got, Ok(vec![(libc::EPOLLIN as u32, 5)]))?;
        ensure!(el >= Duration::from_millis(80) && el < Duration::from_secs(5), "woke after {el:?}");
        Ok(())
    });

    r.check("epoll_nested_and_loop", || {
        let outer = epoll()?;
        let inner = epoll()?;
        let (rd, wr) = pipe();
        ok("inner ADD", ctl(&inner, libc::EPOLL_CTL_ADD, rd.as_raw_fd(), libc::EPOLLIN as u32, 1))?;
        ok("outer ADD inner", ctl(&outer, libc::EPOLL_CTL_ADD, inner.as_raw_fd(), libc::EPOLLIN as u32, 2))?;
        expect_errno("loop", ctl(&inner, libc::EPOLL_CTL_ADD, outer.as_raw_fd(), libc::EPOLLIN as u32, 3), libc::ELOOP)?;
        expect_eq("nothing yet", wait(&outer, 4, 0), Ok(vec![]))?;
        write_fd(&wr, b"x").map_err(errno_name)?;
        expect_eq("inner readable", wait(&outer, 4, 1000), Ok(vec![(libc::EPOLLIN as u32, 2)]))
    });

    r.check("eventfd_counter", || {
        let e = eventfd(3, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?;
        write_fd(&e, &4u64.to_ne_bytes()).map_err(errno_name)?;
        expect_eq("sum", read_u64(&e), Ok(7))?;
        expect_errno("empty, non-blocking", read_u64(&e).map(|v| v as i64), libc::EAGAIN)?;
        expect_errno("write 2^64-1", write_fd(&e, &u64::MAX.to_ne_bytes()), libc::EINVAL)?;
        expect_errno("short write", write_fd(&e, &[1, 0, 0]), libc::EINVAL)?;
        write_fd(&e, &1u64.to_ne_bytes()).map_err(errno_name)?;
        let mut small = [0u8; 4];
        expect_errno("short read", read_fd(&e, &mut small), libc::EINVAL)?;
        write_fd(&e, &(u64::MAX - 2).to_ne_bytes()).map_err(errno_name)?;
        expect_errno("overflow", write_fd(&e, &1u64.to_ne_bytes()), libc::EAGAIN)?;
        expect_eq("maximum", read_u64(&e), Ok(u64::MAX - 1))?;
        // SAFETY: bad flags must be refused.
        expect_errno("bad flags", sys(unsafe { libc::eventfd(0, 0x10) }), libc::EINVAL)
    });

    r.check("eventfd_semaphore", || {
        let e = eventfd(2, libc::EFD_SEMAPHORE | libc::EFD_NONBLOCK)?;
        expect_eq("one", read_u64(&e), Ok(1))?;
        expect_eq("one again", read_u64(&e), Ok(1))?;
        expect_errno("then empty", read_u64(&e).map(|v| v as i64), libc::EAGAIN)
    });

    r.check("eventfd_blocking_read_and_epoll", || {
        let e = eventfd(0, 0)?;
        let ep = epoll()?;
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, e.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLET) as u32, 9))?;
        expect_eq("writable at first", wait(&ep, 4, 0), Ok(vec![(libc::EPOLLOUT as u32, 9)]))?;
        let fd = e.as_raw_fd();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: `e` outlives the thread (joined below); 8 valid bytes.
            unsafe { libc::write(fd, 5u64.to_ne_bytes().as_ptr().cast(), 8) }
        });
        let t = Instant::now();
        let v = read_u64(&e);
        let _ = h.join();
        expect_eq("blocking read woken by the write", v, Ok(5))?;
        ensure!(t.elapsed() < Duration::from_secs(5), "read took {:?}", t.elapsed());
        write_fd(&e, &1u64.to_ne_bytes()).map_err(errno_name)?;
        let got = wait(&ep, 4, 1000).map_err(errno_name)?;
        ensure!(got.len() == 1 && got[0].0 & libc::EPOLLIN as u32 != 0, "readable edge: {got:?}");
        Ok(())
    });

    r.check("timerfd_errors", || {
        expect_errno("bad clock", timerfd(libc::CLOCK_PROCESS_CPUTIME_ID, 0).map(|_| 0), libc::EINVAL)?;
        expect_errno("bad flags", timerfd(libc::CLOCK_MONOTONIC, 0x1).map(|_| 0), libc::EINVAL)?;
        let t = timerfd(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK).map_err(errno_name)?;
        let bad = libc::itimerspec { it_interval: ts(0), it_value: libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 } };
        // SAFETY: a valid (but out-of-range) itimerspec.
        expect_errno("tv_nsec out of range", sys(unsafe { libc::timerfd_settime(t.as_raw_fd(), 0, &bad, std::ptr::null_mut()) }), libc::EINVAL)?;
        // SAFETY: the kernel must refuse the bad pointer.
        expect_errno("bad new value", sys(unsafe { libc::timerfd_settime(t.as_raw_fd(), 0, BAD_PTR as *const _, std::ptr::null_mut()) }), libc::EFAULT)?;
        let (rd, _wr) = pipe();
        expect_errno("gettime on a pipe", gettime_ns(&rd).map(|_| 0), libc::EINVAL)?;
        let mut b = [0u8; 8];
        expect_errno("disarmed, non-blocking", read_fd(&t, &mut b), libc::EAGAIN)
    });

    r.check("timerfd_one_shot_monotonic", || {
        let t = timerfd(libc::CLOCK_MONOTONIC, 0).map_err(errno_name)?;
        let start = Instant::now();
        ok("settime", settime(&t, 0, 100_000_000, 0))?;
        let (left, iv) = gettime_ns(&t).map_err(errno_name)?;
        ensure!(left > 0 && left <= 100_000_000 && iv == 0, "gettime ({left}, {iv})");
        expect_eq("blocking read: one expiry", read_u64(&t), Ok(1))?;
        let el = start.elapsed();
        ensure!(el >= Duration::from_millis(90) && el < Duration::from_secs(5), "expired after {el:?}");
        expect_eq("disarmed after expiry", gettime_ns(&t), Ok((0, 0)))
    });

    r.check("timerfd_periodic_counts_expirations", || {
        let t = timerfd(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK).map_err(errno_name)?;
        ok("settime", settime(&t, 0, 20_000_000, 20_000_000))?;
        std::thread::sleep(Duration::from_millis(110));
        let n = read_u64(&t).map_err(errno_name)?;
        ensure!((4..=50).contains(&n), "{n} expirations in ~110 ms of a 20 ms timer");
        let mut b = [0u8; 8];
        expect_errno("none left", read_fd(&t, &mut b), libc::EAGAIN)?;
        ok("disarm", settime(&t, 0, 0, 0))?;
        expect_eq("disarmed", gettime_ns(&t), Ok((0, 0)))
    });

    r.check("timerfd_realtime_abstime_with_epoll", || {
        let t = timerfd(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC).map_err(errno_name)?;
        let ep = epoll()?;
        ok("ADD", ctl(&ep, libc::EPOLL_CTL_ADD, t.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLET) as u32, 4))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?;
        let at = now.as_nanos() as u64 + 80_000_000;
        ok("settime ABSTIME", settime(&t, libc::TFD_TIMER_ABSTIME, at, 0))?;
        expect_eq("not yet", wait(&ep, 4, 0), Ok(vec![]))?;
        let start = Instant::now();
        expect_eq("epoll woken by the expiry", wait(&ep, 4, 5000), Ok(vec![(libc::EPOLLIN as u32, 4)]))?;
        ensure!(start.elapsed() < Duration::from_secs(4), "woke after {:?}", start.elapsed());
        expect_eq("one expiry", read_u64(&t), Ok(1))
    });

    r.check("epoll_tcp_loopback", || {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let ep = epoll()?;
        ok("ADD listener", ctl(&ep, libc::EPOLL_CTL_ADD, l.as_raw_fd(), (libc::EPOLLIN | libc::EPOLLET) as u32, 1))?;
        expect_eq("no connection yet", wait(&ep, 4, 0), Ok(vec![]))?;
        let mut c = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        expect_eq("listener readable", wait(&ep, 4, 5000), Ok(vec![(libc::EPOLLIN as u32, 1)]))?;
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let ev = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        ok("ADD stream", ctl(&ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), ev, 2))?;
        c.write_all(b"ping").map_err(|e| e.to_string())?;
        let got = wait(&ep, 4, 5000).map_err(errno_name)?;
        ensure!(got.iter().any(|e| e.1 == 2 && e.0 & libc::EPOLLIN as u32 != 0), "data readable: {got:?}");
        let mut b = [0u8; 16];
        expect_eq("read", s.read(&mut b).map_err(|e| e.to_string()), Ok(4))?;
        c.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = wait(&ep, 4, 1000).map_err(errno_name)?;
            if got.iter().any(|e| e.1 == 2 && e.0 & libc::EPOLLRDHUP as u32 != 0) {
                break;
            }
            ensure!(Instant::now() < deadline, "no EPOLLRDHUP after the peer's shutdown: {got:?}");
        }
        expect_eq("EOF", s.read(&mut b).map_err(|e| e.to_string()), Ok(0))
    });
}
