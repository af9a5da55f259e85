//! User-side wrappers for the narrow VMkernel API (`mantle_abi`, `vmkernel/abi/`):
//! the calls hostd, vmkcli and the CIM broker make beyond the Linux ABI.

use std::io;

pub use mantle_abi::{API_VERSION, GroupParamsRecord, GroupStatsRecord, NO_LIMIT, NO_PARENT};
use mantle_abi::*;

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

pub use mantle_abi::{VM_EXIT_KIND_NAMES, VM_STATE_OFF, VM_STATE_PAUSED, VM_STATE_RUNNING, VM_STATE_STOPPED, VmInfoRecord, VmStatsRecord};

/// Creates a VM from its text configuration; returns its ID.
pub fn vm_create(config: &str) -> io::Result<u32> {
    call(VMK_VM_CREATE, [config.as_ptr() as u64, config.len() as u64, 0, 0]).map(|v| v as u32)
}

pub fn vm_start(id: u32) -> io::Result<()> {
    call(VMK_VM_START, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_stop(id: u32) -> io::Result<()> {
    call(VMK_VM_STOP, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_reset(id: u32) -> io::Result<()> {
    call(VMK_VM_RESET, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_pause(id: u32) -> io::Result<()> {
    call(VMK_VM_PAUSE, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_nmi(id: u32) -> io::Result<()> {
    call(VMK_VM_NMI, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_resume(id: u32) -> io::Result<()> {
    call(VMK_VM_RESUME, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_stats(id: u32) -> io::Result<VmStatsRecord> {
    let mut b = [0u8; VmStatsRecord::SIZE];
    call(VMK_VM_STATS, [id as u64, b.as_mut_ptr() as u64, 0, 0])?;
    Ok(VmStatsRecord::decode(&b))
}

pub fn vm_destroy(id: u32) -> io::Result<()> {
    call(VMK_VM_DESTROY, [id as u64, 0, 0, 0]).map(|_| ())
}

pub fn vm_list() -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 256];
    let n = call(VMK_VM_LIST, [ids.as_mut_ptr() as u64, ids.len() as u64, 0, 0])? as usize;
    ids.truncate(n.min(256));
    Ok(ids)
}

pub fn vm_info(id: u32) -> io::Result<VmInfoRecord> {
    let mut b = [0u8; VmInfoRecord::SIZE];
    call(VMK_VM_INFO, [id as u64, b.as_mut_ptr() as u64, 0, 0])?;
    Ok(VmInfoRecord::decode(&b))
}

/// Console output from stream position `from`, at most `max` bytes.
pub fn vm_console_read(id: u32, from: u64, max: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; max];
    let n = call(VMK_VM_CONSOLE_READ, [id as u64, from, b.as_mut_ptr() as u64, b.len() as u64])? as usize;
    b.truncate(n);
    Ok(b)
}

pub fn vm_console_write(id: u32, data: &[u8]) -> io::Result<usize> {
    call(VMK_VM_CONSOLE_WRITE, [id as u64, data.as_ptr() as u64, data.len() as u64, 0]).map(|n| n as usize)
}
