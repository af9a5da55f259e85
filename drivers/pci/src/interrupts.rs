//! Message-signalled interrupts (MSI and MSI-X) and the INTx fallback.
//!
//! What a function offers comes from its capability list
//! ([`interrupt_support`]); the capability registers are decoded by
//! `pci_types`. MSI-X vectors live in a table inside a memory BAR, which
//! [`MsixTable`] programs through `hal::Registers` (an MMIO window the
//! kernel mapped). The messages themselves are x86's: a write to the local
//! APIC's address window naming the destination APIC and the vector.

use core::fmt;

use hal::Registers;
use pci_types::capability::{MsiCapability, MsixCapability, MultipleMessageSupport, PciCapability};
use pci_types::{Bar, CommandRegister, ConfigRegionAccess, EndpointHeader, PciAddress, PciHeader};

/// Capabilities fit in the 192 bytes after the standard header, at least
/// four bytes each: a longer walk means the list loops.
const MAX_CAPABILITIES: usize = 48;

/// The legacy interrupt pin and the line the firmware routed it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intx {
    /// 1 = INTA# .. 4 = INTD#.
    pub pin: u8,
    /// The firmware's routing (an IOAPIC/8259 input), 0xff if unknown.
    pub line: u8,
}

/// The interrupt mechanisms a function offers.
#[derive(Clone, Copy, Debug, Default)]
pub struct InterruptSupport {
    pub msix: Option<MsixCapability>,
    pub msi: Option<MsiCapability>,
    pub intx: Option<Intx>,
}

impl InterruptSupport {
    /// The best mechanism, for logs: "MSI-X (5 vectors)", "MSI", "INTx (pin A, line 11)", "none".
    pub fn best(&self) -> Mechanism {
        if let Some(m) = &self.msix {
            Mechanism::Msix { vectors: m.table_size() }
        } else if self.msi.is_some() {
            Mechanism::Msi
        } else if let Some(i) = self.intx {
            Mechanism::Intx(i)
        } else {
            Mechanism::None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Msix { vectors: u16 },
    Msi,
    Intx(Intx),
    None,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::Msix { vectors } => write!(f, "MSI-X ({vectors} vectors)"),
            Mechanism::Msi => write!(f, "MSI"),
            Mechanism::Intx(i) => write!(f, "INTx (pin {}, line {})", (b'A' + i.pin.saturating_sub(1).min(3)) as char, i.line),
            Mechanism::None => write!(f, "none"),
        }
    }
}

/// Reads the function's capability list and interrupt pin. Only type-0
/// (endpoint) headers have these; bridges and others report nothing.
pub fn interrupt_support(access: &impl ConfigRegionAccess, address: PciAddress) -> InterruptSupport {
    let mut support = InterruptSupport::default();
    let Some(endpoint) = EndpointHeader::from_header(PciHeader::new(address), access) else {
        return support;
    };
    for capability in endpoint.capabilities(access).take(MAX_CAPABILITIES) {
        match capability {
            PciCapability::MsiX(m) if support.msix.is_none() => support.msix = Some(m),
            PciCapability::Msi(m) if support.msi.is_none() => support.msi = Some(m),
            _ => {}
        }
    }
    let (pin, line) = endpoint.interrupt(access);
    if (1..=4).contains(&pin) {
        support.intx = Some(Intx { pin, line });
    }
    support
}

/// A memory BAR's physical address and size; `None` for I/O or absent BARs.
pub fn memory_bar(access: &impl ConfigRegionAccess, address: PciAddress, index: u8) -> Option<(u64, u64)> {
    let endpoint = EndpointHeader::from_header(PciHeader::new(address), access)?;
    match endpoint.bar(index, access)? {
        Bar::Memory32 { address, size, .. } => Some((address as u64, size as u64)),
        Bar::Memory64 { address, size, .. } => Some((address, size)),
        Bar::Io { .. } => None,
    }
}

/// Lets the function master the bus (DMA) and decode its memory BARs.
pub fn enable_dma_and_mmio(access: &impl ConfigRegionAccess, address: PciAddress) {
    let mut header = PciHeader::new(address);
    header.update_command(access, |c| c | CommandRegister::BUS_MASTER_ENABLE | CommandRegister::MEMORY_ENABLE);
}

/// Sets or clears the command register's INTx disable bit.
pub fn set_intx_disabled(access: &impl ConfigRegionAccess, address: PciAddress, disabled: bool) {
    let mut header = PciHeader::new(address);
    header.update_command(access, |c| {
        if disabled { c | CommandRegister::INTERRUPT_DISABLE } else { c - CommandRegister::INTERRUPT_DISABLE }
    });
}

/// An x86 MSI message: the write a device makes to interrupt a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

impl MsiMessage {
    /// Fixed delivery, edge-triggered, physical destination `apic_id`.
    /// `None` for vectors below 16 (reserved) or APIC IDs above 255
    /// (those need interrupt remapping or the extended-ID format).
    pub fn x86(apic_id: u32, vector: u8) -> Option<Self> {
        if vector < 16 || apic_id > 0xff {
            return None;
        }
        Some(MsiMessage { address: 0xfee0_0000 | (apic_id as u64) << 12, data: vector as u32 })
    }
}

/// Where a function's MSI-X table is: `(BAR physical address + table
/// offset, table length in bytes)`. `None` if the BAR is no memory BAR or
/// the table does not fit in it.
pub fn msix_table_location(access: &impl ConfigRegionAccess, address: PciAddress, msix: &MsixCapability) -> Option<(u64, usize)> {
    let (base, size) = memory_bar(access, address, msix.table_bar())?;
    let len = msix.table_size() as u64 * MSIX_ENTRY_SIZE as u64;
    let offset = msix.table_offset() as u64;
    (base != 0 && offset + len <= size).then_some((base + offset, len as usize))
}

/// Turns MSI-X on with the whole function masked, and INTx off: program
/// the table, then [`msix_unmask_function`].
pub fn msix_enable_masked(access: &impl ConfigRegionAccess, address: PciAddress, msix: &mut MsixCapability) {
    set_intx_disabled(access, address, true);
    msix.set_function_mask(true, access);
    msix.set_enabled(true, access);
}

pub fn msix_unmask_function(access: &impl ConfigRegionAccess, msix: &mut MsixCapability) {
    msix.set_function_mask(false, access);
}

/// Programs single-message MSI and turns it on (INTx off).
pub fn msi_enable(access: &impl ConfigRegionAccess, address: PciAddress, msi: &MsiCapability, message: MsiMessage) {
    set_intx_disabled(access, address, true);
    msi.set_enabled(false, access);
    msi.set_message_info(message.address, message.data, access);
    msi.set_multiple_message_enable(MultipleMessageSupport::Int1, access);
    msi.set_enabled(true, access);
}

const MSIX_ENTRY_SIZE: usize = 16;
const ENTRY_ADDRESS_LOW: usize = 0;
const ENTRY_ADDRESS_HIGH: usize = 4;
const ENTRY_DATA: usize = 8;
const ENTRY_CONTROL: usize = 12;
const CONTROL_MASKED: u32 = 1;

/// An MSI-X table: `entries` vectors of 16 bytes each in the window `regs`.
pub struct MsixTable<R: Registers> {
    regs: R,
    entries: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSuchEntry(pub u16);

impl<R: Registers> MsixTable<R> {
    pub fn new(regs: R, entries: u16) -> Self {
        MsixTable { regs, entries }
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    fn entry(&self, index: u16) -> Result<usize, NoSuchEntry> {
        if index < self.entries { Ok(index as usize * MSIX_ENTRY_SIZE) } else { Err(NoSuchEntry(index)) }
    }

    /// Points entry `index` at `message` and unmasks it (masked while
    /// the message changes, so the device never sends half of one).
    pub fn program(&self, index: u16, message: MsiMessage) -> Result<(), NoSuchEntry> {
        let e = self.entry(index)?;
        let control = self.regs.read32(e + ENTRY_CONTROL);
        self.regs.write32(e + ENTRY_CONTROL, control | CONTROL_MASKED);
        self.regs.write32(e + ENTRY_ADDRESS_LOW, message.address as u32);
        self.regs.write32(e + ENTRY_ADDRESS_HIGH, (message.address >> 32) as u32);
        self.regs.write32(e + ENTRY_DATA, message.data);
        self.regs.write32(e + ENTRY_CONTROL, control & !CONTROL_MASKED);
        Ok(())
    }

    pub fn set_masked(&self, index: u16, masked: bool) -> Result<(), NoSuchEntry> {
        let e = self.entry(index)?;
        let control = self.regs.read32(e + ENTRY_CONTROL);
        let control = if masked { control | CONTROL_MASKED } else { control & !CONTROL_MASKED };
        self.regs.write32(e + ENTRY_CONTROL, control);
        Ok(())
    }

    /// The message entry `index` holds now.
    pub fn message(&self, index: u16) -> Result<MsiMessage, NoSuchEntry> {
        let e = self.entry(index)?;
        let low = self.regs.read32(e + ENTRY_ADDRESS_LOW) as u64;
        let high = self.regs.read32(e + ENTRY_ADDRESS_HIGH) as u64;
        Ok(MsiMessage { address: high << 32 | low, data: self.regs.read32(e + ENTRY_DATA) })
    }

    pub fn is_masked(&self, index: u16) -> Result<bool, NoSuchEntry> {
        Ok(self.regs.read32(self.entry(index)? + ENTRY_CONTROL) & CONTROL_MASKED != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hal::host::RegisterFile;

    #[test]
    fn x86_messages() {
        assert_eq!(MsiMessage::x86(0, 0x40), Some(MsiMessage { address: 0xfee0_0000, data: 0x40 }));
        assert_eq!(MsiMessage::x86(3, 0xef), Some(MsiMessage { address: 0xfee0_3000, data: 0xef }));
        assert_eq!(MsiMessage::x86(256, 0x40), None);
        assert_eq!(MsiMessage::x86(0, 15), None);
    }

    #[test]
    fn msix_entries_are_masked_while_programmed() {
        let regs = RegisterFile::default();
        regs.write32(16 + ENTRY_CONTROL, CONTROL_MASKED); // entry 1 starts masked, as after reset
        regs.writes.borrow_mut().clear();
        let table = MsixTable::new(&regs, 3);
        let msg = MsiMessage::x86(2, 0x51).unwrap();
        table.program(1, msg).unwrap();
        assert_eq!(
            *regs.writes.borrow(),
            vec![(28, 1), (16, 0xfee0_2000), (20, 0), (24, 0x51), (28, 0)],
            "mask, address, data, unmask"
        );
        assert_eq!(table.message(1), Ok(msg));
        assert_eq!(table.is_masked(1), Ok(false));
        table.set_masked(1, true).unwrap();
        assert_eq!(table.is_masked(1), Ok(true));
        assert_eq!(table.program(3, msg), Err(NoSuchEntry(3)));
        assert_eq!(table.set_masked(7, false), Err(NoSuchEntry(7)));
    }

    #[test]
    fn mechanism_names() {
        assert_eq!(Mechanism::Msix { vectors: 5 }.to_string(), "MSI-X (5 vectors)");
        assert_eq!(Mechanism::Intx(Intx { pin: 1, line: 11 }).to_string(), "INTx (pin A, line 11)");
        assert_eq!(Mechanism::None.to_string(), "none");
    }
}
