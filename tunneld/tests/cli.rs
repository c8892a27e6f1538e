//! The `tunneld` binary, run as a user would: exit codes, stdout and
//! stderr of every subcommand.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use netns_tests::{is_root, unix_now};
use overlay_proto::counters::DropReason;
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::EntityKind;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::daemon::{
    authority_key, free_tcp_addr, silent_peer, socks_connect, text, tunneld, Daemon, Pair, Setup,
    BIN, CLIENT_PREFIX, SERVER_PREFIX, TIMEOUT,
};

const CLIENT_EXAMPLE: &str = include_str!("../../configs/tunneld-client.toml");
const SERVER_EXAMPLE: &str = include_str!("../../configs/tunneld-server.toml");

/// Writes `config` (with the test authority's key in place of the one it
/// has) and `setup`'s lease for `kind` and `prefix` under the names the
/// reference configs use.
fn install(setup: &Setup, config: &str, kind: EntityKind, prefix: &str) -> PathBuf {
    let authority = authority_key();
    let config: String = config
        .lines()
        .map(|l| {
            if l.starts_with("authority-key") {
                format!("authority-key = \"{authority}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    setup.write_own_lease(kind, prefix, 1, 3600);
    setup.write("tunneld.toml", config.as_bytes(), 0o644)
}

/// The reference server config, installed in a new setup.
fn install_server() -> (Setup, PathBuf) {
    let setup = Setup::new(0x44);
    let path = install(&setup, SERVER_EXAMPLE, EntityKind::System, SERVER_PREFIX);
    (setup, path)
}

#[test]
fn genkey_pubkey_round_trip() {
    let out = tunneld(&["genkey"], b"");
    assert!(out.status.success());
    let private = text(&out.stdout);
    assert_eq!(private.len(), 45, "{private:?}");
    assert!(private.ends_with("=\n"));

    let out = tunneld(&["pubkey"], private.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = PublicKey::from_str(private.trim()).unwrap().0;
    let expected = StaticKeypair::from_private(bytes).public();
    assert_eq!(text(&out.stdout), format!("{expected}\n"));

    // Two keys are different.
    let again = text(&tunneld(&["genkey"], b"").stdout);
    assert_ne!(again, private);
}

#[test]
fn pubkey_refuses_garbage() {
    for input in [&b"not a key\n"[..], b"", &[0xff, 0xfe][..]] {
        let out = tunneld(&["pubkey"], input);
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let err = text(&out.stderr);
        assert!(err.contains("private key on stdin"), "{err}");
    }
}

#[test]
fn check_config_accepts_both_reference_configs() {
    let (_server, path) = install_server();
    let out = tunneld(&["check-config", path.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("2 application(s)"), "{stdout}");

    let client = Setup::new(0x44);
    let path = install(&client, CLIENT_EXAMPLE, EntityKind::User, CLIENT_PREFIX);
    client.write_peer_lease("peers/server.lease", 0x55, SERVER_PREFIX);
    let out = tunneld(&["check-config", path.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("1 configured peer(s)"), "{stdout}");
    assert!(stdout.contains("SOCKS5 on 127.0.0.1:1080"), "{stdout}");
}

#[test]
fn world_readable_key_is_refused_naming_file_and_mode() {
    let (setup, path) = install_server();
    let key = setup.path("tunneld.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["run", "--config", path.to_str().unwrap()],
    ] {
        let out = tunneld(&args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        let expected = format!(
            "{}: private-key-file: {}: mode 0644 is too open",
            path.display(),
            key.display()
        );
        assert!(err.contains(&expected), "{err}");
    }
}

#[test]
fn config_errors_name_file_key_and_problem() {
    let (setup, path) = install_server();
    let good = fs::read_to_string(&path).unwrap();
    let cases = [
        (
            good.replace("mtu = 1380", "mtu = 9000"),
            "mtu: 9000 is out of range 1280..=1500",
        ),
        (
            good.replace("2002:b16:212c:2::22", "2002:b16:212c:3::5"),
            "applications[1].address: 2002:b16:212c:3::5 is outside this node's prefix 2002:b16:212c:2::/64",
        ),
        (
            good.replace("log-level = \"info\"", "log-level = \"info\"\nsocks-listen = \"127.0.0.1:1080\""),
            "socks-listen: only valid with role = \"client\"",
        ),
        (
            good.replace("mode = \"userspace\"", "mode = \"kernel\""),
            "unknown variant `kernel`",
        ),
    ];
    for (config, fragment) in cases {
        fs::write(&path, config).unwrap();
        let out = tunneld(&["check-config", path.to_str().unwrap()], b"");
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("{}: ", path.display())), "{err}");
        assert!(err.contains(fragment), "{err}");
    }

    let missing = setup.path("absent.toml");
    let out = tunneld(&["check-config", missing.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("{}: No such file", missing.display())));
}

#[test]
fn run_in_tun_mode_without_cap_net_admin_fails_naming_the_cause() {
    let (setup, path) = install_server();
    let config = fs::read_to_string(&path).unwrap().replace(
        "mode = \"userspace\"",
        "mode = \"tun\"\ndangerous-esp-keylog = \"keys.log\"",
    );
    fs::write(&path, config).unwrap();
    let socket = setup.path("tunneld.sock");
    let run = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--socket",
        socket.to_str().unwrap(),
    ];
    // As root, without CAP_NET_ADMIN (dropped from the bounding set, so the
    // exec'd daemon does not get it): never a device on the host.
    let out = if is_root() {
        Command::new("setpriv")
            .args(["--bounding-set=-net_admin", "--", BIN])
            .args(run)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    } else {
        tunneld(&run, b"")
    };
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // EPERM, or ENOENT where there is no /dev/net/tun at all.
    assert!(err.contains("creating TUN device permanet0: "), "{err}");
    if Path::new("/dev/net/tun").exists() {
        assert!(
            err.contains("tunneld: TUN mode needs root or CAP_NET_ADMIN"),
            "{err}"
        );
    }
    // The summary names the identity the node was built with.
    assert!(err.contains(&setup.keypair.public().to_string()), "{err}");
    assert!(err.contains("2002:b16:212c:2::/64"), "{err}");
    assert!(err.contains("DANGER: dangerous-esp-keylog"), "{err}");
    assert!(!socket.exists());
}

#[test]
fn status_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tunneld.sock");
    let s = socket.to_str().unwrap();

    let out = tunneld(&["status", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("tunneld status: no daemon running (control socket {s} not found)\n")
    );

    let out = tunneld(&["status", "--json", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["socket_found"], false);
    assert_eq!(json["socket"], s);

    // A file nobody listens on.
    fs::write(&socket, b"").unwrap();
    let out = tunneld(&["status", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("tunneld status: no daemon running (control socket {s} refuses connections)\n")
    );

    let out = tunneld(&["status"], b"");
    if !Path::new("/run/permanet/tunneld.sock").exists() {
        assert!(text(&out.stderr).contains("/run/permanet/tunneld.sock not found"));
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [&["bogus"][..], &["run"], &["check-config"], &[]] {
        assert_eq!(tunneld(args, b"").status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn run_serves_status_until_sigterm() {
    let setup = Setup::new(0x44);
    // The peer's endpoint: a loopback socket that never answers.
    let (_peer_socket, endpoint) = silent_peer();
    let config = CLIENT_EXAMPLE
        .replace("listen = \"0.0.0.0:4500\"", "listen = \"127.0.0.1:0\"")
        .replace("203.0.113.10:4500", &endpoint.to_string());
    assert!(config.contains("127.0.0.1:0"));
    let path = install(&setup, &config, EntityKind::User, CLIENT_PREFIX);
    let peer = setup.write_peer_lease("peers/server.lease", 0x55, SERVER_PREFIX);
    // The daemon creates the socket's directory.
    let socket = setup.path("run/tunneld.sock");
    let mut daemon = Daemon::start(&path, &socket, &setup.path("stderr.log"));

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o700);
    assert_eq!(mode(&socket), 0o600);
    assert!(daemon.log().contains("data plane running"));

    let s = socket.to_str().unwrap();
    let out = tunneld(&["status", "--json", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let interface = &json["interface"];
    assert_eq!(interface["name"], "node");
    assert_eq!(
        interface["public_key"],
        setup.keypair.public().to_string().as_str()
    );
    assert_eq!(
        interface["addresses"],
        serde_json::json!(["2002:b16:212c:1::1234/128"])
    );
    assert_eq!(interface["role"], "client");
    assert_eq!(interface["mode"], "userspace");
    let port = interface["listen_port"].as_u64().unwrap();
    assert_ne!(port, 0);
    assert_eq!(interface["listen"], format!("127.0.0.1:{port}").as_str());
    let peers = json["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{json}");
    assert_eq!(peers[0]["public_key"], peer.to_string().as_str());
    assert_eq!(peers[0]["name"], "srv");
    assert_eq!(peers[0]["lease_prefix"], "2002:b16:212c:2::/64");
    assert_eq!(peers[0]["endpoint"], endpoint.to_string().as_str());
    assert_eq!(peers[0]["latest_handshake"], serde_json::Value::Null);
    assert_eq!(peers[0]["rx_bytes"], 0);
    assert_eq!(peers[0]["tx_bytes"], 0);
    // Every drop reason is there by its label, with its count.
    let drops = json["drops"].as_object().unwrap();
    assert_eq!(drops.len(), DropReason::ALL.len());
    for reason in DropReason::ALL {
        assert_eq!(drops[reason.as_str()], 0, "{reason}");
    }
    assert_eq!(json["counters"]["handshakes_completed"], 0);
    assert_eq!(json["dataplane"]["no_route"], 0);
    for counter in [
        "too_big",
        "prohibited",
        "icmp_sent",
        "icmp_suppressed",
        "keylog_errors",
    ] {
        assert_eq!(
            json["dataplane"][counter], 0,
            "{counter} missing from status"
        );
    }
    // The userspace stack's counters, by name.
    for counter in [
        "connected",
        "forwarded",
        "connects_failed_by_icmp",
        "udp_flows_evicted",
    ] {
        assert_eq!(
            json["userspace"][counter], 0,
            "{counter} missing from status"
        );
    }
    let now = json["now"].as_u64().unwrap();
    let wall = unix_now();
    assert!(now.abs_diff(wall) < 60, "{now} vs {wall}");

    let out = tunneld(&["status", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    for line in [
        "interface: node\n".to_owned(),
        format!("  public key: {}\n", setup.keypair.public()),
        format!("  listening port: {port}\n"),
        "  addresses: 2002:b16:212c:1::1234/128\n".to_owned(),
        format!("\npeer: {peer}\n"),
        "  name: srv\n".to_owned(),
        format!("  endpoint: {endpoint}\n"),
        "  allowed ips: 2002:b16:212c:2::/64\n".to_owned(),
        "  transfer: 0 B received, 0 B sent\n".to_owned(),
    ] {
        assert!(human.contains(&line), "{line:?} not in\n{human}");
    }
    assert!(!human.contains("drops:"), "{human}");

    // A second daemon on the same socket is refused; the first keeps it.
    let out = tunneld(
        &["run", "--config", path.to_str().unwrap(), "--socket", s],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("in use by a running daemon"));
    assert!(socket.exists());

    daemon.stop();
    assert!(!socket.exists());
    assert!(daemon.log().contains("SIGTERM"), "{}", daemon.log());
    let out = tunneld(&["status", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn run_replaces_a_stale_socket() {
    let (setup, path) = install_server();
    let config = fs::read_to_string(&path)
        .unwrap()
        .replace("listen = \"0.0.0.0:4500\"", "listen = \"127.0.0.1:0\"");
    fs::write(&path, config).unwrap();
    let socket = setup.path("tunneld.sock");
    // Left behind by a daemon that was killed.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut daemon = Daemon::start(&path, &socket, &setup.path("stderr.log"));
    let out = tunneld(
        &["status", "--json", "--socket", socket.to_str().unwrap()],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["interface"]["role"], "server");
    assert_eq!(json["peers"], serde_json::json!([]));
    daemon.stop();
    assert!(!socket.exists());
}

#[test]
fn two_daemons_carry_a_socks5_connection_to_an_application_backend() {
    use std::io::Read as _;
    use std::net::{Ipv6Addr, TcpListener, TcpStream};

    const APP: &str = "2002:b16:212c:2::80";
    const USER: &str = "2002:b16:212c:1::1234";
    // The application's backend: records the PROXY v2 header, echoes.
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    // Two connections: the SOCKS5 one, then the port forward's.
    let backend_thread = std::thread::spawn(move || {
        let mut headers = Vec::new();
        for _ in 0..2 {
            let (mut conn, _) = backend.accept().unwrap();
            conn.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut header = [0u8; 52];
            conn.read_exact(&mut header).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                conn.write_all(&buf[..n]).unwrap();
            }
            headers.push(header);
        }
        headers
    });

    let socks_addr = free_tcp_addr();
    let forward = free_tcp_addr();
    let mut pair = Pair::start(
        0x61,
        &format!(
            "\n[[applications]]\nname = \"echo\"\naddress = \"{APP}\"\nports = [8080]\n\
             backend = \"{backend_addr}\""
        ),
        &format!(
            "socks-listen = \"{socks_addr}\"\noverlay-zone = \"corp.example\"\n\n\
             [[port-forwards]]\nlisten = \"{forward}\"\nto = \"[{APP}]:8080\"\n"
        ),
    );

    // SOCKS5: no-auth greeting, then CONNECT [APP]:8080.
    let (mut socks, reply) = socks_connect(socks_addr, APP, 8080);
    assert_eq!(
        &reply[..4],
        &[5, 0, 0, 4],
        "SOCKS5 CONNECT refused: {reply:?}\n{}\n{}",
        pair.client_daemon.log(),
        pair.server_daemon.log()
    );

    // 1 MiB through both daemons and back.
    let sent: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut writer = socks.try_clone().unwrap();
    let to_send = sent.clone();
    let writer_thread = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut received = Vec::new();
    socks.read_to_end(&mut received).unwrap();
    writer_thread.join().unwrap();
    assert!(
        received == sent,
        "echo differs: {} bytes back of {}",
        received.len(),
        sent.len()
    );

    // The port forward carries a connection the same way, half-close
    // included.
    let mut forward = TcpStream::connect(forward).unwrap();
    forward.set_read_timeout(Some(TIMEOUT)).unwrap();
    forward.write_all(b"through the port forward").unwrap();
    forward.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    forward.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"through the port forward");

    // Overlay names in the configured zone: the server system ("node")
    // resolves to its ::1, where nothing listens on 8080, so the overlay
    // connect is refused (0x05); a name outside the zone is not allowed
    // (0x02) and never looked up.
    for (name, code) in [
        ("node.systems.corp.example", 0x05),
        ("node.systems.permanet.internal", 0x02),
        ("nobody.users.corp.example", 0x04),
    ] {
        let (_, reply) = socks_connect(socks_addr, name, 8080);
        assert_eq!(reply[1], code, "{name}: {reply:?}");
    }

    // The backend learned who connected, from the overlay, not the socket.
    let headers = backend_thread.join().unwrap();
    assert_eq!(
        headers[0][..48],
        headers[1][..48],
        "same source and destination"
    );
    let header = headers[0];
    assert_eq!(&header[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(&header[16..32], &USER.parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(&header[32..48], &APP.parse::<Ipv6Addr>().unwrap().octets());
    assert_eq!(&header[50..52], &8080u16.to_be_bytes());

    pair.stop();
}
