//! The `tunneld` binary, run as a user would: exit codes, stdout and
//! stderr of every subcommand.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority};
use overlay_proto::time::UnixTime;

const BIN: &str = env!("CARGO_BIN_EXE_tunneld");
const CLIENT_EXAMPLE: &str = include_str!("../../configs/tunneld-client.toml");
const SERVER_EXAMPLE: &str = include_str!("../../configs/tunneld-server.toml");

fn tunneld(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A directory holding a config, its key and its leases, signed by a test
/// authority, valid around the real current time (the binary reads the
/// real clock).
struct Setup {
    dir: tempfile::TempDir,
    authority: LeaseAuthority,
    keypair: StaticKeypair,
}

impl Setup {
    fn new() -> Self {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            authority: LeaseAuthority::from_seed([0x33; 32]),
            keypair: StaticKeypair::from_private([0x44; 32]),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = self.path(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn lease(&self, kind: EntityKind, prefix: &str, key: PublicKey, name: &str) -> Vec<u8> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let lease = Lease {
            kind,
            serial: 1,
            not_before: UnixTime::from_secs(now - 60),
            not_after: UnixTime::from_secs(now + 3600),
            public_key: key.0,
            prefix: prefix.parse().unwrap(),
            name: name.to_owned(),
            dn: format!("cn={name},dc=example,dc=org"),
            groups: vec!["staff".to_owned()],
        };
        self.authority.sign(&lease).unwrap().into_bytes()
    }

    /// Writes `config` (with this setup's authority key in place of the
    /// one it has) and this node's key and lease under the names the
    /// reference configs use.
    fn install(&self, config: &str, kind: EntityKind, prefix: &str) -> PathBuf {
        let authority = PublicKey(self.authority.public_key().to_bytes()).to_string();
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
        let key = PublicKey(*self.keypair.private_bytes()).to_string();
        self.write("tunneld.key", key.as_bytes(), 0o600);
        let lease = self.lease(kind, prefix, self.keypair.public(), "node");
        self.write("tunneld.lease", &lease, 0o644);
        self.write("tunneld.toml", config.as_bytes(), 0o644)
    }

    fn install_server(&self) -> PathBuf {
        self.install(SERVER_EXAMPLE, EntityKind::System, "2002:b16:212c:2::/64")
    }
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
    let server = Setup::new();
    let path = server.install_server();
    let out = tunneld(&["check-config", path.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("2 application(s)"), "{stdout}");

    let client = Setup::new();
    let path = client.install(
        CLIENT_EXAMPLE,
        EntityKind::User,
        "2002:b16:212c:1::1234/128",
    );
    let peer = StaticKeypair::from_private([0x55; 32]).public();
    let lease = client.lease(EntityKind::System, "2002:b16:212c:2::/64", peer, "srv");
    client.write("peers/server.lease", &lease, 0o644);
    let out = tunneld(&["check-config", path.to_str().unwrap()], b"");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("1 configured peer(s)"), "{stdout}");
    assert!(stdout.contains("SOCKS5 on 127.0.0.1:1080"), "{stdout}");
}

#[test]
fn world_readable_key_is_refused_naming_file_and_mode() {
    let setup = Setup::new();
    let path = setup.install_server();
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
    let setup = Setup::new();
    let path = setup.install_server();
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
fn run_builds_the_node_then_stops_before_the_data_plane() {
    let setup = Setup::new();
    let path = setup.install_server();
    let out = tunneld(&["run", "--config", path.to_str().unwrap()], b"");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("data plane is not implemented yet"), "{err}");
    // The summary names the identity the node was built with.
    assert!(err.contains(&setup.keypair.public().to_string()), "{err}");
    assert!(err.contains("2002:b16:212c:2::/64"), "{err}");
    assert!(!err.contains("DANGER"), "{err}");

    let config = fs::read_to_string(&path).unwrap().replace(
        "log-level = \"info\"",
        "log-level = \"info\"\ndangerous-esp-keylog = \"keys.log\"",
    );
    fs::write(&path, config).unwrap();
    let out = tunneld(&["run", "--config", path.to_str().unwrap()], b"");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("DANGER: dangerous-esp-keylog"), "{err}");
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

    // A socket path that exists: talking to it is not implemented yet.
    fs::write(&socket, b"").unwrap();
    let out = tunneld(&["status", "--socket", s], b"");
    assert_eq!(out.status.code(), Some(3));

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
