//! PCI configuration-space access for the kernel, and the boot-time scan.
//!
//! ECAM (PCIe memory-mapped configuration, regions from the ACPI MCFG) is
//! used when the firmware describes it and the direct map reaches it;
//! otherwise configuration mechanism #1 (ports 0xCF8/0xCFC), which every
//! PC chipset has, reaches segment 0. Enumeration itself is the `pci`
//! driver crate's safe code.

use alloc::vec::Vec;
use pci::{ConfigRegionAccess, Function, PciAddress};
use spin::{Mutex, Once};

use crate::acpi::{EcamRegion, Platform};
use crate::arch::cpu::Ports;
use crate::mm;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Mechanism #1 is two accesses (address, then data): one CPU at a time.
static PORT_MECHANISM: Mutex<()> = Mutex::new(());

/// Configuration mechanism #1: 256 bytes per function, segment 0 only.
pub struct PortConfigAccess {
    ports: Ports,
}

impl Default for PortConfigAccess {
    fn default() -> Self {
        Self::new()
    }
}

impl PortConfigAccess {
    pub fn new() -> Self {
        // SAFETY: 0xCF8/0xCFC belong to the PCI host bridge, which only
        // this module drives, serialised by `PORT_MECHANISM`.
        PortConfigAccess { ports: unsafe { Ports::new() } }
    }

    fn address(address: PciAddress, offset: u16) -> Option<u32> {
        (address.segment() == 0 && offset < 256).then(|| {
            1 << 31
                | (address.bus() as u32) << 16
                | (address.device() as u32) << 11
                | (address.function() as u32) << 8
                | (offset & 0xfc) as u32
        })
    }
}

impl ConfigRegionAccess for PortConfigAccess {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let Some(config_address) = Self::address(address, offset) else { return !0 };
        let _serialised = PORT_MECHANISM.lock();
        self.ports.outl(CONFIG_ADDRESS, config_address);
        self.ports.inl(CONFIG_DATA)
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let Some(config_address) = Self::address(address, offset) else { return };
        let _serialised = PORT_MECHANISM.lock();
        self.ports.outl(CONFIG_ADDRESS, config_address);
        self.ports.outl(CONFIG_DATA, value);
    }
}

/// ECAM: each function's 4 KiB of configuration space at
/// `base + (bus - bus_start) << 20 | device << 15 | function << 12`.
pub struct EcamAccess {
    region: EcamRegion,
}

impl EcamAccess {
    /// `None` if the direct map does not reach the region.
    pub fn new(region: EcamRegion) -> Option<Self> {
        let buses = (region.bus_end as u64).checked_sub(region.bus_start as u64)? + 1;
        mm::direct_map_covers(region.base, buses << 20).then_some(EcamAccess { region })
    }

    /// The register's virtual address, if it lies in this region.
    fn register(&self, address: PciAddress, offset: u16) -> Option<*mut u32> {
        let r = &self.region;
        if address.segment() != r.segment || !(r.bus_start..=r.bus_end).contains(&address.bus()) || offset >= 4096 {
            return None;
        }
        let phys = r.base
            + (((address.bus() - r.bus_start) as u64) << 20
                | (address.device() as u64) << 15
                | (address.function() as u64) << 12
                | (offset & 0xffc) as u64);
        Some(mm::phys_to_virt(phys) as *mut u32)
    }
}

impl ConfigRegionAccess for EcamAccess {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        let Some(register) = self.register(address, offset) else { return !0 };
        // SAFETY: an aligned register inside the MCFG region, which `new`
        // checked the direct map covers. Device memory: the firmware's
        // MTRRs make it uncacheable, and volatile keeps the access single.
        unsafe { core::ptr::read_volatile(register) }
    }

    unsafe fn write(&self, address: PciAddress, offset: u16, value: u32) {
        let Some(register) = self.register(address, offset) else { return };
        // SAFETY: as for `read`; the caller vouches for the write's effect.
        unsafe { core::ptr::write_volatile(register, value) }
    }
}

static FUNCTIONS: Once<Vec<Function>> = Once::new();

/// Every PCI function found at boot.
pub fn functions() -> &'static [Function] {
    FUNCTIONS.get().map_or(&[], |f| f.as_slice())
}

/// Scans the PCI buses, logs one line per function and returns the count.
pub fn init(platform: &Platform) -> usize {
    FUNCTIONS
        .call_once(|| {
            let mut found = Vec::new();
            let mut record = |f: &Function| {
                log::info!("pci {f}");
                found.push(*f);
            };
            let mut via_ecam = false;
            for &region in &platform.ecam {
                match EcamAccess::new(region) {
                    Some(ecam) => {
                        via_ecam = true;
                        pci::enumerate(&ecam, region.segment, region.bus_start..=region.bus_end, &mut record);
                    }
                    None => log::warn!("pci: ECAM at {:#x} is beyond the direct map; not used", region.base),
                }
            }
            if !via_ecam {
                pci::enumerate(&PortConfigAccess::new(), 0, 0..=255, &mut record);
            }
            log::info!(
                "pci: {} functions (configuration access: {})",
                found.len(),
                if via_ecam { "ECAM" } else { "ports 0xcf8/0xcfc" }
            );
            found
        })
        .len()
}
