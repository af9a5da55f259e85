//! Namespace and attribute changes: mkdir, mknod, symlink, link, unlink,
//! rmdir, rename, chmod, chown, truncate, utimens.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::facade::Vfs;
use super::inode::{Inode, NodeKind};
use super::mount::Location;
use super::namei::{Last, Parent};
use super::perm::{self, W_OK, X_OK};
use super::types::*;
use super::{Errno, Result};

impl Vfs {
    /// The directory an entry is added to or removed from, checked for a
    /// writable mount and write+search permission.
    fn dir_for_change(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<Parent> {
        let mut links = 0;
        let p = self.walk_parent(cred, base, path, &mut links)?;
        self.check_writable_mount(&p.dir)?;
        Ok(p)
    }

    fn check_dir_writable(cred: &Credentials, dir: &Location) -> Result<Metadata> {
        let m = dir.inode.metadata();
        perm::check(cred, &m, W_OK | X_OK)?;
        Ok(m)
    }

    fn is_mountpoint(&self, loc: &Location) -> bool {
        let t = self.mounts.read();
        t.covering(loc).is_some() || t.is_mount_root(loc)
    }

    /// Looks a child up without following or crossing mounts.
    fn child(dir: &Location, name: &[u8]) -> Result<Location> {
        Ok(Location { mount: dir.mount, inode: dir.inode.lookup(name)? })
    }

    fn create_node(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        kind: NodeKind<'_>,
        mode: u32,
    ) -> Result<Location> {
        let p = self.dir_for_change(cred, base, path)?;
        let Last::Name(name) = &p.last else { return Err(Errno::EEXIST) };
        perm::check(cred, &p.dir.inode.metadata(), X_OK)?;
        if p.dir.inode.lookup(name).is_ok() {
            return Err(Errno::EEXIST);
        }
        if p.trailing_slash && kind != NodeKind::Dir {
            return Err(Errno::ENOENT);
        }
        let dm = Self::check_dir_writable(cred, &p.dir)?;
        let mut attr = self.new_attr(cred, &dm, mode);
        if kind == NodeKind::Dir && dm.mode & S_ISGID != 0 {
            attr.perm |= S_ISGID;
        }
        let inode = p.dir.inode.create(name, kind, attr)?;
        Ok(Location { mount: p.dir.mount, inode })
    }

    pub fn mkdir(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        mode: u32,
    ) -> Result<Location> {
        self.create_node(cred, base, path, NodeKind::Dir, mode & 0o1777)
    }

    /// mknod: `mode` carries the file type. Device nodes need root.
    pub fn mknod(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        mode: u32,
        rdev: u64,
    ) -> Result<Location> {
        let kind = match mode & S_IFMT {
            0 | S_IFREG => NodeKind::File,
            S_IFCHR | S_IFBLK if !cred.is_root() => return Err(Errno::EPERM),
            S_IFCHR => NodeKind::CharDevice(rdev),
            S_IFBLK => NodeKind::BlockDevice(rdev),
            S_IFIFO => NodeKind::Fifo,
            S_IFSOCK => NodeKind::Socket,
            S_IFDIR => return Err(Errno::EPERM),
            _ => return Err(Errno::EINVAL),
        };
        self.create_node(cred, base, path, kind, mode & MODE_PERM)
    }

    pub fn symlink(
        &self,
        cred: &Credentials,
        target: &[u8],
        base: &Location,
        path: &[u8],
    ) -> Result<Location> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        self.create_node(cred, base, path, NodeKind::Symlink(target), 0o777)
    }

    /// link/linkat; `follow` is AT_SYMLINK_FOLLOW.
    pub fn link(
        &self,
        cred: &Credentials,
        old_base: &Location,
        old: &[u8],
        new_base: &Location,
        new: &[u8],
        follow: bool,
    ) -> Result<()> {
        let src = self.resolve(cred, old_base, old, follow)?;
        if src.inode.metadata().is_dir() {
            return Err(Errno::EPERM);
        }
        let p = self.dir_for_change(cred, new_base, new)?;
        let Last::Name(name) = &p.last else { return Err(Errno::EEXIST) };
        if p.dir.mount != src.mount {
            return Err(Errno::EXDEV);
        }
        Self::check_dir_writable(cred, &p.dir)?;
        if p.trailing_slash {
            return Err(Errno::ENOENT);
        }
        p.dir.inode.link(name, &src.inode)
    }

    pub fn unlink(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<()> {
        let p = self.dir_for_change(cred, base, path)?;
        let Last::Name(name) = &p.last else { return Err(Errno::EISDIR) };
        let dm = Self::check_dir_writable(cred, &p.dir)?;
        let victim = Self::child(&p.dir, name)?;
        let vm = victim.inode.metadata();
        if vm.is_dir() {
            return Err(Errno::EISDIR);
        }
        if p.trailing_slash {
            return Err(Errno::ENOTDIR);
        }
        perm::check_sticky(cred, &dm, &vm)?;
        if self.is_mountpoint(&victim) {
            return Err(Errno::EBUSY);
        }
        p.dir.inode.unlink(name)
    }

    pub fn rmdir(&self, cred: &Credentials, base: &Location, path: &[u8]) -> Result<()> {
        let p = self.dir_for_change(cred, base, path)?;
        let name = match &p.last {
            Last::Name(n) => n,
            Last::Dot => return Err(Errno::EINVAL),
            Last::DotDot => return Err(Errno::ENOTEMPTY),
            Last::Root => return Err(Errno::EBUSY),
        };
        let dm = Self::check_dir_writable(cred, &p.dir)?;
        let victim = Self::child(&p.dir, name)?;
        let vm = victim.inode.metadata();
        if !vm.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        perm::check_sticky(cred, &dm, &vm)?;
        if self.is_mountpoint(&victim) {
            return Err(Errno::EBUSY);
        }
        p.dir.inode.rmdir(name)
    }

    pub fn rename(
        &self,
        cred: &Credentials,
        old_base: &Location,
        old: &[u8],
        new_base: &Location,
        new: &[u8],
    ) -> Result<()> {
        let op = self.dir_for_change(cred, old_base, old)?;
        let np = self.dir_for_change(cred, new_base, new)?;
        let (Last::Name(oname), Last::Name(nname)) = (&op.last, &np.last) else {
            return Err(Errno::EBUSY);
        };
        if op.dir.mount != np.dir.mount {
            return Err(Errno::EXDEV);
        }
        let odm = Self::check_dir_writable(cred, &op.dir)?;
        let ndm = Self::check_dir_writable(cred, &np.dir)?;
        let src = Self::child(&op.dir, oname)?;
        let sm = src.inode.metadata();
        if !sm.is_dir() && (op.trailing_slash || np.trailing_slash) {
            return Err(Errno::ENOTDIR);
        }
        perm::check_sticky(cred, &odm, &sm)?;
        if self.is_mountpoint(&src) {
            return Err(Errno::EBUSY);
        }
        if let Ok(dst) = Self::child(&np.dir, nname) {
            let dm = dst.inode.metadata();
            if dm.ino == sm.ino {
                return Ok(());
            }
            match (sm.is_dir(), dm.is_dir()) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
            perm::check_sticky(cred, &ndm, &dm)?;
            if self.is_mountpoint(&dst) {
                return Err(Errno::EBUSY);
            }
        }
        if sm.is_dir() && odm.ino != ndm.ino {
            // Its `..` changes, and it must not move below itself.
            perm::check(cred, &sm, W_OK)?;
            if Self::is_ancestor_or_self(&src.inode, &np.dir.inode) {
                return Err(Errno::EINVAL);
            }
        }
        op.dir.inode.rename(oname, &np.dir.inode, nname)
    }

    /// Whether `dir` is `anc` or below it, within one file system.
    fn is_ancestor_or_self(anc: &Arc<dyn Inode>, dir: &Arc<dyn Inode>) -> bool {
        let target = anc.metadata().ino;
        let mut cur = dir.clone();
        loop {
            let ino = cur.metadata().ino;
            if ino == target {
                return true;
            }
            match cur.lookup(b"..") {
                Ok(up) if up.metadata().ino != ino => cur = up,
                _ => return false,
            }
        }
    }

    // ---- attributes ----

    /// chmod/fchmod. Owner or root; a non-root caller outside the file's
    /// group loses the set-gid bit, as on Linux.
    pub fn chmod(&self, cred: &Credentials, loc: &Location, mode: u32) -> Result<()> {
        let m = loc.inode.metadata();
        perm::check_owner(cred, &m)?;
        self.check_writable_mount(loc)?;
        let mut mode = mode & MODE_PERM;
        if !cred.is_root() && !cred.in_group(m.gid) {
            mode &= !S_ISGID;
        }
        loc.inode.set_perm(mode)
    }

    /// chown/fchown/lchown: only root changes owners (None = keep).
    pub fn chown(
        &self,
        cred: &Credentials,
        loc: &Location,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<()> {
        let m = loc.inode.metadata();
        let uid = uid.unwrap_or(m.uid);
        let gid = gid.unwrap_or(m.gid);
        if (uid, gid) == (m.uid, m.gid) && (cred.is_root() || cred.uid == m.uid) {
            return Ok(());
        }
        if !cred.is_root() {
            return Err(Errno::EPERM);
        }
        self.check_writable_mount(loc)?;
        loc.inode.set_owner(uid, gid)?;
        if !m.is_dir() && m.mode & (S_ISUID | S_ISGID) != 0 {
            loc.inode.set_perm(m.perm() & !(S_ISUID | S_ISGID))?;
        }
        Ok(())
    }

    /// truncate(2) by path.
    pub fn truncate(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        len: u64,
    ) -> Result<()> {
        let loc = self.resolve(cred, base, path, true)?;
        let m = loc.inode.metadata();
        if m.is_dir() {
            return Err(Errno::EISDIR);
        }
        if m.mode & S_IFMT != S_IFREG {
            return Err(Errno::EINVAL);
        }
        self.check_writable_mount(&loc)?;
        perm::check(cred, &m, W_OK)?;
        loc.inode.truncate(len)
    }

    /// utimensat with explicit times (None = leave): owner or root.
    pub fn utimens(
        &self,
        cred: &Credentials,
        loc: &Location,
        atime: Option<Timespec>,
        mtime: Option<Timespec>,
    ) -> Result<()> {
        perm::check_owner(cred, &loc.inode.metadata())?;
        self.check_writable_mount(loc)?;
        loc.inode.set_times(atime, mtime)
    }

    /// Convenience for path-based chmod/chown: the location, following
    /// symlinks unless `nofollow`.
    pub fn lookup(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        nofollow: bool,
    ) -> Result<Location> {
        self.resolve(cred, base, path, !nofollow)
    }

    /// Lists a directory without an open file (kernel use, tests).
    pub fn list(&self, loc: &Location) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        while let Some((e, next)) = loc.inode.readdir(cookie)? {
            out.push(e.name);
            cookie = next;
        }
        Ok(out)
    }
}
