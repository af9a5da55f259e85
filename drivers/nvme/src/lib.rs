//! NVMe (NVM Express 1.4) block driver: the disk real servers have, and
//! QEMU's `-device nvme`.
//!
//! What it does: resets and enables the controller (admin queues,
//! 4 KiB pages, 64/16-byte queue entries), identifies the controller and
//! its first active namespace, creates one I/O queue pair whose
//! completions interrupt on MSI-X/MSI entry 0, and reads, writes and
//! flushes through a DMA bounce buffer (so any caller buffer works, and
//! the device never sees memory the driver does not own) described by a
//! PRP list ([`prp`]).
//!
//! Waiting: a command is submitted, then the caller's `wait` function is
//! called with a readiness check (the kernel blocks the world until the
//! completion interrupt; during boot it polls) and may give up (a
//! timeout): the controller is then disabled — which stops its DMA — and
//! the driver fails every later request with [`Error::Failed`].
//!
//! Controllers the driver cannot use (no NVM command set, page size
//! above 4 KiB, no namespace, odd block size, fatal status) are reported
//! as errors, never panics; write-protected namespaces are driven
//! read-only.
//!
//! The queue and PRP logic ([`queue`], [`prp`]) is host-tested on its
//! own; `tests` below drives the whole driver against a simulated
//! controller.
#![cfg_attr(not(test), no_std)]

pub mod prp;
pub mod queue;

use hal::{Dma, Hal, PAGE_SIZE, Registers};
use queue::{CQ_ENTRY_BYTES, Command, Completion, CompletionRing, SQ_ENTRY_BYTES, Status, SubmissionRing, cns};

/// PCI class 01 (mass storage), subclass 08 (NVM), programming interface 02 (NVMe).
pub fn is_nvme(class: u8, subclass: u8, prog_if: u8) -> bool {
    (class, subclass, prog_if) == (0x01, 0x08, 0x02)
}

/// The bounce buffer: the longest single transfer.
pub const BOUNCE_BYTES: usize = 256 * 1024;
const ADMIN_ENTRIES: u16 = 32;
const IO_ENTRIES: u16 = 64;
const IO_QUEUE: u16 = 1;

/// Controller registers (§3.1).
mod reg {
    pub const CAP: usize = 0x00;
    pub const VS: usize = 0x08;
    pub const INTMS: usize = 0x0c;
    pub const CC: usize = 0x14;
    pub const CSTS: usize = 0x1c;
    pub const AQA: usize = 0x24;
    pub const ASQ: usize = 0x28;
    pub const ACQ: usize = 0x30;
    pub const DOORBELLS: usize = 0x1000;

    pub const CC_EN: u32 = 1;
    /// IOSQES = 6 (64 bytes), IOCQES = 4 (16 bytes), MPS = 0 (4 KiB), CSS = NVM.
    pub const CC_QUEUE_ENTRY_SIZES: u32 = 6 << 16 | 4 << 20;
    pub const CC_SHN_NORMAL: u32 = 1 << 14;
    pub const CSTS_RDY: u32 = 1;
    pub const CSTS_CFS: u32 = 1 << 1;
    pub const CSTS_SHST_MASK: u32 = 3 << 2;
    pub const CSTS_SHST_DONE: u32 = 2 << 2;
}

/// CAP decoded (§3.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Largest queue the controller takes, in entries.
    pub max_queue_entries: u32,
    /// Worst-case time for CSTS.RDY to follow CC.EN.
    pub timeout_ms: u32,
    /// Bytes between doorbell registers.
    pub doorbell_stride: usize,
    pub nvm_command_set: bool,
    /// Smallest memory page size, bytes.
    pub min_page: u64,
}

impl Capabilities {
    pub fn decode(cap: u64) -> Self {
        Capabilities {
            max_queue_entries: (cap & 0xffff) as u32 + 1,
            timeout_ms: ((cap >> 24) & 0xff) as u32 * 500,
            doorbell_stride: 4 << ((cap >> 32) & 0xf),
            nvm_command_set: cap & (1 << 37) != 0,
            min_page: 1 << (12 + ((cap >> 48) & 0xf)),
        }
    }
}

/// Why bring-up or a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The controller is one this driver cannot use.
    Unsupported(&'static str),
    /// The controller reported a fatal status (CSTS.CFS).
    ControllerFatal,
    /// The controller did not answer in time (it was then disabled).
    Timeout(&'static str),
    /// A command completed with an error status.
    Command { what: &'static str, status: Status },
    /// The controller broke the queue protocol (it was then disabled).
    Protocol(&'static str),
    /// No active namespace.
    NoNamespace,
    NoMemory,
    OutOfRange,
    Unaligned,
    ReadOnly,
    /// An earlier timeout or protocol error disabled the controller.
    Failed,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Unsupported(why) => write!(f, "unsupported controller: {why}"),
            Error::ControllerFatal => f.write_str("controller fatal status (CSTS.CFS)"),
            Error::Timeout(what) => write!(f, "timed out waiting for {what}; controller disabled"),
            Error::Command { what, status } => write!(f, "{what}: {status}"),
            Error::Protocol(what) => write!(f, "controller broke the queue protocol ({what}); disabled"),
            Error::NoNamespace => f.write_str("no active namespace"),
            Error::NoMemory => f.write_str("no DMA memory for queues and buffers"),
            Error::OutOfRange => f.write_str("request past the end of the namespace"),
            Error::Unaligned => f.write_str("buffer is not a whole number of blocks"),
            Error::ReadOnly => f.write_str("the namespace is write-protected"),
            Error::Failed => f.write_str("controller disabled after an earlier error"),
        }
    }
}

/// How the caller waits: called with a check that turns true once the
/// controller has answered; returns `true` when it has, `false` if it
/// gave up (its timeout).
pub type Wait<'a> = dyn FnMut(&mut dyn FnMut() -> bool) -> bool + 'a;

struct QueuePair<H: Hal> {
    id: u16,
    sq: Dma<H>,
    cq: Dma<H>,
    sq_ring: SubmissionRing,
    cq_ring: CompletionRing,
}

impl<H: Hal> QueuePair<H> {
    fn new(id: u16, entries: u16) -> Result<Self, Error> {
        Ok(QueuePair {
            id,
            sq: Dma::for_bytes(entries as usize * SQ_ENTRY_BYTES).ok_or(Error::NoMemory)?,
            cq: Dma::for_bytes(entries as usize * CQ_ENTRY_BYTES).ok_or(Error::NoMemory)?,
            sq_ring: SubmissionRing::new(entries),
            cq_ring: CompletionRing::new(entries),
        })
    }

    /// The completion at the head, if the controller has posted it.
    fn peek(&self) -> Option<Completion> {
        let at = self.cq_ring.head() as usize * CQ_ENTRY_BYTES;
        let dw3 = self.cq.read_u32(at + 12);
        if !self.cq_ring.is_new(dw3 & (1 << 16) != 0) {
            return None;
        }
        let dw = [self.cq.read_u32(at), self.cq.read_u32(at + 4), self.cq.read_u32(at + 8), dw3];
        Some(Completion::from_dwords(dw))
    }
}

/// What identify said about the controller and its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub model: [u8; 40],
    pub serial: [u8; 20],
    pub firmware: [u8; 8],
    /// Version register (major.minor).
    pub version: (u16, u8),
    pub nsid: u32,
    pub block_size: u32,
    pub blocks: u64,
    pub read_only: bool,
    /// A volatile write cache: flush matters.
    pub volatile_cache: bool,
    /// Longest transfer the driver uses (bounce buffer, MDTS).
    pub max_transfer: usize,
}

fn trimmed(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("?").trim_matches(|c: char| c == ' ' || c == '\0')
}

impl Identity {
    pub fn model(&self) -> &str {
        trimmed(&self.model)
    }
    pub fn serial(&self) -> &str {
        trimmed(&self.serial)
    }
    pub fn firmware(&self) -> &str {
        trimmed(&self.firmware)
    }
}

/// A driven NVMe controller and its namespace.
pub struct Nvme<H: Hal, R: Registers> {
    regs: R,
    caps: Capabilities,
    admin: QueuePair<H>,
    io: Option<QueuePair<H>>,
    bounce: Dma<H>,
    prp_list: Dma<H>,
    identity: Identity,
    next_cid: u16,
    failed: bool,
    requests: u64,
}

fn read64<R: Registers>(r: &R, off: usize) -> u64 {
    r.read32(off) as u64 | (r.read32(off + 4) as u64) << 32
}

fn write64<R: Registers>(r: &R, off: usize, v: u64) {
    r.write32(off, v as u32);
    r.write32(off + 4, (v >> 32) as u32);
}

impl<H: Hal, R: Registers> Nvme<H, R> {
    /// Resets and enables the controller behind `regs` (BAR0, bus
    /// mastering on), identifies it and creates the I/O queue pair, its
    /// completions on interrupt entry 0. Until the caller routes that
    /// entry, `wait` must poll.
    pub fn new(regs: R, wait: &mut Wait<'_>) -> Result<Self, Error> {
        let cap = read64(&regs, reg::CAP);
        if cap == u64::MAX {
            return Err(Error::Unsupported("registers read all ones (BAR not decoded?)"));
        }
        let caps = Capabilities::decode(cap);
        if !caps.nvm_command_set {
            return Err(Error::Unsupported("no NVM command set"));
        }
        if caps.min_page > PAGE_SIZE as u64 {
            return Err(Error::Unsupported("minimum page size above 4 KiB"));
        }
        let vs = regs.read32(reg::VS);
        let admin = QueuePair::new(0, ADMIN_ENTRIES.min(caps.max_queue_entries.min(4096) as u16))?;
        let mut nvme = Nvme {
            regs,
            caps,
            admin,
            io: None,
            bounce: Dma::new(BOUNCE_BYTES / PAGE_SIZE).ok_or(Error::NoMemory)?,
            prp_list: Dma::new(1).ok_or(Error::NoMemory)?,
            identity: Identity {
                model: [b' '; 40],
                serial: [b' '; 20],
                firmware: [b' '; 8],
                version: ((vs >> 16) as u16, (vs >> 8) as u8),
                nsid: 0,
                block_size: 512,
                blocks: 0,
                read_only: false,
                volatile_cache: false,
                max_transfer: BOUNCE_BYTES,
            },
            next_cid: 0,
            failed: false,
            requests: 0,
        };
        nvme.reset(wait)?;
        nvme.identify(wait)?;
        nvme.create_io_queues(wait)?;
        Ok(nvme)
    }

    fn wait_status(&mut self, wait: &mut Wait<'_>, what: &'static str, mask: u32, want: u32) -> Result<(), Error> {
        let regs = &self.regs;
        let mut fatal = false;
        let ok = wait(&mut || {
            let csts = regs.read32(reg::CSTS);
            fatal = csts != u32::MAX && csts & reg::CSTS_CFS != 0;
            fatal || csts & mask == want
        });
        if fatal {
            return Err(Error::ControllerFatal);
        }
        if !ok {
            return Err(Error::Timeout(what));
        }
        Ok(())
    }

    fn reset(&mut self, wait: &mut Wait<'_>) -> Result<(), Error> {
        let cc = self.regs.read32(reg::CC);
        if cc & reg::CC_EN != 0 {
            self.regs.write32(reg::CC, cc & !reg::CC_EN);
        }
        // CFS may be set before a reset; only RDY matters here.
        let regs = &self.regs;
        if !wait(&mut || regs.read32(reg::CSTS) & reg::CSTS_RDY == 0) {
            return Err(Error::Timeout("the controller to stop (CSTS.RDY = 0)"));
        }
        // Pin-based interrupts stay masked: completions come by MSI-X/MSI or polling.
        self.regs.write32(reg::INTMS, !0);
        let entries = self.admin.sq_ring.entries() as u32;
        self.regs.write32(reg::AQA, (entries - 1) << 16 | (entries - 1));
        write64(&self.regs, reg::ASQ, self.admin.sq.phys());
        write64(&self.regs, reg::ACQ, self.admin.cq.phys());
        self.regs.write32(reg::CC, reg::CC_QUEUE_ENTRY_SIZES | reg::CC_EN);
        self.wait_status(wait, "the controller to become ready (CSTS.RDY = 1)", reg::CSTS_RDY, reg::CSTS_RDY)
    }

    fn doorbell(&self, qid: u16, completion: bool) -> usize {
        reg::DOORBELLS + (2 * qid as usize + completion as usize) * self.caps.doorbell_stride
    }

    /// Submits `cmd` on the admin queue (`io` false) or the I/O queue and
    /// waits for its completion.
    fn execute(&mut self, io: bool, cmd: Command, what: &'static str, wait: &mut Wait<'_>) -> Result<Completion, Error> {
        if self.failed {
            return Err(Error::Failed);
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let cmd = cmd.with_cid(cid);
        let q = if io { self.io.as_mut().ok_or(Error::Failed)? } else { &mut self.admin };
        let Some(slot) = q.sq_ring.push() else {
            return Err(self.fail(Error::Protocol("submission queue full")));
        };
        for (i, dw) in cmd.dw.iter().enumerate() {
            q.sq.write_u32(slot as usize * SQ_ENTRY_BYTES + i * 4, *dw);
        }
        let (qid, tail) = (q.id, q.sq_ring.tail());
        let sq_bell = self.doorbell(qid, false);
        self.regs.write32(sq_bell, tail as u32);
        let q = if io { self.io.as_ref().ok_or(Error::Failed)? } else { &self.admin };
        if !wait(&mut || q.peek().is_some()) {
            return Err(self.fail(Error::Timeout(what)));
        }
        let q = if io { self.io.as_mut().ok_or(Error::Failed)? } else { &mut self.admin };
        let Some(done) = q.peek() else { return Err(self.fail(Error::Protocol("completion vanished"))) };
        let head = q.cq_ring.advance();
        q.sq_ring.set_head(done.sq_head);
        let cq_bell = self.doorbell(qid, true);
        self.regs.write32(cq_bell, head as u32);
        if done.cid != cid {
            return Err(self.fail(Error::Protocol("completion for another command")));
        }
        if !done.status.is_success() {
            return Err(Error::Command { what, status: done.status });
        }
        Ok(done)
    }

    /// Disables the controller (stopping its DMA into our buffers) and
    /// fails all later requests.
    fn fail(&mut self, e: Error) -> Error {
        self.failed = true;
        let cc = self.regs.read32(reg::CC);
        self.regs.write32(reg::CC, cc & !reg::CC_EN);
        e
    }

    fn identify_page(&mut self, cns: u32, nsid: u32, what: &'static str, wait: &mut Wait<'_>) -> Result<(), Error> {
        let page = self.bounce.phys();
        self.execute(false, Command::identify(cns, nsid, page), what, wait).map(|_| ())
    }

    fn identify(&mut self, wait: &mut Wait<'_>) -> Result<(), Error> {
        self.identify_page(cns::CONTROLLER, 0, "identify controller", wait)?;
        let b = self.bounce.bytes(0, PAGE_SIZE).ok_or(Error::NoMemory)?;
        let id = &mut self.identity;
        id.serial.copy_from_slice(&b[4..24]);
        id.model.copy_from_slice(&b[24..64]);
        id.firmware.copy_from_slice(&b[64..72]);
        let mdts = b[77];
        let namespaces = u32::from_le_bytes([b[516], b[517], b[518], b[519]]);
        id.volatile_cache = b[525] & 1 != 0;
        if mdts != 0 && mdts < 20 {
            let limit = (self.caps.min_page as usize) << mdts;
            id.max_transfer = id.max_transfer.min(limit);
        }
        if namespaces == 0 {
            return Err(Error::NoNamespace);
        }
        // The first active namespace (NVMe 1.1+); older controllers: 1.
        let nsid = match self.identify_page(cns::ACTIVE_NAMESPACES, 0, "identify active namespaces", wait) {
            Ok(()) => {
                let b = self.bounce.bytes(0, 4).ok_or(Error::NoMemory)?;
                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            Err(Error::Command { .. }) => 1,
            Err(e) => return Err(e),
        };
        if nsid == 0 {
            return Err(Error::NoNamespace);
        }
        self.identify_page(cns::NAMESPACE, nsid, "identify namespace", wait)?;
        let b = self.bounce.bytes(0, PAGE_SIZE).ok_or(Error::NoMemory)?;
        let size = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let format = (b[26] & 0xf) as usize;
        let lbaf = 128 + 4 * format;
        let metadata = u16::from_le_bytes([b[lbaf], b[lbaf + 1]]);
        let lbads = b[lbaf + 2];
        let write_protected = b[99] & 1 != 0;
        if size == 0 {
            return Err(Error::NoNamespace);
        }
        if !(9..=12).contains(&lbads) {
            return Err(Error::Unsupported("logical block size outside 512..4096 bytes"));
        }
        if metadata != 0 && b[26] & 0x10 != 0 {
            return Err(Error::Unsupported("metadata interleaved with the data (extended LBAs)"));
        }
        let id = &mut self.identity;
        id.nsid = nsid;
        id.blocks = size;
        id.block_size = 1 << lbads;
        id.read_only = write_protected;
        id.max_transfer = id.max_transfer.min(prp::max_transfer(PAGE_SIZE));
        Ok(())
    }

    fn create_io_queues(&mut self, wait: &mut Wait<'_>) -> Result<(), Error> {
        // Older controllers may not know the feature; the queues below decide.
        let _ = self.execute(false, Command::set_number_of_queues(1), "set number of queues", wait);
        let entries = IO_ENTRIES.min(self.caps.max_queue_entries.min(4096) as u16);
        let io = QueuePair::new(IO_QUEUE, entries)?;
        let (sq, cq) = (io.sq.phys(), io.cq.phys());
        self.execute(false, Command::create_io_cq(IO_QUEUE, entries, cq, 0, true), "create I/O completion queue", wait)?;
        self.execute(false, Command::create_io_sq(IO_QUEUE, entries, sq, IO_QUEUE), "create I/O submission queue", wait)?;
        self.io = Some(io);
        Ok(())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn block_size(&self) -> u32 {
        self.identity.block_size
    }

    pub fn block_count(&self) -> u64 {
        self.identity.blocks
    }

    pub fn read_only(&self) -> bool {
        self.identity.read_only
    }

    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    /// Requests completed so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    fn check(&self, lba: u64, len: usize) -> Result<(), Error> {
        let bs = self.identity.block_size as usize;
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(Error::Unaligned);
        }
        match lba.checked_add((len / bs) as u64) {
            Some(end) if end <= self.identity.blocks => Ok(()),
            _ => Err(Error::OutOfRange),
        }
    }

    fn transfer(&mut self, write: bool, lba: u64, len: usize, wait: &mut Wait<'_>) -> Result<(), Error> {
        let list_phys = self.prp_list.phys();
        let mut entries = [0u64; PAGE_SIZE / 8];
        let prps = prp::build(self.bounce.phys(), len, PAGE_SIZE, &mut entries, list_phys)
            .map_err(|_| Error::Protocol("transfer does not fit one PRP list"))?;
        for (i, e) in entries[..prps.list_entries].iter().enumerate() {
            self.prp_list.write_u64(i * 8, *e);
        }
        let blocks = (len / self.identity.block_size as usize) as u32;
        let cmd = Command::read_write(write, self.identity.nsid, lba, blocks).with_prps(prps.prp1, prps.prp2);
        self.execute(true, cmd, if write { "write" } else { "read" }, wait)?;
        self.requests += 1;
        Ok(())
    }

    /// Reads `buf.len() / block_size` blocks from `lba`.
    pub fn read(&mut self, lba: u64, buf: &mut [u8], wait: &mut Wait<'_>) -> Result<(), Error> {
        self.check(lba, buf.len())?;
        let bs = self.identity.block_size as u64;
        let mut at = lba;
        for chunk in buf.chunks_mut(self.identity.max_transfer) {
            self.transfer(false, at, chunk.len(), wait)?;
            chunk.copy_from_slice(self.bounce.bytes(0, chunk.len()).ok_or(Error::NoMemory)?);
            at += chunk.len() as u64 / bs;
        }
        Ok(())
    }

    /// Writes `buf.len() / block_size` blocks at `lba` (durable after `flush`).
    pub fn write(&mut self, lba: u64, buf: &[u8], wait: &mut Wait<'_>) -> Result<(), Error> {
        if self.identity.read_only {
            return Err(Error::ReadOnly);
        }
        self.check(lba, buf.len())?;
        let bs = self.identity.block_size as u64;
        let mut at = lba;
        for chunk in buf.chunks(self.identity.max_transfer) {
            self.bounce.bytes_mut(0, chunk.len()).ok_or(Error::NoMemory)?.copy_from_slice(chunk);
            self.transfer(true, at, chunk.len(), wait)?;
            at += chunk.len() as u64 / bs;
        }
        Ok(())
    }

    /// Makes completed writes durable: a Flush command when the
    /// controller has a volatile write cache (without one, completed
    /// writes already are).
    pub fn flush(&mut self, wait: &mut Wait<'_>) -> Result<(), Error> {
        if self.identity.read_only || !self.identity.volatile_cache {
            return if self.failed { Err(Error::Failed) } else { Ok(()) };
        }
        self.execute(true, Command::flush(self.identity.nsid), "flush", wait)?;
        self.requests += 1;
        Ok(())
    }

    /// Normal shutdown (CC.SHN): the controller writes back its caches
    /// and reports completion in CSTS.SHST (power-off, reboot).
    pub fn shutdown(&mut self, wait: &mut Wait<'_>) -> Result<(), Error> {
        if self.failed {
            return Err(Error::Failed);
        }
        let cc = self.regs.read32(reg::CC);
        self.regs.write32(reg::CC, cc | reg::CC_SHN_NORMAL);
        self.wait_status(wait, "shutdown (CSTS.SHST)", reg::CSTS_SHST_MASK, reg::CSTS_SHST_DONE)
    }
}

impl<H: Hal, R: Registers> Drop for Nvme<H, R> {
    fn drop(&mut self) {
        // Stop the controller before the queues and buffers are freed.
        let cc = self.regs.read32(reg::CC);
        self.regs.write32(reg::CC, cc & !reg::CC_EN);
    }
}

#[cfg(test)]
mod sim;
