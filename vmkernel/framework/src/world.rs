//! Worlds: the one schedulable entity (ESXi's term). System worlds are
//! kernel threads; user worlds and vCPU worlds build on the same object.
//!
//! Each world has its own kernel stack and extended-state save area. The
//! kernel is not preemptible (it runs with interrupts off, see docs/platform.md, "Toolchain");
//! a world leaves the CPU only by calling `schedule` — when it blocks,
//! yields or exits, or from the timer interrupt when the interrupted code
//! was user or guest mode or the idle loop.
//!
//! The policy (which world next, for how long) is `vmkernel::sched`;
//! this module is the mechanism.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::Mutex;
use vmkernel::sched::{GroupId, ROOT_GROUP, Scheduler};

pub use vmkernel::sched::WorldId;

use crate::arch::context::{self, FpuState};
use crate::arch::{cpu, gdt};
use crate::mm::AddressSpace;
use crate::time;

pub use crate::cpu::MAX_CPUS;
const KERNEL_STACK_SIZE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorldKind {
    Idle,
    System,
    User,
    Vcpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WorldState {
    Runnable = 0,
    Blocked = 1,
    Dead = 2,
}

pub struct World {
    pub id: WorldId,
    pub name: String,
    pub kind: WorldKind,
    state: AtomicU8,
    /// A wake-up that arrived while the world was still running; its next
    /// `block_current` returns at once. Changed only under the policy lock.
    wake_pending: core::sync::atomic::AtomicBool,
    /// Saved kernel stack pointer while not running.
    rsp: UnsafeCell<u64>,
    /// The user (or guest) extended register state, saved when the world
    /// enters the kernel and restored when it returns. Kernel code needs no
    /// such state across a switch: every XMM register is caller-saved in
    /// the ABI, so none is live across `switch_stacks`.
    fpu: UnsafeCell<FpuState>,
    /// Owned kernel stack (the idle worlds run on their CPU's boot stack).
    stack: Option<Box<[u8]>>,
    pub exit_code: AtomicU64,
    /// Page-table root this world runs on (0: the kernel's own), the root
    /// of `space`, which it keeps alive.
    cr3: AtomicU64,
    space: Mutex<Option<Arc<AddressSpace>>>,
    /// The user thread this world runs (the services' type, see
    /// [`UserThread`]).
    pub thread: spin::Once<Arc<dyn UserThread>>,
    /// What the world runs when it first gets the CPU (taken then).
    entry: Mutex<Option<WorldEntry>>,
}

/// What the framework needs from the user thread a world runs; the type
/// itself belongs to the services layer.
pub trait UserThread: Send + Sync + 'static {
    /// The FS base (thread-local storage) to load when the world runs.
    fn fs_base(&self) -> u64;
    /// The thread as `Any`, so its owner can have its own type back.
    fn into_any(self: Arc<Self>) -> Arc<dyn core::any::Any + Send + Sync>;
}

/// A world's entry: typed code (a closure owning its arguments).
enum WorldEntry {
    Code(Box<dyn EntryCode>),
}

/// A world's entry closure, run once from its box.
trait EntryCode: Send {
    fn run(self: Box<Self>);
}

impl<F: FnOnce() + Send> EntryCode for F {
    fn run(self: Box<Self>) {
        // The closure moves onto the world's stack and its box is freed
        // before it runs: an entry that never returns (a user thread
        // entering ring 3 ends by `exit_current`) would otherwise keep
        // its box, and what it captured, for good (176 bytes per user
        // thread, found by `sysfuzz heap`).
        let f: F = {
            let boxed = self;
            *boxed
        };
        f()
    }
}

// SAFETY: `rsp` and `fpu` are touched only by the CPU that is switching the
// world in or out, and the policy's `running` flag guarantees that at most
// one CPU does so at a time.
unsafe impl Sync for World {}
// SAFETY: as for `Sync`: the cells move with the world, and only the CPU
// switching it touches them.
unsafe impl Send for World {}

impl World {
    pub fn state(&self) -> WorldState {
        match self.state.load(Ordering::Acquire) {
            0 => WorldState::Runnable,
            1 => WorldState::Blocked,
            _ => WorldState::Dead,
        }
    }

    /// Address of the extended-state save area (for the entry stubs).
    fn fpu_area_addr(&self) -> u64 {
        // SAFETY: reading the area's address; nothing is accessed.
        unsafe { (*self.fpu.get()).area().as_ptr() as u64 }
    }

    /// Reads or replaces the saved state (signal frames, fork, exec), only
    /// through [`with_current_user_fpu`] (the running world's own) and
    /// [`NewWorld::with_user_fpu`] (a world not yet runnable). For the
    /// running world, the part a system call's entry left in the registers
    /// is saved first, so the area is complete and whatever `f` leaves there
    /// is what the return to ring 3 loads.
    ///
    /// # Safety
    /// No other CPU may switch to or from this world meanwhile: it is the
    /// caller's running world, or it is not yet known to the scheduler.
    unsafe fn with_user_fpu<R>(&self, f: impl FnOnce(&mut FpuState) -> R) -> R {
        if context::is_active_area(self.fpu_area_addr()) {
            context::save_live_user_state();
        }
        // SAFETY: the caller guarantees no switch of this world touches the
        // area meanwhile (see above).
        unsafe { f(&mut *self.fpu.get()) }
    }

    /// Makes `space` (None: the kernel's tables) the address space this
    /// world runs on — at once if it is the calling CPU's world, else from
    /// its next switch. The world keeps `space` alive while it is set.
    pub fn set_address_space(&self, space: Option<Arc<AddressSpace>>) {
        let root = space.as_ref().map_or(0, |s| s.root());
        let old = core::mem::replace(&mut *self.space.lock(), space);
        self.cr3.store(root, Ordering::Release);
        if self.id == current_id() {
            let cr3 = if root == 0 { crate::mm::kernel_pml4() } else { root };
            if cpu::read_cr3() != cr3 {
                // SAFETY: every address space maps the kernel half
                // identically, and the world holds the new one alive.
                unsafe { cpu::write_cr3(cr3) };
            }
        }
        // Only now, when this CPU no longer runs on them, may the old
        // tables go.
        drop(old);
    }

    pub fn stack_top(&self) -> u64 {
        self.stack.as_ref().map_or(0, |s| (s.as_ptr() as u64 + s.len() as u64) & !15)
    }
}

struct CpuState {
    current: Option<Arc<World>>,
    idle: Option<Arc<World>>,
    /// When the current world was switched in (ns since boot).
    since: u64,
    /// When its slice ends.
    slice_end: u64,
    /// The world switched away from, to release once its state is saved.
    prev: Option<Arc<World>>,
}

static POLICY: Mutex<Option<Scheduler>> = Mutex::new(None);
static WORLDS: Mutex<BTreeMap<WorldId, Arc<World>>> = Mutex::new(BTreeMap::new());
static CPUS: [Mutex<CpuState>; MAX_CPUS] =
    [const { Mutex::new(CpuState { current: None, idle: None, since: 0, slice_end: 0, prev: None }) }; MAX_CPUS];
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The world each CPU runs now (0: its idle world), for wake-up
/// preemption decisions taken on other CPUs.
static RUNNING: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// A world that should run before the current one was woken for this
/// CPU: reschedule at the next safe point (a tick or a reschedule IPI
/// from user or guest mode, a vCPU's next exit, the idle loop).
static RESCHED: [core::sync::atomic::AtomicBool; MAX_CPUS] = [const { core::sync::atomic::AtomicBool::new(false) }; MAX_CPUS];
/// The world each CPU runs now (its `CpuState::current`), for a lookup
/// of the running world without taking the CPU's lock (every system call
/// starts with one). Changed only by its own CPU, together with `current`.
static CURRENT: [core::sync::atomic::AtomicPtr<World>; MAX_CPUS] =
    [const { core::sync::atomic::AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// Sleeping worlds by wake-up time.
static SLEEPERS: Mutex<BTreeSet<(u64, WorldId)>> = Mutex::new(BTreeSet::new());

/// Creates the policy for `cpus` CPUs. Called once by the BSP.
pub fn init(cpus: u32) {
    *POLICY.lock() = Some(Scheduler::new(cpus));
}

/// Runs `f` with the scheduling policy (resource groups).
pub fn with_policy<R>(f: impl FnOnce(&mut Scheduler) -> R) -> R {
    f(POLICY.lock().as_mut().expect("scheduler not initialised"))
}

/// Turns the code running on this CPU into its idle world.
pub fn init_this_cpu() {
    let idle = Arc::new(World {
        id: 0,
        name: alloc::format!("idle{}", gdt::cpu_index()),
        kind: WorldKind::Idle,
        state: AtomicU8::new(WorldState::Runnable as u8),
        wake_pending: core::sync::atomic::AtomicBool::new(false),
        rsp: UnsafeCell::new(0),
        fpu: UnsafeCell::new(FpuState::new()),
        stack: None,
        exit_code: AtomicU64::new(0),
        cr3: AtomicU64::new(0),
        space: Mutex::new(None),
        thread: spin::Once::new(),
        entry: Mutex::new(None),
    });
    let mut c = CPUS[gdt::cpu_index() as usize].lock();
    CURRENT[gdt::cpu_index() as usize].store(Arc::as_ptr(&idle).cast_mut(), Ordering::Release);
    c.current = Some(idle.clone());
    c.idle = Some(idle);
}

fn new_world(name: &str, kind: WorldKind, entry: WorldEntry) -> Option<Arc<World>> {
    // Fallible: running out of memory refuses a new world, it does not
    // take the kernel down.
    let mut v: alloc::vec::Vec<u8> = alloc::vec::Vec::new();
    v.try_reserve_exact(KERNEL_STACK_SIZE).ok()?;
    v.resize(KERNEL_STACK_SIZE, 0);
    let mut stack = v.into_boxed_slice();
    let rsp = context::prepare_stack(&mut stack, world_start);
    Some(Arc::new(World {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: String::from(name),
        kind,
        state: AtomicU8::new(WorldState::Runnable as u8),
        wake_pending: core::sync::atomic::AtomicBool::new(false),
        rsp: UnsafeCell::new(rsp),
        fpu: UnsafeCell::new(FpuState::new()),
        stack: Some(stack),
        exit_code: AtomicU64::new(0),
        cr3: AtomicU64::new(0),
        space: Mutex::new(None),
        thread: spin::Once::new(),
        entry: Mutex::new(Some(entry)),
    }))
}

/// Reads or replaces the running world's saved extended state (signal
/// frames, exec, fork's copy). `None` outside a world.
pub fn with_current_user_fpu<R>(f: impl FnOnce(&mut FpuState) -> R) -> Option<R> {
    let me = current()?;
    // SAFETY: `me` is this CPU's running world: only this CPU switches it,
    // and not from inside this call.
    Some(unsafe { me.with_user_fpu(f) })
}

/// A world being made, as `spawn`'s `setup` sees it: not yet known to the
/// scheduler, so no CPU runs it and its saved state may be written.
pub struct NewWorld<'a>(&'a World);

impl core::ops::Deref for NewWorld<'_> {
    type Target = World;
    fn deref(&self) -> &World {
        self.0
    }
}

impl NewWorld<'_> {
    /// The extended state the world starts with (fork: the parent's).
    pub fn with_user_fpu<R>(&self, f: impl FnOnce(&mut FpuState) -> R) -> R {
        // SAFETY: `NewWorld` exists only inside `spawn_world`'s call of
        // `setup`, before the world is added to the scheduler.
        unsafe { self.0.with_user_fpu(f) }
    }
}

/// Starts a system world running `entry` in resource group `group`.
pub fn spawn_system(name: &str, group: GroupId, entry: impl FnOnce() + Send + 'static) -> Result<WorldId, vmkernel::sched::SchedError> {
    spawn(name, WorldKind::System, group, entry, |_| {})
}

/// Creates a world of `kind` that runs `entry` (and exits with code 0 when
/// it returns), lets `setup` fill in its fields, and makes it runnable. If
/// the world cannot be made, `entry` is dropped with what it owns.
pub fn spawn(
    name: &str,
    kind: WorldKind,
    group: GroupId,
    entry: impl FnOnce() + Send + 'static,
    setup: impl FnOnce(&NewWorld<'_>),
) -> Result<WorldId, vmkernel::sched::SchedError> {
    spawn_world(name, kind, group, WorldEntry::Code(Box::new(entry)), setup, None)
}

/// Like `spawn`, for a world that may only ever run on the CPUs in `cpus`
/// (`None`: anywhere): the set is in place before the world is runnable.
pub fn spawn_on(
    name: &str,
    kind: WorldKind,
    group: GroupId,
    entry: impl FnOnce() + Send + 'static,
    setup: impl FnOnce(&NewWorld<'_>),
    cpus: Option<vmkernel::sched::CpuSet>,
) -> Result<WorldId, vmkernel::sched::SchedError> {
    spawn_world(name, kind, group, WorldEntry::Code(Box::new(entry)), setup, cpus)
}

fn spawn_world(
    name: &str,
    kind: WorldKind,
    group: GroupId,
    entry: WorldEntry,
    setup: impl FnOnce(&NewWorld<'_>),
    cpus: Option<vmkernel::sched::CpuSet>,
) -> Result<WorldId, vmkernel::sched::SchedError> {
    let Some(w) = new_world(name, kind, entry) else {
        return Err(vmkernel::sched::SchedError::OutOfMemory);
    };
    setup(&NewWorld(&w));
    let id = w.id;
    let cpu = least_loaded_cpu();
    WORLDS.lock().insert(id, w);
    let r = with_policy(|p| {
        p.add_world(id, group, cpu, 1000)?;
        if cpus.is_some()
            && let Err(e) = p.set_allowed_cpus(id, cpus)
        {
            let _ = p.remove_world(id);
            return Err(e);
        }
        p.set_runnable(id, true)
    });
    if r.is_err() {
        WORLDS.lock().remove(&id);
    }
    r.map(|_| id)
}

fn least_loaded_cpu() -> u32 {
    // Round-robin placement; load balancing evens it out later.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) % gdt::cpus_online().max(1) as u64) as u32
}

/// Runs `f` on the running world without taking a reference to it (the
/// system-call path looks up its thread this way).
pub fn with_current<R>(f: impl FnOnce(&World) -> R) -> Option<R> {
    let p = CURRENT.get(gdt::cpu_index() as usize)?.load(Ordering::Acquire);
    // SAFETY: as in `current`: this CPU's current world stays alive while
    // its own code runs — even if `f` blocks, a world is only freed after
    // it died, and a dead world never runs again.
    unsafe { p.as_ref() }.map(f)
}

pub fn current() -> Option<Arc<World>> {
    let p = CURRENT.get(gdt::cpu_index() as usize)?.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is this CPU's `CpuState::current` (stored with it), whose
    // Arc keeps the world alive while it is current; only this CPU changes
    // it, and this code runs on this CPU (the kernel is not preemptible),
    // so the world cannot be released between the load and the increment.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// The running world's ID and name for the panic report; without waiting
/// for a lock the panicking code may hold.
pub fn with_current_for_panic(f: impl FnOnce(WorldId, &str)) {
    if let Some(cpu) = CPUS[gdt::cpu_index() as usize].try_lock()
        && let Some(w) = &cpu.current
    {
        f(w.id, &w.name);
    }
}

pub fn current_id() -> WorldId {
    current().map_or(0, |w| w.id)
}

/// Gives up the CPU; the world stays runnable.
pub fn yield_now() {
    schedule();
}

/// Blocks the current world until `wake` is called for it. The caller
/// must have published the world's id (e.g. on a wait queue) first.
pub fn block_current() {
    let Some(me) = current() else { return };
    if me.kind == WorldKind::Idle {
        return;
    }
    // State changes happen under the policy lock so a concurrent `wake`
    // is either seen here (pending) or sees us blocked.
    let block = with_policy(|p| {
        if me.wake_pending.swap(false, Ordering::AcqRel) {
            return false;
        }
        me.state.store(WorldState::Blocked as u8, Ordering::Release);
        let _ = p.set_runnable(me.id, false);
        true
    });
    if block {
        schedule();
    }
}

/// Makes a blocked world runnable again (a runnable one's next block
/// returns at once). Returns false if it is gone.
///
/// Wake-up preemption: when the woken world — or a runnable one waiting
/// for its CPU, e.g. a vCPU just sent an interrupt — comes before the one its CPU
/// runs now (or that CPU idles), that CPU is told to reschedule — by a
/// reschedule IPI if it is another CPU — so the woken world runs within
/// an IPI's latency instead of after the running world's slice (up to
/// `DEFAULT_SLICE_NS`) or the next tick. The scheduler's fair order
/// decides (`Scheduler::preempts`), so wake-ups cannot buy more than a
/// fair share.
pub fn wake(id: WorldId) -> bool {
    let Some(w) = WORLDS.lock().get(&id).cloned() else { return false };
    let kick = with_policy(|p| {
        match w.state() {
            WorldState::Blocked => {
                w.state.store(WorldState::Runnable as u8, Ordering::Release);
                let _ = p.set_runnable(id, true);
            }
            // Runnable already: waiting for its CPU (an interrupted vCPU
            // whose CPU runs another world) or running.
            WorldState::Runnable => {
                w.wake_pending.store(true, Ordering::Release);
                if p.is_running(id) {
                    return None;
                }
            }
            WorldState::Dead => return None,
        }
        let cpu = p.world_cpu(id)?;
        let running = RUNNING.get(cpu as usize)?.load(Ordering::Acquire);
        p.preempts(id, (running != 0).then_some(running)).then_some(cpu)
    });
    if let Some(cpu) = kick {
        RESCHED[cpu as usize].store(true, Ordering::Release);
        if cpu != gdt::cpu_index() {
            crate::arch::apic::kick_cpu(cpu);
        }
    }
    true
}

/// Takes this CPU's reschedule request (see `wake`): true if a woken
/// world should run before the current one.
pub fn take_resched() -> bool {
    RESCHED[gdt::cpu_index() as usize].swap(false, Ordering::AcqRel)
}

/// The reschedule (kick) IPI: from user mode, reschedule now if asked;
/// elsewhere the request waits for the next safe point (a vCPU's exit
/// handling, the idle loop) — kernel code is not preemptible.
pub fn on_resched_ipi(from_user: bool) {
    if from_user && take_resched() {
        schedule();
    }
}

/// Sleeps for at least `ns` nanoseconds.
pub fn sleep_ns(ns: u64) {
    let Some(me) = current() else { return };
    if me.kind == WorldKind::Idle {
        time::delay_us(ns / 1000);
        return;
    }
    let deadline = time::uptime_ns() + ns;
    SLEEPERS.lock().insert((deadline, me.id));
    while time::uptime_ns() < deadline {
        block_current();
    }
    SLEEPERS.lock().remove(&(deadline, me.id));
}

/// Blocks until `wake` is called for this world or `deadline` (uptime,
/// ns) passes, whichever comes first. Callers re-check their condition.
pub fn block_until(deadline: u64) {
    let Some(me) = current() else { return };
    if me.kind == WorldKind::Idle || time::uptime_ns() >= deadline {
        return;
    }
    SLEEPERS.lock().insert((deadline, me.id));
    block_current();
    SLEEPERS.lock().remove(&(deadline, me.id));
}

/// An armed wake-up ([`arm_wakeup`]): disarmed when dropped, so a wait
/// that ends early (an event, a signal) leaves no entry behind until its
/// deadline — which a hostile timeout puts centuries away.
#[must_use = "the wake-up is disarmed when this is dropped"]
pub struct Wakeup {
    deadline: u64,
    id: WorldId,
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        SLEEPERS.lock().remove(&(self.deadline, self.id));
    }
}

/// Makes sure the current world is woken at `deadline` even if nothing
/// else wakes it (timed waits), for as long as the returned guard lives.
/// A spurious early wake-up is harmless: the waiter re-checks.
pub fn arm_wakeup(deadline: u64) -> Wakeup {
    let id = current_id();
    SLEEPERS.lock().insert((deadline, id));
    Wakeup { deadline, id }
}

/// Wakes sleepers whose time has come (called from the timer tick and
/// from `schedule`).
pub fn wake_sleepers(now: u64) {
    let due: Vec<WorldId> = {
        let mut s = SLEEPERS.lock();
        let due: Vec<(u64, WorldId)> = s.iter().take_while(|(t, _)| *t <= now).copied().collect();
        for d in &due {
            s.remove(d);
        }
        due.into_iter().map(|(_, w)| w).collect()
    };
    for w in due {
        wake(w);
    }
}

/// Ends the current world.
pub fn exit_current(code: u64) -> ! {
    let me = current().expect("exit with no current world");
    assert!(me.kind != WorldKind::Idle, "the idle world cannot exit");
    me.exit_code.store(code, Ordering::Relaxed);
    me.state.store(WorldState::Dead as u8, Ordering::Release);
    with_policy(|p| p.set_runnable(me.id, false).ok());
    // A dead world needs no wake-ups (its waits' guards never drop: this
    // function does not return).
    SLEEPERS.lock().retain(|&(_, w)| w != me.id);
    drop(me);
    schedule();
    unreachable!("a dead world was scheduled again");
}

static USER_TICK: spin::Once<fn()> = spin::Once::new();

/// Registers what runs on every timer tick that interrupted user or guest
/// mode (the services check for a pending kill there).
pub fn on_user_tick(hook: fn()) {
    USER_TICK.call_once(|| hook);
}

/// The timer tick: wakes sleepers and, when the tick interrupted user (or
/// guest) code whose slice is over or a sleeper became due, reschedules.
/// Ticks that interrupt the idle loop need nothing: it schedules itself.
pub fn on_timer_tick(from_user: bool) {
    let now = time::uptime_ns();
    let due = SLEEPERS.lock().first().is_some_and(|(t, _)| *t <= now);
    if due {
        wake_sleepers(now);
    }
    if from_user {
        if due || slice_expired_at_tick(now) || take_resched() {
            schedule();
        }
        if let Some(hook) = USER_TICK.get() {
            hook();
        }
    }
}

/// Whether the current world's slice is over (a vCPU's exit handling
/// checks it between ticks).
pub fn slice_expired(now: u64) -> bool {
    slice_ends_by(now)
}

/// The timer tick's check: slices end on ticks, so one that ends nearer
/// this tick than the next ends now. The tick period measured on the TSC is
/// a hair off the nominal one; waiting for `now >= slice_end` exactly
/// stretched a 10 ms slice to two ticks whenever the tick came a few
/// microseconds early (and a reserved group behind a 20 ms slice missed
/// its turn).
fn slice_expired_at_tick(now: u64) -> bool {
    const HALF_TICK_NS: u64 = 1_000_000_000 / crate::arch::apic::TICK_HZ / 2;
    slice_ends_by(now + HALF_TICK_NS)
}

fn slice_ends_by(t: u64) -> bool {
    let c = CPUS[gdt::cpu_index() as usize].lock();
    match &c.current {
        Some(w) if w.kind == WorldKind::Idle => true,
        Some(_) => t >= c.slice_end,
        None => false,
    }
}

/// Picks the next world for this CPU and switches to it. Interrupts must
/// be off (they always are in kernel code).
pub fn schedule() {
    let cpu = gdt::cpu_index();
    let now = time::uptime_ns();
    wake_sleepers(now);
    RESCHED[cpu as usize].store(false, Ordering::Release);
    let mut c = CPUS[cpu as usize].lock();
    let Some(prev) = c.current.clone() else { return };
    let idle = c.idle.clone().expect("CPU without idle world");

    // One critical section: charge, choose, and keep `prev` marked running
    // (unless it was chosen again) so no other CPU picks it before its
    // registers are saved; `finish_switch` releases it.
    let pick = with_policy(|p| {
        if prev.kind != WorldKind::Idle {
            BUSY_NS[cpu as usize].fetch_add(now.saturating_sub(c.since), Ordering::Relaxed);
            let _ = p.charge(prev.id, now.saturating_sub(c.since), now);
            p.release(prev.id);
        }
        let mut pick = p.pick_next(cpu, now);
        if pick.is_none() && p.steal_for(cpu).is_some() {
            pick = p.pick_next(cpu, now);
        }
        if prev.kind != WorldKind::Idle && pick.map(|pk| pk.world) != Some(prev.id) {
            p.mark_running(prev.id);
        }
        pick
    });
    let next = match pick {
        Some(pk) => {
            c.slice_end = now + pk.slice_ns;
            match WORLDS.lock().get(&pk.world).cloned() {
                Some(w) => w,
                None => {
                    with_policy(|p| p.release(pk.world));
                    idle
                }
            }
        }
        None => idle,
    };
    c.since = now;
    if Arc::ptr_eq(&next, &prev) {
        return;
    }
    CURRENT[cpu as usize].store(Arc::as_ptr(&next).cast_mut(), Ordering::Release);
    c.current = Some(next.clone());
    c.prev = Some(prev.clone());
    RUNNING[cpu as usize].store(if next.kind == WorldKind::Idle { 0 } else { next.id }, Ordering::Release);
    if next.kind != WorldKind::Idle {
        gdt::set_kernel_stack(next.stack_top());
    }
    context::switch_fpu_area(next.fpu_area_addr());
    // Every world runs on its own tables or the kernel's: a system world
    // must not keep a user address space alive that may be freed under it.
    let cr3 = match next.cr3.load(Ordering::Acquire) {
        0 => crate::mm::kernel_pml4(),
        r => r,
    };
    if cpu::read_cr3() != cr3 {
        // SAFETY: every address space maps the kernel half identically.
        unsafe { cpu::write_cr3(cr3) };
    }
    if let Some(t) = next.thread.get() {
        crate::arch::syscall::set_user_fs_base(t.fs_base());
    }
    drop(c);
    // SAFETY: `prev` is this CPU's running world and `next` is marked running
    // for this CPU only, so no other CPU touches their saved state.
    unsafe {
        let save = prev.rsp.get();
        let load = *next.rsp.get();
        drop(next);
        drop(prev);
        context::switch_stacks(save, load);
    }
    finish_switch();
}


/// Runs on the new world right after a switch: the previous world's state
/// is saved now, so other CPUs may pick it, and a dead one can be freed.
fn finish_switch() {
    let prev = CPUS[gdt::cpu_index() as usize].lock().prev.take();
    if let Some(prev) = prev {
        if prev.kind != WorldKind::Idle {
            with_policy(|p| p.release(prev.id));
        }
        if prev.state() == WorldState::Dead {
            with_policy(|p| p.remove_world(prev.id).ok());
            WORLDS.lock().remove(&prev.id);
            // Dropping the last Arc frees its stack: we are not on it.
        }
    }
}

/// Where every new world starts (called by the context trampoline).
extern "C" fn world_start() -> ! {
    finish_switch();
    let entry = current().and_then(|w| w.entry.lock().take());
    match entry {
        Some(WorldEntry::Code(f)) => f.run(),
        None => log::error!("world {} started without an entry", current_id()),
    }
    exit_current(0);
}

/// Enters ring 3 in the current world with the registers in `frame` (user
/// code and stack selectors and an RFLAGS with interrupts on and IOPL 0
/// are imposed). Never returns: the world comes back to the kernel only
/// through system calls and interrupts.
pub fn enter_user_mode(frame: &crate::arch::trap::TrapFrame) -> ! {
    let top = current().map_or(0, |w| w.stack_top());
    if top == 0 {
        panic!("enter_user_mode outside a world with its own kernel stack");
    }
    // SAFETY: schedule() loaded this world's page-table root (CR3) and
    // made `top` (this world's own kernel stack) TSS.RSP0; `enter_user`
    // imposes the user selectors.
    unsafe { crate::arch::syscall::enter_user(frame, top) }
}

/// Loads the current world's user FS base (its first entry to ring 3).
pub fn load_user_fs_base() {
    if let Some(t) = current().and_then(|w| w.thread.get().cloned()) {
        crate::arch::syscall::set_user_fs_base(t.fs_base());
    }
}

/// The idle loop: run whatever is runnable, otherwise halt until an interrupt.
pub fn idle_loop() -> ! {
    loop {
        schedule();
        cpu::wait_for_interrupt();
    }
}

/// Number of live worlds (for statistics and leak checks).
pub fn count() -> usize {
    WORLDS.lock().len()
}

pub fn lookup(id: WorldId) -> Option<Arc<World>> {
    WORLDS.lock().get(&id).cloned()
}

pub fn default_group() -> GroupId {
    ROOT_GROUP
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// A queue of blocked worlds waiting for some condition.
pub struct WaitQueue {
    waiters: Mutex<VecDeque<WorldId>>,
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self { waiters: Mutex::new(VecDeque::new()) }
    }

    /// Blocks until `ready()` returns true. `ready` is re-checked after
    /// enqueuing so a wake between the check and the block is not lost.
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        loop {
            if ready() {
                return;
            }
            let me = current_id();
            self.waiters.lock().push_back(me);
            if ready() {
                self.waiters.lock().retain(|&w| w != me);
                return;
            }
            block_current();
        }
    }

    /// Like `wait_until`, but returns after one wake-up even if `ready` is
    /// still false (the caller loops with its own checks).
    pub fn wait_until_once(&self, mut ready: impl FnMut() -> bool) {
        if ready() {
            return;
        }
        let me = current_id();
        self.waiters.lock().push_back(me);
        if ready() {
            self.waiters.lock().retain(|&w| w != me);
            return;
        }
        block_current();
        self.waiters.lock().retain(|&w| w != me);
    }

    pub fn wake_one(&self) -> bool {
        while let Some(w) = self.waiters.lock().pop_front() {
            if wake(w) {
                return true;
            }
        }
        false
    }

    pub fn wake_all(&self) {
        let mut q = self.waiters.lock();
        if q.len() <= 1 {
            // The usual one waiter (a pipe's reader): no list to allocate.
            let w = q.pop_front();
            drop(q);
            if let Some(w) = w {
                wake(w);
            }
            return;
        }
        let all: Vec<WorldId> = q.drain(..).collect();
        drop(q);
        for w in all {
            wake(w);
        }
    }
}

/// CPU time spent running worlds (not idle) per CPU, in ns.
pub fn busy_ns_per_cpu() -> Vec<u64> {
    (0..gdt::cpus_online() as usize).map(|c| BUSY_NS[c].load(Ordering::Relaxed)).collect()
}

static BUSY_NS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Worlds that are runnable now (for /proc/loadavg).
pub fn runnable_count() -> usize {
    WORLDS.lock().values().filter(|w| w.state() == WorldState::Runnable).count()
}

pub fn is_runnable(id: WorldId) -> bool {
    lookup(id).is_some_and(|w| w.state() == WorldState::Runnable)
}
