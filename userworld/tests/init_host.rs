//! Runs `init` on the host (not as PID 1) against small configurations and checks
//! its console log: start order, restarts with back-off, fallback, SIGTERM stop.
//! The services are the conformance binary's child modes, so no host program is
//! needed except `/bin/sh` for the fallback test.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const INIT: &str = env!("CARGO_BIN_EXE_init");
const CONF: &str = env!("CARGO_BIN_EXE_conformance");

struct Init {
    child: Child,
    lines: Receiver<(Instant, String)>,
    seen: Vec<String>,
}

impl Init {
    fn start(config_text: Option<&str>, name: &str) -> Init {
        let config = std::env::temp_dir().join(format!("mantle-init-test-{}-{name}", std::process::id()));
        match config_text {
            Some(t) => std::fs::write(&config, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(&config);
            }
        }
        let mut child = Command::new(INIT)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Init { child, lines, seen: Vec::new() }
    }

    /// Waits for the next line satisfying `pred`; returns it with its arrival time.
    fn expect(&mut self, pred: impl Fn(&str) -> bool, what: &str) -> (Instant, String) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, l)) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return (t, l);
                    }
                }
                Err(_) => panic!("no line {what:?}; log so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn expect_exact(&mut self, want: &str) -> Instant {
        self.expect(|l| l == want, want).0
    }

    fn sigterm_and_wait(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "init did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn respawn_with_backoff_then_sigterm_stops_everything() {
    let tab = format!(
        "# test inittab\nsetup:sysinit:{CONF} exit 0\nsvc:respawn:{CONF} exit 3\nlong:respawn:{CONF} child-sleep 60\n"
    );
    let mut init = Init::start(Some(&tab), "respawn");
    init.expect_exact("init: starting setup");
    init.expect_exact("init: setup exited with status 0");
    init.expect_exact("init: starting svc");
    let t1 = init.expect_exact("init: svc exited with status 3, restarting in 1s");
    let t2 = init.expect_exact("init: starting svc");
    init.expect_exact("init: svc exited with status 3, restarting in 2s");
    let t3 = init.expect_exact("init: starting svc");
    init.expect_exact("init: svc exited with status 3, restarting in 4s");
    assert!(t2 - t1 >= Duration::from_millis(950), "first restart after {:?}", t2 - t1);
    assert!(t3 - t2 >= Duration::from_millis(1950), "second restart after {:?}", t3 - t2);
    assert!(init.seen.iter().any(|l| l == "init: starting long"), "long never started");

    let status = init.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "init exit status");
    let rest: Vec<String> = init.lines.try_iter().map(|(_, l)| l).collect();
    init.seen.extend(rest);
    let log = init.seen.join("\n");
    let stop = init.seen.iter().find(|l| l.starts_with("init: stopping long (pid ")).unwrap_or_else(|| panic!("{log}"));
    let pid: i32 = stop.trim_start_matches("init: stopping long (pid ").trim_end_matches(')').parse().unwrap();
    assert!(log.contains("init: long killed by signal 15"), "{log}");
    assert!(log.contains("init: all services stopped"), "{log}");
    assert!(!log.contains("long killed by signal 15, restarting"), "restarted while stopping:\n{log}");
    // The service is gone and reaped: no such process any more.
    // SAFETY: signal 0 only checks existence.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "service pid {pid} still exists");
}

#[test]
fn missing_config_falls_back_to_console_shell() {
    let mut init = Init::start(None, "missing");
    let (_, l) = init.expect(|l| l.contains("cannot read"), "cannot read");
    assert!(l.ends_with("starting a shell on the console instead"), "{l}");
    init.expect_exact("init: starting console");
    // /bin/sh with stdin at EOF exits at once, and is restarted.
    init.expect_exact("init: console exited with status 0, restarting in 1s");
    assert_eq!(init.sigterm_and_wait().code(), Some(0));
}

#[test]
fn malformed_config_reports_lines_and_falls_back() {
    let mut init = Init::start(Some("nonsense\nx:whenever:/bin/true\n"), "malformed");
    let (_, l1) = init.expect(|l| l.contains(":1: "), "line 1 error");
    assert!(l1.contains("expected id:action:command"), "{l1}");
    let (_, l2) = init.expect(|l| l.contains(":2: "), "line 2 error");
    assert!(l2.contains("unknown action 'whenever'"), "{l2}");
    init.expect(|l| l.ends_with("has no valid entries; starting a shell on the console instead"), "fallback");
    init.expect_exact("init: starting console");
    assert_eq!(init.sigterm_and_wait().code(), Some(0));
}

#[test]
fn check_mode_validates_config() {
    let dir = std::env::temp_dir();
    let good = dir.join(format!("mantle-init-check-good-{}", std::process::id()));
    let bad = dir.join(format!("mantle-init-check-bad-{}", std::process::id()));
    std::fs::write(&good, "a:respawn:/bin/a\nb:once:/bin/b x\n").unwrap();
    std::fs::write(&bad, "a:respawn:/bin/a\na:once:/bin/b\n").unwrap();
    let run = |p: &std::path::Path| Command::new(INIT).arg("--check").arg("--config").arg(p).output().unwrap();
    let g = run(&good);
    assert_eq!(g.status.code(), Some(0), "{}", String::from_utf8_lossy(&g.stderr));
    let b = run(&bad);
    assert_eq!(b.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&b.stderr).contains(":2: duplicate id 'a'"));
    let _ = std::fs::remove_file(good);
    let _ = std::fs::remove_file(bad);
}
