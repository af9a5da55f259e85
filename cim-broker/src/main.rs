//! `cim-broker`: the Mantle WBEM server. HTTPS on 5989 by default, plain HTTP only
//! when asked for (`--http-port`). Accounts and the VM inventory are hostd's (the
//! default back end); settings come from `/etc/mantle/cim-broker.conf` (`key = value`
//! lines named like the long options), then from the command line.

use cim_broker::auth::{Authenticator, UsersFile};
use cim_broker::backend::{HostInfo, MemoryBackend, VirtBackend, VmSpec};
use cim_broker::hostd::{HostdAuth, HostdBackend, HostdClient, HostdConfig};
use cim_broker::http::{self, HttpConfig, Service};
use cim_broker::ops::Broker;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_CONFIG: &str = "/etc/mantle/cim-broker.conf";

#[derive(Parser, Debug)]
#[command(name = "cim-broker", version, args_override_self = true, about = "Mantle CIM broker: CIM-XML over HTTP(S) (DSP0200/DSP0201)")]
struct Args {
    /// Settings file: `key = value` lines with the long option names (`https-port = 5989`,
    /// `wait-for-cert = true`); `#` comments. Options on the command line win.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    listen: String,
    /// HTTPS port (0 picks a free port).
    #[arg(long, default_value_t = 5989)]
    https_port: u16,
    /// Disable HTTPS.
    #[arg(long)]
    no_https: bool,
    /// Plain-HTTP port; plain HTTP is off unless this is given (credentials would
    /// travel in clear text).
    #[arg(long)]
    http_port: Option<u16>,
    /// Host certificate (PEM). Generated, self-signed, if it does not exist (unless
    /// --wait-for-cert).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Host key (PEM). Generated with the certificate if it does not exist.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Wait for the certificate files (and hostd's) to appear instead of generating
    /// one: on Mantle hostd makes the host certificate at its first start.
    #[arg(long)]
    wait_for_cert: bool,
    /// The virtualization back end and account service: `hostd` (its REST API) or
    /// `memory` (an in-process inventory with --users-file accounts, for development).
    #[arg(long, default_value = "hostd")]
    backend: String,
    /// hostd's base URL.
    #[arg(long, default_value = "https://127.0.0.1:443")]
    hostd_url: String,
    /// The certificate hostd's TLS must present (its host certificate, PEM).
    #[arg(long, default_value = "/etc/mantle/hostd/ssl/host.crt")]
    hostd_cert: PathBuf,
    /// Longest reuse of a hostd login, seconds.
    #[arg(long, default_value_t = 300)]
    session_ttl_secs: u64,
    /// How long inventory reads from hostd are reused, milliseconds (0: never).
    #[arg(long, default_value_t = 1000)]
    hostd_cache_ms: u64,
    /// With the memory back end: accounts file (`user:role:password` lines; roles
    /// administrator, operator, readonly).
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// Host name used in object paths (default: /etc/hostname, else "mantle").
    #[arg(long)]
    hostname: Option<String>,
    /// With the memory back end: define this many VMs at start (benchmarks, demos).
    #[arg(long, default_value_t = 0)]
    demo_vms: u32,
    /// Maximum concurrent connections.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Maximum request body, bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body: usize,
    /// Worker threads for the runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// The settings file as command-line arguments (placed before the real ones, which
/// override them). `key = true` is a flag, `key = false` leaves it out.
fn config_args(path: &Path, text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').ok_or_else(|| format!("{}:{}: expected key = value", path.display(), i + 1))?;
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        if k.is_empty() || k == "config" || !k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(format!("{}:{}: {k:?} is not a setting", path.display(), i + 1));
        }
        match v {
            "true" => out.push(format!("--{k}")),
            "false" => {}
            _ => {
                out.push(format!("--{k}"));
                out.push(v.to_string());
            }
        }
    }
    Ok(out)
}

fn parse_args() -> Result<Args, String> {
    let cli: Vec<String> = std::env::args().collect();
    let first = Args::try_parse_from(&cli).unwrap_or_else(|e| e.exit());
    let text = match std::fs::read_to_string(&first.config) {
        Ok(t) => t,
        // The default file is optional; one named on the command line is not.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && first.config == Path::new(DEFAULT_CONFIG) => return Ok(first),
        Err(e) => return Err(format!("{}: {e}", first.config.display())),
    };
    let mut all = vec![cli[0].clone()];
    all.extend(config_args(&first.config, &text)?);
    all.extend(cli.into_iter().skip(1));
    Args::try_parse_from(all).map_err(|e| format!("{}: {e}", first.config.display()))
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cim-broker: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("cim-broker: {e}");
        std::process::exit(1);
    }
}

/// Waits for files another service makes (hostd's certificate). Quietly: init starts
/// the broker at boot, and a line on the console while hostd is not running yet would
/// land in the middle of the shell's output.
fn wait_for(paths: &[&Path]) {
    while paths.iter().any(|p| !p.exists()) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn run(args: Args) -> Result<(), String> {
    let hostname = args.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(|| "mantle".into())
    });
    if args.wait_for_cert {
        let mut need: Vec<&Path> = Vec::new();
        if !args.no_https {
            need.extend(args.tls_cert.as_deref());
            need.extend(args.tls_key.as_deref());
        }
        if args.backend == "hostd" {
            need.push(&args.hostd_cert);
        }
        wait_for(&need);
    }
    let (backend, auth): (Box<dyn VirtBackend>, Arc<dyn Authenticator>) = match args.backend.as_str() {
        "hostd" => {
            let pem = std::fs::read(&args.hostd_cert).map_err(|e| format!("hostd certificate {}: {e}", args.hostd_cert.display()))?;
            let mut cfg = HostdConfig::new(args.hostd_url.clone(), pem);
            cfg.session_ttl = Duration::from_secs(args.session_ttl_secs.max(1));
            cfg.read_ttl = Duration::from_millis(args.hostd_cache_ms);
            let client = HostdClient::new(cfg)?;
            (Box::new(HostdBackend(client.clone())), Arc::new(HostdAuth(client)))
        }
        "memory" => {
            let path = args.users_file.as_ref().ok_or("the memory back end needs --users-file")?;
            let users = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let auth = Arc::new(UsersFile::parse(&users).map_err(|e| format!("{}: {e}", path.display()))?);
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            let b = MemoryBackend::new(HostInfo { hostname: hostname.clone(), cpus, memory_mib: 16 * 1024, storage_mib: 512 * 1024 });
            let setup = cim_broker::auth::Principal::new("cim-broker", cim_broker::auth::Role::Administrator);
            for i in 0..args.demo_vms {
                b.define_vm(&setup, VmSpec { name: format!("demo{i}"), vcpus: 1, memory_mib: 256, ..VmSpec::default() })
                    .map_err(|e| format!("demo VM: {e}"))?;
            }
            (Box::new(b), auth)
        }
        other => return Err(format!("unknown back end {other} (hostd or memory)")),
    };
    let broker = Arc::new(Broker::new(backend, hostname.clone())?);
    let config = HttpConfig { max_body: args.max_body, max_connections: args.max_connections, ..HttpConfig::default() };
    let limit = Arc::new(tokio::sync::Semaphore::new(config.max_connections));
    let svc = Arc::new(Service { broker, auth, config });
    if args.no_https && args.http_port.is_none() {
        return Err("neither HTTPS nor HTTP is enabled".into());
    }
    let tls = if args.no_https {
        None
    } else {
        Some(http::tls_acceptor(args.tls_cert.as_deref(), args.tls_key.as_deref(), &hostname)?)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        if let Some(acceptor) = tls {
            let l = tokio::net::TcpListener::bind((args.listen.as_str(), args.https_port))
                .await
                .map_err(|e| format!("bind {}:{}: {e}", args.listen, args.https_port))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            println!("cim-broker: listening https://{addr}");
            tasks.push(tokio::spawn(http::serve(l, svc.clone(), Some(acceptor), limit.clone())));
        }
        if let Some(port) = args.http_port {
            let l = tokio::net::TcpListener::bind((args.listen.as_str(), port))
                .await
                .map_err(|e| format!("bind {}:{port}: {e}", args.listen))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            println!("cim-broker: listening http://{addr}");
            tasks.push(tokio::spawn(http::serve(l, svc.clone(), None, limit.clone())));
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<(), String>(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_file_becomes_arguments_that_the_command_line_overrides() {
        let p = Path::new("/etc/mantle/cim-broker.conf");
        let a = config_args(p, "# c\nbackend = hostd\nhttps-port = 5989\nwait-for-cert = true\nno-https = false\ntls-cert = \"/a b\"\n").unwrap();
        assert_eq!(a, ["--backend", "hostd", "--https-port", "5989", "--wait-for-cert", "--tls-cert", "/a b"]);
        assert!(config_args(p, "nonsense").is_err());
        assert!(config_args(p, "Bad_Key = 1").is_err());
        assert!(config_args(p, "config = /x").is_err());
        let mut all = vec!["cim-broker".to_string()];
        all.extend(a);
        all.extend(["--https-port".to_string(), "6000".to_string()]);
        let args = Args::try_parse_from(all).unwrap();
        assert_eq!((args.https_port, args.wait_for_cert, args.backend.as_str()), (6000, true, "hostd"));
        assert_eq!(args.tls_cert.as_deref(), Some(Path::new("/a b")));
    }
}
