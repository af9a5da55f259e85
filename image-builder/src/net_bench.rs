//! `bench net`: the management network's throughput and an HTTP server's
//! request rate, Mantle next to Debian's Linux.
//!
//! The same static `netbench` binary (`userworld/src/bin/netbench.rs`) is
//! PID 1 on both kernels, booted with `-kernel` in the same QEMU
//! configuration ([`crate::bench::QEMU_COMMON`]) with the same NIC model on
//! QEMU's user network and the same static address (10.0.2.15/24, gateway
//! 10.0.2.2): on Mantle from `ip=` on the kernel command line, on Linux by
//! the initramfs (BusyBox `ifconfig`/`route` after loading the NIC's
//! modules from Debian's cloud kernel package), which then execs
//! `netbench`. `netbench` starts `tokio_httpd` (tokio + hyper, the shape of
//! hostd) on port 8080 and serves a TCP sink and a TCP source. The host
//! reaches them through forwarded ports on 127.0.0.1 and measures:
//! - host → guest: bytes written into the sink, timed from the connect to
//!   the sink's answer that it has received them all;
//! - guest → host: bytes read from the source, from the request to EOF;
//! - HTTP: `clients` concurrent keep-alive connections to `tokio_httpd`,
//!   each sending `requests` GETs one after another; requests/s over the
//!   time from the moment all are open to the last answer, and latencies.
//!
//! Both sides pay for QEMU's user network (libslirp) in the same way.
//! Figures are printed, never asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::bench::{self, Running, SideBySide};
use crate::qemu::{Nic, NicModel, PortForward};

/// What to measure.
#[derive(Clone, Debug)]
pub struct NetBenchOptions {
    pub runs: usize,
    pub nic: NicModel,
    /// MiB moved in each direction.
    pub mib: u64,
    /// Concurrent HTTP clients.
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// `Some("mantle")` or `Some("linux")`: one side alone.
    pub only: Option<String>,
}

/// The guest's ports (see `netbench.rs`).
const SINK_PORT: u16 = 5001;
const SOURCE_PORT: u16 = 5002;
const HTTP_PORT: u16 = 8080;
/// The guest's static address on QEMU's user network.
const GUEST_IP: &str = "10.0.2.15";
const GATEWAY: &str = "10.0.2.2";
/// Time limit of a boot up to `netbench: ready`, and of one measurement.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const IO_TIMEOUT: Duration = Duration::from_secs(600);

/// Linux modules for each NIC model (their dependencies are added from
/// the modules' `depends=`).
fn linux_modules(model: NicModel) -> &'static [&'static str] {
    match model {
        NicModel::VirtioNet => &["virtio_pci", "virtio_net"],
        NicModel::E1000e => &["e1000e"],
    }
}

/// The Debian kernel package of the Linux side: the cloud kernel, unless
/// it cannot drive the NIC — it is built without e1000e
/// (`# CONFIG_E1000E is not set`) — then Debian's generic kernel of the
/// same version, the nearest stock kernel that can.
pub fn linux_package(model: NicModel) -> &'static str {
    match model {
        NicModel::VirtioNet => crate::debian::LINUX_CLOUD_META,
        NicModel::E1000e => crate::debian::LINUX_GENERIC_META,
    }
}

/// `/init` of the Linux side: modules, `lo` and `eth0` up with the static
/// address, then `netbench` as PID 1.
pub fn linux_init_script(modules: &[String]) -> String {
    let mut s = bench::linux_init_prologue("netbench", modules);
    s.push_str(&format!(
        "i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n\
         ifconfig lo 127.0.0.1 up\n\
         ifconfig eth0 {GUEST_IP} netmask 255.255.255.0 up || echo \"netbench: error eth0\"\n\
         route add default gw {GATEWAY}\n\
         exec /netbench /tokio_httpd\n"
    ));
    s
}

/// Mantle's kernel command line: `netbench` as PID 1, vmk0 static.
pub fn mantle_cmdline() -> String {
    format!("init=/init ip={GUEST_IP}::{GATEWAY}:255.255.255.0::vmk0:off")
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| e.to_string())
}

fn connect(port: u16) -> Result<TcpStream, String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// A chunk of the bytes the host sends (not all zeros).
fn pattern() -> Vec<u8> {
    (0..256 << 10).map(|i: usize| (i * 13 + i / 1000) as u8).collect()
}

/// Host → guest: `bytes` into the sink; MB/s.
fn send_to_guest(port: u16, bytes: u64) -> Result<f64, String> {
    let buf = pattern();
    let t = Instant::now();
    let mut s = connect(port)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).map_err(|e| format!("sending: {e} ({} of {bytes} bytes sent)", bytes - left))?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| format!("the sink's answer: {e}"))?;
    let secs = t.elapsed().as_secs_f64();
    let got: Option<u64> = answer.trim().strip_prefix("received ").and_then(|n| n.parse().ok());
    if got != Some(bytes) {
        return Err(format!("the sink answered {answer:?}, want `received {bytes}`"));
    }
    Ok(bytes as f64 / secs / 1e6)
}

/// Guest → host: `bytes` from the source; MB/s.
fn receive_from_guest(port: u16, bytes: u64) -> Result<f64, String> {
    let t = Instant::now();
    let mut s = connect(port)?;
    s.write_all(format!("{bytes}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total: u64 = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) => return Err(format!("receiving: {e} ({total} of {bytes} bytes)")),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    if total != bytes {
        return Err(format!("the source sent {total} bytes, want {bytes}"));
    }
    Ok(bytes as f64 / secs / 1e6)
}

/// One HTTP/1.1 GET on a kept-alive connection; the body's length.
fn get(r: &mut BufReader<TcpStream>, path: &str) -> Result<usize, String> {
    write!(r.get_mut(), "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut status = String::new();
    r.read_line(&mut status).map_err(|e| format!("status line: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {status:?}"));
    }
    let mut len = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).map_err(|e| format!("header: {e}"))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse::<usize>().ok();
        }
    }
    let len = len.ok_or("no Content-Length")?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok(len)
}

/// The HTTP load's result.
struct HttpFigures {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: Vec<String>,
}

/// `clients` keep-alive connections, opened 25 ms apart (QEMU's user
/// network accepts forwarded connections from a listen backlog of 1 and
/// resets what arrives at once, see `tests/tests/tokio_http.rs`), each
/// with one request; once all are open, `requests` more each, timed.
fn http_load(port: u16, clients: usize, requests: usize) -> HttpFigures {
    let all_open = Arc::new(Barrier::new(clients + 1));
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let all_open = all_open.clone();
            std::thread::spawn(move || -> Result<Vec<Duration>, String> {
                std::thread::sleep(Duration::from_millis(25 * i as u64));
                let first = connect(port).map(BufReader::new).and_then(|mut r| get(&mut r, &format!("/echo/c{i}")).map(|_| r));
                all_open.wait();
                let mut r = first?;
                let mut lat = Vec::with_capacity(requests);
                for j in 0..requests {
                    let t = Instant::now();
                    get(&mut r, &format!("/echo/c{i}r{j}")).map_err(|e| format!("client {i} request {j}: {e}"))?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    all_open.wait();
    let t = Instant::now();
    let mut lat = Vec::new();
    let mut errors = Vec::new();
    for w in workers {
        match w.join() {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("client thread panicked".into()),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    HttpFigures { requests_per_s: lat.len() as f64 / secs, p50_ms: pct(0.5), p99_ms: pct(0.99), errors }
}

/// One boot of one side: the figures, recorded into `results`.
fn measure(who: &str, args: &[String], forwards: (u16, u16, u16), o: &NetBenchOptions, results: &mut SideBySide, run: usize) -> Result<(), String> {
    let (sink, source, http) = forwards;
    let booted = Instant::now();
    let mut q = Running::spawn(args)?;
    q.until(&["netbench: ready", "tokio_httpd: listening"], BOOT_TIMEOUT).map_err(|e| format!("{who}: {e}"))?;
    println!("  run {run}/{}: {who:<6} up in {:.1} s", o.runs.max(1), booted.elapsed().as_secs_f64());
    let fail = |q: &mut Running, what: &str, e: String| format!("{who}: {what}: {e}\n--- serial output ---\n{}", q.tail());
    // The path works (ARP, the first connection) before anything is timed.
    connect(http).map(BufReader::new).and_then(|mut r| get(&mut r, "/echo/warmup")).map_err(|e| fail(&mut q, "warm-up request", e))?;
    send_to_guest(sink, 1 << 20).map_err(|e| fail(&mut q, "warm-up transfer", e))?;

    let bytes = o.mib << 20;
    let mantle = who == "Mantle";
    let mut show = |name: &str, v: f64, unit: &str| {
        println!("  run {run}/{}: {who:<6} {name:<22} {v:>10.2} {unit}", o.runs.max(1));
        results.record(mantle, name, v, unit);
    };
    let up = send_to_guest(sink, bytes).map_err(|e| fail(&mut q, "host → guest", e))?;
    show("tcp_host_to_guest", up, "MB/s");
    let down = receive_from_guest(source, bytes).map_err(|e| fail(&mut q, "guest → host", e))?;
    show("tcp_guest_to_host", down, "MB/s");
    let h = http_load(http, o.clients, o.requests);
    if !h.errors.is_empty() {
        println!("  run {run}: {who}: {} of {} HTTP clients failed, e.g. {}", h.errors.len(), o.clients, h.errors[0]);
    }
    show("http_requests", h.requests_per_s, "req/s");
    show("http_p50", h.p50_ms, "ms");
    show("http_p99", h.p99_ms, "ms");
    show("http_failed_clients", h.errors.len() as f64, "");
    for l in q.output().lines().filter(|l| l.contains("netbench: error") || l.contains("tokio_httpd:") && !l.contains("listening")) {
        println!("  run {run}: {who}: {}", l.trim());
    }
    Ok(())
}

/// Runs the benchmark: `kernel_elf` is Mantle's kernel, `bins` the
/// directory of the static user worlds (`netbench`, `tokio_httpd`).
pub fn bench_net(kernel_elf: &Path, bins: &Path, o: &NetBenchOptions) -> Result<(), String> {
    let read = |name: &str| std::fs::read(bins.join(name)).map_err(|e| format!("{}: {e}", bins.join(name).display()));
    let (netbench, httpd) = (read("netbench")?, read("tokio_httpd")?);
    let mantle_initrd = bench::mantle_bench_initrd("netbench", &[("init", &netbench), ("tokio_httpd", &httpd)])?;

    let package = linux_package(o.nic);
    let root = crate::debian::fetch_package(package)?;
    let kernel = crate::debian::find_kernel(&root)?;
    let wanted = linux_modules(o.nic);
    let modules = crate::linux_guest::resolve_modules(&root.join("lib/modules"), wanted)?;
    for w in wanted {
        if !modules.iter().any(|(n, _)| n.replace('-', "_") == w.replace('-', "_")) {
            return Err(format!("{package} has no {w}.ko: Linux cannot drive {}", o.nic.device()));
        }
    }
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let applets = ["sh", "mount", "insmod", "sleep", "echo", "ifconfig", "route", "[", "test"];
    let linux_initrd = bench::linux_bench_initrd(
        "netbench",
        &applets,
        &modules,
        &[("netbench", &netbench), ("tokio_httpd", &httpd)],
        &linux_init_script(&names),
    )?;

    println!(
        "bench net: {} MiB each way, HTTP {} clients x {} requests; {} on QEMU user networking; {} run(s), interleaved",
        o.mib,
        o.clients,
        o.requests,
        o.nic.device(),
        o.runs.max(1)
    );
    println!("Linux: {} ({package}), modules: {}", kernel.display(), names.join(" "));
    let mut results = SideBySide::default();
    for run in 1..=o.runs.max(1) {
        for who in ["Mantle", "Linux"] {
            if o.only.as_deref().is_some_and(|x| !x.eq_ignore_ascii_case(who)) {
                continue;
            }
            let ports = (free_port()?, free_port()?, free_port()?);
            let nic = Nic {
                model: o.nic,
                forwards: vec![
                    PortForward { host: ports.0, guest: SINK_PORT },
                    PortForward { host: ports.1, guest: SOURCE_PORT },
                    PortForward { host: ports.2, guest: HTTP_PORT },
                ],
            };
            let mut args = if who == "Mantle" {
                bench::mantle_boot_args(kernel_elf, &mantle_initrd, &mantle_cmdline())
            } else {
                bench::linux_boot_args(&kernel, &linux_initrd)
            };
            if o.nic == NicModel::E1000e {
                // q35, whose default NIC it is (as the image tests run it).
                args.extend(["-machine".into(), "q35".into()]);
            }
            args.extend(nic.args(0));
            // Extra QEMU arguments, e.g. a monitor socket to sample the
            // guest's RIP while the load runs (`-monitor unix:PATH,server,nowait`).
            if let Ok(extra) = std::env::var("MANTLE_BENCH_QEMU_ARGS") {
                args.extend(extra.split_whitespace().map(String::from));
            }
            measure(who, &args, ports, o, &mut results, run)?;
        }
    }
    results.print(2);
    println!(
        "(QEMU TCG, {} MiB RAM, 1 CPU, {} on -netdev user, the same netbench + tokio_httpd binaries as PID 1; target: Mantle/Linux >= 0.8 for throughput and req/s)",
        bench::QEMU_COMMON[5],
        o.nic.device()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_init_brings_eth0_up_then_execs_netbench() {
        let s = linux_init_script(&["virtio_pci".into(), "virtio_net".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} in {s}"));
        assert!(pos("insmod /lib/modules/virtio_pci.ko") < pos("insmod /lib/modules/virtio_net.ko"));
        assert!(pos("virtio_net.ko") < pos("ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up"));
        assert!(pos("route add default gw 10.0.2.2") < pos("exec /netbench /tokio_httpd"));
        assert!(s.trim_end().ends_with("exec /netbench /tokio_httpd"));
    }

    #[test]
    fn mantle_gets_the_same_address() {
        assert_eq!(mantle_cmdline(), "init=/init ip=10.0.2.15::10.0.2.2:255.255.255.0::vmk0:off");
    }
}
