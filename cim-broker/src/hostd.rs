//! The hostd back end: the broker's [`Authenticator`] and [`VirtBackend`] over hostd's
//! REST API (JSON over HTTPS, normally on loopback), so hostd stays the single owner of
//! the accounts and the VM inventory.
//!
//! Each WBEM client's Basic credentials are checked by logging in to hostd
//! (`POST /api/session`); the session (hostd's bearer token and the user's role) is
//! cached, keyed by a keyed hash of the credentials, until it expires, so the
//! deliberately slow password hash runs once per user and period, not per request.
//! Every later call to hostd carries that user's token: hostd authorizes each change
//! as that user (and audits it under their name). Reads are cached briefly and shared
//! between users (every role may read the whole inventory); any change made through
//! the broker drops that cache.

use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::backend::{
    BackendError, BootImage, DeviceRef, DiskInfo, HostInfo, JobInfo, JobState, NicInfo, Outcome, PowerAction,
    PowerState, VirtBackend, VmChange, VmInfo, VmSpec,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How to reach hostd and how long to keep what it said.
#[derive(Clone, Debug)]
pub struct HostdConfig {
    /// Base URL, e.g. `https://127.0.0.1:443`.
    pub url: String,
    /// PEM certificate(s) to trust for hostd's TLS (its host certificate).
    pub ca_pem: Vec<u8>,
    /// Longest time a login is reused (shortened to half hostd's idle timeout).
    pub session_ttl: Duration,
    /// How long inventory reads are reused (zero: every request asks hostd).
    pub read_ttl: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl HostdConfig {
    pub fn new(url: impl Into<String>, ca_pem: Vec<u8>) -> HostdConfig {
        HostdConfig {
            url: url.into(),
            ca_pem,
            session_ttl: Duration::from_secs(300),
            read_ttl: Duration::from_millis(1000),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A cached login.
struct Session {
    /// HMAC of `user \0 password` under the broker's random per-process key: the
    /// password itself is never kept.
    tag: ring::hmac::Tag,
    token: String,
    role: Role,
    expires: Instant,
}

/// What a read returned, and when.
struct Cached<T> {
    at: Instant,
    value: T,
}

#[derive(Default)]
struct ReadCache {
    host: Option<Cached<HostInfo>>,
    vms: Option<Cached<Vec<VmInfo>>>,
    jobs: Option<Cached<Vec<JobInfo>>>,
}

/// The hostd client, shared by the authenticator and the back end.
pub struct HostdClient {
    agent: ureq::Agent,
    base: String,
    cfg: HostdConfig,
    key: ring::hmac::Key,
    sessions: Mutex<HashMap<String, Session>>,
    /// Serialises logins, so a burst of requests by one new user logs in once.
    login_lock: Mutex<()>,
    cache: Mutex<ReadCache>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An HTTP answer from hostd.
struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json<T: for<'de> Deserialize<'de>>(&self) -> Result<T, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| BackendError::Failed(format!("hostd sent unexpected JSON: {e}")))
    }

    /// hostd's `{"code","message"}` error text.
    fn message(&self) -> String {
        serde_json::from_slice::<Json>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Json::as_str).map(str::to_string))
            .unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

// hostd's JSON, read leniently: only the fields the broker uses, unknown ones ignored.

#[derive(Deserialize)]
struct LoginReply {
    token: String,
    role: String,
    #[serde(default)]
    idle_timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
struct HostReply {
    hostname: String,
    cpus: u32,
    memory_mib: u64,
    #[serde(default)]
    datastores: Vec<DatastoreReply>,
}

#[derive(Deserialize)]
struct DatastoreReply {
    #[serde(default)]
    capacity_bytes: Option<u64>,
}

#[derive(Deserialize)]
struct VmReply {
    name: String,
    #[serde(default)]
    vmx_path: String,
    power_state: String,
    #[serde(default)]
    config: Option<VmConfigReply>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct VmConfigReply {
    memory_mib: u64,
    vcpus: u32,
    kernel: String,
    format: String,
    cmdline: String,
    disks: Vec<DiskReply>,
    nics: Vec<NicReply>,
    annotation: String,
}

#[derive(Deserialize, Clone, Default)]
#[serde(default)]
struct DiskReply {
    file: String,
}

#[derive(Deserialize, Clone, Default)]
#[serde(default)]
struct NicReply {
    network: String,
    mac: String,
    model: String,
}

#[derive(Deserialize)]
struct TaskReply {
    id: u64,
    kind: String,
    #[serde(default)]
    target: String,
    state: String,
    #[serde(default)]
    progress: u16,
    #[serde(default)]
    error: Option<String>,
}

/// hostd's VM names: letters, digits, `-`, `_`, `.` (so they go into URLs as they are).
fn valid_vm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn vm_url_name(name: &str) -> Result<&str, BackendError> {
    if valid_vm_name(name) { Ok(name) } else { Err(BackendError::NotFound(format!("no VM {name:?}"))) }
}

impl HostdClient {
    pub fn new(cfg: HostdConfig) -> Result<Arc<HostdClient>, String> {
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(&cfg.ca_pem) {
            if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| format!("hostd certificate: {e}"))? {
                roots.push(c);
            }
        }
        if roots.is_empty() {
            return Err("hostd certificate: no certificate in the PEM data".into());
        }
        // ring, as for the broker's own TLS (see http::tls_acceptor).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(provider)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(cfg.timeout))
            .max_idle_connections_per_host(32)
            .user_agent(format!("mantle-cim-broker/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).map_err(|_| "no random numbers for the session key".to_string())?;
        Ok(Arc::new(HostdClient {
            agent: ureq::Agent::new_with_config(config),
            base: cfg.url.trim_end_matches('/').to_string(),
            cfg,
            key,
            sessions: Mutex::new(HashMap::new()),
            login_lock: Mutex::new(()),
            cache: Mutex::new(ReadCache::default()),
        }))
    }

    /// One request to hostd. `token`: the caller's session.
    fn request(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Json>) -> Result<Reply, BackendError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| BackendError::Failed(format!("hostd ({}): {e}", self.base));
        let auth = token.map(|t| format!("Bearer {t}"));
        macro_rules! with_auth {
            ($b:expr) => {{
                let b = $b;
                match &auth {
                    Some(a) => b.header("Authorization", a.as_str()),
                    None => b,
                }
            }};
        }
        let payload = body.map(|b| b.to_string());
        let resp = match (method, payload) {
            ("GET", _) => with_auth!(self.agent.get(&url)).call(),
            ("DELETE", _) => with_auth!(self.agent.delete(&url)).call(),
            ("POST", p) => with_auth!(self.agent.post(&url)).content_type("application/json").send(p.unwrap_or_else(|| "{}".into())),
            ("PATCH", p) => with_auth!(self.agent.patch(&url)).content_type("application/json").send(p.unwrap_or_else(|| "{}".into())),
            (m, _) => return Err(BackendError::Failed(format!("unsupported method {m}"))),
        };
        let mut resp = resp.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(16 << 20).read_to_vec().map_err(unreachable)?;
        Ok(Reply { status, body })
    }

    /// A request as `who`, with hostd's error statuses mapped to back-end errors.
    fn call(&self, who: &Principal, method: &str, path: &str, body: Option<&Json>) -> Result<Reply, BackendError> {
        let token = who
            .session
            .as_deref()
            .ok_or_else(|| BackendError::AccessDenied(format!("{} has no hostd session", who.user)))?;
        let r = self.request(method, path, Some(token), body)?;
        match r.status {
            200..=299 => Ok(r),
            400 | 413 => Err(BackendError::InvalidParameter(r.message())),
            401 => {
                // hostd ended the session (expired, password or role changed, user
                // removed): forget it, so the next request logs in again.
                lock(&self.sessions).retain(|_, s| s.token != token);
                Err(BackendError::AccessDenied(format!("hostd ended the session of {}; authenticate again", who.user)))
            }
            403 => Err(BackendError::AccessDenied(r.message())),
            404 => Err(BackendError::NotFound(r.message())),
            409 => Err(BackendError::InvalidState(r.message())),
            _ => Err(BackendError::Failed(r.message())),
        }
    }

    fn credential_tag(&self, user: &str, password: &str) -> ring::hmac::Tag {
        let mut ctx = ring::hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(b"\0");
        ctx.update(password.as_bytes());
        ctx.sign()
    }

    fn cached_session(&self, user: &str, password: &str) -> Option<Principal> {
        let sessions = lock(&self.sessions);
        let s = sessions.get(user)?;
        let mut msg = Vec::with_capacity(user.len() + 1 + password.len());
        msg.extend_from_slice(user.as_bytes());
        msg.push(0);
        msg.extend_from_slice(password.as_bytes());
        // verify() compares in constant time.
        if s.expires > Instant::now() && ring::hmac::verify(&self.key, &msg, s.tag.as_ref()).is_ok() {
            Some(Principal { user: user.to_string(), role: s.role, session: Some(s.token.clone()) })
        } else {
            None
        }
    }

    /// Checks credentials with hostd (or its cached session for them).
    pub fn login(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        if let Some(p) = self.cached_session(user, password) {
            return Ok(p);
        }
        let _one_at_a_time = lock(&self.login_lock);
        if let Some(p) = self.cached_session(user, password) {
            return Ok(p);
        }
        let body = json!({ "username": user, "password": password });
        let r = self.request("POST", "/api/session", None, Some(&body)).map_err(|e| AuthError::Unavailable(e.to_string()))?;
        match r.status {
            200 => {}
            400 | 401 => return Err(AuthError::BadCredentials),
            // Locked after repeated failures.
            403 => return Err(AuthError::Forbidden),
            _ => return Err(AuthError::Unavailable(r.message())),
        }
        let reply: LoginReply = r.json().map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let role = Role::parse(&reply.role).ok_or_else(|| AuthError::Unavailable(format!("hostd role {:?}", reply.role)))?;
        let mut ttl = self.cfg.session_ttl;
        if let Some(idle) = reply.idle_timeout_secs {
            ttl = ttl.min(Duration::from_secs(idle / 2).max(Duration::from_secs(1)));
        }
        let session = Session { tag: self.credential_tag(user, password), token: reply.token.clone(), role, expires: Instant::now() + ttl };
        let old = lock(&self.sessions).insert(user.to_string(), session);
        if let Some(old) = old {
            // Best effort: end the replaced session at hostd rather than let it idle out.
            let _ = self.request("DELETE", "/api/session", Some(&old.token), None);
        }
        Ok(Principal { user: user.to_string(), role, session: Some(reply.token) })
    }

    fn fresh<T: Clone>(&self, c: &Option<Cached<T>>) -> Option<T> {
        c.as_ref().filter(|c| c.at.elapsed() < self.cfg.read_ttl).map(|c| c.value.clone())
    }

    fn invalidate(&self) {
        let mut c = lock(&self.cache);
        c.vms = None;
        c.jobs = None;
    }

    fn fetch_vms(&self, who: &Principal) -> Result<Vec<VmReply>, BackendError> {
        self.call(who, "GET", "/api/vms", None)?.json()
    }

    fn fetch_vm(&self, who: &Principal, name: &str) -> Result<VmReply, BackendError> {
        self.call(who, "GET", &format!("/api/vms/{}", vm_url_name(name)?), None)?.json()
    }
}

fn vm_info(v: VmReply) -> VmInfo {
    let state = match v.power_state.as_str() {
        "poweredOn" => PowerState::Running,
        "poweredOff" => PowerState::Off,
        "paused" => PowerState::Paused,
        _ => PowerState::Unknown,
    };
    let c = v.config.unwrap_or_default();
    // Disk files may be relative to the VM's directory: show them as host paths.
    let dir = v.vmx_path.rsplit_once('/').map(|(d, _)| d.to_string()).unwrap_or_default();
    let disks = c
        .disks
        .iter()
        .map(|d| DiskInfo {
            path: if d.file.starts_with('/') || dir.is_empty() { d.file.clone() } else { format!("{dir}/{}", d.file) },
            capacity_mib: 0,
        })
        .collect();
    let nics = c.nics.iter().map(|n| NicInfo { mac: n.mac.clone(), network: n.network.clone() }).collect();
    VmInfo {
        id: v.name.clone(),
        name: v.name,
        vcpus: c.vcpus,
        memory_mib: c.memory_mib,
        state,
        disks,
        nics,
        notes: c.annotation,
        boot: BootImage { kernel: c.kernel, format: c.format, cmdline: c.cmdline },
        config_file: v.vmx_path,
    }
}

fn disk_json(d: &DiskInfo) -> Json {
    let mut o = json!({ "file": d.path });
    if d.capacity_mib > 0 {
        o["size_mib"] = json!(d.capacity_mib);
    }
    o
}

fn nic_json(n: &NicInfo) -> Json {
    let network = if n.network.is_empty() { "VM Network" } else { n.network.as_str() };
    json!({ "network": network, "mac": n.mac })
}

fn u32_of(v: u64, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| BackendError::InvalidParameter(format!("{what} {v} out of range")))
}

/// The authenticator half: Basic credentials checked by hostd.
pub struct HostdAuth(pub Arc<HostdClient>);

impl Authenticator for HostdAuth {
    fn authenticate(&self, user: &str, password: &str) -> Result<Principal, AuthError> {
        self.0.login(user, password)
    }

    fn authenticate_cached(&self, user: &str, password: &str) -> Option<Principal> {
        self.0.cached_session(user, password)
    }
}

/// The back-end half: the inventory and lifecycle through hostd's API.
pub struct HostdBackend(pub Arc<HostdClient>);

impl VirtBackend for HostdBackend {
    fn host(&self, who: &Principal) -> Result<HostInfo, BackendError> {
        let c = &self.0;
        if let Some(h) = c.fresh(&lock(&c.cache).host) {
            return Ok(h);
        }
        let r: HostReply = c.call(who, "GET", "/api/host", None)?.json()?;
        let storage_mib = r.datastores.iter().filter_map(|d| d.capacity_bytes).sum::<u64>() >> 20;
        let host = HostInfo { hostname: r.hostname, cpus: r.cpus, memory_mib: r.memory_mib, storage_mib };
        lock(&c.cache).host = Some(Cached { at: Instant::now(), value: host.clone() });
        Ok(host)
    }

    fn list_vms(&self, who: &Principal) -> Result<Vec<VmInfo>, BackendError> {
        let c = &self.0;
        if let Some(v) = c.fresh(&lock(&c.cache).vms) {
            return Ok(v);
        }
        let vms: Vec<VmInfo> = c.fetch_vms(who)?.into_iter().map(vm_info).collect();
        lock(&c.cache).vms = Some(Cached { at: Instant::now(), value: vms.clone() });
        Ok(vms)
    }

    fn define_vm(&self, who: &Principal, spec: VmSpec) -> Result<VmInfo, BackendError> {
        if !valid_vm_name(&spec.name) {
            return Err(BackendError::InvalidParameter(format!(
                "VM name {:?}: 1 to 80 letters, digits, '-', '_' or '.', not starting with '.'",
                spec.name
            )));
        }
        if spec.boot.kernel.is_empty() {
            return Err(BackendError::InvalidParameter("KernelFile (the guest kernel to boot) is required".into()));
        }
        let mut body = json!({
            "name": spec.name,
            "memory_mib": u32_of(spec.memory_mib, "memory")?,
            "vcpus": spec.vcpus,
            "kernel": spec.boot.kernel,
            "cmdline": spec.boot.cmdline,
            "annotation": spec.notes,
            "disks": spec.disks.iter().map(disk_json).collect::<Vec<_>>(),
            "nics": spec.nics.iter().map(nic_json).collect::<Vec<_>>(),
        });
        if !spec.boot.format.is_empty() {
            body["format"] = json!(spec.boot.format);
        }
        let r = self.0.call(who, "POST", "/api/vms", Some(&body));
        self.0.invalidate();
        Ok(vm_info(r?.json()?))
    }

    fn destroy_vm(&self, who: &Principal, id: &str) -> Result<(), BackendError> {
        let r = self.0.call(who, "DELETE", &format!("/api/vms/{}", vm_url_name(id)?), None);
        self.0.invalidate();
        r.map(|_| ())
    }

    fn modify_vm(&self, who: &Principal, id: &str, change: VmChange) -> Result<VmInfo, BackendError> {
        let c = &self.0;
        let current = c.fetch_vm(who, id)?;
        if let Some(n) = &change.name
            && *n != current.name
        {
            return Err(BackendError::InvalidParameter("hostd does not rename VMs (the name is its directory on the datastore)".into()));
        }
        let cfg = current.config.unwrap_or_default();
        let mut patch = serde_json::Map::new();
        if let Some(m) = change.memory_mib {
            patch.insert("memory_mib".into(), json!(u32_of(m, "memory")?));
        }
        if let Some(v) = change.vcpus {
            patch.insert("vcpus".into(), json!(v));
        }
        if let Some(n) = change.notes {
            patch.insert("annotation".into(), json!(n));
        }
        if let Some(k) = change.kernel {
            patch.insert("kernel".into(), json!(k));
        }
        if let Some(f) = change.kernel_format {
            patch.insert("format".into(), json!(f));
        }
        if let Some(cl) = change.cmdline {
            patch.insert("cmdline".into(), json!(cl));
        }
        let devices_change = !change.remove.is_empty() || !change.add_disks.is_empty() || !change.add_nics.is_empty();
        if devices_change {
            let mut disks: Vec<Option<Json>> = cfg.disks.iter().map(|d| Some(json!({ "file": d.file }))).collect();
            let mut nics: Vec<Option<Json>> =
                cfg.nics.iter().map(|n| Some(json!({ "network": n.network, "mac": n.mac, "model": n.model }))).collect();
            for r in &change.remove {
                let slot = match *r {
                    DeviceRef::Disk(i) => disks.get_mut(i),
                    DeviceRef::Nic(i) => nics.get_mut(i),
                };
                match slot {
                    Some(s) => *s = None,
                    None => return Err(BackendError::NotFound(format!("{r:?} of {id}"))),
                }
            }
            let disks: Vec<Json> = disks.into_iter().flatten().chain(change.add_disks.iter().map(disk_json)).collect();
            let nics: Vec<Json> = nics.into_iter().flatten().chain(change.add_nics.iter().map(nic_json)).collect();
            patch.insert("disks".into(), Json::Array(disks));
            patch.insert("nics".into(), Json::Array(nics));
        }
        if patch.is_empty() {
            return c.fetch_vm(who, id).map(vm_info);
        }
        let r = c.call(who, "PATCH", &format!("/api/vms/{}", vm_url_name(id)?), Some(&Json::Object(patch)));
        c.invalidate();
        Ok(vm_info(r?.json()?))
    }

    fn power(&self, who: &Principal, id: &str, action: PowerAction) -> Result<Outcome, BackendError> {
        let c = &self.0;
        let action = match action {
            PowerAction::PowerOn => {
                // Enabling a paused VM resumes it.
                if c.fetch_vm(who, id)?.power_state == "paused" { "resume" } else { "on" }
            }
            PowerAction::PowerOff => "off",
            PowerAction::Shutdown => "shutdown",
            PowerAction::Pause => "pause",
            // hostd offers no guest-cooperative reboot: both are a hard reset.
            PowerAction::Reboot | PowerAction::Reset => "reset",
        };
        let r = c.call(who, "POST", &format!("/api/vms/{}/power", vm_url_name(id)?), Some(&json!({ "action": action })));
        c.invalidate();
        let task: TaskReply = r?.json()?;
        Ok(Outcome::Started(task.id.to_string()))
    }

    fn jobs(&self, who: &Principal) -> Result<Vec<JobInfo>, BackendError> {
        let c = &self.0;
        if let Some(j) = c.fresh(&lock(&c.cache).jobs) {
            return Ok(j);
        }
        let tasks: Vec<TaskReply> = c.call(who, "GET", "/api/tasks", None)?.json()?;
        let jobs: Vec<JobInfo> = tasks
            .into_iter()
            .map(|t| JobInfo {
                id: t.id.to_string(),
                vm_id: t.kind.starts_with("vm.").then(|| t.target.clone()).filter(|n| !n.is_empty()),
                description: format!("{} {}", t.kind, t.target),
                state: match t.state.as_str() {
                    "success" => JobState::Completed,
                    "error" => JobState::Failed,
                    "running" => JobState::Running,
                    _ => JobState::New,
                },
                percent_complete: t.progress.min(100),
                error: t.error,
            })
            .collect();
        lock(&c.cache).jobs = Some(Cached { at: Instant::now(), value: jobs.clone() });
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostd_vm_json_maps_to_the_inventory() {
        let v: VmReply = serde_json::from_value(json!({
            "name": "web01", "vmx_path": "/vmfs/volumes/ds1/web01/web01.vmx", "power_state": "paused",
            "config": {"name": "web01", "memory_mib": 64, "vcpus": 2, "kernel": "/k.bin", "format": "multiboot", "cmdline": "x",
                "disks": [{"file": "web01.img"}, {"file": "/vmfs/volumes/ds1/iso/a.img"}],
                "nics": [{"network": "VM Network", "mac": "00:50:56:00:00:01", "model": "virtio-net"}],
                "annotation": "note", "shares": 1000, "new_field": true},
            "kernel_id": 3, "busy_task": null
        }))
        .unwrap();
        let i = vm_info(v);
        assert_eq!((i.id.as_str(), i.vcpus, i.memory_mib, i.state), ("web01", 2, 64, PowerState::Paused));
        assert_eq!(i.disks[0].path, "/vmfs/volumes/ds1/web01/web01.img");
        assert_eq!(i.disks[1].path, "/vmfs/volumes/ds1/iso/a.img");
        assert_eq!(i.nics[0].network, "VM Network");
        assert_eq!((i.notes.as_str(), i.boot.kernel.as_str(), i.config_file.as_str()), ("note", "/k.bin", "/vmfs/volumes/ds1/web01/web01.vmx"));
        let unknown: VmReply = serde_json::from_value(json!({"name": "x", "power_state": "unknown", "config": null})).unwrap();
        assert_eq!(vm_info(unknown).state, PowerState::Unknown);
    }

    #[test]
    fn names_that_hostd_refuses_never_reach_a_url() {
        assert!(valid_vm_name("web-01.a_b"));
        for bad in ["", ".x", "a/b", "a b", "a?b", "../x", "a%2fb"] {
            assert!(!valid_vm_name(bad), "{bad}");
            assert!(matches!(vm_url_name(bad), Err(BackendError::NotFound(_))));
        }
    }

    #[test]
    fn credentials_are_matched_by_keyed_hash() {
        let pem = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem();
        let c = HostdClient::new(HostdConfig::new("https://127.0.0.1:1", pem.into_bytes())).unwrap();
        let tag = c.credential_tag("root", "secret");
        lock(&c.sessions).insert(
            "root".into(),
            Session { tag, token: "t1".into(), role: Role::Operator, expires: Instant::now() + Duration::from_secs(60) },
        );
        assert_eq!(c.cached_session("root", "secret").map(|p| (p.role, p.session)), Some((Role::Operator, Some("t1".into()))));
        assert!(c.cached_session("root", "secreT").is_none());
        assert!(c.cached_session("roo", "t\0secret").is_none());
        // Expired: not used.
        lock(&c.sessions).get_mut("root").unwrap().expires = Instant::now() - Duration::from_secs(1);
        assert!(c.cached_session("root", "secret").is_none());
        // No hostd listening: a clear "unavailable", not a crash or a pass.
        assert!(matches!(c.login("root", "secret"), Err(AuthError::Unavailable(_))));
    }
}
