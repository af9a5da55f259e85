//! AF_UNIX sockets: socketpair, stream and datagram sockets bound to paths
//! and abstract names (through Rust std, as programs use them), shutdown
//! and EPIPE, SCM_RIGHTS between two processes, SO_PEERCRED.

use crate::harness::*;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

fn socketpair(ty: i32) -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for two descriptors.
    sys(unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends `data` with `fds` as one SCM_RIGHTS message.
fn send_fds(sock: &impl AsRawFd, data: &[u8], fds: &[RawFd]) -> Result<i64, i32> {
    let mut ctl = vec![0u8; 16 + 4 * fds.len() + 8];
    let clen = 16 + 4 * fds.len();
    ctl[..8].copy_from_slice(&(clen as u64).to_ne_bytes());
    ctl[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    ctl[12..16].copy_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
    for (i, fd) in fds.iter().enumerate() {
        ctl[16 + 4 * i..20 + 4 * i].copy_from_slice(&fd.to_ne_bytes());
    }
    let iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &iov as *const _ as *mut _;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = (clen + 7) & !7;
    // SAFETY: msg points at live buffers.
    sys_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) })
}

/// Receives into `buf` with room for `room` descriptors: (bytes, fds, msg_flags).
fn recv_fds(sock: &impl AsRawFd, buf: &mut [u8], room: usize) -> Result<(usize, Vec<OwnedFd>, i32), i32> {
    let mut ctl = vec![0u8; 16 + 4 * room];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = ctl.len();
    // SAFETY: msg points at live buffers.
    let n = sys_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) })?;
    let mut fds = Vec::new();
    let used = msg.msg_controllen;
    if used >= 16 {
        let clen = u64::from_ne_bytes(ctl[..8].try_into().unwrap_or([0; 8])) as usize;
        let level = i32::from_ne_bytes(ctl[8..12].try_into().unwrap_or([0; 4]));
        let ty = i32::from_ne_bytes(ctl[12..16].try_into().unwrap_or([0; 4]));
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            for c in ctl[16..clen.min(ctl.len())].chunks_exact(4) {
                // SAFETY: the kernel installed these descriptors for us.
                fds.push(unsafe { OwnedFd::from_raw_fd(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])) });
            }
        }
    }
    Ok((n as usize, fds, msg.msg_flags))
}

fn peercred(sock: &impl AsRawFd) -> Result<libc::ucred, i32> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid out pointers of the stated size.
    sys(unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut c as *mut libc::ucred).cast(), &mut len) })?;
    Ok(c)
}

fn e(x: std::io::Error) -> String {
    x.to_string()
}

pub fn run(r: &mut Runner, dir: &Path) {
    r.check("unix_socketpair_stream_shutdown_and_epipe", || {
        let (a, b) = socketpair(libc::SOCK_STREAM).map_err(errno_name)?;
        expect_eq("write", write_fd(&a, b"ping"), Ok(4))?;
        expect_eq("write", write_fd(&a, b"pong"), Ok(4))?;
        let mut buf = [0u8; 16];
        // A stream has no message boundaries.
        expect_eq("read both writes", read_fd(&b, &mut buf), Ok(8))?;
        expect_eq("bytes", &buf[..8], b"pingpong")?;
        expect_eq("write back", write_fd(&b, b"x"), Ok(1))?;
        expect_eq("read back", read_fd(&a, &mut buf), Ok(1))?;
        // SAFETY: integer arguments.
        ok("shutdown(SHUT_WR)", sys(unsafe { libc::shutdown(a.as_raw_fd(), libc::SHUT_WR) }))?;
        expect_eq("EOF after the peer's SHUT_WR", read_fd(&b, &mut buf), Ok(0))?;
        // SAFETY: a valid buffer.
        expect_errno("send after SHUT_WR", sys_size(unsafe { libc::send(a.as_raw_fd(), buf.as_ptr().cast(), 1, libc::MSG_NOSIGNAL) }), libc::EPIPE)?;
        expect_eq("the other direction still works", write_fd(&b, b"y"), Ok(1))?;
        expect_eq("read", read_fd(&a, &mut buf), Ok(1))?;
        drop(a);
        // SAFETY: a valid buffer.
        expect_errno("send to a closed peer", sys_size(unsafe { libc::send(b.as_raw_fd(), buf.as_ptr().cast(), 1, libc::MSG_NOSIGNAL) }), libc::EPIPE)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
        // SAFETY: a valid out pointer.
        ok("fstat", sys(unsafe { libc::fstat(b.as_raw_fd(), st.as_mut_ptr()) }))?;
        // SAFETY: fstat filled it.
        expect_eq("S_IFSOCK", unsafe { st.assume_init() }.st_mode & libc::S_IFMT, libc::S_IFSOCK)
    });

    r.check("unix_socketpair_dgram_keeps_boundaries_and_truncates", || {
        let (a, b) = socketpair(libc::SOCK_DGRAM).map_err(errno_name)?;
        expect_eq("send 1", write_fd(&a, b"first"), Ok(5))?;
        expect_eq("send 2", write_fd(&a, b"second!"), Ok(7))?;
        let mut buf = [0u8; 64];
        expect_eq("one datagram per read", read_fd(&b, &mut buf), Ok(5))?;
        let mut small = [0u8; 3];
        // SAFETY: a valid buffer; MSG_TRUNC reports the real length.
        let n = sys_size(unsafe { libc::recv(b.as_raw_fd(), small.as_mut_ptr().cast(), 3, libc::MSG_TRUNC) });
        expect_eq("MSG_TRUNC length", n, Ok(7))?;
        expect_eq("truncated bytes", &small, b"sec")?;
        // SAFETY: a valid buffer.
        let n = sys_size(unsafe { libc::recv(b.as_raw_fd(), buf.as_mut_ptr().cast(), 64, libc::MSG_DONTWAIT) });
        expect_errno("rest of the datagram is gone", n, libc::EAGAIN)
    });

    r.check("unix_stream_bound_to_path_listen_connect_accept", || {
        let path = dir.join("stream.sock");
        let l = UnixListener::bind(&path).map_err(e)?;
        let meta = std::fs::symlink_metadata(&path).map_err(e)?;
        ensure!(meta.file_type().is_socket(), "bind made no socket node: {:?}", meta.file_type());
        let err = UnixListener::bind(&path).err().and_then(|x| x.raw_os_error());
        expect_eq("second bind to the path", err, Some(libc::EADDRINUSE))?;
        let missing = UnixStream::connect(dir.join("nothing.sock")).err().and_then(|x| x.raw_os_error());
        expect_eq("connect to a missing path", missing, Some(libc::ENOENT))?;
        let plain = dir.join("plain-file");
        std::fs::write(&plain, b"x").map_err(e)?;
        let refused = UnixStream::connect(&plain).err().and_then(|x| x.raw_os_error());
        expect_eq("connect to a regular file", refused, Some(libc::ECONNREFUSED))?;
        let mut c = UnixStream::connect(&path).map_err(e)?;
        let (mut s, peer) = l.accept().map_err(e)?;
        ensure!(peer.is_unnamed(), "client address {peer:?}, want unnamed");
        expect_eq("server's name", l.local_addr().map_err(e)?.as_pathname().map(Path::to_path_buf), Some(path.clone()))?;
        expect_eq("client's peer", c.peer_addr().map_err(e)?.as_pathname().map(Path::to_path_buf), Some(path.clone()))?;
        c.write_all(b"hello over a path").map_err(e)?;
        let mut buf = [0u8; 17];
        s.read_exact(&mut buf).map_err(e)?;
        expect_eq("bytes", &buf, b"hello over a path")?;
        // SAFETY: getpid/getuid/getgid have no preconditions.
        let me = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
        let cred = peercred(&s).map_err(errno_name)?;
        expect_eq("SO_PEERCRED of the client", (cred.pid, cred.uid, cred.gid), me)?;
        drop(l);
        // The name stays in the file system until unlinked, but nobody listens.
        let gone = UnixStream::connect(&path).err().and_then(|x| x.raw_os_error());
        expect_eq("connect after the listener closed", gone, Some(libc::ECONNREFUSED))?;
        std::fs::remove_file(&path).map_err(e)?;
        std::fs::remove_file(&plain).map_err(e)
    });

    r.check("unix_connect_to_unlistened_socket_and_backlog", || {
        // SAFETY: integer arguments.
        let fd = sys(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) }).map_err(errno_name)?;
        // SAFETY: fresh descriptor.
        let srv = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: getpid has no preconditions.
        let name = format!("\0mantle-conformance-backlog-{}", unsafe { libc::getpid() }).into_bytes();
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sa.sun_family = libc::AF_UNIX as u16;
        for (d, s) in sa.sun_path.iter_mut().zip(name.iter()) {
            *d = *s as libc::c_char;
        }
        let len = (2 + name.len()) as libc::socklen_t;
        let sap = (&sa as *const libc::sockaddr_un).cast::<libc::sockaddr>();
        // SAFETY: a valid address of `len` bytes.
        ok("bind abstract", sys(unsafe { libc::bind(srv.as_raw_fd(), sap, len) }))?;
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut got: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut glen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: valid out pointers.
        ok("getsockname", sys(unsafe { libc::getsockname(srv.as_raw_fd(), (&mut got as *mut libc::sockaddr_un).cast(), &mut glen) }))?;
        expect_eq("abstract name length", glen, len)?;
        let client = || -> Result<OwnedFd, i32> {
            // SAFETY: integer arguments.
            let fd = sys(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) })?;
            // SAFETY: fresh descriptor.
            let c = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            // SAFETY: a valid address.
            sys(unsafe { libc::connect(c.as_raw_fd(), sap, len) })?;
            Ok(c)
        };
        expect_errno("connect before listen", client().map(|_| 0), libc::ECONNREFUSED)?;
        // SAFETY: integer arguments.
        ok("listen(2)", sys(unsafe { libc::listen(srv.as_raw_fd(), 2) }))?;
        let mut held = Vec::new();
        let refused = loop {
            match client() {
                Ok(c) => held.push(c),
                Err(x) => break x,
            }
            if held.len() > 64 {
                return Err("backlog 2 admitted 64 connections".into());
            }
        };
        expect_eq("a full backlog refuses a non-blocking connect", errno_name(refused), "EAGAIN")?;
        ensure!((2..=3).contains(&held.len()), "backlog 2 admitted {}", held.len());
        // SAFETY: null address pointers are allowed.
        let a = sys(unsafe { libc::accept4(srv.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) });
        let a = ok("accept", a)?;
        // SAFETY: accept returned a descriptor we own.
        drop(unsafe { OwnedFd::from_raw_fd(a as RawFd) });
        ok("room again after an accept", client().map(|_| 0)).map(|_| ())
    });

    r.check("unix_dgram_sendto_path_names_the_sender", || {
        let rx_path = dir.join("rx.sock");
        let tx_path = dir.join("tx.sock");
        let rx = UnixDatagram::bind(&rx_path).map_err(e)?;
        let tx = UnixDatagram::bind(&tx_path).map_err(e)?;
        tx.send_to(b"datagram", &rx_path).map_err(e)?;
        let mut buf = [0u8; 32];
        let (n, from) = rx.recv_from(&mut buf).map_err(e)?;
        expect_eq("bytes", &buf[..n], b"datagram")?;
        expect_eq("sender", from.as_pathname().map(Path::to_path_buf), Some(tx_path.clone()))?;
        let unbound = UnixDatagram::unbound().map_err(e)?;
        let err = unbound.send(b"x").err().and_then(|x| x.raw_os_error());
        expect_eq("send on an unconnected datagram socket", err, Some(libc::ENOTCONN))?;
        unbound.connect(&rx_path).map_err(e)?;
        unbound.send(b"via connect").map_err(e)?;
        rx.set_read_timeout(Some(Duration::from_millis(200))).map_err(e)?;
        let (n, from) = rx.recv_from(&mut buf).map_err(e)?;
        expect_eq("connected send", &buf[..n], b"via connect")?;
        ensure!(from.is_unnamed(), "unbound sender named {from:?}");
        // SO_RCVTIMEO: an empty queue times out with EAGAIN.
        let t0 = std::time::Instant::now();
        let err = rx.recv(&mut buf).err().and_then(|x| x.raw_os_error());
        expect_eq("receive timeout", err, Some(libc::EAGAIN))?;
        ensure!(t0.elapsed() >= Duration::from_millis(150), "timed out after only {:?}", t0.elapsed());
        drop(rx);
        let err = unbound.send(b"x").err().and_then(|x| x.raw_os_error());
        expect_eq("send to a closed receiver", err, Some(libc::ECONNREFUSED))?;
        std::fs::remove_file(&rx_path).map_err(e)?;
        std::fs::remove_file(&tx_path).map_err(e)
    });

    r.check("unix_scm_rights_passes_a_pipe_to_another_process", || {
        let (parent_end, child_end) = socketpair(libc::SOCK_STREAM).map_err(errno_name)?;
        let (pfd, child_end_raw) = (parent_end.as_raw_fd(), child_end.as_raw_fd());
        let pid = fork_child(move || {
            // SAFETY: the child's copy of the parent's end, closed so EOF works.
            unsafe { libc::close(pfd) };
            let child_end = child_end_raw;
            let mut buf = [0u8; 8];
            let Ok((n, fds, _)) = recv_fds(&child_end, &mut buf, 1) else { return 2 };
            if &buf[..n] != b"fd" || fds.len() != 1 {
                return 3;
            }
            // Read what the parent writes into the pipe whose read end came over.
            let mut got = [0u8; 32];
            let Ok(k) = read_fd(&fds[0], &mut got) else { return 4 };
            // Send it back over the socket, in upper case.
            let up: Vec<u8> = got[..k as usize].to_ascii_uppercase();
            if write_fd(&child_end, &up) != Ok(up.len() as i64) {
                return 5;
            }
            0
        })?;
        drop(child_end);
        let (pr, pw) = pipe2(libc::O_CLOEXEC).map_err(errno_name)?;
        expect_eq("sendmsg with SCM_RIGHTS", send_fds(&parent_end, b"fd", &[pr.as_raw_fd()]), Ok(2))?;
        drop(pr);
        expect_eq("write into the passed pipe", write_fd(&pw, b"through the pipe"), Ok(16))?;
        let mut back = [0u8; 16];
        let mut s = std::fs::File::from(parent_end);
        s.read_exact(&mut back).map_err(e)?;
        expect_eq("the child's answer", &back, b"THROUGH THE PIPE")?;
        let st = wait_child(pid, Duration::from_secs(20))?;
        expect_exited(st, 0)
    });

    r.check("unix_scm_rights_control_buffer_too_small_truncates", || {
        let (a, b) = socketpair(libc::SOCK_DGRAM).map_err(errno_name)?;
        let (p1, p2) = pipe2(libc::O_CLOEXEC).map_err(errno_name)?;
        expect_eq("send two descriptors", send_fds(&a, b"2", &[p1.as_raw_fd(), p2.as_raw_fd()]), Ok(1))?;
        let mut buf = [0u8; 4];
        let (n, fds, flags) = recv_fds(&b, &mut buf, 1).map_err(errno_name)?;
        expect_eq("bytes", n, 1)?;
        expect_eq("descriptors that fit", fds.len(), 1)?;
        ensure!(flags & libc::MSG_CTRUNC != 0, "msg_flags {flags:#x} lacks MSG_CTRUNC");
        // MSG_CMSG_CLOEXEC marked the received descriptor close-on-exec.
        // SAFETY: F_GETFD only queries.
        let fdflags = sys(unsafe { libc::fcntl(fds[0].as_raw_fd(), libc::F_GETFD) });
        expect_eq("FD_CLOEXEC", fdflags, Ok(i64::from(libc::FD_CLOEXEC)))?;
        expect_errno("a bad descriptor in SCM_RIGHTS", send_fds(&a, b"x", &[9999]), libc::EBADF)
    });

    r.check("unix_socket_peercred_and_poll", || {
        let (a, b) = socketpair(libc::SOCK_STREAM).map_err(errno_name)?;
        let cred = peercred(&a).map_err(errno_name)?;
        // SAFETY: getpid/getuid/getgid have no preconditions.
        let me = unsafe { (libc::getpid(), libc::getuid(), libc::getgid()) };
        expect_eq("SO_PEERCRED of socketpair", (cred.pid, cred.uid, cred.gid), me)?;
        let mut ty = 0i32;
        let mut len = 4 as libc::socklen_t;
        // SAFETY: valid out pointers.
        ok("SO_TYPE", sys(unsafe { libc::getsockopt(a.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&mut ty as *mut i32).cast(), &mut len) }))?;
        expect_eq("SO_TYPE", ty, libc::SOCK_STREAM)?;
        let mut p = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN | libc::POLLOUT, revents: 0 }];
        // SAFETY: a valid pollfd array.
        ok("poll", sys(unsafe { libc::poll(p.as_mut_ptr(), 1, 0) }))?;
        expect_eq("idle: writable only", p[0].revents, libc::POLLOUT)?;
        write_fd(&a, b"z").map_err(errno_name)?;
        // SAFETY: a valid pollfd array.
        ok("poll", sys(unsafe { libc::poll(p.as_mut_ptr(), 1, 1000) }))?;
        expect_eq("data: readable", p[0].revents & libc::POLLIN, libc::POLLIN)?;
        let mut n = 0i32;
        // SAFETY: a valid out pointer.
        ok("FIONREAD", sys(unsafe { libc::ioctl(b.as_raw_fd(), libc::FIONREAD, &mut n) }))?;
        expect_eq("FIONREAD", n, 1)?;
        drop(a);
        p[0].events = libc::POLLIN | libc::POLLRDHUP;
        // SAFETY: a valid pollfd array.
        ok("poll", sys(unsafe { libc::poll(p.as_mut_ptr(), 1, 1000) }))?;
        let want = libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP;
        expect_eq("peer closed: IN|RDHUP|HUP", p[0].revents & want, want)
    });
}
