//! The virtual CPU model: one table of what the virtual CPU offers, and
//! everything that must agree with it derived from that table.
//!
//! [`FEATURES`] lists every CPUID feature bit the VMM may offer, in the
//! registers it filters ([`FILTERED`]); a bit of those registers that is not
//! in the table reads 0 (hidden), whatever the host has. Each listed bit is
//! offered because the VMM backs it: the guest runs the instructions
//! natively, or a model here or in the LAPIC implements the MSRs. From the
//! resulting [`CpuModel`] come the CPUID the guest sees, the CR4 bits and
//! EFER bits a guest may set (a bit whose feature is hidden raises #GP, as
//! on a CPU without it — [`CR4_BITS`], [`EFER_BITS`]), and the MSRs it may
//! touch ([`MSRS`]: everything else #GPs). Both backends use the same
//! model: SVM intercepts CR4 writes and checks them here, VMX owns the
//! hidden CR4 bits through the guest/host mask.
//!
//! Decisions (hidden = refused everywhere): no PMU (leaf 0xA zero, PDCM
//! and AMD's PerfCtrCore clear; the AMD K7 legacy counters every AMD64 CPU
//! has read as zero and ignore writes, as hypervisors without a vPMU do);
//! no XSAVE and nothing that needs it (AVX, FMA, F16C, XOP, FMA4, MPX,
//! AVX-512); no MONITOR/MWAIT, VMX/SVM, SMX, RDTSCP (IA32_TSC_AUX is not
//! switched), PKU, LA57, UMIP, CET; none of the speculation-control or
//! thermal/power MSR families. IA32_TSC_ADJUST is offered (it is part of
//! the guest's TSC offset).

/// CPUID output registers, by index into `[eax, ebx, ecx, edx]`.
pub const EAX: usize = 0;
pub const EBX: usize = 1;
pub const ECX: usize = 2;
pub const EDX: usize = 3;

/// One CPUID feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bit {
    pub leaf: u32,
    pub sub: u32,
    pub reg: usize,
    pub bit: u8,
}

const fn bit(leaf: u32, reg: usize, bit: u8) -> Bit {
    Bit { leaf, sub: 0, reg, bit }
}

/// Why a bit is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// When the host CPU has it: the guest uses it natively.
    Host,
    /// Always: the VMM implements it itself.
    Always,
}

pub struct Feature {
    pub name: &'static str,
    pub at: Bit,
    pub offer: Offer,
}

const fn host(name: &'static str, at: Bit) -> Feature {
    Feature { name, at, offer: Offer::Host }
}
const fn always(name: &'static str, at: Bit) -> Feature {
    Feature { name, at, offer: Offer::Always }
}

// Feature bits named where more than the table uses them.
pub const APIC: Bit = bit(1, EDX, 9);
pub const X2APIC: Bit = bit(1, ECX, 21);
pub const TSC_DEADLINE: Bit = bit(1, ECX, 24);
pub const TSC_ADJUST: Bit = bit(7, EBX, 1);
pub const PDCM: Bit = bit(1, ECX, 15);
pub const PERF_CTR_CORE: Bit = bit(0x8000_0001, ECX, 23);
pub const XSAVE: Bit = bit(1, ECX, 26);
pub const LM: Bit = bit(0x8000_0001, EDX, 29);

/// The registers [`FEATURES`] filters: every bit of these not in the
/// table is hidden.
pub const FILTERED: [(u32, usize); 10] =
    [(1, ECX), (1, EDX), (6, EAX), (7, EBX), (7, ECX), (7, EDX), (0x8000_0001, ECX), (0x8000_0001, EDX), (0x8000_0007, EDX), (0x8000_0008, EBX)];

/// Every feature bit the virtual CPU may offer (leaf 7 means subleaf 0).
pub const FEATURES: &[Feature] = &[
    // Leaf 1 EDX.
    host("FPU", bit(1, EDX, 0)),
    host("VME", bit(1, EDX, 1)),
    host("DE", bit(1, EDX, 2)),
    host("PSE", bit(1, EDX, 3)),
    host("TSC", bit(1, EDX, 4)),
    host("MSR", bit(1, EDX, 5)),
    host("PAE", bit(1, EDX, 6)),
    // Machine checks with zero banks (IA32_MCG_CAP = 0).
    host("MCE", bit(1, EDX, 7)),
    host("CX8", bit(1, EDX, 8)),
    // The LAPIC model; cleared while IA32_APIC_BASE.EN is (see `cpuid`).
    always("APIC", APIC),
    host("SEP", bit(1, EDX, 11)),
    // MTRRs and PAT: `msrs::VirtualMsrs`.
    host("MTRR", bit(1, EDX, 12)),
    host("PGE", bit(1, EDX, 13)),
    host("MCA", bit(1, EDX, 14)),
    host("CMOV", bit(1, EDX, 15)),
    host("PAT", bit(1, EDX, 16)),
    host("PSE36", bit(1, EDX, 17)),
    host("CLFSH", bit(1, EDX, 19)),
    host("MMX", bit(1, EDX, 23)),
    host("FXSR", bit(1, EDX, 24)),
    host("SSE", bit(1, EDX, 25)),
    host("SSE2", bit(1, EDX, 26)),
    host("SS", bit(1, EDX, 27)),
    // Leaf 1 ECX.
    host("SSE3", bit(1, ECX, 0)),
    host("PCLMULQDQ", bit(1, ECX, 1)),
    host("SSSE3", bit(1, ECX, 9)),
    host("CX16", bit(1, ECX, 13)),
    host("PCID", bit(1, ECX, 17)),
    host("SSE4.1", bit(1, ECX, 19)),
    host("SSE4.2", bit(1, ECX, 20)),
    // The LAPIC model implements x2APIC whatever the host has.
    always("x2APIC", X2APIC),
    host("MOVBE", bit(1, ECX, 22)),
    host("POPCNT", bit(1, ECX, 23)),
    // The LAPIC model implements IA32_TSC_DEADLINE.
    host("TSC-deadline", TSC_DEADLINE),
    host("AES", bit(1, ECX, 25)),
    host("RDRAND", bit(1, ECX, 30)),
    always("hypervisor", bit(1, ECX, 31)),
    // Leaf 6: the LAPIC timer model never stops.
    always("ARAT", bit(6, EAX, 2)),
    // Leaf 7 EBX.
    host("FSGSBASE", bit(7, EBX, 0)),
    always("TSC_ADJUST", TSC_ADJUST),
    host("BMI1", bit(7, EBX, 3)),
    host("HLE", bit(7, EBX, 4)),
    host("FDP_EXCPTN_ONLY", bit(7, EBX, 6)),
    host("SMEP", bit(7, EBX, 7)),
    host("BMI2", bit(7, EBX, 8)),
    host("ERMS", bit(7, EBX, 9)),
    host("INVPCID", bit(7, EBX, 10)),
    host("RTM", bit(7, EBX, 11)),
    host("FPU_CSDS_DEPRECATED", bit(7, EBX, 13)),
    host("RDSEED", bit(7, EBX, 18)),
    host("ADX", bit(7, EBX, 19)),
    host("SMAP", bit(7, EBX, 20)),
    host("CLFLUSHOPT", bit(7, EBX, 23)),
    host("CLWB", bit(7, EBX, 24)),
    host("SHA", bit(7, EBX, 29)),
    // Leaf 7 EDX: instruction-only bits (no speculation-control MSRs).
    host("FSRM", bit(7, EDX, 4)),
    host("MD_CLEAR", bit(7, EDX, 10)),
    host("SERIALIZE", bit(7, EDX, 14)),
    // 0x80000001 ECX.
    host("LAHF/SAHF", bit(0x8000_0001, ECX, 0)),
    host("CmpLegacy", bit(0x8000_0001, ECX, 1)),
    // LOCK MOV CR0 is MOV CR8: decoded as such (`decode::decode_mov_cr`).
    host("AltMovCr8", bit(0x8000_0001, ECX, 4)),
    host("ABM", bit(0x8000_0001, ECX, 5)),
    host("SSE4A", bit(0x8000_0001, ECX, 6)),
    host("MisAlignSse", bit(0x8000_0001, ECX, 7)),
    host("3DNowPrefetch", bit(0x8000_0001, ECX, 8)),
    host("TBM", bit(0x8000_0001, ECX, 21)),
    // 0x80000001 EDX: AMD mirrors leaf 1's bits here.
    host("FPU", bit(0x8000_0001, EDX, 0)),
    host("VME", bit(0x8000_0001, EDX, 1)),
    host("DE", bit(0x8000_0001, EDX, 2)),
    host("PSE", bit(0x8000_0001, EDX, 3)),
    host("TSC", bit(0x8000_0001, EDX, 4)),
    host("MSR", bit(0x8000_0001, EDX, 5)),
    host("PAE", bit(0x8000_0001, EDX, 6)),
    host("MCE", bit(0x8000_0001, EDX, 7)),
    host("CX8", bit(0x8000_0001, EDX, 8)),
    host("APIC", bit(0x8000_0001, EDX, 9)),
    host("SYSCALL", bit(0x8000_0001, EDX, 11)),
    host("MTRR", bit(0x8000_0001, EDX, 12)),
    host("PGE", bit(0x8000_0001, EDX, 13)),
    host("MCA", bit(0x8000_0001, EDX, 14)),
    host("CMOV", bit(0x8000_0001, EDX, 15)),
    host("PAT", bit(0x8000_0001, EDX, 16)),
    host("PSE36", bit(0x8000_0001, EDX, 17)),
    host("NX", bit(0x8000_0001, EDX, 20)),
    host("MmxExt", bit(0x8000_0001, EDX, 22)),
    host("MMX", bit(0x8000_0001, EDX, 23)),
    host("FXSR", bit(0x8000_0001, EDX, 24)),
    host("FFXSR", bit(0x8000_0001, EDX, 25)),
    host("Page1GB", bit(0x8000_0001, EDX, 26)),
    host("LM", LM),
    host("3DNowExt", bit(0x8000_0001, EDX, 30)),
    host("3DNow", bit(0x8000_0001, EDX, 31)),
    // 0x80000007 EDX: the guest's TSC is the host's plus an offset, and
    // the VMkernel keeps time by that TSC (calibrated once at boot): it
    // runs at one constant rate on every CPU, whatever an emulated host
    // CPU model claims. Without it Linux marks the TSC of a multi-vCPU
    // AMD-vendor guest "unsynchronized" (and unstable) on sight.
    always("InvariantTSC", bit(0x8000_0007, EDX, 8)),
    // 0x80000008 EBX.
    host("CLZERO", bit(0x8000_0008, EBX, 0)),
    host("RstrFpErrPtrs", bit(0x8000_0008, EBX, 2)),
];

/// Leaves that read all zero: features the model does not offer
/// (MONITOR 5, PMU 0xA, XSAVE 0xD, RDT 0xF/0x10, SGX 0x12, PT 0x14, V2
/// topology 0x1F, AMX 0x1D/0x1E, SVM 0x8000000A, AMD's TOPOEXT/IBS/SEV
/// leaves 0x8000001A-0x8000001F).
pub fn zero_leaf(leaf: u32) -> bool {
    matches!(leaf, 5 | 0xa | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x1d | 0x1e | 0x1f | 0x8000_000a | 0x8000_001a..=0x8000_001f)
}

pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const LA57: u64 = 1 << 12;
    pub const VMXE: u64 = 1 << 13;
    pub const SMXE: u64 = 1 << 14;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const CET: u64 = 1 << 23;
    pub const PKS: u64 = 1 << 24;
}

/// Each defined CR4 bit and the feature that makes it settable (`None`:
/// architectural since the Pentium). Bits not listed are reserved.
pub const CR4_BITS: &[(u64, Option<Bit>)] = &[
    (cr4::VME, Some(bit(1, EDX, 1))),
    (cr4::PVI, Some(bit(1, EDX, 1))),
    (cr4::TSD, Some(bit(1, EDX, 4))),
    (cr4::DE, Some(bit(1, EDX, 2))),
    (cr4::PSE, Some(bit(1, EDX, 3))),
    (cr4::PAE, Some(bit(1, EDX, 6))),
    (cr4::MCE, Some(bit(1, EDX, 7))),
    (cr4::PGE, Some(bit(1, EDX, 13))),
    (cr4::PCE, None),
    (cr4::OSFXSR, Some(bit(1, EDX, 24))),
    (cr4::OSXMMEXCPT, Some(bit(1, EDX, 25))),
    (cr4::UMIP, Some(bit(7, ECX, 2))),
    (cr4::LA57, Some(bit(7, ECX, 16))),
    (cr4::VMXE, Some(bit(1, ECX, 5))),
    (cr4::SMXE, Some(bit(1, ECX, 6))),
    (cr4::FSGSBASE, Some(bit(7, EBX, 0))),
    (cr4::PCIDE, Some(bit(1, ECX, 17))),
    (cr4::OSXSAVE, Some(XSAVE)),
    (cr4::SMEP, Some(bit(7, EBX, 7))),
    (cr4::SMAP, Some(bit(7, EBX, 20))),
    (cr4::PKE, Some(bit(7, ECX, 3))),
    (cr4::CET, Some(bit(7, ECX, 7))),
    (cr4::PKS, Some(bit(7, ECX, 31))),
];

pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    pub const FFXSR: u64 = 1 << 14;
}

/// EFER bits and the feature behind each; the rest (SVME, LMSLE, TCE,
/// ...) are refused.
pub const EFER_BITS: &[(u64, Bit)] = &[
    (efer::SCE, bit(0x8000_0001, EDX, 11)),
    (efer::LME, LM),
    (efer::LMA, LM),
    (efer::NXE, bit(0x8000_0001, EDX, 20)),
    (efer::FFXSR, bit(0x8000_0001, EDX, 25)),
];

/// What makes an MSR range exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrGate {
    Always,
    Feature(Bit),
    /// Architectural on every CPU of that vendor.
    AmdOnly,
}

/// The MSRs a guest may read or write (inclusive ranges) and what offers
/// them; every other MSR raises #GP. Which model answers each is
/// `msrs::VirtualMsrs`, the LAPIC, or the control structure (EFER, the
/// syscall and segment-base MSRs the backends switch).
pub const MSRS: &[(u32, u32, MsrGate)] = &[
    (0x10, 0x10, MsrGate::Feature(bit(1, EDX, 4))), // IA32_TSC
    (0x17, 0x17, MsrGate::Always),                  // IA32_PLATFORM_ID
    (0x1b, 0x1b, MsrGate::Feature(APIC)),           // IA32_APIC_BASE
    (0x3a, 0x3a, MsrGate::Always),                  // IA32_FEATURE_CONTROL (locked, VMX off)
    (0x3b, 0x3b, MsrGate::Feature(TSC_ADJUST)),     // IA32_TSC_ADJUST
    (0x8b, 0x8b, MsrGate::Always),                  // IA32_BIOS_SIGN_ID
    (0xfe, 0xfe, MsrGate::Feature(bit(1, EDX, 12))), // IA32_MTRRCAP
    (0x174, 0x176, MsrGate::Feature(bit(1, EDX, 11))), // SYSENTER
    (0x179, 0x17a, MsrGate::Feature(bit(1, EDX, 7))), // MCG_CAP, MCG_STATUS
    (0x1a0, 0x1a0, MsrGate::Always),                // IA32_MISC_ENABLE
    (0x200, 0x20f, MsrGate::Feature(bit(1, EDX, 12))), // variable MTRRs
    (0x250, 0x250, MsrGate::Feature(bit(1, EDX, 12))),
    (0x258, 0x259, MsrGate::Feature(bit(1, EDX, 12))),
    (0x268, 0x26f, MsrGate::Feature(bit(1, EDX, 12))),
    (0x277, 0x277, MsrGate::Feature(bit(1, EDX, 16))), // IA32_PAT
    (0x2ff, 0x2ff, MsrGate::Feature(bit(1, EDX, 12))), // MTRR_DEF_TYPE
    (0x6e0, 0x6e0, MsrGate::Feature(TSC_DEADLINE)),
    (0x800, 0x8ff, MsrGate::Feature(X2APIC)),
    (0xc000_0080, 0xc000_0080, MsrGate::Always),           // EFER
    (0xc000_0081, 0xc000_0084, MsrGate::Feature(bit(0x8000_0001, EDX, 11))), // STAR..SFMASK
    (0xc000_0100, 0xc000_0102, MsrGate::Feature(LM)),       // FS/GS/KERNEL_GS base
    (0xc001_0000, 0xc001_0007, MsrGate::AmdOnly),          // K7 PERFEVTSEL0-3, PERFCTR0-3
    (0xc001_0010, 0xc001_0010, MsrGate::AmdOnly),          // SYSCFG
    (0xc001_0055, 0xc001_0055, MsrGate::AmdOnly),          // INT_PENDING_MSG (C1E)
    (0xc001_0015, 0xc001_0015, MsrGate::AmdOnly),          // HWCR
];

/// The virtual CPU as offered on this host: the filtered registers'
/// values and the vendor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuModel {
    amd: bool,
    /// Values of the [`FILTERED`] registers, in that order.
    filtered: [u32; FILTERED.len()],
}

fn bit_of(r: u32, b: u8) -> bool {
    r & (1 << b) != 0
}

impl CpuModel {
    /// The model over a host whose CPUID is `host(leaf, subleaf)` (the
    /// backend's own limits already applied).
    pub fn from_host(host: impl Fn(u32, u32) -> [u32; 4]) -> CpuModel {
        let v = host(0, 0);
        let amd = [v[1], v[3], v[2]] == [0x6874_7541, 0x6974_6e65, 0x444d_4163]; // "AuthenticAMD"
        let mut filtered = [0u32; FILTERED.len()];
        for (slot, &(leaf, reg)) in filtered.iter_mut().zip(FILTERED.iter()) {
            let max = host(leaf & 0x8000_0000, 0)[0];
            let h = if leaf <= max { host(leaf, 0)[reg] } else { 0 };
            for f in FEATURES.iter().filter(|f| f.at.leaf == leaf && f.at.reg == reg) {
                if f.offer == Offer::Always || bit_of(h, f.at.bit) {
                    *slot |= 1 << f.at.bit;
                }
            }
        }
        CpuModel { amd, filtered }
    }

    pub fn amd(&self) -> bool {
        self.amd
    }

    fn filtered_reg(&self, leaf: u32, reg: usize) -> Option<u32> {
        FILTERED.iter().position(|&(l, r)| l == leaf && r == reg).map(|i| self.filtered[i])
    }

    /// Does the virtual CPU offer `b`?
    pub fn offers(&self, b: Bit) -> bool {
        self.filtered_reg(b.leaf, b.reg).is_some_and(|r| bit_of(r, b.bit))
    }

    /// CR4 bits a guest may set.
    pub fn cr4_allowed(&self) -> u64 {
        CR4_BITS.iter().filter(|(_, need)| need.is_none_or(|b| self.offers(b))).fold(0, |m, (bit, _)| m | bit)
    }

    /// Is MOV to CR4 of `value` legal (else #GP)? `old` is the current
    /// CR4, `long_mode` EFER.LMA, `cr3` the current CR3.
    pub fn cr4_write_allowed(&self, old: u64, value: u64, long_mode: bool, cr3: u64) -> bool {
        if value & !self.cr4_allowed() != 0 {
            return false;
        }
        // Long mode needs PAE; LA57 cannot change in it; PCIDE goes on only
        // in long mode with CR3's PCID 0 (SDM 4.10.1).
        if long_mode && value & cr4::PAE == 0 {
            return false;
        }
        if long_mode && (old ^ value) & cr4::LA57 != 0 {
            return false;
        }
        !(old & cr4::PCIDE == 0 && value & cr4::PCIDE != 0 && (!long_mode || cr3 & 0xfff != 0))
    }

    /// EFER bits a guest may set.
    pub fn efer_allowed(&self) -> u64 {
        EFER_BITS.iter().filter(|(_, b)| self.offers(*b)).fold(0, |m, (bit, _)| m | bit)
    }

    /// Does MSR `msr` exist on the virtual CPU?
    pub fn offers_msr(&self, msr: u32) -> bool {
        MSRS.iter().any(|&(first, last, gate)| {
            (first..=last).contains(&msr)
                && match gate {
                    MsrGate::Always => true,
                    MsrGate::Feature(b) => self.offers(b),
                    MsrGate::AmdOnly => self.amd,
                }
        })
    }

    /// The filtered registers of `leaf` (subleaf 0) applied to `r`.
    pub fn filter(&self, leaf: u32, sub: u32, r: &mut [u32; 4]) {
        if leaf == 7 && sub != 0 {
            *r = [0; 4];
            return;
        }
        for (i, &(l, reg)) in FILTERED.iter().enumerate() {
            if l == leaf {
                r[reg] = self.filtered[i];
            }
        }
        match leaf {
            // Only subleaf 0 of leaf 7; leaf 6 has nothing but ARAT.
            7 => r[EAX] = 0,
            6 => (r[EBX], r[ECX], r[EDX]) = (0, 0, 0),
            0x8000_0007 => (r[EAX], r[EBX], r[ECX]) = (0, 0, 0),
            0x8000_0008 => r[EDX] = 0,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An AMD host with every feature bit set.
    fn amd_host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            0x8000_0000 => [0x8000_0020, 0, 0, 0],
            _ => [!0; 4],
        }
    }

    /// An Intel host with no TSC-deadline, no PCID, no extended leaves
    /// beyond 0x80000001.
    fn intel_host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            1 => [0, 0, !((1 << 24) | (1 << 17)), !0],
            0x8000_0000 => [0x8000_0001, 0, 0, 0],
            _ => [!0; 4],
        }
    }

    #[test]
    fn table_has_no_duplicates_and_only_filtered_registers() {
        for (i, f) in FEATURES.iter().enumerate() {
            assert!(FILTERED.contains(&(f.at.leaf, f.at.reg)), "{} is in a register the model does not filter", f.name);
            assert!(FEATURES[..i].iter().all(|g| g.at != f.at), "{} listed twice", f.name);
        }
        for (i, (bit, _)) in CR4_BITS.iter().enumerate() {
            assert_eq!(bit.count_ones(), 1);
            assert!(CR4_BITS[..i].iter().all(|(b, _)| b != bit));
        }
    }

    #[test]
    fn no_pmu_and_hidden_features() {
        let m = CpuModel::from_host(amd_host);
        assert!(m.amd());
        assert!(!m.offers(PDCM), "PDCM hidden");
        assert!(!m.offers(PERF_CTR_CORE), "PerfCtrCore hidden");
        assert!(!m.offers(XSAVE));
        assert!(!m.offers(bit(1, ECX, 3)), "MONITOR hidden");
        assert!(!m.offers(bit(1, ECX, 5)), "VMX hidden");
        assert!(!m.offers(bit(0x8000_0001, ECX, 2)), "SVM hidden");
        assert!(!m.offers(bit(0x8000_0001, EDX, 27)), "RDTSCP hidden");
        assert!(!m.offers(bit(7, EBX, 5)), "AVX2 hidden");
        assert!(!m.offers(bit(7, EDX, 26)), "IBRS (IA32_SPEC_CTRL) hidden");
        assert!(m.offers(TSC_ADJUST) && m.offers(X2APIC) && m.offers(bit(1, ECX, 31)));
        assert!(zero_leaf(0xa) && zero_leaf(0xd) && zero_leaf(0x8000_000a));
        let mut r = [!0; 4];
        m.filter(1, 0, &mut r);
        assert_eq!(r[ECX] & ((1 << 3) | (1 << 5) | (1 << 15) | (1 << 26) | (1 << 27) | (1 << 28)), 0);
        assert_eq!(r[EAX], !0, "leaf 1 EAX (signature) untouched");
        let mut r = [!0; 4];
        m.filter(7, 1, &mut r);
        assert_eq!(r, [0; 4], "only subleaf 0 of leaf 7");
    }

    #[test]
    fn host_features_follow_the_host() {
        let m = CpuModel::from_host(intel_host);
        assert!(!m.amd());
        assert!(!m.offers(TSC_DEADLINE), "the host lacks it");
        assert!(m.offers(X2APIC), "the LAPIC model's, always");
        assert!(m.offers(TSC_ADJUST), "the VMM's, always");
        assert!(!m.offers(bit(0x8000_0008, EBX, 0)), "leaf beyond the host's maximum");
        assert!(!m.offers_msr(0x6e0), "no TSC-deadline MSR without the feature");
        assert!(!m.offers_msr(0xc001_0000), "K7 counters are AMD's");
        assert!(m.offers_msr(0x3b) && m.offers_msr(0x1b) && m.offers_msr(0x830));
        assert!(!m.offers_msr(0x345) && !m.offers_msr(0x38d) && !m.offers_msr(0xc1), "no PMU MSRs");
        let amd = CpuModel::from_host(amd_host);
        for msr in 0xc001_0000..=0xc001_0007 {
            assert!(amd.offers_msr(msr));
        }
        assert!(!amd.offers_msr(0xc001_0008));
        assert!(!amd.offers_msr(0xc001_0201), "PerfCtrCore counters hidden");
    }

    #[test]
    fn cr4_bits_follow_cpuid() {
        let m = CpuModel::from_host(amd_host);
        let a = m.cr4_allowed();
        assert_eq!(a & (cr4::OSXSAVE | cr4::VMXE | cr4::SMXE | cr4::PKE | cr4::LA57 | cr4::UMIP | cr4::CET | cr4::PKS), 0);
        assert_eq!(a & (cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::PCE | cr4::SMEP | cr4::FSGSBASE | cr4::PCIDE), cr4::PAE | cr4::PGE | cr4::OSFXSR | cr4::PCE | cr4::SMEP | cr4::FSGSBASE | cr4::PCIDE);
        let base = cr4::PAE | cr4::OSFXSR;
        assert!(m.cr4_write_allowed(base, base | cr4::PGE, true, 0));
        assert!(!m.cr4_write_allowed(base, base | cr4::OSXSAVE, true, 0), "XSAVE hidden");
        assert!(!m.cr4_write_allowed(base, base | cr4::PKE, true, 0));
        assert!(!m.cr4_write_allowed(base, base | (1 << 15), true, 0), "reserved bit 15");
        assert!(!m.cr4_write_allowed(base, base | (1 << 32), true, 0), "reserved high bits");
        assert!(!m.cr4_write_allowed(base, cr4::OSFXSR, true, 0), "PAE off in long mode");
        assert!(m.cr4_write_allowed(base, cr4::OSFXSR, false, 0));
        assert!(m.cr4_write_allowed(base, base | cr4::PCIDE, true, 0x1000));
        assert!(!m.cr4_write_allowed(base, base | cr4::PCIDE, true, 0x1001), "PCID in CR3");
        assert!(!m.cr4_write_allowed(base, base | cr4::PCIDE, false, 0), "PCIDE outside long mode");
        let intel = CpuModel::from_host(intel_host);
        assert_eq!(intel.cr4_allowed() & cr4::PCIDE, 0, "no PCID on that host");
    }

    #[test]
    fn efer_bits_follow_cpuid() {
        let m = CpuModel::from_host(amd_host);
        let a = m.efer_allowed();
        assert_eq!(a, efer::SCE | efer::LME | efer::LMA | efer::NXE | efer::FFXSR);
        assert_eq!(a & (1 << 12), 0, "SVME hidden");
    }
}
