//! ACPI: the tables the kernel needs at boot (MADT, FADT, MCFG, DSDT's
//! `\_S5`), read with the `acpi` crate through the direct map, and the
//! power-off / reset operations built on them.

use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, address::AddressSpace};
use arrayvec::ArrayVec;
use core::ptr::NonNull;
use spin::Once;
use vmkernel::acpi_s5::{SleepType, find_s5};
use vmkernel::bootinfo::{BootInfo, Rsdp};

use crate::cpu::Ports;
use crate::mm;

pub use crate::cpu::MAX_CPUS;

#[derive(Clone, Copy, Debug)]
pub struct IoApic {
    pub id: u8,
    pub address: u64,
    pub gsi_base: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct IsaOverride {
    pub irq: u8,
    pub gsi: u32,
    pub flags: u16,
}

#[derive(Clone, Copy, Debug)]
pub struct EcamRegion {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

#[derive(Clone, Copy, Debug)]
pub struct ResetRegister {
    pub space: AddressSpace,
    pub address: u64,
    pub value: u8,
}

/// What the firmware tables say about the platform.
#[derive(Debug, Default)]
pub struct Platform {
    /// APIC IDs of the enabled (or online-capable) CPUs, BSP included.
    pub cpu_apic_ids: ArrayVec<u32, MAX_CPUS>,
    pub lapic_address: u64,
    pub ioapics: ArrayVec<IoApic, 8>,
    pub isa_overrides: ArrayVec<IsaOverride, 16>,
    pub ecam: ArrayVec<EcamRegion, 4>,
    pub pm1a_control: Option<u16>,
    pub pm1b_control: Option<u16>,
    pub s5: Option<SleepType>,
    pub reset: Option<ResetRegister>,
    pub has_8259: bool,
}

static PLATFORM: Once<Platform> = Once::new();

#[derive(Clone, Copy)]
struct DirectMapHandler;

impl AcpiHandler for DirectMapHandler {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = mm::phys_to_virt(physical_address as u64) as *mut T;
        // SAFETY: firmware tables lie in the direct map (all RAM and the
        // first 4 GiB); the pointer is non-null in the upper half.
        unsafe { PhysicalMapping::new(physical_address, NonNull::new_unchecked(virt), size, size, *self) }
    }
    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

fn tables(bi: &BootInfo) -> Option<AcpiTables<DirectMapHandler>> {
    // SAFETY: addresses come from the boot loader or the BIOS search,
    // which validates the RSDP signature and checksum.
    let r = unsafe {
        match bi.rsdp {
            Some(Rsdp::At(a)) => AcpiTables::from_rsdp(DirectMapHandler, a as usize),
            Some(Rsdp::Copy { revision, rsdt, xsdt }) => {
                if revision >= 2 && xsdt != 0 {
                    AcpiTables::from_rsdt(DirectMapHandler, revision, xsdt as usize)
                } else {
                    AcpiTables::from_rsdt(DirectMapHandler, 0, rsdt as usize)
                }
            }
            None => AcpiTables::search_for_rsdp_bios(DirectMapHandler),
        }
    };
    match r {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("acpi: no usable tables ({e:?})");
            None
        }
    }
}

/// Reads the firmware tables. Missing pieces are logged and left empty; the
/// caller falls back (one CPU, no power-off) rather than stopping.
pub fn init(bi: &BootInfo) -> &'static Platform {
    PLATFORM.call_once(|| {
        let mut p = Platform { lapic_address: 0xfee0_0000, ..Default::default() };
        let Some(t) = tables(bi) else { return p };
        if let Ok(madt) = t.find_table::<Madt>() {
            p.lapic_address = madt.get().local_apic_address as u64;
            p.has_8259 = madt.get().supports_8259();
            for e in madt.get().entries() {
                match e {
                    MadtEntry::LocalApic(l) => {
                        let flags = l.flags;
                        // bit 0: enabled; bit 1: online capable.
                        if flags & 3 != 0 {
                            let _ = p.cpu_apic_ids.try_push(l.apic_id as u32);
                        }
                    }
                    MadtEntry::LocalX2Apic(l) => {
                        let flags = l.flags;
                        let id = l.x2apic_id;
                        if flags & 3 != 0 && !p.cpu_apic_ids.contains(&id) {
                            let _ = p.cpu_apic_ids.try_push(id);
                        }
                    }
                    MadtEntry::IoApic(io) => {
                        let _ = p.ioapics.try_push(IoApic {
                            id: io.io_apic_id,
                            address: io.io_apic_address as u64,
                            gsi_base: io.global_system_interrupt_base,
                        });
                    }
                    MadtEntry::InterruptSourceOverride(o) => {
                        let _ = p.isa_overrides.try_push(IsaOverride {
                            irq: o.irq,
                            gsi: o.global_system_interrupt,
                            flags: o.flags,
                        });
                    }
                    MadtEntry::LocalApicAddressOverride(o) => p.lapic_address = o.local_apic_address,
                    _ => {}
                }
            }
        } else {
            log::warn!("acpi: no MADT");
        }
        if let Ok(fadt) = t.find_table::<Fadt>() {
            let io_port = |g: acpi::address::GenericAddress| {
                (g.address_space == AddressSpace::SystemIo && g.address != 0).then_some(g.address as u16)
            };
            p.pm1a_control = fadt.pm1a_control_block().ok().and_then(io_port);
            p.pm1b_control = fadt.pm1b_control_block().ok().flatten().and_then(io_port);
            let flags = fadt.flags;
            if flags.supports_system_reset_via_fadt()
                && let Ok(g) = fadt.reset_register()
            {
                p.reset = Some(ResetRegister { space: g.address_space, address: g.address, value: fadt.reset_value });
            }
        }
        if let Ok(dsdt) = t.dsdt() {
            // SAFETY: the DSDT's AML body lies in firmware memory that is
            // never written while the kernel runs.
            let aml = unsafe { mm::phys_slice(dsdt.address as u64, dsdt.length as usize) };
            p.s5 = find_s5(aml);
        }
        if let Ok(mcfg) = t.find_table::<Mcfg>() {
            for e in mcfg.entries() {
                let _ = p.ecam.try_push(EcamRegion {
                    base: e.base_address,
                    segment: e.pci_segment_group,
                    bus_start: e.bus_number_start,
                    bus_end: e.bus_number_end,
                });
            }
        }
        log::info!(
            "acpi: {} CPUs, {} IOAPICs, LAPIC at {:#x}, ECAM {:?}, S5 {:?}",
            p.cpu_apic_ids.len(),
            p.ioapics.len(),
            p.lapic_address,
            p.ecam.first().map(|e| e.base),
            p.s5.map(|s| s.slp_typ_a)
        );
        p
    })
}

pub fn platform() -> Option<&'static Platform> {
    PLATFORM.get()
}

const SLP_EN: u16 = 1 << 13;

/// Enters S5 (soft off). Returns only if the platform did not power off.
pub fn enter_s5() {
    let Some(p) = platform() else { return };
    let (Some(pm1a), Some(s5)) = (p.pm1a_control, p.s5) else {
        log::warn!("acpi: no PM1a control block or \\_S5 package: cannot power off");
        return;
    };
    // SAFETY: PM1 control registers belong to the kernel (no AML runs).
    let ports = unsafe { Ports::new() };
    let v = ports.inw(pm1a) & !(7 << 10);
    ports.outw(pm1a, v | ((s5.slp_typ_a as u16) << 10) | SLP_EN);
    if let Some(pm1b) = p.pm1b_control {
        let v = ports.inw(pm1b) & !(7 << 10);
        ports.outw(pm1b, v | ((s5.slp_typ_b as u16) << 10) | SLP_EN);
    }
    crate::time::delay_us(100_000);
}

/// Resets through the FADT reset register, if there is one.
pub fn reset() {
    let Some(r) = platform().and_then(|p| p.reset) else { return };
    match r.space {
        AddressSpace::SystemIo => {
            // SAFETY: the firmware names this port as the reset register.
            unsafe { Ports::new() }.outb(r.address as u16, r.value);
        }
        AddressSpace::SystemMemory if mm::direct_map_covers(r.address, 1) => {
            // SAFETY: as above, a memory-mapped reset register.
            unsafe { core::ptr::write_volatile(mm::phys_to_virt(r.address) as *mut u8, r.value) };
        }
        _ => return,
    }
    crate::time::delay_us(50_000);
}
