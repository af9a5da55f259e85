//! Pipes and poll.

use crate::harness::*;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn poll1(fd: &impl AsRawFd, events: i16, timeout_ms: i32) -> Result<(i64, i16), i32> {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = sys(unsafe { libc::poll(&mut p, 1, timeout_ms) })?;
    Ok((n, p.revents))
}

pub fn run(r: &mut Runner) {
    r.check("pipe_roundtrip", || {
        let (rd, wr) = pipe();
        expect_eq("write", write_fd(&wr, b"through the pipe"), Ok(16))?;
        let mut buf = [0u8; 64];
        expect_eq("read", read_fd(&rd, &mut buf), Ok(16))?;
        expect_eq("data", &buf[..16], b"through the pipe")
    });

    r.check("pipe_eof_after_writer_close", || {
        let (rd, wr) = pipe();
        write_fd(&wr, b"last").map_err(|e| errno_name(e).to_string())?;
        drop(wr);
        let mut buf = [0u8; 16];
        expect_eq("buffered data first", read_fd(&rd, &mut buf), Ok(4))?;
        expect_eq("then EOF", read_fd(&rd, &mut buf), Ok(0))
    });

    r.check("pipe_epipe_with_sigpipe_ignored", || {
        let (rd, wr) = pipe();
        drop(rd);
        // Rust std ignores SIGPIPE already; this makes the precondition explicit.
        // SAFETY: SIG_IGN is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        expect_errno("write with no reader", write_fd(&wr, b"x"), libc::EPIPE)
    });

    r.check("pipe_sigpipe_default_kills", || {
        let (rd, wr) = pipe();
        drop(rd);
        let pid = fork_child(|| {
            // SAFETY: restoring the default disposition in the child only.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            let _ = write_fd(&wr, b"x");
            0
        })?;
        let status = wait_child(pid, Duration::from_secs(10))?;
        expect_signaled(status, libc::SIGPIPE)
    });

    r.check("pipe2_nonblock_cloexec", || {
        let (rd, _wr) = pipe2(libc::O_NONBLOCK | libc::O_CLOEXEC).map_err(|e| errno_name(e).to_string())?;
        let mut buf = [0u8; 4];
        expect_errno("read on empty non-blocking pipe", read_fd(&rd, &mut buf), libc::EAGAIN)?;
        // SAFETY: integer arguments.
        expect_eq("FD_CLOEXEC", sys(unsafe { libc::fcntl(rd.as_raw_fd(), libc::F_GETFD) }), Ok(libc::FD_CLOEXEC as i64))
    });

    r.check("pipe_large_transfer_across_fork", || {
        // More than a pipe buffer (64 KiB), so the writer must block and resume.
        let (rd, wr) = pipe();
        let total = 256 * 1024;
        let (rfd, wfd) = (rd.as_raw_fd(), wr.as_raw_fd());
        let pid = fork_child(move || {
            // SAFETY: the child's copy of the read end; the parent keeps its own.
            unsafe { libc::close(rfd) };
            let chunk: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < total {
                match write_fd(&wfd, &chunk) {
                    Ok(n) => sent += n as usize,
                    Err(_) => return 1,
                }
            }
            0
        })?;
        drop(wr);
        let mut got = 0usize;
        let mut buf = vec![0u8; 8192];
        let mut good = true;
        loop {
            let n = read_fd(&rd, &mut buf).map_err(|e| errno_name(e).to_string())? as usize;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                good &= *b == (((got + i) % 4096) % 251) as u8;
            }
            got += n;
        }
        expect_exited(wait_child(pid, Duration::from_secs(20))?, 0)?;
        expect_eq("bytes received", got, total)?;
        ensure!(good, "data corrupted in transit");
        Ok(())
    });

    r.check("poll_timeout_zero_empty", || {
        let (rd, _wr) = pipe();
        expect_eq("poll", poll1(&rd, libc::POLLIN, 0), Ok((0, 0)))
    });

    r.check("poll_readable_after_write", || {
        let (rd, wr) = pipe();
        write_fd(&wr, b"x").map_err(|e| errno_name(e).to_string())?;
        let (n, rev) = poll1(&rd, libc::POLLIN, 1000).map_err(|e| errno_name(e).to_string())?;
        expect_eq("ready count", n, 1)?;
        ensure!(rev & libc::POLLIN != 0, "POLLIN not set: revents {rev:#x}");
        let (n, rev) = poll1(&wr, libc::POLLOUT, 0).map_err(|e| errno_name(e).to_string())?;
        expect_eq("write end ready", n, 1)?;
        ensure!(rev & libc::POLLOUT != 0, "POLLOUT not set: revents {rev:#x}");
        Ok(())
    });

    r.check("poll_hup_after_writer_close", || {
        let (rd, wr) = pipe();
        drop(wr);
        let (n, rev) = poll1(&rd, libc::POLLIN, 1000).map_err(|e| errno_name(e).to_string())?;
        expect_eq("ready count", n, 1)?;
        ensure!(rev & libc::POLLHUP != 0, "POLLHUP not set: revents {rev:#x}");
        Ok(())
    });

    r.check("poll_waits_for_timeout", || {
        let (rd, _wr) = pipe();
        let t = Instant::now();
        expect_eq("poll", poll1(&rd, libc::POLLIN, 50), Ok((0, 0)))?;
        let took = t.elapsed();
        ensure!(took >= Duration::from_millis(50), "poll returned after {took:?}, before its 50 ms timeout");
        Ok(())
    });

    r.check("poll_wakes_on_write_from_thread", || {
        let (rd, wr) = pipe();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            write_fd(&wr, b"!")
        });
        let r = poll1(&rd, libc::POLLIN, 5000);
        let w = h.join().map_err(|_| "writer thread panicked".to_string())?;
        expect_eq("write", w, Ok(1))?;
        let (n, rev) = r.map_err(|e| errno_name(e).to_string())?;
        expect_eq("ready count", n, 1)?;
        ensure!(rev & libc::POLLIN != 0, "POLLIN not set");
        Ok(())
    });

    r.check("poll_invalid_fd_pollnval", || {
        let mut p = libc::pollfd { fd: 4000, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = sys(unsafe { libc::poll(&mut p, 1, 0) });
        expect_eq("poll count", n, Ok(1))?;
        expect_eq("revents", p.revents, libc::POLLNVAL)
    });
}
