//! User worlds on the real image: the BusyBox shell on the serial console
//! (the ESXi Shell), the system-call conformance program, and a Rust std
//! program added with `image-builder iso --add`.

use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(60);

/// Boots the image and activates the console shell.
fn shell(name: &str, adds: &[&str], cpus: u32) -> (EmulatorLock, Console) {
    let lock = emulator_lock();
    let mut q = qemu_iso(iso(name, tests::NO_AGENTS, adds));
    q.cpus = cpus;
    q.debug_exit = false;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    (lock, c)
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

/// The non-empty lines of a command's output, trimmed (the console adds
/// carriage returns and the shell may pad).
fn lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

#[test]
fn busybox_shell_session() {
    let (_lock, mut c) = shell("shell", &[], 2);
    let out = run(&mut c, "echo $((6*7))");
    check(&c, out.trim() == "42", &format!("arithmetic gave {out:?}"));
    let out = run(&mut c, "ls /bin | wc -l");
    let n: u32 = out.trim().parse().unwrap_or(0);
    check(&c, n > 50, &format!("ls /bin | wc -l gave {out:?}"));
    let out = run(&mut c, "ps");
    check(&c, out.contains("/sbin/init") && out.contains("/bin/sh"), &format!("ps shows no init and sh: {out:?}"));
    let out = run(&mut c, "mkdir -p /tmp/t/u && echo data > /tmp/t/u/f && cat /tmp/t/u/f && ls -l /tmp/t/u && rm -r /tmp/t; test -e /tmp/t; echo gone=$?");
    let l = lines(&out);
    check(
        &c,
        l.len() == 4
            && l[0] == "data"
            && l[1].starts_with("total ")
            && l[2].starts_with("-rw-r--r--    1 root     root             5 ")
            && l[2].ends_with(" f")
            && l[3] == "gone=1",
        &format!("files: {out:?}"),
    );
    let out = run(&mut c, "echo hello | tr a-z A-Z | sed s/HELLO/MANTLE/");
    check(&c, out.trim() == "MANTLE", &format!("pipeline gave {out:?}"));
    let out = run(&mut c, "free; uptime; cat /proc/meminfo | head -2");
    check(&c, out.contains("Mem:") && out.contains("load average") && out.contains("MemTotal:"), &format!("free/uptime: {out:?}"));
    // A background job killed with kill.
    let out = run(&mut c, "sleep 1000 & p=$!; sleep 1; kill $p; wait $p; echo status=$?");
    check(&c, lines(&out).last() == Some(&"status=143"), &format!("background job: {out:?}"));
    // Ctrl-C interrupts the foreground job (SIGINT through the tty).
    c.send("sleep 100\n").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.send("\x03").unwrap();
    let out = run(&mut c, "echo after-ctrl-c rc=$?");
    check(&c, lines(&out).last() == Some(&"after-ctrl-c rc=130"), &format!("Ctrl-C: {out:?}"));
    // Job control: Ctrl-Z stops the foreground job (SIGTSTP to the tty's
    // foreground group), the shell reports and lists it, `fg` gives it the
    // terminal again and it runs to its end.
    c.send("sleep 3\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    c.send("\x1a").unwrap();
    c.expect("Stopped", STEP).unwrap_or_else(|e| panic!("Ctrl-Z: {e}\n--- serial log ---\n{}", c.log()));
    let _ = c.expect(PROMPT, STEP);
    let out = run(&mut c, "jobs");
    check(&c, out.contains("Stopped") && out.contains("sleep 3"), &format!("jobs after Ctrl-Z: {out:?}"));
    let out = run(&mut c, "fg; echo fg-rc=$?");
    check(&c, out.contains("sleep 3") && lines(&out).last() == Some(&"fg-rc=0"), &format!("fg: {out:?}"));
    // `bg` continues a stopped job in the background.
    c.send("sleep 100\n").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    c.send("\x1a").unwrap();
    c.expect("Stopped", STEP).unwrap_or_else(|e| panic!("Ctrl-Z: {e}\n--- serial log ---\n{}", c.log()));
    let _ = c.expect(PROMPT, STEP);
    let out = run(&mut c, "bg; jobs");
    check(&c, out.contains("Running") && out.contains("sleep 100") && !out.contains("Stopped"), &format!("bg: {out:?}"));
    let out = run(&mut c, "kill %1; wait; jobs; echo after-bg");
    check(&c, lines(&out).last() == Some(&"after-bg"), &format!("kill %1: {out:?}"));
    // A background job that reads the terminal stops with SIGTTIN.
    let out = run(&mut c, "cat & sleep 1; jobs");
    check(&c, out.contains("Stopped") && out.contains("cat"), &format!("background read: {out:?}"));
    let out = run(&mut c, "kill -9 %1; wait; echo after-ttin");
    check(&c, lines(&out).last() == Some(&"after-ttin"), &format!("kill -9 %1: {out:?}"));
    let out = run(&mut c, "top -b -n 1 | head -5");
    check(&c, out.contains("Load average") && out.contains("PID"), &format!("top: {out:?}"));
    let out = run(&mut c, "uname -sm; id -u");
    check(&c, lines(&out) == ["VMkernel x86_64", "0"], &format!("uname/id: {out:?}"));
    let out = run(&mut c, "cat /nonexistent; echo rc=$?");
    check(
        &c,
        lines(&out) == ["cat: can't open '/nonexistent': No such file or directory", "rc=1"],
        &format!("error path: {out:?}"),
    );
}

#[test]
fn conformance_program_passes_on_mantle() {
    let (_lock, mut c) = shell("conformance", &[], 2);
    // The end marker is computed by the shell, so the echoed command line
    // does not match it.
    c.send("/usr/lib/mantle/conformance; echo conformance-$((6*7))-exit=$?\n").unwrap();
    let out = c.expect("conformance-42-exit=", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("").trim().to_string();
    eprintln!("conformance on Mantle: {summary}");
    let nums: Vec<u32> = summary.split(|ch: char| !ch.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    check(&c, matches!(nums[..], [p, 0] if p >= 60), &format!("conformance summary {summary:?}"));
    let code = c.expect("\n", STEP).unwrap_or_default();
    check(&c, code.trim() == "0", &format!("conformance exit status {code:?}"));
}

#[test]
fn rust_std_program_added_with_iso_add() {
    let bins = image_builder::userworlds::build_static(true).unwrap_or_else(|e| panic!("{e}"));
    let probe = bins.join("stdprobe");
    let spec = format!("{}=/opt/tools/stdprobe", probe.display());
    let (_lock, mut c) = shell("stdprobe", &[&spec], 2);
    let out = run(&mut c, "/opt/tools/stdprobe; echo rc=$?");
    let l = lines(&out);
    check(
        &c,
        l.len() >= 2 && l[l.len() - 2].starts_with("stdprobe: ok (8 threads, files, ") && l[l.len() - 1] == "rc=0",
        &format!("stdprobe: {out:?}"),
    );
}

#[test]
fn hostile_user_world_leaves_the_host_responsive() {
    let (_lock, mut c) = shell("hostile", &[], 2);
    // Touch 1.5x the guest's RAM in a child: it must die, nothing else.
    c.send("/usr/lib/mantle/hostile 1500; echo hostile-$((6*7))-exit=$?\n").unwrap();
    let out = c.expect("hostile-42-exit=", Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or("").trim().to_string();
    eprintln!("hostile on Mantle: {summary}");
    check(&c, summary.ends_with(" 0 failed") && !out.contains("FAILED"), &format!("hostile: {summary:?}"));
    let _ = c.expect(PROMPT, STEP);
    // The shell still answers, and the kernel is intact.
    let out = run(&mut c, "echo alive; ps | wc -l");
    check(&c, out.contains("alive"), &format!("shell after hostile: {out:?}"));
    check(&c, !c.log().contains("KERNEL PANIC") && !c.log().contains("CPU EXCEPTION"), "the kernel reported a fault");
}

/// Resource groups through the narrow VMkernel API, from the shell: admission
/// control refuses what cannot be reserved, and only root may change groups.
#[test]
fn resource_groups_admission_and_permissions() {
    let (_lock, mut c) = shell("vmkcli", &[], 1);
    let out = run(&mut c, "vmkcli version");
    check(&c, out.contains("VMkernel API version 1"), &format!("version: {out:?}"));
    let out = run(&mut c, "vmkcli group create web --shares 2000 --reservation 30 --limit 80; echo rc=$?");
    check(&c, out.contains("created group") && out.contains("rc=0"), &format!("create: {out:?}"));
    // One CPU is 100%: 30% is reserved already, 90% more cannot be.
    let out = run(&mut c, "vmkcli group create db --reservation 90; echo rc=$?");
    check(&c, out.contains("admission control refused") && out.contains("rc=1"), &format!("admission control: {out:?}"));
    let out = run(&mut c, "vmkcli --as-uid 1000 group create mine; echo rc=$?");
    check(&c, out.contains("permission denied") && out.contains("rc=1"), &format!("non-root create: {out:?}"));
    let out = run(&mut c, "vmkcli --as-uid 1000 group list");
    check(&c, out.contains("host") && out.contains("web"), &format!("non-root may read: {out:?}"));
    let out = run(&mut c, "vmkcli group set 1 --reservation 50 --limit 40; echo rc=$?");
    check(&c, out.contains("invalid settings") && out.contains("rc=1"), &format!("limit below reservation: {out:?}"));
    let out = run(&mut c, "vmkcli group destroy 1 && vmkcli group list");
    check(&c, out.contains("destroyed") && !out.contains(" web "), &format!("destroy: {out:?}"));
    // Memory limits: a group with 48 MiB refuses a 64 MiB commitment with
    // ENOMEM; outside it the same request succeeds.
    let out = run(&mut c, "vmkcli group create small --mem-limit 48");
    let id: String = out.chars().skip_while(|ch| !ch.is_ascii_digit()).take_while(|ch| ch.is_ascii_digit()).collect();
    let out = run(&mut c, &format!("vmkcli group run {id} -- /usr/lib/mantle/hostile alloc 64; vmkcli group run {id} -- /usr/lib/mantle/hostile alloc 4; /usr/lib/mantle/hostile alloc 64"));
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("alloc:")).collect();
    check(&c, lines == ["alloc: ENOMEM", "alloc: ok", "alloc: ok"], &format!("memory limit: {out:?}"));
}

/// Processes that exit give back everything: kernel heap objects (process,
/// thread, file table) and frames. 100 forks of the shell, 100 fork+exec of
/// BusyBox and 100 of a Rust std program, all exiting through exit_group,
/// leave the host's memory where it was (`HostMemory::leak_since`). An exit
/// system call that kept a reference on the stack it never returns to once
/// leaked ~11 kB per process.
#[test]
fn exited_processes_return_their_memory() {
    let (_lock, mut c) = shell("uw-leak", &[], 2);
    // Warm-up: the shell's own structures and the heap reach their size.
    run(&mut c, "for i in $(seq 20); do ( : ); /bin/true; done");
    let before = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
    run(&mut c, "for i in $(seq 100); do ( : ); /bin/true; vmkcli --help >/dev/null; done");
    let after = HostMemory::parse(&run(&mut c, HostMemory::COMMAND)).expect("memory figures");
    eprintln!("host memory before/after 300 processes: {before:?} / {after:?}");
    if let Some(leak) = before.leak_since(&after) {
        check(&c, false, &format!("exited processes leaked memory: {leak}"));
    }
}
