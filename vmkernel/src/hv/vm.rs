//! Virtual machines: guest memory, the device platform, and the vCPU world
//! that runs the guest and handles its exits.
//!
//! One vCPU per VM today (configurations asking for more are refused with a
//! clear error until AP start-up is wired to the LAPIC model's INIT/SIPI).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;
use vmkernel::vmk_api::{self as api, VmConfig, VmInfoRecord};
use vmkernel::vmm::event::VmEvent;
use vmkernel::vmm::loader::{self, MemError, VcpuState};
use vmkernel::vmm::platform::{Platform, PlatformConfig};

use super::guest_memory::GuestMemory;
use super::vcpu::{Ctl, Event, Exit, GuestRegs, RAX, RBX, RCX, RDX, SegReg, VcpuHw};
use crate::arch::cpu;
use crate::{time, world};

/// Guest-physical holes left unmapped (MMIO): the IOAPIC and LAPIC pages.
const MMIO_HOLES: [(u64, u64); 2] = [(0xfec0_0000, 0xfec0_1000), (0xfee0_0000, 0xfee0_1000)];

pub struct Vm {
    pub id: u32,
    pub config: VmConfig,
    memory: GuestMemory,
    platform: Mutex<Platform>,
    pub state: AtomicU32,
    pub exit_reason: AtomicU32,
    pub exit_code: AtomicU64,
    pub exits: AtomicU64,
    pub run_ns: AtomicU64,
    stop_requested: AtomicBool,
    pub group: u32,
    vcpu_world: AtomicU64,
    initial: VcpuState,
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

pub fn lookup(id: u32) -> Option<Arc<Vm>> {
    VMS.lock().get(&id).cloned()
}

pub fn list() -> Vec<u32> {
    VMS.lock().keys().copied().collect()
}

/// Creates a VM: its resource group, memory, platform, and the kernel
/// loaded; nothing is left behind if any step fails.
pub fn create(config: VmConfig, kernel_image: &[u8]) -> Result<Arc<Vm>, (i64, String)> {
    const EINVAL: i64 = 22;
    const ENOMEM: i64 = 12;
    const ENODEV: i64 = 19;
    if config.vcpus != 1 {
        return Err((-EINVAL, "only 1 vCPU per VM is supported so far".into()));
    }
    if super::backend().is_none() {
        return Err((-ENODEV, alloc::format!("no usable hardware virtualization: {}", super::unavailable_reason())));
    }
    super::init_this_cpu().map_err(|e| (-ENODEV, String::from(e)))?;
    let params = vmkernel::sched::GroupParams {
        shares: config.shares,
        reservation_pct: config.reservation_pct,
        limit_pct: config.limit_pct,
        mem_limit_mib: None,
    };
    let group = world::with_policy(|p| p.create_group(vmkernel::sched::ROOT_GROUP, &alloc::format!("vm-{}", config.name), params))
        .map_err(|e| (api::errno_for(&e), alloc::format!("{e}")))?;
    let undo_group = || world::with_policy(|p| p.destroy_group(group).ok());
    let size = config.memory_mib as u64 * (1 << 20);
    let Some(memory) = super::new_guest_memory(size, &MMIO_HOLES) else {
        undo_group();
        return Err((-ENOMEM, alloc::format!("not enough host memory for {} MiB of guest RAM", config.memory_mib)));
    };
    let (initial, _) = {
        let mut lm = LoaderMem(&memory);
        match loader::multiboot::load(&mut lm, kernel_image, &config.kernel, &config.cmdline, &[]) {
            Ok(r) => r,
            Err(e) => {
                drop(memory);
                undo_group();
                return Err((-8 /* ENOEXEC */, alloc::format!("cannot load {}: {e:?}", config.kernel)));
            }
        }
    };
    let platform = Platform::new(&PlatformConfig {
        vcpus: 1,
        ram_below_4g: size,
        ram_above_4g: 0,
        wall_clock_unix_secs: (crate::uw::files::realtime_ns() / 1_000_000_000) as i64,
        tsc_khz: time::tsc_hz() / 1000,
        console_ring: 64 * 1024,
    });
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let vm = Arc::new(Vm {
        id,
        config,
        memory,
        platform: Mutex::new(platform),
        state: AtomicU32::new(api::VM_STATE_OFF),
        exit_reason: AtomicU32::new(api::EXIT_REASON_NONE),
        exit_code: AtomicU64::new(0),
        exits: AtomicU64::new(0),
        run_ns: AtomicU64::new(0),
        stop_requested: AtomicBool::new(false),
        group,
        vcpu_world: AtomicU64::new(0),
        initial,
    });
    VMS.lock().insert(id, vm.clone());
    Ok(vm)
}

impl Vm {
    pub fn start(self: &Arc<Self>) -> Result<(), (i64, String)> {
        if self.state.compare_exchange(api::VM_STATE_OFF, api::VM_STATE_RUNNING, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err((-16, "the VM is not powered off".into()));
        }
        self.stop_requested.store(false, Ordering::Release);
        let arg = Arc::into_raw(self.clone()) as usize;
        match world::spawn(&alloc::format!("vcpu0:{}", self.config.name), world::WorldKind::Vcpu, self.group, vcpu_main, arg, |_| {}) {
            Ok(w) => {
                // Keep the vCPU on the CPU it starts on (no migration while
                // the migration crash is investigated; see the issue note).
                world::with_policy(|p| {
                    let cpu = p.world_cpu(w).unwrap_or(0);
                    let _ = p.set_affinity(w, Some(cpu));
                });
                self.vcpu_world.store(w, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                // SAFETY: the world was not created; take the reference back.
                drop(unsafe { Arc::from_raw(arg as *const Vm) });
                self.state.store(api::VM_STATE_OFF, Ordering::Release);
                Err((api::errno_for(&e), alloc::format!("{e}")))
            }
        }
    }

    /// Hard power off: the vCPU world stops at its next exit.
    pub fn stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        world::wake(self.vcpu_world.load(Ordering::Acquire));
    }

    pub fn info(&self) -> VmInfoRecord {
        let mut r = VmInfoRecord {
            id: self.id,
            state: self.state.load(Ordering::Acquire),
            exit_reason: self.exit_reason.load(Ordering::Acquire),
            vcpus: self.config.vcpus,
            exit_code: self.exit_code.load(Ordering::Acquire),
            memory_mib: self.config.memory_mib as u64,
            exits: self.exits.load(Ordering::Relaxed),
            run_ns: self.run_ns.load(Ordering::Relaxed),
            console_pos: self.platform.lock().console_output().total_written(),
            group: self.group,
            ..Default::default()
        };
        let n = self.config.name.len().min(api::NAME_LEN);
        r.name[..n].copy_from_slice(&self.config.name.as_bytes()[..n]);
        r
    }

    pub fn console_since(&self, pos: u64, out: &mut Vec<u8>) -> u64 {
        self.platform.lock().console_output().read_since(pos, out)
    }

    pub fn console_input(&self, bytes: &[u8]) -> usize {
        self.platform.lock().console_input(bytes)
    }

    fn finish(&self, reason: u32, code: u64) {
        self.exit_reason.store(reason, Ordering::Release);
        self.exit_code.store(code, Ordering::Release);
        self.state.store(api::VM_STATE_STOPPED, Ordering::Release);
        crate::uw::io_wait::notify();
    }
}

/// Destroys a VM that is not running; its memory and group go with it.
pub fn destroy(id: u32) -> Result<(), (i64, String)> {
    let vm = lookup(id).ok_or((-2, String::from("no such VM")))?;
    if vm.state.load(Ordering::Acquire) == api::VM_STATE_RUNNING {
        return Err((-16, "the VM is running: stop it first".into()));
    }
    VMS.lock().remove(&id);
    let group = vm.group;
    drop(vm);
    // The vCPU world (if it ran) has exited; its group is empty now or soon.
    for _ in 0..100 {
        if world::with_policy(|p| p.destroy_group(group).is_ok()) {
            break;
        }
        world::yield_now();
    }
    Ok(())
}

/// The virtual CPU's identity: a hypervisor is present, vendor leaf
/// 0x40000000 says "MantleMantle"; everything else comes from the host
/// minus what the device model cannot back (x2APIC, monitor/mwait, VMX/SVM).
fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    match leaf {
        0x4000_0000 => {
            let v = b"MantleMantle";
            let w = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().unwrap());
            [0x4000_0001, w(0), w(4), w(8)]
        }
        0x4000_0001 => [0, 0, 0, 0],
        _ => {
            let r = cpu::cpuid(leaf, sub);
            let (mut a, mut b, mut c, mut d) = (r.eax, r.ebx, r.ecx, r.edx);
            match leaf {
                1 => {
                    // x2APIC, MONITOR, VMX, FMA, XSAVE, OSXSAVE, AVX
                    c &= !((1 << 21) | (1 << 3) | (1 << 5) | (1 << 12) | (1 << 26) | (1 << 27) | (1 << 28));
                    c |= 1 << 31; // hypervisor present
                    b &= 0x00ff_ffff; // initial APIC ID 0
                }
                0x8000_0001 => c &= !(1 << 2), // SVM
                7 if sub == 0 => {
                    // AVX2, AVX-512 and friends need XSAVE state the VMM does not switch.
                    b &= !((1 << 5) | (0xffff << 16));
                    c = 0;
                }
                0xd => {
                    a = 0;
                    b = 0;
                    c = 0;
                    d = 0;
                }
                0x8000_000a => {
                    a = 0;
                    b = 0;
                    c = 0;
                    d = 0;
                }
                _ => {}
            }
            [a, b, c, d]
        }
    }
}

fn vcpu_main(arg: usize) {
    // SAFETY: `start` leaked this reference for the vCPU world.
    let vm: Arc<Vm> = unsafe { Arc::from_raw(arg as *const Vm) };
    if let Err(e) = super::init_this_cpu() {
        vm.finish(api::EXIT_REASON_UNHANDLED, 0);
        log::warn!("vm {}: {e}", vm.config.name);
        return;
    }
    let mut v = match super::new_vcpu(vm.memory.root()) {
        Ok(v) => v,
        Err(e) => {
            log::warn!("vm {}: {e}", vm.config.name);
            vm.finish(api::EXIT_REASON_UNHANDLED, 0);
            return;
        }
    };
    let mut regs = GuestRegs::default();
    v.load_state(&vm.initial, &mut regs);
    // The guest's x87/SSE registers, in their power-on state.
    let mut fpu = crate::arch::context::FpuState::new();
    fpu.reset();
    log::info!("vm {} ({}): powered on", vm.id, vm.config.name);
    let start = time::uptime_ns();
    let (reason, code) = run_loop(&vm, &mut *v, &mut regs, fpu.area_mut().as_mut_ptr());
    vm.run_ns.fetch_add(time::uptime_ns() - start, Ordering::Relaxed);
    log::info!("vm {} ({}): stopped (reason {reason}, code {code:#x}, {} exits)", vm.id, vm.config.name, vm.exits.load(Ordering::Relaxed));
    vm.finish(reason, code);
}

fn run_loop(vm: &Vm, v: &mut dyn VcpuHw, regs: &mut GuestRegs, fpu: *mut u8) -> (u32, u64) {
    loop {
        if vm.stop_requested.load(Ordering::Acquire) {
            return (api::EXIT_REASON_POWER_OFF, 0);
        }
        inject_interrupt(vm, v);
        let exit = v.run(regs, fpu);
        vm.exits.fetch_add(1, Ordering::Relaxed);
        let now = time::uptime_ns();
        let rip = v.rip();
        match exit {
            Exit::Io { port, size, input, string, next_rip, .. } => {
                if string {
                    return (api::EXIT_REASON_UNHANDLED, 0x7b); // string I/O
                }
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
                let r = cpuid(regs.gpr[RAX] as u32, regs.gpr[RCX] as u32);
                regs.gpr[RAX] = r[0] as u64;
                regs.gpr[RBX] = r[1] as u64;
                regs.gpr[RCX] = r[2] as u64;
                regs.gpr[RDX] = r[3] as u64;
                v.set_rip(rip + 2);
            }
            Exit::Msr { write } => {
                let msr = regs.gpr[RCX] as u32;
                let mut p = vm.platform.lock();
                let ok = if write {
                    let val = (regs.gpr[RDX] << 32) | (regs.gpr[RAX] & 0xffff_ffff);
                    if msr == 0xc000_0080 {
                        v.set_ctl(Ctl::Efer, val);
                        true
                    } else if Platform::handles_msr(msr) {
                        p.msr_write(0, msr, val).is_ok()
                    } else {
                        false
                    }
                } else {
                    let val = match msr {
                        0xc000_0080 => Some(v.ctl(Ctl::Efer)),
                        m if Platform::handles_msr(m) => p.msr_read(0, m).ok(),
                        _ => None,
                    };
                    if let Some(val) = val {
                        regs.gpr[RAX] = val & 0xffff_ffff;
                        regs.gpr[RDX] = val >> 32;
                    }
                    val.is_some()
                };
                drop(p);
                if ok {
                    v.set_rip(rip + 2);
                } else {
                    // Unknown MSR: #GP in the guest, not a host problem.
                    v.inject(Event::gp());
                }
            }
            Exit::Hlt => {
                v.set_rip(rip + 1);
                // Guest halted with interrupts off and nothing pending: done.
                let if_on = v.rflags() & (1 << 9) != 0;
                let deadline = vm.platform.lock().next_deadline();
                if !if_on && deadline.is_none() {
                    return (api::EXIT_REASON_HALTED, rip);
                }
                // Sleep until the next device timer (or a kick).
                let until = deadline.unwrap_or(now + 10_000_000).max(now + 50_000);
                world::sleep_ns(until - now);
            }
            Exit::Pause => {
                v.set_rip(rip + 2);
                world::yield_now();
            }
            Exit::Shutdown => return (api::EXIT_REASON_TRIPLE_FAULT, rip),
            Exit::Hypercall => {
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
                    2 => return (api::EXIT_REASON_DEBUG_EXIT, regs.gpr[RBX]),
                    _ => regs.gpr[RAX] = u64::MAX,
                }
                v.set_rip(rip + 3);
            }
            Exit::ExternalInterrupt | Exit::Nmi => {
                cpu::take_pending_interrupts();
                if world::slice_expired(time::uptime_ns()) {
                    world::yield_now();
                }
            }
            Exit::InterruptWindow => v.set_interrupt_window(false),
            // #UD: the virtual CPU has no XSAVE.
            Exit::Xsetbv => v.inject(Event::ud()),
            Exit::NestedPageFault { gpa, .. } => {
                if !vm.platform.lock().mmio_claims(0, gpa) || emulate_mmio(vm, v, regs).is_err() {
                    log::warn!("vm {}: access to {gpa:#x} (no RAM, no device) at rip {rip:#x}", vm.id);
                    return (api::EXIT_REASON_UNHANDLED, gpa);
                }
            }
            other => {
                log::warn!("vm {}: unhandled exit {other:?} at rip {rip:#x}", vm.id);
                return (api::EXIT_REASON_UNHANDLED, 0);
            }
        }
        for e in vm.platform.lock().events() {
            match e {
                VmEvent::Exit(val) => return (api::EXIT_REASON_DEBUG_EXIT, val as u64),
                VmEvent::ResetVm => return (api::EXIT_REASON_POWER_OFF, 0),
                _ => {}
            }
        }
    }
}

/// Injects the highest pending interrupt when the guest can take it, or
/// asks for an exit as soon as it can.
fn inject_interrupt(vm: &Vm, v: &mut dyn VcpuHw) {
    if v.event_pending() {
        return;
    }
    let mut p = vm.platform.lock();
    p.advance(time::uptime_ns());
    let Some(vec) = p.pending_interrupt(0) else { return };
    let if_on = v.rflags() & (1 << 9) != 0;
    if !if_on || v.interrupt_shadow() {
        v.set_interrupt_window(true);
        return;
    }
    let vec = p.ack_interrupt(0, vec);
    v.inject(Event::ExternalInterrupt(vec));
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
        let mut p = self.vm.platform.lock();
        if p.mmio_claims(0, gpa) {
            return Ok(p.mmio_read(0, gpa, size));
        }
        drop(p);
        let mut b = [0u8; 8];
        if self.vm.memory.read(gpa, &mut b[..size as usize]) { Ok(u64::from_le_bytes(b)) } else { Err(vmkernel::vmm::decode::AccessError::Unhandled) }
    }
    fn write(&mut self, seg: vmkernel::vmm::decode::Seg, ea: u64, size: u8, value: u64) -> Result<(), vmkernel::vmm::decode::AccessError> {
        let gpa = self.gpa(seg, ea, true)?;
        let mut p = self.vm.platform.lock();
        if p.mmio_claims(0, gpa) {
            p.mmio_write(0, gpa, size, value);
            return Ok(());
        }
        drop(p);
        if self.vm.memory.write(gpa, &value.to_le_bytes()[..size as usize]) { Ok(()) } else { Err(vmkernel::vmm::decode::AccessError::Unhandled) }
    }
}

/// Emulates the instruction at the guest's RIP that touched device memory
/// (QEMU's SVM gives no decode assists: fetch, decode, execute here).
fn emulate_mmio(vm: &Vm, v: &mut dyn VcpuHw, regs: &mut GuestRegs) -> Result<(), ()> {
    use vmkernel::vmm::decode::{self, CpuMode, Regs};
    use vmkernel::vmm::guest_paging::{Access, translate};
    let pg = paging(v);
    let bases = seg_bases(v);
    let rip = v.rip();
    let cs_attr = v.segment(SegReg::Cs).attr;
    let mode = CpuMode::from_state(pg.cr0 & 1 != 0, pg.efer & (1 << 10) != 0, v.rflags() & (1 << 17) != 0, cs_attr & (1 << 9) != 0, cs_attr & (1 << 10) != 0);
    // Fetch up to 15 bytes (they may cross a page).
    let mut bytes = [0u8; 15];
    let mut n = 0;
    while n < bytes.len() {
        let linear = bases[1].wrapping_add(rip).wrapping_add(n as u64);
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
    let insn = decode::decode(&bytes[..n], mode).map_err(|_| ())?;
    let mut r = Regs {
        gpr: regs.gpr,
        rip,
        rflags: v.rflags(),
    };
    let mut acc = MmioAccess { vm, paging: pg, bases };
    decode::execute(&insn, &mut r, &mut acc).map_err(|_| ())?;
    regs.gpr = r.gpr;
    v.set_rip(r.rip);
    v.set_rflags(r.rflags);
    Ok(())
}
