//! Local APIC (xAPIC MMIO or x2APIC MSRs).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::cpu;
use crate::mm;

const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_MSR_BASE: u32 = 0x800;

static X2APIC: AtomicBool = AtomicBool::new(false);
static XAPIC_VIRT: AtomicU64 = AtomicU64::new(0);

pub mod reg {
    pub const ID: u32 = 0x20;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
}

pub fn has_x2apic() -> bool {
    cpu::cpuid(1, 0).ecx & (1 << 21) != 0
}

pub fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled, so the APIC MSR range exists.
        unsafe { cpu::rdmsr(X2APIC_MSR_BASE + (reg >> 4)) as u32 }
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        if base == 0 {
            return 0;
        }
        // SAFETY: the xAPIC page is mapped uncached... through the direct map.
        unsafe { core::ptr::read_volatile((base + reg as u64) as *const u32) }
    }
}

pub fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC mode is enabled.
        unsafe { cpu::wrmsr(X2APIC_MSR_BASE + (reg >> 4), v as u64) }
    } else {
        let base = XAPIC_VIRT.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((base + reg as u64) as *mut u32, v) }
    }
}

/// Enables this CPU's LAPIC (x2APIC mode when the CPU has it).
pub fn init_this_cpu(lapic_phys: u64) {
    let x2 = has_x2apic();
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC.
    unsafe {
        let base = cpu::rdmsr(IA32_APIC_BASE);
        let mut nb = base | (1 << 11);
        if x2 {
            nb |= 1 << 10;
        }
        cpu::wrmsr(IA32_APIC_BASE, nb);
    }
    X2APIC.store(x2, Ordering::Relaxed);
    XAPIC_VIRT.store(mm::phys_to_virt(lapic_phys), Ordering::Relaxed);
    // Software-enable, spurious vector 0xff.
    write(reg::SVR, 0x1ff);
}

pub fn is_x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

pub fn id() -> u32 {
    let v = read(reg::ID);
    if is_x2apic() { v } else { v >> 24 }
}

pub fn eoi() {
    write(reg::EOI, 0);
}
