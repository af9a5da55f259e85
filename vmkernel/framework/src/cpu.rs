//! Privileged CPU instructions behind safe wrappers where the operation
//! cannot break memory safety on its own, and `unsafe fn` where it can.

use core::arch::asm;

/// Upper bound on CPU indices (the MADT list is capped at the same size).
pub const MAX_CPUS: usize = 256;

/// Port I/O. Reading or writing an I/O port cannot corrupt Rust memory by
/// itself, but it drives devices; the kernel mints this capability only for
/// its drivers (console, PIT, PIC, ACPI PM, PCI mechanism #1).
#[derive(Clone, Copy)]
pub struct Ports(());

impl Ports {
    /// # Safety
    /// The caller is kernel code that owns the devices it will talk to.
    pub const unsafe fn new() -> Self {
        Ports(())
    }

    pub fn inb(&self, port: u16) -> u8 {
        let v: u8;
        // SAFETY: port I/O has no memory effects visible to Rust.
        unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) };
        v
    }
    pub fn outb(&self, port: u16, v: u8) {
        // SAFETY: as above.
        unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
    }
    pub fn inw(&self, port: u16) -> u16 {
        let v: u16;
        // SAFETY: as above.
        unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags)) };
        v
    }
    pub fn outw(&self, port: u16, v: u16) {
        // SAFETY: as above.
        unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
    }
    pub fn inl(&self, port: u16) -> u32 {
        let v: u32;
        // SAFETY: as above.
        unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags)) };
        v
    }
    pub fn outl(&self, port: u16, v: u32) {
        // SAFETY: as above.
        unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
    }
}

impl uart16550::PortIo for Ports {
    fn inb(&mut self, port: u16) -> u8 {
        Ports::inb(self, port)
    }
    fn outb(&mut self, port: u16, value: u8) {
        Ports::outb(self, port, value)
    }
}

#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// # Safety
/// Reading some MSRs has side effects or faults if absent; the caller knows
/// the MSR exists.
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// Writing MSRs changes CPU behaviour (paging, segments, APIC).
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: the caller guarantees the write is sound.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// A hardware random number (RDRAND), if the CPU has the instruction and
/// it delivered one.
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0).ecx & (1 << 30) == 0 {
        return None;
    }
    let r: u64;
    let ok: u8;
    // SAFETY: RDRAND exists (CPUID above); it only writes the register and
    // the flags.
    unsafe { core::arch::asm!("rdrand {}", "setc {}", out(reg) r, out(reg_byte) ok, options(nomem, nostack)) };
    (ok != 0).then_some(r)
}

/// Reads a VMX capability MSR (0x480-0x493), if the CPU reports VMX; None
/// otherwise (reading them then would raise #GP).
pub fn read_vmx_capability(msr: u32) -> Option<u64> {
    if cpuid(1, 0).ecx & (1 << 5) == 0 || !(0x480..=0x493).contains(&msr) {
        return None;
    }
    // SAFETY: the CPU has VMX, so the VMX capability MSRs exist; reading
    // them has no side effects.
    Some(unsafe { rdmsr(msr) })
}

pub fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    // SAFETY: CPUID is available on every x86-64 CPU.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::__cpuid_count(leaf, sub)
    }
}

pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// `pml4` must be a page table that maps the running kernel.
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: the caller guarantees the new tables map the kernel.
    unsafe { asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// Stops this CPU for good (interrupts off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts disabled only stops this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Enables interrupts, waits for one, and disables them again. The kernel
/// otherwise runs with interrupts off (see docs/platform.md, "Toolchain", on the red zone).
pub fn wait_for_interrupt() {
    // SAFETY: `sti; hlt` in one asm block: the interrupt is taken on this
    // asm's stack position, which holds no Rust red-zone data.
    unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) };
}

/// Lets interrupts that are pending (e.g. one that caused a VM exit) be
/// taken now, on this stack, inside this asm block.
pub fn take_pending_interrupts() {
    // SAFETY: `sti; nop; cli` opens a one-instruction window; the interrupt
    // frame lands on this asm's stack position (no red-zone data below it).
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

pub fn pause() {
    core::hint::spin_loop();
}

/// Test aid (`inject_fault=pagefault`): reads an unmapped kernel address,
/// so the page-fault report and the fatal stop can be checked. Does not
/// return.
#[inline(never)]
pub fn fault_on_unmapped_read() {
    // SAFETY: not memory-safe in the usual sense and not meant to be: the
    // address is never mapped, so the read faults and the exception path
    // stops the kernel before any value is used.
    let v = unsafe { core::ptr::read_volatile(0x0dea_dbee_f000 as *const u64) };
    log::error!("read {v:#x} from an unmapped address?!");
}

/// Test aid (`inject_fault=ud`): executes UD2 to raise #UD in the kernel.
#[inline(never)]
pub fn raise_invalid_opcode() {
    // SAFETY: UD2 only raises #UD; the exception path reports and stops.
    unsafe { core::arch::asm!("ud2") };
}
