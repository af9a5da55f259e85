//! The device registry: every disk a driver registers and every partition
//! found on it, by name, as ESXi lists them under `/vmfs/devices/disks/`
//! (`mpx.vmhba0:C0:T0:L0` for a disk, `mpx.vmhba0:C0:T0:L0:1` for its first
//! partition). Each name has its own statistics; partition I/O also counts
//! for its disk, and `/proc/diskstats` prints them all.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::block::{BlockDevice, Window};
use crate::partition::{self, Partition, PartitionError, PartitionTable};
use crate::stats::{Clock, CountedDevice, DiskStats, diskstats_line};

/// ESXi's name for the disk at LUN 0 of the `adapter`-th host bus adapter.
pub fn adapter_disk_name(adapter: u32) -> String {
    format!("mpx.vmhba{adapter}:C0:T0:L0")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// The name is taken.
    Exists(String),
    /// Empty, too long, or holds `/`, whitespace or control characters.
    BadName(String),
    NotFound(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Exists(n) => write!(f, "a device named {n} already exists"),
            RegistryError::BadName(n) => write!(f, "bad device name {n:?}"),
            RegistryError::NotFound(n) => write!(f, "no device named {n}"),
        }
    }
}

/// One registered name: a whole disk or a partition of one.
pub struct DeviceEntry {
    pub name: String,
    pub major: u32,
    pub minor: u32,
    /// The device to do I/O on (counted into `stats`).
    pub device: Arc<dyn BlockDevice>,
    pub stats: Arc<DiskStats>,
    /// `Some` for a partition.
    pub partition: Option<Partition>,
}

/// A disk and what was found on it.
pub struct Disk {
    pub entry: DeviceEntry,
    /// The partition table, or why there is none.
    pub table: Result<PartitionTable, PartitionError>,
    pub partitions: Vec<DeviceEntry>,
}

/// All block devices of the host.
pub struct DeviceRegistry {
    clock: Arc<dyn Clock>,
    disks: Vec<Disk>,
    next_disk_minor: u32,
    next_ext_minor: u32,
}

/// Linux's major numbers: SCSI disks, and the extended range for
/// partitions past the 15th.
const SD_MAJOR: u32 = 8;
const EXT_MAJOR: u32 = 259;

impl DeviceRegistry {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        DeviceRegistry { clock, disks: Vec::new(), next_disk_minor: 0, next_ext_minor: 0 }
    }

    /// Registers a disk under `name`, reads its partition table and
    /// registers each partition as `name:N`. Returns log lines describing
    /// what was found (table kind, partitions, damage survived).
    pub fn add_disk(&mut self, name: &str, raw: Arc<dyn BlockDevice>) -> Result<Vec<String>, RegistryError> {
        if name.is_empty() || name.len() > 200 || name.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(RegistryError::BadName(String::from(name)));
        }
        if self.find(name).is_some() {
            return Err(RegistryError::Exists(String::from(name)));
        }
        let stats = Arc::new(DiskStats::default());
        let counted: Arc<dyn BlockDevice> =
            Arc::new(CountedDevice::new(raw.clone(), stats.clone(), None, self.clock.clone()));
        let minor = self.next_disk_minor;
        self.next_disk_minor += 16;
        let mut log = Vec::new();
        let size_mib = raw.sector_count().saturating_mul(raw.sector_size() as u64) >> 20;
        log.push(format!(
            "storage: disk {name}: {} sectors of {} bytes ({size_mib} MiB){}",
            raw.sector_count(),
            raw.sector_size(),
            if raw.read_only() { ", read-only" } else { "" }
        ));
        let table = partition::read_table(&*counted);
        let mut partitions = Vec::new();
        match &table {
            Ok(t) => {
                log.push(format!(
                    "storage: disk {name}: {:?} partition table, {} partition(s)",
                    t.kind,
                    t.partitions.len()
                ));
                for w in &t.warnings {
                    log.push(format!("storage: disk {name}: warning: {w}"));
                }
                for p in &t.partitions {
                    let Ok(window) = Window::new(raw.clone(), p.start, p.sectors) else { continue };
                    let pstats = Arc::new(DiskStats::default());
                    let pname = format!("{name}:{}", p.number);
                    let (major, pminor) = if p.number < 16 {
                        (SD_MAJOR, minor + p.number)
                    } else {
                        self.next_ext_minor += 1;
                        (EXT_MAJOR, self.next_ext_minor - 1)
                    };
                    log.push(format!(
                        "storage: {pname}: sectors {}+{} type {:?}{}",
                        p.start,
                        p.sectors,
                        p.kind,
                        if p.name.is_empty() { String::new() } else { format!(" name {:?}", p.name) }
                    ));
                    partitions.push(DeviceEntry {
                        name: pname,
                        major,
                        minor: pminor,
                        device: Arc::new(CountedDevice::new(
                            Arc::new(window),
                            pstats.clone(),
                            Some(stats.clone()),
                            self.clock.clone(),
                        )),
                        stats: pstats,
                        partition: Some(p.clone()),
                    });
                }
            }
            Err(PartitionError::NoTable) => log.push(format!("storage: disk {name}: no partition table")),
            Err(e) => log.push(format!("storage: disk {name}: {e}")),
        }
        self.disks.push(Disk {
            entry: DeviceEntry {
                name: String::from(name),
                major: SD_MAJOR,
                minor,
                device: counted,
                stats,
                partition: None,
            },
            table,
            partitions,
        });
        Ok(log)
    }

    /// Forgets a disk and its partitions (hot removal).
    pub fn remove_disk(&mut self, name: &str) -> Result<(), RegistryError> {
        let i = self
            .disks
            .iter()
            .position(|d| d.entry.name == name)
            .ok_or_else(|| RegistryError::NotFound(String::from(name)))?;
        self.disks.remove(i);
        Ok(())
    }

    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// Every name, disks each followed by their partitions (the listing of
    /// `/vmfs/devices/disks/`).
    pub fn entries(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.disks.iter().flat_map(|d| core::iter::once(&d.entry).chain(d.partitions.iter()))
    }

    pub fn find(&self, name: &str) -> Option<&DeviceEntry> {
        self.entries().find(|e| e.name == name)
    }

    /// Devices that may hold a FAT volume: partitions whose type allows
    /// it, and whole disks without a partition table. The kernel tries to
    /// mount each of these as a datastore at boot.
    pub fn fat_candidates(&self) -> Vec<&DeviceEntry> {
        let mut v = Vec::new();
        for d in &self.disks {
            match &d.table {
                Err(PartitionError::NoTable) => v.push(&d.entry),
                Ok(_) => {
                    v.extend(d.partitions.iter().filter(|p| p.partition.as_ref().is_some_and(|p| p.kind.may_be_fat())))
                }
                Err(_) => {}
            }
        }
        v
    }

    /// The text of `/proc/diskstats`.
    pub fn diskstats(&self) -> String {
        let mut s = String::new();
        for e in self.entries() {
            s.push_str(&diskstats_line(e.major, e.minor, &e.name, &e.stats.snapshot()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDisk;
    use crate::partition::{GPT_BASIC_DATA, Guid, NewPartition, build_gpt};
    use crate::stats::NoClock;

    fn gpt_disk(parts: usize) -> Arc<MemDisk> {
        let d = MemDisk::new(512, 32 * 2048);
        let news: Vec<NewPartition> = (0..parts)
            .map(|_| NewPartition { kind: GPT_BASIC_DATA, guid: Guid([1; 16]), name: "p", start: 0, sectors: 4096 })
            .collect();
        let (writes, _) = build_gpt(512, 32 * 2048, Guid([2; 16]), &news).unwrap();
        for (lba, s) in writes {
            d.write_sectors(lba, &s).unwrap();
        }
        Arc::new(d)
    }

    #[test]
    fn names_partitions_and_counts_io() {
        let mut r = DeviceRegistry::new(Arc::new(NoClock));
        let name = adapter_disk_name(0);
        let log = r.add_disk(&name, gpt_disk(2)).unwrap();
        assert!(log.iter().any(|l| l.contains("2 partition(s)")), "{log:?}");
        let names: Vec<&str> = r.entries().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["mpx.vmhba0:C0:T0:L0", "mpx.vmhba0:C0:T0:L0:1", "mpx.vmhba0:C0:T0:L0:2"]);
        assert_eq!(r.add_disk(&name, gpt_disk(0)), Err(RegistryError::Exists(name.clone())));
        assert!(matches!(r.add_disk("a/b", gpt_disk(0)), Err(RegistryError::BadName(_))));

        let p2 = r.find("mpx.vmhba0:C0:T0:L0:2").unwrap();
        p2.device.write_sectors(0, &[9; 1024]).unwrap();
        let disk = r.find(&name).unwrap();
        let mut b = [0u8; 512];
        disk.device.read_sectors(2048 + 4096 + 1, &mut b).unwrap();
        assert_eq!(b, [9; 512], "partition 2 starts at 6144");
        let text = r.diskstats();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        // The partition line: one write of 2 sectors; the disk line: the
        // table reads, one read and that write.
        assert_eq!(lines[2], "   8       2 mpx.vmhba0:C0:T0:L0:2 0 0 0 0 1 0 2 0 0 0 0 0 0 0 0 0 0");
        let disk_fields: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(disk_fields[..3], ["8", "0", "mpx.vmhba0:C0:T0:L0"]);
        assert_eq!((disk_fields[7], disk_fields[9]), ("1", "2"), "writes and sectors written: {}", lines[0]);
        assert_eq!(r.fat_candidates().len(), 2);
        r.remove_disk(&name).unwrap();
        assert_eq!(r.entries().count(), 0);
    }

    #[test]
    fn whole_disk_without_table_is_a_fat_candidate_and_corrupt_gpt_is_reported() {
        let mut r = DeviceRegistry::new(Arc::new(NoClock));
        r.add_disk("blank", Arc::new(MemDisk::new(512, 100))).unwrap();
        let bad = gpt_disk(1);
        bad.write_sectors(1, &[0x11; 512]).unwrap();
        let last = bad.sector_count() - 1;
        bad.write_sectors(last, &[0x11; 512]).unwrap();
        let log = r.add_disk("bad", bad).unwrap();
        assert!(log.iter().any(|l| l.contains("corrupt GPT")), "{log:?}");
        let c: Vec<&str> = r.fat_candidates().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(c, ["blank"]);
    }
}
