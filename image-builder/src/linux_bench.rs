//! `image-builder bench linux`: Debian's cloud kernel in a Mantle VM next
//! to the same kernel, initramfs and vCPU count booted directly by QEMU.
//!
//! Mantle boots (`-kernel`, 2 CPUs, 2 GiB) with `vmbench` as PID 1 in mode
//! `linux`, a datastore disk holding the guest's kernel, initramfs
//! ([`crate::linux_guest::prepare_bench`]) and a raw disk image; vmbench
//! creates the VMs and prints `vmbench: linux_*` figures. Then the same
//! guest boots directly in QEMU TCG (`-kernel` bzImage, the same
//! initramfs and command line plus [`DIRECT_HINTS`], the same raw disk
//! image behind virtio-blk-pci). Printed side by side:
//! * power-on to the shell marker (Mantle: from `vm start` to the marker on
//!   the VM's console, timed inside Mantle; QEMU: from spawning QEMU to
//!   the marker on serial, so QEMU's own start and SeaBIOS count against
//!   it) and the guest's own uptime at the marker, with their ratios;
//! * exits by kind up to the marker (Mantle);
//! * the guest's `dd` of [`BENCH_DD_MIB`] MiB to its virtio disk, timed by
//!   the guest's clock, and the ratio;
//! * host memory of a 1 GiB guest after boot and after it wrote
//!   [`BENCH_TOUCH_MIB`] MiB into a tmpfs (guest RAM is backed on first
//!   touch);
//! * VMs created and powered on per second (vmbench's `rate`).

use std::path::Path;
use std::time::Duration;

use vmkernel::cpio;

use crate::bench::{QEMU_COMMON, Running, work_dir};
use crate::linux_guest::{self, BENCH_DD_MIB, BENCH_TOUCH_MIB, LinuxVm, SHELL_MARKER};

/// The guest's kernel command line (besides `bench=`): `quiet`, as a
/// production guest boots; the serial console is the only device both sides
/// share for output.
pub const CMDLINE: &str = "console=ttyS0 quiet";
/// What the same kernel needs directly under QEMU TCG, which offers no
/// paravirtual clock (Mantle's guest boots without them): a TSC frequency
/// (calibration against the PIT fails on a loaded host) and no IO-APIC
/// timer check (under load it panics "IO-APIC + timer doesn't work"),
/// as `bench user` and `bench disk` boot it.
pub const DIRECT_HINTS: &str = "tsc_early_khz=2000000 no_timer_check";
/// RAM of the boot/dd guest.
const BOOT_MIB: u32 = 128;
/// RAM of the memory guest.
const MEM_MIB: u32 = 1024;
/// The guest's raw disk (`/dev/vda`).
const DISK_MIB: u64 = 64;

/// Boots with `args` until the last of `markers` is on serial; returns the
/// output and, per marker, the time from spawning QEMU to its first
/// appearance.
fn serial_markers(args: &[String], markers: &[&str], timeout: Duration) -> Result<(String, Vec<Duration>), String> {
    Running::spawn(args)?.until_each(markers, timeout)
}

/// The word after `key` in `text`.
fn word_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(key).nth(1)?.split_whitespace().next()
}

/// Median of `v` (NaN if empty).
fn med(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs the benchmark `runs` times (each: one Mantle boot, one direct
/// boot) with guests of `vcpus` vCPUs and prints medians.
pub fn bench_linux(kernel_elf: &Path, vmbench: &Path, runs: usize, vcpus: u32) -> Result<(), String> {
    let dir = work_dir().join("linux-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let guest = linux_guest::prepare_bench()?;

    // The datastore: /linuxbench/{vmlinuz, initrd.cpio, disk.img}.
    let stage = dir.join("linuxbench");
    std::fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
    std::fs::copy(&guest.kernel, stage.join("vmlinuz")).map_err(|e| e.to_string())?;
    std::fs::copy(&guest.initrd, stage.join("initrd.cpio")).map_err(|e| e.to_string())?;
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(DISK_MIB << 20)).map_err(|e| format!("{}: {e}", disk.display()))?;
    std::fs::copy(&disk, stage.join("disk.img")).map_err(|e| e.to_string())?;
    let ds = dir.join("datastore1.img");
    crate::datastore::create(&ds, 512 << 20, "datastore1")?;
    crate::datastore::put(&ds, &stage, "/linuxbench")?;

    let on_ds = "/vmfs/volumes/datastore1/linuxbench";
    let vm = |name: &str, memory_mib: u32, bench: &str, disk: bool| LinuxVm {
        name: name.into(),
        memory_mib,
        vcpus,
        kernel: format!("{on_ds}/vmlinuz"),
        initrd: format!("{on_ds}/initrd.cpio"),
        cmdline: format!("{CMDLINE} bench={bench}"),
        disk: disk.then(|| format!("{on_ds}/disk.img")),
        network: None,
    };
    let bin = std::fs::read(vmbench).map_err(|e| format!("{}: {e}", vmbench.display()))?;
    let idle = crate::guests::all().into_iter().find(|(n, _)| *n == "idle.bin").ok_or("no idle.bin guest")?.1;
    let mut w = cpio::Writer::new();
    w.add("init", cpio::S_IFREG | 0o755, 0, 0, 0, &bin);
    w.add("bench-mode", cpio::S_IFREG | 0o644, 0, 0, 0, b"linux");
    w.add("guests", cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    w.add("guests/idle.bin", cpio::S_IFREG | 0o644, 0, 0, 0, &idle);
    w.add("linux", cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    w.add("linux/boot.vmx", cpio::S_IFREG | 0o644, 0, 0, 0, linux_guest::vmx(&vm("lxboot", BOOT_MIB, "dd", true)).as_bytes());
    w.add("linux/mem.vmx", cpio::S_IFREG | 0o644, 0, 0, 0, linux_guest::vmx(&vm("lxmem", MEM_MIB, "touch", false)).as_bytes());
    let mantle_rd = dir.join("vmbench-linux.cpio");
    std::fs::write(&mantle_rd, w.finish()).map_err(|e| e.to_string())?;

    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut mantle_args = s(&["-kernel", &kernel_elf.display().to_string(), "-initrd", &mantle_rd.display().to_string(), "-append", "init=/init"]);
    // Later -m/-smp override QEMU_COMMON's: the vCPUs run on CPU 1 (QEMU
    // TCG keeps them off CPU 0, see `hv::guest_cpus`), vmbench on CPU 0.
    mantle_args.extend(s(&["-m", "2048", "-smp", "2", "-drive", &format!("file={},format=raw,if=none,id=ds0,cache=writeback", ds.display()), "-device", "virtio-blk-pci,drive=ds0"]));
    let direct_args = s(&[
        "-kernel",
        &guest.kernel.display().to_string(),
        "-initrd",
        &guest.initrd.display().to_string(),
        "-append",
        &format!("{CMDLINE} {DIRECT_HINTS} bench=dd"),
        "-m",
        &BOOT_MIB.to_string(),
        "-smp",
        &vcpus.to_string(),
        "-drive",
        &format!("file={},format=raw,if=none,id=d0,cache=writeback", disk.display()),
        "-device",
        "virtio-blk-pci,drive=d0",
    ]);

    let mut figures: Vec<(String, Vec<f64>, String)> = Vec::new();
    let mut record = |name: &str, v: f64, unit: &str| match figures.iter_mut().find(|f| f.0 == name) {
        Some(f) => f.1.push(v),
        None => figures.push((name.into(), vec![v], unit.into())),
    };
    for run in 0..runs.max(1) {
        println!("run {}/{}", run + 1, runs.max(1));
        let (out, _) = serial_markers(&mantle_args, &["vmbench: done"], Duration::from_secs(3600))?;
        for l in out.lines().filter(|l| l.contains("failed") || l.contains("dd said")) {
            println!("  Mantle: {}", l.trim());
        }
        for (name, v, unit) in crate::bench::parse_vmbench(&out) {
            println!("  Mantle: {name} {v} {unit}");
            record(&name, v, &unit);
        }
        let (out, t) = serial_markers(&direct_args, &[SHELL_MARKER, "linuxbench: dd-done"], Duration::from_secs(900))?;
        println!("  QEMU directly: power-on to the shell marker {:.3} s", t[0].as_secs_f64());
        record("direct_boot", t[0].as_secs_f64(), "s");
        for (key, name, unit) in [("linuxbench: uptime ", "direct_uptime", "s"), ("linuxbench: dd_bytes ", "direct_dd_bytes", "bytes"), ("linuxbench: dd_ns ", "direct_dd_ns", "ns")] {
            if let Some(v) = word_after(&out, key).and_then(|w| w.parse::<f64>().ok()) {
                println!("  QEMU directly: {name} {v} {unit}");
                record(name, v, unit);
            }
        }
        for l in out.lines().filter(|l| l.contains("copied")) {
            println!("  QEMU directly: dd said: {}", l.trim());
        }
    }
    let get = |n: &str| figures.iter().find(|f| f.0 == n).map(|f| med(&f.1)).unwrap_or(f64::NAN);
    let n = runs.max(1);
    println!();
    println!("Linux guest benchmarks (medians of {n} run(s); QEMU TCG {}; guest: Debian's cloud kernel, {vcpus} vCPU(s), `{CMDLINE}`, directly in QEMU with `{DIRECT_HINTS}`)", QEMU_COMMON[3]);
    let (mb, db) = (get("linux_boot"), get("direct_boot"));
    println!("power-on to shell marker: {mb:.2} s in Mantle, {db:.2} s directly in QEMU: ratio {:.2} (target <= 1.5)", mb / db);
    let (mu, du) = (get("linux_boot_uptime"), get("direct_uptime"));
    println!("  the guest's uptime at the marker: {mu:.2} s in Mantle, {du:.2} s directly: ratio {:.2}", mu / du);
    let kinds: Vec<String> = figures
        .iter()
        .filter_map(|f| f.0.strip_prefix("linux_boot_exits_").map(|k| (k, med(&f.1))))
        .filter(|(_, v)| *v > 0.0)
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    println!("exits per boot (to the marker): {:.0} — {}", get("linux_boot_exits"), kinds.join(", "));
    println!("guest RAM backed at the marker ({BOOT_MIB} MiB guest): {:.1} MiB", get("linux_boot_guest_frames") / 1024.0);
    let mbps = |bytes: f64, ns: f64| bytes / (ns / 1e9) / 1e6;
    let (md, dd) = (mbps(get("linux_dd_bytes"), get("linux_dd_ns")), mbps(get("direct_dd_bytes"), get("direct_dd_ns")));
    println!("guest dd of {BENCH_DD_MIB} MiB to its virtio disk (conv=fsync): {md:.2} MB/s in Mantle, {dd:.2} MB/s directly: ratio {:.2}", md / dd);
    println!(
        "1 GiB guest: {:.1} MiB of host memory after create, {:.1} MiB of guest RAM backed after boot, {:.1} MiB after writing {BENCH_TOUCH_MIB} MiB (host memory in use {:.1} MiB; {:.1} MiB after destroy)",
        get("linux_mem_after_create") / 1024.0,
        get("linux_mem_booted_guest_frames") / 1024.0,
        get("linux_mem_touched_guest_frames") / 1024.0,
        get("linux_mem_touched_host_used") / 1024.0,
        get("linux_mem_after_destroy") / 1024.0,
    );
    println!("VMs created and powered on per second (idle 8 MiB guests): {:.1}", get("vms_per_second"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_words() {
        assert!(med(&[]).is_nan());
        assert_eq!(med(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(med(&[4.0, 1.0]), 2.5);
        assert_eq!(word_after("x linuxbench: uptime 3.25 0\n", "linuxbench: uptime "), Some("3.25"));
        assert_eq!(word_after("nothing", "linuxbench: uptime "), None);
    }
}
