//! Host tools image-builder drives (QEMU, GRUB, xorriso, mtools, OVMF,
//! Bochs): check they exist before use; install them with apt-get when
//! running as root, otherwise fail with the exact command to run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Something on the host, and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    /// What it is, for messages.
    pub what: &'static str,
    /// An executable looked up on PATH, or an absolute file path.
    pub probe: Probe,
    pub package: &'static str,
}

#[derive(Clone, Copy, Debug)]
pub enum Probe {
    Exe(&'static str),
    File(&'static str),
}

pub const QEMU: Tool = Tool { what: "QEMU", probe: Probe::Exe("qemu-system-x86_64"), package: "qemu-system-x86" };
pub const GRUB_MKRESCUE: Tool =
    Tool { what: "grub-mkrescue", probe: Probe::Exe("grub-mkrescue"), package: "grub-common" };
pub const GRUB_PC: Tool =
    Tool { what: "GRUB BIOS modules", probe: Probe::File("/usr/lib/grub/i386-pc/multiboot2.mod"), package: "grub-pc-bin" };
pub const GRUB_EFI: Tool = Tool {
    what: "GRUB UEFI modules",
    probe: Probe::File("/usr/lib/grub/x86_64-efi/multiboot2.mod"),
    package: "grub-efi-amd64-bin",
};
pub const XORRISO: Tool = Tool { what: "xorriso", probe: Probe::Exe("xorriso"), package: "xorriso" };
pub const MFORMAT: Tool = Tool { what: "mformat (mtools)", probe: Probe::Exe("mformat"), package: "mtools" };
pub const OVMF_CODE: Tool =
    Tool { what: "OVMF firmware", probe: Probe::File("/usr/share/OVMF/OVMF_CODE_4M.fd"), package: "ovmf" };
pub const OVMF_VARS: Tool =
    Tool { what: "OVMF variable store", probe: Probe::File("/usr/share/OVMF/OVMF_VARS_4M.fd"), package: "ovmf" };
pub const BOCHS: Tool = Tool { what: "Bochs", probe: Probe::Exe("bochs"), package: "bochs" };
pub const BOCHS_TERM: Tool = Tool {
    what: "Bochs terminal display",
    probe: Probe::File("/usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so"),
    package: "bochs-term",
};
pub const BOCHS_BIOS: Tool =
    Tool { what: "Bochs BIOS", probe: Probe::File("/usr/share/bochs/BIOS-bochs-latest"), package: "bochsbios" };
pub const VGABIOS: Tool = Tool { what: "VGA BIOS", probe: Probe::File("/usr/share/vgabios/vgabios.bin"), package: "vgabios" };

pub const QEMU_IMG: Tool = Tool { what: "qemu-img", probe: Probe::Exe("qemu-img"), package: "qemu-utils" };
pub const MKFS_FAT: Tool = Tool { what: "mkfs.fat", probe: Probe::File("/usr/sbin/mkfs.fat"), package: "dosfstools" };
pub const FSCK_FAT: Tool = Tool { what: "fsck.fat", probe: Probe::File("/usr/sbin/fsck.fat"), package: "dosfstools" };
pub const MKE2FS: Tool = Tool { what: "mke2fs", probe: Probe::File("/usr/sbin/mke2fs"), package: "e2fsprogs" };
pub const SFDISK: Tool = Tool { what: "sfdisk", probe: Probe::File("/usr/sbin/sfdisk"), package: "fdisk" };

/// Everything needed to make an ISO.
pub const ISO_TOOLS: &[Tool] = &[GRUB_MKRESCUE, GRUB_PC, GRUB_EFI, XORRISO, MFORMAT];
/// Everything needed to boot in QEMU (UEFI included).
pub const QEMU_TOOLS: &[Tool] = &[QEMU, OVMF_CODE, OVMF_VARS];
pub const BOCHS_TOOLS: &[Tool] = &[BOCHS, BOCHS_TERM, BOCHS_BIOS, VGABIOS];
/// What the storage tests check datastore images with.
pub const DISK_TOOLS: &[Tool] = &[QEMU_IMG, MKFS_FAT, FSCK_FAT, MFORMAT, SFDISK];

/// Every package CI installs (kept in step with `.ci/run`).
pub const ALL_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "ovmf",
    "bochs",
    "bochs-term",
    "bochsbios",
    "vgabios",
    "qemu-utils",
    "dosfstools",
    "fdisk",
    "e2fsprogs",
];

pub fn find_exe(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Tool {
    pub fn present(&self) -> bool {
        match self.probe {
            Probe::Exe(e) => find_exe(e).is_some(),
            Probe::File(f) => Path::new(f).is_file(),
        }
    }
}

fn is_root() -> bool {
    // /proc/self/status "Uid:\treal\teffective\t..."; no libc dependency needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

// apt-get update runs at most once per process; the lock also keeps two
// callers from running apt-get at the same time.
static APT: Mutex<bool> = Mutex::new(false);

/// Makes sure every tool is present: installs the missing packages if we are
/// root, otherwise returns an error naming the command to run.
pub fn ensure(tools: &[Tool]) -> Result<(), String> {
    let missing: Vec<&Tool> = tools.iter().filter(|t| !t.present()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().map(|t| t.package).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let what: Vec<String> = missing.iter().map(|t| format!("{} ({})", t.what, t.package)).collect();
    let cmd = format!("apt-get update && apt-get install -y --no-install-recommends {}", pkgs.join(" "));
    if !is_root() || find_exe("apt-get").is_none() {
        return Err(format!("missing host tools: {}\ninstall them with:\n  sudo sh -c '{cmd}'", what.join(", ")));
    }
    eprintln!("image-builder: missing {}; installing: {cmd}", what.join(", "));
    let mut updated = APT.lock().unwrap_or_else(|e| e.into_inner());
    if !*updated {
        run_apt(&["update"])?;
        *updated = true;
    }
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(&pkgs);
    run_apt(&args)?;
    let still: Vec<&str> = tools.iter().filter(|t| !t.present()).map(|t| t.what).collect();
    if !still.is_empty() {
        return Err(format!("still missing after apt-get install: {}", still.join(", ")));
    }
    Ok(())
}

fn run_apt(args: &[&str]) -> Result<(), String> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run apt-get: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("apt-get {} failed ({status})", args.join(" "))) }
}
