//! The block-device interface drivers implement, and two devices built on
//! it: a RAM disk and a partition window onto another device.

use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use spin::Mutex;

/// Why a block request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The request reaches past the end of the device.
    OutOfRange,
    /// The buffer is not a whole number of sectors.
    Unaligned,
    /// The medium is read-only.
    ReadOnly,
    /// The device reported an error (media error, timeout, reset).
    Io,
    /// The device is gone (hot-removed, or stopped by a crash simulation).
    Gone,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "request past the end of the device",
            BlockError::Unaligned => "buffer is not a whole number of sectors",
            BlockError::ReadOnly => "device is read-only",
            BlockError::Io => "I/O error",
            BlockError::Gone => "device is gone",
        })
    }
}

/// A disk as the block layer sees it: a run of equal-sized sectors.
///
/// This is the registration point for block drivers (virtio-blk, NVMe,
/// ...): a driver implements it and hands an `Arc` of it to
/// [`crate::registry::DeviceRegistry::add_disk`]. Methods take `&self` so one
/// device can be shared by its partitions, the cache and the statistics;
/// drivers keep their queues behind their own lock. Buffers are whole
/// sectors; a request may cover many sectors (the cache merges adjacent
/// ones into one request).
pub trait BlockDevice: Send + Sync {
    /// Bytes per logical sector (512 or 4096).
    fn sector_size(&self) -> u32;
    /// Capacity in sectors.
    fn sector_count(&self) -> u64;
    /// Whether writes are refused (write-protected media, read-only mounts).
    fn read_only(&self) -> bool {
        false
    }
    /// Reads `buf.len() / sector_size` sectors starting at `lba`.
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `buf.len() / sector_size` sectors starting at `lba`. The data
    /// may sit in a volatile device cache until [`BlockDevice::flush`].
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable (a write barrier).
    fn flush(&self) -> Result<(), BlockError>;
    /// Writes each `(lba, buf)` like [`BlockDevice::write_sectors`]. A
    /// driver that can keeps them in flight at once, so a flush of
    /// scattered dirty runs (a file's data and its directory entry) waits
    /// for the slowest request instead of for the sum of all.
    fn write_sectors_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BlockError> {
        for &(lba, buf) in writes {
            self.write_sectors(lba, buf)?;
        }
        Ok(())
    }
}

/// Checks a request against a device's geometry; returns the sector count.
pub fn check_request(dev: &dyn BlockDevice, lba: u64, len: usize) -> Result<u64, BlockError> {
    let ss = dev.sector_size() as usize;
    if ss == 0 || !len.is_multiple_of(ss) {
        return Err(BlockError::Unaligned);
    }
    let n = (len / ss) as u64;
    match lba.checked_add(n) {
        Some(end) if end <= dev.sector_count() => Ok(n),
        _ => Err(BlockError::OutOfRange),
    }
}

/// A disk in memory: the kernel's RAM disks, and the tests' disks.
pub struct MemDisk {
    sector_size: u32,
    read_only: bool,
    data: Mutex<Vec<u8>>,
}

impl MemDisk {
    /// A zero-filled disk of `sectors` sectors.
    pub fn new(sector_size: u32, sectors: u64) -> Self {
        let len = (sector_size as u64).saturating_mul(sectors) as usize;
        MemDisk { sector_size, read_only: false, data: Mutex::new(vec![0; len]) }
    }
    /// A disk holding `image` (its length is rounded down to whole sectors).
    pub fn from_image(sector_size: u32, mut image: Vec<u8>) -> Self {
        let whole = image.len() - image.len() % sector_size.max(1) as usize;
        image.truncate(whole);
        MemDisk { sector_size, read_only: false, data: Mutex::new(image) }
    }
    /// The same disk, write-protected.
    pub fn into_read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    /// A copy of the whole medium.
    pub fn image(&self) -> Vec<u8> {
        self.data.lock().clone()
    }
}

impl BlockDevice for MemDisk {
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn sector_count(&self) -> u64 {
        (self.data.lock().len() / self.sector_size.max(1) as usize) as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self, lba, buf.len())?;
        let start = lba as usize * self.sector_size as usize;
        let data = self.data.lock();
        let src = data.get(start..start + buf.len()).ok_or(BlockError::OutOfRange)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        check_request(self, lba, buf.len())?;
        let start = lba as usize * self.sector_size as usize;
        let mut data = self.data.lock();
        let dst = data.get_mut(start..start + buf.len()).ok_or(BlockError::OutOfRange)?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// A window of sectors `[start, start + count)` of a parent device: a
/// partition. Requests are checked against the window, then shifted.
pub struct Window {
    parent: Arc<dyn BlockDevice>,
    start: u64,
    count: u64,
}

impl Window {
    /// Fails with `OutOfRange` if the window does not fit in the parent.
    pub fn new(parent: Arc<dyn BlockDevice>, start: u64, count: u64) -> Result<Self, BlockError> {
        match start.checked_add(count) {
            Some(end) if end <= parent.sector_count() => Ok(Window { parent, start, count }),
            _ => Err(BlockError::OutOfRange),
        }
    }
    /// First sector of the window on the parent.
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockDevice for Window {
    fn sector_size(&self) -> u32 {
        self.parent.sector_size()
    }
    fn sector_count(&self) -> u64 {
        self.count
    }
    fn read_only(&self) -> bool {
        self.parent.read_only()
    }
    fn read_sectors(&self, lba: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        check_request(self, lba, buf.len())?;
        self.parent.read_sectors(self.start + lba, buf)
    }
    fn write_sectors(&self, lba: u64, buf: &[u8]) -> Result<(), BlockError> {
        check_request(self, lba, buf.len())?;
        self.parent.write_sectors(self.start + lba, buf)
    }
    fn flush(&self) -> Result<(), BlockError> {
        self.parent.flush()
    }
    fn write_sectors_many(&self, writes: &[(u64, &[u8])]) -> Result<(), BlockError> {
        let mut shifted = Vec::with_capacity(writes.len());
        for &(lba, buf) in writes {
            check_request(self, lba, buf.len())?;
            shifted.push((self.start + lba, buf));
        }
        self.parent.write_sectors_many(&shifted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdisk_round_trip_and_bounds() {
        let d = MemDisk::new(512, 8);
        d.write_sectors(7, &[0xab; 512]).unwrap();
        let mut b = [0u8; 512];
        d.read_sectors(7, &mut b).unwrap();
        assert_eq!(b, [0xab; 512]);
        assert_eq!(d.read_sectors(8, &mut b), Err(BlockError::OutOfRange));
        assert_eq!(d.read_sectors(u64::MAX, &mut b), Err(BlockError::OutOfRange));
        assert_eq!(d.write_sectors(0, &[0; 100]), Err(BlockError::Unaligned));
        let ro = MemDisk::new(512, 1).into_read_only();
        assert_eq!(ro.write_sectors(0, &[0; 512]), Err(BlockError::ReadOnly));
    }

    #[test]
    fn window_shifts_and_confines() {
        let d: Arc<dyn BlockDevice> = Arc::new(MemDisk::new(512, 16));
        let w = Window::new(d.clone(), 4, 4).unwrap();
        w.write_sectors(0, &[1; 512]).unwrap();
        let mut b = [0u8; 512];
        d.read_sectors(4, &mut b).unwrap();
        assert_eq!(b, [1; 512]);
        assert_eq!(w.write_sectors(4, &[1; 512]), Err(BlockError::OutOfRange));
        assert!(Window::new(d, 15, 2).is_err());
    }
}
