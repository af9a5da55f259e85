//! Enumeration over a fake configuration space.
//!
//! This lives in an integration test because implementing
//! `ConfigRegionAccess` means implementing an `unsafe fn`, which the
//! driver crate itself forbids.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use pci::{ConfigRegionAccess, Function, HeaderType, PciAddress, enumerate};

/// Config space of the functions that exist; everything else reads all
/// ones, as an empty slot does on real hardware.
#[derive(Default)]
struct FakeConfigSpace {
    functions: BTreeMap<(u8, u8, u8), [u32; 64]>,
    /// Buses the enumerator looked at.
    buses_read: RefCell<BTreeSet<u8>>,
}

impl FakeConfigSpace {
    #[allow(clippy::too_many_arguments)]
    fn add(&mut self, bdf: (u8, u8, u8), vendor: u16, device: u16, class: [u8; 4], header_type: u8) -> &mut [u32; 64] {
        let [class, subclass, prog_if, revision] = class;
        let mut regs = [0u32; 64];
        regs[0] = (device as u32) << 16 | vendor as u32;
        regs[2] = (class as u32) << 24 | (subclass as u32) << 16 | (prog_if as u32) << 8 | revision as u32;
        regs[3] = (header_type as u32) << 16;
        self.functions.insert(bdf, regs);
        self.functions.get_mut(&bdf).unwrap()
    }

    fn add_bridge(&mut self, bdf: (u8, u8, u8), primary: u8, secondary: u8, subordinate: u8) {
        let regs = self.add(bdf, 0x1b36, 0x0001, [0x06, 0x04, 0x00, 0x00], 0x01);
        regs[6] = (subordinate as u32) << 16 | (secondary as u32) << 8 | primary as u32;
    }
}

impl ConfigRegionAccess for FakeConfigSpace {
    unsafe fn read(&self, address: PciAddress, offset: u16) -> u32 {
        assert_eq!(address.segment(), 0);
        assert_eq!(offset % 4, 0, "unaligned config read");
        self.buses_read.borrow_mut().insert(address.bus());
        let bdf = (address.bus(), address.device(), address.function());
        self.functions.get(&bdf).map_or(0xffff_ffff, |regs| regs[offset as usize / 4])
    }

    unsafe fn write(&self, _: PciAddress, _: u16, _: u32) {
        panic!("enumeration must not write config space");
    }
}

fn list(space: &FakeConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    let n = enumerate(space, 0, 0..=255, |f| found.push(*f));
    assert_eq!(n, found.len());
    found
}

fn bdfs(found: &[Function]) -> Vec<(u8, u8, u8)> {
    found.iter().map(|f| (f.address.bus(), f.address.device(), f.address.function())).collect()
}

/// Roughly QEMU `-machine pc` with a PCI bridge: host bridge, a
/// multifunction PIIX3 (ISA, IDE, USB, ACPI), virtio devices, a bridge to
/// bus 1 with a virtio-rng behind it.
fn pc_like() -> FakeConfigSpace {
    let mut s = FakeConfigSpace::default();
    s.add((0, 0, 0), 0x8086, 0x1237, [0x06, 0x00, 0x00, 0x02], 0x00);
    s.add((0, 1, 0), 0x8086, 0x7000, [0x06, 0x01, 0x00, 0x00], 0x80);
    s.add((0, 1, 1), 0x8086, 0x7010, [0x01, 0x01, 0x80, 0x00], 0x00);
    s.add((0, 1, 3), 0x8086, 0x7113, [0x06, 0x80, 0x00, 0x03], 0x00);
    s.add((0, 3, 0), 0x1af4, 0x1000, [0x02, 0x00, 0x00, 0x00], 0x00);
    s.add((0, 4, 0), 0x1af4, 0x1001, [0x01, 0x00, 0x00, 0x00], 0x00);
    s.add_bridge((0, 5, 0), 0, 1, 1);
    s.add((1, 0, 0), 0x1af4, 0x1005, [0x00, 0xff, 0x00, 0x00], 0x00);
    s
}

#[test]
fn finds_every_function_including_behind_the_bridge() {
    let found = list(&pc_like());
    assert_eq!(
        bdfs(&found),
        vec![(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 3), (0, 3, 0), (0, 4, 0), (0, 5, 0), (1, 0, 0)]
    );
    let net = found.iter().find(|f| f.address.device() == 3).unwrap();
    assert_eq!((net.vendor_id, net.device_id), (0x1af4, 0x1000));
    assert_eq!((net.class, net.subclass, net.prog_if, net.revision), (0x02, 0x00, 0x00, 0x00));
    assert_eq!(net.header_type, HeaderType::Endpoint);
    assert!(!net.multifunction);
    assert_eq!(net.to_string(), "0000:00:03.0 1af4:1000 class 02.00.00 network controller");

    let ide = found.iter().find(|f| (f.address.device(), f.address.function()) == (1, 1)).unwrap();
    assert_eq!(ide.to_string(), "0000:00:01.1 8086:7010 class 01.01.80 mass storage controller");
    assert!(ide.multifunction, "function 0's multifunction bit applies to the device");

    let bridge = found.iter().find(|f| f.address.device() == 5).unwrap();
    assert_eq!(bridge.header_type, HeaderType::PciPciBridge);
    assert_eq!(bridge.secondary_bus, Some(1));
    assert_eq!(bridge.class_name(), "bridge");

    let rng = found.last().unwrap();
    assert_eq!(rng.to_string(), "0000:01:00.0 1af4:1005 class 00.ff.00 unclassified device");
    let host = &found[0];
    assert_eq!(host.revision, 0x02);
}

#[test]
fn single_function_devices_are_not_probed_past_function_0() {
    // A device that is not multifunction but (wrongly) answers on other
    // function numbers must be reported once, as real enumerators do.
    let mut s = FakeConfigSpace::default();
    s.add((0, 2, 0), 0x1234, 0x1111, [0x03, 0x00, 0x00, 0x02], 0x00);
    s.add((0, 2, 4), 0x1234, 0x1111, [0x03, 0x00, 0x00, 0x02], 0x00);
    // A multifunction device with a hole at function 1.
    s.add((0, 7, 0), 0x8086, 0x2918, [0x06, 0x01, 0x00, 0x02], 0x80);
    s.add((0, 7, 2), 0x8086, 0x2922, [0x01, 0x06, 0x01, 0x02], 0x00);
    s.add((0, 7, 7), 0x8086, 0x2930, [0x0c, 0x05, 0x00, 0x02], 0x00);
    assert_eq!(bdfs(&list(&s)), vec![(0, 2, 0), (0, 7, 0), (0, 7, 2), (0, 7, 7)]);
}

#[test]
fn empty_space_has_no_functions() {
    let s = FakeConfigSpace::default();
    assert!(list(&s).is_empty());
    assert_eq!(*s.buses_read.borrow(), BTreeSet::from([0]));
}

#[test]
fn only_buses_behind_bridges_are_scanned() {
    let mut s = pc_like();
    // Nothing leads to bus 9: it is not scanned (see the crate comment).
    s.add((9, 0, 0), 0x1af4, 0x1001, [0x01, 0x00, 0x00, 0x00], 0x00);
    let found = list(&s);
    assert!(found.iter().all(|f| f.address.bus() != 9));
    assert_eq!(*s.buses_read.borrow(), BTreeSet::from([0, 1]));
}

#[test]
fn nested_bridges_and_bad_secondary_numbers() {
    let mut s = FakeConfigSpace::default();
    s.add((0, 0, 0), 0x8086, 0x29c0, [0x06, 0x00, 0x00, 0x00], 0x00);
    s.add_bridge((0, 1, 0), 0, 2, 3);
    s.add_bridge((2, 0, 0), 2, 3, 3);
    s.add((3, 4, 0), 0x1af4, 0x1041, [0x02, 0x00, 0x00, 0x01], 0x00);
    // An unconfigured bridge (secondary 0) and one pointing back at bus 0.
    s.add_bridge((0, 2, 0), 0, 0, 0);
    s.add_bridge((3, 5, 0), 3, 0, 0);
    let found = list(&s);
    assert_eq!(bdfs(&found), vec![(0, 0, 0), (0, 1, 0), (0, 2, 0), (2, 0, 0), (3, 4, 0), (3, 5, 0)]);
    assert_eq!(*s.buses_read.borrow(), BTreeSet::from([0, 2, 3]));
}

#[test]
fn multifunction_host_bridge_announces_more_root_buses() {
    let mut s = FakeConfigSpace::default();
    s.add((0, 0, 0), 0x1022, 0x1450, [0x06, 0x00, 0x00, 0x00], 0x80);
    s.add((0, 0, 1), 0x1022, 0x1450, [0x06, 0x00, 0x00, 0x00], 0x00);
    s.add((1, 3, 0), 0x1af4, 0x1000, [0x02, 0x00, 0x00, 0x00], 0x00);
    assert_eq!(bdfs(&list(&s)), vec![(0, 0, 0), (0, 0, 1), (1, 3, 0)]);
}

#[test]
fn ecam_bus_range_limits_the_walk() {
    // An MCFG region covering buses 0..=1 only: a bridge to bus 4 is
    // reported but bus 4 is outside the region and not read.
    let mut s = pc_like();
    s.add_bridge((0, 6, 0), 0, 4, 4);
    s.add((4, 0, 0), 0x1af4, 0x1001, [0x01, 0x00, 0x00, 0x00], 0x00);
    let mut found = Vec::new();
    enumerate(&s, 0, 0..=1, |f| found.push(*f));
    assert!(found.iter().any(|f| f.secondary_bus == Some(4)));
    assert!(found.iter().all(|f| f.address.bus() != 4));
    assert!(!s.buses_read.borrow().contains(&4));
}
