//! Decoding one gzip member (RFC 1952) held whole in memory: the compressed
//! root archive. The DEFLATE stream is inflated by `miniz_oxide` (the
//! decoder behind flate2: well kept, `no_std` on stable) straight into a
//! buffer of the size the trailer announces, so the output is allocated
//! once and never regrown; the trailer's CRC-32 (`crc32fast`) and size are
//! checked so a damaged archive is an error, never a half-unpacked root.

use alloc::vec::Vec;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

pub const MAGIC: [u8; 2] = [0x1f, 0x8b];
const HEADER_LEN: usize = 10;
const TRAILER_LEN: usize = 8;
const CM_DEFLATE: u8 = 8;
const FHCRC: u8 = 1 << 1;
const FEXTRA: u8 = 1 << 2;
const FNAME: u8 = 1 << 3;
const FCOMMENT: u8 = 1 << 4;
const FRESERVED: u8 = 0xe0;
/// DEFLATE's largest expansion: a 258-byte match in about 2 bits.
const MAX_RATIO: usize = 1032;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipError {
    /// Not gzip, or a header field that makes no sense (named).
    BadHeader(&'static str),
    /// The data ends inside the header, the DEFLATE stream or the trailer.
    Truncated,
    /// The DEFLATE stream is invalid.
    Corrupt,
    /// The unpacked size is over the caller's limit.
    TooLarge { size: u64, limit: u64 },
    /// The trailer records more than DEFLATE can expand this input to
    /// (at most 1032:1): a truncated or damaged archive.
    ImpossibleSize { size: u64, compressed: u64 },
    /// No memory for the unpacked bytes.
    OutOfMemory { size: u64 },
    /// The stream unpacked to another size than the trailer records.
    SizeMismatch { expected: u64, got: u64 },
    /// The stream goes on past the size the trailer records.
    LongerThanRecorded { expected: u64 },
    CrcMismatch { expected: u32, got: u32 },
    /// Bytes after the member's trailer (concatenated members are not
    /// supported: image-builder writes one).
    TrailingData { bytes: u64 },
}

impl core::fmt::Display for GzipError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadHeader(what) => write!(f, "bad gzip header: {what}"),
            Self::Truncated => f.write_str("gzip data is truncated"),
            Self::Corrupt => f.write_str("corrupt DEFLATE data"),
            Self::TooLarge { size, limit } => write!(f, "unpacked size {size} bytes is over the limit of {limit}"),
            Self::ImpossibleSize { size, compressed } => {
                write!(f, "the trailer records {size} bytes, more than {compressed} compressed bytes can hold")
            }
            Self::OutOfMemory { size } => write!(f, "no memory for {size} unpacked bytes"),
            Self::SizeMismatch { expected, got } => {
                write!(f, "unpacked {got} bytes where the trailer records {expected}")
            }
            Self::LongerThanRecorded { expected } => {
                write!(f, "unpacks to more than the {expected} bytes the trailer records")
            }
            Self::CrcMismatch { expected, got } => write!(f, "CRC-32 {got:#010x} where the trailer records {expected:#010x}"),
            Self::TrailingData { bytes } => write!(f, "{bytes} bytes after the gzip trailer"),
        }
    }
}

pub fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Offset of the DEFLATE stream: the header with its optional fields.
fn deflate_start(data: &[u8]) -> Result<usize, GzipError> {
    let header = data.get(..HEADER_LEN).ok_or(GzipError::Truncated)?;
    if header[..2] != MAGIC {
        return Err(GzipError::BadHeader("no gzip magic"));
    }
    if header[2] != CM_DEFLATE {
        return Err(GzipError::BadHeader("compression method is not DEFLATE"));
    }
    let flags = header[3];
    if flags & FRESERVED != 0 {
        return Err(GzipError::BadHeader("reserved flag bits set"));
    }
    let mut at = HEADER_LEN;
    if flags & FEXTRA != 0 {
        let len = data.get(at..at + 2).ok_or(GzipError::Truncated)?;
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = data.get(at..).ok_or(GzipError::Truncated)?;
            at += rest.iter().position(|&b| b == 0).ok_or(GzipError::Truncated)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    if at > data.len() {
        return Err(GzipError::Truncated);
    }
    Ok(at)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Unpacks the single gzip member that is all of `data`, refusing an
/// unpacked size over `limit` bytes before allocating anything.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let start = deflate_start(data)?;
    if data.len() < start + TRAILER_LEN {
        return Err(GzipError::Truncated);
    }
    // ISIZE is the size modulo 2^32; archives over 4 GiB are refused by
    // the limit long before that matters.
    let isize = le32(&data[data.len() - 4..]) as usize;
    if isize > data.len().saturating_mul(MAX_RATIO) {
        return Err(GzipError::ImpossibleSize { size: isize as u64, compressed: data.len() as u64 });
    }
    if isize > limit {
        return Err(GzipError::TooLarge { size: isize as u64, limit: limit as u64 });
    }
    let mut out = Vec::new();
    out.try_reserve_exact(isize).map_err(|_| GzipError::OutOfMemory { size: isize as u64 })?;
    out.resize(isize, 0);

    // The whole input and the whole output in one call: no HAS_MORE_INPUT
    // (the end of `data` is the end), and the output buffer is the full
    // result, so back-references need no wrapping window.
    let mut state = DecompressorOxide::new();
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, consumed, produced) = decompress(&mut state, &data[start..], &mut out, 0, flags);
    match status {
        TINFLStatus::Done => {}
        // Output full but the stream goes on: more data than ISIZE says.
        TINFLStatus::HasMoreOutput => {
            return Err(GzipError::LongerThanRecorded { expected: isize as u64 });
        }
        TINFLStatus::FailedCannotMakeProgress | TINFLStatus::NeedsMoreInput => return Err(GzipError::Truncated),
        _ => return Err(GzipError::Corrupt),
    }
    if produced != isize {
        return Err(GzipError::SizeMismatch { expected: isize as u64, got: produced as u64 });
    }
    let trailer_at = start + consumed;
    let trailer = data.get(trailer_at..trailer_at + TRAILER_LEN).ok_or(GzipError::Truncated)?;
    let extra = data.len() - (trailer_at + TRAILER_LEN);
    if extra != 0 {
        return Err(GzipError::TrailingData { bytes: extra as u64 });
    }
    let expected = le32(&trailer[..4]);
    let got = crc32fast::hash(&out);
    if got != expected {
        return Err(GzipError::CrcMismatch { expected, got });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// 100 kB that compress about 2:1, like code.
    fn sample() -> Vec<u8> {
        let mut x = 0x9e37_79b9u32;
        (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 16) as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_flate2_output() {
        let data = sample();
        assert_eq!(gunzip(&gz(&data), 1 << 30).unwrap(), data);
        assert_eq!(gunzip(&gz(b""), 1 << 30).unwrap(), b"");
    }

    #[test]
    fn optional_header_fields_are_skipped() {
        let mut e = flate2::GzBuilder::new()
            .filename("rootfs.cpio")
            .comment("mantle")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(b"hello").unwrap();
        assert_eq!(gunzip(&e.finish().unwrap(), 100).unwrap(), b"hello");
    }

    #[test]
    fn every_truncation_is_an_error() {
        let g = gz(&sample());
        // Every prefix, in steps so the test stays quick.
        for len in (0..64).chain((0..g.len()).step_by(g.len() / 50)).chain(g.len() - 9..g.len()) {
            let r = gunzip(&g[..len], 1 << 30);
            assert!(r.is_err(), "prefix of {len} bytes of {} unpacked", g.len());
        }
        assert_eq!(gunzip(&g[..5], 1 << 30), Err(GzipError::Truncated));
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let data = sample();
        let g = gz(&data);
        for at in (10..g.len() - 8).step_by(g.len() / 60) {
            let mut bad = g.clone();
            bad[at] ^= 0x5a;
            assert!(gunzip(&bad, 1 << 30).is_err(), "flipped byte {at} went unnoticed");
        }
        let mut bad = g.clone();
        let crc_at = bad.len() - 8;
        bad[crc_at] ^= 1;
        assert!(matches!(gunzip(&bad, 1 << 30), Err(GzipError::CrcMismatch { .. })));
        let mut bad = g.clone();
        let size_at = bad.len() - 4;
        bad[size_at] ^= 1;
        assert!(matches!(
            gunzip(&bad, 1 << 30),
            Err(GzipError::SizeMismatch { .. } | GzipError::LongerThanRecorded { .. })
        ));
        let mut bad = g.clone();
        bad.extend_from_slice(b"junk");
        assert!(gunzip(&bad, 1 << 30).is_err());
        let mut bad = g.clone();
        bad[2] = 7;
        assert_eq!(gunzip(&bad, 1 << 30), Err(GzipError::BadHeader("compression method is not DEFLATE")));
        let mut bad = g;
        bad[3] = 0x80;
        assert_eq!(gunzip(&bad, 1 << 30), Err(GzipError::BadHeader("reserved flag bits set")));
    }

    #[test]
    fn size_limit_is_checked_before_allocating() {
        let g = gz(&sample());
        assert_eq!(gunzip(&g, 1000), Err(GzipError::TooLarge { size: 100_000, limit: 1000 }));
        // A forged size of 4 GiB - 1 is refused, not allocated.
        let mut forged = g.clone();
        let n = forged.len();
        forged[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(gunzip(&forged, usize::MAX), Err(GzipError::ImpossibleSize { .. })));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678u32;
        for len in 0..300 {
            let mut d: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            if len >= 4 {
                d[..4].copy_from_slice(&[0x1f, 0x8b, 8, 0]);
            }
            let _ = gunzip(&d, 1 << 20);
        }
    }
}
