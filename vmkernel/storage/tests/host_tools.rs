//! The storage stack against the real tools: images made by `mkfs.fat` and
//! `mcopy` read correctly, images this crate writes pass `fsck.fat -n` and
//! read back with `mtype`/`mdir`, and partition tables made by `sfdisk`
//! parse. Needs dosfstools, mtools and fdisk (`.ci/run` installs them).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::*;
use vmk_storage::block::{BlockDevice, MemDisk};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, FileKind};
use vmk_storage::partition::{PartitionKind, TableKind, read_table};

fn run(cmd: &mut Command) -> String {
    let out = cmd.env("MTOOLS_SKIP_CHECK", "1").output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{text}", out.status);
    text
}

/// A tree of files: path -> contents (directories implied).
fn sample_tree() -> BTreeMap<String, Vec<u8>> {
    let mut t = BTreeMap::new();
    t.insert("README.TXT".into(), b"short 8.3 name\n".to_vec());
    t.insert("A file with a Long Name.json".into(), pattern(1, 3_000));
    t.insert("vms/web server 01/web server 01.vmx".into(), b"config.version = \"8\"\n".to_vec());
    t.insert("vms/web server 01/web server 01-flat.vmdk".into(), pattern(2, 700_000));
    t.insert("vms/db/nested/deeper/still deeper/leaf file.txt".into(), pattern(3, 1));
    t.insert("isos/empty.iso".into(), Vec::new());
    t.insert("unicode/répertoire/naïve café.txt".into(), "ünïcödé\n".as_bytes().to_vec());
    for i in 0..40 {
        t.insert(format!("many/entry number {i:03} with a long name.log"), pattern(100 + i, i as usize * 100));
    }
    t
}

fn write_host_tree(root: &Path, tree: &BTreeMap<String, Vec<u8>>) {
    for (p, data) in tree {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

/// Every file under `dir` of the datastore, recursively.
fn walk(ds: &mut Datastore, dir: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in ds.readdir(dir).unwrap() {
        let path = if dir.is_empty() { e.name.clone() } else { format!("{dir}/{}", e.name) };
        match e.kind {
            FileKind::Dir => walk(ds, &path, out),
            FileKind::File => {
                let data = read_file(ds, &path);
                assert_eq!(data.len() as u64, e.size, "{path}");
                out.insert(path, data);
            }
        }
    }
}

#[test]
fn mkfs_fat_and_mcopy_images_read_correctly() {
    let mkfs = tool("mkfs.fat", "dosfstools");
    let mcopy = tool("mcopy", "mtools");
    let tree = sample_tree();
    let src = tempfile::tempdir().unwrap();
    write_host_tree(src.path(), &tree);
    for (bits, mib) in [(12, 4), (16, 32), (32, 64)] {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fat.img");
        std::fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
        run(Command::new(&mkfs).args(["-F", &bits.to_string(), "-n", "HOSTMADE", "-i", "5EED1234"]).arg(&img));
        let mut cmd = Command::new(&mcopy);
        cmd.arg("-s").arg("-i").arg(&img);
        for e in std::fs::read_dir(src.path()).unwrap() {
            cmd.arg(e.unwrap().path());
        }
        run(cmd.arg("::/"));
        let disk: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, std::fs::read(&img).unwrap()));
        let mut ds = mount(disk);
        let kind = match bits {
            12 => FatKind::Fat12,
            16 => FatKind::Fat16,
            _ => FatKind::Fat32,
        };
        assert_eq!(ds.fat_kind(), kind);
        assert_eq!(ds.label(), "HOSTMADE");
        assert_eq!(ds.uuid(), "5EED-1234");
        assert!(ds.messages().iter().all(|m| !m.contains("inconsistent")), "{:?}", ds.messages());
        let mut got = BTreeMap::new();
        walk(&mut ds, "", &mut got);
        assert_eq!(got.keys().collect::<Vec<_>>(), tree.keys().collect::<Vec<_>>(), "FAT{bits}: names differ");
        assert!(got == tree, "FAT{bits}: contents differ");
        let st = ds.stat("vms/web server 01/web server 01-flat.vmdk").unwrap();
        assert_eq!(st.size, 700_000);
    }
}

#[test]
fn images_written_here_pass_fsck_and_read_back_with_mtools() {
    let fsck = tool("fsck.fat", "dosfstools");
    let mtype = tool("mtype", "mtools");
    let mdir = tool("mdir", "mtools");
    let tree = sample_tree();
    for (kind, mib) in [(FatKind::Fat12, 4), (FatKind::Fat16, 32), (FatKind::Fat32, 80)] {
        let disk = formatted_disk(mib << 20, Some(kind), "written");
        let mut ds = mount(disk.clone());
        for (p, data) in &tree {
            let mut parent = String::new();
            for c in p.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
                parent = if parent.is_empty() { c.to_string() } else { format!("{parent}/{c}") };
                let _ = ds.mkdir(&parent);
            }
            write_file(&mut ds, p, data);
        }
        // Exercise the metadata paths fsck checks: replace, rename across
        // directories, unlink, rmdir, truncate, append.
        write_file(&mut ds, "vms/web server 01/web server 01.vmx.tmp", b"config.version = \"9\"\n");
        ds.rename("vms/web server 01/web server 01.vmx.tmp", "vms/web server 01/web server 01.vmx").unwrap();
        ds.rename("README.TXT", "isos/readme moved.txt").unwrap();
        ds.unlink("many/entry number 007 with a long name.log").unwrap();
        ds.mkdir("gone").unwrap();
        ds.rmdir("gone").unwrap();
        let h = ds
            .open("A file with a Long Name.json", vmk_storage::fat::OpenFlags { write: true, ..Default::default() })
            .unwrap();
        ds.truncate(h, 1000).unwrap();
        ds.close(h).unwrap();
        ds.unmount().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("written.img");
        std::fs::write(&img, disk.image()).unwrap();
        let out = run(Command::new(&fsck).arg("-n").arg(&img));
        assert!(!out.contains("differences") && !out.contains("Free cluster summary"), "{kind:?}: fsck.fat -n:\n{out}");
        let vmx = run(Command::new(&mtype).arg("-i").arg(&img).arg("::/vms/web server 01/web server 01.vmx"));
        assert_eq!(vmx, "config.version = \"9\"\n");
        let leaf = Command::new(&mtype)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&img)
            .arg("::/vms/web server 01/web server 01-flat.vmdk")
            .output()
            .unwrap();
        assert!(
            leaf.stdout == tree["vms/web server 01/web server 01-flat.vmdk"],
            "{kind:?}: mtype of the 700 KB file differs"
        );
        let listing = run(Command::new(&mdir).arg("-i").arg(&img).arg("::/many"));
        assert!(listing.contains("entry number 039 with a long name.log"), "{listing}");
        assert!(!listing.contains("entry number 007"), "{listing}");
        let listing = run(Command::new(&mdir).arg("-i").arg(&img).arg("::/"));
        assert!(listing.contains("A file with a Long Name.json") && listing.contains("WRITTEN"), "{listing}");
        assert!(listing.contains("1000"), "truncated size not shown: {listing}");
    }
}

/// `sfdisk -d` lines: (start, size) per partition.
fn sfdisk_dump(sfdisk: &Path, img: &Path) -> Vec<(u64, u64)> {
    let dump = run(Command::new(sfdisk).arg("-d").arg(img));
    dump.lines()
        .filter(|l| l.contains("start="))
        .map(|l| {
            let field = |name: &str| -> u64 {
                let rest = &l[l.find(name).unwrap() + name.len()..];
                rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
            };
            (field("start="), field("size="))
        })
        .collect()
}

#[test]
fn sfdisk_gpt_and_mbr_tables_parse() {
    let sfdisk = tool("sfdisk", "fdisk");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    // GPT: three partitions, one named, basic-data type for the FAT one.
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let script = "label: gpt\n\
                  size=8MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"datastore1\"\n\
                  size=4MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
                  type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n";
    let mut child = Command::new(&sfdisk)
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let want = sfdisk_dump(&sfdisk, &img);
    let disk = MemDisk::from_image(512, std::fs::read(&img).unwrap());
    let t = read_table(&disk).unwrap();
    assert!(matches!(t.kind, TableKind::Gpt { .. }));
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let got: Vec<(u64, u64)> = t.partitions.iter().map(|p| (p.start, p.sectors)).collect();
    assert_eq!(got, want);
    assert_eq!(t.partitions[0].name, "datastore1");
    assert!(
        t.partitions[0].kind.may_be_fat() && !t.partitions[1].kind.may_be_fat() && t.partitions[2].kind.may_be_fat()
    );
    // Damage the primary header: the backup still gives the same table.
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[512 + 40] ^= 0xff;
    let t2 = read_table(&MemDisk::from_image(512, bytes)).unwrap();
    assert_eq!(t2.partitions, t.partitions);
    assert!(t2.warnings[0].contains("primary GPT is damaged"));

    // MBR: sfdisk makes the fourth line primary 4 and the fifth a logical
    // partition (5) inside the extended one (3).
    std::fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let script = "label: dos\n\
                  size=8MiB, type=c\n\
                  size=8MiB, type=83\n\
                  size=30MiB, type=5\n\
                  size=10MiB, type=6\n\
                  size=10MiB, type=b\n";
    let mut child = Command::new(&sfdisk)
        .arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let want: Vec<(u64, u64)> = sfdisk_dump(&sfdisk, &img).into_iter().filter(|&(_, size)| size != 30 * 2048).collect();
    let t = read_table(&MemDisk::from_image(512, std::fs::read(&img).unwrap())).unwrap();
    assert_eq!(t.kind, TableKind::Mbr);
    let got: Vec<(u64, u64)> = t.partitions.iter().map(|p| (p.start, p.sectors)).collect();
    assert_eq!(got, want);
    let numbers: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 4, 5]);
    assert_eq!(t.partitions[3].kind, PartitionKind::Mbr(0x0b));
}
