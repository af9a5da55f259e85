//! The in-image system-call fuzzer (`userworld/src/bin/sysfuzz.rs`) on the
//! real image: random system calls with random and hostile arguments from
//! several processes and threads must leave the host alive (no kernel
//! panic or CPU exception), the shell answering, and the kernel's memory
//! where it was before (`HostMemory::leak_since`).
//!
//! The bounded run is in the suite; `sysfuzz_million_calls` (ignored) is
//! the long run: `cargo test -p tests --test fuzz -- --ignored --nocapture`
//! (`SYSFUZZ_CALLS=N` for another count, `SYSFUZZ_SEED=S` another seed).

use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(60);

fn shell(name: &str, cpus: u32) -> (EmulatorLock, Console) {
    let lock = emulator_lock();
    let mut q = qemu_iso(iso(name, "", &[]));
    q.cpus = cpus;
    q.debug_exit = false;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    (lock, c)
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

/// Runs `sysfuzz <seed> <calls> <more>` and returns its summary line.
fn sysfuzz(c: &mut Console, seed: u64, calls: u64, more: &str, timeout: Duration) -> String {
    // The end marker is computed by the shell, so the echoed command line does not match it.
    c.send(&format!("/usr/lib/mantle/sysfuzz {seed} {calls} {more}; echo sysfuzz-$((6*7))-exit=$?\n")).unwrap();
    let out = c.expect("sysfuzz-42-exit=", timeout).unwrap_or_else(|e| panic!("sysfuzz {seed} {calls}: {e}\n{}", c.log()));
    let code = c.expect("\n", STEP).unwrap_or_default();
    let _ = c.expect(PROMPT, STEP);
    let summary = out.lines().rev().find(|l| l.contains("sysfuzz: calls ")).unwrap_or("").trim().to_string();
    // Each hung worker by name: the calls its threads were in when it was killed.
    for l in out.lines().filter(|l| l.contains("sysfuzz: worker ")) {
        eprintln!("{}", l.trim());
    }
    eprintln!("{summary}");
    check(c, code.trim() == "0", &format!("sysfuzz exit status {code:?}, summary {summary:?}"));
    let field = |key: &str| summary.split_whitespace().skip_while(|w| *w != key).nth(1).and_then(|v| v.parse::<u64>().ok());
    check(c, field("calls") == Some(calls), &format!("sysfuzz made fewer calls than asked: {summary:?}"));
    // Most calls come back (a few are cut short when a worker dies or is killed while stuck).
    check(c, field("completed").is_some_and(|n| n * 10 >= calls * 9), &format!("too few calls completed: {summary:?}"));
    summary
}

/// Runs `sysfuzz heap <reps>`: fixed system-call patterns (fork and exit,
/// threads, pipes, sockets, SCM_RIGHTS, epoll, timerfds, futexes,
/// signals, alarms, file maps...) repeated, each checked for kernel heap
/// it keeps; fails on any leak.
fn heap_patterns(c: &mut Console, reps: u32, patterns: &str) {
    c.send(&format!("/usr/lib/mantle/sysfuzz heap {reps} {patterns}; echo heap-$((6*7))-exit=$?\n")).unwrap();
    let out = c.expect("heap-42-exit=", Duration::from_secs(900)).unwrap_or_else(|e| panic!("sysfuzz heap: {e}\n{}", c.log()));
    let code = c.expect("\n", STEP).unwrap_or_default();
    let _ = c.expect(PROMPT, STEP);
    let lines: Vec<&str> = out.lines().filter(|l| l.trim_start().starts_with("heap")).collect();
    eprintln!("{}", lines.join("\n"));
    check(c, code.trim() == "0" && out.contains(" 0 leak"), &format!("system-call patterns keep kernel heap:\n{}", lines.join("\n")));
}

fn fuzz_and_check(name: &str, seed: u64, calls: u64, timeout: Duration, heap_reps: Option<u32>) {
    let (_lock, mut c) = shell(name, 2);
    if let Some(reps) = heap_reps {
        heap_patterns(&mut c, reps, "");
    }
    // Warm-up: the heap reaches its working size (first use of each call,
    // the shell's own structures).
    sysfuzz(&mut c, seed.wrapping_add(1000), 2000, "", timeout);
    let before = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
    sysfuzz(&mut c, seed, calls, "", timeout);
    // Reaped zombies and closed files may need a moment to be given back.
    // Anything the workers left outside their scratch directory would hold
    // memory legitimately: show it.
    let left = run(&mut c, "sleep 1; ls -A /tmp /root; ps");
    eprintln!("after sysfuzz: {left}");
    let mut after = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
    // Memory still on its way back is not a leak: a TCP connection a
    // worker opened (to hostd, say) holds its buffers until its close
    // finishes (the orphan timeout, 60 s). A leak never comes back.
    let settle = std::time::Instant::now();
    while before.leak_since(&after).is_some() && settle.elapsed() < Duration::from_secs(90) {
        run(&mut c, "sleep 5");
        after = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
    }
    eprintln!("host memory before/after {calls} random system calls: {before:?} / {after:?}");
    let log = c.log();
    // The whole serial log, for a look at a long run afterwards.
    let saved = image_builder::out_dir().join(format!("{name}-serial.log"));
    if std::fs::write(&saved, &log).is_ok() {
        eprintln!("serial log: {}", saved.display());
    }
    check(&c, !log.contains("KERNEL PANIC") && !log.contains("CPU EXCEPTION"), "the kernel reported a fault");
    let out = run(&mut c, "echo alive-$((6*7)); ps | wc -l");
    check(&c, out.contains("alive-42"), &format!("shell after sysfuzz: {out:?}"));
    if let Some(leak) = before.leak_since(&after) {
        check(&c, false, &format!("random system calls leaked kernel memory: {leak}"));
    }
}

/// Also runs the heap patterns (`sysfuzz heap 200`) first: a leak of a
/// few dozen bytes per fork, thread or file shows there by name.
#[test]
fn sysfuzz_random_system_calls_leave_the_host_intact() {
    fuzz_and_check("sysfuzz", 1, 20_000, Duration::from_secs(900), Some(200));
}

#[test]
#[ignore = "long: a million random system calls (about an hour under TCG)"]
fn sysfuzz_million_calls() {
    let seed = std::env::var("SYSFUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7);
    // SYSFUZZ_CALLS runs a shorter (or longer) version of the same check.
    let calls = std::env::var("SYSFUZZ_CALLS").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    fuzz_and_check("sysfuzz-long", seed, calls, Duration::from_secs(6 * 3600), None);
}

/// System-call families for `sysfuzz_heap_by_family`: name, call list,
/// calls per worker process.
const FAMILIES: &[(&str, &str, u64)] = &[
    ("worker processes (getpid only)", "39", 10),
    ("fork/clone/wait", "56-58,61,247,435", 50),
    ("files", "0-8,16-21,32,33,40,72-96,257-269,292,293", 250),
    ("memory", "9-12,25-28", 250),
    ("signals", "13-15,34,62,127-131,200,234", 250),
    ("sockets", "41-55,288", 250),
    ("epoll, timers, eventfd", "35,213,222-230,232,233,281,283-291", 250),
    ("futex, threads", "24,186,202-205,218,273,274", 250),
    ("the rest", "22,23,29-31,36-38,63-71,97-126,132-185,187-199,201,206-212,214-217,219-221,231,235-246,248-256,270-272,275-280,282,294-449", 250),
];

/// The heap patterns alone (`SYSFUZZ_HEAP_REPS`, default 1000;
/// `SYSFUZZ_HEAP_PATTERNS="fork_exit orphan"` for some).
#[test]
#[ignore = "diagnostic: the heap patterns of the suite's sysfuzz boot, longer"]
fn sysfuzz_heap_patterns() {
    let reps = std::env::var("SYSFUZZ_HEAP_REPS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let (_lock, mut c) = shell("sysfuzz-heap", 2);
    heap_patterns(&mut c, reps, &std::env::var("SYSFUZZ_HEAP_PATTERNS").unwrap_or_default());
}

/// Which system-call family keeps kernel heap: one boot, `sysfuzz` restricted
/// to each family of `FAMILIES` in turn (`SYSFUZZ_FAMILY_CALLS` calls,
/// default 5000; `SYSFUZZ_FAMILIES=0,3` for some), printing the heap in use
/// before and after each.
#[test]
#[ignore = "diagnostic: a few minutes under TCG"]
fn sysfuzz_heap_by_family() {
    let calls = std::env::var("SYSFUZZ_FAMILY_CALLS").ok().and_then(|s| s.parse().ok()).unwrap_or(5000u64);
    let pick: Option<Vec<usize>> = std::env::var("SYSFUZZ_FAMILIES").ok().map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect());
    let (_lock, mut c) = shell("sysfuzz-families", 2);
    sysfuzz(&mut c, 1000, 2000, "", Duration::from_secs(900));
    let mut report = Vec::new();
    for (i, (name, only, per_worker)) in FAMILIES.iter().enumerate() {
        if pick.as_ref().is_some_and(|p| !p.contains(&i)) {
            continue;
        }
        // Once unmeasured to warm the heap up for this family, then measured.
        sysfuzz(&mut c, 2000 + i as u64, calls / 5, &format!("4 3 {only} {per_worker}"), Duration::from_secs(900));
        run(&mut c, "sleep 1");
        let before = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
        let summary = sysfuzz(&mut c, 3000 + i as u64, calls, &format!("4 3 {only} {per_worker}"), Duration::from_secs(900));
        run(&mut c, "sleep 1");
        let after = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
        let workers = summary.split_whitespace().skip_while(|w| *w != "workers-started").nth(1).unwrap_or("?").to_string();
        let line = format!(
            "{i} {name}: heap in use {:+} kB, frames {:+} kB, {workers} workers",
            after.heap_used_kb - before.heap_used_kb,
            (after.free_kb + after.heap_kb) - (before.free_kb + before.heap_kb)
        );
        eprintln!("{line}");
        report.push(line);
    }
    eprintln!("--- heap by family ({calls} calls each) ---\n{}", report.join("\n"));
    let log = c.log();
    check(&c, !log.contains("KERNEL PANIC") && !log.contains("CPU EXCEPTION"), "the kernel reported a fault");
}

/// Where the guest fuzzer runs: SVM under QEMU TCG, or VMX in Bochs.
#[derive(Clone, Copy)]
enum Host {
    Svm,
    VmxBochs,
}

/// Boots a host (SVM under QEMU TCG, or VMX in Bochs) and runs
/// `tests::guest_fuzz` there (see it for what is checked).
fn guest_fuzzer(name: &str, host: Host, total: u64, per_vm: u32, max_vms: u32, timeout_s: u32) -> (u64, u32) {
    let lock = emulator_lock();
    let iso = iso(name, tests::NO_AGENTS, &[]);
    let mut c = match host {
        Host::Svm => {
            let mut q = qemu_iso(iso);
            q.cpus = 2;
            q.cpu = "qemu64,+svm,+npt".into();
            q.debug_exit = false;
            q.spawn_console().unwrap_or_else(|e| panic!("{e}"))
        }
        Host::VmxBochs => {
            let dir = std::env::temp_dir().join(format!("mantle-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let b = image_builder::bochs::Bochs::new(iso, dir.join("serial.txt"));
            b.spawn_console().unwrap_or_else(|e| panic!("cannot start Bochs: {e}"))
        }
    };
    let step = match host {
        Host::Svm => STEP,
        Host::VmxBochs => Duration::from_secs(600),
    };
    activate_shell(&mut c, Duration::from_secs(600), step);
    let r = guest_fuzz(&mut c, name, step, total, per_vm, max_vms, timeout_s);
    drop(lock);
    r
}

// The bounded VMX run shares the Bochs boot of `tests/bochs.rs` (a Bochs
// boot costs minutes).
#[test]
fn guest_fuzzer_under_svm_leaves_the_host_intact() {
    guest_fuzzer("guestfuzz-svm", Host::Svm, 1_000, 2_000, 40, 600);
}

/// The long runs' instruction count: 100,000, or `GUESTFUZZ_TOTAL`.
fn long_total() -> u64 {
    std::env::var("GUESTFUZZ_TOTAL").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000)
}

#[test]
#[ignore = "long: 100,000 random guest instructions under SVM (QEMU TCG)"]
fn guest_fuzzer_100k_under_svm() {
    guest_fuzzer("guestfuzz-svm-long", Host::Svm, long_total(), 10_000, 5_000, 3600);
}

#[test]
#[ignore = "long: 100,000 random guest instructions under VMX (Bochs), hours"]
fn guest_fuzzer_100k_under_vmx_in_bochs() {
    guest_fuzzer("guestfuzz-vmx-long", Host::VmxBochs, long_total(), 10_000, 5_000, 3 * 3600);
}
