//! The reverse-proxy backend: the request forwarded to an `http://` URL
//! over HTTP/1.1 (hyper's client, one connection per request).
//!
//! The request path is appended to the backend URL's path. Hop-by-hop
//! headers (RFC 9110 §7.6.1) are removed both ways. `Host` becomes the
//! backend's authority; the client's `Forwarded` and `X-Forwarded-*`
//! headers are dropped (a client could claim anything) and replaced by
//! `X-Forwarded-For` (the overlay source address), `X-Forwarded-Host` (the
//! client's `Host`, if any), `X-Forwarded-Proto: http` and the same as an RFC
//! 7239 `Forwarded` header. The response body is read whole, at most
//! `max-body-bytes`. Connection failures are [`BackendError::Unreachable`]
//! (502), a connection slower than `connect-timeout` is
//! [`BackendError::Timeout`] (504); the whole exchange is bounded by the
//! caller ([`super::Adapter`]).

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH, HOST};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{remove_hop_by_hop, BackendError, Origin};
use crate::config::Limits;

/// Headers about earlier hops a client could forge; replaced, never
/// forwarded.
const FORWARDING_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// A reverse proxy to one backend URL.
#[derive(Debug)]
pub struct ReverseProxy {
    authority: Authority,
    /// The URL's path without its trailing `/` (empty for the root).
    base_path: String,
}

impl ReverseProxy {
    /// A proxy to `url` (checked by the config: `http://`, a host, no
    /// query).
    pub fn new(url: &Uri) -> Self {
        let authority = url
            .authority()
            .cloned()
            .unwrap_or_else(|| Authority::from_static("localhost"));
        ReverseProxy {
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
        }
    }

    /// Where the backend listens, as `host:port` for `connect`.
    fn connect_address(&self) -> String {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        format!("{host}:{port}")
    }

    /// The backend's URI for a request to `path_and_query`.
    fn target(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, BackendError> {
        let pq = path_and_query.map_or("/", PathAndQuery::as_str);
        format!("{}{}", self.base_path, pq)
            .parse()
            .map_err(|e| BackendError::BadResponse(format!("request path: {e}")))
    }

    /// Forward `request` (identity headers already set); the backend's
    /// response.
    pub async fn forward(
        &self,
        request: Request<Bytes>,
        origin: Origin,
        limits: &Limits,
    ) -> Result<Response<Bytes>, BackendError> {
        let head_request = request.method() == Method::HEAD;
        let (mut parts, body) = request.into_parts();
        parts.uri = self.target(parts.uri.path_and_query())?;
        parts.version = http::Version::HTTP_11;
        forwarding_headers(&mut parts.headers, &self.authority, origin.source.ip());
        let request = Request::from_parts(parts, Full::new(body));

        let address = self.connect_address();
        let stream = match tokio::time::timeout(
            limits.connect_timeout,
            TcpStream::connect(&address),
        )
        .await
        {
            Err(_) => return Err(BackendError::Timeout),
            Ok(Err(error)) => return Err(BackendError::Unreachable(format!("{address}: {error}"))),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(limits.max_header_bytes.max(8192))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BackendError::Unreachable(format!("{address}: {e}")))?;
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "backend connection ended");
            }
        });
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| BackendError::BadResponse(format!("{address}: {e}")));
        let result = match response {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                let body = Limited::new(body, limits.max_body_bytes)
                    .collect()
                    .await
                    .map_err(|e| {
                        BackendError::BadResponse(format!("{address}: response body: {e}"))
                    })?
                    .to_bytes();
                remove_hop_by_hop(&mut parts.headers);
                if !head_request {
                    // The front sets it from the body it sends.
                    parts.headers.remove(CONTENT_LENGTH);
                }
                Ok(Response::from_parts(parts, body))
            }
            Err(error) => Err(error),
        };
        driver.abort();
        result
    }
}

/// Rewrite `headers` for the backend: hop-by-hop and client forwarding
/// headers removed, `Host` set to `backend`, the forwarding headers set from
/// `source` and the client's `Host`.
fn forwarding_headers(headers: &mut HeaderMap, backend: &Authority, source: IpAddr) {
    remove_hop_by_hop(headers);
    for name in FORWARDING_HEADERS {
        headers.remove(name);
    }
    // The body is whole: hyper sets Content-Length from it.
    headers.remove(CONTENT_LENGTH);
    let client_host = headers.remove(HOST);
    if let Ok(host) = HeaderValue::from_str(backend.as_str()) {
        headers.insert(HOST, host);
    }
    let for_value = match source {
        IpAddr::V6(a) => format!("\"[{a}]\""),
        IpAddr::V4(a) => a.to_string(),
    };
    let mut forwarded = format!("for={for_value};proto=http");
    if let Some(host) = client_host.as_ref().and_then(|h| h.to_str().ok()) {
        // Quoted-string: the host is a token or an IPv6 literal; anything
        // with a quote or backslash is dropped rather than escaped.
        if !host.contains(['"', '\\']) {
            forwarded.push_str(&format!(";host=\"{host}\""));
        }
    }
    for (name, value) in [
        ("x-forwarded-for", Some(source.to_string())),
        ("x-forwarded-proto", Some("http".to_owned())),
        ("forwarded", Some(forwarded)),
        (
            "x-forwarded-host",
            client_host.and_then(|h| h.to_str().ok().map(str::to_owned)),
        ),
    ] {
        if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_keep_the_base_path() {
        for (url, request, expected) in [
            ("http://127.0.0.1:8080/", "/a/b?x=1", "/a/b?x=1"),
            ("http://127.0.0.1:8080", "/", "/"),
            ("http://backend/app/", "/x?y", "/app/x?y"),
            ("http://backend/app", "/", "/app/"),
        ] {
            let proxy = ReverseProxy::new(&url.parse().unwrap());
            let uri: Uri = request.parse().unwrap();
            assert_eq!(
                proxy.target(uri.path_and_query()).unwrap(),
                expected,
                "{url} {request}"
            );
        }
        let proxy = ReverseProxy::new(&"http://h/".parse().unwrap());
        assert_eq!(proxy.connect_address(), "h:80");
    }

    #[test]
    fn forged_forwarding_headers_are_replaced() {
        let mut headers = HeaderMap::new();
        for (n, v) in [
            ("host", "wiki.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.1"),
            ("content-length", "3"),
        ] {
            headers.insert(n, HeaderValue::from_static(v));
        }
        let source: IpAddr = "2002:b16:212c:1::1234".parse().unwrap();
        forwarding_headers(
            &mut headers,
            &Authority::from_static("127.0.0.1:8080"),
            source,
        );
        assert_eq!(headers["host"], "127.0.0.1:8080");
        assert_eq!(headers["x-forwarded-for"], "2002:b16:212c:1::1234");
        assert_eq!(headers["x-forwarded-host"], "wiki.example");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(
            headers["forwarded"],
            "for=\"[2002:b16:212c:1::1234]\";proto=http;host=\"wiki.example\""
        );
        assert!(headers.get("x-real-ip").is_none());
        assert!(headers.get("content-length").is_none());
    }
}
