//! The mount table. A `Location` is an inode as reached through a mount
//! (Linux's `struct path`): the mount supplies st_dev, read-only-ness and
//! the way back up through `..`.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::inode::{FileSystem, Inode};
use super::types::makedev;

pub type MountId = usize;

#[derive(Clone)]
pub struct Location {
    pub mount: MountId,
    pub inode: Arc<dyn Inode>,
}

impl Location {
    pub fn ino(&self) -> u64 {
        self.inode.metadata().ino
    }

    pub fn same(&self, other: &Location) -> bool {
        self.mount == other.mount && self.ino() == other.ino()
    }
}

impl core::fmt::Debug for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Location(mount {}, ino {})", self.mount, self.ino())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MountFlags {
    pub read_only: bool,
}

/// One line of /proc/mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountInfo {
    pub source: String,
    pub path: Vec<u8>,
    pub fs_type: String,
    pub read_only: bool,
}

pub(crate) struct Mount {
    pub fs: Arc<dyn FileSystem>,
    pub root: Arc<dyn Inode>,
    /// Where it is mounted; None for the root mount.
    pub parent: Option<Location>,
    pub source: String,
    pub flags: MountFlags,
}

#[derive(Default)]
pub(crate) struct MountTable {
    /// Indexed by MountId; unmounted slots are None and never reused, so a
    /// stale Location cannot alias a newer mount.
    pub mounts: Vec<Option<Mount>>,
}

impl MountTable {
    pub fn get(&self, id: MountId) -> Option<&Mount> {
        self.mounts.get(id).and_then(|m| m.as_ref())
    }

    /// Anonymous device number, as Linux gives virtual file systems.
    pub fn dev(id: MountId) -> u64 {
        makedev(0, id as u32 + 1)
    }

    /// The newest mount on top of `loc`, if any.
    pub fn covering(&self, loc: &Location) -> Option<MountId> {
        let ino = loc.ino();
        self.mounts.iter().enumerate().rev().find_map(|(id, m)| {
            let p = m.as_ref()?.parent.as_ref()?;
            (p.mount == loc.mount && p.ino() == ino).then_some(id)
        })
    }

    pub fn root_of(&self, id: MountId) -> Option<Location> {
        self.get(id).map(|m| Location { mount: id, inode: m.root.clone() })
    }

    pub fn is_mount_root(&self, loc: &Location) -> bool {
        self.get(loc.mount).is_some_and(|m| m.root.metadata().ino == loc.ino())
    }

    pub fn children(&self, id: MountId) -> impl Iterator<Item = MountId> + '_ {
        self.mounts
            .iter()
            .enumerate()
            .filter(move |(_, m)| {
                m.as_ref().and_then(|m| m.parent.as_ref()).is_some_and(|p| p.mount == id)
            })
            .map(|(i, _)| i)
    }
}
