//! The REST API: JSON over HTTPS, described by an OpenAPI 3 document that is
//! generated from these handlers (`utoipa`) and served at
//! `/api/openapi.json`.
//!
//! Every endpoint but `POST /api/session` (login) needs a session: a bearer
//! token (`Authorization: Bearer <token>`) or the `hostd_session` cookie,
//! which must come with `X-CSRF-Token` on anything but GET. Errors are
//! `{"code", "message"[, "field"]}` with 400 (bad input), 401 (no session),
//! 403 (role, CSRF, locked account), 404, 409 (conflicting state), 413 (body
//! too large), 503 (the VMkernel cannot be reached).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Privilege, Role, Session, UserRecord};
use crate::config_store::ConfigStore;
use crate::datastore::{self, FileEntry, Listing};
use crate::host::{AuditRecord, CloneSpec, Datastore, Event, HostStats, Hostd, OpError, PowerAction, Task, VmStats, VmView};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use crate::vmx::{VmConfigPatch, VmCreateSpec};

/// Largest request body accepted (JSON documents only).
pub const MAX_BODY: usize = 256 * 1024;
/// How long a request's body may take to arrive once its head has.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub const SESSION_COOKIE: &str = "hostd_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

type H = Arc<Hostd>;

/// The client's address, put on each request by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

// ---- errors ----

/// Every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable: `bad_request`, `invalid_argument`, `unauthorized`,
    /// `forbidden`, `csrf_failed`, `account_locked`, `not_found`, `conflict`,
    /// `too_large`, `method_not_allowed`, `vmkernel_unavailable`, `internal`.
    pub code: String,
    pub message: String,
    /// The request field that is wrong, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// End the connection after this response (an unread body follows).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, body: ErrorBody { code: code.into(), message: message.into(), field: None }, close: false }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn invalid(field: &str, m: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_argument", m);
        e.body.field = Some(field.into());
        e
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if self.close {
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Invalid(Some(f), m) => ApiError::invalid(&f, m),
            OpError::Invalid(None, m) => ApiError::bad_request(m),
            OpError::NotFound(m) => ApiError::not_found(m),
            OpError::Conflict(m) => ApiError::conflict(m),
            OpError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "vmkernel_unavailable", m),
            OpError::NotSupported(m) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", m),
            OpError::Internal(m) => ApiError::internal(m),
        }
    }
}

/// A JSON request body whose every rejection is a JSON 400 (or 413).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Refuse a declared oversize body before reading any of it, so a client
        // that waits for `100 Continue` gets the 413 instead of a reset.
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            let mut e = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the request body is larger than {MAX_BODY} bytes"));
            e.close = true;
            return Err(e);
        }
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the request body is larger than {MAX_BODY} bytes")))
            }
            Err(r) => Err(ApiError::bad_request(r.body_text())),
        }
    }
}

// ---- sessions and roles ----

const READ: u8 = 0;
const OPERATE: u8 = 1;
const CONFIGURE: u8 = 2;

/// The caller's session, checked against a privilege before the body is read.
pub struct Auth<const P: u8>(pub Session);

impl<S: Send + Sync, const P: u8> FromRequestParts<S> for Auth<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let s = parts.extensions.get::<Session>().cloned().ok_or_else(|| ApiError::unauthorized("log in first"))?;
        let need = match P {
            READ => Privilege::Read,
            OPERATE => Privilege::Operate,
            _ => Privilege::Configure,
        };
        if !s.role.allows(need) {
            let what = if need == Privilege::Operate { "power operations" } else { "configuration changes" };
            return Err(ApiError::forbidden(format!("user {} has role {:?}, which does not allow {what}", s.user, s.role)));
        }
        Ok(Auth(s))
    }
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == SESSION_COOKIE).then(|| v.to_string())
    })
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

fn is_public(method: &Method, path: &str) -> bool {
    (method == Method::POST && path == "/api/session") || path == "/api/openapi.json" || !path.starts_with("/api")
}

/// Finds the session (401 without one), checks CSRF for cookie sessions,
/// and writes every change request to the audit log.
async fn authenticate(State(h): State<H>, mut req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if is_public(&method, &path) {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().map(|p| p.0.ip().to_string());
    let (token, via_cookie) = match bearer_token(req.headers()) {
        Some(t) => (Some(t), false),
        None => (cookie_token(req.headers()), true),
    };
    let session = token.and_then(|t| auth_lock(&h.sessions).get(&t));
    let Some(session) = session else {
        return ApiError::unauthorized("no valid session: log in with POST /api/session").into_response();
    };
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && via_cookie {
        let ok = req.headers().get(CSRF_HEADER).is_some_and(|v| auth::constant_time_eq(v.as_bytes(), session.csrf.as_bytes()));
        if !ok {
            let r = ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", "a cookie session must send its csrf_token in X-CSRF-Token").into_response();
            audit(&h, &session.user, format!("{method} {path}"), r.status().as_u16(), peer).await;
            return r;
        }
    }
    let user = session.user.clone();
    req.extensions_mut().insert(session);
    let resp = next.run(req).await;
    if changes {
        audit(&h, &user, format!("{method} {path}"), resp.status().as_u16(), peer).await;
    }
    resp
}

/// [`Hostd::audit`] off the async workers: it returns once the record is on
/// disk (the response waits for it; other requests do not).
async fn audit(h: &H, user: &str, action: String, status: u16, peer: Option<String>) {
    let (h, user) = (Arc::clone(h), user.to_string());
    let _ = tokio::task::spawn_blocking(move || h.audit(&user, action, status, peer)).await;
}

/// [`Hostd::event`] off the async workers (it waits for the disk).
async fn event(h: &H, kind: &'static str, user: &str, message: String) {
    let (h, user) = (Arc::clone(h), user.to_string());
    let _ = tokio::task::spawn_blocking(move || h.event(kind, None, Some(&user), message)).await;
}

fn auth_lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads a request's whole body (up to `MAX_BODY`, when its length is
/// declared) before anything answers it. Authentication, routing and the
/// extractors refuse many requests without reading their bodies; answering
/// while a body is still arriving and then closing with unread data resets
/// the connection, and the client can lose the answer (seen on Mantle, where
/// a body arrives in several segments). Larger bodies go on as before (the
/// JSON extractor answers 413 from the declared length and closes; uploads
/// stream theirs), and so do chunked ones (hyper has already dropped any
/// Content-Length beside Transfer-Encoding; a chunked head with no chunks
/// would otherwise hold the request until the body timeout).
async fn read_body_first(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    let Some(len) = declared.filter(|&n| !chunked && n > 0 && n <= MAX_BODY as u64) else {
        return next.run(req).await;
    };
    let refuse = |status, code, message: String| {
        let mut e = ApiError::new(status, code, message);
        e.close = true;
        e.into_response()
    };
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(_)) => refuse(StatusCode::BAD_REQUEST, "bad_request", format!("the request body ended before its declared {len} bytes")),
        Err(_) => refuse(StatusCode::REQUEST_TIMEOUT, "timeout", format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs())),
    }
}

/// Any error response that is not JSON yet (the router's own 404/405,
/// extractor rejections) becomes `{code, message}`; 415 and 422 become 400.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let (status, code) = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => (StatusCode::BAD_REQUEST, "bad_request"),
        StatusCode::NOT_FOUND => (status, "not_found"),
        StatusCode::METHOD_NOT_ALLOWED => (status, "method_not_allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => (status, "too_large"),
        s if s.is_server_error() => (s, "internal"),
        s => (s, "error"),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { text };
    let mut r = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        r.headers_mut().insert(header::ALLOW, allow.clone());
    }
    r
}

async fn blocking<T: Send + 'static>(h: &H, f: impl FnOnce(&Hostd) -> Result<T, OpError> + Send + 'static) -> Result<T, ApiError> {
    let h = Arc::clone(h);
    tokio::task::spawn_blocking(move || f(&h)).await.map_err(|e| ApiError::internal(format!("worker failed: {e}")))?.map_err(ApiError::from)
}

// ---- session ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Bearer token for `Authorization: Bearer <token>`; the same value is
    /// set as the `hostd_session` cookie.
    pub token: String,
    /// Send as `X-CSRF-Token` with cookie-authenticated changes.
    pub csrf_token: String,
    pub user: String,
    pub role: Role,
    /// The session ends after this long without a request.
    pub idle_timeout_secs: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub user: String,
    pub role: Role,
    pub csrf_token: String,
    pub idle_timeout_secs: u64,
}

/// Log in with a local account.
#[utoipa::path(post, path = "/api/session", tag = "session", request_body = LoginRequest, security(()),
    responses((status = 200, description = "Logged in; also sets the hostd_session cookie", body = LoginResponse),
        (status = 400, body = ErrorBody), (status = 401, description = "Wrong user name or password", body = ErrorBody),
        (status = 403, description = "Account locked after repeated failures", body = ErrorBody)))]
async fn login(State(h): State<H>, peer: Option<axum::Extension<Peer>>, ApiJson(req): ApiJson<LoginRequest>) -> Result<Response, ApiError> {
    let peer = peer.map(|p| p.0.0.ip().to_string());
    let name = req.username.clone();
    if !auth::valid_user_name(&name) || req.password.len() > auth::MAX_PASSWORD_LEN {
        audit(&h, &name.chars().take(32).collect::<String>(), "login".into(), 401, peer).await;
        return Err(ApiError::unauthorized("wrong user name or password"));
    }
    let locked = auth_lock(&h.lockout).locked(&name);
    if let Some(left) = locked {
        audit(&h, &name, "login".into(), 403, peer).await;
        return Err(ApiError::new(StatusCode::FORBIDDEN, "account_locked", format!("account {name} is locked after repeated failed logins; try again in {left} s")));
    }
    // Password hashing is deliberately expensive: a few at a time, so a
    // flood of logins cannot take every CPU.
    static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = HASHING.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let h2 = Arc::clone(&h);
    let (n2, pw) = (name.clone(), req.password);
    let role = tokio::task::spawn_blocking(move || {
        let mut accounts = auth_lock(&h2.accounts);
        // The console (`hostd passwd`) may have set a password since.
        match accounts.reload() {
            Ok(changed) => changed.iter().for_each(|u| auth_lock(&h2.sessions).remove_user(u)),
            Err(e) => eprintln!("hostd: reading the accounts again: {e}; using the ones read before"),
        }
        accounts.verify(&n2, &pw)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(role) = role else {
        let locked = auth_lock(&h.lockout).failed(&name);
        audit(&h, &name, "login".into(), 401, peer).await;
        event(&h, "user.loginFailed", &name, format!("failed login for {name}")).await;
        if locked {
            event(&h, "user.locked", &name, format!("account {name} locked after {} failed logins", h.settings.lockout_after)).await;
        }
        return Err(ApiError::unauthorized("wrong user name or password"));
    };
    auth_lock(&h.lockout).succeeded(&name);
    let s = auth_lock(&h.sessions).create(&name, role).map_err(|e| ApiError::internal(e.to_string()))?;
    audit(&h, &name, "login".into(), 200, peer).await;
    let idle = h.settings.session_idle.as_secs();
    let cookie = format!("{SESSION_COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={idle}", s.token);
    let mut resp = Json(LoginResponse { token: s.token.clone(), csrf_token: s.csrf.clone(), user: name, role, idle_timeout_secs: idle }).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The current session.
#[utoipa::path(get, path = "/api/session", tag = "session", responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn session_info(State(h): State<H>, Auth(s): Auth<READ>) -> Json<SessionInfo> {
    Json(SessionInfo { user: s.user, role: s.role, csrf_token: s.csrf, idle_timeout_secs: h.settings.session_idle.as_secs() })
}

/// Log out (ends the session).
#[utoipa::path(delete, path = "/api/session", tag = "session", responses((status = 204, description = "Logged out"), (status = 401, body = ErrorBody)))]
async fn logout(State(h): State<H>, Auth(s): Auth<READ>) -> Response {
    auth_lock(&h.sessions).remove(&s.token);
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ---- host ----

#[derive(Serialize, ToSchema)]
pub struct HostSummary {
    pub product: String,
    pub version: String,
    pub hostname: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub uptime_secs: Option<u64>,
    pub hostd_uptime_secs: u64,
    /// The narrow VMkernel API's version; null when not running on Mantle.
    pub vmkernel_api_version: Option<u32>,
    pub vm_count: usize,
    pub datastores: Vec<Datastore>,
    pub port_groups: Vec<String>,
    /// Where hostd keeps accounts, inventory, logs and certificate; not
    /// persistent when no datastore is attached.
    pub config_store: ConfigStore,
}

/// Host summary.
#[utoipa::path(get, path = "/api/host", tag = "host", responses((status = 200, body = HostSummary), (status = 401, body = ErrorBody)))]
async fn host_summary(State(h): State<H>, _a: Auth<READ>) -> Result<Json<HostSummary>, ApiError> {
    blocking(&h, |h| {
        Ok(HostSummary {
            product: "Mantle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            hostname: std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "mantle".into()),
            cpus: crate::host::host_cpus(),
            memory_mib: crate::host::host_memory_mib(),
            uptime_secs: crate::host::host_uptime_secs(),
            hostd_uptime_secs: h.started.elapsed().as_secs(),
            vmkernel_api_version: h.kernel.version().ok(),
            vm_count: h.vms().len(),
            datastores: h.datastores(),
            port_groups: h.settings.port_groups.clone(),
            config_store: h.config_store(),
        })
    })
    .await
    .map(Json)
}

/// Host statistics sampled over the last hour: CPU busy, memory used, and
/// the powered-on VMs' run time and exits.
#[utoipa::path(get, path = "/api/host/stats", tag = "host", responses((status = 200, body = HostStats), (status = 401, body = ErrorBody)))]
async fn host_stats(State(h): State<H>, _a: Auth<READ>) -> Json<HostStats> {
    Json(h.host_stats())
}

/// Datastores (directories under the volumes directory) with their usage.
#[utoipa::path(get, path = "/api/datastores", tag = "host", responses((status = 200, body = [Datastore]), (status = 401, body = ErrorBody)))]
async fn list_datastores(State(h): State<H>, _a: Auth<READ>) -> Result<Json<Vec<Datastore>>, ApiError> {
    blocking(&h, |h| Ok(h.datastores())).await.map(Json)
}

// ---- datastore browser ----

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// A path relative to the datastore's root, `/`-separated (the root when left out for a listing).
    pub path: Option<String>,
    /// Upload only: replace an existing file.
    pub overwrite: Option<bool>,
}

/// A directory on a datastore: its files and subdirectories.
#[utoipa::path(get, path = "/api/datastores/{name}/browse", tag = "datastores", params(("name" = String, Path, description = "Datastore name"), FileQuery),
    responses((status = 200, body = Listing), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn browse_datastore(State(h): State<H>, _a: Auth<READ>, Path(name): Path<String>, Query(q): Query<FileQuery>) -> Result<Json<Listing>, ApiError> {
    blocking(&h, move |h| {
        let root = h.datastore_root(&name)?;
        datastore::list(&name, &root, q.path.as_deref().unwrap_or(""))
    })
    .await
    .map(Json)
}

/// Download a file from a datastore (streamed).
#[utoipa::path(get, path = "/api/datastores/{name}/file", tag = "datastores", params(("name" = String, Path, description = "Datastore name"), FileQuery),
    responses((status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn download_file(State(h): State<H>, _a: Auth<READ>, Path(name): Path<String>, Query(q): Query<FileQuery>) -> Result<Response, ApiError> {
    let rel = q.path.unwrap_or_default();
    let (path, size) = blocking(&h, move |h| {
        let root = h.datastore_root(&name)?;
        datastore::download_path(&name, &root, &rel)
    })
    .await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| ApiError::not_found(format!("{}: {e}", path.display())))?;
    let fname: String = path.file_name().map(|n| n.to_string_lossy().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.+".contains(*c)).collect()).unwrap_or_default();
    let mut r = Response::new(Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024)));
    let hs = r.headers_mut();
    hs.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    hs.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{fname}\"")) {
        hs.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// A file operation of an upload failed: a name the datastore's file
/// system refuses (FAT on Mantle: EINVAL for some non-ASCII names) is the
/// client's 400, a full datastore its 409, anything else hostd's 500.
fn upload_error(rel: &str, what: &str, path: &std::path::Path, e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidFilename => ApiError::invalid("path", format!("path: {rel:?}: the datastore's file system does not take this name ({e})")),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge | std::io::ErrorKind::QuotaExceeded => ApiError::conflict(format!("{what} {}: {e} (free space on the datastore)", path.display())),
        _ => ApiError::internal(format!("{what} {}: {e}", path.display())),
    }
}

fn too_large(limit: u64) -> ApiError {
    let mut e = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the file is larger than the upload limit of {limit} bytes"));
    e.close = true;
    e
}

/// Upload a file to a datastore: the request body is the file's bytes,
/// streamed to disk and renamed into place when complete. A task shows the
/// progress (against Content-Length). Administrator only.
#[utoipa::path(put, path = "/api/datastores/{name}/file", tag = "datastores", params(("name" = String, Path, description = "Datastore name"), FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes"),
    responses((status = 201, body = FileEntry), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Exists (without overwrite) or is a directory", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody)))]
async fn upload_file(
    State(h): State<H>,
    Auth(s): Auth<CONFIGURE>,
    Path(name): Path<String>,
    Query(q): Query<FileQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileEntry>), ApiError> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let limit = h.settings.max_upload_bytes;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let rel = q.path.clone().unwrap_or_default();
    let (n2, r2, overwrite) = (name.clone(), rel.clone(), q.overwrite.unwrap_or(false));
    let (target, tmp) = blocking(&h, move |h| {
        let root = h.datastore_root(&n2)?;
        datastore::upload_paths(&n2, &root, &r2, overwrite)
    })
    .await?;
    let task = h.task_begin("datastore.upload", &format!("{name}/{rel}"), &s.user);
    let result: Result<u64, ApiError> = async {
        let mut f = tokio::fs::File::create_new(&tmp).await.map_err(|e| upload_error(&rel, "creating", &tmp, e))?;
        let mut stream = body.into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the upload was interrupted: {e}")))?;
            n += chunk.len() as u64;
            if n > limit {
                return Err(too_large(limit));
            }
            f.write_all(&chunk).await.map_err(|e| upload_error(&rel, "writing", &tmp, e))?;
            if let Some(total) = declared.filter(|&t| t > 0) {
                h.task_progress(task, (n.min(total) * 99 / total) as u8);
            }
        }
        f.sync_all().await.map_err(|e| ApiError::internal(format!("writing {}: {e}", tmp.display())))?;
        drop(f);
        if !overwrite && tokio::fs::symlink_metadata(&target).await.is_ok() {
            return Err(ApiError::conflict(format!("{name}/{rel} appeared during the upload")));
        }
        tokio::fs::rename(&tmp, &target).await.map_err(|e| upload_error(&rel, "renaming into", &target, e))?;
        if let Some(dir) = target.parent() {
            let _ = crate::store::sync_dir(dir);
        }
        Ok(n)
    }
    .await;
    let task_result = result.as_ref().map(|_| ()).map_err(|e| OpError::Invalid(None, e.body.message.clone()));
    h.task_end(task, &task_result);
    let n = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    event(&h, "datastore.fileUploaded", &s.user, format!("{n} bytes uploaded to {name}/{rel}")).await;
    let meta = tokio::fs::metadata(&target).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let fname = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs());
    Ok((StatusCode::CREATED, Json(FileEntry { name: fname, kind: "file".into(), size_bytes: meta.len(), modified })))
}

/// Delete a file from a datastore (not a `.vmx`: use the VM API). Administrator only.
#[utoipa::path(delete, path = "/api/datastores/{name}/file", tag = "datastores", params(("name" = String, Path, description = "Datastore name"), FileQuery),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_file(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>, Query(q): Query<FileQuery>) -> Result<StatusCode, ApiError> {
    let rel = q.path.unwrap_or_default();
    blocking(&h, move |h| {
        let root = h.datastore_root(&name)?;
        datastore::delete(&name, &root, &rel)?;
        h.event("datastore.fileDeleted", None, Some(&s.user), format!("{name}/{rel} deleted"));
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- VMs ----

/// All VMs in the inventory with their power state.
#[utoipa::path(get, path = "/api/vms", tag = "vms", responses((status = 200, body = [VmView]), (status = 401, body = ErrorBody)))]
async fn list_vms(State(h): State<H>, _a: Auth<READ>) -> Result<Json<Vec<VmView>>, ApiError> {
    blocking(&h, |h| Ok(h.vms())).await.map(Json)
}

/// Define a VM: creates `<datastore>/<name>/<name>.vmx` and any disk with a
/// `size_mib`, then adds it to the inventory. Administrator only.
#[utoipa::path(post, path = "/api/vms", tag = "vms", request_body = VmCreateSpec,
    responses((status = 201, body = VmView), (status = 400, description = "Invalid configuration; `field` names the culprit", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, description = "Name or directory taken", body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn create_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, ApiJson(spec): ApiJson<VmCreateSpec>) -> Result<(StatusCode, Json<VmView>), ApiError> {
    blocking(&h, move |h| h.define(spec, &s.user)).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// One VM.
#[utoipa::path(get, path = "/api/vms/{name}", tag = "vms", params(("name" = String, Path, description = "VM name")),
    responses((status = 200, body = VmView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_vm(State(h): State<H>, _a: Auth<READ>, Path(name): Path<String>) -> Result<Json<VmView>, ApiError> {
    blocking(&h, move |h| h.vm(&name)).await.map(Json)
}

/// Reconfigure a VM: only the fields given change. While powered on, only
/// `shares`, `reservation_pct`, `limit_pct` (applied at once) and `annotation`.
/// Administrator only.
#[utoipa::path(patch, path = "/api/vms/{name}", tag = "vms", params(("name" = String, Path, description = "VM name")), request_body = VmConfigPatch,
    responses((status = 200, body = VmView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn reconfigure_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>, ApiJson(patch): ApiJson<VmConfigPatch>) -> Result<Json<VmView>, ApiError> {
    blocking(&h, move |h| h.reconfigure(&name, &patch, &s.user)).await.map(Json)
}

/// Destroy a powered-off VM: deletes its directory on the datastore.
/// Administrator only.
#[utoipa::path(delete, path = "/api/vms/{name}", tag = "vms", params(("name" = String, Path, description = "VM name")),
    responses((status = 204, description = "Destroyed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn destroy_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(&h, move |h| h.destroy(&name, &s.user)).await.map(|_| StatusCode::NO_CONTENT)
}

/// Remove a powered-off VM from the inventory, keeping its files.
/// Administrator only.
#[utoipa::path(post, path = "/api/vms/{name}/unregister", tag = "vms", params(("name" = String, Path, description = "VM name")),
    responses((status = 204, description = "Unregistered"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn unregister_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(&h, move |h| h.unregister(&name, &s.user)).await.map(|_| StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// `<datastore>/<vm dir>/<file>.vmx`, absolute.
    pub vmx_path: String,
}

/// Register an existing `.vmx` from a datastore. Administrator only.
#[utoipa::path(post, path = "/api/inventory/register", tag = "vms", request_body = RegisterRequest,
    responses((status = 201, body = VmView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn register_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, ApiJson(r): ApiJson<RegisterRequest>) -> Result<(StatusCode, Json<VmView>), ApiError> {
    blocking(&h, move |h| h.register(&r.vmx_path, &s.user)).await.map(|v| (StatusCode::CREATED, Json(v)))
}

/// Clone a powered-off VM (full copy of the disks in its directory, or
/// `linked`: qcow2 overlays on them): starts a task; the clone appears in
/// the inventory when it succeeds. Administrator only.
#[utoipa::path(post, path = "/api/vms/{name}/clone", tag = "vms", params(("name" = String, Path, description = "The VM to clone")), request_body = CloneSpec,
    responses((status = 202, description = "Started; poll the task", body = Task), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Powered on, busy, name taken, or a linked clone of non-qcow2 disks", body = ErrorBody)))]
async fn clone_vm(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>, ApiJson(spec): ApiJson<CloneSpec>) -> Result<(StatusCode, Json<Task>), ApiError> {
    let h2 = Arc::clone(&h);
    tokio::task::spawn_blocking(move || h2.clone_vm(&name, spec, &s.user))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(|t| (StatusCode::ACCEPTED, Json(t)))
        .map_err(ApiError::from)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub action: PowerAction,
}

/// Power operation (`on`, `off`, `reset`, `shutdown`, `pause`, `resume`):
/// starts a task. Operator or Administrator.
#[utoipa::path(post, path = "/api/vms/{name}/power", tag = "vms", params(("name" = String, Path, description = "VM name")), request_body = PowerRequest,
    responses((status = 202, description = "Started; poll the task", body = Task), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, description = "Wrong power state or busy", body = ErrorBody),
        (status = 503, description = "The VMkernel cannot be reached", body = ErrorBody)))]
async fn power_vm(State(h): State<H>, Auth(s): Auth<OPERATE>, Path(name): Path<String>, ApiJson(r): ApiJson<PowerRequest>) -> Result<(StatusCode, Json<Task>), ApiError> {
    let h2 = Arc::clone(&h);
    tokio::task::spawn_blocking(move || h2.power(&name, r.action, &s.user))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(|t| (StatusCode::ACCEPTED, Json(t)))
        .map_err(ApiError::from)
}

/// A powered-on VM's statistics: exits by kind, vCPU run time, host memory,
/// and samples of the last hour (every 20 s).
#[utoipa::path(get, path = "/api/vms/{name}/stats", tag = "vms", params(("name" = String, Path, description = "VM name")),
    responses((status = 200, body = VmStats), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Powered off", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn vm_stats(State(h): State<H>, _a: Auth<READ>, Path(name): Path<String>) -> Result<Json<VmStats>, ApiError> {
    blocking(&h, move |h| h.vm_stats(&name)).await.map(Json)
}

/// A browser always sends `Origin` with a WebSocket handshake: it must be
/// this host, so no other site can open a console with the user's cookie.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    if origin.strip_prefix("https://").is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("a console may be opened only from this host's own pages, not from {origin:?}")))
    }
}

/// Largest message a console client may send.
const CONSOLE_MAX_MESSAGE: usize = 64 * 1024;
const CONSOLE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// A powered-on VM's serial console as a WebSocket: binary messages from
/// hostd are the guest's output (first the last 16 KiB it printed), text or
/// binary messages from the client are typed into the guest. hostd closes
/// the socket (1000) when the VM is powered off. Operator or Administrator.
#[utoipa::path(get, path = "/api/vms/{name}/console", tag = "vms", params(("name" = String, Path, description = "VM name")),
    responses((status = 101, description = "Switching to the WebSocket protocol"), (status = 400, description = "Not a WebSocket handshake", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "Role, or a page of another site", body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Powered off", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn vm_console(
    State(h): State<H>,
    Auth(s): Auth<OPERATE>,
    Path(name): Path<String>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let n2 = name.clone();
    let id = blocking(&h, move |h| h.console_vm(&n2)).await?;
    let ws = ws.map_err(|e| ApiError::bad_request(format!("a WebSocket handshake is required: {e}")))?;
    audit(&h, &s.user, format!("console {name}"), 101, peer.map(|p| p.0.0.ip().to_string())).await;
    Ok(ws.max_message_size(CONSOLE_MAX_MESSAGE).on_upgrade(move |socket| console_session(h, id, s.token, socket)))
}

/// How often an open console checks that its session still exists (a
/// logout, an expiry or a removed account ends the console too).
const CONSOLE_SESSION_CHECK: u32 = 20;

async fn console_session(h: H, id: u32, token: String, mut socket: WebSocket) {
    let mut pos = 0u64;
    let mut tick = tokio::time::interval(CONSOLE_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(CONSOLE_SESSION_CHECK) && auth_lock(&h.sessions).get(&token).is_none() {
                    let close = CloseFrame { code: 1008, reason: "the session ended".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    return;
                }
                match h.kernel.console_read(id, pos) {
                    Ok((data, next)) => {
                        pos = next;
                        if !data.is_empty() && socket.send(Message::Binary(data.into())).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => {
                        let close = CloseFrame { code: 1000, reason: "the VM is powered off".into() };
                        let _ = socket.send(Message::Close(Some(close))).await;
                        return;
                    }
                }
            },
            msg = socket.recv() => {
                let input = match msg {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                // The guest's UART takes what fits; a full FIFO drops the rest,
                // as a real serial line without flow control would.
                for chunk in input.chunks(4096) {
                    if h.kernel.console_write(id, chunk).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

// ---- tasks, events, audit ----

/// Tasks, newest first.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", responses((status = 200, body = [Task]), (status = 401, body = ErrorBody)))]
async fn list_tasks(State(h): State<H>, _a: Auth<READ>) -> Json<Vec<Task>> {
    Json(h.tasks())
}

/// One task.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = u64, Path, description = "Task id")),
    responses((status = 200, body = Task), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_task(State(h): State<H>, _a: Auth<READ>, Path(id): Path<u64>) -> Result<Json<Task>, ApiError> {
    h.task(id).map(Json).ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only records with a larger id.
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// The event log, oldest first.
#[utoipa::path(get, path = "/api/events", tag = "events", params(LogQuery), responses((status = 200, body = [Event]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_events(State(h): State<H>, _a: Auth<READ>, Query(q): Query<LogQuery>) -> Json<Vec<Event>> {
    Json(h.events(q.after.unwrap_or(0), q.limit.unwrap_or(100).min(1000)))
}

/// The audit log: every change request and login, with its user. Administrator only.
#[utoipa::path(get, path = "/api/audit", tag = "events", params(LogQuery), responses((status = 200, body = [AuditRecord]), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_audit(State(h): State<H>, _a: Auth<CONFIGURE>, Query(q): Query<LogQuery>) -> Json<Vec<AuditRecord>> {
    Json(h.audit_records(q.after.unwrap_or(0), q.limit.unwrap_or(100).min(1000)))
}

// ---- users and roles ----

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    /// Seconds left on a login lockout.
    pub locked_secs: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub role: Role,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new password (also lifts a lockout and ends the user's sessions).
    pub password: Option<String>,
    pub role: Option<Role>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleView {
    pub name: Role,
    pub description: String,
}

fn user_view(h: &Hostd, u: &UserRecord) -> UserView {
    UserView { name: u.name.clone(), role: u.role, locked_secs: auth_lock(&h.lockout).locked(&u.name) }
}

/// Local accounts. Administrator only.
#[utoipa::path(get, path = "/api/users", tag = "users", responses((status = 200, body = [UserView]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_users(State(h): State<H>, _a: Auth<CONFIGURE>) -> Json<Vec<UserView>> {
    let users = auth_lock(&h.accounts).users().to_vec();
    Json(users.iter().map(|u| user_view(&h, u)).collect())
}

/// Add an account. Administrator only.
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(State(h): State<H>, Auth(s): Auth<CONFIGURE>, ApiJson(u): ApiJson<NewUser>) -> Result<(StatusCode, Json<UserView>), ApiError> {
    if !auth::valid_user_name(&u.name) {
        return Err(ApiError::invalid("name", "1 to 32 letters, digits, '-', '_' or '.', not starting with '.' or '-'"));
    }
    auth::check_password(&u.password).map_err(|m| ApiError::invalid("password", format!("password: {m}")))?;
    blocking(&h, move |h| {
        let hash = auth::hash_password(&u.password).map_err(|e| OpError::Internal(e.to_string()))?;
        let mut a = auth_lock(&h.accounts);
        if a.get(&u.name).is_some() {
            return Err(OpError::Conflict(format!("user {} exists", u.name)));
        }
        let rec = UserRecord { name: u.name.clone(), role: u.role, password_hash: hash };
        a.put(rec.clone()).map_err(|e| OpError::Internal(format!("writing the accounts: {e}")))?;
        drop(a);
        h.event("user.created", None, Some(&s.user), format!("user {} ({:?}) created", u.name, u.role));
        Ok((StatusCode::CREATED, Json(user_view(h, &rec))))
    })
    .await
}

/// Change an account's password or role. Administrator only.
#[utoipa::path(patch, path = "/api/users/{name}", tag = "users", params(("name" = String, Path, description = "User name")), request_body = UserPatch,
    responses((status = 200, body = UserView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_user(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>, ApiJson(p): ApiJson<UserPatch>) -> Result<Json<UserView>, ApiError> {
    if let Some(pw) = &p.password {
        auth::check_password(pw).map_err(|m| ApiError::invalid("password", format!("password: {m}")))?;
    }
    blocking(&h, move |h| {
        let hash = p.password.as_deref().map(auth::hash_password).transpose().map_err(|e| OpError::Internal(e.to_string()))?;
        let mut a = auth_lock(&h.accounts);
        let mut rec = a.get(&name).cloned().ok_or_else(|| OpError::NotFound(format!("no user {name}")))?;
        if let Some(r) = p.role
            && rec.role == Role::Administrator
            && r != Role::Administrator
            && a.administrators() == 1
        {
            return Err(OpError::Conflict(format!("{name} is the last Administrator")));
        }
        if let Some(r) = p.role {
            rec.role = r;
        }
        if let Some(hash) = hash {
            rec.password_hash = hash;
        }
        a.put(rec.clone()).map_err(|e| OpError::Internal(format!("writing the accounts: {e}")))?;
        drop(a);
        auth_lock(&h.lockout).clear(&name);
        if name != s.user || p.role.is_some() {
            auth_lock(&h.sessions).remove_user(&name);
        }
        h.event("user.changed", None, Some(&s.user), format!("user {name} changed (role {:?}{})", rec.role, if p.password.is_some() { ", new password" } else { "" }));
        Ok(Json(user_view(h, &rec)))
    })
    .await
}

/// Remove an account (not yourself, not the last Administrator). Administrator only.
#[utoipa::path(delete, path = "/api/users/{name}", tag = "users", params(("name" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_user(State(h): State<H>, Auth(s): Auth<CONFIGURE>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    blocking(&h, move |h| {
        if name == s.user {
            return Err(OpError::Conflict("you cannot remove your own account".into()));
        }
        let mut a = auth_lock(&h.accounts);
        let rec = a.get(&name).cloned().ok_or_else(|| OpError::NotFound(format!("no user {name}")))?;
        if rec.role == Role::Administrator && a.administrators() == 1 {
            return Err(OpError::Conflict(format!("{name} is the last Administrator")));
        }
        a.remove(&name).map_err(|e| OpError::Internal(format!("writing the accounts: {e}")))?;
        drop(a);
        auth_lock(&h.sessions).remove_user(&name);
        h.event("user.removed", None, Some(&s.user), format!("user {name} removed"));
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The roles and what they allow.
#[utoipa::path(get, path = "/api/roles", tag = "users", responses((status = 200, body = [RoleView]), (status = 401, body = ErrorBody)))]
async fn list_roles(_a: Auth<READ>) -> Json<Vec<RoleView>> {
    Json(
        Role::ALL
            .iter()
            .map(|r| RoleView {
                name: *r,
                description: match r {
                    Role::Administrator => "everything: VM configuration, inventory, accounts, power",
                    Role::Operator => "power operations and consoles; reads; no configuration",
                    Role::ReadOnly => "reads only",
                }
                .into(),
            })
            .collect(),
    )
}

// ---- the document and the router ----

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        c.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Mantle hostd API", description = "Host agent of the Mantle hypervisor: VM inventory, power, tasks, events, accounts. JSON over HTTPS. Log in with POST /api/session, then send `Authorization: Bearer <token>` (or the hostd_session cookie plus X-CSRF-Token on changes)."),
    modifiers(&Security),
    security(("bearer" = []), ("cookie" = [])),
    components(schemas(ErrorBody, PowerAction)),
    tags((name = "session"), (name = "host"), (name = "datastores"), (name = "vms"), (name = "tasks"), (name = "events"), (name = "users"))
)]
struct ApiDoc;

/// The routes and the OpenAPI document generated from them.
pub fn routes() -> (Router<H>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(login, session_info, logout))
        .routes(routes!(host_summary))
        .routes(routes!(host_stats))
        .routes(routes!(vm_console))
        .routes(routes!(list_datastores))
        .routes(routes!(browse_datastore))
        .routes(routes!(download_file, upload_file, delete_file))
        .routes(routes!(list_vms, create_vm))
        .routes(routes!(get_vm, reconfigure_vm, destroy_vm))
        .routes(routes!(unregister_vm))
        .routes(routes!(register_vm))
        .routes(routes!(power_vm))
        .routes(routes!(clone_vm))
        .routes(routes!(vm_stats))
        .routes(routes!(list_tasks))
        .routes(routes!(get_task))
        .routes(routes!(list_events))
        .routes(routes!(list_audit))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user, delete_user))
        .routes(routes!(list_roles))
        .split_for_parts()
}

/// The whole HTTPS application.
pub fn app(h: H) -> Router {
    let (api_routes, doc) = routes();
    let doc = Arc::new(doc);
    api_routes
        .route("/api/openapi.json", axum::routing::get(move || async move { Json((*doc).clone()) }))
        .fallback(web_client)
        .layer(middleware::from_fn_with_state(Arc::clone(&h), authenticate))
        .layer(middleware::from_fn(read_body_first))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::map_response(security_headers))
        .with_state(h)
}

/// Serves the web client's files (GET only, never outside its directory);
/// anything under /api that no route took is a 404.
async fn web_client(State(h): State<H>, method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let Some(dir) = h.settings.ui_dir.clone() else { return ApiError::not_found("no such endpoint").into_response() };
    if path.starts_with("/api") || !(method == Method::GET || method == Method::HEAD) {
        return ApiError::not_found("no such endpoint").into_response();
    }
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    let safe = rel.split('/').all(|c| !c.is_empty() && !c.starts_with('.') && c.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch)));
    if !safe {
        return ApiError::not_found("no such file").into_response();
    }
    let file = dir.join(rel);
    let Ok(bytes) = tokio::fs::read(&file).await else { return ApiError::not_found("no such file").into_response() };
    let ctype = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    };
    let mut r = Response::new(Body::from(bytes));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
    );
    r
}

async fn security_headers(mut r: Response<Body>) -> Response<Body> {
    let hs = r.headers_mut();
    hs.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    hs.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    hs.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    hs.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The API over the fake VMkernel (in process, no TLS): the power paths the
/// Linux host cannot reach with the real binary.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Settings;
    use crate::vmkernel::fake::FakeVmKernel;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn send(app: &Router, token: &str, method: &str, path: &str, body: Option<serde_json::Value>) -> (StatusCode, serde_json::Value) {
        let mut b = axum::http::Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        let r = app.clone().oneshot(b.body(body).unwrap()).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    async fn wait_task(app: &Router, tok: &str, id: u64) -> serde_json::Value {
        for _ in 0..500 {
            let (_, t) = send(app, tok, "GET", &format!("/api/tasks/{id}"), None).await;
            if t["finished"].is_u64() {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("task {id} did not finish");
    }

    #[tokio::test]
    async fn power_operations_through_the_api() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("volumes/ds1")).unwrap();
        std::fs::write(d.path().join("k.bin"), b"k").unwrap();
        let settings = Settings {
            config_dir: d.path().join("config"),
            volumes_dir: d.path().join("volumes"),
            port_groups: vec!["VM Network".into()],
            session_idle: Duration::from_secs(60),
            lockout_after: 5,
            lockout_for: Duration::from_secs(60),
            ui_dir: None,
            sample_period: crate::host::SAMPLE_PERIOD,
            max_upload_bytes: 1 << 20,
        };
        let kernel = Arc::new(FakeVmKernel::default());
        let h = Hostd::open(settings, kernel.clone()).unwrap();
        let (admin, op, ro) = {
            let mut s = auth_lock(&h.sessions);
            (
                s.create("root", Role::Administrator).unwrap().token,
                s.create("op", Role::Operator).unwrap().token,
                s.create("ro", Role::ReadOnly).unwrap().token,
            )
        };
        let app = app(Arc::clone(&h));
        let spec = serde_json::json!({"name": "vm1", "memory_mib": 16, "kernel": d.path().join("k.bin")});
        assert_eq!(send(&app, &admin, "POST", "/api/vms", Some(spec)).await.0, StatusCode::CREATED);
        let on = serde_json::json!({"action": "on"});
        assert_eq!(send(&app, &ro, "POST", "/api/vms/vm1/power", Some(on.clone())).await.0, StatusCode::FORBIDDEN);
        let (st, task) = send(&app, &op, "POST", "/api/vms/vm1/power", Some(on.clone())).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{task}");
        assert_eq!(task["kind"], "vm.powerOn");
        let t = wait_task(&app, &op, task["id"].as_u64().unwrap()).await;
        assert_eq!((t["state"].as_str(), t["progress"].as_u64(), t["user"].as_str()), (Some("success"), Some(100), Some("op")));
        let (_, vm) = send(&app, &ro, "GET", "/api/vms/vm1", None).await;
        assert_eq!(vm["power_state"], "poweredOn");
        assert!(vm["kernel_id"].is_u64());
        let (st, stats) = send(&app, &ro, "GET", "/api/vms/vm1/stats", None).await;
        assert_eq!(st, StatusCode::OK, "{stats}");
        assert_eq!(stats["guest_memory_bytes"], 16 << 20);
        assert_eq!(stats["disks"], serde_json::json!([]), "a VM without disks shows none of the kernel's empty slots");
        // Wrong state: 409, no task.
        let (st, e) = send(&app, &op, "POST", "/api/vms/vm1/power", Some(on)).await;
        assert_eq!((st, e["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
        let (st, _) = send(&app, &admin, "DELETE", "/api/vms/vm1", None).await;
        assert_eq!(st, StatusCode::CONFLICT, "a powered-on VM is not destroyed");
        let (st, _) = send(&app, &admin, "PATCH", "/api/vms/vm1", Some(serde_json::json!({"vcpus": 2}))).await;
        assert_eq!(st, StatusCode::CONFLICT, "CPU count does not change while powered on");
        for action in ["pause", "resume", "reset", "off"] {
            let (st, task) = send(&app, &op, "POST", "/api/vms/vm1/power", Some(serde_json::json!({"action": action}))).await;
            assert_eq!(st, StatusCode::ACCEPTED, "{action}: {task}");
            let t = wait_task(&app, &op, task["id"].as_u64().unwrap()).await;
            assert_eq!(t["state"], "success", "{action}: {t}");
        }
        let (_, vm) = send(&app, &ro, "GET", "/api/vms/vm1", None).await;
        assert_eq!(vm["power_state"], "poweredOff");
        let (_, events) = send(&app, &ro, "GET", "/api/events?limit=1000", None).await;
        for kind in ["vm.poweredOn", "vm.paused", "vm.resumed", "vm.reset", "vm.poweredOff"] {
            assert!(events.as_array().unwrap().iter().any(|e| e["kind"] == kind && e["user"] == "op"), "{kind}: {events}");
        }
        assert_eq!(send(&app, &admin, "DELETE", "/api/vms/vm1", None).await.0, StatusCode::NO_CONTENT);
        let calls = kernel.calls.lock().unwrap().clone();
        assert_eq!(calls, ["create vm1", "start 1", "pause 1", "resume 1", "reset 1", "stop 1", "destroy 1"]);
    }
}
