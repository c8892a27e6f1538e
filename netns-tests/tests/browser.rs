//! A real browser through permanet (issue #6): headless Chromium (Debian's
//! `chromium`) loads an application page by its overlay DNS name through
//! the client tunneld's SOCKS5 proxy; the screenshot is kept.
//!
//! ```text
//!  chromium ─SOCKS5─▶ tunneld client ═ESP/UDP═▶ tunneld server ─PROXY v2─▶ wap-adapter ─HTTP─▶ page
//!  (names resolved    (userspace; asks addrd's  (userspace; wiki:80      (HTTP front,      (this test:
//!   at the proxy)      DNS through the tunnel)   to the adapter)          identity headers) says hello)
//! ```
//!
//! Everything runs on loopback in userspace mode, no root: addrd with the
//! embedded directory of the example organisation, a server tunneld with
//! app1's system lease from `addrd issue-lease`, alice's terminal logged in
//! with `tunneld login`. Chromium's own name resolution is turned off
//! (`--host-resolver-rules`): `wiki.apps.permanet.internal` can only be
//! resolved by the proxy, which asks addrd's overlay DNS through the
//! tunnel. The page the backend renders names the user and address the
//! adapter vouched for, so the DOM Chromium dumps proves the identity went
//! all the way, and the screenshot shows it.
//!
//! Chromium runs with `--no-sandbox`: as root it refuses to start
//! otherwise, and containers rarely allow its sandbox anyway; it only
//! loads this test's page. Its profile, cache and home are in the test's
//! temporary directory; it runs in its own process group, killed by that
//! group's ID if the test fails.
//!
//! The screenshot goes to `target/test-artifacts/browser.png` (the path
//! is printed). Skipped (`permanet-test-skipped:`) when chromium or the
//! daemons are missing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns_tests::topology::{Binaries, Dir};
use netns_tests::{skip, wait_until, Process, DEADLINE};

const ADDRD_CONFIG: &str = include_str!("../../configs/addrd.toml");
const EXAMPLE_ORG: &str = include_str!("../../configs/ldap/example-org.ldif");
const CHROMIUM: &str = "/usr/bin/chromium";
/// The name the browser is given: the wiki of the example organisation.
const WIKI_NAME: &str = "wiki.apps.permanet.internal";
/// Text only the backend's page carries.
const PAGE_MARKER: &str = "PERMANET-BROWSER-PAGE-4f2a91";
/// The browser's window, and so the screenshot's size.
const WIDTH: u32 = 900;
const HEIGHT: u32 = 540;

/// Run `program args` with `stdin`; its stdout, or a panic with both
/// streams.
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
    // A program that exits without reading its stdin is not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port free for TCP and UDP alike (bound and released; the
/// daemon binds it next).
fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Write `bytes` to `name` under `dir`, creating its directory.
fn write(dir: &Dir, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
    std::fs::create_dir_all(dir.path(name).parent().unwrap()).unwrap();
    dir.write(name, bytes, mode)
}

/// One request the page backend answered.
#[derive(Debug, Clone)]
struct Request {
    line: String,
    /// Header names lowercased, values trimmed.
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The application: an HTTP server on loopback (behind wap-adapter) whose
/// page `/` greets the user the adapter says the request comes from;
/// anything else is 404. It records every request.
struct PageBackend {
    address: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageBackend {
    fn start() -> PageBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (record, stopped) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let record = Arc::clone(&record);
                        std::thread::spawn(move || answer(conn, &record));
                    }
                    // Nothing to accept: look at the stop flag again soon.
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PageBackend {
            address,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for PageBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(conn: TcpStream, record: &Mutex<Vec<Request>>) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
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
    let request = Request {
        line: line.trim_end().to_owned(),
        headers,
    };
    let (status, body) = if request.line.starts_with("GET / ") {
        ("200 OK", page(&request))
    } else {
        ("404 Not Found", "not here\n".to_owned())
    };
    record.lock().unwrap().push(request);
    let kind = if status.starts_with("200") {
        "text/html; charset=utf-8"
    } else {
        "text/plain"
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The wiki's page for `request`: the marker, and the identity the
/// adapter passed on.
fn page(request: &Request) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let user = escape(request.header("x-permanet-user").unwrap_or("nobody"));
    let address = escape(request.header("x-permanet-address").unwrap_or("?"));
    let groups = escape(request.header("x-permanet-groups").unwrap_or(""));
    let host = escape(host(request).unwrap_or("?"));
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>permanet wiki</title>\
         <style>body{{font-family:sans-serif;margin:40px;background:#eef3f9;color:#123}}\
         h1{{color:#1a4d8f}}code{{background:#fff;padding:2px 6px}}</style></head><body>\
         <h1>permanet wiki</h1><p id=\"marker\">{PAGE_MARKER}</p>\
         <p>You asked for <code id=\"host\">{host}</code>.</p>\
         <p>Hello <b id=\"user\">{user}</b> (<span id=\"groups\">{groups}</span>) from \
         <code id=\"address\">{address}</code>.</p>\
         <p>Reached by its overlay name through the SOCKS5 proxy of your tunneld, \
         the encrypted tunnel, the server's tunneld and wap-adapter.</p></body></html>\n"
    )
}

/// The name the client asked for: the `Host` it sent, which the adapter
/// passes on as `X-Forwarded-Host`.
fn host(request: &Request) -> Option<&str> {
    request
        .header("x-forwarded-host")
        .or_else(|| request.header("host"))
}

/// Chromium in its own process group; the whole group is killed (by the
/// group's ID, the browser's PID) when dropped, so no renderer outlives a
/// failed test.
struct Browser {
    child: Child,
}

impl Browser {
    fn group(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.group(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The PNG's width and height from its IHDR chunk, if it is a PNG.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let signature = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != signature || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    Some((word(16), word(20)))
}

/// Where test artifacts are kept: `target/test-artifacts/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn chromium_loads_an_application_by_its_overlay_name() {
    let test = "chromium_loads_an_application_by_its_overlay_name";
    if !Path::new(CHROMIUM).is_file() {
        skip(test, "chromium is not installed (apt-get install chromium)");
        return;
    }
    let Some(bins) = Binaries::find_or_skip(test) else {
        return;
    };
    let Some(wap_adapter) = bins.wap_adapter.clone() else {
        skip(
            test,
            "wap-adapter is not built (cargo build -p wap-adapter)",
        );
        return;
    };
    let started = Instant::now();
    let dir = Dir::new();

    // addrd: the example organisation in the embedded directory.
    let addrd_port = free_port();
    let socket = dir.path("run/addrd.sock");
    let config: String = ADDRD_CONFIG
        .lines()
        .map(|l| {
            if l.starts_with("control-socket") {
                format!("control-socket = \"{}\"\n", socket.display())
            } else if l.starts_with("listen = [") {
                "listen = [\"127.0.0.1:0\"]\n".to_owned()
            } else if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{addrd_port}\"\n")
            } else if l.starts_with("ldif-file") {
                "ldif-file = \"example-org.ldif\"\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let addrd_config = write(&dir, "home/addrd.toml", config.as_bytes(), 0o644);
    write(&dir, "home/example-org.ldif", EXAMPLE_ORG.as_bytes(), 0o644);
    for key in ["addrd.key", "authority.key", "allocation.key"] {
        let out = run(&bins.addrd, &["genkey"], b"");
        write(&dir, &format!("home/{key}"), out.as_bytes(), 0o600);
    }
    let addrd_config = addrd_config.to_string_lossy().into_owned();
    let addrd_cmd = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &addrd_config]);
        run(&bins.addrd, &all, b"")
    };
    let mut command = Command::new(&bins.addrd);
    command.args(["run", "--config", &addrd_config]);
    let mut addrd = Process::start("addrd", command, dir.path("addrd.log"));
    addrd.wait_for_log("addrd running");
    let authority = addrd_cmd(&["authority-key"]).trim().to_owned();
    let addrd_key = std::fs::read(dir.path("home/addrd.key")).unwrap();
    let addrd_public = run(&bins.tunneld, &["pubkey"], &addrd_key)
        .trim()
        .to_owned();
    let address_of = |name: &str| {
        let out = addrd_cmd(&["show", name, "--json"]);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        let address = value
            .as_array()
            .and_then(|all| all.iter().find(|e| e["name"] == name))
            .and_then(|e| e["address"].as_str())
            .unwrap_or_else(|| panic!("no address for {name}: {value}"));
        Ipv6Addr::from_str(address).unwrap()
    };

    // The application server: app1's tunneld, wap-adapter, the page.
    let key = run(&bins.tunneld, &["genkey"], b"");
    write(&dir, "server/tunneld.key", key.as_bytes(), 0o600);
    let public = run(&bins.tunneld, &["pubkey"], key.as_bytes());
    let public = write(&dir, "server/tunneld.pub", public.as_bytes(), 0o644);
    let lease = dir.path("server/tunneld.lease");
    addrd_cmd(&[
        "issue-lease",
        "app1",
        "--kind",
        "system",
        "--public-key-file",
        &public.to_string_lossy(),
        "--out",
        &lease.to_string_lossy(),
    ]);
    let wiki = address_of("wiki");
    let alice = address_of("alice");
    let backend = PageBackend::start();
    let adapter_port = free_port();
    let server_port = free_port();
    let server_socket = dir.path("server/tunneld.sock");
    let server_config = format!(
        "role = \"server\"\nlisten = \"127.0.0.1:{server_port}\"\nmode = \"userspace\"\n\
         private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
         authority-key = \"{authority}\"\n\n\
         [[applications]]\nname = \"wiki\"\naddress = \"{wiki}\"\nports = [80]\n\
         backend = \"127.0.0.1:{adapter_port}\"\nallowed-groups = [\"staff\"]\n"
    );
    let config = write(&dir, "server/tunneld.toml", server_config.as_bytes(), 0o644);
    let mut command = Command::new(&bins.tunneld);
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&server_socket);
    let mut server = Process::start("server tunneld", command, dir.path("server.log"));
    server.wait_for_log("data plane running");
    let adapter_config = format!(
        "log-level = \"info\"\n\n[identity]\ntunneld-socket = \"{}\"\n\n\
         [[applications]]\nname = \"wiki\"\naddress = \"{wiki}\"\n\
         proxy-protocol-listen = \"127.0.0.1:{adapter_port}\"\n\
         backend.url = \"http://{}\"\nallowed-groups = [\"staff\"]\n",
        server_socket.display(),
        backend.address
    );
    let config = write(
        &dir,
        "server/wap-adapter.toml",
        adapter_config.as_bytes(),
        0o644,
    );
    let mut command = Command::new(&wap_adapter);
    command.arg("run").arg("--config").arg(&config);
    let mut adapter = Process::start("wap-adapter", command, dir.path("wap-adapter.log"));
    adapter.wait_for_log("wap-adapter running");

    // alice's terminal: a new key, `tunneld login`, then `tunneld run`
    // with its SOCKS5 proxy.
    let key = run(&bins.tunneld, &["genkey"], b"");
    write(&dir, "client/tunneld.key", key.as_bytes(), 0o600);
    write(
        &dir,
        "client/server.lease",
        &std::fs::read(&lease).unwrap(),
        0o644,
    );
    let socks_port = free_port();
    let client_socket = dir.path("client/tunneld.sock");
    let client_config = format!(
        "role = \"client\"\nlisten = \"127.0.0.1:0\"\nmode = \"userspace\"\n\
         private-key-file = \"tunneld.key\"\nlease-file = \"tunneld.lease\"\n\
         authority-key = \"{authority}\"\nsocks-listen = \"127.0.0.1:{socks_port}\"\n\n\
         [addrd]\nendpoint = \"127.0.0.1:{addrd_port}\"\npublic-key = \"{addrd_public}\"\n\n\
         [[peers]]\nlease-file = \"server.lease\"\nendpoint = \"127.0.0.1:{server_port}\"\n"
    );
    let config = write(&dir, "client/tunneld.toml", client_config.as_bytes(), 0o644);
    let config = config.to_string_lossy().into_owned();
    let client_socket_text = client_socket.to_string_lossy().into_owned();
    run(
        &bins.tunneld,
        &[
            "login",
            "--config",
            &config,
            "--user",
            "alice",
            "--password-stdin",
            "--timeout",
            "20",
            "--socket",
            &client_socket_text,
        ],
        b"alice-lab-password\n",
    );
    let mut command = Command::new(&bins.tunneld);
    command.args(["run", "--config", &config, "--socket", &client_socket_text]);
    let mut client = Process::start("client tunneld", command, dir.path("client.log"));
    client.wait_for_log("SOCKS5 proxy listening");
    client.wait_for_log("data plane running");
    let logs = || {
        format!(
            "{}\n{}\n{}\n{}\nbackend saw: {:?}",
            addrd.log(),
            server.log(),
            adapter.log(),
            client.log(),
            backend.seen()
        )
    };

    // Chromium: every request through the proxy, no name resolved by the
    // browser itself, nothing fetched in the background.
    let screenshot = artifacts().join("browser.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile = dir.path("chromium");
    std::fs::create_dir_all(&profile).unwrap();
    let dom_path = dir.path("chromium-dom.html");
    let url = format!("http://{WIKI_NAME}/");
    let mut command = Command::new(CHROMIUM);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--proxy-server=socks5://127.0.0.1:{socks_port}"))
        .arg("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg("--dump-dom")
        .arg(&url)
        .env("HOME", &profile)
        .env("XDG_CONFIG_HOME", profile.join("config"))
        .env("XDG_CACHE_HOME", profile.join("cache"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).unwrap())
        .stderr(std::fs::File::create(dir.path("chromium.log")).unwrap())
        .process_group(0);
    let browsing = Instant::now();
    let mut browser = Browser {
        child: command.spawn().unwrap(),
    };
    let mut exited = None;
    wait_until(
        "chromium to load the page and exit",
        DEADLINE,
        || {
            exited = browser.child.try_wait().unwrap();
            exited.is_some()
        },
        || {
            let chromium = std::fs::read_to_string(dir.path("chromium.log")).unwrap_or_default();
            format!("--- chromium ---\n{chromium}\n{}", logs())
        },
    );
    let browsed = browsing.elapsed();
    drop(browser);
    let chromium_log = std::fs::read_to_string(dir.path("chromium.log")).unwrap_or_default();
    let dom = std::fs::read_to_string(&dom_path).unwrap_or_default();
    assert!(
        exited.unwrap().success(),
        "chromium: {exited:?}\n{chromium_log}\n{}",
        logs()
    );

    // The page came from the application, greeting alice by the identity
    // the adapter took from the server's tunneld.
    assert!(
        dom.contains(PAGE_MARKER),
        "the DOM lacks the page's marker:\n{dom}\n--- chromium ---\n{chromium_log}\n{}",
        logs()
    );
    assert!(dom.contains("<b id=\"user\">alice</b>"), "{dom}");
    assert!(
        dom.contains(&format!("<code id=\"host\">{WIKI_NAME}</code>")),
        "{dom}"
    );
    assert!(
        dom.contains(&format!("<code id=\"address\">{alice}</code>")),
        "{dom}"
    );
    let seen = backend.seen();
    let page = seen
        .iter()
        .find(|r| r.line.starts_with("GET / "))
        .unwrap_or_else(|| panic!("the backend served no page: {seen:?}"));
    assert_eq!(page.header("x-permanet-user"), Some("alice"), "{page:?}");
    let address = alice.to_string();
    assert_eq!(page.header("x-permanet-address"), Some(address.as_str()));
    assert!(
        page.header("user-agent")
            .is_some_and(|agent| agent.contains("Chrome")),
        "{page:?}"
    );
    // By name: the browser gave the name to the proxy, the proxy asked
    // addrd's overlay DNS through the tunnel.
    let status: serde_json::Value = serde_json::from_str(&addrd_cmd(&["status"])).unwrap();
    assert!(
        status["login"]["homeagent.dns_queries"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "addrd answered no overlay DNS query: {status}"
    );

    // The screenshot: a PNG of the window's size.
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("{}: {e}\n{chromium_log}", screenshot.display()));
    assert_eq!(
        png_size(&png),
        Some((WIDTH, HEIGHT)),
        "{} is not a {WIDTH}x{HEIGHT} PNG ({} bytes)",
        screenshot.display(),
        png.len()
    );
    // The page's text makes it tens of kilobytes; a blank window of this
    // size compresses to a few.
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    // Straight to stderr, past the harness's capture: the artifact's place
    // shows in every run's output, not only in a failure's.
    let line = format!(
        "\n{test}: screenshot kept at {} ({} bytes); chromium {browsed:?}, whole test {:?}\n",
        screenshot.display(),
        png.len(),
        started.elapsed()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}
