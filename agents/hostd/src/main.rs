//! hostd — the Mantle host agent. `hostd --help` lists the settings.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hostd::auth::{self, Accounts, Role, UserRecord};
use hostd::host::{Hostd, Settings};
use hostd::config_store::{self, ConfigStore};
use hostd::{api, server, vmkernel};

#[derive(Parser)]
#[command(name = "hostd", version, about = "Mantle host agent: VM inventory and the REST API over HTTPS")]
struct Cli {
    /// The config store: accounts, inventory, event and audit logs, TLS
    /// certificate. Default: `.mantle/hostd` on the first datastore (or the
    /// one that already holds it); with no datastore, /etc/mantle/hostd in
    /// memory (a reboot loses it).
    #[arg(long)]
    config_dir: Option<PathBuf>,
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
    /// first line of this file (for hosts that provision hostd from a
    /// protected file). Without it nobody can log in until `hostd passwd
    /// root` is run at the console.
    #[arg(long)]
    root_password_file: Option<PathBuf>,
    /// The built web client to serve at / (index.html and assets).
    #[arg(long, default_value = "/usr/share/mantle/hostd-ui")]
    ui_dir: PathBuf,
    /// Where the kernel command line is read from (only to warn that a
    /// password there is ignored).
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
    /// Set a local account's password, creating the account if needed: the
    /// console way to set the root password. At a terminal it asks twice
    /// without echo; from a pipe it reads one line.
    Passwd {
        user: String,
        /// Role of a new account (root is always an Administrator).
        #[arg(long, default_value = "ReadOnly")]
        role: String,
    },
}

/// The config store: the one given, or found on the datastores.
fn config_store(cli: &Cli) -> ConfigStore {
    match &cli.config_dir {
        Some(d) => ConfigStore::given(d.clone()),
        None => config_store::locate(&cli.volumes, Path::new(config_store::IN_MEMORY)),
    }
}

fn set_root_at_first_start(cli: &Cli, dir: &Path) -> Result<(), String> {
    // Anything on the kernel command line is readable by every process in
    // /proc/cmdline and lands in the boot log: never a password source.
    if std::fs::read_to_string(&cli.kernel_cmdline).is_ok_and(|c| c.split_whitespace().any(|w| w.starts_with("hostd.root_password="))) {
        eprintln!("hostd: hostd.root_password= on the kernel command line is ignored (every process can read /proc/cmdline); set the root password at the console: hostd passwd root");
    }
    let path = dir.join("users.json");
    let mut accounts = Accounts::load(&path).map_err(|e| e.to_string())?;
    if accounts.exists() {
        return Ok(());
    }
    let pw = cli.root_password_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|t| t.lines().next().map(str::to_string));
    let Some(pw) = pw else {
        eprintln!("hostd: no root password is set: every login is refused until one is set at this console with `hostd passwd root`");
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

/// Reads a new password: from a terminal twice, not echoed; from a pipe,
/// its first line.
fn read_new_password(user: &str) -> Result<String, String> {
    use rustix::termios::{self, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let read_line = || -> Result<String, String> {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if !termios::isatty(&stdin) {
        return read_line();
    }
    let saved = termios::tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_modes.remove(LocalModes::ECHO);
        let _ = termios::tcsetattr(&stdin, OptionalActions::Flush, &quiet);
    }
    let ask = |prompt: &str| -> Result<String, String> {
        eprint!("{prompt}");
        let r = read_line();
        eprintln!();
        r
    };
    let result = ask(&format!("New password for {user}: ")).and_then(|a| {
        let b = ask("Retype the password: ")?;
        if a == b { Ok(a) } else { Err("the passwords differ; nothing changed".to_string()) }
    });
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, t);
    }
    result
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
    let store = config_store(cli);
    std::fs::create_dir_all(&store.path).map_err(|e| e.to_string())?;
    let mut accounts = Accounts::load(&store.path.join("users.json")).map_err(|e| e.to_string())?;
    let role = accounts.get(user).map_or(role, |u| u.role);
    let pw = read_new_password(user)?;
    auth::check_password(&pw).map_err(|m| format!("password: {m}"))?;
    let hash = auth::hash_password(&pw).map_err(|e| e.to_string())?;
    accounts.put(UserRecord { name: user.into(), role, password_hash: hash }).map_err(|e| e.to_string())?;
    eprintln!("hostd: password of {user} set (role {role:?}) in {}; hostd uses it at the next login", store.path.display());
    if !store.persistent {
        eprintln!("hostd: {}", store.describe());
    }
    Ok(())
}

/// Copies the host certificate and key to /etc/mantle/hostd/ssl, where the
/// other agents (the CIM broker) look for them, when the store is elsewhere.
fn publish_certificate(store: &Path) -> std::io::Result<()> {
    let public = Path::new(config_store::IN_MEMORY);
    if store == public {
        return Ok(());
    }
    let ((crt, key), (pub_crt, pub_key)) = (server::cert_paths(store), server::cert_paths(public));
    std::fs::create_dir_all(pub_crt.parent().unwrap_or(public))?;
    hostd::store::write_private(&pub_key, &std::fs::read(key)?)?;
    hostd::store::write_atomic(&pub_crt, &std::fs::read(crt)?)
}

async fn run(cli: Cli) -> Result<(), String> {
    let store = config_store(&cli);
    eprintln!("hostd: {}", store.describe());
    let dir = store.path.clone();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    set_root_at_first_start(&cli, &dir)?;
    let hostname = std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    if server::ensure_certificate(&dir, &hostname).map_err(|e| format!("host certificate: {e}"))? {
        eprintln!("hostd: made a self-signed host certificate in {}", server::cert_paths(&dir).0.display());
    }
    if cli.config_dir.is_none() {
        publish_certificate(&dir).map_err(|e| format!("copying the host certificate to {}: {e}", config_store::IN_MEMORY))?;
    }
    let tls = server::tls_config(&dir).map_err(|e| format!("host certificate: {e}"))?;
    let settings = Settings {
        config_dir: dir.clone(),
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
    h.set_config_store(store);
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
