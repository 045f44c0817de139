//! Who may use the local API: the API token, browser sessions, and the checks that keep other
//! web sites and DNS rebinding out. It owns the token file and the session cookie; it knows
//! nothing of what the routes do (`api` decides which routes are public).
//!
//! - **Token.** `DATA_DIR/api.token` (mode 0600) holds 32 random bytes as hex. `hearth init`
//!   writes it; a node started on a data directory without one creates it. Clients send it as
//!   `Authorization: Bearer <hex>`. Whoever can read the data directory can drive the node,
//!   exactly as whoever can read `identity.key` can spend the household's credit.
//! - **Browser sessions.** `POST /v1/login/ticket` (token required) makes a single-use ticket
//!   that lives [`TICKET_TTL`]; `GET /login?ticket=..` exchanges it for an `HttpOnly`,
//!   `SameSite=Strict` cookie and redirects to the dashboard. The cookie is stateless: an
//!   expiry and a nonce, MACed with a key derived from the token (blake3 keyed hash), so
//!   sessions survive a restart of the node and end when the token is replaced.
//! - **Host.** Every request must name this API in `Host`: `localhost:PORT`, a loopback
//!   address with PORT, or the address the API is bound to (any IP address with PORT when
//!   bound to `0.0.0.0`/`::`). A page on `evil.example` whose DNS later points at 127.0.0.1
//!   (DNS rebinding) sends `Host: evil.example` and is refused.
//! - **Cross-site requests.** A request that changes anything, and every request carrying
//!   the session cookie, is refused when the browser says it comes from elsewhere:
//!   `Sec-Fetch-Site` other than `same-origin` or `none`, or an `Origin` that is not this
//!   API's own. Clients that are not browsers send neither header and pass. The API answers
//!   no CORS preflight, so no other origin can read an answer either.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

/// File name of the API token inside the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// Environment variable a client may use instead of the token file.
pub const TOKEN_ENV: &str = "HEARTH_API_TOKEN";
/// How long a login link works.
pub const TICKET_TTL: Duration = Duration::from_secs(120);
/// How long a browser session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Login links outstanding at once; a household opens one at a time, so this is plenty and
/// bounds the map whoever holds the token asks.
const MAX_TICKETS: usize = 16;
/// Longest session cookie value we parse: `expiry.nonce.mac` is under 120 characters.
const MAX_COOKIE_VALUE: usize = 200;
/// Domain separation for the key that MACs session cookies.
const SESSION_KEY_CONTEXT: &str = "hearth 2026-11 local API session cookie v1";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} does not hold an API token (64 hex digits); delete it and restart the node to make a new one")]
    Malformed { path: PathBuf },
    #[error("{0} does not hold an API token (64 hex digits)")]
    MalformedEnv(&'static str),
    #[error("the operating system has no randomness to make a token from")]
    Randomness,
}

/// The secret that lets a client drive this node.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken([u8; 32]);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], TokenError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| TokenError::Randomness)?;
    Ok(bytes)
}

impl ApiToken {
    pub fn generate() -> Result<ApiToken, TokenError> {
        random().map(ApiToken)
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(TOKEN_FILE)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<ApiToken> {
        let bytes = hex::decode(text.trim()).ok()?;
        bytes.try_into().ok().map(ApiToken)
    }

    /// Reads `data_dir/api.token`, refusing a file other users can read.
    pub fn load(data_dir: &Path) -> Result<ApiToken, TokenError> {
        let path = ApiToken::path(data_dir);
        let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(mode) = crate::identity::exposed_mode(&path) {
            return Err(TokenError::Permissions { path, mode });
        }
        ApiToken::from_hex(&text).ok_or(TokenError::Malformed { path })
    }

    /// Loads the token, or creates it (mode 0600) when the data directory has none, so data
    /// directories made before tokens existed keep working. Returns whether it was created.
    pub fn load_or_create(data_dir: &Path) -> Result<(ApiToken, bool), TokenError> {
        match ApiToken::load(data_dir) {
            Ok(t) => Ok((t, false)),
            Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let token = ApiToken::generate()?;
                match token.save_new(data_dir) {
                    Ok(()) => Ok((token, true)),
                    // Another process made it between our read and our write: use theirs.
                    Err(TokenError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Ok((ApiToken::load(data_dir)?, false))
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes a new token file with mode 0600; never replaces an existing one.
    fn save_new(&self, data_dir: &Path) -> Result<(), TokenError> {
        use std::io::Write;
        let path = ApiToken::path(data_dir);
        let io = |source| TokenError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&path).map_err(io)?;
        file.write_all(format!("{}\n", self.to_hex()).as_bytes())
            .map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The token a client uses: `$HEARTH_API_TOKEN` if set, else `data_dir/api.token`;
    /// `None` when neither exists (the node then answers 401, saying how to get in).
    pub fn for_client(
        data_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<ApiToken>, TokenError> {
        if let Some(v) = env(TOKEN_ENV).filter(|v| !v.trim().is_empty()) {
            return ApiToken::from_hex(&v)
                .map(Some)
                .ok_or(TokenError::MalformedEnv(TOKEN_ENV));
        }
        match ApiToken::load(data_dir) {
            Ok(t) => Ok(Some(t)),
            Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The API's gatekeeper, shared by every request. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<Inner>,
}

struct Inner {
    /// blake3 of the token: comparing `blake3::Hash`es is constant-time.
    token_hash: blake3::Hash,
    session_key: [u8; 32],
    /// The address the API is actually bound to (its port, when the config said 0).
    bound: SocketAddr,
    cookie_name: String,
    /// Outstanding login tickets and when each stops working; at most [`MAX_TICKETS`].
    tickets: Mutex<HashMap<String, Instant>>,
}

/// Why a request was refused, as the API answers it.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hearth\""),
            );
        }
        resp
    }
}

fn forbidden(msg: impl Into<String>) -> Refusal {
    Refusal(StatusCode::FORBIDDEN, msg.into())
}

const NEEDS_TOKEN: &str = "this API needs the node's token: the hearth CLI sends it from \
     DATA_DIR/api.token (or HEARTH_API_TOKEN) as `Authorization: Bearer`; a browser gets in \
     through the link `hearth dashboard` prints";

impl Access {
    pub fn new(token: &ApiToken, bound: SocketAddr) -> Access {
        Access {
            inner: Arc::new(Inner {
                token_hash: blake3::hash(&token.0),
                session_key: blake3::derive_key(SESSION_KEY_CONTEXT, &token.0),
                bound,
                // Cookies ignore ports: two nodes on one machine must not overwrite each
                // other's session.
                cookie_name: format!("hearth_session_{}", bound.port()),
                tickets: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The port-specific name of the session cookie.
    pub fn cookie_name(&self) -> &str {
        &self.inner.cookie_name
    }

    /// Whether `host` (a `Host` header or URI authority) names this API.
    pub fn host_allowed(&self, host: &str) -> bool {
        let bound = self.inner.bound;
        let (name, port) = match split_host_port(host) {
            Some(p) => p,
            None => return false,
        };
        if port != bound.port() {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || ip == bound.ip() || bound.ip().is_unspecified(),
            Err(_) => false,
        }
    }

    fn token_matches(&self, given: &str) -> bool {
        match ApiToken::from_hex(given) {
            Some(t) => blake3::hash(&t.0) == self.inner.token_hash,
            None => false,
        }
    }

    /// A new session cookie value: `expiry.nonce.mac`.
    fn new_session(&self, now: SystemTime) -> Result<String, TokenError> {
        let expiry = now
            .checked_add(SESSION_TTL)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let nonce = hex::encode(random::<16>()?);
        let body = format!("{expiry}.{nonce}");
        let mac = blake3::keyed_hash(&self.inner.session_key, body.as_bytes());
        Ok(format!("{body}.{}", mac.to_hex()))
    }

    fn session_valid(&self, value: &str, now: SystemTime) -> bool {
        if value.len() > MAX_COOKIE_VALUE {
            return false;
        }
        let Some((body, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let Ok(mac) = blake3::Hash::from_hex(mac) else {
            return false;
        };
        // Constant-time comparison (blake3::Hash's PartialEq).
        if blake3::keyed_hash(&self.inner.session_key, body.as_bytes()) != mac {
            return false;
        }
        let Some(expiry) = body
            .split_once('.')
            .and_then(|(e, _)| e.parse::<u64>().ok())
        else {
            return false;
        };
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        now < expiry
    }

    fn session_from(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// A single-use login ticket, good for [`TICKET_TTL`].
    pub fn new_ticket(&self, now: Instant) -> Result<String, Refusal> {
        let ticket = hex::encode(
            random::<32>()
                .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
        let mut tickets = self.inner.tickets.lock().unwrap_or_else(|p| p.into_inner());
        tickets.retain(|_, until| *until > now);
        if tickets.len() >= MAX_TICKETS {
            return Err(Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_TICKETS} login links are already waiting to be used; try again in {} s",
                    TICKET_TTL.as_secs()
                ),
            ));
        }
        tickets.insert(ticket.clone(), now + TICKET_TTL);
        Ok(ticket)
    }

    /// Uses up a ticket; true if it existed and had not expired.
    pub fn redeem_ticket(&self, ticket: &str, now: Instant) -> bool {
        let mut tickets = self.inner.tickets.lock().unwrap_or_else(|p| p.into_inner());
        matches!(tickets.remove(ticket), Some(until) if until > now)
    }
}

/// `name:port` or `[v6]:port`; a missing port is HTTP's 80.
fn split_host_port(host: &str) -> Option<(&str, u16)> {
    if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => 80,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((ip, port));
    }
    match host.rsplit_once(':') {
        Some((name, port)) => Some((name, port.parse().ok()?)),
        None => Some((host, 80)),
    }
}

/// The host this request names: the URI's authority (HTTP/2, absolute-form) or `Host`.
fn request_host(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Refuses a request a browser says came from another site or origin.
fn refuse_cross_site(headers: &HeaderMap, host: &str) -> Result<(), Refusal> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("");
        if site != "same-origin" && site != "none" {
            return Err(forbidden(format!(
                "refused a request from another web site (Sec-Fetch-Site: {site}); only the \
                 node's own dashboard may drive it from a browser"
            )));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
            return Err(forbidden(format!(
                "refused a request from another origin ({origin}); only the node's own \
                 dashboard may drive it from a browser"
            )));
        }
    }
    Ok(())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

/// Outermost layer, on every route: the `Host` must name this API, and a request that changes
/// anything must not come from another site.
pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    let Some(host) = request_host(&req) else {
        return forbidden("the request names no Host").into_response();
    };
    if !access.host_allowed(&host) {
        tracing::debug!(%host, "API request for a foreign Host refused");
        return forbidden(format!(
            "this is hearth's local API on port {port}; it answers only to localhost:{port} \
             or its IP address, not to {host:?} (a DNS rebinding attempt?)",
            port = access.inner.bound.port()
        ))
        .into_response();
    }
    if changes_state(req.method()) {
        if let Err(r) = refuse_cross_site(req.headers(), &host) {
            return r.into_response();
        }
    }
    let mut resp = next.run(req).await;
    // Nothing the API says belongs in a shared cache, and no other page may frame it.
    let h = resp.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// On every route that changes anything or reveals private data: the token, or a session
/// cookie from a same-origin page.
pub async fn require(State(access): State<Access>, req: Request, next: Next) -> Response {
    if let Some(auth) = req.headers().get(header::AUTHORIZATION) {
        let given = auth
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if !access.token_matches(given) {
            return Refusal(
                StatusCode::UNAUTHORIZED,
                "the API token does not match this node's DATA_DIR/api.token (wrong --data-dir \
                 or HEARTH_API_TOKEN?)"
                    .into(),
            )
            .into_response();
        }
        return next.run(req).await;
    }
    if let Some(session) = access.session_from(req.headers()) {
        if access.session_valid(&session, SystemTime::now()) {
            let host = request_host(&req).unwrap_or_default();
            if let Err(r) = refuse_cross_site(req.headers(), &host) {
                return r.into_response();
            }
            return next.run(req).await;
        }
        return Refusal(
            StatusCode::UNAUTHORIZED,
            "this browser session has expired; run `hearth dashboard` for a new link".into(),
        )
        .into_response();
    }
    Refusal(StatusCode::UNAUTHORIZED, NEEDS_TOKEN.into()).into_response()
}

/// Answer of `POST /v1/login/ticket`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Ticket {
    pub ticket: String,
    /// Path and query to open on the API's address: `/login?ticket=..`.
    pub path: String,
    pub expires_in_s: u64,
}

/// `POST /v1/login/ticket` (token required): a single-use login link for a browser.
pub async fn ticket(State(access): State<Access>) -> Result<Json<Ticket>, Refusal> {
    let ticket = access.new_ticket(Instant::now())?;
    Ok(Json(Ticket {
        path: format!("/login?ticket={ticket}"),
        ticket,
        expires_in_s: TICKET_TTL.as_secs(),
    }))
}

#[derive(Deserialize)]
pub struct LoginQuery {
    ticket: Option<String>,
}

/// `GET /login?ticket=..`: a valid ticket becomes a session cookie and a redirect to `/`.
pub async fn login(State(access): State<Access>, Query(q): Query<LoginQuery>) -> Response {
    let ticket = q.ticket.unwrap_or_default();
    if ticket.is_empty() || !access.redeem_ticket(&ticket, Instant::now()) {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            "This login link has expired or was already used. Run `hearth dashboard` for a new one.\n",
        )
            .into_response();
    }
    let value = match access.new_session(SystemTime::now()) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("API: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    let cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        access.cookie_name(),
        SESSION_TTL.as_secs()
    );
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            h.insert(header::SET_COOKIE, v);
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(bound: &str) -> Access {
        Access::new(&ApiToken([7; 32]), bound.parse().unwrap())
    }

    #[test]
    fn hosts_that_name_this_api() {
        let a = access("127.0.0.1:7070");
        for ok in [
            "127.0.0.1:7070",
            "localhost:7070",
            "LOCALHOST:7070",
            "[::1]:7070",
        ] {
            assert!(a.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:7070",
            "127.0.0.1:7071",
            "127.0.0.1",
            "192.168.1.5:7070",
            "localhost.evil.example:7070",
            "[::1]7070",
            "",
        ] {
            assert!(!a.host_allowed(bad), "{bad}");
        }
        let lan = access("192.168.1.5:80");
        assert!(lan.host_allowed("192.168.1.5"));
        assert!(!lan.host_allowed("192.168.1.6"));
        assert!(!lan.host_allowed("radiator.local"));
        let any = access("0.0.0.0:7070");
        assert!(any.host_allowed("10.1.2.3:7070"));
        assert!(!any.host_allowed("evil.example:7070"));
    }

    #[test]
    fn sessions_are_macd_and_expire() {
        let a = access("127.0.0.1:7070");
        let now = SystemTime::now();
        let s = a.new_session(now).unwrap();
        assert!(a.session_valid(&s, now));
        assert!(!a.session_valid(&s, now + SESSION_TTL + Duration::from_secs(1)));
        // Any change to the expiry breaks the MAC.
        let (expiry, rest) = s.split_once('.').unwrap();
        let later = format!("{}.{rest}", expiry.parse::<u64>().unwrap() + 1_000_000);
        assert!(!a.session_valid(&later, now));
        // Another token's sessions are not ours.
        let other = Access::new(&ApiToken([8; 32]), "127.0.0.1:7070".parse().unwrap());
        assert!(!other.session_valid(&s, now));
        assert!(!a.session_valid("garbage", now));
        assert!(!a.session_valid(&"1.".repeat(500), now));
    }

    #[test]
    fn tickets_work_once_and_expire() {
        let a = access("127.0.0.1:7070");
        let now = Instant::now();
        let t = a.new_ticket(now).unwrap();
        assert!(a.redeem_ticket(&t, now));
        assert!(!a.redeem_ticket(&t, now));
        let t = a.new_ticket(now).unwrap();
        assert!(!a.redeem_ticket(&t, now + TICKET_TTL));
        for _ in 0..MAX_TICKETS {
            a.new_ticket(now).unwrap();
        }
        assert!(a.new_ticket(now).is_err());
        // Expired ones make room.
        assert!(a.new_ticket(now + TICKET_TTL).is_ok());
    }

    #[test]
    fn token_file_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (t, created) = ApiToken::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = ApiToken::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(t, again);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = ApiToken::path(dir.path());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                ApiToken::load(dir.path()),
                Err(TokenError::Permissions { .. })
            ));
        }
        let env = |k: &str| (k == TOKEN_ENV).then(|| "00".repeat(32));
        let from_env = ApiToken::for_client(dir.path(), &env).unwrap().unwrap();
        assert_eq!(from_env, ApiToken([0; 32]));
        let bad = |k: &str| (k == TOKEN_ENV).then(|| "zz".to_string());
        assert!(ApiToken::for_client(dir.path(), &bad).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(ApiToken::for_client(empty.path(), &|_| None)
            .unwrap()
            .is_none());
    }
}
