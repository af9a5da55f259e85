//! 82093AA-style I/O APIC: IOREGSEL at +0x00, IOWIN at +0x10 (MMIO at
//! 0xfec00000), 24 redirection entries.
//!
//! Pins take levels ([`IoApic::set_irq`]). An unmasked edge entry delivers on
//! a rising edge; a level entry delivers while asserted and not already
//! waiting for an EOI (remote IRR), and is re-delivered after the EOI
//! broadcast ([`IoApic::eoi`]) if the line is still asserted. Deliveries are
//! queued as [`IrqMessage`]s for the platform to route to LAPICs.

use alloc::vec::Vec;

pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
pub const NUM_PINS: usize = 24;
/// Version 0x11 (82093AA); max redirection entry in bits 16..=23.
pub const IOAPIC_VERSION: u32 = 0x11 | ((NUM_PINS as u32 - 1) << 16);

pub const IOREGSEL: u64 = 0x00;
pub const IOWIN: u64 = 0x10;
/// Directed EOI register (version 0x20 parts); accepted harmlessly.
pub const IOEOI: u64 = 0x40;

pub const REG_ID: u32 = 0x00;
pub const REG_VER: u32 = 0x01;
pub const REG_ARB: u32 = 0x02;
pub const REG_REDTBL: u32 = 0x10;

const RTE_DELIVERY_STATUS: u64 = 1 << 12;
const RTE_POLARITY_LOW: u64 = 1 << 13;
const RTE_REMOTE_IRR: u64 = 1 << 14;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_MASKED: u64 = 1 << 16;
/// Bits the guest can write (not delivery status or remote IRR).
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// APIC delivery modes (ICR, LVT and redirection entries share them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    LowestPriority,
    Smi,
    Nmi,
    Init,
    StartUp,
    ExtInt,
    Reserved,
}

impl DeliveryMode {
    pub fn from_bits(b: u32) -> Self {
        match b & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            7 => DeliveryMode::ExtInt,
            _ => DeliveryMode::Reserved,
        }
    }
}

/// An interrupt message on the APIC bus: "deliver vector V to
/// destination D (physical or logical) in mode M".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqMessage {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub logical: bool,
    /// Destination: 8-bit APIC ID or logical mask from the IOAPIC.
    pub dest: u32,
    pub level_triggered: bool,
}

#[derive(Clone, Debug)]
pub struct IoApic {
    id: u32,
    ioregsel: u32,
    redtbl: [u64; NUM_PINS],
    /// Pin levels as seen on the wire (before polarity).
    levels: u32,
    out: Vec<IrqMessage>,
}

impl Default for IoApic {
    fn default() -> Self {
        Self::new(0)
    }
}

impl IoApic {
    pub fn new(id: u8) -> Self {
        IoApic {
            id: (id as u32 & 0xf) << 24,
            ioregsel: 0,
            redtbl: [RTE_MASKED; NUM_PINS],
            levels: 0,
            out: Vec::new(),
        }
    }

    pub fn entry(&self, pin: usize) -> u64 {
        self.redtbl[pin]
    }

    fn asserted(&self, pin: usize) -> bool {
        let level = self.levels & (1 << pin) != 0;
        level != (self.redtbl[pin] & RTE_POLARITY_LOW != 0)
    }

    fn message(&self, pin: usize) -> IrqMessage {
        let e = self.redtbl[pin];
        IrqMessage {
            vector: e as u8,
            mode: DeliveryMode::from_bits((e >> 8) as u32),
            logical: e & (1 << 11) != 0,
            dest: (e >> 56) as u32,
            level_triggered: e & RTE_LEVEL != 0,
        }
    }

    /// Delivers a level-triggered pin if it is asserted and idle.
    fn service_level(&mut self, pin: usize) {
        let e = self.redtbl[pin];
        if e & RTE_LEVEL != 0 && e & RTE_MASKED == 0 && e & RTE_REMOTE_IRR == 0 && self.asserted(pin) {
            self.redtbl[pin] |= RTE_REMOTE_IRR;
            let m = self.message(pin);
            self.out.push(m);
        }
    }

    /// Sets the wire level of `pin`.
    pub fn set_irq(&mut self, pin: usize, level: bool) {
        if pin >= NUM_PINS {
            return;
        }
        let was = self.asserted(pin);
        if level {
            self.levels |= 1 << pin;
        } else {
            self.levels &= !(1 << pin);
        }
        let now = self.asserted(pin);
        let e = self.redtbl[pin];
        if e & RTE_LEVEL == 0 {
            if now && !was && e & RTE_MASKED == 0 {
                let m = self.message(pin);
                self.out.push(m);
            }
        } else {
            self.service_level(pin);
        }
    }

    /// EOI broadcast from a LAPIC for `vector`: clears remote IRR of the
    /// level entries with that vector and re-delivers those still asserted.
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..NUM_PINS {
            let e = self.redtbl[pin];
            if e as u8 == vector && e & RTE_LEVEL != 0 && e & RTE_REMOTE_IRR != 0 {
                self.redtbl[pin] &= !RTE_REMOTE_IRR;
                self.service_level(pin);
            }
        }
    }

    /// Deliveries produced since the last call.
    pub fn take_messages(&mut self) -> Vec<IrqMessage> {
        core::mem::take(&mut self.out)
    }

    fn read_reg(&self) -> u32 {
        match self.ioregsel {
            REG_ID => self.id,
            REG_VER => IOAPIC_VERSION,
            REG_ARB => self.id,
            r if (REG_REDTBL..REG_REDTBL + 2 * NUM_PINS as u32).contains(&r) => {
                let i = ((r - REG_REDTBL) / 2) as usize;
                let e = self.redtbl[i] & !RTE_DELIVERY_STATUS;
                if r & 1 == 0 { e as u32 } else { (e >> 32) as u32 }
            }
            _ => 0xffff_ffff,
        }
    }

    fn write_reg(&mut self, v: u32) {
        match self.ioregsel {
            REG_ID => self.id = v & 0x0f00_0000,
            r if (REG_REDTBL..REG_REDTBL + 2 * NUM_PINS as u32).contains(&r) => {
                let i = ((r - REG_REDTBL) / 2) as usize;
                let old = self.redtbl[i];
                let new = if r & 1 == 0 {
                    (old & !0xffff_ffff) | v as u64
                } else {
                    (old & 0xffff_ffff) | (v as u64) << 32
                };
                let mut e = (new & RTE_WRITABLE) | (old & RTE_REMOTE_IRR);
                // Switching to edge mode drops a stale remote IRR.
                if e & RTE_LEVEL == 0 {
                    e &= !RTE_REMOTE_IRR;
                }
                self.redtbl[i] = e;
                // Unmasking a still-asserted level pin delivers it now.
                self.service_level(i);
            }
            _ => {}
        }
    }

    /// MMIO read at `offset` in the IOAPIC page (32-bit registers).
    pub fn mmio_read(&mut self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => self.ioregsel,
            IOWIN => self.read_reg(),
            _ => 0xffff_ffff,
        }
    }

    pub fn mmio_write(&mut self, offset: u64, value: u32) {
        match offset {
            IOREGSEL => self.ioregsel = value & 0xff,
            IOWIN => self.write_reg(value),
            IOEOI => self.eoi(value as u8),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_rte(io: &mut IoApic, pin: u32, v: u64) {
        io.mmio_write(IOREGSEL, REG_REDTBL + 2 * pin + 1);
        io.mmio_write(IOWIN, (v >> 32) as u32);
        io.mmio_write(IOREGSEL, REG_REDTBL + 2 * pin);
        io.mmio_write(IOWIN, v as u32);
    }

    fn read(io: &mut IoApic, reg: u32) -> u32 {
        io.mmio_write(IOREGSEL, reg);
        io.mmio_read(IOWIN)
    }

    #[test]
    fn id_version_and_reset_state() {
        let mut io = IoApic::new(2);
        assert_eq!(read(&mut io, REG_ID), 2 << 24);
        assert_eq!(read(&mut io, REG_VER), 0x0017_0011);
        assert_eq!(read(&mut io, REG_REDTBL), RTE_MASKED as u32);
        io.mmio_write(IOREGSEL, REG_ID);
        io.mmio_write(IOWIN, 0x0500_0000);
        assert_eq!(read(&mut io, REG_ID), 5 << 24);
        assert_eq!(io.mmio_read(IOREGSEL), REG_ID);
    }

    #[test]
    fn edge_pin_delivers_on_rising_edge() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 2, 0x0100_0000_0000_0030); // vector 0x30 to APIC 1
        io.set_irq(2, true);
        io.set_irq(2, true);
        io.set_irq(2, false);
        let m = io.take_messages();
        assert_eq!(
            m,
            [IrqMessage { vector: 0x30, mode: DeliveryMode::Fixed, logical: false, dest: 1, level_triggered: false }]
        );
        // Masked: nothing.
        write_rte(&mut io, 2, RTE_MASKED | 0x30);
        io.set_irq(2, true);
        assert!(io.take_messages().is_empty());
    }

    #[test]
    fn level_pin_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 10, RTE_LEVEL | (1 << 11) | 0x41 | 0xff << 56);
        io.set_irq(10, true);
        let m = io.take_messages();
        assert_eq!(m.len(), 1);
        assert!(m[0].logical && m[0].level_triggered && m[0].dest == 0xff);
        assert_ne!(io.entry(10) & RTE_REMOTE_IRR, 0);
        assert_ne!(read(&mut io, REG_REDTBL + 20) & (1 << 14), 0, "remote IRR visible");
        // Still asserted: nothing more until EOI.
        io.set_irq(10, true);
        assert!(io.take_messages().is_empty());
        io.eoi(0x41);
        assert_eq!(io.take_messages().len(), 1, "re-delivered: line still high");
        io.set_irq(10, false);
        io.eoi(0x41);
        assert!(io.take_messages().is_empty());
        assert_eq!(io.entry(10) & RTE_REMOTE_IRR, 0);
        // EOI for another vector does nothing.
        io.set_irq(10, true);
        io.take_messages();
        io.eoi(0x42);
        assert_ne!(io.entry(10) & RTE_REMOTE_IRR, 0);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 5, RTE_LEVEL | RTE_MASKED | 0x50);
        io.set_irq(5, true);
        assert!(io.take_messages().is_empty());
        write_rte(&mut io, 5, RTE_LEVEL | 0x50);
        assert_eq!(io.take_messages().len(), 1);
    }

    #[test]
    fn active_low_polarity() {
        let mut io = IoApic::new(0);
        // Wire high = deasserted for active-low (PCI INTx idles high).
        io.set_irq(16, true);
        write_rte(&mut io, 16, RTE_LEVEL | RTE_POLARITY_LOW | 0x60);
        assert!(io.take_messages().is_empty());
        io.set_irq(16, false);
        assert_eq!(io.take_messages()[0].vector, 0x60);
    }

    #[test]
    fn delivery_mode_and_readonly_bits() {
        let mut io = IoApic::new(0);
        write_rte(&mut io, 0, (7 << 8) | RTE_REMOTE_IRR | RTE_DELIVERY_STATUS);
        assert_eq!(read(&mut io, REG_REDTBL) & 0x5000, 0);
        io.set_irq(0, true);
        assert_eq!(io.take_messages()[0].mode, DeliveryMode::ExtInt);
        assert_eq!(read(&mut io, 0x40), 0xffff_ffff, "beyond the table");
    }
}
