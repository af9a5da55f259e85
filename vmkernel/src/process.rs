//! User processes: an address space and the user worlds (threads) that run
//! in it, with exit status and the copy-in/copy-out of user memory.
//!
//! User memory is reached through the process's page tables and the direct
//! map, never by dereferencing user pointers in ring 0: a bad pointer is an
//! `EFAULT` from the walk, not a kernel page fault.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;
use vmkernel::paging;
use vmkernel::sched::GroupId;

use crate::arch::syscall;
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

pub struct Process {
    pub pid: u32,
    pub name: String,
    pub space: AddressSpace,
    exit: Mutex<Option<ExitStatus>>,
    pub exited: WaitQueue,
    /// A fatal signal sent to the process, acted on when it next enters
    /// the kernel (system call or interrupt from user mode).
    pending_kill: core::sync::atomic::AtomicU8,
    /// Effective user ID (0 = root).
    pub euid: AtomicU32,
}

static NEXT_PID: AtomicU32 = AtomicU32::new(1);

impl Process {
    pub fn new(name: &str) -> Option<Arc<Self>> {
        Some(Arc::new(Self {
            pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
            name: String::from(name),
            space: AddressSpace::new()?,
            exit: Mutex::new(None),
            exited: WaitQueue::new(),
            pending_kill: core::sync::atomic::AtomicU8::new(0),
            euid: AtomicU32::new(0),
        }))
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.lock()
    }

    /// Maps `bytes` at `va` (page aligned) into fresh zeroed frames.
    pub fn map_bytes(&self, va: u64, bytes: &[u8], flags: u64) -> Result<(), &'static str> {
        let pages = (bytes.len() as u64).div_ceil(4096).max(1);
        for i in 0..pages {
            let frame = mm::alloc_frame().ok_or("out of memory")?;
            let chunk = &bytes[(i * 4096) as usize..((i + 1) * 4096).min(bytes.len() as u64) as usize];
            // SAFETY: the frame is fresh and mapped by the direct map.
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), mm::phys_to_virt(frame) as *mut u8, chunk.len()) };
            self.space.map(va + i * 4096, frame, flags | paging::USER).map_err(|_| {
                let _ = mm::free_frame(frame);
                "address already mapped"
            })?;
        }
        Ok(())
    }

    /// Starts the process's first thread at `entry` with stack pointer `rsp`.
    pub fn start(self: &Arc<Self>, group: GroupId, entry: u64, rsp: u64) -> Result<world::WorldId, String> {
        self.start_with(group, TrapFrame { rip: entry, rsp, rflags: 0x202, ..Default::default() })
    }

    /// Starts the first thread with the given user registers.
    pub fn start_with(self: &Arc<Self>, group: GroupId, frame: TrapFrame) -> Result<world::WorldId, String> {
        let start = Box::into_raw(Box::new(UserStart { process: self.clone(), frame }));
        let root = self.space.root();
        let p = self.clone();
        world::spawn(&self.name, WorldKind::User, group, user_world_start, start as usize, |w| {
            w.cr3.store(root, Ordering::Release);
            w.process.call_once(|| p);
        })
        .map_err(|e| {
            // SAFETY: the world was not created, so the box is still ours.
            drop(unsafe { Box::from_raw(start) });
            alloc::format!("{e}")
        })
    }

    /// Sends a fatal signal (SIGKILL, or a default-fatal signal with no
    /// handler). The process ends at its next kernel entry; blocked threads
    /// are woken so they notice.
    pub fn kill(&self, signal: u8) {
        let _ = self.pending_kill.compare_exchange(0, signal, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Records the exit status (first one wins) and wakes waiters.
    fn set_exit(&self, status: ExitStatus) {
        let mut e = self.exit.lock();
        if e.is_none() {
            *e = Some(status);
        }
        drop(e);
        self.exited.wake_all();
    }

    /// Copies user memory at `addr` into `buf`; EFAULT unless every byte is
    /// mapped user-readable.
    pub fn copy_from_user(&self, addr: u64, buf: &mut [u8]) -> Result<(), i64> {
        self.walk_user(addr, buf.len(), false, |phys, off, n| {
            // SAFETY: `phys..phys+n` is a user page frame mapped by the direct map.
            unsafe { core::ptr::copy_nonoverlapping(mm::phys_to_virt(phys) as *const u8, buf[off..].as_mut_ptr(), n) };
        })
    }

    /// Copies `data` to user memory at `addr`; EFAULT unless every byte is
    /// mapped user-writable.
    pub fn copy_to_user(&self, addr: u64, data: &[u8]) -> Result<(), i64> {
        self.walk_user(addr, data.len(), true, |phys, off, n| {
            // SAFETY: as above, and the page is writable by the user.
            unsafe { core::ptr::copy_nonoverlapping(data[off..].as_ptr(), mm::phys_to_virt(phys) as *mut u8, n) };
        })
    }

    fn walk_user(&self, addr: u64, len: usize, write: bool, mut f: impl FnMut(u64, usize, usize)) -> Result<(), i64> {
        let end = addr.checked_add(len as u64).ok_or(-EFAULT)?;
        if end > 1 << 47 {
            return Err(-EFAULT);
        }
        // Check the whole range first so a failed copy changes nothing.
        let mut va = addr;
        let mut spans: alloc::vec::Vec<(u64, usize, usize)> = alloc::vec::Vec::new();
        while va < end {
            let t = self.space.translate(va).ok_or(-EFAULT)?;
            if t.flags & paging::USER == 0 || (write && t.flags & paging::WRITABLE == 0) {
                return Err(-EFAULT);
            }
            let n = ((4096 - (va & 0xfff)) as usize).min((end - va) as usize);
            spans.push((t.phys, (va - addr) as usize, n));
            va += n as u64;
        }
        for (phys, off, n) in spans {
            f(phys, off, n);
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.space.free_user_frames();
    }
}

struct UserStart {
    process: Arc<Process>,
    frame: TrapFrame,
}

fn user_world_start(arg: usize) {
    // SAFETY: `arg` is the box leaked by `Process::start` for this world.
    let start = unsafe { Box::from_raw(arg as *mut UserStart) };
    let me = world::current().expect("user world without a world");
    let top = me.stack_top();
    let frame = start.frame;
    drop(start);
    drop(me);
    // SAFETY: schedule() loaded this world's CR3 and kernel stack top.
    unsafe { syscall::enter_user(&frame, top) }
}

/// Ends the current process if a fatal signal is pending.
pub fn check_pending_kill() {
    let Some(p) = current() else { return };
    let sig = p.pending_kill.load(Ordering::Acquire);
    if sig != 0 {
        drop(p);
        exit_current(ExitStatus::Signaled(sig));
    }
}

pub fn current() -> Option<Arc<Process>> {
    world::current()?.process.get().cloned()
}

/// Ends the current process (all of it: Mantle processes are one thread
/// until `clone` arrives) with `status`.
pub fn exit_current(status: ExitStatus) -> ! {
    if let Some(p) = current() {
        p.set_exit(status);
    }
    let code = match status {
        ExitStatus::Exited(c) => c as u64,
        ExitStatus::Signaled(s) => 128 + s as u64,
    };
    world::exit_current(code)
}
