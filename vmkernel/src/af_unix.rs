//! AF_UNIX sockets: stream, datagram and seqpacket sockets between
//! processes of one host, with Linux's semantics — socketpair, bind to a
//! path (the caller makes the S_IFSOCK node) or an abstract name, listen
//! with a bounded accept queue, connect, shutdown, SCM_RIGHTS descriptor
//! passing and SO_PEERCRED.
//!
//! Nothing here blocks: "would block" is EAGAIN and the system-call layer
//! waits for readiness (`poll`) and retries, as for pipes. The system-call
//! layer also copies user memory and wakes waiters after each call.
//!
//! Locking: a connected pair shares one [`Channel`] lock (both directions),
//! so sending never holds two sockets' locks; connect takes the listener's
//! lock and then sets its own state with no lock of the listener held.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, RwLock};

use crate::vfs::types::PollEvents;
use crate::vfs::{Errno, OpenFile, Result};

pub const AF_UNIX: u16 = 1;
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_SEQPACKET: u32 = 5;
/// `sizeof(struct sockaddr_un)`: the family and 108 bytes of path.
pub const SOCKADDR_UN_LEN: usize = 110;
const SUN_PATH_MAX: usize = 108;
/// Bytes one direction of a stream connection, or one datagram socket's
/// receive queue, holds (Linux's default socket buffer is 208 KiB).
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Bytes all AF_UNIX queues hold together: many sockets with full queues
/// cannot take the kernel heap (a sender then waits, or gets EAGAIN).
pub const TOTAL_BYTES: usize = 16 << 20;
/// Datagrams one receive queue holds (Linux: net.unix.max_dgram_qlen).
pub const QUEUE_DGRAMS: usize = 512;
/// A listen() backlog is capped here (Linux's somaxconn).
pub const MAX_BACKLOG: usize = 4096;
/// Descriptors in one SCM_RIGHTS message (Linux's SCM_MAX_FD).
pub const SCM_MAX_FD: usize = 253;
/// Descriptors in flight in all queues together (ETOOMANYREFS beyond it).
/// Cycles of sockets whose queues hold each other's descriptors, and
/// nothing else, are collected by [`collect_cycles`] as Linux's unix_gc
/// does.
pub const MAX_IN_FLIGHT: usize = 4096;

pub const MSG_PEEK: u32 = 0x2;
pub const MSG_TRUNC: u32 = 0x20;

pub const POLLRDHUP: PollEvents = PollEvents(0x2000);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Held shared by every step that moves descriptors into or out of a
/// queue (send, receive, close); [`collect_cycles`] holds it alone, so the
/// descriptors in flight stay where it counted them. Lock order: this
/// first, then a socket's state, then its channel.
static MOVING: RwLock<()> = RwLock::new(());
/// Every live socket by inode number, for /proc/net/unix.
static ALL: Mutex<BTreeMap<u64, Weak<UnixSocket>>> = Mutex::new(BTreeMap::new());
static QUEUED: AtomicUsize = AtomicUsize::new(0);
static NEXT_INO: AtomicU64 = AtomicU64::new(1);

/// The socket types AF_UNIX offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockType {
    Stream,
    Dgram,
    SeqPacket,
}

impl SockType {
    /// From the low bits of socket()'s `type`; EINVAL beyond Linux's range,
    /// ESOCKTNOSUPPORT-like types (raw, rdm) give EPROTONOSUPPORT there,
    /// here EINVAL as Linux's unix_create for unknown ones.
    pub fn from_raw(ty: u32) -> Result<SockType> {
        match ty & 0xf {
            SOCK_STREAM => Ok(SockType::Stream),
            SOCK_DGRAM | 3 /* SOCK_RAW is a datagram socket for AF_UNIX */ => Ok(SockType::Dgram),
            SOCK_SEQPACKET => Ok(SockType::SeqPacket),
            _ => Err(Errno(94)), // ESOCKTNOSUPPORT
        }
    }

    pub fn raw(self) -> u32 {
        match self {
            SockType::Stream => SOCK_STREAM,
            SockType::Dgram => SOCK_DGRAM,
            SockType::SeqPacket => SOCK_SEQPACKET,
        }
    }

    fn connection(self) -> bool {
        self != SockType::Dgram
    }
}

/// A socket's name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum UnixAddr {
    /// Not bound (getsockname gives just the family).
    #[default]
    Unnamed,
    /// A path in the file system, as the binder gave it.
    Path(Vec<u8>),
    /// A name in the abstract namespace (sun_path[0] == 0), without the
    /// leading NUL.
    Abstract(Vec<u8>),
}

impl UnixAddr {
    /// Decodes a `sockaddr_un` of `len` bytes (what bind/connect/sendto
    /// pass). Too short or too long is EINVAL, another family EINVAL (as
    /// Linux's unix_validate_addr), an empty path ENOENT at lookup.
    pub fn decode(b: &[u8]) -> Result<UnixAddr> {
        if b.len() < 2 || b.len() > SOCKADDR_UN_LEN {
            return Err(Errno::EINVAL);
        }
        if u16::from_le_bytes([b[0], b[1]]) != AF_UNIX {
            return Err(Errno::EINVAL);
        }
        let path = &b[2..];
        if path.is_empty() {
            return Ok(UnixAddr::Unnamed);
        }
        if path[0] == 0 {
            return Ok(UnixAddr::Abstract(path[1..].to_vec()));
        }
        let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
        Ok(UnixAddr::Path(path[..end].to_vec()))
    }

    /// The `sockaddr_un` bytes getsockname/accept/recvfrom return; their
    /// length is the address length Linux reports.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SOCKADDR_UN_LEN);
        v.extend_from_slice(&AF_UNIX.to_le_bytes());
        match self {
            UnixAddr::Unnamed => {}
            UnixAddr::Path(p) => {
                v.extend_from_slice(p);
                v.push(0);
            }
            UnixAddr::Abstract(n) => {
                v.push(0);
                v.extend_from_slice(n);
            }
        }
        v
    }

    /// Whether a path fits in sun_path with its NUL.
    fn valid(&self) -> bool {
        match self {
            UnixAddr::Unnamed => true,
            UnixAddr::Path(p) => !p.is_empty() && p.len() < SUN_PATH_MAX,
            UnixAddr::Abstract(n) => n.len() < SUN_PATH_MAX,
        }
    }
}

/// `struct ucred`: who made or connected a socket (SO_PEERCRED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ucred {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Ucred {
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&self.pid.to_le_bytes());
        b[4..8].copy_from_slice(&self.uid.to_le_bytes());
        b[8..].copy_from_slice(&self.gid.to_le_bytes());
        b
    }
}

/// Descriptors travelling in a message; counted against MAX_IN_FLIGHT.
pub struct Rights(Vec<Arc<OpenFile>>);

impl Rights {
    /// Takes `files` for sending, or ETOOMANYREFS when too many are in flight.
    pub fn new(files: Vec<Arc<OpenFile>>) -> Result<Rights> {
        let n = files.len();
        if IN_FLIGHT.fetch_add(n, Ordering::AcqRel) + n > MAX_IN_FLIGHT {
            IN_FLIGHT.fetch_sub(n, Ordering::AcqRel);
            return Err(Errno::ETOOMANYREFS);
        }
        Ok(Rights(files))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The files, handed to the receiver.
    pub fn into_files(mut self) -> Vec<Arc<OpenFile>> {
        let v = core::mem::take(&mut self.0);
        IN_FLIGHT.fetch_sub(v.len(), Ordering::AcqRel);
        v
    }

    fn peek(&self) -> Vec<Arc<OpenFile>> {
        self.0.clone()
    }
}

impl Drop for Rights {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(self.0.len(), Ordering::AcqRel);
    }
}

/// Descriptors in flight now (for tests and leak checks).
pub fn in_flight() -> usize {
    IN_FLIGHT.load(Ordering::Acquire)
}

/// Frees sockets that only descriptors in flight keep alive, in queues
/// that only such sockets can read: a socket sent over itself, or two
/// sockets each in the other's queue, after their processes closed them
/// (reference cycles, which would otherwise hold their memory and count
/// against `MAX_IN_FLIGHT` for good). `socket_of` says which socket an
/// open file is (None: not an AF_UNIX socket). Returns how many messages'
/// descriptors were dropped.
///
/// As Linux's unix_gc: a socket file is a candidate when every reference
/// to it is in flight; candidates reachable from the queue of a socket
/// that is not one stay (a receive may still hand them out); the queues
/// of the rest are emptied of descriptors, which breaks the cycles.
pub fn collect_cycles(socket_of: &dyn Fn(&OpenFile) -> Option<Arc<UnixSocket>>) -> usize {
    if in_flight() == 0 {
        return 0;
    }
    // Everything that may drop a socket is dropped after the lock is let go
    // (closing a socket moves descriptors: it takes the lock shared).
    let socks: Vec<Arc<UnixSocket>>;
    let mut files: BTreeMap<*const OpenFile, (Arc<OpenFile>, usize)> = BTreeMap::new();
    let mut garbage: Vec<Rights> = Vec::new();
    {
        let _alone = MOVING.write();
        socks = ALL.lock().values().filter_map(Weak::upgrade).collect();
        let index: BTreeMap<u64, usize> = socks.iter().enumerate().map(|(i, s)| (s.ino, i)).collect();
        // Which files each socket's queues hold, and how often each is in flight.
        let mut edges: Vec<Vec<*const OpenFile>> = Vec::with_capacity(socks.len());
        for s in &socks {
            let mut e = Vec::new();
            s.for_each_in_flight(&mut |f| {
                files.entry(Arc::as_ptr(f)).or_insert_with(|| (f.clone(), 0)).1 += 1;
                e.push(Arc::as_ptr(f));
            });
            edges.push(e);
        }
        // Candidate files: in flight and held nowhere else (one reference
        // is `files`' own). Their sockets, and how many candidates each has.
        let mut socket_of_file: BTreeMap<*const OpenFile, usize> = BTreeMap::new();
        let mut candidates_per_socket = alloc::vec![0usize; socks.len()];
        for (&ptr, (f, n)) in &files {
            if Arc::strong_count(f) != *n + 1 {
                continue;
            }
            if let Some(i) = socket_of(f).and_then(|s| index.get(&s.ino).copied()) {
                socket_of_file.insert(ptr, i);
                candidates_per_socket[i] += 1;
            }
        }
        // A socket is unreachable from outside if candidate files are its
        // only references (one more is `socks`' own; each file holds one).
        let mut live: Vec<bool> = socks
            .iter()
            .zip(&candidates_per_socket)
            .map(|(s, &c)| c == 0 || Arc::strong_count(s) != c + 1)
            .collect();
        let mut work: Vec<usize> = (0..socks.len()).filter(|&i| live[i]).collect();
        while let Some(i) = work.pop() {
            for ptr in &edges[i] {
                if let Some(&j) = socket_of_file.get(ptr)
                    && !live[j]
                {
                    live[j] = true;
                    work.push(j);
                }
            }
        }
        for (s, _) in socks.iter().zip(&live).filter(|(_, l)| !**l) {
            garbage.extend(s.take_in_flight());
        }
    }
    let n = garbage.len();
    drop(garbage);
    drop(files);
    drop(socks);
    n
}

/// One send: its bytes (partly read on a stream), descriptors and sender.
struct Segment {
    data: Vec<u8>,
    read: usize,
    rights: Option<Rights>,
    from: UnixAddr,
}

impl Segment {
    fn left(&self) -> usize {
        self.data.len() - self.read
    }
}

/// One direction's queue.
#[derive(Default)]
struct Queue {
    segs: VecDeque<Segment>,
    bytes: usize,
    /// The writer shut down its side or is gone: reading past the data is EOF.
    eof: bool,
    /// The reader shut down its side or is gone: writing is EPIPE.
    no_reader: bool,
}

impl Queue {
    fn space(&self) -> usize {
        QUEUE_BYTES.saturating_sub(self.bytes).min(TOTAL_BYTES.saturating_sub(QUEUED.load(Ordering::Acquire)))
    }

    fn add(&mut self, n: usize) {
        self.bytes += n;
        QUEUED.fetch_add(n, Ordering::AcqRel);
    }

    fn sub(&mut self, n: usize) {
        self.bytes -= n;
        QUEUED.fetch_sub(n, Ordering::AcqRel);
    }

    fn clear(&mut self) {
        self.segs.clear();
        let n = self.bytes;
        self.sub(n);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        QUEUED.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Bytes queued in all AF_UNIX sockets now (for tests and leak checks).
pub fn queued_bytes() -> usize {
    QUEUED.load(Ordering::Acquire)
}

/// A stream or seqpacket connection: both directions under one lock.
/// `q[i]` is what side `i` reads.
struct Channel {
    q: Mutex<[Queue; 2]>,
    generation: AtomicU64,
}

impl Channel {
    fn new() -> Arc<Channel> {
        Arc::new(Channel { q: Mutex::new([Queue::default(), Queue::default()]), generation: AtomicU64::new(0) })
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

enum Conn {
    /// Fresh, or a datagram socket (connected or not: see `dgram_peer`).
    Idle,
    Listening { backlog: usize, pending: VecDeque<Arc<UnixSocket>> },
    Connected { chan: Arc<Channel>, side: usize },
    /// The connection was closed from both ends by shutdown/close.
    Closed,
}

struct State {
    addr: UnixAddr,
    conn: Conn,
    /// Datagram: the default destination (connect) and its address.
    dgram_peer: Option<(Weak<UnixSocket>, UnixAddr)>,
    peer_addr: UnixAddr,
    peer_cred: Option<Ucred>,
    /// Datagram receive queue.
    rx: Queue,
    shut_rd: bool,
    shut_wr: bool,
}

/// One AF_UNIX socket.
pub struct UnixSocket {
    ty: SockType,
    ino: u64,
    cred: Ucred,
    st: Mutex<State>,
    /// Advances on changes that may make this socket ready (new pending
    /// connection, datagram, state change); a connection's own counter adds.
    generation: AtomicU64,
}

/// What a receive returned.
pub struct Received {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The message's full length (seqpacket/datagram; MSG_TRUNC).
    pub full_len: usize,
    pub from: UnixAddr,
    pub rights: Vec<Arc<OpenFile>>,
}

/// The names sockets are bound to. A path binding is keyed by the
/// S_IFSOCK node's (device, inode) so the file system's lookup (symlinks,
/// relative paths, permissions) decides what a path means.
#[derive(Default)]
pub struct Namespace {
    paths: BTreeMap<(u64, u64), Weak<UnixSocket>>,
    abstract_names: BTreeMap<Vec<u8>, Weak<UnixSocket>>,
    next_auto: u32,
}

/// Where a name points: a node in the file system or an abstract name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameKey {
    Node { dev: u64, ino: u64 },
    Abstract(Vec<u8>),
}

impl Namespace {
    pub const fn new() -> Namespace {
        Namespace { paths: BTreeMap::new(), abstract_names: BTreeMap::new(), next_auto: 0 }
    }

    fn prune(&mut self) {
        self.paths.retain(|_, w| w.strong_count() > 0);
        self.abstract_names.retain(|_, w| w.strong_count() > 0);
    }

    pub fn lookup(&self, key: &NameKey) -> Option<Arc<UnixSocket>> {
        match key {
            NameKey::Node { dev, ino } => self.paths.get(&(*dev, *ino))?.upgrade(),
            NameKey::Abstract(n) => self.abstract_names.get(n)?.upgrade(),
        }
    }

    /// Binds `sock` to `addr` under `key` (a path's new node, or the
    /// abstract name; None for autobind, which picks a free abstract name
    /// of five hex digits as Linux does). EINVAL if the socket already has
    /// a name, EADDRINUSE if the name is taken.
    pub fn bind(&mut self, sock: &Arc<UnixSocket>, addr: UnixAddr, key: Option<NameKey>) -> Result<()> {
        if !addr.valid() {
            return Err(Errno::EINVAL);
        }
        let mut st = sock.st.lock();
        if st.addr != UnixAddr::Unnamed {
            return Err(Errno::EINVAL);
        }
        self.prune();
        let (addr, key) = match key {
            Some(k) => (addr, k),
            None => {
                let mut found = None;
                for _ in 0..0x10_0000 {
                    self.next_auto = (self.next_auto + 1) & 0xf_ffff;
                    let name = alloc::format!("{:05x}", self.next_auto).into_bytes();
                    if !self.abstract_names.contains_key(&name) {
                        found = Some(name);
                        break;
                    }
                }
                let name = found.ok_or(Errno::ENOSPC)?;
                (UnixAddr::Abstract(name.clone()), NameKey::Abstract(name))
            }
        };
        let w = Arc::downgrade(sock);
        match key {
            NameKey::Node { dev, ino } => {
                if self.paths.contains_key(&(dev, ino)) {
                    return Err(Errno::EADDRINUSE);
                }
                self.paths.insert((dev, ino), w);
            }
            NameKey::Abstract(n) => {
                if self.abstract_names.contains_key(&n) {
                    return Err(Errno::EADDRINUSE);
                }
                self.abstract_names.insert(n, w);
            }
        }
        st.addr = addr;
        Ok(())
    }
}

impl UnixSocket {
    pub fn new(ty: SockType, cred: Ucred) -> Arc<UnixSocket> {
        let s = Arc::new(UnixSocket {
            ty,
            ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
            cred,
            st: Mutex::new(State {
                addr: UnixAddr::Unnamed,
                conn: Conn::Idle,
                dgram_peer: None,
                peer_addr: UnixAddr::Unnamed,
                peer_cred: None,
                rx: Queue::default(),
                shut_rd: false,
                shut_wr: false,
            }),
            generation: AtomicU64::new(0),
        });
        ALL.lock().insert(s.ino, Arc::downgrade(&s));
        s
    }

    /// socketpair(): two sockets connected to each other.
    pub fn pair(ty: SockType, cred: Ucred) -> (Arc<UnixSocket>, Arc<UnixSocket>) {
        let a = UnixSocket::new(ty, cred);
        let b = UnixSocket::new(ty, cred);
        if ty.connection() {
            let chan = Channel::new();
            a.st.lock().conn = Conn::Connected { chan: chan.clone(), side: 0 };
            b.st.lock().conn = Conn::Connected { chan, side: 1 };
        } else {
            a.st.lock().dgram_peer = Some((Arc::downgrade(&b), UnixAddr::Unnamed));
            b.st.lock().dgram_peer = Some((Arc::downgrade(&a), UnixAddr::Unnamed));
        }
        a.st.lock().peer_cred = Some(cred);
        b.st.lock().peer_cred = Some(cred);
        (a, b)
    }

    pub fn sock_type(&self) -> SockType {
        self.ty
    }

    pub fn ino(&self) -> u64 {
        self.ino
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn local_addr(&self) -> UnixAddr {
        self.st.lock().addr.clone()
    }

    /// getpeername: ENOTCONN unless connected.
    pub fn peer_addr(&self) -> Result<UnixAddr> {
        let st = self.st.lock();
        match (&st.conn, &st.dgram_peer) {
            (Conn::Connected { .. }, _) => Ok(st.peer_addr.clone()),
            (_, Some((_, a))) => Ok(a.clone()),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// SO_PEERCRED: the peer's credentials at connect (or socketpair) time.
    pub fn peer_cred(&self) -> Option<Ucred> {
        self.st.lock().peer_cred
    }

    /// listen(): a bound or unbound (autobound by the caller) stream or
    /// seqpacket socket starts accepting; again on a listener changes the
    /// backlog.
    pub fn listen(&self, backlog: i32) -> Result<()> {
        if !self.ty.connection() {
            return Err(Errno::EOPNOTSUPP);
        }
        let backlog = (backlog.max(0) as usize).min(MAX_BACKLOG);
        let mut st = self.st.lock();
        if st.addr == UnixAddr::Unnamed {
            return Err(Errno::EINVAL);
        }
        match &mut st.conn {
            Conn::Idle => st.conn = Conn::Listening { backlog, pending: VecDeque::new() },
            Conn::Listening { backlog: b, .. } => *b = backlog,
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// Whether listen() made this a listening socket (SO_ACCEPTCONN).
    pub fn is_listening(&self) -> bool {
        matches!(self.st.lock().conn, Conn::Listening { .. })
    }

    /// Whether a stream or seqpacket socket is connected.
    pub fn is_connected(&self) -> bool {
        matches!(self.st.lock().conn, Conn::Connected { .. })
    }

    /// Whether the socket is unnamed (listen/connect-less send autobind it).
    pub fn is_unnamed(&self) -> bool {
        self.st.lock().addr == UnixAddr::Unnamed
    }

    /// connect() to `target`, found by name `addr`, with the caller's
    /// credentials. A full accept queue is EAGAIN (the caller waits unless
    /// non-blocking). Datagram sockets just set their default destination.
    pub fn connect(self: &Arc<Self>, target: &Arc<UnixSocket>, addr: UnixAddr, cred: Ucred) -> Result<()> {
        if target.ty != self.ty {
            return Err(Errno::EPROTOTYPE);
        }
        if !self.ty.connection() {
            let mut st = self.st.lock();
            st.dgram_peer = Some((Arc::downgrade(target), addr));
            st.peer_cred = Some(target.cred);
            drop(st);
            self.bump();
            return Ok(());
        }
        let my_addr = {
            let st = self.st.lock();
            match st.conn {
                Conn::Idle => {}
                Conn::Listening { .. } => return Err(Errno::EINVAL),
                Conn::Connected { .. } | Conn::Closed => return Err(Errno::EISCONN),
            }
            st.addr.clone()
        };
        if Arc::ptr_eq(self, target) {
            return Err(Errno::ECONNREFUSED);
        }
        let chan = Channel::new();
        {
            let mut ts = target.st.lock();
            let listener_addr = ts.addr.clone();
            let Conn::Listening { backlog, pending } = &mut ts.conn else { return Err(Errno::ECONNREFUSED) };
            // Linux admits backlog + 1 before refusing (sk_ack_backlog > max).
            if pending.len() > *backlog {
                return Err(Errno::EAGAIN);
            }
            let server = UnixSocket::new(self.ty, target.cred);
            {
                let mut ss = server.st.lock();
                ss.addr = listener_addr;
                ss.conn = Conn::Connected { chan: chan.clone(), side: 1 };
                ss.peer_addr = my_addr;
                ss.peer_cred = Some(cred);
            }
            pending.push_back(server);
        }
        target.bump();
        let mut st = self.st.lock();
        if !matches!(st.conn, Conn::Idle) {
            // Another thread connected it meanwhile; the queued server end
            // sees the connection closed.
            let mut q = chan.q.lock();
            q[1].eof = true;
            q[0].no_reader = true;
            return Err(Errno::EISCONN);
        }
        st.conn = Conn::Connected { chan, side: 0 };
        st.peer_addr = target.local_addr();
        st.peer_cred = Some(target.cred);
        drop(st);
        self.bump();
        Ok(())
    }

    /// accept(): the next connection, or EAGAIN; EINVAL unless listening.
    pub fn accept(&self) -> Result<Arc<UnixSocket>> {
        let mut st = self.st.lock();
        let Conn::Listening { pending, .. } = &mut st.conn else { return Err(Errno::EINVAL) };
        let s = pending.pop_front().ok_or(Errno::EAGAIN)?;
        drop(st);
        self.bump();
        Ok(s)
    }

    /// Sends `data` (and `rights` with its first byte). Stream: takes what
    /// fits (EAGAIN when nothing does); seqpacket and datagram: all or
    /// EAGAIN, EMSGSIZE beyond the queue. `to` is a datagram's explicit
    /// destination (found by the caller by name).
    /// `rights` are taken only when the send succeeds, so a caller that
    /// waits after EAGAIN retries with them.
    pub fn send(&self, data: &[u8], rights: &mut Option<Rights>, to: Option<(Arc<UnixSocket>, UnixAddr)>) -> Result<usize> {
        let _moving = MOVING.read();
        if !self.ty.connection() {
            return self.send_dgram(data, rights, to);
        }
        let (chan, side, shut_wr) = {
            let st = self.st.lock();
            if to.is_some() {
                return Err(if matches!(st.conn, Conn::Connected { .. }) { Errno::EISCONN } else { Errno::EOPNOTSUPP });
            }
            match &st.conn {
                Conn::Connected { chan, side } => (chan.clone(), *side, st.shut_wr),
                Conn::Closed => return Err(Errno::EPIPE),
                _ => return Err(Errno::ENOTCONN),
            }
        };
        let mut q = chan.q.lock();
        let out = &mut q[1 - side];
        if shut_wr || out.no_reader {
            return Err(Errno::EPIPE);
        }
        let seqpacket = self.ty == SockType::SeqPacket;
        if seqpacket && data.len() > QUEUE_BYTES {
            return Err(Errno::EMSGSIZE);
        }
        let space = out.space();
        let n = if seqpacket {
            if space < data.len() {
                return Err(Errno::EAGAIN);
            }
            data.len()
        } else {
            if data.is_empty() && rights.as_ref().is_none_or(Rights::is_empty) {
                return Ok(0);
            }
            if space == 0 {
                return Err(Errno::EAGAIN);
            }
            data.len().min(space)
        };
        let rights = rights.take().filter(|r| !r.is_empty());
        // Small writes merge into the last segment so a byte-at-a-time
        // writer cannot fill the queue with headers.
        match out.segs.back_mut() {
            Some(last) if !seqpacket && rights.is_none() && last.rights.is_none() => {
                last.data.extend_from_slice(&data[..n]);
            }
            _ => out.segs.push_back(Segment { data: data[..n].to_vec(), read: 0, rights, from: UnixAddr::Unnamed }),
        }
        out.add(n);
        drop(q);
        chan.bump();
        Ok(n)
    }

    fn send_dgram(&self, data: &[u8], rights: &mut Option<Rights>, to: Option<(Arc<UnixSocket>, UnixAddr)>) -> Result<usize> {
        let (target, from) = {
            let st = self.st.lock();
            if st.shut_wr {
                return Err(Errno::EPIPE);
            }
            let t = match to {
                Some((t, _)) => t,
                None => match &st.dgram_peer {
                    Some((w, _)) => w.upgrade().ok_or(Errno::ECONNREFUSED)?,
                    None => return Err(Errno::ENOTCONN),
                },
            };
            (t, st.addr.clone())
        };
        if target.ty != SockType::Dgram {
            return Err(Errno::EPROTOTYPE);
        }
        if data.len() > QUEUE_BYTES {
            return Err(Errno::EMSGSIZE);
        }
        {
            let mut ts = target.st.lock();
            if ts.shut_rd {
                return Err(Errno::ECONNREFUSED);
            }
            if ts.rx.space() < data.len() || ts.rx.segs.len() >= QUEUE_DGRAMS {
                return Err(Errno::EAGAIN);
            }
            let rights = rights.take().filter(|r| !r.is_empty());
            ts.rx.segs.push_back(Segment { data: data.to_vec(), read: 0, rights, from });
            ts.rx.add(data.len());
        }
        target.bump();
        Ok(data.len())
    }

    /// Receives into `buf`. Stream: bytes across sends, stopping before a
    /// send that carries descriptors once some bytes are copied; EOF is
    /// `len == 0`. Seqpacket and datagram: one message, the rest of a
    /// longer one discarded (`full_len` says how long it was).
    pub fn recv(&self, buf: &mut [u8], flags: u32) -> Result<Received> {
        let _moving = MOVING.read();
        let peek = flags & MSG_PEEK != 0;
        if !self.ty.connection() {
            let mut st = self.st.lock();
            let shut = st.shut_rd;
            let r = take_message(&mut st.rx, buf, peek, shut);
            drop(st);
            if r.is_ok() && !peek {
                self.bump();
                // Room in our queue may unblock senders: they wait on the
                // global wake-up, so nothing more to do here.
            }
            return r;
        }
        let (chan, side, shut_rd) = {
            let st = self.st.lock();
            match &st.conn {
                Conn::Connected { chan, side } => (chan.clone(), *side, st.shut_rd),
                Conn::Closed => {
                    return Ok(Received { len: 0, full_len: 0, from: UnixAddr::Unnamed, rights: Vec::new() });
                }
                _ => return Err(Errno::EINVAL),
            }
        };
        let mut q = chan.q.lock();
        let inq = &mut q[side];
        let r = if self.ty == SockType::SeqPacket {
            take_message(inq, buf, peek, shut_rd)
        } else {
            take_stream(inq, buf, peek, shut_rd)
        };
        drop(q);
        if matches!(&r, Ok(x) if x.len > 0 || x.full_len > 0) && !peek {
            chan.bump();
        }
        r
    }

    /// shutdown(how): 0 read, 1 write, 2 both.
    pub fn shutdown(&self, how: i32) -> Result<()> {
        let (rd, wr) = match how {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => return Err(Errno::EINVAL),
        };
        let mut st = self.st.lock();
        let chan = match &st.conn {
            Conn::Connected { chan, side } => Some((chan.clone(), *side)),
            Conn::Idle if !self.ty.connection() => None,
            _ => return Err(Errno::ENOTCONN),
        };
        st.shut_rd |= rd;
        st.shut_wr |= wr;
        drop(st);
        if let Some((chan, side)) = chan {
            let mut q = chan.q.lock();
            if wr {
                q[1 - side].eof = true;
            }
            if rd {
                q[side].no_reader = true;
            }
            drop(q);
            chan.bump();
        }
        self.bump();
        Ok(())
    }

    /// Closes the socket: the peer sees EOF and EPIPE, queued messages and
    /// descriptors in them are dropped, pending connections are refused.
    pub fn close(&self) {
        let _moving = MOVING.read();
        let mut st = self.st.lock();
        let old = core::mem::replace(&mut st.conn, Conn::Closed);
        let rx = core::mem::take(&mut st.rx);
        st.dgram_peer = None;
        drop(st);
        // Dropped outside the lock: descriptors in them may be sockets.
        drop(rx);
        match old {
            Conn::Connected { chan, side } => {
                let dropped = {
                    let mut q = chan.q.lock();
                    q[1 - side].eof = true;
                    q[side].no_reader = true;
                    let segs = core::mem::take(&mut q[side].segs);
                    q[side].clear();
                    segs
                };
                drop(dropped);
                chan.bump();
            }
            Conn::Listening { pending, .. } => drop(pending),
            _ => {}
        }
        self.bump();
    }

    /// Calls `f` with every descriptor in flight in the queues this socket
    /// reads (its datagram queue and its side of a connection).
    fn for_each_in_flight(&self, f: &mut impl FnMut(&Arc<OpenFile>)) {
        let st = self.st.lock();
        let visit = |q: &Queue, f: &mut dyn FnMut(&Arc<OpenFile>)| {
            for r in q.segs.iter().filter_map(|s| s.rights.as_ref()) {
                r.0.iter().for_each(&mut *f);
            }
        };
        visit(&st.rx, f);
        if let Conn::Connected { chan, side } = &st.conn {
            visit(&chan.q.lock()[*side], f);
        }
    }

    /// Takes the descriptors out of the queues this socket reads (the
    /// bytes stay).
    fn take_in_flight(&self) -> Vec<Rights> {
        let mut st = self.st.lock();
        let take = |q: &mut Queue| q.segs.iter_mut().filter_map(|s| s.rights.take()).collect::<Vec<Rights>>();
        let mut out = take(&mut st.rx);
        if let Conn::Connected { chan, side } = &st.conn {
            out.extend(take(&mut chan.q.lock()[*side]));
        }
        out
    }

    /// The bytes FIONREAD reports: a stream's unread bytes, a datagram
    /// socket's next message length.
    pub fn pending_input(&self) -> usize {
        let st = self.st.lock();
        match &st.conn {
            Conn::Connected { chan, side } => {
                let q = chan.q.lock();
                if self.ty == SockType::SeqPacket { q[*side].segs.front().map_or(0, Segment::left) } else { q[*side].bytes }
            }
            _ => st.rx.segs.front().map_or(0, Segment::left),
        }
    }

    /// Readiness as poll reports it.
    pub fn poll(&self) -> PollEvents {
        let st = self.st.lock();
        let mut ev = 0u16;
        match &st.conn {
            Conn::Listening { pending, .. } => {
                if !pending.is_empty() {
                    ev |= PollEvents::IN.0;
                }
            }
            Conn::Connected { chan, side } => {
                let q = chan.q.lock();
                let (inq, outq) = (&q[*side], &q[1 - *side]);
                let rd_closed = inq.eof || st.shut_rd;
                if !inq.segs.is_empty() || rd_closed {
                    ev |= PollEvents::IN.0;
                }
                if rd_closed {
                    ev |= POLLRDHUP.0;
                }
                let wr_closed = outq.no_reader || st.shut_wr;
                if rd_closed && wr_closed {
                    ev |= PollEvents::HUP.0;
                }
                if wr_closed || outq.space() > 0 {
                    ev |= PollEvents::OUT.0;
                }
            }
            Conn::Closed => ev |= PollEvents::IN.0 | PollEvents::OUT.0 | PollEvents::HUP.0 | POLLRDHUP.0,
            Conn::Idle if self.ty.connection() => ev |= PollEvents::OUT.0 | PollEvents::HUP.0,
            Conn::Idle => {
                if !st.rx.segs.is_empty() || st.shut_rd {
                    ev |= PollEvents::IN.0;
                }
                if st.shut_rd && st.shut_wr {
                    ev |= PollEvents::HUP.0;
                }
                let peer_full = st
                    .dgram_peer
                    .as_ref()
                    .and_then(|(w, _)| w.upgrade())
                    .is_some_and(|p| p.rx_full());
                if !peer_full {
                    ev |= PollEvents::OUT.0;
                }
            }
        }
        PollEvents(ev)
    }

    fn rx_full(&self) -> bool {
        // try_lock: a datagram socket connected to itself polls while its
        // own state is locked; treat it as not full.
        match self.st.try_lock() {
            Some(st) => st.rx.space() == 0 || st.rx.segs.len() >= QUEUE_DGRAMS,
            None => false,
        }
    }

    /// Advances whenever the socket may have become ready (edge-triggered epoll).
    pub fn generation(&self) -> u64 {
        let g = self.generation.load(Ordering::Acquire);
        let st = self.st.lock();
        match &st.conn {
            Conn::Connected { chan, .. } => g.wrapping_add(chan.generation.load(Ordering::Acquire)),
            _ => g,
        }
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        self.close();
        ALL.lock().remove(&self.ino);
    }
}

/// The text of `/proc/net/unix` (Linux's columns; `Num` is not a kernel
/// address here but 0).
pub fn proc_net_unix() -> alloc::string::String {
    use core::fmt::Write;
    let socks: Vec<Arc<UnixSocket>> = ALL.lock().values().filter_map(Weak::upgrade).collect();
    let mut t = alloc::string::String::from("Num       RefCount Protocol Flags    Type St Inode Path\n");
    for s in socks {
        let (listening, connected, addr) = {
            let st = s.st.lock();
            (matches!(st.conn, Conn::Listening { .. }), matches!(st.conn, Conn::Connected { .. }) || st.dgram_peer.is_some(), st.addr.clone())
        };
        // __SO_ACCEPTCON for listeners; SS_UNCONNECTED (1) or SS_CONNECTED (3).
        let flags = if listening { 0x10000 } else { 0 };
        let state = if connected { 3 } else { 1 };
        let path = match addr {
            UnixAddr::Unnamed => alloc::string::String::new(),
            UnixAddr::Path(p) => alloc::format!(" {}", alloc::string::String::from_utf8_lossy(&p)),
            UnixAddr::Abstract(n) => alloc::format!(" @{}", alloc::string::String::from_utf8_lossy(&n)),
        };
        let _ = writeln!(t, "0000000000000000: {:08X} 00000000 {flags:08X} {:04X} {state:02X} {}{path}", Arc::strong_count(&s) - 1, s.ty.raw(), s.ino);
    }
    t
}

fn take_stream(inq: &mut Queue, buf: &mut [u8], peek: bool, shut_rd: bool) -> Result<Received> {
    let mut got = Received { len: 0, full_len: 0, from: UnixAddr::Unnamed, rights: Vec::new() };
    if inq.segs.is_empty() {
        return if inq.eof || shut_rd { Ok(got) } else { Err(Errno::EAGAIN) };
    }
    if buf.is_empty() {
        return Ok(got);
    }
    let mut i = 0;
    while got.len < buf.len() && i < inq.segs.len() {
        let seg = &mut inq.segs[i];
        if got.len > 0 && seg.read == 0 && seg.rights.is_some() {
            break;
        }
        let n = seg.left().min(buf.len() - got.len);
        buf[got.len..got.len + n].copy_from_slice(&seg.data[seg.read..seg.read + n]);
        got.len += n;
        if peek {
            if let Some(r) = &seg.rights {
                got.rights = r.peek();
            }
            i += 1;
            if seg.rights.is_some() {
                break;
            }
            continue;
        }
        if let Some(r) = seg.rights.take() {
            got.rights = r.into_files();
        }
        seg.read += n;
        let used_up = seg.left() == 0;
        inq.sub(n);
        if used_up {
            inq.segs.pop_front();
        }
        if !got.rights.is_empty() {
            break;
        }
    }
    got.full_len = got.len;
    Ok(got)
}

fn take_message(inq: &mut Queue, buf: &mut [u8], peek: bool, shut_rd: bool) -> Result<Received> {
    let Some(seg) = inq.segs.front_mut() else {
        return if inq.eof || shut_rd {
            Ok(Received { len: 0, full_len: 0, from: UnixAddr::Unnamed, rights: Vec::new() })
        } else {
            Err(Errno::EAGAIN)
        };
    };
    let n = seg.data.len().min(buf.len());
    buf[..n].copy_from_slice(&seg.data[..n]);
    let mut got = Received { len: n, full_len: seg.data.len(), from: seg.from.clone(), rights: Vec::new() };
    if peek {
        if let Some(r) = &seg.rights {
            got.rights = r.peek();
        }
        return Ok(got);
    }
    if let Some(r) = seg.rights.take() {
        got.rights = r.into_files();
    }
    let n = seg.data.len();
    inq.segs.pop_front();
    inq.sub(n);
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ucred = Ucred { pid: 7, uid: 1000, gid: 100 };
    /// The tests run one at a time: descriptors in flight and queued bytes
    /// are host-wide counts.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn recv_all(s: &UnixSocket, n: usize) -> Vec<u8> {
        let mut b = alloc::vec![0u8; n];
        let r = s.recv(&mut b, 0).unwrap();
        b.truncate(r.len);
        b
    }

    #[test]
    fn sockaddr_un_round_trips_and_bad_ones_are_einval() {
        let _serial = serial();
        let mut p = AF_UNIX.to_le_bytes().to_vec();
        p.extend_from_slice(b"/tmp/s\0junk");
        assert_eq!(UnixAddr::decode(&p), Ok(UnixAddr::Path(b"/tmp/s".to_vec())));
        assert_eq!(UnixAddr::Path(b"/tmp/s".to_vec()).encode().len(), 2 + 7);
        let a = UnixAddr::Abstract(b"x\0y".to_vec());
        assert_eq!(UnixAddr::decode(&a.encode()), Ok(a));
        assert_eq!(UnixAddr::decode(&AF_UNIX.to_le_bytes()), Ok(UnixAddr::Unnamed));
        assert_eq!(UnixAddr::decode(&[1]), Err(Errno::EINVAL));
        assert_eq!(UnixAddr::decode(&[2, 0, b'a']), Err(Errno::EINVAL));
        assert_eq!(UnixAddr::decode(&[0u8; 111]), Err(Errno::EINVAL));
        assert_eq!(core::mem::size_of::<libc::sockaddr_un>(), SOCKADDR_UN_LEN);
    }

    #[test]
    fn stream_pair_carries_bytes_both_ways_then_eof_and_epipe() {
        let _serial = serial();
        let (a, b) = UnixSocket::pair(SockType::Stream, ME);
        assert_eq!(a.send(b"hello", &mut None, None), Ok(5));
        assert_eq!(a.send(b" world", &mut None, None), Ok(6));
        assert!(b.poll().contains(PollEvents::IN));
        assert_eq!(recv_all(&b, 64), b"hello world");
        assert_eq!(b.recv(&mut [0u8; 4], 0).err(), Some(Errno::EAGAIN));
        assert_eq!(b.send(b"back", &mut None, None), Ok(4));
        assert_eq!(recv_all(&a, 2), b"ba");
        assert_eq!(recv_all(&a, 8), b"ck");
        a.shutdown(1).unwrap();
        assert_eq!(b.recv(&mut [0u8; 4], 0).unwrap().len, 0);
        assert!(b.poll().contains(POLLRDHUP));
        assert_eq!(a.send(b"x", &mut None, None), Err(Errno::EPIPE));
        drop(b);
        assert_eq!(a.send(b"x", &mut None, None), Err(Errno::EPIPE));
        assert!(a.poll().contains(PollEvents::HUP));
    }

    #[test]
    fn stream_fills_then_eagain_and_peek_keeps_data() {
        let _serial = serial();
        let (a, b) = UnixSocket::pair(SockType::Stream, ME);
        let big = alloc::vec![9u8; QUEUE_BYTES + 100];
        assert_eq!(a.send(&big, &mut None, None), Ok(QUEUE_BYTES));
        assert_eq!(a.send(b"x", &mut None, None), Err(Errno::EAGAIN));
        assert!(!a.poll().contains(PollEvents::OUT));
        let mut p = [0u8; 3];
        assert_eq!(b.recv(&mut p, MSG_PEEK).unwrap().len, 3);
        assert_eq!(b.pending_input(), QUEUE_BYTES);
        assert_eq!(recv_all(&b, 10).len(), 10);
        assert!(a.poll().contains(PollEvents::OUT));
    }

    #[test]
    fn listen_connect_accept_with_backlog_and_names() {
        let _serial = serial();
        let mut ns = Namespace::new();
        let srv = UnixSocket::new(SockType::Stream, ME);
        ns.bind(&srv, UnixAddr::Abstract(b"srv".to_vec()), Some(NameKey::Abstract(b"srv".to_vec()))).unwrap();
        let other = UnixSocket::new(SockType::Stream, ME);
        assert_eq!(
            ns.bind(&other, UnixAddr::Abstract(b"srv".to_vec()), Some(NameKey::Abstract(b"srv".to_vec()))),
            Err(Errno::EADDRINUSE)
        );
        let target = ns.lookup(&NameKey::Abstract(b"srv".to_vec())).unwrap();
        let c0 = UnixSocket::new(SockType::Stream, Ucred { pid: 9, uid: 1, gid: 2 });
        assert_eq!(c0.connect(&target, srv.local_addr(), c0.cred), Err(Errno::ECONNREFUSED));
        srv.listen(1).unwrap();
        c0.connect(&target, srv.local_addr(), c0.cred).unwrap();
        let c1 = UnixSocket::new(SockType::Stream, ME);
        c1.connect(&target, srv.local_addr(), ME).unwrap();
        let c2 = UnixSocket::new(SockType::Stream, ME);
        assert_eq!(c2.connect(&target, srv.local_addr(), ME), Err(Errno::EAGAIN));
        assert_eq!(c0.send(b"early", &mut None, None), Ok(5));
        assert!(srv.poll().contains(PollEvents::IN));
        let s0 = srv.accept().unwrap();
        assert_eq!(s0.peer_cred(), Some(Ucred { pid: 9, uid: 1, gid: 2 }));
        assert_eq!(c0.peer_cred(), Some(ME));
        assert_eq!(s0.local_addr(), UnixAddr::Abstract(b"srv".to_vec()));
        assert_eq!(c0.peer_addr(), Ok(UnixAddr::Abstract(b"srv".to_vec())));
        assert_eq!(recv_all(&s0, 16), b"early");
        let _s1 = srv.accept().unwrap();
        assert_eq!(srv.accept().err(), Some(Errno::EAGAIN));
        // A closed listener's name is free again.
        drop((srv, target));
        let again = UnixSocket::new(SockType::Stream, ME);
        ns.bind(&again, UnixAddr::Abstract(b"srv".to_vec()), Some(NameKey::Abstract(b"srv".to_vec()))).unwrap();
        // Autobind picks an abstract name.
        let auto = UnixSocket::new(SockType::Dgram, ME);
        ns.bind(&auto, UnixAddr::Unnamed, None).unwrap();
        assert!(matches!(auto.local_addr(), UnixAddr::Abstract(n) if n.len() == 5));
    }

    #[test]
    fn closing_a_listener_resets_pending_connections() {
        let _serial = serial();
        let mut ns = Namespace::new();
        let srv = UnixSocket::new(SockType::Stream, ME);
        ns.bind(&srv, UnixAddr::Path(b"/s".to_vec()), Some(NameKey::Node { dev: 1, ino: 2 })).unwrap();
        srv.listen(4).unwrap();
        let c = UnixSocket::new(SockType::Stream, ME);
        c.connect(&srv, UnixAddr::Path(b"/s".to_vec()), ME).unwrap();
        drop(srv);
        assert!(ns.lookup(&NameKey::Node { dev: 1, ino: 2 }).is_none());
        assert_eq!(c.recv(&mut [0u8; 4], 0).unwrap().len, 0);
        assert_eq!(c.send(b"x", &mut None, None), Err(Errno::EPIPE));
    }

    /// An open file for a socket, as the system-call layer makes one.
    struct SockFile(Arc<UnixSocket>);

    impl Drop for SockFile {
        fn drop(&mut self) {
            self.0.close();
        }
    }

    impl crate::vfs::inode::Inode for SockFile {
        fn metadata(&self) -> crate::vfs::types::Metadata {
            let t = crate::vfs::types::Timespec::default();
            crate::vfs::types::Metadata { ino: self.0.ino(), mode: 0o140777, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t, rdev: 0, blocks: 0 }
        }
        fn as_any(&self) -> &dyn core::any::Any {
            self
        }
    }

    impl crate::vfs::inode::Device for SockFile {
        fn read(&self, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
            Err(Errno::EINVAL)
        }
        fn write(&self, _offset: u64, _data: &[u8]) -> Result<usize> {
            Err(Errno::EINVAL)
        }
    }

    fn sock_file(s: &Arc<UnixSocket>) -> Arc<OpenFile> {
        let f = Arc::new(SockFile(s.clone()));
        Arc::new(OpenFile::anonymous(f.clone(), f, 0))
    }

    fn socket_of(f: &OpenFile) -> Option<Arc<UnixSocket>> {
        match f.backing() {
            crate::vfs::file::Backing::Device { node, .. } => node.as_any().downcast_ref::<SockFile>().map(|s| s.0.clone()),
            _ => None,
        }
    }

    #[test]
    fn cycles_of_sockets_in_flight_are_collected_and_reachable_ones_kept() {
        let _serial = serial();
        let live_before = ALL.lock().values().filter(|w| w.strong_count() > 0).count();
        let before = in_flight();
        // A pair whose ends travel in their own queue, with a pipe: once
        // the process closes them, only the queue holds them.
        let (a, b) = UnixSocket::pair(SockType::Stream, ME);
        let (fa, fb) = (sock_file(&a), sock_file(&b));
        let (r, _w) = OpenFile::pipe(0);
        let r = Arc::new(r);
        a.send(b"x", &mut Some(Rights::new(alloc::vec![fa.clone(), fb.clone(), r.clone()]).unwrap()), None).unwrap();
        // Two datagram sockets, each in the other's queue.
        let (c, d) = UnixSocket::pair(SockType::Dgram, ME);
        let (fc, fd) = (sock_file(&c), sock_file(&d));
        c.send(b"c", &mut Some(Rights::new(alloc::vec![fc.clone()]).unwrap()), None).unwrap();
        d.send(b"d", &mut Some(Rights::new(alloc::vec![fd.clone()]).unwrap()), None).unwrap();
        // A socket in flight in the queue of one the process still holds:
        // a receive can hand it out, so it stays.
        let (e, g) = UnixSocket::pair(SockType::Stream, ME);
        let (fe, fg) = (sock_file(&e), sock_file(&g));
        let (h, i) = UnixSocket::pair(SockType::Stream, ME);
        let fh = sock_file(&h);
        e.send(b"h", &mut Some(Rights::new(alloc::vec![fh.clone()]).unwrap()), None).unwrap();
        i.send(b"self", &mut Some(Rights::new(alloc::vec![fh.clone()]).unwrap()), None).unwrap();
        assert_eq!(in_flight(), before + 7);
        // While the process holds them, nothing is collected.
        assert_eq!(collect_cycles(&socket_of), 0);
        assert_eq!(in_flight(), before + 7);
        drop((a, b, c, d, e, h, i, fa, fb, fc, fd, fe, fh));
        assert_eq!(Arc::strong_count(&r), 2);
        assert_eq!(collect_cycles(&socket_of), 3);
        // The pair, the datagram sockets and the pipe end are gone; the
        // socket reachable through `g` and what its queue holds stay.
        assert_eq!(Arc::strong_count(&r), 1);
        assert_eq!(in_flight(), before + 2);
        let first = g.recv(&mut [0u8; 4], 0).unwrap();
        assert_eq!(first.rights.len(), 1);
        let h2 = socket_of(&first.rights[0]).unwrap();
        let second = h2.recv(&mut [0u8; 8], 0).unwrap();
        assert_eq!(second.rights.len(), 1);
        assert_eq!(in_flight(), before);
        drop((first, second, h2, fg, g));
        assert_eq!(ALL.lock().values().filter(|w| w.strong_count() > 0).count(), live_before);
    }

    #[test]
    fn rights_travel_with_their_bytes_and_are_dropped_with_the_queue() {
        let _serial = serial();
        let (a, b) = UnixSocket::pair(SockType::Stream, ME);
        let (r, w) = OpenFile::pipe(0);
        let (r, w) = (Arc::new(r), Arc::new(w));
        let before = in_flight();
        a.send(b"ab", &mut None, None).unwrap();
        a.send(b"cd", &mut Some(Rights::new(alloc::vec![r.clone()]).unwrap()), None).unwrap();
        a.send(b"ef", &mut None, None).unwrap();
        assert_eq!(in_flight(), before + 1);
        // The first read stops before the bytes that carry the descriptor.
        let mut buf = [0u8; 16];
        let got = b.recv(&mut buf, 0).unwrap();
        assert_eq!((&buf[..got.len], got.rights.len()), (&b"ab"[..], 0));
        let got = b.recv(&mut buf, 0).unwrap();
        assert_eq!(got.rights.len(), 1);
        assert!(Arc::ptr_eq(&got.rights[0], &r));
        assert_eq!(in_flight(), before);
        // Unread descriptors go away with the receiver.
        a.send(b"x", &mut Some(Rights::new(alloc::vec![w.clone()]).unwrap()), None).unwrap();
        assert_eq!(Arc::strong_count(&w), 2);
        drop(b);
        assert_eq!(Arc::strong_count(&w), 1);
        assert_eq!(in_flight(), before);
    }

    #[test]
    fn datagrams_keep_boundaries_truncate_and_name_the_sender() {
        let _serial = serial();
        let mut ns = Namespace::new();
        let rx = UnixSocket::new(SockType::Dgram, ME);
        ns.bind(&rx, UnixAddr::Abstract(b"rx".to_vec()), Some(NameKey::Abstract(b"rx".to_vec()))).unwrap();
        let tx = UnixSocket::new(SockType::Dgram, ME);
        ns.bind(&tx, UnixAddr::Abstract(b"tx".to_vec()), Some(NameKey::Abstract(b"tx".to_vec()))).unwrap();
        assert_eq!(tx.send(b"x", &mut None, None), Err(Errno::ENOTCONN));
        tx.send(b"one", &mut None, Some((rx.clone(), rx.local_addr()))).unwrap();
        tx.send(b"second", &mut None, Some((rx.clone(), rx.local_addr()))).unwrap();
        let mut b = [0u8; 4];
        let r = rx.recv(&mut b, 0).unwrap();
        assert_eq!((r.len, r.full_len, &b[..3], r.from), (3, 3, &b"one"[..], UnixAddr::Abstract(b"tx".to_vec())));
        let r = rx.recv(&mut b, 0).unwrap();
        assert_eq!((r.len, r.full_len), (4, 6));
        assert_eq!(rx.recv(&mut b, 0).err(), Some(Errno::EAGAIN));
        tx.connect(&rx, rx.local_addr(), ME).unwrap();
        tx.send(b"c", &mut None, None).unwrap();
        assert_eq!(rx.recv(&mut b, 0).unwrap().len, 1);
        drop(rx);
        assert_eq!(tx.send(b"c", &mut None, None), Err(Errno::ECONNREFUSED));
        let st = UnixSocket::new(SockType::Stream, ME);
        assert_eq!(tx.send(b"c", &mut None, Some((st, UnixAddr::Unnamed))), Err(Errno::EPROTOTYPE));
    }

    #[test]
    fn seqpacket_keeps_boundaries() {
        let _serial = serial();
        let (a, b) = UnixSocket::pair(SockType::SeqPacket, ME);
        a.send(b"abc", &mut None, None).unwrap();
        a.send(b"de", &mut None, None).unwrap();
        let mut buf = [0u8; 2];
        let r = b.recv(&mut buf, 0).unwrap();
        assert_eq!((r.len, r.full_len), (2, 3));
        assert_eq!(recv_all(&b, 8), b"de");
    }

    #[test]
    fn all_queues_together_are_bounded() {
        let _serial = serial();
        let before = queued_bytes();
        let pairs: Vec<_> = (0..TOTAL_BYTES / QUEUE_BYTES + 2).map(|_| UnixSocket::pair(SockType::Stream, ME)).collect();
        let big = alloc::vec![1u8; QUEUE_BYTES];
        let mut total = 0;
        for (a, _) in &pairs {
            total += a.send(&big, &mut None, None).unwrap_or(0);
        }
        assert!(total <= TOTAL_BYTES, "{total} bytes queued");
        assert_eq!(pairs.last().map(|(a, _)| a.send(b"x", &mut None, None)), Some(Err(Errno::EAGAIN)));
        // Reading frees budget for everyone.
        let mut buf = alloc::vec![0u8; 4096];
        assert_eq!(pairs[0].1.recv(&mut buf, 0).map(|r| r.len), Ok(4096));
        assert_eq!(pairs.last().map(|(a, _)| a.send(b"x", &mut None, None)), Some(Ok(1)));
        drop(pairs);
        assert_eq!(queued_bytes(), before);
    }

    #[test]
    fn proc_net_unix_lists_sockets_with_their_names() {
        let _serial = serial();
        let mut ns = Namespace::new();
        let l = UnixSocket::new(SockType::Stream, ME);
        ns.bind(&l, UnixAddr::Path(b"/tmp/l.sock".to_vec()), Some(NameKey::Node { dev: 9, ino: 9 })).unwrap();
        l.listen(5).unwrap();
        let (a, _b) = UnixSocket::pair(SockType::Dgram, ME);
        let text = proc_net_unix();
        assert!(text.starts_with("Num       RefCount Protocol Flags    Type St Inode Path\n"), "{text}");
        let line = |ino: u64| text.lines().find(|x| x.split_whitespace().nth(6) == Some(&ino.to_string())).map(str::to_string);
        let ll = line(l.ino()).unwrap();
        assert!(ll.contains(" 00010000 0001 01 ") && ll.ends_with(" /tmp/l.sock"), "{ll}");
        let al = line(a.ino()).unwrap();
        assert!(al.contains(" 00000000 0002 03 "), "{al}");
        let gone = l.ino();
        drop(l);
        assert!(!proc_net_unix().lines().any(|x| x.split_whitespace().nth(6) == Some(&gone.to_string())), "closed socket still listed");
    }

    #[test]
    fn in_flight_descriptors_are_capped() {
        let _serial = serial();
        let (r, _w) = OpenFile::pipe(0);
        let r = Arc::new(r);
        let before = in_flight();
        let mut held = Vec::new();
        loop {
            match Rights::new(alloc::vec![r.clone(); SCM_MAX_FD]) {
                Ok(x) => held.push(x),
                Err(e) => {
                    assert_eq!(e, Errno::ETOOMANYREFS);
                    break;
                }
            }
        }
        assert!(in_flight() <= MAX_IN_FLIGHT);
        drop(held);
        assert_eq!(in_flight(), before);
    }
}
