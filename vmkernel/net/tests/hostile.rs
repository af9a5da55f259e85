//! A hostile caller: random operations with random arguments on random sockets.
//! Nothing panics, every error is a Linux errno, and once everything is closed the
//! buffer budget is back to zero on both hosts.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vmk_net::{Errno, Shutdown, SocketId, SocketKind, StackConfig};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Runs `ops` random calls; returns how often each operation succeeded.
fn hammer(seed: u64, ops: usize) -> [u32; 16] {
    // A small budget so ENOBUFS paths are taken too.
    let cfg = StackConfig { buffer_budget: 3 << 20, max_sockets: 48, ..StackConfig::default() };
    let mut net = Net::with_config(cfg.clone(), cfg);
    let mut rng = Rng(seed);
    let addrs = [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST, A_IP, B_IP, Ipv4Addr::BROADCAST, Ipv4Addr::new(10, 0, 0, 99), Ipv4Addr::new(192, 0, 2, 7)];
    let ports = [0u16, 1, 22, 4000, 4000, 4000, 7, 5000, 65535, 40000];
    // Listeners on both hosts so that connects often succeed and data flows.
    let listeners = [listener(&mut net.a, sa(Ipv4Addr::UNSPECIFIED, 4000), 8), listener(&mut net.b, sa(Ipv4Addr::UNSPECIFIED, 4000), 8)];
    let mut ids: Vec<(bool, SocketId)> = listeners.iter().enumerate().map(|(i, &l)| (i == 0, l)).collect();
    let mut buf = vec![0u8; 70_000];
    let mut stats = std::collections::BTreeMap::new();
    let mut connecting: Vec<(bool, SocketId)> = Vec::new();
    for _ in 0..ops {
        let on_a = rng.below(2) == 0;
        let host = if on_a { &mut net.a } else { &mut net.b };
        let pick = |rng: &mut Rng, ids: &Vec<(bool, SocketId)>| -> SocketId {
            let mine: Vec<SocketId> = ids.iter().filter(|(a, _)| *a == on_a).map(|(_, id)| *id).collect();
            if mine.is_empty() || rng.below(10) == 0 { SocketId(rng.below(200) as u32) } else { mine[rng.below(mine.len() as u64) as usize] }
        };
        let id = pick(&mut rng, &ids);
        let addr = sa(addrs[rng.below(addrs.len() as u64) as usize], ports[rng.below(ports.len() as u64) as usize]);
        let len = [0usize, 1, 100, 1500, 20_000, 70_000][rng.below(6) as usize];
        let op = rng.below(16);
        let result: Result<(), Errno> = match op {
            0 | 1 => {
                let kind = [SocketKind::Stream, SocketKind::Datagram, SocketKind::RawIcmp, SocketKind::PingIcmp][rng.below(4) as usize];
                host.socket(kind, 0).map(|s| ids.push((on_a, s)))
            }
            2 => host.bind(id, addr),
            3 => host.listen(id, [-5, 0, 1, 64, i32::MAX][rng.below(5) as usize]),
            4 => {
                let r = host.connect(id, addr);
                if r == Err(Errno::EINPROGRESS) {
                    connecting.push((on_a, id));
                }
                r
            }
            5 => {
                let l = if rng.below(2) == 0 { listeners[usize::from(!on_a)] } else { id };
                host.accept(l).map(|(s, _)| ids.push((on_a, s)))
            }
            6 => host.send_to(id, &buf[..len], if rng.below(2) == 0 { Some(addr) } else { None }, rng.next() as i32).map(|_| ()),
            7 => host.recv_from(id, &mut buf[..len], rng.next() as i32).map(|_| ()),
            8 => host.shutdown(id, [Shutdown::Read, Shutdown::Write, Shutdown::Both][rng.below(3) as usize]),
            9 => {
                let value: Vec<u8> = (0..rng.below(20)).map(|_| rng.next() as u8).collect();
                host.setsockopt(id, [0, 1, 6, 17, -1][rng.below(5) as usize], rng.below(45) as i32, &value)
            }
            10 => host.getsockopt(id, [0, 1, 6][rng.below(3) as usize], rng.below(45) as i32).map(|_| ()),
            11 => {
                let mine: Vec<SocketId> = connecting.iter().filter(|(a, _)| *a == on_a).map(|(_, s)| *s).collect();
                let target = if mine.is_empty() || rng.below(2) == 0 { id } else { mine[rng.below(mine.len() as u64) as usize] };
                host.finish_connect(target)
            }
            12 => host.readiness(id).map(|_| ()),
            13 if !listeners.contains(&id) => {
                ids.retain(|&(a, s)| !(a == on_a && s == id));
                host.close(id)
            }
            13 => Ok(()),
            14 => host.local_addr(id).and(host.peer_addr(id)).map(|_| ()),
            _ => {
                net.step();
                Ok(())
            }
        };
        *stats.entry((op, result.is_ok())).or_insert(0u32) += 1;
        if let Err(e) = result {
            assert!(e.name().is_some(), "unnamed errno {e:?}");
        }
    }
    eprintln!("A {} {}\nB {} {}", net.a.budget_used(), net.a.proc_net_tcp(), net.b.budget_used(), net.b.proc_net_tcp());
    for (on_a, id) in ids {
        let host = if on_a { &mut net.a } else { &mut net.b };
        let _ = host.close(id);
    }
    net.run(200_000);
    assert_eq!(net.a.budget_used(), 0, "host A leaked buffers: {}", net.a.proc_net_tcp());
    assert_eq!(net.b.budget_used(), 0, "host B leaked buffers: {}", net.b.proc_net_tcp());
    // The stacks still work afterwards.
    let l = listener(&mut net.b, sa(B_IP, 4242), 4);
    let c = net.a.socket(SocketKind::Stream, 0).unwrap();
    let _ = net.a.connect(c, sa(B_IP, 4242));
    net.run_until(3_000, |n| n.a.finish_connect(c).is_ok());
    net.run_until(1_000, |n| n.b.accept(l).is_ok());
    let mut ok = [0u32; 16];
    for ((op, success), n) in stats {
        if success {
            ok[op as usize] += n;
        }
    }
    ok
}

#[test]
fn random_calls_never_panic_and_leak_nothing() {
    let mut ok = [0u32; 16];
    for seed in [1, 0x1234_5678, 0xdead_beef] {
        for (total, n) in ok.iter_mut().zip(hammer(seed, 4_000)) {
            *total += n;
        }
    }
    // Every kind of call succeeded somewhere: the hammer reaches real states
    // (connections, accepted sockets, data), not only error paths.
    for (op, n) in ok.iter().enumerate() {
        assert!(*n > 0, "operation {op} never succeeded: {ok:?}");
    }
}

#[test]
#[ignore = "long stress run; run on purpose"]
fn random_calls_long_run() {
    for seed in 1..50 {
        let _ = hammer(seed * 7919, 50_000);
    }
}
