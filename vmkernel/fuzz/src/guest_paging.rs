//! The guest page-table walker (`vmm::guest_paging::translate`), which
//! the MMIO path uses to follow a guest's own page tables: random control
//! registers (every paging mode), random linear addresses and accesses,
//! tables of random entries biased to present, large and reserved bits,
//! and table reads that sometimes fall outside guest RAM.

use vmkernel::vmm::guest_paging::{Access, PagingState, translate};

use crate::Rng;

pub fn one(rng: &mut Rng) {
    let cr0 = *rng.pick(&[0u64, 1, 0x8000_0001, 0x8001_0001, 0x8000_0000]) | if rng.chance(1, 8) { rng.next_u64() } else { 0 };
    let cr4 = rng.next_u64() & *rng.pick(&[0x30u64, 0x1030, 0x30_0030, 0x20, 0x10, u64::MAX]);
    let efer = *rng.pick(&[0u64, 0x500, 0xd00, 0x100, 0x800]);
    let st = PagingState { cr0, cr3: rng.interesting_u64(), cr4, efer, max_phys_bits: *rng.pick(&[0u8, 36, 39, 48, 52, 60, 255]) };
    let access = Access { write: rng.bool(), user: rng.bool(), fetch: rng.chance(1, 4), ac: rng.bool() };
    let linear = rng.interesting_u64();
    let seed = rng.next_u64();
    let mut reads = 0u32;
    let mut read = |gpa: u64, size: u8| -> Option<u64> {
        assert!(size == 4 || size == 8, "table read of {size} bytes");
        reads += 1;
        assert!(reads <= 8, "more table reads than levels");
        let mut r = crate::Rng::for_execution(seed, gpa);
        if r.chance(1, 16) {
            return None;
        }
        let mut e = r.next_u64() & *r.pick(&[0xfff_ffff_ffffu64, 0x8000_0fff_ffff_ffff, u64::MAX, 0xffff_ffff]);
        if r.chance(3, 4) {
            e |= 1; // present
        }
        if size == 4 {
            e &= 0xffff_ffff;
        }
        Some(e)
    };
    if let Ok(t) = translate(&st, linear, access, &mut read) {
        assert!(matches!(t.page_size, 0x1000 | 0x20_0000 | 0x40_0000 | 0x4000_0000), "page size {:#x}", t.page_size);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_guest_page_walker() {
        crate::run("guest_paging", super::one);
    }
}
