//! Symbols the compiler and the precompiled `core` expect from a C runtime.
//!
//! `memcpy` and friends use `rep movsb`/`rep stosb` in asm: a Rust loop
//! would be turned back into a call to `memcpy` by the optimiser.

use core::arch::asm;

/// C `memcpy`.
///
/// # Safety
/// `src` and `dst` are valid for `n` bytes and do not overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // Whole 64-byte blocks by eight 8-byte moves, the rest by `rep movsb`.
    // Under QEMU's TCG a `rep` string instruction runs one element per
    // translated-block pass, so byte-wise `rep movsb` copied ~8x slower
    // than this loop (the datastore's read path was bound by it). Loads
    // of each half-block come before its stores, so a forward overlap
    // (dst below src, what `memmove` sends here) stays correct.
    // SAFETY: the caller guarantees valid ranges (non-overlapping, or dst
    // below src).
    unsafe {
        asm!(
            "cmp rcx, 64",
            "jb 3f",
            "2:",
            "mov rax, [rsi]",
            "mov rdx, [rsi + 8]",
            "mov r8, [rsi + 16]",
            "mov r9, [rsi + 24]",
            "mov [rdi], rax",
            "mov [rdi + 8], rdx",
            "mov [rdi + 16], r8",
            "mov [rdi + 24], r9",
            "mov rax, [rsi + 32]",
            "mov rdx, [rsi + 40]",
            "mov r8, [rsi + 48]",
            "mov r9, [rsi + 56]",
            "mov [rdi + 32], rax",
            "mov [rdi + 40], rdx",
            "mov [rdi + 48], r8",
            "mov [rdi + 56], r9",
            "add rsi, 64",
            "add rdi, 64",
            "sub rcx, 64",
            "cmp rcx, 64",
            "jae 2b",
            "3:",
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            out("rax") _,
            out("rdx") _,
            out("r8") _,
            out("r9") _,
            options(nostack)
        );
    }
    dst
}

/// C `memmove`.
///
/// # Safety
/// `src` and `dst` are valid for `n` bytes (they may overlap).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize + n) {
        // SAFETY: forward copy is correct when dst is below src or disjoint.
        unsafe { memcpy(dst, src, n) }
    } else {
        // SAFETY: copy backwards with the direction flag, restored after.
        unsafe {
            asm!(
                "std", "rep movsb", "cld",
                inout("rcx") n => _,
                inout("rdi") dst.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
        dst
    }
}

/// C `memset`.
///
/// # Safety
/// `dst` is valid for writes of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // Whole 64-byte blocks by eight 8-byte stores, the rest by `rep stosb`
    // (see `memcpy` for why).
    let pattern = (c as u8 as u64).wrapping_mul(0x0101_0101_0101_0101);
    // SAFETY: the caller guarantees a valid range.
    unsafe {
        asm!(
            "cmp rcx, 64",
            "jb 3f",
            "2:",
            "mov [rdi], rax",
            "mov [rdi + 8], rax",
            "mov [rdi + 16], rax",
            "mov [rdi + 24], rax",
            "mov [rdi + 32], rax",
            "mov [rdi + 40], rax",
            "mov [rdi + 48], rax",
            "mov [rdi + 56], rax",
            "add rdi, 64",
            "sub rcx, 64",
            "cmp rcx, 64",
            "jae 2b",
            "3:",
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            in("rax") pattern,
            options(nostack)
        );
    }
    dst
}

/// C `memcmp`.
///
/// # Safety
/// `a` and `b` are valid for reads of `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// C `bcmp`.
///
/// # Safety
/// As `memcmp`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// C `strlen`.
///
/// # Safety
/// `s` points to a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const u8) -> usize {
    let mut n = 0;
    // SAFETY: the caller passes a NUL-terminated string.
    while unsafe { core::ptr::read_volatile(s.add(n)) } != 0 {
        n += 1;
    }
    n
}

/// What C `malloc` hands out: 16-byte aligned, as on x86-64 Linux; the
/// size sits in a 16-byte header before the block so `free` can give the
/// layout back to the kernel heap. Only the zstd decoder (the root
/// archive, `vmkernel::rootfs`) calls these.
const MALLOC_ALIGN: usize = 16;

/// C `malloc`: a block from the kernel heap, or null.
#[unsafe(no_mangle)]
pub extern "C" fn malloc(n: usize) -> *mut u8 {
    let Some(total) = n.checked_add(MALLOC_ALIGN) else { return core::ptr::null_mut() };
    let Ok(layout) = core::alloc::Layout::from_size_align(total, MALLOC_ALIGN) else { return core::ptr::null_mut() };
    // SAFETY: the layout's size is at least MALLOC_ALIGN, never zero.
    let base = unsafe { alloc::alloc::alloc(layout) };
    if base.is_null() {
        return base;
    }
    // SAFETY: `base` is valid for `total` bytes and 16-byte aligned; the
    // header takes its first word, the caller gets what follows it.
    unsafe {
        (base as *mut usize).write(total);
        base.add(MALLOC_ALIGN)
    }
}

/// C `calloc`: a zeroed block, or null (also when `n * size` overflows).
#[unsafe(no_mangle)]
pub extern "C" fn calloc(n: usize, size: usize) -> *mut u8 {
    let Some(bytes) = n.checked_mul(size) else { return core::ptr::null_mut() };
    let p = malloc(bytes);
    if !p.is_null() {
        // SAFETY: `malloc` returned a block of at least `bytes` bytes.
        unsafe { core::ptr::write_bytes(p, 0, bytes) };
    }
    p
}

/// C `free`.
///
/// # Safety
/// `p` is null or came from [`malloc`]/[`calloc`] and was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut u8) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from `malloc`, which put the block's total size in
    // the header 16 bytes before it, with the same alignment.
    unsafe {
        let base = p.sub(MALLOC_ALIGN);
        let total = (base as *const usize).read();
        alloc::alloc::dealloc(base, core::alloc::Layout::from_size_align_unchecked(total, MALLOC_ALIGN));
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::power::fatal_stop("_Unwind_Resume called (the kernel never unwinds)")
}
