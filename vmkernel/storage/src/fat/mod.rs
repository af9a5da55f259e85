//! FAT datastores: a FAT12/16/32 volume (long names included) on the
//! `starry-fatfs` crate, reached through the [`BlockCache`], with the
//! operations the kernel's VFS maps system calls onto.
//!
//! Paths are `/`-separated and relative to the volume root (a leading `/`
//! is allowed); `.` and `..` are the VFS's business and are refused here.
//! Names compare case-insensitively, as FAT does.
//!
//! # FAT's limits, shown honestly
//! - A file ends at 4 GiB − 1 byte: a write or truncate past that fails
//!   with [`FsError::FileTooBig`] (EFBIG).
//! - No owners or permissions: [`Stat::mode`] is fixed (`0o755` for
//!   directories, `0o644` for files, `0o444`/`0o555` on a read-only mount).
//! - A full volume gives [`FsError::NoSpace`] (ENOSPC); what was already
//!   written stays intact.
//! - Open files behave as POSIX asks although FAT has no inodes: a file
//!   removed while open moves to the hidden directory [`ORPHANS`] and
//!   lives there until its last handle closes (mount and unmount clear
//!   what a crash left there); a file renamed while open keeps its
//!   handles. One difference: an atomic replace (below) over a file that
//!   is open rewrites that file in place, so its open handles see the new
//!   contents rather than the old.
//! - A new name must start with an ASCII character: the fatfs crate's
//!   short-name generator panics on others, so they are refused with
//!   [`FsError::Invalid`] (such names made elsewhere are read normally).
//! - Directory times cannot be set (the crate offers no directory entry
//!   editor); [`Datastore::set_times`] on a directory changes nothing.
//!
//! # Mount checks
//! The boot sector is validated field by field; a bad one is refused
//! ([`MountError::BadBootSector`]) with the reason. The first FAT is then
//! walked once ([`check::check_fat`]); a chain that loops, leaves the
//! volume or runs into a free cluster is cut at the bad link. With
//! [`MountOptions::repair`] the cut is written to every FAT copy; without
//! it the volume is mounted read-only and the cut is applied only in
//! memory, so reading never loops. Either way a log line says what was
//! found.
//!
//! # Crash safety: atomic replace
//! FAT's rename over an existing name is a delete and a rename: a crash in
//! between loses the file. User worlds use the ordinary POSIX recipe —
//! write `name.tmp`, `fsync`, `rename("name.tmp", "name")` — and the
//! datastore makes that rename atomic for files up to the journal's
//! capacity (256 KiB by default):
//! 1. everything dirty is flushed (so `name.tmp` is durable);
//! 2. an intent record — both names and the new contents, with a CRC — is
//!    written to the preallocated journal file and flushed;
//! 3. `name` is rewritten in place with the new contents (created if
//!    absent), flushed; `name.tmp` is removed, flushed;
//! 4. the record is marked idle and flushed.
//!
//! A replace that cannot fit is refused (ENOSPC) before step 2; one that
//! fails after it (an I/O error) stays pending and completes at the next
//! mount. Recovery at mount replays a valid pending record (steps 3 and 4; they
//! are idempotent) and ignores a torn one (nothing had been touched yet).
//! So after a crash at any instant `name` holds the old or the new
//! contents, whole. Larger files and directories are renamed by FAT's
//! delete + rename, which is not atomic.

pub mod check;
pub mod journal;

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use fatfs::{Read, Seek, SeekFrom, Write};

use crate::block::BlockError;
use crate::cache::BlockCache;
use check::Geometry;
use journal::{Intent, JOURNAL_NAME, JournalArea};

/// Where files removed while open live until their last close (hidden
/// from listings; emptied at mount and unmount).
pub const ORPHANS: &str = ".mantle-orphans";
const ORPHANS_PREFIX: &str = ".mantle-orphans/";
/// A replaced file that is open, for the moment between its rename and
/// its move to [`ORPHANS`].
const REPLACED: &str = ".mantle-replaced";

/// Wall-clock time in seconds since 1970 (UTC), for file times.
pub trait WallClock: Send + Sync {
    fn unix_time(&self) -> u64;
}

/// A clock stuck at one time (tests, and hosts without an RTC yet).
pub struct FixedClock(pub u64);
impl WallClock for FixedClock {
    fn unix_time(&self) -> u64 {
        self.0
    }
}

/// Errors of datastore operations, each with its errno.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    NoSpace,
    FileTooBig,
    ReadOnly,
    Busy,
    /// Bad name or argument (`.`/`..` components, characters FAT refuses).
    Invalid,
    NameTooLong,
    /// The handle is not open, or not open for this.
    BadHandle,
    /// Internal files of the datastore.
    Denied,
    /// The volume's metadata is inconsistent.
    Corrupt,
    Io(BlockError),
}

impl FsError {
    /// The Linux errno for the VFS to return.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => 2,
            FsError::Exists => 17,
            FsError::NotDir => 20,
            FsError::IsDir => 21,
            FsError::NotEmpty => 39,
            FsError::NoSpace => 28,
            FsError::FileTooBig => 27,
            FsError::ReadOnly => 30,
            FsError::Busy => 16,
            FsError::Invalid => 22,
            FsError::NameTooLong => 36,
            FsError::BadHandle => 9,
            FsError::Denied => 13,
            FsError::Corrupt => 117,
            FsError::Io(_) => 5,
        }
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsError::Io(e) => return write!(f, "I/O error: {e}"),
            FsError::NotFound => "no such file or directory",
            FsError::Exists => "file exists",
            FsError::NotDir => "not a directory",
            FsError::IsDir => "is a directory",
            FsError::NotEmpty => "directory not empty",
            FsError::NoSpace => "no space left on the datastore",
            FsError::FileTooBig => "file too large (FAT files end at 4 GiB - 1)",
            FsError::ReadOnly => "read-only datastore",
            FsError::Busy => "file is open (busy)",
            FsError::Invalid => "invalid name or argument",
            FsError::NameTooLong => "file name too long",
            FsError::BadHandle => "bad file handle",
            FsError::Denied => "permission denied (datastore-internal file)",
            FsError::Corrupt => "file system metadata is inconsistent",
        })
    }
}

impl From<BlockError> for FsError {
    fn from(e: BlockError) -> Self {
        match e {
            BlockError::ReadOnly => FsError::ReadOnly,
            e => FsError::Io(e),
        }
    }
}

impl From<fatfs::Error<BlockError>> for FsError {
    fn from(e: fatfs::Error<BlockError>) -> Self {
        use fatfs::Error as E;
        match e {
            E::Io(b) => b.into(),
            E::NotFound => FsError::NotFound,
            E::AlreadyExists => FsError::Exists,
            E::DirectoryIsNotEmpty => FsError::NotEmpty,
            E::NotEnoughSpace | E::WriteZero => FsError::NoSpace,
            E::InvalidFileNameLength => FsError::NameTooLong,
            E::UnsupportedFileNameCharacter | E::InvalidInput => FsError::Invalid,
            E::CorruptedFileSystem | E::UnexpectedEof => FsError::Corrupt,
            _ => FsError::Corrupt,
        }
    }
}

impl fatfs::IoError for BlockError {
    fn is_interrupted(&self) -> bool {
        false
    }
    fn new_unexpected_eof_error() -> Self {
        BlockError::OutOfRange
    }
    fn new_write_zero_error() -> Self {
        BlockError::Io
    }
}

/// Why a volume could not be mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountError {
    /// The boot sector is not a FAT boot sector we can trust; the reason.
    BadBootSector(String),
    Io(BlockError),
    /// fatfs refused the volume.
    Fs(String),
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MountError::BadBootSector(why) => write!(f, "not a usable FAT volume: boot sector: {why}"),
            MountError::Io(e) => write!(f, "I/O error while mounting: {e}"),
            MountError::Fs(why) => write!(f, "FAT volume refused: {why}"),
        }
    }
}

/// The byte stream fatfs sees: the volume through the cache, plus
/// in-memory sector patches (repairs of a read-only mount).
struct CacheIo {
    cache: Arc<BlockCache>,
    pos: u64,
    read_only: bool,
    patches: Arc<BTreeMap<u64, Vec<u8>>>,
    sector: u64,
}

impl fatfs::IoBase for CacheIo {
    type Error = BlockError;
}

impl fatfs::Read for CacheIo {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BlockError> {
        let n = (self.cache.size().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.cache.read(self.pos, &mut buf[..n])?;
        if !self.patches.is_empty() && n > 0 {
            let first = self.pos / self.sector * self.sector;
            for (&off, data) in self.patches.range(first..self.pos + n as u64) {
                // Overlap of [off, off + len) with [pos, pos + n).
                let lo = off.max(self.pos);
                let hi = (off + data.len() as u64).min(self.pos + n as u64);
                if lo < hi {
                    buf[(lo - self.pos) as usize..(hi - self.pos) as usize]
                        .copy_from_slice(&data[(lo - off) as usize..(hi - off) as usize]);
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl fatfs::Write for CacheIo {
    fn write(&mut self, buf: &[u8]) -> Result<usize, BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let n = (self.cache.size().saturating_sub(self.pos)).min(buf.len() as u64) as usize;
        self.cache.write(self.pos, &buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        // Durability is the datastore's job (fsync/sync call the cache);
        // fatfs's own flushes only order its writes into the cache.
        Ok(())
    }
}

impl fatfs::Seek for CacheIo {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64, BlockError> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.cache.size().checked_add_signed(d),
        };
        match new {
            Some(n) if n <= self.cache.size() => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(BlockError::OutOfRange),
        }
    }
}

/// File times for fatfs from the kernel's wall clock.
struct FatTime(Arc<dyn WallClock>);
impl fmt::Debug for FatTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FatTime")
    }
}
impl fatfs::TimeProvider for FatTime {
    fn get_current_date(&self) -> fatfs::Date {
        unix_to_fat(self.0.unix_time()).date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        unix_to_fat(self.0.unix_time())
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + if m <= 2 { 1 } else { 0 }, m, d)
}

/// FAT times run from 1980 to 2107 with 2-second resolution; times
/// outside are clamped to the ends.
pub fn unix_to_fat(t: u64) -> fatfs::DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01
    const MAX: u64 = 4_354_819_198; // 2107-12-31 23:59:58
    let t = t.clamp(MIN, MAX);
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    let s = t % 86_400;
    fatfs::DateTime::new(
        fatfs::Date::new(y as u16, m as u16, d as u16),
        fatfs::Time::new((s / 3600) as u16, (s / 60 % 60) as u16, (s % 60) as u16, 0),
    )
}

/// Seconds since 1970 of a FAT date and time; nonsense fields (a damaged
/// entry) give the nearest sensible time, never a panic.
pub fn fat_to_unix(dt: &fatfs::DateTime) -> u64 {
    let (date, time) = (&dt.date, &dt.time);
    let days = days_from_civil(date.year as i64, date.month.clamp(1, 12) as i64, date.day.clamp(1, 31) as i64);
    let secs = days * 86_400 + time.hour.min(23) as i64 * 3600 + time.min.min(59) as i64 * 60 + time.sec.min(59) as i64;
    secs.max(0) as u64
}

fn fat_date_to_unix(d: &fatfs::Date) -> u64 {
    days_from_civil(d.year as i64, d.month.clamp(1, 12) as i64, d.day.clamp(1, 31) as i64).max(0) as u64 * 86_400
}

type Fs = fatfs::FileSystem<CacheIo, FatTime, fatfs::LossyOemCpConverter>;
type FatFile<'a> = fatfs::File<'a, CacheIo, FatTime, fatfs::LossyOemCpConverter>;
type FatDir<'a> = fatfs::Dir<'a, CacheIo, FatTime, fatfs::LossyOemCpConverter>;

/// An open file: one fatfs `File` per path, shared by every handle on it
/// (two `File`s on one entry would overwrite each other's size).
struct Node<'a> {
    file: FatFile<'a>,
    refs: u32,
    /// Unlinked while open: it sits in [`ORPHANS`] and goes at the last close.
    orphan: bool,
    /// Where the file's bytes are on the volume, built on the first read
    /// and dropped by any write or truncate: reads at random offsets then
    /// cost a binary search instead of a walk down the cluster chain.
    map: Option<Vec<Run>>,
    /// Sequential-read detection: where the next read starts if the reader
    /// goes on in order, and how far read-ahead has already loaded.
    read_next: u64,
    read_ahead_end: u64,
}

impl<'a> Node<'a> {
    fn new(file: FatFile<'a>, refs: u32, orphan: bool) -> Self {
        Node { file, refs, orphan, map: None, read_next: 0, read_ahead_end: 0 }
    }
}

/// How far ahead of a sequential reader the cache is filled. Read-ahead
/// turns a reader's many small or medium reads into few device requests of
/// the cache's maximum size.
const READ_AHEAD_BYTES: u64 = 1 << 20;

/// The volume ranges (`disk_off`, `len`) behind file bytes `[from, to)`.
fn disk_ranges(runs: &[Run], from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let i = runs.partition_point(|r| r.file_off + r.len <= from);
    runs[i..].iter().take_while(move |r| r.file_off < to).map(move |r| {
        let lo = from.max(r.file_off);
        let hi = to.min(r.file_off + r.len);
        (r.disk_off + (lo - r.file_off), hi - lo)
    })
}

/// `len` bytes of a file at `file_off` live at volume byte `disk_off`.
#[derive(Clone, Copy, Debug)]
struct Run {
    file_off: u64,
    disk_off: u64,
    len: u64,
}

/// The runs of a file's clusters, adjacent clusters merged.
fn build_map(file: &mut FatFile<'_>) -> Result<Vec<Run>, FsError> {
    let size = file.size().unwrap_or(0) as u64;
    let mut runs: Vec<Run> = Vec::new();
    let mut covered = 0u64;
    for x in file.extents() {
        if covered >= size {
            break;
        }
        let x = x?;
        let len = (x.size as u64).min(size - covered);
        if len == 0 {
            break;
        }
        match runs.last_mut() {
            Some(r) if r.disk_off + r.len == x.offset => r.len += len,
            _ => runs.push(Run { file_off: covered, disk_off: x.offset, len }),
        }
        covered += len;
    }
    Ok(runs)
}

struct HandleInfo {
    key: String,
    path: String,
    read: bool,
    write: bool,
    append: bool,
    dir: bool,
}

struct OpenFiles<'a> {
    nodes: BTreeMap<String, Node<'a>>,
    handles: BTreeMap<u64, HandleInfo>,
}

self_cell::self_cell!(
    struct Volume {
        owner: Fs,
        #[covariant]
        dependent: OpenFiles,
    }
);

/// How to mount.
#[derive(Clone, Copy, Debug)]
pub struct MountOptions {
    /// Mount read-only even if the device is writable.
    pub read_only: bool,
    /// Write the repairs the FAT check finds (otherwise an inconsistent
    /// volume is mounted read-only).
    pub repair: bool,
    /// Bytes of the atomic-replace journal (0: none). Capped at 1/64 of
    /// the volume.
    pub journal_bytes: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { read_only: false, repair: true, journal_bytes: 256 * 1024 }
    }
}

/// How `open` behaves (the O_* flags the VFS passes through).
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenFlags {
    pub read: bool,
    pub write: bool,
    pub create: bool,
    pub exclusive: bool,
    pub truncate: bool,
    pub append: bool,
}

impl OpenFlags {
    pub const READ: OpenFlags =
        OpenFlags { read: true, write: false, create: false, exclusive: false, truncate: false, append: false };
    pub const WRITE_CREATE_TRUNC: OpenFlags =
        OpenFlags { read: false, write: true, create: true, exclusive: false, truncate: true, append: false };
}

/// A handle from [`Datastore::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Handle(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
}

/// What `stat` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: FileKind,
    pub size: u64,
    /// Fixed: FAT has no permissions (see the module docs).
    pub mode: u32,
    /// Bytes allocated (whole clusters).
    pub allocated: u64,
    pub mtime: u64,
    /// FAT keeps only the access date.
    pub atime: u64,
    /// The creation time (FAT has no change time).
    pub ctime: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
}

/// What `statfs` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub free_blocks: u64,
    pub name_max: u32,
}

/// How to format a new volume.
#[derive(Clone, Debug)]
pub struct FormatOptions<'a> {
    /// Up to 11 characters, stored upper-case (FAT labels are).
    pub label: &'a str,
    pub volume_id: u32,
    /// `None` lets the size choose (as mkfs.fat does).
    pub kind: Option<check::FatKind>,
    /// `None` lets the size choose.
    pub bytes_per_cluster: Option<u32>,
}

/// Formats the whole device behind `cache` as a FAT volume and flushes.
pub fn format(cache: &Arc<BlockCache>, opts: &FormatOptions<'_>) -> Result<(), FsError> {
    if cache.read_only() {
        return Err(FsError::ReadOnly);
    }
    let label = opts.label.to_uppercase();
    let allowed = |b: u8| b == b' ' || (b.is_ascii_graphic() && !br#""*+,./:;<=>?[\]|"#.contains(&b));
    if label.len() > 11 || !label.bytes().all(allowed) {
        return Err(FsError::Invalid);
    }
    let mut raw = [b' '; 11];
    raw[..label.len()].copy_from_slice(label.as_bytes());
    let ss = cache.device().sector_size();
    if !(512..=4096).contains(&ss) || !ss.is_power_of_two() {
        return Err(FsError::Invalid);
    }
    let sectors = cache.size() / ss as u64;
    let mut fo = fatfs::FormatVolumeOptions::new()
        .volume_id(opts.volume_id)
        .volume_label(raw)
        .bytes_per_sector(u16::try_from(ss).map_err(|_| FsError::Invalid)?)
        .total_sectors(u32::try_from(sectors).map_err(|_| FsError::Invalid)?);
    if let Some(k) = opts.kind {
        fo = fo.fat_type(match k {
            check::FatKind::Fat12 => fatfs::FatType::Fat12,
            check::FatKind::Fat16 => fatfs::FatType::Fat16,
            check::FatKind::Fat32 => fatfs::FatType::Fat32,
        });
    }
    if let Some(b) = opts.bytes_per_cluster {
        if !b.is_power_of_two() || b < ss || b > 32 * 1024 * 1024 {
            return Err(FsError::Invalid);
        }
        fo = fo.bytes_per_cluster(b);
    }
    let mut io = CacheIo {
        cache: cache.clone(),
        pos: 0,
        read_only: false,
        patches: Arc::new(BTreeMap::new()),
        sector: ss as u64,
    };
    fatfs::format_volume(&mut io, fo)?;
    cache.flush()?;
    Ok(())
}

/// FAT's largest file.
pub const MAX_FILE_SIZE: u64 = 0xFFFF_FFFF;

/// A mounted FAT datastore.
pub struct Datastore {
    vol: Volume,
    cache: Arc<BlockCache>,
    clock: Arc<dyn WallClock>,
    read_only: bool,
    geometry: Geometry,
    label: String,
    journal: Option<JournalArea>,
    journal_seq: u64,
    next_handle: u64,
    log: Vec<String>,
    /// The volume was clean at mount or has been mended: unmount may
    /// clear its dirty flag (fatfs keeps a flag it found set).
    clear_dirty_on_unmount: bool,
}

// SAFETY: a `Datastore` is not `Send` for one reason: the open files
// (`Volume`'s dependent, fatfs `File`s) hold `&FileSystem`, and fatfs's
// `FileSystem` has `RefCell`s, so it is not `Sync`. Those references
// never leave the datastore: they live in the same self-cell as the file
// system they borrow, no method returns a reference into the volume that
// outlives its borrow of `self`, and the fields' private types keep it
// so. Everything else in it is `Send` (asserted below). Moving the whole
// datastore to another CPU therefore moves the file system together with
// every reference to it, as a move within one thread does; it stays
// `!Sync`, so no two CPUs use it at once. The kernel keeps each one
// behind a lock and moves it between CPUs that way.
#[allow(unsafe_code)]
unsafe impl Send for Datastore {}

// The parts of a `Datastore` other than the borrowing files are `Send`.
const _: () = {
    const fn send<T: Send>() {}
    send::<Fs>();
    send::<Arc<BlockCache>>();
    send::<Arc<dyn WallClock>>();
    send::<Geometry>();
    send::<Option<JournalArea>>();
    send::<Vec<String>>();
    send::<BTreeMap<u64, HandleInfo>>();
};

/// Splits and checks a path: components, without empty ones.
fn components(path: &str) -> Result<Vec<&str>, FsError> {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|&c| c == "." || c == "..") {
        return Err(FsError::Invalid);
    }
    if parts.iter().any(|c| c.chars().count() > 255) {
        return Err(FsError::NameTooLong);
    }
    Ok(parts)
}

/// Whether fatfs can make a new entry called `name`: its short-name
/// generator slices the name at byte 1 and panics when the first character
/// is not ASCII, so such names are refused (existing ones still work).
/// Characters FAT's long names cannot hold are refused here too, before
/// fatfs allocates anything (it would leak the new directory's cluster).
fn creatable(name: &str) -> Result<(), FsError> {
    let bad = |c: char| (c as u32) < 0x20 || "\"*/:<>?\\|".contains(c);
    match name.chars().next() {
        Some(c) if c.is_ascii() && !name.chars().any(bad) => Ok(()),
        _ => Err(FsError::Invalid),
    }
}

fn norm(path: &str) -> Result<String, FsError> {
    Ok(components(path)?.join("/"))
}

fn key_of(path: &str) -> String {
    path.to_lowercase()
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The entry `name` of `dir`, if any.
fn lookup<'a>(
    dir: &FatDir<'a>,
    name: &str,
) -> Result<Option<fatfs::DirEntry<'a, CacheIo, FatTime, fatfs::LossyOemCpConverter>>, FsError> {
    for e in dir.iter() {
        let e = e?;
        if e.eq_name(name) {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

fn open_dir<'a>(fs: &'a Fs, path: &str) -> Result<FatDir<'a>, FsError> {
    if path.is_empty() {
        return Ok(fs.root_dir());
    }
    let (parent, name) = split_parent(path);
    let pdir = open_dir(fs, parent)?;
    match lookup(&pdir, name)? {
        Some(e) if e.is_dir() => Ok(e.to_dir()),
        Some(_) => Err(FsError::NotDir),
        None => Err(FsError::NotFound),
    }
}

fn stat_entry(fs: &Fs, path: &str, read_only: bool) -> Result<Stat, FsError> {
    let dir_mode = if read_only { 0o555 } else { 0o755 };
    if path.is_empty() {
        return Ok(Stat {
            kind: FileKind::Dir,
            size: 0,
            mode: 0o040_000 | dir_mode,
            allocated: 0,
            mtime: 0,
            atime: 0,
            ctime: 0,
        });
    }
    let (parent, name) = split_parent(path);
    let pdir = open_dir(fs, parent)?;
    let e = lookup(&pdir, name)?.ok_or(FsError::NotFound)?;
    let cluster = fs.cluster_size() as u64;
    let (kind, size, mode) = if e.is_dir() {
        (FileKind::Dir, 0, 0o040_000 | dir_mode)
    } else {
        (FileKind::File, e.len(), 0o100_000 | if read_only { 0o444 } else { 0o644 })
    };
    Ok(Stat {
        kind,
        size,
        mode,
        allocated: if kind == FileKind::Dir { cluster } else { size.div_ceil(cluster) * cluster },
        mtime: fat_to_unix(&e.modified()),
        atime: fat_date_to_unix(&e.accessed()),
        ctime: fat_to_unix(&e.created()),
    })
}

/// A (non-root) directory's first cluster, from its `.` entry.
fn dir_first_cluster(dir: &FatDir<'_>) -> Result<u32, FsError> {
    let mut f = dir.as_file().ok_or(FsError::Corrupt)?.clone();
    f.seek(SeekFrom::Start(0))?;
    let mut e = [0u8; 32];
    f.read_exact(&mut e)?;
    if &e[0..11] != b".          " {
        return Err(FsError::Corrupt);
    }
    let c = (u16::from_le_bytes([e[20], e[21]]) as u32) << 16 | u16::from_le_bytes([e[26], e[27]]) as u32;
    if c < 2 { Err(FsError::Corrupt) } else { Ok(c) }
}

fn read_all(file: &mut FatFile<'_>) -> Result<Vec<u8>, FsError> {
    let mut out = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Cuts a file back to `size` after a failed extension (best effort: the
/// error that made it necessary is what the caller reports).
fn shrink_back(file: &mut FatFile<'_>, size: u64) {
    if file.size().unwrap_or(0) as u64 > size && file.seek(SeekFrom::Start(size)).is_ok() {
        let _ = file.truncate();
    }
}

/// Writes zeros from the end of `file` up to `to` (FAT has no holes).
fn extend_with_zeros(file: &mut FatFile<'_>, size: u64, to: u64) -> Result<(), FsError> {
    if to <= size {
        return Ok(());
    }
    file.seek(SeekFrom::Start(size))?;
    let zeros = vec![0u8; 16 * 1024];
    let mut left = to - size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        let w = file.write(&zeros[..n])?;
        if w == 0 {
            return Err(FsError::NoSpace);
        }
        left -= w as u64;
    }
    Ok(())
}

impl Datastore {
    /// Mounts the FAT volume on `cache`'s device: checks the boot sector
    /// and the FAT, repairs or falls back to read-only, opens the journal
    /// and replays a pending replace.
    pub fn mount(
        cache: Arc<BlockCache>,
        clock: Arc<dyn WallClock>,
        opts: MountOptions,
    ) -> Result<Datastore, MountError> {
        let mut log = Vec::new();
        let ss = cache.device().sector_size().max(512) as usize;
        let mut bs = vec![0u8; ss];
        cache.read(0, &mut bs).map_err(MountError::Io)?;
        let geometry = check::parse_boot_sector(&bs, cache.size()).map_err(MountError::BadBootSector)?;
        let mut read_only = opts.read_only || cache.read_only();
        let unclean = bs.get(geometry.dirty_flag_offset() as usize).is_some_and(|b| b & 1 != 0);
        let mut report = check::check_fat(&cache, &geometry).map_err(MountError::Io)?;
        if let Some(why) = &report.skipped {
            log.push(format!("FAT check skipped: {why}"));
        }
        let mut patches: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        if !report.repairs.is_empty() {
            for r in report.repairs.iter().take(8) {
                log.push(format!("FAT inconsistent: cluster {} {} (next {:#x})", r.cluster, r.why, r.was));
            }
            if report.repairs.len() > 8 {
                log.push(format!("FAT inconsistent: {} more bad links", report.repairs.len() - 8));
            }
            let mut writes = Vec::new();
            for r in &report.repairs {
                let mut rd = |off: u64, b: &mut [u8]| cache.read(off, b);
                writes.extend(check::end_chain_writes(&geometry, r.cluster, &mut rd).map_err(MountError::Io)?);
            }
            if opts.repair && !read_only {
                for (off, b) in &writes {
                    cache.write(*off, b).map_err(MountError::Io)?;
                }
                cache.flush().map_err(MountError::Io)?;
                log.push(format!(
                    "repaired: {} chain(s) cut at the bad link (end of chain written to every FAT)",
                    report.repairs.len()
                ));
            } else {
                read_only = true;
                // Cut the chains in memory only, per sector.
                let sec = geometry.bytes_per_sector as u64;
                for (off, b) in writes {
                    for (i, byte) in b.iter().enumerate() {
                        let at = off + i as u64;
                        let base = at / sec * sec;
                        let entry = match patches.entry(base) {
                            alloc::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                            alloc::collections::btree_map::Entry::Vacant(v) => {
                                let mut s = vec![0u8; sec as usize];
                                cache.read(base, &mut s).map_err(MountError::Io)?;
                                v.insert(s)
                            }
                        };
                        entry[(at - base) as usize] = *byte;
                    }
                }
                log.push(String::from(
                    "mounted read-only: the FAT is inconsistent and repair is off (bad chains cut in memory only)",
                ));
            }
        }
        // After an unclean shutdown (or a damaged FAT), make the FAT copies
        // and every directory entry agree before fatfs sees the volume.
        let mut mended = !unclean && report.repairs.is_empty();
        if unclean || !report.repairs.is_empty() {
            if unclean {
                log.push(String::from("volume was not cleanly unmounted"));
            }
            if read_only || !opts.repair {
                log.push(String::from("not checked further: read-only or repair off"));
            } else if report.skipped.is_none() {
                if check::sync_fat_copies(&cache, &geometry).map_err(MountError::Io)? {
                    log.push(String::from("FAT copies differed; the first FAT was copied over the others"));
                }
                let fixes = check::scan_and_mend(&cache, &geometry, &mut report.next).map_err(MountError::Io)?;
                for f in fixes.iter().take(16) {
                    log.push(format!("mended: {f}"));
                }
                if fixes.len() > 16 {
                    log.push(format!("mended {} more entries", fixes.len() - 16));
                }
                cache.flush().map_err(MountError::Io)?;
                mended = true;
            }
        }
        drop(report);
        let io = CacheIo {
            cache: cache.clone(),
            pos: 0,
            read_only,
            patches: Arc::new(patches),
            sector: geometry.bytes_per_sector as u64,
        };
        let options = fatfs::FsOptions::new().time_provider(FatTime(clock.clone())).update_accessed_date(false);
        let fs = Fs::new(io, options).map_err(|e| MountError::Fs(format!("{e}")))?;
        // The volume's dirty flag reaches the medium before anything else
        // changes: fatfs sets it only with its first write, in the same
        // flush as that write, so a device that reorders writes between
        // flushes (or the datastore's own writes, which bypass fatfs) could
        // leave changes on a volume still marked clean, and the next mount
        // would not mend it. Clean unmount clears it (`clear_dirty_on_unmount`).
        if !read_only && !unclean {
            let at = geometry.dirty_flag_offset();
            let mut b = [0u8];
            cache.read(at, &mut b).map_err(MountError::Io)?;
            cache.write(at, &[b[0] | 1]).map_err(MountError::Io)?;
            cache.flush().map_err(MountError::Io)?;
        }
        let label = String::from(fs.volume_label().trim_end());
        let vol = Volume::new(fs, |_| OpenFiles { nodes: BTreeMap::new(), handles: BTreeMap::new() });
        let mut ds = Datastore {
            vol,
            cache,
            clock,
            read_only,
            geometry,
            label,
            journal: None,
            journal_seq: 0,
            next_handle: 1,
            log,
            clear_dirty_on_unmount: mended,
        };
        if let Err(e) = ds.open_journal(opts.journal_bytes) {
            ds.log.push(format!("journal unavailable ({e}): renames over existing files are not atomic"));
        }
        if !ds.read_only {
            match ds.clear_orphans() {
                Ok(0) => {}
                Ok(n) => ds.log.push(format!("removed {n} file(s) unlinked while open before the last shutdown")),
                Err(e) => ds.log.push(format!("could not clear {ORPHANS}: {e}")),
            }
        }
        Ok(ds)
    }

    /// What mounting found and did (for the kernel log).
    pub fn messages(&self) -> &[String] {
        &self.log
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn volume_id(&self) -> u32 {
        self.geometry.volume_id
    }
    /// The volume's UUID as Linux prints a FAT volume id (`1A2B-3C4D`),
    /// for `/vmfs/volumes/<uuid>`.
    pub fn uuid(&self) -> String {
        let v = self.geometry.volume_id;
        format!("{:04X}-{:04X}", v >> 16, v & 0xFFFF)
    }
    pub fn fat_kind(&self) -> check::FatKind {
        self.geometry.kind
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }
    /// Largest file an atomic replace handles.
    pub fn atomic_replace_limit(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| j.max_data("", ""))
    }

    fn open_journal(&mut self, want: u32) -> Result<(), FsError> {
        let volume_bytes = self.geometry.total_sectors * self.geometry.bytes_per_sector as u64;
        let cap = (want as u64).min(volume_bytes / 64) as usize;
        let fs = self.vol.borrow_owner();
        let root = fs.root_dir();
        let existing = lookup(&root, JOURNAL_NAME)?;
        let (extents, total, size) = {
            let mut file = match existing {
                Some(e) if e.is_file() && e.len() >= journal::HEADER as u64 + 512 => e.to_file(),
                Some(_) => return Err(FsError::Corrupt),
                None => {
                    if self.read_only || cap < 4096 {
                        return if cap < 4096 { Err(FsError::NoSpace) } else { Ok(()) };
                    }
                    let mut f = root.create_file(JOURNAL_NAME)?;
                    extend_with_zeros(&mut f, 0, cap as u64)?;
                    f.flush()?;
                    f
                }
            };
            let mut extents = Vec::new();
            let mut total = 0u64;
            for x in file.extents() {
                let x = x?;
                extents.push((x.offset, x.size as u64));
                total += x.size as u64;
            }
            let size = file.size().unwrap_or(0) as u64;
            (extents, total, size)
        };
        drop(root);
        self.cache.flush()?;
        let area = JournalArea { extents, capacity: size.min(total) as usize };
        if let Some(intent) = area.read(&self.cache)? {
            self.journal_seq = intent.seq;
            if self.read_only {
                self.log.push(format!(
                    "an interrupted replace of {} is pending but the volume is read-only: not replayed",
                    intent.to
                ));
            } else {
                self.apply_intent(&intent)?;
                area.write(&self.cache, &journal::idle(intent.seq))?;
                self.cache.flush()?;
                self.log.push(format!("recovered an interrupted replace of {} (from {})", intent.to, intent.from));
            }
        }
        self.journal = Some(area);
        Ok(())
    }

    fn check_writable(&self) -> Result<(), FsError> {
        if self.read_only { Err(FsError::ReadOnly) } else { Ok(()) }
    }

    fn is_internal(path: &str) -> bool {
        let key = key_of(path);
        key == JOURNAL_NAME || key == ORPHANS || key.starts_with(ORPHANS_PREFIX)
    }

    fn is_open_exact(&self, key: &str) -> bool {
        self.vol.borrow_dependent().nodes.contains_key(key)
    }

    /// Flushes and closes the fatfs file behind an open node, keeping its
    /// handles: before its directory entry moves (fatfs files remember
    /// where their entry is). Its reference count and orphan flag.
    fn park(&mut self, key: &str) -> Result<Option<(u32, bool)>, FsError> {
        self.vol.with_dependent_mut(|_, files| match files.nodes.remove(key) {
            Some(mut n) => {
                n.file.flush()?;
                Ok(Some((n.refs, n.orphan)))
            }
            None => Ok(None),
        })
    }

    /// Reopens parked nodes (`old_keys`) as one node at `path` and points
    /// their handles there.
    fn unpark(&mut self, old_keys: &[&str], path: &str, refs: u32, orphan: bool) -> Result<(), FsError> {
        let key = key_of(path);
        self.vol.with_dependent_mut(|fs, files| {
            for h in files.handles.values_mut() {
                if old_keys.contains(&h.key.as_str()) {
                    h.key = key.clone();
                    h.path = String::from(path);
                }
            }
            let (parent, name) = split_parent(path);
            let e = lookup(&open_dir(fs, parent)?, name)?.ok_or(FsError::NotFound)?;
            files.nodes.insert(key.clone(), Node::new(e.to_file(), refs, orphan));
            Ok(())
        })
    }

    /// Moves the file at `path` into [`ORPHANS`] (made on first use); its
    /// path there.
    fn orphan_entry(&mut self, path: &str) -> Result<String, FsError> {
        let name = format!("o{}", self.next_handle);
        self.next_handle += 1;
        let fs = self.vol.borrow_owner();
        let root = fs.root_dir();
        let odir = match lookup(&root, ORPHANS)? {
            Some(e) if e.is_dir() => e.to_dir(),
            Some(_) => return Err(FsError::Corrupt),
            None => root.create_dir(ORPHANS)?,
        };
        let (parent, fname) = split_parent(path);
        open_dir(fs, parent)?.rename(fname, &odir, &name)?;
        Ok(format!("{ORPHANS}/{name}"))
    }

    /// Removes every file in [`ORPHANS`] that no handle holds; how many.
    fn clear_orphans(&mut self) -> Result<usize, FsError> {
        let held: Vec<String> = self.vol.borrow_dependent().nodes.keys().filter(|k| k.starts_with(ORPHANS_PREFIX)).cloned().collect();
        let fs = self.vol.borrow_owner();
        let Some(e) = lookup(&fs.root_dir(), ORPHANS)? else { return Ok(0) };
        if !e.is_dir() {
            return Ok(0);
        }
        let dir = e.to_dir();
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e?;
            let n = e.file_name();
            if n != "." && n != ".." && e.is_file() && !held.contains(&format!("{ORPHANS_PREFIX}{}", n.to_lowercase())) {
                names.push(n);
            }
        }
        for n in &names {
            dir.remove(n)?;
        }
        Ok(names.len())
    }

    fn is_open(&self, path: &str) -> bool {
        let key = key_of(path);
        let prefix = format!("{key}/");
        self.vol.borrow_dependent().nodes.keys().any(|k| *k == key || k.starts_with(&prefix))
    }

    /// `stat` of a path ("" or "/" is the root).
    pub fn stat(&self, path: &str) -> Result<Stat, FsError> {
        let path = norm(path)?;
        if Self::is_internal(&path) {
            return Err(FsError::NotFound);
        }
        let mut st = stat_entry(self.vol.borrow_owner(), &path, self.read_only)?;
        // An open file's size may not be in its directory entry yet.
        if let Some(n) = self.vol.borrow_dependent().nodes.get(&key_of(&path)) {
            st.size = n.file.size().unwrap_or(0) as u64;
        }
        Ok(st)
    }

    /// The entries of a directory, without `.` and `..`.
    pub fn readdir(&self, path: &str) -> Result<Vec<DirEntry>, FsError> {
        let path = norm(path)?;
        let dir = open_dir(self.vol.borrow_owner(), &path)?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name();
            if name == "." || name == ".." || (path.is_empty() && (name == JOURNAL_NAME || name.eq_ignore_ascii_case(ORPHANS))) {
                continue;
            }
            let kind = if e.is_dir() { FileKind::Dir } else { FileKind::File };
            out.push(DirEntry { size: if kind == FileKind::Dir { 0 } else { e.len() }, name, kind });
        }
        Ok(out)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let path = norm(path)?;
        if path.is_empty() || Self::is_internal(&path) {
            return Err(FsError::Exists);
        }
        let fs = self.vol.borrow_owner();
        let (parent, name) = split_parent(&path);
        let pdir = open_dir(fs, parent)?;
        if lookup(&pdir, name)?.is_some() {
            return Err(FsError::Exists);
        }
        creatable(name)?;
        pdir.create_dir(name)?;
        Ok(())
    }

    pub fn rmdir(&mut self, path: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let path = norm(path)?;
        if path.is_empty() {
            return Err(FsError::Busy);
        }
        let fs = self.vol.borrow_owner();
        let (parent, name) = split_parent(&path);
        let pdir = open_dir(fs, parent)?;
        match lookup(&pdir, name)? {
            None => Err(FsError::NotFound),
            Some(e) if !e.is_dir() => Err(FsError::NotDir),
            Some(_) => Ok(pdir.remove(name)?),
        }
    }

    pub fn unlink(&mut self, path: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let path = norm(path)?;
        if path.is_empty() {
            return Err(FsError::IsDir);
        }
        if Self::is_internal(&path) {
            return Err(FsError::Denied);
        }
        let key = key_of(&path);
        let kind = stat_entry(self.vol.borrow_owner(), &path, false)?.kind;
        if kind == FileKind::Dir {
            return Err(FsError::IsDir);
        }
        if self.is_open_exact(&key) {
            // Open: the name goes now, the file at its last close.
            let Some((refs, _)) = self.park(&key)? else { return Err(FsError::BadHandle) };
            return match self.orphan_entry(&path) {
                Ok(at) => self.unpark(&[&key], &at, refs, true),
                Err(e) => {
                    let _ = self.unpark(&[&key], &path, refs, false);
                    Err(e)
                }
            };
        }
        let fs = self.vol.borrow_owner();
        let (parent, name) = split_parent(&path);
        let pdir = open_dir(fs, parent)?;
        match lookup(&pdir, name)? {
            None => Err(FsError::NotFound),
            Some(e) if e.is_dir() => Err(FsError::IsDir),
            Some(_) => Ok(pdir.remove(name)?),
        }
    }

    /// Renames `from` to `to`, replacing a file at `to` (or an empty
    /// directory when `from` is one). A file no larger than
    /// [`Datastore::atomic_replace_limit`] is replaced atomically (see the
    /// module docs).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let from = norm(from)?;
        let to = norm(to)?;
        if from.is_empty() || to.is_empty() {
            return Err(FsError::Busy);
        }
        if Self::is_internal(&from) || Self::is_internal(&to) {
            return Err(FsError::Denied);
        }
        let src = stat_entry(self.vol.borrow_owner(), &from, false)?;
        if key_of(&from) == key_of(&to) {
            if from == to {
                return Ok(());
            }
            // A change of case only: FAT's rename handles it in place.
            creatable(split_parent(&to).1)?;
            let fs = self.vol.borrow_owner();
            let (parent, name) = split_parent(&from);
            let (_, new_name) = split_parent(&to);
            let pdir = open_dir(fs, parent)?;
            pdir.rename(name, &pdir, new_name)?;
            return Ok(());
        }
        if src.kind == FileKind::Dir && key_of(&to).starts_with(&format!("{}/", key_of(&from))) {
            return Err(FsError::Invalid);
        }
        let (from_key, to_key) = (key_of(&from), key_of(&to));
        if src.kind == FileKind::Dir {
            // Files inside keep their entries (the directory's clusters do
            // not move): only their names change.
            if self.is_open(&to) {
                return Err(FsError::Busy);
            }
            self.rename_moved(&from, &to, &src)?;
            let (old_prefix, new_prefix) = (format!("{from_key}/"), format!("{to_key}/"));
            let to_path = to.clone();
            self.vol.with_dependent_mut(|_, files| {
                let moved: Vec<String> = files.nodes.keys().filter(|k| k.starts_with(&old_prefix)).cloned().collect();
                for k in moved {
                    if let Some(n) = files.nodes.remove(&k) {
                        files.nodes.insert(format!("{new_prefix}{}", &k[old_prefix.len()..]), n);
                    }
                }
                for h in files.handles.values_mut() {
                    if h.key == from_key || h.key.starts_with(&old_prefix) {
                        h.key = format!("{to_key}{}", &h.key[from_key.len()..]);
                        h.path = format!("{to_path}{}", &h.path[h.path.len().min(from.len())..]);
                    }
                }
            });
            return Ok(());
        }
        // A file: open nodes are parked while entries move, then reopened.
        let from_parked = self.park(&from_key)?;
        let to_parked = if self.is_open_exact(&to_key) { self.park(&to_key)? } else { None };
        let result = self.rename_moved(&from, &to, &src).and_then(|atomic| {
            let mut refs = from_parked.map_or(0, |p| p.0);
            if let Some((to_refs, _)) = to_parked {
                if atomic {
                    // Rewritten in place: its handles stay on `to`.
                    refs += to_refs;
                } else {
                    // Replaced: its handles keep the old file, now an orphan.
                    let at = self.orphan_entry_of_replaced(&to)?;
                    self.unpark(&[&to_key], &at, to_refs, true)?;
                }
            }
            if refs > 0 {
                self.unpark(&[&from_key, &to_key], &to, refs, false)?;
            }
            Ok(())
        });
        if result.is_err() {
            // Best effort: reopen whatever is still where it was.
            if let Some((r, o)) = from_parked {
                let _ = self.unpark(&[&from_key], &from, r, o);
            }
            if let Some((r, o)) = to_parked
                && !self.is_open_exact(&to_key)
            {
                let _ = self.unpark(&[&to_key], &to, r, o);
            }
        }
        result
    }

    /// A replaced destination that was open was kept aside by
    /// `rename_moved` as [`REPLACED`]; give it an orphan's name.
    fn orphan_entry_of_replaced(&mut self, to: &str) -> Result<String, FsError> {
        let (tp, _) = split_parent(to);
        let kept = if tp.is_empty() { String::from(REPLACED) } else { format!("{tp}/{REPLACED}") };
        self.orphan_entry(&kept)
    }

    /// The move itself, for paths already checked; `true` if it went
    /// through the atomic replace. A destination file that is still held
    /// open (parked) is renamed to [`REPLACED`] beside it instead of
    /// removed.
    fn rename_moved(&mut self, from: &str, to: &str, src: &Stat) -> Result<bool, FsError> {
        let (from, to) = (String::from(from), String::from(to));
        let to_held = self.vol.borrow_dependent().handles.values().any(|h| h.key == key_of(&to));
        let dst = match stat_entry(self.vol.borrow_owner(), &to, false) {
            Ok(s) => Some(s),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        // The destination's parent must exist (and be a directory).
        open_dir(self.vol.borrow_owner(), split_parent(&to).0)?;
        creatable(split_parent(&to).1)?;
        match (&src.kind, dst.as_ref().map(|d| d.kind)) {
            (FileKind::File, Some(FileKind::Dir)) => return Err(FsError::IsDir),
            (FileKind::Dir, Some(FileKind::File)) => return Err(FsError::NotDir),
            _ => {}
        }
        if src.kind == FileKind::File
            && let Some(j) = &self.journal
            && src.size <= j.max_data(&from, &to) as u64
        {
            return self.atomic_replace(&from, &to, dst.map(|d| d.size)).map(|()| true);
        }
        // Not atomic: FAT's delete + rename (directories, large files).
        let fs = self.vol.borrow_owner();
        if dst.is_some() {
            let (tp, tn) = split_parent(&to);
            let tdir = open_dir(fs, tp)?;
            if to_held {
                if lookup(&tdir, REPLACED)?.is_some() {
                    tdir.remove(REPLACED)?;
                }
                tdir.rename(tn, &tdir, REPLACED)?;
            } else {
                tdir.remove(tn)?;
            }
        }
        let (fp, fname) = split_parent(&from);
        let (tp, tn) = split_parent(&to);
        let fdir = open_dir(fs, fp)?;
        let tdir = open_dir(fs, tp)?;
        fdir.rename(fname, &tdir, tn)?;
        if src.kind == FileKind::Dir && key_of(fp) != key_of(tp) {
            // fatfs moves the entry but leaves the directory's `..` naming
            // its old parent; point it at the new one (0 is the root).
            let moved = dir_first_cluster(&open_dir(fs, &to)?)?;
            let parent = if tp.is_empty() { 0 } else { dir_first_cluster(&tdir)? };
            let at = self.geometry.cluster_offset(moved) + 32;
            self.cache.write(at + 20, &((parent >> 16) as u16).to_le_bytes())?;
            self.cache.write(at + 26, &(parent as u16).to_le_bytes())?;
        }
        Ok(false)
    }

    fn atomic_replace(&mut self, from: &str, to: &str, to_size: Option<u64>) -> Result<(), FsError> {
        let (data, mtime) = {
            let fs = self.vol.borrow_owner();
            let (fp, fname) = split_parent(from);
            let e = lookup(&open_dir(fs, fp)?, fname)?.ok_or(FsError::NotFound)?;
            let m = e.modified();
            let mut f = e.to_file();
            (read_all(&mut f)?, fat_to_unix(&m))
        };
        // Refuse now, with nothing touched, if the new contents cannot fit
        // where the old ones are freed (plus a cluster for a directory
        // that must grow to hold a new name). Once the intent is recorded
        // a failure (an I/O error) leaves it pending, and the next mount
        // completes the replace as after a crash.
        let fs_stats = self.statfs()?;
        let cb = fs_stats.block_size.max(1) as u64;
        let need = (data.len() as u64).div_ceil(cb) + if to_size.is_none() { 1 } else { 0 };
        let have = fs_stats.free_blocks + to_size.map_or(0, |s| s.div_ceil(cb));
        if need > have {
            return Err(FsError::NoSpace);
        }
        self.cache.flush()?;
        self.journal_seq += 1;
        let intent =
            Intent { seq: self.journal_seq, from: from.to_string(), to: to.to_string(), mtime: mtime as u32, data };
        let Some(area) = self.journal.clone() else { return Err(FsError::Io(BlockError::Io)) };
        area.write(&self.cache, &journal::encode(&intent))?;
        self.cache.flush()?;
        self.apply_intent(&intent)?;
        area.write(&self.cache, &journal::idle(intent.seq))?;
        self.cache.flush()?;
        Ok(())
    }

    /// Steps 3 of the replace: idempotent, so recovery can run it again
    /// after a crash at any point inside it.
    fn apply_intent(&self, i: &Intent) -> Result<(), FsError> {
        let fs = self.vol.borrow_owner();
        let (tp, tn) = split_parent(&i.to);
        let tdir = open_dir(fs, tp)?;
        let mut f = match lookup(&tdir, tn)? {
            Some(e) if e.is_dir() => return Err(FsError::IsDir),
            Some(e) => e.to_file(),
            None => {
                creatable(tn)?;
                tdir.create_file(tn)?
            }
        };
        f.seek(SeekFrom::Start(0))?;
        f.truncate()?;
        f.write_all(&i.data)?;
        // Deprecated upstream only because a later write stamps "now",
        // which is what POSIX wants anyway.
        #[allow(deprecated)]
        f.set_modified(unix_to_fat(i.mtime as u64));
        f.flush()?;
        drop(f);
        self.cache.flush()?;
        let (fp, fname) = split_parent(&i.from);
        match open_dir(fs, fp).and_then(|d| Ok((lookup(&d, fname)?, d))) {
            Ok((Some(e), d)) if e.is_file() => d.remove(fname)?,
            Ok(_) | Err(FsError::NotFound) => {}
            Err(e) => return Err(e),
        }
        self.cache.flush()?;
        Ok(())
    }

    /// Opens (and maybe creates or truncates) a file, or a directory for
    /// reading its entries.
    pub fn open(&mut self, path: &str, flags: OpenFlags) -> Result<Handle, FsError> {
        let path = norm(path)?;
        let wants_write = flags.write || flags.create || flags.truncate || flags.append;
        if wants_write {
            self.check_writable()?;
        }
        if Self::is_internal(&path) {
            return Err(FsError::Denied);
        }
        let existing = match stat_entry(self.vol.borrow_owner(), &path, false) {
            Ok(s) => Some(s.kind),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let id = self.next_handle;
        let key = key_of(&path);
        let info = HandleInfo {
            key: key.clone(),
            path: path.clone(),
            read: flags.read,
            write: flags.write || flags.append,
            append: flags.append,
            dir: existing == Some(FileKind::Dir),
        };
        match existing {
            Some(_) if flags.create && flags.exclusive => return Err(FsError::Exists),
            Some(FileKind::Dir) => {
                if wants_write {
                    return Err(FsError::IsDir);
                }
                self.vol.with_dependent_mut(|_, files| {
                    files.handles.insert(id, info);
                });
                self.next_handle += 1;
                return Ok(Handle(id));
            }
            None if !flags.create => return Err(FsError::NotFound),
            _ => {}
        }
        let truncate = flags.truncate && (flags.write || flags.append);
        self.vol.with_dependent_mut(|fs, files| -> Result<(), FsError> {
            if !files.nodes.contains_key(&key) {
                let (parent, name) = split_parent(&path);
                let pdir = open_dir(fs, parent)?;
                let file = match lookup(&pdir, name)? {
                    Some(e) => e.to_file(),
                    None => {
                        creatable(name)?;
                        pdir.create_file(name)?
                    }
                };
                files.nodes.insert(key.clone(), Node::new(file, 0, false));
            }
            let Some(node) = files.nodes.get_mut(&key) else { return Err(FsError::BadHandle) };
            if truncate {
                node.map = None;
                node.file.seek(SeekFrom::Start(0))?;
                node.file.truncate()?;
            }
            node.refs += 1;
            files.handles.insert(id, info);
            Ok(())
        })?;
        self.next_handle += 1;
        Ok(Handle(id))
    }

    /// Closes a handle; the file's directory entry is written when its
    /// last handle closes.
    pub fn close(&mut self, h: Handle) -> Result<(), FsError> {
        self.vol.with_dependent_mut(|fs, files| {
            let info = files.handles.remove(&h.0).ok_or(FsError::BadHandle)?;
            if info.dir {
                return Ok(());
            }
            let last = match files.nodes.get_mut(&info.key) {
                Some(n) => {
                    n.refs -= 1;
                    n.refs == 0
                }
                None => false,
            };
            if last && let Some(mut n) = files.nodes.remove(&info.key) {
                n.file.flush()?;
                drop(n.file);
                if n.orphan
                    && let Some(name) = info.key.strip_prefix(ORPHANS_PREFIX)
                {
                    open_dir(fs, ORPHANS)?.remove(name)?;
                }
            }
            Ok(())
        })
    }

    /// The path a handle was opened with.
    pub fn handle_path(&self, h: Handle) -> Option<&str> {
        self.vol.borrow_dependent().handles.get(&h.0).map(|i| i.path.as_str())
    }

    fn with_node<R>(
        &mut self,
        h: Handle,
        f: impl FnOnce(&mut Node<'_>, &HandleInfo) -> Result<R, FsError>,
    ) -> Result<R, FsError> {
        self.vol.with_dependent_mut(|_, files| {
            let info = files.handles.get(&h.0).ok_or(FsError::BadHandle)?;
            if info.dir {
                return Err(FsError::IsDir);
            }
            let node = files.nodes.get_mut(&info.key).ok_or(FsError::BadHandle)?;
            f(node, info)
        })
    }

    pub fn size(&mut self, h: Handle) -> Result<u64, FsError> {
        self.with_node(h, |n, _| Ok(n.file.size().unwrap_or(0) as u64))
    }

    /// Reads at `offset`; returns the bytes read (0 at or past the end).
    pub fn read_at(&mut self, h: Handle, offset: u64, buf: &mut [u8]) -> Result<usize, FsError> {
        let cache = self.cache.clone();
        let patched = self.read_only;
        self.with_node(h, |node, info| {
            if !info.read {
                return Err(FsError::BadHandle);
            }
            let f = &mut node.file;
            let size = f.size().unwrap_or(0) as u64;
            if offset >= size || buf.is_empty() {
                return Ok(0);
            }
            let want = (size - offset).min(buf.len() as u64) as usize;
            // Straight from the cache through the run map (not on a
            // read-only mount, whose repairs live in fatfs's view only).
            if !patched {
                if node.map.is_none() {
                    node.map = Some(build_map(f)?);
                    node.read_ahead_end = 0;
                }
                let runs = node.map.as_deref().unwrap_or(&[]);
                let end = offset + want as u64;
                // A large read goes straight from the device into `buf`,
                // one request per run of contiguous clusters (dirty cached
                // data laid over it): no copy through the cache.
                if want >= cache.direct_read_min() {
                    let covered: u64 = disk_ranges(runs, offset, end).map(|(_, len)| len).sum();
                    if covered == want as u64 {
                        let mut done = 0usize;
                        for (at, len) in disk_ranges(runs, offset, end) {
                            cache.read_direct(at, &mut buf[done..done + len as usize])?;
                            done += len as usize;
                        }
                        node.read_next = end;
                        node.read_ahead_end = end;
                        return Ok(done);
                    }
                }
                // A reader going on where it stopped gets read-ahead: the
                // rest of this read and a window beyond it are loaded in
                // large requests before the copy.
                if offset == node.read_next {
                    if node.read_ahead_end < end + READ_AHEAD_BYTES / 2 {
                        let to = (end + READ_AHEAD_BYTES).min(size);
                        for (at, len) in disk_ranges(runs, offset.max(node.read_ahead_end), to) {
                            cache.prefetch(at, len)?;
                        }
                        node.read_ahead_end = to;
                    }
                } else {
                    node.read_ahead_end = 0;
                }
                node.read_next = end;
                let mut done = 0usize;
                while done < want {
                    let pos = offset + done as u64;
                    let i = runs.partition_point(|r| r.file_off + r.len <= pos);
                    let Some(r) = runs.get(i).filter(|r| r.file_off <= pos) else { break };
                    let n = ((r.file_off + r.len - pos) as usize).min(want - done);
                    cache.read(r.disk_off + (pos - r.file_off), &mut buf[done..done + n])?;
                    done += n;
                }
                if done == want {
                    return Ok(done);
                }
            }
            let mut done = 0;
            while done < want {
                let n = f.read(&mut buf[done..want])?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            Ok(done)
        })
    }

    /// Writes at `offset` (at the end for an append handle), filling any
    /// gap with zeros. A short count means the volume filled up or the
    /// 4 GiB limit was reached; nothing written is an error (ENOSPC,
    /// EFBIG).
    pub fn write_at(&mut self, h: Handle, offset: u64, buf: &[u8]) -> Result<usize, FsError> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        let cache = self.cache.clone();
        let now = unix_to_fat(self.clock.unix_time());
        self.with_node(h, |node, info| {
            if !info.write {
                return Err(FsError::BadHandle);
            }
            let size = node.file.size().unwrap_or(0) as u64;
            let pos = if info.append { size } else { offset };
            if buf.is_empty() {
                return Ok(0);
            }
            // Overwriting bytes the file already has changes no cluster
            // chain: straight into the cache through the run map (fatfs
            // would walk the chain from the start on every seek), and
            // the entry's modification time.
            if let Some(end) = pos.checked_add(buf.len() as u64)
                && end <= size
            {
                if node.map.is_none() {
                    node.map = Some(build_map(&mut node.file)?);
                }
                let runs = node.map.as_deref().unwrap_or(&[]);
                let covered: u64 = disk_ranges(runs, pos, end).map(|(_, len)| len).sum();
                if covered == buf.len() as u64 {
                    let mut done = 0usize;
                    for (at, len) in disk_ranges(runs, pos, end) {
                        cache.write(at, &buf[done..done + len as usize])?;
                        done += len as usize;
                    }
                    // Deprecated upstream only because a later write
                    // stamps "now" anyway; this is that stamp.
                    #[allow(deprecated)]
                    node.file.set_modified(now);
                    return Ok(done);
                }
            }
            node.map = None;
            let f = &mut node.file;
            if pos >= MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            let len = (MAX_FILE_SIZE - pos).min(buf.len() as u64) as usize;
            // A write that stores nothing leaves the file as it was: the
            // gap filled with zeros is taken back.
            let written = extend_with_zeros(f, size, pos).and_then(|()| {
                f.seek(SeekFrom::Start(pos))?;
                let mut done = 0;
                while done < len {
                    match f.write(&buf[done..len]) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(fatfs::Error::NotEnoughSpace) if done > 0 => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                if done == 0 { Err(FsError::NoSpace) } else { Ok(done) }
            });
            if written.is_err() {
                shrink_back(f, size);
            }
            written
        })
    }

    /// Sets an open file's length (ftruncate): shorter frees clusters,
    /// longer fills with zeros.
    pub fn truncate(&mut self, h: Handle, len: u64) -> Result<(), FsError> {
        self.check_writable()?;
        if len > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        self.with_node(h, |node, info| {
            if !info.write {
                return Err(FsError::BadHandle);
            }
            node.map = None;
            let f = &mut node.file;
            let size = f.size().unwrap_or(0) as u64;
            if len < size {
                f.seek(SeekFrom::Start(len))?;
                f.truncate()?;
                Ok(())
            } else {
                let r = extend_with_zeros(f, size, len);
                if r.is_err() {
                    shrink_back(f, size);
                }
                r
            }
        })
    }

    /// Sets a file's times (utimensat); `None` leaves one as it is. FAT
    /// keeps only the date of the last access. Directories are left alone
    /// (see the module docs).
    pub fn set_times(&mut self, path: &str, atime: Option<u64>, mtime: Option<u64>) -> Result<(), FsError> {
        self.check_writable()?;
        let path = norm(path)?;
        if Self::is_internal(&path) {
            return Err(FsError::NotFound);
        }
        let key = key_of(&path);
        let st = self.stat(&path)?;
        if st.kind == FileKind::Dir {
            return Ok(());
        }
        self.vol.with_dependent_mut(|fs, files| -> Result<(), FsError> {
            // Deprecated upstream only because a later write stamps "now",
            // which is what POSIX wants anyway.
            #[allow(deprecated)]
            let apply = |f: &mut FatFile<'_>| {
                if let Some(a) = atime {
                    f.set_accessed(unix_to_fat(a).date);
                }
                if let Some(m) = mtime {
                    f.set_modified(unix_to_fat(m));
                }
            };
            if let Some(n) = files.nodes.get_mut(&key) {
                apply(&mut n.file);
                n.file.flush()?;
            } else {
                let (parent, name) = split_parent(&path);
                let mut f = lookup(&open_dir(fs, parent)?, name)?.ok_or(FsError::NotFound)?.to_file();
                apply(&mut f);
                f.flush()?;
            }
            Ok(())
        })
    }

    /// fsync/fdatasync of one file: its entry, then everything dirty.
    pub fn fsync(&mut self, h: Handle) -> Result<(), FsError> {
        let is_dir = self.vol.borrow_dependent().handles.get(&h.0).ok_or(FsError::BadHandle)?.dir;
        if !is_dir && !self.read_only {
            self.with_node(h, |n, _| Ok(n.file.flush()?))?;
        }
        if !self.read_only {
            self.cache.flush()?;
        }
        Ok(())
    }

    /// sync: every open file's entry, the free-cluster summary, and all
    /// dirty blocks reach the disk.
    pub fn sync(&mut self) -> Result<(), FsError> {
        if self.read_only {
            return Ok(());
        }
        self.vol.with_dependent_mut(|_, files| -> Result<(), FsError> {
            for n in files.nodes.values_mut() {
                n.file.flush()?;
            }
            Ok(())
        })?;
        self.write_fsinfo()?;
        self.cache.flush()?;
        Ok(())
    }

    /// FAT32's FSInfo free count and next-free hint, as the FAT says now
    /// (fatfs writes it only at unmount; after a crash fsck would
    /// otherwise find it stale).
    fn write_fsinfo(&mut self) -> Result<(), FsError> {
        let g = &self.geometry;
        if g.kind != check::FatKind::Fat32 || g.fsinfo_sector == 0 {
            return Ok(());
        }
        let stats = self.vol.borrow_owner().stats()?;
        let off = g.fsinfo_sector as u64 * g.bytes_per_sector as u64;
        let mut sig = [0u8; 4];
        self.cache.read(off, &mut sig)?;
        if &sig != b"RRaA" {
            return Ok(());
        }
        self.cache.write(off + 488, &stats.free_clusters().to_le_bytes())?;
        Ok(())
    }

    /// The kernel's periodic writeback, with the monotonic time: open
    /// files' changed directory entries (sizes, times) go into the cache,
    /// then the blocks dirty for longer than the cache's age limit reach
    /// the disk. So a file that stays open is not left at its old size on
    /// disk for as long as it is open.
    pub fn flush_expired(&mut self, now_ms: u64) -> Result<usize, FsError> {
        if !self.read_only {
            self.vol.with_dependent_mut(|_, files| -> Result<(), FsError> {
                for n in files.nodes.values_mut() {
                    n.file.flush()?;
                }
                Ok(())
            })?;
        }
        Ok(self.cache.flush_expired(now_ms)?)
    }

    /// Free and total space.
    pub fn statfs(&self) -> Result<StatFs, FsError> {
        let s = self.vol.borrow_owner().stats()?;
        Ok(StatFs {
            block_size: s.cluster_size(),
            blocks: s.total_clusters() as u64,
            free_blocks: s.free_clusters() as u64,
            name_max: 255,
        })
    }

    /// Closes every handle, writes the FSInfo sector, clears the volume's
    /// dirty flag and flushes the cache.
    pub fn unmount(mut self) -> Result<(), FsError> {
        // Handles still open are closed (files unlinked while open go now).
        if !self.read_only {
            let open: Vec<u64> = self.vol.borrow_dependent().handles.keys().copied().collect();
            for h in open {
                let _ = self.close(Handle(h));
            }
        }
        let Datastore { mut vol, cache, read_only, clear_dirty_on_unmount, geometry, .. } = self;
        let mut first_err = None;
        vol.with_dependent_mut(|_, files| {
            for n in files.nodes.values_mut() {
                if let Err(e) = n.file.flush() {
                    first_err.get_or_insert(FsError::from(e));
                }
            }
            files.nodes.clear();
            files.handles.clear();
        });
        // Counting free clusters marks fatfs's FSInfo copy for writing at
        // unmount (a freshly formatted volume has none; fsck would say so).
        if !read_only && let Err(e) = vol.borrow_owner().stats() {
            first_err.get_or_insert(FsError::from(e));
        }
        let fs = vol.into_owner();
        if !read_only {
            fs.unmount()?;
            if clear_dirty_on_unmount {
                // Everything else is on the medium before the flag says clean.
                cache.flush()?;
                let mut b = [0u8];
                cache.read(geometry.dirty_flag_offset(), &mut b)?;
                cache.write(geometry.dirty_flag_offset(), &[b[0] & !1])?;
            }
            cache.flush()?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The wall clock the datastore stamps files with.
    pub fn clock(&self) -> &Arc<dyn WallClock> {
        &self.clock
    }
}
