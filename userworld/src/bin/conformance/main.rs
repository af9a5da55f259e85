//! System-call conformance checks: Linux semantics that Mantle's VMkernel must match.
//!
//! Prints `PASS <name>` or `FAIL <name>: <why>` per check and ends with
//! `N passed, M failed`; exits 0 only when nothing failed. Run with an argument
//! starting with `child-` (or `exit N`) it acts as the child program for the
//! exec checks, so exec needs no other binary.

mod events;
mod fifos;
mod files;
mod harness;
mod jobs;
mod mappings;
mod memory;
mod misc;
mod pipes;
mod process;
mod signals;
mod sockets;
mod threads;
mod time;
mod unix;

use std::io::{Read, Write};
use std::path::PathBuf;

/// Child modes used by the exec checks. Returns None when `args` asks for none.
fn child_mode(args: &[String]) -> Option<i32> {
    let mode = args.get(1)?.as_str();
    let rest = &args[2..];
    Some(match mode {
        "exit" => rest.first().and_then(|s| s.parse().ok()).unwrap_or(2),
        "child-echo" => {
            println!("child-echo {}", rest.join(" "));
            7
        }
        "child-upper" => {
            let mut s = String::new();
            if std::io::stdin().read_to_string(&mut s).is_err() {
                return Some(1);
            }
            print!("{}", s.to_uppercase());
            0
        }
        "child-sleep" => {
            // A long-running child for init's host test.
            let secs = rest.first().and_then(|s| s.parse().ok()).unwrap_or(60);
            std::thread::sleep(std::time::Duration::from_secs(secs));
            0
        }
        "child-env" => {
            println!("{}", std::env::var(rest.first()?).unwrap_or_default());
            0
        }
        "child-fds" => {
            // Prints "open" or "closed" for each descriptor number given.
            let words: Vec<&str> = rest
                .iter()
                .map(|n| {
                    let fd: i32 = n.parse().unwrap_or(-1);
                    // SAFETY: F_GETFD only queries the descriptor table.
                    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 { "closed" } else { "open" }
                })
                .collect();
            println!("{}", words.join(" "));
            0
        }
        _ => return None,
    })
}

/// Path of this executable, for re-executing it in child modes.
fn self_exe(args: &[String]) -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&args[0]))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = child_mode(&args) {
        let _ = std::io::stdout().flush();
        std::process::exit(code);
    }

    // Silence the default panic output: the runner reports panics as failures.
    std::panic::set_hook(Box::new(|_| {}));
    // Checks compare created files' modes, so fix the umask.
    // SAFETY: umask has no preconditions.
    unsafe { libc::umask(0o022) };

    let base = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    // SAFETY: getpid has no preconditions.
    let dir = base.join(format!("mantle-conformance-{}", unsafe { libc::getpid() }));
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir(&dir) {
        println!("FAIL setup: cannot create {}: {e}", dir.display());
        println!("0 passed, 1 failed");
        std::process::exit(1);
    }

    let mut r = harness::Runner::default();
    let exe = self_exe(&args);
    files::run(&mut r, &dir);
    pipes::run(&mut r);
    process::run(&mut r, &exe);
    threads::run(&mut r);
    memory::run(&mut r, &dir);
    mappings::run(&mut r, &dir);
    fifos::run(&mut r, &dir);
    time::run(&mut r);
    misc::run(&mut r, &dir);
    signals::run(&mut r);
    jobs::run(&mut r);
    process::run_text_busy(&mut r, &exe, &dir);
    events::run(&mut r);
    sockets::run(&mut r);
    unix::run(&mut r, &dir);

    r.check("cleanup_temp_dir", || std::fs::remove_dir_all(&dir).map_err(|e| e.to_string()));
    println!("{} passed, {} failed", r.passed, r.failed);
    std::process::exit(if r.failed == 0 { 0 } else { 1 });
}
