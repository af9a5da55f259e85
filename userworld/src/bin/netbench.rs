//! netbench — the guest side of `image-builder bench net`. The same static
//! binary runs as PID 1 on Mantle and on Debian's Linux (exec'd by the
//! initramfs once `eth0` is up), behind the same QEMU NIC on QEMU's user
//! network, so the ratio of the two figures means something even though
//! the emulator slows both.
//!
//! `netbench [HTTPD]`: starts the HTTP server `HTTPD` (default
//! `/tokio_httpd`, the tokio + hyper user world) on port 8080 as a child,
//! and serves, each connection on a thread of its own:
//! - port 5001, a sink: reads until the peer shuts its side down, then
//!   answers `received <bytes>\n` (the host times host → guest from its
//!   first byte to this answer, so every byte has arrived);
//! - port 5002, a source: reads a line with a byte count, writes that many
//!   bytes and closes (guest → host).
//!
//! Socket buffers are each system's defaults. Prints `netbench: ready`
//! once both ports listen; runs until the machine is switched off.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;

/// Port of the sink (host → guest).
const SINK_PORT: u16 = 5001;
/// Port of the source (guest → host).
const SOURCE_PORT: u16 = 5002;
/// Port the HTTP server is started on.
const HTTP_PORT: &str = "8080";
/// Bytes per read or write call.
const CHUNK: usize = 256 << 10;
/// The most the source sends on one connection.
const MAX_SOURCE_BYTES: u64 = 4 << 30;

fn sink(mut s: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    s.write_all(format!("received {total}\n").as_bytes())?;
    s.shutdown(Shutdown::Write)
}

fn source(s: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let want: u64 = line.trim().parse().map_err(|_| std::io::Error::other(format!("bad byte count {line:?}")))?;
    let want = want.min(MAX_SOURCE_BYTES);
    let mut s = r.into_inner();
    // Not all zeros: a pattern no layer could compress or skip.
    let buf: Vec<u8> = (0..CHUNK).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut left = want;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    // Wait for the peer's close, so the last bytes are not cut off by a
    // reset.
    let mut end = [0u8; 64];
    while s.read(&mut end)? > 0 {}
    Ok(())
}

fn serve(port: u16, what: &'static str, handler: fn(TcpStream) -> std::io::Result<()>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(s) => {
                    std::thread::spawn(move || {
                        if let Err(e) = handler(s) {
                            println!("netbench: {what}: {e}");
                        }
                    });
                }
                Err(e) => println!("netbench: {what}: accept: {e}"),
            }
        }
    });
    Ok(())
}

fn main() {
    let httpd = std::env::args().nth(1).unwrap_or_else(|| String::from("/tokio_httpd"));
    let mut child = match Command::new(&httpd).arg(HTTP_PORT).spawn() {
        Ok(c) => Some(c),
        Err(e) => {
            println!("netbench: error starting {httpd}: {e}");
            None
        }
    };
    for (port, what, handler) in [(SINK_PORT, "sink", sink as fn(TcpStream) -> std::io::Result<()>), (SOURCE_PORT, "source", source)] {
        if let Err(e) = serve(port, what, handler) {
            println!("netbench: error {what} on port {port}: {e}");
        }
    }
    println!("netbench: ready (sink {SINK_PORT}, source {SOURCE_PORT}, HTTP {HTTP_PORT})");
    if let Some(c) = child.as_mut() {
        match c.wait() {
            Ok(st) => println!("netbench: error {httpd} ended: {st}"),
            Err(e) => println!("netbench: error waiting for {httpd}: {e}"),
        }
    }
    // PID 1 must not end: the host switches the machine off.
    loop {
        std::thread::park();
    }
}
