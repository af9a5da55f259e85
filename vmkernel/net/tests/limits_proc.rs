//! Buffer budgets, floods, readiness generations, and the /proc/net texts.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vmk_net::procfs::{DEV_HEADER, ROUTE_HEADER, TCP_HEADER, UDP_HEADER, hex_addr};
use vmk_net::stack::iff;
use vmk_net::{Errno, SocketKind, StackConfig, events};

const TCP_COST: usize = (64 << 10) * 2;

fn small_budget(sockets: usize) -> StackConfig {
    StackConfig { buffer_budget: sockets * TCP_COST, ..StackConfig::default() }
}

#[test]
fn socket_creation_fails_with_enobufs_when_the_budget_is_spent_and_recovers_after_close() {
    let mut lo = Lo::new(small_budget(10));
    let mut socks = Vec::new();
    loop {
        match lo.s.socket(SocketKind::Stream, 0) {
            Ok(s) => socks.push(s),
            Err(e) => {
                assert_eq!(e, Errno::ENOBUFS);
                break;
            }
        }
        assert!(socks.len() <= 10, "budget not enforced");
    }
    assert_eq!(socks.len(), 10);
    lo.s.close(socks.pop().unwrap()).unwrap();
    let again = lo.s.socket(SocketKind::Stream, 0).unwrap();
    assert_errno(lo.s.socket(SocketKind::Datagram, 0), Errno::ENOBUFS);
    lo.s.close(again).unwrap();
    for s in socks {
        lo.s.close(s).unwrap();
    }
    assert_eq!(lo.s.budget_used(), 0);
}

#[test]
fn budget_returns_to_zero_after_connections_finish_closing() {
    let mut lo = Lo::new(small_budget(40));
    let l = listener(&mut lo.s, sa(Ipv4Addr::LOCALHOST, 9999), 4);
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let c = lo.s.socket(SocketKind::Stream, 0).unwrap();
        let _ = lo.s.connect(c, sa(Ipv4Addr::LOCALHOST, 9999));
        lo.run_until(1_000, |x| x.s.finish_connect(c).is_ok());
        let mut acc = None;
        lo.run_until(1_000, |x| {
            acc = x.s.accept(l).ok();
            acc.is_some()
        });
        lo.s.send(c, &pattern(10_000, 1), 0).unwrap();
        pairs.push((c, acc.unwrap().0));
    }
    lo.run(50);
    assert!(lo.s.budget_used() > 0);
    for (c, s) in pairs {
        lo.s.close(c).unwrap();
        lo.s.close(s).unwrap();
    }
    lo.s.close(l).unwrap();
    // Closing connections keep their buffers until TIME_WAIT and RSTs are done.
    lo.run(30_000);
    assert_eq!(lo.s.budget_used(), 0);
    assert_eq!(lo.s.proc_net_tcp().lines().count(), 1, "{}", lo.s.proc_net_tcp());
}

#[test]
fn listen_pool_shrinks_to_the_budget_and_fails_cleanly_without_one() {
    // Room for the socket's reservation plus three listeners.
    let mut net = Net::with_config(Default::default(), small_budget(4));
    let l = net.b.socket(SocketKind::Stream, 0).unwrap();
    net.b.bind(l, sa(B_IP, 80)).unwrap();
    net.b.listen(l, 64).unwrap();
    assert!(net.b.budget_used() <= 4 * TCP_COST);
    // Connections still get through, on the slots the budget allowed.
    let connect = |net: &mut Net| {
        let c = net.a.socket(SocketKind::Stream, 0).unwrap();
        let _ = net.a.connect(c, sa(B_IP, 80));
        net.run_until(2_000, |n| n.a.readiness(c).unwrap().events & (events::OUT | events::ERR) != 0);
        c
    };
    for _ in 0..2 {
        let c = connect(&mut net);
        net.a.finish_connect(c).unwrap();
        let mut acc = None;
        net.run_until(1_000, |n| {
            acc = n.b.accept(l).ok();
            acc.is_some()
        });
        net.b.close(acc.unwrap().0).unwrap();
        net.a.close(c).unwrap();
    }
    // The closed connections still hold their buffers (TIME_WAIT): no slot is left.
    net.run(100);
    let c = connect(&mut net);
    assert_errno(net.a.finish_connect(c), Errno::ECONNREFUSED);
    // Once they are gone the pool is re-armed.
    net.run(30_000);
    let c = connect(&mut net);
    net.a.finish_connect(c).unwrap();
    // No budget at all: listen fails with ENOBUFS and leaves nothing behind.
    let mut lo = Lo::new(StackConfig { buffer_budget: TCP_COST, ..StackConfig::default() });
    let s = lo.s.socket(SocketKind::Stream, 0).unwrap();
    let t = lo.s.socket(SocketKind::Stream, 0);
    assert_errno(t, Errno::ENOBUFS);
    lo.s.bind(s, sa(Ipv4Addr::UNSPECIFIED, 1)).unwrap();
    // The reservation covers one listener (on lo); nothing is left for a second.
    let used = lo.s.budget_used();
    lo.s.listen(s, 8).unwrap();
    assert_eq!(lo.s.budget_used(), used);
}

#[test]
fn a_connection_flood_does_not_grow_memory_beyond_the_backlog() {
    let mut net = Net::new();
    let l = listener(&mut net.b, sa(B_IP, 443), 4);
    net.run(10);
    // At rest a listener holds only a couple of ready listening sockets per interface.
    let idle = net.b.budget_used();
    assert!(idle <= 2 * vmk_net::socket::IDLE_LISTENERS * TCP_COST, "{idle}");
    let flood = |net: &mut Net, n: usize| -> Vec<vmk_net::SocketId> {
        (0..n)
            .map(|_| {
                let c = net.a.socket(SocketKind::Stream, 0).unwrap();
                assert_errno(net.a.connect(c, sa(B_IP, 443)), Errno::EINPROGRESS);
                c
            })
            .collect()
    };
    let clients = flood(&mut net, 100);
    net.run(2_000);
    let full = net.b.budget_used();
    // Pending connections (at most the backlog per interface) are all that grew.
    assert!(full <= 4 * 2 * TCP_COST, "{full}");
    let outcomes: Vec<_> = clients.iter().map(|&c| net.a.finish_connect(c)).collect();
    // backlog connections complete; two more SYNs are held unanswered (as Linux drops
    // them: the clients keep trying), the rest are refused.
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 4);
    let held = outcomes.iter().filter(|r| **r == Err(Errno::EINPROGRESS)).count();
    assert_eq!(held, vmk_net::socket::HOLDING_LISTENERS);
    assert_eq!(outcomes.iter().filter(|r| **r == Err(Errno::ECONNREFUSED)).count(), 100 - 4 - held);
    for c in clients {
        net.a.close(c).unwrap();
    }
    let more = flood(&mut net, 100);
    net.run(2_000);
    assert!(net.b.budget_used() <= full, "a second flood grew memory");
    let accepted = std::iter::from_fn(|| net.b.accept(l).ok()).count();
    assert_eq!(accepted, 4);
    for c in more {
        net.a.close(c).unwrap();
    }
}

#[test]
fn a_udp_flood_is_bounded_by_the_receive_buffer() {
    let mut net = Net::new();
    let s = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(s, sa(Ipv4Addr::UNSPECIFIED, 5000)).unwrap();
    let before = net.b.budget_used();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    let payload = [0x55u8; 1000];
    let mut sent = 0;
    for _ in 0..3_000 {
        match net.a.send_to(c, &payload, Some(sa(B_IP, 5000)), 0) {
            Ok(_) => sent += 1,
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN);
                net.step();
            }
        }
    }
    net.run(100);
    assert!(sent > 100);
    assert_eq!(net.b.budget_used(), before);
    let mut buf = [0u8; 2000];
    let received = std::iter::from_fn(|| net.b.recv_from(s, &mut buf, 0).ok()).count();
    assert!(received > 0 && received * payload.len() <= 64 << 10, "received {received} of {sent}: bounded by the 64 KiB buffer");
}

#[test]
fn readiness_generation_advances_on_new_data_only() {
    let mut net = Net::new();
    let s = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(s, sa(Ipv4Addr::UNSPECIFIED, 6000)).unwrap();
    let c = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.run(10);
    let _ = net.b.take_changed();
    let g0 = net.b.readiness(s).unwrap();
    assert_eq!(g0.events & events::IN, 0);
    assert!(g0.events & events::OUT != 0);
    net.a.send_to(c, b"one", Some(sa(B_IP, 6000)), 0).unwrap();
    net.run(20);
    let g1 = net.b.readiness(s).unwrap();
    assert!(g1.events & events::IN != 0 && g1.generation > g0.generation);
    assert_eq!(net.b.take_changed(), vec![s]);
    // Nothing new: the generation stands still (edge-triggered waiters stay asleep).
    net.run(20);
    assert_eq!(net.b.readiness(s).unwrap().generation, g1.generation);
    // More data while already readable is a new edge.
    net.a.send_to(c, b"two", Some(sa(B_IP, 6000)), 0).unwrap();
    net.run(20);
    assert!(net.b.readiness(s).unwrap().generation > g1.generation);
    assert_errno(net.b.readiness(vmk_net::SocketId(777)), Errno::EBADF);
}

#[test]
fn interface_info_for_the_ioctls() {
    let net = Net::new();
    let ifs = net.a.interfaces();
    assert_eq!(ifs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["lo", "vmk0"]);
    let lo = &ifs[0];
    assert_eq!((lo.index, lo.flags, lo.mtu, lo.mac), (1, iff::UP | iff::LOOPBACK | iff::RUNNING, 65535, None));
    assert_eq!(lo.ipv4, Some((Ipv4Addr::LOCALHOST, 8)));
    assert_eq!(lo.netmask(), Some(Ipv4Addr::new(255, 0, 0, 0)));
    let vmk0 = &ifs[1];
    assert_eq!(vmk0.index, 2);
    assert_eq!(vmk0.flags, iff::UP | iff::BROADCAST | iff::RUNNING | iff::MULTICAST);
    assert_eq!(vmk0.mtu, 1500);
    assert_eq!(vmk0.mac, Some(A_MAC));
    assert_eq!(vmk0.ipv4, Some((A_IP, 24)));
    let mut down = Net::new();
    down.a.set_link(2, false).unwrap();
    assert_eq!(down.a.interface("vmk0").unwrap().flags & iff::RUNNING, 0);
    assert_errno(down.a.set_link(7, true), Errno::ENODEV);
}

/// Reads the host's /proc/net file if this machine has one (Linux), to compare headers.
fn host_header(path: &str, lines: usize) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.lines().take(lines).map(|l| format!("{l}\n")).collect())
}

#[test]
fn proc_net_dev_matches_linux_and_parses_like_busybox_ifconfig() {
    let mut net = Net::new();
    let p = net.a.socket(SocketKind::RawIcmp, 0).unwrap();
    net.a.send_to(p, &echo_request(1, 1, b"x"), Some(sa(B_IP, 0)), 0).unwrap();
    net.run(50);
    let text = net.a.proc_net_dev();
    assert!(text.starts_with(DEV_HEADER));
    if let Some(host) = host_header("/proc/net/dev", 2) {
        assert_eq!(host, DEV_HEADER);
    }
    let rows: Vec<(String, Vec<u64>)> = text
        .lines()
        .skip(2)
        .map(|line| {
            // BusyBox: the name is everything before ':', then 16 numbers.
            let (name, rest) = line.split_once(':').unwrap();
            let nums: Vec<u64> = rest.split_whitespace().map(|n| n.parse().unwrap()).collect();
            assert_eq!(nums.len(), 16, "{line}");
            (name.trim().to_string(), nums)
        })
        .collect();
    assert_eq!(rows[0].0, "lo");
    assert_eq!(rows[1].0, "vmk0");
    let vmk0 = &rows[1].1;
    let counters = net.a.interface("vmk0").unwrap().counters;
    assert!(vmk0[0] > 0 && vmk0[1] >= 1 && vmk0[8] > 0 && vmk0[9] >= 2, "{vmk0:?}");
    assert_eq!((vmk0[0], vmk0[1], vmk0[8], vmk0[9]), (counters.rx_bytes, counters.rx_packets, counters.tx_bytes, counters.tx_packets));
    // Same column layout as a Linux line ("    lo:  ...").
    assert!(text.lines().nth(2).unwrap().starts_with("    lo: "));
    assert!(text.lines().nth(3).unwrap().starts_with("  vmk0: "));
}

#[test]
fn proc_net_route_matches_linux_layout() {
    let mut net = Net::new();
    net.a.configure(2, &static_config(A_IP, Some(B_IP))).unwrap();
    let text = net.a.proc_net_route();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0].trim_end(), ROUTE_HEADER);
    if let Some(host) = host_header("/proc/net/route", 1) {
        assert_eq!(host.trim_end(), ROUTE_HEADER);
    }
    assert_eq!(lines.len(), 3);
    for line in &lines {
        assert_eq!(line.len(), 127, "{line:?}");
    }
    // BusyBox route: "%63s%lx%lx%X%d%d%d%lx%d%d%d".
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(fields.len(), 11);
    assert_eq!(fields[0], "vmk0");
    assert_eq!(u32::from_str_radix(fields[1], 16).unwrap(), 0);
    assert_eq!(u32::from_str_radix(fields[2], 16).unwrap(), hex_addr(B_IP));
    assert_eq!(u32::from_str_radix(fields[3], 16).unwrap(), 3);
    let net_fields: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(net_fields[1], "0000000A");
    assert_eq!(net_fields[7], "00FFFFFF");
    assert_eq!(hex_addr(Ipv4Addr::new(10, 0, 2, 2)), 0x0202000A);
}

/// netstat's parse of a /proc/net/tcp or udp line:
/// "%d: %64[0-9A-Fa-f]:%X %64[0-9A-Fa-f]:%X %X %lX:%lX %*X:%*X %*X %d %d %lu".
fn netstat_parse(line: &str) -> (u32, u16, u32, u16, u8, u64, u64, u32, u64) {
    let f: Vec<&str> = line.split_whitespace().collect();
    let addr = |s: &str| {
        let (a, p) = s.split_once(':').unwrap();
        assert_eq!(a.len(), 8);
        (u32::from_str_radix(a, 16).unwrap(), u16::from_str_radix(p, 16).unwrap())
    };
    let (la, lp) = addr(f[1]);
    let (ra, rp) = addr(f[2]);
    let state = u8::from_str_radix(f[3], 16).unwrap();
    let (tx, rx) = f[4].split_once(':').unwrap();
    let uid: u32 = f[7].parse().unwrap();
    let inode: u64 = f[9].parse().unwrap();
    (la, lp, ra, rp, state, u64::from_str_radix(tx, 16).unwrap(), u64::from_str_radix(rx, 16).unwrap(), uid, inode)
}

#[test]
fn proc_net_tcp_and_udp_parse_like_busybox_netstat() {
    let mut net = Net::new();
    let l = net.b.socket(SocketKind::Stream, 1000).unwrap();
    net.b.bind(l, sa(Ipv4Addr::UNSPECIFIED, 22)).unwrap();
    net.b.listen(l, 4).unwrap();
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    let _ = net.a.connect(c, sa(B_IP, 22));
    net.run_until(1_000, |n| n.a.finish_connect(c).is_ok());
    net.run(20);
    let (s, _) = net.b.accept(l).unwrap();
    net.a.send(c, b"12345", 0).unwrap();
    net.run(20);
    let u = net.b.socket(SocketKind::Datagram, 0).unwrap();
    net.b.bind(u, sa(Ipv4Addr::LOCALHOST, 53)).unwrap();

    let tcp = net.b.proc_net_tcp();
    let lines: Vec<&str> = tcp.lines().collect();
    assert_eq!(lines[0].trim_end(), TCP_HEADER);
    if let Some(host) = host_header("/proc/net/tcp", 1) {
        assert_eq!(host.trim_end(), TCP_HEADER);
    }
    assert!(lines.iter().all(|l| l.len() == 149), "{tcp}");
    let rows: Vec<_> = lines[1..].iter().map(|l| netstat_parse(l)).collect();
    let listen = rows.iter().find(|r| r.4 == 0x0A).expect("LISTEN row");
    assert_eq!((listen.0, listen.1, listen.7), (0, 22, 1000));
    assert_eq!(listen.8, net.b.inode(l).unwrap());
    let est = rows.iter().find(|r| r.4 == 0x01).expect("ESTABLISHED row");
    assert_eq!((est.0, est.1, est.2), (hex_addr(B_IP), 22, hex_addr(A_IP)));
    assert_eq!(est.3, net.a.local_addr(c).unwrap().port());
    assert_eq!(est.6, 5, "rx_queue holds the unread bytes");
    assert_eq!(est.8, net.b.inode(s).unwrap());
    assert_eq!(rows.len(), 2, "pool slots in LISTEN are not listed: {tcp}");

    let udp = net.b.proc_net_udp();
    let lines: Vec<&str> = udp.lines().collect();
    assert_eq!(lines[0].trim_end(), UDP_HEADER);
    if let Some(host) = host_header("/proc/net/udp", 1) {
        assert_eq!(host.trim_end(), UDP_HEADER);
    }
    assert!(lines.iter().all(|l| l.len() == 127), "{udp}");
    let row = netstat_parse(lines[1]);
    assert_eq!((row.0, row.1, row.4), (0x0100007F, 53, 7));
}

#[test]
fn half_open_connections_expire_and_free_their_slots() {
    let mut net = Net::new();
    let _l = listener(&mut net.b, sa(B_IP, 25), 4);
    // Resolve addresses first (ARP), so the SYNs leave at the first poll.
    let u = net.a.socket(SocketKind::Datagram, 0).unwrap();
    net.a.send_to(u, b"hello", Some(sa(B_IP, 9)), 0).unwrap();
    net.run(50);
    let idle = net.b.budget_used();
    for _ in 0..4 {
        let c = net.a.socket(SocketKind::Stream, 0).unwrap();
        let _ = net.a.connect(c, sa(B_IP, 25));
    }
    // A sends its SYNs and then vanishes: B is left with half-open connections.
    net.a.poll(net.now);
    net.b.poll(net.now);
    assert_eq!(net.b.proc_net_tcp().lines().filter(|l| l.contains(" 03 ")).count(), 4);
    let end = net.now + vmk_net::Duration::from_secs(40);
    while net.now < end {
        net.b.poll(net.now);
        net.now += vmk_net::Duration::from_millis(100);
    }
    assert_eq!(net.b.proc_net_tcp().lines().filter(|l| l.contains(" 03 ")).count(), 0);
    assert_eq!(net.b.budget_used(), idle);
}

#[test]
fn a_full_backlog_holds_new_connections_until_accept_makes_room() {
    let mut net = Net::new();
    let l = listener(&mut net.b, sa(B_IP, 8000), 2);
    let connect = |net: &mut Net| {
        let c = net.a.socket(SocketKind::Stream, 0).unwrap();
        assert_errno(net.a.connect(c, sa(B_IP, 8000)), Errno::EINPROGRESS);
        c
    };
    let first: Vec<_> = (0..2).map(|_| connect(&mut net)).collect();
    net.run_until(2_000, |n| first.iter().all(|&c| n.a.finish_connect(c).is_ok()));
    // The backlog is full: a third connection is neither accepted nor refused.
    let third = connect(&mut net);
    net.run(3_000);
    assert_errno(net.a.finish_connect(third), Errno::EINPROGRESS);
    assert!(net.b.proc_net_tcp().contains(" 03 "), "held as SYN_RECV: {}", net.b.proc_net_tcp());
    // An accept makes room: the held SYN is answered and the connection completes.
    let (s, _) = net.b.accept(l).unwrap();
    net.run_until(5_000, |n| n.a.finish_connect(third).is_ok());
    net.run_until(1_000, |n| n.b.accept(l).is_ok());
    net.b.close(s).unwrap();
}
