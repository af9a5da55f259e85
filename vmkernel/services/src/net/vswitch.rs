//! The host's virtual switch, vSwitch0 (`vmk_vswitch`): VM NICs connect to
//! its port groups; frames a guest transmits come here and go to the
//! ports the switch picks. The default port group is "VM Network" (no
//! VLAN), as on a fresh ESXi host.
//!
//! The uplink is the physical NIC vmk0 uses (`attach_uplink`): frames the
//! switch sends there wait in a bounded queue the network world transmits;
//! frames from the NIC that are not vmk0's own unicast enter the switch
//! (broadcast and multicast go to vmk0 as well). vmk0 is no switch port —
//! its unicast traffic to and from the NIC bypasses the switch — but it
//! still reaches the VMs: frames from a VM for vmk0's MAC (or broadcast)
//! are queued for vmk0, and vmk0's frames for a MAC learned on a VM port
//! (or broadcast) are copied to the VMs. The network world delivers to VMs
//! through the hook the VMM registers (`set_vm_delivery`), outside every
//! lock.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;
use vmk_vswitch::{Mac, PortId, Switch, SwitchError};

pub const SWITCH_NAME: &str = "vSwitch0";
pub const DEFAULT_PORT_GROUP: &str = "VM Network";

struct State {
    switch: Switch,
    /// VM NIC behind each port: (VM ID, virtio-mmio slot).
    endpoints: BTreeMap<PortId, (u32, usize)>,
    uplink: Option<PortId>,
    /// vmk0's MAC once the uplink is attached.
    vmk0_mac: Option<Mac>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Frames queued per direction at most; more are dropped, as a switch
/// with full buffers does.
const QUEUE_FRAMES: usize = 256;

/// Frames for the physical NIC.
static TO_UPLINK: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
/// Frames for vmk0 from VMs.
static TO_VMK0: Mutex<VecDeque<Vec<u8>>> = Mutex::new(VecDeque::new());
/// Frames for VM NICs from the uplink or vmk0: (VM ID, slot, frame).
static TO_VMS: Mutex<VecDeque<(u32, usize, Vec<u8>)>> = Mutex::new(VecDeque::new());
/// Frames dropped because a queue was full.
static QUEUE_DROPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How the network world hands a frame to a VM's NIC.
static VM_DELIVERY: spin::Once<fn(u32, usize, &[u8])> = spin::Once::new();

fn push_bounded<T>(q: &Mutex<VecDeque<T>>, item: T) -> bool {
    let mut q = q.lock();
    if q.len() >= QUEUE_FRAMES {
        QUEUE_DROPS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        return false;
    }
    q.push_back(item);
    true
}

fn is_multicast(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 != 0)
}

fn dst_of(frame: &[u8]) -> Option<Mac> {
    frame.get(..6)?.try_into().ok()
}

/// The VMM's way to deliver a frame to (VM ID, slot).
pub fn set_vm_delivery(f: fn(u32, usize, &[u8])) {
    VM_DELIVERY.call_once(|| f);
}

/// Connects the physical NIC behind vmk0 (MAC `vmk0_mac`) as the uplink.
pub fn attach_uplink(vmk0_mac: Mac) {
    let r = with(|s| {
        let port = s.switch.connect_uplink()?;
        s.uplink = Some(port);
        s.vmk0_mac = Some(vmk0_mac);
        Ok::<_, SwitchError>(port)
    });
    match r {
        Ok(p) => log::info!("vswitch: the physical NIC is {SWITCH_NAME}'s uplink (port {p})"),
        Err(e) => log::warn!("vswitch: cannot attach the uplink: {e}"),
    }
}

/// Whether a frame the NIC received is for vmk0 too (its unicast, a
/// broadcast or a multicast), and whether it is for the switch (anything
/// but vmk0's unicast). Without an uplink, everything is vmk0's.
pub fn classify_from_nic(frame: &[u8]) -> (bool, bool) {
    let Some(dst) = dst_of(frame) else { return (true, false) };
    let g = STATE.lock();
    let Some(s) = g.as_ref().filter(|s| s.uplink.is_some()) else { return (true, false) };
    if Some(dst) == s.vmk0_mac {
        (true, false)
    } else if is_multicast(frame) {
        (true, !s.endpoints.is_empty())
    } else {
        (false, !s.endpoints.is_empty())
    }
}

/// A frame from the physical NIC enters the switch at the uplink; VM
/// deliveries are queued for the network world.
pub fn from_uplink(frame: &[u8]) {
    let out = with(|s| {
        let Some(up) = s.uplink else { return Vec::new() };
        let out = s.switch.input(up, frame);
        out.into_iter().filter_map(|d| s.endpoints.get(&d.port).map(|&(vm, slot)| (vm, slot, d.frame))).collect::<Vec<_>>()
    });
    for d in out {
        push_bounded(&TO_VMS, d);
    }
}

/// A frame vmk0 transmits: copies for VMs where it is broadcast,
/// multicast or for a MAC learned on a VM port (untagged port groups:
/// vmk0 is on VLAN 0).
pub fn from_vmk0(frame: &[u8]) {
    let Some(dst) = dst_of(frame) else { return };
    let targets: Vec<(u32, usize)> = {
        let g = STATE.lock();
        let Some(s) = g.as_ref() else { return };
        if s.endpoints.is_empty() {
            return;
        }
        if is_multicast(frame) {
            s.switch
                .ports()
                .filter(|p| matches!(&p.kind, vmk_vswitch::PortKind::Vm { group, .. } if s.switch.group(group).is_some_and(|g| g.vlan == 0)))
                .filter_map(|p| s.endpoints.get(&p.id).copied())
                .collect()
        } else {
            s.switch.lookup(0, &dst).and_then(|p| s.endpoints.get(&p).copied()).into_iter().collect()
        }
    };
    for (vm, slot) in targets {
        push_bounded(&TO_VMS, (vm, slot, frame.to_vec()));
    }
}

/// The next frame a VM sent to vmk0.
pub fn take_for_vmk0() -> Option<Vec<u8>> {
    TO_VMK0.lock().pop_front()
}

/// Whether frames wait for vmk0, the uplink or VMs (the network world
/// polls again at once).
pub fn pending() -> bool {
    !TO_VMK0.lock().is_empty() || !TO_UPLINK.lock().is_empty() || !TO_VMS.lock().is_empty()
}

/// The network world's part, with no lock of the stack held: frames for
/// the NIC go out through `transmit` (false: the ring is full; the rest
/// wait), frames for VMs go to them.
pub fn flush(mut transmit: impl FnMut(&[u8]) -> bool) {
    loop {
        let Some(f) = TO_UPLINK.lock().pop_front() else { break };
        if !transmit(&f) {
            TO_UPLINK.lock().push_front(f);
            break;
        }
    }
    let Some(deliver) = VM_DELIVERY.get() else {
        TO_VMS.lock().clear();
        return;
    };
    loop {
        let Some((vm, slot, f)) = TO_VMS.lock().pop_front() else { break };
        deliver(vm, slot, &f);
    }
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = STATE.lock();
    let s = g.get_or_insert_with(|| {
        let mut switch = Switch::new(SWITCH_NAME);
        let _ = switch.add_port_group(DEFAULT_PORT_GROUP, 0);
        State { switch, endpoints: BTreeMap::new(), uplink: None, vmk0_mac: None }
    });
    f(s)
}

pub fn add_port_group(name: &str, vlan: u16) -> Result<(), SwitchError> {
    with(|s| s.switch.add_port_group(name, vlan))?;
    log::info!("vswitch: port group {name:?} (VLAN {vlan}) added to {SWITCH_NAME}");
    Ok(())
}

pub fn remove_port_group(name: &str) -> Result<(), SwitchError> {
    with(|s| s.switch.remove_port_group(name))?;
    log::info!("vswitch: port group {name:?} removed from {SWITCH_NAME}");
    Ok(())
}

pub fn set_vlan(name: &str, vlan: u16) -> Result<(), SwitchError> {
    with(|s| s.switch.set_vlan(name, vlan))?;
    log::info!("vswitch: port group {name:?} now on VLAN {vlan}");
    Ok(())
}

/// The errno a switch error means for a system call.
pub fn errno(e: &SwitchError) -> i32 {
    match e {
        SwitchError::NoSuchPortGroup(_) | SwitchError::NoSuchPort(_) => 2,
        SwitchError::PortGroupExists(_) | SwitchError::UplinkExists => 17,
        SwitchError::PortGroupInUse(_) => 16,
        SwitchError::BadVlan(_) | SwitchError::BadName => 22,
    }
}

/// Connects NIC `slot` of VM `vm` (called `client` in listings) to `group`.
pub fn connect(group: &str, client: &str, vm: u32, slot: usize) -> Result<PortId, SwitchError> {
    with(|s| {
        let port = s.switch.connect(group, client)?;
        s.endpoints.insert(port, (vm, slot));
        Ok(port)
    })
}

pub fn disconnect(port: PortId) {
    with(|s| {
        let _ = s.switch.disconnect(port);
        s.endpoints.remove(&port);
    })
}

/// A frame from the VM NIC at `port`: the VM NICs it goes to, as (VM ID,
/// slot, frame); frames for the uplink and vmk0 are queued for the
/// network world (which the caller kicks when this says so).
pub fn input(port: PortId, frame: &[u8]) -> (Vec<(u32, usize, Vec<u8>)>, bool) {
    let mut kick = false;
    let out = with(|s| {
        let dst = dst_of(frame);
        if s.vmk0_mac.is_some() && (dst == s.vmk0_mac || is_multicast(frame)) {
            kick |= push_bounded(&TO_VMK0, frame.to_vec());
            if dst == s.vmk0_mac {
                return Vec::new();
            }
        }
        let out = s.switch.input(port, frame);
        let mut vms = Vec::with_capacity(out.len());
        for d in out {
            if Some(d.port) == s.uplink {
                kick |= push_bounded(&TO_UPLINK, d.frame);
            } else if let Some(&(vm, slot)) = s.endpoints.get(&d.port) {
                vms.push((vm, slot, d.frame));
            }
        }
        vms
    });
    (out, kick)
}

/// `/proc`-style listing: port groups and ports with their counters.
pub fn describe() -> String {
    use core::fmt::Write;
    with(|s| {
        let mut t = String::new();
        let _ = writeln!(t, "switch {}", s.switch.name);
        let drops = QUEUE_DROPS.load(core::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(t, "uplink {}, queue drops {drops}", if s.uplink.is_some() { "the physical NIC" } else { "none" });
        for g in s.switch.port_groups() {
            let _ = writeln!(t, "portgroup {:?} vlan {}", g.name, g.vlan);
        }
        for p in s.switch.ports() {
            let c = p.counters;
            let what = match &p.kind {
                vmk_vswitch::PortKind::Vm { group, client } => alloc::format!("{client} in {group:?}"),
                vmk_vswitch::PortKind::Uplink => String::from("uplink"),
            };
            let _ = writeln!(t, "port {} {what}: rx {} frames {} bytes, tx {} frames {} bytes, dropped {}", p.id, c.rx_frames, c.rx_bytes, c.tx_frames, c.tx_bytes, c.dropped);
        }
        t
    })
}
