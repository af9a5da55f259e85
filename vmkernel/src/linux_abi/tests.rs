//! Host tests: every number and layout that libc also knows is compared with
//! the host's `libc` crate, which is generated from the real Linux headers.

use super::Abi;
use super::auxv::*;
use super::errno::*;
use super::flags::*;
use super::signal::*;
use super::syscall;
use super::types::*;
use core::mem::{offset_of, size_of};

/// Asserts each of our constants equals libc's of the same name.
macro_rules! same {
    ($($ours:path => $theirs:path),* $(,)?) => {$(
        let (a, b) = ($ours as i128, $theirs as i128);
        // libc declares flag words as C `int`: bit 31 set reads as negative there.
        let same_bits = b < 0 && b >= i32::MIN as i128 && a as u32 == b as u32;
        assert!(a == b || same_bits, "{} = {a} vs {} = {b}", stringify!($ours), stringify!($theirs));
    )*};
}

/// Asserts size and every listed field offset against a libc struct.
macro_rules! layout {
    ($ours:ty, $theirs:ty, [$($f:ident),*]) => {{
        assert_eq!(<$ours as Abi>::SIZE, size_of::<$theirs>(), "sizeof {}", stringify!($theirs));
        $(assert_eq!(<$ours>::offset_of(stringify!($f)), Some(offset_of!($theirs, $f)),
            "{}.{}", stringify!($theirs), stringify!($f));)*
    }};
}

#[test]
fn syscall_numbers_match_libc() {
    let n = syscall::check_against_libc();
    assert!(n > 340, "only {n} numbers checked");
}

#[test]
fn syscall_names() {
    assert_eq!(syscall::name(0), Some("read"));
    assert_eq!(syscall::name(59), Some("execve"));
    assert_eq!(syscall::name(156), Some("_sysctl"));
    assert_eq!(syscall::name(231), Some("exit_group"));
    assert_eq!(syscall::name(262), Some("newfstatat"));
    assert_eq!(syscall::name(435), Some("clone3"));
    assert_eq!(syscall::name(336), None);
    assert_eq!(syscall::name(100_000), None);
    assert!(
        syscall::ALL.windows(2).all(|w| w[0] < w[1]),
        "table ascending, no duplicates"
    );
    for &nr in syscall::ALL {
        assert!(syscall::name(nr).is_some());
    }
    // The calls real programs make (docs/platform.md, "User worlds") all have numbers.
    use syscall::*;
    let needed = [
        SYS_read,
        SYS_write,
        SYS_openat,
        SYS_close,
        SYS_mmap,
        SYS_mprotect,
        SYS_futex,
        SYS_arch_prctl,
        SYS_poll,
        SYS_rt_sigaction,
        SYS_newfstatat,
        SYS_getdents64,
        SYS_mkdir,
        SYS_clone,
        SYS_exit,
        SYS_exit_group,
        SYS_socket,
        SYS_bind,
        SYS_listen,
        SYS_accept4,
        SYS_connect,
        SYS_getsockname,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_sendto,
        SYS_recvfrom,
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_wait,
        SYS_eventfd2,
        SYS_fcntl,
        SYS_execve,
        SYS_wait4,
        SYS_dup2,
        SYS_rt_sigreturn,
        SYS_ioctl,
        SYS_sysinfo,
        SYS_clone3,
        SYS_rseq,
        SYS_set_robust_list,
        SYS_statx,
        SYS_prlimit64,
        SYS_readlink,
        SYS_sigaltstack,
        SYS_sched_getaffinity,
        SYS_madvise,
        SYS_munmap,
        SYS_brk,
        SYS_getrandom,
    ];
    assert!(needed.iter().all(|&n| name(n).is_some()));
}

#[test]
fn errno_matches_libc() {
    same!(EPERM => libc::EPERM, ENOENT => libc::ENOENT, ESRCH => libc::ESRCH, EINTR => libc::EINTR,
        EIO => libc::EIO, ENXIO => libc::ENXIO, E2BIG => libc::E2BIG, ENOEXEC => libc::ENOEXEC,
        EBADF => libc::EBADF, ECHILD => libc::ECHILD, EAGAIN => libc::EAGAIN,
        EWOULDBLOCK => libc::EWOULDBLOCK, ENOMEM => libc::ENOMEM, EACCES => libc::EACCES,
        EFAULT => libc::EFAULT, ENOTBLK => libc::ENOTBLK, EBUSY => libc::EBUSY,
        EEXIST => libc::EEXIST, EXDEV => libc::EXDEV, ENODEV => libc::ENODEV,
        ENOTDIR => libc::ENOTDIR, EISDIR => libc::EISDIR, EINVAL => libc::EINVAL,
        ENFILE => libc::ENFILE, EMFILE => libc::EMFILE, ENOTTY => libc::ENOTTY,
        ETXTBSY => libc::ETXTBSY, EFBIG => libc::EFBIG, ENOSPC => libc::ENOSPC,
        ESPIPE => libc::ESPIPE, EROFS => libc::EROFS, EMLINK => libc::EMLINK, EPIPE => libc::EPIPE,
        EDOM => libc::EDOM, ERANGE => libc::ERANGE, EDEADLK => libc::EDEADLK,
        ENAMETOOLONG => libc::ENAMETOOLONG, ENOLCK => libc::ENOLCK, ENOSYS => libc::ENOSYS,
        ENOTEMPTY => libc::ENOTEMPTY, ELOOP => libc::ELOOP, ENOMSG => libc::ENOMSG,
        ENODATA => libc::ENODATA, ETIME => libc::ETIME, EOVERFLOW => libc::EOVERFLOW,
        EBADFD => libc::EBADFD, EILSEQ => libc::EILSEQ, ENOTSOCK => libc::ENOTSOCK,
        EDESTADDRREQ => libc::EDESTADDRREQ, EMSGSIZE => libc::EMSGSIZE,
        EPROTOTYPE => libc::EPROTOTYPE, ENOPROTOOPT => libc::ENOPROTOOPT,
        EPROTONOSUPPORT => libc::EPROTONOSUPPORT, ESOCKTNOSUPPORT => libc::ESOCKTNOSUPPORT,
        EOPNOTSUPP => libc::EOPNOTSUPP, ENOTSUP => libc::ENOTSUP,
        EPFNOSUPPORT => libc::EPFNOSUPPORT, EAFNOSUPPORT => libc::EAFNOSUPPORT,
        EADDRINUSE => libc::EADDRINUSE, EADDRNOTAVAIL => libc::EADDRNOTAVAIL,
        ENETDOWN => libc::ENETDOWN, ENETUNREACH => libc::ENETUNREACH,
        ENETRESET => libc::ENETRESET, ECONNABORTED => libc::ECONNABORTED,
        ECONNRESET => libc::ECONNRESET, ENOBUFS => libc::ENOBUFS, EISCONN => libc::EISCONN,
        ENOTCONN => libc::ENOTCONN, ESHUTDOWN => libc::ESHUTDOWN,
        ETOOMANYREFS => libc::ETOOMANYREFS, ETIMEDOUT => libc::ETIMEDOUT,
        ECONNREFUSED => libc::ECONNREFUSED, EHOSTDOWN => libc::EHOSTDOWN,
        EHOSTUNREACH => libc::EHOSTUNREACH, EALREADY => libc::EALREADY,
        EINPROGRESS => libc::EINPROGRESS, ESTALE => libc::ESTALE, EDQUOT => libc::EDQUOT,
        ECANCELED => libc::ECANCELED, EOWNERDEAD => libc::EOWNERDEAD);
}

#[test]
fn errno_return_values() {
    assert_eq!(to_ret(ENOSYS), (-38i64) as u64);
    assert_eq!(from_ret(to_ret(ENOSYS)), Some(ENOSYS));
    assert_eq!(from_ret(to_ret(MAX_ERRNO)), Some(MAX_ERRNO));
    assert_eq!(from_ret(0), None);
    // A high user address returned by mmap is not an error.
    assert_eq!(from_ret(0xffff_ffff_ffff_e000), None);
    assert_eq!(from_ret(0x7fff_ffff_f000), None);
}

#[test]
fn signals_match_libc() {
    same!(SIGHUP => libc::SIGHUP, SIGINT => libc::SIGINT, SIGQUIT => libc::SIGQUIT,
        SIGILL => libc::SIGILL, SIGTRAP => libc::SIGTRAP, SIGABRT => libc::SIGABRT,
        SIGBUS => libc::SIGBUS, SIGFPE => libc::SIGFPE, SIGKILL => libc::SIGKILL,
        SIGUSR1 => libc::SIGUSR1, SIGSEGV => libc::SIGSEGV, SIGUSR2 => libc::SIGUSR2,
        SIGPIPE => libc::SIGPIPE, SIGALRM => libc::SIGALRM, SIGTERM => libc::SIGTERM,
        SIGSTKFLT => libc::SIGSTKFLT, SIGCHLD => libc::SIGCHLD, SIGCONT => libc::SIGCONT,
        SIGSTOP => libc::SIGSTOP, SIGTSTP => libc::SIGTSTP, SIGTTIN => libc::SIGTTIN,
        SIGTTOU => libc::SIGTTOU, SIGURG => libc::SIGURG, SIGXCPU => libc::SIGXCPU,
        SIGXFSZ => libc::SIGXFSZ, SIGVTALRM => libc::SIGVTALRM, SIGPROF => libc::SIGPROF,
        SIGWINCH => libc::SIGWINCH, SIGIO => libc::SIGIO, SIGPWR => libc::SIGPWR,
        SIGSYS => libc::SIGSYS,
        SA_NOCLDSTOP => libc::SA_NOCLDSTOP, SA_NOCLDWAIT => libc::SA_NOCLDWAIT,
        SA_SIGINFO => libc::SA_SIGINFO, SA_ONSTACK => libc::SA_ONSTACK,
        SA_RESTART => libc::SA_RESTART, SA_NODEFER => libc::SA_NODEFER,
        SA_RESETHAND => libc::SA_RESETHAND,
        SIG_BLOCK => libc::SIG_BLOCK, SIG_UNBLOCK => libc::SIG_UNBLOCK,
        SIG_SETMASK => libc::SIG_SETMASK, SS_ONSTACK => libc::SS_ONSTACK,
        SS_DISABLE => libc::SS_DISABLE,
        CLD_EXITED => libc::CLD_EXITED, CLD_KILLED => libc::CLD_KILLED,
        CLD_DUMPED => libc::CLD_DUMPED, CLD_STOPPED => libc::CLD_STOPPED,
        CLD_CONTINUED => libc::CLD_CONTINUED, SI_USER => libc::SI_USER,
        SI_KERNEL => libc::SI_KERNEL, SI_QUEUE => libc::SI_QUEUE, SI_TKILL => libc::SI_TKILL);
    assert_eq!(sigmask(SIGHUP), 1);
    assert_eq!(sigmask(SIGKILL), 1 << 8);
    assert_eq!(sigmask(64), 1 << 63);
    assert_eq!(sigmask(0), 0);
    assert_eq!(sigmask(65), 0);
    assert_eq!(default_action(SIGCHLD), DefaultAction::Ignore);
    assert_eq!(default_action(SIGSEGV), DefaultAction::CoreDump);
    assert_eq!(default_action(SIGTERM), DefaultAction::Terminate);
    assert_eq!(default_action(SIGTSTP), DefaultAction::Stop);
    assert_eq!(default_action(SIGCONT), DefaultAction::Continue);
    assert_eq!(default_action(SIGRTMIN + 3), DefaultAction::Terminate);
}

#[test]
fn signal_frame_layouts_match_glibc() {
    // ucontext: glibc's ucontext_t agrees with the kernel's up to uc_sigmask.
    assert_eq!(offset_of!(libc::ucontext_t, uc_flags), 0);
    assert_eq!(offset_of!(libc::ucontext_t, uc_link), 8);
    assert_eq!(offset_of!(libc::ucontext_t, uc_stack), UContext::OFF_STACK);
    assert_eq!(
        offset_of!(libc::ucontext_t, uc_mcontext),
        UContext::OFF_MCONTEXT
    );
    assert_eq!(
        offset_of!(libc::ucontext_t, uc_sigmask),
        UContext::OFF_SIGMASK
    );
    assert_eq!(size_of::<libc::mcontext_t>(), SigContext::SIZE);
    assert_eq!(
        offset_of!(libc::mcontext_t, fpregs),
        SigContext::OFF_FPSTATE
    );
    // The general registers: our offsets are glibc's REG_* indices times 8.
    let c = SigContext {
        r8: 8,
        r9: 9,
        r10: 10,
        r11: 11,
        r12: 12,
        r13: 13,
        r14: 14,
        r15: 15,
        rdi: 101,
        rsi: 102,
        rbp: 103,
        rbx: 104,
        rdx: 105,
        rax: 106,
        rcx: 107,
        rsp: 108,
        rip: 109,
        eflags: 110,
        cs: 0x33,
        gs: 0,
        fs: 0,
        ss: 0x2b,
        err: 111,
        trapno: 112,
        oldmask: 113,
        cr2: 114,
        fpstate: 115,
    };
    let b = c.to_bytes();
    let reg = |i: i32| super::get_u64(&b, i as usize * 8);
    assert_eq!(reg(libc::REG_R8), 8);
    assert_eq!(reg(libc::REG_R15), 15);
    assert_eq!(reg(libc::REG_RDI), 101);
    assert_eq!(reg(libc::REG_RSI), 102);
    assert_eq!(reg(libc::REG_RBP), 103);
    assert_eq!(reg(libc::REG_RBX), 104);
    assert_eq!(reg(libc::REG_RDX), 105);
    assert_eq!(reg(libc::REG_RAX), 106);
    assert_eq!(reg(libc::REG_RCX), 107);
    assert_eq!(reg(libc::REG_RSP), 108);
    assert_eq!(reg(libc::REG_RIP), 109);
    assert_eq!(reg(libc::REG_EFL), 110);
    assert_eq!(reg(libc::REG_CSGSFS), 0x002b_0000_0000_0033);
    assert_eq!(reg(libc::REG_ERR), 111);
    assert_eq!(reg(libc::REG_TRAPNO), 112);
    assert_eq!(reg(libc::REG_OLDMASK), 113);
    assert_eq!(reg(libc::REG_CR2), 114);
    assert_eq!((SEGV_MAPERR, SEGV_ACCERR), (1, 2));
    assert_eq!(SigContext::decode(&b), Some(c));
    // stack_t and siginfo_t.
    assert_eq!(size_of::<libc::stack_t>(), StackT::SIZE);
    assert_eq!(offset_of!(libc::stack_t, ss_flags), 8);
    assert_eq!(offset_of!(libc::stack_t, ss_size), 16);
    assert_eq!(size_of::<libc::siginfo_t>(), SigInfo::SIZE);
    assert_eq!(offset_of!(libc::siginfo_t, si_code), 8);
    assert_eq!(KernelSigaction::SIZE, 32);
    assert_eq!(RtSigframe::SIZE, 440);
    assert_eq!(RtSigframe::OFF_INFO, 312);
}

#[test]
fn siginfo_members_sit_where_the_kernel_puts_them() {
    let s = SigInfo::child(CLD_EXITED, 42, 7, 3, 11, 12);
    let b = s.to_bytes();
    assert_eq!(super::get_u32(&b, 0), SIGCHLD);
    assert_eq!(super::get_u32(&b, 8), CLD_EXITED as u32);
    assert_eq!(super::get_u32(&b, 16), 42); // si_pid
    assert_eq!(super::get_u32(&b, 20), 7); // si_uid
    assert_eq!(super::get_u32(&b, 24), 3); // si_status
    assert_eq!(super::get_u64(&b, 32), 11); // si_utime
    assert_eq!(super::get_u64(&b, 40), 12); // si_stime
    let f = SigInfo::fault(SIGSEGV, SEGV_MAPERR, 0xdead_b000);
    assert_eq!(f.get64(SigInfo::ADDR), 0xdead_b000);
    assert_eq!(super::get_u64(&f.to_bytes(), 16), 0xdead_b000);
    let k = SigInfo::kill(SIGTERM, SI_USER, 5, 0);
    assert_eq!(SigInfo::decode(&k.to_bytes()), Some(k));
    assert_eq!(SigInfo::kernel(SIGKILL).si_code, SI_KERNEL);
}

#[test]
fn rt_sigframe_round_trip_and_placement() {
    let frame = RtSigframe {
        pretcode: 0x40_1000,
        uc: UContext {
            uc_flags: UC_FP_XSTATE | UC_SIGCONTEXT_SS,
            uc_link: 0,
            uc_stack: StackT {
                ss_sp: 0x1000,
                ss_flags: SS_DISABLE,
                ss_size: 0,
            },
            uc_mcontext: SigContext {
                rip: 0x40_2000,
                rsp: 0x7fff_0000,
                ..Default::default()
            },
            uc_sigmask: sigmask(SIGUSR1),
        },
        info: SigInfo::kill(SIGUSR1, SI_TKILL, 1, 0),
    };
    let b = frame.to_bytes();
    assert_eq!(b.len(), 440);
    assert_eq!(super::get_u64(&b, 0), 0x40_1000);
    assert_eq!(super::get_u64(&b, 8 + 40 + SigContext::OFF_RIP), 0x40_2000);
    assert_eq!(super::get_u64(&b, 8 + 296), 1 << 9);
    assert_eq!(super::get_u32(&b, 312), SIGUSR1);
    assert_eq!(RtSigframe::decode(&b), Some(frame));
    assert_eq!(RtSigframe::decode(&b[..439]), None);

    for sp in [0x7fff_ffff_e000u64, 0x7fff_ffff_e008, 0x7fff_ffff_dff3] {
        let (f, fp) = sigframe_layout(sp, false, FXSAVE_SIZE);
        assert_eq!(
            (f + 8) % 16,
            0,
            "handler entry looks like just after a call"
        );
        assert_eq!(fp % 64, 0);
        assert!(fp + FXSAVE_SIZE <= sp - 128, "red zone untouched");
        assert!(
            f + RtSigframe::SIZE as u64 <= fp,
            "frame below the FPU state"
        );
        let (f2, fp2) = sigframe_layout(sp, true, 0);
        assert_eq!(fp2, 0);
        assert_eq!((f2 + 8) % 16, 0);
        assert!(f2 + 440 <= sp);
    }
    let a = KernelSigaction {
        handler: 1,
        flags: SA_SIGINFO | SA_RESTORER,
        restorer: 2,
        mask: 3,
    };
    assert_eq!(KernelSigaction::decode(&a.to_bytes()), Some(a));
}

#[test]
fn struct_layouts_match_libc() {
    layout!(Timespec, libc::timespec, [tv_sec, tv_nsec]);
    layout!(Timeval, libc::timeval, [tv_sec, tv_usec]);
    layout!(
        Sysinfo,
        libc::sysinfo,
        [
            uptime, loads, totalram, freeram, sharedram, bufferram, totalswap, freeswap, procs,
            totalhigh, freehigh, mem_unit
        ]
    );
    layout!(
        Rusage,
        libc::rusage,
        [
            ru_utime,
            ru_stime,
            ru_maxrss,
            ru_ixrss,
            ru_idrss,
            ru_isrss,
            ru_minflt,
            ru_majflt,
            ru_nswap,
            ru_inblock,
            ru_oublock,
            ru_msgsnd,
            ru_msgrcv,
            ru_nsignals,
            ru_nvcsw,
            ru_nivcsw
        ]
    );
    layout!(
        Tms,
        libc::tms,
        [tms_utime, tms_stime, tms_cutime, tms_cstime]
    );
    layout!(Rlimit, libc::rlimit, [rlim_cur, rlim_max]);
    layout!(
        Winsize,
        libc::winsize,
        [ws_row, ws_col, ws_xpixel, ws_ypixel]
    );
    layout!(Pollfd, libc::pollfd, [fd, events, revents]);
    layout!(EpollEvent, libc::epoll_event, [events, u64]);
    layout!(Iovec, libc::iovec, [iov_base, iov_len]);
    layout!(
        Stat,
        libc::stat,
        [
            st_dev,
            st_ino,
            st_nlink,
            st_mode,
            st_uid,
            st_gid,
            st_rdev,
            st_size,
            st_blksize,
            st_blocks,
            st_atime,
            st_atime_nsec,
            st_mtime,
            st_mtime_nsec,
            st_ctime,
            st_ctime_nsec
        ]
    );
    assert_eq!(Utsname::SIZE, size_of::<libc::utsname>());
    assert_eq!(offset_of!(libc::utsname, machine), 4 * 65);
    assert_eq!(offset_of!(libc::utsname, domainname), 5 * 65);
    // The kernel termios shares glibc's prefix but has 19 control characters.
    assert_eq!(
        Termios::offset_of("c_line"),
        Some(offset_of!(libc::termios, c_line))
    );
    assert_eq!(
        Termios::offset_of("c_cc"),
        Some(offset_of!(libc::termios, c_cc))
    );
    assert_eq!(Termios::SIZE, 17 + 19);
    assert_eq!(CloneArgs::SIZE, 88);
    assert_eq!(CloneArgs::offset_of("tls"), Some(CLONE_ARGS_SIZE_VER0 - 8));
}

#[test]
fn encode_decode_round_trips() {
    let st = Stat {
        st_ino: 5,
        st_mode: 0o100644,
        st_size: 1234,
        st_mtime_nsec: 9,
        ..Default::default()
    };
    let b = st.to_bytes();
    assert_eq!(b.len(), 144);
    assert_eq!(super::get_u32(&b, 24), 0o100644);
    assert_eq!(Stat::decode(&b), Some(st));
    assert_eq!(Stat::decode(&b[..143]), None);

    let e = EpollEvent {
        events: poll::EPOLLIN | poll::EPOLLET,
        u64: 0x1122_3344_5566_7788,
    };
    let b = e.to_bytes();
    assert_eq!(
        b,
        [
            0x01, 0, 0, 0x80, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11
        ]
    );
    assert_eq!(EpollEvent::decode(&b), Some(e));

    let si = Sysinfo {
        uptime: 7,
        loads: [1, 2, 3],
        procs: 4,
        mem_unit: 1,
        ..Default::default()
    };
    let b = si.to_bytes();
    assert_eq!(super::get_u64(&b, 24), 3);
    assert_eq!(super::get_u16(&b, 80), 4);
    assert_eq!(Sysinfo::decode(&b), Some(si));

    let ru = Rusage {
        ru_stime: Timeval {
            tv_sec: 2,
            tv_usec: 3,
        },
        ru_nivcsw: 9,
        ..Default::default()
    };
    assert_eq!(Rusage::decode(&ru.to_bytes()), Some(ru));

    let u = Utsname::new("Linux", "mantle", "6.1.0-mantle", "#1", "x86_64", "(none)");
    let b = u.to_bytes();
    assert_eq!(&b[0..6], b"Linux\0");
    assert_eq!(&b[4 * 65..4 * 65 + 7], b"x86_64\0");
    assert_eq!(Utsname::decode(&b), Some(u));
    let long = "x".repeat(100);
    assert_eq!(
        Utsname::new(&long, "", "", "", "", "").sysname[64],
        0,
        "always terminated"
    );

    let t = Termios {
        c_lflag: 0o12,
        c_cc: [3; 19],
        ..Default::default()
    };
    assert_eq!(Termios::decode(&t.to_bytes()), Some(t));
    let ca = CloneArgs {
        flags: clone::CLONE_VM,
        exit_signal: SIGCHLD as u64,
        cgroup: 1,
        ..Default::default()
    };
    assert_eq!(CloneArgs::decode(&ca.to_bytes()), Some(ca));
}

#[test]
fn dirent64_records() {
    let mut buf = [0xffu8; 64];
    let n = encode_dirent64(&mut buf, 7, 1, DT_DIR, b"..").unwrap();
    assert_eq!(n, 24); // 19 + 2 + NUL = 22, padded to 24
    assert_eq!(super::get_u64(&buf, 0), 7);
    assert_eq!(super::get_u16(&buf, 16), 24);
    assert_eq!(buf[18], DT_DIR);
    assert_eq!(&buf[19..22], b"..\0");
    assert_eq!(buf[24], 0xff, "nothing written past the record");
    assert_eq!(dirent64_reclen(5), 32); // 19 + 5 + 1 = 25 -> 32
    assert_eq!(encode_dirent64(&mut buf[..23], 7, 1, DT_REG, b".."), None);
    assert_eq!(DT_REG, libc::DT_REG);
    assert_eq!(DT_LNK, libc::DT_LNK);
    assert_eq!(DT_DIR, libc::DT_DIR);
}

#[test]
fn flags_match_libc() {
    use arch_prctl::*;
    use clock::*;
    use clone::*;
    use fcntl::*;
    use futex::*;
    use ioctl::*;
    use mman::*;
    use poll::*;
    use random::*;
    use wait::*;
    same!(CSIGNAL => libc::CSIGNAL, CLONE_VM => libc::CLONE_VM, CLONE_FS => libc::CLONE_FS,
        CLONE_FILES => libc::CLONE_FILES, CLONE_SIGHAND => libc::CLONE_SIGHAND,
        CLONE_PIDFD => libc::CLONE_PIDFD, CLONE_PTRACE => libc::CLONE_PTRACE,
        CLONE_VFORK => libc::CLONE_VFORK, CLONE_PARENT => libc::CLONE_PARENT,
        CLONE_THREAD => libc::CLONE_THREAD, CLONE_NEWNS => libc::CLONE_NEWNS,
        CLONE_SYSVSEM => libc::CLONE_SYSVSEM, CLONE_SETTLS => libc::CLONE_SETTLS,
        CLONE_PARENT_SETTID => libc::CLONE_PARENT_SETTID,
        CLONE_CHILD_CLEARTID => libc::CLONE_CHILD_CLEARTID, CLONE_DETACHED => libc::CLONE_DETACHED,
        CLONE_UNTRACED => libc::CLONE_UNTRACED, CLONE_CHILD_SETTID => libc::CLONE_CHILD_SETTID,
        CLONE_NEWCGROUP => libc::CLONE_NEWCGROUP, CLONE_NEWUTS => libc::CLONE_NEWUTS,
        CLONE_NEWIPC => libc::CLONE_NEWIPC, CLONE_NEWUSER => libc::CLONE_NEWUSER,
        CLONE_NEWPID => libc::CLONE_NEWPID, CLONE_NEWNET => libc::CLONE_NEWNET,
        CLONE_IO => libc::CLONE_IO);
    same!(PROT_NONE => libc::PROT_NONE, PROT_READ => libc::PROT_READ, PROT_WRITE => libc::PROT_WRITE,
        PROT_EXEC => libc::PROT_EXEC, PROT_GROWSDOWN => libc::PROT_GROWSDOWN,
        PROT_GROWSUP => libc::PROT_GROWSUP, MAP_SHARED => libc::MAP_SHARED,
        MAP_PRIVATE => libc::MAP_PRIVATE, MAP_SHARED_VALIDATE => libc::MAP_SHARED_VALIDATE,
        MAP_TYPE => libc::MAP_TYPE, MAP_FIXED => libc::MAP_FIXED,
        MAP_ANONYMOUS => libc::MAP_ANONYMOUS, MAP_32BIT => libc::MAP_32BIT,
        MAP_GROWSDOWN => libc::MAP_GROWSDOWN, MAP_DENYWRITE => libc::MAP_DENYWRITE,
        MAP_EXECUTABLE => libc::MAP_EXECUTABLE, MAP_LOCKED => libc::MAP_LOCKED,
        MAP_NORESERVE => libc::MAP_NORESERVE, MAP_POPULATE => libc::MAP_POPULATE,
        MAP_NONBLOCK => libc::MAP_NONBLOCK, MAP_STACK => libc::MAP_STACK,
        MAP_HUGETLB => libc::MAP_HUGETLB, MAP_SYNC => libc::MAP_SYNC,
        MAP_FIXED_NOREPLACE => libc::MAP_FIXED_NOREPLACE, MREMAP_MAYMOVE => libc::MREMAP_MAYMOVE,
        MREMAP_FIXED => libc::MREMAP_FIXED, MADV_DONTNEED => libc::MADV_DONTNEED,
        MADV_FREE => libc::MADV_FREE, MADV_WILLNEED => libc::MADV_WILLNEED);
    same!(O_RDONLY => libc::O_RDONLY, O_WRONLY => libc::O_WRONLY, O_RDWR => libc::O_RDWR,
        O_ACCMODE => libc::O_ACCMODE, O_CREAT => libc::O_CREAT, O_EXCL => libc::O_EXCL,
        O_NOCTTY => libc::O_NOCTTY, O_TRUNC => libc::O_TRUNC, O_APPEND => libc::O_APPEND,
        O_NONBLOCK => libc::O_NONBLOCK, O_DSYNC => libc::O_DSYNC, O_ASYNC => libc::O_ASYNC,
        O_DIRECT => libc::O_DIRECT, O_DIRECTORY => libc::O_DIRECTORY,
        O_NOFOLLOW => libc::O_NOFOLLOW, O_NOATIME => libc::O_NOATIME,
        O_CLOEXEC => libc::O_CLOEXEC, O_SYNC => libc::O_SYNC, O_PATH => libc::O_PATH,
        O_TMPFILE => libc::O_TMPFILE, F_DUPFD => libc::F_DUPFD, F_GETFD => libc::F_GETFD,
        F_SETFD => libc::F_SETFD, F_GETFL => libc::F_GETFL, F_SETFL => libc::F_SETFL,
        F_GETLK => libc::F_GETLK, F_SETLK => libc::F_SETLK, F_SETLKW => libc::F_SETLKW,
        F_DUPFD_CLOEXEC => libc::F_DUPFD_CLOEXEC, FD_CLOEXEC => libc::FD_CLOEXEC,
        SEEK_SET => libc::SEEK_SET, SEEK_CUR => libc::SEEK_CUR, SEEK_END => libc::SEEK_END,
        AT_FDCWD => libc::AT_FDCWD, AT_SYMLINK_NOFOLLOW => libc::AT_SYMLINK_NOFOLLOW,
        AT_EACCESS => libc::AT_EACCESS, AT_REMOVEDIR => libc::AT_REMOVEDIR,
        AT_SYMLINK_FOLLOW => libc::AT_SYMLINK_FOLLOW, AT_NO_AUTOMOUNT => libc::AT_NO_AUTOMOUNT,
        AT_EMPTY_PATH => libc::AT_EMPTY_PATH, F_OK => libc::F_OK, X_OK => libc::X_OK,
        W_OK => libc::W_OK, R_OK => libc::R_OK);
    same!(FUTEX_WAIT => libc::FUTEX_WAIT, FUTEX_WAKE => libc::FUTEX_WAKE, FUTEX_FD => libc::FUTEX_FD,
        FUTEX_REQUEUE => libc::FUTEX_REQUEUE, FUTEX_CMP_REQUEUE => libc::FUTEX_CMP_REQUEUE,
        FUTEX_WAKE_OP => libc::FUTEX_WAKE_OP, FUTEX_LOCK_PI => libc::FUTEX_LOCK_PI,
        FUTEX_UNLOCK_PI => libc::FUTEX_UNLOCK_PI, FUTEX_TRYLOCK_PI => libc::FUTEX_TRYLOCK_PI,
        FUTEX_WAIT_BITSET => libc::FUTEX_WAIT_BITSET, FUTEX_WAKE_BITSET => libc::FUTEX_WAKE_BITSET,
        FUTEX_WAIT_REQUEUE_PI => libc::FUTEX_WAIT_REQUEUE_PI,
        FUTEX_CMP_REQUEUE_PI => libc::FUTEX_CMP_REQUEUE_PI, FUTEX_LOCK_PI2 => libc::FUTEX_LOCK_PI2,
        FUTEX_PRIVATE_FLAG => libc::FUTEX_PRIVATE_FLAG,
        FUTEX_CLOCK_REALTIME => libc::FUTEX_CLOCK_REALTIME);
    // Linux 6.1's mask (newer libc also strips robust-list bits no 6.1 call uses).
    assert_eq!(FUTEX_CMD_MASK & 0x7ff, 0x7ff & !0x180);
    same!(WNOHANG => libc::WNOHANG, WUNTRACED => libc::WUNTRACED, WSTOPPED => libc::WSTOPPED,
        WEXITED => libc::WEXITED, WCONTINUED => libc::WCONTINUED, WNOWAIT => libc::WNOWAIT,
        __WNOTHREAD => libc::__WNOTHREAD, __WALL => libc::__WALL, __WCLONE => libc::__WCLONE,
        P_ALL => libc::P_ALL, P_PID => libc::P_PID, P_PGID => libc::P_PGID, P_PIDFD => libc::P_PIDFD);
    same!(POLLIN => libc::POLLIN, POLLPRI => libc::POLLPRI, POLLOUT => libc::POLLOUT,
        POLLERR => libc::POLLERR, POLLHUP => libc::POLLHUP, POLLNVAL => libc::POLLNVAL,
        POLLRDNORM => libc::POLLRDNORM, POLLRDBAND => libc::POLLRDBAND,
        POLLWRNORM => libc::POLLWRNORM, POLLWRBAND => libc::POLLWRBAND, POLLRDHUP => libc::POLLRDHUP,
        EPOLL_CTL_ADD => libc::EPOLL_CTL_ADD, EPOLL_CTL_DEL => libc::EPOLL_CTL_DEL,
        EPOLL_CTL_MOD => libc::EPOLL_CTL_MOD, EPOLLIN => libc::EPOLLIN, EPOLLPRI => libc::EPOLLPRI,
        EPOLLOUT => libc::EPOLLOUT, EPOLLERR => libc::EPOLLERR, EPOLLHUP => libc::EPOLLHUP,
        EPOLLRDNORM => libc::EPOLLRDNORM, EPOLLRDBAND => libc::EPOLLRDBAND,
        EPOLLWRNORM => libc::EPOLLWRNORM, EPOLLWRBAND => libc::EPOLLWRBAND,
        EPOLLRDHUP => libc::EPOLLRDHUP, EPOLLEXCLUSIVE => libc::EPOLLEXCLUSIVE,
        EPOLLWAKEUP => libc::EPOLLWAKEUP, EPOLLONESHOT => libc::EPOLLONESHOT,
        EPOLLET => libc::EPOLLET, EPOLL_CLOEXEC => libc::EPOLL_CLOEXEC,
        EFD_SEMAPHORE => libc::EFD_SEMAPHORE, EFD_CLOEXEC => libc::EFD_CLOEXEC,
        EFD_NONBLOCK => libc::EFD_NONBLOCK);
    same!(CLOCK_REALTIME => libc::CLOCK_REALTIME, CLOCK_MONOTONIC => libc::CLOCK_MONOTONIC,
        CLOCK_PROCESS_CPUTIME_ID => libc::CLOCK_PROCESS_CPUTIME_ID,
        CLOCK_THREAD_CPUTIME_ID => libc::CLOCK_THREAD_CPUTIME_ID,
        CLOCK_MONOTONIC_RAW => libc::CLOCK_MONOTONIC_RAW,
        CLOCK_REALTIME_COARSE => libc::CLOCK_REALTIME_COARSE,
        CLOCK_MONOTONIC_COARSE => libc::CLOCK_MONOTONIC_COARSE,
        CLOCK_BOOTTIME => libc::CLOCK_BOOTTIME, TIMER_ABSTIME => libc::TIMER_ABSTIME);
    same!(TCGETS => libc::TCGETS, TCSETS => libc::TCSETS, TCSETSW => libc::TCSETSW,
        TCSETSF => libc::TCSETSF, TIOCSCTTY => libc::TIOCSCTTY, TIOCGPGRP => libc::TIOCGPGRP,
        TIOCSPGRP => libc::TIOCSPGRP, TIOCGWINSZ => libc::TIOCGWINSZ,
        TIOCSWINSZ => libc::TIOCSWINSZ, FIONREAD => libc::FIONREAD, TIOCNOTTY => libc::TIOCNOTTY,
        FIONBIO => libc::FIONBIO, FIONCLEX => libc::FIONCLEX, FIOCLEX => libc::FIOCLEX);
    same!(GRND_NONBLOCK => libc::GRND_NONBLOCK, GRND_RANDOM => libc::GRND_RANDOM,
        GRND_INSECURE => libc::GRND_INSECURE);
    assert_eq!(
        (ARCH_SET_GS, ARCH_SET_FS, ARCH_GET_FS, ARCH_GET_GS),
        (0x1001, 0x1002, 0x1003, 0x1004)
    );
    same!(RLIMIT_STACK => libc::RLIMIT_STACK, RLIMIT_NOFILE => libc::RLIMIT_NOFILE,
        RLIMIT_AS => libc::RLIMIT_AS, RLIM_INFINITY => libc::RLIM_INFINITY,
        RUSAGE_SELF => libc::RUSAGE_SELF, RUSAGE_CHILDREN => libc::RUSAGE_CHILDREN,
        RUSAGE_THREAD => libc::RUSAGE_THREAD);
    // wait status words decode with the libc macros.
    assert!(libc::WIFEXITED(status_exited(3) as i32));
    assert_eq!(libc::WEXITSTATUS(status_exited(3) as i32), 3);
    assert!(libc::WIFSIGNALED(status_signaled(9, false) as i32));
    assert_eq!(libc::WTERMSIG(status_signaled(11, true) as i32), 11);
    assert!(libc::WCOREDUMP(status_signaled(11, true) as i32));
    assert!(libc::WIFSTOPPED(status_stopped(19) as i32));
    assert_eq!(libc::WSTOPSIG(status_stopped(19) as i32), 19);
    assert!(libc::WIFCONTINUED(STATUS_CONTINUED as i32));
}

#[test]
fn auxv_keys_match_libc() {
    same!(AT_NULL => libc::AT_NULL, AT_IGNORE => libc::AT_IGNORE, AT_EXECFD => libc::AT_EXECFD,
        AT_PHDR => libc::AT_PHDR, AT_PHENT => libc::AT_PHENT, AT_PHNUM => libc::AT_PHNUM,
        AT_PAGESZ => libc::AT_PAGESZ, AT_BASE => libc::AT_BASE, AT_FLAGS => libc::AT_FLAGS,
        AT_ENTRY => libc::AT_ENTRY, AT_NOTELF => libc::AT_NOTELF, AT_UID => libc::AT_UID,
        AT_EUID => libc::AT_EUID, AT_GID => libc::AT_GID, AT_EGID => libc::AT_EGID,
        AT_PLATFORM => libc::AT_PLATFORM, AT_HWCAP => libc::AT_HWCAP,
        AT_CLKTCK => libc::AT_CLKTCK, AT_SECURE => libc::AT_SECURE,
        AT_BASE_PLATFORM => libc::AT_BASE_PLATFORM, AT_RANDOM => libc::AT_RANDOM,
        AT_HWCAP2 => libc::AT_HWCAP2, AT_EXECFN => libc::AT_EXECFN,
        AT_SYSINFO_EHDR => libc::AT_SYSINFO_EHDR, AT_MINSIGSTKSZ => libc::AT_MINSIGSTKSZ);
    assert_eq!(name(AT_RANDOM), Some("AT_RANDOM"));
    assert_eq!(name(1000), None);
}
