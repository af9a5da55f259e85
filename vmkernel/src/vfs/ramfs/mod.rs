//! ramfs: the root file system, all in memory. Filled at boot from the
//! cpio archive (see `load`), also used for /dev and /tmp-like mounts.

mod data;
mod dir;
pub mod load;

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use self::data::{Budget, FileData};
use self::dir::Dir;
use super::inode::{DirEntry, FileSystem, Inode, NewAttr, NodeKind};
use super::types::*;
use super::{Errno, Result};

pub use self::data::PAGE;

struct Shared {
    next_ino: AtomicU64,
    clock: Arc<dyn Clock>,
    budget: Arc<Budget>,
    /// Serialises renames, the only operation that locks two directories.
    rename_lock: Mutex<()>,
}

pub struct RamFs {
    shared: Arc<Shared>,
    root: Arc<RamInode>,
}

impl RamFs {
    pub fn new(clock: Arc<dyn Clock>) -> Arc<RamFs> {
        Self::with_limit(clock, usize::MAX)
    }

    /// A ramfs that holds at most `max_bytes` of file data (ENOSPC beyond).
    pub fn with_limit(clock: Arc<dyn Clock>, max_bytes: usize) -> Arc<RamFs> {
        let shared = Arc::new(Shared {
            next_ino: AtomicU64::new(2),
            clock,
            budget: Arc::new(Budget::new(max_bytes / PAGE)),
            rename_lock: Mutex::new(()),
        });
        let attr = NewAttr { perm: 0o755, uid: 0, gid: 0 };
        let root = RamInode::new(
            &shared,
            1,
            FileType::Directory,
            attr,
            Body::Dir(Mutex::new(Dir::new(Weak::new()))),
            0,
        );
        Arc::new(RamFs { shared, root })
    }

    pub fn root_inode(&self) -> Arc<RamInode> {
        self.root.clone()
    }

    /// Bytes of file data held.
    pub fn used_bytes(&self) -> usize {
        self.shared.budget.used_pages() * PAGE
    }
}

impl FileSystem for RamFs {
    fn root(&self) -> Arc<dyn Inode> {
        self.root.clone()
    }
    fn fs_type(&self) -> &str {
        "ramfs"
    }
}

struct Attr {
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    rdev: u64,
    atime: Timespec,
    mtime: Timespec,
    ctime: Timespec,
}

enum Body {
    File(Mutex<FileData>),
    Dir(Mutex<Dir>),
    Symlink(Vec<u8>),
    /// Device nodes, FIFOs and sockets: metadata only.
    Special,
}

pub struct RamInode {
    ino: u64,
    fs: Arc<Shared>,
    this: Weak<RamInode>,
    attr: Mutex<Attr>,
    body: Body,
}

impl RamInode {
    fn new(
        fs: &Arc<Shared>,
        ino: u64,
        ty: FileType,
        a: NewAttr,
        body: Body,
        rdev: u64,
    ) -> Arc<RamInode> {
        let now = fs.clock.now();
        let nlink = if ty == FileType::Directory { 2 } else { 1 };
        Arc::new_cyclic(|this| RamInode {
            ino,
            fs: fs.clone(),
            this: this.clone(),
            attr: Mutex::new(Attr {
                mode: ty.mode_bits() | (a.perm & MODE_PERM),
                nlink,
                uid: a.uid,
                gid: a.gid,
                rdev,
                atime: now,
                mtime: now,
                ctime: now,
            }),
            body,
        })
    }

    fn dir(&self) -> Result<&Mutex<Dir>> {
        match &self.body {
            Body::Dir(d) => Ok(d),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }

    fn now(&self) -> Timespec {
        self.fs.clock.now()
    }

    /// A change to the directory's entries.
    fn touch_dir(&self, nlink_delta: i64) {
        let now = self.now();
        let mut a = self.attr.lock();
        a.mtime = now;
        a.ctime = now;
        a.nlink = (a.nlink as i64 + nlink_delta) as u64;
    }

    fn adjust_nlink(&self, delta: i64) {
        let now = self.now();
        let mut a = self.attr.lock();
        a.nlink = (a.nlink as i64 + delta).max(0) as u64;
        a.ctime = now;
    }

    fn cast(inode: &Arc<dyn Inode>) -> Option<&RamInode> {
        inode.as_any().downcast_ref::<RamInode>()
    }

    /// Sets all timestamps (archive unpacking).
    pub fn set_all_times(&self, t: Timespec) {
        let mut a = self.attr.lock();
        a.atime = t;
        a.mtime = t;
        a.ctime = t;
    }

    /// Removes a child that has just been taken out of a directory.
    fn drop_link(child: &RamInode) {
        if child.is_dir() {
            child.attr.lock().nlink = 0;
        } else {
            child.adjust_nlink(-1);
        }
    }

    fn check_empty(child: &RamInode) -> Result<()> {
        match &child.body {
            Body::Dir(d) if !d.lock().is_empty() => Err(Errno::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    /// The rename proper, on locked directories (`new` is None for a rename
    /// within `old`). Returns the nlink change of (old dir, new dir).
    fn rename_locked(
        old: &mut Dir,
        mut new: Option<&mut Dir>,
        old_name: &[u8],
        new_name: &[u8],
    ) -> Result<(i64, i64)> {
        let src = old.get(old_name).ok_or(Errno::ENOENT)?.clone();
        let moving_dir = src.is_dir();
        let cross = new.is_some();
        let mut new_delta = 0;
        {
            let nd: &mut Dir = match new.as_deref_mut() {
                Some(n) => n,
                None => &mut *old,
            };
            if let Some(dst) = nd.get(new_name) {
                if Arc::ptr_eq(dst, &src) {
                    return Ok((0, 0));
                }
                match (moving_dir, dst.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) => Self::check_empty(dst)?,
                    _ => {}
                }
                let dst = nd.remove(new_name).expect("present");
                if dst.is_dir() {
                    new_delta -= 1;
                }
                Self::drop_link(&dst);
            }
        }
        old.remove(old_name);
        let mut old_delta = 0;
        match new {
            Some(nd) => {
                if moving_dir {
                    old_delta -= 1;
                    new_delta += 1;
                }
                nd.insert(new_name, src.clone());
            }
            None => old.insert(new_name, src.clone()),
        }
        if !cross {
            old_delta += new_delta;
            new_delta = 0;
        }
        src.attr.lock().ctime = src.now();
        Ok((old_delta, new_delta))
    }
}

impl Inode for RamInode {
    fn metadata(&self) -> Metadata {
        let (size, blocks) = match &self.body {
            Body::File(d) => {
                let d = d.lock();
                (d.size(), (d.allocated_pages() * PAGE / 512) as u64)
            }
            Body::Symlink(t) => (t.len() as u64, 0),
            Body::Dir(_) => (PAGE as u64, 0),
            Body::Special => (0, 0),
        };
        let a = self.attr.lock();
        Metadata {
            ino: self.ino,
            mode: a.mode,
            nlink: a.nlink,
            uid: a.uid,
            gid: a.gid,
            size,
            atime: a.atime,
            mtime: a.mtime,
            ctime: a.ctime,
            rdev: a.rdev,
            blocks,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.body {
            Body::File(d) => Ok(d.lock().read_at(offset, buf)),
            Body::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        match &self.body {
            Body::File(d) => {
                let n = d.lock().write_at(offset, data)?;
                let now = self.now();
                let mut a = self.attr.lock();
                a.mtime = now;
                a.ctime = now;
                Ok(n)
            }
            Body::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn truncate(&self, len: u64) -> Result<()> {
        match &self.body {
            Body::File(d) => {
                d.lock().truncate(len)?;
                let now = self.now();
                let mut a = self.attr.lock();
                a.mtime = now;
                a.ctime = now;
                Ok(())
            }
            Body::Dir(_) => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn lookup(&self, name: &[u8]) -> Result<Arc<dyn Inode>> {
        let d = self.dir()?.lock();
        if name == b".." {
            let p = d.parent.upgrade().or_else(|| self.this.upgrade()).ok_or(Errno::ENOENT)?;
            return Ok(p);
        }
        d.get(name).map(|i| i.clone() as Arc<dyn Inode>).ok_or(Errno::ENOENT)
    }

    fn create(&self, name: &[u8], kind: NodeKind<'_>, attr: NewAttr) -> Result<Arc<dyn Inode>> {
        let mut d = self.dir()?.lock();
        if self.attr.lock().nlink == 0 {
            return Err(Errno::ENOENT); // removed while we were looking at it
        }
        if d.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.fs.next_ino.fetch_add(1, Ordering::Relaxed);
        let ty = kind.file_type();
        let (body, rdev) = match kind {
            NodeKind::File => (Body::File(Mutex::new(FileData::new(self.fs.budget.clone()))), 0),
            NodeKind::Dir => (Body::Dir(Mutex::new(Dir::new(self.this.clone()))), 0),
            NodeKind::Symlink(t) => (Body::Symlink(t.to_vec()), 0),
            NodeKind::CharDevice(r) | NodeKind::BlockDevice(r) => (Body::Special, r),
            NodeKind::Fifo | NodeKind::Socket => (Body::Special, 0),
        };
        let perm = if ty == FileType::Symlink { 0o777 } else { attr.perm };
        let child = RamInode::new(&self.fs, ino, ty, NewAttr { perm, ..attr }, body, rdev);
        d.insert(name, child.clone());
        drop(d);
        self.touch_dir(if ty == FileType::Directory { 1 } else { 0 });
        Ok(child)
    }

    fn link(&self, name: &[u8], target: &Arc<dyn Inode>) -> Result<()> {
        let t = Self::cast(target).filter(|t| Arc::ptr_eq(&t.fs, &self.fs)).ok_or(Errno::EXDEV)?;
        if t.is_dir() {
            return Err(Errno::EPERM);
        }
        let t = t.this.upgrade().ok_or(Errno::ENOENT)?;
        let mut d = self.dir()?.lock();
        if d.get(name).is_some() {
            return Err(Errno::EEXIST);
        }
        if t.attr.lock().nlink == 0 {
            return Err(Errno::ENOENT);
        }
        d.insert(name, t.clone());
        drop(d);
        t.adjust_nlink(1);
        self.touch_dir(0);
        Ok(())
    }

    fn unlink(&self, name: &[u8]) -> Result<()> {
        let mut d = self.dir()?.lock();
        let child = d.get(name).ok_or(Errno::ENOENT)?;
        if child.is_dir() {
            return Err(Errno::EISDIR);
        }
        let child = d.remove(name).expect("present");
        drop(d);
        child.adjust_nlink(-1);
        self.touch_dir(0);
        Ok(())
    }

    fn rmdir(&self, name: &[u8]) -> Result<()> {
        let mut d = self.dir()?.lock();
        let child = d.get(name).ok_or(Errno::ENOENT)?;
        if !child.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Self::check_empty(child)?;
        let child = d.remove(name).expect("present");
        drop(d);
        Self::drop_link(&child);
        self.touch_dir(-1);
        Ok(())
    }

    fn rename(&self, old_name: &[u8], new_dir: &Arc<dyn Inode>, new_name: &[u8]) -> Result<()> {
        let nd =
            Self::cast(new_dir).filter(|n| Arc::ptr_eq(&n.fs, &self.fs)).ok_or(Errno::EXDEV)?;
        let _serial = self.fs.rename_lock.lock();
        let (od_delta, nd_delta) = if nd.ino == self.ino {
            let mut d = self.dir()?.lock();
            Self::rename_locked(&mut d, None, old_name, new_name)?
        } else {
            let (a, b) = (self.dir()?, nd.dir()?);
            // Lock in inode order; the rename lock already rules out cycles,
            // the order keeps it obvious.
            let (mut ga, mut gb) = if self.ino < nd.ino {
                let ga = a.lock();
                (ga, b.lock())
            } else {
                let gb = b.lock();
                (a.lock(), gb)
            };
            let r = Self::rename_locked(&mut ga, Some(&mut gb), old_name, new_name)?;
            // A moved directory's `..` is now the new parent.
            if let Some(Body::Dir(md)) = gb.get(new_name).map(|m| &m.body) {
                md.lock().parent = nd.this.clone();
            }
            r
        };
        self.touch_dir(od_delta);
        if nd.ino != self.ino {
            nd.touch_dir(nd_delta);
        }
        Ok(())
    }

    fn readdir(&self, cookie: u64) -> Result<Option<(DirEntry, u64)>> {
        let d = self.dir()?.lock();
        Ok(d.at(cookie).map(|(name, i, next)| {
            let file_type = FileType::from_mode(i.attr.lock().mode).unwrap_or(FileType::Regular);
            (DirEntry { ino: i.ino, name: name.to_vec(), file_type }, next)
        }))
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        match &self.body {
            Body::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn set_perm(&self, perm: u32) -> Result<()> {
        let now = self.now();
        let mut a = self.attr.lock();
        a.mode = (a.mode & S_IFMT) | (perm & MODE_PERM);
        a.ctime = now;
        Ok(())
    }

    fn set_owner(&self, uid: u32, gid: u32) -> Result<()> {
        let now = self.now();
        let mut a = self.attr.lock();
        a.uid = uid;
        a.gid = gid;
        a.ctime = now;
        Ok(())
    }

    fn set_times(&self, atime: Option<Timespec>, mtime: Option<Timespec>) -> Result<()> {
        let now = self.now();
        let mut a = self.attr.lock();
        if let Some(t) = atime {
            a.atime = t;
        }
        if let Some(t) = mtime {
            a.mtime = t;
        }
        a.ctime = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
