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
mod ktest;
mod mm;
mod pci;
mod power;
mod process;
mod syscall;
mod status_screen;
mod time;
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
    arch::smp::start_aps(platform);
    let pci_functions = pci::init(platform);
    boot_archive::log_listing(&bi);

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
    match opts.after_boot {
        AfterBoot::PowerOff => {
            power::debug_exit(true);
            power::power_off()
        }
        AfterBoot::Reboot => power::reboot(),
        AfterBoot::Run => world::idle_loop(),
    }
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
    let _ = writeln!(out, "backtrace:");
    backtrace::walk_here(|i, ret| {
        let _ = writeln!(out, "  #{i} {ret:#018x}");
    });
    power::fatal_stop("kernel panic")
}

mod rt;
