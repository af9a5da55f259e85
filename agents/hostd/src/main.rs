//! hostd — the Mantle host agent. `hostd --help` lists the settings.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hostd::auth::{self, Accounts, Role, UserRecord};
use hostd::host::{Hostd, Settings};
use hostd::{api, server, vmkernel};

#[derive(Parser)]
#[command(name = "hostd", version, about = "Mantle host agent: VM inventory and the REST API over HTTPS")]
struct Cli {
    /// The config store: accounts, inventory, event and audit logs, TLS certificate.
    #[arg(long, default_value = "/etc/mantle/hostd")]
    config_dir: PathBuf,
    /// Every directory in here is a datastore.
    #[arg(long, default_value = "/vmfs/volumes")]
    volumes: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    listen: IpAddr,
    /// HTTPS port (0: any free port, printed at start).
    #[arg(long, default_value_t = 443)]
    https_port: u16,
    /// Plain HTTP port that redirects to HTTPS (0: any free port; "off": none).
    #[arg(long, default_value = "80")]
    http_port: String,
    /// Port groups VM NICs may join (repeatable).
    #[arg(long = "port-group", default_values_t = vec!["VM Network".to_string()])]
    port_groups: Vec<String>,
    /// A session ends after this many seconds without a request.
    #[arg(long, default_value_t = 1800)]
    session_idle_secs: u64,
    /// Failed logins in a row that lock an account.
    #[arg(long, default_value_t = 5)]
    lockout_after: u32,
    /// How long a locked account stays locked.
    #[arg(long, default_value_t = 900)]
    lockout_secs: u64,
    /// At first start (no accounts yet): the root password, read from the
    /// first line of this file. Otherwise `hostd.root_password=` on the
    /// kernel command line is used; without either, nobody can log in until
    /// `hostd passwd root` is run at the console.
    #[arg(long)]
    root_password_file: Option<PathBuf>,
    /// The built web client to serve at / (index.html and assets).
    #[arg(long, default_value = "/usr/share/mantle/hostd-ui")]
    ui_dir: PathBuf,
    /// Where the kernel command line is read from.
    #[arg(long, default_value = "/proc/cmdline")]
    kernel_cmdline: PathBuf,
    /// Seconds between samples of host and VM statistics.
    #[arg(long, default_value_t = 20)]
    sample_secs: u64,
    /// Largest file a datastore upload may write, in MiB (FAT datastores
    /// end files at 4 GiB - 1).
    #[arg(long, default_value_t = 4095)]
    max_upload_mib: u64,
    /// Test and demo only: run against an in-memory VMkernel instead of the
    /// real one (VMs run nowhere; their console echoes what is typed).
    #[arg(long, hide = true)]
    fake_vmkernel: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Set a local account's password (read from standard input), creating
    /// the account if needed: the console way to set the root password.
    Passwd {
        user: String,
        /// Role of a new account (root is always an Administrator).
        #[arg(long, default_value = "ReadOnly")]
        role: String,
    },
}

fn first_start_password(cli: &Cli) -> Option<String> {
    if let Some(p) = &cli.root_password_file {
        return std::fs::read_to_string(p).ok().and_then(|t| t.lines().next().map(str::to_string));
    }
    let cmdline = std::fs::read_to_string(&cli.kernel_cmdline).ok()?;
    cmdline.split_whitespace().find_map(|w| w.strip_prefix("hostd.root_password=")).map(str::to_string)
}

fn set_root_at_first_start(cli: &Cli) -> Result<(), String> {
    let path = cli.config_dir.join("users.json");
    let mut accounts = Accounts::load(&path).map_err(|e| e.to_string())?;
    if accounts.exists() {
        return Ok(());
    }
    let Some(pw) = first_start_password(cli) else {
        eprintln!("hostd: no accounts and no root password given: nobody can log in. Set one with `hostd passwd root` at the console, --root-password-file, or hostd.root_password= on the kernel command line");
        return Ok(());
    };
    if let Err(m) = auth::check_password(&pw) {
        eprintln!("hostd: the first-start root password is not acceptable ({m}); no account created");
        return Ok(());
    }
    let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
    accounts.put(UserRecord { name: "root".into(), role: Role::Administrator, password_hash: hash }).map_err(|e| e.to_string())?;
    eprintln!("hostd: first start: root account created");
    Ok(())
}

fn passwd(cli: &Cli, user: &str, role: &str) -> Result<(), String> {
    if !auth::valid_user_name(user) {
        return Err(format!("{user:?}: not a valid user name"));
    }
    let role = match (user, role) {
        ("root", _) | (_, "Administrator") => Role::Administrator,
        (_, "Operator") => Role::Operator,
        (_, "ReadOnly") => Role::ReadOnly,
        (_, r) => return Err(format!("{r:?}: Administrator, Operator or ReadOnly")),
    };
    std::fs::create_dir_all(&cli.config_dir).map_err(|e| e.to_string())?;
    let mut accounts = Accounts::load(&cli.config_dir.join("users.json")).map_err(|e| e.to_string())?;
    let role = accounts.get(user).map_or(role, |u| u.role);
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    let pw = line.trim_end_matches(['\r', '\n']);
    auth::check_password(pw).map_err(|m| format!("password: {m}"))?;
    let hash = auth::hash_password(pw).map_err(|e| e.to_string())?;
    accounts.put(UserRecord { name: user.into(), role, password_hash: hash }).map_err(|e| e.to_string())?;
    eprintln!("hostd: password of {user} set (role {role:?}); a running hostd reads it at its next start");
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    std::fs::create_dir_all(&cli.config_dir).map_err(|e| format!("{}: {e}", cli.config_dir.display()))?;
    set_root_at_first_start(&cli)?;
    let hostname = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    if server::ensure_certificate(&cli.config_dir, &hostname).map_err(|e| format!("host certificate: {e}"))? {
        eprintln!("hostd: made a self-signed host certificate in {}", server::cert_paths(&cli.config_dir).0.display());
    }
    let tls = server::tls_config(&cli.config_dir).map_err(|e| format!("host certificate: {e}"))?;
    let settings = Settings {
        config_dir: cli.config_dir.clone(),
        volumes_dir: cli.volumes.clone(),
        port_groups: cli.port_groups.clone(),
        session_idle: Duration::from_secs(cli.session_idle_secs.max(1)),
        lockout_after: cli.lockout_after.max(1),
        lockout_for: Duration::from_secs(cli.lockout_secs),
        ui_dir: cli.ui_dir.join("index.html").is_file().then(|| cli.ui_dir.clone()),
        sample_period: Duration::from_secs(cli.sample_secs.max(1)),
        max_upload_bytes: cli.max_upload_mib.saturating_mul(1 << 20),
    };
    let kernel: Arc<dyn vmkernel::VmKernel> = if cli.fake_vmkernel {
        eprintln!("hostd: using the in-memory fake VMkernel (test mode): VMs do not run");
        let k = vmkernel::fake::FakeVmKernel::default();
        k.ticking.store(true, std::sync::atomic::Ordering::Relaxed);
        Arc::new(k)
    } else {
        Arc::new(vmkernel::RealVmKernel)
    };
    let h = Hostd::open(settings, kernel).map_err(|e| format!("opening the config store: {e}"))?;
    h.start_sampler();
    let app = api::app(h);
    let https = server::bind_when_possible(SocketAddr::new(cli.listen, cli.https_port), "HTTPS").await;
    let https_port = https.local_addr().map(|a| a.port()).unwrap_or(cli.https_port);
    eprintln!("hostd: HTTPS on {}:{https_port}", cli.listen);
    if cli.http_port != "off" {
        let port: u16 = cli.http_port.parse().map_err(|_| format!("--http-port {:?}: a port number or off", cli.http_port))?;
        let listen = cli.listen;
        tokio::spawn(async move {
            let l = server::bind_when_possible(SocketAddr::new(listen, port), "HTTP redirect").await;
            if let Ok(a) = l.local_addr() {
                eprintln!("hostd: HTTP redirect on {}:{}", listen, a.port());
            }
            server::serve_redirect(l, https_port).await;
        });
    }
    server::serve_https(https, tls, app).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Cmd::Passwd { user, role }) = &cli.cmd {
        return match passwd(&cli, user, role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hostd passwd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hostd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostd: {e}");
            ExitCode::FAILURE
        }
    }
}
