//! The demo Linux guest: Debian's cloud kernel (a stock bzImage) and a small
//! BusyBox initramfs that carries the kernel's virtio modules, both built at
//! build time from Debian packages (never committed) under
//! `target/linux-guest/`.
//!
//! The initramfs's `/init` mounts `/proc`, `/sys` and `/dev`, loads the
//! virtio (and ACPI button / evdev) modules found in the kernel package, and
//! prints [`SHELL_MARKER`] before it starts a shell on the console, so a test
//! or a person at `vmkcli vm console --follow` can type commands
//! (`poweroff -f`, `reboot -f`, `nproc`, ...).

use std::path::{Path, PathBuf};

use vmkernel::cpio;

/// What `/init` prints once the modules are loaded, just before the shell.
pub const SHELL_MARKER: &str = "mantle-linux: shell ready";

/// Modules the initramfs carries if the kernel package has them
/// (`<name>.ko` anywhere under `lib/modules/<version>/kernel/`), with the
/// modules they depend on (their `.modinfo` `depends=`), loaded by `/init`
/// dependencies first.
pub const MODULES: &[&str] =
    &["virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio-rng", "button", "evdev"];

/// BusyBox applets linked in `/bin` (the shell finds every other applet
/// through `busybox --install` at boot).
const APPLETS: &[&str] = &["sh", "busybox"];

/// `/init` (a POSIX shell script run by BusyBox) loading `modules` in order.
pub fn init_script(modules: &[String]) -> String {
    let mut s = String::from(
        "#!/bin/sh\n\
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin\n\
/bin/busybox --install -s\n\
mount -t proc proc /proc\n\
mount -t sysfs sysfs /sys\n\
mount -t devtmpfs devtmpfs /dev 2>/dev/null\n\
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1\n\
for m in",
    );
    for m in modules {
        s.push(' ');
        s.push_str(m);
    }
    s.push_str(
        "; do\n  [ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko\n\
done\n\
echo \"mantle-linux: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource) cpus $(nproc)\"\n\
for d in /sys/class/input/event*; do\n\
  grep -q 'Power Button' $d/device/name 2>/dev/null || continue\n\
  (head -c 1 /dev/input/${d##*/} >/dev/null && echo 'mantle-linux: power button' && poweroff -f) &\n\
done\n",
    );
    s.push_str(&format!("echo \"{SHELL_MARKER}\"\n"));
    // A shell on the console; when it ends, so does the guest.
    s.push_str("setsid cttyhack sh\npoweroff -f\n");
    s
}

/// The initramfs (cpio newc): BusyBox, `/init`, and `lib/modules/<m>.ko`
/// for each `(name, bytes)` module given (in load order).
pub fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = cpio::Writer::new();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"] {
        w.add(dir, cpio::S_IFDIR | 0o755, 0, 0, 0, &[]);
    }
    w.add("bin/busybox", cpio::S_IFREG | 0o755, 0, 0, 0, busybox);
    for applet in APPLETS.iter().filter(|a| **a != "busybox") {
        w.add(&format!("bin/{applet}"), cpio::S_IFLNK | 0o777, 0, 0, 0, b"busybox");
    }
    for (name, bytes) in modules {
        w.add(&format!("lib/modules/{name}.ko"), cpio::S_IFREG | 0o644, 0, 0, 0, bytes);
    }
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    w.add("init", cpio::S_IFREG | 0o755, 0, 0, 0, init_script(&names).as_bytes());
    w.finish()
}

/// The `depends=` list of a module's `.modinfo` section.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let Some(at) = ko.windows(key.len()).position(|w| w == key) else { return Vec::new() };
    let rest = &ko[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|d| !d.is_empty()).map(str::to_string).collect()
}

/// Module names use `_` where file names may use `-`.
fn same_module(a: &str, b: &str) -> bool {
    a.replace('-', "_") == b.replace('-', "_")
}

/// `wanted` and their dependencies from `moddir`, dependencies first; names
/// without a file are skipped.
fn resolve_modules(moddir: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    fn visit(moddir: &Path, name: &str, out: &mut Vec<(String, Vec<u8>)>, depth: usize) -> Result<(), String> {
        if depth > 16 || out.iter().any(|(n, _)| same_module(n, name)) {
            return Ok(());
        }
        let Some(p) = find_module(moddir, name) else { return Ok(()) };
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        for d in module_depends(&bytes) {
            visit(moddir, &d, out, depth + 1)?;
        }
        if !out.iter().any(|(n, _)| same_module(n, name)) {
            out.push((name.to_string(), bytes));
        }
        Ok(())
    }
    let mut out = Vec::new();
    for w in wanted {
        visit(moddir, w, &mut out, 0)?;
    }
    Ok(out)
}

/// Finds `<name>.ko` under `dir` (recursively; `-` and `_` alike).
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find_module(&p, name) {
                return Some(f);
            }
        } else if p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")).is_some_and(|n| same_module(n, name)) {
            return Some(p);
        }
    }
    None
}

/// The guest's files on the build host.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// Debian's bzImage.
    pub kernel: PathBuf,
    /// The BusyBox initramfs.
    pub initrd: PathBuf,
    /// Names of the modules the initramfs carries.
    pub modules: Vec<String>,
}

/// `target/linux-guest`.
pub fn dir() -> PathBuf {
    crate::kernel::workspace_root().join("target/linux-guest")
}

/// Fetches the kernel and BusyBox packages (once) and writes the initramfs
/// to `target/linux-guest/initrd.cpio` (replaced atomically).
pub fn prepare() -> Result<LinuxGuest, String> {
    let root = crate::debian::fetch_package(crate::debian::LINUX_CLOUD_META)?;
    let kernel = crate::debian::find_kernel(&root)?;
    let busybox_path = crate::debian::busybox_static()?;
    let busybox = std::fs::read(&busybox_path).map_err(|e| format!("{}: {e}", busybox_path.display()))?;
    let modules = resolve_modules(&root.join("lib/modules"), MODULES)?;
    let out = dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let initrd = out.join("initrd.cpio");
    let tmp = out.join("initrd.cpio.partial");
    std::fs::write(&tmp, initramfs(&busybox, &modules)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    Ok(LinuxGuest { kernel, initrd, modules: modules.into_iter().map(|(n, _)| n).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_layout_and_init() {
        let mods = vec![("virtio".to_string(), b"\x7fELFv".to_vec()), ("virtio_mmio".to_string(), b"\x7fELFm".to_vec())];
        let archive = initramfs(b"\x7fELFbusybox", &mods);
        let entries: Vec<cpio::Entry> = cpio::entries(&archive).collect::<Result<_, _>>().unwrap();
        let get = |n: &str| entries.iter().find(|e| e.name == n).unwrap_or_else(|| panic!("{n} missing"));
        assert_eq!(get("bin/busybox").data, b"\x7fELFbusybox");
        assert!(get("bin/sh").is_symlink());
        assert_eq!(get("lib/modules/virtio_mmio.ko").data, b"\x7fELFm");
        let init = get("init");
        assert!(init.is_file() && init.mode & 0o111 != 0);
        let script = std::str::from_utf8(init.data).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains("insmod /lib/modules/$m.ko"));
        assert!(script.contains("for m in virtio virtio_mmio;"), "{script}");
        assert!(script.contains(SHELL_MARKER));
        assert!(script.find("insmod").unwrap() < script.find(SHELL_MARKER).unwrap());
        assert!(script.contains("Power Button") && script.contains("poweroff -f) &"), "power-button watcher");
    }

    #[test]
    fn finds_modules_recursively() {
        let d = std::env::temp_dir().join(format!("mantle-linux-guest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("6.1/kernel/drivers/virtio")).unwrap();
        std::fs::write(d.join("6.1/kernel/drivers/virtio/virtio_mmio.ko"), b"m").unwrap();
        assert_eq!(find_module(&d, "virtio_mmio"), Some(d.join("6.1/kernel/drivers/virtio/virtio_mmio.ko")));
        assert_eq!(find_module(&d, "virtio_blk"), None);
        // Dependencies first, each once; `-` and `_` are the same name.
        std::fs::write(d.join("6.1/kernel/drivers/virtio/virtio_mmio.ko"), b"\x7fELF\0depends=virtio,virtio_ring\0name=virtio_mmio").unwrap();
        std::fs::write(d.join("6.1/kernel/drivers/virtio/virtio.ko"), b"depends=virtio_ring\0").unwrap();
        std::fs::write(d.join("6.1/kernel/drivers/virtio/virtio_ring.ko"), b"depends=\0").unwrap();
        std::fs::write(d.join("6.1/kernel/drivers/virtio/virtio-rng.ko"), b"depends=virtio,virtio_ring\0").unwrap();
        let order: Vec<String> =
            resolve_modules(&d, &["virtio_mmio", "virtio-rng", "nope"]).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_mmio", "virtio-rng"]);
        assert_eq!(module_depends(b"x\0depends=\0"), Vec::<String>::new());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
