//! Ring-3 entry and exit: the SYSCALL entry stub and the first entry into
//! user mode.
//!
//! SYSCALL builds the same [`TrapFrame`] an interrupt from ring 3 does, so
//! one frame type serves system calls, faults, signals, fork and exec. The
//! return path is always IRETQ: it restores every register the frame holds
//! and, unlike SYSRET, cannot fault in ring 0 on a non-canonical RIP that
//! exec or a signal handler put there (docs/platform.md, "Hardware virtualization in the emulators": Intel's SYSRET erratum).

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
        // Save the user's extended state before compiled code runs.
        "mov rdi, gs:[{fpu_area}]",
        "mov eax, -1",
        "mov edx, -1",
        "cmp qword ptr gs:[{use_xsave}], 0",
        "je 2f",
        "xsave64 [rdi]",
        "jmp 3f",
        "2:",
        "fxsave64 [rdi]",
        "3:",
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
        use_xsave = const super::gdt::PERCPU_USE_XSAVE,
        dispatch = sym dispatch,
        ret = sym return_to_user,
    )
}

/// Reloads the running world's extended state, pops a TrapFrame that sits
/// at the current stack pointer and returns to ring 3 with IRETQ.
#[unsafe(naked)]
unsafe extern "C" fn return_to_user() {
    naked_asm!(
        "mov rdi, gs:[{fpu_area}]",
        "mov eax, -1",
        "mov edx, -1",
        "cmp qword ptr gs:[{use_xsave}], 0",
        "je 2f",
        "xrstor64 [rdi]",
        "jmp 3f",
        "2:",
        "fxrstor64 [rdi]",
        "3:",
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
        use_xsave = const super::gdt::PERCPU_USE_XSAVE,
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
