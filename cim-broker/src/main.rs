//! `cim-broker`: the Mantle WBEM server. HTTPS on 5989 by default, plain HTTP only
//! when asked for (`--http-port`).

use cim_broker::auth::{Authenticator, UsersFile};
use cim_broker::backend::{HostInfo, MemoryBackend, VirtBackend, VmSpec};
use cim_broker::http::{self, HttpConfig, Service};
use cim_broker::ops::Broker;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "cim-broker", about = "Mantle CIM broker: CIM-XML over HTTP(S) (DSP0200/DSP0201)")]
struct Args {
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
    /// Host certificate (PEM). Generated, self-signed, if it does not exist.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Host key (PEM). Generated with the certificate if it does not exist.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Accounts file (`user:role:password` lines; roles administrator, operator,
    /// readonly). Development and tests on a Linux host; on Mantle the accounts are
    /// hostd's.
    #[arg(long)]
    users_file: PathBuf,
    /// Host name used in object paths (default: /etc/hostname, else "mantle").
    #[arg(long)]
    hostname: Option<String>,
    /// The virtualization back end. Only `memory` exists yet (an in-process
    /// inventory for development; hostd's API is the next step).
    #[arg(long, default_value = "memory")]
    backend: String,
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

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("cim-broker: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let hostname = args.hostname.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).unwrap_or_else(|| "mantle".into())
    });
    let users = std::fs::read_to_string(&args.users_file).map_err(|e| format!("{}: {e}", args.users_file.display()))?;
    let auth: Arc<dyn Authenticator> = Arc::new(UsersFile::parse(&users).map_err(|e| format!("{}: {e}", args.users_file.display()))?);
    let backend: Box<dyn VirtBackend> = match args.backend.as_str() {
        "memory" => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            let b = MemoryBackend::new(HostInfo { hostname: hostname.clone(), cpus, memory_mib: 16 * 1024, storage_mib: 512 * 1024 });
            let setup = cim_broker::auth::Principal::new("cim-broker", cim_broker::auth::Role::Administrator);
            for i in 0..args.demo_vms {
                b.define_vm(&setup, VmSpec { name: format!("demo{i}"), vcpus: 1, memory_mib: 256, ..VmSpec::default() })
                    .map_err(|e| format!("demo VM: {e}"))?;
            }
            Box::new(b)
        }
        other => return Err(format!("unknown back end {other} (only `memory` exists yet)")),
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
