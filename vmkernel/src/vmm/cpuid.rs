//! The virtual CPU's CPUID: a consistent identity built from the host's.
//!
//! A hypervisor is present (leaf 1 ECX bit 31) and leaf 0x40000000 names
//! it "MantleMantle"; the feature bits are the CPU model's
//! ([`super::cpu_model`]: the table of what is offered and backed). The topology is the VM's, not the host's: one
//! package of `vcpus` cores, one thread each, x2APIC ID = vCPU index — in
//! leaf 1, the extended topology leaf 0xB, the cache leaf 4 and AMD's
//! 0x80000008, so a guest counting CPUs any of those ways gets one answer.

use super::cpu_model::{CpuModel, zero_leaf};

/// CPUID for vCPU `vcpu` of `vcpus`; `host(leaf, subleaf)` is the real
/// instruction.
pub fn virtual_cpuid(model: &CpuModel, leaf: u32, sub: u32, vcpu: u32, vcpus: u32, host: impl Fn(u32, u32) -> [u32; 4]) -> [u32; 4] {
    match leaf {
        0x4000_0000 => {
            let v = b"MantleMantle";
            let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
            return [0x4000_0001, w(0), w(4), w(8)];
        }
        0x4000_0001 => return [0; 4],
        // The KVM-compatible leaves of the paravirtual clock.
        l if super::pvclock::cpuid(l).is_some() => return super::pvclock::cpuid(l).unwrap_or_default(),
        l if zero_leaf(l) => return [0; 4],
        _ => {}
    }
    let mut r = host(leaf, sub);
    model.filter(leaf, sub, &mut r);
    let [mut a, mut b, c, mut d] = r;
    // Bits of the x2APIC ID that number cores in the package.
    let core_bits = 32 - (vcpus.max(1) - 1).leading_zeros();
    match leaf {
        1 => {
            // Initial APIC ID = vCPU index; logical processors per package.
            b = (b & 0xffff) | ((vcpus & 0xff) << 16) | ((vcpu & 0xff) << 24);
            if vcpus > 1 {
                d |= 1 << 28; // HTT: the count above is valid
            } else {
                d &= !(1 << 28);
            }
        }
        // Deterministic cache parameters: the host's caches, shared as the
        // VM's topology says (L1/L2 per core, L3 by the package).
        4 => {
            let level = (a >> 5) & 7;
            let sharing = if level >= 3 { vcpus.max(1) - 1 } else { 0 };
            a = (a & 0x3fff) | ((sharing & 0xfff) << 14) | (((vcpus.max(1) - 1) & 0x3f) << 26);
            if a & 0x1f == 0 {
                a = 0; // no more caches: the whole leaf reads zero
            }
        }
        // Extended topology: level 0 SMT (one thread per core), level 1
        // cores (all vCPUs, `core_bits` of the x2APIC ID), then invalid.
        0xb => {
            let (a, b, c) = match sub {
                0 => (0, 1, 1 << 8),
                1 => (core_bits, vcpus, (2 << 8) | 1),
                _ => (0, 0, sub & 0xff),
            };
            return [a, b, c, vcpu];
        }
        // AMD: cores per package - 1 and the APIC ID bits that number them.
        0x8000_0008 => return [a, b, (r[2] & !0xf0ff) | ((vcpus.max(1) - 1) & 0xff) | (core_bits << 12), d],
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with every feature bit set and a 2-level cache list.
    fn host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (4, 0) => [0x1c00_4121, 1, 2, 3], // L1 data, 8 sharing, 8 cores
            (4, 1) => [0x1c00_4163, 1, 2, 3], // L3 unified
            (4, _) => [0, 0, 0, 0],
            (0xb, _) => [4, 16, 0x201, 7],
            _ => [!0; 4],
        }
    }

    fn m() -> CpuModel {
        CpuModel::from_host(host)
    }

    #[test]
    fn no_pmu_leaf() {
        assert_eq!(virtual_cpuid(&m(), 0xa, 0, 0, 1, host), [0; 4]);
        assert_eq!(virtual_cpuid(&m(), 1, 0, 0, 1, host)[2] & (1 << 15), 0, "PDCM");
        assert_eq!(virtual_cpuid(&m(), 0x8000_0001, 0, 0, 1, host)[2] & (1 << 23), 0, "PerfCtrCore");
        assert_ne!(virtual_cpuid(&m(), 7, 0, 0, 1, host)[1] & (1 << 1), 0, "TSC_ADJUST offered");
    }

    #[test]
    fn hypervisor_leaves() {
        let v = virtual_cpuid(&m(), 0x4000_0000, 0, 0, 1, host);
        assert_eq!(v[0], 0x4000_0001);
        let name: Vec<u8> = v[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!(&name, b"MantleMantle");
        assert_eq!(virtual_cpuid(&m(), 0x4000_0001, 0, 0, 1, host), [0; 4]);
        let kvm = virtual_cpuid(&m(), 0x4000_0100, 0, 0, 1, host);
        let name: Vec<u8> = kvm[1..].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert_eq!((kvm[0], &name[..]), (0x4000_0101, &b"KVMKVMKVM\0\0\0"[..]));
        assert_ne!(virtual_cpuid(&m(), 0x4000_0101, 0, 0, 1, host)[0] & (1 << 3), 0, "kvmclock MSRs");
    }

    #[test]
    fn features_hidden_and_offered() {
        let [_, b, c, d] = virtual_cpuid(&m(), 1, 0, 2, 4, host);
        assert_eq!(c & ((1 << 3) | (1 << 5) | (1 << 26) | (1 << 27) | (1 << 28)), 0, "MONITOR, VMX, XSAVE, OSXSAVE, AVX hidden");
        assert_ne!(c & (1 << 21), 0, "x2APIC offered");
        assert_ne!(c & (1 << 31), 0, "hypervisor bit");
        assert_eq!(b >> 24, 2, "initial APIC ID = vCPU index");
        assert_eq!((b >> 16) & 0xff, 4, "logical processors per package");
        assert_ne!(d & (1 << 28), 0, "HTT with more than one vCPU");
        assert_eq!(virtual_cpuid(&m(), 1, 0, 0, 1, host)[3] & (1 << 28), 0, "no HTT with one vCPU");
        let [_, _, c, d] = virtual_cpuid(&m(), 0x8000_0001, 0, 0, 1, host);
        assert_eq!(c & ((1 << 2) | (1 << 22)), 0, "SVM and TOPOEXT hidden");
        assert_eq!(d & (1 << 27), 0, "RDTSCP hidden");
        assert_eq!(virtual_cpuid(&m(), 0xd, 0, 0, 1, host), [0; 4]);
        let no_itsc = |l: u32, s: u32| if l == 0x8000_0007 { [0; 4] } else { host(l, s) };
        let m2 = CpuModel::from_host(no_itsc);
        assert_ne!(virtual_cpuid(&m2, 0x8000_0007, 0, 0, 1, no_itsc)[3] & (1 << 8), 0, "invariant TSC always offered");
        assert_eq!(virtual_cpuid(&m(), 0x8000_001e, 0, 0, 1, host), [0; 4]);
    }

    #[test]
    fn topology_is_the_vms() {
        // Three vCPUs: two x2APIC ID bits number the cores.
        assert_eq!(virtual_cpuid(&m(), 0xb, 0, 1, 3, host), [0, 1, 0x100, 1]);
        assert_eq!(virtual_cpuid(&m(), 0xb, 1, 1, 3, host), [2, 3, 0x201, 1]);
        assert_eq!(virtual_cpuid(&m(), 0xb, 2, 1, 3, host), [0, 0, 2, 1], "level 2 is invalid");
        assert_eq!(virtual_cpuid(&m(), 0xb, 1, 0, 1, host), [0, 1, 0x201, 0], "one vCPU: no core bits");
        assert_eq!(virtual_cpuid(&m(), 0xb, 1, 0, 4, host)[0], 2);
        assert_eq!(virtual_cpuid(&m(), 0xb, 1, 0, 5, host)[0], 3);
        // Leaf 4: L1 not shared, L3 by all vCPUs, cores per package - 1.
        let l1 = virtual_cpuid(&m(), 4, 0, 0, 3, host)[0];
        assert_eq!((l1 & 0x1f, (l1 >> 14) & 0xfff, l1 >> 26), (1, 0, 2));
        let l3 = virtual_cpuid(&m(), 4, 1, 0, 3, host)[0];
        assert_eq!(((l3 >> 5) & 7, (l3 >> 14) & 0xfff, l3 >> 26), (3, 2, 2));
        assert_eq!(virtual_cpuid(&m(), 4, 2, 0, 3, host), [0; 4]);
        // AMD: NC = vCPUs - 1, ApicIdCoreIdSize = core bits.
        let c = virtual_cpuid(&m(), 0x8000_0008, 0, 0, 3, host)[2];
        assert_eq!((c & 0xff, (c >> 12) & 0xf), (2, 2));
    }
}
