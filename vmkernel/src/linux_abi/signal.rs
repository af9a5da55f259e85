//! Signals: numbers, `rt_sigaction` flags, and the x86-64 structures the
//! kernel writes on the user stack to deliver a signal (`struct rt_sigframe`:
//! return address, `ucontext` with the saved registers in `sigcontext`, then
//! `siginfo`) and reads back in `rt_sigreturn`.

use super::{Abi, get_u16, get_u32, get_u64, put_u16, put_u32, put_u64};

pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGILL: u32 = 4;
pub const SIGTRAP: u32 = 5;
pub const SIGABRT: u32 = 6;
pub const SIGBUS: u32 = 7;
pub const SIGFPE: u32 = 8;
pub const SIGKILL: u32 = 9;
pub const SIGUSR1: u32 = 10;
pub const SIGSEGV: u32 = 11;
pub const SIGUSR2: u32 = 12;
pub const SIGPIPE: u32 = 13;
pub const SIGALRM: u32 = 14;
pub const SIGTERM: u32 = 15;
pub const SIGSTKFLT: u32 = 16;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;
pub const SIGURG: u32 = 23;
pub const SIGXCPU: u32 = 24;
pub const SIGXFSZ: u32 = 25;
pub const SIGVTALRM: u32 = 26;
pub const SIGPROF: u32 = 27;
pub const SIGWINCH: u32 = 28;
pub const SIGIO: u32 = 29;
pub const SIGPWR: u32 = 30;
pub const SIGSYS: u32 = 31;
/// The kernel's first real-time signal (glibc reserves 32..34 and reports 34).
pub const SIGRTMIN: u32 = 32;
pub const SIGRTMAX: u32 = 64;
/// Number of signals; the kernel `sigset_t` is one u64 (`sizeof == 8`, which
/// `rt_sigaction`/`rt_sigprocmask` require as their `sigsetsize` argument).
pub const NSIG: u32 = 64;
pub const SIGSET_SIZE: usize = 8;

/// The bit for `sig` in a `sigset_t` (signal 1 is bit 0); 0 for a bad number.
pub const fn sigmask(sig: u32) -> u64 {
    if sig >= 1 && sig <= NSIG {
        1u64 << (sig - 1)
    } else {
        0
    }
}
/// SIGKILL and SIGSTOP can be neither caught, blocked nor ignored.
pub const UNBLOCKABLE: u64 = sigmask(SIGKILL) | sigmask(SIGSTOP);

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

pub const SIG_BLOCK: u32 = 0;
pub const SIG_UNBLOCK: u32 = 1;
pub const SIG_SETMASK: u32 = 2;

pub const SA_NOCLDSTOP: u64 = 0x0000_0001;
pub const SA_NOCLDWAIT: u64 = 0x0000_0002;
pub const SA_SIGINFO: u64 = 0x0000_0004;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_ONSTACK: u64 = 0x0800_0000;
pub const SA_RESTART: u64 = 0x1000_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;

pub const SS_ONSTACK: i32 = 1;
pub const SS_DISABLE: i32 = 2;
pub const MINSIGSTKSZ: u64 = 2048;
pub const SIGSTKSZ: u64 = 8192;

// si_code values.
pub const SI_USER: i32 = 0;
pub const SI_KERNEL: i32 = 0x80;
pub const SI_QUEUE: i32 = -1;
pub const SI_TKILL: i32 = -6;
pub const SEGV_MAPERR: i32 = 1;
pub const SEGV_ACCERR: i32 = 2;
pub const BUS_ADRALN: i32 = 1;
pub const BUS_ADRERR: i32 = 2;
pub const ILL_ILLOPC: i32 = 1;
pub const ILL_ILLOPN: i32 = 2;
pub const FPE_INTDIV: i32 = 1;
pub const TRAP_BRKPT: i32 = 1;
pub const CLD_EXITED: i32 = 1;
pub const CLD_KILLED: i32 = 2;
pub const CLD_DUMPED: i32 = 3;
pub const CLD_TRAPPED: i32 = 4;
pub const CLD_STOPPED: i32 = 5;
pub const CLD_CONTINUED: i32 = 6;

// ucontext.uc_flags
pub const UC_FP_XSTATE: u64 = 1;
pub const UC_SIGCONTEXT_SS: u64 = 2;
pub const UC_STRICT_RESTORE_SS: u64 = 4;

/// What happens to a signal left at `SIG_DFL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultAction {
    Terminate,
    CoreDump,
    Ignore,
    Stop,
    Continue,
}

pub fn default_action(sig: u32) -> DefaultAction {
    use DefaultAction::*;
    match sig {
        SIGCHLD | SIGURG | SIGWINCH => Ignore,
        SIGCONT => Continue,
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Stop,
        SIGQUIT | SIGILL | SIGTRAP | SIGABRT | SIGBUS | SIGFPE | SIGSEGV | SIGXCPU | SIGXFSZ
        | SIGSYS => CoreDump,
        _ => Terminate,
    }
}

/// The kernel's `struct sigaction` as `rt_sigaction` passes it (not glibc's:
/// the mask is last and only 8 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelSigaction {
    /// `sa_handler` / `sa_sigaction`, or SIG_DFL / SIG_IGN.
    pub handler: u64,
    pub flags: u64,
    /// Where the handler returns: glibc's `__restore_rt`, which calls rt_sigreturn.
    pub restorer: u64,
    pub mask: u64,
}

impl Abi for KernelSigaction {
    const SIZE: usize = 32;
    fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.handler);
        put_u64(b, 8, self.flags);
        put_u64(b, 16, self.restorer);
        put_u64(b, 24, self.mask);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        (b.len() >= Self::SIZE).then(|| Self {
            handler: get_u64(b, 0),
            flags: get_u64(b, 8),
            restorer: get_u64(b, 16),
            mask: get_u64(b, 24),
        })
    }
}

/// `stack_t` (sigaltstack, ucontext.uc_stack).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackT {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub ss_size: u64,
}

impl Abi for StackT {
    const SIZE: usize = 24;
    fn encode(&self, b: &mut [u8]) {
        b[..Self::SIZE].fill(0);
        put_u64(b, 0, self.ss_sp);
        put_u32(b, 8, self.ss_flags as u32);
        put_u64(b, 16, self.ss_size);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        (b.len() >= Self::SIZE).then(|| Self {
            ss_sp: get_u64(b, 0),
            ss_flags: get_u32(b, 8) as i32,
            ss_size: get_u64(b, 16),
        })
    }
}

/// `siginfo_t`: 128 bytes; signo, errno, code, then a union at offset 16 whose
/// member depends on the signal and code. Constructors fill the right member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigInfo {
    pub si_signo: i32,
    pub si_errno: i32,
    pub si_code: i32,
    /// The union, bytes 16..128 of the structure.
    pub fields: [u8; 112],
}

impl SigInfo {
    pub const UNION_OFFSET: usize = 16;
    // Offsets inside the whole structure of the union members used here.
    pub const PID: usize = 16; // si_pid (kill, sigchld, sigqueue)
    pub const UID: usize = 20; // si_uid
    pub const STATUS: usize = 24; // si_status (sigchld)
    pub const UTIME: usize = 32; // si_utime (sigchld, clock_t)
    pub const STIME: usize = 40; // si_stime
    pub const ADDR: usize = 16; // si_addr (sigfault)
    pub const VALUE: usize = 24; // si_value (sigqueue, timer)

    fn empty(signo: u32, code: i32) -> Self {
        Self {
            si_signo: signo as i32,
            si_errno: 0,
            si_code: code,
            fields: [0; 112],
        }
    }
    fn set32(&mut self, off: usize, v: u32) {
        put_u32(&mut self.fields, off - Self::UNION_OFFSET, v);
    }
    fn set64(&mut self, off: usize, v: u64) {
        put_u64(&mut self.fields, off - Self::UNION_OFFSET, v);
    }
    pub fn get32(&self, off: usize) -> u32 {
        get_u32(&self.fields, off - Self::UNION_OFFSET)
    }
    pub fn get64(&self, off: usize) -> u64 {
        get_u64(&self.fields, off - Self::UNION_OFFSET)
    }

    /// Sent by kill/tgkill (`si_code` SI_USER or SI_TKILL).
    pub fn kill(signo: u32, code: i32, pid: u32, uid: u32) -> Self {
        let mut s = Self::empty(signo, code);
        s.set32(Self::PID, pid);
        s.set32(Self::UID, uid);
        s
    }
    /// SIGCHLD for a child that changed state (`code` is CLD_*).
    pub fn child(code: i32, pid: u32, uid: u32, status: i32, utime: u64, stime: u64) -> Self {
        let mut s = Self::empty(SIGCHLD, code);
        s.set32(Self::PID, pid);
        s.set32(Self::UID, uid);
        s.set32(Self::STATUS, status as u32);
        s.set64(Self::UTIME, utime);
        s.set64(Self::STIME, stime);
        s
    }
    /// SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP raised by a fault at `addr`.
    pub fn fault(signo: u32, code: i32, addr: u64) -> Self {
        let mut s = Self::empty(signo, code);
        s.set64(Self::ADDR, addr);
        s
    }
    /// Generated by the kernel itself (SI_KERNEL), e.g. SIGKILL or a bad frame.
    pub fn kernel(signo: u32) -> Self {
        Self::empty(signo, SI_KERNEL)
    }
}

impl Abi for SigInfo {
    const SIZE: usize = 128;
    fn encode(&self, b: &mut [u8]) {
        put_u32(b, 0, self.si_signo as u32);
        put_u32(b, 4, self.si_errno as u32);
        put_u32(b, 8, self.si_code as u32);
        put_u32(b, 12, 0);
        b[16..128].copy_from_slice(&self.fields);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        let mut fields = [0u8; 112];
        fields.copy_from_slice(&b[16..128]);
        Some(Self {
            si_signo: get_u32(b, 0) as i32,
            si_errno: get_u32(b, 4) as i32,
            si_code: get_u32(b, 8) as i32,
            fields,
        })
    }
}

/// `struct sigcontext` (x86-64), a.k.a. `mcontext_t`: the user registers saved
/// at delivery and restored by rt_sigreturn. Field order is glibc's REG_* order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigContext {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub eflags: u64,
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    /// User address of the saved FPU state (FXSAVE/XSAVE image), 0 if none.
    pub fpstate: u64,
}

impl SigContext {
    /// Offset of each 8-byte general register, in REG_* order (r8 = 0 .. rip = 16, eflags = 17).
    pub const OFF_RSP: usize = 15 * 8;
    pub const OFF_RIP: usize = 16 * 8;
    pub const OFF_EFLAGS: usize = 17 * 8;
    pub const OFF_CSGSFS: usize = 18 * 8;
    pub const OFF_ERR: usize = 19 * 8;
    pub const OFF_TRAPNO: usize = 20 * 8;
    pub const OFF_OLDMASK: usize = 21 * 8;
    pub const OFF_CR2: usize = 22 * 8;
    pub const OFF_FPSTATE: usize = 23 * 8;

    fn regs(&self) -> [u64; 18] {
        [
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.rdi,
            self.rsi,
            self.rbp,
            self.rbx,
            self.rdx,
            self.rax,
            self.rcx,
            self.rsp,
            self.rip,
            self.eflags,
        ]
    }
}

impl Abi for SigContext {
    const SIZE: usize = 256; // 24 u64 + fpstate pointer + 8 reserved u64
    fn encode(&self, b: &mut [u8]) {
        b[..Self::SIZE].fill(0);
        for (i, r) in self.regs().iter().enumerate() {
            put_u64(b, i * 8, *r);
        }
        put_u16(b, Self::OFF_CSGSFS, self.cs);
        put_u16(b, Self::OFF_CSGSFS + 2, self.gs);
        put_u16(b, Self::OFF_CSGSFS + 4, self.fs);
        put_u16(b, Self::OFF_CSGSFS + 6, self.ss);
        put_u64(b, Self::OFF_ERR, self.err);
        put_u64(b, Self::OFF_TRAPNO, self.trapno);
        put_u64(b, Self::OFF_OLDMASK, self.oldmask);
        put_u64(b, Self::OFF_CR2, self.cr2);
        put_u64(b, Self::OFF_FPSTATE, self.fpstate);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        let r = |i: usize| get_u64(b, i * 8);
        Some(Self {
            r8: r(0),
            r9: r(1),
            r10: r(2),
            r11: r(3),
            r12: r(4),
            r13: r(5),
            r14: r(6),
            r15: r(7),
            rdi: r(8),
            rsi: r(9),
            rbp: r(10),
            rbx: r(11),
            rdx: r(12),
            rax: r(13),
            rcx: r(14),
            rsp: r(15),
            rip: r(16),
            eflags: r(17),
            cs: get_u16(b, Self::OFF_CSGSFS),
            gs: get_u16(b, Self::OFF_CSGSFS + 2),
            fs: get_u16(b, Self::OFF_CSGSFS + 4),
            ss: get_u16(b, Self::OFF_CSGSFS + 6),
            err: get_u64(b, Self::OFF_ERR),
            trapno: get_u64(b, Self::OFF_TRAPNO),
            oldmask: get_u64(b, Self::OFF_OLDMASK),
            cr2: get_u64(b, Self::OFF_CR2),
            fpstate: get_u64(b, Self::OFF_FPSTATE),
        })
    }
}

/// The kernel's `struct ucontext` (x86-64): glibc's `ucontext_t` agrees up to
/// and including the first 8 bytes of `uc_sigmask`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UContext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: StackT,
    pub uc_mcontext: SigContext,
    pub uc_sigmask: u64,
}

impl UContext {
    pub const OFF_STACK: usize = 16;
    pub const OFF_MCONTEXT: usize = 40;
    pub const OFF_SIGMASK: usize = 296;
}

impl Abi for UContext {
    const SIZE: usize = 304;
    fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.uc_flags);
        put_u64(b, 8, self.uc_link);
        self.uc_stack.encode(&mut b[Self::OFF_STACK..]);
        self.uc_mcontext.encode(&mut b[Self::OFF_MCONTEXT..]);
        put_u64(b, Self::OFF_SIGMASK, self.uc_sigmask);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        Some(Self {
            uc_flags: get_u64(b, 0),
            uc_link: get_u64(b, 8),
            uc_stack: StackT::decode(&b[Self::OFF_STACK..])?,
            uc_mcontext: SigContext::decode(&b[Self::OFF_MCONTEXT..])?,
            uc_sigmask: get_u64(b, Self::OFF_SIGMASK),
        })
    }
}

/// `struct rt_sigframe` (x86-64): what RSP points at when a handler starts.
/// `pretcode` is the handler's return address (the SA_RESTORER trampoline);
/// the handler gets RDI = signo, RSI = &info, RDX = &uc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtSigframe {
    pub pretcode: u64,
    pub uc: UContext,
    pub info: SigInfo,
}

impl RtSigframe {
    pub const OFF_UC: usize = 8;
    pub const OFF_INFO: usize = 8 + UContext::SIZE;
}

impl Abi for RtSigframe {
    const SIZE: usize = 8 + UContext::SIZE + SigInfo::SIZE; // 440
    fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.pretcode);
        self.uc.encode(&mut b[Self::OFF_UC..]);
        self.info.encode(&mut b[Self::OFF_INFO..]);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE {
            return None;
        }
        Some(Self {
            pretcode: get_u64(b, 0),
            uc: UContext::decode(&b[Self::OFF_UC..])?,
            info: SigInfo::decode(&b[Self::OFF_INFO..])?,
        })
    }
}

/// Size of the legacy FXSAVE image that `sigcontext.fpstate` points at.
pub const FXSAVE_SIZE: u64 = 512;

/// Where delivery puts things, as Linux's `get_sigframe` does: skip the
/// 128-byte red zone (unless switching to the alternate stack), put the FPU
/// state 64-byte aligned below, then the frame so that `frame + 8` is 16-byte
/// aligned — the handler starts as if just called.
/// Returns `(frame address, fpstate address)`; `fpstate_size` may be 0.
pub fn sigframe_layout(sp: u64, on_new_altstack: bool, fpstate_size: u64) -> (u64, u64) {
    let mut sp = if on_new_altstack {
        sp
    } else {
        sp.wrapping_sub(128)
    };
    let fpstate = if fpstate_size > 0 {
        sp = sp.wrapping_sub(fpstate_size) & !63;
        sp
    } else {
        0
    };
    let frame = (sp.wrapping_sub(RtSigframe::SIZE as u64) & !15).wrapping_sub(8);
    (frame, fpstate)
}
