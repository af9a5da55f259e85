//! The virtual file system user worlds see: inodes and mounts, ramfs,
//! devfs, procfs, pipes, ttys, and the Linux-shaped facade (`Vfs`,
//! `OpenFile`) the system-call layer calls.

pub mod errno;
pub mod inode;
pub mod ramfs;
pub mod types;

pub use errno::{Errno, Result};
pub use inode::{Device, DirEntry, FileSystem, Inode, NewAttr, NodeKind};
pub use types::*;
