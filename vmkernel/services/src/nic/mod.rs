//! NICs: discovery of network functions on PCI, the driver instances
//! (over the framework's `hal::Hal` implementation,
//! `framework::hal::KernelHal`), and their interrupts (an MSI-X or MSI
//! vector per NIC from the framework's allocator; without either, the
//! INTx line through the IOAPIC; without that too, the NIC is polled).
//!
//! Every network-class PCI function is listed in the log; the ones a
//! driver knows (`virtio-net`, `e1000e`) are brought up and kept in
//! [`NICS`] for the network stack. A NIC without a driver, or whose
//! bring-up fails, is reported and left alone — never a panic.

pub mod ktest;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use framework::hal::KernelHal;
use hal::{Counters, EthernetDevice, InterruptCause, MacAddress, Mmio};
use pci::interrupts::{self, MsiMessage, MsixTable};
use pci::{ConfigRegionAccess, Function, PciAddress};
use spin::Mutex;

use crate::arch::{apic, trap};
use crate::pci::PortConfigAccess;

/// One driven NIC. (A few NICs live for the host's lifetime: the size
/// difference between the variants costs nothing worth a box.)
#[allow(clippy::large_enum_variant)]
pub enum Driver {
    VirtioNet(virtio_net::VirtioNet<KernelHal>),
    E1000e(e1000e::E1000e<KernelHal, Mmio>),
}

/// How the NIC interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irq {
    Msix(u8),
    Msi(u8),
    /// The legacy INTx line, routed at its GSI to the vector.
    Intx { gsi: u32, vector: u8 },
    /// No interrupt at all: the stack polls it.
    Polled,
}

impl core::fmt::Display for Irq {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Irq::Msix(v) => write!(f, "MSI-X vector {v:#x}"),
            Irq::Msi(v) => write!(f, "MSI vector {v:#x}"),
            Irq::Intx { gsi, vector } => write!(f, "INTx GSI {gsi} vector {vector:#x}"),
            Irq::Polled => f.write_str("polled (no MSI-X, MSI or INTx line)"),
        }
    }
}

pub struct Nic {
    pub function: Function,
    pub irq: Irq,
    pub driver: Driver,
}

/// Calls `$body` with `$dev` bound to the driver whatever its type.
macro_rules! with_driver {
    ($driver:expr, $dev:ident => $body:expr) => {
        match $driver {
            Driver::VirtioNet($dev) => $body,
            Driver::E1000e($dev) => $body,
        }
    };
}
pub(crate) use with_driver;

impl Nic {
    pub fn mac_address(&self) -> MacAddress {
        with_driver!(&self.driver, d => d.mac_address())
    }
    pub fn link_up(&mut self) -> bool {
        with_driver!(&mut self.driver, d => d.link_up())
    }
    pub fn model(&self) -> &'static str {
        with_driver!(&self.driver, d => d.model())
    }
    pub fn counters(&self) -> Counters {
        with_driver!(&self.driver, d => d.counters())
    }
    pub fn set_interrupts_enabled(&mut self, enabled: bool) {
        with_driver!(&mut self.driver, d => d.set_interrupts_enabled(enabled))
    }
    pub fn acknowledge_interrupt(&mut self) -> InterruptCause {
        with_driver!(&mut self.driver, d => d.acknowledge_interrupt())
    }
    /// Masks the NIC's interrupts while the stack polls, if that is cheap
    /// (see `EthernetDevice::mask_while_polling`).
    pub fn mask_while_polling(&mut self) -> bool {
        with_driver!(&mut self.driver, d => d.mask_while_polling())
    }
    /// Ends `mask_while_polling`: true if a frame already waits.
    pub fn unmask_after_polling(&mut self) -> bool {
        with_driver!(&mut self.driver, d => d.unmask_after_polling())
    }
    pub fn transmit_frame(&mut self, frame: &[u8]) -> bool {
        with_driver!(&mut self.driver, d => hal::transmit_frame(d, frame))
    }
    pub fn receive_into(&mut self, buf: &mut [u8]) -> Option<usize> {
        with_driver!(&mut self.driver, d => hal::receive_into(d, buf))
    }
}

/// The NICs brought up at boot, in PCI order (`nic0`, `nic1`, ...).
pub static NICS: Mutex<Vec<Nic>> = Mutex::new(Vec::new());

/// Network functions found but not driven, and why.
/// What a NIC interrupt wakes (the network world's poll; registered by the
/// network services, which sit above the drivers).
static ON_INTERRUPT: spin::Once<fn()> = spin::Once::new();

/// Registers what each NIC interrupt calls after recording its cause.
pub fn set_interrupt_hook(f: fn()) {
    ON_INTERRUPT.call_once(|| f);
}

static UNDRIVEN: Mutex<Vec<(Function, &'static str)>> = Mutex::new(Vec::new());

/// The status screen's lines: `nic0 virtio-net 52:54:00:12:34:56, link up`
/// for each driven NIC, `0000:00:03.0 8086:100e: no driver` for the rest.
pub fn status_lines() -> Vec<alloc::string::String> {
    use alloc::format;
    let mut lines = Vec::new();
    for (i, nic) in NICS.lock().iter_mut().enumerate() {
        let link = if nic.link_up() { "up" } else { "down" };
        lines.push(format!("nic{i} {} {}, link {link}", nic.model(), nic.mac_address()));
    }
    for (f, why) in UNDRIVEN.lock().iter() {
        lines.push(format!("{} {:04x}:{:04x}: {why}", f.address, f.vendor_id, f.device_id));
    }
    lines
}

pub const MAX_NICS: usize = 8;

/// Interrupts taken per NIC, and the causes seen (bit 0 rx, 1 tx, 2 link).
pub static IRQ_COUNT: [AtomicU64; MAX_NICS] = [const { AtomicU64::new(0) }; MAX_NICS];
pub static IRQ_CAUSES: [AtomicU64; MAX_NICS] = [const { AtomicU64::new(0) }; MAX_NICS];

/// Whether NIC N's interrupts are masked by its interrupt handler until
/// the network world has polled its rings empty ([`unmask_after_polling`]).
static MASKED: [AtomicBool; MAX_NICS] = [const { AtomicBool::new(false) }; MAX_NICS];

/// Lets NIC `index`'s interrupts in again if its handler masked them (the
/// network world calls this before it sleeps): true if a frame already
/// waits, so the caller polls again instead of sleeping.
pub fn unmask_after_polling(index: usize) -> bool {
    if !MASKED.get(index).is_some_and(|m| m.swap(false, Ordering::AcqRel)) {
        return false;
    }
    NICS.lock().get_mut(index).is_some_and(|n| n.unmask_after_polling())
}

/// The interrupt handler of NIC `N`: acknowledges the device (so it can
/// interrupt again) and records the cause for whoever polls it. Kernel
/// code runs with interrupts off, so the interrupted code never holds
/// `NICS` on this CPU.
fn on_nic_interrupt<const N: usize>(_frame: &mut trap::TrapFrame) {
    IRQ_COUNT[N].fetch_add(1, Ordering::AcqRel);
    if let Some(nic) = NICS.lock().get_mut(N) {
        let c = nic.acknowledge_interrupt();
        // NIC 0 is vmk0's, which the network world polls (and unmasks);
        // the others interrupt per event.
        if N == 0 && nic.mask_while_polling() {
            MASKED[N].store(true, Ordering::Release);
        }
        let bits = c.rx as u64 | (c.tx as u64) << 1 | (c.link as u64) << 2;
        IRQ_CAUSES[N].fetch_or(bits, Ordering::AcqRel);
    }
    apic::eoi();
    if let Some(kick) = ON_INTERRUPT.get() {
        kick();
    }
}

const HANDLERS: [trap::Handler; MAX_NICS] = [
    on_nic_interrupt::<0>,
    on_nic_interrupt::<1>,
    on_nic_interrupt::<2>,
    on_nic_interrupt::<3>,
    on_nic_interrupt::<4>,
    on_nic_interrupt::<5>,
    on_nic_interrupt::<6>,
    on_nic_interrupt::<7>,
];

const CLASS_NETWORK: u8 = 0x02;

/// Finds the network functions, brings up those a driver knows, routes
/// their interrupts to this CPU. Returns how many NICs are driven.
pub fn init(functions: &[Function]) -> usize {
    // Mechanism #1 reaches every function's first 256 bytes, which hold
    // the header and the MSI/MSI-X capabilities.
    let access = PortConfigAccess::new();
    let mut nics = Vec::new();
    for f in functions.iter().filter(|f| f.class == CLASS_NETWORK) {
        if nics.len() == MAX_NICS {
            log::warn!("nic: {f}: more than {MAX_NICS} NICs; not used");
            UNDRIVEN.lock().push((*f, "not used (too many NICs)"));
            continue;
        }
        let index = nics.len();
        match bring_up(&access, f, index) {
            Ok(Some(nic)) => nics.push(nic),
            Ok(None) => {
                log::info!("nic: {f}: no driver for this NIC (listed, not used)");
                UNDRIVEN.lock().push((*f, "no driver"));
            }
            Err(e) => {
                log::warn!("nic: {f}: cannot bring it up: {e}");
                UNDRIVEN.lock().push((*f, "driver failed (see log)"));
            }
        }
    }
    let count = nics.len();
    *NICS.lock() = nics;
    for (i, nic) in NICS.lock().iter_mut().enumerate() {
        let link = if nic.link_up() { "up" } else { "down" };
        log::info!(
            "nic{i}: {} {} at {}, link {link}, interrupts {}",
            nic.model(),
            nic.mac_address(),
            nic.function.address,
            nic.irq
        );
    }
    count
}

fn bring_up(access: &PortConfigAccess, f: &Function, index: usize) -> Result<Option<Nic>, alloc::string::String> {
    use alloc::format;
    let address = f.address;
    let known = virtio_net::supports(f.vendor_id, f.device_id) || e1000e::supports(f.vendor_id, f.device_id);
    if !known {
        return Ok(None);
    }
    interrupts::enable_dma_and_mmio(access, address);
    let mut driver = if virtio_net::supports(f.vendor_id, f.device_id) {
        Driver::VirtioNet(virtio_net::VirtioNet::new(access, address).map_err(|e| format!("virtio-net: {e}"))?)
    } else {
        let (bar, size) = interrupts::memory_bar(access, address, 0).ok_or("e1000e: BAR 0 is no memory BAR")?;
        let regs = Mmio::map::<KernelHal>(bar, size as usize).ok_or_else(|| format!("e1000e: cannot map BAR 0 at {bar:#x}"))?;
        Driver::E1000e(e1000e::E1000e::new(regs).map_err(|e| format!("e1000e: {e}"))?)
    };
    let vector = framework::hal::allocate_vector(HANDLERS[index]).ok_or("no free interrupt vector")?;
    let irq = route_interrupt(access, address, vector, &mut driver);
    Ok(Some(Nic { function: *f, irq, driver }))
}

/// MSI-X (entry 0, the driver told to use it) if the function has it,
/// else single-message MSI, else the INTx line, else nothing (polled).
fn route_interrupt(access: &impl ConfigRegionAccess, address: PciAddress, vector: u8, driver: &mut Driver) -> Irq {
    let support = interrupts::interrupt_support(access, address);
    let Some(message) = MsiMessage::x86(apic::id(), vector) else { return Irq::Polled };
    if let Some(mut msix) = support.msix {
        let table = interrupts::msix_table_location(access, address, &msix)
            .and_then(|(phys, len)| Mmio::map::<KernelHal>(phys, len))
            .map(|regs| MsixTable::new(regs, msix.table_size()));
        if let Some(table) = table {
            interrupts::msix_enable_masked(access, address, &mut msix);
            for entry in 1..table.entries() {
                let _ = table.set_masked(entry, true);
            }
            let routed = table.program(0, message).is_ok()
                && match driver {
                    Driver::VirtioNet(d) => d.route_interrupts_to_msix(0),
                    Driver::E1000e(d) => {
                        d.route_causes_to_msix(0);
                        true
                    }
                };
            interrupts::msix_unmask_function(access, &mut msix);
            if routed {
                return Irq::Msix(vector);
            }
            log::warn!("nic: {address}: the device refused MSI-X entry 0");
            msix.set_enabled(false, access);
        }
    }
    if let Some(msi) = support.msi {
        interrupts::msi_enable(access, address, &msi, message);
        return Irq::Msi(vector);
    }
    // INTx: the line the firmware assigned in Interrupt Line is an ISA IRQ
    // on QEMU's PIIX and ICH9 (their PCI interrupt routers feed the
    // IOAPIC's ISA pins); PCI lines are level-triggered and, behind those
    // routers, active high (QEMU's ACPI link devices say so). The handler
    // acknowledges the device before the EOI, so the line drops. Shared
    // lines work as long as the other devices on it are quiet or use MSI.
    if let Some(intx) = support.intx.filter(|i| (1..16).contains(&i.line)) {
        let gsi = u32::from(intx.line);
        match crate::arch::ioapic::route_gsi(gsi, vector, apic::id(), false, true) {
            Ok(()) => {
                interrupts::set_intx_disabled(access, address, false);
                return Irq::Intx { gsi, vector };
            }
            Err(e) => log::warn!("nic: {address}: cannot route INTx line {gsi}: {e:?}"),
        }
    }
    Irq::Polled
}
