//! Stock Linux guests in Mantle VMs (QEMU's SVM with nested paging):
//! Debian's cloud kernel (fetched at build time, see
//! `image_builder::linux_guest`) and a BusyBox initramfs, booted through
//! the Linux boot protocol with the VM's ACPI tables and kvmclock, with no
//! timing or ACPI-off hints on their command lines.
//!
//! One Mantle boot carries every check, since each Linux boot under
//! TCG-in-TCG costs minutes: two VMs defined by `.vmx` files on the FAT
//! datastore `datastore1` (ESXi's `<datastore>/<vm>/<vm>.vmx` layout), both
//! with a virtio-net NIC on the port group "VM Network". `debian` is the
//! demo VM `image-builder run` puts on its datastore (2 vCPUs; the kernel,
//! the initramfs and a raw ext2 disk made by `mke2fs` in its directory, all
//! loaded from the datastore); `peer` boots the same kernel with 4 vCPUs. At the guests' shells (through
//! `vmkcli vm console --follow`) the test reads the guests' logs, times
//! `sleep 10` against the host's clock, pings and moves 16 MiB over TCP
//! (BusyBox `nc`) from one VM to the other with matching MD5 sums, fetches
//! a file with `wget` from this test's HTTP server on the host through
//! vSwitch0's uplink (the host's NIC on QEMU's user network), checks that a
//! third VM on VLAN 30 (port group "Isolated") reaches neither VM until its
//! port group is moved to VLAN 0, has the 4-vCPU peer run four busy loops
//! and reads Mantle's per-vCPU run time over 10 s (≥ 3 host CPUs' worth;
//! Mantle boots with 5 CPUs, as vCPUs never run on CPU 0 under QEMU TCG),
//! mounts
//! `/dev/vda`, writes a file, powers off from inside, finds the file after
//! the next power-on, reboots the guest and shuts it down with the ACPI
//! power button. After Mantle powers off, the host copies the disk image
//! back off the datastore: `e2fsck` finds it clean and `debugfs` reads the
//! guest's file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use image_builder::linux_guest::{self, LinuxVm, SHELL_MARKER};
use image_builder::qemu::{Console, Nic, NicModel};
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(90);
/// Guest boot under TCG-in-TCG on a loaded 2-core machine.
const GUEST_BOOT: Duration = Duration::from_secs(400);
/// 16 MiB between two guests through the virtual switch, under TCG-in-TCG.
const TRANSFER: Duration = Duration::from_secs(400);
const DATASTORE: &str = "/vmfs/volumes/datastore1";
/// What the host put on the guest's disk, and what the guest writes there.
const HOST_TEXT: &str = "written-on-the-host";
const GUEST_TEXT: &str = "written-by-the-guest";
/// `sleep 10` in the guest against the host's clock: ±2 %.
const SLEEP_TOLERANCE: f64 = 0.02;
/// The port group of the third VM: VLAN 30 on the same vSwitch.
const ISOLATED_GROUP: &str = "Isolated";

/// What the test's HTTP server on the host serves to a guest behind the
/// uplink: numbered lines, ~90 KB (several TCP windows).
fn uplink_file() -> Vec<u8> {
    (0..4000).map(|i| format!("mantle-uplink-line-{i}\n")).collect::<String>().into_bytes()
}

/// An HTTP/1.0 server on 127.0.0.1 (QEMU's user network shows it to the
/// guests as 10.0.2.2) serving `uplink_file()` for every GET; its port.
fn serve_uplink_file() -> u16 {
    let http = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    let port = http.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let body = uplink_file();
        for mut s in http.incoming().flatten() {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n", body.len()).as_bytes());
            let _ = s.write_all(&body);
        }
    });
    port
}

/// The host's MD5 of `data` (coreutils `md5sum`).
fn host_md5(dir: &Path, data: &[u8]) -> String {
    let f = dir.join("uplink-file");
    std::fs::write(&f, data).unwrap();
    let out = Command::new("md5sum").arg(&f).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("md5sum output").to_string()
}

/// The guest kernel's last printk time stamp (`[   12.345678]`) in `text`:
/// seconds since its kernel started, to tell a boot's kernel time from
/// what came before it (loading, firmware, the previous boot's shutdown).
fn last_kernel_stamp(text: &str) -> Option<f64> {
    text.lines().rev().find_map(|l| l.trim_start().strip_prefix('[')?.split_once(']')?.0.trim().parse().ok())
}

fn fail(c: &Console, what: &str) -> ! {
    panic!("{what}\n--- serial log ---\n{}", c.log())
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| fail(c, &format!("`{cmd}`: {e}")))
}

fn expect(c: &mut Console, pattern: &str, timeout: Duration) -> String {
    c.expect(pattern, timeout).unwrap_or_else(|e| fail(c, &format!("guest: {e}")))
}

/// Types a command at the guest's shell and returns its output up to a
/// marker the guest's shell computes (so the echo never matches). `n` must
/// be new for each call: re-attaching replays the guest's console.
fn guest_run_for(c: &mut Console, cmd: &str, n: u32, timeout: Duration) -> String {
    c.send(&format!("{cmd}; echo guest-done-$(({n}+1))\n")).unwrap_or_else(|e| fail(c, &e));
    let out = expect(c, &format!("guest-done-{}", n + 1), timeout);
    // Only what the command printed: drop the echo of the typed line.
    let echo_end = format!("$(({n}+1))");
    match out.rfind(&echo_end) {
        Some(i) => out[i + echo_end.len()..].to_string(),
        None => out,
    }
}

fn guest_run(c: &mut Console, cmd: &str, n: u32) -> String {
    guest_run_for(c, cmd, n, STEP)
}

/// Leaves `vmkcli vm console --follow` (Ctrl-]) and waits for the host's prompt.
fn detach(c: &mut Console) {
    c.send("\x1d").unwrap_or_else(|e| fail(c, &e));
    expect(c, "[detached]", STEP);
    expect(c, PROMPT, STEP);
}

/// The MD5 sum on the line of `md5sum` output naming `file`.
fn md5_of(out: &str, file: &str) -> Option<String> {
    out.lines()
        .filter(|l| l.trim_end().ends_with(file))
        .filter_map(|l| l.split_whitespace().next())
        .find(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

fn host_tool(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).current_dir(dir).args(args).output().unwrap_or_else(|e| panic!("{program} (e2fsprogs): {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Seconds of Mantle's clock over which the peer's busy vCPUs are measured.
const BUSY_INTERVAL_SECS: u32 = 10;
/// Host CPUs' worth of run time the peer's four busy processes must get.
const BUSY_HOST_CPUS: f64 = 3.0;

/// The per-vCPU run times (seconds) on each `run time by vCPU:` line of
/// `vmkcli vm info` output, in order.
fn vcpu_run_times(out: &str) -> Vec<Vec<f64>> {
    out.lines()
        .filter_map(|l| l.split_once("run time by vCPU:"))
        .map(|(_, r)| r.split(',').filter_map(|v| v.split_whitespace().nth(1)?.parse().ok()).collect())
        .collect()
}

/// The first figure of each `/proc/uptime` line (`12345.67 890.12`).
fn uptimes(out: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (a, b) = (w.next()?, w.next()?);
            (w.next().is_none() && b.parse::<f64>().is_ok()).then(|| a.parse().ok())?
        })
        .collect()
}

/// Busy and total jiffies of a `/proc/stat` `cpu ` line (busy: user, nice,
/// system, irq, softirq; total adds idle, iowait and steal).
fn stat_jiffies(line: &str) -> Option<(u64, u64)> {
    let f: Vec<u64> = line.strip_prefix("cpu ")?.split_whitespace().take(8).map(|n| n.parse().ok()).collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = f[..] else { return None };
    Some((user + nice + system + irq + softirq, user + nice + system + idle + iowait + irq + softirq + steal))
}

/// SMP at work: the 4-vCPU peer (at its shell, on a Mantle with four CPUs for guests, the
/// other VMs idle or off) runs four busy loops; Mantle's scheduler, which
/// accounts each vCPU world's run time in its own clock, must have given
/// them together at least [`BUSY_HOST_CPUS`] times the interval, and the
/// guest's `/proc/stat` must show its four CPUs busy (≥ 3/4 of their time).
fn busy_peer(c: &mut Console) {
    let out = guest_run(c, "for i in 1 2 3 4; do (while :; do :; done) & done; echo nproc=$(nproc) cpuinfo=$(grep -c ^processor /proc/cpuinfo); head -n 1 /proc/stat > /tmp/stat0", 850);
    if !out.contains("nproc=4 cpuinfo=4") {
        fail(c, &format!("the peer's CPU count: {out:?}"));
    }
    detach(c);
    // Uptime read before the first figures and after the last: the
    // interval is, if anything, too long.
    let out = run(c, &format!("cat /proc/uptime; vmkcli vm info 2; sleep {BUSY_INTERVAL_SECS}; vmkcli vm info 2; cat /proc/uptime"));
    let (runs, ups) = (vcpu_run_times(&out), uptimes(&out));
    let ([before, after], [u0, .., u1]) = (&runs[..], &ups[..]) else { fail(c, &format!("vCPU run times and uptimes: {out:?}")) };
    if before.len() != 4 || after.len() != 4 {
        fail(c, &format!("the peer's vCPUs: {out:?}"));
    }
    let per_vcpu: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let (used, interval) = (per_vcpu.iter().sum::<f64>(), u1 - u0);
    eprintln!("4 busy processes in the 4-vCPU peer: {used:.2} s of vCPU run time in {interval:.2} s of Mantle's clock ({:.2} host CPUs; per vCPU {per_vcpu:.2?})", used / interval);
    if used < BUSY_HOST_CPUS * interval {
        fail(c, &format!("the peer's busy vCPUs got {used:.2} s in {interval:.2} s, under {BUSY_HOST_CPUS} host CPUs: {out:?}"));
    }
    c.send("vmkcli vm console 2 --follow\n").unwrap_or_else(|e| fail(c, &e));
    let out = guest_run(c, "head -n 1 /proc/stat > /tmp/stat1; cat /tmp/stat0 /tmp/stat1", 860);
    let stats: Vec<(u64, u64)> = out.lines().filter_map(stat_jiffies).collect();
    let [.., (busy0, total0), (busy1, total1)] = stats[..] else { fail(c, &format!("the peer's /proc/stat: {out:?}")) };
    let busy = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    eprintln!("the peer's /proc/stat meanwhile: its CPUs {:.0} % busy", busy * 100.0);
    if busy < 0.75 {
        fail(c, &format!("the guest saw its 4 CPUs {:.0} % busy: {out:?}", busy * 100.0));
    }
}

/// The figures `busy_peer` reads, as `vmkcli vm info`, Mantle's
/// `/proc/uptime` and the guest's `/proc/stat` print them.
#[test]
fn busy_figures_parse() {
    let out = "1234.56 4000.00\nVM 2 (peer): running\n  run time by vCPU: vcpu0 1.500 s, vcpu1 2.000 s, vcpu2 0.250 s, vcpu3 3.000 s\n  run time by vCPU: vcpu0 11.500 s, vcpu1 12.000 s, vcpu2 10.250 s, vcpu3 13.000 s\n1244.60 4001.00";
    assert_eq!(vcpu_run_times(out), vec![vec![1.5, 2.0, 0.25, 3.0], vec![11.5, 12.0, 10.25, 13.0]]);
    assert_eq!(uptimes(out), vec![1234.56, 1244.60]);
    assert_eq!(stat_jiffies("cpu  100 2 30 400 5 6 7 8 0 0"), Some((145, 558)));
    assert_eq!(stat_jiffies("cpu0 100 2 30 400 5 6 7 8 0 0"), None);
    assert_eq!(last_kernel_stamp("[    1.250000] a\n[   12.500000] virtio_blk\nmantle-linux: shell ready"), Some(12.5));
}

#[test]
fn debian_guests_on_a_datastore_disk_and_a_port_group() {
    let guest = linux_guest::prepare().unwrap_or_else(|e| panic!("preparing the Linux guest: {e}"));
    let iso = iso("linux-guest", NO_AGENTS, &[]);

    // The datastore: `image-builder run`'s demo VM `debian` (its kernel,
    // initramfs and ext2 disk in its directory; here the disk holds a file
    // from the host) and a second VM booting the same kernel.
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("datastore1.img");
    image_builder::datastore::create(&ds, 512 << 20, "datastore1").expect("image-builder datastore new");
    let contents = dir.path().join("contents");
    std::fs::create_dir(&contents).unwrap();
    std::fs::write(contents.join("from-host.txt"), format!("{HOST_TEXT}\n")).unwrap();
    assert!(linux_guest::put_demo_vm(&ds, "datastore1", &guest, 16, Some(&contents)).expect("the demo VM"));
    let demo = linux_guest::demo_vm("datastore1");
    assert_eq!(demo.name, "debian");
    let peer = LinuxVm { name: "peer".into(), memory_mib: 128, vcpus: 4, disk: None, ..demo };
    let d = dir.path().join("peer");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("peer.vmx"), linux_guest::vmx(&peer)).unwrap();
    image_builder::datastore::put(&ds, &d, "/peer").expect("datastore put");
    // A third VM on another VLAN of the same vSwitch (1 vCPU).
    let isolated = LinuxVm { name: "isolated".into(), memory_mib: 128, vcpus: 1, disk: None, network: Some(ISOLATED_GROUP.into()), ..peer.clone() };
    let d = dir.path().join("isolated");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("isolated.vmx"), linux_guest::vmx(&isolated)).unwrap();
    image_builder::datastore::put(&ds, &d, "/isolated").expect("datastore put");
    let http_port = serve_uplink_file();
    let uplink_md5 = host_md5(dir.path(), &uplink_file());

    let _lock = emulator_lock();
    let mut q = qemu_iso(iso);
    // Four host CPUs for guests, so the 4-vCPU peer can use four at once:
    // under QEMU TCG vCPUs never run on CPU 0 (`hv::guest_cpus`: QEMU's
    // x87 restores race with CPU 0's SVM state), so Mantle gets five.
    q.cpus = 5;
    q.cpu = "qemu64,+svm,+npt".into();
    q.debug_exit = false;
    q.timeout = GUEST_BOOT * 5;
    // vSwitch0's uplink: the host's NIC on QEMU's user network (no forwards).
    q.nics = vec![Nic { model: NicModel::VirtioNet, forwards: Vec::new() }];
    q.extra.extend(["-drive".into(), format!("file={},format=raw,if=none,id=ds0,cache=writeback", ds.display()), "-device".into(), "virtio-blk-pci,drive=ds0".into()]);
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);

    let out = run(&mut c, &format!("vmkcli portgroup add {ISOLATED_GROUP} --vlan 30"));
    if !out.contains("added (VLAN 30)") {
        fail(&c, &format!("portgroup add: {out:?}"));
    }
    for (name, id) in [("debian", 1), ("peer", 2), ("isolated", 3)] {
        let out = run(&mut c, &format!("vmkcli vm create --config {DATASTORE}/{name}/{name}.vmx"));
        if !out.contains(&format!("created VM {id}")) {
            fail(&c, &format!("create {name}: {out:?}"));
        }
    }
    // All three power on at once; the peer's console first.
    let t0 = Instant::now();
    c.send("vmkcli vm start 2 && vmkcli vm start 1 && vmkcli vm start 3 && vmkcli vm console 2 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let peer_log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("4-vCPU Linux guest: power-on to shell marker in {:.1} s", t0.elapsed().as_secs_f64());
    // The cloud kernel finds its CPUs only in the MADT (no MP table
    // support) and starts them with INIT/SIPI.
    if !peer_log.contains("cpus 4") || !peer_log.contains("smp: Brought up 1 node, 4 CPUs") {
        fail(&c, "the peer does not run on 4 CPUs");
    }
    for bad in ["Kernel panic", "unstable", "ACPI Error", "failed to come online"] {
        if peer_log.contains(bad) {
            fail(&c, &format!("peer's log has {bad:?}"));
        }
    }
    expect(&mut c, PROMPT, STEP);
    // The receiver: the MD5 sum of what arrives on TCP port 5001 (`sleep`
    // keeps nc's input open: at EOF there it would end the connection).
    let out = guest_run(&mut c, "ip addr add 10.20.0.2/24 dev eth0 && ip link set eth0 up && echo peer-up; (sleep 3000 | nc -l -p 5001 | md5sum > /tmp/rx.md5 &)", 100);
    if !out.contains("peer-up") {
        fail(&c, &format!("peer's eth0: {out:?}"));
    }
    detach(&mut c);

    c.send("vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let boot_log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("Linux guest: power-on to shell marker in {:.1} s", t0.elapsed().as_secs_f64());
    expect(&mut c, PROMPT, STEP);
    for bad in ["Kernel panic", "unstable", "Marking clocksource", "ACPI Error", "ACPI BIOS Error", "unchecked MSR access"] {
        if boot_log.contains(bad) {
            fail(&c, &format!("guest log has {bad:?}"));
        }
    }
    // kvm-clock, or the TSC (preferred by Linux once the TSC is invariant,
    // with its frequency from kvmclock and kvm-clock as its watchdog).
    if !boot_log.contains("mantle-linux: clocksource kvm-clock") && !boot_log.contains("mantle-linux: clocksource tsc") {
        fail(&c, "the guest chose neither kvm-clock nor tsc");
    }
    // The kernel's own account: kvmclock found, no calibration fallback,
    // no watchdog complaint; the command line had no hints.
    let dmesg = guest_run(&mut c, "dmesg | grep -i -E 'kvm-clock|clocksource|tsc|unstable|Power Button|Command line|virtio_blk|vda' | head -40", 200);
    for want in ["kvm-clock: using sched offset", "Switched to clocksource", "ACPI: button: Power Button", "[vda]"] {
        if !dmesg.contains(want) {
            fail(&c, &format!("guest dmesg lacks {want:?}: {dmesg}"));
        }
    }
    for bad in ["unstable", "tsc_early_khz", "acpi=off", "TSC calibration failed"] {
        if dmesg.contains(bad) {
            fail(&c, &format!("guest dmesg has {bad:?}: {dmesg}"));
        }
    }
    // Guest wall clock = host wall clock (kvmclock's wall clock / the CMOS
    // RTC): the guest's `date +%s` is within a few seconds of the host's
    // (QEMU's RTC follows the host clock; Mantle's real time comes from it).
    let out = guest_run(&mut c, "echo guest-epoch=$(date +%s)", 300);
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let guest_now: i64 = out
        .split("guest-epoch=")
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .last()
        .unwrap_or_else(|| fail(&c, &format!("no guest time in {out:?}")));
    if (guest_now - host_now).abs() > 30 {
        fail(&c, &format!("guest time {guest_now} vs host {host_now}"));
    }

    // `sleep 10` takes 10 s of the host's time. The markers take the same
    // path to this test (guest UART, the VM's console, vmkcli's follow —
    // which polls an idle console every 20 ms — Mantle's UART), so its
    // delays cancel but for their jitter. Starting the `sleep` process
    // costs the guest ~0.1 s under TCG-in-TCG, which is not its clock's
    // doing: `sleep 0` between the first two markers measures that cost,
    // and it is taken off.
    c.send("sleep 1; echo sleep-mark-$((400+1)); sleep 0; echo sleep-mark-$((400+2)); sleep 10; echo sleep-mark-$((400+3))\n")
        .unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "sleep-mark-401", STEP);
    let t_start = Instant::now();
    expect(&mut c, "sleep-mark-402", STEP);
    let t_zero = Instant::now();
    expect(&mut c, "sleep-mark-403", STEP);
    let t_ten = Instant::now();
    let launch = (t_zero - t_start).as_secs_f64();
    let slept = (t_ten - t_zero).as_secs_f64() - launch;
    eprintln!("Linux guest: `sleep 10` took {:.3} s of host time, {slept:.3} s without the {launch:.3} s `sleep 0` takes", slept + launch);
    if (slept - 10.0).abs() > 10.0 * SLEEP_TOLERANCE {
        fail(&c, &format!("`sleep 10` took {:.3} s of host time ({launch:.3} s for `sleep 0`)", slept + launch));
    }
    expect(&mut c, PROMPT, STEP);

    // The two VMs on "VM Network": ping, then 16 MiB over TCP.
    let out = guest_run(&mut c, "ip addr add 10.20.0.1/24 dev eth0 && ip link set eth0 up && ping -c 3 -W 10 10.20.0.2", 500);
    if !out.contains("3 packets received") {
        fail(&c, &format!("ping from debian to peer: {out:?}"));
    }
    let out = guest_run(&mut c, "dd if=/dev/urandom of=/tmp/tx bs=64k count=256 2>/dev/null; md5sum /tmp/tx", 600);
    let sent = md5_of(&out, "/tmp/tx").unwrap_or_else(|| fail(&c, &format!("md5sum of the data: {out:?}")));
    // What the VMs cost during the transfer: exits by reason and vCPU run
    // time before and after it (printed), the sender's interrupts and TCP
    // counters.
    detach(&mut c);
    let vms_before = run(&mut c, "vmkcli vm info 1; vmkcli vm info 2");
    c.send("vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let before = guest_run(&mut c, "grep -E 'virtio|Tcp:' /proc/interrupts /proc/net/snmp", 650);
    let t1 = Instant::now();
    let out = guest_run_for(&mut c, "nc 10.20.0.2 5001 < /tmp/tx; echo nc-rc=$?", 700, TRANSFER);
    let secs = t1.elapsed().as_secs_f64();
    eprintln!("16 MiB over TCP between two Linux guests: {secs:.1} s ({:.2} MB/s)", 16.777216 / secs);
    if !out.contains("nc-rc=0") {
        fail(&c, &format!("nc: {out:?}"));
    }
    let after = guest_run(&mut c, "grep -E 'virtio|Tcp:' /proc/interrupts /proc/net/snmp", 710);
    // (The replayed console precedes the output: keep the counters' lines.)
    let counters = |out: &str| out.lines().filter(|l| l.starts_with("/proc/")).collect::<Vec<_>>().join("\n");
    eprintln!("the sender's interrupts and TCP counters before the transfer:\n{}\nafter:\n{}", counters(&before), counters(&after));

    // vSwitch0's uplink: the guest on "VM Network" (VLAN 0, as the uplink
    // is untagged) takes an address on QEMU's user network and fetches a
    // file from this test's HTTP server (10.0.2.2 is the host's loopback).
    let out = guest_run(
        &mut c,
        &format!("ip addr add 10.0.2.20/24 dev eth0 && wget -q -O /tmp/up http://10.0.2.2:{http_port}/mantle.txt && echo wget-ok && md5sum /tmp/up && tail -n 1 /tmp/up"),
        720,
    );
    if !out.contains("wget-ok") || md5_of(&out, "/tmp/up").as_deref() != Some(uplink_md5.as_str()) || !out.contains("mantle-uplink-line-3999") {
        fail(&c, &format!("wget through the uplink (host's MD5 {uplink_md5}): {out:?}"));
    }
    detach(&mut c);
    let out = run(&mut c, "vmkcli vm info 1; vmkcli vm info 2; vmkcli vswitch list");
    eprintln!("before the transfer:\n{vms_before}\nafter the transfer:\n{out}");

    // VLAN isolation: the third VM, on VLAN 30, reaches neither; once its
    // port group is moved to VLAN 0 it reaches both.
    c.send("vmkcli vm console 3 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let isolated_log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    if isolated_log.contains("Kernel panic") {
        fail(&c, "the isolated VM's kernel panicked");
    }
    expect(&mut c, PROMPT, STEP);
    let out = guest_run(&mut c, "ip addr add 10.20.0.3/24 dev eth0 && ip link set eth0 up && ping -c 2 -w 4 10.20.0.1; ping -c 2 -w 4 10.20.0.2", 1100);
    if out.matches(" 0 packets received").count() != 2 {
        fail(&c, &format!("a VM on VLAN 30 reached the VMs on VLAN 0: {out:?}"));
    }
    detach(&mut c);
    let out = run(&mut c, &format!("vmkcli portgroup set {ISOLATED_GROUP} --vlan 0"));
    if !out.contains("on VLAN 0") {
        fail(&c, &format!("portgroup set: {out:?}"));
    }
    c.send("vmkcli vm console 3 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let out = guest_run(&mut c, "ping -c 2 -W 10 10.20.0.1; ping -c 2 -W 10 10.20.0.2", 1200);
    if out.matches(" 2 packets received").count() != 2 {
        fail(&c, &format!("on VLAN 0 the third VM reaches both: {out:?}"));
    }
    c.send("poweroff -f\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);
    c.send("vmkcli vm console 2 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let out = guest_run(&mut c, "cat /tmp/rx.md5", 800);
    let received = md5_of(&out, "-").unwrap_or_else(|| fail(&c, &format!("the peer's sum: {out:?}")));
    if received != sent {
        fail(&c, &format!("sent {sent}, the peer received {received}"));
    }
    busy_peer(&mut c);
    c.send("poweroff -f\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);

    // The virtio disk on the datastore: mount it, read the host's file,
    // write one, power off from inside.
    c.send("vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let out = guest_run(
        &mut c,
        &format!("mkdir -p /mnt && mount -t ext2 /dev/vda /mnt && cat /mnt/from-host.txt && echo {GUEST_TEXT} > /mnt/guest.txt && umount /mnt && echo disk-written"),
        900,
    );
    if !out.contains(HOST_TEXT) || !out.contains("disk-written") {
        fail(&c, &format!("the guest's disk: {out:?}"));
    }
    // `poweroff -f` (ACPI S5) powers the VM off: the console follow ends
    // (it detaches when the VM stops), and the VM stays stopped.
    c.send("poweroff -f\n").unwrap_or_else(|e| fail(&c, &e));
    expect(&mut c, "[detached]", STEP);
    expect(&mut c, PROMPT, STEP);
    let out = run(&mut c, "vmkcli vm info 1");
    if !out.contains("powered off") {
        fail(&c, &format!("after poweroff: {out:?}"));
    }

    // The next power-on finds the file.
    let t2 = Instant::now();
    c.send("vmkcli vm start 1 && vmkcli vm console 1 --follow\n").unwrap_or_else(|e| fail(&c, &e));
    let log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("Linux guest alone: power-on to shell marker in {:.1} s (its kernel's last time stamp {:?} s)", t2.elapsed().as_secs_f64(), last_kernel_stamp(&log));
    expect(&mut c, PROMPT, STEP);
    let out = guest_run(&mut c, "mkdir -p /mnt && mount -t ext2 -o ro /dev/vda /mnt && cat /mnt/guest.txt; umount /mnt", 1000);
    if !out.contains(GUEST_TEXT) {
        fail(&c, &format!("after power-on the guest's file: {out:?}"));
    }

    // `reboot -f` resets the VM: the same guest boots again.
    c.send("reboot -f\n").unwrap_or_else(|e| fail(&c, &e));
    let t3 = Instant::now();
    let log = expect(&mut c, SHELL_MARKER, GUEST_BOOT);
    eprintln!("Linux guest: reboot to shell marker in {:.1} s (its kernel's last time stamp {:?} s)", t3.elapsed().as_secs_f64(), last_kernel_stamp(&log));
    expect(&mut c, PROMPT, STEP);
    detach(&mut c);
    if !c.log().contains("reset by the guest") {
        fail(&c, "no guest reset in the host log");
    }
    // `vmkcli vm shutdown` presses the ACPI power button, and the guest
    // (its button watcher) powers off gracefully.
    let out = run(&mut c, "vmkcli vm shutdown 1 && vmkcli vm wait 1 --timeout 120; vmkcli vm info 1");
    if !out.contains("power button pressed") || !out.contains("powered off") {
        fail(&c, &format!("shutdown: {out:?}"));
    }
    // The guest's console (kept while the VM is off) shows its watcher.
    let out = run(&mut c, "vmkcli vm console 1 | grep -c 'mantle-linux: power button'");
    if !out.lines().any(|l| l.trim() == "1") {
        fail(&c, &format!("the guest did not see the power button: {out:?}"));
    }
    let _ = c.send("poweroff -f\n");
    if c.wait_exit(Duration::from_secs(120)).is_none() {
        fail(&c, "QEMU did not exit after poweroff");
    }
    drop(_lock);

    // The host's view of the disk: clean, with the guest's file.
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    image_builder::datastore::get(&ds, "/debian", &back).expect("datastore get");
    let back = back.join("debian");
    let (ok, report) = host_tool(&back, "e2fsck", &["-f", "-n", "debian.img"]);
    assert!(ok, "e2fsck on the guest's disk: {report}");
    let (ok, text) = host_tool(&back, "debugfs", &["-R", "cat /guest.txt", "debian.img"]);
    assert!(ok && text.contains(GUEST_TEXT), "debugfs cat /guest.txt: {text}");
}
