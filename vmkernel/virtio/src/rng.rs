//! virtio-rng (virtio 1.x §5.4): one queue of device-writable buffers the
//! device fills from the host's entropy source.

use alloc::boxed::Box;
use alloc::vec;

use crate::GuestMemory;
use crate::mmio::{DeviceError, VirtioDevice};
use crate::queue::Queue;

/// Bytes handed out per request at most (a driver asking for more gets less).
pub const MAX_REQUEST: usize = 4096;

/// Where the random bytes come from (the kernel's RDRAND/RDSEED-backed pool).
pub trait EntropySource: Send {
    fn fill(&mut self, buf: &mut [u8]);
}

pub struct Rng {
    source: Box<dyn EntropySource>,
}

impl Rng {
    pub fn new(source: Box<dyn EntropySource>) -> Self {
        Rng { source }
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        crate::device_id::RNG
    }
    fn name(&self) -> &'static str {
        "virtio-rng"
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_count(&self) -> usize {
        1
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn process_queue(&mut self, q: usize, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        let qe = |error| DeviceError::Queue { queue: q as u16, error };
        let Some(queue) = queues.get_mut(q) else { return Ok(false) };
        let mut any = false;
        while let Some(chain) = queue.pop(mem).map_err(qe)? {
            let n = (chain.writable_len() as usize).min(MAX_REQUEST);
            let mut buf = vec![0u8; n];
            self.source.fill(&mut buf);
            chain.write_at(mem, 0, &buf).map_err(qe)?;
            queue.push_used(mem, chain.head, n as u32).map_err(qe)?;
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

    struct Counter(u8);
    impl EntropySource for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }

    #[test]
    fn fills_buffers_from_the_source() {
        let mem = TestMem::new(1 << 20);
        let mut q = DriverQueue::new(8, 0x1000);
        let mut dev = MmioDevice::new(2, Box::new(Rng::new(Box::new(Counter(0)))));
        assert_eq!(bring_up(&mut dev, &mem, &[&q], VERSION_1), 0xf);
        assert_eq!(dev.read(reg::DEVICE_ID, 4), 4);
        q.add_chain(&mem, 0, &[(0x8000, 16, true)]);
        q.add_chain(&mem, 1, &[(0x9000, 8192, true)]);
        dev.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert_eq!(mem.get(0x8000, 4), [1, 2, 3, 4]);
        assert_eq!(q.used_elem(&mem, 0), (0, 16));
        assert_eq!(q.used_elem(&mem, 1), (1, MAX_REQUEST as u32));
    }

    #[test]
    fn hostile_queues_stop_only_this_rng() {
        crate::mmio::tests::hostile_inputs(|| Box::new(Rng::new(Box::new(Counter(0)))), 0);
    }
}
