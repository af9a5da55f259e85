//! Everything that touches the x86-64 hardware directly.

pub mod apic;
pub mod boot;
pub mod context;
pub mod cpu;
pub mod gdt;
pub mod syscall;
pub mod ioapic;
pub mod smp;
pub mod trap;
