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

/// The archive as the ISO carries it: one LZ4 frame (the kernel unpacks
/// it at boot; about a third of the cpio's size, most of it the user
/// worlds' and BusyBox's code).
pub fn compress(cpio: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    // The kernel's decoder wants the content size (it allocates once) and
    // independent blocks; the content checksum lets it refuse a damaged
    // archive (block checksums would add a second pass for nothing).
    let info = lz4_flex::frame::FrameInfo::new()
        .content_size(Some(cpio.len() as u64))
        .block_size(lz4_flex::frame::BlockSize::Max4MB)
        .block_mode(lz4_flex::frame::BlockMode::Independent)
        .content_checksum(true);
    let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::with_capacity(cpio.len() / 2));
    e.write_all(cpio).map_err(|e| format!("compressing the root archive: {e}"))?;
    e.finish().map_err(|e| format!("compressing the root archive: {e}"))
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
        let lz = compress(&cpio).unwrap();
        assert_eq!(vmkernel::rootfs::packing(&lz), vmkernel::rootfs::Packing::Lz4);
        assert_eq!(&*vmkernel::rootfs::unpack(&lz, 1 << 20).unwrap(), &cpio[..]);
    }

    #[test]
    fn missing_host_path_is_an_error() {
        let spec = AddSpec { host: "/nonexistent/mantle".into(), image: "x".into() };
        let err = build(&[spec], true, true).unwrap_err();
        assert!(err.contains("/nonexistent/mantle"), "{err}");
    }
}
