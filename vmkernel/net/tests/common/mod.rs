//! Test harness: stacks joined by an in-memory Ethernet link, driven in virtual time.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use vmk_net::{AddressMode, Duration, Errno, Instant, NetConfig, NetStack, SocketId, StackConfig};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// One end of an Ethernet cable: frames sent here arrive at the other end.
pub struct LinkEnd {
    rx: Queue,
    tx: Queue,
    /// Frames that went out of this end.
    pub sent: Rc<RefCell<u64>>,
}

/// A cable.
pub fn link() -> (LinkEnd, LinkEnd) {
    let a: Queue = Rc::default();
    let b: Queue = Rc::default();
    (
        LinkEnd { rx: a.clone(), tx: b.clone(), sent: Rc::default() },
        LinkEnd { rx: b, tx: a, sent: Rc::default() },
    )
}

impl LinkEnd {
    /// Frames waiting to be received at this end (tests reorder, drop or
    /// repeat them).
    pub fn incoming(&self) -> std::cell::RefMut<'_, VecDeque<Vec<u8>>> {
        self.rx.borrow_mut()
    }
}

pub struct Rx(Vec<u8>);
pub struct Tx(Queue, Rc<RefCell<u64>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.borrow_mut().push_back(frame);
        *self.1.borrow_mut() += 1;
        r
    }
}

impl Device for LinkEnd {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx)> {
        let frame = self.rx.borrow_mut().pop_front()?;
        Some((Rx(frame), Tx(self.tx.clone(), self.sent.clone())))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx> {
        Some(Tx(self.tx.clone(), self.sent.clone()))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

pub type Stack = NetStack<LinkEnd>;

pub const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
pub const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

pub fn static_config(ip: Ipv4Addr, gateway: Option<Ipv4Addr>) -> NetConfig {
    NetConfig { mode: AddressMode::Static { address: ip, prefix_len: 24, gateway }, dns: vec![] }
}

/// Two hosts on one segment, in virtual time.
pub struct Net {
    pub a: Stack,
    pub b: Stack,
    pub now: Instant,
}

impl Net {
    /// Two hosts with static addresses 10.0.0.1 and 10.0.0.2.
    pub fn new() -> Net {
        Net::with_config(StackConfig::default(), StackConfig::default())
    }

    pub fn with_config(a_cfg: StackConfig, b_cfg: StackConfig) -> Net {
        let now = Instant::from_millis(1_000);
        let (la, lb) = link();
        let mut b_cfg = b_cfg;
        b_cfg.random_seed ^= 0x5555;
        let mut a = Stack::new(a_cfg, now);
        let mut b = Stack::new(b_cfg, now);
        let ia = a.add_ethernet(la, A_MAC, now);
        let ib = b.add_ethernet(lb, B_MAC, now);
        assert_eq!((ia, ib), (2, 2));
        a.set_link(ia, true).unwrap();
        b.set_link(ib, true).unwrap();
        a.configure(ia, &static_config(A_IP, None)).unwrap();
        b.configure(ib, &static_config(B_IP, None)).unwrap();
        Net { a, b, now }
    }

    /// Polls both stacks once and advances virtual time by the smaller of `step` and
    /// what the stacks asked for (at least 1 ms when both are idle).
    pub fn step(&mut self) {
        let da = self.a.poll(self.now);
        let db = self.b.poll(self.now);
        let wait = [da, db].into_iter().flatten().min().unwrap_or(Duration::from_millis(10));
        let wait = wait.min(Duration::from_millis(10)).max(Duration::from_millis(1));
        self.now += wait;
    }

    /// Steps until `done` holds; panics after `max_ms` of virtual time.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&mut Net) -> bool) {
        let end = self.now + Duration::from_millis(max_ms);
        while self.now < end {
            self.step();
            if done(self) {
                return;
            }
        }
        panic!("condition not reached within {max_ms} ms of virtual time");
    }

    /// Steps for `ms` of virtual time.
    pub fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            self.step();
        }
    }
}

/// A single stack with only loopback, in virtual time.
pub struct Lo {
    pub s: Stack,
    pub now: Instant,
}

impl Lo {
    pub fn new(cfg: StackConfig) -> Lo {
        let now = Instant::from_millis(1_000);
        Lo { s: Stack::new(cfg, now), now }
    }
    pub fn step(&mut self) {
        let d = self.s.poll(self.now);
        let wait = d.unwrap_or(Duration::from_millis(10)).min(Duration::from_millis(10)).max(Duration::from_millis(1));
        self.now += wait;
    }
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&mut Lo) -> bool) {
        let end = self.now + Duration::from_millis(max_ms);
        while self.now < end {
            self.step();
            if done(self) {
                return;
            }
        }
        panic!("condition not reached within {max_ms} ms of virtual time");
    }
    pub fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            self.step();
        }
    }
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// The Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request as BusyBox ping builds it.
pub fn echo_request(ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// Asserts an errno.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: Result<T, Errno>, e: Errno) {
    match r {
        Err(got) => assert_eq!(got, e),
        Ok(v) => panic!("expected {e}, got Ok({v:?})"),
    }
}

/// The bytes of a C int option.
pub fn int(v: i32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// Reads an int option.
pub fn as_int(b: &[u8]) -> i32 {
    i32::from_ne_bytes(b[..4].try_into().unwrap())
}

/// A deterministic byte pattern.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// FNV-1a, a checksum over a transfer.
pub fn fnv(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub const FNV_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// A listening TCP socket on `stack` at `addr`.
pub fn listener(stack: &mut Stack, addr: SocketAddrV4, backlog: i32) -> SocketId {
    let l = stack.socket(vmk_net::SocketKind::Stream, 0).unwrap();
    stack.bind(l, addr).unwrap();
    stack.listen(l, backlog).unwrap();
    l
}
