//! A deliberately badly behaved user world. Everything it does must end in
//! an error code or the death of the offending process — never a kernel
//! crash — and the host must stay responsive afterwards. It checks Linux
//! semantics, so it also passes on the host kernel.
//!
//! Prints `hostile: <check> ok` lines and ends with `N passed, M failed`.

use std::time::Duration;

const KERNEL_PTR: u64 = 0xffff_8000_0000_1000;
const WILD_PTRS: [u64; 5] = [0x1, 0xdead_0000, 0x7fff_ffff_f000, KERNEL_PTR, u64::MAX - 4];

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Runs `f` in a forked child; returns the wait status.
fn in_child(f: impl FnOnce()) -> i32 {
    // SAFETY: fork in a single-threaded program; the child only calls
    // async-signal-safe functions and _exit.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            f();
            libc::_exit(0);
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, 0);
        st
    }
}

/// `hostile alloc <MiB>`: one writable anonymous mapping of that size;
/// prints `alloc: ok` or `alloc: <errno name>` (memory-limit tests).
fn alloc_mode(mib: usize) -> ! {
    let len = mib << 20;
    // SAFETY: an anonymous mapping, unmapped again.
    let m = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    if m == libc::MAP_FAILED {
        let e = errno();
        println!("alloc: {}", if e == libc::ENOMEM { "ENOMEM".to_string() } else { format!("errno {e}") });
        std::process::exit(1);
    }
    // SAFETY: unmaps the mapping made just above.
    unsafe { libc::munmap(m, len) };
    println!("alloc: ok");
    std::process::exit(0);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("alloc") {
        alloc_mode(args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1));
    }
    let (mut passed, mut failed) = (0, 0);
    let mut check = |name: &str, ok: bool, detail: String| {
        if ok {
            passed += 1;
            println!("hostile: {name} ok");
        } else {
            failed += 1;
            println!("hostile: {name} FAILED: {detail}");
        }
    };

    // 1. A null dereference kills only the child.
    // SAFETY: runs only in the forked child, which misbehaves on purpose and then dies or _exits.
    let st = in_child(|| unsafe {
        std::ptr::read_volatile(std::ptr::null::<u64>());
    });
    check("null deref kills the child with SIGSEGV", libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGSEGV, format!("status {st:#x}"));

    // 2. Executing garbage: SIGILL or SIGSEGV, child only.
    // SAFETY: runs only in the forked child, which misbehaves on purpose and then dies or _exits.
    let st = in_child(|| unsafe {
        let f: extern "C" fn() = std::mem::transmute(KERNEL_PTR as usize);
        f();
    });
    check("jump into the kernel half kills the child", libc::WIFSIGNALED(st), format!("status {st:#x}"));

    // 3. Wild pointers to system calls: EFAULT, nobody dies.
    let mut efaults = 0;
    let mut total = 0;
    // /dev/zero always has data, so a read must touch the buffer.
    // SAFETY: opens a device node by a valid C string.
    let zero = unsafe { libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY) };
    for &p in &WILD_PTRS {
        // SAFETY: raw system calls with deliberately bad pointers: the kernel must refuse them (EFAULT).
        let calls: [(&str, i64); 8] = unsafe {
            [
                ("read", libc::syscall(libc::SYS_read, zero, p, 16)),
                ("write", libc::syscall(libc::SYS_write, 1, p, 16)),
                ("openat", libc::syscall(libc::SYS_openat, libc::AT_FDCWD, p, 0)),
                ("newfstatat", libc::syscall(libc::SYS_newfstatat, libc::AT_FDCWD, c"/".as_ptr(), p, 0)),
                ("clock_gettime", libc::syscall(libc::SYS_clock_gettime, 0, p)),
                ("uname", libc::syscall(libc::SYS_uname, p)),
                ("rt_sigaction", libc::syscall(libc::SYS_rt_sigaction, libc::SIGUSR1, p, 0, 8)),
                ("pipe2", libc::syscall(libc::SYS_pipe2, p, 0)),
            ]
        };
        for (name, r) in calls {
            total += 1;
            if r == -1 && errno() == libc::EFAULT {
                efaults += 1;
            } else {
                println!("hostile: {name}({p:#x}) = {r} (errno {})", errno());
            }
        }
    }
    check("wild pointers give EFAULT", efaults == total, format!("{efaults} of {total}"));

    // 4. Unknown system calls: ENOSYS.
    // SAFETY: an unused system-call number has no effect.
    let r = unsafe { libc::syscall(1_000_000) };
    check("unknown system call gives ENOSYS", r == -1 && errno() == libc::ENOSYS, format!("{r} errno {}", errno()));

    // 5. A huge mapping: either refused or lazily granted; touching far more
    //    than the host has kills only the toucher.
    let huge: usize = 64 << 30;
    // SAFETY: an anonymous mapping; the kernel picks the address.
    let m = unsafe { libc::mmap(std::ptr::null_mut(), huge, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) };
    let ok = m != libc::MAP_FAILED || errno() == libc::ENOMEM;
    check("64 GiB mmap is refused or lazy", ok, format!("errno {}", errno()));
    if m != libc::MAP_FAILED {
        // SAFETY: unmaps the mapping made just above.
        unsafe { libc::munmap(m, huge) };
    }
    let touch_mib: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    if touch_mib > 0 {
        // SAFETY: runs only in the forked child, which misbehaves on purpose and then dies or _exits.
        let st = in_child(|| unsafe {
            let len = touch_mib << 20;
            let p = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0) as *mut u8;
            if p as *mut libc::c_void == libc::MAP_FAILED {
                libc::_exit(3);
            }
            let mut off = 0;
            while off < len {
                std::ptr::write_volatile(p.add(off), 1);
                off += 4096;
            }
            libc::_exit(4);
        });
        check("touching more memory than the host has ends only the toucher", libc::WIFSIGNALED(st) || libc::WEXITSTATUS(st) == 3, format!("status {st:#x}"));
    }

    // 6. Fork until refused, in a process group we then kill.
    // SAFETY: runs only in the forked child, which misbehaves on purpose and then dies or _exits.
    let st = in_child(|| unsafe {
        libc::setpgid(0, 0);
        let mut n = 0;
        loop {
            let pid = libc::fork();
            if pid == 0 {
                libc::pause();
                libc::_exit(0);
            }
            if pid < 0 {
                let e = errno();
                println!("hostile: fork refused after {n} children (errno {e})");
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
                libc::kill(0, libc::SIGKILL);
                libc::_exit(if e == libc::EAGAIN || e == libc::ENOMEM { 0 } else { 1 });
            }
            n += 1;
            if n > 20_000 {
                libc::kill(0, libc::SIGKILL);
                libc::_exit(2);
            }
        }
    });
    // The group leader killed itself with its group.
    check("fork bomb is refused and cleaned up", libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL || st == 0, format!("status {st:#x}"));
    std::thread::sleep(Duration::from_millis(200));
    // Reap anything left (orphans go to init).
    println!("{passed} passed, {failed} failed");
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
