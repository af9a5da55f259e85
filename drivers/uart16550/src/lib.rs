//! 16550 UART driver.
//!
//! The driver is written against the [`PortIo`] trait so that its register
//! logic is safe code and can be unit-tested on the host with a fake port
//! space; the kernel supplies the real `in`/`out` instructions.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

/// Byte-wide port I/O, as the kernel's arch layer provides it.
pub trait PortIo {
    fn inb(&mut self, port: u16) -> u8;
    fn outb(&mut self, port: u16, value: u8);
}

/// Register offsets from the base port.
mod reg {
    pub const DATA: u16 = 0; // RBR/THR, DLL when DLAB=1
    pub const IER: u16 = 1; // DLM when DLAB=1
    pub const FCR: u16 = 2;
    pub const LCR: u16 = 3;
    pub const MCR: u16 = 4;
    pub const LSR: u16 = 5;
    pub const SCR: u16 = 7;
}

const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;
const LSR_TX_IDLE: u8 = 1 << 6;
const LCR_DLAB: u8 = 1 << 7;
const LCR_8N1: u8 = 0x03;

/// Standard base port of COM1.
pub const COM1: u16 = 0x3f8;

/// A 16550-compatible UART at a fixed base port.
pub struct Uart<P: PortIo> {
    base: u16,
    io: P,
}

impl<P: PortIo> Uart<P> {
    pub const fn new(base: u16, io: P) -> Self {
        Self { base, io }
    }

    /// Checks that a UART answers at `base` using the scratch register.
    pub fn probe(&mut self) -> bool {
        self.io.outb(self.base + reg::SCR, 0x5a);
        let a = self.io.inb(self.base + reg::SCR);
        self.io.outb(self.base + reg::SCR, 0xa5);
        let b = self.io.inb(self.base + reg::SCR);
        a == 0x5a && b == 0xa5
    }

    /// Programs `baud` 8N1 with FIFOs on and interrupts off.
    pub fn init(&mut self, baud: u32) {
        let divisor = (115_200 / baud.clamp(1, 115_200)) as u16;
        self.io.outb(self.base + reg::IER, 0x00);
        self.io.outb(self.base + reg::LCR, LCR_DLAB);
        self.io.outb(self.base + reg::DATA, divisor as u8);
        self.io.outb(self.base + reg::IER, (divisor >> 8) as u8);
        self.io.outb(self.base + reg::LCR, LCR_8N1);
        // Enable and clear FIFOs, 14-byte receive trigger.
        self.io.outb(self.base + reg::FCR, 0xc7);
        // DTR, RTS, OUT2 (OUT2 gates the IRQ line on PC hardware).
        self.io.outb(self.base + reg::MCR, 0x0b);
    }

    /// Enables or disables the received-data interrupt.
    pub fn set_rx_interrupt(&mut self, on: bool) {
        self.io.outb(self.base + reg::IER, if on { 0x01 } else { 0x00 });
    }

    pub fn write_byte(&mut self, byte: u8) {
        // Bounded wait: a missing or wedged UART must not hang the kernel.
        for _ in 0..100_000 {
            if self.io.inb(self.base + reg::LSR) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        self.io.outb(self.base + reg::DATA, byte);
    }

    /// Writes bytes, turning `\n` into `\r\n` as a terminal expects.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(b);
        }
    }

    pub fn try_read_byte(&mut self) -> Option<u8> {
        if self.io.inb(self.base + reg::LSR) & LSR_DATA_READY != 0 {
            Some(self.io.inb(self.base + reg::DATA))
        } else {
            None
        }
    }

    /// Waits (bounded) until the transmitter has shifted out every byte,
    /// so nothing is lost when the machine powers off right after.
    pub fn drain(&mut self) {
        for _ in 0..1_000_000 {
            if self.io.inb(self.base + reg::LSR) & LSR_TX_IDLE != 0 {
                return;
            }
        }
    }
}

impl<P: PortIo> core::fmt::Write for Uart<P> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake UART: registers in a map, transmitted bytes recorded.
    #[derive(Default)]
    struct FakePorts {
        regs: HashMap<u16, u8>,
        sent: Vec<u8>,
        dlab: bool,
        divisor: u16,
        rx: Vec<u8>,
    }

    impl PortIo for &mut FakePorts {
        fn inb(&mut self, port: u16) -> u8 {
            match port - COM1 {
                reg::LSR => {
                    let mut v = LSR_THR_EMPTY | LSR_TX_IDLE;
                    if !self.rx.is_empty() {
                        v |= LSR_DATA_READY;
                    }
                    v
                }
                reg::DATA if !self.dlab => {
                    if self.rx.is_empty() { 0 } else { self.rx.remove(0) }
                }
                _ => *self.regs.get(&port).unwrap_or(&0),
            }
        }
        fn outb(&mut self, port: u16, value: u8) {
            match port - COM1 {
                reg::LCR => self.dlab = value & LCR_DLAB != 0,
                reg::DATA if self.dlab => self.divisor = (self.divisor & 0xff00) | value as u16,
                reg::IER if self.dlab => {
                    self.divisor = (self.divisor & 0xff) | ((value as u16) << 8)
                }
                reg::DATA => self.sent.push(value),
                _ => {}
            }
            self.regs.insert(port, value);
        }
    }

    #[test]
    fn init_programs_divisor_and_leaves_dlab_clear() {
        let mut f = FakePorts::default();
        Uart::new(COM1, &mut f).init(38_400);
        assert_eq!(f.divisor, 3);
        assert!(!f.dlab);
    }

    #[test]
    fn newline_becomes_crlf() {
        let mut f = FakePorts::default();
        Uart::new(COM1, &mut f).write_bytes(b"a\nb");
        assert_eq!(f.sent, b"a\r\nb");
    }

    #[test]
    fn probe_uses_scratch_register() {
        let mut f = FakePorts::default();
        assert!(Uart::new(COM1, &mut f).probe());
    }

    #[test]
    fn reads_pending_bytes_then_none() {
        let mut f = FakePorts { rx: b"hi".to_vec(), ..Default::default() };
        let mut u = Uart::new(COM1, &mut f);
        assert_eq!(u.try_read_byte(), Some(b'h'));
        assert_eq!(u.try_read_byte(), Some(b'i'));
        assert_eq!(u.try_read_byte(), None);
    }
}
