//! The boot benchmark: how long Mantle takes to become ready, next to Debian's
//! Linux with a BusyBox initramfs, booted the same ways under QEMU TCG.
//!
//! Each boot is timed from spawning QEMU to the marker line appearing on the
//! serial port (`mantle: ready` / `linux: ready`); QEMU is killed right after.
//! Boots are interleaved (one of each kind per round) so that noise on the
//! host spreads over all of them, and the median of each kind is reported.
//! Figures are printed, never asserted.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vmkernel::cpio;

/// The marker the VMkernel prints when it is ready.
pub const MANTLE_MARKER: &str = "mantle: ready";
/// The marker the benchmark's Linux `/init` prints.
pub const LINUX_MARKER: &str = "linux: ready";
/// What the benchmark's grub.cfg prints on serial when GRUB starts: the time
/// to it is the firmware's share of an ISO boot.
pub const GRUB_MARKER: &str = "grub: start";

/// The QEMU configuration shared by every boot.
pub const QEMU_COMMON: &[&str] = &[
    "-accel",
    "tcg",
    "-cpu",
    "qemu64,+svm,+npt",
    "-m",
    "512",
    "-smp",
    "1",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-monitor",
    "none",
    "-no-reboot",
];

/// UEFI firmware (Debian `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Kernel command line of the benchmark's Linux.
pub const LINUX_CMDLINE: &str = "console=ttyS0 quiet";

/// Time limit of one boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// `/init` of the benchmark initramfs. The kernel's built-in initramfs
/// normally provides `/dev/console`; if it is missing, mount devtmpfs and
/// reopen the console so the marker still reaches the serial port.
pub const INIT_SCRIPT: &str = "#!/bin/sh\n\
[ -c /dev/console ] || { /bin/busybox mount -t devtmpfs dev /dev; exec </dev/console >/dev/console 2>&1; }\n\
echo \"linux: ready\"\n\
poweroff -f\n";

/// BusyBox applets the initramfs links in `/bin` (used by `/init`).
pub const APPLETS: &[&str] = &["sh", "echo", "mount", "poweroff", "[", "test"];

/// The benchmark initramfs (cpio newc): `/bin/busybox`, applet links, the
/// directories the kernel and BusyBox expect, and `/init`.
pub fn linux_initramfs(busybox: &[u8]) -> Vec<u8> {
    let mut w = cpio::Writer::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        w.add(dir, cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    }
    w.add("bin/busybox", cpio::S_IFREG | 0o755, 0, 0, 0, busybox);
    for applet in APPLETS {
        w.add(
            &format!("bin/{applet}"),
            cpio::S_IFLNK | 0o777,
            0,
            0,
            0,
            b"busybox",
        );
    }
    w.add(
        "init",
        cpio::S_IFREG | 0o755,
        0,
        0,
        0,
        INIT_SCRIPT.as_bytes(),
    );
    w.finish()
}

/// Median of durations (mean of the two middle ones for an even count).
pub fn median(samples: &[Duration]) -> Option<Duration> {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2),
    }
}

/// How a system is booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// QEMU `-kernel`: PVH for Mantle's ELF, the Linux boot protocol for a bzImage.
    DirectKernel,
    /// QEMU `-kernel` PVH for both (Linux: the vmlinux ELF out of the bzImage).
    Pvh,
    /// GRUB ISO, `-cdrom -boot d`, SeaBIOS.
    IsoSeaBios,
    /// GRUB ISO, `-cdrom -boot d`, OVMF (UEFI).
    IsoOvmf,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::DirectKernel,
        Method::Pvh,
        Method::IsoSeaBios,
        Method::IsoOvmf,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Method::DirectKernel => "-kernel (Mantle PVH, Linux bzImage)",
            Method::Pvh => "-kernel PVH (Linux vmlinux)",
            Method::IsoSeaBios => "GRUB ISO, SeaBIOS",
            Method::IsoOvmf => "GRUB ISO, OVMF",
        }
    }
}

/// One bootable system under test.
struct Subject {
    name: &'static str,
    marker: &'static str,
    /// QEMU arguments for `-kernel` booting (kernel, initrd, cmdline).
    direct: Vec<String>,
    /// The same for a PVH boot.
    pvh: Vec<String>,
    iso: PathBuf,
}

/// QEMU arguments for one boot (without the common part).
fn boot_args(subject: &Subject, method: Method, vars: &Path) -> Vec<String> {
    match method {
        Method::DirectKernel => subject.direct.clone(),
        Method::Pvh => subject.pvh.clone(),
        Method::IsoSeaBios => {
            vec![
                "-cdrom".into(),
                subject.iso.display().to_string(),
                "-boot".into(),
                "d".into(),
            ]
        }
        Method::IsoOvmf => vec![
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-cdrom".into(),
            subject.iso.display().to_string(),
            "-boot".into(),
            "d".into(),
        ],
    }
}

/// Kills QEMU when dropped, so no error path leaves one running.
pub(crate) struct Qemu(pub(crate) Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The timings of one boot.
#[derive(Clone, Copy, Debug)]
pub struct BootTime {
    /// From spawning QEMU to the ready marker on serial.
    pub ready: Duration,
    /// From spawning QEMU to the stage marker (GRUB start), if it was seen.
    pub stage: Option<Duration>,
}

/// Boots once and returns the time from spawning QEMU to `marker` on serial
/// (and to `stage`, an earlier marker, if it appears).
pub fn time_boot(
    args: &[String],
    marker: &str,
    stage: &str,
    timeout: Duration,
) -> Result<BootTime, String> {
    let start = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(QEMU_COMMON)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run qemu-system-x86_64 ({e}); install Debian's qemu-system-x86")
        })?;
    let mut qemu = Qemu(child);
    let mut stdout = qemu.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut seen = Vec::new();
    let mut stage_at = None;
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                // Search only the new bytes plus a marker-length overlap.
                let now = start.elapsed();
                let from = seen.len().saturating_sub(marker.len().max(stage.len()));
                seen.extend_from_slice(&chunk);
                if stage_at.is_none() && contains(&seen[from..], stage.as_bytes()) {
                    stage_at = Some(now);
                }
                if contains(&seen[from..], marker.as_bytes()) {
                    return Ok(BootTime {
                        ready: now,
                        stage: stage_at,
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "no `{marker}` within {timeout:?}; serial output so far:\n{}",
                    tail(&seen)
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = qemu.0.wait();
                let mut err = String::new();
                if let Some(mut e) = qemu.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!(
                    "QEMU ended before `{marker}`; stderr: {}\nserial output:\n{}",
                    err.trim(),
                    tail(&seen)
                ));
            }
        }
    }
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

pub(crate) fn tail(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let start = s.char_indices().rev().nth(2000).map_or(0, |(i, _)| i);
    s[start..].to_string()
}

/// Makes a GRUB (BIOS + UEFI) rescue ISO with `grub-mkrescue`: `files` are
/// (path inside the ISO, host file) pairs, `grub_cfg` becomes
/// `/boot/grub/grub.cfg`. `work` is a scratch directory (recreated).
pub fn make_grub_iso(
    files: &[(&str, &Path)],
    grub_cfg: &str,
    work: &Path,
    out: &Path,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(work);
    let io = |e: std::io::Error| format!("{}: {e}", work.display());
    std::fs::create_dir_all(work.join("boot/grub")).map_err(io)?;
    for (dest, src) in files {
        let dest = work.join(dest.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::copy(src, &dest)
            .map_err(|e| format!("copy {} -> {}: {e}", src.display(), dest.display()))?;
    }
    std::fs::write(work.join("boot/grub/grub.cfg"), grub_cfg).map_err(io)?;
    // No fonts, locales or themes: a smaller ISO, the same boot path.
    let out_put = Command::new("grub-mkrescue")
        .args(["--fonts=", "--locales=", "--themes="])
        .arg("-o")
        .arg(out)
        .arg(work)
        .output()
        .map_err(|e| {
            format!("cannot run grub-mkrescue ({e}); install grub-pc-bin grub-efi-amd64-bin xorriso mtools")
        })?;
    if !out_put.status.success() {
        return Err(format!(
            "grub-mkrescue -o {} failed ({}):\n{}",
            out.display(),
            out_put.status,
            String::from_utf8_lossy(&out_put.stderr).trim()
        ));
    }
    Ok(())
}

/// The start of the benchmark's grub.cfg files: no menu wait, and
/// [`GRUB_MARKER`] on the serial port.
fn grub_cfg_prologue() -> String {
    format!(
        "set timeout=0\nserial --unit=0 --speed=115200\nterminal_output --append serial\necho \"{GRUB_MARKER}\"\n"
    )
}

/// grub.cfg that boots Mantle (Multiboot2) straight away.
pub fn mantle_grub_cfg() -> String {
    grub_cfg_prologue()
        + "menuentry \"Mantle\" {\n  multiboot2 /boot/vmkernel after_boot=poweroff\n  boot\n}\n"
}

/// grub.cfg that boots the benchmark's Linux straight away.
pub fn linux_grub_cfg() -> String {
    grub_cfg_prologue()
        + &format!(
            "menuentry \"Linux\" {{\n  linux /boot/vmlinuz {LINUX_CMDLINE}\n  initrd /boot/initrd.cpio\n  boot\n}}\n"
        )
}

/// Where the benchmark keeps what it builds: `<workspace>/target/bench`.
pub fn work_dir() -> PathBuf {
    crate::kernel::workspace_root().join("target/bench")
}

/// Builds a Mantle ISO by hand from `kernel_elf` (for when the real one has
/// not been built yet). Returns its path.
pub fn make_mantle_iso(kernel_elf: &Path) -> Result<PathBuf, String> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let iso = dir.join("mantle-bench.iso");
    make_grub_iso(
        &[("boot/vmkernel", kernel_elf)],
        &mantle_grub_cfg(),
        &dir.join("mantle-iso"),
        &iso,
    )?;
    Ok(iso)
}

/// The Linux side: Debian's cloud kernel, the BusyBox initramfs, and a GRUB ISO of both.
pub struct LinuxGuest {
    pub kernel: PathBuf,
    /// The uncompressed kernel ELF (PVH entry), extracted from `kernel`.
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub iso: PathBuf,
}

/// Fetches the packages and builds the initramfs and the Linux ISO under `target/bench`.
pub fn prepare_linux() -> Result<LinuxGuest, String> {
    let kernel = crate::debian::linux_cloud_kernel()?;
    let busybox_path = crate::debian::busybox_static()?;
    let busybox = std::fs::read(&busybox_path)
        .map_err(|e| format!("cannot read {}: {e}", busybox_path.display()))?;
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let vmlinux = dir.join(format!(
        "vmlinux-{}",
        kernel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("linux")
            .trim_start_matches("vmlinuz-")
    ));
    crate::debian::extract_vmlinux(&kernel, &vmlinux)?;
    let initrd = dir.join("linux-initrd.cpio");
    std::fs::write(&initrd, linux_initramfs(&busybox))
        .map_err(|e| format!("{}: {e}", initrd.display()))?;
    let iso = dir.join("linux-bench.iso");
    make_grub_iso(
        &[("boot/vmlinuz", &kernel), ("boot/initrd.cpio", &initrd)],
        &linux_grub_cfg(),
        &dir.join("linux-iso"),
        &iso,
    )?;
    Ok(LinuxGuest {
        kernel,
        vmlinux,
        initrd,
        iso,
    })
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Boots Mantle and Linux `runs` times per method and prints the medians.
pub fn bench_boot(iso: &Path, kernel_elf: &Path, runs: usize) -> Result<(), String> {
    let runs = runs.max(1);
    for (what, p) in [
        ("Mantle ISO", iso),
        ("kernel ELF", kernel_elf),
        ("OVMF", Path::new(OVMF_CODE)),
    ] {
        if !p.is_file() {
            return Err(format!("{what} {} does not exist", p.display()));
        }
    }
    let linux = prepare_linux()?;
    let path = |p: &Path| p.display().to_string();
    let mantle_direct: Vec<String> = vec![
        "-kernel".into(),
        path(kernel_elf),
        "-append".into(),
        "after_boot=poweroff".into(),
    ];
    let linux_args = |kernel: &Path| -> Vec<String> {
        vec![
            "-kernel".into(),
            path(kernel),
            "-initrd".into(),
            path(&linux.initrd),
            "-append".into(),
            LINUX_CMDLINE.into(),
        ]
    };
    let subjects = [
        Subject {
            name: "Mantle",
            marker: MANTLE_MARKER,
            direct: mantle_direct.clone(),
            pvh: mantle_direct,
            iso: iso.to_path_buf(),
        },
        Subject {
            name: "Linux",
            marker: LINUX_MARKER,
            direct: linux_args(&linux.kernel),
            pvh: linux_args(&linux.vmlinux),
            iso: linux.iso.clone(),
        },
    ];

    let vars = work_dir().join("OVMF_VARS_4M.fd");
    // samples[subject][method]
    let mut samples = vec![vec![Vec::<BootTime>::new(); Method::ALL.len()]; subjects.len()];
    println!("bench boot: {runs} run(s) per system and method, interleaved");
    println!("QEMU: qemu-system-x86_64 {}", QEMU_COMMON.join(" "));
    for round in 0..runs {
        for (mi, &method) in Method::ALL.iter().enumerate() {
            for (si, subject) in subjects.iter().enumerate() {
                if method == Method::IsoOvmf {
                    // A fresh NVRAM each boot: every OVMF boot does the same work.
                    std::fs::copy(OVMF_VARS, &vars)
                        .map_err(|e| format!("copy {OVMF_VARS}: {e}"))?;
                }
                let t = time_boot(
                    &boot_args(subject, method, &vars),
                    subject.marker,
                    GRUB_MARKER,
                    BOOT_TIMEOUT,
                )
                .map_err(|e| format!("{} via {}: {e}", subject.name, method.label()))?;
                let stage = t
                    .stage
                    .map(|s| format!("  (GRUB at {})", secs(s)))
                    .unwrap_or_default();
                println!(
                    "  run {}/{runs}: {:<6} {:<36} {}{stage}",
                    round + 1,
                    subject.name,
                    method.label(),
                    secs(t.ready)
                );
                samples[si][mi].push(t);
            }
        }
    }

    let ready = |si: usize, mi: usize| samples[si][mi].iter().map(|t| t.ready).collect::<Vec<_>>();
    let stage = |si: usize, mi: usize| -> Option<Duration> {
        let s: Vec<Duration> = samples[si][mi].iter().filter_map(|t| t.stage).collect();
        median(&s)
    };
    // Time from GRUB's start to ready: the boot without the firmware.
    let after_stage = |si: usize, mi: usize| -> Option<Duration> {
        let s: Vec<Duration> = samples[si][mi]
            .iter()
            .filter_map(|t| Some(t.ready - t.stage?))
            .collect();
        median(&s)
    };
    let opt = |d: Option<Duration>| d.map_or("-".to_string(), secs);
    let min = |v: Vec<Duration>| v.into_iter().min().unwrap();
    println!();
    println!(
        "{:<36} {:>12} {:>12} {:>12} {:>10}   {:>10} {:>10}",
        "time to ready marker, median",
        "Mantle",
        "Linux",
        "Mantle/Linux",
        "<= 1/4?",
        "min Mantle",
        "min Linux"
    );
    let mut all_quarter = true;
    for (mi, &method) in Method::ALL.iter().enumerate() {
        let m = median(&ready(0, mi)).unwrap();
        let l = median(&ready(1, mi)).unwrap();
        let ratio = m.as_secs_f64() / l.as_secs_f64();
        all_quarter &= ratio <= 0.25;
        println!(
            "{:<36} {:>12} {:>12} {:>12} {:>10}   {:>10} {:>10}",
            method.label(),
            secs(m),
            secs(l),
            format!("{ratio:.3}"),
            if ratio <= 0.25 { "yes" } else { "no" },
            secs(min(ready(0, mi))),
            secs(min(ready(1, mi))),
        );
    }
    println!();
    println!(
        "ISO boots split at `{GRUB_MARKER}` on serial (medians; `-` if the grub.cfg does not print it):"
    );
    println!(
        "  {:<34} {:>15} {:>15} {:>18} {:>18} {:>12}",
        "",
        "firmware Mantle",
        "firmware Linux",
        "GRUB→ready Mantle",
        "GRUB→ready Linux",
        "Mantle/Linux"
    );
    for (mi, &method) in Method::ALL.iter().enumerate() {
        if !matches!(method, Method::IsoSeaBios | Method::IsoOvmf) {
            continue;
        }
        let (m, l) = (after_stage(0, mi), after_stage(1, mi));
        let ratio = match (m, l) {
            (Some(m), Some(l)) => format!("{:.3}", m.as_secs_f64() / l.as_secs_f64()),
            _ => "-".into(),
        };
        println!(
            "  {:<34} {:>15} {:>15} {:>18} {:>18} {:>12}",
            method.label(),
            opt(stage(0, mi)),
            opt(stage(1, mi)),
            opt(m),
            opt(l),
            ratio
        );
    }
    println!();
    println!("sizes:");
    println!(
        "  Mantle ISO              {:>10} bytes ({})",
        file_size(iso),
        iso.display()
    );
    println!(
        "  Mantle kernel ELF       {:>10} bytes",
        file_size(kernel_elf)
    );
    let (k, i) = (file_size(&linux.kernel), file_size(&linux.initrd));
    println!(
        "  Linux bzImage           {:>10} bytes ({})",
        k,
        linux.kernel.display()
    );
    println!(
        "  Linux vmlinux (PVH)     {:>10} bytes",
        file_size(&linux.vmlinux)
    );
    println!("  Linux initramfs         {:>10} bytes (BusyBox)", i);
    println!("  Linux bzImage+initramfs {:>10} bytes", k + i);
    println!(
        "  Linux ISO               {:>10} bytes",
        file_size(&linux.iso)
    );
    println!();
    println!(
        "goal (Mantle ready in <= 1/4 of Linux's time, by median, every method): {}",
        if all_quarter { "MET" } else { "NOT met" }
    );
    Ok(())
}

// ---- user-world micro-benchmarks: Mantle vs Linux ----

/// A QEMU a benchmark started (the common configuration plus its own
/// arguments), its serial output collected; killed when dropped.
pub(crate) struct Running {
    _qemu: Qemu,
    rx: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
    started: Instant,
}

impl Running {
    pub(crate) fn spawn(args: &[String]) -> Result<Running, String> {
        let started = Instant::now();
        let child = Command::new("qemu-system-x86_64")
            .args(QEMU_COMMON)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run qemu-system-x86_64 ({e})"))?;
        let mut qemu = Qemu(child);
        let mut stdout = qemu.0.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Running { _qemu: qemu, rx, seen: Vec::new(), started })
    }

    /// Waits until every one of `markers` has appeared on serial; the
    /// output so far (or an error with its tail).
    pub(crate) fn until(&mut self, markers: &[&str], timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            if markers.iter().all(|m| contains(&self.seen, m.as_bytes())) {
                return Ok(self.output());
            }
            match self.rx.recv_timeout(timeout.saturating_sub(start.elapsed())) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => return Err(format!("no `{}`; serial output:\n{}", markers.join("` and `"), tail(&self.seen))),
            }
        }
    }

    /// Waits until every one of `markers` has appeared on serial; per
    /// marker, the time from spawning QEMU to its first appearance (as
    /// each chunk arrives), with the output so far.
    pub(crate) fn until_each(&mut self, markers: &[&str], timeout: Duration) -> Result<(String, Vec<Duration>), String> {
        let mut times: Vec<Option<Duration>> = vec![None; markers.len()];
        loop {
            for (m, t) in markers.iter().zip(times.iter_mut()) {
                if t.is_none() && contains(&self.seen, m.as_bytes()) {
                    *t = Some(self.started.elapsed());
                }
            }
            if times.iter().all(Option::is_some) {
                return Ok((String::from_utf8_lossy(&self.seen).into_owned(), times.into_iter().flatten().collect()));
            }
            match self.rx.recv_timeout(timeout.saturating_sub(self.started.elapsed())) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => return Err(format!("no {markers:?}; serial output:\n{}", tail(&self.seen))),
            }
        }
    }

    /// The serial output so far (what arrived without waiting included).
    pub(crate) fn output(&mut self) -> String {
        while let Ok(chunk) = self.rx.try_recv() {
            self.seen.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }

    /// The last 2000 characters of the serial output.
    pub(crate) fn tail(&mut self) -> String {
        self.output();
        tail(&self.seen)
    }
}

/// Boots with `args` and returns the serial output up to `marker` (or an
/// error with what was seen).
fn serial_until(args: &[String], marker: &str, timeout: Duration) -> Result<String, String> {
    Running::spawn(args)?.until(&[marker], timeout)
}

/// Kernel command line of Linux in the benchmarks that run a program as
/// PID 1 (the TSC hint: without it some boots hang in calibration).
pub const LINUX_BENCH_CMDLINE: &str = "console=ttyS0 quiet tsc_early_khz=2000000";

/// QEMU arguments booting Mantle's kernel ELF (PVH) with `initrd` as its
/// root archive and `cmdline`.
pub(crate) fn mantle_boot_args(kernel_elf: &Path, initrd: &Path, cmdline: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["-kernel".into(), kernel_elf.display().to_string(), "-initrd".into(), initrd.display().to_string()];
    a.extend(["-append".into(), cmdline.into()]);
    a
}

/// QEMU arguments booting Debian's bzImage with `initrd` and
/// [`LINUX_BENCH_CMDLINE`].
pub(crate) fn linux_boot_args(kernel: &Path, initrd: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec!["-kernel".into(), kernel.display().to_string(), "-initrd".into(), initrd.display().to_string()];
    a.extend(["-append".into(), LINUX_BENCH_CMDLINE.into()]);
    a
}

/// The root archive of a benchmark on Mantle: `files` (path, bytes), the
/// first of them usually `init`, all executable.
pub(crate) fn mantle_bench_initrd(name: &str, files: &[(&str, &[u8])]) -> Result<PathBuf, String> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut w = cpio::Writer::new();
    for (path, data) in files {
        w.add(path, cpio::S_IFREG | 0o755, 0, 0, 0, data);
    }
    let p = dir.join(format!("{name}-mantle.cpio"));
    std::fs::write(&p, w.finish()).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The initramfs of a benchmark on Debian's Linux: BusyBox with `applets`
/// linked in `/bin`, `modules` (name, bytes) as `/lib/modules/<name>.ko`
/// for `/init` to load, `files` (path, bytes; executable) and `/init`.
/// Written to `target/bench/<name>-linux.cpio`.
pub(crate) fn linux_bench_initrd(name: &str, applets: &[&str], modules: &[(String, Vec<u8>)], files: &[(&str, &[u8])], init: &str) -> Result<PathBuf, String> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let busybox = std::fs::read(crate::debian::busybox_static()?).map_err(|e| e.to_string())?;
    let mut w = cpio::Writer::new();
    for d in ["bin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib/modules"] {
        w.add(d, cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    }
    w.add("bin/busybox", cpio::S_IFREG | 0o755, 0, 0, 0, &busybox);
    for applet in applets {
        w.add(&format!("bin/{applet}"), cpio::S_IFLNK | 0o777, 0, 0, 0, b"busybox");
    }
    for (m, data) in modules {
        w.add(&format!("lib/modules/{m}.ko"), cpio::S_IFREG | 0o644, 0, 0, 0, data);
    }
    for (path, data) in files {
        w.add(path, cpio::S_IFREG | 0o755, 0, 0, 0, data);
    }
    w.add("init", cpio::S_IFREG | 0o755, 0, 0, 0, init.as_bytes());
    let p = dir.join(format!("{name}-linux.cpio"));
    std::fs::write(&p, w.finish()).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

/// The start of a benchmark initramfs's `/init`: `/dev`, the console,
/// `/proc`, `/sys`, then `modules` loaded in order (a failure printed as
/// `<tag>: error insmod <m>`).
pub(crate) fn linux_init_prologue(tag: &str, modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
         /bin/busybox mount -t devtmpfs dev /dev 2>/dev/null\n\
         [ -c /dev/console ] && exec </dev/console >/dev/console 2>&1\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n",
    );
    for m in modules {
        s.push_str(&format!("insmod /lib/modules/{m}.ko || echo \"{tag}: error insmod {m}\"\n"));
    }
    s
}

/// Figures of the same benchmarks on Mantle and on Linux, in the order
/// first seen; printed as medians side by side with their ratio.
#[derive(Default)]
pub(crate) struct SideBySide {
    /// (name, Mantle samples, Linux samples, unit)
    rows: Vec<(String, Vec<f64>, Vec<f64>, String)>,
}

impl SideBySide {
    pub(crate) fn record(&mut self, mantle: bool, name: &str, value: f64, unit: &str) {
        let i = match self.rows.iter().position(|r| r.0 == name) {
            Some(i) => i,
            None => {
                self.rows.push((name.to_string(), Vec::new(), Vec::new(), unit.to_string()));
                self.rows.len() - 1
            }
        };
        if mantle { self.rows[i].1.push(value) } else { self.rows[i].2.push(value) }
    }

    /// The median of each side (NaN without samples).
    pub(crate) fn medians(&self) -> Vec<(String, f64, f64, String)> {
        let med = |v: &[f64]| -> f64 {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        self.rows.iter().map(|(n, m, l, u)| (n.clone(), med(m), med(l), u.clone())).collect()
    }

    /// The table: benchmark, Mantle, Linux, Mantle/Linux (`decimals` after the point).
    pub(crate) fn print(&self, decimals: usize) {
        println!();
        println!("{:<24} {:>17} {:>17} {:>12}", "benchmark (median)", "Mantle", "Linux", "Mantle/Linux");
        for (name, m, l, unit) in self.medians() {
            let ratio = if l == 0.0 || !(m / l).is_finite() { "-".to_string() } else { format!("{:.2}", m / l) };
            println!("{name:<24} {m:>11.decimals$} {unit:<5} {l:>11.decimals$} {unit:<5} {ratio:>12}");
        }
    }
}

/// `ubench: <name> <value> <unit>` lines.
pub fn parse_ubench(out: &str) -> Vec<(String, f64, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("ubench: ")?;
            let mut w = rest.split_whitespace();
            let (name, value, unit) = (w.next()?, w.next()?.parse().ok()?, w.next()?);
            Some((name.to_string(), value, unit.to_string()))
        })
        .collect()
}

/// Runs `ubench` (a static binary from `userworld/`) as PID 1 on Mantle and
/// on Debian's Linux in the same QEMU configuration, `runs` times each, and
/// prints the medians side by side.
/// With `icount`, both boot under `-icount shift=0` (and Linux without
/// its TSC-frequency hint, so it calibrates its clock against the PIT in
/// instruction time as Mantle does).
pub fn bench_user(kernel_elf: &Path, ubench: &Path, runs: usize, icount: bool) -> Result<(), String> {
    let bin = std::fs::read(ubench).map_err(|e| format!("{}: {e}", ubench.display()))?;
    let initrd = mantle_bench_initrd("ubench", &[("init", &bin)])?;
    let linux = prepare_linux()?;
    let mut mantle_args = mantle_boot_args(kernel_elf, &initrd, "init=/init");
    let mut linux_args = linux_boot_args(&linux.kernel, &initrd);
    if icount {
        for a in [&mut mantle_args, &mut linux_args] {
            a.extend(["-icount".to_string(), "shift=0".to_string()]);
        }
        if let Some(cmdline) = linux_args.iter_mut().find(|a| a.contains("tsc_early_khz")) {
            *cmdline = cmdline.replace(" tsc_early_khz=2000000", "");
        }
    }
    let mut results = SideBySide::default();
    for run in 0..runs.max(1) {
        for (who, args) in [("Mantle", &mantle_args), ("Linux", &linux_args)] {
            let out = serial_until(args, "ubench: done", Duration::from_secs(600))?;
            for (name, v, unit) in parse_ubench(&out) {
                println!("  run {}/{}: {who:<6} {name:<20} {v:>12.3} {unit}", run + 1, runs);
                results.record(who == "Mantle", &name, v, &unit);
            }
        }
    }
    results.print(3);
    if icount {
        println!("(QEMU TCG, {}, -icount shift=0: the figures are guest instructions, 1 ns each; compare the ratio)", QEMU_COMMON[3]);
    } else {
        println!("(QEMU TCG, {}; the emulator slows both alike: compare the ratio)", QEMU_COMMON[3]);
    }
    Ok(())
}

// ---- VMM benchmarks: exit cost, workload ratio, memory per VM, VM rate ----

/// `vmbench: <name> <value> <unit>` lines (same shape as ubench's).
pub fn parse_vmbench(out: &str) -> Vec<(String, f64, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("vmbench: ")?;
            let mut w = rest.split_whitespace();
            let (name, value, unit) = (w.next()?, w.next()?.parse().ok()?, w.next()?);
            Some((name.to_string(), value, unit.to_string()))
        })
        .collect()
}

/// The hex figure after `key` in a bench guest's `bench:` line.
fn bench_field(out: &str, key: &str) -> Option<u64> {
    let rest = out.split(key).nth(1)?.trim_start().trim_start_matches("0x");
    let end = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
    u64::from_str_radix(&rest[..end], 16).ok()
}

/// Runs the VMM benchmarks and prints their figures:
/// (a) host instructions per CPUID exit round trip, deterministic under
///     `-icount shift=0` (the guest's TSC counts instructions);
/// (b) the sieve workload inside Mantle vs the same guest booted directly
///     in QEMU (TSC ticks; ratio), under `-icount shift=0` (deterministic:
///     a tick is an instruction, the host's included) and by wall clock;
/// (c) host memory per running VM beyond guest RAM;
/// (d) VMs created and powered on per second.
/// Mantle runs `vmbench` as PID 1 (`-kernel` + an initrd with the guests).
pub fn bench_vm(kernel_elf: &Path, vmbench: &Path, runs: usize) -> Result<(), String> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bin = std::fs::read(vmbench).map_err(|e| format!("{}: {e}", vmbench.display()))?;
    let mut guests = crate::guests::bench()?;
    guests.extend(crate::guests::all().into_iter().filter(|(n, _)| *n == "idle.bin"));
    let initrd = |mode: &str| -> Result<PathBuf, String> {
        let mut w = vmkernel::cpio::Writer::new();
        w.add("init", vmkernel::cpio::S_IFREG | 0o755, 0, 0, 0, &bin);
        w.add("bench-mode", vmkernel::cpio::S_IFREG | 0o644, 0, 0, 0, mode.as_bytes());
        w.add("guests", vmkernel::cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
        for (name, img) in &guests {
            w.add(&format!("guests/{name}"), vmkernel::cpio::S_IFREG | 0o644, 0, 0, 0, img);
        }
        let p = dir.join(format!("vmbench-{mode}.cpio"));
        std::fs::write(&p, w.finish()).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let (icount_rd, all_rd) = (initrd("icount")?, initrd("all")?);
    let mantle = |rd: &Path, icount: bool| -> Vec<String> {
        let mut a: Vec<String> = ["-kernel", &kernel_elf.display().to_string(), "-initrd", &rd.display().to_string(), "-append", "init=/init"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if icount {
            a.extend(["-icount".into(), "shift=0".into()]);
        }
        a
    };
    let guest_dir = dir.join("bench-guests");
    std::fs::create_dir_all(&guest_dir).map_err(|e| e.to_string())?;
    let work_elf = guest_dir.join("bench-work.elf");
    let cpuid_elf = guest_dir.join("bench-cpuid.elf");
    for (name, img) in &guests {
        std::fs::write(guest_dir.join(name), img).map_err(|e| e.to_string())?;
    }
    let direct = |elf: &Path, icount: bool| -> Vec<String> {
        let mut a: Vec<String> = ["-kernel", &elf.display().to_string(), "-device", "isa-debug-exit,iobase=0xf4,iosize=4"].iter().map(|s| s.to_string()).collect();
        if icount {
            a.extend(["-icount".into(), "shift=0".into()]);
        }
        a
    };
    let mut figures: Vec<(String, Vec<f64>, String)> = Vec::new();
    let mut record = |name: &str, v: f64, unit: &str| {
        match figures.iter_mut().find(|f| f.0 == name) {
            Some(f) => f.1.push(v),
            None => figures.push((name.into(), vec![v], unit.into())),
        }
    };
    for run in 0..runs.max(1) {
        println!("run {}/{}", run + 1, runs.max(1));
        let out = serial_until(&mantle(&icount_rd, true), "vmbench: done", Duration::from_secs(900))?;
        for (name, v, _) in parse_vmbench(&out) {
            if name == "cpuid_exit" {
                println!("  Mantle -icount: CPUID exit round trip {v} host instructions (mean of the loop)");
                record("cpuid_exit_instructions", v, "instructions");
            }
            if name == "cpuid_exit_min" {
                println!("  Mantle -icount: CPUID exit round trip {v} host instructions (least iteration: no timer tick)");
                record("cpuid_exit_min_instructions", v, "instructions");
            }
            if name == "work" {
                println!("  Mantle -icount: work {v} ticks (instructions)");
                record("work_icount", v, "ticks");
            }
        }
        for l in out.lines().filter(|l| l.contains("failed")) {
            println!("  {l}");
        }
        let out = serial_until(&mantle(&all_rd, false), "vmbench: done", Duration::from_secs(900))?;
        for (name, v, unit) in parse_vmbench(&out) {
            println!("  Mantle: {name} {v} {unit}");
            if name != "cpuid_exit" {
                record(&name, v, &unit);
            }
        }
        for l in out.lines().filter(|l| l.contains("failed")) {
            println!("  {l}");
        }
        let out = serial_until(&direct(&work_elf, false), "primes", Duration::from_secs(300))?;
        let w = bench_field(&out, "work").ok_or_else(|| format!("no work figure from the direct run:\n{}", tail(out.as_bytes())))?;
        println!("  QEMU directly: work {w} ticks");
        record("work_direct", w as f64, "ticks");
        let out = serial_until(&direct(&work_elf, true), "primes", Duration::from_secs(300))?;
        let w = bench_field(&out, "work").ok_or_else(|| format!("no work figure from the direct -icount run:\n{}", tail(out.as_bytes())))?;
        println!("  QEMU directly, -icount: work {w} ticks (instructions)");
        record("work_direct_icount", w as f64, "ticks");
        let out = serial_until(&direct(&cpuid_elf, true), "iterations", Duration::from_secs(300))?;
        if let (Some(a), Some(b), Some(n)) = (bench_field(&out, "cpuid-loop"), bench_field(&out, "empty-loop"), bench_field(&out, "iterations")) {
            println!("  QEMU directly, -icount: CPUID {} instructions (no exit: for reference)", a.saturating_sub(b) / n.max(1));
        }
    }
    let med = |v: &[f64]| -> f64 {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let get = |n: &str| figures.iter().find(|f| f.0 == n).map(|f| med(&f.1)).unwrap_or(f64::NAN);
    println!();
    println!("VMM benchmarks (medians of {} run(s); QEMU TCG {}, 1 host CPU)", runs.max(1), QEMU_COMMON[3]);
    println!(
        "(a) host instructions per CPUID exit round trip (-icount shift=0): {:.0} (least iteration, no timer tick); {:.0} (mean of the loop)",
        get("cpuid_exit_min_instructions"),
        get("cpuid_exit_instructions")
    );
    let (wm, wd) = (get("work"), get("work_direct"));
    let (im, id) = (get("work_icount"), get("work_direct_icount"));
    println!(
        "(b) sieve workload under -icount shift=0 (deterministic; ticks are instructions, the host's included): {im:.0} in a Mantle VM, {id:.0} directly in QEMU: ratio {:.4}",
        im / id
    );
    println!("(b) sieve workload, wall clock (moves with the machine's load): {wm:.0} ticks in a Mantle VM, {wd:.0} ticks directly in QEMU: ratio {:.2}", wm / wd);
    println!(
        "(c) host memory per running VM beyond its guest RAM: {:.0} KiB (of which nested page tables and vCPU structures {:.0} KiB; the rest kernel heap)",
        get("host_memory_per_vm"),
        get("vm_overhead_frames_per_vm")
    );
    println!("(d) VMs created and powered on per second: {:.1}", get("vms_per_second"));
    Ok(())
}

// ---- disk benchmark: the datastore on Mantle vs Linux's vfat ----

/// Debian cloud kernel modules Linux needs for a FAT file system on
/// virtio-blk, in load order (the initramfs has no depmod data).
pub const DISK_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "fs/fat/fat.ko",
    "fs/fat/vfat.ko",
    "fs/nls/nls_cp437.ko",
    "fs/nls/nls_utf8.ko",
    // Debian builds vfat with iocharset=ascii by default.
    "fs/nls/nls_ascii.ko",
];

/// `/init` of Linux's disk-benchmark initramfs: load the modules, mount
/// the datastore's FAT partition, run the benchmark, unmount.
pub fn disk_init_script() -> String {
    let names: Vec<String> = DISK_MODULES.iter().map(|m| m.rsplit('/').next().unwrap_or(m).trim_end_matches(".ko").to_string()).collect();
    let mut s = linux_init_prologue("diskbench", &names);
    s.push_str(
        "i=0; while { [ ! -b /dev/vda1 ] || [ ! -b /dev/vdb ]; } && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done\n\
         mkdir -p /mnt\n\
         mount -t vfat /dev/vda1 /mnt || echo \"diskbench: error mount\"\n\
         /diskbench /mnt 256 /mnt2 /dev/vdb\n\
         umount /mnt && echo \"diskbench: unmounted\"\n\
         poweroff -f\n",
    );
    s
}

/// Files on the mount-time image, in this many directories.
pub const TREE_FILES: usize = 10_000;
const TREE_DIRS: usize = 100;
/// The mount-time image's label: Mantle mounts it at `/vmfs/volumes/MOUNT10K`.
pub const TREE_LABEL: &str = "MOUNT10K";

/// A whole-disk FAT32 image made on the host (`mkfs.fat`, then `mcopy`)
/// holding [`TREE_FILES`] small files in [`TREE_DIRS`] directories.
pub fn make_tree_image(img: &Path) -> Result<(), String> {
    let src = img.with_extension("tree");
    let _ = std::fs::remove_dir_all(&src);
    for d in 0..TREE_DIRS {
        let dir = src.join(format!("dir{d:02}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for f in 0..TREE_FILES / TREE_DIRS {
            std::fs::write(dir.join(format!("file {f:03} of directory {d:02}.txt")), format!("file {f} of {d}\n"))
                .map_err(|e| e.to_string())?;
        }
    }
    let _ = std::fs::remove_file(img);
    std::fs::File::create(img).and_then(|f| f.set_len(256 << 20)).map_err(|e| format!("{}: {e}", img.display()))?;
    let out = Command::new("mkfs.fat")
        .args(["-F", "32", "-n", TREE_LABEL])
        .arg(img)
        .output()
        .map_err(|e| format!("mkfs.fat ({e}): install dosfstools"))?;
    if !out.status.success() {
        return Err(format!("mkfs.fat: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut mcopy = Command::new("mcopy");
    mcopy.env("MTOOLS_SKIP_CHECK", "1").arg("-s").arg("-i").arg(img);
    for d in 0..TREE_DIRS {
        mcopy.arg(src.join(format!("dir{d:02}")));
    }
    let out = mcopy.arg("::/").output().map_err(|e| format!("mcopy ({e}): install mtools"))?;
    let _ = std::fs::remove_dir_all(&src);
    if !out.status.success() {
        return Err(format!("mcopy: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// The mount time of the `TREE_LABEL` datastore from Mantle's log line
/// `storage: mounted ... /vmfs/volumes/MOUNT10K (...) in N ms`.
pub fn mantle_mount_ms(log: &str) -> Option<f64> {
    let l = log.lines().find(|l| l.contains("storage: mounted ") && l.contains(&format!("/vmfs/volumes/{TREE_LABEL} ")))?;
    l.rsplit_once(" in ")?.1.trim().strip_suffix(" ms")?.parse().ok()
}

/// `diskbench: <name> <value> <unit>` lines.
pub fn parse_diskbench(out: &str) -> Vec<(String, f64, String)> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("diskbench: ")?;
            let mut w = rest.split_whitespace();
            let (name, value, unit) = (w.next()?, w.next()?.parse().ok()?, w.next()?);
            Some((name.to_string(), value, unit.to_string()))
        })
        .collect()
}

/// Runs `diskbench` (a static binary from `userworld/`) as PID 1 on
/// Mantle (datastore auto-mounted) and on Debian's Linux (vfat mounted by
/// the initramfs), alternately, `runs` times each, on the same FAT32
/// image file behind the same `virtio-blk-pci` device and cache mode;
/// prints the medians side by side.
/// `only`: `Some("mantle")` or `Some("linux")` runs one side alone.
pub fn bench_disk(kernel_elf: &Path, diskbench: &Path, runs: usize, only: Option<&str>) -> Result<(), String> {
    let dir = work_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bin = std::fs::read(diskbench).map_err(|e| format!("{}: {e}", diskbench.display()))?;
    let img = dir.join("diskbench.img");
    let _ = std::fs::remove_file(&img);
    crate::datastore::create(&img, 1 << 30, "datastore1")?;
    // mcopy takes minutes for 10,000 files on a loaded machine: the image
    // is made once and copied for each run (Mantle adds its journal).
    let pristine = dir.join("mount10k-pristine.img");
    if !pristine.is_file() {
        let t = Instant::now();
        let partial = dir.join("mount10k-partial.img");
        make_tree_image(&partial)?;
        std::fs::rename(&partial, &pristine).map_err(|e| e.to_string())?;
        println!("  mount-time image: {TREE_FILES} files in {TREE_DIRS} directories by mkfs.fat + mcopy ({:.1} s)", t.elapsed().as_secs_f64());
    }
    let tree_img = dir.join("mount10k.img");

    let mantle_initrd = mantle_bench_initrd("diskbench", &[("init", &bin)])?;

    let kernel = crate::debian::linux_cloud_kernel()?;
    let modules_root = crate::debian::fetch_package(crate::debian::LINUX_CLOUD_META)?.join("lib/modules");
    let version_dir = std::fs::read_dir(&modules_root)
        .map_err(|e| format!("{}: {e}", modules_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("kernel").is_dir())
        .ok_or_else(|| format!("no kernel modules under {}", modules_root.display()))?;
    let mut modules = Vec::new();
    for m in DISK_MODULES {
        let path = version_dir.join("kernel").join(m);
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = m.rsplit('/').next().unwrap_or(m).trim_end_matches(".ko");
        modules.push((name.to_string(), data));
    }
    let applets = ["sh", "mount", "umount", "insmod", "mkdir", "sleep", "poweroff", "echo", "[", "test"];
    let linux_initrd = linux_bench_initrd("diskbench", &applets, &modules, &[("diskbench", &bin)], &disk_init_script())?;

    let disk = [
        "-drive".to_string(),
        format!("file={},format=raw,if=none,id=ds0,cache=writeback", img.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=ds0".to_string(),
        "-drive".to_string(),
        format!("file={},format=raw,if=none,id=ds1,cache=writeback", tree_img.display()),
        "-device".to_string(),
        "virtio-blk-pci,drive=ds1".to_string(),
    ];
    let mut mantle_args = mantle_boot_args(kernel_elf, &mantle_initrd, "init=/init");
    mantle_args.extend(disk.iter().cloned());
    let mut linux_args = linux_boot_args(&kernel, &linux_initrd);
    linux_args.extend(disk.iter().cloned());

    let mut results = SideBySide::default();
    for run in 0..runs.max(1) {
        for (who, args) in [("Mantle", &mantle_args), ("Linux", &linux_args)] {
            if only.is_some_and(|o| !o.eq_ignore_ascii_case(who)) {
                continue;
            }
            // Both end by unmounting (Mantle's kernel logs "... unmounted").
            let st = Command::new("cp").arg("--sparse=always").arg(&pristine).arg(&tree_img).status();
            if !st.is_ok_and(|s| s.success()) {
                return Err(format!("cannot copy {} to {}", pristine.display(), tree_img.display()));
            }
            let out = serial_until(args, "unmounted", Duration::from_secs(1800))?;
            for l in out.lines().filter(|l| l.contains("storage: diskstats") || l.contains("completion interrupts")) {
                println!("  run {}/{}: {who:<6} {}", run + 1, runs, l.trim());
            }
            if let Some(l) = out.lines().find(|l| l.contains("diskbench: error")) {
                return Err(format!("{who}: {l}\n{}", tail(out.as_bytes())));
            }
            let mut figures = parse_diskbench(&out);
            if who == "Mantle" {
                match mantle_mount_ms(&out) {
                    Some(ms) => figures.push((String::from("mount_10k"), ms, String::from("ms"))),
                    None => println!("  run {}/{}: Mantle did not log mounting {TREE_LABEL}", run + 1, runs),
                }
            }
            for (name, v, unit) in figures {
                println!("  run {}/{}: {who:<6} {name:<22} {v:>10.2} {unit}", run + 1, runs);
                results.record(who == "Mantle", &name, v, &unit);
            }
        }
    }
    results.print(2);
    println!("(QEMU TCG, {} MiB RAM, 1 CPU, virtio-blk-pci, cache=writeback, the same 1 GiB FAT32 image; compare the ratio)", QEMU_COMMON[5]);
    println!(
        "(mount_10k: a second disk, FAT32 made by mkfs.fat + mcopy with {TREE_FILES} files; Mantle's from its kernel log (boot-time mount: boot sector, FAT check, journal made on first mount), Linux's a timed mount(2); walk_10k: every directory read, no stat per file; for ms lower is better)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn mount_time_from_mantles_log() {
        let log = "storage: mounted mpx.vmhba0:C0:T0:L0:1 as /vmfs/volumes/datastore1 (11111111-0000, Fat32) in 40 ms\n\
                   storage: mounted mpx.vmhba1:C0:T0:L0 as /vmfs/volumes/MOUNT10K (22222222-0000, Fat32) in 1234 ms\n";
        assert_eq!(mantle_mount_ms(log), Some(1234.0));
        assert_eq!(mantle_mount_ms("storage: mounted x as /vmfs/volumes/datastore1 (u, Fat32) in 5 ms"), None);
        let figures = parse_diskbench("diskbench: walk_10k 812.5 ms\ndiskbench: tree_files 10000 files\n");
        assert_eq!(figures[1], (String::from("tree_files"), 10000.0, String::from("files")));
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[ms(7)]), Some(ms(7)));
        assert_eq!(median(&[ms(9), ms(1), ms(5)]), Some(ms(5)));
        assert_eq!(median(&[ms(4), ms(1), ms(100), ms(2)]), Some(ms(3)));
        assert_eq!(median(&[ms(5), ms(900), ms(4), ms(6), ms(3)]), Some(ms(5)));
    }

    #[test]
    fn initramfs_layout() {
        let archive = linux_initramfs(b"\x7fELFbusybox");
        let entries: Vec<cpio::Entry> = cpio::entries(&archive).collect::<Result<_, _>>().unwrap();
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.name == name)
                .unwrap_or_else(|| panic!("{name}"))
        };
        let init = find("init");
        assert!(init.is_file());
        assert_eq!(init.mode & 0o777, 0o755);
        let script = std::str::from_utf8(init.data).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("echo \"linux: ready\""));
        assert!(script.contains(LINUX_MARKER));
        assert!(script.trim_end().ends_with("poweroff -f"));
        let bb = find("bin/busybox");
        assert!(bb.is_file() && bb.mode & 0o111 != 0);
        assert_eq!(bb.data, b"\x7fELFbusybox");
        for applet in ["sh", "echo", "poweroff", "mount"] {
            let link = find(&format!("bin/{applet}"));
            assert!(link.is_symlink());
            assert_eq!(link.data, b"busybox");
        }
        for dir in ["bin", "dev", "proc", "sys"] {
            assert!(find(dir).is_dir());
        }
        // Parents come before their children, as the kernel's unpacker needs.
        let pos = |n: &str| entries.iter().position(|e| e.name == n).unwrap();
        assert!(pos("bin") < pos("bin/busybox"));
    }

    #[test]
    fn grub_configs() {
        let m = mantle_grub_cfg();
        assert!(m.contains("set timeout=0") && m.contains("multiboot2 /boot/vmkernel"));
        assert!(
            m.contains(&format!("echo \"{GRUB_MARKER}\""))
                && m.contains("terminal_output --append serial")
        );
        assert!(m.find(GRUB_MARKER) < m.find("menuentry"));
        let l = linux_grub_cfg();
        assert!(l.contains("linux /boot/vmlinuz console=ttyS0"));
        assert!(l.contains("initrd /boot/initrd.cpio"));
    }

    #[test]
    fn boot_arguments_per_method() {
        let s = Subject {
            name: "x",
            marker: "m",
            direct: vec!["-kernel".into(), "k".into()],
            pvh: vec!["-kernel".into(), "p".into()],
            iso: PathBuf::from("/i.iso"),
        };
        let v = Path::new("/v.fd");
        assert_eq!(boot_args(&s, Method::DirectKernel, v), ["-kernel", "k"]);
        assert_eq!(boot_args(&s, Method::Pvh, v), ["-kernel", "p"]);
        assert_eq!(
            boot_args(&s, Method::IsoSeaBios, v),
            ["-cdrom", "/i.iso", "-boot", "d"]
        );
        let o = boot_args(&s, Method::IsoOvmf, v).join(" ");
        assert!(o.contains(OVMF_CODE) && o.contains("readonly=on") && o.contains("file=/v.fd"));
        assert!(o.ends_with("-cdrom /i.iso -boot d"));
    }

    #[test]
    fn marker_search_and_tail() {
        assert!(contains(
            b"xx mantle: ready cpus=1",
            MANTLE_MARKER.as_bytes()
        ));
        assert!(!contains(b"mantle: rea", MANTLE_MARKER.as_bytes()));
        assert_eq!(tail(b"abc"), "abc");
        assert_eq!(tail(&[b'a'; 5000]).len(), 2001);
    }
}
