//! epoll's interest list and readiness rules, free of files and waiting:
//! the kernel gives each scan the files' current poll masks and wake-up
//! generations, and gets back the events to report.
//!
//! A file's wake-up generation advances whenever it may have become ready
//! (new data, space, a connection, a close, an expiry). Edge-triggered
//! registrations report a bit when it was not set at the last scan, or
//! when the file's generation moved since the last report — what Linux
//! does on each wake-up of the file's queue. No edge is lost: an object
//! that drains and refills between two scans moves its generation. Files
//! without a generation of their own use the kernel's global one (more
//! reports than Linux, never fewer).

use alloc::vec::Vec;

use super::flags::poll::*;
use crate::vfs::Errno;

/// Registrations one epoll instance holds at most (Linux bounds the
/// watches per user; ENOSPC there as here).
pub const MAX_REGISTRATIONS: usize = 8192;

/// `epoll_wait`'s maxevents bound (Linux: INT_MAX / sizeof(epoll_event)).
pub const MAX_EVENTS: usize = i32::MAX as usize / EPOLL_EVENT_SIZE;

/// `struct epoll_event` is packed on x86-64: u32 events, u64 data.
pub const EPOLL_EVENT_SIZE: usize = 12;

/// Bits a registration may ask for (the rest are ignored, as on Linux).
const REQUESTABLE: u32 = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDNORM | EPOLLRDBAND | EPOLLWRNORM | EPOLLWRBAND | EPOLLRDHUP;

/// Bits EPOLLEXCLUSIVE may be combined with.
const EXCLUSIVE_OK: u32 = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE | EPOLLRDNORM | EPOLLWRNORM;

/// `struct epoll_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

impl EpollEvent {
    pub fn decode(b: &[u8]) -> Option<Self> {
        let e = b.get(..EPOLL_EVENT_SIZE)?;
        let events = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let mut d = [0u8; 8];
        d.copy_from_slice(&e[4..12]);
        Some(Self { events, data: u64::from_le_bytes(d) })
    }

    pub fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.events.to_le_bytes());
        out[4..12].copy_from_slice(&self.data.to_le_bytes());
    }
}

/// `epoll_ctl`'s operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlOp {
    Add,
    Mod,
    Del,
}

impl CtlOp {
    pub fn from_raw(op: u32) -> Result<Self, Errno> {
        match op {
            EPOLL_CTL_ADD => Ok(CtlOp::Add),
            EPOLL_CTL_MOD => Ok(CtlOp::Mod),
            EPOLL_CTL_DEL => Ok(CtlOp::Del),
            _ => Err(Errno::EINVAL),
        }
    }
}

/// The poll mask bits (u16 in the VFS) as epoll bits: the same values.
pub fn from_poll_mask(mask: u16) -> u32 {
    let mut m = u32::from(mask) & !u32::from(POLLNVAL);
    if m & EPOLLIN != 0 {
        m |= EPOLLRDNORM;
    }
    if m & EPOLLOUT != 0 {
        m |= EPOLLWRNORM;
    }
    m
}

struct Registration<F> {
    fd: i32,
    /// Identity of the open file description (with `fd`, the key).
    key: usize,
    file: F,
    events: u32,
    data: u64,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    disabled: bool,
    /// Edge triggering: the bits at the last scan and the generation of
    /// the last report.
    last: u32,
    last_gen: u64,
}

/// One epoll instance's interest list. `F` is how the kernel holds a file
/// (a weak reference: a registration never keeps a file open).
pub struct Interest<F> {
    regs: Vec<Registration<F>>,
    /// Where the next scan starts, so a small `maxevents` still serves
    /// every ready file in turn.
    cursor: usize,
}

impl<F> Default for Interest<F> {
    fn default() -> Self {
        Self { regs: Vec::new(), cursor: 0 }
    }
}

impl<F> Interest<F> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.regs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// The files registered (for loop detection of nested instances).
    pub fn files(&self) -> impl Iterator<Item = &F> {
        self.regs.iter().map(|r| &r.file)
    }

    /// Drops registrations whose file no longer exists.
    pub fn retain_live(&mut self, mut alive: impl FnMut(&F) -> bool) {
        self.regs.retain(|r| alive(&r.file));
        if self.cursor >= self.regs.len() {
            self.cursor = 0;
        }
    }

    /// `epoll_ctl` on the list. `key` names the open file description of
    /// `fd`.
    pub fn ctl(&mut self, op: CtlOp, fd: i32, key: usize, file: F, ev: Option<EpollEvent>) -> Result<(), Errno> {
        let pos = self.regs.iter().position(|r| r.fd == fd && r.key == key);
        if op != CtlOp::Del {
            let ev = ev.ok_or(Errno::EFAULT)?;
            if ev.events & EPOLLEXCLUSIVE != 0 && (op == CtlOp::Mod || ev.events & !EXCLUSIVE_OK != 0) {
                return Err(Errno::EINVAL);
            }
        }
        match (op, pos) {
            (CtlOp::Add, Some(_)) => Err(Errno::EEXIST),
            (CtlOp::Mod | CtlOp::Del, None) => Err(Errno::ENOENT),
            (CtlOp::Add, None) => {
                if self.regs.len() >= MAX_REGISTRATIONS {
                    return Err(Errno::ENOSPC);
                }
                let ev = ev.ok_or(Errno::EFAULT)?;
                self.regs.push(Registration { fd, key, file, events: ev.events, data: ev.data, disabled: false, last: 0, last_gen: 0 });
                Ok(())
            }
            (CtlOp::Mod, Some(i)) => {
                let ev = ev.ok_or(Errno::EFAULT)?;
                let r = &mut self.regs[i];
                if r.events & EPOLLEXCLUSIVE != 0 {
                    return Err(Errno::EINVAL);
                }
                // Re-armed: a ready file is reported again, edge or not.
                *r = Registration { fd, key, file, events: ev.events, data: ev.data, disabled: false, last: 0, last_gen: 0 };
                Ok(())
            }
            (CtlOp::Del, Some(i)) => {
                self.regs.remove(i);
                if self.cursor >= self.regs.len() {
                    self.cursor = 0;
                }
                Ok(())
            }
        }
    }

    /// Collects up to `max` events. `ready` gives a file's wake-up
    /// generation (read first) and current epoll mask, or None if the file
    /// is gone (its registration is dropped).
    pub fn scan(&mut self, max: usize, mut ready: impl FnMut(&F) -> Option<(u64, u32)>) -> Vec<EpollEvent> {
        let mut out = Vec::new();
        let n = self.regs.len();
        if n == 0 || max == 0 {
            return out;
        }
        let start = self.cursor.min(n - 1);
        let mut dead = Vec::new();
        let mut next_cursor = self.cursor;
        for k in 0..n {
            if out.len() >= max {
                break;
            }
            let i = (start + k) % n;
            let r = &mut self.regs[i];
            if r.disabled {
                continue;
            }
            let Some((generation, now)) = ready(&r.file) else {
                dead.push(i);
                continue;
            };
            let mask = now & ((r.events & REQUESTABLE) | EPOLLERR | EPOLLHUP);
            let report = if r.events & EPOLLET != 0 {
                let fresh = if r.last_gen != generation { mask } else { mask & !r.last };
                r.last = mask;
                fresh
            } else {
                mask
            };
            if report != 0 {
                if r.events & EPOLLET != 0 {
                    r.last_gen = generation;
                }
                if r.events & EPOLLONESHOT != 0 {
                    r.disabled = true;
                }
                out.push(EpollEvent { events: report, data: r.data });
                next_cursor = i + 1;
            }
        }
        dead.sort_unstable();
        for i in dead.into_iter().rev() {
            self.regs.remove(i);
        }
        self.cursor = if next_cursor >= self.regs.len() { 0 } else { next_cursor };
        out
    }

    /// Whether a scan would report something (poll on the epoll file
    /// itself), without changing any state.
    pub fn any_ready(&self, mut ready: impl FnMut(&F) -> Option<(u64, u32)>) -> bool {
        self.regs.iter().filter(|r| !r.disabled).any(|r| {
            let (generation, now) = ready(&r.file).unwrap_or((0, 0));
            let mask = now & ((r.events & REQUESTABLE) | EPOLLERR | EPOLLHUP);
            if r.events & EPOLLET != 0 {
                (if r.last_gen != generation { mask } else { mask & !r.last }) != 0
            } else {
                mask != 0
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn ev(events: u32, data: u64) -> Option<EpollEvent> {
        Some(EpollEvent { events, data })
    }

    #[test]
    fn event_image_is_packed_12_bytes() {
        let e = EpollEvent { events: EPOLLIN | EPOLLET, data: 0x1122_3344_5566_7788 };
        let mut b = [0u8; 12];
        e.encode(&mut b);
        assert_eq!(EpollEvent::decode(&b), Some(e));
        assert_eq!(EpollEvent::decode(&b[..11]), None);
        assert_eq!(b[4], 0x88);
    }

    #[test]
    fn ctl_errors() {
        let mut i: Interest<u32> = Interest::new();
        assert_eq!(i.ctl(CtlOp::Mod, 3, 30, 0, ev(EPOLLIN, 0)), Err(Errno::ENOENT));
        assert_eq!(i.ctl(CtlOp::Del, 3, 30, 0, None), Err(Errno::ENOENT));
        i.ctl(CtlOp::Add, 3, 30, 0, ev(EPOLLIN, 0)).unwrap();
        assert_eq!(i.ctl(CtlOp::Add, 3, 30, 0, ev(EPOLLIN, 0)), Err(Errno::EEXIST));
        // Same fd number, another description (closed and reopened): new key.
        i.ctl(CtlOp::Add, 3, 31, 0, ev(EPOLLIN, 0)).unwrap();
        assert_eq!(i.ctl(CtlOp::Add, 4, 40, 0, ev(EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT, 0)), Err(Errno::EINVAL));
        i.ctl(CtlOp::Add, 4, 40, 0, ev(EPOLLIN | EPOLLEXCLUSIVE, 0)).unwrap();
        assert_eq!(i.ctl(CtlOp::Mod, 4, 40, 0, ev(EPOLLIN, 0)), Err(Errno::EINVAL));
        assert_eq!(i.ctl(CtlOp::Mod, 3, 30, 0, ev(EPOLLIN | EPOLLEXCLUSIVE, 0)), Err(Errno::EINVAL));
        i.ctl(CtlOp::Del, 3, 30, 0, None).unwrap();
        assert_eq!(i.len(), 2);
        assert_eq!(CtlOp::from_raw(0), Err(Errno::EINVAL));
        assert_eq!(CtlOp::from_raw(4), Err(Errno::EINVAL));
    }

    #[test]
    fn registrations_are_bounded() {
        let mut i: Interest<u32> = Interest::new();
        for fd in 0..MAX_REGISTRATIONS as i32 {
            i.ctl(CtlOp::Add, fd, fd as usize, 0, ev(EPOLLIN, 0)).unwrap();
        }
        assert_eq!(i.ctl(CtlOp::Add, -5, 99_999, 0, ev(EPOLLIN, 0)), Err(Errno::ENOSPC));
    }

    #[test]
    fn level_triggered_reports_while_ready() {
        let mut i: Interest<u32> = Interest::new();
        i.ctl(CtlOp::Add, 5, 1, 0, ev(EPOLLIN, 55)).unwrap();
        assert!(i.scan(8, |_| Some((0, 0))).is_empty());
        let r = i.scan(8, |_| Some((0, EPOLLIN | EPOLLOUT)));
        assert_eq!(r, vec![EpollEvent { events: EPOLLIN, data: 55 }]);
        assert_eq!(i.scan(8, |_| Some((0, EPOLLIN))).len(), 1);
        assert!(i.any_ready(|_| Some((0, EPOLLIN))));
    }

    #[test]
    fn err_and_hup_are_always_reported() {
        let mut i: Interest<u32> = Interest::new();
        i.ctl(CtlOp::Add, 5, 1, 0, ev(EPOLLOUT, 0)).unwrap();
        let r = i.scan(8, |_| Some((0, EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)));
        assert_eq!(r[0].events, EPOLLHUP | EPOLLERR);
        i.ctl(CtlOp::Mod, 5, 1, 0, ev(EPOLLIN | EPOLLRDHUP, 0)).unwrap();
        let r = i.scan(8, |_| Some((0, EPOLLIN | EPOLLRDHUP)));
        assert_eq!(r[0].events, EPOLLIN | EPOLLRDHUP);
    }

    #[test]
    fn edge_triggered_reports_once_per_edge_or_change() {
        let mut i: Interest<u32> = Interest::new();
        i.ctl(CtlOp::Add, 5, 1, 0, ev(EPOLLIN | EPOLLOUT | EPOLLET, 7)).unwrap();
        // Ready at registration: reported once.
        assert_eq!(i.scan(8, |_| Some((7, EPOLLOUT)))[0].events, EPOLLOUT);
        assert!(i.scan(8, |_| Some((7, EPOLLOUT))).is_empty());
        assert!(!i.any_ready(|_| Some((7, EPOLLOUT))));
        // A new bit is an edge even without a generation change.
        assert_eq!(i.scan(8, |_| Some((7, EPOLLOUT | EPOLLIN)))[0].events, EPOLLIN);
        // Something changed (generation moved): the ready bits again.
        assert_eq!(i.scan(8, |_| Some((8, EPOLLOUT | EPOLLIN)))[0].events, EPOLLIN | EPOLLOUT);
        assert!(i.scan(8, |_| Some((8, EPOLLOUT | EPOLLIN))).is_empty());
        // Drained and refilled between scans without a visible gap: the
        // refill moved the generation, so the edge is not lost.
        assert_eq!(i.scan(8, |_| Some((9, EPOLLIN)))[0].events, EPOLLIN);
        // Not ready, then ready at the same generation: an edge.
        assert!(i.scan(8, |_| Some((9, 0))).is_empty());
        assert_eq!(i.scan(8, |_| Some((9, EPOLLIN)))[0].events, EPOLLIN);
    }

    #[test]
    fn oneshot_disables_until_mod() {
        let mut i: Interest<u32> = Interest::new();
        i.ctl(CtlOp::Add, 5, 1, 0, ev(EPOLLIN | EPOLLONESHOT, 3)).unwrap();
        assert_eq!(i.scan(8, |_| Some((0, EPOLLIN))).len(), 1);
        assert!(i.scan(8, |_| Some((1, EPOLLIN))).is_empty());
        assert!(!i.any_ready(|_| Some((1, EPOLLIN))));
        i.ctl(CtlOp::Mod, 5, 1, 0, ev(EPOLLIN | EPOLLONESHOT, 4)).unwrap();
        assert_eq!(i.scan(8, |_| Some((1, EPOLLIN))), vec![EpollEvent { events: EPOLLIN, data: 4 }]);
    }

    #[test]
    fn small_maxevents_rotates_through_ready_files() {
        let mut i: Interest<u32> = Interest::new();
        for fd in 0..4 {
            i.ctl(CtlOp::Add, fd, fd as usize, fd as u32, ev(EPOLLIN, fd as u64)).unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..4 {
            let r = i.scan(1, |_| Some((0, EPOLLIN)));
            assert_eq!(r.len(), 1);
            seen.push(r[0].data);
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 3]);
        // An edge not reported for lack of room is still reported later.
        let mut e: Interest<u32> = Interest::new();
        e.ctl(CtlOp::Add, 0, 0, 0, ev(EPOLLIN | EPOLLET, 0)).unwrap();
        e.ctl(CtlOp::Add, 1, 1, 1, ev(EPOLLIN | EPOLLET, 0)).unwrap();
        assert_eq!(e.scan(1, |_| Some((0, EPOLLIN))).len(), 1);
        assert_eq!(e.scan(1, |_| Some((0, EPOLLIN))).len(), 1);
        assert!(e.scan(1, |_| Some((0, EPOLLIN))).is_empty());
    }

    #[test]
    fn gone_files_are_dropped() {
        let mut i: Interest<u32> = Interest::new();
        i.ctl(CtlOp::Add, 1, 1, 1, ev(EPOLLIN, 1)).unwrap();
        i.ctl(CtlOp::Add, 2, 2, 2, ev(EPOLLIN, 2)).unwrap();
        let r = i.scan(8, |f| if *f == 1 { None } else { Some((0, EPOLLIN)) });
        assert_eq!(r, vec![EpollEvent { events: EPOLLIN, data: 2 }]);
        assert_eq!(i.len(), 1);
        i.retain_live(|_| false);
        assert!(i.is_empty());
    }

    #[test]
    fn poll_mask_conversion() {
        assert_eq!(from_poll_mask(POLLIN | POLLNVAL), EPOLLIN | EPOLLRDNORM);
        assert_eq!(from_poll_mask(POLLOUT | POLLRDHUP), EPOLLOUT | EPOLLWRNORM | EPOLLRDHUP);
    }
}
