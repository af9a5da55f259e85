//! hostd in the image (`/sbin/hostd`, the static binary from agents/hostd),
//! on a host without a datastore: init starts hostd, which says its config
//! store is in memory and serves anyway; `hostd passwd root` (from a pipe)
//! hashes the password with argon2 (random salt) and writes the account
//! file with the atomic recipe, owner-only.

use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(90);

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

#[test]
fn hostd_console_commands_run_on_mantle() {
    let _lock = emulator_lock();
    let mut q = qemu_iso(iso("hostd", "", &[]));
    q.cpus = 2;
    q.debug_exit = false;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    // init started hostd; with no datastore attached it says that its
    // config store is in memory (and keeps working).
    let said = |log: &str| log.contains("hostd: no datastore attached: the config store") && log.contains("hostd: HTTPS on");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !said(&c.log()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    check(&c, said(&c.log()), "hostd does not say that its config store is in memory");
    let out = run(&mut c, "hostd --version; echo rc=$?");
    check(&c, out.contains(concat!("hostd ", env!("CARGO_PKG_VERSION"))) && out.contains("rc=0"), &format!("hostd --version: {out:?}"));
    let out = run(&mut c, "echo console-pw-123 | hostd --config-dir /tmp/hd passwd root; echo rc=$?");
    check(&c, out.contains("password of root set") && out.contains("rc=0"), &format!("hostd passwd: {out:?}"));
    let out = run(&mut c, "ls -la /tmp/hd; cat /tmp/hd/users.json");
    check(
        &c,
        out.contains("-rw-------") && out.contains("users.json") && out.contains("$argon2id$") && !out.contains("console-pw-123") && !out.contains("hostd-tmp"),
        &format!("account file: {out:?}"),
    );
    // A short password is refused and the file is left as it was.
    let out = run(&mut c, "echo short | hostd --config-dir /tmp/hd passwd root; echo rc=$?; grep -c argon2id /tmp/hd/users.json");
    check(&c, out.contains("at least 8") && out.contains("rc=1") && out.trim_end().ends_with('1'), &format!("short password: {out:?}"));
}
