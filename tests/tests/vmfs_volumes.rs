//! FAT datastores through the VMkernel (issue 10): an image made by
//! `image-builder datastore new` is attached as virtio-blk; BusyBox
//! writes, copies, renames and deletes files and directories on
//! `/vmfs/volumes/datastore1`, `df` shows its size, `/proc/mounts` and
//! `/proc/diskstats` list it; a file written with `dd` from
//! `/dev/urandom` has the same sha256 after `poweroff` and a fresh boot;
//! then the host reads it with mtools and `fsck.fat -n` finds the
//! partition clean. A second disk made on the host (`mkfs.fat` on the
//! whole disk, nested directories and long names by mtools) mounts beside
//! it and reads correctly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(300);
const IMAGE_BYTES: u64 = 512 << 20;
/// The random file. (Issue 10 asks for 256 MiB; under TCG on a loaded
/// 2-core machine this size keeps the test within the suite's budget.)
const RANDOM_MIB: u32 = 16;
const PARTITION_OFFSET: u64 = 1 << 20;

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

fn tool(name: &str, package: &str) -> PathBuf {
    ["/usr/bin", "/usr/sbin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: install {package} (.ci/run does)"))
}

fn sha256_of(text: &str) -> Option<String> {
    text.split_whitespace().find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit())).map(String::from)
}

fn boot_with(imgs: &[&Path]) -> Console {
    let mut q = qemu_iso(iso("vmfs-volumes", "", &[]));
    q.debug_exit = false;
    for (i, img) in imgs.iter().enumerate() {
        q.extra.extend([
            "-drive".into(),
            format!("file={},format=raw,if=none,id=ds{i},cache=writeback", img.display()),
            "-device".into(),
            format!("virtio-blk-pci,drive=ds{i}"),
        ]);
    }
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(180), STEP);
    c
}

fn power_off(mut c: Console) -> String {
    // `-f`: Mantle's init does not take BusyBox's SIGUSR2; BusyBox syncs
    // and calls reboot(2), where the kernel unmounts the datastores.
    let _ = c.send("poweroff -f\n");
    let status = c.wait_exit(Duration::from_secs(120));
    let log = c.log();
    assert!(status.is_some(), "QEMU did not exit after poweroff\n--- serial log ---\n{log}");
    assert!(log.contains("storage: datastore1 ("), "the datastore was not unmounted at poweroff\n{log}");
    // Requests completed by interrupt (the waiting world blocked).
    let irqs: Option<u64> = log
        .split("storage: mpx.vmhba0:C0:T0:L0 took ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    assert!(irqs.is_some_and(|n| n > 0), "no completion interrupts counted\n{log}");
    log
}

#[test]
fn virtio_blk_datastore_survives_poweroff_and_is_clean_for_the_host() {
    let mcopy = tool("mcopy", "mtools");
    let fsck = tool("fsck.fat", "dosfstools");
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("datastore1.img");
    image_builder::datastore::create(&img, IMAGE_BYTES, "datastore1").expect("image-builder datastore new");

    // A second disk made on the host: mkfs.fat on the whole disk (no
    // partition table), nested directories and long names put by mtools.
    let host_img = dir.path().join("hostmade.img");
    std::fs::File::create(&host_img).unwrap().set_len(64 << 20).unwrap();
    let mkfs = tool("mkfs.fat", "dosfstools");
    assert!(Command::new(&mkfs).args(["-n", "HOSTMADE"]).arg(&host_img).output().unwrap().status.success(), "mkfs.fat");
    let hspec = host_img.display().to_string();
    let long_file = dir.path().join("A long file name, with spaces.txt");
    std::fs::write(&long_file, "made on the host\n").unwrap();
    for args in [
        vec!["mmd".to_string(), "-i".into(), hspec.clone(), "::/Nested Directory".into()],
        vec!["mmd".into(), "-i".into(), hspec.clone(), "::/Nested Directory/Second Level".into()],
        vec!["mcopy".into(), "-i".into(), hspec.clone(), long_file.display().to_string(), "::/Nested Directory/Second Level/".into()],
    ] {
        let st = Command::new(tool(&args[0], "mtools")).env("MTOOLS_SKIP_CHECK", "1").args(&args[1..]).status().unwrap();
        assert!(st.success(), "{args:?}");
    }

    let _lock = emulator_lock();
    let mut c = boot_with(&[&img, &host_img]);
    // Two datastores at once; the host-made one reads correctly.
    let nested = run(&mut c, "cat '/vmfs/volumes/HOSTMADE/Nested Directory/Second Level/A long file name, with spaces.txt'; ls /vmfs/volumes/");
    check(&c, nested.contains("made on the host") && nested.contains("datastore1") && nested.contains("HOSTMADE"), &format!("the host-made datastore:\n{nested}"));
    check(&c, c.log().contains("storage: mpx.vmhba0:C0:T0:L0: virtio-blk at "), "the disk is found");
    check(&c, c.log().contains("completions by MSI-X vector"), "completions come by MSI-X");
    check(&c, c.log().contains("storage: datastore datastore1 at /vmfs/volumes/"), "the datastore is mounted");
    check(&c, !c.log().contains("journal unavailable"), "the atomic-replace journal is usable");

    let mounts = run(&mut c, "cat /proc/mounts");
    check(&c, mounts.lines().any(|l| l.contains("/vmfs/volumes/") && l.contains(" vfat ")), &format!("/proc/mounts:\n{mounts}"));
    // df: the partition is 511 MiB less FAT overhead: well above 480 MiB.
    let df = run(&mut c, "df -k /vmfs/volumes/datastore1/");
    // (BusyBox wraps the long device name onto a line of its own.)
    let total_kb: Option<u64> =
        df.split("Mounted on").nth(1).and_then(|rest| rest.split_whitespace().find_map(|w| w.parse().ok()));
    check(&c, total_kb.is_some_and(|kb| (480 << 10..=512 << 10).contains(&kb)), &format!("df size:\n{df}"));

    let ops = run(
        &mut c,
        "cd /vmfs/volumes/datastore1 && mkdir -p vms/web01 && echo 'hello datastore' > vms/web01/web01.vmx \
         && cp vms/web01/web01.vmx vms/web01/copy.vmx && mv vms/web01/copy.vmx vms/renamed.vmx \
         && mkdir scratch && echo gone > scratch/tmp.txt && rm scratch/tmp.txt && rmdir scratch \
         && echo 'Long File Name.Text' > 'Long File Name.Text' && ls -R; echo ops=$?",
    );
    check(&c, ops.contains("ops=0"), &format!("file operations failed:\n{ops}"));
    check(&c, ops.contains("renamed.vmx") && ops.contains("web01.vmx") && !ops.contains("copy.vmx") && !ops.contains("scratch"), &format!("ls -R:\n{ops}"));
    let cat = run(&mut c, "cat /vmfs/volumes/datastore1/vms/renamed.vmx");
    check(&c, cat.contains("hello datastore"), &format!("copied file:\n{cat}"));

    let dd = run(&mut c, &format!("dd if=/dev/urandom of=/vmfs/volumes/datastore1/random.bin bs=1M count={RANDOM_MIB}; echo dd=$?"));
    check(&c, dd.contains("dd=0"), &format!("dd:\n{dd}"));
    let sum1 = run(&mut c, "sha256sum /vmfs/volumes/datastore1/random.bin");
    let sum1 = sha256_of(&sum1).unwrap_or_else(|| panic!("sha256sum output: {sum1}"));
    let ls = run(&mut c, "ls -l /vmfs/volumes/datastore1/random.bin");
    check(&c, ls.contains(&format!("{}", RANDOM_MIB << 20)), &format!("size of random.bin:\n{ls}"));
    let stats = run(&mut c, "cat /proc/diskstats");
    let line = stats.lines().find(|l| l.contains("mpx.vmhba0:C0:T0:L0:1")).map(String::from);
    let sectors_written: Option<u64> = line.as_ref().and_then(|l| l.split_whitespace().nth(9)).and_then(|v| v.parse().ok());
    check(&c, sectors_written.is_some_and(|s| s >= (RANDOM_MIB as u64) << 11), &format!("/proc/diskstats:\n{stats}"));
    power_off(c);

    // A fresh boot from the same image.
    let mut c = boot_with(&[&img]);
    let sum2 = run(&mut c, "sha256sum /vmfs/volumes/datastore1/random.bin");
    check(&c, sha256_of(&sum2).as_deref() == Some(sum1.as_str()), &format!("after reboot: {sum2}, before: {sum1}"));
    let cat = run(&mut c, "cat /vmfs/volumes/datastore1/vms/web01/web01.vmx");
    check(&c, cat.contains("hello datastore"), &format!("after reboot:\n{cat}"));
    power_off(c);

    // The host: mtools reads the same bytes, fsck.fat finds nothing to fix.
    let spec = format!("{}@@{PARTITION_OFFSET}", img.display());
    let out = dir.path().join("random.bin");
    let st = Command::new(&mcopy).env("MTOOLS_SKIP_CHECK", "1").args(["-i", &spec, "::/random.bin"]).arg(&out).status().unwrap();
    assert!(st.success(), "mcopy failed");
    let host = Command::new("sha256sum").arg(&out).output().unwrap();
    assert_eq!(sha256_of(&String::from_utf8_lossy(&host.stdout)), Some(sum1), "mtools reads other bytes");
    let lfn = Command::new(&mcopy).env("MTOOLS_SKIP_CHECK", "1").args(["-i", &spec, "::/Long File Name.Text", "-"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&lfn.stdout), "Long File Name.Text\n", "long file name through mtools");

    let part = dir.path().join("part.img");
    let len = std::fs::metadata(&img).unwrap().len();
    let st = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"])
        .arg(format!("skip={PARTITION_OFFSET}"))
        .arg(format!("count={}", len - PARTITION_OFFSET - 33 * 512))
        .status()
        .unwrap();
    assert!(st.success(), "copying the partition");
    let report = Command::new(&fsck).arg("-n").arg(&part).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&report.stdout), String::from_utf8_lossy(&report.stderr));
    assert!(report.status.success(), "fsck.fat -n: {}\n{text}", report.status);
    assert!(!text.contains("differences") && !text.contains("Dirty bit") && !text.contains("Free cluster summary"), "fsck.fat -n:\n{text}");
}
