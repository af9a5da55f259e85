//! Frame-pointer stack walking (the kernel is built with frame pointers).

use crate::mm;

/// Calls `f(depth, return_address)` for each frame above `rbp`.
pub fn walk(mut rbp: u64, mut f: impl FnMut(usize, u64)) {
    for depth in 0..32 {
        if rbp == 0 || !rbp.is_multiple_of(8) || !mm::is_kernel_readable(rbp, 16) {
            return;
        }
        // SAFETY: the 16 bytes at rbp were just checked to be mapped.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            return;
        }
        f(depth, ret);
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}

/// Walks from the caller's frame.
pub fn walk_here(f: impl FnMut(usize, u64)) {
    let rbp: u64;
    // SAFETY: reads the frame-pointer register.
    unsafe { core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags)) };
    walk(rbp, f);
}
