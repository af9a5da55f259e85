//! Host throughput of the datastore path (fatfs + cache + RAM disk), to
//! see the stack's own cost apart from any driver. Prints figures; run
//! with `cargo test -p vmk-storage --release --test throughput -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use common::*;
use vmk_storage::fat::OpenFlags;
use vmk_storage::fat::check::FatKind;

#[test]
#[ignore]
fn sequential_and_random_io_figures() {
    let disk = formatted_disk(512 << 20, Some(FatKind::Fat32), "bench");
    let mut ds = mount(disk);
    let chunk = pattern(1, 1 << 20);
    let total = 256u64 << 20;
    let h = ds.open("big.bin", OpenFlags { read: true, write: true, create: true, ..Default::default() }).unwrap();
    let t = Instant::now();
    let mut off = 0;
    while off < total {
        off += ds.write_at(h, off, &chunk).unwrap() as u64;
    }
    ds.fsync(h).unwrap();
    let w = t.elapsed().as_secs_f64();
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut off = 0;
    while off < total {
        off += ds.read_at(h, off, &mut buf).unwrap() as u64;
    }
    let r = t.elapsed().as_secs_f64();
    let mut small = [0u8; 4096];
    let mut x = 12345u64;
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ds.read_at(h, (x % (total / 4096)) * 4096, &mut small).unwrap();
    }
    let iops = n as f64 / t.elapsed().as_secs_f64();
    println!(
        "datastore on a RAM disk: write {:.0} MB/s, read {:.0} MB/s, 4 KiB random read {:.0} IOPS",
        total as f64 / w / 1e6,
        total as f64 / r / 1e6,
        iops
    );
    ds.close(h).unwrap();
}
