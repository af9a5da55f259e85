//! AMD-V (SVM) with nested paging: the VMCB, VMRUN, and the exit codes.
//!
//! QEMU's TCG emulation of SVM has no next-RIP save, no decode assists, no
//! VMCB clean bits and no flush-by-ASID (DESIGN.md): the VMM computes
//! instruction lengths itself, keeps clean bits 0, and flushes the TLB on
//! every VMRUN (TLB_CONTROL = 1).

use core::arch::naked_asm;

use super::Backend;
use super::vcpu::{Ctl, Event, Exit, GuestRegs, RAX, RSP, SegReg, VcpuHw};
use vmkernel::vmm::loader::{Segment, TableRegister};
use crate::arch::cpu;
use crate::mm;

const MSR_EFER: u32 = 0xc000_0080;
const MSR_VM_CR: u32 = 0xc001_0114;
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;
const EFER_SVME: u64 = 1 << 12;

/// Is SVM usable, and with how many ASIDs? Nested paging is required.
pub fn probe() -> Result<Backend, &'static str> {
    if cpu::cpuid(0x8000_0000, 0).eax < 0x8000_000a || cpu::cpuid(0x8000_0001, 0).ecx & (1 << 2) == 0 {
        return Err("no AMD-V (SVM)");
    }
    // SAFETY: VM_CR exists on every CPU that reports SVM.
    if unsafe { cpu::rdmsr(MSR_VM_CR) } & (1 << 4) != 0 {
        return Err("AMD-V (SVM) disabled by the firmware");
    }
    let l = cpu::cpuid(0x8000_000a, 0);
    if l.edx & 1 == 0 {
        return Err("AMD-V without nested paging");
    }
    Ok(Backend::Svm { asids: l.ebx })
}

/// Per-CPU host state areas: the one VMRUN uses (VM_HSAVE_PA) and the one
/// VMSAVE/VMLOAD keep the host's FS/GS/TR/LDTR and syscall MSRs in.
static HOST_AREAS: [core::sync::atomic::AtomicU64; crate::world::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; crate::world::MAX_CPUS];

/// Turns SVM on for this CPU.
pub fn enable_this_cpu() -> Result<(), &'static str> {
    let cpu_i = crate::arch::gdt::cpu_index() as usize;
    let area = HOST_AREAS[cpu_i].load(core::sync::atomic::Ordering::Acquire);
    if area != 0 {
        crate::arch::gdt::set_svm_host_area(area);
        return Ok(());
    }
    // Host-lifetime structures come with SVM, not with the first VM.
    permission_maps().ok_or("no memory for the SVM permission maps")?;
    let hsave = mm::alloc_frame().ok_or("no memory for the SVM host save area")?;
    let hvmcb = mm::alloc_frame().ok_or("no memory for the SVM host state")?;
    // SAFETY: SVM was probed; EFER.SVME enables VMRUN, and VM_HSAVE_PA gets a
    // page-aligned frame owned by this CPU for good.
    unsafe {
        cpu::wrmsr(MSR_EFER, cpu::rdmsr(MSR_EFER) | EFER_SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, hsave);
    }
    HOST_AREAS[cpu_i].store(hvmcb, core::sync::atomic::Ordering::Release);
    crate::arch::gdt::set_svm_host_area(hvmcb);
    Ok(())
}

/// VMCB field offsets (AMD APM vol. 2, appendix B).
pub mod vmcb {
    pub const INTERCEPT_CR: usize = 0x000;
    pub const INTERCEPT_DR: usize = 0x004;
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00c;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const TSC_OFFSET: usize = 0x050;
    pub const GUEST_ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05c;
    pub const V_INTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const NP_ENABLE: usize = 0x090;
    pub const EVENT_INJ: usize = 0x0a8;
    pub const N_CR3: usize = 0x0b0;
    // State save area.
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const EFER: usize = 0x4d0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5d8;
    pub const RAX: usize = 0x5f8;
    pub const CR2: usize = 0x640;
    pub const G_PAT: usize = 0x668;
}

/// Exit codes the VMM handles.
pub mod exit {
    /// MOV from CRn is `READ_CR + n`, MOV to CRn `WRITE_CR + n`.
    pub const READ_CR: u64 = 0x00;
    pub const WRITE_CR: u64 = 0x10;
    /// MOV from DRn is `READ_DR + n`, MOV to DRn `WRITE_DR + n`.
    pub const READ_DR: u64 = 0x20;
    pub const WRITE_DR: u64 = 0x30;
    /// Exception `n` is `EXCEPTION + n`.
    pub const EXCEPTION: u64 = 0x40;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const VINTR: u64 = 0x64;
    pub const IRET: u64 = 0x74;
    pub const RDPMC: u64 = 0x6f;
    pub const CPUID: u64 = 0x72;
    pub const INVD: u64 = 0x76;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const INVLPGA: u64 = 0x7a;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const WBINVD: u64 = 0x89;
    pub const MONITOR: u64 = 0x8a;
    pub const MWAIT: u64 = 0x8b;
    pub const MWAIT_ARMED: u64 = 0x8c;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// One VMCB page (the permission maps it points to are shared).
pub struct Vmcb {
    page: u64,
    /// NMI blocking, which SVM without vNMI leaves to the VMM: set when an
    /// NMI is injected (IRET intercepted from then on), cleared once the
    /// guest's IRET has completed.
    nmi_blocked: bool,
    /// The guest reached IRET while NMIs were blocked: the VMM single-steps
    /// it (TF; #DB is intercepted) and unblocks after it. `Some(guest TF)`.
    iret_step: Option<bool>,
    /// The guest's DR0-DR3 for entries that arm its breakpoints on a host
    /// whose VMRUN does not (`hv::host_arms_guest_breakpoints`).
    breakpoints: [u64; 4],
    /// The VMCB's DR7 arms a breakpoint and the host must arm it
    /// (`host_armed_dr7`): one flag for the entry path to test.
    host_arms: bool,
}

/// The I/O and MSR permission maps every VMCB points to: one policy for
/// all guests (every port and MSR intercepted except the syscall and
/// segment-base MSRs the entry stub switches with VMLOAD/VMSAVE), so one
/// copy serves the host: 20 KiB saved per vCPU. Made when SVM is first
/// enabled, kept.
static PERMISSION_MAPS: spin::Mutex<Option<(u64, u64)>> = spin::Mutex::new(None);

/// (IOPM, MSRPM) physical addresses.
fn permission_maps() -> Option<(u64, u64)> {
    let mut maps = PERMISSION_MAPS.lock();
    if maps.is_none() {
        let iopm = mm::FRAMES.lock().as_mut()?.alloc_contiguous(3, 4096)?;
        let Some(msrpm) = mm::FRAMES.lock().as_mut()?.alloc_contiguous(2, 4096) else {
            let _ = mm::FRAMES.lock().as_mut()?.free_contiguous(iopm, 3);
            return None;
        };
        // SAFETY: the permission maps were just allocated, for good.
        unsafe {
            core::ptr::write_bytes(mm::phys_to_virt(iopm) as *mut u8, 0xff, 3 * 4096);
            core::ptr::write_bytes(mm::phys_to_virt(msrpm) as *mut u8, 0xff, 2 * 4096);
        }
        // The syscall/segment-base MSRs live in the VMCB's save area, which
        // the entry stub switches with VMLOAD/VMSAVE: the guest may use them
        // without exits.
        for msr in [0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0100, 0xc000_0101, 0xc000_0102, 0x174, 0x175, 0x176] {
            pass_msr(msrpm, msr);
        }
        *maps = Some((iopm, msrpm));
    }
    *maps
}

/// Stops intercepting reads and writes of `msr` in the MSR permission map
/// at `msrpm` (two bits per MSR in three 2 KiB ranges, APM vol. 2 §15.11).
fn pass_msr(msrpm: u64, msr: u32) {
    let (base, first) = match msr {
        0..=0x1fff => (0, 0),
        0xc000_0000..=0xc000_1fff => (0x800, 0xc000_0000),
        0xc001_0000..=0xc001_1fff => (0x1000, 0xc001_0000),
        _ => return,
    };
    let bit = 2 * (msr - first) as usize;
    let byte = mm::phys_to_virt(msrpm) + (base + bit / 8) as u64;
    // Written only while being set up, under the PERMISSION_MAPS lock,
    // before any VMCB points to it.
    // SAFETY: the map is two pages and `byte` lies inside its first 6 KiB.
    unsafe {
        let b = core::ptr::read_volatile(byte as *const u8);
        core::ptr::write_volatile(byte as *mut u8, b & !(3 << (bit % 8)));
    }
}

impl Vmcb {
    /// A VMCB intercepting every I/O port and MSR, CPUID, HLT, shutdown,
    /// VMRUN/VMMCALL and physical interrupts, with nested paging rooted at
    /// `ncr3` and address-space ID `asid`.
    pub(crate) fn new(ncr3: u64, asid: u32) -> Option<Vmcb> {
        let (iopm, msrpm) = permission_maps()?;
        let v = Vmcb { page: mm::alloc_frame()?, nmi_blocked: false, iret_step: None, breakpoints: [0; 4], host_arms: false };
        // INTR, NMI, RDPMC (the host's counters), CPUID, INVD (it would
        // drop the host's dirty cache lines), PAUSE, HLT, INVLPGA, IOIO,
        // MSR, shutdown.
        let misc1: u32 = (1 << 0)
            | (1 << 1)
            | (1 << 15)
            | (1 << 18)
            | (1 << 22)
            | (1 << 23)
            | (1 << 24)
            | (1 << 26)
            | (1 << 27)
            | (1 << 28)
            | (1 << 31);
        // Every SVM instruction: the guest runs with EFER.SVME set (VMRUN
        // requires it), so without intercepts it could CLGI and hold off
        // the host's interrupts for good, or VMLOAD/VMSAVE/SKINIT. Also
        // VMMCALL (the hypercall), WBINVD (a host-wide cache flush),
        // MONITOR/MWAIT (not offered) and XSETBV (XCR0 is the host's).
        let misc2: u32 = (1 << 0)
            | (1 << 1)
            | (1 << 2)
            | (1 << 3)
            | (1 << 4)
            | (1 << 5)
            | (1 << 6)
            | (1 << 9)
            | (1 << 10)
            | (1 << 11)
            | (1 << 12)
            | (1 << 13);
        // CR4 writes: the CPU model decides which bits a guest may set
        // (SVM has no guest/host mask; unchecked, a hidden or reserved bit
        // would reach the hardware). CR8 both ways: the task priority is
        // the LAPIC model's TPR, never V_TPR alone — and a guest CR8 write
        // while a virtual interrupt is pending must not reach QEMU TCG's
        // CR8 path, which aborts the emulator (see hv::vm::cr8_access).
        v.w32(vmcb::INTERCEPT_CR, (1 << 8) | (1 << (16 + 4)) | (1 << (16 + 8)));
        v.w32(vmcb::INTERCEPT_MISC1, misc1);
        v.w32(vmcb::INTERCEPT_MISC2, misc2);
        // #AC is intercepted and reflected: a guest must not be able to
        // wedge the CPU in an endless #AC delivery loop (CVE-2015-5307).
        // #DB too (CVE-2015-8104: a #DB raised while delivering #DB would
        // loop in the CPU without end); reflected with its DR6 bits.
        v.w32(vmcb::INTERCEPT_EXCEPTIONS, (1 << 17) | (1 << 1));
        // Every debug-register access: the guest's DRs are kept in software
        // (SVM does not switch DR0-DR3; see vmm::debug_regs), and the DR7
        // the guest runs with stays 0x400.
        v.w32(vmcb::INTERCEPT_DR, 0xffff_ffff);
        v.w64(vmcb::IOPM_BASE, iopm);
        v.w64(vmcb::MSRPM_BASE, msrpm);
        v.w32(vmcb::GUEST_ASID, asid.max(1));
        v.w8(vmcb::TLB_CONTROL, 1);
        // V_INTR_MASKING: the host's IF (set around VMRUN) gates physical
        // interrupts, so a guest with interrupts off still exits on them.
        v.w64(vmcb::V_INTR, 1 << 24);
        v.w64(vmcb::NP_ENABLE, 1);
        v.w64(vmcb::N_CR3, ncr3);
        v.w64(vmcb::G_PAT, 0x0007_0406_0007_0406);
        v.w64(vmcb::DR6, 0xffff_0ff0);
        v.w64(vmcb::DR7, 0x400);
        Some(v)
    }

    fn ptr(&self, off: usize) -> u64 {
        mm::phys_to_virt(self.page) + off as u64
    }

    pub fn r64(&self, off: usize) -> u64 {
        // SAFETY: `off` is within the VMCB page this object owns.
        unsafe { core::ptr::read_volatile(self.ptr(off) as *const u64) }
    }
    pub fn r16(&self, off: usize) -> u16 {
        // SAFETY: `off` is within the VMCB page this object owns.
        unsafe { core::ptr::read_volatile(self.ptr(off) as *const u16) }
    }
    pub fn w64(&self, off: usize, v: u64) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.ptr(off) as *mut u64, v) }
    }
    pub fn w32(&self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.ptr(off) as *mut u32, v) }
    }
    pub fn w16(&self, off: usize, v: u16) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.ptr(off) as *mut u16, v) }
    }
    pub fn w8(&self, off: usize, v: u8) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.ptr(off) as *mut u8, v) }
    }

    /// A segment register: selector, attributes (VMCB format), limit, base.
    fn set_seg_raw(&self, off: usize, sel: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(off, sel);
        self.w16(off + 2, attrib);
        self.w32(off + 4, limit);
        self.w64(off + 8, base);
    }

    /// The DR7 the host arms before this entry (0x400: none). Under QEMU
    /// 7.2 TCG (`hv::host_arms_guest_breakpoints`) VMRUN only copies the
    /// VMCB's DR7 (target/i386/tcg/sysemu/svm_helper.c `helper_vmrun`:
    /// `env->dr[7] = ...`), while breakpoints fire only once the MOV-DR7
    /// helper has armed them (bpt_helper.c `cpu_x86_update_dr7` →
    /// `hw_breakpoint_insert`, a TCG breakpoint on the linear address or
    /// a watchpoint); and #VMEXIT (`do_vmexit`) restores the host's DR7 —
    /// the value of the host's last MOV DR7 — by assignment again, leaving
    /// them armed. So the host arms them by MOV DR7 itself just before
    /// VMRUN and disarms them by MOV DR7 0x400 right after it. Meanwhile
    /// they are live in the host too: TCG compares an execution breakpoint
    /// with each instruction's linear address and a watchpoint with every
    /// access that goes through its TLB — the host's by linear address,
    /// VMRUN's, VMLOAD's and #VMEXIT's by physical address (MMU_PHYS_IDX),
    /// and a match there would raise #DB in the host (or restart the
    /// emulator's VMRUN/#VMEXIT half done). A breakpoint that could match
    /// the stub's code, `regs`, the VMCB or the VMRUN host save area is
    /// therefore not armed (`vmm::debug_regs::host_armable_dr7`); every
    /// other one cannot be reached by the host while armed.
    #[inline(never)]
    fn host_armed_dr7(&self, regs: &GuestRegs) -> u64 {
        let dr7 = self.r64(vmcb::DR7);
        // SAFETY: VM_HSAVE_PA exists where SVM is enabled (it is on this CPU).
        let hsave = unsafe { cpu::rdmsr(MSR_VM_HSAVE_PA) } & !0xfff;
        let regs_at = regs as *const GuestRegs as u64;
        let page = |a: u64| (a, a + 4096);
        let data = [
            (regs_at, regs_at + core::mem::size_of::<GuestRegs>() as u64),
            page(self.page),
            page(mm::phys_to_virt(self.page)),
            page(hsave),
            page(mm::phys_to_virt(hsave)),
        ];
        vmkernel::vmm::debug_regs::host_armable_dr7(dr7, &self.breakpoints, arming_stub_code(), &data)
    }

    /// `svm_run` with the guest's breakpoints armed by the host (out of
    /// line: entries without them stay as lean as before).
    #[inline(never)]
    fn run_arming_breakpoints(&self, regs: &mut GuestRegs, host: u64, fpu: *mut u8, xsave_mask: u64) {
        let arm = self.host_armed_dr7(regs);
        if arm & 0xff == 0 {
            // SAFETY: as in `run_raw`.
            unsafe { svm_run(self.page, regs, host, fpu, xsave_mask, core::ptr::null()) };
            return;
        }
        let [a0, a1, a2, a3] = self.breakpoints;
        let debug = [a0, a1, a2, a3, arm];
        let stray = crate::arch::trap::STRAY_DEBUG_TRAPS.load(core::sync::atomic::Ordering::Relaxed);
        // SAFETY: as in `run_raw`; in addition the stub loads DR0-DR3 and
        // DR7 from `debug`, and `host_armed_dr7` left armed only
        // breakpoints that nothing the host runs or touches until the stub
        // disarms them again (right after VMRUN) can match.
        unsafe { svm_run_arming_breakpoints(self.page, regs, host, fpu, xsave_mask, debug.as_ptr()) };
        if crate::arch::trap::STRAY_DEBUG_TRAPS.load(core::sync::atomic::Ordering::Relaxed) != stray {
            log::warn!("hv: a guest breakpoint (DR7 {arm:#x}, DR0-DR3 {:x?}) raised #DB in the host; resumed", self.breakpoints);
        }
    }

    /// Runs the guest until the next #VMEXIT; returns the exit code.
    /// `fpu` holds the guest's x87/SSE state (FXSAVE image, 16-byte
    /// aligned); the stub loads it right before VMRUN and saves it right
    /// after, in assembly, so no host code sees or clobbers guest registers.
    #[inline]
    pub fn run_raw(&self, regs: &mut GuestRegs, fpu: &mut crate::arch::context::FpuState) -> u64 {
        // The vCPU world may have moved to another CPU since the last run.
        let mut host = crate::arch::gdt::svm_host_area();
        if host == 0 {
            if enable_this_cpu().is_err() {
                return exit::INVALID;
            }
            host = crate::arch::gdt::svm_host_area();
        }
        self.w64(vmcb::RAX, regs.gpr[RAX]);
        self.w64(vmcb::RSP, regs.gpr[RSP]);
        let fpu = fpu.area_mut().as_mut_ptr();
        let xsave_mask = super::vcpu::guest_xsave_mask();
        if self.host_arms {
            self.run_arming_breakpoints(regs, host, fpu, xsave_mask);
        } else {
            // SAFETY: SVM is enabled on this CPU (enable_this_cpu), the VMCB
            // and its maps are valid and owned, the guest's memory is its own
            // nested page table; the stub saves and restores every host
            // register.
            unsafe { svm_run(self.page, regs, host, fpu, xsave_mask, core::ptr::null()) };
        }
        regs.gpr[RAX] = self.r64(vmcb::RAX);
        regs.gpr[RSP] = self.r64(vmcb::RSP);
        self.r64(vmcb::EXIT_CODE)
    }
}

impl Drop for Vmcb {
    fn drop(&mut self) {
        let _ = mm::free_frame(self.page);
    }
}

fn seg_off(s: SegReg) -> usize {
    match s {
        SegReg::Es => vmcb::ES,
        SegReg::Cs => vmcb::CS,
        SegReg::Ss => vmcb::SS,
        SegReg::Ds => vmcb::DS,
        SegReg::Fs => vmcb::FS,
        SegReg::Gs => vmcb::GS,
        SegReg::Ldtr => vmcb::LDTR,
        SegReg::Tr => vmcb::TR,
    }
}

/// V_INTR bits: V_IRQ (a virtual interrupt is pending: exit on VINTR as
/// soon as the guest can take it), V_IGN_TPR, V_INTR_MASKING.
const V_IRQ: u64 = 1 << 8;
const V_IGN_TPR: u64 = 1 << 20;
const INTERCEPT_VINTR: u32 = 1 << 4;
const INTERCEPT_IRET: u32 = 1 << 20;
const RFLAGS_TF: u64 = 1 << 8;

impl VcpuHw for Vmcb {
    fn run(&mut self, regs: &mut GuestRegs, fpu: &mut crate::arch::context::FpuState) -> Exit {
        let code = self.run_raw(regs, fpu);
        // An exit in the middle of delivering an event (EXITINTINFO valid):
        // deliver it again on the next VMRUN, or it is lost. Software
        // interrupts (type 4) re-execute their INTn instead.
        // VMRUN consumed EVENTINJ; clear it so nothing is delivered twice.
        let pending = self.r64(vmcb::EXIT_INT_INFO);
        let again = pending & (1 << 31) != 0 && (pending >> 8) & 7 != 4;
        self.w64(vmcb::EVENT_INJ, if again { pending } else { 0 });
        let (i1, i2) = (self.r64(vmcb::EXIT_INFO1), self.r64(vmcb::EXIT_INFO2));
        match code {
            exit::IOIO => Exit::Io {
                port: (i1 >> 16) as u16,
                size: ((i1 >> 4) & 7) as u8,
                input: i1 & 1 != 0,
                string: i1 & (1 << 2) != 0,
                rep: i1 & (1 << 3) != 0,
                next_rip: i2,
            },
            exit::CPUID => Exit::Cpuid,
            exit::MSR => Exit::Msr { write: i1 & 1 != 0 },
            exit::HLT => Exit::Hlt,
            exit::PAUSE => Exit::Pause,
            exit::VMMCALL => Exit::Hypercall,
            exit::SHUTDOWN => Exit::Shutdown,
            exit::INTR => Exit::ExternalInterrupt,
            exit::NMI => Exit::Nmi,
            exit::VINTR => Exit::InterruptWindow,
            exit::NPF => Exit::NestedPageFault { gpa: i2, write: i1 & 2 != 0 },
            exit::XSETBV => Exit::Xsetbv,
            exit::READ_CR..=0x1f => Exit::MovCr { write: code >= exit::WRITE_CR, cr: (code & 0xf) as u8 },
            // Which GPR, and the next RIP, only decode assists and NRIP save
            // would tell (QEMU has neither): the VMM decodes the instruction.
            exit::READ_DR..=0x3f => Exit::MovDr { write: code >= exit::WRITE_DR, dr: (code & 0xf) as u8, operand: None },
            c if c == exit::EXCEPTION + 1 => {
                let dr6 = self.r64(vmcb::DR6);
                self.w64(vmcb::DR6, 0xffff_0ff0);
                if let Some(guest_tf) = self.iret_step.take() {
                    // The single step over the NMI handler's IRET: NMIs
                    // are unblocked. The guest sees the #DB only if it was
                    // single-stepping itself or hit a breakpoint too.
                    self.nmi_blocked = false;
                    if !guest_tf && dr6 & 0xf == 0 {
                        return Exit::Handled;
                    }
                }
                Exit::DebugTrap { dr6 }
            }
            exit::IRET => {
                // Intercepted before it executes: step over it, then unblock.
                let misc1 = self.r64(vmcb::INTERCEPT_MISC1) as u32;
                self.w32(vmcb::INTERCEPT_MISC1, misc1 & !INTERCEPT_IRET);
                let rflags = self.rflags();
                self.iret_step = Some(rflags & RFLAGS_TF != 0);
                self.w64(vmcb::RFLAGS, rflags | RFLAGS_TF);
                Exit::Handled
            }
            exit::EXCEPTION..=0x5f => {
                let vector = (code - exit::EXCEPTION) as u8;
                // Vectors with an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP).
                let has_code = matches!(vector, 8 | 10..=14 | 17 | 21);
                Exit::Exception { vector, error_code: has_code.then_some(i1 as u32) }
            }
            exit::INVD | exit::WBINVD => {
                // Caches are the host's business: nothing to do (both are
                // two bytes, 0F 08 / 0F 09).
                let rip = self.rip();
                self.set_rip(rip + 2);
                Exit::Handled
            }
            // Instructions the virtual CPU does not offer (CPUID says so).
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::MONITOR
            | exit::MWAIT
            | exit::MWAIT_ARMED => {
                self.inject(Event::ud());
                Exit::Handled
            }
            exit::RDPMC => {
                self.inject(Event::gp());
                Exit::Handled
            }
            exit::INVALID => Exit::EntryFailed { code },
            _ => Exit::Other { code, info1: i1, info2: i2 },
        }
    }
    fn rip(&self) -> u64 {
        self.r64(vmcb::RIP)
    }
    fn set_rip(&mut self, rip: u64) {
        self.w64(vmcb::RIP, rip)
    }
    fn rflags(&self) -> u64 {
        self.r64(vmcb::RFLAGS)
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.w64(vmcb::RFLAGS, rflags)
    }
    fn ctl(&self, r: Ctl) -> u64 {
        match r {
            Ctl::Cr0 => self.r64(vmcb::CR0),
            Ctl::Cr2 => self.r64(vmcb::CR2),
            Ctl::Cr3 => self.r64(vmcb::CR3),
            Ctl::Cr4 => self.r64(vmcb::CR4),
            Ctl::Efer => self.r64(vmcb::EFER) & !EFER_SVME,
            Ctl::Pat => self.r64(vmcb::G_PAT),
            Ctl::TscOffset => self.r64(vmcb::TSC_OFFSET),
            Ctl::Dr7 => self.r64(vmcb::DR7),
        }
    }
    fn set_ctl(&mut self, r: Ctl, value: u64) {
        match r {
            Ctl::Cr0 => self.w64(vmcb::CR0, value),
            Ctl::Cr2 => self.w64(vmcb::CR2, value),
            Ctl::Cr3 => self.w64(vmcb::CR3, value),
            Ctl::Cr4 => self.w64(vmcb::CR4, value),
            // VMRUN requires the guest's EFER.SVME; the guest never sees it.
            Ctl::Efer => self.w64(vmcb::EFER, value | EFER_SVME),
            Ctl::Pat => self.w64(vmcb::G_PAT, value),
            Ctl::TscOffset => self.w64(vmcb::TSC_OFFSET, value),
            Ctl::Dr7 => {
                self.host_arms = value & 0xff != 0 && super::host_arms_guest_breakpoints();
                self.w64(vmcb::DR7, value)
            }
        }
    }
    fn segment(&self, s: SegReg) -> Segment {
        let off = seg_off(s);
        Segment { selector: self.r16(off), attr: self.r16(off + 2), limit: self.r64(off + 4) as u32, base: self.r64(off + 8) }
    }
    fn set_segment(&mut self, s: SegReg, seg: Segment) {
        self.set_seg_raw(seg_off(s), seg.selector, seg.attr, seg.limit, seg.base)
    }
    fn set_gdtr(&mut self, t: TableRegister) {
        self.set_seg_raw(vmcb::GDTR, 0, 0, t.limit as u32, t.base)
    }
    fn set_idtr(&mut self, t: TableRegister) {
        self.set_seg_raw(vmcb::IDTR, 0, 0, t.limit as u32, t.base)
    }
    fn interrupt_shadow(&self) -> bool {
        self.r64(vmcb::INTERRUPT_SHADOW) & 1 != 0
    }
    fn event_pending(&self) -> bool {
        self.r64(vmcb::EVENT_INJ) & (1 << 31) != 0
    }
    fn nmi_blocked(&self) -> bool {
        self.nmi_blocked
    }
    fn inject(&mut self, e: Event) {
        if e == Event::Nmi {
            self.nmi_blocked = true;
            let misc1 = self.r64(vmcb::INTERCEPT_MISC1) as u32;
            self.w32(vmcb::INTERCEPT_MISC1, misc1 | INTERCEPT_IRET);
        }
        // EVENTINJ: vector, type (0 INTR, 2 NMI, 3 exception), EV, V.
        let v = match e {
            Event::ExternalInterrupt(v) => v as u64,
            Event::Nmi => 2 | (2 << 8),
            Event::Exception { vector, error_code: None } => vector as u64 | (3 << 8),
            Event::Exception { vector, error_code: Some(ec) } => vector as u64 | (3 << 8) | (1 << 11) | ((ec as u64) << 32),
        };
        self.w64(vmcb::EVENT_INJ, v | (1 << 31));
    }
    fn set_interrupt_window(&mut self, on: bool) {
        let vi = self.r64(vmcb::V_INTR);
        let misc1 = self.r64(vmcb::INTERCEPT_MISC1) as u32;
        if on {
            self.w64(vmcb::V_INTR, vi | V_IRQ | V_IGN_TPR);
            self.w32(vmcb::INTERCEPT_MISC1, misc1 | INTERCEPT_VINTR);
        } else {
            self.w64(vmcb::V_INTR, vi & !(V_IRQ | V_IGN_TPR));
            self.w32(vmcb::INTERCEPT_MISC1, misc1 & !INTERCEPT_VINTR);
        }
    }
    fn skip_instruction_unless_stepping(&mut self, len: u64) -> bool {
        if self.r64(vmcb::RFLAGS) & RFLAGS_TF != 0 {
            return false;
        }
        self.w64(vmcb::RIP, self.r64(vmcb::RIP) + len);
        true
    }
    fn host_frames(&self) -> usize {
        1
    }
    fn set_breakpoint_addresses(&mut self, address: [u64; 4]) {
        if super::host_arms_guest_breakpoints() {
            // The entry stub loads them (see `host_armed_dr7`).
            self.breakpoints = address;
        } else {
            super::load_guest_breakpoint_addresses(address);
        }
    }
}

/// VMSAVE host → VMLOAD guest → VMRUN → VMSAVE guest → VMLOAD host, with
/// the guest GPRs loaded from and stored to `regs`. Physical interrupts
/// are held off (GIF=0) around the switch; with V_INTR_MASKING and IF=1
/// at VMRUN they cause a #VMEXIT and are taken by the host afterwards.
///
/// Two variants: `svm_run`, and `svm_run_arming_breakpoints` for hosts
/// whose VMRUN does not arm the guest's breakpoints (QEMU 7.2 TCG, see
/// `Vmcb::run_raw`). The latter loads DR0-DR3 and DR7 from `debug` (five
/// words) after the last host memory access but the guest registers,
/// and writes DR7 0x400 as the first instruction after VMRUN, before any
/// memory access: between the two the host touches only `regs`, the VMCB
/// and the VMRUN host save area, and runs only this stub.
macro_rules! svm_run_stub {
    ($(#[$m:meta])* $name:ident,
     push_vmcb: [$($push_vmcb:literal),*],
     arm: [$($arm:literal),*],
     disarm: [$($disarm:literal),*],
     drop_vmcb: [$($drop_vmcb:literal),*],
     end: [$($end:literal),*]) => {
        $(#[$m])*
        #[unsafe(naked)]
        unsafe extern "C" fn $name(vmcb_pa: u64, regs: *mut GuestRegs, host_pa: u64, fpu: *mut u8, xsave_mask: u64, debug: *const u64) {
            naked_asm!(
                "push rbp",
                "push rbx",
                "push r12",
                "push r13",
                "push r14",
                "push r15",
                "push r8",  // XSAVE mask (0: FXSAVE)
                "push rcx", // guest FPU area
                "push rdx", // host area
                $($push_vmcb,)*
                "push rsi", // regs
                "clgi",
                "test r8, r8",
                "jz 1f",
                "mov rbx, rdx",
                "mov rax, r8",
                "mov rdx, r8",
                "shr rdx, 32",
                "xrstor64 [rcx]",
                "mov rdx, rbx",
                "jmp 2f",
                "1:",
                "fxrstor64 [rcx]",
                "2:",
                "mov rax, rdx",
                "vmsave rax",
                $($arm,)*
                "mov rax, rdi",
                "mov rcx, [rsi + 0x08]",
                "mov rdx, [rsi + 0x10]",
                "mov rbx, [rsi + 0x18]",
                "mov rbp, [rsi + 0x28]",
                "mov rdi, [rsi + 0x38]",
                "mov r8,  [rsi + 0x40]",
                "mov r9,  [rsi + 0x48]",
                "mov r10, [rsi + 0x50]",
                "mov r11, [rsi + 0x58]",
                "mov r12, [rsi + 0x60]",
                "mov r13, [rsi + 0x68]",
                "mov r14, [rsi + 0x70]",
                "mov r15, [rsi + 0x78]",
                "mov rsi, [rsi + 0x30]",
                "vmload rax",
                "sti",
                "vmrun rax",
                $($disarm,)*
                "cli",
                "vmsave rax",
                "push rsi",
                "mov rsi, [rsp + 8]",
                "mov [rsi + 0x08], rcx",
                "mov [rsi + 0x10], rdx",
                "mov [rsi + 0x18], rbx",
                "mov [rsi + 0x28], rbp",
                "mov [rsi + 0x38], rdi",
                "mov [rsi + 0x40], r8",
                "mov [rsi + 0x48], r9",
                "mov [rsi + 0x50], r10",
                "mov [rsi + 0x58], r11",
                "mov [rsi + 0x60], r12",
                "mov [rsi + 0x68], r13",
                "mov [rsi + 0x70], r14",
                "mov [rsi + 0x78], r15",
                "pop rax",
                "mov [rsi + 0x30], rax",
                "add rsp, 8",
                $($drop_vmcb,)*
                "pop rax", // host area
                "vmload rax",
                "pop rcx", // guest FPU area
                "pop r8",  // XSAVE mask
                "test r8, r8",
                "jz 3f",
                "mov rax, r8",
                "mov rdx, r8",
                "shr rdx, 32",
                "xsave64 [rcx]",
                "jmp 4f",
                "3:",
                "fxsave64 [rcx]",
                "4:",
                "stgi",
                "pop r15",
                "pop r14",
                "pop r13",
                "pop r12",
                "pop rbx",
                "pop rbp",
                "ret",
                $($end,)*
            )
        }
    };
}

svm_run_stub!(svm_run, push_vmcb: [], arm: [], disarm: [], drop_vmcb: [], end: []);

svm_run_stub!(
    svm_run_arming_breakpoints,
    push_vmcb: ["push rdi"],
    // DR0-DR3 while the host's DR7 arms nothing, then DR7: the emulator's
    // MOV-DR7 helper arms what it enables.
    arm: [
        "mov rbx, [r9]", "mov dr0, rbx",
        "mov rbx, [r9 + 8]", "mov dr1, rbx",
        "mov rbx, [r9 + 16]", "mov dr2, rbx",
        "mov rbx, [r9 + 24]", "mov dr3, rbx",
        "mov rbx, [r9 + 32]", "mov dr7, rbx"
    ],
    // #VMEXIT left the host's DR7 as it was at VMRUN (the guest's) with
    // its breakpoints armed; GIF is 0 (no interrupt or NMI until STGI).
    // DR7 0x400 disarms them; RAX (the VMCB address) comes back from the
    // stack after that.
    disarm: ["mov eax, 0x400", "mov dr7, rax", "mov rax, [rsp + 8]"],
    drop_vmcb: ["add rsp, 8"],
    end: [".global mantle_svm_run_arming_breakpoints_end", "mantle_svm_run_arming_breakpoints_end:"]
);

unsafe extern "C" {
    /// The end of `svm_run_arming_breakpoints`' code.
    static mantle_svm_run_arming_breakpoints_end: u8;
}

/// The code of `svm_run_arming_breakpoints` (start, end exclusive).
fn arming_stub_code() -> (u64, u64) {
    let start = svm_run_arming_breakpoints as *const () as u64;
    let end = core::ptr::addr_of!(mantle_svm_run_arming_breakpoints_end) as u64;
    (start, end)
}
