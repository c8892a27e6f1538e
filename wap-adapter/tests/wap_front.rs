//! The WAP front (WSP connectionless on 9200, WSP over WTP on 9201) end to
//! end, on loopback: a fake tunneld control socket answering `peer
//! <address>` as tunneld does, a test HTTP backend that records what
//! reaches it, and as the client either kannel's `fakewap` (an independent
//! WAP implementation; skipped with a `permanet-test-skipped:` line when
//! absent) or hand-built datagrams (committed fakewap vectors under
//! tests/vectors/).
//!
//! fakewap speaks IPv4 only. Against `wap-adapter run` (the binary) the
//! application is in userspace mode: fakewap talks to an in-test relay that
//! puts tunneld's PROXY v2 header (the overlay source of our choosing)
//! before each datagram and sends it to `proxy-protocol-listen`, as
//! tunneld does, and relays the answers back. Direct (TUN) mode listens on
//! the application's address, never loopback, so it is run in process on
//! `[::1]`, fakewap reaching it through the relay (IPv4 to IPv6, no
//! header), like the socat bridge the issue suggests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

mod fakewap_common;
mod tunneld_common;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fakewap_common::{have_fakewap, ChildGuard, FAKEWAP};
use wap_adapter::adapter::Adapter;
use wap_adapter::config::{Config, Listeners};
use wap_adapter::identity::Resolver;
use wap_adapter::server::wap::{WapCounters, WapServer, WapSettings};
use wap_adapter::server::ServerCounters;
use wap_adapter::wsp::pdu::{self, Method, Mode, Pdu};
use wap_adapter::wsp::{EncodingVersion, Headers};
use wap_adapter::wtp::pdu::{decode_datagram, Pdu as WtpPdu};

const BIN: &str = env!("CARGO_BIN_EXE_wap-adapter");

/// The test user, in group `staff`.
const ALICE: &str = "2002:b16:212c:1::1234";
/// A user in no allowed group.
const MALLORY: &str = "2002:b16:212c:1::666";
/// The application's permanent address.
const APP: &str = "2002:b16:212c:2::10";

/// The backend's answer to `/big`: over 10 KB, so WTP must segment it.
fn big_body() -> Vec<u8> {
    (0..10_500u32).map(|i| b'a' + (i % 26) as u8).collect()
}

const HELLO: &[u8] = b"hello from the backend";

// ---------------------------------------------------------------------------
// Fixtures

/// A fake tunneld control socket (a thread): `ALICE` and `::1` are alice
/// (`staff`), `MALLORY` is mallory (`guests`), anything else unknown.
fn fake_tunneld(socket: &Path) {
    tunneld_common::fake_tunneld(socket, |a| {
        if a == ALICE.parse::<Ipv6Addr>().unwrap() || a.is_loopback() {
            Some(("alice", "staff"))
        } else if a == MALLORY.parse::<Ipv6Addr>().unwrap() {
            Some(("mallory", "guests"))
        } else {
            None
        }
    });
}

/// What the backend saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Identity headers as the adapter sets them, and no other
    /// `X-Permanet-*` (none a client sent).
    fn assert_identity(&self, user: &str, address: &str, groups: &str) {
        assert_eq!(self.header("x-permanet-user"), [user], "{self:?}");
        assert_eq!(self.header("x-permanet-address"), [address], "{self:?}");
        assert_eq!(self.header("x-permanet-groups"), [groups], "{self:?}");
        let identity = self
            .headers
            .iter()
            .filter(|(n, _)| {
                n.to_ascii_lowercase()
                    .replace('_', "-")
                    .starts_with("x-permanet-")
            })
            .count();
        assert_eq!(identity, 3, "{self:?}");
    }
}

/// An HTTP/1.1 backend on loopback (a thread) that records every request:
/// `/big` answers [`big_body`], `/form` `posted N octets`, anything else
/// [`HELLO`], all `text/plain`.
struct Backend {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// `/slow` answers only once this is open.
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let gate: Arc<(Mutex<bool>, std::sync::Condvar)> = Arc::default();
        let wait = Arc::clone(&gate);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let record = Arc::clone(&record);
                let wait = Arc::clone(&wait);
                std::thread::spawn(move || serve_one(stream, &record, &wait));
            }
        });
        Backend {
            address,
            seen,
            gate,
        }
    }

    /// Let `/slow` requests answer.
    fn open_gate(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    mut stream: std::net::TcpStream,
    record: &Mutex<Vec<Seen>>,
    gate: &(Mutex<bool>, std::sync::Condvar),
) {
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let answer = match path.as_str() {
        "/big" => big_body(),
        "/form" => format!("posted {} octets", body.len()).into_bytes(),
        _ => HELLO.to_vec(),
    };
    let slow = path == "/slow";
    record.lock().unwrap().push(Seen {
        method,
        path,
        headers,
        body,
    });
    if slow {
        let mut open = gate.0.lock().unwrap();
        while !*open {
            open = gate.1.wait(open).unwrap();
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer);
}

/// tunneld's PROXY v2 header for a UDP datagram from `source` to the
/// application's port `port`.
fn proxy_header(source: &str, port: u16) -> Vec<u8> {
    let mut header = vec![
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x22, 0x00,
        0x24,
    ];
    header.extend_from_slice(&source.parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&APP.parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&40_000u16.to_be_bytes());
    header.extend_from_slice(&port.to_be_bytes());
    header
}

/// A UDP relay for fakewap (IPv4): datagrams to `port` go to `target`,
/// prefixed with `header` if given; answers go back to fakewap.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(target: SocketAddr, header: Option<Vec<u8>>) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind(if target.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        })
        .unwrap();
        for socket in [&front, &back] {
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
        }
        let port = front.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (front2, back2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let (stop1, stop2, client1, client2) = (
            Arc::clone(&stop),
            Arc::clone(&stop),
            Arc::clone(&client),
            client,
        );
        let out = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop1.load(Ordering::Relaxed) {
                if let Ok((n, from)) = front.recv_from(&mut buf) {
                    *client1.lock().unwrap() = Some(from);
                    let mut datagram = header.clone().unwrap_or_default();
                    datagram.extend_from_slice(&buf[..n]);
                    let _ = back.send_to(&datagram, target);
                }
            }
        });
        let back_thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, _)) = back2.recv_from(&mut buf) {
                    if let Some(client) = *client2.lock().unwrap() {
                        let _ = front2.send_to(&buf[..n], client);
                    }
                }
            }
        });
        Relay {
            port,
            stop,
            threads: vec![out, back_thread],
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// What a fakewap run reported.
struct FakewapRun {
    status: ExitStatus,
    log: String,
    output: Vec<u8>,
}

impl FakewapRun {
    /// Replies fakewap reported with HTTP status `status` (it converts the
    /// WSP status back: 0x43 is 403): a 200 as `Received WSP Reply with
    /// status code 200OK`, anything else as a warning.
    fn replies(&self, status: &str) -> usize {
        self.log
            .matches(&format!("Received WSP Reply with status code {status}"))
            .count()
            + self
                .log
                .matches(&format!("received reply with status {status}"))
                .count()
    }

    fn assert_complete(&self, test: &str) {
        assert!(
            self.status.success() && self.log.contains("fakewap: complete."),
            "{test}: fakewap failed ({}): {}",
            self.status,
            self.log
        );
    }
}

/// Run fakewap with `args` (and its URL last) through a relay to `target`
/// that puts `header` (a PROXY v2 header, if any) before every datagram.
fn fakewap(target: SocketAddr, header: Option<Vec<u8>>, args: &[&str]) -> FakewapRun {
    let relay = Relay::start(target, header);
    let port = relay.port;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("reply.out");
    let log_path = dir.path().join("fakewap.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = ChildGuard(
        Command::new(FAKEWAP)
            .args([
                "-g",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-i",
                "0",
                "-D",
                "1",
                "-w",
            ])
            .arg(&output)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut status = None;
    netns_tests::wait_until(
        "fakewap to exit",
        Duration::from_secs(60),
        || {
            status = child.0.try_wait().unwrap();
            status.is_some()
        },
        read_log,
    );
    FakewapRun {
        status: status.unwrap(),
        log: read_log(),
        output: std::fs::read(&output).unwrap_or_default(),
    }
}

/// fakewap with `args` as alice (source port `port`, behind tunneld's PROXY
/// v2 header) against a fresh backend behind `wap-adapter run` with
/// `extra` config lines: the backend, what fakewap reported, and the
/// daemon's counters once it stopped.
fn fakewap_as_alice(
    extra: &str,
    port: u16,
    args: &[&str],
) -> (Backend, FakewapRun, HashMap<String, u64>) {
    let backend = Backend::start();
    let daemon = Daemon::start(&backend, extra);
    let run = fakewap(daemon.listen, Some(proxy_header(ALICE, port)), args);
    let counters = daemon.stop();
    (backend, run, counters)
}

/// `wap-adapter run` serving one application in userspace mode on
/// 127.0.0.1 (a free port), backend `backend`.
struct Daemon {
    child: ChildGuard,
    listen: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(backend: &Backend, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        fake_tunneld(&dir.path().join("tunneld.sock"));
        // A port free for TCP (HTTP) and UDP (WAP) alike.
        let listen = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let address = tcp.local_addr().unwrap();
            if UdpSocket::bind(address).is_ok() {
                break address;
            }
        };
        let path = dir.path().join("wap-adapter.toml");
        std::fs::write(
            &path,
            format!(
                "log-level = \"debug\"\n[identity]\ntunneld-socket = \"tunneld.sock\"\n\
                 [[applications]]\nname = \"wiki\"\naddress = \"{APP}\"\n\
                 proxy-protocol-listen = \"{listen}\"\nbackend.url = \"http://{}/\"\n{extra}\n",
                backend.address
            ),
        )
        .unwrap();
        let log = dir.path().join("stderr.log");
        let child = ChildGuard(
            Command::new(BIN)
                .args(["run", "--config", path.to_str().unwrap()])
                .stdin(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let daemon = Daemon {
            child,
            listen,
            log,
            _dir: dir,
        };
        netns_tests::wait_until(
            "wap-adapter running",
            Duration::from_secs(30),
            || daemon.read_log().contains("wap-adapter running"),
            || daemon.read_log(),
        );
        daemon
    }

    fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait for exit 0; the counters it logged.
    fn stop(mut self) -> HashMap<String, u64> {
        let pid = self.child.0.id();
        assert!(Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success());
        let mut exited = None;
        let log = self.log.clone();
        let child = &mut self.child.0;
        netns_tests::wait_until(
            "wap-adapter to exit",
            Duration::from_secs(30),
            || {
                exited = child.try_wait().unwrap();
                exited.is_some()
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        let log = self.read_log();
        assert_eq!(exited.unwrap().code(), Some(0), "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("stopped") && l.contains("counters="))
            .unwrap_or_else(|| panic!("no counters logged: {log}"));
        line.split_whitespace()
            .map(|t| t.trim_start_matches("counters="))
            .filter_map(|t| t.split_once('='))
            .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// fakewap against `wap-adapter run` (userspace mode)

#[test]
fn fakewap_connectionless_get() {
    let test = "fakewap_connectionless_get";
    if !have_fakewap(test) {
        return;
    }
    let (backend, run, counters) =
        fakewap_as_alice("", 9200, &["-M", "0", "http://wiki.example/hello"]);
    run.assert_complete(test);
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    assert_eq!(run.output, HELLO);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/hello")
    );
    seen[0].assert_identity("alice", ALICE, "staff");
    assert_eq!(seen[0].header("accept"), ["*/*"]);
    assert_eq!(counters["wap_requests"], 1, "{counters:?}");
    assert_eq!(counters["wap_malformed"], 0);
    assert_eq!(counters["proxy_refused"], 0);
}

#[test]
fn fakewap_connection_oriented_get_in_two_sessions() {
    let test = "fakewap_connection_oriented_get_in_two_sessions";
    if !have_fakewap(test) {
        return;
    }
    let (backend, run, counters) = fakewap_as_alice(
        "",
        9201,
        &["-M", "1", "-m", "2", "http://wiki.example/hello"],
    );
    run.assert_complete(test);
    assert_eq!(run.replies("200"), 2, "{}", run.log);
    assert_eq!(run.output, HELLO);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for request in &seen {
        assert_eq!(request.path, "/hello");
        request.assert_identity("alice", ALICE, "staff");
    }
    assert_eq!(counters["wap_sessions_opened"], 2, "{counters:?}");
    assert_eq!(counters["wap_sessions_disconnected"], 2, "{counters:?}");
    assert_eq!(counters["wap_wrong_session_id"], 0);
    assert_eq!(counters["wap_requests"], 2);
    assert_eq!(counters["wtp_aborts_sent"], 0);
}

#[test]
fn fakewap_post_gets_its_ack_then_the_reply() {
    let test = "fakewap_post_gets_its_ack_then_the_reply";
    if !have_fakewap(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("post.txt");
    let content = b"name=permanet&x=%24\n".repeat(10);
    std::fs::write(&input, &content).unwrap();
    let (backend, run, counters) = fakewap_as_alice(
        "",
        9201,
        &[
            "-M",
            "1",
            "-P",
            input.to_str().unwrap(),
            "-C",
            "text",
            "http://wiki.example/form",
        ],
    );
    run.assert_complete(test);
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    assert_eq!(
        run.output,
        format!("posted {} octets", content.len()).as_bytes()
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/form")
    );
    assert_eq!(seen[0].body, content);
    assert_eq!(seen[0].header("content-type"), ["text/plain"]);
    seen[0].assert_identity("alice", ALICE, "staff");
    assert_eq!(counters["wap_requests"], 1, "{counters:?}");
}

#[test]
fn fakewap_ten_kilobyte_reply_is_segmented() {
    let test = "fakewap_ten_kilobyte_reply_is_segmented";
    if !have_fakewap(test) {
        return;
    }
    // The client's SDU must allow the whole Reply (fakewap offers 1 MB).
    let (backend, run, counters) = fakewap_as_alice(
        "sdu-size = 16384",
        9201,
        &["-M", "1", "http://wiki.example/big"],
    );
    run.assert_complete(test);
    assert_eq!(run.replies("200"), 1, "{}", run.log);
    assert_eq!(run.output, big_body(), "fakewap reassembled the reply");
    assert_eq!(backend.seen().len(), 1);
    // ConnectReply in one packet, the Reply in 1400-octet segments.
    assert_eq!(counters["wtp_result_packets"], 1 + 8, "{counters:?}");
    assert_eq!(counters["wap_reply_too_large"], 0);
}

#[test]
fn fakewap_reply_over_the_granted_sdu_becomes_413() {
    let test = "fakewap_reply_over_the_granted_sdu_becomes_413";
    if !have_fakewap(test) {
        return;
    }
    // Default sdu-size 1400: the 10 KB answer does not fit the grant.
    let (backend, run, counters) =
        fakewap_as_alice("", 9201, &["-M", "1", "-F", "http://wiki.example/big"]);
    assert_eq!(run.replies("413"), 1, "{}", run.log);
    assert_eq!(
        run.output,
        b"the response is larger than this client can take\n"
    );
    assert_eq!(backend.seen().len(), 1);
    assert_eq!(counters["wap_reply_too_large"], 1, "{counters:?}");
}

#[test]
fn fakewap_user_outside_the_allowed_groups_gets_0x43() {
    let test = "fakewap_user_outside_the_allowed_groups_gets_0x43";
    if !have_fakewap(test) {
        return;
    }
    let backend = Backend::start();
    let daemon = Daemon::start(&backend, "allowed-groups = [\"staff\"]");
    for (mode, port) in [("0", 9200), ("1", 9201)] {
        let run = fakewap(
            daemon.listen,
            Some(proxy_header(MALLORY, port)),
            &["-M", mode, "-F", "http://wiki.example/secret"],
        );
        // fakewap prints the HTTP form of the WSP status it got: 0x43 is 403.
        assert_eq!(run.replies("403"), 1, "mode {mode}: {}", run.log);
        assert_eq!(run.replies("200"), 0);
    }
    let counters = daemon.stop();
    assert!(backend.seen().is_empty(), "{:?}", backend.seen());
    assert_eq!(counters["forbidden_group"], 2, "{counters:?}");
}

// ---------------------------------------------------------------------------
// In process: direct (TUN) mode, hand-built datagrams, refusals

/// A WAP front in process, with its own tokio runtime.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    addresses: Vec<SocketAddr>,
    adapter: Arc<Adapter>,
    server_counters: Arc<ServerCounters>,
    counters: Arc<WapCounters>,
    stop: tokio::sync::watch::Sender<bool>,
    served: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start(backend: &Backend, listeners: Listeners, extra: &str) -> InProcess {
        InProcess::start_with(backend, listeners, extra, |_| {})
    }

    fn start_with(
        backend: &Backend,
        listeners: Listeners,
        extra: &str,
        tune: impl FnOnce(&mut WapSettings),
    ) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        fake_tunneld(&dir.path().join("tunneld.sock"));
        let text = format!(
            "[identity]\ntunneld-socket = \"tunneld.sock\"\n[[applications]]\nname = \"app\"\n\
             address = \"{APP}\"\nbackend.url = \"http://{}/\"\n{extra}\n",
            backend.address
        );
        let config = Config::parse(&text, &dir.path().join("wap-adapter.toml")).unwrap();
        let app = &config.applications[0];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let resolver = Arc::new(Resolver::new(&config.identity));
        let adapter = Arc::new(Adapter::new(app, config.limits, resolver));
        let server_counters = Arc::new(ServerCounters::default());
        let counters = Arc::new(WapCounters::default());
        let mut settings = WapSettings::new(app, config.limits);
        tune(&mut settings);
        let server = runtime
            .block_on(WapServer::bind(
                listeners,
                Arc::clone(&adapter),
                settings,
                Arc::clone(&server_counters),
                Arc::clone(&counters),
            ))
            .unwrap();
        let addresses = server.local_addrs().unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let served = Some(runtime.spawn(server.serve(stopped)));
        InProcess {
            runtime,
            addresses,
            adapter,
            server_counters,
            counters,
            stop,
            served,
            _dir: dir,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .value(name)
            .or_else(|| {
                self.adapter
                    .counters()
                    .into_iter()
                    .find(|c| c.name == name)
                    .map(|c| c.value)
            })
            .or_else(|| self.server_counters.value(name))
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    /// Shut down and wait for the front to return.
    fn shutdown(&mut self) {
        self.stop.send_replace(true);
        if let Some(served) = self.served.take() {
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), served).await })
                .expect("the WAP front stops after a shutdown")
                .unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}

#[test]
fn direct_mode_serves_fakewap_connectionless_and_connection_oriented() {
    let test = "direct_mode_serves_fakewap_connectionless_and_connection_oriented";
    if !have_fakewap(test) {
        return;
    }
    let backend = Backend::start();
    let listeners = Listeners::Direct {
        http: "[::1]:0".parse().unwrap(),
        wsp: "[::1]:0".parse().unwrap(),
        wtp: "[::1]:0".parse().unwrap(),
    };
    let mut front = InProcess::start(&backend, listeners, "");
    for (mode, target) in [("0", front.addresses[0]), ("1", front.addresses[1])] {
        let run = fakewap(target, None, &["-M", mode, "http://wiki.example/hello"]);
        run.assert_complete(test);
        assert_eq!(run.output, HELLO, "mode {mode}");
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        // The socket peer (::1, alice's in the fake tunneld) is the source.
        request.assert_identity("alice", "::1", "staff");
    }
    assert_eq!(front.counter("wap_sessions_disconnected"), 1);
    front.shutdown();
}

/// A client of a proxied in-process front: hand-built datagrams behind a
/// PROXY v2 header.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Client { socket, server }
    }

    fn send(&self, source: &str, port: u16, payload: &[u8]) {
        let mut datagram = proxy_header(source, port);
        datagram.extend_from_slice(payload);
        self.socket.send_to(&datagram, self.server).unwrap();
    }

    fn send_raw(&self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.server).unwrap();
    }

    /// The next datagram (within 10 s).
    fn receive(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.socket.recv_from(&mut buf).expect("an answer");
        buf.truncate(n);
        buf
    }

    /// The next WTP PDU that is not a plain (hold-on) Ack.
    fn receive_wtp(&self) -> WtpPdu {
        loop {
            let pdus = decode_datagram(&self.receive()).unwrap();
            let pdu = pdus.into_iter().next().unwrap();
            match &pdu {
                WtpPdu::Ack(ack) if !ack.tid_verify => continue,
                _ => return pdu,
            }
        }
    }
}

fn vector(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors/wsp/fakewap")
        .join(name);
    hex::decode(std::fs::read_to_string(&path).unwrap().trim()).unwrap()
}

fn wtp_vector(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/wtp")
            .join(name),
    )
    .unwrap()
}

fn proxied(backend: &Backend, extra: &str) -> InProcess {
    proxied_with(backend, extra, |_| {})
}

/// As `proxied`, with the WAP settings changed by `tune`.
fn proxied_with(backend: &Backend, extra: &str, tune: impl FnOnce(&mut WapSettings)) -> InProcess {
    InProcess::start_with(
        backend,
        Listeners::Proxied {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        extra,
        tune,
    )
}

/// The Reply in a connectionless datagram, or in a WTP Result.
fn reply_of(bytes: &[u8], mode: Mode) -> (u8, Vec<u8>, Headers) {
    match pdu::decode(bytes, mode).unwrap().pdu {
        Pdu::Reply {
            status,
            data,
            headers,
            ..
        } => (status, data, headers),
        other => panic!("not a Reply: {other:?}"),
    }
}

#[test]
fn proxied_datagrams_carry_the_identity_and_injected_headers_never_reach_the_backend() {
    let backend = Backend::start();
    let mut front = proxied(&backend, "allowed-groups = [\"staff\"]");
    let client = Client::new(front.addresses[0]);

    // fakewap's connectionless Get (TID 1), committed.
    client.send(ALICE, 9200, &vector("cl-get-1.hex"));
    let answer = client.receive();
    assert_eq!(answer[0], 0x01, "the request's TID");
    let (status, data, headers) = reply_of(&answer, Mode::Connectionless);
    assert_eq!((status, data.as_slice()), (0x20, HELLO));
    assert_eq!(headers.get("cache-control"), Some("no-cache"));

    // A Get that tries to claim another identity.
    let mut injected = Headers::new();
    injected.push("X-Permanet-User", "root");
    injected.push("X-Permanet-Groups", "admins");
    injected.push("Accept", "text/vnd.wap.wml");
    let get = Pdu::Get {
        method: Method::Get,
        uri: "/wml/index.wml?x=1".into(),
        headers: injected,
    };
    client.send(
        ALICE,
        9200,
        &pdu::encode(&get, Some(0x42), EncodingVersion::V1_2).unwrap(),
    );
    let answer = client.receive();
    assert_eq!(answer[0], 0x42);
    assert_eq!(reply_of(&answer, Mode::Connectionless).0, 0x20);

    // Mallory is not in `staff`: 0x43, and the backend sees nothing.
    client.send(MALLORY, 9200, &vector("cl-get-1.hex"));
    let (status, _, _) = reply_of(&client.receive(), Mode::Connectionless);
    assert_eq!(status, 0x43);

    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    seen[0].assert_identity("alice", ALICE, "staff");
    assert_eq!(seen[0].path, "/hello.wml");
    seen[1].assert_identity("alice", ALICE, "staff");
    assert_eq!(seen[1].path, "/wml/index.wml?x=1");
    assert_eq!(seen[1].header("accept"), ["text/vnd.wap.wml"]);
    // A bare path is taken against the application's address.
    assert_eq!(
        seen[1].header("x-forwarded-host"),
        [format!("[{APP}]").as_str()]
    );
    assert_eq!(front.counter("injected_identity_headers"), 2);
    assert_eq!(front.counter("forbidden_group"), 1);
    front.shutdown();
}

#[test]
fn proxied_wtp_session_from_committed_vectors() {
    let backend = Backend::start();
    let mut front = proxied(&backend, "");
    let client = Client::new(front.addresses[0]);

    // Connect (TID 1): a new peer's TID is verified first.
    client.send(ALICE, 9201, &vector("co-get-1.hex"));
    let WtpPdu::Ack(ack) = client.receive_wtp() else {
        panic!("no TID verification")
    };
    assert!(ack.tid_verify);
    client.send(ALICE, 9201, &wtp_vector("ack_tidok.bin"));
    let WtpPdu::Result(result) = client.receive_wtp() else {
        panic!("no ConnectReply")
    };
    let Pdu::ConnectReply {
        session_id,
        capabilities,
        ..
    } = pdu::decode(&result.user_data, Mode::Connection)
        .unwrap()
        .pdu
    else {
        panic!("not a ConnectReply")
    };
    // fakewap offers 1 MB; the application's sdu-size (1400) is granted.
    assert_eq!(capabilities.client_sdu_size, Some(1400));
    client.send(ALICE, 9201, &vector("co-get-2.hex"));

    // Get (TID 2).
    client.send(ALICE, 9201, &vector("co-get-3.hex"));
    let WtpPdu::Result(result) = client.receive_wtp() else {
        panic!("no Reply")
    };
    let (status, data, _) = reply_of(&result.user_data, Mode::Connection);
    assert_eq!((status, data.as_slice()), (0x20, HELLO));
    client.send(ALICE, 9201, &vector("co-get-4.hex"));

    // The committed Disconnect names session 5 (another gateway's): ignored.
    client.send(ALICE, 9201, &vector("co-get-5.hex"));
    // Ours, as a class 0 invoke reusing TID 2.
    let mut disconnect = vec![0x0a, 0x00, 0x02, 0x10, 0x05];
    let mut id = Vec::new();
    wap_adapter::wsp::uintvar::encode(session_id, &mut id);
    disconnect.extend_from_slice(&id);
    client.send(ALICE, 9201, &disconnect);
    netns_tests::wait_until(
        "the session to end",
        Duration::from_secs(10),
        || front.counter("wap_sessions_disconnected") == 1,
        || format!("{:?}", front.counters.labelled()),
    );
    assert_eq!(front.counter("wap_wrong_session_id"), 1);

    // A Get outside any session is aborted (DISCONNECT).
    let mut get = vector("co-get-3.hex");
    get[2] = 0x03; // TID 3
    client.send(ALICE, 9201, &get);
    let WtpPdu::Abort(_) = client.receive_wtp() else {
        panic!("a method outside a session is aborted")
    };
    assert_eq!(front.counter("wap_no_session"), 1);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    seen[0].assert_identity("alice", ALICE, "staff");
    front.shutdown();
}

#[test]
fn malformed_and_unheaded_datagrams_are_counted_never_a_panic() {
    let backend = Backend::start();
    let mut front = proxied(&backend, "");
    let client = Client::new(front.addresses[0]);

    // Every truncation and every single-octet change of the committed
    // datagrams, to both layers; one at a time (loopback drops datagrams
    // when a receive buffer fills, and each must be counted).
    let sent = std::cell::Cell::new(0);
    let counted = |source: &str, port: u16, payload: &[u8]| {
        if port == 0 {
            client.send_raw(payload);
        } else {
            client.send(source, port, payload);
        }
        sent.set(sent.get() + 1);
        netns_tests::wait_until(
            "the datagram counted",
            Duration::from_secs(10),
            || front.counter("wap_datagrams") == sent.get(),
            || format!("{:?}", front.counters.labelled()),
        );
    };
    // No PROXY header: refused.
    counted(ALICE, 0, &vector("cl-get-1.hex"));
    // A header for another port.
    counted(ALICE, 80, b"GET / HTTP/1.1\r\n\r\n");
    // Garbage for each layer.
    counted(ALICE, 9200, &[0x01, 0xff, 0xff, 0xff]);
    counted(ALICE, 9201, &[0xff; 3]);
    for name in [
        "cl-get-1.hex",
        "cl-post-1.hex",
        "co-get-1.hex",
        "co-post-3.hex",
    ] {
        let good = vector(name);
        for cut in 0..good.len() {
            counted(MALLORY, 9200, &good[..cut]);
            counted(MALLORY, 9201, &good[..cut]);
        }
        for at in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[at] ^= 0xa5;
            counted(MALLORY, 9201, &bad);
        }
    }
    assert_eq!(front.counter("proxy_refused"), 1);
    assert_eq!(front.counter("wap_other_port"), 1);
    assert!(front.counter("wap_malformed") >= 1);
    assert!(front.counter("wtp_malformed") >= 1);

    // Still serving: a good request from alice after all that.
    let fresh = Client::new(front.addresses[0]);
    fresh.send(ALICE, 9200, &vector("cl-get-1.hex"));
    // Answers to mallory's datagrams may still arrive first at `client`;
    // `fresh` gets only its own.
    let (status, data, _) = reply_of(&fresh.receive(), Mode::Connectionless);
    assert_eq!((status, data.as_slice()), (0x20, HELLO));
    front.shutdown();
}

/// A WTP class 2 invoke (U/P set) of `wsp` with TID `tid`, one packet.
fn invoke(tid: u8, wsp: &[u8]) -> Vec<u8> {
    [&[0x0a, 0x00, tid, 0x12][..], wsp].concat()
}

/// A WTP class 0 invoke of `wsp` with TID `tid`.
fn invoke_class0(tid: u8, wsp: &[u8]) -> Vec<u8> {
    [&[0x0a, 0x00, tid, 0x10][..], wsp].concat()
}

/// Connection-mode WSP Get of `uri`.
fn get(uri: &str) -> Vec<u8> {
    let pdu = Pdu::Get {
        method: Method::Get,
        uri: uri.into(),
        headers: Headers::new(),
    };
    pdu::encode(&pdu, None, EncodingVersion::V1_2).unwrap()
}

fn uintvar(value: u32) -> Vec<u8> {
    let mut out = Vec::new();
    wap_adapter::wsp::uintvar::encode(value, &mut out);
    out
}

/// fakewap's Connect (TID 1) from `client` as `source`, through the TID
/// verification a new client gets; the session id, or the Abort.
fn connect(client: &Client, source: &str) -> Result<u32, wap_adapter::wtp::pdu::Abort> {
    client.send(source, 9201, &vector("co-get-1.hex"));
    match client.receive_wtp() {
        WtpPdu::Ack(ack) if ack.tid_verify => {}
        other => panic!("no TID verification: {other:?}"),
    }
    client.send(source, 9201, &wtp_vector("ack_tidok.bin"));
    match client.receive_wtp() {
        WtpPdu::Result(result) => {
            client.send(source, 9201, &vector("co-get-2.hex"));
            match pdu::decode(&result.user_data, Mode::Connection)
                .unwrap()
                .pdu
            {
                Pdu::ConnectReply { session_id, .. } => Ok(session_id),
                other => panic!("not a ConnectReply: {other:?}"),
            }
        }
        WtpPdu::Abort(abort) => Err(abort),
        other => panic!("neither ConnectReply nor Abort: {other:?}"),
    }
}

#[test]
fn sessions_are_bounded_suspend_ends_them_resume_is_refused_and_idle_ones_expire() {
    let backend = Backend::start();
    let mut front = proxied_with(&backend, "", |settings| {
        settings.sessions.max_sessions = 2;
        settings.sessions.max_sessions_per_address = 1;
        settings.sessions.idle_timeout = Duration::from_secs(2);
    });
    let server = front.addresses[0];
    let (alice, alice2, mallory, third) = (
        Client::new(server),
        Client::new(server),
        Client::new(server),
        Client::new(server),
    );
    let alice_session = connect(&alice, ALICE).unwrap();
    // A second session from alice's address (another client port): refused.
    let refused = connect(&alice2, ALICE).unwrap_err();
    assert_eq!(
        refused.reason,
        wap_adapter::wtp::AbortReason::User(0xE4),
        "CONGESTION"
    );
    assert_eq!(front.counter("wap_sessions_refused_address"), 1);
    connect(&mallory, MALLORY).unwrap();
    // Two sessions: the total bound refuses a third address.
    assert!(connect(&third, "2002:b16:212c:1::3").is_err());
    assert_eq!(front.counter("wap_sessions_refused_total"), 1);

    // Alice suspends (class 0): the session ends; her Resume is aborted.
    alice.send(
        ALICE,
        9201,
        &invoke_class0(2, &[&[0x08][..], &uintvar(alice_session)].concat()),
    );
    let resume = [&[0x09][..], &uintvar(alice_session), &[0x00]].concat();
    alice.send(ALICE, 9201, &invoke(3, &resume));
    match alice.receive_wtp() {
        WtpPdu::Abort(abort) => {
            assert_eq!(abort.reason, wap_adapter::wtp::AbortReason::User(0xE1))
        }
        other => panic!("Resume not refused: {other:?}"),
    }
    assert_eq!(front.counter("wap_sessions_suspended"), 1);
    assert_eq!(front.counter("wap_resumes_refused"), 1);

    // Mallory goes quiet: the session expires.
    netns_tests::wait_until(
        "the idle session to expire",
        Duration::from_secs(20),
        || front.counter("wap_sessions_expired") == 1,
        || format!("{:?}", front.counters.labelled()),
    );
    mallory.send(MALLORY, 9201, &invoke(2, &get("/after")));
    let WtpPdu::Abort(_) = mallory.receive_wtp() else {
        panic!("a method after expiry is refused")
    };
    assert_eq!(front.counter("wap_no_session"), 1);
    assert!(backend.seen().is_empty());
    front.shutdown();
}

#[test]
fn method_mor_is_enforced_and_shutdown_answers_running_requests_first() {
    let backend = Backend::start();
    let mut front = proxied_with(&backend, "", |settings| settings.sessions.method_mor = 1);
    let client = Client::new(front.addresses[0]);
    connect(&client, ALICE).unwrap();
    client.send(ALICE, 9201, &invoke(2, &get("/slow")));
    netns_tests::wait_until(
        "the backend to get the slow request",
        Duration::from_secs(10),
        || backend.seen().len() == 1,
        || format!("{:?}", front.counters.labelled()),
    );
    // Method-MOR 1: a second method while the first runs is aborted.
    client.send(ALICE, 9201, &invoke(3, &get("/hello")));
    match client.receive_wtp() {
        WtpPdu::Abort(abort) => {
            assert_eq!(abort.reason, wap_adapter::wtp::AbortReason::User(0xE7))
        }
        other => panic!("MOR not enforced: {other:?}"),
    }
    assert_eq!(front.counter("wap_mor_exceeded"), 1);

    // Shutdown while /slow runs: new sessions are refused (the front has
    // seen the shutdown), the running request is still answered.
    front.stop.send_replace(true);
    let served = front.served.take().unwrap();
    let late = Client::new(front.addresses[0]);
    assert!(
        connect(&late, MALLORY).is_err(),
        "no new session while stopping"
    );
    assert!(
        !served.is_finished(),
        "the front stopped with a request running"
    );
    backend.open_gate();
    let WtpPdu::Result(result) = client.receive_wtp() else {
        panic!("no Reply")
    };
    let (status, data, _) = reply_of(&result.user_data, Mode::Connection);
    assert_eq!((status, data.as_slice()), (0x20, HELLO));
    client.send(ALICE, 9201, &[0x18, 0x00, 0x02]);
    front
        .runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), served).await })
        .expect("the front returns once the request is answered")
        .unwrap();
    assert_eq!(backend.seen().len(), 1);
}

#[test]
fn requests_past_max_connections_get_503_at_once() {
    let backend = Backend::start();
    let mut front = proxied_with(&backend, "", |settings| settings.limits.max_connections = 1);
    let (slow, fast) = (
        Client::new(front.addresses[0]),
        Client::new(front.addresses[0]),
    );
    let request = |uri: &str, tid: u8| {
        let pdu = Pdu::Get {
            method: Method::Get,
            uri: uri.into(),
            headers: Headers::new(),
        };
        pdu::encode(&pdu, Some(tid), EncodingVersion::V1_2).unwrap()
    };
    slow.send(ALICE, 9200, &request("/slow", 1));
    netns_tests::wait_until(
        "the backend to get the slow request",
        Duration::from_secs(10),
        || backend.seen().len() == 1,
        || format!("{:?}", front.counters.labelled()),
    );
    fast.send(ALICE, 9200, &request("/hello", 2));
    let answer = fast.receive();
    assert_eq!(answer[0], 2);
    assert_eq!(reply_of(&answer, Mode::Connectionless).0, 0x63, "503");
    assert_eq!(front.counter("wap_overloaded"), 1);
    backend.open_gate();
    let (status, data, _) = reply_of(&slow.receive(), Mode::Connectionless);
    assert_eq!((status, data.as_slice()), (0x20, HELLO));
    // The permit is back: the next request is served.
    fast.send(ALICE, 9200, &request("/hello", 3));
    assert_eq!(reply_of(&fast.receive(), Mode::Connectionless).0, 0x20);
    assert_eq!(backend.seen().len(), 2);
    front.shutdown();
}
