//! The check runner and small helpers shared by every area module.

use std::ffi::CString;
use std::fmt::Debug;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// Outcome of one check: `Err` carries the reason it failed.
pub type CheckResult = Result<(), String>;

/// Runs checks, prints one line each and counts the outcomes.
#[derive(Default)]
pub struct Runner {
    pub passed: usize,
    pub failed: usize,
}

impl Runner {
    /// Runs one check; a panic inside it counts as a failure instead of ending the run.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> CheckResult) {
        let outcome = match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => r,
            Err(payload) => Err(format!("panicked: {}", panic_message(&*payload))),
        };
        let mut out = std::io::stdout().lock();
        match outcome {
            Ok(()) => {
                self.passed += 1;
                let _ = writeln!(out, "PASS {name}");
            }
            Err(why) => {
                self.failed += 1;
                let _ = writeln!(out, "FAIL {name}: {why}");
            }
        }
        // Flushed before any later fork so a child never inherits buffered output.
        let _ = out.flush();
    }
}

impl Runner {
    /// Reports a check that cannot run on this system (neither passed nor failed).
    pub fn skip(&mut self, name: &str, why: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "SKIP {name}: {why}");
        let _ = out.flush();
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// `ensure!(cond, "fmt", args..)`: fail the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}
pub(crate) use ensure;

/// Fails unless `got == want`, naming what was compared.
pub fn expect_eq<T: PartialEq + Debug>(what: &str, got: T, want: T) -> CheckResult {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Converts a libc-style return (-1 and errno on failure) into a Result.
pub fn sys<T: Into<i64> + Copy>(ret: T) -> Result<i64, i32> {
    let v: i64 = ret.into();
    if v == -1 { Err(errno()) } else { Ok(v) }
}

/// Same for calls returning `isize` (read, write, ...).
pub fn sys_size(ret: isize) -> Result<i64, i32> {
    sys(ret as i64)
}

/// Fails unless the call failed with exactly `want` as errno.
pub fn expect_errno(what: &str, got: Result<i64, i32>, want: i32) -> CheckResult {
    match got {
        Err(e) if e == want => Ok(()),
        Err(e) => Err(format!("{what}: errno {} ({}), want {}", e, errno_name(e), errno_name(want))),
        Ok(v) => Err(format!("{what}: succeeded with {v}, want {}", errno_name(want))),
    }
}

/// Fails unless the call succeeded; returns its value.
pub fn ok(what: &str, got: Result<i64, i32>) -> Result<i64, String> {
    got.map_err(|e| format!("{what}: failed with errno {} ({})", e, errno_name(e)))
}

pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ESPIPE => "ESPIPE",
        libc::EPIPE => "EPIPE",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENXIO => "ENXIO",
        libc::ENOMEM => "ENOMEM",
        libc::ETXTBSY => "ETXTBSY",
        libc::EIO => "EIO",
        _ => "?",
    }
}

pub fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// open(2) returning an owned descriptor.
pub fn open(p: &Path, flags: i32, mode: u32) -> Result<OwnedFd, i32> {
    let c = cpath(p);
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
    if fd < 0 {
        Err(errno())
    } else {
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

pub fn read_fd(fd: &impl AsRawFd, buf: &mut [u8]) -> Result<i64, i32> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    sys_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn write_fd(fd: &impl AsRawFd, buf: &[u8]) -> Result<i64, i32> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    sys_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

pub fn lseek(fd: &impl AsRawFd, off: i64, whence: i32) -> Result<i64, i32> {
    // SAFETY: plain integer arguments.
    sys(unsafe { libc::lseek(fd.as_raw_fd(), off, whence) })
}

pub fn fstat(fd: &impl AsRawFd) -> Result<libc::stat, i32> {
    // SAFETY: an all-zero `stat` is a valid value; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `struct stat`.
    sys(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn stat_path(p: &Path, follow: bool) -> Result<libc::stat, i32> {
    let c = cpath(p);
    // SAFETY: an all-zero `stat` is a valid value; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid path string and writable `stat`.
    let r = unsafe {
        if follow { libc::stat(c.as_ptr(), &mut st) } else { libc::lstat(c.as_ptr(), &mut st) }
    };
    sys(r)?;
    Ok(st)
}

/// A pipe as (read end, write end).
pub fn pipe() -> (OwnedFd, OwnedFd) {
    pipe2(0).expect("pipe2")
}

pub fn pipe2(flags: i32) -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    sys(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks; the child runs `f` and `_exit`s with its result (or 101 on panic), so a
/// child never returns into the runner.
pub fn fork_child(f: impl FnOnce() -> i32) -> Result<libc::pid_t, String> {
    // SAFETY: the runner is single-threaded whenever it forks, and the child only
    // runs `f` and then `_exit`s.
    // SAFETY: fork in a check that only runs async-signal-safe code in the child before _exit.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(format!("fork: errno {}", errno())),
        0 => {
            let code = panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: terminates the child immediately without running the parent's
            // atexit handlers or flushing its stdio buffers.
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// Waits for `pid` up to `timeout`; kills it (SIGKILL) and fails if it takes longer.
pub fn wait_child(pid: libc::pid_t, timeout: Duration) -> Result<i32, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(status);
        }
        if r == -1 && errno() != libc::EINTR {
            return Err(format!("waitpid({pid}): errno {}", errno_name(errno())));
        }
        if Instant::now() > deadline {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!("child {pid} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Describes a wait status for messages.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("raw status {status:#x}")
    }
}

/// Fails unless `status` says the child was killed by `sig`.
pub fn expect_signaled(status: i32, sig: i32) -> CheckResult {
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == sig {
        Ok(())
    } else {
        Err(format!("child {}, want killed by signal {sig}", describe_status(status)))
    }
}

/// Fails unless `status` says the child exited normally with `code`.
pub fn expect_exited(status: i32, code: i32) -> CheckResult {
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == code {
        Ok(())
    } else {
        Err(format!("child {}, want exited with {code}", describe_status(status)))
    }
}

/// Page size of the running system.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
