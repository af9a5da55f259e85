//! Unix permission rules, on metadata alone so every file system gets them.

use super::types::{Credentials, Metadata, S_ISVTX};
use super::{Errno, Result};

pub const R_OK: u32 = 4;
pub const W_OK: u32 = 2;
pub const X_OK: u32 = 1;

/// Checks `want` (R_OK|W_OK|X_OK bits) against owner/group/other bits.
/// Root passes read and write always, and execute when the inode is a
/// directory or has any x bit (so root cannot run a non-executable file).
pub fn check(cred: &Credentials, meta: &Metadata, want: u32) -> Result<()> {
    if cred.is_root() {
        if want & X_OK == 0 || meta.is_dir() || meta.mode & 0o111 != 0 {
            return Ok(());
        }
        return Err(Errno::EACCES);
    }
    let bits = if cred.uid == meta.uid {
        meta.mode >> 6
    } else if cred.in_group(meta.gid) {
        meta.mode >> 3
    } else {
        meta.mode
    } & 7;
    if bits & want == want { Ok(()) } else { Err(Errno::EACCES) }
}

/// In a sticky directory (/tmp) only the entry's owner, the directory's
/// owner or root may remove or rename an entry.
pub fn check_sticky(cred: &Credentials, dir: &Metadata, victim: &Metadata) -> Result<()> {
    if dir.mode & S_ISVTX == 0 || cred.is_root() || cred.uid == dir.uid || cred.uid == victim.uid {
        Ok(())
    } else {
        Err(Errno::EPERM)
    }
}

/// chmod and utimes with explicit times: owner or root.
pub fn check_owner(cred: &Credentials, meta: &Metadata) -> Result<()> {
    if cred.is_root() || cred.uid == meta.uid { Ok(()) } else { Err(Errno::EPERM) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfs::types::*;
    use alloc::vec;

    fn meta(mode: u32, uid: u32, gid: u32) -> Metadata {
        Metadata {
            ino: 1,
            mode,
            nlink: 1,
            uid,
            gid,
            size: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
            blocks: 0,
        }
    }

    #[test]
    fn owner_group_other_classes() {
        let f = meta(S_IFREG | 0o640, 10, 20);
        let owner = Credentials::user(10, 99);
        let member = Credentials { uid: 11, gid: 1, groups: vec![20] };
        let other = Credentials::user(12, 30);
        assert!(check(&owner, &f, R_OK | W_OK).is_ok());
        assert_eq!(check(&owner, &f, X_OK), Err(Errno::EACCES));
        assert!(check(&member, &f, R_OK).is_ok());
        assert_eq!(check(&member, &f, W_OK), Err(Errno::EACCES));
        assert_eq!(check(&other, &f, R_OK), Err(Errno::EACCES));
        // The owner class applies even when it grants less than "other".
        let odd = meta(S_IFREG | 0o007, 10, 20);
        assert_eq!(check(&owner, &odd, R_OK), Err(Errno::EACCES));
    }

    #[test]
    fn root_bypasses_rw_but_needs_an_x_bit() {
        let root = Credentials::root();
        assert!(check(&root, &meta(S_IFREG, 5, 5), R_OK | W_OK).is_ok());
        assert_eq!(check(&root, &meta(S_IFREG | 0o644, 5, 5), X_OK), Err(Errno::EACCES));
        assert!(check(&root, &meta(S_IFREG | 0o010, 5, 5), X_OK).is_ok());
        assert!(check(&root, &meta(S_IFDIR, 5, 5), X_OK).is_ok());
    }

    #[test]
    fn sticky_directories() {
        let tmp = meta(S_IFDIR | 0o1777, 0, 0);
        let mine = meta(S_IFREG | 0o644, 10, 10);
        assert!(check_sticky(&Credentials::user(10, 10), &tmp, &mine).is_ok());
        assert_eq!(check_sticky(&Credentials::user(11, 10), &tmp, &mine), Err(Errno::EPERM));
        assert!(check_sticky(&Credentials::root(), &tmp, &mine).is_ok());
        let plain = meta(S_IFDIR | 0o777, 0, 0);
        assert!(check_sticky(&Credentials::user(11, 10), &plain, &mine).is_ok());
    }
}
