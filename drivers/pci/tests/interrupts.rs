//! MSI/MSI-X discovery and programming over a fake configuration space
//! (an integration test: implementing `ConfigRegionAccess` needs an
//! `unsafe fn`, which the crate itself forbids).

use std::cell::RefCell;

use hal::Registers;
use hal::host::RegisterFile;
use pci::interrupts::{
    Intx, Mechanism, MsiMessage, MsixTable, interrupt_support, memory_bar, msi_enable, msix_enable_masked,
    msix_table_location, msix_unmask_function,
};
use pci::{ConfigRegionAccess, PciAddress};

const BAR0_SIZE: u32 = 0x4000;

/// One function's 256 bytes of configuration space. BAR 0/1 is a 64-bit
/// memory BAR of 16 KiB that answers the sizing probe as hardware does;
/// everything else is plain memory.
struct FakeFunction {
    regs: RefCell<[u32; 64]>,
}

impl FakeFunction {
    fn new() -> Self {
        let mut r = [0u32; 64];
        r[0] = 0x10d3_8086; // 82574L
        r[1] = 0x0010_0000; // status: capability list
        r[2] = 0x0200_0000; // network controller
        r[4] = 0xfebc_0000 | 0b100; // BAR0: 64-bit memory
        r[5] = 0;
        r[13] = 0x50; // capability pointer
        r[15] = 0x0000_010b; // INTA#, line 11
        // 0x50: MSI, 64-bit capable, next 0x70.
        r[0x50 / 4] = (1 << 7) << 16 | 0x70 << 8 | 0x05;
        // 0x70: MSI-X, 5 entries, table in BAR0 at 0x2000, PBA at 0x3000, next 0.
        r[0x70 / 4] = 4 << 16 | 0x11;
        r[0x74 / 4] = 0x2000;
        r[0x78 / 4] = 0x3000;
        FakeFunction { regs: RefCell::new(r) }
    }

    fn reg(&self, offset: usize) -> u32 {
        self.regs.borrow()[offset / 4]
    }
}

impl ConfigRegionAccess for FakeFunction {
    unsafe fn read(&self, _: PciAddress, offset: u16) -> u32 {
        self.regs.borrow()[(offset as usize & 0xfc) / 4]
    }

    unsafe fn write(&self, _: PciAddress, offset: u16, value: u32) {
        let mut r = self.regs.borrow_mut();
        let i = (offset as usize & 0xfc) / 4;
        r[i] = match i {
            4 => value & !(BAR0_SIZE - 1) | 0b100,
            _ => value,
        };
    }
}

fn address() -> PciAddress {
    PciAddress::new(0, 0, 2, 0)
}

#[test]
fn finds_msix_msi_and_intx() {
    let f = FakeFunction::new();
    let s = interrupt_support(&f, address());
    let msix = s.msix.expect("MSI-X");
    assert_eq!((msix.table_size(), msix.table_bar(), msix.table_offset()), (5, 0, 0x2000));
    assert!(s.msi.expect("MSI").is_64bit());
    assert_eq!(s.intx, Some(Intx { pin: 1, line: 11 }));
    assert_eq!(s.best(), Mechanism::Msix { vectors: 5 });
}

#[test]
fn bar_is_sized_and_restored() {
    let f = FakeFunction::new();
    assert_eq!(memory_bar(&f, address(), 0), Some((0xfebc_0000, BAR0_SIZE as u64)));
    assert_eq!(f.reg(0x10), 0xfebc_0004, "address restored after the sizing probe");
    let msix = interrupt_support(&f, address()).msix.unwrap();
    assert_eq!(msix_table_location(&f, address(), &msix), Some((0xfebc_2000, 5 * 16)));
}

#[test]
fn msix_enable_sequence() {
    let f = FakeFunction::new();
    let mut msix = interrupt_support(&f, address()).msix.unwrap();
    msix_enable_masked(&f, address(), &mut msix);
    let control = f.reg(0x70) >> 16;
    assert_eq!(control & 0xc000, 0xc000, "enabled with the function masked");
    assert_ne!(f.reg(0x04) & 1 << 10, 0, "INTx disabled");
    let table_regs = RegisterFile::default();
    let table = MsixTable::new(&table_regs, msix.table_size());
    table.program(0, MsiMessage::x86(1, 0x60).unwrap()).unwrap();
    msix_unmask_function(&f, &mut msix);
    assert_eq!(f.reg(0x70) >> 16 & 0xc000, 0x8000, "enabled, function unmasked");
    assert_eq!(table_regs.read32(0), 0xfee0_1000);
    assert_eq!(table_regs.read32(8), 0x60);
}

#[test]
fn msi_enable_programs_the_message() {
    let f = FakeFunction::new();
    let msi = interrupt_support(&f, address()).msi.unwrap();
    msi_enable(&f, address(), &msi, MsiMessage::x86(0, 0x41).unwrap());
    assert_eq!(f.reg(0x54), 0xfee0_0000);
    assert_eq!(f.reg(0x58), 0, "upper address");
    assert_eq!(f.reg(0x5c), 0x41, "data after the 64-bit address");
    assert_eq!(f.reg(0x50) >> 16 & 0x71, 0x01, "enabled, one message");
}

#[test]
fn a_looping_capability_list_ends() {
    let f = FakeFunction::new();
    f.regs.borrow_mut()[0x70 / 4] = 4 << 16 | 0x50 << 8 | 0x11; // MSI-X points back to MSI
    let s = interrupt_support(&f, address());
    assert!(s.msix.is_some() && s.msi.is_some());
}

#[test]
fn no_capability_list_means_intx_only() {
    let f = FakeFunction::new();
    f.regs.borrow_mut()[1] = 0;
    let s = interrupt_support(&f, address());
    assert!(s.msix.is_none() && s.msi.is_none());
    assert_eq!(s.best().to_string(), "INTx (pin A, line 11)");
}
