//! End to end through real daemons on loopback: a user's tunneld (client,
//! userspace mode, SOCKS5) reaches an application through the server's
//! tunneld (userspace mode), which forwards the connection with a PROXY v2
//! header to `wap-adapter run`, which asks that tunneld's control socket who
//! the source is and proxies to a test backend. The backend must see the
//! user's lease name, address and groups, never the header the user's
//! client injected; a user outside the allowed groups must get 403. Then
//! `wap-adapter` must exit 0 on SIGTERM.
//!
//! The `tunneld` binary is the one Cargo built next to `wap-adapter` in the
//! same target directory: `cargo test --workspace` (what
//! `scripts/test-all.sh` runs) builds it. Without it the test reports
//! itself skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use netns_tests::{skip, wait_until, NodeFiles};
use overlay_proto::lease::EntityKind;

const WAP_ADAPTER: &str = env!("CARGO_BIN_EXE_wap-adapter");
const DEADLINE: Duration = Duration::from_secs(30);
const SERVER_PREFIX: &str = "2002:b16:212c:2::/64";
const APP: &str = "2002:b16:212c:2::10";
const ALICE: &str = "2002:b16:212c:1::1234";
const BOB: &str = "2002:b16:212c:1::4321";

fn tunneld_binary() -> Option<PathBuf> {
    let path = Path::new(WAP_ADAPTER).with_file_name("tunneld");
    path.is_file().then_some(path)
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A child process, SIGKILLed and reaped when dropped unless it exited.
struct Process {
    child: Option<Child>,
    log: PathBuf,
    what: &'static str,
}

impl Process {
    fn spawn(what: &'static str, mut command: Command, log: PathBuf) -> Process {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process {
            child: Some(child),
            log,
            what,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&mut self, needle: &str) {
        let log = self.log.clone();
        let what = self.what;
        let child = self.child.as_mut().unwrap();
        wait_until(
            &format!("{what}: {needle:?} in its log"),
            DEADLINE,
            || {
                let exited = child.try_wait().unwrap();
                assert!(
                    exited.is_none(),
                    "{what} exited: {exited:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(needle)
            },
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
    }

    fn terminate(&mut self) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let mut exited = None;
        wait_until(
            &format!("{} to exit", self.what),
            DEADLINE,
            || {
                exited = child.try_wait().unwrap();
                exited.is_some()
            },
            String::new,
        );
        self.child = None;
        exited.unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tunneld(binary: &Path, files: &NodeFiles, body: &str) -> Process {
    let config = files.config(body);
    let mut command = Command::new(binary);
    command
        .args(["run", "--config"])
        .arg(config)
        .arg("--socket")
        .arg(files.path("tunneld.sock"));
    let mut process = Process::spawn("tunneld", command, files.path("stderr.log"));
    process.wait_for_log("data plane running");
    process
}

/// A backend that answers every request `200 ok` and sends each request
/// head (lowercased) down the channel.
fn backend() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            if tx.send(head).is_err() {
                return;
            }
        }
    });
    (address, rx)
}

/// SOCKS5 CONNECT to `[host]:port` through `socks`; the stream.
fn socks_connect(socks: SocketAddr, host: Ipv6Addr, port: u16) -> TcpStream {
    let mut conn = TcpStream::connect(socks).unwrap();
    conn.set_read_timeout(Some(DEADLINE)).unwrap();
    conn.write_all(&[5, 1, 0]).unwrap();
    let mut method = [0u8; 2];
    conn.read_exact(&mut method).unwrap();
    assert_eq!(method, [5, 0]);
    let mut request = vec![5, 1, 0, 4];
    request.extend_from_slice(&host.octets());
    request.extend_from_slice(&port.to_be_bytes());
    conn.write_all(&request).unwrap();
    let mut reply = [0u8; 22];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 reply {reply:?}");
    conn
}

/// A user's tunneld (seed, name, address) with the server as its peer;
/// returns its files, its process and its SOCKS5 address.
fn user(
    binary: &Path,
    seed: u8,
    name: &str,
    address: &str,
    groups: &[&str],
    server: &NodeFiles,
    server_udp: SocketAddr,
) -> (NodeFiles, Process, SocketAddr) {
    let files = NodeFiles::new(
        [seed; 32],
        EntityKind::User,
        &format!("{address}/128"),
        name,
        groups,
    );
    files.write(
        "server.lease",
        &std::fs::read(server.path("tunneld.lease")).unwrap(),
        0o644,
    );
    let socks = free_tcp();
    let process = tunneld(
        binary,
        &files,
        &format!(
            "role = \"client\"\nlisten = \"127.0.0.1:0\"\nmode = \"userspace\"\nsocks-listen = \"{socks}\"\n\n\
             [[peers]]\nlease-file = \"server.lease\"\nendpoint = \"{server_udp}\"\n"
        ),
    );
    (files, process, socks)
}

fn http_get(socks: SocketAddr) -> String {
    let mut conn = socks_connect(socks, APP.parse().unwrap(), 80);
    conn.write_all(b"GET /page HTTP/1.1\r\nHost: wiki\r\nX-Permanet-User: root\r\nX-Permanet-Groups: staff\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn identity_from_a_real_tunneld_in_userspace_mode_reaches_the_backend() {
    let Some(binary) = tunneld_binary() else {
        skip(
            "identity_from_a_real_tunneld_in_userspace_mode_reaches_the_backend",
            "no tunneld binary beside wap-adapter (cargo build -p tunneld, or cargo test --workspace)",
        );
        return;
    };
    let (backend, heads) = backend();
    let adapter_listen = free_tcp();

    let server = NodeFiles::new([0x51; 32], EntityKind::System, SERVER_PREFIX, "srv", &[]);
    let server_udp = free_udp();
    let _server = tunneld(
        &binary,
        &server,
        &format!(
            "role = \"server\"\nlisten = \"{server_udp}\"\nmode = \"userspace\"\n\n\
             [[applications]]\nname = \"wiki\"\naddress = \"{APP}\"\nports = [80]\nbackend = \"{adapter_listen}\"\n"
        ),
    );

    let config = server.write(
        "wap-adapter.toml",
        format!(
            "log-level = \"debug\"\n[identity]\ntunneld-socket = \"tunneld.sock\"\n\n\
             [[applications]]\nname = \"wiki\"\naddress = \"{APP}\"\nproxy-protocol-listen = \"{adapter_listen}\"\n\
             backend.url = \"http://{backend}/\"\nallowed-groups = [\"staff\"]\n"
        )
        .as_bytes(),
        0o644,
    );
    let mut command = Command::new(WAP_ADAPTER);
    command.args(["run", "--config"]).arg(&config);
    let mut adapter = Process::spawn("wap-adapter", command, server.path("wap-adapter.log"));
    adapter.wait_for_log("wap-adapter running");

    let (_alice_files, _alice, alice_socks) = user(
        &binary,
        0x52,
        "alice",
        ALICE,
        &["staff", "wap users"],
        &server,
        server_udp,
    );
    let answer = http_get(alice_socks);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{answer}\n{}",
        adapter.log()
    );
    assert!(answer.ends_with("ok"), "{answer}");
    let head = heads.recv_timeout(DEADLINE).unwrap();
    assert!(head.contains("x-permanet-user: alice\r\n"), "{head}");
    assert!(
        head.contains(&format!("x-permanet-address: {ALICE}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("x-permanet-groups: staff,wap%20users\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("x-forwarded-for: {ALICE}\r\n")),
        "{head}"
    );
    assert!(
        !head.contains("root"),
        "an injected identity reached the backend: {head}"
    );
    assert_eq!(head.matches("x-permanet-groups").count(), 1, "{head}");

    // bob's lease has no allowed group: 403, and the backend sees nothing.
    let (_bob_files, _bob, bob_socks) =
        user(&binary, 0x53, "bob", BOB, &["guests"], &server, server_udp);
    let answer = http_get(bob_socks);
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "{answer}\n{}",
        adapter.log()
    );
    assert!(
        heads.recv_timeout(Duration::from_millis(300)).is_err(),
        "the backend saw bob's request"
    );

    let status = adapter.terminate();
    assert_eq!(status.code(), Some(0), "{}", adapter.log());
    let log = adapter.log();
    assert!(log.contains("forbidden_group=1"), "{log}");
    // alice's two injected headers; bob was refused before they were looked at.
    assert!(log.contains("injected_identity_headers=2"), "{log}");
}
