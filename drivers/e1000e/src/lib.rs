//! Intel 82574L Gigabit Ethernet (QEMU's `-device e1000e`, the default
//! NIC of `-machine q35`, and a common server LOM).
//!
//! The driver programs the device through `hal::Registers` (BAR 0) and
//! shares two descriptor rings with it in `hal::Dma` memory:
//! - receive: legacy descriptors (RFCTL.EXSTEN stays clear), each with a
//!   2 KiB buffer fixed at init. A frame is handed up in place and its
//!   descriptor given back by advancing RDT — no allocation after init.
//! - transmit: legacy descriptors, each with its own 2 KiB buffer; the
//!   frame is built in place, RS asks for a DD write-back, and buffers are
//!   reclaimed when `transmit` finds DD set.
//!
//! Interrupts: one cause register (ICR, cleared by writing its bits back,
//! which works in every interrupt mode) and one mask (IMS/IMC). With
//! MSI-X, IVAR routes the receive, transmit and other causes (link) to
//! table entries; [`E1000e::route_causes_to_msix`] sends all three to one
//! entry. With MSI or INTx nothing more is needed.
//!
//! What the device writes (descriptor status, lengths, head indices) is
//! checked before use: a bad value drops a frame, never indexes outside
//! a ring or buffer.
#![cfg_attr(not(test), no_std)]

use hal::{Counters, Dma, EthernetDevice, Hal, InterruptCause, MacAddress, Registers};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub const VENDOR_INTEL: u16 = 0x8086;
/// 82574L; QEMU's e1000e presents this ID.
pub const DEVICE_82574L: u16 = 0x10d3;
/// 82574 variants that share the programming model.
const DEVICE_IDS: [u16; 2] = [DEVICE_82574L, 0x10f6];

/// Whether this driver handles the PCI function `vendor:device`.
pub fn supports(vendor: u16, device: u16) -> bool {
    vendor == VENDOR_INTEL && DEVICE_IDS.contains(&device)
}

/// Register offsets (82574 datasheet, section 10).
pub mod reg {
    pub const CTRL: usize = 0x0000;
    pub const STATUS: usize = 0x0008;
    pub const EERD: usize = 0x0014;
    pub const CTRL_EXT: usize = 0x0018;
    pub const ICR: usize = 0x00c0;
    pub const IMS: usize = 0x00d0;
    pub const IMC: usize = 0x00d8;
    pub const IVAR: usize = 0x00e4;
    pub const RCTL: usize = 0x0100;
    pub const TCTL: usize = 0x0400;
    pub const TIPG: usize = 0x0410;
    pub const RDBAL: usize = 0x2800;
    pub const RDBAH: usize = 0x2804;
    pub const RDLEN: usize = 0x2808;
    pub const RDH: usize = 0x2810;
    pub const RDT: usize = 0x2818;
    pub const TDBAL: usize = 0x3800;
    pub const TDBAH: usize = 0x3804;
    pub const TDLEN: usize = 0x3808;
    pub const TDH: usize = 0x3810;
    pub const TDT: usize = 0x3818;
    pub const RFCTL: usize = 0x5008;
    pub const MTA: usize = 0x5200;
    pub const RAL0: usize = 0x5400;
    pub const RAH0: usize = 0x5404;
}

/// Register bits.
pub mod bits {
    pub const CTRL_LRST: u32 = 1 << 3;
    pub const CTRL_ASDE: u32 = 1 << 5;
    pub const CTRL_SLU: u32 = 1 << 6;
    pub const CTRL_ILOS: u32 = 1 << 7;
    pub const CTRL_RST: u32 = 1 << 26;
    pub const CTRL_VME: u32 = 1 << 30;
    pub const CTRL_PHY_RST: u32 = 1 << 31;
    pub const STATUS_LU: u32 = 1 << 1;
    pub const EERD_START: u32 = 1 << 0;
    pub const EERD_DONE: u32 = 1 << 1;
    pub const EERD_ADDR_SHIFT: u32 = 2;
    pub const CTRL_EXT_PBA_CLR: u32 = 1 << 31;
    pub const RCTL_EN: u32 = 1 << 1;
    /// Unicast promiscuous: frames for VMs behind the host's virtual
    /// switch (the NIC is its uplink) carry their own MACs.
    pub const RCTL_UPE: u32 = 1 << 3;
    pub const RCTL_MPE: u32 = 1 << 4;
    pub const RCTL_BAM: u32 = 1 << 15;
    pub const RCTL_SECRC: u32 = 1 << 26;
    pub const TCTL_EN: u32 = 1 << 1;
    pub const TCTL_PSP: u32 = 1 << 3;
    pub const TCTL_CT: u32 = 0x0f << 4;
    pub const TCTL_COLD: u32 = 0x3f << 12;
    /// IPGT 8, IPGR1 8, IPGR2 6: the copper defaults.
    pub const TIPG_DEFAULT: u32 = 8 | 8 << 10 | 6 << 20;
    pub const RFCTL_ACK_DIS: u32 = 1 << 13;
    pub const RAH_AV: u32 = 1 << 31;
    // ICR/IMS/IMC causes.
    pub const INT_TXDW: u32 = 1 << 0;
    pub const INT_TXQE: u32 = 1 << 1;
    pub const INT_LSC: u32 = 1 << 2;
    pub const INT_RXDMT0: u32 = 1 << 4;
    pub const INT_RXO: u32 = 1 << 6;
    pub const INT_RXT0: u32 = 1 << 7;
    pub const INT_RXQ0: u32 = 1 << 20;
    pub const INT_TXQ0: u32 = 1 << 22;
    pub const INT_OTHER: u32 = 1 << 24;
    pub const INT_ASSERTED: u32 = 1 << 31;
    pub const INT_RX: u32 = INT_RXT0 | INT_RXQ0 | INT_RXO | INT_RXDMT0;
    pub const INT_TX: u32 = INT_TXDW | INT_TXQ0 | INT_TXQE;
    /// What the driver listens to: receive, transmit done, link changes
    /// (and, under MSI-X, the per-queue and "other" summary causes).
    pub const INT_ENABLED: u32 = INT_RX | INT_TXDW | INT_TXQ0 | INT_LSC | INT_OTHER;
    // IVAR (82574): 3-bit vector + valid bit per cause.
    pub const IVAR_VALID: u32 = 1 << 3;
    pub const IVAR_RXQ0_SHIFT: u32 = 0;
    pub const IVAR_TXQ0_SHIFT: u32 = 8;
    pub const IVAR_OTHER_SHIFT: u32 = 16;
    pub const IVAR_TX_EVERY_WRITEBACK: u32 = 1 << 31;
    // Descriptor bits.
    pub const RX_STATUS_DD: u8 = 1 << 0;
    pub const RX_STATUS_EOP: u8 = 1 << 1;
    /// CE, SE, SEQ, CXE, RXE: a frame with any of these is dropped.
    pub const RX_ERRORS: u8 = 0b1001_0111;
    pub const TX_CMD_EOP: u8 = 1 << 0;
    pub const TX_CMD_IFCS: u8 = 1 << 1;
    pub const TX_CMD_RS: u8 = 1 << 3;
    pub const TX_STATUS_DD: u8 = 1 << 0;
}

use bits::*;

/// Descriptors per ring (a multiple of 8: the ring length must be a
/// multiple of 128 bytes) and the buffer each one owns.
pub const RX_RING: usize = 128;
pub const TX_RING: usize = 128;
pub const BUFFER_SIZE: usize = 2048;
const DESC_SIZE: usize = 16;
/// The longest frame sent or accepted, without FCS.
pub const MAX_FRAME: usize = 1514;
/// Register polls before a reset or EEPROM read counts as hung.
const POLL_LIMIT: u32 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No DMA memory for the rings or buffers.
    NoMemory,
    /// CTRL.RST did not clear.
    ResetTimeout,
    /// Neither the receive-address registers nor the EEPROM hold a valid
    /// unicast address.
    NoMacAddress,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::NoMemory => "no DMA memory for the rings",
            Error::ResetTimeout => "the device did not finish its reset",
            Error::NoMacAddress => "no valid MAC address in RAL/RAH or the EEPROM",
        })
    }
}

struct RxRing<H: Hal> {
    descs: Dma<H>,
    buffers: Dma<H>,
    /// The descriptor the device fills next (the driver's view of RDH).
    next: usize,
    frames: u64,
    bytes: u64,
    dropped: u64,
}

struct TxRing<H: Hal> {
    descs: Dma<H>,
    buffers: Dma<H>,
    /// Where the next frame goes (the driver's view of TDT).
    tail: usize,
    /// The oldest descriptor not yet reclaimed.
    clean: usize,
    in_flight: usize,
    /// Where a reply goes when every buffer is in flight (then dropped).
    scratch: [u8; MAX_FRAME],
    frames: u64,
    bytes: u64,
    errors: u64,
}

/// A driven 82574L.
pub struct E1000e<H: Hal, R: Registers> {
    regs: R,
    mac: MacAddress,
    rx: RxRing<H>,
    tx: TxRing<H>,
    interrupts: u64,
}

impl<H: Hal, R: Registers> E1000e<H, R> {
    /// Resets the device and brings it up: MAC address, rings, receive
    /// and transmit enabled, link asked up. Interrupts stay masked until
    /// `set_interrupts_enabled(true)`. The PCI function must already
    /// decode its BAR and master the bus.
    pub fn new(regs: R) -> Result<Self, Error> {
        let rx = RxRing {
            descs: Dma::for_bytes(RX_RING * DESC_SIZE).ok_or(Error::NoMemory)?,
            buffers: Dma::for_bytes(RX_RING * BUFFER_SIZE).ok_or(Error::NoMemory)?,
            next: 0,
            frames: 0,
            bytes: 0,
            dropped: 0,
        };
        let tx = TxRing {
            descs: Dma::for_bytes(TX_RING * DESC_SIZE).ok_or(Error::NoMemory)?,
            buffers: Dma::for_bytes(TX_RING * BUFFER_SIZE).ok_or(Error::NoMemory)?,
            tail: 0,
            clean: 0,
            in_flight: 0,
            scratch: [0; MAX_FRAME],
            frames: 0,
            bytes: 0,
            errors: 0,
        };
        reset(&regs)?;
        let mac = mac_address(&regs).ok_or(Error::NoMacAddress)?;
        let mut dev = E1000e { regs, mac, rx, tx, interrupts: 0 };
        dev.bring_up();
        Ok(dev)
    }

    fn bring_up(&mut self) {
        let r = &self.regs;
        let ctrl = r.read32(reg::CTRL) & !(CTRL_LRST | CTRL_PHY_RST | CTRL_ILOS | CTRL_VME);
        r.write32(reg::CTRL, ctrl | CTRL_SLU | CTRL_ASDE);
        // Receive exactly our address (plus broadcast and multicast below).
        let m = self.mac.0;
        r.write32(reg::RAL0, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        r.write32(reg::RAH0, u16::from_le_bytes([m[4], m[5]]) as u32 | RAH_AV);
        for i in 0..128 {
            r.write32(reg::MTA + 4 * i, 0);
        }

        // Receive ring: every descriptor points at its buffer; all but one
        // belong to the device (RDT == RDH would mean none).
        for i in 0..RX_RING {
            let buffer = self.rx.buffers.phys_at(i * BUFFER_SIZE);
            self.rx.descs.write_u64(i * DESC_SIZE, buffer);
            self.rx.descs.write_u64(i * DESC_SIZE + 8, 0);
        }
        let base = self.rx.descs.phys();
        r.write32(reg::RDBAL, base as u32);
        r.write32(reg::RDBAH, (base >> 32) as u32);
        r.write32(reg::RDLEN, (RX_RING * DESC_SIZE) as u32);
        r.write32(reg::RDH, 0);
        r.write32(reg::RDT, (RX_RING - 1) as u32);
        self.rx.next = 0;
        // BSIZE 00 = 2048 bytes; strip the CRC; broadcast and all multicast
        // (IPv6 neighbour discovery) without a filter table to keep.
        r.write32(reg::RCTL, RCTL_EN | RCTL_BAM | RCTL_UPE | RCTL_MPE | RCTL_SECRC);

        // Transmit ring, empty (TDH == TDT).
        for i in 0..TX_RING {
            self.tx.descs.write_u64(i * DESC_SIZE, self.tx.buffers.phys_at(i * BUFFER_SIZE));
            self.tx.descs.write_u64(i * DESC_SIZE + 8, 0);
        }
        let base = self.tx.descs.phys();
        r.write32(reg::TDBAL, base as u32);
        r.write32(reg::TDBAH, (base >> 32) as u32);
        r.write32(reg::TDLEN, (TX_RING * DESC_SIZE) as u32);
        r.write32(reg::TDH, 0);
        r.write32(reg::TDT, 0);
        r.write32(reg::TIPG, TIPG_DEFAULT);
        r.write32(reg::TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
    }

    /// Routes the receive, transmit and other (link) causes to MSI-X table
    /// entry `entry` (0..=4 on the 82574). Call after enabling MSI-X on the
    /// PCI function.
    pub fn route_causes_to_msix(&mut self, entry: u8) {
        let v = (entry as u32 & 0x7) | IVAR_VALID;
        let ivar = v << IVAR_RXQ0_SHIFT | v << IVAR_TXQ0_SHIFT | v << IVAR_OTHER_SHIFT | IVAR_TX_EVERY_WRITEBACK;
        self.regs.write32(reg::IVAR, ivar);
        // The 82574 erratum workaround Linux applies in MSI-X mode, and
        // pending-bit-array clearing.
        self.regs.write32(reg::RFCTL, self.regs.read32(reg::RFCTL) | RFCTL_ACK_DIS);
        self.regs.write32(reg::CTRL_EXT, self.regs.read32(reg::CTRL_EXT) | CTRL_EXT_PBA_CLR);
    }

    /// Reclaims transmit descriptors the device wrote back.
    fn reclaim_tx(&mut self) {
        while self.tx.in_flight > 0 {
            let status = self.tx.descs.read_u16(self.tx.clean * DESC_SIZE + 12) as u8;
            if status & TX_STATUS_DD == 0 {
                break;
            }
            self.tx.clean = (self.tx.clean + 1) % TX_RING;
            self.tx.in_flight -= 1;
        }
    }

    /// The next complete, error-free frame's descriptor, dropping (and
    /// giving back) bad ones on the way.
    fn next_rx(&mut self) -> Option<(usize, usize)> {
        for _ in 0..RX_RING {
            let i = self.rx.next;
            let d = i * DESC_SIZE;
            let word = self.rx.descs.read_u64(d + 8);
            let (len, status, errors) = (word as u16 as usize, (word >> 32) as u8, (word >> 40) as u8);
            if status & RX_STATUS_DD == 0 {
                return None;
            }
            if status & RX_STATUS_EOP != 0 && errors & RX_ERRORS == 0 && (14..=BUFFER_SIZE).contains(&len) {
                return Some((i, len.min(MAX_FRAME)));
            }
            // Chained (longer than a buffer), errored or malformed: drop.
            self.rx.dropped += 1;
            give_back_rx(&mut self.rx, &self.regs, i);
        }
        None
    }
}

/// Clears descriptor `i` and hands it back to the device.
fn give_back_rx<H: Hal>(rx: &mut RxRing<H>, regs: &impl Registers, i: usize) {
    rx.descs.write_u64(i * DESC_SIZE + 8, 0);
    rx.next = (i + 1) % RX_RING;
    // The cleared status must reach memory before the device may reuse it.
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    regs.write32(reg::RDT, i as u32);
}

/// Masks every interrupt, resets the MAC and waits for it.
fn reset(r: &impl Registers) -> Result<(), Error> {
    r.write32(reg::IMC, !0);
    r.write32(reg::RCTL, 0);
    r.write32(reg::TCTL, 0);
    r.write32(reg::CTRL, r.read32(reg::CTRL) | CTRL_RST);
    let mut polls = 0;
    while r.read32(reg::CTRL) & CTRL_RST != 0 {
        polls += 1;
        if polls > POLL_LIMIT {
            return Err(Error::ResetTimeout);
        }
        core::hint::spin_loop();
    }
    r.write32(reg::IMC, !0);
    let _ = r.read32(reg::ICR);
    Ok(())
}

/// The MAC address: what the hardware loaded into RAL0/RAH0 from the
/// EEPROM at reset, else the EEPROM's words 0..3 read through EERD.
fn mac_address(r: &impl Registers) -> Option<MacAddress> {
    let (low, high) = (r.read32(reg::RAL0), r.read32(reg::RAH0));
    if high & RAH_AV != 0 {
        let [a, b, c, d] = low.to_le_bytes();
        let [e, f, ..] = high.to_le_bytes();
        let mac = MacAddress([a, b, c, d, e, f]);
        if mac.is_valid_unicast() {
            return Some(mac);
        }
    }
    let mut bytes = [0u8; 6];
    for word in 0..3u32 {
        let w = eeprom_read(r, word)?;
        bytes[2 * word as usize..2 * word as usize + 2].copy_from_slice(&w.to_le_bytes());
    }
    Some(MacAddress(bytes)).filter(MacAddress::is_valid_unicast)
}

fn eeprom_read(r: &impl Registers, word: u32) -> Option<u16> {
    r.write32(reg::EERD, word << EERD_ADDR_SHIFT | EERD_START);
    for _ in 0..POLL_LIMIT {
        let v = r.read32(reg::EERD);
        if v & EERD_DONE != 0 {
            return Some((v >> 16) as u16);
        }
        core::hint::spin_loop();
    }
    None
}

/// A received frame in the receive ring.
pub struct RxToken<'a, H: Hal, R: Registers> {
    rx: &'a mut RxRing<H>,
    regs: &'a R,
    index: usize,
    len: usize,
}

impl<H: Hal, R: Registers> hal::RxToken for RxToken<'_, H, R> {
    fn consume<T>(self, f: impl FnOnce(&[u8]) -> T) -> T {
        let result = f(self.rx.buffers.bytes(self.index * BUFFER_SIZE, self.len).unwrap_or(&[]));
        self.rx.frames += 1;
        self.rx.bytes += self.len as u64;
        give_back_rx(self.rx, self.regs, self.index);
        result
    }
}

/// A transmit buffer (or the scratch buffer, when the ring is full).
pub struct TxToken<'a, H: Hal, R: Registers> {
    tx: &'a mut TxRing<H>,
    regs: &'a R,
    /// No free descriptor: fill the scratch buffer and drop it.
    full: bool,
}

impl<H: Hal, R: Registers> hal::TxToken for TxToken<'_, H, R> {
    fn consume<T>(self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
        let tx = self.tx;
        if self.full || len > MAX_FRAME {
            tx.errors += 1;
            return f(&mut tx.scratch[..len.min(MAX_FRAME)]);
        }
        let i = tx.tail;
        let Some(buffer) = tx.buffers.bytes_mut(i * BUFFER_SIZE, len) else {
            tx.errors += 1;
            return f(&mut tx.scratch[..len]);
        };
        let result = f(buffer);
        let d = i * DESC_SIZE;
        // length | CSO 0 | CMD << 24; then status/CSS/special cleared.
        let cmd = (TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS) as u64;
        tx.descs.write_u64(d, tx.buffers.phys_at(i * BUFFER_SIZE));
        tx.descs.write_u64(d + 8, len as u64 | cmd << 24);
        tx.tail = (i + 1) % TX_RING;
        tx.in_flight += 1;
        tx.frames += 1;
        tx.bytes += len as u64;
        // Descriptor and buffer before the doorbell.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        self.regs.write32(reg::TDT, tx.tail as u32);
        result
    }
}

impl<H: Hal, R: Registers> EthernetDevice for E1000e<H, R> {
    type RxToken<'a>
        = RxToken<'a, H, R>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, H, R>
    where
        Self: 'a;

    fn receive(&mut self) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (index, len) = self.next_rx()?;
        self.reclaim_tx();
        let full = self.tx.in_flight >= TX_RING - 1;
        Some((
            RxToken { rx: &mut self.rx, regs: &self.regs, index, len },
            TxToken { tx: &mut self.tx, regs: &self.regs, full },
        ))
    }

    fn transmit(&mut self) -> Option<Self::TxToken<'_>> {
        self.reclaim_tx();
        // One descriptor stays unused: TDT == TDH means an empty ring.
        (self.tx.in_flight < TX_RING - 1).then_some(TxToken { tx: &mut self.tx, regs: &self.regs, full: false })
    }

    fn mac_address(&self) -> MacAddress {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        self.regs.read32(reg::STATUS) & STATUS_LU != 0
    }

    fn max_frame_len(&self) -> usize {
        MAX_FRAME
    }

    fn acknowledge_interrupt(&mut self) -> InterruptCause {
        let icr = self.regs.read32(reg::ICR);
        // Reading clears ICR under MSI and INTx, not under MSI-X; writing
        // the bits back clears them in every mode.
        self.regs.write32(reg::ICR, icr);
        let cause = InterruptCause {
            rx: icr & INT_RX != 0,
            tx: icr & INT_TX != 0,
            link: icr & INT_LSC != 0,
            other: icr & !(INT_RX | INT_TX | INT_LSC | INT_OTHER | INT_ASSERTED) != 0,
        };
        if cause.any() {
            self.interrupts += 1;
        }
        cause
    }

    fn set_interrupts_enabled(&mut self, enabled: bool) {
        if enabled {
            self.regs.write32(reg::IMS, INT_ENABLED);
        } else {
            self.regs.write32(reg::IMC, !0);
        }
    }

    fn counters(&self) -> Counters {
        Counters {
            rx_frames: self.rx.frames,
            rx_bytes: self.rx.bytes,
            rx_dropped: self.rx.dropped,
            tx_frames: self.tx.frames,
            tx_bytes: self.tx.bytes,
            tx_errors: self.tx.errors,
            interrupts: self.interrupts,
        }
    }

    fn model(&self) -> &'static str {
        "e1000e"
    }
}

impl<H: Hal, R: Registers> Drop for E1000e<H, R> {
    /// Stops the device before the rings' memory is freed.
    fn drop(&mut self) {
        let _ = reset(&self.regs);
    }
}

#[cfg(test)]
mod smoltcp_phy;
