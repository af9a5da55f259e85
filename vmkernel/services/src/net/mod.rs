//! The network world: it owns the VMkernel's TCP/IP stack (`vmk_net`),
//! with `lo` and `vmk0` on the first driven NIC, and polls it when the
//! NIC interrupts, when a system call queued something, and when
//! smoltcp's `poll_delay` says a timer is due — never busy.
//!
//! vmk0's configuration: `ip=` on the kernel command line, else
//! `/etc/mantle/network.conf`, else DHCP (`vmk_net::config::boot_config`).

pub mod phy;
pub mod vswitch;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use vmk_net::config::{ConfigSource, boot_config};
use vmk_net::{AddressMode, Duration, IfIndex, Instant, NetStack, StackConfig};

use crate::uw::{files, io_wait};
use crate::{time, world};

pub use phy::NicPort;

/// The stack, once the network world has built it.
pub static STACK: Mutex<Option<NetStack<NicPort>>> = Mutex::new(None);

/// vmk0's interface index (0: none).
static VMK0: AtomicU64 = AtomicU64::new(0);
/// The network world (0 until it runs).
static NET_WORLD: AtomicU64 = AtomicU64::new(0);
/// Set by interrupts and system calls: poll now.
static KICKED: AtomicBool = AtomicBool::new(false);

/// The stack's clock.
pub fn now() -> Instant {
    Instant::from_micros((time::uptime_ns() / 1000) as i64)
}

/// The text of `/proc/net/<name>` (None: no such file, or no stack yet).
fn proc_net_file(name: &str) -> Option<alloc::string::String> {
    if name == "vswitch" {
        return Some(vswitch::describe());
    }
    if name == "unix" {
        return Some(vmkernel::af_unix::proc_net_unix());
    }
    with_stack(|s| match name {
        "dev" => Some(s.proc_net_dev()),
        "route" => Some(s.proc_net_route()),
        "tcp" => Some(s.proc_net_tcp()),
        "udp" => Some(s.proc_net_udp()),
        _ => None,
    })
    .flatten()
}

/// Asks the network world to poll the stack soon (a NIC interrupt, or a
/// system call that queued data or changed a socket).
pub fn kick() {
    KICKED.store(true, Ordering::Release);
    let id = NET_WORLD.load(Ordering::Acquire);
    if id != 0 {
        world::wake(id);
    }
}

/// Runs `f` on the stack (`None` before the network world built it), then
/// kicks the network world if the stack wants a poll now.
pub fn with_stack<R>(f: impl FnOnce(&mut NetStack<NicPort>) -> R) -> Option<R> {
    let mut guard = STACK.lock();
    let stack = guard.as_mut()?;
    let r = f(stack);
    let due = stack.poll_delay(now()).is_some_and(|d| d == Duration::ZERO);
    drop(guard);
    if due {
        kick();
    }
    Some(r)
}

/// Reads a small text file of the root file system (`None` if absent).
fn read_text_file(path: &[u8]) -> Option<String> {
    let vfs = files::vfs()?;
    let cred = vmkernel::vfs::Credentials::root();
    let file = vfs.open(&cred, &vfs.root(), path, vmkernel::vfs::flags::O_RDONLY, 0).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
        if out.len() > 64 << 10 {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// What the status screen shows for the management network right after
/// boot (DHCP may still be running; the log reports the lease).
pub fn status_line() -> Option<String> {
    let stack = STACK.lock();
    let stack = stack.as_ref()?;
    let vmk0 = stack.interface("vmk0")?;
    let mac = vmk0.mac.map(|m| hal::MacAddress(m).to_string()).unwrap_or_default();
    let mode = match vmk0.config.as_ref().map(|c| &c.mode) {
        Some(AddressMode::Dhcp) | None => "DHCP",
        Some(AddressMode::Static { .. }) => "static",
    };
    Some(match vmk0.ipv4 {
        Some((a, p)) => alloc::format!("vmk0 {mac}, {a}/{p} ({mode})"),
        None => alloc::format!("vmk0 {mac}, {mode} (in progress)"),
    })
}

/// Builds the stack (loopback, vmk0 on the first NIC with its boot
/// configuration) and starts the network world. Without a NIC only `lo`
/// exists.
pub fn init(cmdline: &str) {
    files::register_net_files(proc_net_file);
    crate::nic::set_interrupt_hook(kick);
    let mut seed = [0u8; 8];
    files::fill_random(&mut seed);
    let cfg = StackConfig { random_seed: u64::from_le_bytes(seed), ..StackConfig::default() };
    let mut stack = NetStack::new(cfg, now());
    if let Some((port, mac)) = NicPort::first() {
        let index = stack.add_ethernet(port, mac.0, now());
        vswitch::attach_uplink(mac.0);
        VMK0.store(u64::from(index), Ordering::Release);
        let conf = read_text_file(b"/etc/mantle/network.conf");
        let (config, source, errors) = boot_config(cmdline, conf.as_deref());
        for e in &errors {
            log::warn!("net: {e}");
        }
        let from = match source {
            ConfigSource::Cmdline => "the kernel command line",
            ConfigSource::File => "/etc/mantle/network.conf",
            ConfigSource::Default => "the default (DHCP)",
        };
        match stack.configure(index, &config) {
            Ok(()) => log::info!("net: vmk0 {mac} configured from {from}: {:?}", config.mode),
            Err(e) => log::warn!("net: vmk0: cannot apply the configuration from {from}: {e}"),
        }
        let up = phy::link_up(0);
        let _ = stack.set_link(index, up);
        phy::set_interrupts_enabled(0, true);
    } else {
        log::info!("net: no NIC driven; only the loopback interface lo");
    }
    *STACK.lock() = Some(stack);
    match world::spawn_system("net", world::default_group(), network_world) {
        Ok(id) => NET_WORLD.store(id, Ordering::Release),
        Err(e) => log::error!("net: cannot start the network world: {e:?}"),
    }
}

/// The last address reported in the log, to report changes once.
static REPORTED: Mutex<Option<(core::net::Ipv4Addr, u8)>> = Mutex::new(None);

/// How often the network world reads vmk0's link state from the NIC (a
/// device register read, which costs an exit under emulation: not on every
/// poll).
const LINK_CHECK_INTERVAL_NS: u64 = 500_000_000;

/// Frames taken in one poll from which the network world counts the
/// traffic as a bulk stream (see `network_world`).
const BULK_FRAMES: u64 = 16;

fn network_world() {
    let mut link_checked_at: Option<u64> = None;
    let mut received;
    loop {
        KICKED.store(false, Ordering::Release);
        let t = now();
        let uptime = time::uptime_ns();
        let check_link = link_checked_at.is_none_or(|at| uptime.saturating_sub(at) >= LINK_CHECK_INTERVAL_NS);
        let (delay, changed) = {
            let mut guard = STACK.lock();
            let Some(stack) = guard.as_mut() else { return };
            let vmk0 = VMK0.load(Ordering::Acquire) as IfIndex;
            if vmk0 != 0 && check_link {
                let _ = stack.set_link(vmk0, phy::link_up(0));
                link_checked_at = Some(uptime);
            }
            let rx_before = phy::rx_frames(0);
            let delay = stack.poll(t);
            received = phy::rx_frames(0).wrapping_sub(rx_before);
            let changed = stack.take_any_changed();
            report_address(stack);
            (delay, changed)
        };
        if changed {
            io_wait::notify();
        }
        // The switch's frames for the NIC and for VMs, outside the stack's lock.
        vswitch::flush(|f| crate::nic::NICS.lock().get_mut(0).is_some_and(|n| n.transmit_frame(f)));
        if KICKED.load(Ordering::Acquire) {
            continue;
        }
        // The NIC interrupt handler masked further interrupts until the
        // rings are polled empty: let them in again before sleeping, and
        // poll again if a frame came in meanwhile — after the worlds this
        // poll made ready ran, if it woke any (kernel code is not
        // preempted: frames trickling in must not keep the user worlds
        // that answer them off the CPU; measured, `bench net`'s HTTP load
        // fell to a fifth when it did).
        // A bulk stream (many frames per poll) is polled on at once: its
        // reader runs when the window is full and the ring is empty.
        if crate::nic::unmask_after_polling(0) {
            if changed && received < BULK_FRAMES {
                world::yield_now();
            }
            continue;
        }
        if vswitch::pending() {
            // The NIC's ring was full or VMs sent more: again after others ran.
            world::yield_now();
            continue;
        }
        match delay {
            Some(d) if d == Duration::ZERO => world::yield_now(),
            Some(d) => world::block_until(time::uptime_ns().saturating_add(d.total_micros().saturating_mul(1000))),
            // Nothing timed pending: wait for an interrupt or a system call,
            // but look at the link now and then.
            None => world::block_until(time::uptime_ns().saturating_add(1_000_000_000)),
        }
    }
}

fn report_address(stack: &NetStack<NicPort>) {
    let index = VMK0.load(Ordering::Acquire) as IfIndex;
    if index == 0 || *REPORTED.lock() == stack.ipv4(index) {
        return;
    }
    let Some(vmk0) = stack.interface("vmk0") else { return };
    let mut reported = REPORTED.lock();
    if *reported == vmk0.ipv4 {
        return;
    }
    *reported = vmk0.ipv4;
    let mac = vmk0.mac.map(|m| hal::MacAddress(m).to_string()).unwrap_or_default();
    match vmk0.ipv4 {
        Some((a, p)) => {
            let gw = vmk0.gateway.map(|g| alloc::format!(" gateway {g}")).unwrap_or_default();
            crate::kprintln!("net: vmk0 {a}/{p}{gw} MAC {mac}");
        }
        None => crate::kprintln!("net: vmk0 has no address (MAC {mac})"),
    }
}
