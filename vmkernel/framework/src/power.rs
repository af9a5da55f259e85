//! Stopping the machine: power-off, reset, and the fatal stop.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::cpu::{self, Ports};
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
