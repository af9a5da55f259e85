//! Guest firmware tables: the guest-physical layout and its e820 map, ACPI
//! tables (RSDP v2, RSDT, XSDT, FADT, FACS, DSDT, MADT) and the Intel
//! MultiProcessor Specification 1.4 table.
//!
//! Everything lives in the reserved BIOS area 0xE0000–0xFFFFF, where guests
//! search for the RSDP (ACPI §5.2.5.1) and the MP floating pointer (MP spec
//! §4), so no table sits in memory the guest believes is free RAM. ACPI
//! tables start at [`ACPI_BASE`], the MP structures at [`MP_BASE`].

use super::loader::{GuestMemory, MemError};
use alloc::vec::Vec;

/// Low RAM ends here at most; above it up to 4 GiB is the MMIO hole (PCI,
/// IOAPIC, LAPIC, flash), and the rest of RAM continues at 4 GiB.
pub const LOW_RAM_LIMIT: u64 = 0xC000_0000;
pub const HIGH_RAM_BASE: u64 = 0x1_0000_0000;
/// Conventional memory ends at 640 KiB; 0xA0000–0xFFFFF is VGA, option ROM
/// and BIOS space, reported reserved.
pub const LOWER_MEM_END: u64 = 0xA_0000;
pub const BIOS_AREA: u64 = 0xA_0000;
pub const ONE_MIB: u64 = 0x10_0000;
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
pub const ACPI_BASE: u64 = 0xE_0000;
/// Guest virtio-mmio slots (the shared contract): slot `i` of
/// [`VIRTIO_MMIO_SLOTS`] has its registers at `VIRTIO_MMIO_BASE + i *
/// VIRTIO_MMIO_SIZE` and IOAPIC GSI `VIRTIO_MMIO_GSI_BASE + i`
/// (level-triggered, active high), declared in the DSDT as `LNRO0005`.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
pub const VIRTIO_MMIO_GSI_BASE: u32 = 16;
pub const VIRTIO_MMIO_SLOTS: usize = 8;
pub const MP_BASE: u64 = 0xF_0000;

/// e820 address range types (ACPI §15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Type {
    Ram = 1,
    Reserved = 2,
    Acpi = 3,
    Nvs = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Type,
}

/// The guest-physical layout for a RAM size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    pub ram_size: u64,
}

impl GuestLayout {
    pub const fn new(ram_size: u64) -> GuestLayout {
        GuestLayout { ram_size }
    }
    /// End of RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.ram_size.min(LOW_RAM_LIMIT)
    }
    /// End of RAM above 4 GiB (= HIGH_RAM_BASE when there is none).
    pub fn high_ram_end(&self) -> u64 {
        HIGH_RAM_BASE + self.ram_size.saturating_sub(LOW_RAM_LIMIT)
    }

    /// The e820 map: conventional memory, the reserved BIOS area, RAM from
    /// 1 MiB, the IOAPIC and LAPIC pages, RAM above 4 GiB. Sorted, disjoint.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut v = Vec::new();
        let low = self.low_ram_end();
        v.push(E820Entry { addr: 0, size: low.min(LOWER_MEM_END), kind: E820Type::Ram });
        v.push(E820Entry { addr: BIOS_AREA, size: ONE_MIB - BIOS_AREA, kind: E820Type::Reserved });
        if low > ONE_MIB {
            v.push(E820Entry { addr: ONE_MIB, size: low - ONE_MIB, kind: E820Type::Ram });
        }
        v.push(E820Entry { addr: IOAPIC_BASE, size: 0x1000, kind: E820Type::Reserved });
        v.push(E820Entry { addr: LAPIC_BASE, size: 0x1000, kind: E820Type::Reserved });
        if self.high_ram_end() > HIGH_RAM_BASE {
            v.push(E820Entry { addr: HIGH_RAM_BASE, size: self.high_ram_end() - HIGH_RAM_BASE, kind: E820Type::Ram });
        }
        v
    }

    /// Whether `[addr, addr+len)` lies entirely in usable (type 1) RAM.
    pub fn is_ram(&self, addr: u64, len: u64) -> bool {
        let Some(end) = addr.checked_add(len) else { return false };
        self.e820().iter().any(|e| e.kind == E820Type::Ram && addr >= e.addr && end <= e.addr + e.size)
    }

    /// Multiboot `mem_lower` in KiB (conventional memory: 640).
    pub fn mem_lower_kib(&self) -> u32 {
        (self.low_ram_end().min(LOWER_MEM_END) / 1024) as u32
    }

    /// Multiboot `mem_upper` in KiB: RAM from 1 MiB up to the first hole.
    pub fn mem_upper_kib(&self) -> u32 {
        (self.low_ram_end().saturating_sub(ONE_MIB) / 1024) as u32
    }
}

/// Sum of bytes modulo 256.
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// The value that makes `bytes` sum to 0 when stored in a zeroed checksum byte.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

/// What the firmware tables (ACPI, MP) tell a guest about its machine: the
/// vCPUs, devices and ports they describe. (The device models themselves
/// are built from `platform::PlatformConfig`.) The defaults follow the ICH9
/// layout QEMU uses (PM base 0x600) and the i8042 reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareTablesConfig {
    /// vCPUs; APIC IDs are 0..cpus. At most 254 (the IOAPIC takes the next
    /// ID and xAPIC IDs are 8 bits).
    pub cpus: u32,
    pub ioapic_id: u8,
    pub sci_irq: u8,
    pub pm1a_evt_blk: u16,
    pub pm1a_cnt_blk: u16,
    pub pm_tmr_blk: u16,
    /// Whether the PM timer counts 32 bits (FADT TMR_VAL_EXT) or 24.
    pub pm_tmr_32bit: bool,
    /// Reset register (I/O port, value), if any.
    pub reset: Option<(u16, u8)>,
    /// SLP_TYPa/b value for S5 (soft off) in the DSDT's `\_S5` package.
    pub s5_slp_typ: u8,
    /// CMOS index of the century byte (0: none).
    pub rtc_century: u8,
    /// An i8042 keyboard controller exists (IAPC_BOOT_ARCH 8042).
    pub has_i8042: bool,
    /// The power button is the PM1 fixed feature (FADT PWR_BUTTON clear).
    pub fixed_power_button: bool,
    /// Occupied virtio-mmio slots (bit `i` = slot `i`), one `LNRO0005`
    /// device each in the DSDT.
    pub virtio_mmio_slots: u8,
}

impl FirmwareTablesConfig {
    pub fn new(cpus: u32) -> FirmwareTablesConfig {
        FirmwareTablesConfig {
            cpus,
            ioapic_id: cpus.min(254) as u8,
            sci_irq: 9,
            pm1a_evt_blk: 0x600,
            pm1a_cnt_blk: 0x604,
            pm_tmr_blk: 0x608,
            pm_tmr_32bit: true,
            reset: Some((0x64, 0xFE)),
            s5_slp_typ: 5,
            rtc_century: 0x32,
            has_i8042: true,
            fixed_power_button: true,
            virtio_mmio_slots: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirmwareError {
    /// Zero vCPUs, more than 254, or an IOAPIC ID clashing with a CPU's.
    BadCpuCount(u32),
    /// The tables do not fit in their BIOS-area window.
    TooLarge,
    Memory(MemError),
}

impl From<MemError> for FirmwareError {
    fn from(e: MemError) -> Self {
        FirmwareError::Memory(e)
    }
}

fn check_cpus(cfg: &FirmwareTablesConfig) -> Result<(), FirmwareError> {
    if cfg.cpus == 0 || cfg.cpus > 254 || (cfg.ioapic_id as u32) < cfg.cpus {
        return Err(FirmwareError::BadCpuCount(cfg.cpus));
    }
    Ok(())
}

/// A little-endian byte builder.
struct Buf(Vec<u8>);

impl Buf {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn set_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn set_u16(&mut self, at: usize, v: u16) {
        self.0[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------
// ACPI

pub const OEM_ID: &[u8; 6] = b"MANTLE";
pub const OEM_TABLE_ID: &[u8; 8] = b"MANTLEVM";

/// Starts a system description table: the 36-byte header with length and
/// checksum patched by [`finish_sdt`].
fn sdt(signature: &[u8; 4], revision: u8) -> Buf {
    let mut b = Buf(Vec::new());
    b.bytes(signature).u32(0).u8(revision).u8(0).bytes(OEM_ID).bytes(OEM_TABLE_ID).u32(1).bytes(b"MNTL").u32(1);
    b
}

fn finish_sdt(mut b: Buf) -> Vec<u8> {
    let len = b.0.len() as u32;
    b.set_u32(4, len);
    b.0[9] = checksum(&b.0);
    b.0
}

/// ACPI Generic Address Structure for a legacy I/O port block.
fn gas_io(b: &mut Buf, port: u16, len_bytes: u8) {
    if port == 0 {
        b.zeros(12);
    } else {
        // Space ID 1 = System I/O; access size 0 = legacy/undefined.
        b.u8(1).u8(len_bytes * 8).u8(0).u8(0).u64(port as u64);
    }
}

/// Where the ACPI tables went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiInfo {
    pub rsdp: u64,
    pub rsdt: u64,
    pub xsdt: u64,
    pub fadt: u64,
    pub facs: u64,
    pub dsdt: u64,
    pub madt: u64,
    /// First byte after the tables.
    pub end: u64,
}

/// A small AML encoder (ACPI §20.2): the terms the DSDT needs.
pub mod aml {
    use alloc::vec::Vec;

    /// PkgLength for a body of `body` bytes: the encoded length counts its
    /// own bytes (1 to 4; 28 bits at most).
    pub fn pkg_length(body: usize) -> Vec<u8> {
        if body + 1 < 0x40 {
            return alloc::vec![(body + 1) as u8];
        }
        for n in 2..=4usize {
            let total = body + n;
            if total < 1 << (4 + 8 * (n - 1)) {
                let mut v = alloc::vec![(((n - 1) << 6) | (total & 0xf)) as u8];
                for i in 0..n - 1 {
                    v.push((total >> (4 + 8 * i)) as u8);
                }
                return v;
            }
        }
        // Nothing the DSDT builds comes near 256 MiB.
        alloc::vec![0xff, 0xff, 0xff, 0xff]
    }

    fn with_pkg(op: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = op.to_vec();
        v.extend_from_slice(&pkg_length(body.len()));
        v.extend_from_slice(body);
        v
    }

    /// `Name (seg, data)`; `seg` is a 4-character NameSeg (or a path).
    pub fn name(seg: &[u8], data: &[u8]) -> Vec<u8> {
        let mut v = alloc::vec![0x08];
        v.extend_from_slice(seg);
        v.extend_from_slice(data);
        v
    }

    /// A string constant.
    pub fn string(s: &str) -> Vec<u8> {
        let mut v = alloc::vec![0x0d];
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        v
    }

    /// An integer constant in its shortest encoding.
    pub fn integer(i: u64) -> Vec<u8> {
        match i {
            0 => alloc::vec![0x00],
            1 => alloc::vec![0x01],
            2..=0xff => alloc::vec![0x0a, i as u8],
            0x100..=0xffff => [&[0x0b][..], &(i as u16).to_le_bytes()].concat(),
            0x1_0000..=0xffff_ffff => [&[0x0c][..], &(i as u32).to_le_bytes()].concat(),
            _ => [&[0x0e][..], &i.to_le_bytes()].concat(),
        }
    }

    /// `Buffer () { bytes }`.
    pub fn buffer(bytes: &[u8]) -> Vec<u8> {
        let mut body = integer(bytes.len() as u64);
        body.extend_from_slice(bytes);
        with_pkg(&[0x11], &body)
    }

    /// `Package () { elements }` (each already encoded).
    pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
        let mut body = alloc::vec![elements.len() as u8];
        for e in elements {
            body.extend_from_slice(e);
        }
        with_pkg(&[0x12], &body)
    }

    /// `Device (seg) { body }`.
    pub fn device(seg: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = seg.to_vec();
        b.extend_from_slice(body);
        with_pkg(&[0x5b, 0x82], &b)
    }

    /// `Scope (path) { body }`.
    pub fn scope(path: &[u8], body: &[u8]) -> Vec<u8> {
        let mut b = path.to_vec();
        b.extend_from_slice(body);
        with_pkg(&[0x10], &b)
    }

    /// A resource template (ACPI §6.4): the descriptors and the end tag.
    pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
        let mut b: Vec<u8> = descriptors.concat();
        b.extend_from_slice(&[0x79, 0x00]); // End Tag, checksum 0 = "sums fine"
        buffer(&b)
    }

    /// `Memory32Fixed (ReadWrite, base, len)`.
    pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
        let mut v = alloc::vec![0x86, 9, 0, 1];
        v.extend_from_slice(&base.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v
    }

    /// `Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { gsi }`.
    pub fn interrupt_level_high(gsi: u32) -> Vec<u8> {
        let mut v = alloc::vec![0x89, 6, 0, 0x01, 1];
        v.extend_from_slice(&gsi.to_le_bytes());
        v
    }
}

/// Four hex digits' NameSeg such as `VR03`.
fn slot_name(prefix: &[u8; 2], i: usize) -> [u8; 4] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [prefix[0], prefix[1], HEX[(i >> 4) & 0xf], HEX[i & 0xf]]
}

/// The DSDT body: `Name (\_S5, Package (4) { typ, typ, Zero, Zero })` and,
/// in `\_SB`, one `LNRO0005` (virtio-mmio) device per occupied slot with
/// its register page and interrupt.
pub fn dsdt_aml(cfg: &FirmwareTablesConfig) -> Vec<u8> {
    let s5 = cfg.s5_slp_typ as u64;
    let mut v = aml::name(b"\\_S5_", &aml::package(&[aml::integer(s5), aml::integer(s5), aml::integer(0), aml::integer(0)]));
    let mut sb = Vec::new();
    for i in (0..VIRTIO_MMIO_SLOTS).filter(|i| cfg.virtio_mmio_slots & (1 << i) != 0) {
        let base = VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE;
        let mut body = aml::name(b"_HID", &aml::string("LNRO0005"));
        body.extend(aml::name(b"_UID", &aml::integer(i as u64)));
        body.extend(aml::name(
            b"_CRS",
            &aml::resource_template(&[
                aml::memory32_fixed(base as u32, VIRTIO_MMIO_SIZE as u32),
                aml::interrupt_level_high(VIRTIO_MMIO_GSI_BASE + i as u32),
            ]),
        ));
        sb.extend(aml::device(&slot_name(b"VR", i), &body));
    }
    if !sb.is_empty() {
        v.extend(aml::scope(b"\\_SB_", &sb));
    }
    v
}

fn fadt(cfg: &FirmwareTablesConfig, facs: u64, dsdt: u64) -> Vec<u8> {
    // ACPI 6.x FADT, revision 6, 276 bytes (§5.2.9 table 5.9).
    let mut b = sdt(b"FACP", 6);
    b.u32(facs as u32).u32(dsdt as u32); // FIRMWARE_CTRL, DSDT
    b.u8(0).u8(0); // reserved, Preferred_PM_Profile (unspecified)
    b.u16(cfg.sci_irq as u16); // SCI_INT
    b.u32(0).u8(0).u8(0).u8(0).u8(0); // SMI_CMD = 0: always in ACPI mode; ACPI_ENABLE/DISABLE, S4BIOS_REQ, PSTATE_CNT
    b.u32(cfg.pm1a_evt_blk as u32).u32(0); // PM1a/b_EVT_BLK
    b.u32(cfg.pm1a_cnt_blk as u32).u32(0); // PM1a/b_CNT_BLK
    b.u32(0); // PM2_CNT_BLK
    b.u32(cfg.pm_tmr_blk as u32); // PM_TMR_BLK
    b.u32(0).u32(0); // GPE0_BLK, GPE1_BLK
    b.u8(4).u8(2).u8(0).u8(if cfg.pm_tmr_blk != 0 { 4 } else { 0 }); // PM1_EVT_LEN, PM1_CNT_LEN, PM2_CNT_LEN, PM_TMR_LEN
    b.u8(0).u8(0).u8(0).u8(0); // GPE0_BLK_LEN, GPE1_BLK_LEN, GPE1_BASE, CST_CNT
    b.u16(101).u16(1001); // P_LVL2_LAT > 100, P_LVL3_LAT > 1000: no C2/C3
    b.u16(0).u16(0); // FLUSH_SIZE, FLUSH_STRIDE
    b.u8(0).u8(0).u8(0).u8(0).u8(cfg.rtc_century); // DUTY_OFFSET, DUTY_WIDTH, DAY_ALRM, MON_ALRM, CENTURY
    let mut boot_arch = 1; // LEGACY_DEVICES
    if cfg.has_i8042 {
        boot_arch |= 2; // 8042
    }
    b.u16(boot_arch).u8(0);
    // Flags: WBINVD, PROC_C1, SLP_BUTTON (no sleep button), PWR_BUTTON
    // unless the power button is the fixed feature, TMR_VAL_EXT,
    // RESET_REG_SUP.
    let mut flags = 1 | (1 << 2) | (1 << 5);
    if !cfg.fixed_power_button {
        flags |= 1 << 4;
    }
    if cfg.pm_tmr_32bit {
        flags |= 1 << 8;
    }
    if cfg.reset.is_some() {
        flags |= 1 << 10;
    }
    b.u32(flags);
    let (rport, rval) = cfg.reset.unwrap_or((0, 0));
    gas_io(&mut b, rport, 1); // RESET_REG
    b.u8(rval).u16(0).u8(0); // RESET_VALUE, ARM_BOOT_ARCH, FADT minor version
    b.u64(facs).u64(dsdt); // X_FIRMWARE_CTRL, X_DSDT
    gas_io(&mut b, cfg.pm1a_evt_blk, 4); // X_PM1a_EVT_BLK
    gas_io(&mut b, 0, 0);
    gas_io(&mut b, cfg.pm1a_cnt_blk, 2); // X_PM1a_CNT_BLK
    gas_io(&mut b, 0, 0);
    gas_io(&mut b, 0, 0); // X_PM2_CNT_BLK
    gas_io(&mut b, cfg.pm_tmr_blk, 4); // X_PM_TMR_BLK
    gas_io(&mut b, 0, 0); // X_GPE0_BLK
    gas_io(&mut b, 0, 0); // X_GPE1_BLK
    gas_io(&mut b, 0, 0); // SLEEP_CONTROL_REG
    gas_io(&mut b, 0, 0); // SLEEP_STATUS_REG
    b.bytes(b"MANTLEVM"); // Hypervisor Vendor Identity
    finish_sdt(b)
}

fn madt(cfg: &FirmwareTablesConfig) -> Vec<u8> {
    let mut b = sdt(b"APIC", 4);
    b.u32(LAPIC_BASE as u32).u32(1); // Local Interrupt Controller Address, PCAT_COMPAT
    for i in 0..cfg.cpus {
        // Processor Local APIC: type 0, length 8, UID, APIC ID, flags (Enabled).
        b.u8(0).u8(8).u8(i as u8).u8(i as u8).u32(1);
    }
    // I/O APIC: type 1, length 12, ID, reserved, address, GSI base 0.
    b.u8(1).u8(12).u8(cfg.ioapic_id).u8(0).u32(IOAPIC_BASE as u32).u32(0);
    // Interrupt Source Override: ISA IRQ0 (PIT) -> GSI2, conforming flags.
    b.u8(2).u8(10).u8(0).u8(0).u32(2).u16(0);
    // The SCI is level-triggered, active high.
    b.u8(2).u8(10).u8(0).u8(cfg.sci_irq).u32(cfg.sci_irq as u32).u16(0x000D);
    // Local APIC NMI: all processors (UID 0xFF), LINT1.
    b.u8(4).u8(6).u8(0xFF).u16(0).u8(1);
    finish_sdt(b)
}

fn rsdt(entries: &[u64]) -> Vec<u8> {
    let mut b = sdt(b"RSDT", 1);
    for &e in entries {
        b.u32(e as u32);
    }
    finish_sdt(b)
}

fn xsdt(entries: &[u64]) -> Vec<u8> {
    let mut b = sdt(b"XSDT", 1);
    for &e in entries {
        b.u64(e);
    }
    finish_sdt(b)
}

fn rsdp(rsdt: u64, xsdt: u64) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.bytes(b"RSD PTR ").u8(0).bytes(OEM_ID).u8(2).u32(rsdt as u32);
    b.u32(36).u64(xsdt).u8(0).zeros(3);
    b.0[8] = checksum(&b.0[..20]);
    b.0[32] = checksum(&b.0);
    b.0
}

fn facs() -> Vec<u8> {
    // FACS: no checksum; 64 bytes, version 2, no global lock, no waking vector.
    let mut b = Buf(Vec::new());
    b.bytes(b"FACS").u32(64).u32(0).u32(0).u32(0).u32(0).u64(0).u8(2).zeros(3).u32(0).zeros(24);
    b.0
}

fn align(v: u64, a: u64) -> u64 {
    (v + a - 1) & !(a - 1)
}

/// Writes the ACPI tables at [`ACPI_BASE`] and returns their addresses.
pub fn build_acpi(mem: &mut dyn GuestMemory, cfg: &FirmwareTablesConfig) -> Result<AcpiInfo, FirmwareError> {
    check_cpus(cfg)?;
    let rsdp_at = ACPI_BASE;
    let facs_at = align(rsdp_at + 36, 64); // FACS must be 64-byte aligned.
    let dsdt_at = align(facs_at + 64, 16);
    let mut dsdt = sdt(b"DSDT", 2);
    dsdt.bytes(&dsdt_aml(cfg));
    let dsdt = finish_sdt(dsdt);
    let fadt_at = align(dsdt_at + dsdt.len() as u64, 16);
    let fadt = fadt(cfg, facs_at, dsdt_at);
    let madt_at = align(fadt_at + fadt.len() as u64, 16);
    let madt = madt(cfg);
    let rsdt_at = align(madt_at + madt.len() as u64, 16);
    let rsdt = rsdt(&[fadt_at, madt_at]);
    let xsdt_at = align(rsdt_at + rsdt.len() as u64, 16);
    let xsdt = xsdt(&[fadt_at, madt_at]);
    let end = xsdt_at + xsdt.len() as u64;
    if end > MP_BASE {
        return Err(FirmwareError::TooLarge);
    }
    mem.write(rsdp_at, &rsdp(rsdt_at, xsdt_at))?;
    mem.write(facs_at, &facs())?;
    mem.write(dsdt_at, &dsdt)?;
    mem.write(fadt_at, &fadt)?;
    mem.write(madt_at, &madt)?;
    mem.write(rsdt_at, &rsdt)?;
    mem.write(xsdt_at, &xsdt)?;
    Ok(AcpiInfo { rsdp: rsdp_at, rsdt: rsdt_at, xsdt: xsdt_at, fadt: fadt_at, facs: facs_at, dsdt: dsdt_at, madt: madt_at, end })
}

// ---------------------------------------------------------------------------
// Intel MP table (MultiProcessor Specification 1.4, chapter 4)

/// MP interrupt types.
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

/// Where the MP structures went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpInfo {
    pub floating_pointer: u64,
    pub config_table: u64,
    pub end: u64,
}

fn mp_config_table(cfg: &FirmwareTablesConfig) -> Vec<u8> {
    let mut b = Buf(Vec::new());
    // Header: "PCMP", base table length, spec rev 1.4, checksum, OEM ID,
    // product ID, OEM table pointer/size, entry count, LAPIC address,
    // extended table length/checksum, reserved.
    b.bytes(b"PCMP").u16(0).u8(4).u8(0).bytes(b"MANTLE  ").bytes(b"MANTLE VM   ");
    b.u32(0).u16(0).u16(0).u32(LAPIC_BASE as u32).u16(0).u8(0).u8(0);
    let mut count = 0u16;
    for i in 0..cfg.cpus {
        // Processor: APIC ID, version 0x14, flags EN (+BP for the BSP),
        // signature (family 6), features (FPU, APIC).
        let flags = 1 | if i == 0 { 2 } else { 0 };
        b.u8(0).u8(i as u8).u8(0x14).u8(flags).u32(0x0600).u32(0x201).zeros(8);
        count += 1;
    }
    b.u8(1).u8(0).bytes(b"ISA   "); // Bus 0: ISA
    count += 1;
    b.u8(2).u8(cfg.ioapic_id).u8(0x11).u8(1).u32(IOAPIC_BASE as u32); // I/O APIC, enabled
    count += 1;
    // I/O interrupt assignments: the 8259 through INTIN0 as ExtINT, then ISA
    // IRQs; IRQ0 goes to INTIN2 (as the MADT override says), IRQ2 is the
    // cascade and has no entry. The SCI is level, active high.
    let mut io = |b: &mut Buf, ty: u8, flags: u16, irq: u8, intin: u8| {
        b.u8(3).u8(ty).u16(flags).u8(0).u8(irq).u8(cfg.ioapic_id).u8(intin);
        count += 1;
    };
    io(&mut b, MP_EXTINT, 0, 0, 0);
    io(&mut b, MP_INT, 0, 0, 2);
    for irq in 1..16u8 {
        if irq == 2 {
            continue;
        }
        let flags = if irq == cfg.sci_irq { 0x000D } else { 0 };
        io(&mut b, MP_INT, flags, irq, irq);
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1 of every local APIC.
    b.u8(4).u8(MP_EXTINT).u16(0).u8(0).u8(0).u8(0xFF).u8(0);
    b.u8(4).u8(MP_NMI).u16(0).u8(0).u8(0).u8(0xFF).u8(1);
    count += 2;
    let len = b.0.len() as u16;
    b.set_u16(4, len);
    b.set_u16(34, count);
    b.0[7] = checksum(&b.0);
    b.0
}

/// Writes the MP floating pointer and configuration table at [`MP_BASE`].
pub fn build_mp_table(mem: &mut dyn GuestMemory, cfg: &FirmwareTablesConfig) -> Result<MpInfo, FirmwareError> {
    check_cpus(cfg)?;
    let fp_at = MP_BASE;
    let table_at = fp_at + 16;
    let table = mp_config_table(cfg);
    // Floating pointer: "_MP_", physical pointer, length in 16-byte units,
    // spec rev 4, checksum, feature bytes (0: configuration table present;
    // IMCR absent, so virtual-wire mode).
    let mut fp = Buf(Vec::new());
    fp.bytes(b"_MP_").u32(table_at as u32).u8(1).u8(4).u8(0).zeros(5);
    fp.0[10] = checksum(&fp.0);
    let end = table_at + table.len() as u64;
    if end > ONE_MIB {
        return Err(FirmwareError::TooLarge);
    }
    mem.write(fp_at, &fp.0)?;
    mem.write(table_at, &table)?;
    Ok(MpInfo { floating_pointer: fp_at, config_table: table_at, end })
}

#[cfg(test)]
mod tests;
