//! The HTTP test backend and client of the system tests: plain HTTP/1.0
//! over ordinary sockets inside namespaces (TUN mode puts the overlay
//! addresses on the hosts). The backend records what it served — the
//! client's address, the request's headers, the body's length and
//! SHA-256 — and the client hashes what it received, so a test compares
//! both ends of every transfer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, SocketAddrV6, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::{Netns, DEADLINE};

/// What the HTTP test backend served: one entry per request.
#[derive(Debug, Clone)]
pub struct Served {
    /// The request line.
    pub request: String,
    /// The request's header lines, as sent.
    pub headers: Vec<String>,
    /// The client's address (an overlay address: the authenticated
    /// identity).
    pub peer: SocketAddr,
    /// Bytes of body sent or received.
    pub bytes: u64,
    /// SHA-256 of that body.
    pub sha256: [u8; 32],
}

/// A small HTTP/1.0 server inside a namespace, on an application's
/// permanent address: `GET /bytes/N/SEED` sends N pseudo-random bytes,
/// `POST /sha256` answers the SHA-256 of the body (hex), `GET /marker/N`
/// sends N bytes of a repeated plaintext marker. It records what it served.
#[derive(Debug)]
pub struct HttpBackend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    served: Arc<Mutex<Vec<Served>>>,
}

/// The marker the `/marker` resource repeats.
pub const MARKER: &[u8] = b"PERMANET-PLAINTEXT-MARKER-7d1f0c2a;";

impl HttpBackend {
    /// Listen on `address` inside `ns`.
    pub fn start(ns: &Netns, address: SocketAddr) -> HttpBackend {
        let listener = ns
            .run(move || TcpListener::bind(address))
            .unwrap_or_else(|e| panic!("binding {address}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let served: Arc<Mutex<Vec<Served>>> = Arc::default();
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let served = served2.clone();
                        let stop = stop2.clone();
                        std::thread::spawn(move || {
                            if let Ok(Some(record)) = serve(conn, peer, &stop) {
                                if let Ok(mut all) = served.lock() {
                                    all.push(record);
                                }
                            }
                        });
                    }
                    // Nothing to accept: look at the stop flag again soon.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HttpBackend {
            stop,
            thread: Some(thread),
            served,
        }
    }

    /// What was served so far.
    pub fn served(&self) -> Vec<Served> {
        self.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pseudo-random body of `/bytes/N/SEED`, block by block.
#[derive(Debug)]
pub struct Body {
    rng: crate::relay::SplitMix64,
    left: u64,
}

impl Body {
    /// `len` bytes from `seed`.
    pub fn new(len: u64, seed: u64) -> Body {
        Body {
            rng: crate::relay::SplitMix64(seed),
            left: len,
        }
    }

    /// Fill (a prefix of) `buf`; 0 at the end.
    pub fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        for chunk in buf[..n].chunks_mut(8) {
            let word = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

fn serve(conn: TcpStream, peer: SocketAddr, stop: &AtomicBool) -> io::Result<Option<Served>> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(DEADLINE))?;
    conn.set_write_timeout(Some(DEADLINE))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let request = request.trim_end().to_owned();
    let mut content_length = 0u64;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        headers.push(line.trim_end().to_owned());
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut writer = conn;
    let parts: Vec<&str> = request.split(' ').collect();
    let path: Vec<&str> = parts.get(1).unwrap_or(&"").split('/').collect();
    let mut hash = Sha256::new();
    let mut sent = 0u64;
    match (parts.first().copied(), path.as_slice()) {
        (Some("GET"), ["", "bytes", n, seed]) | (Some("GET"), ["", "marker", n, seed]) => {
            let len: u64 = n.parse().unwrap_or(0);
            let seed: u64 = seed.parse().unwrap_or(0);
            let marker = path.get(1) == Some(&"marker");
            writer.write_all(
                format!("HTTP/1.0 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
            )?;
            let mut body = Body::new(len, seed);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                let n = if marker {
                    let n = buf.len().min(usize::try_from(len - sent).unwrap_or(0));
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = MARKER[(sent as usize + i) % MARKER.len()];
                    }
                    n
                } else {
                    body.fill(&mut buf)
                };
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                writer.write_all(&buf[..n])?;
                sent += n as u64;
            }
        }
        (Some("POST"), ["", "sha256"]) => {
            let mut buf = vec![0u8; 64 * 1024];
            let mut reader = reader.take(content_length);
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                sent += n as u64;
            }
            let digest: [u8; 32] = hash.clone().finalize().into();
            writer.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{}", hex(&digest)).as_bytes())?;
        }
        _ => {
            writer.write_all(b"HTTP/1.0 404 Not Found\r\n\r\n")?;
        }
    }
    writer.flush()?;
    let _ = writer.shutdown(Shutdown::Write);
    Ok(Some(Served {
        request,
        headers,
        peer,
        bytes: sent,
        sha256: hash.finalize().into(),
    }))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an HTTP client got: the status line, the body's length and
/// SHA-256, the body's first bytes (for messages).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The status line.
    pub status: String,
    /// Body length.
    pub bytes: u64,
    /// SHA-256 of the body.
    pub sha256: [u8; 32],
    /// The first bytes of the body.
    pub head: Vec<u8>,
}

/// How far a download got, and where it should pause.
#[derive(Debug)]
pub struct Progress {
    /// Body bytes received so far.
    pub received: AtomicU64,
    /// The reader stops reading (TCP flow control then stalls the sender)
    /// once it has this many bytes, until the value is raised.
    pub hold_at: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            received: AtomicU64::new(0),
            hold_at: AtomicU64::new(u64::MAX),
        }
    }
}

/// `GET path` from `[address]:port`, from a thread inside `ns`;
/// `progress` counts body bytes as they arrive (and can pause the
/// reader). Any I/O error (a reset included) is returned.
pub fn http_get(
    ns: &Netns,
    address: Ipv6Addr,
    port: u16,
    path: &str,
    progress: Arc<Progress>,
) -> JoinHandle<io::Result<Fetched>> {
    http_request(
        ns,
        address,
        port,
        format!("GET {path} HTTP/1.0\r\n\r\n"),
        progress,
    )
}

/// Send `head` (a whole request without a body) to `[address]:port`
/// from a thread inside `ns`, and read the response as [`http_get`] does.
pub fn http_request(
    ns: &Netns,
    address: Ipv6Addr,
    port: u16,
    head: String,
    progress: Arc<Progress>,
) -> JoinHandle<io::Result<Fetched>> {
    ns.spawn(move || {
        let conn = TcpStream::connect_timeout(
            &SocketAddr::V6(SocketAddrV6::new(address, port, 0, 0)),
            DEADLINE,
        )?;
        conn.set_read_timeout(Some(DEADLINE))?;
        let mut writer = conn.try_clone()?;
        writer.write_all(head.as_bytes())?;
        read_response(conn, &progress)
    })
}

/// `POST /sha256` with `len` bytes of [`Body`] from `seed`; returns the
/// response (whose body is the server's SHA-256, hex) and the SHA-256 of
/// what was sent.
pub fn http_post(
    ns: &Netns,
    address: Ipv6Addr,
    port: u16,
    len: u64,
    seed: u64,
) -> JoinHandle<io::Result<(Fetched, [u8; 32])>> {
    ns.spawn(move || {
        let mut conn = TcpStream::connect_timeout(
            &SocketAddr::V6(SocketAddrV6::new(address, port, 0, 0)),
            DEADLINE,
        )?;
        conn.set_read_timeout(Some(DEADLINE))?;
        conn.set_write_timeout(Some(DEADLINE))?;
        conn.write_all(
            format!("POST /sha256 HTTP/1.0\r\nContent-Length: {len}\r\n\r\n").as_bytes(),
        )?;
        let mut body = Body::new(len, seed);
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = body.fill(&mut buf);
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            conn.write_all(&buf[..n])?;
        }
        let fetched = read_response(conn, &Progress::default())?;
        Ok((fetched, hash.finalize().into()))
    })
}

fn read_response(conn: TcpStream, progress: &Progress) -> io::Result<Fetched> {
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        if head.len() < 256 {
            head.extend_from_slice(&buf[..n.min(256 - head.len())]);
        }
        bytes += n as u64;
        progress.received.store(bytes, Ordering::Relaxed);
        while bytes >= progress.hold_at.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(Fetched {
        status: status.trim_end().to_owned(),
        bytes,
        sha256: hash.finalize().into(),
        head,
    })
}
