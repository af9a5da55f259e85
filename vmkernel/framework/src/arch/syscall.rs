//! Ring-3 entry and exit: the SYSCALL entry stub and the first entry into
//! user mode.
//!
//! SYSCALL builds the same [`TrapFrame`] an interrupt from ring 3 does, so
//! one frame type serves system calls, faults, signals, fork and exec. The
//! return path takes SYSRET when the frame is still what SYSCALL left and
//! IRETQ otherwise (`return_to_user`), so a non-canonical RIP that exec or
//! a signal handler put there never reaches SYSRET (docs/platform.md,
//! "Hardware virtualization in the emulators": Intel's SYSRET erratum). A
//! system call saves only the part of the user's extended state kernel code
//! can clobber; `context::save_live_user_state` completes it on demand.

use core::arch::naked_asm;

use super::cpu;
use super::gdt::{self, PERCPU_KERNEL_RSP, PERCPU_USER_RSP, USER_CS, USER_DS};
use super::trap::TrapFrame;

const IA32_EFER: u32 = 0xc000_0080;
const IA32_STAR: u32 = 0xc000_0081;
const IA32_LSTAR: u32 = 0xc000_0082;
const IA32_FMASK: u32 = 0xc000_0084;

const IA32_FS_BASE: u32 = 0xc000_0100;

/// Loads the user-mode FS base (thread-local storage) of the next world.
pub fn set_user_fs_base(v: u64) {
    // SAFETY: FS is unused by the kernel; a non-canonical value would fault
    // in WRMSR, so callers validate arch_prctl arguments first.
    unsafe { cpu::wrmsr(IA32_FS_BASE, v) };
}

/// The system-call handler of the layer above (`register_handler`).
static HANDLER: spin::Once<fn(&mut TrapFrame)> = spin::Once::new();

/// Registers the function that serves system calls: it gets the caller's
/// registers (number in RAX, result written back to RAX). Until one is
/// registered every call returns -ENOSYS.
pub fn register_handler(handler: fn(&mut TrapFrame)) {
    HANDLER.call_once(|| handler);
}

/// Called by the SYSCALL stub with the saved user registers.
extern "C" fn dispatch(frame: &mut TrapFrame) {
    match HANDLER.get() {
        Some(handler) => handler(frame),
        None => frame.rax = (-38i64) as u64, // ENOSYS
    }
}

/// Vector number recorded in frames built by SYSCALL (not a real vector).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// Enables SYSCALL on this CPU.
pub fn init_this_cpu() {
    // SAFETY: the MSRs exist on every x86-64 CPU; the selectors match the
    // GDT layout in gdt.rs (SYSRET would use STAR[63:48]+16/+8 = 0x23/0x1b).
    unsafe {
        cpu::wrmsr(IA32_STAR, (0x10u64 << 48) | ((gdt::KERNEL_CS as u64) << 32));
        cpu::wrmsr(IA32_LSTAR, syscall_entry as *const () as u64);
        // Clear TF, DF, IF, IOPL, NT, AC on entry.
        cpu::wrmsr(IA32_FMASK, 0x47700);
        let efer = cpu::rdmsr(IA32_EFER);
        cpu::wrmsr(IA32_EFER, efer | 1);
    }
}

#[unsafe(naked)]
unsafe extern "C" fn syscall_entry() {
    naked_asm!(
        "swapgs",
        "mov gs:[{user_rsp}], rsp",
        "mov rsp, gs:[{kernel_rsp}]",
        // Build the hardware part of a TrapFrame: ss, rsp, rflags, cs, rip.
        "push {uds}",
        "push qword ptr gs:[{user_rsp}]",
        "push r11",
        "push {ucs}",
        "push rcx",
        "push 0",        // error code
        "push {vector}", // vector
        "push rax",
        "push rbx",
        "push rcx",
        "push rdx",
        "push rsi",
        "push rdi",
        "push rbp",
        "push r8",
        "push r9",
        "push r10",
        "push r11",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // Save what compiled kernel code can clobber of the user's extended
        // state — XMM0-15 and MXCSR, into their FXSAVE/XSAVE slots of the
        // world's area — and leave the rest (x87, YMM upper halves) in the
        // registers: `context::save_live_user_state` completes the area
        // when something needs it or another world gets the CPU.
        "mov rdi, gs:[{fpu_area}]",
        "stmxcsr [rdi + 24]",
        "movaps [rdi + 160], xmm0",
        "movaps [rdi + 176], xmm1",
        "movaps [rdi + 192], xmm2",
        "movaps [rdi + 208], xmm3",
        "movaps [rdi + 224], xmm4",
        "movaps [rdi + 240], xmm5",
        "movaps [rdi + 256], xmm6",
        "movaps [rdi + 272], xmm7",
        "movaps [rdi + 288], xmm8",
        "movaps [rdi + 304], xmm9",
        "movaps [rdi + 320], xmm10",
        "movaps [rdi + 336], xmm11",
        "movaps [rdi + 352], xmm12",
        "movaps [rdi + 368], xmm13",
        "movaps [rdi + 384], xmm14",
        "movaps [rdi + 400], xmm15",
        "mov qword ptr gs:[{fpu_live}], 1",
        "mov rdi, rsp",
        "xor ebp, ebp",
        "cld",
        "call {dispatch}",
        "jmp {ret}",
        user_rsp = const PERCPU_USER_RSP,
        kernel_rsp = const PERCPU_KERNEL_RSP,
        uds = const USER_DS as u64,
        ucs = const USER_CS as u64,
        vector = const SYSCALL_VECTOR,
        fpu_area = const super::gdt::PERCPU_FPU_AREA,
        fpu_live = const super::gdt::PERCPU_FPU_LIVE,
        dispatch = sym dispatch,
        ret = sym return_to_user,
    )
}

/// TrapFrame offsets for the return path.
const F_R11: usize = core::mem::offset_of!(TrapFrame, r11);
const F_RCX: usize = core::mem::offset_of!(TrapFrame, rcx);
const F_RIP: usize = core::mem::offset_of!(TrapFrame, rip);
const F_CS: usize = core::mem::offset_of!(TrapFrame, cs);
const F_RFLAGS: usize = core::mem::offset_of!(TrapFrame, rflags);
const F_SS: usize = core::mem::offset_of!(TrapFrame, ss);
/// RFLAGS.TF and RFLAGS.RF: SYSRET cannot restore RF, and with TF it would
/// trap right after the first user instruction instead of before it.
const RFLAGS_TF_RF: u64 = (1 << 8) | (1 << 16);

/// Reloads the running world's extended state, pops a TrapFrame that sits
/// at the current stack pointer and returns to ring 3.
///
/// The extended state: after a system call that left the rest in the
/// registers (FPU_LIVE), only XMM0-15 and MXCSR; else the whole area.
///
/// The return: SYSRET when the frame is what SYSCALL left, as it is after
/// almost every call — RCX = RIP and R11 = RFLAGS (SYSRET loads RIP and
/// RFLAGS from them), the user selectors, neither TF nor RF, and a RIP in
/// the user half, which also makes it canonical: SYSRET to a non-canonical
/// RIP faults in ring 0 on the user's stack on Intel CPUs
/// (docs/platform.md, "Hardware virtualization in the emulators").
/// Anything else (signal delivery, sigreturn, exec, a new world) returns
/// with IRETQ, which restores every register of the frame.
#[unsafe(naked)]
unsafe extern "C" fn return_to_user() {
    naked_asm!(
        "mov rdi, gs:[{fpu_area}]",
        "cmp qword ptr gs:[{fpu_live}], 0",
        "je 2f",
        "ldmxcsr [rdi + 24]",
        "movaps xmm0, [rdi + 160]",
        "movaps xmm1, [rdi + 176]",
        "movaps xmm2, [rdi + 192]",
        "movaps xmm3, [rdi + 208]",
        "movaps xmm4, [rdi + 224]",
        "movaps xmm5, [rdi + 240]",
        "movaps xmm6, [rdi + 256]",
        "movaps xmm7, [rdi + 272]",
        "movaps xmm8, [rdi + 288]",
        "movaps xmm9, [rdi + 304]",
        "movaps xmm10, [rdi + 320]",
        "movaps xmm11, [rdi + 336]",
        "movaps xmm12, [rdi + 352]",
        "movaps xmm13, [rdi + 368]",
        "movaps xmm14, [rdi + 384]",
        "movaps xmm15, [rdi + 400]",
        "jmp 4f",
        "2:",
        "mov eax, -1",
        "mov edx, -1",
        "cmp qword ptr gs:[{use_xsave}], 0",
        "je 3f",
        "xrstor64 [rdi]",
        "jmp 4f",
        "3:",
        "fxrstor64 [rdi]",
        "4:",
        // SYSRET or IRETQ (see above).
        "mov rcx, [rsp + {f_rip}]",
        "cmp rcx, [rsp + {f_rcx}]",
        "jne 5f",
        "mov r11, [rsp + {f_rflags}]",
        "cmp r11, [rsp + {f_r11}]",
        "jne 5f",
        "test r11, {tf_rf}",
        "jnz 5f",
        "cmp qword ptr [rsp + {f_cs}], {ucs}",
        "jne 5f",
        "cmp qword ptr [rsp + {f_ss}], {uds}",
        "jne 5f",
        "shr rcx, 47",
        "jnz 5f",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        // vector, error code, rip, cs, rflags, then the user's rsp.
        "mov rsp, [rsp + 40]",
        "swapgs",
        "sysretq",
        "5:",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop r11",
        "pop r10",
        "pop r9",
        "pop r8",
        "pop rbp",
        "pop rdi",
        "pop rsi",
        "pop rdx",
        "pop rcx",
        "pop rbx",
        "pop rax",
        "add rsp, 16",
        "swapgs",
        "iretq",
        fpu_area = const super::gdt::PERCPU_FPU_AREA,
        fpu_live = const super::gdt::PERCPU_FPU_LIVE,
        use_xsave = const super::gdt::PERCPU_USE_XSAVE,
        f_rip = const F_RIP,
        f_rcx = const F_RCX,
        f_rflags = const F_RFLAGS,
        f_r11 = const F_R11,
        f_cs = const F_CS,
        f_ss = const F_SS,
        tf_rf = const RFLAGS_TF_RF,
        ucs = const USER_CS as u64,
        uds = const USER_DS as u64,
    )
}

/// Enters ring 3 with the registers in `frame`, on the current world's
/// kernel stack (whose top is TSS.RSP0). Never returns: the world comes
/// back to the kernel only through system calls and interrupts.
///
/// # Safety
/// The current CR3 must be the world's address space, `frame.cs`/`ss` user
/// selectors, and the kernel stack top registered with `set_kernel_stack`.
pub unsafe fn enter_user(frame: &TrapFrame, kernel_stack_top: u64) -> ! {
    let f = TrapFrame { cs: USER_CS as u64, ss: USER_DS as u64, rflags: (frame.rflags | 0x200) & !0x3000, ..*frame };
    let at = (kernel_stack_top - core::mem::size_of::<TrapFrame>() as u64) & !15;
    // SAFETY: the frame is copied to the top of this world's own kernel
    // stack, which nothing else uses, then popped by `return_to_user`.
    unsafe {
        core::ptr::write(at as *mut TrapFrame, f);
        core::arch::asm!("mov rsp, {}", "jmp {}", in(reg) at, sym return_to_user, options(noreturn));
    }
}
