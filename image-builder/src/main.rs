//! image-builder CLI: `iso`, `run`, `bochs`, `kernel`, `lint`, `datastore`, `bench boot|user|vm|linux|cim|api|disk|net`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use image_builder::qemu::{self, Boot, DEFAULT_CPU, Qemu};
use image_builder::{AddSpec, IsoOptions, Progress, bochs, build_iso, datastore, human_size, out_dir};

#[derive(Parser)]
#[command(name = "image-builder", about = "Builds the Mantle ISO and boots it in QEMU or Bochs")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct IsoArgs {
    /// Put a host file or directory (recursively) into the root archive.
    #[arg(long = "add", value_name = "HOST_PATH=IMAGE_PATH")]
    adds: Vec<AddSpec>,
    /// Kernel command line baked into grub.cfg (see README for options).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Kernel only: no BusyBox, init or /etc in the root archive.
    #[arg(long)]
    minimal: bool,
}

/// The datastore disks `run` attaches.
#[derive(clap::Args, Clone)]
struct DiskArgs {
    /// How datastore disks are attached.
    #[arg(long, value_enum, default_value = "virtio-blk")]
    disk_bus: DiskBusArg,
    /// Attach another datastore image besides target/mantle/datastore1.img
    /// (created, 16 GiB sparse, if absent); repeatable.
    #[arg(long = "datastore", value_name = "PATH")]
    datastores: Vec<PathBuf>,
    /// Leave the demo Linux VM (`/vmfs/volumes/datastore1/debian/`, put on
    /// the default datastore when absent) out.
    #[arg(long)]
    no_demo_vm: bool,
}

#[derive(Copy, Clone, ValueEnum)]
enum DiskBusArg {
    /// virtio-blk-pci.
    VirtioBlk,
    /// An NVMe controller (QEMU `-device nvme`).
    Nvme,
}

#[derive(Copy, Clone, ValueEnum)]
enum NicArg {
    /// virtio-net-pci
    Virtio,
    /// Intel 82574L (e1000e)
    E1000e,
    /// No NIC.
    None,
}

#[derive(Copy, Clone, ValueEnum)]
enum CpuModel {
    /// qemu64 with SVM and nested paging (`qemu64,+svm,+npt`).
    Qemu64,
    /// Everything TCG emulates (AMD-like, SVM, NPT, XSAVE, AVX).
    Max,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel, root archive and the hybrid BIOS/UEFI ISO.
    Iso {
        /// Where to write the ISO [default: target/mantle/mantle.iso].
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        iso: IsoArgs,
    },
    /// Build the ISO if needed and boot it in QEMU (TCG), serial console on
    /// this terminal (Ctrl-A X quits, Ctrl-A C is the QEMU monitor).
    Run {
        #[arg(long, default_value_t = 4)]
        cpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 1024)]
        mem: u32,
        /// Boot through OVMF (UEFI) instead of SeaBIOS.
        #[arg(long)]
        uefi: bool,
        #[arg(long, value_enum, default_value = "qemu64")]
        cpu: CpuModel,
        /// The NIC on QEMU's user network (the host is 10.0.2.2 from inside).
        #[arg(long, value_enum, default_value = "virtio")]
        nic: NicArg,
        /// Forward host port HOST on 127.0.0.1 to guest port GUEST
        /// (repeatable; replaces the defaults 8443:443 8080:80 5988:5988 5989:5989).
        #[arg(long = "forward", value_name = "HOST:GUEST")]
        forwards: Vec<qemu::PortForward>,
        #[command(flatten)]
        iso: IsoArgs,
        #[command(flatten)]
        disks: DiskArgs,
        /// Extra QEMU arguments, after `--`.
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
    /// Boot the ISO in Bochs (VMX CPU, headless); serial output is written
    /// to a file and shown here. Bochs always exits with status 1.
    Bochs {
        /// Where COM1 goes [default: target/mantle/bochs-serial.txt].
        #[arg(long)]
        serial_file: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        #[command(flatten)]
        iso: IsoArgs,
    },
    /// Build only the kernel and print the ELF's path.
    Kernel,
    /// Fetch Debian's cloud kernel and build the BusyBox initramfs of the
    /// demo Linux guest; print both paths (`target/linux-guest/`).
    LinuxGuest,
    /// Run clippy on the kernel binary with its real target, flags and
    /// features (fails on any warning; `.ci/run` runs it before the tests).
    Lint,
    /// Datastore disk images (GPT + FAT, as `run` attaches them).
    Datastore {
        #[command(subcommand)]
        what: DatastoreCmd,
    },
    /// Benchmarks (figures are printed, not asserted).
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum DatastoreCmd {
    /// Create a sparse image: GPT, one FAT partition (FAT32 from 512 MiB).
    New {
        /// [default: target/mantle/datastore1.img]
        path: Option<PathBuf>,
        /// Size, e.g. 16G, 512M.
        #[arg(long, default_value = "16G")]
        size: String,
        /// Volume label (the /vmfs/volumes/<label> name).
        #[arg(long, default_value = image_builder::datastore::DEFAULT_LABEL)]
        label: String,
    },
    /// List a directory (or show a file) on the datastore.
    Ls {
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        #[arg(default_value = "/")]
        dir: String,
    },
    /// Copy a host file or directory (recursively) onto the datastore.
    Put {
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        host_path: PathBuf,
        /// Destination path or directory on the datastore.
        #[arg(default_value = "/")]
        dest: String,
    },
    /// Copy a file or directory from the datastore to the host.
    Get {
        #[arg(long, value_name = "PATH")]
        image: Option<PathBuf>,
        src: String,
        host_path: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Time to `mantle: ready` via PVH -kernel, SeaBIOS ISO and OVMF ISO,
    /// side by side with Debian's Linux + BusyBox booted the same ways.
    Boot {
        /// Boots per method (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// System-call round trip, pipe ping-pong and fork+exec+wait, measured
    /// by the same static program as PID 1 on Mantle and on Debian's Linux.
    User {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Both kernels under `-icount shift=0`: their clocks count guest
        /// instructions (an emulator helper such as FXSAVE or IRET counts
        /// as one), so the figures do not move with the host's load.
        #[arg(long)]
        icount: bool,
    },
    /// The VMM: host instructions per CPUID exit (-icount), a guest
    /// workload inside Mantle vs directly in QEMU (under -icount shift=0,
    /// deterministic, and by wall clock), host memory per VM, VMs created
    /// and started per second.
    Vm {
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Debian's cloud kernel in a Mantle VM vs directly in QEMU: power-on
    /// to the shell marker, exits per boot by kind, guest `dd` to its
    /// virtio disk, host memory of a 1 GiB guest that touched 100 MiB, VMs
    /// created and started per second.
    Linux {
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// vCPUs of the guest (and `-smp` of the direct boot).
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
    },
    /// The CIM broker: EnumerateInstances of CIM_ComputerSystem (with --vms VMs in
    /// hostd), CIM_RegisteredProfile and CIM_Namespace (or --class), req/s and p50/p99
    /// with 1 and 16 clients; the
    /// broker over hostd (native Linux), over its in-memory inventory, and any --url.
    Cim {
        #[arg(long, default_value_t = 20)]
        vms: usize,
        /// Requests per client.
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// Concurrent clients (repeatable).
        #[arg(long = "clients", default_values_t = vec![1, 16])]
        clients: Vec<usize>,
        /// Another WBEM server to measure the same way (`http://user:pw@host:port`, repeatable).
        #[arg(long = "url")]
        urls: Vec<String>,
        /// Leave out the broker on Mantle (booting it in QEMU takes minutes).
        #[arg(long)]
        no_mantle: bool,
        /// What to enumerate, `NAMESPACE:CLASS` (repeatable); default
        /// root/cimv2:CIM_ComputerSystem, root/interop:CIM_RegisteredProfile and
        /// root/interop:CIM_Namespace.
        #[arg(long = "class", value_parser = image_builder::cim_bench::parse_class)]
        classes: Vec<(String, String)>,
    },
    /// hostd's REST API: p50/p99 of GET /api/vms and of a power-on under
    /// --clients concurrent HTTPS clients, and VMs created and powered on per
    /// second; hostd on Mantle (QEMU) next to hostd on the Linux host.
    Api {
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// GET /api/vms requests per client.
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// VMs created and powered on.
        #[arg(long, default_value_t = 50)]
        vms: usize,
        /// Measure only hostd on the Linux host.
        #[arg(long)]
        host_only: bool,
        /// vCPUs of the QEMU machine running Mantle.
        #[arg(long, default_value_t = 2)]
        cpus: u32,
    },
    /// Datastore throughput: sequential write and read of a 256 MiB file,
    /// 4 KiB random reads and fsync'd random writes, by the same static
    /// program as PID 1 on Mantle and on Debian's Linux (vfat), on the same
    /// FAT32 image behind the same virtio-blk device.
    Disk {
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Run only one side (`mantle` or `linux`), e.g. while tuning;
        /// the README's figures come from runs of both.
        #[arg(long)]
        only: Option<String>,
    },
    /// The management network: TCP throughput host -> guest and guest ->
    /// host, and HTTP requests/s of `tokio_httpd` under concurrent
    /// keep-alive clients, by the same static programs as PID 1 on Mantle
    /// and on Debian's Linux, behind the same NIC model on QEMU's user
    /// network.
    Net {
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// The NIC model (both systems).
        #[arg(long, value_enum, default_value_t = NicArg::Virtio)]
        nic: NicArg,
        /// MiB moved in each direction.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 50)]
        clients: usize,
        /// HTTP requests per client (after one that opens its connection).
        #[arg(long, default_value_t = 20)]
        requests: usize,
        /// Run only one side (`mantle` or `linux`).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("image-builder: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn iso_options(out: Option<PathBuf>, a: IsoArgs) -> IsoOptions {
    IsoOptions { out, adds: a.adds, cmdline: a.cmdline, minimal: a.minimal, quiet: false }
}

fn build(opts: &IsoOptions) -> Result<PathBuf, String> {
    let (info, _kernel) = build_iso(opts, &mut Progress::new(4))?;
    println!(
        "{} ISO {} ({})",
        if info.rebuilt { "wrote" } else { "up to date:" },
        info.path.display(),
        human_size(info.size)
    );
    Ok(info.path)
}

fn real_main() -> Result<ExitCode, String> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Iso { out, iso } => {
            build(&iso_options(out, iso))?;
        }
        Cmd::Run { cpus, mem, uefi, cpu, nic, forwards, iso, disks, qemu_args } => {
            let iso = build(&iso_options(None, iso))?;
            let disk_args = datastore_disks(disks)?;
            let mut q = Qemu::new(Boot::Iso(iso));
            q.cpus = cpus;
            q.mem_mib = mem;
            q.uefi = uefi;
            q.cpu = match cpu {
                CpuModel::Qemu64 => DEFAULT_CPU.into(),
                CpuModel::Max => "max".into(),
            };
            q.ovmf_vars = Some(out_dir().join("OVMF_VARS_4M.fd"));
            let model = match nic {
                NicArg::Virtio => Some(qemu::NicModel::VirtioNet),
                NicArg::E1000e => Some(qemu::NicModel::E1000e),
                NicArg::None => None,
            };
            if let Some(model) = model {
                let mut n = qemu::Nic::user(model);
                if !forwards.is_empty() {
                    n.forwards = forwards;
                }
                println!("network: {} on QEMU user networking; host ports forwarded:", model.device());
                for url in n.urls() {
                    println!("  {url}");
                }
                if n.forwards.iter().any(|f| f.guest == 443) {
                    println!("hostd (the web host client) refuses every login until a root password is set: at the Mantle console type `hostd passwd root`; it is kept on the first datastore (.mantle/hostd) across reboots");
                }
                q.nics.push(n);
            }
            q.extra = disk_args;
            q.extra.extend(qemu_args);
            let status = q.run_interactive()?;
            println!("QEMU exited with status {status}");
            return Ok(ExitCode::from(status.clamp(0, 255) as u8));
        }
        Cmd::Bochs { serial_file, cpus, iso } => {
            let iso = build(&iso_options(None, iso))?;
            let serial = serial_file.unwrap_or_else(|| out_dir().join("bochs-serial.txt"));
            let mut b = bochs::Bochs::new(iso, serial);
            b.cpus = cpus;
            println!("booting in Bochs ({} CPU(s), {}); serial: {}, Bochs log: {}; Ctrl-C stops it",
                b.cpus, bochs::CPU_MODEL, b.serial_file.display(), b.log_file.display());
            let mut r = b.spawn()?;
            r.follow()?;
            println!("\nBochs exited (it always reports status 1; judge from the serial output)");
        }
        Cmd::Bench { what: BenchCmd::Boot { runs } } => {
            let opts = IsoOptions { out: Some(out_dir().join("bench.iso")), ..Default::default() };
            let (info, kernel) = build_iso(&opts, &mut Progress::new(4))?;
            image_builder::bench::bench_boot(&info.path, &kernel, runs)?;
        }
        Cmd::Bench { what: BenchCmd::User { runs, icount } } => {
            let kernel = image_builder::kernel::build_kernel(true)?;
            let bins = image_builder::userworlds::build_static(false)?;
            image_builder::bench::bench_user(&kernel, &bins.join("ubench"), runs, icount)?;
        }
        Cmd::Bench { what: BenchCmd::Vm { runs } } => {
            let kernel = image_builder::kernel::build_kernel(true)?;
            let bins = image_builder::userworlds::build_static(false)?;
            image_builder::bench::bench_vm(&kernel, &bins.join("vmbench"), runs)?;
        }
        Cmd::Bench { what: BenchCmd::Linux { runs, vcpus } } => {
            let kernel = image_builder::kernel::build_kernel(true)?;
            let bins = image_builder::userworlds::build_static(false)?;
            image_builder::linux_bench::bench_linux(&kernel, &bins.join("vmbench"), runs, vcpus)?;
        }
        Cmd::Bench { what: BenchCmd::Cim { vms, requests, clients, urls, no_mantle, classes } } => {
            image_builder::cim_bench::bench_cim(&image_builder::cim_bench::CimBenchOptions { vms, requests, clients, urls, mantle: !no_mantle, classes })?;
        }
        Cmd::Bench { what: BenchCmd::Api { clients, requests, vms, host_only, cpus } } => {
            image_builder::api_bench::bench_api(&image_builder::api_bench::ApiBenchOptions { clients, requests, vms, host_only, cpus })?;
        }
        Cmd::Bench { what: BenchCmd::Disk { runs, only } } => {
            if let Some(o) = &only
                && o != "mantle"
                && o != "linux"
            {
                return Err(format!("--only takes `mantle` or `linux`, not {o:?}"));
            }
            let kernel = image_builder::kernel::build_kernel(true)?;
            let bins = image_builder::userworlds::build_static(false)?;
            image_builder::bench::bench_disk(&kernel, &bins.join("diskbench"), runs, only.as_deref())?;
        }
        Cmd::Bench { what: BenchCmd::Net { runs, nic, mib, clients, requests, only } } => {
            if let Some(o) = &only
                && o != "mantle"
                && o != "linux"
            {
                return Err(format!("--only takes `mantle` or `linux`, not {o:?}"));
            }
            let nic = match nic {
                NicArg::Virtio => qemu::NicModel::VirtioNet,
                NicArg::E1000e => qemu::NicModel::E1000e,
                NicArg::None => return Err("bench net needs a NIC: --nic virtio or e1000e".into()),
            };
            if mib == 0 || clients == 0 || requests == 0 {
                return Err("--mib, --clients and --requests must be at least 1".into());
            }
            let kernel = image_builder::kernel::build_kernel(true)?;
            let bins = image_builder::userworlds::build_static(false)?;
            let o = image_builder::net_bench::NetBenchOptions { runs, nic, mib, clients, requests, only };
            image_builder::net_bench::bench_net(&kernel, &bins, &o)?;
        }
        Cmd::Datastore { what } => datastore_cmd(what)?,
        Cmd::Kernel => {
            let elf = image_builder::kernel::build_kernel(true)?;
            println!("{}", elf.display());
        }
        Cmd::LinuxGuest => {
            let g = image_builder::linux_guest::prepare()?;
            println!("kernel {}\ninitrd {}\nmodules {}", g.kernel.display(), g.initrd.display(), g.modules.join(" "));
        }
        Cmd::Lint => {
            image_builder::kernel::lint_kernel()?;
            println!("kernel lint: clean");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes the default datastore disk if absent; QEMU arguments for it and
/// the extra ones.
fn datastore_disks(d: DiskArgs) -> Result<Vec<String>, String> {
    let default = datastore::ensure_default()?;
    if !d.no_demo_vm && !image_builder::linux_guest::has_demo_vm(&default)? {
        // A failed fetch (no package mirror) leaves the datastore without
        // the demo VM; Mantle still boots.
        let added = image_builder::linux_guest::prepare().and_then(|guest| {
            image_builder::linux_guest::put_demo_vm(&default, datastore::DEFAULT_LABEL, &guest, image_builder::linux_guest::DEMO_DISK_MIB, None)
        });
        match added {
            Ok(true) => println!(
                "demo VM: /vmfs/volumes/{0}/{1}/{1}.vmx (Debian's cloud kernel, BusyBox, a {2} MiB ext2 disk)",
                datastore::DEFAULT_LABEL,
                image_builder::linux_guest::DEMO_VM,
                image_builder::linux_guest::DEMO_DISK_MIB
            ),
            Ok(false) => {}
            Err(e) => eprintln!("demo VM not added to {}: {e}", default.display()),
        }
    }
    let mut images = vec![default];
    for p in d.datastores {
        if !p.is_file() {
            return Err(format!("--datastore {}: no such image (make one with `image-builder datastore new PATH`)", p.display()));
        }
        images.push(p);
    }
    let bus = match d.disk_bus {
        DiskBusArg::VirtioBlk => datastore::DiskBus::VirtioBlk,
        DiskBusArg::Nvme => datastore::DiskBus::Nvme,
    };
    Ok(datastore::qemu_disk_args(&images, bus))
}

fn datastore_cmd(what: DatastoreCmd) -> Result<(), String> {
    let image = |p: Option<PathBuf>| p.unwrap_or_else(datastore::default_image);
    match what {
        DatastoreCmd::New { path, size, label } => {
            let path = image(path);
            let bytes = datastore::parse_size(&size)?;
            datastore::create(&path, bytes, &label)?;
            println!("created {} ({}, sparse; GPT, FAT partition \"{label}\")", path.display(), human_size(bytes));
        }
        DatastoreCmd::Ls { image: img, dir } => {
            for line in datastore::ls(&image(img), &dir)? {
                println!("{line}");
            }
        }
        DatastoreCmd::Put { image: img, host_path, dest } => {
            let (files, bytes) = datastore::put(&image(img), &host_path, &dest)?;
            println!("copied {files} file(s), {}", human_size(bytes));
        }
        DatastoreCmd::Get { image: img, src, host_path } => {
            let (files, bytes) = datastore::get(&image(img), &src, &host_path)?;
            println!("copied {files} file(s), {}", human_size(bytes));
        }
    }
    Ok(())
}
