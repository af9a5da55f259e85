//! The narrow VMkernel API as the kernel sees it: the numbers and records
//! of the `mantle-abi` crate (`vmkernel/abi/`, shared with user worlds),
//! plus the conversions between those records and the scheduler's types.

pub use mantle_abi::*;

use crate::sched::{GroupParams, GroupStats, SchedError};

/// The scheduler parameters a group record asks for.
pub fn params_from_record(r: GroupParamsRecord) -> GroupParams {
    GroupParams {
        shares: r.shares,
        reservation_pct: r.reservation_pct,
        limit_pct: (r.limit_pct != NO_LIMIT).then_some(r.limit_pct),
        mem_limit_mib: (r.mem_limit_mib != 0).then_some(r.mem_limit_mib),
    }
}

/// The record for a group's scheduler parameters.
pub fn params_record(p: &GroupParams) -> GroupParamsRecord {
    GroupParamsRecord {
        shares: p.shares,
        reservation_pct: p.reservation_pct,
        limit_pct: p.limit_pct.unwrap_or(NO_LIMIT),
        mem_limit_mib: p.mem_limit_mib.unwrap_or(0),
    }
}

/// The record for a group's statistics (the name is cut to `NAME_LEN`).
pub fn stats_record(s: &GroupStats) -> GroupStatsRecord {
    let mut name = [0u8; NAME_LEN];
    let n = s.name.len().min(NAME_LEN);
    name[..n].copy_from_slice(&s.name.as_bytes()[..n]);
    GroupStatsRecord {
        id: s.id,
        parent: s.parent.unwrap_or(NO_PARENT),
        params: params_record(&s.params),
        worlds: s.worlds as u32,
        used_ns: s.used_ns,
        period_used_ns: s.period_used_ns,
        throttled_periods: s.throttled_periods,
        name,
    }
}

/// Errno for a scheduler refusal.
pub fn errno_for(e: &SchedError) -> i64 {
    use SchedError::*;
    match e {
        NoSuchGroup(_) | NoSuchWorld(_) => -2,                                // ENOENT
        BadShares(_) | LimitBelowReservation { .. } | NoAllowedCpu(_) => -22, // EINVAL
        InsufficientCapacity { .. } => -28,                                   // ENOSPC
        GroupBusy(_) => -16,                                                  // EBUSY
        RootGroup => -1,                                                      // EPERM
        DuplicateWorld(_) => -17,                                             // EEXIST
        OutOfMemory => -12,                                                   // ENOMEM
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_convert_both_ways() {
        let p = GroupParamsRecord { shares: 2000, reservation_pct: 40, limit_pct: NO_LIMIT, mem_limit_mib: 0 };
        assert_eq!(params_from_record(p), GroupParams { shares: 2000, reservation_pct: 40, limit_pct: None, mem_limit_mib: None });
        let q = params_record(&GroupParams { shares: 1, reservation_pct: 0, limit_pct: Some(25), mem_limit_mib: Some(64) });
        assert_eq!((q.limit_pct, q.mem_limit_mib), (25, 64));
        assert_eq!(params_from_record(GroupParamsRecord::decode(&q.encode()).unwrap()).mem_limit_mib, Some(64));
    }

    #[test]
    fn stats_record_cuts_the_name() {
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
        let r = stats_record(&s);
        let d = GroupStatsRecord::decode(&r.encode()).unwrap();
        assert_eq!(d, r);
        assert_eq!(d.name_str(), "vm-web01-with-a-very-long-name-i");
        assert_eq!(d.parent, 0);
        assert_eq!(d.used_ns, 123_456_789);
    }
}
