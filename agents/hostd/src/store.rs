//! Persistent state on the config store and the datastores: whole files are
//! replaced with the POSIX atomic recipe (write a temporary file, fsync it,
//! rename it over the old one, fsync the directory), so a crash at any moment
//! leaves the old or the new version; logs are JSON lines, and a torn last
//! line is skipped when read back. Log records are made durable by group
//! commit ([`GroupCommit`]): each writer appends its record and waits until a
//! sync covers it; one sync covers every record appended while the previous
//! one ran, so concurrent changes do not queue behind each other's syncs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

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
    file: Arc<File>,
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
        Ok((JsonLog { path: path.to_path_buf(), file: Arc::new(file), bytes }, records))
    }

    /// Appends one record and syncs it to disk.
    pub fn append<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        self.write(record)?;
        self.file.sync_data()
    }

    /// Appends one record without syncing it ([`GroupCommit`] does).
    pub fn write<T: Serialize>(&mut self, record: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        (&*self.file).write_all(&line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// The open file, for syncing outside the log's lock.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
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
        self.file = Arc::new(OpenOptions::new().append(true).open(&self.path)?);
        self.bytes = text.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Group commit for one log. A writer appends its record (numbered in
/// order, under the log's own lock) and tells [`GroupCommit::written`];
/// then, with no lock held, [`GroupCommit::wait`] returns once a sync has
/// covered it. If no sync is running the waiter runs one itself, for every
/// record written so far; otherwise it waits for the running one and, if
/// that did not cover its record, the next. So N concurrent writers cost
/// about two syncs, not N, and each still returns only when its record is
/// on disk.
pub struct GroupCommit {
    state: Mutex<CommitState>,
    synced: Condvar,
    syncs: AtomicU64,
}

struct CommitState {
    /// The highest record number written to the file.
    written: u64,
    /// The highest record number known to be on disk.
    durable: u64,
    syncing: bool,
    file: Arc<File>,
}

impl GroupCommit {
    /// For a log whose records up to `durable` are on disk already.
    pub fn new(file: Arc<File>, durable: u64) -> GroupCommit {
        GroupCommit { state: Mutex::new(CommitState { written: durable, durable, syncing: false, file }), synced: Condvar::new(), syncs: AtomicU64::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `n` (and every one before it) is in the file. Called in
    /// order, under the log's lock.
    pub fn written(&self, n: u64) {
        let mut st = self.lock();
        st.written = st.written.max(n);
    }

    /// The log was replaced by a synced file holding every record up to `n`
    /// (a compaction): they are durable, later ones go to `file`.
    pub fn replaced(&self, file: Arc<File>, n: u64) {
        let mut st = self.lock();
        st.file = file;
        st.written = st.written.max(n);
        st.durable = st.durable.max(n);
        self.synced.notify_all();
    }

    /// The highest record number on disk.
    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Syncs run so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Returns once record `n` is on disk. A failed sync is reported and
    /// counts as done (as a failed append always did): the change it
    /// records has happened and is not undone.
    pub fn wait(&self, n: u64, what: &Path) {
        let mut st = self.lock();
        while st.durable < n {
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            st.syncing = true;
            let (target, file) = (st.written, Arc::clone(&st.file));
            drop(st);
            let r = file.sync_data();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = r {
                eprintln!("hostd: cannot sync {}: {e}", what.display());
            }
            st = self.lock();
            st.syncing = false;
            st.durable = st.durable.max(target);
            self.synced.notify_all();
        }
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
    fn group_commit_syncs_concurrent_records_together() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log.jsonl");
        let (log, _) = JsonLog::open::<R>(&p).unwrap();
        let commit = Arc::new(GroupCommit::new(log.file(), 0));
        let log = Arc::new(Mutex::new((log, 0u64)));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (log, commit, p) = (Arc::clone(&log), Arc::clone(&commit), p.clone());
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let n = {
                            let mut l = log.lock().unwrap();
                            l.1 += 1;
                            let n = l.1;
                            l.0.write(&R { n: t * 100 + i }).unwrap();
                            commit.written(n);
                            n
                        };
                        commit.wait(n, &p);
                        // Acknowledged only once it is on disk.
                        assert!(commit.durable() >= n);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let (_, recs) = JsonLog::open::<R>(&p).unwrap();
        assert_eq!(recs.len(), 320);
        assert!(commit.syncs() <= 320, "{} syncs", commit.syncs());
        eprintln!("320 records from 16 threads: {} syncs", commit.syncs());
        // A compaction makes everything so far durable without a sync.
        let (mut l, n) = std::mem::replace(&mut *log.lock().unwrap(), (JsonLog::open::<R>(&p).unwrap().0, 0));
        l.rewrite(&recs[300..]).unwrap();
        commit.replaced(l.file(), n + 5);
        let before = commit.syncs();
        commit.wait(n + 5, &p);
        assert_eq!(commit.syncs(), before);
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
