//! hostd's state: settings, the VM inventory, tasks, the event and audit
//! logs, and the operations on VMs. The HTTP layer (`api`) only translates.
//!
//! Inventory: `<config dir>/inventory.json` lists the registered VMs by
//! their `.vmx` path (`<datastore>/<vm>/<vm>.vmx`); the `.vmx` files are
//! the configurations (see [`crate::vmx`]). Both are replaced atomically.
//! A VM's power state is always the VMkernel's: hostd keeps none of its own,
//! so a hostd restart leaves running VMs alone and finds them again by name.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Accounts, Lockout, Sessions};
use crate::config_store::ConfigStore;
use crate::store::{self, JsonLog};
use crate::vmkernel::{KernelState, KernelVm, Resources, VmKernel};
use std::collections::HashMap;
use crate::vmx::{FieldError, HostLimits, VmConfig, VmConfigPatch, VmCreateSpec};

/// What hostd is told at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config store: accounts, inventory, logs, TLS certificate.
    pub config_dir: PathBuf,
    /// Every directory in here is a datastore (ESXi: /vmfs/volumes).
    pub volumes_dir: PathBuf,
    pub port_groups: Vec<String>,
    pub session_idle: Duration,
    pub lockout_after: u32,
    pub lockout_for: Duration,
    /// The built web client (index.html and its assets), if any.
    pub ui_dir: Option<PathBuf>,
    /// How often host and VM statistics are sampled.
    pub sample_period: Duration,
    /// Largest file a datastore upload may write.
    pub max_upload_bytes: u64,
}

/// An operation failed: why, in the API's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpError {
    /// Bad input; the field when one is to blame.
    Invalid(Option<String>, String),
    NotFound(String),
    Conflict(String),
    /// The VMkernel cannot do it (not on Mantle, or it refused).
    Unavailable(String),
    /// The VMkernel has no call for it.
    NotSupported(String),
    Internal(String),
}

impl From<FieldError> for OpError {
    fn from(e: FieldError) -> Self {
        OpError::Invalid(Some(e.field.clone()), e.to_string())
    }
}

/// A failed file operation: a full datastore is the client's conflict to
/// resolve (free space), anything else hostd's own failure.
fn internal(what: &str) -> impl Fn(io::Error) -> OpError + '_ {
    move |e| match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => OpError::Conflict(format!("{what}: {e} (free space on the datastore)")),
        _ => OpError::Internal(format!("{what}: {e}")),
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole agent down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A datastore: a directory under the volumes directory.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Datastore {
    pub name: String,
    pub path: String,
    pub capacity_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
}

/// A request to clone a powered-off VM.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneSpec {
    /// The new VM's name.
    pub name: String,
    /// Datastore for the new VM (default: the source's).
    #[serde(default)]
    pub datastore: Option<String>,
    /// A linked clone: each disk in the source's directory becomes a qcow2
    /// overlay on it (the source's disks must be qcow2). The source's disks
    /// are then the clones' base: the source cannot be powered on or
    /// destroyed while a linked clone uses them.
    #[serde(default)]
    pub linked: bool,
}

/// A VM in the inventory.
#[derive(Clone, Debug)]
pub struct VmEntry {
    pub name: String,
    pub vmx: PathBuf,
    pub config: Option<VmConfig>,
    /// Why the configuration could not be read.
    pub error: Option<String>,
    /// The task that is changing this VM now.
    pub busy: Option<u64>,
}

impl VmEntry {
    pub fn dir(&self) -> PathBuf {
        self.vmx.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
struct InventoryFile {
    version: u32,
    vms: Vec<InventoryItem>,
}

#[derive(Serialize, Deserialize)]
struct InventoryItem {
    name: String,
    vmx: PathBuf,
}

/// A VM as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmView {
    pub name: String,
    pub datastore: Option<String>,
    /// The `.vmx` file.
    pub vmx_path: String,
    /// `poweredOn`, `poweredOff`, `paused` or `unknown` (the VMkernel cannot be asked).
    pub power_state: String,
    /// Why the guest stopped by itself, if it did.
    pub exit_reason: Option<String>,
    /// The VMkernel's VM id while it has one.
    pub kernel_id: Option<u32>,
    pub config: Option<VmConfig>,
    /// Why the configuration file could not be read.
    pub config_error: Option<String>,
    /// The task changing this VM now.
    pub busy_task: Option<u64>,
    pub run_ns: Option<u64>,
    pub exits: Option<u64>,
}

/// A long operation.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Task {
    pub id: u64,
    /// e.g. `vm.powerOn`, `vm.create`.
    pub kind: String,
    /// The VM (or other object) it works on.
    pub target: String,
    pub user: String,
    /// `running`, `success` or `error`.
    pub state: String,
    /// Percent done.
    pub progress: u8,
    pub error: Option<String>,
    /// Unix seconds.
    pub started: u64,
    pub finished: Option<u64>,
}

/// Something that happened, kept in the persisted event log.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: u64,
    /// Unix seconds.
    pub time: u64,
    /// e.g. `vm.created`, `vm.poweredOn`, `user.loginFailed`.
    pub kind: String,
    pub vm: Option<String>,
    pub user: Option<String>,
    pub message: String,
}

/// One change request: who did what, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditRecord {
    pub id: u64,
    pub time: u64,
    pub user: String,
    /// `METHOD /path`, or `login`.
    pub action: String,
    pub status: u16,
    /// The client's address.
    pub peer: Option<String>,
}

/// One sample of a VM's counters (the sampler takes one every
/// `SAMPLE_PERIOD`); rates are the differences between samples.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct StatSample {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// Total vCPU run time so far.
    pub run_ns: u64,
    /// Total VM exits so far.
    pub exits: u64,
    /// Host memory backing the guest (its RAM and the VMM's tables).
    pub memory_bytes: u64,
    /// Bytes the guest's NICs received and sent so far (all NICs).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

/// One sample of the host's counters.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct HostSample {
    /// Unix milliseconds.
    pub time_ms: u64,
    /// Percent of all CPUs busy since the previous sample (`/proc/stat`);
    /// null for the first sample or when the host does not say.
    pub cpu_busy_pct: Option<f64>,
    /// Memory in use (`MemTotal - MemAvailable` of `/proc/meminfo`).
    pub memory_used_mib: Option<u64>,
    /// VMs powered on.
    pub vms_running: u32,
    /// Total vCPU run time of the powered-on VMs.
    pub vm_run_ns: u64,
    /// Total VM exits of the powered-on VMs.
    pub vm_exits: u64,
}

/// The host's statistics over the sampled period.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HostStats {
    pub cpus: u32,
    pub memory_mib: u64,
    /// Milliseconds between samples.
    pub sample_period_ms: u64,
    /// Oldest first.
    pub history: Vec<HostSample>,
}

/// Host samples, and the last `(busy, total)` CPU jiffies.
type HostSamples = (VecDeque<HostSample>, Option<(u64, u64)>);

/// `(busy, total)` jiffies of all CPUs from `/proc/stat`'s `cpu` line.
fn cpu_jiffies() -> Option<(u64, u64)> {
    let t = fs::read_to_string("/proc/stat").ok()?;
    let line = t.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

fn memory_used_mib() -> Option<u64> {
    let t = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |k: &str| t.lines().find(|l| l.starts_with(k)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok());
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) / 1024)
}

pub const SAMPLE_PERIOD: Duration = Duration::from_secs(20);
/// How long a guest shutdown may take before the task gives up.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(120);
/// One hour at the sampling period.
pub const SAMPLES_KEPT: usize = 180;

/// A VM's statistics now and over the last hour.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VmStats {
    pub name: String,
    pub power_state: String,
    pub run_ns: u64,
    pub exits: u64,
    /// VM exits by kind: `[kind, count]`.
    #[schema(value_type = Vec<(String, u64)>)]
    pub exits_by_kind: Vec<(String, u64)>,
    pub vcpu_run_ns: Vec<u64>,
    pub guest_memory_bytes: u64,
    pub overhead_bytes: u64,
    /// Each NIC's traffic on the virtual switch (as the guest sees it).
    pub nics: Vec<crate::vmkernel::NicCounters>,
    /// Each disk's I/O since the VM was created (configuration order).
    pub disks: Vec<crate::vmkernel::DiskIo>,
    /// Oldest first; empty until the sampler has run.
    pub history: Vec<StatSample>,
}

/// Records kept in memory from a persisted log (the newest `cap`). A
/// record's id is its number for the log's group commit.
struct Recent<T> {
    log: JsonLog,
    items: VecDeque<T>,
    next_id: u64,
    cap: usize,
    commit: Arc<store::GroupCommit>,
}

const RECENT_CAP: usize = 10_000;
/// A log file larger than this is cut down to the records kept in memory.
const LOG_MAX_BYTES: u64 = 8 << 20;

impl<T: Serialize> Recent<T> {
    /// Writes record `id` to the log (not yet synced: see [`Recent::durable`])
    /// and keeps it.
    fn push(&mut self, id: u64, r: T) {
        if let Err(err) = self.log.write(&r) {
            eprintln!("hostd: cannot append to {}: {err}", self.log.path().display());
        }
        self.commit.written(id);
        self.items.push_back(r);
        if self.items.len() > self.cap {
            self.items.pop_front();
        }
        if self.log.len() > LOG_MAX_BYTES {
            match self.log.rewrite(self.items.iter()) {
                Ok(()) => self.commit.replaced(self.log.file(), id),
                Err(err) => eprintln!("hostd: cannot compact {}: {err}", self.log.path().display()),
            }
        }
    }
}

/// Power operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum PowerAction {
    On,
    Off,
    Reset,
    Shutdown,
    Pause,
    Resume,
}

impl PowerAction {
    fn task_kind(self) -> &'static str {
        match self {
            PowerAction::On => "vm.powerOn",
            PowerAction::Off => "vm.powerOff",
            PowerAction::Reset => "vm.reset",
            PowerAction::Shutdown => "vm.shutdown",
            PowerAction::Pause => "vm.pause",
            PowerAction::Resume => "vm.resume",
        }
    }
}

pub struct Hostd {
    pub settings: Settings,
    pub kernel: Arc<dyn VmKernel>,
    inventory: Mutex<BTreeMap<String, VmEntry>>,
    pub accounts: Mutex<Accounts>,
    pub sessions: Mutex<Sessions>,
    pub lockout: Mutex<Lockout>,
    tasks: Mutex<(VecDeque<Task>, u64)>,
    events: Mutex<Recent<Event>>,
    audit: Mutex<Recent<AuditRecord>>,
    samples: Mutex<HashMap<String, VecDeque<StatSample>>>,
    /// Host samples and the last `/proc/stat` reading.
    host_samples: Mutex<HostSamples>,
    pub started: Instant,
    /// Where the config store is (set by main; a given directory otherwise).
    store_location: std::sync::OnceLock<ConfigStore>,
}

impl Hostd {
    /// Opens the config store (creating it), loads accounts, inventory and logs.
    pub fn open(settings: Settings, kernel: Arc<dyn VmKernel>) -> io::Result<Arc<Hostd>> {
        fs::create_dir_all(&settings.config_dir)?;
        let open_log = |name: &str| -> io::Result<(JsonLog, Vec<serde_json::Value>)> { JsonLog::open(&settings.config_dir.join(name)) };
        let (elog, ev) = open_log("events.jsonl")?;
        let (alog, au) = open_log("audit.jsonl")?;
        fn recent<T: serde::de::DeserializeOwned>(log: JsonLog, vals: Vec<serde_json::Value>, id: fn(&T) -> u64) -> Recent<T> {
            let all: Vec<T> = vals.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect();
            let next_id = all.iter().map(id).max().map_or(1, |m| m + 1);
            let skip = all.len().saturating_sub(RECENT_CAP);
            let commit = Arc::new(store::GroupCommit::new(log.file(), next_id - 1));
            Recent { log, items: all.into_iter().skip(skip).collect(), next_id, cap: RECENT_CAP, commit }
        }
        let accounts = Accounts::load(&settings.config_dir.join("users.json"))?;
        let h = Hostd {
            kernel,
            inventory: Mutex::new(BTreeMap::new()),
            accounts: Mutex::new(accounts),
            sessions: Mutex::new(Sessions::new(settings.session_idle)),
            lockout: Mutex::new(Lockout::new(settings.lockout_after, settings.lockout_for)),
            tasks: Mutex::new((VecDeque::new(), 1)),
            events: Mutex::new(recent(elog, ev, |e: &Event| e.id)),
            audit: Mutex::new(recent(alog, au, |a: &AuditRecord| a.id)),
            samples: Mutex::new(HashMap::new()),
            host_samples: Mutex::new((VecDeque::new(), None)),
            started: Instant::now(),
            store_location: std::sync::OnceLock::new(),
            settings,
        };
        let first_start = !h.inventory_path().exists();
        h.load_inventory()?;
        if first_start {
            h.register_found_vms();
        }
        for ds in h.datastores() {
            let n = crate::datastore::remove_stale_uploads(Path::new(&ds.path), 3);
            if n > 0 {
                eprintln!("hostd: removed {n} unfinished upload(s) from datastore {}", ds.name);
            }
        }
        let n = lock(&h.inventory).len();
        h.event("hostd.started", None, None, format!("hostd {} started; {n} VMs in the inventory", env!("CARGO_PKG_VERSION")));
        Ok(Arc::new(h))
    }

    /// Records how the config store was found (for the host summary).
    pub fn set_config_store(&self, store: ConfigStore) {
        let _ = self.store_location.set(store);
    }

    pub fn config_store(&self) -> ConfigStore {
        self.store_location.get().cloned().unwrap_or_else(|| ConfigStore::given(self.settings.config_dir.clone()))
    }

    fn inventory_path(&self) -> PathBuf {
        self.settings.config_dir.join("inventory.json")
    }

    fn load_inventory(&self) -> io::Result<()> {
        let path = self.inventory_path();
        let file: InventoryFile = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => InventoryFile { version: 1, vms: Vec::new() },
            Err(e) => return Err(e),
        };
        let mut inv = lock(&self.inventory);
        for item in file.vms {
            let (config, error) = match fs::read_to_string(&item.vmx).map_err(|e| e.to_string()).and_then(|t| VmConfig::from_vmx(&t)) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(format!("{}: {e}", item.vmx.display()))),
            };
            inv.insert(item.name.clone(), VmEntry { name: item.name, vmx: item.vmx, config, error, busy: None });
        }
        Ok(())
    }

    /// On the first start of a config store (no inventory yet), registers
    /// every VM directory already on a datastore (`<datastore>/<vm>/<vm>.vmx`,
    /// e.g. the demo VM `image-builder run` puts on datastore1), so a new host
    /// shows the VMs its disks hold. Later starts keep the inventory as it
    /// was left: a VM unregistered by the administrator stays unregistered.
    fn register_found_vms(&self) {
        for ds in self.datastores() {
            let Ok(dirs) = fs::read_dir(&ds.path) else { continue };
            let mut found: Vec<PathBuf> = dirs
                .filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.') && e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path().join(format!("{}.vmx", e.file_name().to_string_lossy())))
                .filter(|vmx| vmx.is_file())
                .collect();
            found.sort();
            for vmx in found {
                let path = vmx.display().to_string();
                match self.register(&path, "hostd") {
                    Ok(v) => eprintln!("hostd: registered VM {} found on datastore {} ({path})", v.name, ds.name),
                    Err(e) => eprintln!("hostd: not registering {path}: {e:?}"),
                }
            }
        }
    }

    fn save_inventory(&self, inv: &BTreeMap<String, VmEntry>) -> Result<(), OpError> {
        let file = InventoryFile { version: 1, vms: inv.values().map(|e| InventoryItem { name: e.name.clone(), vmx: e.vmx.clone() }).collect() };
        store::write_json(&self.inventory_path(), &file).map_err(internal("writing the inventory"))
    }

    // ---- logs ----

    /// Records an event; returns once it is on disk. Blocks on the disk:
    /// async code calls it through `spawn_blocking`.
    pub fn event(&self, kind: &str, vm: Option<&str>, user: Option<&str>, message: String) {
        let (id, commit, path) = {
            let mut ev = lock(&self.events);
            let id = ev.next_id;
            let e = Event { id, time: now_secs(), kind: kind.into(), vm: vm.map(Into::into), user: user.map(Into::into), message };
            ev.next_id += 1;
            ev.push(id, e);
            (id, Arc::clone(&ev.commit), ev.log.path().to_path_buf())
        };
        // Group commit: without the log's lock, so others append meanwhile.
        commit.wait(id, &path);
    }

    /// Events on disk (one being synced now is not shown yet).
    pub fn events(&self, after: u64, limit: usize) -> Vec<Event> {
        let ev = lock(&self.events);
        let durable = ev.commit.durable();
        ev.items.iter().filter(|e| e.id > after && e.id <= durable).take(limit).cloned().collect()
    }

    /// Records who changed what; returns once it is on disk. Blocks on the
    /// disk: async code calls it through `spawn_blocking`.
    pub fn audit(&self, user: &str, action: String, status: u16, peer: Option<String>) {
        let (id, commit, path) = {
            let mut au = lock(&self.audit);
            let id = au.next_id;
            let r = AuditRecord { id, time: now_secs(), user: user.into(), action, status, peer };
            au.next_id += 1;
            au.push(id, r);
            (id, Arc::clone(&au.commit), au.log.path().to_path_buf())
        };
        commit.wait(id, &path);
    }

    pub fn audit_records(&self, after: u64, limit: usize) -> Vec<AuditRecord> {
        let au = lock(&self.audit);
        let durable = au.commit.durable();
        au.items.iter().filter(|e| e.id > after && e.id <= durable).take(limit).cloned().collect()
    }

    /// Syncs of the event and the audit log so far (group commit: fewer
    /// than their records under concurrent changes).
    pub fn log_syncs(&self) -> (u64, u64) {
        (lock(&self.events).commit.syncs(), lock(&self.audit).commit.syncs())
    }

    // ---- tasks ----

    pub(crate) fn task_begin(&self, kind: &str, target: &str, user: &str) -> u64 {
        let mut t = lock(&self.tasks);
        let id = t.1;
        t.1 += 1;
        t.0.push_back(Task {
            id,
            kind: kind.into(),
            target: target.into(),
            user: user.into(),
            state: "running".into(),
            progress: 0,
            error: None,
            started: now_secs(),
            finished: None,
        });
        // Keep the newest 1000, never dropping a running one.
        while t.0.len() > 1000 {
            match t.0.iter().position(|x| x.finished.is_some()) {
                Some(i) => {
                    t.0.remove(i);
                }
                None => break,
            }
        }
        id
    }

    pub(crate) fn task_progress(&self, id: u64, pct: u8) {
        if let Some(t) = lock(&self.tasks).0.iter_mut().find(|t| t.id == id) {
            t.progress = pct.min(100);
        }
    }

    pub(crate) fn task_end(&self, id: u64, result: &Result<(), OpError>) {
        if let Some(t) = lock(&self.tasks).0.iter_mut().find(|t| t.id == id) {
            t.finished = Some(now_secs());
            match result {
                Ok(()) => {
                    t.state = "success".into();
                    t.progress = 100;
                }
                Err(e) => {
                    t.state = "error".into();
                    t.error = Some(op_message(e));
                }
            }
        }
    }

    pub fn tasks(&self) -> Vec<Task> {
        lock(&self.tasks).0.iter().rev().cloned().collect()
    }

    pub fn task(&self, id: u64) -> Option<Task> {
        lock(&self.tasks).0.iter().find(|t| t.id == id).cloned()
    }

    /// Runs a short operation as a finished task (history for the UI).
    fn as_task<T>(&self, kind: &str, target: &str, user: &str, f: impl FnOnce() -> Result<T, OpError>) -> Result<T, OpError> {
        let id = self.task_begin(kind, target, user);
        let r = f();
        self.task_end(id, &r.as_ref().map(|_| ()).map_err(Clone::clone));
        r
    }

    // ---- host ----

    pub fn datastores(&self) -> Vec<Datastore> {
        let mut out = Vec::new();
        for (name, path) in crate::config_store::datastores(&self.settings.volumes_dir) {
            let st = rustix::fs::statvfs(&path).ok();
            out.push(Datastore {
                name,
                path: path.display().to_string(),
                capacity_bytes: st.as_ref().map(|s| s.f_blocks.saturating_mul(s.f_frsize)),
                free_bytes: st.as_ref().map(|s| s.f_bavail.saturating_mul(s.f_frsize)),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A datastore's directory by name.
    pub fn datastore_root(&self, name: &str) -> Result<PathBuf, OpError> {
        self.datastores().into_iter().find(|d| d.name == name).map(|d| PathBuf::from(d.path)).ok_or_else(|| OpError::NotFound(format!("no datastore named {name:?}")))
    }

    fn datastore_roots(&self) -> Vec<PathBuf> {
        self.datastores().into_iter().map(|d| PathBuf::from(d.path)).collect()
    }

    /// The host's limits for validating a configuration. A datastore is
    /// reachable by its name and, where the name is a link to the mount
    /// (Mantle and ESXi: `/vmfs/volumes/<uuid>`), by that path too: disk
    /// paths may use either.
    pub fn limits_owned(&self) -> (u64, u32, Vec<String>, Vec<PathBuf>) {
        let mut paths = self.datastore_roots();
        let targets: Vec<PathBuf> = paths.iter().filter_map(|r| fs::read_link(r).ok().map(|t| self.settings.volumes_dir.join(t))).collect();
        paths.extend(targets);
        (host_memory_mib(), host_cpus(), self.settings.port_groups.clone(), paths)
    }

    fn kernel_vms(&self) -> Result<Vec<KernelVm>, io::Error> {
        self.kernel.list()
    }

    fn view(e: &VmEntry, kvms: Option<&[KernelVm]>, roots: &[PathBuf]) -> VmView {
        let k = kvms.and_then(|l| l.iter().find(|k| k.name == e.name));
        let power_state = match (kvms, k.map(|k| k.state)) {
            (None, _) => "unknown",
            (_, Some(KernelState::Running)) => "poweredOn",
            (_, Some(KernelState::Paused)) => "paused",
            _ => "poweredOff",
        };
        VmView {
            name: e.name.clone(),
            datastore: roots.iter().find(|r| e.vmx.starts_with(r)).and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned()),
            vmx_path: e.vmx.display().to_string(),
            power_state: power_state.into(),
            exit_reason: k.and_then(|k| k.exit_reason.clone()),
            kernel_id: k.map(|k| k.id),
            config: e.config.clone(),
            config_error: e.error.clone(),
            busy_task: e.busy,
            run_ns: k.map(|k| k.run_ns),
            exits: k.map(|k| k.exits),
        }
    }

    pub fn vms(&self) -> Vec<VmView> {
        let kvms = self.kernel_vms().ok();
        let roots = self.datastore_roots();
        lock(&self.inventory).values().map(|e| Self::view(e, kvms.as_deref(), &roots)).collect()
    }

    pub fn vm(&self, name: &str) -> Result<VmView, OpError> {
        let kvms = self.kernel_vms().ok();
        let roots = self.datastore_roots();
        let inv = lock(&self.inventory);
        let e = inv.get(name).ok_or_else(|| not_found(name))?;
        Ok(Self::view(e, kvms.as_deref(), &roots))
    }

    /// The VMkernel's record of this VM, if it has one. Err: cannot ask.
    fn kernel_vm(&self, name: &str) -> Result<Option<KernelVm>, OpError> {
        let l = self.kernel_vms().map_err(|e| OpError::Unavailable(format!("the VMkernel VM API is unavailable: {e}")))?;
        Ok(l.into_iter().find(|k| k.name == name))
    }

    fn powered_on(k: &Option<KernelVm>) -> bool {
        matches!(k.as_ref().map(|k| k.state), Some(KernelState::Running | KernelState::Paused))
    }

    /// The VMkernel id of a VM whose console can be opened (powered on).
    pub fn console_vm(&self, name: &str) -> Result<u32, OpError> {
        if !lock(&self.inventory).contains_key(name) {
            return Err(not_found(name));
        }
        match self.kernel_vm(name)? {
            Some(k) if k.state != KernelState::Off => Ok(k.id),
            _ => Err(OpError::Conflict(format!("VM {name} is powered off: it has no console"))),
        }
    }

    // ---- statistics ----

    /// Takes one sample of every running inventory VM's counters; forgets
    /// VMs that no longer run.
    pub fn sample_stats(&self) {
        let time_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let kvms = self.kernel_vms().ok();
        let running: Vec<&KernelVm> = kvms.iter().flatten().filter(|k| matches!(k.state, KernelState::Running | KernelState::Paused)).collect();
        {
            let jiffies = cpu_jiffies();
            let mut hs = lock(&self.host_samples);
            let cpu_busy_pct = match (hs.1, jiffies) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1.saturating_sub(b0)) as f64 * 100.0 / (t1 - t0) as f64),
                _ => None,
            };
            hs.1 = jiffies;
            hs.0.push_back(HostSample {
                time_ms,
                cpu_busy_pct,
                memory_used_mib: memory_used_mib(),
                vms_running: running.len() as u32,
                vm_run_ns: running.iter().map(|k| k.run_ns).sum(),
                vm_exits: running.iter().map(|k| k.exits).sum(),
            });
            while hs.0.len() > SAMPLES_KEPT {
                hs.0.pop_front();
            }
        }
        let Some(kvms) = &kvms else { return };
        let names: Vec<String> = lock(&self.inventory).keys().cloned().collect();
        // (name, memory, network rx, network tx)
        let mem: Vec<(String, u64, u64, u64)> = running
            .iter()
            .filter(|k| names.contains(&k.name))
            .map(|k| match self.kernel.stats(k.id, k.vcpus) {
                Ok(s) => (k.name.clone(), s.guest_memory_bytes + s.overhead_bytes, s.nics.iter().map(|n| n.rx_bytes).sum(), s.nics.iter().map(|n| n.tx_bytes).sum()),
                Err(_) => (k.name.clone(), k.memory_mib << 20, 0, 0),
            })
            .collect();
        let mut samples = lock(&self.samples);
        samples.retain(|n, _| kvms.iter().any(|k| &k.name == n && k.state != KernelState::Off));
        for k in running.iter().filter(|k| names.contains(&k.name)) {
            let (memory_bytes, net_rx_bytes, net_tx_bytes) = mem.iter().find(|m| m.0 == k.name).map_or((0, 0, 0), |m| (m.1, m.2, m.3));
            let q = samples.entry(k.name.clone()).or_default();
            q.push_back(StatSample { time_ms, run_ns: k.run_ns, exits: k.exits, memory_bytes, net_rx_bytes, net_tx_bytes });
            while q.len() > SAMPLES_KEPT {
                q.pop_front();
            }
        }
    }

    pub fn host_stats(&self) -> HostStats {
        HostStats {
            cpus: host_cpus(),
            memory_mib: host_memory_mib(),
            sample_period_ms: self.settings.sample_period.as_millis() as u64,
            history: lock(&self.host_samples).0.iter().copied().collect(),
        }
    }

    /// Samples forever on a thread of its own.
    pub fn start_sampler(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            while let Some(h) = me.upgrade() {
                h.sample_stats();
                let period = h.settings.sample_period;
                drop(h);
                std::thread::sleep(period);
            }
        });
    }

    pub fn vm_stats(&self, name: &str) -> Result<VmStats, OpError> {
        let view = self.vm(name)?;
        let k = self.kernel_vm(name)?.filter(|k| k.state != KernelState::Off).ok_or_else(|| OpError::Conflict(format!("VM {name} is powered off")))?;
        let s = self.kernel.stats(k.id, k.vcpus).map_err(|e| OpError::Unavailable(format!("reading the VM's statistics: {e}")))?;
        // The kernel reports every disk slot; the VM's configuration names the ones it has.
        let files: Vec<String> = view.config.as_ref().map(|c| c.disks.iter().map(|d| d.file.clone()).collect()).unwrap_or_default();
        let mut disks = s.disks;
        disks.truncate(files.len());
        for (d, f) in disks.iter_mut().zip(files) {
            d.file = f;
        }
        Ok(VmStats {
            name: name.into(),
            power_state: view.power_state,
            run_ns: k.run_ns,
            exits: k.exits,
            exits_by_kind: s.exits_by_kind,
            vcpu_run_ns: s.vcpu_run_ns,
            guest_memory_bytes: s.guest_memory_bytes,
            overhead_bytes: s.overhead_bytes,
            nics: s.nics,
            disks,
            history: lock(&self.samples).get(name).map(|q| q.iter().copied().collect()).unwrap_or_default(),
        })
    }

    // ---- inventory operations ----

    /// Defines a new VM: its directory, new disks and `.vmx` on the
    /// datastore, then the inventory entry. Nothing is left behind on failure.
    pub fn define(&self, spec: VmCreateSpec, user: &str) -> Result<VmView, OpError> {
        let (ds, mut cfg) = spec.into_config();
        self.as_task("vm.create", &cfg.name.clone(), user, || {
            let stores = self.datastores();
            let ds = match ds {
                Some(n) => stores.iter().find(|d| d.name == n).ok_or_else(|| {
                    OpError::Invalid(Some("datastore".into()), format!("datastore: {n:?}: no such datastore (the host has {:?})", stores.iter().map(|d| &d.name).collect::<Vec<_>>()))
                })?,
                None => stores.first().ok_or_else(|| OpError::Conflict("the host has no datastore".into()))?,
            };
            let vm_dir = Path::new(&ds.path).join(&cfg.name);
            for n in cfg.nics.iter_mut().filter(|n| n.mac.is_empty()) {
                n.mac = random_mac().map_err(internal("generating a MAC address"))?;
            }
            let (mem, cpus, pgs, roots) = self.limits_owned();
            let limits = HostLimits { memory_mib: mem, cpus, port_groups: &pgs, datastores: &roots, check_files: true };
            cfg.validate(&limits, Some(&vm_dir))?;
            let mut inv = lock(&self.inventory);
            if inv.contains_key(&cfg.name) {
                return Err(OpError::Conflict(format!("a VM named {:?} is already in the inventory", cfg.name)));
            }
            if vm_dir.exists() {
                return Err(OpError::Conflict(format!("{} already exists on the datastore (register its .vmx instead)", vm_dir.display())));
            }
            fs::create_dir(&vm_dir).map_err(internal("creating the VM directory"))?;
            let vmx = vm_dir.join(format!("{}.vmx", cfg.name));
            let result = (|| {
                let created = create_disks(&vm_dir, &mut cfg)?;
                let r = cfg.to_vmx().map_err(OpError::from).and_then(|t| store::write_atomic(&vmx, t.as_bytes()).map_err(internal("writing the .vmx")));
                if r.is_err() {
                    remove_files(&created);
                }
                r.map(|_| created)
            })();
            let created = match result {
                Ok(c) => c,
                Err(e) => {
                    let _ = fs::remove_dir_all(&vm_dir);
                    return Err(e);
                }
            };
            inv.insert(cfg.name.clone(), VmEntry { name: cfg.name.clone(), vmx: vmx.clone(), config: Some(cfg.clone()), error: None, busy: None });
            if let Err(e) = self.save_inventory(&inv) {
                inv.remove(&cfg.name);
                remove_files(&created);
                let _ = fs::remove_dir_all(&vm_dir);
                return Err(e);
            }
            let roots = self.datastore_roots();
            let kvms = self.kernel_vms().ok();
            let view = Self::view(&inv[&cfg.name], kvms.as_deref(), &roots);
            drop(inv);
            self.event("vm.created", Some(&cfg.name), Some(user), format!("VM {} created at {}", cfg.name, vmx.display()));
            Ok(view)
        })
    }

    /// Adds an existing `.vmx` on a datastore to the inventory.
    pub fn register(&self, vmx_path: &str, user: &str) -> Result<VmView, OpError> {
        self.as_task("vm.register", vmx_path, user, || {
            let vmx = PathBuf::from(vmx_path);
            let bad = |m: String| OpError::Invalid(Some("vmx_path".into()), format!("vmx_path: {m}"));
            if !vmx_path.ends_with(".vmx") || vmx.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(bad(format!("{vmx_path:?}: an absolute path to a .vmx file")));
            }
            let roots = self.datastore_roots();
            let dir = vmx.parent().map(Path::to_path_buf).unwrap_or_default();
            if !roots.iter().any(|r| dir.parent() == Some(r.as_path())) {
                return Err(bad(format!("{vmx_path:?} is not in a VM directory on a datastore (<datastore>/<vm>/<vm>.vmx)")));
            }
            let text = fs::read_to_string(&vmx).map_err(|e| if e.kind() == io::ErrorKind::NotFound { OpError::NotFound(format!("{vmx_path} does not exist")) } else { bad(e.to_string()) })?;
            let cfg = VmConfig::from_vmx(&text).map_err(bad)?;
            let (mem, cpus, pgs, roots) = self.limits_owned();
            cfg.validate(&HostLimits { memory_mib: mem, cpus, port_groups: &pgs, datastores: &roots, check_files: true }, Some(&dir))?;
            let mut inv = lock(&self.inventory);
            if inv.contains_key(&cfg.name) {
                return Err(OpError::Conflict(format!("a VM named {:?} is already in the inventory", cfg.name)));
            }
            if inv.values().any(|e| e.vmx == vmx) {
                return Err(OpError::Conflict(format!("{vmx_path} is already registered")));
            }
            let name = cfg.name.clone();
            inv.insert(name.clone(), VmEntry { name: name.clone(), vmx, config: Some(cfg), error: None, busy: None });
            if let Err(e) = self.save_inventory(&inv) {
                inv.remove(&name);
                return Err(e);
            }
            let kvms = self.kernel_vms().ok();
            let view = Self::view(&inv[&name], kvms.as_deref(), &roots);
            drop(inv);
            self.event("vm.registered", Some(&name), Some(user), format!("VM {name} registered from {vmx_path}"));
            Ok(view)
        })
    }

    /// Changes a VM's configuration. Powered on, only the resource settings
    /// and the annotation may change (resources apply at once).
    pub fn reconfigure(&self, name: &str, patch: &VmConfigPatch, user: &str) -> Result<VmView, OpError> {
        self.as_task("vm.reconfigure", name, user, || {
            let (mem, cpus, pgs, roots) = self.limits_owned();
            let mut inv = lock(&self.inventory);
            let e = inv.get(name).ok_or_else(|| not_found(name))?;
            if let Some(t) = e.busy {
                return Err(OpError::Conflict(format!("VM {name} is busy with task {t}")));
            }
            let old = e.config.clone().ok_or_else(|| OpError::Conflict(format!("the configuration of {name} is unreadable: {}", e.error.clone().unwrap_or_default())))?;
            let k = self.kernel_vm(name).unwrap_or(None);
            let on = Self::powered_on(&k);
            if on && !patch.only_live_settings() {
                return Err(OpError::Conflict(format!("VM {name} is powered on: only shares, reservation_pct, limit_pct and annotation can change now; power it off first")));
            }
            let mut new = patch.apply(&old);
            let dir = e.dir();
            for n in new.nics.iter_mut().filter(|n| n.mac.is_empty()) {
                n.mac = random_mac().map_err(internal("generating a MAC address"))?;
            }
            new.validate(&HostLimits { memory_mib: mem, cpus, port_groups: &pgs, datastores: &roots, check_files: true }, Some(&dir))?;
            let created = create_disks(&dir, &mut new)?;
            if let Err(err) = new.to_vmx().map_err(OpError::from).and_then(|t| store::write_atomic(&e.vmx, t.as_bytes()).map_err(internal("writing the .vmx"))) {
                remove_files(&created);
                return Err(err);
            }
            if let (true, true, Some(k)) = (on, patch.touches_resources(), &k) {
                let r = Resources { shares: new.shares, reservation_pct: new.reservation_pct, limit_pct: new.limit_pct };
                if let Err(err) = self.kernel.set_resources(k.group, r) {
                    // The file says what the next power-on gets; say that the running VM kept its old settings.
                    self.event("vm.reconfigureFailed", Some(name), Some(user), format!("resource settings saved but not applied to the running VM: {err}"));
                }
            }
            if let Some(e) = inv.get_mut(name) {
                e.config = Some(new);
                e.error = None;
            }
            let kvms = self.kernel_vms().ok();
            let view = Self::view(&inv[name], kvms.as_deref(), &roots);
            drop(inv);
            self.event("vm.reconfigured", Some(name), Some(user), format!("VM {name} reconfigured"));
            Ok(view)
        })
    }

    /// Removes a powered-off VM from the inventory; its files stay.
    pub fn unregister(&self, name: &str, user: &str) -> Result<(), OpError> {
        self.as_task("vm.unregister", name, user, || {
            let mut inv = lock(&self.inventory);
            let e = inv.get(name).ok_or_else(|| not_found(name))?.clone();
            self.check_off(&e)?;
            inv.remove(name);
            if let Err(err) = self.save_inventory(&inv) {
                inv.insert(name.into(), e);
                return Err(err);
            }
            drop(inv);
            self.event("vm.unregistered", Some(name), Some(user), format!("VM {name} unregistered; its files remain at {}", e.vmx.display()));
            Ok(())
        })
    }

    fn check_off(&self, e: &VmEntry) -> Result<(), OpError> {
        if let Some(t) = e.busy {
            return Err(OpError::Conflict(format!("VM {} is busy with task {t}", e.name)));
        }
        match self.kernel_vm(&e.name) {
            Ok(k) if Self::powered_on(&k) => Err(OpError::Conflict(format!("VM {} is powered on; power it off first", e.name))),
            Ok(Some(k)) => {
                // A stopped VM still holds its memory in the kernel: free it.
                self.kernel.destroy(k.id).map_err(|err| OpError::Unavailable(format!("freeing the stopped VM: {err}")))
            }
            _ => Ok(()),
        }
    }

    /// Deletes a powered-off VM: its directory on the datastore and its
    /// inventory entry.
    pub fn destroy(&self, name: &str, user: &str) -> Result<(), OpError> {
        self.as_task("vm.destroy", name, user, || {
            let roots = self.datastore_roots();
            let mut inv = lock(&self.inventory);
            let e = inv.get(name).ok_or_else(|| not_found(name))?.clone();
            self.check_off(&e)?;
            let dir = e.dir();
            let clones = Self::linked_clones_of(&inv, &dir);
            if !clones.is_empty() {
                return Err(OpError::Conflict(format!("VM {name} holds the base disks of the linked clones {clones:?}; destroy them first")));
            }
            // Only ever a VM directory directly on a datastore.
            if !roots.iter().any(|r| dir.parent() == Some(r.as_path())) {
                return Err(OpError::Conflict(format!("{} is not a VM directory on a datastore; unregister the VM instead", dir.display())));
            }
            inv.remove(name);
            if let Err(err) = self.save_inventory(&inv) {
                inv.insert(name.into(), e);
                return Err(err);
            }
            drop(inv);
            let r = fs::remove_dir_all(&dir);
            match &r {
                Ok(()) => self.event("vm.destroyed", Some(name), Some(user), format!("VM {name} destroyed; {} deleted", dir.display())),
                Err(err) => self.event("vm.destroyed", Some(name), Some(user), format!("VM {name} removed from the inventory, but deleting {} failed: {err}", dir.display())),
            }
            r.map_err(internal("deleting the VM directory"))
        })
    }

    /// The inventory VMs whose disks are qcow2 overlays on files in `dir`.
    fn linked_clones_of(inv: &BTreeMap<String, VmEntry>, dir: &Path) -> Vec<String> {
        inv.values()
            .filter(|e| e.dir() != dir)
            .filter(|e| {
                e.config.iter().flat_map(|c| c.disks.iter()).any(|d| {
                    crate::qcow2::backing_file(&VmConfig::disk_path(&e.dir(), &d.file)).is_some_and(|b| Path::new(&b).starts_with(dir))
                })
            })
            .map(|e| e.name.clone())
            .collect()
    }

    /// Clones a powered-off VM as a task: a full copy of the disks in its
    /// directory (sparse where the source is), or qcow2 overlays for a
    /// linked clone; disks elsewhere (absolute paths) are shared. The clone
    /// gets new MAC addresses. Nothing is left behind on failure.
    pub fn clone_vm(self: &Arc<Self>, src: &str, spec: CloneSpec, user: &str) -> Result<Task, OpError> {
        let (mem, cpus, pgs, roots) = self.limits_owned();
        let stores = self.datastores();
        let mut inv = lock(&self.inventory);
        let e = inv.get(src).ok_or_else(|| not_found(src))?;
        if let Some(t) = e.busy {
            return Err(OpError::Conflict(format!("VM {src} is busy with task {t}")));
        }
        let cfg = e.config.clone().ok_or_else(|| OpError::Conflict(format!("the configuration of {src} is unreadable: {}", e.error.clone().unwrap_or_default())))?;
        let src_dir = e.dir();
        if Self::powered_on(&self.kernel_vm(src).unwrap_or(None)) {
            return Err(OpError::Conflict(format!("VM {src} is powered on; power it off first so its disks are consistent")));
        }
        if !crate::vmx::valid_name(&spec.name) {
            return Err(OpError::Invalid(Some("name".into()), format!("name: {:?}: 1 to 32 letters, digits, '-', '_' or '.', not starting with '.'", spec.name)));
        }
        if inv.contains_key(&spec.name) {
            return Err(OpError::Conflict(format!("a VM named {:?} is already in the inventory", spec.name)));
        }
        let ds_root = match &spec.datastore {
            Some(n) => stores.iter().find(|d| &d.name == n).map(|d| PathBuf::from(&d.path)).ok_or_else(|| {
                OpError::Invalid(Some("datastore".into()), format!("datastore: {n:?}: no such datastore (the host has {:?})", stores.iter().map(|d| &d.name).collect::<Vec<_>>()))
            })?,
            None => src_dir.parent().map(Path::to_path_buf).ok_or_else(|| OpError::Conflict(format!("{} has no datastore", src_dir.display())))?,
        };
        let dst_dir = ds_root.join(&spec.name);
        if dst_dir.exists() {
            return Err(OpError::Conflict(format!("{} already exists on the datastore", dst_dir.display())));
        }
        let mut new = cfg.clone();
        new.name = spec.name.clone();
        let mut copies = Vec::new();
        for (i, d) in new.disks.iter_mut().enumerate() {
            if d.file.starts_with('/') {
                continue;
            }
            let from = src_dir.join(&d.file);
            let file = match d.file.strip_prefix(src) {
                Some(rest) => format!("{}{rest}", spec.name),
                None => d.file.clone(),
            };
            if spec.linked && !matches!(crate::qcow2::virtual_size(&from), Ok(Some(_))) {
                return Err(OpError::Conflict(format!("disks[{i}]: {} is not a qcow2 image; a linked clone needs qcow2 disks (make a full clone)", from.display())));
            }
            d.file = file.clone();
            copies.push((from, dst_dir.join(file)));
        }
        for n in new.nics.iter_mut() {
            n.mac = random_mac().map_err(internal("generating a MAC address"))?;
        }
        new.validate(&HostLimits { memory_mib: mem, cpus, port_groups: &pgs, datastores: &roots, check_files: true }, None)?;
        let task = self.task_begin(if spec.linked { "vm.linkedClone" } else { "vm.clone" }, src, user);
        if let Some(e) = inv.get_mut(src) {
            e.busy = Some(task);
        }
        drop(inv);
        let me = Arc::clone(self);
        let (src, user) = (src.to_string(), user.to_string());
        std::thread::spawn(move || {
            let r = me.run_clone(task, &copies, &dst_dir, &new, spec.linked);
            if r.is_err() {
                let _ = fs::remove_dir_all(&dst_dir);
            }
            if let Some(e) = lock(&me.inventory).get_mut(&src) {
                e.busy = None;
            }
            match &r {
                Ok(()) => me.event("vm.cloned", Some(&new.name), Some(&user), format!("VM {} {} from {src}", new.name, if spec.linked { "linked-cloned" } else { "cloned" })),
                Err(err) => me.event("vm.cloneFailed", Some(&src), Some(&user), format!("cloning {src} as {} failed: {}", new.name, op_message(err))),
            }
            me.task_end(task, &r);
        });
        self.task(task).ok_or_else(|| OpError::Internal("task vanished".into()))
    }

    fn run_clone(&self, task: u64, copies: &[(PathBuf, PathBuf)], dst_dir: &Path, cfg: &VmConfig, linked: bool) -> Result<(), OpError> {
        fs::create_dir(dst_dir).map_err(internal("creating the VM directory"))?;
        let total: u64 = copies.iter().map(|(f, _)| fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum::<u64>().max(1);
        let mut done = 0u64;
        for (from, to) in copies {
            if linked {
                crate::qcow2::create_overlay(to, from).map_err(|e| OpError::Internal(format!("creating {}: {e}", to.display())))?;
            } else {
                copy_sparse(from, to, &mut |n| {
                    done += n;
                    self.task_progress(task, (done.min(total) * 90 / total) as u8);
                })
                .map_err(|e| OpError::Internal(format!("copying {} to {}: {e}", from.display(), to.display())))?;
            }
        }
        let vmx = dst_dir.join(format!("{}.vmx", cfg.name));
        let text = cfg.to_vmx()?;
        store::write_atomic(&vmx, text.as_bytes()).map_err(internal("writing the .vmx"))?;
        let mut inv = lock(&self.inventory);
        if inv.contains_key(&cfg.name) {
            return Err(OpError::Conflict(format!("a VM named {:?} appeared in the inventory meanwhile", cfg.name)));
        }
        inv.insert(cfg.name.clone(), VmEntry { name: cfg.name.clone(), vmx, config: Some(cfg.clone()), error: None, busy: None });
        if let Err(e) = self.save_inventory(&inv) {
            inv.remove(&cfg.name);
            return Err(e);
        }
        Ok(())
    }

    // ---- power ----

    /// Starts a power operation as a task; checks what can be checked first
    /// so a refused request is an error, not a failed task.
    pub fn power(self: &Arc<Self>, name: &str, action: PowerAction, user: &str) -> Result<Task, OpError> {
        let (mem, cpus, pgs, roots) = self.limits_owned();
        let mut inv = lock(&self.inventory);
        let e = inv.get(name).ok_or_else(|| not_found(name))?;
        if let Some(t) = e.busy {
            return Err(OpError::Conflict(format!("VM {name} is busy with task {t}")));
        }
        let cfg = e.config.clone().ok_or_else(|| OpError::Conflict(format!("the configuration of {name} is unreadable: {}", e.error.clone().unwrap_or_default())))?;
        let k = self.kernel_vm(name)?;
        let state = k.as_ref().map(|k| k.state);
        let refuse = |m: &str| Err(OpError::Conflict(format!("VM {name} {m}")));
        match action {
            PowerAction::On if Self::powered_on(&k) => return refuse("is already powered on"),
            PowerAction::On => {
                let clones = Self::linked_clones_of(&inv, &e.dir());
                if !clones.is_empty() {
                    return refuse(&format!("holds the base disks of the linked clones {clones:?}: powering it on would change them under the clones"));
                }
                cfg.validate(&HostLimits { memory_mib: mem, cpus, port_groups: &pgs, datastores: &roots, check_files: true }, Some(&e.dir()))
                    .map_err(|fe| OpError::Conflict(format!("the configuration of {name} is not valid now: {fe}")))?;
            }
            PowerAction::Off | PowerAction::Reset if !Self::powered_on(&k) => return refuse("is powered off"),
            PowerAction::Pause if state != Some(KernelState::Running) => return refuse("is not running"),
            PowerAction::Resume if state != Some(KernelState::Paused) => return refuse("is not paused"),
            PowerAction::Shutdown => {
                if state != Some(KernelState::Running) {
                    return refuse("is not running");
                }
                // Ask the guest now (the ACPI power button), so a VMkernel
                // without the call is a clear error rather than a failed task.
                let id = k.as_ref().map_or(0, |k| k.id);
                self.kernel.shutdown(id).map_err(|e| match e.raw_os_error() {
                    Some(crate::vmkernel::ENOSYS) => OpError::NotSupported(
                        "guest shutdown is not supported by this VMkernel (no ACPI power button call in its API); use power off".into(),
                    ),
                    Some(11) => OpError::Unavailable(
                        "the guest does not listen for the ACPI power button (no ACPI, or nothing handles it); use power off".into(),
                    ),
                    _ => OpError::Unavailable(format!("asking the guest to shut down: {e}")),
                })?;
            }
            _ => {}
        }
        let vm_dir = e.dir();
        let task = self.task_begin(action.task_kind(), name, user);
        if let Some(e) = inv.get_mut(name) {
            e.busy = Some(task);
        }
        drop(inv);
        let me = Arc::clone(self);
        let (name, user) = (name.to_string(), user.to_string());
        std::thread::spawn(move || {
            let r = me.run_power(task, &name, action, &cfg, &vm_dir, k);
            // The VM is free and the event recorded before the task reads as
            // ended: a client that saw the task finish may act on the VM at
            // once and finds the event in the log.
            if let Some(e) = lock(&me.inventory).get_mut(&name) {
                e.busy = None;
            }
            let (kind, msg) = match (&r, action) {
                (Ok(()), PowerAction::On) => ("vm.poweredOn", format!("VM {name} powered on")),
                (Ok(()), PowerAction::Off) => ("vm.poweredOff", format!("VM {name} powered off")),
                (Ok(()), PowerAction::Reset) => ("vm.reset", format!("VM {name} reset")),
                (Ok(()), PowerAction::Pause) => ("vm.paused", format!("VM {name} paused")),
                (Ok(()), PowerAction::Resume) => ("vm.resumed", format!("VM {name} resumed")),
                (Ok(()), PowerAction::Shutdown) => ("vm.shutdown", format!("VM {name} shut down")),
                (Err(err), _) => ("vm.powerFailed", format!("{} of VM {name} failed: {}", action.task_kind(), op_message(err))),
            };
            me.event(kind, Some(&name), Some(&user), msg);
            me.task_end(task, &r);
        });
        self.task(task).ok_or_else(|| OpError::Internal("task vanished".into()))
    }

    fn run_power(&self, task: u64, name: &str, action: PowerAction, cfg: &VmConfig, vm_dir: &Path, k: Option<KernelVm>) -> Result<(), OpError> {
        let kerr = |what: &'static str| move |e: io::Error| OpError::Unavailable(format!("{what}: {e}"));
        match action {
            PowerAction::On => {
                if let Some(old) = k {
                    // Off or stopped by itself: start from the current configuration.
                    self.kernel.destroy(old.id).map_err(kerr("freeing the stopped VM"))?;
                }
                self.task_progress(task, 10);
                let text = cfg.kernel_text(vm_dir).map_err(|e| OpError::Conflict(format!("the configuration of {name} is not valid now: {e}")))?;
                let id = self.kernel.create(&text).map_err(kerr("creating the VM in the VMkernel"))?;
                self.task_progress(task, 80);
                if let Err(e) = self.kernel.start(id) {
                    let _ = self.kernel.destroy(id);
                    return Err(kerr("starting the VM")(e));
                }
                Ok(())
            }
            PowerAction::Off => {
                let k = k.ok_or_else(|| OpError::Conflict(format!("VM {name} is powered off")))?;
                self.kernel.stop(k.id).map_err(kerr("stopping the VM"))?;
                self.task_progress(task, 50);
                // The VMkernel stops the vCPU worlds asynchronously: until they
                // have, freeing the VM is EBUSY (seen with 50 VMs powering off at once).
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match self.kernel.destroy(k.id) {
                        Err(e) if e.raw_os_error() == Some(16) && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                        r => return r.map_err(kerr("freeing the VM")),
                    }
                }
            }
            PowerAction::Reset => self.kernel.reset(k.map_or(0, |k| k.id)).map_err(kerr("resetting the VM")),
            PowerAction::Pause => self.kernel.pause(k.map_or(0, |k| k.id)).map_err(kerr("pausing the VM")),
            PowerAction::Resume => self.kernel.resume(k.map_or(0, |k| k.id)).map_err(kerr("resuming the VM")),
            PowerAction::Shutdown => {
                // The guest was asked in `power`; wait for it to stop, then
                // free it as a power-off does.
                let deadline = Instant::now() + SHUTDOWN_WAIT;
                loop {
                    match self.kernel_vm(name)? {
                        Some(k) if k.state == KernelState::Stopped || k.state == KernelState::Off => {
                            return self.kernel.destroy(k.id).map_err(kerr("freeing the VM"));
                        }
                        None => return Ok(()),
                        Some(_) if Instant::now() >= deadline => {
                            return Err(OpError::Conflict(format!("the guest did not shut down within {} s; power it off", SHUTDOWN_WAIT.as_secs())));
                        }
                        Some(_) => {
                            let waited = SHUTDOWN_WAIT.saturating_sub(deadline.saturating_duration_since(Instant::now()));
                            self.task_progress(task, (10 + waited.as_secs() * 80 / SHUTDOWN_WAIT.as_secs()) as u8);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            }
        }
    }
}

fn not_found(name: &str) -> OpError {
    OpError::NotFound(format!("no VM named {name:?} in the inventory"))
}

pub fn op_message(e: &OpError) -> String {
    match e {
        OpError::Invalid(_, m) | OpError::NotFound(m) | OpError::Conflict(m) | OpError::Unavailable(m) | OpError::NotSupported(m) | OpError::Internal(m) => {
            m.clone()
        }
    }
}

/// Creates the disks that ask for it (`size_mib`, sparse) and forgets the
/// size; returns the files made, for rollback.
fn create_disks(vm_dir: &Path, cfg: &mut VmConfig) -> Result<Vec<PathBuf>, OpError> {
    let mut created = Vec::new();
    for (i, d) in cfg.disks.iter_mut().enumerate() {
        let Some(size) = d.size_mib.take() else { continue };
        let path = VmConfig::disk_path(vm_dir, &d.file);
        let r = fs::OpenOptions::new().write(true).create_new(true).open(&path).and_then(|f| {
            f.set_len(size * 1024 * 1024)?;
            f.sync_all()
        });
        match r {
            Ok(()) => created.push(path),
            Err(e) => {
                remove_files(&created);
                return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                    OpError::Conflict(format!("disks[{i}].file: {} already exists; leave out size_mib to use it", path.display()))
                } else if matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded) {
                    OpError::Conflict(format!("disks[{i}].size_mib: creating {}: {e} (free space on the datastore)", path.display()))
                } else {
                    OpError::Internal(format!("creating disk {}: {e}", path.display()))
                });
            }
        }
    }
    if let Some(dir) = created.first().and_then(|p| p.parent()) {
        let _ = store::sync_dir(dir);
    }
    Ok(created)
}

/// Copies a file, leaving holes where the source has zero blocks (disk
/// images are mostly empty); `progress` gets the bytes done.
fn copy_sparse(from: &Path, to: &Path, progress: &mut dyn FnMut(u64)) -> io::Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut src = fs::File::open(from)?;
    let len = src.metadata()?.len();
    let mut dst = fs::OpenOptions::new().write(true).create_new(true).open(to)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64))?;
        } else {
            dst.write_all(&buf[..n])?;
        }
        progress(n as u64);
    }
    dst.set_len(len)?;
    dst.sync_all()?;
    if let Some(dir) = to.parent() {
        let _ = store::sync_dir(dir);
    }
    Ok(())
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        let _ = fs::remove_file(f);
    }
}

/// A locally administered unicast MAC (02:4d:4e = "MN" for Mantle).
pub fn random_mac() -> io::Result<String> {
    let mut b = [0u8; 3];
    getrandom::getrandom(&mut b).map_err(io::Error::other)?;
    Ok(format!("02:4d:4e:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]))
}

/// The host's RAM in MiB (`/proc/meminfo`).
pub fn host_memory_mib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .map_or(0, |kib| kib / 1024)
}

/// The host's CPUs (`/proc/cpuinfo`, else what std can find out).
pub fn host_cpus() -> u32 {
    let n = fs::read_to_string("/proc/cpuinfo").map(|t| t.lines().filter(|l| l.starts_with("processor")).count()).unwrap_or(0);
    if n > 0 { n as u32 } else { std::thread::available_parallelism().map_or(1, |n| n.get() as u32) }
}

/// Seconds since the host booted (`/proc/uptime`).
pub fn host_uptime_secs() -> Option<u64> {
    fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmkernel::fake::FakeVmKernel;

    pub(crate) fn setup() -> (tempfile::TempDir, Arc<Hostd>, Arc<FakeVmKernel>) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("volumes/ds1")).unwrap();
        fs::write(d.path().join("kernel.bin"), b"kernel").unwrap();
        let k = Arc::new(FakeVmKernel::default());
        let h = Hostd::open(settings(d.path()), k.clone()).unwrap();
        (d, h, k)
    }

    pub(crate) fn settings(root: &Path) -> Settings {
        Settings {
            config_dir: root.join("config"),
            volumes_dir: root.join("volumes"),
            port_groups: vec!["VM Network".into()],
            session_idle: Duration::from_secs(60),
            lockout_after: 5,
            lockout_for: Duration::from_secs(60),
            ui_dir: None,
            sample_period: SAMPLE_PERIOD,
            max_upload_bytes: 1 << 20,
        }
    }

    pub(crate) fn spec(root: &Path, name: &str) -> VmCreateSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "memory_mib": 16, "kernel": root.join("kernel.bin"),
            "disks": [{"file": format!("{name}.img"), "size_mib": 2}], "nics": [{"network": "VM Network"}]
        }))
        .unwrap()
    }

    fn wait_task(h: &Hostd, id: u64) -> Task {
        for _ in 0..500 {
            let t = h.task(id).unwrap();
            if t.finished.is_some() {
                return t;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("task {id} did not finish");
    }

    #[test]
    fn define_writes_the_vm_directory_and_survives_restart() {
        let (d, h, k) = setup();
        let v = h.define(spec(d.path(), "web01"), "root").unwrap();
        assert_eq!(v.power_state, "poweredOff");
        let dir = d.path().join("volumes/ds1/web01");
        assert_eq!(fs::metadata(dir.join("web01.img")).unwrap().len(), 2 << 20);
        let vmx = fs::read_to_string(dir.join("web01.vmx")).unwrap();
        assert!(vmx.contains("config.version = \"1\"") && vmx.contains("nic0.mac = \"02:4d:4e:"), "{vmx}");
        assert_eq!(h.define(spec(d.path(), "web01"), "root").unwrap_err(), OpError::Conflict("a VM named \"web01\" is already in the inventory".into()));
        drop(h);
        let h = Hostd::open(settings(d.path()), k).unwrap();
        let vms = h.vms();
        assert_eq!(vms.len(), 1);
        assert_eq!(vms[0].config.as_ref().unwrap().memory_mib, 16);
        assert_eq!(vms[0].datastore.as_deref(), Some("ds1"));
        assert!(h.events(0, 100).iter().any(|e| e.kind == "vm.created" && e.user.as_deref() == Some("root")));
    }

    #[test]
    fn first_start_registers_the_vms_found_on_datastores_and_later_starts_do_not() {
        let (d, h, k) = setup();
        h.define(spec(d.path(), "demo"), "root").unwrap();
        let broken = d.path().join("volumes/ds1/broken");
        fs::create_dir_all(&broken).unwrap();
        fs::write(broken.join("broken.vmx"), "not a configuration").unwrap();
        fs::create_dir_all(d.path().join("volumes/ds1/.hidden")).unwrap();
        fs::write(d.path().join("volumes/ds1/.hidden/.hidden.vmx"), "").unwrap();
        drop(h);
        // A new config store (a new host) on the same datastore.
        fs::remove_dir_all(d.path().join("config")).unwrap();
        let h = Hostd::open(settings(d.path()), k.clone()).unwrap();
        let names: Vec<String> = h.vms().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["demo"], "the valid VM directory is registered, the broken and hidden ones are not");
        assert!(h.events(0, 100).iter().any(|e| e.kind == "vm.registered" && e.vm.as_deref() == Some("demo") && e.user.as_deref() == Some("hostd")));
        h.unregister("demo", "root").unwrap();
        drop(h);
        let h = Hostd::open(settings(d.path()), k).unwrap();
        assert!(h.vms().is_empty(), "an unregistered VM stays unregistered on the next start");
    }

    #[test]
    fn disk_paths_may_name_a_datastore_by_its_uuid() {
        let (d, h, _) = setup();
        // As Mantle mounts them: the volume at its UUID, the name a link to it.
        let vols = d.path().join("volumes");
        fs::create_dir(vols.join("5f0c3a1e-6d2b9c41")).unwrap();
        std::os::unix::fs::symlink("5f0c3a1e-6d2b9c41", vols.join("ds2")).unwrap();
        fs::write(vols.join("ds2/shared.img"), b"disk").unwrap();
        for (name, file) in [("byuuid", vols.join("5f0c3a1e-6d2b9c41/shared.img")), ("byname", vols.join("ds2/shared.img"))] {
            let mut s = spec(d.path(), name);
            s.disks = vec![crate::vmx::Disk { file: file.display().to_string(), format: String::new(), readonly: true, size_mib: None }];
            h.define(s, "root").unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        let mut s = spec(d.path(), "elsewhere");
        s.disks = vec![crate::vmx::Disk { file: d.path().join("kernel.bin").display().to_string(), format: String::new(), readonly: true, size_mib: None }];
        assert!(matches!(h.define(s, "root"), Err(OpError::Invalid(Some(f), _)) if f == "disks[0].file"));
        assert_eq!(h.datastores().iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["ds1", "ds2"], "a datastore is listed once, by name");
    }

    #[test]
    fn invalid_define_leaves_nothing_behind() {
        let (d, h, _) = setup();
        let mut s = spec(d.path(), "bad");
        s.vcpus = 0;
        assert!(matches!(h.define(s, "root"), Err(OpError::Invalid(Some(f), _)) if f == "vcpus"));
        let mut s = spec(d.path(), "bad");
        s.disks.push(crate::vmx::Disk { file: "missing.img".into(), format: String::new(), readonly: false, size_mib: None });
        assert!(matches!(h.define(s, "root"), Err(OpError::Invalid(Some(f), _)) if f == "disks[1].file"));
        assert_eq!(fs::read_dir(d.path().join("volumes/ds1")).unwrap().count(), 0);
        assert!(h.vms().is_empty());
    }

    #[test]
    fn power_cycle_goes_through_the_vmkernel() {
        let (d, h, k) = setup();
        h.define(spec(d.path(), "vm1"), "root").unwrap();
        let t = h.power("vm1", PowerAction::On, "op").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(h.vm("vm1").unwrap().power_state, "poweredOn");
        assert!(matches!(h.power("vm1", PowerAction::On, "op"), Err(OpError::Conflict(_))));
        // Powered on: memory cannot change, shares can (and reach the kernel).
        let p: VmConfigPatch = serde_json::from_str(r#"{"memory_mib": 32}"#).unwrap();
        assert!(matches!(h.reconfigure("vm1", &p, "root"), Err(OpError::Conflict(_))));
        let p: VmConfigPatch = serde_json::from_str(r#"{"shares": 500}"#).unwrap();
        h.reconfigure("vm1", &p, "root").unwrap();
        assert_eq!(k.resources.lock().unwrap()[0].1.shares, 500);
        assert!(matches!(h.destroy("vm1", "root"), Err(OpError::Conflict(_))));
        let t = h.power("vm1", PowerAction::Pause, "op").unwrap();
        wait_task(&h, t.id);
        assert_eq!(h.vm("vm1").unwrap().power_state, "paused");
        let t = h.power("vm1", PowerAction::Resume, "op").unwrap();
        wait_task(&h, t.id);
        let t = h.power("vm1", PowerAction::Off, "op").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(h.vm("vm1").unwrap().power_state, "poweredOff");
        assert!(k.vms.lock().unwrap().is_empty(), "powered off VMs are freed in the kernel");
        // A guest that stopped by itself is restarted from a fresh kernel VM.
        let t = h.power("vm1", PowerAction::On, "op").unwrap();
        wait_task(&h, t.id);
        k.guest_stops("vm1");
        assert_eq!(h.vm("vm1").unwrap().exit_reason.as_deref(), Some("halted"));
        let t = h.power("vm1", PowerAction::On, "op").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        let calls = k.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().filter(|c| c.starts_with("create")).count(), 3, "{calls:?}");
        assert!(calls.contains(&"destroy 2".to_string()), "{calls:?}");
        // Guest shutdown: a clear "not supported" while the VMkernel lacks
        // the call; with it, the guest is asked and the VM ends powered off.
        assert!(matches!(h.power("vm1", PowerAction::Shutdown, "op"), Err(OpError::NotSupported(m)) if m.contains("not supported")));
        k.has_shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
        let t = h.power("vm1", PowerAction::Shutdown, "op").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(h.vm("vm1").unwrap().power_state, "poweredOff");
        assert!(k.calls.lock().unwrap().iter().any(|c| c == "shutdown 3"), "{:?}", k.calls.lock().unwrap());
    }

    #[test]
    fn statistics_are_sampled_while_running() {
        let (d, h, k) = setup();
        h.define(spec(d.path(), "vm1"), "root").unwrap();
        assert!(matches!(h.vm_stats("vm1"), Err(OpError::Conflict(_))));
        let t = h.power("vm1", PowerAction::On, "op").unwrap();
        wait_task(&h, t.id);
        h.sample_stats();
        k.guest_runs("vm1", 5_000_000, 300);
        h.sample_stats();
        let s = h.vm_stats("vm1").unwrap();
        assert_eq!((s.run_ns, s.exits, s.guest_memory_bytes), (5_000_000, 300, 16 << 20));
        assert_eq!(s.history.len(), 2);
        assert_eq!((s.history[1].run_ns - s.history[0].run_ns, s.history[1].exits - s.history[0].exits), (5_000_000, 300));
        // Network counters per NIC (the fake switch moves 60 bytes in and 30 out per exit).
        assert_eq!(s.nics.len(), 1);
        assert_eq!((s.nics[0].nic.as_str(), s.nics[0].port_group.as_str(), s.nics[0].rx_bytes, s.nics[0].tx_bytes), ("nic0", "VM Network", 18_000, 9_000));
        assert_eq!((s.history[1].net_rx_bytes - s.history[0].net_rx_bytes, s.history[1].net_tx_bytes - s.history[0].net_tx_bytes), (18_000, 9_000));
        // The kernel answers EBUSY while the vCPUs are still stopping: hostd waits.
        k.busy_destroys.store(3, std::sync::atomic::Ordering::Relaxed);
        let t = h.power("vm1", PowerAction::Off, "op").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(h.vm("vm1").unwrap().power_state, "poweredOff");
        h.sample_stats();
        assert!(lock(&h.samples).is_empty(), "a powered-off VM's samples are dropped");
    }

    #[test]
    fn running_vms_survive_a_hostd_restart() {
        let (d, h, k) = setup();
        h.define(spec(d.path(), "vm1"), "root").unwrap();
        let t = h.power("vm1", PowerAction::On, "op").unwrap();
        wait_task(&h, t.id);
        drop(h);
        let h = Hostd::open(settings(d.path()), k.clone()).unwrap();
        assert_eq!(h.vm("vm1").unwrap().power_state, "poweredOn");
        assert_eq!(k.calls.lock().unwrap().iter().filter(|c| c.starts_with("stop")).count(), 0);
    }

    #[test]
    fn unregister_keeps_files_and_register_brings_the_vm_back() {
        let (d, h, _) = setup();
        let v = h.define(spec(d.path(), "vm1"), "root").unwrap();
        h.unregister("vm1", "root").unwrap();
        assert!(h.vms().is_empty());
        assert!(Path::new(&v.vmx_path).exists());
        let back = h.register(&v.vmx_path, "root").unwrap();
        assert_eq!(back.name, "vm1");
        assert!(matches!(h.register(&v.vmx_path, "root"), Err(OpError::Conflict(_))));
        assert!(matches!(h.register("/etc/passwd.vmx", "root"), Err(OpError::Invalid(..))));
        h.destroy("vm1", "root").unwrap();
        assert!(!d.path().join("volumes/ds1/vm1").exists());
    }

    #[test]
    fn full_and_linked_clones() {
        let (d, h, k) = setup();
        h.define(spec(d.path(), "src"), "root").unwrap();
        let ds = d.path().join("volumes/ds1");
        fs::write(ds.join("src/src.img"), b"disk data").unwrap();
        let clone = |name: &str, linked: bool| CloneSpec { name: name.into(), datastore: None, linked };
        let t = h.clone_vm("src", clone("copy", false), "root").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(fs::read(ds.join("copy/copy.img")).unwrap(), b"disk data");
        let c = h.vm("copy").unwrap().config.unwrap();
        let s = h.vm("src").unwrap().config.unwrap();
        assert_eq!(c.disks[0].file, "copy.img");
        assert_ne!(c.nics[0].mac, s.nics[0].mac, "a clone gets its own MAC");
        assert!(fs::read_to_string(ds.join("copy/copy.vmx")).unwrap().contains("name = \"copy\""));
        assert!(matches!(h.clone_vm("src", clone("copy", false), "root"), Err(OpError::Conflict(_))));
        assert!(matches!(h.clone_vm("src", clone("../x", false), "root"), Err(OpError::Invalid(Some(f), _)) if f == "name"));
        // A raw disk cannot be linked; nothing is left behind.
        assert!(matches!(h.clone_vm("src", clone("lc", true), "root"), Err(OpError::Conflict(m)) if m.contains("qcow2")));
        assert!(!ds.join("lc").exists());
        // qcow2 disks: the clone is an overlay on the source's disk.
        fs::remove_file(ds.join("src/src.img")).unwrap();
        fs::write(ds.join("src/src.img"), crate::qcow2::overlay_bytes("/nonexistent", 1 << 20).unwrap()).unwrap();
        let t = h.clone_vm("src", clone("lc", true), "root").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert_eq!(crate::qcow2::backing_file(&ds.join("lc/lc.img")).unwrap(), ds.join("src/src.img").display().to_string());
        // The base stays still while a linked clone uses it.
        assert!(matches!(h.power("src", PowerAction::On, "root"), Err(OpError::Conflict(m)) if m.contains("linked clones")));
        assert!(matches!(h.destroy("src", "root"), Err(OpError::Conflict(m)) if m.contains("linked clones")));
        h.destroy("lc", "root").unwrap();
        let t = h.power("src", PowerAction::On, "root").unwrap();
        assert_eq!(wait_task(&h, t.id).state, "success");
        assert!(matches!(h.clone_vm("src", clone("c2", false), "root"), Err(OpError::Conflict(m)) if m.contains("powered on")));
        assert!(h.events(0, 100).iter().any(|e| e.kind == "vm.cloned" && e.vm.as_deref() == Some("lc")));
        let _ = k;
    }

    #[test]
    fn reconfigure_validates_and_keeps_the_old_file_on_error() {
        let (d, h, _) = setup();
        let v = h.define(spec(d.path(), "vm1"), "root").unwrap();
        let before = fs::read_to_string(&v.vmx_path).unwrap();
        let p: VmConfigPatch = serde_json::from_str(r#"{"vcpus": 0}"#).unwrap();
        assert!(matches!(h.reconfigure("vm1", &p, "root"), Err(OpError::Invalid(Some(f), _)) if f == "vcpus"));
        assert_eq!(fs::read_to_string(&v.vmx_path).unwrap(), before);
        let p: VmConfigPatch = serde_json::from_str(r#"{"memory_mib": 32, "disks": [{"file": "vm1.img"}, {"file": "data.img", "size_mib": 1}]}"#).unwrap();
        let n = h.reconfigure("vm1", &p, "root").unwrap();
        assert_eq!(n.config.unwrap().disks.len(), 2);
        assert!(d.path().join("volumes/ds1/vm1/data.img").exists());
        let text = fs::read_to_string(&v.vmx_path).unwrap();
        assert!(text.contains("memory_mib = \"32\"") && !text.contains("size_mib"));
    }
}
