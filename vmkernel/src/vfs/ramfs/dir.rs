//! A ramfs directory: entries keyed by a cookie that only grows, so a
//! readdir position survives entries being added and removed around it.

use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use super::RamInode;

pub struct Dir {
    /// `..`; dangling (`Weak::new()`) for the root, whose `..` is itself.
    pub parent: Weak<RamInode>,
    entries: BTreeMap<u64, (Vec<u8>, Arc<RamInode>)>,
    names: BTreeMap<Vec<u8>, u64>,
    next_cookie: u64,
}

impl Dir {
    pub fn new(parent: Weak<RamInode>) -> Self {
        Dir { parent, entries: BTreeMap::new(), names: BTreeMap::new(), next_cookie: 0 }
    }

    pub fn get(&self, name: &[u8]) -> Option<&Arc<RamInode>> {
        let c = self.names.get(name)?;
        self.entries.get(c).map(|(_, i)| i)
    }

    pub fn insert(&mut self, name: &[u8], inode: Arc<RamInode>) {
        let c = self.next_cookie;
        self.next_cookie += 1;
        if let Some(old) = self.names.insert(name.to_vec(), c) {
            self.entries.remove(&old);
        }
        self.entries.insert(c, (name.to_vec(), inode));
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<RamInode>> {
        let c = self.names.remove(name)?;
        self.entries.remove(&c).map(|(_, i)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// First entry with cookie >= `cookie`, and the cookie to continue from.
    pub fn at(&self, cookie: u64) -> Option<(&[u8], &Arc<RamInode>, u64)> {
        self.entries.range(cookie..).next().map(|(c, (n, i))| (n.as_slice(), i, c + 1))
    }
}
