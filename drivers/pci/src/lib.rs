//! PCI enumeration.
//!
//! The kernel supplies configuration-space access (ECAM or port mechanism
//! #1) as a [`pci_types::ConfigRegionAccess`]; this crate walks the buses
//! with `pci_types`' header decoding and reports every function it finds.
//!
//! How buses are found: starting from the root bus, every PCI-to-PCI bridge
//! leads to its secondary bus, which is scanned in turn (the bus numbers the
//! firmware assigned are trusted, not reprogrammed). A multifunction host
//! bridge at `00:00.0` announces further root buses (function N = bus N).
//! Buses reachable by neither are not scanned: that costs 32 reads per
//! bus instead of 8192 for all 256 buses, which matters with port I/O
//! under emulation, and it skips buses whose bridges the firmware left
//! unconfigured.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::fmt;

pub mod interrupts;

pub use interrupts::{InterruptSupport, MsiMessage, MsixTable, interrupt_support};
use core::ops::RangeInclusive;

pub use pci_types::{ConfigRegionAccess, HeaderType, PciAddress};
use pci_types::{PciHeader, PciPciBridgeHeader};

/// One PCI function, as its configuration header describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    pub address: PciAddress,
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision: u8,
    pub header_type: HeaderType,
    /// Bit 7 of the header type of the device's function 0.
    pub multifunction: bool,
    /// For a PCI-to-PCI bridge, the bus behind it (as the firmware set it).
    pub secondary_bus: Option<u8>,
}

impl Function {
    pub fn class_name(&self) -> &'static str {
        class_name(self.class)
    }
}

/// `0000:00:03.0 1af4:1000 class 02.00.00 network controller`
impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:04x}:{:04x} class {:02x}.{:02x}.{:02x} {}",
            self.address,
            self.vendor_id,
            self.device_id,
            self.class,
            self.subclass,
            self.prog_if,
            self.class_name()
        )
    }
}

/// The name of a base class code (PCI Code and ID Assignment spec).
pub fn class_name(class: u8) -> &'static str {
    match class {
        0x00 => "unclassified device",
        0x01 => "mass storage controller",
        0x02 => "network controller",
        0x03 => "display controller",
        0x04 => "multimedia controller",
        0x05 => "memory controller",
        0x06 => "bridge",
        0x07 => "communication controller",
        0x08 => "generic system peripheral",
        0x09 => "input device controller",
        0x0a => "docking station",
        0x0b => "processor",
        0x0c => "serial bus controller",
        0x0d => "wireless controller",
        0x0e => "intelligent controller",
        0x0f => "satellite communications controller",
        0x10 => "encryption controller",
        0x11 => "signal processing controller",
        0x12 => "processing accelerator",
        0x13 => "non-essential instrumentation",
        0x40 => "coprocessor",
        0xff => "unassigned class",
        _ => "reserved class",
    }
}

/// Vendor ID of an empty slot: the bus returns all ones. Zero is no valid
/// vendor either, and some broken bridges return it.
fn is_present(vendor_id: u16) -> bool {
    vendor_id != 0xffff && vendor_id != 0x0000
}

/// Buses waiting to be scanned, each queued at most once.
struct BusQueue {
    /// Bitmap of every bus ever queued.
    queued: [u64; 4],
    buses: [u8; 256],
    len: usize,
    next: usize,
}

impl BusQueue {
    fn new() -> Self {
        BusQueue { queued: [0; 4], buses: [0; 256], len: 0, next: 0 }
    }

    /// Queues `bus` unless it was queued before.
    fn push(&mut self, bus: u8) {
        let (word, bit) = (bus as usize / 64, 1u64 << (bus % 64));
        if self.queued[word] & bit == 0 {
            self.queued[word] |= bit;
            self.buses[self.len] = bus;
            self.len += 1;
        }
    }

    fn pop(&mut self) -> Option<u8> {
        let bus = *self.buses[..self.len].get(self.next)?;
        self.next += 1;
        Some(bus)
    }
}

/// Reads the function's header; `None` if no function answers there.
pub fn probe(access: &impl ConfigRegionAccess, address: PciAddress) -> Option<Function> {
    let header = PciHeader::new(address);
    let (vendor_id, device_id) = header.id(access);
    if !is_present(vendor_id) {
        return None;
    }
    let (revision, class, subclass, prog_if) = header.revision_and_class(access);
    let header_type = header.header_type(access);
    let function0 = PciHeader::new(PciAddress::new(address.segment(), address.bus(), address.device(), 0));
    let multifunction = function0.has_multiple_functions(access);
    let secondary_bus = PciPciBridgeHeader::from_header(header, access).map(|b| b.secondary_bus_number(access));
    Some(Function {
        address,
        vendor_id,
        device_id,
        class,
        subclass,
        prog_if,
        revision,
        header_type,
        multifunction,
        secondary_bus,
    })
}

/// Scans one bus: all 32 devices, and all 8 functions of multifunction
/// devices (function 0 says which).
pub fn scan_bus(access: &impl ConfigRegionAccess, segment: u16, bus: u8, mut visit: impl FnMut(&Function)) {
    for device in 0..32 {
        let Some(f0) = probe(access, PciAddress::new(segment, bus, device, 0)) else { continue };
        visit(&f0);
        if f0.multifunction {
            for function in 1..8 {
                if let Some(f) = probe(access, PciAddress::new(segment, bus, device, function)) {
                    visit(&f);
                }
            }
        }
    }
}

/// Enumerates one segment whose configuration space covers `buses`
/// (all 256 for port I/O; the MCFG range for ECAM), following bridges from
/// the first bus of the range (see the crate comment). Calls `visit` for
/// every function in bus order of discovery; returns how many there were.
pub fn enumerate(
    access: &impl ConfigRegionAccess,
    segment: u16,
    buses: RangeInclusive<u8>,
    mut visit: impl FnMut(&Function),
) -> usize {
    let root = *buses.start();
    let mut queue = BusQueue::new();
    queue.push(root);
    // A multifunction host bridge: function N is the host bridge of bus N.
    let host = PciHeader::new(PciAddress::new(segment, root, 0, 0));
    if is_present(host.id(access).0) && host.has_multiple_functions(access) {
        for function in 1..8u8 {
            let h = PciHeader::new(PciAddress::new(segment, root, 0, function));
            if is_present(h.id(access).0) && buses.contains(&root.wrapping_add(function)) {
                queue.push(root.wrapping_add(function));
            }
        }
    }

    let mut count = 0;
    while let Some(bus) = queue.pop() {
        let mut secondaries = [0u8; 256];
        let mut secondaries_len = 0;
        scan_bus(access, segment, bus, |f| {
            count += 1;
            visit(f);
            // Secondary bus 0 means the firmware never configured the
            // bridge; a number at or below our own would be a loop.
            if let Some(secondary) = f.secondary_bus.filter(|&s| s > bus && buses.contains(&s)) {
                secondaries[secondaries_len] = secondary;
                secondaries_len += 1;
            }
        });
        for &secondary in &secondaries[..secondaries_len] {
            queue.push(secondary);
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names() {
        assert_eq!(class_name(0x01), "mass storage controller");
        assert_eq!(class_name(0x02), "network controller");
        assert_eq!(class_name(0x06), "bridge");
        assert_eq!(class_name(0xff), "unassigned class");
        assert_eq!(class_name(0x7f), "reserved class");
    }

    #[test]
    fn bus_queue_is_fifo_and_queues_each_bus_once() {
        let mut q = BusQueue::new();
        for bus in [0, 255, 64, 0, 255, 3] {
            q.push(bus);
        }
        assert_eq!(q.pop(), Some(0));
        q.push(64);
        q.push(7);
        let rest: Vec<u8> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, vec![255, 64, 3, 7]);
    }
}
