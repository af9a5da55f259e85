//! The virtualization back end the model is built on. hostd owns the VM inventory;
//! its REST client ([`crate::hostd::HostdBackend`]) implements [`VirtBackend`] and is
//! the broker's default. [`MemoryBackend`] is an in-process inventory for unit tests
//! and local runs of the broker binary on a development host: it is *not* the
//! acceptance path, which goes through hostd so that a VM defined over CIM is the same
//! VM hostd and vmkcli show.

use crate::auth::Principal;
use std::sync::Mutex;

/// Facts about the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// Capacity of the default datastore, MiB.
    pub storage_mib: u64,
}

/// The power state of a VM, as hostd reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    Off,
    Running,
    Paused,
    ShuttingDown,
    Starting,
    /// The back end cannot tell (hostd cannot reach the VMkernel).
    Unknown,
}

/// A VM's disk.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskInfo {
    /// Image path on the host (HostResource).
    pub path: String,
    pub capacity_mib: u64,
}

/// A VM's network adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct NicInfo {
    pub mac: String,
    pub network: String,
}

/// A VM as the inventory knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct VmInfo {
    /// hostd's stable identifier (used as the CIM Name of the VM).
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub state: PowerState,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    pub notes: String,
    pub boot: BootImage,
    /// The VM's configuration file on its datastore (hostd's `.vmx`), if it has one.
    pub config_file: String,
}

/// What the VM boots: a guest kernel image on the host (hostd's `kernel`, `format`,
/// `cmdline`; Mantle_VirtualSystemSettingData's KernelFile, KernelFormat,
/// KernelCommandLine).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootImage {
    pub kernel: String,
    /// Empty: the back end's default (hostd: multiboot).
    pub format: String,
    pub cmdline: String,
}

/// What DefineSystem asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<DiskInfo>,
    pub nics: Vec<NicInfo>,
    pub notes: String,
    pub boot: BootImage,
}

/// A device of a VM, by its position in [`VmInfo::disks`] or [`VmInfo::nics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRef {
    Disk(usize),
    Nic(usize),
}

/// Changes from Modify/Add/RemoveResourceSettings and ModifySystemSettings.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmChange {
    pub name: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub notes: Option<String>,
    pub kernel: Option<String>,
    pub kernel_format: Option<String>,
    pub cmdline: Option<String>,
    pub add_disks: Vec<DiskInfo>,
    pub add_nics: Vec<NicInfo>,
    pub remove: Vec<DeviceRef>,
}

/// A power operation (DSP1057 RequestStateChange values 2/3/4/9/10/11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    PowerOn,
    PowerOff,
    Shutdown,
    Pause,
    Reboot,
    Reset,
}

/// A long-running operation in the back end (a VM booting, shutting down ...).
#[derive(Clone, Debug, PartialEq)]
pub struct JobInfo {
    pub id: String,
    /// The VM it acts on.
    pub vm_id: Option<String>,
    pub description: String,
    pub state: JobState,
    pub percent_complete: u16,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    New,
    Running,
    Completed,
    Failed,
}

/// How a power operation went: done, or started as a job.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done,
    Started(String),
}

/// Back-end errors, mapped to CIM method return codes or CIM errors.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendError {
    NotFound(String),
    InvalidParameter(String),
    /// The transition is not allowed from the VM's state.
    InvalidState(String),
    AccessDenied(String),
    Failed(String),
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::NotFound(s) => write!(f, "not found: {s}"),
            BackendError::InvalidParameter(s) => write!(f, "invalid parameter: {s}"),
            BackendError::InvalidState(s) => write!(f, "invalid state transition: {s}"),
            BackendError::AccessDenied(s) => write!(f, "access denied: {s}"),
            BackendError::Failed(s) => write!(f, "failed: {s}"),
        }
    }
}

/// The virtualization back end: the VM inventory and lifecycle (hostd). Every call
/// names the caller, so hostd can authorize it as that user.
pub trait VirtBackend: Send + Sync {
    fn host(&self, who: &Principal) -> Result<HostInfo, BackendError>;
    fn list_vms(&self, who: &Principal) -> Result<Vec<VmInfo>, BackendError>;
    fn define_vm(&self, who: &Principal, spec: VmSpec) -> Result<VmInfo, BackendError>;
    fn destroy_vm(&self, who: &Principal, id: &str) -> Result<(), BackendError>;
    fn modify_vm(&self, who: &Principal, id: &str, change: VmChange) -> Result<VmInfo, BackendError>;
    fn power(&self, who: &Principal, id: &str, action: PowerAction) -> Result<Outcome, BackendError>;
    /// Jobs the back end keeps for asynchronous operations.
    fn jobs(&self, _who: &Principal) -> Result<Vec<JobInfo>, BackendError> {
        Ok(Vec::new())
    }
}

/// hostd's rule, mirrored by the in-memory back end: ReadOnly users change nothing.
fn deny_read_only(who: &Principal) -> Result<(), BackendError> {
    if who.role == crate::auth::Role::ReadOnly {
        Err(BackendError::AccessDenied(format!("{} is read-only", who.user)))
    } else {
        Ok(())
    }
}

/// In-memory inventory for unit tests and local development runs (not hostd).
pub struct MemoryBackend {
    host: HostInfo,
    state: Mutex<(u64, Vec<VmInfo>)>,
    /// When set, power operations are reported as jobs (completed at once), the way
    /// hostd reports operations that take time.
    jobs: Option<Mutex<Vec<JobInfo>>>,
}

impl MemoryBackend {
    pub fn new(host: HostInfo) -> MemoryBackend {
        MemoryBackend { host, state: Mutex::new((1, Vec::new())), jobs: None }
    }

    /// Reports power operations as jobs.
    pub fn with_jobs(mut self) -> MemoryBackend {
        self.jobs = Some(Mutex::new(Vec::new()));
        self
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, (u64, Vec<VmInfo>)>, BackendError> {
        self.state.lock().map_err(|_| BackendError::Failed("inventory lock poisoned".into()))
    }
}

impl VirtBackend for MemoryBackend {
    fn host(&self, _who: &Principal) -> Result<HostInfo, BackendError> {
        Ok(self.host.clone())
    }

    fn list_vms(&self, _who: &Principal) -> Result<Vec<VmInfo>, BackendError> {
        Ok(self.lock()?.1.clone())
    }

    fn define_vm(&self, who: &Principal, spec: VmSpec) -> Result<VmInfo, BackendError> {
        deny_read_only(who)?;
        if spec.name.is_empty() || spec.name.len() > 80 {
            return Err(BackendError::InvalidParameter("a VM name of 1 to 80 characters is required".into()));
        }
        if spec.vcpus == 0 || spec.vcpus > self.host.cpus.max(1) * 4 {
            return Err(BackendError::InvalidParameter(format!("vcpus {} out of range", spec.vcpus)));
        }
        if spec.memory_mib == 0 || spec.memory_mib > self.host.memory_mib {
            return Err(BackendError::InvalidParameter(format!("memory {} MiB out of range", spec.memory_mib)));
        }
        let mut st = self.lock()?;
        if st.1.iter().any(|v| v.name == spec.name) {
            return Err(BackendError::InvalidParameter(format!("a VM named {} exists", spec.name)));
        }
        let id = st.0.to_string();
        st.0 += 1;
        let vm = VmInfo {
            id,
            name: spec.name,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            state: PowerState::Off,
            disks: spec.disks,
            nics: spec.nics,
            notes: spec.notes,
            boot: spec.boot,
            config_file: String::new(),
        };
        st.1.push(vm.clone());
        Ok(vm)
    }

    fn destroy_vm(&self, who: &Principal, id: &str) -> Result<(), BackendError> {
        deny_read_only(who)?;
        let mut st = self.lock()?;
        let pos = st.1.iter().position(|v| v.id == id).ok_or_else(|| BackendError::NotFound(id.into()))?;
        if st.1[pos].state != PowerState::Off {
            return Err(BackendError::InvalidState("power the VM off before destroying it".into()));
        }
        st.1.remove(pos);
        Ok(())
    }

    fn modify_vm(&self, who: &Principal, id: &str, change: VmChange) -> Result<VmInfo, BackendError> {
        deny_read_only(who)?;
        let mut st = self.lock()?;
        let vm = st.1.iter_mut().find(|v| v.id == id).ok_or_else(|| BackendError::NotFound(id.into()))?;
        if (change.vcpus.is_some() || change.memory_mib.is_some()) && vm.state != PowerState::Off {
            return Err(BackendError::InvalidState("CPU and memory change only while the VM is off".into()));
        }
        if let Some(m) = change.memory_mib {
            if m == 0 || m > self.host.memory_mib {
                return Err(BackendError::InvalidParameter(format!("memory {m} MiB out of range")));
            }
            vm.memory_mib = m;
        }
        if let Some(c) = change.vcpus {
            if c == 0 || c > self.host.cpus.max(1) * 4 {
                return Err(BackendError::InvalidParameter(format!("vcpus {c} out of range")));
            }
            vm.vcpus = c;
        }
        let mut disks = Vec::new();
        let mut nics = Vec::new();
        for r in &change.remove {
            match *r {
                DeviceRef::Disk(i) if i < vm.disks.len() => disks.push(i),
                DeviceRef::Nic(i) if i < vm.nics.len() => nics.push(i),
                other => return Err(BackendError::NotFound(format!("{other:?}"))),
            }
        }
        if (!disks.is_empty() || !nics.is_empty() || !change.add_disks.is_empty() || !change.add_nics.is_empty())
            && vm.state != PowerState::Off
        {
            return Err(BackendError::InvalidState("devices change only while the VM is off".into()));
        }
        disks.sort_unstable();
        disks.dedup();
        nics.sort_unstable();
        nics.dedup();
        for i in disks.into_iter().rev() {
            vm.disks.remove(i);
        }
        for i in nics.into_iter().rev() {
            vm.nics.remove(i);
        }
        vm.disks.extend(change.add_disks);
        vm.nics.extend(change.add_nics);
        if let Some(n) = change.name {
            vm.name = n;
        }
        if let Some(n) = change.notes {
            vm.notes = n;
        }
        if let Some(k) = change.kernel {
            vm.boot.kernel = k;
        }
        if let Some(f) = change.kernel_format {
            vm.boot.format = f;
        }
        if let Some(c) = change.cmdline {
            vm.boot.cmdline = c;
        }
        Ok(vm.clone())
    }

    fn power(&self, who: &Principal, id: &str, action: PowerAction) -> Result<Outcome, BackendError> {
        deny_read_only(who)?;
        let mut st = self.lock()?;
        let vm = st.1.iter_mut().find(|v| v.id == id).ok_or_else(|| BackendError::NotFound(id.into()))?;
        use PowerAction::*;
        use PowerState::*;
        vm.state = match (vm.state, action) {
            (Off | Paused, PowerOn) => Running,
            (Running | Paused, PowerOff | Shutdown) => Off,
            (Running, Pause) => Paused,
            (Running, Reboot | Reset) => Running,
            (s, a) => return Err(BackendError::InvalidState(format!("{a:?} from {s:?}"))),
        };
        let Some(jobs) = &self.jobs else { return Ok(Outcome::Done) };
        let mut jobs = jobs.lock().map_err(|_| BackendError::Failed("job list lock poisoned".into()))?;
        let job = JobInfo {
            id: (jobs.len() + 1).to_string(),
            vm_id: Some(id.to_string()),
            description: format!("{action:?} {id}"),
            state: JobState::Completed,
            percent_complete: 100,
            error: None,
        };
        let job_id = job.id.clone();
        jobs.push(job);
        Ok(Outcome::Started(job_id))
    }

    fn jobs(&self, _who: &Principal) -> Result<Vec<JobInfo>, BackendError> {
        match &self.jobs {
            Some(j) => Ok(j.lock().map_err(|_| BackendError::Failed("job list lock poisoned".into()))?.clone()),
            None => Ok(Vec::new()),
        }
    }
}
