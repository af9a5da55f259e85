//! The framework's own in-kernel tests: checks that reach below the safe
//! interfaces on purpose (frames through the direct map, page tables, the
//! per-CPU block, the trap path) and the ring-3 test programs, so the
//! services' test runner (`services/src/ktest.rs`) needs no unsafe code.
//! Each check returns `Err(why)` when it fails.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::{cpu, gdt, trap};
use crate::mm;
use vmkernel::paging;

pub type TestResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($arg)*));
        }
    };
}

/// Frames come back aligned, above 1 MiB, zeroed, distinct, and return to
/// the allocator.
pub fn frames_distinct_zeroed_and_returned() -> TestResult {
    let before = mm::free_frames();
    let mut frames = Vec::new();
    for i in 0..256u64 {
        let f = mm::alloc_frame().ok_or("out of frames")?;
        ensure!(f % 4096 == 0, "frame {f:#x} not aligned");
        ensure!(f >= 1 << 20, "frame {f:#x} below 1 MiB was handed out");
        // SAFETY: the frame is ours; it is mapped by the direct map.
        let page = unsafe { core::slice::from_raw_parts_mut(mm::phys_to_virt(f) as *mut u64, 512) };
        ensure!(page.iter().all(|&w| w == 0), "frame {f:#x} not zeroed");
        page.fill(0x5a5a_0000 + i);
        frames.push(f);
    }
    for (i, &f) in frames.iter().enumerate() {
        // SAFETY: as above.
        let w = unsafe { core::ptr::read_volatile(mm::phys_to_virt(f) as *const u64) };
        ensure!(w == 0x5a5a_0000 + i as u64, "frame {f:#x} aliased by another allocation");
    }
    ensure!(mm::free_frames() == before - 256, "free count did not drop by 256");
    for f in frames {
        mm::free_frame(f).map_err(|e| format!("free {f:#x}: {e:?}"))?;
    }
    ensure!(mm::free_frames() == before, "free count not restored");
    Ok(())
}

/// The kernel image's sections have their protections; the direct map is 1:1
/// up to the top of RAM.
pub fn kernel_image_protections() -> TestResult {
    let text = kernel_image_protections as *const () as u64;
    let t = mm::translate_kernel(text).ok_or("kernel text not mapped")?;
    ensure!(t.flags & paging::WRITABLE == 0, "kernel text is writable");
    ensure!(t.flags & paging::NO_EXECUTE == 0, "kernel text is not executable");
    ensure!(t.phys == text - mm::KERNEL_VMA, "text maps to {:#x}, expected {:#x}", t.phys, text - mm::KERNEL_VMA);
    let ro = RODATA_PROBE.as_ptr() as u64;
    let r = mm::translate_kernel(ro).ok_or("rodata not mapped")?;
    ensure!(r.flags & (paging::WRITABLE) == 0 && r.flags & paging::NO_EXECUTE != 0, "rodata flags {:#x}", r.flags);
    let data = &mm::FRAMES as *const _ as u64;
    let d = mm::translate_kernel(data).ok_or("data not mapped")?;
    ensure!(d.flags & paging::WRITABLE != 0 && d.flags & paging::NO_EXECUTE != 0, "data flags {:#x}", d.flags);
    ensure!(mm::translate_kernel(0x1000).is_none(), "lower half mapped in the kernel's tables");
    // The direct map reaches the top of RAM.
    let last = mm::usable_top() - 4096;
    let dm = mm::translate_kernel(mm::phys_to_virt(last)).ok_or("top of RAM not in the direct map")?;
    ensure!(dm.phys == last, "direct map is not 1:1");
    Ok(())
}

/// Something in the kernel's rodata.
static RODATA_PROBE: [u64; 2] = [0x5a, 0xa5];

/// A fresh address space sharing the kernel half, one page at 4 MiB:
/// switch to it, touch the page through both mappings, switch back; its
/// frames return when it goes.
pub fn page_tables_map_lower_half() -> TestResult {
    let before = mm::free_frames();
    let space = mm::AddressSpace::new().ok_or("no memory for a PML4")?;
    let frame = mm::UserFrame::alloc().ok_or("no frame")?;
    let va = 0x40_0000u64;
    space.map(va, frame, paging::WRITABLE | paging::NO_EXECUTE).map_err(|e| format!("{e:?}"))?;
    let seen = space.with_active(|| {
        // SAFETY: `va` is mapped writable in the active address space.
        unsafe {
            core::ptr::write_volatile(va as *mut u64, 0x1234_5678_9abc_def0);
            core::ptr::read_volatile(va as *const u64)
        }
    });
    ensure!(seen == 0x1234_5678_9abc_def0, "read back {seen:#x}");
    let phys = space.translate(va).ok_or("page not mapped")?.phys;
    // SAFETY: the frame belongs to `space`, which lives, and the direct
    // map covers it.
    let direct = unsafe { core::ptr::read_volatile(mm::phys_to_virt(phys) as *const u64) };
    ensure!(direct == seen, "direct map sees {direct:#x}");
    ensure!(cpu::read_cr3() == mm::kernel_pml4(), "CR3 not restored");
    space.free_user_frames();
    drop(space);
    ensure!(mm::free_frames() == before, "{} frames not returned", before.saturating_sub(mm::free_frames()));
    Ok(())
}

/// The per-CPU block is where GS points.
pub fn percpu_block() -> TestResult {
    let c = gdt::this_cpu().ok_or("no per-CPU block")?;
    ensure!(c.index == gdt::cpu_index(), "index mismatch");
    // SAFETY: IA32_GS_BASE exists on x86-64.
    let gs = unsafe { cpu::rdmsr(0xc000_0101) };
    ensure!(gs == c as *const _ as u64, "GS base {gs:#x} is not the per-CPU block");
    ensure!(gdt::cpus_online() >= 1, "no CPU online");
    Ok(())
}

/// INT3 reaches the #BP handler, which returns.
pub fn breakpoint_returns() -> TestResult {
    let before = trap::BREAKPOINTS.load(Ordering::Relaxed);
    // SAFETY: int3 is handled by the kernel's #BP handler, which returns.
    unsafe { core::arch::asm!("int3") };
    let after = trap::BREAKPOINTS.load(Ordering::Relaxed);
    ensure!(after == before + 1, "breakpoint count {before} -> {after}");
    Ok(())
}

core::arch::global_asm!(
    r#"
    .section .rodata.ktest_user, "a"
    .global ktest_user_ok_start, ktest_user_ok_end
ktest_user_ok_start:
    mov eax, 1
    mov edi, 1
    lea rsi, [rip + 9f]
    mov edx, 25 /* length of the message at 9: */
    syscall
    cmp rax, 25
    jne 8f
    /* a kernel address and an unmapped one: EFAULT, not a crash */
    mov eax, 1
    mov edi, 1
    movabs rsi, 0xffffffff80100000
    mov edx, 4
    syscall
    cmp rax, -14
    jne 8f
    mov eax, 1
    mov edi, 1
    mov esi, 0xdead0000
    mov edx, 4
    syscall
    cmp rax, -14
    jne 8f
    /* unknown call */
    mov eax, 9999
    syscall
    cmp rax, -38
    jne 8f
    /* registers other than rax, rcx, r11 survive a system call */
    mov ebx, 0x1234
    mov r12d, 0x5678
    mov r15d, 0x9abc
    mov eax, 39
    syscall
    test rax, rax
    jle 8f
    cmp ebx, 0x1234
    jne 8f
    cmp r12d, 0x5678
    jne 8f
    cmp r15d, 0x9abc
    jne 8f
    mov eax, 231
    mov edi, 42
    syscall
    ud2
8:
    mov eax, 231
    mov edi, 1
    syscall
9:
    .ascii "ktest: hello from ring 3\n"
10:
ktest_user_ok_end:

    .global ktest_user_spin_start, ktest_user_spin_end
ktest_user_spin_start:
    /* burn CPU in user mode until the TSC passes rdi, then exit(0) */
1:
    rdtsc
    shl rdx, 32
    or rax, rdx
    cmp rax, rdi
    jb 1b
    mov eax, 231
    xor edi, edi
    syscall
ktest_user_spin_end:

    .global ktest_user_fpu_start, ktest_user_fpu_end
ktest_user_fpu_start:
    /* xmm7 and the x87 stack (pi or 1.0 by the pattern's bit 2: the two
       processes differ) must survive 200 system calls and switches; a
       system call returns RCX = RIP and R11 = RFLAGS as on Linux */
    movq xmm7, rdi
    test dil, 4
    jz 3f
    fldpi
    jmp 4f
3:
    fld1
4:
    mov r12d, 200
8:
    mov eax, 24 /* sched_yield */
    syscall
    movq rax, xmm7
    cmp rax, rdi
    jne 2f
    lea rax, [rip + 8b]
    add rax, 7 /* mov eax, imm32 (5) + syscall (2): RIP after the SYSCALL */
    cmp rcx, rax
    jne 2f
    test r11d, 0x200 /* the user's RFLAGS, interrupts on */
    jz 2f
    test dil, 4
    jz 5f
    fldpi
    jmp 6f
5:
    fld1
6:
    fcomip st, st(1)
    jne 2f
    jp 2f
    dec r12d
    jnz 8b
    mov eax, 231
    xor edi, edi
    syscall
2:
    mov eax, 231
    mov edi, 1
    syscall
ktest_user_fpu_end:

    .global ktest_user_null_start, ktest_user_null_end
ktest_user_null_start:
    xor eax, eax
    mov rax, [rax]
    ud2
ktest_user_null_end:

    .global ktest_user_priv_start, ktest_user_priv_end
ktest_user_priv_start:
    cli
    hlt
ktest_user_priv_end:

    .global ktest_user_int_start, ktest_user_int_end
ktest_user_int_start:
    int 0x80
    ud2
ktest_user_int_end:
    "#
);

/// The ring-3 test programs (position-dependent code for 0x400000, in
/// the kernel's rodata).
#[derive(Clone, Copy, Debug)]
pub enum UserProgram {
    /// System calls from ring 3; exits 42 when every check held.
    Syscalls,
    /// Spins until killed.
    Spin,
    /// Checks its XMM register across 200 sched_yield calls; exits 0.
    ExtendedState,
    /// Reads address 0.
    NullDeref,
    /// Executes CLI/HLT.
    Privileged,
    /// Executes INT 0x80.
    Int80,
}

unsafe extern "C" {
    static ktest_user_ok_start: u8;
    static ktest_user_ok_end: u8;
    static ktest_user_spin_start: u8;
    static ktest_user_spin_end: u8;
    static ktest_user_fpu_start: u8;
    static ktest_user_fpu_end: u8;
    static ktest_user_null_start: u8;
    static ktest_user_null_end: u8;
    static ktest_user_priv_start: u8;
    static ktest_user_priv_end: u8;
    static ktest_user_int_start: u8;
    static ktest_user_int_end: u8;
}

/// The machine code of `program`.
pub fn user_program(program: UserProgram) -> &'static [u8] {
    // Taking the symbols' addresses (`&raw const`) reads nothing.
    let (start, end) = {
        match program {
            UserProgram::Syscalls => (&raw const ktest_user_ok_start, &raw const ktest_user_ok_end),
            UserProgram::Spin => (&raw const ktest_user_spin_start, &raw const ktest_user_spin_end),
            UserProgram::ExtendedState => (&raw const ktest_user_fpu_start, &raw const ktest_user_fpu_end),
            UserProgram::NullDeref => (&raw const ktest_user_null_start, &raw const ktest_user_null_end),
            UserProgram::Privileged => (&raw const ktest_user_priv_start, &raw const ktest_user_priv_end),
            UserProgram::Int80 => (&raw const ktest_user_int_start, &raw const ktest_user_int_end),
        }
    };
    // SAFETY: both symbols delimit the program's bytes in the kernel's
    // rodata, which is never written.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}

/// `memcpy`, `memmove` and `memset` (rt.rs, 64-byte blocks plus a byte
/// tail) give the right bytes for every length up to 300 and a few large
/// ones, at every alignment, and touch nothing outside the range;
/// `memmove` is right for overlaps in both directions.
pub fn rt_memory_functions() -> TestResult {
    const PAD: usize = 80;
    let pattern = |i: usize| (i * 7 + 3) as u8;
    let lens: Vec<usize> = (0..=300).chain([511, 512, 4095, 4096, 4097, 65_600]).collect();
    for &len in &lens {
        for align in [0usize, 1, 7, 8, 13] {
            let src: Vec<u8> = (0..len + 2 * PAD).map(pattern).collect();
            let mut dst = alloc::vec![0xeeu8; len + 2 * PAD];
            // SAFETY: both ranges lie inside their vectors and are disjoint.
            unsafe { crate::rt::memcpy(dst.as_mut_ptr().add(PAD + align % PAD), src.as_ptr().add(PAD), len) };
            let at = PAD + align % PAD;
            ensure!(dst[at..at + len] == src[PAD..PAD + len], "memcpy of {len} bytes at +{align} copied wrong bytes");
            ensure!(
                dst[..at].iter().chain(&dst[at + len..]).all(|&b| b == 0xee),
                "memcpy of {len} bytes at +{align} wrote outside its range"
            );
            // SAFETY: inside the vector.
            unsafe { crate::rt::memset(dst.as_mut_ptr().add(at), 0x5c, len) };
            ensure!(dst[at..at + len].iter().all(|&b| b == 0x5c), "memset of {len} bytes at +{align} missed bytes");
            ensure!(
                dst[..at].iter().chain(&dst[at + len..]).all(|&b| b == 0xee),
                "memset of {len} bytes at +{align} wrote outside its range"
            );
            // Overlapping moves: destination below and above the source.
            for shift in [1usize, 8, 33, 64] {
                let mut buf: Vec<u8> = (0..len + 2 * PAD).map(pattern).collect();
                // SAFETY: both ranges lie inside `buf` (PAD > shift).
                unsafe { crate::rt::memmove(buf.as_mut_ptr().add(PAD - shift), buf.as_ptr().add(PAD), len) };
                ensure!(
                    (0..len).all(|i| buf[PAD - shift + i] == pattern(PAD + i)),
                    "memmove of {len} bytes down by {shift} copied wrong bytes"
                );
                let mut buf: Vec<u8> = (0..len + 2 * PAD).map(pattern).collect();
                // SAFETY: as above.
                unsafe { crate::rt::memmove(buf.as_mut_ptr().add(PAD + shift), buf.as_ptr().add(PAD), len) };
                ensure!(
                    (0..len).all(|i| buf[PAD + shift + i] == pattern(PAD + i)),
                    "memmove of {len} bytes up by {shift} copied wrong bytes"
                );
            }
        }
    }
    Ok(())
}
