//! A stock Linux guest in a Mantle VM (QEMU's SVM with nested paging):
//! Debian's cloud kernel (fetched at build time, see
//! `image_builder::linux_guest`) and a BusyBox initramfs, booted through
//! the Linux boot protocol with the VM's ACPI tables and kvmclock, with no
//! timing or ACPI-off hints on its command line. At the guest's shell (via
//! `vmkcli vm console --follow`) the test reads the guest's log, reboots it
//! and powers it off from inside.

use std::time::{Duration, Instant};

use image_builder::linux_guest::{self, SHELL_MARKER};
use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(90);
/// Guest boot under TCG-in-TCG on a loaded 2-core machine.
const GUEST_BOOT: Duration = Duration::from_secs(400);
const KERNEL: &str = "/usr/lib/mantle/guests/linux/vmlinuz";
const INITRD: &str = "/usr/lib/mantle/guests/linux/initrd.cpio";

fn fail(c: &Console, what: &str) -> ! {
    panic!("{what}\n--- serial log ---\n{}", c.log())
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| fail(c, &format!("`{cmd}`: {e}")))
}

fn expect(c: &mut Console, pattern: &str, timeout: Duration) -> String {
    c.expect(pattern, timeout).unwrap_or_else(|e| fail(c, &format!("guest: {e}")))
}

/// Types a command at the guest's shell and returns its output up to a
/// marker the guest's shell computes (so the echo never matches).
fn guest_run(c: &mut Console, cmd: &str, n: u32) -> String {
    c.send(&format!("{cmd}; echo guest-done-$(({n}+1))\n")).unwrap_or_else(|e| fail(c, &e));
    let out = expect(c, &format!("guest-done-{}", n + 1), STEP);
    // Only what the command printed: drop the echo of the typed line.
    let echo_end = format!("$(({n}+1))");
    match out.rfind(&echo_end) {
        Some(i) => out[i + echo_end.len()..].to_string(),
        None => out,
    }
}

#[test]
fn debian_cloud_kernel_boots_reboots_and_powers_off() {
    let guest = linux_guest::prepare().unwrap_or_else(|e| panic!("preparing the Linux guest: {e}"));
    let adds = [format!("{}={KERNEL}", guest.kernel.display()), format!("{}={INITRD}", guest.initrd.display())];
    let adds: Vec<&str> = adds.iter().map(String::as_str).collect();
    let iso = iso("linux-guest", "", &adds);
    let _lock = emulator_lock();
    let mut q = qemu_iso(iso);
    q.cpus = 2;
    q.cpu = "qemu64,+svm,+npt".into();
    q.debug_exit = false;
    q.timeout = GUEST_BOOT * 3;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);

    let out = run(&mut c, &format!("vmkcli vm create --name debian --kernel {KERNEL} --initrd {INITRD} --memory 128 --cmdline console=ttyS0"));
    if !out.contains("created VM 1") {
        fail(&c, &format!("create: {out:?}"));
    }
    // Power on and attach to the guest's console; the guest's shell is then
    // at the other end of the terminal.
    let t0 = Instant::now();
    c.send("vmkcli vm start 1 && vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let boot_log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    let boot_time = t0.elapsed();
    eprintln!("Linux guest: power-on to shell marker in {:.1} s", boot_time.as_secs_f64());
    expect(&mut c, PROMPT, STEP);
    for bad in ["Kernel panic", "unstable", "Marking clocksource", "ACPI Error", "ACPI BIOS Error", "unchecked MSR access"] {
        if boot_log.contains(bad) {
            fail(&c, &format!("guest log has {bad:?}"));
        }
    }
    // kvm-clock, or the TSC (preferred by Linux once the TSC is invariant,
    // with its frequency from kvmclock and kvm-clock as its watchdog).
    if !boot_log.contains("mantle-linux: clocksource kvm-clock") && !boot_log.contains("mantle-linux: clocksource tsc") {
        fail(&c, "the guest chose neither kvm-clock nor tsc");
    }
    // The kernel's own account: kvmclock found, no calibration fallback,
    // no watchdog complaint; the command line had no hints.
    let dmesg = guest_run(&mut c, "dmesg | grep -i -E 'kvm-clock|clocksource|tsc|unstable|Power Button|Command line' | head -40", 100);
    for want in ["kvm-clock: using sched offset", "Switched to clocksource", "ACPI: button: Power Button"] {
        if !dmesg.contains(want) {
            fail(&c, &format!("guest dmesg lacks {want:?}: {dmesg}"));
        }
    }
    for bad in ["unstable", "tsc_early_khz", "acpi=off", "TSC calibration failed"] {
        if dmesg.contains(bad) {
            fail(&c, &format!("guest dmesg has {bad:?}: {dmesg}"));
        }
    }
    // Guest wall clock = host wall clock (kvmclock's wall clock / the CMOS
    // RTC): the guest's `date +%s` is within a few seconds of the host's
    // (QEMU's RTC follows the host clock; Mantle's real time comes from it).
    let out = guest_run(&mut c, "echo guest-epoch=$(date +%s)", 200);
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let guest_now: i64 = out
        .split("guest-epoch=")
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .last()
        .unwrap_or_else(|| fail(&c, &format!("no guest time in {out:?}")));
    if (guest_now - host_now).abs() > 30 {
        fail(&c, &format!("guest time {guest_now} vs host {host_now}"));
    }

    // `reboot -f` resets the VM: the same guest boots again.
    c.send("reboot -f\n").unwrap_or_else(|e| fail(&c, &e));
    let t1 = Instant::now();
    expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("Linux guest: reboot to shell marker in {:.1} s", t1.elapsed().as_secs_f64());
    expect(&mut c, PROMPT, STEP);

    // `poweroff -f` (ACPI S5) powers the VM off: the console follow ends
    // (it detaches when the VM stops), and the VM stays stopped.
    c.send("poweroff -f\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);
    let out = run(&mut c, "vmkcli vm info 1");
    if !out.contains("powered off") {
        fail(&c, &format!("after poweroff: {out:?}"));
    }
    let log = c.log();
    if !log.contains("reset by the guest") {
        fail(&c, "no guest reset in the host log");
    }

    // Power on again; `vmkcli vm shutdown` presses the ACPI power button,
    // and the guest (its button watcher) powers off gracefully.
    c.send("vmkcli vm start 1 && vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    expect(&mut c, PROMPT, STEP);
    c.send("\x1d").unwrap_or_else(|e| fail(&c, &e)); // Ctrl-]: detach
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);
    let out = run(&mut c, "vmkcli vm shutdown 1 && vmkcli vm wait 1 --timeout 120; vmkcli vm info 1");
    if !out.contains("power button pressed") || !out.contains("powered off") {
        fail(&c, &format!("shutdown: {out:?}"));
    }
    // The guest's console (kept while the VM is off) shows its watcher.
    let out = run(&mut c, "vmkcli vm console 1 | grep -c 'mantle-linux: power button'");
    if !out.lines().any(|l| l.trim() == "1") {
        fail(&c, &format!("the guest did not see the power button: {out:?}"));
    }
}

/// A 4-vCPU Linux guest: the cloud kernel finds its CPUs only in the MADT
/// (no MP table support), starts them with INIT/SIPI, and `nproc` says 4.
#[test]
fn debian_cloud_kernel_with_four_vcpus() {
    let guest = linux_guest::prepare().unwrap_or_else(|e| panic!("preparing the Linux guest: {e}"));
    let adds = [format!("{}={KERNEL}", guest.kernel.display()), format!("{}={INITRD}", guest.initrd.display())];
    let adds: Vec<&str> = adds.iter().map(String::as_str).collect();
    let iso = iso("linux-guest", "", &adds);
    let _lock = emulator_lock();
    let mut q = qemu_iso(iso);
    q.cpus = 2;
    q.cpu = "qemu64,+svm,+npt".into();
    q.debug_exit = false;
    q.timeout = GUEST_BOOT * 3;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    let out = run(&mut c, &format!("vmkcli vm create --name smp --kernel {KERNEL} --initrd {INITRD} --memory 128 --vcpus 4 --cmdline console=ttyS0"));
    if !out.contains("created VM 1") {
        fail(&c, &format!("create: {out:?}"));
    }
    let t0 = Instant::now();
    c.send("vmkcli vm start 1 && vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let boot_log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("4-vCPU Linux guest: power-on to shell marker in {:.1} s", t0.elapsed().as_secs_f64());
    if !boot_log.contains("cpus 4") || !boot_log.contains("smp: Brought up 1 node, 4 CPUs") {
        fail(&c, "the guest does not run on 4 CPUs");
    }
    for bad in ["Kernel panic", "unstable", "ACPI Error", "failed to come online"] {
        if boot_log.contains(bad) {
            fail(&c, &format!("guest log has {bad:?}"));
        }
    }
    expect(&mut c, PROMPT, STEP);
    c.send("poweroff -f\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);
    let out = run(&mut c, "vmkcli vm info 1");
    if !out.contains("powered off") {
        fail(&c, &format!("after poweroff: {out:?}"));
    }
}
