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
//! `EFAULT` for bad pointers. This module is shared by the kernel and the
//! user-side wrappers, so both agree on the encoding.

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

    pub fn to_params(self) -> crate::sched::GroupParams {
        crate::sched::GroupParams {
            shares: self.shares,
            reservation_pct: self.reservation_pct,
            limit_pct: (self.limit_pct != NO_LIMIT).then_some(self.limit_pct),
            mem_limit_mib: (self.mem_limit_mib != 0).then_some(self.mem_limit_mib),
        }
    }

    pub fn from_params(p: &crate::sched::GroupParams) -> Self {
        Self {
            shares: p.shares,
            reservation_pct: p.reservation_pct,
            limit_pct: p.limit_pct.unwrap_or(NO_LIMIT),
            mem_limit_mib: p.mem_limit_mib.unwrap_or(0),
        }
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

    pub fn from_stats(s: &crate::sched::GroupStats) -> Self {
        let mut name = [0u8; NAME_LEN];
        let n = s.name.len().min(NAME_LEN);
        name[..n].copy_from_slice(&s.name.as_bytes()[..n]);
        Self {
            id: s.id,
            parent: s.parent.unwrap_or(NO_PARENT),
            params: GroupParamsRecord::from_params(&s.params),
            worlds: s.worlds as u32,
            used_ns: s.used_ns,
            period_used_ns: s.period_used_ns,
            throttled_periods: s.throttled_periods,
            name,
        }
    }

    pub fn name_str(&self) -> &str {
        let end = self.name.iter().position(|&c| c == 0).unwrap_or(NAME_LEN);
        core::str::from_utf8(&self.name[..end]).unwrap_or("?")
    }
}

/// Errno for a scheduler refusal.
pub fn errno_for(e: &crate::sched::SchedError) -> i64 {
    use crate::sched::SchedError::*;
    match e {
        NoSuchGroup(_) | NoSuchWorld(_) => -2,            // ENOENT
        BadShares(_) | LimitBelowReservation { .. } => -22, // EINVAL
        InsufficientCapacity { .. } => -28,               // ENOSPC
        GroupBusy(_) => -16,                              // EBUSY
        RootGroup => -1,                                  // EPERM
        DuplicateWorld(_) => -17,                         // EEXIST
        OutOfMemory => -12,                               // ENOMEM
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{GroupParams, GroupStats};

    #[test]
    fn params_round_trip() {
        let p = GroupParamsRecord { shares: 2000, reservation_pct: 40, limit_pct: NO_LIMIT, mem_limit_mib: 0 };
        let b = p.encode();
        assert_eq!(GroupParamsRecord::decode(&b), Some(p));
        assert_eq!(p.to_params(), GroupParams { shares: 2000, reservation_pct: 40, limit_pct: None, mem_limit_mib: None });
        let q = GroupParamsRecord::from_params(&GroupParams { shares: 1, reservation_pct: 0, limit_pct: Some(25), mem_limit_mib: Some(64) });
        assert_eq!((q.limit_pct, q.mem_limit_mib), (25, 64));
        assert_eq!(GroupParamsRecord::decode(&q.encode()).unwrap().to_params().mem_limit_mib, Some(64));
    }

    #[test]
    fn stats_round_trip() {
        let s = GroupStats {
            id: 3,
            name: "vm-web01-with-a-very-long-name-indeed".into(),
            parent: Some(0),
            params: GroupParams { shares: 500, reservation_pct: 10, limit_pct: Some(50), mem_limit_mib: None },
            used_ns: 123_456_789,
            period_used_ns: 42,
            throttled_periods: 7,
            worlds: 2,
        };
        let r = GroupStatsRecord::from_stats(&s);
        let d = GroupStatsRecord::decode(&r.encode()).unwrap();
        assert_eq!(d, r);
        assert_eq!(d.name_str(), "vm-web01-with-a-very-long-name-i");
        assert_eq!(d.parent, 0);
        assert_eq!(d.used_ns, 123_456_789);
    }
}
