//! A bounded HTTP fuzzer for hostd's REST API — the client side, used by
//! `tests/api.rs` (hostd on Linux with its fake VMkernel) and by the
//! `apifuzz` example (hostd on Mantle, from the image test). hostd itself
//! never calls it.
//!
//! From a seed it sends requests built from the API's own routes and then
//! mutated: random methods, paths (percent-encodings, `..`, long and
//! non-ASCII segments, query strings), headers (content types, lengths that
//! lie, chunked bodies, cookies with and without CSRF, bearer tokens good
//! and bad, WebSocket upgrades, long values), and bodies (JSON mutations of
//! valid requests — wrong types, huge numbers, deep nesting, unknown and
//! missing fields —, truncated and random bytes, bodies larger than the
//! limit), authenticated as an Administrator or not. Each answer must be a
//! complete HTTP response that is not a 5xx (501 `not_supported` and 503
//! `vmkernel_unavailable` are the API's own answers about the VMkernel),
//! and every error under `/api` must be JSON `{code, message}`. The caller
//! checks that hostd is still alive and printed no panic.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::{Value, json};

/// What to fuzz and how much.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// `host:port` to connect to.
    pub addr: String,
    /// The TLS server name (hostd's certificate names `localhost`).
    pub server_name: String,
    /// hostd's certificate (PEM), the only one trusted.
    pub cert_pem: Vec<u8>,
    /// An Administrator account for the authenticated requests.
    pub user: String,
    pub password: String,
    pub requests: usize,
    pub seed: u64,
    /// A kernel file on hostd's host for the VMs the fuzzer defines.
    pub kernel: String,
    /// The datastore the fuzzer's files and VMs go to.
    pub datastore: String,
    /// How long one answer may take.
    pub timeout: Duration,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct FuzzReport {
    pub sent: usize,
    /// Answers by status (0: the connection ended without one, which is
    /// allowed only for requests that break HTTP framing on purpose).
    pub statuses: BTreeMap<u16, usize>,
    /// Each broken promise: the request (seed, index, what) and the answer.
    pub failures: Vec<String>,
    /// The slowest answers: (milliseconds, request).
    pub slowest: Vec<(u64, String)>,
}

impl FuzzReport {
    pub fn summary(&self) -> String {
        let st: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s}:{n}")).collect();
        let slow: Vec<String> = self.slowest.iter().take(3).map(|(ms, r)| format!("{ms} ms: {}", &r[..r.len().min(120)])).collect();
        format!("{} requests; statuses {}; {} failures; slowest: {}", self.sent, st.join(" "), self.failures.len(), slow.join(" | "))
    }
}

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One request as sent.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of the body actually sent (fewer than declared: truncated).
    send_body: usize,
    /// The framing is broken on purpose: the server may close without answering.
    may_drop: bool,
    /// The body is larger than any limit: the server may answer before reading it and reset.
    huge: bool,
    /// After the request, say that nothing more comes (TLS close_notify and
    /// a TCP half-close): for bodies shorter than declared.
    half_close: bool,
    /// Sent with the fuzzer's valid session (bearer or cookie).
    uses_session: bool,
}

impl Request {
    fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned();
        let hs: Vec<String> = self.headers.iter().map(|(k, v)| format!("{k}: {}", &v[..v.len().min(60)])).collect();
        format!("{} {} [{}] body({} of {} bytes) {body:?}", self.method, &self.target[..self.target.len().min(200)], hs.join("; "), self.send_body, self.body.len())
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The server may keep the connection.
    reusable: bool,
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Client {
    tls: Arc<rustls::ClientConfig>,
    addr: String,
    name: ServerName<'static>,
    timeout: Duration,
    conn: Option<Tls>,
}

impl Client {
    fn connect(&mut self) -> io::Result<&mut Tls> {
        if self.conn.is_none() {
            let tcp = TcpStream::connect(&self.addr)?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(self.timeout))?;
            tcp.set_write_timeout(Some(self.timeout))?;
            let c = rustls::ClientConnection::new(Arc::clone(&self.tls), self.name.clone()).map_err(io::Error::other)?;
            self.conn = Some(rustls::StreamOwned::new(c, tcp));
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// Sends one request; `Ok(None)`: the connection ended without an
    /// answer. A kept-alive connection that the server closed meanwhile
    /// (allowed at any time) is retried once on a new one, as HTTP clients do.
    fn send(&mut self, r: &Request) -> io::Result<Option<Answer>> {
        let reused = self.conn.is_some();
        match self.send_once(r) {
            Ok(None) if reused => self.send_once(r),
            Err(_) if reused => self.send_once(r),
            a => a,
        }
    }

    fn send_once(&mut self, r: &Request) -> io::Result<Option<Answer>> {
        let mut head = format!("{} {} HTTP/1.1\r\n", r.method, r.target).into_bytes();
        for (k, v) in &r.headers {
            head.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let s = self.connect()?;
        let mut wrote = s.write_all(&head).and_then(|_| s.write_all(&r.body[..r.send_body])).and_then(|_| s.flush());
        if wrote.is_ok() && r.half_close {
            // Truncated: say that nothing more comes.
            s.conn.send_close_notify();
            wrote = s.flush().and_then(|_| s.sock.shutdown(std::net::Shutdown::Write));
        }
        let answer = read_answer(s, &r.method);
        let answer = match (answer, wrote) {
            (Ok(a), _) => Some(a),
            // The server answered early (413) and closed while the body was still going out.
            (Err(_), Err(_)) if r.huge => None,
            (Err(e), _) if matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe) => {
                self.conn = None;
                None
            }
            (Err(e), _) => {
                self.conn = None;
                return Err(e);
            }
        };
        if answer.as_ref().is_none_or(|a| !a.reusable) || r.half_close {
            self.conn = None;
        }
        Ok(answer)
    }
}

fn find(h: &[u8], what: &[u8]) -> Option<usize> {
    h.windows(what.len()).position(|w| w == what)
}

fn read_answer(s: &mut Tls, method: &str) -> io::Result<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            // An interim answer (100 Continue): the real one follows.
            if buf.starts_with(b"HTTP/1.1 1") && !buf.starts_with(b"HTTP/1.1 101") {
                buf.drain(..i + 4);
                continue;
            }
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Err(io::Error::other("a response head larger than 1 MiB"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut body = buf[head_end..].to_vec();
    let close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let no_body = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let mut reusable = !close && status != 101;
    if no_body {
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Read until the last chunk, then decode.
        while find(&body, b"0\r\n\r\n").is_none_or(|i| i != 0 && body[i - 1] != b'\n') {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = find(rest, b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let data = &rest[eol + 2..];
            out.extend_from_slice(&data[..size.min(data.len())]);
            rest = &data[(size + 2).min(data.len())..];
        }
        body = out;
    } else {
        reusable = false;
        if status != 101 {
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => body.extend_from_slice(&chunk[..n]),
                    Err(e) if body.is_empty() => return Err(e),
                    Err(_) => break,
                }
            }
        }
    }
    Ok(Answer { status, headers, body, reusable })
}

// ---- the requests ----

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FUZZ", "get", "CONNECT"];
/// VM names: the fuzzer's own (never the caller's VMs) and bad ones.
const VMS: &[&str] = &["fz1", "fz2", "fzclone", "nosuchvm", "..", "%2e%2e", "a%2fb", "%00", "fz1%20", "\u{e9}t\u{e9}", ""];
const USERS: &[&str] = &["fzuser", "fzop", "nosuchuser", "..", "%00", "-x", ".hidden", "x%2fy"];
const FILE_PATHS: &[&str] =
    &["fz/a.txt", "fz", "", "/", "..", "../..", "fz/../../etc/passwd", ".mantle/hostd/users.json", "fz/x.vmx", "%00", "fz/%2e%2e/b", "a//b", "fz/\u{e9}.bin"];
const TYPES: &[&str] = &["application/json", "text/plain", "application/json; charset=utf-16", "application/octet-stream", "multipart/form-data; boundary=x", "", "*/*", "application/jsonx"];

/// The API's operations with a valid body where they take one.
fn template(rng: &mut Rng, o: &FuzzOptions) -> (&'static str, String, Option<Value>) {
    let vm = *rng.pick(VMS);
    let ds = if rng.chance(90) { o.datastore.as_str() } else { *rng.pick(&["nosuchds", "..", "%2e", ""]) };
    let file = *rng.pick(FILE_PATHS);
    let user = *rng.pick(USERS);
    let action = *rng.pick(&["on", "off", "reset", "shutdown", "pause", "resume"]);
    let create = json!({"name": vm, "datastore": o.datastore, "memory_mib": 4, "vcpus": 1, "kernel": o.kernel,
        "cmdline": "console=ttyS0", "disks": [{"file": format!("{vm}.img"), "size_mib": 1}], "nics": [{"network": "VM Network"}],
        "shares": 1000, "reservation_pct": 0, "annotation": "fuzz"});
    match rng.below(30) {
        0 => ("POST", "/api/session".into(), Some(json!({"username": "fzuser", "password": "not-the-password-1"}))),
        1 => ("GET", "/api/session".into(), None),
        2 => ("GET", "/api/host".into(), None),
        3 => ("GET", "/api/host/stats".into(), None),
        4 => ("GET", "/api/datastores".into(), None),
        5 => ("GET", format!("/api/datastores/{ds}/browse?path={file}"), None),
        6 => ("GET", format!("/api/datastores/{ds}/file?path={file}"), None),
        7 => ("PUT", format!("/api/datastores/{ds}/file?path={file}&overwrite={}", rng.chance(50)), None),
        8 => ("DELETE", format!("/api/datastores/{ds}/file?path={file}"), None),
        9 | 10 => ("GET", "/api/vms".into(), None),
        11 | 12 => ("POST", "/api/vms".into(), Some(create)),
        13 => ("GET", format!("/api/vms/{vm}"), None),
        14 => ("PATCH", format!("/api/vms/{vm}"), Some(json!({"memory_mib": 8, "vcpus": 1, "shares": 500, "annotation": "patched", "limit_pct": 50}))),
        15 => ("DELETE", format!("/api/vms/{vm}"), None),
        16 => ("POST", format!("/api/vms/{vm}/unregister"), None),
        17 => ("POST", "/api/inventory/register".into(), Some(json!({"vmx_path": format!("/vmfs/volumes/{}/{vm}/{vm}.vmx", o.datastore)}))),
        18 | 19 => ("POST", format!("/api/vms/{vm}/power"), Some(json!({"action": action}))),
        20 => ("POST", format!("/api/vms/{vm}/clone"), Some(json!({"name": "fzclone", "linked": rng.chance(50)}))),
        21 => ("GET", format!("/api/vms/{vm}/stats"), None),
        22 => ("GET", format!("/api/vms/{vm}/console"), None),
        23 => ("GET", format!("/api/tasks/{}", rng.pick(&["1", "0", "99999999", "-1", "x", "18446744073709551616"])), None),
        24 => ("GET", format!("/api/{}?after={}&limit={}", rng.pick(&["events", "audit", "tasks"]), rng.pick(&["0", "5", "-1", "x", "99999999999999999999"]), rng.pick(&["1", "1000", "0", "-5", "1e9"])), None),
        25 => ("POST", "/api/users".into(), Some(json!({"name": user, "password": "Fuzz-password-1", "role": rng.pick(&["ReadOnly", "Operator", "Administrator"])}))),
        26 => ("PATCH", format!("/api/users/{user}"), Some(json!({"role": rng.pick(&["ReadOnly", "Operator"])}))),
        27 => ("DELETE", format!("/api/users/{user}"), None),
        28 => ("GET", rng.pick(&["/api/users", "/api/roles", "/api/openapi.json"]).to_string(), None),
        _ => ("GET", rng.pick(&["/", "/index.html", "/assets/none.js", "/api", "/api/", "/api/nothing", "//api/vms", "/api/vms/", "/%2e%2e/etc/passwd"]).to_string(), None),
    }
}

/// A JSON value of a random kind.
fn random_value(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 2 { 12 } else { 15 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(*rng.pick(&[0i64, -1, 1, 2, 255, 256, 65535, 65536, i64::from(u32::MAX), i64::from(u32::MAX) + 1, i64::MAX, i64::MIN])),
        3 => json!(u64::MAX),
        4 => json!(*rng.pick(&[0.5f64, -0.0, 1e308, -1e-308, 3.0])),
        5 => json!(""),
        6 => json!("x".repeat(*rng.pick(&[1usize, 33, 255, 4096, 70_000]))),
        7 => json!(*rng.pick(&["../../etc/passwd", "/etc/shadow", "a\u{0}b", "\u{1F600}", "VM Network", "on", "qcow2", "raw", "linux", "Administrator", "%s%n", "' OR 1=1", "\\"])),
        8 => json!(format!("/vmfs/volumes/{}", "..".repeat(rng.below(4)))),
        9 => {
            // Deep nesting (past serde_json's recursion limit sometimes).
            let n = *rng.pick(&[10usize, 127, 129, 1000]);
            serde_json::from_str(&format!("{}{}", "[".repeat(n), "]".repeat(n))).unwrap_or(Value::Null)
        }
        10 => json!(rng.next()),
        11 => json!(-(rng.below(1000) as i64)),
        12 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                let k = rng.pick(&["name", "file", "size_mib", "network", "mac", "format", "readonly", "action", "x", ""]).to_string();
                m.insert(k, random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

/// Changes one place in a JSON document.
fn mutate_json(rng: &mut Rng, v: &mut Value, depth: u32) {
    match v {
        Value::Object(m) if !m.is_empty() && depth < 4 => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(5) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(rng.pick(&["unknown", "__proto__", "Name", "name ", "size_mib", "config.version"]).to_string(), random_value(rng, 0));
                }
                _ => mutate_json(rng, m.get_mut(&k).expect("a key of the map"), depth + 1),
            }
        }
        Value::Array(a) if !a.is_empty() && depth < 4 && rng.chance(70) => {
            let i = rng.below(a.len());
            match rng.below(4) {
                0 => {
                    let x = a[i].clone();
                    a.extend(std::iter::repeat_n(x, *rng.pick(&[1usize, 8, 100])));
                }
                1 => {
                    a.remove(i);
                }
                _ => mutate_json(rng, &mut a[i], depth + 1),
            }
        }
        _ => *v = random_value(rng, depth),
    }
}

fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// Percent-encodes or otherwise disturbs one path.
fn mutate_target(rng: &mut Rng, t: &str) -> String {
    match rng.below(10) {
        0 => format!("{t}/"),
        1 => t.replacen('/', "//", 1 + rng.below(2)),
        2 => format!("{t}{}{}", if t.contains('?') { "&" } else { "?" }, rng.pick(&["=", "path", "path=%ff%fe", "after=-1&after=2", "limit=%00", "overwrite=maybe", "a=b=c", "&&&", "path=%", "path=%zz"])),
        3 => format!("{t}/{}", "a".repeat(*rng.pick(&[100usize, 5000, 70_000]))),
        4 => t.replace('a', "%61"),
        5 => format!("{t}%"),
        6 => t.replace("/api/", "/API/"),
        7 => format!("{t}#fragment"),
        8 => format!("{t}/\u{e9}\u{0}\u{7f}"),
        _ => format!("{}{t}", rng.pick(&["", "*", "http://evil.example", "/..", "/./"])),
    }
}

struct Session {
    token: String,
    csrf: String,
}

/// Builds one fuzzed request.
fn make(rng: &mut Rng, o: &FuzzOptions, s: &Session) -> Request {
    let (method, mut target, body) = template(rng, o);
    let mut method = method.to_string();
    if rng.chance(15) {
        method = rng.pick(METHODS).to_string();
    }
    if rng.chance(20) {
        target = mutate_target(rng, &target);
    }
    let mut may_drop = false;
    let mut huge = false;
    let mut body: Vec<u8> = match body {
        Some(mut v) => {
            if rng.chance(60) {
                for _ in 0..1 + rng.below(3) {
                    mutate_json(rng, &mut v, 0);
                }
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        None if method == "PUT" => b"fuzzed upload content\n".repeat(1 + rng.below(50)),
        None => Vec::new(),
    };
    match rng.below(20) {
        0 => body.truncate(rng.below(body.len() + 1)),
        1 => {
            let at = rng.below(body.len() + 1);
            let n = 1 + rng.below(16);
            let junk = random_bytes(rng, n);
            body.splice(at..at, junk);
        }
        2 => {
            let n = rng.below(2048);
            body = random_bytes(rng, n);
        }
        3 => {
            // Larger than the API's JSON limit (256 KiB) and any upload limit a test sets.
            body = format!("{{\"name\":\"{}\"}}", "x".repeat(300 * 1024 + rng.below(1 << 20))).into_bytes();
            huge = true;
        }
        4 => body = b"{\"a\":".repeat(1 + rng.below(5000)),
        _ => {}
    }
    let mut headers: Vec<(String, String)> = vec![("Host".into(), "localhost".into())];
    // Authentication: mostly the Administrator's bearer token.
    match rng.below(12) {
        0 => {}
        1 => headers.push(("Authorization".into(), "Bearer not-a-valid-token".into())),
        2 => headers.push(("Authorization".into(), rng.pick(&["Bearer", "Bearer ", "Basic cm9vdDpyb290", "bearer  x y", "\u{e9}"]).to_string())),
        3 => headers.push(("Cookie".into(), format!("hostd_session={}", s.token))),
        4 => {
            headers.push(("Cookie".into(), format!("a=b; hostd_session={}; c", s.token)));
            headers.push(("X-CSRF-Token".into(), if rng.chance(50) { s.csrf.clone() } else { "wrong".into() }));
        }
        _ => headers.push(("Authorization".into(), format!("Bearer {}", s.token))),
    }
    if !body.is_empty() || rng.chance(30) {
        let ct = *rng.pick(TYPES);
        let ct = if method == "PUT" && rng.chance(60) { "application/octet-stream" } else if rng.chance(60) { "application/json" } else { ct };
        if !ct.is_empty() {
            headers.push(("Content-Type".into(), ct.into()));
        }
    }
    let mut send_body = body.len();
    let mut half_close = false;
    match rng.below(25) {
        0 => {
            // Declares more than is sent: the body ends early.
            headers.push(("Content-Length".into(), (body.len() + 1 + rng.below(1000)).to_string()));
            may_drop = true;
            half_close = true;
        }
        1 => {
            headers.push(("Content-Length".into(), rng.pick(&["-1", "abc", "18446744073709551616", "1, 2", " 0x10"]).to_string()));
            may_drop = true;
        }
        2 => {
            // Chunked, well formed or not.
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            let mut c = Vec::new();
            for part in body.chunks(1 + rng.below(100)) {
                c.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                c.extend_from_slice(part);
                c.extend_from_slice(b"\r\n");
            }
            c.extend_from_slice(if rng.chance(70) { b"0\r\n\r\n" } else { b"zz\r\n" });
            may_drop = true;
            body = c;
            send_body = body.len();
        }
        3 => {
            headers.push(("Content-Length".into(), body.len().to_string()));
            headers.push(("Transfer-Encoding".into(), "chunked".into()));
            may_drop = true;
        }
        4 => {
            headers.push(("Content-Length".into(), body.len().to_string()));
            headers.push(("Content-Length".into(), (body.len() + 1).to_string()));
            may_drop = true;
        }
        _ => headers.push(("Content-Length".into(), body.len().to_string())),
    }
    if rng.chance(3) {
        // The body stops early and the connection is half-closed.
        send_body = rng.below(body.len() + 1);
        may_drop = true;
        half_close = true;
    }
    for _ in 0..rng.below(3) {
        let (k, v) = match rng.below(9) {
            0 => ("Connection", "Upgrade".to_string()),
            1 => ("Upgrade", "websocket".to_string()),
            2 => ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
            3 => ("Sec-WebSocket-Version", rng.pick(&["13", "8", "x"]).to_string()),
            4 => ("Origin", rng.pick(&["https://evil.example", "https://localhost", "null"]).to_string()),
            5 => ("Expect", "100-continue".to_string()),
            6 => ("X-Long", "v".repeat(*rng.pick(&[100usize, 8000, 70_000]))),
            7 => ("Accept", "*/*".to_string()),
            _ => ("X-Forwarded-For", "1.2.3.4".to_string()),
        };
        if k == "X-Long" || k == "Connection" {
            may_drop = true; // hyper refuses an oversized head or closes after an upgrade
        }
        headers.push((k.into(), v));
    }
    if method.chars().any(|c| !c.is_ascii_uppercase()) || target.contains(['\u{0}', '\u{7f}', '#', ' ']) || !target.is_ascii() || !target.starts_with('/') || target.len() > 8000 {
        may_drop = true;
    }
    let uses_session = headers.iter().any(|(_, v)| v.contains(&s.token));
    Request { method, target, headers, body, send_body, may_drop, huge, half_close, uses_session }
}

fn header<'a>(a: &'a Answer, k: &str) -> Option<&'a str> {
    a.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Whether an answer keeps the API's promises.
fn check(r: &Request, a: &Answer) -> Result<(), String> {
    let json: Option<Value> = serde_json::from_slice(&a.body).ok();
    let code = json.as_ref().and_then(|j| j["code"].as_str()).unwrap_or("");
    let allowed_5xx = (a.status == 501 && code == "not_supported") || (a.status == 503 && code == "vmkernel_unavailable");
    if a.status >= 500 && !allowed_5xx {
        return Err(format!("{} {}", a.status, String::from_utf8_lossy(&a.body[..a.body.len().min(400)])));
    }
    // hyper answers requests it cannot parse (broken framing, heads too
    // large) itself, with an empty 400, 414 or 431, before hostd sees them.
    let api = r.target.starts_with("/api") && !r.may_drop;
    if api && a.status >= 400 && r.method != "HEAD" {
        let j = json.as_ref();
        let ok = j.is_some_and(|j| j["code"].is_string() && j["message"].is_string()) && header(a, "content-type").is_some_and(|t| t.starts_with("application/json"));
        if !ok {
            return Err(format!("{}: an error that is not JSON {{code, message}}: {:?}", a.status, String::from_utf8_lossy(&a.body[..a.body.len().min(400)])));
        }
    }
    Ok(())
}

pub fn tls_config(pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    #[allow(deprecated)] // ring: as hostd itself (see server.rs)
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn plain(method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Request {
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default()).unwrap_or_default();
    let mut headers = vec![("Host".to_string(), "localhost".to_string()), ("Content-Length".to_string(), body.len().to_string())];
    if !body.is_empty() {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    if let Some(t) = token {
        headers.push(("Authorization".into(), format!("Bearer {t}")));
    }
    Request { method: method.into(), target: path.into(), headers, send_body: body.len(), body, may_drop: false, huge: false, half_close: false, uses_session: token.is_some() }
}

/// Logs in; `(status, body)` of the attempt.
fn login(c: &mut Client, user: &str, password: &str) -> Result<Session, String> {
    let a = c.send(&plain("POST", "/api/session", None, Some(&json!({"username": user, "password": password})))).map_err(|e| format!("login: {e}"))?;
    let a = a.ok_or("login: no answer")?;
    let j: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
    match (a.status, j["token"].as_str(), j["csrf_token"].as_str()) {
        (200, Some(t), Some(c)) => Ok(Session { token: t.into(), csrf: c.into() }),
        _ => Err(format!("login as {user}: {} {j}", a.status)),
    }
}

/// Runs the fuzzer: logs in, defines one VM of its own (`fz1`) so that
/// requests reach existing objects, then sends `o.requests` fuzzed requests.
/// Err: the setup failed, or hostd stopped answering altogether.
pub fn run(o: &FuzzOptions) -> Result<FuzzReport, String> {
    let name = ServerName::try_from(o.server_name.clone()).map_err(|e| format!("{}: {e}", o.server_name))?;
    let mut c = Client { tls: tls_config(&o.cert_pem)?, addr: o.addr.clone(), name, timeout: o.timeout, conn: None };
    let mut s = login(&mut c, &o.user, &o.password)?;
    let spec = json!({"name": "fz1", "datastore": o.datastore, "memory_mib": 4, "vcpus": 1, "kernel": o.kernel, "disks": [{"file": "fz1.img", "size_mib": 1}]});
    let _ = c.send(&plain("POST", "/api/vms", Some(&s.token), Some(&spec)));
    let mut rng = Rng(o.seed.max(1));
    let mut report = FuzzReport::default();
    let mut unanswered_in_a_row = 0;
    for i in 0..o.requests {
        let r = make(&mut rng, o, &s);
        report.sent += 1;
        let what = || format!("seed {} request {i}: {}", o.seed, r.describe());
        let t = std::time::Instant::now();
        let answer = c.send(&r);
        report.slowest.push((t.elapsed().as_millis() as u64, what()));
        report.slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
        report.slowest.truncate(5);
        match answer {
            Ok(Some(a)) => {
                unanswered_in_a_row = 0;
                *report.statuses.entry(a.status).or_default() += 1;
                if let Err(e) = check(&r, &a) {
                    report.failures.push(format!("{}\n  -> {e}", what()));
                }
                if a.status == 401 && r.uses_session {
                    // A fuzzed request logged the session out (DELETE /api/session): a new one.
                    s = login(&mut c, &o.user, &o.password)?;
                }
            }
            Ok(None) => {
                *report.statuses.entry(0).or_default() += 1;
                // hostd reads a whole body (up to its limit) before it
                // answers, so even a refused request with a body gets its
                // answer; only requests that break HTTP may go unanswered.
                if !(r.may_drop || r.huge) {
                    report.failures.push(format!("{}\n  -> the connection ended without an answer", what()));
                }
            }
            Err(e) => {
                *report.statuses.entry(0).or_default() += 1;
                unanswered_in_a_row += 1;
                if !r.may_drop {
                    report.failures.push(format!("{}\n  -> {e}", what()));
                }
                if unanswered_in_a_row >= 5 {
                    return Err(format!("hostd stopped answering: {}\n{}", report.summary(), report.failures.join("\n")));
                }
            }
        }
    }
    // Still serving: the session still works and a new login does too.
    let a = c.send(&plain("GET", "/api/vms", Some(&s.token), None)).map_err(|e| format!("GET /api/vms after the run: {e}"))?;
    match a {
        Some(a) if a.status == 200 => {}
        Some(a) => report.failures.push(format!("after the run: GET /api/vms: {} {}", a.status, String::from_utf8_lossy(&a.body))),
        None => report.failures.push("after the run: GET /api/vms: no answer".into()),
    }
    login(&mut c, &o.user, &o.password).map_err(|e| format!("after the run: {e}"))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_reproducible_from_the_seed() {
        let o = FuzzOptions {
            addr: String::new(),
            server_name: "localhost".into(),
            cert_pem: Vec::new(),
            user: "root".into(),
            password: String::new(),
            requests: 0,
            seed: 7,
            kernel: "/k".into(),
            datastore: "ds".into(),
            timeout: Duration::from_secs(1),
        };
        let s = Session { token: "t".into(), csrf: "c".into() };
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..200 {
            assert_eq!(make(&mut a, &o, &s).describe(), make(&mut b, &o, &s).describe());
        }
    }
}
