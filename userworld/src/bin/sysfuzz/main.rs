//! sysfuzz: random system calls with random and hostile arguments.
//!
//! `sysfuzz <seed> <calls> [workers] [threads] [only] [worker-calls]` forks
//! `workers` processes (default 4), each running `threads` threads (default
//! 3) that issue system calls 0..450 (or only those of `only`, a list like
//! `0-8,16,72-96`; `all` for every one) with arguments drawn from null, kernel-half,
//! non-canonical, unmapped, misaligned, read-only and page-straddling
//! pointers, valid buffers and paths, huge and negative lengths, random
//! flags, fds, pids and signals. Random fork/vfork/clone calls produce
//! children (and threads) that exit at once. Workers run as `nobody`, in
//! their own session, with /dev/null as stdin/stdout/stderr and a scratch
//! directory /tmp/sysfuzz, so nothing they do can reach the console, the
//! shell or the files of the image; a worker leaves after `worker-calls`
//! calls (default 2500) and a fresh one takes over; a worker that dies (a signal it sent
//! itself, a restored garbage signal frame) or hangs is replaced until
//! `calls` calls have been issued. Not issued: exit and exit_group (they
//! would only end a worker early). Address-space calls (munmap, mremap,
//! mprotect, MAP_FIXED mmap, brk, ...) and ARCH_SET_FS get addresses from
//! the worker's own scratch arena or the hostile set, never its code, heap
//! or stacks, so that workers live long enough to be useful.
//!
//! `sysfuzz heap [reps] [pattern...]` instead repeats fixed system-call
//! patterns and reports the kernel heap each keeps (see `heap.rs`).
//!
//! Ends with one line, `sysfuzz: calls N completed C ok K worker-deaths D
//! hung H (stuck in ...) hung-stopped S ... errno E1=n,E2=n,...`, and exit
//! status 0. A hung worker is one whose threads all made no progress for
//! `HANG_KILL`; `hung-stopped` counts those that were stopped (job control:
//! a worker may SIGSTOP its own group), the rest sat in calls that never
//! returned.
//!
//! `sysfuzz files <dir> <seed> <calls> [workers] [threads]` is the same
//! machinery aimed at one file system: only file calls (open/creat/openat
//! with random flags, read/write/pread/pwrite/readv/writev with bad
//! pointers and huge lengths, lseek, truncate/ftruncate/fallocate at
//! offsets up to past 4 GiB, rename/renameat2, link, symlink, unlink,
//! mkdir, rmdir, getdents, stat/statx, utimensat, fsync, copy_file_range,
//! sendfile, ...), on names under `<dir>`: short and long names, names
//! FAT cannot store, case twins, non-UTF-8 bytes, deep paths, the
//! datastore's own `.mantle-journal` and `.mantle-orphans`. Workers stay
//! root there (a FAT datastore is writable by root only), never chdir
//! (their working directory is `<dir>/w/x/y/z`, and no path climbs more
//! than one level from it) and call nothing outside that list. At the end
//! `<dir>` is removed and `sysfuzz: cleanup ok` (or the error) printed.

mod heap;

use std::arch::asm;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MAX_WORKERS: usize = 16;
const MAX_THREADS: usize = 8;
/// Histogram buckets: 0 = success, 1..=133 = errno, 134 = anything else.
const HIST: usize = 135;
/// Calls a worker issues before it exits and a fresh one takes over (so
/// the mappings and files it leaked are given back regularly), unless the
/// command line says otherwise.
const WORKER_CALLS: u64 = 2500;
/// A worker whose calls make no progress this long is killed.
const HANG_KILL: Duration = Duration::from_secs(10);
/// A killed worker still there after this long survived SIGKILL.
const UNKILLABLE: Duration = Duration::from_secs(30);
/// A thread stuck in one call this long is interrupted with SIGUSR1.
const NUDGE_AFTER: Duration = Duration::from_millis(30);
const ARENA_PAGES: usize = 16;
const PAGE: u64 = 4096;
const NOBODY: u32 = 65534;
const SCRATCH_DEFAULT: &str = "/tmp/sysfuzz";
/// The workers' working directory: deep enough that a few chdir("..")
/// keep them inside SCRATCH (files they create elsewhere would outlive the
/// run and look like a kernel leak); they also return to it regularly.
const WORKDIR_DEFAULT: &str = "/tmp/sysfuzz/w/x/y/z";

/// What this run aims at: the whole call table, or one directory's files.
struct Mode {
    /// `sysfuzz files <dir> ...`.
    files: bool,
    workdir: std::ffi::CString,
    paths: Vec<Vec<u8>>,
}

static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();

fn mode() -> &'static Mode {
    MODE.get().expect("mode set in main")
}

/// File calls for `sysfuzz files` (x86-64 numbers).
const FILE_CALLS: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 8, 17, 18, 19, 20, 21, 32, 33, 40, 72, 73, 74, 75, 76, 77, 78, 79, 82, 83, 84, 85, 86, 87, 88,
    89, 90, 91, 132, 137, 138, 162, 217, 221, 235, 257, 258, 262, 263, 264, 265, 266, 267, 268, 269, 280, 285, 295, 296,
    306, 316, 326, 332,
];

/// Names for `sysfuzz files`, relative to the working directory or under
/// the directory (`{}`); none climbs more than one level above the
/// working directory.
const FILE_NAMES: &[&str] = &[
    "f",
    "F",
    "d",
    "d/g",
    "d/g/h/i/j/k/l",
    "..",
    ".",
    "",
    "link",
    "A rather long file name with spaces.txt",
    "A rather long file name with spaces.TXT",
    "longfilename1.dat",
    "longfilename2.dat",
    "colon:name",
    "star*",
    "what?",
    "quote\"d",
    "lt<gt>",
    "pipe|",
    "back\\slash",
    "trailing.",
    "trailing ",
    " leading",
    "caf\u{e9}",
    "\u{65e5}\u{672c}",
    "\u{1F600}",
    "CON",
    "NUL.txt",
    "{}",
    "{}/f",
    "{}/d",
    "{}/d/g",
    "{}/w/x/y/z/f",
    "{}/../.mantle-journal",
    "{}/../.mantle-orphans",
    "{}/../.MANTLE-JOURNAL",
    "{}/.mantle-journal",
    "{}/./d/../f",
    "{}/f/notadir",
    "{}/nonexistent/x",
];

/// Counters shared by the coordinator and all workers (one MAP_SHARED page).
#[repr(C)]
struct Shared {
    issued: AtomicU64,
    completed: AtomicU64,
    hist: [AtomicU64; HIST],
    heartbeat: [AtomicU64; MAX_WORKERS],
    /// The call each thread is in (number + 1; 0 = none), for reports.
    current: [[AtomicU64; MAX_THREADS]; MAX_WORKERS],
    args: [[[AtomicU64; 6]; MAX_THREADS]; MAX_WORKERS],
}

/// System calls Mantle implements: drawn twice as often as the rest.
const IMPLEMENTED: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 28, 32, 33, 34, 35, 39, 40, 41,
    44, 45, 46, 47, 48, 53, 56, 57, 58, 59, 61, 62, 63, 72, 73, 74, 75, 76, 77, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90,
    91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 102, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 124, 127, 130, 131, 133, 137, 138, 140, 141, 157, 158, 162, 169, 186, 200, 201, 202, 204, 217, 218, 228,
    229, 230, 234, 247, 257, 258, 259, 260, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271, 273, 280, 292, 293, 302, 309,
    316, 318, 439,
];
/// Never issued: they end the calling worker (see the module comment).
const EXCLUDED: &[u64] = &[60, 231];
/// Calls whose first argument is an address in the caller's address space
/// that they unmap, remap, protect or lock.
const ADDRESS_SPACE: &[u64] = &[10, 11, 25, 26, 27, 28, 149, 150, 216, 237, 256, 279, 329];
const CLONE_LIKE: &[u64] = &[56, 57, 58, 435];

/// Paths of the whole-table run.
const PATHS: &[&str] = &[
    "/tmp/sysfuzz/f",
    "/tmp/sysfuzz/d",
    "/tmp/sysfuzz/d/g",
    "/tmp/sysfuzz",
    "f",
    "d",
    "link",
    ".",
    "..",
    "",
    "/",
    "/proc/self/stat",
    "/proc/self/maps",
    "/proc/self/status",
    "/proc/meminfo",
    "/proc/1/stat",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/bin/busybox",
    "/etc/passwd",
    "/nonexistent/x",
    "/tmp/sysfuzz/f/notadir",
    "/tmp/sysfuzz/../sysfuzz/./d",
];

const KERNEL_PTR: u64 = 0xffff_8000_0000_0000;
const HOSTILE: &[u64] = &[
    0,
    1,
    0xfff,
    0x1000,
    0xdead_0000,
    0x7fff_ffff_f000,
    0x7fff_ffff_fff8,
    0x7fff_ffff_ffff,
    0x0000_8000_0000_0000,
    0x0000_8000_0000_1000,
    KERNEL_PTR,
    KERNEL_PTR + 0x10_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX,
    u64::MAX - 7,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng(a ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    r.next()
}

/// A raw system call.
///
/// # Safety
/// The call may do anything the kernel lets this process do; callers pass
/// only addresses from the scratch arena or unmapped/hostile ones.
unsafe fn raw(n: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: the syscall instruction clobbers only RAX, RCX and R11; the
    // caller vouches for the arguments (see above).
    unsafe {
        asm!("syscall", inlateout("rax") n as i64 => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A fork/vfork/clone-like call whose child leaves at once with exit(0)
/// without touching memory (it may share this stack), whatever the flags.
///
/// # Safety
/// As [`raw`].
unsafe fn raw_clone_like(n: u64, a: [u64; 6]) -> i64 {
    let ret: i64;
    // SAFETY: in the parent this is one syscall instruction; in a child
    // (RAX = 0) it is followed only by the exit system call, which touches
    // neither stack nor memory.
    unsafe {
        asm!("syscall", "test rax, rax", "jnz 2f", "mov eax, 60", "xor edi, edi", "syscall", "ud2", "2:",
            inlateout("rax") n as i64 => ret, inlateout("rdi") a[0] => _, in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5], lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// One thread's scratch memory: guard page, `ARENA_PAGES` writable pages,
/// guard page, a read-only page.
#[derive(Clone, Copy)]
struct Arena {
    base: u64,
    ro: u64,
}

impl Arena {
    fn new(rng: &mut Rng) -> Option<Arena> {
        let total = (ARENA_PAGES + 3) as u64 * PAGE;
        // SAFETY: a fresh anonymous mapping that only this thread uses.
        let m = unsafe {
            libc::mmap(std::ptr::null_mut(), total as usize, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if m == libc::MAP_FAILED {
            return None;
        }
        let start = m as u64;
        let a = Arena { base: start + PAGE, ro: start + (ARENA_PAGES as u64 + 2) * PAGE };
        // SAFETY: protections within the mapping made just above.
        unsafe {
            libc::mprotect(start as *mut _, PAGE as usize, libc::PROT_NONE);
            libc::mprotect((a.base + ARENA_PAGES as u64 * PAGE) as *mut _, PAGE as usize, libc::PROT_NONE);
        }
        for p in 0..ARENA_PAGES as u64 {
            a.fill(rng, a.base + p * PAGE, PAGE as usize);
        }
        // SAFETY: the last page becomes read-only after it was filled.
        unsafe { libc::mprotect(a.ro as *mut _, PAGE as usize, libc::PROT_READ) };
        Some(a)
    }

    fn end(&self) -> u64 {
        self.base + ARENA_PAGES as u64 * PAGE
    }

    /// Writes random bytes at `[at, at+len)` if it lies inside the arena.
    fn fill(&self, rng: &mut Rng, at: u64, len: usize) {
        if at < self.base || at.saturating_add(len as u64) > self.end() {
            return;
        }
        for i in (0..len).step_by(8) {
            let v = rng.next().to_le_bytes();
            let n = (len - i).min(8);
            // SAFETY: inside the arena's writable pages (checked above);
            // the kernel may write there concurrently, which is the point.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), (at + i as u64) as *mut u8, n) };
        }
    }

    /// A NUL-terminated path in the arena (sometimes unterminated, running
    /// into the guard page).
    fn path(&self, rng: &mut Rng) -> u64 {
        let paths = &mode().paths;
        let p = paths[rng.below(paths.len() as u64) as usize].as_slice();
        let p = &p[..p.len().min(PAGE as usize - 64)];
        let (at, nul) = if rng.below(16) == 0 { (self.end() - p.len() as u64, false) } else { (self.base + rng.below(ARENA_PAGES as u64 - 1) * PAGE + rng.below(64), true) };
        // SAFETY: `at .. at + len (+ NUL)` lies inside the arena's writable pages.
        unsafe {
            std::ptr::copy_nonoverlapping(p.as_ptr(), at as *mut u8, p.len());
            if nul {
                *((at + p.len() as u64) as *mut u8) = 0;
            }
        }
        at
    }

    /// A signal-mask pointer whose mask (if it is in the arena) leaves
    /// SIGUSR1 unblocked; the read-only page becomes an arena copy.
    fn unblock_usr1(&self, set: u64) -> u64 {
        let set = if set >= self.ro && set < self.ro + PAGE { self.base + (set - self.ro) } else { set };
        if set >= self.base && set.saturating_add(8) <= self.end() {
            // SAFETY: eight bytes inside the arena's writable pages.
            unsafe {
                let p = set as *mut u64;
                p.write_unaligned(p.read_unaligned() & !(1u64 << (libc::SIGUSR1 - 1)));
            }
        }
        set
    }

    /// An address for the address-space calls: arena pages (aligned or
    /// not), the guard pages, or a hostile address.
    fn region(&self, rng: &mut Rng) -> u64 {
        match rng.below(4) {
            0 | 1 => self.base + rng.below(ARENA_PAGES as u64) * PAGE,
            2 => self.base - PAGE + rng.below((ARENA_PAGES as u64 + 2) * PAGE),
            _ => rng.pick(HOSTILE),
        }
    }
}

/// Per-call context of one fuzzing thread.
struct Caller {
    rng: Rng,
    arena: Arena,
    pids: [i64; 6],
    /// The calls to draw from, if the command line restricts them.
    only: Arc<Vec<u64>>,
}

impl Caller {
    fn arg(&mut self) -> u64 {
        let r = &mut self.rng;
        match r.below(18) {
            0 => 0,
            1 => r.below(8),
            2 => r.below(24),
            3 => r.below(4096),
            4 => (-(r.below(8) as i64) - 1) as u64,
            5 | 6 => r.pick(HOSTILE),
            7..=9 => {
                let at = self.arena.base + r.below(ARENA_PAGES as u64 * PAGE);
                let at = if r.below(2) == 0 { at & !7 } else { at };
                self.arena.fill(r, at, 64);
                at
            }
            10 => self.arena.path(r),
            11 => self.arena.ro + r.below(PAGE),
            12 => self.arena.end() - r.below(16),
            13 => *[1u64 << r.below(64), u64::MAX, i64::MAX as u64, 0x1_0000_0000, 0x8000_0000].get(r.below(5) as usize).unwrap_or(&0),
            14 => r.next() & 0xffff_ffff,
            15 => self.pids[r.below(self.pids.len() as u64) as usize] as u64,
            16 => r.below(66),
            _ => r.next(),
        }
    }

    /// A system-call number and its arguments, made safe for this worker
    /// to survive where the module comment says.
    fn call(&mut self) -> (u64, [u64; 6]) {
        if mode().files {
            return self.file_call();
        }
        let n = loop {
            let n = if !self.only.is_empty() {
                self.rng.pick(&self.only)
            } else if self.rng.below(3) < 2 {
                self.rng.pick(IMPLEMENTED)
            } else {
                self.rng.below(450)
            };
            if !EXCLUDED.contains(&n) {
                break n;
            }
        };
        let mut a = [0u64; 6];
        for x in a.iter_mut() {
            *x = self.arg();
        }
        let r = &mut self.rng;
        match n {
            9 if a[3] & (0x10 | 0x10_0000) != 0 => a[0] = self.arena.region(r),
            12 => {
                // brk: leave the heap alone; grow it, query it, or ask for nonsense.
                // SAFETY: brk(0) only reports the current break.
                let cur = unsafe { raw(12, [0; 6]) } as u64;
                a[0] = match r.below(3) {
                    0 => 0,
                    1 => cur + r.below(64) * PAGE,
                    _ => r.pick(&HOSTILE[8..]),
                };
            }
            25 => {
                a[0] = self.arena.region(r);
                if a[3] & 2 != 0 {
                    a[4] = self.arena.region(r);
                }
            }
            // ARCH_SET_FS would pull thread-local storage away: ask ARCH_GET_FS instead.
            158 if a[0] == 0x1002 => a[0] = 0x1003,
            // rt_sigaction on SIGUSR1 would disable the watchdog's nudges,
            // and so would a mask that blocks it.
            13 if a[0] == libc::SIGUSR1 as u64 => a[0] = libc::SIGUSR2 as u64,
            14 => a[1] = self.arena.unblock_usr1(a[1]),
            130 => a[0] = self.arena.unblock_usr1(a[0]),
            59 | 322 => {
                let i = if n == 59 { 0 } else { 1 };
                a[i] = self.arena.path(r);
            }
            _ if ADDRESS_SPACE.contains(&n) => a[0] = self.arena.region(r),
            _ => {}
        }
        (n, a)
    }
}

impl Caller {
    /// A file descriptor: mostly one this worker may have open.
    fn fd(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.arg(),
            1 => (-100i64) as u64, // AT_FDCWD
            2 => 3 + self.rng.below(32),
            _ => 3 + self.rng.below(6),
        }
    }

    /// A file offset or length: mostly within a few MiB, sometimes at or
    /// past FAT's 4 GiB limit, negative or absurd (never a valid size in
    /// between, whose zero fill would only cost time).
    fn size(&mut self) -> u64 {
        let r = &mut self.rng;
        match r.below(10) {
            0..=4 => r.below(256 << 10),
            5 => r.below(4 << 20) & !0x1ff,
            6 => r.below(16 << 20),
            7 => r.pick(&[0xFFFF_FFFF, 0x1_0000_0000, 0x1_0000_0001, 1 << 40, i64::MAX as u64]),
            8 => r.pick(&[u64::MAX, (-4096i64) as u64, 1 << 63, (-1i64 << 32) as u64]),
            _ => r.below(8),
        }
    }

    /// `open` flags: an access mode and a random set of the flags that
    /// matter to a file system, sometimes plain garbage.
    fn open_flags(&mut self) -> u64 {
        if self.rng.below(8) == 0 {
            return self.rng.next() & 0xffff_ffff;
        }
        let mut f = self.rng.below(3);
        for flag in [
            libc::O_CREAT,
            libc::O_TRUNC,
            libc::O_APPEND,
            libc::O_EXCL,
            libc::O_DIRECTORY,
            libc::O_NOFOLLOW,
            libc::O_SYNC,
            libc::O_DSYNC,
            libc::O_NONBLOCK,
            libc::O_TMPFILE,
        ] {
            if self.rng.below(4) == 0 {
                f |= flag as u64;
            }
        }
        f | libc::O_CLOEXEC as u64
    }

    /// A buffer pointer: the arena mostly (often running off its end),
    /// sometimes the read-only page or a hostile address.
    fn buf(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => self.rng.pick(HOSTILE),
            1 => self.arena.ro + self.rng.below(PAGE),
            _ => self.arena.base + self.rng.below(ARENA_PAGES as u64 * PAGE),
        }
    }

    /// A length for one read or write: mostly within the arena, sometimes
    /// huge.
    fn len(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.pick(&[u64::MAX, i64::MAX as u64, 1 << 32, (1 << 31) - 1]),
            1 => self.rng.below(1 << 20),
            _ => self.rng.below(3 * PAGE),
        }
    }

    /// A pointer to an 8-byte offset in the arena (for copy_file_range,
    /// sendfile, preadv2's neighbours), set to a `size()`, or null/hostile.
    fn offset_ptr(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => self.rng.pick(HOSTILE),
            _ => {
                let at = self.arena.base + self.rng.below(ARENA_PAGES as u64 * PAGE / 8 - 1) * 8;
                let v = self.size();
                // SAFETY: eight bytes inside the arena's writable pages.
                unsafe { (at as *mut u64).write(v) };
                at
            }
        }
    }

    /// An iovec array in the arena with 1..4 entries of `buf()`/`len()`.
    fn iovecs(&mut self) -> (u64, u64) {
        let n = 1 + self.rng.below(4);
        let at = self.arena.base + self.rng.below(ARENA_PAGES as u64 - 1) * PAGE;
        for i in 0..n {
            let (b, l) = (self.buf(), self.len());
            // SAFETY: 16 * 4 bytes at the start of an arena page.
            unsafe {
                ((at + i * 16) as *mut u64).write(b);
                ((at + i * 16 + 8) as *mut u64).write(l);
            }
        }
        (at, if self.rng.below(16) == 0 { self.arg() } else { n })
    }

    /// One call of `sysfuzz files`: a file call with arguments shaped for
    /// it (paths from `FILE_NAMES`, plausible descriptors, offsets and
    /// lengths with the hostile ones mixed in).
    fn file_call(&mut self) -> (u64, [u64; 6]) {
        // One call in four opens or creates something, so that most
        // descriptor calls meet an open file.
        let n = if self.rng.below(4) == 0 { self.rng.pick(&[2, 85, 257]) } else { self.rng.pick(FILE_CALLS) };
        let mut a = [0u64; 6];
        for x in a.iter_mut() {
            *x = self.arg();
        }
        let p = |c: &mut Caller| c.arena.path(&mut c.rng);
        match n {
            0 | 1 => a = [self.fd(), self.buf(), self.len(), 0, 0, 0],
            17 | 18 => a = [self.fd(), self.buf(), self.len(), self.size(), 0, 0],
            19 | 20 => {
                let (v, c) = self.iovecs();
                a = [self.fd(), v, c, 0, 0, 0];
            }
            295 | 296 => {
                let (v, c) = self.iovecs();
                a = [self.fd(), v, c, self.size(), 0, 0];
            }
            2 => a = [p(self), self.open_flags(), 0o644, 0, 0, 0],
            85 => a = [p(self), 0o644, 0, 0, 0, 0],
            257 => a = [self.fd(), p(self), self.open_flags(), 0o644, 0, 0],
            3 | 5 | 74 | 75 | 78 | 217 | 306 => a[0] = self.fd(),
            4 | 6 | 21 | 84 | 87 | 89 | 90 | 137 => a[0] = p(self),
            8 => a = [self.fd(), self.size(), self.rng.below(6), 0, 0, 0],
            32 | 33 => a = [self.fd(), self.fd(), 0, 0, 0, 0],
            40 => a = [self.fd(), self.fd(), self.offset_ptr(), self.len(), 0, 0],
            72 | 73 | 91 | 138 => a[0] = self.fd(),
            76 => a = [p(self), self.size(), 0, 0, 0, 0],
            77 => a = [self.fd(), self.size(), 0, 0, 0, 0],
            79 => a[0] = self.buf(),
            82 | 86 | 88 => a = [p(self), p(self), 0, 0, 0, 0],
            83 => a = [p(self), 0o755, 0, 0, 0, 0],
            132 | 235 => a[0] = p(self),
            221 => a = [self.fd(), self.size(), self.size(), self.rng.below(8), 0, 0],
            258 => a = [self.fd(), p(self), 0o755, 0, 0, 0],
            262 | 332 => {
                a[0] = self.fd();
                a[1] = p(self);
            }
            263 | 267 | 268 | 269 => {
                a[0] = self.fd();
                a[1] = p(self);
                if n == 263 {
                    a[2] = self.rng.pick(&[0, 0x200, 0x100, 0xffff]);
                }
            }
            264 | 316 => {
                a = [self.fd(), p(self), self.fd(), p(self), self.rng.pick(&[0, 1, 2, 4, 7]), 0];
            }
            265 => a = [self.fd(), p(self), self.fd(), p(self), self.rng.pick(&[0, 0x400, 0x1000]), 0],
            266 => a = [p(self), self.fd(), p(self), 0, 0, 0],
            280 => {
                a[0] = self.fd();
                a[1] = p(self);
            }
            285 => a = [self.fd(), self.rng.pick(&[0, 1, 2, 3, 8, 0x10, 0x20]), self.size(), self.size(), 0, 0],
            326 => a = [self.fd(), self.offset_ptr(), self.fd(), self.offset_ptr(), self.len(), 0],
            _ => {}
        }
        (n, a)
    }
}

/// Per-worker state shared by its threads and its watchdog.
struct Worker {
    shared: &'static Shared,
    slot: usize,
    calls: u64,
    /// Calls this worker issues before it leaves.
    worker_calls: u64,
    issued_here: AtomicU64,
    stop: AtomicBool,
    tids: [AtomicI32; MAX_THREADS],
    progress: [AtomicU64; MAX_THREADS],
}

fn fuzz_thread(w: Arc<Worker>, idx: usize, seed: u64, pids: [i64; 6], only: Arc<Vec<u64>>) {
    // SAFETY: gettid has no arguments.
    w.tids[idx].store(unsafe { raw(186, [0; 6]) } as i32, Ordering::SeqCst);
    let mut rng = Rng(seed);
    let Some(arena) = Arena::new(&mut rng) else { return };
    let mut c = Caller { rng, arena, pids, only };
    while !w.stop.load(Ordering::Relaxed) {
        if w.issued_here.fetch_add(1, Ordering::Relaxed) >= w.worker_calls || w.shared.issued.fetch_add(1, Ordering::Relaxed) >= w.calls {
            w.stop.store(true, Ordering::Relaxed);
            break;
        }
        let (n, a) = c.call();
        for (slot, v) in w.shared.args[w.slot][idx].iter().zip(a) {
            slot.store(v, Ordering::Relaxed);
        }
        w.shared.current[w.slot][idx].store(n + 1, Ordering::Relaxed);
        // SAFETY: arguments made by `Caller::call`: addresses are the
        // arena's or hostile, never this worker's live memory.
        let r = unsafe { if CLONE_LIKE.contains(&n) { raw_clone_like(n, a) } else { raw(n, a) } };
        w.shared.current[w.slot][idx].store(0, Ordering::Relaxed);
        let bucket = if (-4095..0).contains(&r) { ((-r) as usize).min(HIST - 1) } else { 0 };
        w.shared.hist[bucket].fetch_add(1, Ordering::Relaxed);
        w.shared.completed.fetch_add(1, Ordering::Relaxed);
        w.progress[idx].fetch_add(1, Ordering::Relaxed);
        if c.rng.below(16) == 0 {
            // SAFETY: chdir to a valid C string.
            unsafe { libc::chdir(mode().workdir.as_ptr()) };
        }
        if c.rng.below(64) == 0 {
            let p = c.arena.base + c.rng.below(ARENA_PAGES as u64) * PAGE;
            c.arena.fill(&mut c.rng, p, PAGE as usize);
        }
    }
}

extern "C" fn nudge(_: libc::c_int) {}

/// What every worker is told: the run's size and shape.
struct Plan {
    calls: u64,
    threads: usize,
    worker_calls: u64,
    only: Arc<Vec<u64>>,
}

/// Parses a call list like `0-8,16,72-96` (`all`: no restriction).
fn parse_only(s: &str) -> Option<Vec<u64>> {
    if s == "all" {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
        if a > b || b >= 1024 {
            return None;
        }
        out.extend((a..=b).filter(|n| !EXCLUDED.contains(n)));
    }
    if out.is_empty() { None } else { Some(out) }
}

/// The worker process: never returns.
fn worker(shared: &'static Shared, slot: usize, seed: u64, plan: &Plan, coordinator: i64) -> ! {
    let Plan { calls, threads, worker_calls, .. } = *plan;
    // SAFETY: process setup calls with valid arguments: a new session, the
    // console replaced by /dev/null, a scratch directory, no privileges,
    // SIGPIPE ignored and a no-op SIGUSR1 handler (no SA_RESTART) that
    // interrupts blocking calls.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        if null > 2 {
            libc::close(null);
        }
        libc::chdir(mode().workdir.as_ptr());
        // File mode stays root: a FAT datastore is writable by root only,
        // and its call list reaches nothing outside the directory.
        if !mode().files {
            libc::setgroups(0, std::ptr::null());
            if libc::setgid(NOBODY) != 0 || libc::setuid(NOBODY) != 0 || libc::getuid() != NOBODY {
                libc::_exit(3);
            }
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nudge as *const () as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let w = Arc::new(Worker {
        shared,
        slot,
        calls,
        worker_calls,
        issued_here: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        tids: Default::default(),
        progress: Default::default(),
    });
    // SAFETY: getpid/getppid have no arguments.
    let (me, parent) = unsafe { (libc::getpid() as i64, libc::getppid() as i64) };
    let pids = [me, parent, coordinator, 1, -1, 0];
    let mut handles = vec![];
    for t in 0..threads {
        let w = w.clone();
        let s = mix(seed, t as u64);
        let only = plan.only.clone();
        handles.push(std::thread::spawn(move || fuzz_thread(w, t, s, pids, only)));
    }
    // Watchdog: nudge threads stuck in one call; leave when all are done.
    let mut last = [(u64::MAX, Instant::now()); MAX_THREADS];
    let mut stopped_at: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let mut sum = 0;
        for ((progress, tid), last) in w.progress.iter().zip(&w.tids).zip(last.iter_mut()).take(threads) {
            let p = progress.load(Ordering::Relaxed);
            sum += p;
            if p != last.0 {
                *last = (p, Instant::now());
            } else if last.1.elapsed() > NUDGE_AFTER {
                let tid = tid.load(Ordering::SeqCst);
                if tid > 0 {
                    // SAFETY: tgkill to a thread of this process with a handled signal.
                    unsafe { raw(234, [me as u64, tid as u64, libc::SIGUSR1 as u64, 0, 0, 0]) };
                }
                last.1 = Instant::now();
            }
        }
        w.shared.heartbeat[w.slot].store(sum, Ordering::Relaxed);
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
        if w.stop.load(Ordering::Relaxed) {
            let at = *stopped_at.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
    }
    // SAFETY: ends the worker and all its threads.
    unsafe { libc::_exit(0) }
}

/// The state letter of `/proc/<pid>/stat` (R, S, T, Z...).
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn errno_name(e: usize) -> String {
    let names: &[(usize, &str)] = &[
        (1, "EPERM"), (2, "ENOENT"), (3, "ESRCH"), (4, "EINTR"), (5, "EIO"), (7, "E2BIG"), (8, "ENOEXEC"), (9, "EBADF"),
        (10, "ECHILD"), (11, "EAGAIN"), (12, "ENOMEM"), (13, "EACCES"), (14, "EFAULT"), (16, "EBUSY"), (17, "EEXIST"),
        (18, "EXDEV"), (20, "ENOTDIR"), (21, "EISDIR"), (22, "EINVAL"), (24, "EMFILE"), (25, "ENOTTY"), (27, "EFBIG"),
        (28, "ENOSPC"), (29, "ESPIPE"), (30, "EROFS"), (32, "EPIPE"), (34, "ERANGE"), (36, "ENAMETOOLONG"), (38, "ENOSYS"),
        (39, "ENOTEMPTY"), (40, "ELOOP"), (61, "ENODATA"), (75, "EOVERFLOW"), (88, "ENOTSOCK"), (95, "EOPNOTSUPP"),
        (97, "EAFNOSUPPORT"), (110, "ETIMEDOUT"),
    ];
    names.iter().find(|(n, _)| *n == e).map_or_else(|| format!("E{e}"), |(_, s)| s.to_string())
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "heap") {
        std::process::exit(heap::main(&args[2..]));
    }
    let files = args.get(1).is_some_and(|a| a == "files");
    let scratch = if files {
        if args.len() < 3 {
            eprintln!("usage: sysfuzz files <dir> <seed> <calls> [workers] [threads]");
            std::process::exit(2);
        }
        let dir = args.remove(2);
        args.remove(1);
        String::from(dir.trim_end_matches('/'))
    } else {
        String::from(SCRATCH_DEFAULT)
    };
    let workdir = if files { format!("{scratch}/w/x/y/z") } else { String::from(WORKDIR_DEFAULT) };
    let paths: Vec<Vec<u8>> = if files {
        let mut v: Vec<Vec<u8>> = FILE_NAMES.iter().map(|p| p.replace("{}", &scratch).into_bytes()).collect();
        v.push(vec![b'n'; 255]);
        v.push(vec![b'n'; 256]);
        v.push(b"bad\xff\xfe".to_vec());
        v.push([scratch.as_bytes(), b"/", &[b'x'; 200], b"/", &[b'y'; 200]].concat());
        v
    } else {
        PATHS.iter().map(|p| p.as_bytes().to_vec()).collect()
    };
    let Ok(workdir_c) = std::ffi::CString::new(workdir.clone()) else {
        eprintln!("sysfuzz: bad directory {scratch:?}");
        std::process::exit(2);
    };
    let _ = MODE.set(Mode { files, workdir: workdir_c, paths });
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok());
    let (Some(seed), Some(calls)) = (num(1), num(2)) else {
        eprintln!("usage: sysfuzz <seed> <calls> [workers] [threads] [only] [worker-calls]");
        std::process::exit(2);
    };
    let workers = num(3).unwrap_or(4).clamp(1, MAX_WORKERS as u64) as usize;
    let threads = num(4).unwrap_or(3).clamp(1, MAX_THREADS as u64) as usize;
    let Some(only) = parse_only(args.get(5).map_or("all", String::as_str)) else {
        eprintln!("sysfuzz: bad call list {:?} (like 0-8,16,72-96, or all)", args[5]);
        std::process::exit(2);
    };
    let plan = Plan { calls, threads, worker_calls: num(6).unwrap_or(WORKER_CALLS).max(1), only: Arc::new(only) };
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = std::fs::create_dir_all(&workdir) {
        eprintln!("sysfuzz: {scratch}: {e}");
        std::process::exit(1);
    }
    // SAFETY: valid C strings and ids; a shared anonymous mapping of one
    // zeroed `Shared` (all-zero atomics are valid), never unmapped.
    let shared: &'static Shared = unsafe {
        if !files {
            for d in [c"/tmp/sysfuzz", c"/tmp/sysfuzz/w", c"/tmp/sysfuzz/w/x", c"/tmp/sysfuzz/w/x/y", c"/tmp/sysfuzz/w/x/y/z"] {
                libc::chown(d.as_ptr(), NOBODY, NOBODY);
                libc::chmod(d.as_ptr(), 0o777);
            }
        }
        let m = libc::mmap(std::ptr::null_mut(), std::mem::size_of::<Shared>(), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0);
        if m == libc::MAP_FAILED {
            eprintln!("sysfuzz: no shared memory");
            std::process::exit(1);
        }
        &*(m as *const Shared)
    };
    println!(
        "sysfuzz: seed {seed} calls {calls} workers {workers} threads {threads} only {} worker-calls {}",
        args.get(5).map_or("all", String::as_str),
        plan.worker_calls
    );
    let start = Instant::now();
    // SAFETY: getpid has no arguments.
    let me = unsafe { libc::getpid() } as i64;
    // Per slot: worker pid, last heartbeat, since when, SIGKILLs sent.
    let mut slots: Vec<Option<(i32, u64, Instant, u32)>> = vec![None; workers];
    let mut unkillable: Vec<i32> = Vec::new();
    let (mut generation, mut deaths, mut hung, mut hung_stopped) = (0u64, 0u64, 0u64, 0u64);
    let mut signals = std::collections::BTreeMap::<i32, u64>::new();
    // System calls that a SIGUSR1 did not get out of: number -> times.
    let mut stuck = std::collections::BTreeMap::<u64, u64>::new();
    loop {
        // Reap workers (and any stray children that were re-parented here).
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            unkillable.retain(|&p| p != pid);
            if let Some(s) = slots.iter_mut().find(|s| s.is_some_and(|(p, _, _, _)| p == pid)) {
                *s = None;
                if libc::WIFSIGNALED(st) {
                    deaths += 1;
                    *signals.entry(libc::WTERMSIG(st)).or_default() += 1;
                } else if libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 3 && shared.completed.load(Ordering::Relaxed) == 0 {
                    eprintln!("sysfuzz: workers cannot drop to uid {NOBODY} (run as root)");
                    std::process::exit(1);
                }
            }
        }
        let done = shared.issued.load(Ordering::Relaxed) >= calls;
        if done && slots.iter().all(Option::is_none) {
            break;
        }
        for (i, s) in slots.iter_mut().enumerate() {
            match s {
                None if !done => {
                    generation += 1;
                    shared.heartbeat[i].store(0, Ordering::Relaxed);
                    for t in &shared.current[i] {
                        t.store(0, Ordering::Relaxed);
                    }
                    // SAFETY: this process is single-threaded, so the child may run Rust code.
                    let pid = unsafe { libc::fork() };
                    if pid == 0 {
                        worker(shared, i, mix(seed, generation), &plan, me);
                    }
                    if pid > 0 {
                        *s = Some((pid, 0, Instant::now(), 0));
                    }
                }
                Some((pid, beat, since, kills)) => {
                    let now = shared.heartbeat[i].load(Ordering::Relaxed);
                    if now != *beat {
                        *beat = now;
                        *since = Instant::now();
                    } else if *kills == 0 && since.elapsed() > HANG_KILL {
                        hung += 1;
                        let mut calls = Vec::new();
                        for (t, args) in shared.current[i].iter().zip(&shared.args[i]) {
                            let n = t.swap(0, Ordering::Relaxed);
                            if n > 0 {
                                *stuck.entry(n - 1).or_default() += 1;
                                let a: Vec<String> = args.iter().map(|v| format!("{:#x}", v.load(Ordering::Relaxed))).collect();
                                calls.push(format!("{}({})", n - 1, a.join(", ")));
                            }
                        }
                        // A stopped worker (a SIGSTOP it sent its own group) is
                        // legitimately still; any other state is a call that never returned.
                        let state = process_state(*pid);
                        if state == Some('T') {
                            hung_stopped += 1;
                        }
                        println!(
                            "sysfuzz: worker {pid} (state {}) stuck in {}: SIGKILL",
                            state.unwrap_or('?'),
                            calls.join(" ")
                        );
                        // SAFETY: kills our own worker process.
                        unsafe { libc::kill(*pid, libc::SIGKILL) };
                        *kills = 1;
                        *since = Instant::now();
                    } else if *kills > 0 && since.elapsed() > UNKILLABLE {
                        // SIGKILL must always end a process: this is a kernel bug.
                        println!("sysfuzz: worker {pid} survives SIGKILL for {} s", UNKILLABLE.as_secs());
                        unkillable.push(*pid);
                        *s = None;
                    }
                }
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cleanup = std::fs::remove_dir_all(&scratch);
    if files {
        match &cleanup {
            Ok(()) => println!("sysfuzz: cleanup ok"),
            Err(e) => println!("sysfuzz: cleanup of {scratch}: {e}"),
        }
    }
    let issued = shared.issued.load(Ordering::Relaxed).min(calls);
    let completed = shared.completed.load(Ordering::Relaxed);
    let ok = shared.hist[0].load(Ordering::Relaxed);
    let mut errs: Vec<(u64, usize)> = (1..HIST).map(|e| (shared.hist[e].load(Ordering::Relaxed), e)).filter(|(n, _)| *n > 0).collect();
    errs.sort_by(|a, b| b.cmp(a));
    let errs: Vec<String> = errs.iter().map(|(n, e)| format!("{}={n}", errno_name(*e))).collect();
    let sigs: Vec<String> = signals.iter().map(|(s, n)| format!("{s}={n}")).collect();
    let stuck: Vec<String> = stuck.iter().map(|(s, n)| format!("{s}={n}")).collect();
    println!(
        "sysfuzz: calls {issued} completed {completed} ok {ok} worker-deaths {deaths} (signals {}) hung {hung} (stuck in {}) hung-stopped {hung_stopped} workers-started {generation} seconds {} errno {}",
        sigs.join(","),
        stuck.join(","),
        start.elapsed().as_secs(),
        errs.join(",")
    );
    if !unkillable.is_empty() {
        println!("sysfuzz: FAILED: workers {unkillable:?} survived SIGKILL");
        std::process::exit(1);
    }
}
