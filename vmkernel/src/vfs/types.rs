//! Plain data shared by every part of the VFS: file types and mode bits,
//! timestamps, metadata, credentials, poll bits, and the kernel hooks
//! (clock, user memory) the VFS needs but does not own.

use alloc::vec::Vec;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_ISUID: u32 = 0o4000;
pub const S_ISGID: u32 = 0o2000;
pub const S_ISVTX: u32 = 0o1000;
/// Permission bits plus set-id and sticky bits.
pub const MODE_PERM: u32 = 0o7777;

/// Longest path component and whole path (with its NUL) Linux accepts.
pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4096;
/// Symlinks followed in one resolution before ELOOP.
pub const MAX_SYMLINKS: u32 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFLNK => FileType::Symlink,
            S_IFCHR => FileType::CharDevice,
            S_IFBLK => FileType::BlockDevice,
            S_IFIFO => FileType::Fifo,
            S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => S_IFREG,
            FileType::Directory => S_IFDIR,
            FileType::Symlink => S_IFLNK,
            FileType::CharDevice => S_IFCHR,
            FileType::BlockDevice => S_IFBLK,
            FileType::Fifo => S_IFIFO,
            FileType::Socket => S_IFSOCK,
        }
    }

    /// The `d_type` of a `linux_dirent64`.
    pub fn dirent_type(self) -> u8 {
        match self {
            FileType::Fifo => 1,
            FileType::CharDevice => 2,
            FileType::Directory => 4,
            FileType::BlockDevice => 6,
            FileType::Regular => 8,
            FileType::Symlink => 10,
            FileType::Socket => 12,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub const fn from_secs(sec: i64) -> Self {
        Timespec { sec, nsec: 0 }
    }
}

/// Wall-clock time for timestamps; the kernel supplies it.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timespec;
}

/// A clock that always reads the same instant (tests, early boot).
pub struct FixedClock(pub Timespec);

impl Clock for FixedClock {
    fn now(&self) -> Timespec {
        self.0
    }
}

/// Linux's `makedev` (glibc encoding, as in `st_rdev`).
pub const fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12) | ((ma & !0xfff) << 32)
}

pub const fn dev_major(dev: u64) -> u32 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)) as u32
}

pub const fn dev_minor(dev: u64) -> u32 {
    ((dev & 0xff) | ((dev >> 12) & !0xff)) as u32
}

/// What a file system reports about an inode. `st_dev` is not here: the
/// mount the inode is reached through supplies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub ino: u64,
    /// File type bits and permission bits, as in `st_mode`.
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub rdev: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

impl Metadata {
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode).unwrap_or(FileType::Regular)
    }
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    pub fn perm(&self) -> u32 {
        self.mode & MODE_PERM
    }
}

/// Who is asking: the effective ids of the calling process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Credentials {
    pub fn root() -> Self {
        Credentials { uid: 0, gid: 0, groups: Vec::new() }
    }
    pub fn user(uid: u32, gid: u32) -> Self {
        Credentials { uid, gid, groups: Vec::new() }
    }
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Readiness for poll/select/epoll, in Linux `POLL*` bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollEvents(pub u16);

impl PollEvents {
    pub const IN: PollEvents = PollEvents(0x001);
    pub const PRI: PollEvents = PollEvents(0x002);
    pub const OUT: PollEvents = PollEvents(0x004);
    pub const ERR: PollEvents = PollEvents(0x008);
    pub const HUP: PollEvents = PollEvents(0x010);
    pub const NVAL: PollEvents = PollEvents(0x020);
    pub const NONE: PollEvents = PollEvents(0);

    pub const fn contains(self, other: PollEvents) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for PollEvents {
    type Output = PollEvents;
    fn bitor(self, rhs: PollEvents) -> PollEvents {
        PollEvents(self.0 | rhs.0)
    }
}

impl core::ops::BitOrAssign for PollEvents {
    fn bitor_assign(&mut self, rhs: PollEvents) {
        self.0 |= rhs.0;
    }
}

/// The calling process's memory, for ioctls that take a pointer. The
/// system-call layer implements it over the user address space (EFAULT on
/// a bad address).
pub trait UserMemory {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> crate::vfs::Result<()>;
    fn write(&mut self, addr: u64, data: &[u8]) -> crate::vfs::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_linux() {
        assert_eq!(S_IFMT, libc::S_IFMT);
        assert_eq!(S_IFSOCK, libc::S_IFSOCK);
        assert_eq!(S_IFLNK, libc::S_IFLNK);
        assert_eq!(S_IFREG, libc::S_IFREG);
        assert_eq!(S_IFBLK, libc::S_IFBLK);
        assert_eq!(S_IFDIR, libc::S_IFDIR);
        assert_eq!(S_IFCHR, libc::S_IFCHR);
        assert_eq!(S_IFIFO, libc::S_IFIFO);
        assert_eq!(S_ISVTX, libc::S_ISVTX);
        assert_eq!(FileType::Directory.dirent_type(), libc::DT_DIR);
        assert_eq!(FileType::Regular.dirent_type(), libc::DT_REG);
        assert_eq!(FileType::Symlink.dirent_type(), libc::DT_LNK);
        assert_eq!(FileType::CharDevice.dirent_type(), libc::DT_CHR);
        assert_eq!(FileType::Fifo.dirent_type(), libc::DT_FIFO);
        assert_eq!(PollEvents::IN.0 as i16, libc::POLLIN);
        assert_eq!(PollEvents::OUT.0 as i16, libc::POLLOUT);
        assert_eq!(PollEvents::HUP.0 as i16, libc::POLLHUP);
        assert_eq!(PollEvents::ERR.0 as i16, libc::POLLERR);
    }

    #[test]
    fn makedev_matches_glibc() {
        for (ma, mi) in [(1, 3), (5, 1), (8, 17), (259, 300), (4095, 70000)] {
            let d = makedev(ma, mi);
            assert_eq!(d, libc::makedev(ma, mi));
            assert_eq!((dev_major(d), dev_minor(d)), (ma, mi));
        }
    }
}
