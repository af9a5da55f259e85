//! Building the VMkernel image with the kernel's code-generation flags.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Flags for the freestanding kernel (see DESIGN.md, build plumbing): a
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

/// The workspace root (image-builder lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds the kernel and returns the path of the ELF image.
pub fn build_kernel(release: bool) -> Result<PathBuf, String> {
    build_kernel_with(release, false)
}

/// [`build_kernel`], optionally keeping cargo's output (warnings) out of
/// the terminal unless the build fails: the image tests use this so the
/// test harness's output stays readable.
pub fn build_kernel_with(release: bool, quiet: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let target_dir = root.join("target/kernel");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "vmkernel", "--bin", "vmkernel", "--features", "image"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", KERNEL_RUSTFLAGS.join("\x1f"))
        .env_remove("RUSTFLAGS");
    if release {
        cmd.arg("--release");
    }
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
