//! The HTTP front and the interface adapter, in process, on loopback: a
//! fake tunneld control socket answering `peer <address>` as tunneld does,
//! a test HTTP backend that records what reaches it, CGI scripts written by
//! the tests, and a raw HTTP client (so it can inject headers and PROXY v2
//! headers of its choice).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::collections::BTreeMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

mod http_common;

use http_common::{FakeTunneld, Leases};

use wap_adapter::adapter::Adapter;
use wap_adapter::config::Config;
use wap_adapter::identity::Resolver;
use wap_adapter::server::http::HttpServer;
use wap_adapter::server::proxy_header::SIGNATURE;
use wap_adapter::server::ServerCounters;

/// The test user's overlay address (a PROXY header's source).
const ALICE: &str = "2002:b16:212c:1::1234";
/// A user in no allowed group.
const MALLORY: &str = "2002:b16:212c:1::666";
/// The application's address (a PROXY header's destination).
const APP: &str = "2002:b16:212c:2::10";

/// Leases the fake tunneld knows, by address: name and groups. `::1` is
/// alice too, so that direct (TUN-mode) connections over loopback, whose
/// source is `::1`, are hers.
fn leases() -> Leases {
    [
        (ALICE, ("alice", vec!["staff", "wap users"])),
        ("::1", ("alice", vec!["staff", "wap users"])),
        (MALLORY, ("mallory", vec!["guests"])),
    ]
    .into_iter()
    .map(|(a, l)| (a.parse().unwrap(), l))
    .collect()
}

/// An HTTP backend on loopback that records every request and answers
/// `200 backend says hi`, after `delay`.
type TestBackend = http_common::Backend;

impl TestBackend {
    async fn start(delay: Duration) -> TestBackend {
        TestBackend::serve(delay, |_| {
            let mut response =
                hyper::Response::new(Full::new(Bytes::from_static(b"backend says hi")));
            response
                .headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            response
                .headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            response
        })
        .await
    }
}

/// A running front: the adapter and its HTTP listener on loopback.
struct Front {
    address: SocketAddr,
    adapter: Arc<Adapter>,
    counters: Arc<ServerCounters>,
    stop: watch::Sender<bool>,
    served: tokio::task::JoinHandle<()>,
    _tunneld: Option<FakeTunneld>,
    dir: tempfile::TempDir,
}

impl Front {
    /// An application with `backend` (a TOML inline table's keys) and
    /// `extra` keys, `[limits]` keys `limits`; listening on `[::1]:0`
    /// (direct) or `127.0.0.1:0` (PROXY v2, `proxied`).
    async fn start(backend: &str, extra: &str, limits: &str, proxied: bool) -> Front {
        Front::start_in(
            tempfile::tempdir().unwrap(),
            backend,
            extra,
            limits,
            proxied,
            true,
        )
        .await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        backend: &str,
        extra: &str,
        limits: &str,
        proxied: bool,
        with_tunneld: bool,
    ) -> Front {
        let tunneld = with_tunneld.then(|| FakeTunneld::start(dir.path(), leases()));
        let text = format!(
            "[identity]\ntunneld-socket = \"tunneld.sock\"\ntimeout = 2\n[limits]\n{limits}\n\
             [[applications]]\nname = \"app\"\naddress = \"{APP}\"\nbackend = {{ {backend} }}\n{extra}\n"
        );
        let config = Config::parse(&text, &dir.path().join("wap-adapter.toml")).unwrap();
        let app = &config.applications[0];
        let resolver = Arc::new(Resolver::new(&config.identity));
        let adapter = Arc::new(Adapter::new(app, config.limits, resolver));
        let counters = Arc::new(ServerCounters::default());
        let listen: SocketAddr = if proxied { "127.0.0.1:0" } else { "[::1]:0" }
            .parse()
            .unwrap();
        let server = HttpServer::bind(
            listen,
            proxied,
            Arc::clone(&adapter),
            config.limits,
            Arc::clone(&counters),
        )
        .await
        .unwrap();
        let address = server.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(server.serve(stopped));
        Front {
            address,
            adapter,
            counters,
            stop,
            served,
            _tunneld: tunneld,
            dir,
        }
    }

    /// A reverse proxy to `backend`'s root, with a fake tunneld.
    async fn proxying(backend: &TestBackend, extra: &str, limits: &str, proxied: bool) -> Front {
        let url = format!("url = \"http://{}/\"", backend.address);
        Front::start(&url, extra, limits, proxied).await
    }

    /// CGI program `script` (in `dir`), with a fake tunneld.
    async fn cgi(
        dir: tempfile::TempDir,
        script: &Path,
        extra: &str,
        limits: &str,
        proxied: bool,
    ) -> Front {
        let cgi = format!("cgi = \"{}\"", script.display());
        Front::start_in(dir, &cgi, extra, limits, proxied, true).await
    }

    fn adapter_counter(&self, name: &str) -> u64 {
        self.adapter
            .counters()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .value
    }

    /// Writes an executable script `name` in the test directory.
    fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.served.abort();
    }
}

/// A response as the raw client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `prefix` (a PROXY header, or nothing), then `request` verbatim;
/// reads until the server closes. `None` if it closed without answering.
async fn exchange(address: SocketAddr, prefix: &[u8], request: &str) -> Option<Answer> {
    let mut stream = TcpStream::connect(address).await.unwrap();
    // A refusing server may close (or reset) before it all went out.
    let mut sent = stream.write_all(prefix).await;
    if sent.is_ok() {
        sent = stream.write_all(request.as_bytes()).await;
    }
    if sent.is_err() {
        return None;
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw)).await;
    // A refused connection may be reset rather than closed.
    if !matches!(read, Ok(Ok(_))) && raw.is_empty() {
        return None;
    }
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_owned(), v.trim().to_owned())
        })
        .collect();
    Some(Answer {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A GET of `path` with `extra` header lines, `Connection: close`.
fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: app.example\r\n{extra}Connection: close\r\n\r\n")
}

/// tunneld's PROXY v2 header (TCP over IPv6) from `source`:40000 to the
/// application's port 80.
fn proxy_header(source: &str) -> Vec<u8> {
    let mut header = SIGNATURE.to_vec();
    header.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
    header.extend_from_slice(&source.parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&APP.parse::<Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_reach_a_reverse_proxy_backend_and_injected_ones_never_do() {
    let backend = TestBackend::start(Duration::ZERO).await;
    let front = Front::start(
        &format!("url = \"http://{}/base/\"", backend.address),
        "",
        "",
        false,
    )
    .await;
    let injected =
        "X-Permanet-User: root\r\nX-Permanet_Groups: admins\r\nx-permanet-address: 2002::1\r\n\
                    X-Forwarded-For: 10.9.9.9\r\nConnection: X-Secret\r\nX-Secret: 1\r\n";
    let answer = exchange(front.address, b"", &get("/page?q=1", injected))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "backend says hi");
    assert_eq!(
        answer.header("keep-alive"),
        None,
        "hop-by-hop from the backend"
    );

    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.uri, "/base/page?q=1");
    assert_eq!(seen.header("x-permanet-user"), ["alice"]);
    assert_eq!(seen.header("x-permanet-address"), ["::1"]);
    assert_eq!(seen.header("x-permanet-groups"), ["staff,wap%20users"]);
    assert!(seen.header("x-permanet_groups").is_empty(), "{seen:?}");
    assert!(
        !seen
            .headers
            .iter()
            .any(|(_, v)| v == "root" || v == "admins" || v == "2002::1"),
        "{seen:?}"
    );
    assert_eq!(seen.header("x-forwarded-for"), ["::1"]);
    assert_eq!(seen.header("x-forwarded-host"), ["app.example"]);
    assert_eq!(seen.header("host"), [backend.address.to_string().as_str()]);
    assert!(
        seen.header("x-secret").is_empty(),
        "named in Connection: hop-by-hop"
    );
    assert_eq!(front.adapter_counter("injected_identity_headers"), 3);
    assert_eq!(front.adapter_counter("answered"), 1);

    // The identity came from tunneld once, then from the cache.
    let answer = exchange(front.address, b"", &get("/", "")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(front._tunneld.as_ref().unwrap().asked(), 1);

    // A POST body reaches the backend whole.
    let post = "POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(
        exchange(front.address, b"", post).await.unwrap().status,
        200
    );
    assert_eq!(backend.seen()[2].body, b"hello");
}

/// A CGI script that saves its environment (one `NAME=value` per line,
/// via `env`) and stdin to files next to it and answers with a small
/// document.
const ENV_SCRIPT: &str = "#!/bin/sh\nenv > \"$0.env\"\ncat > \"$0.stdin\"\necho \"$$\" > \"$0.pid\"\n\
                          printf 'Status: 201 Created\\r\\nContent-Type: text/plain\\r\\nX-From: cgi\\r\\n\\r\\ncgi says hi'\n";

fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reaches_a_cgi_program_as_rfc_3875_meta_variables() {
    let dir = tempfile::tempdir().unwrap();
    let script = Front::script(dir.path(), "app.cgi", ENV_SCRIPT);
    let front = Front::cgi(dir, &script, "", "", true).await;
    let request = "POST /a%20b/c?x=1&y=2 HTTP/1.1\r\nHost: app.example\r\nContent-Type: text/plain\r\n\
                   Content-Length: 4\r\nX-Permanet-User: root\r\nX_Permanet_User: root\r\nAuthorization: Basic eA==\r\n\
                   Accept: text/vnd.wap.wml\r\nConnection: close\r\n\r\nbody";
    let answer = exchange(front.address, &proxy_header(ALICE), request)
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{answer:?}");
    assert_eq!(answer.body, "cgi says hi");
    assert_eq!(answer.header("x-from"), Some("cgi"));

    let env = read_env(&front.dir.path().join("app.cgi.env"));
    let mut expected: BTreeMap<String, String> = [
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_METHOD", "POST"),
        ("SCRIPT_NAME", ""),
        ("PATH_INFO", "/a b/c"),
        ("QUERY_STRING", "x=1&y=2"),
        ("REQUEST_URI", "/a%20b/c?x=1&y=2"),
        ("REMOTE_ADDR", ALICE),
        ("REMOTE_HOST", ALICE),
        ("REMOTE_PORT", "40000"),
        ("AUTH_TYPE", "Permanet"),
        ("REMOTE_USER", "alice"),
        ("SERVER_NAME", "app.example"),
        ("SERVER_PORT", "80"),
        ("CONTENT_LENGTH", "4"),
        ("CONTENT_TYPE", "text/plain"),
        ("HTTP_HOST", "app.example"),
        ("HTTP_ACCEPT", "text/vnd.wap.wml"),
        ("HTTP_X_PERMANET_USER", "alice"),
        ("HTTP_X_PERMANET_ADDRESS", ALICE),
        ("HTTP_X_PERMANET_GROUPS", "staff,wap%20users"),
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    expected.insert(
        "SERVER_SOFTWARE".into(),
        format!("wap-adapter/{}", env!("CARGO_PKG_VERSION")),
    );
    expected.insert("SCRIPT_FILENAME".into(), script.display().to_string());
    // What the shell itself adds to `env`'s output.
    let shell_added = ["PWD", "SHLVL", "_", "OLDPWD"];
    let got: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| !shell_added.contains(&k.as_str()))
        .collect();
    assert_eq!(
        got, expected,
        "field by field; nothing else (no HTTP_AUTHORIZATION, no inherited variables)"
    );
    assert_eq!(
        std::fs::read(front.dir.path().join("app.cgi.stdin")).unwrap(),
        b"body"
    );
    assert_eq!(front.adapter_counter("injected_identity_headers"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_allowed_groups_gets_403_and_no_backend_sees_the_request() {
    let backend = TestBackend::start(Duration::ZERO).await;
    let groups = "allowed-groups = [\"staff\", \"admins\"]";
    let front = Front::proxying(&backend, groups, "", true).await;
    let answer = exchange(
        front.address,
        &proxy_header(MALLORY),
        &get("/", "X-Permanet-Groups: staff\r\n"),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    // An address no lease holds.
    let answer = exchange(
        front.address,
        &proxy_header("2002:b16:212c:1::999"),
        &get("/", ""),
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(backend.seen().is_empty());
    assert_eq!(front.adapter_counter("forbidden_group"), 1);
    assert_eq!(front.adapter_counter("unknown_source"), 1);
    // alice is in staff.
    let answer = exchange(front.address, &proxy_header(ALICE), &get("/", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(backend.seen().len(), 1);
    // SIGHUP's path: the groups change at once.
    front.adapter.set_allowed_groups(vec!["admins".into()]);
    let answer = exchange(front.address, &proxy_header(ALICE), &get("/", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(backend.seen().len(), 1);

    // The CGI backend is never started either.
    let dir = tempfile::tempdir().unwrap();
    let script = Front::script(dir.path(), "app.cgi", ENV_SCRIPT);
    let front = Front::cgi(dir, &script, groups, "", true).await;
    let answer = exchange(front.address, &proxy_header(MALLORY), &get("/", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(!front.dir.path().join("app.cgi.env").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_listeners_refuse_connections_without_a_valid_header() {
    let backend = TestBackend::start(Duration::ZERO).await;
    let front = Front::proxying(&backend, "", "header-timeout = 1", true).await;
    let good = exchange(front.address, &proxy_header(ALICE), &get("/", ""))
        .await
        .unwrap();
    assert_eq!(good.status, 200);
    assert_eq!(backend.seen()[0].header("x-permanet-address"), [ALICE]);

    let mut bad_version = proxy_header(ALICE);
    bad_version[12] = 0x11;
    let mut local = SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let mut ipv4 = SIGNATURE.to_vec();
    ipv4.extend_from_slice(&[
        0x21, 0x11, 0x00, 0x0c, 127, 0, 0, 1, 127, 0, 0, 1, 0, 1, 0, 80,
    ]);
    let v1 = b"PROXY TCP6 2002:b16:212c:1::1234 2002:b16:212c:2::10 40000 80\r\n".to_vec();
    for (what, prefix) in [
        ("missing", Vec::new()),
        ("bad version", bad_version),
        ("LOCAL", local),
        ("IPv4", ipv4),
        ("version 1", v1),
    ] {
        let answer = exchange(front.address, &prefix, &get("/", "")).await;
        assert!(answer.is_none(), "{what}: {answer:?}");
    }
    // A client that sends nothing is dropped after header-timeout.
    let mut silent = TcpStream::connect(front.address).await.unwrap();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    assert_eq!(front.counters.value("proxy_refused"), Some(6));
    assert_eq!(
        backend.seen().len(),
        1,
        "no refused connection reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_down_gives_502_and_a_slow_one_504() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let front = Front::start(&format!("url = \"http://{closed}/\""), "", "", false).await;
    let answer = exchange(front.address, b"", &get("/", "")).await.unwrap();
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(front.adapter_counter("backend_unreachable"), 1);

    let slow = TestBackend::start(Duration::from_secs(5)).await;
    let front = Front::proxying(&slow, "", "backend-timeout = 1", false).await;
    let started = std::time::Instant::now();
    let answer = exchange(front.address, b"", &get("/", "")).await.unwrap();
    assert_eq!(answer.status, 504, "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(front.adapter_counter("backend_timeout"), 1);

    // A CGI program past the timeout is killed and reaped.
    let dir = tempfile::tempdir().unwrap();
    let script = Front::script(
        dir.path(),
        "slow.cgi",
        "#!/bin/sh\necho \"$$\" > \"$0.pid\"\nexec sleep 60\n",
    );
    let front = Front::cgi(dir, &script, "", "backend-timeout = 1", false).await;
    let answer = exchange(front.address, b"", &get("/", "")).await.unwrap();
    assert_eq!(answer.status, 504, "{answer:?}");
    let pid = std::fs::read_to_string(front.dir.path().join("slow.cgi.pid")).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    netns_tests::wait_until(
        "the CGI program to be killed and reaped",
        Duration::from_secs(10),
        || !proc.exists(),
        String::new,
    );

    // A missing program is a 502; a program that fails is a 502.
    let dir = tempfile::tempdir().unwrap();
    let failing = Front::script(dir.path(), "fail.cgi", "#!/bin/sh\necho oops >&2\nexit 3\n");
    let front = Front::cgi(dir, &failing, "", "", false).await;
    assert_eq!(
        exchange(front.address, b"", &get("/", ""))
            .await
            .unwrap()
            .status,
        502
    );
    let missing = front.dir.path().join("missing.cgi");
    let front = Front::start(&format!("cgi = \"{}\"", missing.display()), "", "", false).await;
    assert_eq!(
        exchange(front.address, b"", &get("/", ""))
            .await
            .unwrap()
            .status,
        502
    );
    assert_eq!(front.adapter_counter("backend_unreachable"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_redirects_and_bounded_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let script = Front::script(
        dir.path(),
        "redirect.cgi",
        "#!/bin/sh\ncase \"$PATH_INFO\" in\n/old) printf 'Location: /new?from=old\\n\\n' ;;\n\
         /away) printf 'Location: http://example.org/\\n\\n' ;;\n\
         /loop) printf 'Location: /loop\\n\\n' ;;\n\
         *) printf 'Content-Type: text/plain\\n\\n%s %s %s' \"$REQUEST_METHOD\" \"$PATH_INFO\" \"$QUERY_STRING\" ;;\nesac\n",
    );
    let front = Front::cgi(dir, &script, "", "max-body-bytes = 1024", false).await;
    let answer = exchange(front.address, b"", &get("/old", ""))
        .await
        .unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "GET /new from=old")
    );
    let answer = exchange(front.address, b"", &get("/away", ""))
        .await
        .unwrap();
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some("http://example.org/"));
    assert_eq!(
        exchange(front.address, b"", &get("/loop", ""))
            .await
            .unwrap()
            .status,
        502
    );
    let big = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{}",
        "x".repeat(2000)
    );
    assert_eq!(
        exchange(front.address, b"", &big).await.unwrap().status,
        413
    );
    assert_eq!(front.counters.value("bad_requests"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_tunneld_gives_503() {
    let backend = TestBackend::start(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let front = Front::start_in(
        dir,
        &format!("url = \"http://{}/\"", backend.address),
        "",
        "",
        false,
        false,
    )
    .await;
    let answer = exchange(front.address, b"", &get("/", "")).await.unwrap();
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(front.adapter_counter("identity_unavailable"), 1);
    assert!(backend.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_request_finish_and_stops_accepting() {
    let slow = TestBackend::start(Duration::from_millis(800)).await;
    let mut front = Front::proxying(&slow, "", "", false).await;
    let address = front.address;
    let running = tokio::spawn(async move { exchange(address, b"", &get("/", "")).await });
    // Wait until the request reached the backend, then stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while slow.seen().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    front.stop.send_replace(true);
    let answer = running.await.unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    tokio::time::timeout(Duration::from_secs(10), &mut front.served)
        .await
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_bounds_concurrent_requests() {
    let slow = TestBackend::start(Duration::from_millis(600)).await;
    let front = Front::proxying(&slow, "", "max-connections = 1", false).await;
    let started = std::time::Instant::now();
    let address = front.address;
    let requests: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { exchange(address, b"", &get("/", "")).await }))
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status, 200);
    }
    // One at a time: at least two backend delays (in parallel: one).
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.seen().len(), 2);
}
