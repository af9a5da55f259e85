//! PCI enumeration finds the virtio devices QEMU was given.

use tests::*;

/// Needs PCI enumeration in the kernel (lines like
/// `pci 0000:00:03.0 1af4:1000 class 02.00.00 network controller`).
#[test]
fn virtio_net_and_blk_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    // A small raw disk for virtio-blk; odd size on purpose.
    std::fs::File::create(&disk).unwrap().set_len(9 * 1024 * 1024).unwrap();
    let mut q = qemu_iso(poweroff_iso());
    q.extra = ["-device", "virtio-net-pci,netdev=n0", "-netdev", "user,id=n0"]
        .into_iter()
        .map(String::from)
        .chain(["-drive".into(), format!("file={},format=raw,if=none,id=d0", disk.display())])
        .chain(["-device".into(), "virtio-blk-pci,drive=d0".into()])
        .collect();
    let b = boot(&q);
    let r = b.assert_ready_and_success();
    b.assert_contains("1af4:1000").assert_contains("1af4:1001");
    if r.pci == 0 {
        b.fail("the ready line reports pci=0 with PCI devices present");
    }
}
