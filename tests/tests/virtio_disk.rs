//! Guest disks on datastores (issue 11, virtio): a Mantle VM with two
//! virtio-mmio block devices — a qcow2 linked clone of a raw base image
//! (`qemu-img create -f qcow2 -b base.raw -F raw`) and a 3 GiB
//! `twoGbMaxExtentSparse` VMDK made by `qemu-img convert` — both files on
//! the FAT datastore `datastore1`. The guest suite's `virtio-blk` check
//! finds both devices, reads the host's markers at the start and the end
//! of each disk (the VMDK's end lies in its second extent), writes 4 KiB at
//! 1 MiB, flushes, reads it back, and takes the completion interrupt on
//! the slot's IOAPIC GSI. After Mantle powers off, the host copies the
//! images back: `qemu-img check` passes, `qemu-img compare` finds exactly
//! the guest's writes, and the clone's base is untouched. A configuration
//! naming a missing disk is refused with the reason in the kernel log;
//! `vmkcli portgroup` adds, changes and removes port groups of vSwitch0.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use image_builder::qemu::Console;
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(300);
const CLONE_SIZE: u64 = 64 << 20;
const VMDK_SIZE: u64 = 3 << 30;
const VM_DIR: &str = "/vmfs/volumes/datastore1/vd";

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

fn qemu_img(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("qemu-img").current_dir(dir).args(args).output().expect("qemu-img (qemu-utils) is installed");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "qemu-img {args:?}: {text}");
    text
}

/// The 20-byte marker the guest looks for ("mantle-virtio-disk N").
fn marker(prefix: &str, slot: u64) -> Vec<u8> {
    format!("{prefix}{slot}").into_bytes()
}

/// A sparse raw file with the head and tail markers of `slot`.
fn raw_with_markers(path: &Path, size: u64, slot: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&marker("mantle-virtio-disk ", slot), 0).unwrap();
    f.write_all_at(&marker("mantle-virtio-tail ", slot), size - 4096).unwrap();
}

/// What the guest writes at 1 MiB of the disk in `slot`.
fn guest_pattern(slot: u64) -> Vec<u8> {
    (0..4096u64).map(|i| (i * 7 + slot) as u8).collect()
}

#[test]
fn guest_reads_and_writes_qcow2_clone_and_split_vmdk_on_a_datastore() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("datastore1.img");
    image_builder::datastore::create(&ds, 512 << 20, "datastore1").expect("image-builder datastore new");

    // The VM's directory on the host, then copied onto the datastore.
    let vd = dir.path().join("vd");
    std::fs::create_dir(&vd).unwrap();
    raw_with_markers(&vd.join("base.raw"), CLONE_SIZE, 0);
    qemu_img(&vd, &["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "clone.qcow2"]);
    let split_src = dir.path().join("split-src.raw");
    raw_with_markers(&split_src, VMDK_SIZE, 1);
    qemu_img(dir.path(), &["convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "split-src.raw", "vd/split.vmdk"]);
    let base_before = std::fs::read(vd.join("base.raw")).unwrap();
    std::fs::write(
        vd.join("vd.vmx"),
        format!(
            "name = \"vd\"\nkernel = \"/usr/lib/mantle/guests/suite.elf\"\nmemory_mib = \"32\"\n\
             cmdline = \"only=virtio-blk expect-virtio-disks=2\"\n\
             disk0.file = \"{VM_DIR}/clone.qcow2\"\ndisk0.format = \"qcow2\"\n\
             disk1.file = \"{VM_DIR}/split.vmdk\"\ndisk1.format = \"vmdk\"\n"
        ),
    )
    .unwrap();
    std::fs::write(vd.join("bad.vmx"), format!("name = \"bad\"\nkernel = \"/usr/lib/mantle/guests/suite.elf\"\ndisk0.file = \"{VM_DIR}/missing.qcow2\"\n")).unwrap();
    image_builder::datastore::put(&ds, &vd, "/vd").expect("datastore put");

    let _lock = emulator_lock();
    let mut q = qemu_iso(iso("virtio-disk", "", &[]));
    q.debug_exit = false;
    q.extra.extend(["-drive".into(), format!("file={},format=raw,if=none,id=ds0,cache=writeback", ds.display()), "-device".into(), "virtio-blk-pci,drive=ds0".into()]);
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(180), STEP);

    let bad = run(&mut c, &format!("vmkcli vm create --config {VM_DIR}/bad.vmx; echo rc=$?"));
    check(&c, !bad.contains("rc=0"), &format!("a VM with a missing disk was created:\n{bad}"));
    check(&c, c.log().contains("disk0 /vmfs/volumes/datastore1/vd/missing.qcow2 (qcow2): cannot open"), "the reason for the refusal is logged");

    let created = run(&mut c, &format!("vmkcli vm create --config {VM_DIR}/vd.vmx"));
    let id: u32 = created
        .split("created VM ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("vmkcli vm create: {created}\n--- serial log ---\n{}", c.log()));
    let out = run(&mut c, &format!("vmkcli vm start {id} && vmkcli vm wait {id} --timeout 240; vmkcli vm console {id}"));
    check(&c, out.contains("test virtio-blk ... ok"), &format!("the guest's virtio-blk check:\n{out}"));
    check(&c, c.log().contains("as virtio-blk in slot 0 (GSI 16)") && c.log().contains("as virtio-blk in slot 1 (GSI 17)"), "both disks in their slots");
    // Each disk's I/O as the device model counted it: the guest read, wrote and
    // flushed both, and asked each for one sector past its end (an I/O error).
    let info = run(&mut c, &format!("vmkcli vm info {id}"));
    for disk in ["disk0", "disk1"] {
        let line = info.lines().find(|l| l.trim_start().starts_with(&format!("{disk}:"))).unwrap_or_else(|| panic!("no {disk} counters in vmkcli vm info:\n{info}"));
        let n: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
        // [index, reads, bytes read, writes, bytes written, flushes, errors]
        check(&c, n.len() == 7 && n[1] > 0 && n[2] >= 512 * n[1] && n[3] > 0 && n[4] >= 512 * n[3] && n[5] > 0 && n[6] == 1, &format!("{disk}'s counters: {line}"));
    }
    run(&mut c, &format!("vmkcli vm destroy {id}"));

    // Port groups of the virtual switch.
    let pg = run(&mut c, "vmkcli portgroup add Lab --vlan 20 && vmkcli vswitch list; vmkcli portgroup add Lab; echo again=$?; vmkcli portgroup add Bad --vlan 4095; echo bad=$?");
    check(&c, pg.contains("portgroup \"VM Network\" vlan 0") && pg.contains("portgroup \"Lab\" vlan 20"), &format!("vswitch list:\n{pg}"));
    check(&c, pg.contains("vmkcli: it already exists") && pg.contains("again=1") && pg.contains("VLAN 0 to 4094") && pg.contains("bad=1"), &format!("duplicate and bad port groups:\n{pg}"));
    let pg = run(&mut c, "vmkcli portgroup set Lab --vlan 30 && vmkcli portgroup remove Lab && vmkcli vswitch list");
    check(&c, !pg.contains("portgroup \"Lab\"") && pg.contains("portgroup \"VM Network\" vlan 0"), &format!("after remove:\n{pg}"));

    let _ = c.send("poweroff -f\n");
    let status = c.wait_exit(Duration::from_secs(120));
    check(&c, status.is_some(), "QEMU did not exit after poweroff");
    drop(_lock);

    // The host's view of what the guest did.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    image_builder::datastore::get(&ds, "/vd", &back).expect("datastore get");
    let back = back.join("vd");
    assert!(std::fs::read(back.join("base.raw")).unwrap() == base_before, "the clone's base image was written");
    for (image, fmt) in [("clone.qcow2", "qcow2"), ("split.vmdk", "vmdk")] {
        let report = qemu_img(&back, &["check", "-f", fmt, image]);
        assert!(!report.contains("leaked") && !report.contains("ERROR"), "{image}: {report}");
    }
    let want0 = dir.path().join("want0.raw");
    std::fs::write(&want0, &base_before).unwrap();
    OpenOptions::new().write(true).open(&want0).unwrap().write_all_at(&guest_pattern(0), 1 << 20).unwrap();
    OpenOptions::new().write(true).open(&split_src).unwrap().write_all_at(&guest_pattern(1), 1 << 20).unwrap();
    qemu_img(&back, &["compare", "-f", "qcow2", "-F", "raw", "clone.qcow2", &want0.display().to_string()]);
    qemu_img(&back, &["compare", "-f", "vmdk", "-F", "raw", "split.vmdk", &split_src.display().to_string()]);
}
