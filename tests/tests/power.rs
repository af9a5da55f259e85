//! Power-off through ACPI, told apart from reboots and triple faults
//! (all of which can end QEMU with status 0).

use tests::*;

/// `after_boot=poweroff` without debug-exit: QEMU exits 0 by itself. Run
/// without -no-reboot, so a reset would boot again instead of exiting, and
/// with the cpu_reset log, which records any triple fault.
#[test]
fn acpi_poweroff_without_debug_exit_exits_0_without_triple_fault() {
    let log = tempfile::tempdir().unwrap();
    let mut q = qemu_iso(iso("acpi-poweroff", "after_boot=poweroff", &[]));
    q.debug_exit = false;
    q.no_reboot = false;
    q.cpu_reset_log = Some(log.path().join("cpu_reset.log"));
    let b = boot(&q);
    b.assert_exit(0);
    b.ready();
    if b.0.triple_fault {
        b.fail("QEMU exited 0 but the cpu_reset log shows a triple fault");
    }
    if b.0.cpu_reset_log.is_empty() {
        b.fail("the -d cpu_reset log is empty: the triple-fault check would prove nothing");
    }
    let n = b.serial().matches("mantle: ready").count();
    if n != 1 {
        b.fail(&format!("booted {n} times: a reset happened before the power-off"));
    }
}

/// Negative control for the detector: a boot sector that triple-faults
/// (real-mode IDT limit 0, then int3) also makes QEMU exit 0 under
/// -no-reboot, and the cpu_reset log must say so.
#[test]
fn triple_fault_is_detected_although_qemu_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut sector = vec![
        0xfa, // cli
        0x0f, 0x01, 0x1e, 0x0a, 0x7c, // lidt [0x7c0a]
        0xcc, // int3: vector beyond the limit -> #GP -> #DF -> triple fault
        0xf4, // hlt (not reached)
        0xeb, 0xfe, // jmp $
        0, 0, 0, 0, 0, 0, // IDT pointer at 0x7c0a: limit 0, base 0
    ];
    sector.resize(510, 0);
    sector.extend_from_slice(&[0x55, 0xaa]);
    sector.resize(1 << 20, 0);
    let disk = dir.path().join("triple-fault.img");
    std::fs::write(&disk, sector).unwrap();
    let mut q = Qemu::new(Boot::Disk(disk));
    q.cpus = 1;
    q.mem_mib = 100;
    q.no_reboot = true;
    q.cpu_reset_log = Some(dir.path().join("cpu_reset.log"));
    q.timeout = BIOS_TIMEOUT;
    let b = boot(&q);
    b.assert_exit(0);
    if !b.0.triple_fault {
        b.fail(&format!("triple fault not detected; cpu_reset log:\n{}", b.0.cpu_reset_log));
    }
}

/// Negative control: `after_boot=reboot` without -no-reboot boots again
/// rather than ending QEMU, so a reboot cannot pass for a power-off.
#[test]
fn reboot_boots_again_instead_of_exiting() {
    let mut q = qemu_iso(iso("reboot", "after_boot=reboot", &[]));
    q.debug_exit = false;
    q.no_reboot = false;
    q.stop_when = Some("mantle: ready".into());
    q.stop_when_count = 2;
    let b = boot(&q);
    if b.0.outcome != Outcome::Stopped {
        b.fail(&format!("expected a second boot, got {:?}", b.0.outcome));
    }
    b.assert_contains("mantle: rebooting");
}
