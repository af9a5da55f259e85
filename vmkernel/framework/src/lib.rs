//! The VMkernel's framework layer (in the manner of Asterinas's OSTD).
//!
//! Everything that touches the hardware or raw memory lives here — boot,
//! CPUs and per-CPU state, traps and interrupt routing, the APICs, page
//! tables and the direct map, frames and the kernel heap, worlds' context
//! switch, user-mode entry, port and MMIO access, the serial console, the
//! clocks, ACPI and PCI discovery — and is offered to the services layer
//! (`vmkernel/services`, `#![deny(unsafe_code)]`) through safe interfaces.
//! Lower layers never call upward: the services register what the
//! framework calls back (system-call and user-fault handlers, the code run
//! on return to user mode, per-CPU start hooks, interrupt handlers).
//!
//! Every `unsafe` block here states the invariant it relies on in a
//! `// SAFETY:` comment and every unsafe function a `# Safety` section
//! (checked by clippy through the workspace lints; `image-builder lint`).
#![no_std]

extern crate alloc;

pub mod acpi;
pub mod arch;
pub mod backtrace;
pub mod boot_archive;
pub mod console;
pub mod cpu;
pub mod hal;
pub mod hv;
pub mod mm;
pub mod pci;
pub mod power;
pub mod rt;
pub mod selftest;
pub mod sleep_lock;
pub mod time;
pub mod world;
