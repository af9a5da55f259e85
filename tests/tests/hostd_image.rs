//! hostd on Mantle (issue 12's first image test): init starts `/sbin/hostd`
//! (respawn) at boot; tokio, hyper and rustls run on the VMkernel's epoll,
//! eventfd and sockets. The host drives it with curl over HTTPS through a
//! forwarded port. First boot, fresh datastore: hostd puts its config store
//! on the datastore (`.mantle/hostd`); no root password is set, so every
//! remote login fails until `hostd passwd root` is typed at the serial
//! console (asked twice, not echoed: the password never shows in the serial
//! log) — then the running hostd accepts it. It lists `/api/vms`, adds an
//! Operator account, creates a VM on the datastore, powers it on and sees
//! it running in the API and in `vmkcli vm list`, reads a guest's serial
//! console over the WebSocket and uploads, lists and downloads a datastore
//! file. Second boot (a fresh QEMU on the same disk): the accounts, the
//! inventory (both VMs, without registering them again), the event log and
//! the host certificate are all still there.
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

/// curl with any headers and a raw body; the output is the response head
/// and body (`-i`) as text. A WebSocket stays open until `--max-time`.
fn curl_raw(port: u16, method: &str, path: &str, headers: &[&str], body: Option<&str>, max_secs: u32) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-i", "--http1.1", "-N", "--max-time", &max_secs.to_string(), "-X", method]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    cmd.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("running curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of a string field `"key":"value"` in a JSON text.
fn json_str(body: &str, key: &str) -> Option<String> {
    let at = body.find(&format!("\"{key}\""))?;
    let rest = &body[at + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The value of a number field `"key":123` in a JSON text.
fn json_num(body: &str, key: &str) -> Option<u64> {
    let at = body.find(&format!("\"{key}\":"))?;
    let rest = &body[at + key.len() + 3..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?].parse().ok()
}

/// The highest `tick <8 hex digits>` the ticker guest printed in `text`.
fn last_tick(text: &str) -> Option<u32> {
    text.match_indices("tick ").filter_map(|(i, _)| text.get(i + 5..i + 13)).filter_map(|h| u32::from_str_radix(h, 16).ok()).max()
}

/// The ticker VM's console over the WebSocket (a few seconds of it).
fn console_ticks(port: u16, token: &str, vm: &str) -> Option<u32> {
    let auth = format!("Authorization: Bearer {token}");
    let ws = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &auth];
    last_tick(&curl_raw(port, "GET", &format!("/api/vms/{vm}/console"), &ws, None, 6))
}

/// hostd's pid on Mantle.
fn hostd_pid(c: &mut Console) -> String {
    let out = run(c, "pidof hostd; echo end");
    out.lines().map(str::trim).find(|l| !l.is_empty() && l.chars().all(|ch| ch.is_ascii_digit() || ch == ' ')).unwrap_or_default().to_string()
}

/// The `apifuzz` example (hostd's HTTP fuzzer), built for the host.
fn apifuzz() -> std::path::PathBuf {
    let root = image_builder::kernel::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo).current_dir(&root).args(["build", "-q", "-p", "hostd", "--example", "apifuzz"]).status().expect("running cargo");
    assert!(st.success(), "building hostd's apifuzz example failed");
    root.join("target/debug/examples/apifuzz")
}

fn boot(disk: &Path, port: u16) -> Console {
    // No password on the kernel command line: it would be readable by every
    // process in /proc/cmdline.
    let mut q = qemu_iso(iso("hostd-image", "", &[]));
    q.debug_exit = false;
    q.cpus = 2;
    q.nics = vec![Nic { model: NicModel::VirtioNet, forwards: vec![PortForward { host: port, guest: 443 }] }];
    q.extra.extend(datastore::qemu_disk_args(&[disk.to_path_buf()], DiskBus::VirtioBlk));
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);
    c
}

/// Waits until hostd answers over TLS (401 without a session).
fn wait_for_https(c: &Console, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, _) = curl(port, "GET", "/api/vms", None, None);
        if code == 401 {
            return;
        }
        check(c, Instant::now() < deadline, &format!("hostd does not answer over HTTPS (last status {code})"));
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn login_as(port: u16, user: &str, pw: &str) -> (u16, String) {
    curl(port, "POST", "/api/session", None, Some(&format!("{{\"username\":\"{user}\",\"password\":\"{pw}\"}}")))
}

/// Logs in as root once hostd answers; wrong passwords fail first.
fn login(c: &Console, port: u16) -> String {
    wait_for_https(c, port);
    // No default or wrong password works remotely (two tries: with the two
    // before the password was set, a fifth failure in a row would lock root).
    for pw in ["vmware", "Mantle-first-boot-2"] {
        let (code, body) = login_as(port, "root", pw);
        check(c, code == 401, &format!("login with password {pw:?}: {code} {body}"));
    }
    let (code, body) = login_as(port, "root", PASSWORD);
    check(c, code == 200 || code == 201, &format!("login as root: {code} {body}"));
    json_str(&body, "token").unwrap_or_else(|| panic!("no token in {body}"))
}

/// `hostd passwd root` at the serial console, as an administrator types it.
fn set_root_password_at_console(c: &mut Console) {
    let steps = c
        .send("hostd passwd root\n")
        .and_then(|_| c.expect("New password for root: ", STEP))
        .and_then(|_| c.send(&format!("{PASSWORD}\n")))
        .and_then(|_| c.expect("Retype the password: ", STEP))
        .and_then(|_| c.send(&format!("{PASSWORD}\n")))
        .and_then(|_| c.expect("password of root set", STEP))
        .and_then(|_| c.expect(PROMPT, STEP));
    if let Err(e) = steps {
        panic!("hostd passwd root: {e}\n--- serial log ---\n{}", c.log());
    }
    check(c, !c.log().contains(PASSWORD), "the password was echoed on the console");
}

/// md5sum's hash of a file on Mantle.
fn md5(c: &mut Console, path: &str) -> String {
    let out = run(c, &format!("md5sum {path}"));
    let hash = out.lines().find(|l| l.contains(path)).and_then(|l| l.split_whitespace().next()).unwrap_or_default().to_string();
    check(c, hash.len() == 32, &format!("md5sum {path}: {out}"));
    hash
}

#[test]
fn hostd_serves_https_and_manages_vms_on_mantle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("datastore1.img");
    datastore::create(&disk, 64 << 20, "datastore1").expect("making the datastore");
    let port = free_port();
    let fuzzer = apifuzz();
    let _lock = emulator_lock();

    let mut c = boot(&disk, port);
    // A fresh host: the config store goes to the datastore, and no password
    // works until the console sets one.
    check(&c, c.log().contains("hostd: config store on datastore datastore1: /vmfs/volumes/datastore1/.mantle/hostd"), "hostd does not keep its config store on the datastore");
    check(&c, c.log().contains("no root password is set"), "hostd does not say that no root password is set");
    wait_for_https(&c, port);
    for pw in ["", PASSWORD] {
        let (code, body) = login_as(port, "root", pw);
        check(&c, code == 401, &format!("login with no root password set, password {pw:?}: {code} {body}"));
    }
    set_root_password_at_console(&mut c);
    let token = login(&c, port);
    let (code, body) = curl(port, "GET", "/api/host", Some(&token), None);
    check(&c, code == 200 && body.contains("\"persistent\":true") && body.contains("/vmfs/volumes/datastore1/.mantle/hostd"), &format!("GET /api/host: config store: {code} {body}"));
    let (code, body) = curl(port, "POST", "/api/users", Some(&token), Some("{\"name\":\"ops\",\"password\":\"Operator-pw-1\",\"role\":\"Operator\"}"));
    check(&c, code == 201 || code == 200, &format!("POST /api/users: {code} {body}"));
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
    // The serial console over the WebSocket: a guest that prints and stops
    // by itself; hostd streams what it printed.
    let spec = "{\"name\":\"hello\",\"memory_mib\":16,\"kernel\":\"/usr/lib/mantle/guests/hello.bin\"}";
    let (code, body) = curl(port, "POST", "/api/vms", Some(&token), Some(spec));
    check(&c, code == 201, &format!("POST /api/vms hello: {code} {body}"));
    let (code, body) = curl(port, "POST", "/api/vms/hello/power", Some(&token), Some("{\"action\":\"on\"}"));
    check(&c, code == 202, &format!("power on hello: {code} {body}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, body) = curl(port, "GET", "/api/vms/hello", Some(&token), None);
        if code == 200 && json_str(&body, "exit_reason").as_deref() == Some("debug-exit") {
            break;
        }
        check(&c, Instant::now() < deadline, &format!("the hello guest does not finish: {code} {body}"));
        std::thread::sleep(Duration::from_secs(1));
    }
    let auth = format!("Authorization: Bearer {token}");
    let ws = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", &auth];
    let out = curl_raw(port, "GET", "/api/vms/hello/console", &ws, None, 8);
    check(&c, out.starts_with("HTTP/1.1 101") && out.contains("hello from a Mantle guest"), &format!("console WebSocket: {out:?}"));
    // A file uploaded to the datastore, listed and downloaded again.
    let octet = "Content-Type: application/octet-stream";
    let out = curl_raw(port, "PUT", "/api/datastores/datastore1/file?path=isos/note.txt", &[&auth, octet], Some("uploaded to Mantle"), 120);
    check(&c, out.starts_with("HTTP/1.1 201"), &format!("upload: {out}"));
    let (code, body) = curl(port, "GET", "/api/datastores/datastore1/browse?path=isos", Some(&token), None);
    check(&c, code == 200 && body.contains("\"note.txt\""), &format!("browse: {code} {body}"));
    let (code, body) = curl(port, "GET", "/api/datastores/datastore1/file?path=isos/note.txt", Some(&token), None);
    check(&c, code == 200 && body == "uploaded to Mantle", &format!("download: {code} {body:?}"));
    let note = run(&mut c, "cat /vmfs/volumes/datastore1/isos/note.txt; echo");
    check(&c, note.contains("uploaded to Mantle"), &format!("the uploaded file on Mantle: {note}"));

    // The certificate hostd made is in the store on the datastore and
    // published where the CIM broker reads it.
    let cert_md5 = md5(&mut c, "/vmfs/volumes/datastore1/.mantle/hostd/ssl/host.crt");
    let published = md5(&mut c, "/etc/mantle/hostd/ssl/host.crt");
    check(&c, published == cert_md5, "the published certificate differs from the store's");
    let vmx = run(&mut c, &format!("cat /vmfs/volumes/datastore1/{VM}/{VM}.vmx"));
    check(&c, vmx.contains("config.version") && vmx.contains("spin.bin"), &format!("the .vmx on the datastore:\n{vmx}"));
    // hostd keeps running: init's respawn line and a live process.
    let ps = run(&mut c, "ps");
    check(&c, ps.contains("/sbin/hostd"), &format!("ps shows hostd:\n{ps}"));

    // Restart: hostd killed (-9) while a VM runs. init starts it again; the
    // VM was left alone (same VMkernel VM, its console went on counting),
    // and the inventory and the event log are all there.
    let spec = "{\"name\":\"ticker\",\"memory_mib\":16,\"kernel\":\"/usr/lib/mantle/guests/ticker.elf\"}";
    let (code, body) = curl(port, "POST", "/api/vms", Some(&token), Some(spec));
    check(&c, code == 201, &format!("POST /api/vms ticker: {code} {body}"));
    let (code, body) = curl(port, "POST", "/api/vms/ticker/power", Some(&token), Some("{\"action\":\"on\"}"));
    check(&c, code == 202, &format!("power on ticker: {code} {body}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let tick_before = loop {
        if let Some(t) = console_ticks(port, &token, "ticker") {
            break t;
        }
        check(&c, Instant::now() < deadline, "the ticker guest's console shows no tick");
    };
    let (_, vm_before) = curl(port, "GET", "/api/vms/ticker", Some(&token), None);
    let kernel_id = json_num(&vm_before, "kernel_id");
    let (_, events_before) = curl(port, "GET", "/api/events?limit=1000", Some(&token), None);
    let starts = c.log().matches("hostd: HTTPS on").count();
    let pid = hostd_pid(&mut c);
    check(&c, !pid.is_empty(), "pidof hostd found nothing");
    run(&mut c, &format!("kill -9 {pid}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while c.log().matches("hostd: HTTPS on").count() == starts {
        check(&c, Instant::now() < deadline, "init did not start hostd again after kill -9");
        std::thread::sleep(Duration::from_millis(500));
    }
    let new_pid = hostd_pid(&mut c);
    check(&c, !new_pid.is_empty() && new_pid != pid, &format!("hostd's pid after the restart: {new_pid:?} (was {pid})"));
    wait_for_https(&c, port);
    // Sessions live in hostd's memory: log in again.
    let (code, body) = login_as(port, "root", PASSWORD);
    check(&c, code == 200, &format!("login after hostd's restart: {code} {body}"));
    let token = json_str(&body, "token").unwrap_or_default();
    let (code, vm_after) = curl(port, "GET", "/api/vms/ticker", Some(&token), None);
    let kernel_id_after = json_num(&vm_after, "kernel_id");
    check(
        &c,
        code == 200 && json_str(&vm_after, "power_state").as_deref() == Some("poweredOn") && kernel_id.is_some() && kernel_id_after == kernel_id,
        &format!("the ticker VM after hostd's restart: {code} {vm_after} (before: {vm_before})"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let t = console_ticks(port, &token, "ticker");
        if t.is_some_and(|t| t > tick_before) {
            break;
        }
        check(&c, Instant::now() < deadline, &format!("the ticker's console did not go on (tick {tick_before:x} before, {t:x?} now)"));
    }
    let (code, body) = curl(port, "GET", "/api/vms", Some(&token), None);
    check(&c, code == 200 && [VM, "hello", "ticker"].iter().all(|n| body.contains(&format!("\"name\":\"{n}\""))), &format!("the inventory after hostd's restart: {code} {body}"));
    let (code, events_after) = curl(port, "GET", "/api/events?limit=1000", Some(&token), None);
    let ids = |t: &str| t.match_indices("{\"id\":").count();
    check(
        &c,
        code == 200 && events_after.starts_with(events_before.trim_end_matches(']')) && ids(&events_after) > ids(&events_before) && events_after.contains("VM ticker powered on"),
        &format!("the event log after hostd's restart:\nbefore: {events_before}\nafter: {events_after}"),
    );
    let list = run(&mut c, "vmkcli vm list");
    check(&c, list.lines().any(|l| l.contains("ticker") && l.to_lowercase().contains("running")), &format!("vmkcli vm list after hostd's restart:\n{list}"));
    let cert_after_restart = md5(&mut c, "/vmfs/volumes/datastore1/.mantle/hostd/ssl/host.crt");
    check(&c, cert_after_restart == cert_md5, "the host certificate changed when hostd restarted");

    // A short bounded fuzz run against hostd on Mantle (hostd::fuzz; the
    // long one runs on Linux in `cargo test -p hostd`): no 5xx, no crash.
    let pem = run(&mut c, "cat /etc/mantle/hostd/ssl/host.crt");
    let (begin, end) = (pem.find("-----BEGIN CERTIFICATE-----"), pem.find("-----END CERTIFICATE-----"));
    check(&c, begin.is_some() && end.is_some(), &format!("the host certificate: {pem}"));
    // Not `cert`: a String compares with a PathBuf, so shadowing the hash
    // with this path once made the reboot check below compare a hash with a path.
    let cacert = dir.path().join("host.crt");
    std::fs::write(&cacert, format!("{}\n", pem[begin.unwrap()..end.unwrap() + 25].replace('\r', ""))).expect("writing the certificate");
    let fuzz_started = Instant::now();
    let out = Command::new(&fuzzer)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--password", PASSWORD, "--requests", "150", "--seed", "12", "--timeout", "120"])
        .arg("--cacert")
        .arg(&cacert)
        .output()
        .expect("running apifuzz");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{} ({:.0} s)", report.lines().next().unwrap_or_default(), fuzz_started.elapsed().as_secs_f64());
    check(&c, out.status.success(), &format!("the fuzz run against hostd on Mantle:\n{report}{}", String::from_utf8_lossy(&out.stderr)));
    let pid_now = hostd_pid(&mut c);
    check(&c, pid_now == new_pid && !c.log().contains("panicked"), &format!("hostd died or panicked during the fuzz run (pid {pid_now:?}, was {new_pid})"));

    // kill -9 QEMU while a VM is being reconfigured (two configurations in
    // turn, as fast as hostd takes them): after the next boot the VM's
    // configuration is one of the two, whole — never neither, never a mix.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let patcher = {
        let (stop, acked, token) = (stop.clone(), acked.clone(), token.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = if i.is_multiple_of(2) { "{\"memory_mib\":24,\"annotation\":\"config-B\"}" } else { "{\"memory_mib\":16,\"annotation\":\"config-A\"}" };
                if curl(port, "PATCH", "/api/vms/hello", Some(&token), Some(body)).0 == 200 {
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < 3 {
        check(&c, Instant::now() < deadline, "no reconfiguration of hello succeeded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A moment inside the stream of changes that differs from run to run.
    std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 700)));
    drop(c); // SIGKILL
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = patcher.join();

    // A fresh boot on the same disk: hostd finds its config store again —
    // the accounts, the inventory, the event log and the certificate.
    let mut c = boot(&disk, port);
    check(&c, !c.log().contains("no root password is set"), "after the reboot hostd has forgotten the root password");
    let token = login(&c, port);
    let (code, body) = curl(port, "GET", "/api/vms", Some(&token), None);
    check(&c, code == 200 && body.contains(&format!("\"name\":\"{VM}\"")) && body.contains("\"name\":\"hello\"") && body.contains("poweredOff"), &format!("GET /api/vms after reboot: {code} {body}"));
    // The VM reconfigured when QEMU was killed: one whole configuration.
    let (code, body) = curl(port, "GET", "/api/vms/hello", Some(&token), None);
    let a = body.contains("\"annotation\":\"config-A\"") && body.contains("\"memory_mib\":16");
    let b = body.contains("\"annotation\":\"config-B\"") && body.contains("\"memory_mib\":24");
    check(&c, code == 200 && body.contains("\"config_error\":null") && (a || b), &format!("hello's configuration after kill -9 during reconfiguration: {code} {body}"));
    let vmx = run(&mut c, "cat /vmfs/volumes/datastore1/hello/hello.vmx");
    check(&c, vmx.contains("config.version") && (vmx.contains("config-A") || vmx.contains("config-B")), &format!("hello.vmx after kill -9:\n{vmx}"));
    let (code, body) = login_as(port, "ops", "Operator-pw-1");
    check(&c, code == 200 && json_str(&body, "role").as_deref() == Some("Operator"), &format!("login as ops after reboot: {code} {body}"));
    let (code, body) = curl(port, "GET", "/api/events?limit=1000", Some(&token), None);
    check(&c, code == 200 && body.contains(&format!("VM {VM} created")) && body.matches("\"hostd.started\"").count() >= 2, &format!("the event log after reboot: {code} {body}"));
    let cert2 = md5(&mut c, "/vmfs/volumes/datastore1/.mantle/hostd/ssl/host.crt");
    if cert2 != cert_md5 {
        // What it became: another valid certificate, a cut one, or foreign data.
        let now = run(&mut c, "ls -l /vmfs/volumes/datastore1/.mantle/hostd/ssl; hexdump -C /vmfs/volumes/datastore1/.mantle/hostd/ssl/host.crt | head -80");
        check(&c, false, &format!("the host certificate changed across the reboot ({cert_md5} before, {cert2} after)\nbefore (the published copy):\n{pem}\nafter:\n{now}"));
    }
    // The store is hidden from the datastore browser.
    let (code, body) = curl(port, "GET", "/api/datastores/datastore1/browse?path=.mantle", Some(&token), None);
    check(&c, code == 400, &format!("browsing .mantle: {code} {body}"));
    let (code, body) = curl(port, "GET", "/api/datastores/datastore1/browse", Some(&token), None);
    check(&c, code == 200 && !body.contains(".mantle"), &format!("the datastore root lists .mantle: {code} {body}"));
}
