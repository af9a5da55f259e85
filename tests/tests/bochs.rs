//! The ISO boots in Bochs on a VMX CPU (Skylake-X), the only emulator
//! here with VMX.

use std::time::Duration;

use image_builder::bochs::Bochs;
use tests::*;

#[test]
fn bochs_vmx_cpu_boots_iso_to_ready() {
    let iso = iso("bochs", "", &[]);
    let dir = tempfile::tempdir().unwrap();
    let _lock = emulator_lock();
    let b = Bochs::new(iso, dir.path().join("serial.txt"));
    let mut run = b.spawn().unwrap_or_else(|e| panic!("cannot start Bochs: {e}"));
    // ~3 s to the first line at 65 MIPS; minutes of slack for a busy host.
    let ok = run.wait_for("mantle: ready", Duration::from_secs(300));
    run.kill();
    let serial = run.serial();
    if !ok {
        let log = std::fs::read_to_string(&run.log_file).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("Bochs never printed `mantle: ready`\n--- serial ---\n{serial}\n--- bochs log (tail) ---\n{}", tail.join("\n"));
    }
    assert!(serial.contains("Multiboot2 boot"), "serial:\n{serial}");
    let r = parse_ready(&serial).unwrap_or_else(|| panic!("malformed ready line\n{serial}"));
    assert_eq!(r.cpus, 1, "serial:\n{serial}");
}
