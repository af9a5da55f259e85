//! The base system in every image: BusyBox (Debian's busybox-static,
//! fetched at build time) with its applet links, Mantle's own user worlds
//! (`init`, the conformance program, hostd, the CIM broker), the files in /etc, and the test
//! guests under /usr/lib/mantle/guests (including the guest suite).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::kernel::workspace_root;
use crate::rootfs::{AddSpec, Rootfs};

/// Static user worlds built from `userworld/`, `agents/hostd/` and `cim-broker/`.
pub const PROGRAMS: &[(&str, &str)] =
    &[
        ("init", "sbin/init"),
        ("vmkcli", "bin/vmkcli"),
        ("conformance", "usr/lib/mantle/conformance"),
        ("hostile", "usr/lib/mantle/hostile"),
        ("vmbench", "usr/lib/mantle/vmbench"),
        ("sysfuzz", "usr/lib/mantle/sysfuzz"),
        ("tokio_httpd", "usr/lib/mantle/tokio_httpd"),
        ("ipcecho", "usr/lib/mantle/ipcecho"),
        // The host agent (agents/hostd); not started by init until the VMkernel has sockets.
        ("hostd", "sbin/hostd"),
        // The CIM broker (cim-broker/); init starts it, and it waits for hostd's certificate.
        ("cim-broker", "sbin/cim-broker"),
    ];

/// Builds the `userworld`, `hostd` and `cim-broker` crates' binaries as static executables
/// (static PIE, as docs/platform.md describes) in a target directory of their own.
pub fn build_static(quiet: bool) -> Result<PathBuf, String> {
    let root = workspace_root();
    let target_dir = root.join("target/userworld-static");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "-p", "userworld", "-p", "hostd", "-p", "cim-broker", "--bins", "--target", "x86_64-unknown-linux-gnu"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static\x1f-Cstrip=debuginfo")
        .env_remove("RUSTFLAGS");
    if quiet {
        cmd.arg("-q");
    }
    let st = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err(format!("building the static user worlds failed ({st})"));
    }
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release"))
}

/// Copies an executable without its symbol table, keeping its mode and
/// modification time (the archive records it: a copy stamped "now" would
/// make every root archive, and so every ISO, differ from the last and be
/// made again by grub-mkrescue): the
/// image needs none (nothing symbolizes user worlds inside Mantle). Done on
/// a copy, so the build stays incremental (`-C strip=symbols` would be a
/// different build of every crate).
fn strip(from: &Path, to: &Path) -> Result<(), String> {
    let out = Command::new("objcopy")
        .arg("--strip-all")
        .arg("--preserve-dates")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| format!("cannot run objcopy (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!("objcopy --strip-all {}: {}", from.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let mode = std::fs::metadata(from).map_err(|e| format!("{}: {e}", from.display()))?.permissions();
    std::fs::set_permissions(to, mode).map_err(|e| format!("{}: {e}", to.display()))
}

/// Applet paths (`bin/ls`, `sbin/ifconfig`, ...) as BusyBox lists them.
pub fn applets(busybox: &Path) -> Result<Vec<String>, String> {
    let out = Command::new(busybox).arg("--list-full").output().map_err(|e| format!("{}: {e}", busybox.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list-full failed", busybox.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect())
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n";
const PROFILE: &str = "export PATH=/sbin:/bin:/usr/sbin:/usr/bin\nexport PS1='[root@mantle \\w]# '\n";
const MOTD: &str = "Mantle — the VMkernel shell (BusyBox). Type 'help' for the shell's built-ins.\n";

/// Adds the base system to `r`.
pub fn add_base_system(r: &mut Rootfs, quiet: bool) -> Result<(), String> {
    let busybox = crate::debian::busybox_static()?;
    r.add(&AddSpec { host: busybox.clone(), image: "bin/busybox".into() })?;
    for applet in applets(&busybox)? {
        if applet == "bin/busybox" || applet == "sbin/init" {
            continue; // Mantle's own init is PID 1
        }
        let depth = applet.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        r.insert_symlink(&applet, &target);
    }
    let bins = build_static(quiet)?;
    let stripped = tempfile::tempdir().map_err(|e| e.to_string())?;
    for (name, image) in PROGRAMS {
        let host = stripped.path().join(name);
        strip(&bins.join(name), &host)?;
        r.add(&AddSpec { host, image: (*image).into() })?;
    }
    r.add(&AddSpec { host: workspace_root().join("userworld/etc/inittab"), image: "etc/inittab".into() })?;
    r.add(&AddSpec { host: workspace_root().join("cim-broker/etc/cim-broker.conf"), image: "etc/mantle/cim-broker.conf".into() })?;
    r.insert_file("etc/passwd", 0o644, PASSWD.as_bytes());
    r.insert_file("etc/group", 0o644, GROUP.as_bytes());
    r.insert_file("etc/hostname", 0o644, b"mantle\n");
    r.insert_file("etc/profile", 0o644, PROFILE.as_bytes());
    r.insert_file("etc/motd", 0o644, MOTD.as_bytes());
    for (name, image) in crate::guests::all().into_iter().chain(crate::guests::hostile()?).chain(crate::guests::bench()?).chain(crate::guests::fuzz()?).chain(crate::guests::power_button()?).chain(crate::guests::ticker()?) {
        r.insert_file(&format!("usr/lib/mantle/guests/{name}"), 0o644, &image);
    }
    let suite = crate::suite::build(quiet)?;
    r.add(&AddSpec { host: suite, image: "usr/lib/mantle/guests/suite.elf".into() })?;
    r.insert_dir("root", 0o700);
    r.insert_dir("tmp", 0o1777);
    Ok(())
}
