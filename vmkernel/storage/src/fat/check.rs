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
    let fat_bytes = (g.entry_pos(n as u32 - 1).0 as usize + width).min(g.fat_sectors as usize * g.bytes_per_sector as usize);
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
    Ok(report)
}

/// The byte writes that set `cluster`'s entry to end-of-chain in every FAT
/// copy, given a reader for the current bytes: `(offset, bytes)`.
pub fn end_chain_writes(
    g: &Geometry,
    cluster: u32,
    read: &mut dyn FnMut(u64, &mut [u8]) -> Result<(), BlockError>,
) -> Result<Vec<(u64, Vec<u8>)>, BlockError> {
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
