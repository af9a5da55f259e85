//! virtio-blk (virtio 1.x §5.2) on a [`BlockBackend`].
//!
//! One request queue. A request is a 16-byte header (type, sector), data
//! buffers, and a one-byte status the device writes last. Reads and writes
//! go to the backend in chunks of at most [`CHUNK`] bytes, so a request
//! never makes the host allocate more than that. FLUSH reaches the
//! backend's flush (the image file's fsync); GET_ID returns the disk's
//! serial. A read-only disk offers VIRTIO_BLK_F_RO and fails writes with
//! IOERR. Requests that reach past the disk fail with IOERR; requests
//! that cannot be answered at all (no room for the status byte, a header
//! that is too short) put the device into DEVICE_NEEDS_RESET.

use alloc::boxed::Box;
use alloc::vec;

use vmk_vdisk::BlockBackend;

use crate::GuestMemory;
use crate::mmio::{DeviceError, VirtioDevice};
use crate::queue::Queue;

pub const SECTOR: u64 = 512;
/// Bytes moved between the backend and guest memory per step.
pub const CHUNK: usize = 64 << 10;
/// The request queue's size.
pub const QUEUE_SIZE: u16 = 256;

pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Length of the serial GET_ID returns.
pub const ID_BYTES: usize = 20;

/// Counters for the VM's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkStats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: u64,
}

pub struct Blk {
    backend: Box<dyn BlockBackend>,
    id: [u8; ID_BYTES],
    stats: BlkStats,
}

impl Blk {
    /// A disk with serial `id` (truncated to 20 bytes).
    pub fn new(backend: Box<dyn BlockBackend>, id: &str) -> Self {
        let mut serial = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        serial[..n].copy_from_slice(&id.as_bytes()[..n]);
        Blk { backend, id: serial, stats: BlkStats::default() }
    }

    pub fn stats(&self) -> BlkStats {
        self.stats
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.backend.len() / SECTOR
    }

    fn config(&self) -> [u8; 24] {
        let mut c = [0u8; 24];
        c[0..8].copy_from_slice(&self.capacity_sectors().to_le_bytes());
        // size_max (8) is not offered; seg_max leaves room for header and status.
        c[12..16].copy_from_slice(&(QUEUE_SIZE as u32 - 2).to_le_bytes());
        c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c
    }

    /// Serves one request; returns (status, bytes written to the driver
    /// before the status byte).
    fn serve(&mut self, chain: &crate::queue::Chain, mem: &dyn GuestMemory, kind: u32, sector: u64) -> Result<(u8, u64), DeviceError> {
        let q = |error| DeviceError::Queue { queue: 0, error };
        let data_in = chain.writable_len() - 1;
        let data_out = chain.readable_len() - 16;
        let range_ok = |len: u64, size: u64| {
            len.is_multiple_of(SECTOR) && sector.checked_mul(SECTOR).and_then(|o| o.checked_add(len)).is_some_and(|end| end <= size)
        };
        match kind {
            T_IN => {
                if !range_ok(data_in, self.backend.len()) {
                    return Ok((S_IOERR, 0));
                }
                let mut buf = vec![0u8; CHUNK.min(data_in as usize)];
                let mut done = 0u64;
                while done < data_in {
                    let n = (CHUNK as u64).min(data_in - done) as usize;
                    if self.backend.read_at(sector * SECTOR + done, &mut buf[..n]).is_err() {
                        return Ok((S_IOERR, done));
                    }
                    chain.write_at(mem, done, &buf[..n]).map_err(q)?;
                    done += n as u64;
                }
                self.stats.reads += 1;
                self.stats.bytes_read += data_in;
                Ok((S_OK, data_in))
            }
            T_OUT => {
                if self.backend.read_only() || !range_ok(data_out, self.backend.len()) {
                    return Ok((S_IOERR, 0));
                }
                let mut buf = vec![0u8; CHUNK.min(data_out as usize)];
                let mut done = 0u64;
                while done < data_out {
                    let n = (CHUNK as u64).min(data_out - done) as usize;
                    chain.read_at(mem, 16 + done, &mut buf[..n]).map_err(q)?;
                    if self.backend.write_at(sector * SECTOR + done, &buf[..n]).is_err() {
                        return Ok((S_IOERR, 0));
                    }
                    done += n as u64;
                }
                self.stats.writes += 1;
                self.stats.bytes_written += data_out;
                Ok((S_OK, 0))
            }
            T_FLUSH => {
                self.stats.flushes += 1;
                Ok((if self.backend.flush().is_ok() { S_OK } else { S_IOERR }, 0))
            }
            T_GET_ID => {
                let n = (ID_BYTES as u64).min(data_in) as usize;
                chain.write_at(mem, 0, &self.id[..n]).map_err(q)?;
                Ok((S_OK, n as u64))
            }
            _ => Ok((S_UNSUPP, 0)),
        }
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        crate::device_id::BLOCK
    }
    fn name(&self) -> &'static str {
        "virtio-blk"
    }
    fn features(&self) -> u64 {
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | if self.backend.read_only() { F_RO } else { 0 }
    }
    fn queue_count(&self) -> usize {
        1
    }
    fn block_stats(&self) -> Option<BlkStats> {
        Some(self.stats)
    }
    fn queue_max_size(&self, _q: usize) -> u16 {
        QUEUE_SIZE
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let c = self.config();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset).ok().and_then(|o| c.get(o + i)).copied().unwrap_or(0);
        }
    }
    fn process_queue(&mut self, q: usize, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        let Some(queue) = queues.get_mut(q) else { return Ok(false) };
        let qe = |error| DeviceError::Queue { queue: q as u16, error };
        let mut any = false;
        while let Some(chain) = queue.pop(mem).map_err(qe)? {
            if chain.readable_len() < 16 {
                return Err(DeviceError::BadRequest("virtio-blk header shorter than 16 bytes"));
            }
            if chain.writable_len() < 1 {
                return Err(DeviceError::BadRequest("virtio-blk request without a status byte"));
            }
            let mut h = [0u8; 16];
            chain.read_at(mem, 0, &mut h).map_err(qe)?;
            let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
            let (status, written) = self.serve(&chain, mem, kind, sector)?;
            if status != S_OK {
                self.stats.errors += 1;
            }
            chain.write_at(mem, chain.writable_len() - 1, &[status]).map_err(qe)?;
            queue.push_used(mem, chain.head, written as u32 + 1).map_err(qe)?;
            any = true;
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::VERSION_1;
    use crate::mmio::{MmioDevice, reg, tests::bring_up};
    use crate::testmem::{DriverQueue, TestMem};
    use alloc::vec::Vec;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicU32, Ordering};
    use vmk_vdisk::DiskError;

    /// An in-memory disk that counts flushes.
    struct MemDisk {
        data: Vec<u8>,
        ro: bool,
        flushes: Arc<AtomicU32>,
    }

    impl BlockBackend for MemDisk {
        fn len(&self) -> u64 {
            self.data.len() as u64
        }
        fn read_only(&self) -> bool {
            self.ro
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DiskError> {
            let o = offset as usize;
            buf.copy_from_slice(self.data.get(o..o + buf.len()).ok_or(DiskError::OutOfRange)?);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
            let o = offset as usize;
            self.data.get_mut(o..o + data.len()).ok_or(DiskError::OutOfRange)?.copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), DiskError> {
            self.flushes.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn disk(ro: bool) -> (Box<MemDisk>, Arc<AtomicU32>) {
        let flushes = Arc::new(AtomicU32::new(0));
        let data = (0..1 << 20).map(|i: u32| (i / 512) as u8 ^ (i as u8)).collect();
        (Box::new(MemDisk { data, ro, flushes: flushes.clone() }), flushes)
    }

    fn header(kind: u32, sector: u64) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        h
    }

    fn setup(ro: bool) -> (TestMem, DriverQueue, MmioDevice, Arc<AtomicU32>) {
        let mem = TestMem::new(4 << 20);
        let dq = DriverQueue::new(16, 0x1000);
        let (d, flushes) = disk(ro);
        let mut dev = MmioDevice::new(0, Box::new(Blk::new(d, "mantle-disk0")));
        assert_eq!(bring_up(&mut dev, &mem, &[&dq], VERSION_1 | F_FLUSH), 0xf);
        (mem, dq, dev, flushes)
    }

    /// Submits a request; returns (status, used length).
    fn request(mem: &TestMem, dq: &mut DriverQueue, dev: &mut MmioDevice, kind: u32, sector: u64, data: Option<(&[u8], bool)>) -> (u8, u32) {
        mem.put(0x10000, &header(kind, sector));
        let mut bufs = vec![(0x10000u64, 16u32, false)];
        if let Some((d, writable)) = data {
            if !writable {
                mem.put(0x20000, d);
            }
            bufs.push((0x20000, d.len() as u32, writable));
        }
        bufs.push((0x30000, 1, true));
        mem.put(0x30000, &[0xff]);
        let n = dq.used_idx(mem);
        dq.add_chain(mem, 0, &bufs);
        dev.write(reg::QUEUE_NOTIFY, 4, 0, mem);
        assert_eq!(dq.used_idx(mem), n.wrapping_add(1), "request completed");
        (mem.get(0x30000, 1)[0], dq.used_elem(mem, n).1)
    }

    #[test]
    fn config_space_reports_capacity_and_block_size() {
        let (_, _, mut dev, _) = setup(false);
        assert_eq!(dev.read(reg::CONFIG, 4), 2048);
        assert_eq!(dev.read(reg::CONFIG + 4, 4), 0);
        assert_eq!(dev.read(reg::CONFIG + 20, 4), 512);
        assert_eq!(dev.read(reg::DEVICE_ID, 4), 2);
        assert_eq!(dev.read(reg::DEVICE_FEATURES, 4) & F_RO, 0);
    }

    #[test]
    fn reads_writes_flush_and_get_id() {
        let (mem, mut dq, mut dev, flushes) = setup(false);
        let (s, used) = request(&mem, &mut dq, &mut dev, T_IN, 3, Some((&[0; 1024], true)));
        assert_eq!((s, used), (S_OK, 1025));
        let want: Vec<u8> = (3 * 512..5 * 512).map(|i: u32| (i / 512) as u8 ^ (i as u8)).collect();
        assert_eq!(mem.get(0x20000, 1024), want);
        let data: Vec<u8> = (0..4096).map(|i| (i * 7) as u8).collect();
        assert_eq!(request(&mem, &mut dq, &mut dev, T_OUT, 100, Some((&data, false))), (S_OK, 1));
        mem.put(0x20000, &[0; 4096]);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_IN, 100, Some((&[0; 4096], true))).0, S_OK);
        assert_eq!(mem.get(0x20000, 4096), data);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_FLUSH, 0, None), (S_OK, 1));
        assert_eq!(flushes.load(Ordering::Relaxed), 1, "FLUSH reaches the backend");
        assert_eq!(request(&mem, &mut dq, &mut dev, T_GET_ID, 0, Some((&[0; 20], true))), (S_OK, 21));
        assert_eq!(&mem.get(0x20000, 12), b"mantle-disk0");
        assert_eq!(request(&mem, &mut dq, &mut dev, 77, 0, None).0, S_UNSUPP);
        let stats = dev.device().block_stats().expect("a disk has counters");
        assert_eq!((stats.reads, stats.bytes_read, stats.writes, stats.bytes_written, stats.flushes), (2, 1024 + 4096, 1, 4096, 1));
    }

    #[test]
    fn requests_past_the_end_or_to_a_read_only_disk_fail_with_ioerr() {
        let (mem, mut dq, mut dev, _) = setup(false);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_IN, 2047, Some((&[0; 1024], true))).0, S_IOERR);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_OUT, u64::MAX / 256, Some((&[0; 512], false))).0, S_IOERR);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_IN, 0, Some((&[0; 100], true))).0, S_IOERR, "not whole sectors");
        assert!(dev.running(), "an I/O error is the guest's answer, not a device fault");
        assert_eq!(dev.device().block_stats().unwrap().errors, 3);
        let (mem, mut dq, mut dev, _) = setup(true);
        assert_ne!(dev.read(reg::DEVICE_FEATURES, 4) & F_RO, 0);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_OUT, 0, Some((&[1; 512], false))).0, S_IOERR);
        assert_eq!(request(&mem, &mut dq, &mut dev, T_IN, 0, Some((&[0; 512], true))).0, S_OK);
    }

    #[test]
    fn a_request_without_status_byte_stops_the_device() {
        let (mem, mut dq, mut dev, _) = setup(false);
        mem.put(0x10000, &header(T_IN, 0));
        dq.add_chain(&mem, 0, &[(0x10000, 16, false)]);
        dev.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert!(!dev.running());
        assert!(matches!(dev.last_error(), Some(DeviceError::BadRequest(_))));
    }

    #[test]
    fn hostile_queues_stop_only_this_disk() {
        crate::mmio::tests::hostile_inputs(|| Box::new(Blk::new(disk(false).0, "x")), 0);
    }
}
