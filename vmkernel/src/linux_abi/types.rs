//! Structures that system calls copy to and from user memory (x86-64
//! layouts). Offsets are written out so a reader can check them against the
//! C headers; host tests check them against the host's `libc`.

use super::{Abi, abi_struct};

abi_struct! {
    /// `struct timespec` (clock_gettime, nanosleep, futex timeouts).
    pub struct Timespec [16] {
        pub tv_sec: i64 = 0,
        pub tv_nsec: i64 = 8,
    }
}

abi_struct! {
    /// `struct timeval` (gettimeofday, select, rusage).
    pub struct Timeval [16] {
        pub tv_sec: i64 = 0,
        pub tv_usec: i64 = 8,
    }
}

impl super::Field for Timeval {
    const LEN: usize = 16;
    fn put(self, b: &mut [u8], off: usize) {
        self.encode(&mut b[off..]);
    }
    fn get(b: &[u8], off: usize) -> Self {
        Self::decode(&b[off..]).unwrap_or_default()
    }
}

/// `struct utsname`: six NUL-padded 65-byte strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utsname {
    pub sysname: [u8; 65],
    pub nodename: [u8; 65],
    pub release: [u8; 65],
    pub version: [u8; 65],
    pub machine: [u8; 65],
    pub domainname: [u8; 65],
}

impl Utsname {
    pub const FIELD_LEN: usize = 65;

    /// Builds one from strings, truncating each to 64 bytes (always NUL-terminated).
    pub fn new(
        sysname: &str,
        nodename: &str,
        release: &str,
        version: &str,
        machine: &str,
        domainname: &str,
    ) -> Self {
        fn f(s: &str) -> [u8; 65] {
            let mut a = [0u8; 65];
            let n = s.len().min(64);
            a[..n].copy_from_slice(&s.as_bytes()[..n]);
            a
        }
        Self {
            sysname: f(sysname),
            nodename: f(nodename),
            release: f(release),
            version: f(version),
            machine: f(machine),
            domainname: f(domainname),
        }
    }
    fn fields(&self) -> [&[u8; 65]; 6] {
        [
            &self.sysname,
            &self.nodename,
            &self.release,
            &self.version,
            &self.machine,
            &self.domainname,
        ]
    }
}

impl Abi for Utsname {
    const SIZE: usize = 6 * 65;
    fn encode(&self, b: &mut [u8]) {
        for (i, f) in self.fields().iter().enumerate() {
            b[i * 65..(i + 1) * 65].copy_from_slice(&f[..]);
        }
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        let f = |i: usize| -> [u8; 65] { core::array::from_fn(|j| b[i * 65 + j]) };
        Some(Self {
            sysname: f(0),
            nodename: f(1),
            release: f(2),
            version: f(3),
            machine: f(4),
            domainname: f(5),
        })
    }
}

abi_struct! {
    /// `struct sysinfo` (x86-64: longs are 8 bytes, `procs` is u16 then padding).
    pub struct Sysinfo [112] {
        pub uptime: i64 = 0,
        /// 1, 5 and 15 minute load averages, scaled by 1 << SI_LOAD_SHIFT.
        pub loads: [u64; 3] = 8,
        pub totalram: u64 = 32,
        pub freeram: u64 = 40,
        pub sharedram: u64 = 48,
        pub bufferram: u64 = 56,
        pub totalswap: u64 = 64,
        pub freeswap: u64 = 72,
        pub procs: u16 = 80,
        pub totalhigh: u64 = 88,
        pub freehigh: u64 = 96,
        pub mem_unit: u32 = 104,
    }
}
pub const SI_LOAD_SHIFT: u32 = 16;

abi_struct! {
    /// `struct rusage` (getrusage, wait4).
    pub struct Rusage [144] {
        pub ru_utime: Timeval = 0,
        pub ru_stime: Timeval = 16,
        pub ru_maxrss: i64 = 32,
        pub ru_ixrss: i64 = 40,
        pub ru_idrss: i64 = 48,
        pub ru_isrss: i64 = 56,
        pub ru_minflt: i64 = 64,
        pub ru_majflt: i64 = 72,
        pub ru_nswap: i64 = 80,
        pub ru_inblock: i64 = 88,
        pub ru_oublock: i64 = 96,
        pub ru_msgsnd: i64 = 104,
        pub ru_msgrcv: i64 = 112,
        pub ru_nsignals: i64 = 120,
        pub ru_nvcsw: i64 = 128,
        pub ru_nivcsw: i64 = 136,
    }
}
pub const RUSAGE_SELF: i32 = 0;
pub const RUSAGE_CHILDREN: i32 = -1;
pub const RUSAGE_THREAD: i32 = 1;

abi_struct! {
    /// `struct tms` (times): clock ticks at AT_CLKTCK per second.
    pub struct Tms [32] {
        pub tms_utime: i64 = 0,
        pub tms_stime: i64 = 8,
        pub tms_cutime: i64 = 16,
        pub tms_cstime: i64 = 24,
    }
}

abi_struct! {
    /// `struct rlimit` (getrlimit/setrlimit/prlimit64); RLIM_INFINITY is all ones.
    pub struct Rlimit [16] {
        pub rlim_cur: u64 = 0,
        pub rlim_max: u64 = 8,
    }
}
pub const RLIM_INFINITY: u64 = u64::MAX;
pub const RLIMIT_STACK: u32 = 3;
pub const RLIMIT_NOFILE: u32 = 7;
pub const RLIMIT_AS: u32 = 9;

abi_struct! {
    /// `struct winsize` (TIOCGWINSZ/TIOCSWINSZ).
    pub struct Winsize [8] {
        pub ws_row: u16 = 0,
        pub ws_col: u16 = 2,
        pub ws_xpixel: u16 = 4,
        pub ws_ypixel: u16 = 6,
    }
}

abi_struct! {
    /// The kernel's `struct termios` as TCGETS/TCSETS copy it: 19 control
    /// characters and no speed fields (glibc's larger `termios` is converted
    /// in user space).
    pub struct Termios [36] {
        pub c_iflag: u32 = 0,
        pub c_oflag: u32 = 4,
        pub c_cflag: u32 = 8,
        pub c_lflag: u32 = 12,
        pub c_line: u8 = 16,
        pub c_cc: [u8; 19] = 17,
    }
}

abi_struct! {
    /// `struct pollfd`.
    pub struct Pollfd [8] {
        pub fd: i32 = 0,
        pub events: i16 = 4,
        pub revents: i16 = 6,
    }
}

abi_struct! {
    /// `struct epoll_event`: packed on x86-64, so `data` sits at offset 4 and
    /// the structure is 12 bytes (not 16 as on other architectures).
    pub struct EpollEvent [12] {
        pub events: u32 = 0,
        pub u64: u64 = 4,
    }
}

abi_struct! {
    /// `struct iovec` (readv/writev).
    pub struct Iovec [16] {
        pub iov_base: u64 = 0,
        pub iov_len: u64 = 8,
    }
}

abi_struct! {
    /// `struct stat` as fstat/newfstatat return it on x86-64.
    pub struct Stat [144] {
        pub st_dev: u64 = 0,
        pub st_ino: u64 = 8,
        pub st_nlink: u64 = 16,
        pub st_mode: u32 = 24,
        pub st_uid: u32 = 28,
        pub st_gid: u32 = 32,
        pub st_rdev: u64 = 40,
        pub st_size: i64 = 48,
        pub st_blksize: i64 = 56,
        pub st_blocks: i64 = 64,
        pub st_atime: i64 = 72,
        pub st_atime_nsec: i64 = 80,
        pub st_mtime: i64 = 88,
        pub st_mtime_nsec: i64 = 96,
        pub st_ctime: i64 = 104,
        pub st_ctime_nsec: i64 = 112,
    }
}

abi_struct! {
    /// `struct clone_args` (clone3), version 2 (88 bytes, with cgroup).
    pub struct CloneArgs [88] {
        pub flags: u64 = 0,
        pub pidfd: u64 = 8,
        pub child_tid: u64 = 16,
        pub parent_tid: u64 = 24,
        pub exit_signal: u64 = 32,
        pub stack: u64 = 40,
        pub stack_size: u64 = 48,
        pub tls: u64 = 56,
        pub set_tid: u64 = 64,
        pub set_tid_size: u64 = 72,
        pub cgroup: u64 = 80,
    }
}
/// clone3 accepts a `size` of at least this (version 0: up to `tls`).
pub const CLONE_ARGS_SIZE_VER0: usize = 64;

// getdents64 record: d_ino u64, d_off i64, d_reclen u16, d_type u8, name, NUL,
// padded to 8 bytes.
pub const DT_UNKNOWN: u8 = 0;
pub const DT_FIFO: u8 = 1;
pub const DT_CHR: u8 = 2;
pub const DT_DIR: u8 = 4;
pub const DT_BLK: u8 = 6;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;
pub const DT_SOCK: u8 = 12;
const DIRENT64_NAME: usize = 19;

/// The record length of a `linux_dirent64` for a name of `name_len` bytes.
pub const fn dirent64_reclen(name_len: usize) -> usize {
    (DIRENT64_NAME + name_len + 1 + 7) & !7
}

/// Writes one `linux_dirent64` at the start of `out`; returns its length, or
/// `None` if it does not fit (getdents64 then stops, or fails with EINVAL if
/// nothing fit at all).
pub fn encode_dirent64(
    out: &mut [u8],
    ino: u64,
    off: i64,
    d_type: u8,
    name: &[u8],
) -> Option<usize> {
    let len = dirent64_reclen(name.len());
    if out.len() < len || len > u16::MAX as usize {
        return None;
    }
    let rec = &mut out[..len];
    rec.fill(0);
    super::put_u64(rec, 0, ino);
    super::put_u64(rec, 8, off as u64);
    super::put_u16(rec, 16, len as u16);
    rec[18] = d_type;
    rec[DIRENT64_NAME..DIRENT64_NAME + name.len()].copy_from_slice(name);
    Some(len)
}
