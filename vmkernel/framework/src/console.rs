//! The serial console (COM1) and the kernel log.
//!
//! Every log line carries a monotonic timestamp (seconds since boot, from
//! the calibrated TSC), the CPU and the level. The fatal paths (panic, CPU
//! exception) write through [`emergency`], which does not take the console
//! lock: the CPU that died may be the one holding it.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU8, Ordering};
use log::{Level, LevelFilter, Log, Metadata, Record};
use spin::Mutex;
use uart16550::{COM1, Uart};
use vmkernel::cmdline::LogLevel;

use crate::cpu::Ports;
use crate::arch::gdt;
use crate::time;

// SAFETY: COM1 belongs to the console and nothing else in the kernel.
static CONSOLE: Mutex<Uart<Ports>> = Mutex::new(Uart::new(COM1, unsafe { Ports::new() }));
static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn init() {
    CONSOLE.lock().init(115_200);
    log::set_logger(&KernelLog).ok();
    set_level(LogLevel::Info);
}

/// The console's log level. The `log` crate's own maximum follows it, so
/// a disabled `trace!`/`debug!` costs one comparison where it stands (the
/// system-call and exit paths have some) instead of evaluating its
/// arguments and calling the logger.
pub fn set_level(level: LogLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    log::set_max_level(match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    });
}

fn level_allows(level: Level) -> bool {
    let want = match level {
        Level::Error => LogLevel::Error,
        Level::Warn => LogLevel::Warn,
        Level::Info => LogLevel::Info,
        Level::Debug => LogLevel::Debug,
        Level::Trace => LogLevel::Trace,
    };
    want as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Vector of the COM1 receive interrupt (ISA IRQ 4 through the IOAPIC).
pub const COM1_VECTOR: u8 = 0x24;
static INPUT: spin::Once<fn(u8)> = spin::Once::new();

/// Starts delivering console input bytes to `handler` (the tty), from the
/// UART's receive interrupt on the BSP.
pub fn enable_input(handler: fn(u8)) {
    INPUT.call_once(|| handler);
    crate::arch::trap::register(COM1_VECTOR, on_com1_interrupt);
    let bsp = crate::arch::gdt::cpu(0).map_or(0, |c| c.apic_id);
    if let Err(e) = crate::arch::ioapic::route_isa_irq(4, COM1_VECTOR, bsp) {
        log::warn!("console: cannot route COM1's interrupt ({e:?}): no console input");
        return;
    }
    CONSOLE.lock().set_rx_interrupt(true);
}

fn on_com1_interrupt(_: &mut crate::arch::trap::TrapFrame) {
    let mut bytes = [0u8; 64];
    let mut n = 0;
    {
        let mut c = CONSOLE.lock();
        while n < bytes.len() {
            match c.try_read_byte() {
                Some(b) => {
                    bytes[n] = b;
                    n += 1;
                }
                None => break,
            }
        }
    }
    crate::arch::apic::eoi();
    if let Some(h) = INPUT.get() {
        for &b in &bytes[..n] {
            h(b);
        }
    }
}

/// Writes text to the console as is (the status screen, test reports).
pub fn write_str(s: &str) {
    CONSOLE.lock().write_bytes(s.as_bytes());
}

/// Writes raw bytes (user-world output).
pub fn write_bytes(b: &[u8]) {
    CONSOLE.lock().write_bytes(b);
}

pub fn write_fmt(args: fmt::Arguments) {
    let _ = CONSOLE.lock().write_fmt(args);
}

/// Waits until the UART has sent everything (before power-off).
pub fn drain() {
    CONSOLE.lock().drain();
}

/// A console writer for fatal paths that does not take the lock.
pub fn emergency() -> Uart<Ports> {
    // SAFETY: used only when the kernel is about to stop; interleaving with
    // a CPU that holds the lock garbles output at worst.
    Uart::new(COM1, unsafe { Ports::new() })
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::write_str("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct KernelLog;

impl Log for KernelLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        level_allows(metadata.level())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ns = time::uptime_ns();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let mut c = CONSOLE.lock();
        let _ = writeln!(
            c,
            "[{:5}.{:06}] cpu{} {} {}",
            ns / 1_000_000_000,
            (ns % 1_000_000_000) / 1000,
            gdt::cpu_index(),
            level,
            record.args()
        );
    }

    fn flush(&self) {}
}
