//! AF_INET sockets for user worlds over `vmk_net`'s non-blocking
//! operations. A socket is an anonymous file whose inode and device are a
//! [`SocketFile`]: read/write/poll/select/ioctl go through the VFS's
//! device path (and its EAGAIN + `io_wait` blocking); the socket calls
//! here find it by downcasting the inode. The network world wakes waiters
//! (`io_wait::notify`) when sockets change.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::net::SocketAddrV4;
use core::sync::atomic::Ordering;

use vmk_net::abi::{self, SOCKADDR_IN_LEN, sioc};
use vmk_net::{Shutdown, SocketId, msg};
use vmkernel::vfs::file::{Backing, OpenFile};
use vmkernel::vfs::inode::{Device, Inode};
use vmkernel::vfs::types::{Metadata, PollEvents, UserMemory};
use vmkernel::vfs::{Errno, Result as VfsResult};

use super::fs::file;
use super::{Ctx, ERESTARTSYS, NOT_MINE, SysResult, err};
use crate::net::with_stack;
use crate::uw::io_wait::{self, Woken};

const S_IFSOCK: u32 = 0o140000;
const EINPROGRESS: Errno = Errno(vmk_net::Errno::EINPROGRESS.0);
const FIONREAD: u32 = 0x541b;
const SIOCOUTQ: u32 = 0x5411;
const O_NONBLOCK: u32 = 0o4000;
const O_CLOEXEC: u32 = 0o2000000;

fn ve(e: vmk_net::Errno) -> Errno {
    Errno(e.0)
}

/// Runs a socket operation on the stack (ENETDOWN before it exists).
fn stack<R>(f: impl FnOnce(&mut vmk_net::NetStack<crate::net::NicPort>) -> vmk_net::SysResult<R>) -> VfsResult<R> {
    with_stack(f).unwrap_or(Err(vmk_net::Errno::ENETDOWN)).map_err(ve)
}

/// One AF_INET socket: the inode and the device of its open file.
pub struct SocketFile {
    id: SocketId,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = with_stack(|s| s.close(self.id));
        io_wait::notify();
    }
}

impl Inode for SocketFile {
    fn metadata(&self) -> Metadata {
        let t = vmkernel::vfs::types::Timespec::default();
        Metadata { ino: self.ino, mode: S_IFSOCK | 0o777, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t, rdev: 0, blocks: 0 }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Device for SocketFile {
    fn read(&self, _offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        stack(|s| s.recv_from(self.id, buf, 0)).map(|r| r.len)
    }
    fn write(&self, _offset: u64, data: &[u8]) -> VfsResult<usize> {
        stack(|s| s.send(self.id, data, 0))
    }
    fn poll(&self) -> PollEvents {
        match stack(|s| s.readiness(self.id)) {
            Ok(r) => PollEvents((r.events & 0xffff) as u16),
            Err(_) => PollEvents::ERR,
        }
    }
    fn poll_generation(&self) -> Option<u64> {
        stack(|s| s.readiness(self.id)).ok().map(|r| r.generation)
    }
    fn seekable(&self) -> bool {
        false
    }
    fn ioctl(&self, cmd: u32, arg: u64, mem: &mut dyn UserMemory) -> VfsResult<i64> {
        match cmd {
            FIONREAD => {
                let n = stack(|s| s.pending_input(self.id))?;
                mem.write(arg, &(n as i32).to_le_bytes())?;
                Ok(0)
            }
            SIOCOUTQ => {
                let n = stack(|s| s.pending_output(self.id))?;
                mem.write(arg, &(n as i32).to_le_bytes())?;
                Ok(0)
            }
            sioc::GIFCONF => {
                // struct ifconf { int ifc_len; char *ifc_buf; }
                let mut h = [0u8; 16];
                mem.read(arg, &mut h)?;
                let room = i32::from_le_bytes([h[0], h[1], h[2], h[3]]).max(0) as usize;
                let buf = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
                let ifaces = with_stack(|s| Ok::<_, vmk_net::Errno>(s.interfaces())).unwrap_or(Ok(Vec::new())).map_err(ve)?;
                let entries = abi::ifconf(&ifaces, if buf == 0 { usize::MAX } else { room });
                if buf == 0 {
                    mem.write(arg, &(entries.len() as i32).to_le_bytes())?;
                } else {
                    mem.write(buf, &entries)?;
                    mem.write(arg, &(entries.len() as i32).to_le_bytes())?;
                }
                Ok(0)
            }
            sioc::GIFNAME
            | sioc::GIFFLAGS
            | sioc::GIFADDR
            | sioc::GIFDSTADDR
            | sioc::GIFBRDADDR
            | sioc::GIFNETMASK
            | sioc::GIFMETRIC
            | sioc::GIFMTU
            | sioc::GIFHWADDR
            | sioc::GIFINDEX
            | sioc::GIFTXQLEN
            | sioc::GIFMAP => {
                let mut req = [0u8; abi::IFREQ_LEN];
                mem.read(arg, &mut req)?;
                let ifaces = with_stack(|s| Ok::<_, vmk_net::Errno>(s.interfaces())).unwrap_or(Ok(Vec::new())).map_err(ve)?;
                let out = abi::ifreq_answer(&ifaces, cmd, &req).map_err(ve)?;
                mem.write(arg, &out)?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }
}

/// The socket behind `fd`, if it is an AF_INET socket.
pub(crate) fn socket_of(f: &OpenFile) -> Option<SocketId> {
    match f.backing() {
        Backing::Device { node, .. } => node.as_any().downcast_ref::<SocketFile>().map(|s| s.id),
        _ => None,
    }
}

/// `Some(id)` for an AF_INET socket, `None` for another file (the caller
/// falls back to the socket-pair behaviour), `ENOTSOCK` never here.
pub fn inet_socket(cx: &Ctx, fd: u64) -> Result<Option<(Arc<OpenFile>, SocketId)>, i64> {
    let f = file(&cx.p, fd)?;
    Ok(socket_of(&f).map(|id| (f, id)))
}

fn new_file(cx: &Ctx, id: SocketId, flags: u32) -> SysResult {
    let ino = with_stack(|s| s.inode(id)).and_then(|r| r.ok()).unwrap_or(0);
    let sock = Arc::new(SocketFile { id, ino });
    let f = OpenFile::anonymous(sock.clone(), sock, flags);
    let fd = cx.p.fds.lock().insert(Arc::new(f), flags & O_CLOEXEC != 0).map_err(err)?;
    Ok(i64::from(fd))
}

pub fn socket(cx: &Ctx, domain: u64, ty: u64, protocol: u64) -> SysResult {
    let uid = cx.p.euid.load(Ordering::Relaxed);
    let (kind, flags) = abi::socket_kind(domain as i32, ty as i32, protocol as i32, uid).map_err(|e| err(ve(e)))?;
    let id = stack(|s| s.socket(kind, uid)).map_err(err)?;
    let fl = (if flags & abi::SOCK_NONBLOCK != 0 { O_NONBLOCK } else { 0 }) | (if flags & abi::SOCK_CLOEXEC != 0 { O_CLOEXEC } else { 0 });
    new_file(cx, id, fl)
}

fn read_sockaddr(cx: &Ctx, addr: u64, len: u64) -> Result<SocketAddrV4, i64> {
    if len > 128 {
        return Err(err(Errno::EINVAL));
    }
    let mut b = super::zeroed_buffer(len as usize)?;
    cx.p.copy_from_user(addr, &mut b)?;
    abi::decode_sockaddr_in(&b).map_err(|e| err(ve(e)))
}

/// Writes a sockaddr_in to `addr` with room `*addrlen`, and the full
/// length to `addrlen` (as Linux: truncated copy, real length reported).
fn write_sockaddr(cx: &Ctx, a: SocketAddrV4, addr: u64, addrlen: u64) -> Result<(), i64> {
    if addr == 0 || addrlen == 0 {
        return Ok(());
    }
    let mut l = [0u8; 4];
    cx.p.copy_from_user(addrlen, &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(err(Errno::EINVAL));
    }
    let bytes = abi::encode_sockaddr_in(a);
    let n = (room as usize).min(SOCKADDR_IN_LEN);
    cx.p.copy_to_user(addr, &bytes[..n])?;
    cx.p.write_u32(addrlen, SOCKADDR_IN_LEN as u32)
}

/// Repeats `op` while it says EAGAIN, waiting for socket events, unless
/// the file is non-blocking or `nonblock` says so.
fn wait_loop<T>(f: &OpenFile, nonblock: bool, mut op: impl FnMut() -> VfsResult<T>) -> Result<T, i64> {
    loop {
        let seen = io_wait::generation();
        match op() {
            Err(Errno::EAGAIN) if !nonblock && !f.is_nonblocking() => {
                if io_wait::wait(seen, None) == Woken::Signal {
                    return Err(ERESTARTSYS);
                }
            }
            r => return r.map_err(err),
        }
    }
}

pub fn bind(cx: &Ctx, fd: u64, addr: u64, len: u64) -> SysResult {
    let Some((_, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    let a = read_sockaddr(cx, addr, len)?;
    stack(|s| s.bind(id, a)).map(|_| 0).map_err(err)
}

pub fn listen(cx: &Ctx, fd: u64, backlog: u64) -> SysResult {
    let Some((_, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    stack(|s| s.listen(id, backlog as i32)).map(|_| 0).map_err(err)
}

pub fn accept4(cx: &Ctx, fd: u64, addr: u64, addrlen: u64, flags: u64) -> SysResult {
    let Some((f, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    let flags = flags as u32;
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(err(Errno::EINVAL));
    }
    let (new, peer) = wait_loop(&f, false, || stack(|s| s.accept(id)))?;
    let fd = new_file(cx, new, flags)?;
    if let Err(e) = write_sockaddr(cx, peer, addr, addrlen) {
        let _ = cx.p.fds.lock().remove(fd as i32);
        return Err(e);
    }
    Ok(fd)
}

pub fn connect(cx: &Ctx, fd: u64, addr: u64, len: u64) -> SysResult {
    let Some((f, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    let a = read_sockaddr(cx, addr, len)?;
    match stack(|s| s.connect(id, a)) {
        Ok(()) => Ok(0),
        Err(EINPROGRESS) if !f.is_nonblocking() => {
            let r = wait_loop(&f, false, || match stack(|s| s.finish_connect(id)) {
                Err(EINPROGRESS) => Err(Errno::EAGAIN),
                r => r,
            });
            r.map(|_| 0)
        }
        Err(e) => Err(err(e)),
    }
}

const MSG_KNOWN: u64 = (msg::PEEK | msg::DONTWAIT | msg::NOSIGNAL | msg::TRUNC) as u64 | 0x100 /* MSG_WAITALL */;

fn sigpipe(cx: &Ctx, e: i64, flags: u64) -> i64 {
    if e == err(Errno::EPIPE) && flags & msg::NOSIGNAL as u64 == 0 {
        crate::uw::signal::send_to_thread(&cx.t, 13, None);
    }
    e
}

const MAX_IO: usize = 1 << 20;

/// sendto(fd, buf, len, flags, addr, addrlen): `a` are the call's arguments.
pub fn sendto(cx: &Ctx, f: &OpenFile, id: SocketId, a: &[u64; 6]) -> SysResult {
    let (buf, len, flags, addr, alen) = (a[1], a[2], a[3], a[4], a[5]);
    let to = if addr != 0 { Some(read_sockaddr(cx, addr, alen)?) } else { None };
    send_from_user(cx, f, id, buf, len, flags, to)
}

/// Sends `len` bytes at user address `buf`: first waits (unless
/// non-blocking) until a TCP socket can take some, then copies only what
/// it can take — a 256 KiB write into a 64 KiB send buffer copies 64 KiB,
/// not 256 KiB of which three quarters are thrown away. `write(2)` on a
/// socket comes here too.
pub fn send_from_user(cx: &Ctx, f: &OpenFile, id: SocketId, buf: u64, len: u64, flags: u64, to: Option<SocketAddrV4>) -> SysResult {
    let nonblock = flags & msg::DONTWAIT as u64 != 0;
    let room = if len == 0 { 0 } else { wait_loop(f, nonblock, || stack(|s| s.send_room(id))).map_err(|e| sigpipe(cx, e, flags))? };
    let mut data = super::zeroed_buffer((len as usize).min(MAX_IO).min(room))?;
    cx.p.copy_from_user(buf, &mut data)?;
    send_data(cx, f, id, &data, flags, to)
}

fn send_data(cx: &Ctx, f: &OpenFile, id: SocketId, data: &[u8], flags: u64, to: Option<SocketAddrV4>) -> SysResult {
    let nonblock = flags & msg::DONTWAIT as u64 != 0;
    let fl = (flags & MSG_KNOWN) as i32;
    wait_loop(f, nonblock, || stack(|s| s.send_to(id, data, to, fl))).map(|n| n as i64).map_err(|e| sigpipe(cx, e, flags))
}

/// recvfrom(fd, buf, len, flags, addr, addrlen): `a` are the call's arguments.
pub fn recvfrom(cx: &Ctx, f: &OpenFile, id: SocketId, a: &[u64; 6]) -> SysResult {
    let (buf, len, flags, addr, alen) = (a[1], a[2], a[3], a[4], a[5]);
    // A TCP socket with data stages only what it holds (not a zeroed
    // buffer of the caller's full length); otherwise the full length, as
    // the call may wait for more.
    let ready = with_stack(|s| s.recv_ready(id)).flatten().unwrap_or(usize::MAX);
    let mut data = super::zeroed_buffer((len as usize).min(MAX_IO).min(ready))?;
    let nonblock = flags & msg::DONTWAIT as u64 != 0;
    let fl = (flags & MSG_KNOWN) as i32;
    let info = wait_loop(f, nonblock, || stack(|s| s.recv_from(id, &mut data, fl)))?;
    cx.p.copy_to_user(buf, &data[..info.len])?;
    if let Some(from) = info.from {
        write_sockaddr(cx, from, addr, alen)?;
    } else if addrlen_nonnull(addr, alen) {
        cx.p.write_u32(alen, 0)?;
    }
    Ok(if flags & msg::TRUNC as u64 != 0 { info.full_len } else { info.len } as i64)
}

fn addrlen_nonnull(addr: u64, alen: u64) -> bool {
    addr != 0 && alen != 0
}

/// A msghdr's iovecs; more than UIO_MAXIOV is EMSGSIZE (as Linux's
/// sendmsg/recvmsg, unlike readv/writev's EINVAL).
fn iovecs(cx: &Ctx, iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, i64> {
    if cnt > 1024 {
        return Err(super::neg(vmkernel::linux_abi::errno::EMSGSIZE));
    }
    let mut raw = super::zeroed_buffer(cnt as usize * 16)?;
    cx.p.copy_from_user(iov, &mut raw)?;
    Ok(raw
        .chunks_exact(16)
        .map(|c| {
            let q = |o: usize| u64::from_le_bytes([c[o], c[o + 1], c[o + 2], c[o + 3], c[o + 4], c[o + 5], c[o + 6], c[o + 7]]);
            (q(0), q(8))
        })
        .collect())
}

/// sendmsg/recvmsg on an AF_INET socket: the address, the iovecs, no
/// ancillary data.
pub fn msg_io(cx: &Ctx, f: &OpenFile, id: SocketId, msgp: u64, flags: u64, send: bool) -> SysResult {
    let mut h = [0u8; 56];
    cx.p.copy_from_user(msgp, &mut h)?;
    let q = |o: usize| u64::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3], h[o + 4], h[o + 5], h[o + 6], h[o + 7]]);
    let (name, namelen, iov, iovlen) = (q(0), u64::from(u32::from_le_bytes([h[8], h[9], h[10], h[11]])), q(16), q(24));
    let vecs = iovecs(cx, iov, iovlen)?;
    let total: u64 = vecs.iter().fold(0u64, |a, v| a.saturating_add(v.1));
    if total > MAX_IO as u64 * 16 {
        return Err(err(Errno::EINVAL));
    }
    if send {
        let to = if name != 0 && namelen != 0 { Some(read_sockaddr(cx, name, namelen)?) } else { None };
        let mut data = Vec::with_capacity(total.min(MAX_IO as u64) as usize);
        for (base, len) in vecs {
            let start = data.len();
            let take = (len as usize).min(MAX_IO - start);
            data.resize(start + take, 0);
            cx.p.copy_from_user(base, &mut data[start..])?;
            if data.len() >= MAX_IO {
                break;
            }
        }
        send_data(cx, f, id, &data, flags, to)
    } else {
        let mut data = super::zeroed_buffer(total.min(MAX_IO as u64) as usize)?;
        let nonblock = flags & msg::DONTWAIT as u64 != 0;
        let fl = (flags & MSG_KNOWN) as i32;
        let info = wait_loop(f, nonblock, || stack(|s| s.recv_from(id, &mut data, fl)))?;
        let mut off = 0;
        for (base, len) in vecs {
            if off >= info.len {
                break;
            }
            let n = (len as usize).min(info.len - off);
            cx.p.copy_to_user(base, &data[off..off + n])?;
            off += n;
        }
        // msg_namelen, msg_controllen = 0, msg_flags.
        if let Some(from) = info.from.filter(|_| name != 0) {
            let bytes = abi::encode_sockaddr_in(from);
            let n = (namelen as usize).min(SOCKADDR_IN_LEN);
            cx.p.copy_to_user(name, &bytes[..n])?;
            cx.p.write_u32(msgp + 8, SOCKADDR_IN_LEN as u32)?;
        } else {
            cx.p.write_u32(msgp + 8, 0)?;
        }
        cx.p.copy_to_user(msgp + 40, &0u64.to_le_bytes())?;
        let trunc = if info.full_len > info.len { msg::TRUNC as u32 } else { 0 };
        cx.p.write_u32(msgp + 48, trunc)?;
        Ok(if flags & msg::TRUNC as u64 != 0 { info.full_len } else { info.len } as i64)
    }
}

pub fn shutdown(id: SocketId, how: u64) -> SysResult {
    let how = Shutdown::from_how(how as i32).map_err(|e| err(ve(e)))?;
    let r = stack(|s| s.shutdown(id, how)).map(|_| 0).map_err(err);
    io_wait::notify();
    r
}

pub fn name(cx: &Ctx, fd: u64, addr: u64, alen: u64, peer: bool) -> SysResult {
    let Some((_, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    if addr == 0 || alen == 0 {
        return Err(err(Errno::EFAULT));
    }
    let a = stack(|s| if peer { s.peer_addr(id) } else { s.local_addr(id) }).map_err(err)?;
    write_sockaddr(cx, a, addr, alen).map(|_| 0)
}

pub fn setsockopt(cx: &Ctx, fd: u64, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    let Some((_, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    if len > 256 {
        return Err(err(Errno::EINVAL));
    }
    let mut v = super::zeroed_buffer(len as usize)?;
    cx.p.copy_from_user(val, &mut v)?;
    stack(|s| s.setsockopt(id, level as i32, name as i32, &v)).map(|_| 0).map_err(err)
}

pub fn getsockopt(cx: &Ctx, fd: u64, level: u64, name: u64, val: u64, lenp: u64) -> SysResult {
    let Some((_, id)) = inet_socket(cx, fd)? else { return Err(err(Errno::ENOTSOCK)) };
    let mut l = [0u8; 4];
    cx.p.copy_from_user(lenp, &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(err(Errno::EINVAL));
    }
    let v = stack(|s| s.getsockopt(id, level as i32, name as i32)).map_err(err)?;
    let n = v.len().min(room as usize);
    cx.p.copy_to_user(val, &v[..n])?;
    cx.p.write_u32(lenp, n as u32)?;
    Ok(0)
}

/// The socket calls (AF_INET); `NOT_MINE` for the rest, and for socket
/// calls on other files (socket pairs), which `fs` handles.
pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    match n {
        41 => socket(cx, a[0], a[1], a[2]),
        42 => connect(cx, a[0], a[1], a[2]),
        43 => accept4(cx, a[0], a[1], a[2], 0),
        288 => accept4(cx, a[0], a[1], a[2], a[3]),
        49 => bind(cx, a[0], a[1], a[2]),
        50 => listen(cx, a[0], a[1]),
        51 => name(cx, a[0], a[1], a[2], false),
        52 => name(cx, a[0], a[1], a[2], true),
        54 => setsockopt(cx, a[0], a[1], a[2], a[3], a[4]),
        55 => getsockopt(cx, a[0], a[1], a[2], a[3], a[4]),
        44..=48 => {
            let Some((f, id)) = inet_socket(cx, a[0])? else { return Err(NOT_MINE) };
            match n {
                44 => sendto(cx, &f, id, &a),
                45 => recvfrom(cx, &f, id, &a),
                46 => msg_io(cx, &f, id, a[1], a[2], true),
                47 => msg_io(cx, &f, id, a[1], a[2], false),
                _ => shutdown(id, a[1]),
            }
        }
        _ => Err(NOT_MINE),
    }
}
