//! Job control: process groups, sessions, stop and continue signals, the
//! stop/continue reports of waitpid and waitid, and the terminal signals
//! SIGTTIN/SIGTTOU for background jobs (on a pseudo-terminal, where the
//! system has one).

use crate::harness::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// waitpid with options, retrying on EINTR; fails after `timeout` (the child is
/// then killed). Returns (pid, status); pid 0 with WNOHANG when nothing is to report.
fn waitpid(pid: libc::pid_t, options: i32, timeout: Duration) -> Result<(libc::pid_t, i32), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, options | libc::WNOHANG) };
        if r == -1 && errno() != libc::EINTR {
            return Err(format!("waitpid({pid}, {options:#x}): {}", errno_name(errno())));
        }
        if r > 0 || options & libc::WNOHANG != 0 && r == 0 {
            return Ok((r, status));
        }
        if Instant::now() > deadline {
            kill_and_reap(pid);
            return Err(format!("waitpid({pid}, {options:#x}): nothing within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: signalling and reaping our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
    }
}

fn kill(pid: libc::pid_t, sig: i32) -> Result<i64, i32> {
    // SAFETY: signalling our own child.
    sys(unsafe { libc::kill(pid, sig) })
}

fn expect_stopped(status: i32, sig: i32) -> CheckResult {
    if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == sig {
        Ok(())
    } else {
        Err(format!("status {status:#x} ({}), want stopped by signal {sig}", describe_status(status)))
    }
}

/// Reads one byte from a pipe end (blocking).
fn read_byte(fd: &OwnedFd) -> Result<u8, String> {
    let mut b = [0u8; 1];
    match read_fd(fd, &mut b) {
        Ok(1) => Ok(b[0]),
        other => Err(format!("read from child: {other:?}")),
    }
}

/// A child that writes a byte to `w` every 5 ms until killed: whether it
/// runs shows in whether bytes arrive.
fn ticking_child(w: &OwnedFd) -> Result<libc::pid_t, String> {
    let fd = w.as_raw_fd();
    fork_child(move || loop {
        // SAFETY: writing one byte from a valid buffer to an inherited pipe.
        unsafe { libc::write(fd, b"t".as_ptr().cast(), 1) };
        std::thread::sleep(Duration::from_millis(5));
    })
}

/// Drains what is in a non-blocking pipe; returns how many bytes were there.
fn drain(r: &OwnedFd) -> usize {
    let mut n = 0;
    let mut buf = [0u8; 256];
    while let Ok(k) = read_fd(r, &mut buf) {
        if k <= 0 {
            break;
        }
        n += k as usize;
    }
    n
}

/// `siginfo_t` from waitid: (si_code, si_pid, si_status).
fn waitid(idtype: libc::idtype_t, id: libc::id_t, options: i32) -> Result<(i32, i32, i32), i32> {
    // SAFETY: a zeroed siginfo_t is a valid out-value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is writable.
    sys(unsafe { libc::waitid(idtype, id, &mut info, options) })?;
    // SAFETY: waitid filled the child fields of the union (or left them zero).
    Ok(unsafe { (info.si_code, info.si_pid(), info.si_status()) })
}

/// The state letter of `/proc/<pid>/stat`.
fn proc_state(pid: libc::pid_t) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

pub fn run(r: &mut Runner) {
    r.check("jobctl_setpgid_rules", || {
        let (rd, wr) = pipe();
        let pid = fork_child(move || {
            let _ = read_fd(&rd, &mut [0u8; 1]);
            0
        })?;
        let res = (|| -> CheckResult {
            // SAFETY: plain process-group calls on our own child and ourselves.
            unsafe {
                expect_eq("setpgid(child, 0)", sys(libc::setpgid(pid, 0)), Ok(0))?;
                expect_eq("getpgid(child)", sys(libc::getpgid(pid)), Ok(pid as i64))?;
                // Back into our own group, then into its own again by number.
                expect_eq("setpgid(child, our pgrp)", sys(libc::setpgid(pid, libc::getpgrp())), Ok(0))?;
                expect_eq("getpgid(child) after", sys(libc::getpgid(pid)), Ok(libc::getpgrp() as i64))?;
                expect_eq("setpgid(child, child)", sys(libc::setpgid(pid, pid)), Ok(0))?;
                expect_errno("setpgid(child, -1)", sys(libc::setpgid(pid, -1)), libc::EINVAL)?;
                // A group that does not exist in our session.
                expect_errno("setpgid(child, no such group)", sys(libc::setpgid(pid, 0x3fff_fff0)), libc::EPERM)?;
                // Not our child.
                expect_errno("setpgid(getppid(), ..)", sys(libc::setpgid(libc::getppid(), 0)), libc::ESRCH)?;
                expect_errno("getpgid(no such pid)", sys(libc::getpgid(0x3fff_fff0)), libc::ESRCH)?;
            }
            Ok(())
        })();
        let _ = write_fd(&wr, b"x");
        let st = wait_child(pid, T)?;
        res?;
        expect_exited(st, 0)
    });

    r.check("jobctl_setsid_new_session", || {
        let (rd, wr) = pipe();
        let (go_r, go_w) = pipe();
        let pid = fork_child(move || {
            // SAFETY: session calls in the child only.
            unsafe {
                let me = libc::getpid();
                if libc::setsid() != me {
                    return 1;
                }
                if libc::getsid(0) != me || libc::getpgrp() != me {
                    return 2;
                }
                // A session leader can start neither a session nor a group.
                if libc::setsid() != -1 || errno() != libc::EPERM {
                    return 3;
                }
                if libc::setpgid(0, 0) != -1 || errno() != libc::EPERM {
                    return 4;
                }
                libc::write(wr.as_raw_fd(), b"s".as_ptr().cast(), 1);
                let _ = read_fd(&go_r, &mut [0u8; 1]);
            }
            0
        })?;
        let res = (|| -> CheckResult {
            read_byte(&rd)?;
            // SAFETY: session queries and a group change attempt on our child.
            unsafe {
                expect_eq("getsid(child)", sys(libc::getsid(pid)), Ok(pid as i64))?;
                ensure!(libc::getsid(0) != pid, "our session changed too");
                // The child leads another session: it cannot join our group.
                expect_errno("setpgid(session leader)", sys(libc::setpgid(pid, libc::getpgrp())), libc::EPERM)?;
            }
            Ok(())
        })();
        let _ = write_fd(&go_w, b"x");
        let st = wait_child(pid, T)?;
        res?;
        expect_exited(st, 0)
    });

    r.check("jobctl_sigstop_sigcont_waitpid", || {
        let (rd, wr) = pipe2(libc::O_NONBLOCK).map_err(|e| format!("pipe2: {}", errno_name(e)))?;
        let pid = ticking_child(&wr)?;
        drop(wr);
        let res = (|| -> CheckResult {
            std::thread::sleep(Duration::from_millis(50));
            ensure!(drain(&rd) > 0, "child not running");
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            let (p, st) = waitpid(pid, libc::WUNTRACED, T)?;
            expect_eq("waitpid pid", p, pid)?;
            expect_stopped(st, libc::SIGSTOP)?;
            // ps and sysfuzz tell a stopped process by its state letter.
            expect_eq("/proc/<pid>/stat state while stopped", proc_state(pid), Some('T'))?;
            // The stop is reported once.
            expect_eq("second WUNTRACED report", waitpid(pid, libc::WUNTRACED | libc::WNOHANG, T)?.0, 0)?;
            drain(&rd);
            std::thread::sleep(Duration::from_millis(100));
            expect_eq("bytes written while stopped", drain(&rd), 0)?;
            // Without WCONTINUED, a continue is not reported.
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            expect_eq("waitpid(WNOHANG) after SIGCONT", waitpid(pid, libc::WNOHANG, T)?.0, 0)?;
            let (p, st) = waitpid(pid, libc::WCONTINUED, T)?;
            expect_eq("waitpid pid", p, pid)?;
            ensure!(libc::WIFCONTINUED(st), "status {st:#x} is not WIFCONTINUED");
            ensure!(proc_state(pid).is_some_and(|c| c != 'T'), "state after SIGCONT: {:?}", proc_state(pid));
            std::thread::sleep(Duration::from_millis(50));
            ensure!(drain(&rd) > 0, "child not running after SIGCONT");
            Ok(())
        })();
        let _ = kill(pid, libc::SIGTERM);
        let st = wait_child(pid, T);
        res?;
        expect_signaled(st?, libc::SIGTERM)
    });

    r.check("jobctl_sigtstp_default_stops_caught_does_not", || {
        // The child gets a process group of its own (set on both sides of
        // the fork, as shells do, so that neither order races): Linux
        // discards SIGTSTP/SIGTTIN/SIGTTOU whose default action is to stop
        // for a process in an orphaned process group, which the caller's
        // group may be (a test run started as a background job whose shell
        // went away, as under CI); a child's own group under a parent in
        // the same session is not orphaned.
        let pid = fork_child(|| {
            // SAFETY: setpgid on the calling process.
            unsafe { libc::setpgid(0, 0) };
            std::thread::sleep(Duration::from_secs(20));
            0
        })?;
        // SAFETY: setpgid on our own child (EACCES once it has exec'd: it does not).
        unsafe { libc::setpgid(pid, pid) };
        let res = (|| -> CheckResult {
            ok("kill SIGTSTP", kill(pid, libc::SIGTSTP))?;
            let (_, st) = waitpid(pid, libc::WUNTRACED, T)?;
            expect_stopped(st, libc::SIGTSTP)?;
            // Signals other than SIGKILL and SIGCONT wait while it is stopped.
            ok("kill SIGUSR1", kill(pid, libc::SIGUSR1))?;
            std::thread::sleep(Duration::from_millis(50));
            expect_eq("waitpid(WNOHANG) while stopped", waitpid(pid, libc::WNOHANG, T)?.0, 0)?;
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            // The pending SIGUSR1 acts once it runs again.
            let (_, st) = waitpid(pid, 0, T)?;
            expect_signaled(st, libc::SIGUSR1)
        })();
        if res.is_err() {
            kill_and_reap(pid);
        }
        res?;
        // A caught SIGTSTP runs the handler instead; an ignored one does nothing.
        let (rd, wr) = pipe();
        let pid = fork_child(move || {
            extern "C" fn on_tstp(_: libc::c_int) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(42) }
            }
            // SAFETY: installing a handler and ignoring signals in the child.
            unsafe {
                libc::signal(libc::SIGTSTP, on_tstp as extern "C" fn(libc::c_int) as libc::sighandler_t);
                libc::signal(libc::SIGTTIN, libc::SIG_IGN);
                libc::write(wr.as_raw_fd(), b"r".as_ptr().cast(), 1);
            }
            std::thread::sleep(Duration::from_secs(20));
            0
        })?;
        read_byte(&rd)?;
        ok("kill SIGTTIN (ignored)", kill(pid, libc::SIGTTIN))?;
        ok("kill SIGTSTP (caught)", kill(pid, libc::SIGTSTP))?;
        let (_, st) = waitpid(pid, libc::WUNTRACED, T)?;
        expect_exited(st, 42)
    });

    r.check("jobctl_stopped_read_resumes_without_eintr", || {
        let (cr, pw) = pipe();
        let pid = fork_child(move || {
            let mut b = [0u8; 1];
            // A stop and continue do not interrupt the read (no handler runs).
            match read_fd(&cr, &mut b) {
                Ok(1) => b[0] as i32,
                Ok(_) => 1,
                Err(e) if e == libc::EINTR => 2,
                Err(_) => 3,
            }
        })?;
        let res = (|| -> CheckResult {
            std::thread::sleep(Duration::from_millis(50));
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            expect_stopped(waitpid(pid, libc::WUNTRACED, T)?.1, libc::SIGSTOP)?;
            // Data that arrives while it is stopped is read once it continues.
            ok("write", write_fd(&pw, &[77]))?;
            std::thread::sleep(Duration::from_millis(50));
            expect_eq("waitpid(WNOHANG) while stopped", waitpid(pid, libc::WNOHANG, T)?.0, 0)?;
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            expect_exited(waitpid(pid, 0, T)?.1, 77)
        })();
        if res.is_err() {
            kill_and_reap(pid);
        }
        res
    });

    r.check("jobctl_nanosleep_not_interrupted_by_stop", || {
        let pid = fork_child(|| {
            let ts = libc::timespec { tv_sec: 0, tv_nsec: 300_000_000 };
            let mut rem = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: valid timespec pointers.
            let r = unsafe { libc::nanosleep(&ts, &mut rem) };
            if r == 0 { 0 } else if errno() == libc::EINTR { 2 } else { 3 }
        })?;
        let res = (|| -> CheckResult {
            std::thread::sleep(Duration::from_millis(50));
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            expect_stopped(waitpid(pid, libc::WUNTRACED, T)?.1, libc::SIGSTOP)?;
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            // 0: the sleep went on to its end; 2 would be EINTR.
            expect_exited(waitpid(pid, 0, T)?.1, 0)
        })();
        if res.is_err() {
            kill_and_reap(pid);
        }
        res
    });

    r.check("jobctl_sigkill_ends_stopped_child", || {
        let pid = fork_child(|| {
            std::thread::sleep(Duration::from_secs(20));
            0
        })?;
        ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
        expect_stopped(waitpid(pid, libc::WUNTRACED, T)?.1, libc::SIGSTOP)?;
        ok("kill SIGKILL", kill(pid, libc::SIGKILL))?;
        expect_signaled(waitpid(pid, 0, T)?.1, libc::SIGKILL)
    });

    r.check("jobctl_waitid_stop_continue_codes", || {
        let pid = fork_child(|| {
            std::thread::sleep(Duration::from_secs(20));
            0
        })?;
        let res = (|| -> CheckResult {
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            let id = pid as libc::id_t;
            let deadline = Instant::now() + T;
            // WNOWAIT leaves the report for the next call.
            let first = loop {
                let r = waitid(libc::P_PID, id, libc::WSTOPPED | libc::WNOWAIT | libc::WNOHANG)
                    .map_err(|e| format!("waitid: {}", errno_name(e)))?;
                if r.1 == pid || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            expect_eq("WNOWAIT (code, pid, status)", first, (libc::CLD_STOPPED, pid, libc::SIGSTOP))?;
            let r = waitid(libc::P_PID, id, libc::WSTOPPED).map_err(|e| format!("waitid: {}", errno_name(e)))?;
            expect_eq("(code, pid, status)", r, (libc::CLD_STOPPED, pid, libc::SIGSTOP))?;
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            let r = waitid(libc::P_PID, id, libc::WCONTINUED).map_err(|e| format!("waitid: {}", errno_name(e)))?;
            expect_eq("(code, pid, status)", r, (libc::CLD_CONTINUED, pid, libc::SIGCONT))?;
            ok("kill SIGKILL", kill(pid, libc::SIGKILL))?;
            let r = waitid(libc::P_PID, id, libc::WEXITED).map_err(|e| format!("waitid: {}", errno_name(e)))?;
            expect_eq("(code, pid, status)", r, (libc::CLD_KILLED, pid, libc::SIGKILL))?;
            expect_errno("waitid after reaping", waitid(libc::P_PID, id, libc::WEXITED).map(|_| 0), libc::ECHILD)
        })();
        if res.is_err() {
            kill_and_reap(pid);
        }
        res
    });

    r.check("jobctl_sigchld_reports_stop_unless_nocldstop", || {
        static CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        static CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
        extern "C" fn on_chld(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
            // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
            let (code, pid) = unsafe { ((*info).si_code, (*info).si_pid()) };
            // Only this check's child counts.
            if pid == CHILD.load(std::sync::atomic::Ordering::SeqCst) {
                CODE.store(code, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let install = |flags: i32| -> Result<libc::sigaction, String> {
            // SAFETY: installing an async-signal-safe SIGCHLD handler.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_chld as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as libc::sighandler_t;
                sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | flags;
                let mut old: libc::sigaction = std::mem::zeroed();
                sys(libc::sigaction(libc::SIGCHLD, &sa, &mut old)).map_err(|e| format!("sigaction: {}", errno_name(e)))?;
                Ok(old)
            }
        };
        let wait_code = |want: i32| {
            let deadline = Instant::now() + Duration::from_secs(2);
            while CODE.load(std::sync::atomic::Ordering::SeqCst) != want && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            CODE.swap(0, std::sync::atomic::Ordering::SeqCst)
        };
        let old = install(0)?;
        let pid = fork_child(|| {
            std::thread::sleep(Duration::from_secs(20));
            0
        });
        let res = (|| -> CheckResult {
            let pid = pid.clone()?;
            CHILD.store(pid, std::sync::atomic::Ordering::SeqCst);
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            expect_eq("SIGCHLD si_code on stop", wait_code(libc::CLD_STOPPED), libc::CLD_STOPPED)?;
            ok("kill SIGCONT", kill(pid, libc::SIGCONT))?;
            expect_eq("SIGCHLD si_code on continue", wait_code(libc::CLD_CONTINUED), libc::CLD_CONTINUED)?;
            install(libc::SA_NOCLDSTOP)?;
            ok("kill SIGSTOP", kill(pid, libc::SIGSTOP))?;
            expect_stopped(waitpid(pid, libc::WUNTRACED, T)?.1, libc::SIGSTOP)?;
            std::thread::sleep(Duration::from_millis(50));
            expect_eq("SIGCHLD si_code with SA_NOCLDSTOP", CODE.swap(0, std::sync::atomic::Ordering::SeqCst), 0)?;
            ok("kill SIGKILL", kill(pid, libc::SIGKILL))?;
            expect_signaled(waitpid(pid, 0, T)?.1, libc::SIGKILL)?;
            expect_eq("SIGCHLD si_code on kill", wait_code(libc::CLD_KILLED), libc::CLD_KILLED)
        })();
        if let Ok(pid) = pid
            && res.is_err()
        {
            kill_and_reap(pid);
        }
        // SAFETY: restoring the previous action.
        unsafe { libc::sigaction(libc::SIGCHLD, &old, std::ptr::null_mut()) };
        res
    });

    tty_checks(r);
}

/// A new pseudo-terminal's (master, slave path), or None where the system has none.
fn open_pty() -> Option<(OwnedFd, std::ffi::CString)> {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname on a descriptor we own;
    // ptsname's static buffer is copied at once (the runner is single-threaded).
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if m < 0 {
            return None;
        }
        let m = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m.as_raw_fd()) != 0 || libc::unlockpt(m.as_raw_fd()) != 0 {
            return None;
        }
        let name = libc::ptsname(m.as_raw_fd());
        if name.is_null() {
            return None;
        }
        Some((m, std::ffi::CStr::from_ptr(name).to_owned()))
    }
}

/// SIGTTIN/SIGTTOU: a background process group reading its controlling
/// terminal stops with SIGTTIN (EIO when SIGTTIN is ignored); with TOSTOP a
/// background write stops with SIGTTOU. Needs a pseudo-terminal: where the
/// system has none (Mantle has only the console), the check is reported as
/// skipped, and the console's background read is covered by the image test.
fn tty_checks(r: &mut Runner) {
    let Some((master, slave)) = open_pty() else {
        r.skip("jobctl_background_tty_sigttin_sigttou", "no pseudo-terminals (/dev/ptmx)");
        return;
    };
    r.check("jobctl_background_tty_sigttin_sigttou", || {
        // The session leader (child) takes the pty as its controlling
        // terminal; its child in a background group reads and writes it.
        let leader = fork_child(move || {
            // SAFETY: session and terminal set-up in the child only.
            unsafe {
                if libc::setsid() < 0 {
                    return 10;
                }
                let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
                if fd < 0 {
                    return 11;
                }
                if libc::tcgetpgrp(fd) != libc::getpid() {
                    return 12;
                }
                let bg = |body: fn(i32) -> i32| -> i32 {
                    let pid = libc::fork();
                    if pid == 0 {
                        libc::setpgid(0, 0);
                        libc::_exit(body(fd));
                    }
                    libc::setpgid(pid, pid);
                    pid
                };
                let wait_stop = |pid: i32| -> i32 {
                    let mut st = 0;
                    libc::waitpid(pid, &mut st, libc::WUNTRACED);
                    libc::kill(pid, libc::SIGKILL);
                    let mut st2 = 0;
                    libc::waitpid(pid, &mut st2, 0);
                    st
                };
                // A background read: SIGTTIN stops the reader.
                let st = wait_stop(bg(|fd| {
                    let mut b = [0u8; 1];
                    libc::read(fd, b.as_mut_ptr().cast(), 1);
                    1
                }));
                if !(libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTTIN) {
                    return 13;
                }
                // With SIGTTIN ignored: EIO.
                let st = wait_stop(bg(|fd| {
                    libc::signal(libc::SIGTTIN, libc::SIG_IGN);
                    let mut b = [0u8; 1];
                    let r = libc::read(fd, b.as_mut_ptr().cast(), 1);
                    if r == -1 && *libc::__errno_location() == libc::EIO { 0 } else { 1 }
                }));
                if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
                    return 14;
                }
                // Background writes pass without TOSTOP, stop with it.
                let st = wait_stop(bg(|fd| if libc::write(fd, b"x".as_ptr().cast(), 1) == 1 { 0 } else { 1 }));
                if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
                    return 15;
                }
                let mut t: libc::termios = std::mem::zeroed();
                libc::tcgetattr(fd, &mut t);
                t.c_lflag |= libc::TOSTOP;
                libc::tcsetattr(fd, libc::TCSANOW, &t);
                let st = wait_stop(bg(|fd| {
                    libc::write(fd, b"y".as_ptr().cast(), 1);
                    1
                }));
                if !(libc::WIFSTOPPED(st) && libc::WSTOPSIG(st) == libc::SIGTTOU) {
                    return 16;
                }
            }
            0
        })?;
        let st = wait_child(leader, T);
        drop(master);
        expect_exited(st?, 0)
    });
}
