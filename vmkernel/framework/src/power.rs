//! Stopping the machine: power-off, reset, and the fatal stop.

use core::fmt::Write as _;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{self, Ports};
use crate::arch::trap::TrapFrame;
use crate::console;

/// Values written to QEMU's isa-debug-exit port; QEMU exits with `(v<<1)|1`.
pub const DEBUG_EXIT_SUCCESS: u32 = 0x10; // exit status 33
pub const DEBUG_EXIT_FAILURE: u32 = 0x11; // exit status 35

static STOPPING: AtomicBool = AtomicBool::new(false);

/// The isa-debug-exit port the command line named (0: none).
static DEBUG_EXIT_PORT: core::sync::atomic::AtomicU16 = core::sync::atomic::AtomicU16::new(0);

/// Enables [`debug_exit`] on `port` (the kernel command line's
/// `debug_exit`): the kernel cannot detect whether the device exists.
pub fn set_debug_exit_port(port: Option<u16>) {
    DEBUG_EXIT_PORT.store(port.unwrap_or(0), Ordering::Release);
}

/// Reports `success` through isa-debug-exit if the command line asked for
/// it. Returns only when the port is not enabled (or QEMU ignored it).
pub fn debug_exit(success: bool) {
    let port = DEBUG_EXIT_PORT.load(Ordering::Acquire);
    if port != 0 {
        console::drain();
        // SAFETY: the administrator named this port as QEMU's debug-exit device.
        let p = unsafe { Ports::new() };
        p.outl(port, if success { DEBUG_EXIT_SUCCESS } else { DEBUG_EXIT_FAILURE });
    }
}

/// The kernel cannot go on: say why, report failure, halt this CPU.
pub fn fatal_stop(reason: &str) -> ! {
    use core::fmt::Write;
    let mut out = console::emergency();
    if STOPPING.swap(true, Ordering::AcqRel) {
        // A second fatal error while stopping: just halt.
        cpu::halt_forever();
    }
    // Stop the other CPUs first (their NMI handler halts, see trap.rs).
    crate::arch::trap::halt_on_nmi();
    crate::arch::apic::nmi_others();
    let _ = writeln!(out, "mantle: halted: {reason}");
    out.drain();
    debug_exit(false);
    cpu::halt_forever();
}

/// Whether a fatal stop is under way (NMIs then mean "halt").
pub fn stopping() -> bool {
    STOPPING.load(Ordering::Acquire)
}

/// ACPI S5 soft-off; falls back to halting if the platform refuses.
pub fn power_off() -> ! {
    log::info!("mantle: powering off");
    console::drain();
    crate::acpi::enter_s5();
    log::error!("ACPI power-off did not take effect; halting");
    console::drain();
    cpu::halt_forever();
}

/// Platform reset: ACPI reset register, then port 0xCF9, then the keyboard
/// controller, then a triple fault as the last resort.
pub fn reboot() -> ! {
    log::info!("mantle: rebooting");
    console::drain();
    crate::acpi::reset();
    // SAFETY: resetting the machine is the point.
    let p = unsafe { Ports::new() };
    p.outb(0xcf9, 0x06);
    crate::time::delay_us(50_000);
    p.outb(0x64, 0xfe);
    crate::time::delay_us(50_000);
    // SAFETY: loading an empty IDT and faulting triple-faults the CPU, which resets it.
    unsafe {
        let empty = x86_64::structures::DescriptorTablePointer { limit: 0, base: x86_64::VirtAddr::new(0) };
        x86_64::instructions::tables::lidt(&empty);
        core::arch::asm!("int3");
    }
    cpu::halt_forever();
}

/// Reports a CPU exception the kernel cannot carry on from and stops the
/// machine (registered with `arch::trap::set_kernel_fault_handler`).
pub fn report_kernel_fault(frame: &TrapFrame) -> ! {
    let v = frame.vector as usize;
    let mut out = console::emergency();
    let _ = writeln!(out, "\n*** CPU EXCEPTION on cpu{}: vector {} {}", crate::arch::gdt::cpu_index(), v, crate::arch::trap::exception_name(v as u64));
    let _ = writeln!(
        out,
        "error code {:#x}  RIP {:#018x}  CS {:#x}  RFLAGS {:#x}",
        frame.error_code, frame.rip, frame.cs, frame.rflags
    );
    let _ = writeln!(out, "CR2 {:#018x}  CR3 {:#018x}  RSP {:#018x}  SS {:#x}", cpu::read_cr2(), cpu::read_cr3(), frame.rsp, frame.ss);
    if v == 14 {
        let e = frame.error_code;
        let _ = writeln!(
            out,
            "page fault: {} {} in {} mode{}",
            if e & 1 != 0 { "protection violation" } else { "page not present" },
            if e & 2 != 0 { "on write" } else if e & 16 != 0 { "on instruction fetch" } else { "on read" },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" }
        );
    }
    let regs = [
        ("RAX", frame.rax),
        ("RBX", frame.rbx),
        ("RCX", frame.rcx),
        ("RDX", frame.rdx),
        ("RSI", frame.rsi),
        ("RDI", frame.rdi),
        ("RBP", frame.rbp),
        ("R8 ", frame.r8),
        ("R9 ", frame.r9),
        ("R10", frame.r10),
        ("R11", frame.r11),
        ("R12", frame.r12),
        ("R13", frame.r13),
        ("R14", frame.r14),
        ("R15", frame.r15),
    ];
    for row in regs.chunks(3) {
        for (name, val) in row {
            let _ = write!(out, "{name} {val:#018x}  ");
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "backtrace:");
    let _ = writeln!(out, "  #0 {:#018x}", frame.rip);
    crate::backtrace::walk(frame.rbp, |i, ret| {
        let _ = writeln!(out, "  #{} {:#018x}", i + 1, ret);
    });
    fatal_stop("fatal CPU exception in the kernel");
}
