//! The broker binary on loopback, driven by the real WBEM clients: pywbem/pywbemcli
//! (PyPI; `.ci/run` installs them into `target/wbem-venv`) and wbemcli (Debian
//! `sblim-wbemcli`), plus raw-HTTP negative cases. The back end is the broker's
//! in-memory inventory (`--backend memory`), not yet hostd.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct BrokerProcess {
    child: Child,
    http: u16,
    https: u16,
    dir: PathBuf,
}

impl BrokerProcess {
    fn start(name: &str, extra: &[&str]) -> BrokerProcess {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cim-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("users"), "root:administrator:secret\nop:operator:opsecret\nro:readonly:rosecret\nold:disabled:oldsecret\n").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cim-broker"))
            .args(["--backend", "memory", "--listen", "127.0.0.1", "--http-port", "0", "--https-port", "0", "--hostname", "mantle-test"])
            .arg("--users-file")
            .arg(dir.join("users"))
            .arg("--tls-cert")
            .arg(dir.join("cert.pem"))
            .arg("--tls-key")
            .arg(dir.join("key.pem"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start cim-broker");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
        BrokerProcess { child, http, https, dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn venv_bin(name: &str) -> PathBuf {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = ws.join("target/wbem-venv/bin").join(name);
    if p.exists() {
        return p;
    }
    panic!("{} not found: run `bash .ci/run` or `python3 -m venv target/wbem-venv && target/wbem-venv/bin/pip install pywbem pywbemtools`", p.display());
}

/// Runs pywbemcli over HTTPS against the broker, verifying its certificate.
fn pywbemcli(b: &BrokerProcess, user: &str, password: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(venv_bin("pywbemcli"))
        .args(["-s", &format!("https://localhost:{}", b.https), "-u", user, "-p", password])
        .args(args)
        // requests lets these override the session's CA bundle: point them at ours.
        .env("REQUESTS_CA_BUNDLE", b.cert())
        .env("CURL_CA_BUNDLE", b.cert())
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .env_remove("PYWBEMCLI_SERVER")
        .env_remove("PYWBEMCLI_DEFAULT_NAMESPACE")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn wbemcli(args: &[&str]) -> String {
    let out = Command::new("wbemcli")
        .args(args)
        // wbemcli talks through libcurl, which honours proxy variables.
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .output()
        .expect("wbemcli (Debian sblim-wbemcli) is needed");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn pywbemcli_server_namespaces_profiles() {
    let b = BrokerProcess::start("pyserver", &[]);
    let (ok, out) = pywbemcli(&b, "root", "secret", &["server", "info"]);
    assert!(ok && out.contains("Mantle") && out.contains("root/interop") && out.contains("root/cimv2"), "{out}");
    assert!(!out.contains("Warning"), "{out}");
    let (ok, out) = pywbemcli(&b, "root", "secret", &["namespace", "list"]);
    assert!(ok && out.contains("root/cimv2") && out.contains("root/interop"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-o", "table", "profile", "list"]);
    assert!(ok, "{out}");
    for want in ["DMTF", "System Virtualization", "Virtual System", "Profile Registration", "1.0.0"] {
        assert!(out.contains(want), "{want}: {out}");
    }
}

#[test]
fn pywbemcli_classes_instances_and_methods() {
    let b = BrokerProcess::start("pyinst", &["--demo-vms", "2"]);
    let (ok, out) = pywbemcli(&b, "root", "secret", &["-d", "root/cimv2", "class", "enumerate", "CIM_ComputerSystem", "--names-only"]);
    assert!(ok && out.contains("Mantle_ComputerSystem") && out.contains("Mantle_HostSystem"), "{out}");
    let (ok, out) = pywbemcli(&b, "root", "secret", &["-d", "root/cimv2", "class", "get", "Mantle_VirtualSystemManagementService"]);
    assert!(ok && out.contains("DefineSystem(") && out.contains("EmbeddedInstance") && out.contains("ModifyResourceSettings("), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "-o", "table", "instance", "enumerate", "CIM_ComputerSystem"]);
    assert!(ok && out.contains("demo0") && out.contains("demo1") && out.contains("Mantle_HostSystem"), "{out}");
    // Paths through the pull operations (OpenEnumerateInstancePaths) and counts.
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "enumerate", "CIM_ComputerSystem", "--names-only"]);
    assert!(ok && out.matches("root/cimv2:Mantle_ComputerSystem.").count() == 2 && out.contains("Mantle_HostSystem."), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "count", "Mantle_*"]);
    assert!(ok && out.contains("Mantle_ResourcePool") && out.contains("Mantle_ComputerSystem"), "{out}");
    let vm = r#"Mantle_ComputerSystem.CreationClassName="Mantle_ComputerSystem",Name="1""#;
    let (ok, out) = pywbemcli(&b, "op", "opsecret", &["-d", "root/cimv2", "instance", "invokemethod", vm, "RequestStateChange", "-p", "RequestedState=2"]);
    assert!(ok && out.contains("ReturnValue=0"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "get", vm, "--pl", "EnabledState"]);
    assert!(ok && out.contains("EnabledState = 2;"), "{out}");
    // A ReadOnly user may not invoke methods.
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "invokemethod", vm, "RequestStateChange", "-p", "RequestedState=3"]);
    assert!(!ok && out.contains("CIM_ERR_ACCESS_DENIED"), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "associators", vm, "--assoc-class", "CIM_SettingsDefineState", "--result-class", "CIM_VirtualSystemSettingData"]);
    assert!(ok && out.contains("instance of Mantle_VirtualSystemSettingData") && out.contains("ElementName = \"demo0\""), "{out}");
    let (ok, out) = pywbemcli(&b, "ro", "rosecret", &["-d", "root/cimv2", "instance", "references", vm, "--names-only"]);
    assert!(ok && out.contains("CIM_HostedDependency") && out.contains("CIM_ElementConformsToProfile"), "{out}");
    // Wrong credentials and unknown class.
    let (ok, out) = pywbemcli(&b, "root", "wrong", &["-d", "root/cimv2", "instance", "count", "CIM_ComputerSystem"]);
    assert!(!ok && out.contains("401"), "{out}");
    let (ok, out) = pywbemcli(&b, "root", "secret", &["-d", "root/cimv2", "instance", "enumerate", "CIM_Nothing"]);
    assert!(!ok && out.contains("CIM_ERR_INVALID_CLASS"), "{out}");
}

#[test]
fn pywbem_define_system_with_embedded_instances() {
    let b = BrokerProcess::start("pydefine", &[]);
    let script = r#"
import sys, pywbem
port, cert = sys.argv[1], sys.argv[2]
c = pywbem.WBEMConnection("https://localhost:" + port, ("root", "secret"), default_namespace="root/cimv2", ca_certs=cert)
vsms = c.EnumerateInstanceNames("CIM_VirtualSystemManagementService")[0]
vssd = pywbem.CIMInstance("CIM_VirtualSystemSettingData", properties={"ElementName": "web01", "VirtualSystemType": "DMTF:x86:64"})
cpu = pywbem.CIMInstance("CIM_ResourceAllocationSettingData", properties={"ResourceType": pywbem.Uint16(3), "VirtualQuantity": pywbem.Uint64(2)})
mem = pywbem.CIMInstance("CIM_ResourceAllocationSettingData", properties={"ResourceType": pywbem.Uint16(4), "VirtualQuantity": pywbem.Uint64(2048), "AllocationUnits": "byte*2^20"})
rc, out = c.InvokeMethod("DefineSystem", vsms, SystemSettings=vssd, ResourceSettings=[cpu, mem])
assert rc == 0, rc
vm = out["ResultingSystem"]
inst = c.GetInstance(vm)
print("defined", inst["ElementName"], inst["EnabledState"])
rasds = c.Associators(c.Associators(vm, ResultClass="CIM_VirtualSystemSettingData")[0].path, AssocClass="CIM_VirtualSystemSettingDataComponent")
print("rasds", sorted((int(r["ResourceType"]), int(r["VirtualQuantity"])) for r in rasds))
mem_rasd = [r for r in rasds if r["ResourceType"] == 4][0]
mem_rasd["VirtualQuantity"] = pywbem.Uint64(1024)
rc, out = c.InvokeMethod("ModifyResourceSettings", vsms, ResourceSettings=[mem_rasd])
assert rc == 0, rc
print("memory", int(c.GetInstance(mem_rasd.path)["VirtualQuantity"]))
rc, _ = c.InvokeMethod("RequestStateChange", vm, RequestedState=pywbem.Uint16(2))
print("start", rc, c.GetInstance(vm)["EnabledState"])
rc, _ = c.InvokeMethod("RequestStateChange", vm, RequestedState=pywbem.Uint16(3))
rc, _ = c.InvokeMethod("DestroySystem", vsms, AffectedSystem=vm)
print("destroy", rc, len(c.EnumerateInstanceNames("Mantle_ComputerSystem")))
"#;
    let out = Command::new(venv_bin("python3"))
        .arg("-c")
        .arg(script)
        .arg(b.https.to_string())
        .arg(b.cert())
        .env("REQUESTS_CA_BUNDLE", b.cert())
        .env("CURL_CA_BUNDLE", b.cert())
        .env("NO_PROXY", "localhost,127.0.0.1")
        .env("no_proxy", "localhost,127.0.0.1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for want in ["defined web01 3", "rasds [(3, 2), (4, 2048)]", "memory 1024", "start 0 2", "destroy 0 0"] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn wbemcli_enumerate_get_invoke() {
    let b = BrokerProcess::start("wbemcli", &["--demo-vms", "1"]);
    let u = format!("http://root:secret@localhost:{}", b.http);
    let out = wbemcli(&["ecn", &format!("{u}/root/cimv2:")]);
    assert!(out.contains("root/cimv2:CIM_ManagedElement"), "{out}");
    let out = wbemcli(&["ecn", &format!("{u}/root/cimv2:CIM_ComputerSystem")]);
    assert!(out.contains("root/cimv2:Mantle_ComputerSystem"), "{out}");
    let out = wbemcli(&["ei", &format!("{u}/root/interop:CIM_RegisteredProfile")]);
    assert!(out.contains("RegisteredName=\"System Virtualization\"") && out.contains("RegisteredOrganization=2"), "{out}");
    let vm = format!("{u}/root/cimv2:Mantle_ComputerSystem.CreationClassName=\"Mantle_ComputerSystem\",Name=\"1\"");
    let out = wbemcli(&["cm", &vm, "RequestStateChange.RequestedState=2"]);
    assert!(out.contains("RequestStateChange: 0"), "{out}");
    let out = wbemcli(&["gi", &vm, "Name,EnabledState"]);
    assert!(out.contains("EnabledState=2") && out.contains("Name=\"1\""), "{out}");
    // Chunked with the CIMStatusCode trailer.
    let out = wbemcli(&["-cte", "ei", &format!("{u}/root/cimv2:CIM_ComputerSystem")]);
    assert!(out.contains("ElementName=\"demo0\"") && out.contains("Mantle_HostSystem"), "{out}");
    let out = wbemcli(&["ain", "-ac", "CIM_SettingsDefineState", &vm]);
    assert!(out.contains("Mantle_VirtualSystemSettingData.InstanceID=\"Mantle:1\""), "{out}");
    let out = wbemcli(&["ei", &format!("{u}/root/nowhere:CIM_ComputerSystem")]);
    assert!(out.contains("(3)"), "{out}");
    let out = wbemcli(&["ei", &format!("http://root:wrong@localhost:{}/root/cimv2:CIM_ComputerSystem", b.http)]);
    assert!(out.contains("Invalid username/password"), "{out}");
    let out = wbemcli(&["ei", &format!("http://localhost:{}/root/cimv2:CIM_ComputerSystem", b.http)]);
    assert!(out.contains("Username/password required"), "{out}");
}

/// A raw HTTP/1.1 exchange: returns (status, headers, body).
fn exchange(stream: &mut TcpStream, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    stream.write_all(request).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line.split_whitespace().nth(1).unwrap_or_else(|| panic!("status line {status_line:?}")).parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn post(method_hdr: &str, object_hdr: &str, body: &str, auth: Option<&str>, extra: &str) -> Vec<u8> {
    let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    format!(
        "POST /cimom HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml; charset=\"utf-8\"\r\nCIMOperation: MethodCall\r\nCIMMethod: {method_hdr}\r\nCIMObject: {object_hdr}\r\n{auth}{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const ROOT: &str = "cm9vdDpzZWNyZXQ="; // root:secret
const ENUM_NAMES: &str = r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstanceNames"><LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/></LOCALNAMESPACEPATH><IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="CIM_ComputerSystem"/></IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"#;

fn cim_error(h: &[(String, String)]) -> Option<&str> {
    h.iter().find(|(k, _)| k == "cimerror").map(|(_, v)| v.as_str())
}

#[test]
fn negative_http_cases_keep_the_broker_serving() {
    let mut b = BrokerProcess::start("negative", &["--max-body", "100000"]);
    let mut s = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A good request, then more on the same keep-alive connection.
    let (st, h, body) = exchange(&mut s, &post("EnumerateInstanceNames", "root%2Fcimv2", ENUM_NAMES, Some(ROOT), ""));
    assert_eq!(st, 200);
    assert!(h.iter().any(|(k, v)| k == "content-type" && v.starts_with("application/xml")));
    assert!(h.iter().any(|(k, v)| k == "cimoperation" && v == "MethodResponse"));
    assert!(String::from_utf8_lossy(&body).contains("<IMETHODRESPONSE NAME=\"EnumerateInstanceNames\">"));
    // No credentials, wrong credentials.
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, None, ""));
    assert_eq!(st, 401);
    assert!(h.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("Basic realm=")));
    let (st, _, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some("cm9vdDp3cm9uZw=="), ""));
    assert_eq!(st, 401);
    // A disabled account: 403.
    let (st, _, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some("b2xkOm9sZHNlY3JldA=="), ""));
    assert_eq!(st, 403);
    // Header/body mismatches.
    let (st, h, _) = exchange(&mut s, &post("GetClass", "root/cimv2", ENUM_NAMES, Some(ROOT), ""));
    assert_eq!((st, cim_error(&h)), (400, Some("header-mismatch")));
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/interop", ENUM_NAMES, Some(ROOT), ""));
    assert_eq!((st, cim_error(&h)), (400, Some("header-mismatch")));
    // Malformed XML, an entity bomb, 10,000-deep nesting.
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", &ENUM_NAMES[..200], Some(ROOT), ""));
    assert_eq!((st, cim_error(&h)), (400, Some("request-not-well-formed")));
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE CIM [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]><CIM CIMVERSION="2.0" DTDVERSION="2.0">&d;</CIM>"#;
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", bomb, Some(ROOT), ""));
    assert_eq!((st, cim_error(&h)), (400, Some("request-not-valid")));
    let deep = format!("<CIM CIMVERSION=\"2.0\" DTDVERSION=\"2.0\">{}{}</CIM>", "<A>".repeat(10_000), "</A>".repeat(10_000));
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", &deep, Some(ROOT), ""));
    assert_eq!((st, cim_error(&h)), (400, Some("request-not-valid")));
    // Unsupported protocol version and batches.
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some(ROOT), "CIMProtocolVersion: 2.0\r\n"));
    assert_eq!((st, cim_error(&h)), (501, Some("unsupported-protocol-version")));
    let (st, h, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some(ROOT), "CIMBatch: \r\n"));
    assert_eq!((st, cim_error(&h)), (501, Some("multiple-requests-unsupported")));
    // Wrong namespace is a CIM error: 200 + ERROR CODE 3.
    let wrong_ns = ENUM_NAMES.replace("cimv2", "nowhere");
    let (st, _, body) = exchange(&mut s, &post("EnumerateInstanceNames", "root/nowhere", &wrong_ns, Some(ROOT), ""));
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("<ERROR CODE=\"3\""));
    // M-POST gets 405, GET 501.
    let (st, _, _) = exchange(&mut s, b"M-POST /cimom HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(st, 405);
    let (st, _, _) = exchange(&mut s, b"GET /cimom HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(st, 501);
    // Over the body limit: 413 (the connection may then close).
    let (st, _, _) = exchange(&mut s, format!("POST /cimom HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {ROOT}\r\nContent-Type: application/xml\r\nCIMOperation: MethodCall\r\nCIMMethod: GetClass\r\nCIMObject: root/cimv2\r\nContent-Length: 200000\r\n\r\n").as_bytes());
    assert_eq!(st, 413);
    // The broker still serves.
    assert!(b.alive());
    let mut s2 = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
    s2.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (st, _, _) = exchange(&mut s2, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some(ROOT), ""));
    assert_eq!(st, 200);
}

/// Reads a chunked body and its trailers after the headers.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> (Vec<u8>, Vec<(String, String)>) {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).unwrap();
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap(), 16).unwrap();
        if n == 0 {
            break;
        }
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).unwrap();
        body.extend_from_slice(&chunk[..n]);
    }
    let mut trailers = Vec::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    (body, trailers)
}

#[test]
fn chunked_responses_carry_the_status_trailer() {
    let b = BrokerProcess::start("chunked", &[]);
    let s = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for (ns, code) in [("cimv2", "0"), ("nowhere", "3")] {
        let body = ENUM_NAMES.replace("cimv2", ns);
        w.write_all(&post("EnumerateInstanceNames", &format!("root/{ns}"), &body, Some(ROOT), "TE: trailers\r\n")).unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            reader.read_line(&mut l).unwrap();
            let l = l.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            headers.push(l);
        }
        assert!(headers.iter().any(|h| h == "transfer-encoding: chunked"), "{headers:?}");
        assert!(headers.iter().any(|h| h.starts_with("trailer:") && h.contains("cimstatuscode")), "{headers:?}");
        let (body, trailers) = read_chunked(&mut reader);
        assert!(String::from_utf8_lossy(&body).contains("</CIM>"));
        assert!(trailers.iter().any(|(k, v)| k == "cimstatuscode" && v == code), "{trailers:?}");
    }
}

#[test]
fn connection_limit_refuses_extra_connections() {
    let b = BrokerProcess::start("connlimit", &["--max-connections", "2"]);
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (st, _, _) = exchange(&mut s, &post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some(ROOT), ""));
        assert_eq!(st, 200);
        held.push(s);
    }
    let mut third = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = String::new();
    let _ = third.read_to_string(&mut buf);
    assert!(buf.starts_with("HTTP/1.1 503"), "{buf:?}");
    drop(held.pop());
    // The freed slot is usable again (the broker notices the close asynchronously).
    let mut ok = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let mut s = TcpStream::connect(("127.0.0.1", b.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = post("EnumerateInstanceNames", "root/cimv2", ENUM_NAMES, Some(ROOT), "");
        if s.write_all(&req).is_err() {
            continue;
        }
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("HTTP/1.1 200") {
            ok = true;
            break;
        }
    }
    assert!(ok, "a connection slot was not released");
}
