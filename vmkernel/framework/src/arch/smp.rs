//! Starting the application processors.
//!
//! The BSP copies a trampoline to the fixed page [`TRAMPOLINE_PHYS`] (below
//! 1 MiB, never handed out by the frame allocator) and wakes each AP the
//! MADT lists with INIT, 10 ms, SIPI, 200 µs, SIPI. The AP starts in real
//! mode at that page, goes through protected mode into long mode on a
//! trampoline PML4 (identity map of the low 2 MiB for the trampoline
//! itself, the kernel's upper half copied), jumps to the kernel in the
//! higher half, switches to the kernel PML4 (whose lower half is empty) and
//! calls [`ap_entry`] on its own 64 KiB heap stack.
//!
//! The APs start one at a time: they share the trampoline's parameter
//! block. An AP claims its stack with an atomic exchange, so one that wakes
//! up late (after the BSP gave up on it) parks itself instead of sharing a
//! stack with the next AP.

use core::arch::{global_asm, naked_asm};
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use vmkernel::apic_regs::{Icr, startup_vector};

use super::{apic, cpu, gdt, trap};
use crate::acpi::Platform;
use crate::{mm, time};

/// Where the trampoline runs (SIPI vector 0x08).
pub const TRAMPOLINE_PHYS: u64 = 0x8000;
const AP_STACK_SIZE: usize = 64 * 1024;
/// Generous: Bochs runs a few tens of MIPS and logs through a slow UART.
const AP_START_TIMEOUT_US: u64 = 5_000_000;

/// The trampoline's parameter block, filled by the BSP for each AP
/// (layout shared with the assembly below through `offset_of!`).
#[repr(C)]
struct ApParams {
    /// Physical address of the trampoline PML4 (below 4 GiB: loaded in
    /// 32-bit mode).
    pml4: u64,
    /// The kernel's PML4, loaded once the AP runs in the higher half.
    kernel_pml4: u64,
    /// Top of the AP's stack; the AP swaps it with 0 to claim it.
    stack: u64,
    /// CPU index handed to `ap_entry`.
    index: u64,
    /// Higher-half address of `ap_long_entry`.
    entry: u64,
}

global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_params
ap_trampoline_start:
    .code16
    cli
    cld
    /* Normalise CS:IP from 0x0800:0000 to 0000:8000 so that label
       offsets below are plain addresses. */
    ljmp $0, ${base} + (ap_rm - ap_trampoline_start)
ap_rm:
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    lgdtl {base} + (ap_gdt_ptr32 - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x18, ${base} + (ap_pm - ap_trampoline_start)

    .code32
ap_pm:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    /* CR4: PAE, PGE, OSFXSR, OSXMMEXCPT (SSE before any Rust code). */
    mov $((1 << 5) | (1 << 7) | (1 << 9) | (1 << 10)), %eax
    mov %eax, %cr4
    mov {base} + (ap_params - ap_trampoline_start) + {off_pml4}, %eax
    mov %eax, %cr3
    /* EFER: LME, NXE (the kernel's tables use NX). */
    mov $0xc0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    /* CR0 = PG | WP | NE | ET | MP | PE: also clears CD/NW left set by
       INIT, and EM/TS (SSE). */
    mov $0x80010033, %eax
    mov %eax, %cr0
    ljmp $0x08, ${base} + (ap_lm - ap_trampoline_start)

    .code64
ap_lm:
    /* Reload the GDT through its direct-map alias: the identity map goes
       away with the switch to the kernel PML4. */
    lgdt {base} + (ap_gdt_ptr64 - ap_trampoline_start)
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    /* Claim the stack; 0 means it is not ours (a late start): park. */
    xor %eax, %eax
    lock xchg %rax, {base} + (ap_params - ap_trampoline_start) + {off_stack}
    test %rax, %rax
    jz ap_park
    mov %rax, %rsp
    mov {base} + (ap_params - ap_trampoline_start) + {off_index}, %rdi
    mov {base} + (ap_params - ap_trampoline_start) + {off_kpml4}, %rsi
    mov {base} + (ap_params - ap_trampoline_start) + {off_entry}, %rax
    jmp *%rax
ap_park:
    cli
    hlt
    jmp ap_park

    .balign 8
ap_gdt:
    .quad 0
    .quad 0x00af9a000000ffff   /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: data */
    .quad 0x00cf9a000000ffff   /* 0x18: 32-bit code */
ap_gdt_end:
ap_gdt_ptr32:
    .short ap_gdt_end - ap_gdt - 1
    .long {base} + (ap_gdt - ap_trampoline_start)
    .balign 8
ap_gdt_ptr64:
    .short ap_gdt_end - ap_gdt - 1
    .quad {phys_offset} + {base} + (ap_gdt - ap_trampoline_start)
    .balign 8
ap_params:
    .skip {params_size}
ap_trampoline_end:
    "#,
    base = const TRAMPOLINE_PHYS,
    phys_offset = const mm::PHYS_OFFSET,
    off_pml4 = const offset_of!(ApParams, pml4),
    off_kpml4 = const offset_of!(ApParams, kernel_pml4),
    off_stack = const offset_of!(ApParams, stack),
    off_index = const offset_of!(ApParams, index),
    off_entry = const offset_of!(ApParams, entry),
    params_size = const core::mem::size_of::<ApParams>(),
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_params: u8;
}

/// First higher-half code on an AP: RDI = CPU index, RSI = kernel PML4,
/// RSP = the claimed stack top (16-byte aligned).
#[unsafe(naked)]
extern "C" fn ap_long_entry() -> ! {
    naked_asm!(
        "mov cr3, rsi",
        "xor ebp, ebp",
        "call {entry}",
        "ud2",
        entry = sym ap_entry,
    )
}

/// What the layers above run on each application processor (the boot
/// sequence gives it to [`start_aps`]): `init(cpu_index)` once the CPU's
/// framework state is up — the scheduler's per-CPU state, the VMM backend,
/// ... — and then `run`, which never returns (the idle loop).
#[derive(Clone, Copy)]
pub struct ApStart {
    pub init: fn(u32),
    pub run: fn() -> !,
}

static AP_START: spin::Once<ApStart> = spin::Once::new();

/// APs that finished `ap_entry`'s set-up (the BSP waits on this).
static APS_READY: AtomicU32 = AtomicU32::new(0);

extern "C" fn ap_entry(index: u64) -> ! {
    // The real APIC ID from CPUID: a late AP may run with parameters the
    // BSP wrote for another CPU (see the module comment).
    let apic_id = apic::cpuid_apic_id();
    // GS-based per-CPU data first: logging reads it.
    gdt::init_this_cpu(index as u32, apic_id);
    trap::load_idt();
    let lapic = crate::acpi::platform().map_or(0xfee0_0000, |p| p.lapic_address);
    apic::init_this_cpu(lapic);
    super::context::init_fpu_this_cpu();
    super::syscall::init_this_cpu();
    let start = AP_START.get().copied();
    if let Some(s) = start {
        (s.init)(index as u32);
    }
    log::info!("cpu{index} online (apic id {apic_id})");
    APS_READY.fetch_add(1, Ordering::AcqRel);
    match start {
        Some(s) => (s.run)(),
        None => cpu::halt_forever(),
    }
}

fn addr(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The parameter block inside the copied trampoline, via the direct map.
fn params() -> &'static ApParams {
    // SAFETY: taking addresses of assembler labels.
    let off = unsafe { addr(&ap_params) - addr(&ap_trampoline_start) };
    // SAFETY: the trampoline page is below 1 MiB, reserved from the frame
    // allocator, direct-mapped, and only this module and the APs touch it;
    // the fields are accessed as atomics below.
    unsafe { &*((mm::phys_to_virt(TRAMPOLINE_PHYS) + off) as *const ApParams) }
}

fn field(f: &u64) -> &AtomicU64 {
    // SAFETY: AtomicU64 has the layout of u64; the APs touch these fields
    // only with aligned loads and `lock xchg`.
    unsafe { &*(f as *const u64 as *const AtomicU64) }
}

/// Builds the trampoline PML4: entry 0 identity-maps the low 2 MiB with one
/// large page, entries 256..512 are the kernel's. Frames come from the
/// allocator and must lie below 4 GiB.
fn build_trampoline_tables() -> Option<[u64; 3]> {
    let frames = [mm::alloc_frame()?, mm::alloc_frame()?, mm::alloc_frame()?];
    if frames.iter().any(|&f| f >= 1 << 32) {
        log::error!("smp: no page-table frames below 4 GiB for the AP trampoline");
        return None;
    }
    let [pml4, pdpt, pd] = frames;
    const P_W: u64 = 0b11;
    const LARGE: u64 = 1 << 7;
    let t = |f: u64| mm::phys_to_virt(f) as *mut u64;
    let kernel = mm::phys_to_virt(mm::kernel_pml4()) as *const u64;
    // SAFETY: three fresh zeroed frames owned here, and the kernel PML4,
    // all reachable through the direct map.
    unsafe {
        t(pml4).write_volatile(pdpt | P_W);
        t(pdpt).write_volatile(pd | P_W);
        t(pd).write_volatile(P_W | LARGE);
        for i in 256..512 {
            t(pml4).add(i).write_volatile(kernel.add(i).read_volatile());
        }
    }
    Some(frames)
}

/// Starts every CPU in `p.cpu_apic_ids` except this one (the BSP). Failures
/// are logged; the boot goes on with the CPUs that came up.
pub fn start_aps(p: &Platform, start: ApStart) {
    AP_START.call_once(|| start);
    let bsp = apic::id();
    let total = p.cpu_apic_ids.len();
    if total <= 1 {
        log::info!("smp: single CPU (apic id {bsp})");
        return;
    }
    let Some(vector) = startup_vector(TRAMPOLINE_PHYS) else { unreachable!("trampoline page below 1 MiB") };
    // SAFETY: taking addresses of assembler labels.
    let (start, end) = unsafe { (addr(&ap_trampoline_start), addr(&ap_trampoline_end)) };
    assert!(end - start <= 4096, "AP trampoline larger than a page");
    let Some(frames) = build_trampoline_tables() else { return };
    // SAFETY: the page at TRAMPOLINE_PHYS is reserved for this (see mm::init);
    // no AP runs yet.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, mm::phys_to_virt(TRAMPOLINE_PHYS) as *mut u8, (end - start) as usize);
    }
    let prm = params();
    field(&prm.pml4).store(frames[0], Ordering::Relaxed);
    field(&prm.kernel_pml4).store(mm::kernel_pml4(), Ordering::Relaxed);
    field(&prm.entry).store(ap_long_entry as *const () as u64, Ordering::Relaxed);

    let mut failed = 0;
    for &apic_id in p.cpu_apic_ids.iter().filter(|&&id| id != bsp) {
        if !start_one(apic_id, vector) {
            failed += 1;
        }
    }
    if failed == 0 {
        // Every AP has left the trampoline for good: return its tables.
        if let Some(fa) = mm::FRAMES.lock().as_mut() {
            for f in frames {
                let _ = fa.free_frame(f);
            }
        }
    }
    log::info!("smp: {} of {} CPUs online", gdt::cpus_online(), total);
}

fn start_one(apic_id: u32, vector: u8) -> bool {
    let prm = params();
    let index = gdt::cpus_online();
    let layout = core::alloc::Layout::from_size_align(AP_STACK_SIZE, 16).expect("stack layout");
    // SAFETY: non-zero size; the stack is leaked to the AP (or freed below
    // if the AP never claimed it).
    let stack = unsafe { alloc::alloc::alloc(layout) };
    if stack.is_null() {
        log::error!("smp: no memory for a stack for APIC {apic_id}");
        return false;
    }
    let top = stack as u64 + AP_STACK_SIZE as u64;
    field(&prm.index).store(index as u64, Ordering::Relaxed);
    // Release: the other fields are visible before the stack that gates them.
    field(&prm.stack).store(top, Ordering::Release);
    let ready = APS_READY.load(Ordering::Acquire);

    // The universal start-up algorithm (SDM vol. 3, 9.4.4.1).
    apic::send(Icr::init(apic_id));
    apic::send(Icr::init_deassert(apic_id));
    time::delay_us(10_000);
    apic::send(Icr::startup(apic_id, vector));
    time::delay_us(200);
    if field(&prm.stack).load(Ordering::Acquire) != 0 {
        apic::send(Icr::startup(apic_id, vector));
        time::delay_us(200);
    }

    let deadline = time::uptime_ns() + AP_START_TIMEOUT_US * 1000;
    while APS_READY.load(Ordering::Acquire) == ready {
        if time::uptime_ns() > deadline {
            let claimed = field(&prm.stack).swap(0, Ordering::AcqRel) == 0;
            // Put it back into wait-for-SIPI so it cannot wander off later.
            apic::send(Icr::init(apic_id));
            apic::send(Icr::init_deassert(apic_id));
            if claimed {
                log::error!("smp: APIC {apic_id} entered the trampoline but did not come up in {} ms", AP_START_TIMEOUT_US / 1000);
            } else {
                log::error!("smp: APIC {apic_id} did not start (no response to INIT/SIPI)");
                // SAFETY: unclaimed, so no CPU uses it; allocated above with `layout`.
                unsafe { alloc::alloc::dealloc(stack, layout) };
            }
            return false;
        }
        cpu::pause();
    }
    true
}
