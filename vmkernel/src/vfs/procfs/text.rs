//! /proc file contents as Linux formats them, from plain data the kernel
//! fills. Only integer arithmetic: load averages are in hundredths, times
//! in USER_HZ (100 Hz) ticks or centiseconds.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::vfs::mount::MountInfo;

pub const USER_HZ: u64 = 100;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total_kb: u64,
    pub free_kb: u64,
    pub available_kb: u64,
    pub buffers_kb: u64,
    pub cached_kb: u64,
    pub shmem_kb: u64,
    pub swap_total_kb: u64,
    pub swap_free_kb: u64,
    /// Mantle's own: the kernel heap's frames (claimed, never returned) and
    /// the part of them in use — together with MemFree they tell a leak
    /// from heap growth.
    pub kernel_heap_kb: u64,
    pub kernel_heap_used_kb: u64,
}

/// Time a CPU spent in each state, in USER_HZ ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SystemStat {
    /// One entry per CPU; the "cpu" line is their sum.
    pub cpus: Vec<CpuTimes>,
    pub interrupts: u64,
    pub context_switches: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time: u64,
    /// Processes created since boot.
    pub processes: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uptime {
    pub uptime_cs: u64,
    /// Summed over CPUs, as Linux does.
    pub idle_cs: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadAvg {
    /// 1, 5 and 15 minute averages in hundredths (123 = 1.23).
    pub load_x100: [u32; 3],
    pub runnable: u32,
    pub total: u32,
    pub last_pid: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    /// R, S, D, T, t, Z, X.
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Controlling terminal as a device number (0: none).
    pub tty_nr: u32,
    /// Foreground process group of that terminal (-1: none).
    pub tpgid: i32,
    pub flags: u32,
    pub minflt: u64,
    pub majflt: u64,
    /// USER_HZ ticks.
    pub utime: u64,
    pub stime: u64,
    pub cutime: u64,
    pub cstime: u64,
    pub priority: i64,
    pub nice: i64,
    pub num_threads: u64,
    /// Start time in ticks since boot.
    pub starttime: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
    pub uid: u32,
    pub gid: u32,
    pub cmdline: Vec<Vec<u8>>,
    /// Path of the executable, target of /proc/<pid>/exe.
    pub exe: Vec<u8>,
}

fn kb_line(out: &mut String, name: &str, kb: u64) {
    let _ = writeln!(out, "{:<16}{:>8} kB", format!("{name}:"), kb);
}

pub fn meminfo(m: &MemInfo) -> String {
    let mut s = String::new();
    kb_line(&mut s, "MemTotal", m.total_kb);
    kb_line(&mut s, "MemFree", m.free_kb);
    kb_line(&mut s, "MemAvailable", m.available_kb);
    kb_line(&mut s, "Buffers", m.buffers_kb);
    kb_line(&mut s, "Cached", m.cached_kb);
    kb_line(&mut s, "SwapCached", 0);
    kb_line(&mut s, "Shmem", m.shmem_kb);
    kb_line(&mut s, "SwapTotal", m.swap_total_kb);
    kb_line(&mut s, "SwapFree", m.swap_free_kb);
    kb_line(&mut s, "KernelHeap", m.kernel_heap_kb);
    kb_line(&mut s, "KernelHeapUsed", m.kernel_heap_used_kb);
    s
}

fn centi(cs: u64) -> String {
    format!("{}.{:02}", cs / 100, cs % 100)
}

pub fn uptime(u: &Uptime) -> String {
    format!("{} {}\n", centi(u.uptime_cs), centi(u.idle_cs))
}

pub fn loadavg(l: &LoadAvg) -> String {
    let [a, b, c] = l.load_x100.map(|v| centi(v as u64));
    format!("{a} {b} {c} {}/{} {}\n", l.runnable, l.total, l.last_pid)
}

fn cpu_line(out: &mut String, label: &str, t: &CpuTimes) {
    // guest and guest_nice are always 0.
    let _ = writeln!(
        out,
        "{label} {} {} {} {} {} {} {} {} 0 0",
        t.user, t.nice, t.system, t.idle, t.iowait, t.irq, t.softirq, t.steal
    );
}

pub fn stat(st: &SystemStat) -> String {
    let mut sum = CpuTimes::default();
    for c in &st.cpus {
        sum.user += c.user;
        sum.nice += c.nice;
        sum.system += c.system;
        sum.idle += c.idle;
        sum.iowait += c.iowait;
        sum.irq += c.irq;
        sum.softirq += c.softirq;
        sum.steal += c.steal;
    }
    let mut s = String::new();
    cpu_line(&mut s, "cpu ", &sum);
    for (i, c) in st.cpus.iter().enumerate() {
        cpu_line(&mut s, &format!("cpu{i}"), c);
    }
    let _ = writeln!(s, "intr {}", st.interrupts);
    let _ = writeln!(s, "ctxt {}", st.context_switches);
    let _ = writeln!(s, "btime {}", st.boot_time);
    let _ = writeln!(s, "processes {}", st.processes);
    let _ = writeln!(s, "procs_running {}", st.procs_running);
    let _ = writeln!(s, "procs_blocked {}", st.procs_blocked);
    s
}

/// /proc/<pid>/stat: all 52 fields of Linux 6.x, those Mantle does not
/// track as 0.
pub fn pid_stat(p: &ProcessInfo) -> String {
    let mut s = format!(
        "{} ({}) {} {} {} {} {} {} {} {} 0 {} 0 {} {} {} {} {} {} {} 0 {} {} {}",
        p.pid,
        p.comm,
        p.state,
        p.ppid,
        p.pgrp,
        p.session,
        p.tty_nr,
        p.tpgid,
        p.flags,
        p.minflt,
        p.majflt,
        p.utime,
        p.stime,
        p.cutime,
        p.cstime,
        p.priority,
        p.nice,
        p.num_threads,
        p.starttime,
        p.vsize_bytes,
        p.rss_pages,
    );
    // 25 rsslim, then 26..=52.
    s.push_str(" 18446744073709551615");
    for _ in 26..=52 {
        s.push_str(" 0");
    }
    s.push('\n');
    s
}

pub fn pid_cmdline(p: &ProcessInfo) -> Vec<u8> {
    let mut out = Vec::new();
    for arg in &p.cmdline {
        out.extend_from_slice(arg);
        out.push(0);
    }
    out
}

fn state_name(c: char) -> &'static str {
    match c {
        'R' => "R (running)",
        'S' => "S (sleeping)",
        'D' => "D (disk sleep)",
        'T' => "T (stopped)",
        't' => "t (tracing stop)",
        'Z' => "Z (zombie)",
        'X' => "X (dead)",
        _ => "S (sleeping)",
    }
}

pub fn pid_status(p: &ProcessInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Name:\t{}", p.comm);
    let _ = writeln!(s, "State:\t{}", state_name(p.state));
    let _ = writeln!(s, "Tgid:\t{}", p.pid);
    let _ = writeln!(s, "Pid:\t{}", p.pid);
    let _ = writeln!(s, "PPid:\t{}", p.ppid);
    let _ = writeln!(s, "Uid:\t{0}\t{0}\t{0}\t{0}", p.uid);
    let _ = writeln!(s, "Gid:\t{0}\t{0}\t{0}\t{0}", p.gid);
    let _ = writeln!(s, "VmSize:\t{:>8} kB", p.vsize_bytes / 1024);
    let _ = writeln!(s, "VmRSS:\t{:>8} kB", p.rss_pages * 4);
    let _ = writeln!(s, "Threads:\t{}", p.num_threads);
    s
}

/// /proc/mounts. Spaces and other awkward bytes are octal-escaped.
pub fn mounts(list: &[MountInfo]) -> Vec<u8> {
    let mut out = Vec::new();
    let esc = |out: &mut Vec<u8>, b: &[u8]| {
        for &c in b {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\\') {
                out.extend_from_slice(format!("\\{c:03o}").as_bytes());
            } else {
                out.push(c);
            }
        }
    };
    for m in list {
        esc(&mut out, m.source.as_bytes());
        out.push(b' ');
        esc(&mut out, &m.path);
        out.push(b' ');
        out.extend_from_slice(m.fs_type.as_bytes());
        out.extend_from_slice(if m.read_only { b" ro 0 0\n" } else { b" rw 0 0\n" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn meminfo_columns_as_linux() {
        let s = meminfo(&MemInfo {
            total_kb: 16318412,
            free_kb: 1024,
            available_kb: 2048,
            kernel_heap_kb: 8192,
            kernel_heap_used_kb: 3000,
            ..Default::default()
        });
        assert!(s.contains("\nKernelHeap:         8192 kB\nKernelHeapUsed:     3000 kB\n"));
        let first = s.lines().next().unwrap();
        assert_eq!(first, "MemTotal:       16318412 kB");
        assert!(s.contains("\nMemFree:            1024 kB\n"));
        assert!(s.contains("\nMemAvailable:       2048 kB\n"));
        for key in ["Buffers:", "Cached:", "SwapTotal:", "SwapFree:"] {
            assert!(s.lines().any(|l| l.starts_with(key)), "{key}");
        }
    }

    #[test]
    fn uptime_loadavg_stat() {
        assert_eq!(uptime(&Uptime { uptime_cs: 12345, idle_cs: 7 }), "123.45 0.07\n");
        let l = LoadAvg { load_x100: [5, 110, 200], runnable: 1, total: 12, last_pid: 99 };
        assert_eq!(loadavg(&l), "0.05 1.10 2.00 1/12 99\n");
        let st = SystemStat {
            cpus: vec![
                CpuTimes { user: 10, system: 5, idle: 100, ..Default::default() },
                CpuTimes { user: 1, idle: 50, ..Default::default() },
            ],
            boot_time: 1_700_000_000,
            processes: 30,
            procs_running: 2,
            ..Default::default()
        };
        let s = stat(&st);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "cpu  11 0 5 150 0 0 0 0 0 0");
        assert_eq!(lines[1], "cpu0 10 0 5 100 0 0 0 0 0 0");
        assert_eq!(lines[2], "cpu1 1 0 0 50 0 0 0 0 0 0");
        assert!(lines.contains(&"btime 1700000000"));
        assert!(lines.contains(&"processes 30"));
        assert!(lines.contains(&"procs_running 2"));
    }

    fn proc_() -> ProcessInfo {
        ProcessInfo {
            pid: 42,
            comm: "my prog".to_string(),
            state: 'S',
            ppid: 1,
            pgrp: 42,
            session: 7,
            tty_nr: 0x501,
            tpgid: 42,
            utime: 11,
            stime: 22,
            priority: 20,
            num_threads: 3,
            starttime: 555,
            vsize_bytes: 8 << 20,
            rss_pages: 300,
            uid: 1000,
            gid: 100,
            cmdline: vec![b"sh".to_vec(), b"-c".to_vec(), b"x y".to_vec()],
            exe: b"/bin/busybox".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn pid_stat_field_order() {
        let s = pid_stat(&proc_());
        // The comm may hold spaces: parse as procps does, after the last ')'.
        let (head, rest) = s.rsplit_once(") ").unwrap();
        assert_eq!(head, "42 (my prog");
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3.
        let field = |n: usize| f[n - 3];
        assert_eq!(f.len(), 50);
        assert_eq!(field(3), "S");
        assert_eq!((field(4), field(5), field(6)), ("1", "42", "7"));
        assert_eq!(field(7), (0x501).to_string());
        assert_eq!(field(8), "42");
        assert_eq!((field(14), field(15)), ("11", "22"));
        assert_eq!((field(18), field(19), field(20)), ("20", "0", "3"));
        assert_eq!(field(22), "555");
        assert_eq!(field(23), (8u64 << 20).to_string());
        assert_eq!(field(24), "300");
        assert!(s.ends_with(" 0\n"));
    }

    #[test]
    fn cmdline_status_mounts() {
        let p = proc_();
        assert_eq!(pid_cmdline(&p), b"sh\0-c\0x y\0");
        let s = pid_status(&p);
        assert!(s.starts_with("Name:\tmy prog\nState:\tS (sleeping)\n"));
        assert!(s.contains("\nPid:\t42\nPPid:\t1\n"));
        assert!(s.contains("\nUid:\t1000\t1000\t1000\t1000\n"));
        assert!(s.contains("\nVmRSS:\t    1200 kB\n"));
        let m = mounts(&[
            MountInfo {
                source: "rootfs".into(),
                path: b"/".to_vec(),
                fs_type: "ramfs".into(),
                read_only: false,
            },
            MountInfo {
                source: "ds".into(),
                path: b"/vmfs/volumes/my ds".to_vec(),
                fs_type: "vfat".into(),
                read_only: true,
            },
        ]);
        assert_eq!(m, b"rootfs / ramfs rw 0 0\nds /vmfs/volumes/my\\040ds vfat ro 0 0\n");
    }
}
