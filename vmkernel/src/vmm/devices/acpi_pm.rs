//! The ACPI fixed-hardware PM1 block (ACPI §4.8.3) at the ports the FADT
//! names (`firmware::FirmwareTablesConfig`: 0x600 event block, 0x604 control
//! block, 0x608 PM timer), so guests power off through `\_S5` and get a
//! power-button event:
//!
//! - PM1 status (+0, write 1 to clear) and enable (+2): the power button
//!   (bit 8) raises the SCI while both are set;
//! - PM1 control (+4): SLP_EN with SLP_TYP = the `\_S5` value asks the VMM
//!   to power the VM off; SCI_EN reads 1 (always in ACPI mode: the FADT has
//!   no SMI command port);
//! - the PM timer (+8): 32 bits at 3.579545 MHz of guest time.
//!
//! Accesses are byte-granular over the 12-byte block, as the ports are.

pub const PM_BLOCK_LEN: u64 = 12;
pub const PM_TIMER_HZ: u64 = 3_579_545;
pub const PM1_STS_TMR: u16 = 1 << 0;
pub const PM1_STS_PWRBTN: u16 = 1 << 8;
pub const PM1_STS_WAK: u16 = 1 << 15;
pub const PM1_EN_PWRBTN: u16 = 1 << 8;
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;

/// What a write asks of the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmEffect {
    /// The guest entered S5 (soft off).
    PowerOff,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiPm {
    status: u16,
    enable: u16,
    control: u16,
    /// SLP_TYP of `\_S5` in the DSDT.
    s5_slp_typ: u8,
}

impl AcpiPm {
    pub fn new(s5_slp_typ: u8) -> AcpiPm {
        AcpiPm { status: 0, enable: 0, control: PM1_CNT_SCI_EN, s5_slp_typ: s5_slp_typ & 7 }
    }

    /// The PM timer at guest time `now_ns`.
    pub fn timer(now_ns: u64) -> u32 {
        ((now_ns as u128 * PM_TIMER_HZ as u128) / 1_000_000_000) as u32
    }

    /// The SCI line (level, active high).
    pub fn sci_level(&self) -> bool {
        self.status & self.enable & (PM1_STS_PWRBTN | PM1_STS_TMR) != 0
    }

    /// The power button was pressed (and released).
    pub fn press_power_button(&mut self) {
        self.status |= PM1_STS_PWRBTN;
    }

    /// Whether the guest listens for the power button.
    pub fn power_button_enabled(&self) -> bool {
        self.enable & PM1_EN_PWRBTN != 0
    }

    fn image(&self, now_ns: u64) -> [u8; PM_BLOCK_LEN as usize] {
        let mut b = [0u8; PM_BLOCK_LEN as usize];
        b[0..2].copy_from_slice(&self.status.to_le_bytes());
        b[2..4].copy_from_slice(&self.enable.to_le_bytes());
        b[4..6].copy_from_slice(&self.control.to_le_bytes());
        b[8..12].copy_from_slice(&Self::timer(now_ns).to_le_bytes());
        b
    }

    /// Reads `size` bytes at `offset` of the block (bytes past it read 0xff).
    pub fn read(&self, offset: u64, size: u8, now_ns: u64) -> u32 {
        let img = self.image(now_ns);
        let mut v = 0u32;
        for i in 0..size.min(4) as u64 {
            let byte = img.get((offset + i) as usize).copied().unwrap_or(0xff);
            v |= (byte as u32) << (8 * i);
        }
        v
    }

    /// Writes `size` bytes of `value` at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Option<PmEffect> {
        let mut effect = None;
        for i in 0..size.min(4) as u64 {
            let b = (value >> (8 * i)) as u8 as u16;
            let (reg, shift) = match offset + i {
                0 | 1 => (0, (offset + i) * 8),
                2 | 3 => (1, (offset + i - 2) * 8),
                4 | 5 => (2, (offset + i - 4) * 8),
                _ => continue, // reserved and the read-only timer
            };
            match reg {
                0 => self.status &= !(b << shift),
                1 => self.enable = (self.enable & !(0xff << shift)) | (b << shift),
                _ => {
                    // SLP_EN is write-only; SCI_EN stays set.
                    let v = (self.control & !(0xff << shift)) | (b << shift);
                    if v & PM1_CNT_SLP_EN != 0 && ((v >> SLP_TYP_SHIFT) & 7) as u8 == self.s5_slp_typ {
                        effect = Some(PmEffect::PowerOff);
                    }
                    self.control = (v & !PM1_CNT_SLP_EN) | PM1_CNT_SCI_EN;
                }
            }
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_as_acpica_writes_it() {
        let mut pm = AcpiPm::new(5);
        assert_eq!(pm.read(4, 2, 0) as u16 & PM1_CNT_SCI_EN, PM1_CNT_SCI_EN, "ACPI mode");
        // ACPICA: clear wake status, write SLP_TYP, then SLP_TYP | SLP_EN.
        assert_eq!(pm.write(0, 2, PM1_STS_WAK as u32), None);
        let typ = 5u32 << 10;
        assert_eq!(pm.write(4, 2, typ | 1), None);
        assert_eq!(pm.write(4, 2, typ | 1 | PM1_CNT_SLP_EN as u32), Some(PmEffect::PowerOff));
        assert_eq!(pm.read(4, 2, 0) & PM1_CNT_SLP_EN as u32, 0, "SLP_EN reads 0");
        // Another sleep type is not S5; byte writes to the high byte work.
        let mut pm = AcpiPm::new(5);
        assert_eq!(pm.write(5, 1, (((1u16 << 10) | PM1_CNT_SLP_EN) >> 8) as u32), None);
        assert_eq!(pm.write(5, 1, (((5u16 << 10) | PM1_CNT_SLP_EN) >> 8) as u32), Some(PmEffect::PowerOff));
    }

    #[test]
    fn power_button_raises_sci_until_cleared() {
        let mut pm = AcpiPm::new(5);
        pm.press_power_button();
        assert!(!pm.sci_level(), "not enabled: no SCI");
        assert!(!pm.power_button_enabled());
        pm.write(2, 2, PM1_EN_PWRBTN as u32);
        assert!(pm.power_button_enabled() && pm.sci_level());
        assert_eq!(pm.read(0, 2, 0) as u16 & PM1_STS_PWRBTN, PM1_STS_PWRBTN);
        pm.write(0, 2, 0); // writing 0 clears nothing
        assert!(pm.sci_level());
        pm.write(0, 4, PM1_STS_PWRBTN as u32 | (PM1_EN_PWRBTN as u32) << 16); // clear + keep enabled
        assert!(!pm.sci_level());
        assert_eq!(pm.read(0, 4, 0), (PM1_EN_PWRBTN as u32) << 16);
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz() {
        let pm = AcpiPm::new(5);
        assert_eq!(pm.read(8, 4, 0), 0);
        assert_eq!(pm.read(8, 4, 1_000_000_000), 3_579_545);
        let later = pm.read(8, 4, 2_000_000_000);
        assert_eq!(later, 7_159_090);
        assert_eq!(pm.read(8, 1, 1_000_000_000), 3_579_545 & 0xff);
        // It wraps at 32 bits (~20 minutes).
        assert_eq!(AcpiPm::timer(1_200_000_000_000), (1_200u64 * PM_TIMER_HZ) as u32);
        assert_eq!(pm.read(12, 2, 0), 0xffff, "past the block");
    }
}
