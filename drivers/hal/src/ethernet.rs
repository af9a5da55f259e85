//! What a NIC driver offers the network stack.
//!
//! The token interface mirrors smoltcp's `phy::Device`: `receive` yields a
//! received frame (still in the driver's ring buffer) plus a transmit
//! token, `transmit` a transmit token alone; consuming a token hands the
//! closure the ring buffer itself. A smoltcp wrapper is newtypes around
//! these tokens: no allocation, no copy.

use core::fmt;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Neither all zeroes nor a group (multicast/broadcast) address: what a
    /// device's own address must be.
    pub fn is_valid_unicast(&self) -> bool {
        self.0 != [0; 6] && self.0[0] & 1 == 0
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Traffic counters since the driver started (`/proc/net/dev`, `vmkcli net`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames the device or driver dropped (no buffer, bad length, error bits).
    pub rx_dropped: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames that could not be sent (too long, or no transmit buffer free).
    pub tx_errors: u64,
    pub interrupts: u64,
}

/// Why the device interrupted (after `acknowledge_interrupt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptCause {
    /// Frames arrived.
    pub rx: bool,
    /// Transmit buffers were released.
    pub tx: bool,
    /// The link went up or down, or the configuration changed.
    pub link: bool,
    /// Anything else the device reported.
    pub other: bool,
}

impl InterruptCause {
    pub fn any(&self) -> bool {
        self.rx || self.tx || self.link || self.other
    }
}

/// A received frame, still in the driver's receive ring.
pub trait RxToken {
    /// Calls `f` with the frame; the buffer goes back to the device afterwards.
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// A free transmit buffer.
pub trait TxToken {
    /// Calls `f` to fill `len` bytes of frame, then sends them. A `len`
    /// beyond [`EthernetDevice::max_frame_len`] is a caller bug: `f` gets a
    /// buffer cut to the maximum and nothing is sent (counted in
    /// `tx_errors`).
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;
}

/// A driven Ethernet NIC.
pub trait EthernetDevice {
    type RxToken<'a>: RxToken
    where
        Self: 'a;
    type TxToken<'a>: TxToken
    where
        Self: 'a;

    /// The next received frame and a transmit token for a reply, if a
    /// frame is waiting. Should no transmit buffer be free when that token
    /// is consumed, the reply is built in a scratch buffer and dropped
    /// (counted in `tx_errors`), as a full queue on a real link would.
    fn receive(&mut self) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)>;

    /// A transmit token, if a transmit buffer is free (completed
    /// transmissions are reclaimed here).
    fn transmit(&mut self) -> Option<Self::TxToken<'_>>;

    fn mac_address(&self) -> MacAddress;

    /// Whether the link is up (read from the device now).
    fn link_up(&mut self) -> bool;

    /// The longest frame the device takes, without the FCS (1514 for a
    /// 1500-byte MTU).
    fn max_frame_len(&self) -> usize {
        1514
    }

    /// Reads and clears the device's interrupt cause (call from the
    /// interrupt path, then poll with `receive`/`transmit`).
    fn acknowledge_interrupt(&mut self) -> InterruptCause;

    /// Lets the device interrupt, or stops it (while the stack polls).
    fn set_interrupts_enabled(&mut self, enabled: bool);

    /// From the interrupt path: masks the device's receive and transmit
    /// interrupts if the device can do that without a register access, so
    /// the stack polls the rings until they are empty instead of taking
    /// an interrupt per frame (Linux's NAPI). True if masked; then
    /// [`EthernetDevice::unmask_after_polling`] must follow once the
    /// stack has nothing more to receive.
    fn mask_while_polling(&mut self) -> bool {
        false
    }

    /// Lets interrupts in again after [`EthernetDevice::mask_while_polling`]:
    /// true if a frame is waiting already (it may have arrived while
    /// interrupts were masked: poll again rather than wait).
    fn unmask_after_polling(&mut self) -> bool {
        self.set_interrupts_enabled(true);
        false
    }

    fn counters(&self) -> Counters;

    /// A short model name for logs and `vmkcli net` ("virtio-net", "e1000e").
    fn model(&self) -> &'static str;
}

/// Copies the next received frame into `buf`: its length, or `None` if no
/// frame is waiting. A frame longer than `buf` is cut short (and its
/// whole length returned). For tests and simple users; the stack uses the
/// tokens.
pub fn receive_into<D: EthernetDevice>(dev: &mut D, buf: &mut [u8]) -> Option<usize> {
    let (rx, _tx) = dev.receive()?;
    Some(rx.consume(|frame| {
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        frame.len()
    }))
}

/// Sends `frame` (without FCS). `false` if no transmit buffer is free or
/// it is longer than the device takes.
pub fn transmit_frame<D: EthernetDevice>(dev: &mut D, frame: &[u8]) -> bool {
    if frame.len() > dev.max_frame_len() {
        return false;
    }
    match dev.transmit() {
        Some(tx) => {
            tx.consume(frame.len(), |buf| buf.copy_from_slice(frame));
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_address_display_and_validity() {
        let m = MacAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(m.to_string(), "52:54:00:12:34:56");
        assert!(m.is_valid_unicast());
        assert!(!MacAddress([0xff; 6]).is_valid_unicast());
        assert!(!MacAddress([0; 6]).is_valid_unicast());
        assert!(!MacAddress([1, 0, 0x5e, 0, 0, 1]).is_valid_unicast());
    }
}
