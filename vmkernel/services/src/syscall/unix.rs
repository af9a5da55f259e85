//! AF_UNIX sockets for user worlds over `vmkernel::af_unix`: the socket
//! calls, names in the VFS (an S_IFSOCK node per path binding) and the
//! abstract namespace, SCM_RIGHTS in sendmsg/recvmsg and SO_PEERCRED. A
//! socket is an anonymous file whose inode and device are a [`UnixFile`],
//! so read/write/poll/epoll reach it through the VFS's device path.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use vmkernel::af_unix::{self, NameKey, Namespace, Rights, SockType, Ucred, UnixAddr, UnixSocket};
use vmkernel::vfs::file::{Backing, OpenFile};
use vmkernel::vfs::inode::{Device, Inode};
use vmkernel::vfs::types::{Metadata, PollEvents, S_IFMT, S_IFSOCK, UserMemory};
use vmkernel::vfs::{Errno, Result as VfsResult};

use super::fs::{cwd, file};
use super::{Ctx, ERESTARTSYS, NOT_MINE, SysResult, err, neg};
use crate::uw::files;
use crate::uw::io_wait::{self, Woken};

const O_NONBLOCK: u32 = 0o4000;
const O_CLOEXEC: u32 = 0o2000000;
const FIONREAD: u32 = 0x541b;
const SOL_SOCKET: u64 = 1;
const SCM_RIGHTS: i32 = 1;
const SCM_CREDENTIALS: i32 = 2;
const MSG_DONTWAIT: u64 = 0x40;
const MSG_NOSIGNAL: u64 = 0x4000;
const MSG_CTRUNC: u32 = 0x8;
const MSG_CMSG_CLOEXEC: u64 = 0x4000_0000;
/// Control data one sendmsg may carry (Linux's optmem_max).
const MAX_CONTROL: u64 = 20480;
const MAX_IO: usize = 1 << 20;

/// Every bound name on the host.
static NAMES: Mutex<Namespace> = Mutex::new(Namespace::new());

/// One AF_UNIX socket's open-file object.
pub struct UnixFile {
    sock: Arc<UnixSocket>,
    /// SO_RCVTIMEO / SO_SNDTIMEO in ns (0: none).
    rcv_timeout: AtomicU64,
    snd_timeout: AtomicU64,
}

impl UnixFile {
    fn new(sock: Arc<UnixSocket>) -> UnixFile {
        UnixFile { sock, rcv_timeout: AtomicU64::new(0), snd_timeout: AtomicU64::new(0) }
    }
}

impl Drop for UnixFile {
    fn drop(&mut self) {
        self.sock.close();
        io_wait::notify();
    }
}

impl Inode for UnixFile {
    fn metadata(&self) -> Metadata {
        let t = vmkernel::vfs::types::Timespec::default();
        Metadata { ino: self.sock.ino(), mode: S_IFSOCK | 0o777, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t, rdev: 0, blocks: 0 }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Device for UnixFile {
    fn read(&self, _offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        self.sock.recv(buf, 0).map(|r| r.len)
    }
    fn write(&self, _offset: u64, data: &[u8]) -> VfsResult<usize> {
        self.sock.send(data, &mut None, None)
    }
    fn poll(&self) -> PollEvents {
        self.sock.poll()
    }
    fn poll_generation(&self) -> Option<u64> {
        Some(self.sock.generation())
    }
    fn seekable(&self) -> bool {
        false
    }
    fn ioctl(&self, cmd: u32, arg: u64, mem: &mut dyn UserMemory) -> VfsResult<i64> {
        match cmd {
            FIONREAD => {
                mem.write(arg, &(self.sock.pending_input() as i32).to_le_bytes())?;
                Ok(0)
            }
            _ => Err(Errno::ENOTTY),
        }
    }
}

/// Frees AF_UNIX sockets that only their own queues keep alive
/// (`af_unix::collect_cycles`); cheap when no descriptor is in flight.
/// Called when a process closes a file or ends.
pub fn collect_cycles() {
    if af_unix::in_flight() > 0 {
        af_unix::collect_cycles(&|f| unix_of(f).map(|u| u.sock.clone()));
    }
}

fn unix_of(f: &OpenFile) -> Option<&UnixFile> {
    match f.backing() {
        Backing::Device { node, .. } => node.as_any().downcast_ref::<UnixFile>(),
        _ => None,
    }
}

fn ucred(cx: &Ctx) -> Ucred {
    let ids = cx.p.ids.lock();
    Ucred { pid: cx.p.pid, uid: ids.euid, gid: ids.egid }
}

fn install(cx: &Ctx, sock: Arc<UnixSocket>, flags: u32) -> Result<i32, i64> {
    let uf = Arc::new(UnixFile::new(sock));
    let f = OpenFile::anonymous(uf.clone(), uf, flags);
    cx.p.fds.lock().insert(Arc::new(f), flags & O_CLOEXEC != 0).map_err(err)
}

/// socket()'s type bits to (type, O_ flags).
fn type_flags(ty: u64) -> Result<(SockType, u32), i64> {
    const SOCK_NONBLOCK: u64 = 0o4000;
    const SOCK_CLOEXEC: u64 = 0o2000000;
    if ty & !(0xf | SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 || ty > u64::from(u32::MAX) {
        return Err(err(Errno::EINVAL));
    }
    let st = SockType::from_raw(ty as u32).map_err(err)?;
    let fl = (if ty & SOCK_NONBLOCK != 0 { O_NONBLOCK } else { 0 }) | (if ty & SOCK_CLOEXEC != 0 { O_CLOEXEC } else { 0 });
    Ok((st, fl))
}

fn check_protocol(proto: u64) -> Result<(), i64> {
    // 0 or PF_UNIX, as Linux's unix_create.
    if proto != 0 && proto != 1 { Err(neg(vmkernel::linux_abi::errno::EPROTONOSUPPORT)) } else { Ok(()) }
}

pub fn socket(cx: &Ctx, ty: u64, proto: u64) -> SysResult {
    let (st, fl) = type_flags(ty)?;
    check_protocol(proto)?;
    install(cx, UnixSocket::new(st, ucred(cx)), fl).map(i64::from)
}

pub fn socketpair(cx: &Ctx, ty: u64, proto: u64, sv: u64) -> SysResult {
    let (st, fl) = type_flags(ty)?;
    check_protocol(proto)?;
    // Check the output first so a bad pointer leaves no descriptors behind.
    cx.p.copy_to_user(sv, &[0u8; 8])?;
    let (a, b) = UnixSocket::pair(st, ucred(cx));
    let fa = install(cx, a, fl)?;
    let fb = match install(cx, b, fl) {
        Ok(fb) => fb,
        Err(e) => {
            let _ = cx.p.fds.lock().remove(fa);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&fa.to_le_bytes());
    out[4..].copy_from_slice(&fb.to_le_bytes());
    cx.p.copy_to_user(sv, &out)?;
    Ok(0)
}

fn read_addr(cx: &Ctx, addr: u64, len: u64) -> Result<UnixAddr, i64> {
    if len > af_unix::SOCKADDR_UN_LEN as u64 || len < 2 {
        return Err(err(Errno::EINVAL));
    }
    let mut b = [0u8; af_unix::SOCKADDR_UN_LEN];
    cx.p.copy_from_user(addr, &mut b[..len as usize])?;
    UnixAddr::decode(&b[..len as usize]).map_err(err)
}

/// The bound socket `addr` names: a path is looked up in the VFS (it must
/// be a socket node the caller may write), an abstract name in the table.
fn resolve(cx: &Ctx, addr: &UnixAddr) -> Result<Arc<UnixSocket>, i64> {
    let key = match addr {
        UnixAddr::Unnamed => return Err(err(Errno::EINVAL)),
        UnixAddr::Abstract(n) => NameKey::Abstract(n.clone()),
        UnixAddr::Path(p) => {
            let vfs = files::vfs().ok_or(err(Errno::ENOENT))?;
            let base = cwd(&cx.p)?;
            let creds = cx.p.creds();
            let st = vfs.stat(&creds, &base, p).map_err(err)?;
            if st.mode & S_IFMT != S_IFSOCK {
                return Err(err(Errno::ECONNREFUSED));
            }
            vfs.access(&creds, &base, p, 2).map_err(err)?;
            NameKey::Node { dev: st.dev, ino: st.ino }
        }
    };
    NAMES.lock().lookup(&key).ok_or(err(Errno::ECONNREFUSED))
}

fn bind(cx: &Ctx, s: &Arc<UnixSocket>, addr: u64, len: u64) -> SysResult {
    let a = read_addr(cx, addr, len)?;
    if !s.is_unnamed() {
        return Err(err(Errno::EINVAL));
    }
    match &a {
        UnixAddr::Unnamed => NAMES.lock().bind(s, a, None).map(|_| 0).map_err(err),
        UnixAddr::Abstract(n) => {
            let key = NameKey::Abstract(n.clone());
            NAMES.lock().bind(s, a.clone(), Some(key)).map(|_| 0).map_err(err)
        }
        UnixAddr::Path(p) => {
            let vfs = files::vfs().ok_or(err(Errno::ENOENT))?;
            let base = cwd(&cx.p)?;
            let creds = cx.p.creds();
            let umask = cx.p.umask.load(Ordering::Relaxed);
            let loc = vfs.mknod(&creds, &base, p, S_IFSOCK | (0o777 & !umask), 0).map_err(|e| {
                err(if e == Errno::EEXIST { Errno::EADDRINUSE } else { e })
            })?;
            let st = vfs.stat_loc(&loc);
            let key = NameKey::Node { dev: st.dev, ino: st.ino };
            let r = NAMES.lock().bind(s, a.clone(), Some(key));
            if let Err(e) = r {
                let _ = vfs.unlink(&creds, &base, p);
                return Err(err(e));
            }
            Ok(0)
        }
    }
}

/// Repeats `op` while it says EAGAIN unless non-blocking, up to the
/// timeout (then EAGAIN, as SO_RCVTIMEO/SO_SNDTIMEO), notifying waiters
/// after a success.
fn wait_loop<T>(f: &OpenFile, nonblock: bool, timeout_ns: u64, mut op: impl FnMut() -> VfsResult<T>) -> Result<T, i64> {
    let deadline = (timeout_ns != 0).then(|| crate::time::uptime_ns().saturating_add(timeout_ns));
    loop {
        let seen = io_wait::generation();
        match op() {
            Err(Errno::EAGAIN) if !nonblock && !f.is_nonblocking() => match io_wait::wait(seen, deadline) {
                Woken::Signal => return Err(ERESTARTSYS),
                Woken::Timeout => return Err(err(Errno::EAGAIN)),
                Woken::Event => {}
            },
            r => {
                if r.is_ok() {
                    io_wait::notify();
                }
                return r.map_err(err);
            }
        }
    }
}

fn connect(cx: &Ctx, f: &OpenFile, s: &Arc<UnixSocket>, addr: u64, len: u64) -> SysResult {
    let a = read_addr(cx, addr, len)?;
    let target = resolve(cx, &a)?;
    let cred = ucred(cx);
    wait_loop(f, false, 0, || s.connect(&target, a.clone(), cred)).map(|_| 0)
}

fn write_addr(cx: &Ctx, a: &UnixAddr, addr: u64, alen: u64) -> Result<(), i64> {
    if addr == 0 || alen == 0 {
        return Ok(());
    }
    let mut l = [0u8; 4];
    cx.p.copy_from_user(alen, &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(err(Errno::EINVAL));
    }
    let bytes = a.encode();
    let n = (room as usize).min(bytes.len());
    cx.p.copy_to_user(addr, &bytes[..n])?;
    cx.p.write_u32(alen, bytes.len() as u32)
}

fn accept4(cx: &Ctx, f: &OpenFile, s: &UnixSocket, addr: u64, alen: u64, flags: u64) -> SysResult {
    if flags & !u64::from(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(err(Errno::EINVAL));
    }
    let new = wait_loop(f, false, 0, || s.accept())?;
    let peer = new.peer_addr().unwrap_or_default();
    let fd = install(cx, new, flags as u32)?;
    if let Err(e) = write_addr(cx, &peer, addr, alen) {
        let _ = cx.p.fds.lock().remove(fd);
        return Err(e);
    }
    Ok(i64::from(fd))
}

/// The descriptors an SCM_RIGHTS message names (EBADF for a bad one,
/// EINVAL for a malformed header or an unknown type).
fn parse_control(cx: &Ctx, ctl: u64, len: u64) -> Result<Option<Rights>, i64> {
    if len == 0 || ctl == 0 {
        return Ok(None);
    }
    if len > MAX_CONTROL {
        return Err(err(Errno::ENOBUFS));
    }
    let mut b = super::zeroed_buffer(len as usize)?;
    cx.p.copy_from_user(ctl, &mut b)?;
    let mut files: Vec<Arc<OpenFile>> = Vec::new();
    let mut off = 0usize;
    while off + 16 <= b.len() {
        let clen = u64::from_le_bytes(b[off..off + 8].try_into().unwrap_or([0; 8]));
        let level = i32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap_or([0; 4]));
        let ty = i32::from_le_bytes(b[off + 12..off + 16].try_into().unwrap_or([0; 4]));
        if clen < 16 || clen > (b.len() - off) as u64 {
            return Err(err(Errno::EINVAL));
        }
        let clen = clen as usize;
        if level as u64 != SOL_SOCKET {
            return Err(err(Errno::EINVAL));
        }
        match ty {
            SCM_RIGHTS => {
                let n = (clen - 16) / 4;
                if n == 0 || files.len() + n > af_unix::SCM_MAX_FD {
                    return Err(err(Errno::EINVAL));
                }
                for i in 0..n {
                    let p = off + 16 + i * 4;
                    let fd = i32::from_le_bytes(b[p..p + 4].try_into().unwrap_or([0; 4]));
                    files.push(file(&cx.p, fd as u32 as u64).map_err(|_| err(Errno::EBADF))?);
                }
            }
            // Credentials are the sender's own: accepted, not forwarded.
            SCM_CREDENTIALS => {}
            _ => return Err(err(Errno::EINVAL)),
        }
        off += (clen + 7) & !7;
    }
    if files.is_empty() { Ok(None) } else { Rights::new(files).map(Some).map_err(err) }
}

/// Installs received descriptors into the control buffer as one
/// SCM_RIGHTS message; those that do not fit (or exceed the descriptor
/// limit) are closed and MSG_CTRUNC is set. Returns (controllen, flags).
fn deliver_rights(cx: &Ctx, files: Vec<Arc<OpenFile>>, ctl: u64, room: u64, cloexec: bool) -> Result<(u64, u32), i64> {
    if files.is_empty() {
        return Ok((0, 0));
    }
    let fit = if room < 16 || ctl == 0 { 0 } else { ((room - 16) / 4) as usize };
    let mut fds: Vec<i32> = Vec::new();
    let mut trunc = files.len() > fit;
    for f in files.into_iter().take(fit) {
        match cx.p.fds.lock().insert(f, cloexec) {
            Ok(fd) => fds.push(fd),
            Err(_) => {
                trunc = true;
                break;
            }
        }
    }
    if fds.is_empty() {
        return Ok((0, if trunc { MSG_CTRUNC } else { 0 }));
    }
    let clen = 16 + 4 * fds.len();
    let mut b = Vec::with_capacity(clen);
    b.extend_from_slice(&(clen as u64).to_le_bytes());
    b.extend_from_slice(&(SOL_SOCKET as i32).to_le_bytes());
    b.extend_from_slice(&SCM_RIGHTS.to_le_bytes());
    for fd in &fds {
        b.extend_from_slice(&fd.to_le_bytes());
    }
    if let Err(e) = cx.p.copy_to_user(ctl, &b) {
        let mut t = cx.p.fds.lock();
        for fd in fds {
            let _ = t.remove(fd);
        }
        return Err(e);
    }
    // CMSG_SPACE rounds up to 8 bytes, within the room.
    let used = (((clen + 7) & !7) as u64).min(room);
    Ok((used, if trunc { MSG_CTRUNC } else { 0 }))
}

fn sigpipe(cx: &Ctx, e: i64, flags: u64) -> i64 {
    if e == err(Errno::EPIPE) && flags & MSG_NOSIGNAL == 0 {
        crate::uw::signal::send_to_thread(&cx.t, 13, None);
    }
    e
}

fn destination(cx: &Ctx, s: &UnixSocket, name: u64, namelen: u64) -> Result<Option<(Arc<UnixSocket>, UnixAddr)>, i64> {
    if name == 0 || namelen == 0 {
        return Ok(None);
    }
    match s.sock_type() {
        SockType::Stream => return Err(err(if s.is_connected() { Errno::EISCONN } else { Errno::EOPNOTSUPP })),
        // Linux ignores a seqpacket send's address.
        SockType::SeqPacket => return Ok(None),
        SockType::Dgram => {}
    }
    let a = read_addr(cx, name, namelen)?;
    let t = resolve(cx, &a)?;
    Ok(Some((t, a)))
}

fn send(cx: &Ctx, f: &OpenFile, uf: &UnixFile, data: &[u8], rights: Option<Rights>, to: Option<(Arc<UnixSocket>, UnixAddr)>, flags: u64) -> SysResult {
    let mut rights = rights;
    let timeout = uf.snd_timeout.load(Ordering::Relaxed);
    wait_loop(f, flags & MSG_DONTWAIT != 0, timeout, || uf.sock.send(data, &mut rights, to.clone()))
        .map(|n| n as i64)
        .map_err(|e| sigpipe(cx, e, flags))
}

fn msghdr(cx: &Ctx, msgp: u64) -> Result<[u64; 7], i64> {
    let mut h = [0u8; 56];
    cx.p.copy_from_user(msgp, &mut h)?;
    let q = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
    // name, namelen, iov, iovlen, control, controllen, flags
    Ok([q(0), u64::from(u32::from_le_bytes(h[8..12].try_into().unwrap_or([0; 4]))), q(16), q(24), q(32), q(40), q(48)])
}

fn iovecs(cx: &Ctx, iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, i64> {
    if cnt > 1024 {
        return Err(neg(vmkernel::linux_abi::errno::EMSGSIZE));
    }
    let mut raw = super::zeroed_buffer(cnt as usize * 16)?;
    cx.p.copy_from_user(iov, &mut raw)?;
    let v: Vec<(u64, u64)> = raw
        .chunks_exact(16)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().unwrap_or([0; 8])), u64::from_le_bytes(c[8..].try_into().unwrap_or([0; 8]))))
        .collect();
    if v.iter().any(|x| x.1 > isize::MAX as u64) {
        return Err(err(Errno::EINVAL));
    }
    Ok(v)
}

fn sendmsg(cx: &Ctx, f: &OpenFile, uf: &UnixFile, msgp: u64, flags: u64) -> SysResult {
    let [name, namelen, iov, iovlen, ctl, ctllen, _] = msghdr(cx, msgp)?;
    let vecs = iovecs(cx, iov, iovlen)?;
    let to = destination(cx, &uf.sock, name, namelen)?;
    let mut data = Vec::new();
    for (base, len) in vecs {
        let start = data.len();
        let take = (len as usize).min(MAX_IO - start);
        data.try_reserve(take).map_err(|_| err(Errno::ENOMEM))?;
        data.resize(start + take, 0);
        cx.p.copy_from_user(base, &mut data[start..])?;
        if data.len() >= MAX_IO {
            break;
        }
    }
    let rights = parse_control(cx, ctl, ctllen)?;
    send(cx, f, uf, &data, rights, to, flags)
}

fn sendto(cx: &Ctx, f: &OpenFile, uf: &UnixFile, a: &[u64; 6]) -> SysResult {
    let (buf, len, flags, addr, alen) = (a[1], a[2], a[3], a[4], a[5]);
    let to = destination(cx, &uf.sock, addr, alen)?;
    let mut data = super::zeroed_buffer((len as usize).min(MAX_IO))?;
    cx.p.copy_from_user(buf, &mut data)?;
    send(cx, f, uf, &data, None, to, flags)
}

fn recv(f: &OpenFile, uf: &UnixFile, buf: &mut [u8], flags: u64) -> Result<af_unix::Received, i64> {
    let timeout = uf.rcv_timeout.load(Ordering::Relaxed);
    wait_loop(f, flags & MSG_DONTWAIT != 0, timeout, || uf.sock.recv(buf, (flags as u32) & af_unix::MSG_PEEK))
}

fn recvfrom(cx: &Ctx, f: &OpenFile, uf: &UnixFile, a: &[u64; 6]) -> SysResult {
    let (buf, len, flags, addr, alen) = (a[1], a[2], a[3], a[4], a[5]);
    let mut data = super::zeroed_buffer((len as usize).min(MAX_IO))?;
    let r = recv(f, uf, &mut data, flags)?;
    // Descriptors received by a plain recv are closed (no control buffer).
    drop(r.rights);
    cx.p.copy_to_user(buf, &data[..r.len])?;
    write_addr(cx, &r.from, addr, alen)?;
    Ok(if flags & u64::from(af_unix::MSG_TRUNC) != 0 { r.full_len } else { r.len } as i64)
}

fn recvmsg(cx: &Ctx, f: &OpenFile, uf: &UnixFile, msgp: u64, flags: u64) -> SysResult {
    let [name, namelen, iov, iovlen, ctl, ctllen, _] = msghdr(cx, msgp)?;
    let vecs = iovecs(cx, iov, iovlen)?;
    let total: u64 = vecs.iter().fold(0u64, |a, v| a.saturating_add(v.1));
    let mut data = super::zeroed_buffer(total.min(MAX_IO as u64) as usize)?;
    let r = recv(f, uf, &mut data, flags)?;
    let mut off = 0;
    for (base, len) in vecs {
        if off >= r.len {
            break;
        }
        let n = (len as usize).min(r.len - off);
        cx.p.copy_to_user(base, &data[off..off + n])?;
        off += n;
    }
    if name != 0 {
        let bytes = r.from.encode();
        let n = (namelen as usize).min(bytes.len());
        cx.p.copy_to_user(name, &bytes[..n])?;
        cx.p.write_u32(msgp + 8, bytes.len() as u32)?;
    } else {
        cx.p.write_u32(msgp + 8, 0)?;
    }
    let (clen, cflags) = deliver_rights(cx, r.rights, ctl, ctllen, flags & MSG_CMSG_CLOEXEC != 0)?;
    cx.p.copy_to_user(msgp + 40, &clen.to_le_bytes())?;
    let trunc = if r.full_len > r.len { af_unix::MSG_TRUNC } else { 0 };
    cx.p.write_u32(msgp + 48, trunc | cflags)?;
    Ok(if flags & u64::from(af_unix::MSG_TRUNC) != 0 { r.full_len } else { r.len } as i64)
}

fn getsockopt(cx: &Ctx, uf: &UnixFile, level: u64, name: u64, val: u64, lenp: u64) -> SysResult {
    let mut l = [0u8; 4];
    cx.p.copy_from_user(lenp, &mut l)?;
    let room = i32::from_le_bytes(l);
    if room < 0 {
        return Err(err(Errno::EINVAL));
    }
    if level != SOL_SOCKET {
        return Err(err(Errno::EOPNOTSUPP));
    }
    let int = |v: u32| v.to_le_bytes().to_vec();
    let timeval = |ns: u64| {
        let mut b = (ns / 1_000_000_000).to_le_bytes().to_vec();
        b.extend_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        b
    };
    let v: Vec<u8> = match name {
        3 => int(uf.sock.sock_type().raw()),         // SO_TYPE
        4 => int(0),                                 // SO_ERROR
        7 | 8 => int(af_unix::QUEUE_BYTES as u32),   // SO_SNDBUF, SO_RCVBUF
        16 => int(0),                                // SO_PASSCRED
        17 => uf.sock.peer_cred().unwrap_or(Ucred { pid: 0, uid: u32::MAX, gid: u32::MAX }).to_bytes().to_vec(), // SO_PEERCRED
        20 => timeval(uf.rcv_timeout.load(Ordering::Relaxed)),
        21 => timeval(uf.snd_timeout.load(Ordering::Relaxed)),
        30 => int(u32::from(uf.sock.is_listening())), // SO_ACCEPTCONN
        38 => int(0),                                // SO_PROTOCOL
        39 => int(u32::from(af_unix::AF_UNIX)),      // SO_DOMAIN
        _ => return Err(err(Errno::ENOPROTOOPT)),
    };
    let n = v.len().min(room as usize);
    cx.p.copy_to_user(val, &v[..n])?;
    cx.p.write_u32(lenp, n as u32)?;
    Ok(0)
}

fn setsockopt(cx: &Ctx, uf: &UnixFile, level: u64, name: u64, val: u64, len: u64) -> SysResult {
    if level != SOL_SOCKET {
        return Err(err(Errno::EOPNOTSUPP));
    }
    if len > 256 {
        return Err(err(Errno::EINVAL));
    }
    let mut v = super::zeroed_buffer(len as usize)?;
    cx.p.copy_from_user(val, &mut v)?;
    match name {
        20 | 21 => {
            if v.len() < 16 {
                return Err(err(Errno::EINVAL));
            }
            let sec = i64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8]));
            let usec = i64::from_le_bytes(v[8..16].try_into().unwrap_or([0; 8]));
            if !(0..1_000_000).contains(&usec) {
                return Err(err(vmkernel::vfs::Errno(33))); // EDOM
            }
            let ns = if sec < 0 { 0 } else { (sec as u64).saturating_mul(1_000_000_000).saturating_add(usec as u64 * 1000) };
            if name == 20 { &uf.rcv_timeout } else { &uf.snd_timeout }.store(ns, Ordering::Relaxed);
            Ok(0)
        }
        // Options a local socket accepts and needs nothing for.
        2 | 7 | 8 | 9 | 15 | 16 | 32 | 33 if v.len() >= 4 => Ok(0),
        2 | 7 | 8 | 9 | 15 | 16 | 32 | 33 => Err(err(Errno::EINVAL)),
        _ => Err(err(Errno::ENOPROTOOPT)),
    }
}

fn name(cx: &Ctx, s: &UnixSocket, addr: u64, alen: u64, peer: bool) -> SysResult {
    if addr == 0 || alen == 0 {
        return Err(err(Errno::EFAULT));
    }
    let a = if peer { s.peer_addr().map_err(err)? } else { s.local_addr() };
    write_addr(cx, &a, addr, alen).map(|_| 0)
}

/// The AF_UNIX calls: `socket`/`socketpair` with AF_UNIX, and the socket
/// calls on an AF_UNIX descriptor; `NOT_MINE` otherwise.
pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    const AF_UNIX: u64 = 1;
    match n {
        41 if a[0] == AF_UNIX => return socket(cx, a[1], a[2]),
        53 if a[0] == AF_UNIX => return socketpair(cx, a[1], a[2], a[3]),
        53 => return Err(neg(vmkernel::linux_abi::errno::EAFNOSUPPORT)),
        42..=52 | 54 | 55 | 288 => {}
        _ => return Err(NOT_MINE),
    }
    let f = file(&cx.p, a[0])?;
    let Some(uf) = unix_of(&f) else { return Err(NOT_MINE) };
    let s = &uf.sock;
    let r = match n {
        42 => connect(cx, &f, s, a[1], a[2]),
        43 => accept4(cx, &f, s, a[1], a[2], 0),
        288 => accept4(cx, &f, s, a[1], a[2], a[3]),
        44 => sendto(cx, &f, uf, &a),
        45 => recvfrom(cx, &f, uf, &a),
        46 => sendmsg(cx, &f, uf, a[1], a[2]),
        47 => recvmsg(cx, &f, uf, a[1], a[2]),
        48 => s.shutdown(a[1] as i32).map(|_| 0).map_err(err),
        49 => bind(cx, s, a[1], a[2]),
        50 => s.listen(a[1] as i32).map(|_| 0).map_err(err),
        51 => name(cx, s, a[1], a[2], false),
        52 => name(cx, s, a[1], a[2], true),
        54 => setsockopt(cx, uf, a[1], a[2], a[3], a[4]),
        _ => getsockopt(cx, uf, a[1], a[2], a[3], a[4]),
    };
    io_wait::notify();
    r
}

