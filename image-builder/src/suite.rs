//! The guest test suite (`image-builder/guests/suite`): a freestanding
//! Rust Multiboot kernel, built with kernel-like code generation into a
//! target directory of its own, then converted to ELF32 — QEMU's Multiboot
//! loader refuses ELF64 — so that both `qemu-system-x86_64 -kernel` and
//! Mantle's VMM boot the same file. Cargo's own freshness checks make the
//! rebuild a no-op when nothing changed; the conversion reruns only when
//! the ELF64 is newer than the ELF32.

use std::path::PathBuf;
use std::process::Command;

use crate::kernel::workspace_root;

/// Code generation for the suite: like the kernel's, but linked at 1 MiB
/// with the default small code model (the entry stub identity-maps 4 GiB).
pub const SUITE_RUSTFLAGS: &[&str] = &[
    "-Crelocation-model=static",
    "-Cno-redzone=yes",
    "-Cforce-frame-pointers=yes",
    "-Cpanic=abort",
    "-Ctarget-cpu=x86-64",
];

/// Builds the suite and returns the path of `suite.elf` (ELF32, Multiboot).
pub fn build(quiet: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let target_dir = root.join("target/guest-suite");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "-p", "guest-suite", "--bin", "suite", "--features", "image"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", SUITE_RUSTFLAGS.join("\x1f"))
        .env_remove("RUSTFLAGS");
    if quiet {
        cmd.arg("-q");
        let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!("building the guest suite failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
    } else {
        let st = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !st.success() {
            return Err(format!("building the guest suite failed ({st})"));
        }
    }
    let elf64 = target_dir.join("x86_64-unknown-linux-gnu/release/suite");
    let dir = crate::out_dir().join("guests");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let elf32 = dir.join("suite.elf");
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if mtime(&elf32).is_none() || mtime(&elf32) < mtime(&elf64) {
        let tmp = dir.join("suite.elf.tmp");
        let o = Command::new("objcopy")
            .args(["-O", "elf32-i386", "--strip-all"])
            .arg(&elf64)
            .arg(&tmp)
            .output()
            .map_err(|e| format!("cannot run objcopy (binutils missing?): {e}"))?;
        if !o.status.success() {
            return Err(format!("objcopy -O elf32-i386 failed: {}", String::from_utf8_lossy(&o.stderr)));
        }
        std::fs::rename(&tmp, &elf32).map_err(|e| format!("renaming {}: {e}", tmp.display()))?;
    }
    Ok(elf32)
}

#[cfg(test)]
mod tests {
    /// The built image is what both loaders need: ELF32 for i386 whose
    /// entry point and segments sit at 1 MiB, a valid Multiboot header in
    /// the first 8 KiB asking only for page-aligned modules and memory
    /// information (no address fields: the ELF headers say where to load).
    #[test]
    fn suite_is_a_multiboot_elf32_at_1mib() {
        let img = std::fs::read(super::build(true).unwrap()).unwrap();
        assert_eq!(&img[..5], b"\x7fELF\x01", "ELF32");
        assert_eq!(u16::from_le_bytes([img[18], img[19]]), 3, "EM_386");
        let entry = u32::from_le_bytes(img[24..28].try_into().unwrap());
        assert!((0x10_0000..0x20_0000).contains(&entry), "entry {entry:#x}");
        let at = (0..8192).step_by(4).find(|&i| img[i..i + 4] == 0x1bad_b002u32.to_le_bytes()).expect("Multiboot header in the first 8 KiB");
        let w = |i: usize| u32::from_le_bytes(img[at + i * 4..at + i * 4 + 4].try_into().unwrap());
        assert_eq!(w(0).wrapping_add(w(1)).wrapping_add(w(2)), 0, "header checksum");
        assert_eq!(w(1), 3, "flags: page-aligned modules, memory information");
        let parsed = vmkernel::vmm::loader::multiboot::find_header(&img);
        assert!(parsed.is_ok(), "Mantle's loader finds the header: {parsed:?}");
    }
}
