//! `bench cim`: the CIM broker's requests/s and p50/p99 latency for
//! EnumerateInstances of CIM_ComputerSystem (with N VMs defined in hostd), of
//! CIM_RegisteredProfile and of CIM_Namespace (the class of sfcb's recorded figure), or
//! the `--class` list, with 1 and 16 concurrent keep-alive clients. The load comes
//! from the broker's own `bench` example (it takes a URL, so `--url` adds any other
//! WBEM server, e.g. sfcb, to the same run).
//!
//! Measured in one run, side by side:
//! - the broker on Mantle over hostd on Mantle (the image as shipped: init starts both;
//!   HTTPS 5989 with hostd's certificate), booted in QEMU (TCG) with a datastore disk
//!   and reached through QEMU's forwarded port — the VMs defined through hostd's REST
//!   API there;
//! - the same broker over hostd, both native Linux processes on loopback (hostd's real
//!   binary; VM definitions need no VMkernel), also over HTTPS;
//! - the broker over its in-memory inventory over plain HTTP (no hostd, no TLS: the
//!   form comparable to sfcb's measurement);
//! - any `--url` given.
//!
//! Figures are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::kernel::workspace_root;

/// What to measure.
#[derive(Clone, Debug)]
pub struct CimBenchOptions {
    /// VMs defined before measuring.
    pub vms: usize,
    /// Requests per client.
    pub requests: usize,
    /// Concurrent clients, one measurement each.
    pub clients: Vec<usize>,
    /// Other WBEM servers (`http://user:pw@host:port`) measured the same way.
    pub urls: Vec<String>,
    /// Also boot Mantle and measure the broker there.
    pub mantle: bool,
    /// (namespace, class) pairs enumerated on every server; empty: [`DEFAULT_CLASSES`].
    pub classes: Vec<(String, String)>,
}

/// What `bench cim` enumerates unless `--class` says otherwise: the VMs, a provider
/// answer, and CIM_Namespace, which sfcb 1.3.11 also serves (its recorded figure).
pub const DEFAULT_CLASSES: [(&str, &str); 3] =
    [("root/cimv2", "CIM_ComputerSystem"), ("root/interop", "CIM_RegisteredProfile"), ("root/interop", "CIM_Namespace")];

/// Reads `--class` values: `NAMESPACE:CLASS`, e.g. `root/interop:CIM_Namespace`.
pub fn parse_class(arg: &str) -> Result<(String, String), String> {
    let (ns, class) = arg.rsplit_once(':').ok_or_else(|| format!("--class {arg:?}: expected NAMESPACE:CLASS, e.g. root/interop:CIM_Namespace"))?;
    let ns_ok = !ns.is_empty() && ns.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let class_ok = !class.is_empty() && class.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ns_ok || !class_ok {
        return Err(format!("--class {arg:?}: namespace segments and the class name are letters, digits and _"));
    }
    Ok((ns.to_string(), class.to_string()))
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits for a line (on `stderr` or stdout) containing `marker`,
/// returning the port at the end of that line.
fn start(mut cmd: Command, marker: &'static str, on_stderr: bool) -> Result<(Proc, u16), String> {
    if on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    }
    let mut child = cmd.stdin(Stdio::null()).spawn().map_err(|e| format!("{cmd:?}: {e}"))?;
    let (tx, rx) = mpsc::channel();
    let pipe: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.stderr.take().ok_or("no stderr")?)
    } else {
        Box::new(child.stdout.take().ok_or("no stdout")?)
    };
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line);
            }
        }
    });
    let proc = Proc(child);
    let line = rx.recv_timeout(Duration::from_secs(60)).map_err(|_| format!("{cmd:?} did not print {marker:?}"))?;
    let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok()).ok_or_else(|| format!("no port in {line:?}"))?;
    Ok((proc, port))
}

fn curl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("curl").args(["-sS", "--max-time", "60"]).args(args).output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One measurement: (req/s, p50 ms, p99 ms, response bytes). `ca`: the server's
/// certificate for https:// URLs.
fn measure(bench: &Path, url: &str, ca: Option<&str>, ns: &str, class: &str, clients: usize, requests: usize) -> Result<(f64, f64, f64, u64), String> {
    let out = Command::new(bench)
        .args([url, ns, class, &clients.to_string(), &requests.to_string()])
        .args(ca)
        .output()
        .map_err(|e| format!("{}: {e}", bench.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("bench {url} {class}: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    parse_bench_line(&text).ok_or_else(|| format!("unexpected bench output {text:?}"))
}

/// Reads `... response=NB: X req/s, p50 Y ms, p99 Z ms`.
pub fn parse_bench_line(text: &str) -> Option<(f64, f64, f64, u64)> {
    let line = text.lines().find(|l| l.contains(" req/s"))?;
    let bytes = line.split("response=").nth(1)?.split('B').next()?.parse().ok()?;
    let (_, rest) = line.split_once(": ")?;
    let mut parts = rest.split(", ");
    let rps = parts.next()?.strip_suffix(" req/s")?.parse().ok()?;
    let p50 = parts.next()?.strip_prefix("p50 ")?.strip_suffix(" ms")?.parse().ok()?;
    let p99 = parts.next()?.strip_prefix("p99 ")?.strip_suffix(" ms")?.parse().ok()?;
    Some((rps, p50, p99, bytes))
}

pub fn bench_cim(o: &CimBenchOptions) -> Result<(), String> {
    let root = workspace_root();
    println!("[1/4] building hostd, cim-broker and the load generator (release, host) ...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "-q", "-p", "hostd", "-p", "cim-broker", "--bins", "--example", "bench"])
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err("building hostd and cim-broker failed".into());
    }
    let bin = root.join("target/release");
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = work.path();
    std::fs::create_dir_all(dir.join("volumes/datastore1")).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("rootpw"), "Bench-root-pw1\n").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("guest.bin"), b"\x02\xb0\xad\x1b bench guest").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("users"), "root:administrator:Bench-root-pw1\n").map_err(|e| e.to_string())?;
    std::fs::write(dir.join("empty.conf"), "").map_err(|e| e.to_string())?;

    println!("[2/4] starting hostd and defining {} VMs ...", o.vms);
    let mut hostd = Command::new(bin.join("hostd"));
    hostd
        .arg("--config-dir")
        .arg(dir.join("hostd"))
        .arg("--volumes")
        .arg(dir.join("volumes"))
        .args(["--listen", "127.0.0.1", "--https-port", "0", "--http-port", "off", "--kernel-cmdline", "/nonexistent"])
        .arg("--root-password-file")
        .arg(dir.join("rootpw"));
    let (_hostd, hostd_port) = start(hostd, "hostd: HTTPS on", true)?;
    let cert = dir.join("hostd/ssl/host.crt");
    let cert_s = cert.to_string_lossy().into_owned();
    let base = format!("https://localhost:{hostd_port}");
    let login = curl(&["--cacert", &cert_s, "-H", "Content-Type: application/json", "--data",
        r#"{"username":"root","password":"Bench-root-pw1"}"#, &format!("{base}/api/session")])?;
    let token = login.split("\"token\":\"").nth(1).and_then(|t| t.split('"').next()).ok_or_else(|| format!("hostd login: {login}"))?;
    let auth = format!("Authorization: Bearer {token}");
    let kernel = dir.join("guest.bin").to_string_lossy().into_owned();
    for i in 0..o.vms {
        let body = format!(r#"{{"name":"bench{i:02}","memory_mib":64,"vcpus":1,"kernel":"{kernel}"}}"#);
        let r = curl(&["--cacert", &cert_s, "-H", &auth, "-H", "Content-Type: application/json", "--data", &body, &format!("{base}/api/vms")])?;
        if !r.contains(&format!("\"bench{i:02}\"")) {
            return Err(format!("hostd did not define bench{i:02}: {r}"));
        }
    }

    println!("[3/4] starting the broker over hostd (HTTPS) and over its in-memory inventory (HTTP) ...");
    let broker = |extra: &[&str]| {
        let mut c = Command::new(bin.join("cim-broker"));
        c.arg("--config").arg(dir.join("empty.conf")).args(["--listen", "127.0.0.1"]).args(extra);
        c
    };
    let hostd_url = format!("https://localhost:{hostd_port}");
    let key_s = dir.join("hostd/ssl/host.key").to_string_lossy().into_owned();
    let (_b1, p1) = start(
        broker(&["--https-port", "0", "--tls-cert", &cert_s, "--tls-key", &key_s, "--backend", "hostd", "--hostd-url", &hostd_url, "--hostd-cert", &cert_s]),
        "listening https://",
        false,
    )?;
    let users = dir.join("users").to_string_lossy().into_owned();
    let vms = o.vms.to_string();
    let (_b2, p2) = start(broker(&["--no-https", "--http-port", "0", "--backend", "memory", "--users-file", &users, "--demo-vms", &vms]), "listening http://", false)?;

    // (label, URL, CA certificate for HTTPS)
    let mut targets: Vec<(String, String, Option<String>)> = Vec::new();
    let mut _mantle = None;
    if o.mantle {
        let (m, port, ca) = boot_mantle(o.vms, &dir.join("mantle"))?;
        _mantle = Some(m);
        targets.push(("broker -> hostd (Mantle, TCG), HTTPS".into(), format!("https://root:{MANTLE_PW}@localhost:{port}"), Some(ca)));
    }
    targets.push(("broker -> hostd (Linux), HTTPS".into(), format!("https://root:Bench-root-pw1@localhost:{p1}"), Some(cert_s.clone())));
    targets.push(("broker, in-memory (Linux), HTTP".into(), format!("http://root:Bench-root-pw1@127.0.0.1:{p2}"), None));
    for u in &o.urls {
        targets.push((u.split('@').next_back().unwrap_or(u).to_string(), u.clone(), None));
    }
    println!("[4/4] measuring (EnumerateInstances, HTTP/1.1 keep-alive, {} requests per client) ...", o.requests);
    println!();
    println!("{:<38} {:<42} {:>7} {:>9} {:>8} {:>8} {:>8}", "server", "class", "clients", "req/s", "p50 ms", "p99 ms", "bytes");
    let bench = bin.join("examples/bench");
    let started = Instant::now();
    let classes: Vec<(String, String)> = if o.classes.is_empty() {
        DEFAULT_CLASSES.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect()
    } else {
        o.classes.clone()
    };
    for (ns, class) in &classes {
        let (ns, class) = (ns.as_str(), class.as_str());
        for (label, url, ca) in &targets {
            // Mantle under TCG is two orders of magnitude slower: fewer requests.
            let requests = if label.contains("Mantle") { o.requests.div_ceil(10).max(20) } else { o.requests };
            for &n in &o.clients {
                // Warm-up: the first login to hostd and the first model build.
                let _ = measure(&bench, url, ca.as_deref(), ns, class, 1, 5);
                match measure(&bench, url, ca.as_deref(), ns, class, n, requests) {
                    Ok((rps, p50, p99, bytes)) => println!(
                        "{label:<38} {:<42} {n:>7} {rps:>9.0} {p50:>8.3} {p99:>8.3} {bytes:>8}",
                        format!("{ns}:{class}")
                    ),
                    Err(e) => println!("{label:<38} {ns}:{class} clients={n}: {e}"),
                }
            }
        }
    }
    println!();
    println!("({} VMs in each hostd's inventory; {:.1} s of measuring; Mantle: {} requests per client)", o.vms, started.elapsed().as_secs_f64(), o.requests.div_ceil(10).max(20));
    Ok(())
}

const MANTLE_PW: &str = "Bench-mantle-pw1";
const PROMPT: &str = "# ";

/// Mantle in QEMU (2 CPUs) with a datastore disk, hostd and the broker started by
/// init, a root password, `vms` VMs defined through hostd's REST API; returns the
/// console (QEMU ends when it drops), the broker's forwarded port and hostd's
/// certificate (PEM file). Needs curl.
fn boot_mantle(vms: usize, dir: &Path) -> Result<(crate::qemu::Console, u16, String), String> {
    use crate::qemu::{Boot, Nic, NicModel, PortForward, Qemu};
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    println!("      Mantle: building the kernel and the image ...");
    let kernel = crate::kernel::build_kernel_with(true, true)?;
    let opts = crate::IsoOptions { out: Some(crate::out_dir().join("cim-bench.iso")), quiet: true, ..Default::default() };
    let iso = crate::make_iso_with_kernel(&kernel, &opts, &mut crate::Progress::quiet())?;
    let disk = dir.join("datastore1.img");
    crate::datastore::create(&disk, 64 << 20, "datastore1")?;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string());
    let (cim_port, hostd_port) = (free()?, free()?);
    let mut q = Qemu::new(Boot::Iso(iso.path));
    q.cpus = 2;
    q.mem_mib = 1024;
    q.nics = vec![Nic {
        model: NicModel::VirtioNet,
        forwards: vec![PortForward { host: cim_port, guest: 5989 }, PortForward { host: hostd_port, guest: 443 }],
    }];
    q.extra.extend(crate::datastore::qemu_disk_args(&[disk], crate::datastore::DiskBus::VirtioBlk));
    println!("      Mantle: booting in QEMU ...");
    let mut c = q.spawn_console()?;
    let step = Duration::from_secs(120);
    c.expect("Please press Enter to activate this console.", Duration::from_secs(300))?;
    c.send("\n")?;
    c.expect(PROMPT, step)?;
    c.run("stty cols 2000", PROMPT, step)?;
    // The root password, then hostd restarted so it reads it (as the image test does).
    c.run(&format!("echo {MANTLE_PW} | hostd passwd root"), PROMPT, step)?;
    c.run("pidof hostd && kill $(pidof hostd); sleep 2; pidof hostd || (hostd > /tmp/hostd.log 2>&1 &)", PROMPT, step)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let pem = loop {
        let out = c.run("cat /etc/mantle/hostd/ssl/host.crt", PROMPT, step)?;
        if let (Some(a), Some(b)) = (out.find("-----BEGIN CERTIFICATE-----"), out.find("-----END CERTIFICATE-----")) {
            break out[a..b + 25].replace('\r', "");
        }
        if Instant::now() > deadline {
            return Err("Mantle: hostd made no certificate".into());
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let ca = dir.join("host.crt");
    std::fs::write(&ca, format!("{pem}\n")).map_err(|e| e.to_string())?;
    let ca_s = ca.to_string_lossy().into_owned();
    let base = format!("https://localhost:{hostd_port}");
    let login = loop {
        let r = curl(&["--cacert", &ca_s, "-H", "Content-Type: application/json", "--data",
            &format!(r#"{{"username":"root","password":"{MANTLE_PW}"}}"#), &format!("{base}/api/session")]);
        match r {
            Ok(body) if body.contains("\"token\"") => break body,
            _ if Instant::now() > deadline => return Err(format!("Mantle: hostd login: {r:?}")),
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    };
    let token = login.split("\"token\":\"").nth(1).and_then(|t| t.split('"').next()).ok_or_else(|| format!("hostd login: {login}"))?;
    let auth = format!("Authorization: Bearer {token}");
    println!("      Mantle: defining {vms} VMs through hostd ...");
    for i in 0..vms {
        let body = format!(r#"{{"name":"bench{i:02}","memory_mib":16,"vcpus":1,"kernel":"/usr/lib/mantle/guests/idle.bin"}}"#);
        let r = curl(&["--cacert", &ca_s, "-H", &auth, "-H", "Content-Type: application/json", "--data", &body, &format!("{base}/api/vms")])?;
        if !r.contains(&format!("\"bench{i:02}\"")) {
            return Err(format!("Mantle: hostd did not define bench{i:02}: {r}"));
        }
    }
    Ok((c, cim_port, ca_s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_load_generators_line() {
        let l = "EnumerateInstances root/cimv2:CIM_ComputerSystem clients=16 requests=8000 response=123456B: 1789 req/s, p50 0.450 ms, p99 2.500 ms\n";
        assert_eq!(super::parse_bench_line(l), Some((1789.0, 0.45, 2.5, 123456)));
        assert_eq!(super::parse_bench_line("bench: connect refused"), None);
    }

    #[test]
    fn reads_class_arguments() {
        assert_eq!(super::parse_class("root/interop:CIM_Namespace"), Ok(("root/interop".into(), "CIM_Namespace".into())));
        assert_eq!(super::parse_class("interop:CIM_RegisteredProfile"), Ok(("interop".into(), "CIM_RegisteredProfile".into())));
        for bad in ["CIM_Namespace", ":CIM_Namespace", "root/interop:", "root//interop:X", "root/interop:CIM Namespace", "root/<x>:A"] {
            assert!(super::parse_class(bad).is_err(), "{bad}");
        }
    }
}
