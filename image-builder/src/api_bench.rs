//! `bench api`: hostd's REST API under load, measured by hostd's `apibench`
//! example (N concurrent HTTPS keep-alive clients): p50/p99 latency and
//! requests/s of `GET /api/vms`, p50/p99 of a power-on (request to finished
//! task) and VMs created and powered on per second.
//!
//! Measured in one run, side by side:
//! - the reference: hostd as a native Linux process on loopback, with its
//!   in-memory fake VMkernel (`--fake-vmkernel`: power-on only records the
//!   VM; the Linux host has no VMkernel);
//! - hostd on Mantle in QEMU TCG (the image's `/sbin/hostd`, started by
//!   init, its config store on a fresh datastore), through a forwarded port:
//!   the VMs are real (the image's `idle.bin` guest, 4 MiB each).
//!
//! The root password on Mantle is set the administrator's way, with `hostd
//! passwd root` at the serial console. Figures are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::datastore::{self, DiskBus};
use crate::kernel::workspace_root;
use crate::qemu::{Boot, Console, Nic, NicModel, PortForward, Qemu};
use crate::{IsoOptions, Progress};

/// What to measure.
#[derive(Clone, Debug)]
pub struct ApiBenchOptions {
    pub clients: usize,
    /// GET /api/vms requests per client.
    pub requests: usize,
    /// VMs created and powered on.
    pub vms: usize,
    /// Leave Mantle out (the reference only).
    pub host_only: bool,
    /// vCPUs of the QEMU machine running Mantle.
    pub cpus: u32,
}

const PASSWORD: &str = "Bench-root-pw1";

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

/// Runs the load generator; its result lines.
fn apibench(bin: &Path, url: &str, cert: &Path, kernel: &str, o: &ApiBenchOptions) -> Result<Vec<String>, String> {
    let out = Command::new(bin.join("examples/apibench"))
        .args(["--url", url, "--password", PASSWORD, "--kernel", kernel])
        .arg("--cacert")
        .arg(cert)
        .args(["--clients", &o.clients.to_string(), "--requests", &o.requests.to_string(), "--vms", &o.vms.to_string()])
        .output()
        .map_err(|e| format!("apibench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("apibench against {url}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(text.lines().map(str::to_string).collect())
}

/// hostd on the Linux host with the fake VMkernel.
fn reference(bin: &Path, o: &ApiBenchOptions) -> Result<Vec<String>, String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = work.path();
    std::fs::create_dir_all(dir.join("volumes/datastore1")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("rootpw"), format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("idle.bin"), b"\x02\xb0\xad\x1b bench guest").map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin.join("hostd"));
    cmd.arg("--config-dir")
        .arg(dir.join("hostd"))
        .arg("--volumes")
        .arg(dir.join("volumes"))
        .args(["--listen", "127.0.0.1", "--https-port", "0", "--http-port", "off", "--kernel-cmdline", "/nonexistent", "--fake-vmkernel"])
        .arg("--root-password-file")
        .arg(dir.join("rootpw"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("hostd: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let _hostd = Proc(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("hostd: HTTPS on") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| "hostd did not start listening within 60 s")?;
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok()).ok_or_else(|| format!("no port in {line:?}"))?;
    apibench(bin, &format!("https://localhost:{port}"), &dir.join("hostd/ssl/host.crt"), &dir.join("idle.bin").to_string_lossy(), o)
}

fn step<T>(c: &mut Console, what: &str, r: Result<T, String>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}\n--- serial log (end) ---\n{}", tail(&c.log(), 3000)))
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

/// hostd on Mantle in QEMU, through a forwarded port.
fn mantle(bin: &Path, o: &ApiBenchOptions) -> Result<Vec<String>, String> {
    let opts = IsoOptions { out: Some(crate::out_dir().join("bench-api.iso")), quiet: true, ..Default::default() };
    let (info, _) = crate::build_iso(&opts, &mut Progress::quiet())?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let disk = work.path().join("datastore1.img");
    datastore::create(&disk, 256 << 20, "datastore1")?;
    let port = free_port()?;
    let mut q = Qemu::new(Boot::Iso(info.path));
    q.cpus = o.cpus;
    q.mem_mib = 1024;
    q.nics = vec![Nic { model: NicModel::VirtioNet, forwards: vec![PortForward { host: port, guest: 443 }] }];
    q.extra.extend(datastore::qemu_disk_args(&[disk], DiskBus::VirtioBlk));
    let mut c = q.spawn_console()?;
    let t = Duration::from_secs(300);
    let r = c.expect("Please press Enter to activate this console.", t).and_then(|_| c.send("\n")).and_then(|_| c.expect("# ", t));
    step(&mut c, "no shell", r)?;
    let r = c.expect("hostd: HTTP redirect on", t);
    step(&mut c, "hostd did not start", r)?;
    let r = c
        .send("hostd passwd root\n")
        .and_then(|_| c.expect("New password for root: ", t))
        .and_then(|_| c.send(&format!("{PASSWORD}\n")))
        .and_then(|_| c.expect("Retype the password: ", t))
        .and_then(|_| c.send(&format!("{PASSWORD}\n")))
        .and_then(|_| c.expect("password of root set", t))
        .and_then(|_| c.expect("# ", t));
    step(&mut c, "hostd passwd root", r)?;
    let r = c.run("cat /etc/mantle/hostd/ssl/host.crt", "# ", t);
    let pem = step(&mut c, "reading the host certificate", r)?;
    let begin = pem.find("-----BEGIN CERTIFICATE-----").ok_or("no certificate printed")?;
    let end = pem.find("-----END CERTIFICATE-----").ok_or("no certificate end printed")? + "-----END CERTIFICATE-----".len();
    let cert = work.path().join("host.crt");
    std::fs::write(&cert, format!("{}\n", pem[begin..end].replace('\r', ""))).map_err(|e| e.to_string())?;
    let r = apibench(bin, &format!("https://localhost:{port}"), &cert, "/usr/lib/mantle/guests/idle.bin", o);
    let lines = step(&mut c, "measuring", r)?;
    let _ = c.send("poweroff -f\n");
    let _ = c.wait_exit(Duration::from_secs(60));
    Ok(lines)
}

pub fn bench_api(o: &ApiBenchOptions) -> Result<(), String> {
    let root = workspace_root();
    println!("[1/3] building hostd and its load generator (release, host) ...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-q", "-p", "hostd", "--bins", "--example", "apibench"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building hostd failed".into());
    }
    let bin = root.join("target/release");
    let started = Instant::now();
    // Each half's figures as soon as they are measured: the Mantle half takes minutes.
    let show = |lines: Vec<String>| lines.iter().for_each(|l| println!("      {l}"));
    println!("[2/3] hostd on the Linux host (native, loopback, fake VMkernel) ...");
    show(reference(&bin, o)?);
    if !o.host_only {
        println!("[3/3] hostd on Mantle (QEMU TCG, {} vCPUs, forwarded port; real VMs: idle.bin, 4 MiB) ...", o.cpus);
        show(mantle(&bin, o)?);
    }
    println!("({} clients, {} GET requests each, {} VMs; {:.0} s in all)", o.clients, o.requests, o.vms, started.elapsed().as_secs_f64());
    Ok(())
}
