//! Hardware-assisted virtualization: the backend-specific parts of the VMM.
//!
//! Two backends behind one interface — AMD-V (SVM + nested paging) and
//! Intel VT-x (VMX + EPT) — chosen at boot from CPUID and capability MSRs.
//! Everything device- and loader-related is backend-independent logic in
//! `vmkernel::vmm`; this module holds only what touches the hardware: the
//! control structures, VM entry, and nested page tables.

pub mod guest_memory;
pub mod svm;
pub mod vcpu;
pub mod vmx;

use spin::Once;

use crate::arch::cpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMD-V with nested paging; `asids` usable address-space IDs.
    Svm { asids: u32 },
    /// Intel VT-x with EPT and unrestricted guest; `vpid` when TLB entries
    /// are tagged per vCPU, `large_pages` when EPT has 2 MiB leaves.
    Vmx { vpid: bool, large_pages: bool },
}

static BACKEND: Once<Option<Backend>> = Once::new();
static REASON: Once<&'static str> = Once::new();

/// Detects the virtualization extensions this CPU offers (BSP, at boot).
pub fn detect() -> Option<Backend> {
    *BACKEND.call_once(|| match svm::probe() {
        Ok(b) => Some(b),
        Err(svm_reason) => match vmx::probe() {
            Ok(b) => Some(b),
            Err(vmx_reason) => {
                // Say why VT-x is unusable on a CPU that has it, else why AMD-V is.
                let has_vmx = cpu::cpuid(1, 0).ecx & (1 << 5) != 0;
                REASON.call_once(|| if has_vmx { vmx_reason } else { svm_reason });
                None
            }
        },
    })
}

pub fn backend() -> Option<Backend> {
    detect()
}

/// Why no backend is available (for the status screen and logs).
pub fn unavailable_reason() -> &'static str {
    REASON.get().copied().unwrap_or("")
}

/// This host's CPUID as a 4-array.
fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = cpu::cpuid(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The virtual CPU every VM on this host gets (`vmm::cpu_model`): the
/// host's features through the model's table, minus what the backend
/// cannot let a guest use.
pub fn cpu_model() -> &'static vmkernel::vmm::cpu_model::CpuModel {
    static MODEL: Once<vmkernel::vmm::cpu_model::CpuModel> = Once::new();
    MODEL.call_once(|| {
        vmkernel::vmm::cpu_model::CpuModel::from_host(|leaf, sub| {
            let mut r = host_cpuid(leaf, sub);
            if let Some(Backend::Vmx { .. }) = detect() {
                vmx::limit_host_cpuid(leaf, sub, &mut r);
            }
            r
        })
    })
}

/// Enables the backend on the calling CPU (every CPU that runs vCPUs).
pub fn init_this_cpu() -> Result<(), &'static str> {
    match detect() {
        Some(Backend::Svm { .. }) => svm::enable_this_cpu(),
        Some(Backend::Vmx { .. }) => vmx::enable_this_cpu(),
        None => Err(unavailable_reason()),
    }
}

/// Guest RAM in the nested-table format of this CPU's backend.
pub fn new_guest_memory(size: u64, holes: &[(u64, u64)]) -> Option<guest_memory::GuestMemory> {
    match detect()? {
        Backend::Svm { .. } => guest_memory::GuestMemory::new(size, holes),
        Backend::Vmx { large_pages, .. } => guest_memory::GuestMemory::new_ept(size, holes, large_pages),
    }
}

/// A vCPU's control structure on this CPU's backend, running over a
/// guest memory's nested page table: it borrows that memory, so the
/// tables cannot go while the vCPU can still enter the guest.
pub struct Vcpu<'m> {
    hw: alloc::boxed::Box<dyn vcpu::VcpuHw>,
    _memory: core::marker::PhantomData<&'m guest_memory::GuestMemory>,
}

impl core::ops::Deref for Vcpu<'_> {
    type Target = dyn vcpu::VcpuHw;
    fn deref(&self) -> &Self::Target {
        &*self.hw
    }
}

impl core::ops::DerefMut for Vcpu<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut *self.hw
    }
}

/// A vCPU on this CPU's backend over `memory`.
pub fn new_vcpu(memory: &guest_memory::GuestMemory) -> Result<Vcpu<'_>, &'static str> {
    let nested_root = memory.root();
    let hw: alloc::boxed::Box<dyn vcpu::VcpuHw> = match detect() {
        Some(Backend::Svm { .. }) => alloc::boxed::Box::new(svm::Vmcb::new(nested_root, 1).ok_or("no memory for a VMCB")?),
        Some(Backend::Vmx { .. }) => alloc::boxed::Box::new(vmx::Vmcs::new(nested_root)?),
        None => return Err(unavailable_reason()),
    };
    Ok(Vcpu { hw, _memory: core::marker::PhantomData })
}

/// Loads a guest's breakpoint addresses into DR0-DR3 (before an entry
/// whose DR7 arms some of them).
pub fn load_guest_breakpoint_addresses(address: [u64; 4]) {
    let [a0, a1, a2, a3] = address;
    // SAFETY: the host arms no hardware breakpoint (its DR7 enables
    // are 0, and SVM/VMX give it DR7 0x400 at every exit), so these
    // addresses have no effect outside this guest.
    unsafe {
        core::arch::asm!(
            "mov dr0, {}", "mov dr1, {}", "mov dr2, {}", "mov dr3, {}",
            in(reg) a0, in(reg) a1, in(reg) a2, in(reg) a3,
            options(nostack, preserves_flags)
        )
    };
}

/// Where vCPU worlds may run (`None`: on any CPU).
///
/// Under QEMU's TCG with more than one CPU, never on CPU 0. QEMU 7.2's x87
/// emulation (target/i386/tcg/fpu_helper.c `cpu_set_fpus` →
/// sysemu/fpu_helper.c `cpu_clear_ignne`) clears the IGNNE bit in the
/// `hflags2` of `first_cpu` — CPU 0 — with a plain read-modify-write, from
/// whichever vCPU thread executes FXRSTOR, XRSTOR (x87 part), FRSTOR or
/// FLDENV. Mantle executes FXRSTOR before every VMRUN and XRSTOR/FXRSTOR on
/// every return to a user world, on every CPU. The same `hflags2` word holds
/// CPU 0's SVM state (HF2_NPT_MASK, GIF, HIF, VINTR), which CPU 0's own
/// thread changes at every VMRUN, #VMEXIT, CLGI and STGI. When the two race,
/// another CPU's stale store puts CPU 0's old SVM bits back: seen here as
/// HF2_NPT_MASK still set after a #VMEXIT, so CPU 0's next host page walk
/// (the fetch of the instruction after VMRUN) goes through the guest's
/// nested page table, reads guest RAM instead of the host PML4, and the
/// host takes #PF → #PF → #DF → triple fault. (A guest with no RAM at the
/// host PML4's address shows it instead as a nested page fault for the
/// host PML4 entry with the host's RIP saved as the guest's.) A lost GIF or
/// HIF/VINTR change would let interrupts in where the host masked them.
///
/// CPU 0 is the only CPU whose state other threads write, and it changes
/// its SVM bits only when it runs guests itself: keeping vCPU worlds off
/// CPU 0 removes the race without giving up migration among the others. A
/// one-CPU host has a single vCPU thread, so no race and no restriction.
/// Real hardware has no such problem; QEMU TCG is recognised by its CPUID
/// signature (leaf 0x40000000, "TCGTCGTCGTCG", on unless `tcg-cpuid=off`).
pub fn guest_cpus() -> Option<vmkernel::sched::CpuSet> {
    static SET: Once<Option<vmkernel::sched::CpuSet>> = Once::new();
    *SET.call_once(|| {
        let online = crate::arch::gdt::cpus_online();
        if online < 2 || !under_qemu_tcg() {
            return None;
        }
        let mut s = vmkernel::sched::CpuSet::first(online);
        s.remove(0);
        log::info!("hv: QEMU TCG with {online} CPUs: vCPUs run on CPUs 1-{} (CPU 0's SVM state races with x87 restores elsewhere)", online - 1);
        Some(s)
    })
}


/// May the calling CPU enter a guest (see `guest_cpus`)?
pub fn may_enter_guest_here() -> bool {
    guest_cpus().is_none_or(|s| s.contains(crate::arch::gdt::cpu_index()))
}

/// Must the host arm a guest's breakpoints itself before VMRUN? Under
/// QEMU TCG's SVM: QEMU 7.2's VMRUN copies the VMCB's DR7 into its state
/// without arming the breakpoints (its MOV-DR helper does that), and its
/// #VMEXIT restores the host's DR7 the same way, leaving them armed (see
/// `svm::Vmcb::run_raw`). Later QEMU versions arm and disarm them at
/// VMRUN and #VMEXIT; the host's own arming is then redundant and
/// harmless. Hardware arms them itself.
pub fn host_arms_guest_breakpoints() -> bool {
    static V: Once<bool> = Once::new();
    *V.call_once(|| matches!(detect(), Some(Backend::Svm { .. })) && under_qemu_tcg())
}

fn under_qemu_tcg() -> bool {
    let r = cpu::cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
    &sig == b"TCGTCGTCGTCG"
}
