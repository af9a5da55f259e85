//! Acceptance on the host: the real broker binary over the real hostd (its REST API,
//! accounts, roles, inventory on a datastore directory and HTTPS server), driven by the
//! real WBEM clients (pywbem, pywbemcli, wbemcli). Every change made over CIM is
//! checked through hostd's REST API, and changes made through hostd are checked over
//! CIM. The only stand-in is the lowest layer, the VMkernel (Linux has none): hostd
//! runs in this process over a fake `VmKernel` that records the calls it gets.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostd::auth::{Accounts, Role, UserRecord};
use hostd::host::{Hostd, Settings};
use hostd::vmkernel::{KernelState, KernelVm, KernelVmStats, Resources, VmKernel};
use serde_json::{Value, json};

const ROOT_PW: &str = "Root-secret-1";
const OP_PW: &str = "Op-secret-12";
const RO_PW: &str = "Ro-secret-12";

/// The VMkernel's VM calls, in memory (the kernel's own config parser checks the text).
#[derive(Default)]
struct FakeKernel {
    vms: Mutex<Vec<KernelVm>>,
    calls: Mutex<Vec<String>>,
}

impl FakeKernel {
    fn set(&self, id: u32, state: KernelState, call: &str) -> io::Result<()> {
        self.calls.lock().unwrap().push(format!("{call} {id}"));
        let mut vms = self.vms.lock().unwrap();
        let vm = vms.iter_mut().find(|v| v.id == id).ok_or_else(|| io::Error::from_raw_os_error(2))?;
        vm.state = state;
        Ok(())
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl VmKernel for FakeKernel {
    fn version(&self) -> io::Result<u32> {
        Ok(1)
    }
    // The broker has no console and no graceful shutdown; the calls say so.
    fn console_read(&self, _: u32, _: u64) -> io::Result<(Vec<u8>, u64)> {
        Err(io::Error::from_raw_os_error(38))
    }
    fn console_write(&self, _: u32, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(38))
    }
    fn shutdown(&self, _: u32) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(38))
    }
    fn list(&self) -> io::Result<Vec<KernelVm>> {
        Ok(self.vms.lock().unwrap().clone())
    }
    fn create(&self, text: &str) -> io::Result<u32> {
        let c = mantle_abi::VmConfig::parse(text).map_err(|_| io::Error::from_raw_os_error(22))?;
        let mut vms = self.vms.lock().unwrap();
        let id = vms.iter().map(|v| v.id).max().unwrap_or(0) + 1;
        vms.push(KernelVm {
            id,
            name: c.name.clone(),
            state: KernelState::Off,
            exit_reason: None,
            exit_code: 0,
            exits: 0,
            run_ns: 0,
            memory_mib: u64::from(c.memory_mib),
            vcpus: c.vcpus,
            group: 100 + id,
        });
        self.calls.lock().unwrap().push(format!("create {}", c.name));
        Ok(id)
    }
    fn start(&self, id: u32) -> io::Result<()> {
        self.set(id, KernelState::Running, "start")
    }
    fn stop(&self, id: u32) -> io::Result<()> {
        self.set(id, KernelState::Stopped, "stop")
    }
    fn reset(&self, id: u32) -> io::Result<()> {
        self.set(id, KernelState::Running, "reset")
    }
    fn pause(&self, id: u32) -> io::Result<()> {
        self.set(id, KernelState::Paused, "pause")
    }
    fn resume(&self, id: u32) -> io::Result<()> {
        self.set(id, KernelState::Running, "resume")
    }
    fn destroy(&self, id: u32) -> io::Result<()> {
        self.calls.lock().unwrap().push(format!("destroy {id}"));
        self.vms.lock().unwrap().retain(|v| v.id != id);
        Ok(())
    }
    fn set_resources(&self, _group: u32, _r: Resources) -> io::Result<()> {
        Ok(())
    }
    fn stats(&self, _id: u32, vcpus: u32) -> io::Result<KernelVmStats> {
        Ok(KernelVmStats { vcpu_run_ns: vec![0; vcpus as usize], ..KernelVmStats::default() })
    }
}

struct HostdServer {
    port: u16,
    kernel: Arc<FakeKernel>,
    config_dir: PathBuf,
    kernel_file: PathBuf,
}

/// Starts hostd (accounts root/op/ro, one datastore) on a loopback port.
fn start_hostd(dir: &Path) -> HostdServer {
    let config_dir = dir.join("hostd");
    std::fs::create_dir_all(dir.join("volumes/datastore1")).unwrap();
    std::fs::create_dir_all(&config_dir).unwrap();
    let kernel_file = dir.join("guest.bin");
    std::fs::write(&kernel_file, b"\x02\xb0\xad\x1b a test guest").unwrap();
    let mut accounts = Accounts::load(&config_dir.join("users.json")).unwrap();
    for (name, role, pw) in [("root", Role::Administrator, ROOT_PW), ("op", Role::Operator, OP_PW), ("ro", Role::ReadOnly, RO_PW)] {
        let hash = hostd::auth::hash_password(pw).unwrap();
        accounts.put(UserRecord { name: name.into(), role, password_hash: hash }).unwrap();
    }
    hostd::server::ensure_certificate(&config_dir, "mantle-test").unwrap();
    let tls = hostd::server::tls_config(&config_dir).unwrap();
    let settings = Settings {
        config_dir: config_dir.clone(),
        volumes_dir: dir.join("volumes"),
        port_groups: vec!["VM Network".into()],
        session_idle: Duration::from_secs(600),
        lockout_after: 5,
        lockout_for: Duration::from_secs(60),
        ui_dir: None,
        sample_period: hostd::host::SAMPLE_PERIOD,
        max_upload_bytes: 1 << 20,
    };
    let kernel = Arc::new(FakeKernel::default());
    let h = Hostd::open(settings, kernel.clone()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap().port()).unwrap();
            hostd::server::serve_https(l, tls, hostd::api::app(h)).await;
        });
    });
    let port = rx.recv_timeout(Duration::from_secs(30)).expect("hostd did not start");
    HostdServer { port, kernel, config_dir, kernel_file }
}

impl HostdServer {
    fn cert(&self) -> PathBuf {
        hostd::server::cert_paths(&self.config_dir).0
    }
}

/// hostd's REST API as a test client sees it (trusting only hostd's certificate).
struct Rest {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Rest {
    fn login(h: &HostdServer, user: &str, pw: &str) -> Rest {
        let pem = std::fs::read(h.cert()).unwrap();
        let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
            .unversioned_rustls_crypto_provider(provider)
            .build();
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).proxy(None).build(),
        );
        let base = format!("https://localhost:{}", h.port);
        let mut r = agent
            .post(format!("{base}/api/session"))
            .content_type("application/json")
            .send(json!({"username": user, "password": pw}).to_string())
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        Rest { agent, base, token: v["token"].as_str().unwrap().to_string() }
    }

    fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let r = match method {
            "GET" => self.agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => self.agent.delete(&url).header("Authorization", &auth).call(),
            "POST" => self.agent.post(&url).header("Authorization", &auth).content_type("application/json").send(body.unwrap_or(json!({})).to_string()),
            "PATCH" => self.agent.patch(&url).header("Authorization", &auth).content_type("application/json").send(body.unwrap_or(json!({})).to_string()),
            m => panic!("{m}"),
        };
        let mut r = r.unwrap();
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn vm(&self, name: &str) -> Option<Value> {
        match self.send("GET", &format!("/api/vms/{name}"), None) {
            (200, v) => Some(v),
            (404, _) => None,
            other => panic!("GET /api/vms/{name}: {other:?}"),
        }
    }

    /// Waits until hostd's task for the last power operation on `name` is done.
    fn wait_idle(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.vm(name).is_some_and(|v| !v["busy_task"].is_null()) {
            assert!(Instant::now() < deadline, "{name} stayed busy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Broker {
    child: Child,
    https: u16,
    http: u16,
    cert: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the broker binary with a settings file naming hostd, and hostd's certificate
/// and key as its own (as on Mantle).
fn start_broker(dir: &Path, h: &HostdServer) -> Broker {
    let (cert, key) = hostd::server::cert_paths(&h.config_dir);
    let conf = dir.join("cim-broker.conf");
    std::fs::write(
        &conf,
        format!(
            "# as /etc/mantle/cim-broker.conf, with test ports\nbackend = hostd\nhostd-url = https://localhost:{}\nhostd-cert = {}\n\
             tls-cert = {}\ntls-key = {}\nwait-for-cert = true\nlisten = 127.0.0.1\nhttps-port = 0\nhttp-port = 0\nhostname = mantle-test\n",
            h.port,
            cert.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cim-broker"))
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start cim-broker");
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut http, mut https) = (0, 0);
    while http == 0 || https == 0 {
        let line = lines.next().expect("broker exited").unwrap();
        let port = |l: &str| l.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        if line.contains("listening https://") {
            https = port(&line);
        } else if line.contains("listening http://") {
            http = port(&line);
        }
    }
    Broker { child, https, http, cert }
}

fn test_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cim-hostd-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn venv_bin(name: &str) -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = ws.join("target/wbem-venv/bin").join(name);
    assert!(p.exists(), "{} not found: run `bash .ci/run` or `python3 -m venv target/wbem-venv && target/wbem-venv/bin/pip install pywbem pywbemtools`", p.display());
    p
}

fn client_env(cmd: &mut Command, b: &Broker) {
    cmd.env("REQUESTS_CA_BUNDLE", &b.cert)
        .env("CURL_CA_BUNDLE", &b.cert)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .env_remove("PYWBEMCLI_SERVER")
        .env_remove("PYWBEMCLI_DEFAULT_NAMESPACE");
}

/// One step of tests/data/hostd_flow.py (pywbem) as `user`.
fn flow(b: &Broker, user: &str, pw: &str, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostd_flow.py");
    let mut cmd = Command::new(venv_bin("python3"));
    cmd.arg(script).arg(format!("https://localhost:{}", b.https)).arg(&b.cert).args([user, pw]).args(args);
    client_env(&mut cmd, b);
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "hostd_flow.py {args:?}: {text}");
    text
}

fn pywbemcli(b: &Broker, user: &str, pw: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(venv_bin("pywbemcli"));
    cmd.args(["-s", &format!("https://localhost:{}", b.https), "-u", user, "-p", pw]).args(args);
    client_env(&mut cmd, b);
    let out = cmd.output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn wbemcli(args: &[&str]) -> String {
    let out = Command::new("wbemcli")
        .args(args)
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .output()
        .expect("wbemcli (Debian sblim-wbemcli) is needed");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Repeats `f` until it returns true (the broker reuses hostd's answers for up to a
/// second), failing with the last output after 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = f();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pywbem_lifecycle_through_hostd() {
    let dir = test_dir("pywbem");
    let h = start_hostd(&dir);
    let b = start_broker(&dir, &h);
    let rest = Rest::login(&h, "root", ROOT_PW);
    let kernel = h.kernel_file.to_str().unwrap();

    // DefineSystem with an embedded VSSD and RASDs: the VM is in hostd's inventory,
    // with its directory, .vmx and disk on the datastore.
    let out = flow(&b, "root", ROOT_PW, &["define", "cim01", kernel]);
    assert!(out.contains("rc 0") && out.contains("system cim01"), "{out}");
    let vm = rest.vm("cim01").expect("cim01 in hostd");
    let cfg = &vm["config"];
    assert_eq!((cfg["vcpus"].as_u64(), cfg["memory_mib"].as_u64(), cfg["kernel"].as_str()), (Some(2), Some(32), Some(kernel)), "{vm}");
    assert_eq!(cfg["annotation"], "defined over CIM", "{vm}");
    assert_eq!(cfg["nics"][0]["network"], "VM Network", "{vm}");
    assert_eq!(cfg["disks"][0]["file"], "cim01-disk0.img", "{vm}");
    let disk = dir.join("volumes/datastore1/cim01/cim01-disk0.img");
    assert_eq!(std::fs::metadata(&disk).map(|m| m.len()).ok(), Some(8 << 20), "{}", disk.display());
    assert_eq!(vm["power_state"], "poweredOff");
    let out = flow(&b, "root", ROOT_PW, &["settings", "cim01"]);
    assert!(out.contains(&format!("vssd cim01 {kernel} defined over CIM")), "{out}");
    assert!(out.contains("rasd 3 2") && out.contains("rasd 4 32") && out.contains("rasd 10 1  VM Network"), "{out}");
    assert!(out.contains("rasd 31 0 /") && out.contains("/volumes/datastore1/cim01/cim01-disk0.img"), "{out}");

    // Power: each RequestStateChange is a hostd task, shown as a CIM_ConcreteJob that
    // completes; hostd and the VMkernel see the operation.
    let out = flow(&b, "op", OP_PW, &["state", "cim01", "2"]);
    assert!(out.contains("rc 4096") && out.contains("job 7 100") && out.contains("job-class Mantle_ConcreteJob"), "{out}");
    rest.wait_idle("cim01");
    assert_eq!(rest.vm("cim01").unwrap()["power_state"], "poweredOn");
    eventually("EnabledState 2", || {
        let out = flow(&b, "ro", RO_PW, &["enabled", "cim01"]);
        (out.contains("enabled 2"), out)
    });
    for (state, hostd_state, enabled) in [("9", "paused", "9"), ("2", "poweredOn", "2"), ("11", "poweredOn", "2"), ("3", "poweredOff", "3")] {
        let out = flow(&b, "op", OP_PW, &["state", "cim01", state]);
        assert!(out.contains("rc 4096") && out.contains("job 7 100"), "{state}: {out}");
        rest.wait_idle("cim01");
        assert_eq!(rest.vm("cim01").unwrap()["power_state"], hostd_state, "after {state}");
        eventually(&format!("EnabledState {enabled} after {state}"), || {
            let out = flow(&b, "ro", RO_PW, &["enabled", "cim01"]);
            (out.contains(&format!("enabled {enabled}")), out)
        });
    }
    let calls = h.kernel.calls();
    for want in ["start", "pause", "resume", "reset", "stop"] {
        assert!(calls.iter().any(|c| c.starts_with(want)), "{want}: {calls:?}");
    }
    // hostd ran the power operations as the CIM user.
    let (_, tasks) = rest.send("GET", "/api/tasks", None);
    assert!(tasks.as_array().unwrap().iter().any(|t| t["kind"] == "vm.powerOn" && t["user"] == "op"), "{tasks}");

    // ModifyResourceSettings (memory), ModifySystemSettings (notes), RemoveResourceSettings.
    let out = flow(&b, "root", ROOT_PW, &["memory", "cim01", "48"]);
    assert!(out.contains("rc 0"), "{out}");
    assert_eq!(rest.vm("cim01").unwrap()["config"]["memory_mib"], 48);
    let out = flow(&b, "root", ROOT_PW, &["notes", "cim01", "changed over CIM"]);
    assert!(out.contains("rc 0"), "{out}");
    assert_eq!(rest.vm("cim01").unwrap()["config"]["annotation"], "changed over CIM");
    let out = flow(&b, "root", ROOT_PW, &["remove-disk", "cim01"]);
    assert!(out.contains("rc 0"), "{out}");
    assert_eq!(rest.vm("cim01").unwrap()["config"]["disks"], json!([]));

    // Roles: ReadOnly is refused by the broker, an Operator's configuration change by hostd.
    for user in [("ro", RO_PW), ("op", OP_PW)] {
        let out = flow(&b, user.0, user.1, &["define", "nope", kernel]);
        assert!(out.contains("cimerror 2"), "{}: {out}", user.0);
        let out = flow(&b, user.0, user.1, &["destroy", "cim01"]);
        assert!(out.contains("cimerror 2"), "{}: {out}", user.0);
    }
    let out = flow(&b, "ro", RO_PW, &["state", "cim01", "2"]);
    assert!(out.contains("cimerror 2"), "{out}");
    assert!(rest.vm("nope").is_none());
    assert_eq!(rest.vm("cim01").unwrap()["power_state"], "poweredOff");

    // DestroySystem: gone from hostd and from its datastore.
    let out = flow(&b, "root", ROOT_PW, &["destroy", "cim01"]);
    assert!(out.contains("rc 0"), "{out}");
    assert!(rest.vm("cim01").is_none());
    assert!(!dir.join("volumes/datastore1/cim01").exists());

    // The reverse direction: hostd's changes appear over CIM.
    let (st, v) = rest.send("POST", "/api/vms", Some(json!({"name": "rest01", "memory_mib": 16, "kernel": kernel})));
    assert_eq!(st, 201, "{v}");
    eventually("rest01 over CIM", || {
        let out = flow(&b, "ro", RO_PW, &["list"]);
        (out.contains("vm rest01 3"), out)
    });
    let (st, v) = rest.send("POST", "/api/vms/rest01/power", Some(json!({"action": "on"})));
    assert_eq!(st, 202, "{v}");
    rest.wait_idle("rest01");
    eventually("rest01 powered on over CIM", || {
        let out = flow(&b, "ro", RO_PW, &["list"]);
        (out.contains("vm rest01 2"), out)
    });
    let (st, _) = rest.send("POST", "/api/vms/rest01/power", Some(json!({"action": "off"})));
    assert_eq!(st, 202);
    rest.wait_idle("rest01");
    assert_eq!(rest.send("DELETE", "/api/vms/rest01", None).0, 204);
    eventually("rest01 gone over CIM", || {
        let out = flow(&b, "ro", RO_PW, &["list"]);
        (!out.contains("rest01") && !out.contains("cimerror"), out)
    });
}

#[test]
fn pywbemcli_and_wbemcli_with_hostd_accounts() {
    let dir = test_dir("clients");
    let h = start_hostd(&dir);
    let mut b = start_broker(&dir, &h);
    let rest = Rest::login(&h, "root", ROOT_PW);
    let kernel = h.kernel_file.to_str().unwrap();
    let (st, v) = rest.send("POST", "/api/vms", Some(json!({"name": "web01", "memory_mib": 64, "vcpus": 2, "kernel": kernel,
        "nics": [{"network": "VM Network"}]})));
    assert_eq!(st, 201, "{v}");

    // pywbemcli: discovery, then the host, the pools and the VM from hostd.
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["server", "info"]);
    assert!(ok && out.contains("Mantle") && out.contains("root/interop"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["-o", "table", "profile", "list"]);
    assert!(ok && out.contains("System Virtualization") && out.contains("DMTF"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["-d", "root/cimv2", "-o", "table", "instance", "enumerate", "CIM_ComputerSystem"]);
    assert!(ok && out.contains("web01") && out.contains("Mantle_HostSystem"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["-d", "root/cimv2", "instance", "enumerate", "CIM_ResourcePool", "--pl", "PoolID,Reserved"]);
    assert!(ok && out.contains("PoolID = \"Memory\"") && out.contains("Reserved = 64;"), "{out}");
    let vm = r#"Mantle_ComputerSystem.CreationClassName="Mantle_ComputerSystem",Name="web01""#;
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["-d", "root/cimv2", "instance", "associators", vm, "--result-class", "CIM_VirtualSystemSettingData"]);
    assert!(ok && out.contains("KernelFile = \"") && out.contains("KernelFormat = \"multiboot\"") && out.contains("ConfigurationFile ="), "{out}");
    let (ok, out) = pywbemcli(&b, "op", OP_PW, &["-d", "root/cimv2", "instance", "invokemethod", vm, "RequestStateChange", "-p", "RequestedState=2"]);
    assert!(ok && out.contains("ReturnValue=4096") && out.contains("Mantle_ConcreteJob"), "{out}");
    rest.wait_idle("web01");
    assert_eq!(rest.vm("web01").unwrap()["power_state"], "poweredOn");
    let (ok, out) = pywbemcli(&b, "ro", RO_PW, &["-d", "root/cimv2", "instance", "invokemethod", vm, "RequestStateChange", "-p", "RequestedState=3"]);
    assert!(!ok && out.contains("CIM_ERR_ACCESS_DENIED"), "{out}");
    assert_eq!(rest.vm("web01").unwrap()["power_state"], "poweredOn");

    // Bad credentials: 401 for a wrong password and an unknown user (hostd decides).
    let (ok, out) = pywbemcli(&b, "root", "wrong-password", &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = pywbemcli(&b, "nobody", "whatever-pw", &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    assert!(!ok && out.contains("401"), "{out}");

    // wbemcli over HTTPS (trusting the host certificate): ei/gi/cm/ai.
    let u = format!("https://root:{ROOT_PW}@localhost:{}", b.https);
    let ca = b.cert.to_str().unwrap().to_string();
    let out = wbemcli(&["-cacert", &ca, "ei", &format!("{u}/root/cimv2:Mantle_ComputerSystem")]);
    assert!(out.contains("ElementName=\"web01\"") && out.contains("EnabledState=2"), "{out}");
    let vm_url = format!("{u}/root/cimv2:Mantle_ComputerSystem.CreationClassName=\"Mantle_ComputerSystem\",Name=\"web01\"");
    let out = wbemcli(&["-cacert", &ca, "cm", &vm_url, "RequestStateChange.RequestedState=3"]);
    assert!(out.contains("RequestStateChange: 4096"), "{out}");
    rest.wait_idle("web01");
    assert_eq!(rest.vm("web01").unwrap()["power_state"], "poweredOff");
    eventually("wbemcli gi EnabledState=3", || {
        let out = wbemcli(&["-cacert", &ca, "gi", &vm_url, "Name,EnabledState"]);
        (out.contains("EnabledState=3") && out.contains("Name=\"web01\""), out)
    });
    let out = wbemcli(&["-cacert", &ca, "ai", "-ac", "CIM_VirtualSystemSettingDataComponent", &format!(
        "{u}/root/cimv2:Mantle_VirtualSystemSettingData.InstanceID=\"Mantle:web01\"")]);
    assert!(out.contains("ResourceType=3") && out.contains("ResourceType=4") && out.contains("ResourceType=10"), "{out}");
    let out = wbemcli(&["-cacert", &ca, "ei", &format!("https://ro:wrong-pw@localhost:{}/root/cimv2:CIM_ComputerSystem", b.https)]);
    assert!(out.contains("Invalid username/password"), "{out}");
    // Plain HTTP was turned on in this test's settings only; the broker still serves.
    let out = wbemcli(&["ecn", &format!("http://ro:{RO_PW}@localhost:{}/root/cimv2:CIM_ComputerSystem", b.http)]);
    assert!(out.contains("Mantle_ComputerSystem"), "{out}");
    assert!(b.child.try_wait().unwrap().is_none());
}

#[test]
fn a_password_changed_at_hostd_ends_the_cached_session() {
    let dir = test_dir("revoke");
    let h = start_hostd(&dir);
    let b = start_broker(&dir, &h);
    let rest = Rest::login(&h, "root", ROOT_PW);
    let (ok, out) = pywbemcli(&b, "op", OP_PW, &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    assert!(ok, "{out}");
    let (st, v) = rest.send("PATCH", "/api/users/op", Some(json!({"password": "Op-new-secret-3"})));
    assert_eq!(st, 200, "{v}");
    // hostd ended op's sessions: the old password stops working (within the broker's
    // one-second read cache), the new one works.
    eventually("old password refused", || {
        let (ok, out) = pywbemcli(&b, "op", OP_PW, &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
        (!ok && out.contains("401"), out)
    });
    let (ok, out) = pywbemcli(&b, "op", "Op-new-secret-3", &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    assert!(ok, "{out}");
}
