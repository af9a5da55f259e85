//! vmbench — VMM benchmarks run inside Mantle through the VM API, as PID 1
//! of a benchmark boot (`image-builder bench vm`) or from the shell.
//!
//! Prints `vmbench: <name> <value> <unit>` lines:
//! * `cpuid_exit` — TSC ticks per CPUID exit round trip, minus the same loop
//!   without CPUID (under QEMU `-icount shift=0` a tick is one instruction);
//! * `work` — TSC ticks of the sieve workload (compare with the same guest
//!   booted directly in QEMU);
//! * `host_memory_per_vm` / `vm_overhead_frames_per_vm` — host memory a running VM
//!   costs beyond its guest RAM (from MemFree, and the VMM's own count);
//! * `vms_per_second` — VMs created and powered on per second.
//!
//! Mode `linux` (`image-builder bench linux`) runs Debian's kernel in VMs
//! defined by `/linux/boot.vmx` and `/linux/mem.vmx` (their files on the
//! datastore) and prints `linux_*` figures: power-on to the shell marker,
//! exits by kind up to it, the guest's `dd` to its virtio disk, host frames
//! of a 1 GiB guest after boot and after it touched 100 MiB; then `rate`.
//!
//! `vmbench [GUEST_DIR] [cpuid|icount|all|linux]` (`icount`: `cpuid_exit` and
//! `work`, for a boot under `-icount shift=0`); as PID 1 it reads the mode from
//! `/bench-mode` and powers off at the end.

use std::io;
use std::time::{Duration, Instant};
use userworld::vmk;

fn create(name: &str, kernel: &str, mib: u32) -> io::Result<u32> {
    vmk::vm_create(&format!("name = {name}\nkernel = {kernel}\nmemory_mib = {mib}\n"))
}

fn wait_stopped(id: u32, timeout: Duration) -> io::Result<vmk::VmInfoRecord> {
    let end = Instant::now() + timeout;
    loop {
        let r = vmk::vm_info(id)?;
        if r.state == vmk::VM_STATE_STOPPED {
            return Ok(r);
        }
        if Instant::now() > end {
            return Err(io::Error::other(format!("VM {id} still running after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a guest to completion and returns its console output.
fn run_guest(name: &str, kernel: &str, mib: u32) -> io::Result<String> {
    let id = create(name, kernel, mib)?;
    vmk::vm_start(id)?;
    let r = wait_stopped(id, Duration::from_secs(600))?;
    let mut out = Vec::new();
    loop {
        let chunk = vmk::vm_console_read(id, out.len() as u64, 4096)?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    vmk::vm_destroy(id)?;
    if r.exit_reason != 1 || r.exit_code != 0x10 {
        return Err(io::Error::other(format!("guest {name} stopped with reason {} code {:#x}", r.exit_reason, r.exit_code)));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The hex number after `key` in a `bench:` line.
fn field(out: &str, key: &str) -> io::Result<u64> {
    let rest = out.split(key).nth(1).ok_or_else(|| io::Error::other(format!("no {key:?} in {out:?}")))?;
    let hex = rest.trim_start().trim_start_matches("0x");
    let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
    u64::from_str_radix(&hex[..end], 16).map_err(|e| io::Error::other(format!("{key}: {e}")))
}

/// A /proc/meminfo figure in KiB.
fn meminfo_kib(key: &str) -> io::Result<u64> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    m.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/meminfo")))
}

/// Host memory in use, in KiB: frames taken from the free pool outside the
/// kernel heap, plus the heap's bytes in use (so objects allocated inside
/// an already-grown heap count, and heap growth without objects does not).
fn host_memory_used_kib() -> io::Result<i64> {
    let (free, heap, used) = (meminfo_kib("MemFree")?, meminfo_kib("KernelHeap")?, meminfo_kib("KernelHeapUsed")?);
    Ok(used as i64 - free as i64 - heap as i64)
}

fn cpuid_exit(dir: &str) -> io::Result<()> {
    let out = run_guest("bench-cpuid", &format!("{dir}/bench-cpuid.elf"), 16)?;
    let (with, without, n) = (field(&out, "cpuid-loop")?, field(&out, "empty-loop")?, field(&out, "iterations")?);
    println!("vmbench: cpuid_exit {} ticks", (with.saturating_sub(without)) / n.max(1));
    // The least iteration with CPUID minus the least without: no host
    // timer tick in it.
    if let (Ok(min), Ok(empty)) = (field(&out, "cpuid-min"), field(&out, "empty-min")) {
        println!("vmbench: cpuid_exit_min {} ticks", min.saturating_sub(empty));
    }
    Ok(())
}

fn work(dir: &str) -> io::Result<()> {
    let out = run_guest("bench-work", &format!("{dir}/bench-work.elf"), 16)?;
    println!("vmbench: work {} ticks", field(&out, "work")?);
    println!("vmbench: work_primes {} count", field(&out, "primes")?);
    Ok(())
}

/// Memory per running VM beyond the guest RAM it touched: 8 idle 16 MiB VMs.
fn memory(dir: &str) -> io::Result<()> {
    const VMS: u64 = 8;
    const MIB: u64 = 16;
    // One VM first, so the kernel heap has grown to its working size.
    let warm = create("warm", &format!("{dir}/idle.bin"), MIB as u32)?;
    vmk::vm_start(warm)?;
    std::thread::sleep(Duration::from_millis(200));
    let before = host_memory_used_kib()?;
    let mut ids = Vec::new();
    for i in 0..VMS {
        let id = create(&format!("mem{i}"), &format!("{dir}/idle.bin"), MIB as u32)?;
        vmk::vm_start(id)?;
        ids.push(id);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = host_memory_used_kib()?;
    let overhead: u64 = ids.iter().map(|&id| vmk::vm_stats(id).map(|s| s.overhead_frames * 4)).sum::<io::Result<u64>>()?;
    // Guest RAM is backed on first touch: what the guests touched.
    let guest_kib: u64 = ids.iter().map(|&id| vmk::vm_stats(id).map(|s| s.guest_frames * 4)).sum::<io::Result<u64>>()?;
    println!("vmbench: guest_ram_touched_per_vm {} KiB", guest_kib / VMS);
    let per_vm = (after - before - guest_kib as i64) as f64 / VMS as f64;
    println!("vmbench: host_memory_per_vm {per_vm:.0} KiB");
    println!("vmbench: vm_overhead_frames_per_vm {} KiB", overhead / VMS);
    for id in ids.into_iter().chain([warm]) {
        vmk::vm_stop(id)?;
        wait_stopped(id, Duration::from_secs(10))?;
        vmk::vm_destroy(id)?;
    }
    Ok(())
}

/// VMs created and powered on per second (20 idle VMs of 8 MiB).
fn rate(dir: &str) -> io::Result<()> {
    const VMS: usize = 20;
    let kernel = format!("{dir}/idle.bin");
    let t = Instant::now();
    let mut ids = Vec::new();
    let mut creating = Duration::ZERO;
    for i in 0..VMS {
        let c = Instant::now();
        let id = create(&format!("rate{i}"), &kernel, 8)?;
        creating += c.elapsed();
        vmk::vm_start(id)?;
        ids.push(id);
    }
    let secs = t.elapsed().as_secs_f64();
    println!("vmbench: vms_per_second {:.1} VM/s", VMS as f64 / secs);
    println!("vmbench: create_share {:.0} %", 100.0 * creating.as_secs_f64() / secs);
    for id in ids {
        vmk::vm_stop(id)?;
        wait_stopped(id, Duration::from_secs(10))?;
        vmk::vm_destroy(id)?;
    }
    Ok(())
}

/// Console text of VM `id` from `*pos` on (advancing `*pos`).
fn console_more(id: u32, pos: &mut u64, text: &mut String) -> io::Result<()> {
    loop {
        let chunk = vmk::vm_console_read(id, *pos, 4096)?;
        if chunk.is_empty() {
            return Ok(());
        }
        *pos += chunk.len() as u64;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Polls VM `id`'s console until it shows `marker` (every 5 ms).
fn await_console(id: u32, pos: &mut u64, text: &mut String, marker: &str, timeout: Duration) -> io::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        console_more(id, pos, text)?;
        if text.contains(marker) {
            return Ok(());
        }
        let info = vmk::vm_info(id)?;
        if info.state == vmk::VM_STATE_STOPPED {
            return Err(io::Error::other(format!("VM {id} stopped (reason {}, code {:#x}) before {marker:?}:\n{text}", info.exit_reason, info.exit_code)));
        }
        if Instant::now() > end {
            return Err(io::Error::other(format!("no {marker:?} from VM {id} after {timeout:?}:\n{text}")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The word after `key` on the console.
fn console_word<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(key).nth(1)?.split_whitespace().next()
}

/// The shell marker of the demo guest's `/init` (`image_builder::linux_guest`).
const SHELL_MARKER: &str = "mantle-linux: shell ready";

/// Boots Debian's kernel (`/linux/boot.vmx`: `bench=dd` on its command
/// line): power-on to the shell marker, exits by kind up to there, then
/// the guest's own `dd` figures for its virtio disk.
fn linux_boot(_dir: &str) -> io::Result<()> {
    let config = std::fs::read_to_string("/linux/boot.vmx")?;
    let id = vmk::vm_create(&config)?;
    let (mut pos, mut text) = (0, String::new());
    let t = Instant::now();
    vmk::vm_start(id)?;
    await_console(id, &mut pos, &mut text, SHELL_MARKER, Duration::from_secs(900))?;
    let secs = t.elapsed().as_secs_f64();
    let stats = vmk::vm_stats(id)?;
    println!("vmbench: linux_boot {secs:.3} s");
    if let Some(up) = console_word(&text, "linuxbench: uptime ") {
        println!("vmbench: linux_boot_uptime {up} s");
    }
    let total: u64 = stats.exits_by_kind.iter().sum();
    println!("vmbench: linux_boot_exits {total} exits");
    for (name, n) in vmk::VM_EXIT_KIND_NAMES.iter().zip(stats.exits_by_kind) {
        println!("vmbench: linux_boot_exits_{name} {n} exits");
    }
    println!("vmbench: linux_boot_guest_frames {} KiB", stats.guest_frames * 4);
    await_console(id, &mut pos, &mut text, "linuxbench: dd-done", Duration::from_secs(900))?;
    for key in ["dd_bytes", "dd_ns"] {
        if let Some(v) = console_word(&text, &format!("linuxbench: {key} ")) {
            println!("vmbench: linux_{key} {v} {}", if key == "dd_bytes" { "bytes" } else { "ns" });
        }
    }
    for l in text.lines().filter(|l| l.contains("copied")) {
        println!("vmbench: linux dd said: {}", l.trim());
    }
    vmk::vm_stop(id)?;
    wait_stopped(id, Duration::from_secs(30))?;
    vmk::vm_destroy(id)
}

/// A 1 GiB guest (`/linux/mem.vmx`, `bench=touch`): host frames backing
/// its RAM after boot and after it wrote 100 MiB into its tmpfs; host
/// memory in use (MemFree) moves by as much.
fn linux_memory(_dir: &str) -> io::Result<()> {
    let config = std::fs::read_to_string("/linux/mem.vmx")?;
    let before = host_memory_used_kib()?;
    let id = vmk::vm_create(&config)?;
    let created = host_memory_used_kib()?;
    println!("vmbench: linux_mem_after_create {} KiB", created - before);
    let (mut pos, mut text) = (0, String::new());
    vmk::vm_start(id)?;
    await_console(id, &mut pos, &mut text, SHELL_MARKER, Duration::from_secs(900))?;
    println!("vmbench: linux_mem_booted_guest_frames {} KiB", vmk::vm_stats(id)?.guest_frames * 4);
    await_console(id, &mut pos, &mut text, "linuxbench: touched", Duration::from_secs(900))?;
    let frames = vmk::vm_stats(id)?.guest_frames;
    let used = host_memory_used_kib()?;
    println!("vmbench: linux_mem_touched_guest_frames {} KiB", frames * 4);
    println!("vmbench: linux_mem_touched_host_used {} KiB", used - before);
    vmk::vm_stop(id)?;
    wait_stopped(id, Duration::from_secs(30))?;
    vmk::vm_destroy(id)?;
    println!("vmbench: linux_mem_after_destroy {} KiB", host_memory_used_kib()? - before);
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pid1 = std::process::id() == 1;
    let dir = args.get(1).cloned().unwrap_or_else(|| if pid1 { "/guests".into() } else { "/usr/lib/mantle/guests".into() });
    let mode = args.get(2).cloned().unwrap_or_else(|| std::fs::read_to_string("/bench-mode").unwrap_or_else(|_| "all".into()).trim().to_string());
    println!("vmbench: start ({mode})");
    type Step = fn(&str) -> io::Result<()>;
    let mut steps: Vec<(&str, Step)> = vec![("cpuid_exit", cpuid_exit)];
    if mode == "icount" {
        // Under -icount shift=0: the exit round trip, and the workload whose
        // ticks (instructions, the host's included) compare with the same
        // guest booted directly in QEMU under -icount.
        steps.push(("work", work));
    }
    if mode == "all" {
        steps.extend([("work", work as fn(&str) -> io::Result<()>), ("memory", memory), ("rate", rate)]);
    }
    if mode == "linux" {
        // The datastore holding the guests' files is mounted by the kernel
        // shortly after boot.
        let t = Instant::now();
        while !std::path::Path::new("/vmfs/volumes/datastore1/linuxbench").exists() && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
        }
        steps = vec![("linux_boot", linux_boot as Step), ("linux_memory", linux_memory), ("rate", rate)];
    }
    for (name, f) in steps {
        if let Err(e) = f(&dir) {
            println!("vmbench: {name} failed: {e}");
        }
    }
    println!("vmbench: done");
    if pid1 {
        // SAFETY: sync and reboot(POWER_OFF) as PID 1 end the benchmark boot.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
    }
}
