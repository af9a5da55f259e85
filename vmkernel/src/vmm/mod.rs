//! Hardware-free parts of the virtual machine monitor: plain state machines
//! and data transformations over numbers, testable on the host (time is
//! always passed in as guest-visible nanoseconds, never read from a clock).
//!
//! - [`decode`]: x86 instruction decoding and emulation for MMIO exits (the
//!   VMM must decode itself: QEMU's SVM has no decode assists, no nRIP save).
//! - [`cpu_model`]: the one table of CPU features offered, driving CPUID,
//!   the CR4/EFER bits a guest may set and the MSRs it may use.
//! - [`cpuid`]: the virtual CPU's CPUID (features, hypervisor leaves, the
//!   VM's own topology) from the host's.
//! - [`debug_regs`]: the guest's DR0–DR7, kept in software (the hardware
//!   switches none of DR0–DR3), and MOV DR decoding for SVM.
//! - [`mov_cr`]: MOV CR decoding for SVM's CR4/CR8 intercepts.
//! - [`guest_paging`]: guest-virtual → guest-physical translation for
//!   instruction fetch.
//! - [`loader`]: putting guest kernels into guest memory (Multiboot v1, flat
//!   binaries, 64-bit ELF entry) and the initial vCPU state.
//! - [`firmware`]: the e820 memory map, ACPI tables and the Intel MP table.
//! - [`devices`], [`bus`], [`platform`]: the guest-visible device model
//!   (legacy PC devices, APICs), the I/O bus that dispatches port and MMIO
//!   accesses, and the `Platform` aggregate the exit handlers call;
//!   [`event`]: what devices ask of the VMM (reset, exit, start a vCPU);
//!   [`msrs`]: the MSRs a virtual CPU answers itself (TSC, MTRRs, PAT, ...);
//!   [`pvclock`]: the KVM-compatible paravirtual clock (kvmclock).
//! - [`vmx`]: Intel VT-x as data — VMCS encodings, controls fitted to the
//!   capability MSRs, exit qualifications, CR0/CR4 rules (the kernel's
//!   `hv::vmx` does the VMX instructions).

pub mod bus;
pub mod cpu_model;
pub mod cpuid;
pub mod debug_regs;
pub mod decode;
pub mod devices;
pub mod event;
pub mod firmware;
pub mod guest_paging;
pub mod guest_ram;
pub mod loader;
pub mod mov_cr;
pub mod msrs;
pub mod platform;
pub mod pvclock;
pub mod vmx;
