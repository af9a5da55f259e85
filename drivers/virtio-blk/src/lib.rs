//! virtio-blk over PCI, on `virtio-drivers`' `VirtIOBlk`.
//!
//! `virtio-drivers` negotiates features and runs the virtqueue; this crate
//! adds what a kernel driver needs around it:
//! - DMA: a caller's buffer that is one run of physical memory (kernel
//!   heap in the direct map, checked page by page) is handed to the device
//!   as it is, in requests of up to [`DIRECT_MAX_BYTES`]; any other buffer
//!   goes through the driver's bounce buffer of [`BOUNCE_BYTES`] (a larger
//!   request is split). The request/response headers are the driver's own;
//! - waiting: a request is submitted, then the caller's `wait` function is
//!   called with a readiness check (the kernel blocks the world until the
//!   completion interrupt, or polls during boot), then completed;
//! - interrupts: with MSI-X the queue's vector is set in the common
//!   configuration ([`VirtioBlk::route_interrupts_to_msix`]);
//! - read-only media are reported ([`VirtioBlk::read_only`]) and writes to
//!   them refused.
//!
//! The virtio PCI glue (`VirtioHal`, `PciConfig`, MSI-X routing) is shared
//! with `virtio-net`.
#![no_std]

extern crate alloc;

use alloc::boxed::Box;

use hal::{Dma, Hal, Mmio, PAGE_SIZE};
use pci::{ConfigRegionAccess, PciAddress};
use virtio_drivers::device::blk::{BlkReq, BlkResp, RespStatus, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};
use virtio_net::{PciConfig, VirtioHal};

pub use virtio_drivers::transport::pci::VirtioPciError;

pub const VENDOR_VIRTIO: u16 = 0x1af4;
/// Transitional (0x1001) and modern (0x1042) block device IDs.
pub const DEVICE_IDS: [u16; 2] = [0x1001, 0x1042];

pub fn supports(vendor: u16, device: u16) -> bool {
    vendor == VENDOR_VIRTIO && DEVICE_IDS.contains(&device)
}

/// The bounce buffer: the longest request through it (for callers'
/// buffers the device cannot reach).
pub const BOUNCE_BYTES: usize = 256 * 1024;
/// The longest single request straight from or into a caller's buffer.
pub const DIRECT_MAX_BYTES: usize = 4 << 20;
/// Writes `write_many` keeps in flight at once (three descriptors each
/// in `virtio-drivers`' 16-entry queue).
pub const MAX_IN_FLIGHT: usize = 4;
/// virtio-blk addresses 512-byte sectors.
pub const SECTOR_BYTES: usize = SECTOR_SIZE;
const REQUEST_QUEUE: u16 = 0;

/// Why a device or a request failed.
#[derive(Debug)]
pub enum Error {
    Transport(VirtioPciError),
    Device(virtio_drivers::Error),
    /// No mappable virtio 1.0 common configuration (a legacy-only device).
    CommonConfig,
    NoMemory,
    /// The request reaches past the end of the disk.
    OutOfRange,
    /// The buffer is not a whole number of sectors.
    Unaligned,
    /// The medium is read-only.
    ReadOnly,
    /// The device answered with an error status.
    Status(RespStatus),
    /// The flush header would sit on a stack the device cannot reach.
    StackNotDeviceVisible,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Transport(e) => write!(f, "virtio PCI transport: {e}"),
            Error::Device(e) => write!(f, "virtio device: {e}"),
            Error::CommonConfig => f.write_str("no mappable virtio 1.0 common configuration (a legacy-only device?)"),
            Error::NoMemory => f.write_str("no DMA memory for the bounce buffer"),
            Error::OutOfRange => f.write_str("request past the end of the disk"),
            Error::Unaligned => f.write_str("buffer is not a whole number of sectors"),
            Error::ReadOnly => f.write_str("the medium is read-only"),
            Error::Status(s) => write!(f, "device status {s:?}"),
            Error::StackNotDeviceVisible => f.write_str("flush header on a stack the device cannot reach"),
        }
    }
}

/// How the caller waits for a completion: called with a check that turns
/// true once the device has answered; returns when it has (the kernel
/// blocks the world until an interrupt makes the check true).
pub type Wait<'a> = dyn FnMut(&mut dyn FnMut() -> bool) + 'a;

/// A driven virtio-blk device.
pub struct VirtioBlk<H: Hal> {
    // First, so it drops first: dropping the transport resets the device
    // before the memory it used is freed.
    blk: Blk<H>,
    bounce: Dma<H>,
    // Heap memory lies in the kernel's direct map, which `Hal::virt_to_phys`
    // translates: the headers are shared with the device from there.
    req: Box<BlkReq>,
    resp: Box<BlkResp>,
    batch_req: Box<[BlkReq; MAX_IN_FLIGHT]>,
    batch_resp: Box<[BlkResp; MAX_IN_FLIGHT]>,
    common_cfg: Mmio,
    capacity: u64,
    read_only: bool,
    requests: u64,
    direct_requests: u64,
}

impl<H: Hal> VirtioBlk<H> {
    /// Brings up the virtio-blk function at `address` (its BARs decoded,
    /// bus mastering on). Interrupts stay off until
    /// `set_interrupts_enabled(true)`.
    pub fn new<A: ConfigRegionAccess>(access: &A, address: PciAddress) -> Result<Self, Error> {
        let df = DeviceFunction { bus: address.bus(), device: address.device(), function: address.function() };
        let common_cfg = virtio_net::map_common_config::<H, A>(access, address).ok_or(Error::CommonConfig)?;
        let mut root = PciRoot::new(PciConfig::new(access, address.segment()));
        let transport = PciTransport::new::<VirtioHal<H>, _>(&mut root, df).map_err(Error::Transport)?;
        let bounce = Dma::new(BOUNCE_BYTES / PAGE_SIZE).ok_or(Error::NoMemory)?;
        let mut blk = VirtIOBlk::<VirtioHal<H>, _>::new(transport).map_err(Error::Device)?;
        blk.disable_interrupts();
        let capacity = blk.capacity();
        let read_only = blk.readonly();
        Ok(VirtioBlk {
            blk,
            bounce,
            req: Box::new(BlkReq::default()),
            resp: Box::new(BlkResp::default()),
            batch_req: Box::new(core::array::from_fn(|_| BlkReq::default())),
            batch_resp: Box::new(core::array::from_fn(|_| BlkResp::default())),
            common_cfg,
            capacity,
            read_only,
            requests: 0,
            direct_requests: 0,
        })
    }

    /// Capacity in 512-byte sectors.
    pub fn sector_count(&self) -> u64 {
        self.capacity
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Requests completed so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Requests that went straight from or into the caller's buffer.
    pub fn direct_requests(&self) -> u64 {
        self.direct_requests
    }

    /// Routes the request queue's and the configuration interrupts to
    /// MSI-X table entry `entry`; `false` if the device refused it.
    pub fn route_interrupts_to_msix(&mut self, entry: u16) -> bool {
        virtio_net::route_queues_to_msix(&self.common_cfg, &[REQUEST_QUEUE], entry)
    }

    pub fn set_interrupts_enabled(&mut self, enabled: bool) {
        if enabled {
            self.blk.enable_interrupts();
        } else {
            self.blk.disable_interrupts();
        }
    }

    /// Reads the ISR (clears a pending INTx; MSI-X needs no acknowledge).
    pub fn acknowledge_interrupt(&mut self) {
        let _ = self.blk.ack_interrupt();
    }

    fn check(&self, lba: u64, len: usize) -> Result<(), Error> {
        if len == 0 || !len.is_multiple_of(SECTOR_BYTES) {
            return Err(Error::Unaligned);
        }
        match lba.checked_add((len / SECTOR_BYTES) as u64) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(Error::OutOfRange),
        }
    }

    /// Reads `buf.len() / 512` sectors from `lba`: straight into `buf`
    /// when the device can reach it (kernel heap: one request of up to
    /// [`DIRECT_MAX_BYTES`] per chunk), else through the bounce buffer.
    pub fn read(&mut self, lba: u64, buf: &mut [u8], wait: &mut Wait<'_>) -> Result<(), Error> {
        self.check(lba, buf.len())?;
        let direct = device_contiguous::<H>(buf);
        let mut sector = lba;
        for chunk in buf.chunks_mut(if direct { DIRECT_MAX_BYTES } else { BOUNCE_BYTES }) {
            let n = chunk.len();
            if direct {
                read_into(&mut self.blk, &mut self.req, &mut self.resp, sector, chunk, wait)?;
                self.direct_requests += 1;
            } else {
                let bounce = self.bounce.bytes_mut(0, n).ok_or(Error::NoMemory)?;
                read_into(&mut self.blk, &mut self.req, &mut self.resp, sector, bounce, wait)?;
                chunk.copy_from_slice(bounce);
            }
            self.requests += 1;
            sector += (n / SECTOR_BYTES) as u64;
        }
        Ok(())
    }

    /// Writes `buf.len() / 512` sectors at `lba` (durable after `flush`):
    /// straight from `buf` when the device can reach it, else through the
    /// bounce buffer.
    pub fn write(&mut self, lba: u64, buf: &[u8], wait: &mut Wait<'_>) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(lba, buf.len())?;
        let direct = device_contiguous::<H>(buf);
        let mut sector = lba;
        for chunk in buf.chunks(if direct { DIRECT_MAX_BYTES } else { BOUNCE_BYTES }) {
            let n = chunk.len();
            if direct {
                write_from(&mut self.blk, &mut self.req, &mut self.resp, sector, chunk, wait)?;
                self.direct_requests += 1;
            } else {
                let bounce = self.bounce.bytes_mut(0, n).ok_or(Error::NoMemory)?;
                bounce.copy_from_slice(chunk);
                write_from(&mut self.blk, &mut self.req, &mut self.resp, sector, bounce, wait)?;
            }
            self.requests += 1;
            sector += (n / SECTOR_BYTES) as u64;
        }
        Ok(())
    }

    /// Writes each `(lba, buf)`: those the device can reach straight
    /// from the caller's memory (up to [`DIRECT_MAX_BYTES`] each) go out
    /// [`MAX_IN_FLIGHT`] at a time and are waited for together, the
    /// others one by one through the bounce buffer. Every request that was
    /// submitted is completed before this returns, even after an error.
    pub fn write_many(&mut self, writes: &[(u64, &[u8])], wait: &mut Wait<'_>) -> Result<(), Error> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        for &(lba, buf) in writes {
            self.check(lba, buf.len())?;
        }
        let mut rest = writes;
        while !rest.is_empty() {
            let batchable = |(_, b): &&(u64, &[u8])| b.len() <= DIRECT_MAX_BYTES && device_contiguous::<H>(b);
            let n = rest.iter().take(MAX_IN_FLIGHT).take_while(batchable).count();
            if n <= 1 {
                let (lba, buf) = rest[0];
                self.write(lba, buf, wait)?;
                rest = &rest[1..];
                continue;
            }
            let (batch, next) = rest.split_at(n);
            rest = next;
            let mut tokens: [Option<u16>; MAX_IN_FLIGHT] = [None; MAX_IN_FLIGHT];
            let mut result = Ok(());
            for (k, &(lba, buf)) in batch.iter().enumerate() {
                // SAFETY: `buf` is device-visible (checked page by page)
                // and borrowed for this whole call; the header pair `k` is
                // the driver's own and used by this request alone. Every
                // submitted request is completed below before returning.
                match unsafe {
                    self.blk.write_blocks_nb(lba as usize, &mut self.batch_req[k], buf, &mut self.batch_resp[k])
                } {
                    Ok(t) => tokens[k] = Some(t),
                    Err(e) => {
                        result = Err(Error::Device(e));
                        break;
                    }
                }
            }
            while tokens.iter().any(Option::is_some) {
                let blk = &mut self.blk;
                wait(&mut || blk.peek_used().is_some());
                while let Some(t) = self.blk.peek_used() {
                    let Some(k) = tokens.iter().position(|x| *x == Some(t)) else { break };
                    tokens[k] = None;
                    let buf = batch[k].1;
                    // SAFETY: the buffers request `k` was submitted with;
                    // the device is done with them (its token is used).
                    let r = unsafe {
                        self.blk.complete_write_blocks(t, &self.batch_req[k], buf, &mut self.batch_resp[k])
                    };
                    if let Err(e) = r {
                        if result.is_ok() {
                            result = Err(status_error(&self.batch_resp[k], e));
                        }
                    } else {
                        self.requests += 1;
                        self.direct_requests += 1;
                    }
                }
            }
            result?;
        }
        Ok(())
    }

    /// Makes completed writes durable (the device's write cache).
    ///
    /// `virtio-drivers` 0.13 has no non-blocking flush: its blocking one
    /// shares a request header on the caller's stack with the device and
    /// polls until the device answers (flushes are rare: fsync, sync,
    /// unmount). Every kernel stack is device-visible — world stacks lie
    /// in the direct map, the boot stack in the kernel image, both of
    /// which `Hal::virt_to_phys` translates — and a stack it cannot
    /// translate is an error, never a request aimed at address 0.
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.read_only {
            return Ok(());
        }
        let probe = 0u64;
        if H::virt_to_phys(core::ptr::addr_of!(probe) as usize).is_none() {
            return Err(Error::StackNotDeviceVisible);
        }
        self.blk.flush().map_err(Error::Device)
    }
}

/// Whether the device can reach `buf` as one run of physical memory:
/// every page of it translates, each right after the one before (kernel
/// heap in the direct map; not user memory or a kernel stack that is not
/// linearly mapped).
fn device_contiguous<H: Hal>(buf: &[u8]) -> bool {
    let start = buf.as_ptr() as usize;
    let Some(first) = H::virt_to_phys(start) else { return false };
    let mut off = PAGE_SIZE - start % PAGE_SIZE;
    while off < buf.len() {
        if H::virt_to_phys(start + off) != Some(first + off as u64) {
            return false;
        }
        off += PAGE_SIZE;
    }
    true
}

type Blk<H> = VirtIOBlk<VirtioHal<H>, PciTransport>;

/// One read request into device-visible memory `buf`, waited for.
fn read_into<H: Hal>(
    blk: &mut Blk<H>,
    req: &mut BlkReq,
    resp: &mut BlkResp,
    sector: u64,
    buf: &mut [u8],
    wait: &mut Wait<'_>,
) -> Result<(), Error> {
    // SAFETY: `req`, `resp` and `buf` are device-visible (the driver's own
    // memory, or a caller's buffer `device_contiguous` checked page by
    // page) and stay borrowed, untouched, until the request is completed
    // below with the same buffers: `wait` returns only once the device
    // has answered.
    let token = unsafe { blk.read_blocks_nb(sector as usize, req, buf, resp) }.map_err(Error::Device)?;
    wait(&mut || blk.peek_used() == Some(token));
    // SAFETY: the same buffers as at submission, and the device is done
    // with them (its token is on the used ring).
    unsafe { blk.complete_read_blocks(token, req, buf, resp) }.map_err(|e| status_error(resp, e))
}

/// One write request from device-visible memory `buf`, waited for.
fn write_from<H: Hal>(
    blk: &mut Blk<H>,
    req: &mut BlkReq,
    resp: &mut BlkResp,
    sector: u64,
    buf: &[u8],
    wait: &mut Wait<'_>,
) -> Result<(), Error> {
    // SAFETY: as in `read_into`: device-visible memory, untouched until
    // the request is completed.
    let token = unsafe { blk.write_blocks_nb(sector as usize, req, buf, resp) }.map_err(Error::Device)?;
    wait(&mut || blk.peek_used() == Some(token));
    // SAFETY: the same buffers as at submission; the device is done.
    unsafe { blk.complete_write_blocks(token, req, buf, resp) }.map_err(|e| status_error(resp, e))
}

fn status_error(resp: &BlkResp, e: virtio_drivers::Error) -> Error {
    match resp.status() {
        RespStatus::OK => Error::Device(e),
        s => Error::Status(s),
    }
}
