//! Runs the conformance program on the host's Linux kernel: Linux semantics are the
//! reference, so every check must pass here.

use std::process::Command;

#[test]
fn conformance_passes_on_host_linux() {
    let out = Command::new(env!("CARGO_BIN_EXE_conformance")).output().expect("run conformance");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(failures.is_empty(), "failing checks:\n{}", failures.join("\n"));

    let summary = stdout.lines().last().unwrap_or_default();
    let (passed, failed) = parse_summary(summary).unwrap_or_else(|| panic!("bad summary line {summary:?}"));
    assert_eq!(failed, 0, "{summary}");
    assert!(passed >= 60, "only {passed} checks passed");
    assert_eq!(passed, stdout.lines().filter(|l| l.starts_with("PASS ")).count(), "summary disagrees with PASS lines");
    assert!(out.status.success(), "exit status {:?}", out.status);
}

#[test]
fn conformance_child_mode_exit_code() {
    let st = Command::new(env!("CARGO_BIN_EXE_conformance")).args(["exit", "5"]).status().unwrap();
    assert_eq!(st.code(), Some(5));
}

/// Parses "N passed, M failed".
fn parse_summary(line: &str) -> Option<(usize, usize)> {
    let (p, f) = line.split_once(" passed, ")?;
    Some((p.parse().ok()?, f.strip_suffix(" failed")?.parse().ok()?))
}

/// The two-process socket exchange (UDP echo, AF_UNIX with SCM_RIGHTS)
/// that the tokio image test runs on Mantle passes on Linux too.
#[test]
fn ipcecho_passes_on_host_linux() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipcecho")).output().expect("run ipcecho");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("ipcecho: ok"), "{stdout}");
}
