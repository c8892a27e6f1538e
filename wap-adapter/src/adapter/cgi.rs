//! The CGI backend (RFC 3875): one program run per request.
//!
//! The program is mapped at the application's root, so `SCRIPT_NAME` is
//! empty and `PATH_INFO` is the whole (decoded) request path. The
//! environment is cleared, then holds exactly the meta-variables of RFC 3875
//! §4.1 that apply ([`environment`]): `REMOTE_ADDR` is the overlay source
//! address (the authenticated identity), `AUTH_TYPE` is `Permanet` and
//! `REMOTE_USER` the lease name; every request header becomes an `HTTP_*`
//! variable (§4.1.18) except `Content-Type` and `Content-Length` (their own
//! variables) and the credentials headers `Authorization` and
//! `Proxy-Authorization` and the hop-by-hop headers; the identity headers the adapter set arrive as
//! `HTTP_X_PERMANET_USER`, `HTTP_X_PERMANET_ADDRESS`,
//! `HTTP_X_PERMANET_GROUPS`. Also set: `PATH` (a fixed system default),
//! `REMOTE_PORT`, `REQUEST_URI` and `SCRIPT_FILENAME`, which common CGI
//! programs expect.
//!
//! The body goes to the program's stdin; stdout is read whole (bounded) and
//! parsed as a CGI response (§6): `Status:`, `Location:` (a local
//! redirect, `Location: /path`, is followed by running the program again
//! for a GET of that path, at most [`MAX_LOCAL_REDIRECTS`] times; an
//! absolute one is a 302 to the client unless `Status:` says otherwise),
//! `Content-Type:` (required with a body). stderr lines go to the log. A
//! program still running after `backend-timeout` is killed and reaped
//! (504).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tracing::{debug, warn};

use super::{remove_hop_by_hop, BackendError, Origin};
use crate::config::Limits;
use crate::identity::Identity;

/// Local redirects followed for one request.
pub const MAX_LOCAL_REDIRECTS: usize = 5;

/// stderr lines logged per run; the rest are counted in one line.
const MAX_STDERR_LINES: usize = 50;

/// `PATH` in the program's environment.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A CGI program.
#[derive(Debug)]
pub struct Cgi {
    program: PathBuf,
    working_dir: PathBuf,
}

/// A parsed CGI response (RFC 3875 §6).
#[derive(Debug)]
pub enum CgiOutput {
    /// A document or client redirect: the response to send.
    Response(Response<Bytes>),
    /// `Location: /local/path` alone: run again for that path.
    LocalRedirect(Uri),
}

/// Why a program's output is not a CGI response.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CgiResponseError {
    /// No empty line ends the header block within `max-header-bytes`.
    #[error("no end of the header block")]
    NoHeaderEnd,
    /// A header line without `:` or with a bad name or value.
    #[error("bad header line {0:?}")]
    BadHeader(String),
    /// A folded (continuation) header line.
    #[error("folded header line")]
    Folded,
    /// `Status:` not `NNN reason` with NNN in 100..=599.
    #[error("bad Status {0:?}")]
    BadStatus(String),
    /// A body without `Content-Type`.
    #[error("a body without Content-Type")]
    NoContentType,
    /// `Location:` neither absolute nor an absolute path.
    #[error("bad Location {0:?}")]
    BadLocation(String),
}

impl Cgi {
    /// `program`, run in `working_dir`.
    pub fn new(program: PathBuf, working_dir: PathBuf) -> Self {
        Cgi {
            program,
            working_dir,
        }
    }

    /// Run the program for `request` (identity headers already set),
    /// following local redirects; the whole run bounded by
    /// `limits.backend_timeout`.
    pub async fn run(
        &self,
        mut request: Request<Bytes>,
        origin: Origin,
        identity: &Identity,
        limits: &Limits,
    ) -> Result<Response<Bytes>, BackendError> {
        let deadline = tokio::time::Instant::now() + limits.backend_timeout;
        // RFC 3875 §4.1.18: headers about the client connection only are
        // not the program's business.
        remove_hop_by_hop(request.headers_mut());
        for _ in 0..=MAX_LOCAL_REDIRECTS {
            let env = environment(&request, origin, identity, &self.program);
            let output = self
                .execute(env, request.body().clone(), limits, deadline)
                .await?;
            match parse_response(&output, limits.max_header_bytes).map_err(|e| {
                BackendError::BadResponse(format!("{}: {e}", self.program.display()))
            })? {
                CgiOutput::Response(response) => return Ok(response),
                CgiOutput::LocalRedirect(uri) => {
                    debug!(program = %self.program.display(), %uri, "CGI local redirect");
                    let headers = std::mem::take(request.headers_mut());
                    let mut next = Request::new(Bytes::new());
                    *next.method_mut() = Method::GET;
                    *next.uri_mut() = uri;
                    *next.headers_mut() = headers;
                    next.headers_mut().remove(CONTENT_TYPE);
                    next.headers_mut().remove(CONTENT_LENGTH);
                    request = next;
                }
            }
        }
        Err(BackendError::BadResponse(format!(
            "{}: more than {MAX_LOCAL_REDIRECTS} local redirects",
            self.program.display()
        )))
    }

    /// One run: the program's stdout, at most the header and body limits
    /// (plus one byte, so an overlong output is seen).
    async fn execute(
        &self,
        env: Vec<(String, OsString)>,
        body: Bytes,
        limits: &Limits,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, BackendError> {
        let mut child = Command::new(&self.program)
            .current_dir(&self.working_dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackendError::Unreachable(format!("{}: {e}", self.program.display())))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let limit = (limits.max_header_bytes + limits.max_body_bytes) as u64 + 1;
        let program = self.program.display().to_string();
        let run = async {
            let write = async move {
                if let Some(mut stdin) = stdin {
                    // A program may exit without reading its input.
                    let _ = stdin.write_all(&body).await;
                }
            };
            let read = async move {
                let mut out = Vec::new();
                if let Some(stdout) = stdout {
                    let _ = stdout.take(limit).read_to_end(&mut out).await;
                }
                // Dropping stdout here: a program writing past the limit
                // gets EPIPE instead of blocking until the timeout.
                out
            };
            let log = log_stderr(stderr, &program);
            let ((), out, ()) = tokio::join!(write, read, log);
            let status = child.wait().await;
            (out, status)
        };
        let outcome = tokio::time::timeout_at(deadline, run).await;
        let (out, status) = match outcome {
            Ok(done) => done,
            Err(_) => {
                warn!(program = %self.program.display(), "CGI program timed out; killing it");
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(BackendError::Timeout);
            }
        };
        if out.len() as u64 >= limit {
            return Err(BackendError::BadResponse(format!(
                "{program}: output over the limits"
            )));
        }
        match status {
            Ok(status) if status.success() => Ok(out),
            Ok(status) => Err(BackendError::BadResponse(format!("{program}: {status}"))),
            Err(error) => Err(BackendError::BadResponse(format!("{program}: {error}"))),
        }
    }
}

async fn log_stderr(stderr: Option<tokio::process::ChildStderr>, program: &str) {
    let Some(stderr) = stderr else { return };
    let mut lines = BufReader::new(stderr.take(1 << 20)).lines();
    let mut seen = 0usize;
    while let Ok(Some(line)) = lines.next_line().await {
        seen += 1;
        if seen <= MAX_STDERR_LINES {
            warn!(%program, stderr = %line, "CGI program");
        }
    }
    if seen > MAX_STDERR_LINES {
        warn!(%program, dropped = seen - MAX_STDERR_LINES, "CGI program: more stderr lines not logged");
    }
}

/// The RFC 3875 meta-variables for `request` from `origin` by `identity`,
/// running `program` (see the module docs).
pub fn environment(
    request: &Request<Bytes>,
    origin: Origin,
    identity: &Identity,
    program: &std::path::Path,
) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    let mut set = |name: &str, value: OsString| env.push((name.to_owned(), value));
    let text = |s: &str| OsString::from(s);
    let uri = request.uri();
    let headers = request.headers();
    set("GATEWAY_INTERFACE", text("CGI/1.1"));
    set(
        "SERVER_SOFTWARE",
        text(concat!("wap-adapter/", env!("CARGO_PKG_VERSION"))),
    );
    set("SERVER_PROTOCOL", text(&format!("{:?}", request.version())));
    set("REQUEST_METHOD", text(request.method().as_str()));
    set("SCRIPT_NAME", text(""));
    set("SCRIPT_FILENAME", program.as_os_str().to_owned());
    set(
        "PATH_INFO",
        OsString::from_vec(percent_decode(uri.path().as_bytes())),
    );
    set("QUERY_STRING", text(uri.query().unwrap_or("")));
    set(
        "REQUEST_URI",
        text(uri.path_and_query().map_or("/", |pq| pq.as_str())),
    );
    set("REMOTE_ADDR", text(&origin.source.ip().to_string()));
    set("REMOTE_HOST", text(&origin.source.ip().to_string()));
    set("REMOTE_PORT", text(&origin.source.port().to_string()));
    set("AUTH_TYPE", text("Permanet"));
    set("REMOTE_USER", text(&identity.name));
    let server_name = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .map(|a| a.host().to_owned())
        .unwrap_or_else(|| match origin.destination.ip() {
            std::net::IpAddr::V6(a) => format!("[{a}]"),
            std::net::IpAddr::V4(a) => a.to_string(),
        });
    set("SERVER_NAME", text(&server_name));
    set("SERVER_PORT", text(&origin.destination.port().to_string()));
    if !request.body().is_empty() || headers.contains_key(CONTENT_LENGTH) {
        set("CONTENT_LENGTH", text(&request.body().len().to_string()));
    }
    if let Some(content_type) = headers.get(CONTENT_TYPE) {
        set(
            "CONTENT_TYPE",
            OsString::from_vec(content_type.as_bytes().to_vec()),
        );
    }
    set("PATH", text(PATH));
    for name in headers.keys() {
        if [
            CONTENT_TYPE,
            CONTENT_LENGTH,
            http::header::AUTHORIZATION,
            http::header::PROXY_AUTHORIZATION,
        ]
        .contains(name)
        {
            continue;
        }
        let mut value = Vec::new();
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(v.as_bytes());
        }
        let variable = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        set(&variable, OsString::from_vec(value));
    }
    env
}

/// `%XX` sequences decoded; a `%` without two hex digits is kept as is.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // hi, lo < 16: the byte fits.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Parse a program's output as a CGI response (RFC 3875 §6). Lines end in
/// LF or CRLF.
pub fn parse_response(
    output: &[u8],
    max_header_bytes: usize,
) -> Result<CgiOutput, CgiResponseError> {
    let mut headers = HeaderMap::new();
    let mut status = None;
    let mut location = None;
    let mut rest = output;
    let mut consumed = 0usize;
    let body = loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(CgiResponseError::NoHeaderEnd);
        };
        let (line, after) = rest.split_at(end);
        let after = after.get(1..).unwrap_or_default();
        consumed += end + 1;
        if consumed > max_header_bytes {
            return Err(CgiResponseError::NoHeaderEnd);
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        rest = after;
        if line.is_empty() {
            break rest;
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(CgiResponseError::Folded);
        }
        let bad = || CgiResponseError::BadHeader(String::from_utf8_lossy(line).into_owned());
        let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
        let value = HeaderValue::from_bytes(value).map_err(|_| bad())?;
        if name.as_str() == "status" {
            status = Some(parse_status(&value)?);
        } else if name == LOCATION {
            location = Some(value);
        } else {
            headers.append(name, value);
        }
    };
    remove_hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);
    if let Some(location) = location {
        let text = location.to_str().map_err(|_| {
            CgiResponseError::BadLocation(String::from_utf8_lossy(location.as_bytes()).into_owned())
        })?;
        let bad = || CgiResponseError::BadLocation(text.to_owned());
        let uri: Uri = text.parse().map_err(|_| bad())?;
        if text.starts_with('/') && !text.starts_with("//") {
            if status.is_none() && body.is_empty() && headers.is_empty() {
                return Ok(CgiOutput::LocalRedirect(uri));
            }
            // A local path with a document: sent to the client as is.
        } else if uri.scheme().is_none() {
            return Err(bad());
        }
        headers.insert(LOCATION, location);
        status.get_or_insert(StatusCode::FOUND);
    }
    if !body.is_empty() && !headers.contains_key(CONTENT_TYPE) {
        return Err(CgiResponseError::NoContentType);
    }
    let mut response = Response::new(Bytes::copy_from_slice(body));
    *response.status_mut() = status.unwrap_or(StatusCode::OK);
    *response.headers_mut() = headers;
    Ok(CgiOutput::Response(response))
}

fn parse_status(value: &HeaderValue) -> Result<StatusCode, CgiResponseError> {
    let bad =
        || CgiResponseError::BadStatus(String::from_utf8_lossy(value.as_bytes()).into_owned());
    let code = value.as_bytes().get(..3).ok_or_else(bad)?;
    let after = value.as_bytes().get(3..).unwrap_or_default();
    if !(after.is_empty() || after.first() == Some(&b' ')) {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(code).map_err(|_| bad())?;
    if !(100..=599).contains(&code.as_u16()) {
        return Err(bad());
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn response(output: &str) -> Result<CgiOutput, CgiResponseError> {
        parse_response(output.as_bytes(), 1024)
    }

    #[test]
    fn documents_redirects_and_status() {
        let CgiOutput::Response(r) =
            response("Content-Type: text/html\r\nX-A: 1\r\n\r\n<p>hi").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/html");
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.body().as_ref(), b"<p>hi");

        let CgiOutput::Response(r) =
            response("Status: 404 Not Found\nContent-Type: text/plain\n\nno").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status(), 404);
        assert!(r.headers().get("status").is_none());

        let CgiOutput::Response(r) = response("Location: http://example.org/x\n\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "http://example.org/x");

        let CgiOutput::Response(r) =
            response("Status: 301 Moved\nLocation: https://e/\n\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.status(), 301);

        let CgiOutput::LocalRedirect(uri) = response("Location: /other?q=1\n\n").unwrap() else {
            panic!()
        };
        assert_eq!(uri, "/other?q=1");
        let CgiOutput::Response(r) = response("Status: 204 No Content\n\n").unwrap() else {
            panic!()
        };
        assert_eq!(r.status(), 204);
    }

    #[test]
    fn bad_outputs_are_typed_errors() {
        for (output, error) in [
            ("Content-Type: text/html", CgiResponseError::NoHeaderEnd),
            ("Content-Type: text/html\n", CgiResponseError::NoHeaderEnd),
            (
                "no colon\n\n",
                CgiResponseError::BadHeader("no colon".into()),
            ),
            ("Content-Type: a\n folded\n\n", CgiResponseError::Folded),
            (
                "Status: 99 x\n\n",
                CgiResponseError::BadStatus("99 x".into()),
            ),
            (
                "Status: 2000\n\n",
                CgiResponseError::BadStatus("2000".into()),
            ),
            ("Status: abc\n\n", CgiResponseError::BadStatus("abc".into())),
            ("\nbody", CgiResponseError::NoContentType),
            (
                "Location: relative/path\n\n",
                CgiResponseError::BadLocation("relative/path".into()),
            ),
        ] {
            assert_eq!(
                response(output).map(|_| ()).unwrap_err(),
                error,
                "{output:?}"
            );
        }
        let long = format!("X-Long: {}\n\n", "a".repeat(2000));
        assert_eq!(
            response(&long).map(|_| ()).unwrap_err(),
            CgiResponseError::NoHeaderEnd
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"/a%20b/%C3%A9%zz%4"), b"/a b/\xc3\xa9%zz%4");
    }

    #[test]
    fn meta_variables_per_rfc_3875() {
        let mut request = Request::new(Bytes::from_static(b"a=1"));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = "/path/with%20space?x=1&y=%41".parse().unwrap();
        for (n, v) in [
            ("host", "wiki.example:8080"),
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "3"),
            ("authorization", "Basic c2VjcmV0"),
            ("accept", "text/vnd.wap.wml"),
            ("x-permanet-user", "alice"),
        ] {
            request.headers_mut().append(n, HeaderValue::from_static(v));
        }
        request
            .headers_mut()
            .append("accept", HeaderValue::from_static("text/html"));
        let origin = Origin {
            source: "[2002:b16:212c:1::1234]:40000".parse().unwrap(),
            destination: "[2002:b16:212c:2::10]:80".parse().unwrap(),
            front: super::super::Front::Http,
        };
        let identity = Identity {
            address: "2002:b16:212c:1::1234".parse().unwrap(),
            name: "alice".into(),
            kind: "user".into(),
            groups: vec![],
            not_after: 1,
        };
        let env: BTreeMap<String, String> = environment(
            &request,
            origin,
            &identity,
            std::path::Path::new("/srv/app.cgi"),
        )
        .into_iter()
        .map(|(k, v)| (k, v.into_string().unwrap()))
        .collect();
        let expected: BTreeMap<String, String> = [
            ("GATEWAY_INTERFACE", "CGI/1.1"),
            (
                "SERVER_SOFTWARE",
                concat!("wap-adapter/", env!("CARGO_PKG_VERSION")),
            ),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("REQUEST_METHOD", "POST"),
            ("SCRIPT_NAME", ""),
            ("SCRIPT_FILENAME", "/srv/app.cgi"),
            ("PATH_INFO", "/path/with space"),
            ("QUERY_STRING", "x=1&y=%41"),
            ("REQUEST_URI", "/path/with%20space?x=1&y=%41"),
            ("REMOTE_ADDR", "2002:b16:212c:1::1234"),
            ("REMOTE_HOST", "2002:b16:212c:1::1234"),
            ("REMOTE_PORT", "40000"),
            ("AUTH_TYPE", "Permanet"),
            ("REMOTE_USER", "alice"),
            ("SERVER_NAME", "wiki.example"),
            ("SERVER_PORT", "80"),
            ("CONTENT_LENGTH", "3"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("PATH", PATH),
            ("HTTP_HOST", "wiki.example:8080"),
            ("HTTP_ACCEPT", "text/vnd.wap.wml, text/html"),
            ("HTTP_X_PERMANET_USER", "alice"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(env, expected);
    }
}
