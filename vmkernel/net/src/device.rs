//! Devices under the interfaces: a bounded loopback queue and a counting wrapper that
//! gives every Ethernet device the counters `/proc/net/dev` prints.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Per-interface packet counters (the columns of `/proc/net/dev` Mantle fills).
#[derive(Default, Debug)]
pub struct IfStats {
    /// Bytes received.
    pub rx_bytes: Cell<u64>,
    /// Frames received.
    pub rx_packets: Cell<u64>,
    /// Multicast/broadcast frames received.
    pub rx_multicast: Cell<u64>,
    /// Bytes transmitted.
    pub tx_bytes: Cell<u64>,
    /// Frames transmitted.
    pub tx_packets: Cell<u64>,
    /// Frames dropped on transmit (loopback queue full).
    pub tx_dropped: Cell<u64>,
    /// A TCP SYN (connection request) was received since the stack last looked: its
    /// listening pools need topping up.
    pub syn_seen: Cell<bool>,
}

/// Whether an IPv4 packet is a TCP segment with SYN set and ACK clear.
pub fn is_tcp_syn(ip: &[u8]) -> bool {
    let Some(&ver_ihl) = ip.first() else { return false };
    let ihl = usize::from(ver_ihl & 0xf) * 4;
    ver_ihl >> 4 == 4 && ip.get(9) == Some(&6) && ip.get(ihl + 13).is_some_and(|flags| flags & 0x12 == 0x02)
}

impl IfStats {
    fn count_rx(&self, frame: &[u8], ethernet: bool) {
        self.rx_bytes.set(self.rx_bytes.get() + frame.len() as u64);
        self.rx_packets.set(self.rx_packets.get() + 1);
        if ethernet && frame.first().is_some_and(|b| b & 1 == 1) {
            self.rx_multicast.set(self.rx_multicast.get() + 1);
        }
        let ip = match (ethernet, frame.get(12..14), frame.get(14..)) {
            (false, ..) => frame,
            (true, Some([0x08, 0x00]), Some(ip)) => ip,
            _ => return,
        };
        if is_tcp_syn(ip) {
            self.syn_seen.set(true);
        }
    }
    fn count_tx(&self, len: usize) {
        self.tx_bytes.set(self.tx_bytes.get() + len as u64);
        self.tx_packets.set(self.tx_packets.get() + 1);
    }
}

/// Wraps an Ethernet device and counts what passes through it.
pub struct Counted<D> {
    /// The driver's device.
    pub inner: D,
    /// Its counters.
    pub stats: IfStats,
}

/// Receive token of [`Counted`].
pub struct CountedRx<'a, T> {
    inner: T,
    stats: &'a IfStats,
}

/// Transmit token of [`Counted`].
pub struct CountedTx<'a, T> {
    inner: T,
    stats: &'a IfStats,
}

impl<T: phy::RxToken> phy::RxToken for CountedRx<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let stats = self.stats;
        self.inner.consume(|frame| {
            stats.count_rx(frame, true);
            f(frame)
        })
    }
    fn meta(&self) -> phy::PacketMeta {
        self.inner.meta()
    }
}

impl<T: phy::TxToken> phy::TxToken for CountedTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.stats.count_tx(len);
        self.inner.consume(len, f)
    }
    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.inner.set_meta(meta)
    }
}

impl<D: Device> Device for Counted<D> {
    type RxToken<'a>
        = CountedRx<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = CountedTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let stats = &self.stats;
        let (rx, tx) = self.inner.receive(now)?;
        Some((CountedRx { inner: rx, stats }, CountedTx { inner: tx, stats }))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let stats = &self.stats;
        self.inner.transmit(now).map(|inner| CountedTx { inner, stats })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

/// The loopback interface's MTU (an IP packet's largest size).
pub const LOOPBACK_MTU: usize = 65535;
/// The loopback queue holds at most this many packets ...
const LOOPBACK_MAX_PACKETS: usize = 512;
/// ... and this many bytes; beyond that packets are dropped (and counted), so a
/// sender on loopback cannot grow the heap without bound.
const LOOPBACK_MAX_BYTES: usize = 8 << 20;

/// An IP-medium loopback device with a bounded queue.
#[derive(Default)]
pub struct LoopbackDevice {
    queue: VecDeque<Vec<u8>>,
    queued_bytes: usize,
    /// Its counters (what is sent is received).
    pub stats: IfStats,
}

impl LoopbackDevice {
    /// Whether packets wait to be received (the stack must poll again).
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// Receive token of [`LoopbackDevice`].
pub struct LoopbackRx<'a> {
    packet: Vec<u8>,
    stats: &'a IfStats,
}

/// Transmit token of [`LoopbackDevice`].
pub struct LoopbackTx<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    queued_bytes: &'a mut usize,
    stats: &'a IfStats,
}

impl phy::RxToken for LoopbackRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        self.stats.count_rx(&self.packet, false);
        f(&self.packet)
    }
}

impl phy::TxToken for LoopbackTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        if self.queue.len() >= LOOPBACK_MAX_PACKETS || *self.queued_bytes + len > LOOPBACK_MAX_BYTES {
            self.stats.tx_dropped.set(self.stats.tx_dropped.get() + 1);
        } else {
            self.stats.count_tx(len);
            *self.queued_bytes += len;
            self.queue.push_back(packet);
        }
        result
    }
}

impl Device for LoopbackDevice {
    type RxToken<'a> = LoopbackRx<'a>;
    type TxToken<'a> = LoopbackTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.queue.pop_front()?;
        self.queued_bytes -= packet.len();
        Some((
            LoopbackRx { packet, stats: &self.stats },
            LoopbackTx { queue: &mut self.queue, queued_bytes: &mut self.queued_bytes, stats: &self.stats },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(LoopbackTx { queue: &mut self.queue, queued_bytes: &mut self.queued_bytes, stats: &self.stats })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = LOOPBACK_MTU;
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_packet(flags: u8, ihl_words: u8) -> Vec<u8> {
        let ihl = usize::from(ihl_words) * 4;
        let mut p = vec![0u8; ihl + 20];
        p[0] = 0x40 | ihl_words;
        p[9] = 6;
        p[ihl + 13] = flags;
        p
    }

    #[test]
    fn recognises_syns_only() {
        assert!(is_tcp_syn(&tcp_packet(0x02, 5)));
        assert!(is_tcp_syn(&tcp_packet(0x02, 6)), "with IP options");
        assert!(!is_tcp_syn(&tcp_packet(0x12, 5)), "SYN-ACK");
        assert!(!is_tcp_syn(&tcp_packet(0x10, 5)), "ACK");
        let mut udp = tcp_packet(0x02, 5);
        udp[9] = 17;
        assert!(!is_tcp_syn(&udp));
        assert!(!is_tcp_syn(&tcp_packet(0x02, 5)[..30]), "truncated");
        assert!(!is_tcp_syn(&[]));
        let stats = IfStats::default();
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&tcp_packet(0x02, 5));
        stats.count_rx(&frame, true);
        assert!(stats.syn_seen.get());
        let arp = [0u8; 12].iter().copied().chain([0x08, 0x06]).collect::<Vec<_>>();
        let quiet = IfStats::default();
        quiet.count_rx(&arp, true);
        quiet.count_rx(&[0x08; 13], true);
        assert!(!quiet.syn_seen.get());
    }
}
