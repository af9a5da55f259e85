//! vmk0's device under smoltcp: a handle on a NIC in `nic::NICS`.
//!
//! The NIC stays in `NICS` (its interrupt handler acknowledges it there);
//! each token takes the lock only while it touches the driver. A received
//! frame is copied into the port's buffer so the receive token holds no
//! lock while smoltcp answers it through the transmit token (which
//! smoltcp consumes inside the receive closure). Kernel code runs with
//! interrupts off, so the handler never interrupts a holder of the lock
//! on its own CPU.
//!
//! With the NIC as vSwitch0's uplink, the port sorts what the NIC
//! receives (`vswitch::classify_from_nic`): frames only for VMs go to the
//! switch and smoltcp never sees them; frames VMs sent to vmk0 come in
//! first; and what vmk0 transmits is shown to the switch (copies for VMs).

use alloc::boxed::Box;

use hal::{EthernetDevice, MacAddress, TxToken as _};
use vmk_net::smoltcp::phy::{self, DeviceCapabilities, Medium};
use vmk_net::smoltcp::time::Instant;

use super::vswitch;
use crate::nic::{Driver, NICS};

/// The longest Ethernet frame (without FCS) the ports take.
const MAX_FRAME: usize = 1514;

pub struct NicPort {
    index: usize,
    max_frame: usize,
    rx_buf: Box<[u8; MAX_FRAME]>,
}

impl NicPort {
    /// The first driven NIC, with its MAC address.
    pub fn first() -> Option<(NicPort, MacAddress)> {
        let nics = NICS.lock();
        let nic = nics.first()?;
        let max_frame = crate::nic::with_driver!(&nic.driver, d => d.max_frame_len()).min(MAX_FRAME);
        Some((NicPort { index: 0, max_frame, rx_buf: Box::new([0; MAX_FRAME]) }, nic.mac_address()))
    }
}

/// Whether NIC `index`'s link is up.
pub fn link_up(index: usize) -> bool {
    NICS.lock().get_mut(index).is_some_and(|n| n.link_up())
}

/// Frames NIC `index` has received so far.
pub fn rx_frames(index: usize) -> u64 {
    NICS.lock().get(index).map_or(0, |n| n.counters().rx_frames)
}

pub fn set_interrupts_enabled(index: usize, enabled: bool) {
    if let Some(n) = NICS.lock().get_mut(index) {
        n.set_interrupts_enabled(enabled);
    }
}

pub struct Rx<'a> {
    frame: &'a [u8],
}

pub struct Tx {
    index: usize,
}

impl phy::Device for NicPort {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Rx<'_>, Tx)> {
        if let Some(f) = vswitch::take_for_vmk0() {
            let len = f.len().min(self.rx_buf.len());
            self.rx_buf[..len].copy_from_slice(&f[..len]);
            return Some((Rx { frame: &self.rx_buf[..len] }, Tx { index: self.index }));
        }
        // Frames only for VMs are handed on; a bounded number per call so
        // smoltcp's poll returns to its other work.
        for _ in 0..64 {
            let len = NICS.lock().get_mut(self.index)?.receive_into(&mut self.rx_buf[..])?;
            let frame = self.rx_buf.get(..len)?;
            let (for_vmk0, for_switch) = vswitch::classify_from_nic(frame);
            if for_switch {
                vswitch::from_uplink(frame);
            }
            if for_vmk0 {
                let frame = self.rx_buf.get(..len)?;
                return Some((Rx { frame }, Tx { index: self.index }));
            }
        }
        // More may wait in the ring: poll again soon.
        super::kick();
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        let mut nics = NICS.lock();
        let nic = nics.get_mut(self.index)?;
        let free = crate::nic::with_driver!(&mut nic.driver, d => d.transmit().is_some());
        free.then_some(Tx { index: self.index })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.max_frame;
        c.max_burst_size = Some(32);
        c
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Shows the built frame to the switch (VMs on the host hear vmk0).
        let f = |buf: &mut [u8]| {
            let r = f(buf);
            vswitch::from_vmk0(buf);
            r
        };
        let mut nics = NICS.lock();
        if let Some(nic) = nics.get_mut(self.index) {
            match &mut nic.driver {
                Driver::VirtioNet(d) => {
                    if let Some(t) = d.transmit() {
                        return t.consume(len, f);
                    }
                }
                Driver::E1000e(d) => {
                    if let Some(t) = d.transmit() {
                        return t.consume(len, f);
                    }
                }
            }
        }
        // The buffer `transmit` saw was taken meanwhile (cannot happen with
        // one network world): build the frame and drop it, as a full queue
        // on a real link would.
        drop(nics);
        let mut scratch = alloc::vec![0u8; len];
        f(&mut scratch)
    }
}
