//! Placement, splitting, merging and every error path, with the values
//! Linux 6.1 returns.

use super::*;
use alloc::vec;

const RW: u32 = PROT_READ | PROT_WRITE;
const ANON: u32 = MAP_PRIVATE | MAP_ANONYMOUS;
const M: u64 = 1 << 20;

fn anon(m: &mut VmMap, addr: u64, len: u64, prot: u32, flags: u32) -> Result<u64, i32> {
    m.mmap(addr, len, prot, flags, None, 0).map(|r| r.addr)
}

fn file(id: u64, readable: bool, writable: bool) -> Option<MmapFile> {
    Some(MmapFile {
        id,
        readable,
        writable,
    })
}

fn spans(m: &VmMap) -> Vec<(u64, u64, u32)> {
    m.areas().map(|v| (v.start, v.end, v.prot)).collect()
}

#[test]
fn top_down_placement_and_merging() {
    let mut m = VmMap::default();
    let a = anon(&mut m, 0, 10, RW, ANON).unwrap();
    assert_eq!(
        a,
        DEFAULT_MMAP_BASE - PAGE_SIZE,
        "rounded to a page, just below the base"
    );
    let b = anon(&mut m, 0, 2 * PAGE_SIZE, RW, ANON).unwrap();
    assert_eq!(b, a - 2 * PAGE_SIZE);
    assert_eq!(m.len(), 1, "adjacent private anonymous areas merge");
    let c = anon(&mut m, 0, PAGE_SIZE, PROT_READ, ANON).unwrap();
    assert_eq!(c, b - PAGE_SIZE);
    assert_eq!(m.len(), 2, "different protections stay apart");
    // Shared anonymous mappings are separate objects: no merging.
    let mut s = VmMap::default();
    anon(&mut s, 0, PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS).unwrap();
    anon(&mut s, 0, PAGE_SIZE, RW, MAP_SHARED | MAP_ANONYMOUS).unwrap();
    assert_eq!(s.len(), 2);
    // A freed gap is reused (highest fit first).
    m.munmap(a, PAGE_SIZE).unwrap();
    assert_eq!(anon(&mut m, 0, PAGE_SIZE, PROT_EXEC, ANON).unwrap(), a);
}

#[test]
fn hints() {
    let mut m = VmMap::default();
    assert_eq!(
        anon(&mut m, 0x1000_0123, 100, RW, ANON),
        Ok(0x1000_0000),
        "rounded down"
    );
    // Taken: the hint is ignored and the search used.
    assert_eq!(
        anon(&mut m, 0x1000_0000, 100, RW, ANON),
        Ok(DEFAULT_MMAP_BASE - PAGE_SIZE)
    );
    // Below mmap_min_addr: raised to it.
    assert_eq!(anon(&mut m, 0x2000, 100, RW, ANON), Ok(MMAP_MIN_ADDR));
    // Would not fit below the top of user space: searched instead.
    let a = anon(&mut m, TASK_SIZE - PAGE_SIZE, 2 * PAGE_SIZE, RW, ANON).unwrap();
    assert!(a + 2 * PAGE_SIZE <= DEFAULT_MMAP_BASE);
    // MAP_32BIT: between 1 and 2 GiB.
    let a = anon(&mut m, 0, PAGE_SIZE, RW, ANON | MAP_32BIT).unwrap();
    assert_eq!(a, 0x4000_0000);
}

#[test]
fn map_fixed_replaces_and_splits() {
    let mut m = VmMap::default();
    let base = 0x20_0000_0000;
    anon(&mut m, base, 8 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    let r = m
        .mmap(
            base + 2 * PAGE_SIZE,
            3 * PAGE_SIZE,
            PROT_READ,
            ANON | MAP_FIXED,
            None,
            0,
        )
        .unwrap();
    assert_eq!(r.addr, base + 2 * PAGE_SIZE);
    assert_eq!(r.replaced.len(), 1);
    assert_eq!(
        (r.replaced[0].start, r.replaced[0].end),
        (base + 2 * PAGE_SIZE, base + 5 * PAGE_SIZE)
    );
    assert_eq!(
        spans(&m),
        vec![
            (base, base + 2 * PAGE_SIZE, RW),
            (base + 2 * PAGE_SIZE, base + 5 * PAGE_SIZE, PROT_READ),
            (base + 5 * PAGE_SIZE, base + 8 * PAGE_SIZE, RW),
        ]
    );
    // Mapping RW over the hole in the middle merges all three back.
    let r = m
        .mmap(
            base + 2 * PAGE_SIZE,
            3 * PAGE_SIZE,
            RW,
            ANON | MAP_FIXED,
            None,
            0,
        )
        .unwrap();
    assert_eq!(r.replaced[0].prot, PROT_READ);
    assert_eq!(spans(&m), vec![(base, base + 8 * PAGE_SIZE, RW)]);
    // MAP_FIXED_NOREPLACE: EEXIST on any overlap, fine on free space.
    assert_eq!(
        anon(
            &mut m,
            base + 7 * PAGE_SIZE,
            2 * PAGE_SIZE,
            RW,
            ANON | MAP_FIXED_NOREPLACE
        ),
        Err(EEXIST)
    );
    assert_eq!(
        anon(
            &mut m,
            base + 9 * PAGE_SIZE,
            PAGE_SIZE,
            RW,
            ANON | MAP_FIXED_NOREPLACE
        ),
        Ok(base + 9 * PAGE_SIZE)
    );
    // A fixed mapping over several areas replaces each piece.
    let r = m
        .mmap(
            base + 7 * PAGE_SIZE,
            3 * PAGE_SIZE,
            PROT_NONE,
            ANON | MAP_FIXED,
            None,
            0,
        )
        .unwrap();
    assert_eq!(r.replaced.len(), 2);
    assert_eq!(
        r.replaced.iter().map(|v| v.len()).sum::<u64>(),
        2 * PAGE_SIZE
    );
}

#[test]
fn mmap_errors_in_linux_order() {
    let mut m = VmMap::default();
    assert_eq!(anon(&mut m, 0, 0, RW, ANON), Err(EINVAL), "len 0");
    assert_eq!(
        m.mmap(0, 4096, RW, MAP_PRIVATE, None, 0).map(|r| r.addr),
        Err(EBADF)
    );
    assert_eq!(
        m.mmap(0, 4096, RW, MAP_PRIVATE, None, 12).map(|r| r.addr),
        Err(EINVAL),
        "offset first"
    );
    assert_eq!(m.mmap(0, 0, RW, ANON, None, 1).map(|r| r.addr), Err(EINVAL));
    assert_eq!(
        anon(&mut m, 0, u64::MAX - 100, RW, ANON),
        Err(ENOMEM),
        "PAGE_ALIGN wraps"
    );
    assert_eq!(
        anon(&mut m, 0, TASK_SIZE + PAGE_SIZE, RW, ANON),
        Err(ENOMEM)
    );
    let f = file(1, true, true);
    assert_eq!(
        m.mmap(0, 2 * PAGE_SIZE, RW, MAP_PRIVATE, f, 0xffff_ffff_ffff_f000)
            .map(|r| r.addr),
        Err(EOVERFLOW)
    );
    let last = (i64::MAX as u64 + 1) - 3 * PAGE_SIZE; // offset + len stays below 2^63
    assert!(
        m.mmap(0, 2 * PAGE_SIZE, PROT_READ, MAP_PRIVATE, f, last)
            .is_ok(),
        "ends just below the largest offset"
    );
    assert_eq!(
        m.mmap(
            0,
            2 * PAGE_SIZE,
            PROT_READ,
            MAP_PRIVATE,
            f,
            last + PAGE_SIZE
        )
        .map(|r| r.addr),
        Err(EOVERFLOW)
    );
    assert_eq!(
        anon(&mut m, 0x10_0001, 4096, RW, ANON | MAP_FIXED),
        Err(EINVAL)
    );
    assert_eq!(
        anon(&mut m, TASK_SIZE - 4096, 8192, RW, ANON | MAP_FIXED),
        Err(ENOMEM)
    );
    assert_eq!(
        anon(&mut m, 0, 4096, RW, ANON | MAP_FIXED),
        Err(EPERM),
        "NULL page"
    );
    assert_eq!(
        anon(&mut m, 0x1000, 4096, RW, ANON | MAP_FIXED_NOREPLACE),
        Err(EPERM)
    );
    assert_eq!(
        anon(&mut m, 0, 4096, RW, MAP_ANONYMOUS),
        Err(EINVAL),
        "no MAP_TYPE"
    );
    assert_eq!(
        anon(&mut m, 0, 4096, RW, MAP_ANONYMOUS | MAP_SHARED_VALIDATE),
        Err(EINVAL)
    );
    assert_eq!(
        anon(
            &mut m,
            0,
            4096,
            RW,
            MAP_ANONYMOUS | MAP_SHARED | MAP_GROWSDOWN
        ),
        Err(EINVAL)
    );
    // Files: access checks against how the descriptor was opened.
    let ro = file(2, true, false);
    assert_eq!(
        m.mmap(0, 4096, RW, MAP_SHARED, ro, 0).map(|r| r.addr).err(),
        Some(EACCES)
    );
    assert!(
        m.mmap(0, 4096, RW, MAP_PRIVATE, ro, 0).is_ok(),
        "private copy is writable"
    );
    assert!(m.mmap(0, 4096, PROT_READ, MAP_SHARED, ro, 0).is_ok());
    let wo = file(3, false, true);
    assert_eq!(
        m.mmap(0, 4096, PROT_READ, MAP_PRIVATE, wo, 0)
            .map(|r| r.addr)
            .err(),
        Some(EACCES)
    );
    assert_eq!(
        m.mmap(0, 4096, PROT_READ, MAP_PRIVATE | MAP_GROWSDOWN, f, 0)
            .map(|r| r.addr)
            .err(),
        Some(EINVAL)
    );
    assert_eq!(
        m.mmap(0, 4096, PROT_READ, 0, f, 0).map(|r| r.addr).err(),
        Some(EINVAL)
    );
    // Unknown flags: ignored by MAP_SHARED, refused by MAP_SHARED_VALIDATE.
    assert!(
        m.mmap(0, 4096, PROT_READ, MAP_SHARED | MAP_SYNC, f, 0)
            .is_ok()
    );
    assert_eq!(
        m.mmap(0, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_SYNC, f, 0)
            .map(|r| r.addr)
            .err(),
        Some(EOPNOTSUPP)
    );
    assert!(
        m.mmap(0, 4096, PROT_READ, MAP_SHARED_VALIDATE | MAP_POPULATE, f, 0)
            .is_ok()
    );
}

#[test]
fn map_count_and_exhaustion() {
    let mut m = VmMap {
        max_map_count: 3,
        ..VmMap::default()
    };
    for i in 0..4u64 {
        // Alternating protections keep them apart.
        anon(
            &mut m,
            0,
            PAGE_SIZE,
            if i % 2 == 0 { RW } else { PROT_READ },
            ANON,
        )
        .unwrap();
    }
    assert_eq!(m.len(), 4);
    assert_eq!(
        anon(&mut m, 0, PAGE_SIZE, RW, ANON),
        Err(ENOMEM),
        "over vm.max_map_count"
    );
    // Nothing big enough: ENOMEM.
    let mut m = VmMap::new(0x100_0000);
    assert_eq!(anon(&mut m, 0, 0x7000_0000_0000, RW, ANON), Err(ENOMEM));
    // The bottom-up fallback finds room above the base when below is full.
    let mut m = VmMap::new(0x100_0000);
    anon(
        &mut m,
        MMAP_MIN_ADDR,
        0x100_0000 - MMAP_MIN_ADDR,
        RW,
        ANON | MAP_FIXED,
    )
    .unwrap();
    assert_eq!(
        anon(&mut m, 0, PAGE_SIZE, PROT_READ, ANON),
        Ok(TASK_UNMAPPED_BASE)
    );
}

#[test]
fn file_offsets_follow_splits_and_merges() {
    let mut m = VmMap::default();
    let f = file(7, true, true);
    let a = m
        .mmap(0, 4 * PAGE_SIZE, PROT_READ, MAP_PRIVATE, f, 0x3000)
        .unwrap()
        .addr;
    m.munmap(a + PAGE_SIZE, PAGE_SIZE).unwrap();
    let pieces: Vec<Backing> = m.areas().map(|v| v.backing).collect();
    assert_eq!(
        pieces,
        vec![
            Backing::File {
                id: 7,
                offset: 0x3000
            },
            Backing::File {
                id: 7,
                offset: 0x5000
            }
        ]
    );
    // Remapping the hole with the matching offset merges back to one area.
    m.mmap(
        a + PAGE_SIZE,
        PAGE_SIZE,
        PROT_READ,
        MAP_PRIVATE | MAP_FIXED,
        f,
        0x4000,
    )
    .unwrap();
    assert_eq!(m.len(), 1);
    assert_eq!(
        m.find(a).unwrap().backing,
        Backing::File {
            id: 7,
            offset: 0x3000
        }
    );
    // A non-contiguous offset or another file does not merge.
    m.mmap(
        a + 4 * PAGE_SIZE,
        PAGE_SIZE,
        PROT_READ,
        MAP_PRIVATE | MAP_FIXED,
        f,
        0x9000,
    )
    .unwrap();
    m.mmap(
        a - PAGE_SIZE,
        PAGE_SIZE,
        PROT_READ,
        MAP_PRIVATE | MAP_FIXED,
        file(8, true, false),
        0x2000,
    )
    .unwrap();
    assert_eq!(m.len(), 3);
    let v = m.find(a).unwrap();
    assert!(v.is_cow(), "private file mapping is copy-on-write");
    let s = m
        .mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, file(9, true, false), 0)
        .unwrap()
        .addr;
    let sv = *m.find(s).unwrap();
    assert!(!sv.is_cow() && sv.shared);
    assert_eq!(sv.max_prot & PROT_WRITE, 0);
}

#[test]
fn munmap_splits_and_errors() {
    let mut m = VmMap::default();
    let base = 0x30_0000_0000;
    anon(&mut m, base, 6 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    let gone = m.munmap(base + 2 * PAGE_SIZE, 2 * PAGE_SIZE - 5).unwrap(); // length rounded up
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].start, gone[0].end),
        (base + 2 * PAGE_SIZE, base + 4 * PAGE_SIZE)
    );
    assert_eq!(
        spans(&m),
        vec![
            (base, base + 2 * PAGE_SIZE, RW),
            (base + 4 * PAGE_SIZE, base + 6 * PAGE_SIZE, RW)
        ]
    );
    assert!(m.find(base + 2 * PAGE_SIZE).is_none());
    assert!(m.find(base + 2 * PAGE_SIZE - 1).is_some());
    // Unmapping nothing is fine; spanning the hole removes both halves' parts.
    assert_eq!(m.munmap(base + 2 * PAGE_SIZE, PAGE_SIZE), Ok(vec![]));
    let gone = m.munmap(base + PAGE_SIZE, 4 * PAGE_SIZE).unwrap();
    assert_eq!(gone.len(), 2);
    assert_eq!(
        spans(&m),
        vec![
            (base, base + PAGE_SIZE, RW),
            (base + 5 * PAGE_SIZE, base + 6 * PAGE_SIZE, RW)
        ]
    );
    // Errors.
    assert_eq!(m.munmap(base + 1, PAGE_SIZE), Err(EINVAL));
    assert_eq!(m.munmap(base, 0), Err(EINVAL));
    assert_eq!(m.munmap(TASK_SIZE - PAGE_SIZE, 2 * PAGE_SIZE), Err(EINVAL));
    assert_eq!(m.munmap(TASK_SIZE + PAGE_SIZE, PAGE_SIZE), Err(EINVAL));
    assert_eq!(m.munmap(0, u64::MAX), Err(EINVAL));
    // Splitting at the map-count limit.
    let mut m = VmMap::default();
    anon(&mut m, base, 3 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    m.max_map_count = 1;
    assert_eq!(m.munmap(base + PAGE_SIZE, PAGE_SIZE), Err(ENOMEM));
    assert!(
        m.munmap(base, PAGE_SIZE).is_ok(),
        "trimming an end needs no new area"
    );
}

#[test]
fn mprotect_splits_merges_and_errors() {
    let mut m = VmMap::default();
    let base = 0x40_0000_0000;
    anon(&mut m, base, 4 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    let changed = m.mprotect(base + PAGE_SIZE, PAGE_SIZE, PROT_READ).unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].start, changed[0].end, changed[0].prot),
        (base + PAGE_SIZE, base + 2 * PAGE_SIZE, PROT_READ)
    );
    assert_eq!(m.len(), 3);
    assert_eq!(
        m.mprotect(base, 4 * PAGE_SIZE, RW).unwrap().len(),
        1,
        "only the read-only piece changes"
    );
    assert_eq!(m.len(), 1, "merged back");
    // Length is rounded up; len 0 does nothing; PROT_SEM is accepted.
    m.mprotect(base, 1, PROT_READ | PROT_SEM).unwrap();
    assert_eq!(m.find(base).unwrap().end, base + PAGE_SIZE);
    assert_eq!(m.mprotect(base, 0, PROT_NONE), Ok(vec![]));
    assert_eq!(
        m.mprotect(base + 7, 0, PROT_NONE),
        Err(EINVAL),
        "alignment is checked first"
    );
    // Errors.
    assert_eq!(m.mprotect(base + 1, PAGE_SIZE, PROT_READ), Err(EINVAL));
    assert_eq!(m.mprotect(base, PAGE_SIZE, 0x10), Err(EINVAL));
    assert_eq!(
        m.mprotect(base, PAGE_SIZE, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP),
        Err(EINVAL)
    );
    assert_eq!(
        m.mprotect(base, u64::MAX - 10, PROT_READ),
        Err(ENOMEM),
        "wraps"
    );
    assert_eq!(
        m.mprotect(base - PAGE_SIZE, PAGE_SIZE, PROT_READ),
        Err(ENOMEM),
        "unmapped"
    );
    assert_eq!(
        m.mprotect(base - PAGE_SIZE, 2 * PAGE_SIZE, PROT_READ),
        Err(ENOMEM),
        "starts in a hole"
    );
    assert_eq!(m.mprotect(TASK_SIZE, PAGE_SIZE, PROT_READ), Err(ENOMEM));
    // A hole inside the range: ENOMEM and nothing changed.
    m.munmap(base + 2 * PAGE_SIZE, PAGE_SIZE).unwrap();
    let before = spans(&m);
    assert_eq!(m.mprotect(base, 4 * PAGE_SIZE, PROT_NONE), Err(ENOMEM));
    assert_eq!(spans(&m), before);
    // Beyond what the file was opened for: EACCES.
    let s = m
        .mmap(0, PAGE_SIZE, PROT_READ, MAP_SHARED, file(4, true, false), 0)
        .unwrap()
        .addr;
    assert_eq!(m.mprotect(s, PAGE_SIZE, RW), Err(EACCES));
    assert!(m.mprotect(s, PAGE_SIZE, PROT_READ | PROT_EXEC).is_ok());
    // Split at the map-count limit.
    m.max_map_count = m.len();
    assert_eq!(
        m.mprotect(base + 3 * PAGE_SIZE, PAGE_SIZE, PROT_READ).err(),
        None,
        "whole area: no split"
    );
    let mut n = VmMap::default();
    anon(&mut n, base, 3 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    n.max_map_count = 1;
    assert_eq!(
        n.mprotect(base + PAGE_SIZE, PAGE_SIZE, PROT_READ),
        Err(ENOMEM)
    );
}

#[test]
fn mprotect_growsdown_extends_to_the_area_start() {
    let mut m = VmMap::default();
    let top = 0x7fff_0000_0000;
    anon(
        &mut m,
        top - 4 * PAGE_SIZE,
        4 * PAGE_SIZE,
        RW,
        ANON | MAP_FIXED | MAP_GROWSDOWN,
    )
    .unwrap();
    let changed = m
        .mprotect(top - PAGE_SIZE, PAGE_SIZE, RW | PROT_EXEC | PROT_GROWSDOWN)
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (changed[0].start, changed[0].end),
        (top - 4 * PAGE_SIZE, top)
    );
    let other = anon(&mut m, 0x10_0000_0000, PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    assert_eq!(
        m.mprotect(other, PAGE_SIZE, PROT_READ | PROT_GROWSDOWN),
        Err(EINVAL)
    );
    assert_eq!(
        m.mprotect(other, PAGE_SIZE, PROT_READ | PROT_GROWSUP),
        Err(EINVAL)
    );
}

#[test]
fn brk_grows_shrinks_and_refuses() {
    let mut m = VmMap::default();
    let start = 0x4a_c000;
    m.set_initial_brk(start);
    assert_eq!(m.brk(0).0, start, "brk(0) reports the current break");
    assert_eq!(m.brk(start - 1).0, start, "never below the initial break");
    let (b, _) = m.brk(start + 100);
    assert_eq!(b, start + 100, "the break itself is not rounded");
    assert_eq!(spans(&m), vec![(start, start + PAGE_SIZE, RW)]);
    assert_eq!(m.brk(start + 200).0, start + 200, "same page: no new area");
    assert_eq!(m.len(), 1);
    m.brk(start + 3 * PAGE_SIZE);
    assert_eq!(spans(&m), vec![(start, start + 3 * PAGE_SIZE, RW)]);
    assert_eq!(m.brk_value(), start + 3 * PAGE_SIZE);
    // Shrinking drops whole pages past the new break.
    let (b, dropped) = m.brk(start + PAGE_SIZE + 1);
    assert_eq!(b, start + PAGE_SIZE + 1);
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        (dropped[0].start, dropped[0].end),
        (start + 2 * PAGE_SIZE, start + 3 * PAGE_SIZE)
    );
    // A mapping above stops growth one page short of it.
    anon(
        &mut m,
        start + 10 * PAGE_SIZE,
        PAGE_SIZE,
        PROT_READ,
        ANON | MAP_FIXED,
    )
    .unwrap();
    assert_eq!(
        m.brk(start + 10 * PAGE_SIZE).0,
        start + PAGE_SIZE + 1,
        "would touch the mapping"
    );
    assert_eq!(
        m.brk(start + 9 * PAGE_SIZE).0,
        start + 9 * PAGE_SIZE,
        "one free page left"
    );
    assert_eq!(m.brk(u64::MAX).0, start + 9 * PAGE_SIZE);
    assert_eq!(m.brk(TASK_SIZE + PAGE_SIZE).0, start + 9 * PAGE_SIZE);
    // The heap merges with an adjacent anonymous RW area (the .bss).
    let mut m = VmMap::default();
    anon(&mut m, 0x40_0000, 2 * PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    m.set_initial_brk(0x40_2000);
    m.brk(0x40_5000);
    assert_eq!(spans(&m), vec![(0x40_0000, 0x40_5000, RW)]);
}

#[test]
fn fault_lookup_and_stack_growth() {
    let mut m = VmMap::default();
    let top = 0x7fff_ffff_f000;
    let stack = top - 32 * PAGE_SIZE;
    anon(
        &mut m,
        stack,
        32 * PAGE_SIZE,
        RW,
        ANON | MAP_FIXED | MAP_GROWSDOWN,
    )
    .unwrap();
    let text = anon(
        &mut m,
        0x40_0000,
        PAGE_SIZE,
        PROT_READ | PROT_EXEC,
        ANON | MAP_FIXED,
    )
    .unwrap();
    let ro = anon(&mut m, 0x40_1000, PAGE_SIZE, PROT_READ, ANON | MAP_FIXED).unwrap();
    let wo = anon(&mut m, 0x50_0000, PAGE_SIZE, PROT_WRITE, ANON | MAP_FIXED).unwrap();
    let none = anon(&mut m, 0x60_0000, PAGE_SIZE, PROT_NONE, ANON | MAP_FIXED).unwrap();

    assert!(m.fault_lookup(text + 5, Access::Exec).is_ok());
    assert!(m.fault_lookup(text, Access::Read).is_ok());
    assert_eq!(m.fault_lookup(text, Access::Write), Err(Fault::Protection));
    assert_eq!(m.fault_lookup(ro, Access::Write), Err(Fault::Protection));
    assert_eq!(m.fault_lookup(ro, Access::Exec), Err(Fault::Protection));
    assert!(
        m.fault_lookup(wo, Access::Read).is_ok(),
        "x86: writable implies readable"
    );
    assert_eq!(m.fault_lookup(none, Access::Read), Err(Fault::Protection));
    assert_eq!(m.fault_lookup(0, Access::Read), Err(Fault::Unmapped));
    assert_eq!(
        m.fault_lookup(0x70_0000, Access::Read),
        Err(Fault::Unmapped)
    );

    // Just below the stack: it grows to the faulting page.
    let v = m.fault_lookup(stack - 8, Access::Write).unwrap();
    assert_eq!(v.start, stack - PAGE_SIZE);
    assert_eq!(m.find(stack - 8).unwrap().start, stack - PAGE_SIZE);
    // Further, but within the 8 MiB limit; then beyond it.
    assert!(m.fault_lookup(top - 8 * M, Access::Read).is_ok());
    assert_eq!(
        m.fault_lookup(top - 8 * M - 1, Access::Read),
        Err(Fault::Unmapped)
    );
    // A stack that would come within the guard gap of an area below stops.
    let mut m = VmMap::default();
    anon(&mut m, 0x1000_0000, PAGE_SIZE, RW, ANON | MAP_FIXED).unwrap();
    anon(
        &mut m,
        0x1000_0000 + STACK_GUARD_GAP + 2 * PAGE_SIZE,
        PAGE_SIZE,
        RW,
        ANON | MAP_FIXED | MAP_GROWSDOWN,
    )
    .unwrap();
    assert!(
        m.fault_lookup(0x1000_0000 + STACK_GUARD_GAP + PAGE_SIZE, Access::Write)
            .is_ok()
    );
    assert_eq!(
        m.fault_lookup(0x1000_0000 + STACK_GUARD_GAP - 1, Access::Write),
        Err(Fault::Unmapped)
    );
}

#[test]
fn search_keeps_the_stack_guard_gap() {
    let mut m = VmMap::new(0x7fff_0000_0000);
    let stack_start = 0x7ffe_0000_0000;
    anon(
        &mut m,
        stack_start,
        4 * PAGE_SIZE,
        RW,
        ANON | MAP_FIXED | MAP_GROWSDOWN,
    )
    .unwrap();
    // With the base above the stack, the first fit is below its guard gap.
    let a = anon(&mut m, 0, PAGE_SIZE, RW, ANON).unwrap();
    assert_eq!(a, 0x7fff_0000_0000 - PAGE_SIZE, "above the stack first");
    let mut m = VmMap::new(stack_start + 4 * PAGE_SIZE);
    anon(
        &mut m,
        stack_start,
        4 * PAGE_SIZE,
        RW,
        ANON | MAP_FIXED | MAP_GROWSDOWN,
    )
    .unwrap();
    let a = anon(&mut m, 0, PAGE_SIZE, RW, ANON).unwrap();
    assert_eq!(a, stack_start - STACK_GUARD_GAP - PAGE_SIZE);
    // A hint inside the gap is not taken.
    let b = anon(&mut m, stack_start - PAGE_SIZE, PAGE_SIZE, RW, ANON).unwrap();
    assert_ne!(b, stack_start - PAGE_SIZE);
}

#[test]
fn fork_clone_and_exec_clear() {
    let mut m = VmMap::default();
    m.set_initial_brk(0x60_0000);
    anon(&mut m, 0, 3 * PAGE_SIZE, RW, ANON).unwrap();
    m.brk(0x60_3000);
    let child = m.clone();
    assert_eq!(spans(&child), spans(&m));
    assert_eq!(child.brk_value(), 0x60_3000);
    assert!(child.areas().all(|v| v.is_cow()));
    let dropped = m.clear();
    assert_eq!(dropped.len(), 2);
    assert!(m.is_empty());
    assert_eq!(m.brk_value(), 0);
    assert_eq!(child.len(), 2, "the copy is independent");
}

#[test]
fn mremap_shrinks_grows_in_place_moves_and_fails_as_linux() {
    const P: u64 = PAGE_SIZE;
    let mut m = VmMap::default();
    let a = anon(&mut m, 0, 4 * P, RW, ANON).unwrap();
    // Shrink: in place, the tail removed.
    let r = m.mremap(a, 4 * P, 2 * P, 0, 0).unwrap();
    assert_eq!((r.addr, r.moved, r.grown), (a, None, None));
    assert_eq!(r.removed.iter().map(|v| (v.start, v.end)).collect::<Vec<_>>(), [(a + 2 * P, a + 4 * P)]);
    // Grow in place into the freed range: one area again.
    let r = m.mremap(a, 2 * P, 3 * P, 0, 0).unwrap();
    assert_eq!((r.addr, r.moved), (a, None));
    assert_eq!(r.grown.map(|g| (g.start, g.end)), Some((a + 2 * P, a + 3 * P)));
    assert_eq!(spans(&m), [(a, a + 3 * P, RW)]);
    // No room after page 0 without MREMAP_MAYMOVE.
    assert_eq!(m.mremap(a, P, 2 * P, 0, 0).err(), Some(ENOMEM));
    // Errors checked before anything changes.
    assert_eq!(m.mremap(a + 1, P, P, 0, 0).err(), Some(EINVAL));
    assert_eq!(m.mremap(a, P, P, MREMAP_FIXED, a - 8 * P).err(), Some(EINVAL));
    assert_eq!(m.mremap(a, P, 0, MREMAP_MAYMOVE, 0).err(), Some(EINVAL));
    assert_eq!(m.mremap(a - 16 * P, P, P, 0, 0).err(), Some(EFAULT));
    assert_eq!(m.mremap(a, 4 * P, 5 * P, MREMAP_MAYMOVE, 0).err(), Some(EFAULT));
    // Moves: pages of page 1 go to a new place, twice as long.
    let r = m.mremap(a + P, P, 2 * P, MREMAP_MAYMOVE, 0).unwrap();
    assert_ne!(r.addr, a + P);
    assert_eq!(r.moved, Some((a + P, r.addr, P)));
    assert_eq!(r.grown.map(|g| (g.start, g.end)), Some((r.addr + P, r.addr + 2 * P)));
    assert!(m.find(a + P).is_none());
    // MREMAP_FIXED replaces what is at the target.
    let t = anon(&mut m, 0, 3 * P, PROT_READ, ANON).unwrap();
    let r = m.mremap(a, P, P, MREMAP_MAYMOVE | MREMAP_FIXED, t + P).unwrap();
    assert_eq!(r.addr, t + P);
    assert_eq!(r.removed.iter().map(|v| (v.start, v.end)).collect::<Vec<_>>(), [(t + P, t + 2 * P)]);
    assert_eq!(m.find(t + P).map(|v| v.prot), Some(RW));
    // A file area grown keeps its offsets.
    let f = m.mmap(0, P, PROT_READ, MAP_PRIVATE, file(7, true, false), 3 * P).unwrap().addr;
    let r = m.mremap(f, P, 3 * P, MREMAP_MAYMOVE, 0).unwrap();
    assert_eq!(r.grown.map(|g| g.backing), Some(Backing::File { id: 7, offset: 4 * P }));
}
