//! hostd on Mantle (issue 12's first image test): init starts `/sbin/hostd`
//! (respawn) at boot; tokio, hyper and rustls run on the VMkernel's epoll,
//! eventfd and sockets. The host drives it with curl over HTTPS through a
//! forwarded port: the first-boot root password comes from the kernel
//! command line (`hostd.root_password=`), and no default password works;
//! it lists `/api/vms`, creates a VM on the datastore, powers it on and
//! sees it running in the API and in `vmkcli vm list`; the VM's `.vmx`
//! lands at `/vmfs/volumes/datastore1/<vm>/<vm>.vmx`, survives a reboot
//! (a fresh QEMU on the same disk) and registers again from there.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use image_builder::datastore::{self, DiskBus};
use image_builder::qemu::{Console, Nic, NicModel, PortForward};
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(300);
const PASSWORD: &str = "Mantle-first-boot-1";
const VM: &str = "web01";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

/// curl (the real client) against hostd: (HTTP status, body).
fn curl(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "--max-time", "120", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    cmd.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of a string field `"key":"value"` in a JSON text.
fn json_str(body: &str, key: &str) -> Option<String> {
    let at = body.find(&format!("\"{key}\""))?;
    let rest = &body[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn boot(disk: &Path, port: u16) -> Console {
    let mut q = qemu_iso(iso("hostd-image", &format!("hostd.root_password={PASSWORD}"), &[]));
    q.debug_exit = false;
    q.cpus = 2;
    q.nics = vec![Nic { model: NicModel::VirtioNet, forwards: vec![PortForward { host: port, guest: 443 }] }];
    q.extra.extend(datastore::qemu_disk_args(&[disk.to_path_buf()], DiskBus::VirtioBlk));
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    c
}

/// Waits until hostd answers over TLS, then logs in as root.
fn login(c: &Console, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, _) = curl(port, "GET", "/api/vms", None, None);
        if code == 401 {
            break;
        }
        check(c, Instant::now() < deadline, &format!("hostd does not answer over HTTPS (last status {code})"));
        std::thread::sleep(Duration::from_secs(2));
    }
    // No default or wrong password works remotely (four tries: the fifth
    // failure in a row would lock the account).
    for pw in ["", "root", "vmware", "Mantle-first-boot-2"] {
        let (code, body) = curl(port, "POST", "/api/session", None, Some(&format!("{{\"username\":\"root\",\"password\":\"{pw}\"}}")));
        check(c, code == 401, &format!("login with password {pw:?}: {code} {body}"));
    }
    let (code, body) = curl(port, "POST", "/api/session", None, Some(&format!("{{\"username\":\"root\",\"password\":\"{PASSWORD}\"}}")));
    check(c, code == 200 || code == 201, &format!("login as root: {code} {body}"));
    json_str(&body, "token").unwrap_or_else(|| panic!("no token in {body}"))
}

#[test]
fn hostd_serves_https_and_manages_vms_on_mantle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("datastore1.img");
    datastore::create(&disk, 64 << 20, "datastore1").expect("making the datastore");
    let port = free_port();
    let _lock = emulator_lock();

    let mut c = boot(&disk, port);
    let token = login(&c, port);
    let (code, body) = curl(port, "GET", "/api/vms", Some(&token), None);
    check(&c, code == 200 && body.trim() == "[]", &format!("GET /api/vms on a fresh host: {code} {body}"));
    let (code, body) = curl(port, "GET", "/api/datastores", Some(&token), None);
    check(&c, code == 200 && body.contains("datastore1"), &format!("GET /api/datastores: {code} {body}"));

    let spec = format!(
        "{{\"name\":\"{VM}\",\"datastore\":\"datastore1\",\"memory_mib\":16,\"vcpus\":1,\"kernel\":\"/usr/lib/mantle/guests/spin.bin\"}}"
    );
    let (code, body) = curl(port, "POST", "/api/vms", Some(&token), Some(&spec));
    check(&c, code == 201, &format!("POST /api/vms: {code} {body}"));
    let (code, body) = curl(port, "POST", &format!("/api/vms/{VM}/power"), Some(&token), Some("{\"action\":\"on\"}"));
    check(&c, code == 202, &format!("power on: {code} {body}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = curl(port, "GET", &format!("/api/vms/{VM}"), Some(&token), None);
        if code == 200 && json_str(&body, "power_state").as_deref() == Some("poweredOn") {
            break;
        }
        check(&c, Instant::now() < deadline, &format!("the VM does not come up: {code} {body}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let list = run(&mut c, "vmkcli vm list");
    check(&c, list.lines().any(|l| l.contains(VM) && l.to_lowercase().contains("running")), &format!("vmkcli vm list:\n{list}"));
    let vmx = run(&mut c, &format!("cat /vmfs/volumes/datastore1/{VM}/{VM}.vmx"));
    check(&c, vmx.contains("config.version") && vmx.contains("spin.bin"), &format!("the .vmx on the datastore:\n{vmx}"));
    // hostd keeps running: init's respawn line and a live process.
    let ps = run(&mut c, "ps");
    check(&c, ps.contains("/sbin/hostd"), &format!("ps shows hostd:\n{ps}"));
    let _ = c.send("poweroff -f\n");
    let status = c.wait_exit(Duration::from_secs(120));
    check(&c, status.is_some(), "QEMU did not exit after poweroff");
    drop(c);

    // A fresh boot on the same disk: the .vmx is still there and hostd
    // registers it again from its path.
    let mut c = boot(&disk, port);
    let vmx2 = run(&mut c, &format!("cat /vmfs/volumes/datastore1/{VM}/{VM}.vmx"));
    check(&c, vmx2.contains("config.version") && vmx2.contains("spin.bin"), &format!("the .vmx after a reboot:\n{vmx2}"));
    let token = login(&c, port);
    let reg = format!("{{\"vmx_path\":\"/vmfs/volumes/datastore1/{VM}/{VM}.vmx\"}}");
    let (code, body) = curl(port, "POST", "/api/inventory/register", Some(&token), Some(&reg));
    check(&c, code == 200 || code == 201, &format!("register after reboot: {code} {body}"));
    let (code, body) = curl(port, "GET", "/api/vms", Some(&token), None);
    check(&c, code == 200 && body.contains(VM) && body.contains("poweredOff"), &format!("GET /api/vms after reboot: {code} {body}"));
}
