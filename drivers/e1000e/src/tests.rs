use hal::host::HostHal;
use hal::{EthernetDevice, MacAddress, Registers, RxToken, TxToken, receive_into, transmit_frame};

use super::*;
use crate::sim::Sim;

type Dev<'a> = E1000e<HostHal, &'a Sim>;

fn frame(n: u8, len: usize) -> Vec<u8> {
    let mut f = vec![n; len];
    f[..6].copy_from_slice(&Sim::mac());
    f
}

#[test]
fn init_resets_and_programs_the_rings() {
    let sim = Sim::new();
    let dev: Dev = E1000e::new(&sim).unwrap();
    assert_eq!(sim.state.borrow().resets, 2, "the simulator's power-on reset and the driver's");
    assert_eq!(dev.mac_address(), MacAddress(Sim::mac()));
    assert_eq!(sim.reg(reg::RDBAL) as u64 | (sim.reg(reg::RDBAH) as u64) << 32, dev.rx.descs.phys());
    assert_eq!(sim.reg(reg::RDLEN), 128 * 16);
    assert_eq!(sim.reg(reg::RDT), 127, "all but one receive descriptor to the device");
    assert_eq!(sim.reg(reg::TDT), sim.reg(reg::TDH), "empty transmit ring");
    assert_ne!(sim.reg(reg::RCTL) & RCTL_EN, 0);
    assert_ne!(sim.reg(reg::TCTL) & TCTL_EN, 0);
    assert_ne!(sim.reg(reg::CTRL) & CTRL_SLU, 0, "link asked up");
    assert_eq!(sim.reg(reg::IMS), 0, "interrupts masked until asked for");
    assert_eq!(sim.reg(reg::RAH0) & RAH_AV, RAH_AV);
    // Every receive descriptor points at its own buffer.
    let d = &dev.rx.descs;
    assert_eq!(d.read_u64(5 * 16), dev.rx.buffers.phys() + 5 * 2048);
}

#[test]
fn mac_comes_from_the_eeprom_when_ral_rah_are_empty() {
    let sim = Sim::new();
    sim.state.borrow_mut().load_mac_at_reset = false;
    let dev: Dev = E1000e::new(&sim).unwrap();
    assert_eq!(dev.mac_address().to_string(), "52:54:00:12:34:56");
    assert_eq!(sim.reg(reg::RAL0), 0x1200_5452, "and is written back for the filter");
}

#[test]
fn no_valid_mac_is_an_error() {
    let sim = Sim::new();
    {
        let mut s = sim.state.borrow_mut();
        s.load_mac_at_reset = false;
        s.eeprom[0] = 0xffff; // a group address
    }
    assert_eq!(Dev::new(&sim).err(), Some(Error::NoMacAddress));
}

#[test]
fn transmit_puts_the_frame_on_the_wire_and_reclaims_it() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    let f = frame(7, 60);
    assert!(transmit_frame(&mut dev, &f));
    assert_eq!(sim.state.borrow().sent, vec![f.clone()]);
    assert_eq!(sim.reg(reg::TDT), 1);
    assert_eq!(dev.tx.in_flight, 1);
    assert!(dev.transmit().is_some());
    assert_eq!(dev.tx.in_flight, 0, "DD reclaimed");
    // Around the ring several times.
    for n in 0..300u16 {
        assert!(transmit_frame(&mut dev, &frame(n as u8, 64 + (n as usize % 1400))));
    }
    assert_eq!(sim.state.borrow().sent.len(), 301);
    assert_eq!(sim.state.borrow().sent[300], frame(43, 363));
    let c = dev.counters();
    assert_eq!((c.tx_frames, c.tx_errors), (301, 0));
}

#[test]
fn a_full_transmit_ring_refuses_and_recovers() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    sim.state.borrow_mut().tx_stalled = true;
    let mut sent = 0;
    while transmit_frame(&mut dev, &frame(1, 100)) {
        sent += 1;
        assert!(sent < 1000);
    }
    assert_eq!(sent, TX_RING - 1);
    // A reply token while full fills scratch and is dropped.
    assert!(sim.deliver(&frame(2, 80), 0));
    let (rx, tx) = dev.receive().unwrap();
    rx.consume(|f| assert_eq!(f.len(), 80));
    tx.consume(70, |b| b.fill(9));
    assert_eq!(dev.counters().tx_errors, 1);
    // The link comes back: the device drains and the driver reclaims.
    sim.state.borrow_mut().tx_stalled = false;
    sim.write32(reg::TDT, sim.reg(reg::TDT));
    assert_eq!(sim.state.borrow().sent.len(), TX_RING - 1);
    assert!(transmit_frame(&mut dev, &frame(3, 100)));
}

#[test]
fn oversized_transmit_is_refused_without_sending() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    assert!(!transmit_frame(&mut dev, &[0; 1515]));
    let tx = dev.transmit().unwrap();
    let n = tx.consume(4000, |b| b.len());
    assert_eq!(n, MAX_FRAME, "the closure gets at most the maximum");
    assert!(sim.state.borrow().sent.is_empty());
    assert_eq!(dev.counters().tx_errors, 1);
}

#[test]
fn receive_in_order_around_the_ring() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(receive_into(&mut dev, &mut buf), None);
    for round in 0..5u8 {
        for n in 0..100u8 {
            assert!(sim.deliver(&frame(n ^ round, 60 + n as usize), 0), "round {round} frame {n}");
        }
        for n in 0..100u8 {
            let len = receive_into(&mut dev, &mut buf).expect("frame");
            assert_eq!(&buf[..len], &frame(n ^ round, 60 + n as usize)[..]);
        }
        assert_eq!(receive_into(&mut dev, &mut buf), None);
    }
    let c = dev.counters();
    assert_eq!((c.rx_frames, c.rx_dropped), (500, 0));
    assert_eq!(sim.reg(reg::RDT) as usize, (500 - 1) % RX_RING, "each buffer returned");
}

#[test]
fn overrun_loses_frames_at_the_device_not_in_the_driver() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    let accepted = (0..200).filter(|&n| sim.deliver(&frame(n as u8, 64), 0)).count();
    assert_eq!(accepted, RX_RING - 1);
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while receive_into(&mut dev, &mut buf).is_some() {
        got += 1;
    }
    assert_eq!(got, RX_RING - 1);
    assert!(sim.deliver(&frame(1, 64), 0), "room again after the driver gave buffers back");
}

#[test]
fn errored_and_malformed_frames_are_dropped() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    assert!(sim.deliver(&frame(1, 64), 0x01)); // CRC error
    assert!(sim.deliver(&frame(2, 64), 0));
    assert!(sim.deliver(&frame(3, 8), 0)); // shorter than a header
    assert!(sim.deliver(&frame(4, 64), 0));
    // A descriptor the device marks done without EOP (a chained frame).
    let d = dev.rx.descs.read_u64(4 * 16 + 8);
    assert_eq!(d, 0);
    assert!(sim.deliver(&frame(5, 64), 0));
    dev.rx.descs.write_u64(4 * 16 + 8, 64 | (RX_STATUS_DD as u64) << 32);
    let mut buf = [0u8; 2048];
    assert_eq!(receive_into(&mut dev, &mut buf), Some(64));
    assert_eq!(buf[6], 2);
    assert_eq!(receive_into(&mut dev, &mut buf), Some(64));
    assert_eq!(buf[6], 4);
    assert_eq!(receive_into(&mut dev, &mut buf), None);
    assert_eq!(dev.counters().rx_dropped, 3);
    assert_eq!(dev.counters().rx_frames, 2);
}

#[test]
fn interrupt_causes_are_acknowledged_and_masked() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    dev.set_interrupts_enabled(true);
    assert_eq!(sim.reg(reg::IMS), INT_ENABLED);
    assert!(!dev.acknowledge_interrupt().any());
    sim.deliver(&frame(1, 64), 0);
    let cause = dev.acknowledge_interrupt();
    assert!(cause.rx && !cause.tx && !cause.link);
    assert_eq!(sim.reg(reg::ICR), 0);
    // MSI-X mode: ICR is not cleared by reading; the driver writes it back.
    sim.state.borrow_mut().msix = true;
    dev.route_causes_to_msix(2);
    assert_eq!(sim.reg(reg::IVAR), 0x8000_0000 | 0xa << 16 | 0xa << 8 | 0xa);
    assert!(transmit_frame(&mut dev, &frame(2, 64)));
    sim.state.borrow_mut().regs.insert(reg::ICR, INT_TXQ0 | INT_LSC | INT_OTHER | INT_ASSERTED);
    let cause = dev.acknowledge_interrupt();
    assert!(cause.tx && cause.link && !cause.rx && !cause.other);
    assert_eq!(sim.reg(reg::ICR), 0);
    assert_eq!(dev.counters().interrupts, 2);
    dev.set_interrupts_enabled(false);
    assert_eq!(sim.reg(reg::IMS), 0);
}

#[test]
fn link_state_follows_status() {
    let sim = Sim::new();
    let mut dev: Dev = E1000e::new(&sim).unwrap();
    assert!(dev.link_up());
    sim.state.borrow_mut().regs.insert(reg::STATUS, 0);
    assert!(!dev.link_up());
}

#[test]
fn drop_resets_the_device() {
    let sim = Sim::new();
    let dev: Dev = E1000e::new(&sim).unwrap();
    drop(dev);
    assert_eq!(sim.reg(reg::RCTL) & RCTL_EN, 0, "receive stopped before the buffers go");
    assert_eq!(sim.state.borrow().resets, 3);
}

#[test]
fn supported_ids() {
    assert!(supports(0x8086, 0x10d3));
    assert!(!supports(0x8086, 0x100e), "e1000 (82540EM) is a different programming model");
    assert!(!supports(0x1af4, 0x1000));
}
