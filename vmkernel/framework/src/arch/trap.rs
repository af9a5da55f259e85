//! Interrupt and exception entry.
//!
//! All 256 vectors enter through generated stubs (`trap_stubs.s`) that push
//! a uniform [`TrapFrame`] and call [`trap_dispatch`]. Exceptions in kernel
//! mode are fatal: the report names the vector, error code, RIP, CR2, every
//! register and a frame-pointer backtrace, then the machine stops cleanly.
//! Device interrupts go to handlers registered per vector.
//!
//! Gates use IST stacks only for NMI, #DF and #MC (see docs/platform.md, "Toolchain": the
//! kernel runs with interrupts off, so ordinary gates never land on a stack
//! where Rust code keeps red-zone data).

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::idt::InterruptDescriptorTable;

use super::{cpu, gdt};

global_asm!(include_str!(concat!(env!("OUT_DIR"), "/trap_stubs.s")), options(att_syntax));

global_asm!(
    r#"
    .section .text.trap_common, "ax"
    .global trap_common
trap_common:
    /* From ring 3, switch GS to the kernel's per-CPU block. */
    testb $3, 24(%rsp)
    jz 1f
    swapgs
1:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    /* From ring 3: save the user's extended state before compiled code
       (which uses SSE) runs — all of it (interrupts and faults are rare
       next to system calls, which save only what the kernel clobbers):
       the area is complete, nothing is left live in the registers. */
    testb $3, 144(%rsp)
    jz 3f
    mov %gs:32, %rdi
    mov $-1, %eax
    mov $-1, %edx
    cmpq $0, %gs:40
    je 4f
    xsave64 (%rdi)
    jmp 7f
4:
    fxsave64 (%rdi)
7:
    movq $0, %gs:48
3:
    mov %rsp, %rdi
    cld
    call trap_dispatch
    testb $3, 144(%rsp)
    jz 5f
    mov %gs:32, %rdi
    mov $-1, %eax
    mov $-1, %edx
    cmpq $0, %gs:40
    je 6f
    xrstor64 (%rdi)
    jmp 5f
6:
    fxrstor64 (%rdi)
5:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    testb $3, 24(%rsp)
    jz 2f
    swapgs
2:
    add $16, %rsp
    iretq
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    static trap_stub_table: [u64; 256];
}

/// Registers as pushed by `trap_common`, then by the stub and the CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

pub type Handler = fn(&mut TrapFrame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static IDT: Once<InterruptDescriptorTable> = Once::new();

/// What acknowledges an interrupt no handler claimed, so the interrupt
/// controller delivers the next one: the local APIC's EOI, registered by
/// `apic::init_this_cpu` (the APIC driver sits above the trap layer).
static UNCLAIMED_ACK: Once<fn()> = Once::new();

/// Sets what acknowledges unclaimed interrupts (the first call wins).
pub fn set_unclaimed_interrupt_ack(ack: fn()) {
    UNCLAIMED_ACK.call_once(|| ack);
}

/// Installs `handler` for `vector` (32..=255).
pub fn register(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors below 32 are CPU exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

fn build_idt() -> InterruptDescriptorTable {
    let mut idt = InterruptDescriptorTable::new();
    // SAFETY: reading a table of addresses emitted by the assembler.
    let stubs = unsafe { &*core::ptr::addr_of!(trap_stub_table) };
    for v in 0..256usize {
        let addr = VirtAddr::new(stubs[v]);
        // SAFETY: each stub is a valid interrupt entry that saves the full
        // frame and returns with IRETQ; IST indices exist in every TSS.
        unsafe {
            match v {
                0 => {
                    idt.divide_error.set_handler_addr(addr);
                }
                1 => {
                    idt.debug.set_handler_addr(addr);
                }
                2 => {
                    idt.non_maskable_interrupt.set_handler_addr(addr).set_stack_index(gdt::IST_NMI - 1);
                }
                3 => {
                    idt.breakpoint.set_handler_addr(addr);
                }
                4 => {
                    idt.overflow.set_handler_addr(addr);
                }
                5 => {
                    idt.bound_range_exceeded.set_handler_addr(addr);
                }
                6 => {
                    idt.invalid_opcode.set_handler_addr(addr);
                }
                7 => {
                    idt.device_not_available.set_handler_addr(addr);
                }
                8 => {
                    idt.double_fault.set_handler_addr(addr).set_stack_index(gdt::IST_DOUBLE_FAULT - 1);
                }
                10 => {
                    idt.invalid_tss.set_handler_addr(addr);
                }
                11 => {
                    idt.segment_not_present.set_handler_addr(addr);
                }
                12 => {
                    idt.stack_segment_fault.set_handler_addr(addr);
                }
                13 => {
                    idt.general_protection_fault.set_handler_addr(addr);
                }
                14 => {
                    idt.page_fault.set_handler_addr(addr);
                }
                16 => {
                    idt.x87_floating_point.set_handler_addr(addr);
                }
                17 => {
                    idt.alignment_check.set_handler_addr(addr);
                }
                18 => {
                    idt.machine_check.set_handler_addr(addr).set_stack_index(gdt::IST_MACHINE_CHECK - 1);
                }
                19 => {
                    idt.simd_floating_point.set_handler_addr(addr);
                }
                20 => {
                    idt.virtualization.set_handler_addr(addr);
                }
                21 => {
                    idt.cp_protection_exception.set_handler_addr(addr);
                }
                28 => {
                    idt.hv_injection_exception.set_handler_addr(addr);
                }
                29 => {
                    idt.vmm_communication_exception.set_handler_addr(addr);
                }
                30 => {
                    idt.security_exception.set_handler_addr(addr);
                }
                32..=255 => {
                    idt[v as u8].set_handler_addr(addr);
                }
                _ => {}
            }
        }
    }
    idt
}

/// Loads the shared IDT on this CPU. The BSP calls it first thing, before
/// per-CPU TSSs exist: an NMI/#DF/#MC that early would find no IST stack,
/// which is acceptable because nothing can raise them yet.
pub fn load_idt() {
    IDT.call_once(build_idt).load();
}

/// What the layer above does with user mode (`register_user_handlers`).
#[derive(Clone, Copy)]
pub struct UserTrapHandlers {
    /// An exception in ring 3 (vector < 32); `fault_address` is CR2 for a
    /// page fault, else 0. The kernel and other worlds carry on whatever
    /// it decides.
    pub exception: fn(&mut TrapFrame, fault_address: u64),
    /// Runs after every trap or interrupt taken in ring 3, on the way back
    /// (signal delivery).
    pub before_return: fn(&mut TrapFrame),
}

static USER_HANDLERS: spin::Once<UserTrapHandlers> = spin::Once::new();

/// Registers the user-mode trap handlers (once, at boot). Without them a
/// user-mode exception is treated like a kernel one.
pub fn register_user_handlers(h: UserTrapHandlers) {
    USER_HANDLERS.call_once(|| h);
}

/// The name of exception vector `v` (< 32) for reports.
pub fn exception_name(v: u64) -> &'static str {
    EXCEPTION_NAMES.get(v as usize).copied().unwrap_or("unknown exception")
}

fn user_exception(frame: &mut TrapFrame) {
    match USER_HANDLERS.get() {
        Some(h) => {
            let addr = if frame.vector == 14 { cpu::read_cr2() } else { 0 };
            (h.exception)(frame, addr)
        }
        None => kernel_exception(frame),
    }
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error (#DE)",
    "debug (#DB)",
    "non-maskable interrupt (NMI)",
    "breakpoint (#BP)",
    "overflow (#OF)",
    "bound range exceeded (#BR)",
    "invalid opcode (#UD)",
    "device not available (#NM)",
    "double fault (#DF)",
    "coprocessor segment overrun",
    "invalid TSS (#TS)",
    "segment not present (#NP)",
    "stack-segment fault (#SS)",
    "general protection (#GP)",
    "page fault (#PF)",
    "reserved",
    "x87 floating point (#MF)",
    "alignment check (#AC)",
    "machine check (#MC)",
    "SIMD floating point (#XM)",
    "virtualization (#VE)",
    "control protection (#CP)",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection (#HV)",
    "VMM communication (#VC)",
    "security (#SX)",
    "reserved",
];

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    // (The entry stub saved the user's extended state, if any.)
    let from_user = frame.cs & 3 == 3;
    dispatch_vector(frame);
    if from_user {
        // Signals (including the one a fault just raised) act on the way
        // back to ring 3.
        if let Some(h) = USER_HANDLERS.get() {
            (h.before_return)(frame);
        }
    }
}

fn dispatch_vector(frame: &mut TrapFrame) {
    let v = frame.vector as usize;
    if v == 2 && HALT_ON_NMI.load(Ordering::Acquire) {
        // Another CPU hit a fatal error and asked every CPU to stop.
        cpu::halt_forever();
    }
    if v < 32 {
        exception(frame);
        return;
    }
    let h = HANDLERS[v].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `register` stores into HANDLERS, always a `Handler`.
        let f: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        f(frame);
    } else {
        log::warn!("unexpected interrupt on vector {v}");
        if let Some(ack) = UNCLAIMED_ACK.get() {
            ack();
        }
    }
}

/// Breakpoints taken in the kernel (a `#BP` is reported and execution
/// continues, so `int3` can serve as a debugging aid).
pub static BREAKPOINTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn exception(frame: &mut TrapFrame) {
    if frame.cs & 3 == 3 {
        user_exception(frame);
        return;
    }
    if frame.vector == 3 {
        BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        log::debug!("breakpoint at {:#x}", frame.rip);
        return;
    }
    if frame.vector == 1 {
        // The host arms no breakpoint and never single-steps itself: a #DB
        // here can only be a guest's breakpoint left live in the host (see
        // hv::svm's `host_armed_dr7`, which arms none the host can reach).
        // It may arrive right after VMRUN, with the guest's GS and TR still
        // loaded, so nothing here may use per-CPU data or log: count it and
        // resume, RF set so an execution breakpoint lets the instruction run.
        STRAY_DEBUG_TRAPS.fetch_add(1, Ordering::Relaxed);
        frame.rflags |= 1 << 16;
        return;
    }
    kernel_exception(frame)
}

/// #DB exceptions taken in the kernel (none is expected; hv reports them).
pub static STRAY_DEBUG_TRAPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// What handles a CPU exception the kernel cannot carry on from (reports
/// it and stops the machine); registered at boot by the layer that has a
/// console (`power::report_kernel_fault`).
pub type KernelFaultHandler = fn(&TrapFrame) -> !;

static KERNEL_FAULT: Once<KernelFaultHandler> = Once::new();

/// Registers the kernel-fault handler (once, early in boot).
pub fn set_kernel_fault_handler(h: KernelFaultHandler) {
    KERNEL_FAULT.call_once(|| h);
}

/// A CPU exception the kernel cannot carry on from: the registered
/// handler reports it and stops; before there is one, this CPU halts.
fn kernel_exception(frame: &mut TrapFrame) {
    match KERNEL_FAULT.get() {
        Some(h) => h(frame),
        None => cpu::halt_forever(),
    }
}

/// Set when the machine is stopping: every CPU's NMI handler then halts.
static HALT_ON_NMI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// From now on an NMI halts the CPU that takes it (a fatal stop sends
/// one to every other CPU).
pub fn halt_on_nmi() {
    HALT_ON_NMI.store(true, Ordering::Release);
}
