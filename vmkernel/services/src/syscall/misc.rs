//! Identity, time, system information and the odds and ends.

use core::sync::atomic::Ordering;
use vmkernel::linux_abi::errno::*;

use super::{Ctx, SysResult, neg};
use crate::uw::files;
use crate::uw::io_wait::{self, Woken};
use crate::uw::process::{self, Process};
use crate::{arch, mm, time, world};

fn clock_ns(cx: &Ctx, clk: u64) -> Result<u64, i64> {
    Ok(match clk {
        0 | 5 | 8 => time::realtime_ns(),     // REALTIME, REALTIME_COARSE, REALTIME_ALARM
        1 | 4 | 6 | 7 | 9 => time::uptime_ns(), // MONOTONIC(_RAW/_COARSE), BOOTTIME(_ALARM)
        2 => cx.p.cpu_ns(),                    // PROCESS_CPUTIME_ID
        3 => world::with_policy(|p| p.world_used_ns(cx.t.world.load(Ordering::Relaxed))).unwrap_or(0),
        _ => return Err(neg(EINVAL)),
    })
}

fn put_timespec(p: &Process, addr: u64, ns: u64) -> Result<(), i64> {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    b[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    p.copy_to_user(addr, &b)
}

fn read_timespec(p: &Process, addr: u64) -> Result<u64, i64> {
    let mut b = [0u8; 16];
    p.copy_from_user(addr, &mut b)?;
    let s = i64::from_le_bytes(b[..8].try_into().unwrap());
    let ns = i64::from_le_bytes(b[8..].try_into().unwrap());
    if s < 0 || !(0..1_000_000_000).contains(&ns) {
        return Err(neg(EINVAL));
    }
    Ok((s as u64).saturating_mul(1_000_000_000).saturating_add(ns as u64))
}

/// Sleeps until `deadline` (ns since boot); EINTR (with the time left
/// written to `rem`) if a signal arrives first.
fn sleep_until(cx: &Ctx, deadline: u64, rem: u64) -> SysResult {
    loop {
        let now = time::uptime_ns();
        if now >= deadline {
            return Ok(0);
        }
        let seen = io_wait::generation();
        if io_wait::wait(seen, Some(deadline)) == Woken::Signal {
            if crate::uw::signal::absorb_job_control() {
                continue;
            }
            if rem != 0 {
                put_timespec(&cx.p, rem, deadline.saturating_sub(time::uptime_ns()))?;
            }
            return Err(neg(EINTR));
        }
    }
}

fn uname(cx: &Ctx, buf: u64) -> SysResult {
    // Like ESXi: `uname -s` says VMkernel. The release is a Linux-style
    // version so libc's minimum-kernel check passes.
    let fields: [&[u8]; 6] = [
        b"VMkernel",
        b"mantle",
        b"6.1.0-mantle",
        alloc::format!("#1 SMP Mantle {}", crate::VERSION).leak().as_bytes(),
        b"x86_64",
        b"(none)",
    ];
    let mut b = [0u8; 65 * 6];
    for (i, f) in fields.iter().enumerate() {
        let n = f.len().min(64);
        b[i * 65..i * 65 + n].copy_from_slice(&f[..n]);
    }
    cx.p.copy_to_user(buf, &b)?;
    Ok(0)
}

fn sysinfo(cx: &Ctx, buf: u64) -> SysResult {
    let mut b = [0u8; 112];
    let put64 = |b: &mut [u8], o: usize, v: u64| b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    put64(&mut b, 0, time::uptime_ns() / 1_000_000_000);
    put64(&mut b, 32, mm::usable_bytes());
    put64(&mut b, 40, mm::free_frames() * 4096);
    b[80..82].copy_from_slice(&(process::all().len() as u16).to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    cx.p.copy_to_user(buf, &b)?;
    Ok(0)
}

fn getrandom(cx: &Ctx, buf: u64, len: u64, flags: u64) -> SysResult {
    if flags & !7 != 0 {
        return Err(neg(EINVAL));
    }
    let n = (len as usize).min(1 << 20);
    let mut data = super::zeroed_buffer(n)?;
    files::fill_random(&mut data);
    cx.p.copy_to_user(buf, &data)?;
    Ok(n as i64)
}

fn rlimit(res: u64) -> (u64, u64) {
    const INF: u64 = u64::MAX;
    match res {
        3 => (8 << 20, INF),                                  // STACK
        7 => (crate::uw::fdtable::MAX_FDS as u64, 4096),      // NOFILE
        _ => (INF, INF),
    }
}

fn prlimit(cx: &Ctx, pid: u64, res: u64, new: u64, old: u64) -> SysResult {
    if pid != 0 && pid as u32 != cx.p.pid && process::lookup(pid as u32).is_none() {
        return Err(neg(ESRCH));
    }
    if res >= 16 {
        return Err(neg(EINVAL));
    }
    if old != 0 {
        let (cur, max) = rlimit(res);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        cx.p.copy_to_user(old, &b)?;
    }
    let _ = new; // limits are fixed; setting one is accepted and ignored
    Ok(0)
}

fn setuid_like(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    let mut ids = cx.p.ids.lock();
    let root = ids.euid == 0;
    let keep = |v: u64| v as u32 == u32::MAX;
    match n {
        105 => {
            // setuid
            let u = a[0] as u32;
            if root {
                ids.uid = u;
                ids.euid = u;
                ids.suid = u;
            } else if u == ids.uid || u == ids.suid {
                ids.euid = u;
            } else {
                return Err(neg(EPERM));
            }
        }
        106 => {
            let g = a[0] as u32;
            if root {
                ids.gid = g;
                ids.egid = g;
                ids.sgid = g;
            } else if g == ids.gid || g == ids.sgid {
                ids.egid = g;
            } else {
                return Err(neg(EPERM));
            }
        }
        113 | 117 => {
            // setreuid / setresuid
            let (r, e, s) = (a[0], a[1], if n == 117 { a[2] } else { u32::MAX as u64 });
            let ok = |v: u64| keep(v) || root || [ids.uid, ids.euid, ids.suid].contains(&(v as u32));
            if !(ok(r) && ok(e) && ok(s)) {
                return Err(neg(EPERM));
            }
            if !keep(r) {
                ids.uid = r as u32;
            }
            if !keep(e) {
                ids.euid = e as u32;
            }
            if !keep(s) {
                ids.suid = s as u32;
            }
        }
        114 | 119 => {
            let (r, e, s) = (a[0], a[1], if n == 119 { a[2] } else { u32::MAX as u64 });
            let ok = |v: u64| keep(v) || root || [ids.gid, ids.egid, ids.sgid].contains(&(v as u32));
            if !(ok(r) && ok(e) && ok(s)) {
                return Err(neg(EPERM));
            }
            if !keep(r) {
                ids.gid = r as u32;
            }
            if !keep(e) {
                ids.egid = e as u32;
            }
            if !keep(s) {
                ids.sgid = s as u32;
            }
        }
        _ => return Err(neg(ENOSYS)),
    }
    cx.p.euid.store(ids.euid, Ordering::Release);
    Ok(0)
}

fn put_ids3(p: &Process, a: [u64; 6], v: [u32; 3]) -> SysResult {
    for i in 0..3 {
        p.write_u32(a[i], v[i])?;
    }
    Ok(0)
}

/// `struct itimerval` (interval, value; two timevals) from ns values.
fn itimerval_bytes((value, interval): (u64, u64)) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, ns) in [interval, value].into_iter().enumerate() {
        out[i * 16..i * 16 + 8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        out[i * 16 + 8..i * 16 + 16].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
    }
    out
}

/// getitimer/setitimer/alarm: ITIMER_REAL only (the others: EINVAL).
fn itimer_call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    let pid = cx.p.pid;
    match n {
        37 => {
            let (old, _) = crate::uw::itimer::set(pid, a[0].min(1 << 31).saturating_mul(1_000_000_000), 0);
            Ok(old.div_ceil(1_000_000_000) as i64)
        }
        36 => {
            if a[0] != 0 {
                return Err(neg(EINVAL));
            }
            cx.p.copy_to_user(a[1], &itimerval_bytes(crate::uw::itimer::get(pid)))?;
            Ok(0)
        }
        _ => {
            if a[0] != 0 {
                return Err(neg(EINVAL));
            }
            let mut b = [0u8; 32];
            cx.p.copy_from_user(a[1], &mut b)?;
            let q = |o: usize| i64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
            let tv = |s: i64, us: i64| -> Result<u64, i64> {
                if s < 0 || !(0..1_000_000).contains(&us) {
                    return Err(neg(EINVAL));
                }
                Ok((s as u64).saturating_mul(1_000_000_000).saturating_add(us as u64 * 1000))
            };
            let interval = tv(q(0), q(8))?;
            let value = tv(q(16), q(24))?;
            let old = crate::uw::itimer::set(pid, value, interval);
            if a[2] != 0 {
                cx.p.copy_to_user(a[2], &itimerval_bytes(old))?;
            }
            Ok(0)
        }
    }
}

/// setpgid(pid, pgid) with Linux's rules: the caller or a child in its
/// session (ESRCH otherwise), never a session leader, and a group other
/// than the process's own id only if it exists in the caller's session.
fn setpgid(cx: &Ctx, pid: i32, pgid: i32) -> SysResult {
    let p = &cx.p;
    if pgid < 0 {
        return Err(neg(EINVAL));
    }
    let t = if pid == 0 { p.clone() } else { process::lookup(pid as u32).ok_or(neg(ESRCH))? };
    let sid = p.sid.load(Ordering::Relaxed);
    if t.pid != p.pid {
        if t.ppid.load(Ordering::Relaxed) != p.pid || t.is_zombie() {
            return Err(neg(ESRCH));
        }
        if t.sid.load(Ordering::Relaxed) != sid {
            return Err(neg(EPERM));
        }
    }
    if t.sid.load(Ordering::Relaxed) == t.pid {
        return Err(neg(EPERM));
    }
    let pg = if pgid == 0 { t.pid } else { pgid as u32 };
    if pg != t.pid
        && !process::all().iter().any(|q| q.pgid.load(Ordering::Relaxed) == pg && q.sid.load(Ordering::Relaxed) == sid && !q.is_zombie())
    {
        return Err(neg(EPERM));
    }
    t.pgid.store(pg, Ordering::Release);
    Ok(0)
}

pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    if matches!(n, 36..=38) {
        return itimer_call(cx, n, a);
    }
    let p = &cx.p;
    match n {
        24 => {
            world::yield_now();
            Ok(0)
        }
        35 => read_timespec(p, a[0]).and_then(|ns| sleep_until(cx, time::uptime_ns().saturating_add(ns), a[1])),
        39 => Ok(p.pid as i64),
        63 => uname(cx, a[0]),
        96 => {
            if a[0] != 0 {
                let ns = time::realtime_ns();
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
                b[8..].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
                p.copy_to_user(a[0], &b)?;
            }
            Ok(0)
        }
        97 => prlimit(cx, 0, a[0], 0, a[1]),
        98 => {
            let mut ru = [0u8; 144];
            let ns = p.cpu_ns();
            ru[0..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
            ru[8..16].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
            p.copy_to_user(a[1], &ru).map(|_| 0)
        }
        99 => sysinfo(cx, a[0]),
        100 => {
            let ticks = p.cpu_ns() / 10_000_000;
            if a[0] != 0 {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&ticks.to_le_bytes());
                p.copy_to_user(a[0], &b)?;
            }
            Ok((time::uptime_ns() / 10_000_000) as i64)
        }
        102 => Ok(p.ids.lock().uid as i64),
        104 => Ok(p.ids.lock().gid as i64),
        107 => Ok(p.ids.lock().euid as i64),
        108 => Ok(p.ids.lock().egid as i64),
        105 | 106 | 113 | 114 | 117 | 119 => setuid_like(cx, n, a),
        109 => setpgid(cx, a[0] as i32, a[1] as i32),
        110 => Ok(p.ppid.load(Ordering::Relaxed) as i64),
        111 => Ok(p.pgid.load(Ordering::Relaxed) as i64),
        112 => {
            // A process that leads a group (its own, or one others joined)
            // cannot start a session.
            let pid = p.pid;
            if process::all().iter().any(|q| q.pgid.load(Ordering::Relaxed) == pid && !q.is_zombie()) {
                Err(neg(EPERM))
            } else {
                p.sid.store(pid, Ordering::Release);
                p.pgid.store(pid, Ordering::Release);
                Ok(pid as i64)
            }
        }
        115 => {
            let g = p.ids.lock().groups.clone();
            if a[0] == 0 {
                Ok(g.len() as i64)
            } else if (a[0] as usize) < g.len() {
                Err(neg(EINVAL))
            } else {
                let b: alloc::vec::Vec<u8> = g.iter().flat_map(|x| x.to_le_bytes()).collect();
                p.copy_to_user(a[1], &b).map(|_| g.len() as i64)
            }
        }
        116 => {
            if p.ids.lock().euid != 0 {
                Err(neg(EPERM))
            } else if a[0] > 65536 {
                Err(neg(EINVAL))
            } else {
                let mut b = super::zeroed_buffer(a[0] as usize * 4)?;
                p.copy_from_user(a[1], &mut b)?;
                p.ids.lock().groups = b.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
                Ok(0)
            }
        }
        118 => {
            let i = p.ids.lock().clone();
            put_ids3(p, a, [i.uid, i.euid, i.suid])
        }
        120 => {
            let i = p.ids.lock().clone();
            put_ids3(p, a, [i.gid, i.egid, i.sgid])
        }
        121 => {
            if a[0] == 0 {
                Ok(p.pgid.load(Ordering::Relaxed) as i64)
            } else {
                process::lookup(a[0] as u32).map(|t| t.pgid.load(Ordering::Relaxed) as i64).ok_or(neg(ESRCH))
            }
        }
        124 => {
            if a[0] == 0 {
                Ok(p.sid.load(Ordering::Relaxed) as i64)
            } else {
                process::lookup(a[0] as u32).map(|t| t.sid.load(Ordering::Relaxed) as i64).ok_or(neg(ESRCH))
            }
        }
        140 => Ok(20),     // getpriority: nice 0
        141 => Ok(0),      // setpriority: CPU share comes from resource groups
        157 => match a[0] {
            15 => {
                // PR_SET_NAME
                let name = p.read_cstr(a[1], 16).unwrap_or_default();
                *p.name.lock() = alloc::string::String::from_utf8_lossy(&name[..name.len().min(15)]).into_owned();
                Ok(0)
            }
            16 => {
                let mut b = [0u8; 16];
                let n = p.name.lock().clone();
                b[..n.len().min(15)].copy_from_slice(&n.as_bytes()[..n.len().min(15)]);
                p.copy_to_user(a[1], &b).map(|_| 0)
            }
            _ => Err(neg(EINVAL)),
        },
        158 => match a[0] {
            0x1002 => {
                // ARCH_SET_FS
                if a[1] >= vmkernel::elf::USER_END {
                    Err(neg(EPERM))
                } else {
                    cx.t.fs_base.store(a[1], Ordering::Release);
                    arch::syscall::set_user_fs_base(a[1]);
                    Ok(0)
                }
            }
            0x1003 => p.write_u64(a[1], cx.t.fs_base.load(Ordering::Relaxed)).map(|_| 0),
            _ => Err(neg(EINVAL)),
        },
        169 => {
            // reboot(magic, magic2, cmd): root only.
            if p.ids.lock().euid != 0 {
                Err(neg(EPERM))
            } else if a[0] != 0xfee1_dead {
                Err(neg(EINVAL))
            } else {
                match a[2] as u32 {
                    0x4321_fedc | 0xcdef_0123 => {
                        crate::storage::shutdown();
                        crate::power::power_off()
                    }
                    0x0123_4567 => {
                        crate::storage::shutdown();
                        crate::power::reboot()
                    }
                    _ => Err(neg(EINVAL)),
                }
            }
        }
        186 => Ok(cx.t.tid as i64),
        201 => {
            let s = time::realtime_ns() / 1_000_000_000;
            if a[0] != 0 {
                p.write_u64(a[0], s)?;
            }
            Ok(s as i64)
        }
        204 => {
            // sched_getaffinity: every online CPU.
            let cpus = arch::gdt::cpus_online() as u64;
            let size = (a[1] as usize).min(128);
            if size < 8 {
                return Err(neg(EINVAL));
            }
            let mut mask = super::zeroed_buffer(size)?;
            for c in 0..cpus.min(size as u64 * 8) {
                mask[(c / 8) as usize] |= 1 << (c % 8);
            }
            p.copy_to_user(a[2], &mask).map(|_| 8)
        }
        228 => clock_ns(cx, a[0]).and_then(|ns| if a[1] != 0 { put_timespec(p, a[1], ns).map(|_| 0) } else { Ok(0) }),
        229 => {
            if a[1] != 0 {
                put_timespec(p, a[1], 1).map(|_| 0)
            } else {
                Ok(0)
            }
        }
        230 => {
            let t = read_timespec(p, a[2])?;
            let deadline = if a[1] & 1 != 0 {
                // TIMER_ABSTIME on the given clock.
                let now = clock_ns(cx, a[0])?;
                time::uptime_ns() + t.saturating_sub(now)
            } else {
                time::uptime_ns().saturating_add(t)
            };
            sleep_until(cx, deadline, if a[1] & 1 != 0 { 0 } else { a[3] })
        }
        302 => prlimit(cx, a[0], a[1], a[2], a[3]),
        309 => {
            // getcpu
            if a[0] != 0 {
                p.write_u32(a[0], arch::gdt::cpu_index())?;
            }
            Ok(0)
        }
        318 => getrandom(cx, a[0], a[1], a[2]),
        _ => Err(super::NOT_MINE),
    }
}
