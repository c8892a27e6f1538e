//! The `wap-adapter` command line as an operator meets it: `check-config`
//! on the reference config and on broken ones, `run` on a config whose
//! listener cannot be bound.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod tunneld_common;

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wap-adapter");

fn wap_adapter(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_config_accepts_the_reference_config() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/wap-adapter.toml");
    let out = wap_adapter(&["check-config", reference.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with(": valid (2 applications)\n"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_config_names_the_file_the_key_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (config, expected) in [
        (
            "[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nbackend.url = \"ftp://x/\"\n",
            "applications[0].backend.url: \"ftp://x/\": only http:// backends are supported",
        ),
        (
            "[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nproxy-protocol-listen = \"0.0.0.0:8080\"\nbackend.url = \"http://x/\"\n",
            "applications[0].proxy-protocol-listen: 0.0.0.0:8080 is not a loopback address",
        ),
        ("log-level = \"loud\"\n", "unknown variant `loud`"),
    ] {
        std::fs::write(&path, config).unwrap();
        let out = wap_adapter(&["check-config", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{config}");
        let stderr = text(&out.stderr);
        assert!(stderr.starts_with(&format!("{}: ", path.display())), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    let out = wap_adapter(&["check-config", "/nonexistent/wap-adapter.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_fails_when_a_listener_cannot_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let path = dir.path().join("wap-adapter.toml");
    std::fs::write(
        &path,
        format!("[[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nproxy-protocol-listen = \"{address}\"\nbackend.url = \"http://127.0.0.1:1/\"\n"),
    )
    .unwrap();
    let out = wap_adapter(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("application wiki: HTTP listener {address}")),
        "{stderr}"
    );
}

/// A fake tunneld control socket (a thread) that knows one lease: alice,
/// `2002:b16:212c:1::1234`, in group `staff`.
fn fake_tunneld(socket: &Path) {
    tunneld_common::fake_tunneld(socket, |a| {
        (a == "2002:b16:212c:1::1234"
            .parse::<std::net::Ipv6Addr>()
            .unwrap())
        .then_some(("alice", "staff"))
    });
}

/// One request from alice through a PROXY v2 header; the status code.
fn status_of_request(address: std::net::SocketAddr) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut header = vec![
        0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x21, 0x00,
        0x24,
    ];
    header.extend_from_slice(
        &"2002:b16:212c:1::1234"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    header.extend_from_slice(&"2002::10".parse::<std::net::Ipv6Addr>().unwrap().octets());
    header.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
    stream.write_all(&header).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.get(9..12).unwrap().parse().unwrap()
}

#[test]
fn sighup_reloads_allowed_groups_and_refuses_restart_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    fake_tunneld(&dir.path().join("tunneld.sock"));
    let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_address = backend.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in backend.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = |groups: &str, timeout: u64| {
        format!(
            "[identity]\ntunneld-socket = \"tunneld.sock\"\n[limits]\nbackend-timeout = {timeout}\n\
             [[applications]]\nname = \"wiki\"\naddress = \"2002::10\"\nproxy-protocol-listen = \"{listen}\"\n\
             backend.url = \"http://{backend_address}/\"\nallowed-groups = [{groups}]\n"
        )
    };
    let path = dir.path().join("wap-adapter.toml");
    std::fs::write(&path, config("\"staff\"", 30)).unwrap();
    let log = dir.path().join("stderr.log");
    let mut daemon = Daemon(
        Command::new(BIN)
            .args(["run", "--config", path.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_log = |needle: &str, count: usize| {
        netns_tests::wait_until(
            needle,
            std::time::Duration::from_secs(30),
            || read_log().matches(needle).count() >= count,
            read_log,
        )
    };
    wait_log("wap-adapter running", 1);
    assert_eq!(status_of_request(listen), 200);

    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success())
    };
    std::fs::write(&path, config("\"admins\"", 30)).unwrap();
    hup(pid);
    wait_log("config reloaded", 1);
    assert_eq!(status_of_request(listen), 403, "{}", read_log());

    // A restart-only key: refused, the running config (admins) stays.
    std::fs::write(&path, config("\"staff\"", 31)).unwrap();
    hup(pid);
    wait_log("reload refused", 1);
    assert!(
        read_log().contains("limits: changed; restart wap-adapter to apply it"),
        "{}",
        read_log()
    );
    assert_eq!(status_of_request(listen), 403);

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut exited = None;
    netns_tests::wait_until(
        "wap-adapter to exit",
        std::time::Duration::from_secs(30),
        || {
            exited = daemon.0.try_wait().unwrap();
            exited.is_some()
        },
        read_log,
    );
    assert_eq!(exited.unwrap().code(), Some(0), "{}", read_log());
}

/// A child process, killed and reaped when the test ends (also when it
/// fails) unless it exited.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
