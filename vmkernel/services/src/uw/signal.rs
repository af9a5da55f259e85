//! Signals: per-process actions, pending sets, delivery when a thread
//! returns to ring 3, and `rt_sigreturn`.
//!
//! Delivery builds the x86-64 `rt_sigframe` on the user stack (layouts in
//! `vmkernel::linux_abi::signal`), with the thread's saved extended state
//! below it, exactly where Linux puts them, so glibc's `__restore_rt`
//! trampoline returns through `rt_sigreturn`.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use vmkernel::linux_abi::Abi;
use vmkernel::linux_abi::signal::*;

use super::process::{self, ExitStatus, Process, Thread};
use crate::arch::trap::TrapFrame;
use crate::world;

const UNBLOCKABLE: u64 = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
/// The signals whose default action stops the process.
const STOP_SIGNALS: u64 = (1 << (SIGSTOP - 1)) | (1 << (SIGTSTP - 1)) | (1 << (SIGTTIN - 1)) | (1 << (SIGTTOU - 1));

fn bit(sig: u32) -> u64 {
    if (1..=64).contains(&sig) { 1 << (sig - 1) } else { 0 }
}

/// Signal dispositions of a process, plus the siginfo of each pending
/// standard signal.
pub struct SigActions {
    actions: [KernelSigaction; 64],
    queued: [Option<SigInfo>; 64],
}

impl Default for SigActions {
    fn default() -> Self {
        Self { actions: [KernelSigaction::default(); 64], queued: [None; 64] }
    }
}

impl Clone for SigActions {
    fn clone(&self) -> Self {
        Self { actions: self.actions, queued: [None; 64] }
    }
}

impl SigActions {
    /// The action for `sig` (1-64; any other number has the default).
    pub fn get(&self, sig: u32) -> KernelSigaction {
        (sig as usize).checked_sub(1).and_then(|i| self.actions.get(i)).copied().unwrap_or_default()
    }

    /// Sets the action for `sig` (1-64; other numbers are ignored: callers
    /// validate and report EINVAL).
    pub fn set(&mut self, sig: u32, act: KernelSigaction) {
        if let Some(a) = (sig as usize).checked_sub(1).and_then(|i| self.actions.get_mut(i)) {
            *a = act;
        }
    }

    /// Children are reaped automatically (SIGCHLD ignored or SA_NOCLDWAIT).
    pub fn discards_children(&self) -> bool {
        let a = self.get(SIGCHLD);
        a.handler == SIG_IGN || a.flags & SA_NOCLDWAIT != 0
    }

    /// execve: caught signals revert to the default; ignored stay ignored.
    pub fn reset_for_exec(&mut self) {
        for a in self.actions.iter_mut() {
            if a.handler != SIG_IGN {
                *a = KernelSigaction::default();
            }
        }
    }

    /// Whether `sig` would be discarded on delivery (ignored, or a default
    /// of "ignore").
    pub fn ignores(&self, sig: u32) -> bool {
        let a = self.get(sig);
        a.handler == SIG_IGN || (a.handler == SIG_DFL && default_action(sig) == DefaultAction::Ignore)
    }
}

fn wake_threads(p: &Process) {
    for t in p.threads.lock().iter() {
        world::wake(t.world.load(Ordering::Relaxed));
    }
    super::io_wait::notify();
}

/// Job control on sending: SIGCONT resumes a stopped process (whatever
/// its action, even blocked or ignored) and discards pending stop signals;
/// a stop signal discards a pending SIGCONT.
fn job_control_on_send(p: &Process, sig: u32) {
    if sig == SIGCONT {
        let resumed = {
            let _g = p.sig.lock();
            p.stop_cancelled.store(true, Ordering::Release);
            p.sig_pending.fetch_and(!STOP_SIGNALS, Ordering::AcqRel);
            for t in p.threads.lock().iter() {
                t.sig_pending.fetch_and(!STOP_SIGNALS, Ordering::AcqRel);
            }
            p.stopped.swap(false, Ordering::AcqRel)
        };
        if resumed {
            *p.job_report.lock() = Some(process::JobReport::Continued);
            notify_parent(p, CLD_CONTINUED, SIGCONT as i32);
            wake_threads(p);
        }
    } else if bit(sig) & STOP_SIGNALS != 0 {
        let _g = p.sig.lock();
        p.stop_cancelled.store(false, Ordering::Release);
        p.sig_pending.fetch_and(!bit(SIGCONT), Ordering::AcqRel);
        for t in p.threads.lock().iter() {
            t.sig_pending.fetch_and(!bit(SIGCONT), Ordering::AcqRel);
        }
    }
}

/// Tells the parent a child stopped or continued: SIGCHLD (unless its
/// SIGCHLD action has SA_NOCLDSTOP) and a wake-up for wait4/waitid.
fn notify_parent(p: &Process, code: i32, status: i32) {
    if let Some(pp) = process::lookup(p.ppid.load(Ordering::Acquire))
        && pp.sig.lock().get(SIGCHLD).flags & SA_NOCLDSTOP == 0
    {
        send_to_process(&pp, SIGCHLD, Some(SigInfo::child(code, p.pid, 0, status, 0, 0)));
    }
    super::io_wait::notify();
}

/// Sends `sig` to a process (kill, SIGCHLD, tty signals).
pub fn send_to_process(p: &Process, sig: u32, info: Option<SigInfo>) {
    if sig == 0 || sig > 64 || p.is_zombie() {
        return;
    }
    // As Linux protects init (SIGNAL_UNKILLABLE): pid 1 gets only the
    // signals it handles — a Ctrl-Z or Ctrl-C while init's group owns the
    // console must not stop or end it. (kill(2) already keeps user
    // SIGKILLs away from it; the kernel's own still go through.)
    if p.pid == 1 && sig != SIGKILL && p.sig.lock().get(sig).handler == SIG_DFL {
        return;
    }
    job_control_on_send(p, sig);
    {
        let mut s = p.sig.lock();
        if sig != SIGKILL && s.ignores(sig) {
            return;
        }
        if sig < SIGRTMIN || s.queued[(sig - 1) as usize].is_none() {
            s.queued[(sig - 1) as usize] = Some(info.unwrap_or_else(|| SigInfo::kill(sig, 0, 0, 0)));
        }
    }
    p.sig_pending.fetch_or(bit(sig), Ordering::AcqRel);
    wake_threads(p);
}

/// Sends `sig` to one thread (tgkill, synchronous faults).
pub fn send_to_thread(t: &Thread, sig: u32, info: Option<SigInfo>) {
    if sig == 0 || sig > 64 {
        return;
    }
    job_control_on_send(&t.process, sig);
    {
        let mut s = t.process.sig.lock();
        if sig != SIGKILL && s.ignores(sig) {
            return;
        }
        s.queued[(sig - 1) as usize] = Some(info.unwrap_or_else(|| SigInfo::kill(sig, 0, 0, 0)));
    }
    t.sig_pending.fetch_or(bit(sig), Ordering::AcqRel);
    world::wake(t.world.load(Ordering::Relaxed));
    super::io_wait::notify();
}

/// Sends `sig` to every process in process group `pgrp`.
pub fn send_to_group(pgrp: u32, sig: u32) -> usize {
    let mut n = 0;
    for p in process::all().iter().filter(|p| p.pgid.load(Ordering::Acquire) == pgrp && !p.is_zombie()) {
        send_to_process(p, sig, None);
        n += 1;
    }
    n
}

fn deliverable(t: &Thread) -> u64 {
    let pending = t.sig_pending.load(Ordering::Acquire) | t.process.sig_pending.load(Ordering::Acquire);
    pending & !(t.sigmask.load(Ordering::Acquire) & !UNBLOCKABLE)
}

/// Whether `t` has a signal to act on now.
pub fn has_deliverable(t: &Thread) -> bool {
    deliverable(t) != 0
}

/// Whether the current thread has a signal to act on (blocking calls
/// return EINTR, or restart, when this becomes true).
pub fn pending_for_current() -> bool {
    process::current_thread().is_some_and(|t| deliverable(&t) != 0)
}

/// Whether the signal that would be delivered now asks for interrupted
/// system calls to be restarted (SA_RESTART, or it will be ignored).
pub fn restart_interrupted() -> bool {
    let Some(t) = process::current_thread() else { return false };
    let d = deliverable(&t);
    if d == 0 {
        return true;
    }
    let sig = d.trailing_zeros() + 1;
    let s = t.process.sig.lock();
    let a = s.get(sig);
    // A stop and the continue after it are invisible to the interrupted
    // call (Linux restarts it as if nothing happened).
    let job_control = a.handler == SIG_DFL && matches!(default_action(sig), DefaultAction::Stop | DefaultAction::Continue);
    sig != SIGKILL && (a.flags & SA_RESTART != 0 || s.ignores(sig) || job_control)
}

/// Is SIGKILL (or a group exit) pending for the current thread?
pub fn kill_pending() -> bool {
    process::current_thread().is_some_and(|t| deliverable(&t) & bit(SIGKILL) != 0)
}

/// SIGKILL (or a group exit) pending: end the process now. Callers must
/// hold no reference to the thread or process (they would leak).
pub fn deliver_pending_fatal() {
    if let Some(t) = process::current_thread()
        && deliverable(&t) & bit(SIGKILL) != 0 {
            drop(t);
            process::exit_group(ExitStatus::Signaled(SIGKILL as u8));
        }
}

/// A synchronous fault (SIGSEGV, SIGILL, ...): delivered to the handler
/// if the thread has one and does not block the signal, otherwise the
/// process dies with it.
pub fn force_fault_signal(sig: u32, addr: u64) {
    let Some(t) = process::current_thread() else { return };
    let handled = {
        let s = t.process.sig.lock();
        let a = s.get(sig);
        a.handler != SIG_DFL && a.handler != SIG_IGN && t.sigmask.load(Ordering::Acquire) & bit(sig) == 0
    };
    if !handled {
        drop(t);
        process::exit_group(ExitStatus::Signaled(sig as u8));
    }
    send_to_thread(&t, sig, Some(SigInfo::fault(sig, 1 /* SEGV_MAPERR/ILL_ILLOPC */, addr)));
}

/// Takes the next deliverable signal off the pending sets.
fn take_next(t: &Thread) -> Option<(u32, SigInfo)> {
    let d = deliverable(t);
    if d == 0 {
        return None;
    }
    let sig = if d & bit(SIGKILL) != 0 { SIGKILL } else { d.trailing_zeros() + 1 };
    let b = bit(sig);
    if t.sig_pending.fetch_and(!b, Ordering::AcqRel) & b == 0 {
        t.process.sig_pending.fetch_and(!b, Ordering::AcqRel);
    }
    let info = t.process.sig.lock().queued[(sig - 1) as usize].take().unwrap_or_else(|| SigInfo::kernel(sig));
    Some((sig, info))
}

/// Stops the process for `sig` (a stop signal with the default action)
/// unless a SIGCONT came after it was sent; the parent is told once.
fn stop_process(p: &Process, sig: u32) {
    let newly = {
        let _g = p.sig.lock();
        !p.stop_cancelled.load(Ordering::Acquire) && !p.stopped.swap(true, Ordering::AcqRel)
    };
    if newly {
        *p.job_report.lock() = Some(process::JobReport::Stopped(sig as u8));
        notify_parent(p, CLD_STOPPED, sig as i32);
    }
}

/// Waits while the process is stopped; SIGCONT or SIGKILL ends the wait.
fn wait_while_stopped(p: &Process) {
    while p.stopped.load(Ordering::Acquire) && !kill_pending() {
        let seen = super::io_wait::generation();
        if !p.stopped.load(Ordering::Acquire) {
            break;
        }
        super::io_wait::wait_for_event(seen);
    }
}

/// For waits a stop does not interrupt on Linux (nanosleep): while the
/// signals to act on are only default-action stops and continues, acts on
/// them here — the process stops until SIGCONT — and returns true (the
/// wait goes on); false when another signal is to be delivered.
pub fn absorb_job_control() -> bool {
    let Some(t) = process::current_thread() else { return false };
    loop {
        let d = deliverable(&t);
        if d == 0 {
            return true;
        }
        if d & bit(SIGKILL) != 0 {
            return false;
        }
        let sig = d.trailing_zeros() + 1;
        let act = t.process.sig.lock().get(sig);
        let action = default_action(sig);
        if act.handler != SIG_DFL || !matches!(action, DefaultAction::Stop | DefaultAction::Continue) {
            return false;
        }
        let Some((sig, _)) = take_next(&t) else { return true };
        if default_action(sig) == DefaultAction::Stop && t.process.sig.lock().get(sig).handler == SIG_DFL {
            stop_process(&t.process, sig);
            wait_while_stopped(&t.process);
        }
    }
}

/// Called on every return to ring 3 (after system calls and interrupts
/// from user mode): acts on pending signals, and holds the thread here
/// while its process is stopped.
pub fn deliver_on_return(frame: &mut TrapFrame) {
    loop {
        let Some(t) = process::current_thread() else { return };
        if t.process.stopped.load(Ordering::Acquire) {
            wait_while_stopped(&t.process);
        }
        let Some((sig, info)) = take_next(&t) else { return };
        let act = t.process.sig.lock().get(sig);
        if sig == SIGKILL {
            drop(t);
            process::exit_group(ExitStatus::Signaled(SIGKILL as u8));
        }
        match act.handler {
            SIG_IGN => continue,
            SIG_DFL => match default_action(sig) {
                DefaultAction::Terminate | DefaultAction::CoreDump => {
                    drop(t);
                    process::exit_group(ExitStatus::Signaled(sig as u8));
                }
                DefaultAction::Stop => {
                    stop_process(&t.process, sig);
                    continue;
                }
                // SIGCONT resumed the process when it was sent.
                DefaultAction::Ignore | DefaultAction::Continue => continue,
            },
            _ => {
                if setup_frame(&t, frame, sig, &act, &info).is_err() {
                    log::warn!("pid {}: cannot write a signal frame for signal {sig}: killed", t.process.pid);
                    drop(t);
                    process::exit_group(ExitStatus::Signaled(SIGSEGV as u8));
                }
                return;
            }
        }
    }
}

fn setup_frame(t: &Arc<Thread>, frame: &mut TrapFrame, sig: u32, act: &KernelSigaction, info: &SigInfo) -> Result<(), i64> {
    let p = &t.process;
    let (ss_sp, ss_size, ss_flags) = *t.altstack.lock();
    let on_alt = ss_flags == 0 && frame.rsp > ss_sp && frame.rsp <= ss_sp + ss_size;
    let use_alt = act.flags & SA_ONSTACK != 0 && ss_flags == 0 && !on_alt;
    let sp = if use_alt { ss_sp + ss_size } else { frame.rsp };
    let fpu: alloc::vec::Vec<u8> = world::with_current_user_fpu(|f| f.area().to_vec()).ok_or(-1i64)?;
    let (at, fpstate) = sigframe_layout(sp, use_alt, fpu.len() as u64);
    p.copy_to_user(fpstate, &fpu)?;
    let old_mask = t.sigmask.load(Ordering::Acquire);
    let old_mask = t.saved_mask.lock().take().unwrap_or(old_mask);
    let mc = SigContext {
        r8: frame.r8,
        r9: frame.r9,
        r10: frame.r10,
        r11: frame.r11,
        r12: frame.r12,
        r13: frame.r13,
        r14: frame.r14,
        r15: frame.r15,
        rdi: frame.rdi,
        rsi: frame.rsi,
        rbp: frame.rbp,
        rbx: frame.rbx,
        rdx: frame.rdx,
        rax: frame.rax,
        rcx: frame.rcx,
        rsp: frame.rsp,
        rip: frame.rip,
        eflags: frame.rflags,
        cs: frame.cs as u16,
        gs: 0,
        fs: 0,
        ss: frame.ss as u16,
        err: 0,
        trapno: 0,
        oldmask: old_mask,
        cr2: 0,
        fpstate,
    };
    let uc = UContext {
        uc_flags: UC_FP_XSTATE | UC_SIGCONTEXT_SS,
        uc_link: 0,
        uc_stack: StackT { ss_sp, ss_flags: if on_alt { 1 } else { ss_flags }, ss_size },
        uc_mcontext: mc,
        uc_sigmask: old_mask,
    };
    let sf = RtSigframe { pretcode: act.restorer, uc, info: *info };
    p.copy_to_user(at, &sf.to_bytes())?;
    let mut mask = old_mask | act.mask;
    if act.flags & SA_NODEFER == 0 {
        mask |= bit(sig);
    }
    t.sigmask.store(mask & !UNBLOCKABLE, Ordering::Release);
    if act.flags & SA_RESETHAND != 0 {
        p.sig.lock().set(sig, KernelSigaction::default());
    }
    frame.rip = act.handler;
    frame.rsp = at;
    frame.rdi = sig as u64;
    frame.rsi = at + RtSigframe::OFF_INFO as u64;
    frame.rdx = at + RtSigframe::OFF_UC as u64;
    frame.rax = 0;
    frame.rflags &= !(0x400 | 0x100); // DF, TF
    Ok(())
}

/// `rt_sigreturn`: restores the registers, mask and extended state saved
/// by `setup_frame`. Returns false if the frame is unreadable (the caller
/// then kills the process).
pub fn sigreturn(frame: &mut TrapFrame) -> bool {
    let Some(t) = process::current_thread() else { return false };
    let at = frame.rsp.wrapping_sub(8);
    let mut b = alloc::vec![0u8; RtSigframe::SIZE];
    if t.process.copy_from_user(at, &mut b).is_err() {
        return false;
    }
    let Some(sf) = RtSigframe::decode(&b) else { return false };
    let mc = sf.uc.uc_mcontext;
    frame.r8 = mc.r8;
    frame.r9 = mc.r9;
    frame.r10 = mc.r10;
    frame.r11 = mc.r11;
    frame.r12 = mc.r12;
    frame.r13 = mc.r13;
    frame.r14 = mc.r14;
    frame.r15 = mc.r15;
    frame.rdi = mc.rdi;
    frame.rsi = mc.rsi;
    frame.rbp = mc.rbp;
    frame.rbx = mc.rbx;
    frame.rdx = mc.rdx;
    frame.rax = mc.rax;
    frame.rcx = mc.rcx;
    frame.rsp = mc.rsp;
    frame.rip = mc.rip;
    // The user may change arithmetic flags, DF, TF? no: only the usual set.
    const USER_FLAGS: u64 = 0x0000_0cd5 | 0x0004_0000; // CF PF AF ZF SF DF OF, AC
    frame.rflags = (frame.rflags & !USER_FLAGS) | (mc.eflags & USER_FLAGS) | 0x202;
    t.sigmask.store(sf.uc.uc_sigmask & !UNBLOCKABLE, Ordering::Release);
    if mc.fpstate != 0
        && let Some(size) = world::with_current_user_fpu(|f| f.area().len())
    {
        let mut fpu = alloc::vec![0u8; size];
        if t.process.copy_from_user(mc.fpstate, &mut fpu).is_err() {
            return false;
        }
        // Reserved header bits set by a corrupted frame would make
        // XRSTOR fault in the kernel: clear what the CPU would reject.
        let mxcsr = u32::from_le_bytes(fpu[24..28].try_into().unwrap()) & 0xffff;
        fpu[24..28].copy_from_slice(&mxcsr.to_le_bytes());
        if fpu.len() >= 576 {
            let bv = u64::from_le_bytes(fpu[512..520].try_into().unwrap()) & crate::arch::context::xcr0();
            fpu[512..520].copy_from_slice(&bv.to_le_bytes());
            fpu[520..576].fill(0); // XCOMP_BV and reserved header bytes
        }
        world::with_current_user_fpu(|f| f.area_mut().copy_from_slice(&fpu));
    }
    true
}
