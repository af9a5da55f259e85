//! WBEM EnumerateInstances benchmark: requests/s and p50/p99 latency over HTTP/1.1
//! keep-alive, with N concurrent clients. It takes a URL, so the same run measures
//! another WBEM server (sfcb, OpenPegasus) on the same machine. HTTPS URLs need the
//! server's certificate (PEM, trusted as the only root); each client does one TLS
//! handshake, outside the measured requests.
//!
//!     cargo run --release -p cim-broker --example bench -- \
//!         http://root:secret@127.0.0.1:5988 root/cimv2 CIM_ComputerSystem [clients] [requests per client] [ca.pem]

use base64::Engine;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench http://user:pass@host:port NAMESPACE CLASS [clients=1] [requests=500]");
        std::process::exit(2);
    }
    let (tls, url) = match (args[1].strip_prefix("http://"), args[1].strip_prefix("https://")) {
        (Some(u), _) => (None, u),
        (_, Some(u)) => {
            let Some(ca) = args.get(6) else {
                eprintln!("bench: https:// needs the server's certificate (6th argument)");
                std::process::exit(2)
            };
            (Some(tls_config(ca)), u)
        }
        _ => {
            eprintln!("bench: http:// or https:// URLs only");
            std::process::exit(2)
        }
    };
    let (cred, hostport) = url.trim_end_matches('/').rsplit_once('@').unwrap_or(("", url));
    let hostport = hostport.split('/').next().unwrap_or(hostport).to_string();
    let auth = base64::engine::general_purpose::STANDARD.encode(cred);
    let ns = args[2].clone();
    let class = args[3].clone();
    let clients: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let requests: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(500);
    let nsx: String = ns.split('/').map(|p| format!("<NAMESPACE NAME=\"{p}\"/>")).collect();
    let body = format!(
        r#"<?xml version="1.0" encoding="utf-8" ?><CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1" PROTOCOLVERSION="1.0"><SIMPLEREQ><IMETHODCALL NAME="EnumerateInstances"><LOCALNAMESPACEPATH>{nsx}</LOCALNAMESPACEPATH><IPARAMVALUE NAME="ClassName"><CLASSNAME NAME="{class}"/></IPARAMVALUE><IPARAMVALUE NAME="DeepInheritance"><VALUE>TRUE</VALUE></IPARAMVALUE><IPARAMVALUE NAME="LocalOnly"><VALUE>FALSE</VALUE></IPARAMVALUE></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>"#
    );
    let request = format!(
        "POST /cimom HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/xml; charset=\"utf-8\"\r\nCIMOperation: MethodCall\r\nCIMMethod: EnumerateInstances\r\nCIMObject: {ns}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let request = request.clone();
            let hostport = hostport.clone();
            let tls = tls.clone();
            std::thread::spawn(move || connect(&hostport, tls).and_then(|s| run_client(s, request.as_bytes(), requests)))
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut bytes = 0;
    for h in handles {
        match h.join() {
            Ok(Ok((l, b))) => {
                latencies.extend(l);
                bytes = b;
            }
            Ok(Err(e)) => {
                eprintln!("bench: {e}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "EnumerateInstances {ns}:{class} clients={clients} requests={} response={bytes}B: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3
    );
}

fn tls_config(ca: &str) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).and_then(|i| i.collect::<Result<Vec<_>, _>>()).unwrap_or_else(|e| {
        eprintln!("bench: {ca}: {e}");
        std::process::exit(2)
    });
    for c in certs {
        let _ = roots.add(c);
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| {
            eprintln!("bench: TLS: {e}");
            std::process::exit(2)
        })
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A plain or TLS connection (the handshake done).
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

fn connect(hostport: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Result<Box<dyn Stream>, String> {
    let stream = TcpStream::connect(hostport).map_err(|e| format!("connect {hostport}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let Some(config) = tls else { return Ok(Box::new(stream)) };
    let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h).trim_matches(['[', ']']).to_string();
    let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, stream);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| format!("TLS handshake with {hostport}: {e}"))?;
    }
    Ok(Box::new(s))
}

fn run_client(stream: Box<dyn Stream>, request: &[u8], n: usize) -> Result<(Vec<Duration>, usize), String> {
    let mut reader = BufReader::new(stream);
    let mut out = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let t = Instant::now();
        let w = reader.get_mut();
        w.write_all(request).and_then(|_| w.flush()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.contains(" 200 ") {
            return Err(format!("status {line:?}"));
        }
        let mut len = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).map_err(|e| e.to_string())?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse::<usize>().ok();
            }
        }
        let len = len.ok_or("no Content-Length")?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        if body.windows(7).any(|w| w == b"<ERROR ") {
            return Err(String::from_utf8_lossy(&body).into_owned());
        }
        size = len;
        out.push(t.elapsed());
    }
    Ok((out, size))
}
