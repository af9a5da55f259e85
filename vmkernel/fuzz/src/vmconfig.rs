//! What `vmkcli` and other user worlds hand the VMkernel API: VM
//! definitions (`vmk_api::VmConfig::parse`), the binary records
//! (`GroupParamsRecord` and friends, decoded from user memory) and the
//! resource-group operations they lead to (`sched::Scheduler`).

use vmkernel::sched::{CpuSet, Scheduler};
use vmkernel::vmk_api::{GroupParamsRecord, GroupStatsRecord, VmConfig, VmInfoRecord, VmStatsRecord, errno_for, params_from_record, stats_record};

use crate::{Rng, mutate};

const KEYS: &[&str] = &[
    "name", "memory_mib", "vcpus", "kernel", "cmdline", "shares", "reservation_pct", "limit_pct", "format", "load_address",
    "entry", "entry_mode", "module", "bogus", "",
];
const VALUES: &[&str] = &[
    "vm1", "/usr/lib/mantle/guests/hello.bin", "0", "4", "64", "4096", "65535", "4294967295", "4294967296", "-1", "0x1000",
    "0X100000", "0xffffffff", "0x100000000", "real", "protected", "flat", "elf64", "multiboot", "\"quoted\"", "/m a b c",
    "rel/path", "a b", "", "ü", "0x", "1e3",
];

fn config_text(rng: &mut Rng) -> String {
    let mut t = String::new();
    if rng.chance(3, 4) {
        t.push_str("name = vm\nkernel = /k\n");
    }
    for _ in 0..rng.below(20) {
        match rng.below(10) {
            0 => t.push_str("# comment\n"),
            1 => t.push('\n'),
            2 => {
                let n = rng.below(40) as usize;
                t.push_str(&String::from_utf8_lossy(&rng.bytes(n)));
                t.push('\n');
            }
            _ => {
                let k = *rng.pick(KEYS);
                let v = if rng.chance(1, 4) { rng.interesting_u64().to_string() } else { rng.pick(VALUES).to_string() };
                let sep = *rng.pick(&[" = ", "=", " =", "= ", "==", " "]);
                t.push_str(&format!("{k}{sep}{v}\n"));
            }
        }
    }
    if rng.chance(1, 3) {
        let mut b = t.into_bytes();
        let max = b.len() + 64;
        mutate(rng, &mut b, max);
        t = String::from_utf8_lossy(&b).into_owned();
    }
    t
}

fn record<const N: usize>(rng: &mut Rng) -> [u8; N] {
    let mut b = [0u8; N];
    for c in b.chunks_mut(4) {
        let v = (rng.interesting_u64() as u32).to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    b
}

pub fn one(rng: &mut Rng) {
    let text = config_text(rng);
    if let Ok(c) = VmConfig::parse(&text) {
        assert!(!c.name.is_empty() && c.kernel.starts_with('/'));
        for (p, a) in &c.modules {
            assert!(VmConfig::module_string(p, a).starts_with(p.as_str()));
        }
        // The writer's text reads back to the same configuration (hostd
        // stores it, the kernel reads it).
        assert_eq!(VmConfig::parse_versioned(&c.to_text()).as_ref(), Ok(&c), "{text:?}");
    }
    // Records decoded from user memory.
    let g = GroupParamsRecord::decode(&record::<{ GroupParamsRecord::SIZE }>(rng));
    let _ = GroupStatsRecord::decode(&record::<{ GroupStatsRecord::SIZE }>(rng)).map(|s| s.name_str().len());
    let _ = VmStatsRecord::decode(&record::<{ VmStatsRecord::SIZE }>(rng));
    let _ = VmInfoRecord::decode(&record::<{ VmInfoRecord::SIZE }>(rng)).name_str().len();

    // Resource-group operations with such parameters.
    let cpus = rng.range(1, 8) as u32;
    let mut s = Scheduler::new(cpus);
    let mut groups = vec![0u32];
    let mut now = 0u64;
    let first = g.map(params_from_record);
    for step in 0..rng.below(60) {
        let params = match (step, first) {
            (0, Some(p)) => p,
            _ => GroupParamsRecord::decode(&record::<{ GroupParamsRecord::SIZE }>(rng)).map(params_from_record).unwrap_or_default(),
        };
        let grp = if rng.chance(7, 8) { *rng.pick(&groups) } else { rng.u32() };
        let world = rng.below(16);
        let cpu = if rng.chance(7, 8) { rng.below(cpus as u64) as u32 } else { rng.u32() };
        let r = match rng.below(12) {
            0 | 1 => s.create_group(grp, &format!("g{step}"), params).map(|id| groups.push(id)),
            2 => s.set_params(grp, params),
            3 => s.destroy_group(grp),
            4 | 5 => s.add_world(world, grp, cpu, params.shares),
            6 => s.remove_world(world),
            7 => s.move_world(world, grp),
            8 => s.set_runnable(world, rng.bool()),
            9 => s.set_affinity(world, rng.bool().then_some(cpu)),
            10 => {
                let mut set = CpuSet::first(rng.below(300) as u32);
                set.remove(cpu);
                s.set_allowed_cpus(world, rng.bool().then_some(set))
            }
            _ => {
                now += rng.below(20_000_000);
                if let Some(p) = s.pick_next(cpu, now) {
                    let _ = p;
                }
                let _ = s.steal_for(cpu);
                s.charge(world, rng.below(20_000_000), now)
            }
        };
        if let Err(e) = r {
            assert!(errno_for(&e) < 0, "error {e} has no errno");
        }
        let _ = s.group_stats(grp).map(|st| stats_record(&st).encode());
        let _ = s.capacity_pct();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_vm_config_and_groups() {
        crate::run("vmk_api", super::one);
    }

    /// Found by the fuzzer: reservations summed with wrapping arithmetic
    /// (in the release kernel) let a huge reservation through admission.
    #[test]
    fn huge_reservation_does_not_wrap_past_admission() {
        use vmkernel::sched::{GroupParams, Scheduler};
        let mut s = Scheduler::new(1);
        let p = |reservation_pct| GroupParams { reservation_pct, ..GroupParams::default() };
        s.create_group(0, "a", p(50)).unwrap();
        assert!(s.create_group(0, "b", p(u32::MAX - 20)).is_err());
    }
}
