//! The host's virtual switch, vSwitch0 (`vmk_vswitch`): VM NICs connect to
//! its port groups; frames a guest transmits come here and go to the
//! ports the switch picks. The default port group is "VM Network" (no
//! VLAN), as on a fresh ESXi host. The uplink to the physical NIC that
//! vmk0 uses is not connected yet: frames for it are counted and dropped.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;
use vmk_vswitch::{PortId, Switch, SwitchError};

pub const SWITCH_NAME: &str = "vSwitch0";
pub const DEFAULT_PORT_GROUP: &str = "VM Network";

struct State {
    switch: Switch,
    /// VM NIC behind each port: (VM ID, virtio-mmio slot).
    endpoints: BTreeMap<PortId, (u32, usize)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = STATE.lock();
    let s = g.get_or_insert_with(|| {
        let mut switch = Switch::new(SWITCH_NAME);
        let _ = switch.add_port_group(DEFAULT_PORT_GROUP, 0);
        State { switch, endpoints: BTreeMap::new() }
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

/// A frame from `port`: where it goes, as (VM ID, slot, frame).
pub fn input(port: PortId, frame: &[u8]) -> Vec<(u32, usize, Vec<u8>)> {
    with(|s| {
        let out = s.switch.input(port, frame);
        out.into_iter().filter_map(|d| s.endpoints.get(&d.port).map(|&(vm, slot)| (vm, slot, d.frame))).collect()
    })
}

/// `/proc`-style listing: port groups and ports with their counters.
pub fn describe() -> String {
    use core::fmt::Write;
    with(|s| {
        let mut t = String::new();
        let _ = writeln!(t, "switch {}", s.switch.name);
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
