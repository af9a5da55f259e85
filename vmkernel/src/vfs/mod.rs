//! The virtual file system user worlds see: inodes and mounts, ramfs,
//! devfs, procfs, pipes, ttys, and the Linux-shaped facade (`Vfs`,
//! `OpenFile`) the system-call layer calls.
//!
//! Layering: file systems implement `Inode`/`FileSystem` and know nothing
//! of permissions, mounts or symlink following; `Vfs` (namei, facade, ops)
//! adds those; `OpenFile` is what a descriptor points at.
//!
//! For the system-call layer:
//! - boot: `RamFs::new` + `ramfs::load::load_cpio`, `Vfs::new`,
//!   `devfs::install`, `Vfs::mount_at(b"/proc", ProcFs::new(provider), ..)`.
//! - a process keeps `Credentials`, a cwd `Location` and
//!   `Arc<OpenFile>`s; *at calls pass the dirfd's `OpenFile::location()` as
//!   the base; the umask is applied before calling.
//! - errors are `Errno`; return `errno.to_ret()`.
//! - nothing blocks: EAGAIN from `OpenFile::read`/`write` on a descriptor
//!   without O_NONBLOCK means wait until `OpenFile::poll` reports readiness
//!   (tty input, pipe activity) and retry; EPIPE also means SIGPIPE.
//! - `tty::Tty::input` returns signals for the foreground process group.

pub mod devfs;
pub mod dirent;
pub mod errno;
mod facade;
pub mod file;
pub mod flags;
pub mod inode;
pub mod mount;
mod namei;
mod ops;
pub mod perm;
pub mod pipe;
pub mod procfs;
pub mod ramfs;
pub mod stat;
#[cfg(test)]
mod testutil;
pub mod tty;
pub mod types;

pub use errno::{Errno, Result};
pub use facade::{ExecutingFile, Vfs};
pub use file::{Backing, OpenFile};
pub use inode::{Device, DirEntry, FileSystem, FsStats, Inode, NewAttr, NodeKind};
pub use mount::{Location, MountFlags, MountId, MountInfo};
pub use stat::Stat;
pub use types::*;

#[cfg(test)]
mod tests;
