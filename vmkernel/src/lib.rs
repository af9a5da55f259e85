//! Hardware-free parts of the VMkernel.
//!
//! Everything here is plain logic over bytes and numbers — boot-information
//! parsing, the frame allocator, page-table encoding, archive and firmware
//! table formats, the scheduler policy, the VFS core, the VMM's device
//! models — so it is unit-tested on the host with `cargo test`. The
//! framework (`vmkernel/framework`) supplies the hardware and the kernel
//! binary (`vmkernel/services`) the services; both build on this library,
//! which depends on neither (only on the ABI crate, `vmkernel/abi`).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod acpi_s5;
pub mod af_unix;
pub mod apic_regs;
pub mod blocking;
pub mod bootinfo;
pub mod cmdline;
pub mod cpio;
pub mod csprng;
pub mod elf;
pub mod frames;
pub mod lz4_frame;
pub mod linux_abi;
pub mod paging;
pub mod sched;
pub mod rootfs;
pub mod status_screen;
pub mod tsc_calibration;
pub mod vmk_api;
pub mod vfs;
pub mod user_stack;
pub mod vm_regions;
pub mod vmm;
