//! The Mantle VMkernel image: the boot sequence (`kernel_entry`) and the
//! kernel's services — user worlds (`uw`), system calls (`syscall`), the
//! VMkernel API (`vmk_calls`), the VM lifecycle (`vm`), the in-kernel tests
//! (`ktest`). They are built only on the framework's safe interfaces
//! (`vmkernel/framework`, whose `hv` holds the SVM/VMX backends) and the
//! hardware-free library (`vmkernel`): no unsafe code here.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

// The framework's modules under the names the services use
// (`crate::arch`, `crate::mm`, ...): they are the only way down.
use framework::{acpi, arch, backtrace, boot_archive, console, hv, kprintln, mm, pci, power, time, world};

// The in-kernel tests; the checks that reach below the safe interfaces
// are the framework's own (`framework::selftest`).
mod ktest;
mod host_facts;
mod image_store;
mod net;
mod nic;
mod storage;
mod syscall;
mod uw;
mod virtio;
mod vm;
mod vmk_calls;

use vmkernel::cmdline::{AfterBoot, InjectedFault, Options};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Called by the framework's boot stub in long mode on the BSP stack: the
/// boot sequence, in order. Lower layers never call up into this crate;
/// what they must call back is registered here before the stage that
/// needs it.
// The framework's boot code calls this by name: the one unmangled symbol
// the services define (no unsafe operation happens here).
#[allow(unsafe_code)]
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(magic: u32, info: u32) -> ! {
    // 1. Early CPU state and the console, then the boot information.
    arch::trap::load_idt();
    arch::trap::set_kernel_fault_handler(power::report_kernel_fault);
    console::init();
    time::calibrate();
    time::init_wall_clock();
    let bi = match mm::parse_boot_info(magic, info as u64) {
        Ok(bi) => bi,
        Err(e) => power::fatal_stop(match e {
            vmkernel::bootinfo::BootInfoError::UnknownMagic(_) => "unknown boot protocol (not Multiboot2 or PVH)",
            vmkernel::bootinfo::BootInfoError::NoMemoryMap => "the boot loader gave no memory map",
            _ => "unreadable boot information",
        }),
    };
    let opts = Options::parse(&bi.cmdline);
    console::set_level(opts.log_level);
    power::set_debug_exit_port(opts.debug_exit);
    log::info!("Mantle VMkernel {} starting ({:?} boot), TSC {} MHz", VERSION, bi.protocol, time::tsc_hz() / 1_000_000);
    log::info!("command line: \"{}\"", bi.cmdline);
    for w in &opts.unknown {
        log::warn!("command line: ignoring unknown option \"{w}\"");
    }

    // 2. Memory: frames, the direct map, the kernel heap.
    if let Err(e) = mm::init(&bi) {
        power::fatal_stop(e);
    }

    // 3. This CPU: per-CPU block, FPU, SYSCALL; the services' handlers for
    //    what user mode does.
    arch::gdt::init_this_cpu(0, arch::apic::cpuid_apic_id());
    arch::context::init_fpu_this_cpu();
    arch::syscall::init_this_cpu();
    arch::syscall::register_handler(syscall::dispatch);
    arch::trap::register_user_handlers(arch::trap::UserTrapHandlers {
        exception: uw::fault::user_exception,
        before_return: uw::signal::deliver_on_return,
    });
    world::on_user_tick(uw::process::check_pending_kill);
    uw::process::on_files_closed(syscall::collect_unix_cycles);
    arch::apic::set_tick_handler(world::on_timer_tick);
    arch::apic::set_kick_handler(world::on_resched_ipi);

    // 4. Interrupts: ACPI tables, then the 8259s and IOAPICs before the
    //    LAPIC (masking the 8259s drops their INTR line while LINT0 still
    //    listens to it; the LAPIC init then masks LINT0. In the other order
    //    QEMU keeps a stale ExtINT request latched).
    let platform = acpi::init(&bi);
    arch::ioapic::init(platform);
    arch::apic::init_this_cpu(platform.lapic_address);

    // 5. The scheduler, on this CPU first.
    world::init(platform.cpu_apic_ids.len().max(1) as u32);
    // The library's blocking locks (an open file's offset) now sleep.
    framework::sleep_lock::register_library_sleeper();
    world::init_this_cpu();
    arch::apic::init_tlb_shootdown();

    // 6. The VMM backend, on this CPU and on every CPU that starts.
    match hv::detect() {
        Some(b) => {
            log::info!("vmm: hardware virtualization backend {b:?}");
            if let Err(e) = hv::init_this_cpu() {
                log::warn!("vmm: cannot enable it on cpu0: {e}");
            }
        }
        None => log::info!("vmm: no hardware virtualization ({}); the host runs without VMs", hv::unavailable_reason()),
    }

    // 7. The other CPUs (each sets up the scheduler and the VMM backend,
    //    then idles), PCI, the root file system.
    arch::smp::start_aps(platform, arch::smp::ApStart { init: start_services_on_ap, run: world::idle_loop });
    let pci_functions = pci::init(platform);
    nic::init(pci::functions());
    let root_archive = boot_archive::open(&bi);
    if let Some(a) = &root_archive {
        boot_archive::log_listing(a);
    }
    uw::files::init(root_archive.as_ref().map(|a| a.cpio()), bi.cmdline.as_str());
    if let Some(a) = root_archive {
        boot_archive::release(a, &bi);
    }
    storage::init(pci::functions(), uw::files::vfs());
    // The network world (vmk0, lo) — not while in-kernel tests drive the
    // NICs themselves.
    if opts.test.is_none() {
        net::vswitch::set_vm_delivery(vm::deliver_frame);
        net::init(&bi.cmdline);
    }

    kprintln!(
        "mantle: ready cpus={} mem={}MiB pci={}",
        arch::gdt::cpus_online(),
        mm::usable_bytes() >> 20,
        pci_functions
    );
    host_facts::print_status_screen(&bi, pci_functions);

    // 8. What the command line asks for: tests, the first user world, or
    //    power-off / reboot.
    if let Some(f) = opts.inject_fault {
        inject_fault(f);
    }
    if let Some(sel) = &opts.test {
        let ok = ktest::run(sel);
        power::debug_exit(ok);
    }
    if opts.test.is_none() && opts.after_boot == AfterBoot::Run {
        start_init(&opts);
    }
    match opts.after_boot {
        AfterBoot::PowerOff => {
            storage::shutdown();
            power::debug_exit(true);
            power::power_off()
        }
        AfterBoot::Reboot => power::reboot(),
        AfterBoot::Run => world::idle_loop(),
    }
}

/// An application processor's part of the boot: its scheduler state, and
/// virtualization (vCPU worlds may migrate to any CPU, so each one has it
/// on).
fn start_services_on_ap(cpu: u32) {
    world::init_this_cpu();
    if hv::detect().is_some()
        && let Err(e) = hv::init_this_cpu()
    {
        log::warn!("vmm: cannot enable it on cpu{cpu}: {e}");
    }
}

/// Starts the first user world: `init=` from the command line, else
/// /sbin/init, else a shell on the console.
fn start_init(opts: &Options) {
    let env: [&[u8]; 3] = [b"PATH=/sbin:/bin:/usr/sbin:/usr/bin", b"HOME=/", b"TERM=vt100"];
    let candidates: [&[u8]; 3] = [opts.init.as_bytes(), b"/sbin/init", b"/bin/sh"];
    for path in candidates.iter().filter(|p| !p.is_empty()) {
        match uw::exec::spawn(path, &[path], &env) {
            Ok(p) => {
                log::info!("init: started {} as pid {}", core::str::from_utf8(path).unwrap_or("?"), p.pid);
                return;
            }
            Err(e) => log::warn!("init: cannot start {}: {}", core::str::from_utf8(path).unwrap_or("?"), e.name()),
        }
    }
    log::error!("init: no init program in the root file system; the host runs without user worlds");
}

fn inject_fault(f: InjectedFault) {
    log::warn!("injecting fault {f:?} as the command line asks");
    match f {
        InjectedFault::PageFault => arch::cpu::fault_on_unmapped_read(),
        InjectedFault::InvalidOpcode => arch::cpu::raise_invalid_opcode(),
        InjectedFault::Panic => panic!("injected panic"),
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let mut out = console::emergency();
    let _ = writeln!(out, "\n*** KERNEL PANIC on cpu{}: {}", arch::gdt::cpu_index(), info);
    world::with_current_for_panic(|id, name| {
        let _ = writeln!(out, "in world {id} ({name})");
    });
    let _ = writeln!(out, "backtrace:");
    backtrace::walk_here(|i, ret| {
        let _ = writeln!(out, "  #{i} {ret:#018x}");
    });
    power::fatal_stop("kernel panic")
}

