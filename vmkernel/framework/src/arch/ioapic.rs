//! IOAPICs (from the MADT) and the legacy 8259 PICs.
//!
//! Init masks every redirection entry; drivers then route the interrupts
//! they own with [`route_isa_irq`] (or [`route_gsi`]). The 8259s are
//! remapped to 0xe0..=0xef, away from exception and kernel vectors, and
//! fully masked: only a spurious IRQ 7/15 can still come through, which
//! the handlers here drop.

use arrayvec::ArrayVec;
use spin::{Mutex, Once};
use vmkernel::apic_regs::{self, Redirection};

use super::cpu::Ports;
use super::trap;
use crate::acpi::Platform;
use crate::mm;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u32 = 0;
const REG_VERSION: u32 = 1;
const REG_REDIR: u32 = 0x10;

/// First vector of the remapped 8259 pair (master 0xe0..=0xe7, slave 0xe8..=0xef).
pub const PIC_VECTOR_BASE: u8 = 0xe0;

struct IoApic {
    id: u8,
    gsi_base: u32,
    entries: u32,
    /// Direct-map address of the register window; the lock keeps the
    /// select/window pair of accesses together across CPUs.
    regs: Mutex<u64>,
}

impl IoApic {
    fn read(&self, reg: u32) -> u32 {
        let base = self.regs.lock();
        // SAFETY: the IOAPIC window lies in the direct map (checked in
        // `init`); the lock makes select+read one operation.
        unsafe {
            core::ptr::write_volatile((*base + IOREGSEL) as *mut u32, reg);
            core::ptr::read_volatile((*base + IOWIN) as *const u32)
        }
    }

    fn write(&self, reg: u32, v: u32) {
        let base = self.regs.lock();
        // SAFETY: as in `read`.
        unsafe {
            core::ptr::write_volatile((*base + IOREGSEL) as *mut u32, reg);
            core::ptr::write_volatile((*base + IOWIN) as *mut u32, v);
        }
    }

    /// Writes entry `n`, keeping it masked while the halves disagree.
    fn set_entry(&self, n: u32, r: Redirection) {
        let reg = REG_REDIR + 2 * n;
        self.write(reg, Redirection::MASKED.low());
        self.write(reg + 1, r.high());
        self.write(reg, r.low());
    }

    fn covers(&self, gsi: u32) -> bool {
        gsi >= self.gsi_base && gsi < self.gsi_base + self.entries
    }
}

static IOAPICS: Once<ArrayVec<IoApic, 8>> = Once::new();
static OVERRIDES: Once<ArrayVec<(u8, u32, u16), 16>> = Once::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No IOAPIC serves this GSI.
    NoIoApic(u32),
    /// The IOAPIC destination field has 8 bits (no interrupt remapping).
    DestinationTooLarge(u32),
    /// Vectors below 0x20 are exceptions.
    BadVector(u8),
}

/// Remaps and masks the 8259s, then finds, maps and masks every IOAPIC.
pub fn init(p: &Platform) {
    disable_8259();
    OVERRIDES.call_once(|| p.isa_overrides.iter().map(|o| (o.irq, o.gsi, o.flags)).collect());
    IOAPICS.call_once(|| {
        let mut v = ArrayVec::new();
        for io in &p.ioapics {
            if !mm::direct_map_covers(io.address, 0x20) {
                log::warn!("ioapic: {:#x} lies outside the direct map; ignored", io.address);
                continue;
            }
            let mut a = IoApic { id: io.id, gsi_base: io.gsi_base, entries: 0, regs: Mutex::new(mm::phys_to_virt(io.address)) };
            let ver = a.read(REG_VERSION);
            a.entries = apic_regs::ioapic_entries(ver);
            for n in 0..a.entries {
                a.set_entry(n, Redirection::MASKED);
            }
            log::info!(
                "ioapic: id {} (reg {:#x}) at {:#x}, version {:#x}, GSIs {}..={}, all masked",
                a.id,
                a.read(REG_ID) >> 24,
                io.address,
                ver & 0xff,
                a.gsi_base,
                a.gsi_base + a.entries - 1
            );
            v.push(a);
        }
        if v.is_empty() {
            log::warn!("ioapic: none found; device interrupts are unavailable");
        }
        v
    });
}

/// Routes ISA `irq` (as the 8259 numbered it) to `vector` on the CPU with
/// `dest_apic_id`, honouring the MADT's interrupt source overrides (GSI,
/// polarity, trigger). Returns the GSI used.
pub fn route_isa_irq(irq: u8, vector: u8, dest_apic_id: u32) -> Result<u32, RouteError> {
    let ovr = OVERRIDES.get().map(|o| o.as_slice()).unwrap_or(&[]);
    let r = apic_regs::isa_route(ovr.iter().copied(), irq);
    route_gsi(r.gsi, vector, dest_apic_id, r.active_low, r.level_triggered)?;
    Ok(r.gsi)
}

/// Routes a global system interrupt with explicit polarity and trigger
/// (PCI INTx lines: active-low, level).
pub fn route_gsi(gsi: u32, vector: u8, dest_apic_id: u32, active_low: bool, level: bool) -> Result<(), RouteError> {
    if vector < 0x20 {
        return Err(RouteError::BadVector(vector));
    }
    let dest = u8::try_from(dest_apic_id).map_err(|_| RouteError::DestinationTooLarge(dest_apic_id))?;
    let io = find(gsi)?;
    let entry = Redirection { vector, active_low, level_triggered: level, masked: false, dest };
    io.set_entry(gsi - io.gsi_base, entry);
    log::debug!("ioapic: GSI {gsi} -> vector {vector:#x} on APIC {dest_apic_id} ({entry:?})");
    Ok(())
}

fn find(gsi: u32) -> Result<&'static IoApic, RouteError> {
    IOAPICS.get().and_then(|v| v.iter().find(|a| a.covers(gsi))).ok_or(RouteError::NoIoApic(gsi))
}

/// Reprograms both 8259s to vectors 0xe0..=0xef and masks all their lines.
/// Writes to absent PICs go nowhere, so this runs unconditionally.
fn disable_8259() {
    // SAFETY: the 8259 ports belong to the kernel; nothing else drives them.
    let p = unsafe { Ports::new() };
    let io_wait = || p.outb(0x80, 0);
    let seq: [(u16, u8); 10] = [
        (0x20, 0x11), // ICW1: initialise, ICW4 follows (master)
        (0xa0, 0x11), // ... slave
        (0x21, PIC_VECTOR_BASE),
        (0xa1, PIC_VECTOR_BASE + 8),
        (0x21, 1 << 2), // ICW3: slave on IRQ2
        (0xa1, 2),      // slave identity
        (0x21, 0x01),   // ICW4: 8086 mode
        (0xa1, 0x01),
        (0x21, 0xff), // OCW1: mask everything
        (0xa1, 0xff),
    ];
    for (port, v) in seq {
        p.outb(port, v);
        io_wait();
    }
    for v in PIC_VECTOR_BASE..PIC_VECTOR_BASE + 16 {
        trap::register(v, on_8259);
    }
}

/// A masked 8259 raises only spurious IRQ 7/15, which need no EOI at the
/// PIC that produced them (a slave spurious still needs the master's).
fn on_8259(frame: &mut trap::TrapFrame) {
    let irq = frame.vector as u8 - PIC_VECTOR_BASE;
    if irq >= 8 {
        // SAFETY: EOI to the master PIC for the cascade line.
        unsafe { Ports::new() }.outb(0x20, 0x20);
    }
    log::debug!("8259: spurious IRQ {irq}");
}
