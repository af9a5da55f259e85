//! hostd REST API load generator (`image-builder bench api` runs it): N
//! concurrent clients, each on its own HTTPS keep-alive connection (rustls,
//! trusting only the given certificate), measure
//! - `GET /api/vms`: requests/s, p50 and p99 latency;
//! - create and power on `--vms` VMs (`POST /api/vms`, then `POST
//!   /api/vms/{name}/power` and its task polled until it finishes):
//!   p50/p99 of a power-on (request to finished task) and VMs created and
//!   powered on per second;
//!
//! then powers the VMs off and destroys them (not measured).
//!
//!     cargo run --release -p hostd --example apibench -- --url https://localhost:8443 \
//!         --cacert host.crt --password PW --kernel /usr/lib/mantle/guests/idle.bin

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// hostd's base URL (https://host:port).
    #[arg(long)]
    url: String,
    /// hostd's certificate (PEM): the only one trusted.
    #[arg(long)]
    cacert: std::path::PathBuf,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// GET /api/vms requests per client.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// VMs created and powered on (0: skip).
    #[arg(long, default_value_t = 50)]
    vms: usize,
    /// The VMs' kernel (a path on the host hostd runs on).
    #[arg(long, default_value = "/usr/lib/mantle/guests/idle.bin")]
    kernel: String,
    #[arg(long, default_value_t = 4)]
    memory_mib: u32,
    /// Prefix of the VMs' names.
    #[arg(long, default_value = "bench")]
    prefix: String,
}

/// One keep-alive HTTPS connection.
struct Conn {
    host: String,
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    token: Option<String>,
}

impl Conn {
    fn open(tls: &Arc<rustls::ClientConfig>, addr: &str, host: &str) -> Result<Conn, String> {
        let tcp = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(300))).map_err(|e| e.to_string())?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        let conn = rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| e.to_string())?;
        Ok(Conn { host: host.into(), stream: BufReader::new(rustls::StreamOwned::new(conn, tcp)), token: None })
    }

    /// One request: (status, JSON body or Null).
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", self.host, body.len());
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        let s = self.stream.get_mut();
        s.write_all(req.as_bytes()).and_then(|_| s.flush()).map_err(|e| format!("{method} {path}: {e}"))?;
        let mut status = 0u16;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).map_err(|e| format!("{method} {path}: {e}"))? == 0 {
                return Err(format!("{method} {path}: connection closed"));
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad status line {line:?}"))?;
            } else if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().map_err(|_| format!("bad length {v:?}"))?;
            }
        }
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf).map_err(|e| format!("{method} {path}: body: {e}"))?;
        Ok((status, serde_json::from_slice(&buf).unwrap_or(Value::Null)))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Opens a logged-in connection.
type Connect = Arc<dyn Fn() -> Result<Conn, String> + Send + Sync>;
/// What one client does on its connection.
type Work<T> = Arc<dyn Fn(usize, &mut Conn) -> Result<T, String> + Send + Sync>;

/// Runs `f(client, conn)` on `clients` threads, each with its own logged-in connection.
fn on_clients<T: Send + 'static>(clients: usize, connect: &Connect, f: Work<T>) -> Result<Vec<T>, String> {
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (connect, f) = (Arc::clone(connect), Arc::clone(&f));
            std::thread::spawn(move || -> Result<T, String> {
                let mut c = connect()?;
                f(i, &mut c)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().map_err(|_| "a client thread panicked".to_string())?).collect()
}

fn wait_task(c: &mut Conn, id: u64) -> Result<(), String> {
    loop {
        let (st, t) = c.call("GET", &format!("/api/tasks/{id}"), None)?;
        match (st, t["state"].as_str()) {
            (200, Some("success")) => return Ok(()),
            (200, Some("running")) => std::thread::sleep(Duration::from_millis(10)),
            _ => return Err(format!("task {id}: {st} {t}")),
        }
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("apibench: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), String> {
    let hostport = a.url.strip_prefix("https://").ok_or("--url: https:// only")?.trim_end_matches('/').to_string();
    let host = hostport.rsplit_once(':').map_or(hostport.as_str(), |(h, _)| h).to_string();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&a.cacert).map_err(|e| format!("{}: {e}", a.cacert.display()))?;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    #[allow(deprecated)] // ring: as hostd itself (see server.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // One login, its token shared by every connection.
    let mut first = Conn::open(&tls, &hostport, &host)?;
    let (st, login) = first.call("POST", "/api/session", Some(&json!({"username": a.user, "password": a.password})))?;
    let token = login["token"].as_str().ok_or_else(|| format!("login: {st} {login}"))?.to_string();
    let connect: Connect = {
        let (tls, hostport, host, token) = (Arc::clone(&tls), hostport.clone(), host.clone(), token.clone());
        Arc::new(move || {
            let mut c = Conn::open(&tls, &hostport, &host)?;
            c.token = Some(token.clone());
            Ok(c)
        })
    };

    // GET /api/vms: warm every connection up, then measure.
    let requests = a.requests;
    let started = Instant::now();
    let lat = on_clients(
        a.clients,
        &connect,
        Arc::new(move |_, c| {
            c.call("GET", "/api/vms", None)?;
            let mut v = Vec::with_capacity(requests);
            for _ in 0..requests {
                let t = Instant::now();
                let (st, body) = c.call("GET", "/api/vms", None)?;
                if st != 200 {
                    return Err(format!("GET /api/vms: {st} {body}"));
                }
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok(v)
        }),
    )?;
    let secs = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    println!(
        "GET /api/vms: clients={} requests={}: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
        a.clients,
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    if a.vms == 0 {
        return Ok(());
    }

    // Create and power on: the clients take VMs from a shared counter.
    let next = Arc::new(AtomicUsize::new(0));
    let (vms, prefix, kernel, memory) = (a.vms, a.prefix.clone(), a.kernel.clone(), a.memory_mib);
    let started = Instant::now();
    let lat = on_clients(a.clients.min(a.vms), &connect, {
        let next = Arc::clone(&next);
        Arc::new(move |_, c| {
            let mut v = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= vms {
                    return Ok(v);
                }
                let name = format!("{prefix}{i:03}");
                let (st, body) = c.call("POST", "/api/vms", Some(&json!({"name": name, "memory_mib": memory, "vcpus": 1, "kernel": kernel})))?;
                if st != 201 {
                    return Err(format!("POST /api/vms {name}: {st} {body}"));
                }
                let t = Instant::now();
                let (st, task) = c.call("POST", &format!("/api/vms/{name}/power"), Some(&json!({"action": "on"})))?;
                let id = task["id"].as_u64().filter(|_| st == 202).ok_or_else(|| format!("power on {name}: {st} {task}"))?;
                wait_task(c, id)?;
                v.push(t.elapsed().as_secs_f64() * 1e3);
            }
        })
    })?;
    let secs = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = lat.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    println!(
        "power-on: clients={} vms={}: p50 {:.1} ms, p99 {:.1} ms; created and powered on: {:.2} VMs/s",
        a.clients.min(a.vms),
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len() as f64 / secs
    );

    // Clean up: off, then destroy.
    let next = Arc::new(AtomicUsize::new(0));
    let prefix = a.prefix.clone();
    on_clients(a.clients.min(a.vms), &connect, {
        Arc::new(move |_, c| {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= vms {
                    return Ok(());
                }
                let name = format!("{prefix}{i:03}");
                let (st, task) = c.call("POST", &format!("/api/vms/{name}/power"), Some(&json!({"action": "off"})))?;
                if let Some(id) = task["id"].as_u64().filter(|_| st == 202) {
                    wait_task(c, id)?;
                }
                let (st, body) = c.call("DELETE", &format!("/api/vms/{name}"), None)?;
                if !(200..300).contains(&st) {
                    return Err(format!("DELETE {name}: {st} {body}"));
                }
            }
        })
    })?;
    Ok(())
}
