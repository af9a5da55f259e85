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
pub mod vm;
pub mod vmx;

use spin::Once;

use crate::arch::cpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AMD-V with nested paging; `asids` usable address-space IDs.
    Svm { asids: u32 },
    /// Intel VT-x with EPT and unrestricted guest; `vpid` when TLB entries
    /// are tagged per vCPU.
    Vmx { vpid: bool },
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
        Backend::Vmx { .. } => guest_memory::GuestMemory::new_ept(size, holes),
    }
}

/// A vCPU on this CPU's backend over the nested page table rooted at
/// `nested_root`.
pub fn new_vcpu(nested_root: u64) -> Result<alloc::boxed::Box<dyn vcpu::VcpuHw>, &'static str> {
    match detect() {
        Some(Backend::Svm { .. }) => {
            let v = svm::Vmcb::new(nested_root, 1).ok_or("no memory for a VMCB")?;
            Ok(alloc::boxed::Box::new(v))
        }
        Some(Backend::Vmx { .. }) => Ok(alloc::boxed::Box::new(vmx::Vmcs::new(nested_root)?)),
        None => Err(unavailable_reason()),
    }
}
