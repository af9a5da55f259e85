//! What the network image tests share: the NIC model they run on, and the
//! management-network steps (DHCP, `ifconfig`/`route`/`netstat`, `ping`,
//! `wget` from the host, BusyBox `httpd` fetched by the host) that
//! `tests/network.rs` runs on its boot and `tests/tokio_http.rs` on
//! another NIC model in its own.
//!
//! `MANTLE_TEST_NIC=virtio|e1000e` runs every network image test
//! (`network`, `tokio_http`, `vswitch`) on that NIC model (both hosts of
//! the two-host test too); unset, each test uses its own default, so the
//! suite covers both models without booting twice.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use image_builder::qemu::{Console, Machine, NicModel};

/// The NIC model a network test runs on: `MANTLE_TEST_NIC`, else `default`.
/// An unknown value is a test error, not a silent default.
pub fn nic_under_test(default: NicModel) -> NicModel {
    match std::env::var("MANTLE_TEST_NIC").as_deref() {
        Err(_) | Ok("") => default,
        Ok("virtio") | Ok("virtio-net") => NicModel::VirtioNet,
        Ok("e1000e") => NicModel::E1000e,
        Ok(other) => panic!("MANTLE_TEST_NIC={other:?}: expected `virtio` or `e1000e`"),
    }
}

/// The machine a NIC model is tested on: e1000e on q35 (whose default NIC
/// it is), virtio-net on the default `pc`.
pub fn machine_for(model: NicModel) -> Machine {
    match model {
        NicModel::VirtioNet => Machine::Pc,
        NicModel::E1000e => Machine::Q35,
    }
}

/// QEMU's first MAC on its user network (what vmk0 reports).
pub const FIRST_MAC: &str = "52:54:00:12:34:56";

/// `bytes` of pseudo-random data (the same on every run).
pub fn payload(bytes: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..bytes)
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
/// GET gets `body`. Returns its port.
pub fn serve(body: Vec<u8>) -> u16 {
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

/// A free TCP port on 127.0.0.1 (for a forward).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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

/// GET `path` from 127.0.0.1:`port`: the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<Vec<u8>, String> {
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

/// The management network end to end on a booted host with a shell at
/// `c` and the host port `fwd_to_8000` forwarded to its port 8000: vmk0
/// gets 10.0.2.15 by DHCP from QEMU's user network (MAC [`FIRST_MAC`]);
/// `ifconfig`, `route -n` show it; `ping -c 3 10.0.2.2` answers; `wget`
/// fetches `payload_bytes` from an HTTP server on the host with a
/// matching sha256; BusyBox `httpd` on Mantle serves the file back
/// through the forwarded port, byte-exact, and `netstat -tln` lists it.
pub fn dhcp_ping_wget_httpd(c: &mut Console, fwd_to_8000: u16, payload_bytes: usize) {
    let data = payload(payload_bytes);
    let want_sha = sha256_hex(&data);
    let host_port = serve(data.clone());

    // DHCP: the address comes from QEMU's server (10.0.2.15).
    let deadline = Instant::now() + Duration::from_secs(60);
    let ifconfig = loop {
        let out = run(c, "ifconfig vmk0");
        if out.contains("inet addr:10.0.2.15") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let mac = FIRST_MAC;
    check(c, ifconfig.contains("inet addr:10.0.2.15"), &format!("ifconfig vmk0 shows no DHCP address:\n{ifconfig}"));
    check(c, ifconfig.contains(&format!("HWaddr {}", mac.to_uppercase())) || ifconfig.contains(&format!("HWaddr {mac}")), &format!("ifconfig vmk0 MAC:\n{ifconfig}"));
    check(c, ifconfig.contains("Mask:255.255.255.0"), &format!("ifconfig vmk0 netmask:\n{ifconfig}"));
    check(c, c.log().contains(&format!("net: vmk0 10.0.2.15/24 gateway 10.0.2.2 MAC {mac}")), "the log reports vmk0's lease");
    let all = run(c, "ifconfig");
    check(c, all.contains("lo ") && all.contains("inet addr:127.0.0.1"), &format!("ifconfig lists lo:\n{all}"));

    let route = run(c, "route -n");
    check(
        c,
        route.lines().any(|l| l.starts_with("0.0.0.0") && l.contains("10.0.2.2") && l.contains("UG") && l.ends_with("vmk0")),
        &format!("route -n shows the default route through 10.0.2.2:\n{route}"),
    );

    let ping = run(c, "ping -c 3 10.0.2.2");
    check(c, ping.contains("3 packets transmitted, 3 packets received"), &format!("ping 10.0.2.2:\n{ping}"));

    // wget from the host's server, checksum on Mantle.
    let wget = run(c, &format!("wget -q -O /tmp/payload http://10.0.2.2:{host_port}/payload; echo wget=$?"));
    check(c, wget.contains("wget=0"), &format!("wget failed:\n{wget}"));
    let sum = run(c, "sha256sum /tmp/payload");
    check(c, sum.contains(&want_sha), &format!("sha256 on Mantle {sum:?}, want {want_sha}"));

    // httpd on Mantle, fetched through the forwarded port.
    run(c, "httpd -p 8000 -h /tmp");
    let netstat = run(c, "netstat -tln");
    check(c, netstat.lines().any(|l| l.contains(":8000 ") && l.contains("LISTEN")), &format!("netstat -tln shows port 8000:\n{netstat}"));
    let got = http_get(fwd_to_8000, "/payload").unwrap_or_else(|e| panic!("fetching from Mantle's httpd: {e}\n--- serial log ---\n{}", c.log()));
    check(c, got.len() == data.len(), &format!("httpd sent {} bytes, want {}", got.len(), data.len()));
    check(c, got == data, "httpd's bytes differ from the file");
    // The file served, the space is given back (tmpfs is RAM).
    run(c, "rm /tmp/payload");
}
