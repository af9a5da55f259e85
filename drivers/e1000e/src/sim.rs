//! A simulated 82574L for the unit tests: the registers the driver uses,
//! with the side effects that matter (reset, EEPROM reads, write-1-to-
//! clear ICR, IMS/IMC, descriptor processing on TDT writes, frame
//! delivery into the receive ring). Host DMA addresses are virtual
//! addresses (`hal::host::HostHal`), so the model reads and writes the
//! driver's rings directly. A test mock only: the driver's acceptance
//! test runs against QEMU's e1000e.

use std::cell::RefCell;
use std::collections::BTreeMap;

use hal::Registers;

use crate::bits::*;
use crate::reg;

pub struct Sim {
    pub state: RefCell<State>,
}

pub struct State {
    pub regs: BTreeMap<usize, u32>,
    pub eeprom: [u16; 64],
    /// Whether RAL0/RAH0 are loaded from the EEPROM at reset.
    pub load_mac_at_reset: bool,
    /// Frames the device put on the wire.
    pub sent: Vec<Vec<u8>>,
    /// When set, TDT writes are accepted but nothing is sent (a stalled link).
    pub tx_stalled: bool,
    pub msix: bool,
    pub resets: u32,
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

impl Sim {
    pub fn new() -> Self {
        let mut eeprom = [0u16; 64];
        for i in 0..3 {
            eeprom[i] = u16::from_le_bytes([MAC[2 * i], MAC[2 * i + 1]]);
        }
        let sim = Sim {
            state: RefCell::new(State {
                regs: BTreeMap::new(),
                eeprom,
                load_mac_at_reset: true,
                sent: Vec::new(),
                tx_stalled: false,
                msix: false,
                resets: 0,
            }),
        };
        sim.state.borrow_mut().reset();
        sim
    }

    pub fn mac() -> [u8; 6] {
        MAC
    }

    pub fn reg(&self, offset: usize) -> u32 {
        self.state.borrow().get(offset)
    }

    /// The device receives `frame` from the wire. `false` if it had no
    /// descriptor (or receive is off): the frame is lost, as on hardware.
    pub fn deliver(&self, frame: &[u8], errors: u8) -> bool {
        let mut s = self.state.borrow_mut();
        if s.get(reg::RCTL) & RCTL_EN == 0 {
            return false;
        }
        let ring = ring_len(s.get(reg::RDLEN));
        let (head, tail) = (s.get(reg::RDH) as usize, s.get(reg::RDT) as usize);
        if ring == 0 || head == tail {
            return false;
        }
        let desc = base(&s, reg::RDBAL, reg::RDBAH) + head as u64 * 16;
        let buffer = read_u64(desc);
        assert!(frame.len() <= 2048, "sim frames fit one buffer");
        // SAFETY: `buffer` is the driver's live 2 KiB receive buffer (host
        // DMA: physical = virtual) and the device owns it now.
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), buffer as *mut u8, frame.len()) };
        let status = (RX_STATUS_DD | RX_STATUS_EOP) as u64;
        write_u64(desc + 8, frame.len() as u64 | status << 32 | (errors as u64) << 40);
        s.set(reg::RDH, ((head + 1) % ring) as u32);
        let cause = if s.msix { INT_RXQ0 } else { INT_RXT0 };
        s.raise(cause);
        true
    }
}

fn ring_len(rdlen: u32) -> usize {
    rdlen as usize / 16
}

fn base(s: &State, low: usize, high: usize) -> u64 {
    (s.get(high) as u64) << 32 | s.get(low) as u64
}

fn read_u64(addr: u64) -> u64 {
    // SAFETY: `addr` is a descriptor in the driver's live ring (host DMA:
    // physical = virtual), 8-byte aligned.
    unsafe { (addr as *const u64).read_volatile() }
}

fn write_u64(addr: u64, value: u64) {
    // SAFETY: as in `read_u64`; the device owns this descriptor now.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

impl State {
    fn get(&self, offset: usize) -> u32 {
        self.regs.get(&offset).copied().unwrap_or(0)
    }

    fn set(&mut self, offset: usize, value: u32) {
        self.regs.insert(offset, value);
    }

    fn raise(&mut self, cause: u32) {
        let icr = self.get(reg::ICR) | cause;
        self.set(reg::ICR, icr);
    }

    fn reset(&mut self) {
        self.resets += 1;
        self.regs.clear();
        self.set(reg::STATUS, STATUS_LU);
        if self.load_mac_at_reset {
            let e = self.eeprom;
            self.set(reg::RAL0, e[0] as u32 | (e[1] as u32) << 16);
            self.set(reg::RAH0, e[2] as u32 | RAH_AV);
        }
    }

    /// Sends what lies between TDH and TDT, writing DD back where RS asks.
    fn transmit(&mut self) {
        if self.tx_stalled || self.get(reg::TCTL) & TCTL_EN == 0 {
            return;
        }
        let ring = ring_len(self.get(reg::TDLEN));
        let (mut head, tail) = (self.get(reg::TDH) as usize, self.get(reg::TDT) as usize);
        let ring_base = base(self, reg::TDBAL, reg::TDBAH);
        while ring != 0 && head != tail {
            let desc = ring_base + head as u64 * 16;
            let (buffer, word) = (read_u64(desc), read_u64(desc + 8));
            let (len, cmd) = (word as u16 as usize, (word >> 24) as u8);
            assert_ne!(cmd & TX_CMD_EOP, 0, "the driver sends one descriptor per frame");
            // SAFETY: `buffer` is the driver's live transmit buffer of at
            // least `len` bytes (it set the length), owned by the device now.
            let frame = unsafe { std::slice::from_raw_parts(buffer as *const u8, len) }.to_vec();
            self.sent.push(frame);
            if cmd & TX_CMD_RS != 0 {
                write_u64(desc + 8, word | (TX_STATUS_DD as u64) << 32);
            }
            head = (head + 1) % ring;
        }
        self.set(reg::TDH, head as u32);
        self.raise(if self.msix { INT_TXQ0 } else { INT_TXDW });
    }
}

impl Registers for Sim {
    fn read32(&self, offset: usize) -> u32 {
        let mut s = self.state.borrow_mut();
        let value = s.get(offset);
        if offset == reg::ICR && !s.msix {
            s.set(reg::ICR, 0); // read-to-clear outside MSI-X mode
        }
        value
    }

    fn write32(&self, offset: usize, value: u32) {
        let mut s = self.state.borrow_mut();
        match offset {
            reg::CTRL if value & CTRL_RST != 0 => s.reset(),
            reg::ICR => {
                let icr = s.get(reg::ICR) & !value;
                s.set(reg::ICR, icr);
            }
            reg::IMS => {
                let ims = s.get(reg::IMS) | value;
                s.set(reg::IMS, ims);
            }
            reg::IMC => {
                let ims = s.get(reg::IMS) & !value;
                s.set(reg::IMS, ims);
            }
            reg::EERD if value & EERD_START != 0 => {
                let word = (value >> EERD_ADDR_SHIFT) as usize & 0x3fff;
                let data = s.eeprom.get(word).copied().unwrap_or(0xffff);
                s.set(reg::EERD, (data as u32) << 16 | EERD_DONE);
            }
            reg::TDT => {
                s.set(reg::TDT, value);
                s.transmit();
            }
            _ => s.set(offset, value),
        }
    }
}
