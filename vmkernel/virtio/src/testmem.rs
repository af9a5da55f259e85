//! Guest RAM for the unit tests: a byte vector at guest-physical 0.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::GuestMemory;

pub struct TestMem(pub RefCell<Vec<u8>>);

impl TestMem {
    pub fn new(size: usize) -> Self {
        TestMem(RefCell::new(vec![0; size]))
    }
    pub fn put(&self, gpa: u64, data: &[u8]) {
        assert!(self.write(gpa, data));
    }
    pub fn get(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        assert!(self.read(gpa, &mut b));
        b
    }
    pub fn u16_at(&self, gpa: u64) -> u16 {
        u16::from_le_bytes(self.get(gpa, 2).try_into().unwrap())
    }
    pub fn u32_at(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.get(gpa, 4).try_into().unwrap())
    }
}

impl GuestMemory for TestMem {
    fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa.checked_add(len).is_some_and(|end| end <= self.0.borrow().len() as u64)
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        if !self.contains(gpa, buf.len() as u64) {
            return false;
        }
        let m = self.0.borrow();
        buf.copy_from_slice(&m[gpa as usize..gpa as usize + buf.len()]);
        true
    }
    fn write(&self, gpa: u64, data: &[u8]) -> bool {
        if !self.contains(gpa, data.len() as u64) {
            return false;
        }
        let mut m = self.0.borrow_mut();
        m[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
        true
    }
}

/// A driver's view of one split queue laid out in [`TestMem`]: descriptor
/// table at `desc`, available ring at `avail`, used ring at `used`.
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub avail_idx: u16,
}

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;

impl DriverQueue {
    pub fn new(size: u16, base: u64) -> Self {
        let desc = base;
        let avail = desc + 16 * size as u64;
        let used = (avail + 6 + 2 * size as u64 + 3) & !3;
        DriverQueue { size, desc, avail, used, avail_idx: 0 }
    }
    pub fn set_desc(&self, mem: &TestMem, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
        mem.put(self.desc + 16 * i as u64, &d);
    }
    /// Publishes chain head `head` in the available ring.
    pub fn publish(&mut self, mem: &TestMem, head: u16) {
        let slot = self.avail_idx % self.size;
        mem.put(self.avail + 4 + 2 * slot as u64, &head.to_le_bytes());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.put(self.avail + 2, &self.avail_idx.to_le_bytes());
    }
    /// A chain of `(addr, len, device_writable)` buffers from descriptor
    /// `first` on, published.
    pub fn add_chain(&mut self, mem: &TestMem, first: u16, bufs: &[(u64, u32, bool)]) {
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let i = first + k as u16;
            let last = k + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            self.set_desc(mem, i, addr, len, flags, if last { 0 } else { i + 1 });
        }
        self.publish(mem, first);
    }
    /// The driver's `avail.flags` (1: VIRTQ_AVAIL_F_NO_INTERRUPT).
    pub fn set_avail_flags(&self, mem: &TestMem, flags: u16) {
        mem.put(self.avail, &flags.to_le_bytes());
    }
    /// The driver's `used_event` (EVENT_IDX).
    pub fn set_used_event(&self, mem: &TestMem, idx: u16) {
        mem.put(self.avail + 4 + 2 * self.size as u64, &idx.to_le_bytes());
    }
    /// The device's `avail_event` (EVENT_IDX).
    pub fn avail_event(&self, mem: &TestMem) -> u16 {
        mem.u16_at(self.used + 4 + 8 * self.size as u64)
    }
    pub fn used_idx(&self, mem: &TestMem) -> u16 {
        mem.u16_at(self.used + 2)
    }
    /// Used element `n`: (id, len).
    pub fn used_elem(&self, mem: &TestMem, n: u16) -> (u32, u32) {
        let at = self.used + 4 + 8 * (n % self.size) as u64;
        (mem.u32_at(at), mem.u32_at(at + 4))
    }
}
