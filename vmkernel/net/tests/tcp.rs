//! TCP over an in-memory Ethernet link and over loopback.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vmk_net::{Errno, Shutdown, SocketKind, events, msg, opt};

/// Connects a client on `a` to a listener on `b`, returns (client, server-side).
fn connected_pair(net: &mut Net, port: u16) -> (vmk_net::SocketId, vmk_net::SocketId) {
    let l = listener(&mut net.b, sa(Ipv4Addr::UNSPECIFIED, port), 8);
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.connect(c, sa(B_IP, port)), Errno::EINPROGRESS);
    net.run_until(2_000, |n| n.a.finish_connect(c).is_ok());
    let mut accepted = None;
    net.run_until(2_000, |n| {
        accepted = n.b.accept(l).ok();
        accepted.is_some()
    });
    let (s, peer) = accepted.unwrap();
    assert_eq!(*peer.ip(), A_IP);
    assert_eq!(peer.port(), net.a.local_addr(c).unwrap().port());
    (c, s)
}

#[test]
fn transfers_four_mib_both_ways_with_matching_checksums() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 5001);
    let data = pattern(4 << 20, 7);
    let reply = pattern(1 << 20, 9);
    let (mut sent, mut rsent) = (0, 0);
    let (mut got, mut rgot) = (0usize, 0usize);
    let (mut h, mut rh) = (FNV_INIT, FNV_INIT);
    let mut buf = vec![0u8; 32 << 10];
    let mut rounds = 0;
    while got < data.len() || rgot < reply.len() {
        rounds += 1;
        assert!(rounds < 200_000, "transfer stalled at {got}/{rgot}");
        if sent < data.len() {
            match net.a.send(c, &data[sent..], 0) {
                Ok(n) => sent += n,
                Err(e) => assert_eq!(e, Errno::EAGAIN),
            }
        }
        if rsent < reply.len() {
            match net.b.send(s, &reply[rsent..], 0) {
                Ok(n) => rsent += n,
                Err(e) => assert_eq!(e, Errno::EAGAIN),
            }
        }
        match net.b.recv_from(s, &mut buf, 0) {
            Ok(r) => {
                assert!(r.len > 0, "early EOF");
                h = fnv(&buf[..r.len], h);
                got += r.len;
            }
            Err(e) => assert_eq!(e, Errno::EAGAIN),
        }
        match net.a.recv_from(c, &mut buf, 0) {
            Ok(r) => {
                assert!(r.len > 0, "early EOF");
                rh = fnv(&buf[..r.len], rh);
                rgot += r.len;
            }
            Err(e) => assert_eq!(e, Errno::EAGAIN),
        }
        net.step();
    }
    assert_eq!(got, data.len());
    assert_eq!(h, fnv(&data, FNV_INIT));
    assert_eq!(rh, fnv(&reply, FNV_INIT));
    // Orderly close from both sides: both see EOF, and everything is given back.
    net.a.shutdown(c, Shutdown::Write).unwrap();
    net.run_until(2_000, |n| n.b.recv_from(s, &mut [0u8; 4], 0).map(|r| r.len) == Ok(0));
    net.b.close(s).unwrap();
    net.run_until(2_000, |n| n.a.recv_from(c, &mut [0u8; 4], 0).map(|r| r.len) == Ok(0));
    net.a.close(c).unwrap();
    net.run(15_000);
    assert_eq!(net.a.budget_used(), 0);
}

/// One poll sends what the window allows, not one segment per socket (smoltcp's
/// `poll_egress` sends one per call; the stack calls it again while it sends).
#[test]
fn one_poll_sends_many_segments_of_a_connection() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 5003);
    net.run(50);
    let sent = net.a.device_mut(2).unwrap().sent.clone();
    let data = pattern(32 << 10, 3);
    assert_eq!(net.a.send(c, &data, 0), Ok(data.len()));
    let before = *sent.borrow();
    net.a.poll(net.now);
    let segments = *sent.borrow() - before;
    // 32 KiB in 1460-byte segments: 23 frames.
    assert!(segments >= 20, "one poll sent {segments} frames");
    let mut buf = vec![0u8; 64 << 10];
    let mut got = Vec::new();
    net.run_until(2_000, |n| {
        while let Ok(r) = n.b.recv_from(s, &mut buf, 0) {
            got.extend_from_slice(&buf[..r.len]);
        }
        got.len() == data.len()
    });
    assert_eq!(got, data);
}

/// A retransmitted SYN (the peer's timer fired before the SYN-ACK reached
/// it, as libslirp's does under load) arrives after the first one: the
/// connection it belongs to must survive it (one connection accepted, data
/// flows, no reset) — whether it comes during the handshake or after it,
/// before `accept` (smoltcp gives a SYN to the first socket that accepts
/// it, and the listening pool's idle sockets accept any).
#[test]
fn a_repeated_syn_does_not_reset_the_connection() {
    repeated_syn(false);
    repeated_syn(true);
}

fn repeated_syn(late: bool) {
    let mut net = Net::new();
    let syn;
    // Neighbours known first, so the SYN is the only frame in flight.
    let _ = connected_pair(&mut net, 5004);
    net.run(100);
    let l = listener(&mut net.b, sa(Ipv4Addr::UNSPECIFIED, 5005), 8);
    net.run(10);
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.connect(c, sa(B_IP, 5005)), Errno::EINPROGRESS);
    net.a.poll(net.now);
    {
        let b_dev = net.b.device_mut(2).unwrap();
        let mut q = b_dev.incoming();
        assert_eq!(q.len(), 1, "the SYN");
        syn = q[0].clone();
        if !late {
            q.push_back(syn.clone());
        }
    }
    net.run_until(2_000, |n| n.a.finish_connect(c).is_ok());
    if late {
        // After the handshake, before accept.
        net.b.device_mut(2).unwrap().incoming().push_back(syn);
    }
    let mut accepted = None;
    net.run_until(2_000, |n| {
        accepted = n.b.accept(l).ok();
        accepted.is_some()
    });
    let (s, _) = accepted.unwrap();
    net.run(3_000);
    assert_eq!(net.a.send(c, b"after", 0), Ok(5), "the client's connection is alive");
    let mut buf = [0u8; 16];
    let mut got = 0;
    net.run_until(2_000, |n| {
        if let Ok(r) = n.b.recv_from(s, &mut buf, 0) {
            got = r.len;
        }
        got > 0
    });
    assert_eq!(&buf[..got], b"after");
    assert_errno(net.b.accept(l), Errno::EAGAIN);
}

#[test]
fn backlog_of_64_pending_connections_is_all_accepted() {
    let mut net = Net::new();
    let l = listener(&mut net.b, sa(B_IP, 80), 64);
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let c = net.a.socket(SocketKind::Stream, 0).unwrap();
            assert_errno(net.a.connect(c, sa(B_IP, 80)), Errno::EINPROGRESS);
            c
        })
        .collect();
    // Every handshake completes before anyone accepts.
    net.run_until(5_000, |n| clients.iter().all(|&c| n.a.finish_connect(c).is_ok()));
    assert!(net.b.readiness(l).unwrap().events & events::IN != 0);
    assert_eq!(net.b.proc_net_tcp().lines().filter(|l| l.contains(" 01 ")).count(), 64);
    let mut ports = std::collections::BTreeSet::new();
    let mut accepted = Vec::new();
    for _ in 0..64 {
        let (s, peer) = net.b.accept(l).unwrap();
        assert!(ports.insert(peer.port()), "accepted one connection twice");
        accepted.push((s, peer));
    }
    assert_errno(net.b.accept(l), Errno::EAGAIN);
    assert_eq!(net.b.readiness(l).unwrap().events & events::IN, 0);
    // Each accepted socket is the one its client talks to.
    for (i, &c) in clients.iter().enumerate() {
        net.a.send(c, format!("client {i}").as_bytes(), 0).unwrap();
    }
    net.run(200);
    for (s, peer) in accepted {
        let mut buf = [0u8; 32];
        let r = net.b.recv_from(s, &mut buf, 0).unwrap();
        let text = std::str::from_utf8(&buf[..r.len]).unwrap();
        let i: usize = text.strip_prefix("client ").unwrap().parse().unwrap();
        assert_eq!(net.a.local_addr(clients[i]).unwrap().port(), peer.port());
        assert_eq!(net.b.peer_addr(s).unwrap(), peer);
    }
}

#[test]
fn backlog_pool_is_rearmed_after_accept() {
    let mut net = Net::new();
    let l = listener(&mut net.b, sa(Ipv4Addr::UNSPECIFIED, 81), 2);
    for round in 0..5 {
        let c = net.a.socket(SocketKind::Stream, 0).unwrap();
        let _ = net.a.connect(c, sa(B_IP, 81));
        net.run_until(2_000, |n| n.a.finish_connect(c).is_ok());
        let (s, _) = net.b.accept(l).unwrap_or_else(|e| panic!("round {round}: {e}"));
        net.b.close(s).unwrap();
        net.a.close(c).unwrap();
    }
}

#[test]
fn connect_to_closed_port_is_refused_over_the_link_and_loopback() {
    let mut net = Net::new();
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.connect(c, sa(B_IP, 9)), Errno::EINPROGRESS);
    net.run_until(2_000, |n| n.a.readiness(c).unwrap().events & events::ERR != 0);
    let ev = net.a.readiness(c).unwrap().events;
    assert_eq!(ev & (events::OUT | events::HUP), events::OUT | events::HUP);
    let err = net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_ERROR).unwrap();
    assert_eq!(as_int(&err), Errno::ECONNREFUSED.0);
    // SO_ERROR is cleared by reading it.
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_ERROR).unwrap()), 0);

    let mut lo = Lo::new(Default::default());
    let c = lo.s.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(lo.s.connect(c, sa(Ipv4Addr::LOCALHOST, 9)), Errno::EINPROGRESS);
    lo.run_until(1_000, |l| l.s.finish_connect(c) != Err(Errno::EINPROGRESS));
    // The blocking path learns the failure from finish_connect, once.
    let mut lo2 = Lo::new(Default::default());
    let c2 = lo2.s.socket(SocketKind::Stream, 0).unwrap();
    let _ = lo2.s.connect(c2, sa(Ipv4Addr::LOCALHOST, 9));
    lo2.run(50);
    assert_errno(lo2.s.finish_connect(c2), Errno::ECONNREFUSED);
    assert_errno(lo2.s.send(c2, b"x", 0), Errno::EPIPE);
}

#[test]
fn connect_to_unanswered_address_times_out() {
    let cfg = vmk_net::StackConfig { connect_timeout: vmk_net::Duration::from_secs(3), ..Default::default() };
    let mut net = Net::with_config(cfg, Default::default());
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    // 10.0.0.99 is on the segment but nobody answers ARP.
    assert_errno(net.a.connect(c, sa(Ipv4Addr::new(10, 0, 0, 99), 80)), Errno::EINPROGRESS);
    net.run_until(10_000, |n| n.a.readiness(c).unwrap().events & events::ERR != 0);
    assert!(net.now.total_millis() >= 1_000 + 3_000);
    let err = net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_ERROR).unwrap();
    assert_eq!(as_int(&err), Errno::ETIMEDOUT.0);
    // No route at all.
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.connect(c, sa(Ipv4Addr::new(192, 0, 2, 1), 80)), Errno::ENETUNREACH);
    assert_errno(net.a.connect(c, sa(Ipv4Addr::BROADCAST, 80)), Errno::ENETUNREACH);
    assert_errno(net.a.connect(c, sa(B_IP, 0)), Errno::ECONNREFUSED);
}

#[test]
fn non_blocking_connect_reports_progress_like_linux() {
    let mut net = Net::new();
    let l = listener(&mut net.b, sa(Ipv4Addr::UNSPECIFIED, 7000), 4);
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    // A fresh socket is writable and hung up (Linux reports POLLOUT|POLLHUP).
    assert_eq!(net.a.readiness(c).unwrap().events, events::OUT | events::HUP);
    assert_errno(net.a.peer_addr(c), Errno::ENOTCONN);
    assert_errno(net.a.connect(c, sa(B_IP, 7000)), Errno::EINPROGRESS);
    assert_errno(net.a.connect(c, sa(B_IP, 7000)), Errno::EALREADY);
    assert_eq!(net.a.readiness(c).unwrap().events, 0);
    assert_errno(net.a.recv_from(c, &mut [0; 8], 0), Errno::EAGAIN);
    let gen0 = net.a.readiness(c).unwrap().generation;
    net.run_until(2_000, |n| n.a.readiness(c).unwrap().events & events::OUT != 0);
    assert!(net.a.readiness(c).unwrap().generation > gen0);
    assert!(net.a.take_changed().contains(&c));
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_ERROR).unwrap()), 0);
    net.a.finish_connect(c).unwrap();
    assert_errno(net.a.connect(c, sa(B_IP, 7000)), Errno::EISCONN);
    assert_eq!(net.a.peer_addr(c).unwrap(), sa(B_IP, 7000));
    let local = net.a.local_addr(c).unwrap();
    assert_eq!(*local.ip(), A_IP);
    assert!((32768..=60999).contains(&local.port()), "ephemeral port {local}");
    net.run(20);
    let (s, _) = net.b.accept(l).unwrap();
    assert_eq!(net.b.local_addr(s).unwrap(), sa(B_IP, 7000));
}

#[test]
fn shutdown_semantics() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 6000);
    net.a.send(c, b"last words", 0).unwrap();
    net.a.shutdown(c, Shutdown::Write).unwrap();
    // Writing after SHUT_WR: EPIPE (the kernel adds SIGPIPE unless MSG_NOSIGNAL).
    assert_errno(net.a.send(c, b"more", msg::NOSIGNAL), Errno::EPIPE);
    assert!(net.a.readiness(c).unwrap().events & events::OUT != 0);
    net.run(100);
    let mut buf = [0u8; 64];
    let r = net.b.recv_from(s, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"last words");
    let ev = net.b.readiness(s).unwrap().events;
    assert!(ev & events::RDHUP != 0 && ev & events::IN != 0, "{ev:#x}");
    assert_eq!(net.b.recv_from(s, &mut buf, 0).unwrap().len, 0);
    // The other direction still works.
    net.b.send(s, b"reply", 0).unwrap();
    net.run(100);
    let r = net.a.recv_from(c, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"reply");
    // SHUT_RD: reads end at once.
    net.a.shutdown(c, Shutdown::Read).unwrap();
    assert_eq!(net.a.recv_from(c, &mut buf, 0).unwrap().len, 0);
    net.b.shutdown(s, Shutdown::Both).unwrap();
    net.run(100);
    assert!(net.b.readiness(s).unwrap().events & events::HUP != 0);
    // shutdown on an unconnected socket.
    let u = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.shutdown(u, Shutdown::Both), Errno::ENOTCONN);
    assert_errno(Shutdown::from_how(3), Errno::EINVAL);
}

#[test]
fn reset_by_peer_gives_econnreset_then_epipe() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 6001);
    // SO_LINGER {on, 0}: close sends RST.
    let mut linger = int(1).to_vec();
    linger.extend_from_slice(&int(0));
    net.b.setsockopt(s, opt::SOL_SOCKET, opt::SO_LINGER, &linger).unwrap();
    assert_eq!(net.b.getsockopt(s, opt::SOL_SOCKET, opt::SO_LINGER).unwrap(), linger);
    net.b.close(s).unwrap();
    net.run_until(1_000, |n| n.a.readiness(c).unwrap().events & events::ERR != 0);
    assert_errno(net.a.recv_from(c, &mut [0; 8], 0), Errno::ECONNRESET);
    assert_eq!(net.a.recv_from(c, &mut [0; 8], 0).unwrap().len, 0);
    assert_errno(net.a.send(c, b"x", 0), Errno::EPIPE);
    assert!(net.a.readiness(c).unwrap().events & events::HUP != 0);
    assert_errno(net.a.peer_addr(c), Errno::ENOTCONN);
}

#[test]
fn close_with_unread_data_resets_like_linux() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 6002);
    net.a.send(c, b"unread", 0).unwrap();
    net.run(50);
    net.b.close(s).unwrap();
    net.run_until(1_000, |n| n.a.readiness(c).unwrap().events & events::ERR != 0);
    assert_errno(net.a.send(c, b"x", 0), Errno::ECONNRESET);
}

#[test]
fn peek_leaves_data_in_place() {
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 6003);
    net.a.send(c, b"hello world", 0).unwrap();
    net.run(50);
    let mut buf = [0u8; 5];
    let r = net.b.recv_from(s, &mut buf, msg::PEEK).unwrap();
    assert_eq!(&buf[..r.len], b"hello");
    let r = net.b.recv_from(s, &mut buf, msg::PEEK).unwrap();
    assert_eq!(&buf[..r.len], b"hello");
    assert_eq!(net.b.pending_input(s).unwrap(), 11, "FIONREAD");
    let mut all = [0u8; 64];
    let r = net.b.recv_from(s, &mut all, 0).unwrap();
    assert_eq!(net.b.pending_input(s).unwrap(), 0);
    assert_eq!(net.a.pending_output(c).unwrap(), 0, "everything was acknowledged");
    assert_eq!(&all[..r.len], b"hello world");
    assert_errno(net.b.recv_from(s, &mut all, msg::PEEK), Errno::EAGAIN);
}

#[test]
fn loopback_tcp_echo_and_own_address() {
    let mut net = Net::new();
    // Bound to 0.0.0.0: reachable through 127.0.0.1 and the host's own address.
    let l = listener(&mut net.a, sa(Ipv4Addr::UNSPECIFIED, 8080), 4);
    for target in [Ipv4Addr::LOCALHOST, A_IP] {
        let c = net.a.socket(SocketKind::Stream, 0).unwrap();
        let _ = net.a.connect(c, sa(target, 8080));
        net.run_until(1_000, |n| n.a.finish_connect(c).is_ok());
        let (s, peer) = net.a.accept(l).unwrap();
        assert_eq!(peer.port(), net.a.local_addr(c).unwrap().port());
        let payload = pattern(300_000, 3);
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while got.len() < payload.len() {
            if sent < payload.len()
                && let Ok(n) = net.a.send(c, &payload[sent..], 0)
            {
                sent += n;
            }
            if let Ok(r) = net.a.recv_from(s, &mut buf, 0) {
                got.extend_from_slice(&buf[..r.len]);
            }
            net.step();
        }
        assert_eq!(got, payload);
        net.a.close(c).unwrap();
        net.a.close(s).unwrap();
    }
    // Nothing went out on the wire for loopback traffic.
    let dev = net.a.interface("vmk0").unwrap();
    assert!(dev.counters.tx_bytes < 2_000, "{:?}", dev.counters);
    assert!(net.a.interface("lo").unwrap().counters.rx_bytes > 600_000);
}

#[test]
fn bind_rules_follow_linux() {
    let mut net = Net::new();
    let a = net.a.socket(SocketKind::Stream, 0).unwrap();
    net.a.bind(a, sa(Ipv4Addr::UNSPECIFIED, 2000)).unwrap();
    assert_errno(net.a.bind(a, sa(Ipv4Addr::UNSPECIFIED, 2001)), Errno::EINVAL);
    let b = net.a.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(net.a.bind(b, sa(Ipv4Addr::LOCALHOST, 2000)), Errno::EADDRINUSE);
    assert_errno(net.a.bind(b, sa(Ipv4Addr::new(10, 9, 9, 9), 2001)), Errno::EADDRNOTAVAIL);
    // Both with SO_REUSEADDR and the first not listening: allowed.
    net.a.setsockopt(a, opt::SOL_SOCKET, opt::SO_REUSEADDR, &int(1)).unwrap();
    net.a.setsockopt(b, opt::SOL_SOCKET, opt::SO_REUSEADDR, &int(1)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(b, opt::SOL_SOCKET, opt::SO_REUSEADDR).unwrap()), 1);
    net.a.bind(b, sa(Ipv4Addr::UNSPECIFIED, 2000)).unwrap();
    net.a.close(b).unwrap();
    net.a.listen(a, 4).unwrap();
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_REUSEADDR, &int(1)).unwrap();
    assert_errno(net.a.bind(c, sa(Ipv4Addr::UNSPECIFIED, 2000)), Errno::EADDRINUSE);
    // UDP and TCP ports are separate.
    let u = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.bind(u, sa(Ipv4Addr::UNSPECIFIED, 2000)).unwrap();
    // Port 0 picks an ephemeral port.
    net.a.bind(c, sa(Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    assert!(net.a.local_addr(c).unwrap().port() >= 32768);
    assert_eq!(as_int(&net.a.getsockopt(a, opt::SOL_SOCKET, opt::SO_ACCEPTCONN).unwrap()), 1);
    assert_eq!(as_int(&net.a.getsockopt(u, opt::SOL_SOCKET, opt::SO_TYPE).unwrap()), 2);
    assert_errno(net.a.listen(u, 1), Errno::EOPNOTSUPP);
    assert_errno(net.a.close(vmk_net::SocketId(9999)), Errno::EBADF);
}

#[test]
fn socket_options_round_trip() {
    let mut net = Net::new();
    let (c, _s) = connected_pair(&mut net, 6004);
    net.a.setsockopt(c, opt::IPPROTO_TCP, opt::TCP_NODELAY, &int(1)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(c, opt::IPPROTO_TCP, opt::TCP_NODELAY).unwrap()), 1);
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_KEEPALIVE, &int(1)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_KEEPALIVE).unwrap()), 1);
    // Buffers are doubled and clamped, as on Linux.
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_RCVBUF, &int(8192)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_RCVBUF).unwrap()), 16384);
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_SNDBUF, &int(1)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_SNDBUF).unwrap()), 2304);
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_RCVBUF, &int(i32::MAX)).unwrap();
    assert_eq!(as_int(&net.a.getsockopt(c, opt::SOL_SOCKET, opt::SO_RCVBUF).unwrap()), 4 << 20);
    let mut tv = 5i64.to_ne_bytes().to_vec();
    tv.extend_from_slice(&250_000i64.to_ne_bytes());
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_RCVTIMEO, &tv).unwrap();
    assert_eq!(net.a.timeouts(c).unwrap().0.to_vec(), tv);
    let mut bad = 5i64.to_ne_bytes().to_vec();
    bad.extend_from_slice(&2_000_000i64.to_ne_bytes());
    assert_errno(net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_RCVTIMEO, &bad), Errno::EDOM);
    assert_errno(net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_REUSEADDR, &[1]), Errno::EINVAL);
    assert_errno(net.a.setsockopt(c, 99, 1, &int(1)), Errno::ENOPROTOOPT);
    assert_errno(net.a.getsockopt(c, opt::SOL_SOCKET, 999), Errno::ENOPROTOOPT);
    // The connection still works with Nagle off and keepalive on.
    net.a.send(c, b"x", 0).unwrap();
    net.run(20);
}

#[test]
fn keepalive_detects_a_vanished_peer() {
    let mut net = Net::new();
    let (c, _s) = connected_pair(&mut net, 6005);
    for (name, v) in [(opt::TCP_KEEPIDLE, 2), (opt::TCP_KEEPINTVL, 1), (opt::TCP_KEEPCNT, 3)] {
        net.a.setsockopt(c, opt::IPPROTO_TCP, name, &int(v)).unwrap();
    }
    net.a.setsockopt(c, opt::SOL_SOCKET, opt::SO_KEEPALIVE, &int(1)).unwrap();
    // The peer disappears: its stack is no longer polled.
    let end = net.now + vmk_net::Duration::from_secs(20);
    while net.now < end {
        net.a.poll(net.now);
        net.now += vmk_net::Duration::from_millis(100);
        if net.a.readiness(c).unwrap().events & events::ERR != 0 {
            break;
        }
    }
    assert_errno(net.a.recv_from(c, &mut [0; 4], 0), Errno::ETIMEDOUT);
}

#[test]
fn wildcard_sockets_follow_an_interface_added_later() {
    use vmk_net::Instant;
    let now = Instant::from_millis(1_000);
    let (la, lb) = link();
    let mut b = Stack::new(Default::default(), now);
    // Bound to 0.0.0.0 while only loopback exists.
    let l = listener(&mut b, sa(Ipv4Addr::UNSPECIFIED, 80), 4);
    let u = b.socket(SocketKind::Datagram, 0).unwrap();
    b.bind(u, sa(Ipv4Addr::UNSPECIFIED, 53)).unwrap();
    let ib = b.add_ethernet(lb, B_MAC, now);
    b.set_link(ib, true).unwrap();
    b.configure(ib, &static_config(B_IP, None)).unwrap();
    let mut a = Stack::new(Default::default(), now);
    let ia = a.add_ethernet(la, A_MAC, now);
    a.set_link(ia, true).unwrap();
    a.configure(ia, &static_config(A_IP, None)).unwrap();
    let mut net = Net { a, b, now };
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    let _ = net.a.connect(c, sa(B_IP, 80));
    net.run_until(2_000, |n| n.a.finish_connect(c).is_ok());
    net.run_until(1_000, |n| n.b.accept(l).is_ok());
    let d = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.send_to(d, b"q", Some(sa(B_IP, 53)), 0).unwrap();
    net.run_until(1_000, |n| n.b.recv_from(u, &mut [0u8; 8], 0).is_ok());
}

/// Moves `total` bytes from `c` on `a` to `s` on `b` (which may be the same stack);
/// returns the checksum of what arrived.
fn pump(net: &mut Net, c: vmk_net::SocketId, s: vmk_net::SocketId, total: usize, loopback: bool) -> u64 {
    let chunk = pattern(256 << 10, 17);
    let (mut sent, mut got, mut h) = (0usize, 0usize, FNV_INIT);
    let mut buf = vec![0u8; 256 << 10];
    while got < total {
        if sent < total {
            let end = (total - sent).min(chunk.len());
            let stack = &mut net.a;
            if let Ok(n) = stack.send(c, &chunk[..end], 0) {
                sent += n;
            }
        }
        let rx = if loopback { &mut net.a } else { &mut net.b };
        while let Ok(r) = rx.recv_from(s, &mut buf, 0) {
            h = fnv(&buf[..r.len], h);
            got += r.len;
        }
        net.step();
    }
    h
}

/// CPU cost of the stack itself (no emulator, no driver): prints MiB/s over the
/// in-memory link and over loopback. Run on purpose:
/// `cargo test --release -p vmk-net --test tcp -- --ignored --nocapture throughput`.
#[test]
#[ignore = "benchmark; prints figures"]
fn throughput_report() {
    const TOTAL: usize = 64 << 20;
    let mut net = Net::new();
    let (c, s) = connected_pair(&mut net, 5201);
    let start = std::time::Instant::now();
    pump(&mut net, c, s, TOTAL, false);
    let t = start.elapsed().as_secs_f64();
    println!("link: {} MiB in {t:.2} s = {:.0} MiB/s", TOTAL >> 20, (TOTAL >> 20) as f64 / t);
    let l = listener(&mut net.a, sa(Ipv4Addr::LOCALHOST, 5202), 1);
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    let _ = net.a.connect(c, sa(Ipv4Addr::LOCALHOST, 5202));
    net.run_until(1_000, |n| n.a.finish_connect(c).is_ok());
    let (s, _) = net.a.accept(l).unwrap();
    let start = std::time::Instant::now();
    pump(&mut net, c, s, TOTAL, true);
    let t = start.elapsed().as_secs_f64();
    println!("loopback: {} MiB in {t:.2} s = {:.0} MiB/s", TOTAL >> 20, (TOTAL >> 20) as f64 / t);
}
