//! The VMkernel storage stack below the VFS, free of hardware so it is
//! tested on the host (`cargo test -p vmk-storage`).
//!
//! - [`block`]: the [`block::BlockDevice`] trait block drivers (virtio-blk,
//!   NVMe) implement — the block layer's registration point — with a RAM
//!   disk and partition windows.
//! - [`partition`]: MBR and GPT partition tables (CRCs checked).
//! - [`registry`]: the device registry naming disks and partitions as
//!   ESXi's `/vmfs/devices/disks/` does, with `/proc/diskstats` output
//!   ([`stats`]).
//! - [`cache`]: the bounded write-back block cache with request merging.
//! - [`fat`]: FAT datastores (FAT12/16/32, long names) on `starry-fatfs`
//!   through the cache, with the VFS-facing API the kernel wraps, a
//!   bounded consistency check at mount, and atomic replace (see
//!   [`fat`]'s "Crash safety").
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod block;
pub mod cache;
pub mod fat;
pub mod partition;
pub mod registry;
pub mod stats;
