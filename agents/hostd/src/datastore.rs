//! The datastore browser: list, download, upload and delete files on a
//! datastore — how an administrator brings ISOs, kernels and disk images.
//!
//! Paths are relative to the datastore's root, `/`-separated; every
//! component must be a plain name (not empty, not starting with `.`, no
//! `\` or control characters), and no component may be a symbolic link, so a
//! request never reaches outside the datastore. `.vmx` files are hostd's:
//! they change through the VM API only. An upload streams into a hidden
//! temporary file in the target directory and is renamed into place when
//! complete (fsync, rename, fsync of the directory), so a reader sees the
//! old file or the whole new one, never part of it; hostd removes the
//! temporary files a crash left behind when it starts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::Serialize;
use utoipa::ToSchema;

use crate::host::OpError;

/// One directory entry.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    /// `file` or `dir`.
    pub kind: String,
    pub size_bytes: u64,
    /// Unix seconds of the last change.
    pub modified: Option<u64>,
}

/// A directory's contents.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Listing {
    pub datastore: String,
    /// Relative to the datastore ("" for its root).
    pub path: String,
    /// Directories first, then files, by name.
    pub entries: Vec<FileEntry>,
}

const MAX_REL_PATH: usize = 1024;

fn bad_path(m: impl Into<String>) -> OpError {
    OpError::Invalid(Some("path".into()), format!("path: {}", m.into()))
}

/// The components of a relative datastore path, checked.
pub fn components(rel: &str) -> Result<Vec<&str>, OpError> {
    if rel.len() > MAX_REL_PATH {
        return Err(bad_path(format!("at most {MAX_REL_PATH} bytes")));
    }
    let mut out = Vec::new();
    for c in rel.split('/').filter(|c| !c.is_empty()) {
        if c.starts_with('.') || c.len() > 255 || c.chars().any(|ch| ch.is_control() || ch == '\\') {
            return Err(bad_path(format!("{c:?}: names must not start with '.' or hold '\\' or control characters")));
        }
        out.push(c);
    }
    Ok(out)
}

/// `root` joined with a checked relative path; no existing component of it
/// may be a symbolic link.
pub fn resolve(root: &Path, rel: &str) -> Result<PathBuf, OpError> {
    let mut p = root.to_path_buf();
    for c in components(rel)? {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => return Err(bad_path(format!("{c:?} is a symbolic link"))),
            _ => {}
        }
    }
    Ok(p)
}

/// Refuses hostd's own files.
pub fn not_vmx(rel: &str) -> Result<(), OpError> {
    if rel.to_ascii_lowercase().ends_with(".vmx") {
        return Err(bad_path(".vmx files change through the VM API only"));
    }
    Ok(())
}

fn entry(name: String, m: &fs::Metadata) -> FileEntry {
    FileEntry {
        name,
        kind: if m.is_dir() { "dir" } else { "file" }.into(),
        size_bytes: if m.is_dir() { 0 } else { m.len() },
        modified: m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs()),
    }
}

pub fn list(ds: &str, root: &Path, rel: &str) -> Result<Listing, OpError> {
    let dir = resolve(root, rel)?;
    let rd = fs::read_dir(&dir).map_err(|e| match e.kind() {
        // A file on the way ("a.txt/b") is as absent as a missing directory.
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory if !dir.is_file() => OpError::NotFound(format!("{ds}/{rel}: no such directory")),
        _ if dir.is_file() => bad_path(format!("{rel:?} is a file, not a directory")),
        _ => OpError::Internal(format!("reading {}: {e}", dir.display())),
    })?;
    let mut entries: Vec<FileEntry> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if name.starts_with('.') {
                return None;
            }
            let m = fs::symlink_metadata(e.path()).ok()?;
            (m.is_file() || m.is_dir()).then(|| entry(name, &m))
        })
        .collect();
    entries.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    Ok(Listing { datastore: ds.into(), path: components(rel)?.join("/"), entries })
}

/// The file a download reads (a regular file on the datastore).
pub fn download_path(ds: &str, root: &Path, rel: &str) -> Result<(PathBuf, u64), OpError> {
    if components(rel)?.is_empty() {
        return Err(bad_path("required"));
    }
    let p = resolve(root, rel)?;
    match fs::metadata(&p) {
        Ok(m) if m.is_file() => Ok((p, m.len())),
        Ok(_) => Err(bad_path(format!("{rel:?} is a directory"))),
        Err(_) => Err(OpError::NotFound(format!("{ds}/{rel}: no such file"))),
    }
}

/// Where an upload goes, checked before any byte is read: the final path
/// and the temporary file beside it. Parent directories are created.
pub fn upload_paths(ds: &str, root: &Path, rel: &str, overwrite: bool) -> Result<(PathBuf, PathBuf), OpError> {
    let comps = components(rel)?;
    let Some(name) = comps.last() else { return Err(bad_path("required")) };
    not_vmx(rel)?;
    let target = resolve(root, rel)?;
    let parent = target.parent().map(Path::to_path_buf).unwrap_or_else(|| root.to_path_buf());
    if parent.exists() && !parent.is_dir() {
        return Err(bad_path("a parent is a file"));
    }
    fs::create_dir_all(&parent).map_err(|e| match e.kind() {
        // A file further up ("a.txt/b/c"), or one made meanwhile.
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => bad_path("a parent is a file"),
        io::ErrorKind::StorageFull => OpError::Conflict(format!("datastore {ds} is full")),
        _ => OpError::Internal(format!("creating {}: {e}", parent.display())),
    })?;
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => return Err(OpError::Conflict(format!("{ds}/{rel} is a directory"))),
        Ok(_) if !overwrite => return Err(OpError::Conflict(format!("{ds}/{rel} exists; upload with overwrite=true to replace it"))),
        _ => {}
    }
    let mut rnd = [0u8; 6];
    getrandom::getrandom(&mut rnd).map_err(|e| OpError::Internal(e.to_string()))?;
    let tmp = parent.join(format!(".{name}.upload-{}", rnd.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    Ok((target, tmp))
}

/// Removes the temporary files of uploads a crash cut short (hidden
/// `.<name>.upload-<hex>` files), down to `depth` directory levels.
pub fn remove_stale_uploads(dir: &Path, depth: u32) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
        let name = e.file_name();
        let name = name.to_string_lossy();
        if m.is_file() && name.starts_with('.') && name.contains(".upload-") {
            n += usize::from(fs::remove_file(e.path()).is_ok());
        } else if m.is_dir() && depth > 0 && !name.starts_with('.') {
            n += remove_stale_uploads(&e.path(), depth - 1);
        }
    }
    n
}

pub fn delete(ds: &str, root: &Path, rel: &str) -> Result<(), OpError> {
    not_vmx(rel)?;
    let (p, _) = download_path(ds, root, rel)?;
    fs::remove_file(&p).map_err(|e| OpError::Internal(format!("deleting {}: {e}", p.display())))?;
    if let Some(dir) = p.parent() {
        let _ = crate::store::sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_datastore() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("ds1");
        fs::create_dir_all(root.join("isos")).unwrap();
        for bad in ["../etc/passwd", "isos/../../x", ".hidden", "a/./b", "a\\b", "x\u{1}y"] {
            assert!(matches!(resolve(&root, bad), Err(OpError::Invalid(Some(f), _)) if f == "path"), "{bad}");
        }
        assert_eq!(resolve(&root, "/isos//a.iso").unwrap(), root.join("isos/a.iso"));
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert!(resolve(&root, "etc/passwd").is_err(), "symbolic links are not followed");
        assert!(list("ds1", &root, "").unwrap().entries.iter().all(|e| e.name != "etc"), "links are not listed");
        assert!(upload_paths("ds1", &root, "vm/vm.vmx", true).is_err());
        fs::write(root.join("isos/a.iso"), b"iso").unwrap();
        assert!(matches!(upload_paths("ds1", &root, "isos/a.iso", false), Err(OpError::Conflict(_))));
        let (t, tmp) = upload_paths("ds1", &root, "new/dir/k.bin", false).unwrap();
        assert_eq!(t, root.join("new/dir/k.bin"));
        assert_eq!(tmp.parent(), t.parent());
        let l = list("ds1", &root, "").unwrap();
        assert_eq!(l.entries.iter().map(|e| (e.name.as_str(), e.kind.as_str())).collect::<Vec<_>>(), [("isos", "dir"), ("new", "dir")]);
        assert!(matches!(list("ds1", &root, "nope"), Err(OpError::NotFound(_))));
        // A file where a directory would be (found by the API fuzz run: was a 500).
        fs::write(root.join("plain"), b"x").unwrap();
        assert!(matches!(list("ds1", &root, "plain/sub"), Err(OpError::NotFound(_))));
        assert!(matches!(list("ds1", &root, "plain"), Err(OpError::Invalid(..))));
        assert!(matches!(upload_paths("ds1", &root, "plain/sub/f.bin", false), Err(OpError::Invalid(..))));
        assert!(matches!(download_path("ds1", &root, "plain/f.bin"), Err(OpError::NotFound(_))));
        fs::write(&tmp, b"half an upload").unwrap();
        fs::write(root.join("isos/.keep"), b"not ours").unwrap();
        assert_eq!(remove_stale_uploads(&root, 3), 1);
        assert!(!tmp.exists() && root.join("isos/.keep").exists());
        delete("ds1", &root, "isos/a.iso").unwrap();
        assert!(matches!(delete("ds1", &root, "isos/a.iso"), Err(OpError::NotFound(_))));
    }
}
