//! Guest disk images on datastores: `vmk_vdisk`'s `ImageStore` over the
//! VFS, so a VM's `diskN.file` (raw, qcow2 with its backing files, or the
//! extents of a split VMDK) is read and written through the same FAT
//! datastore files user worlds see, with `fsync` as the guest's FLUSH.

use alloc::boxed::Box;
use alloc::format;

use vmk_vdisk::{DiskError, ImageFile, ImageStore};
use vmkernel::vfs::flags::{O_RDONLY, O_RDWR};
use vmkernel::vfs::{Credentials, OpenFile, S_IFMT, S_IFREG};

/// An open datastore file.
struct VfsImageFile(OpenFile);

impl ImageFile for VfsImageFile {
    fn size(&mut self) -> Result<u64, DiskError> {
        Ok(self.0.stat().size)
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.pread(offset + done as u64, &mut buf[done..]) {
                Ok(0) => return Err(DiskError::Io(5)),
                Ok(n) => done += n,
                Err(e) => return Err(DiskError::Io(e.0)),
            }
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let mut done = 0;
        while done < data.len() {
            match self.0.pwrite(offset + done as u64, &data[done..]) {
                Ok(0) => return Err(DiskError::NoSpace),
                Ok(n) => done += n,
                // ENOSPC and EFBIG: the datastore or FAT's 4 GiB file limit.
                Err(e) if e.0 == 28 || e.0 == 27 => return Err(DiskError::NoSpace),
                Err(e) => return Err(DiskError::Io(e.0)),
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.0.fsync().map_err(|e| DiskError::Io(e.0))
    }
}

/// Opens image files by absolute path as root.
pub struct VfsImageStore;

impl ImageStore for VfsImageStore {
    fn open(&mut self, path: &str, writable: bool) -> Result<Box<dyn ImageFile>, DiskError> {
        let vfs = crate::uw::files::vfs().ok_or_else(|| DiskError::NotFound(format!("{path} (no file system yet)")))?;
        let flags = if writable { O_RDWR } else { O_RDONLY };
        let f = vfs
            .open(&Credentials::root(), &vfs.root(), path.as_bytes(), flags, 0)
            .map_err(|e| DiskError::NotFound(format!("{path} (errno {})", e.0)))?;
        if f.stat().mode & S_IFMT != S_IFREG {
            return Err(DiskError::NotFound(format!("{path} (not a regular file)")));
        }
        Ok(Box::new(VfsImageFile(f)))
    }
}
