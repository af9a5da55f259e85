//! The numbers vmk-net hands the system-call layer are Linux's: checked against the
//! host's libc.

use vmk_net::abi::{self, sioc};
use vmk_net::stack::iff;
use vmk_net::{Errno, events, msg, opt};

#[test]
fn errno_values_match_libc() {
    let pairs = [
        (Errno::EAGAIN, libc::EAGAIN),
        (Errno::EBADF, libc::EBADF),
        (Errno::ENODEV, libc::ENODEV),
        (Errno::EINVAL, libc::EINVAL),
        (Errno::EPIPE, libc::EPIPE),
        (Errno::EDOM, libc::EDOM),
        (Errno::ENOTSOCK, libc::ENOTSOCK),
        (Errno::EDESTADDRREQ, libc::EDESTADDRREQ),
        (Errno::EMSGSIZE, libc::EMSGSIZE),
        (Errno::ENOPROTOOPT, libc::ENOPROTOOPT),
        (Errno::EPROTONOSUPPORT, libc::EPROTONOSUPPORT),
        (Errno::EOPNOTSUPP, libc::EOPNOTSUPP),
        (Errno::EAFNOSUPPORT, libc::EAFNOSUPPORT),
        (Errno::EADDRINUSE, libc::EADDRINUSE),
        (Errno::EADDRNOTAVAIL, libc::EADDRNOTAVAIL),
        (Errno::ENETUNREACH, libc::ENETUNREACH),
        (Errno::ECONNABORTED, libc::ECONNABORTED),
        (Errno::ECONNRESET, libc::ECONNRESET),
        (Errno::ENOBUFS, libc::ENOBUFS),
        (Errno::EISCONN, libc::EISCONN),
        (Errno::ENOTCONN, libc::ENOTCONN),
        (Errno::ETIMEDOUT, libc::ETIMEDOUT),
        (Errno::ECONNREFUSED, libc::ECONNREFUSED),
        (Errno::EHOSTUNREACH, libc::EHOSTUNREACH),
        (Errno::EALREADY, libc::EALREADY),
        (Errno::EINPROGRESS, libc::EINPROGRESS),
        (Errno::ENFILE, libc::ENFILE),
        (Errno::EMFILE, libc::EMFILE),
        (Errno::EACCES, libc::EACCES),
        (Errno::EPERM, libc::EPERM),
        (abi::ESOCKTNOSUPPORT, libc::ESOCKTNOSUPPORT),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(ours.0, theirs, "{ours}");
    }
}

#[test]
fn socket_option_and_flag_numbers_match_libc() {
    let pairs = [
        (opt::SOL_SOCKET, libc::SOL_SOCKET),
        (opt::IPPROTO_IP, libc::IPPROTO_IP),
        (opt::IPPROTO_TCP, libc::IPPROTO_TCP),
        (opt::SO_REUSEADDR, libc::SO_REUSEADDR),
        (opt::SO_TYPE, libc::SO_TYPE),
        (opt::SO_ERROR, libc::SO_ERROR),
        (opt::SO_BROADCAST, libc::SO_BROADCAST),
        (opt::SO_SNDBUF, libc::SO_SNDBUF),
        (opt::SO_RCVBUF, libc::SO_RCVBUF),
        (opt::SO_KEEPALIVE, libc::SO_KEEPALIVE),
        (opt::SO_LINGER, libc::SO_LINGER),
        (opt::SO_REUSEPORT, libc::SO_REUSEPORT),
        (opt::SO_RCVTIMEO, libc::SO_RCVTIMEO),
        (opt::SO_SNDTIMEO, libc::SO_SNDTIMEO),
        (opt::SO_ACCEPTCONN, libc::SO_ACCEPTCONN),
        (opt::SO_PROTOCOL, libc::SO_PROTOCOL),
        (opt::SO_DOMAIN, libc::SO_DOMAIN),
        (opt::IP_TTL, libc::IP_TTL),
        (opt::TCP_NODELAY, libc::TCP_NODELAY),
        (opt::TCP_KEEPIDLE, libc::TCP_KEEPIDLE),
        (opt::TCP_KEEPINTVL, libc::TCP_KEEPINTVL),
        (opt::TCP_KEEPCNT, libc::TCP_KEEPCNT),
        (msg::PEEK, libc::MSG_PEEK),
        (msg::TRUNC, libc::MSG_TRUNC),
        (msg::DONTWAIT, libc::MSG_DONTWAIT),
        (msg::NOSIGNAL, libc::MSG_NOSIGNAL),
        (abi::SOCK_STREAM, libc::SOCK_STREAM),
        (abi::SOCK_DGRAM, libc::SOCK_DGRAM),
        (abi::SOCK_RAW, libc::SOCK_RAW),
        (abi::SOCK_NONBLOCK, libc::SOCK_NONBLOCK),
        (abi::SOCK_CLOEXEC, libc::SOCK_CLOEXEC),
        (abi::IPPROTO_ICMP, libc::IPPROTO_ICMP),
        (abi::IPPROTO_UDP, libc::IPPROTO_UDP),
        (i32::from(abi::AF_INET), libc::AF_INET),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(ours, theirs);
    }
    assert_eq!(events::IN, libc::EPOLLIN as u32);
    assert_eq!(events::OUT, libc::EPOLLOUT as u32);
    assert_eq!(events::ERR, libc::EPOLLERR as u32);
    assert_eq!(events::HUP, libc::EPOLLHUP as u32);
    assert_eq!(events::RDHUP, libc::EPOLLRDHUP as u32);
    assert_eq!(iff::UP, libc::IFF_UP as u32);
    assert_eq!(iff::BROADCAST, libc::IFF_BROADCAST as u32);
    assert_eq!(iff::LOOPBACK, libc::IFF_LOOPBACK as u32);
    assert_eq!(iff::RUNNING, libc::IFF_RUNNING as u32);
    assert_eq!(iff::MULTICAST, libc::IFF_MULTICAST as u32);
}

#[test]
#[allow(clippy::unnecessary_cast)] // libc's ioctl type differs between C libraries
fn ioctl_numbers_and_struct_sizes_match_libc() {
    let pairs = [
        (sioc::GIFNAME, libc::SIOCGIFNAME),
        (sioc::GIFCONF, libc::SIOCGIFCONF),
        (sioc::GIFFLAGS, libc::SIOCGIFFLAGS),
        (sioc::GIFADDR, libc::SIOCGIFADDR),
        (sioc::GIFDSTADDR, libc::SIOCGIFDSTADDR),
        (sioc::GIFBRDADDR, libc::SIOCGIFBRDADDR),
        (sioc::GIFNETMASK, libc::SIOCGIFNETMASK),
        (sioc::GIFMETRIC, libc::SIOCGIFMETRIC),
        (sioc::GIFMTU, libc::SIOCGIFMTU),
        (sioc::GIFHWADDR, libc::SIOCGIFHWADDR),
        (sioc::GIFINDEX, libc::SIOCGIFINDEX),
        (sioc::GIFTXQLEN, libc::SIOCGIFTXQLEN),
        (sioc::GIFMAP, libc::SIOCGIFMAP),
    ];
    for (ours, theirs) in pairs {
        assert_eq!(u64::from(ours), theirs as u64);
    }
    assert_eq!(abi::IFREQ_LEN, std::mem::size_of::<libc::ifreq>());
    assert_eq!(abi::IFNAMSIZ, libc::IFNAMSIZ);
    assert_eq!(abi::SOCKADDR_IN_LEN, std::mem::size_of::<libc::sockaddr_in>());
    assert_eq!(abi::ARPHRD_ETHER, libc::ARPHRD_ETHER);
    assert_eq!(abi::ARPHRD_LOOPBACK, libc::ARPHRD_LOOPBACK);
    // Our bytes hold the fields where libc's struct has them.
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 8080u16.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([10, 0, 2, 2]) },
        sin_zero: [0; 8],
    };
    let bytes = abi::encode_sockaddr_in("10.0.2.2:8080".parse().unwrap());
    assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), sin.sin_family);
    assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), sin.sin_port);
    assert_eq!(u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]), sin.sin_addr.s_addr);
    assert_eq!(std::mem::offset_of!(libc::sockaddr_in, sin_port), 2);
    assert_eq!(std::mem::offset_of!(libc::sockaddr_in, sin_addr), 4);
    assert_eq!(abi::decode_sockaddr_in(&bytes).unwrap().to_string(), "10.0.2.2:8080");
}
