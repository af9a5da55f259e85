//! vmkcli — the administrator's command line for the VMkernel, used at the
//! BusyBox prompt (and by hostd later). Today: resource groups.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use userworld::vmk::{self, GroupParamsRecord, NO_LIMIT, NO_PARENT};

#[derive(Parser)]
#[command(name = "vmkcli", version, about = "Manage the VMkernel: resource groups (and, later, VMs)")]
struct Cli {
    /// Act as this user ID (drops root privileges first; for checking what
    /// an ordinary user may do).
    #[arg(long, global = true, value_name = "UID")]
    as_uid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// CPU resource groups: shares, reservation and limit (percent of one CPU).
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Print the VMkernel API version.
    Version,
}

#[derive(clap::Args, Clone)]
struct Settings {
    /// Relative weight among sibling groups.
    #[arg(long, default_value_t = 1000)]
    shares: u32,
    /// Guaranteed CPU, percent of one CPU.
    #[arg(long, default_value_t = 0)]
    reservation: u32,
    /// Maximum CPU, percent of one CPU (none if omitted).
    #[arg(long)]
    limit: Option<u32>,
    /// Maximum memory the group's processes may commit, MiB (none if omitted).
    #[arg(long)]
    mem_limit: Option<u32>,
}

impl Settings {
    fn record(&self) -> GroupParamsRecord {
        GroupParamsRecord {
            shares: self.shares,
            reservation_pct: self.reservation,
            limit_pct: self.limit.unwrap_or(NO_LIMIT),
            mem_limit_mib: self.mem_limit.unwrap_or(0),
        }
    }
}

#[derive(Subcommand)]
enum GroupCmd {
    /// List every group with its settings and CPU used.
    List,
    /// Create a group (admission control may refuse its reservation).
    Create {
        name: String,
        /// Parent group ID (0 = the host).
        #[arg(long, default_value_t = 0)]
        parent: u32,
        #[command(flatten)]
        settings: Settings,
    },
    /// Change a group's settings.
    Set {
        id: u32,
        #[command(flatten)]
        settings: Settings,
    },
    /// Destroy an empty group.
    Destroy { id: u32 },
    /// Show one group's statistics.
    Stats { id: u32 },
    /// Move a running process into a group.
    Join { id: u32, pid: u32 },
    /// Run a command inside a group.
    Run {
        id: u32,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn show(s: &vmk::GroupStatsRecord) {
    let limit = if s.params.limit_pct == NO_LIMIT { "none".to_string() } else { format!("{}%", s.params.limit_pct) };
    let mem = if s.params.mem_limit_mib == 0 { "none".to_string() } else { format!("{}MiB", s.params.mem_limit_mib) };
    let parent = if s.parent == NO_PARENT { "-".to_string() } else { s.parent.to_string() };
    println!(
        "{:>4} {:<20} parent {:>3}  shares {:>6}  reservation {:>3}%  limit {:>5}  mem-limit {:>8}  worlds {:>3}  cpu {:>9.3} s",
        s.id,
        s.name_str(),
        parent,
        s.params.shares,
        s.params.reservation_pct,
        limit,
        mem,
        s.worlds,
        s.used_ns as f64 / 1e9
    );
}

fn run(cli: Cli) -> std::io::Result<()> {
    if let Some(uid) = cli.as_uid {
        // SAFETY: plain system calls on this single-threaded process.
        unsafe {
            if libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    match cli.cmd {
        Cmd::Version => println!("VMkernel API version {}", vmk::version()?),
        Cmd::Group { cmd } => match cmd {
            GroupCmd::List => {
                for id in vmk::group_list()? {
                    show(&vmk::group_stats(id)?);
                }
            }
            GroupCmd::Create { name, parent, settings } => {
                let id = vmk::group_create(parent, &name, &settings.record())?;
                println!("created group {id} ({name})");
            }
            GroupCmd::Set { id, settings } => {
                vmk::group_set(id, &settings.record())?;
                println!("group {id} updated");
            }
            GroupCmd::Destroy { id } => {
                vmk::group_destroy(id)?;
                println!("group {id} destroyed");
            }
            GroupCmd::Stats { id } => show(&vmk::group_stats(id)?),
            GroupCmd::Join { id, pid } => {
                vmk::group_join(pid, id)?;
                println!("process {pid} moved to group {id}");
            }
            GroupCmd::Run { id, command } => {
                use std::os::unix::process::CommandExt;
                vmk::group_join(std::process::id(), id)?;
                let err = std::process::Command::new(&command[0]).args(&command[1..]).exec();
                return Err(err);
            }
        },
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::EPERM) => "permission denied: only root may change resource groups".to_string(),
                Some(libc::ENOSPC) => "admission control refused the reservation: not enough unreserved CPU".to_string(),
                Some(libc::ENOENT) => "no such resource group".to_string(),
                Some(libc::EBUSY) => "the group still has worlds or child groups".to_string(),
                Some(libc::EINVAL) => "invalid settings (shares 1..=1000000; limit at least the reservation)".to_string(),
                Some(libc::ENOSYS) => "not running on the Mantle VMkernel".to_string(),
                _ => e.to_string(),
            };
            eprintln!("vmkcli: {why}");
            ExitCode::FAILURE
        }
    }
}
