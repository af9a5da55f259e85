//! Crash safety of the atomic-replace recipe: a simulated disk stops
//! persisting at its N-th write, keeping only a random subset of the
//! writes since the last flush (a device may reorder writes between
//! flushes, never across one). After every such crash a fresh mount's
//! recovery must leave each config file whole — the version last
//! committed, or the one being committed when the disk died.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use vmk_storage::block::{BlockDevice, BlockError, MemDisk};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, OpenFlags};

struct State {
    durable: Vec<u8>,
    /// Writes since the last flush, in issue order.
    pending: Vec<(u64, Vec<u8>)>,
    writes: u64,
    crash_at: u64,
    crashed: bool,
    rng: u64,
}

/// A disk with a volatile write cache that loses power at write `crash_at`.
struct CrashDisk(Mutex<State>);

impl CrashDisk {
    fn new(image: Vec<u8>, crash_at: u64, seed: u64) -> Self {
        CrashDisk(Mutex::new(State {
            durable: image,
            pending: Vec::new(),
            writes: 0,
            crash_at,
            crashed: false,
            rng: seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1,
        }))
    }
    /// What survives: everything flushed, plus a random subset of the rest.
    fn durable_image(&self) -> Vec<u8> {
        self.0.lock().unwrap().durable.clone()
    }
    fn writes(&self) -> u64 {
        self.0.lock().unwrap().writes
    }
    fn crashed(&self) -> bool {
        self.0.lock().unwrap().crashed
    }
}

fn apply(img: &mut [u8], lba: u64, data: &[u8]) {
    let at = lba as usize * 512;
    img[at..at + data.len()].copy_from_slice(data);
}

impl BlockDevice for CrashDisk {
    fn sector_size(&self) -> u32 {
        512
    }
    fn sector_count(&self) -> u64 {
        (self.0.lock().unwrap().durable.len() / 512) as u64
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let s = self.0.lock().unwrap();
        if s.crashed {
            return Err(BlockError::Gone);
        }
        let at = lba as usize * 512;
        let end = at + buf.len();
        if end > s.durable.len() {
            return Err(BlockError::OutOfRange);
        }
        buf.copy_from_slice(&s.durable[at..end]);
        // The device returns what was last written, persisted or not.
        for (plba, data) in &s.pending {
            let pa = *plba as usize * 512;
            let pe = pa + data.len();
            let (lo, hi) = (pa.max(at), pe.min(end));
            if lo < hi {
                buf[lo - at..hi - at].copy_from_slice(&data[lo - pa..hi - pa]);
            }
        }
        Ok(())
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        let mut s = self.0.lock().unwrap();
        if s.crashed {
            return Err(BlockError::Gone);
        }
        s.writes += 1;
        // A merged request may be split by the device: sector granularity.
        for (i, sector) in buf.chunks(512).enumerate() {
            s.pending.push((lba + i as u64, sector.to_vec()));
        }
        if s.writes == s.crash_at {
            s.crashed = true;
            let pending = std::mem::take(&mut s.pending);
            for (lba, data) in pending {
                s.rng ^= s.rng << 13;
                s.rng ^= s.rng >> 7;
                s.rng ^= s.rng << 17;
                if s.rng & 1 == 1 {
                    apply(&mut s.durable, lba, &data);
                }
            }
            return Err(BlockError::Gone);
        }
        Ok(())
    }
    fn flush(&self) -> Result<(), BlockError> {
        let mut s = self.0.lock().unwrap();
        if s.crashed {
            return Err(BlockError::Gone);
        }
        let pending = std::mem::take(&mut s.pending);
        for (lba, data) in pending {
            apply(&mut s.durable, lba, &data);
        }
        Ok(())
    }
}

const FILES: usize = 6;

fn config(i: usize, v: u32) -> Vec<u8> {
    // Sizes cross cluster boundaries from version to version.
    let len = (v as usize * 1_531 + i * 389) % 6_000 + 1;
    let mut c = format!("cfg{i} v{v} len{len}\n").into_bytes();
    c.extend(pattern((i as u64) << 32 | v as u64, len));
    c
}

/// The version a file's contents are, if they are whole.
fn version_of(i: usize, data: &[u8]) -> Option<u32> {
    let line = data.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let v: u32 = line.split_whitespace().nth(1)?.strip_prefix('v')?.parse().ok()?;
    (config(i, v) == data).then_some(v)
}

/// One config rewrite by the POSIX recipe.
fn replace(ds: &mut Datastore, i: usize, v: u32) -> Result<(), vmk_storage::fat::FsError> {
    let tmp = format!("etc/config {i}.json.tmp");
    let h = ds.open(&tmp, OpenFlags::WRITE_CREATE_TRUNC)?;
    let data = config(i, v);
    let mut off = 0;
    while off < data.len() {
        off += ds.write_at(h, off as u64, &data[off..])?;
    }
    ds.fsync(h)?;
    ds.close(h)?;
    ds.rename(&tmp, &format!("etc/config {i}.json"))
}

/// Runs rounds of rewrites (and appends to a log) until the disk dies or
/// `rounds` are done. Returns (committed version per file, file in flight).
fn workload(ds: &mut Datastore, rounds: u32) -> ([u32; FILES], Option<usize>) {
    let mut committed = [0u32; FILES];
    for r in 1..=rounds {
        for i in 0..FILES {
            if replace(ds, i, r).is_err() {
                return (committed, Some(i));
            }
            committed[i] = r;
            let Ok(h) = ds.open("var/log/big.log", OpenFlags { write: true, append: true, ..Default::default() })
            else {
                return (committed, None);
            };
            let line = pattern(r as u64 * 100 + i as u64, 700);
            let ok = ds.write_at(h, 0, &line).is_ok();
            if ds.close(h).is_err() || !ok {
                return (committed, None);
            }
        }
    }
    (committed, None)
}

fn base_image(kind: FatKind, size: u64) -> Vec<u8> {
    let disk = formatted_disk(size, Some(kind), "crash");
    let mut ds = mount(disk.clone());
    ds.mkdir("etc").unwrap();
    ds.mkdir("var").unwrap();
    ds.mkdir("var/log").unwrap();
    for i in 0..FILES {
        write_file(&mut ds, &format!("etc/config {i}.json"), &config(i, 0));
    }
    write_file(&mut ds, "var/log/big.log", &pattern(7, 50_000));
    ds.mkdir(".mantle").unwrap();
    ds.mkdir(".mantle/ssl").unwrap();
    write_file(&mut ds, ".mantle/ssl/host.crt", &static_file());
    ds.unmount().unwrap();
    disk.image()
}

/// A file written once before the workload and never touched again.
fn static_file() -> Vec<u8> {
    pattern(0xCE27, 1_200)
}

fn crash_run(kind: FatKind, size: u64, rounds: u32, points: usize) {
    let base = base_image(kind, size);
    // A run without a crash counts the writes the workload makes.
    let clean = Arc::new(CrashDisk::new(base.clone(), u64::MAX, 1));
    let mut ds = mount(clean.clone());
    let start = clean.writes();
    let (committed, failed) = workload(&mut ds, rounds);
    assert_eq!((committed, failed), ([rounds; FILES], None));
    let total = clean.writes() - start;
    drop(ds);
    assert!(total > 50, "workload made only {total} writes");

    // fsck.fat (dosfstools) judges each recovered volume, as in CI.
    let fsck = Some(tool("fsck.fat", "dosfstools"));
    let dir = tempfile::tempdir().unwrap();
    let mut recoveries = 0;
    for k in 0..points {
        // Spread crash points over the whole run, each with its own seed.
        let n = (start + 1 + (k as u64 * total) / points as u64 + (k as u64 * 7919) % 5).min(start + total);
        let disk = Arc::new(CrashDisk::new(base.clone(), n, k as u64 + 1));
        let mut ds = mount(disk.clone());
        let (committed, in_flight) = workload(&mut ds, rounds);
        assert!(disk.crashed(), "crash point {n} was not reached");
        drop(ds);
        // Power back on: a fresh mount of what reached the medium.
        let image = disk.durable_image();
        let mem = Arc::new(MemDisk::from_image(512, image));
        let mut ds = mount(mem.clone());
        let msgs = ds.messages().to_vec();
        if ds.messages().iter().any(|m| m.contains("recovered")) {
            recoveries += 1;
        }
        let cert = read_file(&mut ds, ".mantle/ssl/host.crt");
        assert!(
            cert == static_file(),
            "crash at write {n}: a file untouched by the workload changed ({} bytes); mount said: {msgs:?}",
            cert.len()
        );
        for (i, &done) in committed.iter().enumerate() {
            let data = read_file(&mut ds, &format!("etc/config {i}.json"));
            let v = version_of(i, &data).unwrap_or_else(|| {
                panic!("crash at write {n}: config {i} is not a whole version ({} bytes)", data.len())
            });
            let ok = v == done || (in_flight == Some(i) && v == done + 1);
            assert!(ok, "crash at write {n}: config {i} is v{v}, committed v{done}, in flight {in_flight:?}");
        }
        // The volume stays usable: another round of rewrites, then a
        // clean remount whose FAT check finds nothing to mend.
        for i in 0..FILES {
            replace(&mut ds, i, 1000).unwrap_or_else(|e| panic!("crash at write {n}: rewrite after recovery: {e}"));
        }
        ds.unmount().unwrap();
        if let Some(fsck) = &fsck {
            let img = dir.path().join("crashed.img");
            std::fs::write(&img, mem.image()).unwrap();
            let out = std::process::Command::new(fsck).arg("-n").arg(&img).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "crash at write {n}: fsck.fat -n after recovery and unmount:\n{text}\nmount said: {msgs:?}"
            );
        }
        let mut ds = mount(mem);
        assert!(ds.messages().iter().all(|m| !m.contains("inconsistent")), "crash at write {n}: {:?}", ds.messages());
        for i in 0..FILES {
            assert_eq!(version_of(i, &read_file(&mut ds, &format!("etc/config {i}.json"))), Some(1000));
        }
    }
    assert!(recoveries > 0, "no crash landed inside a replace");
}

#[test]
fn atomic_replace_survives_crashes_fat16() {
    crash_run(FatKind::Fat16, 16 << 20, 3, 60);
}

#[test]
fn atomic_replace_survives_crashes_fat12() {
    crash_run(FatKind::Fat12, 3 << 20, 2, 40);
}

/// The long version: every write of a longer workload is a crash point.
#[test]
#[ignore]
fn atomic_replace_survives_crashes_exhaustive() {
    crash_run(FatKind::Fat16, 16 << 20, 6, 2_000);
    crash_run(FatKind::Fat32, 80 << 20, 3, 1_000);
}

/// hostd's pattern in one session that ends in a crash: a certificate
/// written once by the recipe in a nested directory, then a stream of
/// `.vmx` replaces, each followed by fsync'd appends to event and audit
/// logs. Whatever point the crash hits, the certificate — committed before
/// the stream — reads back unchanged after recovery.
fn hostd_session(ds: &mut Datastore, rounds: u32) -> bool {
    let append = OpenFlags { write: true, create: true, append: true, ..Default::default() };
    let Ok(events) = ds.open(".mantle/hostd/events.log", append) else { return false };
    let Ok(audit) = ds.open(".mantle/hostd/audit.log", append) else { return false };
    let step = |ds: &mut Datastore, r: u32| -> Result<(), vmk_storage::fat::FsError> {
        let data = pattern(r as u64 * 31, 900 + (r as usize * 613) % 3_000);
        let h = ds.open("hello/hello.vmx.tmp", OpenFlags::WRITE_CREATE_TRUNC)?;
        ds.write_at(h, 0, &data)?;
        ds.fsync(h)?;
        ds.close(h)?;
        ds.rename("hello/hello.vmx.tmp", "hello/hello.vmx")?;
        for h in [events, audit] {
            ds.write_at(h, 0, &pattern(r as u64 * 7 + h.0, 180 + (r as usize * 37) % 400))?;
            ds.fsync(h)?;
        }
        if r % 5 == 4 {
            ds.flush_expired(u64::MAX / 2)?;
        }
        Ok(())
    };
    for r in 0..rounds {
        if step(ds, r).is_err() {
            return false;
        }
    }
    true
}

fn hostd_cert_run(kind: Option<FatKind>, size: u64, rounds: u32, points: usize) {
    let disk = formatted_disk(size, kind, "datastore1");
    mount(disk.clone()).unmount().unwrap();
    let base = disk.image();
    let setup = |ds: &mut Datastore| {
        for d in [".mantle", ".mantle/hostd", ".mantle/hostd/ssl", "hello"] {
            ds.mkdir(d).unwrap();
        }
        for (name, data) in [("key", pattern(0x6b, 241)), ("crt", static_file())] {
            let tmp = format!(".mantle/hostd/ssl/host.{name}.tmp");
            let h = ds.open(&tmp, OpenFlags::WRITE_CREATE_TRUNC).unwrap();
            ds.write_at(h, 0, &data).unwrap();
            ds.fsync(h).unwrap();
            ds.close(h).unwrap();
            ds.rename(&tmp, &format!(".mantle/hostd/ssl/host.{name}")).unwrap();
        }
    };
    let clean = Arc::new(CrashDisk::new(base.clone(), u64::MAX, 1));
    let mut ds = mount(clean.clone());
    setup(&mut ds);
    let start = clean.writes();
    assert!(hostd_session(&mut ds, rounds));
    let total = clean.writes() - start;
    drop(ds);
    for k in 0..points {
        let n = (start + 1 + (k as u64 * total) / points as u64 + (k as u64 * 7919) % 5).min(start + total);
        let disk = Arc::new(CrashDisk::new(base.clone(), n, k as u64 + 1));
        let mut ds = mount(disk.clone());
        setup(&mut ds);
        hostd_session(&mut ds, rounds);
        assert!(disk.crashed(), "crash point {n} was not reached");
        drop(ds);
        let mem = Arc::new(MemDisk::from_image(512, disk.durable_image()));
        let mut ds = mount(mem);
        let msgs = ds.messages().to_vec();
        let cert = read_file(&mut ds, ".mantle/hostd/ssl/host.crt");
        assert!(
            cert == static_file(),
            "crash at write {n}: the certificate changed ({} bytes); mount said: {msgs:?}",
            cert.len()
        );
    }
}

#[test]
fn untouched_file_survives_crash_in_hostd_pattern_fat16() {
    hostd_cert_run(None, 64 << 20, 8, 40);
}

/// A writable mount marks the volume dirty on the medium (flushed) before
/// it changes anything, and a clean unmount clears the mark: a crash at
/// the first write after mounting leaves a volume the next mount mends.
#[test]
fn writable_mount_marks_the_volume_dirty_first() {
    for (kind, size, at) in [(FatKind::Fat16, 16u64 << 20, 0x25usize), (FatKind::Fat32, 80 << 20, 0x41)] {
        let base = base_image(kind, size);
        assert_eq!(base[at] & 1, 0, "{kind:?}: the base image is clean");
        let disk = Arc::new(CrashDisk::new(base.clone(), u64::MAX, 1));
        let mut ds = mount(disk.clone());
        assert_eq!(disk.durable_image()[at] & 1, 1, "{kind:?}: mounted without the dirty flag on the medium");
        replace(&mut ds, 0, 1).unwrap();
        ds.unmount().unwrap();
        assert_eq!(disk.durable_image()[at] & 1, 0, "{kind:?}: still marked dirty after a clean unmount");
        // A read-only mount writes nothing.
        let ro = Arc::new(CrashDisk::new(base.clone(), u64::MAX, 1));
        let ds = mount_with(ro.clone(), vmk_storage::fat::MountOptions { read_only: true, ..Default::default() });
        drop(ds);
        assert_eq!(ro.writes(), 0, "{kind:?}: a read-only mount wrote");
    }
}
