//! In-kernel test of the NIC drivers on the real (emulated) devices: link
//! up, an ARP request for QEMU's user-network gateway sent, and its reply
//! received after the NIC's interrupt arrived.

use alloc::format;
use alloc::string::String;
use core::sync::atomic::Ordering;

use super::{IRQ_CAUSES, IRQ_COUNT, NICS};
use crate::arch::cpu;
use crate::{kprintln, time};

/// QEMU's user network: the guest's usual address and the gateway's.
const GUEST_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY_IP: [u8; 4] = [10, 0, 2, 2];
const TIMEOUT_NS: u64 = 5_000_000_000;

/// Every driven NIC answers: link up, ARP reply from 10.0.2.2 by interrupt.
/// (With no NIC driven there is nothing to check; the image tests that
/// attach NICs assert the per-NIC line this prints.)
pub fn arp_reply_by_interrupt() -> Result<(), String> {
    let count = NICS.lock().len();
    if count == 0 {
        kprintln!("ktest: nic: no NIC driven; nothing to check");
    }
    for i in 0..count {
        check_nic(i).map_err(|e| format!("nic{i}: {e}"))?;
    }
    Ok(())
}

/// Every driven NIC completes 300 ARP round trips with 10.0.2.2, which
/// takes both rings around more than twice (e1000e: 128 descriptors,
/// virtio-net: 64), and the heap's bytes in use do not change: the
/// drivers refill their rings without allocating.
pub fn rings_wrap_without_allocation() -> Result<(), String> {
    let count = NICS.lock().len();
    if count == 0 {
        kprintln!("ktest: nic: no NIC driven; nothing to check");
    }
    for i in 0..count {
        round_trips(i, 300).map_err(|e| format!("nic{i}: {e}"))?;
    }
    Ok(())
}

fn round_trips(i: usize, rounds: u32) -> Result<(), String> {
    let deadline = time::uptime_ns() + 4 * TIMEOUT_NS;
    let mac = NICS.lock().get(i).ok_or("gone")?.mac_address();
    let request = arp_request(mac.0);
    let mut buf = [0u8; 1514];
    let (mut sent, mut replies, mut other) = (0u32, 0u32, 0u32);
    let (_, heap_before) = crate::mm::heap::stats();
    let mut drain = |nic: &mut super::Nic, replies: &mut u32, other: &mut u32| {
        while let Some(len) = nic.receive_into(&mut buf) {
            match arp_reply_from_gateway(&buf[..len.min(1514)], mac.0) {
                Some(_) => *replies += 1,
                None => *other += 1,
            }
        }
    };
    while replies < rounds {
        if time::uptime_ns() > deadline {
            return Err(format!("{replies} of {rounds} ARP replies ({sent} requests sent, {other} other frames) within 20 s"));
        }
        let mut nics = NICS.lock();
        let nic = nics.get_mut(i).ok_or("gone")?;
        // Keep a few requests in flight, as a stack would.
        while sent < rounds && sent - replies < 8 && nic.transmit_frame(&request) {
            sent += 1;
        }
        drain(nic, &mut replies, &mut other);
        drop(nics);
        cpu::take_pending_interrupts();
    }
    let (_, heap_after) = crate::mm::heap::stats();
    if heap_after != heap_before {
        return Err(format!("the heap's bytes in use went from {heap_before} to {heap_after} during the round trips"));
    }
    let c = NICS.lock().get(i).ok_or("gone")?.counters();
    kprintln!(
        "ktest: nic{i}: {rounds} ARP round trips, heap unchanged ({heap_after} bytes in use); rx {} frames {} dropped, tx {} frames {} errors",
        c.rx_frames, c.rx_dropped, c.tx_frames, c.tx_errors
    );
    Ok(())
}

fn arp_request(mac: [u8; 6]) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].fill(0xff);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    // Ethernet, IPv4, 6-byte and 4-byte addresses, request.
    f[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&GUEST_IP);
    f[38..42].copy_from_slice(&GATEWAY_IP);
    f
}

/// The gateway's MAC if `frame` is an ARP reply from it to `mac`.
fn arp_reply_from_gateway(frame: &[u8], mac: [u8; 6]) -> Option<[u8; 6]> {
    let f = frame.get(..42)?;
    let is_reply = f[0..6] == mac && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] && f[28..32] == GATEWAY_IP;
    is_reply.then(|| f[22..28].try_into().ok()).flatten()
}

fn check_nic(i: usize) -> Result<(), String> {
    let deadline = time::uptime_ns() + TIMEOUT_NS;
    let (mac, model, irq) = {
        let nics = NICS.lock();
        let nic = nics.get(i).ok_or("gone")?;
        (nic.mac_address(), nic.model(), nic.irq)
    };
    if !mac.is_valid_unicast() {
        return Err(format!("MAC address {mac} is no unicast address"));
    }
    while !NICS.lock().get_mut(i).is_some_and(|n| n.link_up()) {
        if time::uptime_ns() > deadline {
            return Err("link stayed down".into());
        }
        cpu::wait_for_interrupt();
    }
    let irqs_before = IRQ_COUNT[i].load(Ordering::Acquire);
    IRQ_CAUSES[i].store(0, Ordering::Release);
    {
        let mut nics = NICS.lock();
        let nic = nics.get_mut(i).ok_or("gone")?;
        nic.set_interrupts_enabled(true);
        if !nic.transmit_frame(&arp_request(mac.0)) {
            return Err("no transmit buffer for the ARP request".into());
        }
    }
    let mut buf = [0u8; 1514];
    let mut other_frames = 0;
    let result = loop {
        // Wait for an interrupt (the NIC's, or the next timer tick), then
        // look at what arrived.
        cpu::wait_for_interrupt();
        let irqs = IRQ_COUNT[i].load(Ordering::Acquire) - irqs_before;
        let mut nics = NICS.lock();
        let nic = nics.get_mut(i).ok_or("gone")?;
        let mut reply = None;
        while let Some(len) = nic.receive_into(&mut buf) {
            match arp_reply_from_gateway(&buf[..len.min(buf.len())], mac.0) {
                Some(gw) => reply = Some(gw),
                None => other_frames += 1,
            }
        }
        if let Some(gateway) = reply {
            if irqs == 0 || IRQ_CAUSES[i].load(Ordering::Acquire) & 1 == 0 {
                break Err(format!("the ARP reply arrived but no receive interrupt did ({irq}, {irqs} interrupts)"));
            }
            let gw = hal::MacAddress(gateway);
            let c = nic.counters();
            kprintln!(
                "ktest: nic{i}: {model} {mac} link up; ARP reply from 10.0.2.2 is-at {gw}, received by interrupt ({irq}, {irqs} interrupts; rx {} tx {} frames, {other_frames} other)",
                c.rx_frames,
                c.tx_frames
            );
            break Ok(());
        }
        if time::uptime_ns() > deadline {
            break Err(format!("no ARP reply from 10.0.2.2 within 5 s ({irqs} interrupts, {other_frames} other frames)"));
        }
    };
    if let Some(nic) = NICS.lock().get_mut(i) {
        nic.set_interrupts_enabled(false);
    }
    result
}
