//! Helpers for the image tests: build the real kernel and ISO (through the
//! image-builder library), boot them in QEMU or Bochs one at a time, and
//! assert on the serial log. A failed assertion prints the whole log.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub mod net;

pub use image_builder::qemu::{Boot, EXIT_FAILURE, EXIT_SUCCESS, Machine, Outcome, Qemu, RunResult};
use image_builder::AddSpec;
use image_builder::rootfs::Rootfs;

/// Memory for tests that do not care: not a power of two on purpose, so
/// size arithmetic that assumes one shows up.
pub const MEM_MIB: u32 = 1000;
/// SeaBIOS boots reach the ready line in ~1.5 s; generous for a loaded CI.
pub const BIOS_TIMEOUT: Duration = Duration::from_secs(90);
/// OVMF alone takes ~5 s under TCG.
pub const UEFI_TIMEOUT: Duration = Duration::from_secs(180);
/// The command line of the standard test ISO: report through debug-exit
/// and power off after boot.
pub const POWEROFF_CMDLINE: &str = "debug_exit after_boot=poweroff";

/// The release kernel, built once per test process.
pub fn kernel() -> &'static Path {
    static K: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match K.get_or_init(|| image_builder::kernel::build_kernel_with(true, true)) {
        Ok(p) => p,
        Err(e) => panic!("building the kernel failed: {e}"),
    }
}

/// Kernel command-line words for an image that needs no management agents:
/// init leaves hostd and the CIM broker out (their start-up takes minutes in
/// Bochs and would land inside the test's measurements). [`iso`] leaves
/// their programs out of such an image too: they are most of the root
/// archive (~17 of ~24 MB), which the firmware loads and the kernel
/// unpacks at every boot.
pub const NO_AGENTS: &str = "init.skip=hostd,cim-broker";

/// The agents' programs, left out of [`NO_AGENTS`] images.
const AGENT_PROGRAMS: [&str; 2] = ["sbin/hostd", "sbin/cim-broker"];

/// An ISO with this kernel command line and these `--add` specs, at
/// `target/mantle/test-isos/<name>.iso` (rebuilt only when inputs change;
/// an ISO of another name with the same content is reused, see
/// `image_builder::iso::make_iso`).
pub fn iso(name: &str, cmdline: &str, adds: &[&str]) -> PathBuf {
    // Within a test process the same ISO is asked for again and again (the
    // boot tests' poweroff image, the guest-suite image): the answer is
    // kept, keyed by everything that goes into it. An added host file that
    // changes (its size or time) makes a new key.
    static MADE: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let key = format!("{name}\0{cmdline}\0{}", adds.iter().map(|a| format!("{a}:{:?}", add_stamp(a))).collect::<Vec<_>>().join("\0"));
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = made.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let specs: Vec<AddSpec> =
        adds.iter().map(|a| a.parse().unwrap_or_else(|e| panic!("bad --add spec: {e}"))).collect();
    let mut root = base_system().clone();
    if cmdline.split_whitespace().any(|w| w == NO_AGENTS) {
        for p in AGENT_PROGRAMS {
            assert!(root.remove(p), "the base system has no {p} to leave out");
        }
    }
    for a in &specs {
        root.add(a).unwrap_or_else(|e| panic!("making ISO {name}: {e}"));
    }
    let archive = image_builder::rootfs::compress(&root.to_cpio()).unwrap_or_else(|e| panic!("making ISO {name}: {e}"));
    let out = image_builder::out_dir().join("test-isos").join(format!("{name}.iso"));
    let spec = image_builder::iso::IsoSpec { kernel: kernel(), rootfs: &archive, cmdline, out: &out };
    match image_builder::iso::make_iso(&spec) {
        Ok(info) => {
            made.push((key, info.path.clone()));
            info.path
        }
        Err(e) => panic!("making ISO {name} failed: {e}"),
    }
}

/// The base system of every test ISO (BusyBox, init, the user worlds, the
/// guests), built once per test process: building it (cargo's checks,
/// stripping, the guests) took seconds for each ISO a test asked for.
fn base_system() -> &'static Rootfs {
    static BASE: OnceLock<Result<Rootfs, String>> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let mut r = Rootfs::new();
        image_builder::userworlds::add_base_system(&mut r, true).map(|()| r)
    });
    match base {
        Ok(r) => r,
        Err(e) => panic!("building the base system failed: {e}"),
    }
}

/// Size and modification time of an `--add` spec's host path (the memo key).
fn add_stamp(spec: &str) -> Option<(u64, std::time::SystemTime)> {
    let host = spec.split_once('=').map(|(h, _)| h)?;
    let m = std::fs::metadata(host).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// The standard ISO: boots, reports success through debug-exit, powers off.
pub fn poweroff_iso() -> PathBuf {
    iso("poweroff", POWEROFF_CMDLINE, &[])
}

/// Only one emulator at a time, across test threads and test processes:
/// on 2 cores two TCG guests slow each other into timeouts.
pub struct EmulatorLock {
    _in_process: MutexGuard<'static, ()>,
    _file: File,
}

pub fn emulator_lock() -> EmulatorLock {
    static M: Mutex<()> = Mutex::new(());
    // A test that panicked while holding the lock poisons it; the lock
    // itself is still good.
    let g = M.lock().unwrap_or_else(|e| e.into_inner());
    let dir = image_builder::out_dir();
    std::fs::create_dir_all(&dir).expect("creating target/mantle");
    let f = File::create(dir.join("emulator.lock")).expect("creating the emulator lock file");
    f.lock().expect("locking the emulator lock file");
    EmulatorLock { _in_process: g, _file: f }
}

/// A QEMU run for a test ISO with the test defaults: one CPU, MEM_MIB,
/// debug-exit, -no-reboot, and the BIOS timeout.
pub fn qemu_iso(iso: PathBuf) -> Qemu {
    let mut q = Qemu::new(Boot::Iso(iso));
    q.cpus = 1;
    q.mem_mib = MEM_MIB;
    q.debug_exit = true;
    q.no_reboot = true;
    q.timeout = BIOS_TIMEOUT;
    q
}

/// The same through PVH (`-kernel`): fastest, no firmware, no GRUB.
pub fn qemu_pvh(cmdline: &str) -> Qemu {
    let mut q = Qemu::new(Boot::Pvh { kernel: kernel().to_path_buf(), initrd: None, cmdline: cmdline.into() });
    q.cpus = 1;
    q.mem_mib = MEM_MIB;
    q.debug_exit = true;
    q.no_reboot = true;
    q.timeout = BIOS_TIMEOUT;
    q
}

/// Boots under the emulator lock and returns the result to assert on.
pub fn boot(q: &Qemu) -> Booted {
    let _lock = emulator_lock();
    match q.run_captured() {
        Ok(r) => {
            println!("{} -> {:?} in {:.2?}", r.command_line, r.outcome, r.elapsed);
            Booted(r)
        }
        Err(e) => panic!("cannot boot in QEMU: {e}"),
    }
}

/// The values of the `mantle: ready cpus=N mem=MMiB pci=P` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub cpus: u32,
    pub mem_mib: u64,
    pub pci: u32,
}

pub fn parse_ready(log: &str) -> Option<Ready> {
    let line = log.lines().find_map(|l| l.split_once("mantle: ready ").map(|(_, r)| r))?;
    let mut cpus = None;
    let mut mem = None;
    let mut pci = None;
    for w in line.split_whitespace() {
        match w.split_once('=') {
            Some(("cpus", v)) => cpus = v.parse().ok(),
            Some(("mem", v)) => mem = v.strip_suffix("MiB").and_then(|v| v.parse().ok()),
            Some(("pci", v)) => pci = v.parse().ok(),
            _ => {}
        }
    }
    Some(Ready { cpus: cpus?, mem_mib: mem?, pci: pci? })
}

/// A finished run; every assertion shows the full serial log on failure.
pub struct Booted(pub RunResult);

impl Booted {
    pub fn serial(&self) -> &str {
        &self.0.serial
    }

    #[track_caller]
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.0.report())
    }

    #[track_caller]
    pub fn assert_contains(&self, s: &str) -> &Self {
        if !self.0.serial.contains(s) {
            self.fail(&format!("serial log lacks {s:?}"));
        }
        self
    }

    #[track_caller]
    pub fn assert_lacks(&self, s: &str) -> &Self {
        if self.0.serial.contains(s) {
            self.fail(&format!("serial log unexpectedly has {s:?}"));
        }
        self
    }

    /// QEMU exited by itself with this status (0 is never taken as success
    /// by the callers: they ask for 33).
    #[track_caller]
    pub fn assert_exit(&self, status: i32) -> &Self {
        if self.0.outcome != Outcome::Exited(status) {
            self.fail(&format!("expected QEMU to exit with status {status}, got {:?}", self.0.outcome));
        }
        self
    }

    /// The ready line, parsed; fails if it is missing or malformed.
    #[track_caller]
    pub fn ready(&self) -> Ready {
        parse_ready(&self.0.serial).unwrap_or_else(|| self.fail("no well-formed `mantle: ready cpus=N mem=MMiB pci=P` line"))
    }

    /// Booted, printed the ready line, and exited with debug-exit success.
    #[track_caller]
    pub fn assert_ready_and_success(&self) -> Ready {
        self.assert_exit(EXIT_SUCCESS);
        self.ready()
    }
}


/// The BusyBox prompt the console tests wait for.
pub const SHELL_PROMPT: &str = "# ";

/// Activates the console shell at init's "Please press Enter" prompt and
/// widens the terminal (so long command lines do not wrap); panics with the
/// serial log if no prompt comes within `boot` (the boot) and `step`.
pub fn activate_shell(c: &mut image_builder::qemu::Console, boot: std::time::Duration, step: std::time::Duration) {
    let ok = c
        .expect("Please press Enter to activate this console.", boot)
        .and_then(|_| c.send("\n"))
        .and_then(|_| c.expect(SHELL_PROMPT, step).map(|_| ()))
        .and_then(|_| c.run("stty cols 2000", SHELL_PROMPT, step).map(|_| ()));
    if let Err(e) = ok {
        panic!("no shell prompt: {e}\n{}\n--- serial log ---\n{}", c.command_line, c.log());
    }
    wait_for_hostd(c, boot);
    if std::env::var_os("MANTLE_STEP_TIMES").is_some() {
        eprintln!("[{:7.1}s] shell ready: {}", c.uptime().as_secs_f64(), c.command_line);
    }
}

/// Waits (at most `limit`) until hostd, which init starts at boot, listens
/// or has given up: its start-up (certificate, sockets, listening pools)
/// would otherwise land inside a test's measurements, such as the kernel
/// heap before and after a fuzz run. Images without hostd just wait out
/// the limit; this never fails a test.
pub fn wait_for_hostd(c: &image_builder::qemu::Console, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let log = c.log();
        if log.contains("hostd: HTTP redirect on") || log.contains("hostd: cannot start") || !log.contains("init: starting hostd") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}


/// Runs the guest fuzzer (`image-builder/guests/guestfuzz.S`: each
/// iteration maybe a random port, MMIO and MSR access, then one random
/// instruction in ring 3) at a booted host's shell, in VM after VM — VM
/// `k` with the seed `<name>-seed-<k>`, up to `per_vm` iterations — until
/// the guests report `total` random instructions executed. A VM the VMM
/// stops (an MMIO instruction it cannot emulate) just ends early and the
/// next one starts. Whatever the guests do, the host must keep going: no
/// kernel fault, every VM ends within `timeout_s`, the shell answers, and
/// the host's memory returns to its level (`HostMemory::leak_since`,
/// measured after a warm-up VM). `step` bounds each shell command. Returns
/// the instructions executed and the VMs run (after the warm-up).
#[allow(clippy::too_many_arguments)]
pub fn guest_fuzz(c: &mut image_builder::qemu::Console, name: &str, step: Duration, total: u64, per_vm: u32, max_vms: u32, timeout_s: u32) -> (u64, u32) {
    let check = |c: &image_builder::qemu::Console, ok: bool, what: &str| {
        if !ok {
            panic!("{what}\n--- serial log ---\n{}", c.log());
        }
    };
    let run = |c: &mut image_builder::qemu::Console, cmd: &str| {
        c.run(cmd, SHELL_PROMPT, step).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
    };
    let started = std::time::Instant::now();
    let one_vm = |c: &mut image_builder::qemu::Console, k: u32, iterations: u32| -> u64 {
        // The VM's id is whatever the host gives it (the host may have run
        // other VMs before).
        let cmd = format!(
            "id=$(vmkcli vm create --name gf{k} --kernel /usr/lib/mantle/guests/guestfuzz.elf --memory 16 --cmdline \"{iterations} {name}-seed-{k}\" | awk '{{print $3}}') \
             && echo gf-vm=$id && vmkcli vm start $id && vmkcli vm wait $id --timeout {timeout_s}; vmkcli vm info $id; vmkcli vm console $id | tail -1; vmkcli vm destroy $id"
        );
        c.send(&format!("{cmd}; echo gf-done-$((40+2))\n")).unwrap();
        let out = c
            .expect("gf-done-42", Duration::from_secs(timeout_s as u64) + step * 2)
            .unwrap_or_else(|e| panic!("guest fuzzer VM {k}: {e}\n--- serial log ---\n{}", c.log()));
        let _ = c.expect(SHELL_PROMPT, step);
        let id: Option<u32> = out.lines().find_map(|l| l.trim().strip_prefix("gf-vm=")).and_then(|n| n.parse().ok());
        check(c, id.is_some(), &format!("guest fuzzer VM {k} was not created: {out:?}"));
        let id = id.unwrap_or(0);
        let last = out.lines().rev().find(|l| l.starts_with("guestfuzz: iterations")).unwrap_or("").trim().to_string();
        check(c, !last.is_empty(), &format!("guest fuzzer VM {k} (id {id}) printed nothing: {out:?}"));
        // Finished (debug-exit 0x10), or stopped by the VMM on an MMIO
        // instruction it cannot emulate; nothing else.
        let ended = out.contains("debug-exit code 0x10") || out.contains("cannot be emulated") || out.contains("unhandled exit");
        check(c, ended, &format!("VM {id} did not end as expected: {out:?}"));
        check(c, out.contains(&format!("VM {id} destroyed")), &format!("VM {id} was not destroyed: {out:?}"));
        let executed = last.split_whitespace().skip_while(|w| *w != "executed").nth(1).and_then(|n| n.parse::<u64>().ok());
        check(c, executed.is_some(), &format!("no executed count in {last:?}"));
        eprintln!("{name} VM {k} (id {id}) at {} s: {last}", started.elapsed().as_secs());
        executed.unwrap_or(0)
    };
    // Warm-up: the kernel heap reaches its working size for a VM.
    one_vm(c, 1, 20);
    let before = HostMemory::parse(&run(c, HostMemory::COMMAND)).expect("memory figures");
    let (mut executed, mut vms) = (0u64, 0u32);
    while executed < total && vms < max_vms {
        vms += 1;
        executed += one_vm(c, vms + 1, per_vm);
    }
    let after = HostMemory::parse(&run(c, HostMemory::COMMAND)).expect("memory figures");
    eprintln!(
        "{name}: {executed} random guest instructions in {vms} VMs, {} s; host memory before/after {before:?} / {after:?}",
        started.elapsed().as_secs()
    );
    let log = c.log();
    check(c, !log.contains("KERNEL PANIC") && !log.contains("CPU EXCEPTION"), "the kernel reported a fault");
    let out = run(c, "echo alive-$((6*7))");
    check(c, out.contains("alive-42"), &format!("shell after the guest fuzzer: {out:?}"));
    check(c, executed >= total, &format!("only {executed} of {total} random instructions executed in {vms} VMs"));
    if let Some(leak) = before.leak_since(&after) {
        check(c, false, &format!("the guest fuzzer's VMs leaked host memory: {leak}"));
    }
    (executed, vms)
}

/// Host memory as /proc/meminfo reports it, in kB: free frames, the
/// kernel heap's frames, and the part of the heap in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostMemory {
    pub free_kb: i64,
    /// Executables' page caches: kept while a process runs the file
    /// (grown by what the programs touch, freed with the file's last
    /// process), so not lost.
    pub cached_kb: i64,
    pub heap_kb: i64,
    pub heap_used_kb: i64,
}

impl HostMemory {
    /// The shell command whose output [`HostMemory::parse`] reads.
    pub const COMMAND: &'static str = "grep -E '^(MemFree|Cached|KernelHeap|KernelHeapUsed):' /proc/meminfo";

    pub fn parse(out: &str) -> Option<HostMemory> {
        let field = |key: &str| {
            out.lines().find_map(|l| l.strip_prefix(key)).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse::<i64>().ok())
        };
        Some(HostMemory {
            free_kb: field("MemFree:")?,
            cached_kb: field("Cached:").unwrap_or(0),
            heap_kb: field("KernelHeap:")?,
            heap_used_kb: field("KernelHeapUsed:")?,
        })
    }

    /// Why `after` shows a leak since `self`, if it does: frames outside
    /// the heap that did not come back (the heap itself grows in steps and
    /// keeps what it claimed, so its growth is not a leak), or heap objects
    /// still in use. Tolerances: 64 kB of frames, 256 kB of heap objects
    /// (the shell, pipes and kernel log move the heap a little).
    pub fn leak_since(&self, after: &HostMemory) -> Option<String> {
        let frames_lost = (self.free_kb + self.cached_kb + self.heap_kb) - (after.free_kb + after.cached_kb + after.heap_kb);
        let heap_grown = after.heap_used_kb - self.heap_used_kb;
        if frames_lost > 64 {
            Some(format!("{frames_lost} kB of frames outside the kernel heap not returned ({self:?} -> {after:?})"))
        } else if heap_grown > 256 {
            Some(format!("{heap_grown} kB more kernel heap in use ({self:?} -> {after:?})"))
        } else {
            None
        }
    }
}

/// Where `image-builder datastore new` puts the FAT partition (GPT, one
/// partition at 1 MiB).
pub const DATASTORE_PARTITION_OFFSET: u64 = 1 << 20;

/// The FAT partition of a datastore image made by `image-builder datastore
/// new`, copied out sparsely to `dir/part.img` (for `fsck.fat`, which reads
/// a bare file system).
pub fn datastore_partition(img: &Path, dir: &Path) -> PathBuf {
    let part = dir.join("part.img");
    let len = std::fs::metadata(img).unwrap().len();
    let st = std::process::Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "conv=sparse", "status=none"])
        .arg(format!("skip={DATASTORE_PARTITION_OFFSET}"))
        // The backup GPT (33 sectors) at the end is not the file system's.
        .arg(format!("count={}", len - DATASTORE_PARTITION_OFFSET - 33 * 512))
        .status()
        .unwrap();
    assert!(st.success(), "copying the partition");
    part
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_and_leaks() {
        let m = |free, heap, used| HostMemory { free_kb: free, cached_kb: 0, heap_kb: heap, heap_used_kb: used };
        let out = "MemFree:          980640 kB\nKernelHeap:         8192 kB\nKernelHeapUsed:     3000 kB";
        assert_eq!(HostMemory::parse(out), Some(m(980640, 8192, 3000)));
        assert_eq!(HostMemory::parse("MemFree: 1 kB"), None);
        // A heap growth step is not a leak; lost frames and heap objects are.
        assert_eq!(m(980640, 8192, 3000).leak_since(&m(976544, 12288, 3100)), None);
        assert!(m(980640, 8192, 3000).leak_since(&m(980540, 8192, 3000)).is_some());
        assert!(m(980640, 8192, 3000).leak_since(&m(976544, 12288, 4500)).is_some());
        // Frames an executable's page cache took are not lost.
        let cached = HostMemory { cached_kb: 1040, ..m(979600, 8192, 3000) };
        assert_eq!(HostMemory::parse("MemFree: 979600 kB\nCached: 1040 kB\nKernelHeap: 8192 kB\nKernelHeapUsed: 3000 kB"), Some(cached));
        assert_eq!(m(980640, 8192, 3000).leak_since(&cached), None);
    }

    #[test]
    fn ready_line_parsing() {
        let log = "[ 0.1] cpu0 INFO x\nmantle: ready cpus=3 mem=999MiB pci=6\n";
        assert_eq!(parse_ready(log), Some(Ready { cpus: 3, mem_mib: 999, pci: 6 }));
        assert_eq!(parse_ready("mantle: ready cpus=3 mem=999 pci=6"), None);
        assert_eq!(parse_ready("mantle: starting"), None);
    }
}

