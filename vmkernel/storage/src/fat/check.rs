//! The mount-time checks of a FAT volume, independent of the fatfs crate:
//! the boot sector is validated field by field (a bad one is refused with
//! the reason), and the first FAT is walked once to find cluster chains
//! that loop or leave the volume — which would make fatfs walk forever or
//! off the disk. The walk is O(clusters) in time and memory and bounded.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::block::BlockError;
use crate::cache::BlockCache;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

/// The layout a boot sector describes, in bytes and clusters.
#[derive(Clone, Debug)]
pub struct Geometry {
    pub kind: FatKind,
    pub bytes_per_sector: u32,
    pub sectors_per_cluster: u32,
    pub reserved_sectors: u32,
    pub fats: u32,
    pub fat_sectors: u32,
    pub root_entries: u32,
    pub total_sectors: u64,
    /// Data clusters; valid cluster numbers are `2..clusters + 2`.
    pub clusters: u32,
    /// FAT32's root directory cluster (0 otherwise).
    pub root_cluster: u32,
    /// FAT32's FSInfo sector (0 otherwise).
    pub fsinfo_sector: u32,
    pub volume_id: u32,
}

impl Geometry {
    /// Byte offset of FAT copy `n`.
    pub fn fat_offset(&self, n: u32) -> u64 {
        (self.reserved_sectors as u64 + n as u64 * self.fat_sectors as u64) * self.bytes_per_sector as u64
    }
    /// Byte offset of entry `cluster` within a FAT, and its byte length.
    fn entry_pos(&self, cluster: u32) -> (u64, usize) {
        match self.kind {
            FatKind::Fat12 => (cluster as u64 + cluster as u64 / 2, 2),
            FatKind::Fat16 => (cluster as u64 * 2, 2),
            FatKind::Fat32 => (cluster as u64 * 4, 4),
        }
    }
    fn eoc(&self) -> u32 {
        match self.kind {
            FatKind::Fat12 => 0xFFF,
            FatKind::Fat16 => 0xFFFF,
            FatKind::Fat32 => 0x0FFF_FFFF,
        }
    }
}

fn le16(b: &[u8], o: usize) -> u32 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u32
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Validates a boot sector against a device of `device_bytes` bytes.
/// The error says which field is wrong, for the log.
pub fn parse_boot_sector(bs: &[u8], device_bytes: u64) -> Result<Geometry, String> {
    if bs.len() < 512 {
        return Err(String::from("boot sector shorter than 512 bytes"));
    }
    if bs[510] != 0x55 || bs[511] != 0xAA {
        return Err(format!("no boot signature (bytes 510-511 are {:02x} {:02x}, want 55 aa)", bs[510], bs[511]));
    }
    if !matches!(bs[0], 0xEB | 0xE9) {
        return Err(format!("no jump instruction at byte 0 ({:#04x})", bs[0]));
    }
    let bps = le16(bs, 11);
    if !matches!(bps, 512 | 1024 | 2048 | 4096) {
        return Err(format!("bad bytes per sector {bps}"));
    }
    let spc = bs[13] as u32;
    if spc == 0 || !spc.is_power_of_two() {
        return Err(format!("bad sectors per cluster {spc}"));
    }
    let reserved = le16(bs, 14);
    if reserved == 0 {
        return Err(String::from("no reserved sectors"));
    }
    let fats = bs[16] as u32;
    if !(1..=4).contains(&fats) {
        return Err(format!("bad number of FATs {fats}"));
    }
    let root_entries = le16(bs, 17);
    let total16 = le16(bs, 19);
    let total = if total16 != 0 { total16 as u64 } else { le32(bs, 32) as u64 };
    let fat16_size = le16(bs, 22);
    let fat_sectors = if fat16_size != 0 { fat16_size } else { le32(bs, 36) };
    if fat_sectors == 0 {
        return Err(String::from("FAT size is 0"));
    }
    if total == 0 {
        return Err(String::from("total sector count is 0"));
    }
    if total.saturating_mul(bps as u64) > device_bytes {
        return Err(format!(
            "volume claims {total} sectors of {bps} bytes but the device holds only {device_bytes} bytes"
        ));
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved as u64 + fats as u64 * fat_sectors as u64 + root_dir_sectors as u64;
    if first_data >= total {
        return Err(format!("metadata ({first_data} sectors) fills the whole volume ({total} sectors)"));
    }
    let clusters64 = (total - first_data) / spc as u64;
    if clusters64 == 0 || clusters64 > 0x0FFF_FFF5 {
        return Err(format!("bad cluster count {clusters64}"));
    }
    let clusters = clusters64 as u32;
    let kind = if clusters < 4085 {
        FatKind::Fat12
    } else if clusters < 65525 {
        FatKind::Fat16
    } else {
        FatKind::Fat32
    };
    if kind == FatKind::Fat32 && (fat16_size != 0 || root_entries != 0) {
        return Err(String::from("FAT32-sized volume with FAT12/16 fields set"));
    }
    if kind != FatKind::Fat32 && root_entries == 0 {
        return Err(String::from("FAT12/16 volume without root directory entries"));
    }
    let bits: u64 = match kind {
        FatKind::Fat12 => 12,
        FatKind::Fat16 => 16,
        FatKind::Fat32 => 32,
    };
    let needed = ((clusters as u64 + 2) * bits).div_ceil(8).div_ceil(bps as u64);
    if (fat_sectors as u64) < needed {
        return Err(format!("FAT of {fat_sectors} sectors is too small for {clusters} clusters (needs {needed})"));
    }
    let (root_cluster, fsinfo_sector, volume_id) = if kind == FatKind::Fat32 {
        let rc = le32(bs, 44);
        if rc < 2 || rc >= clusters + 2 {
            return Err(format!("root directory cluster {rc} is outside the volume"));
        }
        (rc, le16(bs, 48), le32(bs, 67))
    } else {
        (0, 0, le32(bs, 39))
    };
    Ok(Geometry {
        kind,
        bytes_per_sector: bps,
        sectors_per_cluster: spc,
        reserved_sectors: reserved,
        fats,
        fat_sectors,
        root_entries,
        total_sectors: total,
        clusters,
        root_cluster,
        fsinfo_sector,
        volume_id,
    })
}

/// A link the check found wrong and how to mend it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// The cluster whose FAT entry is wrong.
    pub cluster: u32,
    /// What the entry holds.
    pub was: u32,
    pub why: &'static str,
}

/// What the FAT walk found.
#[derive(Clone, Debug, Default)]
pub struct FatReport {
    /// Entries to set to end-of-chain.
    pub repairs: Vec<Repair>,
    /// The first FAT as read, with the repairs applied (empty if skipped).
    pub next: Vec<u32>,
    /// Set when the volume is too big for the mount-time walk.
    pub skipped: Option<String>,
}

/// Largest volume (in clusters) the mount-time walk handles: 4 bytes of
/// memory per cluster (256 MiB of FAT32 entries at the limit).
pub const MAX_CHECKED_CLUSTERS: u32 = 64 << 20;

/// Reads the first FAT and finds every link that points outside the data
/// area, into a free cluster, or back into its own chain (a loop). Each is
/// reported with the fix: make that cluster the end of its chain.
pub fn check_fat(cache: &BlockCache, g: &Geometry) -> Result<FatReport, BlockError> {
    let mut report = FatReport::default();
    if g.clusters > MAX_CHECKED_CLUSTERS {
        report.skipped = Some(format!("{} clusters is more than the mount-time check handles", g.clusters));
        return Ok(report);
    }
    let n = g.clusters as usize + 2;
    let (_, width) = g.entry_pos(0);
    let fat_bytes =
        (g.entry_pos(n as u32 - 1).0 as usize + width).min(g.fat_sectors as usize * g.bytes_per_sector as usize);
    // Read the FAT in pieces so the peak is one piece plus `next`.
    let mut next: Vec<u32> = vec![0; n];
    let start = g.fat_offset(0);
    const PIECE: usize = 1 << 20;
    let mut piece = vec![0u8; PIECE + 4];
    let mut base = 0usize;
    while base < fat_bytes {
        let len = (fat_bytes - base).min(PIECE + 4);
        cache.read(start + base as u64, &mut piece[..len])?;
        // Entries that start in [base, base + PIECE) and end within `len`.
        let first = match g.kind {
            FatKind::Fat12 => (base * 2).div_ceil(3),
            FatKind::Fat16 => base / 2,
            FatKind::Fat32 => base / 4,
        };
        let mut c = first;
        while c < n {
            let (pos, w) = g.entry_pos(c as u32);
            let pos = pos as usize;
            if pos >= base + PIECE || pos + w > base + len {
                break;
            }
            let o = pos - base;
            next[c] = match g.kind {
                FatKind::Fat12 => {
                    let v = le16(&piece, o);
                    if c % 2 == 1 { v >> 4 } else { v & 0xFFF }
                }
                FatKind::Fat16 => le16(&piece, o),
                FatKind::Fat32 => le32(&piece, o) & 0x0FFF_FFFF,
            };
            c += 1;
        }
        base += PIECE;
    }
    let (bad, eoc_min) = match g.kind {
        FatKind::Fat12 => (0xFF7, 0xFF8),
        FatKind::Fat16 => (0xFFF7, 0xFFF8),
        FatKind::Fat32 => (0x0FFF_FFF7, 0x0FFF_FFF8),
    };
    let is_link = |v: u32| v != 0 && v != bad && v < eoc_min;
    // Each walk marks the clusters it visits with its own number; meeting
    // one's own mark again is a loop, meeting another walk's is a join
    // into a chain already checked.
    let mut mark: Vec<u32> = vec![0; n];
    let mut walk = 0u32;
    for head in 2..n {
        if mark[head] != 0 || !is_link(next[head]) {
            continue;
        }
        walk += 1;
        let mut cur = head;
        loop {
            mark[cur] = walk;
            let v = next[cur];
            if !is_link(v) {
                break;
            }
            let why = if v < 2 || v as usize >= n {
                Some("points outside the data area")
            } else if next[v as usize] == 0 {
                Some("points to a free cluster")
            } else if mark[v as usize] == walk {
                Some("closes a loop in its chain")
            } else {
                None
            };
            if let Some(why) = why {
                report.repairs.push(Repair { cluster: cur as u32, was: v, why });
                next[cur] = g.eoc();
                break;
            }
            if mark[v as usize] != 0 {
                break; // joins a chain already walked
            }
            cur = v as usize;
        }
    }
    report.next = next;
    Ok(report)
}

/// Reads bytes of the volume at an offset.
pub type ReadAt<'a> = dyn FnMut(u64, &mut [u8]) -> Result<(), BlockError> + 'a;

/// The byte writes that set `cluster`'s entry to end-of-chain in every FAT
/// copy, given a reader for the current bytes: `(offset, bytes)`.
pub fn end_chain_writes(g: &Geometry, cluster: u32, read: &mut ReadAt<'_>) -> Result<Vec<(u64, Vec<u8>)>, BlockError> {
    let (pos, w) = g.entry_pos(cluster);
    let mut out = Vec::new();
    for copy in 0..g.fats {
        let off = g.fat_offset(copy) + pos;
        let mut b = vec![0u8; w];
        read(off, &mut b)?;
        match g.kind {
            FatKind::Fat12 => {
                let v = u16::from_le_bytes([b[0], b[1]]);
                let v = if cluster % 2 == 1 { (v & 0x000F) | 0xFFF0 } else { (v & 0xF000) | 0x0FFF };
                b.copy_from_slice(&v.to_le_bytes());
            }
            FatKind::Fat16 => b.copy_from_slice(&0xFFFFu16.to_le_bytes()),
            FatKind::Fat32 => {
                let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                b.copy_from_slice(&((v & 0xF000_0000) | 0x0FFF_FFFF).to_le_bytes());
            }
        }
        out.push((off, b));
    }
    Ok(out)
}

impl Geometry {
    /// Bytes per cluster.
    pub fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster as u64 * self.bytes_per_sector as u64
    }
    fn root_dir_bytes(&self) -> u64 {
        (self.root_entries as u64 * 32).div_ceil(self.bytes_per_sector as u64) * self.bytes_per_sector as u64
    }
    /// Byte offset of the FAT12/16 root directory region.
    fn root_dir_offset(&self) -> u64 {
        self.fat_offset(self.fats)
    }
    /// Byte offset of cluster `c` (≥ 2).
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.root_dir_offset() + self.root_dir_bytes() + (c as u64 - 2) * self.cluster_bytes()
    }
    /// Offset of the boot sector byte holding the volume's dirty flag.
    pub fn dirty_flag_offset(&self) -> u64 {
        if self.kind == FatKind::Fat32 { 0x41 } else { 0x25 }
    }
    fn bad(&self) -> u32 {
        match self.kind {
            FatKind::Fat12 => 0xFF7,
            FatKind::Fat16 => 0xFFF7,
            FatKind::Fat32 => 0x0FFF_FFF7,
        }
    }
    fn is_link(&self, v: u32) -> bool {
        v >= 2 && v < self.clusters + 2
    }
}

/// Sets FAT entry `cluster` to `value` in every FAT copy (and in `next`).
pub fn set_fat(cache: &BlockCache, g: &Geometry, next: &mut [u32], cluster: u32, value: u32) -> Result<(), BlockError> {
    let (pos, w) = g.entry_pos(cluster);
    for copy in 0..g.fats {
        let off = g.fat_offset(copy) + pos;
        let mut b = [0u8; 4];
        cache.read(off, &mut b[..w])?;
        match g.kind {
            FatKind::Fat12 => {
                let v = u16::from_le_bytes([b[0], b[1]]);
                let value = (value & 0xFFF) as u16;
                let v = if cluster % 2 == 1 { (v & 0x000F) | (value << 4) } else { (v & 0xF000) | value };
                b[..2].copy_from_slice(&v.to_le_bytes());
            }
            FatKind::Fat16 => b[..2].copy_from_slice(&(value as u16).to_le_bytes()),
            FatKind::Fat32 => {
                let v = u32::from_le_bytes(b);
                b.copy_from_slice(&((v & 0xF000_0000) | (value & 0x0FFF_FFFF)).to_le_bytes());
            }
        }
        cache.write(off, &b[..w])?;
    }
    if let Some(slot) = next.get_mut(cluster as usize) {
        *slot = value;
    }
    Ok(())
}

/// Copies the first FAT over the others where they differ (a crash can
/// leave the copies half-updated). Returns whether anything differed.
pub fn sync_fat_copies(cache: &BlockCache, g: &Geometry) -> Result<bool, BlockError> {
    let bytes = g.fat_sectors as u64 * g.bytes_per_sector as u64;
    const PIECE: u64 = 256 << 10;
    let mut a = vec![0u8; PIECE as usize];
    let mut b = vec![0u8; PIECE as usize];
    let mut differed = false;
    for copy in 1..g.fats {
        let mut at = 0;
        while at < bytes {
            let n = (bytes - at).min(PIECE) as usize;
            cache.read(g.fat_offset(0) + at, &mut a[..n])?;
            cache.read(g.fat_offset(copy) + at, &mut b[..n])?;
            if a[..n] != b[..n] {
                cache.write(g.fat_offset(copy) + at, &a[..n])?;
                differed = true;
            }
            at += n as u64;
        }
    }
    Ok(differed)
}

/// Deepest directory nesting the tree scan follows.
const MAX_DEPTH: usize = 128;

struct Scan<'a> {
    cache: &'a BlockCache,
    g: &'a Geometry,
    next: &'a mut Vec<u32>,
    owned: Vec<bool>,
    log: Vec<String>,
}

impl Scan<'_> {
    /// The clusters of a chain from `first`, stopping at its end, at a
    /// cluster another entry owns (returned as the second value), or at
    /// the volume's cluster count (a bound; loops were cut before).
    fn chain(&self, first: u32) -> (Vec<u32>, bool) {
        let mut v = Vec::new();
        let mut c = first;
        loop {
            if self.owned[c as usize] || v.len() > self.g.clusters as usize {
                return (v, true);
            }
            v.push(c);
            let n = self.next[c as usize];
            if !self.g.is_link(n) || self.next[n as usize] == 0 {
                return (v, false);
            }
            c = n;
        }
    }

    fn write_entry(&mut self, at: u64, first: u32, size: u32) -> Result<(), BlockError> {
        self.cache.write(at + 20, &((first >> 16) as u16).to_le_bytes())?;
        self.cache.write(at + 26, &(first as u16).to_le_bytes())?;
        self.cache.write(at + 28, &size.to_le_bytes())
    }

    /// Byte ranges of a directory: the fixed FAT12/16 root, or a chain.
    fn walk_dir(&mut self, ranges: Vec<(u64, u64)>, path: &str, depth: usize) -> Result<(), BlockError> {
        let mut subdirs = Vec::new();
        'outer: for (start, len) in ranges {
            let mut buf = vec![0u8; len as usize];
            self.cache.read(start, &mut buf)?;
            for (i, e) in buf.chunks_exact(32).enumerate() {
                let at = start + i as u64 * 32;
                match e[0] {
                    0x00 => break 'outer,
                    0xE5 => continue,
                    b'.' => continue,
                    _ => {}
                }
                let attr = e[11];
                if attr & 0x0F == 0x0F || attr & 0x08 != 0 {
                    continue; // long-name part or volume label
                }
                let hi = if self.g.kind == FatKind::Fat32 { u16::from_le_bytes([e[20], e[21]]) as u32 } else { 0 };
                let first = hi << 16 | u16::from_le_bytes([e[26], e[27]]) as u32;
                let size = u32::from_le_bytes([e[28], e[29], e[30], e[31]]);
                let name = short_name(e);
                let what = format!("{path}/{name}");
                if attr & 0x10 != 0 {
                    if !self.g.is_link(first) || self.next[first as usize] == 0 || self.owned[first as usize] {
                        self.cache.write(at, &[0xE5])?;
                        self.log.push(format!("{what}: directory entry points to no valid cluster; removed"));
                        continue;
                    }
                    let (chain, shared) = self.chain(first);
                    if shared {
                        let last = chain[chain.len() - 1];
                        set_fat(self.cache, self.g, self.next, last, self.g.eoc())?;
                        self.log.push(format!("{what}: directory shares clusters with another entry; cut"));
                    }
                    for &c in &chain {
                        self.owned[c as usize] = true;
                    }
                    let cb = self.g.cluster_bytes();
                    subdirs.push((chain.iter().map(|&c| (self.g.cluster_offset(c), cb)).collect::<Vec<_>>(), what));
                    continue;
                }
                if first == 0 {
                    if size != 0 {
                        self.write_entry(at, 0, 0)?;
                        self.log.push(format!("{what}: {size} bytes but no clusters; size set to 0"));
                    }
                    continue;
                }
                if !self.g.is_link(first) || self.next[first as usize] == 0 || self.next[first as usize] == self.g.bad()
                {
                    self.write_entry(at, 0, 0)?;
                    self.log.push(format!("{what}: starts at a free or invalid cluster {first}; emptied"));
                    continue;
                }
                let (chain, shared) = self.chain(first);
                let cb = self.g.cluster_bytes();
                let need = (size as u64).div_ceil(cb) as usize;
                let keep = if shared { chain.len().min(need) } else { chain.len().min(need.max(1)) };
                if keep == 0 || (need == 0 && !shared) {
                    // Clusters but size 0, or only shared clusters: detach.
                    self.write_entry(at, 0, 0)?;
                    if shared || chain.len() > 1 || size != 0 {
                        self.log
                            .push(format!("{what}: chain {}; emptied", if shared { "shared" } else { "without data" }));
                    }
                    if !shared && need == 0 {
                        // Its clusters become lost and are freed below.
                    }
                    continue;
                }
                let kept_bytes = keep as u64 * cb;
                if keep < chain.len() || shared {
                    set_fat(self.cache, self.g, self.next, chain[keep - 1], self.g.eoc())?;
                }
                if (size as u64) > kept_bytes {
                    self.write_entry(at, first, kept_bytes as u32)?;
                    self.log
                        .push(format!("{what}: {size} bytes but {kept_bytes} in its chain; size set to {kept_bytes}"));
                } else if keep < chain.len() {
                    self.log.push(format!("{what}: chain longer than its {size} bytes; tail cut"));
                }
                for &c in &chain[..keep] {
                    self.owned[c as usize] = true;
                }
            }
        }
        if depth < MAX_DEPTH {
            for (ranges, path) in subdirs {
                self.walk_dir(ranges, &path, depth + 1)?;
            }
        }
        Ok(())
    }
}

fn short_name(e: &[u8]) -> String {
    let base: String = e[0..8].iter().map(|&b| b as char).collect::<String>().trim_end().into();
    let ext: String = e[8..11].iter().map(|&b| b as char).collect::<String>().trim_end().into();
    if ext.is_empty() { base } else { format!("{base}.{ext}") }
}

/// After an unclean shutdown: makes every directory entry agree with the
/// FAT (entries pointing at free clusters emptied, sizes fitted to their
/// chains, chains cut where they run into another entry's clusters) and
/// frees clusters no entry reaches. Writes go through `cache`; returns a
/// log line per fix. `next` is the FAT from [`check_fat`].
pub fn scan_and_mend(cache: &BlockCache, g: &Geometry, next: &mut Vec<u32>) -> Result<Vec<String>, BlockError> {
    let n = g.clusters as usize + 2;
    if next.len() != n {
        return Ok(Vec::new());
    }
    let mut scan = Scan { cache, g, next, owned: vec![false; n], log: Vec::new() };
    let root = if g.kind == FatKind::Fat32 {
        let (chain, _) = scan.chain(g.root_cluster);
        for &c in &chain {
            scan.owned[c as usize] = true;
        }
        chain.iter().map(|&c| (g.cluster_offset(c), g.cluster_bytes())).collect()
    } else {
        vec![(g.root_dir_offset(), g.root_dir_bytes())]
    };
    scan.walk_dir(root, "", 0)?;
    let mut lost = 0u32;
    for c in 2..n {
        let v = scan.next[c];
        if v != 0 && v != g.bad() && !scan.owned[c] {
            set_fat(cache, g, scan.next, c as u32, 0)?;
            lost += 1;
        }
    }
    if lost > 0 {
        scan.log.push(format!("freed {lost} lost cluster(s) no entry reached"));
    }
    Ok(scan.log)
}
