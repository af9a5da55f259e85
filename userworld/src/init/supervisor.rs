//! The running init: starts entries, reaps children, restarts services, stops on
//! SIGTERM (when it is not PID 1).
//!
//! As PID 1 it takes BusyBox init's shutdown signals, which BusyBox's `halt`,
//! `poweroff` and `reboot` (without `-f`) send: SIGUSR1 halts, SIGUSR2 powers off,
//! SIGTERM reboots — services stopped (SIGTERM, then SIGKILL after a grace period),
//! file systems synced, then reboot(2), where the kernel unmounts the datastores.
//!
//! Signals only set a flag and write a byte to a self-pipe; the main loop sleeps in
//! `poll` on that pipe with a timeout for the next scheduled restart, so it needs
//! nothing beyond rt_sigaction, pipe2, poll, wait4 and the fork/exec path.

use super::backoff::next_delay;
use super::inittab::{self, Action, Entry};
use super::Options;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long services get between SIGTERM and SIGKILL when init stops.
const STOP_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_PATH: &str = "/bin:/sbin:/usr/bin:/usr/sbin";

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static TERM_REQUESTED: AtomicBool = AtomicBool::new(false);
/// The last shutdown signal PID 1 received (0: none).
static SHUTDOWN_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// What PID 1 does on a BusyBox shutdown signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Halt,
    PowerOff,
    Reboot,
}

impl Shutdown {
    /// BusyBox init's meaning of `sig` (SIGUSR1 halt, SIGUSR2 poweroff, SIGTERM reboot).
    pub fn from_signal(sig: libc::c_int) -> Option<Shutdown> {
        match sig {
            libc::SIGUSR1 => Some(Shutdown::Halt),
            libc::SIGUSR2 => Some(Shutdown::PowerOff),
            libc::SIGTERM => Some(Shutdown::Reboot),
            _ => None,
        }
    }

    /// reboot(2)'s command.
    pub fn reboot_cmd(self) -> libc::c_int {
        match self {
            Shutdown::Halt => libc::LINUX_REBOOT_CMD_HALT,
            Shutdown::PowerOff => libc::LINUX_REBOOT_CMD_POWER_OFF,
            Shutdown::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Shutdown::Halt => "halting",
            Shutdown::PowerOff => "powering off",
            Shutdown::Reboot => "rebooting",
        }
    }
}

/// Writes one `init: ` line to the console (stderr) in a single write.
pub fn log(msg: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(format!("init: {msg}\n").as_bytes());
}

/// "exited with status N" or "killed by signal N" for a wait status.
pub fn describe_exit(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("changed state ({status:#x})")
    }
}

/// Reads and parses the configuration, logging every problem. Falls back to a
/// console shell when the file is unreadable or has no valid entry.
pub fn load_config(path: &std::path::Path) -> Vec<Entry> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            log(&format!("cannot read {}: {e}; starting a shell on the console instead", path.display()));
            return inittab::fallback();
        }
    };
    let (entries, errors) = inittab::parse(&text);
    for e in &errors {
        log(&format!("{}:{}: {}; line ignored", path.display(), e.line, e.message));
    }
    if entries.is_empty() {
        log(&format!("{} has no valid entries; starting a shell on the console instead", path.display()));
        return inittab::fallback();
    }
    entries
}

/// `init --check`: 0 if the configuration parses cleanly, 1 otherwise.
pub fn check(opts: &Options) -> i32 {
    let text = match std::fs::read_to_string(&opts.config) {
        Ok(t) => t,
        Err(e) => {
            log(&format!("cannot read {}: {e}", opts.config.display()));
            return 1;
        }
    };
    let (entries, errors) = inittab::parse(&text);
    for e in &errors {
        log(&format!("{}:{}: {}", opts.config.display(), e.line, e.message));
    }
    log(&format!("{}: {} entries, {} errors", opts.config.display(), entries.len(), errors.len()));
    i32::from(!errors.is_empty() || entries.is_empty())
}

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM || sig == libc::SIGINT {
        TERM_REQUESTED.store(true, Ordering::SeqCst);
    }
    if Shutdown::from_signal(sig).is_some() {
        SHUTDOWN_SIGNAL.store(sig, Ordering::SeqCst);
    }
    // SAFETY: errno is saved and restored around write(2), which is async-signal-safe;
    // the pipe is non-blocking, so a full pipe (already a pending wake-up) is fine.
    unsafe {
        let errno = *libc::__errno_location();
        let fd = WAKE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            libc::write(fd, [1u8].as_ptr().cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

struct Service {
    entry: Entry,
    pid: Option<libc::pid_t>,
    started_at: Instant,
    last_delay: Option<Duration>,
    restart_at: Option<Instant>,
}

pub struct Supervisor {
    services: Vec<Service>,
    is_pid1: bool,
    stopping: bool,
    wake_rd: OwnedFd,
    _wake_wr: OwnedFd,
}

/// Runs init with the given options; returns the exit status (only reached when
/// not PID 1, after SIGTERM).
pub fn run(opts: &Options) -> i32 {
    if opts.check_only {
        return check(opts);
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    log(&format!("Mantle init starting (pid {pid}, config {})", opts.config.display()));
    let mut entries = load_config(&opts.config);
    let skip = super::skipped_entries(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    entries.retain(|e| {
        let keep = !skip.contains(&e.id);
        if !keep {
            log(&format!("not starting {} (init.skip on the kernel command line)", e.id));
        }
        keep
    });
    let mut sup = match Supervisor::new(entries, pid == 1) {
        Ok(s) => s,
        Err(e) => {
            log(&format!("cannot set up signal handling: {e}"));
            return 1;
        }
    };
    sup.run()
}

impl Supervisor {
    pub fn new(entries: Vec<Entry>, is_pid1: bool) -> io::Result<Supervisor> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (wake_rd, wake_wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WAKE_FD.store(wake_wr.as_raw_fd(), Ordering::SeqCst);
        for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGUSR2] {
            // SAFETY: a zeroed sigaction is valid; `on_signal` only touches atomics and write(2).
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART | libc::SA_NOCLDSTOP;
                libc::sigemptyset(&mut sa.sa_mask);
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        let now = Instant::now();
        let services = entries
            .into_iter()
            .map(|entry| Service { entry, pid: None, started_at: now, last_delay: None, restart_at: None })
            .collect();
        Ok(Supervisor { services, is_pid1, stopping: false, wake_rd, _wake_wr: wake_wr })
    }

    pub fn run(&mut self) -> i32 {
        // sysinit entries first, each to completion, in file order.
        for i in 0..self.services.len() {
            if self.services[i].entry.action != Action::Sysinit {
                continue;
            }
            self.start(i);
            while self.services[i].pid.is_some() {
                if let Some(code) = self.handle_term() {
                    return code;
                }
                self.sleep(None);
                self.reap();
            }
        }
        for i in 0..self.services.len() {
            if self.services[i].entry.action != Action::Sysinit {
                self.start(i);
            }
        }
        loop {
            self.reap();
            if let Some(code) = self.handle_term() {
                return code;
            }
            let now = Instant::now();
            for i in 0..self.services.len() {
                if self.services[i].restart_at.is_some_and(|t| t <= now) {
                    self.services[i].restart_at = None;
                    self.start(i);
                }
            }
            let next = self.services.iter().filter_map(|s| s.restart_at).min();
            self.sleep(next.map(|t| t.saturating_duration_since(Instant::now())));
        }
    }

    /// On a pending SIGTERM/SIGINT: stops everything and returns the exit status,
    /// unless init is PID 1, which must never exit.
    fn handle_term(&mut self) -> Option<i32> {
        let term = TERM_REQUESTED.swap(false, Ordering::SeqCst);
        let shutdown = Shutdown::from_signal(SHUTDOWN_SIGNAL.swap(0, Ordering::SeqCst));
        if self.is_pid1 {
            if let Some(how) = shutdown {
                self.system_shutdown(how);
            }
            return None;
        }
        // Not PID 1 (tests, a nested init): SIGTERM/SIGINT stop it; SIGUSR1/2 are ignored.
        term.then(|| self.shutdown())
    }

    /// PID 1's halt, power-off or reboot: stop every service, sync, reboot(2).
    /// Only returns if reboot(2) fails (then init carries on supervising).
    fn system_shutdown(&mut self, how: Shutdown) {
        log(&format!("{}: stopping services", how.verb()));
        self.shutdown();
        // SAFETY: sync and reboot take no pointers; the kernel checks the privilege.
        let err = unsafe {
            libc::sync();
            libc::reboot(how.reboot_cmd());
            io::Error::last_os_error()
        };
        log(&format!("{} failed: {err}; restarting services", how.verb()));
        self.stopping = false;
        for i in 0..self.services.len() {
            if self.services[i].entry.action.restarts() {
                self.start(i);
            }
        }
    }

    fn start(&mut self, i: usize) {
        let svc = &mut self.services[i];
        log(&format!("starting {}", svc.entry.id));
        match spawn(&svc.entry) {
            Ok(pid) => {
                svc.pid = Some(pid);
                svc.started_at = Instant::now();
            }
            Err(e) => {
                log(&format!("cannot start {} ({}): {e}", svc.entry.id, svc.entry.argv[0]));
                if svc.entry.action.restarts() {
                    let d = next_delay(svc.last_delay, Duration::ZERO);
                    svc.last_delay = Some(d);
                    svc.restart_at = Some(Instant::now() + d);
                    log(&format!("{} will be retried in {}s", svc.entry.id, d.as_secs()));
                }
            }
        }
    }

    /// Reaps every child that has exited, ours or orphans inherited as PID 1.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(svc) = self.services.iter_mut().find(|s| s.pid == Some(pid)) else {
                continue; // An orphan: reaping it is all PID 1 owes it.
            };
            svc.pid = None;
            let how = describe_exit(status);
            if self.stopping || !svc.entry.action.restarts() {
                log(&format!("{} {how}", svc.entry.id));
                continue;
            }
            let now = Instant::now();
            let d = next_delay(svc.last_delay, now - svc.started_at);
            svc.last_delay = Some(d);
            svc.restart_at = Some(now + d);
            log(&format!("{} {how}, restarting in {}s", svc.entry.id, d.as_secs()));
        }
    }

    /// Sleeps until a signal arrives or `timeout` passes (None: no timeout).
    fn sleep(&mut self, timeout: Option<Duration>) {
        let ms = timeout.map_or(-1, |d| d.as_millis().saturating_add(1).min(i32::MAX as u128) as i32);
        let mut p = libc::pollfd { fd: self.wake_rd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; EINTR just means a signal came in, which is the point.
        unsafe { libc::poll(&mut p, 1, ms) };
        let mut buf = [0u8; 64];
        // SAFETY: non-blocking drain into a local buffer.
        while unsafe { libc::read(self.wake_rd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    fn running(&self) -> impl Iterator<Item = (&str, libc::pid_t)> {
        self.services.iter().filter_map(|s| s.pid.map(|p| (s.entry.id.as_str(), p)))
    }

    /// SIGTERM to every service (and its session's process group), SIGKILL after a
    /// grace period, reap them all, then exit 0.
    fn shutdown(&mut self) -> i32 {
        self.stopping = true;
        log("stopping services");
        for (id, pid) in self.running() {
            log(&format!("stopping {id} (pid {pid})"));
            // SAFETY: signalling our own children and the process groups they lead.
            unsafe {
                libc::kill(-pid, libc::SIGTERM);
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.running().next().is_some() && Instant::now() < deadline {
            self.sleep(Some(Duration::from_millis(100)));
            self.reap();
        }
        let stubborn: Vec<(String, libc::pid_t)> = self.running().map(|(id, p)| (id.to_string(), p)).collect();
        for (id, pid) in stubborn {
            log(&format!("{id} did not stop in {}s, killing it", STOP_GRACE.as_secs()));
            // SAFETY: as above; then wait for that child specifically.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        log("all services stopped");
        0
    }
}

/// Starts one entry in its own session; console entries also take the console as
/// controlling terminal, and `askfirst` waits for Enter before exec.
fn spawn(entry: &Entry) -> io::Result<libc::pid_t> {
    let mut cmd = Command::new(&entry.argv[0]);
    cmd.args(&entry.argv[1..]);
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", DEFAULT_PATH);
    }
    let on_console = entry.action.on_console();
    let ask = entry.action == Action::Askfirst;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (setsid, ioctl, write, read).
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if on_console {
                // Best effort: without a terminal on fd 0 the shell just lacks job control.
                libc::ioctl(0, libc::TIOCSCTTY, 0);
            }
            if ask {
                let msg = b"\nPlease press Enter to activate this console.\n";
                libc::write(1, msg.as_ptr().cast(), msg.len());
                let mut c = 0u8;
                while libc::read(0, (&mut c as *mut u8).cast(), 1) == 1 && c != b'\n' {}
            }
            Ok(())
        });
    }
    // The Child handle is dropped without waiting: reap() collects every exit.
    cmd.spawn().map(|c| c.id() as libc::pid_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_shutdown_signals() {
        assert_eq!(Shutdown::from_signal(libc::SIGUSR1), Some(Shutdown::Halt));
        assert_eq!(Shutdown::from_signal(libc::SIGUSR2), Some(Shutdown::PowerOff));
        assert_eq!(Shutdown::from_signal(libc::SIGTERM), Some(Shutdown::Reboot));
        assert_eq!(Shutdown::from_signal(libc::SIGINT), None);
        assert_eq!(Shutdown::from_signal(0), None);
        assert_eq!(Shutdown::PowerOff.reboot_cmd(), 0x4321_fedc);
        assert_eq!(Shutdown::Halt.reboot_cmd(), 0xcdef_0123_u32 as libc::c_int);
        assert_eq!(Shutdown::Reboot.reboot_cmd(), 0x0123_4567);
    }

    #[test]
    fn describes_exit_and_signal_statuses() {
        // Wait-status encoding: exit code in bits 8..16, terminating signal in bits 0..7.
        assert_eq!(describe_exit(3 << 8), "exited with status 3");
        assert_eq!(describe_exit(0), "exited with status 0");
        assert_eq!(describe_exit(libc::SIGKILL), "killed by signal 9");
    }
}
