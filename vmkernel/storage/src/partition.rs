//! MBR and GPT partition tables: reading (CRCs checked, damage reported as
//! an error or a warning, never a panic) and writing a GPT (the host tools
//! use it to make datastore images).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::block::{BlockDevice, BlockError};

/// A GUID as stored on disk (mixed-endian, as UEFI defines it).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub const fn from_fields(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        Guid([a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}
impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// "Microsoft basic data": the GPT type of FAT and NTFS partitions.
pub const GPT_BASIC_DATA: Guid =
    Guid::from_fields(0xEBD0A0A2, 0xB9E5, 0x4433, [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7]);
/// The EFI system partition (FAT too).
pub const GPT_EFI_SYSTEM: Guid =
    Guid::from_fields(0xC12A7328, 0xF81F, 0x11D2, [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);

/// What kind of partition an entry says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    Mbr(u8),
    Gpt(Guid),
}

impl PartitionKind {
    /// Whether the type says the partition may hold a FAT file system.
    pub fn may_be_fat(&self) -> bool {
        match *self {
            PartitionKind::Mbr(t) => matches!(t, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e | 0xef),
            PartitionKind::Gpt(g) => g == GPT_BASIC_DATA || g == GPT_EFI_SYSTEM,
        }
    }
}

/// One partition, in sectors of the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `sda1` or ESXi's `...:1`.
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
    pub kind: PartitionKind,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// GPT unique partition GUID.
    pub guid: Option<Guid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Mbr,
    Gpt { disk_guid: Guid },
}

/// A disk's partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionTable {
    pub kind: TableKind,
    pub partitions: Vec<Partition>,
    /// Damage that was survived (a corrupt primary GPT with a good backup,
    /// entries that run past the disk, ...), for the log.
    pub warnings: Vec<String>,
}

/// Why no partition table could be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// Reading the disk failed.
    Io(BlockError),
    /// No MBR signature: the disk is unpartitioned (maybe a whole-disk
    /// file system).
    NoTable,
    /// A GPT is announced (protective MBR) but neither header nor backup is
    /// valid; the reason for each.
    CorruptGpt(String),
    /// The sector size is not one partition tables can live on.
    BadSectorSize(u32),
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::Io(e) => write!(f, "reading the partition table: {e}"),
            PartitionError::NoTable => f.write_str("no partition table (no MBR signature)"),
            PartitionError::CorruptGpt(why) => write!(f, "corrupt GPT: {why}"),
            PartitionError::BadSectorSize(s) => write!(f, "unsupported sector size {s}"),
        }
    }
}

impl From<BlockError> for PartitionError {
    fn from(e: BlockError) -> Self {
        PartitionError::Io(e)
    }
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

fn read_sector(dev: &dyn BlockDevice, lba: u64) -> Result<Vec<u8>, BlockError> {
    let mut buf = vec![0u8; dev.sector_size() as usize];
    dev.read_sectors(lba, &mut buf)?;
    Ok(buf)
}

/// At most this many logical partitions are followed in an extended
/// partition's chain (a looping chain must end).
const MAX_LOGICAL: u32 = 128;

/// Reads the disk's partition table: a GPT if the MBR is protective,
/// otherwise the MBR (with logical partitions).
pub fn read_table(dev: &dyn BlockDevice) -> Result<PartitionTable, PartitionError> {
    let ss = dev.sector_size();
    if !(512..=65536).contains(&ss) || !ss.is_power_of_two() {
        return Err(PartitionError::BadSectorSize(ss));
    }
    if dev.sector_count() == 0 {
        return Err(PartitionError::NoTable);
    }
    let mbr = read_sector(dev, 0)?;
    if mbr[510] != 0x55 || mbr[511] != 0xAA {
        return Err(PartitionError::NoTable);
    }
    let entries: Vec<(u8, u64, u64)> = (0..4)
        .map(|i| {
            let e = 446 + i * 16;
            (mbr[e + 4], le32(&mbr, e + 8) as u64, le32(&mbr, e + 12) as u64)
        })
        .collect();
    if entries.iter().any(|e| e.0 == 0xEE) {
        return read_gpt(dev);
    }
    // A FAT boot sector also ends in 55 AA: a whole-disk FAT volume is not
    // a partition table. Its MBR "entries" are boot code; tell them apart
    // by the jump instruction and the BPB's bytes-per-sector.
    if matches!(mbr[0], 0xEB | 0xE9) && matches!(le16(&mbr, 11), 512 | 1024 | 2048 | 4096) && mbr[13] != 0 {
        return Err(PartitionError::NoTable);
    }
    let mut table = PartitionTable { kind: TableKind::Mbr, partitions: Vec::new(), warnings: Vec::new() };
    let count = dev.sector_count();
    let mut extended = None;
    for (i, &(kind, start, sectors)) in entries.iter().enumerate() {
        if kind == 0 || sectors == 0 {
            continue;
        }
        if matches!(kind, 0x05 | 0x0F | 0x85) {
            extended = Some((start, sectors));
            continue;
        }
        push_checked(&mut table, count, i as u32 + 1, start, sectors, kind);
    }
    if let Some((ext_start, ext_len)) = extended {
        // Logical partitions: a chain of EBRs, each relative to the
        // extended partition's start; numbered from 5 as Linux does.
        let mut ebr = ext_start;
        let mut number = 5;
        while number < 5 + MAX_LOGICAL {
            if ebr >= count {
                table.warnings.push(format!("extended partition chain points past the disk (sector {ebr})"));
                break;
            }
            let s = read_sector(dev, ebr)?;
            if s[510] != 0x55 || s[511] != 0xAA {
                table.warnings.push(format!("extended boot record at sector {ebr} has no signature"));
                break;
            }
            let (k, rel, len) = (s[446 + 4], le32(&s, 446 + 8) as u64, le32(&s, 446 + 12) as u64);
            if k != 0 && len != 0 {
                push_checked(&mut table, count, number, ebr + rel, len, k);
                number += 1;
            }
            let next = le32(&s, 462 + 8) as u64;
            if s[462 + 4] == 0 || next == 0 || next >= ext_len {
                break;
            }
            ebr = ext_start + next;
        }
        if number >= 5 + MAX_LOGICAL {
            table.warnings.push(format!("more than {MAX_LOGICAL} logical partitions (looping chain?); rest ignored"));
        }
    }
    Ok(table)
}

fn push_checked(table: &mut PartitionTable, count: u64, number: u32, start: u64, sectors: u64, kind: u8) {
    if start.checked_add(sectors).is_none_or(|end| end > count) || start == 0 {
        table.warnings.push(format!(
            "partition {number} (sectors {start}+{sectors}) lies outside the disk ({count} sectors); ignored"
        ));
        return;
    }
    table.partitions.push(Partition {
        number,
        start,
        sectors,
        kind: PartitionKind::Mbr(kind),
        name: String::new(),
        guid: None,
    });
}

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// Bounds on a header's entry array we are willing to read.
const GPT_MAX_ENTRIES: u32 = 4096;

struct GptHeader {
    first_usable: u64,
    last_usable: u64,
    disk_guid: Guid,
    entries_lba: u64,
    entry_count: u32,
    entry_size: u32,
    entries_crc: u32,
    alternate: u64,
}

fn parse_gpt_header(dev: &dyn BlockDevice, lba: u64) -> Result<GptHeader, String> {
    let s = read_sector(dev, lba).map_err(|e| format!("header at LBA {lba}: {e}"))?;
    if &s[0..8] != GPT_SIGNATURE {
        return Err(format!("no GPT signature at LBA {lba}"));
    }
    let size = le32(&s, 12) as usize;
    if !(92..=s.len()).contains(&size) {
        return Err(format!("header at LBA {lba} has a bad size {size}"));
    }
    let mut h = s[..size].to_vec();
    h[16..20].fill(0);
    let want = le32(&s, 16);
    let got = crc32(&h);
    if want != got {
        return Err(format!("header CRC mismatch at LBA {lba} (stored {want:#010x}, computed {got:#010x})"));
    }
    if le64(&s, 24) != lba {
        return Err(format!("header at LBA {lba} says it lives at LBA {}", le64(&s, 24)));
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&s[56..72]);
    let entry_count = le32(&s, 80);
    let entry_size = le32(&s, 84);
    if entry_count > GPT_MAX_ENTRIES || !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return Err(format!("header at LBA {lba}: implausible entry array ({entry_count} x {entry_size} bytes)"));
    }
    Ok(GptHeader {
        first_usable: le64(&s, 40),
        last_usable: le64(&s, 48),
        disk_guid: Guid(disk_guid),
        entries_lba: le64(&s, 72),
        entry_count,
        entry_size,
        entries_crc: le32(&s, 88),
        alternate: le64(&s, 32),
    })
}

fn read_gpt_entries(dev: &dyn BlockDevice, h: &GptHeader) -> Result<Vec<u8>, String> {
    let ss = dev.sector_size() as u64;
    let bytes = h.entry_count as u64 * h.entry_size as u64;
    let sectors = bytes.div_ceil(ss);
    if h.entries_lba.checked_add(sectors).is_none_or(|e| e > dev.sector_count()) {
        return Err(format!("entry array at LBA {} runs past the disk", h.entries_lba));
    }
    let mut buf = vec![0u8; (sectors * ss) as usize];
    dev.read_sectors(h.entries_lba, &mut buf).map_err(|e| format!("entry array: {e}"))?;
    buf.truncate(bytes as usize);
    let got = crc32(&buf);
    if got != h.entries_crc {
        return Err(format!(
            "entry array CRC mismatch at LBA {} (stored {:#010x}, computed {got:#010x})",
            h.entries_lba, h.entries_crc
        ));
    }
    Ok(buf)
}

fn read_gpt(dev: &dyn BlockDevice) -> Result<PartitionTable, PartitionError> {
    let last = dev.sector_count() - 1;
    let mut warnings = Vec::new();
    let primary = parse_gpt_header(dev, 1).and_then(|h| read_gpt_entries(dev, &h).map(|e| (h, e)));
    let (h, entries) = match primary {
        Ok(x) => x,
        Err(why) => {
            // The backup header lives in the disk's last sector.
            match parse_gpt_header(dev, last).and_then(|h| read_gpt_entries(dev, &h).map(|e| (h, e))) {
                Ok(x) => {
                    warnings.push(format!("primary GPT is damaged ({why}); using the backup"));
                    x
                }
                Err(why2) => return Err(PartitionError::CorruptGpt(format!("primary: {why}; backup: {why2}"))),
            }
        }
    };
    if h.alternate != last && h.alternate != 1 {
        warnings.push(format!("GPT alternate header LBA {} is not the disk's last sector {last}", h.alternate));
    }
    let mut partitions = Vec::new();
    for i in 0..h.entry_count as usize {
        let e = &entries[i * h.entry_size as usize..(i + 1) * h.entry_size as usize];
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[0..16]);
        if ty == [0; 16] {
            continue;
        }
        let mut uniq = [0u8; 16];
        uniq.copy_from_slice(&e[16..32]);
        let (first, end) = (le64(e, 32), le64(e, 40));
        let number = i as u32 + 1;
        if end < first || first < h.first_usable || end > h.last_usable || end > last {
            warnings.push(format!("GPT partition {number} (LBA {first}..={end}) is outside the usable area; ignored"));
            continue;
        }
        let units: Vec<u16> = (0..36).map(|k| le16(e, 56 + 2 * k)).take_while(|&u| u != 0).collect();
        let name = char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
        partitions.push(Partition {
            number,
            start: first,
            sectors: end - first + 1,
            kind: PartitionKind::Gpt(Guid(ty)),
            name,
            guid: Some(Guid(uniq)),
        });
    }
    Ok(PartitionTable { kind: TableKind::Gpt { disk_guid: h.disk_guid }, partitions, warnings })
}

/// Sector writes `(lba, sector bytes)`.
pub type SectorWrites = Vec<(u64, Vec<u8>)>;

/// A partition to put into a new GPT.
pub struct NewPartition<'a> {
    pub kind: Guid,
    pub guid: Guid,
    pub name: &'a str,
    /// First sector; 0 means "the first 1 MiB boundary after the table".
    pub start: u64,
    /// Length in sectors; 0 means "up to the end of the usable area".
    pub sectors: u64,
}

/// Sector writes that put a GPT (protective MBR, primary and backup
/// headers and entry arrays) on a disk of `disk_sectors` sectors. Returns
/// `(lba, sector data)` pairs and the partitions as they were placed.
pub fn build_gpt(
    sector_size: u32,
    disk_sectors: u64,
    disk_guid: Guid,
    parts: &[NewPartition<'_>],
) -> Result<(SectorWrites, Vec<Partition>), String> {
    let ss = sector_size as u64;
    const ENTRIES: u64 = 128;
    const ENTRY_SIZE: u64 = 128;
    let entry_sectors = (ENTRIES * ENTRY_SIZE).div_ceil(ss);
    if disk_sectors < 2 * (entry_sectors + 2) + 1 || parts.len() as u64 > ENTRIES {
        return Err(format!("disk of {disk_sectors} sectors is too small for a GPT"));
    }
    let first_usable = 2 + entry_sectors;
    let last_usable = disk_sectors - 2 - entry_sectors;
    let align = (1024 * 1024 / ss).max(1);
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    let mut placed = Vec::new();
    let mut next = first_usable.div_ceil(align) * align;
    for (i, p) in parts.iter().enumerate() {
        let start = if p.start == 0 { next } else { p.start };
        let sectors = if p.sectors == 0 { (last_usable + 1).saturating_sub(start) } else { p.sectors };
        let end = start + sectors.max(1) - 1;
        if start < first_usable || end > last_usable || sectors == 0 {
            return Err(format!("partition {} does not fit in the usable area", i + 1));
        }
        let e = &mut entries[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&p.kind.0);
        e[16..32].copy_from_slice(&p.guid.0);
        e[32..40].copy_from_slice(&start.to_le_bytes());
        e[40..48].copy_from_slice(&end.to_le_bytes());
        for (k, u) in p.name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * k..58 + 2 * k].copy_from_slice(&u.to_le_bytes());
        }
        placed.push(Partition {
            number: i as u32 + 1,
            start,
            sectors,
            kind: PartitionKind::Gpt(p.kind),
            name: String::from(p.name),
            guid: Some(p.guid),
        });
        next = (end + 1).div_ceil(align) * align;
    }
    let entries_crc = crc32(&entries);
    let header = |my: u64, alt: u64, entries_lba: u64| {
        let mut h = vec![0u8; ss as usize];
        h[0..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let last = disk_sectors - 1;
    let mut mbr = vec![0u8; ss as usize];
    // Protective MBR: one 0xEE entry covering the disk (capped at 2^32-1).
    mbr[446 + 1..446 + 4].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[446 + 4] = 0xEE;
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&(last.min(0xFFFF_FFFF) as u32).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    let mut writes = vec![(0, mbr), (1, header(1, last, 2)), (last, header(last, 1, last - entry_sectors))];
    for k in 0..entry_sectors {
        let chunk = entries[(k * ss) as usize..((k + 1) * ss) as usize].to_vec();
        writes.push((2 + k, chunk.clone()));
        writes.push((last - entry_sectors + k, chunk));
    }
    Ok((writes, placed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use alloc::string::ToString;

    fn gpt_disk() -> MemDisk {
        let d = MemDisk::new(512, 64 * 2048);
        let (writes, placed) = build_gpt(
            512,
            64 * 2048,
            Guid([7; 16]),
            &[NewPartition { kind: GPT_BASIC_DATA, guid: Guid([9; 16]), name: "datastore1", start: 0, sectors: 0 }],
        )
        .unwrap();
        assert_eq!(placed[0].start, 2048);
        for (lba, s) in writes {
            d.write_sectors(lba, &s).unwrap();
        }
        d
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn guid_text_form() {
        assert_eq!(GPT_BASIC_DATA.to_string(), "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
    }

    #[test]
    fn gpt_round_trip() {
        let d = gpt_disk();
        let t = read_table(&d).unwrap();
        assert_eq!(t.kind, TableKind::Gpt { disk_guid: Guid([7; 16]) });
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.partitions.len(), 1);
        let p = &t.partitions[0];
        assert_eq!((p.number, p.start, p.sectors), (1, 2048, 64 * 2048 - 2048 - 33));
        assert_eq!(p.name, "datastore1");
        assert!(p.kind.may_be_fat());
    }

    #[test]
    fn corrupt_primary_gpt_falls_back_to_backup_and_both_corrupt_is_an_error() {
        let d = gpt_disk();
        let mut s = [0u8; 512];
        d.read_sectors(1, &mut s).unwrap();
        s[60] ^= 0xff; // the disk GUID, inside the CRC-covered header
        d.write_sectors(1, &s).unwrap();
        let t = read_table(&d).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert!(t.warnings[0].contains("primary GPT is damaged"), "{:?}", t.warnings);
        // Now damage the backup's entry array too.
        let last = d.sector_count() - 1;
        let mut e = [0u8; 512];
        d.read_sectors(last - 32, &mut e).unwrap();
        e[40] ^= 1;
        d.write_sectors(last - 32, &e).unwrap();
        match read_table(&d) {
            Err(PartitionError::CorruptGpt(why)) => assert!(why.contains("CRC mismatch"), "{why}"),
            other => panic!("expected CorruptGpt, got {other:?}"),
        }
    }

    #[test]
    fn mbr_with_primary_and_logical_partitions() {
        let d = MemDisk::new(512, 10_000);
        let mut mbr = [0u8; 512];
        let put = |s: &mut [u8; 512], slot: usize, kind: u8, start: u32, len: u32| {
            let e = 446 + slot * 16;
            s[e + 4] = kind;
            s[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            s[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
            s[510] = 0x55;
            s[511] = 0xAA;
        };
        put(&mut mbr, 0, 0x0c, 63, 1000);
        put(&mut mbr, 1, 0x05, 2000, 4000);
        put(&mut mbr, 2, 0x83, 9000, 5000); // runs past the disk
        d.write_sectors(0, &mbr).unwrap();
        // Two logical partitions in a chain of EBRs.
        let mut ebr1 = [0u8; 512];
        put(&mut ebr1, 0, 0x06, 10, 100);
        put(&mut ebr1, 1, 0x05, 500, 200);
        d.write_sectors(2000, &ebr1).unwrap();
        let mut ebr2 = [0u8; 512];
        put(&mut ebr2, 0, 0x0b, 10, 150);
        // No link after the second EBR: the chain ends.
        d.write_sectors(2500, &ebr2).unwrap();
        let t = read_table(&d).unwrap();
        let got: Vec<(u32, u64, u64)> = t.partitions.iter().map(|p| (p.number, p.start, p.sectors)).collect();
        assert_eq!(got, vec![(1, 63, 1000), (5, 2010, 100), (6, 2510, 150)]);
        assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    }

    #[test]
    fn looping_ebr_chain_is_bounded() {
        let d = MemDisk::new(512, 10_000);
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x0f;
        mbr[446 + 8..446 + 12].copy_from_slice(&100u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&5000u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        d.write_sectors(0, &mbr).unwrap();
        let mut ebr = [0u8; 512];
        ebr[446 + 4] = 0x06;
        ebr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        ebr[446 + 12..446 + 16].copy_from_slice(&1u32.to_le_bytes());
        ebr[462 + 4] = 0x05;
        ebr[510] = 0x55;
        ebr[511] = 0xAA;
        // The EBR at 100 links to 100 + 50, which links back to 100 + 50.
        let mut self_link = ebr;
        self_link[462 + 8..462 + 12].copy_from_slice(&50u32.to_le_bytes());
        d.write_sectors(100, &self_link).unwrap();
        d.write_sectors(150, &self_link).unwrap();
        let t = read_table(&d).unwrap();
        assert_eq!(t.partitions.len(), MAX_LOGICAL as usize);
        assert!(t.warnings.iter().any(|w| w.contains("looping")), "{:?}", t.warnings);
    }

    #[test]
    fn unpartitioned_and_whole_disk_fat_report_no_table() {
        let d = MemDisk::new(512, 100);
        assert_eq!(read_table(&d), Err(PartitionError::NoTable));
        let mut bs = [0u8; 512];
        bs[0] = 0xEB;
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 1;
        bs[510] = 0x55;
        bs[511] = 0xAA;
        d.write_sectors(0, &bs).unwrap();
        assert_eq!(read_table(&d), Err(PartitionError::NoTable));
    }
}
