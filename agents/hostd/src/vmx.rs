//! A VM's configuration file (`<datastore>/<vm>/<vm>.vmx`) as the API
//! shows it (JSON), and the rules that need the host.
//!
//! The file format is the VMkernel's own, parsed and written in one place:
//! `mantle_abi::VmConfig` (`vmkernel/abi/src/vmconfig.rs` documents every
//! key). hostd's files always carry `config.version` and quote every value;
//! a power-on hands the same text to the kernel, with disk files made
//! absolute ([`VmConfig::kernel_text`]). This module converts between that
//! record and the API's JSON form and adds the checks that need the host:
//! its memory and CPUs, the files, the port groups and the datastores.

use std::path::{Component, Path, PathBuf};

use mantle_abi::{ConfigError, DiskConfig, KernelFormat, NicConfig};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use mantle_abi::{CONFIG_VERSION, MAX_DISKS, MAX_MODULES, MAX_NICS, MAX_VCPUS, NIC_MODELS, valid_mac};
pub const NAME_MAX: usize = mantle_abi::NAME_LEN;
pub const MAX_MEMORY_MIB: u32 = mantle_abi::MAX_VM_MEMORY_MIB;
/// FAT datastores end files at 4 GiB - 1.
pub const MAX_NEW_DISK_MIB: u64 = 4095;

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
    /// `raw`, `qcow2` or `vmdk`; left out: from the file name's extension.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// The guest may only read the disk.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
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
    /// `format = linux` only: the initial RAM disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
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
    pub initrd: Option<String>,
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
            initrd: self.initrd,
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
    /// `format = linux` only: the initial RAM disk (`null` removes it).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub initrd: Option<Option<String>>,
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
        set!(memory_mib, vcpus, kernel, format, load_address, entry, entry_mode, initrd, cmdline, modules, shares, reservation_pct, limit_pct, disks, nics, annotation);
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
            && p.initrd.is_none()
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

impl From<ConfigError> for FieldError {
    fn from(e: ConfigError) -> Self {
        let field = if e.field.is_empty() { "config".to_string() } else { e.field };
        FieldError { field, message: e.message }
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
    mantle_abi::valid_vm_name(name)
}

fn file_exists(field: &str, path: &str) -> Result<(), FieldError> {
    if !Path::new(path).is_file() {
        return Err(FieldError::new(field, format!("{path:?} does not exist or is not a file")));
    }
    Ok(())
}

impl VmConfig {
    /// Where a disk's file is, given the VM's directory.
    pub fn disk_path(vm_dir: &Path, file: &str) -> PathBuf {
        if file.starts_with('/') { PathBuf::from(file) } else { vm_dir.join(file) }
    }

    /// The shared configuration record (the file format's), checked by its
    /// own rules.
    pub fn to_abi(&self) -> Result<mantle_abi::VmConfig, FieldError> {
        let real_mode = match self.entry_mode.as_deref() {
            None | Some("protected") => false,
            Some("real") => true,
            Some(m) => return Err(FieldError::new("entry_mode", format!("{m:?}: real or protected"))),
        };
        if self.format != "flat" && self.entry_mode.is_some() {
            return Err(FieldError::new("entry_mode", "only for format flat"));
        }
        let format = mantle_abi::VmConfig::kernel_format(&self.format, self.load_address, self.entry, real_mode)?;
        let c = mantle_abi::VmConfig {
            name: self.name.clone(),
            memory_mib: self.memory_mib,
            vcpus: self.vcpus,
            kernel: self.kernel.clone(),
            cmdline: self.cmdline.clone(),
            shares: self.shares,
            reservation_pct: self.reservation_pct,
            limit_pct: self.limit_pct,
            modules: self.modules.iter().map(|m| (m.path.clone(), m.args.clone())).collect(),
            format,
            initrd: self.initrd.clone(),
            disks: self.disks.iter().map(|d| DiskConfig { file: d.file.clone(), format: d.format.clone(), readonly: d.readonly }).collect(),
            nics: self.nics.iter().map(|n| NicConfig { network: n.network.clone(), mac: n.mac.clone(), model: n.model.clone() }).collect(),
            annotation: self.annotation.clone(),
        };
        c.check()?;
        Ok(c)
    }

    /// The API's form of a configuration record.
    pub fn from_abi(c: &mantle_abi::VmConfig) -> VmConfig {
        let (load_address, entry, entry_mode) = match c.format {
            KernelFormat::Flat { load, entry, real_mode } => (Some(load), (entry != load).then_some(entry), real_mode.then(|| "real".to_string())),
            _ => (None, None, None),
        };
        VmConfig {
            name: c.name.clone(),
            memory_mib: c.memory_mib,
            vcpus: c.vcpus,
            kernel: c.kernel.clone(),
            format: c.format.name().into(),
            load_address,
            entry,
            entry_mode,
            initrd: c.initrd.clone(),
            cmdline: c.cmdline.clone(),
            modules: c.modules.iter().map(|(path, args)| Module { path: path.clone(), args: args.clone() }).collect(),
            shares: c.shares,
            reservation_pct: c.reservation_pct,
            limit_pct: c.limit_pct,
            disks: c.disks.iter().map(|d| Disk { file: d.file.clone(), format: d.format.clone(), readonly: d.readonly, size_mib: None }).collect(),
            nics: c.nics.iter().map(|n| Nic { network: n.network.clone(), mac: n.mac.clone(), model: n.model.clone() }).collect(),
            annotation: c.annotation.clone(),
        }
    }

    /// Checks every rule; the first broken one names its field. The file
    /// format's own rules come first (`mantle_abi::VmConfig::check`), then
    /// the host's. `vm_dir` is where relative disk files live (None: not
    /// known yet, skip disk existence checks).
    pub fn validate(&self, host: &HostLimits, vm_dir: Option<&Path>) -> Result<(), FieldError> {
        let abi = self.to_abi()?;
        let mem_max = (MAX_MEMORY_MIB as u64).min(host.memory_mib);
        if self.memory_mib as u64 > mem_max {
            return Err(FieldError::new("memory_mib", format!("{}: must be 4 to {mem_max} (the host's memory)", self.memory_mib)));
        }
        let cpu_max = MAX_VCPUS.min(host.cpus.max(1));
        if self.vcpus > cpu_max {
            return Err(FieldError::new("vcpus", format!("{}: must be 1 to {cpu_max} (the host's CPUs)", self.vcpus)));
        }
        if host.check_files {
            file_exists("kernel", &self.kernel)?;
            if let Some(initrd) = &self.initrd {
                file_exists("initrd", initrd)?;
            }
            for (i, m) in self.modules.iter().enumerate() {
                file_exists(&format!("modules[{i}].path"), &m.path)?;
            }
        }
        let cpu_pct = host.cpus.max(1).saturating_mul(100);
        if self.reservation_pct > cpu_pct {
            return Err(FieldError::new("reservation_pct", format!("{}: at most {cpu_pct} (100 per host CPU)", self.reservation_pct)));
        }
        for (i, d) in self.disks.iter().enumerate() {
            let field = format!("disks[{i}].file");
            if d.file.starts_with('/') {
                let p = Path::new(&d.file);
                if p.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir))
                    || !host.datastores.iter().any(|ds| p.starts_with(ds) && p != ds.as_path())
                {
                    return Err(FieldError::new(field, format!("{:?} is not on a datastore", d.file)));
                }
            }
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
        for (i, n) in self.nics.iter().enumerate() {
            if !host.port_groups.contains(&n.network) {
                return Err(FieldError::new(
                    format!("nics[{i}].network"),
                    format!("{:?}: no such port group (the host has {:?})", n.network, host.port_groups),
                ));
            }
        }
        if abi.to_text().len() > mantle_abi::MAX_CONFIG_TEXT {
            return Err(FieldError::new("config", format!("the configuration is larger than {} bytes", mantle_abi::MAX_CONFIG_TEXT)));
        }
        Ok(())
    }

    /// The text the VMkernel's VM API takes (`VMK_VM_CREATE`): the `.vmx`
    /// format itself, with the disk files as absolute paths.
    pub fn kernel_text(&self, vm_dir: &Path) -> Result<String, FieldError> {
        let mut abi = self.to_abi()?;
        for d in &mut abi.disks {
            d.file = Self::disk_path(vm_dir, &d.file).display().to_string();
        }
        Ok(abi.to_text())
    }

    /// The `.vmx` file text.
    pub fn to_vmx(&self) -> Result<String, FieldError> {
        let body = self.to_abi()?.to_text();
        Ok(format!("# Mantle virtual machine configuration, written by hostd.\n# key = \"value\" per line; the keys are documented in vmkernel/abi/src/vmconfig.rs.\n{body}"))
    }

    /// Parses `.vmx` text: the syntax, the version and the file format's
    /// rules; the host's are [`VmConfig::validate`]'s.
    pub fn from_vmx(text: &str) -> Result<VmConfig, String> {
        mantle_abi::VmConfig::parse_versioned(text).map(|c| Self::from_abi(&c)).map_err(|e| e.to_string())
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
            initrd: None,
            cmdline: "console=ttyS0 quiet".into(),
            modules: vec![Module { path: "/boot/initrd".into(), args: "a b".into() }],
            shares: 2000,
            reservation_pct: 10,
            limit_pct: Some(50),
            disks: vec![Disk { file: "web01.img".into(), format: "raw".into(), readonly: true, size_mib: None }],
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
        let text = c.to_vmx().unwrap();
        assert!(text.contains("config.version = \"1\""));
        assert_eq!(VmConfig::from_vmx(&text).unwrap(), c);
    }

    #[test]
    fn vmx_rejects_bad_files() {
        for (bad, why) in [
            ("name = \"x\"", "config.version"),
            ("config.version = \"2\"", "version 2"),
            ("config.version = \"1\"\nmemory_mib = \"lots\"", "not a number"),
            ("config.version = \"1\"\nfrobnicate = \"1\"", "unknown setting"),
            ("config.version = \"1\"\nname = \"x\" junk", "quoted"),
            ("config.version = \"1\"\ndisk99.file = \"x\"", "index"),
            ("config.version = \"1\"\ngarbage", "key ="),
        ] {
            let e = VmConfig::from_vmx(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// The kernel gets the file format itself: the whole configuration,
    /// disk files made absolute, parsed by the same `mantle_abi` code.
    #[test]
    fn kernel_text_is_the_vmx_format() {
        let mut c = sample();
        let dir = Path::new("/vmfs/volumes/ds1/web01");
        let k = mantle_abi::VmConfig::parse(&c.kernel_text(dir).unwrap()).unwrap();
        assert_eq!((k.name.as_str(), k.memory_mib, k.vcpus, k.shares, k.reservation_pct, k.limit_pct), ("web01", 128, 2, 2000, 10, Some(50)));
        assert_eq!(k.cmdline, "console=ttyS0 quiet");
        assert_eq!(k.modules, [("/boot/initrd".to_string(), "a b".to_string())]);
        assert_eq!(k.disks[0].file, "/vmfs/volumes/ds1/web01/web01.img");
        assert_eq!(k.nics[0].mac, "02:4d:4e:00:00:01");
        assert_eq!(k.annotation, c.annotation);
        c.format = "flat".into();
        c.modules.clear();
        c.load_address = Some(0x7c00);
        c.entry_mode = Some("real".into());
        let k = mantle_abi::VmConfig::parse(&c.kernel_text(dir).unwrap()).unwrap();
        assert_eq!(k.format, KernelFormat::Flat { load: 0x7c00, entry: 0x7c00, real_mode: true });
        assert_eq!(VmConfig::from_abi(&k).entry_mode.as_deref(), Some("real"));
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
            (
                Box::new(|c| {
                    c.limit_pct = None;
                    c.reservation_pct = 401;
                }),
                "reservation_pct",
            ),
            (Box::new(|c| c.entry_mode = Some("real".into())), "entry_mode"),
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
        // A Linux guest's initrd must exist too; the error names the field.
        c.format = "linux".into();
        c.initrd = Some(dir.path().join("initrd.cpio").display().to_string());
        let e = c.validate(&l, Some(dir.path())).unwrap_err();
        assert_eq!(e.field, "initrd", "{e}");
        assert!(e.to_string().contains("initrd.cpio") && e.to_string().contains("does not exist"), "{e}");
        std::fs::write(dir.path().join("initrd.cpio"), b"070701").unwrap();
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
        // A Linux guest: the format, its initrd and a disk's image format.
        let p: VmConfigPatch = serde_json::from_str(
            r#"{"format": "linux", "initrd": "/vmfs/volumes/ds1/i.cpio", "modules": [], "disks": [{"file": "web01.qcow2", "format": "qcow2"}]}"#,
        )
        .unwrap();
        assert!(!p.only_live_settings());
        let mut n = p.apply(&c);
        assert_eq!((n.format.as_str(), n.initrd.as_deref()), ("linux", Some("/vmfs/volumes/ds1/i.cpio")));
        assert_eq!((n.disks[0].file.as_str(), n.disks[0].format.as_str()), ("web01.qcow2", "qcow2"));
        let text = n.to_vmx().unwrap();
        assert!(text.contains("initrd = \"/vmfs/volumes/ds1/i.cpio\"") && text.contains("disk0.format = \"qcow2\""), "{text}");
        n.format = "multiboot".into();
        let p: VmConfigPatch = serde_json::from_str(r#"{"initrd": null}"#).unwrap();
        assert_eq!(p.apply(&n).initrd, None);
    }
}
