//! Hardware-free parts of the VMkernel.
//!
//! Everything here is plain logic over bytes and numbers — boot-information
//! parsing, the frame allocator, page-table encoding, archive and firmware
//! table formats — so it is unit-tested on the host with `cargo test`. The
//! kernel image (`src/main.rs` and its modules) supplies the hardware.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod acpi_s5;
pub mod apic_regs;
pub mod bootinfo;
pub mod cmdline;
pub mod cpio;
pub mod frames;
pub mod paging;
pub mod sched;
pub mod rootfs;
pub mod status;
pub mod vmk_api;
pub mod vmm;
