//! qcow2 images, versions 2 and 3 (QEMU's `docs/interop/qcow2.txt`).
//!
//! A guest offset goes through two tables: the L1 table (kept in memory)
//! names L2 tables, whose entries name data clusters. A cluster nobody
//! wrote reads from the backing file if there is one, else as zeros.
//! Writes to a cluster this image owns (refcount 1, the COPIED flag) go in
//! place; any other write allocates a new cluster at the end of the file,
//! fills it with the old contents and the new data, counts it in the
//! refcount table, and only then points the L2 entry at it — so a crash
//! leaves at worst a leaked cluster, never a table naming garbage (QEMU's
//! order). Not implemented: compressed clusters (reads fail), internal
//! snapshots (such images open read-only), encryption, external data
//! files, extended L2 entries, growing the refcount table (with 64 KiB
//! clusters one table cluster covers 16 TiB of image file).

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::{BlockBackend, DiskError, Format, ImageFile, ImageStore, check_range, open_depth, sibling};

pub const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// Metadata tables larger than this are refused (a hostile header could
/// otherwise make the host allocate gigabytes).
const MAX_TABLE_BYTES: u64 = 32 << 20;

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

/// What backs one guest cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    /// Never written: the backing file or zeros.
    Unallocated,
    /// Reads as zeros (v3 zero flag), possibly with a cluster this image
    /// owns preallocated behind it.
    Zero { owned: Option<u64> },
    /// Host offset of the data and whether this image owns it alone.
    Data { host: u64, copied: bool },
    Compressed,
}

pub struct Qcow2 {
    file: Box<dyn ImageFile>,
    read_only: bool,
    version: u32,
    cluster_bits: u32,
    size: u64,
    l1_offset: u64,
    l1: Vec<u64>,
    rt_offset: u64,
    rt: Vec<u64>,
    refcount_bytes: u64,
    backing: Option<Box<dyn BlockBackend>>,
    /// Where the next cluster is allocated (the cluster-aligned file end).
    next_free: u64,
}

impl Qcow2 {
    pub fn open(store: &mut dyn ImageStore, path: &str, read_only: bool, depth: usize) -> Result<Self, DiskError> {
        let mut file = store.open(path, !read_only)?;
        let file_len = file.size()?;
        let mut h = [0u8; 104];
        let hlen = (file_len.min(104)) as usize;
        if hlen < 72 {
            return Err(DiskError::Corrupt("qcow2 header truncated"));
        }
        file.read_at(0, &mut h[..hlen])?;
        if be32(&h, 0) != MAGIC {
            return Err(DiskError::Corrupt("not a qcow2 image (bad magic)"));
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            return Err(DiskError::Unsupported("qcow2 version other than 2 or 3"));
        }
        let backing_offset = be64(&h, 8);
        let backing_len = be32(&h, 16) as u64;
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            return Err(DiskError::Corrupt("qcow2 cluster size out of range"));
        }
        let cs = 1u64 << cluster_bits;
        let size = be64(&h, 24);
        if be32(&h, 32) != 0 {
            return Err(DiskError::Unsupported("encrypted qcow2"));
        }
        let l1_size = be32(&h, 36) as u64;
        let l1_offset = be64(&h, 40);
        let rt_offset = be64(&h, 48);
        let rt_clusters = be32(&h, 56) as u64;
        let snapshots = be32(&h, 60);
        let (refcount_order, header_len) = if version == 3 {
            if hlen < 104 {
                return Err(DiskError::Corrupt("qcow2 v3 header truncated"));
            }
            let incompatible = be64(&h, 72);
            if incompatible & 1 != 0 {
                return Err(DiskError::Unsupported("qcow2 marked dirty (lazy refcounts): repair it with qemu-img check -r all"));
            }
            if incompatible & 2 != 0 {
                return Err(DiskError::Corrupt("qcow2 marked corrupt"));
            }
            if incompatible != 0 {
                return Err(DiskError::Unsupported("qcow2 incompatible feature (external data file, compression type or extended L2)"));
            }
            (be32(&h, 96), be32(&h, 100) as u64)
        } else {
            (4, 72)
        };
        if !(3..=6).contains(&refcount_order) {
            return Err(DiskError::Unsupported("qcow2 refcount width below 8 bits"));
        }
        let l2_entries = cs / 8;
        let needed_l1 = size.div_ceil(cs * l2_entries);
        if l1_size < needed_l1 || l1_size * 8 > MAX_TABLE_BYTES || rt_clusters * cs > MAX_TABLE_BYTES {
            return Err(DiskError::Corrupt("qcow2 L1 or refcount table size inconsistent"));
        }
        if !l1_offset.is_multiple_of(cs) || !rt_offset.is_multiple_of(cs) {
            return Err(DiskError::Corrupt("qcow2 table not cluster-aligned"));
        }
        let mut raw = vec![0u8; (l1_size * 8) as usize];
        file.read_at(l1_offset, &mut raw)?;
        let l1 = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let mut raw = vec![0u8; (rt_clusters * cs) as usize];
        file.read_at(rt_offset, &mut raw)?;
        let rt = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();

        // Header extensions: only the backing file's format matters here.
        let mut backing_format = None;
        let mut at = header_len;
        let ext_end = cs.min(file_len);
        while at + 8 <= ext_end {
            let mut e = [0u8; 8];
            file.read_at(at, &mut e)?;
            let (kind, len) = (be32(&e, 0), be32(&e, 4) as u64);
            if kind == 0 || at + 8 + len > ext_end {
                break;
            }
            if kind == EXT_BACKING_FORMAT && len <= 16 {
                let mut name = vec![0u8; len as usize];
                file.read_at(at + 8, &mut name)?;
                backing_format = Some(name);
            }
            at += 8 + len.div_ceil(8) * 8;
        }

        let backing = if backing_offset != 0 {
            if backing_len == 0 || backing_len > 1023 {
                return Err(DiskError::Corrupt("qcow2 backing file name length"));
            }
            let mut name = vec![0u8; backing_len as usize];
            file.read_at(backing_offset, &mut name)?;
            let name = String::from_utf8(name).map_err(|_| DiskError::Corrupt("qcow2 backing file name is not UTF-8"))?;
            let path = sibling(path, &name);
            let format = match backing_format.as_deref() {
                Some(b"raw") => Format::Raw,
                Some(b"qcow2") => Format::Qcow2,
                Some(b"vmdk") => Format::Vmdk,
                Some(_) => return Err(DiskError::Unsupported("qcow2 backing file format")),
                None => probe(store, &path)?,
            };
            Some(open_depth(store, &path, format, true, depth + 1)?)
        } else {
            None
        };
        if snapshots != 0 && !read_only {
            return Err(DiskError::Unsupported("qcow2 with internal snapshots (open it read-only)"));
        }
        Ok(Qcow2 {
            next_free: file_len.div_ceil(cs) * cs,
            file,
            read_only,
            version,
            cluster_bits,
            size,
            l1_offset,
            l1,
            rt_offset,
            rt,
            refcount_bytes: 1 << (refcount_order - 3),
            backing,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn has_backing(&self) -> bool {
        self.backing.is_some()
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn l2_entries(&self) -> u64 {
        self.cs() / 8
    }

    fn indices(&self, offset: u64) -> (usize, u64) {
        let cluster = offset >> self.cluster_bits;
        ((cluster / self.l2_entries()) as usize, cluster % self.l2_entries())
    }

    fn read_be64(&mut self, at: u64) -> Result<u64, DiskError> {
        let mut b = [0u8; 8];
        self.file.read_at(at, &mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn l2_table(&self, l1_index: usize) -> Result<Option<(u64, bool)>, DiskError> {
        let e = *self.l1.get(l1_index).ok_or(DiskError::Corrupt("qcow2 L1 index beyond the table"))?;
        let off = e & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        if !off.is_multiple_of(self.cs()) {
            return Err(DiskError::Corrupt("qcow2 L2 table not cluster-aligned"));
        }
        Ok(Some((off, e & COPIED != 0)))
    }

    fn lookup(&mut self, offset: u64) -> Result<Mapping, DiskError> {
        let (l1i, l2i) = self.indices(offset);
        let Some((l2, _)) = self.l2_table(l1i)? else { return Ok(Mapping::Unallocated) };
        let e = self.read_be64(l2 + 8 * l2i)?;
        if e & COMPRESSED != 0 {
            return Ok(Mapping::Compressed);
        }
        let host = e & OFFSET_MASK;
        if self.version == 3 && e & ZERO != 0 {
            let owned = (host != 0 && e & COPIED != 0 && host.is_multiple_of(self.cs())).then_some(host);
            return Ok(Mapping::Zero { owned });
        }
        if host == 0 {
            return Ok(Mapping::Unallocated);
        }
        if !host.is_multiple_of(self.cs()) {
            return Err(DiskError::Corrupt("qcow2 data cluster not aligned"));
        }
        Ok(Mapping::Data { host, copied: e & COPIED != 0 })
    }

    /// Reads guest bytes `[offset, offset + buf.len())` inside one cluster.
    fn read_piece(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        match self.lookup(offset)? {
            Mapping::Data { host, .. } => self.file.read_at(host + (offset & (self.cs() - 1)), buf),
            Mapping::Zero { .. } => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Unallocated => {
                buf.fill(0);
                if let Some(b) = self.backing.as_mut() {
                    let blen = b.len();
                    if offset < blen {
                        let n = ((blen - offset) as usize).min(buf.len());
                        b.read_at(offset, &mut buf[..n])?;
                    }
                }
                Ok(())
            }
            Mapping::Compressed => Err(DiskError::Unsupported("compressed qcow2 clusters")),
        }
    }

    fn refcount_at(&self, cluster: u64) -> Result<u64, DiskError> {
        let per_block = self.cs() / self.refcount_bytes;
        let block = *self.rt.get((cluster / per_block) as usize).ok_or(DiskError::NoSpace)? & OFFSET_MASK;
        if block == 0 {
            return Ok(0);
        }
        Ok(block + (cluster % per_block) * self.refcount_bytes)
    }

    fn get_refcount(&mut self, cluster: u64) -> Result<u64, DiskError> {
        let at = self.refcount_at(cluster)?;
        if at == 0 {
            return Ok(0);
        }
        let mut b = [0u8; 8];
        let n = self.refcount_bytes as usize;
        self.file.read_at(at, &mut b[8 - n..])?;
        Ok(u64::from_be_bytes(b))
    }

    fn set_refcount(&mut self, cluster: u64, value: u64) -> Result<(), DiskError> {
        let at = self.refcount_at(cluster)?;
        if at == 0 {
            return Err(DiskError::Corrupt("qcow2 refcount block missing"));
        }
        let n = self.refcount_bytes as usize;
        self.file.write_at(at, &value.to_be_bytes()[8 - n..])
    }

    /// Allocates one cluster at the end of the file with refcount 1,
    /// adding a refcount block (which counts itself) when the cluster's
    /// block does not exist yet.
    fn alloc_cluster(&mut self) -> Result<u64, DiskError> {
        let cs = self.cs();
        let per_block = cs / self.refcount_bytes;
        loop {
            let c = self.next_free;
            self.next_free += cs;
            let idx = c >> self.cluster_bits;
            let bi = (idx / per_block) as usize;
            if bi >= self.rt.len() {
                return Err(DiskError::NoSpace);
            }
            if self.rt[bi] & OFFSET_MASK == 0 {
                self.file.write_at(c, &vec![0u8; cs as usize])?;
                self.file.write_at(self.rt_offset + 8 * bi as u64, &c.to_be_bytes())?;
                self.rt[bi] = c;
                self.set_refcount(idx, 1)?;
                continue;
            }
            if self.get_refcount(idx)? != 0 {
                continue;
            }
            self.set_refcount(idx, 1)?;
            return Ok(c);
        }
    }

    /// The L2 table for `l1_index`, allocated (zeroed) if missing.
    fn l2_for_write(&mut self, l1_index: usize) -> Result<u64, DiskError> {
        match self.l2_table(l1_index)? {
            Some((off, true)) => Ok(off),
            Some((_, false)) => Err(DiskError::Unsupported("shared qcow2 L2 table (snapshot)")),
            None => {
                let c = self.alloc_cluster()?;
                self.file.write_at(c, &vec![0u8; self.cs() as usize])?;
                let e = c | COPIED;
                self.file.write_at(self.l1_offset + 8 * l1_index as u64, &e.to_be_bytes())?;
                self.l1[l1_index] = e;
                Ok(c)
            }
        }
    }

    /// Writes guest bytes inside one cluster.
    fn write_piece(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let cs = self.cs();
        let in_cluster = offset & (cs - 1);
        let mapping = self.lookup(offset)?;
        if let Mapping::Data { host, copied: true } = mapping {
            return self.file.write_at(host + in_cluster, data);
        }
        if mapping == Mapping::Compressed {
            return Err(DiskError::Unsupported("compressed qcow2 clusters"));
        }
        let (l1i, l2i) = self.indices(offset);
        let l2 = self.l2_for_write(l1i)?;
        let base = offset - in_cluster;
        let mut cluster = vec![0u8; cs as usize];
        if data.len() as u64 != cs {
            // Copy-on-write: what the cluster read as before.
            let valid = ((self.size - base).min(cs)) as usize;
            self.read_piece(base, &mut cluster[..valid])?;
        }
        cluster[in_cluster as usize..in_cluster as usize + data.len()].copy_from_slice(data);
        // A preallocated zero cluster is reused (dropping it would leak it).
        let c = match mapping {
            Mapping::Zero { owned: Some(host) } => host,
            _ => self.alloc_cluster()?,
        };
        self.file.write_at(c, &cluster)?;
        self.file.write_at(l2 + 8 * l2i, &(c | COPIED).to_be_bytes())?;
        if let Mapping::Data { host, copied: false } = mapping {
            let idx = host >> self.cluster_bits;
            let rc = self.get_refcount(idx)?;
            self.set_refcount(idx, rc.saturating_sub(1))?;
        }
        Ok(())
    }
}

/// Guesses an image's format from its first bytes (for backing files
/// named without a format).
pub fn probe(store: &mut dyn ImageStore, path: &str) -> Result<Format, DiskError> {
    let mut f = store.open(path, false)?;
    let mut m = [0u8; 4];
    if f.size()? >= 4 {
        f.read_at(0, &mut m)?;
    }
    Ok(match (u32::from_be_bytes(m), &m) {
        (MAGIC, _) => Format::Qcow2,
        (_, b"KDMV") | (_, b"# Di") => Format::Vmdk,
        _ => Format::Raw,
    })
}

impl BlockBackend for Qcow2 {
    fn len(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.size)?;
        let cs = self.cs();
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let n = ((cs - (at & (cs - 1))) as usize).min(buf.len() - done);
            self.read_piece(at, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, data.len(), self.size)?;
        let cs = self.cs();
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let n = ((cs - (at & (cs - 1))) as usize).min(data.len() - done);
            self.write_piece(at, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.file.flush()
    }
}
