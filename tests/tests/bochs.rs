//! The ISO in Bochs on a VMX CPU (Skylake-X), the only emulator here with
//! VMX: one boot (a Bochs boot costs minutes) that checks the boot and the
//! status screen, then drives guests on Intel VT-x at the BusyBox prompt,
//! then runs the bounded guest fuzzer there (`tests::guest_fuzz`).

use std::time::{Duration, Instant};

use image_builder::bochs::Bochs;
use image_builder::linux_guest::{self, SHELL_MARKER};
use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";

/// Boots the ISO in Bochs (one host CPU, COM1 on a socket) to the shell.
fn bochs_shell(step: Duration) -> (EmulatorLock, Console, tempfile::TempDir) {
    let iso = iso("bochs", tests::NO_AGENTS, &[]);
    let dir = tempfile::tempdir().unwrap();
    let lock = emulator_lock();
    let b = Bochs::new(iso, dir.path().join("serial.txt"));
    let mut c = b.spawn_console().unwrap_or_else(|e| panic!("cannot start Bochs: {e}"));
    // ~3 s to the first line at 65 MIPS; minutes of slack for a busy host.
    activate_shell(&mut c, Duration::from_secs(600), step);
    (lock, c, dir)
}

/// The boot as the serial log shows it: Multiboot2 from the ISO, the VMX
/// backend with EPT, VPID and unrestricted guest, the ready line with the
/// one CPU Bochs has, and the status screen through its last fact.
fn check_boot(c: &Console) {
    let serial = c.log();
    for want in ["Multiboot2 boot", "| VM backend:              Intel VT-x, EPT (2M), VPID, unrestricted guest ", "Management network:"] {
        assert!(serial.contains(want), "serial log lacks {want:?}:\n{serial}");
    }
    let r = parse_ready(&serial).unwrap_or_else(|| panic!("no well-formed ready line\n{serial}"));
    assert_eq!(r.cpus, 1, "serial:\n{serial}");
}

/// Guests on Intel VT-x: the same ISO in Bochs (VMX with EPT, VPID and
/// unrestricted guest), driven at the BusyBox prompt through Bochs's
/// socket-server serial port, as an administrator would; then the guest
/// fuzzer on the same host.
#[test]
fn vmx_host_boots_and_runs_guests_in_bochs() {
    let step = Duration::from_secs(300);
    let (_lock, mut c, _dir) = bochs_shell(step);
    check_boot(&c);
    vmx_guests_at_the_shell(&mut c, step);
    // Under Bochs the guest's per-iteration LAPIC timer fired before most
    // ring-3 steps (~6 executed per 300-iteration VM, ~25 s each); the
    // guest now doubles the timer whenever that happens.
    guest_fuzz(&mut c, "guestfuzz-vmx", Duration::from_secs(600), 60, 300, 30, 900);
}

fn vmx_guests_at_the_shell(c: &mut Console, step: Duration) {
    let mut run = |cmd: &str| c.run(cmd, PROMPT, step).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()));
    let out = run("vmkcli vm create --name hello --kernel /usr/lib/mantle/guests/hello.bin --memory 16 && vmkcli vm start 1 && vmkcli vm wait 1 --timeout 120 && vmkcli vm console 1");
    assert!(out.contains("hello from a Mantle guest") && out.contains("debug-exit code 0x10"), "hello guest on VMX: {out:?}");
    let out = run("vmkcli vm create --name apic --kernel /usr/lib/mantle/guests/lapic-mmio.bin --memory 8 && vmkcli vm start 2 && vmkcli vm wait 2 --timeout 120");
    assert!(out.contains("debug-exit code 0x2014"), "LAPIC MMIO through EPT violations: {out:?}");
    let out = run("vmkcli vm create --name tf --kernel /usr/lib/mantle/guests/triple-fault.bin --memory 8 && vmkcli vm start 3 && vmkcli vm wait 3 --timeout 120");
    assert!(out.contains("triple fault"), "triple fault on VMX: {out:?}");
    let out = run("vmkcli vm create --name real --kernel /usr/lib/mantle/guests/real-mode.flat --memory 8 --format flat --load-address 0x7c00 --entry-mode real && vmkcli vm start 4 && vmkcli vm wait 4 --timeout 120");
    assert!(out.contains("debug-exit code 0x42"), "real-mode guest (unrestricted guest): {out:?}");
    let out = run("for g in a b; do vmkcli vm create --name fpu-$g --kernel /usr/lib/mantle/guests/fpu-$g.bin --memory 8; done; vmkcli vm start 5; vmkcli vm start 6; vmkcli vm wait 5 --timeout 300; vmkcli vm wait 6 --timeout 300");
    assert_eq!(out.matches("debug-exit code 0x10").count(), 2, "guest FPU state across exits on VMX: {out:?}");
    let out = run("vmkcli vm create --name spin --kernel /usr/lib/mantle/guests/spin.bin --memory 8 && vmkcli vm start 7 && sleep 1 && echo shell-alive && vmkcli vm stop 7 && vmkcli vm wait 7 --timeout 120");
    assert!(out.contains("shell-alive") && out.contains("powered off"), "a spinning guest is preempted on VMX: {out:?}");
    // Two vCPUs on one host CPU: the guest starts its AP with INIT/SIPI.
    let out = run("vmkcli vm create --name smp --kernel /usr/lib/mantle/guests/smp-spin.bin --memory 16 --vcpus 2 && vmkcli vm start 8 && sleep 2 && vmkcli vm info 8 && vmkcli vm stop 8 && vmkcli vm wait 8 --timeout 120");
    let vcpu_secs = |i: usize| -> f64 { out.split(&format!("vcpu{i} ")).nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(-1.0) };
    assert!(vcpu_secs(0) > 0.1 && vcpu_secs(1) > 0.1, "both vCPUs should run on VMX (AP started by INIT/SIPI): {out:?}");
    // Hostile guests hurt only themselves on VMX too.
    for (i, mode) in ["ports", "msrs", "memory", "apic"].iter().enumerate() {
        let id = 9 + i;
        let out = run(&format!("vmkcli vm create --name h-{mode} --kernel /usr/lib/mantle/guests/hostile-{mode}.elf --memory 16 && vmkcli vm start {id} && vmkcli vm wait {id} --timeout 600; vmkcli vm info {id}"));
        assert!(out.contains("debug-exit code 0x10"), "hostile guest {mode} on VMX: {out:?}");
    }
    // VMX keeps CR4.OSXSAVE for itself: a guest cannot reach AVX state.
    let out = run("vmkcli vm create --name x --kernel /usr/lib/mantle/guests/hostile-xstate-a.elf --memory 8 && vmkcli vm start 13 && vmkcli vm wait 13 --timeout 120");
    assert!(out.contains("debug-exit code 0x16"), "CR4.OSXSAVE should be refused on VMX: {out:?}");
    // SVM and VMX instructions #UD, RDPMC #GP, INVD/WBINVD are harmless.
    let out = run("vmkcli vm create --name i --kernel /usr/lib/mantle/guests/hostile-insns.elf --memory 8 && vmkcli vm start 14 && vmkcli vm wait 14 --timeout 300; vmkcli vm info 14");
    assert!(out.contains("debug-exit code 0x10"), "hostile instructions on VMX: {out:?}");
    // Debug registers are each guest's own (VMX does not switch DR0-DR3).
    let out = run("for g in a b; do vmkcli vm create --name d-$g --kernel /usr/lib/mantle/guests/hostile-debug.elf --memory 8; done; vmkcli vm start 15; vmkcli vm start 16; vmkcli vm wait 15 --timeout 600; vmkcli vm wait 16 --timeout 600");
    assert_eq!(out.matches("debug-exit code 0x10").count(), 2, "debug registers on VMX: {out:?}");
    // Destroy returns every frame on VMX too (VMCS, MSR pages, EPT, RAM)
    // and every kernel object: 20 create/start/wait/destroy cycles after a
    // warm-up (see `HostMemory::leak_since`).
    let one = "id=$(vmkcli vm create --name c --kernel /usr/lib/mantle/guests/hello.bin --memory 16 | awk '{print $3}') && vmkcli vm start $id >/dev/null && vmkcli vm wait $id --timeout 120 >/dev/null && vmkcli vm destroy $id >/dev/null";
    let _ = run(&format!("for i in $(seq 3); do {one} || echo cycle-failed; done"));
    let before = run(HostMemory::COMMAND);
    let out = run(&format!("for i in $(seq 20); do {one} || echo cycle-failed; done"));
    assert!(!out.contains("cycle-failed"), "{out:?}");
    let after = run(HostMemory::COMMAND);
    let (b, a) = (HostMemory::parse(&before).expect("memory figures"), HostMemory::parse(&after).expect("memory figures"));
    eprintln!("VMX: host memory before/after 20 VM cycles: {b:?} / {a:?}");
    assert_eq!(b.leak_since(&a), None, "VM destroy leaked memory on VMX");
    let out = run("echo shell-alive; vmkcli vm list");
    assert!(out.contains("shell-alive"), "{out:?}");
}

/// How long Debian's cloud kernel may take from power-on to its shell
/// marker in a Mantle VM on VMX in Bochs (~65 MIPS for the host and the
/// guest together): see README, "Linux guests" (the measured time).
const LINUX_IN_BOCHS: Duration = Duration::from_secs(3 * 3600);

/// The last non-empty line of the console log (for progress and failures).
fn last_line(c: &Console) -> String {
    c.log().lines().rev().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("").to_string()
}

/// A stock Linux on Intel VT-x: Debian's cloud kernel (the same bzImage as
/// `linux_guest.rs`) with a BusyBox initramfs without modules, both in the
/// ISO's root archive, in a 1-vCPU, 128 MiB Mantle VM in Bochs, to the
/// guest's shell marker and a command at its shell. Ignored: it runs for
/// as long as README's "Linux guests" says; run it on purpose with
/// `cargo test -p tests --test bochs -- --ignored --nocapture linux`
/// (progress on stderr once a minute).
#[test]
#[ignore = "a Linux boot on VMX in Bochs takes tens of minutes: run on purpose (README, Linux guests)"]
fn linux_guest_boots_under_vmx_in_bochs() {
    let guest = linux_guest::prepare().unwrap_or_else(|e| panic!("preparing the Linux guest: {e}"));
    let busybox = image_builder::debian::busybox_static().and_then(|p| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display())));
    let busybox = busybox.unwrap_or_else(|e| panic!("busybox-static: {e}"));
    let dir = tempfile::tempdir().unwrap();
    // The smallest initramfs that reaches a shell: BusyBox and /init.
    let initrd = dir.path().join("initrd.cpio");
    std::fs::write(&initrd, linux_guest::initramfs(&busybox, &[])).unwrap();
    let adds = [format!("{}=/usr/lib/mantle/linux/vmlinuz", guest.kernel.display()), format!("{}=/usr/lib/mantle/linux/initrd.cpio", initrd.display())];
    let adds: Vec<&str> = adds.iter().map(String::as_str).collect();
    let iso = iso("bochs-linux", tests::NO_AGENTS, &adds);
    let step = Duration::from_secs(300);
    let _lock = emulator_lock();
    let b = Bochs::new(iso, dir.path().join("serial.txt"));
    let mut c = b.spawn_console().unwrap_or_else(|e| panic!("cannot start Bochs: {e}"));
    activate_shell(&mut c, Duration::from_secs(900), step);
    check_boot(&c);
    eprintln!("[{:7.1}s] Mantle's shell in Bochs", c.uptime().as_secs_f64());
    let out = c
        .run("vmkcli vm create --name linux --kernel /usr/lib/mantle/linux/vmlinuz --initrd /usr/lib/mantle/linux/initrd.cpio --cmdline console=ttyS0 --memory 128 && vmkcli vm start 1", PROMPT, step)
        .unwrap_or_else(|e| panic!("{e}\n--- serial log ---\n{}", c.log()));
    assert!(out.contains("created VM 1"), "vm create: {out:?}");
    let t0 = Instant::now();
    c.send("vmkcli vm console 1 --follow\n").unwrap();
    // Once a minute: how far the guest got (or that it stopped).
    loop {
        match c.expect(SHELL_MARKER, Duration::from_secs(60)) {
            Ok(_) => break,
            Err(e) => {
                let log = c.log();
                let stopped = log.contains("[detached]");
                if stopped || t0.elapsed() > LINUX_IN_BOCHS || !c.is_running() {
                    panic!("the Linux guest did not reach its shell marker ({e}; stopped: {stopped}) after {:.0} s\n--- serial log ---\n{log}", t0.elapsed().as_secs_f64());
                }
                eprintln!("[{:7.1}s] guest at {:.0} s: {}", c.uptime().as_secs_f64(), t0.elapsed().as_secs_f64(), last_line(&c));
            }
        }
    }
    let boot = t0.elapsed().as_secs_f64();
    eprintln!("Linux on VMX in Bochs: power-on to the shell marker in {boot:.0} s");
    let log = c.log();
    // The guest's own account: its clocksource and CPU count (/init), and
    // what its kernel said about clocks.
    let init_line = log.lines().find(|l| l.contains("mantle-linux: clocksource")).unwrap_or_else(|| panic!("no /init line:\n{log}"));
    for l in log.lines().filter(|l| l.contains("clocksource") || l.contains("tsc:") || l.contains("kvm-clock")) {
        eprintln!("guest: {}", l.trim());
    }
    assert!(init_line.contains("cpus 1") && (init_line.contains("clocksource kvm-clock") || init_line.contains("clocksource tsc")), "{init_line}");
    for bad in ["Kernel panic", "unchecked MSR access", "ACPI Error", "ACPI BIOS Error"] {
        assert!(!log.contains(bad), "the guest's log has {bad:?}:\n{log}");
    }
    // Its shell answers (the marker is computed, so the echo never matches).
    c.send("echo vmx-guest-$((6*7))\n").unwrap();
    c.expect("vmx-guest-42", step).unwrap_or_else(|e| panic!("the guest's shell: {e}\n{}", c.log()));
    c.send("\x1d").unwrap();
    c.expect("[detached]", step).unwrap_or_else(|e| panic!("detach: {e}\n{}", c.log()));
    let info = c.run("vmkcli vm info 1", PROMPT, step).unwrap_or_else(|e| panic!("{e}\n{}", c.log()));
    eprintln!("{info}");
    assert!(info.contains("running"), "{info}");
}
