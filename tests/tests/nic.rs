//! The NIC drivers on QEMU's devices: each NIC is found on PCI, brought
//! up (MAC from the device, link up, MSI-X routed to an IDT vector), sends
//! an ARP request for QEMU's user-network gateway 10.0.2.2 and receives
//! the reply after a receive interrupt (ktest `nic.arp_reply_by_interrupt`),
//! then 300 more round trips take its rings around without the heap
//! growing (ktest `nic.rings_wrap_without_allocation`).
//! NICs without a driver are listed, never fatal.

use image_builder::qemu::{Machine, Nic, NicModel};
use tests::*;

const CMDLINE: &str = "test=nic debug_exit after_boot=poweroff";

/// A NIC on its own user network, without host port forwards (tests must
/// not compete for host ports).
fn nic(model: NicModel) -> Nic {
    Nic { model, forwards: Vec::new() }
}

fn assert_arp_by_interrupt(b: &Booted, index: u32, model: &str, mac: &str, vector: u8) {
    b.assert_contains(&format!("nic{index}: {model} {mac} at "));
    b.assert_contains(&format!(
        "ktest: nic{index}: {model} {mac} link up; ARP reply from 10.0.2.2 is-at 52:55:0a:00:02:02, \
         received by interrupt (MSI-X vector {vector:#x}, "
    ));
    b.assert_contains(&format!("ktest: nic{index}: 300 ARP round trips, heap unchanged"));
}

#[test]
fn virtio_net_receives_arp_reply_by_msix() {
    let mut q = qemu_pvh(CMDLINE);
    q.nics = vec![nic(NicModel::VirtioNet)];
    let b = boot(&q);
    assert_arp_by_interrupt(&b, 0, "virtio-net", "52:54:00:12:34:56", 0x50);
    b.assert_contains("ktest: 2 passed, 0 failed").assert_exit(EXIT_SUCCESS);
}

/// Without MSI-X (`vectors=0`; virtio-net has no MSI), the NIC interrupts
/// through its INTx line routed at the IOAPIC, level-triggered; the ARP
/// reply still arrives by interrupt, 300 round trips too.
#[test]
fn virtio_net_without_msix_receives_by_intx() {
    let mut q = qemu_pvh(CMDLINE);
    q.extra = ["-netdev", "user,id=intx", "-device", "virtio-net-pci,netdev=intx,vectors=0"].map(String::from).to_vec();
    let b = boot(&q);
    b.assert_contains("nic0: virtio-net 52:54:00:12:34:56 at ");
    b.assert_contains("interrupts INTx GSI ");
    b.assert_contains("ktest: nic0: virtio-net 52:54:00:12:34:56 link up; ARP reply from 10.0.2.2 is-at 52:55:0a:00:02:02, received by interrupt (INTx GSI ");
    b.assert_contains("ktest: nic0: 300 ARP round trips, heap unchanged");
    b.assert_contains("ktest: 2 passed, 0 failed").assert_exit(EXIT_SUCCESS);
}

/// e1000e on q35 (its default NIC), next to a modern-only virtio-net
/// (device 1af4:1041, as QEMU presents it behind PCIe).
#[test]
fn e1000e_and_modern_virtio_net_on_q35_receive_by_msix() {
    let mut q = qemu_pvh(CMDLINE);
    q.machine = Machine::Q35;
    q.nics = vec![nic(NicModel::E1000e)];
    q.extra = ["-netdev", "user,id=modern", "-device", "virtio-net-pci,netdev=modern,disable-legacy=on"]
        .map(String::from)
        .to_vec();
    let b = boot(&q);
    b.assert_contains("8086:10d3 class 02.00.00 network controller");
    b.assert_contains("1af4:1041 class 02.00.00 network controller");
    assert_arp_by_interrupt(&b, 0, "e1000e", "52:54:00:12:34:56", 0x50);
    assert_arp_by_interrupt(&b, 1, "virtio-net", "52:54:00:12:34:57", 0x51);
    b.assert_contains("| Network adapters:        nic0 e1000e 52:54:00:12:34:56, link up ");
    b.assert_contains("|                          nic1 virtio-net 52:54:00:12:34:57, link up ");
    b.assert_contains("ktest: 2 passed, 0 failed").assert_exit(EXIT_SUCCESS);
}

/// An Intel e1000 (82540EM, no driver) and a legacy-only virtio-net
/// (no virtio 1.0 capabilities) are reported in the log and on the status
/// screen; the host boots to ready.
#[test]
fn nics_without_a_driver_are_listed_not_fatal() {
    let mut q = qemu_pvh(POWEROFF_CMDLINE);
    q.extra = [
        "-netdev", "user,id=old", "-device", "e1000,netdev=old",
        "-netdev", "user,id=legacy", "-device", "virtio-net-pci,netdev=legacy,disable-modern=on",
    ]
    .map(String::from)
    .to_vec();
    let b = boot(&q);
    b.assert_contains("8086:100e class 02.00.00 network controller: no driver for this NIC (listed, not used)");
    b.assert_contains("1af4:1000 class 02.00.00 network controller: cannot bring it up: virtio-net: ");
    b.assert_lacks("nic0:");
    b.assert_contains("| Network adapters:        0000:00:03.0 8086:100e: no driver ");
    b.assert_contains("|                          0000:00:04.0 1af4:1000: driver failed (see log) ");
    b.assert_ready_and_success();
}

/// A 1 GiB ivshmem BAR does not fit below 4 GiB, so SeaBIOS places the
/// 64-bit BARs above (virtio-net's BAR 4 at 0x1_4000_0000 with 512 MiB of
/// RAM, checked with QEMU's `info pci`): beyond the boot direct map, so
/// the kernel maps the device's registers itself.
#[test]
fn virtio_net_with_registers_above_4gib() {
    let mut q = qemu_pvh(CMDLINE);
    q.machine = Machine::Q35;
    q.nics = vec![nic(NicModel::VirtioNet)];
    q.extra = ["-object", "memory-backend-ram,id=shm,size=1G", "-device", "ivshmem-plain,memdev=shm"]
        .map(String::from)
        .to_vec();
    let b = boot(&q);
    assert_arp_by_interrupt(&b, 0, "virtio-net", "52:54:00:12:34:56", 0x50);
    b.assert_contains("ktest: 2 passed, 0 failed").assert_exit(EXIT_SUCCESS);
}
