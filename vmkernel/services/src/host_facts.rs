//! Gathers the facts for the status screen (`vmkernel::status_screen` renders it).

use alloc::string::String;
use vmkernel::bootinfo::{BootInfo, Protocol};
use vmkernel::status_screen::{self as status, CpuidRegs, StatusFacts};

use crate::arch::{cpu, gdt};
use crate::{console, mm};

fn cpuid(leaf: u32) -> CpuidRegs {
    let r = cpu::cpuid(leaf, 0);
    CpuidRegs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

pub fn print_status_screen(bi: &BootInfo, pci_functions: usize) {
    let virtualization = status::detect_virtualization(cpuid, |msr| cpu::read_vmx_capability(msr).unwrap_or(0));
    let model = status::brand_string(cpuid);
    let backend = match crate::hv::backend() {
        Some(crate::hv::Backend::Svm { asids }) => alloc::format!("AMD-V, nested paging (2M), {asids} ASIDs"),
        Some(crate::hv::Backend::Vmx { vpid, large_pages }) => alloc::format!(
            "Intel VT-x, EPT{}{}, unrestricted guest",
            if large_pages { " (2M)" } else { "" },
            if vpid { ", VPID" } else { "" }
        ),
        None => alloc::format!("none ({}): no VMs", crate::hv::unavailable_reason()),
    };
    let network = crate::net::status_line();
    let facts = StatusFacts {
        product: "Mantle",
        version: crate::VERSION,
        cpus: gdt::cpus_online() as usize,
        cpu_model: &model,
        memory_mib: mm::usable_bytes() >> 20,
        virtualization,
        vm_backend: &backend,
        boot_protocol: match bi.protocol {
            Protocol::Multiboot2 => "Multiboot2",
            Protocol::Pvh => "PVH",
        },
        pci_functions,
        network_adapters: &crate::nic::status_lines(),
        management_network: network.as_deref(),
    };
    let mut screen = String::new();
    let _ = status::render(&facts, &mut screen);
    console::write_str(&screen);
}
