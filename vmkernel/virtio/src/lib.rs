//! Guest-facing virtio devices (the device half of the virtio 1.x
//! specification), hardware-free and host-tested.
//!
//! - [`queue`]: split virtqueues. Every descriptor chain is checked before a
//!   device sees it: loops, chains longer than the queue, addresses outside
//!   guest RAM, device-readable after device-writable buffers.
//! - [`mmio`]: the virtio-mmio transport (register layout version 2): feature
//!   negotiation, queue set-up, the status state machine, interrupt status
//!   and acknowledge, the configuration generation. Slot `i` of a VM sits at
//!   [`mmio::slot_base`]`(i)` on IOAPIC GSI [`mmio::slot_gsi`]`(i)`.
//! - [`blk`], [`net`], [`rng`]: the device models, each on a small back-end
//!   contract (a [`vmk_vdisk::BlockBackend`], a frame sink, an entropy source).
//!
//! A guest that breaks the rules (a descriptor loop, an address outside its
//! RAM, a queue size that is not a power of two, a bad status sequence)
//! gets its device put into DEVICE_NEEDS_RESET with one log line naming the
//! device and the fault; the device then ignores its queues until the
//! driver resets it. Nothing a guest writes can panic the host.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;

#[cfg(test)]
pub(crate) mod testmem;

/// Guest-physical memory as a device sees it.
pub trait GuestMemory {
    /// Whether `[gpa, gpa + len)` is guest RAM (false on overflow).
    fn contains(&self, gpa: u64, len: u64) -> bool;
    /// Copies guest memory into `buf`; false if any byte is not RAM.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool;
    /// Copies `data` into guest memory; false if any byte is not RAM.
    fn write(&self, gpa: u64, data: &[u8]) -> bool;
}

/// Virtio device types (specification §5).
pub mod device_id {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const RNG: u32 = 4;
}

/// Feature bits common to every device.
pub mod feature {
    /// The device follows virtio 1.x ("modern"); required for version 2 MMIO.
    pub const VERSION_1: u64 = 1 << 32;
    /// `used_event`/`avail_event` notification suppression (§2.7.7.2, §2.7.10).
    pub const EVENT_IDX: u64 = 1 << 29;
}
