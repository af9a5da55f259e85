//! Memory limits of resource groups: commit accounting.
//!
//! A process's committed memory is the size of its writable mappings (what
//! it may dirty: heap, stacks, data, anonymous memory). A group with a
//! memory limit refuses — with ENOMEM — any mmap, brk, mprotect, fork or
//! exec that would take the commitments of its processes past the limit,
//! so a runaway world hits a clean error instead of exhausting the host.
//! Read-only and `MAP_NORESERVE` mappings are not charged.

use alloc::collections::BTreeMap;
use core::sync::atomic::Ordering;
use spin::Mutex;
use vmkernel::linux_abi::flags::mman::PROT_WRITE;
use vmkernel::sched::GroupId;
use vmkernel::vm_regions::VmMap;

use super::process::Mm;
use crate::world;

static GROUP_COMMIT: Mutex<BTreeMap<GroupId, u64>> = Mutex::new(BTreeMap::new());

/// Bytes of writable mappings in `vm`.
pub fn commit_of(vm: &VmMap) -> u64 {
    vm.areas().filter(|a| a.prot & PROT_WRITE != 0).map(|a| a.len()).sum()
}

/// Bytes committed by the processes of `group`.
pub fn group_committed(group: GroupId) -> u64 {
    GROUP_COMMIT.lock().get(&group).copied().unwrap_or(0)
}

fn limit_bytes(group: GroupId) -> Option<u64> {
    world::with_policy(|p| p.group_stats(group).ok().and_then(|s| s.params.mem_limit_mib)).map(|m| m as u64 * (1 << 20))
}

/// Whether `group` may commit `add` more bytes.
pub fn may_commit(group: GroupId, add: u64) -> bool {
    match limit_bytes(group) {
        Some(limit) => group_committed(group).saturating_add(add) <= limit,
        None => true,
    }
}

/// Recomputes `mm`'s commitment after a change and moves the difference
/// into its group's total.
pub fn recharge(mm: &Mm) {
    let new = commit_of(&mm.vm.lock());
    let old = mm.committed.swap(new, Ordering::AcqRel);
    let g = mm.group.load(Ordering::Acquire);
    let mut t = GROUP_COMMIT.lock();
    let e = t.entry(g).or_insert(0);
    *e = (*e + new).saturating_sub(old);
}

/// Drops `mm`'s commitment (the address space is going away).
pub fn release(mm: &Mm) {
    let old = mm.committed.swap(0, Ordering::AcqRel);
    let g = mm.group.load(Ordering::Acquire);
    if let Some(e) = GROUP_COMMIT.lock().get_mut(&g) {
        *e = e.saturating_sub(old);
    }
}

/// Moves `mm`'s commitment to another group.
pub fn move_to(mm: &Mm, group: GroupId) {
    release(mm);
    mm.group.store(group, Ordering::Release);
    recharge(mm);
}
