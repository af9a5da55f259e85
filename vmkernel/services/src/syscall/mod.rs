//! The system-call layer: Linux x86-64 numbers and semantics for the calls
//! user worlds make (measured on real static binaries; docs/platform.md, "User worlds"), plus
//! the narrow VMkernel API at its own numbers. Unknown calls return
//! `-ENOSYS` and are logged once per number; nothing a user world passes
//! can panic the kernel: every pointer goes through the checked copies.

mod epoll;
mod fs;
mod misc;
mod net;
mod proc;
mod unix;

pub use unix::collect_cycles as collect_unix_cycles;

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use vmkernel::linux_abi::errno::*;
use vmkernel::linux_abi::syscall as nr;
use vmkernel::vfs::Errno;

use crate::arch::trap::TrapFrame;
use crate::uw::process::{self, Process, Thread};

/// A handler's result: the value, or a negative errno.
pub type SysResult = Result<i64, i64>;

/// Internal: the call was interrupted by a signal; restart it if the
/// signal's action asks for that (SA_RESTART), else fail with EINTR.
pub const ERESTARTSYS: i64 = -512;

/// Internal: "not one of mine" from a handler group's `call`.
pub const NOT_MINE: i64 = i64::MIN;

pub fn err(e: Errno) -> i64 {
    -(e.0 as i64)
}

/// A zeroed buffer of `len` bytes for a system call, or ENOMEM when the
/// kernel heap cannot hold it: a call fails when memory runs out, it never
/// takes the kernel down (`vec!` would abort on a failed allocation).
pub fn zeroed_buffer(len: usize) -> Result<alloc::vec::Vec<u8>, i64> {
    let mut v = alloc::vec::Vec::new();
    v.try_reserve_exact(len).map_err(|_| neg(ENOMEM))?;
    v.resize(len, 0);
    Ok(v)
}

pub fn neg(e: i32) -> i64 {
    -(e as i64)
}

/// One bit per call number already reported as unimplemented.
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn report_unknown(p: &Process, n: u64) {
    if n < 512 {
        let bit = 1u64 << (n % 64);
        if REPORTED[(n / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
    }
    log::warn!("syscall: pid {} ({}) called unimplemented {} ({n}): ENOSYS", p.pid, p.name.lock(), nr::name(n).unwrap_or("?"));
}

/// The caller's thread and process.
pub struct Ctx {
    pub t: Arc<Thread>,
    pub p: Arc<Process>,
}

/// Entered from the SYSCALL stub with the caller's registers.
pub fn dispatch(f: &mut TrapFrame) {
    let Some(t) = process::current_thread() else { return };
    let p = t.process.clone();
    let n = f.rax;
    let a = [f.rdi, f.rsi, f.rdx, f.r10, f.r8, f.r9];
    let cx = Ctx { t, p };
    let r = match n {
        // exit and exit_group never return: nothing may hold a reference
        // to the thread or process on this stack when they end it, or the
        // last references are never dropped (the stack is freed, not
        // unwound) and both leak.
        60 | 231 => {
            drop(cx);
            let status = process::ExitStatus::Exited(a[0] as u8);
            if n == 60 { process::exit_thread(status) } else { process::exit_group(status) }
        }
        15 => {
            // rt_sigreturn restores every register, rax included.
            if !crate::uw::signal::sigreturn(f) {
                drop(cx);
                process::exit_group(process::ExitStatus::Signaled(11));
            }
            None
        }
        59 => match proc::execve(&cx, a, f) {
            Ok(()) => None,
            Err(e) => Some(Err(e)),
        },
        56..=58 => Some(proc::clone(&cx, n, a, f)),
        _ => Some(call(&cx, n, a)),
    };
    // Most calls return with no signal to act on: then the return path
    // need not look the thread up again.
    // (A stopped process's other threads stop on their way back, too.)
    let signals = crate::uw::signal::has_deliverable(&cx.t) || r.is_none() || cx.p.stopped.load(Ordering::Relaxed);
    drop(cx);
    if let Some(r) = r {
        let v = match r {
            Ok(v) => v,
            Err(ERESTARTSYS) if crate::uw::signal::restart_interrupted() => {
                // Re-execute the SYSCALL instruction after the handler.
                f.rip -= 2;
                n as i64
            }
            Err(ERESTARTSYS) => -(EINTR as i64),
            Err(e) => e,
        };
        f.rax = v as u64;
        log::trace!("pid {} {}({:#x}, {:#x}, {:#x}) = {}", cx_pid(), nr::name(n).unwrap_or("?"), a[0], a[1], a[2], v);
    }
    // (exec, sigreturn and signal-interrupted calls have r = None or
    // ERESTARTSYS; a signal that arrives from another CPU after the check
    // is acted on at the next entry, as one arriving after the return.)
    if signals {
        crate::uw::signal::deliver_on_return(f);
    }
}

fn cx_pid() -> u32 {
    process::current().map_or(0, |p| p.pid)
}

/// A handler group: answers the calls it owns, `NOT_MINE` for the rest.
type Group = fn(&Ctx, u64, [u64; 6]) -> SysResult;

/// The handler groups, asked in this order.
const GROUPS: [Group; 6] = [unix::call, net::call, epoll::call, fs::call, proc::call, misc::call];

/// Which group answers each call number below 512 (its index in `GROUPS`
/// plus one; 0 while not known yet): learned from the first call of that
/// number, so later calls go straight to their group instead of through
/// every group's `match`.
static GROUP_OF: [AtomicU8; 512] = [const { AtomicU8::new(0) }; 512];

/// Calls whose group depends on the arguments (the socket calls: AF_UNIX
/// or AF_INET, by the domain or the descriptor): always asked in order.
fn group_depends_on_arguments(n: u64) -> bool {
    matches!(n, 41..=55 | 288)
}

fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    if (vmkernel::vmk_api::VMK_BASE..vmkernel::vmk_api::VMK_BASE + 0x100).contains(&n) {
        return Ok(crate::vmk_calls::dispatch(n, [a[0], a[1], a[2], a[3]]));
    }
    let known = GROUP_OF.get(n as usize).filter(|_| !group_depends_on_arguments(n));
    if let Some(k) = known.map(|g| g.load(Ordering::Relaxed) as usize)
        && let Some(group) = k.checked_sub(1).and_then(|i| GROUPS.get(i))
    {
        return group(cx, n, a);
    }
    for (i, group) in GROUPS.iter().enumerate() {
        match group(cx, n, a) {
            Err(NOT_MINE) => continue,
            r => {
                if let Some(g) = known {
                    g.store(i as u8 + 1, Ordering::Relaxed);
                }
                return r;
            }
        }
    }
    match n {
        // Calls whose absence callers handle: quietly ENOSYS.
        nr::SYS_clone3 | nr::SYS_rseq | nr::SYS_statx | nr::SYS_io_uring_setup | nr::SYS_membarrier => Err(neg(ENOSYS)),
        _ => {
            report_unknown(&cx.p, n);
            Err(neg(ENOSYS))
        }
    }
}
