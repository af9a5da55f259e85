//! Small port-I/O devices of a PC/QEMU platform: the POST-code port (0x80),
//! the system control port A (0x92, fast A20 and reset), QEMU's debug-exit
//! port (0xf4), the QEMU fw_cfg port interface (0x510/0x511), PCI
//! configuration mechanism #1 (0xcf8/0xcfc) over an empty bus, and the
//! reset control register at 0xcf9.

/// What a write asks of the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MiscEffect {
    ResetVm,
    Exit(u32),
}

/// Port 0x80: POST codes. Writes are kept (a debugging aid); reads return
/// the last value, as on boards with a POST display latch.
#[derive(Clone, Debug, Default)]
pub struct PostCode {
    pub last: u8,
}

impl PostCode {
    pub fn read(&self) -> u8 {
        self.last
    }
    pub fn write(&mut self, v: u8) {
        self.last = v;
    }
}

/// Port 0x92 (system control port A): bit 1 = A20 gate, bit 0 = fast reset
/// (a 0 -> 1 transition resets the CPU).
#[derive(Clone, Debug)]
pub struct Port92 {
    value: u8,
}

impl Default for Port92 {
    fn default() -> Self {
        Port92 { value: 0x02 } // A20 enabled, as firmware leaves it
    }
}

impl Port92 {
    pub fn read(&self) -> u8 {
        self.value
    }
    pub fn write(&mut self, v: u8) -> Option<MiscEffect> {
        let rising = v & 1 != 0 && self.value & 1 == 0;
        self.value = v & 0x03;
        if rising {
            self.value &= !1;
            return Some(MiscEffect::ResetVm);
        }
        None
    }
    pub fn a20(&self) -> bool {
        self.value & 2 != 0
    }
}

/// QEMU `isa-debug-exit` compatible: any write of `v` asks the VMM to stop
/// the VM with exit code `v` (QEMU's process status would be `(v << 1) | 1`).
pub fn debug_exit_write(value: u32) -> MiscEffect {
    MiscEffect::Exit(value)
}

pub const FW_CFG_PORT_SEL: u16 = 0x510;
pub const FW_CFG_PORT_DATA: u16 = 0x511;
pub const FW_CFG_SIGNATURE: u16 = 0x00;
pub const FW_CFG_ID: u16 = 0x01;
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
pub const FW_CFG_NB_CPUS: u16 = 0x05;
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;

/// QEMU fw_cfg, legacy port interface only (no DMA, no file directory).
#[derive(Clone, Debug)]
pub struct FwCfg {
    selector: u16,
    offset: usize,
    ram_size: u64,
    cpus: u16,
}

impl FwCfg {
    pub fn new(ram_size: u64, cpus: u16) -> Self {
        FwCfg { selector: 0, offset: 0, ram_size, cpus }
    }

    /// Selector write (16-bit at 0x510): selects an item, rewinds it.
    pub fn select(&mut self, key: u16) {
        self.selector = key;
        self.offset = 0;
    }

    fn item_byte(&self, i: usize) -> u8 {
        let le8 = |v: u64| v.to_le_bytes().get(i).copied().unwrap_or(0);
        match self.selector {
            FW_CFG_SIGNATURE => b"QEMU".get(i).copied().unwrap_or(0),
            // Bit 0: traditional interface; no DMA (bit 1).
            FW_CFG_ID => le8(1) * (i < 4) as u8,
            FW_CFG_RAM_SIZE => le8(self.ram_size),
            FW_CFG_NB_CPUS | FW_CFG_MAX_CPUS => le8(self.cpus as u64) * (i < 2) as u8,
            _ => 0,
        }
    }

    /// Data read (byte at 0x511): the next byte of the item, 0 past its end.
    pub fn read_data(&mut self) -> u8 {
        let b = self.item_byte(self.offset);
        self.offset = self.offset.saturating_add(1);
        b
    }
}

pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
pub const PCI_CONFIG_DATA: u16 = 0xcfc;
pub const RESET_CONTROL: u16 = 0xcf9;

/// PCI configuration mechanism #1 with nothing on the bus: every function's
/// configuration space reads all ones (vendor 0xffff = no device). The
/// address register is kept so probes that write and read it back (Linux's
/// `pci_check_type1`) find mechanism #1 present. Byte writes to 0xcf9 are
/// the PIIX reset control register (bit 2 with bit 1: hard reset).
#[derive(Clone, Debug, Default)]
pub struct PciHost {
    address: u32,
}

impl PciHost {
    /// Read in 0xcf8..=0xcff: `offset` from 0xcf8, `size` 1/2/4.
    pub fn read(&self, offset: u64, size: u8) -> u32 {
        match (offset, size) {
            (0, 4) => self.address,
            _ => crate::vmm::bus::all_ones(size) as u32,
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u32) -> Option<MiscEffect> {
        match (offset, size) {
            (0, 4) => self.address = value & 0x80ff_fffc,
            (1, 1) if value & 0x04 != 0 => return Some(MiscEffect::ResetVm),
            _ => {} // configuration data writes: no device to receive them
        }
        None
    }

    /// The latched configuration address (bus/device/function/register).
    pub fn address(&self) -> u32 {
        self.address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_code_keeps_last() {
        let mut p = PostCode::default();
        p.write(0x42);
        assert_eq!(p.read(), 0x42);
    }

    #[test]
    fn port92_reset_on_rising_bit0() {
        let mut p = Port92::default();
        assert!(p.a20());
        assert_eq!(p.write(0x00), None);
        assert!(!p.a20());
        assert_eq!(p.write(0x03), Some(MiscEffect::ResetVm));
        assert_eq!(p.read(), 0x02, "reset bit reads back 0");
        assert_eq!(p.write(0x02), None);
    }

    #[test]
    fn fw_cfg_items() {
        let mut f = FwCfg::new(128 << 20, 4);
        f.select(FW_CFG_SIGNATURE);
        let sig: [u8; 4] = core::array::from_fn(|_| f.read_data());
        assert_eq!(&sig, b"QEMU");
        assert_eq!(f.read_data(), 0);
        f.select(FW_CFG_ID);
        let id: [u8; 4] = core::array::from_fn(|_| f.read_data());
        assert_eq!(u32::from_le_bytes(id), 1);
        f.select(FW_CFG_RAM_SIZE);
        let ram: [u8; 8] = core::array::from_fn(|_| f.read_data());
        assert_eq!(u64::from_le_bytes(ram), 128 << 20);
        f.select(FW_CFG_NB_CPUS);
        let n: [u8; 2] = core::array::from_fn(|_| f.read_data());
        assert_eq!(u16::from_le_bytes(n), 4);
        assert_eq!(f.read_data(), 0);
        f.select(0x1234);
        assert_eq!(f.read_data(), 0);
        // Reselecting rewinds.
        f.select(FW_CFG_SIGNATURE);
        assert_eq!(f.read_data(), b'Q');
    }

    #[test]
    fn pci_empty_bus() {
        let mut p = PciHost::default();
        p.write(0, 4, 0x8000_0000);
        assert_eq!(p.read(0, 4), 0x8000_0000);
        for dev in [0u32, 1, 31] {
            p.write(0, 4, 0x8000_0000 | dev << 11);
            assert_eq!(p.read(4, 4), 0xffff_ffff);
            assert_eq!(p.read(4, 2), 0xffff, "vendor ID");
            assert_eq!(p.read(6, 2), 0xffff, "device ID");
        }
        assert_eq!(p.write(1, 1, 0x06), Some(MiscEffect::ResetVm));
        assert_eq!(p.write(1, 1, 0x02), None);
    }
}
