//! Files and directories: open flags, offsets, stat, directory listing, links.

use crate::harness::*;
use libc::{O_APPEND, O_CLOEXEC, O_CREAT, O_DIRECTORY, O_EXCL, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Creates `p` with `data` through raw calls.
fn put(p: &Path, data: &[u8]) -> CheckResult {
    let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        .map_err(|e| format!("open {}: {}", p.display(), errno_name(e)))?;
    let n = ok("write", write_fd(&fd, data))?;
    expect_eq("bytes written", n, data.len() as i64)
}

/// Reads the whole file at `p` through raw calls.
fn get(p: &Path) -> Result<Vec<u8>, String> {
    let fd = open(p, O_RDONLY, 0).map_err(|e| format!("open {}: {}", p.display(), errno_name(e)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = ok("read", read_fd(&fd, &mut buf))? as usize;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

fn own_fd(fd: i32) -> OwnedFd {
    // SAFETY: callers pass descriptors the kernel just returned (dup, creat, fcntl) that
    // nothing else owns.
    // SAFETY: the fd was just returned by a successful open and is owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Calls `f` with `p` as a C string; closures passed here rely on that pointer being
/// a valid NUL-terminated path for the duration of the call.
fn path_call(p: &Path, f: impl FnOnce(*const libc::c_char) -> i32) -> Result<i64, i32> {
    let c = cpath(p);
    sys(f(c.as_ptr()))
}

pub fn run(r: &mut Runner, dir: &Path) {
    let d = dir.to_path_buf();

    r.check("open_missing_enoent", || {
        expect_errno("open", open(&d.join("missing"), O_RDONLY, 0).map(|_| 0), libc::ENOENT)?;
        expect_errno(
            "open O_CREAT in missing dir",
            open(&d.join("nodir/x"), O_WRONLY | O_CREAT, 0o644).map(|_| 0),
            libc::ENOENT,
        )
    });

    r.check("creat_write_read_eof", || {
        let p = d.join("creat");
        let c = cpath(&p);
        // SAFETY: valid path string.
        let fd = ok("creat", sys(unsafe { libc::creat(c.as_ptr(), 0o644) }))?;
        let fd = own_fd(fd as i32);
        expect_eq("write", write_fd(&fd, b"hello"), Ok(5))?;
        let mut b = [0u8; 1];
        expect_errno("read on O_WRONLY (creat) fd", read_fd(&fd, &mut b), libc::EBADF)?;
        drop(fd);
        let fd = open(&p, O_RDONLY, 0).map_err(|e| format!("reopen: {}", errno_name(e)))?;
        let mut buf = [0u8; 16];
        expect_eq("read", read_fd(&fd, &mut buf), Ok(5))?;
        expect_eq("data", &buf[..5], b"hello")?;
        expect_eq("read at EOF", read_fd(&fd, &mut buf), Ok(0))?;
        expect_errno("write on O_RDONLY fd", write_fd(&fd, b"x"), libc::EBADF)
    });

    r.check("open_excl_eexist", || {
        let p = d.join("excl");
        ok("first O_EXCL create", open(&p, O_WRONLY | O_CREAT | O_EXCL, 0o644).map(|_| 0))?;
        expect_errno("second O_EXCL create", open(&p, O_WRONLY | O_CREAT | O_EXCL, 0o644).map(|_| 0), libc::EEXIST)
    });

    r.check("open_trunc", || {
        let p = d.join("trunc");
        put(&p, b"0123456789")?;
        let fd = open(&p, O_WRONLY | O_TRUNC, 0).map_err(|e| errno_name(e).to_string())?;
        expect_eq("size after O_TRUNC", fstat(&fd).map(|s| s.st_size), Ok(0))?;
        expect_eq("content", get(&p)?, vec![])
    });

    r.check("open_append", || {
        let p = d.join("append");
        put(&p, b"abc")?;
        let fd = open(&p, O_WRONLY | O_APPEND, 0).map_err(|e| errno_name(e).to_string())?;
        ok("lseek", lseek(&fd, 0, libc::SEEK_SET))?;
        expect_eq("write", write_fd(&fd, b"def"), Ok(3))?;
        expect_eq("offset after append", lseek(&fd, 0, libc::SEEK_CUR), Ok(6))?;
        expect_eq("content", get(&p)?, b"abcdef".to_vec())
    });

    r.check("lseek_set_cur_end", || {
        let p = d.join("seek");
        let data: Vec<u8> = (0..100u8).collect();
        put(&p, &data)?;
        let fd = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        expect_eq("SEEK_SET 10", lseek(&fd, 10, libc::SEEK_SET), Ok(10))?;
        expect_eq("SEEK_CUR +5", lseek(&fd, 5, libc::SEEK_CUR), Ok(15))?;
        expect_eq("SEEK_END -10", lseek(&fd, -10, libc::SEEK_END), Ok(90))?;
        let mut buf = [0u8; 32];
        expect_eq("read at 90", read_fd(&fd, &mut buf), Ok(10))?;
        expect_eq("bytes at 90", &buf[..10], &data[90..])?;
        expect_errno("SEEK_SET -1", lseek(&fd, -1, libc::SEEK_SET), libc::EINVAL)?;
        expect_errno("bad whence", lseek(&fd, 0, 77), libc::EINVAL)
    });

    r.check("lseek_past_end_makes_hole", || {
        let p = d.join("hole");
        put(&p, b"ab")?;
        let fd = open(&p, O_RDWR, 0).map_err(|e| errno_name(e).to_string())?;
        expect_eq("seek", lseek(&fd, 1000, libc::SEEK_SET), Ok(1000))?;
        expect_eq("write", write_fd(&fd, b"z"), Ok(1))?;
        expect_eq("size", fstat(&fd).map(|s| s.st_size), Ok(1001))?;
        let all = get(&p)?;
        ensure!(all[2..1000].iter().all(|&b| b == 0), "hole is not zero-filled");
        expect_eq("last byte", all[1000], b'z')
    });

    r.check("lseek_pipe_espipe", || {
        let (rd, wr) = pipe();
        expect_errno("lseek on pipe read end", lseek(&rd, 0, libc::SEEK_CUR), libc::ESPIPE)?;
        expect_errno("lseek on pipe write end", lseek(&wr, 0, libc::SEEK_SET), libc::ESPIPE)
    });

    r.check("pread_pwrite_keep_offset", || {
        let p = d.join("pread");
        put(&p, b"0123456789")?;
        let fd = open(&p, O_RDWR, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: buffers valid for the given lengths.
        let w = sys_size(unsafe { libc::pwrite(fd.as_raw_fd(), b"XY".as_ptr().cast(), 2, 4) });
        expect_eq("pwrite", w, Ok(2))?;
        expect_eq("offset after pwrite", lseek(&fd, 0, libc::SEEK_CUR), Ok(0))?;
        let mut buf = [0u8; 4];
        // SAFETY: as above.
        let n = sys_size(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 4, 3) });
        expect_eq("pread", n, Ok(4))?;
        expect_eq("pread data", &buf, b"3XY6")?;
        expect_eq("offset after pread", lseek(&fd, 0, libc::SEEK_CUR), Ok(0))?;
        let (rd, _wr) = pipe();
        // SAFETY: as above.
        let e = sys_size(unsafe { libc::pread(rd.as_raw_fd(), buf.as_mut_ptr().cast(), 1, 0) });
        expect_errno("pread on pipe", e, libc::ESPIPE)
    });

    r.check("fstat_fields", || {
        let p = d.join("statme");
        let fd = open(&p, O_WRONLY | O_CREAT | O_EXCL, 0o640).map_err(|e| errno_name(e).to_string())?;
        write_fd(&fd, &[7u8; 1234]).map_err(|e| errno_name(e).to_string())?;
        let st = fstat(&fd).map_err(|e| errno_name(e).to_string())?;
        expect_eq("S_IFREG", st.st_mode & libc::S_IFMT, libc::S_IFREG)?;
        expect_eq("permission bits", st.st_mode & 0o7777, 0o640)?;
        expect_eq("st_size", st.st_size, 1234)?;
        expect_eq("st_nlink", st.st_nlink, 1)?;
        // SAFETY: getuid has no preconditions.
        expect_eq("st_uid", st.st_uid, unsafe { libc::geteuid() })?;
        let by_path = stat_path(&p, true).map_err(|e| errno_name(e).to_string())?;
        expect_eq("stat st_ino == fstat st_ino", by_path.st_ino, st.st_ino)?;
        expect_eq("stat size", by_path.st_size, 1234)
    });

    r.check("stat_lstat_symlink", || {
        let target = d.join("lnk_target");
        put(&target, b"twelve bytes")?;
        let link = d.join("lnk");
        std::os::unix::fs::symlink("lnk_target", &link).map_err(|e| e.to_string())?;
        let l = stat_path(&link, false).map_err(|e| errno_name(e).to_string())?;
        expect_eq("lstat S_IFLNK", l.st_mode & libc::S_IFMT, libc::S_IFLNK)?;
        expect_eq("lstat size = target name length", l.st_size, "lnk_target".len() as i64)?;
        let s = stat_path(&link, true).map_err(|e| errno_name(e).to_string())?;
        expect_eq("stat follows: S_IFREG", s.st_mode & libc::S_IFMT, libc::S_IFREG)?;
        expect_eq("stat follows: size", s.st_size, 12)?;
        expect_errno("stat missing", stat_path(&d.join("nope"), true).map(|_| 0), libc::ENOENT)
    });

    r.check("link_nlink", || {
        let a = d.join("hl_a");
        let b = d.join("hl_b");
        put(&a, b"x")?;
        let (ca, cb) = (cpath(&a), cpath(&b));
        // SAFETY: valid path strings.
        ok("link", sys(unsafe { libc::link(ca.as_ptr(), cb.as_ptr()) }))?;
        let sa = stat_path(&a, true).map_err(|e| errno_name(e).to_string())?;
        let sb = stat_path(&b, true).map_err(|e| errno_name(e).to_string())?;
        expect_eq("nlink after link", sa.st_nlink, 2)?;
        expect_eq("same inode", sa.st_ino, sb.st_ino)?;
        fs::remove_file(&b).map_err(|e| e.to_string())?;
        expect_eq("nlink after unlink", stat_path(&a, true).map(|s| s.st_nlink), Ok(1))
    });

    r.check("read_dir_lists_entries", || {
        let sub = d.join("listing");
        fs::create_dir(&sub).map_err(|e| e.to_string())?;
        for n in ["c", "a", "b"] {
            put(&sub.join(n), n.as_bytes())?;
        }
        fs::create_dir(sub.join("dir")).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for e in fs::read_dir(&sub).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let ft = e.file_type().map_err(|e| e.to_string())?;
            let name = e.file_name().into_string().unwrap_or_default();
            ensure!(ft.is_dir() == (name == "dir"), "wrong file type for {name}");
            names.push(name);
        }
        names.sort();
        expect_eq("names", names, vec!["a".to_string(), "b".into(), "c".into(), "dir".into()])
    });

    r.check("getdents64_raw", || {
        let sub = d.join("dents");
        fs::create_dir(&sub).map_err(|e| e.to_string())?;
        put(&sub.join("f1"), b"1")?;
        fs::create_dir(sub.join("sub")).map_err(|e| e.to_string())?;
        let fd = open(&sub, O_RDONLY | O_DIRECTORY, 0).map_err(|e| errno_name(e).to_string())?;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: `buf` is writable for its full length.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, fd.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
            let n = ok("getdents64", sys(n))? as usize;
            if n == 0 {
                break;
            }
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name NUL-terminated.
            let mut pos = 0;
            while pos < n {
                let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
                ensure!(reclen >= 20 && pos + reclen <= n, "bad d_reclen {reclen}");
                let dtype = buf[pos + 18];
                let name_bytes = &buf[pos + 19..pos + reclen];
                let end = name_bytes.iter().position(|&b| b == 0).ok_or("name not NUL-terminated")?;
                seen.push((String::from_utf8_lossy(&name_bytes[..end]).into_owned(), dtype));
                pos += reclen;
            }
        }
        seen.sort();
        let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
        expect_eq("names", names, vec![".", "..", "f1", "sub"])?;
        for (name, t) in &seen {
            let want = if name == "f1" { libc::DT_REG } else { libc::DT_DIR };
            ensure!(*t == want || *t == libc::DT_UNKNOWN, "d_type of {name} is {t}, want {want}");
        }
        let file = open(&sub.join("f1"), O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: as above.
        let e = unsafe { libc::syscall(libc::SYS_getdents64, file.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        expect_errno("getdents64 on a regular file", sys(e), libc::ENOTDIR)
    });

    r.check("unlink", || {
        let p = d.join("unlinkme");
        put(&p, b"x")?;
        // SAFETY: path_call supplies a valid path string.
        let unlink = |p: &Path| path_call(p, |c| unsafe { libc::unlink(c) });
        ok("unlink", unlink(&p))?;
        expect_errno("open after unlink", open(&p, O_RDONLY, 0).map(|_| 0), libc::ENOENT)?;
        expect_errno("second unlink", unlink(&p), libc::ENOENT)?;
        let dd = d.join("unlink_dir");
        fs::create_dir(&dd).map_err(|e| e.to_string())?;
        expect_errno("unlink a directory", unlink(&dd), libc::EISDIR)
    });

    r.check("unlink_open_file_stays_readable", || {
        let p = d.join("ghost");
        put(&p, b"still here")?;
        let fd = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        fs::remove_file(&p).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 32];
        expect_eq("read after unlink", read_fd(&fd, &mut buf), Ok(10))?;
        expect_eq("nlink", fstat(&fd).map(|s| s.st_nlink), Ok(0))
    });

    r.check("mkdir_rmdir", || {
        let p = d.join("newdir");
        // SAFETY: path_call supplies a valid path string.
        let mk = |p: &Path| path_call(p, |c| unsafe { libc::mkdir(c, 0o755) });
        // SAFETY: path_call supplies a valid path string.
        let rm = |p: &Path| path_call(p, |c| unsafe { libc::rmdir(c) });
        ok("mkdir", mk(&p))?;
        let st = stat_path(&p, true).map_err(|e| errno_name(e).to_string())?;
        expect_eq("S_IFDIR", st.st_mode & libc::S_IFMT, libc::S_IFDIR)?;
        expect_errno("mkdir existing", mk(&p), libc::EEXIST)?;
        ok("rmdir", rm(&p))?;
        expect_errno("stat after rmdir", stat_path(&p, true).map(|_| 0), libc::ENOENT)?;
        expect_errno("rmdir missing", rm(&p), libc::ENOENT)
    });

    r.check("rmdir_nonempty_enotempty", || {
        let p = d.join("full");
        fs::create_dir(&p).map_err(|e| e.to_string())?;
        put(&p.join("x"), b"x")?;
        // SAFETY: path_call supplies a valid path string.
        let rm = |p: &Path| path_call(p, |c| unsafe { libc::rmdir(c) });
        expect_errno("rmdir non-empty", rm(&p), libc::ENOTEMPTY)?;
        expect_errno("rmdir a file", rm(&p.join("x")), libc::ENOTDIR)
    });

    r.check("rename_over_existing", || {
        let a = d.join("ren_a");
        let b = d.join("ren_b");
        put(&a, b"AAA")?;
        put(&b, b"B")?;
        let ino = stat_path(&a, true).map_err(|e| errno_name(e).to_string())?.st_ino;
        let (ca, cb) = (cpath(&a), cpath(&b));
        // SAFETY: valid path strings.
        ok("rename", sys(unsafe { libc::rename(ca.as_ptr(), cb.as_ptr()) }))?;
        expect_eq("new content", get(&b)?, b"AAA".to_vec())?;
        expect_eq("inode kept", stat_path(&b, true).map(|s| s.st_ino), Ok(ino))?;
        expect_errno("old name", stat_path(&a, true).map(|_| 0), libc::ENOENT)?;
        // SAFETY: as above.
        expect_errno("rename missing", sys(unsafe { libc::rename(ca.as_ptr(), cb.as_ptr()) }), libc::ENOENT)
    });

    r.check("rename_directory", || {
        let a = d.join("rdir_a");
        fs::create_dir(&a).map_err(|e| e.to_string())?;
        put(&a.join("inner"), b"in")?;
        let b = d.join("rdir_b");
        fs::rename(&a, &b).map_err(|e| e.to_string())?;
        expect_eq("moved content", get(&b.join("inner"))?, b"in".to_vec())?;
        ensure!(!a.exists(), "old directory still exists");
        Ok(())
    });

    r.check("symlink_readlink", || {
        let link = d.join("sl");
        put(&d.join("sl_target"), b"via link")?;
        let (ct, cl) = (std::ffi::CString::new("sl_target").unwrap(), cpath(&link));
        // SAFETY: valid path strings.
        ok("symlink", sys(unsafe { libc::symlink(ct.as_ptr(), cl.as_ptr()) }))?;
        // SAFETY: as above.
        expect_errno("symlink over existing", sys(unsafe { libc::symlink(ct.as_ptr(), cl.as_ptr()) }), libc::EEXIST)?;
        let mut buf = [0u8; 64];
        // SAFETY: `buf` is writable for its length.
        let n = sys_size(unsafe { libc::readlink(cl.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) });
        expect_eq("readlink length", n, Ok(9))?;
        expect_eq("readlink target", &buf[..9], b"sl_target")?;
        expect_eq("open through link", get(&link)?, b"via link".to_vec())?;
        let cf = cpath(&d.join("sl_target"));
        // SAFETY: as above.
        let e = sys_size(unsafe { libc::readlink(cf.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) });
        expect_errno("readlink on a regular file", e, libc::EINVAL)
    });

    r.check("ftruncate", || {
        let p = d.join("ftrunc");
        put(&p, b"abcdefgh")?;
        let fd = open(&p, O_RDWR, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: plain integer arguments.
        ok("shrink", sys(unsafe { libc::ftruncate(fd.as_raw_fd(), 3) }))?;
        expect_eq("after shrink", get(&p)?, b"abc".to_vec())?;
        // SAFETY: as above.
        ok("grow", sys(unsafe { libc::ftruncate(fd.as_raw_fd(), 6) }))?;
        expect_eq("after grow", get(&p)?, b"abc\0\0\0".to_vec())?;
        let ro = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: as above.
        expect_errno("ftruncate on O_RDONLY", sys(unsafe { libc::ftruncate(ro.as_raw_fd(), 0) }), libc::EINVAL)
    });

    r.check("dup_shares_offset", || {
        let p = d.join("dup");
        put(&p, b"0123456789")?;
        let fd = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: plain integer argument.
        let d2 = ok("dup", sys(unsafe { libc::dup(fd.as_raw_fd()) }))? as i32;
        let d2 = own_fd(d2);
        ensure!(d2.as_raw_fd() != fd.as_raw_fd(), "dup returned the same number");
        let mut buf = [0u8; 4];
        read_fd(&fd, &mut buf).map_err(|e| errno_name(e).to_string())?;
        expect_eq("offset seen through dup", lseek(&d2, 0, libc::SEEK_CUR), Ok(4))?;
        expect_eq("read through dup", read_fd(&d2, &mut buf), Ok(4))?;
        expect_eq("data through dup", &buf, b"4567")
    });

    r.check("dup2_target_fd", || {
        let p = d.join("dup2");
        let fd = open(&p, O_RDWR | O_CREAT, 0o644).map_err(|e| errno_name(e).to_string())?;
        let other = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        let target = 100;
        // SAFETY: integer arguments; fd 100 is unused by this program.
        expect_eq("dup2", sys(unsafe { libc::dup2(fd.as_raw_fd(), target) }), Ok(target as i64))?;
        let t = own_fd(target);
        expect_eq("write via dup2 fd", write_fd(&t, b"hi"), Ok(2))?;
        expect_eq("content", get(&p)?, b"hi".to_vec())?;
        // dup2 onto an open descriptor closes it silently first.
        // SAFETY: as above.
        expect_eq("dup2 onto open fd", sys(unsafe { libc::dup2(other.as_raw_fd(), target) }), Ok(target as i64))?;
        expect_eq("now refers to the read-only file", write_fd(&t, b"x"), Err(libc::EBADF))?;
        // SAFETY: as above.
        expect_eq("dup2(fd, fd)", sys(unsafe { libc::dup2(fd.as_raw_fd(), fd.as_raw_fd()) }), Ok(fd.as_raw_fd() as i64))?;
        // SAFETY: as above; fd 4000 is not open.
        expect_errno("dup2 from closed fd", sys(unsafe { libc::dup2(4000, 101) }), libc::EBADF)
    });

    r.check("fcntl_cloexec", || {
        let p = d.join("cloexec");
        put(&p, b"")?;
        let fd = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: F_GETFD only queries the descriptor table.
        let getfd = |f: i32| sys(unsafe { libc::fcntl(f, libc::F_GETFD) });
        expect_eq("F_GETFD without O_CLOEXEC", getfd(fd.as_raw_fd()), Ok(0))?;
        // SAFETY: integer arguments.
        ok("F_SETFD", sys(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) }))?;
        expect_eq("F_GETFD after F_SETFD", getfd(fd.as_raw_fd()), Ok(libc::FD_CLOEXEC as i64))?;
        let ce = open(&p, O_RDONLY | O_CLOEXEC, 0).map_err(|e| errno_name(e).to_string())?;
        expect_eq("F_GETFD with O_CLOEXEC", getfd(ce.as_raw_fd()), Ok(libc::FD_CLOEXEC as i64))?;
        // SAFETY: as above.
        let dupd = own_fd(ok("dup", sys(unsafe { libc::dup(ce.as_raw_fd()) }))? as i32);
        expect_eq("dup clears FD_CLOEXEC", getfd(dupd.as_raw_fd()), Ok(0))?;
        // SAFETY: as above.
        let hi = ok("F_DUPFD_CLOEXEC", sys(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 50) }))?;
        let hi = own_fd(hi as i32);
        ensure!(hi.as_raw_fd() >= 50, "F_DUPFD_CLOEXEC returned {} < 50", hi.as_raw_fd());
        expect_eq("F_DUPFD_CLOEXEC flag", getfd(hi.as_raw_fd()), Ok(libc::FD_CLOEXEC as i64))
    });

    r.check("fcntl_getfl_setfl", || {
        let p = d.join("getfl");
        let fd = open(&p, O_RDWR | O_CREAT | O_APPEND, 0o644).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: integer arguments.
        let fl = ok("F_GETFL", sys(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }))? as i32;
        expect_eq("access mode", fl & libc::O_ACCMODE, O_RDWR)?;
        ensure!(fl & O_APPEND != 0, "O_APPEND missing from F_GETFL {fl:#o}");
        ensure!(fl & libc::O_NONBLOCK == 0, "O_NONBLOCK set unexpectedly");
        // SAFETY: as above.
        ok("F_SETFL", sys(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) }))?;
        // SAFETY: as above.
        let fl2 = ok("F_GETFL", sys(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) }))? as i32;
        ensure!(fl2 & libc::O_NONBLOCK != 0, "O_NONBLOCK not set by F_SETFL");
        let ro = open(&p, O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: as above.
        let flr = ok("F_GETFL", sys(unsafe { libc::fcntl(ro.as_raw_fd(), libc::F_GETFL) }))? as i32;
        expect_eq("O_RDONLY access mode", flr & libc::O_ACCMODE, O_RDONLY)
    });

    r.check("access", || {
        let p = d.join("acc");
        put(&p, b"")?;
        // SAFETY: path_call supplies a valid path string.
        let acc = |p: &Path, m: i32| path_call(p, |c| unsafe { libc::access(c, m) });
        expect_eq("F_OK existing", acc(&p, libc::F_OK), Ok(0))?;
        expect_eq("R_OK", acc(&p, libc::R_OK), Ok(0))?;
        // No execute bit at all: denied even to root.
        expect_errno("X_OK on 0644 file", acc(&p, libc::X_OK), libc::EACCES)?;
        expect_errno("F_OK missing", acc(&d.join("nope"), libc::F_OK), libc::ENOENT)?;
        expect_errno("bad mode", acc(&p, 0o100), libc::EINVAL)
    });

    r.check("open_dir_errors", || {
        expect_errno("open dir O_WRONLY", open(&d, O_WRONLY, 0).map(|_| 0), libc::EISDIR)?;
        let f = d.join("notadir");
        put(&f, b"")?;
        expect_errno("O_DIRECTORY on a file", open(&f, O_RDONLY | O_DIRECTORY, 0).map(|_| 0), libc::ENOTDIR)?;
        expect_errno("path through a file", open(&f.join("x"), O_RDONLY, 0).map(|_| 0), libc::ENOTDIR)?;
        let fd = open(&d, O_RDONLY | O_DIRECTORY, 0).map_err(|e| errno_name(e).to_string())?;
        let mut b = [0u8; 8];
        expect_errno("read on a directory", read_fd(&fd, &mut b), libc::EISDIR)
    });

    r.check("chdir_getcwd_relative_open", || {
        let old = std::env::current_dir().map_err(|e| e.to_string())?;
        let sub = d.join("cwd");
        fs::create_dir(&sub).map_err(|e| e.to_string())?;
        put(&sub.join("rel"), b"relative")?;
        let want = fs::canonicalize(&sub).map_err(|e| e.to_string())?;
        let res = (|| {
            let cs = cpath(&sub);
            // SAFETY: valid path string.
            ok("chdir", sys(unsafe { libc::chdir(cs.as_ptr()) }))?;
            let mut buf = [0u8; 4096];
            // SAFETY: `buf` is writable for its length.
            let p = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
            ensure!(!p.is_null(), "getcwd failed: {}", errno_name(errno()));
            let len = buf.iter().position(|&b| b == 0).unwrap_or(0);
            expect_eq("getcwd", std::str::from_utf8(&buf[..len]).ok(), want.to_str())?;
            expect_eq("relative open", get(Path::new("rel"))?, b"relative".to_vec())
        })();
        std::env::set_current_dir(&old).map_err(|e| e.to_string())?;
        res
    });
}
