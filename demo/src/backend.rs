//! The example applications' tiny HTTP/1.1 backend: static files from one
//! directory of `demo/apps/`, on loopback, behind wap-adapter. `{{user}}`,
//! `{{address}}` and `{{groups}}` in a page become the identity
//! wap-adapter vouched for (X-Permanet-User, -Address, -Groups; escaped).
//!
//! Only plain file names (`[A-Za-z0-9_-]` plus one extension of `html`,
//! `wml`, `css` or `txt`) in that directory are served, read at each
//! request (edit a page and reload). Anything else is answered 400, 404 or
//! 405 and counted; a request head is bounded in size and time.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

/// Largest request head read.
const MAX_HEAD: u64 = 16 * 1024;
/// Largest file served.
const MAX_FILE: u64 = 1024 * 1024;
/// Time a client has to send its head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed at once (and counted).
const MAX_CONNECTIONS: usize = 64;

/// What a backend counted.
#[derive(Debug, Default)]
pub struct Counters {
    /// Pages served (200).
    pub served: AtomicU64,
    /// Unknown pages (404).
    pub not_found: AtomicU64,
    /// Malformed or refused requests (400, 405) and heads too large or
    /// too slow.
    pub bad_requests: AtomicU64,
    /// Connections closed because too many were open.
    pub overloaded: AtomicU64,
}

/// A running backend.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub counters: Arc<Counters>,
}

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("malformed request")]
    Malformed,
    #[error("method not allowed")]
    Method,
    #[error("no such page")]
    NotFound,
}

/// Serve `root` on a fresh loopback port, from a thread per connection.
pub fn start(name: &'static str, root: PathBuf) -> anyhow::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a backend port")?;
    let address = listener.local_addr()?;
    let counters = Arc::new(Counters::default());
    let open = Arc::new(AtomicUsize::new(0));
    let shared = counters.clone();
    std::thread::Builder::new()
        .name(format!("backend {name}"))
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    shared.overloaded.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let (root, counters, open) = (root.clone(), shared.clone(), open.clone());
                let spawned = std::thread::Builder::new().spawn(move || {
                    serve(stream, &root, &counters);
                    open.fetch_sub(1, Ordering::AcqRel);
                });
                if spawned.is_err() {
                    shared.overloaded.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .context("starting a backend thread")?;
    Ok(Backend { address, counters })
}

fn serve(mut stream: TcpStream, root: &Path, counters: &Counters) {
    let _ = stream.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HEAD_TIMEOUT));
    let answer = match read_request(&stream) {
        Ok((path, identity)) => page(root, &path, &identity),
        Err(refused) => Err(refused),
    };
    let (status, content_type, body) = match answer {
        Ok((content_type, body)) => {
            counters.served.fetch_add(1, Ordering::Relaxed);
            ("200 OK", content_type, body)
        }
        Err(Refused::NotFound) => {
            counters.not_found.fetch_add(1, Ordering::Relaxed);
            ("404 Not Found", "text/plain", b"no such page\n".to_vec())
        }
        Err(Refused::Method) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            (
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n".to_vec(),
            )
        }
        Err(Refused::Malformed) => {
            counters.bad_requests.fetch_add(1, Ordering::Relaxed);
            ("400 Bad Request", "text/plain", b"bad request\n".to_vec())
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// The identity headers wap-adapter set.
#[derive(Debug, Default)]
struct Identity {
    user: String,
    address: String,
    groups: String,
}

/// The request's path (query removed) and identity.
fn read_request(stream: &TcpStream) -> Result<(String, Identity), Refused> {
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|_| Refused::Malformed)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(Refused::Malformed);
    };
    let method = method.to_owned();
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    let mut identity = Identity::default();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return Err(Refused::Malformed),
            Ok(_) => {}
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim().to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "x-permanet-user" => identity.user = value,
                "x-permanet-address" => identity.address = value,
                "x-permanet-groups" => identity.groups = value,
                _ => {}
            }
        }
    }
    if method != "GET" && method != "HEAD" {
        return Err(Refused::Method);
    }
    Ok((path, identity))
}

/// The page at `path` under `root`: its content type and body.
fn page(root: &Path, path: &str, identity: &Identity) -> Result<(&'static str, Vec<u8>), Refused> {
    let name = match path.strip_prefix('/').ok_or(Refused::Malformed)? {
        "" => ["index.html", "index.wml"]
            .into_iter()
            .find(|n| root.join(n).is_file())
            .ok_or(Refused::NotFound)?,
        name => name,
    };
    let (stem, extension) = name.rsplit_once('.').ok_or(Refused::NotFound)?;
    let plain = !stem.is_empty()
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(Refused::NotFound);
    }
    let content_type = match extension {
        "html" => "text/html; charset=utf-8",
        "wml" => "text/vnd.wap.wml; charset=utf-8",
        "css" => "text/css",
        "txt" => "text/plain; charset=utf-8",
        _ => return Err(Refused::NotFound),
    };
    let file = std::fs::File::open(root.join(name)).map_err(|_| Refused::NotFound)?;
    let mut text = String::new();
    file.take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|_| Refused::NotFound)?;
    let shown = |value: &str| {
        if value.is_empty() {
            "(unknown)".to_owned()
        } else {
            escape(value)
        }
    };
    let body = text
        .replace("{{user}}", &shown(&identity.user))
        .replace("{{address}}", &shown(&identity.address))
        .replace("{{groups}}", &shown(&identity.groups));
    Ok((content_type, body.into_bytes()))
}

/// Text made safe inside HTML and WML (`$` starts a WML variable).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '$' => out.push_str("$$"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is a test failure
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_served() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        std::fs::write(dir.join("index.wml"), "<wml>{{user}} at {{address}}</wml>").unwrap();
        let who = Identity {
            user: "<alice>".into(),
            address: "fd00::$1".into(),
            groups: String::new(),
        };
        let got = page(dir, "/", &who);
        assert!(matches!(
            got,
            Ok((ct, ref body)) if ct.starts_with("text/vnd.wap.wml")
                && body == b"<wml>&lt;alice&gt; at fd00::$$1</wml>"
        ));
        for bad in [
            "/../Cargo.toml",
            "/..",
            "/a/b.html",
            "/.html",
            "/x.rs",
            "/nothing.html",
            "x",
        ] {
            assert!(page(dir, bad, &who).is_err(), "{bad}");
        }
    }
}
