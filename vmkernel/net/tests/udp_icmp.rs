//! UDP, ICMP (ping), DHCP and fragment reassembly over an in-memory Ethernet link.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vmk_net::{AddressMode, Errno, NetConfig, SocketKind, events, msg, opt};

#[test]
fn udp_echo_over_the_link_and_loopback() {
    let mut net = Net::new();
    let server = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(server, sa(Ipv4Addr::UNSPECIFIED, 7)).unwrap();
    let client = net.a.socket(SocketKind::Datagram, 0).unwrap();
    // sendto on an unbound socket binds an ephemeral port.
    assert_eq!(net.a.send_to(client, b"ping 1", Some(sa(B_IP, 7)), 0).unwrap(), 6);
    let port = net.a.local_addr(client).unwrap().port();
    assert!(port >= 32768);
    net.run_until(1_000, |n| n.b.readiness(server).unwrap().events & events::IN != 0);
    let mut buf = [0u8; 64];
    let r = net.b.recv_from(server, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"ping 1");
    assert_eq!(r.from, Some(sa(A_IP, port)));
    net.b.send_to(server, &buf[..r.len], r.from, 0).unwrap();
    net.run_until(1_000, |n| n.a.readiness(client).unwrap().events & events::IN != 0);
    let r = net.a.recv_from(client, &mut buf, 0).unwrap();
    assert_eq!((&buf[..r.len], r.from), (&b"ping 1"[..], Some(sa(B_IP, 7))));
    assert_errno(net.a.recv_from(client, &mut buf, 0), Errno::EAGAIN);

    // The same server socket answers on loopback (bound to 0.0.0.0).
    let local = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.send_to(local, b"via lo", Some(sa(Ipv4Addr::LOCALHOST, 7)), 0).unwrap();
    net.run(20);
    let r = net.b.recv_from(server, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"via lo");
    assert_eq!(*r.from.unwrap().ip(), Ipv4Addr::LOCALHOST);
    assert!(net.b.proc_net_udp().contains(":0007 00000000:0000 07 "));
}

#[test]
fn udp_peek_truncation_and_connected_filtering() {
    let mut net = Net::new();
    let s = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(s, sa(B_IP, 5353)).unwrap();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.connect(c, sa(B_IP, 5353)).unwrap();
    assert_eq!(net.a.peer_addr(c).unwrap(), sa(B_IP, 5353));
    // getsockname shows the source address the route to the peer uses.
    assert_eq!(*net.a.local_addr(c).unwrap().ip(), A_IP);
    let lo = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.connect(lo, sa(Ipv4Addr::LOCALHOST, 53)).unwrap();
    assert_eq!(*net.a.local_addr(lo).unwrap().ip(), Ipv4Addr::LOCALHOST);
    net.a.send(c, b"abcdefgh", 0).unwrap();
    net.run(20);
    assert_eq!(net.b.pending_input(s).unwrap(), 8, "FIONREAD is the next datagram's size");
    let mut small = [0u8; 3];
    let r = net.b.recv_from(s, &mut small, msg::PEEK).unwrap();
    assert_eq!((&small[..], r.full_len), (&b"abc"[..], 8));
    // Truncated read: the rest of the datagram is gone.
    let r = net.b.recv_from(s, &mut small, 0).unwrap();
    assert_eq!((r.len, r.full_len), (3, 8));
    assert_errno(net.b.recv_from(s, &mut small, 0), Errno::EAGAIN);

    // A connected socket only receives from its peer.
    let stranger = net.b.socket(SocketKind::Datagram, 0).unwrap();
    let a_port = net.a.local_addr(c).unwrap().port();
    net.b.send_to(stranger, b"spam", Some(sa(A_IP, a_port)), 0).unwrap();
    net.b.send_to(s, b"answer", Some(sa(A_IP, a_port)), 0).unwrap();
    net.run(20);
    let mut buf = [0u8; 16];
    let r = net.a.recv_from(c, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"answer");
    assert_errno(net.a.recv_from(c, &mut buf, 0), Errno::EAGAIN);
    assert!(net.a.proc_net_udp().contains(&format!("{:08X}:1 ", 0)) || net.a.proc_net_udp().contains(" 01 "));

    // Errors: no destination, broadcast without SO_BROADCAST, oversized datagram.
    let u = net.a.socket(SocketKind::Datagram, 0).unwrap();
    assert_errno(net.a.send(u, b"x", 0), Errno::EDESTADDRREQ);
    assert_errno(net.a.send_to(u, b"x", Some(sa(Ipv4Addr::BROADCAST, 9)), 0), Errno::EACCES);
    net.a.setsockopt(u, opt::SOL_SOCKET, opt::SO_BROADCAST, &int(1)).unwrap();
    net.a.send_to(u, b"x", Some(sa(Ipv4Addr::BROADCAST, 9)), 0).unwrap();
    assert_errno(net.a.send_to(u, &vec![0; 70_000], Some(sa(B_IP, 9)), 0), Errno::EMSGSIZE);
}

#[test]
fn large_udp_datagrams_are_fragmented_and_reassembled() {
    let mut net = Net::new();
    let s = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(s, sa(Ipv4Addr::UNSPECIFIED, 9000)).unwrap();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    let payload = pattern(6000, 5);
    net.a.send_to(c, &payload, Some(sa(B_IP, 9000)), 0).unwrap();
    let frames_before = net.a.interface("vmk0").unwrap().counters.tx_packets;
    net.run_until(1_000, |n| n.b.readiness(s).unwrap().events & events::IN != 0);
    let frames = net.a.interface("vmk0").unwrap().counters.tx_packets - frames_before;
    assert!(frames >= 5, "6000 bytes should take 5 fragments, took {frames} frames");
    let mut buf = vec![0u8; 8000];
    let r = net.b.recv_from(s, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], &payload[..]);
    // The largest datagram the fragmentation buffer takes arrives whole; one byte more
    // is refused rather than lost.
    let max = vmk_net::socket::MAX_FRAGMENTED_UDP;
    let big = pattern(max, 11);
    net.a.send_to(c, &big, Some(sa(B_IP, 9000)), 0).unwrap();
    net.run_until(1_000, |n| n.b.readiness(s).unwrap().events & events::IN != 0);
    let mut buf = vec![0u8; 20_000];
    let r = net.b.recv_from(s, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], &big[..]);
    assert_errno(net.a.send_to(c, &pattern(max + 1, 1), Some(sa(B_IP, 9000)), 0), Errno::EMSGSIZE);
}

#[test]
fn raw_icmp_ping_gets_echo_replies_with_ip_header() {
    let mut net = Net::new();
    let p = net.a.socket(SocketKind::RawIcmp, 0).unwrap();
    for (seq, target) in [(1u16, B_IP), (2, Ipv4Addr::LOCALHOST), (3, A_IP)] {
        let req = echo_request(0x4d4e, seq, b"mantle ping payload");
        assert_eq!(net.a.send_to(p, &req, Some(sa(target, 0)), 0).unwrap(), req.len());
        net.run_until(1_000, |n| n.a.readiness(p).unwrap().events & events::IN != 0);
        let mut buf = [0u8; 128];
        let mut reply = None;
        // Over loopback the request itself is seen too; ping skips it by type.
        while let Ok(r) = net.a.recv_from(p, &mut buf, 0) {
            let hlen = usize::from(buf[0] & 0xf) * 4;
            assert_eq!(buf[0] >> 4, 4);
            assert_eq!(checksum(&buf[..20]), 0, "IP header checksum");
            if buf[hlen] == 0 {
                reply = Some((r, buf[..r.len].to_vec()));
            }
        }
        let (r, pkt) = reply.unwrap_or_else(|| panic!("no echo reply from {target}"));
        assert_eq!(*r.from.unwrap().ip(), target);
        assert_eq!(u16::from_be_bytes([pkt[24], pkt[25]]), 0x4d4e);
        assert_eq!(u16::from_be_bytes([pkt[26], pkt[27]]), seq);
        assert_eq!(&pkt[28..], b"mantle ping payload");
        assert_eq!(&pkt[12..16], &target.octets());
    }
}

#[test]
fn ping_socket_returns_icmp_without_header() {
    let mut net = Net::new();
    let p = net.a.socket(SocketKind::PingIcmp, 0).unwrap();
    net.a.send_to(p, &echo_request(7, 1, b"abc"), Some(sa(B_IP, 0)), 0).unwrap();
    net.run_until(1_000, |n| n.a.readiness(p).unwrap().events & events::IN != 0);
    let mut buf = [0u8; 64];
    let r = net.a.recv_from(p, &mut buf, 0).unwrap();
    assert_eq!(r.len, 11);
    assert_eq!(buf[0], 0, "echo reply");
    assert_errno(net.a.send_to(p, &[8, 0], Some(sa(B_IP, 0)), 0), Errno::EINVAL);
}

/// A small DHCP server on host B, speaking through B's own UDP socket API.
fn serve_dhcp(net: &mut Net, server: vmk_net::SocketId, offered: Ipv4Addr) -> usize {
    use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};
    let mut answered = 0;
    let mut buf = [0u8; 1500];
    while let Ok(r) = net.b.recv_from(server, &mut buf, 0) {
        let packet = DhcpPacket::new_checked(&buf[..r.len]).unwrap();
        let request = DhcpRepr::parse(&packet).unwrap();
        let reply_type = match request.message_type {
            DhcpMessageType::Discover => DhcpMessageType::Offer,
            DhcpMessageType::Request => DhcpMessageType::Ack,
            _ => continue,
        };
        let reply = DhcpRepr {
            message_type: reply_type,
            transaction_id: request.transaction_id,
            secs: 0,
            client_hardware_address: request.client_hardware_address,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: offered,
            server_ip: B_IP,
            router: Some(B_IP),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: true,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(B_IP),
            parameter_request_list: None,
            dns_servers: Some([Ipv4Addr::new(10, 0, 0, 53)].into_iter().collect()),
            max_size: None,
            lease_duration: Some(3600),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut out = vec![0u8; reply.buffer_len()];
        reply.emit(&mut DhcpPacket::new_unchecked(&mut out[..])).unwrap();
        net.b.send_to(server, &out, Some(sa(Ipv4Addr::BROADCAST, 68)), 0).unwrap();
        answered += 1;
    }
    answered
}

#[test]
fn dhcp_configures_vmk0_and_static_config_applies_without_reboot() {
    let mut net = Net::new();
    let server = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.setsockopt(server, opt::SOL_SOCKET, opt::SO_BROADCAST, &int(1)).unwrap();
    net.b.bind(server, sa(Ipv4Addr::UNSPECIFIED, 67)).unwrap();
    let vmk0 = net.a.if_index("vmk0").unwrap();
    net.a.configure(vmk0, &NetConfig::default()).unwrap();
    assert_eq!(net.a.interface("vmk0").unwrap().ipv4, None);
    let offered = Ipv4Addr::new(10, 0, 0, 15);
    let mut answered = 0;
    net.run_until(30_000, |n| {
        answered += serve_dhcp(n, server, offered);
        n.a.interface("vmk0").unwrap().ipv4.is_some()
    });
    assert!(answered >= 2, "offer and ack");
    let info = net.a.interface("vmk0").unwrap();
    assert_eq!(info.ipv4, Some((offered, 24)));
    assert_eq!(info.gateway, Some(B_IP));
    assert_eq!(info.netmask(), Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(info.broadcast, Some(Ipv4Addr::new(10, 0, 0, 255)));
    assert_eq!(info.config.as_ref().unwrap().mode, AddressMode::Dhcp);
    assert_eq!(net.a.dns_servers(), vec![Ipv4Addr::new(10, 0, 0, 53)]);
    assert!(net.a.resolv_conf().contains("nameserver 10.0.0.53\n"));
    let route = net.a.proc_net_route();
    assert!(route.contains("vmk0\t00000000\t0200000A\t0003\t"), "{route}");
    assert!(route.contains("vmk0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t"), "{route}");
    // The leased address works: B reaches A by TCP.
    let l = listener(&mut net.a, sa(Ipv4Addr::UNSPECIFIED, 22), 2);
    let c = net.b.socket(SocketKind::Stream, 0).unwrap();
    let _ = net.b.connect(c, sa(offered, 22));
    net.run_until(2_000, |n| n.b.finish_connect(c).is_ok());
    net.run_until(1_000, |n| n.a.accept(l).is_ok());

    // Switch to a static address at run time: in force at once, DHCP stops.
    let text = "mode=static\naddress=10.0.0.77/24\ngateway=10.0.0.2\ndns=10.0.0.2\n";
    net.a.configure(vmk0, &NetConfig::parse_conf(text).unwrap()).unwrap();
    let info = net.a.interface("vmk0").unwrap();
    assert_eq!(info.ipv4, Some((Ipv4Addr::new(10, 0, 0, 77), 24)));
    assert_eq!(net.a.dns_servers(), vec![Ipv4Addr::new(10, 0, 0, 2)]);
    let p = net.b.socket(SocketKind::RawIcmp, 0).unwrap();
    net.b.send_to(p, &echo_request(1, 1, b"x"), Some(sa(Ipv4Addr::new(10, 0, 0, 77), 0)), 0).unwrap();
    // smoltcp sends at most one ARP request per second per interface, and B asked for
    // A's DHCP address just before: the answer may take a second.
    net.run_until(3_000, |n| n.b.readiness(p).unwrap().events & events::IN != 0);
    assert!(net.b.recv_from(p, &mut [0u8; 64], 0).is_ok());
    assert_errno(net.a.configure(1, &NetConfig::default()), Errno::EINVAL);
    assert_errno(net.a.configure(9, &NetConfig::default()), Errno::ENODEV);
}

#[test]
fn large_pings_are_fragmented_reassembled_and_answered() {
    let mut net = Net::new();
    let p = net.a.socket(SocketKind::RawIcmp, 0).unwrap();
    let payload = pattern(4000, 21);
    net.a.send_to(p, &echo_request(0x77, 1, &payload), Some(sa(B_IP, 0)), 0).unwrap();
    net.run_until(1_000, |n| n.a.readiness(p).unwrap().events & events::IN != 0);
    let mut buf = vec![0u8; 8192];
    let r = net.a.recv_from(p, &mut buf, 0).unwrap();
    assert_eq!(r.len, 20 + 8 + 4000);
    assert_eq!(buf[20], 0, "echo reply");
    assert_eq!(&buf[28..r.len], &payload[..]);
    assert_eq!(checksum(&buf[20..r.len]), 0, "ICMP checksum of the reassembled reply");
}

#[test]
fn connected_udp_learns_port_unreachable_as_econnrefused() {
    let mut net = Net::new();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.connect(c, sa(B_IP, 9999)).unwrap();
    net.a.send(c, b"anyone?", 0).unwrap();
    net.run_until(1_000, |n| n.a.readiness(c).unwrap().events & events::ERR != 0);
    assert_errno(net.a.recv_from(c, &mut [0u8; 16], 0), Errno::ECONNREFUSED);
    assert_errno(net.a.recv_from(c, &mut [0u8; 16], 0), Errno::EAGAIN);
    // Unconnected sockets ignore such errors, as on Linux.
    let u = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.send_to(u, b"anyone?", Some(sa(B_IP, 9999)), 0).unwrap();
    net.run(100);
    assert_eq!(net.a.readiness(u).unwrap().events & events::ERR, 0);
    assert_errno(net.a.recv_from(u, &mut [0u8; 16], 0), Errno::EAGAIN);
    // And over loopback.
    let l = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.connect(l, sa(std::net::Ipv4Addr::LOCALHOST, 9998)).unwrap();
    net.a.send(l, b"x", 0).unwrap();
    net.run(50);
    assert_errno(net.a.send(l, b"x", 0), Errno::ECONNREFUSED);
    for s in [c, u, l] {
        net.a.close(s).unwrap();
    }
    assert_eq!(net.a.budget_used(), 0);
}

/// Two sockets bound to 127.0.0.1 echo on loopback, the server on a port
/// another socket held (and closed) just before — the sequence `ipcecho`
/// uses to pick the server's port.
#[test]
fn udp_echo_between_loopback_sockets_on_a_reused_port() {
    let mut net = Net::new();
    let probe = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(probe, sa(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = net.b.local_addr(probe).unwrap().port();
    net.b.close(probe).unwrap();
    let server = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(server, sa(Ipv4Addr::LOCALHOST, port)).unwrap();
    let client = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(client, sa(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..3 {
        net.b.send_to(client, b"hello", Some(sa(Ipv4Addr::LOCALHOST, port)), 0).unwrap();
        net.run(20);
        let r = net.b.recv_from(server, &mut buf, 0).unwrap_or_else(|e| panic!("round {i}: server: {e:?}"));
        let from = r.from.unwrap();
        net.b.send_to(server, &buf[..r.len], Some(from), 0).unwrap_or_else(|e| panic!("round {i}: reply to {from}: {e:?}"));
        net.run(20);
        let r = net.b.recv_from(client, &mut buf, 0).unwrap_or_else(|e| panic!("round {i}: client: {e:?}"));
        assert_eq!(&buf[..r.len], b"hello");
    }
}

/// A datagram sent just before its socket closes still goes out (on Linux it
/// is out when sendto returns): the closed socket's smoltcp socket lingers
/// until its queue drains.
#[test]
fn udp_close_sends_queued_datagrams_first() {
    let mut net = Net::new();
    let server = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(server, sa(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let client = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(client, sa(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = net.b.local_addr(client).unwrap().port();
    net.b.send_to(server, b"last", Some(sa(Ipv4Addr::LOCALHOST, port)), 0).unwrap();
    net.b.close(server).unwrap();
    net.run(20);
    let mut buf = [0u8; 16];
    let r = net.b.recv_from(client, &mut buf, 0).expect("the last reply");
    assert_eq!(&buf[..r.len], b"last");
}

/// Over Ethernet the first datagram to a neighbour waits for ARP: closing the
/// socket meanwhile still delivers it, and the lingering socket is released
/// (budget back to zero) once it is out.
#[test]
fn udp_close_on_ethernet_sends_after_arp_resolves() {
    let mut net = Net::new();
    let server = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(server, sa(Ipv4Addr::UNSPECIFIED, 7000)).unwrap();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.send_to(c, b"bye", Some(sa(B_IP, 7000)), 0).unwrap();
    net.a.close(c).unwrap();
    assert!(net.a.budget_used() > 0, "the queued datagram's socket lingers");
    net.run_until(2_000, |n| n.b.readiness(server).unwrap().events & events::IN != 0);
    let mut buf = [0u8; 16];
    let r = net.b.recv_from(server, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"bye");
    net.run(20);
    assert_eq!(net.a.budget_used(), 0, "released once its queue drained");
}

/// Datagrams to a neighbour that never answers ARP: the lingering sockets are
/// bounded in number, give way to new sockets under budget pressure, are
/// released after LINGER_TIMEOUT or at once when the link goes down, and a
/// socket explicitly bound to a lingering socket's port receives on it.
#[test]
fn lingering_udp_sockets_are_bounded_and_released() {
    let nobody = Ipv4Addr::new(10, 0, 0, 99);
    let per_socket = 64 * 1024 + 16 * 1024;
    // Budget for two open wildcard sockets only: lingering ones must give way.
    let cfg = vmk_net::StackConfig { buffer_budget: 2 * (2 * per_socket + 2048), ..Default::default() };
    let mut net = Net::with_config(cfg, vmk_net::StackConfig::default());
    for i in 0..1000 {
        let s = net.a.socket(SocketKind::Datagram, 0).unwrap_or_else(|e| panic!("socket {i}: {e:?}"));
        net.a.send_to(s, b"x", Some(sa(nobody, 9)), 0).unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        net.a.close(s).unwrap();
        if i % 100 == 0 {
            net.step();
        }
    }
    assert!(net.a.budget_used() <= 2 * (2 * per_socket + 2048));
    net.run(vmk_net::socket::LINGER_TIMEOUT.total_millis() + 100);
    assert_eq!(net.a.budget_used(), 0, "released after LINGER_TIMEOUT");

    // Without budget pressure the count is bounded.
    let mut net = Net::new();
    for _ in 0..200 {
        let s = net.a.socket(SocketKind::Datagram, 0).unwrap();
        net.a.send_to(s, b"x", Some(sa(nobody, 9)), 0).unwrap();
        net.a.close(s).unwrap();
    }
    assert!(net.a.budget_used() <= vmk_net::socket::MAX_LINGERING * per_socket, "{}", net.a.budget_used());
    assert!(net.a.budget_used() > 0);
    net.a.set_link(2, false).unwrap();
    assert_eq!(net.a.budget_used(), 0, "a downed link releases them at once");
    net.a.set_link(2, true).unwrap();

    // Rebinding a lingering socket's port takes the port over.
    let s = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.bind(s, sa(Ipv4Addr::UNSPECIFIED, 5000)).unwrap();
    net.a.send_to(s, b"x", Some(sa(nobody, 9)), 0).unwrap();
    net.a.close(s).unwrap();
    let s = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.bind(s, sa(Ipv4Addr::UNSPECIFIED, 5000)).unwrap();
    let b = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.send_to(b, b"to 5000", Some(sa(A_IP, 5000)), 0).unwrap();
    net.run_until(2_000, |n| n.a.readiness(s).unwrap().events & events::IN != 0);
    let mut buf = [0u8; 16];
    let r = net.a.recv_from(s, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"to 5000");
}
