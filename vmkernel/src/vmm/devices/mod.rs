//! Emulated devices, one small module each (in the style of Firecracker's
//! `devices/`). None of them knows about the bus or the others: each exposes
//! register accesses at an offset, takes the current guest time where it
//! matters, and reports interrupts as output levels, returned counts or
//! messages that [`super::platform::Platform`] wires together.

pub mod acpi_pm;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod misc;
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
