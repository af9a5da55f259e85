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
use super::svm::{GuestRegs, Vmcb, exit, vmcb};
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
    if !matches!(super::backend(), Some(super::Backend::Svm { .. })) {
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
    let Some(memory) = GuestMemory::new(size, &MMIO_HOLES) else {
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

fn load_state(v: &Vmcb, s: &VcpuState, regs: &mut GuestRegs) {
    let seg = |off, sg: &loader::Segment| v.set_segment(off, sg.selector, sg.attr, sg.limit, sg.base);
    seg(vmcb::CS, &s.cs);
    seg(vmcb::DS, &s.ds);
    seg(vmcb::ES, &s.es);
    seg(vmcb::FS, &s.fs);
    seg(vmcb::GS, &s.gs);
    seg(vmcb::SS, &s.ss);
    seg(vmcb::TR, &s.tr);
    seg(vmcb::LDTR, &s.ldtr);
    v.set_segment(vmcb::GDTR, 0, 0, s.gdtr.limit as u32, s.gdtr.base);
    v.set_segment(vmcb::IDTR, 0, 0, s.idtr.limit as u32, s.idtr.base);
    v.w64(vmcb::CR0, s.cr0);
    v.w64(vmcb::CR3, s.cr3);
    v.w64(vmcb::CR4, s.cr4);
    v.w64(vmcb::EFER, s.efer | (1 << 12));
    v.w64(vmcb::RFLAGS, s.regs.rflags);
    v.w64(vmcb::RIP, s.regs.rip);
    let g = &s.regs.gpr;
    v.w64(vmcb::RAX, g[0]);
    v.w64(vmcb::RSP, g[4]);
    *regs = GuestRegs {
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
    };
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
    let Some(v) = Vmcb::new(vm.memory.root(), 1) else {
        vm.finish(api::EXIT_REASON_UNHANDLED, 0);
        return;
    };
    let mut regs = GuestRegs::default();
    load_state(&v, &vm.initial, &mut regs);
    // The guest's x87/SSE registers, in their power-on state.
    let mut fpu = crate::arch::context::FpuState::new();
    fpu.reset();
    log::info!("vm {} ({}): powered on", vm.id, vm.config.name);
    let start = time::uptime_ns();
    let (reason, code) = run_loop(&vm, &v, &mut regs, fpu.area_mut().as_mut_ptr());
    vm.run_ns.fetch_add(time::uptime_ns() - start, Ordering::Relaxed);
    log::info!("vm {} ({}): stopped (reason {reason}, code {code:#x}, {} exits)", vm.id, vm.config.name, vm.exits.load(Ordering::Relaxed));
    vm.finish(reason, code);
}

fn run_loop(vm: &Vm, v: &Vmcb, regs: &mut GuestRegs, fpu: *mut u8) -> (u32, u64) {
    loop {
        if vm.stop_requested.load(Ordering::Acquire) {
            return (api::EXIT_REASON_POWER_OFF, 0);
        }
        inject_interrupt(vm, v);
        let code = v.run(regs, fpu);
        vm.exits.fetch_add(1, Ordering::Relaxed);
        let now = time::uptime_ns();
        let rip = v.r64(vmcb::RIP);
        match code {
            exit::IOIO => {
                let info = v.r64(vmcb::EXIT_INFO1);
                let port = (info >> 16) as u16;
                let size = ((info >> 4) & 7) as u8;
                if info & (1 << 2) != 0 {
                    return (api::EXIT_REASON_UNHANDLED, code); // string I/O
                }
                let mut p = vm.platform.lock();
                p.advance(now);
                if info & 1 != 0 {
                    let val = p.io_in(port, size) as u64;
                    let mask = (1u64 << (size as u64 * 8)) - 1;
                    v.w64(vmcb::RAX, (v.r64(vmcb::RAX) & !mask) | (val & mask));
                } else {
                    p.io_out(port, size, v.r64(vmcb::RAX) as u32);
                }
                drop(p);
                v.w64(vmcb::RIP, v.r64(vmcb::EXIT_INFO2));
            }
            exit::CPUID => {
                let r = cpuid(v.r64(vmcb::RAX) as u32, regs.rcx as u32);
                v.w64(vmcb::RAX, r[0] as u64);
                regs.rbx = r[1] as u64;
                regs.rcx = r[2] as u64;
                regs.rdx = r[3] as u64;
                v.w64(vmcb::RIP, rip + 2);
            }
            exit::MSR => {
                let msr = regs.rcx as u32;
                let write = v.r64(vmcb::EXIT_INFO1) & 1 != 0;
                let mut p = vm.platform.lock();
                let ok = if write {
                    let val = (regs.rdx << 32) | (v.r64(vmcb::RAX) & 0xffff_ffff);
                    if msr == 0xc000_0080 {
                        v.w64(vmcb::EFER, val | (1 << 12));
                        true
                    } else if Platform::handles_msr(msr) {
                        p.msr_write(0, msr, val).is_ok()
                    } else {
                        false
                    }
                } else {
                    let val = match msr {
                        0xc000_0080 => Some(v.r64(vmcb::EFER) & !(1 << 12)),
                        m if Platform::handles_msr(m) => p.msr_read(0, m).ok(),
                        _ => None,
                    };
                    if let Some(val) = val {
                        v.w64(vmcb::RAX, val & 0xffff_ffff);
                        regs.rdx = val >> 32;
                    }
                    val.is_some()
                };
                drop(p);
                if ok {
                    v.w64(vmcb::RIP, rip + 2);
                } else {
                    // Unknown MSR: #GP in the guest, not a host problem.
                    v.w64(vmcb::EVENT_INJ, 13 | (3 << 8) | (1 << 11) | (1 << 31));
                }
            }
            exit::HLT => {
                v.w64(vmcb::RIP, rip + 1);
                // Guest halted with interrupts off and nothing pending: done.
                let if_on = v.r64(vmcb::RFLAGS) & (1 << 9) != 0;
                let deadline = vm.platform.lock().next_deadline();
                if !if_on && deadline.is_none() {
                    return (api::EXIT_REASON_HALTED, rip);
                }
                // Sleep until the next device timer (or a kick).
                let until = deadline.unwrap_or(now + 10_000_000).max(now + 50_000);
                world::sleep_ns(until - now);
            }
            exit::SHUTDOWN => return (api::EXIT_REASON_TRIPLE_FAULT, rip),
            exit::VMMCALL => {
                // Hypercall ABI: RAX = function. 0: version → 1;
                // 1: console write (RBX = gpa, RCX = len); 2: exit (RBX = code).
                match v.r64(vmcb::RAX) {
                    0 => v.w64(vmcb::RAX, 1),
                    1 => {
                        let len = (regs.rcx as usize).min(4096);
                        let mut b = alloc::vec![0u8; len];
                        if vm.memory.read(regs.rbx, &mut b) {
                            let mut p = vm.platform.lock();
                            for &c in &b {
                                p.io_out(0x3f8, 1, c as u32);
                            }
                            v.w64(vmcb::RAX, len as u64);
                        } else {
                            v.w64(vmcb::RAX, u64::MAX);
                        }
                    }
                    2 => return (api::EXIT_REASON_DEBUG_EXIT, regs.rbx),
                    _ => v.w64(vmcb::RAX, u64::MAX),
                }
                v.w64(vmcb::RIP, rip + 3);
            }
            exit::INTR | exit::NMI => {
                cpu::take_pending_interrupts();
                if world::slice_expired(time::uptime_ns()) {
                    world::yield_now();
                }
            }
            exit::VINTR => {}
            // #UD: the virtual CPU has no XSAVE.
            exit::XSETBV => v.w64(vmcb::EVENT_INJ, 6 | (3 << 8) | (1 << 31)),
            exit::NPF => {
                let gpa = v.r64(vmcb::EXIT_INFO2);
                if !vm.platform.lock().mmio_claims(0, gpa) || emulate_mmio(vm, v, regs).is_err() {
                    log::warn!("vm {}: access to {gpa:#x} (no RAM, no device) at rip {rip:#x}", vm.id);
                    return (api::EXIT_REASON_UNHANDLED, gpa);
                }
            }
            other => {
                log::warn!("vm {}: unhandled exit {other:#x} at rip {rip:#x} (info {:#x}/{:#x})", vm.id, v.r64(vmcb::EXIT_INFO1), v.r64(vmcb::EXIT_INFO2));
                return (api::EXIT_REASON_UNHANDLED, other);
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

/// Injects the highest pending interrupt when the guest can take it.
fn inject_interrupt(vm: &Vm, v: &Vmcb) {
    let if_on = v.r64(vmcb::RFLAGS) & (1 << 9) != 0;
    let shadow = v.r64(vmcb::INTERRUPT_SHADOW) & 1 != 0;
    if !if_on || shadow || v.r64(vmcb::EVENT_INJ) & (1 << 31) != 0 {
        return;
    }
    let mut p = vm.platform.lock();
    p.advance(time::uptime_ns());
    if let Some(vec) = p.pending_interrupt(0) {
        let vec = p.ack_interrupt(0, vec);
        v.w64(vmcb::EVENT_INJ, vec as u64 | (1 << 31));
    }
}

/// Segment bases by the decoder's segment numbers (ES, CS, SS, DS, FS, GS).
fn seg_bases(v: &Vmcb) -> [u64; 6] {
    [vmcb::ES, vmcb::CS, vmcb::SS, vmcb::DS, vmcb::FS, vmcb::GS].map(|o| v.r64(o + 8))
}

fn paging(v: &Vmcb) -> vmkernel::vmm::guest_paging::PagingState {
    vmkernel::vmm::guest_paging::PagingState {
        cr0: v.r64(vmcb::CR0),
        cr3: v.r64(vmcb::CR3),
        cr4: v.r64(vmcb::CR4),
        efer: v.r64(vmcb::EFER),
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
fn emulate_mmio(vm: &Vm, v: &Vmcb, regs: &mut GuestRegs) -> Result<(), ()> {
    use vmkernel::vmm::decode::{self, CpuMode, Regs};
    use vmkernel::vmm::guest_paging::{Access, translate};
    let pg = paging(v);
    let bases = seg_bases(v);
    let rip = v.r64(vmcb::RIP);
    let cs_attr = v.r16(vmcb::CS + 2);
    let mode = CpuMode::from_state(pg.cr0 & 1 != 0, pg.efer & (1 << 10) != 0, v.r64(vmcb::RFLAGS) & (1 << 17) != 0, cs_attr & (1 << 9) != 0, cs_attr & (1 << 10) != 0);
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
        gpr: [
            v.r64(vmcb::RAX),
            regs.rcx,
            regs.rdx,
            regs.rbx,
            v.r64(vmcb::RSP),
            regs.rbp,
            regs.rsi,
            regs.rdi,
            regs.r8,
            regs.r9,
            regs.r10,
            regs.r11,
            regs.r12,
            regs.r13,
            regs.r14,
            regs.r15,
        ],
        rip,
        rflags: v.r64(vmcb::RFLAGS),
    };
    let mut acc = MmioAccess { vm, paging: pg, bases };
    decode::execute(&insn, &mut r, &mut acc).map_err(|_| ())?;
    let g = r.gpr;
    v.w64(vmcb::RAX, g[0]);
    v.w64(vmcb::RSP, g[4]);
    *regs = GuestRegs {
        rcx: g[1],
        rdx: g[2],
        rbx: g[3],
        rbp: g[5],
        rsi: g[6],
        rdi: g[7],
        r8: g[8],
        r9: g[9],
        r10: g[10],
        r11: g[11],
        r12: g[12],
        r13: g[13],
        r14: g[14],
        r15: g[15],
    };
    v.w64(vmcb::RIP, r.rip);
    v.w64(vmcb::RFLAGS, r.rflags);
    Ok(())
}
