//! The narrow VMkernel API: the few VMkernel-specific system calls user
//! worlds (hostd, vmkcli, the CIM broker) use beyond the Linux ABI.
//!
//! Calls live at numbers `VMK_BASE + n`, far above Linux's table, and are
//! versioned: `VMK_VERSION` returns [`API_VERSION`]; a caller checks it
//! before anything else. Arguments are plain integers and pointers to the
//! fixed little-endian records below. Errors are negative Linux errno
//! values: `EPERM` for a caller that is not root, `EINVAL` for malformed
//! arguments, `ENOENT` for an unknown group, `EBUSY` for a group that still
//! has members, `ENOSPC` when admission control refuses a reservation,
//! `EFAULT` for bad pointers. This crate is shared by the kernel and the
//! user-side wrappers, so both agree on the encoding; it depends on nothing
//! of the kernel (user worlds import only this, never the kernel library).
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub const API_VERSION: u32 = 1;

pub const VMK_BASE: u64 = 0x1000;
/// `() -> API_VERSION`
pub const VMK_VERSION: u64 = VMK_BASE;
/// `(parent: u32, name: *const u8, name_len: usize, params: *const GroupParamsRecord) -> group id`
pub const VMK_GROUP_CREATE: u64 = VMK_BASE + 1;
/// `(group: u32, params: *const GroupParamsRecord) -> 0`
pub const VMK_GROUP_SET: u64 = VMK_BASE + 2;
/// `(group: u32) -> 0`
pub const VMK_GROUP_DESTROY: u64 = VMK_BASE + 3;
/// `(group: u32, out: *mut GroupStatsRecord) -> 0`
pub const VMK_GROUP_STATS: u64 = VMK_BASE + 4;
/// `(out: *mut u32, max: usize) -> number of groups (all of them, even if more than max)`
pub const VMK_GROUP_LIST: u64 = VMK_BASE + 5;
/// `(pid: u32, group: u32) -> 0`: moves a process (all its threads, and
/// the memory it has committed) into a group; its future children follow.
pub const VMK_GROUP_JOIN: u64 = VMK_BASE + 6;

pub const NAME_LEN: usize = 32;
pub const NO_LIMIT: u32 = u32::MAX;
pub const NO_PARENT: u32 = u32::MAX;

/// Resource settings of a group (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupParamsRecord {
    pub shares: u32,
    /// Percent of one CPU.
    pub reservation_pct: u32,
    /// Percent of one CPU, or `NO_LIMIT`.
    pub limit_pct: u32,
    /// MiB of committed memory, or 0 for no limit.
    pub mem_limit_mib: u32,
}

impl GroupParamsRecord {
    pub const SIZE: usize = 16;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.shares.to_le_bytes());
        b[4..8].copy_from_slice(&self.reservation_pct.to_le_bytes());
        b[8..12].copy_from_slice(&self.limit_pct.to_le_bytes());
        b[12..16].copy_from_slice(&self.mem_limit_mib.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; Self::SIZE]) -> Option<Self> {
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(Self { shares: w(0), reservation_pct: w(4), limit_pct: w(8), mem_limit_mib: w(12) })
    }

}

/// Statistics of a group (96 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupStatsRecord {
    pub id: u32,
    pub parent: u32,
    pub params: GroupParamsRecord,
    pub worlds: u32,
    pub used_ns: u64,
    pub period_used_ns: u64,
    pub throttled_periods: u64,
    pub name: [u8; NAME_LEN],
}

impl GroupStatsRecord {
    pub const SIZE: usize = 96;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.parent.to_le_bytes());
        b[8..24].copy_from_slice(&self.params.encode());
        b[24..28].copy_from_slice(&self.worlds.to_le_bytes());
        b[32..40].copy_from_slice(&self.used_ns.to_le_bytes());
        b[40..48].copy_from_slice(&self.period_used_ns.to_le_bytes());
        b[48..56].copy_from_slice(&self.throttled_periods.to_le_bytes());
        b[56..56 + NAME_LEN].copy_from_slice(&self.name);
        b
    }

    pub fn decode(b: &[u8; Self::SIZE]) -> Option<Self> {
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Some(Self {
            id: w(0),
            parent: w(4),
            params: GroupParamsRecord::decode(b[8..24].try_into().unwrap())?,
            worlds: w(24),
            used_ns: q(32),
            period_used_ns: q(40),
            throttled_periods: q(48),
            name: b[56..56 + NAME_LEN].try_into().unwrap(),
        })
    }

    pub fn name_str(&self) -> &str {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }
}

// ---- virtual machines ----

/// `(config: *const u8, len: usize) -> vm id`: creates a VM from a text
/// configuration ([`VmConfig::parse`]).
pub const VMK_VM_CREATE: u64 = VMK_BASE + 0x10;
/// `(vm) -> 0`: powers on.
pub const VMK_VM_START: u64 = VMK_BASE + 0x11;
/// `(vm) -> 0`: hard power off.
pub const VMK_VM_STOP: u64 = VMK_BASE + 0x12;
/// `(vm) -> 0`: destroys a powered-off VM and frees its memory.
pub const VMK_VM_DESTROY: u64 = VMK_BASE + 0x13;
/// `(out: *mut u32, max) -> number of VMs`.
pub const VMK_VM_LIST: u64 = VMK_BASE + 0x14;
/// `(vm, out: *mut VmInfoRecord) -> 0`.
pub const VMK_VM_INFO: u64 = VMK_BASE + 0x15;
/// `(vm, from: u64, buf: *mut u8, len) -> bytes`: guest console output from
/// stream position `from` (the record's `console_pos` is the end).
pub const VMK_VM_CONSOLE_READ: u64 = VMK_BASE + 0x16;
/// `(vm, buf: *const u8, len) -> bytes`: input for the guest's serial port.
pub const VMK_VM_CONSOLE_WRITE: u64 = VMK_BASE + 0x17;

/// Hard reset: power off, then on from the initial state (a0 = VM).
pub const VMK_VM_RESET: u64 = VMK_BASE + 0x18;
/// Pause / resume the vCPUs (a0 = VM).
pub const VMK_VM_PAUSE: u64 = VMK_BASE + 0x19;
pub const VMK_VM_RESUME: u64 = VMK_BASE + 0x1a;
/// Per-VM statistics (a0 = VM, a1 = buffer of `VmStatsRecord::SIZE`).
pub const VMK_VM_STATS: u64 = VMK_BASE + 0x1b;
/// Graceful shutdown: press the guest's ACPI power button (a0 = VM).
/// EAGAIN when the guest does not listen for it.
pub const VMK_VM_SHUTDOWN: u64 = VMK_BASE + 0x1c;
/// An NMI from outside through every vCPU's LINT1 (a0 = VM), as a PC's
/// chipset raises it (ESXi's `vmdumper nmi`, QEMU's monitor `nmi`): a vCPU
/// whose LVT LINT1 is masked, or not in NMI mode, does not take it as one.
pub const VMK_VM_NMI: u64 = VMK_BASE + 0x20;
/// `(name, len, vlan) -> 0`: adds a port group to the virtual switch
/// vSwitch0 (root; EEXIST, EINVAL for a bad name or a VLAN above 4094).
pub const VMK_PORTGROUP_ADD: u64 = VMK_BASE + 0x30;
/// `(name, len) -> 0`: removes a port group no NIC uses (root; EBUSY, ENOENT).
pub const VMK_PORTGROUP_REMOVE: u64 = VMK_BASE + 0x31;
/// `(name, len, vlan) -> 0`: moves a port group to another VLAN (root).
pub const VMK_PORTGROUP_SET_VLAN: u64 = VMK_BASE + 0x32;
/// Longest port group name.
pub const PORTGROUP_NAME_LEN: usize = 64;
pub const MAX_VCPUS: u32 = 16;
/// Modules a Multiboot kernel may be given.
pub const MAX_MODULES: usize = 16;
pub const MAX_VM_MEMORY_MIB: u32 = 64 * 1024;
/// Longest configuration text `VMK_VM_CREATE` takes.
pub const MAX_CONFIG_TEXT: usize = 16 * 1024;

/// Virtio devices a VM may have (virtio-mmio slots 0..8: disks first, then NICs).
pub const MAX_VIRTIO_DEVICES: usize = 8;

/// Parses a unicast, non-zero MAC `xx:xx:xx:xx:xx:xx`.
pub fn parse_unicast_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    (parts.next().is_none() && mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

mod vmconfig;
pub use vmconfig::*;

/// VM power states.
pub const VM_STATE_OFF: u32 = 0;
pub const VM_STATE_RUNNING: u32 = 1;
/// Stopped by itself: see `exit_reason`.
pub const VM_STATE_STOPPED: u32 = 2;
/// Running, but the vCPUs are held (`VMK_VM_PAUSE`).
pub const VM_STATE_PAUSED: u32 = 3;

/// Exit kinds counted per VM (indices into `VmStatsRecord::exits_by_kind`).
pub const VM_EXIT_IO: usize = 0;
pub const VM_EXIT_MMIO: usize = 1;
pub const VM_EXIT_CPUID: usize = 2;
pub const VM_EXIT_MSR: usize = 3;
pub const VM_EXIT_HLT: usize = 4;
pub const VM_EXIT_PAUSE: usize = 5;
pub const VM_EXIT_HYPERCALL: usize = 6;
pub const VM_EXIT_INTERRUPT: usize = 7;
pub const VM_EXIT_INTERRUPT_WINDOW: usize = 8;
pub const VM_EXIT_OTHER: usize = 9;
/// A nested page fault on guest RAM not yet backed (its first touch).
pub const VM_EXIT_RAM_FAULT: usize = 10;
pub const VM_EXIT_KINDS: usize = 11;
pub const VM_EXIT_KIND_NAMES: [&str; VM_EXIT_KINDS] =
    ["io", "mmio", "cpuid", "msr", "hlt", "pause", "hypercall", "interrupt", "interrupt-window", "other", "ram-fault"];

/// Disks whose counters `VmStatsRecord` carries (a configuration's most).
pub const MAX_VM_DISKS: usize = vmconfig::MAX_DISKS;

/// One virtual disk's I/O since the VM was created, as its device model
/// counted the guest's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DiskCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Requests that failed (I/O error or a malformed request).
    pub errors: u64,
}

impl DiskCounters {
    const WORDS: usize = 6;

    fn words(&self) -> [u64; Self::WORDS] {
        [self.reads, self.writes, self.flushes, self.bytes_read, self.bytes_written, self.errors]
    }

    fn from_words(w: &[u64]) -> Self {
        Self { reads: w[0], writes: w[1], flushes: w[2], bytes_read: w[3], bytes_written: w[4], errors: w[5] }
    }
}

/// Per-VM statistics: exits by kind, run time per vCPU, host memory, and
/// each disk's I/O (in configuration order; disks it does not have read 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmStatsRecord {
    pub exits_by_kind: [u64; VM_EXIT_KINDS],
    pub vcpu_run_ns: [u64; MAX_VCPUS as usize],
    /// Host frames backing guest RAM (the pages the guest has touched).
    pub guest_frames: u64,
    /// Host frames the VMM holds beyond guest RAM (nested tables).
    pub overhead_frames: u64,
    pub disks: [DiskCounters; MAX_VM_DISKS],
}

impl VmStatsRecord {
    pub const SIZE: usize = 8 * (VM_EXIT_KINDS + MAX_VCPUS as usize + 2 + MAX_VM_DISKS * DiskCounters::WORDS);

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        let tail = [self.guest_frames, self.overhead_frames];
        let disks = self.disks.map(|d| d.words());
        let words = self.exits_by_kind.iter().chain(self.vcpu_run_ns.iter()).chain(tail.iter()).chain(disks.iter().flatten());
        for (i, w) in words.enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let q = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        let mut r = Self::default();
        for i in 0..VM_EXIT_KINDS {
            r.exits_by_kind[i] = q(i);
        }
        for i in 0..MAX_VCPUS as usize {
            r.vcpu_run_ns[i] = q(VM_EXIT_KINDS + i);
        }
        r.guest_frames = q(VM_EXIT_KINDS + MAX_VCPUS as usize);
        r.overhead_frames = q(VM_EXIT_KINDS + MAX_VCPUS as usize + 1);
        let first = VM_EXIT_KINDS + MAX_VCPUS as usize + 2;
        for (d, disk) in r.disks.iter_mut().enumerate() {
            let at = first + d * DiskCounters::WORDS;
            let w: [u64; DiskCounters::WORDS] = core::array::from_fn(|k| q(at + k));
            *disk = DiskCounters::from_words(&w);
        }
        r
    }
}

pub const EXIT_REASON_NONE: u32 = 0;
/// Wrote to the debug-exit port (`exit_code` = value).
pub const EXIT_REASON_DEBUG_EXIT: u32 = 1;
pub const EXIT_REASON_TRIPLE_FAULT: u32 = 2;
pub const EXIT_REASON_POWER_OFF: u32 = 3;
/// Something the VMM cannot emulate (`exit_code` = exit code or address).
pub const EXIT_REASON_UNHANDLED: u32 = 4;
pub const EXIT_REASON_HALTED: u32 = 5;

/// A VM's state and statistics (64 bytes + name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmInfoRecord {
    pub id: u32,
    pub state: u32,
    pub exit_reason: u32,
    pub vcpus: u32,
    pub exit_code: u64,
    pub memory_mib: u64,
    pub exits: u64,
    pub run_ns: u64,
    pub console_pos: u64,
    pub group: u32,
    pub name: [u8; NAME_LEN],
}

impl VmInfoRecord {
    pub const SIZE: usize = 64 + NAME_LEN;

    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&self.state.to_le_bytes());
        b[8..12].copy_from_slice(&self.exit_reason.to_le_bytes());
        b[12..16].copy_from_slice(&self.vcpus.to_le_bytes());
        b[16..24].copy_from_slice(&self.exit_code.to_le_bytes());
        b[24..32].copy_from_slice(&self.memory_mib.to_le_bytes());
        b[32..40].copy_from_slice(&self.exits.to_le_bytes());
        b[40..48].copy_from_slice(&self.run_ns.to_le_bytes());
        b[48..56].copy_from_slice(&self.console_pos.to_le_bytes());
        b[56..60].copy_from_slice(&self.group.to_le_bytes());
        b[64..64 + NAME_LEN].copy_from_slice(&self.name);
        b
    }

    pub fn decode(b: &[u8; Self::SIZE]) -> Self {
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Self {
            id: w(0),
            state: w(4),
            exit_reason: w(8),
            vcpus: w(12),
            exit_code: q(16),
            memory_mib: q(24),
            exits: q(32),
            run_ns: q(40),
            console_pos: q(48),
            group: w(56),
            name: b[64..64 + NAME_LEN].try_into().unwrap(),
        }
    }

    pub fn name_str(&self) -> &str {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }
}

#[cfg(test)]
mod vm_tests {
    use super::*;

    #[test]
    fn stats_round_trip() {
        let mut r = VmStatsRecord { guest_frames: 4096, overhead_frames: 12, ..Default::default() };
        r.exits_by_kind[VM_EXIT_MMIO] = 7;
        r.vcpu_run_ns[1] = 123;
        r.disks[0] = DiskCounters { reads: 1, writes: 2, flushes: 3, bytes_read: 4, bytes_written: 5, errors: 6 };
        r.disks[MAX_VM_DISKS - 1].bytes_written = u64::MAX;
        assert_eq!(VmStatsRecord::decode(&r.encode()), r);
    }

    #[test]
    fn info_round_trip() {
        let mut r = VmInfoRecord { id: 3, state: VM_STATE_STOPPED, exit_reason: EXIT_REASON_DEBUG_EXIT, exit_code: 0x10, exits: 99, ..Default::default() };
        r.name[..4].copy_from_slice(b"test");
        let d = VmInfoRecord::decode(&r.encode());
        assert_eq!(d, r);
        assert_eq!(d.name_str(), "test");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip() {
        let p = GroupParamsRecord { shares: 2000, reservation_pct: 40, limit_pct: NO_LIMIT, mem_limit_mib: 0 };
        assert_eq!(GroupParamsRecord::decode(&p.encode()), Some(p));
        let q = GroupParamsRecord { shares: 1, reservation_pct: 0, limit_pct: 25, mem_limit_mib: 64 };
        assert_eq!(GroupParamsRecord::decode(&q.encode()), Some(q));
    }

    #[test]
    fn stats_round_trip() {
        let mut name = [0u8; NAME_LEN];
        name[..5].copy_from_slice(b"web01");
        let r = GroupStatsRecord {
            id: 3,
            parent: 0,
            params: GroupParamsRecord { shares: 500, reservation_pct: 10, limit_pct: 50, mem_limit_mib: 0 },
            worlds: 2,
            used_ns: 123_456_789,
            period_used_ns: 42,
            throttled_periods: 7,
            name,
        };
        let d = GroupStatsRecord::decode(&r.encode()).unwrap();
        assert_eq!(d, r);
        assert_eq!(d.name_str(), "web01");
    }
}
