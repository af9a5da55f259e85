//! VFS behaviour through the facade, as the system-call layer sees it.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use super::dirent;
use super::flags::*;
use super::perm::{R_OK, W_OK, X_OK};
use super::ramfs::{RamFs, load::load_cpio};
use super::*;
use crate::cpio::{self, Writer};

fn clock() -> Arc<dyn Clock> {
    Arc::new(FixedClock(Timespec::from_secs(1_000)))
}

fn root() -> Credentials {
    Credentials::root()
}

fn user() -> Credentials {
    Credentials::user(1000, 1000)
}

/// A root file system from an archive, like the one the kernel boots with.
fn boot_vfs() -> Vfs {
    let mut w = Writer::new();
    w.add("bin", cpio::S_IFDIR | 0o755, 0, 0, 1, &[]);
    w.add("bin/busybox", cpio::S_IFREG | 0o755, 0, 0, 1, b"\x7fELF");
    w.add("bin/sh", cpio::S_IFLNK | 0o777, 0, 0, 1, b"busybox");
    w.add("etc/motd", cpio::S_IFREG | 0o644, 0, 0, 1, b"Welcome to Mantle\n");
    w.add("etc/shadow", cpio::S_IFREG | 0o600, 0, 0, 1, b"root:*:\n");
    w.add("tmp", cpio::S_IFDIR | 0o1777, 0, 0, 1, &[]);
    w.add("home/user", cpio::S_IFDIR | 0o755, 1000, 1000, 1, &[]);
    w.add("proc", cpio::S_IFDIR | 0o555, 0, 0, 1, &[]);
    w.add("dev", cpio::S_IFDIR | 0o755, 0, 0, 1, &[]);
    let fs = RamFs::new(clock());
    load_cpio(&fs, &w.finish()).unwrap();
    Vfs::new(fs, "rootfs")
}

fn read_all(f: &OpenFile) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn write_file(v: &Vfs, cred: &Credentials, path: &[u8], data: &[u8]) {
    let f = v.open(cred, &v.root(), path, O_WRONLY | O_CREAT | O_TRUNC, 0o644).unwrap();
    assert_eq!(f.write(data).unwrap(), data.len());
}

fn read_file(v: &Vfs, cred: &Credentials, path: &[u8]) -> Vec<u8> {
    read_all(&v.open(cred, &v.root(), path, O_RDONLY, 0).unwrap())
}

#[test]
fn files_from_the_archive_read_back() {
    let v = boot_vfs();
    assert_eq!(read_file(&v, &user(), b"/etc/motd"), b"Welcome to Mantle\n");
    assert_eq!(read_file(&v, &user(), b"/bin/sh"), b"\x7fELF");
    let st = v.lstat(&user(), &v.root(), b"/bin/sh").unwrap();
    assert_eq!(st.mode & S_IFMT, S_IFLNK);
    assert_eq!(v.readlink(&user(), &v.root(), b"/bin/sh").unwrap(), b"busybox");
    assert_eq!(v.readlink(&user(), &v.root(), b"/bin/busybox"), Err(Errno::EINVAL));
    let st = v.stat(&user(), &v.root(), b"/bin/sh").unwrap();
    assert_eq!((st.mode, st.size, st.mtime.sec), (S_IFREG | 0o755, 4, 1));
}

#[test]
fn permissions_on_open_and_exec() {
    let v = boot_vfs();
    let r = v.root();
    assert_eq!(v.open(&user(), &r, b"/etc/shadow", O_RDONLY, 0).err(), Some(Errno::EACCES));
    assert!(v.open(&root(), &r, b"/etc/shadow", O_RDWR, 0).is_ok());
    assert_eq!(v.open(&user(), &r, b"/etc/motd", O_WRONLY, 0).err(), Some(Errno::EACCES));
    assert_eq!(
        v.open(&user(), &r, b"/etc/new", O_WRONLY | O_CREAT, 0o644).err(),
        Some(Errno::EACCES)
    );
    assert!(v.open_exec(&user(), &r, b"/bin/sh").is_ok());
    assert_eq!(v.open_exec(&root(), &r, b"/etc/motd").err(), Some(Errno::EACCES));
    assert_eq!(v.open_exec(&root(), &r, b"/bin").err(), Some(Errno::EACCES));
    // Search permission on every directory on the way.
    v.mkdir(&root(), &r, b"/secret", 0o700).unwrap();
    write_file(&v, &root(), b"/secret/f", b"x");
    assert_eq!(v.stat(&user(), &r, b"/secret/f").err(), Some(Errno::EACCES));
    assert_eq!(v.chdir(&user(), &r, b"/secret").err(), Some(Errno::EACCES));
    assert_eq!(v.access(&user(), &r, b"/etc/motd", R_OK), Ok(()));
    assert_eq!(v.access(&user(), &r, b"/etc/motd", W_OK), Err(Errno::EACCES));
    assert_eq!(v.access(&user(), &r, b"/bin/busybox", X_OK), Ok(()));
    // A file created with O_CREAT opens even if its mode forbids writing.
    let f = v.open(&user(), &r, b"/tmp/ro", O_WRONLY | O_CREAT | O_EXCL, 0o444).unwrap();
    assert_eq!(f.write(b"ok"), Ok(2));
    assert_eq!(v.open(&user(), &r, b"/tmp/ro", O_WRONLY, 0).err(), Some(Errno::EACCES));
    let st = v.stat(&user(), &r, b"/tmp/ro").unwrap();
    assert_eq!((st.uid, st.gid, st.mode), (1000, 1000, S_IFREG | 0o444));
}

#[test]
fn open_flags() {
    let v = boot_vfs();
    let r = v.root();
    let u = user();
    write_file(&v, &u, b"/tmp/f", b"hello");
    assert_eq!(
        v.open(&u, &r, b"/tmp/f", O_CREAT | O_EXCL | O_WRONLY, 0o644).err(),
        Some(Errno::EEXIST)
    );
    let f = v.open(&u, &r, b"/tmp/f", O_WRONLY | O_APPEND, 0).unwrap();
    f.lseek(0, SEEK_SET).unwrap();
    f.write(b" world").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/f"), b"hello world");
    assert_eq!(f.read(&mut [0; 4]), Err(Errno::EBADF));
    let f = v.open(&u, &r, b"/tmp/f", O_RDWR | O_TRUNC, 0).unwrap();
    assert_eq!(f.stat().size, 0);
    assert_eq!(v.open(&u, &r, b"/tmp/f", O_RDONLY | O_DIRECTORY, 0).err(), Some(Errno::ENOTDIR));
    assert_eq!(v.open(&u, &r, b"/tmp", O_WRONLY, 0).err(), Some(Errno::EISDIR));
    assert_eq!(v.open(&u, &r, b"/tmp", O_RDONLY | O_CREAT, 0).err(), Some(Errno::EISDIR));
    assert!(v.open(&u, &r, b"/tmp", O_RDONLY | O_DIRECTORY, 0).is_ok());
    assert_eq!(v.open(&u, &r, b"/tmp/f/", O_RDONLY, 0).err(), Some(Errno::ENOTDIR));
    assert_eq!(v.open(&u, &r, b"/tmp/g/", O_RDWR | O_CREAT, 0o644).err(), Some(Errno::EISDIR));
    assert_eq!(v.open(&u, &r, b"/nope/f", O_RDONLY, 0).err(), Some(Errno::ENOENT));
    assert_eq!(v.open(&u, &r, b"/etc/motd/x", O_RDONLY, 0).err(), Some(Errno::ENOTDIR));
    assert_eq!(v.open(&u, &r, b"", O_RDONLY, 0).err(), Some(Errno::ENOENT));
    // O_NOFOLLOW: ELOOP on a symlink as the last component only.
    assert_eq!(v.open(&u, &r, b"/bin/sh", O_RDONLY | O_NOFOLLOW, 0).err(), Some(Errno::ELOOP));
    v.symlink(&u, b"/bin", &r, b"/tmp/bin").unwrap();
    assert!(v.open(&u, &r, b"/tmp/bin/sh", O_RDONLY, 0).is_ok());
    assert!(v.open(&u, &r, b"/tmp/bin/busybox", O_RDONLY | O_NOFOLLOW, 0).is_ok());
    let p = v.open(&u, &r, b"/bin/sh", O_PATH | O_NOFOLLOW, 0).unwrap();
    assert_eq!(p.stat().mode & S_IFMT, S_IFLNK);
    assert_eq!(p.read(&mut [0; 1]), Err(Errno::EBADF));
    // O_CREAT through a dangling symlink creates the target.
    v.symlink(&u, b"target", &r, b"/tmp/dangling").unwrap();
    v.open(&u, &r, b"/tmp/dangling", O_WRONLY | O_CREAT, 0o600).unwrap().write(b"t").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/target"), b"t");
    assert_eq!(
        v.open(&u, &r, b"/tmp/dangling", O_WRONLY | O_CREAT | O_EXCL, 0o600).err(),
        Some(Errno::EEXIST)
    );
    assert!(!f.cloexec() && f.flags() & O_ACCMODE == O_RDWR);
    let c = v.open(&u, &r, b"/tmp/f", O_RDONLY | O_CLOEXEC | O_NONBLOCK, 0).unwrap();
    assert!(c.cloexec() && c.is_nonblocking());
    c.set_status_flags(O_APPEND);
    assert_eq!(c.flags(), O_RDONLY | O_APPEND);
}

#[test]
fn seek_and_positional_io() {
    let v = boot_vfs();
    let f = v.open(&root(), &v.root(), b"/tmp/s", O_RDWR | O_CREAT, 0o644).unwrap();
    f.write(b"0123456789").unwrap();
    assert_eq!(f.lseek(-3, SEEK_END), Ok(7));
    let mut b = [0u8; 8];
    assert_eq!(f.read(&mut b), Ok(3));
    assert_eq!(&b[..3], b"789");
    assert_eq!(f.lseek(-20, SEEK_CUR), Err(Errno::EINVAL));
    assert_eq!(f.lseek(2, SEEK_SET), Ok(2));
    assert_eq!(f.lseek(1, SEEK_CUR), Ok(3));
    assert_eq!(f.lseek(0, 7), Err(Errno::EINVAL));
    assert_eq!(f.pread(5, &mut b[..2]), Ok(2));
    assert_eq!(&b[..2], b"56");
    assert_eq!(f.pwrite(12, b"!"), Ok(1));
    assert_eq!(f.stat().size, 13);
    assert_eq!(f.lseek(0, SEEK_CUR), Ok(3));
    f.truncate(4).unwrap();
    assert_eq!(f.stat().size, 4);
}

#[test]
fn symlink_loops_and_nesting() {
    let v = boot_vfs();
    let r = v.root();
    let u = user();
    v.symlink(&u, b"b", &r, b"/tmp/a").unwrap();
    v.symlink(&u, b"a", &r, b"/tmp/b").unwrap();
    assert_eq!(v.stat(&u, &r, b"/tmp/a").err(), Some(Errno::ELOOP));
    assert!(v.lstat(&u, &r, b"/tmp/a").is_ok());
    // A chain of 40 links resolves; 41 is too many.
    v.mkdir(&u, &r, b"/tmp/c", 0o755).unwrap();
    write_file(&v, &u, b"/tmp/c/end", b"end");
    v.symlink(&u, b"end", &r, b"/tmp/c/l0").unwrap();
    for i in 1..=40 {
        let target = alloc::format!("l{}", i - 1);
        let name = alloc::format!("/tmp/c/l{i}");
        v.symlink(&u, target.as_bytes(), &r, name.as_bytes()).unwrap();
    }
    assert_eq!(read_file(&v, &u, b"/tmp/c/l39"), b"end");
    assert_eq!(v.stat(&u, &r, b"/tmp/c/l40").err(), Some(Errno::ELOOP));
    // Relative links inside directories, links to directories, `..` in links.
    v.symlink(&u, b"../c/end", &r, b"/tmp/c/up").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/c/up"), b"end");
    v.symlink(&u, b"/etc", &r, b"/tmp/etc").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/etc/../etc/motd"), b"Welcome to Mantle\n");
    assert_eq!(v.symlink(&u, b"", &r, b"/tmp/empty").err(), Some(Errno::ENOENT));
    assert_eq!(v.symlink(&u, b"x", &r, b"/tmp/a").err(), Some(Errno::EEXIST));
}

#[test]
fn name_and_path_limits() {
    let v = boot_vfs();
    let r = v.root();
    let long = vec![b'a'; 256];
    let mut p = b"/tmp/".to_vec();
    p.extend_from_slice(&long);
    assert_eq!(v.open(&root(), &r, &p, O_CREAT | O_WRONLY, 0o644).err(), Some(Errno::ENAMETOOLONG));
    p.pop();
    assert!(v.open(&root(), &r, &p, O_CREAT | O_WRONLY, 0o644).is_ok());
    let mut deep = Vec::new();
    while deep.len() < PATH_MAX {
        deep.extend_from_slice(b"/.");
    }
    assert_eq!(v.stat(&root(), &r, &deep).err(), Some(Errno::ENAMETOOLONG));
    deep.truncate(PATH_MAX - 2);
    assert!(v.stat(&root(), &r, &deep).is_ok());
}

#[test]
fn relative_paths_dot_and_dotdot() {
    let v = boot_vfs();
    let u = user();
    let home = v.chdir(&u, &v.root(), b"/home/user").unwrap();
    write_file(&v, &u, b"/home/user/notes", b"n");
    assert_eq!(read_all(&v.open(&u, &home, b"notes", O_RDONLY, 0).unwrap()), b"n");
    assert_eq!(read_all(&v.open(&u, &home, b"./../user/./notes", O_RDONLY, 0).unwrap()), b"n");
    assert_eq!(
        read_all(&v.open(&u, &home, b"../../../../etc//motd", O_RDONLY, 0).unwrap()).len(),
        18
    );
    assert_eq!(v.path_of(&home).unwrap(), b"/home/user");
    assert_eq!(v.path_of(&v.root()).unwrap(), b"/");
    let up = v.chdir(&u, &home, b"..").unwrap();
    assert_eq!(v.path_of(&up).unwrap(), b"/home");
    assert_eq!(v.chdir(&u, &home, b"notes").err(), Some(Errno::ENOTDIR));
    assert!(v.stat(&u, &home, b"/").is_ok());
    assert!(v.stat(&u, &home, b"///").is_ok());
    assert!(v.stat(&u, &home, b".").is_ok());
}

#[test]
fn unlink_rmdir_rename() {
    let v = boot_vfs();
    let r = v.root();
    let u = user();
    v.mkdir(&u, &r, b"/tmp/d", 0o755).unwrap();
    assert_eq!(v.mkdir(&u, &r, b"/tmp/d", 0o755).err(), Some(Errno::EEXIST));
    assert_eq!(v.mkdir(&u, &r, b"/tmp/x/y", 0o755).err(), Some(Errno::ENOENT));
    v.mkdir(&u, &r, b"/tmp/d2/", 0o755).unwrap();
    write_file(&v, &u, b"/tmp/d/f", b"1");
    assert_eq!(v.rmdir(&u, &r, b"/tmp/d"), Err(Errno::ENOTEMPTY));
    assert_eq!(v.rmdir(&u, &r, b"/tmp/d/f"), Err(Errno::ENOTDIR));
    assert_eq!(v.unlink(&u, &r, b"/tmp/d"), Err(Errno::EISDIR));
    assert_eq!(v.unlink(&u, &r, b"/tmp/d/f/"), Err(Errno::ENOTDIR));
    assert_eq!(v.rmdir(&u, &r, b"/tmp/d/."), Err(Errno::EINVAL));
    assert_eq!(v.rmdir(&root(), &r, b"/"), Err(Errno::EBUSY));
    // Rename over an existing file replaces it.
    write_file(&v, &u, b"/tmp/g", b"2");
    v.rename(&u, &r, b"/tmp/d/f", &r, b"/tmp/g").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/g"), b"1");
    assert_eq!(v.stat(&u, &r, b"/tmp/d/f").err(), Some(Errno::ENOENT));
    assert_eq!(v.rename(&u, &r, b"/tmp/d", &r, b"/tmp/d/sub"), Err(Errno::EINVAL));
    assert_eq!(v.rename(&u, &r, b"/tmp/g", &r, b"/tmp/d"), Err(Errno::EISDIR));
    assert_eq!(v.rename(&u, &r, b"/tmp/d", &r, b"/tmp/g"), Err(Errno::ENOTDIR));
    v.rename(&u, &r, b"/tmp/d", &r, b"/tmp/d2").unwrap();
    v.rename(&u, &r, b"/tmp/g", &r, b"/tmp/g").unwrap();
    v.rmdir(&u, &r, b"/tmp/d2/").unwrap();
    assert_eq!(v.rename(&u, &r, b"/etc/motd", &r, b"/tmp/motd"), Err(Errno::EACCES));
    // Hard links.
    v.link(&u, &r, b"/tmp/g", &r, b"/tmp/h", false).unwrap();
    assert_eq!(v.stat(&u, &r, b"/tmp/h").unwrap().nlink, 2);
    assert_eq!(v.link(&u, &r, b"/tmp", &r, b"/tmp/t2", false), Err(Errno::EPERM));
    v.unlink(&u, &r, b"/tmp/g").unwrap();
    assert_eq!(read_file(&v, &u, b"/tmp/h"), b"1");
}

#[test]
fn sticky_tmp_chmod_chown() {
    let v = boot_vfs();
    let r = v.root();
    let alice = Credentials::user(1001, 100);
    let bob = Credentials::user(1002, 100);
    write_file(&v, &alice, b"/tmp/a", b"a");
    v.chmod(&alice, &v.lookup(&alice, &r, b"/tmp/a", false).unwrap(), 0o666).unwrap();
    assert_eq!(v.unlink(&bob, &r, b"/tmp/a"), Err(Errno::EPERM));
    assert_eq!(v.rename(&bob, &r, b"/tmp/a", &r, b"/tmp/b"), Err(Errno::EPERM));
    assert!(v.open(&bob, &r, b"/tmp/a", O_WRONLY, 0).is_ok());
    let loc = v.lookup(&bob, &r, b"/tmp/a", false).unwrap();
    assert_eq!(v.chmod(&bob, &loc, 0o777), Err(Errno::EPERM));
    assert_eq!(v.chown(&alice, &loc, Some(1002), None), Err(Errno::EPERM));
    assert_eq!(v.chown(&alice, &loc, None, None), Ok(()));
    v.chmod(&alice, &loc, 0o4755).unwrap();
    v.chown(&root(), &loc, Some(1002), Some(5)).unwrap();
    let st = v.stat(&bob, &r, b"/tmp/a").unwrap();
    assert_eq!((st.uid, st.gid, st.mode), (1002, 5, S_IFREG | 0o755)); // set-uid dropped
    v.unlink(&bob, &r, b"/tmp/a").unwrap();
    assert_eq!(
        v.mknod(&bob, &r, b"/tmp/null", S_IFCHR | 0o666, makedev(1, 3)).err(),
        Some(Errno::EPERM)
    );
    v.mknod(&bob, &r, b"/tmp/fifo", S_IFIFO | 0o600, 0).unwrap();
    // A FIFO: a writer needs a reader; every open shares one pipe.
    assert_eq!(v.open(&bob, &r, b"/tmp/fifo", O_WRONLY | O_NONBLOCK, 0).err(), Some(Errno::ENXIO));
    let rd = v.open(&bob, &r, b"/tmp/fifo", O_RDONLY | O_NONBLOCK, 0).unwrap();
    assert!(rd.fifo_waits_for_peer());
    let wr = v.open(&bob, &r, b"/tmp/fifo", O_WRONLY | O_NONBLOCK, 0).unwrap();
    assert!(!rd.fifo_waits_for_peer() && !wr.fifo_waits_for_peer());
    assert_eq!(wr.write(b"via fifo"), Ok(8));
    let mut buf = [0u8; 16];
    assert_eq!(rd.read(&mut buf), Ok(8));
    assert_eq!(&buf[..8], b"via fifo");
    assert_eq!(rd.stat().mode & S_IFMT, S_IFIFO);
    drop(wr);
    assert_eq!(rd.read(&mut buf), Ok(0));
}

#[test]
fn getdents64_paginates_across_small_buffers() {
    let v = boot_vfs();
    let r = v.root();
    v.mkdir(&root(), &r, b"/many", 0o755).unwrap();
    let mut expect: Vec<Vec<u8>> = vec![b".".to_vec(), b"..".to_vec()];
    for i in 0..50 {
        let name = alloc::format!("file-{i:03}");
        write_file(&v, &root(), alloc::format!("/many/{name}").as_bytes(), b"");
        expect.push(name.into_bytes());
    }
    let d = v.open(&root(), &r, b"/many", O_RDONLY | O_DIRECTORY, 0).unwrap();
    assert_eq!(d.getdents64(&mut [0u8; 20]), Err(Errno::EINVAL));
    let mut names = Vec::new();
    let mut buf = [0u8; 70]; // two 32-byte records at most
    loop {
        let n = d.getdents64(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(n <= 64);
        for rec in dirent::decode(&buf[..n]) {
            names.push(rec.name.to_vec());
        }
    }
    assert_eq!(names, expect);
    // The last record's d_off continues where we left off after a seek.
    d.lseek(0, SEEK_SET).unwrap();
    let n = d.getdents64(&mut buf).unwrap();
    let recs = dirent::decode(&buf[..n]);
    assert_eq!(recs[0].ino, d.stat().ino);
    assert_eq!(recs[1].ino, v.stat(&root(), &r, b"/").unwrap().ino);
    assert_eq!(recs[1].d_type, 4);
    d.lseek(recs[1].off, SEEK_SET).unwrap();
    let n = d.getdents64(&mut buf).unwrap();
    let recs = dirent::decode(&buf[..n]);
    assert_eq!((recs[0].name, recs[0].d_type), (&b"file-000"[..], 8));
    // Reading a directory as a file is EISDIR; getdents on a file ENOTDIR.
    assert_eq!(d.read(&mut buf), Err(Errno::EISDIR));
    let f = v.open(&root(), &r, b"/etc/motd", O_RDONLY, 0).unwrap();
    assert_eq!(f.getdents64(&mut buf), Err(Errno::ENOTDIR));
}

#[test]
fn mounts_cross_both_ways() {
    let v = boot_vfs();
    let r = v.root();
    v.mkdir(&root(), &r, b"/vmfs", 0o755).unwrap();
    v.mkdir(&root(), &r, b"/vmfs/volumes", 0o755).unwrap();
    v.mkdir(&root(), &r, b"/vmfs/volumes/ds1", 0o755).unwrap();
    write_file(&v, &root(), b"/vmfs/volumes/ds1/hidden", b"under");
    let ds = RamFs::new(clock());
    v.mount_at(b"/vmfs/volumes/ds1", ds, "datastore1", MountFlags::default()).unwrap();
    assert_eq!(v.stat(&root(), &r, b"/vmfs/volumes/ds1/hidden").err(), Some(Errno::ENOENT));
    write_file(&v, &root(), b"/vmfs/volumes/ds1/vm.vmx", b"config");
    let inside = v.chdir(&root(), &r, b"/vmfs/volumes/ds1").unwrap();
    assert_eq!(v.path_of(&inside).unwrap(), b"/vmfs/volumes/ds1");
    assert_eq!(
        read_all(&v.open(&root(), &inside, b"../ds1/vm.vmx", O_RDONLY, 0).unwrap()),
        b"config"
    );
    let up = v.chdir(&root(), &inside, b"..").unwrap();
    assert_eq!(v.path_of(&up).unwrap(), b"/vmfs/volumes");
    let st_in = v.stat(&root(), &r, b"/vmfs/volumes/ds1/vm.vmx").unwrap();
    let st_out = v.stat(&root(), &r, b"/etc/motd").unwrap();
    assert_ne!(st_in.dev, st_out.dev);
    assert_eq!(
        v.rename(&root(), &r, b"/vmfs/volumes/ds1/vm.vmx", &r, b"/tmp/vm.vmx"),
        Err(Errno::EXDEV)
    );
    assert_eq!(
        v.link(&root(), &r, b"/vmfs/volumes/ds1/vm.vmx", &r, b"/tmp/l", false),
        Err(Errno::EXDEV)
    );
    assert_eq!(v.rmdir(&root(), &r, b"/vmfs/volumes/ds1"), Err(Errno::EBUSY));
    let m = v.mounts();
    assert_eq!(m.len(), 2);
    assert_eq!(
        (m[1].path.as_slice(), m[1].fs_type.as_str(), m[1].source.as_str()),
        (&b"/vmfs/volumes/ds1"[..], "ramfs", "datastore1")
    );
    assert_eq!(m[0].path, b"/");
    // getdents `..` at a mount root is the mount point's parent.
    let d = v.open(&root(), &r, b"/vmfs/volumes/ds1", O_RDONLY, 0).unwrap();
    let mut buf = [0u8; 256];
    let n = d.getdents64(&mut buf).unwrap();
    let recs = dirent::decode(&buf[..n]);
    assert_eq!(recs[1].ino, v.stat(&root(), &r, b"/vmfs/volumes").unwrap().ino);
    assert_eq!(v.umount(&up), Err(Errno::EINVAL));
    v.umount(&inside).unwrap();
    assert_eq!(read_file(&v, &root(), b"/vmfs/volumes/ds1/hidden"), b"under");
}

#[test]
fn read_only_mounts() {
    let v = boot_vfs();
    let r = v.root();
    let ro = RamFs::new(clock());
    ro.root().create(b"f", NodeKind::File, NewAttr { perm: 0o666, uid: 0, gid: 0 }).unwrap();
    v.mount_at(b"/home", ro, "ro", MountFlags { read_only: true }).unwrap();
    assert_eq!(v.open(&root(), &r, b"/home/f", O_WRONLY, 0).err(), Some(Errno::EROFS));
    assert!(v.open(&root(), &r, b"/home/f", O_RDONLY, 0).is_ok());
    assert_eq!(
        v.open(&root(), &r, b"/home/g", O_WRONLY | O_CREAT, 0o644).err(),
        Some(Errno::EROFS)
    );
    assert_eq!(v.mkdir(&root(), &r, b"/home/d", 0o755).err(), Some(Errno::EROFS));
    assert_eq!(v.unlink(&root(), &r, b"/home/f"), Err(Errno::EROFS));
    assert_eq!(v.access(&root(), &r, b"/home/f", W_OK), Err(Errno::EROFS));
    assert!(v.mounts()[1].read_only);
}

#[test]
fn pipes_through_open_files() {
    let (r, w) = OpenFile::pipe(O_CLOEXEC);
    assert!(r.cloexec());
    assert_eq!(w.write(b"abc"), Ok(3));
    assert_eq!(r.lseek(0, SEEK_SET), Err(Errno::ESPIPE));
    assert_eq!(w.read(&mut [0; 1]), Err(Errno::EBADF));
    let mut b = [0u8; 4];
    assert_eq!(r.read(&mut b), Ok(3));
    assert_eq!(r.read(&mut b), Err(Errno::EAGAIN));
    assert!(!r.is_nonblocking());
    assert_eq!(r.stat().mode & S_IFMT, S_IFIFO);
    assert_eq!(r.stat().ino, w.stat().ino);
    drop(w);
    assert_eq!(r.read(&mut b), Ok(0));
    assert!(r.poll().contains(PollEvents::HUP));
}

#[test]
fn running_executable_refuses_write_opens() {
    let v = boot_vfs();
    let r = v.root();
    write_file(&v, &root(), b"/tmp/prog", b"\x7fELF");
    v.chmod(&root(), &v.lookup(&root(), &r, b"/tmp/prog", false).unwrap(), 0o755).unwrap();
    let exe = v.open_exec(&root(), &r, b"/tmp/prog").unwrap();
    let running = v.deny_write(&exe);
    assert_eq!(v.open(&root(), &r, b"/tmp/prog", O_WRONLY, 0).err(), Some(Errno::ETXTBSY));
    assert_eq!(v.open(&root(), &r, b"/tmp/prog", O_RDWR, 0).err(), Some(Errno::ETXTBSY));
    assert_eq!(v.open(&root(), &r, b"/tmp/prog", O_RDONLY | O_TRUNC, 0).err(), Some(Errno::ETXTBSY));
    assert!(v.open(&root(), &r, b"/tmp/prog", O_RDONLY, 0).is_ok());
    let second = v.deny_write(&exe);
    drop(running);
    assert_eq!(v.open(&root(), &r, b"/tmp/prog", O_WRONLY, 0).err(), Some(Errno::ETXTBSY));
    drop(second);
    assert!(v.open(&root(), &r, b"/tmp/prog", O_WRONLY, 0).is_ok());
}
