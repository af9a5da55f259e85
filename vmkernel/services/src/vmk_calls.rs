//! The kernel side of the narrow VMkernel API (`vmkernel::vmk_api`):
//! resource groups today, VMs later. Only root may change anything;
//! everyone may read.

use alloc::vec::Vec;
#[allow(unused_imports)]
use alloc::string::String;
use vmkernel::vmk_api::{self as api, GroupParamsRecord};

use crate::uw::process::{self, Process};
use crate::world;

const EPERM: i64 = 1;
const EINVAL: i64 = 22;
const ENOSYS: i64 = 38;

/// Handles call `nr` (in the VMK range) for the current process.
pub fn dispatch(nr: u64, a: [u64; 4]) -> i64 {
    let Some(p) = process::current() else { return -EINVAL };
    match nr {
        api::VMK_VERSION => api::API_VERSION as i64,
        api::VMK_GROUP_CREATE => root(&p).and_then(|_| group_create(&p, a)).unwrap_or_else(|e| e),
        api::VMK_GROUP_SET => root(&p).and_then(|_| group_set(&p, a)).unwrap_or_else(|e| e),
        api::VMK_GROUP_DESTROY => root(&p)
            .and_then(|_| world::with_policy(|s| s.destroy_group(a[0] as u32)).map(|_| 0).map_err(|e| api::errno_for(&e)))
            .unwrap_or_else(|e| e),
        api::VMK_GROUP_STATS => group_stats(&p, a).unwrap_or_else(|e| e),
        api::VMK_GROUP_LIST => group_list(&p, a).unwrap_or_else(|e| e),
        api::VMK_GROUP_JOIN => root(&p).and_then(|_| group_join(a[0] as u32, a[1] as u32)).unwrap_or_else(|e| e),
        api::VMK_VM_CREATE => root(&p).and_then(|_| vm_create(&p, a)).unwrap_or_else(|e| e),
        api::VMK_VM_START => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.start().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_STOP => root(&p)
            .and_then(|_| {
                vm(a[0]).map(|v| {
                    v.stop();
                    0
                })
            })
            .unwrap_or_else(|e| e),
        api::VMK_VM_SHUTDOWN => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.shutdown().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_RESET => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.reset().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_PAUSE => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.pause().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_NMI => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.nmi().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_RESUME => root(&p).and_then(|_| vm(a[0]).and_then(|v| v.resume().map(|_| 0).map_err(report))).unwrap_or_else(|e| e),
        api::VMK_VM_STATS => vm(a[0]).and_then(|v| p.copy_to_user(a[1], &v.stats().encode()).map(|_| 0)).unwrap_or_else(|e| e),
        api::VMK_VM_DESTROY => root(&p).and_then(|_| crate::vm::destroy(a[0] as u32).map(|_| 0).map_err(report)).unwrap_or_else(|e| e),
        api::VMK_VM_LIST => {
            let ids = crate::vm::list();
            let n = ids.len().min(a[1] as usize);
            let bytes: Vec<u8> = ids[..n].iter().flat_map(|g| g.to_le_bytes()).collect();
            p.copy_to_user(a[0], &bytes).map(|_| ids.len() as i64).unwrap_or_else(|e| e)
        }
        api::VMK_VM_INFO => vm(a[0]).and_then(|v| p.copy_to_user(a[1], &v.info().encode()).map(|_| 0)).unwrap_or_else(|e| e),
        api::VMK_VM_CONSOLE_READ => vm(a[0])
            .and_then(|v| {
                let mut out = Vec::new();
                v.console_since(a[1], &mut out);
                let n = out.len().min(a[3] as usize);
                p.copy_to_user(a[2], &out[..n]).map(|_| n as i64)
            })
            .unwrap_or_else(|e| e),
        api::VMK_VM_CONSOLE_WRITE => root(&p)
            .and_then(|_| {
                let v = vm(a[0])?;
                let mut b = alloc::vec![0u8; (a[2] as usize).min(4096)];
                p.copy_from_user(a[1], &mut b)?;
                Ok(v.console_input(&b) as i64)
            })
            .unwrap_or_else(|e| e),
        api::VMK_PORTGROUP_ADD | api::VMK_PORTGROUP_REMOVE | api::VMK_PORTGROUP_SET_VLAN => {
            root(&p).and_then(|_| portgroup(&p, nr, a)).unwrap_or_else(|e| e)
        }
        _ => -ENOSYS,
    }
}

/// Port group management on vSwitch0.
fn portgroup(p: &Process, n: u64, a: [u64; 4]) -> Result<i64, i64> {
    let len = a[1] as usize;
    if len == 0 || len > api::PORTGROUP_NAME_LEN {
        return Err(-EINVAL);
    }
    let mut name = [0u8; api::PORTGROUP_NAME_LEN];
    p.copy_from_user(a[0], &mut name[..len])?;
    let name = core::str::from_utf8(&name[..len]).map_err(|_| -EINVAL)?;
    let vlan = u16::try_from(a[2]).map_err(|_| -EINVAL)?;
    let r = match n {
        api::VMK_PORTGROUP_ADD => crate::net::vswitch::add_port_group(name, vlan),
        api::VMK_PORTGROUP_REMOVE => crate::net::vswitch::remove_port_group(name),
        _ => crate::net::vswitch::set_vlan(name, vlan),
    };
    r.map(|()| 0).map_err(|e| {
        log::warn!("vswitch: {e}");
        -(crate::net::vswitch::errno(&e) as i64)
    })
}

fn root(p: &Process) -> Result<(), i64> {
    if p.euid.load(core::sync::atomic::Ordering::Relaxed) == 0 { Ok(()) } else { Err(-EPERM) }
}

fn read_params(p: &Process, at: u64) -> Result<GroupParamsRecord, i64> {
    let mut b = [0u8; GroupParamsRecord::SIZE];
    p.copy_from_user(at, &mut b)?;
    GroupParamsRecord::decode(&b).ok_or(-EINVAL)
}

fn group_create(p: &Process, a: [u64; 4]) -> Result<i64, i64> {
    let len = a[2] as usize;
    if len == 0 || len > api::NAME_LEN {
        return Err(-EINVAL);
    }
    let mut name = [0u8; api::NAME_LEN];
    p.copy_from_user(a[1], &mut name[..len])?;
    let name = core::str::from_utf8(&name[..len]).map_err(|_| -EINVAL)?;
    let params = api::params_from_record(read_params(p, a[3])?);
    world::with_policy(|s| s.create_group(a[0] as u32, name, params)).map(|g| g as i64).map_err(|e| api::errno_for(&e))
}

fn group_set(p: &Process, a: [u64; 4]) -> Result<i64, i64> {
    let params = api::params_from_record(read_params(p, a[1])?);
    world::with_policy(|s| s.set_params(a[0] as u32, params)).map(|_| 0).map_err(|e| api::errno_for(&e))
}

fn group_stats(p: &Process, a: [u64; 4]) -> Result<i64, i64> {
    let st = world::with_policy(|s| s.group_stats(a[0] as u32)).map_err(|e| api::errno_for(&e))?;
    p.copy_to_user(a[1], &api::stats_record(&st).encode())?;
    Ok(0)
}

fn group_list(p: &Process, a: [u64; 4]) -> Result<i64, i64> {
    let ids: Vec<u32> = world::with_policy(|s| s.groups().collect());
    let n = ids.len().min(a[1] as usize);
    let bytes: Vec<u8> = ids[..n].iter().flat_map(|g| g.to_le_bytes()).collect();
    p.copy_to_user(a[0], &bytes)?;
    Ok(ids.len() as i64)
}

/// Moves a process's threads and its memory commitment into `group`.
fn group_join(pid: u32, group: u32) -> Result<i64, i64> {
    const ESRCH: i64 = 3;
    let target = process::lookup(pid).filter(|t| !t.is_zombie()).ok_or(-ESRCH)?;
    world::with_policy(|s| s.group_stats(group).map(|_| ())).map_err(|e| api::errno_for(&e))?;
    for t in target.threads.lock().iter() {
        let w = t.world.load(core::sync::atomic::Ordering::Relaxed);
        world::with_policy(|s| s.move_world(w, group)).map_err(|e| api::errno_for(&e))?;
    }
    target.group.store(group, core::sync::atomic::Ordering::Release);
    crate::uw::commit::move_to(&target.mm(), group);
    Ok(0)
}

fn vm(id: u64) -> Result<alloc::sync::Arc<crate::vm::Vm>, i64> {
    crate::vm::lookup(id as u32).ok_or(-2)
}

/// Logs why a VM call failed (the administrator sees it on the console
/// log) and returns the errno.
fn report(e: crate::vm::VmError) -> i64 {
    log::warn!("vm: {e}");
    e.errno()
}

fn vm_create(p: &Process, a: [u64; 4]) -> Result<i64, i64> {
    let len = a[1] as usize;
    if len == 0 || len > vmkernel::vmk_api::MAX_CONFIG_TEXT {
        return Err(-EINVAL);
    }
    let mut text = alloc::vec![0u8; len];
    p.copy_from_user(a[0], &mut text)?;
    let text = core::str::from_utf8(&text).map_err(|_| -EINVAL)?;
    let config = vmkernel::vmk_api::VmConfig::parse(text).map_err(|e| {
        log::warn!("vm: bad configuration: {e}");
        -EINVAL
    })?;
    let image = read_file(p, &config.kernel)?;
    let mut modules = Vec::new();
    for (path, args) in &config.modules {
        let image = read_file(p, path)?;
        modules.push(crate::vm::ModuleImage { image, string: vmkernel::vmk_api::VmConfig::module_string(path, args) });
    }
    // A Linux kernel's initrd travels as the one module.
    if let Some(path) = &config.initrd {
        let image = read_file(p, path)?;
        modules.push(crate::vm::ModuleImage { image, string: path.clone() });
    }
    let vm = crate::vm::create(config, image, modules).map_err(report)?;
    Ok(vm.id as i64)
}

/// Reads a whole file (a guest kernel or module) as the calling process.
fn read_file(p: &Process, path: &str) -> Result<Vec<u8>, i64> {
    let vfs = crate::uw::files::vfs().ok_or(-2i64)?;
    let cwd = p.cwd.lock().clone().unwrap_or_else(|| vfs.root());
    let f = vfs.open(&p.creds(), &cwd, path.as_bytes(), 0, 0).map_err(|e| {
        log::warn!("vm: cannot open {path}");
        -(e.0 as i64)
    })?;
    let size = f.stat().size as usize;
    if size > 256 << 20 {
        return Err(-27); // EFBIG
    }
    let mut image = alloc::vec![0u8; size];
    let mut off = 0;
    while off < size {
        let n = f.pread(off as u64, &mut image[off..]).map_err(|e| -(e.0 as i64))?;
        if n == 0 {
            break;
        }
        off += n;
    }
    image.truncate(off);
    Ok(image)
}
