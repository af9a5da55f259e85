//! Path resolution, as Linux's namei: absolute or relative to a base
//! directory, `.` and `..` (crossing mount points both ways), symlinks
//! (at most MAX_SYMLINKS per resolution), trailing slashes, search
//! permission on every directory walked through.

use alloc::vec::Vec;

use super::facade::Vfs;
use super::mount::Location;
use super::perm::{self, X_OK};
use super::types::*;
use super::{Errno, Result};

/// The final component of a path, left for the caller to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Last {
    Name(Vec<u8>),
    Dot,
    DotDot,
    /// The path was only slashes.
    Root,
}

pub(crate) struct Parent {
    pub dir: Location,
    pub last: Last,
    pub trailing_slash: bool,
}

impl Last {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Last::Name(n) => n,
            Last::Dot => b".",
            Last::DotDot => b"..",
            Last::Root => b"/",
        }
    }
}

impl Vfs {
    /// Resolves `path` from `base` (the cwd or a dirfd's directory).
    /// `follow` says whether a symlink as the last component is followed.
    pub fn resolve(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        follow: bool,
    ) -> Result<Location> {
        let mut links = 0;
        self.resolve_inner(cred, base, path, follow, &mut links)
    }

    pub(crate) fn resolve_inner(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        follow: bool,
        links: &mut u32,
    ) -> Result<Location> {
        let p = self.walk_parent(cred, base, path, links)?;
        self.finish(cred, p, follow, links)
    }

    /// Walks all but the last component, which must then be looked up in
    /// a directory.
    pub(crate) fn walk_parent(
        &self,
        cred: &Credentials,
        base: &Location,
        path: &[u8],
        links: &mut u32,
    ) -> Result<Parent> {
        if path.is_empty() {
            return Err(Errno::ENOENT);
        }
        if path.len() >= PATH_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let comps: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect();
        if comps.iter().any(|c| c.len() > NAME_MAX) {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut cur = if path[0] == b'/' { self.root() } else { base.clone() };
        let trailing_slash = path.ends_with(b"/");
        let Some((last, init)) = comps.split_last() else {
            return Ok(Parent { dir: cur, last: Last::Root, trailing_slash });
        };
        for c in init {
            cur = self.step(cred, &cur, c, true, links)?;
        }
        if !cur.inode.metadata().is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let last = match *last {
            b"." => Last::Dot,
            b".." => Last::DotDot,
            n => Last::Name(n.to_vec()),
        };
        Ok(Parent { dir: cur, last, trailing_slash })
    }

    /// Looks up the last component left by `walk_parent`.
    pub(crate) fn finish(
        &self,
        cred: &Credentials,
        p: Parent,
        follow: bool,
        links: &mut u32,
    ) -> Result<Location> {
        let loc = match p.last {
            Last::Root => p.dir,
            ref last => {
                self.step(cred, &p.dir, last.as_bytes(), follow || p.trailing_slash, links)?
            }
        };
        if p.trailing_slash && !loc.inode.metadata().is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(loc)
    }

    /// One component looked up in `dir`.
    pub(crate) fn step(
        &self,
        cred: &Credentials,
        dir: &Location,
        name: &[u8],
        follow: bool,
        links: &mut u32,
    ) -> Result<Location> {
        let m = dir.inode.metadata();
        if !m.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        perm::check(cred, &m, X_OK)?;
        match name {
            b"." => Ok(dir.clone()),
            b".." => Ok(self.parent_of(dir)),
            _ => {
                let child = dir.inode.lookup(name)?;
                let loc = self.cross_down(Location { mount: dir.mount, inode: child });
                if follow && loc.inode.metadata().is_symlink() {
                    self.follow_link(cred, dir, &loc, links)
                } else {
                    Ok(loc)
                }
            }
        }
    }

    pub(crate) fn follow_link(
        &self,
        cred: &Credentials,
        dir: &Location,
        link: &Location,
        links: &mut u32,
    ) -> Result<Location> {
        *links += 1;
        if *links > MAX_SYMLINKS {
            return Err(Errno::ELOOP);
        }
        let target = link.inode.readlink()?;
        self.resolve_inner(cred, dir, &target, true, links)
    }

    /// `..` of a directory: up through mount points until a mount's root is
    /// left behind, then the file system's own `..`.
    pub(crate) fn parent_of(&self, dir: &Location) -> Location {
        let mut cur = dir.clone();
        {
            let t = self.mounts.read();
            while t.is_mount_root(&cur) {
                match t.get(cur.mount).and_then(|m| m.parent.clone()) {
                    Some(p) => cur = p,
                    None => return cur, // the root's `..` is itself
                }
            }
        }
        match cur.inode.lookup(b"..") {
            Ok(up) => Location { mount: cur.mount, inode: up },
            Err(_) => cur,
        }
    }

    /// If something is mounted on `loc`, the root of the top-most mount.
    pub(crate) fn cross_down(&self, mut loc: Location) -> Location {
        let t = self.mounts.read();
        while let Some(id) = t.covering(&loc) {
            match t.root_of(id) {
                Some(r) => loc = r,
                None => break,
            }
        }
        loc
    }

    /// The absolute path of a directory (getcwd), found by walking `..` and
    /// searching each parent for the child's inode number.
    pub fn path_of(&self, loc: &Location) -> Result<Vec<u8>> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut cur = loc.clone();
        for _ in 0..PATH_MAX {
            // Climb out of mounts: a mount root is named by its mount point.
            let mut named = cur.clone();
            loop {
                let t = self.mounts.read();
                if !t.is_mount_root(&named) {
                    break;
                }
                match t.get(named.mount).and_then(|m| m.parent.clone()) {
                    Some(p) => named = p,
                    None => {
                        drop(t);
                        let mut out = Vec::new();
                        for p in parts.iter().rev() {
                            out.push(b'/');
                            out.extend_from_slice(p);
                        }
                        if out.is_empty() {
                            out.push(b'/');
                        }
                        return Ok(out);
                    }
                }
            }
            let parent = Location { mount: named.mount, inode: named.inode.lookup(b"..")? };
            let ino = named.ino();
            let mut cookie = 0;
            let name = loop {
                match parent.inode.readdir(cookie)? {
                    Some((e, _)) if e.ino == ino => break e.name,
                    Some((_, next)) => cookie = next,
                    None => return Err(Errno::ENOENT), // removed directory
                }
            };
            parts.push(name);
            cur = parent;
        }
        Err(Errno::ENAMETOOLONG)
    }
}
