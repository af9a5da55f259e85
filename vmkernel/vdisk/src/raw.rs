//! Raw images: byte `n` of the disk is byte `n` of the file.

use alloc::boxed::Box;

use crate::{BlockBackend, DiskError, ImageFile, check_range};

pub struct RawDisk {
    file: Box<dyn ImageFile>,
    len: u64,
    read_only: bool,
}

impl RawDisk {
    pub fn open(mut file: Box<dyn ImageFile>, read_only: bool) -> Result<Self, DiskError> {
        let len = file.size()?;
        Ok(RawDisk { file, len, read_only })
    }
}

impl BlockBackend for RawDisk {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.len)?;
        self.file.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly);
        }
        check_range(offset, data.len(), self.len)?;
        self.file.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        self.file.flush()
    }
}
