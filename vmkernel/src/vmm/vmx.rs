//! Intel VT-x facts the VMX backend (`hv::vmx` in the kernel) needs, as
//! plain data and pure functions so they are unit-tested on the host:
//! VMCS field encodings, control bits and how to fit them to the capability
//! MSRs, exit reasons and exit-qualification layouts, segment access
//! rights, and the CR0/CR4 rules a guest write must obey (Intel SDM vol. 3C,
//! chapters 24–28 and appendices A–C).

/// VMCS field encodings (SDM appendix B). Bits 14:13 give the width
/// (16-bit, 64-bit, 32-bit, natural), bits 11:10 the kind (control,
/// read-only exit information, guest state, host state).
pub mod field {
    // 16-bit control, guest, host.
    pub const VPID: u32 = 0x0000;
    pub const GUEST_ES_SELECTOR: u32 = 0x0800;
    pub const GUEST_CS_SELECTOR: u32 = 0x0802;
    pub const GUEST_SS_SELECTOR: u32 = 0x0804;
    pub const GUEST_DS_SELECTOR: u32 = 0x0806;
    pub const GUEST_FS_SELECTOR: u32 = 0x0808;
    pub const GUEST_GS_SELECTOR: u32 = 0x080a;
    pub const GUEST_LDTR_SELECTOR: u32 = 0x080c;
    pub const GUEST_TR_SELECTOR: u32 = 0x080e;
    pub const HOST_ES_SELECTOR: u32 = 0x0c00;
    pub const HOST_CS_SELECTOR: u32 = 0x0c02;
    pub const HOST_SS_SELECTOR: u32 = 0x0c04;
    pub const HOST_DS_SELECTOR: u32 = 0x0c06;
    pub const HOST_FS_SELECTOR: u32 = 0x0c08;
    pub const HOST_GS_SELECTOR: u32 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u32 = 0x0c0c;
    // 64-bit control.
    pub const IO_BITMAP_A: u32 = 0x2000;
    pub const IO_BITMAP_B: u32 = 0x2002;
    pub const MSR_BITMAP: u32 = 0x2004;
    pub const EXIT_MSR_STORE_ADDR: u32 = 0x2006;
    pub const EXIT_MSR_LOAD_ADDR: u32 = 0x2008;
    pub const ENTRY_MSR_LOAD_ADDR: u32 = 0x200a;
    pub const TSC_OFFSET: u32 = 0x2010;
    pub const EPT_POINTER: u32 = 0x201a;
    // 64-bit read-only.
    pub const GUEST_PHYSICAL_ADDRESS: u32 = 0x2400;
    // 64-bit guest and host.
    pub const VMCS_LINK_POINTER: u32 = 0x2800;
    pub const GUEST_DEBUGCTL: u32 = 0x2802;
    pub const GUEST_PAT: u32 = 0x2804;
    pub const GUEST_EFER: u32 = 0x2806;
    pub const GUEST_PDPTE0: u32 = 0x280a;
    pub const HOST_PAT: u32 = 0x2c00;
    pub const HOST_EFER: u32 = 0x2c02;
    // 32-bit control.
    pub const PIN_BASED_CONTROLS: u32 = 0x4000;
    pub const PROC_BASED_CONTROLS: u32 = 0x4002;
    pub const EXCEPTION_BITMAP: u32 = 0x4004;
    pub const PF_ERROR_CODE_MASK: u32 = 0x4006;
    pub const PF_ERROR_CODE_MATCH: u32 = 0x4008;
    pub const CR3_TARGET_COUNT: u32 = 0x400a;
    pub const EXIT_CONTROLS: u32 = 0x400c;
    pub const EXIT_MSR_STORE_COUNT: u32 = 0x400e;
    pub const EXIT_MSR_LOAD_COUNT: u32 = 0x4010;
    pub const ENTRY_CONTROLS: u32 = 0x4012;
    pub const ENTRY_MSR_LOAD_COUNT: u32 = 0x4014;
    pub const ENTRY_INTERRUPTION_INFO: u32 = 0x4016;
    pub const ENTRY_EXCEPTION_ERROR_CODE: u32 = 0x4018;
    pub const ENTRY_INSTRUCTION_LENGTH: u32 = 0x401a;
    pub const TPR_THRESHOLD: u32 = 0x401c;
    pub const SECONDARY_CONTROLS: u32 = 0x401e;
    // 32-bit read-only.
    pub const VM_INSTRUCTION_ERROR: u32 = 0x4400;
    pub const EXIT_REASON: u32 = 0x4402;
    pub const EXIT_INTERRUPTION_INFO: u32 = 0x4404;
    pub const EXIT_INTERRUPTION_ERROR_CODE: u32 = 0x4406;
    pub const IDT_VECTORING_INFO: u32 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u32 = 0x440a;
    pub const EXIT_INSTRUCTION_LENGTH: u32 = 0x440c;
    // 32-bit guest and host.
    pub const GUEST_ES_LIMIT: u32 = 0x4800;
    pub const GUEST_CS_LIMIT: u32 = 0x4802;
    pub const GUEST_SS_LIMIT: u32 = 0x4804;
    pub const GUEST_DS_LIMIT: u32 = 0x4806;
    pub const GUEST_FS_LIMIT: u32 = 0x4808;
    pub const GUEST_GS_LIMIT: u32 = 0x480a;
    pub const GUEST_LDTR_LIMIT: u32 = 0x480c;
    pub const GUEST_TR_LIMIT: u32 = 0x480e;
    pub const GUEST_GDTR_LIMIT: u32 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u32 = 0x4812;
    pub const GUEST_ES_ACCESS_RIGHTS: u32 = 0x4814;
    pub const GUEST_CS_ACCESS_RIGHTS: u32 = 0x4816;
    pub const GUEST_SS_ACCESS_RIGHTS: u32 = 0x4818;
    pub const GUEST_DS_ACCESS_RIGHTS: u32 = 0x481a;
    pub const GUEST_FS_ACCESS_RIGHTS: u32 = 0x481c;
    pub const GUEST_GS_ACCESS_RIGHTS: u32 = 0x481e;
    pub const GUEST_LDTR_ACCESS_RIGHTS: u32 = 0x4820;
    pub const GUEST_TR_ACCESS_RIGHTS: u32 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u32 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u32 = 0x4826;
    pub const GUEST_SYSENTER_CS: u32 = 0x482a;
    pub const GUEST_PREEMPTION_TIMER: u32 = 0x482e;
    pub const HOST_SYSENTER_CS: u32 = 0x4c00;
    // Natural-width control.
    pub const CR0_GUEST_HOST_MASK: u32 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u32 = 0x6002;
    pub const CR0_READ_SHADOW: u32 = 0x6004;
    pub const CR4_READ_SHADOW: u32 = 0x6006;
    // Natural-width read-only.
    pub const EXIT_QUALIFICATION: u32 = 0x6400;
    // Natural-width guest.
    pub const GUEST_CR0: u32 = 0x6800;
    pub const GUEST_CR3: u32 = 0x6802;
    pub const GUEST_CR4: u32 = 0x6804;
    pub const GUEST_ES_BASE: u32 = 0x6806;
    pub const GUEST_CS_BASE: u32 = 0x6808;
    pub const GUEST_SS_BASE: u32 = 0x680a;
    pub const GUEST_DS_BASE: u32 = 0x680c;
    pub const GUEST_FS_BASE: u32 = 0x680e;
    pub const GUEST_GS_BASE: u32 = 0x6810;
    pub const GUEST_LDTR_BASE: u32 = 0x6812;
    pub const GUEST_TR_BASE: u32 = 0x6814;
    pub const GUEST_GDTR_BASE: u32 = 0x6816;
    pub const GUEST_IDTR_BASE: u32 = 0x6818;
    pub const GUEST_DR7: u32 = 0x681a;
    pub const GUEST_RSP: u32 = 0x681c;
    pub const GUEST_RIP: u32 = 0x681e;
    pub const GUEST_RFLAGS: u32 = 0x6820;
    pub const GUEST_PENDING_DEBUG: u32 = 0x6822;
    pub const GUEST_SYSENTER_ESP: u32 = 0x6824;
    pub const GUEST_SYSENTER_EIP: u32 = 0x6826;
    // Natural-width host.
    pub const HOST_CR0: u32 = 0x6c00;
    pub const HOST_CR3: u32 = 0x6c02;
    pub const HOST_CR4: u32 = 0x6c04;
    pub const HOST_FS_BASE: u32 = 0x6c06;
    pub const HOST_GS_BASE: u32 = 0x6c08;
    pub const HOST_TR_BASE: u32 = 0x6c0a;
    pub const HOST_GDTR_BASE: u32 = 0x6c0c;
    pub const HOST_IDTR_BASE: u32 = 0x6c0e;
    pub const HOST_SYSENTER_ESP: u32 = 0x6c10;
    pub const HOST_SYSENTER_EIP: u32 = 0x6c12;
    pub const HOST_RSP: u32 = 0x6c14;
    pub const HOST_RIP: u32 = 0x6c16;
}

/// Capability and control MSRs (SDM appendix A).
pub mod msr {
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const BASIC: u32 = 0x480;
    pub const PINBASED_CTLS: u32 = 0x481;
    pub const PROCBASED_CTLS: u32 = 0x482;
    pub const EXIT_CTLS: u32 = 0x483;
    pub const ENTRY_CTLS: u32 = 0x484;
    pub const MISC: u32 = 0x485;
    pub const CR0_FIXED0: u32 = 0x486;
    pub const CR0_FIXED1: u32 = 0x487;
    pub const CR4_FIXED0: u32 = 0x488;
    pub const CR4_FIXED1: u32 = 0x489;
    pub const PROCBASED_CTLS2: u32 = 0x48b;
    pub const EPT_VPID_CAP: u32 = 0x48c;
    pub const TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub const TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub const TRUE_EXIT_CTLS: u32 = 0x48f;
    pub const TRUE_ENTRY_CTLS: u32 = 0x490;
    /// FEATURE_CONTROL: lock bit, VMXON allowed outside SMX.
    pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
    pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
}

pub mod pin {
    pub const EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

pub mod proc1 {
    pub const INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const MWAIT_EXITING: u32 = 1 << 10;
    pub const RDPMC_EXITING: u32 = 1 << 11;
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    pub const UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const MONITOR_EXITING: u32 = 1 << 29;
    pub const PAUSE_EXITING: u32 = 1 << 30;
    pub const ACTIVATE_SECONDARY: u32 = 1 << 31;
}

pub mod proc2 {
    pub const ENABLE_EPT: u32 = 1 << 1;
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    pub const ENABLE_VPID: u32 = 1 << 5;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const ENABLE_INVPCID: u32 = 1 << 12;
}

pub mod exit_ctl {
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
}

pub mod entry_ctl {
    /// Load DR7 and IA32_DEBUGCTL from the guest fields (the guest's
    /// breakpoints; with the true controls this default-1 bit may be 0).
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Basic exit reasons (SDM appendix C).
pub mod reason {
    pub const EXCEPTION_OR_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT: u16 = 3;
    pub const SIPI: u16 = 4;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const INVLPG: u16 = 14;
    pub const RDPMC: u16 = 15;
    pub const RDTSC: u16 = 16;
    pub const VMCALL: u16 = 18;
    /// VMCLEAR … VMXON: 19–27 (VMCALL is 18).
    pub const VMCLEAR: u16 = 19;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const DR_ACCESS: u16 = 29;
    pub const IO_INSTRUCTION: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const ENTRY_FAILURE_GUEST_STATE: u16 = 33;
    pub const ENTRY_FAILURE_MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR: u16 = 39;
    pub const PAUSE: u16 = 40;
    pub const ENTRY_FAILURE_MACHINE_CHECK: u16 = 41;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIGURATION: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const INVVPID: u16 = 53;
    pub const WBINVD: u16 = 54;
    pub const XSETBV: u16 = 55;
    pub const INVPCID: u16 = 58;
    pub const VMFUNC: u16 = 59;
}

/// A VM-execution control field and the capability MSR that bounds it:
/// bits clear in the low half must be 1, bits clear in the high half must
/// be 0 (SDM A.3).
pub fn fit_controls(required: u32, optional: u32, cap: u64) -> Result<u32, u32> {
    let must_be_one = cap as u32;
    let may_be_one = (cap >> 32) as u32;
    let missing = required & !may_be_one;
    if missing != 0 {
        return Err(missing);
    }
    Ok(required | (optional & may_be_one) | must_be_one)
}

/// Whether CR3-load/store exiting can be turned off (true controls, or a
/// CPU whose default-1 bits allow it).
pub fn cr3_exiting_forced(proc1: u32) -> bool {
    proc1 & (proc1::CR3_LOAD_EXITING | proc1::CR3_STORE_EXITING) != 0
}

/// The control-field values Mantle runs guests with, fitted to this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    pub revision: u32,
    pub pin: u32,
    pub proc1: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vpid: bool,
    /// INVEPT with the all-context type (else single-context).
    pub invept_all: bool,
    /// INVVPID with the single-context type (else all-context).
    pub invvpid_single: bool,
    /// EPT maps 2 MiB pages (large guest-RAM leaves).
    pub ept_2m: bool,
    /// The VMX-preemption timer counts down once every 2^shift TSC ticks
    /// (None: the CPU has no preemption timer).
    pub preemption_timer_shift: Option<u8>,
    /// The CR4 bits the virtual CPU offers (`cpu_model::CpuModel::cr4_allowed`;
    /// all until the caller narrows it): the others stay host-owned, so
    /// setting one exits and is refused.
    pub guest_cr4: u64,
    /// Virtual NMIs with NMI-window exiting.
    pub virtual_nmis: bool,
}

/// Why a VMX CPU cannot run Mantle's guests.
pub type Unsupported = &'static str;

impl Controls {
    /// Reads the capability MSRs through `rdmsr` and fits the controls;
    /// fails when something Mantle requires (EPT with write-back 4-level
    /// tables and INVEPT, unrestricted guest, MSR bitmaps, ...) is missing.
    pub fn probe(mut rdmsr: impl FnMut(u32) -> u64) -> Result<Controls, Unsupported> {
        let basic = rdmsr(msr::BASIC);
        let true_ctls = basic & (1 << 55) != 0;
        if (basic >> 50) & 0xf != 6 {
            return Err("VT-x VMCS memory type is not write-back");
        }
        let (pin_cap, proc_cap, exit_cap, entry_cap) = if true_ctls {
            (rdmsr(msr::TRUE_PINBASED_CTLS), rdmsr(msr::TRUE_PROCBASED_CTLS), rdmsr(msr::TRUE_EXIT_CTLS), rdmsr(msr::TRUE_ENTRY_CTLS))
        } else {
            (rdmsr(msr::PINBASED_CTLS), rdmsr(msr::PROCBASED_CTLS), rdmsr(msr::EXIT_CTLS), rdmsr(msr::ENTRY_CTLS))
        };
        if (proc_cap >> 32) as u32 & proc1::ACTIVATE_SECONDARY == 0 {
            return Err("VT-x without secondary controls (no EPT)");
        }
        let proc2_cap = rdmsr(msr::PROCBASED_CTLS2);
        let ept_vpid = rdmsr(msr::EPT_VPID_CAP);
        if ept_vpid & (1 << 6) == 0 || ept_vpid & (1 << 14) == 0 {
            return Err("VT-x EPT without 4-level write-back tables");
        }
        if ept_vpid & (1 << 20) == 0 || ept_vpid & (3 << 25) == 0 {
            return Err("VT-x EPT without INVEPT");
        }
        // The preemption timer bounds every guest run to a time slice even
        // where an external interrupt might not end it (Bochs re-evaluates
        // interrupt masking at VM entry only when RFLAGS.IF changes, so a
        // guest entered with IF=0 that spins is otherwise never preempted).
        // Virtual NMIs (with NMI-window exiting): the CPU tracks the guest's
        // NMI blocking from an injected NMI to its IRET.
        let nmi_window = (proc_cap >> 32) as u32 & proc1::NMI_WINDOW_EXITING != 0;
        let vnmi = if nmi_window { pin::VIRTUAL_NMIS } else { 0 };
        let pin = fit_controls(pin::EXTERNAL_INTERRUPT_EXITING | pin::NMI_EXITING, pin::PREEMPTION_TIMER | vnmi, pin_cap)
            .map_err(|_| "VT-x without external-interrupt or NMI exiting")?;
        let misc = rdmsr(msr::MISC);
        let proc1 = fit_controls(
            proc1::USE_TSC_OFFSETTING
                | proc1::HLT_EXITING
                | proc1::MWAIT_EXITING
                | proc1::RDPMC_EXITING
                | proc1::CR8_LOAD_EXITING
                | proc1::CR8_STORE_EXITING
                | proc1::MOV_DR_EXITING
                | proc1::UNCONDITIONAL_IO_EXITING
                | proc1::USE_MSR_BITMAPS
                | proc1::MONITOR_EXITING
                | proc1::PAUSE_EXITING
                | proc1::ACTIVATE_SECONDARY,
            0,
            proc_cap,
        )
        .map_err(|_| "VT-x without the required processor-based controls")?;
        if (proc_cap >> 32) as u32 & proc1::INTERRUPT_WINDOW_EXITING == 0 {
            return Err("VT-x without interrupt-window exiting");
        }
        // VPID only with an INVVPID type to flush a recycled one.
        let invvpid = ept_vpid & (1 << 32) != 0 && ept_vpid & (3 << 41) != 0;
        let vpid_opt = if invvpid { proc2::ENABLE_VPID } else { 0 };
        let proc2 = fit_controls(proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST, vpid_opt | proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID, proc2_cap)
            .map_err(|_| "VT-x without EPT and unrestricted guest")?;
        let exit = fit_controls(
            exit_ctl::HOST_ADDRESS_SPACE_SIZE | exit_ctl::SAVE_PAT | exit_ctl::LOAD_PAT | exit_ctl::SAVE_EFER | exit_ctl::LOAD_EFER,
            exit_ctl::SAVE_DEBUG_CONTROLS,
            exit_cap,
        )
        .map_err(|_| "VT-x without 64-bit host, PAT and EFER switching on exit")?;
        if (entry_cap >> 32) as u32 & entry_ctl::IA32E_MODE_GUEST == 0 {
            return Err("VT-x without 64-bit guests");
        }
        let entry = fit_controls(entry_ctl::LOAD_PAT | entry_ctl::LOAD_EFER, entry_ctl::LOAD_DEBUG_CONTROLS, entry_cap).map_err(|_| "VT-x without PAT and EFER loading on entry")?;
        Ok(Controls {
            revision: basic as u32 & 0x7fff_ffff,
            pin,
            proc1,
            proc2,
            exit,
            entry: entry & !entry_ctl::IA32E_MODE_GUEST,
            cr0_fixed0: rdmsr(msr::CR0_FIXED0),
            cr0_fixed1: rdmsr(msr::CR0_FIXED1),
            cr4_fixed0: rdmsr(msr::CR4_FIXED0),
            cr4_fixed1: rdmsr(msr::CR4_FIXED1),
            vpid: proc2 & proc2::ENABLE_VPID != 0,
            invept_all: ept_vpid & (1 << 26) != 0,
            invvpid_single: ept_vpid & (1 << 41) != 0,
            ept_2m: ept_vpid & (1 << 16) != 0,
            preemption_timer_shift: (pin & pin::PREEMPTION_TIMER != 0).then_some((misc & 0x1f) as u8),
            guest_cr4: !0,
            virtual_nmis: pin & pin::VIRTUAL_NMIS != 0,
        })
    }

    /// The preemption-timer value for a run of at most `ns` nanoseconds on
    /// a CPU whose TSC ticks at `tsc_hz`.
    pub fn preemption_timer_value(&self, ns: u64, tsc_hz: u64) -> Option<u32> {
        let shift = self.preemption_timer_shift?;
        let ticks = (ns as u128 * tsc_hz as u128 / 1_000_000_000) >> shift;
        Some(ticks.clamp(1, u32::MAX as u128) as u32)
    }

    /// CR0 bits the guest may not own: those VMX fixes (except PE and PG,
    /// which unrestricted guest frees).
    pub fn cr0_host_mask(&self) -> u64 {
        let fixed = self.cr0_fixed0 | !self.cr0_fixed1;
        fixed & !(cr0::PE | cr0::PG) & 0xffff_ffff
    }

    /// CR4 bits the guest may not own: the fixed ones (VMXE), OSXSAVE
    /// (the XCR0 in force is the host's) and every bit the CPU model does
    /// not offer (a write setting one exits and is refused).
    pub fn cr4_host_mask(&self) -> u64 {
        ((self.cr4_fixed0 | !self.cr4_fixed1 | !self.guest_cr4) & 0xffff_ffff) | cr4::OSXSAVE | cr4::VMXE
    }

    /// The CR0 the hardware runs the guest with for a guest-visible value.
    pub fn cr0_for_guest(&self, visible: u64) -> u64 {
        let fixed0 = self.cr0_fixed0 & !(cr0::PE | cr0::PG);
        (visible | fixed0) & (self.cr0_fixed1 | cr0::PE | cr0::PG)
    }

    /// The CR4 the hardware runs the guest with for a guest-visible value.
    pub fn cr4_for_guest(&self, visible: u64) -> u64 {
        ((visible & !cr4::OSXSAVE) | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// A guest CR4 value the virtual CPU accepts (else MOV to CR4 #GPs).
    pub fn cr4_write_allowed(&self, value: u64, long_mode: bool) -> bool {
        let allowed = self.cr4_fixed1 & self.guest_cr4 & !(cr4::VMXE | cr4::OSXSAVE | cr4::SMXE);
        value & !allowed == 0 && !(long_mode && value & cr4::PAE == 0)
    }
}

pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const TS: u64 = 1 << 3;
    pub const NE: u64 = 1 << 5;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

pub mod cr4 {
    pub const PAE: u64 = 1 << 5;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
}

pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

/// Is a guest MOV to CR0 legal (else #GP)? `efer` and `cr4` are the
/// guest's current values.
pub fn cr0_write_allowed(value: u64, efer: u64, cr4: u64) -> bool {
    if value >> 32 != 0 {
        return false;
    }
    if value & cr0::PG != 0 && value & cr0::PE == 0 {
        return false;
    }
    if value & cr0::NW != 0 && value & cr0::CD == 0 {
        return false;
    }
    // Paging on with LME needs PAE (the switch into long mode).
    !(value & cr0::PG != 0 && efer & EFER_LME != 0 && cr4 & cr4::PAE == 0)
}

/// EFER.LMA as the processor derives it: long mode enabled and paging on.
pub fn efer_with_lma(efer: u64, cr0: u64) -> u64 {
    let lma = efer & EFER_LME != 0 && cr0 & cr0::PG != 0;
    if lma { efer | EFER_LMA } else { efer & !EFER_LMA }
}

/// Does this guest state use PAE paging outside long mode (the PDPTEs are
/// then VMCS fields, loaded at VM entry)?
pub fn uses_pae_pdptes(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & cr0::PG != 0 && cr4 & cr4::PAE != 0 && efer & EFER_LMA == 0
}

/// The EPT pointer for a 4-level, write-back table rooted at `root`.
pub fn eptp(root: u64) -> u64 {
    (root & !0xfff) | (3 << 3) | 6
}

/// Leaf-entry bits of Mantle's EPT besides read/write/execute (bits 0–2):
/// memory type write-back (bits 5:3 = 6); the guest's PAT still applies.
pub const EPT_LEAF_WRITE_BACK: u64 = 6 << 3;

/// An I/O-instruction exit qualification (SDM table 27-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    pub port: u16,
    pub size: u8,
    pub input: bool,
    pub string: bool,
    pub rep: bool,
}

/// A MOV DR exit's qualification (SDM table 28-4): the debug register,
/// the direction and the general register (decoder order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrAccess {
    pub dr: u8,
    pub write: bool,
    pub gpr: u8,
}

pub fn dr_access(q: u64) -> DrAccess {
    DrAccess { dr: (q & 7) as u8, write: q & (1 << 4) == 0, gpr: ((q >> 8) & 0xf) as u8 }
}

pub fn io_qualification(q: u64) -> IoQualification {
    IoQualification { port: (q >> 16) as u16, size: (q & 7) as u8 + 1, input: q & 8 != 0, string: q & 16 != 0, rep: q & 32 != 0 }
}

/// A control-register-access exit qualification (SDM table 27-3). `gpr`
/// is in the decoder's register order (RAX = 0 … R15 = 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    MovTo { cr: u8, gpr: u8 },
    MovFrom { cr: u8, gpr: u8 },
    Clts,
    Lmsw { source: u16 },
}

pub fn cr_access(q: u64) -> CrAccess {
    let cr = (q & 0xf) as u8;
    let gpr = ((q >> 8) & 0xf) as u8;
    match (q >> 4) & 3 {
        0 => CrAccess::MovTo { cr, gpr },
        1 => CrAccess::MovFrom { cr, gpr },
        2 => CrAccess::Clts,
        _ => CrAccess::Lmsw { source: (q >> 16) as u16 },
    }
}

/// LMSW: the low four CR0 bits from the source; it can set PE but never
/// clear it.
pub fn lmsw(cr0: u64, source: u16) -> u64 {
    let src = source as u64 & 0xf;
    (cr0 & !0xe) | (src & 0xe) | ((cr0 | src) & 1)
}

/// Access rights of a segment (VMCS layout, SDM 24.4.1) from the packed
/// attribute format the loaders use (SVM's: type/S/DPL/P in bits 0–7,
/// AVL/L/D/G in bits 8–11). A segment that is not present is "unusable"
/// (bit 16), which is what VMX requires for null selectors.
pub fn access_rights(attr: u16) -> u32 {
    const P: u16 = 1 << 7;
    if attr & P == 0 {
        return 1 << 16;
    }
    (attr as u32 & 0xff) | ((attr as u32 & 0xf00) << 4)
}

/// The packed attribute format from VMCS access rights (unusable → not
/// present).
pub fn attr_from_access_rights(ar: u32) -> u16 {
    if ar & (1 << 16) != 0 {
        return (ar & 0x7f) as u16;
    }
    ((ar & 0xff) | ((ar >> 4) & 0xf00)) as u16
}

/// VM-entry interruption information (SDM 24.8.3) and IDT-vectoring
/// information share a layout: vector, type, error-code valid, valid.
pub mod intr_info {
    pub const TYPE_EXTERNAL: u32 = 0 << 8;
    pub const TYPE_NMI: u32 = 2 << 8;
    pub const TYPE_HARDWARE_EXCEPTION: u32 = 3 << 8;
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    pub const VALID: u32 = 1 << 31;

    pub fn kind(info: u32) -> u32 {
        info & (7 << 8)
    }
}

/// An event whose delivery an exit interrupted (IDT-vectoring information
/// valid) must be delivered again at the next entry — except software
/// interrupts and exceptions (INT n, INT3, INTO, INT1), whose instruction
/// simply runs again because RIP still points at it. Returns the entry
/// interruption information to write.
pub fn reinject(idt_vectoring: u32) -> Option<u32> {
    if idt_vectoring & intr_info::VALID == 0 {
        return None;
    }
    match intr_info::kind(idt_vectoring) >> 8 {
        0 | 2 | 3 => Some(idt_vectoring & (intr_info::VALID | intr_info::ERROR_CODE_VALID | 0x7ff)),
        _ => None,
    }
}

/// Interruptibility state (SDM 24.4.2): blocking by STI or by MOV SS.
pub fn in_interrupt_shadow(interruptibility: u32) -> bool {
    interruptibility & 3 != 0
}

/// Offsets in Mantle's 4 KiB MSR bitmap (SDM 24.6.9): read-low, read-high,
/// write-low, write-high, 1 KiB each. Returns the byte offsets and bit of
/// the read and write intercept bits of `msr`, or None when the MSR is
/// outside both ranges (those always exit).
pub fn msr_bitmap_bits(msr: u32) -> Option<(usize, usize, u8)> {
    let (base, index) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
        _ => return None,
    };
    let byte = base + (index / 8) as usize;
    Some((byte, byte + 2048, (index % 8) as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Capability MSRs as Bochs's Skylake-X model reports them (shape, not
    /// exact values): true controls, EPT with WB 4-level tables, INVEPT
    /// all/single context, VPID with INVVPID.
    fn skylake(m: u32) -> u64 {
        match m {
            msr::BASIC => (1 << 55) | (6 << 50) | (1 << 32 /* region size bits, ignored */) | 4,
            msr::TRUE_PINBASED_CTLS => 0x0000_007f_0000_0016,
            msr::TRUE_PROCBASED_CTLS => 0xfff9_fffe_0400_6172,
            msr::TRUE_EXIT_CTLS => 0x003f_ffff_0003_6dfb,
            msr::TRUE_ENTRY_CTLS => 0x0000_f3ff_0000_11fb,
            msr::PROCBASED_CTLS2 => 0x0057_cfff_0000_0000,
            msr::EPT_VPID_CAP => (1 << 6) | (1 << 14) | (1 << 16) | (1 << 20) | (1 << 25) | (1 << 26) | (1 << 32) | (1 << 41) | (1 << 42),
            msr::MISC => 5,
            msr::CR0_FIXED0 => 0x8000_0021,
            msr::CR0_FIXED1 => 0xffff_ffff,
            msr::CR4_FIXED0 => 0x2000,
            msr::CR4_FIXED1 => 0x003f_27ff,
            _ => 0,
        }
    }

    #[test]
    fn dr_access_qualification() {
        // mov %r9, %dr3: DR 3, to DR (bit 4 clear), GPR 9.
        assert_eq!(dr_access(0x903), DrAccess { dr: 3, write: true, gpr: 9 });
        // mov %dr7, %eax: from DR.
        assert_eq!(dr_access(0x17), DrAccess { dr: 7, write: false, gpr: 0 });
    }

    #[test]
    fn fitting_respects_must_be_one_and_may_be_one() {
        // Bits 1, 4 must be one; bits 0–7 may be.
        let cap = (0xffu64 << 32) | 0x12;
        assert_eq!(fit_controls(1 << 0, 0, cap), Ok(0x13));
        assert_eq!(fit_controls(0, 1 << 9, cap), Ok(0x12), "an optional bit the CPU lacks is dropped");
        assert_eq!(fit_controls(1 << 9, 0, cap), Err(1 << 9), "a required bit the CPU lacks is an error");
    }

    #[test]
    fn probe_on_a_skylake_like_cpu() {
        let c = Controls::probe(skylake).unwrap();
        assert_eq!(c.revision, 4);
        assert!(c.proc2 & proc2::ENABLE_EPT != 0 && c.proc2 & proc2::UNRESTRICTED_GUEST != 0);
        assert!(c.vpid && c.invept_all && c.invvpid_single);
        assert!(c.ept_2m, "2 MiB EPT pages");
        let no_2m = |m| if m == msr::EPT_VPID_CAP { skylake(m) & !(1 << 16) } else { skylake(m) };
        assert!(!Controls::probe(no_2m).unwrap().ept_2m, "no 2 MiB EPT pages: guest RAM in 4 KiB pages");
        assert!(c.proc1 & proc1::HLT_EXITING != 0 && c.proc1 & proc1::UNCONDITIONAL_IO_EXITING != 0);
        assert!(!cr3_exiting_forced(c.proc1), "true controls let CR3 exiting be off");
        assert!(c.pin & pin::EXTERNAL_INTERRUPT_EXITING != 0);
        assert!(c.entry & entry_ctl::LOAD_DEBUG_CONTROLS != 0, "the guest's DR7 is loaded at entry (true controls allow 0)");
        assert!(c.exit & exit_ctl::SAVE_DEBUG_CONTROLS != 0);
        assert_eq!(c.entry & entry_ctl::IA32E_MODE_GUEST, 0, "IA-32e mode follows the guest's EFER.LMA");
        assert!(c.pin & pin::PREEMPTION_TIMER != 0);
        // 10 ms at 3.5 GHz, counted in units of 32 TSC ticks.
        assert_eq!(c.preemption_timer_value(10_000_000, 3_500_000_000), Some(35_000_000 / 32));
        assert_eq!(c.preemption_timer_value(0, 3_500_000_000), Some(1));
        let no_timer = |m| if m == msr::TRUE_PINBASED_CTLS { 0x0000_003f_0000_0016 } else { skylake(m) };
        let c = Controls::probe(no_timer).unwrap();
        assert_eq!((c.pin & pin::PREEMPTION_TIMER, c.preemption_timer_value(1, 1)), (0, None));
        assert!(c.exit & exit_ctl::LOAD_EFER != 0 && c.exit & exit_ctl::HOST_ADDRESS_SPACE_SIZE != 0);
    }

    #[test]
    fn probe_refuses_what_guests_need() {
        let no_ug = |m| if m == msr::PROCBASED_CTLS2 { 0x0000_0002_0000_0000 } else { skylake(m) };
        assert_eq!(Controls::probe(no_ug), Err("VT-x without EPT and unrestricted guest"));
        let no_ept_wb = |m| if m == msr::EPT_VPID_CAP { 1 << 6 } else { skylake(m) };
        assert!(Controls::probe(no_ept_wb).is_err());
        let no_secondary = |m| if m == msr::TRUE_PROCBASED_CTLS { 0x7ff9_fffe_0400_6172 } else { skylake(m) };
        assert_eq!(Controls::probe(no_secondary), Err("VT-x without secondary controls (no EPT)"));
        // Without INVVPID, VPID stays off (a recycled VPID could not be flushed).
        let no_invvpid = |m| if m == msr::EPT_VPID_CAP { skylake(m) & !(1 << 32) } else { skylake(m) };
        let c = Controls::probe(no_invvpid).unwrap();
        assert!(!c.vpid && c.proc2 & proc2::ENABLE_VPID == 0);
    }

    #[test]
    fn cr_masks_and_hardware_values() {
        let c = Controls::probe(skylake).unwrap();
        // NE is the only CR0 bit VMX pins down once PE/PG are free.
        assert_eq!(c.cr0_host_mask(), cr0::NE);
        assert_eq!(c.cr0_for_guest(0x11), 0x31, "real CR0 has NE; the guest sees its own");
        assert_eq!(c.cr0_for_guest(0), cr0::NE, "real mode without PE is fine for unrestricted guests");
        let m = c.cr4_host_mask();
        assert!(m & cr4::VMXE != 0 && m & cr4::OSXSAVE != 0 && m & cr4::PAE == 0);
        assert_eq!(c.cr4_for_guest(cr4::PAE | cr4::OSXSAVE), cr4::PAE | cr4::VMXE);
        assert!(c.cr4_write_allowed(cr4::PAE, true));
        assert!(!c.cr4_write_allowed(0, true), "PAE cannot go off in long mode");
        assert!(!c.cr4_write_allowed(cr4::VMXE, false), "no nested VMX");
        assert!(!c.cr4_write_allowed(cr4::OSXSAVE, false), "no XSAVE offered");
        assert!(!c.cr4_write_allowed(1 << 23, false), "bits the CPU lacks");
        // Bits the CPU has but the model hides: host-owned and refused.
        let mut hidden = c;
        hidden.guest_cr4 = !(1u64 << 20);
        assert!(c.cr4_write_allowed(1 << 20, false) && !hidden.cr4_write_allowed(1 << 20, false), "SMEP hidden by the model");
        assert!(hidden.cr4_host_mask() & (1 << 20) != 0 && c.cr4_host_mask() & (1 << 20) == 0);
    }

    #[test]
    fn cr0_rules_and_long_mode_activation() {
        assert!(cr0_write_allowed(0x8000_0011, 0, 0));
        assert!(!cr0_write_allowed(0x8000_0010, 0, 0), "PG without PE");
        assert!(!cr0_write_allowed(cr0::NW | 1, 0, 0), "NW without CD");
        assert!(!cr0_write_allowed(1 << 32, 0, 0), "reserved high bits");
        assert!(!cr0_write_allowed(0x8000_0001, EFER_LME, 0), "long mode without PAE");
        assert!(cr0_write_allowed(0x8000_0001, EFER_LME, cr4::PAE));
        assert_eq!(efer_with_lma(EFER_LME, 0x8000_0001), EFER_LME | EFER_LMA);
        assert_eq!(efer_with_lma(EFER_LME | EFER_LMA, 1), EFER_LME, "paging off leaves long mode");
        assert_eq!(efer_with_lma(EFER_LMA, 0x8000_0001), 0, "LMA cannot be set by hand");
        assert!(uses_pae_pdptes(0x8000_0001, cr4::PAE, 0));
        assert!(!uses_pae_pdptes(0x8000_0001, cr4::PAE, EFER_LME | EFER_LMA));
    }

    #[test]
    fn qualifications() {
        // OUT DX, AL to 0x3f8; IN EAX from 0xcfc; REP INSB from 0x60.
        assert_eq!(io_qualification(0x03f8_0000), IoQualification { port: 0x3f8, size: 1, input: false, string: false, rep: false });
        assert_eq!(io_qualification(0x0cfc_000b), IoQualification { port: 0xcfc, size: 4, input: true, string: false, rep: false });
        assert_eq!(io_qualification(0x0060_0038), IoQualification { port: 0x60, size: 1, input: true, string: true, rep: true });
        // mov cr0, rax; mov rbx, cr3; clts; lmsw with source 0x1.
        assert_eq!(cr_access(0x0000), CrAccess::MovTo { cr: 0, gpr: 0 });
        assert_eq!(cr_access(0x0313), CrAccess::MovFrom { cr: 3, gpr: 3 });
        assert_eq!(cr_access(0x0020), CrAccess::Clts);
        assert_eq!(cr_access(0x0001_0030), CrAccess::Lmsw { source: 1 });
        assert_eq!(cr_access(0x0f08), CrAccess::MovTo { cr: 8, gpr: 15 });
    }

    #[test]
    fn lmsw_sets_but_never_clears_pe() {
        assert_eq!(lmsw(0x8000_0011, 0x0), 0x8000_0011);
        assert_eq!(lmsw(0x10, 0x1), 0x11);
        assert_eq!(lmsw(0x11, 0xe), 0x1f);
    }

    #[test]
    fn access_rights_round_trip() {
        // Flat 32-bit code (0xc9b), 64-bit code (0xa9b), real-mode data (0x93).
        for attr in [0xc9bu16, 0xa9b, 0x93, 0x8b, 0x82] {
            assert_eq!(attr_from_access_rights(access_rights(attr)), attr, "{attr:#x}");
        }
        assert_eq!(access_rights(0xc9b), 0xc09b);
        assert_eq!(access_rights(0), 1 << 16, "a null segment is unusable");
        assert_eq!(attr_from_access_rights(1 << 16) & (1 << 7), 0);
    }

    #[test]
    fn reinjection_only_for_hardware_events() {
        let ext = intr_info::VALID | 0x30;
        assert_eq!(reinject(ext), Some(ext));
        let gp = intr_info::VALID | intr_info::TYPE_HARDWARE_EXCEPTION | intr_info::ERROR_CODE_VALID | 13;
        assert_eq!(reinject(gp | (1 << 12)), Some(gp), "bit 12 (NMI unblocking) is not part of entry information");
        assert_eq!(reinject(intr_info::VALID | (4 << 8) | 0x80), None, "INT n runs again");
        assert_eq!(reinject(0x30), None);
    }

    #[test]
    fn msr_bitmap_layout() {
        assert_eq!(msr_bitmap_bits(0x174), Some((0x2e, 0x82e, 4)));
        assert_eq!(msr_bitmap_bits(0xc000_0082), Some((1024 + 16, 3072 + 16, 2)));
        assert_eq!(msr_bitmap_bits(0xc001_0000), None);
        assert_eq!(eptp(0x1234_5000), 0x1234_501e);
    }
}
