//! The Linux x86-64 ABI around sockets, for the system-call layer: `socket(2)`
//! arguments, `struct sockaddr_in`, and the `struct ifreq`/`struct ifconf` answers of
//! the interface ioctls BusyBox `ifconfig` and `route` use.

use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use crate::errno::{Errno, SysResult};
use crate::socket::SocketKind;
use crate::stack::InterfaceInfo;

/// `AF_UNSPEC`
pub const AF_UNSPEC: u16 = 0;
/// `AF_INET`
pub const AF_INET: u16 = 2;
/// `SOCK_STREAM`
pub const SOCK_STREAM: i32 = 1;
/// `SOCK_DGRAM`
pub const SOCK_DGRAM: i32 = 2;
/// `SOCK_RAW`
pub const SOCK_RAW: i32 = 3;
/// `SOCK_NONBLOCK` (a file flag; the caller keeps it)
pub const SOCK_NONBLOCK: i32 = 0o4000;
/// `SOCK_CLOEXEC` (a file flag; the caller keeps it)
pub const SOCK_CLOEXEC: i32 = 0o2000000;
/// `IPPROTO_ICMP`
pub const IPPROTO_ICMP: i32 = 1;
/// `IPPROTO_TCP`
pub const IPPROTO_TCP: i32 = 6;
/// `IPPROTO_UDP`
pub const IPPROTO_UDP: i32 = 17;
/// `ESOCKTNOSUPPORT`
pub const ESOCKTNOSUPPORT: Errno = Errno(94);

/// Decodes `socket(AF_INET, type, protocol)` into a socket kind and the file flags
/// (`SOCK_NONBLOCK`, `SOCK_CLOEXEC`) for the caller. Raw sockets need `uid` 0.
pub fn socket_kind(domain: i32, ty: i32, protocol: i32, uid: u32) -> SysResult<(SocketKind, i32)> {
    if domain != i32::from(AF_INET) {
        return Err(Errno::EAFNOSUPPORT);
    }
    let flags = ty & (SOCK_NONBLOCK | SOCK_CLOEXEC);
    let kind = match (ty & !(SOCK_NONBLOCK | SOCK_CLOEXEC), protocol) {
        (SOCK_STREAM, 0 | IPPROTO_TCP) => SocketKind::Stream,
        (SOCK_DGRAM, 0 | IPPROTO_UDP) => SocketKind::Datagram,
        (SOCK_DGRAM, IPPROTO_ICMP) => SocketKind::PingIcmp,
        (SOCK_RAW, IPPROTO_ICMP) if uid == 0 => SocketKind::RawIcmp,
        (SOCK_RAW, IPPROTO_ICMP) => return Err(Errno::EPERM),
        (SOCK_STREAM | SOCK_DGRAM | SOCK_RAW, _) => return Err(Errno::EPROTONOSUPPORT),
        _ => return Err(ESOCKTNOSUPPORT),
    };
    Ok((kind, flags))
}

/// Size of `struct sockaddr_in`.
pub const SOCKADDR_IN_LEN: usize = 16;

/// Decodes a `struct sockaddr_in` the user passed (`EINVAL` if too short,
/// `EAFNOSUPPORT` for another family).
pub fn decode_sockaddr_in(bytes: &[u8]) -> SysResult<SocketAddrV4> {
    if bytes.len() < SOCKADDR_IN_LEN {
        return Err(Errno::EINVAL);
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]);
    if family != AF_INET {
        return Err(Errno::EAFNOSUPPORT);
    }
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    Ok(SocketAddrV4::new(Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]), port))
}

/// Encodes a `struct sockaddr_in`.
pub fn encode_sockaddr_in(addr: SocketAddrV4) -> [u8; SOCKADDR_IN_LEN] {
    let mut out = [0u8; SOCKADDR_IN_LEN];
    out[0..2].copy_from_slice(&AF_INET.to_ne_bytes());
    out[2..4].copy_from_slice(&addr.port().to_be_bytes());
    out[4..8].copy_from_slice(&addr.ip().octets());
    out
}

/// Interface ioctl request numbers.
pub mod sioc {
    /// `SIOCGIFNAME` (by index)
    pub const GIFNAME: u32 = 0x8910;
    /// `SIOCGIFCONF`
    pub const GIFCONF: u32 = 0x8912;
    /// `SIOCGIFFLAGS`
    pub const GIFFLAGS: u32 = 0x8913;
    /// `SIOCGIFADDR`
    pub const GIFADDR: u32 = 0x8915;
    /// `SIOCGIFDSTADDR`
    pub const GIFDSTADDR: u32 = 0x8917;
    /// `SIOCGIFBRDADDR`
    pub const GIFBRDADDR: u32 = 0x8919;
    /// `SIOCGIFNETMASK`
    pub const GIFNETMASK: u32 = 0x891b;
    /// `SIOCGIFMETRIC`
    pub const GIFMETRIC: u32 = 0x891d;
    /// `SIOCGIFMTU`
    pub const GIFMTU: u32 = 0x8921;
    /// `SIOCGIFHWADDR`
    pub const GIFHWADDR: u32 = 0x8927;
    /// `SIOCGIFINDEX`
    pub const GIFINDEX: u32 = 0x8933;
    /// `SIOCGIFTXQLEN`
    pub const GIFTXQLEN: u32 = 0x8942;
    /// `SIOCGIFMAP` (device memory/IRQ map; all zeros, as for virtual NICs)
    pub const GIFMAP: u32 = 0x8970;
}

/// Size of `struct ifreq` on x86-64.
pub const IFREQ_LEN: usize = 40;
/// `IFNAMSIZ`
pub const IFNAMSIZ: usize = 16;
/// `ARPHRD_ETHER`
pub const ARPHRD_ETHER: u16 = 1;
/// `ARPHRD_LOOPBACK`
pub const ARPHRD_LOOPBACK: u16 = 772;

/// The interface name in an `ifreq` (NUL-terminated within `IFNAMSIZ`).
pub fn ifreq_name(ifreq: &[u8]) -> SysResult<&str> {
    let name = ifreq.get(..IFNAMSIZ).ok_or(Errno::EFAULT)?;
    let end = name.iter().position(|&b| b == 0).ok_or(Errno::EINVAL)?;
    core::str::from_utf8(&name[..end]).map_err(|_| Errno::EINVAL)
}

fn with_name(name: &str) -> [u8; IFREQ_LEN] {
    let mut out = [0u8; IFREQ_LEN];
    let n = name.len().min(IFNAMSIZ - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

fn put_addr(out: &mut [u8; IFREQ_LEN], addr: Ipv4Addr) {
    out[IFNAMSIZ..IFNAMSIZ + SOCKADDR_IN_LEN].copy_from_slice(&encode_sockaddr_in(SocketAddrV4::new(addr, 0)));
}

/// Answers a `SIOCGIF*` request on `ifreq` (the user's 40 bytes, name filled in) from
/// the interface list: the 40 bytes to copy back. `ENODEV` for an unknown name,
/// `EADDRNOTAVAIL` for the address of an unconfigured interface, `EINVAL` for a request
/// this does not answer.
pub fn ifreq_answer(interfaces: &[InterfaceInfo], request: u32, ifreq: &[u8]) -> SysResult<[u8; IFREQ_LEN]> {
    if ifreq.len() < IFREQ_LEN {
        return Err(Errno::EFAULT);
    }
    if request == sioc::GIFNAME {
        let index = u32::from_ne_bytes([ifreq[16], ifreq[17], ifreq[18], ifreq[19]]);
        let info = interfaces.iter().find(|i| i.index == index).ok_or(Errno::ENODEV)?;
        let mut out = with_name(&info.name);
        out[16..20].copy_from_slice(&index.to_ne_bytes());
        return Ok(out);
    }
    let name = ifreq_name(ifreq)?;
    let info = interfaces.iter().find(|i| i.name == name).ok_or(Errno::ENODEV)?;
    let mut out = with_name(&info.name);
    let int = |out: &mut [u8; IFREQ_LEN], v: u32| out[16..20].copy_from_slice(&v.to_ne_bytes());
    match request {
        sioc::GIFFLAGS => out[16..18].copy_from_slice(&(info.flags as u16).to_ne_bytes()),
        sioc::GIFADDR => put_addr(&mut out, info.ipv4.ok_or(Errno::EADDRNOTAVAIL)?.0),
        sioc::GIFNETMASK => put_addr(&mut out, info.netmask().ok_or(Errno::EADDRNOTAVAIL)?),
        sioc::GIFBRDADDR => put_addr(&mut out, info.broadcast.ok_or(Errno::EADDRNOTAVAIL)?),
        sioc::GIFDSTADDR => put_addr(&mut out, info.ipv4.ok_or(Errno::EADDRNOTAVAIL)?.0),
        sioc::GIFMTU => int(&mut out, info.mtu),
        sioc::GIFINDEX => int(&mut out, info.index),
        sioc::GIFMETRIC => int(&mut out, 0),
        sioc::GIFTXQLEN => int(&mut out, 1000),
        sioc::GIFMAP => {}
        sioc::GIFHWADDR => {
            let family = if info.mac.is_some() { ARPHRD_ETHER } else { ARPHRD_LOOPBACK };
            out[16..18].copy_from_slice(&family.to_ne_bytes());
            out[18..24].copy_from_slice(&info.mac.unwrap_or([0; 6]));
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(out)
}

/// The `ifreq` array `SIOCGIFCONF` fills (configured interfaces only, as Linux): at
/// most `room / IFREQ_LEN` entries; the length to report back is the result's length.
pub fn ifconf(interfaces: &[InterfaceInfo], room: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for info in interfaces {
        let Some((addr, _)) = info.ipv4 else { continue };
        if out.len() + IFREQ_LEN > room {
            break;
        }
        let mut entry = with_name(&info.name);
        put_addr(&mut entry, addr);
        out.extend_from_slice(&entry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::iff;
    use alloc::string::String;

    fn infos() -> Vec<InterfaceInfo> {
        let lo = InterfaceInfo {
            index: 1,
            name: String::from("lo"),
            flags: iff::UP | iff::LOOPBACK | iff::RUNNING,
            mtu: 65535,
            mac: None,
            ipv4: Some((Ipv4Addr::LOCALHOST, 8)),
            broadcast: None,
            gateway: None,
            config: None,
            counters: Default::default(),
        };
        let vmk0 = InterfaceInfo {
            index: 2,
            name: String::from("vmk0"),
            flags: iff::UP | iff::BROADCAST | iff::RUNNING | iff::MULTICAST,
            mtu: 1500,
            mac: Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            ipv4: Some((Ipv4Addr::new(10, 0, 2, 15), 24)),
            broadcast: Some(Ipv4Addr::new(10, 0, 2, 255)),
            gateway: None,
            config: None,
            counters: Default::default(),
        };
        alloc::vec![lo, vmk0]
    }

    #[test]
    fn socket_arguments_decode_like_linux() {
        assert_eq!(socket_kind(2, SOCK_STREAM | SOCK_NONBLOCK, 0, 1000), Ok((SocketKind::Stream, SOCK_NONBLOCK)));
        assert_eq!(socket_kind(2, SOCK_DGRAM | SOCK_CLOEXEC, 17, 1000), Ok((SocketKind::Datagram, SOCK_CLOEXEC)));
        assert_eq!(socket_kind(2, SOCK_DGRAM, 1, 1000), Ok((SocketKind::PingIcmp, 0)));
        assert_eq!(socket_kind(2, SOCK_RAW, 1, 0), Ok((SocketKind::RawIcmp, 0)));
        assert_eq!(socket_kind(2, SOCK_RAW, 1, 1000), Err(Errno::EPERM));
        assert_eq!(socket_kind(10, SOCK_STREAM, 0, 0), Err(Errno::EAFNOSUPPORT));
        assert_eq!(socket_kind(2, SOCK_STREAM, 17, 0), Err(Errno::EPROTONOSUPPORT));
        assert_eq!(socket_kind(2, 5, 0, 0), Err(ESOCKTNOSUPPORT));
    }

    #[test]
    fn sockaddr_in_round_trips_and_refuses_bad_input() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 2), 8080);
        let bytes = encode_sockaddr_in(addr);
        assert_eq!(&bytes[..8], &[2, 0, 0x1f, 0x90, 10, 0, 2, 2]);
        assert_eq!(decode_sockaddr_in(&bytes), Ok(addr));
        assert_eq!(decode_sockaddr_in(&bytes[..15]), Err(Errno::EINVAL));
        let mut v6 = bytes;
        v6[0] = 10;
        assert_eq!(decode_sockaddr_in(&v6), Err(Errno::EAFNOSUPPORT));
    }

    #[test]
    fn ifreq_answers() {
        let infos = infos();
        let mut req = [0u8; IFREQ_LEN];
        req[..4].copy_from_slice(b"vmk0");
        let flags = ifreq_answer(&infos, sioc::GIFFLAGS, &req).unwrap();
        assert_eq!(&flags[..5], b"vmk0\0");
        assert_eq!(u16::from_ne_bytes([flags[16], flags[17]]), 0x1043);
        let addr = ifreq_answer(&infos, sioc::GIFADDR, &req).unwrap();
        assert_eq!(decode_sockaddr_in(&addr[16..32]).unwrap(), SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 15), 0));
        let mask = ifreq_answer(&infos, sioc::GIFNETMASK, &req).unwrap();
        assert_eq!(&mask[20..24], &[255, 255, 255, 0]);
        let brd = ifreq_answer(&infos, sioc::GIFBRDADDR, &req).unwrap();
        assert_eq!(&brd[20..24], &[10, 0, 2, 255]);
        let hw = ifreq_answer(&infos, sioc::GIFHWADDR, &req).unwrap();
        assert_eq!(u16::from_ne_bytes([hw[16], hw[17]]), ARPHRD_ETHER);
        assert_eq!(&hw[18..24], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let mtu = ifreq_answer(&infos, sioc::GIFMTU, &req).unwrap();
        assert_eq!(u32::from_ne_bytes([mtu[16], mtu[17], mtu[18], mtu[19]]), 1500);
        let idx = ifreq_answer(&infos, sioc::GIFINDEX, &req).unwrap();
        assert_eq!(idx[16], 2);
        let mut by_index = [0u8; IFREQ_LEN];
        by_index[16] = 1;
        assert_eq!(&ifreq_answer(&infos, sioc::GIFNAME, &by_index).unwrap()[..3], b"lo\0");
        let mut lo = [0u8; IFREQ_LEN];
        lo[..2].copy_from_slice(b"lo");
        let hw = ifreq_answer(&infos, sioc::GIFHWADDR, &lo).unwrap();
        assert_eq!(u16::from_ne_bytes([hw[16], hw[17]]), ARPHRD_LOOPBACK);
        assert_eq!(ifreq_answer(&infos, sioc::GIFBRDADDR, &lo), Err(Errno::EADDRNOTAVAIL));
        let mut eth9 = [0u8; IFREQ_LEN];
        eth9[..4].copy_from_slice(b"eth9");
        assert_eq!(ifreq_answer(&infos, sioc::GIFFLAGS, &eth9), Err(Errno::ENODEV));
        assert_eq!(ifreq_answer(&infos, sioc::GIFFLAGS, &[0xff; IFREQ_LEN]), Err(Errno::EINVAL));
        assert_eq!(ifreq_answer(&infos, sioc::GIFFLAGS, &req[..10]), Err(Errno::EFAULT));
        assert_eq!(ifreq_answer(&infos, 0x1234, &req), Err(Errno::EINVAL));
        assert_eq!(&ifreq_answer(&infos, sioc::GIFMAP, &req).unwrap()[16..], &[0u8; 24]);
    }

    #[test]
    fn ifconf_lists_configured_interfaces_within_the_buffer() {
        let mut infos = infos();
        let all = ifconf(&infos, 4096);
        assert_eq!(all.len(), 2 * IFREQ_LEN);
        assert_eq!(&all[40..44], b"vmk0");
        assert_eq!(&all[60..64], &[10, 0, 2, 15]);
        assert_eq!(ifconf(&infos, 79).len(), IFREQ_LEN);
        infos[1].ipv4 = None;
        assert_eq!(ifconf(&infos, 4096).len(), IFREQ_LEN);
    }
}
