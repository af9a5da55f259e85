//! `Vfs`: the mount table plus the Linux-shaped calls the system-call
//! layer makes. Paths are bytes as user space passes them (no NUL);
//! `base` is the cwd, or the directory of a dirfd for the *at calls.
//! Modes given to creating calls already have the umask applied.

use alloc::collections::BTreeMap;
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::RwLock;

use super::file::{Backing, OpenFile};
use super::pipe::{self, Pipe};
use super::flags::*;
use super::inode::{Device, FileSystem, NewAttr, NodeKind};
use super::mount::{Location, Mount, MountFlags, MountId, MountInfo, MountTable};
use super::namei::Last;
use super::perm::{self, R_OK, W_OK, X_OK};
use super::stat::Stat;
use super::types::*;
use super::{Errno, Result};

pub struct Vfs {
    pub(crate) mounts: RwLock<MountTable>,
    devices: RwLock<BTreeMap<u64, Arc<dyn Device>>>,
    /// Files being executed, by (st_dev, st_ino), with how many process
    /// images run each: opening one for writing is ETXTBSY (Linux
    /// `deny_write_access`), so a running program's pages never change.
    executing: spin::Mutex<BTreeMap<(u64, u64), usize>>,
    /// The pipes of FIFOs open somewhere, by (st_dev, st_ino).
    fifos: spin::Mutex<BTreeMap<(u64, u64), alloc::sync::Weak<Pipe>>>,
}

impl Vfs {
    /// A VFS whose `/` is `root_fs`.
    pub fn new(root_fs: Arc<dyn FileSystem>, source: &str) -> Vfs {
        let mut t = MountTable::default();
        let root = root_fs.root();
        t.mounts.push(Some(Mount {
            fs: root_fs,
            root,
            parent: None,
            source: source.to_string(),
            flags: MountFlags::default(),
        }));
        Vfs { mounts: RwLock::new(t), devices: RwLock::new(BTreeMap::new()), fifos: spin::Mutex::new(BTreeMap::new()), executing: spin::Mutex::new(BTreeMap::new()) }
    }

    /// `/`, the starting cwd.
    pub fn root(&self) -> Location {
        let r = self.mounts.read().root_of(0).expect("root mount");
        self.cross_down(r)
    }

    // ---- mounts ----

    /// Mounts `fs` on the directory `at`. Who may mount is the caller's
    /// decision.
    pub fn mount(
        &self,
        fs: Arc<dyn FileSystem>,
        at: &Location,
        source: &str,
        flags: MountFlags,
    ) -> Result<MountId> {
        if !at.inode.metadata().is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let root = fs.root();
        let mut t = self.mounts.write();
        t.mounts.push(Some(Mount {
            fs,
            root,
            parent: Some(at.clone()),
            source: source.to_string(),
            flags,
        }));
        Ok(t.mounts.len() - 1)
    }

    /// Mounts by absolute path, as the kernel does at boot.
    pub fn mount_at(
        &self,
        path: &[u8],
        fs: Arc<dyn FileSystem>,
        source: &str,
        flags: MountFlags,
    ) -> Result<MountId> {
        let at = self.resolve(&Credentials::root(), &self.root(), path, true)?;
        self.mount(fs, &at, source, flags)
    }

    /// Unmounts the file system whose root is `root`: EINVAL if it is not a
    /// mount root, EBUSY for `/` or with mounts below it.
    pub fn umount(&self, root: &Location) -> Result<()> {
        let mut t = self.mounts.write();
        if !t.is_mount_root(root) {
            return Err(Errno::EINVAL);
        }
        if root.mount == 0 || t.children(root.mount).next().is_some() {
            return Err(Errno::EBUSY);
        }
        t.mounts[root.mount] = None;
        Ok(())
    }

    /// The mount table, in mount order (for /proc/mounts).
    pub fn mounts(&self) -> Vec<MountInfo> {
        let list: Vec<(MountId, Location, MountInfo)> = {
            let t = self.mounts.read();
            t.mounts
                .iter()
                .enumerate()
                .filter_map(|(id, m)| {
                    let m = m.as_ref()?;
                    let info = MountInfo {
                        source: m.source.clone(),
                        path: Vec::new(),
                        fs_type: m.fs.fs_type().to_string(),
                        read_only: m.flags.read_only,
                    };
                    Some((id, Location { mount: id, inode: m.root.clone() }, info))
                })
                .collect()
        };
        list.into_iter()
            .map(|(_, loc, mut info)| {
                info.path = self.path_of(&loc).unwrap_or_else(|_| b"?".to_vec());
                info
            })
            .collect()
    }

    pub(crate) fn check_writable_mount(&self, loc: &Location) -> Result<()> {
        match self.mounts.read().get(loc.mount) {
            Some(m) if m.flags.read_only => Err(Errno::EROFS),
            Some(_) => Ok(()),
            None => Err(Errno::ENOENT),
        }
    }

    /// statfs figures of the file system `loc` is on (`None`: memory-backed).
    pub fn statfs(&self, loc: &Location) -> Option<super::inode::FsStats> {
        // Asked after the mount table's lock: a datastore's answer may
        // wait for its lock or its disk.
        let fs = self.mounts.read().get(loc.mount).map(|m| m.fs.clone());
        fs.and_then(|fs| fs.statfs())
    }

    /// st_dev of everything reached through `loc`'s mount.
    pub fn dev_of(&self, loc: &Location) -> u64 {
        MountTable::dev(loc.mount)
    }

    // ---- devices ----

    /// Makes device nodes with this `rdev` (a `makedev` value) open `dev`.
    pub fn register_device(&self, rdev: u64, dev: Arc<dyn Device>) {
        self.devices.write().insert(rdev, dev);
    }

    // ---- opening ----

    /// open/openat. O_CREAT makes a regular file with `mode` (umask already
    /// applied), owned by the caller (group from a set-gid directory).
    pub fn open(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        flags: u32,
        mode: u32,
    ) -> Result<OpenFile> {
        let mut links = 0;
        let (loc, created) = self.open_lookup(cred, base, path, flags, mode, &mut links)?;
        let meta = loc.inode.metadata();
        if flags & O_DIRECTORY != 0 && !meta.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let parent_ino = if meta.is_dir() { self.parent_of(&loc).ino() } else { 0 };
        let dev = self.dev_of(&loc);
        if flags & O_PATH != 0 {
            let flags = flags & (O_PATH | O_CLOEXEC | O_DIRECTORY | O_NOFOLLOW);
            return Ok(OpenFile::new(
                Backing::Inode(loc.inode.clone()),
                Some(loc),
                dev,
                parent_ino,
                flags,
            ));
        }
        if meta.is_symlink() {
            return Err(Errno::ELOOP); // O_NOFOLLOW on a symlink
        }
        if meta.is_dir() && (writable(flags) || flags & (O_CREAT | O_TRUNC) != 0) {
            return Err(Errno::EISDIR);
        }
        let truncate = flags & O_TRUNC != 0 && meta.mode & S_IFMT == S_IFREG;
        if (writable(flags) || truncate) && meta.mode & S_IFMT == S_IFREG && self.executing.lock().contains_key(&(dev, meta.ino)) {
            return Err(Errno::ETXTBSY);
        }
        if !created {
            let mut want = 0;
            if readable(flags) {
                want |= R_OK;
            }
            if writable(flags) || truncate {
                want |= W_OK;
                if matches!(meta.file_type(), FileType::Regular | FileType::Directory) {
                    self.check_writable_mount(&loc)?;
                }
            }
            perm::check(cred, &meta, want)?;
        }
        let backing = match meta.file_type() {
            FileType::Regular | FileType::Directory => Backing::Inode(loc.inode.clone()),
            FileType::CharDevice => {
                let dev = self.devices.read().get(&meta.rdev).cloned().ok_or(Errno::ENXIO)?;
                Backing::Device { node: loc.inode.clone(), dev }
            }
            FileType::Fifo => self.open_fifo(&loc, dev, meta.ino, flags)?,
            _ => return Err(Errno::ENXIO),
        };
        if truncate && meta.size != 0 {
            loc.inode.truncate(0)?;
        }
        let keep = O_ACCMODE
            | O_APPEND
            | O_NONBLOCK
            | O_CLOEXEC
            | O_DIRECTORY
            | O_NOFOLLOW
            | O_DSYNC
            | O_LARGEFILE;
        Ok(OpenFile::new(backing, Some(loc), dev, parent_ino, flags & keep))
    }

    fn open_lookup(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        flags: u32,
        mode: u32,
        links: &mut u32,
    ) -> Result<(Location, bool)> {
        let p = self.walk_parent(cred, base, path, links)?;
        let nofollow = flags & O_NOFOLLOW != 0;
        if flags & O_CREAT == 0 {
            return Ok((self.finish(cred, p, !nofollow, links)?, false));
        }
        let Last::Name(name) = &p.last else { return Err(Errno::EISDIR) };
        let dm = p.dir.inode.metadata();
        perm::check(cred, &dm, X_OK)?;
        match p.dir.inode.lookup(name) {
            Ok(child) => {
                if flags & O_EXCL != 0 {
                    return Err(Errno::EEXIST);
                }
                let loc = self.cross_down(Location { mount: p.dir.mount, inode: child });
                let m = loc.inode.metadata();
                if m.is_symlink() {
                    if nofollow {
                        return Err(Errno::ELOOP);
                    }
                    *links += 1;
                    if *links > MAX_SYMLINKS {
                        return Err(Errno::ELOOP);
                    }
                    // A dangling link creates its target, as on Linux.
                    let target = loc.inode.readlink()?;
                    return self.open_lookup(cred, &p.dir, &target, flags, mode, links);
                }
                if p.trailing_slash {
                    return Err(if m.is_dir() { Errno::EISDIR } else { Errno::ENOTDIR });
                }
                Ok((loc, false))
            }
            Err(Errno::ENOENT) => {
                if p.trailing_slash {
                    return Err(Errno::EISDIR);
                }
                self.check_writable_mount(&p.dir)?;
                perm::check(cred, &dm, W_OK | X_OK)?;
                let attr = self.new_attr(cred, &dm, mode);
                let inode = p.dir.inode.create(name, NodeKind::File, attr)?;
                Ok((Location { mount: p.dir.mount, inode }, true))
            }
            Err(e) => Err(e),
        }
    }

    /// Owner of a new node: the caller, with the directory's group when the
    /// directory is set-gid.
    pub(crate) fn new_attr(&self, cred: &Credentials, dir: &Metadata, mode: u32) -> NewAttr {
        let gid = if dir.mode & S_ISGID != 0 { dir.gid } else { cred.gid };
        NewAttr { perm: mode & MODE_PERM, uid: cred.uid, gid }
    }

    /// Marks `f` as being executed until the returned guard drops: opening
    /// it for writing is ETXTBSY meanwhile.
    pub fn deny_write(&self, f: &OpenFile) -> ExecutingFile<'_> {
        let key = f.identity();
        *self.executing.lock().entry(key).or_insert(0) += 1;
        ExecutingFile { vfs: self, key }
    }

    /// Opens a FIFO node: every open of the node shares one pipe (made at
    /// the first, gone with the last end). O_WRONLY|O_NONBLOCK without a
    /// reader is ENXIO. A blocking open of one side whose other side is
    /// not open waits in the caller (`OpenFile::fifo_waits_for_peer`).
    fn open_fifo(&self, loc: &Location, dev: u64, ino: u64, flags: u32) -> Result<Backing> {
        let pipe = {
            let mut fifos = self.fifos.lock();
            fifos.retain(|_, w| w.strong_count() > 0);
            match fifos.get(&(dev, ino)).and_then(alloc::sync::Weak::upgrade) {
                Some(p) => p,
                None => {
                    let p = pipe::fifo(ino);
                    fifos.insert((dev, ino), Arc::downgrade(&p));
                    p
                }
            }
        };
        let node = loc.inode.clone();
        let (reader_opens, writer_opens) = pipe.opens();
        // The other side already open: nothing to wait for.
        const NO_WAIT: u64 = u64::MAX;
        Ok(match flags & O_ACCMODE {
            O_RDONLY => {
                let peer_opens = if pipe.writers() > 0 { NO_WAIT } else { writer_opens };
                Backing::Fifo { node, reader: Some(pipe.attach_reader()), writer: None, peer_opens }
            }
            O_WRONLY => {
                if flags & O_NONBLOCK != 0 && pipe.readers() == 0 {
                    return Err(Errno::ENXIO);
                }
                let peer_opens = if pipe.readers() > 0 { NO_WAIT } else { reader_opens };
                Backing::Fifo { node, reader: None, writer: Some(pipe.attach_writer()), peer_opens }
            }
            _ => Backing::Fifo { node, reader: Some(pipe.attach_reader()), writer: Some(pipe.attach_writer()), peer_opens: NO_WAIT },
        })
    }

    /// The file execve runs: a regular file the caller may execute (read
    /// permission is not needed). Returned open for reading.
    pub fn open_exec(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<OpenFile> {
        let loc = self.resolve(cred, base, path, true)?;
        let meta = loc.inode.metadata();
        if meta.mode & S_IFMT != S_IFREG {
            return Err(Errno::EACCES);
        }
        perm::check(cred, &meta, X_OK)?;
        let dev = self.dev_of(&loc);
        Ok(OpenFile::new(Backing::Inode(loc.inode.clone()), Some(loc), dev, 0, O_RDONLY))
    }

    // ---- looking ----

    pub fn stat(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<Stat> {
        let loc = self.resolve(cred, base, path, true)?;
        Ok(self.stat_loc(&loc))
    }

    pub fn lstat(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<Stat> {
        let loc = self.resolve(cred, base, path, false)?;
        Ok(self.stat_loc(&loc))
    }

    pub fn stat_loc(&self, loc: &Location) -> Stat {
        Stat::new(self.dev_of(loc), &loc.inode.metadata())
    }

    pub fn readlink(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<Vec<u8>> {
        let loc = self.resolve(cred, base, path, false)?;
        if !loc.inode.metadata().is_symlink() {
            return Err(Errno::EINVAL);
        }
        loc.inode.readlink()
    }

    /// chdir: the new cwd, a directory the caller may search.
    pub fn chdir(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<Location> {
        let loc = self.resolve(cred, base, path, true)?;
        let m = loc.inode.metadata();
        if !m.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        perm::check(cred, &m, X_OK)?;
        Ok(loc)
    }

    /// access/faccessat: `mode` is F_OK (0) or R_OK|W_OK|X_OK. The caller
    /// passes the real ids as `cred`, as access(2) checks with those.
    pub fn access(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        mode: u32,
    ) -> Result<()> {
        let loc = self.resolve(cred, base, path, true)?;
        let m = loc.inode.metadata();
        if mode & W_OK != 0 && matches!(m.file_type(), FileType::Regular | FileType::Directory) {
            self.check_writable_mount(&loc)?;
        }
        perm::check(cred, &m, mode & 7)
    }
}

/// Held by a process image while it runs from a file ([`Vfs::deny_write`]).
pub struct ExecutingFile<'a> {
    vfs: &'a Vfs,
    key: (u64, u64),
}

impl Drop for ExecutingFile<'_> {
    fn drop(&mut self) {
        let mut m = self.vfs.executing.lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}
