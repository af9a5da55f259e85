//! epoll, eventfd and timerfd: anonymous files whose readiness the rules
//! in `vmkernel::linux_abi::{epoll, eventfd}` decide. Waiting is the
//! kernel's one I/O wait (`io_wait`): every change that can make a file
//! ready moves its generation, epoll_wait re-scans its interest list then,
//! and timerfds ask `alarm` for a notification at their expiry.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;
use vmkernel::linux_abi::epoll::{self, CtlOp, EPOLL_EVENT_SIZE, EpollEvent, Interest};
use vmkernel::linux_abi::errno::*;
use vmkernel::linux_abi::eventfd::{EventCounter, TimerSchedule};
use vmkernel::linux_abi::flags::poll::{EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE, EPOLL_CLOEXEC};
use vmkernel::vfs::file::{Backing, OpenFile};
use vmkernel::vfs::inode::{Device, Inode};
use vmkernel::vfs::types::{Metadata, PollEvents, Timespec};
use vmkernel::vfs::{Errno, Result as VfsResult};

use super::fs::file;
use super::{Ctx, SysResult, err, neg};
use crate::time;
use crate::uw::io_wait::{self, Woken};
use crate::uw::{alarm, process};

const O_NONBLOCK: u32 = 0o4000;
const O_CLOEXEC: u32 = 0o2000000;

static NEXT_INO: AtomicU64 = AtomicU64::new(1 << 40);

fn anon_metadata(ino: u64) -> Metadata {
    let t = Timespec::default();
    Metadata { ino, mode: 0o600, nlink: 1, uid: 0, gid: 0, size: 0, atime: t, mtime: t, ctime: t, rdev: 0, blocks: 0 }
}

fn install<D: Inode + Device + 'static>(cx: &Ctx, obj: D, flags: u32) -> SysResult {
    let obj = Arc::new(obj);
    let f = OpenFile::anonymous(obj.clone(), obj, flags);
    let fd = cx.p.fds.lock().insert(Arc::new(f), flags & O_CLOEXEC != 0).map_err(err)?;
    Ok(i64::from(fd))
}

/// The object behind an anonymous file, if it is a `T`.
fn object<T: 'static>(f: &OpenFile) -> Option<&T> {
    match f.backing() {
        Backing::Device { node, .. } => node.as_any().downcast_ref::<T>(),
        _ => None,
    }
}

// ---------------------------------------------------------------- epoll

/// An epoll instance. Registrations hold files weakly: closing the last
/// descriptor of a file drops its registration, as on Linux.
pub struct EpollFile {
    ino: u64,
    interest: Mutex<Interest<Weak<OpenFile>>>,
}

/// A registered file's wake-up generation (read first) and epoll mask.
fn epoll_mask(f: &Weak<OpenFile>) -> Option<(u64, u32)> {
    let f = f.upgrade()?;
    let generation = f.poll_generation().unwrap_or_else(io_wait::generation);
    Some((generation, epoll::from_poll_mask(f.poll().0)))
}

impl Inode for EpollFile {
    fn metadata(&self) -> Metadata {
        anon_metadata(self.ino)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Device for EpollFile {
    fn read(&self, _offset: u64, _buf: &mut [u8]) -> VfsResult<usize> {
        Err(Errno::EINVAL)
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> VfsResult<usize> {
        Err(Errno::EINVAL)
    }
    fn poll(&self) -> PollEvents {
        let ready = self.interest.lock().any_ready(epoll_mask);
        if ready { PollEvents::IN } else { PollEvents::NONE }
    }
    fn seekable(&self) -> bool {
        false
    }
}

/// Serialises adding epoll files to epoll files, so two concurrent adds
/// cannot close a cycle the loop check would have refused.
static NESTING: Mutex<()> = Mutex::new(());

/// Linux's limit on nested epoll instances.
const MAX_NESTING: usize = 4;

/// Whether `target` reaches `ep` (or nests too deep) through epoll files.
fn reaches(target: &EpollFile, ep: &EpollFile, depth: usize) -> bool {
    if core::ptr::eq(target, ep) || depth > MAX_NESTING {
        return true;
    }
    let inner: Vec<Arc<OpenFile>> = target.interest.lock().files().filter_map(|w| w.upgrade()).collect();
    inner.iter().any(|f| object::<EpollFile>(f).is_some_and(|e| reaches(e, ep, depth + 1)))
}

fn epoll_create(cx: &Ctx, flags: u32) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(neg(EINVAL));
    }
    let ep = EpollFile { ino: NEXT_INO.fetch_add(1, Ordering::Relaxed), interest: Mutex::new(Interest::new()) };
    install(cx, ep, flags & O_CLOEXEC)
}

fn epoll_ctl(cx: &Ctx, epfd: u64, op: u64, fd: u64, evp: u64) -> SysResult {
    let epf = file(&cx.p, epfd)?;
    let target = file(&cx.p, fd)?;
    let ep = object::<EpollFile>(&epf).ok_or(neg(EINVAL))?;
    let op = CtlOp::from_raw(op as u32).map_err(err)?;
    if Arc::ptr_eq(&epf, &target) {
        return Err(neg(EINVAL));
    }
    // Regular files and directories are always ready: Linux refuses them.
    if let Backing::Inode(_) = target.backing() {
        return Err(neg(EPERM));
    }
    let ev = if op == CtlOp::Del {
        None
    } else {
        let mut b = [0u8; EPOLL_EVENT_SIZE];
        cx.p.copy_from_user(evp, &mut b)?;
        EpollEvent::decode(&b)
    };
    let nested = object::<EpollFile>(&target);
    let _guard = nested.filter(|_| op == CtlOp::Add).map(|_| NESTING.lock());
    if let (CtlOp::Add, Some(inner)) = (op, nested) {
        if ev.is_some_and(|e| e.events & vmkernel::linux_abi::flags::poll::EPOLLEXCLUSIVE != 0) {
            return Err(neg(EINVAL));
        }
        if reaches(inner, ep, 1) {
            return Err(neg(ELOOP));
        }
    }
    let key = Arc::as_ptr(&target) as usize;
    let mut interest = ep.interest.lock();
    interest.retain_live(|w| w.strong_count() > 0);
    interest.ctl(op, fd as i32, key, Arc::downgrade(&target), ev).map(|_| 0).map_err(err)
}

/// epoll_wait/epoll_pwait: `timeout_ms` < 0 waits forever.
fn epoll_wait(cx: &Ctx, epfd: u64, events: u64, maxevents: u64, timeout_ms: i32) -> SysResult {
    let epf = file(&cx.p, epfd)?;
    let ep = object::<EpollFile>(&epf).ok_or(neg(EINVAL))?;
    let max = maxevents as i32;
    if max <= 0 || max as usize > epoll::MAX_EVENTS {
        return Err(neg(EINVAL));
    }
    let max = max as usize;
    // The whole buffer must be writable before any event is consumed.
    process::walk_user(&cx.p.mm(), events, max * EPOLL_EVENT_SIZE, true, |_, _, _| {})?;
    let deadline = (timeout_ms >= 0).then(|| time::uptime_ns().saturating_add(timeout_ms as u64 * 1_000_000));
    loop {
        let seen = io_wait::generation();
        let got = ep.interest.lock().scan(max.min(1024), epoll_mask);
        if !got.is_empty() {
            let mut out = alloc::vec![0u8; got.len() * EPOLL_EVENT_SIZE];
            for (e, o) in got.iter().zip(out.chunks_exact_mut(EPOLL_EVENT_SIZE)) {
                e.encode(o);
            }
            cx.p.copy_to_user(events, &out)?;
            return Ok(got.len() as i64);
        }
        if deadline.is_some_and(|d| time::uptime_ns() >= d) {
            return Ok(0);
        }
        match io_wait::wait(seen, deadline) {
            // epoll_wait is never restarted after a handler (Linux: EINTR).
            Woken::Signal => return Err(neg(EINTR)),
            Woken::Timeout | Woken::Event => {}
        }
    }
}

// -------------------------------------------------------------- eventfd

pub struct EventFd {
    ino: u64,
    counter: Mutex<EventCounter>,
    /// Advances on every read and write (wake-ups for epoll).
    changes: AtomicU64,
}

impl Inode for EventFd {
    fn metadata(&self) -> Metadata {
        anon_metadata(self.ino)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Device for EventFd {
    fn read(&self, _offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        if buf.len() < 8 {
            return Err(Errno::EINVAL);
        }
        let v = self.counter.lock().read()?;
        self.changes.fetch_add(1, Ordering::AcqRel);
        buf[..8].copy_from_slice(&v.to_le_bytes());
        Ok(8)
    }
    fn write(&self, _offset: u64, data: &[u8]) -> VfsResult<usize> {
        let Some(b) = data.get(..8) else { return Err(Errno::EINVAL) };
        let mut v = [0u8; 8];
        v.copy_from_slice(b);
        self.counter.lock().write(u64::from_le_bytes(v))?;
        self.changes.fetch_add(1, Ordering::AcqRel);
        Ok(8)
    }
    fn poll_generation(&self) -> Option<u64> {
        Some(self.changes.load(Ordering::Acquire))
    }
    fn poll(&self) -> PollEvents {
        let c = self.counter.lock();
        let mut ev = PollEvents::NONE;
        if c.readable() {
            ev |= PollEvents::IN;
        }
        if c.writable() {
            ev |= PollEvents::OUT;
        }
        ev
    }
    fn seekable(&self) -> bool {
        false
    }
}

fn eventfd(cx: &Ctx, initval: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !(EFD_SEMAPHORE | EFD_CLOEXEC | EFD_NONBLOCK) != 0 {
        return Err(neg(EINVAL));
    }
    let ev = EventFd {
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
        counter: Mutex::new(EventCounter::new(initval as u32, flags & EFD_SEMAPHORE != 0)),
        changes: AtomicU64::new(0),
    };
    install(cx, ev, flags & (O_CLOEXEC | O_NONBLOCK))
}

// -------------------------------------------------------------- timerfd

const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;

pub struct TimerFd {
    ino: u64,
    realtime: bool,
    schedule: Mutex<TimerSchedule>,
    /// Advances on reads and settime (an expiry itself is a new bit).
    changes: AtomicU64,
    /// The wake-up asked for at the next expiry (withdrawn when the timer
    /// is re-armed, disarmed or closed).
    wakeup: Mutex<Option<alarm::Moment>>,
}

impl TimerFd {
    /// Asks for a wake-up at the next expiry, so waiters see it (callers
    /// hold the schedule lock, so requests of one timer do not cross).
    fn arm_wakeup(&self, s: &TimerSchedule, now: u64) {
        let mut w = self.wakeup.lock();
        match s.deadline(now) {
            Some(at) if w.as_ref().is_some_and(|m| m.at() == at) => {}
            Some(at) => *w = alarm::notify_at(at),
            None => *w = None,
        }
    }
}

impl Inode for TimerFd {
    fn metadata(&self) -> Metadata {
        anon_metadata(self.ino)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Device for TimerFd {
    fn read(&self, _offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        if buf.len() < 8 {
            return Err(Errno::EINVAL);
        }
        let now = time::uptime_ns();
        let mut s = self.schedule.lock();
        let n = s.take(now);
        if n == 0 {
            self.arm_wakeup(&s, now);
            return Err(Errno::EAGAIN);
        }
        self.changes.fetch_add(1, Ordering::AcqRel);
        buf[..8].copy_from_slice(&n.to_le_bytes());
        Ok(8)
    }
    fn write(&self, _offset: u64, _data: &[u8]) -> VfsResult<usize> {
        Err(Errno::EINVAL)
    }
    fn poll_generation(&self) -> Option<u64> {
        Some(self.changes.load(Ordering::Acquire))
    }
    fn poll(&self) -> PollEvents {
        let now = time::uptime_ns();
        let s = self.schedule.lock();
        if s.expired(now) {
            PollEvents::IN
        } else {
            self.arm_wakeup(&s, now);
            PollEvents::NONE
        }
    }
    fn seekable(&self) -> bool {
        false
    }
}

fn timerfd_create(cx: &Ctx, clock: u64, flags: u64) -> SysResult {
    let flags = flags as u32;
    if flags & !(O_CLOEXEC | O_NONBLOCK) != 0 {
        return Err(neg(EINVAL));
    }
    let realtime = match clock {
        0 | 8 => true,      // REALTIME, REALTIME_ALARM
        1 | 7 | 9 => false, // MONOTONIC, BOOTTIME, BOOTTIME_ALARM
        _ => return Err(neg(EINVAL)),
    };
    let t = TimerFd { ino: NEXT_INO.fetch_add(1, Ordering::Relaxed), realtime, schedule: Mutex::new(TimerSchedule::default()), changes: AtomicU64::new(0), wakeup: Mutex::new(None) };
    install(cx, t, flags)
}

fn timerfd_of(cx: &Ctx, fd: u64) -> Result<Arc<OpenFile>, i64> {
    let f = file(&cx.p, fd)?;
    if object::<TimerFd>(&f).is_none() {
        return Err(neg(EINVAL));
    }
    Ok(f)
}

/// `struct itimerspec` (interval, value) from ns values.
fn itimerspec_bytes(value: u64, interval: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, ns) in [interval, value].into_iter().enumerate() {
        b[i * 16..i * 16 + 8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        b[i * 16 + 8..i * 16 + 16].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    }
    b
}

fn timespec_ns(b: &[u8]) -> Result<u64, i64> {
    let mut s = [0u8; 8];
    let mut n = [0u8; 8];
    s.copy_from_slice(&b[..8]);
    n.copy_from_slice(&b[8..16]);
    let (sec, nsec) = (i64::from_le_bytes(s), i64::from_le_bytes(n));
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(neg(EINVAL));
    }
    Ok((sec as u64).saturating_mul(1_000_000_000).saturating_add(nsec as u64))
}

fn timerfd_settime(cx: &Ctx, fd: u64, flags: u64, newp: u64, oldp: u64) -> SysResult {
    let f = timerfd_of(cx, fd)?;
    let Some(t) = object::<TimerFd>(&f) else { return Err(neg(EINVAL)) };
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(neg(EINVAL));
    }
    let mut b = [0u8; 32];
    cx.p.copy_from_user(newp, &mut b)?;
    let interval = timespec_ns(&b[..16])?;
    let value = timespec_ns(&b[16..])?;
    let now = time::uptime_ns();
    let first = if value == 0 {
        0
    } else if flags & TFD_TIMER_ABSTIME != 0 {
        // An absolute time on the timer's clock, as a moment since boot.
        let clock_now = if t.realtime { time::realtime_ns() } else { now };
        now.saturating_add(value.saturating_sub(clock_now)).max(1)
    } else {
        now.saturating_add(value)
    };
    if oldp != 0 {
        // Checked before the timer changes, so EFAULT leaves it alone.
        process::walk_user(&cx.p.mm(), oldp, 32, true, |_, _, _| {})?;
    }
    let (old_value, old_interval) = {
        let mut s = t.schedule.lock();
        let old = s.set(now, first, interval);
        t.changes.fetch_add(1, Ordering::AcqRel);
        t.arm_wakeup(&s, now);
        old
    };
    io_wait::notify();
    if oldp != 0 {
        cx.p.copy_to_user(oldp, &itimerspec_bytes(old_value, old_interval))?;
    }
    Ok(0)
}

fn timerfd_gettime(cx: &Ctx, fd: u64, curp: u64) -> SysResult {
    let f = timerfd_of(cx, fd)?;
    let Some(t) = object::<TimerFd>(&f) else { return Err(neg(EINVAL)) };
    let (value, interval) = t.schedule.lock().get(time::uptime_ns());
    cx.p.copy_to_user(curp, &itimerspec_bytes(value, interval))?;
    Ok(0)
}

/// The calls of this module; `NOT_MINE` for the rest.
pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    match n {
        213 => {
            // epoll_create(size): size must be positive, then ignored.
            if a[0] as i32 <= 0 { Err(neg(EINVAL)) } else { epoll_create(cx, 0) }
        }
        291 => epoll_create(cx, a[0] as u32),
        233 => epoll_ctl(cx, a[0], a[1], a[2], a[3]),
        232 => epoll_wait(cx, a[0], a[1], a[2], a[3] as i32),
        281 => {
            // epoll_pwait: the signal mask is accepted (sigsetsize must be 8).
            if a[4] != 0 && a[5] != 8 {
                return Err(neg(EINVAL));
            }
            epoll_wait(cx, a[0], a[1], a[2], a[3] as i32)
        }
        441 => {
            // epoll_pwait2: a timespec timeout (NULL = forever).
            if a[4] != 0 && a[5] != 8 {
                return Err(neg(EINVAL));
            }
            let ms = if a[3] == 0 {
                -1
            } else {
                let mut b = [0u8; 16];
                cx.p.copy_from_user(a[3], &mut b)?;
                let ns = timespec_ns(&b)?;
                ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32
            };
            epoll_wait(cx, a[0], a[1], a[2], ms)
        }
        284 => eventfd(cx, a[0], 0),
        290 => eventfd(cx, a[0], a[1]),
        283 => timerfd_create(cx, a[0], a[1]),
        286 => timerfd_settime(cx, a[0], a[1], a[2], a[3]),
        287 => timerfd_gettime(cx, a[0], a[1]),
        _ => Err(super::NOT_MINE),
    }
}
