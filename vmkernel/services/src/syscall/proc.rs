//! Process, memory, signal and futex calls.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use vmkernel::linux_abi::Abi;
use vmkernel::linux_abi::errno::*;
use vmkernel::linux_abi::flags::clone::*;
use vmkernel::linux_abi::flags::mman::*;
use vmkernel::linux_abi::signal::{KernelSigaction, SIGKILL, SIGSTOP};
use vmkernel::vm_regions::{MmapFile, Vma};

use super::fs::{file, path};
use super::{Ctx, ERESTARTSYS, SysResult, err, neg};
use crate::arch::trap::TrapFrame;
use crate::uw::fault::pte_flags;
use crate::uw::io_wait::{self, Woken};
use crate::uw::process::{self, Mm, Process, Thread, spawn_thread};
use crate::uw::{exec, futex, signal};
use crate::{time, world};

fn read_ptr_array(p: &Process, mut addr: u64) -> Result<Vec<Vec<u8>>, i64> {
    let mut v = Vec::new();
    if addr == 0 {
        return Ok(v);
    }
    loop {
        let ptr = p.read_u64(addr)?;
        if ptr == 0 {
            return Ok(v);
        }
        if v.len() >= 8192 {
            return Err(neg(E2BIG));
        }
        v.push(p.read_cstr(ptr, 128 * 1024)?);
        addr += 8;
    }
}

pub fn execve(cx: &Ctx, a: [u64; 6], f: &mut TrapFrame) -> Result<(), i64> {
    let path = path(&cx.p, a[0])?;
    let argv = read_ptr_array(&cx.p, a[1])?;
    let envp = read_ptr_array(&cx.p, a[2])?;
    let img = exec::load(&cx.p, &path, argv, &envp).map_err(err)?;
    exec::commit(&cx.t, img, f);
    Ok(())
}

/// clone/fork/vfork.
pub fn clone(cx: &Ctx, n: u64, a: [u64; 6], f: &mut TrapFrame) -> SysResult {
    let (flags, newsp, ptid, ctid, tls) = match n {
        57 => (17, 0, 0, 0, 0),                                     // fork: SIGCHLD
        58 => (CLONE_VM | CLONE_VFORK | 17, 0, 0, 0, 0),             // vfork
        _ => (a[0], a[1], a[2], a[3], a[4]),
    };
    let parent_fpu: Vec<u8> = world::with_current_user_fpu(|s| s.area().to_vec()).unwrap_or_default();
    let mut child_frame = TrapFrame { rax: 0, ..*f };
    if newsp != 0 {
        child_frame.rsp = newsp;
    }
    let p = &cx.p;
    let thread: Arc<Thread> = if flags & CLONE_THREAD != 0 {
        if flags & CLONE_VM == 0 || flags & CLONE_SIGHAND == 0 {
            return Err(neg(EINVAL));
        }
        let tid = process::alloc_pid();
        let t = Thread::new(tid, p.clone());
        t.sigmask.store(cx.t.sigmask.load(Ordering::Relaxed), Ordering::Relaxed);
        t
    } else {
        if process::all().len() >= process::MAX_PROCESSES {
            return Err(neg(EAGAIN));
        }
        if flags & CLONE_VM == 0 {
            let pm = p.mm();
            if !crate::uw::commit::may_commit(pm.group.load(Ordering::Relaxed), pm.committed.load(Ordering::Relaxed)) {
                return Err(neg(ENOMEM));
            }
        }
        let mm: Arc<Mm> = if flags & CLONE_VM != 0 { p.mm() } else { p.mm().fork().ok_or(neg(ENOMEM))? };
        if flags & CLONE_VM == 0 && p.threads.lock().len() > 1 {
            // The parent's writable pages just became copy-on-write: its
            // other threads must not keep writing through old TLB entries.
            crate::arch::apic::tlb_shootdown();
        }
        let name = p.name.lock().clone();
        let c = Process::with_mm(&name, mm, p.pid).ok_or(neg(EAGAIN))?;
        *c.fds.lock() = p.fds.lock().clone();
        *c.cwd.lock() = p.cwd.lock().clone();
        *c.ids.lock() = p.ids.lock().clone();
        c.euid.store(p.euid.load(Ordering::Relaxed), Ordering::Relaxed);
        c.umask.store(p.umask.load(Ordering::Relaxed), Ordering::Relaxed);
        *c.sig.lock() = p.sig.lock().clone();
        c.pgid.store(p.pgid.load(Ordering::Relaxed), Ordering::Relaxed);
        c.sid.store(p.sid.load(Ordering::Relaxed), Ordering::Relaxed);
        *c.exe.lock() = p.exe.lock().clone();
        *c.cmdline.lock() = p.cmdline.lock().clone();
        c.group.store(p.group.load(Ordering::Relaxed), Ordering::Relaxed);
        p.children.lock().push(c.clone());
        let t = Thread::new(c.pid, c);
        t.sigmask.store(cx.t.sigmask.load(Ordering::Relaxed), Ordering::Relaxed);
        t
    };
    let child = thread.process.clone();
    let tid = thread.tid;
    thread.fs_base.store(
        if flags & CLONE_SETTLS != 0 { tls } else { cx.t.fs_base.load(Ordering::Relaxed) },
        Ordering::Relaxed,
    );
    if flags & CLONE_CHILD_CLEARTID != 0 {
        thread.clear_child_tid.store(ctid, Ordering::Relaxed);
    }
    if flags & CLONE_PARENT_SETTID != 0 {
        let _ = p.write_u32(ptid, tid);
    }
    if flags & CLONE_CHILD_SETTID != 0 {
        let _ = child.write_u32(ctid, tid);
    }
    // The child starts with the parent's extended state, in place before
    // it can run.
    spawn_thread(&thread, child_frame, Some(&parent_fpu)).map_err(|_| neg(EAGAIN))?;
    if flags & CLONE_VFORK != 0 {
        // The parent sleeps until the child execs or exits (the child is
        // using its address space). A CLONE_THREAD child is a thread of
        // this very process: it releases the parent by ending (its process
        // ends or execs only after that).
        let released = || {
            child.vfork_released.load(Ordering::Acquire)
                || (flags & CLONE_THREAD != 0 && !child.threads.lock().iter().any(|x| Arc::ptr_eq(x, &thread)))
        };
        while !released() {
            let seen = io_wait::generation();
            if released() {
                break;
            }
            if io_wait::wait_for_event(seen) == Woken::Signal {
                // Still must not run on the shared stack: keep waiting, but
                // let SIGKILL through — on the way out of the system call,
                // where nothing on this stack holds the process any more.
                break;
            }
        }
    }
    Ok(tid as i64)
}

/// What a wait collected from a child.
#[derive(Clone, Copy)]
enum Collected {
    Ended(process::ExitStatus),
    Job(process::JobReport),
}

impl Collected {
    fn wait_status(self) -> i32 {
        match self {
            Self::Ended(st) => st.wait_status(),
            Self::Job(j) => j.wait_status(),
        }
    }

    /// waitid's (si_code, si_status).
    fn code_and_status(self) -> (i32, i32) {
        use vmkernel::linux_abi::signal::*;
        match self {
            Self::Ended(process::ExitStatus::Exited(c)) => (CLD_EXITED, c as i32),
            Self::Ended(process::ExitStatus::Signaled(s)) => (CLD_KILLED, s as i32),
            Self::Job(process::JobReport::Stopped(s)) => (CLD_STOPPED, s as i32),
            Self::Job(process::JobReport::Continued) => (CLD_CONTINUED, SIGCONT as i32),
        }
    }
}

const WNOHANG: u64 = 1;
const WSTOPPED: u64 = 2; // WUNTRACED
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;

/// The wait shared by wait4 and waitid: `pid` selects as wait4's does;
/// `options` says which changes to report (WEXITED, WSTOPPED, WCONTINUED),
/// whether to block (WNOHANG) and whether to leave the report (WNOWAIT).
/// Ok(None): WNOHANG and nothing to report.
fn wait_any(cx: &Ctx, pid: i64, options: u64) -> Result<Option<(Arc<Process>, Collected)>, i64> {
    let me = &cx.p;
    loop {
        let seen = io_wait::generation();
        let children: Vec<Arc<Process>> = me.children.lock().clone();
        let matching: Vec<&Arc<Process>> = children
            .iter()
            .filter(|c| match pid {
                -1 => true,
                0 => c.pgid.load(Ordering::Relaxed) == me.pgid.load(Ordering::Relaxed),
                p if p > 0 => c.pid == p as u32,
                p => c.pgid.load(Ordering::Relaxed) == (-p) as u32,
            })
            .collect();
        if matching.is_empty() {
            return Err(neg(ECHILD));
        }
        for c in &matching {
            if let Some(st) = c.exit_status() {
                // Still ending: not yet reported (nor stopped any more).
                if options & WEXITED == 0 || !c.reapable.load(Ordering::Acquire) {
                    continue;
                }
                if options & WNOWAIT == 0 {
                    process::reap(c);
                }
                return Ok(Some(((*c).clone(), Collected::Ended(st))));
            }
            let mut report = c.job_report.lock();
            let wanted = match *report {
                Some(process::JobReport::Stopped(_)) => options & WSTOPPED != 0,
                Some(process::JobReport::Continued) => options & WCONTINUED != 0,
                None => false,
            };
            if wanted && let Some(r) = *report {
                if options & WNOWAIT == 0 {
                    *report = None;
                }
                return Ok(Some(((*c).clone(), Collected::Job(r))));
            }
        }
        if options & WNOHANG != 0 {
            return Ok(None);
        }
        if io_wait::wait(seen, None) == Woken::Signal {
            return Err(ERESTARTSYS);
        }
    }
}

fn wait4(cx: &Ctx, pid: i64, status: u64, options: u64, rusage: u64) -> SysResult {
    // __WNOTHREAD, __WALL, __WCLONE are accepted and mean nothing here.
    if options & !(WNOHANG | WSTOPPED | WCONTINUED | 0xe000_0000) != 0 {
        return Err(neg(EINVAL));
    }
    let Some((child, what)) = wait_any(cx, pid, (options & (WNOHANG | WSTOPPED | WCONTINUED)) | WEXITED)? else {
        return Ok(0);
    };
    if status != 0 {
        cx.p.write_u32(status, what.wait_status() as u32)?;
    }
    if rusage != 0 {
        let mut ru = [0u8; 144];
        let ns = child.cpu_ns();
        ru[0..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
        ru[8..16].copy_from_slice(&((ns % 1_000_000_000) / 1000).to_le_bytes());
        cx.p.copy_to_user(rusage, &ru)?;
    }
    Ok(child.pid as i64)
}

/// waitid(idtype, id, infop, options): P_ALL, P_PID, P_PGID (id 0: the
/// caller's group).
fn waitid(cx: &Ctx, idtype: u64, id: u64, infop: u64, options: u64) -> SysResult {
    if options & !(WNOHANG | WSTOPPED | WEXITED | WCONTINUED | WNOWAIT | 0xe000_0000) != 0
        || options & (WSTOPPED | WEXITED | WCONTINUED) == 0
    {
        return Err(neg(EINVAL));
    }
    let pid = match idtype {
        0 => -1,
        1 if id as i32 > 0 => id as i32 as i64,
        2 if id == 0 => 0,
        2 if id as i32 > 0 => -(id as i32 as i64),
        _ => return Err(neg(EINVAL)),
    };
    let got = wait_any(cx, pid, options)?;
    if infop != 0 {
        // Nothing to report under WNOHANG: a zeroed siginfo (si_pid 0).
        let mut info = [0u8; 128];
        if let Some((child, what)) = got {
            let (code, status) = what.code_and_status();
            info[0..4].copy_from_slice(&(vmkernel::linux_abi::signal::SIGCHLD).to_le_bytes());
            info[8..12].copy_from_slice(&code.to_le_bytes());
            info[16..20].copy_from_slice(&child.pid.to_le_bytes());
            info[20..24].copy_from_slice(&child.ids.lock().uid.to_le_bytes());
            info[24..28].copy_from_slice(&status.to_le_bytes());
        }
        cx.p.copy_to_user(infop, &info)?;
    }
    Ok(0)
}

fn kill(cx: &Ctx, pid: i64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(neg(EINVAL));
    }
    let sig = sig as u32;
    let me = cx.p.ids.lock().clone();
    let allowed = |t: &Process| me.euid == 0 || me.uid == t.ids.lock().uid || me.euid == t.ids.lock().uid;
    let targets: Vec<Arc<Process>> = match pid {
        p if p > 0 => process::lookup(p as u32).into_iter().collect(),
        0 => process::all().into_iter().filter(|t| t.pgid.load(Ordering::Relaxed) == cx.p.pgid.load(Ordering::Relaxed)).collect(),
        -1 => process::all().into_iter().filter(|t| t.pid != 1 && t.pid != cx.p.pid).collect(),
        p => process::all().into_iter().filter(|t| t.pgid.load(Ordering::Relaxed) == (-p) as u32).collect(),
    };
    let targets: Vec<Arc<Process>> = targets.into_iter().filter(|t| !t.is_zombie()).collect();
    if targets.is_empty() {
        return Err(neg(ESRCH));
    }
    let mut sent = 0;
    for t in &targets {
        if !allowed(t) {
            continue;
        }
        // init ignores signals it has no handler for (including SIGKILL from others).
        if t.pid == 1 && t.sig.lock().get(sig.max(1)).handler == 0 && sig != 0 {
            sent += 1;
            continue;
        }
        if sig != 0 {
            let info = vmkernel::linux_abi::signal::SigInfo::kill(sig, 0, cx.p.pid, me.uid);
            signal::send_to_process(t, sig, Some(info));
        }
        sent += 1;
    }
    if sent == 0 { Err(neg(EPERM)) } else { Ok(0) }
}

fn tgkill(cx: &Ctx, tgid: i64, tid: u64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(neg(EINVAL));
    }
    let t = process::lookup_thread(tid as u32).ok_or(neg(ESRCH))?;
    if tgid > 0 && t.process.pid != tgid as u32 {
        return Err(neg(ESRCH));
    }
    // The same rules as kill(2) (found by sysfuzz: without them `nobody`
    // could send any signal to any thread, root's and init's included).
    let me = cx.p.ids.lock().clone();
    let target_uid = t.process.ids.lock().uid;
    if me.euid != 0 && me.uid != target_uid && me.euid != target_uid {
        return Err(neg(EPERM));
    }
    if t.process.pid == 1 && sig != 0 && t.process.sig.lock().get(sig as u32).handler == 0 {
        return Ok(0); // init ignores signals it has no handler for
    }
    if sig != 0 {
        let info = vmkernel::linux_abi::signal::SigInfo::kill(sig as u32, -6 /* SI_TKILL */, cx.p.pid, 0);
        signal::send_to_thread(&t, sig as u32, Some(info));
    }
    Ok(0)
}

// ---- memory ----

/// Unmaps the pages of `areas`; other CPUs flush their TLBs before the
/// frames are released (a thread on another CPU must not keep writing a
/// frame that is being reused).
fn unmap_areas(mm: &Mm, areas: &[Vma]) {
    let mut frames = Vec::new();
    for v in areas {
        // Only the mapped pages: an area may span terabytes.
        for a in mm.space.mapped_pages(v.start, v.end) {
            if let Some(f) = mm.space.unmap_deferred(a) {
                frames.push(f);
            }
        }
    }
    if !frames.is_empty() {
        crate::arch::apic::tlb_shootdown();
    }
    // Dropping them releases them.
    drop(frames);
    crate::uw::mapped::release_unmapped_files(mm);
}

fn mmap(cx: &Ctx, addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> SysResult {
    let mm = cx.p.mm();
    let flags = flags as u32;
    let prot = prot as u32;
    let file = if flags & MAP_ANONYMOUS == 0 {
        let f = file(&cx.p, fd)?;
        let acc = f.flags() & 3;
        Some((f, acc))
    } else {
        None
    };
    let mf = file.as_ref().map(|(f, acc)| MmapFile {
        id: Arc::as_ptr(f) as u64,
        readable: *acc != 1,
        writable: *acc == 2,
    });
    if prot & PROT_WRITE != 0 && flags & MAP_NORESERVE == 0 && !crate::uw::commit::may_commit(mm.group.load(Ordering::Relaxed), len) {
        return Err(neg(ENOMEM));
    }
    // Shared anonymous and file mappings get their frames now: one larger
    // than the memory there is fails at once, as Linux refuses an obvious
    // overcommit (it would take every free frame, holding them from
    // everyone else, and then fail anyway).
    let populated = file.is_some() || flags & MAP_SHARED != 0;
    if populated && len.div_ceil(4096) > crate::mm::available_user_frames() {
        return Err(neg(ENOMEM));
    }
    let mapped = mm.vm.lock().mmap(addr, len, prot, flags, mf, off).map_err(neg)?;
    crate::uw::mapped::write_back(&mm, &mapped.replaced);
    unmap_areas(&mm, &mapped.replaced);
    if let Some((f, _)) = &file {
        mm.files.lock().insert(Arc::as_ptr(f) as u64, f.clone());
    }
    crate::uw::commit::recharge(&mm);
    if file.is_none() && flags & MAP_SHARED != 0 {
        // Shared anonymous memory is populated now so that a fork shares
        // the frames themselves (demand faults would give each its own).
        let pages = len.div_ceil(4096);
        for i in 0..pages {
            let Some(frame) = crate::mm::UserFrame::alloc() else { return Err(undo_mmap(&mm, mapped.addr, len)) };
            // Already mapped: the frame is freed.
            let _ = mm.space.map(mapped.addr + i * 4096, frame, pte_flags(prot));
        }
    }
    if let Some((f, _)) = file {
        // File mappings are copied in now (private semantics; a shared
        // writable mapping of a RAM file does not write back).
        let pages = len.div_ceil(4096);
        for i in 0..pages {
            let mut page = [0u8; 4096];
            let _ = f.pread(off + i * 4096, &mut page);
            let Some(frame) = crate::mm::UserFrame::alloc_with(&page) else { return Err(undo_mmap(&mm, mapped.addr, len)) };
            let _ = mm.space.map(mapped.addr + i * 4096, frame, pte_flags(prot));
        }
    }
    Ok(mapped.addr as i64)
}

/// Takes back a mapping whose frames ran out while it was populated (it
/// would otherwise keep what it got until the process exits): ENOMEM.
fn undo_mmap(mm: &Mm, addr: u64, len: u64) -> i64 {
    if let Ok(gone) = mm.vm.lock().munmap(addr, len) {
        unmap_areas(mm, &gone);
    }
    crate::uw::commit::recharge(mm);
    neg(ENOMEM)
}

fn munmap(cx: &Ctx, addr: u64, len: u64) -> SysResult {
    let mm = cx.p.mm();
    let gone = mm.vm.lock().munmap(addr, len).map_err(neg)?;
    crate::uw::mapped::write_back(&mm, &gone);
    unmap_areas(&mm, &gone);
    crate::uw::commit::recharge(&mm);
    Ok(0)
}

/// The areas covering `[addr, addr + len)`, clipped to it; Err(ENOMEM)
/// when part of the range is not mapped (after the caller acted on the
/// rest, as Linux does).
fn areas_in(mm: &Mm, addr: u64, len: u64) -> (Vec<Vma>, bool) {
    let end = addr.saturating_add(len);
    let mut out = Vec::new();
    let mut covered = addr;
    for v in mm.vm.lock().areas().filter(|v| v.end > addr && v.start < end) {
        if v.start > covered {
            covered = u64::MAX; // a hole
        } else if covered != u64::MAX {
            covered = v.end;
        }
        let mut c = *v;
        c.start = c.start.max(addr);
        c.end = c.end.min(end);
        if let vmkernel::vm_regions::Backing::File { id, offset } = v.backing {
            c.backing = vmkernel::vm_regions::Backing::File { id, offset: offset + (c.start - v.start) };
        }
        out.push(c);
    }
    let whole = covered != u64::MAX && covered >= end;
    (out, whole)
}

fn page_len(len: u64) -> Result<u64, i64> {
    len.checked_add(4095).map(|l| l & !4095).ok_or(neg(ENOMEM))
}

/// madvise: MADV_DONTNEED (and MADV_FREE, DONTNEED_LOCKED) drop a private
/// area's pages (anonymous memory reads zero after, a file mapping rereads
/// the file); shared areas keep their data. Other known advice is
/// accepted and changes nothing.
fn madvise(cx: &Ctx, addr: u64, len: u64, advice: u64) -> SysResult {
    const DONTNEED: u64 = 4;
    const FREE: u64 = 8;
    const DONTNEED_LOCKED: u64 = 24;
    if addr & 4095 != 0 {
        return Err(neg(EINVAL));
    }
    let known = matches!(advice, 0..=4 | 8..=25 | 100 | 101);
    if !known {
        return Err(neg(EINVAL));
    }
    let len = page_len(len)?;
    if len == 0 {
        return Ok(0);
    }
    let mm = cx.p.mm();
    let (areas, whole) = areas_in(&mm, addr, len);
    if matches!(advice, DONTNEED | FREE | DONTNEED_LOCKED) {
        let private: Vec<Vma> = areas.into_iter().filter(|v| !v.shared).collect();
        unmap_areas(&mm, &private);
    }
    if whole { Ok(0) } else { Err(neg(ENOMEM)) }
}

/// msync: writes shared file areas back (MS_ASYNC does it at once too).
fn msync(cx: &Ctx, addr: u64, len: u64, flags: u64) -> SysResult {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if addr & 4095 != 0 || flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 || flags & (MS_ASYNC | MS_SYNC) == MS_ASYNC | MS_SYNC {
        return Err(neg(EINVAL));
    }
    let len = page_len(len)?;
    let mm = cx.p.mm();
    let (areas, whole) = areas_in(&mm, addr, len);
    crate::uw::mapped::write_back(&mm, &areas);
    if whole { Ok(0) } else { Err(neg(ENOMEM)) }
}

/// mremap: the areas change in `VmMap::mremap`; pages move with their
/// frames, a grown part pages in on demand (zero, or from the file).
fn mremap(cx: &Ctx, old: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) -> SysResult {
    let mm = cx.p.mm();
    if new_len > old_len && !crate::uw::commit::may_commit(mm.group.load(Ordering::Relaxed), new_len - old_len) {
        return Err(neg(ENOMEM));
    }
    let r = mm.vm.lock().mremap(old, old_len, new_len, flags as u32, new_addr).map_err(neg)?;
    crate::uw::mapped::write_back(&mm, &r.removed);
    unmap_areas(&mm, &r.removed);
    if let Some((from, to, len)) = r.moved {
        // Only the mapped pages move (the rest page in on demand).
        for a in mm.space.mapped_pages(from, from.saturating_add(len)) {
            mm.space.move_page(a, to + (a - from));
        }
        crate::arch::apic::tlb_shootdown();
    }
    if let Some(g) = r.grown
        && g.shared
        && g.backing == vmkernel::vm_regions::Backing::Anonymous
    {
        // Shared anonymous memory has its frames from the start (see mmap).
        let mut va = g.start;
        while va < g.end {
            let frame = crate::mm::UserFrame::alloc().ok_or(neg(ENOMEM))?;
            let _ = mm.space.map(va, frame, pte_flags(g.prot));
            va += 4096;
        }
    }
    crate::uw::commit::recharge(&mm);
    Ok(r.addr as i64)
}

fn mprotect(cx: &Ctx, addr: u64, len: u64, prot: u64) -> SysResult {
    let mm = cx.p.mm();
    if prot as u32 & PROT_WRITE != 0 && !crate::uw::commit::may_commit(mm.group.load(Ordering::Relaxed), len) {
        return Err(neg(ENOMEM));
    }
    let changed = mm.vm.lock().mprotect(addr, len, prot as u32).map_err(neg)?;
    crate::uw::commit::recharge(&mm);
    for v in &changed {
        for a in mm.space.mapped_pages(v.start, v.end) {
            mm.space.protect(a, pte_flags(v.prot));
        }
    }
    if !changed.is_empty() {
        crate::arch::apic::tlb_shootdown();
    }
    Ok(0)
}

fn brk(cx: &Ctx, new: u64) -> SysResult {
    let mm = cx.p.mm();
    let cur0 = mm.vm.lock().brk_value();
    if new > cur0 && !crate::uw::commit::may_commit(mm.group.load(Ordering::Relaxed), new - cur0) {
        return Ok(cur0 as i64); // brk reports failure by not moving
    }
    let (cur, gone) = mm.vm.lock().brk(new);
    unmap_areas(&mm, &gone);
    crate::uw::commit::recharge(&mm);
    Ok(cur as i64)
}

// ---- signals ----

fn rt_sigaction(cx: &Ctx, sig: u64, act: u64, oact: u64, size: u64) -> SysResult {
    if size != 8 || !(1..=64).contains(&sig) {
        return Err(neg(EINVAL));
    }
    let sig = sig as u32;
    let new = if act != 0 {
        if sig == SIGKILL || sig == SIGSTOP {
            return Err(neg(EINVAL));
        }
        let mut b = [0u8; 32];
        cx.p.copy_from_user(act, &mut b)?;
        Some(KernelSigaction::decode(&b).ok_or(neg(EFAULT))?)
    } else {
        None
    };
    let old = cx.p.sig.lock().get(sig);
    if oact != 0 {
        cx.p.copy_to_user(oact, &old.to_bytes())?;
    }
    if let Some(n) = new {
        cx.p.sig.lock().set(sig, n);
    }
    Ok(0)
}

fn rt_sigprocmask(cx: &Ctx, how: u64, set: u64, oset: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(neg(EINVAL));
    }
    let old = cx.t.sigmask.load(Ordering::Acquire);
    if set != 0 {
        let s = cx.p.read_u64(set)?;
        let new = match how {
            0 => old | s,
            1 => old & !s,
            2 => s,
            _ => return Err(neg(EINVAL)),
        };
        cx.t.sigmask.store(new & !((1 << 8) | (1 << 18)), Ordering::Release);
    }
    if oset != 0 {
        cx.p.write_u64(oset, old)?;
    }
    Ok(0)
}

fn rt_sigsuspend(cx: &Ctx, mask: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(neg(EINVAL));
    }
    let m = cx.p.read_u64(mask)?;
    let old = cx.t.sigmask.swap(m & !((1 << 8) | (1 << 18)), Ordering::AcqRel);
    *cx.t.saved_mask.lock() = Some(old);
    loop {
        let seen = io_wait::generation();
        if io_wait::wait(seen, None) == Woken::Signal {
            return Err(neg(EINTR));
        }
    }
}

fn sigaltstack(cx: &Ctx, ss: u64, oss: u64) -> SysResult {
    let cur = *cx.t.altstack.lock();
    if oss != 0 {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&cur.0.to_le_bytes());
        b[8..12].copy_from_slice(&(cur.2 as u32).to_le_bytes());
        b[16..24].copy_from_slice(&cur.1.to_le_bytes());
        cx.p.copy_to_user(oss, &b)?;
    }
    if ss != 0 {
        let mut b = [0u8; 24];
        cx.p.copy_from_user(ss, &mut b)?;
        let sp = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let fl = i32::from_le_bytes(b[8..12].try_into().unwrap());
        let size = u64::from_le_bytes(b[16..24].try_into().unwrap());
        if fl & 2 != 0 {
            *cx.t.altstack.lock() = (0, 0, 2);
        } else {
            if size < 2048 {
                return Err(neg(ENOMEM));
            }
            *cx.t.altstack.lock() = (sp, size, 0);
        }
    }
    Ok(0)
}

// ---- futex ----

fn futex_call(cx: &Ctx, a: [u64; 6]) -> SysResult {
    let (uaddr, op, val, timeout, uaddr2, val3) = (a[0], a[1] as u32, a[2] as u32, a[3], a[4], a[5] as u32);
    let cmd = op & 0x7f;
    let realtime = op & 256 != 0;
    let deadline = |absolute: bool| -> Result<Option<u64>, i64> {
        if timeout == 0 {
            return Ok(None);
        }
        let mut b = [0u8; 16];
        cx.p.copy_from_user(timeout, &mut b)?;
        let s = i64::from_le_bytes(b[..8].try_into().unwrap());
        let ns = i64::from_le_bytes(b[8..].try_into().unwrap());
        if s < 0 || !(0..1_000_000_000).contains(&ns) {
            return Err(neg(EINVAL));
        }
        let t = s as u64 * 1_000_000_000 + ns as u64;
        Ok(Some(if absolute {
            if realtime { t.saturating_sub(time::realtime_ns()) + time::uptime_ns() } else { t }
        } else {
            time::uptime_ns() + t
        }))
    };
    match cmd {
        0 => futex::wait(&cx.p, uaddr, val, u32::MAX, deadline(false)?).map(|_| 0).map_err(|e| if e == EINTR { ERESTARTSYS } else { neg(e) }),
        9 => {
            if val3 == 0 {
                return Err(neg(EINVAL));
            }
            futex::wait(&cx.p, uaddr, val, val3, deadline(true)?).map(|_| 0).map_err(|e| if e == EINTR { ERESTARTSYS } else { neg(e) })
        }
        1 | 10 => Ok(futex::wake(&cx.p, uaddr, val) as i64),
        3 => futex::requeue(&cx.p, uaddr, val, timeout as u32, uaddr2, None).map(|n| n as i64).map_err(neg),
        4 => futex::requeue(&cx.p, uaddr, val, timeout as u32, uaddr2, Some(val3)).map(|n| n as i64).map_err(neg),
        _ => Err(neg(ENOSYS)),
    }
}

pub fn call(cx: &Ctx, n: u64, a: [u64; 6]) -> SysResult {
    match n {
        9 => mmap(cx, a[0], a[1], a[2], a[3], a[4], a[5]),
        10 => mprotect(cx, a[0], a[1], a[2]),
        11 => munmap(cx, a[0], a[1]),
        12 => brk(cx, a[0]),
        13 => rt_sigaction(cx, a[0], a[1], a[2], a[3]),
        14 => rt_sigprocmask(cx, a[0], a[1], a[2], a[3]),
        25 => mremap(cx, a[0], a[1], a[2], a[3], a[4]),
        26 => msync(cx, a[0], a[1], a[2]),
        28 => madvise(cx, a[0], a[1], a[2]),
        34 => loop {
            // pause
            let seen = io_wait::generation();
            if io_wait::wait(seen, None) == Woken::Signal {
                break Err(neg(EINTR));
            }
        },
        61 => wait4(cx, a[0] as i32 as i64, a[1], a[2], a[3]),
        62 => kill(cx, a[0] as i32 as i64, a[1]),
        127 => cx.p.write_u64(a[0], (cx.t.sig_pending.load(Ordering::Relaxed) | cx.p.sig_pending.load(Ordering::Relaxed)) & cx.t.sigmask.load(Ordering::Relaxed)).map(|_| 0),
        130 => rt_sigsuspend(cx, a[0], a[1]),
        131 => sigaltstack(cx, a[0], a[1]),
        200 => tgkill(cx, -1, a[0], a[1]),
        202 => futex_call(cx, a),
        218 => {
            cx.t.clear_child_tid.store(a[0], Ordering::Relaxed);
            Ok(cx.t.tid as i64)
        }
        234 => tgkill(cx, a[0] as i32 as i64, a[1], a[2]),
        247 => waitid(cx, a[0], a[1], a[2], a[3]),
        273 => Ok(0), // set_robust_list: robust futexes are a userspace safety net
        _ => Err(super::NOT_MINE),
    }
}
