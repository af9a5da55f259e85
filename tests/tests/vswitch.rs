//! The virtual switch with real guests (issue 11, virtio): three Mantle VMs
//! run the guest suite's `virtio-net` check, each with a virtio-mmio NIC.
//! Two on the port group "VM Network" hear each other's broadcast frames
//! through vSwitch0; the third, on the port group "Lab" (VLAN 20) made with
//! `vmkcli portgroup add`, hears neither. `vmkcli vswitch list` shows the
//! ports with their counters.

use std::time::Duration;

use image_builder::qemu::Console;
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
    let mut q = qemu_iso(iso("virtio-disk", "", &[]));
    q.debug_exit = false;
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(180), STEP);
    run(&mut c, "vmkcli portgroup add Lab --vlan 20");
    let mut ids = Vec::new();
    for (name, group, args) in [("neta", "VM Network", ""), ("netb", "VM Network", ""), ("netc", "Lab", " virtio-net-expect=none virtio-net-secs=8")] {
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
    let list = run(&mut c, "vmkcli vswitch list");
    for nic in ["neta.nic0 in \"VM Network\"", "netb.nic0 in \"VM Network\"", "netc.nic0 in \"Lab\""] {
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
