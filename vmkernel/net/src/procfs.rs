//! The texts of `/proc/net/dev`, `/proc/net/route`, `/proc/net/tcp` and `/proc/net/udp`,
//! byte for byte in Linux's layout (BusyBox `ifconfig`, `route` and `netstat` parse
//! them with `sscanf`): addresses as the network-order 32-bit value printed in hex on a
//! little-endian machine (`127.0.0.1` → `0100007F`), ports in hex, lines padded with
//! spaces to Linux's fixed widths.

use alloc::string::String;
use core::fmt::Write;
use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::Device;
use smoltcp::socket::tcp;

use crate::socket::{Body, Tcp, linux_tcp_state};
use crate::stack::NetStack;

/// The two header lines of `/proc/net/dev`.
pub const DEV_HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";
/// The header of `/proc/net/route` (before padding to 127 columns).
pub const ROUTE_HEADER: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT";
/// The header of `/proc/net/tcp` (before padding to 149 columns).
pub const TCP_HEADER: &str =
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
/// The header of `/proc/net/udp` (before padding to 127 columns).
pub const UDP_HEADER: &str =
    "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops";

/// Linux prints `/proc/net/tcp` lines padded to `TMPSZ - 1`.
const TCP_WIDTH: usize = 149;
/// `/proc/net/udp` and `/proc/net/route` lines are padded to 127.
const UDP_WIDTH: usize = 127;

/// An IPv4 address as `/proc/net` prints it.
pub fn hex_addr(a: Ipv4Addr) -> u32 {
    u32::from_le_bytes(a.octets())
}

fn pad_line(out: &mut String, line: &str, width: usize) {
    let _ = writeln!(out, "{line:<width$}");
}

struct TcpRow {
    local: SocketAddrV4,
    remote: SocketAddrV4,
    state: u8,
    tx_queue: usize,
    rx_queue: usize,
    uid: u32,
    inode: u64,
}

fn tcp_line(out: &mut String, i: usize, r: &TcpRow) {
    let listen = r.state == 10;
    let line = alloc::format!(
        "{:4}: {:08X}:{:04X} {:08X}:{:04X} {:02X} {:08X}:{:08X} {:02X}:{:08X} {:08X} {:5} {:8} {} {} {:016x} {} {} {} {} {}",
        i,
        hex_addr(*r.local.ip()),
        r.local.port(),
        hex_addr(*r.remote.ip()),
        r.remote.port(),
        r.state,
        r.tx_queue,
        r.rx_queue,
        0,
        0,
        0,
        r.uid,
        0,
        r.inode,
        1,
        0,
        20,
        4,
        0,
        10,
        if listen { 0 } else { -1 },
    );
    pad_line(out, &line, TCP_WIDTH);
}

fn endpoint(ep: Option<smoltcp::wire::IpEndpoint>) -> SocketAddrV4 {
    match ep {
        Some(e) => {
            let smoltcp::wire::IpAddress::Ipv4(a) = e.addr;
            SocketAddrV4::new(a, e.port)
        }
        None => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
    }
}

impl<D: Device> NetStack<D> {
    /// `/proc/net/dev`.
    pub fn proc_net_dev(&self) -> String {
        let mut out = String::from(DEV_HEADER);
        for info in self.interfaces() {
            let c = info.counters;
            let _ = writeln!(
                out,
                "{:>6}: {:7} {:7} {:4} {:4} {:4} {:5} {:10} {:9} {:8} {:7} {:4} {:4} {:4} {:5} {:7} {:10}",
                info.name,
                c.rx_bytes,
                c.rx_packets,
                0,
                0,
                0,
                0,
                0,
                c.rx_multicast,
                c.tx_bytes,
                c.tx_packets,
                0,
                c.tx_dropped,
                0,
                0,
                0,
                0
            );
        }
        out
    }

    /// `/proc/net/route`.
    pub fn proc_net_route(&self) -> String {
        let mut out = String::new();
        pad_line(&mut out, ROUTE_HEADER, UDP_WIDTH);
        for r in self.routes() {
            let line = alloc::format!(
                "{}\t{:08X}\t{:08X}\t{:04X}\t{}\t{}\t{}\t{:08X}\t{}\t{}\t{}",
                r.iface,
                hex_addr(r.destination),
                hex_addr(r.gateway),
                r.flags,
                0,
                0,
                0,
                hex_addr(r.mask),
                0,
                0,
                0
            );
            pad_line(&mut out, &line, UDP_WIDTH);
        }
        out
    }

    /// `/proc/net/tcp`: listeners (one line each, as on Linux), handshaking and
    /// not-yet-accepted connections, connections, and closed ones still finishing.
    pub fn proc_net_tcp(&self) -> String {
        let mut rows = alloc::vec::Vec::new();
        let zero = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        let conn_row = |s: &tcp::Socket<'static>, uid: u32, inode: u64| TcpRow {
            local: endpoint(s.local_endpoint()),
            remote: endpoint(s.remote_endpoint()),
            state: linux_tcp_state(s.state()),
            tx_queue: s.send_queue(),
            rx_queue: s.recv_queue(),
            uid,
            inode,
        };
        for sock in self.socks.values() {
            let Body::Tcp(t) = &sock.body else { continue };
            match t {
                Tcp::Closed => {}
                Tcp::Listening(l) => {
                    rows.push(TcpRow {
                        local: sock.local.unwrap_or(zero),
                        remote: zero,
                        state: 10,
                        tx_queue: 0,
                        rx_queue: l.queue.len(),
                        uid: sock.uid,
                        inode: sock.inode,
                    });
                    for m in l.slots.iter().chain(l.queue.iter()).chain(l.holding.iter()) {
                        let s = self.tcp_ref(m);
                        if s.state() != tcp::State::Listen {
                            rows.push(conn_row(s, sock.uid, 0));
                        }
                    }
                }
                Tcp::Connecting { m, .. } => rows.push(conn_row(self.tcp_ref(m), sock.uid, sock.inode)),
                Tcp::Connected(c) => {
                    let s = self.tcp_ref(&c.m);
                    if s.state() != tcp::State::Closed {
                        rows.push(conn_row(s, sock.uid, sock.inode));
                    }
                }
            }
        }
        for o in &self.orphans {
            let s = self.tcp_ref(&o.m);
            if s.state() != tcp::State::Closed {
                rows.push(conn_row(s, o.uid, 0));
            }
        }
        let mut out = String::new();
        pad_line(&mut out, TCP_HEADER, TCP_WIDTH);
        for (i, r) in rows.iter().enumerate() {
            tcp_line(&mut out, i, r);
        }
        out
    }

    /// `/proc/net/udp`: bound UDP sockets (state 07, or 01 when connected).
    pub fn proc_net_udp(&self) -> String {
        let mut out = String::new();
        pad_line(&mut out, UDP_HEADER, UDP_WIDTH);
        for sock in self.socks.values() {
            let Body::Udp(d) = &sock.body else { continue };
            let Some(local) = sock.local else { continue };
            let remote = d.peer.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
            let rx: usize = d
                .members
                .iter()
                .map(|m| self.ifaces[m.iface].sockets.get::<smoltcp::socket::udp::Socket>(m.handle).recv_queue())
                .sum();
            let line = alloc::format!(
                "{:5}: {:08X}:{:04X} {:08X}:{:04X} {:02X} {:08X}:{:08X} {:02X}:{:08X} {:08X} {:5} {:8} {} {} {:016x} {}",
                local.port() % 128,
                hex_addr(*local.ip()),
                local.port(),
                hex_addr(*remote.ip()),
                remote.port(),
                if d.peer.is_some() { 1 } else { 7 },
                0,
                rx,
                0,
                0,
                0,
                sock.uid,
                0,
                sock.inode,
                2,
                0,
                0
            );
            pad_line(&mut out, &line, UDP_WIDTH);
        }
        out
    }

    /// `/etc/resolv.conf` for the DNS servers in force.
    pub fn resolv_conf(&self) -> String {
        crate::config::resolv_conf(&self.dns_servers())
    }
}
