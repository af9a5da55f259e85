//! HTTPS serving: the host certificate (self-signed at first start with
//! rcgen, replaceable by the administrator), the TLS accept loop, the plain
//! HTTP port that only redirects to HTTPS, and listening that waits quietly
//! for the network (on Mantle without sockets yet, `socket()` fails).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::api::Peer;
use crate::store;

/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 256;

pub fn cert_paths(config_dir: &Path) -> (PathBuf, PathBuf) {
    let d = config_dir.join("ssl");
    (d.join("host.crt"), d.join("host.key"))
}

/// Makes a self-signed host certificate if there is none yet.
pub fn ensure_certificate(config_dir: &Path, hostname: &str) -> io::Result<bool> {
    let (crt, key) = cert_paths(config_dir);
    if crt.exists() && key.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(crt.parent().unwrap_or(config_dir))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !hostname.is_empty() && !names.contains(&hostname.to_string()) {
        names.push(hostname.to_string());
    }
    let ck = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    // The key first: a certificate without its key is useless, the reverse is regenerated.
    store::write_private(&key, ck.key_pair.serialize_pem().as_bytes())?;
    store::write_atomic(&crt, ck.cert.pem().as_bytes())?;
    Ok(true)
}

/// The TLS configuration from the certificate files.
pub fn tls_config(config_dir: &Path) -> io::Result<Arc<rustls::ServerConfig>> {
    let (crt, key) = cert_paths(config_dir);
    let certs = rustls_pemfile::certs(&mut io::BufReader::new(std::fs::File::open(&crt)?)).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(io::Error::other(format!("{}: no certificate", crt.display())));
    }
    let key = rustls_pemfile::private_key(&mut io::BufReader::new(std::fs::File::open(&key)?))?
        .ok_or_else(|| io::Error::other(format!("{}: no private key", key.display())))?;
    // ring rather than aws-lc-rs: it builds into the static Mantle binary with
    // only a C compiler. rustls deprecates it for lacking post-quantum key
    // exchange, which this LAN management port can live without for now.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Binds, retrying quietly while the host has no network (one message,
/// then a growing pause up to 30 s).
pub async fn bind_when_possible(addr: SocketAddr, what: &str) -> TcpListener {
    let mut delay = Duration::from_millis(500);
    let mut told = false;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                if told {
                    eprintln!("hostd: {what} listening on {addr} now");
                }
                return l;
            }
            Err(e) => {
                if !told {
                    eprintln!("hostd: cannot listen on {addr} for {what} yet ({e}); retrying quietly");
                    told = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Serves the application over TLS on `listener` forever.
pub async fn serve_https(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of descriptors or the like: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_tls_connection(tcp, peer, acceptor, app).await;
        });
    }
}

async fn serve_tls_connection(tcp: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, app: Router) {
    let _ = tcp.set_nodelay(true);
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        app.clone().oneshot(req.map(Body::new))
    });
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30)).max_buf_size(64 * 1024);
    // Upgrades: the console WebSocket.
    let _ = b.serve_connection(TokioIo::new(tls), svc).with_upgrades().await;
}

/// Plain HTTP: every request is redirected to the same path over HTTPS.
pub async fn serve_redirect(listener: TcpListener, https_port: u16) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                let host = strip_port(host);
                let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
                let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let location = format!("https://{host}{port}{path}");
                Response::builder()
                    .status(StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, location)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from("{\"code\":\"https_required\",\"message\":\"use HTTPS\"}"))
            });
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// `host:port` or `[v6]:port` → the host part; anything odd → localhost.
fn strip_port(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().map(|v| format!("[{v}]")).unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    // A Host header is attacker-chosen: keep it to host-name characters.
    if !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c)) { h } else { "localhost".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_host_is_sanitised() {
        assert_eq!(strip_port("mantle:80"), "mantle");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("evil/x"), "localhost");
    }

    #[test]
    fn certificate_is_made_once_and_loads() {
        let d = tempfile::tempdir().unwrap();
        assert!(ensure_certificate(d.path(), "mantle").unwrap());
        let (crt, _) = cert_paths(d.path());
        let pem = std::fs::read(&crt).unwrap();
        assert!(!ensure_certificate(d.path(), "mantle").unwrap());
        assert_eq!(std::fs::read(&crt).unwrap(), pem, "an existing certificate is kept");
        tls_config(d.path()).unwrap();
    }
}
