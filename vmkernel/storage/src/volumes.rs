//! Mounting every datastore at boot: each FAT candidate of the device
//! registry (FAT-typed partitions, whole disks without a table) gets a
//! cache and a mount attempt, and the mounted ones get their
//! `/vmfs/volumes/` names: the label, made unique the way ESXi does
//! (`datastore1 (1)`), and the volume UUID beside it.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::cache::{BlockCache, CacheConfig};
use crate::fat::{Datastore, MountError, MountOptions, WallClock};
use crate::registry::DeviceRegistry;
use crate::stats::Clock;

/// One mounted datastore and its names under `/vmfs/volumes/`.
pub struct MountedVolume {
    /// The registry name of the device it is on.
    pub device: String,
    /// `/vmfs/volumes/<name>`: the label, unique among mounted volumes.
    pub name: String,
    /// `/vmfs/volumes/<uuid>`.
    pub uuid: String,
    pub datastore: Datastore,
}

/// What mounting at boot did, device by device, for the log.
pub struct MountReport {
    pub mounted: Vec<MountedVolume>,
    /// Devices that held no usable FAT volume, with the reason.
    pub refused: Vec<(String, MountError)>,
    pub log: Vec<String>,
}

/// Picks a name for a volume labelled `label` that none of `taken` has;
/// an empty label becomes `datastore`.
pub fn unique_name(label: &str, taken: &[String]) -> String {
    let base = if label.trim().is_empty() { "datastore" } else { label.trim() };
    let base = String::from(base);
    if !taken.iter().any(|t| t.eq_ignore_ascii_case(&base)) {
        return base;
    }
    (1..).map(|i| format!("{base} ({i})")).find(|n| !taken.iter().any(|t| t.eq_ignore_ascii_case(n))).unwrap_or(base)
}

/// Mounts every FAT candidate of `registry`. A device whose boot sector
/// is not FAT is reported in `refused`, never fatal.
pub fn mount_all(
    registry: &DeviceRegistry,
    clock: Arc<dyn Clock>,
    wall: Arc<dyn WallClock>,
    cache: CacheConfig,
    opts: MountOptions,
) -> MountReport {
    let mut report = MountReport { mounted: Vec::new(), refused: Vec::new(), log: Vec::new() };
    for entry in registry.fat_candidates() {
        let c = Arc::new(BlockCache::new(entry.device.clone(), clock.clone(), cache).with_stats(entry.stats.clone()));
        let started = clock.now_ms();
        match Datastore::mount(c, wall.clone(), opts) {
            Ok(ds) => {
                let taken: Vec<String> = report.mounted.iter().map(|m| m.name.clone()).collect();
                let name = unique_name(ds.label(), &taken);
                let uuid = ds.uuid();
                report.log.push(format!(
                    "storage: mounted {} as /vmfs/volumes/{name} ({uuid}, {:?}{}) in {} ms",
                    entry.name,
                    ds.fat_kind(),
                    if ds.is_read_only() { ", read-only" } else { "" },
                    clock.now_ms().saturating_sub(started)
                ));
                for m in ds.messages() {
                    report.log.push(format!("storage: {name}: {m}"));
                }
                report.mounted.push(MountedVolume { device: entry.name.clone(), name, uuid, datastore: ds });
            }
            Err(e) => {
                report.log.push(format!("storage: {}: not mounted: {e}", entry.name));
                report.refused.push((entry.name.clone(), e));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{BlockDevice, MemDisk};
    use crate::fat::{FixedClock, FormatOptions, OpenFlags, format};
    use crate::partition::{GPT_BASIC_DATA, Guid, NewPartition, build_gpt};
    use crate::stats::NoClock;
    use alloc::vec;

    /// A GPT disk with one FAT partition labelled `label`.
    fn datastore_disk(label: &str, id: u32) -> Arc<MemDisk> {
        let sectors = 16 * 2048;
        let disk = Arc::new(MemDisk::new(512, sectors));
        let part = NewPartition { kind: GPT_BASIC_DATA, guid: Guid([id as u8; 16]), name: label, start: 0, sectors: 0 };
        let (writes, placed) = build_gpt(512, sectors, Guid([1; 16]), &[part]).unwrap();
        for (lba, s) in writes {
            disk.write_sectors(lba, &s).unwrap();
        }
        let w: Arc<dyn BlockDevice> =
            Arc::new(crate::block::Window::new(disk.clone(), placed[0].start, placed[0].sectors).unwrap());
        let c = Arc::new(BlockCache::new(w, Arc::new(NoClock), CacheConfig::default()));
        format(&c, &FormatOptions { label, volume_id: id, kind: None, bytes_per_cluster: None }).unwrap();
        disk
    }

    #[test]
    fn unique_names_follow_esxi() {
        let taken = vec![String::from("datastore1"), String::from("datastore1 (1)")];
        assert_eq!(unique_name("DATASTORE1", &taken), "DATASTORE1 (2)");
        assert_eq!(unique_name("other", &taken), "other");
        assert_eq!(unique_name("  ", &[]), "datastore");
    }

    #[test]
    fn mounts_every_fat_volume_and_reports_the_rest() {
        let mut reg = DeviceRegistry::new(Arc::new(NoClock));
        reg.add_disk("mpx.vmhba0:C0:T0:L0", datastore_disk("datastore1", 0x1111_0001)).unwrap();
        reg.add_disk("mpx.vmhba1:C0:T0:L0", datastore_disk("datastore1", 0x2222_0002)).unwrap();
        // A blank disk: a candidate (no table) with no FAT on it.
        reg.add_disk("mpx.vmhba2:C0:T0:L0", Arc::new(MemDisk::new(512, 4096))).unwrap();
        let mut r = mount_all(
            &reg,
            Arc::new(NoClock),
            Arc::new(FixedClock(1_796_601_600)),
            CacheConfig::default(),
            MountOptions::default(),
        );
        let names: Vec<(&str, &str, &str)> =
            r.mounted.iter().map(|m| (m.device.as_str(), m.name.as_str(), m.uuid.as_str())).collect();
        assert_eq!(
            names,
            [
                ("mpx.vmhba0:C0:T0:L0:1", "DATASTORE1", "1111-0001"),
                ("mpx.vmhba1:C0:T0:L0:1", "DATASTORE1 (1)", "2222-0002")
            ]
        );
        assert_eq!(r.refused.len(), 1);
        assert!(matches!(r.refused[0].1, MountError::BadBootSector(_)));
        // Both are usable at once, and I/O shows in the partition's diskstats.
        for (i, m) in r.mounted.iter_mut().enumerate() {
            let h = m.datastore.open("vm.vmx", OpenFlags::WRITE_CREATE_TRUNC).unwrap();
            m.datastore.write_at(h, 0, &vec![i as u8; 10_000]).unwrap();
            m.datastore.fsync(h).unwrap();
            m.datastore.close(h).unwrap();
        }
        let stats = reg.diskstats();
        let line = stats.lines().find(|l| l.contains("mpx.vmhba1:C0:T0:L0:1")).unwrap();
        let fields: Vec<u64> = line.split_whitespace().skip(3).map(|f| f.parse().unwrap()).collect();
        assert!(fields[4] > 0 && fields[6] >= 20, "writes and sectors written: {line}");
        assert!(fields[15] > 0, "flushes: {line}");
    }
}
