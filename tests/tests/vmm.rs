//! Virtual machines on the real image (QEMU's SVM with nested paging):
//! `vmkcli` at the BusyBox prompt defines, starts and inspects guests.

use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(90);

fn shell(name: &str, cpu: &str) -> (EmulatorLock, Console) {
    shell_on(name, cpu, 2)
}

fn shell_on(name: &str, cpu: &str, cpus: u32) -> (EmulatorLock, Console) {
    let lock = emulator_lock();
    let mut q = qemu_iso(iso(name, tests::NO_AGENTS, &[]));
    q.cpus = cpus;
    q.cpu = cpu.into();
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

fn guests_on(cpu: &str) {
    let (_lock, mut c) = shell(&format!("vmm-{}", cpu.split(',').next().unwrap()), cpu);
    // A Multiboot guest prints on its serial port and reports through the
    // debug-exit port; its console is readable with `vmkcli vm console`.
    let out = run(&mut c, "vmkcli vm create --name hello --kernel /usr/lib/mantle/guests/hello.bin --memory 16");
    check(&c, out.contains("created VM 1"), &format!("create: {out:?}"));
    let out = run(&mut c, "vmkcli vm start 1 && vmkcli vm wait 1 --timeout 60 && vmkcli vm console 1 && vmkcli vm info 1");
    check(&c, out.contains("hello from a Mantle guest"), &format!("guest console: {out:?}"));
    check(&c, out.contains("debug-exit code 0x10"), &format!("guest exit code: {out:?}"));
    // Device memory through nested-page faults: the LAPIC page, decoded
    // and emulated by the VMM (a read, an immediate store, a read back).
    let out = run(&mut c, "vmkcli vm create --name apic --kernel /usr/lib/mantle/guests/lapic-mmio.bin --memory 8 && vmkcli vm start 2 && vmkcli vm wait 2 && vmkcli vm destroy 2");
    check(&c, out.contains("debug-exit code 0x2014"), &format!("LAPIC MMIO: {out:?}"));
    // A triple fault stops only that VM.
    let out = run(&mut c, "vmkcli vm create --name tf --kernel /usr/lib/mantle/guests/triple-fault.bin --memory 8 && vmkcli vm start 3 && vmkcli vm wait 3");
    check(&c, out.contains("triple fault"), &format!("triple fault: {out:?}"));
    // A guest spinning with interrupts off is preempted: the shell answers,
    // and a hard power-off stops it.
    let out = run(&mut c, "vmkcli vm create --name spin --kernel /usr/lib/mantle/guests/spin.bin --memory 8 && vmkcli vm start 4 && sleep 1 && echo shell-alive && vmkcli vm stop 4 && vmkcli vm wait 4");
    check(&c, out.contains("shell-alive") && out.contains("powered off"), &format!("spinning guest: {out:?}"));
    // Bad input gets a clear error and creates nothing.
    let out = run(&mut c, "vmkcli vm create --name bad --kernel /etc/passwd --memory 8; echo rc=$?; vmkcli vm list");
    check(&c, out.contains("not a loadable Multiboot image") && out.contains("rc=1") && !out.contains(" bad "), &format!("bad kernel: {out:?}"));
    // Destroy returns every frame: free memory before and after 10 cycles.
    let cycle = "vmkcli vm create --name c --kernel /usr/lib/mantle/guests/hello.bin --memory 16 >/dev/null && vmkcli vm start $(vmkcli vm list | tail -1 | awk '{print $1}') >/dev/null";
    let _ = run(&mut c, "for id in 1 3 4; do vmkcli vm destroy $id; done");
    // Three guests that keep a value in XMM5 across 20000 exits each, all
    // at once on two CPUs: guest extended state survives exits and vCPU
    // switches.
    let out = run(&mut c, "for g in a b c; do vmkcli vm create --name fpu-$g --kernel /usr/lib/mantle/guests/fpu-$g.bin --memory 8; done; for id in 5 6 7; do vmkcli vm start $id; done; for id in 5 6 7; do vmkcli vm wait $id --timeout 120; done; for id in 5 6 7; do vmkcli vm destroy $id; done");
    check(&c, out.matches("debug-exit code 0x10").count() == 3, &format!("guest FPU state: {out:?}"));
    let one = format!("{cycle}; id=$(vmkcli vm list | tail -1 | awk '{{print $1}}'); vmkcli vm wait $id >/dev/null; vmkcli vm destroy $id >/dev/null");
    // Warm-up cycles first; then neither frames nor kernel heap objects may
    // stay behind (`HostMemory::leak_since`: the heap itself grows in 4 MiB
    // steps and keeps them, which is not a leak). One frame lost per cycle
    // would show as 80 kB over the 20 measured cycles.
    for _ in 0..3 {
        run(&mut c, &one);
    }
    let before = run(&mut c, HostMemory::COMMAND);
    for _ in 0..20 {
        run(&mut c, &one);
    }
    let after = run(&mut c, HostMemory::COMMAND);
    let (b, a) = (HostMemory::parse(&before), HostMemory::parse(&after));
    eprintln!("host memory before/after 20 VM cycles: {b:?} / {a:?}");
    let (Some(b), Some(a)) = (b, a) else { panic!("no memory figures: {before:?} {after:?}") };
    if let Some(leak) = b.leak_since(&a) {
        check(&c, false, &format!("VM destroy leaked memory: {leak}"));
    }
}

/// The basics every run checks: a guest's console and exit code, device
/// memory (LAPIC MMIO), a triple fault, and a bad kernel refused.
#[test]
fn guest_basics_on_svm() {
    let (_lock, mut c) = shell("vmm-basics", "qemu64,+svm,+npt");
    let out = run(&mut c, "vmkcli vm create --name hello --kernel /usr/lib/mantle/guests/hello.bin --memory 16 && vmkcli vm start 1 && vmkcli vm wait 1 --timeout 60 && vmkcli vm console 1");
    check(&c, out.contains("hello from a Mantle guest") && out.contains("debug-exit code 0x10"), &format!("hello guest: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name apic --kernel /usr/lib/mantle/guests/lapic-mmio.bin --memory 8 && vmkcli vm start 2 && vmkcli vm wait 2");
    check(&c, out.contains("debug-exit code 0x2014"), &format!("LAPIC MMIO: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name tf --kernel /usr/lib/mantle/guests/triple-fault.bin --memory 8 && vmkcli vm start 3 && vmkcli vm wait 3; vmkcli vm list");
    check(&c, out.contains("triple fault") && out.contains("hello"), &format!("triple fault: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name bad --kernel /etc/passwd --memory 8; echo rc=$?");
    check(&c, out.contains("not a loadable Multiboot image") && out.contains("rc=1"), &format!("bad kernel: {out:?}"));
    // Flat binaries: the hello guest's bytes entered in protected mode past
    // its header, and a real-mode binary at 0x7c00.
    let out = run(&mut c, "vmkcli vm create --name flat --kernel /usr/lib/mantle/guests/hello.bin --memory 8 --format flat --load-address 0x100000 --entry 0x100020 && vmkcli vm start 4 && vmkcli vm wait 4 && vmkcli vm console 4");
    check(&c, out.contains("hello from a Mantle guest") && out.contains("debug-exit code 0x10"), &format!("flat protected-mode guest: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name real --kernel /usr/lib/mantle/guests/real-mode.flat --memory 8 --format flat --load-address 0x7c00 --entry-mode real && vmkcli vm start 5 && vmkcli vm wait 5");
    check(&c, out.contains("debug-exit code 0x42"), &format!("flat real-mode guest: {out:?}"));
}

/// The CPU time a VM has used so far, from `vmkcli vm info` (the kernel's
/// accounting of its vCPU worlds).
fn run_time(c: &mut Console, id: u32) -> f64 {
    let out = run(c, &format!("vmkcli vm info {id}"));
    let t = out.split("run time ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<f64>().ok());
    t.unwrap_or_else(|| panic!("no run time in {out:?}\n--- serial log ---\n{}", c.log()))
}

/// Multi-vCPU VMs: the guest starts its second vCPU with INIT + SIPI; both
/// run (the kernel accounts CPU time to each); reset, pause and resume;
/// statistics by exit reason.
#[test]
fn smp_guest_and_lifecycle_on_svm() {
    let (_lock, mut c) = shell("vmm-smp", "qemu64,+svm,+npt");
    let out = run(&mut c, "vmkcli vm create --name smp --kernel /usr/lib/mantle/guests/smp-spin.bin --memory 16 --vcpus 2 && vmkcli vm start 1 && sleep 2 && vmkcli vm info 1");
    let vcpu_secs = |out: &str, i: usize| -> f64 {
        let key = format!("vcpu{i} ");
        out.split(&key).nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(-1.0)
    };
    check(&c, out.contains("running") && out.contains("vCPUs 2"), &format!("smp VM: {out:?}"));
    check(&c, vcpu_secs(&out, 0) > 0.2 && vcpu_secs(&out, 1) > 0.2, &format!("both vCPUs should have run (the AP started by INIT/SIPI): {out:?}"));
    check(&c, out.contains("mmio "), &format!("ICR writes are MMIO exits: {out:?}"));
    // Pause holds every vCPU: no CPU time accrues while paused.
    let _ = run(&mut c, "vmkcli vm pause 1 && sleep 1");
    let t0 = run_time(&mut c, 1);
    let out = run(&mut c, "sleep 1; vmkcli vm list");
    let t1 = run_time(&mut c, 1);
    check(&c, out.contains("paused") && t1 - t0 < 0.05, &format!("paused VM ran {t0} -> {t1}: {out:?}"));
    let out = run(&mut c, "vmkcli vm resume 1 && sleep 1 && vmkcli vm list");
    let t2 = run_time(&mut c, 1);
    check(&c, out.contains("running") && t2 - t1 > 0.3, &format!("resumed VM ran {t1} -> {t2}: {out:?}"));
    let out = run(&mut c, "vmkcli vm stop 1 && vmkcli vm wait 1 && vmkcli vm destroy 1");
    check(&c, out.contains("powered off") && out.contains("destroyed"), &format!("stop: {out:?}"));
    // Reset restarts the guest from its initial state: the hello guest
    // prints its line again.
    let out = run(&mut c, "vmkcli vm create --name r --kernel /usr/lib/mantle/guests/spin.bin --memory 8 && vmkcli vm start 2 && sleep 1 && vmkcli vm reset 2 && vmkcli vm list && vmkcli vm stop 2 && vmkcli vm wait 2");
    check(&c, out.contains("VM 2 reset") && out.contains("running") && out.contains("powered off"), &format!("reset: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name h --kernel /usr/lib/mantle/guests/hello.bin --memory 8 && vmkcli vm start 3 && vmkcli vm wait 3 && vmkcli vm start 3 && vmkcli vm wait 3 && vmkcli vm console 3 && vmkcli vm info 3");
    check(&c, out.matches("hello from a Mantle guest").count() == 1 && out.matches("debug-exit code 0x10").count() >= 2, &format!("power on again: {out:?}"));
    check(&c, out.contains("exits by reason: io "), &format!("stats: {out:?}"));
    // Bad requests: clear errors, nothing changes.
    let out = run(&mut c, "vmkcli vm pause 3; echo rc=$?; vmkcli vm resume 3; echo rc=$?; vmkcli vm reset 99; echo rc=$?; vmkcli vm create --name x --kernel /usr/lib/mantle/guests/hello.bin --vcpus 17; echo rc=$?");
    check(&c, out.matches("rc=1").count() == 4, &format!("bad requests: {out:?}"));
}

/// On a host with one CPU, a 1-vCPU VM with shares 2 and a 2-vCPU VM with
/// shares 1, all vCPUs CPU-bound, get CPU time 2:1 (the kernel's own
/// accounting over 3 s). Tolerance ±15%, as the issue states: TCG timing
/// on a shared 2-core host is noisy and the shell itself takes a little.
#[test]
fn vm_shares_on_one_host_cpu() {
    let (_lock, mut c) = shell_on("vmm-shares", "qemu64,+svm,+npt", 1);
    let out = run(&mut c, "vmkcli vm create --name one --kernel /usr/lib/mantle/guests/spin.bin --memory 8 --shares 2000 && vmkcli vm create --name two --kernel /usr/lib/mantle/guests/smp-spin.bin --memory 8 --vcpus 2 --shares 1000 && vmkcli vm start 1 && vmkcli vm start 2 && sleep 1");
    check(&c, out.contains("VM 2 powered on"), &format!("start: {out:?}"));
    let (a0, b0) = (run_time(&mut c, 1), run_time(&mut c, 2));
    let _ = run(&mut c, "sleep 3");
    let (a1, b1) = (run_time(&mut c, 1), run_time(&mut c, 2));
    let out = run(&mut c, "vmkcli vm info 2");
    let ratio = (a1 - a0) / (b1 - b0);
    eprintln!("1-vCPU VM (shares 2): {:.3} s; 2-vCPU VM (shares 1): {:.3} s; ratio {ratio:.3}", a1 - a0, b1 - b0);
    check(&c, (1.7..=2.3).contains(&ratio), &format!("ratio {ratio:.3} not within 15% of 2:1 ({a0}->{a1}, {b0}->{b1})"));
    let v1 = out.split("vcpu1 ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0);
    check(&c, v1 > 0.3 * b1, &format!("the 2-vCPU VM's second vCPU should get about half its time: {out:?}"));
}

/// Hostile guests (image-builder/guests/hostile.S) hammer every port,
/// every MSR in four ranges, memory where there is none and the LAPIC in
/// odd ways, and try the instructions of the hardware under them (CLGI,
/// VMRUN, VMXON, RDPMC, INVD, ...), all at once, next to a well-behaved guest: each survives
/// (debug-exit 0x10: the VMM gave it PC behaviour, not a crash), the
/// bystander keeps running, the shell answers, and the host keeps going.
#[test]
fn hostile_guests_hurt_only_themselves() {
    let (_lock, mut c) = shell("vmm-hostile", "qemu64,+svm,+npt");
    let out = run(&mut c, "vmkcli vm create --name bystander --kernel /usr/lib/mantle/guests/spin.bin --memory 8 && vmkcli vm start 1");
    check(&c, out.contains("VM 1 powered on"), &format!("bystander: {out:?}"));
    let mut ids = Vec::new();
    for (i, mode) in ["ports", "msrs", "memory", "apic", "insns"].iter().enumerate() {
        let id = i + 2;
        let out = run(&mut c, &format!("vmkcli vm create --name h-{mode} --kernel /usr/lib/mantle/guests/hostile-{mode}.elf --memory 16 && vmkcli vm start {id}"));
        check(&c, out.contains(&format!("VM {id} powered on")), &format!("hostile {mode}: {out:?}"));
        ids.push((id, *mode));
    }
    let out = run(&mut c, "echo shell-alive");
    check(&c, out.contains("shell-alive"), "the shell should answer while hostile guests run");
    for (id, mode) in &ids {
        let out = run(&mut c, &format!("vmkcli vm wait {id} --timeout 240; vmkcli vm info {id}"));
        check(&c, out.contains("debug-exit code 0x10"), &format!("hostile guest {mode} should survive its own abuse: {out:?}"));
    }
    let t0 = run_time(&mut c, 1);
    let out = run(&mut c, "sleep 1; vmkcli vm list");
    let t1 = run_time(&mut c, 1);
    check(&c, out.contains("bystander") && t1 > t0, &format!("the bystander VM should still run: {out:?} ({t0} -> {t1})"));
    let out = run(&mut c, "vmkcli vm stop 1 && vmkcli vm wait 1 && cat /proc/uptime");
    check(&c, out.contains("powered off"), &format!("stop bystander: {out:?}"));
}

// The full sequences: concurrent FPU guests, a spinning guest, 20
// create/start/destroy cycles with a leak check. (They once crashed the host
// now and then under QEMU TCG on SMP: CPU 0's SVM state raced with x87
// restores on other CPUs inside QEMU; see `hv::guest_cpus`. The churn stress
// in tests/churn.rs reproduces that load for hundreds of cycles.) The ~4 MB
// drop once seen in the leak check was one heap-growth step inside too short
// a warm-up, not a leak: free memory stayed equal over the next 20 cycles.
#[test]
fn guests_run_on_svm_qemu64() {
    guests_on("qemu64,+svm,+npt");
}

#[test]
fn guests_run_on_svm_max() {
    guests_on("max");
}

/// Debug registers are each guest's own: neither SVM nor VMX switches
/// DR0-DR3, so the VMM keeps them in software. Three guests write their
/// own values and check them across 20000 exits while sharing host CPU 1
/// (QEMU TCG keeps vCPUs off CPU 0); each, and a fourth started after
/// them, first finds the reset values, not what another VM left.
#[test]
fn debug_registers_stay_private() {
    let (_lock, mut c) = shell("vmm-debug-regs", "qemu64,+svm,+npt");
    let out = run(&mut c, "for g in a b c; do vmkcli vm create --name d-$g --kernel /usr/lib/mantle/guests/hostile-debug.elf --memory 8; done; for id in 1 2 3; do vmkcli vm start $id; done; for id in 1 2 3; do vmkcli vm wait $id --timeout 240; done");
    check(&c, out.matches("debug-exit code 0x10").count() == 3, &format!("every guest should find reset values and keep its own DRs: {out:?}"));
    let out = run(&mut c, "vmkcli vm create --name d-d --kernel /usr/lib/mantle/guests/hostile-debug.elf --memory 8 && vmkcli vm start 4 && vmkcli vm wait 4 --timeout 240");
    check(&c, out.contains("debug-exit code 0x10"), &format!("a later guest should not see earlier guests' DRs: {out:?}"));
}

/// Guests that try to turn on CR4.OSXSAVE behind CPUID's back (which says
/// no XSAVE/AVX) on a host that has AVX (`max`): the CPU model refuses it
/// with #GP on SVM as VMX does (the guests report 0x16), so none reaches
/// AVX state the host's XCR0 would expose (three guests, two host CPUs),
/// and the host carries on.
#[test]
fn guest_extended_state_stays_private_on_max() {
    let (_lock, mut c) = shell("vmm-xstate", "max");
    let out = run(&mut c, "for g in a b c; do vmkcli vm create --name x-$g --kernel /usr/lib/mantle/guests/hostile-xstate-$g.elf --memory 8; done; for id in 1 2 3; do vmkcli vm start $id; done; for id in 1 2 3; do vmkcli vm wait $id --timeout 240; done");
    check(&c, out.matches("debug-exit code 0x16").count() == 3, &format!("every guest should find CR4.OSXSAVE refused: {out:?}"));
    let out = run(&mut c, "echo shell-alive");
    check(&c, out.contains("shell-alive"), "the shell should answer");
}
