//! Persistent state on the config store and the datastores: whole files are
//! replaced with the POSIX atomic recipe (write a temporary file, fsync it,
//! rename it over the old one, fsync the directory), so a crash at any moment
//! leaves the old or the new version; logs are JSON lines appended and synced
//! one record at a time, and a torn last line is skipped when read back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The temporary name a file is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.hostd-tmp"))
}

/// Syncs a directory's entries. File systems that cannot sync a directory
/// (EINVAL) have nothing more to do.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    match d.sync_all() {
        Err(e) if e.raw_os_error() == Some(22) => Ok(()), // EINVAL
        r => r,
    }
}

/// Replaces `path` with `data` atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// Like [`write_atomic`] for secrets: the file is never readable by others,
/// not even while it is being written.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o600)
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let result = (|| {
        // A stale temporary file from a crash may have other permissions: start afresh.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_atomic(path, &json_text(value)?)
}

/// Writes `value` as pretty JSON, atomically, readable only by its owner.
pub fn write_json_private<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    write_private(path, &json_text(value)?)
}

fn json_text<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    Ok(text)
}

/// An append-only log of JSON records, one per line.
pub struct JsonLog {
    path: PathBuf,
    file: File,
    bytes: u64,
}

impl JsonLog {
    /// Opens (creating) the log and reads back its records; a torn or
    /// unreadable line is skipped.
    pub fn open<T: DeserializeOwned>(path: &Path) -> io::Result<(JsonLog, Vec<T>)> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let records = data.split(|&c| c == b'\n').filter_map(|line| serde_json::from_slice(line).ok()).collect();
        let ends_with_newline = data.last().is_none_or(|&c| c == b'\n');
        let mut file = OpenOptions::new().create(true).append(true).open(path)?;
        if !ends_with_newline {
            // A crash tore the last record: end it, so the next one starts on a line of its own.
            file.write_all(b"\n")?;
        }
        let bytes = data.len() as u64 + u64::from(!ends_with_newline);
        Ok((JsonLog { path: path.to_path_buf(), file, bytes }, records))
    }

    /// Appends one record and syncs it to disk.
    pub fn append<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        self.file.sync_data()
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Replaces the whole log with `records` (atomically), e.g. the newest
    /// ones when it has grown too large.
    pub fn rewrite<'a, T: Serialize + 'a>(&mut self, records: impl IntoIterator<Item = &'a T>) -> io::Result<()> {
        let mut text = Vec::new();
        for r in records {
            serde_json::to_writer(&mut text, r).map_err(io::Error::other)?;
            text.push(b'\n');
        }
        write_atomic(&self.path, &text)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.bytes = text.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!temp_path(&p).exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        write_private(&p, b"secret").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn atomic_write_failure_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a");
        write_atomic(&p, b"old").unwrap();
        // The rename target is now a non-empty directory's name: the write fails.
        let bad = d.path().join("dir");
        fs::create_dir(&bad).unwrap();
        fs::write(bad.join("x"), b"").unwrap();
        assert!(write_atomic(&bad, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(!temp_path(&bad).exists());
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct R {
        n: u32,
    }

    #[test]
    fn log_survives_a_torn_last_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.jsonl");
        let (mut log, old) = JsonLog::open::<R>(&p).unwrap();
        assert!(old.is_empty());
        log.append(&R { n: 1 }).unwrap();
        log.append(&R { n: 2 }).unwrap();
        drop(log);
        // A crash in the middle of the third record.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"n\":").unwrap();
        drop(f);
        let (mut log, recs) = JsonLog::open::<R>(&p).unwrap();
        assert_eq!(recs, [R { n: 1 }, R { n: 2 }]);
        log.append(&R { n: 3 }).unwrap();
        drop(log);
        let (mut log, recs) = JsonLog::open::<R>(&p).unwrap();
        assert_eq!(recs, [R { n: 1 }, R { n: 2 }, R { n: 3 }]);
        log.rewrite(&recs[1..]).unwrap();
        log.append(&R { n: 4 }).unwrap();
        assert_eq!(log.len(), fs::metadata(&p).unwrap().len());
        let (_, recs) = JsonLog::open::<R>(&p).unwrap();
        assert_eq!(recs, [R { n: 2 }, R { n: 3 }, R { n: 4 }]);
    }
}
