//! Per-CPU data, GDT and TSS.
//!
//! Each CPU gets one leaked [`PerCpu`] block holding its GDT, TSS and
//! interrupt stacks; `IA32_GS_BASE` points at it so `this_cpu()` is one
//! `gs`-relative load. Selector layout (fixed by SYSCALL/SYSRET):
//! 0x08 kernel code, 0x10 kernel data, 0x18 user data, 0x20 user code,
//! 0x28 TSS.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use super::cpu;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
pub const TSS_SELECTOR: u16 = 0x28;

/// IST slots (1-based in the IDT, 0-based in the TSS table).
pub const IST_NMI: u16 = 1;
pub const IST_DOUBLE_FAULT: u16 = 2;
pub const IST_MACHINE_CHECK: u16 = 3;
const IST_STACK_SIZE: usize = 16 * 1024;

const IA32_GS_BASE: u32 = 0xc000_0101;

#[repr(C)]
pub struct PerCpu {
    /// Points at itself, so `gs:[0]` yields the block's address.
    self_ptr: *const PerCpu,
    pub index: u32,
    pub apic_id: u32,
    /// gs:[16]: top of the running world's kernel stack (SYSCALL entry).
    kernel_rsp: core::sync::atomic::AtomicU64,
    /// gs:[24]: scratch slot for the user RSP during SYSCALL entry.
    user_rsp_scratch: u64,
    /// gs:[32]: the running world's extended-state save area, which the
    /// entry stubs fill on every entry from ring 3 and reload on the way
    /// back — in assembly, before any compiled code can touch an XMM register.
    fpu_area: core::sync::atomic::AtomicU64,
    /// gs:[40]: nonzero when XSAVE/XRSTOR are used (else FXSAVE/FXRSTOR).
    use_xsave: core::sync::atomic::AtomicU64,
    /// gs:[48]: nonzero while the running world is in a system call whose
    /// entry saved only what kernel code clobbers (XMM0-15 and MXCSR, into
    /// the area): the rest of its user extended state (x87, the upper
    /// halves of the YMM registers) is still in the registers and the
    /// area's copy of it is stale (`context::save_live_user_state`).
    fpu_live: core::sync::atomic::AtomicU64,
    /// gs:[56]: physical address of this CPU's SVM host state area (the
    /// one VMSAVE/VMLOAD keep the host's FS/GS/TR/syscall MSRs in), 0 until
    /// SVM is enabled on this CPU: one `gs`-relative load per guest entry.
    svm_host_area: core::sync::atomic::AtomicU64,
    /// Written only by this CPU (RSP0 on every world switch); read by the
    /// CPU on privilege changes.
    tss: core::cell::UnsafeCell<TaskStateSegment>,
    gdt: GlobalDescriptorTable,
    /// LAPIC timer ticks taken on this CPU.
    pub ticks: core::sync::atomic::AtomicU64,
}

// SAFETY: the raw self pointer is only ever read; all mutable state is atomic.
unsafe impl Sync for PerCpu {}

/// Offsets used by the SYSCALL entry stub (checked at compile time below).
pub const PERCPU_KERNEL_RSP: usize = 16;
pub const PERCPU_USER_RSP: usize = 24;
pub const PERCPU_FPU_AREA: usize = 32;
pub const PERCPU_USE_XSAVE: usize = 40;
pub const PERCPU_FPU_LIVE: usize = 48;
pub const PERCPU_SVM_HOST_AREA: usize = 56;
const _: () = assert!(core::mem::offset_of!(PerCpu, svm_host_area) == PERCPU_SVM_HOST_AREA);
const _: () = assert!(core::mem::offset_of!(PerCpu, fpu_live) == PERCPU_FPU_LIVE);
const _: () = assert!(core::mem::offset_of!(PerCpu, fpu_area) == PERCPU_FPU_AREA);
const _: () = assert!(core::mem::offset_of!(PerCpu, use_xsave) == PERCPU_USE_XSAVE);
const _: () = assert!(core::mem::offset_of!(PerCpu, kernel_rsp) == PERCPU_KERNEL_RSP);
const _: () = assert!(core::mem::offset_of!(PerCpu, user_rsp_scratch) == PERCPU_USER_RSP);

static PERCPU_READY: AtomicBool = AtomicBool::new(false);
static CPUS_ONLINE: AtomicU32 = AtomicU32::new(0);

pub use crate::cpu::MAX_CPUS;

/// Every online CPU's block by index, so one CPU can look at another's
/// counters (tests, statistics) and IPIs can name a CPU by index.
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] = [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

fn ist_stack() -> VirtAddr {
    let stack = Box::leak(alloc::vec![0u8; IST_STACK_SIZE].into_boxed_slice());
    VirtAddr::from_ptr(stack.as_ptr()) + IST_STACK_SIZE as u64
}

/// Sets up and loads this CPU's GDT, TSS and per-CPU block. Called once per
/// CPU, by the BSP after the heap exists and by each AP as it starts.
pub fn init_this_cpu(index: u32, apic_id: u32) -> &'static PerCpu {
    let mut tss = TaskStateSegment::new();
    tss.interrupt_stack_table[(IST_NMI - 1) as usize] = ist_stack();
    tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = ist_stack();
    tss.interrupt_stack_table[(IST_MACHINE_CHECK - 1) as usize] = ist_stack();
    let pc: &'static mut PerCpu = Box::leak(Box::new(PerCpu {
        self_ptr: core::ptr::null(),
        index,
        apic_id,
        kernel_rsp: core::sync::atomic::AtomicU64::new(0),
        user_rsp_scratch: 0,
        fpu_area: core::sync::atomic::AtomicU64::new(0),
        use_xsave: core::sync::atomic::AtomicU64::new(0),
        fpu_live: core::sync::atomic::AtomicU64::new(0),
        svm_host_area: core::sync::atomic::AtomicU64::new(0),
        tss: core::cell::UnsafeCell::new(tss),
        gdt: GlobalDescriptorTable::new(),
        ticks: core::sync::atomic::AtomicU64::new(0),
    }));
    pc.self_ptr = pc as *const PerCpu;
    let kcode = pc.gdt.append(Descriptor::kernel_code_segment());
    let kdata = pc.gdt.append(Descriptor::kernel_data_segment());
    pc.gdt.append(Descriptor::user_data_segment());
    pc.gdt.append(Descriptor::user_code_segment());
    // SAFETY: the TSS lives in the leaked per-CPU block, i.e. forever.
    let tss_ref: &'static TaskStateSegment = unsafe { &*pc.tss.get() };
    let tss_sel = pc.gdt.append(Descriptor::tss_segment(tss_ref));
    debug_assert_eq!(kcode, SegmentSelector(KERNEL_CS));
    debug_assert_eq!(kdata, SegmentSelector(KERNEL_DS));
    let pc: &'static PerCpu = pc;
    pc.gdt.load();
    // SAFETY: the selectors name the descriptors just loaded; GS base points
    // at a block that is never freed.
    unsafe {
        CS::set_reg(kcode);
        SS::set_reg(kdata);
        DS::set_reg(kdata);
        ES::set_reg(kdata);
        load_tss(tss_sel);
        cpu::wrmsr(IA32_GS_BASE, pc as *const PerCpu as u64);
    }
    if let Some(slot) = CPUS.get(index as usize) {
        slot.store(pc as *const PerCpu as *mut PerCpu, Ordering::Release);
    }
    if index == 0 {
        PERCPU_READY.store(true, Ordering::Release);
    }
    CPUS_ONLINE.fetch_add(1, Ordering::AcqRel);
    pc
}

/// Sets the stack the CPU switches to on an interrupt or exception from
/// ring 3 (TSS.RSP0): the running world's kernel stack.
pub fn set_kernel_stack(top: u64) {
    if let Some(c) = this_cpu() {
        // SAFETY: only this CPU writes its own TSS, with interrupts off; the
        // CPU reads RSP0 only when entering ring 0 from ring 3.
        unsafe { (*c.tss.get()).privilege_stack_table[0] = VirtAddr::new(top) };
        c.kernel_rsp.store(top, Ordering::Relaxed);
    }
}

/// The linear address of this CPU's TSS (VMX host state needs it).
pub fn tss_base() -> u64 {
    this_cpu().map_or(0, |c| c.tss.get() as u64)
}

/// Points the entry stubs at an extended-state area and save method. Only
/// `context::switch_fpu_area` calls this: it first saves the outgoing
/// world's user state still in the registers.
pub fn set_fpu_area(area: u64, use_xsave: bool) {
    if let Some(c) = this_cpu() {
        c.fpu_area.store(area, Ordering::Relaxed);
        c.use_xsave.store(use_xsave as u64, Ordering::Relaxed);
    }
}

impl PerCpu {
    /// See the `fpu_live` field.
    pub fn user_state_live(&self) -> bool {
        self.fpu_live.load(Ordering::Relaxed) != 0
    }

    /// The running world's extended-state save area.
    pub fn fpu_area(&self) -> u64 {
        self.fpu_area.load(Ordering::Relaxed)
    }
}

/// Records this CPU's SVM host state area (`hv::svm::enable_this_cpu`).
pub fn set_svm_host_area(pa: u64) {
    if let Some(c) = this_cpu() {
        c.svm_host_area.store(pa, Ordering::Release);
    }
}

/// This CPU's SVM host state area, 0 while SVM is not enabled here (or
/// before per-CPU data exists: only the BSP runs then, without guests).
#[inline(always)]
pub fn svm_host_area() -> u64 {
    if !PERCPU_READY.load(Ordering::Relaxed) {
        return 0;
    }
    let pa: u64;
    // SAFETY: once PERCPU_READY is set GS base points at this CPU's block
    // (see `this_cpu`); the slot is an aligned u64 written only by this CPU.
    unsafe { core::arch::asm!("mov {}, gs:[{off}]", out(reg) pa, off = const PERCPU_SVM_HOST_AREA, options(nostack, readonly, preserves_flags)) };
    pa
}

/// This CPU's per-CPU block.
pub fn this_cpu() -> Option<&'static PerCpu> {
    if !PERCPU_READY.load(Ordering::Acquire) {
        return None;
    }
    let p: *const PerCpu;
    // SAFETY: once PERCPU_READY is set every CPU that runs kernel code has
    // loaded GS base with its own block (APs do it before anything else).
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags));
        p.as_ref()
    }
}

/// Index of the running CPU (0 before per-CPU data exists: only the BSP runs then).
pub fn cpu_index() -> u32 {
    this_cpu().map_or(0, |c| c.index)
}

pub fn cpus_online() -> u32 {
    CPUS_ONLINE.load(Ordering::Acquire)
}

/// The per-CPU block of CPU `index`, once that CPU is online.
pub fn cpu(index: u32) -> Option<&'static PerCpu> {
    let p = CPUS.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null entries point at leaked, never-freed blocks.
    unsafe { p.as_ref() }
}

