//! image-builder: builds Mantle (kernel, root archive, ISO) and boots it in
//! QEMU or Bochs. The `image-builder` binary is a thin CLI over this
//! library; the image tests (`tests/`) call the library directly, never a
//! nested `cargo run` (which could wait forever on the outer build lock).
pub mod bochs;
pub mod hosttools;
pub mod iso;
pub mod kernel;
pub mod api_bench;
pub mod bench;
pub mod cim_bench;
pub mod datastore;
pub mod debian;
pub mod guests;
pub mod linux_bench;
pub mod linux_guest;
pub mod net_bench;
pub mod qemu;
pub mod rootfs;
pub mod suite;
pub mod userworlds;

use std::path::{Path, PathBuf};

pub use rootfs::AddSpec;

/// `target/mantle`: where ISOs and run-time files go.
pub fn out_dir() -> PathBuf {
    kernel::workspace_root().join("target/mantle")
}

/// The default ISO path, `target/mantle/mantle.iso`.
pub fn default_iso() -> PathBuf {
    out_dir().join("mantle.iso")
}

/// What goes into an ISO besides the kernel.
#[derive(Clone, Debug, Default)]
pub struct IsoOptions {
    pub out: Option<PathBuf>,
    pub adds: Vec<AddSpec>,
    pub cmdline: String,
    /// Leave out the base system (BusyBox, init, /etc): a kernel-only image.
    pub minimal: bool,
    /// No cargo progress output (tests).
    pub quiet: bool,
}

/// Numbered progress lines (`[1/4] building kernel ...`).
pub struct Progress {
    step: usize,
    total: usize,
    quiet: bool,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress { step: 0, total, quiet: false }
    }
    pub fn quiet() -> Self {
        Progress { step: 0, total: 0, quiet: true }
    }
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        if !self.quiet {
            println!("[{}/{}] {what} ...", self.step, self.total);
        }
    }
}

/// Builds the kernel (release), the root archive and the ISO; 4 progress
/// steps. Returns the ISO's path and size.
pub fn build_iso(opts: &IsoOptions, p: &mut Progress) -> Result<(iso::IsoInfo, PathBuf), String> {
    p.step("checking host tools (grub-mkrescue, xorriso, mtools)");
    hosttools::ensure(hosttools::ISO_TOOLS)?;
    p.step("building kernel (release)");
    let kernel = kernel::build_kernel(true)?;
    let info = make_iso_with_kernel(&kernel, opts, p)?;
    Ok((info, kernel))
}

/// Steps 3 and 4 of [`build_iso`], for callers that already built the
/// kernel (the tests build it once per process).
pub fn make_iso_with_kernel(kernel: &Path, opts: &IsoOptions, p: &mut Progress) -> Result<iso::IsoInfo, String> {
    p.step(&format!(
        "writing root archive ({}{} --add)",
        if opts.minimal { "" } else { "BusyBox, init, /etc, " },
        opts.adds.len()
    ));
    let cpio = rootfs::build(&opts.adds, opts.minimal, opts.quiet)?;
    let archive = rootfs::compress(&cpio)?;
    if !opts.quiet {
        println!("      root archive: {} cpio, {} zstd", human_size(cpio.len() as u64), human_size(archive.len() as u64));
    }
    let out = opts.out.clone().unwrap_or_else(default_iso);
    p.step("making hybrid BIOS/UEFI ISO with grub-mkrescue");
    iso::make_iso(&iso::IsoSpec { kernel, rootfs: &archive, cmdline: &opts.cmdline, out: &out })
}

/// `5.1 MiB`-style sizes for messages.
pub fn human_size(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
