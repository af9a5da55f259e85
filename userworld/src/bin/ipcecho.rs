//! Two processes talk over local sockets: the first starts a second copy of
//! itself (`ipcecho serve PATH PORT`, a separate process through fork and
//! exec), then exchanges UDP datagrams with it on 127.0.0.1 (echoed back)
//! and connects to its AF_UNIX stream socket at PATH, passing an open file
//! with SCM_RIGHTS; the server reads the file through the passed
//! descriptor and answers with its length and FNV-1a hash, which the
//! client checks against its own reading. Prints one line per part and
//! `ipcecho: ok` (exit 0), or what went wrong (exit 1). Runs on Linux and
//! on Mantle alike.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const DATAGRAMS: usize = 20;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Receives one byte and the descriptor sent with it.
fn recv_fd(s: &UnixStream) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut ctl = [0u64; 4];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&ctl);
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n != 1 {
        return Err(format!("recvmsg returned {n}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: CMSG_FIRSTHDR reads the msghdr recvmsg filled.
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if c.is_null() {
        return Err("no control message came with the byte".into());
    }
    // SAFETY: `c` points into `ctl`, a complete cmsghdr the kernel wrote.
    let (level, ty) = unsafe { ((*c).cmsg_level, (*c).cmsg_type) };
    if level != libc::SOL_SOCKET || ty != libc::SCM_RIGHTS {
        return Err(format!("control message level {level} type {ty}"));
    }
    // SAFETY: SCM_RIGHTS data is an array of ints; the first is the descriptor.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()) };
    // SAFETY: the kernel installed this descriptor for us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends one byte with `fd` attached.
fn send_fd(s: &UnixStream, fd: RawFd) -> Result<(), String> {
    let byte = [b'F'];
    let mut ctl = [0u64; 4];
    let iov = libc::iovec { iov_base: byte.as_ptr() as *mut _, iov_len: 1 };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &iov as *const _ as *mut _;
    msg.msg_iovlen = 1;
    msg.msg_control = ctl.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN only compute sizes.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer has room for one cmsghdr with one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
    }
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::sendmsg(s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n == 1 { Ok(()) } else { Err(format!("sendmsg returned {n}: {}", std::io::Error::last_os_error())) }
}

fn serve(path: &str, port: u16) -> Result<(), String> {
    let udp = UdpSocket::bind(("127.0.0.1", port)).map_err(|e| format!("UDP bind: {e}"))?;
    let _ = std::fs::remove_file(path);
    let unix = UnixListener::bind(path).map_err(|e| format!("bind {path}: {e}"))?;
    println!("ipcecho: server pid {} ready", std::process::id());
    // The socket stays open until the end (once needed on Mantle, whose close
    // dropped a reply not yet sent; vmk-net's `udp_close_sends_queued_datagrams_first`
    // now shows the reply goes out).
    let udp = std::sync::Arc::new(udp);
    let keep = udp.clone();
    let echo = std::thread::spawn(move || -> Result<(), String> {
        let mut buf = [0u8; 2048];
        for _ in 0..DATAGRAMS {
            let (n, from) = udp.recv_from(&mut buf).map_err(|e| e.to_string())?;
            udp.send_to(&buf[..n], from).map_err(|e| e.to_string())?;
        }
        Ok(())
    });
    let (mut s, _) = unix.accept().map_err(|e| format!("accept: {e}"))?;
    let fd = recv_fd(&s)?;
    let mut data = Vec::new();
    std::fs::File::from(fd).read_to_end(&mut data).map_err(|e| format!("reading the passed file: {e}"))?;
    writeln!(s, "{} {:016x}", data.len(), fnv1a(&data)).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(path);
    let r = echo.join().map_err(|_| "UDP thread panicked".to_string())?;
    drop(keep);
    r
}

fn client(file: &str) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = format!("/tmp/ipcecho-{}.sock", std::process::id());
    let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map_err(|e| e.to_string())?.port();
    let mut server = Command::new(exe).args(["serve", &path, &port.to_string()]).spawn().map_err(|e| format!("starting the server: {e}"))?;
    let r = talk(&path, port, file);
    if r.is_err() {
        // The server may wait for what never comes.
        let _ = server.kill();
    }
    let status = server.wait().map_err(|e| e.to_string())?;
    r?;
    if !status.success() {
        return Err(format!("server exited with {status}"));
    }
    Ok(())
}

fn talk(path: &str, port: u16, file: &str) -> Result<(), String> {
    // The server binds after it starts: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => return Err(format!("connect {path}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    println!("ipcecho: connected to {path}");
    let udp = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    udp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        let msg = format!("datagram {i} {}", "x".repeat(i * 50));
        udp.send_to(msg.as_bytes(), ("127.0.0.1", port)).map_err(|e| e.to_string())?;
        let (n, from) = udp.recv_from(&mut buf).map_err(|e| format!("echo {i}: {e}"))?;
        if &buf[..n] != msg.as_bytes() || from.port() != port {
            return Err(format!("echo {i} from {from}: {:?}", String::from_utf8_lossy(&buf[..n])));
        }
    }
    println!("ipcecho: UDP echo of {DATAGRAMS} datagrams between two processes ok");
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    send_fd(&s, f.as_raw_fd())?;
    drop(f);
    let want = std::fs::read(file).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(|e| e.to_string())?;
    let expect = format!("{} {:016x}", want.len(), fnv1a(&want));
    if line.trim() != expect {
        return Err(format!("the server read {:?} through the passed descriptor, want {expect:?}", line.trim()));
    }
    println!("ipcecho: AF_UNIX stream with SCM_RIGHTS between two processes ok ({} bytes of {file})", want.len());
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("serve") => match (args.get(2), args.get(3).and_then(|p| p.parse().ok())) {
            (Some(path), Some(port)) => serve(path, port),
            _ => Err("usage: ipcecho serve PATH PORT".into()),
        },
        file => client(file.unwrap_or("/etc/passwd")),
    };
    match r {
        Ok(()) => {
            if args.get(1).map(String::as_str) != Some("serve") {
                println!("ipcecho: ok");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ipcecho: {e}");
            ExitCode::FAILURE
        }
    }
}
