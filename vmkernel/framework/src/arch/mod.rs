//! Everything that touches the x86-64 hardware directly.

pub mod apic;
pub mod boot;
pub mod context;
// The CPU instructions sit below everything (`crate::cpu`); here under
// their old name too.
pub use crate::cpu;
pub mod gdt;
pub mod syscall;
pub mod ioapic;
pub mod smp;
pub mod trap;
