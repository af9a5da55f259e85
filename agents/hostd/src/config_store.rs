//! Where hostd keeps its own state (the config store): accounts, the
//! inventory list, the event and audit logs, the host certificate and key.
//!
//! Mantle's root file system is a ramfs rebuilt at every boot, so the store
//! lives on a datastore, like ESXi keeps its state off the boot image:
//! `<datastore>/.mantle/hostd/` on the first datastore (by name) — or on
//! whichever datastore already holds one, so adding a disk never moves it.
//! The datastore browser refuses names starting with `.`, so no API user
//! reaches these files. FAT keeps no owner-only modes: the key is as safe
//! as the datastore disk. With no datastore attached hostd says so and keeps
//! the store in memory (`/etc/mantle/hostd`): it works, but a reboot forgets
//! the accounts, the inventory and the certificate.
//!
//! `hostd passwd` at the console finds the same store the same way.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use utoipa::ToSchema;

/// The store's directory relative to a datastore's root.
pub const ON_DATASTORE: &str = ".mantle/hostd";
/// The in-memory store, and where the host certificate is published for the
/// other agents (the CIM broker reads `ssl/host.crt` and `ssl/host.key`).
pub const IN_MEMORY: &str = "/etc/mantle/hostd";

/// Where the store is, as the host summary reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConfigStore {
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Survives a reboot: on a datastore, or a directory given with `--config-dir`.
    pub persistent: bool,
    /// The datastore holding it, if any.
    pub datastore: Option<String>,
}

impl ConfigStore {
    /// A directory the administrator named (`--config-dir`).
    pub fn given(path: PathBuf) -> Self {
        ConfigStore { path, persistent: true, datastore: None }
    }

    /// One line for the console log.
    pub fn describe(&self) -> String {
        match (&self.datastore, self.persistent) {
            (Some(ds), _) => format!("config store on datastore {ds}: {}", self.path.display()),
            (None, true) => format!("config store: {}", self.path.display()),
            (None, false) => format!(
                "no datastore attached: the config store (accounts, inventory, event log, certificate) is in memory at {} and a reboot loses it; attach a datastore to keep it",
                self.path.display()
            ),
        }
    }
}

/// The datastores under `volumes`, sorted by name (hidden names skipped).
/// Mantle (like ESXi) mounts a datastore at `/vmfs/volumes/<uuid>` and adds
/// its name as a symbolic link beside it: a datastore is listed once, by
/// its name, and a directory some name points to is not listed again.
pub fn datastores(volumes: &Path) -> Vec<(String, PathBuf)> {
    let entries: Vec<(String, PathBuf, Option<PathBuf>)> = fs::read_dir(volumes)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let path = e.path();
            if name.starts_with('.') || !path.is_dir() {
                return None;
            }
            let target = fs::read_link(&path).ok().map(|t| volumes.join(t));
            Some((name, path, target))
        })
        .collect();
    let named: Vec<&PathBuf> = entries.iter().filter_map(|(_, _, t)| t.as_ref()).collect();
    let mut out: Vec<(String, PathBuf)> =
        entries.iter().filter(|(_, path, target)| target.is_some() || !named.contains(&path)).map(|(n, p, _)| (n.clone(), p.clone())).collect();
    out.sort();
    out
}

/// Finds (or makes) the store: an existing one on any datastore, else a new
/// one on the first datastore that takes it, else `in_memory`.
pub fn locate(volumes: &Path, in_memory: &Path) -> ConfigStore {
    let stores = datastores(volumes);
    if let Some((name, root)) = stores.iter().find(|(_, root)| root.join(ON_DATASTORE).is_dir()) {
        return ConfigStore { path: root.join(ON_DATASTORE), persistent: true, datastore: Some(name.clone()) };
    }
    for (name, root) in &stores {
        let dir = root.join(ON_DATASTORE);
        match fs::create_dir_all(&dir) {
            Ok(()) => {
                // The new directories' entries reach the disk before anything is written in them.
                let _ = crate::store::sync_dir(root);
                let _ = crate::store::sync_dir(&root.join(".mantle"));
                return ConfigStore { path: dir, persistent: true, datastore: Some(name.clone()) };
            }
            Err(e) => eprintln!("hostd: datastore {name}: cannot make {}: {e}", dir.display()),
        }
    }
    ConfigStore { path: in_memory.to_path_buf(), persistent: false, datastore: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_datastore_means_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let mem = d.path().join("mem");
        let s = locate(&d.path().join("volumes"), &mem);
        assert_eq!(s, ConfigStore { path: mem.clone(), persistent: false, datastore: None });
        assert!(s.describe().contains("no datastore attached"));
        fs::create_dir_all(d.path().join("volumes/.hidden")).unwrap();
        assert_eq!(locate(&d.path().join("volumes"), &mem).path, mem);
    }

    #[test]
    fn a_datastore_is_listed_once_by_its_name() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("volumes");
        fs::create_dir_all(v.join("4566-7990")).unwrap();
        fs::create_dir_all(v.join("plain")).unwrap();
        std::os::unix::fs::symlink("4566-7990", v.join("datastore1")).unwrap();
        fs::write(v.join("file"), b"").unwrap();
        assert_eq!(datastores(&v), [("datastore1".to_string(), v.join("datastore1")), ("plain".to_string(), v.join("plain"))]);
        let s = locate(&v, Path::new("/nonexistent"));
        assert_eq!((s.datastore.as_deref(), s.path), (Some("datastore1"), v.join("datastore1/.mantle/hostd")));
    }

    #[test]
    fn first_datastore_by_name_then_where_it_already_is() {
        let d = tempfile::tempdir().unwrap();
        let v = d.path().join("volumes");
        fs::create_dir_all(v.join("ds2")).unwrap();
        fs::create_dir_all(v.join("ds1")).unwrap();
        let s = locate(&v, Path::new("/nonexistent"));
        assert_eq!(s, ConfigStore { path: v.join("ds1/.mantle/hostd"), persistent: true, datastore: Some("ds1".into()) });
        assert!(s.path.is_dir());
        // A store already on ds2 stays there even though ds1 sorts first.
        fs::remove_dir_all(v.join("ds1/.mantle")).unwrap();
        fs::create_dir_all(v.join("ds2/.mantle/hostd")).unwrap();
        fs::create_dir_all(v.join("ds0")).unwrap();
        let s = locate(&v, Path::new("/nonexistent"));
        assert_eq!(s.datastore.as_deref(), Some("ds2"));
        assert!(!v.join("ds0/.mantle").exists());
    }
}
