//! The interface between the common VMM (exit handling, devices, loaders in
//! `hv::vm`) and a hardware backend (`hv::svm`, `hv::vmx`).
//!
//! A backend owns one vCPU's control structure (VMCB or VMCS) and enters
//! the guest. Everything else — what an exit means for the platform, which
//! interrupt to inject, how long an instruction is when the hardware does
//! not say — is decided once, in backend-independent code.

use vmkernel::vmm::loader::{Segment, TableRegister, VcpuState};

/// The guest's general-purpose registers, in the instruction decoder's
/// order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8–R15. The backend keeps
/// those its hardware holds in the control structure (SVM: RAX and RSP;
/// VMX: RSP) in sync with this array around every guest entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub gpr: [u64; 16],
}

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;

/// Segment registers with hidden state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegReg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

/// Control registers and EFER as the guest sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ctl {
    Cr0,
    /// Part of the guest state each backend saves; the VMM has no #PF to
    /// inject with it yet.
    #[allow(dead_code)]
    Cr2,
    Cr3,
    Cr4,
    /// The guest-visible EFER (SVM's mandatory EFER.SVME is hidden).
    Efer,
    /// The guest's IA32_PAT (used with nested paging).
    Pat,
    /// Added to the host TSC for the guest's RDTSC.
    TscOffset,
    /// The DR7 the guest runs with (its own while it has breakpoints
    /// armed, else 0x400; see `hv::vm::load_debug_regs`).
    Dr7,
}

/// What to deliver into the guest at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    ExternalInterrupt(u8),
    Nmi,
    /// A hardware exception with its error code where it has one.
    Exception { vector: u8, error_code: Option<u32> },
}

impl Event {
    pub const fn gp() -> Event {
        Event::Exception { vector: 13, error_code: Some(0) }
    }
    pub const fn ud() -> Event {
        Event::Exception { vector: 6, error_code: None }
    }
}

/// Why the guest stopped running, in backend-independent terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// IN/OUT (`input`), possibly INS/OUTS (`string`, with `rep`).
    /// `next_rip` when the hardware reports it (SVM's EXITINFO2, VMX's
    /// instruction length), else the VMM decodes the length.
    Io { port: u16, size: u8, input: bool, string: bool, rep: bool, next_rip: u64 },
    Cpuid,
    /// RDMSR / WRMSR (ECX = the MSR).
    Msr { write: bool },
    Hlt,
    Pause,
    /// VMMCALL (AMD) or VMCALL (Intel): the hypercall ABI.
    Hypercall,
    /// Triple fault: the virtual CPU shut down.
    Shutdown,
    /// A physical interrupt arrived while the guest ran (the host takes it).
    ExternalInterrupt,
    Nmi,
    /// The guest can take an interrupt now (requested interrupt window).
    InterruptWindow,
    /// The guest can take an NMI now (requested NMI window, VMX).
    NmiWindow,
    /// Guest-physical access with no RAM behind it (MMIO).
    NestedPageFault { gpa: u64, write: bool },
    Xsetbv,
    /// An INIT signal arrived for this vCPU (VMX).
    Init,
    /// MOV to/from CR8 (VMX intercepts it: the task priority is the
    /// LAPIC model's TPR, never the host's). `gpr` in decoder order.
    Cr8 { write: bool, gpr: u8, next_rip: u64 },
    /// MOV to or from control register `cr` (SVM: CR4 writes, CR8 both
    /// ways); the VMM decodes which general register.
    MovCr { write: bool, cr: u8 },
    /// MOV to (`write`) or from debug register `dr`; `operand` is the
    /// general register (decoder order) and the next RIP when the hardware
    /// says (VMX's qualification), else the VMM decodes the instruction.
    MovDr { write: bool, dr: u8, operand: Option<(u8, u64)> },
    /// A #DB in the guest (intercepted so a #DB loop cannot wedge the CPU,
    /// CVE-2015-8104); `dr6` holds the B0-B3, BD, BS bits the hardware
    /// reported.
    DebugTrap { dr6: u64 },
    /// An intercepted guest exception (reflected back into the guest).
    Exception { vector: u8, error_code: Option<u32> },
    /// The backend dealt with the exit itself (e.g. a CR0/CR4 write under
    /// VMX's guest/host masks); nothing for the common code to do.
    Handled,
    /// The hardware refused to enter the guest (bad state); `code` says why.
    EntryFailed { code: u64 },
    /// Anything else: the raw exit code and information for the log.
    Other { code: u64, info1: u64, info2: u64 },
}

/// The extended-state components the entry stubs switch for a guest: all
/// the host enabled in XCR0 (the guest runs under the host's XCR0, so a
/// guest that turns on CR4.OSXSAVE against CPUID's word can reach AVX
/// registers — they must be its own, never another VM's), or 0 for
/// FXSAVE/FXRSTOR on a host without XSAVE.
pub fn guest_xsave_mask() -> u64 {
    if crate::arch::context::uses_xsave() { crate::arch::context::xcr0() } else { 0 }
}

/// One vCPU on a hardware backend.
pub trait VcpuHw {
    /// Enters the guest and runs it until the next exit. `fpu` is the
    /// guest's extended state (a 64-byte aligned XSAVE image, or FXSAVE on
    /// hosts without XSAVE; see [`guest_xsave_mask`]) that the entry stub
    /// loads right before entry and saves right after.
    fn run(&mut self, regs: &mut GuestRegs, fpu: &mut crate::arch::context::FpuState) -> Exit;

    fn rip(&self) -> u64;
    fn set_rip(&mut self, rip: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, rflags: u64);
    fn ctl(&self, r: Ctl) -> u64;
    /// Sets a control register or EFER as a guest-visible value (used by
    /// the loaders' initial state and by WRMSR to EFER).
    fn set_ctl(&mut self, r: Ctl, value: u64);
    fn segment(&self, s: SegReg) -> Segment;
    fn set_segment(&mut self, s: SegReg, seg: Segment);
    fn set_gdtr(&mut self, t: TableRegister);
    fn set_idtr(&mut self, t: TableRegister);
    /// Is the guest in an interrupt shadow (after STI / MOV SS)?
    fn interrupt_shadow(&self) -> bool;
    /// Is an event already queued for the next entry?
    fn event_pending(&self) -> bool;
    /// Queues `e` for delivery at the next entry.
    fn inject(&mut self, e: Event);
    /// Asks for (or cancels) an exit as soon as the guest can take an
    /// external interrupt.
    fn set_interrupt_window(&mut self, on: bool);
    /// Is the guest blocking NMIs (one was delivered and its handler's IRET
    /// has not completed)? A new NMI stays latched until then.
    fn nmi_blocked(&self) -> bool {
        false
    }
    /// Asks for (or cancels) an exit as soon as the guest can take an NMI.
    fn set_nmi_window(&mut self, _on: bool) {}
    /// Moves RIP past the `len`-byte instruction the VMM completed for the
    /// guest, unless the guest is single-stepping (RFLAGS.TF: the VMM must
    /// then report the #DB the CPU would raise after it). True: RIP moved.
    /// One call instead of three on the exit fast path.
    fn skip_instruction_unless_stepping(&mut self, len: u64) -> bool {
        if self.rflags() & (1 << 8) != 0 {
            return false;
        }
        let rip = self.rip();
        self.set_rip(rip + len);
        true
    }
    /// Host frames this vCPU's control structures hold (statistics).
    fn host_frames(&self) -> usize;
    /// The guest's breakpoint addresses for the next entry whose DR7 arms
    /// some: into the CPU's DR0-DR3 now (the host arms no breakpoint, so
    /// they act only in the guest), or when entering (SVM under QEMU TCG).
    fn set_breakpoint_addresses(&mut self, address: [u64; 4]) {
        super::load_guest_breakpoint_addresses(address);
    }

    /// Loads a loader's initial state (or the reset state of an AP).
    fn load_state(&mut self, s: &VcpuState, regs: &mut GuestRegs) {
        self.set_segment(SegReg::Cs, s.cs);
        self.set_segment(SegReg::Ds, s.ds);
        self.set_segment(SegReg::Es, s.es);
        self.set_segment(SegReg::Fs, s.fs);
        self.set_segment(SegReg::Gs, s.gs);
        self.set_segment(SegReg::Ss, s.ss);
        self.set_segment(SegReg::Tr, s.tr);
        self.set_segment(SegReg::Ldtr, s.ldtr);
        self.set_gdtr(s.gdtr);
        self.set_idtr(s.idtr);
        self.set_ctl(Ctl::Cr0, s.cr0);
        self.set_ctl(Ctl::Cr3, s.cr3);
        self.set_ctl(Ctl::Cr4, s.cr4);
        self.set_ctl(Ctl::Efer, s.efer);
        self.set_rflags(s.regs.rflags);
        self.set_rip(s.regs.rip);
        regs.gpr = s.regs.gpr;
    }
}
