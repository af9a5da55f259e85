//! Open file descriptions: what a file descriptor points at. Shared
//! (`Arc<OpenFile>`) between dup'ed descriptors and across fork, so the
//! offset and status flags live here; O_CLOEXEC belongs to the descriptor
//! and is only remembered for the fd table.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::blocking::BlockingLock;

use super::dirent;
use super::flags::*;
use super::inode::{Device, Inode};
use super::mount::Location;
use super::pipe::{self, PipeReader, PipeWriter};
use super::stat::Stat;
use super::types::*;
use super::{Errno, Result};

/// What the description reads and writes.
pub enum Backing {
    Inode(Arc<dyn Inode>),
    /// A device node: metadata from `node`, I/O from the driver.
    Device {
        node: Arc<dyn Inode>,
        dev: Arc<dyn Device>,
    },
    PipeRead(PipeReader),
    PipeWrite(PipeWriter),
    /// A named FIFO opened for reading, writing or both; `node` gives
    /// fstat. `peer_opens` is the other side's open count when this open
    /// attached (a blocking open waits for it to move).
    Fifo {
        node: Arc<dyn Inode>,
        reader: Option<PipeReader>,
        writer: Option<PipeWriter>,
        peer_opens: u64,
    },
}

pub struct OpenFile {
    backing: Backing,
    location: Option<Location>,
    dev: u64,
    /// Inode number reported for `..` by getdents64.
    parent_ino: u64,
    /// Access mode and status flags: read without waiting for I/O in
    /// progress through this description.
    flags: AtomicU32,
    /// The offset, held across the file's I/O so that reads and writes
    /// through one description (threads, dup'ed descriptors) each see and
    /// move it whole (and O_APPEND writes do not interleave). That I/O
    /// may wait for a disk (a datastore's lock, a request): a second user
    /// sleeps here rather than spinning (a spin lock here wedged the host
    /// when two threads of the datastore fuzzer shared a descriptor).
    offset: BlockingLock<u64>,
}

/// st_dev of pipes (an anonymous device, like Linux's pipefs).
const PIPE_DEV: u64 = makedev(0, 0xff);

impl OpenFile {
    pub(crate) fn new(
        backing: Backing,
        location: Option<Location>,
        dev: u64,
        parent_ino: u64,
        flags: u32,
    ) -> OpenFile {
        OpenFile {
            backing,
            location,
            dev,
            parent_ino,
            flags: AtomicU32::new(flags),
            offset: BlockingLock::new(0),
        }
    }

    /// pipe2(): the read end and the write end. `flags` may hold
    /// O_NONBLOCK and O_CLOEXEC.
    pub fn pipe(flags: u32) -> (OpenFile, OpenFile) {
        let (r, w) = pipe::pipe();
        let keep = flags & (O_NONBLOCK | O_CLOEXEC);
        (
            OpenFile::new(Backing::PipeRead(r), None, PIPE_DEV, 0, O_RDONLY | keep),
            OpenFile::new(Backing::PipeWrite(w), None, PIPE_DEV, 0, O_WRONLY | keep),
        )
    }

    /// A file with no place in the tree whose I/O and metadata an object
    /// of the kernel's services provides (a network socket): `node` gives
    /// fstat, `dev` read/write/poll/ioctl. `flags` may hold O_NONBLOCK and
    /// O_CLOEXEC.
    pub fn anonymous(node: Arc<dyn Inode>, dev: Arc<dyn Device>, flags: u32) -> OpenFile {
        let keep = flags & (O_NONBLOCK | O_CLOEXEC);
        OpenFile::new(Backing::Device { node, dev }, None, PIPE_DEV, 0, O_RDWR | keep)
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// (st_dev, st_ino): the file's identity in its VFS.
    pub(crate) fn identity(&self) -> (u64, u64) {
        (self.dev, self.metadata().ino)
    }

    /// A FIFO opened for only one side whose other side has not opened
    /// since: a blocking open waits until this turns false.
    pub fn fifo_waits_for_peer(&self) -> bool {
        match &self.backing {
            Backing::Fifo { reader: Some(r), writer: None, peer_opens, .. } => r.pipe().opens().1 == *peer_opens,
            Backing::Fifo { reader: None, writer: Some(w), peer_opens, .. } => w.pipe().opens().0 == *peer_opens,
            _ => false,
        }
    }

    /// The file's place in the tree (fchdir, *at calls); None for pipes.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// Flags as F_GETFL reports them (access mode and status flags).
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire) & !O_CLOEXEC
    }

    pub fn cloexec(&self) -> bool {
        self.flags.load(Ordering::Acquire) & O_CLOEXEC != 0
    }

    /// F_SETFL: only O_APPEND and O_NONBLOCK change.
    pub fn set_status_flags(&self, flags: u32) {
        let _ = self.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| Some((f & !SETFL_MASK) | (flags & SETFL_MASK)));
    }

    /// Whether EAGAIN from read/write goes back to the user (true) or means
    /// "wait on `poll` readiness and retry" (false).
    pub fn is_nonblocking(&self) -> bool {
        self.flags.load(Ordering::Acquire) & O_NONBLOCK != 0
    }

    fn check(&self, want_write: bool) -> Result<u32> {
        let f = self.flags.load(Ordering::Acquire);
        let ok = f & O_PATH == 0 && if want_write { writable(f) } else { readable(f) };
        if ok { Ok(f) } else { Err(Errno::EBADF) }
    }

    fn is_dir(&self) -> bool {
        matches!(&self.backing, Backing::Inode(i) if i.metadata().is_dir())
    }

    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.check(false)?;
        match &self.backing {
            Backing::PipeRead(r) | Backing::Fifo { reader: Some(r), .. } => r.read(buf),
            Backing::Fifo { .. } => Err(Errno::EBADF),
            Backing::Device { dev, .. } if !dev.seekable() => dev.read(0, buf),
            _ => {
                let mut offset = self.offset.lock();
                let n = self.read_at(*offset, buf)?;
                *offset += n as u64;
                Ok(n)
            }
        }
    }

    /// [`read`](Self::read), and whether it may have made something
    /// ready that others wait for (see `blocking` in the system calls): a
    /// pipe's read only when it freed room a writer waits for; a file's
    /// never; devices' and sockets' always.
    pub fn read_waking(&self, buf: &mut [u8]) -> Result<(usize, bool)> {
        match &self.backing {
            Backing::PipeRead(r) | Backing::Fifo { reader: Some(r), .. } => {
                self.check(false)?;
                r.read_freeing(buf)
            }
            Backing::Inode(_) => self.read(buf).map(|n| (n, false)),
            _ => self.read(buf).map(|n| (n, true)),
        }
    }

    pub fn write(&self, data: &[u8]) -> Result<usize> {
        let flags = self.check(true)?;
        match &self.backing {
            Backing::PipeWrite(w) | Backing::Fifo { writer: Some(w), .. } => w.write(data),
            Backing::Fifo { .. } => Err(Errno::EBADF),
            Backing::Device { dev, .. } if !dev.seekable() => dev.write(0, data),
            Backing::Inode(i) => {
                // The lock spans size lookup and write so O_APPEND writers
                // through one description do not interleave.
                let mut offset = self.offset.lock();
                if flags & O_APPEND != 0 {
                    *offset = i.metadata().size;
                }
                let n = i.write_at(*offset, data)?;
                *offset += n as u64;
                Ok(n)
            }
            _ => {
                let mut offset = self.offset.lock();
                let n = self.write_at(*offset, data)?;
                *offset += n as u64;
                Ok(n)
            }
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &self.backing {
            Backing::Inode(i) => i.read_at(offset, buf),
            Backing::Device { dev, .. } => dev.read(offset, buf),
            _ => Err(Errno::ESPIPE),
        }
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<usize> {
        match &self.backing {
            Backing::Inode(i) => i.write_at(offset, data),
            Backing::Device { dev, .. } => dev.write(offset, data),
            _ => Err(Errno::ESPIPE),
        }
    }

    fn seekable(&self) -> bool {
        match &self.backing {
            Backing::Inode(_) => true,
            Backing::Device { dev, .. } => dev.seekable(),
            _ => false,
        }
    }

    pub fn pread(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.check(false)?;
        if !self.seekable() {
            return Err(Errno::ESPIPE);
        }
        self.read_at(offset, buf)
    }

    pub fn pwrite(&self, offset: u64, data: &[u8]) -> Result<usize> {
        self.check(true)?;
        if !self.seekable() {
            return Err(Errno::ESPIPE);
        }
        self.write_at(offset, data)
    }

    pub fn lseek(&self, offset: i64, whence: u32) -> Result<u64> {
        if !self.seekable() {
            return Err(Errno::ESPIPE);
        }
        let mut pos = self.offset.lock();
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => *pos as i64,
            // A directory's offset is a cookie: there is no end to seek to.
            SEEK_END if !self.is_dir() => self.metadata().size as i64,
            _ => return Err(Errno::EINVAL),
        };
        let new = base.checked_add(offset).filter(|&n| n >= 0).ok_or(Errno::EINVAL)?;
        *pos = new as u64;
        Ok(new as u64)
    }

    /// Fills `buf` with linux_dirent64 records. The offset is a cookie:
    /// 0 is `.`, 1 is `..`, n >= 2 is the file system's cookie n - 2.
    pub fn getdents64(&self, buf: &mut [u8]) -> Result<usize> {
        let Backing::Inode(dir) = &self.backing else { return Err(Errno::ENOTDIR) };
        if self.flags.load(Ordering::Acquire) & O_PATH != 0 {
            return Err(Errno::EBADF);
        }
        let meta = dir.metadata();
        if !meta.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let mut offset = self.offset.lock();
        let mut used = 0;
        loop {
            let (ino, name, d_type, next): (u64, alloc::vec::Vec<u8>, u8, u64) = match *offset {
                0 => (meta.ino, b".".to_vec(), FileType::Directory.dirent_type(), 1),
                1 => (self.parent_ino, b"..".to_vec(), FileType::Directory.dirent_type(), 2),
                c => match dir.readdir(c - 2)? {
                    Some((e, next)) => (e.ino, e.name, e.file_type.dirent_type(), next + 2),
                    None => break,
                },
            };
            match dirent::encode(&mut buf[used..], ino, next as i64, d_type, &name) {
                Some(n) => used += n,
                None if used == 0 => return Err(Errno::EINVAL),
                None => break,
            }
            *offset = next;
        }
        Ok(used)
    }

    pub fn metadata(&self) -> Metadata {
        match &self.backing {
            Backing::Inode(i) | Backing::Device { node: i, .. } | Backing::Fifo { node: i, .. } => i.metadata(),
            Backing::PipeRead(r) => pipe_meta(r.pipe().ino(), r.pipe().len()),
            Backing::PipeWrite(w) => pipe_meta(w.pipe().ino(), w.pipe().len()),
        }
    }

    /// fstat.
    pub fn stat(&self) -> Stat {
        Stat::new(self.dev, &self.metadata())
    }

    pub fn ioctl(&self, cmd: u32, arg: u64, mem: &mut dyn UserMemory) -> Result<i64> {
        match &self.backing {
            Backing::Inode(i) => i.ioctl(cmd, arg, mem),
            Backing::Device { dev, .. } => dev.ioctl(cmd, arg, mem),
            _ => Err(Errno::ENOTTY),
        }
    }

    /// The file's wake-up generation (see `Device::poll_generation`);
    /// None where the object keeps none.
    pub fn poll_generation(&self) -> Option<u64> {
        match &self.backing {
            Backing::Inode(_) => None,
            Backing::Device { dev, .. } => dev.poll_generation(),
            Backing::PipeRead(r) => Some(r.generation()),
            Backing::PipeWrite(w) => Some(w.generation()),
            Backing::Fifo { reader, writer, .. } => {
                Some(reader.as_ref().map_or(0, |r| r.generation()) + writer.as_ref().map_or(0, |w| w.generation()))
            }
        }
    }

    pub fn poll(&self) -> PollEvents {
        match &self.backing {
            Backing::Inode(i) => i.poll(),
            Backing::Device { dev, .. } => dev.poll(),
            Backing::PipeRead(r) => r.poll(),
            Backing::PipeWrite(w) => w.poll(),
            Backing::Fifo { reader, writer, .. } => {
                let mut ev = reader.as_ref().map_or(PollEvents::NONE, |r| r.poll());
                if let Some(w) = writer {
                    ev |= w.poll();
                }
                // Opened read-write, this description is its own writer.
                if writer.is_some() && reader.is_some() {
                    ev = PollEvents(ev.0 & !PollEvents::HUP.0 & !PollEvents::ERR.0);
                }
                ev
            }
        }
    }

    /// fsync/fdatasync: the inode's file system makes it durable.
    pub fn fsync(&self) -> Result<()> {
        match &self.backing {
            Backing::Inode(i) => i.fsync(),
            _ => Ok(()),
        }
    }

    /// ftruncate: a regular file open for writing.
    pub fn truncate(&self, len: u64) -> Result<()> {
        let f = self.flags.load(Ordering::Acquire);
        match &self.backing {
            Backing::Inode(i)
                if writable(f) && f & O_PATH == 0 && i.metadata().mode & S_IFMT == S_IFREG =>
            {
                i.truncate(len)
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

fn pipe_meta(ino: u64, len: usize) -> Metadata {
    Metadata {
        ino,
        mode: S_IFIFO | 0o600,
        nlink: 1,
        uid: 0,
        gid: 0,
        size: len as u64,
        atime: Timespec::default(),
        mtime: Timespec::default(),
        ctime: Timespec::default(),
        rdev: 0,
        blocks: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A regular file whose reads wait until the test lets them go, as a
    /// datastore read waits for the disk.
    struct SlowFile {
        go: std::sync::Mutex<mpsc::Receiver<()>>,
        entered: std::sync::Mutex<mpsc::Sender<u64>>,
    }

    impl Inode for SlowFile {
        fn metadata(&self) -> Metadata {
            Metadata {
                ino: 7,
                mode: S_IFREG | 0o644,
                nlink: 1,
                uid: 0,
                gid: 0,
                size: 1 << 20,
                atime: Timespec::default(),
                mtime: Timespec::default(),
                ctime: Timespec::default(),
                rdev: 0,
                blocks: 0,
            }
        }
        fn as_any(&self) -> &dyn core::any::Any {
            self
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
            self.entered.lock().unwrap().send(offset).unwrap();
            self.go.lock().unwrap().recv().unwrap();
            buf.fill(1);
            Ok(buf.len())
        }
    }

    /// The datastore fuzzer's hang: while one thread's read through a
    /// description waits for the disk, another thread's calls on that
    /// description must not wait for it, except those that move the
    /// offset, which then see it moved whole.
    #[test]
    fn flags_do_not_wait_for_io_in_progress_and_offsets_move_whole() {
        let (go_tx, go_rx) = mpsc::channel();
        let (in_tx, in_rx) = mpsc::channel();
        let inode: Arc<dyn Inode> = Arc::new(SlowFile { go: std::sync::Mutex::new(go_rx), entered: std::sync::Mutex::new(in_tx) });
        let f = Arc::new(OpenFile::new(Backing::Inode(inode), None, 1, 1, O_RDWR));
        let reader = |f: Arc<OpenFile>| std::thread::spawn(move || f.read(&mut [0u8; 100]).unwrap());
        let first = reader(f.clone());
        assert_eq!(in_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 0);

        // Flag calls answer while the read is inside the file system.
        let (done_tx, done_rx) = mpsc::channel();
        let g = f.clone();
        std::thread::spawn(move || {
            let nb = g.is_nonblocking();
            g.set_status_flags(O_NONBLOCK);
            let ok = g.check(false).is_ok() && !nb && g.is_nonblocking() && g.flags() & O_ACCMODE == O_RDWR && !g.cloexec();
            done_tx.send(ok).unwrap();
        });
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(true), "flag calls waited for the read in progress");

        // A second read through the description waits for the first and
        // starts where it ended.
        let second = reader(f.clone());
        assert!(in_rx.recv_timeout(Duration::from_millis(200)).is_err(), "two reads at one offset at once");
        go_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 100);
        assert_eq!(in_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 100);
        go_tx.send(()).unwrap();
        assert_eq!(second.join().unwrap(), 100);
        assert_eq!(f.lseek(0, SEEK_CUR).unwrap(), 200);
    }
}
