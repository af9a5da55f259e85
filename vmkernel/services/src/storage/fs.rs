//! A FAT datastore as a VFS file system: inodes are paths in the
//! datastore; a file's inode opens a datastore handle on first I/O and
//! closes it when the inode goes (the last descriptor closed). Every
//! call takes the datastore's sleep lock, so a world waiting for the disk
//! blocks the others instead of spinning.
//!
//! An inode may go where no world may sleep: its last reference can drop
//! under a spin lock (a descriptor replaced by dup2 under the process's
//! descriptor table, a cached directory listing). So dropping one never
//! takes the datastore's lock: its handle is queued on the volume and
//! closed by the next call that holds the lock (before that call's own
//! work, so every later call sees it closed) or by the writeback world.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use framework::sleep_lock::SleepLock;
use spin::Mutex;
use vmk_storage::fat::{Datastore, FileKind, FsError, Handle, OpenFlags};
use vmkernel::vfs::{
    DirEntry, Errno, FileSystem, FileType, FsStats, Inode, Metadata, NewAttr, NodeKind, Result, S_IFDIR, S_IFREG,
    Timespec,
};

/// MSDOS_SUPER_MAGIC, what Linux reports for vfat.
const MSDOS_SUPER_MAGIC: u64 = 0x4d44;

/// `None` once unmounted (power-off).
pub type Locked = SleepLock<Option<Datastore>>;

/// One mounted datastore.
pub struct Volume {
    pub ds: Locked,
    pub name: String,
    pub uuid: String,
    pub device: String,
    pub read_only: bool,
    /// Handles of inodes that went, to be closed by the next holder of
    /// `ds` (see the module docs).
    closing: Mutex<Vec<Handle>>,
}

impl Volume {
    pub fn new(ds: Datastore, name: String, uuid: String, device: String) -> Volume {
        let read_only = ds.is_read_only();
        Volume { ds: SleepLock::new(Some(ds)), name, uuid, device, read_only, closing: Mutex::new(Vec::new()) }
    }

    /// Runs `f` on the datastore under its lock; EIO once unmounted.
    pub fn with<R>(&self, f: impl FnOnce(&mut Datastore) -> core::result::Result<R, FsError>) -> Result<R> {
        let mut g = self.ds.lock();
        let ds = g.as_mut().ok_or(Errno::EIO)?;
        self.close_gone(ds);
        f(ds).map_err(errno)
    }

    /// Closes the handles of inodes that went; the caller holds `ds`.
    pub fn close_gone(&self, ds: &mut Datastore) {
        let gone = core::mem::take(&mut *self.closing.lock());
        for h in gone {
            let path = ds.handle_path(h).map(String::from).unwrap_or_default();
            if let Err(e) = ds.close(h) {
                log::warn!("storage: {}: closing /{path}: {e:?}", self.name);
            }
        }
    }
}

pub fn errno(e: FsError) -> Errno {
    Errno(e.errno())
}

pub struct FatFs {
    vol: Arc<Volume>,
}

impl FatFs {
    pub fn new(vol: Arc<Volume>) -> Arc<FatFs> {
        Arc::new(FatFs { vol })
    }
}

impl FileSystem for FatFs {
    fn root(&self) -> Arc<dyn Inode> {
        FatNode::new(self.vol.clone(), String::new(), FileKind::Dir, None)
    }
    fn fs_type(&self) -> &str {
        "vfat"
    }
    fn statfs(&self) -> Option<FsStats> {
        let s = self.vol.with(|ds| ds.statfs()).ok()?;
        Some(FsStats {
            magic: MSDOS_SUPER_MAGIC,
            block_size: s.block_size as u64,
            blocks: s.blocks,
            free_blocks: s.free_blocks,
            name_max: s.name_max as u64,
        })
    }
}

/// Inode numbers: FNV-1a of the lower-cased path (FAT names are
/// case-insensitive); the root is 1.
fn ino_of(path: &str) -> u64 {
    if path.is_empty() {
        return 1;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= b.to_ascii_lowercase() as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 2
}

fn join(dir: &str, name: &[u8]) -> Result<String> {
    let name = core::str::from_utf8(name).map_err(|_| Errno::EINVAL)?;
    Ok(if dir.is_empty() { String::from(name) } else { format!("{dir}/{name}") })
}

fn ts(sec: u64) -> Timespec {
    Timespec { sec: sec as i64, nsec: 0 }
}

pub struct FatNode {
    vol: Arc<Volume>,
    path: String,
    kind: FileKind,
    handle: Mutex<Option<Handle>>,
    /// A directory's entries as read at the start of the current pass
    /// (cookie 0): `readdir` hands them out one cookie at a time, so
    /// reading the directory again for every entry made listing it cost
    /// n² entry reads (10,000 files in 100 directories: minutes).
    listing: Mutex<Option<Arc<alloc::vec::Vec<vmk_storage::fat::DirEntry>>>>,
}

impl FatNode {
    fn new(vol: Arc<Volume>, path: String, kind: FileKind, handle: Option<Handle>) -> Arc<FatNode> {
        Arc::new(FatNode { vol, path, kind, handle: Mutex::new(handle), listing: Mutex::new(None) })
    }

    /// Runs `f` with this file's handle, opening it first if needed.
    fn with_handle<R>(&self, f: impl FnOnce(&mut Datastore, Handle) -> core::result::Result<R, FsError>) -> Result<R> {
        self.vol.with(|ds| {
            let mut slot = self.handle.lock();
            let h = match *slot {
                Some(h) => h,
                None => {
                    let flags = OpenFlags { read: true, write: !self.vol.read_only, ..OpenFlags::default() };
                    let h = ds.open(&self.path, flags)?;
                    *slot = Some(h);
                    h
                }
            };
            f(ds, h)
        })
    }

    fn child_path(&self, name: &[u8]) -> Result<String> {
        join(&self.path, name)
    }
}

impl Drop for FatNode {
    fn drop(&mut self) {
        // Never the datastore's lock here (see the module docs).
        if let Some(h) = self.handle.get_mut().take() {
            self.vol.closing.lock().push(h);
        }
    }
}

impl Inode for FatNode {
    fn metadata(&self) -> Metadata {
        let st = self.vol.with(|ds| ds.stat(&self.path));
        let (kind, size, blocks, atime, mtime, ctime, perm) = match st {
            Ok(s) => (s.kind, s.size, s.allocated / 512, s.atime, s.mtime, s.ctime, s.mode & 0o7777),
            Err(_) => (self.kind, 0, 0, 0, 0, 0, 0o755),
        };
        let type_bits = if kind == FileKind::Dir { S_IFDIR } else { S_IFREG };
        Metadata {
            ino: ino_of(&self.path),
            mode: type_bits | perm,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            size,
            atime: ts(atime),
            mtime: ts(mtime),
            ctime: ts(ctime),
            rdev: 0,
            blocks,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        self.with_handle(|ds, h| ds.read_at(h, offset, buf))
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        self.with_handle(|ds, h| ds.write_at(h, offset, data))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        if self.kind == FileKind::Dir {
            return Err(Errno::EISDIR);
        }
        self.with_handle(|ds, h| ds.truncate(h, len))
    }

    fn fsync(&self) -> Result<()> {
        if self.kind == FileKind::Dir {
            return self.vol.with(|ds| ds.sync());
        }
        self.with_handle(|ds, h| ds.fsync(h))
    }

    fn lookup(&self, name: &[u8]) -> Result<Arc<dyn Inode>> {
        if self.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if name == b".." {
            let parent = self.path.rfind('/').map_or(String::new(), |i| String::from(&self.path[..i]));
            return Ok(FatNode::new(self.vol.clone(), parent, FileKind::Dir, None));
        }
        let path = self.child_path(name)?;
        let st = self.vol.with(|ds| ds.stat(&path))?;
        Ok(FatNode::new(self.vol.clone(), path, st.kind, None))
    }

    fn create(&self, name: &[u8], kind: NodeKind<'_>, _attr: NewAttr) -> Result<Arc<dyn Inode>> {
        let path = self.child_path(name)?;
        match kind {
            NodeKind::Dir => {
                self.vol.with(|ds| ds.mkdir(&path))?;
                Ok(FatNode::new(self.vol.clone(), path, FileKind::Dir, None))
            }
            NodeKind::File => {
                let flags = OpenFlags { read: true, write: true, create: true, exclusive: true, ..OpenFlags::default() };
                let h = self.vol.with(|ds| ds.open(&path, flags))?;
                Ok(FatNode::new(self.vol.clone(), path, FileKind::File, Some(h)))
            }
            // FAT holds only files and directories.
            _ => Err(Errno::EPERM),
        }
    }

    fn link(&self, _name: &[u8], _target: &Arc<dyn Inode>) -> Result<()> {
        Err(Errno::EPERM)
    }

    fn unlink(&self, name: &[u8]) -> Result<()> {
        let path = self.child_path(name)?;
        self.vol.with(|ds| ds.unlink(&path))
    }

    fn rmdir(&self, name: &[u8]) -> Result<()> {
        let path = self.child_path(name)?;
        self.vol.with(|ds| ds.rmdir(&path))
    }

    fn rename(&self, old_name: &[u8], new_dir: &Arc<dyn Inode>, new_name: &[u8]) -> Result<()> {
        let to_dir = new_dir.as_any().downcast_ref::<FatNode>().ok_or(Errno::EXDEV)?;
        if !Arc::ptr_eq(&to_dir.vol, &self.vol) {
            return Err(Errno::EXDEV);
        }
        let from = self.child_path(old_name)?;
        let to = to_dir.child_path(new_name)?;
        self.vol.with(|ds| ds.rename(&from, &to))
    }

    fn readdir(&self, cookie: u64) -> Result<Option<(DirEntry, u64)>> {
        if self.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        // A pass starts at cookie 0 and reads the directory once; entries
        // added or removed during the pass may or may not be seen (POSIX
        // leaves that open), and none is skipped because another went.
        let cached = if cookie == 0 { None } else { self.listing.lock().clone() };
        let list = match cached {
            Some(l) => l,
            None => {
                let l = Arc::new(self.vol.with(|ds| ds.readdir(&self.path))?);
                *self.listing.lock() = Some(l.clone());
                l
            }
        };
        let Some(e) = list.get(cookie as usize) else {
            *self.listing.lock() = None;
            return Ok(None);
        };
        let path = join(&self.path, e.name.as_bytes())?;
        let file_type = if e.kind == FileKind::Dir { FileType::Directory } else { FileType::Regular };
        Ok(Some((DirEntry { ino: ino_of(&path), name: e.name.clone().into_bytes(), file_type }, cookie + 1)))
    }

    fn set_perm(&self, _perm: u32) -> Result<()> {
        // FAT has no permission bits: the fixed modes are shown as they are.
        Err(Errno::EPERM)
    }

    fn set_times(&self, atime: Option<Timespec>, mtime: Option<Timespec>) -> Result<()> {
        let secs = |t: Option<Timespec>| t.map(|t| t.sec.max(0) as u64);
        self.vol.with(|ds| ds.set_times(&self.path, secs(atime), secs(mtime)))
    }
}

