//! The intent record that makes replacing a small file atomic on FAT.
//!
//! The record lives in a preallocated file at the volume root
//! ([`JOURNAL_NAME`]); the datastore writes it straight to that file's
//! clusters through the block cache, so writing it never changes FAT or
//! directory metadata. A record is valid only if its CRC matches: a write
//! torn by a crash reads as "no intent", which is right, because nothing
//! is changed before the record is durable.
//!
//! Layout (little-endian): `magic[8] = "MNTLINT1"`, `state: u32` (0 idle,
//! 1 replace pending), `len: u32` (whole record), `seq: u64`, `crc: u32`
//! (CRC-32 of the record with this field zero), `mtime: u32` (FAT date and
//! time of the new contents), then `from_len: u16`, `to_len: u16`,
//! `data_len: u32`, the two paths (UTF-8) and the new contents.

use alloc::string::String;
use alloc::vec::Vec;

use crate::block::BlockError;
use crate::cache::BlockCache;
use crate::partition::crc32;

/// The journal file's name at the volume root.
pub const JOURNAL_NAME: &str = ".mantle-journal";
const MAGIC: &[u8; 8] = b"MNTLINT1";
/// Header bytes before the paths.
pub const HEADER: usize = 40;

/// A pending replace: `to` gets `data` (taken from `from`), then `from` is
/// removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub seq: u64,
    pub from: String,
    pub to: String,
    /// FAT-encoded modification date (high 16 bits) and time (low 16).
    pub mtime: u32,
    pub data: Vec<u8>,
}

pub fn encode(i: &Intent) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + i.from.len() + i.to.len() + i.data.len());
    let len = (HEADER + i.from.len() + i.to.len() + i.data.len()) as u32;
    r.extend_from_slice(MAGIC);
    r.extend_from_slice(&1u32.to_le_bytes());
    r.extend_from_slice(&len.to_le_bytes());
    r.extend_from_slice(&i.seq.to_le_bytes());
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&i.mtime.to_le_bytes());
    r.extend_from_slice(&(i.from.len() as u16).to_le_bytes());
    r.extend_from_slice(&(i.to.len() as u16).to_le_bytes());
    r.extend_from_slice(&(i.data.len() as u32).to_le_bytes());
    r.extend_from_slice(i.from.as_bytes());
    r.extend_from_slice(i.to.as_bytes());
    r.extend_from_slice(&i.data);
    let crc = crc32(&r);
    r[24..28].copy_from_slice(&crc.to_le_bytes());
    r
}

/// The idle record: says no replace is pending.
pub fn idle(seq: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER);
    r.extend_from_slice(MAGIC);
    r.extend_from_slice(&0u32.to_le_bytes());
    r.extend_from_slice(&(HEADER as u32).to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.resize(HEADER, 0);
    let crc = crc32(&r);
    r[24..28].copy_from_slice(&crc.to_le_bytes());
    r
}

/// What the header says, before the body is read.
pub fn record_len(header: &[u8]) -> Option<usize> {
    if header.len() < HEADER || &header[0..8] != MAGIC {
        return None;
    }
    let state = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]) as usize;
    if state == 1 && len >= HEADER { Some(len) } else { None }
}

/// Decodes a pending record; `None` for idle, torn or foreign data.
pub fn decode(r: &[u8]) -> Option<Intent> {
    let len = record_len(r)?;
    let r = r.get(..len)?;
    let mut copy = r.to_vec();
    copy[24..28].fill(0);
    if crc32(&copy) != u32::from_le_bytes([r[24], r[25], r[26], r[27]]) {
        return None;
    }
    let seq = u64::from_le_bytes([r[16], r[17], r[18], r[19], r[20], r[21], r[22], r[23]]);
    let mtime = u32::from_le_bytes([r[28], r[29], r[30], r[31]]);
    let from_len = u16::from_le_bytes([r[32], r[33]]) as usize;
    let to_len = u16::from_le_bytes([r[34], r[35]]) as usize;
    let data_len = u32::from_le_bytes([r[36], r[37], r[38], r[39]]) as usize;
    if HEADER + from_len + to_len + data_len != len {
        return None;
    }
    let from = String::from_utf8(r[HEADER..HEADER + from_len].to_vec()).ok()?;
    let to = String::from_utf8(r[HEADER + from_len..HEADER + from_len + to_len].to_vec()).ok()?;
    let data = r[HEADER + from_len + to_len..].to_vec();
    Some(Intent { seq, from, to, mtime, data })
}

/// Where the journal file's bytes are on the volume.
#[derive(Clone, Debug)]
pub struct JournalArea {
    /// `(volume byte offset, length)` runs, in file order.
    pub extents: Vec<(u64, u64)>,
    /// Bytes available for one record.
    pub capacity: usize,
}

impl JournalArea {
    /// Largest file a record can carry for `from` and `to`.
    pub fn max_data(&self, from: &str, to: &str) -> usize {
        self.capacity.saturating_sub(HEADER + from.len() + to.len())
    }

    fn for_each(
        &self,
        len: usize,
        mut f: impl FnMut(u64, core::ops::Range<usize>) -> Result<(), BlockError>,
    ) -> Result<(), BlockError> {
        let mut done = 0usize;
        for &(off, elen) in &self.extents {
            if done >= len {
                break;
            }
            let n = (elen as usize).min(len - done);
            f(off, done..done + n)?;
            done += n;
        }
        if done < len { Err(BlockError::OutOfRange) } else { Ok(()) }
    }

    pub fn write(&self, cache: &BlockCache, record: &[u8]) -> Result<(), BlockError> {
        self.for_each(record.len(), |off, r| cache.write(off, &record[r]))
    }

    /// Reads the pending record, if there is a valid one.
    pub fn read(&self, cache: &BlockCache) -> Result<Option<Intent>, BlockError> {
        let mut header = [0u8; HEADER];
        self.for_each(HEADER, |off, r| cache.read(off, &mut header[r]))?;
        let Some(len) = record_len(&header) else { return Ok(None) };
        if len > self.capacity {
            return Ok(None);
        }
        let mut rec = alloc::vec![0u8; len];
        self.for_each(len, |off, r| cache.read(off, &mut rec[r]))?;
        Ok(decode(&rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_records_are_rejected() {
        let i =
            Intent { seq: 7, from: "a/b.tmp".into(), to: "a/b".into(), mtime: 0x1234_5678, data: b"hello".to_vec() };
        let r = encode(&i);
        assert_eq!(decode(&r), Some(i));
        for k in 0..r.len() {
            let mut t = r.clone();
            t[k] ^= 0x40;
            assert_eq!(decode(&t), None, "flipped byte {k} accepted");
        }
        assert_eq!(decode(&idle(8)), None);
        assert_eq!(decode(&r[..r.len() - 1]), None);
    }
}
