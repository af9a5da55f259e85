//! Per-device and per-partition I/O statistics, printed in the exact
//! line format of Linux's `/proc/diskstats` (so BusyBox `iostat` reads them).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::block::{BlockDevice, BlockError};

/// A monotonic millisecond clock, supplied by the kernel (TSC or timer
/// ticks) or by a test.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// A clock that always reads 0, for callers that do not time requests.
pub struct NoClock;
impl Clock for NoClock {
    fn now_ms(&self) -> u64 {
        0
    }
}

/// The counters of one `/proc/diskstats` line.
#[derive(Default, Debug)]
pub struct DiskStats {
    pub reads: AtomicU64,
    pub reads_merged: AtomicU64,
    /// In 512-byte units, whatever the device's sector size (as Linux).
    pub sectors_read: AtomicU64,
    pub read_ms: AtomicU64,
    pub writes: AtomicU64,
    pub writes_merged: AtomicU64,
    pub sectors_written: AtomicU64,
    pub write_ms: AtomicU64,
    pub in_flight: AtomicU64,
    pub io_ms: AtomicU64,
    pub weighted_ms: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_ms: AtomicU64,
}

/// A plain copy of [`DiskStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStatsSnapshot {
    pub reads: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    pub in_flight: u64,
    pub io_ms: u64,
    pub weighted_ms: u64,
    pub flushes: u64,
    pub flush_ms: u64,
}

impl DiskStats {
    pub fn snapshot(&self) -> DiskStatsSnapshot {
        DiskStatsSnapshot {
            reads: self.reads.load(Relaxed),
            reads_merged: self.reads_merged.load(Relaxed),
            sectors_read: self.sectors_read.load(Relaxed),
            read_ms: self.read_ms.load(Relaxed),
            writes: self.writes.load(Relaxed),
            writes_merged: self.writes_merged.load(Relaxed),
            sectors_written: self.sectors_written.load(Relaxed),
            write_ms: self.write_ms.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            io_ms: self.io_ms.load(Relaxed),
            weighted_ms: self.weighted_ms.load(Relaxed),
            flushes: self.flushes.load(Relaxed),
            flush_ms: self.flush_ms.load(Relaxed),
        }
    }

    /// Notes `merged` requests folded into others before reaching the
    /// device (the cache's request merging).
    pub fn note_merged(&self, write: bool, merged: u64) {
        if write { &self.writes_merged } else { &self.reads_merged }.fetch_add(merged, Relaxed);
    }
}

/// One `/proc/diskstats` line (Linux ≥ 5.5 layout: 3 id fields and 17
/// counters; discards are not supported and read 0), newline included.
pub fn diskstats_line(major: u32, minor: u32, name: &str, s: &DiskStatsSnapshot) -> String {
    format!(
        "{:4} {:7} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}\n",
        major,
        minor,
        name,
        s.reads,
        s.reads_merged,
        s.sectors_read,
        s.read_ms,
        s.writes,
        s.writes_merged,
        s.sectors_written,
        s.write_ms,
        s.in_flight,
        s.io_ms,
        s.weighted_ms,
        0,
        0,
        0,
        0,
        s.flushes,
        s.flush_ms
    )
}

/// A device that counts every request into its own statistics and, for a
/// partition, into its disk's too (as Linux does).
pub struct CountedDevice {
    inner: Arc<dyn BlockDevice>,
    stats: Arc<DiskStats>,
    parent: Option<Arc<DiskStats>>,
    clock: Arc<dyn Clock>,
}

impl CountedDevice {
    pub fn new(
        inner: Arc<dyn BlockDevice>,
        stats: Arc<DiskStats>,
        parent: Option<Arc<DiskStats>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        CountedDevice { inner, stats, parent, clock }
    }

    fn each(&self, f: impl Fn(&DiskStats)) {
        f(&self.stats);
        if let Some(p) = &self.parent {
            f(p);
        }
    }

    /// Runs `op`, `requests` requests of `sectors512` sectors in all.
    fn timed<T>(
        &self,
        kind: Kind,
        requests: u64,
        sectors512: u64,
        op: impl FnOnce() -> Result<T, BlockError>,
    ) -> Result<T, BlockError> {
        self.each(|s| {
            s.in_flight.fetch_add(requests, Relaxed);
        });
        let t0 = self.clock.now_ms();
        let r = op();
        let dt = self.clock.now_ms().saturating_sub(t0);
        self.each(|s| {
            s.in_flight.fetch_sub(requests, Relaxed);
            s.io_ms.fetch_add(dt, Relaxed);
            s.weighted_ms.fetch_add(dt, Relaxed);
            if r.is_ok() {
                match kind {
                    Kind::Read => {
                        s.reads.fetch_add(requests, Relaxed);
                        s.sectors_read.fetch_add(sectors512, Relaxed);
                        s.read_ms.fetch_add(dt, Relaxed);
                    }
                    Kind::Write => {
                        s.writes.fetch_add(requests, Relaxed);
                        s.sectors_written.fetch_add(sectors512, Relaxed);
                        s.write_ms.fetch_add(dt, Relaxed);
                    }
                    Kind::Flush => {
                        s.flushes.fetch_add(requests, Relaxed);
                        s.flush_ms.fetch_add(dt, Relaxed);
                    }
                }
            }
        });
        r
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Read,
    Write,
    Flush,
}

impl BlockDevice for CountedDevice {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.inner.sector_count()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let n = buf.len() as u64 / 512;
        self.timed(Kind::Read, 1, n, || self.inner.read_sectors(lba, buf))
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        let n = buf.len() as u64 / 512;
        self.timed(Kind::Write, 1, n, || self.inner.write_sectors(lba, buf))
    }
    fn flush(&self) -> Result<(), BlockError> {
        self.timed(Kind::Flush, 1, 0, || self.inner.flush())
    }
    fn write_sectors_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BlockError> {
        let n = writes.iter().map(|(_, b)| b.len() as u64 / 512).sum();
        self.timed(Kind::Write, writes.len() as u64, n, || self.inner.write_sectors_many(writes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use core::sync::atomic::AtomicU64;

    struct Ticker(AtomicU64);
    impl Clock for Ticker {
        fn now_ms(&self) -> u64 {
            self.0.fetch_add(2, Relaxed)
        }
    }

    #[test]
    fn line_format_matches_linux() {
        let s = DiskStatsSnapshot { reads: 1, sectors_read: 8, writes: 2, sectors_written: 16, ..Default::default() };
        assert_eq!(diskstats_line(8, 0, "sda", &s), "   8       0 sda 1 0 8 0 2 0 16 0 0 0 0 0 0 0 0 0 0\n");
        // Linux prints exactly 20 whitespace-separated fields.
        assert_eq!(diskstats_line(259, 1, "nvme0n1p1", &s).split_whitespace().count(), 20);
    }

    #[test]
    fn partition_io_counts_for_partition_and_disk() {
        let disk_stats = Arc::new(DiskStats::default());
        let part_stats = Arc::new(DiskStats::default());
        let clock: Arc<dyn Clock> = Arc::new(Ticker(AtomicU64::new(0)));
        let raw: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(4096, 4));
        let dev = CountedDevice::new(raw, part_stats.clone(), Some(disk_stats.clone()), clock);
        dev.write_sectors(0, &[0; 8192]).unwrap();
        let mut b = [0; 4096];
        dev.read_sectors(1, &mut b).unwrap();
        dev.flush().unwrap();
        assert!(dev.read_sectors(9, &mut b).is_err());
        for s in [part_stats.snapshot(), disk_stats.snapshot()] {
            assert_eq!((s.reads, s.sectors_read, s.writes, s.sectors_written, s.flushes), (1, 8, 1, 16, 1));
            assert_eq!(s.in_flight, 0);
            assert_eq!(s.write_ms, 2);
        }
    }
}
