//! The virtual machine monitor's hardware-free parts.
//!
//! Everything below is plain state machines over numbers: the guest-visible
//! device model (legacy PC devices, APICs), the I/O bus that dispatches port
//! and MMIO accesses to them, and the [`platform::Platform`] aggregate the
//! VMM's exit handlers call. Time is always passed in as guest-visible
//! nanoseconds, never read from a clock, so every behaviour is testable on
//! the host with synthetic time.

pub mod bus;
pub mod devices;
pub mod event;
pub mod platform;
