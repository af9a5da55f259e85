//! The legacy PC platform of one VM: every device of [`super::devices`]
//! registered on a port-I/O and an MMIO [`Bus`], with the interrupt wiring
//! of a PC:
//!
//! * ISA IRQ n -> 8259 input n and IOAPIC pin n (IRQ 0 -> pin 2, as the
//!   MP/ACPI interrupt-source override on PCs says);
//! * 8259 INT -> LINT0 of vCPU 0 (virtual wire: ExtINT, or straight to the
//!   core while that APIC is disabled);
//! * IOAPIC messages and IPIs -> the LAPICs they address.
//!
//! The VMM calls [`Platform::advance`] with the current guest time before
//! handling an exit (port and MMIO accesses use that time), arms a host
//! timer for [`Platform::next_deadline`], and between exits asks
//! [`Platform::pending_interrupt`] / [`Platform::ack_interrupt`] what to
//! inject. Requests for the VMM itself (reset, exit, INIT, SIPI, wake-ups)
//! are drained with [`Platform::events`].

use alloc::vec::Vec;

use super::bus::{self, Bus, BusError};
use super::devices::acpi_pm::{self, AcpiPm, PmEffect};
use super::devices::i8042::{self, I8042, I8042Effect};
use super::devices::ioapic::{self, DeliveryMode, IoApic, IrqMessage};
use super::devices::lapic::{GeneralProtection, Ipi, Lapic, LapicEffect, Shorthand};
use super::devices::misc::{self, FwCfg, MiscEffect, PciHost, Port92, PostCode};
use super::devices::pic::{self, PicPair};
use super::devices::pit::{self, Pit};
use super::devices::rtc::{self, Rtc, RtcConfig};
use super::devices::serial::{OutputRing, Serial};
use super::event::VmEvent;

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u8 = 4;
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const POST_PORT: u16 = 0x80;
pub const PORT92: u16 = 0x92;
/// The ACPI PM1 event/control blocks and PM timer (the FADT's ports, see
/// `firmware::FirmwareTablesConfig`), and the SCI's ISA IRQ.
pub const ACPI_PM_BASE: u16 = 0x600;
pub const ACPI_SCI_IRQ: u8 = 9;
/// SLP_TYP of `\_S5` in the DSDT.
pub const ACPI_S5_SLP_TYP: u8 = 5;

/// The device behind a bus range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dev {
    Pic,
    Pit,
    Rtc,
    Serial,
    I8042,
    PostCode,
    Port92,
    DebugExit,
    FwCfg,
    PciHost,
    IoApic,
    AcpiPm,
}

impl Dev {
    /// Devices that take 2- and 4-byte accesses whole; accesses to the
    /// others are split into byte accesses at consecutive ports (as on ISA).
    fn wide(self) -> bool {
        matches!(self, Dev::DebugExit | Dev::FwCfg | Dev::PciHost | Dev::IoApic | Dev::AcpiPm)
    }
}

/// What the platform's device models are built for (the firmware tables
/// that describe them to the guest come from `firmware::FirmwareTablesConfig`).
#[derive(Clone, Copy, Debug)]
pub struct PlatformConfig {
    pub vcpus: usize,
    pub ram_below_4g: u64,
    pub ram_above_4g: u64,
    /// Host wall clock (Unix seconds, UTC) at guest time 0, for the RTC.
    pub wall_clock_unix_secs: i64,
    /// Guest TSC frequency, for the TSC-deadline timer.
    pub tsc_khz: u64,
    /// What the guests' TSC reads at time 0 (the host's TSC then).
    pub tsc_base: u64,
    /// Bytes of console output kept for `vmkcli vm console`.
    pub console_ring: usize,
    /// The LAPICs accept x2APIC mode (CPUID must say so too).
    pub x2apic: bool,
    /// The virtual CPU's physical-address width (CPUID.80000008:EAX[7:0]):
    /// IA32_APIC_BASE bits above it are reserved.
    pub phys_addr_bits: u8,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            vcpus: 1,
            ram_below_4g: 128 << 20,
            ram_above_4g: 0,
            wall_clock_unix_secs: 0,
            tsc_khz: 1_000_000,
            tsc_base: 0,
            console_ring: super::devices::serial::DEFAULT_OUTPUT_RING,
            phys_addr_bits: 52,
            x2apic: true,
        }
    }
}

pub struct Platform {
    pub pio: Bus<Dev>,
    pub mmio: Bus<Dev>,
    pub pic: PicPair,
    pub pit: Pit,
    pub rtc: Rtc,
    pub serial: Serial,
    pub i8042: I8042,
    pub post: PostCode,
    pub port92: Port92,
    pub fw_cfg: FwCfg,
    pub pci: PciHost,
    pub ioapic: IoApic,
    pub acpi_pm: AcpiPm,
    pub lapics: Vec<Lapic>,
    events: Vec<VmEvent>,
    now: u64,
    /// Current levels of the ISA IRQ lines.
    isa_levels: u16,
}

impl Platform {
    pub fn new(cfg: &PlatformConfig) -> Self {
        let vcpus = cfg.vcpus.max(1);
        let mut p = Platform {
            pio: Bus::new(),
            mmio: Bus::new(),
            pic: PicPair::new(),
            pit: Pit::new(),
            rtc: Rtc::new(&RtcConfig {
                wall_clock_unix_secs: cfg.wall_clock_unix_secs,
                ram_below_4g: cfg.ram_below_4g,
                ram_above_4g: cfg.ram_above_4g,
                cpus: vcpus as u16,
            }),
            serial: Serial::new(cfg.console_ring),
            i8042: I8042::new(),
            post: PostCode::default(),
            port92: Port92::default(),
            fw_cfg: FwCfg::new(cfg.ram_below_4g + cfg.ram_above_4g, vcpus as u16),
            pci: PciHost::default(),
            ioapic: IoApic::new(vcpus as u8),
            acpi_pm: AcpiPm::new(ACPI_S5_SLP_TYP),
            lapics: (0..vcpus)
                .map(|i| {
                    let mut l = Lapic::new(i as u32, cfg.tsc_khz);
                    l.set_tsc_base(cfg.tsc_base);
                    l.set_x2apic_offered(cfg.x2apic);
                    l.set_phys_addr_bits(cfg.phys_addr_bits);
                    l
                })
                .collect(),
            events: Vec::new(),
            now: 0,
            isa_levels: 0,
        };
        p.register_all().expect("legacy device ranges are disjoint");
        p
    }

    fn register_all(&mut self) -> Result<(), BusError> {
        let pio: &[(u16, u64, Dev)] = &[
            (pic::MASTER_CMD, 2, Dev::Pic),
            (pic::SLAVE_CMD, 2, Dev::Pic),
            (pic::ELCR_MASTER, 2, Dev::Pic),
            (pit::PORT_CH0, 4, Dev::Pit),
            (pit::PORT_61, 1, Dev::Pit),
            (rtc::PORT_INDEX, 2, Dev::Rtc),
            (COM1_BASE, 8, Dev::Serial),
            (i8042::PORT_DATA, 1, Dev::I8042),
            (i8042::PORT_STATUS, 1, Dev::I8042),
            (POST_PORT, 1, Dev::PostCode),
            (PORT92, 1, Dev::Port92),
            (DEBUG_EXIT_PORT, 1, Dev::DebugExit),
            (misc::FW_CFG_PORT_SEL, 2, Dev::FwCfg),
            (misc::PCI_CONFIG_ADDRESS, 8, Dev::PciHost),
            (ACPI_PM_BASE, acpi_pm::PM_BLOCK_LEN, Dev::AcpiPm),
        ];
        for &(base, len, dev) in pio {
            self.pio.register(base as u64, len, dev)?;
        }
        self.mmio.register(ioapic::IOAPIC_BASE, ioapic::IOAPIC_SIZE, Dev::IoApic)
    }

    /// Guest time as of the last [`Platform::advance`].
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn vcpus(&self) -> usize {
        self.lapics.len()
    }

    // --- interrupt wiring --------------------------------------------------

    /// Drives ISA IRQ line `irq` (0..=15) to `level`: PIC input `irq` and
    /// IOAPIC pin `irq` (pin 2 for IRQ 0).
    pub fn set_irq_line(&mut self, irq: u8, level: bool) {
        if irq >= 16 || ((self.isa_levels >> irq) & 1 != 0) == level {
            return;
        }
        self.isa_levels ^= 1 << irq;
        self.pic.set_irq(irq, level);
        let pin = if irq == 0 { 2 } else { irq as usize };
        self.ioapic.set_irq(pin, level);
        self.route_ioapic();
    }

    /// A rising and falling edge on an ISA line (the PIT's OUT pulses).
    pub fn pulse_irq_line(&mut self, irq: u8) {
        self.set_irq_line(irq, true);
        self.set_irq_line(irq, false);
    }

    /// Drives an IOAPIC pin above the ISA range (16..=23, PCI INTx).
    pub fn set_ioapic_pin(&mut self, pin: usize, level: bool) {
        self.ioapic.set_irq(pin, level);
        self.route_ioapic();
    }

    /// Re-reads the level outputs of the devices that have them.
    fn sync_irqs(&mut self) {
        let s = self.serial.irq_level();
        self.set_irq_line(COM1_IRQ, s);
        let k = self.i8042.irq_level();
        self.set_irq_line(1, k);
        let r = self.rtc.irq_level();
        self.set_irq_line(8, r);
        let sci = self.acpi_pm.sci_level();
        self.set_irq_line(ACPI_SCI_IRQ, sci);
    }

    /// The ACPI power button: the guest sees a fixed power-button event (an
    /// SCI) if it enabled one. Returns whether it did.
    pub fn press_power_button(&mut self) -> bool {
        self.acpi_pm.press_power_button();
        self.sync_irqs();
        self.acpi_pm.power_button_enabled()
    }

    fn kick(&mut self, vcpu: usize) {
        if self.events.last() != Some(&VmEvent::Kick(vcpu)) {
            self.events.push(VmEvent::Kick(vcpu));
        }
    }

    fn route_ioapic(&mut self) {
        for m in self.ioapic.take_messages() {
            self.deliver_message(&m);
        }
    }

    /// Delivers an IOAPIC message to the LAPICs it addresses. Lowest
    /// priority goes to the first matching APIC. ExtINT through the IOAPIC
    /// is not modelled (the PIC reaches vCPU 0 through LINT0).
    fn deliver_message(&mut self, m: &IrqMessage) {
        let targets: Vec<usize> =
            (0..self.lapics.len()).filter(|&i| self.lapics[i].matches_dest(m.dest, m.logical, false)).collect();
        let targets = match m.mode {
            DeliveryMode::LowestPriority => &targets[..targets.len().min(1)],
            _ => &targets[..],
        };
        for &t in targets {
            let ok = match m.mode {
                DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                    self.lapics[t].accept_fixed(m.vector, m.level_triggered)
                }
                DeliveryMode::Nmi => {
                    self.lapics[t].raise_nmi();
                    true
                }
                _ => false,
            };
            if ok {
                self.kick(t);
            }
        }
    }

    fn deliver_ipi(&mut self, src: usize, ipi: &Ipi) {
        let n = self.lapics.len();
        let targets: Vec<usize> = match ipi.shorthand {
            Shorthand::SelfOnly => alloc::vec![src],
            Shorthand::All => (0..n).collect(),
            Shorthand::AllButSelf => (0..n).filter(|&i| i != src).collect(),
            Shorthand::None => {
                (0..n).filter(|&i| self.lapics[i].matches_dest(ipi.dest, ipi.logical, ipi.x2apic)).collect()
            }
        };
        let targets = match ipi.mode {
            DeliveryMode::LowestPriority => &targets[..targets.len().min(1)],
            _ => &targets[..],
        };
        for &t in targets {
            match ipi.mode {
                DeliveryMode::Fixed | DeliveryMode::LowestPriority
                    if self.lapics[t].accept_fixed(ipi.vector, false) && t != src => {
                        self.kick(t);
                    }
                DeliveryMode::Nmi => {
                    self.lapics[t].raise_nmi();
                    if t != src {
                        self.kick(t);
                    }
                }
                // INIT level de-assert only synchronises arbitration IDs.
                DeliveryMode::Init if !ipi.assert && ipi.level_triggered => {}
                DeliveryMode::Init => {
                    self.lapics[t].init_reset();
                    self.events.push(VmEvent::InitVcpu(t));
                }
                DeliveryMode::StartUp => self.events.push(VmEvent::StartVcpu { vcpu: t, vector: ipi.vector }),
                _ => {}
            }
        }
    }

    fn lapic_effect(&mut self, src: usize, e: Option<LapicEffect>) {
        match e {
            Some(LapicEffect::Ipi(ipi)) => self.deliver_ipi(src, &ipi),
            Some(LapicEffect::EoiBroadcast(v)) => {
                self.ioapic.eoi(v);
                self.route_ioapic();
            }
            None => {}
        }
    }

    // --- time ----------------------------------------------------------------

    /// Moves guest time to `now_ns` (never backwards) and fires what is due:
    /// PIT channel 0 (IRQ 0; several missed periods coalesce into one edge,
    /// like a PIC that was not acknowledged in time), LAPIC timers, RTC.
    pub fn advance(&mut self, now_ns: u64) {
        self.now = self.now.max(now_ns);
        let now = self.now;
        if self.pit.advance(now) > 0 {
            self.pulse_irq_line(0);
        }
        for i in 0..self.lapics.len() {
            if self.lapics[i].advance(now) {
                self.kick(i);
            }
        }
        self.rtc.advance(now);
        self.sync_irqs();
    }

    /// The earliest guest time at which [`Platform::advance`] has work.
    pub fn next_deadline(&self) -> Option<u64> {
        let lapic = self.lapics.iter().filter_map(|l| l.next_deadline()).min();
        [self.pit.next_irq0_ns(), lapic, self.rtc.next_deadline()].into_iter().flatten().min()
    }

    // --- interrupts towards the vCPUs -------------------------------------

    fn pic_path(&self, vcpu: usize) -> bool {
        vcpu == 0 && self.lapics[0].accepts_pic_interrupts() && self.pic.has_interrupt()
    }

    /// The vector to inject into `vcpu` now, if any. An ExtINT from the PIC
    /// (virtual wire) takes precedence over the LAPIC's IRR, as in KVM.
    pub fn pending_interrupt(&self, vcpu: usize) -> Option<u8> {
        if self.pic_path(vcpu) {
            return self.pic.peek_vector();
        }
        self.lapics.get(vcpu)?.pending_vector()
    }

    /// The vCPU is taking the interrupt `pending_interrupt` returned: the
    /// PIC's INTA cycle or the LAPIC's IRR -> ISR. Returns the vector that
    /// was actually acknowledged (the PIC may answer with a spurious one).
    pub fn ack_interrupt(&mut self, vcpu: usize, vector: u8) -> u8 {
        if self.pic_path(vcpu) {
            let v = self.pic.acknowledge();
            self.sync_irqs();
            return v;
        }
        if let Some(l) = self.lapics.get_mut(vcpu) {
            l.ack(vector);
        }
        vector
    }

    /// Takes a pending NMI for `vcpu`.
    pub fn take_nmi(&mut self, vcpu: usize) -> bool {
        self.lapics.get_mut(vcpu).is_some_and(|l| l.take_nmi())
    }

    /// Drains reset/exit/INIT/SIPI/kick requests.
    pub fn events(&mut self) -> Vec<VmEvent> {
        core::mem::take(&mut self.events)
    }

    /// Drains only the kick requests (the vCPUs an interrupt was just
    /// delivered to), leaving the rest for the VM's own vCPUs: what a
    /// device raising its line from outside the VM needs to wake.
    pub fn take_kicks(&mut self) -> Vec<usize> {
        let mut kicks = Vec::new();
        self.events.retain(|e| match e {
            VmEvent::Kick(i) => {
                kicks.push(*i);
                false
            }
            _ => true,
        });
        kicks
    }

    // --- console --------------------------------------------------------------

    /// Host console input for the guest's COM1; returns bytes accepted.
    pub fn console_input(&mut self, bytes: &[u8]) -> usize {
        let n = self.serial.enqueue_input(bytes);
        self.sync_irqs();
        n
    }

    /// The guest's COM1 output.
    pub fn console_output(&self) -> &OutputRing {
        self.serial.output()
    }

    // --- port I/O ------------------------------------------------------------

    /// IN from `port` of `size` bytes (1, 2, 4). Unclaimed ports read all ones.
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        if !bus::valid_size(size, false) {
            return bus::all_ones(4) as u32;
        }
        let v = match self.pio.lookup(port as u64) {
            Some((dev, off)) if dev.wide() || size == 1 => self.dev_in(dev, port, off, size),
            _ if size > 1 => {
                let mut v = 0u32;
                for i in 0..size as u16 {
                    v |= self.io_in(port.wrapping_add(i), 1) << (8 * i);
                }
                v
            }
            _ => 0xff,
        };
        self.sync_irqs();
        v
    }

    /// OUT to `port`. Unclaimed ports drop the write.
    pub fn io_out(&mut self, port: u16, size: u8, value: u32) {
        if !bus::valid_size(size, false) {
            return;
        }
        match self.pio.lookup(port as u64) {
            Some((dev, off)) if dev.wide() || size == 1 => self.dev_out(dev, port, off, size, value),
            _ if size > 1 => {
                for i in 0..size as u16 {
                    self.io_out(port.wrapping_add(i), 1, value >> (8 * i) & 0xff);
                }
            }
            _ => {}
        }
        self.sync_irqs();
    }

    fn dev_in(&mut self, dev: Dev, port: u16, off: u64, size: u8) -> u32 {
        let now = self.now;
        match dev {
            Dev::Pic => self.pic.read(port) as u32,
            Dev::Pit => self.pit.read(port, now) as u32,
            Dev::Rtc => self.rtc.read(port, now) as u32,
            Dev::Serial => self.serial.read(off) as u32,
            Dev::I8042 => self.i8042.read(port) as u32,
            Dev::PostCode => self.post.read() as u32,
            Dev::Port92 => self.port92.read() as u32,
            Dev::DebugExit => bus::all_ones(size) as u32,
            Dev::FwCfg if off == 1 => {
                let mut v = 0;
                for i in 0..size {
                    v |= (self.fw_cfg.read_data() as u32) << (8 * i);
                }
                v
            }
            Dev::FwCfg => bus::all_ones(size) as u32,
            Dev::PciHost => self.pci.read(off, size),
            Dev::IoApic => bus::all_ones(size) as u32,
            Dev::AcpiPm => self.acpi_pm.read(off, size, now),
        }
    }

    fn dev_out(&mut self, dev: Dev, port: u16, off: u64, size: u8, value: u32) {
        let now = self.now;
        let b = value as u8;
        let effect = match dev {
            Dev::Pic => {
                self.pic.write(port, b);
                None
            }
            Dev::Pit => {
                self.pit.write(port, b, now);
                None
            }
            Dev::Rtc => {
                self.rtc.write(port, b, now);
                None
            }
            Dev::Serial => {
                self.serial.write(off, b);
                None
            }
            Dev::I8042 => self.i8042.write(port, b).map(|I8042Effect::ResetVm| MiscEffect::ResetVm),
            Dev::PostCode => {
                self.post.write(b);
                None
            }
            Dev::Port92 => self.port92.write(b),
            Dev::DebugExit => Some(misc::debug_exit_write(value)),
            Dev::FwCfg => {
                if off == 0 {
                    self.fw_cfg.select(value as u16);
                }
                None
            }
            Dev::PciHost => self.pci.write(off, size, value),
            Dev::IoApic => None,
            Dev::AcpiPm => {
                if self.acpi_pm.write(off, size, value) == Some(PmEffect::PowerOff) {
                    self.events.push(VmEvent::PowerOff);
                }
                None
            }
        };
        match effect {
            Some(MiscEffect::ResetVm) => self.events.push(VmEvent::ResetVm),
            Some(MiscEffect::Exit(code)) => self.events.push(VmEvent::Exit(code)),
            None => {}
        }
    }

    // --- MMIO --------------------------------------------------------------------

    /// Whether an MMIO access from `vcpu` at `addr` is a device register
    /// (the vCPU's LAPIC page or a bus range) rather than RAM or nothing.
    pub fn mmio_claims(&self, vcpu: usize, addr: u64) -> bool {
        self.lapics.get(vcpu).is_some_and(|l| l.claims_mmio(addr)) || self.mmio.lookup(addr).is_some()
    }

    /// MMIO read by `vcpu` (sizes 1, 2, 4, 8). Unclaimed reads all ones.
    pub fn mmio_read(&mut self, vcpu: usize, addr: u64, size: u8) -> u64 {
        if !bus::valid_size(size, true) {
            return u64::MAX;
        }
        let now = self.now;
        if let Some(l) = self.lapics.get(vcpu).filter(|l| l.claims_mmio(addr)) {
            let off = addr - l.mmio_base();
            let reg = l.mmio_read(off & !0xf, now) as u64;
            return (reg >> (8 * (off & 3))) & bus::size_mask(size);
        }
        match self.mmio.lookup(addr) {
            Some((Dev::IoApic, off)) => {
                let reg = self.ioapic.mmio_read(off & !3) as u64;
                (reg >> (8 * (off & 3))) & bus::size_mask(size)
            }
            _ => bus::all_ones(size),
        }
    }

    /// MMIO write by `vcpu`. Unclaimed writes are dropped.
    pub fn mmio_write(&mut self, vcpu: usize, addr: u64, size: u8, value: u64) {
        if !bus::valid_size(size, true) {
            return;
        }
        let now = self.now;
        if let Some(l) = self.lapics.get_mut(vcpu).filter(|l| l.claims_mmio(addr)) {
            let off = addr - l.mmio_base();
            // APIC registers are 32 bits wide on 16-byte boundaries.
            if off & 0xf == 0 && size >= 4 {
                let e = l.mmio_write(off, value as u32, now);
                self.lapic_effect(vcpu, e);
                self.sync_irqs();
            }
            return;
        }
        if let Some((Dev::IoApic, off)) = self.mmio.lookup(addr)
            && off & 3 == 0 {
                self.ioapic.mmio_write(off, value as u32);
                self.route_ioapic();
            }
    }

    /// A vCPU's guest TSC at time 0 changed (it wrote IA32_TSC: a new offset).
    pub fn set_tsc_base(&mut self, vcpu: usize, base: u64) {
        if let Some(l) = self.lapics.get_mut(vcpu) {
            l.set_tsc_base(base);
        }
    }

    // --- CR8 ----------------------------------------------------------------------

    /// CR8 as `vcpu` reads it: the LAPIC's task priority class (TPR[7:4]),
    /// whatever mode the LAPIC is in.
    pub fn cr8_read(&self, vcpu: usize) -> u64 {
        self.lapics.get(vcpu).map_or(0, |l| (l.mmio_read(0x80, self.now) as u64 >> 4) & 0xf)
    }

    /// MOV to CR8: sets TPR[7:4] (and clears TPR[3:0]), which may unmask a
    /// pending interrupt.
    pub fn cr8_write(&mut self, vcpu: usize, value: u64) {
        let now = self.now;
        if let Some(l) = self.lapics.get_mut(vcpu) {
            let e = l.mmio_write(0x80, ((value & 0xf) << 4) as u32, now);
            self.lapic_effect(vcpu, e);
            self.sync_irqs();
        }
    }

    /// Is `vcpu`'s LAPIC globally enabled (IA32_APIC_BASE.EN)? CPUID.1:EDX.APIC
    /// says so.
    pub fn lapic_enabled(&self, vcpu: usize) -> bool {
        self.lapics.get(vcpu).is_some_and(|l| l.mode() != crate::vmm::devices::lapic::ApicMode::Disabled)
    }

    // --- MSRs ----------------------------------------------------------------------

    /// Whether the platform implements `msr` (IA32_APIC_BASE, TSC deadline,
    /// x2APIC range).
    pub fn handles_msr(msr: u32) -> bool {
        Lapic::handles_msr(msr)
    }

    /// RDMSR by `vcpu`; `Err` means inject #GP.
    pub fn msr_read(&self, vcpu: usize, msr: u32) -> Result<u64, GeneralProtection> {
        self.lapics.get(vcpu).ok_or(GeneralProtection)?.msr_read(msr, self.now)
    }

    /// WRMSR by `vcpu`; `Err` means inject #GP.
    pub fn msr_write(&mut self, vcpu: usize, msr: u32, value: u64) -> Result<(), GeneralProtection> {
        let now = self.now;
        let e = self.lapics.get_mut(vcpu).ok_or(GeneralProtection)?.msr_write(msr, value, now)?;
        self.lapic_effect(vcpu, e);
        self.sync_irqs();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apic_regs::Icr;
    use crate::vmm::devices::lapic::{self, APIC_BASE_DEFAULT, APIC_BASE_EXTD};
    use crate::vmm::devices::serial;

    const MS: u64 = 1_000_000;
    const APIC: u64 = APIC_BASE_DEFAULT;

    fn platform(vcpus: usize) -> Platform {
        Platform::new(&PlatformConfig {
            vcpus,
            wall_clock_unix_secs: 1_793_739_845, // 2026-11-03 21:04:05 UTC
            tsc_khz: 2_000_000,
            ..Default::default()
        })
    }

    /// Linux's init_8259A through the bus; everything masked but `unmask`.
    fn init_pic(p: &mut Platform, unmask: u16) {
        for (port, v) in [(0x21, 0xff), (0xa1, 0xff), (0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01)] {
            p.io_out(port, 1, v);
        }
        for (port, v) in [(0xa0, 0x11), (0xa1, 0x38), (0xa1, 0x02), (0xa1, 0x01)] {
            p.io_out(port, 1, v);
        }
        p.io_out(0x21, 1, !unmask as u8 as u32);
        p.io_out(0xa1, 1, !(unmask >> 8) as u8 as u32);
    }

    /// Takes every pending interrupt of `vcpu`, EOIs it at the PIC or LAPIC,
    /// and returns the vectors.
    fn service(p: &mut Platform, vcpu: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(v) = p.pending_interrupt(vcpu) {
            let v = p.ack_interrupt(vcpu, v);
            got.push(v);
            if (0x30..0x40).contains(&v) {
                if v >= 0x38 {
                    p.io_out(0xa0, 1, 0x20);
                }
                p.io_out(0x20, 1, 0x20);
            } else {
                p.mmio_write(vcpu, APIC + 0xb0, 4, 0);
            }
            assert!(got.len() < 1000);
        }
        got
    }

    #[test]
    fn pit_1khz_through_the_pic_counts_ten_irq0_in_10ms() {
        let mut p = platform(1);
        init_pic(&mut p, 1 << 0);
        p.io_out(0x43, 1, 0x34); // ch0, lohi, mode 2
        p.io_out(0x40, 1, 1193 & 0xff);
        p.io_out(0x40, 1, 1193 >> 8);
        let mut irq0 = 0;
        let mut t = 0;
        while t <= 10 * MS {
            p.advance(t);
            irq0 += service(&mut p, 0).iter().filter(|&&v| v == 0x30).count();
            t += 50_000;
        }
        assert_eq!(irq0, 10);
        // The deadline the VMM arms is the next period boundary.
        let d = p.next_deadline().unwrap();
        assert!(d > 10 * MS && d <= 11 * MS, "{d}");
    }

    #[test]
    fn pit_deadline_driven_loop() {
        let mut p = platform(1);
        init_pic(&mut p, 1);
        p.io_out(0x43, 1, 0x34);
        p.io_out(0x40, 1, 11932 & 0xff); // 100 Hz
        p.io_out(0x40, 1, 11932 >> 8);
        let mut n = 0;
        while let Some(d) = p.next_deadline() {
            if d > 1000 * MS {
                break;
            }
            p.advance(d);
            n += service(&mut p, 0).len();
        }
        assert_eq!(n, 99, "100 Hz for 1 s, the 100th tick lands just after");
    }

    #[test]
    fn masked_irq0_is_not_delivered() {
        let mut p = platform(1);
        init_pic(&mut p, 0);
        p.io_out(0x43, 1, 0x34);
        p.io_out(0x40, 1, 0xa9);
        p.io_out(0x40, 1, 0x04);
        p.advance(5 * MS);
        assert_eq!(p.pending_interrupt(0), None);
        // IRR still latched: unmasking delivers it.
        p.io_out(0x21, 1, 0xfe);
        assert_eq!(p.pending_interrupt(0), Some(0x30));
    }

    #[test]
    fn lapic_timer_periodic_counts() {
        let mut p = platform(1);
        p.mmio_write(0, APIC + 0xf0, 4, 0x1ff); // SVR: enable
        p.mmio_write(0, APIC + 0x3e0, 4, 0xb); // divide by 1
        p.mmio_write(0, APIC + 0x320, 4, (1 << 17) | 0xec); // periodic
        p.advance(3 * MS);
        p.mmio_write(0, APIC + 0x380, 4, 500_000); // 0.5 ms at 1 GHz
        let mut n = 0;
        while let Some(d) = p.next_deadline() {
            if d > 13 * MS {
                break;
            }
            p.advance(d);
            n += service(&mut p, 0).iter().filter(|&&v| v == 0xec).count();
        }
        assert_eq!(n, 20);
        assert_eq!(p.mmio_read(0, APIC + 0x390, 4), 500_000, "at a period boundary");
    }

    #[test]
    fn uart_thre_flow_as_the_8250_driver_does_it() {
        let mut p = platform(1);
        init_pic(&mut p, 1 << 4);
        let base = COM1_BASE;
        p.io_out(base + 3, 1, 0x83); // DLAB
        p.io_out(base, 1, 1);
        p.io_out(base + 1, 1, 0);
        p.io_out(base + 3, 1, 0x03);
        p.io_out(base + 2, 1, 0xc7); // FIFO on, clear, trigger 14
        p.io_out(base + 4, 1, 0x0b); // DTR RTS OUT2
        assert_eq!(p.pending_interrupt(0), None);
        // start_tx: enable THRI -> IRQ 4.
        p.io_out(base + 1, 1, serial::IER_ETBEI as u32);
        assert_eq!(p.pending_interrupt(0), Some(0x34));
        assert_eq!(p.ack_interrupt(0, 0x34), 0x34);
        // The handler: read IIR (THRE), send bytes, loop until NO_INT.
        let msg = b"Linux version 6.1\r\n";
        let mut sent = 0;
        loop {
            let iir = p.io_in(base + 2, 1) as u8;
            if iir & 1 != 0 {
                break;
            }
            assert_eq!(iir & 0x0f, serial::IIR_THRI);
            if sent == msg.len() {
                p.io_out(base + 1, 1, 0); // stop_tx
                continue;
            }
            for &b in &msg[sent..(sent + 16).min(msg.len())] {
                p.io_out(base, 1, b as u32);
                sent += 1;
            }
        }
        p.io_out(0x20, 1, 0x20);
        assert_eq!(p.console_output().to_vec(), msg);
        assert_eq!(p.io_in(base + 5, 1) as u8 & 0x60, 0x60, "THRE and TEMT");
        // The edge raised by a burst while IRQ 4 was in service is latched
        // in IRR: one more interrupt, which finds IIR idle (as on QEMU).
        assert_eq!(p.pending_interrupt(0), Some(0x34));
        p.ack_interrupt(0, 0x34);
        assert_eq!(p.io_in(base + 2, 1) & 1, 1);
        p.io_out(0x20, 1, 0x20);
        assert_eq!(p.pending_interrupt(0), None);
    }

    #[test]
    fn uart_receive_interrupt_from_console_input() {
        let mut p = platform(1);
        init_pic(&mut p, 1 << 4);
        p.io_out(COM1_BASE + 1, 1, serial::IER_ERBFI as u32);
        p.console_input(b"ls\n");
        assert_eq!(p.pending_interrupt(0), Some(0x34));
        p.ack_interrupt(0, 0x34);
        let mut got = Vec::new();
        while p.io_in(COM1_BASE + 5, 1) & 1 != 0 {
            got.push(p.io_in(COM1_BASE, 1) as u8);
        }
        assert_eq!(got, b"ls\n");
        p.io_out(0x20, 1, 0x20);
        assert_eq!(p.pending_interrupt(0), None);
    }

    #[test]
    fn rtc_reads_bcd_time() {
        let mut p = platform(1);
        p.advance(3 * 1_000_000_000);
        let mut reg = |r: u8| {
            p.io_out(0x70, 1, r as u32);
            p.io_in(0x71, 1) as u8
        };
        assert_eq!(reg(0x0a) & 0x80, 0, "UIP");
        assert_eq!(reg(0x0d), 0x80, "VRT");
        assert_eq!(
            [reg(9), reg(8), reg(7), reg(4), reg(2), reg(0), reg(0x32)],
            [0x26, 0x11, 0x03, 0x21, 0x04, 0x08, 0x20]
        );
        assert_eq!(reg(0x15) as u16 | (reg(0x16) as u16) << 8, 640);
    }

    #[test]
    fn fw_cfg_signature_and_ids() {
        let mut p = platform(2);
        p.io_out(0x510, 2, 0x0000);
        let sig: Vec<u8> = (0..4).map(|_| p.io_in(0x511, 1) as u8).collect();
        assert_eq!(sig, b"QEMU");
        p.io_out(0x510, 2, 0x0005);
        assert_eq!(p.io_in(0x511, 1) | p.io_in(0x511, 1) << 8, 2);
        p.io_out(0x510, 2, 0x0003);
        let ram = (0..8).fold(0u64, |a, i| a | (p.io_in(0x511, 1) as u64) << (8 * i));
        assert_eq!(ram, 128 << 20);
    }

    #[test]
    fn pci_bus_is_empty() {
        let mut p = platform(1);
        for bdf in [0u32, 0x08, 0xff] {
            p.io_out(0xcf8, 4, 0x8000_0000 | bdf << 8);
            assert_eq!(p.io_in(0xcfc, 2), 0xffff, "vendor ID of {bdf:#x}");
            assert_eq!(p.io_in(0xcfc, 4), 0xffff_ffff);
        }
        assert_eq!(p.io_in(0xcf8, 4), 0x8000_ff00);
    }

    #[test]
    fn unknown_ports_read_all_ones_and_drop_writes() {
        let mut p = platform(1);
        assert_eq!(p.io_in(0x1234, 1), 0xff);
        assert_eq!(p.io_in(0x1234, 2), 0xffff);
        assert_eq!(p.io_in(0x1234, 4), 0xffff_ffff);
        p.io_out(0x1234, 4, 0);
        assert_eq!(p.io_in(0xffff, 2), 0xffff, "wraps harmlessly");
        assert_eq!(p.mmio_read(0, 0xd000_0000, 8), u64::MAX);
        assert_eq!(p.mmio_read(0, 0xd000_0000, 2), 0xffff);
        assert!(p.events().is_empty());
        // A 16-bit read over two byte devices is split: PIC IRR | IMR << 8.
        init_pic(&mut p, 0xfffe);
        assert_eq!(p.io_in(0x20, 2), 0x0100);
    }

    #[test]
    fn reset_and_exit_events() {
        let mut p = platform(1);
        p.io_out(0x64, 1, 0xfe);
        p.io_out(0x92, 1, 0x03);
        p.io_out(0xcf9, 1, 0x06);
        p.io_out(DEBUG_EXIT_PORT, 4, 0x31);
        p.io_out(0x80, 1, 0x55);
        assert_eq!(p.io_in(0x80, 1), 0x55);
        assert_eq!(p.events(), [VmEvent::ResetVm, VmEvent::ResetVm, VmEvent::ResetVm, VmEvent::Exit(0x31)]);
        assert!(p.events().is_empty());
    }

    #[test]
    fn acpi_s5_power_off_and_power_button_sci() {
        let mut p = platform(1);
        // Linux's acpi_hw_legacy_sleep for S5: SLP_TYP, then SLP_TYP | SLP_EN.
        p.io_out(ACPI_PM_BASE + 4, 2, 5 << 10 | 1);
        assert!(p.events().is_empty());
        p.io_out(ACPI_PM_BASE + 4, 2, 5 << 10 | 1 << 13 | 1);
        assert_eq!(p.events(), [VmEvent::PowerOff]);
        // The PM timer reads through the bus at 3.58 MHz of guest time.
        p.advance(1_000_000_000);
        assert_eq!(p.io_in(ACPI_PM_BASE + 8, 4), 3_579_545);
        // Power button: with PWRBTN_EN set, the SCI (IRQ 9) reaches the PIC.
        init_pic(&mut p, (1 << 9) | (1 << 2));
        assert!(!p.press_power_button(), "not enabled yet");
        assert_eq!(p.pending_interrupt(0), None);
        p.io_out(ACPI_PM_BASE + 2, 2, 1 << 8);
        assert_eq!(p.pending_interrupt(0), Some(0x39));
        p.ack_interrupt(0, 0x39);
        assert_eq!(p.io_in(ACPI_PM_BASE, 2) & (1 << 8), 1 << 8);
        p.io_out(ACPI_PM_BASE, 2, 1 << 8); // the handler clears the status
        p.io_out(0xa0, 1, 0x20);
        p.io_out(0x20, 1, 0x20);
        assert_eq!(p.pending_interrupt(0), None);
        assert!(p.press_power_button());
    }

    #[test]
    fn virtual_wire_needs_lint0_extint() {
        let mut p = platform(1);
        init_pic(&mut p, 1 << 1);
        p.io_out(0x60, 1, 0xff); // keyboard reset -> ACK in the buffer -> IRQ 1
        assert_eq!(p.pending_interrupt(0), Some(0x31));
        // Mask LINT0: the PIC no longer reaches the CPU.
        p.mmio_write(0, APIC + 0xf0, 4, 0x1ff);
        p.mmio_write(0, APIC + 0x350, 4, 0x10700);
        assert_eq!(p.pending_interrupt(0), None);
        // Hardware-disable the APIC: INTR goes straight to the core.
        let base = p.msr_read(0, lapic::MSR_APIC_BASE).unwrap();
        p.msr_write(0, lapic::MSR_APIC_BASE, base & !lapic::APIC_BASE_EN).unwrap();
        assert_eq!(p.pending_interrupt(0), Some(0x31));
        assert!(!p.mmio_claims(0, APIC));
        p.msr_write(0, lapic::MSR_APIC_BASE, base).unwrap();
        // Re-enabled at power-up state: LINT0 ExtINT again on the BSP.
        assert_eq!(p.ack_interrupt(0, 0x31), 0x31);
    }

    #[test]
    fn ioapic_routes_isa_irqs_to_lapics() {
        let mut p = platform(2);
        for v in 0..2 {
            p.mmio_write(v, APIC + 0xf0, 4, 0x1ff);
        }
        init_pic(&mut p, 0); // PIC fully masked: APIC mode
        // IRQ 0 is on pin 2: vector 0x40 to APIC 1 (physical).
        let rte = |p: &mut Platform, pin: u64, lo: u32, hi: u32| {
            p.mmio_write(0, ioapic::IOAPIC_BASE, 4, 0x10 + 2 * pin + 1);
            p.mmio_write(0, ioapic::IOAPIC_BASE + 0x10, 4, hi as u64);
            p.mmio_write(0, ioapic::IOAPIC_BASE, 4, 0x10 + 2 * pin);
            p.mmio_write(0, ioapic::IOAPIC_BASE + 0x10, 4, lo as u64);
        };
        rte(&mut p, 2, 0x40, 1 << 24);
        p.io_out(0x43, 1, 0x34);
        p.io_out(0x40, 1, 0xa9);
        p.io_out(0x40, 1, 0x04);
        p.advance(MS + 1000);
        assert_eq!(p.pending_interrupt(0), None);
        assert_eq!(p.pending_interrupt(1), Some(0x40));
        assert!(p.events().contains(&VmEvent::Kick(1)));
        // COM1 on pin 4, level-triggered, logical flat to both CPUs with
        // lowest priority: goes to one of them (the first).
        p.mmio_write(0, APIC + 0xd0, 4, 1 << 24);
        p.mmio_write(1, APIC + 0xd0, 4, 2 << 24);
        rte(&mut p, 4, 0x51 | (1 << 8) | (1 << 11) | (1 << 15), 0x03 << 24);
        p.io_out(COM1_BASE + 1, 1, serial::IER_ETBEI as u32);
        assert_eq!(p.pending_interrupt(0), Some(0x51));
        p.ack_interrupt(0, 0x51);
        // Reading IIR clears THRE: the line drops; EOI then clears remote IRR.
        p.io_in(COM1_BASE + 2, 1);
        p.mmio_write(0, APIC + 0xb0, 4, 0);
        assert_eq!(p.ioapic.entry(4) & (1 << 14), 0);
        // Line still high at EOI: re-delivered.
        p.io_out(COM1_BASE, 1, b'a' as u32); // THRE pending again
        p.ack_interrupt(0, 0x51);
        p.mmio_write(0, APIC + 0xb0, 4, 0);
        assert_eq!(p.pending_interrupt(0), Some(0x51), "level line still asserted");
        // IOAPIC reads through the bus.
        p.mmio_write(0, ioapic::IOAPIC_BASE, 4, 1);
        assert_eq!(p.mmio_read(0, ioapic::IOAPIC_BASE + 0x10, 4), 0x0017_0011);
    }

    #[test]
    fn a_device_line_from_outside_kicks_only_its_target() {
        let mut p = platform(4);
        for v in 0..4 {
            p.mmio_write(v, APIC + 0xf0, 4, 0x1ff);
        }
        init_pic(&mut p, 0);
        // Pin 17 (a virtio-mmio slot): level-triggered, vector 0x61 to APIC 2.
        p.mmio_write(0, ioapic::IOAPIC_BASE, 4, 0x10 + 2 * 17 + 1);
        p.mmio_write(0, ioapic::IOAPIC_BASE + 0x10, 4, 2 << 24);
        p.mmio_write(0, ioapic::IOAPIC_BASE, 4, 0x10 + 2 * 17);
        p.mmio_write(0, ioapic::IOAPIC_BASE + 0x10, 4, 0x61 | 1 << 15);
        p.events();
        // Another event waiting for the VM's own vCPUs stays where it is.
        p.events.push(VmEvent::PowerOff);
        p.set_ioapic_pin(17, true);
        assert_eq!(p.take_kicks(), [2]);
        assert_eq!(p.pending_interrupt(2), Some(0x61));
        // The line staying high (remote IRR set) kicks nobody again.
        p.set_ioapic_pin(17, true);
        assert_eq!(p.take_kicks(), [] as [usize; 0]);
        assert_eq!(p.events(), [VmEvent::PowerOff]);
    }

    #[test]
    fn ipis_between_vcpus_and_ap_startup() {
        let mut p = platform(3);
        for v in 0..3 {
            p.mmio_write(v, APIC + 0xf0, 4, 0x1ff);
        }
        p.events();
        let send = |p: &mut Platform, from: usize, icr: Icr| {
            let (hi, lo) = icr.xapic();
            p.mmio_write(from, APIC + 0x310, 4, hi as u64);
            p.mmio_write(from, APIC + 0x300, 4, lo as u64);
        };
        send(&mut p, 0, Icr::fixed(2, 0xf3));
        assert_eq!(p.pending_interrupt(2), Some(0xf3));
        assert_eq!(p.pending_interrupt(1), None);
        assert_eq!(p.events(), [VmEvent::Kick(2)]);
        // INIT, then SIPI with vector 0 (start at page 0).
        send(&mut p, 0, Icr::init(1));
        send(&mut p, 0, Icr::init_deassert(1));
        send(&mut p, 0, Icr::startup(1, 0x00));
        send(&mut p, 0, Icr::startup(1, 0x9f));
        let ev = p.events();
        assert_eq!(
            ev,
            [
                VmEvent::InitVcpu(1),
                VmEvent::StartVcpu { vcpu: 1, vector: 0 },
                VmEvent::StartVcpu { vcpu: 1, vector: 0x9f }
            ]
        );
        assert_eq!(ev[1].start_address(), Some(0));
        assert_eq!(ev[2].start_address(), Some(0x9f000));
        assert!(!p.lapics[1].software_enabled(), "INIT reset the target's APIC");
        // NMI to all but self.
        send(&mut p, 2, Icr::nmi_all_but_self());
        assert!(p.take_nmi(0) && p.take_nmi(1) && !p.take_nmi(2));
        // Self IPI via shorthand, broadcast fixed to all.
        let (_, lo) = Icr::fixed(0, 0x61).xapic();
        p.mmio_write(0, APIC + 0x300, 4, (lo | 2 << 18) as u64); // all incl. self
        assert_eq!(p.pending_interrupt(0), Some(0x61));
        assert_eq!(p.pending_interrupt(2), Some(0xf3));
        assert!(p.lapics[2].irr_has(0x61));
    }

    #[test]
    fn cr8_is_the_lapic_task_priority_class() {
        let mut p = platform(1);
        p.mmio_write(0, APIC + 0xf0, 4, 0x1ff);
        p.cr8_write(0, 0x5);
        assert_eq!(p.mmio_read(0, APIC + 0x80, 4), 0x50);
        assert_eq!(p.cr8_read(0), 5);
        // A self-IPI at priority class 4 waits until CR8 drops below it.
        let (_, lo) = Icr::fixed(0, 0x45).xapic();
        p.mmio_write(0, APIC + 0x300, 4, (lo | 1 << 18) as u64);
        assert_eq!(p.pending_interrupt(0), None);
        p.cr8_write(0, 0);
        assert_eq!(p.pending_interrupt(0), Some(0x45));
    }

    #[test]
    fn cpuid_apic_bit_follows_apic_base_enable() {
        let mut p = platform(2);
        assert!(p.lapic_enabled(0) && p.lapic_enabled(1));
        let base = p.msr_read(0, lapic::MSR_APIC_BASE).unwrap();
        p.msr_write(0, lapic::MSR_APIC_BASE, base & !lapic::APIC_BASE_EN).unwrap();
        assert!(!p.lapic_enabled(0), "EN clear: no APIC");
        assert!(p.lapic_enabled(1), "another vCPU's LAPIC is its own");
        p.msr_write(0, lapic::MSR_APIC_BASE, base).unwrap();
        assert!(p.lapic_enabled(0));
        assert!(!p.lapic_enabled(7), "no such vCPU");
    }

    #[test]
    fn x2apic_ipi_through_msrs() {
        let mut p = platform(2);
        for v in 0..2 {
            p.mmio_write(v, APIC + 0xf0, 4, 0x1ff);
            let b = p.msr_read(v, lapic::MSR_APIC_BASE).unwrap();
            p.msr_write(v, lapic::MSR_APIC_BASE, b | APIC_BASE_EXTD).unwrap();
        }
        assert_eq!(p.msr_read(1, 0x802), Ok(1));
        p.msr_write(0, 0x830, Icr::fixed(1, 0x77).x2apic()).unwrap();
        assert_eq!(p.pending_interrupt(1), Some(0x77));
        assert_eq!(p.msr_write(0, 0x831, 0), Err(GeneralProtection));
        // EOI by MSR.
        p.ack_interrupt(1, 0x77);
        assert!(p.lapics[1].isr_has(0x77));
        p.msr_write(1, 0x80b, 0).unwrap();
        assert!(!p.lapics[1].isr_has(0x77));
        assert!(Platform::handles_msr(0x80b) && Platform::handles_msr(0x1b) && !Platform::handles_msr(0x10));
    }

    #[test]
    fn rtc_periodic_interrupt_through_slave_pic() {
        let mut p = platform(1);
        init_pic(&mut p, (1 << 8) | (1 << 2));
        p.io_out(0x70, 1, 0x0b);
        let b = p.io_in(0x71, 1);
        p.io_out(0x70, 1, 0x0b);
        p.io_out(0x71, 1, b | 0x40); // PIE at 1024 Hz
        let mut n = 0;
        while let Some(d) = p.next_deadline() {
            if d > 10 * MS {
                break;
            }
            p.advance(d);
            for v in service(&mut p, 0) {
                assert_eq!(v, 0x38);
                n += 1;
                // The handler must read register C or IRQ 8 stays high.
                p.io_out(0x70, 1, 0x0c);
                p.io_in(0x71, 1);
            }
        }
        assert_eq!(n, 10, "1024 Hz over 10 ms");
    }
}


#[cfg(test)]
mod hostile_apic_tests {
    use super::*;

    /// The sequence of `image-builder/guests/hostile.S` mode 4: after all
    /// the abuse, a self-IPI, an NMI to self and the periodic timer still
    /// reach the vCPU.
    #[test]
    fn lapic_still_delivers_after_abuse() {
        let mut p = Platform::new(&PlatformConfig { vcpus: 1, x2apic: false, ..Default::default() });
        const L: u64 = 0xfee0_0000;
        p.io_out(0x21, 1, 0xff);
        p.io_out(0xa1, 1, 0xff);
        let mut r = 0x20;
        while r < 0x400 {
            if r != 0x300 && r != 0x310 {
                p.mmio_write(0, L + r, 4, 0xffff_ffff);
                p.mmio_write(0, L + r, 4, 0);
            }
            r += 0x10;
        }
        p.mmio_write(0, L + 0xf0, 4, 0x1ff);
        let base = p.msr_read(0, 0x1b).unwrap();
        p.msr_write(0, 0x1b, base & !0x800).unwrap();
        p.msr_write(0, 0x1b, base).unwrap();
        assert!(p.msr_write(0, 0x1b, base | 0xc00).is_err(), "x2APIC is not offered");
        p.msr_write(0, 0x1b, base).unwrap();
        p.mmio_write(0, L + 0xf0, 4, 0x1ff);
        p.mmio_write(0, L + 0x310, 4, 0xff00_0000);
        for icr in [0x000c_44ff, 0x0004_0400, 0x0004_0200, 0x0004_0700, 0x0004_0100, 0x0004_0003, 0x0008_0841] {
            p.mmio_write(0, L + 0x300, 4, icr);
        }
        for _ in 0..1000 {
            p.mmio_write(0, L + 0x300, 4, 0x0004_0041);
        }
        p.mmio_write(0, L + 0x3e0, 4, 0xb);
        p.mmio_write(0, L + 0x320, 4, 0x20050);
        p.mmio_write(0, L + 0x380, 4, 1);
        assert!(p.take_nmi(0), "NMI to self");
        let mut seen = Vec::new();
        let mut now = 1_000;
        for _ in 0..50 {
            p.advance(now);
            if let Some(v) = p.pending_interrupt(0) {
                let v = p.ack_interrupt(0, v);
                seen.push(v);
                p.mmio_write(0, L + 0xb0, 4, 0);
            }
            now += 50_000;
        }
        assert!(seen.contains(&0x41), "self-IPI: {seen:?}");
        assert!(seen.iter().filter(|&&v| v == 0x50).count() >= 10, "periodic timer: {seen:?}");
        assert!(!seen.iter().any(|&v| v < 16), "illegal vectors are never delivered: {seen:?}");
    }
}
