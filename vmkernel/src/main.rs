//! The Mantle VMkernel image.
#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod arch;
mod backtrace;
mod boot_archive;
mod config;
mod console;
mod hv;
mod ktest;
mod mm;
mod nic;
mod pci;
mod power;
mod syscall;
mod status_screen;
mod time;
mod uw;
mod vmk;
mod world;

use vmkernel::bootinfo::BootInfo;
use vmkernel::cmdline::{AfterBoot, InjectedFault, Options};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Called by the boot stub in long mode on the BSP stack.
#[unsafe(no_mangle)]
extern "C" fn kernel_entry(magic: u32, info: u32) -> ! {
    arch::trap::load_idt();
    console::init();
    time::calibrate();
    let bi = match BootInfo::parse(magic, info as u64, &mm::DirectMap) {
        Ok(bi) => bi,
        Err(e) => power::fatal_stop(match e {
            vmkernel::bootinfo::BootInfoError::UnknownMagic(_) => "unknown boot protocol (not Multiboot2 or PVH)",
            vmkernel::bootinfo::BootInfoError::NoMemoryMap => "the boot loader gave no memory map",
            _ => "unreadable boot information",
        }),
    };
    let opts = Options::parse(&bi.cmdline);
    console::set_level(opts.log_level);
    config::set(opts.clone());
    log::info!("Mantle VMkernel {} starting ({:?} boot), TSC {} MHz", VERSION, bi.protocol, time::tsc_hz() / 1_000_000);
    log::info!("command line: \"{}\"", bi.cmdline);
    for w in &opts.unknown {
        log::warn!("command line: ignoring unknown option \"{w}\"");
    }

    mm::init(&bi);
    arch::gdt::init_this_cpu(0, arch::apic::cpuid_apic_id());
    arch::context::init_fpu_this_cpu();
    arch::syscall::init_this_cpu();
    let platform = acpi::init(&bi);
    // 8259s and IOAPICs first: masking the 8259s drops their INTR line
    // while LINT0 still listens to it; the LAPIC init then masks LINT0.
    // (In the other order QEMU keeps a stale ExtINT request latched.)
    arch::ioapic::init(platform);
    arch::apic::init_this_cpu(platform.lapic_address);
    world::init(platform.cpu_apic_ids.len().max(1) as u32);
    world::init_this_cpu();
    arch::apic::init_tlb_shootdown();
    match hv::detect() {
        Some(b) => {
            log::info!("vmm: hardware virtualization backend {b:?}");
            if let Err(e) = hv::init_this_cpu() {
                log::warn!("vmm: cannot enable it on cpu0: {e}");
            }
        }
        None => log::info!("vmm: no hardware virtualization ({}); the host runs without VMs", hv::unavailable_reason()),
    }
    arch::smp::start_aps(platform);
    let pci_functions = pci::init(platform);
    nic::init(pci::functions());
    boot_archive::log_listing(&bi);
    uw::files::init(&bi);

    kprintln!(
        "mantle: ready cpus={} mem={}MiB pci={}",
        arch::gdt::cpus_online(),
        mm::usable_bytes() >> 20,
        pci_functions
    );
    status_screen::print(&bi, pci_functions);

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
            power::debug_exit(true);
            power::power_off()
        }
        AfterBoot::Reboot => power::reboot(),
        AfterBoot::Run => world::idle_loop(),
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

#[inline(never)]
fn inject_fault(f: InjectedFault) {
    log::warn!("injecting fault {f:?} as the command line asks");
    match f {
        InjectedFault::PageFault => {
            // SAFETY: deliberately not: this reads an unmapped address to
            // prove the exception path (test-only option).
            let v = unsafe { core::ptr::read_volatile(0xdead_beef_000 as *const u64) };
            log::error!("read {v:#x} from an unmapped address?!");
        }
        InjectedFault::InvalidOpcode => {
            // SAFETY: raises #UD on purpose (test-only option).
            unsafe { core::arch::asm!("ud2") };
        }
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

mod rt;
