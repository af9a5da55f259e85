//! The in-kernel test suite runs and passes.

use tests::*;

/// Needs the in-kernel test runner (`test=<selector>`).
#[test]
fn in_kernel_tests_all_pass() {
    let b = boot(&qemu_iso(iso("ktest", "test=all debug_exit after_boot=poweroff", &[])));
    let summary = b
        .serial()
        .lines()
        .find_map(|l| l.split_once("ktest: ").map(|(_, r)| r).filter(|r| r.contains(" passed, ")))
        .unwrap_or_else(|| b.fail("no `ktest: N passed, M failed` summary"));
    let nums: Vec<u32> = summary.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    match nums[..] {
        [passed, 0] if passed > 0 => {}
        _ => b.fail(&format!("in-kernel tests did not all pass: {summary:?}")),
    }
    b.assert_lacks("FAILED");
    b.assert_exit(EXIT_SUCCESS);
    // The scheduler's figures (measured by the kernel's own accounting on
    // one CPU; the ktests assert the bounds).
    for l in b.serial().lines().filter(|l| l.contains("ktest: sched:") || l.contains("timer rates")) {
        eprintln!("{}", l.trim());
    }
}

/// The same suite on three CPUs: worlds, user worlds and the scheduler
/// mechanism with APs running.
#[test]
fn in_kernel_tests_pass_on_three_cpus() {
    let mut q = qemu_iso(iso("ktest", "test=all debug_exit after_boot=poweroff", &[]));
    q.cpus = 3;
    let b = boot(&q);
    b.assert_contains("ktest: ");
    b.assert_lacks("FAILED");
    b.assert_exit(EXIT_SUCCESS);
}
