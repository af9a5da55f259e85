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
    let mut s = init_prologue(modules);
    s.push_str(&format!("echo \"{SHELL_MARKER}\"\n"));
    // A shell on the console; when it ends, so does the guest.
    s.push_str("setsid cttyhack sh\npoweroff -f\n");
    s
}

/// Bytes the benchmark guest's `dd` writes to its disk (`bench=dd`).
pub const BENCH_DD_MIB: u64 = 32;
/// MiB the benchmark guest writes into its tmpfs (`bench=touch`).
pub const BENCH_TOUCH_MIB: u64 = 100;

/// `/init` of `image-builder bench linux`'s guest: as [`init_script`] up to
/// the shell marker (with the guest's uptime printed just before it), then,
/// instead of a shell, what `bench=` on the kernel command line asks:
/// `dd` — write [`BENCH_DD_MIB`] MiB to `/dev/vda` (`conv=fsync`), timed by
/// the guest's clock; `touch` — write [`BENCH_TOUCH_MIB`] MiB into a tmpfs
/// and wait. `linuxbench: ...` lines report; the guest powers off after.
pub fn bench_init_script(modules: &[String]) -> String {
    let mut s = init_prologue(modules);
    s.push_str("read up _ < /proc/uptime\necho \"linuxbench: uptime $up\"\n");
    s.push_str(&format!("echo \"{SHELL_MARKER}\"\n"));
    s.push_str(&format!(
        "cs() {{ read u _ < /proc/uptime; echo $(( ${{u%.*}}${{u#*.}} )); }}\n\
case \" $(cat /proc/cmdline) \" in\n\
*\" bench=dd \"*)\n\
  t0=$(cs); dd if=/dev/zero of=/dev/vda bs=1M count={BENCH_DD_MIB} conv=fsync; t1=$(cs)\n\
  echo \"linuxbench: dd_bytes $(({BENCH_DD_MIB} * 1048576))\"\n\
  echo \"linuxbench: dd_ns $(( (t1 - t0) * 10000000 ))\"\n\
  echo \"linuxbench: dd-done\" ;;\n\
*\" bench=touch \"*)\n\
  mkdir -p /fill && mount -t tmpfs -o size=$(({BENCH_TOUCH_MIB} * 2))m tmpfs /fill\n\
  dd if=/dev/zero of=/fill/data bs=1M count={BENCH_TOUCH_MIB} 2>/dev/null\n\
  echo \"linuxbench: touched\"; sleep 100000 ;;\n\
esac\n\
poweroff -f\n"
    ));
    s
}

/// What every `/init` does first: mounts, BusyBox links, `modules` loaded
/// in order, the clocksource and CPU count printed, the power-button watcher.
fn init_prologue(modules: &[String]) -> String {
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
    s
}

/// The initramfs (cpio newc): BusyBox, `/init`, and `lib/modules/<m>.ko`
/// for each `(name, bytes)` module given (in load order).
pub fn initramfs(busybox: &[u8], modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    initramfs_with(busybox, modules, init_script)
}

/// [`initramfs`] with the `/init` that `init` writes for the module names.
pub fn initramfs_with(busybox: &[u8], modules: &[(String, Vec<u8>)], init: fn(&[String]) -> String) -> Vec<u8> {
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
    w.add("init", cpio::S_IFREG | 0o755, 0, 0, 0, init(&names).as_bytes());
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
pub(crate) fn resolve_modules(moddir: &Path, wanted: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
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

/// The benchmark guest's files: Debian's bzImage and an initramfs with
/// [`bench_init_script`] and, besides [`MODULES`], `virtio_pci` (QEMU's own
/// virtio-blk-pci when the same guest boots directly in QEMU), written to
/// `target/linux-guest/bench-initrd.cpio`.
pub fn prepare_bench() -> Result<LinuxGuest, String> {
    let root = crate::debian::fetch_package(crate::debian::LINUX_CLOUD_META)?;
    let kernel = crate::debian::find_kernel(&root)?;
    let busybox_path = crate::debian::busybox_static()?;
    let busybox = std::fs::read(&busybox_path).map_err(|e| format!("{}: {e}", busybox_path.display()))?;
    let wanted: Vec<&str> = MODULES.iter().copied().chain(["virtio_pci"]).collect();
    let modules = resolve_modules(&root.join("lib/modules"), &wanted)?;
    let out = dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let initrd = out.join("bench-initrd.cpio");
    let tmp = out.join("bench-initrd.cpio.partial");
    std::fs::write(&tmp, initramfs_with(&busybox, &modules, bench_init_script)).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &initrd).map_err(|e| format!("{}: {e}", initrd.display()))?;
    Ok(LinuxGuest { kernel, initrd, modules: modules.into_iter().map(|(n, _)| n).collect() })
}

/// A Linux VM for a datastore directory (`<datastore>/<vm>/<vm>.vmx`, the
/// layout hostd and ESXi use): what [`vmx`] writes.
#[derive(Clone, Debug)]
pub struct LinuxVm {
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Absolute paths as Mantle sees them (the kernel opens absolute paths).
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    /// Absolute path of a raw disk image (virtio-blk, the guest's `/dev/vda`).
    pub disk: Option<String>,
    /// Port group of a virtio-net NIC (the guest's `eth0`).
    pub network: Option<String>,
}

/// The VM's configuration file, in the VMkernel's one format
/// (`mantle_abi::VmConfig::to_text`, `config.version` included).
pub fn vmx(vm: &LinuxVm) -> String {
    use vmkernel::vmk_api::{DiskConfig, KernelFormat, NicConfig, VmConfig};
    let config = VmConfig {
        name: vm.name.clone(),
        memory_mib: vm.memory_mib,
        vcpus: vm.vcpus,
        kernel: vm.kernel.clone(),
        format: KernelFormat::Linux,
        initrd: Some(vm.initrd.clone()),
        cmdline: vm.cmdline.clone(),
        disks: vm.disk.iter().map(|f| DiskConfig { file: f.clone(), format: "raw".into(), readonly: false }).collect(),
        nics: vm.network.iter().map(|n| NicConfig { network: n.clone(), ..NicConfig::default() }).collect(),
        ..VmConfig::default()
    };
    config.to_text()
}

/// Makes `path` a raw disk image of `size_mib` MiB holding an ext2 file
/// system (the cloud kernel mounts ext2 with its built-in ext4 driver), with
/// the files of `contents` if given (`mke2fs -d`).
pub fn make_ext2_disk(path: &Path, size_mib: u64, label: &str, contents: Option<&Path>) -> Result<(), String> {
    crate::hosttools::ensure(&[crate::hosttools::MKE2FS])?;
    let _ = std::fs::remove_file(path);
    let mut cmd = std::process::Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", "ext2", "-L", label]);
    if let Some(dir) = contents {
        cmd.arg("-d").arg(dir);
    }
    cmd.arg(path).arg(format!("{size_mib}M"));
    let out = cmd.output().map_err(|e| format!("cannot run mke2fs: {e}"))?;
    if !out.status.success() {
        return Err(format!("mke2fs {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(())
}

/// The demo VM `image-builder run` puts on the default datastore: its
/// directory there (ESXi's `<datastore>/<vm>/`).
pub const DEMO_VM: &str = "debian";

/// The demo VM's definition on the datastore labelled `datastore`: the
/// kernel, initramfs and disk live in its directory.
pub fn demo_vm(datastore: &str) -> LinuxVm {
    let dir = format!("/vmfs/volumes/{datastore}/{DEMO_VM}");
    LinuxVm {
        name: DEMO_VM.into(),
        memory_mib: 256,
        vcpus: 2,
        kernel: format!("{dir}/vmlinuz"),
        initrd: format!("{dir}/initrd.cpio"),
        cmdline: "console=ttyS0".into(),
        disk: Some(format!("{dir}/{DEMO_VM}.img")),
        network: Some("VM Network".into()),
    }
}

/// Size of the demo VM's disk (an ext2 file system, the guest's `/dev/vda`).
pub const DEMO_DISK_MIB: u64 = 64;

/// Whether the datastore in `image` has the demo VM's configuration.
pub fn has_demo_vm(image: &Path) -> Result<bool, String> {
    Ok(crate::datastore::open(image, false)?.stat(&format!("/{DEMO_VM}/{DEMO_VM}.vmx")).is_ok())
}

/// Puts the demo VM's directory on the datastore in `image` (labelled
/// `datastore`) unless it is there already: `<vm>.vmx` (the VMkernel's
/// configuration format), Debian's kernel, the initramfs and an empty ext2
/// disk of `disk_mib` MiB (holding the files of `contents`, if given).
/// Returns whether it was added.
pub fn put_demo_vm(image: &Path, datastore: &str, guest: &LinuxGuest, disk_mib: u64, contents: Option<&Path>) -> Result<bool, String> {
    if has_demo_vm(image)? {
        return Ok(false);
    }
    let stage = dir().join(format!("demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let empty = stage.join("empty");
    std::fs::create_dir_all(&empty).map_err(|e| format!("{}: {e}", empty.display()))?;
    let copy = |from: &Path, name: &str| {
        std::fs::copy(from, stage.join(name)).map(|_| ()).map_err(|e| format!("{} -> {name}: {e}", from.display()))
    };
    copy(&guest.kernel, "vmlinuz")?;
    copy(&guest.initrd, "initrd.cpio")?;
    let disk = format!("{DEMO_VM}.img");
    make_ext2_disk(&stage.join(&disk), disk_mib, DEMO_VM, contents)?;
    let vmx_name = format!("{DEMO_VM}.vmx");
    std::fs::write(stage.join(&vmx_name), vmx(&demo_vm(datastore))).map_err(|e| e.to_string())?;
    if crate::datastore::open(image, false)?.stat(&format!("/{DEMO_VM}")).is_err() {
        crate::datastore::put(image, &empty, &format!("/{DEMO_VM}"))?;
    }
    // The configuration last: a directory with its .vmx is a complete VM.
    for name in ["vmlinuz", "initrd.cpio", disk.as_str(), vmx_name.as_str()] {
        crate::datastore::put(image, &stage.join(name), &format!("/{DEMO_VM}/{name}"))?;
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(true)
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

    #[test]
    fn vmx_is_the_kernels_format() {
        let vm = LinuxVm {
            name: "debian".into(),
            memory_mib: 160,
            vcpus: 2,
            kernel: "/vmfs/volumes/datastore1/debian/vmlinuz".into(),
            initrd: "/vmfs/volumes/datastore1/debian/initrd.cpio".into(),
            cmdline: "console=ttyS0".into(),
            disk: Some("/vmfs/volumes/datastore1/debian/debian.img".into()),
            network: Some("VM Network".into()),
        };
        let text = vmx(&vm);
        let c = vmkernel::vmk_api::VmConfig::parse_versioned(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!((c.name.as_str(), c.memory_mib, c.vcpus), ("debian", 160, 2));
        assert_eq!(c.format, vmkernel::vmk_api::KernelFormat::Linux);
        assert_eq!(c.initrd.as_deref(), Some("/vmfs/volumes/datastore1/debian/initrd.cpio"));
        assert_eq!(c.disks.len(), 1);
        assert_eq!(c.disks[0].image_format(), "raw");
        assert_eq!(c.nics[0].network, "VM Network");
        let bare = vmx(&LinuxVm { disk: None, network: None, ..vm });
        let c = vmkernel::vmk_api::VmConfig::parse(&bare).unwrap();
        assert!(c.disks.is_empty() && c.nics.is_empty());
    }

    /// `image-builder run`'s demo VM: a complete VM directory on a fresh
    /// datastore, added once, its configuration in the kernel's format and
    /// its disk an ext2 file system the host's e2fsck accepts.
    #[test]
    fn demo_vm_on_a_datastore() {
        let d = std::env::temp_dir().join(format!("mantle-demo-vm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let image = d.join("ds.img");
        crate::datastore::create(&image, 128 << 20, "datastore1").unwrap();
        std::fs::write(d.join("bzImage"), b"MZ kernel").unwrap();
        std::fs::write(d.join("initrd"), b"070701").unwrap();
        let guest = LinuxGuest { kernel: d.join("bzImage"), initrd: d.join("initrd"), modules: Vec::new() };
        assert!(put_demo_vm(&image, "datastore1", &guest, 4, None).unwrap(), "added");
        assert!(!put_demo_vm(&image, "datastore1", &guest, 4, None).unwrap(), "added only once");
        crate::datastore::get(&image, "/debian", &d).unwrap();
        let text = std::fs::read_to_string(d.join("debian/debian.vmx")).unwrap();
        let c = vmkernel::vmk_api::VmConfig::parse_versioned(&text).unwrap();
        assert_eq!(c.kernel, "/vmfs/volumes/datastore1/debian/vmlinuz");
        assert_eq!(c.disks[0].file, "/vmfs/volumes/datastore1/debian/debian.img");
        assert_eq!(std::fs::read(d.join("debian/vmlinuz")).unwrap(), b"MZ kernel");
        assert_eq!(std::fs::read(d.join("debian/initrd.cpio")).unwrap(), b"070701");
        assert_eq!(std::fs::metadata(d.join("debian/debian.img")).unwrap().len(), 4 << 20);
        let fsck = std::process::Command::new("e2fsck").args(["-f", "-n"]).arg(d.join("debian/debian.img")).output().unwrap();
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
