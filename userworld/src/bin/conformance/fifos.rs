//! Named pipes (FIFOs): mkfifo, the open rules (blocking until the other
//! end opens, O_NONBLOCK, ENXIO, O_RDWR), data, end of file and EPIPE.

use crate::harness::*;
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn mkfifo(p: &Path, mode: u32) -> Result<i64, i32> {
    let c = cpath(p);
    // SAFETY: `c` is a valid NUL-terminated path.
    sys(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) })
}

pub fn run(r: &mut Runner, dir: &Path) {
    let d = dir.to_path_buf();
    r.check("fifo_mkfifo_stat_eexist", || {
        let p = d.join("fifo-stat");
        expect_eq("mkfifo", mkfifo(&p, 0o640), Ok(0))?;
        let st = stat_path(&p, true).map_err(|e| format!("stat: {}", errno_name(e)))?;
        expect_eq("file type", st.st_mode & libc::S_IFMT, libc::S_IFIFO)?;
        expect_eq("permissions", st.st_mode & 0o777, 0o640 & !0o022)?;
        expect_errno("mkfifo again", mkfifo(&p, 0o600), libc::EEXIST)?;
        std::fs::remove_file(&p).map_err(|e| format!("unlink: {e}"))
    });

    let d = dir.to_path_buf();
    r.check("fifo_nonblocking_opens_enxio_data_eof", || {
        let p = d.join("fifo-nb");
        expect_eq("mkfifo", mkfifo(&p, 0o600), Ok(0))?;
        // No reader: a non-blocking writer cannot open.
        expect_errno("open(O_WRONLY|O_NONBLOCK) without reader", open(&p, libc::O_WRONLY | libc::O_NONBLOCK, 0).map(|_| 0), libc::ENXIO)?;
        // A non-blocking reader opens at once; with no writer it reads end of file.
        let rd = open(&p, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|e| format!("open reader: {}", errno_name(e)))?;
        expect_eq("read without writer", read_fd(&rd, &mut [0u8; 8]), Ok(0))?;
        let wr = open(&p, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| format!("open writer: {}", errno_name(e)))?;
        // A writer present and no data: EAGAIN.
        expect_errno("read with writer, no data", read_fd(&rd, &mut [0u8; 8]), libc::EAGAIN)?;
        expect_eq("write", write_fd(&wr, b"fifo data"), Ok(9))?;
        let st = fstat(&rd).map_err(|e| format!("fstat: {}", errno_name(e)))?;
        expect_eq("fstat type", st.st_mode & libc::S_IFMT, libc::S_IFIFO)?;
        let mut buf = [0u8; 32];
        expect_eq("read", read_fd(&rd, &mut buf), Ok(9))?;
        expect_eq("data", &buf[..9], b"fifo data")?;
        expect_errno("lseek", lseek(&rd, 0, libc::SEEK_SET), libc::ESPIPE)?;
        drop(wr);
        expect_eq("read after the writer closed", read_fd(&rd, &mut buf), Ok(0))?;
        drop(rd);
        std::fs::remove_file(&p).map_err(|e| format!("unlink: {e}"))
    });

    let d = dir.to_path_buf();
    r.check("fifo_epipe_without_reader", || {
        let p = d.join("fifo-pipe");
        expect_eq("mkfifo", mkfifo(&p, 0o600), Ok(0))?;
        let rd = open(&p, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|e| format!("open reader: {}", errno_name(e)))?;
        let wr = open(&p, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| format!("open writer: {}", errno_name(e)))?;
        drop(rd);
        // SAFETY: ignoring SIGPIPE so the write reports EPIPE; restored below.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let w = write_fd(&wr, b"x");
        // SAFETY: restoring the previous disposition.
        unsafe { libc::signal(libc::SIGPIPE, old) };
        expect_errno("write without reader", w, libc::EPIPE)?;
        drop(wr);
        std::fs::remove_file(&p).map_err(|e| format!("unlink: {e}"))
    });

    let d = dir.to_path_buf();
    r.check("fifo_blocking_open_waits_for_the_other_end", || {
        let p = d.join("fifo-block");
        expect_eq("mkfifo", mkfifo(&p, 0o600), Ok(0))?;
        // The reader's open waits for a writer.
        let pc = p.clone();
        let pid = fork_child(move || {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(w) = open(&pc, libc::O_WRONLY, 0) else { return 1 };
            if write_fd(&w, b"hi") != Ok(2) {
                return 2;
            }
            0
        })?;
        let start = Instant::now();
        let rd = open(&p, libc::O_RDONLY, 0).map_err(|e| format!("open reader: {}", errno_name(e)))?;
        let waited = start.elapsed();
        let mut buf = [0u8; 8];
        let n = read_fd(&rd, &mut buf);
        expect_exited(wait_child(pid, T)?, 0)?;
        ensure!(waited >= Duration::from_millis(100), "open(O_RDONLY) returned after {waited:?}, before a writer opened");
        expect_eq("read", n, Ok(2))?;
        expect_eq("data", &buf[..2], b"hi")?;
        expect_eq("read after the writer exited", read_fd(&rd, &mut buf), Ok(0))?;
        drop(rd);
        // The writer's open waits for a reader.
        let pc = p.clone();
        let pid = fork_child(move || {
            std::thread::sleep(Duration::from_millis(200));
            let Ok(r) = open(&pc, libc::O_RDONLY, 0) else { return 1 };
            let mut b = [0u8; 8];
            if read_fd(&r, &mut b) != Ok(3) || &b[..3] != b"ok!" {
                return 2;
            }
            0
        })?;
        let start = Instant::now();
        let wr = open(&p, libc::O_WRONLY, 0).map_err(|e| format!("open writer: {}", errno_name(e)))?;
        let waited = start.elapsed();
        let w = write_fd(&wr, b"ok!");
        drop(wr);
        expect_exited(wait_child(pid, T)?, 0)?;
        ensure!(waited >= Duration::from_millis(100), "open(O_WRONLY) returned after {waited:?}, before a reader opened");
        expect_eq("write", w, Ok(3))?;
        std::fs::remove_file(&p).map_err(|e| format!("unlink: {e}"))
    });

    let d = dir.to_path_buf();
    r.check("fifo_rdwr_open_does_not_block", || {
        let p = d.join("fifo-rdwr");
        expect_eq("mkfifo", mkfifo(&p, 0o600), Ok(0))?;
        let f = open(&p, libc::O_RDWR, 0).map_err(|e| format!("open O_RDWR: {}", errno_name(e)))?;
        expect_eq("write", write_fd(&f, b"loop"), Ok(4))?;
        let mut buf = [0u8; 8];
        expect_eq("read", read_fd(&f, &mut buf), Ok(4))?;
        expect_eq("data", &buf[..4], b"loop")?;
        // Another open sees the same pipe.
        let w = open(&p, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| format!("second open: {}", errno_name(e)))?;
        expect_eq("write through the second open", write_fd(&w, b"2nd"), Ok(3))?;
        expect_eq("read", read_fd(&f, &mut buf), Ok(3))?;
        expect_eq("data", &buf[..3], b"2nd")?;
        drop((f, w));
        std::fs::remove_file(&p).map_err(|e| format!("unlink: {e}"))
    });
}
