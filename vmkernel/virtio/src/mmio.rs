//! The virtio-mmio transport, register layout version 2 (virtio 1.x §4.2).
//!
//! One [`MmioDevice`] is one 4 KiB register window with a device model
//! behind it. The transport owns feature negotiation, the queues' set-up
//! registers, the status state machine and the interrupt status; the model
//! ([`VirtioDevice`]) owns its configuration space and what its queues mean.
//! The interrupt line is a level: [`MmioDevice::irq_level`] is high while
//! any interrupt-status bit is set, and the VMM drives IOAPIC GSI
//! [`slot_gsi`] with it after every access (level-triggered, active high).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use crate::GuestMemory;
use crate::feature::{EVENT_IDX, VERSION_1};
use crate::queue::{Queue, QueueError};

/// Guest-physical base of virtio-mmio slot 0; slot `i` is `i` pages above.
pub const SLOTS_BASE: u64 = 0xfeb0_0000;
/// Size of one slot's register window.
pub const SLOT_SIZE: u64 = 0x1000;
/// Slots a VM has.
pub const SLOTS: usize = 8;
/// IOAPIC input of slot 0 (slot `i` is `16 + i`).
pub const FIRST_GSI: u32 = 16;

pub const fn slot_base(slot: usize) -> u64 {
    SLOTS_BASE + slot as u64 * SLOT_SIZE
}

pub const fn slot_gsi(slot: usize) -> u32 {
    FIRST_GSI + slot as u32
}

/// The slot whose window contains `gpa`, and the offset in it.
pub fn slot_of(gpa: u64) -> Option<(usize, u64)> {
    let off = gpa.checked_sub(SLOTS_BASE)?;
    let slot = (off / SLOT_SIZE) as usize;
    (slot < SLOTS).then_some((slot, off % SLOT_SIZE))
}

pub const MAGIC: u32 = 0x7472_6976; // "virt"
pub const VERSION: u32 = 2;
/// Vendor ID reported to the driver ("MNTL").
pub const VENDOR_ID: u32 = 0x4c54_4e4d;

pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// Interrupt-status bits.
pub const INT_USED_BUFFER: u32 = 1;
pub const INT_CONFIG_CHANGE: u32 = 2;

/// A fault that stops the device until the driver resets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    Queue { queue: u16, error: QueueError },
    /// The driver moved the status register in a way the specification forbids.
    BadStatus { from: u32, to: u32 },
    /// A request the device model cannot make sense of (too short, no status byte, ...).
    BadRequest(&'static str),
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::Queue { queue, error } => write!(f, "queue {queue}: {error}"),
            DeviceError::BadStatus { from, to } => write!(f, "bad status change {from:#x} -> {to:#x}"),
            DeviceError::BadRequest(why) => write!(f, "bad request: {why}"),
        }
    }
}

/// A device model behind the transport.
pub trait VirtioDevice: Send {
    /// Virtio device type ([`crate::device_id`]).
    fn device_id(&self) -> u32;
    /// Short name for log lines ("virtio-blk").
    fn name(&self) -> &'static str;
    /// Device feature bits (the transport adds VERSION_1).
    fn features(&self) -> u64;
    /// Number of virtqueues.
    fn queue_count(&self) -> usize;
    /// Largest size of queue `q`.
    fn queue_max_size(&self, _q: usize) -> u16 {
        crate::queue::MAX_QUEUE_SIZE
    }
    /// Reads configuration space (out-of-range bytes read as zero).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes configuration space (default: read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK with these negotiated features.
    fn activate(&mut self, _features: u64) {}
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// A network device takes a frame from the switch (default: dropped).
    /// Returns whether used buffers were returned.
    fn receive(&mut self, _frame: &[u8], _queues: &mut [Queue], _mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
        Ok(false)
    }
    /// A network device hands over the frames its driver transmitted.
    fn take_transmitted(&mut self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// A block device's request counters (default: not a disk).
    fn block_stats(&self) -> Option<crate::blk::BlkStats> {
        None
    }
    /// The driver notified queue `q`: process what it made available.
    /// Returns whether used buffers were returned (an interrupt is due).
    fn process_queue(&mut self, q: usize, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError>;
}

/// One virtio-mmio register window and its device.
pub struct MmioDevice {
    slot: usize,
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// The last fault, kept for `vmkcli` and tests.
    last_error: Option<DeviceError>,
}

impl MmioDevice {
    pub fn new(slot: usize, device: Box<dyn VirtioDevice>) -> Self {
        let queues = (0..device.queue_count()).map(|q| Queue::new(device.queue_max_size(q))).collect();
        MmioDevice {
            slot,
            device,
            queues,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            last_error: None,
        }
    }

    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn last_error(&self) -> Option<DeviceError> {
        self.last_error
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        &*self.device
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        &mut *self.device
    }

    /// The level of this slot's interrupt line.
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    fn offered(&self) -> u64 {
        self.device.features() | VERSION_1 | EVENT_IDX
    }

    /// Whether the device is live: DRIVER_OK and not waiting for a reset.
    pub fn running(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// Puts the device into DEVICE_NEEDS_RESET (it stops touching its
    /// queues) and tells the driver with a configuration-change interrupt.
    pub fn fail(&mut self, e: DeviceError) {
        if self.status & status::DEVICE_NEEDS_RESET == 0 {
            log::warn!("{} in virtio-mmio slot {}: {e}; device stopped until the driver resets it", self.device.name(), self.slot);
        }
        self.last_error = Some(e);
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG_CHANGE;
    }

    /// The VM was reset or powered off: back to the power-on state, with
    /// no queue addresses left that could name the next boot's memory.
    pub fn host_reset(&mut self) {
        self.reset();
        self.last_error = None;
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.device.reset();
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// A register read of `size` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        if offset >= reg::CONFIG {
            let mut b = [0u8; 8];
            let n = (size as usize).min(8);
            self.device.read_config(offset - reg::CONFIG, &mut b[..n]);
            return u64::from_le_bytes(b);
        }
        // Registers are 32 bits wide and read whole.
        if size != 4 || !offset.is_multiple_of(4) {
            return 0;
        }
        let q = self.queues.get(self.queue_sel as usize);
        let v = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered() as u32,
                1 => (self.offered() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size as u32),
            reg::QUEUE_READY => q.is_some_and(|q| q.ready) as u32,
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: length all ones.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX,
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        v as u64
    }

    /// A register write. Queue notifications run the device model at once,
    /// with `mem` the guest's RAM.
    pub fn write(&mut self, offset: u64, size: u8, value: u64, mem: &dyn GuestMemory) {
        if offset >= reg::CONFIG {
            let n = (size as usize).min(8);
            self.device.write_config(offset - reg::CONFIG, &value.to_le_bytes()[..n]);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        if size != 4 || !offset.is_multiple_of(4) {
            return;
        }
        let v = value as u32;
        // Queue set-up registers may change only while the queue is not ready.
        let setup = |this: &mut Self, f: &dyn Fn(&mut Queue)| {
            if let Some(q) = this.queue().filter(|q| !q.ready) {
                f(q);
            }
        };
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            // Features are fixed once FEATURES_OK is set.
            reg::DRIVER_FEATURES if self.status & status::FEATURES_OK == 0 => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | ((v as u64) << 32),
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM => {
                let n = v.min(u16::MAX as u32) as u16;
                setup(self, &|q| q.size = n);
            }
            reg::QUEUE_DESC_LOW => setup(self, &|q| q.desc = (q.desc & !0xffff_ffff) | v as u64),
            reg::QUEUE_DESC_HIGH => setup(self, &|q| q.desc = (q.desc & 0xffff_ffff) | (v as u64) << 32),
            reg::QUEUE_DRIVER_LOW => setup(self, &|q| q.avail = (q.avail & !0xffff_ffff) | v as u64),
            reg::QUEUE_DRIVER_HIGH => setup(self, &|q| q.avail = (q.avail & 0xffff_ffff) | (v as u64) << 32),
            reg::QUEUE_DEVICE_LOW => setup(self, &|q| q.used = (q.used & !0xffff_ffff) | v as u64),
            reg::QUEUE_DEVICE_HIGH => setup(self, &|q| q.used = (q.used & 0xffff_ffff) | (v as u64) << 32),
            reg::QUEUE_READY => self.queue_ready(v != 0, mem),
            reg::QUEUE_NOTIFY => self.notify(v as usize, mem),
            reg::INTERRUPT_ACK => self.interrupt_status &= !v,
            reg::STATUS => self.set_status(v),
            _ => {}
        }
    }

    fn queue_ready(&mut self, ready: bool, mem: &dyn GuestMemory) {
        let sel = self.queue_sel as u16;
        let Some(q) = self.queue() else { return };
        if !ready {
            q.reset();
            return;
        }
        match q.validate(mem) {
            Ok(()) => q.ready = true,
            Err(error) => self.fail(DeviceError::Queue { queue: sel, error }),
        }
    }

    fn set_status(&mut self, new: u32) {
        use status::*;
        if new == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver only adds bits (FAILED aside) and follows
        // ACKNOWLEDGE -> DRIVER -> FEATURES_OK -> DRIVER_OK.
        let driver_bits = new & !DEVICE_NEEDS_RESET;
        let kept = old & !DEVICE_NEEDS_RESET;
        if new & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        let ordered = driver_bits & kept == kept
            && (driver_bits & DRIVER == 0 || driver_bits & ACKNOWLEDGE != 0)
            && (driver_bits & FEATURES_OK == 0 || driver_bits & DRIVER != 0)
            && (driver_bits & DRIVER_OK == 0 || driver_bits & FEATURES_OK != 0)
            && driver_bits & !(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK) == 0;
        if !ordered {
            self.fail(DeviceError::BadStatus { from: old, to: new });
            return;
        }
        let mut accepted = driver_bits;
        if driver_bits & FEATURES_OK != 0 && kept & FEATURES_OK == 0 {
            // Features the device did not offer, or a legacy driver
            // (no VERSION_1): FEATURES_OK stays clear, as the spec says.
            let ok = self.driver_features & !self.offered() == 0 && self.driver_features & VERSION_1 != 0;
            if !ok {
                accepted &= !FEATURES_OK;
            }
        }
        if accepted & DRIVER_OK != 0 && kept & DRIVER_OK == 0 {
            if accepted & FEATURES_OK == 0 {
                self.fail(DeviceError::BadStatus { from: old, to: new });
                return;
            }
            let event_idx = self.driver_features & EVENT_IDX != 0;
            for q in &mut self.queues {
                q.event_idx = event_idx;
            }
            self.device.activate(self.driver_features);
        }
        self.status = accepted | (old & DEVICE_NEEDS_RESET);
    }

    /// Processes queue `q` if the device is live.
    pub fn notify(&mut self, q: usize, mem: &dyn GuestMemory) {
        if !self.running() || !self.queues.get(q).is_some_and(|q| q.ready) {
            return;
        }
        let r = self.device.process_queue(q, &mut self.queues, mem);
        self.after_processing(r, mem);
    }

    /// Raises the used-buffer interrupt if the device returned chains on a
    /// queue whose driver asked to hear of them; stops the device on a fault.
    fn after_processing(&mut self, r: Result<bool, DeviceError>, mem: &dyn GuestMemory) {
        match r {
            Ok(true) => {
                let mut due = false;
                for (i, q) in self.queues.iter_mut().enumerate().filter(|(_, q)| q.ready) {
                    match q.interrupt_due(mem) {
                        Ok(d) => due |= d,
                        Err(error) => return self.fail(DeviceError::Queue { queue: i as u16, error }),
                    }
                }
                if due {
                    self.interrupt_status |= INT_USED_BUFFER;
                }
            }
            Ok(false) => {}
            Err(e) => self.fail(e),
        }
    }

    /// Gives a frame to a network device (dropped unless it is live).
    pub fn receive(&mut self, frame: &[u8], mem: &dyn GuestMemory) {
        if !self.running() {
            return;
        }
        let r = self.device.receive(frame, &mut self.queues, mem);
        self.after_processing(r, mem);
    }

    /// The device's configuration changed (e.g. a link went down).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= INT_CONFIG_CHANGE;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testmem::{DriverQueue, TestMem};
    use alloc::vec;

    /// A device that echoes: every chain's readable bytes are copied to
    /// its writable buffers.
    struct Echo;

    impl VirtioDevice for Echo {
        fn device_id(&self) -> u32 {
            99
        }
        fn name(&self) -> &'static str {
            "echo"
        }
        fn features(&self) -> u64 {
            1 << 5
        }
        fn queue_count(&self) -> usize {
            1
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn process_queue(&mut self, q: usize, queues: &mut [Queue], mem: &dyn GuestMemory) -> Result<bool, DeviceError> {
            let queue = &mut queues[q];
            let mut any = false;
            while let Some(c) = queue.pop(mem).map_err(|error| DeviceError::Queue { queue: q as u16, error })? {
                let mut b = vec![0; c.readable_len() as usize];
                c.read_at(mem, 0, &mut b).unwrap();
                let n = c.write_at(mem, 0, &b).unwrap();
                queue.push_used(mem, c.head, n as u32).unwrap();
                any = true;
            }
            Ok(any)
        }
    }

    /// Drives a device through the driver's initialisation (§3.1.1) with
    /// queue `q` laid out by `dq`; returns the final status.
    pub(crate) fn bring_up(dev: &mut MmioDevice, mem: &TestMem, queues: &[&DriverQueue], features: u64) -> u32 {
        dev.write(reg::STATUS, 4, 0, mem);
        dev.write(reg::STATUS, 4, 1, mem);
        dev.write(reg::STATUS, 4, 3, mem);
        dev.write(reg::DRIVER_FEATURES_SEL, 4, 0, mem);
        dev.write(reg::DRIVER_FEATURES, 4, features & 0xffff_ffff, mem);
        dev.write(reg::DRIVER_FEATURES_SEL, 4, 1, mem);
        dev.write(reg::DRIVER_FEATURES, 4, features >> 32, mem);
        dev.write(reg::STATUS, 4, 0xb, mem);
        if dev.read(reg::STATUS, 4) & status::FEATURES_OK as u64 == 0 {
            return dev.read(reg::STATUS, 4) as u32;
        }
        for (i, dq) in queues.iter().enumerate() {
            dev.write(reg::QUEUE_SEL, 4, i as u64, mem);
            dev.write(reg::QUEUE_NUM, 4, dq.size as u64, mem);
            dev.write(reg::QUEUE_DESC_LOW, 4, dq.desc, mem);
            dev.write(reg::QUEUE_DESC_HIGH, 4, 0, mem);
            dev.write(reg::QUEUE_DRIVER_LOW, 4, dq.avail, mem);
            dev.write(reg::QUEUE_DRIVER_HIGH, 4, 0, mem);
            dev.write(reg::QUEUE_DEVICE_LOW, 4, dq.used, mem);
            dev.write(reg::QUEUE_DEVICE_HIGH, 4, 0, mem);
            dev.write(reg::QUEUE_READY, 4, 1, mem);
        }
        dev.write(reg::STATUS, 4, 0xf, mem);
        dev.read(reg::STATUS, 4) as u32
    }

    /// Feeds every hostile input the queue layer must catch to a fresh
    /// device from `make`, on its queue `queue`: each puts that device into
    /// DEVICE_NEEDS_RESET with the matching error while a second device of
    /// the same kind next to it keeps working, and a reset plus a correct
    /// bring-up makes the first one usable again.
    pub(crate) fn hostile_inputs(make: impl Fn() -> Box<dyn VirtioDevice>, queue: usize) {
        hostile_inputs_with(make, queue, |d, mem, q| d.write(reg::QUEUE_NOTIFY, 4, q as u64, mem));
    }

    /// The same, with `kick` making the device look at queue `queue` (a
    /// notification, or for a NIC's receive queue a frame from the switch).
    pub(crate) fn hostile_inputs_with(make: impl Fn() -> Box<dyn VirtioDevice>, queue: usize, kick: impl Fn(&mut MmioDevice, &TestMem, usize)) {
        use crate::queue::MAX_CHAIN_BYTES;
        use crate::testmem::F_NEXT;
        let mem = TestMem::new(4 << 20);
        let layout = |base: u64| -> Vec<DriverQueue> {
            (0..make().queue_count()).map(|i| DriverQueue::new(32, base + i as u64 * 0x1000)).collect()
        };
        type Attack = fn(&TestMem, &mut DriverQueue);
        type Expect = fn(&QueueError) -> bool;
        let attacks: [(&str, Attack, Expect); 5] = [
            ("descriptor loop", |m, q| {
                q.set_desc(m, 0, 0x8000, 4, F_NEXT, 1);
                q.set_desc(m, 1, 0x8000, 4, F_NEXT, 0);
                q.publish(m, 0);
            }, |e| matches!(e, QueueError::DescriptorLoop { .. })),
            ("address outside RAM", |m, q| q.add_chain(m, 0, &[(0x8000, 16, false), (8 << 20, 512, true)]), |e| {
                matches!(e, QueueError::BufferOutsideRam { .. })
            }),
            ("oversized chain", |m, q| {
                let n = (MAX_CHAIN_BYTES / (1 << 20)) as u16 + 1;
                for i in 0..n {
                    q.set_desc(m, i, 0, 1 << 20, crate::testmem::F_WRITE | if i + 1 < n { F_NEXT } else { 0 }, i + 1);
                }
                q.publish(m, 0);
            }, |e| matches!(e, QueueError::ChainTooLong { .. })),
            ("available index jump", |m, q| {
                q.avail_idx = 100;
                q.publish(m, 0);
            }, |e| matches!(e, QueueError::AvailIndexJump { .. })),
            ("head beyond the queue", |m, q| q.publish(m, 31000), |e| matches!(e, QueueError::IndexOutOfRange(_))),
        ];
        for (what, attack, expect) in attacks {
            let mut bad = MmioDevice::new(0, make());
            let mut good = MmioDevice::new(1, make());
            let mut bq = layout(0x10_0000);
            let gq = layout(0x20_0000);
            assert_eq!(bring_up(&mut bad, &mem, &bq.iter().collect::<Vec<_>>(), VERSION_1), 0xf, "{what}");
            assert_eq!(bring_up(&mut good, &mem, &gq.iter().collect::<Vec<_>>(), VERSION_1), 0xf, "{what}");
            attack(&mem, &mut bq[queue]);
            kick(&mut bad, &mem, queue);
            match bad.last_error() {
                Some(DeviceError::Queue { error, .. }) if expect(&error) => {}
                other => panic!("{what}: {other:?}"),
            }
            assert!(!bad.running() && bad.status() & status::DEVICE_NEEDS_RESET != 0, "{what}");
            assert!(good.running(), "{what}: the neighbour is untouched");
            // After a reset the device works again.
            let fresh = layout(0x30_0000);
            assert_eq!(bring_up(&mut bad, &mem, &fresh.iter().collect::<Vec<_>>(), VERSION_1), 0xf, "{what}");
            assert!(bad.running());
        }
        // A queue size that is not a power of two, or above the maximum.
        for size in [24, 1000] {
            let mut d = MmioDevice::new(0, make());
            let mut qs = layout(0x10_0000);
            qs[queue].size = size;
            bring_up(&mut d, &mem, &qs.iter().collect::<Vec<_>>(), VERSION_1);
            assert_eq!(d.last_error(), Some(DeviceError::Queue { queue: queue as u16, error: QueueError::BadSize(size) }));
            assert!(!d.running());
        }
        // Rings outside guest RAM (the descriptor table past its end, the
        // used ring at 4 GiB - 8).
        for (desc, used) in [(8 << 20, None), (0x10_0000, Some(0xffff_fff8))] {
            let mut d = MmioDevice::new(0, make());
            let mut qs = layout(0x10_0000);
            qs[queue].desc = desc;
            if let Some(u) = used {
                qs[queue].used = u;
            }
            bring_up(&mut d, &mem, &qs.iter().collect::<Vec<_>>(), VERSION_1);
            assert!(matches!(d.last_error(), Some(DeviceError::Queue { error: QueueError::RingOutsideRam { .. }, .. })), "{desc:#x}: {:?}", d.last_error());
            assert!(!d.running());
        }
        // A bad status sequence.
        let mut d = MmioDevice::new(0, make());
        d.write(reg::STATUS, 4, 1, &mem);
        d.write(reg::STATUS, 4, 5, &mem);
        assert!(matches!(d.last_error(), Some(DeviceError::BadStatus { .. })));
    }

    #[test]
    fn identifies_as_virtio_mmio_version_2() {
        let mut d = MmioDevice::new(3, Box::new(Echo));
        assert_eq!(d.read(reg::MAGIC, 4), 0x7472_6976);
        assert_eq!(d.read(reg::VERSION, 4), 2);
        assert_eq!(d.read(reg::DEVICE_ID, 4), 99);
        assert_eq!(d.read(reg::QUEUE_NUM_MAX, 4), 256);
        d.write(reg::QUEUE_SEL, 4, 1, &TestMem::new(4096));
        assert_eq!(d.read(reg::QUEUE_NUM_MAX, 4), 0, "no queue 1");
        assert_eq!(d.read(reg::CONFIG + 2, 2), 0x0302);
        assert_eq!(slot_base(3), 0xfeb0_3000);
        assert_eq!(slot_gsi(3), 19);
        assert_eq!(slot_of(0xfeb0_3010), Some((3, 0x10)));
        assert_eq!(slot_of(0xfeb0_8000), None);
    }

    #[test]
    fn feature_negotiation_and_a_round_trip() {
        let mem = TestMem::new(1 << 20);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        d.write(reg::DEVICE_FEATURES_SEL, 4, 1, &mem);
        assert_eq!(d.read(reg::DEVICE_FEATURES, 4), 1, "VERSION_1 in the high word");
        d.write(reg::DEVICE_FEATURES_SEL, 4, 0, &mem);
        assert_eq!(d.read(reg::DEVICE_FEATURES, 4), 1 << 5 | 1 << 29, "the device feature and EVENT_IDX");
        let mut dq = DriverQueue::new(16, 0x1000);
        assert_eq!(bring_up(&mut d, &mem, &[&dq], VERSION_1 | 1 << 5), 0xf);
        mem.put(0x8000, b"hello");
        dq.add_chain(&mem, 0, &[(0x8000, 5, false), (0x9000, 8, true)]);
        assert!(!d.irq_level());
        d.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert!(d.irq_level());
        assert_eq!(d.read(reg::INTERRUPT_STATUS, 4), 1);
        assert_eq!(mem.get(0x9000, 5), b"hello");
        assert_eq!(dq.used_elem(&mem, 0), (0, 5));
        d.write(reg::INTERRUPT_ACK, 4, 1, &mem);
        assert!(!d.irq_level());
    }

    /// One echo request on `dq` through `d`; whether it raised the interrupt
    /// (acknowledged afterwards).
    fn echo_once(d: &mut MmioDevice, mem: &TestMem, dq: &mut DriverQueue) -> bool {
        dq.add_chain(mem, 0, &[(0x8000, 5, false), (0x9000, 8, true)]);
        d.write(reg::QUEUE_NOTIFY, 4, 0, mem);
        let raised = d.irq_level();
        d.write(reg::INTERRUPT_ACK, 4, INT_USED_BUFFER as u64, mem);
        raised
    }

    #[test]
    fn no_interrupt_flag_suppresses_used_buffer_interrupts() {
        let mem = TestMem::new(1 << 20);
        let mut dq = DriverQueue::new(16, 0x1000);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        assert_eq!(bring_up(&mut d, &mem, &[&dq], VERSION_1), 0xf);
        assert!(echo_once(&mut d, &mem, &mut dq));
        dq.set_avail_flags(&mem, 1);
        assert!(!echo_once(&mut d, &mem, &mut dq), "VIRTQ_AVAIL_F_NO_INTERRUPT");
        assert_eq!(dq.used_idx(&mem), 2, "the chain is still returned");
        dq.set_avail_flags(&mem, 0);
        assert!(echo_once(&mut d, &mem, &mut dq));
        assert_eq!(dq.avail_event(&mem), 0, "no avail_event without EVENT_IDX");
    }

    #[test]
    fn event_idx_interrupts_at_used_event_and_publishes_avail_event() {
        let mem = TestMem::new(1 << 20);
        let mut dq = DriverQueue::new(16, 0x1000);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        assert_eq!(bring_up(&mut d, &mem, &[&dq], VERSION_1 | EVENT_IDX), 0xf);
        // used_event 0: interrupt when used index passes 0 (the first chain).
        assert!(echo_once(&mut d, &mem, &mut dq));
        assert_eq!(dq.avail_event(&mem), 1, "notify me when chain 1 is published");
        // The driver wants to hear only once the used index passes 3.
        dq.set_used_event(&mem, 3);
        assert!(!echo_once(&mut d, &mem, &mut dq)); // used 2
        assert!(!echo_once(&mut d, &mem, &mut dq)); // used 3
        assert!(echo_once(&mut d, &mem, &mut dq), "used 4 passes used_event 3");
        assert_eq!(dq.avail_event(&mem), 4);
        // Several chains in one notification: one interrupt if used_event is among them.
        dq.set_used_event(&mem, 5);
        for i in 0..3 {
            dq.add_chain(&mem, 2 * i, &[(0x8000, 5, false), (0x9000, 8, true)]);
        }
        d.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert_eq!(dq.used_idx(&mem), 7);
        assert!(d.irq_level());
        assert_eq!(dq.avail_event(&mem), 7);
        assert!(crate::queue::need_event(0xffff, 0, 0xfffe), "wraps around u16");
        assert!(!crate::queue::need_event(5, 5, 4));
    }

    #[test]
    fn unoffered_features_or_a_legacy_driver_leave_features_ok_clear() {
        let mem = TestMem::new(1 << 20);
        let dq = DriverQueue::new(16, 0x1000);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        assert_eq!(bring_up(&mut d, &mem, &[&dq], VERSION_1 | 1 << 6), 3);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        assert_eq!(bring_up(&mut d, &mem, &[&dq], 1 << 5), 3, "no VERSION_1");
        // DRIVER_OK without FEATURES_OK is a protocol error.
        d.write(reg::STATUS, 4, 7, &mem);
        assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn bad_status_sequences_need_reset() {
        let mem = TestMem::new(1 << 20);
        for seq in [&[4u64][..], &[2], &[1, 9], &[1, 3, 0xb, 0xf, 3], &[1, 0x21]] {
            let mut d = MmioDevice::new(1, Box::new(Echo));
            d.write(reg::DRIVER_FEATURES_SEL, 4, 1, &mem);
            d.write(reg::DRIVER_FEATURES, 4, 1, &mem);
            for &s in seq {
                d.write(reg::STATUS, 4, s, &mem);
            }
            assert_ne!(d.status() & status::DEVICE_NEEDS_RESET, 0, "{seq:?}");
            assert!(matches!(d.last_error(), Some(DeviceError::BadStatus { .. })));
            assert!(d.irq_level(), "the driver hears of it through a config interrupt");
            // A reset brings it back.
            d.write(reg::STATUS, 4, 0, &mem);
            assert_eq!(d.status(), 0);
            assert!(!d.irq_level());
        }
    }

    #[test]
    fn a_non_power_of_two_queue_stops_the_device() {
        let mem = TestMem::new(1 << 20);
        let mut dq = DriverQueue::new(16, 0x1000);
        dq.size = 12;
        let mut d = MmioDevice::new(2, Box::new(Echo));
        let s = bring_up(&mut d, &mem, &[&dq], VERSION_1);
        assert_ne!(s & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(d.last_error(), Some(DeviceError::Queue { queue: 0, error: QueueError::BadSize(12) }));
        assert!(!d.running());
        // It ignores notifications until reset; a correct bring-up works again.
        d.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        let mut dq = DriverQueue::new(16, 0x1000);
        assert_eq!(bring_up(&mut d, &mem, &[&dq], VERSION_1), 0xf);
        dq.add_chain(&mem, 0, &[(0x8000, 5, false), (0x9000, 8, true)]);
        d.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert_eq!(dq.used_idx(&mem), 1);
    }

    #[test]
    fn a_descriptor_loop_stops_only_that_device() {
        let mem = TestMem::new(1 << 20);
        let mut bad_q = DriverQueue::new(8, 0x1000);
        let mut good_q = DriverQueue::new(8, 0x4000);
        let mut bad = MmioDevice::new(0, Box::new(Echo));
        let mut good = MmioDevice::new(1, Box::new(Echo));
        bring_up(&mut bad, &mem, &[&bad_q], VERSION_1);
        bring_up(&mut good, &mem, &[&good_q], VERSION_1);
        bad_q.set_desc(&mem, 0, 0x8000, 4, crate::testmem::F_NEXT, 1);
        bad_q.set_desc(&mem, 1, 0x8000, 4, crate::testmem::F_NEXT, 0);
        bad_q.publish(&mem, 0);
        bad.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert_eq!(bad.last_error(), Some(DeviceError::Queue { queue: 0, error: QueueError::DescriptorLoop { head: 0 } }));
        assert_eq!(bad.read(reg::INTERRUPT_STATUS, 4), INT_CONFIG_CHANGE as u64);
        good_q.add_chain(&mem, 0, &[(0x8000, 4, false), (0x9000, 4, true)]);
        good.write(reg::QUEUE_NOTIFY, 4, 0, &mem);
        assert_eq!(good_q.used_idx(&mem), 1);
        assert!(good.running() && !bad.running());
    }

    #[test]
    fn hostile_inputs_stop_only_the_echo_device() {
        hostile_inputs(|| Box::new(Echo), 0);
    }

    #[test]
    fn queue_registers_are_frozen_while_ready() {
        let mem = TestMem::new(1 << 20);
        let dq = DriverQueue::new(16, 0x1000);
        let mut d = MmioDevice::new(0, Box::new(Echo));
        bring_up(&mut d, &mem, &[&dq], VERSION_1);
        d.write(reg::QUEUE_DESC_LOW, 4, 0xdead_0000, &mem);
        d.write(reg::QUEUE_NUM, 4, 3, &mem);
        assert_eq!(d.queues[0].desc, dq.desc);
        assert_eq!(d.queues[0].size, 16);
        // Odd sizes and offsets read as zero rather than misbehave.
        assert_eq!(d.read(reg::MAGIC, 2), 0);
        assert_eq!(d.read(reg::MAGIC + 1, 4), 0);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::testmem::TestMem;
    use alloc::vec;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    struct NullDisk(Vec<u8>);
    impl vmk_vdisk::BlockBackend for NullDisk {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), vmk_vdisk::DiskError> {
            let o = offset as usize;
            buf.copy_from_slice(self.0.get(o..o + buf.len()).ok_or(vmk_vdisk::DiskError::OutOfRange)?);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), vmk_vdisk::DiskError> {
            let o = offset as usize;
            self.0.get_mut(o..o + data.len()).ok_or(vmk_vdisk::DiskError::OutOfRange)?.copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), vmk_vdisk::DiskError> {
            Ok(())
        }
    }

    struct Zeros;
    impl crate::rng::EntropySource for Zeros {
        fn fill(&mut self, buf: &mut [u8]) {
            buf.fill(0);
        }
    }

    /// A guest that writes random registers (biased towards the ones that
    /// matter) over random RAM, with random queue kicks and frames: no
    /// device model may panic or run while it waits for a reset.
    #[test]
    fn random_guests_never_panic() {
        let regs = [
            reg::STATUS, reg::QUEUE_SEL, reg::QUEUE_NUM, reg::QUEUE_READY, reg::QUEUE_NOTIFY, reg::QUEUE_DESC_LOW,
            reg::QUEUE_DRIVER_LOW, reg::QUEUE_DEVICE_LOW, reg::DRIVER_FEATURES, reg::DRIVER_FEATURES_SEL, reg::INTERRUPT_ACK,
            reg::CONFIG, reg::QUEUE_DESC_HIGH,
        ];
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for round in 0..60 {
            let mem = TestMem::new(64 << 10);
            {
                let mut m = mem.0.borrow_mut();
                for b in m.iter_mut() {
                    *b = rng.next() as u8;
                }
            }
            let device: Box<dyn VirtioDevice> = match round % 3 {
                0 => Box::new(crate::blk::Blk::new(Box::new(NullDisk(vec![0; 1 << 16])), "fuzz")),
                1 => Box::new(crate::net::Net::new([2, 0, 0, 0, 0, 1])),
                _ => Box::new(crate::rng::Rng::new(Box::new(Zeros))),
            };
            let mut d = MmioDevice::new(0, device);
            for _ in 0..2000 {
                let r = rng.next();
                let reg = regs[(r % regs.len() as u64) as usize];
                let value = match reg {
                    reg::STATUS => [0, 1, 3, 0xb, 0xf, r >> 8][(r >> 4) as usize % 6],
                    reg::QUEUE_NUM => [8, 16, 3, 0, 256, 1000][(r >> 4) as usize % 6],
                    reg::QUEUE_DESC_LOW | reg::QUEUE_DRIVER_LOW | reg::QUEUE_DEVICE_LOW => (r >> 8) % (80 << 10),
                    reg::QUEUE_SEL | reg::QUEUE_NOTIFY => (r >> 8) % 3,
                    _ => r >> 8,
                };
                d.write(reg, 4, value, &mem);
                if r & 0xf == 0 {
                    // The driver scribbles over its rings.
                    let at = rng.next() % (64 << 10);
                    mem.put(at.min((64 << 10) - 8), &rng.next().to_le_bytes());
                }
                if r & 0x3f == 1 {
                    d.receive(&[0xff; 60], &mem);
                }
                let _ = d.read(rng.next() % 0x200, 4);
                d.device_mut().take_transmitted();
                // A device that needs a reset stays stopped until the driver resets it.
                if d.status() & status::DEVICE_NEEDS_RESET != 0 {
                    assert!(!d.running());
                }
            }
        }
    }
}
