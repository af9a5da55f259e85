//! ubench — system-call, context-switch and process-creation micro
//! benchmarks. The same static binary runs as PID 1 on Mantle and on
//! Linux (in an initramfs) under the same emulator, so the ratio of the
//! two figures means something even though the emulator slows both.
//!
//! Prints `ubench: <name> <value> <unit>` lines, then powers off when it
//! is PID 1.

use std::time::Instant;

fn ensure_console() {
    // SAFETY: fcntl on fd 1 only queries it.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    // Linux initramfs without /dev/console: mount devtmpfs and open it.
    // SAFETY: plain system calls with valid C strings.
    unsafe {
        libc::mkdir(c"/dev".as_ptr(), 0o755);
        libc::mount(c"devtmpfs".as_ptr(), c"/dev".as_ptr(), c"devtmpfs".as_ptr(), 0, std::ptr::null());
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for t in 0..3 {
                libc::dup2(fd, t);
            }
        }
    }
}

fn syscall_round_trip(n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no arguments and no side effects.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// One round trip = two context switches between two processes.
fn pipe_ping_pong(n: u32) -> f64 {
    let mut a = [0i32; 2];
    let mut b = [0i32; 2];
    // SAFETY: pipes and fork in a single-threaded program; the child uses
    // only read/write/_exit.
    unsafe {
        libc::pipe(a.as_mut_ptr());
        libc::pipe(b.as_mut_ptr());
        let pid = libc::fork();
        let mut byte = [0u8; 1];
        if pid == 0 {
            for _ in 0..n {
                libc::read(a[0], byte.as_mut_ptr().cast(), 1);
                libc::write(b[1], byte.as_ptr().cast(), 1);
            }
            libc::_exit(0);
        }
        let t = Instant::now();
        for _ in 0..n {
            libc::write(a[1], byte.as_ptr().cast(), 1);
            libc::read(b[0], byte.as_mut_ptr().cast(), 1);
        }
        let el = t.elapsed();
        libc::waitpid(pid, std::ptr::null_mut(), 0);
        el.as_nanos() as f64 / n as f64
    }
}

fn fork_exec_wait(n: u32, me: &str) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let st = std::process::Command::new(me).arg("--exit").status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("ubench: spawning {me} failed: {st:?}");
            return f64::NAN;
        }
    }
    t.elapsed().as_nanos() as f64 / n as f64 / 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--exit") {
        return;
    }
    ensure_console();
    let me = std::fs::read_link("/proc/self/exe").map(|p| p.display().to_string()).unwrap_or_else(|_| args[0].clone());
    println!("ubench: start");
    println!("ubench: syscall_round_trip {:.0} ns", syscall_round_trip(200_000));
    println!("ubench: pipe_round_trip {:.0} ns", pipe_ping_pong(20_000));
    println!("ubench: fork_exec_wait {:.3} ms", fork_exec_wait(100, &me));
    println!("ubench: done");
    // SAFETY: getpid has no side effects; reboot powers off only as PID 1.
    if unsafe { libc::getpid() } == 1 {
        // SAFETY: plain system calls without pointers; as PID 1 this
        // benchmark owns the machine and powering off is its purpose.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}
