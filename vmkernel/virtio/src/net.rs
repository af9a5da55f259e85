//! virtio-net (virtio 1.x §5.1): queue 0 receives, queue 1 transmits.
//!
//! No offloads are offered, so every frame is a plain Ethernet frame behind
//! the 12-byte `virtio_net_hdr` (all zero towards the guest but
//! `num_buffers` = 1). Transmitted frames collect in an outbox the VMM
//! drains into the virtual switch; frames from the switch wait in a small
//! bounded backlog until the driver posts receive buffers (beyond it they
//! are dropped and counted, as a full NIC ring would).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::GuestMemory;
use crate::mmio::{DeviceError, VirtioDevice};
use crate::queue::Queue;

pub const F_MAC: u64 = 1 << 5;
pub const F_STATUS: u64 = 1 << 16;
pub const HDR_LEN: usize = 12;
/// Largest frame accepted either way (no jumbo frames: MTU 1500 + header + VLAN tag).
pub const MAX_FRAME: usize = 1518;
/// Frames kept while the driver has no receive buffers.
pub const RX_BACKLOG: usize = 64;
pub const RX: usize = 0;
pub const TX: usize = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
}

pub struct Net {
    mac: [u8; 6],
    link_up: bool,
    backlog: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    stats: NetStats,
}

impl Net {
    pub fn new(mac: [u8; 6]) -> Self {
        Net { mac, link_up: true, backlog: VecDeque::new(), outbox: Vec::new(), stats: NetStats::default() }
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Moves backlog frames into posted receive buffers.
    fn fill_rx(&mut self, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        let qe = |error| DeviceError::Queue { queue: RX as u16, error };
        let Some(queue) = queues.get_mut(RX).filter(|q| q.ready) else { return Ok(false) };
        let mut any = false;
        while let Some(frame) = self.backlog.front() {
            let Some(chain) = queue.pop(mem).map_err(qe)? else { break };
            let used = if chain.writable_len() < (HDR_LEN + frame.len()) as u64 {
                // Buffers too small for the frame: give them back empty.
                self.stats.rx_dropped += 1;
                0
            } else {
                let mut hdr = [0u8; HDR_LEN];
                hdr[10] = 1; // num_buffers
                chain.write_at(mem, 0, &hdr).map_err(qe)?;
                chain.write_at(mem, HDR_LEN as u64, frame).map_err(qe)?;
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += frame.len() as u64;
                (HDR_LEN + frame.len()) as u32
            };
            queue.push_used(mem, chain.head, used).map_err(qe)?;
            self.backlog.pop_front();
            any = true;
        }
        Ok(any)
    }

    fn drain_tx(&mut self, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        let qe = |error| DeviceError::Queue { queue: TX as u16, error };
        let Some(queue) = queues.get_mut(TX) else { return Ok(false) };
        let mut any = false;
        while let Some(chain) = queue.pop(mem).map_err(qe)? {
            let len = chain.readable_len();
            if len < HDR_LEN as u64 + 14 || len > (HDR_LEN + MAX_FRAME) as u64 {
                self.stats.tx_dropped += 1;
            } else {
                let mut frame = vec![0u8; len as usize - HDR_LEN];
                chain.read_at(mem, HDR_LEN as u64, &mut frame).map_err(qe)?;
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += frame.len() as u64;
                self.outbox.push(frame);
            }
            queue.push_used(mem, chain.head, 0).map_err(qe)?;
            any = true;
        }
        Ok(any)
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        crate::device_id::NET
    }
    fn name(&self) -> &'static str {
        "virtio-net"
    }
    fn features(&self) -> u64 {
        F_MAC | F_STATUS
    }
    fn queue_count(&self) -> usize {
        2
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // mac[6], status u16 (LINK_UP = 1).
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6] = self.link_up as u8;
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset).ok().and_then(|o| c.get(o + i)).copied().unwrap_or(0);
        }
    }
    fn reset(&mut self) {
        self.backlog.clear();
        self.outbox.clear();
    }
    fn process_queue(&mut self, q: usize, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        match q {
            RX => self.fill_rx(queues, mem),
            TX => self.drain_tx(queues, mem),
            _ => Ok(false),
        }
    }
    fn receive(&mut self, frame: &[u8], queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        if frame.len() > MAX_FRAME || self.backlog.len() >= RX_BACKLOG {
            self.stats.rx_dropped += 1;
            return Ok(false);
        }
        self.backlog.push_back(frame.to_vec());
        self.fill_rx(queues, mem)
    }
    fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        core::mem::take(&mut self.outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feature::VERSION_1;
    use crate::mmio::{MmioDevice, reg, tests::bring_up};
    use crate::testmem::{DriverQueue, TestMem};
    use alloc::boxed::Box;

    const MAC: [u8; 6] = [0x00, 0x50, 0x56, 0x01, 0x02, 0x03];

    fn setup() -> (TestMem, DriverQueue, DriverQueue, MmioDevice) {
        let mem = TestMem::new(1 << 20);
        let rx = DriverQueue::new(8, 0x1000);
        let tx = DriverQueue::new(8, 0x2000);
        let mut dev = MmioDevice::new(1, Box::new(Net::new(MAC)));
        assert_eq!(bring_up(&mut dev, &mem, &[&rx, &tx], VERSION_1 | F_MAC | F_STATUS), 0xf);
        (mem, rx, tx, dev)
    }

    #[test]
    fn config_has_the_mac_and_link_up() {
        let (_, _, _, mut dev) = setup();
        let mac: alloc::vec::Vec<u8> = (0..6).map(|i| dev.read(reg::CONFIG + i, 1) as u8).collect();
        assert_eq!(mac, MAC);
        assert_eq!(dev.read(reg::CONFIG + 6, 2), 1);
        assert_eq!(dev.read(reg::DEVICE_ID, 4), 1);
    }

    #[test]
    fn transmit_strips_the_header() {
        let (mem, _, mut tx, mut dev) = setup();
        let frame: alloc::vec::Vec<u8> = (0..60).collect();
        mem.put(0x8000, &[0; HDR_LEN]);
        mem.put(0x8000 + HDR_LEN as u64, &frame);
        tx.add_chain(&mem, 0, &[(0x8000, (HDR_LEN + 60) as u32, false)]);
        // A runt is dropped but its buffer returned.
        tx.add_chain(&mem, 1, &[(0x8000, 20, false)]);
        dev.write(reg::QUEUE_NOTIFY, 4, TX as u64, &mem);
        assert_eq!(tx.used_idx(&mem), 2);
        assert!(dev.irq_level());
        assert_eq!(dev.device_mut().take_transmitted(), alloc::vec![frame]);
        assert!(dev.device_mut().take_transmitted().is_empty());
    }

    #[test]
    fn receive_waits_for_buffers_and_is_bounded() {
        let (mem, mut rx, _, mut dev) = setup();
        let frame = [0xaau8; 64];
        dev.receive(&frame, &mem);
        assert!(!dev.irq_level(), "no buffer posted yet");
        rx.add_chain(&mem, 0, &[(0x9000, 1526, true)]);
        dev.write(reg::QUEUE_NOTIFY, 4, RX as u64, &mem);
        assert_eq!(rx.used_elem(&mem, 0), (0, (HDR_LEN + 64) as u32));
        assert_eq!(mem.get(0x9000 + 10, 2), [1, 0], "num_buffers = 1");
        assert_eq!(mem.get(0x9000 + HDR_LEN as u64, 64), frame);
        assert!(dev.irq_level());
        for _ in 0..RX_BACKLOG + 10 {
            dev.receive(&frame, &mem);
        }
        // Too large for any buffer: dropped at once.
        dev.receive(&[0; MAX_FRAME + 1], &mem);
        // Buffers posted now drain the backlog, which kept RX_BACKLOG frames.
        let mut delivered = 0;
        loop {
            let before = rx.used_idx(&mem);
            for i in 0..8 {
                rx.add_chain(&mem, i, &[(0x10000 + i as u64 * 0x800, 1526, true)]);
            }
            dev.write(reg::QUEUE_NOTIFY, 4, RX as u64, &mem);
            let n = rx.used_idx(&mem).wrapping_sub(before);
            delivered += n;
            if n < 8 {
                break;
            }
        }
        assert_eq!(delivered as usize, RX_BACKLOG);
    }

    #[test]
    fn hostile_queues_stop_only_this_nic() {
        crate::mmio::tests::hostile_inputs(|| Box::new(Net::new(MAC)), TX);
    }

    /// The receive queue is read when a frame arrives from the switch.
    #[test]
    fn hostile_receive_queues_stop_only_this_nic() {
        crate::mmio::tests::hostile_inputs_with(|| Box::new(Net::new(MAC)), RX, |d, mem, _| d.receive(&[0xff; 60], mem));
    }
}
