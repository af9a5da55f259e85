//! VMware hosted sparse disks (VMDK 1.1 "Virtual Disk Format").
//!
//! A disk is a descriptor (text) naming extents in order. A sparse extent
//! starts with a 512-byte header (`KDMV`) giving its capacity, the grain
//! size and the grain directory: directory entries name grain tables,
//! table entries name grains (all in 512-byte sectors; 0 = never written,
//! reads as zeros). `monolithicSparse` is one sparse file whose descriptor
//! is embedded; `twoGbMaxExtentSparse` is a text descriptor naming sparse
//! extents of at most 2 GiB each (so a large disk fits on FAT32). Writes to
//! an unwritten grain append the whole grain at the end of its extent file,
//! then set the table entry in both the primary and the redundant table.
//! Flat and zero extents are read and written too. Not implemented:
//! compressed `streamOptimized` extents, parent (linked) VMDKs.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::{BlockBackend, DiskError, ImageFile, ImageStore, check_range, sibling};

const MAGIC: &[u8; 4] = b"KDMV";
const SECTOR: u64 = 512;
const FLAG_REDUNDANT_GT: u32 = 1 << 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
/// Descriptors are small text files.
const MAX_DESCRIPTOR: u64 = 64 << 10;
const MAX_EXTENTS: usize = 4096;

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

struct Sparse {
    file: Box<dyn ImageFile>,
    grain_bytes: u64,
    gtes_per_gt: u64,
    gd: Vec<u32>,
    gd_sector: u64,
    rgd: Option<(u64, Vec<u32>)>,
    zero_grain: bool,
    next_free: u64,
}

enum Kind {
    Sparse(Sparse),
    Flat { file: Box<dyn ImageFile>, offset: u64 },
    Zero,
}

struct Extent {
    start: u64,
    len: u64,
    writable: bool,
    kind: Kind,
}

pub struct Vmdk {
    extents: Vec<Extent>,
    size: u64,
    read_only: bool,
    create_type: String,
}

/// One `RW <sectors> SPARSE "file"` line of a descriptor.
#[derive(Debug, PartialEq, Eq)]
struct ExtentLine {
    access: String,
    sectors: u64,
    kind: String,
    file: String,
    offset: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Descriptor {
    create_type: String,
    parent_cid: Option<String>,
    extents: Vec<ExtentLine>,
}

fn parse_descriptor(text: &str) -> Result<Descriptor, DiskError> {
    let mut d = Descriptor::default();
    for line in text.lines() {
        let l = line.trim().trim_end_matches('\0');
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let v = v.trim().trim_matches('"');
            match k.trim() {
                "createType" => d.create_type = String::from(v),
                "parentCID" => d.parent_cid = Some(String::from(v)),
                _ => {}
            }
            continue;
        }
        let mut parts = l.splitn(4, ' ');
        let (Some(access), Some(sectors), Some(kind), Some(rest)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            if l.starts_with("RW") || l.starts_with("RDONLY") || l.starts_with("NOACCESS") {
                // A zero extent has no file name.
                let mut p = l.split_whitespace();
                if let (Some(a), Some(s), Some("ZERO")) = (p.next(), p.next(), p.next()) {
                    let sectors = s.parse().map_err(|_| DiskError::Corrupt("VMDK extent size"))?;
                    d.extents.push(ExtentLine { access: String::from(a), sectors, kind: String::from("ZERO"), file: String::new(), offset: 0 });
                    continue;
                }
            }
            continue;
        };
        if !matches!(access, "RW" | "RDONLY" | "NOACCESS") {
            continue;
        }
        let sectors = sectors.parse().map_err(|_| DiskError::Corrupt("VMDK extent size"))?;
        let rest = rest.trim();
        let (file, after) = match rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
            Some((f, a)) => (String::from(f), a.trim()),
            None => return Err(DiskError::Corrupt("VMDK extent line without a quoted file name")),
        };
        let offset = if after.is_empty() { 0 } else { after.parse().map_err(|_| DiskError::Corrupt("VMDK extent offset"))? };
        if d.extents.len() >= MAX_EXTENTS {
            return Err(DiskError::Unsupported("VMDK with too many extents"));
        }
        d.extents.push(ExtentLine { access: String::from(access), sectors, kind: String::from(kind), file, offset });
    }
    Ok(d)
}

fn read_u32s(file: &mut dyn ImageFile, at: u64, n: u64) -> Result<Vec<u32>, DiskError> {
    let mut raw = vec![0u8; (n * 4) as usize];
    file.read_at(at, &mut raw)?;
    Ok(raw.chunks_exact(4).map(|c| le32(c, 0)).collect())
}

impl Sparse {
    /// Parses a sparse extent's header; returns it and its capacity in bytes
    /// (and, for a monolithic file, the embedded descriptor).
    fn open(mut file: Box<dyn ImageFile>, writable: bool) -> Result<(Sparse, u64, Option<String>), DiskError> {
        let file_len = file.size()?;
        if file_len < SECTOR {
            return Err(DiskError::Corrupt("VMDK sparse header truncated"));
        }
        let mut h = [0u8; 512];
        file.read_at(0, &mut h)?;
        if &h[0..4] != MAGIC {
            return Err(DiskError::Corrupt("not a VMDK sparse extent (bad magic)"));
        }
        let version = le32(&h, 4);
        let flags = le32(&h, 8);
        if !(1..=3).contains(&version) {
            return Err(DiskError::Unsupported("VMDK sparse version"));
        }
        if version == 3 && writable {
            return Err(DiskError::Unsupported("VMDK sparse version 3 (open it read-only)"));
        }
        if flags & (FLAG_COMPRESSED | FLAG_MARKERS) != 0 {
            return Err(DiskError::Unsupported("compressed (streamOptimized) VMDK"));
        }
        let capacity = le64(&h, 12);
        let grain = le64(&h, 20);
        let (desc_off, desc_size) = (le64(&h, 28), le64(&h, 36));
        let gtes_per_gt = le32(&h, 44) as u64;
        let (rgd_off, gd_off) = (le64(&h, 48), le64(&h, 56));
        if grain == 0 || grain > 2048 || !grain.is_power_of_two() || gtes_per_gt == 0 || gtes_per_gt > 8192 {
            return Err(DiskError::Corrupt("VMDK grain size or table size out of range"));
        }
        let grain_bytes = grain * SECTOR;
        let gd_entries = capacity.div_ceil(grain * gtes_per_gt);
        if gd_entries * 4 > (16 << 20) || capacity > (1 << 41) {
            return Err(DiskError::Corrupt("VMDK capacity out of range"));
        }
        let gd = read_u32s(&mut *file, gd_off * SECTOR, gd_entries)?;
        let rgd = if flags & FLAG_REDUNDANT_GT != 0 && rgd_off != 0 {
            Some((rgd_off, read_u32s(&mut *file, rgd_off * SECTOR, gd_entries)?))
        } else {
            None
        };
        let descriptor = if desc_off != 0 && desc_size != 0 && desc_size * SECTOR <= MAX_DESCRIPTOR {
            let mut t = vec![0u8; (desc_size * SECTOR) as usize];
            file.read_at(desc_off * SECTOR, &mut t)?;
            let end = t.iter().position(|&b| b == 0).unwrap_or(t.len());
            Some(String::from_utf8_lossy(&t[..end]).into_owned())
        } else {
            None
        };
        let sparse = Sparse {
            next_free: file_len.div_ceil(SECTOR) * SECTOR,
            file,
            grain_bytes,
            gtes_per_gt,
            gd,
            gd_sector: gd_off,
            rgd,
            zero_grain: version == 2 && flags & FLAG_ZERO_GRAIN != 0,
        };
        Ok((sparse, capacity * SECTOR, descriptor))
    }

    /// (directory index, table index) of the grain holding `offset`.
    fn indices(&self, offset: u64) -> (usize, u64) {
        let g = offset / self.grain_bytes;
        ((g / self.gtes_per_gt) as usize, g % self.gtes_per_gt)
    }

    /// The sector of the grain table entry for `offset`, if the table exists.
    fn gte_at(&self, offset: u64) -> Result<Option<u64>, DiskError> {
        let (gdi, gti) = self.indices(offset);
        let gt = *self.gd.get(gdi).ok_or(DiskError::Corrupt("VMDK grain directory index"))? as u64;
        Ok((gt != 0).then_some(gt * SECTOR + 4 * gti))
    }

    /// Byte offset of the grain holding `offset`, if one is allocated.
    fn grain(&mut self, offset: u64) -> Result<Option<u64>, DiskError> {
        let Some(at) = self.gte_at(offset)? else { return Ok(None) };
        let mut b = [0u8; 4];
        self.file.read_at(at, &mut b)?;
        let e = u32::from_le_bytes(b) as u64;
        if e == 0 || (e == 1 && self.zero_grain) {
            return Ok(None);
        }
        Ok(Some(e * SECTOR))
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match self.grain(offset)? {
            Some(g) => self.file.read_at(g + offset % self.grain_bytes, buf),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn alloc(&mut self, bytes: u64) -> u64 {
        let at = self.next_free;
        self.next_free += bytes.div_ceil(SECTOR) * SECTOR;
        at
    }

    /// Creates the missing grain table for directory entry `gdi` (and its
    /// redundant copy).
    fn add_table(&mut self, gdi: usize) -> Result<(), DiskError> {
        let bytes = self.gtes_per_gt * 4;
        let zero = vec![0u8; bytes as usize];
        let gt = self.alloc(bytes);
        self.file.write_at(gt, &zero)?;
        if let Some((rgd_sector, rgd)) = self.rgd.as_mut() {
            let rgt = self.next_free;
            self.next_free += bytes.div_ceil(SECTOR) * SECTOR;
            self.file.write_at(rgt, &zero)?;
            let s = (rgt / SECTOR) as u32;
            self.file.write_at(*rgd_sector * SECTOR + 4 * gdi as u64, &s.to_le_bytes())?;
            rgd[gdi] = s;
        }
        let s = (gt / SECTOR) as u32;
        self.file.write_at(self.gd_sector * SECTOR + 4 * gdi as u64, &s.to_le_bytes())?;
        self.gd[gdi] = s;
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if let Some(g) = self.grain(offset)? {
            return self.file.write_at(g + offset % self.grain_bytes, data);
        }
        let (gdi, gti) = self.indices(offset);
        if self.gte_at(offset)?.is_none() {
            self.add_table(gdi)?;
        }
        let base = offset - offset % self.grain_bytes;
        let mut grain = vec![0u8; self.grain_bytes as usize];
        let in_grain = (offset - base) as usize;
        grain[in_grain..in_grain + data.len()].copy_from_slice(data);
        // A grain is written whole (the last one may reach past the capacity).
        let g = self.alloc(self.grain_bytes);
        if g / SECTOR > u32::MAX as u64 {
            return Err(DiskError::NoSpace);
        }
        self.file.write_at(g, &grain)?;
        let s = ((g / SECTOR) as u32).to_le_bytes();
        if let Some((_, rgd)) = &self.rgd {
            let rgt = rgd.get(gdi).copied().unwrap_or(0) as u64;
            if rgt != 0 {
                self.file.write_at(rgt * SECTOR + 4 * gti, &s)?;
            }
        }
        let at = self.gte_at(offset)?.ok_or(DiskError::Corrupt("VMDK grain table vanished"))?;
        self.file.write_at(at, &s)
    }
}

impl Vmdk {
    pub fn open(store: &mut dyn ImageStore, path: &str, read_only: bool) -> Result<Self, DiskError> {
        let mut file = store.open(path, !read_only)?;
        let len = file.size()?;
        let mut magic = [0u8; 4];
        if len >= 4 {
            file.read_at(0, &mut magic)?;
        }
        if &magic == MAGIC {
            // monolithicSparse: the file is the only extent.
            let (sparse, capacity, descriptor) = Sparse::open(file, !read_only)?;
            let desc = parse_descriptor(descriptor.as_deref().unwrap_or(""))?;
            check_parent(&desc)?;
            let create_type = if desc.create_type.is_empty() { String::from("monolithicSparse") } else { desc.create_type };
            return Ok(Vmdk {
                extents: vec![Extent { start: 0, len: capacity, writable: !read_only, kind: Kind::Sparse(sparse) }],
                size: capacity,
                read_only,
                create_type,
            });
        }
        if len > MAX_DESCRIPTOR {
            return Err(DiskError::Corrupt("not a VMDK (no sparse header, too large for a descriptor)"));
        }
        let mut text = vec![0u8; len as usize];
        file.read_at(0, &mut text)?;
        drop(file);
        let text = String::from_utf8(text).map_err(|_| DiskError::Corrupt("VMDK descriptor is not text"))?;
        if !text.contains("createType") {
            return Err(DiskError::Corrupt("not a VMDK descriptor"));
        }
        let desc = parse_descriptor(&text)?;
        check_parent(&desc)?;
        let mut extents = Vec::new();
        let mut start = 0u64;
        for e in &desc.extents {
            let len = e.sectors.checked_mul(SECTOR).ok_or(DiskError::Corrupt("VMDK extent size"))?;
            let writable = !read_only && e.access == "RW";
            if e.access == "NOACCESS" {
                return Err(DiskError::Unsupported("VMDK NOACCESS extent"));
            }
            let kind = match e.kind.as_str() {
                "SPARSE" => {
                    let f = store.open(&sibling(path, &e.file), writable)?;
                    let (s, cap, _) = Sparse::open(f, writable)?;
                    if cap < len {
                        return Err(DiskError::Corrupt("VMDK sparse extent smaller than its descriptor line"));
                    }
                    Kind::Sparse(s)
                }
                "FLAT" => Kind::Flat { file: store.open(&sibling(path, &e.file), writable)?, offset: e.offset * SECTOR },
                "ZERO" => Kind::Zero,
                _ => return Err(DiskError::Unsupported("VMDK extent type (VMFS or streamOptimized)")),
            };
            extents.push(Extent { start, len, writable, kind });
            start = start.checked_add(len).ok_or(DiskError::Corrupt("VMDK size overflows"))?;
        }
        if extents.is_empty() {
            return Err(DiskError::Corrupt("VMDK descriptor names no extents"));
        }
        Ok(Vmdk { extents, size: start, read_only, create_type: desc.create_type })
    }

    pub fn create_type(&self) -> &str {
        &self.create_type
    }

    pub fn extent_count(&self) -> usize {
        self.extents.len()
    }

    /// Runs `f` on every piece of `[offset, offset + len)` that lies in one
    /// extent and one grain: (extent, offset in extent, range in the buffer).
    fn pieces(&mut self, offset: u64, len: usize, mut f: impl FnMut(&mut Extent, u64, core::ops::Range<usize>) -> Result<(), DiskError>) -> Result<(), DiskError> {
        check_range(offset, len, self.size)?;
        let mut done = 0usize;
        while done < len {
            let at = offset + done as u64;
            let e = self.extents.iter_mut().find(|e| at >= e.start && at < e.start + e.len).ok_or(DiskError::OutOfRange)?;
            let rel = at - e.start;
            let mut n = (e.start + e.len - at).min((len - done) as u64);
            if let Kind::Sparse(s) = &e.kind {
                n = n.min(s.grain_bytes - rel % s.grain_bytes);
            }
            let n = n as usize;
            f(e, rel, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

fn check_parent(d: &Descriptor) -> Result<(), DiskError> {
    match d.parent_cid.as_deref() {
        None | Some("ffffffff") => Ok(()),
        Some(_) => Err(DiskError::Unsupported("VMDK with a parent disk (use a qcow2 linked clone)")),
    }
}

impl BlockBackend for Vmdk {
    fn len(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        self.pieces(offset, buf.len(), |e, rel, r| match &mut e.kind {
            Kind::Sparse(s) => s.read(rel, &mut buf[r]),
            Kind::Flat { file, offset } => file.read_at(*offset + rel, &mut buf[r]),
            Kind::Zero => {
                buf[r].fill(0);
                Ok(())
            }
        })
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        self.pieces(offset, data.len(), |e, rel, r| {
            if !e.writable {
                return Err(DiskError::ReadOnly);
            }
            match &mut e.kind {
                Kind::Sparse(s) => s.write(rel, &data[r]),
                Kind::Flat { file, offset } => file.write_at(*offset + rel, &data[r]),
                Kind::Zero => Err(DiskError::ReadOnly),
            }
        })
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        for e in &mut self.extents {
            match &mut e.kind {
                Kind::Sparse(s) => s.file.flush()?,
                Kind::Flat { file, .. } => file.flush()?,
                Kind::Zero => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_split_descriptor() {
        let text = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n\n# Extent description\nRW 4192256 SPARSE \"d-s001.vmdk\"\nRW 1000 FLAT \"d-f.vmdk\" 8\nRDONLY 64 ZERO\n\nddb.virtualHWVersion = \"4\"\n";
        let d = parse_descriptor(text).unwrap();
        assert_eq!(d.create_type, "twoGbMaxExtentSparse");
        assert_eq!(d.parent_cid.as_deref(), Some("ffffffff"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0], ExtentLine { access: "RW".into(), sectors: 4192256, kind: "SPARSE".into(), file: "d-s001.vmdk".into(), offset: 0 });
        assert_eq!(d.extents[1].offset, 8);
        assert_eq!(d.extents[2].kind, "ZERO");
        assert!(parse_descriptor("RW 10 SPARSE d.vmdk\n").is_err(), "unquoted name");
        assert!(check_parent(&parse_descriptor("parentCID=1234abcd\n").unwrap()).is_err());
    }
}
