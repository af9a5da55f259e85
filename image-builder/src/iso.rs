//! The bootable ISO: GRUB (hybrid BIOS + UEFI, made by grub-mkrescue)
//! loading the VMkernel with Multiboot2 and the root archive as a module.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::hosttools;

/// Only the modules this grub.cfg needs, no fonts, locales or themes:
/// a few MB instead of ~20 MB (boot time and disk).
const MKRESCUE_ARGS: &[&str] = &[
    // GRUB's EFI image loads every part_* module at start-up and
    // complains on the (serial-mirrored) UEFI console about missing ones.
    "--install-modules=normal multiboot2 iso9660 fat boot configfile part_acorn part_amiga part_apple \
     part_bsd part_dfly part_dvh part_gpt part_msdos part_plan part_sun part_sunpc",
    "--fonts=",
    "--locales=",
    "--themes=",
    "--compress=xz",
];

/// The `--xorriso` program grub-mkrescue runs (a shell script written
/// beside the stage): it rewrites grub-mkrescue's `efi.img` — a fixed
/// 2.88 MB FAT floppy holding one ~200 KB `bootx64.efi`, the rest empty
/// space the ISO stores in full — as the smallest floppy format its files
/// fit in (360 KB here), then runs the real xorriso with the same
/// arguments. UEFI firmware reads FAT12 of any size; OVMF boots it.
const XORRISO_WRAPPER: &str = r#"#!/bin/sh
set -e
for a in "$@"; do
    if [ -d "$a" ] && [ -f "$a/efi.img" ]; then
        img="$a/efi.img"
        tree=$(mktemp -d)
        mcopy -s -i "$img" ::/efi "$tree/"
        used=$(du -sk "$tree" | cut -f1)
        size=2880
        for f in 1440 720 360; do
            # FAT12's tables, root directory and clusters take their share.
            if [ $((used + 64)) -le $((f * 85 / 100)) ]; then size=$f; fi
        done
        rm -f "$img.new"
        mformat -C -f "$size" -i "$img.new" ::
        mcopy -s -i "$img.new" "$tree/efi" ::/
        mv "$img.new" "$img"
        rm -rf "$tree"
    fi
done
exec xorriso "$@"
"#;

/// What goes into an ISO.
pub struct IsoSpec<'a> {
    pub kernel: &'a Path,
    /// The root archive as the module carries it (zstd-compressed cpio).
    pub rootfs: &'a [u8],
    pub cmdline: &'a str,
    pub out: &'a Path,
}

/// Outcome of [`make_iso`].
#[derive(Debug)]
pub struct IsoInfo {
    pub path: PathBuf,
    pub size: u64,
    /// False when an ISO with identical inputs was already there.
    pub rebuilt: bool,
}

pub fn grub_cfg(cmdline: &str) -> String {
    let sep = if cmdline.is_empty() { "" } else { " " };
    // The kernel owns the serial port: GRUB stays on the (invisible) video
    // console so the serial log starts with the kernel's first line.
    format!(
        "set timeout=0\n\
         set default=0\n\
         menuentry \"Mantle\" {{\n\
         \x20   multiboot2 /boot/vmkernel{sep}{cmdline}\n\
         \x20   module2 /boot/rootfs.cpio.zst rootfs\n\
         \x20   boot\n\
         }}\n"
    )
}

/// Rejects characters that would break out of the grub.cfg line.
fn check_cmdline(cmdline: &str) -> Result<(), String> {
    if let Some(c) = cmdline.chars().find(|c| matches!(c, '\n' | '\r' | '"' | '\'' | '$' | '\\' | ';' | '{' | '}')) {
        return Err(format!("kernel command line {cmdline:?}: character {c:?} is not allowed"));
    }
    Ok(())
}

/// Writes the ISO unless one built from the same inputs is already at `out`
/// (a stamp file beside it records a hash of the inputs).
pub fn make_iso(spec: &IsoSpec) -> Result<IsoInfo, String> {
    check_cmdline(spec.cmdline)?;
    let kernel = std::fs::read(spec.kernel).map_err(|e| format!("{}: {e}", spec.kernel.display()))?;
    let cfg = grub_cfg(spec.cmdline);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&kernel, spec.rootfs, &cfg, MKRESCUE_ARGS, XORRISO_WRAPPER).hash(&mut h);
    let stamp = format!("{:016x}\n", h.finish());
    let stamp_path = spec.out.with_extension("iso.stamp");
    if spec.out.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str()) {
        let size = std::fs::metadata(spec.out).map_err(|e| e.to_string())?.len();
        return Ok(IsoInfo { path: spec.out.to_path_buf(), size, rebuilt: false });
    }

    let dir = spec.out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stage = tempfile::Builder::new().prefix(".iso-stage").tempdir_in(dir).map_err(|e| e.to_string())?;
    // An ISO of another name beside it made from the same inputs (the image
    // tests ask for many names with one content): a copy of it, not a new
    // grub-mkrescue run.
    if let Some(twin) = twin_with_stamp(dir, &stamp, spec.out) {
        let tmp = stage.path().join("out.iso");
        if std::fs::hard_link(&twin, &tmp).or_else(|_| std::fs::copy(&twin, &tmp).map(|_| ())).is_ok() {
            std::fs::rename(&tmp, spec.out).map_err(|e| format!("{}: {e}", spec.out.display()))?;
            std::fs::write(&stamp_path, stamp).map_err(|e| e.to_string())?;
            let size = std::fs::metadata(spec.out).map_err(|e| e.to_string())?.len();
            return Ok(IsoInfo { path: spec.out.to_path_buf(), size, rebuilt: false });
        }
    }
    hosttools::ensure(hosttools::ISO_TOOLS)?;
    let boot = stage.path().join("boot");
    std::fs::create_dir_all(boot.join("grub")).map_err(|e| e.to_string())?;
    std::fs::write(boot.join("vmkernel"), &kernel).map_err(|e| e.to_string())?;
    // The ISO carries the kernel without its line tables and symbol table
    // (1.9 MB instead of 2.3 MB; nothing in the kernel reads its own
    // symbols); target/kernel keeps the full ELF for symbolizing reports.
    let _ = std::process::Command::new("objcopy").arg("--strip-all").arg(boot.join("vmkernel")).status();
    std::fs::write(boot.join("rootfs.cpio.zst"), spec.rootfs).map_err(|e| e.to_string())?;
    std::fs::write(boot.join("grub/grub.cfg"), &cfg).map_err(|e| e.to_string())?;

    // Build next to the target and rename, so a failed or interrupted run
    // never leaves a half-written ISO behind under the real name.
    let tmp = stage.path().join("out.iso");
    let tools = tempfile::Builder::new().prefix(".iso-tools").tempdir_in(dir).map_err(|e| e.to_string())?;
    let wrapper = tools.path().join("xorriso-small-efi");
    std::fs::write(&wrapper, XORRISO_WRAPPER).map_err(|e| format!("{}: {e}", wrapper.display()))?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).map_err(|e| e.to_string())?;
    let out = Command::new("grub-mkrescue")
        .arg(format!("--xorriso={}", wrapper.display()))
        .arg("-o")
        .arg(&tmp)
        .args(MKRESCUE_ARGS)
        .arg(stage.path())
        .arg("--")
        .args(["-volid", "MANTLE"])
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !out.status.success() || !tmp.is_file() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, spec.out).map_err(|e| format!("{}: {e}", spec.out.display()))?;
    std::fs::write(&stamp_path, stamp).map_err(|e| e.to_string())?;
    let size = std::fs::metadata(spec.out).map_err(|e| e.to_string())?.len();
    Ok(IsoInfo { path: spec.out.to_path_buf(), size, rebuilt: true })
}

/// An ISO in `dir` other than `not` whose stamp is `stamp`.
fn twin_with_stamp(dir: &Path, stamp: &str, not: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.extension().is_some_and(|x| x == "stamp")
            && std::fs::read_to_string(p).ok().as_deref() == Some(stamp)
            && p.with_extension("") != not
            && p.with_extension("").is_file()
    }).map(|p| p.with_extension(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_cfg_boots_kernel_with_module() {
        let c = grub_cfg("loglevel=debug debug_exit");
        assert!(c.starts_with("set timeout=0\n"));
        assert!(c.contains("multiboot2 /boot/vmkernel loglevel=debug debug_exit\n"));
        assert!(c.contains("module2 /boot/rootfs.cpio.zst rootfs\n"));
        assert!(grub_cfg("").contains("multiboot2 /boot/vmkernel\n"));
    }

    #[test]
    fn an_iso_with_the_same_stamp_is_found_under_another_name() {
        let d = tempfile::tempdir().unwrap();
        let p = |n: &str| d.path().join(n);
        std::fs::write(p("a.iso"), b"iso a").unwrap();
        std::fs::write(p("a.iso.stamp"), "0000000000000001\n").unwrap();
        std::fs::write(p("b.iso.stamp"), "0000000000000002\n").unwrap(); // its ISO is missing
        assert_eq!(twin_with_stamp(d.path(), "0000000000000001\n", &p("c.iso")), Some(p("a.iso")));
        assert_eq!(twin_with_stamp(d.path(), "0000000000000001\n", &p("a.iso")), None);
        assert_eq!(twin_with_stamp(d.path(), "0000000000000002\n", &p("c.iso")), None);
    }

    #[test]
    fn cmdline_injection_is_rejected() {
        assert!(check_cmdline("a=b c").is_ok());
        assert!(check_cmdline("x\n}\nmenuentry").is_err());
        assert!(check_cmdline("$var").is_err());
    }
}
