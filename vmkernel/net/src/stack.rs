//! The stack: interfaces (loopback + Ethernet), their configuration, polling, routing
//! and the memory budget. Socket operations live in [`crate::socket`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Cidr};

use crate::config::{AddressMode, MAX_DNS, NetConfig, prefix_to_netmask};
use crate::device::{Counted, IfStats, LOOPBACK_MTU, LoopbackDevice};
use crate::errno::{Errno, SysResult};
use crate::socket::{LINGER_TIMEOUT, Lingering, Orphan, Sock, SocketId};

/// Sizes and limits of a stack; [`StackConfig::default`] is what the VMkernel uses.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Total bytes of socket buffers (all receive and send buffers of all sockets,
    /// listening pools and closing connections together). Creating a socket or a
    /// buffer beyond it fails with `ENOBUFS`.
    pub buffer_budget: usize,
    /// At most this many sockets exist at once (`ENFILE` beyond).
    pub max_sockets: usize,
    /// Default TCP receive buffer (`SO_RCVBUF`) in bytes.
    pub tcp_rcvbuf: usize,
    /// Default TCP send buffer (`SO_SNDBUF`) in bytes.
    pub tcp_sndbuf: usize,
    /// Default UDP/ICMP receive buffer in bytes.
    pub dgram_rcvbuf: usize,
    /// Default UDP/ICMP send buffer in bytes.
    pub dgram_sndbuf: usize,
    /// A TCP connect gives up (`ETIMEDOUT`) after this long without an answer
    /// (Linux: about 130 s with 6 SYN retries).
    pub connect_timeout: Duration,
    /// Seed for smoltcp's initial sequence numbers and Mantle's ephemeral ports;
    /// the kernel passes a random value.
    pub random_seed: u64,
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            buffer_budget: 32 << 20,
            max_sockets: 4096,
            tcp_rcvbuf: 64 << 10,
            tcp_sndbuf: 64 << 10,
            dgram_rcvbuf: 64 << 10,
            dgram_sndbuf: 16 << 10,
            connect_timeout: Duration::from_secs(75),
            random_seed: 0x6d61_6e74_6c65,
        }
    }
}

/// An interface's Linux index (`lo` is 1, `vmk0` is 2, ...).
pub type IfIndex = u32;

/// Linux `IFF_*` interface flags (SIOCGIFFLAGS).
pub mod iff {
    /// Administratively up.
    pub const UP: u32 = 0x1;
    /// Has a broadcast address.
    pub const BROADCAST: u32 = 0x2;
    /// The loopback interface.
    pub const LOOPBACK: u32 = 0x8;
    /// Link is up (carrier).
    pub const RUNNING: u32 = 0x40;
    /// Supports multicast.
    pub const MULTICAST: u32 = 0x1000;
}

/// Packet counters of an interface, as `/proc/net/dev` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Multicast packets received.
    pub rx_multicast: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

impl From<&IfStats> for IfCounters {
    fn from(s: &IfStats) -> Self {
        IfCounters {
            rx_bytes: s.rx_bytes.get(),
            rx_packets: s.rx_packets.get(),
            rx_multicast: s.rx_multicast.get(),
            tx_bytes: s.tx_bytes.get(),
            tx_packets: s.tx_packets.get(),
            tx_dropped: s.tx_dropped.get(),
        }
    }
}

/// What the interface ioctls (SIOCGIFCONF/FLAGS/ADDR/NETMASK/BRDADDR/HWADDR/MTU) and
/// `vmkcli net` report about an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Linux interface index.
    pub index: IfIndex,
    /// `lo`, `vmk0`, ...
    pub name: String,
    /// `IFF_*` flags ([`iff`]).
    pub flags: u32,
    /// MTU in bytes.
    pub mtu: u32,
    /// The MAC address (`None` for loopback).
    pub mac: Option<[u8; 6]>,
    /// The IPv4 address and prefix length, once configured.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// The subnet's broadcast address (Ethernet interfaces with an address).
    pub broadcast: Option<Ipv4Addr>,
    /// The default gateway through this interface.
    pub gateway: Option<Ipv4Addr>,
    /// The configuration in force (`None` for loopback).
    pub config: Option<NetConfig>,
    /// Packet counters.
    pub counters: IfCounters,
}

impl InterfaceInfo {
    /// The netmask of the IPv4 address (SIOCGIFNETMASK).
    pub fn netmask(&self) -> Option<Ipv4Addr> {
        self.ipv4.map(|(_, p)| prefix_to_netmask(p))
    }
}

/// One row of the IPv4 routing table (`/proc/net/route`, `route -n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// Interface name.
    pub iface: String,
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Gateway (`0.0.0.0` for a directly connected network).
    pub gateway: Ipv4Addr,
    /// Netmask of the destination.
    pub mask: Ipv4Addr,
    /// `RTF_UP` (1) | `RTF_GATEWAY` (2).
    pub flags: u16,
}

/// One interface: smoltcp's `Interface` and the sockets it serves.
///
/// Each interface has a socket set of its own: smoltcp sends every socket of a set out of
/// the interface it is polled with, so sharing one set between interfaces would send
/// loopback traffic to the wire and vice versa.
pub(crate) struct Iface {
    pub name: String,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub mac: Option<EthernetAddress>,
    pub mtu: usize,
    pub link_up: bool,
    pub config: Option<NetConfig>,
    pub dhcp: Option<SocketHandle>,
    pub addr: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers learned by DHCP.
    pub dhcp_dns: Vec<Ipv4Addr>,
}

impl Iface {
    pub(crate) fn is_loopback(&self) -> bool {
        self.mac.is_none()
    }
}

/// Packets taken from one device per poll before the stack returns (the rest waits for
/// the next poll, which the returned delay of zero asks for): polling stays bounded
/// under a flood.
const INGRESS_BUDGET: usize = 256;
/// `poll_egress` rounds per interface and poll: each sends up to one packet per socket
/// (a 64-entry transmit ring fills in one poll from one busy connection).
const EGRESS_ROUNDS: usize = 64;
/// Loopback delivery rounds per poll (each round receives what the last one sent).
const LOOPBACK_ROUNDS: usize = 16;

/// The VMkernel's TCP/IP stack: loopback plus Ethernet interfaces of device type `D`,
/// and the sockets on them.
pub struct NetStack<D: Device> {
    pub(crate) cfg: StackConfig,
    pub(crate) ifaces: Vec<Iface>,
    pub(crate) lo_dev: LoopbackDevice,
    pub(crate) eth_devs: Vec<Counted<D>>,
    pub(crate) socks: BTreeMap<u32, Sock>,
    pub(crate) orphans: Vec<Orphan>,
    /// Closed UDP sockets still sending their queued datagrams, oldest first.
    pub(crate) lingering: alloc::collections::VecDeque<Lingering>,
    pub(crate) next_id: u32,
    pub(crate) next_inode: u64,
    pub(crate) budget_used: usize,
    pub(crate) port_cursor: u16,
    pub(crate) changed: alloc::collections::BTreeSet<SocketId>,
    pub(crate) now: Instant,
    pub(crate) static_dns: Vec<Ipv4Addr>,
    /// Ids of listening sockets (their pools are topped up between packets).
    pub(crate) listeners: Vec<u32>,
}

impl<D: Device> NetStack<D> {
    /// A stack with only the loopback interface `lo` (127.0.0.1/8).
    pub fn new(cfg: StackConfig, now: Instant) -> Self {
        let mut lo_dev = LoopbackDevice::default();
        let mut lo_config = Config::new(HardwareAddress::Ip);
        lo_config.random_seed = cfg.random_seed;
        let mut iface = Interface::new(lo_config, &mut lo_dev, now);
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
        });
        let lo = Iface {
            name: String::from("lo"),
            iface,
            sockets: SocketSet::new(Vec::new()),
            mac: None,
            mtu: LOOPBACK_MTU,
            link_up: true,
            config: None,
            dhcp: None,
            addr: Some((Ipv4Addr::LOCALHOST, 8)),
            gateway: None,
            dhcp_dns: Vec::new(),
        };
        let port_cursor = (cfg.random_seed % u64::from(crate::socket::EPHEMERAL_COUNT)) as u16;
        NetStack {
            cfg,
            ifaces: alloc::vec![lo],
            lo_dev,
            eth_devs: Vec::new(),
            socks: BTreeMap::new(),
            orphans: Vec::new(),
            lingering: alloc::collections::VecDeque::new(),
            next_id: 1,
            next_inode: 1000,
            budget_used: 0,
            port_cursor,
            changed: alloc::collections::BTreeSet::new(),
            now,
            static_dns: Vec::new(),
            listeners: Vec::new(),
        }
    }

    /// Adds an Ethernet interface (`vmk0` for the first) on `device` with MAC `mac`,
    /// link down and unconfigured until [`NetStack::set_link`] and
    /// [`NetStack::configure`]. Returns its index.
    pub fn add_ethernet(&mut self, device: D, mac: [u8; 6], now: Instant) -> IfIndex {
        let mut dev = Counted { inner: device, stats: IfStats::default() };
        let mac = EthernetAddress(mac);
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = self.cfg.random_seed ^ (self.ifaces.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let iface = Interface::new(config, &mut dev, now);
        let mtu = dev.inner.capabilities().max_transmission_unit.saturating_sub(14).max(576);
        let name = format!("vmk{}", self.eth_devs.len());
        self.eth_devs.push(dev);
        self.ifaces.push(Iface {
            name,
            iface,
            sockets: SocketSet::new(Vec::new()),
            mac: Some(mac),
            mtu,
            link_up: false,
            config: None,
            dhcp: None,
            addr: None,
            gateway: None,
            dhcp_dns: Vec::new(),
        });
        let slot = self.ifaces.len() - 1;
        self.extend_wildcard_sockets(slot);
        self.ifaces.len() as IfIndex
    }

    /// The driver's device of an Ethernet interface (for the network world's interrupt
    /// path and for tests).
    pub fn device_mut(&mut self, index: IfIndex) -> Option<&mut D> {
        let slot = (index as usize).checked_sub(2)?;
        self.eth_devs.get_mut(slot).map(|d| &mut d.inner)
    }

    pub(crate) fn iface_slot(&self, index: IfIndex) -> SysResult<usize> {
        let slot = (index as usize).checked_sub(1).ok_or(Errno::ENODEV)?;
        if slot < self.ifaces.len() { Ok(slot) } else { Err(Errno::ENODEV) }
    }

    /// The index of the interface called `name`.
    pub fn if_index(&self, name: &str) -> Option<IfIndex> {
        self.ifaces.iter().position(|f| f.name == name).map(|i| i as IfIndex + 1)
    }

    /// Records the link state the driver reports (`IFF_RUNNING`).
    pub fn set_link(&mut self, index: IfIndex, up: bool) -> SysResult<()> {
        let slot = self.iface_slot(index)?;
        self.ifaces[slot].link_up = up;
        if !up {
            // Nothing leaves a downed link: closed sockets' datagrams are dropped now.
            self.reap_lingering();
        }
        Ok(())
    }

    /// Applies a configuration to an Ethernet interface now (no reboot): a static
    /// address replaces the current one at once; DHCP drops it and starts a DHCP client.
    pub fn configure(&mut self, index: IfIndex, config: &NetConfig) -> SysResult<()> {
        let slot = self.iface_slot(index)?;
        if self.ifaces[slot].is_loopback() {
            return Err(Errno::EINVAL);
        }
        let f = &mut self.ifaces[slot];
        if let Some(h) = f.dhcp.take() {
            f.sockets.remove(h);
        }
        f.dhcp_dns.clear();
        match config.mode {
            AddressMode::Dhcp => {
                set_address(f, None, None);
                f.dhcp = Some(f.sockets.add(dhcpv4::Socket::new()));
            }
            AddressMode::Static { address, prefix_len, gateway } => {
                set_address(f, Some((address, prefix_len)), gateway);
            }
        }
        f.config = Some(config.clone());
        self.static_dns = config.dns.clone();
        self.mirror_local_addresses();
        Ok(())
    }

    /// The loopback interface also answers on every Ethernet interface's address, as on
    /// Linux, where traffic to a host's own address goes through `lo`.
    fn mirror_local_addresses(&mut self) {
        let own: Vec<Ipv4Addr> = self.ifaces[1..].iter().filter_map(|f| f.addr.map(|(a, _)| a)).collect();
        self.ifaces[0].iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8));
            for a in own {
                // smoltcp's address table is small; further addresses are simply not mirrored.
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(a, 32)));
            }
        });
    }

    /// Advances the stack: receives (a bounded number of packets per device), runs
    /// timers, transmits, accepts into listening pools, updates socket readiness.
    /// Returns how long the network world may sleep before the next poll (`None`: until
    /// an interrupt or a system call), from smoltcp's `poll_delay`.
    pub fn poll(&mut self, now: Instant) -> Option<Duration> {
        self.now = now;
        let mut more = false;
        for _ in 0..LOOPBACK_ROUNDS {
            more |= self.ingress(0, now);
            let lo = &mut self.ifaces[0];
            egress(&mut lo.iface, &mut self.lo_dev, &mut lo.sockets, now);
            if !self.lo_dev.has_pending() {
                break;
            }
        }
        for slot in 1..self.ifaces.len() {
            more |= self.ingress(slot, now);
            let f = &mut self.ifaces[slot];
            more |= egress(&mut f.iface, &mut self.eth_devs[slot - 1], &mut f.sockets, now);
        }
        self.poll_dhcp();
        self.service_sockets();
        if more || self.lo_dev.has_pending() { Some(Duration::ZERO) } else { self.poll_delay(now) }
    }

    /// How long until the stack wants [`NetStack::poll`] again; after a system call
    /// that queued data this is zero.
    pub fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if self.lo_dev.has_pending() {
            return Some(Duration::ZERO);
        }
        // The oldest lingering socket is released at its deadline at the latest.
        let lingering = self.lingering.front().map(|l| {
            let deadline = l.since + LINGER_TIMEOUT;
            if deadline > now { deadline - now } else { Duration::ZERO }
        });
        self.ifaces.iter_mut().filter_map(|f| f.iface.poll_delay(now, &f.sockets)).chain(lingering).min()
    }

    fn poll_dhcp(&mut self) {
        let mut changed = false;
        for f in self.ifaces.iter_mut() {
            let Some(h) = f.dhcp else { continue };
            let event = match f.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                None => continue,
                Some(dhcpv4::Event::Configured(c)) => Some((c.address, c.router, c.dns_servers.clone())),
                Some(dhcpv4::Event::Deconfigured) => None,
            };
            match event {
                Some((cidr, router, dns)) => {
                    set_address(f, Some((cidr.address(), cidr.prefix_len())), router);
                    f.dhcp_dns = dns.iter().copied().collect();
                }
                None => {
                    set_address(f, None, None);
                    f.dhcp_dns.clear();
                }
            }
            changed = true;
        }
        if changed {
            self.mirror_local_addresses();
        }
    }

    /// Information on every interface, in index order (SIOCGIFCONF lists these).
    pub fn interfaces(&self) -> Vec<InterfaceInfo> {
        self.ifaces
            .iter()
            .enumerate()
            .map(|(slot, f)| {
                let counters = if slot == 0 {
                    IfCounters::from(&self.lo_dev.stats)
                } else {
                    IfCounters::from(&self.eth_devs[slot - 1].stats)
                };
                let mut flags = iff::UP;
                if f.link_up {
                    flags |= iff::RUNNING;
                }
                flags |= if f.is_loopback() { iff::LOOPBACK } else { iff::BROADCAST | iff::MULTICAST };
                let broadcast = match (f.is_loopback(), f.addr) {
                    (false, Some((a, p))) => Some(Ipv4Addr::from(u32::from(a) | !u32::from(prefix_to_netmask(p)))),
                    _ => None,
                };
                InterfaceInfo {
                    index: slot as IfIndex + 1,
                    name: f.name.clone(),
                    flags,
                    mtu: f.mtu as u32,
                    mac: f.mac.map(|m| m.0),
                    ipv4: f.addr,
                    broadcast,
                    gateway: f.gateway,
                    config: f.config.clone(),
                    counters,
                }
            })
            .collect()
    }

    /// The interface called `name` (the SIOCGIF* ioctls look interfaces up by name).
    pub fn interface(&self, name: &str) -> Option<InterfaceInfo> {
        self.interfaces().into_iter().find(|i| i.name == name)
    }

    /// The IPv4 routing table: each configured network, then default routes.
    pub fn routes(&self) -> Vec<RouteEntry> {
        let mut out = Vec::new();
        for f in self.ifaces.iter().skip(1) {
            if let Some(gw) = f.gateway {
                out.push(RouteEntry {
                    iface: f.name.clone(),
                    destination: Ipv4Addr::UNSPECIFIED,
                    gateway: gw,
                    mask: Ipv4Addr::UNSPECIFIED,
                    flags: 0x3,
                });
            }
        }
        for f in self.ifaces.iter().skip(1) {
            if let Some((a, p)) = f.addr {
                let mask = prefix_to_netmask(p);
                out.push(RouteEntry {
                    iface: f.name.clone(),
                    destination: Ipv4Addr::from(u32::from(a) & u32::from(mask)),
                    gateway: Ipv4Addr::UNSPECIFIED,
                    mask,
                    flags: 0x1,
                });
            }
        }
        out
    }

    /// The DNS servers in force: configured ones first, then those learned by DHCP
    /// (at most [`MAX_DNS`], no duplicates) — what `/etc/resolv.conf` lists.
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for d in self.static_dns.iter().chain(self.ifaces.iter().flat_map(|f| f.dhcp_dns.iter())) {
            if !out.contains(d) && out.len() < MAX_DNS {
                out.push(*d);
            }
        }
        out
    }

    /// Bytes of the buffer budget in use (socket buffers of every kind).
    pub fn budget_used(&self) -> usize {
        self.budget_used
    }

    /// Takes the sockets whose readiness changed since the last call (their wake-up
    /// generation advanced): the network world wakes their waiters.
    pub fn take_changed(&mut self) -> Vec<SocketId> {
        core::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Whether any socket's readiness changed since the last call (and forgets
    /// which): [`NetStack::take_changed`] without building the list.
    pub fn take_any_changed(&mut self) -> bool {
        let any = !self.changed.is_empty();
        self.changed.clear();
        any
    }

    /// The IPv4 address and prefix of interface `index` (cheaper than
    /// [`NetStack::interfaces`], for callers that look often).
    pub fn ipv4(&self, index: IfIndex) -> Option<(Ipv4Addr, u8)> {
        let slot = (index as usize).checked_sub(1)?;
        self.ifaces.get(slot)?.addr
    }

    pub(crate) fn charge(&mut self, bytes: usize) -> SysResult<()> {
        while self.budget_used.saturating_add(bytes) > self.cfg.buffer_budget {
            // Closed sockets' last datagrams give way to open sockets.
            let Some(l) = self.lingering.pop_front() else { return Err(Errno::ENOBUFS) };
            self.ifaces[l.m.iface].sockets.remove(l.m.handle);
            self.release(l.m.charge);
        }
        self.budget_used += bytes;
        Ok(())
    }

    pub(crate) fn release(&mut self, bytes: usize) {
        self.budget_used = self.budget_used.saturating_sub(bytes);
    }

    /// Which interface (slot) reaches `dst`: loopback for 127/8 and the host's own
    /// addresses, then a directly connected network, then a default route.
    pub(crate) fn route(&self, dst: Ipv4Addr) -> Option<usize> {
        if dst.is_loopback() || self.is_local_addr(dst) {
            return Some(0);
        }
        let eth = || self.ifaces.iter().enumerate().skip(1);
        if let Some((i, _)) = eth().find(|(_, f)| f.addr.is_some_and(|(a, p)| same_subnet(a, dst, p))) {
            return Some(i);
        }
        if dst.is_broadcast() {
            return eth().find(|(_, f)| f.link_up).map(|(i, _)| i);
        }
        eth().find(|(_, f)| f.gateway.is_some()).map(|(i, _)| i)
    }

    pub(crate) fn is_local_addr(&self, a: Ipv4Addr) -> bool {
        self.ifaces.iter().any(|f| f.addr.is_some_and(|(x, _)| x == a))
    }

    /// The interfaces (slots) a socket bound to `addr` listens on.
    pub(crate) fn placement(&self, addr: Ipv4Addr) -> SysResult<Vec<usize>> {
        if addr.is_unspecified() {
            return Ok((0..self.ifaces.len()).collect());
        }
        if addr.is_loopback() {
            return Ok(alloc::vec![0]);
        }
        match self.ifaces.iter().position(|f| !f.is_loopback() && f.addr.is_some_and(|(a, _)| a == addr)) {
            Some(i) => Ok(alloc::vec![0, i]),
            None => Err(Errno::EADDRNOTAVAIL),
        }
    }
}

pub(crate) fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix_len: u8) -> bool {
    let mask = u32::from(prefix_to_netmask(prefix_len));
    u32::from(a) & mask == u32::from(b) & mask
}

fn set_address(f: &mut Iface, addr: Option<(Ipv4Addr, u8)>, gateway: Option<Ipv4Addr>) {
    f.iface.update_ip_addrs(|addrs| {
        addrs.clear();
        if let Some((a, p)) = addr {
            let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(a, p)));
        }
    });
    f.iface.routes_mut().remove_default_ipv4_route();
    if let Some(gw) = gateway {
        // The table holds the default route only; this cannot be full.
        let _ = f.iface.routes_mut().add_default_ipv4_route(gw);
    }
    f.addr = addr;
    f.gateway = gateway;
}

/// Transmits what the sockets have to send: smoltcp's `poll_egress` sends at most one
/// packet per socket per call, so it is called again while it sent something, at most
/// [`EGRESS_ROUNDS`] times; it stops early when the device has no transmit buffer left
/// (smoltcp then leaves the rest queued in the sockets). True if the budget ran out
/// while sockets were still sending (poll again at once).
fn egress<Dev: Device>(iface: &mut Interface, dev: &mut Dev, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
    for _ in 0..EGRESS_ROUNDS {
        if iface.poll_egress(now, dev, sockets) == smoltcp::iface::PollResult::None {
            return false;
        }
    }
    true
}

impl<D: Device> NetStack<D> {
    /// Receives at most [`INGRESS_BUDGET`] packets on interface `slot`, topping up
    /// listening pools after each SYN; true if more may be waiting.
    fn ingress(&mut self, slot: usize, now: Instant) -> bool {
        for _ in 0..INGRESS_BUDGET {
            let f = &mut self.ifaces[slot];
            let result = if slot == 0 {
                f.iface.poll_ingress_single(now, &mut self.lo_dev, &mut f.sockets)
            } else {
                f.iface.poll_ingress_single(now, &mut self.eth_devs[slot - 1], &mut f.sockets)
            };
            if result == smoltcp::iface::PollIngressSingleResult::None {
                return false;
            }
            let stats = if slot == 0 { &self.lo_dev.stats } else { &self.eth_devs[slot - 1].stats };
            if stats.syn_seen.replace(false) && !self.listeners.is_empty() {
                self.rearm_listeners();
            }
        }
        true
    }
}
