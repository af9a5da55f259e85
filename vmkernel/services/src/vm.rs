//! Virtual machines: guest memory, the device platform, and the vCPU
//! worlds that run the guest and handle its exits.
//!
//! Every vCPU is a world in the VM's resource group. vCPU 0 starts at the
//! loader's entry point; the others wait for an INIT/SIPI sequence from the
//! guest's LAPIC model (any start vector, page 0 included), as on a PC.
//! Exit handling is backend-independent: the backend (`hv::svm`,
//! `hv::vmx`) only enters the guest and reports exits as [`Exit`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;
use vmkernel::vmk_api::{self as api, VmConfig, VmInfoRecord};
use vmkernel::vmm::debug_regs::{self, DebugRegs, DrFault};
use vmkernel::vmm::event::VmEvent;
use vmkernel::vmm::loader::{self, MemError, VcpuState};
use vmkernel::vmm::msrs::{MsrEffect, VirtualMsrs};
use vmkernel::vmm::platform::{Platform, PlatformConfig};
use vmkernel::vmm::pvclock::{self, ClockWrite, KvmClock};

use crate::hv;
use hv::guest_memory::GuestMemory;
use hv::vcpu::{Ctl, Event, Exit, GuestRegs, RAX, RBX, RCX, RDX, SegReg, VcpuHw};
use crate::virtio::{GuestRam, VirtioSlots};
use crate::arch::cpu;
use crate::{time, world};

/// A stop reason that is not one: the guest reset the VM, which powers on
/// again at once (never recorded as an exit reason).
const REASON_GUEST_RESET: u32 = u32::MAX;

/// Guest-physical holes left unmapped (MMIO): the virtio-mmio slots, the
/// IOAPIC and LAPIC pages.
const MMIO_HOLES: [(u64, u64); 3] = [
    (vmk_virtio::mmio::SLOTS_BASE, vmk_virtio::mmio::SLOTS_BASE + vmk_virtio::mmio::SLOTS as u64 * vmk_virtio::mmio::SLOT_SIZE),
    (0xfec0_0000, 0xfec0_1000),
    (0xfee0_0000, 0xfee0_1000),
];

/// A module file given to a Multiboot kernel.
pub struct ModuleImage {
    pub image: Vec<u8>,
    /// The module's string (path and arguments), as GRUB and QEMU pass it.
    pub string: String,
}

/// Per-vCPU state shared between its world and the rest of the VMM.
struct VcpuSlot {
    world: AtomicU64,
    /// INIT received: drop to wait-for-SIPI at the next exit.
    init: AtomicBool,
    /// A START-UP IPI's vector, plus 0x100 when one is pending.
    sipi: AtomicU32,
    run_ns: AtomicU64,
    /// Host frames of this vCPU's hardware structures (VMCB or VMCS and
    /// their bitmaps) while it exists.
    hw_frames: AtomicU64,
    /// MSR_KVM_SYSTEM_TIME_NEW as the guest last wrote it.
    kvm_system_time: AtomicU64,
    /// Kicked since its last full pass before entry (`before_entry`).
    kicked: AtomicBool,
}

/// Exit counters by reason (`VmStatsRecord` order).
#[derive(Default)]
struct ExitCounts([AtomicU64; api::VM_EXIT_KINDS]);

pub struct Vm {
    pub id: u32,
    pub config: VmConfig,
    memory: GuestMemory,
    platform: Mutex<Platform>,
    /// Disks and NICs in virtio-mmio slots.
    virtio: VirtioSlots,
    image: Vec<u8>,
    modules: Vec<ModuleImage>,
    pub state: AtomicU32,
    pub exit_reason: AtomicU32,
    pub exit_code: AtomicU64,
    pub exits: AtomicU64,
    exit_counts: ExitCounts,
    open_bus: AtomicU64,
    stop_requested: AtomicBool,
    /// Set by the first vCPU that ends the VM: (reason, code).
    stop_reason: Mutex<Option<(u32, u64)>>,
    paused: AtomicBool,
    /// vCPU worlds still running.
    live: AtomicU32,
    /// vCPUs halted with interrupts off or waiting for SIPI.
    stuck: AtomicU32,
    pub group: u32,
    vcpus: Vec<VcpuSlot>,
    initial: Mutex<VcpuState>,
    /// The paravirtual clock of this power-on.
    clock: Mutex<KvmClock>,
    /// MSR_KVM_WALL_CLOCK_NEW as the guest last wrote it.
    kvm_wall_clock: AtomicU64,
    /// Resets the guest asked for (reboots), since creation.
    guest_resets: AtomicU64,
}

static VMS: Mutex<BTreeMap<u32, Arc<Vm>>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Adapter: the loaders write through the nested page table's frames.
struct LoaderMem<'a>(&'a GuestMemory);

impl loader::GuestMemory for LoaderMem<'_> {
    fn ram_size(&self) -> u64 {
        self.0.size()
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        if self.0.write(gpa, data) { Ok(()) } else { Err(MemError { gpa, len: data.len() as u64 }) }
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if self.0.read(gpa, buf) { Ok(()) } else { Err(MemError { gpa, len: buf.len() as u64 }) }
    }
}

/// A frame from the virtual switch for NIC `slot` of VM `vm` (dropped
/// if the VM is gone or not running).
pub fn deliver_frame(vm: u32, slot: usize, frame: &[u8]) {
    if let Some(target) = lookup(vm) {
        target.virtio_receive(slot, frame);
    }
}

pub fn lookup(id: u32) -> Option<Arc<Vm>> {
    VMS.lock().get(&id).cloned()
}

pub fn list() -> Vec<u32> {
    VMS.lock().keys().copied().collect()
}

/// Why a VM operation failed: what the caller gets instead of a bare errno
/// and a message (`vmk_calls` turns it into both).
#[derive(Debug)]
pub enum VmError {
    /// No usable VMX or SVM on this host (with the reason found at boot).
    NoVirtualization(&'static str),
    /// This CPU could not enter VMX or SVM operation.
    CpuInit(&'static str),
    /// The VM's resource group or a vCPU world was refused.
    Scheduler(vmkernel::sched::SchedError),
    /// The host cannot reserve the guest's RAM (MiB asked for, MiB left).
    OutOfMemory { mib: u32, available_mib: u64 },
    /// The ACPI tables or the MP table did not fit the guest's memory.
    Firmware(&'static str, vmkernel::vmm::firmware::FirmwareError),
    /// The kernel image cannot be loaded (its path, the loader's reason).
    BadImage(String, loader::LoadError),
    /// The VM's virtio devices could not be set up (errno, reason).
    Devices(i64, String),
    /// No VM has this id.
    NoSuchVm(u32),
    /// The VM is not in a state that allows the operation.
    WrongState(VmStateNeeded),
    /// The guest has not enabled the ACPI power-button event.
    PowerButtonIgnored,
    /// A reset's stop did not finish in time.
    StopTimedOut,
}

/// What an operation needed the VM to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmStateNeeded {
    PoweredOff,
    Running,
    Paused,
    /// Stopped, with every vCPU world gone.
    Stopped,
    /// Not running (destroy).
    NotRunning,
}

impl VmError {
    /// The negative errno the VMkernel API returns for it.
    pub fn errno(&self) -> i64 {
        const ENOENT: i64 = 2;
        const ENOEXEC: i64 = 8;
        const EAGAIN: i64 = 11;
        const ENOMEM: i64 = 12;
        const EBUSY: i64 = 16;
        const ENODEV: i64 = 19;
        const EINVAL: i64 = 22;
        match self {
            VmError::NoVirtualization(_) | VmError::CpuInit(_) => -ENODEV,
            VmError::Scheduler(e) => api::errno_for(e),
            VmError::OutOfMemory { .. } => -ENOMEM,
            VmError::Firmware(..) => -EINVAL,
            VmError::BadImage(..) => -ENOEXEC,
            VmError::Devices(errno, _) => *errno,
            VmError::NoSuchVm(_) => -ENOENT,
            VmError::WrongState(_) | VmError::StopTimedOut => -EBUSY,
            VmError::PowerButtonIgnored => -EAGAIN,
        }
    }
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmError::NoVirtualization(why) => write!(f, "no usable hardware virtualization: {why}"),
            VmError::CpuInit(why) => f.write_str(why),
            VmError::Scheduler(e) => write!(f, "{e}"),
            VmError::OutOfMemory { mib, available_mib } => {
                write!(f, "not enough host memory for {mib} MiB of guest RAM ({available_mib} MiB unreserved: a VM's RAM is reserved in full when it is created)")
            }
            VmError::Firmware(what, e) => write!(f, "cannot build the {what}: {e:?}"),
            VmError::BadImage(kernel, e) => write!(f, "cannot load {kernel}: {e:?}"),
            VmError::Devices(_, why) => f.write_str(why),
            VmError::NoSuchVm(id) => write!(f, "no VM {id}"),
            VmError::WrongState(VmStateNeeded::PoweredOff) => f.write_str("the VM is not powered off"),
            VmError::WrongState(VmStateNeeded::Running) => f.write_str("the VM is not running"),
            VmError::WrongState(VmStateNeeded::Paused) => f.write_str("the VM is not paused"),
            VmError::WrongState(VmStateNeeded::Stopped) => f.write_str("the VM is still stopping"),
            VmError::WrongState(VmStateNeeded::NotRunning) => f.write_str("the VM is running: stop it first"),
            VmError::PowerButtonIgnored => f.write_str("the guest does not handle the ACPI power button"),
            VmError::StopTimedOut => f.write_str("the vCPUs did not stop"),
        }
    }
}

/// Writes what firmware would leave in guest memory (ACPI tables with the
/// MADT for every vCPU, an MP table) and loads the kernel and modules.
fn load_guest(memory: &GuestMemory, config: &VmConfig, image: &[u8], modules: &[ModuleImage]) -> Result<VcpuState, VmError> {
    let mut lm = LoaderMem(memory);
    let mut fw = vmkernel::vmm::firmware::FirmwareTablesConfig::new(config.vcpus);
    fw.virtio_mmio_slots = VirtioSlots::occupied(config);
    let acpi = vmkernel::vmm::firmware::build_acpi(&mut lm, &fw).map_err(|e| VmError::Firmware("ACPI tables", e))?;
    vmkernel::vmm::firmware::build_mp_table(&mut lm, &fw).map_err(|e| VmError::Firmware("MP table", e))?;
    let loaded = match config.format {
        api::KernelFormat::Multiboot => {
            let mods: Vec<loader::multiboot::Module> = modules.iter().map(|m| loader::multiboot::Module { image: &m.image, string: &m.string }).collect();
            loader::multiboot::load(&mut lm, image, &config.kernel, &config.cmdline, &mods).map(|(state, _)| state)
        }
        api::KernelFormat::Flat { load, entry, real_mode: true } => {
            loader::flat::load_real(&mut lm, image, (load >> 4) as u16, (load & 0xf) as u16, 0xfffe).map(|mut s| {
                let (cs, ip) = ((entry >> 4) as u16, (entry & 0xf) as u64);
                s.cs = loader::Segment::real(cs, true);
                s.regs.rip = ip;
                s
            })
        }
        api::KernelFormat::Flat { load, entry, real_mode: false } => loader::flat::load_protected32(&mut lm, image, load, entry, load),
        api::KernelFormat::Elf64 => loader::long_mode::load_elf64(&mut lm, image, None),
        // The initrd, if any, is the one module (see `vmk_calls::vm_create`).
        api::KernelFormat::Linux => {
            let initrd = modules.first().map(|m| &m.image[..]);
            loader::linux::load(&mut lm, image, initrd, &config.cmdline, acpi.rsdp).map(|(state, _)| state)
        }
    };
    loaded.map_err(|e| VmError::BadImage(config.kernel.clone(), e))
}

/// The paravirtual clock of a power-on: 0 now, at the host's TSC rate (the
/// guest's TSC is the host's until it writes IA32_TSC).
fn new_clock() -> KvmClock {
    KvmClock::new(cpu::rdtsc(), time::tsc_hz())
}

fn new_platform(config: &VmConfig, size: u64) -> Platform {
    Platform::new(&PlatformConfig {
        vcpus: config.vcpus as usize,
        ram_below_4g: size,
        ram_above_4g: 0,
        wall_clock_unix_secs: (crate::uw::files::realtime_ns() / 1_000_000_000) as i64,
        tsc_khz: time::tsc_hz() / 1000,
        // The guest reads the host's TSC (offset 0 until it writes IA32_TSC).
        tsc_base: time::tsc_at_boot(),
        console_ring: 64 * 1024,
        // The LAPIC model implements x2APIC (MSRs 0x800-0x8ff) and CPUID
        // offers it: guests then reach the APIC by MSR exits, not MMIO decode.
        x2apic: true,
        phys_addr_bits: match cpu::cpuid(0x8000_0000, 0).eax {
            m if m >= 0x8000_0008 => cpu::cpuid(0x8000_0008, 0).eax as u8,
            _ => 36,
        },
    })
}

/// Creates a VM: its resource group, memory, platform, and the kernel
/// loaded; nothing is left behind if any step fails.
pub fn create(config: VmConfig, kernel_image: Vec<u8>, modules: Vec<ModuleImage>) -> Result<Arc<Vm>, VmError> {
    if hv::backend().is_none() {
        return Err(VmError::NoVirtualization(hv::unavailable_reason()));
    }
    hv::init_this_cpu().map_err(VmError::CpuInit)?;
    let params = vmkernel::sched::GroupParams {
        shares: config.shares,
        reservation_pct: config.reservation_pct,
        limit_pct: config.limit_pct,
        mem_limit_mib: None,
    };
    let group = world::with_policy(|p| p.create_group(vmkernel::sched::ROOT_GROUP, &alloc::format!("vm-{}", config.name), params))
        .map_err(VmError::Scheduler)?;
    let undo_group = || world::with_policy(|p| p.destroy_group(group).ok());
    let size = config.memory_mib as u64 * (1 << 20);
    let Some(memory) = hv::new_guest_memory(size, &MMIO_HOLES) else {
        undo_group();
        return Err(VmError::OutOfMemory { mib: config.memory_mib, available_mib: crate::mm::available_user_frames() / 256 });
    };
    let initial = match load_guest(&memory, &config, &kernel_image, &modules) {
        Ok(s) => s,
        Err(e) => {
            drop(memory);
            undo_group();
            return Err(e);
        }
    };
    let platform = new_platform(&config, size);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let virtio = match VirtioSlots::build(id, &config) {
        Ok(v) => v,
        Err((errno, why)) => {
            drop(memory);
            undo_group();
            return Err(VmError::Devices(errno, why));
        }
    };
    let vcpus = (0..config.vcpus)
        .map(|_| VcpuSlot {
            world: AtomicU64::new(0),
            init: AtomicBool::new(false),
            sipi: AtomicU32::new(0),
            run_ns: AtomicU64::new(0),
            hw_frames: AtomicU64::new(0),
            kvm_system_time: AtomicU64::new(0),
            kicked: AtomicBool::new(false),
        })
        .collect();
    let vm = Arc::new(Vm {
        id,
        config,
        memory,
        platform: Mutex::new(platform),
        virtio,
        image: kernel_image,
        modules,
        state: AtomicU32::new(api::VM_STATE_OFF),
        exit_reason: AtomicU32::new(api::EXIT_REASON_NONE),
        exit_code: AtomicU64::new(0),
        exits: AtomicU64::new(0),
        exit_counts: ExitCounts::default(),
        open_bus: AtomicU64::new(0),
        stop_requested: AtomicBool::new(false),
        stop_reason: Mutex::new(None),
        paused: AtomicBool::new(false),
        live: AtomicU32::new(0),
        stuck: AtomicU32::new(0),
        group,
        vcpus,
        initial: Mutex::new(initial),
        clock: Mutex::new(new_clock()),
        kvm_wall_clock: AtomicU64::new(0),
        guest_resets: AtomicU64::new(0),
    });
    VMS.lock().insert(id, vm.clone());
    Ok(vm)
}

/// What `vcpu_main` gets: the VM and the vCPU's index.
struct VcpuArg {
    vm: Arc<Vm>,
    index: usize,
}

impl Vm {
    pub fn start(self: &Arc<Self>) -> Result<(), VmError> {
        if self.state.load(Ordering::Acquire) == api::VM_STATE_STOPPED {
            // Powering on again after a stop is a reset to the initial state.
            self.reinitialize(false)?;
        }
        if self.state.compare_exchange(api::VM_STATE_OFF, api::VM_STATE_RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(VmError::WrongState(VmStateNeeded::PoweredOff));
        }
        self.spawn_vcpus()
    }

    /// Starts every vCPU world (the state is already RUNNING).
    fn spawn_vcpus(self: &Arc<Self>) -> Result<(), VmError> {
        self.stop_requested.store(false, Ordering::Release);
        self.paused.store(false, Ordering::Release);
        *self.stop_reason.lock() = None;
        self.stuck.store(0, Ordering::Release);
        self.live.store(self.vcpus.len() as u32, Ordering::Release);
        for index in 0..self.vcpus.len() {
            let slot = &self.vcpus[index];
            slot.init.store(false, Ordering::Release);
            slot.sipi.store(0, Ordering::Release);
            slot.run_ns.store(0, Ordering::Relaxed);
            let arg = VcpuArg { vm: self.clone(), index };
            let name = alloc::format!("vcpu{index}:{}", self.config.name);
            // vCPU worlds migrate freely among the CPUs that may run guests
            // (all, except CPU 0 under QEMU TCG: `hv::guest_cpus`; a VMX
            // VMCS follows its world). The set is in place before the
            // world first runs.
            match world::spawn_on(&name, world::WorldKind::Vcpu, self.group, move || vcpu_main(arg), |_| {}, hv::guest_cpus()) {
                Ok(w) => {
                    slot.world.store(w, Ordering::Release);
                }
                Err(e) => {
                    // The vCPUs already started stop at their next exit.
                    self.live.fetch_sub((self.vcpus.len() - index) as u32, Ordering::AcqRel);
                    self.request_stop(api::EXIT_REASON_POWER_OFF, 0);
                    if self.live.load(Ordering::Acquire) == 0 {
                        self.state.store(api::VM_STATE_OFF, Ordering::Release);
                    }
                    return Err(VmError::Scheduler(e));
                }
            }
        }
        Ok(())
    }

    /// Back to the powered-off state after a stop: guest RAM zeroed, the
    /// kernel and firmware tables loaded again, devices reset. A reset the
    /// guest asked for keeps the console output (one log across reboots).
    fn reinitialize(&self, keep_console: bool) -> Result<(), VmError> {
        if self.live.load(Ordering::Acquire) != 0 {
            return Err(VmError::WrongState(VmStateNeeded::Stopped));
        }
        self.memory.clear();
        let initial = load_guest(&self.memory, &self.config, &self.image, &self.modules)?;
        *self.initial.lock() = initial;
        let mut platform = new_platform(&self.config, self.memory.size());
        {
            let mut old = self.platform.lock();
            if keep_console {
                core::mem::swap(platform.serial.output_mut(), old.serial.output_mut());
            }
            *old = platform;
        }
        *self.clock.lock() = new_clock();
        self.kvm_wall_clock.store(0, Ordering::Relaxed);
        self.virtio.reset_all();
        for s in &self.vcpus {
            s.run_ns.store(0, Ordering::Relaxed);
            s.kvm_system_time.store(0, Ordering::Relaxed);
        }
        self.exits.store(0, Ordering::Relaxed);
        for c in &self.exit_counts.0 {
            c.store(0, Ordering::Relaxed);
        }
        self.exit_reason.store(api::EXIT_REASON_NONE, Ordering::Release);
        self.exit_code.store(0, Ordering::Release);
        let _ = self.state.compare_exchange(api::VM_STATE_STOPPED, api::VM_STATE_OFF, Ordering::AcqRel, Ordering::Acquire);
        Ok(())
    }

    /// Hard power off: the vCPU worlds stop at their next exit.
    pub fn stop(&self) {
        self.request_stop(api::EXIT_REASON_POWER_OFF, 0);
    }

    /// Graceful shutdown: presses the ACPI power button. Fails when the
    /// guest has not enabled the power-button event (no ACPI, or no one
    /// listening), since then nothing would happen.
    pub fn shutdown(&self) -> Result<(), VmError> {
        if self.state.load(Ordering::Acquire) != api::VM_STATE_RUNNING {
            return Err(VmError::WrongState(VmStateNeeded::Running));
        }
        let listening = self.platform.lock().press_power_button();
        self.kick_all();
        if listening { Ok(()) } else { Err(VmError::PowerButtonIgnored) }
    }

    /// Hard reset: power off, then on again from the initial state. Blocks
    /// the caller (a user world) until every vCPU has stopped.
    pub fn reset(self: &Arc<Self>) -> Result<(), VmError> {
        if self.state.load(Ordering::Acquire) != api::VM_STATE_RUNNING {
            return Err(VmError::WrongState(VmStateNeeded::Running));
        }
        self.stop();
        let deadline = time::uptime_ns() + 5_000_000_000;
        // The last vCPU out drops `live` to 0 and only then records the
        // stop (state STOPPED): wait for both, or start() finds the VM
        // neither running nor stopped.
        while self.live.load(Ordering::Acquire) != 0 || self.state.load(Ordering::Acquire) != api::VM_STATE_STOPPED {
            if time::uptime_ns() > deadline {
                return Err(VmError::StopTimedOut);
            }
            world::sleep_ns(1_000_000);
        }
        self.start()
    }

    pub fn pause(&self) -> Result<(), VmError> {
        if self.state.load(Ordering::Acquire) != api::VM_STATE_RUNNING {
            return Err(VmError::WrongState(VmStateNeeded::Running));
        }
        self.paused.store(true, Ordering::Release);
        self.kick_all();
        Ok(())
    }

    pub fn resume(&self) -> Result<(), VmError> {
        if !self.paused.swap(false, Ordering::AcqRel) {
            return Err(VmError::WrongState(VmStateNeeded::Paused));
        }
        self.kick_all();
        Ok(())
    }

    fn request_stop(&self, reason: u32, code: u64) {
        {
            let mut r = self.stop_reason.lock();
            if r.is_none() {
                *r = Some((reason, code));
            }
        }
        self.stop_requested.store(true, Ordering::Release);
        self.kick_all();
    }

    /// Makes vCPU `i` look at its state soon: wakes its world if it sleeps
    /// (HLT, wait-for-SIPI, paused) and kicks its CPU out of guest mode.
    /// Returns whether that vCPU's world is queued on this host CPU (and
    /// is not the caller): it then runs only when this world gives way.
    fn kick(&self, i: usize) -> bool {
        if let Some(s) = self.vcpus.get(i) {
            s.kicked.store(true, Ordering::Release);
        }
        let Some(w) = self.vcpus.get(i).map(|s| s.world.load(Ordering::Acquire)) else { return false };
        if w == 0 {
            return false;
        }
        world::wake(w);
        match world::with_policy(|p| p.world_cpu(w)) {
            Some(cpu) if cpu == crate::arch::gdt::cpu_index() && w != world::current_id() => true,
            Some(cpu) => {
                crate::arch::apic::kick_cpu(cpu);
                false
            }
            None => false,
        }
    }

    fn kick_all(&self) {
        for i in 0..self.vcpus.len() {
            self.kick(i);
        }
    }

    /// Gives the host CPU to vCPUs this one just woke on it (an IPI, INIT,
    /// START-UP): with vCPUs sharing a CPU they would otherwise wait for
    /// this one's slice to end (~40 ms under QEMU TCG), making every IPI
    /// round trip that slow. The scheduler's fairness still decides.
    fn run_woken(&self, woke_here: bool) {
        if woke_here {
            world::yield_now();
        }
    }

    pub fn info(&self) -> VmInfoRecord {
        let mut state = self.state.load(Ordering::Acquire);
        if state == api::VM_STATE_RUNNING && self.paused.load(Ordering::Acquire) {
            state = api::VM_STATE_PAUSED;
        }
        let mut r = VmInfoRecord {
            id: self.id,
            state,
            exit_reason: self.exit_reason.load(Ordering::Acquire),
            vcpus: self.config.vcpus,
            exit_code: self.exit_code.load(Ordering::Acquire),
            memory_mib: self.config.memory_mib as u64,
            exits: self.exits.load(Ordering::Relaxed),
            run_ns: (0..self.vcpus.len()).map(|i| self.vcpu_cpu_ns(i)).sum(),
            console_pos: self.platform.lock().console_output().total_written(),
            group: self.group,
            ..Default::default()
        };
        let n = self.config.name.len().min(api::NAME_LEN);
        r.name[..n].copy_from_slice(&self.config.name.as_bytes()[..n]);
        r
    }

    /// Exit counts by reason, per-vCPU run time and host memory.
    pub fn stats(&self) -> api::VmStatsRecord {
        let mut r = api::VmStatsRecord::default();
        for (i, c) in self.exit_counts.0.iter().enumerate() {
            r.exits_by_kind[i] = c.load(Ordering::Relaxed);
        }
        for i in 0..self.vcpus.len().min(api::MAX_VCPUS as usize) {
            r.vcpu_run_ns[i] = self.vcpu_cpu_ns(i);
        }
        r.guest_frames = self.memory.ram_frames() as u64;
        let vcpu_frames: u64 = self.vcpus.iter().map(|s| s.hw_frames.load(Ordering::Relaxed)).sum();
        r.overhead_frames = self.memory.table_frames() as u64 + vcpu_frames;
        // Disks fill the slots from 0 in configuration order (VirtioSlots::build).
        for (d, counters) in r.disks.iter_mut().enumerate().take(self.config.disks.len()) {
            let Some(s) = self.virtio.get(d) else { continue };
            if let Some(b) = s.device.lock().device().block_stats() {
                *counters = api::DiskCounters { reads: b.reads, writes: b.writes, flushes: b.flushes, bytes_read: b.bytes_read, bytes_written: b.bytes_written, errors: b.errors };
            }
        }
        r
    }

    fn guest_ram(&self) -> GuestRam<'_> {
        GuestRam { memory: &self.memory, holes: &MMIO_HOLES }
    }

    /// A guest access to virtio-mmio slot `slot` (`value`: a write). The
    /// device may run a queue (disk I/O blocks this world); then the slot's
    /// IOAPIC pin follows the device's interrupt level, and frames a NIC
    /// transmitted go through the virtual switch.
    fn virtio_access(&self, slot: usize, offset: u64, size: u8, value: Option<u64>) -> Option<u64> {
        let s = self.virtio.get(slot)?;
        let ram = self.guest_ram();
        let (read, level, frames) = {
            let mut d = s.device.lock();
            let read = match value {
                Some(v) => {
                    d.write(offset, size, v, &ram);
                    0
                }
                None => d.read(offset, size),
            };
            (read, d.irq_level(), d.device_mut().take_transmitted())
        };
        self.platform.lock().set_ioapic_pin(vmk_virtio::mmio::slot_gsi(slot) as usize, level);
        if let Some(port) = s.port {
            let mut kick = false;
            for frame in frames {
                let (vms, k) = crate::net::vswitch::input(port, &frame);
                kick |= k;
                for (vm, to, f) in vms {
                    deliver_frame(vm, to, &f);
                }
            }
            if kick {
                crate::net::kick();
            }
        }
        Some(read)
    }

    /// A frame from the virtual switch for the NIC in `slot`.
    fn virtio_receive(&self, slot: usize, frame: &[u8]) {
        let Some(s) = self.virtio.get(slot) else { return };
        if self.state.load(Ordering::Acquire) != api::VM_STATE_RUNNING {
            return;
        }
        let ram = self.guest_ram();
        let level = {
            let mut d = s.device.lock();
            d.receive(frame, &ram);
            d.irq_level()
        };
        // Only the vCPU the IOAPIC delivered a new interrupt to is woken
        // (a frame that finds the line already high, or the interrupt
        // suppressed, wakes nobody).
        let kicks = {
            let mut p = self.platform.lock();
            p.set_ioapic_pin(vmk_virtio::mmio::slot_gsi(slot) as usize, level);
            p.take_kicks()
        };
        for i in kicks {
            self.kick(i);
        }
    }

    /// An access to guest-physical space with nothing behind it (logged a
    /// few times per VM, then only counted).
    fn note_open_bus(&self, gpa: u64) {
        if self.open_bus.fetch_add(1, Ordering::Relaxed) < 8 {
            log::info!("vm {}: access to {gpa:#x}: no RAM or device there (open bus)", self.id);
        }
    }

    /// CPU time vCPU `i` has used in this power-on (live while it runs).
    fn vcpu_cpu_ns(&self, i: usize) -> u64 {
        let s = &self.vcpus[i];
        let w = s.world.load(Ordering::Acquire);
        let live = if w != 0 { world::with_policy(|p| p.world_used_ns(w)) } else { None };
        live.unwrap_or_else(|| s.run_ns.load(Ordering::Relaxed))
    }

    pub fn console_since(&self, pos: u64, out: &mut Vec<u8>) -> u64 {
        self.platform.lock().console_output().read_since(pos, out)
    }

    /// Raises LINT1 on every vCPU (the NMI line of a PC's chipset).
    pub fn nmi(&self) -> Result<(), VmError> {
        if self.state.load(Ordering::Acquire) != api::VM_STATE_RUNNING {
            return Err(VmError::WrongState(VmStateNeeded::Running));
        }
        {
            let mut p = self.platform.lock();
            for l in p.lapics.iter_mut() {
                l.raise_lint(1);
            }
        }
        self.kick_all();
        Ok(())
    }

    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.platform.lock().console_input(bytes)
    }

    /// The last vCPU world out records why the VM stopped, or powers it on
    /// again when the guest reset it.
    fn vcpu_done(self: &Arc<Self>) {
        if self.live.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let (reason, code) = self.stop_reason.lock().unwrap_or((api::EXIT_REASON_POWER_OFF, 0));
        if reason == REASON_GUEST_RESET {
            let n = self.guest_resets.fetch_add(1, Ordering::Relaxed) + 1;
            log::info!("vm {} ({}): reset by the guest (reset {n}), powering on again", self.id, self.config.name);
            // The VM stays RUNNING throughout (a console follower or
            // `vm wait` sees one power-on).
            let again = self.reinitialize(true).and_then(|_| self.spawn_vcpus());
            match again {
                Ok(()) => return,
                Err(why) => {
                    log::warn!("vm {}: cannot power on again after the guest's reset: {why}", self.id);
                    self.exit_reason.store(api::EXIT_REASON_POWER_OFF, Ordering::Release);
                    self.state.store(api::VM_STATE_STOPPED, Ordering::Release);
                    crate::uw::io_wait::notify();
                    return;
                }
            }
        }
        log::info!("vm {} ({}): stopped (reason {reason}, code {code:#x}, {} exits)", self.id, self.config.name, self.exits.load(Ordering::Relaxed));
        self.exit_reason.store(reason, Ordering::Release);
        self.exit_code.store(code, Ordering::Release);
        self.state.store(api::VM_STATE_STOPPED, Ordering::Release);
        crate::uw::io_wait::notify();
    }

    /// Drains the platform's requests; returns a reason to end the VM.
    fn handle_events(&self) -> Option<(u32, u64)> {
        let events = self.platform.lock().events();
        let mut end = None;
        let mut woke_here = false;
        for e in events {
            match e {
                VmEvent::Exit(val) => end = end.or(Some((api::EXIT_REASON_DEBUG_EXIT, val as u64))),
                VmEvent::ResetVm => end = end.or(Some((REASON_GUEST_RESET, 0))),
                VmEvent::PowerOff => end = end.or(Some((api::EXIT_REASON_POWER_OFF, 0))),
                VmEvent::InitVcpu(i) if i < self.vcpus.len() => {
                    // Only a START-UP after this INIT counts.
                    self.vcpus[i].sipi.store(0, Ordering::Release);
                    self.vcpus[i].init.store(true, Ordering::Release);
                    woke_here |= self.kick(i);
                }
                VmEvent::StartVcpu { vcpu, vector } if vcpu < self.vcpus.len() => {
                    self.vcpus[vcpu].sipi.store(0x100 | vector as u32, Ordering::Release);
                    woke_here |= self.kick(vcpu);
                }
                VmEvent::Kick(i) if i < self.vcpus.len() => woke_here |= self.kick(i),
                _ => {}
            }
        }
        if end.is_none() {
            self.run_woken(woke_here);
        }
        end
    }
}

/// Destroys a VM that is not running; its memory and group go with it.
pub fn destroy(id: u32) -> Result<(), VmError> {
    let vm = lookup(id).ok_or(VmError::NoSuchVm(id))?;
    if vm.state.load(Ordering::Acquire) == api::VM_STATE_RUNNING || vm.live.load(Ordering::Acquire) != 0 {
        return Err(VmError::WrongState(VmStateNeeded::NotRunning));
    }
    VMS.lock().remove(&id);
    let group = vm.group;
    drop(vm);
    // The vCPU worlds (if they ran) have exited; the group is empty now or soon.
    for _ in 0..100 {
        if world::with_policy(|p| p.destroy_group(group).is_ok()) {
            break;
        }
        world::yield_now();
    }
    Ok(())
}

fn vcpu_main(arg: VcpuArg) {
    let VcpuArg { vm, index } = arg;
    let end = vcpu_body(&vm, index);
    // CPU time as the scheduler accounted it (what shares/limits govern).
    let used = world::with_policy(|p| p.world_used_ns(world::current_id())).unwrap_or(0);
    vm.vcpus[index].run_ns.store(used, Ordering::Relaxed);
    if let Some((reason, code)) = end {
        vm.request_stop(reason, code);
    }
    vm.vcpu_done();
}

/// Runs vCPU `index` until the VM stops; returns why, when this vCPU
/// is the one that ends the VM.
fn vcpu_body(vm: &Vm, index: usize) -> Option<(u32, u64)> {
    if let Err(e) = hv::init_this_cpu() {
        log::warn!("vm {}: {e}", vm.config.name);
        return Some((api::EXIT_REASON_UNHANDLED, 0));
    }
    let mut v = match hv::new_vcpu(&vm.memory) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("vm {}: {e}", vm.config.name);
            return Some((api::EXIT_REASON_UNHANDLED, 0));
        }
    };
    /// Counts the vCPU's structures in the VM's statistics while they live.
    struct Counted<'a>(&'a AtomicU64);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.store(0, Ordering::Relaxed);
        }
    }
    vm.vcpus[index].hw_frames.store(v.host_frames() as u64, Ordering::Relaxed);
    let _counted = Counted(&vm.vcpus[index].hw_frames);
    let mut regs = GuestRegs::default();
    // The guest's x87/SSE registers, in their power-on state.
    let mut fpu = crate::arch::context::FpuState::new();
    fpu.reset();
    if index == 0 {
        let initial = *vm.initial.lock();
        v.load_state(&initial, &mut regs);
        log::info!("vm {} ({}): powered on", vm.id, vm.config.name);
    }
    let mut msrs = VirtualMsrs::default();
    let mut debug = DebugRegs::default();
    let mut waiting_for_sipi = index != 0;
    loop {
        if waiting_for_sipi {
            let vector = wait_for_sipi(vm, index)?;
            v.load_state(&VcpuState::real((vector as u16) << 8, 0, 0, 0, 0), &mut regs);
            fpu.reset();
            debug = DebugRegs::default();
        }
        match run_loop(vm, index, &mut *v, &mut regs, &mut fpu, &mut msrs, &mut debug) {
            Stop::Vm(reason, code) => return Some((reason, code)),
            Stop::Requested => return None,
            Stop::Init => waiting_for_sipi = true,
        }
    }
}

/// Wait-for-SIPI: returns the start vector, or None when the VM stops.
fn wait_for_sipi(vm: &Vm, index: usize) -> Option<u8> {
    let slot = &vm.vcpus[index];
    enter_stuck(vm);
    let r = loop {
        if vm.stop_requested.load(Ordering::Acquire) {
            break None;
        }
        // In wait-for-SIPI an INIT changes nothing; a START-UP received
        // after the last INIT (the event handler clears older ones) starts
        // the vCPU.
        slot.init.store(false, Ordering::Release);
        let s = slot.sipi.swap(0, Ordering::AcqRel);
        if s & 0x100 != 0 {
            break Some(s as u8);
        }
        world::block_until(time::uptime_ns() + 100_000_000);
    };
    vm.stuck.fetch_sub(1, Ordering::AcqRel);
    r
}

/// This vCPU cannot run again without help from another one; when none
/// can, the VM has halted for good.
fn enter_stuck(vm: &Vm) {
    if vm.stuck.fetch_add(1, Ordering::AcqRel) + 1 == vm.vcpus.len() as u32 {
        vm.request_stop(api::EXIT_REASON_HALTED, 0);
    }
}

enum Stop {
    /// This vCPU ends the VM.
    Vm(u32, u64),
    /// The VM is stopping (someone asked).
    Requested,
    /// INIT: back to wait-for-SIPI.
    Init,
}

/// The virtual CPU's identity (see `vmm::cpuid`) over this CPU's CPUID.
fn cpuid(leaf: u32, sub: u32, vcpu: usize, vcpus: usize) -> [u32; 4] {
    vmkernel::vmm::cpuid::virtual_cpuid(hv::cpu_model(), leaf, sub, vcpu as u32, vcpus as u32, |l, s| {
        let r = cpu::cpuid(l, s);
        [r.eax, r.ebx, r.ecx, r.edx]
    })
}

fn run_loop(vm: &Vm, index: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs, fpu: &mut crate::arch::context::FpuState, msrs: &mut VirtualMsrs, debug: &mut DebugRegs) -> Stop {
    let count = |k: usize| vm.exit_counts.0[k].fetch_add(1, Ordering::Relaxed);
    // The exit handler completed the guest's instruction (moved RIP past
    // it): an STI / MOV SS shadow the exit reported covered that
    // instruction and has ended, though the VMCB still says "shadow".
    let mut completed = false;
    // The next device deadline (as a host TSC value) the last full pass saw, and
    // whether the next entry may skip that pass (see the CPUID fast path).
    let mut deadline = 0;
    let mut reenter = false;
    let mut cpuid_cache = CpuidCache::default();
    loop {
        if !core::mem::take(&mut reenter)
            && let Some(stop) = before_entry(vm, index, v, debug, completed, &mut deadline)
        {
            return stop;
        }
        let exit = v.run(regs, fpu);
        vm.exits.fetch_add(1, Ordering::Relaxed);
        if cpuid_fast_path(vm, index, v, regs, &exit, deadline, &mut cpuid_cache) {
            completed = true;
            reenter = true;
            continue;
        }
        let now = time::uptime_ns();
        let rip = v.rip();
        // Single-stepping (RFLAGS.TF) over an instruction the VMM completes
        // for the guest: the #DB the CPU would raise after it.
        let single_step = v.rflags() & (1 << 8) != 0;
        match exit {
            Exit::Io { port, string: true, .. } => {
                count(api::VM_EXIT_IO);
                if string_io(vm, index, v, regs, port).is_err() {
                    log::warn!("vm {}: string I/O on port {port:#x} at rip {rip:#x} cannot be emulated", vm.id);
                    return Stop::Vm(api::EXIT_REASON_UNHANDLED, port as u64);
                }
            }
            Exit::Io { port, size, input, next_rip, .. } => {
                count(api::VM_EXIT_IO);
                let mut p = vm.platform.lock();
                p.advance(now);
                if input {
                    let val = p.io_in(port, size) as u64;
                    let mask = (1u64 << (size as u64 * 8)) - 1;
                    regs.gpr[RAX] = (regs.gpr[RAX] & !mask) | (val & mask);
                } else {
                    p.io_out(port, size, regs.gpr[RAX] as u32);
                }
                drop(p);
                v.set_rip(next_rip);
            }
            Exit::Cpuid => {
                count(api::VM_EXIT_CPUID);
                emulate_cpuid(vm, index, regs, &mut cpuid_cache);
                v.set_rip(rip + 2);
            }
            Exit::Msr { write } => {
                count(api::VM_EXIT_MSR);
                let msr = regs.gpr[RCX] as u32;
                let mut p = vm.platform.lock();
                p.advance(now);
                let model = hv::cpu_model();
                let ok = if pvclock::handles_msr(msr) {
                    drop(p);
                    kvmclock_msr(vm, index, msr, write, regs)
                } else if !model.offers_msr(msr) {
                    false
                } else if write {
                    let val = (regs.gpr[RDX] << 32) | (regs.gpr[RAX] & 0xffff_ffff);
                    if msr == 0xc000_0080 {
                        // Only the bits the CPU model offers; LMA is the
                        // processor's (long mode active), not the writer's.
                        let lma = 1 << 10;
                        let ok = val & !model.efer_allowed() == 0;
                        if ok {
                            v.set_ctl(Ctl::Efer, (val & !lma) | (v.ctl(Ctl::Efer) & lma));
                        }
                        ok
                    } else if Platform::handles_msr(msr) {
                        p.msr_write(index, msr, val).is_ok()
                    } else if VirtualMsrs::handles(msr) {
                        match msrs.write(msr, val, cpu::rdtsc()) {
                            Ok(effect) => {
                                match effect {
                                    Some(MsrEffect::SetPat(pat)) => v.set_ctl(Ctl::Pat, pat),
                                    Some(MsrEffect::SetTscOffset(off)) => {
                                        v.set_ctl(Ctl::TscOffset, off);
                                        p.set_tsc_base(index, time::tsc_at_boot().wrapping_add(off));
                                    }
                                    None => {}
                                }
                                true
                            }
                            Err(_) => false,
                        }
                    } else {
                        false
                    }
                } else {
                    let val = match msr {
                        0xc000_0080 => Some(v.ctl(Ctl::Efer)),
                        m if Platform::handles_msr(m) => p.msr_read(index, m).ok(),
                        m if VirtualMsrs::handles(m) => msrs.read(m, cpu::rdtsc()).ok(),
                        _ => None,
                    };
                    if let Some(val) = val {
                        regs.gpr[RAX] = val & 0xffff_ffff;
                        regs.gpr[RDX] = val >> 32;
                    }
                    val.is_some()
                };
                if ok {
                    v.set_rip(rip + 2);
                } else {
                    // Unknown MSR: #GP in the guest, not a host problem.
                    v.inject(Event::gp());
                }
            }
            Exit::Hlt => {
                count(api::VM_EXIT_HLT);
                v.set_rip(rip + 1);
                if let Some(stop) = halt(vm, index, v) {
                    return stop;
                }
            }
            Exit::Pause => {
                count(api::VM_EXIT_PAUSE);
                v.set_rip(rip + 2);
                world::yield_now();
            }
            Exit::Shutdown => return Stop::Vm(api::EXIT_REASON_TRIPLE_FAULT, rip),
            Exit::Hypercall => {
                count(api::VM_EXIT_HYPERCALL);
                // Hypercall ABI: RAX = function. 0: version → 1;
                // 1: console write (RBX = gpa, RCX = len); 2: exit (RBX = code).
                match regs.gpr[RAX] {
                    0 => regs.gpr[RAX] = 1,
                    1 => {
                        let len = (regs.gpr[RCX] as usize).min(4096);
                        let mut b = alloc::vec![0u8; len];
                        if vm.memory.read(regs.gpr[RBX], &mut b) {
                            let mut p = vm.platform.lock();
                            for &c in &b {
                                p.io_out(0x3f8, 1, c as u32);
                            }
                            regs.gpr[RAX] = len as u64;
                        } else {
                            regs.gpr[RAX] = u64::MAX;
                        }
                    }
                    2 => return Stop::Vm(api::EXIT_REASON_DEBUG_EXIT, regs.gpr[RBX]),
                    _ => regs.gpr[RAX] = u64::MAX,
                }
                v.set_rip(rip + 3);
            }
            Exit::ExternalInterrupt | Exit::Nmi => {
                count(api::VM_EXIT_INTERRUPT);
                cpu::take_pending_interrupts();
                // The slice is over, or a world woken for this CPU comes
                // first (wake-up preemption: the kick IPI got us here).
                if world::slice_expired(time::uptime_ns()) || world::take_resched() {
                    world::yield_now();
                }
            }
            Exit::InterruptWindow => {
                count(api::VM_EXIT_INTERRUPT_WINDOW);
                v.set_interrupt_window(false);
            }
            Exit::NmiWindow => {
                count(api::VM_EXIT_INTERRUPT_WINDOW);
                v.set_nmi_window(false);
            }
            // #UD: the virtual CPU has no XSAVE.
            Exit::Xsetbv => {
                count(api::VM_EXIT_OTHER);
                v.inject(Event::ud());
            }
            // Guest RAM backed on first touch (`hv::guest_memory`).
            Exit::NestedPageFault { gpa, .. } if vm.memory.is_ram(gpa, 1) => {
                count(api::VM_EXIT_RAM_FAULT);
                if let Err(e) = vm.memory.back(gpa) {
                    log::warn!("vm {}: no host memory for guest RAM at {gpa:#x} ({e:?}; {} of its frames backed)", vm.id, vm.memory.ram_frames());
                    return Stop::Vm(api::EXIT_REASON_UNHANDLED, gpa);
                }
            }
            Exit::NestedPageFault { gpa, .. } => {
                count(api::VM_EXIT_MMIO);
                if emulate_mmio(vm, index, v, regs).is_err() {
                    log::warn!("vm {}: access to {gpa:#x} at rip {rip:#x}: the instruction cannot be emulated", vm.id);
                    return Stop::Vm(api::EXIT_REASON_UNHANDLED, gpa);
                }
            }
            Exit::Init => return Stop::Init,
            Exit::Cr8 { write, gpr, next_rip } => {
                count(api::VM_EXIT_OTHER);
                if let Err(e) = cr8_access(vm, index, v, regs, write, gpr, next_rip) {
                    v.inject(e);
                }
            }
            Exit::MovCr { write, cr } => {
                count(api::VM_EXIT_OTHER);
                if let Err(e) = mov_cr(vm, index, v, regs, write, cr) {
                    v.inject(e);
                }
            }
            Exit::MovDr { write, dr, operand } => {
                count(api::VM_EXIT_OTHER);
                if let Err(e) = mov_dr(vm, v, regs, debug, write, dr, operand) {
                    v.inject(e);
                }
            }
            Exit::DebugTrap { dr6 } => {
                count(api::VM_EXIT_OTHER);
                debug.dr6 |= dr6 & 0x600f;
                v.inject(Event::Exception { vector: 1, error_code: None });
            }
            // Intercepted only so the host stays in control (#AC): the
            // guest gets its exception as if nothing had intervened.
            Exit::Exception { vector, error_code } => {
                count(api::VM_EXIT_OTHER);
                v.inject(Event::Exception { vector, error_code });
            }
            Exit::Handled => {
                count(api::VM_EXIT_OTHER);
            }
            other => {
                log::warn!("vm {}: vcpu {index}: unhandled exit {other:?} at rip {rip:#x}", vm.id);
                return Stop::Vm(api::EXIT_REASON_UNHANDLED, 0);
            }
        }
        completed = v.rip() != rip;
        if completed && single_step && !v.event_pending() {
            debug.dr6 |= 1 << 14; // BS
            v.inject(Event::Exception { vector: 1, error_code: None });
        }
        if let Some((reason, code)) = vm.handle_events() {
            return Stop::Vm(reason, code);
        }
    }
}

/// Everything a vCPU checks before it enters the guest: stop, INIT and
/// pause requests, the CPU it runs on, interrupts to inject, breakpoints.
/// Leaves in `deadline` the next time a device model has work.
fn before_entry(vm: &Vm, index: usize, v: &mut dyn VcpuHw, debug: &DebugRegs, completed: bool, deadline: &mut u64) -> Option<Stop> {
    let slot = &vm.vcpus[index];
    loop {
        // A kick from now on (a device, another vCPU, a request) sends the
        // next CPUID exit through this pass again.
        slot.kicked.store(false, Ordering::Release);
        if vm.stop_requested.load(Ordering::Acquire) {
            return Some(Stop::Requested);
        }
        if slot.init.load(Ordering::Acquire) {
            return Some(Stop::Init);
        }
        while vm.paused.load(Ordering::Acquire) && !vm.stop_requested.load(Ordering::Acquire) {
            world::block_until(time::uptime_ns() + 100_000_000);
        }
        if !hv::may_enter_guest_here() {
            // Not reached while the scheduler honours the vCPU's CPU set;
            // if it ever is, move rather than enter the guest here.
            let me = world::current_id();
            world::with_policy(|p| p.set_allowed_cpus(me, hv::guest_cpus()).ok());
            world::yield_now();
            continue;
        }
        *deadline = time::tsc_at_uptime(inject_interrupt(vm, index, v, completed));
        load_debug_regs(v, debug);
        return None;
    }
}

/// CPUID, the commonest exit of real guests (serialising, feature probes
/// in loops), handled before the generic dispatch: the result, RIP past
/// it, and straight back into the guest when nothing else can need this
/// vCPU — no kick since the last full pass (`before_entry`: stop, INIT,
/// pause, interrupts from devices or other vCPUs all kick), no device
/// deadline due, no single-step to report. False: not handled here.
#[inline]
fn cpuid_fast_path(vm: &Vm, index: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs, exit: &Exit, deadline: u64, cache: &mut CpuidCache) -> bool {
    if !matches!(exit, Exit::Cpuid) || vm.vcpus[index].kicked.load(Ordering::Acquire) || cpu::rdtsc() >= deadline {
        return false;
    }
    // RIP past CPUID (two bytes) first: a single-stepping guest takes the
    // generic path, which reports the #DB; then nothing has changed yet.
    if !v.skip_instruction_unless_stepping(2) {
        return false;
    }
    vm.exit_counts.0[api::VM_EXIT_CPUID].fetch_add(1, Ordering::Relaxed);
    emulate_cpuid(vm, index, regs, cache);
    true
}

/// The last CPUID leaf a vCPU asked for and the virtual CPU's answer:
/// apart from the APIC bit (applied after it) an answer never changes for
/// a vCPU, and guests repeat the same leaf in loops.
#[derive(Default)]
struct CpuidCache {
    last: Option<((u32, u32), [u32; 4])>,
}

/// CPUID as the virtual CPU answers it (`vmm::cpuid`), into RAX..RDX.
/// Inline: the answer cached for the same leaf, no other leaf asked for
/// since, and not one whose APIC bit depends on the LAPIC — the exit fast
/// path's case; everything else in `emulate_cpuid_slow`.
#[inline]
fn emulate_cpuid(vm: &Vm, index: usize, regs: &mut GuestRegs, cache: &mut CpuidCache) {
    let (leaf, sub) = (regs.gpr[RAX] as u32, regs.gpr[RCX] as u32);
    match cache.last {
        Some((key, r)) if key == (leaf, sub) && !matches!(leaf, 1 | 0x8000_0001) => {
            regs.gpr[RAX] = r[0] as u64;
            regs.gpr[RBX] = r[1] as u64;
            regs.gpr[RCX] = r[2] as u64;
            regs.gpr[RDX] = r[3] as u64;
        }
        _ => emulate_cpuid_slow(vm, index, regs, cache),
    }
}

#[inline(never)]
#[cold]
fn emulate_cpuid_slow(vm: &Vm, index: usize, regs: &mut GuestRegs, cache: &mut CpuidCache) {
    let (leaf, sub) = (regs.gpr[RAX] as u32, regs.gpr[RCX] as u32);
    let mut r = match cache.last {
        Some((key, r)) if key == (leaf, sub) => r,
        _ => {
            let r = cpuid(leaf, sub, index, vm.vcpus.len());
            cache.last = Some(((leaf, sub), r));
            r
        }
    };
    // CPUID.1:EDX.APIC (and AMD's copy) follows IA32_APIC_BASE.EN.
    if matches!(leaf, 1 | 0x8000_0001) && !vm.platform.lock().lapic_enabled(index) {
        r[3] &= !(1 << 9);
    }
    regs.gpr[RAX] = r[0] as u64;
    regs.gpr[RBX] = r[1] as u64;
    regs.gpr[RCX] = r[2] as u64;
    regs.gpr[RDX] = r[3] as u64;
}

/// RDMSR/WRMSR of a kvmclock MSR: writes fill in the guest's time
/// structures. False: #GP (the address is not guest RAM).
fn kvmclock_msr(vm: &Vm, index: usize, msr: u32, write: bool, regs: &mut GuestRegs) -> bool {
    let slot = &vm.vcpus[index];
    let reg = if msr == pvclock::MSR_KVM_SYSTEM_TIME_NEW { &slot.kvm_system_time } else { &vm.kvm_wall_clock };
    if !write {
        let val = reg.load(Ordering::Relaxed);
        regs.gpr[RAX] = val & 0xffff_ffff;
        regs.gpr[RDX] = val >> 32;
        return true;
    }
    let val = (regs.gpr[RDX] << 32) | (regs.gpr[RAX] & 0xffff_ffff);
    let clock = *vm.clock.lock();
    let ok = match clock.msr_write(msr, val, time::realtime_ns(), cpu::rdtsc()) {
        Some(ClockWrite::TimeInfo { gpa, bytes }) => vm.memory.write(gpa, &bytes),
        Some(ClockWrite::WallClock { gpa, bytes }) => vm.memory.write(gpa, &bytes),
        Some(ClockWrite::Disabled) => true,
        None => false,
    };
    if ok {
        reg.store(val, Ordering::Relaxed);
    }
    ok
}

/// HLT: sleep until an interrupt is pending for this vCPU (a device timer
/// due, an IPI, console input), the VM stops, or an INIT arrives.
fn halt(vm: &Vm, index: usize, v: &mut dyn VcpuHw) -> Option<Stop> {
    let if_on = v.rflags() & (1 << 9) != 0;
    let slot = &vm.vcpus[index];
    let mut stuck = false;
    let r = loop {
        if vm.stop_requested.load(Ordering::Acquire) {
            break Some(Stop::Requested);
        }
        if slot.init.load(Ordering::Acquire) {
            break Some(Stop::Init);
        }
        let now = time::uptime_ns();
        let (pending, nmi, deadline) = {
            let mut p = vm.platform.lock();
            p.advance(now);
            (p.pending_interrupt(index).is_some(), p.lapics.get(index).is_some_and(|l| l.nmi_pending()) && !v.nmi_blocked(), p.next_deadline())
        };
        if nmi || (if_on && pending) {
            break None;
        }
        if let Some((reason, code)) = vm.handle_events() {
            break Some(Stop::Vm(reason, code));
        }
        if !if_on && !stuck {
            // Halted with interrupts off: only an NMI or INIT wakes it.
            stuck = true;
            enter_stuck(vm);
        }
        let until = if if_on { deadline.unwrap_or(now + 100_000_000) } else { now + 100_000_000 };
        world::block_until(until.max(now + 20_000));
    };
    if stuck {
        vm.stuck.fetch_sub(1, Ordering::AcqRel);
    }
    r
}

/// Injects the highest pending interrupt (or NMI) when the guest can take
/// it, or asks for an exit as soon as it can. `completed`: the VMM just
/// completed the instruction the guest exited on, so an interrupt shadow
/// the backend still reports is over (`sti; hlt` must take the interrupt
/// that ends the HLT before the next instruction, as on hardware).
/// Returns the next time (guest ns) a device model has work: until then,
/// and without a kick, no interrupt can become pending for this vCPU.
/// 0 (no fast re-entry) while an event waits for delivery.
fn inject_interrupt(vm: &Vm, index: usize, v: &mut dyn VcpuHw, completed: bool) -> u64 {
    if v.event_pending() {
        return 0;
    }
    let mut p = vm.platform.lock();
    p.advance(time::uptime_ns());
    let deadline = p.next_deadline().unwrap_or(u64::MAX);
    inject_pending(&mut p, index, v, completed);
    deadline
}

fn inject_pending(p: &mut Platform, index: usize, v: &mut dyn VcpuHw, completed: bool) {
    // An NMI waits (latched) while the guest still handles the last one.
    if p.lapics.get(index).is_some_and(|l| l.nmi_pending()) {
        if !v.nmi_blocked() && p.take_nmi(index) {
            v.inject(Event::Nmi);
            return;
        }
        v.set_nmi_window(true);
    }
    let Some(vec) = p.pending_interrupt(index) else { return };
    let if_on = v.rflags() & (1 << 9) != 0;
    if !if_on || (v.interrupt_shadow() && !completed) {
        v.set_interrupt_window(true);
        return;
    }
    let vec = p.ack_interrupt(index, vec);
    v.inject(Event::ExternalInterrupt(vec));
}

/// The guest's breakpoints in the hardware, lazily: while its DR7 arms
/// none, it runs with DR7 0x400 and the CPU's DR0-DR3 are left as they
/// are (no guest can read them: every MOV DR exits to the software copy).
/// While it arms some, its DR0-DR3 are loaded before each entry (the vCPU
/// may have moved, another VM may have run here) and it runs with its
/// DR7 (GD cleared: MOV DR exits anyway). #DB always exits (CVE-2015-8104).
fn load_debug_regs(v: &mut dyn VcpuHw, debug: &DebugRegs) {
    let want = if debug.dr7 & 0xff != 0 {
        v.set_breakpoint_addresses(debug.address);
        (debug.dr7 & !(1 << 13)) | 0x400
    } else {
        0x400
    };
    if v.ctl(Ctl::Dr7) != want {
        v.set_ctl(Ctl::Dr7, want);
    }
}

/// Segment bases by the decoder's segment numbers (ES, CS, SS, DS, FS, GS).
fn seg_bases(v: &dyn VcpuHw) -> [u64; 6] {
    [SegReg::Es, SegReg::Cs, SegReg::Ss, SegReg::Ds, SegReg::Fs, SegReg::Gs].map(|s| v.segment(s).base)
}

fn paging(v: &dyn VcpuHw) -> vmkernel::vmm::guest_paging::PagingState {
    vmkernel::vmm::guest_paging::PagingState {
        cr0: v.ctl(Ctl::Cr0),
        cr3: v.ctl(Ctl::Cr3),
        cr4: v.ctl(Ctl::Cr4),
        efer: v.ctl(Ctl::Efer),
        max_phys_bits: 0,
    }
}

/// Guest memory and devices as the instruction emulator sees them.
struct MmioAccess<'a> {
    vm: &'a Vm,
    vcpu: usize,
    paging: vmkernel::vmm::guest_paging::PagingState,
    bases: [u64; 6],
}

impl MmioAccess<'_> {
    fn gpa(&self, seg: vmkernel::vmm::decode::Seg, ea: u64, write: bool) -> Result<u64, vmkernel::vmm::decode::AccessError> {
        use vmkernel::vmm::guest_paging::{Access, translate};
        let linear = self.bases[seg as usize].wrapping_add(ea);
        let mem = &self.vm.memory;
        let mut read = |gpa: u64, size: u8| {
            let mut b = [0u8; 8];
            mem.read(gpa, &mut b[..size as usize]).then(|| u64::from_le_bytes(b))
        };
        let acc = if write { Access::WRITE } else { Access::READ };
        translate(&self.paging, linear, acc, &mut read).map(|t| t.gpa).map_err(|_| vmkernel::vmm::decode::AccessError::Unhandled)
    }
}

impl vmkernel::vmm::decode::MemoryAccess for MmioAccess<'_> {
    fn read(&mut self, seg: vmkernel::vmm::decode::Seg, ea: u64, size: u8) -> Result<u64, vmkernel::vmm::decode::AccessError> {
        let gpa = self.gpa(seg, ea, false)?;
        let size = size.clamp(1, 8);
        if let Some((slot, off)) = vmk_virtio::mmio::slot_of(gpa)
            && let Some(v) = self.vm.virtio_access(slot, off, size, None)
        {
            return Ok(v);
        }
        let mut p = self.vm.platform.lock();
        if p.mmio_claims(self.vcpu, gpa) {
            return Ok(p.mmio_read(self.vcpu, gpa, size));
        }
        drop(p);
        let mut b = [0u8; 8];
        if self.vm.memory.read(gpa, &mut b[..size as usize]) {
            Ok(u64::from_le_bytes(b))
        } else {
            // Nothing there: an open bus reads all ones, as on a PC.
            self.vm.note_open_bus(gpa);
            Ok(u64::MAX >> (64 - 8 * size as u32))
        }
    }
    fn write(&mut self, seg: vmkernel::vmm::decode::Seg, ea: u64, size: u8, value: u64) -> Result<(), vmkernel::vmm::decode::AccessError> {
        let gpa = self.gpa(seg, ea, true)?;
        let size = size.clamp(1, 8);
        if let Some((slot, off)) = vmk_virtio::mmio::slot_of(gpa)
            && self.vm.virtio_access(slot, off, size, Some(value)).is_some()
        {
            return Ok(());
        }
        let mut p = self.vm.platform.lock();
        if p.mmio_claims(self.vcpu, gpa) {
            p.mmio_write(self.vcpu, gpa, size, value);
            return Ok(());
        }
        drop(p);
        if !self.vm.memory.write(gpa, &value.to_le_bytes()[..size as usize]) {
            // Nothing there: the write goes nowhere.
            self.vm.note_open_bus(gpa);
        }
        Ok(())
    }
}

/// MOV to/from CR8: the LAPIC model's task priority (TPR[7:4]); moves RIP
/// to `next_rip`, or returns the exception instead. On SVM every CR8 access
/// exits: besides keeping TPR and CR8 one register, that keeps a guest's
/// CR8 write while a virtual interrupt is pending out of QEMU TCG, which
/// aborts in that path (`mov cr8` + self-IPI + `sti; hlt`; the
/// `cr8-self-ipi` guest-suite check repeats it).
fn cr8_access(vm: &Vm, index: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs, write: bool, gpr: u8, next_rip: u64) -> Result<(), Event> {
    let mut p = vm.platform.lock();
    p.advance(time::uptime_ns());
    let g = gpr as usize & 15;
    if write {
        let val = regs.gpr[g];
        if val > 15 {
            // Reserved CR8 bits: #GP, as on hardware.
            return Err(Event::gp());
        }
        p.cr8_write(index, val);
    } else {
        regs.gpr[g] = p.cr8_read(index);
    }
    drop(p);
    v.set_rip(next_rip);
    Ok(())
}

/// SVM's CR-access exits (CR4 writes, CR8 both ways): decode the
/// instruction, then emulate it against the CPU model.
fn mov_cr(vm: &Vm, index: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs, write: bool, cr: u8) -> Result<(), Event> {
    let (bytes, n, mode) = fetch_insn(vm, v);
    let m = match vmkernel::vmm::mov_cr::decode_mov_cr(bytes.get(..n).unwrap_or(&[]), mode) {
        Some(m) if m.write == write && m.cr == cr => m,
        _ => return Err(Event::ud()),
    };
    let next_rip = v.rip() + m.len as u64;
    match (cr, write) {
        (8, _) => cr8_access(vm, index, v, regs, write, m.gpr, next_rip),
        (4, true) => {
            let mut value = regs.gpr[m.gpr as usize & 15];
            if mode != vmkernel::vmm::decode::CpuMode::Bits64 {
                value &= 0xffff_ffff;
            }
            let long = v.ctl(Ctl::Efer) & (1 << 10) != 0;
            if !hv::cpu_model().cr4_write_allowed(v.ctl(Ctl::Cr4), value, long, v.ctl(Ctl::Cr3)) {
                return Err(Event::gp());
            }
            v.set_ctl(Ctl::Cr4, value);
            v.set_rip(next_rip);
            Ok(())
        }
        _ => Err(Event::ud()),
    }
}

/// MOV to/from a debug register against the guest's software copy (see
/// `vmm::debug_regs`); moves RIP past the instruction, or returns the
/// exception it raises instead.
fn mov_dr(vm: &Vm, v: &mut dyn VcpuHw, regs: &mut GuestRegs, debug: &mut DebugRegs, write: bool, dr: u8, operand: Option<(u8, u64)>) -> Result<(), Event> {
    let (gpr, next_rip, mode) = match operand {
        Some((gpr, next_rip)) => (gpr, next_rip, cpu_mode(&paging(v), v)),
        None => {
            // SVM says which DR, not which GPR: decode (and check it is
            // still the instruction that exited).
            let (bytes, n, mode) = fetch_insn(vm, v);
            match debug_regs::decode_mov_dr(&bytes[..n], mode) {
                Some(m) if m.write == write && m.dr == dr => (m.gpr, v.rip() + m.len as u64, mode),
                _ => return Err(Event::ud()),
            }
        }
    };
    let cr4_de = v.ctl(Ctl::Cr4) & (1 << 3) != 0;
    let fault = |f: DrFault| match f {
        DrFault::InvalidOpcode => Event::ud(),
        DrFault::GeneralProtection => Event::gp(),
    };
    let g = gpr as usize & 15;
    if write {
        debug.write(dr, regs.gpr[g], cr4_de, mode).map_err(fault)?;
    } else {
        let value = debug.read(dr, cr4_de).map_err(fault)?;
        regs.gpr[g] = if mode == vmkernel::vmm::decode::CpuMode::Bits64 { value } else { value & 0xffff_ffff };
    }
    v.set_rip(next_rip);
    Ok(())
}

/// The mode the guest's code executes in (from CR0, EFER, RFLAGS, CS).
fn cpu_mode(pg: &vmkernel::vmm::guest_paging::PagingState, v: &dyn VcpuHw) -> vmkernel::vmm::decode::CpuMode {
    let cs = v.segment(SegReg::Cs);
    vmkernel::vmm::decode::CpuMode::from_state(pg.cr0 & 1 != 0, pg.efer & (1 << 10) != 0, v.rflags() & (1 << 17) != 0, cs.attr & (1 << 9) != 0, cs.attr & (1 << 10) != 0)
}

/// The instruction bytes at the guest's RIP (up to 15; they may cross a
/// page) and the mode they execute in.
fn fetch_insn(vm: &Vm, v: &dyn VcpuHw) -> ([u8; 15], usize, vmkernel::vmm::decode::CpuMode) {
    use vmkernel::vmm::guest_paging::{Access, translate};
    let pg = paging(v);
    let cs = v.segment(SegReg::Cs);
    let mode = cpu_mode(&pg, v);
    let rip = v.rip();
    let mut bytes = [0u8; 15];
    let mut n = 0;
    while n < bytes.len() {
        let linear = cs.base.wrapping_add(rip).wrapping_add(n as u64);
        let mem = &vm.memory;
        let mut read = |gpa: u64, size: u8| {
            let mut b = [0u8; 8];
            mem.read(gpa, &mut b[..size as usize]).then(|| u64::from_le_bytes(b))
        };
        let Ok(t) = translate(&pg, linear, Access::FETCH, &mut read) else { break };
        let chunk = ((4096 - (t.gpa & 0xfff)) as usize).min(bytes.len() - n);
        if !vm.memory.read(t.gpa, &mut bytes[n..n + chunk]) {
            break;
        }
        n += chunk;
    }
    (bytes, n, mode)
}

/// Emulates the instruction at the guest's RIP that touched device memory
/// (QEMU's SVM gives no decode assists: fetch, decode, execute here).
fn emulate_mmio(vm: &Vm, vcpu: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs) -> Result<(), ()> {
    use vmkernel::vmm::decode::{self, Regs};
    let (bytes, n, mode) = fetch_insn(vm, v);
    let insn = match decode::decode(bytes.get(..n).unwrap_or(&[]), mode) {
        Ok(i) => i,
        // An encoding the CPU itself refuses: #UD, as on hardware.
        Err(decode::DecodeError::Invalid) => {
            v.inject(Event::ud());
            return Ok(());
        }
        Err(_) => return Err(()),
    };
    let mut r = Regs { gpr: regs.gpr, rip: v.rip(), rflags: v.rflags() };
    let mut acc = MmioAccess { vm, vcpu, paging: paging(v), bases: seg_bases(v) };
    decode::execute(&insn, &mut r, &mut acc).map_err(|_| ())?;
    regs.gpr = r.gpr;
    v.set_rip(r.rip);
    v.set_rflags(r.rflags);
    Ok(())
}

/// Elements one exit moves at most; a longer REP leaves RIP on the
/// instruction, so the guest re-executes it (and can take interrupts).
const STRING_IO_BATCH: u64 = 1024;

/// INS/OUTS: elements between the port and guest memory at ES:rDI / seg:rSI,
/// honouring the address size, the direction flag and REP.
fn string_io(vm: &Vm, vcpu: usize, v: &mut dyn VcpuHw, regs: &mut GuestRegs, port: u16) -> Result<(), ()> {
    use vmkernel::vmm::decode::{self, MemoryAccess, Seg};
    let (bytes, n, mode) = fetch_insn(vm, v);
    let s = decode::decode_string_io(&bytes[..n], mode).map_err(|_| ())?;
    let mask = s.addr_mask();
    let step = if v.rflags() & (1 << 10) != 0 { (s.size as u64).wrapping_neg() } else { s.size as u64 };
    let set = |reg: &mut u64, val: u64| {
        *reg = if s.addr_bits == 16 { (*reg & !0xffff) | (val & 0xffff) } else { val & mask };
    };
    let mut acc = MmioAccess { vm, vcpu, paging: paging(v), bases: seg_bases(v) };
    let mut left = if s.rep { regs.gpr[RCX] & mask } else { 1 };
    let mut budget = STRING_IO_BATCH;
    while left > 0 && budget > 0 {
        const RSI: usize = 6;
        const RDI: usize = 7;
        if s.output {
            let val = acc.read(s.seg, regs.gpr[RSI] & mask, s.size).map_err(|_| ())?;
            let mut p = vm.platform.lock();
            p.advance(time::uptime_ns());
            p.io_out(port, s.size, val as u32);
            drop(p);
            let next = regs.gpr[RSI].wrapping_add(step);
            set(&mut regs.gpr[RSI], next);
        } else {
            let val = {
                let mut p = vm.platform.lock();
                p.advance(time::uptime_ns());
                p.io_in(port, s.size)
            };
            acc.write(Seg::Es, regs.gpr[RDI] & mask, s.size, val as u64).map_err(|_| ())?;
            let next = regs.gpr[RDI].wrapping_add(step);
            set(&mut regs.gpr[RDI], next);
        }
        left -= 1;
        budget -= 1;
        if s.rep {
            set(&mut regs.gpr[RCX], left);
        }
    }
    if left == 0 {
        let rip = v.rip();
        v.set_rip(rip + s.len as u64);
    }
    Ok(())
}
