//! hostd over real TLS with a real client: each test starts the `hostd`
//! binary on loopback ports (chosen by the kernel, printed by hostd) with
//! temporary config and datastore directories, and drives it with `curl`,
//! trusting only the certificate hostd generated at its first start.
//!
//! On the Linux host there is no VMkernel, so power-on is refused with 503
//! here; the power paths are covered with the fake VMkernel in `api`'s unit
//! tests.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ROOT_PW: &str = "Mantle-root-pw1";

struct Hostd {
    child: Child,
    dir: PathBuf,
    https: u16,
    http: u16,
    /// Everything hostd printed so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Hostd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, extra: &[&str]) -> Hostd {
    std::fs::create_dir_all(dir.join("volumes/datastore1")).unwrap();
    std::fs::write(dir.join("kernel.bin"), b"\x02\xb0\xad\x1b not really a kernel").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hostd"));
    cmd.arg("--config-dir")
        .arg(dir.join("config"))
        .arg("--volumes")
        .arg(dir.join("volumes"))
        .args(["--listen", "127.0.0.1", "--https-port", "0", "--http-port", "0"])
        .args(if extra.contains(&"--kernel-cmdline") { &[][..] } else { &["--kernel-cmdline", "/nonexistent"][..] })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start hostd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let log2 = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[hostd] {line}");
            if let Ok(mut l) = log2.lock() {
                l.push_str(&line);
                l.push('\n');
            }
            let _ = tx.send(line);
        }
    });
    let (mut https, mut http) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while https == 0 || http == 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("hostd did not report its ports within 60 s");
        let port = |l: &str| l.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(0);
        if line.starts_with("hostd: HTTPS on") {
            https = port(&line);
        } else if line.starts_with("hostd: HTTP redirect on") {
            http = port(&line);
        }
    }
    Hostd { child, dir: dir.to_path_buf(), https, http, log }
}

fn start_fresh(dir: &Path, extra: &[&str]) -> Hostd {
    std::fs::create_dir_all(dir).unwrap();
    let pw = dir.join("rootpw");
    std::fs::write(&pw, format!("{ROOT_PW}\n")).unwrap();
    let mut args = vec!["--root-password-file", pw.to_str().unwrap()];
    args.extend_from_slice(extra);
    start(dir, &args)
}

struct Reply {
    status: u16,
    body: Value,
    headers: String,
}

impl Hostd {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.https)
    }

    /// One request with curl; `headers` are extra `-H` values.
    fn curl(&self, method: &str, path: &str, headers: &[String], body: Option<&[u8]>) -> Reply {
        let hdr_file = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "30", "--cacert"])
            .arg(self.dir.join("config/ssl/host.crt"))
            .args(["-X", method, "-o", "-", "-w", "\n%{http_code}", "-D"])
            .arg(hdr_file.path());
        for h in headers {
            c.args(["-H", h]);
        }
        let mut body_file = None;
        if let Some(b) = body {
            let mut f = tempfile::NamedTempFile::new().unwrap();
            f.write_all(b).unwrap();
            c.arg("--data-binary").arg(format!("@{}", f.path().display()));
            body_file = Some(f);
        }
        c.arg(self.url(path));
        let out = c.output().expect("run curl");
        drop(body_file);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "curl {method} {path} failed: {} {}", String::from_utf8_lossy(&out.stderr), text);
        let (body, code) = text.rsplit_once('\n').unwrap();
        let status: u16 = code.trim().parse().unwrap();
        let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {body:?}")) };
        Reply { status, body, headers: std::fs::read_to_string(hdr_file.path()).unwrap_or_default() }
    }

    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut h = vec![format!("Authorization: Bearer {token}")];
        let bytes = body.map(|b| {
            h.push("Content-Type: application/json".into());
            serde_json::to_vec(&b).unwrap()
        });
        self.curl(method, path, &h, bytes.as_deref())
    }

    fn login_reply(&self, user: &str, pw: &str) -> Reply {
        self.curl("POST", "/api/session", &["Content-Type: application/json".into()], Some(&serde_json::to_vec(&json!({"username": user, "password": pw})).unwrap()))
    }

    fn login(&self, user: &str, pw: &str) -> String {
        let r = self.login_reply(user, pw);
        assert_eq!(r.status, 200, "login {user}: {}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    fn kernel(&self) -> String {
        self.dir.join("kernel.bin").display().to_string()
    }

    fn datastore(&self) -> PathBuf {
        self.dir.join("volumes/datastore1")
    }

    fn vm_spec(&self, name: &str) -> Value {
        json!({"name": name, "memory_mib": 16, "vcpus": 1, "kernel": self.kernel(), "cmdline": "console=ttyS0",
               "disks": [{"file": format!("{name}.img"), "size_mib": 4}], "nics": [{"network": "VM Network"}]})
    }
}

fn assert_error(r: &Reply, status: u16, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.body["code"].is_string() && r.body["message"].is_string(), "error body: {}", r.body);
    if let Some(f) = field {
        assert_eq!(r.body["field"], f, "{}", r.body);
    }
}

/// The `format` a `.vmx` text names.
fn vmx_format(vmx: &str) -> String {
    vmx.lines().find_map(|l| l.strip_prefix("format = ")).map(|v| v.trim_matches('"').to_string()).unwrap_or_else(|| "multiboot".into())
}

fn dir_entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn vm_lifecycle_over_tls() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    assert_error(&h.call("nonsense", "GET", "/api/vms", None), 401, None);
    assert_error(&h.login_reply("root", "wrong-password"), 401, None);
    let tok = h.login("root", ROOT_PW);

    let host = h.call(&tok, "GET", "/api/host", None);
    assert_eq!(host.status, 200);
    assert_eq!(host.body["product"], "Mantle");
    assert!(host.body["memory_mib"].as_u64().unwrap() > 0 && host.body["cpus"].as_u64().unwrap() > 0);
    assert_eq!(host.body["datastores"][0]["name"], "datastore1");
    assert!(host.body["vmkernel_api_version"].is_null(), "no VMkernel on the Linux host");

    let r = h.call(&tok, "POST", "/api/vms", Some(h.vm_spec("web01")));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["power_state"], "unknown", "the Linux host has no VMkernel to ask");
    let vm_dir = h.datastore().join("web01");
    assert_eq!(dir_entries(&vm_dir), ["web01.img", "web01.vmx"]);
    assert_eq!(std::fs::metadata(vm_dir.join("web01.img")).unwrap().len(), 4 << 20);
    let vmx = std::fs::read_to_string(vm_dir.join("web01.vmx")).unwrap();
    assert!(vmx.contains("config.version = \"1\"") && vmx.contains("cmdline = \"console=ttyS0\""), "{vmx}");

    let r = h.call(&tok, "GET", "/api/vms/web01", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["config"]["memory_mib"], 16);
    assert!(r.body["config"]["nics"][0]["mac"].as_str().unwrap().starts_with("02:4d:4e:"));
    assert_eq!(h.call(&tok, "GET", "/api/vms", None).body.as_array().unwrap().len(), 1);

    // Invalid reconfigurations: a clear 400 naming the field, the file untouched.
    for (patch, field) in [
        (json!({"vcpus": 0}), "vcpus"),
        (json!({"memory_mib": 5_000_000_000u64}), ""),
        (json!({"memory_mib": 60000}), "memory_mib"),
        (json!({"disks": [{"file": "missing.img"}]}), "disks[0].file"),
        (json!({"disks": [{"file": "../../escape.img", "size_mib": 1}]}), "disks[0].file"),
        (json!({"nics": [{"network": "nowhere"}]}), "nics[0].network"),
        (json!({"nics": [{"network": "VM Network", "mac": "ff:ff:ff:ff:ff:ff"}]}), "nics[0].mac"),
        (json!({"limit_pct": 0}), "limit_pct"),
        (json!({"kernel": "/does/not/exist"}), "kernel"),
        (json!({"format": "linux", "modules": [], "initrd": "/does/not/exist.cpio"}), "initrd"),
        (json!({"disks": [{"file": "web01.img", "format": "floppy"}]}), "disks[0].format"),
        (json!({"name": "renamed"}), ""),
        (json!({"vcpus": "two"}), ""),
    ] {
        let r = h.call(&tok, "PATCH", "/api/vms/web01", Some(patch.clone()));
        assert_error(&r, 400, (!field.is_empty()).then_some(field));
        assert!(r.body["message"].as_str().unwrap().contains(if field.is_empty() { "" } else { field.split('[').next().unwrap() }), "{patch}: {}", r.body);
        assert_eq!(std::fs::read_to_string(vm_dir.join("web01.vmx")).unwrap(), vmx, "{patch} changed the file");
    }
    assert_eq!(dir_entries(&vm_dir), ["web01.img", "web01.vmx"], "nothing half-created");

    let r = h.call(&tok, "PATCH", "/api/vms/web01", Some(json!({"memory_mib": 32, "shares": 2000, "annotation": "web server"})));
    assert_eq!(r.status, 200, "{}", r.body);
    let vmx2 = std::fs::read_to_string(vm_dir.join("web01.vmx")).unwrap();
    assert!(vmx2.contains("memory_mib = \"32\"") && vmx2.contains("shares = \"2000\""), "{vmx2}");
    // A Linux guest's initrd and a disk's image format change through PATCH too.
    let initrd = t.path().join("initrd.cpio");
    std::fs::write(&initrd, b"070701").unwrap();
    let linux = json!({"format": "linux", "modules": [], "initrd": initrd, "disks": [{"file": "web01.img", "format": "raw", "readonly": true}]});
    let r = h.call(&tok, "PATCH", "/api/vms/web01", Some(linux));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["config"]["format"].as_str(), r.body["config"]["initrd"].as_str()), (Some("linux"), initrd.to_str()));
    let vmx3 = std::fs::read_to_string(vm_dir.join("web01.vmx")).unwrap();
    assert!(vmx3.contains("initrd = ") && vmx3.contains("disk0.format = \"raw\"") && vmx3.contains("disk0.readonly"), "{vmx3}");
    let back = json!({"format": vmx_format(&vmx2), "initrd": null, "disks": [{"file": "web01.img"}]});
    assert_eq!(h.call(&tok, "PATCH", "/api/vms/web01", Some(back)).status, 200);

    // Invalid definitions: nothing appears on the datastore.
    let mut bad = Vec::new();
    for (change, field) in [
        (json!({"vcpus": 0}), "vcpus"),
        (json!({"memory_mib": 1}), "memory_mib"),
        (json!({"memory_mib": 65536}), "memory_mib"),
        (json!({"disks": [{"file": "nope.img"}]}), "disks[0].file"),
        (json!({"name": "../evil"}), "name"),
        (json!({"datastore": "nowhere"}), "datastore"),
    ] {
        let mut spec = h.vm_spec("web02");
        for (k, v) in change.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let r = h.call(&tok, "POST", "/api/vms", Some(spec));
        assert_error(&r, 400, Some(field));
        bad.push(r.status);
    }
    let r = h.call(&tok, "POST", "/api/vms", Some(h.vm_spec("web01")));
    assert_error(&r, 409, None);
    assert_eq!(dir_entries(&h.datastore()), ["web01"]);

    // Power needs the VMkernel: on Linux a clear 503, never a crash.
    let r = h.call(&tok, "POST", "/api/vms/web01/power", Some(json!({"action": "on"})));
    assert_error(&r, 503, None);
    assert_error(&h.call(&tok, "POST", "/api/vms/web01/power", Some(json!({"action": "levitate"}))), 400, None);
    assert_error(&h.call(&tok, "POST", "/api/vms/nope/power", Some(json!({"action": "on"}))), 404, None);

    // Unregister keeps the files; register brings the VM back.
    assert_eq!(h.call(&tok, "POST", "/api/vms/web01/unregister", None).status, 204);
    assert_eq!(h.call(&tok, "GET", "/api/vms", None).body.as_array().unwrap().len(), 0);
    assert!(vm_dir.join("web01.vmx").exists());
    let vmx_path = vm_dir.join("web01.vmx").display().to_string();
    let r = h.call(&tok, "POST", "/api/inventory/register", Some(json!({"vmx_path": vmx_path})));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_error(&h.call(&tok, "POST", "/api/inventory/register", Some(json!({"vmx_path": "/etc/passwd"}))), 400, Some("vmx_path"));

    // Destroy deletes the directory.
    assert_eq!(h.call(&tok, "DELETE", "/api/vms/web01", None).status, 204);
    assert!(!vm_dir.exists());
    assert_error(&h.call(&tok, "GET", "/api/vms/web01", None), 404, None);

    // Tasks, events and the audit log name the user.
    let tasks = h.call(&tok, "GET", "/api/tasks", None).body;
    assert!(tasks.as_array().unwrap().iter().any(|t| t["kind"] == "vm.create" && t["state"] == "success" && t["user"] == "root"), "{tasks}");
    let events = h.call(&tok, "GET", "/api/events?limit=1000", None).body;
    for kind in ["vm.created", "vm.reconfigured", "vm.unregistered", "vm.registered", "vm.destroyed"] {
        assert!(events.as_array().unwrap().iter().any(|e| e["kind"] == kind && e["user"] == "root"), "{kind}: {events}");
    }
    let audit = h.call(&tok, "GET", "/api/audit?limit=1000", None).body;
    let audit = audit.as_array().unwrap();
    for action in ["POST /api/vms", "PATCH /api/vms/web01", "DELETE /api/vms/web01", "login"] {
        assert!(audit.iter().any(|a| a["action"] == action && a["user"] == "root"), "{action} not audited");
    }
    assert!(audit.iter().any(|a| a["action"] == "PATCH /api/vms/web01" && a["status"] == 400), "refused changes are audited too");
    let _ = bad;
}

/// (method, path) of every operation in the served OpenAPI document, with
/// path parameters filled in.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in ["get", "post", "put", "patch", "delete"] {
            if item.get(m).is_some() {
                let p = path.replace("{name}", "web01").replace("{id}", "1");
                ops.push((m.to_uppercase(), p));
            }
        }
    }
    ops
}

#[test]
fn openapi_document_matches_the_routes_and_every_endpoint_needs_a_session() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    let doc = h.curl("GET", "/api/openapi.json", &[], None);
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let ops = operations(&doc.body);
    for must in [
        ("POST", "/api/session"),
        ("GET", "/api/host"),
        ("GET", "/api/vms"),
        ("POST", "/api/vms"),
        ("PATCH", "/api/vms/web01"),
        ("DELETE", "/api/vms/web01"),
        ("POST", "/api/vms/web01/power"),
        ("GET", "/api/tasks/1"),
        ("GET", "/api/events"),
        ("GET", "/api/users"),
        ("GET", "/api/roles"),
    ] {
        assert!(ops.contains(&(must.0.into(), must.1.into())), "{must:?} missing from the document");
    }
    // Without a session: 401 everywhere but login. A documented route that
    // did not exist would answer 404/405 here.
    for (m, p) in &ops {
        let r = h.curl(m, p, &["Content-Type: application/json".into()], Some(b"{}"));
        if (m.as_str(), p.as_str()) == ("POST", "/api/session") {
            assert_error(&r, 400, None);
        } else {
            assert_error(&r, 401, None);
        }
    }
    // With a session every documented operation is routed (never 404 for the
    // path itself or 405), and no request is a 5xx.
    let tok = h.login("root", ROOT_PW);
    assert_eq!(h.call(&tok, "POST", "/api/vms", Some(h.vm_spec("web01"))).status, 201);
    for (m, p) in &ops {
        if m == "DELETE" || p == "/api/session" {
            continue;
        }
        let r = h.call(&tok, m, p, Some(json!({})));
        // 503 only for what needs the VMkernel, which the Linux host lacks.
        assert!(r.status != 405 && (r.status < 500 || r.body["code"] == "vmkernel_unavailable"), "{m} {p}: {} {}", r.status, r.body);
        if r.status == 404 {
            assert!(!r.body["message"].as_str().unwrap().contains("no such endpoint"), "{m} {p} is documented but not routed");
        }
        if m == "GET" && !p.contains("web01") && p != "/api/tasks/1" {
            // Every parameterless read works for an Administrator.
            assert_eq!(r.status, 200, "{m} {p}: {}", r.body);
        }
    }
    assert_error(&h.call(&tok, "GET", "/api/nothing-here", None), 404, None);
    assert_error(&h.call(&tok, "PUT", "/api/vms", None), 405, None);
}

#[test]
fn roles_limit_what_users_may_change() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    let root = h.login("root", ROOT_PW);
    for (name, role) in [("op", "Operator"), ("ro", "ReadOnly")] {
        let r = h.call(&root, "POST", "/api/users", Some(json!({"name": name, "password": "user-pass-1", "role": role})));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert_error(&h.call(&root, "POST", "/api/users", Some(json!({"name": "x", "password": "short", "role": "ReadOnly"}))), 400, Some("password"));
    assert_error(&h.call(&root, "POST", "/api/users", Some(json!({"name": "op", "password": "user-pass-1", "role": "ReadOnly"}))), 409, None);
    assert_eq!(h.call(&root, "POST", "/api/vms", Some(h.vm_spec("web01"))).status, 201);
    let ro = h.login("ro", "user-pass-1");
    let op = h.login("op", "user-pass-1");
    let doc = h.curl("GET", "/api/openapi.json", &[], None).body;
    let changes: Vec<(String, String)> = operations(&doc).into_iter().filter(|(m, p)| m != "GET" && p != "/api/session").collect();
    assert!(changes.len() >= 8, "{changes:?}");
    let vmx = std::fs::read_to_string(h.datastore().join("web01/web01.vmx")).unwrap();
    for (m, p) in &changes {
        let body = if p.ends_with("/power") { json!({"action": "on"}) } else { json!({"name": "zz", "password": "user-pass-1", "role": "Administrator"}) };
        let r = h.call(&ro, m, p, Some(body.clone()));
        assert_error(&r, 403, None);
        let r = h.call(&op, m, p, Some(body));
        if p.ends_with("/power") {
            assert_ne!(r.status, 403, "Operator may use power operations: {}", r.body);
        } else {
            assert_error(&r, 403, None);
        }
    }
    // A ReadOnly user's malformed body is still a 403, not a hint about the body.
    let r = h.curl("POST", "/api/vms", &[format!("Authorization: Bearer {ro}"), "Content-Type: application/json".into()], Some(b"{not json"));
    assert_error(&r, 403, None);
    assert_eq!(h.call(&ro, "GET", "/api/vms", None).status, 200);
    assert_eq!(h.call(&op, "GET", "/api/vms/web01", None).status, 200);
    assert_error(&h.call(&op, "GET", "/api/audit", None), 403, None);
    assert_eq!(std::fs::read_to_string(h.datastore().join("web01/web01.vmx")).unwrap(), vmx);
    assert_eq!(dir_entries(&h.datastore()), ["web01"]);
    // The last Administrator stays.
    assert_error(&h.call(&root, "DELETE", "/api/users/root", None), 409, None);
    // A role change ends the user's sessions and takes effect.
    assert_eq!(h.call(&root, "PATCH", "/api/users/ro", Some(json!({"role": "Operator"}))).status, 200);
    assert_error(&h.call(&ro, "GET", "/api/vms", None), 401, None);
}

#[test]
fn lockout_after_five_failed_logins() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &["--lockout-secs", "3"]);
    let root = h.login("root", ROOT_PW);
    assert_eq!(h.call(&root, "POST", "/api/users", Some(json!({"name": "alice", "password": "alice-pass-1", "role": "Operator"}))).status, 201);
    for _ in 0..5 {
        assert_error(&h.login_reply("alice", "guess-guess"), 401, None);
    }
    let r = h.login_reply("alice", "alice-pass-1");
    assert_error(&r, 403, None);
    assert_eq!(r.body["code"], "account_locked");
    // Others are not locked out; the administrator sees the lock.
    let users = h.call(&root, "GET", "/api/users", None).body;
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "alice" && u["locked_secs"].as_u64().is_some()), "{users}");
    let audit = h.call(&root, "GET", "/api/audit?limit=1000", None).body;
    assert_eq!(audit.as_array().unwrap().iter().filter(|a| a["user"] == "alice" && a["action"] == "login" && a["status"] == 401).count(), 5);
    std::thread::sleep(Duration::from_millis(3500));
    h.login("alice", "alice-pass-1");
}

#[test]
fn restart_keeps_inventory_certificate_and_logs() {
    let t = tempfile::tempdir().unwrap();
    let mut h = start_fresh(t.path(), &[]);
    let tok = h.login("root", ROOT_PW);
    assert_eq!(h.call(&tok, "POST", "/api/vms", Some(h.vm_spec("db01"))).status, 201);
    assert_eq!(h.call(&tok, "PATCH", "/api/vms/db01", Some(json!({"vcpus": 2, "memory_mib": 24}))).status, 200);
    let cert = std::fs::read(t.path().join("config/ssl/host.crt")).unwrap();
    // kill -9: no chance to flush anything.
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    drop(h);
    let h = start(t.path(), &[]);
    assert_eq!(std::fs::read(t.path().join("config/ssl/host.crt")).unwrap(), cert, "the certificate is kept");
    assert_error(&h.call(&tok, "GET", "/api/vms", None), 401, None);
    let tok = h.login("root", ROOT_PW);
    let vms = h.call(&tok, "GET", "/api/vms", None).body;
    assert_eq!(vms.as_array().unwrap().len(), 1, "{vms}");
    assert_eq!(vms[0]["config"]["vcpus"], 2);
    assert_eq!(vms[0]["config"]["memory_mib"], 24);
    let events = h.call(&tok, "GET", "/api/events?limit=1000", None).body;
    assert!(events.as_array().unwrap().iter().any(|e| e["kind"] == "vm.reconfigured"), "{events}");
    let audit = h.call(&tok, "GET", "/api/audit?limit=1000", None).body;
    assert!(audit.as_array().unwrap().iter().any(|a| a["action"] == "PATCH /api/vms/db01" && a["user"] == "root"));
}

#[test]
fn bad_input_gets_clear_4xx_never_5xx() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    let tok = h.login("root", ROOT_PW);
    let auth = format!("Authorization: Bearer {tok}");
    let json_ct = "Content-Type: application/json".to_string();
    let send = |m: &str, p: &str, body: &[u8]| h.curl(m, p, &[auth.clone(), json_ct.clone()], Some(body));
    assert_error(&send("POST", "/api/vms", b"{\"name\": \"x\", "), 400, None);
    assert_error(&send("POST", "/api/vms", b"[1,2,3]"), 400, None);
    assert_error(&send("POST", "/api/vms", b""), 400, None);
    let r = send("POST", "/api/vms", br#"{"name": "x", "kernel": "/k", "memory_mib": "lots"}"#);
    assert_error(&r, 400, None);
    assert!(r.body["message"].as_str().unwrap().contains("memory_mib"), "{}", r.body);
    let r = send("POST", "/api/vms", br#"{"name": "x", "kernel": "/k", "colour": "blue"}"#);
    assert!(r.body["message"].as_str().unwrap().contains("colour"), "{}", r.body);
    assert_error(&r, 400, None);
    // No Content-Type.
    assert_error(&h.curl("POST", "/api/vms", std::slice::from_ref(&auth), Some(b"{}")), 400, None);
    // Huge bodies.
    let huge = format!("{{\"name\": \"x\", \"annotation\": \"{}\"}}", "a".repeat(2 << 20));
    assert_error(&send("POST", "/api/vms", huge.as_bytes()), 413, None);
    assert_error(&send("PATCH", "/api/vms/x", huge.as_bytes()), 413, None);
    // Unknown things.
    assert_error(&h.call(&tok, "GET", "/api/vms/nope", None), 404, None);
    assert_error(&h.call(&tok, "DELETE", "/api/vms/nope", None), 404, None);
    assert_error(&h.call(&tok, "GET", "/api/tasks/99999", None), 404, None);
    assert_error(&h.call(&tok, "GET", "/api/tasks/abc", None), 400, None);
    assert_error(&h.call(&tok, "GET", "/api/events?limit=many", None), 400, None);
    assert_error(&h.login_reply(&"a".repeat(10_000), "x"), 401, None);
    // A bounded fuzz run: mutated and random bodies at every change endpoint.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = serde_json::to_vec(&h.vm_spec("fz")).unwrap();
    let targets = ["/api/vms", "/api/vms/fz", "/api/vms/fz/power", "/api/vms/fz/clone", "/api/users", "/api/inventory/register", "/api/session"];
    let start = Instant::now();
    for i in 0..60 {
        let mut body = base.clone();
        match i % 3 {
            0 => {
                for _ in 0..4 {
                    let at = (rnd() as usize) % body.len();
                    body[at] = rnd() as u8;
                }
            }
            1 => body = (0..(rnd() % 200)).map(|_| rnd() as u8).collect(),
            _ => body.truncate((rnd() as usize) % body.len()),
        }
        let p = targets[(rnd() as usize) % targets.len()];
        let m = if p == "/api/vms/fz" { "PATCH" } else { "POST" };
        let r = send(m, p, &body);
        assert!((200..500).contains(&r.status), "{m} {p} {:?}: {} {}", String::from_utf8_lossy(&body), r.status, r.body);
        if start.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    // Still serving.
    assert_eq!(h.call(&tok, "GET", "/api/host", None).status, 200);
}

/// The bounded HTTP fuzz run (`hostd::fuzz`) against hostd with its fake
/// VMkernel: random methods, paths, headers and bodies, JSON mutations of
/// valid requests, huge and truncated bodies, with and without a session.
/// No 5xx, every API error is JSON, and hostd neither dies nor panics.
/// `HOSTD_FUZZ_REQUESTS` and `HOSTD_FUZZ_SEED` run it longer or elsewhere.
#[test]
fn http_fuzz_finds_no_5xx_and_no_crash() {
    let t = tempfile::tempdir().unwrap();
    let mut h = start_fresh(t.path(), &["--fake-vmkernel", "--max-upload-mib", "1"]);
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let o = hostd::fuzz::FuzzOptions {
        addr: format!("127.0.0.1:{}", h.https),
        server_name: "localhost".into(),
        cert_pem: std::fs::read(t.path().join("config/ssl/host.crt")).unwrap(),
        user: "root".into(),
        password: ROOT_PW.into(),
        requests: env("HOSTD_FUZZ_REQUESTS", 1500) as usize,
        seed: env("HOSTD_FUZZ_SEED", 20261207),
        kernel: h.kernel(),
        datastore: "datastore1".into(),
        timeout: Duration::from_secs(20),
    };
    let started = Instant::now();
    let report = hostd::fuzz::run(&o).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("fuzz: {} in {:.1} s", report.summary(), started.elapsed().as_secs_f64());
    assert!(report.failures.is_empty(), "{}:\n{}", report.summary(), report.failures.join("\n"));
    assert!(h.child.try_wait().unwrap().is_none(), "hostd exited");
    let log = h.log.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "hostd panicked:\n{log}");
    // Enough of the requests got past authentication and parsing to reach the handlers.
    let handled: usize = report.statuses.iter().filter(|(s, _)| matches!(**s, 200..=299 | 404 | 409)).map(|(_, n)| n).sum();
    assert!(handled * 5 >= report.sent, "too few requests reached the handlers: {}", report.summary());
}

#[test]
fn http_redirects_and_cookie_sessions_need_csrf() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"])
        .arg(format!("http://127.0.0.1:{}/api/vms?x=1", h.http))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("301 https://127.0.0.1:{}/api/vms?x=1", h.https));
    // The HTTPS port speaks no plain HTTP.
    let out = Command::new("curl").args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"]).arg(format!("http://127.0.0.1:{}/api/vms", h.https)).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");

    let r = h.login_reply("root", ROOT_PW);
    let cookie_line = r.headers.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a session cookie").to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie_line.contains(attr), "{cookie_line}");
    }
    let cookie = cookie_line.split_once(':').unwrap().1.split(';').next().unwrap().trim().to_string();
    let csrf = r.body["csrf_token"].as_str().unwrap().to_string();
    let ck = format!("Cookie: {cookie}");
    assert_eq!(h.curl("GET", "/api/vms", std::slice::from_ref(&ck), None).status, 200);
    let spec = serde_json::to_vec(&h.vm_spec("c1")).unwrap();
    let ct = "Content-Type: application/json".to_string();
    let r = h.curl("POST", "/api/vms", &[ck.clone(), ct.clone()], Some(&spec));
    assert_error(&r, 403, None);
    assert_eq!(r.body["code"], "csrf_failed");
    let r = h.curl("POST", "/api/vms", &[ck.clone(), ct.clone(), "X-CSRF-Token: 0000".into()], Some(&spec));
    assert_error(&r, 403, None);
    assert!(!h.datastore().join("c1").exists());
    let r = h.curl("POST", "/api/vms", &[ck.clone(), ct.clone(), format!("X-CSRF-Token: {csrf}")], Some(&spec));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(h.curl("DELETE", "/api/session", &[ck.clone(), format!("X-CSRF-Token: {csrf}")], None).status, 204);
    assert_error(&h.curl("GET", "/api/vms", &[ck], None), 401, None);
}

#[test]
fn sessions_expire_when_idle() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &["--session-idle-secs", "2"]);
    let tok = h.login("root", ROOT_PW);
    assert_eq!(h.call(&tok, "GET", "/api/session", None).status, 200);
    std::thread::sleep(Duration::from_millis(3000));
    assert_error(&h.call(&tok, "GET", "/api/session", None), 401, None);
}

#[test]
fn no_password_works_until_root_sets_one() {
    let t = tempfile::tempdir().unwrap();
    // A password on the kernel command line is visible to every process in
    // /proc/cmdline: hostd ignores it (and says so).
    let cmdline = t.path().join("cmdline");
    std::fs::create_dir_all(t.path()).unwrap();
    std::fs::write(&cmdline, "loglevel=info hostd.root_password=Cmdline-pw-1\n").unwrap();
    let h = start(t.path(), &["--kernel-cmdline", cmdline.to_str().unwrap()]);
    // Four tries: a fifth failure in a row would lock the name.
    for pw in ["", "root", "vmware", "Cmdline-pw-1"] {
        assert_error(&h.login_reply("root", pw), 401, None);
    }
    // The console way, while hostd runs: `hostd passwd root` reads the
    // password from stdin (a pipe here; a terminal gets asked twice, unechoed).
    let passwd = |pw: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hostd"))
            .arg("--config-dir")
            .arg(t.path().join("config"))
            .args(["passwd", "root"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(format!("{pw}\n").as_bytes()).unwrap();
        c.wait().unwrap().success()
    };
    assert!(!passwd("short"), "a short password is refused");
    assert!(passwd("console-set-pw"));
    // The running hostd uses it at once: no restart.
    let r = h.login_reply("root", "console-set-pw");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["role"], "Administrator");
    let token = r.body["token"].as_str().unwrap().to_string();
    let host = h.call(&token, "GET", "/api/host", None);
    assert_eq!(host.body["config_store"]["persistent"], true, "{}", host.body);
    assert_eq!(host.body["config_store"]["path"], t.path().join("config").display().to_string());
    // A new password at the console ends the old password's sessions.
    assert!(passwd("console-set-pw2"));
    assert_error(&h.login_reply("root", "console-set-pw"), 401, None);
    assert_error(&h.call(&token, "GET", "/api/host", None), 401, None);
    assert_eq!(h.login_reply("root", "console-set-pw2").status, 200);
}

/// The web client in Debian's headless Chromium (playwright-core, no browser
/// download): built with npm at test time, served by hostd, driven by
/// `ui/test/browser.mjs`. The Linux host has no VMkernel, so hostd runs with
/// its in-memory fake (`--fake-vmkernel`): power, console, statistics and
/// clones go through the same API paths as on Mantle. Screenshots go to
/// `<target>/tmp/hostd-ui-screenshots/`.
#[test]
fn web_client_in_headless_chromium() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let npm = |args: &[&str]| {
        let out = Command::new("npm").args(args).current_dir(&ui).output().expect("npm (Node.js 20) is needed to build the web client");
        assert!(out.status.success(), "npm {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    // Install when nothing is installed or the lock file changed since (a
    // merge that adds a package).
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let installed = mtime(&ui.join("node_modules/.package-lock.json"));
    if installed.is_none() || mtime(&ui.join("package-lock.json")) > installed {
        npm(&["ci", "--no-audit", "--no-fund"]);
    }
    let t = tempfile::tempdir().unwrap();
    let dist = t.path().join("ui-dist");
    npm(&["run", "build", "--", "--outDir", dist.to_str().unwrap(), "--emptyOutDir"]);
    assert!(dist.join("index.html").is_file());
    let h = start_fresh(&t.path().join("host"), &["--ui-dir", dist.to_str().unwrap(), "--fake-vmkernel", "--sample-secs", "1"]);
    // The page is served without a session; the API behind it is not.
    let page = Command::new("curl").args(["-sS", "--max-time", "10", "--cacert"]).arg(h.dir.join("config/ssl/host.crt")).arg(h.url("/")).output().unwrap();
    assert!(String::from_utf8_lossy(&page.stdout).contains("<div id=\"app\">"));
    assert_error(&h.curl("GET", "/api/vms", &[], None), 401, None);
    assert_error(&h.curl("GET", "/../config/users.json", &[], None), 404, None);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hostd-ui-screenshots");
    let out = Command::new("node")
        .arg("test/browser.mjs")
        .arg(h.url("/"))
        .args(["root", ROOT_PW, &h.kernel()])
        .arg(&shots)
        .current_dir(&ui)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success() && text.contains("browser: 15 passed, 0 failed"), "{text}");
    for shot in ["host.png", "console.png", "charts.png", "datastore.png", "vms.png"] {
        assert!(shots.join(shot).is_file(), "{shot}");
    }
    // What the browser did is on the server.
    assert!(h.datastore().join("ui01/ui01.vmx").is_file());
    assert_eq!(std::fs::metadata(h.datastore().join("ui01/ui01.img")).unwrap().len(), 4 << 20);
    assert!(!h.datastore().join("ui02").exists());
    assert_eq!(std::fs::read(h.datastore().join("notes.txt")).unwrap(), b"hello datastore\n");
    let users = h.call(&h.login("root", ROOT_PW), "GET", "/api/users", None).body;
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "viewer" && u["role"] == "ReadOnly"), "{users}");
    assert!(h.datastore().join("ui01-copy/ui01-copy.vmx").is_file() && h.datastore().join("ui01-copy/ui01-copy.img").is_file());
    let tok = h.login("root", ROOT_PW);
    let audit = h.call(&tok, "GET", "/api/audit?limit=1000", None).body;
    assert!(audit.as_array().unwrap().iter().any(|a| a["action"] == "console ui01" && a["user"] == "root" && a["status"] == 101), "{audit}");
}

impl Hostd {
    /// A request whose answer is not JSON (downloads, uploads of raw bytes,
    /// WebSocket handshakes): status, headers and body bytes. curl may end
    /// by its time limit (a WebSocket stays open).
    fn raw(&self, method: &str, path: &str, headers: &[String], body: Option<&Path>, max_secs: u32) -> (u16, String, Vec<u8>) {
        let hdr_file = tempfile::NamedTempFile::new().unwrap();
        let out_file = tempfile::NamedTempFile::new().unwrap();
        let mut c = Command::new("curl");
        c.args(["-sS", "--http1.1", "-N", "--max-time", &max_secs.to_string(), "--cacert"])
            .arg(self.dir.join("config/ssl/host.crt"))
            .args(["-X", method, "-o"])
            .arg(out_file.path())
            .arg("-D")
            .arg(hdr_file.path());
        for h in headers {
            c.args(["-H", h]);
        }
        if let Some(b) = body {
            c.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        c.arg(self.url(path));
        let out = c.output().expect("run curl");
        let headers = std::fs::read_to_string(hdr_file.path()).unwrap_or_default();
        // The final status line (after any `100 Continue`).
        let status = headers.lines().rev().find(|l| l.starts_with("HTTP/")).and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(status != 0, "curl {method} {path}: no answer: {}", String::from_utf8_lossy(&out.stderr));
        (status, headers, std::fs::read(out_file.path()).unwrap())
    }
}

fn bearer(tok: &str) -> String {
    format!("Authorization: Bearer {tok}")
}

fn error_code(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    (v["code"].as_str().unwrap_or("").into(), v["field"].as_str().unwrap_or("").into())
}

/// The datastore browser with curl: streamed uploads larger than any JSON
/// body, replace only when asked, atomic (no partial or temporary file
/// left by a refused one), size-limited (413), path-safe, role-checked;
/// downloads return the same bytes.
#[test]
fn datastore_upload_download_over_tls() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &["--max-upload-mib", "1"]);
    let root = h.login("root", ROOT_PW);
    for (u, role) in [("oper", "Operator"), ("reader", "ReadOnly")] {
        assert_eq!(h.call(&root, "POST", "/api/users", Some(json!({"name": u, "password": "user-pass-12", "role": role}))).status, 201);
    }
    let (op, ro) = (h.login("oper", "user-pass-12"), h.login("reader", "user-pass-12"));
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = t.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let octet = "Content-Type: application/octet-stream".to_string();
    let put = |tok: &str, path: &str, f: &Path| h.raw("PUT", &format!("/api/datastores/datastore1/file?path={path}"), &[bearer(tok), octet.clone()], Some(f), 30);

    let (st, _, body) = put(&root, "isos/a.bin", &file);
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["name"].as_str(), v["size_bytes"].as_u64()), (Some("a.bin"), Some(300_000)));
    assert_eq!(std::fs::read(h.datastore().join("isos/a.bin")).unwrap(), data);
    assert_eq!(put(&root, "isos/a.bin", &file).0, 409, "no silent replace");
    std::fs::write(&file, b"second version").unwrap();
    assert_eq!(put(&root, "isos/a.bin&overwrite=true", &file).0, 201);
    assert_eq!(std::fs::read(h.datastore().join("isos/a.bin")).unwrap(), b"second version");

    // Too large: 413, and nothing (not even a temporary file) is left.
    let big = t.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 2 << 20]).unwrap();
    let (st, _, body) = put(&root, "isos/big.bin", &big);
    assert_eq!((st, error_code(&body).0.as_str()), (413, "too_large"));
    assert_eq!(dir_entries(&h.datastore().join("isos")), ["a.bin"]);
    // Without a declared size the stream is cut off at the limit.
    let chunked = h.raw("PUT", "/api/datastores/datastore1/file?path=isos/chunked.bin", &[bearer(&root), octet.clone(), "Transfer-Encoding: chunked".into()], Some(&big), 30);
    assert_eq!((chunked.0, error_code(&chunked.2).0.as_str()), (413, "too_large"));
    assert_eq!(dir_entries(&h.datastore().join("isos")), ["a.bin"]);

    // Paths stay inside the datastore; .vmx files are hostd's.
    for bad in ["../../config/users.json", "isos/../../x", ".hidden", "vm/vm.vmx", "a%5Cb"] {
        let (st, _, body) = put(&root, bad, &file);
        assert_eq!((st, error_code(&body).1.as_str()), (400, "path"), "{bad}");
        if !bad.ends_with(".vmx") {
            // Reading a .vmx is fine (a backup); reaching outside is not.
            let (st, _, body) = h.raw("GET", &format!("/api/datastores/datastore1/file?path={bad}"), &[bearer(&root)], None, 10);
            assert_eq!(st, 400, "{bad}: {}", String::from_utf8_lossy(&body));
        }
    }
    assert_eq!(h.raw("GET", "/api/datastores/nowhere/browse", &[bearer(&root)], None, 10).0, 404);

    // Roles: reads for everyone with a session, changes for Administrators.
    assert_eq!(put(&op, "isos/op.bin", &file).0, 403);
    assert_eq!(put(&ro, "isos/ro.bin", &file).0, 403);
    assert_eq!(h.raw("DELETE", "/api/datastores/datastore1/file?path=isos/a.bin", &[bearer(&ro)], None, 10).0, 403);
    assert_eq!(h.raw("GET", "/api/datastores/datastore1/file?path=isos/a.bin", &[], None, 10).0, 401);
    let (st, headers, body) = h.raw("GET", "/api/datastores/datastore1/file?path=isos/a.bin", &[bearer(&ro)], None, 10);
    assert_eq!((st, body.as_slice()), (200, b"second version".as_slice()));
    assert!(headers.to_ascii_lowercase().contains("content-disposition: attachment; filename=\"a.bin\""), "{headers}");
    let l = h.call(&ro, "GET", "/api/datastores/datastore1/browse?path=isos", None);
    assert_eq!(l.status, 200);
    assert_eq!(l.body["entries"], json!([{"name": "a.bin", "kind": "file", "size_bytes": 14, "modified": l.body["entries"][0]["modified"]}]));

    assert_eq!(h.raw("DELETE", "/api/datastores/datastore1/file?path=isos/a.bin", &[bearer(&root)], None, 10).0, 204);
    assert!(!h.datastore().join("isos/a.bin").exists());
    let tasks = h.call(&root, "GET", "/api/tasks", None).body;
    assert!(tasks.as_array().unwrap().iter().any(|t| t["kind"] == "datastore.upload" && t["state"] == "success" && t["progress"] == 100), "{tasks}");
    assert!(!tasks.as_array().unwrap().iter().any(|t| t["target"] == "datastore1/isos/big.bin"), "refused by its declared size before it started");
    assert!(
        tasks.as_array().unwrap().iter().any(|t| t["target"] == "datastore1/isos/chunked.bin" && t["state"] == "error"),
        "a chunked upload is cut off at the limit: {tasks}"
    );
}

const WS_HANDSHAKE: [&str; 4] = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="];

/// The console WebSocket's handshake with curl: a session, the Operator
/// role and this host's origin are required; on the fake VMkernel a
/// powered-on VM's console answers 101 and streams the guest's output.
/// Also guest shutdown (501 without the kernel call) and clones through
/// the API.
#[test]
fn console_websocket_shutdown_and_clone_over_tls() {
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &["--fake-vmkernel"]);
    let root = h.login("root", ROOT_PW);
    assert_eq!(h.call(&root, "POST", "/api/users", Some(json!({"name": "reader", "password": "user-pass-12", "role": "ReadOnly"}))).status, 201);
    let ro = h.login("reader", "user-pass-12");
    assert_eq!(h.call(&root, "POST", "/api/vms", Some(h.vm_spec("ws01"))).status, 201);
    let ws = |tok: Option<&str>, vm: &str, extra: &[&str]| {
        let mut hs: Vec<String> = WS_HANDSHAKE.iter().map(|s| s.to_string()).collect();
        hs.extend(tok.map(bearer));
        hs.extend(extra.iter().map(|s| s.to_string()));
        h.raw("GET", &format!("/api/vms/{vm}/console"), &hs, None, 3)
    };
    assert_eq!(ws(None, "ws01", &[]).0, 401);
    assert_eq!(ws(Some(&ro), "ws01", &[]).0, 403, "ReadOnly may not type into a console");
    assert_eq!(ws(Some(&root), "nope", &[]).0, 404);
    let (st, _, body) = ws(Some(&root), "ws01", &[]);
    assert_eq!((st, error_code(&body).0.as_str()), (409, "conflict"), "powered off: no console");

    let task = h.call(&root, "POST", "/api/vms/ws01/power", Some(json!({"action": "on"})));
    assert_eq!(task.status, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.call(&root, "GET", "/api/vms/ws01", None).body["power_state"] != "poweredOn" {
        assert!(Instant::now() < deadline, "not powered on");
        std::thread::sleep(Duration::from_millis(50));
    }
    let other = format!("Origin: https://evil.example:{}", h.https);
    assert_eq!(ws(Some(&root), "ws01", &[&other]).0, 403, "another site's page may not open a console");
    assert_eq!(h.raw("GET", "/api/vms/ws01/console", &[bearer(&root)], None, 3).0, 400, "not a WebSocket handshake");
    let own = format!("Origin: https://127.0.0.1:{}", h.https);
    let (st, headers, body) = ws(Some(&root), "ws01", &[&own]);
    assert_eq!(st, 101, "{headers}");
    assert!(headers.to_ascii_lowercase().contains("upgrade: websocket"), "{headers}");
    // The first server frame: unmasked binary (0x82) carrying the backlog.
    assert_eq!(body.first(), Some(&0x82), "{body:?}");
    assert!(String::from_utf8_lossy(&body).contains("fake guest ws01: booted"), "{}", String::from_utf8_lossy(&body));

    // A logout ends an open console: a close frame (0x88) with 1008.
    let tok2 = h.login("root", ROOT_PW);
    let reader = std::thread::scope(|sc| {
        let r = sc.spawn(|| ws(Some(&tok2), "ws01", &[&own]));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(h.call(&tok2, "DELETE", "/api/session", None).status, 204);
        r.join().unwrap()
    });
    assert_eq!(reader.0, 101);
    let close_at = reader.2.windows(2).position(|w| w == [0x88, 0x13]).expect("a close frame");
    assert_eq!(&reader.2[close_at + 2..close_at + 4], &1008u16.to_be_bytes());
    assert!(String::from_utf8_lossy(&reader.2).contains("the session ended"));

    // Guest shutdown: this VMkernel has no ACPI power-button call yet.
    let r = h.call(&root, "POST", "/api/vms/ws01/power", Some(json!({"action": "shutdown"})));
    assert_error(&r, 501, None);
    assert_eq!(r.body["code"], "not_supported");

    // Clones: refused while powered on, then a full copy.
    assert_error(&h.call(&root, "POST", "/api/vms/ws01/clone", Some(json!({"name": "ws02"}))), 409, None);
    assert_eq!(h.call(&root, "POST", "/api/vms/ws01/power", Some(json!({"action": "off"}))).status, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = h.call(&root, "POST", "/api/vms/ws01/clone", Some(json!({"name": "ws02"})));
        if r.status == 202 {
            break;
        }
        assert!(Instant::now() < deadline && r.status == 409, "{}", r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.call(&root, "GET", "/api/vms/ws02", None).status != 200 {
        assert!(Instant::now() < deadline, "the clone did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::metadata(h.datastore().join("ws02/ws02.img")).unwrap().len(), 4 << 20);
    assert_error(&h.call(&ro, "POST", "/api/vms/ws01/clone", Some(json!({"name": "ws03"}))), 403, None);
    assert_error(&h.call(&root, "POST", "/api/vms/ws01/clone", Some(json!({"name": "ws03", "linked": true}))), 409, None);
    assert!(!h.datastore().join("ws03").exists());
}

/// Reads one HTTP/1.1 answer with a Content-Length body: (status, head).
fn read_http_answer(s: &mut impl std::io::Read) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("read the answer's head"), 1, "the connection ended in the answer's head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())).expect("a Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read the answer's body");
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), head)
}

/// A request refused before its handler reads the body (here: no session)
/// is answered only once its whole body has arrived, and the connection
/// stays usable — answering early and closing with unread data resets the
/// connection, and a client can lose the answer.
#[test]
fn refused_requests_are_answered_after_their_body_and_keep_the_connection() {
    use std::io::Read;
    let t = tempfile::tempdir().unwrap();
    let h = start_fresh(t.path(), &[]);
    let tls = hostd::fuzz::tls_config(&std::fs::read(t.path().join("config/ssl/host.crt")).unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", h.https)).unwrap();
    let conn = rustls::ClientConnection::new(tls, "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let body = vec![b'x'; 64 * 1024];
    let head = format!("POST /api/vms HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    s.flush().unwrap();
    s.sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("hostd answered before the body arrived: {other:?} {:?}", String::from_utf8_lossy(&b)),
    }
    s.sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&body[body.len() / 2..]).unwrap();
    s.flush().unwrap();
    let (status, head) = read_http_answer(&mut s);
    assert_eq!(status, 401, "{head}");
    assert!(!head.to_ascii_lowercase().contains("connection: close"), "{head}");
    // The same connection serves the next request.
    s.write_all(b"GET /api/vms HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s.flush().unwrap();
    let (status, head) = read_http_answer(&mut s);
    assert_eq!(status, 401, "{head}");
}
