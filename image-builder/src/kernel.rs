//! Building the VMkernel image with the kernel's code-generation flags.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags for the freestanding kernel (see docs/platform.md, "Toolchain": build plumbing): a
/// static, higher-half (`code-model=kernel`) binary without red zone, with
/// frame pointers for backtraces, that never unwinds.
pub const KERNEL_RUSTFLAGS: &[&str] = &[
    "-Crelocation-model=static",
    "-Ccode-model=kernel",
    "-Cno-redzone=yes",
    "-Cforce-frame-pointers=yes",
    "-Cpanic=abort",
    "-Ctarget-cpu=x86-64",
];

/// Flags for C built into the kernel besides those cc derives from
/// [`KERNEL_RUSTFLAGS`]: no stack protector (no canary runtime), no
/// red zone and the kernel code model spelled out, static code.
pub const KERNEL_CFLAGS: &[&str] = &["-fno-stack-protector", "-mno-red-zone", "-mcmodel=kernel", "-fno-pic", "-fno-pie"];

/// The workspace root (image-builder lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The kernel's package and binary (`vmkernel/services`; its framework and
/// library crates come with it).
pub const KERNEL_PACKAGE: &str = "vmkernel-services";

/// A cargo command on the kernel binary with the kernel's target, flags,
/// features and target directory (`build` or `clippy`).
fn kernel_cargo(subcommand: &str, release: bool) -> Command {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([subcommand, "-p", KERNEL_PACKAGE, "--bin", "vmkernel", "--features", "image"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(root.join("target/kernel"))
        .env("CARGO_ENCODED_RUSTFLAGS", KERNEL_RUSTFLAGS.join("\x1f"))
        .env_remove("RUSTFLAGS")
        // C in the kernel (zstd's decoder, through zstd-sys): the cc crate
        // carries the code model, red zone, relocation model and frame
        // pointers over from the Rust flags; these are the rest.
        .env("CFLAGS_x86_64_unknown_linux_gnu", KERNEL_CFLAGS.join(" "));
    if release {
        cmd.arg("--release");
    }
    cmd
}

/// Runs clippy on the kernel binary exactly as it is built (target, flags,
/// `image` feature), so the framework, the services and `hv` are checked
/// with the workspace lints (`undocumented_unsafe_blocks`,
/// `unsafe_op_in_unsafe_fn`, ...); any warning fails.
pub fn lint_kernel() -> Result<(), String> {
    let status = kernel_cargo("clippy", true)
        .args(["--", "-D", "warnings"])
        .status()
        .map_err(|e| format!("cannot run cargo clippy: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("clippy found problems in the kernel ({status})")) }
}

/// Builds the kernel and returns the path of the ELF image.
pub fn build_kernel(release: bool) -> Result<PathBuf, String> {
    build_kernel_with(release, false)
}

/// [`build_kernel`], optionally keeping cargo's output (warnings) out of
/// the terminal unless the build fails: the image tests use this so the
/// test harness's output stays readable.
pub fn build_kernel_with(release: bool, quiet: bool) -> Result<PathBuf, String> {
    let target_dir = workspace_root().join("target/kernel");
    let mut cmd = kernel_cargo("build", release);
    if quiet {
        let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("kernel build failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
    } else {
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("kernel build failed ({status})"));
        }
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir.join("x86_64-unknown-linux-gnu").join(profile).join("vmkernel"))
}
