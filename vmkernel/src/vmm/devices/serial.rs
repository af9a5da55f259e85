//! 16550A UART (the PC's COM1 at 0x3f8, IRQ 4).
//!
//! Transmission is instantaneous: a byte written to THR lands in the VM's
//! [`OutputRing`] at once, so THR and the transmitter are always empty again
//! after the write. That matters for Linux's 8250 driver, which only sends
//! from its interrupt handler: the THRE interrupt must be pending again right
//! after each THR write (and after ETBEI goes from 0 to 1), and must go away
//! when IIR reports it or THR is written. Received bytes come from the host
//! (console input) through a bounded backlog that refills the 16-byte FIFO as
//! the guest drains it, so typed input is not lost to overruns.
//!
//! The IRQ output is a level ([`Serial::irq_level`]): high while IIR reports
//! an interrupt. It is not gated by MCR.OUT2 (QEMU does not gate it either).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Register offsets from the base port.
pub const RBR_THR_DLL: u64 = 0;
pub const IER_DLM: u64 = 1;
pub const IIR_FCR: u64 = 2;
pub const LCR: u64 = 3;
pub const MCR: u64 = 4;
pub const LSR: u64 = 5;
pub const MSR: u64 = 6;
pub const SCR: u64 = 7;

pub const IER_ERBFI: u8 = 1 << 0; // received data available
pub const IER_ETBEI: u8 = 1 << 1; // transmitter holding register empty
pub const IER_ELSI: u8 = 1 << 2; // receiver line status
pub const IER_EDSSI: u8 = 1 << 3; // modem status

pub const IIR_NO_INT: u8 = 0x01;
pub const IIR_MSI: u8 = 0x00;
pub const IIR_THRI: u8 = 0x02;
pub const IIR_RDI: u8 = 0x04;
pub const IIR_RLSI: u8 = 0x06;
pub const IIR_CTI: u8 = 0x0c; // character timeout
pub const IIR_FIFO_ENABLED: u8 = 0xc0;

pub const FCR_ENABLE: u8 = 1 << 0;
pub const FCR_CLEAR_RX: u8 = 1 << 1;
pub const FCR_CLEAR_TX: u8 = 1 << 2;

pub const LCR_DLAB: u8 = 1 << 7;

pub const MCR_DTR: u8 = 1 << 0;
pub const MCR_RTS: u8 = 1 << 1;
pub const MCR_OUT1: u8 = 1 << 2;
pub const MCR_OUT2: u8 = 1 << 3;
pub const MCR_LOOP: u8 = 1 << 4;

pub const LSR_DR: u8 = 1 << 0;
pub const LSR_OE: u8 = 1 << 1;
pub const LSR_PE: u8 = 1 << 2;
pub const LSR_FE: u8 = 1 << 3;
pub const LSR_BI: u8 = 1 << 4;
pub const LSR_THRE: u8 = 1 << 5;
pub const LSR_TEMT: u8 = 1 << 6;
pub const LSR_RXFE: u8 = 1 << 7;
const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

pub const MSR_DCTS: u8 = 1 << 0;
pub const MSR_DDSR: u8 = 1 << 1;
pub const MSR_TERI: u8 = 1 << 2;
pub const MSR_DDCD: u8 = 1 << 3;
pub const MSR_CTS: u8 = 1 << 4;
pub const MSR_DSR: u8 = 1 << 5;
pub const MSR_RI: u8 = 1 << 6;
pub const MSR_DCD: u8 = 1 << 7;
const MSR_DELTAS: u8 = 0x0f;

/// 16550A FIFO depth.
pub const FIFO_LEN: usize = 16;
/// Host bytes waiting for room in the receive FIFO.
pub const INPUT_BACKLOG: usize = 4096;
/// Default size of the per-VM console output ring.
pub const DEFAULT_OUTPUT_RING: usize = 64 * 1024;

/// Bounded ring of guest console output. Old bytes are dropped when full;
/// `total` counts every byte ever written so readers can follow the stream
/// with [`OutputRing::read_since`] (as `vmkcli vm console` does).
#[derive(Clone, Debug)]
pub struct OutputRing {
    buf: VecDeque<u8>,
    cap: usize,
    total: u64,
}

impl OutputRing {
    pub fn new(cap: usize) -> Self {
        OutputRing { buf: VecDeque::with_capacity(cap.min(4096)), cap: cap.max(1), total: 0 }
    }

    pub fn push(&mut self, b: u8) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(b);
        self.total += 1;
    }

    /// Bytes currently held (at most the capacity).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes written since creation, including dropped ones.
    pub fn total_written(&self) -> u64 {
        self.total
    }

    /// Everything held, oldest first.
    pub fn to_vec(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// Appends to `out` the bytes written at stream positions `>= pos`
    /// that are still held, and returns the position to continue from. A
    /// reader that fell behind by more than the capacity silently skips.
    pub fn read_since(&self, pos: u64, out: &mut Vec<u8>) -> u64 {
        let oldest = self.total - self.buf.len() as u64;
        let start = pos.clamp(oldest, self.total);
        out.extend(self.buf.iter().skip((start - oldest) as usize));
        self.total
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// One 16550A.
#[derive(Clone, Debug)]
pub struct Serial {
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr: u8,
    msr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fcr: u8,
    rx: VecDeque<u8>,
    backlog: VecDeque<u8>,
    /// THRE interrupt pending (set when THR becomes empty or ETBEI is
    /// enabled with THR empty; cleared by reading IIR while it is the
    /// reported interrupt, or by writing THR).
    thr_ipending: bool,
    output: OutputRing,
}

impl Default for Serial {
    fn default() -> Self {
        Self::new(DEFAULT_OUTPUT_RING)
    }
}

impl Serial {
    pub fn new(output_ring: usize) -> Self {
        Serial {
            ier: 0,
            lcr: 0x03, // 8N1, as firmware leaves it
            mcr: 0,
            lsr: LSR_THRE | LSR_TEMT,
            // No modem attached: carrier, data set ready and clear to send
            // asserted, so drivers that wait for CTS can transmit.
            msr: MSR_DCD | MSR_DSR | MSR_CTS,
            scr: 0,
            dll: 0x0c, // 9600 baud
            dlm: 0,
            fcr: 0,
            rx: VecDeque::with_capacity(FIFO_LEN),
            backlog: VecDeque::new(),
            thr_ipending: false,
            output: OutputRing::new(output_ring),
        }
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled() { FIFO_LEN } else { 1 }
    }

    fn rx_trigger(&self) -> usize {
        if !self.fifo_enabled() {
            return 1;
        }
        [1, 4, 8, 14][(self.fcr >> 6) as usize]
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// Moves backlog bytes into the receive FIFO while there is room.
    fn refill(&mut self) {
        while self.rx.len() < self.rx_capacity() {
            match self.backlog.pop_front() {
                Some(b) => self.rx.push_back(b),
                None => break,
            }
        }
        self.update_dr();
    }

    fn update_dr(&mut self) {
        if self.rx.is_empty() {
            self.lsr &= !LSR_DR;
        } else {
            self.lsr |= LSR_DR;
        }
    }

    /// Feeds host console input. Bytes beyond the backlog bound are dropped
    /// (returns how many were accepted). Ignored in loopback mode, where the
    /// receiver is connected to the transmitter instead.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        if self.loopback() {
            return 0;
        }
        let room = INPUT_BACKLOG.saturating_sub(self.backlog.len());
        let n = bytes.len().min(room);
        self.backlog.extend(&bytes[..n]);
        self.refill();
        n
    }

    /// Bytes the guest has not read yet (FIFO + backlog).
    pub fn input_pending(&self) -> usize {
        self.rx.len() + self.backlog.len()
    }

    pub fn output(&self) -> &OutputRing {
        &self.output
    }

    pub fn output_mut(&mut self) -> &mut OutputRing {
        &mut self.output
    }

    /// The interrupt IIR would report now, by 16550 priority:
    /// line status > received data / character timeout > THR empty > modem.
    fn pending_iid(&self) -> u8 {
        if self.ier & IER_ELSI != 0 && self.lsr & LSR_ERRORS != 0 {
            return IIR_RLSI;
        }
        if self.ier & IER_ERBFI != 0 && !self.rx.is_empty() {
            // Data below the trigger level would raise the timeout interrupt
            // after 4 character times; the host delivers whole bursts, so
            // report it at once rather than keep a timer.
            return if self.rx.len() >= self.rx_trigger() { IIR_RDI } else { IIR_CTI };
        }
        if self.ier & IER_ETBEI != 0 && self.thr_ipending {
            return IIR_THRI;
        }
        if self.ier & IER_EDSSI != 0 && self.msr & MSR_DELTAS != 0 {
            return IIR_MSI;
        }
        IIR_NO_INT
    }

    /// The level of the IRQ output.
    pub fn irq_level(&self) -> bool {
        self.pending_iid() != IIR_NO_INT
    }

    /// Modem inputs as seen in MSR bits 4..=7.
    fn modem_lines(&self) -> u8 {
        if self.loopback() {
            // Loopback: CTS = RTS, DSR = DTR, RI = OUT1, DCD = OUT2.
            let m = self.mcr;
            ((m & MCR_RTS != 0) as u8) << 4
                | ((m & MCR_DTR != 0) as u8) << 5
                | ((m & MCR_OUT1 != 0) as u8) << 6
                | ((m & MCR_OUT2 != 0) as u8) << 7
        } else {
            MSR_DCD | MSR_DSR | MSR_CTS
        }
    }

    fn set_modem_lines(&mut self, new: u8) {
        let old = self.msr & 0xf0;
        let changed = old ^ new;
        let mut deltas = 0;
        if changed & MSR_CTS != 0 {
            deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            deltas |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            deltas |= MSR_DDCD;
        }
        // TERI: trailing edge of RI (1 -> 0).
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            deltas |= MSR_TERI;
        }
        self.msr = new | (self.msr & MSR_DELTAS) | deltas;
    }

    fn transmit(&mut self, b: u8) {
        if self.loopback() {
            if self.rx.len() < self.rx_capacity() {
                self.rx.push_back(b);
            } else {
                self.lsr |= LSR_OE;
            }
            self.update_dr();
        } else {
            self.output.push(b);
        }
        // Sent at once: holding register and shift register empty again.
        self.lsr |= LSR_THRE | LSR_TEMT;
        self.thr_ipending = true;
    }

    /// Reads the register at `offset` (0..=7).
    pub fn read(&mut self, offset: u64) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.dll,
            RBR_THR_DLL => {
                let b = self.rx.pop_front().unwrap_or(0);
                self.refill();
                if self.rx.is_empty() {
                    self.lsr &= !LSR_RXFE;
                }
                b
            }
            IER_DLM if dlab => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => {
                let iid = self.pending_iid();
                if iid == IIR_THRI {
                    // Reading IIR acknowledges a THRE interrupt.
                    self.thr_ipending = false;
                }
                iid | if self.fifo_enabled() { IIR_FIFO_ENABLED } else { 0 }
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let v = self.lsr;
                // Error bits are cleared by reading LSR.
                self.lsr &= !(LSR_ERRORS | LSR_RXFE);
                v
            }
            MSR => {
                let v = self.msr;
                self.msr &= !MSR_DELTAS;
                v
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    /// Writes the register at `offset` (0..=7).
    pub fn write(&mut self, offset: u64, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            RBR_THR_DLL if dlab => self.dll = value,
            RBR_THR_DLL => {
                self.thr_ipending = false;
                self.lsr &= !(LSR_THRE | LSR_TEMT);
                self.transmit(value);
            }
            IER_DLM if dlab => self.dlm = value,
            IER_DLM => {
                let old = self.ier;
                self.ier = value & 0x0f;
                // Enabling ETBEI while THR is empty raises THRE at once; the
                // 8250 driver's start-up test and start_tx rely on it.
                if self.ier & IER_ETBEI != 0 && old & IER_ETBEI == 0 && self.lsr & LSR_THRE != 0 {
                    self.thr_ipending = true;
                }
            }
            IIR_FCR => {
                let was = self.fifo_enabled();
                if value & FCR_ENABLE == 0 {
                    // Disabling the FIFO clears both FIFOs.
                    self.rx.clear();
                    self.fcr = 0;
                } else {
                    if value & FCR_CLEAR_RX != 0 || !was {
                        self.rx.clear();
                    }
                    if value & FCR_CLEAR_TX != 0 {
                        self.lsr |= LSR_THRE | LSR_TEMT;
                    }
                    self.fcr = value & 0xc1;
                }
                self.refill();
            }
            LCR => self.lcr = value,
            MCR => {
                let was_loop = self.loopback();
                self.mcr = value & 0x1f;
                if was_loop && !self.loopback() {
                    self.refill();
                }
                let lines = self.modem_lines();
                self.set_modem_lines(lines);
            }
            LSR | MSR => {} // read-only (factory test only)
            SCR => self.scr = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_ring_keeps_the_newest_bytes_and_positions() {
        let mut r = OutputRing::new(4);
        for b in b"abcdef" {
            r.push(*b);
        }
        assert_eq!(r.to_vec(), b"cdef");
        assert_eq!(r.total_written(), 6);
        let mut out = Vec::new();
        assert_eq!(r.read_since(0, &mut out), 6); // fell behind: skips to oldest
        assert_eq!(out, b"cdef");
        out.clear();
        assert_eq!(r.read_since(5, &mut out), 6);
        assert_eq!(out, b"f");
        out.clear();
        assert_eq!(r.read_since(6, &mut out), 6);
        assert!(out.is_empty());
    }

    #[test]
    fn thr_writes_go_to_the_output_ring() {
        let mut s = Serial::new(64);
        for b in b"hi\n" {
            s.write(RBR_THR_DLL, *b);
        }
        assert_eq!(s.output().to_vec(), b"hi\n");
        assert_eq!(s.read(LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }

    #[test]
    fn dlab_switches_to_divisor_latch() {
        let mut s = Serial::default();
        s.write(LCR, 0x83);
        s.write(RBR_THR_DLL, 0x01); // 115200 baud
        s.write(IER_DLM, 0x00);
        assert_eq!(s.read(RBR_THR_DLL), 0x01);
        assert_eq!(s.read(IER_DLM), 0x00);
        s.write(LCR, 0x03);
        assert_eq!(s.read(IER_DLM), 0); // IER untouched
        assert!(s.output().is_empty(), "divisor writes are not output");
        s.write(SCR, 0x5a);
        assert_eq!(s.read(SCR), 0x5a);
    }

    #[test]
    fn thre_interrupt_flow_as_linux_8250_uses_it() {
        let mut s = Serial::default();
        assert_eq!(s.read(IIR_FCR), IIR_NO_INT);
        // Enabling ETBEI with THR empty raises THRE.
        s.write(IER_DLM, IER_ETBEI);
        assert!(s.irq_level());
        assert_eq!(s.read(IIR_FCR), IIR_THRI);
        // Reading IIR cleared it.
        assert!(!s.irq_level());
        assert_eq!(s.read(IIR_FCR), IIR_NO_INT);
        // Writing THR: the byte is sent at once and THRE is pending again.
        s.write(RBR_THR_DLL, b'x');
        assert!(s.irq_level());
        // Clearing ETBEI drops the line; setting it again re-raises (the
        // driver's UART_BUG_THRE probe expects a real 16550 to do so).
        s.write(IER_DLM, 0);
        assert!(!s.irq_level());
        s.write(IER_DLM, IER_ETBEI);
        assert_eq!(s.read(IIR_FCR), IIR_THRI);
        // With the FIFO on, IIR bits 6-7 are set.
        s.write(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
        assert_eq!(s.read(IIR_FCR), IIR_NO_INT | IIR_FIFO_ENABLED);
    }

    #[test]
    fn received_data_interrupt_and_fifo() {
        let mut s = Serial::default();
        s.write(IIR_FCR, FCR_ENABLE | 0x80); // trigger level 8
        s.write(IER_DLM, IER_ERBFI | IER_ETBEI);
        let _ = s.read(IIR_FCR); // consume THRE
        assert_eq!(s.enqueue_input(b"0123456789abcdefXYZ"), 19);
        // FIFO holds 16, the rest waits in the backlog.
        assert_eq!(s.input_pending(), 19);
        assert_eq!(s.read(IIR_FCR) & 0x0f, IIR_RDI);
        let mut got = Vec::new();
        while s.read(LSR) & LSR_DR != 0 {
            got.push(s.read(RBR_THR_DLL));
            if got.len() == 3 {
                // The backlog refilled the FIFO: still above the trigger.
                assert_eq!(s.read(IIR_FCR) & 0x0f, IIR_RDI);
            }
            if got.len() == 14 {
                // 5 left, below the trigger level: character timeout.
                assert_eq!(s.read(IIR_FCR) & 0x0f, IIR_CTI);
            }
        }
        assert_eq!(got, b"0123456789abcdefXYZ");
        assert!(!s.irq_level());
        s.enqueue_input(b"a");
        assert_eq!(s.read(IIR_FCR) & 0x0f, IIR_CTI);
    }

    #[test]
    fn non_fifo_mode_holds_one_byte() {
        let mut s = Serial::default();
        s.enqueue_input(b"ab");
        assert_eq!(s.read(LSR) & LSR_DR, LSR_DR);
        s.write(IER_DLM, IER_ERBFI);
        assert_eq!(s.read(IIR_FCR), IIR_RDI);
        assert_eq!(s.read(RBR_THR_DLL), b'a');
        assert_eq!(s.read(RBR_THR_DLL), b'b');
        assert_eq!(s.read(LSR) & LSR_DR, 0);
        assert_eq!(s.read(IIR_FCR), IIR_NO_INT);
    }

    #[test]
    fn priorities_line_status_over_rx_over_thre_over_modem() {
        let mut s = Serial::default();
        s.write(MCR, MCR_LOOP);
        let _ = s.read(MSR);
        s.write(IER_DLM, 0x0f);
        // Loopback: transmit two bytes into a 1-byte receiver -> overrun.
        s.write(RBR_THR_DLL, 1);
        s.write(RBR_THR_DLL, 2);
        s.write(MCR, MCR_LOOP | MCR_RTS); // CTS changes -> DCTS
        assert_eq!(s.read(IIR_FCR), IIR_RLSI);
        assert_eq!(s.read(LSR) & LSR_OE, LSR_OE); // reading LSR clears OE
        assert_eq!(s.read(IIR_FCR), IIR_RDI);
        assert_eq!(s.read(RBR_THR_DLL), 1);
        assert_eq!(s.read(IIR_FCR), IIR_THRI);
        assert_eq!(s.read(IIR_FCR), IIR_MSI);
        let msr = s.read(MSR);
        assert_eq!(msr & (MSR_DCTS | MSR_CTS), MSR_DCTS | MSR_CTS);
        assert_eq!(s.read(IIR_FCR), IIR_NO_INT);
        assert!(s.output().is_empty(), "loopback bytes never leave the UART");
    }

    #[test]
    fn loopback_modem_lines_follow_mcr() {
        let mut s = Serial::default();
        s.write(MCR, MCR_LOOP | MCR_DTR | MCR_OUT1 | MCR_OUT2);
        let m = s.read(MSR);
        assert_eq!(m & 0xf0, MSR_DSR | MSR_RI | MSR_DCD);
        s.write(MCR, MCR_LOOP | MCR_DTR | MCR_OUT2);
        assert_eq!(s.read(MSR) & MSR_TERI, MSR_TERI);
        // Leaving loopback restores the "no modem" lines.
        s.write(MCR, MCR_OUT2);
        assert_eq!(s.read(MSR) & 0xf0, MSR_DCD | MSR_DSR | MSR_CTS);
        // Input is ignored in loopback.
        s.write(MCR, MCR_LOOP);
        assert_eq!(s.enqueue_input(b"x"), 0);
    }

    #[test]
    fn backlog_is_bounded() {
        let mut s = Serial::default();
        let big = alloc::vec![b'z'; INPUT_BACKLOG + 100];
        assert_eq!(s.enqueue_input(&big), INPUT_BACKLOG);
    }
}
