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
//! - [`volumes`]: mounting every FAT volume of the registry at boot, with
//!   its `/vmfs/volumes/<label>` and `<uuid>` names.
//!
//! # How the kernel plugs in (next steps)
//! - A block driver implements [`block::BlockDevice`] and registers the
//!   disk: `registry.add_disk(&registry::adapter_disk_name(n), Arc::new(dev))`
//!   (the returned lines go to the log). Partitions appear as `name:N`.
//! - At boot, [`volumes::mount_all`] mounts every FAT volume; the VFS puts
//!   each at `/vmfs/volumes/<name>` with `<uuid>` beside it, and serves
//!   `/proc/diskstats` from [`registry::DeviceRegistry::diskstats`].
//! - The VFS maps system calls onto [`fat::Datastore`]: `open` (O_CREAT,
//!   O_EXCL, O_TRUNC, O_APPEND as [`fat::OpenFlags`]), `read`/`pread` →
//!   `read_at`, `write`/`pwrite` → `write_at` (the file position stays in
//!   the VFS), `ftruncate` → `truncate`, `fsync`/`fdatasync` → `fsync`,
//!   `rename`, `unlink`, `mkdir`, `rmdir`, `getdents64` → `readdir`,
//!   `stat`, `utimensat` → `set_times`, `statfs`; errors carry their errno
//!   ([`fat::FsError::errno`]).
//! - A periodic world calls [`fat::Datastore::flush_expired`] (dirty data
//!   reaches the disk within the cache's age limit); `sync` and power-off
//!   call `sync`, `umount` calls `unmount`.
//! - A `Datastore` is `Send` but not `Sync`: fatfs uses `RefCell`s and open
//!   files borrow the volume, all inside the datastore's own allocation,
//!   so it may move between CPUs as a whole (`fat/mod.rs` states why, the
//!   one `unsafe` item outside the kernel's framework). The kernel keeps
//!   each one behind a single lock.
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
pub mod volumes;
