//! The interface adapter: one protocol-neutral request in, one response out,
//! for the HTTP front and the WAP front alike (DESIGN §12).
//!
//! A front turns what it received into an [`http::Request<Bytes>`] (method,
//! URI, headers, the whole body) plus an [`Origin`] (the overlay source, the
//! address it arrived on, which front), and calls [`Adapter::handle`]. The
//! adapter then, in this order:
//! 1. resolves the overlay source to an [`Identity`] through tunneld's
//!    verified leases ([`Resolver`]); unknown sources get 403, an
//!    unreachable tunneld 503;
//! 2. enforces the application's allowed groups: 403 before the backend is
//!    called (the WAP front maps 403 to WSP status 0x43);
//! 3. removes every client-sent `X-Permanet-*` header (also spelt with `_`,
//!    which CGI and many frameworks read as `-`), then adds
//!    `X-Permanet-User`, `X-Permanet-Address` and `X-Permanet-Groups`;
//! 4. hands the request to the backend: a reverse proxy to an HTTP URL
//!    ([`reverse_proxy`]) or a CGI program (RFC 3875, [`cgi`]), bounded in
//!    time (504) and size, unreachable or broken backends giving 502.
//!
//! Header values are percent-encoded UTF-8 (RFC 3986 unreserved characters
//! kept): `X-Permanet-Groups` is a comma-separated list of such names, so a
//! comma inside a group name cannot split it. Every refusal is counted
//! ([`Adapter::counters`]).

pub mod cgi;
pub mod reverse_proxy;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use overlay_proto::counters::Labelled;
use tracing::{debug, info, warn};

use crate::config::{Application, Backend, Limits};
use crate::identity::{Identity, Lookup, Resolver};

/// The authenticated user's lease name.
pub const USER_HEADER: &str = "x-permanet-user";
/// The request's overlay source address.
pub const ADDRESS_HEADER: &str = "x-permanet-address";
/// The user's lease groups, comma-separated.
pub const GROUPS_HEADER: &str = "x-permanet-groups";

/// Identity headers start with this (compared case-insensitively, `_` read
/// as `-`).
const IDENTITY_HEADER_PREFIX: &str = "x-permanet-";

/// Which front a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// HTTP/1.1 on TCP.
    Http,
    /// WSP (connectionless or over WTP) on UDP.
    Wap,
}

/// Where a request came from and arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The overlay source address and port (the socket peer in TUN mode,
    /// the PROXY v2 header's source in userspace mode).
    pub source: SocketAddr,
    /// The overlay address and port it was sent to (the application's
    /// permanent address).
    pub destination: SocketAddr,
    /// The front.
    pub front: Front,
}

/// What the WAP front knows of the client, carried in the request's extensions
/// (`request.extensions_mut().insert(WapClient { .. })`); absent for HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WapClient {
    /// The largest response the client takes in one SDU (negotiated Client-SDU-Size;
    /// 0 = no limit): the compiled size each card must fit.
    pub sdu_size: usize,
}

/// Why a backend gave no usable response.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached (connect refused, no route,
    /// program missing).
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    /// The backend did not answer in full within `backend-timeout` (or the
    /// connection within `connect-timeout`).
    #[error("backend timed out")]
    Timeout,
    /// The backend answered, but not acceptably (bad HTTP, bad CGI output,
    /// a body over `max-body-bytes`, a CGI program that failed).
    #[error("bad backend response: {0}")]
    BadResponse(String),
}

impl BackendError {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            BackendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            BackendError::Unreachable(_) | BackendError::BadResponse(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// One application's interface adapter. Shared by its fronts (`Arc`).
#[derive(Debug)]
pub struct Adapter {
    name: String,
    allowed_groups: RwLock<Arc<Vec<String>>>,
    backend: BackendKind,
    resolver: Arc<Resolver>,
    limits: Limits,
    counters: AdapterCounters,
}

#[derive(Debug)]
enum BackendKind {
    Http(reverse_proxy::ReverseProxy),
    Cgi(cgi::Cgi),
}

#[derive(Debug, Default)]
struct AdapterCounters {
    requests: AtomicU64,
    answered: AtomicU64,
    unknown_source: AtomicU64,
    identity_unavailable: AtomicU64,
    forbidden_group: AtomicU64,
    injected_identity_headers: AtomicU64,
    body_too_large: AtomicU64,
    backend_unreachable: AtomicU64,
    backend_timeout: AtomicU64,
    backend_bad_response: AtomicU64,
}

impl Adapter {
    /// The adapter of `app`, resolving sources with `resolver`.
    pub fn new(app: &Application, limits: Limits, resolver: Arc<Resolver>) -> Self {
        let backend = match &app.backend {
            Backend::Http { url } => BackendKind::Http(reverse_proxy::ReverseProxy::new(url)),
            Backend::Cgi {
                program,
                working_dir,
            } => BackendKind::Cgi(cgi::Cgi::new(program.clone(), working_dir.clone())),
        };
        Adapter {
            name: app.name.clone(),
            allowed_groups: RwLock::new(Arc::new(app.allowed_groups.clone())),
            backend,
            resolver,
            limits,
            counters: AdapterCounters::default(),
        }
    }

    /// The application's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replace the allowed groups (SIGHUP).
    pub fn set_allowed_groups(&self, groups: Vec<String>) {
        *self
            .allowed_groups
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(groups);
    }

    /// Answer `request` from `origin`: identity, access check, identity
    /// headers, backend (see the module docs). Never fails: refusals and
    /// backend failures are responses (403, 413, 502, 503, 504) with a
    /// short `text/plain` body.
    pub async fn handle(&self, request: Request<Bytes>, origin: Origin) -> Response<Bytes> {
        let c = &self.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        let response = self.answer(request, origin).await;
        if response.status().is_success() || response.status().is_redirection() {
            c.answered.fetch_add(1, Ordering::Relaxed);
        }
        response
    }

    async fn answer(&self, mut request: Request<Bytes>, origin: Origin) -> Response<Bytes> {
        let c = &self.counters;
        let identity = match self.identify(origin.source.ip()).await {
            Ok(identity) => identity,
            Err(response) => return response,
        };
        let allowed = Arc::clone(
            &self
                .allowed_groups
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        );
        if !identity.is_allowed(&allowed) {
            c.forbidden_group.fetch_add(1, Ordering::Relaxed);
            info!(application = %self.name, user = %identity.name, source = %origin.source, "refused: not in an allowed group");
            return plain(
                StatusCode::FORBIDDEN,
                "forbidden: not in a group allowed to use this application\n",
            );
        }
        if request.body().len() > self.limits.max_body_bytes {
            c.body_too_large.fetch_add(1, Ordering::Relaxed);
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
        }
        let removed = set_identity_headers(request.headers_mut(), &identity);
        if removed > 0 {
            c.injected_identity_headers
                .fetch_add(removed, Ordering::Relaxed);
            warn!(application = %self.name, user = %identity.name, source = %origin.source, removed, "client-sent identity headers removed");
        }
        let timeout = self.limits.backend_timeout;
        let result = match &self.backend {
            BackendKind::Http(proxy) => {
                tokio::time::timeout(timeout, proxy.forward(request, origin, &self.limits)).await
            }
            BackendKind::Cgi(cgi) => {
                // The CGI runner enforces the timeout itself: it must kill
                // and reap the program.
                Ok(cgi.run(request, origin, &identity, &self.limits).await)
            }
        };
        match result.unwrap_or(Err(BackendError::Timeout)) {
            Ok(response) => response,
            Err(error) => {
                let counter = match error {
                    BackendError::Timeout => &c.backend_timeout,
                    BackendError::Unreachable(_) => &c.backend_unreachable,
                    BackendError::BadResponse(_) => &c.backend_bad_response,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                warn!(application = %self.name, %error, "backend failed");
                let status = error.status();
                plain(
                    status,
                    &format!("{}\n", status.canonical_reason().unwrap_or("error")),
                )
            }
        }
    }

    /// The identity of `source`, or the refusal.
    async fn identify(&self, source: IpAddr) -> Result<Arc<Identity>, Response<Bytes>> {
        let c = &self.counters;
        let unknown = || {
            c.unknown_source.fetch_add(1, Ordering::Relaxed);
            plain(StatusCode::FORBIDDEN, "forbidden: unknown overlay source\n")
        };
        let IpAddr::V6(address) = source else {
            debug!(application = %self.name, %source, "refused: not an overlay (IPv6) source");
            return Err(unknown());
        };
        match self.resolver.resolve(address).await {
            Ok(Lookup::Known(identity)) => Ok(identity),
            Ok(Lookup::Unknown) => {
                info!(application = %self.name, %source, "refused: no valid lease holds the source");
                Err(unknown())
            }
            Err(error) => {
                c.identity_unavailable.fetch_add(1, Ordering::Relaxed);
                warn!(application = %self.name, %source, %error, "identity lookup failed");
                Err(plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "identity service unavailable\n",
                ))
            }
        }
    }

    /// The adapter's counters (its resolver's are separate).
    pub fn counters(&self) -> Vec<Labelled> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Labelled::new(
                "requests",
                "requests handed to the adapter",
                get(&c.requests),
            ),
            Labelled::new(
                "answered",
                "requests answered with 2xx or 3xx",
                get(&c.answered),
            ),
            Labelled::new(
                "unknown_source",
                "refused: no valid lease holds the source (403)",
                get(&c.unknown_source),
            ),
            Labelled::new(
                "identity_unavailable",
                "refused: tunneld could not be asked (503)",
                get(&c.identity_unavailable),
            ),
            Labelled::new(
                "forbidden_group",
                "refused: not in an allowed group (403)",
                get(&c.forbidden_group),
            ),
            Labelled::new(
                "injected_identity_headers",
                "client-sent X-Permanet-* headers removed",
                get(&c.injected_identity_headers),
            ),
            Labelled::new(
                "body_too_large",
                "refused: request body over max-body-bytes (413)",
                get(&c.body_too_large),
            ),
            Labelled::new(
                "backend_unreachable",
                "backend unreachable (502)",
                get(&c.backend_unreachable),
            ),
            Labelled::new(
                "backend_timeout",
                "backend too slow (504)",
                get(&c.backend_timeout),
            ),
            Labelled::new(
                "backend_bad_response",
                "backend answered unusably (502)",
                get(&c.backend_bad_response),
            ),
        ]
    }
}

/// Remove every client-sent identity header from `headers`, then add
/// `identity`'s; the number removed.
pub fn set_identity_headers(headers: &mut HeaderMap, identity: &Identity) -> u64 {
    let injected: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_header(name.as_str()))
        .cloned()
        .collect();
    let mut removed = 0;
    for name in injected {
        removed += headers.get_all(&name).iter().count() as u64;
        headers.remove(&name);
    }
    let groups: Vec<String> = identity.groups.iter().map(|g| percent_encode(g)).collect();
    for (name, value) in [
        (USER_HEADER, percent_encode(&identity.name)),
        (ADDRESS_HEADER, identity.address.to_string()),
        (GROUPS_HEADER, groups.join(",")),
    ] {
        // Percent-encoded: visible ASCII only, always a valid value.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    removed
}

/// Whether `name` (lowercase, as `http` keeps names) is an identity
/// header, `_` read as `-`.
fn is_identity_header(name: &str) -> bool {
    name.len() >= IDENTITY_HEADER_PREFIX.len()
        && name
            .bytes()
            .zip(IDENTITY_HEADER_PREFIX.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

/// `text` with every byte outside RFC 3986's unreserved set as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Remove hop-by-hop headers, those `Connection` names included, and
/// `Upgrade` (no protocol switching through the adapter).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(["upgrade"])
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

/// A response with a short `text/plain` body.
pub fn plain(status: StatusCode, text: &str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::copy_from_slice(text.as_bytes()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn alice() -> Identity {
        Identity {
            address: "2002:b16:212c:1::1234".parse().unwrap(),
            name: "alice".into(),
            kind: "user".into(),
            groups: vec!["staff".into(), "a,b é".into()],
            not_after: u64::MAX,
        }
    }

    #[test]
    fn identity_headers_replace_injected_ones_in_any_spelling() {
        let mut headers = HeaderMap::new();
        for name in [
            "X-Permanet-User",
            "x-permanet-groups",
            "X-PERMANET-ADDRESS",
            "X-Permanet_User",
            "x_permanet_other",
            "X-Permanet-",
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("root"),
            );
        }
        headers.append("x-permanet-user", HeaderValue::from_static("root2"));
        headers.insert("x-permanent", HeaderValue::from_static("kept"));
        headers.insert("accept", HeaderValue::from_static("text/html"));
        assert_eq!(set_identity_headers(&mut headers, &alice()), 7);
        assert_eq!(
            headers.get_all(USER_HEADER).iter().collect::<Vec<_>>(),
            ["alice"]
        );
        assert_eq!(headers[ADDRESS_HEADER], "2002:b16:212c:1::1234");
        assert_eq!(headers[GROUPS_HEADER], "staff,a%2Cb%20%C3%A9");
        assert_eq!(headers["x-permanent"], "kept");
        assert_eq!(headers["accept"], "text/html");
        assert_eq!(headers.len(), 5);
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ] {
            headers.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut headers);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["accept"]
        );
    }
}
