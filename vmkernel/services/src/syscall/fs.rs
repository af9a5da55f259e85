//! File-system and I/O calls.

use alloc::sync::Arc;
use alloc::vec::Vec;
use vmkernel::linux_abi::errno::*;
use vmkernel::linux_abi::flags::fcntl::*;
use vmkernel::vfs::{Backing, Errno, Location, OpenFile, PollEvents, Timespec, UserMemory};

use super::{Ctx, ERESTARTSYS, SysResult, err, neg};
use crate::uw::files;
use crate::uw::io_wait::{self, Woken};
use crate::uw::process::Process;
use crate::time;

const PATH_MAX: usize = 4096;

/// The caller's memory for ioctls that take pointers.
pub struct UserMem<'a>(pub &'a Process);

impl UserMemory for UserMem<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> vmkernel::vfs::Result<()> {
        self.0.copy_from_user(addr, buf).map_err(|_| Errno::EFAULT)
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> vmkernel::vfs::Result<()> {
        self.0.copy_to_user(addr, data).map_err(|_| Errno::EFAULT)
    }
}

pub fn path(p: &Process, addr: u64) -> Result<Vec<u8>, i64> {
    if addr == 0 {
        return Err(neg(EFAULT));
    }
    p.read_cstr(addr, PATH_MAX)
}

fn vfs() -> Result<&'static vmkernel::vfs::Vfs, i64> {
    files::vfs().ok_or(neg(ENOENT))
}

pub fn cwd(p: &Process) -> Result<Location, i64> {
    Ok(p.cwd.lock().clone().unwrap_or(vfs()?.root()))
}

/// The directory `dirfd` names for an *at call (AT_FDCWD: the cwd).
fn base(p: &Process, dirfd: u64) -> Result<Location, i64> {
    let fd = dirfd as i32;
    if fd == AT_FDCWD {
        return cwd(p);
    }
    let f = p.fds.lock().get(fd).map_err(err)?;
    let loc = f.location().cloned().ok_or(neg(ENOTDIR))?;
    if !loc.inode.metadata().is_dir() {
        return Err(neg(ENOTDIR));
    }
    Ok(loc)
}

pub fn file(p: &Process, fd: u64) -> Result<Arc<OpenFile>, i64> {
    p.fds.lock().get(fd as i32).map_err(err)
}

fn wakes_others(f: &OpenFile) -> bool {
    !matches!(f.backing(), Backing::Inode(_))
}

/// Runs `op` until it stops saying EAGAIN (unless O_NONBLOCK), waiting for
/// I/O events in between; a signal interrupts the wait.
fn blocking<T>(f: &OpenFile, mut op: impl FnMut() -> vmkernel::vfs::Result<T>) -> Result<T, i64> {
    blocking_waking(f, || op().map(|v| (v, wakes_others(f))))
}

/// [`blocking`] for an `op` that says itself whether it may have made
/// something ready others wait for (a pipe's read only frees room a writer
/// waits for when the pipe was full).
fn blocking_waking<T>(f: &OpenFile, mut op: impl FnMut() -> vmkernel::vfs::Result<(T, bool)>) -> Result<T, i64> {
    loop {
        let seen = io_wait::generation();
        match op() {
            Err(Errno::EAGAIN) if !f.is_nonblocking() => match io_wait::wait(seen, None) {
                Woken::Signal => return Err(ERESTARTSYS),
                _ => continue,
            },
            Ok((v, wake)) => {
                if wake {
                    io_wait::notify();
                }
                return Ok(v);
            }
            Err(e) => return Err(err(e)),
        }
    }
}

fn epipe(cx: &Ctx, e: i64) -> i64 {
    if e == neg(EPIPE) {
        crate::uw::signal::send_to_thread(&cx.t, 13, None);
    }
    e
}

const MAX_IO: usize = 1 << 20;
/// Reads and writes up to this size go through a buffer on the kernel
/// stack instead of the heap (pipes and terminals mostly move a few bytes).
const SMALL_IO: usize = 512;
/// The smallest stack buffer.
const TINY_IO: usize = 64;

/// Runs `f` on a kernel buffer of `len` bytes (at most `MAX_IO`): on the
/// stack up to `SMALL_IO`, else zeroed on the heap.
fn with_io_buffer(len: u64, f: impl FnOnce(&mut [u8]) -> SysResult) -> SysResult {
    let len = (len as usize).min(MAX_IO);
    if len <= TINY_IO {
        // The few bytes of a pipe or terminal message: zeroing even the
        // small buffer would cost more than the copy.
        return f(&mut [0u8; TINY_IO][..len]);
    }
    let mut small = [0u8; SMALL_IO];
    let mut heap;
    let data: &mut [u8] = if len <= SMALL_IO {
        &mut small[..len]
    } else {
        heap = super::zeroed_buffer(len)?;
        &mut heap
    };
    f(data)
}

/// Job control on the console: a process of a background group of the
/// session the console controls stops with SIGTTIN when it reads (EIO if
/// it ignores or blocks SIGTTIN) and, when TOSTOP is set, with SIGTTOU
/// when it writes (the write goes ahead if it ignores or blocks SIGTTOU).
fn background_tty_access(cx: &Ctx, f: &OpenFile, write: bool) -> Result<(), i64> {
    use core::sync::atomic::Ordering;
    use vmkernel::linux_abi::signal::{SIG_IGN, SIGTTIN, SIGTTOU};
    if !matches!(f.backing(), Backing::Device { .. }) || !is_console(f) {
        return Ok(());
    }
    let Some(tty) = files::console_tty() else { return Ok(()) };
    let (session, fg) = (tty.session(), tty.foreground_pgrp());
    let pgrp = cx.p.pgid.load(Ordering::Relaxed);
    if session == 0 || session != cx.p.sid.load(Ordering::Relaxed) || fg == 0 || fg == pgrp {
        return Ok(());
    }
    let sig = if write {
        if tty.termios().lflag & vmkernel::vfs::tty::termios::TOSTOP == 0 {
            return Ok(());
        }
        SIGTTOU
    } else {
        SIGTTIN
    };
    let blocked = cx.t.sigmask.load(Ordering::Relaxed) & (1 << (sig - 1)) != 0;
    if blocked || cx.p.sig.lock().get(sig).handler == SIG_IGN {
        return if write { Ok(()) } else { Err(neg(EIO)) };
    }
    crate::uw::signal::send_to_group(pgrp, sig);
    Err(ERESTARTSYS)
}

fn read(cx: &Ctx, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = file(&cx.p, fd)?;
    background_tty_access(cx, &f, false)?;
    with_io_buffer(len, |data| {
        let n = blocking_waking(&f, || f.read_waking(data))?;
        cx.p.copy_to_user(buf, &data[..n])?;
        Ok(n as i64)
    })
}

fn write(cx: &Ctx, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = file(&cx.p, fd)?;
    background_tty_access(cx, &f, true)?;
    if let Some(id) = super::net::socket_of(&f) {
        // Copies only what the socket can take now (SIGPIPE as write's).
        return super::net::send_from_user(cx, &f, id, buf, len, 0, None);
    }
    with_io_buffer(len, |data| {
        cx.p.copy_from_user(buf, data)?;
        blocking(&f, || f.write(data)).map(|n| n as i64).map_err(|e| epipe(cx, e))
    })
}

fn iovecs(p: &Process, iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, i64> {
    if cnt > 1024 {
        return Err(neg(EINVAL));
    }
    let mut b = super::zeroed_buffer(cnt as usize * 16)?;
    p.copy_from_user(iov, &mut b)?;
    Ok(b.chunks(16).map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap()), u64::from_le_bytes(c[8..].try_into().unwrap()))).collect())
}

fn readv(cx: &Ctx, fd: u64, iov: u64, cnt: u64) -> SysResult {
    let v = iovecs(&cx.p, iov, cnt)?;
    let total: u64 = v.iter().map(|x| x.1).sum();
    let f = file(&cx.p, fd)?;
    background_tty_access(cx, &f, false)?;
    let mut data = super::zeroed_buffer((total as usize).min(MAX_IO))?;
    let n = blocking(&f, || f.read(&mut data))?;
    let mut off = 0;
    for (base, len) in v {
        if off >= n {
            break;
        }
        let k = (len as usize).min(n - off);
        cx.p.copy_to_user(base, &data[off..off + k])?;
        off += k;
    }
    Ok(n as i64)
}

fn writev(cx: &Ctx, fd: u64, iov: u64, cnt: u64) -> SysResult {
    let v = iovecs(&cx.p, iov, cnt)?;
    let mut data = Vec::new();
    for (base, len) in v {
        let start = data.len();
        data.resize(start + (len as usize).min(MAX_IO), 0);
        cx.p.copy_from_user(base, &mut data[start..])?;
    }
    let f = file(&cx.p, fd)?;
    background_tty_access(cx, &f, true)?;
    blocking(&f, || f.write(&data)).map(|n| n as i64).map_err(|e| epipe(cx, e))
}

fn openat(cx: &Ctx, dirfd: u64, pathp: u64, flags: u64, mode: u64) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let umask = cx.p.umask.load(core::sync::atomic::Ordering::Relaxed);
    let f = vfs()?.open(&cx.p.creds(), &base, &path, flags as u32, (mode as u32) & !umask & 0o7777).map_err(err)?;
    if matches!(f.backing(), Backing::Fifo { .. }) {
        // The other side may be waiting for this open.
        io_wait::notify();
        if flags as u32 & O_NONBLOCK == 0 {
            while f.fifo_waits_for_peer() {
                let seen = io_wait::generation();
                if !f.fifo_waits_for_peer() {
                    break;
                }
                if io_wait::wait(seen, None) == Woken::Signal {
                    return Err(ERESTARTSYS);
                }
            }
        }
    }
    if flags as u32 & O_NOCTTY == 0 && is_console(&f) {
        take_controlling_tty(&cx.p, false);
    }
    let fd = cx.p.fds.lock().insert(Arc::new(f), flags as u32 & O_CLOEXEC != 0).map_err(err)?;
    Ok(fd as i64)
}

fn is_console(f: &OpenFile) -> bool {
    let rdev = f.stat().rdev;
    rdev == vmkernel::vfs::devfs::CONSOLE || rdev == vmkernel::vfs::devfs::TTY
}

/// A session leader opening the console (or asking with TIOCSCTTY) makes
/// it its controlling terminal, its process group in the foreground.
fn take_controlling_tty(p: &Process, force: bool) -> bool {
    use core::sync::atomic::Ordering;
    let Some(tty) = files::console_tty() else { return false };
    let sid = p.sid.load(Ordering::Relaxed);
    if sid != p.pid && !force {
        return false;
    }
    tty.set_session(sid);
    tty.set_foreground_pgrp(p.pgid.load(Ordering::Relaxed));
    true
}

fn stat_to_user(p: &Process, st: vmkernel::vfs::Stat, buf: u64) -> SysResult {
    p.copy_to_user(buf, &st.to_bytes())?;
    Ok(0)
}

fn fstatat(cx: &Ctx, dirfd: u64, pathp: u64, buf: u64, flags: u64) -> SysResult {
    let path = path(&cx.p, pathp)?;
    if path.is_empty() {
        if flags as u32 & AT_EMPTY_PATH == 0 {
            return Err(neg(ENOENT));
        }
        if dirfd as i32 == AT_FDCWD {
            let c = cwd(&cx.p)?;
            return stat_to_user(&cx.p, vfs()?.stat_loc(&c), buf);
        }
        return stat_to_user(&cx.p, file(&cx.p, dirfd)?.stat(), buf);
    }
    let base = base(&cx.p, dirfd)?;
    let st = if flags as u32 & AT_SYMLINK_NOFOLLOW != 0 {
        vfs()?.lstat(&cx.p.creds(), &base, &path)
    } else {
        vfs()?.stat(&cx.p.creds(), &base, &path)
    };
    stat_to_user(&cx.p, st.map_err(err)?, buf)
}

fn readlinkat(cx: &Ctx, dirfd: u64, pathp: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(neg(EINVAL));
    }
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let target = vfs()?.readlink(&cx.p.creds(), &base, &path).map_err(err)?;
    let n = target.len().min(size as usize);
    cx.p.copy_to_user(buf, &target[..n])?;
    Ok(n as i64)
}

fn getdents64(cx: &Ctx, fd: u64, buf: u64, len: u64) -> SysResult {
    let f = file(&cx.p, fd)?;
    let mut data = super::zeroed_buffer((len as usize).min(MAX_IO))?;
    let n = f.getdents64(&mut data).map_err(err)?;
    cx.p.copy_to_user(buf, &data[..n])?;
    Ok(n as i64)
}

fn dup_to(cx: &Ctx, old: u64, new: u64, flags: u64) -> SysResult {
    if flags as u32 & !O_CLOEXEC != 0 {
        return Err(neg(EINVAL));
    }
    let f = file(&cx.p, old)?;
    // The description replaced goes after the table's lock: its last
    // reference may close a file, which can sleep (a datastore's).
    let replaced = cx.p.fds.lock().set(new as i32, f, flags as u32 & O_CLOEXEC != 0).map_err(err)?;
    drop(replaced);
    Ok(new as i64)
}

fn fcntl(cx: &Ctx, fd: u64, cmd: u64, arg: u64) -> SysResult {
    let f = file(&cx.p, fd)?;
    let mut fds = cx.p.fds.lock();
    match cmd as u32 {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            if arg as usize >= crate::uw::fdtable::MAX_FDS {
                return Err(neg(EINVAL));
            }
            fds.insert_from(arg as usize, f, cmd as u32 == F_DUPFD_CLOEXEC).map(|n| n as i64).map_err(err)
        }
        F_GETFD => Ok(fds.cloexec(fd as i32).map_err(err)? as i64),
        F_SETFD => fds.set_cloexec(fd as i32, arg & 1 != 0).map(|_| 0).map_err(err),
        F_GETFL => Ok(f.flags() as i64 & !(O_CLOEXEC as i64)),
        F_SETFL => {
            f.set_status_flags(arg as u32);
            Ok(0)
        }
        // Advisory locks: a single-host RAM file system has no contenders
        // outside this kernel; report success.
        F_GETLK => {
            drop(fds);
            // struct flock: l_type (short) = F_UNLCK (2).
            cx.p.copy_to_user(arg, &2u16.to_le_bytes())?;
            Ok(0)
        }
        F_SETLK | F_SETLKW => Ok(0),
        _ => Err(neg(EINVAL)),
    }
}

fn pipe2(cx: &Ctx, fds_addr: u64, flags: u64) -> SysResult {
    if flags as u32 & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(neg(EINVAL));
    }
    let (r, w) = OpenFile::pipe(flags as u32);
    let cloexec = flags as u32 & O_CLOEXEC != 0;
    let (a, b) = {
        let mut t = cx.p.fds.lock();
        let a = t.insert(Arc::new(r), cloexec).map_err(err)?;
        match t.insert(Arc::new(w), cloexec) {
            Ok(b) => (a, b),
            Err(e) => {
                let _ = t.remove(a);
                return Err(err(e));
            }
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&a.to_le_bytes());
    out[4..].copy_from_slice(&b.to_le_bytes());
    if let Err(e) = cx.p.copy_to_user(fds_addr, &out) {
        let mut t = cx.p.fds.lock();
        let _ = t.remove(a);
        let _ = t.remove(b);
        return Err(e);
    }
    Ok(0)
}

/// poll/ppoll: `timeout_ns` None waits forever.
fn do_poll(cx: &Ctx, fds_addr: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > crate::uw::fdtable::MAX_FDS as u64 {
        return Err(neg(EINVAL));
    }
    let mut raw = super::zeroed_buffer(nfds as usize * 8)?;
    cx.p.copy_from_user(fds_addr, &mut raw)?;
    let deadline = timeout_ns.map(|t| time::uptime_ns().saturating_add(t));
    loop {
        let seen = io_wait::generation();
        let mut ready = 0;
        for e in raw.chunks_mut(8) {
            let fd = i32::from_le_bytes(e[..4].try_into().unwrap());
            let events = u16::from_le_bytes(e[4..6].try_into().unwrap());
            let rev = if fd < 0 {
                0
            } else {
                match cx.p.fds.lock().get(fd) {
                    Ok(f) => {
                        let r = f.poll();
                        r.0 & (events | PollEvents::ERR.0 | PollEvents::HUP.0)
                    }
                    Err(_) => PollEvents::NVAL.0,
                }
            };
            e[6..8].copy_from_slice(&rev.to_le_bytes());
            if rev != 0 {
                ready += 1;
            }
        }
        if ready > 0 || deadline.is_some_and(|d| time::uptime_ns() >= d) {
            cx.p.copy_to_user(fds_addr, &raw)?;
            return Ok(ready);
        }
        match io_wait::wait(seen, deadline) {
            Woken::Signal => return Err(neg(EINTR)),
            Woken::Timeout => {
                cx.p.copy_to_user(fds_addr, &raw)?;
                return Ok(0);
            }
            Woken::Event => {}
        }
    }
}

fn timespec_ns(p: &Process, addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    p.copy_from_user(addr, &mut b)?;
    let sec = i64::from_le_bytes(b[..8].try_into().unwrap());
    let nsec = i64::from_le_bytes(b[8..].try_into().unwrap());
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(neg(EINVAL));
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

/// select/pselect6 over fd_sets, built on the poll logic.
fn do_select(cx: &Ctx, nfds: u64, rd: u64, wr: u64, ex: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > 1024 {
        return Err(neg(EINVAL));
    }
    let bytes = (nfds as usize).div_ceil(64) * 8;
    let load = |a: u64| -> Result<Vec<u8>, i64> {
        let mut v = super::zeroed_buffer(bytes)?;
        if a != 0 {
            cx.p.copy_from_user(a, &mut v)?;
        }
        Ok(v)
    };
    let (r_in, w_in, e_in) = (load(rd)?, load(wr)?, load(ex)?);
    let isset = |s: &[u8], i: usize| s[i / 8] & (1 << (i % 8)) != 0;
    let deadline = timeout_ns.map(|t| time::uptime_ns().saturating_add(t));
    loop {
        let seen = io_wait::generation();
        let (mut r_out, mut w_out, e_out) = (super::zeroed_buffer(bytes)?, super::zeroed_buffer(bytes)?, super::zeroed_buffer(bytes)?);
        let mut n = 0;
        for i in 0..nfds as usize {
            if !(isset(&r_in, i) || isset(&w_in, i) || isset(&e_in, i)) {
                continue;
            }
            let f = cx.p.fds.lock().get(i as i32).map_err(err)?;
            let ev = f.poll();
            if isset(&r_in, i) && ev.0 & (PollEvents::IN.0 | PollEvents::HUP.0 | PollEvents::ERR.0) != 0 {
                r_out[i / 8] |= 1 << (i % 8);
                n += 1;
            }
            if isset(&w_in, i) && ev.0 & (PollEvents::OUT.0 | PollEvents::ERR.0) != 0 {
                w_out[i / 8] |= 1 << (i % 8);
                n += 1;
            }
        }
        let timed_out = deadline.is_some_and(|d| time::uptime_ns() >= d);
        if n > 0 || timed_out {
            for (a, v) in [(rd, &r_out), (wr, &w_out), (ex, &e_out)] {
                if a != 0 {
                    cx.p.copy_to_user(a, v)?;
                }
            }
            return Ok(n);
        }
        match io_wait::wait(seen, deadline) {
            Woken::Signal => return Err(neg(EINTR)),
            _ => continue,
        }
    }
}

fn statfs(cx: &Ctx, buf: u64, medium: Option<vmkernel::vfs::FsStats>) -> SysResult {
    // struct statfs (120 bytes): the file system's medium, else a RAM
    // file system sized by free memory.
    let mut b = [0u8; 120];
    let put = |b: &mut [u8], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    if let Some(s) = medium {
        for (off, v) in [(0, s.magic), (8, s.block_size), (16, s.blocks), (24, s.free_blocks), (32, s.free_blocks)] {
            put(&mut b, off, v);
        }
        put(&mut b, 64, s.name_max);
        put(&mut b, 72, s.block_size);
        cx.p.copy_to_user(buf, &b)?;
        return Ok(0);
    }
    let total = crate::mm::usable_bytes() / 4096;
    let free = crate::mm::free_frames();
    put(&mut b, 0, 0x8584_58f6); // RAMFS_MAGIC
    put(&mut b, 8, 4096);
    put(&mut b, 16, total);
    put(&mut b, 24, free);
    put(&mut b, 32, free);
    put(&mut b, 40, 1 << 20);
    put(&mut b, 48, 1 << 20);
    put(&mut b, 64, 255);
    put(&mut b, 72, 4096);
    cx.p.copy_to_user(buf, &b)?;
    Ok(0)
}

fn utimensat(cx: &Ctx, dirfd: u64, pathp: u64, times: u64, flags: u64) -> SysResult {
    let loc = if pathp == 0 {
        file(&cx.p, dirfd)?.location().cloned().ok_or(neg(EBADF))?
    } else {
        let path = path(&cx.p, pathp)?;
        let base = base(&cx.p, dirfd)?;
        vfs()?.resolve(&cx.p.creds(), &base, &path, flags as u32 & AT_SYMLINK_NOFOLLOW == 0).map_err(err)?
    };
    let now = {
        let ns = time::realtime_ns();
        Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as u32 }
    };
    let (mut at, mut mt) = (Some(now), Some(now));
    if times != 0 {
        let mut b = [0u8; 32];
        cx.p.copy_from_user(times, &mut b)?;
        let ts = |o: usize| -> Option<Timespec> {
            let sec = i64::from_le_bytes(b[o..o + 8].try_into().unwrap());
            let nsec = i64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
            match nsec {
                0x3fff_fffe => None,        // UTIME_OMIT
                0x3fff_ffff => Some(now),   // UTIME_NOW
                _ => Some(Timespec { sec, nsec: nsec as u32 }),
            }
        };
        at = ts(0);
        mt = ts(16);
    }
    vfs()?.utimens(&cx.p.creds(), &loc, at, mt).map(|_| 0).map_err(err)
}

pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    let p = &cx.p;
    let cred = || p.creds();
    match n {
        0 => read(cx, a[0], a[1], a[2]),
        1 => write(cx, a[0], a[1], a[2]),
        2 => openat(cx, AT_FDCWD as i64 as u64, a[0], a[1], a[2]),
        3 => {
            let f = p.fds.lock().remove(a[0] as i32).map_err(err)?;
            let others = wakes_others(&f);
            drop(f);
            // The last descriptor of a socket that travels in its own queue.
            super::unix::collect_cycles();
            // Closing a pipe or socket end may wake the other end (HUP).
            if others {
                io_wait::notify();
            }
            Ok(0)
        }
        4 => fstatat(cx, AT_FDCWD as i64 as u64, a[0], a[1], 0),
        5 => file(p, a[0]).and_then(|f| stat_to_user(p, f.stat(), a[1])),
        6 => fstatat(cx, AT_FDCWD as i64 as u64, a[0], a[1], AT_SYMLINK_NOFOLLOW as u64),
        7 => do_poll(cx, a[0], a[1], if (a[2] as i32) < 0 { None } else { Some(a[2] * 1_000_000) }),
        8 => file(p, a[0]).and_then(|f| f.lseek(a[1] as i64, a[2] as u32).map(|o| o as i64).map_err(err)),
        16 => file(p, a[0]).and_then(|f| {
            match a[1] as u32 {
                0x5421 => {
                    // FIONBIO
                    let mut b = [0u8; 4];
                    p.copy_from_user(a[2], &mut b)?;
                    let fl = f.flags();
                    f.set_status_flags(if u32::from_le_bytes(b) != 0 { fl | O_NONBLOCK } else { fl & !O_NONBLOCK });
                    Ok(0)
                }
                0x5451 => p.fds.lock().set_cloexec(a[0] as i32, true).map(|_| 0).map_err(err), // FIOCLEX
                0x5450 => p.fds.lock().set_cloexec(a[0] as i32, false).map(|_| 0).map_err(err), // FIONCLEX
                0x540e if is_console(&f) => {
                    // TIOCSCTTY
                    if take_controlling_tty(p, p.ids.lock().euid == 0) { Ok(0) } else { Err(neg(EPERM)) }
                }
                cmd => f.ioctl(cmd, a[2], &mut UserMem(p)).map_err(err),
            }
        }),
        17 => file(p, a[0]).and_then(|f| {
            let mut data = super::zeroed_buffer((a[2] as usize).min(MAX_IO))?;
            let k = f.pread(a[3], &mut data).map_err(err)?;
            p.copy_to_user(a[1], &data[..k])?;
            Ok(k as i64)
        }),
        18 => file(p, a[0]).and_then(|f| {
            let mut data = super::zeroed_buffer((a[2] as usize).min(MAX_IO))?;
            p.copy_from_user(a[1], &mut data)?;
            f.pwrite(a[3], &data).map(|k| k as i64).map_err(err)
        }),
        19 => readv(cx, a[0], a[1], a[2]),
        20 => writev(cx, a[0], a[1], a[2]),
        21 if a[1] & !7 != 0 => Err(neg(EINVAL)),
        269 | 439 if a[2] & !7 != 0 => Err(neg(EINVAL)),
        21 => path(p, a[0]).and_then(|path| vfs()?.access(&cred(), &cwd(p)?, &path, a[1] as u32).map(|_| 0).map_err(err)),
        22 => pipe2(cx, a[0], 0),
        23 => {
            let t = if a[4] == 0 {
                None
            } else {
                let mut b = [0u8; 16];
                p.copy_from_user(a[4], &mut b)?;
                let s = u64::from_le_bytes(b[..8].try_into().unwrap());
                let us = u64::from_le_bytes(b[8..].try_into().unwrap());
                Some(s.saturating_mul(1_000_000_000).saturating_add(us.saturating_mul(1000)))
            };
            do_select(cx, a[0], a[1], a[2], a[3], t)
        }
        32 => file(p, a[0]).and_then(|f| p.fds.lock().insert(f, false).map(|n| n as i64).map_err(err)),
        33 => {
            if a[0] == a[1] {
                file(p, a[0]).map(|_| a[1] as i64)
            } else {
                dup_to(cx, a[0], a[1], 0)
            }
        }
        40 => Err(neg(EINVAL)), // sendfile: callers fall back to read/write
        // Socket calls on a file that is no socket (net and unix took theirs).
        44..=48 => file(p, a[0]).and(Err(neg(ENOTSOCK))),
        72 => fcntl(cx, a[0], a[1], a[2]),
        73 => Ok(0), // flock
        74 | 75 => file(p, a[0]).and_then(|f| f.fsync().map(|_| 0).map_err(err)), // fsync, fdatasync
        162 => {
            crate::storage::sync_all();
            Ok(0)
        }
        76 => path(p, a[0]).and_then(|path| vfs()?.truncate(&cred(), &cwd(p)?, &path, a[1]).map(|_| 0).map_err(err)),
        77 => file(p, a[0]).and_then(|f| f.truncate(a[1]).map(|_| 0).map_err(err)),
        79 => {
            let c = cwd(p)?;
            let mut path = vfs()?.path_of(&c).map_err(err)?;
            path.push(0);
            if path.len() as u64 > a[1] {
                return Err(neg(ERANGE));
            }
            p.copy_to_user(a[0], &path).map(|_| path.len() as i64)
        }
        80 => path(p, a[0]).and_then(|path| {
            let l = vfs()?.chdir(&cred(), &cwd(p)?, &path).map_err(err)?;
            *p.cwd.lock() = Some(l);
            Ok(0)
        }),
        81 => file(p, a[0]).and_then(|f| {
            let l = f.location().cloned().ok_or(neg(ENOTDIR))?;
            if !l.inode.metadata().is_dir() {
                return Err(neg(ENOTDIR));
            }
            *p.cwd.lock() = Some(l);
            Ok(0)
        }),
        82 => renameat(cx, AT_FDCWD as i64 as u64, a[0], AT_FDCWD as i64 as u64, a[1]),
        83 => mkdirat(cx, AT_FDCWD as i64 as u64, a[0], a[1]),
        84 => path(p, a[0]).and_then(|path| vfs()?.rmdir(&cred(), &cwd(p)?, &path).map(|_| 0).map_err(err)),
        85 => openat(cx, AT_FDCWD as i64 as u64, a[0], (O_CREAT | O_WRONLY | O_TRUNC) as u64, a[1]),
        86 => linkat(cx, AT_FDCWD as i64 as u64, a[0], AT_FDCWD as i64 as u64, a[1], 0),
        87 => unlinkat(cx, AT_FDCWD as i64 as u64, a[0], 0),
        88 => symlinkat(cx, a[0], AT_FDCWD as i64 as u64, a[1]),
        89 => readlinkat(cx, AT_FDCWD as i64 as u64, a[0], a[1], a[2]),
        90 => chmodat(cx, AT_FDCWD as i64 as u64, a[0], a[1], true),
        91 => file(p, a[0]).and_then(|f| {
            let l = f.location().cloned().ok_or(neg(EBADF))?;
            vfs()?.chmod(&cred(), &l, a[1] as u32).map(|_| 0).map_err(err)
        }),
        92 | 94 => chownat(cx, AT_FDCWD as i64 as u64, a[0], a[1], a[2], n == 92),
        93 => file(p, a[0]).and_then(|f| {
            let l = f.location().cloned().ok_or(neg(EBADF))?;
            vfs()?.chown(&cred(), &l, id_arg(a[1]), id_arg(a[2])).map(|_| 0).map_err(err)
        }),
        95 => Ok(p.umask.swap(a[0] as u32 & 0o777, core::sync::atomic::Ordering::Relaxed) as i64),
        133 => mknodat(cx, AT_FDCWD as i64 as u64, a[0], a[1], a[2]),
        137 => path(p, a[0]).and_then(|path| {
            let loc = vfs()?.resolve(&cred(), &cwd(p)?, &path, true).map_err(err)?;
            statfs(cx, a[1], vfs()?.statfs(&loc))
        }),
        138 => file(p, a[0]).and_then(|f| statfs(cx, a[1], f.location().and_then(|l| vfs().ok()?.statfs(l)))),
        217 => getdents64(cx, a[0], a[1], a[2]),
        257 => openat(cx, a[0], a[1], a[2], a[3]),
        258 => mkdirat(cx, a[0], a[1], a[2]),
        259 => mknodat(cx, a[0], a[1], a[2], a[3]),
        260 => chownat(cx, a[0], a[1], a[2], a[3], a[4] as u32 & AT_SYMLINK_NOFOLLOW == 0),
        262 => fstatat(cx, a[0], a[1], a[2], a[3]),
        263 => unlinkat(cx, a[0], a[1], a[2]),
        264 => renameat(cx, a[0], a[1], a[2], a[3]),
        265 => linkat(cx, a[0], a[1], a[2], a[3], a[4]),
        266 => symlinkat(cx, a[0], a[1], a[2]),
        267 => readlinkat(cx, a[0], a[1], a[2], a[3]),
        268 => chmodat(cx, a[0], a[1], a[2], true),
        269 | 439 => path(p, a[1]).and_then(|path| {
            let base = base(p, a[0])?;
            vfs()?.access(&cred(), &base, &path, a[2] as u32).map(|_| 0).map_err(err)
        }),
        270 => {
            let t = if a[4] == 0 { None } else { Some(timespec_ns(p, a[4])?) };
            do_select(cx, a[0], a[1], a[2], a[3], t)
        }
        271 => {
            let t = if a[2] == 0 { None } else { Some(timespec_ns(p, a[2])?) };
            do_poll(cx, a[0], a[1], t)
        }
        280 => utimensat(cx, a[0], a[1], a[2], a[3]),
        292 => {
            if a[0] == a[1] {
                Err(neg(EINVAL))
            } else {
                dup_to(cx, a[0], a[1], a[2])
            }
        }
        293 => pipe2(cx, a[0], a[1]),
        316 => {
            if a[4] != 0 {
                Err(neg(EINVAL))
            } else {
                renameat(cx, a[0], a[1], a[2], a[3])
            }
        }
        _ => Err(super::NOT_MINE),
    }
}

fn id_arg(v: u64) -> Option<u32> {
    (v as u32 != u32::MAX).then_some(v as u32)
}

fn mkdirat(cx: &Ctx, dirfd: u64, pathp: u64, mode: u64) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let umask = cx.p.umask.load(core::sync::atomic::Ordering::Relaxed);
    vfs()?.mkdir(&cx.p.creds(), &base, &path, mode as u32 & !umask).map(|_| 0).map_err(err)
}

fn mknodat(cx: &Ctx, dirfd: u64, pathp: u64, mode: u64, dev: u64) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let umask = cx.p.umask.load(core::sync::atomic::Ordering::Relaxed);
    vfs()?.mknod(&cx.p.creds(), &base, &path, mode as u32 & !umask, dev).map(|_| 0).map_err(err)
}

fn unlinkat(cx: &Ctx, dirfd: u64, pathp: u64, flags: u64) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    if flags as u32 & AT_REMOVEDIR != 0 {
        vfs()?.rmdir(&cx.p.creds(), &base, &path)
    } else {
        vfs()?.unlink(&cx.p.creds(), &base, &path)
    }
    .map(|_| 0)
    .map_err(err)
}

fn renameat(cx: &Ctx, od: u64, op: u64, nd: u64, np: u64) -> SysResult {
    let (o, n) = (path(&cx.p, op)?, path(&cx.p, np)?);
    let (ob, nb) = (base(&cx.p, od)?, base(&cx.p, nd)?);
    vfs()?.rename(&cx.p.creds(), &ob, &o, &nb, &n).map(|_| 0).map_err(err)
}

fn linkat(cx: &Ctx, od: u64, op: u64, nd: u64, np: u64, flags: u64) -> SysResult {
    let (o, n) = (path(&cx.p, op)?, path(&cx.p, np)?);
    let (ob, nb) = (base(&cx.p, od)?, base(&cx.p, nd)?);
    vfs()?.link(&cx.p.creds(), &ob, &o, &nb, &n, flags as u32 & 0x400 != 0).map(|_| 0).map_err(err)
}

fn symlinkat(cx: &Ctx, tp: u64, dirfd: u64, pathp: u64) -> SysResult {
    let target = path(&cx.p, tp)?;
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    vfs()?.symlink(&cx.p.creds(), &target, &base, &path).map(|_| 0).map_err(err)
}

fn chmodat(cx: &Ctx, dirfd: u64, pathp: u64, mode: u64, follow: bool) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let cred = cx.p.creds();
    let loc = vfs()?.resolve(&cred, &base, &path, follow).map_err(err)?;
    vfs()?.chmod(&cred, &loc, mode as u32).map(|_| 0).map_err(err)
}

fn chownat(cx: &Ctx, dirfd: u64, pathp: u64, uid: u64, gid: u64, follow: bool) -> SysResult {
    let path = path(&cx.p, pathp)?;
    let base = base(&cx.p, dirfd)?;
    let cred = cx.p.creds();
    let loc = vfs()?.resolve(&cred, &base, &path, follow).map_err(err)?;
    vfs()?.chown(&cred, &loc, id_arg(uid), id_arg(gid)).map(|_| 0).map_err(err)
}
