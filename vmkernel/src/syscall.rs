//! The system-call layer: Linux x86-64 numbers and semantics for the calls
//! user worlds make. Unknown calls return `-ENOSYS` and are logged once per
//! number; nothing a user world passes can panic the kernel.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::trap::TrapFrame;
use crate::process::{self, ExitStatus};
use crate::world;

const ENOSYS: i64 = 38;
const EBADF: i64 = 9;
const EINVAL: i64 = 22;

/// One bit per call number already reported as unimplemented.
static REPORTED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn report_unknown(nr: u64) {
    let name = alloc::format!("{nr}");
    if nr < 512 {
        let bit = 1u64 << (nr % 64);
        if REPORTED[(nr / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
    }
    let pid = process::current().map_or(0, |p| p.pid);
    log::warn!("syscall: pid {pid} called unimplemented system call {name}: ENOSYS");
}

/// Entered from the SYSCALL stub with the caller's registers.
pub extern "C" fn dispatch(f: &mut TrapFrame) {
    let (nr, a0, a1, a2) = (f.rax, f.rdi, f.rsi, f.rdx);
    let r: i64 = match nr {
        1 => sys_write(a0, a1, a2),
        24 => {
            world::yield_now();
            0
        }
        39 => process::current().map_or(0, |p| p.pid as i64),
        60 | 231 => process::exit_current(ExitStatus::Exited(a0 as u8)),
        n if (vmkernel::vmk_api::VMK_BASE..vmkernel::vmk_api::VMK_BASE + 0x100).contains(&n) => {
            crate::vmk::dispatch(n, [a0, a1, a2, f.r10])
        }
        _ => {
            report_unknown(nr);
            -ENOSYS
        }
    };
    f.rax = r as u64;
    process::check_pending_kill();
}

fn sys_write(fd: u64, buf: u64, len: u64) -> i64 {
    if fd != 1 && fd != 2 {
        return -EBADF;
    }
    let Some(p) = process::current() else { return -EINVAL };
    let len = len.min(1 << 20) as usize;
    let mut data = alloc::vec![0u8; len];
    if let Err(e) = p.copy_from_user(buf, &mut data) {
        return e;
    }
    crate::console::write_bytes(&data);
    len as i64
}
