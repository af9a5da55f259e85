//! A VM's configuration file (`<datastore>/<vm>/<vm>.vmx`): its format,
//! its JSON form in the API, and the rules a configuration must satisfy.
//!
//! The file is plain text, one `key = "value"` per line, `#` starts a comment
//! line (the same shape as VMware's `.vmx` and close to the kernel's own
//! `vmkcli` configuration, `vmkernel::vmk_api::VmConfig`). Values are quoted;
//! inside the quotes `\\`, `\"` and `\n` are escapes. Keys:
//!
//! | key | meaning |
//! | --- | --- |
//! | `config.version` | format version, `1` (required, first) |
//! | `name` | VM name: 1–32 letters, digits, `-`, `_`, `.`; not starting with `.` |
//! | `memory_mib`, `vcpus` | guest RAM in MiB (4 … host RAM), virtual CPUs (1 … host CPUs, at most 16) |
//! | `kernel` | absolute path of the kernel the VM boots |
//! | `format` | `multiboot` (default), `elf64` or `flat` |
//! | `load_address`, `entry`, `entry_mode` | `flat` only: where the bytes go, where to enter, `real` or `protected` |
//! | `cmdline` | the kernel command line |
//! | `moduleN.path`, `moduleN.args` | Multiboot modules (N from 0, at most 16) |
//! | `shares`, `reservation_pct`, `limit_pct` | CPU shares (1–1000000), reservation and limit in percent of one host CPU |
//! | `diskN.file` | a disk image: a file name in the VM's directory, or an absolute path on a datastore (at most 8) |
//! | `nicN.network`, `nicN.mac`, `nicN.model` | a NIC: port group, unicast MAC `xx:xx:xx:xx:xx:xx`, `virtio-net`, `e1000` or `e1000e` (at most 4) |
//! | `annotation` | free text for the administrator |
//!
//! Disks and NICs are inventory data today: the VMkernel's VMM has no disk or
//! network devices yet, so a power-on passes only the boot, CPU, memory and
//! resource settings to the kernel ([`VmConfig::kernel_text`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The configuration file format version this hostd writes and reads.
pub const CONFIG_VERSION: u32 = 1;
pub const NAME_MAX: usize = 32;
pub const MAX_VCPUS: u32 = 16;
pub const MAX_MEMORY_MIB: u32 = 64 * 1024;
pub const MAX_MODULES: usize = 16;
pub const MAX_DISKS: usize = 8;
pub const MAX_NICS: usize = 4;
/// FAT datastores end files at 4 GiB - 1.
pub const MAX_NEW_DISK_MIB: u64 = 4095;
pub const NIC_MODELS: [&str; 3] = ["virtio-net", "e1000", "e1000e"];
pub const FORMATS: [&str; 3] = ["multiboot", "elf64", "flat"];

/// A Multiboot module: the guest sees the string `"<path> <args>"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Module {
    pub path: String,
    #[serde(default)]
    pub args: String,
}

/// A virtual disk backed by an image file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// A file name in the VM's directory, or an absolute path on a datastore.
    pub file: String,
    /// Only when creating or reconfiguring: create the file with this size
    /// (MiB, sparse) if it does not exist yet. Never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_mib: Option<u64>,
}

/// A virtual NIC on a port group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// Port group name (one of the host's, e.g. "VM Network").
    pub network: String,
    /// Unicast MAC address; generated when empty.
    #[serde(default)]
    pub mac: String,
    /// `virtio-net` (default), `e1000` or `e1000e`.
    #[serde(default = "default_nic_model")]
    pub model: String,
}

fn default_nic_model() -> String {
    "virtio-net".into()
}

/// A VM's configuration: what the `.vmx` file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmConfig {
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// Absolute path of the kernel to boot.
    pub kernel: String,
    /// `multiboot`, `elf64` or `flat`.
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_address: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<u32>,
    /// `flat` only: `real` or `protected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_mode: Option<String>,
    pub cmdline: String,
    pub modules: Vec<Module>,
    /// CPU shares (relative weight), 1 to 1000000.
    pub shares: u32,
    /// Guaranteed CPU, percent of one host CPU.
    pub reservation_pct: u32,
    /// Maximum CPU, percent of one host CPU (none: unlimited).
    pub limit_pct: Option<u32>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub annotation: String,
}

/// Deserialises a present field (even `null`) as `Some(value)`, so a patch
/// can tell "absent" from "set to null".
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A request to define a VM: the configuration (defaults for what is left
/// out) and the datastore to put its directory on.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmCreateSpec {
    pub name: String,
    /// Datastore name; the first datastore when left out.
    #[serde(default)]
    pub datastore: Option<String>,
    #[serde(default = "default_memory")]
    pub memory_mib: u32,
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    pub kernel: String,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default)]
    pub load_address: Option<u32>,
    #[serde(default)]
    pub entry: Option<u32>,
    #[serde(default)]
    pub entry_mode: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    #[serde(default)]
    pub modules: Vec<Module>,
    #[serde(default = "default_shares")]
    pub shares: u32,
    #[serde(default)]
    pub reservation_pct: u32,
    #[serde(default)]
    pub limit_pct: Option<u32>,
    #[serde(default)]
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    #[serde(default)]
    pub annotation: String,
}

fn default_memory() -> u32 {
    64
}
fn default_vcpus() -> u32 {
    1
}
fn default_format() -> String {
    "multiboot".into()
}
fn default_shares() -> u32 {
    1000
}

impl VmCreateSpec {
    pub fn into_config(self) -> (Option<String>, VmConfig) {
        let c = VmConfig {
            name: self.name,
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            kernel: self.kernel,
            format: self.format,
            load_address: self.load_address,
            entry: self.entry,
            entry_mode: self.entry_mode,
            cmdline: self.cmdline,
            modules: self.modules,
            shares: self.shares,
            reservation_pct: self.reservation_pct,
            limit_pct: self.limit_pct,
            disks: self.disks,
            nics: self.nics,
            annotation: self.annotation,
        };
        (self.datastore, c)
    }
}

/// A reconfiguration: only the fields given change (`null` clears an
/// optional one). The name cannot change.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmConfigPatch {
    pub memory_mib: Option<u32>,
    pub vcpus: Option<u32>,
    pub kernel: Option<String>,
    pub format: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub load_address: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub entry: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub entry_mode: Option<Option<String>>,
    pub cmdline: Option<String>,
    pub modules: Option<Vec<Module>>,
    pub shares: Option<u32>,
    pub reservation_pct: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    pub limit_pct: Option<Option<u32>>,
    pub disks: Option<Vec<Disk>>,
    pub nics: Option<Vec<Nic>>,
    pub annotation: Option<String>,
}

impl VmConfigPatch {
    /// The configuration with this patch applied.
    pub fn apply(&self, c: &VmConfig) -> VmConfig {
        let mut n = c.clone();
        let p = self.clone();
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = p.$f { n.$f = v; } )* };
        }
        set!(memory_mib, vcpus, kernel, format, load_address, entry, entry_mode, cmdline, modules, shares, reservation_pct, limit_pct, disks, nics, annotation);
        n
    }

    /// True when only settings that can change while the VM runs are given.
    pub fn only_live_settings(&self) -> bool {
        let p = self;
        p.memory_mib.is_none()
            && p.vcpus.is_none()
            && p.kernel.is_none()
            && p.format.is_none()
            && p.load_address.is_none()
            && p.entry.is_none()
            && p.entry_mode.is_none()
            && p.cmdline.is_none()
            && p.modules.is_none()
            && p.disks.is_none()
            && p.nics.is_none()
    }

    pub fn touches_resources(&self) -> bool {
        self.shares.is_some() || self.reservation_pct.is_some() || self.limit_pct.is_some()
    }
}

/// A configuration rule that failed: which field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// What validation needs to know about the host.
pub struct HostLimits<'a> {
    pub memory_mib: u64,
    pub cpus: u32,
    pub port_groups: &'a [String],
    /// Datastore roots (absolute disk paths must be under one).
    pub datastores: &'a [PathBuf],
    /// Check that files (kernel, modules, disks) exist.
    pub check_files: bool,
}

/// True for a VM name hostd accepts (also a safe directory name).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn text_ok(field: &str, v: &str, max: usize) -> Result<(), FieldError> {
    if v.len() > max {
        return Err(FieldError::new(field, format!("at most {max} bytes")));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return Err(FieldError::new(field, "control characters are not allowed"));
    }
    Ok(())
}

fn one_line(field: &str, v: &str, max: usize) -> Result<(), FieldError> {
    text_ok(field, v, max)?;
    if v.contains('\n') {
        return Err(FieldError::new(field, "must be one line"));
    }
    Ok(())
}

fn abs_file(field: &str, path: &str, check: bool) -> Result<(), FieldError> {
    one_line(field, path, 1024)?;
    if !path.starts_with('/') {
        return Err(FieldError::new(field, format!("{path:?}: an absolute path is required")));
    }
    if path.contains(char::is_whitespace) {
        return Err(FieldError::new(field, format!("{path:?}: blanks are not allowed in paths")));
    }
    if check && !Path::new(path).is_file() {
        return Err(FieldError::new(field, format!("{path:?} does not exist or is not a file")));
    }
    Ok(())
}

/// Checks a MAC address string: six hex pairs, unicast, not all zeros.
pub fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return false;
    }
    let Ok(bytes) = parts.iter().map(|p| u8::from_str_radix(p, 16)).collect::<Result<Vec<u8>, _>>() else {
        return false;
    };
    bytes[0] & 1 == 0 && bytes.iter().any(|&b| b != 0)
}

impl VmConfig {
    /// Where a disk's file is, given the VM's directory.
    pub fn disk_path(vm_dir: &Path, file: &str) -> PathBuf {
        if file.starts_with('/') { PathBuf::from(file) } else { vm_dir.join(file) }
    }

    /// Checks every rule; the first broken one names its field.
    /// `vm_dir` is where relative disk files live (None: not known yet,
    /// skip disk existence checks).
    pub fn validate(&self, host: &HostLimits, vm_dir: Option<&Path>) -> Result<(), FieldError> {
        if !valid_name(&self.name) {
            return Err(FieldError::new(
                "name",
                format!("{:?}: 1 to {NAME_MAX} letters, digits, '-', '_' or '.', not starting with '.'", self.name),
            ));
        }
        let mem_max = (MAX_MEMORY_MIB as u64).min(host.memory_mib);
        if self.memory_mib < 4 || self.memory_mib as u64 > mem_max {
            return Err(FieldError::new("memory_mib", format!("{}: must be 4 to {mem_max} (the host's memory)", self.memory_mib)));
        }
        let cpu_max = MAX_VCPUS.min(host.cpus.max(1));
        if self.vcpus < 1 || self.vcpus > cpu_max {
            return Err(FieldError::new("vcpus", format!("{}: must be 1 to {cpu_max} (the host's CPUs)", self.vcpus)));
        }
        abs_file("kernel", &self.kernel, host.check_files)?;
        if !FORMATS.contains(&self.format.as_str()) {
            return Err(FieldError::new("format", format!("{:?}: multiboot, elf64 or flat", self.format)));
        }
        if self.format == "flat" {
            let Some(load) = self.load_address else {
                return Err(FieldError::new("load_address", "required for format flat"));
            };
            let real = match self.entry_mode.as_deref() {
                None | Some("protected") => false,
                Some("real") => true,
                Some(m) => return Err(FieldError::new("entry_mode", format!("{m:?}: real or protected"))),
            };
            let entry = self.entry.unwrap_or(load);
            if real && entry >= 0x10_0000 {
                return Err(FieldError::new("entry", format!("{entry:#x}: real mode reaches only the first MiB")));
            }
        } else {
            for (f, set) in [("load_address", self.load_address.is_some()), ("entry", self.entry.is_some()), ("entry_mode", self.entry_mode.is_some())] {
                if set {
                    return Err(FieldError::new(f, "only for format flat"));
                }
            }
        }
        one_line("cmdline", &self.cmdline, 4096)?;
        if self.cmdline.trim().starts_with('"') || self.cmdline.trim().ends_with('"') {
            return Err(FieldError::new("cmdline", "must not start or end with a quote"));
        }
        if self.modules.len() > MAX_MODULES {
            return Err(FieldError::new("modules", format!("at most {MAX_MODULES}")));
        }
        if !self.modules.is_empty() && self.format != "multiboot" {
            return Err(FieldError::new("modules", "modules are for Multiboot kernels"));
        }
        for (i, m) in self.modules.iter().enumerate() {
            abs_file(&format!("modules[{i}].path"), &m.path, host.check_files)?;
            one_line(&format!("modules[{i}].args"), &m.args, 1024)?;
        }
        if self.shares < 1 || self.shares > 1_000_000 {
            return Err(FieldError::new("shares", format!("{}: must be 1 to 1000000", self.shares)));
        }
        let cpu_pct = host.cpus.max(1).saturating_mul(100);
        if self.reservation_pct > cpu_pct {
            return Err(FieldError::new("reservation_pct", format!("{}: at most {cpu_pct} (100 per host CPU)", self.reservation_pct)));
        }
        if let Some(l) = self.limit_pct {
            if l < 1 {
                return Err(FieldError::new("limit_pct", "at least 1 (leave it out for no limit)"));
            }
            if l < self.reservation_pct {
                return Err(FieldError::new("limit_pct", format!("{l} is below reservation_pct {}", self.reservation_pct)));
            }
        }
        if self.disks.len() > MAX_DISKS {
            return Err(FieldError::new("disks", format!("at most {MAX_DISKS}")));
        }
        let mut seen = Vec::new();
        for (i, d) in self.disks.iter().enumerate() {
            let field = format!("disks[{i}].file");
            one_line(&field, &d.file, 1024)?;
            if d.file.is_empty() {
                return Err(FieldError::new(field, "required"));
            }
            if d.file.starts_with('/') {
                let p = Path::new(&d.file);
                if p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
                    return Err(FieldError::new(field, "'.' and '..' are not allowed"));
                }
                if !host.datastores.iter().any(|ds| p.starts_with(ds) && p != ds.as_path()) {
                    return Err(FieldError::new(field, format!("{:?} is not on a datastore", d.file)));
                }
            } else if d.file.contains('/') || d.file.starts_with('.') {
                return Err(FieldError::new(field, "a file name in the VM's directory (no '/', not starting with '.') or an absolute datastore path"));
            }
            if d.file.ends_with(".vmx") {
                return Err(FieldError::new(field, "a .vmx file is not a disk"));
            }
            if seen.contains(&d.file) {
                return Err(FieldError::new(field, format!("{:?} is listed twice", d.file)));
            }
            seen.push(d.file.clone());
            if let Some(s) = d.size_mib
                && !(1..=MAX_NEW_DISK_MIB).contains(&s)
            {
                return Err(FieldError::new(format!("disks[{i}].size_mib"), format!("{s}: must be 1 to {MAX_NEW_DISK_MIB}")));
            }
            if host.check_files
                && d.size_mib.is_none()
                && let Some(dir) = vm_dir
                && !Self::disk_path(dir, &d.file).is_file()
            {
                return Err(FieldError::new(field, format!("{:?} does not exist (give size_mib to create it)", d.file)));
            }
        }
        if self.nics.len() > MAX_NICS {
            return Err(FieldError::new("nics", format!("at most {MAX_NICS}")));
        }
        for (i, n) in self.nics.iter().enumerate() {
            if !host.port_groups.contains(&n.network) {
                return Err(FieldError::new(
                    format!("nics[{i}].network"),
                    format!("{:?}: no such port group (the host has {:?})", n.network, host.port_groups),
                ));
            }
            if !n.mac.is_empty() && !valid_mac(&n.mac) {
                return Err(FieldError::new(format!("nics[{i}].mac"), format!("{:?}: six hex pairs, unicast, not all zero", n.mac)));
            }
            if !NIC_MODELS.contains(&n.model.as_str()) {
                return Err(FieldError::new(format!("nics[{i}].model"), format!("{:?}: one of {NIC_MODELS:?}", n.model)));
            }
        }
        text_ok("annotation", &self.annotation, 4096)?;
        Ok(())
    }

    /// The text the VMkernel's VM API takes (`VMK_VM_CREATE`).
    pub fn kernel_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "name = {}", self.name);
        let _ = writeln!(t, "memory_mib = {}", self.memory_mib);
        let _ = writeln!(t, "vcpus = {}", self.vcpus);
        let _ = writeln!(t, "kernel = {}", self.kernel);
        let _ = writeln!(t, "format = {}", self.format);
        if let Some(a) = self.load_address {
            let _ = writeln!(t, "load_address = {a:#x}");
        }
        if let Some(a) = self.entry {
            let _ = writeln!(t, "entry = {a:#x}");
        }
        if let Some(m) = &self.entry_mode {
            let _ = writeln!(t, "entry_mode = {m}");
        }
        if !self.cmdline.is_empty() {
            let _ = writeln!(t, "cmdline = {}", self.cmdline);
        }
        for m in &self.modules {
            let _ = writeln!(t, "module = {} {}", m.path, m.args);
        }
        let _ = writeln!(t, "shares = {}", self.shares);
        let _ = writeln!(t, "reservation_pct = {}", self.reservation_pct);
        if let Some(l) = self.limit_pct {
            let _ = writeln!(t, "limit_pct = {l}");
        }
        t
    }

    /// The `.vmx` file text.
    pub fn to_vmx(&self) -> String {
        let mut t = String::from(
            "# Mantle virtual machine configuration, written by hostd.\n# key = \"value\" per line; the keys are documented in agents/hostd/src/vmx.rs.\n",
        );
        let mut kv = |k: &str, v: &str| {
            let _ = writeln!(t, "{k} = \"{}\"", escape(v));
        };
        kv("config.version", &CONFIG_VERSION.to_string());
        kv("name", &self.name);
        kv("memory_mib", &self.memory_mib.to_string());
        kv("vcpus", &self.vcpus.to_string());
        kv("kernel", &self.kernel);
        kv("format", &self.format);
        if let Some(a) = self.load_address {
            kv("load_address", &format!("{a:#x}"));
        }
        if let Some(a) = self.entry {
            kv("entry", &format!("{a:#x}"));
        }
        if let Some(m) = &self.entry_mode {
            kv("entry_mode", m);
        }
        kv("cmdline", &self.cmdline);
        for (i, m) in self.modules.iter().enumerate() {
            kv(&format!("module{i}.path"), &m.path);
            kv(&format!("module{i}.args"), &m.args);
        }
        kv("shares", &self.shares.to_string());
        kv("reservation_pct", &self.reservation_pct.to_string());
        if let Some(l) = self.limit_pct {
            kv("limit_pct", &l.to_string());
        }
        for (i, d) in self.disks.iter().enumerate() {
            kv(&format!("disk{i}.file"), &d.file);
        }
        for (i, n) in self.nics.iter().enumerate() {
            kv(&format!("nic{i}.network"), &n.network);
            kv(&format!("nic{i}.mac"), &n.mac);
            kv(&format!("nic{i}.model"), &n.model);
        }
        kv("annotation", &self.annotation);
        t
    }

    /// Parses `.vmx` text. Checks the syntax and the version; the rules are
    /// [`VmConfig::validate`]'s.
    pub fn from_vmx(text: &str) -> Result<VmConfig, String> {
        let mut c = VmConfig {
            name: String::new(),
            memory_mib: default_memory(),
            vcpus: default_vcpus(),
            kernel: String::new(),
            format: default_format(),
            load_address: None,
            entry: None,
            entry_mode: None,
            cmdline: String::new(),
            modules: Vec::new(),
            shares: default_shares(),
            reservation_pct: 0,
            limit_pct: None,
            disks: Vec::new(),
            nics: Vec::new(),
            annotation: String::new(),
        };
        let mut version = None;
        let mut modules: BTreeMap<usize, Module> = BTreeMap::new();
        let mut disks: BTreeMap<usize, Disk> = BTreeMap::new();
        let mut nics: BTreeMap<usize, Nic> = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |m: String| format!("line {}: {m}", n + 1);
            let (k, v) = line.split_once('=').ok_or_else(|| at("expected key = \"value\"".into()))?;
            let k = k.trim();
            let v = unquote(v.trim()).ok_or_else(|| at(format!("{k}: the value must be one quoted string")))?;
            let num = |v: &str| -> Result<u32, String> {
                let r = match v.strip_prefix("0x") {
                    Some(h) => u32::from_str_radix(h, 16).ok(),
                    None => v.parse().ok(),
                };
                r.ok_or_else(|| at(format!("{k}: {v:?} is not a number")))
            };
            let indexed = |prefix: &str| -> Option<Result<(usize, String), String>> {
                let rest = k.strip_prefix(prefix)?;
                let (idx, field) = rest.split_once('.')?;
                Some(match idx.parse::<usize>() {
                    Ok(i) if i < 64 => Ok((i, field.to_string())),
                    _ => Err(at(format!("{k}: bad index"))),
                })
            };
            match k {
                "config.version" => version = Some(num(&v)?),
                "name" => c.name = v,
                "memory_mib" => c.memory_mib = num(&v)?,
                "vcpus" => c.vcpus = num(&v)?,
                "kernel" => c.kernel = v,
                "format" => c.format = v,
                "load_address" => c.load_address = Some(num(&v)?),
                "entry" => c.entry = Some(num(&v)?),
                "entry_mode" => c.entry_mode = Some(v),
                "cmdline" => c.cmdline = v,
                "shares" => c.shares = num(&v)?,
                "reservation_pct" => c.reservation_pct = num(&v)?,
                "limit_pct" => c.limit_pct = Some(num(&v)?),
                "annotation" => c.annotation = v,
                _ => {
                    if let Some(r) = indexed("module") {
                        let (i, f) = r?;
                        let m = modules.entry(i).or_insert(Module { path: String::new(), args: String::new() });
                        match f.as_str() {
                            "path" => m.path = v,
                            "args" => m.args = v,
                            _ => return Err(at(format!("unknown setting {k:?}"))),
                        }
                    } else if let Some(r) = indexed("disk") {
                        let (i, f) = r?;
                        let d = disks.entry(i).or_insert(Disk { file: String::new(), size_mib: None });
                        match f.as_str() {
                            "file" => d.file = v,
                            _ => return Err(at(format!("unknown setting {k:?}"))),
                        }
                    } else if let Some(r) = indexed("nic") {
                        let (i, f) = r?;
                        let nic = nics.entry(i).or_insert(Nic { network: String::new(), mac: String::new(), model: default_nic_model() });
                        match f.as_str() {
                            "network" => nic.network = v,
                            "mac" => nic.mac = v,
                            "model" => nic.model = v,
                            _ => return Err(at(format!("unknown setting {k:?}"))),
                        }
                    } else {
                        return Err(at(format!("unknown setting {k:?}")));
                    }
                }
            }
        }
        match version {
            Some(CONFIG_VERSION) => {}
            Some(v) => return Err(format!("config.version {v}: this hostd reads version {CONFIG_VERSION}")),
            None => return Err("config.version is missing".into()),
        }
        c.modules = modules.into_values().collect();
        c.disks = disks.into_values().collect();
        c.nics = nics.into_values().collect();
        Ok(c)
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// `"..."` with escapes, and nothing after the closing quote.
fn unquote(v: &str) -> Option<String> {
    let inner = v.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    loop {
        match chars.next()? {
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c @ ('\\' | '"') => out.push(c),
                _ => return None,
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VmConfig {
        VmConfig {
            name: "web01".into(),
            memory_mib: 128,
            vcpus: 2,
            kernel: "/boot/k.elf".into(),
            format: "multiboot".into(),
            load_address: None,
            entry: None,
            entry_mode: None,
            cmdline: "console=ttyS0 quiet".into(),
            modules: vec![Module { path: "/boot/initrd".into(), args: "a b".into() }],
            shares: 2000,
            reservation_pct: 10,
            limit_pct: Some(50),
            disks: vec![Disk { file: "web01.img".into(), size_mib: None }],
            nics: vec![Nic { network: "VM Network".into(), mac: "02:4d:4e:00:00:01".into(), model: "e1000".into() }],
            annotation: "line one\nsays \"hi\" \\ back".into(),
        }
    }

    fn limits<'a>(pg: &'a [String], ds: &'a [PathBuf]) -> HostLimits<'a> {
        HostLimits { memory_mib: 1024, cpus: 4, port_groups: pg, datastores: ds, check_files: false }
    }

    #[test]
    fn vmx_round_trip() {
        let c = sample();
        let text = c.to_vmx();
        assert!(text.contains("config.version = \"1\""));
        assert_eq!(VmConfig::from_vmx(&text).unwrap(), c);
    }

    #[test]
    fn vmx_rejects_bad_files() {
        for (bad, why) in [
            ("name = \"x\"", "config.version is missing"),
            ("config.version = \"2\"", "version 2"),
            ("config.version = \"1\"\nmemory_mib = \"lots\"", "not a number"),
            ("config.version = \"1\"\nfrobnicate = \"1\"", "unknown setting"),
            ("config.version = \"1\"\nname = x", "quoted"),
            ("config.version = \"1\"\nname = \"x\" junk", "quoted"),
            ("config.version = \"1\"\ndisk99.file = \"x\"", "bad index"),
            ("config.version = \"1\"\ngarbage", "key ="),
        ] {
            let e = VmConfig::from_vmx(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn kernel_text_is_what_the_vmkernel_accepts() {
        let mut c = sample();
        let k = vmkernel::vmk_api::VmConfig::parse(&c.kernel_text()).unwrap();
        assert_eq!((k.name.as_str(), k.memory_mib, k.vcpus, k.shares, k.reservation_pct, k.limit_pct), ("web01", 128, 2, 2000, 10, Some(50)));
        assert_eq!(k.cmdline, "console=ttyS0 quiet");
        assert_eq!(k.modules, [("/boot/initrd".to_string(), "a b".to_string())]);
        c.format = "flat".into();
        c.modules.clear();
        c.load_address = Some(0x7c00);
        c.entry_mode = Some("real".into());
        let k = vmkernel::vmk_api::VmConfig::parse(&c.kernel_text()).unwrap();
        assert_eq!(k.format, vmkernel::vmk_api::KernelFormat::Flat { load: 0x7c00, entry: 0x7c00, real_mode: true });
    }

    #[test]
    fn validation_names_the_field() {
        let pg = vec!["VM Network".to_string()];
        let ds = vec![PathBuf::from("/vmfs/volumes/ds1")];
        let l = limits(&pg, &ds);
        sample().validate(&l, None).unwrap();
        type Change = Box<dyn Fn(&mut VmConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.vcpus = 0), "vcpus"),
            (Box::new(|c| c.vcpus = 5), "vcpus"),
            (Box::new(|c| c.memory_mib = 2048), "memory_mib"),
            (Box::new(|c| c.memory_mib = 1), "memory_mib"),
            (Box::new(|c| c.name = "../x".into()), "name"),
            (Box::new(|c| c.name = ".hidden".into()), "name"),
            (Box::new(|c| c.kernel = "rel/k".into()), "kernel"),
            (Box::new(|c| c.format = "pe".into()), "format"),
            (Box::new(|c| c.shares = 0), "shares"),
            (Box::new(|c| c.limit_pct = Some(5)), "limit_pct"),
            (Box::new(|c| c.reservation_pct = 401), "reservation_pct"),
            (Box::new(|c| c.cmdline = "a\nb".into()), "cmdline"),
            (Box::new(|c| c.disks[0].file = "../etc/passwd".into()), "disks[0].file"),
            (Box::new(|c| c.disks[0].file = "/etc/passwd".into()), "disks[0].file"),
            (Box::new(|c| c.disks[0].file = "/vmfs/volumes/ds1/../../etc/passwd".into()), "disks[0].file"),
            (Box::new(|c| c.disks.push(c.disks[0].clone())), "disks[1].file"),
            (Box::new(|c| c.disks[0].size_mib = Some(5000)), "disks[0].size_mib"),
            (Box::new(|c| c.nics[0].network = "nowhere".into()), "nics[0].network"),
            (Box::new(|c| c.nics[0].mac = "01:00:00:00:00:01".into()), "nics[0].mac"),
            (Box::new(|c| c.nics[0].mac = "zz".into()), "nics[0].mac"),
            (Box::new(|c| c.nics[0].model = "rtl8139".into()), "nics[0].model"),
            (Box::new(|c| c.load_address = Some(1)), "load_address"),
            (Box::new(|c| c.format = "elf64".into()), "modules"),
        ];
        for (change, field) in cases {
            let mut c = sample();
            change(&mut c);
            let e = c.validate(&l, None).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let mut c = sample();
        c.disks[0].file = "/vmfs/volumes/ds1/other/x.img".into();
        c.validate(&l, None).unwrap();
    }

    #[test]
    fn validation_checks_files_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let pg = vec!["VM Network".to_string()];
        let ds = vec![dir.path().to_path_buf()];
        let mut l = limits(&pg, &ds);
        l.check_files = true;
        let mut c = sample();
        c.kernel = dir.path().join("k").display().to_string();
        c.modules.clear();
        assert_eq!(c.validate(&l, Some(dir.path())).unwrap_err().field, "kernel");
        std::fs::write(dir.path().join("k"), b"k").unwrap();
        assert_eq!(c.validate(&l, Some(dir.path())).unwrap_err().field, "disks[0].file");
        c.disks[0].size_mib = Some(1);
        c.validate(&l, Some(dir.path())).unwrap();
    }

    #[test]
    fn patch_changes_only_what_it_names() {
        let c = sample();
        let p: VmConfigPatch = serde_json::from_str(r#"{"vcpus": 1, "limit_pct": null}"#).unwrap();
        let n = p.apply(&c);
        assert_eq!((n.vcpus, n.limit_pct, n.memory_mib), (1, None, 128));
        assert!(!p.only_live_settings());
        let p: VmConfigPatch = serde_json::from_str(r#"{"shares": 10}"#).unwrap();
        assert!(p.only_live_settings() && p.touches_resources());
        assert!(serde_json::from_str::<VmConfigPatch>(r#"{"name": "x"}"#).is_err());
    }
}
