//! Booting Mantle in QEMU (TCG): interactively for people, captured for
//! the image tests.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hosttools;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// QEMU's isa-debug-exit device at the port the kernel's `debug_exit` uses.
pub const DEBUG_EXIT_DEVICE: &str = "isa-debug-exit,iobase=0xf4,iosize=0x04";
/// Exit statuses QEMU reports for the kernel's debug-exit values 0x10 / 0x11.
pub const EXIT_SUCCESS: i32 = 33;
pub const EXIT_FAILURE: i32 = 35;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Machine {
    Pc,
    Q35,
}

/// What QEMU boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// A CD-ROM image (the kernel command line is inside it).
    Iso(PathBuf),
    /// The ELF directly through its PVH note (`-kernel`), fastest.
    Pvh { kernel: PathBuf, initrd: Option<PathBuf>, cmdline: String },
    /// A raw disk image (used for boot sectors made by tests).
    Disk(PathBuf),
}

/// The CPU model `run` uses by default: qemu64 plus the SVM features the
/// VMM needs (QEMU does not advertise NPT unless asked).
pub const DEFAULT_CPU: &str = "qemu64,+svm,+npt";

/// A NIC model QEMU emulates that Mantle drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    /// `virtio-net-pci` (the `virtio-net` driver).
    VirtioNet,
    /// Intel 82574L, `e1000e` (the `e1000e` driver; q35's default NIC).
    E1000e,
}

impl NicModel {
    /// The `-device` name.
    pub fn device(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000e => "e1000e",
        }
    }
}

/// A host TCP port on 127.0.0.1 forwarded to a port of the guest
/// (QEMU user networking's `hostfwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
}

impl std::str::FromStr for PortForward {
    type Err = String;

    /// `HOST:GUEST`, e.g. `18443:443`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("port forward {s:?}: expected HOST:GUEST with ports 1-65535, e.g. 18443:443");
        let (host, guest) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
        Ok(PortForward { host: port(host)?, guest: port(guest)? })
    }
}

/// The management ports `run` forwards unless told otherwise: the web
/// host client (HTTPS 443, HTTP 80) and CIM-XML (5988 HTTP, 5989 HTTPS).
pub const DEFAULT_FORWARDS: [PortForward; 4] = [
    PortForward { host: 8443, guest: 443 },
    PortForward { host: 8080, guest: 80 },
    PortForward { host: 5988, guest: 5988 },
    PortForward { host: 5989, guest: 5989 },
];

/// A NIC on QEMU's user network (the guest gets 10.0.2.15 by DHCP; the
/// host is 10.0.2.2), with host ports forwarded to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub model: NicModel,
    pub forwards: Vec<PortForward>,
}

impl Nic {
    pub fn user(model: NicModel) -> Self {
        Nic { model, forwards: DEFAULT_FORWARDS.to_vec() }
    }

    /// `-netdev user,id=netN,hostfwd=... -device MODEL,netdev=netN`.
    /// Forwards listen on 127.0.0.1 only.
    pub fn args(&self, index: usize) -> Vec<String> {
        let mut netdev = format!("user,id=net{index}");
        for f in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest));
        }
        vec!["-netdev".into(), netdev, "-device".into(), format!("{},netdev=net{index}", self.model.device())]
    }

    /// What each forward reaches, for people: `https://127.0.0.1:8443/ -> guest port 443 (web host client, HTTPS)`.
    pub fn urls(&self) -> Vec<String> {
        self.forwards
            .iter()
            .map(|f| {
                let (scheme, what) = match f.guest {
                    443 => ("https", "web host client, HTTPS"),
                    80 => ("http", "web host client, HTTP"),
                    5988 => ("http", "CIM-XML over HTTP"),
                    5989 => ("https", "CIM-XML over HTTPS"),
                    22 => ("ssh", "SSH"),
                    _ => ("tcp", "TCP"),
                };
                format!("{scheme}://127.0.0.1:{}/ -> guest port {} ({what})", f.host, f.guest)
            })
            .collect()
    }
}

/// One QEMU invocation.
#[derive(Clone, Debug)]
pub struct Qemu {
    pub machine: Machine,
    /// `-cpu` value, e.g. [`DEFAULT_CPU`] or `max`.
    pub cpu: String,
    pub cpus: u32,
    pub mem_mib: u32,
    pub uefi: bool,
    pub boot: Boot,
    /// Adds the isa-debug-exit device.
    pub debug_exit: bool,
    /// `-no-reboot`: a reset (or triple fault) ends QEMU with status 0.
    pub no_reboot: bool,
    /// `-d cpu_reset -D <file>`: shows whether a triple fault happened.
    pub cpu_reset_log: Option<PathBuf>,
    /// Writable copy of the OVMF variable store (UEFI only); a temporary
    /// copy is made when None.
    pub ovmf_vars: Option<PathBuf>,
    /// NICs, each on its own QEMU user network.
    pub nics: Vec<Nic>,
    /// Extra arguments, appended last (`-device ...`, `-drive ...`).
    pub extra: Vec<String>,
    /// Captured runs only: kill QEMU after this long.
    pub timeout: Duration,
    /// Captured runs only: kill QEMU once the serial output contains this
    /// `stop_when_count` times (e.g. the ready line twice: a reboot).
    pub stop_when: Option<String>,
    pub stop_when_count: usize,
}

impl Qemu {
    pub fn new(boot: Boot) -> Self {
        Qemu {
            machine: Machine::Pc,
            cpu: DEFAULT_CPU.into(),
            cpus: 4,
            mem_mib: 1024,
            uefi: false,
            boot,
            debug_exit: false,
            no_reboot: false,
            cpu_reset_log: None,
            ovmf_vars: None,
            nics: Vec::new(),
            extra: Vec::new(),
            timeout: Duration::from_secs(120),
            stop_when: None,
            stop_when_count: 1,
        }
    }

    /// The argument list (without the serial/display options, which depend
    /// on whether the run is interactive). `vars` is the OVMF store to use.
    fn args(&self, vars: Option<&Path>) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&["-machine", match self.machine {
            Machine::Pc => "pc",
            Machine::Q35 => "q35",
        }]);
        push(&["-accel", "tcg", "-cpu", &self.cpu, "-smp", &self.cpus.to_string(), "-m", &self.mem_mib.to_string()]);
        if self.uefi {
            push(&["-drive", &format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}")]);
            if let Some(v) = vars {
                push(&["-drive", &format!("if=pflash,format=raw,unit=1,file={}", v.display())]);
            }
        }
        match &self.boot {
            Boot::Iso(iso) => push(&["-cdrom", &iso.display().to_string(), "-boot", "d"]),
            Boot::Pvh { kernel, initrd, cmdline } => {
                push(&["-kernel", &kernel.display().to_string(), "-append", cmdline]);
                if let Some(i) = initrd {
                    push(&["-initrd", &i.display().to_string()]);
                }
            }
            Boot::Disk(d) => push(&["-drive", &format!("file={},format=raw,if=ide", d.display()), "-boot", "c"]),
        }
        if self.debug_exit {
            push(&["-device", DEBUG_EXIT_DEVICE]);
        }
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        if let Some(log) = &self.cpu_reset_log {
            push(&["-d", "cpu_reset", "-D", &log.display().to_string()]);
        }
        for (i, nic) in self.nics.iter().enumerate() {
            a.extend(nic.args(i));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn check(&self) -> Result<(), String> {
        hosttools::ensure(&[hosttools::QEMU])?;
        if self.uefi {
            hosttools::ensure(&[hosttools::OVMF_CODE, hosttools::OVMF_VARS])?;
        }
        let file = match &self.boot {
            Boot::Iso(p) | Boot::Disk(p) => p,
            Boot::Pvh { kernel, .. } => kernel,
        };
        if !file.is_file() {
            return Err(format!("{}: no such file to boot", file.display()));
        }
        Ok(())
    }

    /// The full command line, for printing.
    pub fn command_line(&self, vars: Option<&Path>, interactive: bool) -> String {
        let mut parts = vec!["qemu-system-x86_64".to_string()];
        parts.extend(self.args(vars));
        parts.extend(serial_args(interactive).iter().map(|s| s.to_string()));
        parts.iter().map(|p| shell_quote(p)).collect::<Vec<_>>().join(" ")
    }

    /// Boots with the serial console (and QEMU monitor, Ctrl-A C) on the
    /// terminal; returns QEMU's exit status.
    pub fn run_interactive(&self) -> Result<i32, String> {
        self.check()?;
        let vars = match (&self.ovmf_vars, self.uefi) {
            (Some(v), true) => {
                if !v.is_file() {
                    copy_vars(v)?;
                }
                Some(v.clone())
            }
            (None, true) => return Err("interactive UEFI boots need an OVMF variable store path".into()),
            _ => None,
        };
        println!("$ {}", self.command_line(vars.as_deref(), true));
        let status = Command::new("qemu-system-x86_64")
            .args(self.args(vars.as_deref()))
            .args(serial_args(true))
            .status()
            .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
        Ok(status.code().unwrap_or(-1))
    }

    /// Boots with the serial port captured; returns when QEMU exits, when
    /// `stop_when` shows up on the serial port, or at the timeout.
    pub fn run_captured(&self) -> Result<RunResult, String> {
        self.check()?;
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let vars = match (&self.ovmf_vars, self.uefi) {
            (Some(v), true) => Some(v.clone()),
            (None, true) => Some(tmp.path().join("OVMF_VARS_4M.fd")),
            _ => None,
        };
        if let Some(v) = &vars {
            copy_vars(v)?;
        }
        let command_line = self.command_line(vars.as_deref(), false);
        if let Some(log) = &self.cpu_reset_log {
            // QEMU appends to the log: start from an empty one.
            let _ = std::fs::remove_file(log);
        }
        let start = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .args(self.args(vars.as_deref()))
            .args(serial_args(false))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
        let serial = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            spawn_reader(child.stdout.take().unwrap(), serial.clone()),
            spawn_reader(child.stderr.take().unwrap(), stderr.clone()),
        ];
        let mut outcome = Outcome::Exited(-1);
        loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                outcome = Outcome::Exited(st.code().unwrap_or(-1));
                break;
            }
            if start.elapsed() >= self.timeout {
                outcome = Outcome::TimedOut;
            } else if let Some(pat) = &self.stop_when
                && String::from_utf8_lossy(&serial.lock().unwrap()).matches(pat.as_str()).count() >= self.stop_when_count
            {
                outcome = Outcome::Stopped;
            }
            if !matches!(outcome, Outcome::Exited(_)) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let elapsed = start.elapsed();
        for r in readers {
            let _ = r.join();
        }
        let cpu_reset_log = match &self.cpu_reset_log {
            Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
            None => String::new(),
        };
        let serial = String::from_utf8_lossy(&serial.lock().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
        Ok(RunResult {
            command_line,
            outcome,
            triple_fault: cpu_reset_log.contains("Triple fault"),
            cpu_reset_log,
            serial,
            stderr,
            elapsed,
        })
    }
}

fn serial_args(interactive: bool) -> &'static [&'static str] {
    if interactive {
        &["-serial", "mon:stdio", "-display", "none"]
    } else {
        &["-serial", "stdio", "-display", "none", "-monitor", "none"]
    }
}

fn copy_vars(to: &Path) -> Result<(), String> {
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::copy(OVMF_VARS, to).map(|_| ()).map_err(|e| format!("copying {OVMF_VARS} to {}: {e}", to.display()))
}

fn spawn_reader(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_=,.+/:".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// QEMU exited with this status (-1 if killed by a signal).
    Exited(i32),
    /// `stop_when` appeared; QEMU was killed.
    Stopped,
    /// The timeout passed; QEMU was killed.
    TimedOut,
}

/// What a captured run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub command_line: String,
    pub outcome: Outcome,
    /// The serial port, whole.
    pub serial: String,
    /// QEMU's own messages.
    pub stderr: String,
    pub cpu_reset_log: String,
    /// The `-d cpu_reset` log records a triple fault.
    pub triple_fault: bool,
    pub elapsed: Duration,
}

impl RunResult {
    /// QEMU's exit status, if it exited by itself.
    pub fn exit_status(&self) -> Option<i32> {
        match self.outcome {
            Outcome::Exited(s) => Some(s),
            _ => None,
        }
    }

    /// Everything worth showing when a test fails.
    pub fn report(&self) -> String {
        format!(
            "$ {}\noutcome: {:?} after {:.2?}; triple fault: {}\n--- serial ---\n{}\n--- qemu stderr ---\n{}--- end ---",
            self.command_line, self.outcome, self.elapsed, self.triple_fault, self.serial, self.stderr
        )
    }
}

/// A running QEMU whose serial console a test types at and reads, like an
/// administrator at the ESXi Shell.
pub struct Console {
    child: std::process::Child,
    /// Where typed bytes go (QEMU's stdin, or Bochs's serial socket).
    stdin: Box<dyn Write + Send>,
    serial: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    mark: usize,
    pub command_line: String,
    /// When the emulator started (for `MANTLE_STEP_TIMES`).
    started: Instant,
}

impl Qemu {
    /// Boots with the serial port on a pipe both ways.
    pub fn spawn_console(&self) -> Result<Console, String> {
        self.check()?;
        let command_line = self.command_line(None, false);
        let mut child = Command::new("qemu-system-x86_64")
            .args(self.args(None))
            .args(serial_args(false))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run qemu-system-x86_64: {e}"))?;
        let serial = Arc::new(Mutex::new(Vec::new()));
        spawn_reader(child.stdout.take().unwrap(), serial.clone());
        let stdin = Box::new(child.stdin.take().unwrap());
        Ok(Console { child, stdin, serial, mark: 0, command_line, started: Instant::now() })
    }
}

impl Console {
    /// A console over any emulator process: `input` receives typed bytes,
    /// `output` is read in the background into the log.
    pub fn from_parts(child: std::process::Child, input: Box<dyn Write + Send>, output: impl Read + Send + 'static, command_line: String) -> Console {
        let serial = Arc::new(Mutex::new(Vec::new()));
        spawn_reader(output, serial.clone());
        Console { child, stdin: input, serial, mark: 0, command_line, started: Instant::now() }
    }

    /// Types `text` (add `\n` to press Enter).
    pub fn send(&mut self, text: &str) -> Result<(), String> {
        // A real serial line delivers bytes one at a time; pace them so the
        // 16-byte UART FIFO never overflows.
        for chunk in text.as_bytes().chunks(8) {
            self.stdin.write_all(chunk).map_err(|e| format!("writing to the console: {e}"))?;
            self.stdin.flush().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// Waits until `pattern` appears after the mark; returns the text from
    /// the mark through the match and moves the mark past it.
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, String> {
        let start = Instant::now();
        loop {
            {
                let buf = self.serial.lock().unwrap();
                let text = String::from_utf8_lossy(&buf[self.mark.min(buf.len())..]).into_owned();
                if let Some(i) = text.find(pattern) {
                    let upto = i + pattern.len();
                    self.mark += text[..upto].len();
                    return Ok(text[..upto].to_string());
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("QEMU exited ({st}) while waiting for {pattern:?}"));
            }
            if start.elapsed() >= timeout {
                return Err(format!("timed out after {timeout:?} waiting for {pattern:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a shell command and returns its output (between the command
    /// echo and the next prompt, whose text is `prompt`).
    pub fn run(&mut self, cmd: &str, prompt: &str, timeout: Duration) -> Result<String, String> {
        // The end marker is computed by the shell, so the echo of the typed
        // line (which shows the arithmetic, not the number) never matches it.
        let n = 1000 + self.mark;
        let step_start = Instant::now();
        let marker = format!("__done_{}__", n + 1);
        self.send(&format!("{cmd}; echo __done_$(({n}+1))__\n"))?;
        let out = self.expect(&marker, timeout)?;
        let _ = self.expect(prompt, timeout);
        // Where a test's time goes, when asked (`MANTLE_STEP_TIMES=1 cargo
        // test ... -- --nocapture`): seconds since boot, this command's.
        if std::env::var_os("MANTLE_STEP_TIMES").is_some() {
            let short: String = cmd.chars().take(110).collect();
            eprintln!("[{:7.1}s {:6.1}s] {short}", self.started.elapsed().as_secs_f64(), step_start.elapsed().as_secs_f64());
        }
        // Drop the echoed command line: everything through its last bit,
        // which stays whole even when a kernel log line lands in the echo.
        let echo_end = format!("({n}+1))__");
        let out = match out.rfind(&echo_end) {
            Some(i) => &out[i + echo_end.len()..],
            None => out.split_once('\n').map_or("", |(_, rest)| rest),
        };
        let out = out.trim_end_matches(marker.as_str()).replace('\r', "");
        Ok(out.trim_start_matches('\n').trim_end_matches('\n').to_string())
    }

    /// Time since the emulator started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything the console printed so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.serial.lock().unwrap()).into_owned()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for QEMU to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_cover_the_options() {
        let mut q = Qemu::new(Boot::Pvh { kernel: "/k".into(), initrd: Some("/i".into()), cmdline: "a b".into() });
        q.machine = Machine::Q35;
        q.uefi = true;
        q.debug_exit = true;
        q.no_reboot = true;
        q.cpu_reset_log = Some("/tmp/r.log".into());
        q.extra = vec!["-device".into(), "virtio-net-pci".into()];
        let a = q.args(Some(Path::new("/v.fd"))).join(" ");
        assert!(a.starts_with("-machine q35 -accel tcg -cpu qemu64,+svm,+npt -smp 4 -m 1024"), "{a}");
        assert!(a.contains(&format!("readonly=on,file={OVMF_CODE}")));
        assert!(a.contains("unit=1,file=/v.fd"));
        assert!(a.contains("-kernel /k -append a b -initrd /i"));
        assert!(a.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04 -no-reboot -d cpu_reset -D /tmp/r.log"));
        assert!(a.ends_with("-device virtio-net-pci"));
        let c = q.command_line(None, true);
        assert!(c.contains("-append 'a b'") && c.ends_with("-serial mon:stdio -display none"), "{c}");
    }

    #[test]
    fn nics_on_user_networking_with_forwards() {
        let mut q = Qemu::new(Boot::Iso("/m.iso".into()));
        q.nics = vec![Nic::user(NicModel::VirtioNet), Nic { model: NicModel::E1000e, forwards: vec!["18443:443".parse().unwrap()] }];
        q.extra = vec!["-S".into()];
        let a = q.args(None).join(" ");
        assert!(
            a.ends_with(
                "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=tcp:127.0.0.1:8080-:80,\
                 hostfwd=tcp:127.0.0.1:5988-:5988,hostfwd=tcp:127.0.0.1:5989-:5989 -device virtio-net-pci,netdev=net0 \
                 -netdev user,id=net1,hostfwd=tcp:127.0.0.1:18443-:443 -device e1000e,netdev=net1 -S"
            ),
            "{a}"
        );
        assert_eq!(
            Nic::user(NicModel::E1000e).urls(),
            [
                "https://127.0.0.1:8443/ -> guest port 443 (web host client, HTTPS)",
                "http://127.0.0.1:8080/ -> guest port 80 (web host client, HTTP)",
                "http://127.0.0.1:5988/ -> guest port 5988 (CIM-XML over HTTP)",
                "https://127.0.0.1:5989/ -> guest port 5989 (CIM-XML over HTTPS)",
            ]
        );
    }

    #[test]
    fn port_forward_parsing() {
        assert_eq!("18443:443".parse::<PortForward>(), Ok(PortForward { host: 18443, guest: 443 }));
        for bad in ["443", "0:443", "a:443", "1:70000", ":", "1:2:3"] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }
}
