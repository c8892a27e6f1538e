//! `tunneld login` against a real `addrd run`, then the lease it wrote
//! used to reach an application through two real tunnelds (issue #4:
//! "`tunneld login` against addrd end to end, lease used to reach an
//! application through tunneld").
//!
//! addrd runs the embedded directory on the example organisation
//! (`configs/ldap/example-org.ldif`). The server's system lease comes from
//! `addrd issue-lease`; alice's lease from `tunneld login`; the
//! application's backend sees alice's permanent address in the PROXY v2
//! header, the identity the whole chain vouches for. Then the home agent:
//! the client reaches addrd's overlay address through the tunnel, addrd
//! binds alice's address to the client's endpoint, and the server finds
//! her there with `tunneld where-is`.
//!
//! The `addrd` binary is the one Cargo built next to `tunneld` in the same
//! target directory: `cargo test --workspace` (what `scripts/test-all.sh`
//! runs) builds it fresh. Without it the test reports itself skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

#[allow(dead_code)] // each test binary uses part of it
mod common;

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use common::daemon::{free_tcp_addr, free_udp_addr, socks_connect, text, tunneld, Daemon};

const TUNNELD: &str = env!("CARGO_BIN_EXE_tunneld");
const ADDRD_CONFIG: &str = include_str!("../../configs/addrd.toml");
const EXAMPLE_ORG: &str = include_str!("../../configs/ldap/example-org.ldif");
const DEADLINE: Duration = Duration::from_secs(60);

/// The `addrd` binary built beside `tunneld`, if there is one.
fn addrd_binary() -> Option<PathBuf> {
    let path = Path::new(TUNNELD).with_file_name("addrd");
    path.is_file().then_some(path)
}

/// A directory of files for one process, removed when dropped.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }
}

/// Run a program with `stdin`, return its output.
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// A running `addrd run`; killed and reaped when dropped.
struct Addrd {
    child: std::process::Child,
}

impl Drop for Addrd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example organisation's addrd on loopback: config, keys, LDIF.
fn addrd_files(addrd: &Path, udp: SocketAddr) -> Files {
    let files = Files::new();
    let socket = files.path("run/addrd.sock");
    let config: String = ADDRD_CONFIG
        .lines()
        .map(|l| {
            if l.starts_with("control-socket") {
                format!("control-socket = \"{}\"\n", socket.display())
            } else if l.starts_with("listen = [") {
                "listen = [\"127.0.0.1:0\"]\n".to_owned()
            } else if l.starts_with("listen = ") {
                format!("listen = \"{udp}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    files.write("addrd.toml", config.as_bytes(), 0o644);
    files.write("ldap/example-org.ldif", EXAMPLE_ORG.as_bytes(), 0o644);
    for key in ["addrd.key", "authority.key", "allocation.key"] {
        let out = ok(run(addrd, &["genkey"], b""), "addrd genkey");
        files.write(key, out.as_bytes(), 0o600);
    }
    files
}

fn addrd_cmd(addrd: &Path, files: &Files, args: &[&str], stdin: &[u8]) -> Output {
    let config = files.path("addrd.toml");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    run(addrd, &all, stdin)
}

fn start_addrd(addrd: &Path, files: &Files) -> Addrd {
    let log = files.path("addrd.log");
    let child = Command::new(addrd)
        .args(["run", "--config"])
        .arg(files.path("addrd.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Addrd { child };
    let read_log = move || std::fs::read_to_string(&log).unwrap_or_default();
    netns_tests::wait_until(
        "addrd to run",
        DEADLINE,
        || {
            let exited = daemon.child.try_wait().unwrap();
            assert!(exited.is_none(), "addrd exited: {exited:?}\n{}", read_log());
            read_log().contains("addrd running")
        },
        &read_log,
    );
    daemon
}

/// The `address` of NAME as `addrd show NAME --json` gives it.
fn address_of(addrd: &Path, files: &Files, name: &str) -> Ipv6Addr {
    let out = ok(
        addrd_cmd(addrd, files, &["show", name, "--json"], b""),
        "addrd show",
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    let address = value
        .as_array()
        .and_then(|entities| entities.iter().find(|e| e["name"] == name))
        .and_then(|entity| entity["address"].as_str())
        .unwrap_or_else(|| panic!("no address for {name}: {value}"));
    Ipv6Addr::from_str(address).unwrap()
}

/// A TCP backend that, for each connection, reads one PROXY v2 header
/// (TCP over IPv6), reports its source address, then echoes until the
/// client closes.
fn proxy_echo_backend() -> (SocketAddr, mpsc::Receiver<Ipv6Addr>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let tx = tx.clone();
            std::thread::spawn(move || proxy_echo(conn.unwrap(), &tx));
        }
    });
    (addr, rx)
}

fn proxy_echo(mut conn: std::net::TcpStream, tx: &mpsc::Sender<Ipv6Addr>) {
    {
        let mut header = [0u8; 16];
        conn.read_exact(&mut header).unwrap();
        assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n", "PROXY v2 signature");
        let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
        let mut addresses = vec![0u8; len];
        conn.read_exact(&mut addresses).unwrap();
        assert_eq!(header[13], 0x21, "TCP over IPv6");
        let source: [u8; 16] = addresses[..16].try_into().unwrap();
        tx.send(Ipv6Addr::from(source)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n]).unwrap();
        }
    }
}

#[test]
fn tunneld_login_against_addrd_then_the_lease_reaches_an_application() {
    let Some(addrd) = addrd_binary() else {
        netns_tests::skip(
            "tunneld_login_against_addrd_then_the_lease_reaches_an_application",
            "the addrd binary is not built next to tunneld (run cargo test --workspace)",
        );
        return;
    };
    let addrd_udp = free_udp_addr();
    let home = addrd_files(&addrd, addrd_udp);
    let _addrd = start_addrd(&addrd, &home);
    let authority = ok(
        addrd_cmd(&addrd, &home, &["authority-key"], b""),
        "addrd authority-key",
    );
    let authority = authority.trim();
    let addrd_key = std::fs::read(home.path("addrd.key")).unwrap();
    let addrd_public = ok(tunneld(&["pubkey"], &addrd_key), "tunneld pubkey");
    let addrd_public = addrd_public.trim();

    // The server: its key, and its system lease from the administrator.
    let server = Files::new();
    let key = ok(tunneld(&["genkey"], b""), "tunneld genkey");
    server.write("tunneld.key", key.as_bytes(), 0o600);
    let public = ok(tunneld(&["pubkey"], key.as_bytes()), "tunneld pubkey");
    server.write("tunneld.pub", public.as_bytes(), 0o644);
    let lease = server.path("tunneld.lease");
    ok(
        addrd_cmd(
            &addrd,
            &home,
            &[
                "issue-lease",
                "app1",
                "--kind",
                "system",
                "--public-key-file",
                server.path("tunneld.pub").to_str().unwrap(),
                "--out",
                lease.to_str().unwrap(),
            ],
            b"",
        ),
        "addrd issue-lease",
    );
    let wiki = address_of(&addrd, &home, "wiki");
    let alice = address_of(&addrd, &home, "alice");
    let (backend, sources) = proxy_echo_backend();
    let server_udp = free_udp_addr();
    let server_config = format!(
        "role = \"server\"\nlisten = \"{server_udp}\"\nprivate-key-file = \"tunneld.key\"\n\
         authority-key = \"{authority}\"\nlease-file = \"tunneld.lease\"\nmode = \"userspace\"\n\n\
         [[applications]]\nname = \"wiki\"\naddress = \"{wiki}\"\nports = [80]\n\
         backend = \"{backend}\"\nallowed-groups = [\"staff\"]\n"
    );
    let path = server.write("tunneld.toml", server_config.as_bytes(), 0o644);
    let mut server_daemon = Daemon::start(
        &path,
        &server.path("tunneld.sock"),
        &server.path("stderr.log"),
    );

    // The terminal: a new key, a login with alice's password, then run.
    let client = Files::new();
    let key = ok(tunneld(&["genkey"], b""), "tunneld genkey");
    client.write("tunneld.key", key.as_bytes(), 0o600);
    client.write("server.lease", &std::fs::read(&lease).unwrap(), 0o644);
    let socks = free_tcp_addr();
    let client_config = format!(
        "role = \"client\"\nlisten = \"127.0.0.1:0\"\nprivate-key-file = \"tunneld.key\"\n\
         authority-key = \"{authority}\"\nlease-file = \"tunneld.lease\"\nmode = \"userspace\"\n\
         socks-listen = \"{socks}\"\n\n\
         [addrd]\nendpoint = \"{addrd_udp}\"\npublic-key = \"{addrd_public}\"\n\n\
         [[peers]]\nlease-file = \"server.lease\"\nendpoint = \"{server_udp}\"\n"
    );
    let config = client.write("tunneld.toml", client_config.as_bytes(), 0o644);
    let login = tunneld(
        &[
            "login",
            "--config",
            config.to_str().unwrap(),
            "--user",
            "alice",
            "--password-stdin",
            "--socket",
            client.path("tunneld.sock").to_str().unwrap(),
        ],
        b"alice-lab-password\n",
    );
    ok(login, "tunneld login");
    let mut client_daemon = Daemon::start(
        &config,
        &client.path("tunneld.sock"),
        &client.path("stderr.log"),
    );
    let status = client_daemon.status();
    let addresses = status["interface"]["addresses"].to_string();
    assert!(
        addresses.contains(&alice.to_string()),
        "the client runs on alice's permanent address {alice}: {status}"
    );

    // Through the SOCKS5 proxy, the tunnel and the server's application
    // forwarding to the backend, which sees alice's permanent address.
    let (mut conn, reply) = socks_connect(socks, &wiki.to_string(), 80);
    assert_eq!(
        reply[1],
        0,
        "SOCKS5 reply {reply:?}\n{}",
        client_daemon.log()
    );
    let message = b"hello from alice's terminal, through permanet";
    conn.write_all(message).unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, message);
    let source = sources.recv_timeout(DEADLINE).unwrap();
    assert_eq!(source, alice, "the backend sees alice's permanent address");

    // By name: no lease this node holds names the wiki (the netmap carries
    // app1's system lease), so the SOCKS5 resolver asks addrd's DNS
    // through the tunnel; an unknown name is host unreachable.
    let (mut conn, reply) = socks_connect(socks, "WIKI.apps.permanet.internal.", 80);
    assert_eq!(
        reply[1],
        0,
        "SOCKS5 reply {reply:?}\n{}",
        client_daemon.log()
    );
    conn.write_all(b"by name").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"by name");
    assert_eq!(sources.recv_timeout(DEADLINE).unwrap(), alice);
    let (_none, reply) = socks_connect(socks, "nobody.apps.permanet.internal", 80);
    assert_eq!(reply[1], 0x04, "unknown name {reply:?}");
    let addrd_status: serde_json::Value = serde_json::from_str(&ok(
        addrd_cmd(&addrd, &home, &["status"], b""),
        "addrd status",
    ))
    .unwrap();
    assert_eq!(
        addrd_status["login"]["homeagent.dns_queries"], 2,
        "both names were asked of addrd's DNS: {addrd_status}"
    );

    // addrd's home agent: the netmap made addrd a peer, reached at
    // addrd.endpoint. A TCP connection to addrd's overlay address gets its
    // reset (SOCKS 0x05) through the tunnel, and that traffic gives addrd
    // alice's binding.
    let addrd_status: serde_json::Value = serde_json::from_str(&ok(
        addrd_cmd(&addrd, &home, &["status"], b""),
        "addrd status",
    ))
    .unwrap();
    let overlay = addrd_status["overlay_address"].as_str().unwrap().to_owned();
    let (_refused, reply) = socks_connect(socks, &overlay, 53);
    assert_eq!(
        reply[1],
        0x05,
        "addrd's overlay address refuses TCP {reply:?}\n{}",
        client_daemon.log()
    );
    let mut bound = serde_json::Value::Null;
    netns_tests::wait_until(
        "addrd to bind alice's address",
        DEADLINE,
        || {
            let out = ok(
                addrd_cmd(&addrd, &home, &["bindings", "--json"], b""),
                "addrd bindings",
            );
            let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
            match all.into_iter().find(|b| b["name"] == "alice") {
                Some(b) => {
                    bound = b;
                    true
                }
                None => false,
            }
        },
        || client_daemon.log(),
    );
    assert_eq!(bound["address"], alice.to_string());

    // The server locates alice through addrd (`tunneld where-is` with the
    // server's key and lease, and the [addrd] table).
    let where_config = format!(
        "{server_config}\n[addrd]\nendpoint = \"{addrd_udp}\"\npublic-key = \"{addrd_public}\"\n"
    );
    let where_config = server.write("where-is.toml", where_config.as_bytes(), 0o644);
    let found = ok(
        tunneld(
            &[
                "where-is",
                "--config",
                where_config.to_str().unwrap(),
                &alice.to_string(),
                "--json",
            ],
            b"",
        ),
        "tunneld where-is",
    );
    let found: serde_json::Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found["bound"], true, "{found}");
    assert_eq!(found["name"], "alice");
    assert_eq!(found["endpoint"], bound["endpoint"], "{found} vs {bound}");

    client_daemon.stop();
    server_daemon.stop();
}
