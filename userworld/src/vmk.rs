//! User-side wrappers for the narrow VMkernel API (`vmkernel::vmk_api`):
//! the calls hostd, vmkcli and the CIM broker make beyond the Linux ABI.

use std::io;

pub use vmkernel::vmk_api::{API_VERSION, GroupParamsRecord, GroupStatsRecord, NO_LIMIT, NO_PARENT};
use vmkernel::vmk_api::*;

fn call(nr: u64, a: [u64; 4]) -> io::Result<i64> {
    // SAFETY: a raw system call; pointer arguments point at live buffers
    // of the sizes the API defines.
    let r = unsafe { libc::syscall(nr as libc::c_long, a[0], a[1], a[2], a[3]) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// The API version the kernel speaks (ENOSYS: not running on Mantle).
pub fn version() -> io::Result<u32> {
    call(VMK_VERSION, [0; 4]).map(|v| v as u32)
}

pub fn group_create(parent: u32, name: &str, params: &GroupParamsRecord) -> io::Result<u32> {
    let rec = params.encode();
    call(VMK_GROUP_CREATE, [parent as u64, name.as_ptr() as u64, name.len() as u64, rec.as_ptr() as u64]).map(|g| g as u32)
}

pub fn group_set(group: u32, params: &GroupParamsRecord) -> io::Result<()> {
    let rec = params.encode();
    call(VMK_GROUP_SET, [group as u64, rec.as_ptr() as u64, 0, 0]).map(|_| ())
}

pub fn group_destroy(group: u32) -> io::Result<()> {
    call(VMK_GROUP_DESTROY, [group as u64, 0, 0, 0]).map(|_| ())
}

pub fn group_stats(group: u32) -> io::Result<GroupStatsRecord> {
    let mut b = [0u8; GroupStatsRecord::SIZE];
    call(VMK_GROUP_STATS, [group as u64, b.as_mut_ptr() as u64, 0, 0])?;
    GroupStatsRecord::decode(&b).ok_or_else(|| io::Error::other("malformed group record"))
}

pub fn group_list() -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 256];
    let n = call(VMK_GROUP_LIST, [ids.as_mut_ptr() as u64, ids.len() as u64, 0, 0])? as usize;
    if n > ids.len() {
        ids.resize(n, 0);
        call(VMK_GROUP_LIST, [ids.as_mut_ptr() as u64, ids.len() as u64, 0, 0])?;
    }
    ids.truncate(n);
    Ok(ids)
}

/// Moves process `pid` (its threads and memory commitment) into `group`.
pub fn group_join(pid: u32, group: u32) -> io::Result<()> {
    call(VMK_GROUP_JOIN, [pid as u64, group as u64, 0, 0]).map(|_| ())
}
