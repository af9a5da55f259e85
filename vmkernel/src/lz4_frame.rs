//! Decoding one LZ4 frame (the LZ4 Frame Format 1.6.x, what `lz4 -9` and
//! lz4_flex's `FrameEncoder` write) held whole in memory: the compressed
//! root archive of images made before 2026-12-07, which ship it as one zstd
//! frame now (`rootfs::unpack`, README "Benchmarks"). LZ4 rather than gzip because the kernel unpacks the
//! archive on every boot. Measured on the same 17.8 MB cpio under QEMU
//! `-icount shift=0` (instructions, load-independent): gzip -9 7.8 MB
//! inflated in 442 M instructions, this LZ4 frame 10.9 MB in 105 M; zstd -19
//! would be 3.7 MB but ruzstd decodes 4.4x slower than lz4_flex natively
//! (426 ms vs 98 ms), i.e. slower than gzip. Every test boots the image, so
//! the fastest decoder wins over the smallest ISO.
//!
//! The blocks are decoded by `lz4_flex` (well kept, `no_std`; its fast
//! decoder with the `checked-decode` bounds checks its authors prescribe for
//! untrusted input — the safe decoder costs 75% more instructions) straight
//! into one buffer of the size the frame header announces, so the
//! output is allocated once and never regrown. Header, block and content
//! checksums (xxHash32) are checked when the frame carries them, so a
//! damaged archive is an error, never a half-unpacked root. The frame stays
//! standard: `lz4 -dc rootfs.cpio.lz4 | cpio -t` reads it on any host.

use alloc::vec::Vec;

use xxhash_rust::xxh32::xxh32;

/// The frame magic, little endian on disk.
pub const MAGIC: u32 = 0x184D_2204;
const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_INDEPENDENT: u8 = 1 << 5;
const FLG_BLOCK_CHECKSUM: u8 = 1 << 4;
const FLG_CONTENT_SIZE: u8 = 1 << 3;
const FLG_CONTENT_CHECKSUM: u8 = 1 << 2;
const FLG_RESERVED: u8 = 1 << 1;
const FLG_DICT_ID: u8 = 1 << 0;
const BD_RESERVED: u8 = 0b1000_1111;
/// The high bit of a block size: the block is stored uncompressed.
const BLOCK_UNCOMPRESSED: u32 = 1 << 31;
/// LZ4's largest expansion: a 255-byte run of length bytes gives at most
/// 255 output bytes per input byte.
const MAX_RATIO: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lz4Error {
    /// Not an LZ4 frame, or a header field that makes no sense (named).
    BadHeader(&'static str),
    /// The header's checksum byte does not match the header.
    HeaderChecksum { expected: u8, got: u8 },
    /// The frame does not record its content size: the decoder allocates
    /// the output once and needs it (image-builder always writes it).
    NoContentSize,
    /// Linked blocks (a block referring into the previous one) are not
    /// decoded: image-builder writes independent blocks.
    LinkedBlocks,
    /// The data ends inside the header, a block or the checksum.
    Truncated,
    /// A block is not valid LZ4, or larger than the frame's block size.
    Corrupt { block: usize },
    /// The unpacked size is over the caller's limit.
    TooLarge { size: u64, limit: u64 },
    /// The header records more than LZ4 can expand this input to.
    ImpossibleSize { size: u64, compressed: u64 },
    /// No memory for the unpacked bytes.
    OutOfMemory { size: u64 },
    /// The blocks unpacked to another size than the header records.
    SizeMismatch { expected: u64, got: u64 },
    BlockChecksum { block: usize },
    ContentChecksum { expected: u32, got: u32 },
    /// Bytes after the frame (concatenated frames are not supported).
    TrailingData { bytes: u64 },
}

impl core::fmt::Display for Lz4Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadHeader(what) => write!(f, "bad LZ4 frame header: {what}"),
            Self::HeaderChecksum { expected, got } => {
                write!(f, "LZ4 header checksum {got:#04x} where the header records {expected:#04x}")
            }
            Self::NoContentSize => f.write_str("the LZ4 frame does not record its content size"),
            Self::LinkedBlocks => f.write_str("the LZ4 frame has linked blocks (only independent blocks are decoded)"),
            Self::Truncated => f.write_str("LZ4 data is truncated"),
            Self::Corrupt { block } => write!(f, "LZ4 block {block} is corrupt"),
            Self::TooLarge { size, limit } => write!(f, "unpacked size {size} bytes is over the limit of {limit}"),
            Self::ImpossibleSize { size, compressed } => {
                write!(f, "the header records {size} bytes, more than {compressed} compressed bytes can hold")
            }
            Self::OutOfMemory { size } => write!(f, "no memory for {size} unpacked bytes"),
            Self::SizeMismatch { expected, got } => write!(f, "unpacked {got} bytes where the header records {expected}"),
            Self::BlockChecksum { block } => write!(f, "LZ4 block {block} fails its checksum"),
            Self::ContentChecksum { expected, got } => {
                write!(f, "content checksum {got:#010x} where the frame records {expected:#010x}")
            }
            Self::TrailingData { bytes } => write!(f, "{bytes} bytes after the LZ4 frame"),
        }
    }
}

pub fn is_lz4_frame(data: &[u8]) -> bool {
    data.len() >= 4 && le32(data) == MAGIC
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Takes `n` bytes from the front of `data`.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], Lz4Error> {
    if data.len() < n {
        return Err(Lz4Error::Truncated);
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Ok(head)
}

/// The frame descriptor's facts the decoder uses.
struct Descriptor {
    block_checksum: bool,
    content_checksum: bool,
    content_size: u64,
    max_block: usize,
}

fn descriptor(data: &mut &[u8]) -> Result<Descriptor, Lz4Error> {
    if le32(take(data, 4)?) != MAGIC {
        return Err(Lz4Error::BadHeader("no LZ4 frame magic"));
    }
    let start = *data;
    let fixed = take(data, 2)?;
    let (flg, bd) = (fixed[0], fixed[1]);
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(Lz4Error::BadHeader("frame version is not 01"));
    }
    if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
        return Err(Lz4Error::BadHeader("reserved bits set"));
    }
    let max_block = match (bd >> 4) & 0b111 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(Lz4Error::BadHeader("block maximum size is not 64 KiB, 256 KiB, 1 MiB or 4 MiB")),
    };
    let content_size = if flg & FLG_CONTENT_SIZE != 0 {
        let b = take(data, 8)?;
        Some(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    } else {
        None
    };
    if flg & FLG_DICT_ID != 0 {
        return Err(Lz4Error::BadHeader("a dictionary is required"));
    }
    let descriptor_len = start.len() - data.len();
    let expected = take(data, 1)?[0];
    let got = (xxh32(&start[..descriptor_len], 0) >> 8) as u8;
    if got != expected {
        return Err(Lz4Error::HeaderChecksum { expected, got });
    }
    if flg & FLG_BLOCK_INDEPENDENT == 0 {
        return Err(Lz4Error::LinkedBlocks);
    }
    Ok(Descriptor {
        block_checksum: flg & FLG_BLOCK_CHECKSUM != 0,
        content_checksum: flg & FLG_CONTENT_CHECKSUM != 0,
        content_size: content_size.ok_or(Lz4Error::NoContentSize)?,
        max_block,
    })
}

/// Unpacks the single LZ4 frame that is all of `data`, refusing an
/// unpacked size over `limit` bytes before allocating anything.
pub fn unpack(data: &[u8], limit: usize) -> Result<Vec<u8>, Lz4Error> {
    let compressed = data.len() as u64;
    let mut rest = data;
    let d = descriptor(&mut rest)?;
    if d.content_size > compressed.saturating_mul(MAX_RATIO as u64) {
        return Err(Lz4Error::ImpossibleSize { size: d.content_size, compressed });
    }
    if d.content_size > limit as u64 {
        return Err(Lz4Error::TooLarge { size: d.content_size, limit: limit as u64 });
    }
    let size = d.content_size as usize;
    let mut out = Vec::new();
    out.try_reserve_exact(size).map_err(|_| Lz4Error::OutOfMemory { size: size as u64 })?;
    out.resize(size, 0);

    let mut produced = 0usize;
    for block in 0.. {
        let header = le32(take(&mut rest, 4)?);
        if header == 0 {
            break;
        }
        let len = (header & !BLOCK_UNCOMPRESSED) as usize;
        if len > d.max_block {
            return Err(Lz4Error::Corrupt { block });
        }
        let bytes = take(&mut rest, len)?;
        if d.block_checksum {
            let expected = le32(take(&mut rest, 4)?);
            if xxh32(bytes, 0) != expected {
                return Err(Lz4Error::BlockChecksum { block });
            }
        }
        // At most one block's worth of room, and never past the recorded
        // size: a block that would unpack further is corrupt or the header
        // lies, and is caught here without writing out of bounds.
        let room_end = produced.saturating_add(d.max_block).min(size);
        let room = &mut out[produced..room_end];
        let n = if header & BLOCK_UNCOMPRESSED != 0 {
            let dst = room.get_mut(..len).ok_or(Lz4Error::SizeMismatch {
                expected: size as u64,
                got: (produced + len) as u64,
            })?;
            dst.copy_from_slice(bytes);
            len
        } else {
            lz4_flex::block::decompress_into(bytes, room).map_err(|_| {
                if room_end == size && room.len() < d.max_block {
                    // Ran out of the recorded size: the header undercounts.
                    Lz4Error::SizeMismatch { expected: size as u64, got: size as u64 + 1 }
                } else {
                    Lz4Error::Corrupt { block }
                }
            })?
        };
        produced += n;
    }
    if produced != size {
        return Err(Lz4Error::SizeMismatch { expected: size as u64, got: produced as u64 });
    }
    if d.content_checksum {
        let expected = le32(take(&mut rest, 4)?);
        let got = xxh32(&out, 0);
        if got != expected {
            return Err(Lz4Error::ContentChecksum { expected, got });
        }
    }
    if !rest.is_empty() {
        return Err(Lz4Error::TrailingData { bytes: rest.len() as u64 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use std::io::Write;

    fn frame(data: &[u8], info: lz4_flex::frame::FrameInfo) -> Vec<u8> {
        let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// What image-builder writes.
    fn standard(data: &[u8]) -> Vec<u8> {
        let info = lz4_flex::frame::FrameInfo::new()
            .content_size(Some(data.len() as u64))
            .content_checksum(true)
            .block_checksums(true)
            .block_size(lz4_flex::frame::BlockSize::Max4MB);
        frame(data, info)
    }

    /// 300 kB that compress about 2:1, like code.
    fn sample() -> Vec<u8> {
        let mut x = 0x9e37_79b9u32;
        (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 16) as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_lz4_flex_frames() {
        let data = sample();
        assert_eq!(unpack(&standard(&data), 1 << 30).unwrap(), data);
        assert_eq!(unpack(&standard(b""), 1 << 30).unwrap(), b"");
        // Small blocks, no checksums: several blocks, some stored raw.
        let info = lz4_flex::frame::FrameInfo::new()
            .content_size(Some(data.len() as u64))
            .block_size(lz4_flex::frame::BlockSize::Max64KB);
        assert_eq!(unpack(&frame(&data, info), 1 << 30).unwrap(), data);
        let mut random = vec![0u8; 200_000];
        let mut x = 1u64;
        for b in &mut random {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (x >> 56) as u8;
        }
        assert_eq!(unpack(&standard(&random), 1 << 30).unwrap(), random);
    }

    #[test]
    fn reads_the_lz4_command_line_tools_output() {
        // `lz4 -9 --content-size -BX h.txt` (lz4 1.9.4) of three lines
        // "hello, mantle": content size, block and content checksums.
        const PACKED: [u8; 55] = [
            0x04, 0x22, 0x4d, 0x18, 0x7c, 0x40, 0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x92, 0x18, 0x00,
            0x00, 0x00, 0xef, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x2c, 0x20, 0x6d, 0x61, 0x6e, 0x74, 0x6c, 0x65, 0x0a,
            0x0e, 0x00, 0x04, 0x50, 0x6e, 0x74, 0x6c, 0x65, 0x0a, 0xfd, 0x3b, 0x45, 0x9a, 0x00, 0x00, 0x00, 0x00,
            0xc3, 0x6a, 0x0c, 0xf1,
        ];
        assert!(is_lz4_frame(&PACKED));
        assert_eq!(unpack(&PACKED, 100).unwrap(), b"hello, mantle\nhello, mantle\nhello, mantle\n");
        assert_eq!(unpack(&PACKED, 41), Err(Lz4Error::TooLarge { size: 42, limit: 41 }));
    }

    #[test]
    fn frames_without_content_size_or_with_linked_blocks_are_refused() {
        let data = sample();
        let info = lz4_flex::frame::FrameInfo::new();
        assert_eq!(unpack(&frame(&data, info), 1 << 30), Err(Lz4Error::NoContentSize));
        let info = lz4_flex::frame::FrameInfo::new()
            .content_size(Some(data.len() as u64))
            .block_mode(lz4_flex::frame::BlockMode::Linked);
        assert_eq!(unpack(&frame(&data, info), 1 << 30), Err(Lz4Error::LinkedBlocks));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let data = sample();
        let packed = standard(&data);
        for cut in (0..packed.len()).step_by(997).chain(packed.len() - 8..packed.len()) {
            assert!(unpack(&packed[..cut], 1 << 30).is_err(), "cut at {cut}");
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert_eq!(unpack(&longer, 1 << 30), Err(Lz4Error::TrailingData { bytes: 1 }));
    }

    #[test]
    fn corruption_is_detected() {
        let data = sample();
        let packed = standard(&data);
        // Every byte flipped in turn (sampled) is an error: the header,
        // block and content checksums leave no silent corruption.
        for at in (4..packed.len()).step_by(331) {
            let mut bad = packed.clone();
            bad[at] ^= 0x40;
            assert!(unpack(&bad, 1 << 30).is_err(), "flip at {at}");
        }
        let mut bad = packed.clone();
        bad[0] ^= 1;
        assert_eq!(unpack(&bad, 1 << 30), Err(Lz4Error::BadHeader("no LZ4 frame magic")));
    }

    #[test]
    fn size_limit_is_checked_before_allocating() {
        let data = sample();
        let packed = standard(&data);
        assert_eq!(
            unpack(&packed, 1000),
            Err(Lz4Error::TooLarge { size: data.len() as u64, limit: 1000 })
        );
    }

    #[test]
    fn a_header_that_lies_about_the_size_is_an_error() {
        // Rewrite the content size (and the header checksum) to 1 byte
        // less and 1 byte more than the truth.
        let data = sample();
        for delta in [-1i64, 1] {
            let mut packed = standard(&data);
            let size = (data.len() as i64 + delta) as u64;
            packed[6..14].copy_from_slice(&size.to_le_bytes());
            packed[14] = (xxh32(&packed[4..14], 0) >> 8) as u8;
            assert!(matches!(unpack(&packed, 1 << 30), Err(Lz4Error::SizeMismatch { .. })), "delta {delta}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x = 0x1234_5678u32;
        let data = sample();
        let packed = standard(&data);
        for round in 0..2000 {
            let mut bad = packed[..packed.len().min(4096)].to_vec();
            for _ in 0..1 + round % 8 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = 4 + (x as usize) % (bad.len() - 4);
                bad[at] = (x >> 24) as u8;
            }
            let _ = unpack(&bad, 1 << 24);
        }
    }
}
