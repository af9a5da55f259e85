//! Virtual disk images for guests.
//!
//! A guest disk is a [`BlockBackend`]: a byte-addressed disk with a length,
//! reads, writes and a flush. The backends here store it in image files
//! reached through [`ImageFile`] (any random-access file: a datastore file
//! in the kernel, a host file in the tests), opened by name through an
//! [`ImageStore`], so one image can name others (a qcow2 backing file, the
//! extents of a split VMDK):
//!
//! - [`raw`]: the file is the disk.
//! - [`qcow2`]: QEMU's copy-on-write format, versions 2 and 3: L1/L2
//!   tables, refcounts, cluster allocation at the end of the file, and
//!   backing files (a linked clone reads what it has not written from its
//!   base image).
//! - [`vmdk`]: VMware's hosted sparse format: `monolithicSparse` (one
//!   file with an embedded descriptor) and `twoGbMaxExtentSparse` (a text
//!   descriptor naming 2 GiB sparse extents, so big disks fit on FAT),
//!   plus flat and zero extents; grain directory and tables, writes
//!   allocate grains.
//!
//! Images are input from outside: every offset and size read from one is
//! checked, and a bad image is refused with a [`DiskError`] naming what
//! is wrong, never a panic.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

pub mod qcow2;
pub mod raw;
pub mod vmdk;

/// Why a disk operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The file underneath failed (its own errno-style code).
    Io(i32),
    /// The request reaches beyond the end of the disk.
    OutOfRange,
    /// A write to a read-only disk.
    ReadOnly,
    /// The image's metadata is inconsistent.
    Corrupt(&'static str),
    /// A valid image using something not implemented here.
    Unsupported(&'static str),
    /// The image cannot grow (its file system or its own tables are full).
    NoSpace,
    /// A file the image names could not be opened.
    NotFound(String),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Io(e) => write!(f, "I/O error {e}"),
            DiskError::OutOfRange => f.write_str("beyond the end of the disk"),
            DiskError::ReadOnly => f.write_str("the disk is read-only"),
            DiskError::Corrupt(w) => write!(f, "corrupt image: {w}"),
            DiskError::Unsupported(w) => write!(f, "unsupported image: {w}"),
            DiskError::NoSpace => f.write_str("no space left for the image"),
            DiskError::NotFound(n) => write!(f, "cannot open {n}"),
        }
    }
}

/// A random-access file an image lives in.
pub trait ImageFile: Send {
    fn size(&mut self) -> Result<u64, DiskError>;
    /// Reads exactly `buf.len()` bytes at `offset` (an error past the end).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    /// Writes all of `data` at `offset`, growing the file if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    /// Makes everything written so far durable.
    fn flush(&mut self) -> Result<(), DiskError>;
}

/// Opens the files images name. Relative names are resolved by the
/// backends against the directory of the image naming them.
pub trait ImageStore {
    fn open(&mut self, path: &str, writable: bool) -> Result<Box<dyn ImageFile>, DiskError>;
}

/// A guest disk.
pub trait BlockBackend: Send {
    /// Size in bytes.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn read_only(&self) -> bool;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError>;
    fn flush(&mut self) -> Result<(), DiskError>;
}

/// An image file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            "vmdk" => Some(Format::Vmdk),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
        }
    }
}

/// How many images deep a backing chain may go (a hostile chain could
/// otherwise name itself).
pub const MAX_CHAIN_DEPTH: usize = 8;

/// Opens the disk image `path` in `format`.
pub fn open(store: &mut dyn ImageStore, path: &str, format: Format, read_only: bool) -> Result<Box<dyn BlockBackend>, DiskError> {
    open_depth(store, path, format, read_only, 0)
}

pub(crate) fn open_depth(store: &mut dyn ImageStore, path: &str, format: Format, read_only: bool, depth: usize) -> Result<Box<dyn BlockBackend>, DiskError> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(DiskError::Unsupported("backing chain too deep (or a loop)"));
    }
    Ok(match format {
        Format::Raw => Box::new(raw::RawDisk::open(store.open(path, !read_only)?, read_only)?),
        Format::Qcow2 => Box::new(qcow2::Qcow2::open(store, path, read_only, depth)?),
        Format::Vmdk => Box::new(vmdk::Vmdk::open(store, path, read_only)?),
    })
}

/// `name` as seen from the image at `base`: absolute names stay, relative
/// ones are taken in `base`'s directory.
pub fn sibling(base: &str, name: &str) -> String {
    if name.starts_with('/') {
        return String::from(name);
    }
    match base.rfind('/') {
        Some(i) => alloc::format!("{}/{}", &base[..i], name),
        None => String::from(name),
    }
}

/// Checks that `[offset, offset + len)` is inside a disk of `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<(), DiskError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names() {
        assert_eq!(sibling("/vmfs/volumes/ds/vm/a.qcow2", "base.raw"), "/vmfs/volumes/ds/vm/base.raw");
        assert_eq!(sibling("/vmfs/volumes/ds/vm/a.qcow2", "/x/base.raw"), "/x/base.raw");
        assert_eq!(sibling("a.vmdk", "a-s001.vmdk"), "a-s001.vmdk");
    }
}
