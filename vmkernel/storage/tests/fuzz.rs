//! Hostile input: random file calls against a model, and randomly damaged
//! volumes. Neither may panic or hang; the calls must agree with the
//! model, and the volume must stay clean for fsck.fat.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use common::*;
use vmk_storage::block::{BlockDevice, MemDisk};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, FileKind, FixedClock, FsError, Handle, MountOptions, OpenFlags};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const NAMES: &[&str] = &[
    "a",
    "b.txt",
    "config.json",
    "config.json.tmp",
    "a much longer file name with spaces.vmdk",
    "ünïcödé",
    "UPPER.DAT",
    "d1",
    "d2",
];
const BAD: &[&str] = &["", "x/../y", ".", "a:b", "q?", "bad*name", "tab\tname", "very/deep/missing/path"];

fn random_path(r: &mut Rng, dirs: &BTreeSet<String>) -> String {
    if r.below(12) == 0 {
        return BAD[r.below(BAD.len() as u64) as usize].to_string();
    }
    let dir: Vec<&String> = dirs.iter().collect();
    let d = dir[r.below(dir.len() as u64) as usize];
    let n = NAMES[r.below(NAMES.len() as u64) as usize];
    if d.is_empty() { n.to_string() } else { format!("{d}/{n}") }
}

fn key(p: &str) -> String {
    p.trim_matches('/').to_lowercase()
}

/// Runs `ops` random calls; returns the model of files.
fn random_calls(ds: &mut Datastore, seed: u64, ops: usize) -> BTreeMap<String, Vec<u8>> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut dirs: BTreeSet<String> = BTreeSet::from([String::new()]);
    let mut open: Vec<(Handle, String)> = Vec::new();
    for step in 0..ops {
        let p = random_path(&mut r, &dirs);
        let k = key(&p);
        let ctx = format!("seed {seed} step {step} path {p:?}");
        match r.below(11) {
            0 => {
                if ds.mkdir(&p).is_ok() {
                    assert!(!files.contains_key(&k) && !dirs.contains(&k), "{ctx}: mkdir over an existing name");
                    dirs.insert(k);
                }
            }
            1 => {
                if ds.rmdir(&p).is_ok() {
                    assert!(dirs.remove(&k), "{ctx}: rmdir of a non-directory");
                    assert!(
                        !files.keys().chain(dirs.iter()).any(|f| f.starts_with(&format!("{k}/"))),
                        "{ctx}: non-empty"
                    );
                }
            }
            2 | 3 => {
                // Write at an offset through a fresh or open handle.
                let data = pattern(r.next(), r.below(9_000) as usize);
                let off = r.below(20_000);
                let flags = OpenFlags { read: true, write: true, create: true, ..Default::default() };
                if let Ok(h) = ds.open(&p, flags) {
                    let f = files.entry(k.clone()).or_default();
                    assert!(!dirs.contains(&k), "{ctx}: opened a directory for writing");
                    // A write of nothing does not extend the file.
                    if let Ok(n) = ds.write_at(h, off, &data)
                        && n > 0
                    {
                        // Short only when the volume is full.
                        assert!(n <= data.len(), "{ctx}");
                        let end = off as usize + n;
                        if f.len() < end {
                            f.resize(end, 0);
                        }
                        f[off as usize..end].copy_from_slice(&data[..n]);
                    }
                    if r.below(3) == 0 { open.push((h, k)) } else { ds.close(h).unwrap() }
                }
            }
            4 => {
                if let Some(f) = files.get(&k) {
                    let want = f.clone();
                    // Names compare case-insensitively.
                    let got = read_file(ds, &p.to_uppercase());
                    assert!(got == want, "{ctx}: contents differ ({} vs {} bytes)", got.len(), want.len());
                } else {
                    assert!(ds.open(&p, OpenFlags::READ).map(|h| ds.close(h)).is_err() || dirs.contains(&k), "{ctx}");
                }
            }
            5 => {
                let len = r.below(12_000);
                if let Ok(h) = ds.open(&p, OpenFlags { write: true, ..Default::default() }) {
                    if ds.truncate(h, len).is_ok() {
                        files.get_mut(&k).expect("truncated a file the model lacks").resize(len as usize, 0);
                    }
                    ds.close(h).unwrap();
                }
            }
            6 => {
                // Open or not: an open file lives on for its handles only.
                match ds.unlink(&p) {
                    Ok(()) => assert!(files.remove(&k).is_some(), "{ctx}: unlink"),
                    Err(FsError::Busy) => panic!("{ctx}: unlink of a file said busy"),
                    Err(_) => {}
                }
            }
            7 | 8 => {
                let q = random_path(&mut r, &dirs);
                let qk = key(&q);
                if ds.rename(&p, &q).is_ok() && k != qk {
                    if let Some(data) = files.remove(&k) {
                        assert!(!dirs.contains(&qk), "{ctx}: file renamed over a directory");
                        files.insert(qk, data);
                    } else {
                        assert!(dirs.contains(&k), "{ctx}: renamed something the model lacks");
                        // Move the directory and everything under it.
                        let prefix = format!("{k}/");
                        let moved: Vec<String> =
                            dirs.iter().filter(|d| **d == k || d.starts_with(&prefix)).cloned().collect();
                        for d in moved {
                            dirs.remove(&d);
                            dirs.insert(format!("{qk}{}", &d[k.len()..]));
                        }
                        let fmoved: Vec<String> = files.keys().filter(|f| f.starts_with(&prefix)).cloned().collect();
                        for f in fmoved {
                            let data = files.remove(&f).unwrap();
                            files.insert(format!("{qk}{}", &f[k.len()..]), data);
                        }
                    }
                }
            }
            9 => {
                if let Ok(st) = ds.stat(&p) {
                    match st.kind {
                        FileKind::File => assert_eq!(Some(st.size as usize), files.get(&k).map(|f| f.len()), "{ctx}"),
                        FileKind::Dir => assert!(dirs.contains(&k), "{ctx}"),
                    }
                } else {
                    assert!(!files.contains_key(&k), "{ctx}: stat lost a file");
                }
                if let Ok(list) = ds.readdir(&p) {
                    assert!(dirs.contains(&k), "{ctx}: readdir of a non-directory");
                    let names: BTreeSet<String> =
                        list.iter().map(|e| format!("{k}/{}", e.name).to_lowercase()).collect();
                    let prefix = if k.is_empty() { String::new() } else { format!("{k}/") };
                    let want: BTreeSet<String> = files
                        .keys()
                        .chain(dirs.iter())
                        .filter(|x| {
                            x.starts_with(&prefix) && !x[prefix.len()..].is_empty() && !x[prefix.len()..].contains('/')
                        })
                        .map(|x| format!("{k}/{}", &x[prefix.len()..]))
                        .collect();
                    assert_eq!(names, want, "{ctx}: readdir");
                }
            }
            _ => {
                if !open.is_empty() {
                    let (h, _) = open.swap_remove(r.below(open.len() as u64) as usize);
                    ds.fsync(h).unwrap();
                    ds.close(h).unwrap();
                }
            }
        }
    }
    for (h, _) in open {
        ds.close(h).unwrap();
    }
    files
}

fn check_with_fsck(disk: &MemDisk, what: &str) {
    let fsck = tool("fsck.fat", "dosfstools");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fuzz.img");
    std::fs::write(&img, disk.image()).unwrap();
    let out = std::process::Command::new(fsck).arg("-n").arg(&img).output().unwrap();
    assert!(out.status.success(), "{what}: fsck.fat -n:\n{}", String::from_utf8_lossy(&out.stdout));
}

fn random_calls_run(seeds: std::ops::Range<u64>, ops: usize) {
    for seed in seeds {
        for (kind, size) in [(FatKind::Fat12, 3 << 20), (FatKind::Fat32, 80 << 20)] {
            let disk = formatted_disk(size, Some(kind), "fuzz");
            let mut ds = mount(disk.clone());
            let files = random_calls(&mut ds, seed, ops);
            ds.unmount().unwrap();
            check_with_fsck(&disk, &format!("seed {seed} {kind:?}"));
            let mut ds = mount(disk.clone());
            for (path, data) in &files {
                assert!(read_file(&mut ds, path) == *data, "seed {seed}: {path} differs after remount");
            }
        }
    }
}

#[test]
fn random_file_calls_agree_with_a_model_and_leave_a_clean_volume() {
    random_calls_run(1..4, 400);
}

#[test]
#[ignore]
fn random_file_calls_long() {
    random_calls_run(100..300, 2_000);
}

/// Damages random metadata bytes of a populated volume, then mounts it and
/// walks and reads everything: errors are fine, panics and hangs are not.
fn damaged_run(seeds: std::ops::Range<u64>) {
    let disk = formatted_disk(3 << 20, Some(FatKind::Fat12), "victim");
    {
        let mut ds = mount(disk.clone());
        ds.mkdir("dir").unwrap();
        ds.mkdir("dir/sub").unwrap();
        for i in 0..30 {
            write_file(&mut ds, &format!("dir/file with a long name {i}.txt"), &pattern(i, 700 * i as usize));
        }
        write_file(&mut ds, "dir/sub/big", &pattern(99, 200_000));
        ds.unmount().unwrap();
    }
    let clean = disk.image();
    // The first 64 KiB hold the boot sector, the FATs, the root directory
    // and the first directory clusters.
    for seed in seeds {
        let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let mut img = clean.clone();
        for _ in 0..1 + r.below(20) {
            let at = r.below(64 * 1024) as usize;
            img[at] = r.next() as u8;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let dev: Arc<dyn BlockDevice> = Arc::new(MemDisk::from_image(512, img));
            let Ok(mut ds) = Datastore::mount(cache_on(dev), Arc::new(FixedClock(NOW)), MountOptions::default()) else {
                return;
            };
            let mut stack = vec![String::new()];
            let mut visited = 0;
            while let Some(d) = stack.pop() {
                visited += 1;
                assert!(visited < 10_000, "directory walk does not end");
                let Ok(list) = ds.readdir(&d) else { continue };
                for e in list {
                    let p = if d.is_empty() { e.name.clone() } else { format!("{d}/{}", e.name) };
                    if e.kind == FileKind::Dir && stack.len() < 64 {
                        stack.push(p);
                    } else if let Ok(h) = ds.open(&p, OpenFlags::READ) {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut off = 0;
                        while let Ok(n) = ds.read_at(h, off, &mut buf) {
                            if n == 0 {
                                break;
                            }
                            off += n as u64;
                        }
                        let _ = ds.close(h);
                    }
                }
            }
            let _ = ds.statfs();
            let _ = ds.mkdir("new dir");
            let _ = ds.unmount();
        }));
        assert!(result.is_ok(), "damaged volume (seed {seed}) made the datastore panic");
    }
}

#[test]
fn damaged_volumes_never_panic() {
    damaged_run(0..150);
}

#[test]
#[ignore]
fn damaged_volumes_never_panic_long() {
    damaged_run(0..20_000);
}
