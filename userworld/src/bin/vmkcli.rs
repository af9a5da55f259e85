//! vmkcli — the administrator's command line for the VMkernel, used at the
//! BusyBox prompt (and by hostd later). Today: resource groups.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use userworld::vmk::{self, GroupParamsRecord, NO_LIMIT, NO_PARENT};

#[derive(Parser)]
#[command(name = "vmkcli", version, about = "Manage the VMkernel: virtual machines and CPU resource groups")]
struct Cli {
    /// Act as this user ID (drops root privileges first; for checking what
    /// an ordinary user may do).
    #[arg(long, global = true, value_name = "UID")]
    as_uid: Option<u32>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
// Parsed once by clap per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// CPU resource groups: shares, reservation and limit (percent of one CPU).
    Group {
        #[command(subcommand)]
        cmd: GroupCmd,
    },
    /// Virtual machines.
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// The virtual switch vSwitch0: port groups, ports and their counters.
    Vswitch {
        #[command(subcommand)]
        cmd: VswitchCmd,
    },
    /// Port groups of vSwitch0 (VM NICs name one in `nicN.network`).
    Portgroup {
        #[command(subcommand)]
        cmd: PortgroupCmd,
    },
    /// Print the VMkernel API version.
    Version,
}

#[derive(Subcommand)]
enum VswitchCmd {
    /// Port groups (name, VLAN) and ports (NIC, counters).
    List,
}

#[derive(Subcommand)]
enum PortgroupCmd {
    /// Add a port group (VLAN 0: untagged).
    Add {
        name: String,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Remove a port group no NIC is connected to.
    Remove { name: String },
    /// Move a port group to another VLAN.
    Set {
        name: String,
        #[arg(long)]
        vlan: u16,
    },
}

#[derive(Subcommand)]
// Parsed once by clap per run: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum VmCmd {
    /// Define a VM from flags (or a configuration file with --config).
    Create {
        /// VM name (letters, digits, '-', '_', '.').
        #[arg(long)]
        name: Option<String>,
        /// Kernel to boot (absolute path; see --format).
        #[arg(long)]
        kernel: Option<String>,
        /// Guest RAM in MiB.
        #[arg(long, default_value_t = 64)]
        memory: u32,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// A Multiboot module: "PATH" or "PATH ARGS" (repeatable; the guest
        /// sees the string "PATH ARGS").
        #[arg(long = "module", value_name = "PATH [ARGS]")]
        modules: Vec<String>,
        /// CPU shares of the VM's resource group (relative weight).
        #[arg(long, default_value_t = 1000)]
        shares: u32,
        /// Guaranteed CPU, percent of one host CPU.
        #[arg(long, default_value_t = 0)]
        reservation: u32,
        /// Maximum CPU, percent of one host CPU.
        #[arg(long)]
        limit: Option<u32>,
        /// How to load the kernel: multiboot (ELF32/ELF64 or a.out-kludge
        /// header), flat (raw bytes at --load-address), elf64 (64-bit entry)
        /// or linux (a bzImage through the Linux boot protocol).
        #[arg(long, default_value = "multiboot")]
        format: String,
        /// flat: guest-physical address the bytes go to (e.g. 0x7c00).
        #[arg(long)]
        load_address: Option<String>,
        /// flat: entry point (default: the load address).
        #[arg(long)]
        entry: Option<String>,
        /// flat: enter in `real` or `protected` (32-bit, flat) mode.
        #[arg(long, default_value = "protected")]
        entry_mode: String,
        /// Linux: the initial RAM disk (implies --format linux).
        #[arg(long)]
        initrd: Option<String>,
        /// A configuration file (`key = value` lines) instead of the flags.
        #[arg(long)]
        config: Option<String>,
    },
    /// Power on.
    Start { id: u32 },
    /// Hard power off.
    Stop { id: u32 },
    /// Hard reset: power off and on again from the initial state.
    Reset { id: u32 },
    /// Graceful shutdown: press the guest's ACPI power button.
    Shutdown { id: u32 },
    /// Hold the vCPUs (the VM keeps its memory and devices).
    Pause { id: u32 },
    /// Let a paused VM run again.
    Resume { id: u32 },
    /// Send an NMI through every vCPU's LINT1 (as a PC's NMI button).
    Nmi { id: u32 },
    /// Remove a powered-off VM and free its memory.
    Destroy { id: u32 },
    /// List VMs.
    List,
    /// Show a VM's state and statistics.
    Info { id: u32 },
    /// Print the guest's serial console. With --follow: keep printing and
    /// send what you type to the guest's serial port until the VM stops;
    /// detach with Ctrl-] (or Ctrl-C).
    Console {
        id: u32,
        #[arg(long)]
        follow: bool,
    },
    /// Wait until the VM stops (or the timeout in seconds passes).
    Wait {
        id: u32,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

fn state_name(r: &vmk::VmInfoRecord) -> String {
    match r.state {
        vmk::VM_STATE_OFF => "off".into(),
        vmk::VM_STATE_RUNNING => "running".into(),
        vmk::VM_STATE_PAUSED => "paused".into(),
        _ => {
            let why = match r.exit_reason {
                1 => format!("debug-exit code {:#x}", r.exit_code),
                2 => "triple fault".into(),
                3 => "powered off".into(),
                4 => format!("unhandled exit {:#x}", r.exit_code),
                5 => "halted".into(),
                _ => "stopped".into(),
            };
            format!("stopped ({why})")
        }
    }
}

fn vm_cmd(cmd: VmCmd) -> std::io::Result<()> {
    match cmd {
        VmCmd::Create { name, kernel, memory, vcpus, cmdline, modules, shares, reservation, limit, format, load_address, entry, entry_mode, initrd, config } => {
            let text = match config {
                Some(path) => std::fs::read_to_string(path)?,
                None => {
                    let mut t = format!(
                        "name = {}\nkernel = {}\nmemory_mib = {memory}\nvcpus = {vcpus}\ncmdline = {cmdline}\nshares = {shares}\nreservation_pct = {reservation}\n",
                        name.unwrap_or_default(),
                        kernel.unwrap_or_default()
                    );
                    if let Some(l) = limit {
                        t += &format!("limit_pct = {l}\n");
                    }
                    for m in modules {
                        t += &format!("module = {m}\n");
                    }
                    let format = if initrd.is_some() && format == "multiboot" { "linux".to_string() } else { format };
                    t += &format!("format = {format}\nentry_mode = {entry_mode}\n");
                    if let Some(i) = initrd {
                        t += &format!("initrd = {i}\n");
                    }
                    if let Some(a) = load_address {
                        t += &format!("load_address = {a}\n");
                    }
                    if let Some(e) = entry {
                        t += &format!("entry = {e}\n");
                    }
                    t
                }
            };
            let id = vmk::vm_create(&text)?;
            println!("created VM {id}");
        }
        VmCmd::Start { id } => {
            vmk::vm_start(id)?;
            println!("VM {id} powered on");
        }
        VmCmd::Stop { id } => {
            vmk::vm_stop(id)?;
            println!("VM {id} powering off");
        }
        VmCmd::Shutdown { id } => {
            vmk::vm_shutdown(id)?;
            println!("VM {id}: power button pressed");
        }
        VmCmd::Reset { id } => {
            vmk::vm_reset(id)?;
            println!("VM {id} reset");
        }
        VmCmd::Pause { id } => {
            vmk::vm_pause(id)?;
            println!("VM {id} paused");
        }
        VmCmd::Resume { id } => {
            vmk::vm_resume(id)?;
            println!("VM {id} resumed");
        }
        VmCmd::Nmi { id } => {
            vmk::vm_nmi(id)?;
            println!("VM {id}: NMI sent");
        }
        VmCmd::Destroy { id } => {
            vmk::vm_destroy(id)?;
            println!("VM {id} destroyed");
        }
        VmCmd::List => {
            for id in vmk::vm_list()? {
                let r = vmk::vm_info(id)?;
                println!("{:>4} {:<20} {:>6} MiB  {}", r.id, r.name_str(), r.memory_mib, state_name(&r));
            }
        }
        VmCmd::Info { id } => {
            let r = vmk::vm_info(id)?;
            println!("VM {} ({}): {}", r.id, r.name_str(), state_name(&r));
            println!("  vCPUs {}  memory {} MiB  resource group {}", r.vcpus, r.memory_mib, r.group);
            println!("  exits {}  run time {:.3} s  console {} bytes", r.exits, r.run_ns as f64 / 1e9, r.console_pos);
            let s = vmk::vm_stats(id)?;
            let by_kind: Vec<String> = vmk::VM_EXIT_KIND_NAMES.iter().zip(s.exits_by_kind).filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k} {n}")).collect();
            println!("  exits by reason: {}", if by_kind.is_empty() { "none".into() } else { by_kind.join(", ") });
            let runs: Vec<String> = s.vcpu_run_ns[..r.vcpus as usize].iter().enumerate().map(|(i, ns)| format!("vcpu{i} {:.3} s", *ns as f64 / 1e9)).collect();
            println!("  run time by vCPU: {}", runs.join(", "));
            println!("  host memory: guest RAM {} KiB, overhead {} KiB", s.guest_frames * 4, s.overhead_frames * 4);
            // Disk slots in use: the kernel reports all of them; the rest read zero.
            for (i, d) in s.disks.iter().enumerate().filter(|(_, d)| **d != Default::default()) {
                println!(
                    "  disk{i}: {} reads ({} bytes), {} writes ({} bytes), {} flushes, {} errors",
                    d.reads, d.bytes_read, d.writes, d.bytes_written, d.flushes, d.errors
                );
            }
        }
        VmCmd::Console { id, follow } => {
            if follow {
                console_follow(id)?;
            } else {
                use std::io::Write;
                let mut pos = 0u64;
                loop {
                    let chunk = vmk::vm_console_read(id, pos, 4096)?;
                    if chunk.is_empty() {
                        break;
                    }
                    pos += chunk.len() as u64;
                    std::io::stdout().write_all(&chunk)?;
                }
                std::io::stdout().flush()?;
            }
        }
        VmCmd::Wait { id, timeout } => {
            let end = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
            loop {
                let r = vmk::vm_info(id)?;
                if r.state != vmk::VM_STATE_RUNNING {
                    println!("VM {id}: {}", state_name(&r));
                    break;
                }
                if std::time::Instant::now() >= end {
                    return Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Ctrl-]: leaves `vm console --follow` (as telnet does).
const DETACH: u8 = 0x1d;

/// Attaches the terminal to the guest's serial console: guest output is
/// printed, keystrokes go to the guest (raw mode, so Ctrl-C reaches it
/// too) until Ctrl-] or the VM stops.
fn console_follow(id: u32) -> std::io::Result<()> {
    use std::io::Write;
    // SAFETY: termios calls on fd 0 with a properly sized struct.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            let mut raw = t;
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            raw.c_iflag &= !(libc::ICRNL | libc::IXON);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            libc::tcsetattr(0, libc::TCSANOW, &raw);
            Some(t)
        } else {
            None
        }
    };
    if saved.is_some() {
        eprint!("[attached to VM {id}; detach with Ctrl-]]\r\n");
    }
    let result = (|| -> std::io::Result<()> {
        let mut pos = 0u64;
        loop {
            let chunk = vmk::vm_console_read(id, pos, 4096)?;
            pos += chunk.len() as u64;
            std::io::stdout().write_all(&chunk)?;
            std::io::stdout().flush()?;
            if chunk.is_empty() && vmk::vm_info(id)?.state == vmk::VM_STATE_STOPPED {
                return Ok(());
            }
            let mut pfd = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
            // An idle console is polled every 20 ms: what the guest prints
            // shows within that (a test times guest markers through it).
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, if chunk.is_empty() { 20 } else { 0 }) };
            if n > 0 && pfd.revents & libc::POLLIN != 0 {
                let mut b = [0u8; 256];
                // SAFETY: reading into a local buffer of that size.
                let got = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
                if got <= 0 {
                    return Ok(());
                }
                let input = &b[..got as usize];
                if let Some(i) = input.iter().position(|&c| c == DETACH) {
                    vmk::vm_console_write(id, &input[..i])?;
                    return Ok(());
                }
                vmk::vm_console_write(id, input)?;
            }
        }
    })();
    if let Some(t) = saved {
        // SAFETY: restoring the attributes read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        eprint!("\r\n[detached]\r\n");
    }
    result
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
        Cmd::Vm { cmd } => vm_cmd(cmd)?,
        Cmd::Vswitch { cmd: VswitchCmd::List } => print!("{}", std::fs::read_to_string("/proc/net/vswitch")?),
        Cmd::Portgroup { cmd } => portgroup_cmd(cmd).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => std::io::Error::other("invalid port group: a name of 1 to 64 printable characters and a VLAN 0 to 4094"),
            _ => e,
        })?,
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

fn portgroup_cmd(cmd: PortgroupCmd) -> std::io::Result<()> {
    match cmd {
        PortgroupCmd::Add { name, vlan } => {
            vmk::portgroup_add(&name, vlan)?;
            println!("port group {name:?} added (VLAN {vlan})");
        }
        PortgroupCmd::Remove { name } => {
            vmk::portgroup_remove(&name)?;
            println!("port group {name:?} removed");
        }
        PortgroupCmd::Set { name, vlan } => {
            vmk::portgroup_set_vlan(&name, vlan)?;
            println!("port group {name:?} on VLAN {vlan}");
        }
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
                Some(libc::ENOENT) => "no such resource group, VM or file".to_string(),
                Some(libc::ENODEV) => "this host has no usable hardware virtualization".to_string(),
                Some(libc::ENOEXEC) => "the kernel is not a loadable Multiboot image (see the host log)".to_string(),
                Some(libc::ETIMEDOUT) => "timed out".to_string(),
                Some(libc::EAGAIN) => "the guest does not handle the ACPI power button (no ACPI, or nothing listening); use `vm stop`".to_string(),
                Some(libc::EBUSY) => "busy: the group or port group still has members, or the VM is (not) running".to_string(),
                Some(libc::EEXIST) => "it already exists".to_string(),
                Some(libc::EINVAL) => "invalid settings (see the host log for VM configurations; shares 1..=1000000; limit at least the reservation)".to_string(),
                Some(libc::ENOSYS) => "not running on the Mantle VMkernel".to_string(),
                _ => e.to_string(),
            };
            eprintln!("vmkcli: {why}");
            ExitCode::FAILURE
        }
    }
}
