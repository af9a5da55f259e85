//! The VM's device model (`vmm::platform` and `vmm::devices`) fed random
//! exits: port I/O of every size (including sizes the hardware cannot
//! produce), MMIO on the LAPIC and IOAPIC pages and anywhere else, MSRs of
//! the LAPIC and the virtual MSR file, MOV CR8, debug registers, time
//! advancing, interrupt acknowledgement and console input, on 1–4 vCPUs,
//! in random order.

use vmkernel::vmm::debug_regs::DebugRegs;
use vmkernel::vmm::decode::CpuMode;
use vmkernel::vmm::devices::ioapic::IOAPIC_BASE;
use vmkernel::vmm::devices::lapic::APIC_BASE_DEFAULT;
use vmkernel::vmm::msrs::VirtualMsrs;
use vmkernel::vmm::platform::{Platform, PlatformConfig};

use crate::Rng;

/// Ports where devices live, and their neighbours.
const PORTS: &[u16] = &[
    0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x70, 0x71, 0x3f8, 0x3f9, 0x3fa, 0x3fb, 0x3fc, 0x3fd,
    0x3fe, 0x3ff, 0x60, 0x64, 0x80, 0x92, 0xf4, 0x510, 0x511, 0x512, 0xcf8, 0xcf9, 0xcfa, 0xcfb, 0xcfc, 0xcfd, 0xcfe, 0xcff,
    0xffff, 0,
];

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(7, 8) { rng.pick(PORTS).wrapping_add(rng.below(2) as u16) } else { rng.u32() as u16 }
}

fn io_size(rng: &mut Rng) -> u8 {
    if rng.chance(15, 16) { *rng.pick(&[1, 2, 4]) } else { rng.u8() }
}

fn mmio_size(rng: &mut Rng) -> u8 {
    if rng.chance(15, 16) { *rng.pick(&[1, 2, 4, 8]) } else { rng.u8() }
}

fn mmio_addr(rng: &mut Rng, lapic_bases: &[u64]) -> u64 {
    let off = if rng.bool() { (rng.below(0x40) << 4) | (rng.below(16) * rng.below(2)) } else { rng.below(0x1008) };
    match rng.below(5) {
        0 | 1 => APIC_BASE_DEFAULT + off,
        2 => IOAPIC_BASE + if rng.bool() { *rng.pick(&[0, 0x10, 0x40, 0x14, 0x3]) } else { off },
        3 => rng.pick(lapic_bases).wrapping_add(off),
        _ => rng.interesting_u64(),
    }
}

fn msr(rng: &mut Rng) -> u32 {
    match rng.below(6) {
        0 => 0x1b,
        1 => 0x6e0,
        2 => 0x800 + rng.below(0x100) as u32,
        3 => *rng.pick(&[0x10, 0x17, 0x3a, 0x8b, 0xfe, 0x179, 0x17a, 0x1a0, 0x277, 0x2ff, 0xc001_0015, 0x250, 0x258, 0x268]),
        4 => 0x200 + rng.below(0x20) as u32,
        _ => rng.u32(),
    }
}

fn msr_value(rng: &mut Rng) -> u64 {
    if rng.bool() {
        // APIC base forms: enabled, x2APIC, relocated, reserved bits.
        let base = if rng.bool() { APIC_BASE_DEFAULT } else { rng.next_u64() & 0xf_ffff_f000 };
        base | *rng.pick(&[0, 1 << 8, 1 << 10, 1 << 11, 3 << 10, 1 << 9]) | if rng.chance(1, 8) { rng.next_u64() } else { 0 }
    } else {
        rng.interesting_u64()
    }
}

pub fn one(rng: &mut Rng) {
    let vcpus = rng.range(1, 4) as usize;
    let cfg = PlatformConfig {
        vcpus,
        ram_below_4g: rng.range(1, 3072) << 20,
        ram_above_4g: if rng.bool() { rng.below(8192) << 20 } else { 0 },
        // The host supplies these: plausible values only.
        wall_clock_unix_secs: rng.below(1 << 34) as i64,
        tsc_khz: *rng.pick(&[100_000, 1_000_000, 2_100_000, 3_000_000, 5_000_000]),
        tsc_base: rng.interesting_u64(),
        console_ring: rng.range(1, 4096) as usize,
        phys_addr_bits: *rng.pick(&[36, 39, 40, 46, 48, 52]),
        x2apic: rng.bool(),
    };
    let mut p = Platform::new(&cfg);
    let mut msrs: Vec<VirtualMsrs> = (0..vcpus).map(|_| VirtualMsrs::default()).collect();
    let mut drs: Vec<DebugRegs> = (0..vcpus).map(|_| DebugRegs::default()).collect();
    let mut now = 0u64;
    let mut lapic_bases = vec![APIC_BASE_DEFAULT];
    let steps = rng.range(1, 400);
    for _ in 0..steps {
        // Mostly a vCPU that exists; sometimes one that does not.
        let vcpu = if rng.chance(31, 32) { rng.below(vcpus as u64) as usize } else { rng.below(64) as usize };
        match rng.below(16) {
            0..=3 => {
                let v = p.io_in(port(rng), io_size(rng));
                let _ = v;
            }
            4..=7 => p.io_out(port(rng), io_size(rng), rng.interesting_u64() as u32),
            8 => {
                let a = mmio_addr(rng, &lapic_bases);
                let _ = p.mmio_claims(vcpu, a);
                let _ = p.mmio_read(vcpu, a, mmio_size(rng));
            }
            9 => {
                let a = mmio_addr(rng, &lapic_bases);
                p.mmio_write(vcpu, a, mmio_size(rng), rng.interesting_u64());
            }
            10 => {
                let m = msr(rng);
                if Platform::handles_msr(m) {
                    let _ = p.msr_read(vcpu, m);
                    let value = msr_value(rng);
                    if p.msr_write(vcpu, m, value).is_ok() && m == 0x1b {
                        lapic_bases.push(value & 0xf_ffff_f000);
                    }
                } else if let Some(f) = msrs.get_mut(vcpu) {
                    let tsc = rng.next_u64();
                    let _ = f.read(m, tsc);
                    let _ = f.write(m, msr_value(rng), tsc);
                    let _ = (f.tsc_offset(), f.pat());
                }
            }
            11 => {
                let _ = p.cr8_read(vcpu);
                p.cr8_write(vcpu, rng.interesting_u64());
            }
            12 => {
                // Guest nanoseconds: mostly short steps, sometimes an hour
                // (a VM descheduled for long), never centuries.
                now += if rng.chance(1, 16) { rng.below(3_600_000_000_000) } else { rng.below(20_000_000) };
                p.advance(now);
                let _ = p.next_deadline();
            }
            13 => {
                if let Some(v) = p.pending_interrupt(vcpu) {
                    let _ = p.ack_interrupt(vcpu, v);
                }
                let _ = p.take_nmi(vcpu);
                let _ = p.events();
            }
            14 => {
                let n = rng.below(64) as usize;
                let _ = p.console_input(&rng.bytes(n));
                let _ = p.console_output();
            }
            _ => {
                if let Some(d) = drs.get_mut(vcpu) {
                    let dr = rng.below(10) as u8;
                    let cr4_de = rng.bool();
                    let _ = d.read(dr, cr4_de);
                    let mode = *rng.pick(&[CpuMode::Bits16, CpuMode::Bits32, CpuMode::Bits64]);
                    let _ = d.write(dr, rng.interesting_u64(), cr4_de, mode);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_device_model() {
        crate::run("devices", super::one);
    }
}
