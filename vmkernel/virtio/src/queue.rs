//! Split virtqueues (virtio 1.x §2.7), the device side.
//!
//! The driver owns the descriptor table and the available ring, the device
//! the used ring; all three live in guest RAM and are read afresh on every
//! access, so nothing the guest changes later can invalidate what was
//! checked. [`Queue::pop`] walks one descriptor chain and rejects it whole
//! if it loops, is longer than the queue, names memory outside guest RAM,
//! uses indirect descriptors (not offered) or puts a device-readable buffer
//! after a device-writable one.
//!
//! Notification suppression (§2.7.7, §2.7.10): without
//! VIRTIO_F_EVENT_IDX the device honours the driver's
//! VIRTQ_AVAIL_F_NO_INTERRUPT flag; with it, the driver's `used_event`
//! decides when an interrupt is due ([`Queue::interrupt_due`]) and the
//! device publishes `avail_event` as it takes chains, so the driver
//! notifies only when it adds a chain after the device caught up.

use alloc::vec::Vec;
use core::fmt;

use crate::GuestMemory;

/// The largest queue any device here offers.
pub const MAX_QUEUE_SIZE: u16 = 256;
/// Bytes one chain may describe in total (a bound on what one request can
/// make the host copy).
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Whether an index moving from `old` to `new` passed `event` (the
/// specification's `vring_need_event`).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Why a queue or a chain was refused: the guest broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// The size the driver wrote is zero, above the maximum, or not a power of two.
    BadSize(u16),
    /// A ring or table does not lie in guest RAM (or is misaligned).
    RingOutsideRam { addr: u64 },
    /// The available index moved by more than the queue size.
    AvailIndexJump { last: u16, avail: u16 },
    /// A chain head or `next` index beyond the table.
    IndexOutOfRange(u16),
    /// A chain visited one descriptor twice.
    DescriptorLoop { head: u16 },
    /// A chain longer than the queue, or describing more than [`MAX_CHAIN_BYTES`].
    ChainTooLong { head: u16 },
    /// A buffer outside guest RAM.
    BufferOutsideRam { addr: u64, len: u32 },
    /// An indirect descriptor (VIRTIO_F_INDIRECT_DESC is not offered).
    IndirectNotNegotiated,
    /// A device-readable buffer after a device-writable one.
    ReadableAfterWritable { head: u16 },
    /// Guest memory could not be read or written at `addr`.
    MemoryFault { addr: u64 },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QueueError::BadSize(n) => write!(f, "queue size {n} is not a power of two in 1..={MAX_QUEUE_SIZE}"),
            QueueError::RingOutsideRam { addr } => write!(f, "queue ring at {addr:#x} is not in guest RAM or misaligned"),
            QueueError::AvailIndexJump { last, avail } => write!(f, "available index jumped from {last} to {avail}"),
            QueueError::IndexOutOfRange(i) => write!(f, "descriptor index {i} beyond the queue"),
            QueueError::DescriptorLoop { head } => write!(f, "descriptor chain from {head} loops"),
            QueueError::ChainTooLong { head } => write!(f, "descriptor chain from {head} is too long"),
            QueueError::BufferOutsideRam { addr, len } => write!(f, "buffer {addr:#x}+{len:#x} is outside guest RAM"),
            QueueError::IndirectNotNegotiated => write!(f, "indirect descriptor used but not negotiated"),
            QueueError::ReadableAfterWritable { head } => write!(f, "chain from {head} has a readable buffer after a writable one"),
            QueueError::MemoryFault { addr } => write!(f, "guest memory fault at {addr:#x}"),
        }
    }
}

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub addr: u64,
    pub len: u32,
    /// Device-writable (the driver reads what the device puts here).
    pub writable: bool,
}

/// A checked descriptor chain: readable buffers first, then writable ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub buffers: Vec<Buffer>,
}

impl Chain {
    pub fn readable(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| !b.writable)
    }
    pub fn writable(&self) -> impl Iterator<Item = &Buffer> {
        self.buffers.iter().filter(|b| b.writable)
    }
    pub fn readable_len(&self) -> u64 {
        self.readable().map(|b| b.len as u64).sum()
    }
    pub fn writable_len(&self) -> u64 {
        self.writable().map(|b| b.len as u64).sum()
    }

    /// Copies the readable bytes from offset `skip` into `out`; returns the count.
    pub fn read_at(&self, mem: &dyn GuestMemory, mut skip: u64, out: &mut [u8]) -> Result<usize, QueueError> {
        let mut done = 0;
        for b in self.readable() {
            if done == out.len() {
                break;
            }
            if skip >= b.len as u64 {
                skip -= b.len as u64;
                continue;
            }
            let n = ((b.len as u64 - skip) as usize).min(out.len() - done);
            let addr = b.addr + skip;
            if !mem.read(addr, &mut out[done..done + n]) {
                return Err(QueueError::MemoryFault { addr });
            }
            done += n;
            skip = 0;
        }
        Ok(done)
    }

    /// Copies `data` into the writable buffers from offset `skip`; returns the count.
    pub fn write_at(&self, mem: &dyn GuestMemory, mut skip: u64, data: &[u8]) -> Result<usize, QueueError> {
        let mut done = 0;
        for b in self.writable() {
            if done == data.len() {
                break;
            }
            if skip >= b.len as u64 {
                skip -= b.len as u64;
                continue;
            }
            let n = ((b.len as u64 - skip) as usize).min(data.len() - done);
            let addr = b.addr + skip;
            if !mem.write(addr, &data[done..done + n]) {
                return Err(QueueError::MemoryFault { addr });
            }
            done += n;
            skip = 0;
        }
        Ok(done)
    }
}

/// One split virtqueue's transport registers and device-side indices.
#[derive(Clone, Debug)]
pub struct Queue {
    pub max_size: u16,
    /// QueueNum as written by the driver (checked when the queue is made ready).
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    /// VIRTIO_F_EVENT_IDX was negotiated.
    pub event_idx: bool,
    next_avail: u16,
    next_used: u16,
    /// The used index when the driver was last interrupted (or chose not to be).
    signalled_used: u16,
}

impl Queue {
    pub fn new(max_size: u16) -> Self {
        Queue { max_size, size: max_size, ready: false, desc: 0, avail: 0, used: 0, event_idx: false, next_avail: 0, next_used: 0, signalled_used: 0 }
    }

    /// Back to the state after a device reset.
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    /// Checks the queue's layout before it is used: a power-of-two size
    /// within the maximum, and all three areas aligned and in guest RAM.
    pub fn validate(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        let n = self.size;
        if n == 0 || n > self.max_size || !n.is_power_of_two() {
            return Err(QueueError::BadSize(n));
        }
        let n = n as u64;
        for (addr, len, align) in [(self.desc, 16 * n, 16), (self.avail, 6 + 2 * n, 2), (self.used, 6 + 8 * n, 4)] {
            if addr % align != 0 || !mem.contains(addr, len) {
                return Err(QueueError::RingOutsideRam { addr });
            }
        }
        Ok(())
    }

    fn read_u16(mem: &dyn GuestMemory, addr: u64) -> Result<u16, QueueError> {
        let mut b = [0; 2];
        if mem.read(addr, &mut b) { Ok(u16::from_le_bytes(b)) } else { Err(QueueError::MemoryFault { addr }) }
    }

    /// Whether the driver has published chains the device has not taken.
    pub fn has_available(&self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        Ok(Self::read_u16(mem, self.avail + 2)? != self.next_avail)
    }

    fn write_u16(mem: &dyn GuestMemory, addr: u64, v: u16) -> Result<(), QueueError> {
        if mem.write(addr, &v.to_le_bytes()) { Ok(()) } else { Err(QueueError::MemoryFault { addr }) }
    }

    /// With EVENT_IDX: tells the driver to notify when it publishes the
    /// chain after those the device has taken (`avail_event`).
    fn publish_avail_event(&self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        if self.event_idx {
            Self::write_u16(mem, self.used + 4 + 8 * self.size as u64, self.next_avail)?;
        }
        Ok(())
    }

    /// Takes the next available chain, checked; `None` if there is none.
    pub fn pop(&mut self, mem: &dyn GuestMemory) -> Result<Option<Chain>, QueueError> {
        let mut avail = Self::read_u16(mem, self.avail + 2)?;
        if avail == self.next_avail {
            if !self.event_idx {
                return Ok(None);
            }
            // Caught up: ask for a notification at the next chain, then
            // look again — a chain published before the driver could see
            // `avail_event` would otherwise wait for one that never comes
            // (the fence orders this store before the load, as the
            // driver's barrier orders its own).
            self.publish_avail_event(mem)?;
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            avail = Self::read_u16(mem, self.avail + 2)?;
            if avail == self.next_avail {
                return Ok(None);
            }
        }
        if avail.wrapping_sub(self.next_avail) > self.size {
            return Err(QueueError::AvailIndexJump { last: self.next_avail, avail });
        }
        let slot = (self.next_avail % self.size) as u64;
        let head = Self::read_u16(mem, self.avail + 4 + 2 * slot)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        self.publish_avail_event(mem)?;
        self.walk(mem, head).map(Some)
    }

    /// Whether the driver wants an interrupt for the used chains returned
    /// since the last call: its `used_event` with EVENT_IDX, else the
    /// absence of VIRTQ_AVAIL_F_NO_INTERRUPT. Either way those chains count
    /// as signalled (a driver that suppressed them re-checks the used ring
    /// itself when it turns interrupts back on).
    pub fn interrupt_due(&mut self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        let (old, new) = (self.signalled_used, self.next_used);
        if old == new {
            return Ok(false);
        }
        self.signalled_used = new;
        // The used index is stored before the driver's word is loaded.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        if self.event_idx {
            let used_event = Self::read_u16(mem, self.avail + 4 + 2 * self.size as u64)?;
            Ok(need_event(used_event, new, old))
        } else {
            Ok(Self::read_u16(mem, self.avail)? & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    fn walk(&self, mem: &dyn GuestMemory, head: u16) -> Result<Chain, QueueError> {
        let mut seen = [0u64; MAX_QUEUE_SIZE as usize / 64];
        let mut chain = Chain { head, buffers: Vec::new() };
        let mut total = 0u64;
        let mut i = head;
        loop {
            if i >= self.size {
                return Err(QueueError::IndexOutOfRange(i));
            }
            let (w, bit) = (i as usize / 64, 1u64 << (i % 64));
            if seen[w] & bit != 0 {
                return Err(QueueError::DescriptorLoop { head });
            }
            seen[w] |= bit;
            if chain.buffers.len() >= self.size as usize {
                return Err(QueueError::ChainTooLong { head });
            }
            let at = self.desc + 16 * i as u64;
            let mut d = [0u8; 16];
            if !mem.read(at, &mut d) {
                return Err(QueueError::MemoryFault { addr: at });
            }
            let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            let len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            if flags & DESC_F_INDIRECT != 0 {
                return Err(QueueError::IndirectNotNegotiated);
            }
            if !mem.contains(addr, len as u64) {
                return Err(QueueError::BufferOutsideRam { addr, len });
            }
            total += len as u64;
            if total > MAX_CHAIN_BYTES {
                return Err(QueueError::ChainTooLong { head });
            }
            let writable = flags & DESC_F_WRITE != 0;
            if !writable && chain.buffers.last().is_some_and(|b| b.writable) {
                return Err(QueueError::ReadableAfterWritable { head });
            }
            chain.buffers.push(Buffer { addr, len, writable });
            if flags & DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            i = next;
        }
    }

    /// Returns chain `head` to the driver with `written` bytes written.
    pub fn push_used(&mut self, mem: &dyn GuestMemory, head: u16, written: u32) -> Result<(), QueueError> {
        let slot = (self.next_used % self.size) as u64;
        let at = self.used + 4 + 8 * slot;
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&(head as u32).to_le_bytes());
        e[4..].copy_from_slice(&written.to_le_bytes());
        if !mem.write(at, &e) {
            return Err(QueueError::MemoryFault { addr: at });
        }
        self.next_used = self.next_used.wrapping_add(1);
        // The element is written before the index that publishes it (the
        // kernel's guest-memory writes are plain stores in program order on
        // x86, which the driver's load order matches).
        let at = self.used + 2;
        if !mem.write(at, &self.next_used.to_le_bytes()) {
            return Err(QueueError::MemoryFault { addr: at });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testmem::{DriverQueue, F_NEXT, F_WRITE, TestMem};

    fn setup(size: u16) -> (TestMem, DriverQueue, Queue) {
        let mem = TestMem::new(1 << 20);
        let dq = DriverQueue::new(size, 0x1000);
        let mut q = Queue::new(MAX_QUEUE_SIZE);
        q.size = size;
        q.desc = dq.desc;
        q.avail = dq.avail;
        q.used = dq.used;
        q.validate(&mem).unwrap();
        (mem, dq, q)
    }

    #[test]
    fn pops_a_chain_and_returns_it_used() {
        let (mem, mut dq, mut q) = setup(8);
        dq.add_chain(&mem, 0, &[(0x8000, 16, false), (0x9000, 512, true), (0xa000, 1, true)]);
        let c = q.pop(&mem).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
        assert_eq!(q.pop(&mem).unwrap(), None);
        mem.put(0x8000, b"0123456789abcdef");
        let mut b = [0; 6];
        assert_eq!(c.read_at(&mem, 10, &mut b).unwrap(), 6);
        assert_eq!(&b, b"abcdef");
        assert_eq!(c.write_at(&mem, 511, b"xyz").unwrap(), 2, "only 2 writable bytes from offset 511");
        assert_eq!(mem.get(0x9000 + 511, 1), b"x");
        assert_eq!(mem.get(0xa000, 1), b"y");
        q.push_used(&mem, c.head, 513).unwrap();
        assert_eq!(dq.used_idx(&mem), 1);
        assert_eq!(dq.used_elem(&mem, 0), (0, 513));
    }

    #[test]
    fn indices_wrap_around_u16() {
        let (mem, mut dq, mut q) = setup(4);
        for n in 0..70_000u32 {
            dq.add_chain(&mem, (n % 4) as u16, &[(0x8000, 4, true)]);
            let c = q.pop(&mem).unwrap().unwrap();
            q.push_used(&mem, c.head, 4).unwrap();
        }
        assert_eq!(dq.used_idx(&mem), (70_000u32 % 65536) as u16);
    }

    #[test]
    fn a_descriptor_loop_is_refused() {
        let (mem, mut dq, mut q) = setup(8);
        dq.set_desc(&mem, 0, 0x8000, 4, F_NEXT, 1);
        dq.set_desc(&mem, 1, 0x8000, 4, F_NEXT, 2);
        dq.set_desc(&mem, 2, 0x8000, 4, F_NEXT, 0);
        dq.publish(&mem, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::DescriptorLoop { head: 0 }));
        // A descriptor naming itself.
        let (mem, mut dq, mut q) = setup(8);
        dq.set_desc(&mem, 3, 0x8000, 4, F_NEXT, 3);
        dq.publish(&mem, 3);
        assert_eq!(q.pop(&mem), Err(QueueError::DescriptorLoop { head: 3 }));
    }

    #[test]
    fn out_of_range_addresses_and_indices_are_refused() {
        let (mem, mut dq, mut q) = setup(8);
        dq.add_chain(&mem, 0, &[(0xff000, 0x2000, true)]);
        assert_eq!(q.pop(&mem), Err(QueueError::BufferOutsideRam { addr: 0xff000, len: 0x2000 }));
        dq.add_chain(&mem, 0, &[(u64::MAX - 1, 4, false)]);
        assert_eq!(q.pop(&mem), Err(QueueError::BufferOutsideRam { addr: u64::MAX - 1, len: 4 }));
        dq.set_desc(&mem, 0, 0x8000, 4, F_NEXT, 9);
        dq.publish(&mem, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::IndexOutOfRange(9)));
        dq.publish(&mem, 200);
        assert_eq!(q.pop(&mem), Err(QueueError::IndexOutOfRange(200)));
        // Rings outside RAM are refused when the queue is set up.
        let mut bad = q.clone();
        bad.used = (1 << 20) - 8;
        assert_eq!(bad.validate(&mem), Err(QueueError::RingOutsideRam { addr: (1 << 20) - 8 }));
    }

    #[test]
    fn oversized_chains_are_refused() {
        let (mem, mut dq, mut q) = setup(4);
        // Four descriptors are fine, but every byte counts against the limit.
        dq.add_chain(&mem, 0, &[(0, 1 << 19, false), (0, 1 << 19, false), (0, 1 << 19, true), (0, 1 << 19, true)]);
        assert!(q.pop(&mem).unwrap().is_some());
        let mem = TestMem::new(64 << 20);
        let (_, mut dq, mut q) = setup(4);
        dq.add_chain(&mem, 0, &[(0, 12 << 20, false), (0, 8 << 20, true)]);
        assert_eq!(q.pop(&mem), Err(QueueError::ChainTooLong { head: 0 }));
        // The available index cannot run ahead by more than the queue size.
        let (mem, mut dq, mut q) = setup(4);
        dq.avail_idx = 9;
        dq.publish(&mem, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::AvailIndexJump { last: 0, avail: 10 }));
    }

    #[test]
    fn bad_sizes_and_flags_are_refused() {
        let mem = TestMem::new(1 << 20);
        for size in [0u16, 3, 6, 100, 512] {
            let mut q = Queue::new(MAX_QUEUE_SIZE);
            q.size = size;
            q.desc = 0x1000;
            q.avail = 0x8000;
            q.used = 0x9000;
            assert_eq!(q.validate(&mem), Err(QueueError::BadSize(size)), "{size}");
        }
        let (mem, mut dq, mut q) = setup(8);
        dq.set_desc(&mem, 0, 0x8000, 16, 4, 0);
        dq.publish(&mem, 0);
        assert_eq!(q.pop(&mem), Err(QueueError::IndirectNotNegotiated));
        dq.set_desc(&mem, 1, 0x8000, 16, F_WRITE | F_NEXT, 2);
        dq.set_desc(&mem, 2, 0x8000, 16, 0, 0);
        dq.publish(&mem, 1);
        assert_eq!(q.pop(&mem), Err(QueueError::ReadableAfterWritable { head: 1 }));
    }
}
