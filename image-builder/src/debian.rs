//! Fetching Debian packages at build time.
//!
//! Mantle reuses a few Debian binaries it never commits: the cloud kernel
//! (`linux-image-cloud-amd64`) for Linux guests and benchmarks, and
//! `busybox-static` for the shell in the image and guest initramfs. This
//! module downloads such a package with the host's APT (`apt-get download`,
//! no root needed once the package lists exist) and unpacks it with
//! `dpkg-deb -x` into a cache under `target/debian/`:
//!
//! ```text
//! target/debian/<real-package>/<file>.deb
//! target/debian/<real-package>/root/...      (the extracted tree)
//! target/debian/<real-package>/root/.mantle-extracted   (completion marker)
//! ```
//!
//! Meta-packages such as `linux-image-cloud-amd64` (13 kB, no kernel inside)
//! are resolved to the package they depend on first
//! (`apt-cache depends` → `linux-image-6.1.0-NN-cloud-amd64`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

/// The meta-package that tracks Debian's current cloud kernel.
pub const LINUX_CLOUD_META: &str = "linux-image-cloud-amd64";
/// The meta-package of Debian's generic kernel (the same version as the
/// cloud kernel, with the drivers for real hardware such as e1000e, which
/// the cloud kernel leaves out).
pub const LINUX_GENERIC_META: &str = "linux-image-amd64";
/// Debian's statically linked BusyBox.
pub const BUSYBOX_STATIC: &str = "busybox-static";

/// Marker written after a complete extraction, so an interrupted run is redone.
const EXTRACTED_MARKER: &str = ".mantle-extracted";

/// The package cache: `<workspace>/target/debian`.
pub fn cache_dir() -> PathBuf {
    crate::kernel::workspace_root().join("target/debian")
}

/// Downloads (once) and extracts Debian package `name` into the cache and
/// returns the directory holding the extracted tree. Meta-packages of the
/// `linux-image-*` family are resolved to the real kernel package first.
pub fn fetch_package(name: &str) -> Result<PathBuf, String> {
    fetch_package_into(name, &cache_dir())
}

/// [`fetch_package`] with an explicit cache directory.
pub fn fetch_package_into(name: &str, cache: &Path) -> Result<PathBuf, String> {
    ensure_known(name)?;
    let real = resolve_package(name)?;
    let pkg_dir = cache.join(&real);
    let root = pkg_dir.join("root");
    if root.join(EXTRACTED_MARKER).is_file() {
        return Ok(root);
    }
    std::fs::create_dir_all(&pkg_dir)
        .map_err(|e| format!("cannot create {}: {e}", pkg_dir.display()))?;

    let deb = match find_deb(&pkg_dir, &real)? {
        Some(deb) => deb,
        None => {
            eprintln!("debian: downloading {real} into {}", pkg_dir.display());
            let out = run(
                Command::new("apt-get")
                    .current_dir(&pkg_dir)
                    .args(["download", "-q", &real]),
                "apt-get download",
            )?;
            if !out.status.success() {
                return Err(format!(
                    "`apt-get download {real}` (in {}) failed ({}):\n{}",
                    pkg_dir.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            find_deb(&pkg_dir, &real)?.ok_or_else(|| {
                format!(
                    "`apt-get download {real}` succeeded but left no {real}_*.deb in {}",
                    pkg_dir.display()
                )
            })?
        }
    };

    // Extract into a scratch directory, then rename: a half-extracted tree is
    // never mistaken for a complete one.
    let scratch = pkg_dir.join("root.partial");
    let _ = std::fs::remove_dir_all(&scratch);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let out = run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&scratch),
        "dpkg-deb",
    )?;
    if !out.status.success() {
        return Err(format!(
            "`dpkg-deb -x {} {}` failed ({}):\n{}",
            deb.display(),
            scratch.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    std::fs::write(scratch.join(EXTRACTED_MARKER), real.as_bytes())
        .map_err(|e| format!("cannot write marker in {}: {e}", scratch.display()))?;
    std::fs::rename(&scratch, &root).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            scratch.display(),
            root.display()
        )
    })?;
    Ok(root)
}

/// Resolves a meta-package to the package that carries the files. Only
/// `linux-image-*` meta-packages are resolved (to their first `Depends:` on a
/// `linux-image-*` package); any other name is returned unchanged.
pub fn resolve_package(name: &str) -> Result<String, String> {
    if !name.starts_with("linux-image-") {
        return Ok(name.to_string());
    }
    let out = run(
        Command::new("apt-cache").args(["depends", name]),
        "apt-cache depends",
    )?;
    if !out.status.success() {
        return Err(format!(
            "`apt-cache depends {name}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // A real kernel package has no linux-image dependency: it is its own answer.
    Ok(pick_depends(&text, "linux-image-").unwrap_or_else(|| name.to_string()))
}

/// From `apt-cache depends` output, the first `Depends:` (or alternative
/// `|Depends:`) whose package name starts with `prefix`. Virtual packages
/// (`<name>`) are skipped.
pub fn pick_depends(apt_cache_depends: &str, prefix: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let line = line.trim().trim_start_matches('|');
        let dep = line.strip_prefix("Depends:")?.trim();
        (!dep.starts_with('<') && dep.starts_with(prefix)).then(|| dep.to_string())
    })
}

/// The Linux kernel image (`boot/vmlinuz-*`) in an extracted kernel package.
pub fn find_kernel(root: &Path) -> Result<PathBuf, String> {
    let boot = root.join("boot");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map_err(|e| {
            format!(
                "no boot/ directory in {} ({e}): not a linux-image package?",
                root.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    match found.len() {
        0 => Err(format!("no boot/vmlinuz-* in {}", root.display())),
        1 => Ok(found.remove(0)),
        _ => Err(format!("several kernels in {}: {found:?}", boot.display())),
    }
}

/// The BusyBox binary (`bin/busybox`) in an extracted `busybox-static`.
pub fn find_busybox(root: &Path) -> Result<PathBuf, String> {
    let p = root.join("bin/busybox");
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no bin/busybox in {} (is it busybox-static?)",
            root.display()
        ))
    }
}

/// Fetches Debian's cloud kernel and returns the bzImage path.
pub fn linux_cloud_kernel() -> Result<PathBuf, String> {
    find_kernel(&fetch_package(LINUX_CLOUD_META)?)
}

/// Fetches `busybox-static` and returns the binary's path.
pub fn busybox_static() -> Result<PathBuf, String> {
    find_busybox(&fetch_package(BUSYBOX_STATIC)?)
}

/// The compressed kernel inside a bzImage, as the boot protocol describes it
/// (setup header: `setup_sects` at 0x1f1, `payload_offset`/`payload_length`
/// at 0x248, protocol >= 2.08), without the 4-byte uncompressed size the
/// kernel build appends to it.
pub fn bzimage_payload(bz: &[u8]) -> Result<&[u8], String> {
    let u16_at = |o: usize| bz.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        bz.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bz.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS setup header signature at 0x202)".into());
    }
    let version = u16_at(0x206).unwrap_or(0);
    if version < 0x208 {
        return Err(format!(
            "boot protocol {version:#x} has no payload fields (needs 2.08+)"
        ));
    }
    let setup_sects = match bz[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let (off, len) = (
        u32_at(0x248).unwrap() as usize,
        u32_at(0x24c).unwrap() as usize,
    );
    let start = (setup_sects + 1) * 512 + off;
    let payload = bz.get(start..start + len).ok_or_else(|| {
        format!(
            "payload {start:#x}+{len:#x} lies outside the {}-byte bzImage",
            bz.len()
        )
    })?;
    payload
        .get(..len.saturating_sub(4))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| "empty bzImage payload".to_string())
}

/// LZ4 legacy-frame magic, the format of Debian's kernels (`CONFIG_KERNEL_LZ4`).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Extracts the uncompressed `vmlinux` ELF from an LZ4-compressed bzImage
/// (with the `lz4` tool, Debian package `lz4`) into `out`, once. The ELF
/// carries the PVH entry note, so QEMU `-kernel vmlinux` boots it via PVH.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<(), String> {
    if out.is_file() {
        return Ok(());
    }
    let bz =
        std::fs::read(bzimage).map_err(|e| format!("cannot read {}: {e}", bzimage.display()))?;
    let payload = bzimage_payload(&bz).map_err(|e| format!("{}: {e}", bzimage.display()))?;
    if !payload.starts_with(&LZ4_LEGACY_MAGIC) {
        return Err(format!(
            "{}: payload is not LZ4 (starts {:02x?}); only LZ4 kernels are handled",
            bzimage.display(),
            &payload[..payload.len().min(4)]
        ));
    }
    let partial = out.with_extension("partial");
    let compressed = out.with_extension("lz4");
    std::fs::write(&compressed, payload).map_err(|e| format!("{}: {e}", compressed.display()))?;
    let status = Command::new("lz4")
        .args(["-d", "-q", "-f"])
        .arg(&compressed)
        .arg(&partial)
        .status()
        .map_err(|e| format!("cannot run lz4 ({e}); install Debian's `lz4` package"))?;
    let _ = std::fs::remove_file(&compressed);
    if !status.success() {
        return Err(format!(
            "lz4 -d of the payload of {} failed ({status})",
            bzimage.display()
        ));
    }
    let mut head = [0u8; 4];
    std::fs::File::open(&partial)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    if &head != b"\x7fELF" {
        return Err(format!(
            "the payload of {} did not decompress to an ELF",
            bzimage.display()
        ));
    }
    std::fs::rename(&partial, out).map_err(|e| format!("rename to {}: {e}", out.display()))
}

/// `<cache>/<pkg>/<pkg>_*.deb`, if downloaded already (the newest name wins).
fn find_deb(dir: &Path, pkg: &str) -> Result<Option<PathBuf>, String> {
    let prefix = format!("{pkg}_");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    Ok(debs.pop())
}

/// Makes sure APT knows `name`; on a fresh machine (empty package lists) runs
/// `apt-get update` once when root, or says which command to run.
fn ensure_known(name: &str) -> Result<(), String> {
    if apt_knows(name)? {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "APT does not know the package `{name}`; the package lists are probably empty. \
             Run `sudo apt-get update` once, then try again."
        ));
    }
    static UPDATE: Once = Once::new();
    let mut result = Ok(());
    UPDATE.call_once(|| {
        eprintln!("debian: APT does not know `{name}`; running `apt-get update` once");
        result = match Command::new("apt-get").args(["update", "-q"]).status() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("`apt-get update` failed ({s})")),
            Err(e) => Err(format!("cannot run apt-get: {e}")),
        };
    });
    result?;
    if apt_knows(name)? {
        Ok(())
    } else {
        Err(format!(
            "APT does not know the package `{name}` even after `apt-get update`: \
             is a Debian bookworm `main` source configured in /etc/apt/sources.list(.d)?"
        ))
    }
}

/// Whether APT has a candidate for `name` (`apt-cache policy` prints
/// `Candidate: <version>`; nothing, or `(none)`, when it does not).
fn apt_knows(name: &str) -> Result<bool, String> {
    let out = run(
        Command::new("apt-cache").args(["policy", name]),
        "apt-cache policy",
    )?;
    Ok(has_candidate(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `apt-cache policy` output: true when a candidate version exists.
pub fn has_candidate(apt_cache_policy: &str) -> bool {
    apt_cache_policy.lines().any(|l| {
        l.trim().strip_prefix("Candidate:").is_some_and(|v| {
            let v = v.trim();
            !v.is_empty() && v != "(none)"
        })
    })
}

fn is_root() -> bool {
    // The effective uid is the third field of `Uid:` in /proc/self/status.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command, what: &str) -> Result<Output, String> {
    cmd.output().map_err(|e| {
        format!(
            "cannot run {what} ({e}): this needs a Debian host with apt-get, apt-cache and dpkg-deb"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";

    #[test]
    fn meta_package_resolves_to_first_linux_image_dependency() {
        assert_eq!(
            pick_depends(META, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let several = "linux-image-cloud-amd64\n  PreDepends: dpkg\n  Depends: kmod\n \
                       |Depends: <linux-image-virtual>\n  Depends: linux-image-6.1.0-57-cloud-amd64\n  \
                       Depends: linux-image-6.1.0-56-cloud-amd64\n  Recommends: linux-image-foo\n";
        assert_eq!(
            pick_depends(several, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        let alt = "x\n |Depends: linux-image-6.1.0-9-amd64\n  Depends: linux-image-6.1.0-8-amd64\n";
        assert_eq!(
            pick_depends(alt, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
    }

    #[test]
    fn real_package_or_unrelated_output_has_no_pick() {
        let real = "linux-image-6.1.0-56-cloud-amd64\n  Depends: kmod\n  Depends: linux-base\n  \
                    Recommends: initramfs-tools\n  Suggests: linux-doc-6.1\n";
        assert_eq!(pick_depends(real, "linux-image-"), None);
        assert_eq!(pick_depends("", "linux-image-"), None);
        assert_eq!(
            pick_depends("  Recommends: linux-image-x\n", "linux-image-"),
            None
        );
    }

    #[test]
    fn policy_candidate_parsing() {
        assert!(has_candidate(
            "busybox-static:\n  Installed: (none)\n  Candidate: 1:1.35.0-4+deb12u1+b1\n"
        ));
        assert!(!has_candidate(
            "busybox-static:\n  Installed: (none)\n  Candidate: (none)\n"
        ));
        assert!(!has_candidate(""));
    }

    #[test]
    fn bzimage_payload_from_setup_header() {
        let mut bz = vec![0u8; 3 * 512 + 0x40];
        bz[0x1f1] = 2; // setup_sects: payload area starts at 3 * 512
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        bz[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&0x0cu32.to_le_bytes());
        bz[3 * 512 + 0x10..3 * 512 + 0x1c].copy_from_slice(b"\x02\x21\x4c\x18abcdSIZE");
        assert_eq!(bzimage_payload(&bz).unwrap(), b"\x02\x21\x4c\x18abcd");
        bz[0x24c..0x250].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(bzimage_payload(&bz).unwrap_err().contains("outside"));
        bz[0x206..0x208].copy_from_slice(&0x206u16.to_le_bytes());
        assert!(bzimage_payload(&bz).unwrap_err().contains("2.08"));
        assert!(bzimage_payload(b"\x7fELF").unwrap_err().contains("HdrS"));
    }

    #[test]
    fn finds_kernel_and_busybox_in_extracted_trees() {
        let dir = std::env::temp_dir().join(format!("mantle-debian-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("boot")).unwrap();
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("boot/config-6.1.0-56-cloud-amd64"), "").unwrap();
        std::fs::write(dir.join("boot/vmlinuz-6.1.0-56-cloud-amd64"), "k").unwrap();
        assert_eq!(
            find_kernel(&dir).unwrap(),
            dir.join("boot/vmlinuz-6.1.0-56-cloud-amd64")
        );
        assert!(find_busybox(&dir).unwrap_err().contains("no bin/busybox"));
        std::fs::write(dir.join("bin/busybox"), "b").unwrap();
        assert_eq!(find_busybox(&dir).unwrap(), dir.join("bin/busybox"));
        std::fs::write(dir.join("boot/vmlinuz-6.1.0-57-cloud-amd64"), "k").unwrap();
        assert!(find_kernel(&dir).unwrap_err().contains("several kernels"));
        assert!(
            find_kernel(&dir.join("nope"))
                .unwrap_err()
                .contains("no boot/")
        );
        std::fs::create_dir_all(dir.join("deb")).unwrap();
        std::fs::write(dir.join("deb/busybox-static_1%3a1.35.0-4_amd64.deb"), "").unwrap();
        std::fs::write(dir.join("deb/busybox_1_amd64.deb"), "").unwrap();
        assert_eq!(
            find_deb(&dir.join("deb"), "busybox-static").unwrap(),
            Some(dir.join("deb/busybox-static_1%3a1.35.0-4_amd64.deb"))
        );
        assert_eq!(
            find_deb(&dir.join("deb"), "busybox").unwrap(),
            Some(dir.join("deb/busybox_1_amd64.deb"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
