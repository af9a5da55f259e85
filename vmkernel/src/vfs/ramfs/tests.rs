use super::load::{LoadError, load_cpio};
use super::*;
use crate::cpio::{self, CpioError, Writer};

fn fs() -> Arc<RamFs> {
    RamFs::new(Arc::new(FixedClock(Timespec::from_secs(100))))
}

const ROOT: NewAttr = NewAttr { perm: 0o755, uid: 0, gid: 0 };

#[test]
fn create_lookup_readdir_with_stable_cookies() {
    let fs = fs();
    let root = fs.root();
    let a = root.create(b"a", NodeKind::File, ROOT).unwrap();
    root.create(b"b", NodeKind::Dir, ROOT).unwrap();
    root.create(b"c", NodeKind::Symlink(b"a"), ROOT).unwrap();
    assert_eq!(root.create(b"a", NodeKind::Dir, ROOT).err(), Some(Errno::EEXIST));
    assert_eq!(root.lookup(b"a").unwrap().metadata().ino, a.metadata().ino);
    assert_eq!(root.metadata().nlink, 3);
    let (e1, c1) = root.readdir(0).unwrap().unwrap();
    assert_eq!(e1.name, b"a");
    // Removing an entry already returned does not disturb the position.
    root.unlink(b"a").unwrap();
    let (e2, c2) = root.readdir(c1).unwrap().unwrap();
    assert_eq!((e2.name.as_slice(), e2.file_type), (&b"b"[..], FileType::Directory));
    let (e3, c3) = root.readdir(c2).unwrap().unwrap();
    assert_eq!((e3.name.as_slice(), e3.file_type), (&b"c"[..], FileType::Symlink));
    assert!(root.readdir(c3).unwrap().is_none());
    assert_eq!(a.metadata().nlink, 0);
    assert_eq!(root.lookup(b"c").unwrap().readlink().unwrap(), b"a");
}

#[test]
fn dotdot_and_nlink_of_directories() {
    let fs = fs();
    let root = fs.root();
    let d = root.create(b"d", NodeKind::Dir, ROOT).unwrap();
    let e = d.create(b"e", NodeKind::Dir, ROOT).unwrap();
    assert_eq!(e.lookup(b"..").unwrap().metadata().ino, d.metadata().ino);
    assert_eq!(root.lookup(b"..").unwrap().metadata().ino, 1);
    assert_eq!(d.metadata().nlink, 3);
    assert_eq!(root.rmdir(b"d"), Err(Errno::ENOTEMPTY));
    d.rmdir(b"e").unwrap();
    assert_eq!(d.metadata().nlink, 2);
    assert_eq!(e.metadata().nlink, 0);
    assert_eq!(e.create(b"x", NodeKind::File, ROOT).err(), Some(Errno::ENOENT));
    assert_eq!(root.unlink(b"d"), Err(Errno::EISDIR));
    root.rmdir(b"d").unwrap();
    assert_eq!(root.metadata().nlink, 2);
}

#[test]
fn rename_replaces_and_moves_directories() {
    let fs = fs();
    let root = fs.root();
    let f = root.create(b"f", NodeKind::File, ROOT).unwrap();
    f.write_at(0, b"new").unwrap();
    let g = root.create(b"g", NodeKind::File, ROOT).unwrap();
    root.rename(b"f", &root, b"g").unwrap();
    assert_eq!(g.metadata().nlink, 0);
    let mut buf = [0u8; 8];
    let n = root.lookup(b"g").unwrap().read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"new");
    assert_eq!(root.lookup(b"f").err(), Some(Errno::ENOENT));

    let a = root.create(b"a", NodeKind::Dir, ROOT).unwrap();
    let b = root.create(b"b", NodeKind::Dir, ROOT).unwrap();
    let sub = a.create(b"sub", NodeKind::Dir, ROOT).unwrap();
    sub.create(b"x", NodeKind::File, ROOT).unwrap();
    a.rename(b"sub", &b, b"moved").unwrap();
    assert_eq!(sub.lookup(b"..").unwrap().metadata().ino, b.metadata().ino);
    assert_eq!((a.metadata().nlink, b.metadata().nlink), (2, 3));
    // Directory over a non-empty directory, file over directory, and back.
    let t = root.create(b"t", NodeKind::Dir, ROOT).unwrap();
    t.create(b"y", NodeKind::File, ROOT).unwrap();
    assert_eq!(b.rename(b"moved", &root, b"t"), Err(Errno::ENOTEMPTY));
    assert_eq!(root.rename(b"g", &root, b"t"), Err(Errno::EISDIR));
    assert_eq!(root.rename(b"t", &root, b"g"), Err(Errno::ENOTDIR));
    t.unlink(b"y").unwrap();
    b.rename(b"moved", &root, b"t").unwrap();
    assert_eq!(t.metadata().nlink, 0);
    assert_eq!(root.lookup(b"t").unwrap().metadata().ino, sub.metadata().ino);
    assert_eq!(b.metadata().nlink, 2);
}

#[test]
fn hard_links_share_data() {
    let fs = fs();
    let root = fs.root();
    let f = root.create(b"f", NodeKind::File, ROOT).unwrap();
    root.link(b"h", &f).unwrap();
    assert_eq!(f.metadata().nlink, 2);
    root.lookup(b"h").unwrap().write_at(0, b"shared").unwrap();
    assert_eq!(f.metadata().size, 6);
    let other = RamFs::new(Arc::new(FixedClock(Timespec::default())));
    assert_eq!(other.root().link(b"x", &f), Err(Errno::EXDEV));
    let d = root.create(b"d", NodeKind::Dir, ROOT).unwrap();
    assert_eq!(root.link(b"d2", &d), Err(Errno::EPERM));
}

#[test]
fn space_is_returned_when_the_last_reference_goes() {
    let fs = RamFs::with_limit(Arc::new(FixedClock(Timespec::default())), 2 * PAGE);
    let root = fs.root();
    let f = root.create(b"f", NodeKind::File, ROOT).unwrap();
    assert_eq!(f.write_at(0, &[1; 3 * PAGE]).unwrap(), 2 * PAGE);
    root.unlink(b"f").unwrap();
    assert_eq!(fs.used_bytes(), 2 * PAGE); // still open
    drop(f);
    assert_eq!(fs.used_bytes(), 0);
}

fn archive() -> Vec<u8> {
    let mut w = Writer::new();
    w.add(".", cpio::S_IFDIR | 0o700, 0, 0, 5, &[]);
    w.add("etc", cpio::S_IFDIR | 0o755, 0, 0, 10, &[]);
    w.add("etc/motd", cpio::S_IFREG | 0o644, 0, 0, 11, b"welcome\n");
    w.add("etc/shadow", cpio::S_IFREG | 0o600, 0, 42, 12, b"root:x\n");
    w.add("bin/busybox", cpio::S_IFREG | 0o755, 0, 0, 13, &[0x7f; 9000]);
    w.add("bin/sh", cpio::S_IFLNK | 0o777, 0, 0, 14, b"busybox");
    w.add("home/user", cpio::S_IFDIR | 0o750, 1000, 1000, 15, &[]);
    w.add("dev/null", 0o020000 | 0o666, 0, 0, 16, &[]);
    w.add("etc/motd", cpio::S_IFREG | 0o644, 0, 0, 17, b"replaced\n");
    w.finish()
}

#[test]
fn unpacks_a_cpio_archive() {
    let fs = fs();
    let r = load_cpio(&fs, &archive()).unwrap();
    assert_eq!((r.files, r.dirs, r.symlinks, r.skipped), (4, 2, 1, 1));
    let root = fs.root();
    assert_eq!(root.metadata().perm(), 0o700);
    let etc = root.lookup(b"etc").unwrap();
    let motd = etc.lookup(b"motd").unwrap();
    let mut buf = [0u8; 32];
    let n = motd.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"replaced\n");
    assert_eq!(motd.metadata().mtime, Timespec::from_secs(17));
    let shadow = etc.lookup(b"shadow").unwrap().metadata();
    assert_eq!((shadow.mode, shadow.uid, shadow.gid), (S_IFREG | 0o600, 0, 42));
    let bin = root.lookup(b"bin").unwrap();
    assert_eq!(bin.metadata().perm(), 0o755); // made on the way
    assert_eq!(bin.lookup(b"busybox").unwrap().metadata().size, 9000);
    let sh = bin.lookup(b"sh").unwrap();
    assert!(sh.metadata().is_symlink());
    assert_eq!(sh.readlink().unwrap(), b"busybox");
    let user = root.lookup(b"home").unwrap().lookup(b"user").unwrap().metadata();
    assert_eq!((user.mode, user.uid, user.gid, user.mtime.sec), (S_IFDIR | 0o750, 1000, 1000, 15));
}

#[test]
fn corrupt_archives_are_reported() {
    let a = archive();
    let r = load_cpio(&fs(), &a[..300]);
    assert!(matches!(r, Err(LoadError::Archive(CpioError::Corrupt(_)))), "{r:?}");
    let mut w = Writer::new();
    w.add("f", cpio::S_IFREG | 0o644, 0, 0, 0, b"x");
    w.add("f/g", cpio::S_IFREG | 0o644, 0, 0, 0, b"y");
    let r = load_cpio(&fs(), &w.finish());
    assert_eq!(r, Err(LoadError::Entry { name: "f/g".into(), errno: Errno::ENOTDIR }));
    let mut w = Writer::new();
    w.add("a/../../etc", cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    assert!(matches!(
        load_cpio(&fs(), &w.finish()),
        Err(LoadError::Entry { errno: Errno::EINVAL, .. })
    ));
    let full = RamFs::with_limit(Arc::new(FixedClock(Timespec::default())), PAGE);
    assert!(matches!(
        load_cpio(&full, &archive()),
        Err(LoadError::Entry { errno: Errno::ENOSPC, .. })
    ));
}
