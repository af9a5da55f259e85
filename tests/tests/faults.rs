//! Injected faults reach the exception/panic reporters, which print a
//! register dump and backtrace and report failure (status 35).

use tests::*;

#[test]
fn injected_page_fault_is_reported_with_cr2_and_backtrace() {
    let b = boot(&qemu_iso(iso("pagefault", "inject_fault=pagefault debug_exit", &[])));
    b.assert_exit(EXIT_FAILURE);
    b.assert_contains("CPU EXCEPTION")
        .assert_contains("page fault")
        .assert_contains("CR2 0x00000deadbeef000")
        .assert_contains("backtrace:")
        .assert_contains("mantle: halted:");
}

/// The same path through PVH (`-kernel`), for #UD.
#[test]
fn injected_invalid_opcode_is_reported() {
    let b = boot(&qemu_pvh("inject_fault=ud debug_exit"));
    b.assert_exit(EXIT_FAILURE);
    b.assert_contains("CPU EXCEPTION").assert_contains("invalid opcode").assert_contains("backtrace:");
}

#[test]
fn injected_panic_is_reported() {
    let b = boot(&qemu_pvh("inject_fault=panic debug_exit"));
    b.assert_exit(EXIT_FAILURE);
    b.assert_contains("KERNEL PANIC").assert_contains("injected panic").assert_contains("backtrace:");
}
