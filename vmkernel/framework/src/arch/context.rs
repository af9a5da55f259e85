//! Switching between worlds' kernel stacks, and extended (FPU/SSE/AVX)
//! register state.
//!
//! A world that is not running keeps its callee-saved registers on its own
//! kernel stack and its stack pointer in its `Context`; everything else was
//! saved by whoever called `switch_stacks` (the compiler, per the C ABI).

use core::arch::naked_asm;
use core::sync::atomic::{AtomicU32, AtomicBool, Ordering};

use super::cpu;

/// Saves the callee-saved registers on the current stack, stores the stack
/// pointer in `*save_rsp`, loads `load_rsp` and resumes what was saved there.
///
/// # Safety
/// `load_rsp` must be a stack prepared by `prepare_stack` or saved by an
/// earlier `switch_stacks`, and must not be in use by any other CPU.
#[unsafe(naked)]
pub unsafe extern "C" fn switch_stacks(save_rsp: *mut u64, load_rsp: u64) {
    naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rdi], rsp",
        "mov rsp, rsi",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
    )
}

/// First code a new stack runs: `switch_stacks` "returns" here with the
/// start function (`prepare_stack`'s `start`) in r12.
#[unsafe(naked)]
unsafe extern "C" fn stack_trampoline() {
    naked_asm!("xor ebp, ebp", "call r12", "ud2")
}

/// Bytes at the top of each world's kernel stack kept for the user-mode
/// trap frame.
pub const USER_FRAME_AREA: u64 = 512;

/// Lays out a fresh kernel stack so that switching to it calls `start()`
/// with a correctly aligned stack. Returns the stack pointer to load.
pub fn prepare_stack(stack: &mut [u8], start: extern "C" fn() -> !) -> u64 {
    // The top of a world's kernel stack is where the CPU (or the SYSCALL
    // stub) puts the user-mode trap frame; the world's kernel code starts
    // below that area so `enter_user` can build its frame there.
    let top = (stack.as_mut_ptr() as u64 + stack.len() as u64 - USER_FRAME_AREA) & !15;
    // [top-8] return address (trampoline); below it r15, r14, r13, r12, rbx, rbp
    // in pop order: r15 first (lowest address).
    let words: [u64; 7] = [0, 0, 0, start as *const () as u64, 0, 0, stack_trampoline as *const () as u64];
    let base = top - 8 * words.len() as u64;
    let off = (base - stack.as_ptr() as u64) as usize;
    for (i, w) in words.iter().enumerate() {
        stack[off + i * 8..off + i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    base
}

// ---- extended state ----

static XSAVE: AtomicBool = AtomicBool::new(false);
static AREA_SIZE: AtomicU32 = AtomicU32::new(512);
static XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(3);

/// Enables XSAVE (x87, SSE, and AVX when present) on this CPU if the CPU
/// has it; otherwise FXSAVE is used. Call on every CPU before worlds run.
pub fn init_fpu_this_cpu() {
    let l1 = cpu::cpuid(1, 0);
    if l1.ecx & (1 << 26) == 0 {
        return;
    }
    let d = cpu::cpuid(0xd, 0);
    let supported = (d.edx as u64) << 32 | d.eax as u64;
    let xcr0 = supported & 0b111; // x87 | SSE | AVX
    // SAFETY: CR4.OSXSAVE is valid because CPUID reports XSAVE; XCR0 gets
    // only bits the CPU supports, always including x87 and SSE.
    unsafe {
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        cr4 |= 1 << 18;
        core::arch::asm!("mov cr4, {}", in(reg) cr4);
        core::arch::asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32);
    }
    let size = cpu::cpuid(0xd, 0).ebx;
    XCR0.store(xcr0, Ordering::Relaxed);
    AREA_SIZE.store(size.max(576), Ordering::Relaxed);
    XSAVE.store(true, Ordering::Relaxed);
}

/// Completes the running world's saved user extended state: after a
/// system-call entry, which saved only XMM0-15 and MXCSR into the area (all
/// that kernel code can clobber: it is compiled for baseline x86-64, whose
/// SSE instructions leave x87 and the YMM upper halves alone), the rest is
/// still in the registers. Puts the saved XMM registers back and saves
/// everything into the area. Called before anything reads or replaces the
/// area (signal frames, fork, exec, sigreturn) and before another world
/// gets this CPU; a no-op when nothing is live. The return to ring 3 then
/// reloads the whole area.
pub fn save_live_user_state() {
    let Some(c) = super::gdt::this_cpu() else { return };
    if !c.user_state_live() {
        return;
    }
    // SAFETY: gs:[FPU_AREA] is the running world's 64-byte aligned save
    // area (set at its switch-in) and large enough for XSAVE with XCR0's
    // components; the registers hold this world's user x87/AVX state
    // (FPU_LIVE, set by the SYSCALL stub) and its XMM registers and MXCSR
    // are in the area. The XMM registers are declared clobbered.
    unsafe {
        core::arch::asm!(
            "mov rdi, gs:[{area}]",
            "ldmxcsr [rdi + 24]",
            "movaps xmm0, [rdi + 160]",
            "movaps xmm1, [rdi + 176]",
            "movaps xmm2, [rdi + 192]",
            "movaps xmm3, [rdi + 208]",
            "movaps xmm4, [rdi + 224]",
            "movaps xmm5, [rdi + 240]",
            "movaps xmm6, [rdi + 256]",
            "movaps xmm7, [rdi + 272]",
            "movaps xmm8, [rdi + 288]",
            "movaps xmm9, [rdi + 304]",
            "movaps xmm10, [rdi + 320]",
            "movaps xmm11, [rdi + 336]",
            "movaps xmm12, [rdi + 352]",
            "movaps xmm13, [rdi + 368]",
            "movaps xmm14, [rdi + 384]",
            "movaps xmm15, [rdi + 400]",
            "mov eax, -1",
            "mov edx, -1",
            "cmp qword ptr gs:[{use_xsave}], 0",
            "je 2f",
            "xsave64 [rdi]",
            "jmp 3f",
            "2:",
            "fxsave64 [rdi]",
            "3:",
            "mov qword ptr gs:[{live}], 0",
            area = const super::gdt::PERCPU_FPU_AREA,
            use_xsave = const super::gdt::PERCPU_USE_XSAVE,
            live = const super::gdt::PERCPU_FPU_LIVE,
            out("rdi") _, out("rax") _, out("rdx") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        );
    }
}

/// Points the entry stubs at the running world's extended-state area (on
/// a world switch). The outgoing world's user state still in the
/// registers is saved into its own area first.
pub fn switch_fpu_area(area: u64) {
    save_live_user_state();
    super::gdt::set_fpu_area(area, uses_xsave());
}

/// Whether `area` is the save area the entry stubs of this CPU use now,
/// i.e. its world is the running one.
pub fn is_active_area(area: u64) -> bool {
    super::gdt::this_cpu().is_some_and(|c| c.fpu_area() == area)
}

/// The extended-state components enabled in XCR0.
pub fn xcr0() -> u64 {
    XCR0.load(Ordering::Relaxed)
}

pub fn uses_xsave() -> bool {
    XSAVE.load(Ordering::Relaxed)
}

/// A save area for one world's extended state (64-byte aligned).
pub struct FpuState {
    buf: alloc::vec::Vec<u8>,
    off: usize,
}

impl Default for FpuState {
    fn default() -> Self {
        Self::new()
    }
}

impl FpuState {
    /// A save area holding the architectural initial state.
    pub fn new() -> Self {
        let size = AREA_SIZE.load(Ordering::Relaxed) as usize;
        let buf = alloc::vec![0u8; size + 64];
        let off = (64 - (buf.as_ptr() as usize % 64)) % 64;
        let mut s = Self { buf, off };
        // Initial state: FCW 0x37f, MXCSR 0x1f80 (all exceptions masked).
        let a = s.area_mut();
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        s
    }

    /// Back to the architectural initial state, in place: the entry stubs
    /// hold the area's address, so it must never move while its world lives.
    pub fn reset(&mut self) {
        let a = self.area_mut();
        a.fill(0);
        a[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        a[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }

    pub fn area(&self) -> &[u8] {
        let size = self.buf.len() - 64;
        &self.buf[self.off..self.off + size]
    }

    pub fn area_mut(&mut self) -> &mut [u8] {
        let size = self.buf.len() - 64;
        &mut self.buf[self.off..self.off + size]
    }
}
