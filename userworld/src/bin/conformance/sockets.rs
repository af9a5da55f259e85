//! Hostile socket arguments get clean errors, as on Linux: malformed
//! address lengths and families, bad pointers, oversized iovec arrays and
//! lengths, and opening sockets until the descriptor limit — after which
//! sockets work as before.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn udp_socket() -> Result<OwnedFd, i32> {
    // SAFETY: integer arguments.
    let fd = sys(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    }
}

fn bind_raw(fd: &impl AsRawFd, addr: *const libc::sockaddr, len: u32) -> Result<i64, i32> {
    // SAFETY: the kernel must check `addr` and `len` itself.
    sys(unsafe { libc::bind(fd.as_raw_fd(), addr, len) })
}

pub fn run(r: &mut Runner) {
    r.check("socket_bad_address_lengths_and_families", || {
        let s = udp_socket().map_err(errno_name)?;
        let a = loopback(0);
        let p = (&a as *const libc::sockaddr_in).cast::<libc::sockaddr>();
        expect_errno("addrlen 0", bind_raw(&s, p, 0), libc::EINVAL)?;
        expect_errno("addrlen 3", bind_raw(&s, p, 3), libc::EINVAL)?;
        expect_errno("addrlen -1", bind_raw(&s, p, u32::MAX), libc::EINVAL)?;
        expect_errno("addrlen 1 MiB", bind_raw(&s, p, 1 << 20), libc::EINVAL)?;
        expect_errno("bad pointer", bind_raw(&s, 0x10 as *const _, 16), libc::EFAULT)?;
        let mut unix = a;
        unix.sin_family = libc::AF_UNIX as u16;
        expect_errno("AF_UNIX address on AF_INET", bind_raw(&s, (&unix as *const libc::sockaddr_in).cast(), 16), libc::EAFNOSUPPORT)?;
        // SAFETY: connect with a zero length must be refused.
        expect_errno("connect addrlen 0", sys(unsafe { libc::connect(s.as_raw_fd(), p, 0) }), libc::EINVAL)?;
        let mut out = std::mem::MaybeUninit::<libc::sockaddr_in>::zeroed();
        // SAFETY: the length pointer is bad; the kernel must refuse it.
        expect_errno("getsockname bad length pointer", sys(unsafe { libc::getsockname(s.as_raw_fd(), out.as_mut_ptr().cast(), 0x10 as *mut _) }), libc::EFAULT)?;
        let mut len = (-1i32) as libc::socklen_t;
        // SAFETY: a negative length must be refused.
        expect_errno("getsockname negative length", sys(unsafe { libc::getsockname(s.as_raw_fd(), out.as_mut_ptr().cast(), &mut len) }), libc::EINVAL)?;
        ok("good bind still works", bind_raw(&s, p, 16)).map(|_| ())
    });

    r.check("socket_hostile_iovecs", || {
        let a = udp_socket().map_err(errno_name)?;
        let b = udp_socket().map_err(errno_name)?;
        let la = loopback(0);
        ok("bind", bind_raw(&a, (&la as *const libc::sockaddr_in).cast(), 16))?;
        let mut name = std::mem::MaybeUninit::<libc::sockaddr_in>::zeroed();
        let mut len: libc::socklen_t = 16;
        // SAFETY: valid out pointers.
        ok("getsockname", sys(unsafe { libc::getsockname(a.as_raw_fd(), name.as_mut_ptr().cast(), &mut len) }))?;
        // SAFETY: getsockname filled it.
        let mut to = unsafe { name.assume_init() };
        let mut byte = [7u8; 1];
        let iov = vec![libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 }; 1025];
        // SAFETY: a zeroed msghdr is valid; fields set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut to as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = 16;
        msg.msg_iov = iov.as_ptr() as *mut _;
        msg.msg_iovlen = 1025;
        // SAFETY: a valid msghdr with more iovecs than UIO_MAXIOV.
        expect_errno("1025 iovecs", sys_size(unsafe { libc::sendmsg(b.as_raw_fd(), &msg, 0) }), libc::EMSGSIZE)?;
        let huge = [libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: isize::MAX as usize + 1 }];
        msg.msg_iov = huge.as_ptr() as *mut _;
        msg.msg_iovlen = 1;
        // SAFETY: a length beyond SSIZE_MAX must be refused.
        expect_errno("iovec length beyond SSIZE_MAX", sys_size(unsafe { libc::sendmsg(b.as_raw_fd(), &msg, 0) }), libc::EINVAL)?;
        msg.msg_iov = 0x10 as *mut _;
        msg.msg_iovlen = 1;
        // SAFETY: a bad iovec array pointer must be refused.
        expect_errno("bad iovec array", sys_size(unsafe { libc::sendmsg(b.as_raw_fd(), &msg, 0) }), libc::EFAULT)?;
        // SAFETY: a bad msghdr pointer must be refused.
        expect_errno("bad msghdr", sys_size(unsafe { libc::sendmsg(b.as_raw_fd(), 0x10 as *const _, 0) }), libc::EFAULT)?;
        // After all that, a datagram goes through.
        msg.msg_iov = iov.as_ptr() as *mut _;
        msg.msg_iovlen = 1;
        // SAFETY: a valid msghdr.
        expect_eq("one good datagram", sys_size(unsafe { libc::sendmsg(b.as_raw_fd(), &msg, 0) }), Ok(1))?;
        let mut got = [0u8; 4];
        expect_eq("received", read_fd(&a, &mut got), Ok(1))?;
        expect_eq("byte", got[0], 7)
    });

    r.check("socket_until_refused_then_fine", || {
        // A low descriptor limit so the host refuses soon too (Mantle's
        // is 1024); restored afterwards.
        let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: a valid out pointer.
        ok("getrlimit", sys(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) }))?;
        let low = libc::rlimit { rlim_cur: 512.min(old.rlim_max), rlim_max: old.rlim_max };
        // SAFETY: a valid limit.
        ok("setrlimit", sys(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }))?;
        let mut socks = Vec::new();
        let mut refused = None;
        for _ in 0..5000 {
            match udp_socket() {
                Ok(s) => socks.push(s),
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let opened = socks.len();
        drop(socks);
        // SAFETY: restoring the saved limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
        let e = refused.ok_or(format!("{opened} sockets and never refused"))?;
        ensure!([libc::EMFILE, libc::ENFILE, libc::ENOBUFS].contains(&e), "refused with {} after {opened}", errno_name(e));
        ensure!(opened >= 100, "refused after only {opened} sockets");
        // Everything works again.
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let mut c = TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        c.write_all(b"after").map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        expect_eq("data after the flood", &b, b"after")
    });
}
