//! AMD-V (SVM) with nested paging: the VMCB, VMRUN, and the exit codes.
//!
//! QEMU's TCG emulation of SVM has no next-RIP save, no decode assists, no
//! VMCB clean bits and no flush-by-ASID (DESIGN.md): the VMM computes
//! instruction lengths itself, keeps clean bits 0, and flushes the TLB on
//! every VMRUN (TLB_CONTROL = 1).

use core::arch::naked_asm;

use super::Backend;
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
    if HOST_AREAS[cpu_i].load(core::sync::atomic::Ordering::Acquire) != 0 {
        return Ok(());
    }
    let hsave = mm::alloc_frame().ok_or("no memory for the SVM host save area")?;
    let hvmcb = mm::alloc_frame().ok_or("no memory for the SVM host state")?;
    // SAFETY: SVM was probed; EFER.SVME enables VMRUN, and VM_HSAVE_PA gets a
    // page-aligned frame owned by this CPU for good.
    unsafe {
        cpu::wrmsr(MSR_EFER, cpu::rdmsr(MSR_EFER) | EFER_SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, hsave);
    }
    HOST_AREAS[cpu_i].store(hvmcb, core::sync::atomic::Ordering::Release);
    Ok(())
}

fn host_area() -> u64 {
    HOST_AREAS[crate::arch::gdt::cpu_index() as usize].load(core::sync::atomic::Ordering::Acquire)
}

/// VMCB field offsets (AMD APM vol. 2, appendix B).
pub mod vmcb {
    pub const INTERCEPT_CR: usize = 0x000;
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
    pub const CLEAN_BITS: usize = 0x0c0;
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
    pub const CPL: usize = 0x4cb;
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
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const VINTR: u64 = 0x64;
    pub const CPUID: u64 = 0x72;
    pub const PAUSE: u64 = 0x77;
    pub const HLT: u64 = 0x78;
    pub const IOIO: u64 = 0x7b;
    pub const MSR: u64 = 0x7c;
    pub const SHUTDOWN: u64 = 0x7f;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const XSETBV: u64 = 0x8d;
    pub const NPF: u64 = 0x400;
    pub const INVALID: u64 = u64::MAX;
}

/// The guest registers VMRUN does not keep in the VMCB.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

/// One VMCB page plus the permission maps it points to.
pub struct Vmcb {
    page: u64,
    iopm: u64,
    msrpm: u64,
}

impl Vmcb {
    /// A VMCB intercepting every I/O port and MSR, CPUID, HLT, shutdown,
    /// VMRUN/VMMCALL and physical interrupts, with nested paging rooted at
    /// `ncr3` and address-space ID `asid`.
    pub fn new(ncr3: u64, asid: u32) -> Option<Vmcb> {
        let page = mm::alloc_frame()?;
        let iopm = mm::FRAMES.lock().as_mut()?.alloc_contiguous(3, 4096)?;
        let msrpm = mm::FRAMES.lock().as_mut()?.alloc_contiguous(2, 4096)?;
        // SAFETY: the permission maps were just allocated for this VMCB.
        unsafe {
            core::ptr::write_bytes(mm::phys_to_virt(iopm) as *mut u8, 0xff, 3 * 4096);
            core::ptr::write_bytes(mm::phys_to_virt(msrpm) as *mut u8, 0xff, 2 * 4096);
        }
        let v = Vmcb { page, iopm, msrpm };
        let misc1: u32 = (1 << 0) | (1 << 1) | (1 << 18) | (1 << 24) | (1 << 27) | (1 << 28) | (1 << 31);
        // VMRUN, VMMCALL, and XSETBV (guests get no XSAVE: their x87/SSE
        // state is switched with FXSAVE/FXRSTOR around every VMRUN).
        let misc2: u32 = (1 << 0) | (1 << 1) | (1 << 13);
        v.w32(vmcb::INTERCEPT_MISC1, misc1);
        v.w32(vmcb::INTERCEPT_MISC2, misc2);
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
    pub fn set_segment(&self, off: usize, sel: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(off, sel);
        self.w16(off + 2, attrib);
        self.w32(off + 4, limit);
        self.w64(off + 8, base);
    }

    /// Flat 32-bit protected mode, paging off, at `rip` with `rsp`.
    pub fn set_protected32(&self, rip: u64, rsp: u64) {
        const CODE: u16 = 0xc9b; // G, D/B, P, S, type 0xb
        const DATA: u16 = 0xc93;
        self.set_segment(vmcb::CS, 0x08, CODE, 0xffff_ffff, 0);
        for s in [vmcb::DS, vmcb::ES, vmcb::SS, vmcb::FS, vmcb::GS] {
            self.set_segment(s, 0x10, DATA, 0xffff_ffff, 0);
        }
        self.set_segment(vmcb::GDTR, 0, 0, 0xffff, 0);
        self.set_segment(vmcb::IDTR, 0, 0, 0xffff, 0);
        self.set_segment(vmcb::LDTR, 0, 0x82, 0xffff, 0);
        self.set_segment(vmcb::TR, 0, 0x8b, 0xffff, 0);
        self.w64(vmcb::CR0, 0x11); // PE | ET
        self.w64(vmcb::CR4, 0);
        self.w64(vmcb::CR3, 0);
        self.w64(vmcb::EFER, EFER_SVME); // VMRUN requires guest EFER.SVME
        self.w64(vmcb::RFLAGS, 2);
        self.w64(vmcb::RIP, rip);
        self.w64(vmcb::RSP, rsp);
    }

    /// Runs the guest until the next #VMEXIT; returns the exit code.
    /// `fpu` holds the guest's x87/SSE state (FXSAVE image, 16-byte
    /// aligned); the stub loads it right before VMRUN and saves it right
    /// after, in assembly, so no host code sees or clobbers guest registers.
    pub fn run(&self, regs: &mut GuestRegs, fpu: *mut u8) -> u64 {
        // The vCPU world may have moved to another CPU since the last run.
        if host_area() == 0 && enable_this_cpu().is_err() {
            return exit::INVALID;
        }
        let host = host_area();
        // SAFETY: SVM is enabled on this CPU (enable_this_cpu), the VMCB and
        // its maps are valid and owned, the guest's memory is its own nested
        // page table; the stub saves and restores every host register.
        unsafe { svm_run(self.page, regs, host, fpu) };
        self.r64(vmcb::EXIT_CODE)
    }
}

impl Drop for Vmcb {
    fn drop(&mut self) {
        let _ = mm::free_frame(self.page);
        if let Some(fa) = mm::FRAMES.lock().as_mut() {
            let _ = fa.free_contiguous(self.iopm, 3);
            let _ = fa.free_contiguous(self.msrpm, 2);
        }
    }
}

/// VMSAVE host → VMLOAD guest → VMRUN → VMSAVE guest → VMLOAD host, with
/// the guest GPRs loaded from and stored to `regs`. Physical interrupts
/// are held off (GIF=0) around the switch; with V_INTR_MASKING and IF=1
/// at VMRUN they cause a #VMEXIT and are taken by the host afterwards.
#[unsafe(naked)]
unsafe extern "C" fn svm_run(vmcb_pa: u64, regs: *mut GuestRegs, host_pa: u64, fpu: *mut u8) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rcx", // guest FPU area
        "push rdx", // host area
        "push rsi", // regs
        "clgi",
        "fxrstor64 [rcx]",
        "mov rax, rdx",
        "vmsave rax",
        "mov rax, rdi",
        "mov rbx, [rsi + 0x00]",
        "mov rcx, [rsi + 0x08]",
        "mov rdx, [rsi + 0x10]",
        "mov rdi, [rsi + 0x20]",
        "mov rbp, [rsi + 0x28]",
        "mov r8,  [rsi + 0x30]",
        "mov r9,  [rsi + 0x38]",
        "mov r10, [rsi + 0x40]",
        "mov r11, [rsi + 0x48]",
        "mov r12, [rsi + 0x50]",
        "mov r13, [rsi + 0x58]",
        "mov r14, [rsi + 0x60]",
        "mov r15, [rsi + 0x68]",
        "mov rsi, [rsi + 0x18]",
        "vmload rax",
        "sti",
        "vmrun rax",
        "cli",
        "vmsave rax",
        "push rsi",
        "mov rsi, [rsp + 8]",
        "mov [rsi + 0x00], rbx",
        "mov [rsi + 0x08], rcx",
        "mov [rsi + 0x10], rdx",
        "mov [rsi + 0x20], rdi",
        "mov [rsi + 0x28], rbp",
        "mov [rsi + 0x30], r8",
        "mov [rsi + 0x38], r9",
        "mov [rsi + 0x40], r10",
        "mov [rsi + 0x48], r11",
        "mov [rsi + 0x50], r12",
        "mov [rsi + 0x58], r13",
        "mov [rsi + 0x60], r14",
        "mov [rsi + 0x68], r15",
        "pop rax",
        "mov [rsi + 0x18], rax",
        "add rsp, 8",
        "pop rax", // host area
        "vmload rax",
        "pop rax", // guest FPU area
        "fxsave64 [rax]",
        "stgi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}
