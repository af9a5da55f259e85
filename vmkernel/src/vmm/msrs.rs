//! The model-specific registers a virtual CPU answers itself (besides the
//! LAPIC's, in `devices::lapic`, and EFER, which lives in the control
//! structure): the ones guests read while booting — TSC, MTRRs, PAT,
//! MISC_ENABLE, machine-check capabilities, feature control, microcode ID.
//! IA32_TSC_ADJUST (part of the guest's TSC offset) and AMD's K7 legacy
//! performance counters (read as zero, writes ignored: no vPMU). Whether
//! the guest may reach an MSR at all is the CPU model's decision
//! (`cpu_model::MSRS`); everything else raises #GP in the guest.

/// What a write asks of the backend besides storing the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrEffect {
    /// The guest's PAT (SVM: the VMCB's G_PAT; VMX: GUEST_IA32_PAT).
    SetPat(u64),
    /// Guest TSC = host TSC + offset (RDTSC runs without exits).
    SetTscOffset(u64),
}

/// #GP: the MSR does not exist or refuses the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrFault;

pub const IA32_TSC: u32 = 0x10;
pub const IA32_PLATFORM_ID: u32 = 0x17;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_TSC_ADJUST: u32 = 0x3b;
/// AMD K7 PERFEVTSEL0-3 (0xc0010000-3) and PERFCTR0-3 (0xc0010004-7).
pub const AMD_K7_PERF_FIRST: u32 = 0xc001_0000;
pub const AMD_K7_PERF_LAST: u32 = 0xc001_0007;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_MCG_CAP: u32 = 0x179;
pub const IA32_MCG_STATUS: u32 = 0x17a;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const AMD_HWCR: u32 = 0xc001_0015;
/// AMD SYSCFG: Linux's MTRR code reads it on K8 and later (MtrrFixDramModEn).
pub const AMD_SYSCFG: u32 = 0xc001_0010;
/// AMD K8 interrupt-pending message register: Linux reads it on CPUs with
/// erratum 400 to see whether C1E is active (it is not: reads 0).
pub const AMD_INT_PENDING_MSG: u32 = 0xc001_0055;

/// Variable-range MTRR pairs offered (MTRRCAP.VCNT).
pub const VARIABLE_MTRRS: usize = 8;
/// The fixed-range MTRRs: 64K, 2×16K, 8×4K.
const FIXED_MTRRS: [u32; 11] = [0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f];
/// Power-on PAT: WB, WT, UC-, UC, repeated.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// One vCPU's software MSRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualMsrs {
    tsc_offset: u64,
    /// IA32_TSC_ADJUST: what the guest's writes to IA32_TSC and to this
    /// MSR have added to its TSC (SDM 17.17.3).
    tsc_adjust: u64,
    pat: u64,
    mtrr_def_type: u64,
    mtrr_fixed: [u64; 11],
    mtrr_var: [u64; 2 * VARIABLE_MTRRS],
    misc_enable: u64,
}

impl Default for VirtualMsrs {
    fn default() -> Self {
        VirtualMsrs {
            tsc_offset: 0,
            tsc_adjust: 0,
            pat: PAT_DEFAULT,
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [0; 2 * VARIABLE_MTRRS],
            misc_enable: 1, // fast strings
        }
    }
}

/// A PAT value is valid when every entry is a defined memory type.
fn valid_pat(v: u64) -> bool {
    (0..8).all(|i| matches!((v >> (8 * i)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7))
}

/// A memory type for MTRRs: UC, WC, WT, WP, WB.
fn valid_mtrr_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl VirtualMsrs {
    /// Whether this model answers `msr`.
    pub fn handles(msr: u32) -> bool {
        matches!(
            msr,
            IA32_TSC
                | IA32_PLATFORM_ID
                | IA32_FEATURE_CONTROL
                | IA32_BIOS_SIGN_ID
                | IA32_MTRRCAP
                | IA32_MCG_CAP
                | IA32_MCG_STATUS
                | IA32_MISC_ENABLE
                | IA32_PAT
                | IA32_MTRR_DEF_TYPE
                | AMD_HWCR
                | AMD_SYSCFG
                | AMD_INT_PENDING_MSG
                | IA32_TSC_ADJUST
                | AMD_K7_PERF_FIRST..=AMD_K7_PERF_LAST
        ) || (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VARIABLE_MTRRS as u32).contains(&msr)
            || FIXED_MTRRS.contains(&msr)
    }

    /// RDMSR; `host_tsc` is the host's TSC now.
    pub fn read(&self, msr: u32, host_tsc: u64) -> Result<u64, MsrFault> {
        Ok(match msr {
            IA32_TSC => host_tsc.wrapping_add(self.tsc_offset),
            IA32_PLATFORM_ID | IA32_BIOS_SIGN_ID | IA32_MCG_CAP | IA32_MCG_STATUS | AMD_HWCR | AMD_SYSCFG | AMD_INT_PENDING_MSG => 0,
            IA32_TSC_ADJUST => self.tsc_adjust,
            AMD_K7_PERF_FIRST..=AMD_K7_PERF_LAST => 0,
            // Locked, VMX off: the virtual CPU offers no VMX.
            IA32_FEATURE_CONTROL => 1,
            // VCNT, fixed ranges supported, write-combining supported.
            IA32_MTRRCAP => VARIABLE_MTRRS as u64 | (1 << 8) | (1 << 10),
            IA32_MISC_ENABLE => self.misc_enable,
            IA32_PAT => self.pat,
            IA32_MTRR_DEF_TYPE => self.mtrr_def_type,
            m => {
                if let Some(i) = FIXED_MTRRS.iter().position(|&f| f == m) {
                    self.mtrr_fixed[i]
                } else {
                    *m.checked_sub(IA32_MTRR_PHYSBASE0).and_then(|i| self.mtrr_var.get(i as usize)).ok_or(MsrFault)?
                }
            }
        })
    }

    /// WRMSR; `host_tsc` is the host's TSC now.
    pub fn write(&mut self, msr: u32, value: u64, host_tsc: u64) -> Result<Option<MsrEffect>, MsrFault> {
        match msr {
            IA32_TSC => {
                let old = host_tsc.wrapping_add(self.tsc_offset);
                self.tsc_adjust = self.tsc_adjust.wrapping_add(value.wrapping_sub(old));
                self.tsc_offset = value.wrapping_sub(host_tsc);
                return Ok(Some(MsrEffect::SetTscOffset(self.tsc_offset)));
            }
            IA32_TSC_ADJUST => {
                self.tsc_offset = self.tsc_offset.wrapping_add(value.wrapping_sub(self.tsc_adjust));
                self.tsc_adjust = value;
                return Ok(Some(MsrEffect::SetTscOffset(self.tsc_offset)));
            }
            // No vPMU: the event selectors and counters take any value and
            // read back zero (counters that never count).
            AMD_K7_PERF_FIRST..=AMD_K7_PERF_LAST => {}
            // Microcode update trigger and machine-check status: accepted, no effect.
            IA32_BIOS_SIGN_ID | IA32_MCG_STATUS if msr == IA32_BIOS_SIGN_ID || value == 0 => {}
            IA32_PAT if valid_pat(value) => {
                self.pat = value;
                return Ok(Some(MsrEffect::SetPat(value)));
            }
            IA32_MTRR_DEF_TYPE if value & !0xcff == 0 && valid_mtrr_type(value & 0xff) => self.mtrr_def_type = value,
            IA32_MISC_ENABLE => self.misc_enable = value,
            AMD_HWCR => {}
            // No memory encryption, no fixed-range MTRR extensions to enable:
            // accepted, reads 0.
            AMD_SYSCFG | AMD_INT_PENDING_MSG => {}
            m if FIXED_MTRRS.contains(&m) => {
                if !(0..8).all(|i| valid_mtrr_type((value >> (8 * i)) & 0xff)) {
                    return Err(MsrFault);
                }
                let i = FIXED_MTRRS.iter().position(|&f| f == m).ok_or(MsrFault)?;
                self.mtrr_fixed[i] = value;
            }
            m if (IA32_MTRR_PHYSBASE0..IA32_MTRR_PHYSBASE0 + 2 * VARIABLE_MTRRS as u32).contains(&m) => {
                let i = (m - IA32_MTRR_PHYSBASE0) as usize;
                // PHYSBASE: type in 7:0; PHYSMASK: valid bit 11; reserved bits
                // 8–10 in both; at most 52 address bits.
                let base = i.is_multiple_of(2);
                if value >> 52 != 0 || value & 0x700 != 0 || (base && !valid_mtrr_type(value & 0xff)) || (!base && value & 0xff != 0) {
                    return Err(MsrFault);
                }
                self.mtrr_var[i] = value;
            }
            // Read-only (MTRRCAP, MCG_CAP, PLATFORM_ID, locked FEATURE_CONTROL),
            // bad values, or not ours.
            _ => return Err(MsrFault),
        }
        Ok(None)
    }

    pub fn tsc_offset(&self) -> u64 {
        self.tsc_offset
    }

    pub fn pat(&self) -> u64 {
        self.pat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_write_sets_an_offset() {
        let mut m = VirtualMsrs::default();
        assert_eq!(m.read(IA32_TSC, 1000), Ok(1000));
        assert_eq!(m.write(IA32_TSC, 5000, 1000), Ok(Some(MsrEffect::SetTscOffset(4000))));
        assert_eq!(m.read(IA32_TSC, 1500), Ok(5500));
        // Backwards works too (wrapping offset).
        m.write(IA32_TSC, 0, 1500).unwrap();
        assert_eq!(m.read(IA32_TSC, 1600), Ok(100));
    }

    #[test]
    fn tsc_adjust_is_part_of_the_offset() {
        let mut m = VirtualMsrs::default();
        assert_eq!(m.read(IA32_TSC_ADJUST, 0), Ok(0));
        // Adding 1000 to TSC_ADJUST moves the TSC forward by 1000.
        assert_eq!(m.write(IA32_TSC_ADJUST, 1000, 50), Ok(Some(MsrEffect::SetTscOffset(1000))));
        assert_eq!(m.read(IA32_TSC, 100), Ok(1100));
        // A write to IA32_TSC adds the same step to TSC_ADJUST.
        m.write(IA32_TSC, 5100, 100).unwrap();
        assert_eq!(m.read(IA32_TSC_ADJUST, 100), Ok(5000));
        assert_eq!(m.read(IA32_TSC, 200), Ok(5200));
        // Back to 0: the offset drops by what the adjustment was.
        assert_eq!(m.write(IA32_TSC_ADJUST, 0, 200), Ok(Some(MsrEffect::SetTscOffset(0))));
        assert_eq!(m.read(IA32_TSC, 300), Ok(300));
        // Negative adjustments wrap as two's complement.
        m.write(IA32_TSC_ADJUST, (-50i64) as u64, 300).unwrap();
        assert_eq!(m.read(IA32_TSC, 300), Ok(250));
    }

    #[test]
    fn k7_counters_read_zero_and_take_writes() {
        let mut m = VirtualMsrs::default();
        for msr in AMD_K7_PERF_FIRST..=AMD_K7_PERF_LAST {
            assert!(VirtualMsrs::handles(msr));
            assert_eq!(m.write(msr, 0, 0), Ok(None));
            assert_eq!(m.write(msr, 0x53_0076, 0), Ok(None));
            assert_eq!(m.read(msr, 0), Ok(0));
        }
        assert!(!VirtualMsrs::handles(AMD_K7_PERF_LAST + 1));
    }

    #[test]
    fn amd_syscfg_reads_zero() {
        // Linux's MTRR setup reads SYSCFG on every AMD K8+ CPU.
        let mut m = VirtualMsrs::default();
        assert!(VirtualMsrs::handles(AMD_SYSCFG));
        assert_eq!(m.read(AMD_SYSCFG, 0), Ok(0));
        assert_eq!(m.write(AMD_SYSCFG, 1 << 19, 0), Ok(None));
        assert_eq!(m.read(AMD_SYSCFG, 0), Ok(0));
        // Erratum 400's C1E check: not active.
        assert!(VirtualMsrs::handles(AMD_INT_PENDING_MSG));
        assert_eq!(m.read(AMD_INT_PENDING_MSG, 0), Ok(0));
    }

    #[test]
    fn pat_and_mtrrs_validate() {
        let mut m = VirtualMsrs::default();
        assert_eq!(m.read(IA32_PAT, 0), Ok(PAT_DEFAULT));
        assert_eq!(m.write(IA32_PAT, 0x0007_0106_0007_0406, 0), Ok(Some(MsrEffect::SetPat(0x0007_0106_0007_0406))));
        assert_eq!(m.write(IA32_PAT, 0x02, 0), Err(MsrFault), "type 2 is reserved");
        assert_eq!(m.read(IA32_MTRRCAP, 0), Ok(0x508));
        assert_eq!(m.write(IA32_MTRRCAP, 0, 0), Err(MsrFault), "read-only");
        m.write(IA32_MTRR_DEF_TYPE, 0xc06, 0).unwrap();
        assert_eq!(m.read(IA32_MTRR_DEF_TYPE, 0), Ok(0xc06));
        assert_eq!(m.write(IA32_MTRR_DEF_TYPE, 0x1006, 0), Err(MsrFault));
        m.write(0x200, 0x8000_0006, 0).unwrap();
        m.write(0x201, 0xf_8000_0800, 0).unwrap();
        assert_eq!(m.read(0x201, 0), Ok(0xf_8000_0800));
        assert_eq!(m.write(0x200, 0x8000_0002, 0), Err(MsrFault), "reserved type");
        assert_eq!(m.write(0x201, 0x1, 0), Err(MsrFault), "mask has no type");
        m.write(0x250, 0x0606_0606_0606_0606, 0).unwrap();
        assert_eq!(m.read(0x250, 0), Ok(0x0606_0606_0606_0606));
        assert!(!VirtualMsrs::handles(0x200 + 2 * VARIABLE_MTRRS as u32));
    }

    #[test]
    fn fixed_answers_and_faults() {
        let mut m = VirtualMsrs::default();
        assert_eq!(m.read(IA32_FEATURE_CONTROL, 0), Ok(1));
        assert_eq!(m.write(IA32_FEATURE_CONTROL, 5, 0), Err(MsrFault), "locked");
        assert_eq!(m.write(IA32_BIOS_SIGN_ID, 0, 0), Ok(None));
        assert_eq!(m.write(IA32_MCG_STATUS, 0, 0), Ok(None));
        assert_eq!(m.write(IA32_MCG_STATUS, 1, 0), Err(MsrFault));
        assert_eq!(m.read(0x1234, 0), Err(MsrFault));
        assert_eq!(m.write(0x1234, 0, 0), Err(MsrFault));
        assert!(!VirtualMsrs::handles(0x1234));
    }
}
