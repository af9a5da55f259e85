//! A bounded write-back block cache in front of one block device.
//!
//! The cache holds fixed-size blocks (4 KiB, or one sector if sectors are
//! larger) up to a byte budget. Writes dirty blocks in memory; dirty blocks
//! reach the device on [`BlockCache::flush`] (fsync, sync, unmount), when
//! they are older than the configured age ([`BlockCache::flush_expired`],
//! called from the kernel's periodic writeback), or when eviction needs
//! their memory. Runs of adjacent blocks are merged into one device request
//! on both paths (a miss that spans blocks reads them in one request; a
//! flush writes each run of consecutive dirty blocks in one request).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use spin::Mutex;

use crate::block::{BlockDevice, BlockError};
use crate::stats::{Clock, DiskStats};

/// Runs of dirty blocks handed to the device in one `write_sectors_many`.
const WRITE_BATCH_RUNS: usize = 8;

/// Tunables of one cache.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Memory the cached blocks may use, in bytes (at least a few blocks
    /// are always allowed).
    pub budget_bytes: usize,
    /// Dirty blocks older than this are written by `flush_expired`.
    pub max_dirty_age_ms: u64,
    /// Longest single device request the cache makes, in bytes.
    pub max_request_bytes: usize,
    /// Reads of at least this many whole sectors go straight from the
    /// device into the caller's buffer ([`BlockCache::read_direct`]).
    pub direct_read_min_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            budget_bytes: 16 << 20,
            max_dirty_age_ms: 5_000,
            max_request_bytes: 256 << 10,
            direct_read_min_bytes: 64 << 10,
        }
    }
}

/// Counters for tests and `/proc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    /// Blocks written back to the device.
    pub blocks_written: u64,
    /// Device write requests (a run of merged blocks counts once).
    pub write_requests: u64,
    /// Device read requests.
    pub read_requests: u64,
    /// Of those, reads straight into a caller's buffer (`read_direct`).
    pub direct_reads: u64,
    pub evictions: u64,
}

struct Entry {
    data: Vec<u8>,
    /// When the block was first dirtied since it was last written.
    dirty_since: Option<u64>,
    stamp: u64,
    /// Which of the block's sectors hold real contents (bit i: sector i).
    /// A block written in whole sectors without being read first (a FAT
    /// cluster that straddles two cache blocks) is partly valid until the
    /// rest is written too or it is filled from the device.
    valid: u64,
}

struct Inner {
    blocks: BTreeMap<u64, Entry>,
    /// The dirty blocks, so a flush costs what is dirty, not what is cached.
    dirty: BTreeSet<u64>,
    /// Recency order: stamp -> block number.
    lru: BTreeMap<u64, u64>,
    next_stamp: u64,
    bytes: usize,
    counters: CacheCounters,
}

/// The cache. Shared (`Arc`) by everything that does I/O on the device.
pub struct BlockCache {
    dev: Arc<dyn BlockDevice>,
    clock: Arc<dyn Clock>,
    stats: Option<Arc<DiskStats>>,
    config: CacheConfig,
    block_size: usize,
    sectors_per_block: u64,
    sector_size: usize,
    /// Device size in bytes.
    size: u64,
    inner: Mutex<Inner>,
}

impl BlockCache {
    pub fn new(dev: Arc<dyn BlockDevice>, clock: Arc<dyn Clock>, config: CacheConfig) -> Self {
        let ss = dev.sector_size().max(1) as usize;
        let block_size = if ss >= 4096 { ss } else { 4096 / ss * ss };
        let size = dev.sector_count().saturating_mul(ss as u64);
        BlockCache {
            sectors_per_block: (block_size / ss) as u64,
            sector_size: ss,
            block_size,
            size,
            dev,
            clock,
            stats: None,
            config,
            inner: Mutex::new(Inner {
                blocks: BTreeMap::new(),
                dirty: BTreeSet::new(),
                lru: BTreeMap::new(),
                next_stamp: 0,
                bytes: 0,
                counters: CacheCounters::default(),
            }),
        }
    }

    /// Merged requests are also counted into these disk statistics.
    pub fn with_stats(mut self, stats: Arc<DiskStats>) -> Self {
        self.stats = Some(stats);
        self
    }

    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }
    /// The cached device's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn read_only(&self) -> bool {
        self.dev.read_only()
    }
    pub fn counters(&self) -> CacheCounters {
        self.inner.lock().counters
    }
    /// Reads at least this long go straight to the device (`read_direct`).
    pub fn direct_read_min(&self) -> usize {
        self.config.direct_read_min_bytes
    }
    /// Bytes of dirty data waiting for writeback.
    pub fn dirty_bytes(&self) -> usize {
        self.inner.lock().dirty.len() * self.block_size
    }
    /// Bytes of cached data.
    pub fn cached_bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Length in bytes of block `b` (the last block may be short).
    fn block_len(&self, b: u64) -> usize {
        let start = b * self.block_size as u64;
        (self.size - start).min(self.block_size as u64) as usize
    }

    /// The validity mask of a whole block `b`.
    fn full_mask(&self, b: u64) -> u64 {
        let n = self.block_len(b).div_ceil(self.sector_size);
        if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
    }

    fn is_full(&self, inner: &Inner, b: u64) -> bool {
        inner.blocks.get(&b).is_some_and(|e| e.valid == self.full_mask(b))
    }

    /// Fills the sectors of `e` (block `b`) that are not valid from `src`,
    /// the block as the device has it.
    fn merge_into(&self, e: &mut Entry, b: u64, src: &[u8]) {
        let ss = self.sector_size;
        for (i, chunk) in src.chunks(ss).enumerate() {
            if i < 64 && e.valid & (1 << i) == 0 {
                e.data[i * ss..i * ss + chunk.len()].copy_from_slice(chunk);
            }
        }
        e.valid = self.full_mask(b);
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), BlockError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }

    /// Reads `buf.len()` bytes at byte `offset` of the device.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size as u64;
        let first = offset / bs;
        let last = (offset + buf.len() as u64 - 1) / bs;
        let mut inner = self.inner.lock();
        // Fast path: fatfs reads directory entries a field at a time, so
        // most reads are small hits in the block read just before.
        if first == last
            && let Some(e) = inner.blocks.get(&first)
            && e.valid == self.full_mask(first)
        {
            let start = (offset % bs) as usize;
            buf.copy_from_slice(&e.data[start..start + buf.len()]);
            inner.counters.hits += 1;
            self.touch(&mut inner, first);
            return Ok(());
        }
        self.load_range(&mut inner, first, last)?;
        let mut done = 0;
        for b in first..=last {
            let stamp = self.touch(&mut inner, b);
            let Some(e) = inner.blocks.get_mut(&b) else { return Err(BlockError::Io) };
            e.stamp = stamp;
            let start = if b == first { (offset % bs) as usize } else { 0 };
            let n = (e.data.len() - start).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&e.data[start..start + n]);
            done += n;
        }
        drop(inner);
        self.evict_over_budget()
    }

    /// Reads `buf.len()` bytes at byte `offset` like [`BlockCache::read`],
    /// but the whole sectors of a large read (at least
    /// `direct_read_min_bytes`) come straight from the device into `buf`
    /// in one request, without loading cache blocks: a big sequential
    /// read costs no copy through the cache and pushes nothing out of it.
    /// Sectors of dirty blocks in the range (newer than the device) are
    /// laid over what the device returned; a ragged head and tail go
    /// through the cache.
    pub fn read_direct(&self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(offset, buf.len())?;
        let ss = self.sector_size as u64;
        let end = offset + buf.len() as u64;
        let (a, b) = (offset.div_ceil(ss) * ss, end / ss * ss);
        if b <= a || b - a < self.config.direct_read_min_bytes as u64 {
            return self.read(offset, buf);
        }
        let (head, mid) = ((a - offset) as usize, (b - a) as usize);
        let (head_buf, rest) = buf.split_at_mut(head);
        let (out, tail_buf) = rest.split_at_mut(mid);
        if !head_buf.is_empty() {
            self.read(offset, head_buf)?;
        }
        if !tail_buf.is_empty() {
            self.read(b, tail_buf)?;
        }
        let mut inner = self.inner.lock();
        self.dev.read_sectors(a / ss, out)?;
        inner.counters.read_requests += 1;
        inner.counters.direct_reads += 1;
        let bs = self.block_size as u64;
        let inner = &*inner;
        for &blk in inner.dirty.range(a / bs..=(b - 1) / bs) {
            let Some(e) = inner.blocks.get(&blk) else { continue };
            for (i, sector) in e.data.chunks(ss as usize).enumerate() {
                let at = blk * bs + i as u64 * ss;
                if i < 64 && e.valid & (1 << i) != 0 && at >= a && at < b {
                    let o = (at - a) as usize;
                    out[o..o + sector.len()].copy_from_slice(sector);
                }
            }
        }
        Ok(())
    }

    /// Read-ahead: makes the blocks of `[offset, offset + len)` resident
    /// without copying anything out, reading each missing run in requests
    /// of up to `max_request_bytes`. At most a quarter of the budget is
    /// read per call, so read-ahead cannot push out what it is meant to
    /// speed up. Returns the bytes read from the device.
    pub fn prefetch(&self, offset: u64, len: u64) -> Result<u64, BlockError> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(0);
        }
        let bs = self.block_size as u64;
        let budget_blocks = (self.config.budget_bytes.max(4 * self.block_size) / 4 / self.block_size).max(1) as u64;
        let first = offset / bs;
        let last = ((end - 1) / bs).min(first + budget_blocks - 1);
        let mut inner = self.inner.lock();
        let before = inner.counters.misses;
        self.load_range_counted(&mut inner, first, last, false)?;
        let read = (inner.counters.misses - before) * bs;
        drop(inner);
        self.evict_over_budget()?;
        Ok(read)
    }

    /// Writes `buf` at byte `offset`; the data is dirty in the cache until
    /// written back.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.dev.read_only() {
            return Err(BlockError::ReadOnly);
        }
        self.check(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = self.block_size as u64;
        let ss = self.sector_size as u64;
        let first = offset / bs;
        let end = offset + buf.len() as u64;
        let last = (end - 1) / bs;
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        let mut done = 0;
        for b in first..=last {
            let start = b * bs;
            let len = self.block_len(b);
            // The bytes of this block the write covers: [lo, hi).
            let lo = (offset.max(start) - start) as usize;
            let hi = (end.min(start + len as u64) - start) as usize;
            let (s_lo, s_hi) = (lo / ss as usize, hi.div_ceil(ss as usize));
            // Sectors the write covers only in part keep their other bytes:
            // they must be valid first. Whole sectors need no read.
            let ragged = |e: Option<&Entry>| {
                let bit = |i: usize| i < 64 && e.is_some_and(|e| e.valid & (1 << i) != 0);
                (!lo.is_multiple_of(ss as usize) && !bit(s_lo)) || (!hi.is_multiple_of(ss as usize) && !bit(s_hi - 1))
            };
            if ragged(inner.blocks.get(&b)) {
                self.load_range(&mut inner, b, b)?;
            }
            let stamp = self.touch(&mut inner, b);
            if let alloc::collections::btree_map::Entry::Vacant(v) = inner.blocks.entry(b) {
                v.insert(Entry { data: vec![0; len], dirty_since: None, stamp, valid: 0 });
                inner.bytes += len;
            }
            let Some(e) = inner.blocks.get_mut(&b) else { return Err(BlockError::Io) };
            e.stamp = stamp;
            e.data[lo..hi].copy_from_slice(&buf[done..done + (hi - lo)]);
            for i in s_lo..s_hi.min(64) {
                e.valid |= 1 << i;
            }
            e.dirty_since.get_or_insert(now);
            inner.dirty.insert(b);
            done += hi - lo;
        }
        drop(inner);
        self.evict_over_budget()
    }

    /// Writes every dirty block, then issues a device flush (barrier).
    pub fn flush(&self) -> Result<(), BlockError> {
        let mut inner = self.inner.lock();
        let dirty: Vec<u64> = inner.dirty.iter().copied().collect();
        self.write_back(&mut inner, &dirty)?;
        drop(inner);
        if !self.dev.read_only() {
            self.dev.flush()?;
        }
        Ok(())
    }

    /// Writes the blocks dirty for longer than the configured age, then
    /// flushes the device if anything was written. Returns the blocks written.
    pub fn flush_expired(&self, now_ms: u64) -> Result<usize, BlockError> {
        let mut inner = self.inner.lock();
        let age = self.config.max_dirty_age_ms;
        let old: Vec<u64> = inner
            .dirty
            .iter()
            .copied()
            .filter(|b| inner.blocks.get(b).and_then(|e| e.dirty_since).is_some_and(|t| now_ms.saturating_sub(t) >= age))
            .collect();
        self.write_back(&mut inner, &old)?;
        drop(inner);
        if !old.is_empty() {
            self.dev.flush()?;
        }
        Ok(old.len())
    }

    /// Drops every clean block (dirty ones stay): after the medium was
    /// changed behind the cache's back, or to free memory.
    pub fn drop_clean(&self) {
        let mut inner = self.inner.lock();
        let clean: Vec<(u64, u64)> =
            inner.blocks.iter().filter(|(_, e)| e.dirty_since.is_none()).map(|(&b, e)| (b, e.stamp)).collect();
        for (b, stamp) in clean {
            if let Some(e) = inner.blocks.remove(&b) {
                inner.bytes -= e.data.len();
            }
            inner.lru.remove(&stamp);
        }
    }

    fn touch(&self, inner: &mut Inner, b: u64) -> u64 {
        if let Some(e) = inner.blocks.get_mut(&b) {
            let old = e.stamp;
            if old + 1 == inner.next_stamp {
                return old; // already the most recent
            }
            inner.lru.remove(&old);
            let stamp = inner.next_stamp;
            e.stamp = stamp;
            inner.next_stamp += 1;
            inner.lru.insert(stamp, b);
            return stamp;
        }
        let stamp = inner.next_stamp;
        inner.next_stamp += 1;
        inner.lru.insert(stamp, b);
        stamp
    }

    /// Makes blocks `first..=last` resident, reading each run of missing
    /// blocks with as few requests as `max_request_bytes` allows.
    fn load_range(&self, inner: &mut Inner, first: u64, last: u64) -> Result<(), BlockError> {
        self.load_range_counted(inner, first, last, true)
    }

    /// `load_range`; `count_hits` false for read-ahead (no one asked for
    /// the blocks yet).
    fn load_range_counted(&self, inner: &mut Inner, first: u64, last: u64, count_hits: bool) -> Result<(), BlockError> {
        let max_blocks = (self.config.max_request_bytes / self.block_size).max(1) as u64;
        let mut b = first;
        while b <= last {
            if self.is_full(inner, b) {
                inner.counters.hits += count_hits as u64;
                b += 1;
                continue;
            }
            let mut end = b;
            while end < last && end + 1 - b < max_blocks && !self.is_full(inner, end + 1) {
                end += 1;
            }
            let start_byte = b * self.block_size as u64;
            let len = ((end + 1) * self.block_size as u64).min(self.size) - start_byte;
            let mut buf = vec![0u8; len as usize];
            self.dev.read_sectors(b * self.sectors_per_block, &mut buf)?;
            inner.counters.read_requests += 1;
            inner.counters.misses += end - b + 1;
            if let Some(s) = &self.stats {
                s.note_merged(false, end - b);
            }
            for (i, blk) in (b..=end).enumerate() {
                let from = i * self.block_size;
                let to = (from + self.block_size).min(buf.len());
                let stamp = self.touch(inner, blk);
                // A partly written block keeps what was written.
                if let Some(mut e) = inner.blocks.remove(&blk) {
                    self.merge_into(&mut e, blk, &buf[from..to]);
                    e.stamp = stamp;
                    inner.blocks.insert(blk, e);
                    continue;
                }
                inner.bytes += to - from;
                let valid = self.full_mask(blk);
                inner.blocks.insert(blk, Entry { data: buf[from..to].to_vec(), dirty_since: None, stamp, valid });
            }
            b = end + 1;
        }
        Ok(())
    }

    /// Writes the given dirty blocks (sorted), merging runs of consecutive
    /// blocks into single requests, and marks them clean.
    fn write_back(&self, inner: &mut Inner, blocks: &[u64]) -> Result<(), BlockError> {
        let max_blocks = (self.config.max_request_bytes / self.block_size).max(1);
        // A block written only in part is completed from the device first
        // (rare: usually the neighbouring write has filled it by now).
        for &b in blocks {
            if inner.blocks.contains_key(&b) && !self.is_full(inner, b) {
                self.load_range_counted(inner, b, b, false)?;
            }
        }
        // Runs of consecutive blocks, each one request; up to
        // WRITE_BATCH_RUNS runs go to the device at once (in flight
        // together where the driver can).
        let mut i = 0;
        while i < blocks.len() {
            let mut runs: Vec<(usize, usize, Vec<u8>)> = Vec::new();
            while i < blocks.len() && runs.len() < WRITE_BATCH_RUNS {
                let mut j = i + 1;
                while j < blocks.len() && blocks[j] == blocks[j - 1] + 1 && j - i < max_blocks {
                    j += 1;
                }
                let mut buf = Vec::with_capacity((j - i) * self.block_size);
                for b in &blocks[i..j] {
                    if let Some(e) = inner.blocks.get(b) {
                        buf.extend_from_slice(&e.data);
                    }
                }
                runs.push((i, j, buf));
                i = j;
            }
            let writes: Vec<(u64, &[u8])> =
                runs.iter().map(|(a, _, buf)| (blocks[*a] * self.sectors_per_block, buf.as_slice())).collect();
            self.dev.write_sectors_many(&writes)?;
            for (a, b, _) in &runs {
                inner.counters.write_requests += 1;
                inner.counters.blocks_written += (b - a) as u64;
                if let Some(s) = &self.stats {
                    s.note_merged(true, (b - a - 1) as u64);
                }
                for blk in &blocks[*a..*b] {
                    if let Some(e) = inner.blocks.get_mut(blk) {
                        e.dirty_since = None;
                    }
                    inner.dirty.remove(blk);
                }
            }
        }
        Ok(())
    }

    /// Evicts least recently used blocks while over budget; a dirty victim
    /// is written back first, together with its dirty neighbours.
    fn evict_over_budget(&self) -> Result<(), BlockError> {
        let mut inner = self.inner.lock();
        let budget = self.config.budget_bytes.max(4 * self.block_size);
        while inner.bytes > budget {
            let Some((&stamp, &b)) = inner.lru.iter().next() else { break };
            if inner.blocks.get(&b).is_some_and(|e| e.dirty_since.is_some()) {
                let max_blocks = (self.config.max_request_bytes / self.block_size).max(1) as u64;
                let mut lo = b;
                while lo > 0
                    && b - lo + 1 < max_blocks
                    && inner.blocks.get(&(lo - 1)).is_some_and(|e| e.dirty_since.is_some())
                {
                    lo -= 1;
                }
                let mut hi = b;
                while hi - lo + 1 < max_blocks && inner.blocks.get(&(hi + 1)).is_some_and(|e| e.dirty_since.is_some()) {
                    hi += 1;
                }
                let run: Vec<u64> = (lo..=hi).collect();
                self.write_back(&mut inner, &run)?;
            }
            inner.lru.remove(&stamp);
            if let Some(e) = inner.blocks.remove(&b) {
                inner.bytes -= e.data.len();
            }
            inner.counters.evictions += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use crate::stats::NoClock;
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

    /// Counts device requests and their sizes.
    struct Spy {
        disk: MemDisk,
        writes: AtomicUsize,
        reads: AtomicUsize,
        flushes: AtomicUsize,
        last_write_len: AtomicUsize,
    }
    impl Spy {
        fn new(sectors: u64) -> Arc<Spy> {
            Arc::new(Spy {
                disk: MemDisk::new(512, sectors),
                writes: AtomicUsize::new(0),
                reads: AtomicUsize::new(0),
                flushes: AtomicUsize::new(0),
                last_write_len: AtomicUsize::new(0),
            })
        }
    }
    impl BlockDevice for Spy {
        fn sector_size(&self) -> u32 {
            512
        }
        fn sector_count(&self) -> u64 {
            self.disk.sector_count()
        }
        fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            self.reads.fetch_add(1, Relaxed);
            self.disk.read_sectors(lba, buf)
        }
        fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
            self.writes.fetch_add(1, Relaxed);
            self.last_write_len.store(buf.len(), Relaxed);
            self.disk.write_sectors(lba, buf)
        }
        fn flush(&self) -> Result<(), BlockError> {
            self.flushes.fetch_add(1, Relaxed);
            Ok(())
        }
    }

    struct Manual(AtomicU64);
    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(Relaxed)
        }
    }

    fn cache(spy: &Arc<Spy>, budget: usize) -> BlockCache {
        BlockCache::new(spy.clone(), Arc::new(NoClock), CacheConfig { budget_bytes: budget, ..Default::default() })
    }

    #[test]
    fn write_back_only_on_flush_and_merged() {
        let spy = Spy::new(1024);
        let c = cache(&spy, 1 << 20);
        // 64 KiB written as 16 separate 4 KiB writes, unaligned by 100 bytes.
        for i in 0..16u64 {
            c.write(100 + i * 4096, &[i as u8 + 1; 4096]).unwrap();
        }
        assert_eq!(spy.writes.load(Relaxed), 0, "write-back cache wrote early");
        c.flush().unwrap();
        // 17 consecutive blocks, one merged request.
        assert_eq!(spy.writes.load(Relaxed), 1);
        assert_eq!(spy.last_write_len.load(Relaxed), 17 * 4096);
        assert_eq!(spy.flushes.load(Relaxed), 1);
        let mut b = [0u8; 4096];
        spy.disk.read_sectors(0, &mut b[..512]).unwrap();
        assert_eq!(&b[..100], &[0u8; 100]);
        assert_eq!(b[100], 1);
        let mut all = vec![0u8; 65536];
        c.read(100, &mut all).unwrap();
        assert!(all.chunks(4096).enumerate().all(|(i, ch)| ch.iter().all(|&x| x == i as u8 + 1)));
    }

    #[test]
    fn misses_spanning_blocks_are_one_request() {
        let spy = Spy::new(1024);
        spy.disk.write_sectors(0, &[5u8; 512 * 64]).unwrap();
        let c = cache(&spy, 1 << 20);
        let mut buf = vec![0u8; 32 * 1024];
        c.read(0, &mut buf).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 1);
        c.read(0, &mut buf).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 1, "second read should hit");
        assert_eq!(c.counters().hits, 8);
    }

    #[test]
    fn budget_bounds_memory_and_evicts_dirty_blocks_through_writeback() {
        let spy = Spy::new(4096); // 2 MiB
        let c = cache(&spy, 64 * 1024);
        for i in 0..256u64 {
            c.write(i * 4096, &[(i % 251) as u8; 4096]).unwrap();
            assert!(c.cached_bytes() <= 64 * 1024);
        }
        assert!(spy.writes.load(Relaxed) > 0);
        c.flush().unwrap();
        for i in 0..256u64 {
            let mut b = [0u8; 4096];
            spy.disk.read_sectors(i * 8, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == (i % 251) as u8), "block {i}");
        }
    }

    #[test]
    fn flush_expired_writes_only_old_blocks() {
        let spy = Spy::new(1024);
        let clock = Arc::new(Manual(AtomicU64::new(1000)));
        let c =
            BlockCache::new(spy.clone(), clock.clone(), CacheConfig { max_dirty_age_ms: 5000, ..Default::default() });
        c.write(0, &[1; 4096]).unwrap();
        clock.0.store(4000, Relaxed);
        c.write(65536, &[2; 4096]).unwrap();
        assert_eq!(c.flush_expired(5999).unwrap(), 0);
        assert_eq!(c.flush_expired(6000).unwrap(), 1);
        assert_eq!(c.dirty_bytes(), 4096);
        let mut b = [0u8; 512];
        spy.disk.read_sectors(0, &mut b).unwrap();
        assert_eq!(b, [1; 512]);
        spy.disk.read_sectors(128, &mut b).unwrap();
        assert_eq!(b, [0; 512]);
        assert_eq!(c.flush_expired(9000).unwrap(), 1);
        assert_eq!(c.dirty_bytes(), 0);
    }

    #[test]
    fn whole_sector_writes_need_no_read_and_partial_blocks_merge() {
        let spy = Spy::new(64);
        spy.disk.write_sectors(0, &[9u8; 512 * 16]).unwrap();
        let c = cache(&spy, 1 << 20);
        // Sectors 1..3 of block 0 and 6..10 (across blocks 0 and 1): whole
        // sectors, so nothing is read (a FAT cluster straddling blocks).
        c.write(512, &[1; 1024]).unwrap();
        c.write(6 * 512, &[2; 2048]).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 0, "whole-sector writes read the device");
        // Reading the block fills the sectors nobody wrote from the device.
        let mut b = vec![0u8; 8192];
        c.read(0, &mut b).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 1);
        assert!(b[..512].iter().all(|&x| x == 9));
        assert!(b[512..1536].iter().all(|&x| x == 1));
        assert!(b[1536..3072].iter().all(|&x| x == 9));
        assert!(b[3072..5120].iter().all(|&x| x == 2));
        assert!(b[5120..].iter().all(|&x| x == 9));
        // A byte-sized write into a sector no one has read reads it first.
        let spy = Spy::new(64);
        spy.disk.write_sectors(0, &[7u8; 512 * 16]).unwrap();
        let c = cache(&spy, 1 << 20);
        c.write(4096 + 512, &[3; 512]).unwrap();
        c.write(4096 + 10, &[4; 4]).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 1);
        // Write-back of a block still partly written fills it first, so the
        // device never gets zeros for sectors nobody wrote.
        let spy = Spy::new(64);
        spy.disk.write_sectors(0, &[5u8; 512 * 16]).unwrap();
        let c = cache(&spy, 1 << 20);
        c.write(3 * 512, &[6; 512]).unwrap();
        c.flush().unwrap();
        let mut d = vec![0u8; 4096];
        spy.disk.read_sectors(0, &mut d).unwrap();
        assert!(d[..1536].iter().all(|&x| x == 5) && d[1536..2048].iter().all(|&x| x == 6));
        assert!(d[2048..].iter().all(|&x| x == 5));
    }

    #[test]
    fn prefetch_loads_in_large_requests_within_a_quarter_of_the_budget() {
        let spy = Spy::new(4096);
        let c = cache(&spy, 1 << 20);
        assert_eq!(c.prefetch(0, 512 * 1024).unwrap(), 256 * 1024, "a quarter of the budget");
        assert_eq!(spy.reads.load(Relaxed), 1, "one request of the maximum size");
        let mut b = vec![0u8; 256 * 1024];
        c.read(0, &mut b).unwrap();
        assert_eq!(spy.reads.load(Relaxed), 1, "the read hit the prefetched blocks");
        assert_eq!(c.prefetch(u64::MAX - 10, 100).unwrap(), 0);
    }

    #[test]
    fn direct_reads_bypass_the_blocks_and_see_dirty_data() {
        let spy = Spy::new(2048); // 1 MiB
        for s in 0..2048u64 {
            spy.disk.write_sectors(s, &[(s % 251) as u8; 512]).unwrap();
        }
        let c = cache(&spy, 1 << 20);
        // Dirty data inside the range: a whole block and one sector of another.
        c.write(64 * 1024, &[0xaa; 4096]).unwrap();
        c.write(100 * 1024, &[0xbb; 512]).unwrap();
        let before = c.cached_bytes();
        // Unaligned start and end: a ragged head and tail through the cache.
        let (off, len) = (1000u64, 300 * 1024);
        let mut b = vec![0u8; len];
        let reads = spy.reads.load(Relaxed);
        c.read_direct(off, &mut b).unwrap();
        assert_eq!(c.counters().direct_reads, 1);
        // Head block, tail block, the direct request.
        assert_eq!(spy.reads.load(Relaxed) - reads, 3);
        assert!(c.cached_bytes() <= before + 2 * 4096, "the middle was cached");
        for (i, &x) in b.iter().enumerate() {
            let at = off + i as u64;
            let want = if (64 * 1024..68 * 1024).contains(&at) {
                0xaa
            } else if (100 * 1024..100 * 1024 + 512).contains(&at) {
                0xbb
            } else {
                ((at / 512) % 251) as u8
            };
            assert_eq!(x, want, "byte at {at}");
        }
        // Small reads go through the cache as before.
        let mut s = [0u8; 100];
        c.read_direct(5000, &mut s).unwrap();
        assert_eq!(c.counters().direct_reads, 1);
        assert_eq!(c.read_direct(1 << 20, &mut s), Err(BlockError::OutOfRange));
    }

    #[test]
    fn flush_writes_only_dirty_blocks() {
        let spy = Spy::new(1024);
        let c = cache(&spy, 1 << 20);
        let mut b = vec![0u8; 256 * 1024];
        c.read(0, &mut b).unwrap();
        c.write(8192, &[1; 4096]).unwrap();
        assert_eq!(c.dirty_bytes(), 4096);
        c.flush().unwrap();
        assert_eq!(spy.writes.load(Relaxed), 1);
        assert_eq!(spy.last_write_len.load(Relaxed), 4096);
        assert_eq!(c.dirty_bytes(), 0);
    }

    #[test]
    fn short_last_block_and_bounds() {
        // 9 sectors: the second block is one sector long.
        let spy = Spy::new(9);
        let c = cache(&spy, 1 << 20);
        c.write(4096, &[3; 512]).unwrap();
        assert_eq!(c.write(4096, &[3; 513]), Err(BlockError::OutOfRange));
        let mut b = [0u8; 512];
        assert_eq!(c.read(4097, &mut b), Err(BlockError::OutOfRange));
        c.flush().unwrap();
        spy.disk.read_sectors(8, &mut b).unwrap();
        assert_eq!(b, [3; 512]);
    }

    #[test]
    fn read_only_device_refuses_writes() {
        let c =
            BlockCache::new(Arc::new(MemDisk::new(512, 8).into_read_only()), Arc::new(NoClock), CacheConfig::default());
        assert_eq!(c.write(0, &[0; 10]), Err(BlockError::ReadOnly));
        c.flush().unwrap();
    }
}
