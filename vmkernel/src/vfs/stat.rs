//! `struct stat` as the x86-64 Linux kernel writes it (144 bytes).

use super::types::{Metadata, Timespec};

pub const STAT_SIZE: usize = 144;
/// Preferred I/O size reported in st_blksize.
pub const BLKSIZE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
}

impl Stat {
    pub fn new(dev: u64, m: &Metadata) -> Stat {
        Stat {
            dev,
            ino: m.ino,
            nlink: m.nlink,
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            rdev: m.rdev,
            size: m.size,
            blksize: BLKSIZE,
            blocks: m.blocks,
            atime: m.atime,
            mtime: m.mtime,
            ctime: m.ctime,
        }
    }

    pub fn to_bytes(&self) -> [u8; STAT_SIZE] {
        let mut b = [0u8; STAT_SIZE];
        let mut put = |off: usize, bytes: &[u8]| b[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &self.dev.to_le_bytes());
        put(8, &self.ino.to_le_bytes());
        put(16, &self.nlink.to_le_bytes());
        put(24, &self.mode.to_le_bytes());
        put(28, &self.uid.to_le_bytes());
        put(32, &self.gid.to_le_bytes());
        // 36: padding
        put(40, &self.rdev.to_le_bytes());
        put(48, &self.size.to_le_bytes());
        put(56, &self.blksize.to_le_bytes());
        put(64, &self.blocks.to_le_bytes());
        for (i, t) in [self.atime, self.mtime, self.ctime].iter().enumerate() {
            put(72 + 16 * i, &t.sec.to_le_bytes());
            put(80 + 16 * i, &(t.nsec as i64).to_le_bytes());
        }
        // 120..144: reserved
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn layout_matches_libc_stat() {
        assert_eq!(size_of::<libc::stat>(), STAT_SIZE);
        let s = Stat {
            dev: 0x1111,
            ino: 0x2222,
            nlink: 0x3333,
            mode: 0o100644,
            uid: 0x55,
            gid: 0x66,
            rdev: 0x7777,
            size: 0x8888,
            blksize: 0x9999,
            blocks: 0xaaaa,
            atime: Timespec { sec: 0xb1, nsec: 0xb2 },
            mtime: Timespec { sec: 0xc1, nsec: 0xc2 },
            ctime: Timespec { sec: 0xd1, nsec: 0xd2 },
        };
        let b = s.to_bytes();
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_dev)), 0x1111);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_ino)), 0x2222);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_nlink)), 0x3333);
        assert_eq!(u32_at(&b, offset_of!(libc::stat, st_mode)), 0o100644);
        assert_eq!(u32_at(&b, offset_of!(libc::stat, st_uid)), 0x55);
        assert_eq!(u32_at(&b, offset_of!(libc::stat, st_gid)), 0x66);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_rdev)), 0x7777);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_size)), 0x8888);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_blksize)), 0x9999);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_blocks)), 0xaaaa);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_atime)), 0xb1);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_atime_nsec)), 0xb2);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_mtime)), 0xc1);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_mtime_nsec)), 0xc2);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_ctime)), 0xd1);
        assert_eq!(u64_at(&b, offset_of!(libc::stat, st_ctime_nsec)), 0xd2);
        // Field sizes, so a wider field in libc would show up here.
        assert_eq!(field_size(|s: &libc::stat| &s.st_mode), 4);
        assert_eq!(field_size(|s: &libc::stat| &s.st_uid), 4);
        assert_eq!(field_size(|s: &libc::stat| &s.st_nlink), 8);
        assert_eq!(field_size(|s: &libc::stat| &s.st_blksize), 8);
        assert_eq!(field_size(|s: &libc::stat| &s.st_rdev), 8);
    }

    fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
        size_of::<F>()
    }
}
