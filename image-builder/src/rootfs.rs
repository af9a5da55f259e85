//! The root archive (cpio newc) the boot loader hands the kernel as the
//! `rootfs` module.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use vmkernel::cpio::{S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, Writer};

/// `HOST_PATH=IMAGE_PATH`: put a host file (or a directory, recursively) at
/// an absolute path in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddSpec {
    pub host: PathBuf,
    pub image: String,
}

impl FromStr for AddSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, image) = s.split_once('=').ok_or_else(|| format!("--add {s:?}: expected HOST_PATH=IMAGE_PATH"))?;
        let image = normalize(image).ok_or_else(|| format!("--add {s:?}: bad image path {image:?}"))?;
        if host.is_empty() || image.is_empty() {
            return Err(format!("--add {s:?}: both paths are needed (and the image path may not be /)"));
        }
        Ok(AddSpec { host: PathBuf::from(host), image })
    }
}

/// `/a//b/./c` → `a/b/c`; rejects `..` so nothing escapes the root.
fn normalize(p: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[derive(Clone)]
struct Node {
    mode: u32,
    mtime: u32,
    data: Vec<u8>,
}

/// What goes into the archive, keyed by path so parents sort before children
/// and a later `--add` replaces an earlier one.
#[derive(Clone, Default)]
pub struct Rootfs {
    nodes: BTreeMap<String, Node>,
}

impl Rootfs {
    /// A root with the release file every image carries.
    pub fn new() -> Self {
        let mut r = Self::default();
        let release = format!("Mantle {}\n", env!("CARGO_PKG_VERSION"));
        r.insert("etc/mantle-release", S_IFREG | 0o644, 0, release.into_bytes());
        r
    }

    pub(crate) fn insert(&mut self, path: &str, mode: u32, mtime: u32, data: Vec<u8>) {
        // Parent directories become entries of their own (the kernel's
        // unpacker need not invent them).
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            self.nodes.entry(dir.to_string()).or_insert(Node { mode: S_IFDIR | 0o755, mtime, data: Vec::new() });
            at += i + 1;
        }
        self.nodes.insert(path.to_string(), Node { mode, mtime, data });
    }

    /// Leaves `path` (a file or symlink) out; whether it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        self.nodes.remove(path.trim_start_matches('/')).is_some()
    }

    pub fn insert_file(&mut self, path: &str, perm: u32, data: &[u8]) {
        self.insert(path, S_IFREG | perm, 0, data.to_vec());
    }

    pub fn insert_dir(&mut self, path: &str, perm: u32) {
        self.insert(path, S_IFDIR | perm, 0, Vec::new());
    }

    pub fn insert_symlink(&mut self, path: &str, target: &str) {
        self.insert(path, S_IFLNK | 0o777, 0, target.as_bytes().to_vec());
    }

    pub fn add(&mut self, spec: &AddSpec) -> Result<(), String> {
        // The named path itself is followed if it is a symlink (the user
        // means what it points to); links inside directories are kept.
        let meta = std::fs::metadata(&spec.host).map_err(|e| format!("--add {}: {e}", spec.host.display()))?;
        self.add_node(&spec.host, &spec.image, &meta)
    }

    fn add_node(&mut self, host: &Path, image: &str, meta: &std::fs::Metadata) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", host.display());
        let mode = meta.permissions().mode();
        let mtime = meta.mtime().clamp(0, u32::MAX as i64) as u32;
        match mode & S_IFMT {
            S_IFREG => {
                let data = std::fs::read(host).map_err(err)?;
                if data.len() > u32::MAX as usize {
                    return Err(format!("{}: too large for a cpio newc archive", host.display()));
                }
                self.insert(image, mode, mtime, data);
            }
            S_IFLNK => {
                let target = std::fs::read_link(host).map_err(err)?;
                self.insert(image, mode, mtime, target.into_os_string().into_encoded_bytes());
            }
            S_IFDIR => {
                self.insert(image, mode, mtime, Vec::new());
                let mut children: Vec<_> = std::fs::read_dir(host).map_err(err)?.collect::<Result<_, _>>().map_err(err)?;
                children.sort_by_key(|e| e.file_name());
                for c in children {
                    let name = c.file_name();
                    let name = name.to_str().ok_or_else(|| format!("{}: file name is not UTF-8", c.path().display()))?;
                    let m = std::fs::symlink_metadata(c.path()).map_err(err)?;
                    self.add_node(&c.path(), &format!("{image}/{name}"), &m)?;
                }
            }
            _ => eprintln!("image-builder: skipping {} (not a file, directory or symlink)", host.display()),
        }
        Ok(())
    }

    /// The archive: every entry owned by root (uid/gid 0), host mode bits kept.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut w = Writer::new();
        for (path, n) in &self.nodes {
            w.add(path, n.mode, 0, 0, n.mtime, &n.data);
        }
        w.finish()
    }
}

/// Builds the archive: the base system (unless `minimal`), then the
/// `--add` specs, which may replace base files.
pub fn build(adds: &[AddSpec], minimal: bool, quiet: bool) -> Result<Vec<u8>, String> {
    let mut r = Rootfs::new();
    if !minimal {
        crate::userworlds::add_base_system(&mut r, quiet)?;
    }
    for a in adds {
        r.add(a)?;
    }
    Ok(r.to_cpio())
}

/// zstd level of the root archive: with long-distance matching over the
/// whole archive (the static user worlds share most of their std and libc
/// code), 12 gave the 28.7 MB archive of 2026-12-07 as 5.80 MB in 6.9 s
/// (`zstd -12 --long=27`, one thread); 16 gave 5.68 MB in 77 s, 11 6.02 MB.
pub const ZSTD_LEVEL: i32 = 12;
/// Long-distance matching window: 128 MiB, more than the archive.
const ZSTD_WINDOW_LOG: u32 = 27;

/// The archive as the ISO carries it: one zstd frame recording its content
/// size and checksum (the kernel unpacks it at boot with zstd's reference
/// decoder, four times as fast as LZ4 before, on a third of the bytes).
/// Compressed once per archive content: the result is kept under
/// `target/mantle/rootfs-cache/` by a hash of the cpio, so the image tests'
/// many ISOs of one content pay once.
pub fn compress(cpio: &[u8]) -> Result<Vec<u8>, String> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (cpio, ZSTD_LEVEL, ZSTD_WINDOW_LOG).hash(&mut h);
    let cache = crate::out_dir().join("rootfs-cache");
    let cached = cache.join(format!("{:016x}-{}.cpio.zst", h.finish(), cpio.len()));
    if let Ok(z) = std::fs::read(&cached)
        && vmkernel::rootfs::unpack(&z, cpio.len()).is_ok_and(|c| *c == *cpio)
    {
        return Ok(z);
    }
    let z = compress_zstd(cpio)?;
    // Best effort: a cache that cannot be written only costs time. The
    // oldest go beyond 24 entries (~6 MB each: the suite's distinct
    // archives, so a warm run compresses none).
    if std::fs::create_dir_all(&cache).is_ok() {
        if let Ok(dir) = std::fs::read_dir(&cache) {
            let mut old: Vec<_> = dir.flatten().filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path()))).collect();
            old.sort();
            let keep = 24;
            for (_, p) in old.iter().take(old.len().saturating_sub(keep)) {
                let _ = std::fs::remove_file(p);
            }
        }
        let tmp = cached.with_extension("tmp");
        if std::fs::write(&tmp, &z).is_ok() {
            let _ = std::fs::rename(&tmp, &cached);
        }
    }
    Ok(z)
}

/// One zstd frame of `cpio`, content size and checksum included.
pub fn compress_zstd(cpio: &[u8]) -> Result<Vec<u8>, String> {
    use zstd_safe::CParameter;
    let err = |what: &str, code: usize| format!("compressing the root archive: {what}: {}", zstd_safe::get_error_name(code));
    let mut cctx = zstd_safe::CCtx::create();
    for p in [
        CParameter::CompressionLevel(ZSTD_LEVEL),
        CParameter::EnableLongDistanceMatching(true),
        CParameter::WindowLog(ZSTD_WINDOW_LOG),
        CParameter::ChecksumFlag(true),
        CParameter::ContentSizeFlag(true),
    ] {
        cctx.set_parameter(p).map_err(|c| err("parameter", c))?;
    }
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(cpio.len()));
    cctx.compress2(&mut out, cpio).map_err(|c| err("compress", c))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmkernel::cpio::entries;

    #[test]
    fn add_spec_parsing() {
        let a: AddSpec = "/etc/hostname=/etc//hostname".parse().unwrap();
        assert_eq!(a, AddSpec { host: "/etc/hostname".into(), image: "etc/hostname".into() });
        assert!("nothing".parse::<AddSpec>().is_err());
        assert!("x=/".parse::<AddSpec>().is_err());
        assert!("x=/a/../../b".parse::<AddSpec>().is_err());
    }

    #[test]
    fn directories_recursive_with_parents_and_modes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/run.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(d.path().join("sub/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(d.path().join("a.txt"), b"hello").unwrap();
        std::os::unix::fs::symlink("a.txt", d.path().join("link")).unwrap();
        let spec = AddSpec { host: d.path().into(), image: "opt/x".into() };
        let cpio = build(&[spec], true, true).unwrap();
        let e: Vec<_> = entries(&cpio).collect::<Result<_, _>>().unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            ["etc", "etc/mantle-release", "opt", "opt/x", "opt/x/a.txt", "opt/x/link", "opt/x/sub", "opt/x/sub/run.sh"]
        );
        let get = |n: &str| e.iter().find(|e| e.name == n).unwrap();
        assert!(get("opt").is_dir());
        assert_eq!(get("opt/x/a.txt").data, b"hello");
        assert!(get("opt/x/link").is_symlink());
        assert_eq!(get("opt/x/link").data, b"a.txt");
        assert_eq!(get("opt/x/sub/run.sh").mode, S_IFREG | 0o750);
        assert!(e.iter().all(|e| e.uid == 0 && e.gid == 0));
    }

    #[test]
    fn compressed_archive_unpacks_with_the_kernels_decoder() {
        let cpio = build(&[], true, true).unwrap();
        let z = compress_zstd(&cpio).unwrap();
        assert_eq!(vmkernel::rootfs::packing(&z), vmkernel::rootfs::Packing::Zstd);
        assert_eq!(&*vmkernel::rootfs::unpack(&z, 1 << 20).unwrap(), &cpio[..]);
        // Over the caller's limit, truncated or damaged: an error, never a
        // short archive.
        assert!(matches!(vmkernel::rootfs::unpack(&z, 10), Err(vmkernel::rootfs::UnpackError::TooLarge { .. })));
        assert!(vmkernel::rootfs::unpack(&z[..z.len() - 5], 1 << 20).is_err());
        let mut bad = z.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        assert!(vmkernel::rootfs::unpack(&bad, 1 << 20).is_err());
    }

    #[test]
    fn missing_host_path_is_an_error() {
        let spec = AddSpec { host: "/nonexistent/mantle".into(), image: "x".into() };
        let err = build(&[spec], true, true).unwrap_err();
        assert!(err.contains("/nonexistent/mantle"), "{err}");
    }
}
