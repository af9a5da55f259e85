//! `sysfuzz heap [reps] [pattern...]`: repeats one system-call pattern
//! `reps` times (default 1000) per pattern and prints the change of the
//! kernel heap in use (`/proc/meminfo`'s KernelHeapUsed) it caused, so a
//! leak of a few dozen bytes per call shows at once. Each pattern runs a
//! tenth of `reps` (at least 100) first unmeasured (the heap's first use of
//! it, bounded caches filling).
//!
//! One line per pattern, `heap <name> reps N +D kB (B bytes/rep) ok|LEAK`,
//! then `heap: N patterns, M leak`; exit status 1 if any leaks. A pattern
//! leaks when it keeps more than `LEAK_BYTES_PER_REP` per repetition.

use std::time::Duration;

/// More than this per repetition, kept after the pattern ended, is a leak
/// (the heap's own bookkeeping and the kernel log move by less than
/// 16 kB over a run of 1000).
const LEAK_BYTES_PER_REP: i64 = 16;

/// The kernel heap in use, in kB.
fn heap_used_kb() -> i64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    m.lines()
        .find_map(|l| l.strip_prefix("KernelHeapUsed:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1)
}

fn check(ok: bool, what: &str) {
    if !ok {
        eprintln!("heap: pattern step failed: {what}: {}", std::io::Error::last_os_error());
    }
}

/// Waits for one child (any) and returns whether it exited.
fn reap(pid: libc::pid_t) {
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut st, 0) };
}

fn fork_exit() {
    // SAFETY: the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: ends the child.
        unsafe { libc::_exit(0) };
    }
    check(pid > 0, "fork");
    reap(pid);
}

fn vfork_exit() {
    // SAFETY: vfork whose child only calls exit (see `raw_clone_like`).
    let pid = unsafe { crate::raw_clone_like(58, [0; 6]) };
    check(pid > 0, "vfork");
    reap(pid as libc::pid_t);
}

/// A child with three threads busy in system calls that ends with
/// exit_group while they run (as every sysfuzz worker does).
fn fork_threads_exit() {
    // SAFETY: the child is single-threaded after fork, so it may start threads.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for _ in 0..3 {
            std::thread::spawn(|| {
                loop {
                    // SAFETY: getppid has no arguments.
                    unsafe { libc::getppid() };
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1));
        // SAFETY: ends the child and its threads.
        unsafe { libc::_exit(0) };
    }
    check(pid > 0, "fork");
    reap(pid);
}

/// A child that leaves a grandchild behind to be adopted by init.
fn orphan() {
    // SAFETY: the child only forks and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: the grandchild only sleeps a moment and exits.
        unsafe {
            if libc::fork() == 0 {
                libc::usleep(1000);
                libc::_exit(0);
            }
            libc::_exit(0);
        }
    }
    check(pid > 0, "fork");
    reap(pid);
}

/// A child blocked in a pipe read, killed by SIGKILL.
fn kill_blocked_child() {
    let mut fds = [0; 2];
    // SAFETY: a pipe whose read end the child blocks on; the child only
    // reads and exits.
    unsafe {
        libc::pipe2(fds.as_mut_ptr(), 0);
        let pid = libc::fork();
        if pid == 0 {
            let mut b = [0u8; 1];
            libc::read(fds[0], b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
        libc::usleep(200);
        libc::kill(pid, libc::SIGKILL);
        reap(pid);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

/// A child that dies of a fault (a write to address 0) and one that dies
/// of a default-action signal it sends itself.
fn fault_and_signal_deaths() {
    for how in 0..2 {
        // SAFETY: the child faults or signals itself; nothing else.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                if how == 0 {
                    std::arch::asm!("mov byte ptr [{0}], 1", in(reg) 0usize, options(nostack));
                } else {
                    libc::kill(libc::getpid(), libc::SIGTERM);
                }
                libc::_exit(0);
            }
            reap(pid);
        }
    }
}

fn thread_join() {
    let _ = std::thread::spawn(|| ()).join();
}

fn pipe_close() {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two ints; the write and closes use them.
    unsafe {
        check(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == 0, "pipe2");
        libc::write(fds[1], b"x".as_ptr().cast(), 1);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

/// A socket pair; a pipe end, another pair and the pair's own ends sent
/// over it with SCM_RIGHTS, never received, then all closed: the message
/// keeps its own sockets alive (a cycle, which the kernel collects as
/// Linux's unix_gc does).
fn unix_rights() {
    let mut sv = [0; 2];
    let mut other = [0; 2];
    let mut pfd = [0; 2];
    // SAFETY: socketpair/pipe2 fill two ints each; the message points at
    // local buffers that outlive the sendmsg call.
    unsafe {
        check(libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) == 0, "socketpair");
        check(libc::socketpair(libc::AF_UNIX, libc::SOCK_DGRAM, 0, other.as_mut_ptr()) == 0, "socketpair");
        check(libc::pipe2(pfd.as_mut_ptr(), 0) == 0, "pipe2");
        let fds = [pfd[0], other[0], other[1], sv[0], sv[1]];
        let mut cbuf = [0u64; 8];
        let clen = libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) as usize;
        let mut iov = libc::iovec { iov_base: b"r".as_ptr() as *mut _, iov_len: 1 };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = clen;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), fds.len());
        check(libc::sendmsg(sv[0], &msg, 0) == 1, "sendmsg");
        for fd in [sv[0], sv[1], other[0], other[1], pfd[0], pfd[1]] {
            libc::close(fd);
        }
    }
}

/// A named AF_UNIX listener, a client connected to it, both closed.
fn unix_listen_connect() {
    let path = c"/tmp/sysfuzz-heap.sock";
    // SAFETY: socket calls on a sockaddr_un built here.
    unsafe {
        libc::unlink(path.as_ptr());
        let mut a: libc::sockaddr_un = std::mem::zeroed();
        a.sun_family = libc::AF_UNIX as u16;
        for (d, s) in a.sun_path.iter_mut().zip(path.to_bytes()) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as u32;
        let l = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        check(libc::bind(l, (&a as *const libc::sockaddr_un).cast(), len) == 0, "bind");
        check(libc::listen(l, 4) == 0, "listen");
        let c = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        check(libc::connect(c, (&a as *const libc::sockaddr_un).cast(), len) == 0, "connect");
        libc::close(c);
        libc::close(l);
        libc::unlink(path.as_ptr());
    }
}

fn udp_send() {
    // SAFETY: a UDP socket and a sendto on a local sockaddr_in.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = 9u16.to_be();
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        libc::sendto(s, b"x".as_ptr().cast(), 1, 0, (&a as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&a) as u32);
        libc::close(s);
    }
}

fn tcp_listen_close() {
    // SAFETY: a TCP socket bound to an ephemeral local port.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as u16;
        a.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        libc::bind(s, (&a as *const libc::sockaddr_in).cast(), std::mem::size_of_val(&a) as u32);
        libc::listen(s, 1);
        libc::close(s);
    }
}

fn epoll_pipe() {
    let mut fds = [0; 2];
    // SAFETY: epoll on a fresh pipe, all closed at the end.
    unsafe {
        libc::pipe2(fds.as_mut_ptr(), 0);
        let ep = libc::epoll_create1(0);
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: 1 };
        check(libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fds[0], &mut ev) == 0, "epoll_ctl");
        let mut out = [libc::epoll_event { events: 0, u64: 0 }; 2];
        libc::epoll_wait(ep, out.as_mut_ptr(), 2, 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
        libc::close(ep);
    }
}

/// A timerfd armed decades ahead, polled (which asks for a wake-up at
/// its expiry), then closed.
fn timerfd_far() {
    // SAFETY: a timerfd with a local itimerspec, polled and closed.
    unsafe {
        let t = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK);
        let v = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 1_000_000_000 + libc::rand() as i64, tv_nsec: 0 },
        };
        check(libc::timerfd_settime(t, 0, &v, std::ptr::null_mut()) == 0, "timerfd_settime");
        let mut p = libc::pollfd { fd: t, events: libc::POLLIN, revents: 0 };
        libc::poll(&mut p, 1, 0);
        libc::close(t);
    }
}

fn eventfd_close() {
    // SAFETY: an eventfd written and closed.
    unsafe {
        let e = libc::eventfd(0, 0);
        libc::write(e, 1u64.to_ne_bytes().as_ptr().cast(), 8);
        libc::close(e);
    }
}

/// A futex wait that times out, and one that finds another value.
fn futex_timeout() {
    let word = std::sync::atomic::AtomicU32::new(0);
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 10_000 };
    // SAFETY: futex calls on a local word with a local timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, 0, &ts);
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, 1, &ts);
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

/// A handled signal sent to this thread, and one queued with sigqueue.
fn signal_self() {
    // SAFETY: a no-op handler for SIGUSR2, then signals to this process.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
        libc::raise(libc::SIGUSR2);
        let v: libc::sigval = std::mem::zeroed();
        libc::sigqueue(libc::getpid(), libc::SIGUSR2, v);
    }
}

/// alarm and setitimer armed decades ahead, then disarmed.
fn alarm_far() {
    // SAFETY: alarm has no pointer arguments.
    unsafe {
        libc::alarm(1_000_000_000);
        libc::alarm(0);
    }
}

/// A child that arms an alarm decades ahead and exits with it armed.
fn fork_alarm_exit() {
    // SAFETY: the child only arms an alarm and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::alarm(1_000_000_000);
            libc::_exit(0);
        }
    }
    reap(pid);
}

/// A file mapped shared and private, written, unmapped and closed.
fn mmap_file() {
    let path = c"/tmp/sysfuzz-heap.map";
    // SAFETY: maps of a fresh 2-page file, unmapped before it is closed.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC, 0o600);
        libc::ftruncate(fd, 8192);
        for flags in [libc::MAP_SHARED, libc::MAP_PRIVATE] {
            let m = libc::mmap(std::ptr::null_mut(), 8192, libc::PROT_READ | libc::PROT_WRITE, flags, fd, 0);
            if m != libc::MAP_FAILED {
                *(m as *mut u8) = 1;
                libc::munmap(m, 8192);
            }
        }
        libc::close(fd);
        libc::unlink(path.as_ptr());
    }
}

/// Files and directories made and removed in /tmp.
fn files_churn() {
    // SAFETY: path calls on C strings.
    unsafe {
        let d = c"/tmp/sysfuzz-heap.d";
        libc::mkdir(d.as_ptr(), 0o700);
        let f = c"/tmp/sysfuzz-heap.d/f";
        let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
        libc::write(fd, b"data".as_ptr().cast(), 4);
        libc::close(fd);
        libc::rename(f.as_ptr(), c"/tmp/sysfuzz-heap.d/g".as_ptr());
        libc::symlink(c"g".as_ptr(), c"/tmp/sysfuzz-heap.d/l".as_ptr());
        libc::unlink(c"/tmp/sysfuzz-heap.d/l".as_ptr());
        libc::unlink(c"/tmp/sysfuzz-heap.d/g".as_ptr());
        libc::rmdir(d.as_ptr());
    }
}

fn proc_read() {
    for p in ["/proc/self/stat", "/proc/self/maps", "/proc/self/status", "/proc/1/stat"] {
        let _ = std::fs::read(p);
    }
}

fn sleeps_and_polls() {
    let ts = libc::timespec { tv_sec: 0, tv_nsec: 1000 };
    // SAFETY: nanosleep and poll with local arguments.
    unsafe {
        libc::nanosleep(&ts, std::ptr::null_mut());
        libc::poll(std::ptr::null_mut(), 0, 1);
    }
}

type Pattern = (&'static str, fn());

const PATTERNS: &[Pattern] = &[
    ("fork_exit", fork_exit),
    ("vfork_exit", vfork_exit),
    ("fork_threads_exit", fork_threads_exit),
    ("orphan", orphan),
    ("kill_blocked_child", kill_blocked_child),
    ("fault_and_signal_deaths", fault_and_signal_deaths),
    ("thread_join", thread_join),
    ("pipe_close", pipe_close),
    ("unix_rights", unix_rights),
    ("unix_listen_connect", unix_listen_connect),
    ("udp_send", udp_send),
    ("tcp_listen_close", tcp_listen_close),
    ("epoll_pipe", epoll_pipe),
    ("timerfd_far", timerfd_far),
    ("eventfd_close", eventfd_close),
    ("futex_timeout", futex_timeout),
    ("signal_self", signal_self),
    ("alarm_far", alarm_far),
    ("fork_alarm_exit", fork_alarm_exit),
    ("mmap_file", mmap_file),
    ("files_churn", files_churn),
    ("proc_read", proc_read),
    ("sleeps_and_polls", sleeps_and_polls),
];

/// Runs the heap check (`args` after `heap`); returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let reps = args.first().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1000).max(10);
    let names: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let chosen: Vec<&Pattern> = PATTERNS.iter().filter(|(n, _)| names.is_empty() || names.contains(n)).collect();
    if chosen.is_empty() {
        let all: Vec<&str> = PATTERNS.iter().map(|(n, _)| *n).collect();
        eprintln!("sysfuzz heap: no such pattern; patterns: {}", all.join(" "));
        return 2;
    }
    // Right after boot the management agents are still starting (their
    // sockets, files and worlds take kernel heap): wait until the heap has
    // held still for a second (at most 60 s) so that their growth is not
    // counted against the first pattern.
    let quiet = wait_for_quiet_heap(Duration::from_secs(1), Duration::from_secs(60));
    println!("heap: kernel heap {} before the patterns", if quiet { "quiet" } else { "still moving after 60 s" });
    let mut leaks = 0;
    for (name, f) in &chosen {
        // At least 100: bounded structures that fill over the first few
        // dozen uses (up to 32 closed UDP sockets linger until sent, the
        // socket table's slots) are not a leak.
        for _ in 0..(reps / 10).max(100) {
            f();
        }
        settle();
        let before = heap_used_kb();
        for _ in 0..reps {
            f();
        }
        settle();
        let after = heap_used_kb();
        let grown = after - before;
        let per_rep = grown * 1024 / reps as i64;
        let leak = per_rep > LEAK_BYTES_PER_REP;
        leaks += usize::from(leak);
        println!("heap {name} reps {reps} {grown:+} kB ({per_rep} bytes/rep) {}", if leak { "LEAK" } else { "ok" });
    }
    println!("heap: {} patterns, {leaks} leak", chosen.len());
    i32::from(leaks > 0)
}

/// Lets exited children be reaped and closed files be released, and
/// waits (at most 5 s) until the heap holds still for half a second:
/// closed UDP sockets linger until the network world has sent their
/// datagrams (up to 32, at most 3 s), and a measurement taken while they
/// do would count that bounded, passing state as kept heap — or miss it
/// at the start and count it at the end (seen: udp_send +21 kB once).
fn settle() {
    std::thread::sleep(Duration::from_millis(50));
    wait_for_quiet_heap(Duration::from_millis(500), Duration::from_secs(5));
}


/// Waits until the kernel heap in use stays the same for `still`; false if
/// it is still moving after `limit`.
fn wait_for_quiet_heap(still: Duration, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    let mut last = heap_used_kb();
    let mut since = std::time::Instant::now();
    while start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(100));
        let now = heap_used_kb();
        if now != last {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= still {
            return true;
        }
    }
    false
}
