//! The built-in virtual switch, in the style of ESXi's standard vSwitch.
//!
//! A switch has port groups (a name and a VLAN ID) and ports: VM ports,
//! each in one port group, and at most one uplink (the physical NIC). A
//! frame entering a port belongs to the port group's VLAN (VM ports are
//! untagged access ports; the uplink carries 802.1Q tags for VLANs other
//! than 0). The switch learns source MACs per VLAN, forwards known unicast
//! to its port, and floods broadcast, multicast and unknown unicast to
//! every other port of the same VLAN. Every port counts frames and bytes
//! both ways and what it dropped. The switch is plain data: the caller
//! moves frames ([`Switch::input`] returns the deliveries), so it is
//! tested without any NIC.

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

pub type Mac = [u8; 6];
pub type PortId = u32;

/// VLAN ID meaning "untagged" for a port group.
pub const NO_VLAN: u16 = 0;
/// Learned MAC entries kept at most (oldest evicted first).
pub const MAX_MACS: usize = 4096;
/// Shortest and longest frames accepted (without FCS; one VLAN tag allowed).
pub const MIN_FRAME: usize = 14;
pub const MAX_FRAME: usize = 1522;
const TPID_8021Q: u16 = 0x8100;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchError {
    NoSuchPortGroup(String),
    PortGroupExists(String),
    PortGroupInUse(String),
    BadVlan(u16),
    BadName,
    UplinkExists,
    NoSuchPort(PortId),
}

impl fmt::Display for SwitchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SwitchError::NoSuchPortGroup(n) => write!(f, "no port group named {n:?}"),
            SwitchError::PortGroupExists(n) => write!(f, "port group {n:?} already exists"),
            SwitchError::PortGroupInUse(n) => write!(f, "port group {n:?} still has ports"),
            SwitchError::BadVlan(v) => write!(f, "VLAN ID {v} is not in 0..=4094"),
            SwitchError::BadName => f.write_str("names are 1 to 64 printable characters"),
            SwitchError::UplinkExists => f.write_str("the switch already has an uplink"),
            SwitchError::NoSuchPort(p) => write!(f, "no port {p}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortGroup {
    pub name: String,
    pub vlan: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames and bytes the port sent into the switch.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames and bytes the switch delivered to the port.
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames from the port the switch refused (malformed, wrong VLAN).
    pub dropped: u64,
    pub broadcast: u64,
    pub multicast: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A VM's NIC in a port group.
    Vm { group: String, client: String },
    Uplink,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub id: PortId,
    pub kind: PortKind,
    pub counters: PortCounters,
}

/// A frame the caller must hand to a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub port: PortId,
    pub frame: Vec<u8>,
}

pub struct Switch {
    pub name: String,
    groups: Vec<PortGroup>,
    ports: BTreeMap<PortId, Port>,
    next_port: PortId,
    /// (VLAN, MAC) -> (port, last seen as a sequence number).
    macs: BTreeMap<(u16, Mac), (PortId, u64)>,
    seq: u64,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

impl Switch {
    pub fn new(name: &str) -> Self {
        Switch { name: String::from(name), groups: Vec::new(), ports: BTreeMap::new(), next_port: 1, macs: BTreeMap::new(), seq: 0 }
    }

    pub fn add_port_group(&mut self, name: &str, vlan: u16) -> Result<(), SwitchError> {
        if !valid_name(name) {
            return Err(SwitchError::BadName);
        }
        if vlan > 4094 {
            return Err(SwitchError::BadVlan(vlan));
        }
        if self.group(name).is_some() {
            return Err(SwitchError::PortGroupExists(String::from(name)));
        }
        self.groups.push(PortGroup { name: String::from(name), vlan });
        Ok(())
    }

    pub fn remove_port_group(&mut self, name: &str) -> Result<(), SwitchError> {
        self.group(name).ok_or_else(|| SwitchError::NoSuchPortGroup(String::from(name)))?;
        if self.ports.values().any(|p| matches!(&p.kind, PortKind::Vm { group, .. } if group == name)) {
            return Err(SwitchError::PortGroupInUse(String::from(name)));
        }
        self.groups.retain(|g| g.name != name);
        Ok(())
    }

    /// Changes a port group's VLAN; learned addresses are forgotten.
    pub fn set_vlan(&mut self, name: &str, vlan: u16) -> Result<(), SwitchError> {
        if vlan > 4094 {
            return Err(SwitchError::BadVlan(vlan));
        }
        let g = self.groups.iter_mut().find(|g| g.name == name).ok_or_else(|| SwitchError::NoSuchPortGroup(String::from(name)))?;
        g.vlan = vlan;
        self.macs.clear();
        Ok(())
    }

    pub fn group(&self, name: &str) -> Option<&PortGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn port_groups(&self) -> &[PortGroup] {
        &self.groups
    }

    pub fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(&id)
    }

    /// Connects a VM NIC (`client` names it, e.g. "vm3.nic0") to port group `group`.
    pub fn connect(&mut self, group: &str, client: &str) -> Result<PortId, SwitchError> {
        self.group(group).ok_or_else(|| SwitchError::NoSuchPortGroup(String::from(group)))?;
        Ok(self.add_port(PortKind::Vm { group: String::from(group), client: String::from(client) }))
    }

    pub fn connect_uplink(&mut self) -> Result<PortId, SwitchError> {
        if self.uplink().is_some() {
            return Err(SwitchError::UplinkExists);
        }
        Ok(self.add_port(PortKind::Uplink))
    }

    pub fn uplink(&self) -> Option<PortId> {
        self.ports.values().find(|p| p.kind == PortKind::Uplink).map(|p| p.id)
    }

    fn add_port(&mut self, kind: PortKind) -> PortId {
        let id = self.next_port;
        self.next_port += 1;
        self.ports.insert(id, Port { id, kind, counters: PortCounters::default() });
        id
    }

    pub fn disconnect(&mut self, port: PortId) -> Result<(), SwitchError> {
        self.ports.remove(&port).ok_or(SwitchError::NoSuchPort(port))?;
        self.macs.retain(|_, (p, _)| *p != port);
        Ok(())
    }

    /// The VLAN of a VM port (its group's), `None` for the uplink.
    fn access_vlan(&self, port: &Port) -> Option<u16> {
        match &port.kind {
            PortKind::Vm { group, .. } => self.group(group).map(|g| g.vlan),
            PortKind::Uplink => None,
        }
    }

    /// Where the switch learned `mac` on `vlan`.
    pub fn lookup(&self, vlan: u16, mac: &Mac) -> Option<PortId> {
        self.macs.get(&(vlan, *mac)).map(|&(p, _)| p)
    }

    fn learn(&mut self, vlan: u16, mac: Mac, port: PortId) {
        self.seq += 1;
        if !self.macs.contains_key(&(vlan, mac)) && self.macs.len() >= MAX_MACS
            && let Some(oldest) = self.macs.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| *k) {
                self.macs.remove(&oldest);
            }
        self.macs.insert((vlan, mac), (port, self.seq));
    }

    /// A frame arrives at `port`. Returns the frames to hand to other
    /// ports (tagged for the uplink where its VLAN needs a tag).
    pub fn input(&mut self, port: PortId, frame: &[u8]) -> Vec<Delivery> {
        let Some(ingress) = self.ports.get(&port).cloned() else { return Vec::new() };
        let drop = |s: &mut Self| {
            if let Some(p) = s.ports.get_mut(&port) {
                p.counters.dropped += 1;
            }
            Vec::new()
        };
        if frame.len() < MIN_FRAME || frame.len() > MAX_FRAME {
            return drop(self);
        }
        let tagged = u16::from_be_bytes([frame[12], frame[13]]) == TPID_8021Q;
        // The frame's VLAN and its untagged form.
        let (vlan, untagged): (u16, Vec<u8>) = match (self.access_vlan(&ingress), tagged) {
            (Some(v), false) => (v, frame.to_vec()),
            // A VM may not tag its own frames (no guest tagging here).
            (Some(_), true) => return drop(self),
            (None, false) => (NO_VLAN, frame.to_vec()),
            (None, true) => {
                if frame.len() < MIN_FRAME + 4 {
                    return drop(self);
                }
                let v = u16::from_be_bytes([frame[14], frame[15]]) & 0xfff;
                if v == NO_VLAN || v == 4095 {
                    return drop(self);
                }
                let mut f = frame[..12].to_vec();
                f.extend_from_slice(&frame[16..]);
                (v, f)
            }
        };
        let dst: Mac = untagged[0..6].try_into().unwrap_or([0; 6]);
        let src: Mac = untagged[6..12].try_into().unwrap_or([0; 6]);
        if src[0] & 1 != 0 {
            // A multicast source address is never valid.
            return drop(self);
        }
        if let Some(p) = self.ports.get_mut(&port) {
            p.counters.rx_frames += 1;
            p.counters.rx_bytes += frame.len() as u64;
            if dst == [0xff; 6] {
                p.counters.broadcast += 1;
            } else if dst[0] & 1 != 0 {
                p.counters.multicast += 1;
            }
        }
        self.learn(vlan, src, port);
        let targets: Vec<PortId> = match (dst[0] & 1 == 0).then(|| self.lookup(vlan, &dst)).flatten() {
            Some(p) if p == port => Vec::new(),
            Some(p) => alloc::vec![p],
            None => self
                .ports
                .values()
                .filter(|p| p.id != port && (p.kind == PortKind::Uplink || self.access_vlan(p) == Some(vlan)))
                .map(|p| p.id)
                .collect(),
        };
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let Some(p) = self.ports.get_mut(&t) else { continue };
            let frame = if p.kind == PortKind::Uplink && vlan != NO_VLAN {
                let mut f = untagged[..12].to_vec();
                f.extend_from_slice(&TPID_8021Q.to_be_bytes());
                f.extend_from_slice(&vlan.to_be_bytes());
                f.extend_from_slice(&untagged[12..]);
                f
            } else {
                untagged.clone()
            };
            p.counters.tx_frames += 1;
            p.counters.tx_bytes += frame.len() as u64;
            out.push(Delivery { port: t, frame });
        }
        out
    }
}

/// Parses `00:50:56:aa:bb:cc`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const A: Mac = [0x00, 0x50, 0x56, 0, 0, 0xa];
    const B: Mac = [0x00, 0x50, 0x56, 0, 0, 0xb];
    const C: Mac = [0x00, 0x50, 0x56, 0, 0, 0xc];
    const BCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac, payload: u8) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[payload; 46]);
        f
    }

    fn ports_of(d: &[Delivery]) -> Vec<PortId> {
        d.iter().map(|d| d.port).collect()
    }

    fn switch() -> (Switch, PortId, PortId, PortId, PortId) {
        let mut s = Switch::new("vSwitch0");
        s.add_port_group("VM Network", 0).unwrap();
        s.add_port_group("Lab", 20).unwrap();
        let a = s.connect("VM Network", "vm1.nic0").unwrap();
        let b = s.connect("VM Network", "vm2.nic0").unwrap();
        let c = s.connect("Lab", "vm3.nic0").unwrap();
        let up = s.connect_uplink().unwrap();
        (s, a, b, c, up)
    }

    #[test]
    fn broadcast_floods_the_vlan_and_unicast_follows_learning() {
        let (mut s, a, b, _c, up) = switch();
        let d = s.input(a, &frame(BCAST, A, 1));
        assert_eq!(ports_of(&d), vec![b, up], "not to the other VLAN's port, not back to the sender");
        assert_eq!(s.lookup(0, &A), Some(a));
        // Unknown unicast floods too; the reply is then switched directly.
        assert_eq!(ports_of(&s.input(b, &frame(A, B, 2))), vec![a]);
        assert_eq!(ports_of(&s.input(a, &frame(B, A, 3))), vec![b]);
        // A frame for a MAC on the sender's own port goes nowhere.
        assert!(s.input(a, &frame(A, A, 4)).is_empty());
        let ca = s.port(a).unwrap().counters;
        assert_eq!((ca.rx_frames, ca.tx_frames, ca.broadcast), (3, 1, 1));
        assert_eq!(s.port(b).unwrap().counters.tx_bytes, 2 * 60);
    }

    #[test]
    fn multicast_floods_and_is_counted() {
        let (mut s, a, b, _c, up) = switch();
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert_eq!(ports_of(&s.input(a, &frame(mcast, A, 1))), vec![b, up]);
        assert_eq!(s.port(a).unwrap().counters.multicast, 1);
        assert_eq!(s.lookup(0, &mcast), None, "group addresses are never learned as destinations");
    }

    #[test]
    fn vlans_isolate_port_groups_and_tag_on_the_uplink() {
        let (mut s, a, _b, c, up) = switch();
        let d = s.input(c, &frame(BCAST, C, 1));
        assert_eq!(ports_of(&d), vec![up], "VLAN 20 has no other VM port");
        let f = &d[0].frame;
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 20], "802.1Q tag for VLAN 20");
        assert_eq!(f.len(), 64);
        // The same MAC may live in two VLANs.
        s.input(a, &frame(BCAST, C, 2));
        assert_eq!((s.lookup(20, &C), s.lookup(0, &C)), (Some(c), Some(a)));
        // From the uplink: a tagged frame reaches VLAN 20 untagged, an untagged one VLAN 0.
        let mut tagged = frame(C, A, 3);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 20]);
        let d = s.input(up, &tagged);
        assert_eq!(d, vec![Delivery { port: c, frame: frame(C, A, 3) }]);
        assert_eq!(ports_of(&s.input(up, &frame(C, B, 4))), vec![a]);
        // A VM cannot tag its way into another VLAN.
        let mut sneaky = frame(BCAST, A, 5);
        sneaky.splice(12..12, [0x81, 0x00, 0x00, 20]);
        assert!(s.input(a, &sneaky).is_empty());
        assert_eq!(s.port(a).unwrap().counters.dropped, 1);
        // Moving a port group to another VLAN moves its ports.
        s.set_vlan("Lab", 0).unwrap();
        assert!(ports_of(&s.input(c, &frame(BCAST, C, 6))).contains(&a));
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted() {
        let (mut s, a, _b, _c, up) = switch();
        assert!(s.input(a, &[0; 13]).is_empty());
        assert!(s.input(a, &[0; 2000]).is_empty());
        assert!(s.input(a, &frame(BCAST, BCAST, 1)).is_empty(), "broadcast source");
        assert!(s.input(up, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 0x81, 0x00, 0]).is_empty(), "truncated tag");
        assert!(s.input(999, &frame(BCAST, A, 1)).is_empty(), "unknown port");
        assert_eq!(s.port(a).unwrap().counters.dropped, 3);
        assert_eq!(s.port(a).unwrap().counters.rx_frames, 0);
    }

    #[test]
    fn mac_table_is_bounded_and_forgets_disconnected_ports() {
        let (mut s, a, b, _c, _up) = switch();
        for i in 0..(MAX_MACS as u32 + 100) {
            let src = [0x02, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8, 1];
            s.input(a, &frame(BCAST, src, 0));
        }
        assert_eq!(s.macs.len(), MAX_MACS);
        s.input(b, &frame(BCAST, B, 0));
        assert_eq!(s.lookup(0, &B), Some(b));
        s.disconnect(b).unwrap();
        assert_eq!(s.lookup(0, &B), None);
        assert_eq!(s.disconnect(b), Err(SwitchError::NoSuchPort(b)));
    }

    #[test]
    fn port_group_management() {
        let (mut s, a, ..) = switch();
        assert_eq!(s.add_port_group("Lab", 3), Err(SwitchError::PortGroupExists("Lab".into())));
        assert_eq!(s.add_port_group("X", 4095), Err(SwitchError::BadVlan(4095)));
        assert_eq!(s.add_port_group("", 1), Err(SwitchError::BadName));
        assert_eq!(s.connect("Nope", "vm"), Err(SwitchError::NoSuchPortGroup("Nope".into())));
        assert_eq!(s.remove_port_group("VM Network"), Err(SwitchError::PortGroupInUse("VM Network".into())));
        assert_eq!(s.connect_uplink(), Err(SwitchError::UplinkExists));
        s.add_port_group("Empty", 7).unwrap();
        s.remove_port_group("Empty").unwrap();
        assert!(s.group("Empty").is_none());
        s.disconnect(a).unwrap();
        assert_eq!(parse_mac("00:50:56:0A:bb:cc"), Some([0, 0x50, 0x56, 0x0a, 0xbb, 0xcc]));
        assert_eq!(parse_mac("00:50:56:0a:bb"), None);
        assert_eq!(parse_mac("00:50:56:0a:bb:cc:dd"), None);
        assert_eq!(parse_mac("0:50:56:0a:bb:cc"), None);
    }
}
