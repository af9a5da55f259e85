//! Intel VT-x (VMX) with EPT, VPID and unrestricted guest: VMXON on every
//! CPU, one VMCS per vCPU, VMLAUNCH/VMRESUME, and exits translated into the
//! backend-independent [`Exit`]. The encodings, control fitting and CR
//! rules are plain data in `vmkernel::vmm::vmx` (host-tested); this module
//! only executes the VMX instructions.
//!
//! A VMCS is active on one CPU at a time (VMPTRLD caches it there), so when
//! a vCPU world runs on another CPU its VMCS follows: VMCLEAR on the old
//! CPU by IPI, VMPTRLD and VMLAUNCH on the new one (`Vmcs::move_here`).
//! Several VMCSs share a CPU: every access makes sure this vCPU's VMCS is
//! the current one.
//!
//! What VMX does not switch and the backend must: CR2 (restored before
//! entry, saved after exit), the syscall MSRs and KERNEL_GS_BASE (through
//! the VM-entry/VM-exit MSR areas), x87/SSE state (in the entry stub), and
//! the host's FS/GS bases and CR3 (written into the host-state area before
//! every entry, since user worlds change them).

use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use spin::Once;
use vmkernel::vmm::loader::{Segment, TableRegister};
use vmkernel::vmm::vmx::{self as x, Controls, CrAccess, field as f, intr_info};

use super::Backend;
use super::vcpu::{Ctl, Event, Exit, GuestRegs, RSP, SegReg, VcpuHw};
use crate::arch::cpu;
use crate::mm;
use crate::world::MAX_CPUS;

static CONTROLS: Once<Result<Controls, &'static str>> = Once::new();

/// The fitted controls (probed once, on the BSP).
fn controls() -> Result<&'static Controls, &'static str> {
    CONTROLS.call_once(probe_controls).as_ref().map_err(|e| *e)
}

fn probe_controls() -> Result<Controls, &'static str> {
    if cpu::cpuid(1, 0).ecx & (1 << 5) == 0 {
        return Err("no Intel VT-x (VMX)");
    }
    // SAFETY: FEATURE_CONTROL exists on every CPU that reports VMX.
    let fc = unsafe { cpu::rdmsr(x::msr::FEATURE_CONTROL) };
    if fc & x::msr::FEATURE_CONTROL_LOCK != 0 && fc & x::msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err("Intel VT-x disabled by the firmware");
    }
    // SAFETY: the VMX capability MSRs exist when CPUID reports VMX; the
    // secondary and EPT ones are read only after the primary controls say
    // they exist (Controls::probe checks in that order).
    let mut c = Controls::probe(|m| unsafe { cpu::rdmsr(m) })?;
    // The CR4 bits the CPU model offers (hv::cpu_model is built on these
    // controls, so from the raw CPUID; no CR4 bit depends on them).
    c.guest_cr4 = vmkernel::vmm::cpu_model::CpuModel::from_host(super::host_cpuid).cr4_allowed();
    Ok(c)
}

/// Hides from the host's CPUID what VM entry would turn into #UD unless
/// enabled (RDTSCP, INVPCID), before the CPU model sees it.
pub fn limit_host_cpuid(leaf: u32, sub: u32, r: &mut [u32; 4]) {
    let Ok(c) = controls() else { return };
    if leaf == 0x8000_0001 && c.proc2 & x::proc2::ENABLE_RDTSCP == 0 {
        r[3] &= !(1 << 27);
    }
    if leaf == 7 && sub == 0 && c.proc2 & x::proc2::ENABLE_INVPCID == 0 {
        r[1] &= !(1 << 10);
    }
}

/// Is VT-x with EPT and unrestricted guest usable?
pub fn probe() -> Result<Backend, &'static str> {
    controls().map(|c| Backend::Vmx { vpid: c.vpid, large_pages: c.ept_2m })
}

/// Per-CPU VMXON regions (0: VMX not on yet on that CPU).
static VMXON_REGIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The VMCS current on each CPU (physical address, 0 = none).
static CURRENT_VMCS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn this_cpu() -> usize {
    crate::arch::gdt::cpu_index() as usize
}

fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// VMX instructions report failure in CF (VMfailInvalid) or ZF
/// (VMfailValid, with a reason in the VM-instruction error field).
fn vmx_result(cf: u8, zf: u8) -> Result<(), u64> {
    if cf != 0 {
        Err(u64::MAX)
    } else if zf != 0 {
        Err(vmread(f::VM_INSTRUCTION_ERROR))
    } else {
        Ok(())
    }
}

/// Turns VMX on for this CPU (VMXON), once.
pub fn enable_this_cpu() -> Result<(), &'static str> {
    let c = controls()?;
    let i = this_cpu();
    if VMXON_REGIONS[i].load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    static IPI: spin::Once<()> = spin::Once::new();
    IPI.call_once(|| crate::arch::trap::register(VMCLEAR_VECTOR, on_vmclear_ipi));
    let region = mm::alloc_frame().ok_or("no memory for the VMXON region")?;
    // SAFETY: the region is a fresh frame owned by this CPU for good; the
    // revision identifier goes in its first word (SDM 24.11.5).
    unsafe { core::ptr::write_volatile(mm::phys_to_virt(region) as *mut u32, c.revision) };
    // SAFETY: VMX exists (probed). FEATURE_CONTROL is written only while
    // unlocked (firmware that left it so lets the OS decide); CR0/CR4 get
    // the bits VMX operation requires (the kernel already runs with PE,
    // PG, NE; CR4.VMXE is new and changes nothing else).
    let (cf, zf) = unsafe {
        let fc = cpu::rdmsr(x::msr::FEATURE_CONTROL);
        if fc & x::msr::FEATURE_CONTROL_LOCK == 0 {
            cpu::wrmsr(x::msr::FEATURE_CONTROL, fc | x::msr::FEATURE_CONTROL_LOCK | x::msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX);
        }
        let cr0 = (read_cr0() | c.cr0_fixed0) & c.cr0_fixed1;
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        let cr4 = (read_cr4() | c.cr4_fixed0 | x::cr4::VMXE) & (c.cr4_fixed1 | x::cr4::VMXE);
        asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        let (cf, zf): (u8, u8);
        asm!("vmxon [{}]", "setc {}", "setz {}", in(reg) &region, out(reg_byte) cf, out(reg_byte) zf, options(nostack));
        (cf, zf)
    };
    if cf != 0 || zf != 0 {
        let _ = mm::free_frame(region);
        return Err("VMXON failed");
    }
    VMXON_REGIONS[i].store(region, Ordering::Release);
    Ok(())
}

fn vmread(field: u32) -> u64 {
    let v: u64;
    // SAFETY: called only with this vCPU's VMCS current on this CPU
    // (Vmcs::current); VMREAD of a field has no side effects.
    unsafe { asm!("vmread {}, {}", out(reg) v, in(reg) field as u64, options(nostack)) };
    v
}

fn vmwrite(field: u32, value: u64) {
    // SAFETY: called only with this vCPU's VMCS current on this CPU; the
    // values written are checked by VM entry, which fails cleanly (an
    // EntryFailed exit) rather than harming the host.
    unsafe { asm!("vmwrite {}, {}", in(reg) field as u64, in(reg) value, options(nostack)) };
}

/// VMCLEAR of the VMCS region at `pa`; false if the CPU refused.
fn vmclear(pa: u64) -> bool {
    let (cf, zf): (u8, u8);
    // SAFETY: `pa` is a VMCS region (a frame with the revision identifier)
    // owned by the caller; VMCLEAR writes its cached state back there.
    unsafe { asm!("vmclear [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    vmx_result(cf, zf).is_ok()
}

/// VMPTRLD: makes the VMCS at `pa` current on this CPU.
fn vmptrld(pa: u64) -> bool {
    let (cf, zf): (u8, u8);
    // SAFETY: as for vmclear; the VMCS is active on no other CPU.
    unsafe { asm!("vmptrld [{}]", "setc {}", "setz {}", in(reg) &pa, out(reg_byte) cf, out(reg_byte) zf, options(nostack)) };
    vmx_result(cf, zf).is_ok()
}

// ---- VMCS migration ----

/// Vector of the "VMCLEAR this VMCS" IPI a CPU sends to the one a vCPU
/// left (a VMCS is active on one CPU at a time, and only that CPU can
/// write its cached state back and forget it).
pub const VMCLEAR_VECTOR: u8 = 0xf3;
/// Per CPU: a VMCS (physical address) to VMCLEAR there, 0 = none. The
/// requester sets it, the target clears it when done.
static VMCLEAR_REQUESTS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// VMCSs loaded on a CPU other than the one they were active on (the
/// first few are logged).
static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

fn on_vmclear_ipi(_: &mut crate::arch::trap::TrapFrame) {
    serve_vmclear_request();
    crate::arch::apic::eoi();
}

/// Does the VMCLEAR another CPU asked this one for, if any.
fn serve_vmclear_request() {
    let i = this_cpu();
    let page = VMCLEAR_REQUESTS[i].load(Ordering::Acquire);
    if page != 0 {
        vmclear(page);
        let _ = CURRENT_VMCS[i].compare_exchange(page, 0, Ordering::AcqRel, Ordering::Acquire);
        VMCLEAR_REQUESTS[i].store(0, Ordering::Release);
    }
}

/// VMCLEARs `page` on CPU `cpu` and waits (up to a second) until it has.
/// Kernel code runs with interrupts off, so while waiting this CPU serves
/// requests addressed to it: two vCPUs trading CPUs do not deadlock.
fn remote_vmclear(cpu: usize, page: u64) -> bool {
    let Some(target) = crate::arch::gdt::cpu(cpu as u32) else { return false };
    let deadline = crate::time::uptime_ns() + 1_000_000_000;
    while VMCLEAR_REQUESTS[cpu].compare_exchange(0, page, Ordering::AcqRel, Ordering::Acquire).is_err() {
        serve_vmclear_request();
        if crate::time::uptime_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    crate::arch::apic::send_ipi(target.apic_id, VMCLEAR_VECTOR);
    while VMCLEAR_REQUESTS[cpu].load(Ordering::Acquire) == page {
        serve_vmclear_request();
        if crate::time::uptime_ns() > deadline {
            // Withdraw the request if it is still ours and unserved.
            return VMCLEAR_REQUESTS[cpu].compare_exchange(page, 0, Ordering::AcqRel, Ordering::Acquire).is_err();
        }
        core::hint::spin_loop();
    }
    true
}

/// INVEPT/INVVPID descriptors are 128 bits.
#[repr(C, align(16))]
struct InvDescriptor([u64; 2]);

fn invept(eptp: u64, all: bool) {
    let d = InvDescriptor([eptp, 0]);
    let kind: u64 = if all { 2 } else { 1 };
    // SAFETY: VMX is on; INVEPT only drops cached translations.
    unsafe { asm!("invept {}, [{}]", in(reg) kind, in(reg) &d, options(nostack)) };
}

fn invvpid(vpid: u16, single: bool) {
    let d = InvDescriptor([vpid as u64, 0]);
    let kind: u64 = if single { 1 } else { 2 };
    // SAFETY: VMX is on; INVVPID only drops cached translations.
    unsafe { asm!("invvpid {}, [{}]", in(reg) kind, in(reg) &d, options(nostack)) };
}

/// The longest a guest runs per entry before the preemption timer brings
/// it back (the host scheduler's tick).
const RUN_SLICE_NS: u64 = 10_000_000;

/// VPIDs for new vCPUs (1..=0xffff; 0 is the host's). A recycled VPID is
/// flushed with INVVPID before its first entry.
static NEXT_VPID: AtomicU16 = AtomicU16::new(1);

/// The MSRs switched through the VM-entry/exit MSR areas (VMX keeps no
/// guest copy of them), all of which the guest then reads and writes
/// without exits.
const SWITCHED_MSRS: [u32; 5] = [0xc000_0081, 0xc000_0082, 0xc000_0083, 0xc000_0084, 0xc000_0102];
/// MSRs whose guest values live in the VMCS guest-state area.
const VMCS_MSRS: [u32; 5] = [0x174, 0x175, 0x176, 0xc000_0100, 0xc000_0101];

/// One vCPU's VMCS and the pages it points to.
pub struct Vmcs {
    page: u64,
    msr_bitmap: u64,
    /// Guest MSR area (entry load / exit store) at 0, host (exit load) at 2 KiB.
    msr_area: u64,
    eptp: u64,
    ept_root: u64,
    vpid: u16,
    /// The CPU the VMCS is active on (it follows the vCPU world: see
    /// `move_here`). Cells: reads through `&self` may move it.
    cpu: core::cell::Cell<usize>,
    /// Launch state: VMRESUME, else VMLAUNCH (VMCLEAR resets it).
    launched: core::cell::Cell<bool>,
    /// The guest's CR2 (VMX does not switch it).
    cr2: u64,
    ctl: &'static Controls,
}

impl Vmcs {
    /// A VMCS for a guest over the EPT rooted at `ept_root`, loaded and
    /// current on this CPU, in the architectural reset state (real mode).
    pub(crate) fn new(ept_root: u64) -> Result<Vmcs, &'static str> {
        let ctl = controls()?;
        enable_this_cpu()?;
        let page = mm::alloc_frame().ok_or("no memory for a VMCS")?;
        let Some(msr_bitmap) = mm::alloc_frame() else {
            let _ = mm::free_frame(page);
            return Err("no memory for a VMCS");
        };
        let Some(msr_area) = mm::alloc_frame() else {
            let _ = mm::free_frame(page);
            let _ = mm::free_frame(msr_bitmap);
            return Err("no memory for a VMCS");
        };
        let vpid = if ctl.vpid {
            let mut v = NEXT_VPID.fetch_add(1, Ordering::Relaxed);
            if v == 0 {
                v = NEXT_VPID.fetch_add(1, Ordering::Relaxed);
            }
            v
        } else {
            0
        };
        let mut v = Vmcs { page, msr_bitmap, msr_area, eptp: x::eptp(ept_root), ept_root, vpid, cpu: core::cell::Cell::new(this_cpu()), launched: core::cell::Cell::new(false), cr2: 0, ctl };
        // SAFETY: all three pages were just allocated for this VMCS; the
        // revision identifier heads the VMCS region, the bitmap starts as
        // "intercept everything", the MSR areas get their MSR indices.
        unsafe {
            core::ptr::write_volatile(mm::phys_to_virt(page) as *mut u32, ctl.revision);
            core::ptr::write_bytes(mm::phys_to_virt(msr_bitmap) as *mut u8, 0xff, 4096);
            let area = mm::phys_to_virt(msr_area) as *mut u64;
            for (i, &m) in SWITCHED_MSRS.iter().enumerate() {
                area.add(2 * i).write_volatile(m as u64);
                area.add(256 + 2 * i).write_volatile(m as u64);
            }
        }
        for m in SWITCHED_MSRS.iter().chain(VMCS_MSRS.iter()) {
            v.pass_msr(*m);
        }
        // The region holds the right revision; VMCLEAR initializes it and
        // VMPTRLD makes it current on this CPU.
        if !vmclear(v.page) || !vmptrld(v.page) {
            return Err("VMCLEAR/VMPTRLD of a new VMCS failed");
        }
        CURRENT_VMCS[v.cpu.get()].store(v.page, Ordering::Release);
        v.setup();
        Ok(v)
    }

    fn pass_msr(&self, msr: u32) {
        let Some((rd, wr, bit)) = x::msr_bitmap_bits(msr) else { return };
        let base = mm::phys_to_virt(self.msr_bitmap);
        for off in [rd, wr] {
            // SAFETY: offsets from msr_bitmap_bits lie inside the 4 KiB
            // bitmap page this VMCS owns.
            unsafe {
                let p = (base + off as u64) as *mut u8;
                p.write_volatile(p.read_volatile() & !(1 << bit));
            }
        }
    }

    /// Makes this VMCS the current one on this CPU (another vCPU's may
    /// have been loaded since). False if the vCPU world has moved to
    /// another CPU, which a VMCS cannot follow without VMCLEAR on the old one.
    fn current(&self) -> bool {
        let i = this_cpu();
        if i != self.cpu.get() {
            return self.move_here(i);
        }
        if CURRENT_VMCS[i].load(Ordering::Acquire) != self.page {
            // Another VMCS was current here since; this one is still
            // active on this CPU only.
            if !vmptrld(self.page) {
                return false;
            }
            CURRENT_VMCS[i].store(self.page, Ordering::Release);
        }
        true
    }

    /// The vCPU world now runs on CPU `here`: VMCLEAR the VMCS on the CPU it
    /// was active on (an IPI there), then load it here, VMLAUNCH next, with
    /// this CPU's own host tables. INVEPT/INVVPID before that launch drop
    /// anything this CPU cached for the vCPU on an earlier stay.
    fn move_here(&self, here: usize) -> bool {
        let from = self.cpu.get();
        if enable_this_cpu().is_err() {
            return false;
        }
        if !remote_vmclear(from, self.page) {
            log::warn!("vmx: cpu {from} did not release a VMCS for cpu {here}");
            return false;
        }
        if !vmptrld(self.page) {
            return false;
        }
        CURRENT_VMCS[here].store(self.page, Ordering::Release);
        self.cpu.set(here);
        self.launched.set(false);
        write_host_tables();
        if MIGRATIONS.fetch_add(1, Ordering::Relaxed) < 4 {
            log::info!("vmx: a VMCS followed its vCPU from cpu {from} to cpu {here}");
        }
        true
    }

    fn r(&self, field: u32) -> u64 {
        if !self.current() {
            return 0;
        }
        vmread(field)
    }

    fn w(&self, field: u32, value: u64) {
        if self.current() {
            vmwrite(field, value);
        }
    }

    /// Controls, host state that never changes, and a guest reset state.
    fn setup(&mut self) {
        let c = self.ctl;
        vmwrite(f::PIN_BASED_CONTROLS, c.pin as u64);
        vmwrite(f::PROC_BASED_CONTROLS, c.proc1 as u64);
        vmwrite(f::SECONDARY_CONTROLS, c.proc2 as u64);
        vmwrite(f::EXIT_CONTROLS, c.exit as u64);
        vmwrite(f::ENTRY_CONTROLS, c.entry as u64);
        // #AC is intercepted and reflected: a guest must not be able to
        // wedge the CPU in an endless #AC delivery loop (CVE-2015-5307).
        // #DB too (CVE-2015-8104: a #DB raised while delivering #DB would
        // loop in the CPU without end); reflected with its DR6 bits.
        vmwrite(f::EXCEPTION_BITMAP, (1 << 17) | (1 << 1));
        vmwrite(f::PF_ERROR_CODE_MASK, 0);
        vmwrite(f::PF_ERROR_CODE_MATCH, 0);
        vmwrite(f::CR3_TARGET_COUNT, 0);
        vmwrite(f::MSR_BITMAP, self.msr_bitmap);
        vmwrite(f::ENTRY_MSR_LOAD_ADDR, self.msr_area);
        vmwrite(f::EXIT_MSR_STORE_ADDR, self.msr_area);
        vmwrite(f::EXIT_MSR_LOAD_ADDR, self.msr_area + 2048);
        for cnt in [f::ENTRY_MSR_LOAD_COUNT, f::EXIT_MSR_STORE_COUNT, f::EXIT_MSR_LOAD_COUNT] {
            vmwrite(cnt, SWITCHED_MSRS.len() as u64);
        }
        vmwrite(f::EPT_POINTER, self.eptp);
        if self.vpid != 0 {
            vmwrite(f::VPID, self.vpid as u64);
        }
        vmwrite(f::TSC_OFFSET, 0);
        vmwrite(f::CR0_GUEST_HOST_MASK, c.cr0_host_mask());
        vmwrite(f::CR4_GUEST_HOST_MASK, c.cr4_host_mask());
        vmwrite(f::ENTRY_INTERRUPTION_INFO, 0);
        vmwrite(f::TPR_THRESHOLD, 0);
        // Host state: the kernel's flat segments and this CPU's tables.
        vmwrite(f::HOST_CS_SELECTOR, crate::arch::gdt::KERNEL_CS as u64);
        for s in [f::HOST_SS_SELECTOR, f::HOST_DS_SELECTOR, f::HOST_ES_SELECTOR] {
            vmwrite(s, crate::arch::gdt::KERNEL_DS as u64);
        }
        vmwrite(f::HOST_FS_SELECTOR, 0);
        vmwrite(f::HOST_GS_SELECTOR, 0);
        vmwrite(f::HOST_TR_SELECTOR, crate::arch::gdt::TSS_SELECTOR as u64);
        write_host_tables();
        vmwrite(f::HOST_SYSENTER_CS, 0);
        vmwrite(f::HOST_SYSENTER_ESP, 0);
        vmwrite(f::HOST_SYSENTER_EIP, 0);
        // SAFETY: PAT and EFER exist on every x86-64 CPU.
        unsafe {
            vmwrite(f::HOST_PAT, cpu::rdmsr(0x277));
            vmwrite(f::HOST_EFER, cpu::rdmsr(0xc000_0080));
        }
        // Guest: the power-on state of an x86 CPU, until a loader's state
        // replaces it.
        vmwrite(f::VMCS_LINK_POINTER, u64::MAX);
        vmwrite(f::GUEST_DEBUGCTL, 0);
        vmwrite(f::GUEST_PAT, 0x0007_0406_0007_0406);
        vmwrite(f::GUEST_DR7, 0x400);
        vmwrite(f::GUEST_INTERRUPTIBILITY, 0);
        vmwrite(f::GUEST_ACTIVITY_STATE, 0);
        vmwrite(f::GUEST_PENDING_DEBUG, 0);
        vmwrite(f::GUEST_SYSENTER_CS, 0);
        vmwrite(f::GUEST_SYSENTER_ESP, 0);
        vmwrite(f::GUEST_SYSENTER_EIP, 0);
        let reset = vmkernel::vmm::loader::VcpuState::real(0, 0, 0, 0, 0);
        let mut regs = GuestRegs::default();
        self.load_state(&reset, &mut regs);
    }

    /// Host state that can differ between entries: the address space the
    /// vCPU world runs in, CR0/CR4, the FS/GS bases (user worlds set FS),
    /// and the MSRs the exit MSR area restores.
    fn refresh_host_state(&self) {
        vmwrite(f::HOST_CR0, read_cr0());
        vmwrite(f::HOST_CR3, cpu::read_cr3());
        vmwrite(f::HOST_CR4, read_cr4());
        // SAFETY: FS/GS base and the switched MSRs exist on every x86-64 CPU.
        unsafe {
            vmwrite(f::HOST_FS_BASE, cpu::rdmsr(0xc000_0100));
            vmwrite(f::HOST_GS_BASE, cpu::rdmsr(0xc000_0101));
            let host = (mm::phys_to_virt(self.msr_area) + 2048) as *mut u64;
            for (i, &m) in SWITCHED_MSRS.iter().enumerate() {
                host.add(2 * i + 1).write_volatile(cpu::rdmsr(m));
            }
        }
    }

    /// Reads guest-physical memory through the EPT (PDPTE loads).
    fn read_guest_u64(&self, gpa: u64) -> Option<u64> {
        let t = vmkernel::paging::translate(&mm::Tables, self.ept_root, gpa & !0xfff)?;
        // SAFETY: `t.phys` is a guest RAM frame of this VM (the EPT maps
        // only those), reached through the direct map; aligned 8-byte read.
        Some(unsafe { core::ptr::read_volatile((mm::phys_to_virt(t.phys) + (gpa & 0xff8)) as *const u64) })
    }

    /// After an emulated CR write: PAE paging outside long mode takes its
    /// PDPTEs from the VMCS at entry, so load them as MOV to CR would; and
    /// drop this vCPU's cached translations, as the real write would.
    fn after_cr_write(&self) {
        let (cr0, cr4, efer) = (self.ctl(Ctl::Cr0), self.ctl(Ctl::Cr4), self.ctl(Ctl::Efer));
        if x::uses_pae_pdptes(cr0, cr4, efer) {
            let base = self.r(f::GUEST_CR3) & 0xffff_ffe0;
            for i in 0..4u32 {
                let e = self.read_guest_u64(base + 8 * i as u64).unwrap_or(0);
                self.w(f::GUEST_PDPTE0 + 2 * i, e);
            }
        }
        if self.vpid != 0 {
            invvpid(self.vpid, self.ctl.invvpid_single);
        }
    }

    /// MOV to/from CR0/CR3/CR4, CLTS, LMSW: the exits the CR masks (and a
    /// CPU that forces CR3 exiting) cause. Returns the event to inject
    /// (#GP) or None when the instruction completed.
    fn cr_access(&mut self, regs: &mut GuestRegs, q: CrAccess) -> Result<(), Event> {
        let reg = |regs: &GuestRegs, g: u8| regs.gpr[g as usize];
        match q {
            CrAccess::MovTo { cr: 0, gpr } => self.write_cr0(reg(regs, gpr))?,
            CrAccess::MovTo { cr: 4, gpr } => {
                let v = reg(regs, gpr);
                let long = self.ctl(Ctl::Efer) & x::EFER_LMA != 0;
                let (old, cr3) = (self.ctl(Ctl::Cr4), self.ctl(Ctl::Cr3));
                if !self.ctl.cr4_write_allowed(v, long) || !super::cpu_model().cr4_write_allowed(old, v, long, cr3) {
                    return Err(Event::gp());
                }
                self.set_ctl(Ctl::Cr4, v);
                self.after_cr_write();
            }
            CrAccess::MovTo { cr: 3, gpr } => {
                self.w(f::GUEST_CR3, reg(regs, gpr) & !(1 << 63));
                self.after_cr_write();
            }
            CrAccess::MovFrom { cr: 3, gpr } => regs.gpr[gpr as usize] = self.r(f::GUEST_CR3),
            CrAccess::Clts => {
                let cr0 = self.ctl(Ctl::Cr0);
                self.write_cr0(cr0 & !x::cr0::TS)?;
            }
            CrAccess::Lmsw { source } => {
                let cr0 = self.ctl(Ctl::Cr0);
                self.write_cr0(x::lmsw(cr0, source))?;
            }
            _ => return Err(Event::ud()),
        }
        Ok(())
    }

    fn write_cr0(&mut self, v: u64) -> Result<(), Event> {
        let (efer, cr4) = (self.ctl(Ctl::Efer), self.ctl(Ctl::Cr4));
        if !x::cr0_write_allowed(v, efer, cr4) {
            return Err(Event::gp());
        }
        self.set_ctl(Ctl::Cr0, v);
        // Paging on or off with EFER.LME enters or leaves long mode.
        self.set_ctl(Ctl::Efer, efer);
        self.after_cr_write();
        Ok(())
    }

    fn skip_instruction(&mut self) {
        let rip = self.rip();
        let len = self.r(f::EXIT_INSTRUCTION_LENGTH);
        self.set_rip(rip + len);
    }

    /// The guest state that entry checks, for the log when entry fails.
    fn log_guest_state(&self, what: &str) {
        log::warn!(
            "vmx: {what}: rip {:#x} rflags {:#x} cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x} entry {:#x} cs {:#x}/{:#x} ss {:#x}/{:#x} tr {:#x}/{:#x} ldtr {:#x} intr {:#x} info {:#x}",
            self.r(f::GUEST_RIP),
            self.r(f::GUEST_RFLAGS),
            self.r(f::GUEST_CR0),
            self.r(f::GUEST_CR3),
            self.r(f::GUEST_CR4),
            self.r(f::GUEST_EFER),
            self.r(f::ENTRY_CONTROLS),
            self.r(f::GUEST_CS_SELECTOR),
            self.r(f::GUEST_CS_ACCESS_RIGHTS),
            self.r(f::GUEST_SS_SELECTOR),
            self.r(f::GUEST_SS_ACCESS_RIGHTS),
            self.r(f::GUEST_TR_SELECTOR),
            self.r(f::GUEST_TR_ACCESS_RIGHTS),
            self.r(f::GUEST_LDTR_ACCESS_RIGHTS),
            self.r(f::GUEST_INTERRUPTIBILITY),
            self.r(f::ENTRY_INTERRUPTION_INFO),
        );
    }
}

/// The GDT and IDT bases of this CPU (SGDT/SIDT).
/// This CPU's TSS, GDT and IDT bases into the current VMCS's host state.
fn write_host_tables() {
    vmwrite(f::HOST_TR_BASE, crate::arch::gdt::tss_base());
    let (gdt, idt) = descriptor_tables();
    vmwrite(f::HOST_GDTR_BASE, gdt);
    vmwrite(f::HOST_IDTR_BASE, idt);
}

fn descriptor_tables() -> (u64, u64) {
    #[repr(C, packed)]
    struct Dtr {
        limit: u16,
        base: u64,
    }
    let mut g = Dtr { limit: 0, base: 0 };
    let mut i = Dtr { limit: 0, base: 0 };
    // SAFETY: SGDT/SIDT store 10 bytes into the given locals.
    unsafe {
        asm!("sgdt [{}]", in(reg) &mut g, options(nostack));
        asm!("sidt [{}]", in(reg) &mut i, options(nostack));
    }
    (g.base, i.base)
}

impl Drop for Vmcs {
    fn drop(&mut self) {
        // VMCLEAR on the CPU where it is active, so the processor forgets it.
        let cpu = self.cpu.get();
        if this_cpu() == cpu {
            vmclear(self.page);
            let _ = CURRENT_VMCS[cpu].compare_exchange(self.page, 0, Ordering::AcqRel, Ordering::Acquire);
        } else if !remote_vmclear(cpu, self.page) {
            // Leaking the page is safer than freeing memory a CPU may
            // still write back.
            log::warn!("vmx: VMCS dropped on cpu {} but cpu {cpu} did not release it: leaking it", this_cpu());
            let _ = mm::free_frame(self.msr_bitmap);
            let _ = mm::free_frame(self.msr_area);
            return;
        }
        let _ = mm::free_frame(self.page);
        let _ = mm::free_frame(self.msr_bitmap);
        let _ = mm::free_frame(self.msr_area);
    }
}

struct SegFields {
    sel: u32,
    base: u32,
    limit: u32,
    ar: u32,
}

fn seg_fields(s: SegReg) -> SegFields {
    let (sel, base, limit, ar) = match s {
        SegReg::Es => (f::GUEST_ES_SELECTOR, f::GUEST_ES_BASE, f::GUEST_ES_LIMIT, f::GUEST_ES_ACCESS_RIGHTS),
        SegReg::Cs => (f::GUEST_CS_SELECTOR, f::GUEST_CS_BASE, f::GUEST_CS_LIMIT, f::GUEST_CS_ACCESS_RIGHTS),
        SegReg::Ss => (f::GUEST_SS_SELECTOR, f::GUEST_SS_BASE, f::GUEST_SS_LIMIT, f::GUEST_SS_ACCESS_RIGHTS),
        SegReg::Ds => (f::GUEST_DS_SELECTOR, f::GUEST_DS_BASE, f::GUEST_DS_LIMIT, f::GUEST_DS_ACCESS_RIGHTS),
        SegReg::Fs => (f::GUEST_FS_SELECTOR, f::GUEST_FS_BASE, f::GUEST_FS_LIMIT, f::GUEST_FS_ACCESS_RIGHTS),
        SegReg::Gs => (f::GUEST_GS_SELECTOR, f::GUEST_GS_BASE, f::GUEST_GS_LIMIT, f::GUEST_GS_ACCESS_RIGHTS),
        SegReg::Ldtr => (f::GUEST_LDTR_SELECTOR, f::GUEST_LDTR_BASE, f::GUEST_LDTR_LIMIT, f::GUEST_LDTR_ACCESS_RIGHTS),
        SegReg::Tr => (f::GUEST_TR_SELECTOR, f::GUEST_TR_BASE, f::GUEST_TR_LIMIT, f::GUEST_TR_ACCESS_RIGHTS),
    };
    SegFields { sel, base, limit, ar }
}

impl VcpuHw for Vmcs {
    fn run(&mut self, regs: &mut GuestRegs, fpu: &mut crate::arch::context::FpuState) -> Exit {
        if !self.current() {
            log::warn!("vmx: vCPU on cpu {}: its VMCS (active on cpu {}) could not be loaded", this_cpu(), self.cpu.get());
            return Exit::EntryFailed { code: u64::MAX };
        }
        if !self.launched.get() {
            // The EPT root and the VPID may have served an earlier VM.
            invept(self.eptp, self.ctl.invept_all);
            if self.vpid != 0 {
                invvpid(self.vpid, self.ctl.invvpid_single);
            }
        }
        self.refresh_host_state();
        if let Some(t) = self.ctl.preemption_timer_value(RUN_SLICE_NS, crate::time::tsc_hz()) {
            vmwrite(f::GUEST_PREEMPTION_TIMER, t as u64);
        }
        vmwrite(f::GUEST_RSP, regs.gpr[RSP]);
        // SAFETY: this vCPU's VMCS is current on this CPU with complete
        // host state; the stub saves and restores every host register and
        // runs with interrupts off (external interrupts exit). CR2 is the
        // guest's from here to the exit; kernel code in between never
        // page-faults.
        let failed = unsafe {
            asm!("mov cr2, {}", in(reg) self.cr2, options(nostack));
            let r = vmx_run(regs, self.launched.get() as u64, fpu.area_mut().as_mut_ptr(), super::vcpu::guest_xsave_mask());
            let cr2: u64;
            asm!("mov {}, cr2", out(reg) cr2, options(nostack));
            self.cr2 = cr2;
            r
        };
        if failed != 0 {
            let err = if failed == 2 { vmread(f::VM_INSTRUCTION_ERROR) } else { u64::MAX };
            self.log_guest_state(&alloc::format!("VM entry failed (VM-instruction error {err})"));
            return Exit::EntryFailed { code: 0x1000 | err };
        }
        self.launched.set(true);
        regs.gpr[RSP] = vmread(f::GUEST_RSP);
        let reason = vmread(f::EXIT_REASON);
        // An exit while an event was being delivered: deliver it again.
        let idt = vmread(f::IDT_VECTORING_INFO) as u32;
        if let Some(info) = x::reinject(idt) {
            vmwrite(f::ENTRY_INTERRUPTION_INFO, info as u64);
            if info & intr_info::ERROR_CODE_VALID != 0 {
                vmwrite(f::ENTRY_EXCEPTION_ERROR_CODE, vmread(f::IDT_VECTORING_ERROR_CODE));
            }
        }
        if reason & (1 << 31) != 0 {
            self.log_guest_state(&alloc::format!("VM entry failed (exit reason {reason:#x})"));
            return Exit::EntryFailed { code: reason };
        }
        let q = vmread(f::EXIT_QUALIFICATION);
        use x::reason as r;
        match reason as u16 {
            // A slice used up counts as the host's timer tick would.
            r::EXTERNAL_INTERRUPT | r::PREEMPTION_TIMER => Exit::ExternalInterrupt,
            r::EXCEPTION_OR_NMI => {
                let info = vmread(f::EXIT_INTERRUPTION_INFO) as u32;
                if intr_info::kind(info) == intr_info::TYPE_NMI {
                    // The NMI was the host's: hand it to the host's handler.
                    // SAFETY: vector 2 is the kernel's NMI gate (IST stack).
                    unsafe { asm!("int 2", options(nostack)) };
                    return Exit::Nmi;
                }
                if info as u8 == 1 {
                    // The exit qualification holds B0-B3, BD and BS.
                    return Exit::DebugTrap { dr6: q & 0x600f };
                }
                let error_code = (info & intr_info::ERROR_CODE_VALID != 0).then(|| vmread(f::EXIT_INTERRUPTION_ERROR_CODE) as u32);
                Exit::Exception { vector: info as u8, error_code }
            }
            r::TRIPLE_FAULT => Exit::Shutdown,
            r::INIT => Exit::Init,
            r::INTERRUPT_WINDOW => Exit::InterruptWindow,
            r::NMI_WINDOW => Exit::NmiWindow,
            r::CPUID => Exit::Cpuid,
            r::HLT => Exit::Hlt,
            r::PAUSE => Exit::Pause,
            r::VMCALL => Exit::Hypercall,
            r::RDMSR => Exit::Msr { write: false },
            r::WRMSR => Exit::Msr { write: true },
            r::IO_INSTRUCTION => {
                let io = x::io_qualification(q);
                let next_rip = self.rip() + vmread(f::EXIT_INSTRUCTION_LENGTH);
                Exit::Io { port: io.port, size: io.size, input: io.input, string: io.string, rep: io.rep, next_rip }
            }
            r::EPT_VIOLATION => Exit::NestedPageFault { gpa: vmread(f::GUEST_PHYSICAL_ADDRESS), write: q & 2 != 0 },
            r::XSETBV => Exit::Xsetbv,
            r::CR_ACCESS => match x::cr_access(q) {
                CrAccess::MovTo { cr: 8, gpr } => Exit::Cr8 { write: true, gpr, next_rip: self.rip() + vmread(f::EXIT_INSTRUCTION_LENGTH) },
                CrAccess::MovFrom { cr: 8, gpr } => Exit::Cr8 { write: false, gpr, next_rip: self.rip() + vmread(f::EXIT_INSTRUCTION_LENGTH) },
                access => {
                    match self.cr_access(regs, access) {
                        Ok(()) => self.skip_instruction(),
                        Err(e) => self.inject(e),
                    }
                    Exit::Handled
                }
            },
            r::DR_ACCESS => {
                let a = x::dr_access(q);
                let next_rip = self.rip() + vmread(f::EXIT_INSTRUCTION_LENGTH);
                Exit::MovDr { write: a.write, dr: a.dr, operand: Some((a.gpr, next_rip)) }
            }
            r::INVD | r::WBINVD => {
                // Caches are the host's business: nothing to do.
                self.skip_instruction();
                Exit::Handled
            }
            // Instructions the virtual CPU does not offer (CPUID says so).
            r::GETSEC | r::MWAIT | r::MONITOR | r::INVEPT | r::INVVPID | r::VMFUNC | r::VMCLEAR..=r::VMXON => {
                self.inject(Event::ud());
                Exit::Handled
            }
            r::RDPMC => {
                self.inject(Event::gp());
                Exit::Handled
            }
            other => Exit::Other { code: other as u64, info1: q, info2: vmread(f::GUEST_PHYSICAL_ADDRESS) },
        }
    }
    fn rip(&self) -> u64 {
        self.r(f::GUEST_RIP)
    }
    fn set_rip(&mut self, rip: u64) {
        self.w(f::GUEST_RIP, rip);
        // Completing an instruction ends an STI/MOV SS shadow.
        let i = self.r(f::GUEST_INTERRUPTIBILITY);
        if i & 3 != 0 {
            self.w(f::GUEST_INTERRUPTIBILITY, i & !3);
        }
    }
    fn rflags(&self) -> u64 {
        self.r(f::GUEST_RFLAGS)
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.w(f::GUEST_RFLAGS, rflags | 2);
    }
    fn ctl(&self, reg: Ctl) -> u64 {
        match reg {
            Ctl::Cr0 => {
                let m = self.ctl.cr0_host_mask();
                (self.r(f::GUEST_CR0) & !m) | (self.r(f::CR0_READ_SHADOW) & m)
            }
            Ctl::Cr2 => self.cr2,
            Ctl::Cr3 => self.r(f::GUEST_CR3),
            Ctl::Cr4 => {
                let m = self.ctl.cr4_host_mask();
                (self.r(f::GUEST_CR4) & !m) | (self.r(f::CR4_READ_SHADOW) & m)
            }
            Ctl::Efer => self.r(f::GUEST_EFER),
            Ctl::Pat => self.r(f::GUEST_PAT),
            Ctl::TscOffset => self.r(f::TSC_OFFSET),
            Ctl::Dr7 => self.r(f::GUEST_DR7),
        }
    }
    fn set_ctl(&mut self, reg: Ctl, value: u64) {
        match reg {
            Ctl::Cr0 => {
                self.w(f::CR0_READ_SHADOW, value);
                self.w(f::GUEST_CR0, self.ctl.cr0_for_guest(value));
            }
            Ctl::Cr2 => self.cr2 = value,
            Ctl::Cr3 => self.w(f::GUEST_CR3, value),
            Ctl::Cr4 => {
                self.w(f::CR4_READ_SHADOW, value);
                self.w(f::GUEST_CR4, self.ctl.cr4_for_guest(value));
            }
            Ctl::Efer => {
                // LMA follows LME and CR0.PG, as the processor derives it;
                // the "IA-32e mode guest" entry control must agree.
                let efer = x::efer_with_lma(value, self.r(f::GUEST_CR0));
                self.w(f::GUEST_EFER, efer);
                let entry = self.r(f::ENTRY_CONTROLS) & !(x::entry_ctl::IA32E_MODE_GUEST as u64);
                let ia32e = if efer & x::EFER_LMA != 0 { x::entry_ctl::IA32E_MODE_GUEST as u64 } else { 0 };
                self.w(f::ENTRY_CONTROLS, entry | ia32e);
            }
            Ctl::Pat => self.w(f::GUEST_PAT, value),
            Ctl::TscOffset => self.w(f::TSC_OFFSET, value),
            Ctl::Dr7 => self.w(f::GUEST_DR7, value),
        }
    }
    fn segment(&self, s: SegReg) -> Segment {
        let fl = seg_fields(s);
        Segment {
            selector: self.r(fl.sel) as u16,
            base: self.r(fl.base),
            limit: self.r(fl.limit) as u32,
            attr: x::attr_from_access_rights(self.r(fl.ar) as u32),
        }
    }
    fn set_segment(&mut self, s: SegReg, seg: Segment) {
        let fl = seg_fields(s);
        self.w(fl.sel, seg.selector as u64);
        self.w(fl.base, seg.base);
        self.w(fl.limit, seg.limit as u64);
        self.w(fl.ar, x::access_rights(seg.attr) as u64);
    }
    fn set_gdtr(&mut self, t: TableRegister) {
        self.w(f::GUEST_GDTR_BASE, t.base);
        self.w(f::GUEST_GDTR_LIMIT, t.limit as u64);
    }
    fn set_idtr(&mut self, t: TableRegister) {
        self.w(f::GUEST_IDTR_BASE, t.base);
        self.w(f::GUEST_IDTR_LIMIT, t.limit as u64);
    }
    fn interrupt_shadow(&self) -> bool {
        x::in_interrupt_shadow(self.r(f::GUEST_INTERRUPTIBILITY) as u32)
    }
    fn event_pending(&self) -> bool {
        self.r(f::ENTRY_INTERRUPTION_INFO) as u32 & intr_info::VALID != 0
    }
    fn inject(&mut self, e: Event) {
        let (info, ec) = match e {
            Event::ExternalInterrupt(v) => (v as u32 | intr_info::TYPE_EXTERNAL, None),
            Event::Nmi => (2 | intr_info::TYPE_NMI, None),
            Event::Exception { vector, error_code } => {
                let ev = if error_code.is_some() { intr_info::ERROR_CODE_VALID } else { 0 };
                (vector as u32 | intr_info::TYPE_HARDWARE_EXCEPTION | ev, error_code)
            }
        };
        if let Some(ec) = ec {
            self.w(f::ENTRY_EXCEPTION_ERROR_CODE, ec as u64);
        }
        self.w(f::ENTRY_INTERRUPTION_INFO, (info | intr_info::VALID) as u64);
    }
    fn nmi_blocked(&self) -> bool {
        // Blocking by NMI (interruptibility bit 3): virtual-NMI blocking,
        // from an injected NMI to the guest's IRET.
        self.ctl.virtual_nmis && self.r(f::GUEST_INTERRUPTIBILITY) & 8 != 0
    }
    fn set_nmi_window(&mut self, on: bool) {
        if !self.ctl.virtual_nmis {
            return;
        }
        let p = self.r(f::PROC_BASED_CONTROLS);
        let bit = x::proc1::NMI_WINDOW_EXITING as u64;
        self.w(f::PROC_BASED_CONTROLS, if on { p | bit } else { p & !bit });
    }
    fn set_interrupt_window(&mut self, on: bool) {
        let p = self.r(f::PROC_BASED_CONTROLS);
        let bit = x::proc1::INTERRUPT_WINDOW_EXITING as u64;
        self.w(f::PROC_BASED_CONTROLS, if on { p | bit } else { p & !bit });
    }
    fn host_frames(&self) -> usize {
        3
    }

}

/// VMLAUNCH (first entry) or VMRESUME with the guest GPRs loaded from and
/// stored to `regs` and its extended state from `fpu` (XSAVE with
/// `xsave_mask`, or FXSAVE when it is 0). Returns 0 after a VM
/// exit, 1 or 2 when the instruction itself failed (VMfailInvalid /
/// VMfailValid). HOST_RSP is this stub's stack with `regs` and `fpu` on
/// top; HOST_RIP is the exit label below.
#[unsafe(naked)]
unsafe extern "C" fn vmx_run(regs: *mut GuestRegs, launched: u64, fpu: *mut u8, xsave_mask: u64) -> u64 {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "push rcx", // XSAVE mask (0: FXSAVE)
        "push rdx", // guest FPU area
        "push rdi", // regs
        "mov rax, 0x6c14", // HOST_RSP
        "vmwrite rax, rsp",
        "lea r11, [rip + 4f]",
        "mov rax, 0x6c16", // HOST_RIP
        "vmwrite rax, r11",
        "test rcx, rcx",
        "jz 6f",
        "mov rax, rcx",
        "mov rbx, rdx",
        "mov rdx, rcx",
        "shr rdx, 32",
        "xrstor64 [rbx]",
        "jmp 7f",
        "6:",
        "fxrstor64 [rdx]",
        "7:",
        "test rsi, rsi",
        "mov rax, [rdi + 0x00]",
        "mov rcx, [rdi + 0x08]",
        "mov rdx, [rdi + 0x10]",
        "mov rbx, [rdi + 0x18]",
        "mov rbp, [rdi + 0x28]",
        "mov rsi, [rdi + 0x30]",
        "mov r8,  [rdi + 0x40]",
        "mov r9,  [rdi + 0x48]",
        "mov r10, [rdi + 0x50]",
        "mov r11, [rdi + 0x58]",
        "mov r12, [rdi + 0x60]",
        "mov r13, [rdi + 0x68]",
        "mov r14, [rdi + 0x70]",
        "mov r15, [rdi + 0x78]",
        "mov rdi, [rdi + 0x38]",
        // IF=1 at entry (in STI's one-instruction shadow, so no interrupt
        // is taken in between): the guest's RFLAGS replace it anyway, and
        // Bochs only re-evaluates interrupt masking when IF changes at
        // entry — entering with IF=0 into a guest with IF=0 would leave
        // host interrupts masked and a `cli; jmp $` guest unpreemptible.
        "jnz 2f",
        "sti",
        "vmlaunch",
        "jmp 3f",
        "2:",
        "sti",
        "vmresume",
        "3:",
        // The entry instruction failed: CF=1 invalid, ZF=1 valid (error
        // field). Interrupts off again before anything else.
        "cli",
        "mov eax, 1",
        "mov ecx, 2",
        "cmovz eax, ecx",
        "pop rdi",
        "pop rdx",
        "pop rcx",
        "jmp 5f",
        "4:",
        // VM exit: RSP = HOST_RSP, RFLAGS = 2, guest GPRs live.
        "push rdi",
        "mov rdi, [rsp + 8]",
        "mov [rdi + 0x00], rax",
        "mov [rdi + 0x08], rcx",
        "mov [rdi + 0x10], rdx",
        "mov [rdi + 0x18], rbx",
        "mov [rdi + 0x28], rbp",
        "mov [rdi + 0x30], rsi",
        "mov [rdi + 0x40], r8",
        "mov [rdi + 0x48], r9",
        "mov [rdi + 0x50], r10",
        "mov [rdi + 0x58], r11",
        "mov [rdi + 0x60], r12",
        "mov [rdi + 0x68], r13",
        "mov [rdi + 0x70], r14",
        "mov [rdi + 0x78], r15",
        "pop rax",
        "mov [rdi + 0x38], rax",
        "pop rdi",
        "pop rcx", // guest FPU area
        "pop rax", // XSAVE mask
        "test rax, rax",
        "jz 8f",
        "mov rdx, rax",
        "shr rdx, 32",
        "xsave64 [rcx]",
        "jmp 9f",
        "8:",
        "fxsave64 [rcx]",
        "9:",
        "xor eax, eax",
        "5:",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}
