//! fork, exec, wait, exit statuses, process ids.

use crate::harness::*;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

pub fn run(r: &mut Runner, self_exe: &std::path::Path) {
    r.check("fork_exit_codes", || {
        for code in [0, 1, 42, 255] {
            let pid = fork_child(move || code)?;
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let got = unsafe { libc::waitpid(pid, &mut status, 0) };
            expect_eq("waitpid return", got, pid)?;
            ensure!(libc::WIFEXITED(status), "WIFEXITED false for code {code}: {}", describe_status(status));
            expect_eq("WEXITSTATUS", libc::WEXITSTATUS(status), code)?;
        }
        Ok(())
    });

    r.check("fork_pid_relations", || {
        let (rd, wr) = pipe();
        let wfd = wr.as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let pid = fork_child(move || {
            // SAFETY: as above.
            let ids = unsafe { [libc::getpid(), libc::getppid()] };
            let bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_ne_bytes()).collect();
            if write_fd(&wfd, &bytes) == Ok(8) { 0 } else { 1 }
        })?;
        drop(wr);
        let mut buf = [0u8; 8];
        let n = read_fd(&rd, &mut buf);
        expect_exited(wait_child(pid, T)?, 0)?;
        expect_eq("read", n, Ok(8))?;
        let cpid = i32::from_ne_bytes(buf[..4].try_into().unwrap());
        let cppid = i32::from_ne_bytes(buf[4..].try_into().unwrap());
        expect_eq("child's getpid == fork() return", cpid, pid)?;
        expect_eq("child's getppid == parent's getpid", cppid, me)?;
        ensure!(cpid != me, "child has the parent's pid");
        Ok(())
    });

    r.check("fork_copies_memory", || {
        let mut value = 5;
        let ptr: *mut i32 = &mut value;
        let pid = fork_child(move || {
            // SAFETY: `value` lives in this (copied) stack frame; the child writes its copy.
            unsafe { ptr.write_volatile(77) };
            // SAFETY: as above.
            unsafe { ptr.read_volatile() }
        })?;
        expect_exited(wait_child(pid, T)?, 77)?;
        // SAFETY: reading our own live local.
        expect_eq("parent's copy", unsafe { ptr.read_volatile() }, 5)
    });

    r.check("waitpid_wnohang_running_child", || {
        let (rd, wr) = pipe();
        let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
        let pid = fork_child(move || {
            // SAFETY: closing the child's copy of the write end.
            unsafe { libc::close(wfd) };
            let mut b = [0u8; 1];
            // Blocks until the parent closes its write end.
            let _ = read_fd(&rfd, &mut b);
            3
        })?;
        let mut status = 0;
        // SAFETY: valid out-pointer.
        let r0 = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        drop(wr);
        let status = wait_child(pid, T)?;
        expect_eq("WNOHANG on running child", r0, 0)?;
        expect_exited(status, 3)
    });

    r.check("wait4_echild", || {
        let mut status = 0;
        // SAFETY: valid out-pointer; null rusage is allowed.
        let r = unsafe { libc::syscall(libc::SYS_wait4, -1, &mut status, 0, 0) };
        expect_errno("wait4(-1) with no children", sys(r), libc::ECHILD)?;
        // SAFETY: as above.
        let r = unsafe { libc::waitpid(1, &mut status, libc::WNOHANG) };
        expect_errno("waitpid on a non-child", sys(r), libc::ECHILD)
    });

    r.check("child_killed_by_sigkill", || {
        let pid = fork_child(|| loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        })?;
        // SAFETY: signalling our own child.
        ok("kill", sys(unsafe { libc::kill(pid, libc::SIGKILL) }))?;
        let mut status = 0;
        // SAFETY: valid out-pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        expect_eq("waitpid", got, pid)?;
        ensure!(libc::WIFSIGNALED(status), "WIFSIGNALED false: {}", describe_status(status));
        ensure!(!libc::WIFEXITED(status), "WIFEXITED true for a killed child");
        expect_eq("WTERMSIG", libc::WTERMSIG(status), libc::SIGKILL)
    });

    r.check("child_raise_sigterm_default", || {
        let pid = fork_child(|| {
            // SAFETY: default disposition, then raise in the child only.
            unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
                libc::raise(libc::SIGTERM);
            }
            0
        })?;
        expect_signaled(wait_child(pid, T)?, libc::SIGTERM)
    });

    r.check("kill_reaped_pid_esrch", || {
        let pid = fork_child(|| 0)?;
        wait_child(pid, T)?;
        // SAFETY: signal 0 only checks existence.
        expect_errno("kill(reaped, 0)", sys(unsafe { libc::kill(pid, 0) }), libc::ESRCH)
    });

    r.check("fork_execve_exit_status", || {
        let exe = cpath(self_exe);
        let args = [c"conformance".as_ptr(), c"exit".as_ptr(), c"9".as_ptr(), std::ptr::null()];
        let env = [std::ptr::null()];
        let pid = fork_child(move || {
            // SAFETY: NUL-terminated strings in NULL-terminated arrays.
            unsafe { libc::execve(exe.as_ptr(), args.as_ptr(), env.as_ptr()) };
            120
        })?;
        expect_exited(wait_child(pid, T)?, 9)
    });

    r.check("execve_missing_enoent", || {
        let args = [c"x".as_ptr(), std::ptr::null()];
        let env = [std::ptr::null()];
        // SAFETY: as above; the call fails and returns.
        let r = unsafe { libc::execve(c"/nonexistent/prog".as_ptr(), args.as_ptr(), env.as_ptr()) };
        expect_errno("execve", sys(r), libc::ENOENT)
    });

    r.check("command_self_stdout_and_status", || {
        let out = Command::new(self_exe).args(["child-echo", "alpha", "beta"]).output().map_err(|e| e.to_string())?;
        expect_eq("stdout", String::from_utf8_lossy(&out.stdout).into_owned(), "child-echo alpha beta\n".to_string())?;
        expect_eq("exit code", out.status.code(), Some(7))
    });

    r.check("command_stdin_pipe", || {
        let mut child = Command::new(self_exe)
            .arg("child-upper")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child.stdin.take().unwrap().write_all(b"shout this").map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        expect_eq("stdout", out.stdout, b"SHOUT THIS".to_vec())?;
        ensure!(out.status.success(), "status {:?}", out.status);
        Ok(())
    });

    r.check("command_env", || {
        let out = Command::new(self_exe)
            .args(["child-env", "CONFORMANCE_VAR"])
            .env("CONFORMANCE_VAR", "value-42")
            .output()
            .map_err(|e| e.to_string())?;
        expect_eq("stdout", String::from_utf8_lossy(&out.stdout).into_owned(), "value-42\n".to_string())
    });

    r.check("command_missing_binary_notfound", || {
        match Command::new("/nonexistent/binary").spawn() {
            Ok(_) => Err("spawned a binary that does not exist".into()),
            Err(e) => expect_eq("error kind", e.kind(), std::io::ErrorKind::NotFound),
        }
    });

    r.check("exec_closes_cloexec_fds", || {
        // The child reports whether the fd numbers it was told about are open.
        let (rd, wr) = pipe();
        // SAFETY: integer arguments.
        ok("F_SETFD", sys(unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) }))?;
        // SAFETY: as above; clear FD_CLOEXEC so this one survives exec.
        ok("F_SETFD", sys(unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETFD, 0) }))?;
        let out = Command::new(self_exe)
            .args(["child-fds", &rd.as_raw_fd().to_string(), &wr.as_raw_fd().to_string()])
            .output()
            .map_err(|e| e.to_string())?;
        expect_eq("open flags seen by child", String::from_utf8_lossy(&out.stdout).into_owned(), "closed open\n".to_string())
    });
}

/// A running executable cannot be opened for writing (ETXTBSY): writing it
/// in place would change the pages the program still reads from it.
pub fn run_text_busy(r: &mut Runner, self_exe: &std::path::Path, dir: &std::path::Path) {
    let exe = self_exe.to_path_buf();
    let copy = dir.join("txtbsy-exe");
    r.check("exec_running_file_write_etxtbsy", || {
        std::fs::copy(&exe, &copy).map_err(|e| format!("copy {}: {e}", exe.display()))?;
        let mut child = std::process::Command::new(&copy)
            .args(["child-sleep", "20"])
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let res = (|| -> CheckResult {
            // Once the child has exec'd, a write open fails.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut last = Ok(0);
            while std::time::Instant::now() < deadline {
                last = open(&copy, libc::O_WRONLY, 0).map(|_| 0);
                if last.is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            expect_errno("open(O_WRONLY) of a running executable", last, libc::ETXTBSY)?;
            expect_errno("open(O_RDWR)", open(&copy, libc::O_RDWR, 0).map(|_| 0), libc::ETXTBSY)?;
            ensure!(open(&copy, libc::O_RDONLY, 0).is_ok(), "open(O_RDONLY) failed");
            Ok(())
        })();
        let _ = child.kill();
        let _ = child.wait();
        res?;
        // Writable again once the program is gone.
        expect_eq("open(O_WRONLY) after exit", open(&copy, libc::O_WRONLY, 0).map(|_| 0), Ok(0))?;
        std::fs::remove_file(&copy).map_err(|e| format!("unlink: {e}"))
    });
}
