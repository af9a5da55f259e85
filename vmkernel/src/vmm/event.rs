//! Things the device model asks the VMM to do, drained with
//! [`super::platform::Platform::events`].

/// A request from the emulated platform to the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEvent {
    /// Reset the whole VM (i8042 command 0xFE, port 0x92 bit 0, port 0xCF9).
    ResetVm,
    /// The guest powered itself off (ACPI S5 through PM1 control).
    PowerOff,
    /// The guest wrote `value` to the QEMU-compatible debug-exit port. QEMU's
    /// `isa-debug-exit` would exit with status `(value << 1) | 1`.
    Exit(u32),
    /// INIT IPI: put the vCPU into wait-for-SIPI (its LAPIC is already reset).
    InitVcpu(usize),
    /// START-UP IPI: start the vCPU in real mode at `vector << 12`
    /// (CS = vector << 8, IP = 0). Any vector, page 0 included.
    StartVcpu { vcpu: usize, vector: u8 },
    /// An IPI (fixed or NMI) was posted to another vCPU: wake it if halted.
    Kick(usize),
}

impl VmEvent {
    /// The physical start address of a START-UP event.
    pub fn start_address(&self) -> Option<u64> {
        match *self {
            VmEvent::StartVcpu { vector, .. } => Some((vector as u64) << 12),
            _ => None,
        }
    }
}
