//! The CIM model: the instances the broker serves, built from the back end (hostd's
//! inventory) on each request, so they are never stale. root/interop holds the
//! DSP1033 profile registration and DSP1071 server objects; root/cimv2 the DSP1042
//! System Virtualization and DSP1057 Virtual System objects.

use crate::auth::Principal;
use crate::backend::{HostInfo, JobInfo, JobState, PowerState, VirtBackend, VmInfo};
use crate::cim::{CimError, Instance, InstancePath, KeyValue, StatusCode, Value};
use crate::repository::{CIMV2_NS, INTEROP_NS, Repository};

pub const HOST_CLASS: &str = "Mantle_HostSystem";
pub const VM_CLASS: &str = "Mantle_ComputerSystem";
pub const VSMS_CLASS: &str = "Mantle_VirtualSystemManagementService";
pub const VSMS_NAME: &str = "vsms";
pub const VSSD_CLASS: &str = "Mantle_VirtualSystemSettingData";
pub const RASD_CLASS: &str = "Mantle_ResourceAllocationSettingData";
pub const SASD_CLASS: &str = "Mantle_StorageAllocationSettingData";
pub const POOL_CLASS: &str = "Mantle_ResourcePool";
pub const OBJECT_MANAGER_NAME: &str = "Mantle:CIMOM";
pub const JOB_CLASS: &str = "Mantle_ConcreteJob";

pub fn job_path(job_id: &str) -> InstancePath {
    InstancePath::new(JOB_CLASS).key_str("InstanceID", format!("Mantle:Job/{job_id}")).with_namespace(CIMV2_NS)
}

/// The product name clients show as the WBEM server's brand.
pub const BRAND: &str = "Mantle";

/// One served instance with its path (the path always carries its namespace).
#[derive(Clone, Debug)]
pub struct Object {
    pub path: InstancePath,
    pub instance: Instance,
}

/// Registered profiles: (name, version, DSP number).
pub const PROFILES: &[(&str, &str, &str)] = &[
    ("Profile Registration", "1.0.0", "DSP1033"),
    ("System Virtualization", "1.0.0", "DSP1042"),
    ("Virtual System", "1.0.0", "DSP1057"),
    ("Resource Allocation", "1.1.0", "DSP1041"),
    ("Computer System", "1.0.0", "DSP1052"),
    ("CPU", "1.0.0", "DSP1022"),
    ("System Memory", "1.0.0", "DSP1026"),
];

fn profile_id(name: &str, version: &str) -> String {
    format!("DMTF+{name}+{version}")
}

pub fn profile_path(name: &str) -> Option<InstancePath> {
    PROFILES.iter().find(|(n, _, _)| *n == name).map(|(n, v, _)| {
        InstancePath::new("CIM_RegisteredProfile").key_str("InstanceID", profile_id(n, v)).with_namespace(INTEROP_NS)
    })
}

/// Builds instances against their class definitions: every property of the class
/// is present (NULL when not set), typed and with its class origin, and the path
/// is made of the class's key properties.
pub struct Builder<'a> {
    repo: &'a Repository,
}

impl<'a> Builder<'a> {
    pub fn new(repo: &'a Repository) -> Builder<'a> {
        Builder { repo }
    }

    /// Makes an object of `class` in `ns` with the given property values.
    /// Unknown property names are a programming error, reported as CIM_ERR_FAILED.
    pub fn make(&self, ns: &str, class: &str, values: Vec<(&str, Value)>) -> Result<Object, CimError> {
        let classes = self
            .repo
            .namespace(ns)
            .ok_or_else(|| CimError::new(StatusCode::Failed, format!("model: no namespace {ns}")))?;
        let def = classes
            .get(class)
            .ok_or_else(|| CimError::new(StatusCode::Failed, format!("model: no class {class} in {ns}")))?;
        for (name, _) in &values {
            if def.property(name).is_none() {
                return Err(CimError::new(StatusCode::Failed, format!("model: {class} has no property {name}")));
            }
        }
        let mut inst = Instance::new(def.name.clone());
        let mut path = InstancePath::new(def.name.clone()).with_namespace(ns);
        for p in &def.properties {
            let value = values.iter().find(|(n, _)| n.eq_ignore_ascii_case(&p.name)).map(|(_, v)| v.clone());
            // Instances carry no qualifiers: copy the declaration without them.
            let prop = crate::cim::Property {
                name: p.name.clone(),
                ty: p.ty,
                is_array: p.is_array,
                reference_class: p.reference_class.clone(),
                value,
                class_origin: p.class_origin.clone(),
                propagated: p.propagated,
                embedded_object: p.embedded_object.clone(),
                qualifiers: Vec::new(),
            };
            if p.is_key() {
                let kv = match &prop.value {
                    Some(Value::Reference(r)) => KeyValue::Reference(Box::new(r.clone())),
                    Some(Value::Scalar(s)) => KeyValue::Text {
                        value_type: p.ty.key_value_type().into(),
                        cim_type: Some(p.ty),
                        text: s.clone(),
                    },
                    _ => {
                        return Err(CimError::new(StatusCode::Failed, format!("model: {class}.{} key not set", p.name)));
                    }
                };
                path.keys.push(crate::cim::KeyBinding { name: p.name.clone(), value: kv });
            }
            inst.properties.push(prop);
        }
        Ok(Object { path, instance: inst })
    }
}

fn s(v: impl Into<String>) -> Value {
    Value::Scalar(v.into())
}
fn n(v: impl std::fmt::Display) -> Value {
    Value::num(v)
}
fn r(p: &InstancePath) -> Value {
    Value::Reference(p.clone())
}
fn nums(v: &[u16]) -> Value {
    Value::Array(v.iter().map(|x| Some(x.to_string())).collect())
}

/// DSP1057 EnabledState for a power state.
pub fn enabled_state(state: PowerState) -> u16 {
    match state {
        PowerState::Running => 2,
        PowerState::Off => 3,
        PowerState::ShuttingDown => 4,
        PowerState::Paused => 9,
        PowerState::Starting => 10,
        PowerState::Unknown => 0,
    }
}

pub fn host_path(host: &HostInfo) -> InstancePath {
    InstancePath::new(HOST_CLASS)
        .key_str("CreationClassName", HOST_CLASS)
        .key_str("Name", host.hostname.clone())
        .with_namespace(CIMV2_NS)
}

pub fn vm_path(vm_id: &str) -> InstancePath {
    InstancePath::new(VM_CLASS).key_str("CreationClassName", VM_CLASS).key_str("Name", vm_id).with_namespace(CIMV2_NS)
}

pub fn vsms_path(host: &HostInfo) -> InstancePath {
    InstancePath::new(VSMS_CLASS)
        .key_str("CreationClassName", VSMS_CLASS)
        .key_str("Name", VSMS_NAME)
        .key_str("SystemCreationClassName", HOST_CLASS)
        .key_str("SystemName", host.hostname.clone())
        .with_namespace(CIMV2_NS)
}

/// InstanceIDs of a VM's settings: `Mantle:<vm id>` for the VSSD and
/// `Mantle:<vm id>/<resource>` for its RASDs.
pub fn vssd_id(vm_id: &str) -> String {
    format!("Mantle:{vm_id}")
}

/// Splits a RASD/VSSD InstanceID into (vm id, resource part).
pub fn parse_setting_id(id: &str) -> Option<(&str, Option<&str>)> {
    let rest = id.strip_prefix("Mantle:")?;
    Some(match rest.split_once('/') {
        Some((vm, res)) => (vm, Some(res)),
        None => (rest, None),
    })
}

/// What the model is built from: the back end's state at one moment. The broker
/// rebuilds its objects only when this changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    pub host: HostInfo,
    pub vms: Vec<VmInfo>,
    pub jobs: Vec<JobInfo>,
}

/// Reads the back end's state as `who`.
pub fn inputs(backend: &dyn VirtBackend, who: &Principal) -> Result<Inputs, CimError> {
    let fail = |e: crate::backend::BackendError| CimError::new(StatusCode::Failed, format!("back end: {e}"));
    Ok(Inputs { host: backend.host(who).map_err(fail)?, vms: backend.list_vms(who).map_err(fail)?, jobs: backend.jobs(who).map_err(fail)? })
}

/// Builds the objects the broker serves: those of one namespace, or of both (for
/// association traversals, which cross from root/interop into root/cimv2).
pub fn build(repo: &Repository, inputs: &Inputs, only: Option<&str>) -> Result<Vec<Object>, CimError> {
    let b = Builder::new(repo);
    let mut out = Vec::with_capacity(64 + inputs.vms.len() * 24);
    if only.is_none_or(|ns| ns == INTEROP_NS) {
        interop(&b, &inputs.host, &inputs.vms, &mut out)?;
    }
    if only.is_none_or(|ns| ns == CIMV2_NS) {
        virtualization(&b, &inputs.host, &inputs.vms, &mut out)?;
        jobs_objects(&b, &inputs.jobs, &mut out)?;
    }
    Ok(out)
}

/// Reads the back end and builds the objects (see [`build`]).
pub fn snapshot(repo: &Repository, backend: &dyn VirtBackend, who: &Principal, only: Option<&str>) -> Result<Vec<Object>, CimError> {
    build(repo, &inputs(backend, who)?, only)
}

fn interop(b: &Builder<'_>, host: &HostInfo, vms: &[VmInfo], out: &mut Vec<Object>) -> Result<(), CimError> {
    let ns = INTEROP_NS;
    let om = b.make(ns, "CIM_ObjectManager", vec![
        ("SystemCreationClassName", s(HOST_CLASS)),
        ("SystemName", s(host.hostname.clone())),
        ("CreationClassName", s("CIM_ObjectManager")),
        ("Name", s(OBJECT_MANAGER_NAME)),
        ("ElementName", s(BRAND)),
        ("Caption", s("Mantle CIM broker")),
        ("Description", s(format!("{BRAND} CIM broker {}", env!("CARGO_PKG_VERSION")))),
        ("EnabledState", n(2)),
        ("RequestedState", n(12)),
        ("OperationalStatus", nums(&[2])),
        ("Started", Value::bool(true)),
        ("GatherStatisticalData", Value::bool(false)),
    ])?;
    let om_path = om.path.clone();
    out.push(om);
    for name in [INTEROP_NS, CIMV2_NS] {
        out.push(b.make(ns, "CIM_Namespace", vec![
            ("SystemCreationClassName", s(HOST_CLASS)),
            ("SystemName", s(host.hostname.clone())),
            ("ObjectManagerCreationClassName", s("CIM_ObjectManager")),
            ("ObjectManagerName", s(OBJECT_MANAGER_NAME)),
            ("CreationClassName", s("CIM_Namespace")),
            ("Name", s(name)),
            ("ClassInfo", n(0)),
            ("ClassType", n(2)),
            ("ClassTypeVersion", s("2.41.0")),
        ])?);
    }
    for (name, version, dsp) in PROFILES {
        out.push(b.make(ns, "CIM_RegisteredProfile", vec![
            ("InstanceID", s(profile_id(name, version))),
            ("RegisteredOrganization", n(2)),
            ("RegisteredName", s(*name)),
            ("RegisteredVersion", s(*version)),
            ("AdvertiseTypes", nums(&[2])),
            ("SpecificationType", n(2)),
            ("Caption", s(format!("{dsp} {name} {version}"))),
        ])?);
    }
    let prof = |name: &str| profile_path(name).ok_or_else(|| CimError::new(StatusCode::Failed, "profile"));
    // DSP1033: the referencing profile is the Dependent.
    for (referenced, referencing) in [
        ("Virtual System", "System Virtualization"),
        ("Resource Allocation", "System Virtualization"),
        ("Computer System", "Virtual System"),
        ("CPU", "Computer System"),
        ("System Memory", "Computer System"),
    ] {
        out.push(b.make(ns, "CIM_ReferencedProfile", vec![
            ("Antecedent", r(&prof(referenced)?)),
            ("Dependent", r(&prof(referencing)?)),
        ])?);
    }
    let conforms = conformance_pairs(host, vms, Some(om_path))?;
    conformance(b, ns, conforms, out)
}

/// Element conformance lives in both namespaces so that either side can traverse it.
fn conformance(b: &Builder<'_>, ns: &str, conforms: Vec<(InstancePath, InstancePath)>, out: &mut Vec<Object>) -> Result<(), CimError> {
    for (p, e) in &conforms {
        out.push(b.make(ns, "CIM_ElementConformsToProfile", vec![("ConformantStandard", r(p)), ("ManagedElement", r(e))])?);
    }
    Ok(())
}

fn conformance_pairs(host: &HostInfo, vms: &[VmInfo], om: Option<InstancePath>) -> Result<Vec<(InstancePath, InstancePath)>, CimError> {
    let prof = |name: &str| profile_path(name).ok_or_else(|| CimError::new(StatusCode::Failed, "profile"));
    let mut conforms = Vec::new();
    if let Some(om) = om {
        conforms.push((prof("Profile Registration")?, om));
    }
    conforms.push((prof("System Virtualization")?, host_path(host)));
    for vm in vms {
        conforms.push((prof("Virtual System")?, vm_path(&vm.id)));
    }
    Ok(conforms)
}

struct Pool {
    kind: &'static str,
    resource_type: u16,
    units: &'static str,
    capacity: u64,
    used: u64,
}

fn pool_id(kind: &str) -> String {
    format!("Mantle:Pool/{kind}")
}

pub fn pool_path(kind: &str) -> InstancePath {
    InstancePath::new(POOL_CLASS).key_str("InstanceID", pool_id(kind)).with_namespace(CIMV2_NS)
}

fn virtualization(b: &Builder<'_>, host: &HostInfo, vms: &[VmInfo], out: &mut Vec<Object>) -> Result<(), CimError> {
    let ns = CIMV2_NS;
    conformance(b, ns, conformance_pairs(host, vms, None)?, out)?;
    let hp = host_path(host);
    out.push(b.make(ns, HOST_CLASS, vec![
        ("CreationClassName", s(HOST_CLASS)),
        ("Name", s(host.hostname.clone())),
        ("ElementName", s(host.hostname.clone())),
        ("Caption", s("Mantle host")),
        ("NameFormat", s("Other")),
        ("Dedicated", nums(&[2])),
        ("OtherDedicatedDescriptions", Value::str_array(["Virtual machine host"])),
        ("EnabledState", n(2)),
        ("RequestedState", n(12)),
        ("OperationalStatus", nums(&[2])),
        ("HealthState", n(5)),
    ])?);
    // DSP1022/DSP1026: the host's processors and system memory.
    for cpu in 0..host.cpus {
        let p = b.make(ns, "Mantle_Processor", vec![
            ("SystemCreationClassName", s(HOST_CLASS)),
            ("SystemName", s(host.hostname.clone())),
            ("CreationClassName", s("Mantle_Processor")),
            ("DeviceID", s(format!("CPU{cpu}"))),
            ("ElementName", s(format!("CPU {cpu}"))),
            ("Role", s("Central Processor")),
            ("Family", n(1)),
            ("DataWidth", n(64)),
            ("AddressWidth", n(64)),
            ("CPUStatus", n(1)),
            ("NumberOfEnabledCores", n(1)),
            ("EnabledState", n(2)),
            ("RequestedState", n(12)),
            ("OperationalStatus", nums(&[2])),
            ("HealthState", n(5)),
        ])?;
        out.push(b.make(ns, "CIM_SystemDevice", vec![("GroupComponent", r(&hp)), ("PartComponent", r(&p.path))])?);
        out.push(p);
    }
    let mem = b.make(ns, "Mantle_Memory", vec![
        ("SystemCreationClassName", s(HOST_CLASS)),
        ("SystemName", s(host.hostname.clone())),
        ("CreationClassName", s("Mantle_Memory")),
        ("DeviceID", s("memory")),
        ("ElementName", s("System memory")),
        ("BlockSize", n(4096)),
        ("NumberOfBlocks", n(host.memory_mib * 256)),
        ("ConsumableBlocks", n(host.memory_mib * 256)),
        ("Volatile", Value::bool(true)),
        ("Primordial", Value::bool(false)),
        ("EnabledState", n(2)),
        ("RequestedState", n(12)),
        ("OperationalStatus", nums(&[2])),
        ("HealthState", n(5)),
    ])?;
    out.push(b.make(ns, "CIM_SystemDevice", vec![("GroupComponent", r(&hp)), ("PartComponent", r(&mem.path))])?);
    out.push(mem);
    let vsms = vsms_path(host);
    out.push(b.make(ns, VSMS_CLASS, vec![
        ("SystemCreationClassName", s(HOST_CLASS)),
        ("SystemName", s(host.hostname.clone())),
        ("CreationClassName", s(VSMS_CLASS)),
        ("Name", s(VSMS_NAME)),
        ("ElementName", s("Virtual system management service")),
        ("EnabledState", n(2)),
        ("RequestedState", n(12)),
        ("OperationalStatus", nums(&[2])),
        ("HealthState", n(5)),
        ("Started", Value::bool(true)),
    ])?);
    out.push(b.make(ns, "CIM_HostedService", vec![("Antecedent", r(&hp)), ("Dependent", r(&vsms))])?);
    let vsmc = b.make(ns, "Mantle_VirtualSystemManagementCapabilities", vec![
        ("InstanceID", s("Mantle:VSMC")),
        ("ElementName", s("Virtual system management capabilities")),
        ("SynchronousMethodsSupported", nums(&[0, 1, 2, 3, 4, 5])),
        ("AsynchronousMethodsSupported", Value::Array(Vec::new())),
        ("VirtualSystemTypesSupported", Value::str_array(["DMTF:x86:64"])),
    ])?;
    out.push(b.make(ns, "CIM_ElementCapabilities", vec![
        ("ManagedElement", r(&vsms)),
        ("Capabilities", r(&vsmc.path)),
        ("Characteristics", nums(&[2, 3])),
    ])?);
    out.push(vsmc);

    let used_cpus: u64 = vms.iter().map(|v| u64::from(v.vcpus)).sum();
    let used_mem: u64 = vms.iter().map(|v| v.memory_mib).sum();
    let used_disk: u64 = vms.iter().flat_map(|v| v.disks.iter()).map(|d| d.capacity_mib).sum();
    let used_nics = vms.iter().map(|v| v.nics.len() as u64).sum();
    let pools = [
        Pool { kind: "Processor", resource_type: 3, units: "count", capacity: u64::from(host.cpus), used: used_cpus },
        Pool { kind: "Memory", resource_type: 4, units: "byte*2^20", capacity: host.memory_mib, used: used_mem },
        Pool { kind: "Disk", resource_type: 31, units: "byte*2^20", capacity: host.storage_mib, used: used_disk },
        Pool { kind: "Ethernet", resource_type: 10, units: "count", capacity: 0, used: used_nics },
    ];
    for p in &pools {
        let pool = b.make(ns, POOL_CLASS, vec![
            ("InstanceID", s(pool_id(p.kind))),
            ("PoolID", s(p.kind)),
            ("ElementName", s(format!("{} pool", p.kind))),
            ("Primordial", Value::bool(true)),
            ("ResourceType", n(p.resource_type)),
            ("AllocationUnits", s(p.units)),
            ("Capacity", n(p.capacity)),
            ("Reserved", n(p.used)),
            ("OperationalStatus", nums(&[2])),
        ])?;
        out.push(b.make(ns, "CIM_HostedResourcePool", vec![("Antecedent", r(&hp)), ("Dependent", r(&pool.path))])?);
        out.push(pool);
    }

    for vm in vms {
        let vp = vm_path(&vm.id);
        let state = enabled_state(vm.state);
        out.push(b.make(ns, VM_CLASS, vec![
            ("CreationClassName", s(VM_CLASS)),
            ("Name", s(vm.id.clone())),
            ("ElementName", s(vm.name.clone())),
            ("Caption", s("Virtual machine")),
            ("NameFormat", s("Other")),
            ("Dedicated", nums(&[0])),
            ("EnabledState", n(state)),
            ("RequestedState", n(12)),
            ("EnabledDefault", n(3)),
            ("OperationalStatus", nums(&[if state == 3 { 10 } else { 2 }])),
            ("HealthState", n(5)),
            ("AvailableRequestedStates", nums(&[2, 3, 4, 9, 10, 11])),
        ])?);
        out.push(b.make(ns, "CIM_HostedDependency", vec![("Antecedent", r(&hp)), ("Dependent", r(&vp))])?);
        out.push(b.make(ns, "CIM_ServiceAffectsElement", vec![
            ("AffectedElement", r(&vp)),
            ("AffectingElement", r(&vsms)),
            ("ElementEffects", nums(&[5])),
        ])?);
        let caps = b.make(ns, "Mantle_EnabledLogicalElementCapabilities", vec![
            ("InstanceID", s(format!("Mantle:{}/capabilities", vm.id))),
            ("ElementName", s(format!("{} capabilities", vm.name))),
            ("ElementNameEditSupported", Value::bool(true)),
            ("MaxElementNameLen", n(80)),
            ("RequestedStatesSupported", nums(&[2, 3, 4, 9, 10, 11])),
        ])?;
        out.push(b.make(ns, "CIM_ElementCapabilities", vec![
            ("ManagedElement", r(&vp)),
            ("Capabilities", r(&caps.path)),
            ("Characteristics", nums(&[3])),
        ])?);
        out.push(caps);
        let vssd = b.make(ns, VSSD_CLASS, vec![
            ("InstanceID", s(vssd_id(&vm.id))),
            ("ElementName", s(vm.name.clone())),
            ("VirtualSystemIdentifier", s(vm.id.clone())),
            ("VirtualSystemType", s("DMTF:x86:64")),
            ("Notes", Value::str_array([vm.notes.clone()])),
            ("ConfigurationFile", s(vm.config_file.clone())),
            ("KernelFile", s(vm.boot.kernel.clone())),
            ("KernelFormat", s(vm.boot.format.clone())),
            ("KernelCommandLine", s(vm.boot.cmdline.clone())),
        ])?;
        out.push(b.make(ns, "CIM_SettingsDefineState", vec![("ManagedElement", r(&vp)), ("SettingData", r(&vssd.path))])?);
        out.push(b.make(ns, "CIM_ElementSettingData", vec![
            ("ManagedElement", r(&vp)),
            ("SettingData", r(&vssd.path)),
            ("IsDefault", n(1)),
            ("IsCurrent", n(1)),
            ("IsNext", n(1)),
        ])?);
        let vssd_path = vssd.path.clone();
        out.push(vssd);

        let mut rasds: Vec<(Object, &str)> = Vec::new();
        rasds.push((
            b.make(ns, RASD_CLASS, vec![
                ("InstanceID", s(format!("Mantle:{}/proc", vm.id))),
                ("ElementName", s("Processor")),
                ("ResourceType", n(3)),
                ("PoolID", s("Processor")),
                ("ConsumerVisibility", n(3)),
                ("AllocationUnits", s("count")),
                ("VirtualQuantity", n(vm.vcpus)),
                ("VirtualQuantityUnits", s("count")),
            ])?,
            "Processor",
        ));
        rasds.push((
            b.make(ns, RASD_CLASS, vec![
                ("InstanceID", s(format!("Mantle:{}/mem", vm.id))),
                ("ElementName", s("Memory")),
                ("ResourceType", n(4)),
                ("PoolID", s("Memory")),
                ("ConsumerVisibility", n(3)),
                ("AllocationUnits", s("byte*2^20")),
                ("VirtualQuantity", n(vm.memory_mib)),
                ("VirtualQuantityUnits", s("byte*2^20")),
                ("Reservation", n(vm.memory_mib)),
                ("Limit", n(vm.memory_mib)),
            ])?,
            "Memory",
        ));
        for (i, d) in vm.disks.iter().enumerate() {
            rasds.push((
                b.make(ns, SASD_CLASS, vec![
                    ("InstanceID", s(format!("Mantle:{}/disk{i}", vm.id))),
                    ("ElementName", s(format!("Disk {i}"))),
                    ("ResourceType", n(31)),
                    ("PoolID", s("Disk")),
                    ("HostResource", Value::str_array([d.path.clone()])),
                    ("AllocationUnits", s("byte*2^20")),
                    ("VirtualQuantity", n(d.capacity_mib)),
                    ("Access", n(3)),
                    ("AddressOnParent", s(i.to_string())),
                ])?,
                "Disk",
            ));
        }
        for (i, nic) in vm.nics.iter().enumerate() {
            rasds.push((
                b.make(ns, RASD_CLASS, vec![
                    ("InstanceID", s(format!("Mantle:{}/net{i}", vm.id))),
                    ("ElementName", s(format!("Ethernet adapter {i}"))),
                    ("ResourceType", n(10)),
                    ("PoolID", s("Ethernet")),
                    ("Address", s(nic.mac.clone())),
                    ("Connection", Value::str_array([nic.network.clone()])),
                    ("VirtualQuantity", n(1)),
                    ("AllocationUnits", s("count")),
                ])?,
                "Ethernet",
            ));
        }
        for (rasd, kind) in rasds {
            out.push(b.make(ns, "CIM_VirtualSystemSettingDataComponent", vec![
                ("GroupComponent", r(&vssd_path)),
                ("PartComponent", r(&rasd.path)),
            ])?);
            out.push(b.make(ns, "CIM_ResourceAllocationFromPool", vec![
                ("Antecedent", r(&pool_path(kind))),
                ("Dependent", r(&rasd.path)),
            ])?);
            out.push(rasd);
        }
    }
    Ok(())
}

fn jobs_objects(b: &Builder<'_>, jobs: &[JobInfo], out: &mut Vec<Object>) -> Result<(), CimError> {
    for job in jobs {
        let (state, status) = match job.state {
            JobState::New => (2, "New"),
            JobState::Running => (4, "Running"),
            JobState::Completed => (7, "Completed"),
            JobState::Failed => (10, "Exception"),
        };
        let mut values = vec![
            ("InstanceID", s(format!("Mantle:Job/{}", job.id))),
            ("Name", s(job.description.clone())),
            ("ElementName", s(job.description.clone())),
            ("JobState", n(state)),
            ("JobStatus", s(status)),
            ("PercentComplete", n(job.percent_complete)),
            ("DeleteOnCompletion", Value::bool(false)),
            ("OperationalStatus", nums(if job.state == JobState::Failed { &[6] } else { &[2] })),
        ];
        if let Some(e) = &job.error {
            values.push(("ErrorDescription", s(e.clone())));
        }
        let obj = b.make(CIMV2_NS, JOB_CLASS, values)?;
        if let Some(vm) = &job.vm_id {
            out.push(b.make(CIMV2_NS, "CIM_AffectedJobElement", vec![
                ("AffectedElement", r(&vm_path(vm))),
                ("AffectingElement", r(&obj.path)),
                ("ElementEffects", nums(&[6])),
            ])?);
        }
        out.push(obj);
    }
    Ok(())
}

/// Sets a property on an instance, typed against nothing (used for decoded input).
pub fn scalar_u64(inst: &Instance, name: &str) -> Option<u64> {
    inst.scalar(name).and_then(|v| v.trim().parse().ok())
}

/// Converts `VirtualQuantity` in `AllocationUnits` (DSP0004 programmatic units) to MiB.
pub fn quantity_mib(inst: &Instance) -> Option<u64> {
    let q = scalar_u64(inst, "VirtualQuantity")?;
    let units = inst.scalar("AllocationUnits").unwrap_or("byte*2^20").replace(' ', "").to_ascii_lowercase();
    match units.as_str() {
        "byte*2^20" | "megabytes" | "mb" | "mib" => Some(q),
        "byte*2^30" | "gigabytes" | "gb" | "gib" => q.checked_mul(1024),
        "byte*2^10" | "kilobytes" | "kb" | "kib" => Some(q / 1024),
        "byte" | "bytes" => Some(q / (1024 * 1024)),
        _ => None,
    }
}

