//! 8259A programmable interrupt controller pair (master at 0x20/0x21, slave
//! at 0xa0/0xa1, cascaded on master IRQ 2) with the PIIX edge/level control
//! registers (ELCR) at 0x4d0/0x4d1.
//!
//! Inputs are levels ([`PicPair::set_irq`]); an edge-triggered input latches
//! IRR on a rising edge, a level-triggered one (ELCR bit set) follows the
//! line. The slave's INT output feeds master input 2 as a level, recomputed
//! after every change. The CPU side is [`PicPair::has_interrupt`] (the INT
//! pin) and [`PicPair::acknowledge`] (the INTA cycle that returns the vector;
//! spurious IRQ 7/15 when the request vanished before the acknowledge).

/// Port numbers.
pub const MASTER_CMD: u16 = 0x20;
pub const MASTER_DATA: u16 = 0x21;
pub const SLAVE_CMD: u16 = 0xa0;
pub const SLAVE_DATA: u16 = 0xa1;
pub const ELCR_MASTER: u16 = 0x4d0;
pub const ELCR_SLAVE: u16 = 0x4d1;

/// IRQ 0, 1, 2 (timer, keyboard, cascade) are always edge-triggered; on the
/// slave so are IRQ 8 (RTC) and 13 (FPU) — the PIIX ELCR masks.
const ELCR_MASK_MASTER: u8 = 0xf8;
const ELCR_MASK_SLAVE: u8 = 0xde;

/// One 8259A.
#[derive(Clone, Debug, Default)]
pub struct Pic8259 {
    pub irr: u8,
    pub isr: u8,
    pub imr: u8,
    /// Input line levels, for edge detection.
    last_level: u8,
    pub elcr: u8,
    elcr_mask: u8,
    /// ICW2: vector of IR0 (low 3 bits are the IR number).
    pub vector_base: u8,
    /// The IR with the lowest priority is `priority_add - 1` (rotation).
    priority_add: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    pub auto_eoi: bool,
    rotate_on_aeoi: bool,
    special_fully_nested: bool,
    /// 0: operational; 1..=3: expecting ICW2..ICW4.
    init_state: u8,
    init4: bool,
    single: bool,
    is_master: bool,
}

impl Pic8259 {
    fn new(is_master: bool) -> Self {
        Pic8259 {
            is_master,
            elcr_mask: if is_master { ELCR_MASK_MASTER } else { ELCR_MASK_SLAVE },
            ..Default::default()
        }
    }

    /// Priority level (0 = highest) of the best request in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8).find(|&p| mask & (1 << ((p + self.priority_add) & 7)) != 0).unwrap_or(8)
    }

    /// The IR this chip would signal now, if any.
    fn get_irq(&self) -> Option<u8> {
        let pri = self.priority(self.irr & !self.imr);
        if pri == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.is_master && self.special_fully_nested {
            // Special fully nested: the slave may interrupt again while one
            // of its inputs is in service.
            in_service &= !(1 << 2);
        }
        (pri < self.priority(in_service)).then_some((pri + self.priority_add) & 7)
    }

    fn set_irq(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.last_level & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.last_level |= bit;
        } else {
            self.last_level &= !bit;
        }
    }

    fn intack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.auto_eoi {
            if self.rotate_on_aeoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        // A level-triggered request stays in IRR while the line is high.
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn reset_for_icw1(&mut self) {
        let keep = Pic8259 {
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
            is_master: self.is_master,
            irr: self.irr & self.elcr,
            ..Default::default()
        };
        *self = keep;
    }

    fn write_cmd(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1 (bit 3, LTIM, is not supported on PIIX: ELCR decides).
            self.reset_for_icw1();
            self.init_state = 1;
            self.init4 = v & 0x01 != 0;
            self.single = v & 0x02 != 0;
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 0x01 != 0;
            }
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2: R, SL, EOI in bits 7..5, level in 2..0.
            let level = v & 7;
            match v >> 5 {
                0b000 => self.rotate_on_aeoi = false,
                0b100 => self.rotate_on_aeoi = true,
                0b001 | 0b101 => {
                    let pri = self.priority(self.isr);
                    if pri != 8 {
                        let irq = (pri + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if v >> 5 == 0b101 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                0b011 => self.isr &= !(1 << level),
                0b111 => {
                    self.isr &= !(1 << level);
                    self.priority_add = (level + 1) & 7;
                }
                0b110 => self.priority_add = (level + 1) & 7,
                _ => {} // 0b010: no operation
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_state {
            1 => {
                self.vector_base = v & 0xf8;
                self.init_state = if !self.single {
                    2
                } else if self.init4 {
                    3
                } else {
                    0
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 }, // ICW3: wiring is fixed
            3 => {
                self.auto_eoi = v & 0x02 != 0;
                self.special_fully_nested = v & 0x10 != 0;
                self.init_state = 0;
            }
            _ => self.imr = v, // OCW1
        }
    }
}

/// The cascaded pair of a PC.
#[derive(Clone, Debug)]
pub struct PicPair {
    pub master: Pic8259,
    pub slave: Pic8259,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    pub fn new() -> Self {
        PicPair { master: Pic8259::new(true), slave: Pic8259::new(false) }
    }

    /// The slave's INT output drives master IR2 as a level.
    fn update_cascade(&mut self) {
        if self.slave.get_irq().is_some() {
            self.master.irr |= 1 << 2;
        } else {
            self.master.irr &= !(1 << 2);
        }
    }

    /// Sets the level of ISA IRQ line `irq` (0..=15; 2 is the cascade and
    /// ignored).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 if irq != 2 => self.master.set_irq(irq, level),
            8..=15 => self.slave.set_irq(irq - 8, level),
            _ => return,
        }
        self.update_cascade();
    }

    /// The INT pin towards the CPU (LAPIC LINT0).
    pub fn has_interrupt(&self) -> bool {
        self.master.get_irq().is_some()
    }

    /// The vector an acknowledge would return now, without acknowledging.
    pub fn peek_vector(&self) -> Option<u8> {
        let irq = self.master.get_irq()?;
        Some(if irq == 2 {
            self.slave.vector_base + self.slave.get_irq().unwrap_or(7)
        } else {
            self.master.vector_base + irq
        })
    }

    /// The interrupt-acknowledge cycle: the vector of the highest-priority
    /// request, moved from IRR to ISR (unless auto-EOI). With no request
    /// left, the spurious vector of IR7 (IR15 when it vanished on the slave).
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.master.get_irq() {
            Some(2) => {
                let v = match self.slave.get_irq() {
                    Some(s) => {
                        self.slave.intack(s);
                        self.slave.vector_base + s
                    }
                    None => self.slave.vector_base + 7,
                };
                self.master.intack(2);
                v
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.vector_base + irq
            }
            None => self.master.vector_base + 7,
        };
        self.update_cascade();
        vector
    }

    /// Poll command result: 0x80 | IR if a request is pending (and
    /// acknowledged), else 0.
    fn poll_read(&mut self, slave: bool) -> u8 {
        if slave {
            self.slave.poll = false;
            let r = match self.slave.get_irq() {
                Some(irq) => {
                    self.slave.intack(irq);
                    // The master's cascade input is serviced too.
                    self.master.isr &= !(1 << 2);
                    0x80 | irq
                }
                None => 0,
            };
            self.update_cascade();
            r
        } else {
            self.master.poll = false;
            let r = match self.master.get_irq() {
                Some(irq) => {
                    self.master.intack(irq);
                    0x80 | irq
                }
                None => 0,
            };
            self.update_cascade();
            r
        }
    }

    /// Port read (0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1).
    pub fn read(&mut self, port: u16) -> u8 {
        let slave = port == SLAVE_CMD || port == SLAVE_DATA;
        match port {
            ELCR_MASTER => return self.master.elcr,
            ELCR_SLAVE => return self.slave.elcr,
            MASTER_CMD | MASTER_DATA | SLAVE_CMD | SLAVE_DATA => {}
            _ => return 0xff,
        }
        let chip = if slave { &self.slave } else { &self.master };
        if chip.poll {
            return self.poll_read(slave);
        }
        if port & 1 == 0 {
            if chip.read_isr { chip.isr } else { chip.irr }
        } else {
            chip.imr
        }
    }

    /// Port write (0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1).
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            MASTER_CMD => self.master.write_cmd(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_CMD => self.slave.write_cmd(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.elcr = value & self.master.elcr_mask,
            ELCR_SLAVE => self.slave.elcr = value & self.slave.elcr_mask,
            _ => {}
        }
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sequence Linux's `init_8259A` sends (vectors 0x30 and 0x38).
    fn linux_init(auto_eoi: bool) -> PicPair {
        let mut p = PicPair::new();
        p.write(MASTER_DATA, 0xff);
        p.write(SLAVE_DATA, 0xff);
        p.write(MASTER_CMD, 0x11); // ICW1: edge, cascade, ICW4
        p.write(MASTER_DATA, 0x30); // ICW2
        p.write(MASTER_DATA, 1 << 2); // ICW3: slave on IR2
        p.write(MASTER_DATA, if auto_eoi { 0x03 } else { 0x01 }); // ICW4: 8086
        p.write(SLAVE_CMD, 0x11);
        p.write(SLAVE_DATA, 0x38);
        p.write(SLAVE_DATA, 0x02);
        p.write(SLAVE_DATA, 0x01);
        p.write(MASTER_DATA, 0x00);
        p.write(SLAVE_DATA, 0x00);
        p
    }

    fn pulse(p: &mut PicPair, irq: u8) {
        p.set_irq(irq, true);
        p.set_irq(irq, false);
    }

    #[test]
    fn init_sequence_sets_vector_base_and_clears_masks() {
        let p = linux_init(false);
        assert_eq!(p.master.vector_base, 0x30);
        assert_eq!(p.slave.vector_base, 0x38);
        assert_eq!(p.master.imr, 0);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn edge_irq_is_acknowledged_and_eoied() {
        let mut p = linux_init(false);
        pulse(&mut p, 0);
        assert!(p.has_interrupt());
        assert_eq!(p.peek_vector(), Some(0x30));
        assert_eq!(p.acknowledge(), 0x30);
        assert_eq!(p.master.isr, 1);
        assert!(!p.has_interrupt());
        // Another edge while in service is held until EOI.
        pulse(&mut p, 0);
        assert!(!p.has_interrupt());
        p.write(MASTER_CMD, 0x20); // non-specific EOI
        assert_eq!(p.master.isr, 0);
        assert!(p.has_interrupt());
        // A line held high gives one edge only.
        assert_eq!(p.acknowledge(), 0x30);
        p.write(MASTER_CMD, 0x60); // specific EOI, IR0
        p.set_irq(4, true);
        assert_eq!(p.acknowledge(), 0x34);
        p.write(MASTER_CMD, 0x20);
        p.set_irq(4, true);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn priority_and_nesting() {
        let mut p = linux_init(false);
        pulse(&mut p, 4);
        assert_eq!(p.acknowledge(), 0x34);
        // IR1 has higher priority than IR4 in service: nests.
        pulse(&mut p, 1);
        pulse(&mut p, 6);
        assert_eq!(p.acknowledge(), 0x31);
        // IR6 waits behind IR1 and IR4.
        assert!(!p.has_interrupt());
        p.write(MASTER_CMD, 0x20); // EOIs IR1 (highest in service)
        assert!(!p.has_interrupt());
        p.write(MASTER_CMD, 0x20); // EOIs IR4
        assert_eq!(p.acknowledge(), 0x36);
    }

    #[test]
    fn mask_holds_requests() {
        let mut p = linux_init(false);
        p.write(MASTER_DATA, 1 << 3);
        pulse(&mut p, 3);
        assert!(!p.has_interrupt());
        assert_eq!(p.read(MASTER_DATA), 1 << 3);
        p.write(MASTER_DATA, 0);
        assert_eq!(p.acknowledge(), 0x33);
    }

    #[test]
    fn cascade_through_the_slave() {
        let mut p = linux_init(false);
        pulse(&mut p, 8 + 4); // IRQ 12
        assert!(p.has_interrupt());
        assert_eq!(p.peek_vector(), Some(0x3c));
        assert_eq!(p.acknowledge(), 0x3c);
        assert_eq!(p.slave.isr, 1 << 4);
        assert_eq!(p.master.isr, 1 << 2);
        // Slave's IRQ 8 outranks 12 on the slave but the master's IR2 is in
        // service: held until the master EOI (no special fully nested mode).
        pulse(&mut p, 8);
        assert!(!p.has_interrupt());
        p.write(SLAVE_CMD, 0x20);
        p.write(MASTER_CMD, 0x20);
        assert_eq!(p.acknowledge(), 0x38);
        // Masking the cascade input hides the slave.
        p.write(SLAVE_CMD, 0x20);
        p.write(MASTER_CMD, 0x20);
        p.write(MASTER_DATA, 1 << 2);
        pulse(&mut p, 9);
        assert!(!p.has_interrupt());
        p.write(MASTER_DATA, 0);
        assert_eq!(p.acknowledge(), 0x39);
    }

    #[test]
    fn spurious_when_the_request_vanished() {
        let mut p = linux_init(false);
        assert_eq!(p.acknowledge(), 0x37);
        assert_eq!(p.master.isr, 0, "spurious IR7 is not put in service");
        // Level-triggered request on the slave drops before INTA.
        p.write(ELCR_SLAVE, 1 << 3); // IRQ 11 level
        p.set_irq(11, true);
        assert!(p.has_interrupt());
        p.set_irq(11, false);
        assert!(!p.has_interrupt());
        // If the master had already latched IR2 (e.g. poll), INTA gives IR15.
        p.master.irr |= 1 << 2;
        assert_eq!(p.acknowledge(), 0x3f);
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut p = linux_init(false);
        p.write(ELCR_MASTER, 0xff);
        assert_eq!(p.read(ELCR_MASTER), 0xf8, "IRQ 0-2 cannot be level");
        p.write(ELCR_SLAVE, 0xff);
        assert_eq!(p.read(ELCR_SLAVE), 0xde);
        p.set_irq(5, true);
        assert_eq!(p.acknowledge(), 0x35);
        p.write(MASTER_CMD, 0x20);
        // Still high: requested again after EOI.
        assert!(p.has_interrupt());
        p.set_irq(5, false);
        assert!(!p.has_interrupt());
    }

    #[test]
    fn ocw3_reads_irr_and_isr() {
        let mut p = linux_init(false);
        p.write(MASTER_DATA, 0xff);
        pulse(&mut p, 1);
        p.write(MASTER_CMD, 0x0a); // read IRR
        assert_eq!(p.read(MASTER_CMD), 0x02);
        p.write(MASTER_DATA, 0);
        p.acknowledge();
        p.write(MASTER_CMD, 0x0b); // read ISR
        assert_eq!(p.read(MASTER_CMD), 0x02);
        p.write(MASTER_CMD, 0x0a);
        assert_eq!(p.read(MASTER_CMD), 0x00);
    }

    #[test]
    fn poll_command() {
        let mut p = linux_init(false);
        pulse(&mut p, 6);
        p.write(MASTER_CMD, 0x0c);
        assert_eq!(p.read(MASTER_CMD), 0x86);
        assert_eq!(p.master.isr, 1 << 6);
        p.write(MASTER_CMD, 0x0c);
        assert_eq!(p.read(MASTER_CMD), 0x00);
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let mut p = linux_init(true);
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x33);
        assert_eq!(p.master.isr, 0);
        // Rotate on AEOI: IR3 becomes lowest priority.
        p.write(MASTER_CMD, 0x80);
        pulse(&mut p, 3);
        assert_eq!(p.acknowledge(), 0x33);
        pulse(&mut p, 3);
        pulse(&mut p, 7);
        assert_eq!(p.acknowledge(), 0x37, "IR4 is now highest, then 5, 6, 7 ... 3");
        // Specific rotate (set priority): IR7 lowest again.
        p.write(MASTER_CMD, 0xc7);
        assert_eq!(p.acknowledge(), 0x33);
    }

    #[test]
    fn icw1_resets_state() {
        let mut p = linux_init(false);
        pulse(&mut p, 1);
        p.acknowledge();
        p.write(MASTER_CMD, 0x11);
        assert_eq!(p.master.isr, 0);
        assert_eq!(p.master.imr, 0);
        p.write(MASTER_DATA, 0x20);
        p.write(MASTER_DATA, 0x04);
        p.write(MASTER_DATA, 0x01);
        pulse(&mut p, 1);
        assert_eq!(p.acknowledge(), 0x21);
        // Single mode without ICW4: ICW1 then ICW2 only.
        p.write(MASTER_CMD, 0x12);
        p.write(MASTER_DATA, 0x40);
        p.write(MASTER_DATA, 0xfe); // OCW1 already
        assert_eq!(p.read(MASTER_DATA), 0xfe);
    }
}
