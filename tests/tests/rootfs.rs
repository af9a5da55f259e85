//! Files added with `iso --add` are in the root archive the kernel reads.

use tests::*;

/// Needs the kernel's root-archive listing (`rootfs: <path> <size> bytes`).
#[test]
fn added_file_is_listed_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.txt");
    let content: Vec<u8> = (0..1234u32).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(&file, &content).unwrap();
    let add = format!("{}=/opt/mantle-test/hello.txt", file.display());
    let b = boot(&qemu_iso(iso("rootfs-add", POWEROFF_CMDLINE, &[&add])));
    b.assert_ready_and_success();
    let listed = b.serial().lines().filter_map(|l| l.split_once("rootfs: ").map(|(_, r)| r)).any(|r| {
        let w: Vec<&str> = r.split_whitespace().collect();
        w.len() >= 3 && w[0].trim_start_matches('/') == "opt/mantle-test/hello.txt" && w[1] == "1234" && w[2] == "bytes"
    });
    if !listed {
        b.fail("no `rootfs: /opt/mantle-test/hello.txt 1234 bytes` line");
    }
}
