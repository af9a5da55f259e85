//! Sockets with Linux semantics over smoltcp's sockets.
//!
//! Every operation returns at once: where Linux would block, it returns `EAGAIN`
//! (`WouldBlock`) and the caller waits on [`Readiness`] — the events a `poll`/`epoll`
//! would report and a wake-up generation that advances whenever the socket may have
//! become ready (new data, space, a connection, an error), so edge-triggered epoll and
//! blocking calls can both be built on it. TCP connect always answers `EINPROGRESS`;
//! a blocking connect waits for `POLLOUT`/`POLLERR` and then calls
//! [`NetStack::finish_connect`].

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::SocketHandle;
use smoltcp::phy::Device;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::errno::{Errno, SysResult};
use crate::stack::NetStack;

/// A socket's identity inside the stack (the kernel keeps it in its file object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u32);

/// The AF_INET socket types Mantle offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// `SOCK_STREAM` (TCP).
    Stream,
    /// `SOCK_DGRAM` (UDP).
    Datagram,
    /// `SOCK_RAW, IPPROTO_ICMP`: receives whole IPv4 packets (header included), sends
    /// ICMP messages (BusyBox `ping` as root).
    RawIcmp,
    /// `SOCK_DGRAM, IPPROTO_ICMP` ("ping socket"): ICMP messages without the IP header.
    PingIcmp,
}

/// Event bits, with Linux's `POLL*`/`EPOLL*` values.
pub mod events {
    /// Readable (data, a pending connection, or end of file).
    pub const IN: u32 = 0x001;
    /// Writable.
    pub const OUT: u32 = 0x004;
    /// An error is pending (`SO_ERROR`).
    pub const ERR: u32 = 0x008;
    /// Hung up: both directions closed, or never connected.
    pub const HUP: u32 = 0x010;
    /// The peer closed its sending side (or we shut down reading).
    pub const RDHUP: u32 = 0x2000;
}

/// `send`/`recv` flags with Linux's `MSG_*` values (the ones the stack interprets).
pub mod msg {
    /// Look at data without consuming it.
    pub const PEEK: i32 = 0x2;
    /// Datagrams: return the full length even when truncated.
    pub const TRUNC: i32 = 0x20;
    /// Never block (every call here is non-blocking anyway).
    pub const DONTWAIT: i32 = 0x40;
    /// No SIGPIPE on EPIPE (the kernel raises the signal, not the stack).
    pub const NOSIGNAL: i32 = 0x4000;
}

/// A socket's readiness: events and wake-up generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// [`events`] bits.
    pub events: u32,
    /// Advances every time the socket may have become (more) ready.
    pub generation: u64,
}

/// What `shutdown(2)` closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// `SHUT_RD`
    Read,
    /// `SHUT_WR`
    Write,
    /// `SHUT_RDWR`
    Both,
}

impl Shutdown {
    /// From the `how` argument of `shutdown(2)`.
    pub fn from_how(how: i32) -> SysResult<Shutdown> {
        match how {
            0 => Ok(Shutdown::Read),
            1 => Ok(Shutdown::Write),
            2 => Ok(Shutdown::Both),
            _ => Err(Errno::EINVAL),
        }
    }
}

/// The result of a receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvInfo {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The sender (datagram sockets).
    pub from: Option<SocketAddrV4>,
    /// The datagram's full length (larger than `len` if it was truncated).
    pub full_len: usize,
}

/// Backlogs are clamped to this (Linux's `SOMAXCONN` before 5.4; Linux now allows
/// 4096, but every pending connection here holds its buffers).
pub const SOMAXCONN: usize = 128;
/// First ephemeral port (Linux's `ip_local_port_range`).
pub const EPHEMERAL_FIRST: u16 = 32768;
/// Number of ephemeral ports (32768..=60999).
pub const EPHEMERAL_COUNT: u16 = 28232;
/// Smallest buffer `SO_RCVBUF`/`SO_SNDBUF` give (Linux's `SOCK_MIN_RCVBUF`).
pub const MIN_BUF: usize = 2304;
/// Largest buffer `SO_RCVBUF`/`SO_SNDBUF` give.
pub const MAX_BUF: usize = 4 << 20;
/// The largest UDP payload sent through an Ethernet interface (one IPv4 packet in
/// smoltcp's 16 KiB fragmentation buffer).
pub const MAX_FRAGMENTED_UDP: usize = 16384 - 14 - 20 - 8;
/// Receive buffer of the ICMP socket catching errors for a UDP socket.
const ERROR_CATCHER_BYTES: usize = 1024;
/// Listening smoltcp sockets kept ready per interface and listener.
pub const IDLE_LISTENERS: usize = 2;
/// Listening sockets per interface that hold SYNs unanswered while the backlog is full.
pub const HOLDING_LISTENERS: usize = 2;
/// A half-open connection (SYN received, no ACK) is dropped after this long.
const SYN_RECEIVED_TIMEOUT: Duration = Duration::from_secs(30);
/// A closed connection still finishing its close is dropped after this long without
/// an answer from the peer (Linux's `tcp_fin_timeout`).
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
/// A closed UDP socket whose datagrams are still queued (on Linux they are out when
/// `sendto` returns) keeps its smoltcp socket until they are sent, at most this long
/// (a neighbour that never answers ARP).
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many closed UDP sockets linger; beyond, the oldest is released.
pub const MAX_LINGERING: usize = 32;

/// Linux `SOL_SOCKET` and `IPPROTO_*` option levels and names [`NetStack::setsockopt`]
/// understands.
pub mod opt {
    /// `SOL_SOCKET`
    pub const SOL_SOCKET: i32 = 1;
    /// `IPPROTO_IP`
    pub const IPPROTO_IP: i32 = 0;
    /// `IPPROTO_TCP`
    pub const IPPROTO_TCP: i32 = 6;
    /// `SO_REUSEADDR`
    pub const SO_REUSEADDR: i32 = 2;
    /// `SO_TYPE`
    pub const SO_TYPE: i32 = 3;
    /// `SO_ERROR`
    pub const SO_ERROR: i32 = 4;
    /// `SO_BROADCAST`
    pub const SO_BROADCAST: i32 = 6;
    /// `SO_SNDBUF`
    pub const SO_SNDBUF: i32 = 7;
    /// `SO_RCVBUF`
    pub const SO_RCVBUF: i32 = 8;
    /// `SO_KEEPALIVE`
    pub const SO_KEEPALIVE: i32 = 9;
    /// `SO_LINGER`
    pub const SO_LINGER: i32 = 13;
    /// `SO_REUSEPORT`
    pub const SO_REUSEPORT: i32 = 15;
    /// `SO_RCVTIMEO` (struct timeval; stored for the kernel, which does the waiting)
    pub const SO_RCVTIMEO: i32 = 20;
    /// `SO_SNDTIMEO`
    pub const SO_SNDTIMEO: i32 = 21;
    /// `SO_ACCEPTCONN`
    pub const SO_ACCEPTCONN: i32 = 30;
    /// `SO_PROTOCOL`
    pub const SO_PROTOCOL: i32 = 38;
    /// `SO_DOMAIN`
    pub const SO_DOMAIN: i32 = 39;
    /// `IP_TTL`
    pub const IP_TTL: i32 = 2;
    /// `TCP_NODELAY`
    pub const TCP_NODELAY: i32 = 1;
    /// `TCP_KEEPIDLE`
    pub const TCP_KEEPIDLE: i32 = 4;
    /// `TCP_KEEPINTVL`
    pub const TCP_KEEPINTVL: i32 = 5;
    /// `TCP_KEEPCNT`
    pub const TCP_KEEPCNT: i32 = 6;
}

/// One smoltcp socket of a Mantle socket: which interface's set holds it, and the
/// budget bytes it holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Member {
    pub iface: usize,
    pub handle: SocketHandle,
    pub charge: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Opts {
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub keepalive: bool,
    pub nodelay: bool,
    pub broadcast: bool,
    pub rcvbuf: usize,
    pub sndbuf: usize,
    pub linger: Option<u32>,
    pub rcvtimeo: [u8; 16],
    pub sndtimeo: [u8; 16],
    pub ttl: u8,
    pub keepidle: u32,
    pub keepintvl: u32,
    pub keepcnt: u32,
}

pub(crate) struct Listener {
    pub backlog: usize,
    pub ifaces: Vec<usize>,
    /// Listening (or handshaking) smoltcp sockets: the SYN queue.
    pub slots: Vec<Member>,
    /// Established connections not yet accepted: the accept queue.
    pub queue: VecDeque<Member>,
    /// While an interface's backlog is full: listening sockets that take a SYN without
    /// answering it (the client retries, as when Linux drops the SYN) until room frees.
    pub holding: Vec<Member>,
}

pub(crate) struct Conn {
    pub m: Member,
    pub peer: SocketAddrV4,
    pub peer_fin: bool,
    pub closed: bool,
    pub last_progress: Instant,
    pub mark: (usize, usize),
}

pub(crate) enum Tcp {
    Closed,
    Listening(Listener),
    Connecting { m: Member, peer: SocketAddrV4, started: Instant },
    Connected(Conn),
}

pub(crate) struct Dgram {
    pub members: Vec<Member>,
    pub peer: Option<SocketAddrV4>,
    pub next: usize,
    /// UDP: ICMP sockets catching errors about this port's datagrams (a connected UDP
    /// socket reports "port unreachable" as `ECONNREFUSED`, as on Linux).
    pub errors: Vec<Member>,
}

pub(crate) enum Body {
    Tcp(Tcp),
    Udp(Dgram),
    Icmp { d: Dgram, ident: Option<u16>, raw: bool },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Snap {
    pub events: u32,
    pub rx: usize,
    pub tx: usize,
    pub accq: usize,
}

pub(crate) struct Sock {
    pub body: Body,
    pub uid: u32,
    pub inode: u64,
    pub opts: Opts,
    pub local: Option<SocketAddrV4>,
    pub error: Option<Errno>,
    pub shut_rd: bool,
    pub shut_wr: bool,
    /// Budget reserved at creation and not yet spent on buffers.
    pub reserve: usize,
    pub seen: Snap,
    pub generation: u64,
}

/// The smoltcp socket of a closed UDP socket, kept until its transmit queue drains
/// (see [`LINGER_TIMEOUT`]). Its buffers stay charged to the budget, but a charge that
/// would fail releases lingering sockets first, oldest first.
pub(crate) struct Lingering {
    pub m: Member,
    pub local: SocketAddrV4,
    pub since: Instant,
}

/// A TCP connection closed by its owner that is still finishing (FIN handshake, RST).
pub(crate) struct Orphan {
    pub m: Member,
    pub uid: u32,
    pub since: Instant,
}

fn ep_to_v4(ep: IpEndpoint) -> SocketAddrV4 {
    let IpAddress::Ipv4(a) = ep.addr;
    SocketAddrV4::new(a, ep.port)
}

fn listen_ep(addr: Ipv4Addr, port: u16) -> IpListenEndpoint {
    IpListenEndpoint { addr: (!addr.is_unspecified()).then_some(IpAddress::Ipv4(addr)), port }
}

fn new_tcp(rcvbuf: usize, sndbuf: usize, opts: &Opts) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rcvbuf]), tcp::SocketBuffer::new(vec![0; sndbuf]));
    apply_tcp_opts(&mut s, opts);
    s
}

fn apply_tcp_opts(s: &mut tcp::Socket<'static>, opts: &Opts) {
    s.set_nagle_enabled(!opts.nodelay);
    if opts.keepalive {
        // smoltcp sends a probe every interval and aborts after `timeout` without an
        // answer: Linux's keepidle/keepintvl/keepcnt, approximately.
        s.set_keep_alive(Some(Duration::from_secs(u64::from(opts.keepintvl.min(opts.keepidle)))));
        s.set_timeout(Some(Duration::from_secs(
            u64::from(opts.keepidle) + u64::from(opts.keepintvl) * u64::from(opts.keepcnt),
        )));
    } else {
        s.set_keep_alive(None);
        s.set_timeout(None);
    }
    if let Some(ttl) = core::num::NonZeroU8::new(opts.ttl) {
        s.set_hop_limit(Some(ttl.get()));
    }
}

fn packet_slots(bytes: usize) -> usize {
    (bytes / 256).clamp(8, 512)
}

fn new_udp(rcvbuf: usize, sndbuf: usize) -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packet_slots(rcvbuf)], vec![0; rcvbuf]),
        udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; packet_slots(sndbuf)], vec![0; sndbuf]),
    )
}

fn new_icmp(rcvbuf: usize, sndbuf: usize) -> icmp::Socket<'static> {
    icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packet_slots(rcvbuf)], vec![0; rcvbuf]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; packet_slots(sndbuf)], vec![0; sndbuf]),
    )
}

/// Linux TCP state numbers (`/proc/net/tcp`'s `st` column).
pub(crate) fn linux_tcp_state(s: tcp::State) -> u8 {
    match s {
        tcp::State::Established => 1,
        tcp::State::SynSent => 2,
        tcp::State::SynReceived => 3,
        tcp::State::FinWait1 => 4,
        tcp::State::FinWait2 => 5,
        tcp::State::TimeWait => 6,
        tcp::State::Closed => 7,
        tcp::State::CloseWait => 8,
        tcp::State::LastAck => 9,
        tcp::State::Listen => 10,
        tcp::State::Closing => 11,
    }
}

fn overlap(a: Ipv4Addr, b: Ipv4Addr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

fn read_int(value: &[u8]) -> SysResult<i32> {
    let bytes: [u8; 4] = value.get(..4).and_then(|b| b.try_into().ok()).ok_or(Errno::EINVAL)?;
    Ok(i32::from_ne_bytes(bytes))
}

fn clamp_buf(v: i32) -> usize {
    // Linux doubles the requested size (bookkeeping overhead) and reports the doubled
    // value back; Mantle does the same so programs see familiar numbers.
    (usize::try_from(v.max(0)).unwrap_or(0).saturating_mul(2)).clamp(MIN_BUF, MAX_BUF)
}

impl<D: Device> NetStack<D> {
    // ----------------------------------------------------------------- helpers

    pub(crate) fn tcp_mut(&mut self, m: &Member) -> &mut tcp::Socket<'static> {
        self.ifaces[m.iface].sockets.get_mut::<tcp::Socket>(m.handle)
    }

    pub(crate) fn tcp_ref(&self, m: &Member) -> &tcp::Socket<'static> {
        self.ifaces[m.iface].sockets.get::<tcp::Socket>(m.handle)
    }

    fn udp_mut(&mut self, m: &Member) -> &mut udp::Socket<'static> {
        self.ifaces[m.iface].sockets.get_mut::<udp::Socket>(m.handle)
    }

    fn udp_ref(&self, m: &Member) -> &udp::Socket<'static> {
        self.ifaces[m.iface].sockets.get::<udp::Socket>(m.handle)
    }

    fn icmp_mut(&mut self, m: &Member) -> &mut icmp::Socket<'static> {
        self.ifaces[m.iface].sockets.get_mut::<icmp::Socket>(m.handle)
    }

    fn icmp_ref(&self, m: &Member) -> &icmp::Socket<'static> {
        self.ifaces[m.iface].sockets.get::<icmp::Socket>(m.handle)
    }

    /// Takes `cost` budget bytes, first from the socket's reservation.
    fn spend(&mut self, sock: &mut Sock, cost: usize) -> SysResult<()> {
        if sock.reserve >= cost {
            sock.reserve -= cost;
            Ok(())
        } else {
            self.charge(cost - sock.reserve)?;
            sock.reserve = 0;
            Ok(())
        }
    }

    fn drop_member(&mut self, m: Member) {
        self.ifaces[m.iface].sockets.remove(m.handle);
        self.release(m.charge);
    }

    /// Runs `f` on the socket taken out of the table (so `f` may use the whole stack),
    /// then puts it back and records its readiness.
    fn with_sock<R>(&mut self, id: SocketId, f: impl FnOnce(&mut Self, &mut Sock) -> R) -> SysResult<R> {
        let mut sock = self.socks.remove(&id.0).ok_or(Errno::EBADF)?;
        self.refresh(&mut sock);
        let r = f(self, &mut sock);
        self.update_readiness(id, &mut sock);
        self.socks.insert(id.0, sock);
        Ok(r)
    }

    fn port_in_use(&self, tcp: bool, port: u16) -> bool {
        self.socks.values().any(|s| matches!(s.body, Body::Tcp(_)) == tcp && s.local.is_some_and(|l| l.port() == port))
            || (tcp && self.orphans.iter().any(|o| self.tcp_ref(&o.m).local_endpoint().is_some_and(|e| e.port == port)))
            || (!tcp && self.lingering.iter().any(|l| l.local.port() == port))
    }

    fn ephemeral_port(&mut self, tcp: bool) -> SysResult<u16> {
        for _ in 0..EPHEMERAL_COUNT {
            self.port_cursor = (self.port_cursor + 1) % EPHEMERAL_COUNT;
            let port = EPHEMERAL_FIRST + self.port_cursor;
            if !self.port_in_use(tcp, port) {
                return Ok(port);
            }
        }
        Err(Errno::EADDRINUSE)
    }

    fn bind_conflict(&self, me: &Sock, addr: SocketAddrV4) -> bool {
        let tcp = matches!(me.body, Body::Tcp(_));
        let others = self.socks.values().filter(|s| matches!(s.body, Body::Tcp(_)) == tcp);
        for other in others {
            let Some(l) = other.local else { continue };
            if l.port() != addr.port() || !overlap(*l.ip(), *addr.ip()) {
                continue;
            }
            if me.opts.reuseport && other.opts.reuseport {
                continue;
            }
            let listening = matches!(other.body, Body::Tcp(Tcp::Listening(_)));
            if me.opts.reuseaddr && other.opts.reuseaddr && !listening {
                continue;
            }
            return true;
        }
        // Connections closed but not finished (TIME_WAIT, ...) hold their port unless
        // SO_REUSEADDR is set, as on Linux.
        tcp && !me.opts.reuseaddr
            && self.orphans.iter().any(|o| {
                self.tcp_ref(&o.m).local_endpoint().is_some_and(|e| {
                    let IpAddress::Ipv4(a) = e.addr;
                    e.port == addr.port() && overlap(a, *addr.ip())
                })
            })
    }

    fn autobind(&mut self, sock: &mut Sock) -> SysResult<SocketAddrV4> {
        if let Some(l) = sock.local {
            return Ok(l);
        }
        let port = self.ephemeral_port(matches!(sock.body, Body::Tcp(_)))?;
        let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        sock.local = Some(local);
        Ok(local)
    }

    // ----------------------------------------------------------------- lifecycle

    /// Creates an AF_INET socket owned by `uid`. Fails with `ENOBUFS` when the buffer
    /// budget cannot hold its default buffers, `ENFILE` at the socket limit.
    pub fn socket(&mut self, kind: SocketKind, uid: u32) -> SysResult<SocketId> {
        if self.socks.len() >= self.cfg.max_sockets {
            return Err(Errno::ENFILE);
        }
        let (rcvbuf, sndbuf) = match kind {
            SocketKind::Stream => (self.cfg.tcp_rcvbuf, self.cfg.tcp_sndbuf),
            _ => (self.cfg.dgram_rcvbuf, self.cfg.dgram_sndbuf),
        };
        self.charge(rcvbuf + sndbuf)?;
        let body = match kind {
            SocketKind::Stream => Body::Tcp(Tcp::Closed),
            SocketKind::Datagram => Body::Udp(Dgram { members: Vec::new(), peer: None, next: 0, errors: Vec::new() }),
            SocketKind::RawIcmp | SocketKind::PingIcmp => Body::Icmp {
                d: Dgram { members: Vec::new(), peer: None, next: 0, errors: Vec::new() },
                ident: None,
                raw: kind == SocketKind::RawIcmp,
            },
        };
        let mut id = self.next_id;
        while self.socks.contains_key(&id) || id == 0 {
            id = id.wrapping_add(1);
        }
        self.next_id = id.wrapping_add(1);
        self.next_inode += 1;
        let sock = Sock {
            body,
            uid,
            inode: self.next_inode,
            opts: Opts {
                reuseaddr: false,
                reuseport: false,
                keepalive: false,
                nodelay: false,
                broadcast: false,
                rcvbuf,
                sndbuf,
                linger: None,
                rcvtimeo: [0; 16],
                sndtimeo: [0; 16],
                ttl: 64,
                keepidle: 7200,
                keepintvl: 75,
                keepcnt: 9,
            },
            local: None,
            error: None,
            shut_rd: false,
            shut_wr: false,
            reserve: rcvbuf + sndbuf,
            seen: Snap::default(),
            generation: 0,
        };
        self.socks.insert(id, sock);
        let id = SocketId(id);
        let _ = self.with_sock(id, |_, _| ());
        Ok(id)
    }

    /// Closes a socket. A TCP connection finishes in the background (FIN, or RST with
    /// `SO_LINGER` 0 or unread data, as Linux does); its buffers count against the
    /// budget until it is done.
    pub fn close(&mut self, id: SocketId) -> SysResult<()> {
        let mut sock = self.socks.remove(&id.0).ok_or(Errno::EBADF)?;
        self.listeners.retain(|&l| l != id.0);
        self.refresh(&mut sock);
        self.release(sock.reserve);
        let body = core::mem::replace(&mut sock.body, Body::Tcp(Tcp::Closed));
        match body {
            Body::Tcp(Tcp::Closed) => {}
            Body::Tcp(Tcp::Listening(l)) => {
                for m in l.slots.into_iter().chain(l.holding) {
                    self.drop_member(m);
                }
                for m in l.queue {
                    // Connections nobody accepted are reset, as on Linux.
                    self.tcp_mut(&m).abort();
                    self.orphan(m, &sock);
                }
            }
            Body::Tcp(Tcp::Connecting { m, .. }) => {
                self.tcp_mut(&m).abort();
                self.orphan(m, &sock);
            }
            Body::Tcp(Tcp::Connected(c)) => {
                let linger0 = sock.opts.linger == Some(0);
                let s = self.tcp_mut(&c.m);
                if linger0 || s.recv_queue() > 0 {
                    s.abort();
                } else {
                    s.close();
                    s.set_timeout(Some(ORPHAN_TIMEOUT));
                }
                self.orphan(c.m, &sock);
            }
            Body::Udp(d) => {
                for m in d.errors {
                    self.drop_member(m);
                }
                for m in d.members {
                    match sock.local {
                        // Datagrams sent but not yet transmitted go out after the close.
                        Some(local) if self.udp_ref(&m).send_queue() > 0 => self.linger(m, local),
                        _ => self.drop_member(m),
                    }
                }
            }
            Body::Icmp { d, .. } => {
                for m in d.members.into_iter().chain(d.errors) {
                    self.drop_member(m);
                }
            }
        }
        Ok(())
    }

    fn linger(&mut self, m: Member, local: SocketAddrV4) {
        if !self.ifaces[m.iface].link_up {
            self.drop_member(m);
            return;
        }
        while self.lingering.len() >= MAX_LINGERING {
            match self.lingering.pop_front() {
                Some(old) => self.drop_member(old.m),
                None => break,
            }
        }
        self.lingering.push_back(Lingering { m, local, since: self.now });
    }

    /// Releases lingering sockets that are done: queue sent, timed out, or their
    /// interface's link went down.
    pub(crate) fn reap_lingering(&mut self) {
        let now = self.now;
        for l in core::mem::take(&mut self.lingering) {
            let done = self.udp_ref(&l.m).send_queue() == 0
                || now >= l.since + LINGER_TIMEOUT
                || !self.ifaces[l.m.iface].link_up;
            if done {
                self.drop_member(l.m);
            } else {
                self.lingering.push_back(l);
            }
        }
    }

    /// A new UDP socket on `local` takes over its port from lingering sockets (smoltcp
    /// gives a datagram to the first socket bound to its port, which could be theirs):
    /// their unsent datagrams are dropped, the price of rebinding at once.
    fn evict_lingering(&mut self, local: SocketAddrV4) {
        for l in core::mem::take(&mut self.lingering) {
            if l.local.port() == local.port() && overlap(*l.local.ip(), *local.ip()) {
                self.drop_member(l.m);
            } else {
                self.lingering.push_back(l);
            }
        }
    }

    fn orphan(&mut self, m: Member, sock: &Sock) {
        let s = self.tcp_ref(&m);
        if s.state() == tcp::State::Closed && s.remote_endpoint().is_none() {
            self.drop_member(m);
        } else {
            self.orphans.push(Orphan { m, uid: sock.uid, since: self.now });
        }
    }

    /// Binds to a local address (`0.0.0.0`, `127.0.0.1` or an interface address); port
    /// 0 picks an ephemeral port.
    pub fn bind(&mut self, id: SocketId, addr: SocketAddrV4) -> SysResult<()> {
        self.with_sock(id, |st, sock| {
            if sock.local.is_some() {
                return Err(Errno::EINVAL);
            }
            st.placement(*addr.ip())?;
            let tcp = matches!(sock.body, Body::Tcp(_));
            let addr = if addr.port() == 0 {
                SocketAddrV4::new(*addr.ip(), st.ephemeral_port(tcp)?)
            } else {
                if st.bind_conflict(sock, addr) {
                    return Err(Errno::EADDRINUSE);
                }
                addr
            };
            sock.local = Some(addr);
            if !tcp {
                st.open_dgram(sock)?;
            }
            Ok(())
        })?
    }

    /// Creates the smoltcp sockets of a bound datagram socket on its interfaces.
    fn open_dgram(&mut self, sock: &mut Sock) -> SysResult<()> {
        let local = sock.local.ok_or(Errno::EINVAL)?;
        let ifaces = self.placement(*local.ip())?;
        if matches!(sock.body, Body::Udp(_)) {
            self.evict_lingering(local);
        }
        let (rcv, snd) = (sock.opts.rcvbuf, sock.opts.sndbuf);
        let mut members = Vec::new();
        for iface in ifaces {
            if let Err(e) = self.spend(sock, rcv + snd) {
                for m in members {
                    self.drop_member(m);
                }
                // Nothing was opened: the socket is left unbound, as before the call.
                sock.local = None;
                return Err(e);
            }
            let handle = match &sock.body {
                Body::Udp(_) => {
                    let mut s = new_udp(rcv, snd);
                    // Cannot fail: the port is non-zero and the socket fresh.
                    let _ = s.bind(listen_ep(*local.ip(), local.port()));
                    s.set_hop_limit(core::num::NonZeroU8::new(sock.opts.ttl).map(|t| t.get()));
                    self.ifaces[iface].sockets.add(s)
                }
                _ => self.ifaces[iface].sockets.add(new_icmp(rcv, snd)),
            };
            members.push(Member { iface, handle, charge: rcv + snd });
        }
        let mut errors = Vec::new();
        if matches!(sock.body, Body::Udp(_)) {
            for m in &members {
                // Best effort: without budget the socket just does not see ICMP errors.
                if self.charge(ERROR_CATCHER_BYTES).is_err() {
                    break;
                }
                let mut catcher = icmp::Socket::new(
                    icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 2], vec![0; ERROR_CATCHER_BYTES]),
                    icmp::PacketBuffer::new(Vec::new(), Vec::new()),
                );
                let _ = catcher.bind(icmp::Endpoint::Udp(listen_ep(*local.ip(), local.port())));
                let handle = self.ifaces[m.iface].sockets.add(catcher);
                errors.push(Member { iface: m.iface, handle, charge: ERROR_CATCHER_BYTES });
            }
        }
        match &mut sock.body {
            Body::Udp(d) | Body::Icmp { d, .. } => {
                d.members = members;
                d.errors = errors;
            }
            Body::Tcp(_) => {}
        }
        Ok(())
    }

    /// A connected UDP socket takes ICMP errors about datagrams it sent to its peer
    /// as a pending error; others drop them (Linux without `IP_RECVERR`).
    fn take_icmp_errors(&mut self, sock: &mut Sock) {
        let Body::Udp(d) = &sock.body else { return };
        let peer = d.peer;
        for m in d.errors.clone() {
            while let Ok((msg, _from)) = self.icmp_mut(&m).recv() {
                let Some(peer) = peer else { continue };
                // Type 3 (destination unreachable), then the original IP header and
                // the first 8 bytes of the datagram.
                let (Some(&kind), Some(&code), Some(orig)) = (msg.first(), msg.get(1), msg.get(8..)) else {
                    continue;
                };
                let ihl = usize::from(orig.first().map_or(0, |b| b & 0xf)) * 4;
                let (Some(dst), Some(port)) = (orig.get(16..20), orig.get(ihl + 2..ihl + 4)) else { continue };
                let about_peer = dst == peer.ip().octets() && u16::from_be_bytes([port[0], port[1]]) == peer.port();
                if kind == 3 && about_peer {
                    sock.error = Some(match code {
                        3 => Errno::ECONNREFUSED,
                        0 => Errno::ENETUNREACH,
                        _ => Errno::EHOSTUNREACH,
                    });
                }
            }
        }
    }

    // ----------------------------------------------------------------- TCP

    /// Starts listening with a backlog (clamped to 1..=[`SOMAXCONN`]): a pool of
    /// listening smoltcp sockets on every interface the socket is bound to, with
    /// [`IDLE_LISTENERS`] kept ready and at most `backlog` pending connections per
    /// interface. Fails with `ENOBUFS` if the budget cannot hold one listener per
    /// interface; when the budget runs short later, further SYNs are refused.
    pub fn listen(&mut self, id: SocketId, backlog: i32) -> SysResult<()> {
        self.with_sock(id, |st, sock| {
            let backlog = usize::try_from(backlog).unwrap_or(0).clamp(1, SOMAXCONN);
            match &mut sock.body {
                Body::Tcp(Tcp::Listening(l)) => {
                    l.backlog = backlog;
                    return Ok(());
                }
                Body::Tcp(Tcp::Closed) => {}
                Body::Tcp(_) => return Err(Errno::EINVAL),
                _ => return Err(Errno::EOPNOTSUPP),
            }
            let local = st.autobind(sock)?;
            let ifaces = st.placement(*local.ip())?;
            let mut l = Listener {
                backlog,
                ifaces: ifaces.clone(),
                slots: Vec::new(),
                queue: VecDeque::new(),
                holding: Vec::new(),
            };
            for &iface in &ifaces {
                match st.new_listen_slot(sock, iface, local) {
                    Ok(m) => l.slots.push(m),
                    Err(e) => {
                        for m in l.slots {
                            st.drop_member(m);
                        }
                        return Err(e);
                    }
                }
            }
            sock.body = Body::Tcp(Tcp::Listening(l));
            st.rearm(sock);
            st.listeners.push(id.0);
            Ok(())
        })?
    }

    /// Sockets bound to `0.0.0.0` also listen on an interface added after they were
    /// bound (as far as the budget allows).
    pub(crate) fn extend_wildcard_sockets(&mut self, slot: usize) {
        let ids: Vec<u32> = self.socks.keys().copied().collect();
        for id in ids {
            let Some(mut sock) = self.socks.remove(&id) else { continue };
            if let Some(local) = sock.local.filter(|l| l.ip().is_unspecified()) {
                let (rcv, snd) = (sock.opts.rcvbuf, sock.opts.sndbuf);
                let ttl = sock.opts.ttl;
                match &mut sock.body {
                    Body::Tcp(Tcp::Listening(l)) => l.ifaces.push(slot),
                    Body::Udp(d) if !d.members.is_empty() && self.charge(rcv + snd).is_ok() => {
                        let mut s = new_udp(rcv, snd);
                        let _ = s.bind(listen_ep(*local.ip(), local.port()));
                        s.set_hop_limit(core::num::NonZeroU8::new(ttl).map(|t| t.get()));
                        let handle = self.ifaces[slot].sockets.add(s);
                        d.members.push(Member { iface: slot, handle, charge: rcv + snd });
                    }
                    Body::Icmp { d, ident, .. } if !d.members.is_empty() && self.charge(rcv + snd).is_ok() => {
                        let mut s = new_icmp(rcv, snd);
                        if let Some(ident) = ident {
                            let _ = s.bind(icmp::Endpoint::Ident(*ident));
                        }
                        let handle = self.ifaces[slot].sockets.add(s);
                        d.members.push(Member { iface: slot, handle, charge: rcv + snd });
                    }
                    _ => {}
                }
            }
            if matches!(sock.body, Body::Tcp(Tcp::Listening(_))) {
                self.rearm(&mut sock);
            }
            self.socks.insert(id, sock);
        }
    }

    /// Tops up every listener's pool (between received packets).
    pub(crate) fn rearm_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            let id = self.listeners[i];
            if let Some(mut sock) = self.socks.remove(&id) {
                self.rearm(&mut sock);
                self.socks.insert(id, sock);
            }
        }
    }

    fn new_listen_slot(&mut self, sock: &mut Sock, iface: usize, local: SocketAddrV4) -> SysResult<Member> {
        let cost = sock.opts.rcvbuf + sock.opts.sndbuf;
        self.spend(sock, cost)?;
        let mut s = new_tcp(sock.opts.rcvbuf, sock.opts.sndbuf, &sock.opts);
        // A handshake that never completes (a SYN flood) frees its slot after this.
        s.set_timeout(Some(SYN_RECEIVED_TIMEOUT));
        if s.listen(listen_ep(*local.ip(), local.port())).is_err() {
            self.release(cost);
            return Err(Errno::EINVAL);
        }
        let handle = self.ifaces[iface].sockets.add(s);
        Ok(Member { iface, handle, charge: cost })
    }

    /// Moves established connections from the pool to the accept queue, drops queued
    /// ones that were reset, and tops the pool up to the backlog on every interface.
    fn rearm(&mut self, sock: &mut Sock) {
        let Some(local) = sock.local else { return };
        let Body::Tcp(Tcp::Listening(mut l)) = core::mem::replace(&mut sock.body, Body::Tcp(Tcp::Closed)) else {
            return;
        };
        let mut i = 0;
        while i < l.slots.len() {
            let m = l.slots[i];
            match self.tcp_ref(&m).state() {
                tcp::State::Listen | tcp::State::SynReceived => i += 1,
                tcp::State::Closed => {
                    let _ = self.tcp_mut(&m).listen(listen_ep(*local.ip(), local.port()));
                    i += 1;
                }
                _ => {
                    // Established: into the accept queue, without the handshake timeout.
                    apply_tcp_opts(self.tcp_mut(&m), &sock.opts);
                    l.queue.push_back(l.slots.remove(i));
                }
            }
        }
        let mut k = 0;
        while k < l.queue.len() {
            let s = self.tcp_ref(&l.queue[k]);
            if s.state() == tcp::State::Closed || s.remote_endpoint().is_none() {
                if let Some(m) = l.queue.remove(k) {
                    self.drop_member(m);
                }
            } else {
                k += 1;
            }
        }
        // Keep IDLE_LISTENERS listening sockets ready on each interface (the stack calls
        // this between received packets, so every SYN finds one), and never more than
        // `backlog` pending connections per interface: memory follows real pending
        // connections, bounded by the backlog and the budget.
        for m in &l.holding {
            if self.tcp_ref(m).state() == tcp::State::Closed {
                let _ = self.tcp_mut(m).listen(listen_ep(*local.ip(), local.port()));
            }
        }
        for &iface in &l.ifaces {
            let held = l.slots.iter().chain(l.queue.iter()).filter(|m| m.iface == iface).count();
            if held < l.backlog {
                // Room again: held SYNs are answered now, in arrival order.
                let mut room = l.backlog - held;
                let mut k = 0;
                while k < l.holding.len() && room > 0 {
                    if l.holding[k].iface == iface {
                        let m = l.holding.remove(k);
                        self.tcp_mut(&m).pause_synack(false);
                        l.slots.push(m);
                        room -= 1;
                    } else {
                        k += 1;
                    }
                }
            } else {
                while l.holding.iter().filter(|m| m.iface == iface).count() < HOLDING_LISTENERS {
                    match self.new_listen_slot(sock, iface, local) {
                        Ok(m) => {
                            self.tcp_mut(&m).pause_synack(true);
                            l.holding.push(m);
                        }
                        Err(_) => break,
                    }
                }
            }
            // Slots freed by expired handshakes beyond the ready few are given back.
            let mut idle_seen = 0;
            let mut k = 0;
            while k < l.slots.len() {
                let m = l.slots[k];
                if m.iface == iface && self.tcp_ref(&m).state() == tcp::State::Listen {
                    idle_seen += 1;
                    if idle_seen > IDLE_LISTENERS {
                        self.drop_member(l.slots.remove(k));
                        continue;
                    }
                }
                k += 1;
            }
            loop {
                let on_iface = |m: &&Member| m.iface == iface;
                let idle = l.slots.iter().filter(on_iface).filter(|m| self.tcp_ref(m).state() == tcp::State::Listen).count();
                let held = l.slots.iter().chain(l.queue.iter()).filter(on_iface).count();
                if idle >= IDLE_LISTENERS || held >= l.backlog {
                    break;
                }
                match self.new_listen_slot(sock, iface, local) {
                    Ok(m) => l.slots.push(m),
                    Err(_) => break,
                }
            }
        }
        sock.body = Body::Tcp(Tcp::Listening(l));
    }

    /// Accepts a pending connection: its socket id and the peer's address; `EAGAIN`
    /// if none is pending, `EINVAL` if not listening.
    pub fn accept(&mut self, id: SocketId) -> SysResult<(SocketId, SocketAddrV4)> {
        if self.socks.len() >= self.cfg.max_sockets {
            return Err(Errno::ENFILE);
        }
        let (m, peer, uid, opts) = self.with_sock(id, |st, sock| {
            let Body::Tcp(Tcp::Listening(l)) = &mut sock.body else { return Err(Errno::EINVAL) };
            let m = l.queue.pop_front().ok_or(Errno::EAGAIN)?;
            let peer = st.tcp_ref(&m).remote_endpoint().map(ep_to_v4);
            st.rearm(sock);
            Ok((m, peer, sock.uid, sock.opts.clone()))
        })??;
        apply_tcp_opts(self.tcp_mut(&m), &opts);
        let local = self.tcp_ref(&m).local_endpoint().map(ep_to_v4);
        let (Some(peer), Some(local)) = (peer, local) else {
            self.drop_member(m);
            return Err(Errno::ECONNABORTED);
        };
        let mut new_id = self.next_id;
        while self.socks.contains_key(&new_id) || new_id == 0 {
            new_id = new_id.wrapping_add(1);
        }
        self.next_id = new_id.wrapping_add(1);
        self.next_inode += 1;
        let mark = {
            let s = self.tcp_ref(&m);
            (s.recv_queue(), s.send_queue())
        };
        let sock = Sock {
            body: Body::Tcp(Tcp::Connected(Conn {
                m,
                peer,
                peer_fin: false,
                closed: false,
                last_progress: self.now,
                mark,
            })),
            uid,
            inode: self.next_inode,
            opts,
            local: Some(local),
            error: None,
            shut_rd: false,
            shut_wr: false,
            reserve: 0,
            seen: Snap::default(),
            generation: 0,
        };
        self.socks.insert(new_id, sock);
        let new_id = SocketId(new_id);
        let _ = self.with_sock(new_id, |_, _| ());
        Ok((new_id, peer))
    }

    /// Connects. TCP: starts the handshake and answers `EINPROGRESS` (then `EALREADY`
    /// while it runs, `EISCONN` once connected, the failure once if it failed); UDP:
    /// sets the default peer.
    pub fn connect(&mut self, id: SocketId, addr: SocketAddrV4) -> SysResult<()> {
        self.with_sock(id, |st, sock| {
            // Linux treats INADDR_ANY as "this host".
            let addr = if addr.ip().is_unspecified() { SocketAddrV4::new(Ipv4Addr::LOCALHOST, addr.port()) } else { addr };
            match &sock.body {
                Body::Tcp(Tcp::Connecting { .. }) => return Err(Errno::EALREADY),
                Body::Tcp(Tcp::Connected(_)) => return Err(Errno::EISCONN),
                Body::Tcp(Tcp::Listening(_)) => return Err(Errno::EINVAL),
                Body::Tcp(Tcp::Closed) => {
                    if let Some(e) = sock.error.take() {
                        return Err(e);
                    }
                }
                Body::Udp(_) | Body::Icmp { .. } => {
                    if addr.ip().is_broadcast() && !sock.opts.broadcast {
                        return Err(Errno::EACCES);
                    }
                    st.route(*addr.ip()).ok_or(Errno::ENETUNREACH)?;
                    if sock.local.is_none() {
                        st.autobind(sock)?;
                        st.open_dgram(sock)?;
                    }
                    if let Body::Udp(d) | Body::Icmp { d, .. } = &mut sock.body {
                        d.peer = Some(addr);
                    }
                    return Ok(());
                }
            }
            if addr.port() == 0 {
                return Err(Errno::ECONNREFUSED);
            }
            if addr.ip().is_broadcast() || addr.ip().is_multicast() {
                return Err(Errno::ENETUNREACH);
            }
            let iface = st.route(*addr.ip()).ok_or(Errno::ENETUNREACH)?;
            let local = st.autobind(sock)?;
            let cost = sock.opts.rcvbuf + sock.opts.sndbuf;
            st.spend(sock, cost)?;
            let mut s = new_tcp(sock.opts.rcvbuf, sock.opts.sndbuf, &sock.opts);
            s.set_timeout(Some(st.cfg.connect_timeout));
            let cx = st.ifaces[iface].iface.context();
            if s.connect(cx, (IpAddress::Ipv4(*addr.ip()), addr.port()), listen_ep(*local.ip(), local.port())).is_err() {
                st.release(cost);
                return Err(Errno::ENETUNREACH);
            }
            let handle = st.ifaces[iface].sockets.add(s);
            sock.body = Body::Tcp(Tcp::Connecting {
                m: Member { iface, handle, charge: cost },
                peer: addr,
                started: st.now,
            });
            Err(Errno::EINPROGRESS)
        })?
    }

    /// The outcome of a TCP connect in progress: `Ok` once connected, the error
    /// (`ECONNREFUSED`, `ETIMEDOUT`, ...) once failed (clearing `SO_ERROR`),
    /// `EINPROGRESS` while the handshake runs. Blocking `connect(2)` waits for
    /// `POLLOUT|POLLERR` and then calls this.
    pub fn finish_connect(&mut self, id: SocketId) -> SysResult<()> {
        self.with_sock(id, |_, sock| match &sock.body {
            Body::Tcp(Tcp::Connecting { .. }) => Err(Errno::EINPROGRESS),
            Body::Tcp(Tcp::Connected(_)) => Ok(()),
            _ => Err(sock.error.take().unwrap_or(Errno::ENOTCONN)),
        })?
    }

    /// Updates a socket from its smoltcp sockets' states: connects that finished or
    /// failed, resets, peer FINs.
    fn refresh(&mut self, sock: &mut Sock) {
        let now = self.now;
        let timeout = self.cfg.connect_timeout;
        let body = core::mem::replace(&mut sock.body, Body::Tcp(Tcp::Closed));
        sock.body = match body {
            Body::Tcp(Tcp::Connecting { m, peer, started }) => {
                let s = self.tcp_mut(&m);
                match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => Body::Tcp(Tcp::Connecting { m, peer, started }),
                    tcp::State::Closed => {
                        // smoltcp does not say why: a RST before the connect timeout
                        // means refused, otherwise the handshake timed out.
                        let timed_out = now >= started + timeout - Duration::from_millis(1);
                        sock.error = Some(if timed_out { Errno::ETIMEDOUT } else { Errno::ECONNREFUSED });
                        self.drop_member(m);
                        Body::Tcp(Tcp::Closed)
                    }
                    _ => {
                        apply_tcp_opts(s, &sock.opts);
                        let local = s.local_endpoint().map(ep_to_v4);
                        let mark = (s.recv_queue(), s.send_queue());
                        if let (Some(local), Some(bound)) = (local, sock.local) {
                            sock.local = Some(SocketAddrV4::new(*local.ip(), bound.port()));
                        }
                        Body::Tcp(Tcp::Connected(Conn { m, peer, peer_fin: false, closed: false, last_progress: now, mark }))
                    }
                }
            }
            Body::Tcp(Tcp::Connected(mut c)) => {
                let s = self.tcp_ref(&c.m);
                let mark = (s.recv_queue(), s.send_queue());
                if mark != c.mark {
                    c.mark = mark;
                    c.last_progress = now;
                }
                match s.state() {
                    tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing | tcp::State::TimeWait => {
                        c.peer_fin = true
                    }
                    tcp::State::Closed if !c.closed => {
                        c.closed = true;
                        let orderly = c.peer_fin && sock.shut_wr;
                        if !orderly {
                            let idle_out = sock.opts.keepalive
                                && s.timeout().is_some_and(|t| now >= c.last_progress + t - Duration::from_millis(1));
                            sock.error = Some(if idle_out { Errno::ETIMEDOUT } else { Errno::ECONNRESET });
                        }
                    }
                    _ => {}
                }
                Body::Tcp(Tcp::Connected(c))
            }
            other => other,
        };
        self.take_icmp_errors(sock);
    }

    /// Sends on a connected socket (TCP) or to the default peer (UDP).
    pub fn send(&mut self, id: SocketId, data: &[u8], flags: i32) -> SysResult<usize> {
        self.send_to(id, data, None, flags)
    }

    /// Sends: TCP queues what fits (`EAGAIN` if nothing fits, `EPIPE` after
    /// `shutdown(SHUT_WR)` or a close, `ECONNRESET` once after a reset); UDP/ICMP send
    /// one datagram to `to` or the connected peer.
    pub fn send_to(&mut self, id: SocketId, data: &[u8], to: Option<SocketAddrV4>, _flags: i32) -> SysResult<usize> {
        self.with_sock(id, |st, sock| match &sock.body {
            Body::Tcp(t) => {
                let m = match t {
                    Tcp::Connected(c) => c.m,
                    Tcp::Connecting { .. } => return Err(Errno::EAGAIN),
                    _ => return Err(sock.error.take().unwrap_or(Errno::EPIPE)),
                };
                if let Some(e) = sock.error.take() {
                    return Err(e);
                }
                if sock.shut_wr {
                    return Err(Errno::EPIPE);
                }
                let s = st.tcp_mut(&m);
                if !s.may_send() {
                    return Err(Errno::EPIPE);
                }
                if data.is_empty() {
                    return Ok(0);
                }
                match s.send_slice(data) {
                    Ok(0) => Err(Errno::EAGAIN),
                    Ok(n) => Ok(n),
                    Err(_) => Err(Errno::EPIPE),
                }
            }
            Body::Udp(_) | Body::Icmp { .. } => st.send_dgram(sock, data, to),
        })?
    }

    fn send_dgram(&mut self, sock: &mut Sock, data: &[u8], to: Option<SocketAddrV4>) -> SysResult<usize> {
        let (peer, is_udp) = match &sock.body {
            Body::Udp(d) => (d.peer, true),
            Body::Icmp { d, .. } => (d.peer, false),
            Body::Tcp(_) => return Err(Errno::EOPNOTSUPP),
        };
        // A pending error (an ICMP error about an earlier datagram) is reported first.
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        let to = to.or(peer).ok_or(Errno::EDESTADDRREQ)?;
        if to.ip().is_broadcast() && !sock.opts.broadcast {
            return Err(Errno::EACCES);
        }
        if is_udp && to.port() == 0 {
            return Err(Errno::EINVAL);
        }
        if sock.local.is_none() {
            self.autobind(sock)?;
            self.open_dgram(sock)?;
        }
        let iface = self.route(*to.ip()).ok_or(Errno::ENETUNREACH)?;
        let members = match &sock.body {
            Body::Udp(d) | Body::Icmp { d, .. } => d.members.clone(),
            Body::Tcp(_) => Vec::new(),
        };
        let m = members.iter().find(|m| m.iface == iface).copied().ok_or(Errno::ENETUNREACH)?;
        let dst = IpAddress::Ipv4(*to.ip());
        if is_udp {
            let s = self.udp_mut(&m);
            // Beyond loopback, datagrams larger than smoltcp's fragmentation buffer
            // (16 KiB, see Cargo.toml) could not be sent: refuse them instead of
            // dropping them silently.
            let limit = if iface == 0 { 65507 } else { MAX_FRAGMENTED_UDP };
            if data.len() > s.payload_send_capacity() || data.len() > limit {
                return Err(Errno::EMSGSIZE);
            }
            match s.send_slice(data, IpEndpoint::new(dst, to.port())) {
                Ok(()) => Ok(data.len()),
                Err(udp::SendError::BufferFull) => Err(Errno::EAGAIN),
                Err(udp::SendError::Unaddressable) => Err(Errno::EINVAL),
            }
        } else {
            // An ICMP message: type, code, checksum, then (for echo) identifier and
            // sequence. The socket receives replies to the identifier it sends with.
            if data.len() < 8 {
                return Err(Errno::EINVAL);
            }
            let ident = u16::from_be_bytes([data[4], data[5]]);
            let bound = match &sock.body {
                Body::Icmp { ident: i, .. } => *i,
                _ => None,
            };
            let mut members = members;
            if bound != Some(ident) {
                if bound.is_some() {
                    // smoltcp binds an ICMP socket once: a new identifier gets new sockets.
                    for m in members.drain(..) {
                        self.drop_member(m);
                    }
                    if let Body::Icmp { d, ident: i, .. } = &mut sock.body {
                        d.members.clear();
                        *i = None;
                    }
                    self.open_dgram(sock)?;
                    if let Body::Icmp { d, .. } = &sock.body {
                        members = d.members.clone();
                    }
                }
                for m in &members {
                    let _ = self.icmp_mut(m).bind(icmp::Endpoint::Ident(ident));
                }
                if let Body::Icmp { ident: i, .. } = &mut sock.body {
                    *i = Some(ident);
                }
            }
            let m = members.iter().find(|m| m.iface == iface).copied().ok_or(Errno::ENETUNREACH)?;
            let s = self.icmp_mut(&m);
            if data.len() > s.payload_send_capacity() {
                return Err(Errno::EMSGSIZE);
            }
            match s.send_slice(data, dst) {
                Ok(()) => Ok(data.len()),
                Err(icmp::SendError::BufferFull) => Err(Errno::EAGAIN),
                Err(icmp::SendError::Unaddressable) => Err(Errno::EINVAL),
            }
        }
    }

    /// Receives. TCP: up to `buf.len()` bytes, `Ok(0)` at end of stream, `EAGAIN`
    /// when nothing is there yet, `ECONNRESET` once after a reset; UDP/ICMP: one
    /// datagram (truncated to `buf`, the rest discarded). `flags` may hold
    /// [`msg::PEEK`].
    pub fn recv_from(&mut self, id: SocketId, buf: &mut [u8], flags: i32) -> SysResult<RecvInfo> {
        let peek = flags & msg::PEEK != 0;
        self.with_sock(id, |st, sock| match &sock.body {
            Body::Tcp(t) => {
                let c = match t {
                    Tcp::Connected(c) => c,
                    Tcp::Connecting { .. } => return Err(Errno::EAGAIN),
                    _ => return Err(Errno::ENOTCONN),
                };
                let (m, peer_fin, closed) = (c.m, c.peer_fin, c.closed);
                let s = st.tcp_mut(&m);
                if s.recv_queue() > 0 && !buf.is_empty() {
                    let n = if peek { s.peek_slice(buf) } else { s.recv_slice(buf) }.unwrap_or(0);
                    return Ok(RecvInfo { len: n, from: None, full_len: n });
                }
                if buf.is_empty() {
                    return Ok(RecvInfo { len: 0, from: None, full_len: 0 });
                }
                if let Some(e) = sock.error.take() {
                    return Err(e);
                }
                if sock.shut_rd || peer_fin || closed {
                    return Ok(RecvInfo { len: 0, from: None, full_len: 0 });
                }
                Err(Errno::EAGAIN)
            }
            Body::Udp(_) | Body::Icmp { .. } => st.recv_dgram(sock, buf, peek),
        })?
    }

    /// How many bytes a send on a TCP socket can queue now (its free send buffer);
    /// `EAGAIN` while a connected socket's buffer is full or it is still connecting.
    /// Anything else (a datagram socket, an error, a closed or shut-down socket) is
    /// `usize::MAX`: the send itself then takes or refuses the whole call. The system
    /// call copies no more than this from the caller.
    pub fn send_room(&mut self, id: SocketId) -> SysResult<usize> {
        self.with_sock(id, |st, sock| match &sock.body {
            Body::Tcp(Tcp::Connected(c)) if sock.error.is_none() && !sock.shut_wr => {
                let s = st.tcp_ref(&c.m);
                if !s.may_send() {
                    return Ok(usize::MAX);
                }
                match s.send_capacity() - s.send_queue() {
                    0 => Err(Errno::EAGAIN),
                    n => Ok(n),
                }
            }
            Body::Tcp(Tcp::Connecting { .. }) => Err(Errno::EAGAIN),
            _ => Ok(usize::MAX),
        })?
    }

    /// Bytes a TCP socket holds for reading now, if any (`None`: nothing queued, or
    /// not a connected TCP socket). A receive stages no more than this.
    pub fn recv_ready(&mut self, id: SocketId) -> Option<usize> {
        let sock = self.socks.get(&id.0)?;
        let Body::Tcp(Tcp::Connected(c)) = &sock.body else { return None };
        let n = self.tcp_ref(&c.m).recv_queue();
        (n > 0).then_some(n)
    }

    fn recv_dgram(&mut self, sock: &mut Sock, buf: &mut [u8], peek: bool) -> SysResult<RecvInfo> {
        if let Some(e) = sock.error.take() {
            return Err(e);
        }
        let local_ip = sock.local.map(|l| *l.ip());
        let (d, raw, is_udp) = match &mut sock.body {
            Body::Udp(d) => (d, false, true),
            Body::Icmp { d, raw, .. } => (d, *raw, false),
            Body::Tcp(_) => return Err(Errno::EOPNOTSUPP),
        };
        let count = d.members.len();
        for k in 0..count {
            let idx = (d.next + k) % count;
            let m = d.members[idx];
            let peer = d.peer;
            if is_udp {
                let s = self.ifaces[m.iface].sockets.get_mut::<udp::Socket>(m.handle);
                // A connected UDP socket only takes datagrams from its peer.
                while let (Some(p), Ok((_, meta))) = (peer, s.peek()) {
                    if ep_to_v4(meta.endpoint) == p {
                        break;
                    }
                    let _ = s.recv();
                }
                let result = if peek {
                    s.peek().map(|(data, meta)| (data.len(), *meta, data))
                } else {
                    s.recv().map(|(data, meta)| (data.len(), meta, data))
                };
                if let Ok((full_len, meta, data)) = result {
                    let n = full_len.min(buf.len());
                    buf[..n].copy_from_slice(&data[..n]);
                    d.next = (idx + 1) % count;
                    return Ok(RecvInfo { len: n, from: Some(ep_to_v4(meta.endpoint)), full_len });
                }
            } else {
                let s = self.ifaces[m.iface].sockets.get_mut::<icmp::Socket>(m.handle);
                if peek {
                    // smoltcp's ICMP socket cannot peek; Linux ping never peeks.
                    if s.can_recv() {
                        return Err(Errno::EOPNOTSUPP);
                    }
                    continue;
                }
                if let Ok((data, from)) = s.recv() {
                    let IpAddress::Ipv4(from) = from;
                    let mut packet = Vec::with_capacity(data.len() + 20);
                    if raw {
                        let to = local_ip.filter(|a| !a.is_unspecified()).unwrap_or(Ipv4Addr::LOCALHOST);
                        packet.extend_from_slice(&ipv4_header(from, to, data.len()));
                    }
                    packet.extend_from_slice(data);
                    let n = packet.len().min(buf.len());
                    buf[..n].copy_from_slice(&packet[..n]);
                    d.next = (idx + 1) % count;
                    return Ok(RecvInfo { len: n, from: Some(SocketAddrV4::new(from, 0)), full_len: packet.len() });
                }
            }
        }
        if sock.shut_rd {
            return Ok(RecvInfo { len: 0, from: None, full_len: 0 });
        }
        Err(Errno::EAGAIN)
    }

    /// `shutdown(2)`.
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> SysResult<()> {
        self.with_sock(id, |st, sock| {
            let rd = matches!(how, Shutdown::Read | Shutdown::Both);
            let wr = matches!(how, Shutdown::Write | Shutdown::Both);
            match &sock.body {
                Body::Tcp(Tcp::Connected(c)) => {
                    let m = c.m;
                    if wr && !sock.shut_wr {
                        st.tcp_mut(&m).close();
                    }
                }
                Body::Tcp(Tcp::Listening(_)) if rd => {
                    // Linux: shutdown(SHUT_RD) on a listener makes accept fail.
                }
                Body::Tcp(_) => return Err(Errno::ENOTCONN),
                Body::Udp(d) | Body::Icmp { d, .. } => {
                    if d.peer.is_none() {
                        return Err(Errno::ENOTCONN);
                    }
                }
            }
            sock.shut_rd |= rd;
            sock.shut_wr |= wr;
            Ok(())
        })?
    }

    // ----------------------------------------------------------------- addresses, options

    /// `getsockname(2)`: the bound address (`0.0.0.0:0` before binding). A connected
    /// UDP socket bound to `0.0.0.0` reports the source address the route to its peer
    /// uses (programs learn their outgoing address that way).
    pub fn local_addr(&self, id: SocketId) -> SysResult<SocketAddrV4> {
        let sock = self.socks.get(&id.0).ok_or(Errno::EBADF)?;
        let local = sock.local.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        if let (Body::Udp(Dgram { peer: Some(peer), .. }), true) = (&sock.body, local.ip().is_unspecified()) {
            let source = if peer.ip().is_loopback() {
                Ipv4Addr::LOCALHOST
            } else if self.is_local_addr(*peer.ip()) {
                *peer.ip()
            } else {
                self.route(*peer.ip()).and_then(|i| self.ifaces[i].addr).map_or(Ipv4Addr::UNSPECIFIED, |(a, _)| a)
            };
            return Ok(SocketAddrV4::new(source, local.port()));
        }
        Ok(local)
    }

    /// `getpeername(2)`: `ENOTCONN` unless connected.
    pub fn peer_addr(&self, id: SocketId) -> SysResult<SocketAddrV4> {
        let sock = self.socks.get(&id.0).ok_or(Errno::EBADF)?;
        match &sock.body {
            Body::Tcp(Tcp::Connected(c)) if !c.closed => Ok(c.peer),
            Body::Udp(d) | Body::Icmp { d, .. } => d.peer.ok_or(Errno::ENOTCONN),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// `setsockopt(2)` with Linux levels and names ([`opt`]); `value` is the option's
    /// bytes as the user passed them.
    pub fn setsockopt(&mut self, id: SocketId, level: i32, name: i32, value: &[u8]) -> SysResult<()> {
        self.with_sock(id, |st, sock| {
            let tcp_member = match &sock.body {
                Body::Tcp(Tcp::Connected(c)) => Some(c.m),
                Body::Tcp(Tcp::Connecting { m, .. }) => Some(*m),
                _ => None,
            };
            let is_tcp = matches!(sock.body, Body::Tcp(_));
            match (level, name) {
                (opt::SOL_SOCKET, opt::SO_REUSEADDR) => sock.opts.reuseaddr = read_int(value)? != 0,
                (opt::SOL_SOCKET, opt::SO_REUSEPORT) => sock.opts.reuseport = read_int(value)? != 0,
                (opt::SOL_SOCKET, opt::SO_BROADCAST) => sock.opts.broadcast = read_int(value)? != 0,
                (opt::SOL_SOCKET, opt::SO_KEEPALIVE) => sock.opts.keepalive = read_int(value)? != 0,
                (opt::SOL_SOCKET, opt::SO_RCVBUF) => sock.opts.rcvbuf = clamp_buf(read_int(value)?),
                (opt::SOL_SOCKET, opt::SO_SNDBUF) => sock.opts.sndbuf = clamp_buf(read_int(value)?),
                (opt::SOL_SOCKET, opt::SO_LINGER) => {
                    let bytes: [u8; 8] = value.get(..8).and_then(|b| b.try_into().ok()).ok_or(Errno::EINVAL)?;
                    let on = i32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let secs = i32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                    sock.opts.linger = (on != 0).then_some(secs.max(0) as u32);
                }
                (opt::SOL_SOCKET, opt::SO_RCVTIMEO | opt::SO_SNDTIMEO) => {
                    let tv: [u8; 16] = value.get(..16).and_then(|b| b.try_into().ok()).ok_or(Errno::EINVAL)?;
                    let usec = i64::from_ne_bytes([tv[8], tv[9], tv[10], tv[11], tv[12], tv[13], tv[14], tv[15]]);
                    if !(0..1_000_000).contains(&usec) {
                        return Err(Errno::EDOM);
                    }
                    if name == opt::SO_RCVTIMEO { sock.opts.rcvtimeo = tv } else { sock.opts.sndtimeo = tv }
                }
                (opt::IPPROTO_IP, opt::IP_TTL) => {
                    let v = read_int(value)?;
                    sock.opts.ttl = match v {
                        -1 => 64,
                        1..=255 => v as u8,
                        _ => return Err(Errno::EINVAL),
                    };
                }
                (opt::IPPROTO_TCP, opt::TCP_NODELAY) if is_tcp => sock.opts.nodelay = read_int(value)? != 0,
                (opt::IPPROTO_TCP, opt::TCP_KEEPIDLE | opt::TCP_KEEPINTVL | opt::TCP_KEEPCNT) if is_tcp => {
                    let v = read_int(value)?;
                    if !(1..=32767).contains(&v) {
                        return Err(Errno::EINVAL);
                    }
                    let v = v as u32;
                    match name {
                        opt::TCP_KEEPIDLE => sock.opts.keepidle = v,
                        opt::TCP_KEEPINTVL => sock.opts.keepintvl = v,
                        _ => sock.opts.keepcnt = v,
                    }
                }
                (opt::SOL_SOCKET, opt::SO_TYPE | opt::SO_ERROR | opt::SO_ACCEPTCONN | opt::SO_PROTOCOL | opt::SO_DOMAIN) => {
                    return Err(Errno::ENOPROTOOPT);
                }
                _ => return Err(Errno::ENOPROTOOPT),
            }
            if let Some(m) = tcp_member {
                let opts = sock.opts.clone();
                apply_tcp_opts(st.tcp_mut(&m), &opts);
            }
            Ok(())
        })?
    }

    /// `getsockopt(2)`: the option's bytes as Linux returns them (an `int`, a
    /// `struct linger` or a `struct timeval`). `SO_ERROR` clears the pending error.
    pub fn getsockopt(&mut self, id: SocketId, level: i32, name: i32) -> SysResult<Vec<u8>> {
        self.with_sock(id, |_, sock| {
            let int = |v: i32| v.to_ne_bytes().to_vec();
            let b = |v: bool| int(i32::from(v));
            let is_tcp = matches!(sock.body, Body::Tcp(_));
            Ok(match (level, name) {
                (opt::SOL_SOCKET, opt::SO_REUSEADDR) => b(sock.opts.reuseaddr),
                (opt::SOL_SOCKET, opt::SO_REUSEPORT) => b(sock.opts.reuseport),
                (opt::SOL_SOCKET, opt::SO_BROADCAST) => b(sock.opts.broadcast),
                (opt::SOL_SOCKET, opt::SO_KEEPALIVE) => b(sock.opts.keepalive),
                (opt::SOL_SOCKET, opt::SO_RCVBUF) => int(sock.opts.rcvbuf as i32),
                (opt::SOL_SOCKET, opt::SO_SNDBUF) => int(sock.opts.sndbuf as i32),
                (opt::SOL_SOCKET, opt::SO_ERROR) => int(sock.error.take().map_or(0, |e| e.0)),
                (opt::SOL_SOCKET, opt::SO_TYPE) => int(match sock.body {
                    Body::Tcp(_) => 1,
                    Body::Udp(_) => 2,
                    Body::Icmp { raw: true, .. } => 3,
                    Body::Icmp { raw: false, .. } => 2,
                }),
                (opt::SOL_SOCKET, opt::SO_PROTOCOL) => int(match sock.body {
                    Body::Tcp(_) => 6,
                    Body::Udp(_) => 17,
                    Body::Icmp { .. } => 1,
                }),
                (opt::SOL_SOCKET, opt::SO_DOMAIN) => int(2),
                (opt::SOL_SOCKET, opt::SO_ACCEPTCONN) => b(matches!(sock.body, Body::Tcp(Tcp::Listening(_)))),
                (opt::SOL_SOCKET, opt::SO_LINGER) => {
                    let mut v = b(sock.opts.linger.is_some());
                    v.extend_from_slice(&(sock.opts.linger.unwrap_or(0) as i32).to_ne_bytes());
                    v
                }
                (opt::SOL_SOCKET, opt::SO_RCVTIMEO) => sock.opts.rcvtimeo.to_vec(),
                (opt::SOL_SOCKET, opt::SO_SNDTIMEO) => sock.opts.sndtimeo.to_vec(),
                (opt::IPPROTO_IP, opt::IP_TTL) => int(i32::from(sock.opts.ttl)),
                (opt::IPPROTO_TCP, opt::TCP_NODELAY) if is_tcp => b(sock.opts.nodelay),
                (opt::IPPROTO_TCP, opt::TCP_KEEPIDLE) if is_tcp => int(sock.opts.keepidle as i32),
                (opt::IPPROTO_TCP, opt::TCP_KEEPINTVL) if is_tcp => int(sock.opts.keepintvl as i32),
                (opt::IPPROTO_TCP, opt::TCP_KEEPCNT) if is_tcp => int(sock.opts.keepcnt as i32),
                _ => return Err(Errno::ENOPROTOOPT),
            })
        })?
    }

    // ----------------------------------------------------------------- readiness

    /// The socket's events and wake-up generation.
    pub fn readiness(&mut self, id: SocketId) -> SysResult<Readiness> {
        self.with_sock(id, |_, sock| Readiness { events: sock.seen.events, generation: sock.generation })
    }

    fn snapshot(&self, sock: &Sock) -> Snap {
        let err = if sock.error.is_some() { events::ERR } else { 0 };
        match &sock.body {
            Body::Tcp(Tcp::Closed) => {
                if err != 0 {
                    // A failed connect: everything is reported, as on Linux.
                    Snap { events: events::IN | events::OUT | events::HUP | events::RDHUP | err, ..Snap::default() }
                } else {
                    Snap { events: events::OUT | events::HUP, ..Snap::default() }
                }
            }
            Body::Tcp(Tcp::Listening(l)) => Snap {
                events: if l.queue.is_empty() { 0 } else { events::IN },
                accq: l.queue.len(),
                ..Snap::default()
            },
            Body::Tcp(Tcp::Connecting { .. }) => Snap::default(),
            Body::Tcp(Tcp::Connected(c)) => {
                let s = self.tcp_ref(&c.m);
                let (rx, tx) = (s.recv_queue(), s.send_queue());
                let mut ev = err;
                let eof = sock.shut_rd || c.peer_fin || c.closed;
                if rx > 0 || eof || err != 0 {
                    ev |= events::IN;
                }
                if eof {
                    ev |= events::RDHUP;
                }
                if sock.shut_wr || c.closed || (s.may_send() && s.send_capacity() > tx) {
                    ev |= events::OUT;
                }
                if c.closed || (sock.shut_wr && (c.peer_fin || sock.shut_rd)) {
                    ev |= events::HUP;
                }
                Snap { events: ev, rx, tx, accq: 0 }
            }
            Body::Udp(d) | Body::Icmp { d, .. } => {
                let mut ev = err | events::OUT;
                let mut rx = 0;
                for m in &d.members {
                    let (can_recv, q) = match &sock.body {
                        Body::Udp(_) => {
                            let s = self.udp_ref(m);
                            (s.can_recv(), s.recv_queue())
                        }
                        _ => {
                            let s = self.icmp_ref(m);
                            (s.can_recv(), s.recv_queue())
                        }
                    };
                    if can_recv {
                        ev |= events::IN;
                    }
                    rx += q;
                }
                if sock.shut_rd {
                    ev |= events::IN | events::RDHUP;
                }
                Snap { events: ev, rx, tx: 0, accq: 0 }
            }
        }
    }

    fn update_readiness(&mut self, id: SocketId, sock: &mut Sock) {
        let now = self.snapshot(sock);
        let old = sock.seen;
        let gained = now.events & !old.events != 0;
        if gained || now.rx > old.rx || now.tx < old.tx || now.accq > old.accq {
            sock.generation += 1;
            self.changed.insert(id);
        }
        sock.seen = now;
    }

    /// After a poll: refresh every socket, re-arm listening pools, reap finished
    /// orphans, and advance the generation of sockets that became ready.
    pub(crate) fn service_sockets(&mut self) {
        // The table is taken out while its sockets are serviced (refresh, rearm and
        // update_readiness never look sockets up), instead of removing and
        // re-inserting each socket: this runs after every poll, over every socket.
        let mut socks = core::mem::take(&mut self.socks);
        for (&id, sock) in socks.iter_mut() {
            self.refresh(sock);
            if matches!(sock.body, Body::Tcp(Tcp::Listening(_))) {
                self.rearm(sock);
            }
            self.update_readiness(SocketId(id), sock);
        }
        debug_assert!(self.socks.is_empty(), "servicing sockets added a socket");
        self.socks = socks;
        let now = self.now;
        let orphans = core::mem::take(&mut self.orphans);
        for o in orphans {
            let s = self.tcp_ref(&o.m);
            let done = s.state() == tcp::State::Closed && s.remote_endpoint().is_none();
            // A closing connection that cannot even send its RST (no neighbor) is
            // dropped after the orphan timeout regardless.
            if done || now >= o.since + ORPHAN_TIMEOUT + ORPHAN_TIMEOUT {
                self.drop_member(o.m);
            } else {
                self.orphans.push(o);
            }
        }
        self.reap_lingering();
    }

    /// `FIONREAD`/`SIOCINQ`: bytes waiting to be read (TCP), or the size of the next
    /// datagram (UDP/ICMP, 0 if none); `EINVAL` on a listening socket, as Linux.
    pub fn pending_input(&mut self, id: SocketId) -> SysResult<usize> {
        self.with_sock(id, |st, sock| match &sock.body {
            Body::Tcp(Tcp::Listening(_)) => Err(Errno::EINVAL),
            Body::Tcp(Tcp::Connected(c)) => Ok(st.tcp_ref(&c.m).recv_queue()),
            Body::Tcp(_) => Ok(0),
            Body::Udp(d) => Ok(d
                .members
                .iter()
                .find_map(|m| st.udp_mut(m).peek().ok().map(|(data, _)| data.len()))
                .unwrap_or(0)),
            Body::Icmp { d, .. } => Ok(d.members.iter().map(|m| st.icmp_ref(m).recv_queue()).sum()),
        })?
    }

    /// `SIOCOUTQ`: bytes queued for sending and not yet acknowledged (TCP).
    pub fn pending_output(&mut self, id: SocketId) -> SysResult<usize> {
        self.with_sock(id, |st, sock| match &sock.body {
            Body::Tcp(Tcp::Listening(_)) => Err(Errno::EINVAL),
            Body::Tcp(Tcp::Connected(c)) => Ok(st.tcp_ref(&c.m).send_queue()),
            Body::Tcp(Tcp::Connecting { m, .. }) => Ok(st.tcp_ref(m).send_queue()),
            Body::Tcp(Tcp::Closed) => Ok(0),
            Body::Udp(d) => Ok(d.members.iter().map(|m| st.udp_ref(m).send_queue()).sum()),
            Body::Icmp { d, .. } => Ok(d.members.iter().map(|m| st.icmp_ref(m).send_queue()).sum()),
        })?
    }

    /// The `SO_RCVTIMEO`/`SO_SNDTIMEO` values (`struct timeval` bytes) the kernel
    /// applies when it blocks on this socket.
    pub fn timeouts(&self, id: SocketId) -> SysResult<([u8; 16], [u8; 16])> {
        let sock = self.socks.get(&id.0).ok_or(Errno::EBADF)?;
        Ok((sock.opts.rcvtimeo, sock.opts.sndtimeo))
    }

    /// The inode number of a socket (`socket:[N]`, `/proc/net/*`'s `inode` column).
    pub fn inode(&self, id: SocketId) -> SysResult<u64> {
        self.socks.get(&id.0).map(|s| s.inode).ok_or(Errno::EBADF)
    }
}

/// A 20-byte IPv4 header for a received ICMP message (raw sockets return it, and
/// `ping` reads the TTL and header length from it).
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) -> [u8; 20] {
    let total = (payload_len + 20).min(65535) as u16;
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = 1;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for pair in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}
