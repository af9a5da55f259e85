//! The CIM broker on Mantle (`/sbin/cim-broker`, started by init with
//! /etc/mantle/cim-broker.conf), over hostd, driven from the host through QEMU's
//! forwarded ports by the real WBEM clients: pywbemcli and pywbem (PyPI, in
//! `target/wbem-venv`) and wbemcli (Debian `sblim-wbemcli`). A VM defined and powered
//! on over CIM is checked in hostd's REST API (curl) and with `vmkcli` on the console.
//!
//! One boot (the suite's time budget) covers the broker's start by init and the
//! whole flow: discovery, DefineSystem onto a datastore disk, every power state
//! hostd offers (2, 9, 2 from paused, 11, 4 through the guest's ACPI power button,
//! 3), ModifyResourceSettings, DestroySystem, with pywbem and with wbemcli, and the
//! negative cases of DSP0200 (bad XML, limits, credentials, header/body mismatch) sent
//! raw with curl.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image_builder::datastore::{self, DiskBus};
use image_builder::qemu::{Console, Nic, NicModel, PortForward};
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(120);
const ROOT_PW: &str = "Mantle-root-pw1";
const RO_PW: &str = "Mantle-ro-pw12";

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn venv_bin(name: &str) -> PathBuf {
    let p = workspace().join("target/wbem-venv/bin").join(name);
    assert!(p.exists(), "{} not found: run `bash .ci/run` (it makes the pywbem venv)", p.display());
    p
}

fn output(cmd: &mut Command) -> (bool, String) {
    cmd.env("NO_PROXY", "localhost,127.0.0.1").env("no_proxy", "localhost,127.0.0.1");
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn pywbemcli(port: u16, cert: &Path, user: &str, pw: &str, args: &[&str]) -> (bool, String) {
    output(
        Command::new(venv_bin("pywbemcli"))
            .args(["-s", &format!("https://localhost:{port}"), "-u", user, "-p", pw, "--timeout", "120"])
            .args(args)
            .env("REQUESTS_CA_BUNDLE", cert)
            .env_remove("PYWBEMCLI_SERVER"),
    )
}

/// One step of cim-broker/tests/data/hostd_flow.py (pywbem).
fn flow(port: u16, cert: &Path, user: &str, pw: &str, args: &[&str]) -> String {
    let script = workspace().join("cim-broker/tests/data/hostd_flow.py");
    let (ok, out) = output(
        Command::new(venv_bin("python3"))
            .arg(script)
            .arg(format!("https://localhost:{port}"))
            .arg(cert)
            .args([user, pw])
            .args(args)
            .env("REQUESTS_CA_BUNDLE", cert),
    );
    assert!(ok, "hostd_flow.py {args:?}: {out}");
    out
}

/// hostd's REST API through its forwarded port, with curl.
fn rest(port: u16, cert: &Path, token: Option<&str>, method: &str, path: &str, body: Option<&str>) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "120", "--cacert"]).arg(cert).args(["-X", method]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    cmd.arg(format!("https://localhost:{port}{path}"));
    output(&mut cmd).1
}

/// Waits until `f` returns Some, re-asking every 2 s.
fn eventually<T>(c: &mut Console, limit: Duration, what: &str, mut f: impl FnMut(&mut Console) -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f(c) {
            Ok(v) => return v,
            Err(last) => check(c, Instant::now() < deadline, &format!("{what}: {last}")),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn wbemcli(args: &[&str]) -> String {
    output(Command::new("wbemcli").args(args)).1
}

/// One raw CIM-XML request (DSP0200) to the broker's forwarded HTTPS port with curl,
/// so the headers and body can be wrong on purpose. Returns the HTTP status, the
/// `CIMError` header and the response (headers and body).
fn cimxml(port: u16, cert: &Path, dir: &Path, auth: Option<(&str, &str)>, method: &str, object: &str, body: &str) -> (u16, Option<String>, String) {
    let file = dir.join("request.xml");
    std::fs::write(&file, body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-i", "--http1.1", "--max-time", "120", "--cacert"]).arg(cert);
    if let Some((user, pw)) = auth {
        cmd.args(["-u", &format!("{user}:{pw}")]);
    }
    cmd.args(["-H", "Content-Type: application/xml; charset=\"utf-8\"", "-H", "CIMOperation: MethodCall"])
        .args(["-H", &format!("CIMMethod: {method}"), "-H", &format!("CIMObject: {object}"), "-H", "Expect:"])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("https://localhost:{port}/cimom"));
    let (_, out) = output(&mut cmd);
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = out.split("\r\n\r\n").next().unwrap_or("");
    let cim_error = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("CIMError"))
        .map(|(_, v)| v.trim().to_string());
    (status, cim_error, out)
}

/// An EnumerateInstanceNames request (as cim-broker/tests/real_clients.rs sends).
fn enum_names(namespace: &str, class: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstanceNames"><LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="{namespace}"/></LOCALNAMESPACEPATH><IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="{class}"/></IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"#
    )
}

/// An extrinsic method call on a class of root/cimv2.
fn class_method_call(class: &str, method: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="2" PROTOCOLVERSION="1.0"><SIMPLEREQ><METHODCALL NAME="{method}"><LOCALCLASSPATH><LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/></LOCALNAMESPACEPATH><CLASSNAME NAME="{class}"/></LOCALCLASSPATH></METHODCALL></SIMPLEREQ></MESSAGE></CIM>"#
    )
}

/// The VMkernel id of hostd's VM `name` (`vmkcli vm list`), if it has one.
fn kernel_id(c: &mut Console, name: &str) -> Option<String> {
    let list = run(c, "vmkcli vm list");
    list.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).and_then(|l| l.split_whitespace().next()).map(str::to_string)
}

/// On Mantle, in one boot: init starts the broker from /etc/inittab with
/// /etc/mantle/cim-broker.conf (hostd's back end, HTTPS 5989 with hostd's certificate,
/// plain HTTP off) and it stays up; the real WBEM clients reach it through QEMU's
/// forwarded port with hostd's accounts and drive a VM on the datastore disk through
/// its life: DefineSystem (pywbem, embedded VSSD and RASDs), RequestStateChange
/// 2/9/2/11/4/3 as jobs, ModifyResourceSettings, DestroySystem; then the same with
/// wbemcli (cm DefineSystem with unescaped embedded instances, ei, gi, ai, cm
/// RequestStateChange, cm DestroySystem). hostd's REST API and `vmkcli` see every change;
/// the guest's console shows it booting, being reset and taking the power button.
#[test]
fn wbem_clients_manage_vms_on_mantle() {
    let (cim_port, hostd_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("datastore1.img");
    datastore::create(&disk, 64 << 20, "datastore1").expect("making the datastore");
    let _lock = emulator_lock();
    let mut q = qemu_iso(iso("cim", "", &[]));
    q.cpus = 2;
    q.mem_mib = 1024;
    q.debug_exit = false;
    q.nics = vec![Nic {
        model: NicModel::VirtioNet,
        forwards: vec![PortForward { host: cim_port, guest: 5989 }, PortForward { host: hostd_port, guest: 443 }],
    }];
    q.extra.extend(datastore::qemu_disk_args(std::slice::from_ref(&disk), DiskBus::VirtioBlk));
    let started = Instant::now();
    let progress = |what: &str| eprintln!("cim image test: {what} at {:.0} s", started.elapsed().as_secs_f64());
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(180), STEP);
    progress("shell");

    // init started the broker with the shipped settings; the binary refuses bad ones.
    let out = run(&mut c, "grep cim-broker /etc/inittab; grep -v '^#' /etc/mantle/cim-broker.conf");
    check(&c, out.contains("cim-broker:respawn:/sbin/cim-broker"), &format!("inittab: {out}"));
    check(&c, out.contains("backend = hostd") && out.contains("https-port = 5989") && out.contains("tls-cert = /etc/mantle/hostd/ssl/host.crt"), &format!("settings: {out}"));
    check(&c, !out.lines().any(|l| l.trim_start().starts_with("http-port")), &format!("plain HTTP must be off by default: {out}"));
    let broker_pid = |ps: &str| ps.lines().find(|l| l.ends_with("/sbin/cim-broker")).and_then(|l| l.split_whitespace().next()).map(str::to_string);
    let out = run(&mut c, "ps");
    let pid = broker_pid(&out);
    check(&c, pid.is_some(), &format!("init did not start the broker: {out}"));
    let out = run(&mut c, "cim-broker --version; echo rc=$?");
    check(&c, out.contains(concat!("cim-broker ", env!("CARGO_PKG_VERSION"))) && out.contains("rc=0"), &format!("--version: {out}"));
    let out = run(&mut c, "echo 'Nonsense' > /tmp/bad.conf; cim-broker --config /tmp/bad.conf; echo rc=$?");
    check(&c, out.contains("/tmp/bad.conf:1: expected key = value") && out.contains("rc=2"), &format!("bad settings: {out}"));

    // Accounts at hostd, then (re)start hostd so it reads them.
    run(&mut c, &format!("echo {ROOT_PW} | hostd passwd root; echo {RO_PW} | hostd passwd ro --role ReadOnly"));
    run(&mut c, "pidof hostd && kill $(pidof hostd); sleep 2; pidof hostd || (hostd > /tmp/hostd.log 2>&1 &)");
    // The host certificate hostd made is the broker's too: trust exactly it.
    let pem = eventually(&mut c, Duration::from_secs(300), "hostd made no host certificate", |c| {
        let out = run(c, "cat /etc/mantle/hostd/ssl/host.crt");
        match (out.find("-----BEGIN CERTIFICATE-----"), out.find("-----END CERTIFICATE-----")) {
            (Some(a), Some(b)) => Ok(out[a..b + 25].replace('\r', "")),
            _ => Err(out),
        }
    });
    let cert = dir.path().join("host.crt");
    std::fs::File::create(&cert).unwrap().write_all(format!("{pem}\n").as_bytes()).unwrap();
    let ca = cert.to_string_lossy().into_owned();

    // Listening on 5989 only (no plain HTTP), the process init started.
    let netstat = eventually(&mut c, Duration::from_secs(180), "the broker does not listen on 5989", |c| {
        let out = run(c, "netstat -tln");
        if out.contains(":5989") { Ok(out) } else { Err(out) }
    });
    check(&c, !netstat.contains(":5988"), &format!("netstat -tln: {netstat}"));
    let out = run(&mut c, "ps");
    check(&c, broker_pid(&out) == pid, &format!("the broker was restarted: {out}"));
    check(&c, c.log().contains("cim-broker: listening https://0.0.0.0:5989") && !c.log().contains("init: cim-broker"), "broker start on the console");

    progress("broker listening");

    // pywbemcli discovery through the forwarded port (retry while hostd starts).
    eventually(&mut c, Duration::from_secs(300), "pywbemcli server info", |_| {
        let (ok, out) = pywbemcli(cim_port, &cert, "root", ROOT_PW, &["server", "info"]);
        if ok && out.contains("Mantle") && out.contains("root/interop") { Ok(()) } else { Err(out) }
    });
    let (ok, out) = pywbemcli(cim_port, &cert, "ro", RO_PW, &["-o", "table", "profile", "list"]);
    check(&c, ok && out.contains("System Virtualization") && out.contains("DMTF"), &format!("profile list: {out}"));
    let (ok, out) = pywbemcli(cim_port, &cert, "ro", RO_PW, &["namespace", "list"]);
    check(&c, ok && out.contains("root/cimv2") && out.contains("root/interop"), &format!("namespace list: {out}"));
    let (ok, out) = pywbemcli(cim_port, &cert, "ro", RO_PW, &["-d", "root/cimv2", "class", "get", "Mantle_ComputerSystem"]);
    check(&c, ok && out.contains("RequestStateChange(") && out.contains("RequestedState"), &format!("class get: {out}"));
    let (ok, out) = pywbemcli(cim_port, &cert, "ro", RO_PW, &["-d", "root/cimv2", "instance", "enumerate", "CIM_ComputerSystem", "--names-only"]);
    check(&c, ok && out.contains("Mantle_HostSystem"), &format!("enumerate hosts and VMs: {out}"));
    let (ok, out) = pywbemcli(cim_port, &cert, "root", "wrong-password", &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    check(&c, !ok && out.contains("401"), &format!("wrong password: {out}"));

    progress("discovery done");

    // Bad requests through the forwarded port (raw, with curl) each get the DSP0200
    // error: HTTP status and CIMError header, or 200 with the CIM <ERROR> code.
    let req = |auth: Option<(&str, &str)>, method: &str, object: &str, body: &str| cimxml(cim_port, &cert, dir.path(), auth, method, object, body);
    let root = Some(("root", ROOT_PW));
    let good = enum_names("cimv2", "CIM_ComputerSystem");
    let (st, _, out) = req(root, "EnumerateInstanceNames", "root%2Fcimv2", &good);
    check(&c, st == 200 && out.contains("<IMETHODRESPONSE NAME=\"EnumerateInstanceNames\">") && out.contains("Mantle_HostSystem"), &format!("raw EnumerateInstanceNames: {out}"));
    let (st, _, out) = req(None, "EnumerateInstanceNames", "root/cimv2", &good);
    check(&c, st == 401 && out.to_ascii_lowercase().contains("www-authenticate: basic realm="), &format!("no credentials: {out}"));
    let (st, _, out) = req(Some(("root", "wrong-password")), "EnumerateInstanceNames", "root/cimv2", &good);
    check(&c, st == 401, &format!("wrong credentials: {out}"));
    let (st, e, out) = req(root, "GetClass", "root/cimv2", &good);
    check(&c, (st, e.as_deref()) == (400, Some("header-mismatch")), &format!("CIMMethod/body mismatch: {out}"));
    let (st, e, out) = req(root, "EnumerateInstanceNames", "root/interop", &good);
    check(&c, (st, e.as_deref()) == (400, Some("header-mismatch")), &format!("CIMObject/body mismatch: {out}"));
    let (st, e, out) = req(root, "EnumerateInstanceNames", "root/cimv2", &good[..200]);
    check(&c, (st, e.as_deref()) == (400, Some("request-not-well-formed")), &format!("malformed XML: {out}"));
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE CIM [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><CIM CIMVERSION="2.0" DTDVERSION="2.0">&d;</CIM>"#;
    let (st, e, out) = req(root, "EnumerateInstanceNames", "root/cimv2", bomb);
    check(&c, (st, e.as_deref()) == (400, Some("request-not-valid")), &format!("entity bomb: {out}"));
    let deep = format!("<CIM CIMVERSION=\"2.0\" DTDVERSION=\"2.0\">{}{}</CIM>", "<A>".repeat(10_000), "</A>".repeat(10_000));
    let (st, e, out) = req(root, "EnumerateInstanceNames", "root/cimv2", &deep);
    check(&c, (st, e.as_deref()) == (400, Some("request-not-valid")), &format!("10,000-deep nesting: {out}"));
    let (st, _, out) = req(root, "EnumerateInstanceNames", "root/nowhere", &enum_names("nowhere", "CIM_ComputerSystem"));
    check(&c, st == 200 && out.contains("<ERROR CODE=\"3\""), &format!("wrong namespace (CIM_ERR_INVALID_NAMESPACE): {out}"));
    let (st, _, out) = req(root, "EnumerateInstanceNames", "root/cimv2", &enum_names("cimv2", "CIM_Nothing"));
    check(&c, st == 200 && out.contains("<ERROR CODE=\"5\""), &format!("unknown class (CIM_ERR_INVALID_CLASS): {out}"));
    let (st, _, out) = req(root, "Nothing", "root/cimv2:Mantle_ComputerSystem", &class_method_call("Mantle_ComputerSystem", "Nothing"));
    check(&c, st == 200 && out.contains("<ERROR CODE=\"17\""), &format!("unknown method (CIM_ERR_METHOD_NOT_FOUND): {out}"));
    // (A ReadOnly user invoking a method: CIM_ERR_ACCESS_DENIED with pywbem below.)
    // The broker keeps serving, as the same process.
    let (st, _, out) = req(root, "EnumerateInstanceNames", "root/cimv2", &good);
    check(&c, st == 200 && out.contains("Mantle_HostSystem"), &format!("after the bad requests: {out}"));
    let out = run(&mut c, "ps");
    check(&c, broker_pid(&out) == pid, &format!("the broker was restarted by the bad requests: {out}"));

    progress("bad requests done");

    // hostd's API, as root.
    let login = rest(hostd_port, &cert, None, "POST", "/api/session", Some(&format!("{{\"username\":\"root\",\"password\":\"{ROOT_PW}\"}}")));
    let token = login.split("\"token\":\"").nth(1).and_then(|t| t.split('"').next()).unwrap_or_else(|| panic!("login: {login}")).to_string();
    let hostd_vm = |name: &str| rest(hostd_port, &cert, Some(&token), "GET", &format!("/api/vms/{name}"), None);

    // pywbem: DefineSystem puts the VM on the datastore; ReadOnly may not power it.
    const GUEST: &str = "/usr/lib/mantle/guests/power-button.elf";
    const BANNER: &str = "power-button guest: up";
    let out = flow(cim_port, &cert, "root", ROOT_PW, &["define", "cim01", GUEST]);
    check(&c, out.contains("rc 0") && out.contains("system cim01"), &format!("DefineSystem: {out}"));
    let vm = hostd_vm("cim01");
    check(&c, vm.contains("\"name\":\"cim01\"") && vm.contains("\"memory_mib\":32") && vm.contains("/cim01/cim01.vmx\""), &format!("hostd: {vm}"));
    let out = run(&mut c, "ls /vmfs/volumes/datastore1/cim01/");
    check(&c, out.contains("cim01.vmx") && out.contains("cim01-disk0.img"), &format!("the VM's directory: {out}"));
    let out = flow(cim_port, &cert, "ro", RO_PW, &["state", "cim01", "2"]);
    check(&c, out.contains("cimerror 2"), &format!("ReadOnly RequestStateChange: {out}"));

    // Every power state hostd offers, each a job that completes (JobState 7, 100 %),
    // each seen in EnabledState and by the VMkernel.
    let state = |c: &mut Console, s: &str, enabled: &str| {
        let out = flow(cim_port, &cert, "root", ROOT_PW, &["state", "cim01", s]);
        check(c, out.contains("rc 4096") && out.contains("job 7 100") && out.contains("job-class Mantle_ConcreteJob"), &format!("RequestStateChange({s}): {out}"));
        eventually(c, Duration::from_secs(30), &format!("EnabledState after RequestStateChange({s})"), |_| {
            let out = flow(cim_port, &cert, "ro", RO_PW, &["enabled", "cim01"]);
            if out.contains(&format!("enabled {enabled}")) { Ok(()) } else { Err(out) }
        });
    };
    state(&mut c, "2", "2");
    let vm = hostd_vm("cim01");
    check(&c, vm.contains("\"power_state\":\"poweredOn\""), &format!("hostd after 2: {vm}"));
    let id = kernel_id(&mut c, "cim01").unwrap_or_else(|| panic!("cim01 not in vmkcli vm list\n{}", c.log()));
    let console = |c: &mut Console| run(c, &format!("vmkcli vm console {id}"));
    eventually(&mut c, Duration::from_secs(60), "the guest's banner", |c| {
        let out = console(c);
        if out.contains(BANNER) { Ok(()) } else { Err(out) }
    });
    state(&mut c, "9", "9");
    let out = run(&mut c, &format!("vmkcli vm info {id}"));
    check(&c, out.contains("paused"), &format!("vmkcli after 9: {out}"));
    state(&mut c, "2", "2"); // from paused: resume
    // 11: a hard reset (the VMkernel starts the guest again from its initial state,
    // with a fresh console): hostd records it and the guest comes up again.
    state(&mut c, "11", "2");
    let events = rest(hostd_port, &cert, Some(&token), "GET", "/api/events", None);
    check(&c, events.contains("VM cim01 reset"), &format!("hostd's events after 11: {events}"));
    eventually(&mut c, Duration::from_secs(60), "the guest's banner after the reset", |c| {
        let out = console(c);
        if out.contains(BANNER) { Ok(()) } else { Err(out) }
    });
    // 4: hostd presses the guest's ACPI power button and waits (it never forces the
    // VM off: a guest that ignored the button would fail the job); the guest enters
    // S5, so the job completes and hostd records a shutdown.
    state(&mut c, "4", "3");
    check(&c, hostd_vm("cim01").contains("\"power_state\":\"poweredOff\""), "hostd after 4");
    let events = rest(hostd_port, &cert, Some(&token), "GET", "/api/events", None);
    check(&c, events.contains("VM cim01 shut down"), &format!("hostd's events after 4: {events}"));
    // 4 again: nothing runs to shut down — an invalid transition, not a job.
    let out = flow(cim_port, &cert, "root", ROOT_PW, &["state", "cim01", "4"]);
    check(&c, out.contains("rc 4097"), &format!("RequestStateChange(4) while off: {out}"));
    state(&mut c, "2", "2");
    state(&mut c, "3", "3");
    let stopped = kernel_id(&mut c, "cim01").is_none() || run(&mut c, "vmkcli vm list").contains("powered off");
    check(&c, stopped, "VMkernel after 3");

    progress("power states done");

    // ModifyResourceSettings changes its memory at hostd.
    let out = flow(cim_port, &cert, "root", ROOT_PW, &["memory", "cim01", "48"]);
    check(&c, out.contains("rc 0"), &format!("ModifyResourceSettings: {out}"));
    let vm = hostd_vm("cim01");
    check(&c, vm.contains("\"memory_mib\":48"), &format!("hostd after ModifyResourceSettings: {vm}"));

    // wbemcli: the same VM, then a VM of its own through its whole life.
    let u = format!("https://root:{ROOT_PW}@localhost:{cim_port}");
    let out = wbemcli(&["-cacert", &ca, "ei", &format!("{u}/root/cimv2:Mantle_ComputerSystem")]);
    check(&c, out.contains("ElementName=\"cim01\""), &format!("wbemcli ei: {out}"));
    let vsms = wbemcli(&["-cacert", &ca, "ein", &format!("{u}/root/cimv2:Mantle_VirtualSystemManagementService")]);
    let vsms = vsms.lines().find(|l| l.contains("Mantle_VirtualSystemManagementService.")).map(|l| l.trim().to_string());
    let vsms = vsms.unwrap_or_else(|| panic!("wbemcli ein VSMS\n{}", c.log()));
    let vsms = format!("https://root:{ROOT_PW}@{vsms}");
    let vssd = format!(
        "<INSTANCE CLASSNAME=\"Mantle_VirtualSystemSettingData\"><PROPERTY NAME=\"ElementName\" TYPE=\"string\"><VALUE>wbem02</VALUE></PROPERTY><PROPERTY NAME=\"KernelFile\" TYPE=\"string\"><VALUE>{GUEST}</VALUE></PROPERTY></INSTANCE>"
    );
    let mem = "<INSTANCE CLASSNAME=\"Mantle_ResourceAllocationSettingData\"><PROPERTY NAME=\"ResourceType\" TYPE=\"uint16\"><VALUE>4</VALUE></PROPERTY><PROPERTY NAME=\"VirtualQuantity\" TYPE=\"uint64\"><VALUE>24</VALUE></PROPERTY></INSTANCE>";
    let out = wbemcli(&["-cacert", &ca, "cm", &vsms, &format!("DefineSystem.SystemSettings={vssd},ResourceSettings={mem}")]);
    check(&c, out.contains("DefineSystem: 0") && out.contains("Name=\"wbem02\""), &format!("wbemcli cm DefineSystem: {out}"));
    let vm = hostd_vm("wbem02");
    check(&c, vm.contains("\"name\":\"wbem02\"") && vm.contains("\"memory_mib\":24"), &format!("hostd after wbemcli DefineSystem: {vm}"));
    let vm_url = format!("{u}/root/cimv2:Mantle_ComputerSystem.CreationClassName=\"Mantle_ComputerSystem\",Name=\"wbem02\"");
    let out = wbemcli(&["-cacert", &ca, "cm", &vm_url, "RequestStateChange.RequestedState=2"]);
    check(&c, out.contains("RequestStateChange: 4096"), &format!("wbemcli cm RequestStateChange(2): {out}"));
    eventually(&mut c, Duration::from_secs(60), "wbemcli gi EnabledState=2", |_| {
        let out = wbemcli(&["-cacert", &ca, "gi", &vm_url, "Name,EnabledState"]);
        if out.contains("EnabledState=2") { Ok(()) } else { Err(out) }
    });
    let out = wbemcli(&["-cacert", &ca, "ai", "-ac", "CIM_SettingsDefineState", &vm_url]);
    check(&c, out.contains("Mantle_VirtualSystemSettingData") && out.contains("wbem02"), &format!("wbemcli ai: {out}"));
    let out = wbemcli(&["-cacert", &ca, "cm", &vm_url, "RequestStateChange.RequestedState=3"]);
    check(&c, out.contains("RequestStateChange: 4096"), &format!("wbemcli cm RequestStateChange(3): {out}"));
    eventually(&mut c, Duration::from_secs(60), "wbemcli gi EnabledState=3", |_| {
        let out = wbemcli(&["-cacert", &ca, "gi", &vm_url, "Name,EnabledState"]);
        if out.contains("EnabledState=3") { Ok(()) } else { Err(out) }
    });
    let out = wbemcli(&["-cacert", &ca, "cm", &vsms, "DestroySystem.AffectedSystem=root/cimv2:Mantle_ComputerSystem.CreationClassName=\"Mantle_ComputerSystem\",Name=\"wbem02\""]);
    check(&c, out.contains("DestroySystem: 0"), &format!("wbemcli cm DestroySystem: {out}"));
    check(&c, hostd_vm("wbem02").contains("not_found"), "wbem02 still at hostd after DestroySystem");

    progress("wbemcli done");

    // pywbem: DestroySystem removes cim01 from hostd and from the datastore.
    let out = flow(cim_port, &cert, "root", ROOT_PW, &["destroy", "cim01"]);
    check(&c, out.contains("rc 0"), &format!("DestroySystem: {out}"));
    let vm = hostd_vm("cim01");
    check(&c, !vm.contains("\"name\":\"cim01\""), &format!("hostd after DestroySystem: {vm}"));
    let out = run(&mut c, "ls /vmfs/volumes/datastore1/");
    check(&c, !out.contains("cim01") && !out.contains("wbem02"), &format!("the datastore after DestroySystem: {out}"));
    let out = flow(cim_port, &cert, "ro", RO_PW, &["list"]);
    check(&c, !out.contains("vm cim01") && !out.contains("vm wbem02"), &format!("VMs over CIM after DestroySystem: {out}"));
    // The broker served all of it as the process init started.
    let out = run(&mut c, "ps");
    check(&c, broker_pid(&out) == pid, &format!("the broker was restarted: {out}"));
    progress("done");
}
