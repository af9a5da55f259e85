//! A user world's address-space map (`vm_regions::VmMap`), driven as the
//! system calls drive it: mmap (every flag combination, hint, length and
//! offset), munmap, mprotect, brk and page-fault lookups with hostile
//! numbers. After every call the areas must stay sorted, page aligned,
//! disjoint and inside user space.

use vmkernel::elf::USER_END;
use vmkernel::vm_regions::{Access, MmapFile, VmMap};

use crate::Rng;

const PAGE: u64 = 4096;

fn addr(rng: &mut Rng, known: &[u64]) -> u64 {
    match rng.below(5) {
        0 if !known.is_empty() => rng.pick(known).wrapping_add(rng.below(8) * PAGE),
        1 => rng.below(1 << 20) * PAGE,
        2 => USER_END - rng.below(64) * PAGE,
        _ => rng.interesting_u64(),
    }
}

fn len(rng: &mut Rng) -> u64 {
    if rng.chance(3, 4) { rng.range(1, 64) * PAGE - rng.below(2) } else { rng.interesting_u64() }
}

fn check(m: &VmMap) {
    let mut prev = 0;
    for v in m.areas() {
        assert!(v.start < v.end, "empty area {v:?}");
        assert!(v.start % PAGE == 0 && v.end % PAGE == 0, "unaligned area {v:?}");
        assert!(v.start >= prev, "overlapping areas");
        assert!(v.end <= USER_END, "area beyond user space {v:?}");
        prev = v.end;
    }
    // Like Linux, the checks run before a change: mmap refuses only above
    // the limit and an mprotect in the middle of an area splits it twice,
    // so the count may end up to two past it, never further.
    assert!(m.len() <= m.max_map_count + 2, "{} areas, limit {}", m.len(), m.max_map_count);
}

pub fn one(rng: &mut Rng) {
    let mut m = VmMap::default();
    if rng.bool() {
        m.max_map_count = rng.range(1, 64) as usize;
    }
    m.set_initial_brk(rng.range(0x40, 0x4000) * PAGE);
    let mut known = vec![];
    for _ in 0..rng.below(80) {
        match rng.below(7) {
            0..=2 => {
                let prot = if rng.chance(7, 8) { rng.below(8) as u32 } else { rng.u32() };
                let flags = if rng.chance(3, 4) {
                    // MAP_SHARED/PRIVATE, FIXED, ANONYMOUS, GROWSDOWN, FIXED_NOREPLACE, ...
                    (rng.below(4) as u32) | (rng.next_u64() as u32 & (0x10 | 0x20 | 0x100 | 0x10_0000 | 0x4000 | 0x8000))
                } else {
                    rng.u32()
                };
                let file = rng.chance(1, 3).then(|| MmapFile { id: rng.below(4), readable: rng.bool(), writable: rng.bool() });
                let offset = if rng.bool() { rng.below(16) * PAGE } else { rng.interesting_u64() };
                let (a, l) = (addr(rng, &known), len(rng));
                if let Ok(mapped) = m.mmap(a, l, prot, flags, file, offset) {
                    assert!(mapped.addr % PAGE == 0 && mapped.addr < USER_END, "mmap returned {:#x}", mapped.addr);
                    known.push(mapped.addr);
                }
            }
            3 => {
                let (a, l) = (addr(rng, &known), len(rng));
                let _ = m.munmap(a, l);
            }
            4 => {
                let (a, l) = (addr(rng, &known), len(rng));
                let prot = if rng.chance(7, 8) { rng.below(8) as u32 } else { rng.u32() };
                let _ = m.mprotect(a, l, prot);
            }
            5 => {
                let b = if rng.bool() { m.brk_value().wrapping_add(rng.below(64) * PAGE).wrapping_sub(rng.below(32) * PAGE) } else { rng.interesting_u64() };
                let (now, _) = m.brk(b);
                assert!(now == m.brk_value());
            }
            _ => {
                let a = addr(rng, &known);
                let acc = *rng.pick(&[Access::Read, Access::Write, Access::Exec]);
                if let Ok(v) = m.fault_lookup(a, acc) {
                    assert!(v.contains(a), "fault at {a:#x} resolved to {v:?}");
                }
            }
        }
        check(&m);
    }
    let _ = m.clear();
    assert!(m.is_empty());
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_address_space_map() {
        crate::run("vm_regions", super::one);
    }
}
