//! Randomness, bad pointers, bad descriptors, unknown calls, identity, system info.

use crate::harness::*;
use std::os::fd::{AsRawFd, IntoRawFd};

/// An address in the kernel half of the x86-64 address space.
const KERNEL_ADDR: usize = 0xffff_8000_0000_1000;

fn getrandom(buf: &mut [u8], flags: u32) -> Result<i64, i32> {
    // SAFETY: `buf` is writable for its length.
    sys(unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), buf.len(), flags) })
}

fn cstr_field(f: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

pub fn run(r: &mut Runner, dir: &std::path::Path) {
    r.check("getrandom_fills_buffer", || {
        let mut buf = [0u8; 256];
        expect_eq("getrandom", getrandom(&mut buf, 0), Ok(256))?;
        // 256 random bytes that are all zero: probability 2^-2048.
        ensure!(buf.iter().any(|&b| b != 0), "buffer still all zero");
        let mut small = [0u8; 16];
        expect_eq("GRND_NONBLOCK", getrandom(&mut small, libc::GRND_NONBLOCK), Ok(16))
    });

    r.check("getrandom_calls_differ", || {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        getrandom(&mut a, 0).map_err(|e| errno_name(e).to_string())?;
        getrandom(&mut b, 0).map_err(|e| errno_name(e).to_string())?;
        ensure!(a != b, "two getrandom calls returned the same 32 bytes");
        Ok(())
    });

    r.check("efault_write_bad_buffer", || {
        // A pipe rather than fd 1: if stdout were /dev/null the kernel would never
        // touch the buffer.
        let (_rd, wr) = pipe();
        // SAFETY: the kernel validates the pointer; nothing in this process is touched.
        let r = unsafe { libc::syscall(libc::SYS_write, wr.as_raw_fd(), 0x1usize, 10usize) };
        expect_errno("write(pipe, 0x1, 10)", sys(r), libc::EFAULT)
    });

    r.check("efault_read_into_kernel_address", || {
        let (rd, wr) = pipe();
        write_fd(&wr, b"0123456789").map_err(|e| errno_name(e).to_string())?;
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_read, rd.as_raw_fd(), KERNEL_ADDR, 10usize) };
        expect_errno("read into kernel address", sys(r), libc::EFAULT)
    });

    r.check("efault_stat_bad_path", || {
        // SAFETY: an all-zero `stat` is valid; the path pointer is deliberately bad.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, 0x1usize, &mut st, 0) };
        expect_errno("newfstatat(bad path)", sys(r), libc::EFAULT)?;
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, KERNEL_ADDR, libc::O_RDONLY) };
        expect_errno("openat(kernel path)", sys(r), libc::EFAULT)
    });

    r.check("efault_bad_out_pointers", || {
        let p = dir.join("efault");
        std::fs::write(&p, b"x").map_err(|e| e.to_string())?;
        let c = cpath(&p);
        // SAFETY: valid path; the stat buffer pointer is deliberately bad.
        let r = unsafe { libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, c.as_ptr(), KERNEL_ADDR, 0) };
        expect_errno("newfstatat(stat buf in kernel half)", sys(r), libc::EFAULT)?;
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_MONOTONIC, 0x8usize) };
        expect_errno("clock_gettime(bad ts)", sys(r), libc::EFAULT)?;
        // SAFETY: as above.
        let r = unsafe { libc::syscall(libc::SYS_pipe2, 0x8usize, 0) };
        expect_errno("pipe2(bad array)", sys(r), libc::EFAULT)
    });

    r.check("ebadf_closed_fd", || {
        let (rd, wr) = pipe();
        let (rfd, wfd) = (rd.into_raw_fd(), wr.into_raw_fd());
        // SAFETY: closing descriptors we own; afterwards they are only used to observe EBADF.
        unsafe {
            libc::close(rfd);
            libc::close(wfd);
        }
        let mut b = [0u8; 4];
        // SAFETY: valid buffers; the descriptors are closed.
        expect_errno("read", sys_size(unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 4) }), libc::EBADF)?;
        // SAFETY: as above.
        expect_errno("write", sys_size(unsafe { libc::write(wfd, b.as_ptr().cast(), 4) }), libc::EBADF)?;
        // SAFETY: as above.
        expect_errno("close", sys(unsafe { libc::close(rfd) }), libc::EBADF)?;
        expect_errno("fstat", fstat(&rfd).map(|_| 0), libc::EBADF)?;
        // SAFETY: integer arguments.
        expect_errno("fcntl", sys(unsafe { libc::fcntl(wfd, libc::F_GETFD) }), libc::EBADF)
    });

    r.check("ebadf_negative_fd", || {
        let mut b = [0u8; 4];
        // SAFETY: valid buffer.
        expect_errno("read(-1)", sys_size(unsafe { libc::read(-1, b.as_mut_ptr().cast(), 4) }), libc::EBADF)?;
        // SAFETY: integer argument.
        expect_errno("close(-1)", sys(unsafe { libc::close(-1) }), libc::EBADF)
    });

    r.check("enosys_unknown_syscalls", || {
        for nr in [500i64, 1000, 100_000] {
            // SAFETY: an unassigned system-call number has no effect.
            let r = unsafe { libc::syscall(nr as libc::c_long) };
            expect_errno(&format!("syscall({nr})"), sys(r), libc::ENOSYS)?;
        }
        Ok(())
    });

    r.check("uid_gid_match_file_owner", || {
        let p = dir.join("owner");
        std::fs::write(&p, b"").map_err(|e| e.to_string())?;
        let st = stat_path(&p, true).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: identity calls have no preconditions.
        let (uid, euid, gid, egid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid(), libc::getegid()) };
        expect_eq("new file's uid = geteuid", st.st_uid, euid)?;
        expect_eq("new file's gid = getegid", st.st_gid, egid)?;
        let (mut ru, mut eu, mut su) = (0, 0, 0);
        // SAFETY: valid out-pointers.
        ok("getresuid", sys(unsafe { libc::getresuid(&mut ru, &mut eu, &mut su) }))?;
        expect_eq("getresuid real", ru, uid)?;
        expect_eq("getresuid effective", eu, euid)?;
        let (mut rg, mut eg, mut sg) = (0, 0, 0);
        // SAFETY: valid out-pointers.
        ok("getresgid", sys(unsafe { libc::getresgid(&mut rg, &mut eg, &mut sg) }))?;
        expect_eq("getresgid real", rg, gid)?;
        expect_eq("getresgid effective", eg, egid)
    });

    r.check("uname", || {
        // SAFETY: an all-zero utsname is valid; the kernel fills it.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        ok("uname", sys(unsafe { libc::uname(&mut u) }))?;
        ensure!(!cstr_field(&u.sysname).is_empty(), "sysname is empty");
        ensure!(!cstr_field(&u.release).is_empty(), "release is empty");
        expect_eq("machine", cstr_field(&u.machine), "x86_64".to_string())
    });

    r.check("sysinfo", || {
        // SAFETY: an all-zero sysinfo is valid; the kernel fills it.
        let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointer.
        ok("sysinfo", sys(unsafe { libc::sysinfo(&mut si) }))?;
        ensure!(si.mem_unit >= 1, "mem_unit {}", si.mem_unit);
        ensure!(si.totalram > 0, "totalram is 0");
        ensure!(si.freeram <= si.totalram, "freeram {} > totalram {}", si.freeram, si.totalram);
        ensure!(si.procs >= 1, "procs is 0");
        ensure!(si.uptime >= 0, "negative uptime");
        Ok(())
    });

    r.check("umask_roundtrip", || {
        // SAFETY: umask has no preconditions; the old mask is restored.
        let old = unsafe { libc::umask(0o077) };
        // SAFETY: as above.
        let seen = unsafe { libc::umask(old) };
        expect_eq("umask returns the previous mask", seen, 0o077)?;
        let p = dir.join("umask");
        // SAFETY: as above.
        unsafe { libc::umask(0o027) };
        let f = open(&p, libc::O_CREAT | libc::O_WRONLY, 0o666);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let f = f.map_err(|e| errno_name(e).to_string())?;
        expect_eq("mode under umask 027", fstat(&f).map(|s| s.st_mode & 0o777), Ok(0o640))
    });
}
