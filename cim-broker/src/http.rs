//! The HTTP layer (DSP0200) on hyper and tokio, with TLS from rustls: `POST /cimom`,
//! the CIM extension headers checked against the body, HTTP-level errors with a
//! `CIMError` header, Basic authentication, keep-alive, chunked responses with a
//! `CIMStatusCode` trailer for clients that send `TE: trailers`, and limits on body
//! size and concurrent connections.

use crate::auth::{AuthError, Authenticator, parse_basic};
use crate::ops::Broker;
use crate::xml::reader::{self, Call, DecodeError};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Limits and names of the HTTP service.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest accepted request body (413 above it).
    pub max_body: usize,
    /// Concurrent connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time allowed for a client to send request headers (and for a TLS handshake).
    pub header_timeout: Duration,
    pub realm: String,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            max_body: 4 * 1024 * 1024,
            max_connections: 64,
            header_timeout: Duration::from_secs(30),
            realm: "Mantle CIM".into(),
        }
    }
}

/// Everything a connection needs.
pub struct Service {
    pub broker: Arc<Broker>,
    pub auth: Arc<dyn Authenticator>,
    pub config: HttpConfig,
}

/// A response body: the whole XML document, followed by trailers when the client
/// asked for them (`TE: trailers`; its size is then not announced, so hyper sends
/// it chunked).
pub struct CimBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
    exact: bool,
}

impl CimBody {
    fn full(data: impl Into<Bytes>) -> CimBody {
        CimBody { data: Some(data.into()), trailers: None, exact: true }
    }
    fn empty() -> CimBody {
        CimBody { data: None, trailers: None, exact: true }
    }
    fn chunked(data: impl Into<Bytes>, trailers: HeaderMap) -> CimBody {
        CimBody { data: Some(data.into()), trailers: Some(trailers), exact: false }
    }
}

impl Body for CimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
        } else {
            SizeHint::default()
        }
    }
}

fn http_error(status: StatusCode, cim_error: Option<&str>) -> Response<CimBody> {
    let mut r = Response::new(CimBody::empty());
    *r.status_mut() = status;
    if let Some(e) = cim_error
        && let Ok(v) = HeaderValue::from_str(e)
    {
        r.headers_mut().insert("CIMError", v);
    }
    r
}

fn unauthorized(realm: &str) -> Response<CimBody> {
    let mut r = http_error(StatusCode::UNAUTHORIZED, None);
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, v);
    }
    r
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// True when a `CIMObject` header (percent-encoded or raw) names what the body does:
/// the namespace for intrinsic calls, the namespace and object path for extrinsic ones.
pub fn cimobject_matches(header: &str, call: &Call) -> bool {
    let Some(decoded) = reader::percent_decode(header.trim()) else { return false };
    match call {
        Call::Intrinsic(c) => crate::cim::namespace_eq(&decoded, &c.namespace),
        Call::Extrinsic(c) => {
            let Some((ns, path)) = reader::parse_untyped_object_path(&decoded) else { return false };
            if !crate::cim::namespace_eq(&ns, &c.namespace) {
                return false;
            }
            match &c.target {
                reader::MethodTarget::Class(name) => path.class_name.eq_ignore_ascii_case(name) && path.keys.is_empty(),
                reader::MethodTarget::Instance(p) => {
                    let mut p = p.clone();
                    p.namespace = None;
                    path.same_instance(&p)
                }
            }
        }
    }
}

fn content_type_ok(v: Option<&str>) -> bool {
    let Some(v) = v else { return false };
    let mut parts = v.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/xml" && mime != "text/xml" {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, val)) if k.trim().eq_ignore_ascii_case("charset") => {
            val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    })
}

/// Handles one HTTP request.
pub async fn handle(svc: Arc<Service>, req: Request<Incoming>) -> Result<Response<CimBody>, Infallible> {
    Ok(handle_inner(svc, req).await)
}

async fn handle_inner(svc: Arc<Service>, req: Request<Incoming>) -> Response<CimBody> {
    // M-POST is not offered: 405 makes DSP0200 clients retry with POST.
    if req.method().as_str() == "M-POST" {
        let mut r = http_error(StatusCode::METHOD_NOT_ALLOWED, None);
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if req.method() != hyper::Method::POST {
        return http_error(StatusCode::NOT_IMPLEMENTED, None);
    }
    if !matches!(req.uri().path(), "/cimom" | "/") {
        return http_error(StatusCode::NOT_FOUND, None);
    }
    // Authentication first: nothing of an unauthenticated request is parsed.
    let Some((user, password)) = header_str(req.headers(), "authorization").and_then(parse_basic) else {
        return unauthorized(&svc.config.realm);
    };
    let cached = svc.auth.authenticate_cached(&user, &password);
    let auth = svc.auth.clone();
    let checked = match cached {
        Some(p) => Ok(Ok(p)),
        None => tokio::task::spawn_blocking(move || auth.authenticate(&user, &password)).await,
    };
    let principal = match checked {
        Ok(Ok(p)) => p,
        Ok(Err(AuthError::BadCredentials)) => return unauthorized(&svc.config.realm),
        Ok(Err(AuthError::Forbidden)) => return http_error(StatusCode::FORBIDDEN, None),
        Ok(Err(AuthError::Unavailable(_))) | Err(_) => return http_error(StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let headers = req.headers().clone();
    if headers.contains_key("cimbatch") {
        return http_error(StatusCode::NOT_IMPLEMENTED, Some("multiple-requests-unsupported"));
    }
    if let Some(v) = header_str(&headers, "cimprotocolversion")
        && !v.trim().starts_with("1.")
    {
        return http_error(StatusCode::NOT_IMPLEMENTED, Some("unsupported-protocol-version"));
    }
    match header_str(&headers, "cimoperation") {
        Some(v) if v.trim().eq_ignore_ascii_case("MethodCall") => {}
        Some(_) => return http_error(StatusCode::BAD_REQUEST, Some("unsupported-operation")),
        None => return http_error(StatusCode::BAD_REQUEST, Some("request-not-valid")),
    }
    if !content_type_ok(header_str(&headers, "content-type")) {
        return http_error(StatusCode::BAD_REQUEST, Some("request-not-valid"));
    }
    let declared = header_str(&headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > svc.config.max_body as u64) {
        return http_error(StatusCode::PAYLOAD_TOO_LARGE, None);
    }
    let body = match Limited::new(req.into_body(), svc.config.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                return http_error(StatusCode::PAYLOAD_TOO_LARGE, None);
            }
            return http_error(StatusCode::BAD_REQUEST, Some("request-not-valid"));
        }
    };
    // Decoding, the header checks against the body and the operation run as one
    // piece of blocking work (the operation may call hostd).
    let started = std::time::Instant::now();
    let svc2 = svc.clone();
    let headers2 = headers.clone();
    let work = move || {
        let request = match reader::decode_request(&body, &svc2.broker.limits) {
            Ok(r) => r,
            Err(e) => {
                return Err(match e {
                    DecodeError::NotWellFormed(_) => (StatusCode::BAD_REQUEST, "request-not-well-formed"),
                    DecodeError::NotValid(_) | DecodeError::TooLarge(_) => (StatusCode::BAD_REQUEST, "request-not-valid"),
                    DecodeError::UnsupportedVersion("cim-version", _) => (StatusCode::NOT_IMPLEMENTED, "unsupported-cim-version"),
                    DecodeError::UnsupportedVersion("dtd-version", _) => (StatusCode::NOT_IMPLEMENTED, "unsupported-dtd-version"),
                    DecodeError::UnsupportedVersion(_, _) => (StatusCode::NOT_IMPLEMENTED, "unsupported-protocol-version"),
                    DecodeError::MultipleRequests => (StatusCode::NOT_IMPLEMENTED, "multiple-requests-unsupported"),
                });
            }
        };
        // The headers must say what the body does.
        let method_ok = header_str(&headers2, "cimmethod").is_some_and(|m| m.trim() == request.call.name());
        let object_ok = header_str(&headers2, "cimobject").is_some_and(|o| cimobject_matches(o, &request.call));
        if !method_ok || !object_ok {
            return Err((StatusCode::BAD_REQUEST, "header-mismatch"));
        }
        Ok(svc2.broker.handle_with_status(&request, &principal))
    };
    // On the multi-threaded runtime (the broker's) the work runs on this worker,
    // which hands its other tasks to the others meanwhile: no thread hop per request.
    // (block_in_place is not allowed on a current-thread runtime.)
    let result = if tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        Ok(tokio::task::block_in_place(work))
    } else {
        tokio::task::spawn_blocking(work).await
    };
    let (xml, status) = match result {
        Ok(Ok(r)) => r,
        Ok(Err((status, cim))) => return http_error(status, Some(cim)),
        Err(_) => return http_error(StatusCode::INTERNAL_SERVER_ERROR, None),
    };
    let wants_trailers = headers
        .get_all(hyper::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    let mut r = if wants_trailers {
        let mut t = HeaderMap::new();
        let code = status.as_ref().map_or(0, |e| e.code as u32);
        t.insert("CIMStatusCode", HeaderValue::from(code));
        if let Some(e) = &status
            && let Ok(v) = HeaderValue::from_str(&e.description.replace(['\r', '\n'], " "))
        {
            t.insert("CIMStatusCodeDescription", v);
        }
        let mut r = Response::new(CimBody::chunked(xml, t));
        r.headers_mut().insert(
            hyper::header::TRAILER,
            HeaderValue::from_static("CIMStatusCode, CIMStatusCodeDescription"),
        );
        r
    } else {
        Response::new(CimBody::full(xml))
    };
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=\"utf-8\""));
    h.insert(HeaderName::from_static("cimoperation"), HeaderValue::from_static("MethodResponse"));
    h.insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("wbemserverresponsetime"),
        HeaderValue::from(started.elapsed().as_micros() as u64),
    );
    r
}

/// Serves one connection (plain or TLS) until the client closes it.
pub async fn serve_connection<S>(io: S, svc: Arc<Service>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = svc.config.header_timeout;
    let service = hyper::service::service_fn(move |req| handle(svc.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service);
    let _ = conn.await;
}

/// Accepts connections on `listener` forever, plain HTTP or (with `tls`) HTTPS,
/// at most `limit` at once across the listeners that share it.
pub async fn serve(
    listener: TcpListener,
    svc: Arc<Service>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (mut stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cim-broker: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over the connection limit: refuse quickly instead of queueing.
            if tls.is_none() {
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                });
            }
            continue;
        };
        let svc = svc.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    if let Ok(Ok(s)) = tokio::time::timeout(svc.config.header_timeout, acceptor.accept(stream)).await {
                        serve_connection(s, svc).await;
                    }
                }
                None => serve_connection(stream, svc).await,
            }
        });
    }
}

/// TLS: the host certificate and key (PEM files), or a generated self-signed
/// certificate when the files do not exist yet (written with mode 0600 for the key,
/// through a temporary file and rename so a crash leaves no half-written key).
pub fn tls_acceptor(cert_path: Option<&std::path::Path>, key_path: Option<&std::path::Path>, host: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match (cert_path, key_path) {
        (Some(c), Some(k)) if c.exists() && k.exists() => {
            let certs = CertificateDer::pem_file_iter(c)
                .map_err(|e| format!("{}: {e}", c.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", c.display()))?;
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| format!("{}: {e}", k.display()))?;
            (certs, key)
        }
        (c, k) => {
            let generated = rcgen::generate_simple_self_signed(vec![host.to_string(), "localhost".to_string()])
                .map_err(|e| format!("generating a certificate: {e}"))?;
            let cert_pem = generated.cert.pem();
            let key_pem = generated.key_pair.serialize_pem();
            if let (Some(c), Some(k)) = (c, k) {
                write_atomic(k, key_pem.as_bytes(), 0o600)?;
                write_atomic(c, cert_pem.as_bytes(), 0o644)?;
            }
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
            (vec![generated.cert.der().clone()], key)
        }
    };
    // ring rather than aws-lc-rs: it builds with only a C compiler, also for the
    // static user-world binary; ring's provider lacks only the post-quantum groups.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
