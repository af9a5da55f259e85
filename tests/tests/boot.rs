//! The ISO boots under both firmwares, with different CPU counts, CPU
//! models and memory sizes, and reports what it found.

use tests::*;

#[test]
fn seabios_iso_boot_reaches_ready_and_powers_off_with_status_33() {
    let b = boot(&qemu_iso(poweroff_iso()));
    b.assert_contains("Multiboot2 boot");
    b.assert_ready_and_success();
}

#[test]
fn ovmf_uefi_iso_boot_reaches_ready_and_powers_off_with_status_33() {
    let mut q = qemu_iso(poweroff_iso());
    q.uefi = true;
    q.timeout = UEFI_TIMEOUT;
    let b = boot(&q);
    b.assert_contains("Multiboot2 boot");
    b.assert_ready_and_success();
}

#[test]
fn q35_machine_boots() {
    let mut q = qemu_iso(poweroff_iso());
    q.machine = Machine::Q35;
    boot(&q).assert_ready_and_success();
}

fn boot_with_cpus(n: u32) {
    let mut q = qemu_iso(poweroff_iso());
    q.cpus = n;
    let b = boot(&q);
    let r = b.assert_ready_and_success();
    if r.cpus != n {
        b.fail(&format!("booted with -smp {n} but the kernel reports cpus={}", r.cpus));
    }
}

#[test]
fn one_cpu_reports_cpus_1() {
    boot_with_cpus(1);
}

/// Needs SMP bring-up (application processors started through the APIC).
#[test]
fn three_cpus_report_cpus_3() {
    boot_with_cpus(3);
}

fn boot_with_cpu_model(model: &str) -> Booted {
    let mut q = qemu_iso(poweroff_iso());
    q.cpu = model.into();
    let b = boot(&q);
    b.assert_ready_and_success();
    b
}

#[test]
fn cpu_model_qemu64_with_svm_and_npt() {
    boot_with_cpu_model("qemu64,+svm,+npt").assert_contains("| VM backend:              AMD-V, nested paging (2M), ");
}

#[test]
fn cpu_model_max() {
    boot_with_cpu_model("max").assert_contains("| VM backend:              AMD-V, nested paging (2M), ");
}

/// A CPU without hardware virtualization still boots the host, and the
/// status screen says why there are no VMs.
#[test]
fn cpu_without_virtualization_boots_and_says_so() {
    boot_with_cpu_model("qemu64,-svm")
        .assert_contains("Hardware virtualization: none ")
        .assert_contains("| VM backend:              none (no AMD-V (SVM)): no VMs ");
}

/// The kernel reports usable memory: at most what QEMU was given, and at
/// most 64 MiB less (firmware, the legacy hole, ACPI tables, the kernel's
/// own reservations).
fn boot_with_mem(mib: u32) {
    let mut q = qemu_iso(poweroff_iso());
    q.mem_mib = mib;
    let b = boot(&q);
    let r = b.assert_ready_and_success();
    let m = mib as u64;
    if !(m - 64..=m).contains(&r.mem_mib) {
        b.fail(&format!("-m {mib}: kernel reports mem={}MiB, expected {}..={m}", r.mem_mib, m - 64));
    }
}

#[test]
fn memory_1000_mib() {
    boot_with_mem(1000);
}

/// Above 4 GiB: QEMU's pc machine splits RAM around the PCI hole.
#[test]
fn memory_4500_mib_split_around_the_pci_hole() {
    boot_with_mem(4500);
}
