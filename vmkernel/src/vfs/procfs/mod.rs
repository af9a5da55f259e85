//! procfs: a file system whose directories and files are produced on
//! demand from a `ProcProvider` the kernel implements. A file's text is
//! generated on its first read through one lookup, so one open sees one
//! consistent snapshot.

pub mod text;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use spin::Mutex;

use self::text::*;
use super::inode::{DirEntry, FileSystem, Inode};
use super::mount::MountInfo;
use super::types::*;
use super::{Errno, Result};

/// What /proc shows, supplied by the kernel.
pub trait ProcProvider: Send + Sync {
    /// Live process ids, any order.
    fn pids(&self) -> Vec<u32>;
    /// The pid of the caller (what /proc/self points to).
    fn current_pid(&self) -> u32;
    fn process(&self, pid: u32) -> Option<ProcessInfo>;
    fn meminfo(&self) -> MemInfo;
    fn stat(&self) -> SystemStat;
    fn uptime(&self) -> Uptime;
    fn loadavg(&self) -> LoadAvg;
    fn mounts(&self) -> Vec<MountInfo>;
    /// /proc/diskstats, already formatted (the block layer's text).
    fn diskstats(&self) -> Vec<u8> {
        Vec::new()
    }
    /// The text of `/proc/net/<name>` (`dev`, `route`, `tcp`, `udp`,
    /// `vswitch`: the virtual switch's port groups and ports), or
    /// `None` while the kernel has no network stack.
    fn net_file(&self, _name: &str) -> Option<String> {
        None
    }
    /// The kernel command line (`/proc/cmdline`, without its newline).
    fn kernel_cmdline(&self) -> String {
        String::new()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Root,
    Global(Global),
    SelfLink,
    PidDir(u32),
    PidFile(u32, PidFile),
    /// `/proc/net`
    NetDir,
    /// `/proc/net/<NET_FILES[i]>`
    NetFile(usize),
}

/// The files of `/proc/net`.
const NET_FILES: [&str; 6] = ["dev", "route", "tcp", "udp", "unix", "vswitch"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Meminfo,
    Uptime,
    Stat,
    Loadavg,
    Mounts,
    Diskstats,
    Cmdline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PidFile {
    Stat,
    Cmdline,
    Status,
    Exe,
}

const GLOBALS: [(&[u8], Global); 7] = [
    (b"meminfo", Global::Meminfo),
    (b"uptime", Global::Uptime),
    (b"stat", Global::Stat),
    (b"loadavg", Global::Loadavg),
    (b"mounts", Global::Mounts),
    (b"diskstats", Global::Diskstats),
    (b"cmdline", Global::Cmdline),
];
const PID_FILES: [(&[u8], PidFile); 4] = [
    (b"stat", PidFile::Stat),
    (b"cmdline", PidFile::Cmdline),
    (b"status", PidFile::Status),
    (b"exe", PidFile::Exe),
];
/// Root cookies: the globals, then `self`, `net`, then FIRST_PID_COOKIE + pid.
const NET_COOKIE: u64 = GLOBALS.len() as u64 + 1;
const FIRST_PID_COOKIE: u64 = GLOBALS.len() as u64 + 2;

pub struct ProcFs {
    provider: Arc<dyn ProcProvider>,
}

impl ProcFs {
    pub fn new(provider: Arc<dyn ProcProvider>) -> Arc<ProcFs> {
        Arc::new(ProcFs { provider })
    }

    fn node(&self, node: Node) -> Arc<dyn Inode> {
        Arc::new(ProcInode { provider: self.provider.clone(), node, cache: Mutex::new(None) })
    }
}

impl FileSystem for ProcFs {
    fn root(&self) -> Arc<dyn Inode> {
        self.node(Node::Root)
    }
    fn fs_type(&self) -> &str {
        "proc"
    }
}

struct ProcInode {
    provider: Arc<dyn ProcProvider>,
    node: Node,
    cache: Mutex<Option<Vec<u8>>>,
}

impl ProcInode {
    fn new_node(&self, node: Node) -> Arc<dyn Inode> {
        Arc::new(ProcInode { provider: self.provider.clone(), node, cache: Mutex::new(None) })
    }

    fn ino_of(node: Node) -> u64 {
        let pid_base = |pid: u32| (pid as u64 + 1) << 8;
        match node {
            Node::Root => 1,
            Node::Global(g) => 2 + GLOBALS.iter().position(|(_, x)| *x == g).unwrap_or(0) as u64,
            Node::SelfLink => 2 + GLOBALS.len() as u64,
            Node::NetDir => 3 + GLOBALS.len() as u64,
            Node::NetFile(i) => 4 + GLOBALS.len() as u64 + i as u64,
            Node::PidDir(pid) => pid_base(pid),
            Node::PidFile(pid, f) => {
                pid_base(pid) + 1 + PID_FILES.iter().position(|(_, x)| *x == f).unwrap_or(0) as u64
            }
        }
    }

    fn generate(&self) -> Result<Vec<u8>> {
        let p = &self.provider;
        let proc_of = |pid| p.process(pid).ok_or(Errno::ESRCH);
        Ok(match self.node {
            Node::Global(Global::Meminfo) => meminfo(&p.meminfo()).into_bytes(),
            Node::Global(Global::Uptime) => uptime(&p.uptime()).into_bytes(),
            Node::Global(Global::Stat) => stat(&p.stat()).into_bytes(),
            Node::Global(Global::Loadavg) => loadavg(&p.loadavg()).into_bytes(),
            Node::Global(Global::Mounts) => mounts(&p.mounts()),
            Node::Global(Global::Diskstats) => p.diskstats(),
            Node::Global(Global::Cmdline) => alloc::format!("{}\n", p.kernel_cmdline()).into_bytes(),
            Node::PidFile(pid, PidFile::Stat) => pid_stat(&proc_of(pid)?).into_bytes(),
            Node::PidFile(pid, PidFile::Cmdline) => pid_cmdline(&proc_of(pid)?),
            Node::PidFile(pid, PidFile::Status) => pid_status(&proc_of(pid)?).into_bytes(),
            Node::NetFile(i) => {
                let name = NET_FILES.get(i).ok_or(Errno::ENOENT)?;
                p.net_file(name).ok_or(Errno::ENOENT)?.into_bytes()
            }
            _ => return Err(Errno::EINVAL),
        })
    }

    fn pid_exists(&self, pid: u32) -> bool {
        self.provider.process(pid).is_some()
    }
}

fn parse_pid(name: &[u8]) -> Option<u32> {
    if name.is_empty() || name[0] == b'0' || name.len() > 10 || !name.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    core::str::from_utf8(name).ok()?.parse().ok()
}

impl Inode for ProcInode {
    fn metadata(&self) -> Metadata {
        let (mode, nlink) = match self.node {
            Node::Root | Node::PidDir(_) | Node::NetDir => (S_IFDIR | 0o555, 2),
            Node::SelfLink | Node::PidFile(_, PidFile::Exe) => (S_IFLNK | 0o777, 1),
            _ => (S_IFREG | 0o444, 1),
        };
        // Per-process entries belong to the process's owner.
        let (uid, gid) = match self.node {
            Node::PidDir(pid) | Node::PidFile(pid, _) => {
                self.provider.process(pid).map(|p| (p.uid, p.gid)).unwrap_or((0, 0))
            }
            _ => (0, 0),
        };
        Metadata {
            ino: Self::ino_of(self.node),
            mode,
            nlink,
            uid,
            gid,
            size: 0, // as on Linux: read until EOF
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            rdev: 0,
            blocks: 0,
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if matches!(self.node, Node::Root | Node::PidDir(_) | Node::NetDir) {
            return Err(Errno::EISDIR);
        }
        let mut cache = self.cache.lock();
        if cache.is_none() {
            *cache = Some(self.generate()?);
        }
        let data = cache.as_ref().expect("filled above");
        let start = (offset as usize).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, _: u64, _: &[u8]) -> Result<usize> {
        Err(Errno::EACCES)
    }

    fn lookup(&self, name: &[u8]) -> Result<Arc<dyn Inode>> {
        match self.node {
            Node::Root => {
                if name == b".." {
                    return Ok(self.new_node(Node::Root));
                }
                if name == b"self" {
                    return Ok(self.new_node(Node::SelfLink));
                }
                if name == b"net" {
                    return Ok(self.new_node(Node::NetDir));
                }
                if let Some((_, g)) = GLOBALS.iter().find(|(n, _)| *n == name) {
                    return Ok(self.new_node(Node::Global(*g)));
                }
                match parse_pid(name) {
                    Some(pid) if self.pid_exists(pid) => Ok(self.new_node(Node::PidDir(pid))),
                    _ => Err(Errno::ENOENT),
                }
            }
            Node::PidDir(pid) => {
                if name == b".." {
                    return Ok(self.new_node(Node::Root));
                }
                if !self.pid_exists(pid) {
                    return Err(Errno::ENOENT);
                }
                PID_FILES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, f)| self.new_node(Node::PidFile(pid, *f)))
                    .ok_or(Errno::ENOENT)
            }
            Node::NetDir => {
                if name == b".." {
                    return Ok(self.new_node(Node::Root));
                }
                NET_FILES
                    .iter()
                    .position(|n| n.as_bytes() == name)
                    .map(|i| self.new_node(Node::NetFile(i)))
                    .ok_or(Errno::ENOENT)
            }
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn readdir(&self, cookie: u64) -> Result<Option<(DirEntry, u64)>> {
        let entry = |ino, name: &[u8], file_type| DirEntry { ino, name: name.to_vec(), file_type };
        match self.node {
            Node::Root => {
                if let Some((name, g)) = GLOBALS.get(cookie as usize) {
                    let e = entry(Self::ino_of(Node::Global(*g)), name, FileType::Regular);
                    return Ok(Some((e, cookie + 1)));
                }
                if cookie < NET_COOKIE {
                    let e = entry(Self::ino_of(Node::SelfLink), b"self", FileType::Symlink);
                    return Ok(Some((e, NET_COOKIE)));
                }
                if cookie < FIRST_PID_COOKIE {
                    let e = entry(Self::ino_of(Node::NetDir), b"net", FileType::Directory);
                    return Ok(Some((e, FIRST_PID_COOKIE)));
                }
                let from = cookie - FIRST_PID_COOKIE;
                let next = self.provider.pids().into_iter().filter(|&p| p as u64 >= from).min();
                Ok(next.map(|pid| {
                    let e = entry(
                        Self::ino_of(Node::PidDir(pid)),
                        format!("{pid}").as_bytes(),
                        FileType::Directory,
                    );
                    (e, FIRST_PID_COOKIE + pid as u64 + 1)
                }))
            }
            Node::NetDir => Ok(NET_FILES.get(cookie as usize).map(|name| {
                (entry(Self::ino_of(Node::NetFile(cookie as usize)), name.as_bytes(), FileType::Regular), cookie + 1)
            })),
            Node::PidDir(pid) => Ok(PID_FILES.get(cookie as usize).map(|(name, f)| {
                let ty = if *f == PidFile::Exe { FileType::Symlink } else { FileType::Regular };
                (entry(Self::ino_of(Node::PidFile(pid, *f)), name, ty), cookie + 1)
            })),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn readlink(&self) -> Result<Vec<u8>> {
        match self.node {
            Node::SelfLink => Ok(format!("{}", self.provider.current_pid()).into_bytes()),
            Node::PidFile(pid, PidFile::Exe) => {
                Ok(self.provider.process(pid).ok_or(Errno::ENOENT)?.exe)
            }
            _ => Err(Errno::EINVAL),
        }
    }
}

#[cfg(test)]
mod tests;
