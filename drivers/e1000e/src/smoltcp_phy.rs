//! The `hal::EthernetDevice` token contract under smoltcp's `phy::Device`:
//! a newtype adapter (no allocation, no copy) over the driver and its
//! simulated device, and smoltcp answering ARP and ping through it —
//! including the reply sent from inside the receive token's closure.

use hal::{EthernetDevice, host::HostHal};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress,
    Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr,
};

use crate::E1000e;
use crate::sim::Sim;

struct Phy<'d, D: EthernetDevice>(&'d mut D);
struct Rx<T>(T);
struct Tx<T>(T);

impl<D: EthernetDevice> phy::Device for Phy<'_, D> {
    type RxToken<'a>
        = Rx<D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.0.receive().map(|(rx, tx)| (Rx(rx), Tx(tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        self.0.transmit().map(Tx)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.0.max_frame_len();
        c
    }
}

impl<T: hal::RxToken> phy::RxToken for Rx<T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        self.0.consume(f)
    }
}

impl<T: hal::TxToken> phy::TxToken for Tx<T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.consume(len, f)
    }
}

const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const OUR_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);

fn ethernet(dst: EthernetAddress, ethertype: EthernetProtocol, payload_len: usize, fill: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let repr = EthernetRepr { src_addr: GATEWAY_MAC, dst_addr: dst, ethertype };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf);
    repr.emit(&mut frame);
    fill(frame.payload_mut());
    buf
}

fn arp_request() -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GATEWAY_MAC,
        source_protocol_addr: GATEWAY_IP,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: OUR_IP,
    };
    ethernet(EthernetAddress::BROADCAST, EthernetProtocol::Arp, arp.buffer_len(), |p| arp.emit(&mut ArpPacket::new_unchecked(p)))
}

fn ping(to: EthernetAddress, seq_no: u16) -> Vec<u8> {
    let data = b"mantle ping";
    let icmp = Icmpv4Repr::EchoRequest { ident: 0x4d54, seq_no, data };
    let ip = Ipv4Repr {
        src_addr: GATEWAY_IP,
        dst_addr: OUR_IP,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    ethernet(to, EthernetProtocol::Ipv4, ip.buffer_len() + icmp.buffer_len(), |p| {
        let caps = ChecksumCapabilities::default();
        let mut packet = Ipv4Packet::new_unchecked(p);
        ip.emit(&mut packet, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(packet.payload_mut()), &caps);
    })
}

#[test]
fn smoltcp_answers_arp_and_ping_through_the_driver() {
    let sim = Sim::new();
    let mut dev: E1000e<HostHal, &Sim> = E1000e::new(&sim).unwrap();
    let mac = EthernetAddress(dev.mac_address().0);
    let mut phy = Phy(&mut dev);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut phy, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(OUR_IP), 24)).unwrap());
    let mut sockets = SocketSet::new(vec![]);

    // ARP: the reply is built inside the receive token's closure.
    assert!(sim.deliver(&arp_request(), 0));
    iface.poll(Instant::from_millis(1), &mut phy, &mut sockets);
    let sent = std::mem::take(&mut sim.state.borrow_mut().sent);
    assert_eq!(sent.len(), 1, "one ARP reply");
    let frame = EthernetFrame::new_checked(&sent[0][..]).unwrap();
    assert_eq!((frame.dst_addr(), frame.src_addr(), frame.ethertype()), (GATEWAY_MAC, mac, EthernetProtocol::Arp));
    let arp = ArpRepr::parse(&ArpPacket::new_checked(frame.payload()).unwrap()).unwrap();
    assert!(matches!(arp, ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_protocol_addr, .. } if source_protocol_addr == OUR_IP));

    // 200 pings: both rings wrap; every echo comes back byte-exact.
    for seq in 0..200u16 {
        assert!(sim.deliver(&ping(mac, seq), 0));
        iface.poll(Instant::from_millis(2 + seq as i64), &mut phy, &mut sockets);
    }
    let sent = std::mem::take(&mut sim.state.borrow_mut().sent);
    assert_eq!(sent.len(), 200);
    for (seq, reply) in sent.iter().enumerate() {
        let frame = EthernetFrame::new_checked(&reply[..]).unwrap();
        let ip = Ipv4Packet::new_checked(frame.payload()).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (OUR_IP, GATEWAY_IP));
        let icmp = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ip.payload()).unwrap(), &ChecksumCapabilities::default()).unwrap();
        assert_eq!(icmp, Icmpv4Repr::EchoReply { ident: 0x4d54, seq_no: seq as u16, data: b"mantle ping" });
    }
    let c = dev.counters();
    assert_eq!((c.rx_frames, c.tx_frames, c.rx_dropped, c.tx_errors), (201, 201, 0, 0));
}
