//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use vmk_storage::block::{BlockDevice, MemDisk};
use vmk_storage::cache::{BlockCache, CacheConfig};
use vmk_storage::fat::check::FatKind;
use vmk_storage::fat::{Datastore, FixedClock, FormatOptions, MountOptions, OpenFlags, format};
use vmk_storage::stats::NoClock;

/// 2026-12-07 00:00:00 UTC.
pub const NOW: u64 = 1_796_601_600;

pub fn cache_on(dev: Arc<dyn BlockDevice>) -> Arc<BlockCache> {
    Arc::new(BlockCache::new(dev, Arc::new(NoClock), CacheConfig { budget_bytes: 1 << 20, ..Default::default() }))
}

pub fn formatted_disk(bytes: u64, kind: Option<FatKind>, label: &str) -> Arc<MemDisk> {
    let disk = Arc::new(MemDisk::new(512, bytes / 512));
    let cache = cache_on(disk.clone());
    format(&cache, &FormatOptions { label, volume_id: 0x1A2B_3C4D, kind, bytes_per_cluster: None }).expect("format");
    disk
}

pub fn mount(dev: Arc<dyn BlockDevice>) -> Datastore {
    mount_with(dev, MountOptions::default())
}

pub fn mount_with(dev: Arc<dyn BlockDevice>, opts: MountOptions) -> Datastore {
    match Datastore::mount(cache_on(dev), Arc::new(FixedClock(NOW)), opts) {
        Ok(d) => d,
        Err(e) => panic!("mount failed: {e}"),
    }
}

pub fn write_file(ds: &mut Datastore, path: &str, data: &[u8]) {
    let h = ds.open(path, OpenFlags::WRITE_CREATE_TRUNC).unwrap_or_else(|e| panic!("open {path}: {e}"));
    assert_eq!(ds.write_at(h, 0, data).unwrap(), data.len());
    ds.close(h).unwrap();
}

pub fn read_file(ds: &mut Datastore, path: &str) -> Vec<u8> {
    let h = ds.open(path, OpenFlags::READ).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let size = ds.size(h).unwrap() as usize;
    let mut buf = vec![0u8; size + 10];
    let mut got = 0;
    loop {
        let n = ds.read_at(h, got as u64, &mut buf[got..]).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    ds.close(h).unwrap();
    buf.truncate(got);
    buf
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A host tool, or a clear failure naming the Debian package (CI installs
/// them in `.ci/run`).
pub fn tool(name: &str, package: &str) -> std::path::PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not found: install the Debian package {package} (apt-get install {package}; .ci/run does)");
}
