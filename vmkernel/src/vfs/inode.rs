//! The interfaces a file system implements. Permission checks, mount
//! crossing and symlink following live in the VFS above; an inode only does
//! what it is told on its own data.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use super::types::{FileType, Metadata, PollEvents, Timespec, UserMemory};
use super::{Errno, Result};

/// What `Inode::create` makes. Permission bits come separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    CharDevice(u64),
    BlockDevice(u64),
    Fifo,
    Socket,
}

impl NodeKind<'_> {
    pub fn file_type(&self) -> FileType {
        match self {
            NodeKind::File => FileType::Regular,
            NodeKind::Dir => FileType::Directory,
            NodeKind::Symlink(_) => FileType::Symlink,
            NodeKind::CharDevice(_) => FileType::CharDevice,
            NodeKind::BlockDevice(_) => FileType::BlockDevice,
            NodeKind::Fifo => FileType::Fifo,
            NodeKind::Socket => FileType::Socket,
        }
    }
}

/// Owner and permission bits of a new node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewAttr {
    /// Permission bits (0o7777); the caller has applied the umask.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// One directory entry. `.` and `..` are not reported by file systems: the
/// VFS adds them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub name: Vec<u8>,
    pub file_type: FileType,
}

/// An inode. Methods that do not apply to the inode's type keep the default,
/// which fails with the errno Linux would give.
pub trait Inode: Send + Sync + Any {
    fn metadata(&self) -> Metadata;

    /// Lets a file system recognise its own inodes (rename, link).
    fn as_any(&self) -> &dyn Any;

    // ---- regular files ----
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
        Err(self.not_a_file())
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> Result<usize> {
        Err(self.not_a_file())
    }
    fn truncate(&self, _len: u64) -> Result<()> {
        Err(self.not_a_file())
    }
    /// fsync/fdatasync: the file's data and entry reach the medium
    /// (memory-backed file systems have nothing to do).
    fn fsync(&self) -> Result<()> {
        Ok(())
    }

    // ---- directories ----
    /// Looks a name up; `..` must work (the root's `..` is itself), `.` never
    /// reaches a file system.
    fn lookup(&self, _name: &[u8]) -> Result<Arc<dyn Inode>> {
        Err(Errno::ENOTDIR)
    }
    /// Creates `name`; EEXIST if it exists.
    fn create(&self, _name: &[u8], _kind: NodeKind<'_>, _attr: NewAttr) -> Result<Arc<dyn Inode>> {
        Err(Errno::ENOTDIR)
    }
    /// Adds a hard link `name` to `target` (same file system, not a directory).
    fn link(&self, _name: &[u8], _target: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::ENOTDIR)
    }
    /// Removes a non-directory entry.
    fn unlink(&self, _name: &[u8]) -> Result<()> {
        Err(Errno::ENOTDIR)
    }
    /// Removes an empty directory (ENOTEMPTY otherwise).
    fn rmdir(&self, _name: &[u8]) -> Result<()> {
        Err(Errno::ENOTDIR)
    }
    /// Moves `old_name` here to `new_name` in `new_dir` (same file system),
    /// replacing a compatible target: the VFS has already checked types,
    /// emptiness is checked here.
    fn rename(&self, _old_name: &[u8], _new_dir: &Arc<dyn Inode>, _new_name: &[u8]) -> Result<()> {
        Err(Errno::ENOTDIR)
    }
    /// The first entry at or after `cookie`, and the cookie of the entry after
    /// it. Cookies stay valid while entries come and go; start at 0.
    fn readdir(&self, _cookie: u64) -> Result<Option<(DirEntry, u64)>> {
        Err(Errno::ENOTDIR)
    }

    // ---- symlinks ----
    fn readlink(&self) -> Result<Vec<u8>> {
        Err(Errno::EINVAL)
    }

    // ---- attributes ----
    /// Sets the permission bits (type bits are kept).
    fn set_perm(&self, _perm: u32) -> Result<()> {
        Err(Errno::EPERM)
    }
    fn set_owner(&self, _uid: u32, _gid: u32) -> Result<()> {
        Err(Errno::EPERM)
    }
    fn set_times(&self, _atime: Option<Timespec>, _mtime: Option<Timespec>) -> Result<()> {
        Err(Errno::EPERM)
    }

    // ---- special files whose file system handles I/O itself ----
    fn ioctl(&self, _cmd: u32, _arg: u64, _mem: &mut dyn UserMemory) -> Result<i64> {
        Err(Errno::ENOTTY)
    }
    fn poll(&self) -> PollEvents {
        PollEvents::IN | PollEvents::OUT
    }

    #[doc(hidden)]
    fn not_a_file(&self) -> Errno {
        if self.metadata().is_dir() { Errno::EISDIR } else { Errno::EINVAL }
    }
}

/// A mounted (or mountable) file system.
pub trait FileSystem: Send + Sync {
    fn root(&self) -> Arc<dyn Inode>;
    /// The type name shown in /proc/mounts ("ramfs", "proc", "vfat").
    fn fs_type(&self) -> &str;
    /// Size and free space for statfs; `None`: the system-call layer
    /// reports memory-backed figures.
    fn statfs(&self) -> Option<FsStats> {
        None
    }
}

/// What statfs reports for a file system with a medium.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// `f_type` (e.g. MSDOS_SUPER_MAGIC 0x4d44).
    pub magic: u64,
    pub block_size: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub name_max: u64,
}

/// A character device: what a device node of a given `rdev` opens to. The
/// node itself is an ordinary inode of whatever file system holds it.
pub trait Device: Send + Sync {
    /// Reads at `offset` (ignored by stream devices). Err(EAGAIN) means
    /// "would block": the caller waits for `poll` readiness and retries,
    /// or returns EAGAIN for O_NONBLOCK.
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<usize>;
    fn write(&self, offset: u64, data: &[u8]) -> Result<usize>;
    fn ioctl(&self, _cmd: u32, _arg: u64, _mem: &mut dyn UserMemory) -> Result<i64> {
        Err(Errno::ENOTTY)
    }
    fn poll(&self) -> PollEvents {
        PollEvents::IN | PollEvents::OUT
    }
    /// A counter that advances whenever the device may have become ready
    /// (edge-triggered epoll); None: the device keeps none.
    fn poll_generation(&self) -> Option<u64> {
        None
    }
    /// Stream devices (ttys) answer lseek with ESPIPE.
    fn seekable(&self) -> bool {
        true
    }
}
