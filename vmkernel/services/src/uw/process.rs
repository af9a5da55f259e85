//! Processes and threads.
//!
//! A process owns an address space (`Mm`, shared by its threads and, for a
//! `vfork` child, with its parent until exec), file descriptors, a working
//! directory, credentials and signal actions. Each thread is one user world.
//! User memory is reached through the page tables and the direct map, never
//! by dereferencing user pointers in ring 0: a bad pointer is an `EFAULT`
//! from the walk, not a kernel page fault.


use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;
use vmkernel::paging;
use vmkernel::sched::GroupId;
use vmkernel::vfs::{Credentials, Errno, Location};
use vmkernel::vm_regions::{DEFAULT_MMAP_BASE, VmMap};

use super::fdtable::FdTable;
use super::signal::SigActions;
use crate::arch::trap::TrapFrame;
use crate::mm::{self, AddressSpace};
use crate::world::{self, WaitQueue, WorldKind};

pub const EFAULT: i64 = 14;

/// How a process ended, as `wait4` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(u8),
    Signaled(u8),
}

impl ExitStatus {
    /// The Linux wait status word.
    pub fn wait_status(self) -> i32 {
        match self {
            Self::Exited(c) => (c as i32) << 8,
            Self::Signaled(s) => s as i32,
        }
    }
}

/// A stop or continue a parent has not yet collected with wait4
/// (WUNTRACED / WCONTINUED) or waitid (WSTOPPED / WCONTINUED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobReport {
    /// Stopped by this signal.
    Stopped(u8),
    Continued,
}

impl JobReport {
    /// The Linux wait status word.
    pub fn wait_status(self) -> i32 {
        match self {
            Self::Stopped(s) => ((s as i32) << 8) | 0x7f,
            Self::Continued => 0xffff,
        }
    }
}

/// An address space and its areas.
pub struct Mm {
    pub space: Arc<AddressSpace>,
    pub vm: Mutex<VmMap>,
    /// The resource group its commitments are charged to.
    pub group: AtomicU32,
    /// Bytes of writable mappings charged (see `commit`).
    pub committed: AtomicU64,
    /// The executable whose segments page in on demand (exec).
    pub image: Option<Arc<super::exec::ExecImage>>,
    /// Files mapped with mmap, by the id their areas carry: pages that are
    /// not present (after MADV_DONTNEED, or grown by mremap) are read from
    /// them, and shared writable areas are written back to them.
    pub files: Mutex<BTreeMap<u64, Arc<vmkernel::vfs::OpenFile>>>,
}

impl Mm {
    pub fn new() -> Option<Arc<Mm>> {
        Self::with_image(None)
    }

    /// An empty address space whose areas backed by `image` page in from it.
    pub fn with_image(image: Option<Arc<super::exec::ExecImage>>) -> Option<Arc<Mm>> {
        Some(Arc::new(Mm {
            space: Arc::new(AddressSpace::new()?),
            vm: Mutex::new(VmMap::new(DEFAULT_MMAP_BASE)),
            group: AtomicU32::new(world::default_group()),
            committed: AtomicU64::new(0),
            image,
            files: Mutex::new(BTreeMap::new()),
        }))
    }

    /// A copy-on-write duplicate (fork).
    pub fn fork(&self) -> Option<Arc<Mm>> {
        let vm = self.vm.lock().clone();
        let space = Arc::new(self.space.fork()?);
        // MAP_SHARED areas stay shared: undo copy-on-write for them in both.
        for a in vm.areas().filter(|a| a.shared && a.prot & vmkernel::linux_abi::flags::mman::PROT_WRITE != 0) {
            for va in self.space.mapped_pages(a.start, a.end) {
                self.space.make_shared_writable(va);
                space.make_shared_writable(va);
            }
        }
        let child = Arc::new(Mm {
            space,
            vm: Mutex::new(vm),
            group: AtomicU32::new(self.group.load(Ordering::Relaxed)),
            committed: AtomicU64::new(0),
            // Pages of the executable neither has touched yet page in from
            // the same file in both.
            image: self.image.clone(),
            files: Mutex::new(self.files.lock().clone()),
        });
        super::commit::recharge(&child);
        Some(child)
    }
}

impl Drop for Mm {
    fn drop(&mut self) {
        // What a process wrote to its shared file mappings reaches the
        // files when it exits or execs without munmap.
        let areas: Vec<vmkernel::vm_regions::Vma> = self.vm.lock().areas().copied().collect();
        super::mapped::write_back(self, &areas);
        super::commit::release(self);
        self.space.free_user_frames();
    }
}

/// User and group IDs (real, effective, saved).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub suid: u32,
    pub gid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub groups: Vec<u32>,
}

impl Ids {
    pub fn root() -> Self {
        Self::default()
    }
    /// What the VFS checks: the effective IDs.
    pub fn creds(&self) -> Credentials {
        Credentials { uid: self.euid, gid: self.egid, groups: self.groups.clone() }
    }
}

pub struct Process {
    pub pid: u32,
    pub ppid: AtomicU32,
    pub pgid: AtomicU32,
    pub sid: AtomicU32,
    pub ids: Mutex<Ids>,
    /// Mirrors `ids.euid` for lock-free checks (e.g. the VMkernel API).
    pub euid: AtomicU32,
    pub mm: Mutex<Arc<Mm>>,
    pub fds: Mutex<FdTable>,
    pub cwd: Mutex<Option<Location>>,
    pub umask: AtomicU32,
    /// `comm`: the executable's base name, at most 15 bytes.
    pub name: Mutex<String>,
    pub exe: Mutex<Vec<u8>>,
    /// argv, NUL-separated (what /proc/<pid>/cmdline shows).
    pub cmdline: Mutex<Vec<u8>>,
    pub threads: Mutex<Vec<Arc<Thread>>>,
    pub children: Mutex<Vec<Arc<Process>>>,
    pub sig: Mutex<SigActions>,
    /// Process-directed pending signals (bit n-1 for signal n).
    pub sig_pending: AtomicU64,
    exit: Mutex<Option<ExitStatus>>,
    /// Set when an exit_group or fatal signal is under way.
    pub exiting: AtomicBool,
    /// The exit is complete (files closed, memory released and written
    /// back, parent told): wait4 may collect it only then, so a parent
    /// that waited sees everything the exit does, and no SIGCHLD of a
    /// child already collected arrives later.
    pub reapable: AtomicBool,
    pub exited: WaitQueue,
    /// Job control: the process is stopped (its threads wait on their way
    /// back to ring 3 until SIGCONT or SIGKILL).
    pub stopped: AtomicBool,
    /// A SIGCONT came after the last stop signal was sent: a stop signal
    /// already taken off the pending set no longer stops the process.
    pub stop_cancelled: AtomicBool,
    /// The last stop or continue, until the parent collects it.
    pub job_report: Mutex<Option<JobReport>>,
    /// Set when a vfork child has exec'd or exited.
    pub vfork_released: AtomicBool,
    pub group: AtomicU32,
    pub start_ns: u64,
    /// CPU time of threads that have exited (ns).
    pub dead_threads_ns: AtomicU64,
}

pub struct Thread {
    pub tid: u32,
    pub process: Arc<Process>,
    pub world: AtomicU64,
    pub fs_base: AtomicU64,
    pub clear_child_tid: AtomicU64,
    pub sigmask: AtomicU64,
    /// Thread-directed pending signals.
    pub sig_pending: AtomicU64,
    /// `sigaltstack` (sp, size, flags).
    pub altstack: Mutex<(u64, u64, i32)>,
    /// Mask to restore after `rt_sigsuspend`'s handler runs.
    pub saved_mask: Mutex<Option<u64>>,
}

/// Processes (live and zombie) the host allows at once; fork beyond this
/// fails with EAGAIN as on Linux at RLIMIT_NPROC.
pub const MAX_PROCESSES: usize = 1024;

static NEXT_PID: AtomicU32 = AtomicU32::new(1);
static PROCESSES: Mutex<BTreeMap<u32, Arc<Process>>> = Mutex::new(BTreeMap::new());
static THREADS: Mutex<BTreeMap<u32, Arc<Thread>>> = Mutex::new(BTreeMap::new());

pub fn lookup(pid: u32) -> Option<Arc<Process>> {
    PROCESSES.lock().get(&pid).cloned()
}

pub fn lookup_thread(tid: u32) -> Option<Arc<Thread>> {
    THREADS.lock().get(&tid).cloned()
}

pub fn all() -> Vec<Arc<Process>> {
    PROCESSES.lock().values().cloned().collect()
}

/// The next pid that will be handed out (for /proc/stat and loadavg).
pub fn alloc_pid_peek() -> u32 {
    NEXT_PID.load(Ordering::Relaxed)
}

pub fn alloc_pid() -> u32 {
    NEXT_PID.fetch_add(1, Ordering::Relaxed)
}

impl Process {
    /// A new process with an empty address space, root credentials, no
    /// files, parent `ppid`. Registered in the process table.
    pub fn new(name: &str) -> Option<Arc<Self>> {
        Self::with_mm(name, Mm::new()?, 0)
    }

    pub fn with_mm(name: &str, mm: Arc<Mm>, ppid: u32) -> Option<Arc<Self>> {
        if PROCESSES.lock().len() >= MAX_PROCESSES {
            return None;
        }
        let pid = alloc_pid();
        let p = Arc::new(Self {
            pid,
            ppid: AtomicU32::new(ppid),
            pgid: AtomicU32::new(pid),
            sid: AtomicU32::new(pid),
            ids: Mutex::new(Ids::root()),
            euid: AtomicU32::new(0),
            mm: Mutex::new(mm),
            fds: Mutex::new(FdTable::new()),
            cwd: Mutex::new(super::files::root()),
            umask: AtomicU32::new(0o022),
            name: Mutex::new(String::from(&name[..name.len().min(15)])),
            exe: Mutex::new(Vec::new()),
            cmdline: Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
            sig: Mutex::new(SigActions::default()),
            sig_pending: AtomicU64::new(0),
            exit: Mutex::new(None),
            exiting: AtomicBool::new(false),
            reapable: AtomicBool::new(false),
            exited: WaitQueue::new(),
            stopped: AtomicBool::new(false),
            stop_cancelled: AtomicBool::new(false),
            job_report: Mutex::new(None),
            vfork_released: AtomicBool::new(false),
            group: AtomicU32::new(world::default_group()),
            start_ns: crate::time::uptime_ns(),
            dead_threads_ns: AtomicU64::new(0),
        });
        PROCESSES.lock().insert(pid, p.clone());
        Some(p)
    }

    pub fn mm(&self) -> Arc<Mm> {
        self.mm.lock().clone()
    }

    pub fn creds(&self) -> Credentials {
        self.ids.lock().creds()
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock()
    }

    pub fn is_zombie(&self) -> bool {
        self.exit.lock().is_some()
    }

    /// Maps `bytes` at `va` (page aligned) into fresh zeroed frames.
    pub fn map_bytes(&self, va: u64, bytes: &[u8], flags: u64) -> Result<(), &'static str> {
        let mm = self.mm();
        let pages = (bytes.len() as u64).div_ceil(4096).max(1);
        for i in 0..pages {
            let chunk = &bytes[(i * 4096).min(bytes.len() as u64) as usize..((i + 1) * 4096).min(bytes.len() as u64) as usize];
            let frame = mm::UserFrame::alloc_with(chunk).ok_or("out of memory")?;
            mm.space.map(va + i * 4096, frame, flags | paging::USER).map_err(|_| "address already mapped")?;
        }
        Ok(())
    }

    /// Starts the process's first thread at `entry` with stack pointer `rsp`.
    pub fn start(self: &Arc<Self>, group: GroupId, entry: u64, rsp: u64) -> Result<world::WorldId, String> {
        self.start_with(group, TrapFrame { rip: entry, rsp, rflags: 0x202, ..Default::default() })
    }

    /// Starts the first thread with the given user registers.
    pub fn start_with(self: &Arc<Self>, group: GroupId, frame: TrapFrame) -> Result<world::WorldId, String> {
        self.group.store(group, Ordering::Relaxed);
        let t = Thread::new(self.pid, self.clone());
        spawn_thread(&t, frame, None)
    }

    /// Copies user memory at `addr` into `buf`; EFAULT unless every byte is
    /// mapped user-readable (faulting pages in as the CPU would).
    pub fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> Result<(), i64> {
        let mm = self.mm();
        // The common case first: inside one page that is mapped already.
        if within_one_user_page(addr, buf.len()) && mm.space.read_user_page(addr, buf) {
            return Ok(());
        }
        let mut copied = true;
        walk_user(&mm, addr, buf.len(), false, |_, off, n| {
            copied &= mm.space.read_user_page(addr + off as u64, &mut buf[off..off + n]);
        })?;
        // A page another thread unmapped after the walk is EFAULT too.
        if copied { Ok(()) } else { Err(-EFAULT) }
    }

    /// Copies `data` to user memory at `addr`; EFAULT unless every byte is
    /// mapped user-writable (resolving copy-on-write as a CPU write would).
    pub fn copy_to_user(&self, addr: u64, data: &[u8]) -> Result<(), i64> {
        let mm = self.mm();
        if within_one_user_page(addr, data.len()) && mm.space.write_user_page(addr, data) {
            return Ok(());
        }
        let mut copied = true;
        walk_user(&mm, addr, data.len(), true, |_, off, n| {
            copied &= mm.space.write_user_page(addr + off as u64, &data[off..off + n]);
        })?;
        if copied { Ok(()) } else { Err(-EFAULT) }
    }

    /// Reads a NUL-terminated string of at most `max` bytes.
    pub fn read_cstr(&self, addr: u64, max: usize) -> Result<Vec<u8>, i64> {
        let mut out = Vec::new();
        let mut a = addr;
        loop {
            let n = (4096 - (a & 0xfff)) as usize;
            let mut page = [0u8; 4096];
            let chunk = &mut page[..n];
            self.copy_from_user(a, chunk)?;
            if let Some(z) = chunk.iter().position(|&c| c == 0) {
                out.try_reserve(z).map_err(|_| -(Errno::ENOMEM.0 as i64))?;
                out.extend_from_slice(&chunk[..z]);
                return Ok(out);
            }
            out.try_reserve(n).map_err(|_| -(Errno::ENOMEM.0 as i64))?;
            out.extend_from_slice(chunk);
            if out.len() > max {
                return Err(-(Errno::ENAMETOOLONG.0 as i64));
            }
            a += n as u64;
        }
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, i64> {
        let mut b = [0u8; 8];
        self.copy_from_user(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn write_u32(&self, addr: u64, v: u32) -> Result<(), i64> {
        self.copy_to_user(addr, &v.to_le_bytes())
    }

    pub fn write_u64(&self, addr: u64, v: u64) -> Result<(), i64> {
        self.copy_to_user(addr, &v.to_le_bytes())
    }

    /// Records the exit status (first one wins).
    pub fn set_exit(&self, status: ExitStatus) -> bool {
        let mut e = self.exit.lock();
        if e.is_some() {
            return false;
        }
        *e = Some(status);
        true
    }

    /// Total CPU time of the process's threads (ns).
    pub fn cpu_ns(&self) -> u64 {
        let live: u64 = self
            .threads
            .lock()
            .iter()
            .filter_map(|t| world::with_policy(|p| p.world_used_ns(t.world.load(Ordering::Relaxed))))
            .sum();
        live + self.dead_threads_ns.load(Ordering::Relaxed)
    }
}

/// Whether `[addr, addr+len)` is a non-empty range of user addresses
/// inside one page (a copy that one page-table walk can serve).
fn within_one_user_page(addr: u64, len: usize) -> bool {
    len != 0 && (addr & 0xfff) + len as u64 <= 4096 && addr.saturating_add(len as u64) <= vmkernel::elf::USER_END
}

/// Walks `[addr, addr+len)` in `mm`, calling `f(phys, offset, n)` per page
/// piece after checking the whole range (so a failed copy changes nothing).
/// Pages not yet present are faulted in the way a user access would.
pub fn walk_user(mm: &Mm, addr: u64, len: usize, write: bool, mut f: impl FnMut(u64, usize, usize)) -> Result<(), i64> {
    let end = addr.checked_add(len as u64).ok_or(-EFAULT)?;
    if end > vmkernel::elf::USER_END {
        return Err(-EFAULT);
    }
    let mut va = addr;
    // The pages are all resolved before any is copied (EFAULT copies
    // nothing); the common short copy keeps its list on the stack.
    let mut first = [(0u64, 0usize, 0usize); 4];
    let mut count = 0;
    let mut more: Vec<(u64, usize, usize)> = Vec::new();
    while va < end {
        let mut t = mm.space.translate(va);
        let ok = |t: &Option<paging::Translation>| {
            t.is_some_and(|t| t.flags & paging::USER != 0 && (!write || t.flags & paging::WRITABLE != 0))
        };
        if !ok(&t) {
            if !super::fault::resolve(mm, va, write) {
                return Err(-EFAULT);
            }
            t = mm.space.translate(va);
            if !ok(&t) {
                return Err(-EFAULT);
            }
        }
        let Some(t) = t else { return Err(-EFAULT) };
        let n = ((4096 - (va & 0xfff)) as usize).min((end - va) as usize);
        let span = (t.phys, (va - addr) as usize, n);
        match first.get_mut(count) {
            Some(slot) => *slot = span,
            None => more.push(span),
        }
        count += 1;
        va += n as u64;
    }
    for &(phys, off, n) in first.iter().take(count).chain(more.iter()) {
        f(phys, off, n);
    }
    Ok(())
}

impl Thread {
    pub fn new(tid: u32, process: Arc<Process>) -> Arc<Thread> {
        let t = Arc::new(Thread {
            tid,
            process,
            world: AtomicU64::new(0),
            fs_base: AtomicU64::new(0),
            clear_child_tid: AtomicU64::new(0),
            sigmask: AtomicU64::new(0),
            sig_pending: AtomicU64::new(0),
            altstack: Mutex::new((0, 0, 2 /* SS_DISABLE */)),
            saved_mask: Mutex::new(None),
        });
        THREADS.lock().insert(tid, t.clone());
        t.process.threads.lock().push(t.clone());
        t
    }
}

/// Creates the world for `thread` that enters ring 3 with `frame`.
/// Starts `thread`'s world at `frame`, with `fpu` as its saved extended
/// state if given (a fork's copy of its parent's; ignored if the size does
/// not match).
pub fn spawn_thread(thread: &Arc<Thread>, frame: TrapFrame, fpu: Option<&[u8]>) -> Result<world::WorldId, String> {
    let p = &thread.process;
    let space = p.mm().space.clone();
    let t = thread.clone();
    let name = p.name.lock().clone();
    world::spawn(&name, WorldKind::User, p.group.load(Ordering::Relaxed), move || user_world_start(frame), |w| {
        w.set_address_space(Some(space));
        t.world.store(w.id, Ordering::Release);
        w.thread.call_once(|| t);
        if let Some(fpu) = fpu {
            w.with_user_fpu(|s| {
                if s.area().len() == fpu.len() {
                    s.area_mut().copy_from_slice(fpu);
                }
            });
        }
    })
    .map_err(|e| {
        thread.process.threads.lock().retain(|x| !Arc::ptr_eq(x, thread));
        THREADS.lock().remove(&thread.tid);
        alloc::format!("{e}")
    })
}

fn user_world_start(mut frame: TrapFrame) {
    // Signals sent before the thread first ran act now.
    super::signal::deliver_on_return(&mut frame);
    world::load_user_fs_base();
    world::enter_user_mode(&frame)
}

impl world::UserThread for Thread {
    fn fs_base(&self) -> u64 {
        self.fs_base.load(Ordering::Relaxed)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn core::any::Any + Send + Sync> {
        self
    }
}

pub fn current_thread() -> Option<Arc<Thread>> {
    world::with_current(|w| w.thread.get().cloned())??.into_any().downcast::<Thread>().ok()
}

pub fn current() -> Option<Arc<Process>> {
    current_thread().map(|t| t.process.clone())
}

/// Ends the calling thread. The last thread out ends the process.
pub fn exit_thread(status: ExitStatus) -> ! {
    let Some(t) = current_thread() else {
        log::error!("exit_thread called outside a user world");
        world::exit_current(status.wait_status() as u64)
    };
    let p = t.process.clone();
    // CLONE_CHILD_CLEARTID: clear the tid word and wake a futex waiter on it.
    let ctid = t.clear_child_tid.swap(0, Ordering::AcqRel);
    if ctid != 0 && p.write_u32(ctid, 0).is_ok() {
        super::futex::wake(&p, ctid, 1);
    }
    let last = {
        let mut threads = p.threads.lock();
        threads.retain(|x| !Arc::ptr_eq(x, &t));
        threads.is_empty()
    };
    THREADS.lock().remove(&t.tid);
    let used = world::with_policy(|pol| pol.world_used_ns(t.world.load(Ordering::Relaxed))).unwrap_or(0);
    p.dead_threads_ns.fetch_add(used, Ordering::Relaxed);
    drop(t);
    if last {
        finish_process(&p, status);
    } else {
        // A thread made with CLONE_VFORK releases its parent thread by
        // ending (`clone` waits for it).
        super::io_wait::notify();
    }
    drop(p);
    let code = match status {
        ExitStatus::Exited(c) => c as u64,
        ExitStatus::Signaled(s) => 128 + s as u64,
    };
    world::exit_current(code)
}

/// Ends the whole process: every other thread is told to exit; this one
/// exits now.
pub fn exit_group(status: ExitStatus) -> ! {
    if let Some(p) = current() {
        if !p.exiting.swap(true, Ordering::AcqRel) {
            // The parent may look at the files as soon as it sees the exit.
            write_back_shared(&p);
            p.set_exit(status);
        }
        let me = current_thread().map(|t| t.tid);
        for t in p.threads.lock().iter().filter(|t| Some(t.tid) != me) {
            t.sig_pending.fetch_or(1 << (9 - 1), Ordering::AcqRel);
            world::wake(t.world.load(Ordering::Relaxed));
        }
        super::io_wait::notify();
        let st = p.exit_status().unwrap_or(status);
        drop(p);
        exit_thread(st);
    }
    world::exit_current(0)
}

static FILES_CLOSED: spin::Once<fn()> = spin::Once::new();

/// Registers what runs after an ending process closed its files (the
/// system-call layer frees AF_UNIX sockets that only their own queues
/// still hold).
pub fn on_files_closed(hook: fn()) {
    FILES_CLOSED.call_once(|| hook);
}

/// The last thread has gone: close files, release the address space,
/// hand children to init, notify the parent.
fn finish_process(p: &Arc<Process>, status: ExitStatus) {
    if !p.is_zombie() {
        write_back_shared(p);
    }
    p.set_exit(status);
    let fds = core::mem::replace(&mut *p.fds.lock(), FdTable::new());
    drop(fds);
    if let Some(hook) = FILES_CLOSED.get() {
        hook();
    }
    // Drop our reference to the address space; the last one frees it. The
    // CPU is still on these tables: load the kernel's first.
    if let Some(w) = world::current() {
        w.set_address_space(None);
    }
    *p.mm.lock() = Arc::new(Mm {
        space: Arc::new(AddressSpace::empty()),
        vm: Mutex::new(VmMap::new(DEFAULT_MMAP_BASE)),
        group: AtomicU32::new(world::default_group()),
        committed: AtomicU64::new(0),
        image: None,
        files: Mutex::new(BTreeMap::new()),
    });
    *p.cwd.lock() = None;
    super::itimer::forget(p.pid);
    p.vfork_released.store(true, Ordering::Release);
    // Orphans go to init (pid 1), which reaps them.
    let orphans: Vec<Arc<Process>> = core::mem::take(&mut *p.children.lock());
    if let Some(init) = lookup(1).filter(|i| i.pid != p.pid) {
        let mut zombies = Vec::new();
        for c in orphans {
            c.ppid.store(1, Ordering::Release);
            if c.is_zombie() {
                zombies.push(c.clone());
            }
            init.children.lock().push(c);
        }
        // Orphans that have already exited: init learns of them as Linux
        // tells it (SIGCHLD), or they go at once if it discards children;
        // otherwise they would wait, holding their memory, for some later
        // SIGCHLD of init's own.
        if !zombies.is_empty() {
            if init.sig.lock().discards_children() {
                for z in &zombies {
                    reap(z);
                }
            } else {
                super::signal::send_to_process(&init, vmkernel::linux_abi::signal::SIGCHLD, None);
            }
        }
    }
    let ppid = p.ppid.load(Ordering::Acquire);
    let parent = lookup(ppid);
    let reap_now = match &parent {
        // A parent that ignores SIGCHLD (or sets SA_NOCLDWAIT) never reaps.
        Some(pp) => pp.sig.lock().discards_children(),
        None => true,
    };
    p.reapable.store(true, Ordering::Release);
    if let Some(pp) = &parent {
        let (code, st) = match status {
            ExitStatus::Exited(c) => (1 /* CLD_EXITED */, c as i32),
            ExitStatus::Signaled(s) => (2 /* CLD_KILLED */, s as i32),
        };
        let info = vmkernel::linux_abi::signal::SigInfo::child(code, p.pid, 0, st, 0, 0);
        super::signal::send_to_process(pp, vmkernel::linux_abi::signal::SIGCHLD, Some(info));
    }
    if reap_now {
        reap(p);
    }
    p.exited.wake_all();
    super::io_wait::notify();
}

/// Writes the process's shared file mappings back (before its exit is
/// visible: a parent that waited for it reads what it wrote).
fn write_back_shared(p: &Process) {
    let mm = p.mm();
    let areas: Vec<vmkernel::vm_regions::Vma> = mm.vm.lock().areas().copied().collect();
    super::mapped::write_back(&mm, &areas);
}

/// Removes a zombie from the tables (wait4 collected it).
pub fn reap(p: &Arc<Process>) {
    PROCESSES.lock().remove(&p.pid);
    if let Some(pp) = lookup(p.ppid.load(Ordering::Acquire)) {
        pp.children.lock().retain(|c| c.pid != p.pid);
    }
}

/// Acts on a pending SIGKILL (or fatal exit_group) at a kernel entry.
pub fn check_pending_kill() {
    super::signal::deliver_pending_fatal();
}
