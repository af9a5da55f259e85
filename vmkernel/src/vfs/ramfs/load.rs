//! Unpacking the boot cpio archive into a ramfs, as Linux unpacks an
//! initramfs: missing parent directories are created (0755 root), a later
//! entry replaces an earlier file, a directory entry updates an existing
//! directory's attributes.

use alloc::string::{String, ToString};
use alloc::sync::Arc;

use super::RamFs;
use crate::cpio::{self, CpioError};
use crate::vfs::Errno;
use crate::vfs::inode::{Inode, NewAttr, NodeKind};
use crate::vfs::types::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    Archive(CpioError),
    /// An entry that cannot be placed (bad name, a file where a directory
    /// is needed, out of space).
    Entry {
        name: String,
        errno: Errno,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    /// Device nodes, FIFOs, sockets: the newc reader gives no rdev, so they
    /// are left to devfs.
    pub skipped: usize,
}

/// Unpacks `archive` into `fs`.
pub fn load_cpio(fs: &RamFs, archive: &[u8]) -> Result<LoadReport, LoadError> {
    let mut report = LoadReport::default();
    for entry in cpio::entries(archive) {
        let e = entry.map_err(LoadError::Archive)?;
        let fail = |errno| LoadError::Entry { name: e.name.to_string(), errno };
        let ty = FileType::from_mode(e.mode).ok_or(fail(Errno::EINVAL))?;
        let name = e.name.trim_matches('/');
        let time = Timespec::from_secs(e.mtime as i64);
        let attr = NewAttr { perm: e.mode & MODE_PERM, uid: e.uid, gid: e.gid };
        if name.is_empty() || name == "." {
            if ty == FileType::Directory {
                apply(&*fs.root_inode(), attr, time);
            }
            continue;
        }
        if name.split('/').any(|c| c == ".." || c.len() > NAME_MAX) {
            return Err(fail(Errno::EINVAL));
        }
        let (parent_path, leaf) = match name.rfind('/') {
            Some(i) => (&name[..i], &name[i + 1..]),
            None => ("", name),
        };
        let parent = make_parents(fs, parent_path, time).map_err(fail)?;
        let leaf = leaf.as_bytes();
        if let Ok(old) = parent.lookup(leaf) {
            if old.metadata().is_dir() && ty == FileType::Directory {
                apply(&*old, attr, time);
                report.dirs += 1;
                continue;
            }
            let r = if old.metadata().is_dir() { parent.rmdir(leaf) } else { parent.unlink(leaf) };
            r.map_err(fail)?;
        }
        let kind = match ty {
            FileType::Regular => NodeKind::File,
            FileType::Directory => NodeKind::Dir,
            FileType::Symlink => NodeKind::Symlink(e.data),
            _ => {
                report.skipped += 1;
                continue;
            }
        };
        let node = parent.create(leaf, kind, attr).map_err(fail)?;
        match ty {
            FileType::Regular => {
                if !e.data.is_empty() && node.write_at(0, e.data).map_err(fail)? != e.data.len() {
                    return Err(fail(Errno::ENOSPC));
                }
                report.files += 1;
            }
            FileType::Directory => report.dirs += 1,
            _ => report.symlinks += 1,
        }
        apply(&*node, attr, time);
    }
    Ok(report)
}

fn apply(node: &dyn Inode, attr: NewAttr, time: Timespec) {
    let _ = node.set_perm(attr.perm);
    let _ = node.set_owner(attr.uid, attr.gid);
    let _ = node.set_times(Some(time), Some(time));
    if let Some(r) = node.as_any().downcast_ref::<super::RamInode>() {
        r.set_all_times(time);
    }
}

fn make_parents(fs: &RamFs, path: &str, time: Timespec) -> Result<Arc<dyn Inode>, Errno> {
    let mut cur: Arc<dyn Inode> = fs.root_inode();
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur = match cur.lookup(comp.as_bytes()) {
            Ok(next) if next.metadata().is_dir() => next,
            Ok(_) => return Err(Errno::ENOTDIR),
            Err(Errno::ENOENT) => {
                let d = cur.create(
                    comp.as_bytes(),
                    NodeKind::Dir,
                    NewAttr { perm: 0o755, uid: 0, gid: 0 },
                )?;
                apply(&*d, NewAttr { perm: 0o755, uid: 0, gid: 0 }, time);
                d
            }
            Err(e) => return Err(e),
        };
    }
    Ok(cur)
}
