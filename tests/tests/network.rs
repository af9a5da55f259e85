//! The management network end to end, on virtio-net and on e1000e:
//! Mantle gets 10.0.2.15 by DHCP from QEMU's user network; BusyBox
//! `ifconfig`, `route` and `netstat` show it; `ping` reaches the gateway
//! (raw ICMP as root); `wget` fetches a file from an HTTP server this test
//! runs on the host (10.0.2.2 is the host's 127.0.0.1) with a matching
//! sha256; BusyBox `httpd` on Mantle serves the file back to the host
//! through a forwarded port, byte-exact (on 8000: port 80 is hostd's HTTPS
//! redirect).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use image_builder::qemu::{Console, Machine, Nic, NicModel, PortForward};
use tests::*;

const PROMPT: &str = "# ";
const STEP: Duration = Duration::from_secs(300);
/// The transferred file (issue 9's 64 MiB).
const PAYLOAD_BYTES: usize = 64 << 20;

fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..PAYLOAD_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payload");
    std::fs::write(&path, data).expect("writing the payload");
    let out = std::process::Command::new("sha256sum").arg(&path).output().expect("running sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().expect("sha256sum output").to_string()
}

/// A minimal HTTP/1.0 file server on 127.0.0.1 (QEMU's 10.0.2.2): every
/// GET gets `body`.
fn serve(body: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the host HTTP server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let body = body.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let head = format!("HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body));
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(c: &mut Console, cmd: &str) -> String {
    c.run(cmd, PROMPT, STEP).unwrap_or_else(|e| panic!("`{cmd}`: {e}\n--- serial log ---\n{}", c.log()))
}

fn check(c: &Console, ok: bool, what: &str) {
    if !ok {
        panic!("{what}\n--- serial log ---\n{}", c.log());
    }
}

/// GET `path` from 127.0.0.1:`port`: the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(300))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: mantle\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.read_to_end(&mut all).map_err(|e| e.to_string())?;
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header end")?;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {head}"));
    }
    Ok(all[split + 4..].to_vec())
}

fn network_end_to_end(model: NicModel, machine: Machine, mac: &str) {
    let data = payload();
    let want_sha = sha256_hex(&data);
    let host_port = serve(data.clone());
    let fwd = free_port();

    let _lock = emulator_lock();
    let mut q = qemu_iso(iso("network", "", &[]));
    q.machine = machine;
    q.debug_exit = false;
    q.nics = vec![Nic { model, forwards: vec![PortForward { host: fwd, guest: 8000 }] }];
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut c, Duration::from_secs(120), STEP);

    // DHCP: the address comes from QEMU's server (10.0.2.15).
    let deadline = Instant::now() + Duration::from_secs(60);
    let ifconfig = loop {
        let out = run(&mut c, "ifconfig vmk0");
        if out.contains("inet addr:10.0.2.15") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    check(&c, ifconfig.contains("inet addr:10.0.2.15"), &format!("ifconfig vmk0 shows no DHCP address:\n{ifconfig}"));
    check(&c, ifconfig.contains(&format!("HWaddr {}", mac.to_uppercase())) || ifconfig.contains(&format!("HWaddr {mac}")), &format!("ifconfig vmk0 MAC:\n{ifconfig}"));
    check(&c, ifconfig.contains("Mask:255.255.255.0"), &format!("ifconfig vmk0 netmask:\n{ifconfig}"));
    check(&c, c.log().contains(&format!("net: vmk0 10.0.2.15/24 gateway 10.0.2.2 MAC {mac}")), "the log reports vmk0's lease");
    let all = run(&mut c, "ifconfig");
    check(&c, all.contains("lo ") && all.contains("inet addr:127.0.0.1"), &format!("ifconfig lists lo:\n{all}"));

    let route = run(&mut c, "route -n");
    check(
        &c,
        route.lines().any(|l| l.starts_with("0.0.0.0") && l.contains("10.0.2.2") && l.contains("UG") && l.ends_with("vmk0")),
        &format!("route -n shows the default route through 10.0.2.2:\n{route}"),
    );

    let ping = run(&mut c, "ping -c 3 10.0.2.2");
    check(&c, ping.contains("3 packets transmitted, 3 packets received"), &format!("ping 10.0.2.2:\n{ping}"));

    // wget from the host's server, checksum on Mantle.
    let wget = run(&mut c, &format!("wget -q -O /tmp/payload http://10.0.2.2:{host_port}/payload; echo wget=$?"));
    check(&c, wget.contains("wget=0"), &format!("wget failed:\n{wget}"));
    let sum = run(&mut c, "sha256sum /tmp/payload");
    check(&c, sum.contains(&want_sha), &format!("sha256 on Mantle {sum:?}, want {want_sha}"));

    // httpd on Mantle, fetched through the forwarded port.
    run(&mut c, "httpd -p 8000 -h /tmp");
    let netstat = run(&mut c, "netstat -tln");
    check(&c, netstat.lines().any(|l| l.contains(":8000 ") && l.contains("LISTEN")), &format!("netstat -tln shows port 8000:\n{netstat}"));
    let got = http_get(fwd, "/payload").unwrap_or_else(|e| panic!("fetching from Mantle's httpd: {e}\n--- serial log ---\n{}", c.log()));
    check(&c, got.len() == data.len(), &format!("httpd sent {} bytes, want {}", got.len(), data.len()));
    check(&c, got == data, "httpd's bytes differ from the file");
}

#[test]
fn virtio_net_dhcp_ping_wget_httpd() {
    network_end_to_end(NicModel::VirtioNet, Machine::Pc, "52:54:00:12:34:56");
}

#[test]
fn e1000e_dhcp_ping_wget_httpd() {
    network_end_to_end(NicModel::E1000e, Machine::Q35, "52:54:00:12:34:56");
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two Mantle hosts on one virtual L2 segment (two QEMUs joined by
/// `-netdev dgram`, UDP between them on the host's loopback), with static
/// addresses from the kernel command line: host A serves a 64 MiB file
/// with BusyBox `httpd`, host B fetches it with `wget` over TCP, and both
/// compute the same sha256. A has a virtio-net NIC, B an e1000e (q35).
/// Neither runs hostd or the CIM broker.
#[test]
fn two_hosts_on_one_segment_transfer_64_mib_over_tcp() {
    let (port_a, port_b) = (free_udp_port(), free_udp_port());
    let host = |name: &str, ip: &str, mac: &str, model: NicModel, local: u16, remote: u16| {
        let cmdline = format!("{NO_AGENTS} ip={ip}::10.0.3.254:255.255.255.0::vmk0:off");
        let mut q = qemu_iso(iso(name, &cmdline, &[]));
        q.debug_exit = false;
        if model == NicModel::E1000e {
            q.machine = Machine::Q35;
        }
        q.extra = vec![
            "-netdev".into(),
            format!("dgram,id=seg,local.type=inet,local.host=127.0.0.1,local.port={local},remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"),
            "-device".into(),
            format!("{},netdev=seg,mac={mac}", model.device()),
        ];
        q
    };
    // One host on each driver: the stack is the same over both.
    let qa = host("twohost-a", "10.0.3.1", "52:54:00:00:03:01", NicModel::VirtioNet, port_a, port_b);
    let qb = host("twohost-b", "10.0.3.2", "52:54:00:00:03:02", NicModel::E1000e, port_b, port_a);
    let _lock = emulator_lock();
    let mut a = qa.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    let mut b = qb.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    activate_shell(&mut a, Duration::from_secs(120), STEP);
    activate_shell(&mut b, Duration::from_secs(120), STEP);
    let ifa = run(&mut a, "ifconfig vmk0");
    check(&a, ifa.contains("inet addr:10.0.3.1"), &format!("host A's static address:\n{ifa}"));
    // A pseudo-random file on A (the kernel's CSPRNG), its sum, and httpd.
    let made = run(&mut a, "dd if=/dev/urandom of=/tmp/blob bs=1M count=64 2>&1; sha256sum /tmp/blob; httpd -p 8000 -h /tmp");
    let sum_a = made.lines().find(|l| l.ends_with("/tmp/blob")).and_then(|l| l.split_whitespace().next()).map(str::to_string);
    let sum_a = sum_a.unwrap_or_else(|| panic!("no sha256 on host A: {made}\n--- serial log A ---\n{}", a.log()));
    let t = Instant::now();
    let got = run(&mut b, "wget -q -O /tmp/blob http://10.0.3.1:8000/blob; echo wget=$?; sha256sum /tmp/blob");
    eprintln!("64 MiB from Mantle A to Mantle B over TCP in {:?}", t.elapsed());
    check(&b, got.contains("wget=0"), &format!("wget on host B:\n{got}\n--- serial log A ---\n{}", a.log()));
    check(&b, got.contains(&sum_a), &format!("sha256 on B {got:?}, on A {sum_a}"));
}
