//! The VM configuration format, parsed here and nowhere else: the kernel
//! reads it in `VMK_VM_CREATE`, hostd stores it as `<vm>.vmx` on the
//! datastore (and hands the same text to the kernel at power-on), `vmkcli`
//! writes it.
//!
//! One `key = value` per line; `#` starts a comment line. A value is either
//! one double-quoted string (inside, `\\`, `\"` and `\n` are escapes; nothing
//! but blanks may follow the closing quote) or, unquoted, the rest of the
//! line with its blanks trimmed. Numbers are decimal or `0x` hex. Unknown
//! keys are errors. Keys:
//!
//! | key | meaning |
//! | --- | --- |
//! | `config.version` | format version, `1`; optional for the kernel, required in hostd's `.vmx` files |
//! | `name` | 1–32 letters, digits, `-`, `_`, `.`; not starting with `.` |
//! | `memory_mib`, `vcpus` | guest RAM in MiB (4 … 65536), virtual CPUs (1 … 16) |
//! | `kernel` | absolute path of the kernel the VM boots |
//! | `format` | `multiboot` (default), `elf64`, `flat` or `linux` (a bzImage, 64-bit boot protocol) |
//! | `initrd` | `linux` only: absolute path of the initial RAM disk |
//! | `load_address`, `entry`, `entry_mode` | `flat` only: where the bytes go, where to enter (default: `load_address`), `real` or `protected` (default) |
//! | `cmdline` | the kernel command line |
//! | `moduleN.path`, `moduleN.args` | Multiboot modules (N from 0; at most 16); the legacy one-line form `module = /path args` (repeatable) is read too |
//! | `shares`, `reservation_pct`, `limit_pct` | CPU shares (1–1000000, default 1000), reservation and limit in percent of one host CPU |
//! | `diskN.file` | a disk image: a file name in the VM's directory, or an absolute path (at most 8); the kernel takes absolute paths (hostd makes them so at power-on) |
//! | `diskN.format`, `diskN.readonly` | `raw`, `qcow2` or `vmdk` (default: from the file name's extension, else `raw`); `true` or `false` (default) |
//! | `nicN.network`, `nicN.mac`, `nicN.model` | a NIC: port group, unicast MAC `xx:xx:xx:xx:xx:xx` (empty: chosen by hostd), `virtio-net` (default), `e1000` or `e1000e` (at most 4) |
//! | `annotation` | free text for the administrator (the kernel ignores it) |
//!
//! Disks, then NICs, take the VM's virtio-mmio slots from 0: together at
//! most [`crate::MAX_VIRTIO_DEVICES`]. The VMM offers `virtio-net` NICs only;
//! the kernel refuses the other models at power-on.
//!
//! [`VmConfig::parse`] checks the syntax and every rule that needs no
//! knowledge of the host ([`VmConfig::check`]); hostd adds the host's
//! (memory and CPUs present, files exist, port groups, datastores). Errors
//! name the field the way hostd's API does (`memory_mib`, `disks[0].file`).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use crate::{MAX_MODULES, MAX_VCPUS, MAX_VM_MEMORY_MIB, NAME_LEN};

/// The configuration format version written and read.
pub const CONFIG_VERSION: u32 = 1;
pub const MAX_DISKS: usize = 8;
pub const MAX_NICS: usize = 4;
pub const NIC_MODELS: [&str; 3] = ["virtio-net", "e1000", "e1000e"];
pub const MAX_SHARES: u32 = 1_000_000;
/// Longest path (kernel, module, disk).
pub const MAX_PATH_LEN: usize = 1024;
/// Longest free text (command line, annotation).
pub const MAX_TEXT_LEN: usize = 4096;
/// Indices in `moduleN.`, `diskN.` and `nicN.` keys stay below this.
const MAX_KEY_INDEX: usize = 64;

/// How a VM's kernel file is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelFormat {
    /// Multiboot (v1): ELF32/ELF64 or the header's address fields.
    #[default]
    Multiboot,
    /// Raw bytes at `load` entered at `entry` in real mode (CS:IP =
    /// entry >> 4 : entry & 0xf) or 32-bit protected mode (flat, paging off).
    Flat { load: u32, entry: u32, real_mode: bool },
    /// An ELF64 image entered in 64-bit mode (identity-mapped low 4 GiB).
    Elf64,
    /// A Linux bzImage, loaded by the x86-64 boot protocol (with `initrd`).
    Linux,
}

impl KernelFormat {
    /// The `format` value.
    pub fn name(&self) -> &'static str {
        match self {
            KernelFormat::Multiboot => "multiboot",
            KernelFormat::Flat { .. } => "flat",
            KernelFormat::Elf64 => "elf64",
            KernelFormat::Linux => "linux",
        }
    }
}

/// Image formats a disk may have.
pub const DISK_FORMATS: [&str; 3] = ["raw", "qcow2", "vmdk"];

/// A virtual disk backed by an image file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DiskConfig {
    /// A file name in the VM's directory, or an absolute path.
    pub file: String,
    /// `raw`, `qcow2` or `vmdk`; empty: from the file name ([`DiskConfig::image_format`]).
    pub format: String,
    pub readonly: bool,
}

impl DiskConfig {
    /// The image format: the `format` setting, else the file name's
    /// extension (`.qcow2`, `.vmdk`), else `raw`.
    pub fn image_format(&self) -> &str {
        if !self.format.is_empty() {
            return &self.format;
        }
        match self.file.rsplit_once('.').map(|(_, e)| e) {
            Some("qcow2") => "qcow2",
            Some("vmdk") => "vmdk",
            _ => "raw",
        }
    }
}

/// A virtual NIC on a port group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicConfig {
    pub network: String,
    /// Empty: not chosen yet.
    pub mac: String,
    pub model: String,
}

impl Default for NicConfig {
    fn default() -> Self {
        NicConfig { network: String::new(), mac: String::new(), model: "virtio-net".into() }
    }
}

/// A VM definition (see the module documentation for the text form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub kernel: String,
    pub cmdline: String,
    pub shares: u32,
    pub reservation_pct: u32,
    pub limit_pct: Option<u32>,
    /// Multiboot modules: (path, arguments); the module string the guest
    /// sees is "<path> <arguments>" (as GRUB and QEMU pass it).
    pub modules: Vec<(String, String)>,
    /// How `kernel` is loaded.
    pub format: KernelFormat,
    /// The initial RAM disk of a Linux kernel (`format = "linux"`).
    pub initrd: Option<String>,
    pub disks: Vec<DiskConfig>,
    pub nics: Vec<NicConfig>,
    /// Free text for the administrator.
    pub annotation: String,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            name: String::new(),
            memory_mib: 64,
            vcpus: 1,
            kernel: String::new(),
            cmdline: String::new(),
            shares: 1000,
            reservation_pct: 0,
            limit_pct: None,
            modules: Vec::new(),
            format: KernelFormat::Multiboot,
            initrd: None,
            disks: Vec::new(),
            nics: Vec::new(),
            annotation: String::new(),
        }
    }
}

/// Why a configuration is refused: the line (for text), the field (in the
/// API's naming) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub line: Option<usize>,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { line: None, field: field.into(), message: message.into() }
    }
    fn at(line: usize, field: &str, message: impl Into<String>) -> Self {
        ConfigError { line: Some(line), field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.line {
            write!(f, "line {n}: ")?;
        }
        if self.field.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.field, self.message) }
    }
}

/// True for a VM name (also a safe directory and file name).
pub fn valid_vm_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_LEN
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A MAC address string: six hex pairs, unicast, not all zeros.
pub fn valid_mac(mac: &str) -> bool {
    let mut bytes = [0u8; 6];
    let mut n = 0;
    for part in mac.split(':') {
        if n == 6 || part.len() != 2 {
            return false;
        }
        match u8::from_str_radix(part, 16) {
            Ok(b) => bytes[n] = b,
            Err(_) => return false,
        }
        n += 1;
    }
    n == 6 && bytes[0] & 1 == 0 && bytes.iter().any(|&b| b != 0)
}

fn number(v: &str) -> Option<u32> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A quoted value with escapes and nothing but blanks after the closing quote.
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

fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn text_ok(field: &str, v: &str, max: usize, lines: bool) -> Result<(), ConfigError> {
    if v.len() > max {
        return Err(ConfigError::new(field, format!("at most {max} bytes")));
    }
    if v.chars().any(|c| c.is_control() && !(lines && c == '\n')) {
        return Err(ConfigError::new(field, if lines { "control characters are not allowed" } else { "must be one line without control characters" }));
    }
    Ok(())
}

fn abs_path(field: &str, path: &str) -> Result<(), ConfigError> {
    text_ok(field, path, MAX_PATH_LEN, false)?;
    if !path.starts_with('/') {
        return Err(ConfigError::new(field, format!("{path:?}: an absolute path is required")));
    }
    if path.contains(char::is_whitespace) {
        return Err(ConfigError::new(field, format!("{path:?}: blanks are not allowed in paths")));
    }
    Ok(())
}

/// Which indexed key (`moduleN.x`, `diskN.x`, `nicN.x`) a key is.
fn indexed<'k>(key: &'k str, prefix: &str) -> Option<Option<(usize, &'k str)>> {
    let rest = key.strip_prefix(prefix)?;
    let (idx, field) = rest.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(idx.parse::<usize>().ok().filter(|&i| i < MAX_KEY_INDEX).map(|i| (i, field)))
}

impl VmConfig {
    /// The module strings the guest sees.
    pub fn module_string(path: &str, args: &str) -> String {
        if args.is_empty() { path.into() } else { format!("{path} {args}") }
    }

    /// Parses and checks a configuration; `config.version` may be absent.
    pub fn parse(text: &str) -> Result<VmConfig, ConfigError> {
        Self::parse_inner(text, false)
    }

    /// As [`VmConfig::parse`], but `config.version` is required (hostd's files).
    pub fn parse_versioned(text: &str) -> Result<VmConfig, ConfigError> {
        Self::parse_inner(text, true)
    }

    fn parse_inner(text: &str, need_version: bool) -> Result<VmConfig, ConfigError> {
        let mut c = VmConfig::default();
        let mut version = None;
        let (mut format, mut load, mut entry, mut entry_mode) = (None::<String>, None, None, None::<(usize, String)>);
        let mut legacy_modules = Vec::new();
        let mut modules: BTreeMap<usize, (String, String)> = BTreeMap::new();
        let mut disks: BTreeMap<usize, DiskConfig> = BTreeMap::new();
        let mut nics: BTreeMap<usize, NicConfig> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| ConfigError::at(n, "", "expected key = value"))?;
            let (k, v) = (k.trim(), v.trim());
            let v = if v.starts_with('"') {
                unquote(v).ok_or_else(|| ConfigError::at(n, k, "a quoted value must be one \"...\" string (escapes \\\\, \\\" and \\n)"))?
            } else {
                v.to_string()
            };
            let num = |v: &str| number(v).ok_or_else(|| ConfigError::at(n, k, format!("{v:?} is not a number")));
            match k {
                "config.version" => {
                    let ver = num(&v)?;
                    if ver != CONFIG_VERSION {
                        return Err(ConfigError::at(n, k, format!("version {ver}: this reads version {CONFIG_VERSION}")));
                    }
                    version = Some(ver);
                }
                "name" => c.name = v,
                "memory_mib" => c.memory_mib = num(&v)?,
                "vcpus" => c.vcpus = num(&v)?,
                "kernel" => c.kernel = v,
                "initrd" => c.initrd = Some(v),
                "cmdline" => c.cmdline = v,
                "shares" => c.shares = num(&v)?,
                "reservation_pct" => c.reservation_pct = num(&v)?,
                "limit_pct" => c.limit_pct = Some(num(&v)?),
                "format" => format = Some(v),
                "load_address" => load = Some(number(&v).ok_or_else(|| ConfigError::at(n, k, format!("{v:?} is not an address")))?),
                "entry" => entry = Some(number(&v).ok_or_else(|| ConfigError::at(n, k, format!("{v:?} is not an address")))?),
                "entry_mode" => entry_mode = Some((n, v)),
                "annotation" => c.annotation = v,
                "module" => {
                    let (path, args) = v.split_once(' ').map_or((v.as_str(), ""), |(p, a)| (p, a.trim()));
                    if legacy_modules.len() == MAX_MODULES {
                        return Err(ConfigError::at(n, "modules", format!("at most {MAX_MODULES}")));
                    }
                    legacy_modules.push((path.to_string(), args.to_string()));
                }
                _ => {
                    let unknown = || ConfigError::at(n, k, "unknown setting");
                    let bad_index = || ConfigError::at(n, k, format!("the index must be below {MAX_KEY_INDEX}"));
                    if let Some(ix) = indexed(k, "module") {
                        let (i, f) = ix.ok_or_else(bad_index)?;
                        let m = modules.entry(i).or_default();
                        match f {
                            "path" => m.0 = v,
                            "args" => m.1 = v,
                            _ => return Err(unknown()),
                        }
                    } else if let Some(ix) = indexed(k, "disk") {
                        let (i, f) = ix.ok_or_else(bad_index)?;
                        let d = disks.entry(i).or_default();
                        match f {
                            "file" => d.file = v,
                            "format" => d.format = v,
                            "readonly" => {
                                d.readonly = match v.to_ascii_lowercase().as_str() {
                                    "true" => true,
                                    "false" => false,
                                    _ => return Err(ConfigError::at(n, k, format!("{v:?}: true or false"))),
                                }
                            }
                            _ => return Err(unknown()),
                        }
                    } else if let Some(ix) = indexed(k, "nic") {
                        let (i, f) = ix.ok_or_else(bad_index)?;
                        let nic = nics.entry(i).or_default();
                        match f {
                            "network" => nic.network = v,
                            "mac" => nic.mac = v,
                            "model" => nic.model = v,
                            _ => return Err(unknown()),
                        }
                    } else {
                        return Err(unknown());
                    }
                }
            }
        }
        if need_version && version.is_none() {
            return Err(ConfigError::new("config.version", "missing (this reads version 1)"));
        }
        if !legacy_modules.is_empty() && !modules.is_empty() {
            return Err(ConfigError::new("modules", "use either `module = PATH ARGS` lines or moduleN.path/moduleN.args, not both"));
        }
        c.modules = if modules.is_empty() { legacy_modules } else { modules.into_values().collect() };
        c.disks = disks.into_values().collect();
        c.nics = nics.into_values().collect();
        let real_mode = match entry_mode {
            None => false,
            Some((_, m)) if m == "protected" => false,
            Some((_, m)) if m == "real" => true,
            Some((n, m)) => return Err(ConfigError::at(n, "entry_mode", format!("real or protected, not {m:?}"))),
        };
        c.format = Self::kernel_format(format.as_deref().unwrap_or("multiboot"), load, entry, real_mode)?;
        c.check()?;
        Ok(c)
    }

    /// The kernel format from the `format`, `load_address`, `entry` and
    /// `entry_mode` settings (`entry_mode` alone is ignored outside `flat`,
    /// as `vmkcli` always writes it).
    pub fn kernel_format(format: &str, load: Option<u32>, entry: Option<u32>, real_mode: bool) -> Result<KernelFormat, ConfigError> {
        let f = match format {
            "multiboot" => KernelFormat::Multiboot,
            "elf64" => KernelFormat::Elf64,
            "linux" => KernelFormat::Linux,
            "flat" => {
                let load = load.ok_or_else(|| ConfigError::new("load_address", "required for format flat"))?;
                return Ok(KernelFormat::Flat { load, entry: entry.unwrap_or(load), real_mode });
            }
            f => return Err(ConfigError::new("format", format!("{f:?}: multiboot, flat, elf64 or linux"))),
        };
        for (field, set) in [("load_address", load.is_some()), ("entry", entry.is_some())] {
            if set {
                return Err(ConfigError::new(field, "only for format flat"));
            }
        }
        Ok(f)
    }

    /// Every rule that needs no knowledge of the host; the first broken one
    /// names its field.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !valid_vm_name(&self.name) {
            return Err(ConfigError::new("name", format!("{:?}: 1 to {NAME_LEN} letters, digits, '-', '_' or '.', not starting with '.'", self.name)));
        }
        if !(4..=MAX_VM_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::new("memory_mib", format!("{}: must be 4 to {MAX_VM_MEMORY_MIB}", self.memory_mib)));
        }
        if !(1..=MAX_VCPUS).contains(&self.vcpus) {
            return Err(ConfigError::new("vcpus", format!("{}: must be 1 to {MAX_VCPUS}", self.vcpus)));
        }
        abs_path("kernel", &self.kernel)?;
        if let KernelFormat::Flat { entry, real_mode: true, .. } = self.format
            && entry >= 0x10_0000
        {
            return Err(ConfigError::new("entry", format!("{entry:#x}: real mode reaches only the first MiB")));
        }
        text_ok("cmdline", &self.cmdline, MAX_TEXT_LEN, false)?;
        if self.modules.len() > MAX_MODULES {
            return Err(ConfigError::new("modules", format!("at most {MAX_MODULES}")));
        }
        if !self.modules.is_empty() && self.format != KernelFormat::Multiboot {
            return Err(ConfigError::new("modules", "modules are for Multiboot kernels"));
        }
        if let Some(initrd) = &self.initrd {
            if self.format != KernelFormat::Linux {
                return Err(ConfigError::new("initrd", "only for Linux kernels (format = linux)"));
            }
            abs_path("initrd", initrd)?;
        }
        for (i, (path, args)) in self.modules.iter().enumerate() {
            abs_path(&format!("modules[{i}].path"), path)?;
            text_ok(&format!("modules[{i}].args"), args, MAX_PATH_LEN, false)?;
        }
        if !(1..=MAX_SHARES).contains(&self.shares) {
            return Err(ConfigError::new("shares", format!("{}: must be 1 to {MAX_SHARES}", self.shares)));
        }
        if let Some(l) = self.limit_pct {
            if l < 1 {
                return Err(ConfigError::new("limit_pct", "at least 1 (leave it out for no limit)"));
            }
            if l < self.reservation_pct {
                return Err(ConfigError::new("limit_pct", format!("{l} is below reservation_pct {}", self.reservation_pct)));
            }
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConfigError::new("disks", format!("at most {MAX_DISKS}")));
        }
        for (i, d) in self.disks.iter().enumerate() {
            let field = format!("disks[{i}].file");
            text_ok(&field, &d.file, MAX_PATH_LEN, false)?;
            if d.file.is_empty() {
                return Err(ConfigError::new(field, "required"));
            }
            if d.file.starts_with('/') {
                if d.file.split('/').any(|c| c == "." || c == "..") {
                    return Err(ConfigError::new(field, "'.' and '..' are not allowed"));
                }
            } else if d.file.contains('/') || d.file.starts_with('.') {
                return Err(ConfigError::new(field, "a file name in the VM's directory (no '/', not starting with '.') or an absolute path"));
            }
            if d.file.ends_with(".vmx") {
                return Err(ConfigError::new(field, "a .vmx file is not a disk"));
            }
            if self.disks[..i].iter().any(|o| o.file == d.file) {
                return Err(ConfigError::new(field, format!("{:?} is listed twice", d.file)));
            }
            if !d.format.is_empty() && !DISK_FORMATS.contains(&d.format.as_str()) {
                return Err(ConfigError::new(format!("disks[{i}].format"), format!("{:?}: raw, qcow2 or vmdk", d.format)));
            }
        }
        if self.nics.len() > MAX_NICS {
            return Err(ConfigError::new("nics", format!("at most {MAX_NICS}")));
        }
        for (i, n) in self.nics.iter().enumerate() {
            let field = format!("nics[{i}].network");
            text_ok(&field, &n.network, 64, false)?;
            if n.network.is_empty() {
                return Err(ConfigError::new(field, "required (a port group)"));
            }
            if !n.mac.is_empty() && !valid_mac(&n.mac) {
                return Err(ConfigError::new(format!("nics[{i}].mac"), format!("{:?}: six hex pairs, unicast, not all zero", n.mac)));
            }
            if !NIC_MODELS.contains(&n.model.as_str()) {
                return Err(ConfigError::new(format!("nics[{i}].model"), format!("{:?}: one of {NIC_MODELS:?}", n.model)));
            }
        }
        if self.disks.len() + self.nics.len() > crate::MAX_VIRTIO_DEVICES {
            return Err(ConfigError::new(
                "nics",
                format!("disks and NICs together: at most {} (the VM's virtio-mmio slots)", crate::MAX_VIRTIO_DEVICES),
            ));
        }
        text_ok("annotation", &self.annotation, MAX_TEXT_LEN, true)?;
        Ok(())
    }

    /// The text form (with `config.version`), every value quoted;
    /// [`VmConfig::parse`] reads it back to an equal configuration.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let mut kv = |k: &str, v: &str| {
            let _ = writeln!(t, "{k} = {}", quote(v));
        };
        kv("config.version", &CONFIG_VERSION.to_string());
        kv("name", &self.name);
        kv("memory_mib", &self.memory_mib.to_string());
        kv("vcpus", &self.vcpus.to_string());
        kv("kernel", &self.kernel);
        kv("format", self.format.name());
        if let KernelFormat::Flat { load, entry, real_mode } = self.format {
            kv("load_address", &format!("{load:#x}"));
            if entry != load {
                kv("entry", &format!("{entry:#x}"));
            }
            if real_mode {
                kv("entry_mode", "real");
            }
        }
        if let Some(initrd) = &self.initrd {
            kv("initrd", initrd);
        }
        kv("cmdline", &self.cmdline);
        for (i, (path, args)) in self.modules.iter().enumerate() {
            kv(&format!("module{i}.path"), path);
            kv(&format!("module{i}.args"), args);
        }
        kv("shares", &self.shares.to_string());
        kv("reservation_pct", &self.reservation_pct.to_string());
        if let Some(l) = self.limit_pct {
            kv("limit_pct", &l.to_string());
        }
        for (i, d) in self.disks.iter().enumerate() {
            kv(&format!("disk{i}.file"), &d.file);
            if !d.format.is_empty() {
                kv(&format!("disk{i}.format"), &d.format);
            }
            if d.readonly {
                kv(&format!("disk{i}.readonly"), "true");
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            kv(&format!("nic{i}.network"), &n.network);
            kv(&format!("nic{i}.mac"), &n.mac);
            kv(&format!("nic{i}.model"), &n.model);
        }
        if !self.annotation.is_empty() {
            kv("annotation", &self.annotation);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        VmConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_and_validates() {
        let c = VmConfig::parse("# a guest\nname = web01\nmemory_mib=128\nvcpus = 2\nkernel = /vmfs/k.elf\ncmdline = \"console=ttyS0 quiet\"\nshares=2000\n").unwrap();
        assert_eq!((c.name.as_str(), c.memory_mib, c.vcpus, c.shares), ("web01", 128, 2, 2000));
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        for (bad, why) in [
            ("name=x\nkernel=/k\nmemory_mib=1", "memory_mib: 1"),
            ("name=x\nkernel=/k\nvcpus=0", "vcpus: 0"),
            ("name=x\nkernel=k", "absolute path"),
            ("name=bad name\nkernel=/k", "name"),
            ("name=.x\nkernel=/k", "name"),
            ("name=x\nkernel=/k\nfrobnicate=1", "line 3: frobnicate: unknown setting"),
            ("name=x\nkernel=/k\nmemory_mib=lots", "not a number"),
            ("name=x\nkernel=/k\nshares=0", "shares"),
            ("name=x\nkernel=/k\nlimit_pct=0", "limit_pct"),
            ("name=x\nkernel=/k\nreservation_pct=50\nlimit_pct=20", "below reservation_pct"),
            ("name=x\nkernel=/k\ncmdline=\"a\" b", "quoted value"),
            ("name=x\nkernel=/k\ncmdline=\"a\\q\"", "quoted value"),
            ("name=x\nkernel=/k\nconfig.version=2", "version 2"),
            ("name=x\nkernel=/k\ndisk99.file=a", "index"),
            ("name=x\nkernel=/k\ndisk0.size=3", "unknown setting"),
            ("garbage", "key = value"),
        ] {
            let e = err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(VmConfig::parse_versioned("name=x\nkernel=/k").unwrap_err().to_string().contains("config.version"));
        assert_eq!(VmConfig::parse_versioned("config.version = \"1\"\nname=x\nkernel=/k").unwrap().name, "x");
    }

    #[test]
    fn quoted_and_unquoted_values_are_the_same() {
        let a = VmConfig::parse("name = \"vm-1\"\nkernel = \"/k\"\nmemory_mib = \"32\"\ncmdline = \"a=\\\"b c\\\" \\\\\"").unwrap();
        let b = VmConfig::parse("name = vm-1\nkernel = /k\nmemory_mib = 32\ncmdline = a=\"b c\" \\").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.cmdline, "a=\"b c\" \\");
    }

    /// What `vmkcli vm create` writes (userworld/src/bin/vmkcli.rs) stays valid.
    #[test]
    fn vmkcli_text_is_accepted() {
        let t = "name = hello\nkernel = /usr/lib/mantle/guests/hello.bin\nmemory_mib = 16\nvcpus = 1\ncmdline = \nshares = 1000\nreservation_pct = 0\nmodule = /m1 one two\nmodule = /m2\nformat = multiboot\nentry_mode = protected\n";
        let c = VmConfig::parse(t).unwrap();
        assert_eq!(c.modules, [("/m1".into(), "one two".into()), ("/m2".into(), "".into())]);
        assert_eq!(c.cmdline, "");
        let t = "name = flat\nkernel = /k\nmemory_mib = 16\nvcpus = 1\ncmdline = \nshares = 1000\nreservation_pct = 0\nlimit_pct = 50\nformat = flat\nentry_mode = real\nload_address = 0x7c00\n";
        assert_eq!(VmConfig::parse(t).unwrap().format, KernelFormat::Flat { load: 0x7c00, entry: 0x7c00, real_mode: true });
    }

    #[test]
    fn modules() {
        let c = VmConfig::parse("name=x\nkernel=/k\nmodule1.path = /m2\nmodule0.path=/m1\nmodule0.args = \"one two\"").unwrap();
        assert_eq!(c.modules, [("/m1".into(), "one two".into()), ("/m2".into(), "".into())]);
        assert_eq!(VmConfig::module_string("/m1", "one two"), "/m1 one two");
        assert_eq!(VmConfig::module_string("/m2", ""), "/m2");
        assert!(err("name=x\nkernel=/k\nmodule=rel").contains("absolute"));
        assert!(err("name=x\nkernel=/k\nmodule=/a\nmodule0.path=/b").contains("not both"));
        let many: String = (0..=MAX_MODULES).map(|i| format!("module=/m{i}\n")).collect();
        assert!(err(&format!("name=x\nkernel=/k\n{many}")).contains("at most"));
    }

    #[test]
    fn formats() {
        assert_eq!(VmConfig::parse("name=x\nkernel=/k").unwrap().format, KernelFormat::Multiboot);
        assert_eq!(VmConfig::parse("name=x\nkernel=/k\nformat=elf64").unwrap().format, KernelFormat::Elf64);
        let c = VmConfig::parse("name=x\nkernel=/k\nformat=flat\nload_address=0x100000\nentry=0x100020").unwrap();
        assert_eq!(c.format, KernelFormat::Flat { load: 0x10_0000, entry: 0x10_0020, real_mode: false });
        for (bad, why) in [
            ("format=flat", "load_address: required"),
            ("format=flat\nload_address=0x200000\nentry_mode=real", "real mode"),
            ("format=flat\nload_address=zz", "not an address"),
            ("format=pe", "multiboot, flat, elf64 or linux"),
            ("format=elf64\nmodule=/m", "modules are for Multiboot"),
            ("entry_mode=v86", "real or protected"),
            ("load_address=0x1000", "only for format flat"),
        ] {
            let e = err(&format!("name=x\nkernel=/k\n{bad}"));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn disks_and_nics() {
        let c = VmConfig::parse("name=x\nkernel=/k\ndisk0.file = x.img\ndisk1.file=/vmfs/volumes/ds/iso/a.img\nnic0.network = \"VM Network\"\nnic0.mac=02:00:00:00:00:01\nnic1.network=lan\n").unwrap();
        assert_eq!(c.disks.iter().map(|d| d.file.as_str()).collect::<Vec<_>>(), ["x.img", "/vmfs/volumes/ds/iso/a.img"]);
        assert_eq!(c.nics[0], NicConfig { network: "VM Network".into(), mac: "02:00:00:00:00:01".into(), model: "virtio-net".into() });
        assert_eq!(c.nics[1].model, "virtio-net");
        for (bad, field) in [
            ("disk0.file=../x", "disks[0].file"),
            ("disk0.file=/a/../b", "disks[0].file"),
            ("disk0.file=.hidden", "disks[0].file"),
            ("disk0.file=a.vmx", "disks[0].file"),
            ("disk0.file=a\ndisk1.file=a", "disks[1].file"),
            ("disk0.file=\"\"", "disks[0].file"),
            ("nic0.model=virtio-net", "nics[0].network"),
            ("nic0.network=n\nnic0.mac=01:00:00:00:00:01", "nics[0].mac"),
            ("nic0.network=n\nnic0.mac=00:00:00:00:00:00", "nics[0].mac"),
            ("nic0.network=n\nnic0.mac=zz", "nics[0].mac"),
            ("nic0.network=n\nnic0.model=rtl8139", "nics[0].model"),
        ] {
            let e = VmConfig::parse(&format!("name=x\nkernel=/k\n{bad}")).unwrap_err();
            assert_eq!(e.field, field, "{bad:?}: {e}");
        }
        assert!(valid_mac("02:4d:4e:00:00:01") && !valid_mac("02:4d:4e:00:00:01:02") && !valid_mac("02:4d:4e:00:00"));
    }

    #[test]
    fn linux_and_initrd() {
        let c = VmConfig::parse("name=l\nkernel=/vmfs/volumes/ds/l/vmlinuz\nformat = \"linux\"\ninitrd = \"/vmfs/volumes/ds/l/initrd.cpio\"\ncmdline = console=ttyS0").unwrap();
        assert_eq!(c.format, KernelFormat::Linux);
        assert_eq!(c.initrd.as_deref(), Some("/vmfs/volumes/ds/l/initrd.cpio"));
        assert_eq!(VmConfig::parse(&c.to_text()).unwrap(), c);
        assert_eq!(VmConfig::parse("name=l\nkernel=/k\nformat=linux").unwrap().initrd, None);
        assert!(err("name=l\nkernel=/k\nformat=linux\ninitrd=rel").contains("absolute"));
        assert!(err("name=l\nkernel=/k\ninitrd=/i").contains("format = linux"));
        assert!(err("name=l\nkernel=/k\nformat=linux\nmodule=/m").contains("Multiboot"));
    }

    #[test]
    fn disk_formats_readonly_and_slots() {
        let c = VmConfig::parse("name=x\nkernel=/k\ndisk0.file=/a.vmdk\ndisk1.file=b.qcow2\ndisk1.readonly=TRUE\ndisk2.file=/c.img\ndisk2.format=qcow2").unwrap();
        assert_eq!(c.disks.iter().map(|d| d.image_format()).collect::<Vec<_>>(), ["vmdk", "qcow2", "qcow2"]);
        assert_eq!(c.disks.iter().map(|d| d.readonly).collect::<Vec<_>>(), [false, true, false]);
        assert_eq!(DiskConfig { file: "/x.img".into(), ..Default::default() }.image_format(), "raw");
        for (bad, why) in [
            ("disk0.file=/a\ndisk0.format=vdi", "raw, qcow2 or vmdk"),
            ("disk0.file=/a\ndisk0.readonly=maybe", "true or false"),
        ] {
            let e = err(&format!("name=x\nkernel=/k\n{bad}"));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many: String = (0..5).map(|i| format!("disk{i}.file=/d{i}\nnic{i}.network=n\n")).take(9).collect();
        let many = many.replace("nic4.network=n\n", "");
        assert!(err(&format!("name=x\nkernel=/k\n{many}")).contains("at most 8"));
        assert_eq!(crate::parse_unicast_mac("00:50:56:0a:0b:0c"), Some([0, 0x50, 0x56, 0x0a, 0x0b, 0x0c]));
        assert_eq!(crate::parse_unicast_mac("01:00:5e:00:00:01"), None);
        assert_eq!(crate::parse_unicast_mac(""), None);
    }

    #[test]
    fn text_round_trip() {
        let c = VmConfig {
            name: "web01".into(),
            memory_mib: 128,
            vcpus: 2,
            kernel: "/boot/k.elf".into(),
            cmdline: "console=ttyS0 \"quoted\" \\".into(),
            shares: 2000,
            reservation_pct: 10,
            limit_pct: Some(50),
            modules: alloc::vec![("/boot/initrd".into(), "a b".into())],
            format: KernelFormat::Multiboot,
            initrd: None,
            disks: alloc::vec![
                DiskConfig { file: "web01.img".into(), ..Default::default() },
                DiskConfig { file: "/vmfs/volumes/ds/base.vmdk".into(), format: "vmdk".into(), readonly: true },
            ],
            nics: alloc::vec![NicConfig { network: "VM Network".into(), mac: "02:4d:4e:00:00:01".into(), model: "e1000".into() }],
            annotation: "line one\nsays \"hi\"".into(),
        };
        let t = c.to_text();
        assert!(t.starts_with("config.version = \"1\"\n"), "{t}");
        assert_eq!(VmConfig::parse_versioned(&t).unwrap(), c);
        let flat = VmConfig { format: KernelFormat::Flat { load: 0x7c00, entry: 0x7c00, real_mode: true }, modules: Vec::new(), ..c.clone() };
        assert_eq!(VmConfig::parse(&flat.to_text()).unwrap(), flat);
        let flat = VmConfig { format: KernelFormat::Flat { load: 0x10_0000, entry: 0x10_0040, real_mode: false }, modules: Vec::new(), ..c };
        assert_eq!(VmConfig::parse(&flat.to_text()).unwrap(), flat);
    }
}
