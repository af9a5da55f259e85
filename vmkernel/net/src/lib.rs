//! # vmk-net: the VMkernel's TCP/IP stack
//!
//! Interfaces (`lo` and `vmk0`, ...), their configuration (DHCPv4 or static, from
//! `/etc/mantle/network.conf` or the kernel command line's `ip=`), and AF_INET sockets
//! with Linux semantics, for the system-call layer and the network world to call.
//! Hardware-free: devices come in as smoltcp [`phy::Device`](smoltcp::phy::Device)s and
//! everything is tested on the host (`cargo test -p vmk-net`).
//!
//! ## Why smoltcp
//! [smoltcp](https://docs.rs/smoltcp) is a well-kept, widely used TCP/IP stack that
//! builds `no_std` with `alloc` on stable Rust, with the pieces Mantle needs (Ethernet,
//! ARP, IPv4 with fragment reassembly, ICMP echo replies, TCP, UDP, a DHCPv4 client)
//! and an explicit `poll`/`poll_delay` model that fits one network world.
//! Features are kept to those pieces (see `Cargo.toml`). Version 0.14: 0.12 panics on
//! some received segments (a TCP window computation that `tests/hostile.rs`'s long run
//! hit) and on some DHCP leases, fixed upstream since.
//!
//! ## What Mantle adds on top
//! - **A real listen backlog.** smoltcp has no accept queue: a listening socket *becomes*
//!   the connection. A Mantle listener is a pool of listening smoltcp sockets per
//!   interface: a few are kept ready and the pool is topped up after every received SYN,
//!   so each SYN of a burst finds one; handshaking ones are the SYN queue, established
//!   ones move to an accept queue. Up to `backlog` connections per interface complete
//!   their handshakes before anyone calls `accept`; memory follows the pending
//!   connections (bounded by the backlog and the budget), half-open ones expire.
//! - **Memory budgets.** Every socket buffer is bounded per socket (`SO_RCVBUF`,
//!   `SO_SNDBUF`, clamped) and counted against one global budget: creating a socket or a
//!   buffer beyond it fails with `ENOBUFS`, listening pools stop growing, and the budget
//!   comes back when sockets (and their closing connections) are gone. The loopback queue
//!   is bounded and ingress per poll is bounded, so a flood of packets or SYNs cannot grow
//!   the heap.
//! - **Linux semantics and errno.** Non-blocking operations with `EAGAIN`,
//!   `EINPROGRESS`/`EALREADY`/`EISCONN` connects and `SO_ERROR`, `ECONNREFUSED`,
//!   `ECONNRESET`, `ETIMEDOUT`, `EPIPE`, `shutdown`, `MSG_PEEK`, `SO_REUSEADDR` bind
//!   rules, ephemeral ports from Linux's range, readiness events with Linux's `POLL*`
//!   values and a wake-up generation for epoll.
//! - **Several interfaces.** Each interface has its own smoltcp socket set (smoltcp sends
//!   a set's sockets out of the interface it polls); sockets bound to `0.0.0.0` get a
//!   smoltcp socket on every interface, connections go to the interface the routing
//!   table picks, and traffic to the host's own addresses goes through loopback.
//! - **/proc/net and ioctls.** The texts of `/proc/net/{dev,route,tcp,udp}` as Linux
//!   prints them, interface information for the SIOCGIF* ioctls, and the ABI pieces the
//!   system-call layer needs ([`abi`]: `socket()` arguments, `sockaddr_in`, `ifreq`).
//!
//! ## Where it differs from Linux (known, deliberate or not yet done)
//! - While the backlog is full, the next [`socket::HOLDING_LISTENERS`] SYNs per
//!   interface are held unanswered (the client keeps trying, as when Linux drops them)
//!   and answered once `accept` makes room; SYNs beyond those are answered with RST
//!   (`ECONNREFUSED`) where Linux would drop them too.
//! - `SO_RCVBUF`/`SO_SNDBUF` size the buffers of connections made or accepted after the
//!   call (smoltcp's buffers are fixed once a socket exists); set them before
//!   `connect`/`listen`, as programs do.
//! - `close` never blocks: `SO_LINGER` with a zero timeout resets the connection, other
//!   values close it in the background.
//! - `close` of a UDP socket with datagrams not yet transmitted (waiting for ARP, or for
//!   the network world's next poll) keeps its smoltcp socket until they are out, at most
//!   [`socket::LINGER_TIMEOUT`] and [`socket::MAX_LINGERING`] sockets; they are dropped
//!   when the link goes down, when the budget is needed for open sockets, or when a new
//!   socket binds their port (Linux would have sent them already).
//! - Through an Ethernet interface a UDP datagram may carry at most
//!   [`socket::MAX_FRAGMENTED_UDP`] bytes (smoltcp's fragmentation buffer); larger ones
//!   fail with `EMSGSIZE` instead of being lost. Loopback takes Linux's 65507.
//! - Why a connection ended is inferred (smoltcp does not say): closed before the
//!   connect timeout is `ECONNREFUSED`, after it `ETIMEDOUT`; a keepalive connection
//!   closed after its timeout without progress is `ETIMEDOUT`, otherwise `ECONNRESET`.
//! - IPv4 only (no AF_INET6 yet); one Ethernet device type per stack (`D`); the network
//!   world can wrap several drivers in one enum device.
//!
//! ## How the kernel drives it
//! The network world owns the [`NetStack`]; it calls [`NetStack::poll`] on device
//! interrupts and when the delay `poll` returned has passed, then wakes waiters of
//! the sockets [`NetStack::take_changed`] lists. System calls call the socket
//! operations (never blocking) and then [`NetStack::poll_delay`] to learn whether the
//! network world should run now.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod config;
pub mod device;
pub mod errno;
pub mod procfs;
pub mod socket;
pub mod stack;

/// The smoltcp this stack is built on: the adapter from the drivers' `EthernetDevice`
/// implements `vmk_net::smoltcp::phy::Device`, so both sides agree on the version.
pub use smoltcp;

pub use config::{AddressMode, NetConfig};
pub use errno::{Errno, SysResult};
pub use smoltcp::time::{Duration, Instant};
pub use socket::{RecvInfo, Readiness, Shutdown, SocketId, SocketKind, events, msg, opt};
pub use stack::{IfIndex, InterfaceInfo, NetStack, RouteEntry, StackConfig};

#[cfg(test)]
extern crate std;
