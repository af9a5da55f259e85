//! The virtual switch with real guests (issue 11, virtio): three Mantle VMs
//! run the guest suite's `virtio-net` check, each with a virtio-mmio NIC.
//! Two on the port group "VM Network" hear each other's broadcast frames
//! through vSwitch0; the third, on the port group "Lab" (VLAN 20) made with
//! `vmkcli portgroup add`, hears neither. `vmkcli vswitch list` shows the
//! ports with their counters.
//!
//! The host has a virtio-net NIC (`MANTLE_TEST_NIC=e1000e`: an e1000e on
//! q35) on QEMU's user network, vSwitch0's uplink:
//! a fourth guest on "VM Network" reaches a UDP listener of this test on
//! the host through it (QEMU maps 10.0.2.2 to the host's loopback) and
//! hears the answer, while vmk0 keeps working (BusyBox `wget` on Mantle
//! fetches from this test's TCP listener).

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use image_builder::qemu::{Console, Nic, NicModel};
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(300);

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

#[test]
fn vms_on_one_port_group_hear_each_other_and_another_vlan_hears_nothing() {
    let _lock = emulator_lock();
    // The host side of the uplink check: a UDP listener that answers each
    // "mantle-uplink-hello" and an HTTP listener for vmk0's check.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    udp.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let udp_port = udp.local_addr().expect("addr").port();
    let hellos = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let udp_thread = {
        let (hellos, done) = (hellos.clone(), done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while !done.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf)
                    && buf[..n].starts_with(b"mantle-uplink-hello")
                {
                    hellos.fetch_add(1, Ordering::Relaxed);
                    let _ = udp.send_to(b"mantle-uplink-reply", from);
                }
            }
        })
    };
    let http = TcpListener::bind("127.0.0.1:0").expect("bind TCP");
    let http_port = http.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in http.incoming().flatten() {
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nmantle-vmk0-ok");
        }
    });
    let mut q = qemu_iso(iso("virtio-disk", "", &[]));
    q.debug_exit = false;
    let model = tests::net::nic_under_test(NicModel::VirtioNet);
    q.machine = tests::net::machine_for(model);
    q.nics = vec![Nic { model, forwards: Vec::new() }];
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(180), STEP);
    run(&mut c, "vmkcli portgroup add Lab --vlan 20");
    let mut ids = Vec::new();
    let uplink_args = format!("-uplink uplink-port={udp_port}");
    for (name, group, args) in [
        ("neta", "VM Network", ""),
        ("netb", "VM Network", ""),
        ("netc", "Lab", " virtio-net-expect=none virtio-net-secs=8"),
        ("netd", "VM Network", uplink_args.as_str()),
    ] {
        let out = run(
            &mut c,
            &format!(
                "printf 'name = {name}\\nkernel = /usr/lib/mantle/guests/suite.elf\\nmemory_mib = 32\\ncmdline = \"only=virtio-net{args}\"\\nnic0.network = \"{group}\"\\n' > /tmp/{name}.vmx && vmkcli vm create --config /tmp/{name}.vmx"
            ),
        );
        let id: u32 = out
            .split("created VM ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("vmkcli vm create: {out}\n--- serial log ---\n{}", c.log()));
        ids.push(id);
    }
    check(&c, c.log().contains("as virtio-net in slot 0 (GSI 16)"), "the NICs are in slot 0");
    let starts: Vec<String> = ids.iter().map(|i| format!("vmkcli vm start {i}")).collect();
    run(&mut c, &starts.join(" && "));
    let mut consoles = String::new();
    for id in &ids {
        run(&mut c, &format!("vmkcli vm wait {id} --timeout 240"));
        consoles += &run(&mut c, &format!("vmkcli vm console {id}"));
    }
    let passed = consoles.matches("test virtio-net ... ok").count();
    check(&c, passed == 3 && !consoles.contains("FAIL"), &format!("the guests' virtio-net checks:\n{consoles}"));
    check(&c, consoles.contains("test virtio-net-uplink ... ok"), &format!("the guest behind the uplink:\n{consoles}"));
    done.store(true, Ordering::Relaxed);
    let _ = udp_thread.join();
    check(&c, hellos.load(Ordering::Relaxed) > 0, "the host's UDP listener heard the guest");
    let got = run(&mut c, &format!("wget -q -O - http://10.0.2.2:{http_port}/; echo"));
    check(&c, got.contains("mantle-vmk0-ok"), &format!("vmk0 with the uplink attached: wget said {got:?}"));
    let list = run(&mut c, "vmkcli vswitch list");
    for nic in ["neta.nic0 in \"VM Network\"", "netb.nic0 in \"VM Network\"", "netc.nic0 in \"Lab\"", "netd.nic0 in \"VM Network\"", "uplink the physical NIC"] {
        check(&c, list.contains(nic), &format!("{nic} in the listing:\n{list}"));
    }
    let delivered = |nic: &str| -> u64 {
        list.lines()
            .find(|l| l.contains(nic))
            .and_then(|l| l.split("tx ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    check(&c, delivered("neta.nic0") > 0 && delivered("netb.nic0") > 0 && delivered("netc.nic0") == 0, &format!("frames delivered per port:\n{list}"));
}
