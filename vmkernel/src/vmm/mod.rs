//! Hardware-free parts of the virtual machine monitor.
//!
//! - [`decode`]: x86 instruction decoding and emulation for MMIO exits (the
//!   VMM must decode itself: QEMU's SVM has no decode assists, no nRIP save).
//! - [`guest_paging`]: guest-virtual → guest-physical translation for
//!   instruction fetch.
//! - [`loader`]: putting guest kernels into guest memory (Multiboot v1, flat
//!   binaries, 64-bit ELF entry) and the initial vCPU state.
//! - [`firmware`]: the e820 memory map, ACPI tables and the Intel MP table.

pub mod decode;
pub mod firmware;
pub mod guest_paging;
pub mod loader;
