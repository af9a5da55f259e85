//! Booting the ISO in Bochs, the emulator that has VMX (QEMU TCG does not).
//! Bochs always exits with status 1, so results are read from the serial
//! file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::hosttools;

pub const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
pub const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// Skylake-X: VMX with EPT, VPID and unrestricted guest.
pub const CPU_MODEL: &str = "corei7_skylake_x";

#[derive(Clone, Debug)]
pub struct Bochs {
    pub iso: PathBuf,
    pub cpus: u32,
    pub mem_mib: u32,
    /// Where COM1 goes (a file; Bochs buffers nothing, so it can be tailed),
    /// unless `serial_port` is set.
    pub serial_file: PathBuf,
    /// COM1 as a TCP server on this localhost port instead (Bochs waits for
    /// the client before it starts the machine): see [`Bochs::spawn_console`].
    pub serial_port: Option<u16>,
    /// Where Bochs's own log and terminal output go.
    pub log_file: PathBuf,
}

impl Bochs {
    pub fn new(iso: PathBuf, serial_file: PathBuf) -> Self {
        let log_file = serial_file.with_extension("bochs.log");
        Bochs { iso, cpus: 1, mem_mib: 512, serial_file, serial_port: None, log_file }
    }

    pub fn bochsrc(&self) -> String {
        // reset_on_triple_fault=0: a triple fault stops Bochs instead of
        // rebooting the ISO (which would look like a hang). sync=none with a
        // fixed ips: guest time follows instructions, not the wall clock.
        format!(
            "megs: {mem}\n\
             cpu: model={CPU_MODEL}, count={cpus}, ips=65000000, reset_on_triple_fault=0\n\
             clock: sync=none, time0=local\n\
             romimage: file={BIOS}\n\
             vgaromimage: file={VGA_BIOS}\n\
             display_library: term\n\
             sound: driver=dummy\n\
             ata0-master: type=cdrom, path={iso}, status=inserted\n\
             boot: cdrom\n\
             {com1}\n\
             log: {log}\n\
             panic: action=fatal\n\
             error: action=report\n",
            mem = self.mem_mib,
            cpus = self.cpus,
            iso = self.iso.display(),
            com1 = match self.serial_port {
                Some(port) => format!("com1: enabled=1, mode=socket-server, dev=localhost:{port}"),
                None => format!("com1: enabled=1, mode=file, dev={}", self.serial_file.display()),
            },
            log = self.log_file.display(),
        )
    }

    /// Boots with COM1 on a localhost TCP socket and returns a console to
    /// type at and read, like QEMU's (`qemu::Console`).
    pub fn spawn_console(&self) -> Result<crate::qemu::Console, String> {
        // A free port: bind, note it, let go (Bochs binds it next).
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
        let mut b = self.clone();
        b.serial_port = Some(port);
        let mut running = b.spawn()?;
        let start = Instant::now();
        let stream = loop {
            match std::net::TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if start.elapsed() > Duration::from_secs(60) || running.exited() => {
                    return Err(format!("cannot reach Bochs's serial socket on port {port}: {e}\n{}", running.log_tail(40)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let _ = stream.set_nodelay(true);
        let input = stream.try_clone().map_err(|e| e.to_string())?;
        let child = running.take_child().ok_or("Bochs is gone")?;
        let command_line = format!("bochs -q -f <bochsrc: {CPU_MODEL}, {} CPUs, {} MiB, COM1 on localhost:{port}>", self.cpus, self.mem_mib);
        Ok(crate::qemu::Console::from_parts(child, Box::new(input), stream, command_line))
    }

    /// Starts Bochs in the background; the returned guard kills it on drop.
    pub fn spawn(&self) -> Result<Running, String> {
        hosttools::ensure(hosttools::BOCHS_TOOLS)?;
        if !self.iso.is_file() {
            return Err(format!("{}: no such ISO", self.iso.display()));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rc = dir.path().join("bochsrc.txt");
        let cmds = dir.path().join("debugger.rc");
        std::fs::write(&rc, self.bochsrc()).map_err(|e| e.to_string())?;
        // The internal debugger stops at the start: tell it to continue.
        std::fs::write(&cmds, "c\n").map_err(|e| e.to_string())?;
        for f in [&self.serial_file, &self.log_file] {
            if let Some(d) = f.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            let _ = std::fs::remove_file(f);
        }
        std::fs::write(&self.serial_file, b"").map_err(|e| e.to_string())?;
        let term_out = std::fs::File::create(self.log_file.with_extension("term")).map_err(|e| e.to_string())?;
        let child = Command::new("bochs")
            .arg("-q")
            .arg("-f")
            .arg(&rc)
            .arg("-rc")
            .arg(&cmds)
            // The term display draws the (unused) VGA screen with curses:
            // keep it dumb and away from the user's terminal.
            .env("TERM", "dumb")
            .stdin(Stdio::null())
            .stdout(term_out.try_clone().map_err(|e| e.to_string())?)
            .stderr(term_out)
            .spawn()
            .map_err(|e| format!("cannot run bochs: {e}"))?;
        Ok(Running { child: Some(child), _dir: dir, serial_file: self.serial_file.clone(), log_file: self.log_file.clone() })
    }
}

/// A Bochs process; killed when dropped.
pub struct Running {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub serial_file: PathBuf,
    pub log_file: PathBuf,
}

impl Running {
    pub fn serial(&self) -> String {
        read_lossy(&self.serial_file)
    }

    /// Whether Bochs has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Hands the process to a console (which then kills it on drop).
    fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// The last `n` lines of Bochs's own log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = read_lossy(&self.log_file);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls the serial file until it contains `pattern`, Bochs exits, or
    /// the timeout passes. Returns whether the pattern appeared.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.serial().contains(pattern) {
                return true;
            }
            if self.exited() || start.elapsed() >= timeout {
                // One last look: the line may have landed as Bochs stopped.
                return self.serial().contains(pattern);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for Bochs to end, copying new serial output to stdout.
    pub fn follow(&mut self) -> Result<(), String> {
        use std::io::Write;
        let mut shown = 0;
        loop {
            let done = self.exited();
            let s = std::fs::read(&self.serial_file).unwrap_or_default();
            if s.len() > shown {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&s[shown..]);
                let _ = out.flush();
                shown = s.len();
            }
            if done {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_has_the_settings_vmx_boots_need() {
        let b = Bochs::new("/x/m.iso".into(), "/x/serial.txt".into());
        let rc = b.bochsrc();
        assert!(rc.contains("cpu: model=corei7_skylake_x, count=1, ips=65000000, reset_on_triple_fault=0\n"));
        assert!(rc.contains("clock: sync=none"));
        assert!(rc.contains("ata0-master: type=cdrom, path=/x/m.iso, status=inserted\nboot: cdrom\n"));
        assert!(rc.contains("com1: enabled=1, mode=file, dev=/x/serial.txt\n"));
        assert!(rc.contains("sound: driver=dummy\n"));
    }
}
