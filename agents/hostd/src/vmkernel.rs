//! The VMkernel as hostd sees it: the narrow VM API behind a trait. The real
//! implementation makes the same calls as `vmkcli` (`userworld::vmk`); the
//! VMkernel stays the only place that runs VMs. A fake serves unit tests.

use std::io;

/// Power state of a VM as the VMkernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelState {
    /// Created, never started.
    Off,
    Running,
    /// Stopped by itself (halt, triple fault, debug exit, power off).
    Stopped,
    Paused,
}

/// One VM the VMkernel knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelVm {
    pub id: u32,
    pub name: String,
    pub state: KernelState,
    /// Why it stopped (the kernel's `EXIT_REASON_*` name), when it did.
    pub exit_reason: Option<String>,
    pub exit_code: u64,
    pub exits: u64,
    pub run_ns: u64,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The VM's resource group.
    pub group: u32,
}

/// CPU resource settings of a running VM's group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    pub shares: u32,
    pub reservation_pct: u32,
    pub limit_pct: Option<u32>,
}

/// A running VM's counters.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KernelVmStats {
    /// VM exits by kind (`io`, `mmio`, `cpuid`, `hlt`, ...).
    pub exits_by_kind: Vec<(String, u64)>,
    /// Run time of each vCPU.
    pub vcpu_run_ns: Vec<u64>,
    /// Host memory backing guest RAM.
    pub guest_memory_bytes: u64,
    /// Host memory the VMM uses beyond guest RAM (nested page tables).
    pub overhead_bytes: u64,
    /// The VM's NICs' counters on the virtual switch.
    pub nics: Vec<NicCounters>,
    /// Each disk slot's I/O (configuration order, `MAX_VM_DISKS` of them;
    /// slots the VM does not use read zero).
    pub disks: Vec<DiskIo>,
}

/// One virtual disk's I/O since the VM was created, as the VMkernel's
/// virtio-blk device model counted the guest's requests.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct DiskIo {
    /// `disk0`, `disk1`, ... (the configuration's index).
    pub disk: String,
    /// The disk's file as configured (empty where the configuration is unknown).
    pub file: String,
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Requests that failed (I/O errors, requests past the end).
    pub errors: u64,
}

impl DiskIo {
    fn from_counters(index: usize, c: &mantle_abi::DiskCounters) -> Self {
        DiskIo {
            disk: format!("disk{index}"),
            file: String::new(),
            reads: c.reads,
            writes: c.writes,
            flushes: c.flushes,
            read_bytes: c.bytes_read,
            written_bytes: c.bytes_written,
            errors: c.errors,
        }
    }
}

/// One virtual NIC's traffic, as the guest sees it: `rx` is what the guest
/// received, `tx` what it sent.
#[derive(Clone, Debug, PartialEq, Eq, Default, serde::Serialize, utoipa::ToSchema)]
pub struct NicCounters {
    /// `nic0`, `nic1`, ... (the configuration's index).
    pub nic: String,
    pub port_group: String,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the switch dropped on this port.
    pub dropped: u64,
}

/// The VM `vm`'s NICs in the virtual switch's listing (`/proc/net/vswitch`),
/// whose port lines read `port 3 web01.nic0 in "VM Network": rx 10 frames
/// 600 bytes, tx 2 frames 120 bytes, dropped 0` — counted at the switch, so
/// the port's rx is the guest's tx. Lines that do not parse are skipped.
pub fn parse_vswitch(text: &str, vm: &str) -> Vec<NicCounters> {
    let mut out: Vec<NicCounters> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("port ")?;
            let (_, rest) = rest.split_once(' ')?;
            let rest = rest.strip_prefix(vm)?.strip_prefix('.')?;
            let (nic, rest) = rest.split_once(" in \"")?;
            if !nic.strip_prefix("nic").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
                return None;
            }
            let (group, counters) = rest.rsplit_once("\": ")?;
            let n: Vec<u64> = counters.split(|c: char| !c.is_ascii_digit()).filter(|w| !w.is_empty()).filter_map(|w| w.parse().ok()).collect();
            let [port_rx_frames, port_rx_bytes, port_tx_frames, port_tx_bytes, dropped] = n[..] else { return None };
            Some(NicCounters {
                nic: nic.to_string(),
                port_group: group.replace("\\\"", "\"").replace("\\\\", "\\"),
                rx_frames: port_tx_frames,
                rx_bytes: port_tx_bytes,
                tx_frames: port_rx_frames,
                tx_bytes: port_rx_bytes,
                dropped,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.nic.len(), &a.nic).cmp(&(b.nic.len(), &b.nic)));
    out
}

/// The VM calls hostd makes. Errors are the kernel's errno.
pub trait VmKernel: Send + Sync + 'static {
    /// The API version (Err: not running on Mantle).
    fn version(&self) -> io::Result<u32>;
    fn list(&self) -> io::Result<Vec<KernelVm>>;
    /// Creates a VM from the kernel's text configuration; returns its id.
    fn create(&self, config_text: &str) -> io::Result<u32>;
    fn start(&self, id: u32) -> io::Result<()>;
    /// Hard power off.
    fn stop(&self, id: u32) -> io::Result<()>;
    fn reset(&self, id: u32) -> io::Result<()>;
    fn pause(&self, id: u32) -> io::Result<()>;
    fn resume(&self, id: u32) -> io::Result<()>;
    /// Frees a stopped VM.
    fn destroy(&self, id: u32) -> io::Result<()>;
    fn set_resources(&self, group: u32, r: Resources) -> io::Result<()>;
    fn stats(&self, id: u32, vcpus: u32) -> io::Result<KernelVmStats>;
    /// The guest's serial console output from stream position `from`, and
    /// the position after it. A reader more than [`CONSOLE_WINDOW`] behind
    /// skips ahead to the last `CONSOLE_WINDOW` bytes.
    fn console_read(&self, id: u32, from: u64) -> io::Result<(Vec<u8>, u64)>;
    /// Input for the guest's serial console; returns the bytes taken.
    fn console_write(&self, id: u32, data: &[u8]) -> io::Result<usize>;
    /// Asks the guest to shut down (the ACPI power button). `ENOSYS` when
    /// the VMkernel has no such call.
    fn shutdown(&self, id: u32) -> io::Result<()>;
}

/// How far back a console reader may start (the kernel keeps 64 KiB).
pub const CONSOLE_WINDOW: u64 = 16 * 1024;

/// errno for "the VMkernel has no such call".
pub const ENOSYS: i32 = 38;

/// Names for `vmk_api::EXIT_REASON_*` (0 = none).
fn exit_reason_name(r: u32) -> Option<String> {
    Some(
        match r {
            0 => return None,
            1 => "debug-exit",
            2 => "triple-fault",
            3 => "power-off",
            4 => "unhandled",
            5 => "halted",
            _ => "unknown",
        }
        .into(),
    )
}

/// The real VMkernel, through its system calls.
pub struct RealVmKernel;

impl VmKernel for RealVmKernel {
    fn version(&self) -> io::Result<u32> {
        userworld::vmk::version()
    }

    fn list(&self) -> io::Result<Vec<KernelVm>> {
        use userworld::vmk;
        let mut out = Vec::new();
        for id in vmk::vm_list()? {
            // A VM destroyed between the list and the info call is simply gone.
            let Ok(info) = vmk::vm_info(id) else { continue };
            let state = match info.state {
                vmk::VM_STATE_RUNNING => KernelState::Running,
                vmk::VM_STATE_STOPPED => KernelState::Stopped,
                vmk::VM_STATE_PAUSED => KernelState::Paused,
                _ => KernelState::Off,
            };
            out.push(KernelVm {
                id,
                name: info.name_str().to_string(),
                state,
                exit_reason: exit_reason_name(info.exit_reason),
                exit_code: info.exit_code,
                exits: info.exits,
                run_ns: info.run_ns,
                memory_mib: info.memory_mib,
                vcpus: info.vcpus,
                group: info.group,
            });
        }
        Ok(out)
    }

    fn create(&self, config_text: &str) -> io::Result<u32> {
        userworld::vmk::vm_create(config_text)
    }
    fn start(&self, id: u32) -> io::Result<()> {
        userworld::vmk::vm_start(id)
    }
    fn stop(&self, id: u32) -> io::Result<()> {
        use userworld::vmk;
        vmk::vm_stop(id)?;
        // The VMkernel stops the vCPUs asynchronously and refuses to free a
        // VM (EBUSY) until the last has left, which is when its state stops
        // reading running or paused: wait for that, so a power-off's destroy
        // that follows does not race the vCPUs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while matches!(vmk::vm_info(id)?.state, vmk::VM_STATE_RUNNING | vmk::VM_STATE_PAUSED) {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the vCPUs did not stop within 10 s"));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(())
    }
    fn reset(&self, id: u32) -> io::Result<()> {
        userworld::vmk::vm_reset(id)
    }
    fn pause(&self, id: u32) -> io::Result<()> {
        userworld::vmk::vm_pause(id)
    }
    fn resume(&self, id: u32) -> io::Result<()> {
        userworld::vmk::vm_resume(id)
    }
    fn destroy(&self, id: u32) -> io::Result<()> {
        userworld::vmk::vm_destroy(id)
    }
    fn set_resources(&self, group: u32, r: Resources) -> io::Result<()> {
        use userworld::vmk;
        let cur = vmk::group_stats(group)?;
        let p = vmk::GroupParamsRecord {
            shares: r.shares,
            reservation_pct: r.reservation_pct,
            limit_pct: r.limit_pct.unwrap_or(vmk::NO_LIMIT),
            mem_limit_mib: cur.params.mem_limit_mib,
        };
        vmk::group_set(group, &p)
    }
    fn console_read(&self, id: u32, from: u64) -> io::Result<(Vec<u8>, u64)> {
        use userworld::vmk;
        // The kernel clamps a position it no longer holds without saying
        // where it started: stay within what it surely holds, and read only
        // up to the end seen now so the new position is exact.
        let end = vmk::vm_info(id)?.console_pos;
        let from = from.clamp(end.saturating_sub(CONSOLE_WINDOW), end);
        if from == end {
            return Ok((Vec::new(), end));
        }
        let data = vmk::vm_console_read(id, from, (end - from) as usize)?;
        let next = from + data.len() as u64;
        Ok((data, next))
    }
    fn console_write(&self, id: u32, data: &[u8]) -> io::Result<usize> {
        userworld::vmk::vm_console_write(id, data)
    }
    fn shutdown(&self, id: u32) -> io::Result<()> {
        // The ACPI power button (VMK_VM_SHUTDOWN); EAGAIN when the guest
        // does not listen for it.
        userworld::vmk::vm_shutdown(id)
    }
    fn stats(&self, id: u32, vcpus: u32) -> io::Result<KernelVmStats> {
        use userworld::vmk;
        let r = vmk::vm_stats(id)?;
        Ok(KernelVmStats {
            exits_by_kind: vmk::VM_EXIT_KIND_NAMES.iter().zip(r.exits_by_kind).map(|(n, c)| (n.to_string(), c)).collect(),
            vcpu_run_ns: r.vcpu_run_ns.iter().take(vcpus as usize).copied().collect(),
            guest_memory_bytes: r.guest_frames.saturating_mul(4096),
            overhead_bytes: r.overhead_frames.saturating_mul(4096),
            // The switch counts per port; a host without one has no NICs to show.
            nics: std::fs::read_to_string("/proc/net/vswitch").map(|t| parse_vswitch(&t, vmk::vm_info(id).map(|i| i.name_str().to_string()).unwrap_or_default().as_str())).unwrap_or_default(),
            disks: r.disks.iter().enumerate().map(|(i, c)| DiskIo::from_counters(i, c)).collect(),
        })
    }
}

/// A VMkernel in memory, for unit tests of hostd's logic and for running
/// hostd on a Linux host with `--fake-vmkernel` (the browser test): VMs run
/// nowhere; a started VM's console prints a banner and a prompt, echoes
/// what is typed and answers each line with `you typed: <line>`.
pub mod fake {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Output so far, and the line being typed.
    type FakeConsole = (Vec<u8>, Vec<u8>);

    #[derive(Default)]
    pub struct FakeVmKernel {
        pub vms: Mutex<Vec<KernelVm>>,
        pub next_id: Mutex<u32>,
        /// Calls made, in order ("create web01", "start 1", ...).
        pub calls: Mutex<Vec<String>>,
        pub resources: Mutex<Vec<(u32, Resources)>>,
        /// Console output so far and the line being typed, per VM.
        consoles: Mutex<HashMap<u32, FakeConsole>>,
        /// Running guests use CPU and exit on every list (for live charts).
        pub ticking: AtomicBool,
        /// Whether the fake has the ACPI shutdown call.
        pub has_shutdown: AtomicBool,
        /// Each VM's NICs' port groups (for switch counters).
        nic_groups: Mutex<HashMap<u32, Vec<String>>>,
        /// This many destroy calls fail with EBUSY first (vCPUs still stopping).
        pub busy_destroys: std::sync::atomic::AtomicU32,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    impl FakeVmKernel {
        fn with(&self, id: u32, f: impl FnOnce(&mut KernelVm) -> io::Result<()>) -> io::Result<()> {
            let mut vms = lock(&self.vms);
            let vm = vms.iter_mut().find(|v| v.id == id).ok_or_else(|| io::Error::from_raw_os_error(2))?;
            f(vm)
        }
        fn log(&self, s: String) {
            lock(&self.calls).push(s);
        }
        /// As if the guest ran for a while.
        pub fn guest_runs(&self, name: &str, ns: u64, exits: u64) {
            for v in lock(&self.vms).iter_mut().filter(|v| v.name == name) {
                v.run_ns += ns;
                v.exits += exits;
            }
        }
        /// As if the guest halted by itself.
        pub fn guest_stops(&self, name: &str) {
            for v in lock(&self.vms).iter_mut().filter(|v| v.name == name) {
                v.state = KernelState::Stopped;
                v.exit_reason = Some("halted".into());
            }
        }
    }

    impl VmKernel for FakeVmKernel {
        fn version(&self) -> io::Result<u32> {
            Ok(1)
        }
        fn list(&self) -> io::Result<Vec<KernelVm>> {
            let mut vms = lock(&self.vms);
            if self.ticking.load(Ordering::Relaxed) {
                for v in vms.iter_mut().filter(|v| v.state == KernelState::Running) {
                    v.run_ns += 3_000_000 + (v.run_ns / 7) % 5_000_000;
                    v.exits += 200 + v.exits % 300;
                }
            }
            Ok(vms.clone())
        }
        fn create(&self, text: &str) -> io::Result<u32> {
            let c = mantle_abi::VmConfig::parse(text).map_err(|_| io::Error::from_raw_os_error(22))?;
            let mut vms = lock(&self.vms);
            if vms.iter().any(|v| v.name == c.name) {
                return Err(io::Error::from_raw_os_error(17));
            }
            let mut n = lock(&self.next_id);
            *n += 1;
            let id = *n;
            vms.push(KernelVm {
                id,
                name: c.name.clone(),
                state: KernelState::Off,
                exit_reason: None,
                exit_code: 0,
                exits: 0,
                run_ns: 0,
                memory_mib: c.memory_mib as u64,
                vcpus: c.vcpus,
                group: 100 + id,
            });
            drop(vms);
            lock(&self.nic_groups).insert(id, c.nics.iter().map(|n| n.network.clone()).collect());
            self.log(format!("create {}", c.name));
            Ok(id)
        }
        fn start(&self, id: u32) -> io::Result<()> {
            self.log(format!("start {id}"));
            let mut name = String::new();
            self.with(id, |v| {
                v.state = KernelState::Running;
                name = v.name.clone();
                Ok(())
            })?;
            let banner = format!("fake guest {name}: booted\r\n$ ");
            lock(&self.consoles).entry(id).or_default().0.extend_from_slice(banner.as_bytes());
            Ok(())
        }
        fn stop(&self, id: u32) -> io::Result<()> {
            self.log(format!("stop {id}"));
            self.with(id, |v| {
                v.state = KernelState::Stopped;
                v.exit_reason = Some("power-off".into());
                Ok(())
            })
        }
        fn reset(&self, id: u32) -> io::Result<()> {
            self.log(format!("reset {id}"));
            self.with(id, |v| {
                v.state = KernelState::Running;
                Ok(())
            })
        }
        fn pause(&self, id: u32) -> io::Result<()> {
            self.log(format!("pause {id}"));
            self.with(id, |v| {
                v.state = KernelState::Paused;
                Ok(())
            })
        }
        fn resume(&self, id: u32) -> io::Result<()> {
            self.log(format!("resume {id}"));
            self.with(id, |v| {
                v.state = KernelState::Running;
                Ok(())
            })
        }
        fn destroy(&self, id: u32) -> io::Result<()> {
            self.log(format!("destroy {id}"));
            if self.busy_destroys.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                return Err(io::Error::from_raw_os_error(16));
            }
            let mut vms = lock(&self.vms);
            let n = vms.len();
            vms.retain(|v| v.id != id);
            lock(&self.consoles).remove(&id);
            if vms.len() == n { Err(io::Error::from_raw_os_error(2)) } else { Ok(()) }
        }
        fn set_resources(&self, group: u32, r: Resources) -> io::Result<()> {
            lock(&self.resources).push((group, r));
            Ok(())
        }
        fn stats(&self, id: u32, vcpus: u32) -> io::Result<KernelVmStats> {
            let vms = lock(&self.vms);
            let v = vms.iter().find(|v| v.id == id).ok_or_else(|| io::Error::from_raw_os_error(2))?;
            Ok(KernelVmStats {
                exits_by_kind: vec![("io".into(), v.exits), ("hlt".into(), 0)],
                vcpu_run_ns: vec![v.run_ns / vcpus.max(1) as u64; vcpus as usize],
                guest_memory_bytes: v.memory_mib << 20,
                overhead_bytes: 12 << 10,
                // The switch's listing as the kernel writes it, traffic growing with the exits.
                nics: {
                    let groups = lock(&self.nic_groups).get(&id).cloned().unwrap_or_default();
                    let e = v.exits;
                    let text: String = groups
                        .iter()
                        .enumerate()
                        .map(|(j, g)| format!("port {} {}.nic{j} in {g:?}: rx {} frames {} bytes, tx {e} frames {} bytes, dropped 0\n", 10 + j, v.name, e / 2, e * 30, e * 60))
                        .collect();
                    parse_vswitch(&text, &v.name)
                },
                // Every slot, as the kernel reports them; disk0's I/O grows with the exits.
                disks: (0..mantle_abi::MAX_VM_DISKS)
                    .map(|i| {
                        let e = if i == 0 { v.exits } else { 0 };
                        DiskIo::from_counters(i, &mantle_abi::DiskCounters { reads: e, writes: e / 2, flushes: e / 8, bytes_read: e * 4096, bytes_written: e * 2048, errors: 0 })
                    })
                    .collect(),
            })
        }
        fn console_read(&self, id: u32, from: u64) -> io::Result<(Vec<u8>, u64)> {
            self.with(id, |_| Ok(()))?;
            let consoles = lock(&self.consoles);
            let out = consoles.get(&id).map(|c| c.0.as_slice()).unwrap_or_default();
            let end = out.len() as u64;
            let from = from.clamp(end.saturating_sub(CONSOLE_WINDOW), end);
            Ok((out[from as usize..].to_vec(), end))
        }
        fn console_write(&self, id: u32, data: &[u8]) -> io::Result<usize> {
            self.with(id, |v| if v.state == KernelState::Running { Ok(()) } else { Err(io::Error::from_raw_os_error(22)) })?;
            let mut consoles = lock(&self.consoles);
            let (out, line) = consoles.entry(id).or_default();
            for &b in data {
                match b {
                    b'\r' | b'\n' => {
                        let typed = String::from_utf8_lossy(line).into_owned();
                        line.clear();
                        out.extend_from_slice(format!("\r\nyou typed: {typed}\r\n$ ").as_bytes());
                    }
                    0x7f | 0x08 => {
                        if line.pop().is_some() {
                            out.extend_from_slice(b"\x08 \x08");
                        }
                    }
                    b => {
                        line.push(b);
                        out.push(b);
                    }
                }
            }
            Ok(data.len())
        }
        fn shutdown(&self, id: u32) -> io::Result<()> {
            self.log(format!("shutdown {id}"));
            if !self.has_shutdown.load(Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(ENOSYS));
            }
            self.with(id, |v| {
                v.state = KernelState::Stopped;
                v.exit_reason = Some("power-off".into());
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vswitch_ports_of_one_vm_as_the_guest_sees_them() {
        let text = "switch vSwitch0\nportgroup \"VM Network\" vlan 0\n\
            port 1 uplink: rx 5 frames 300 bytes, tx 6 frames 400 bytes, dropped 0\n\
            port 2 web01.nic1 in \"Back \\\"end\\\"\": rx 1 frames 60 bytes, tx 2 frames 120 bytes, dropped 3\n\
            port 3 web01.nic0 in \"VM Network\": rx 10 frames 600 bytes, tx 20 frames 1200 bytes, dropped 0\n\
            port 4 web01.x.nic0 in \"VM Network\": rx 7 frames 7 bytes, tx 7 frames 7 bytes, dropped 7\n\
            port 5 web0.nic0 in \"VM Network\": rx 7 frames 7 bytes, tx 7 frames 7 bytes, dropped 7\n\
            port 6 web01.nic2 in \"VM Network\": garbage\n";
        let nics = parse_vswitch(text, "web01");
        assert_eq!(
            nics,
            [
                NicCounters { nic: "nic0".into(), port_group: "VM Network".into(), rx_frames: 20, rx_bytes: 1200, tx_frames: 10, tx_bytes: 600, dropped: 0 },
                NicCounters { nic: "nic1".into(), port_group: "Back \"end\"".into(), rx_frames: 2, rx_bytes: 120, tx_frames: 1, tx_bytes: 60, dropped: 3 },
            ]
        );
        assert_eq!(parse_vswitch(text, "web01.x").len(), 1);
        assert!(parse_vswitch(text, "nobody").is_empty());
    }
}
