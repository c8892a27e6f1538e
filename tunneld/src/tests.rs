//! Loading whole configs with their key and lease files, and the reference
//! configs under `configs/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use overlay_proto::handshake::{PublicKey, StaticKeypair};
use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority, LeaseError, SignedLease};
use overlay_proto::node::AddPeerError;
use overlay_proto::time::{Now, UnixTime};

use crate::config::{Config, ConfigError, Problem, Role};
use crate::keys::encode_private_key;
use crate::startup::{prepare, summary};

const NOW_SECS: u64 = 1_800_000_000;
const CLIENT_EXAMPLE: &str = include_str!("../../configs/tunneld-client.toml");
const SERVER_EXAMPLE: &str = include_str!("../../configs/tunneld-server.toml");
const USER_PREFIX: &str = "2002:b16:212c:1::1234/128";

fn now() -> Now {
    Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(NOW_SECS),
    }
}

/// An authority, a temporary directory, and helpers writing key and
/// lease files into it.
struct Fixture {
    dir: tempfile::TempDir,
    authority: LeaseAuthority,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            authority: LeaseAuthority::from_seed([0x5a; 32]),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn authority_key(&self) -> String {
        PublicKey(self.authority.public_key().to_bytes()).to_string()
    }

    fn write(&self, path: &Path, bytes: &[u8], mode: u32) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, bytes).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn write_key(&self, path: &Path, keypair: &StaticKeypair) {
        self.write(path, encode_private_key(keypair).as_bytes(), 0o600);
    }

    fn lease(&self, kind: EntityKind, prefix: &str, key: PublicKey, name: &str) -> SignedLease {
        self.lease_valid(kind, prefix, key, name, NOW_SECS - 60, NOW_SECS + 3600)
    }

    fn lease_valid(
        &self,
        kind: EntityKind,
        prefix: &str,
        key: PublicKey,
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> SignedLease {
        let lease = Lease {
            kind,
            serial: 7,
            not_before: UnixTime::from_secs(not_before),
            not_after: UnixTime::from_secs(not_after),
            public_key: key.0,
            prefix: prefix.parse().unwrap(),
            name: name.to_owned(),
            dn: format!("cn={name},dc=example,dc=org"),
            groups: vec!["staff".to_owned()],
        };
        self.authority.sign(&lease).unwrap()
    }

    /// Writes `text` as `tunneld.toml` with the fixture's authority key
    /// in place of the one in `text`, and creates the key and lease files
    /// the config names: this node's (kind from the role, prefix from the
    /// first application or [`USER_PREFIX`]) and one system lease per peer.
    fn install(&self, text: &str) -> PathBuf {
        let text = replace_authority_key(text, &self.authority_key());
        let path = self.path("tunneld.toml");
        self.write(&path, text.as_bytes(), 0o644);
        let config = Config::load(&path).unwrap();
        let keypair = StaticKeypair::from_private([0x11; 32]);
        self.write_key(&config.private_key_file, &keypair);
        let (kind, prefix) = match config.role {
            Role::Client => (EntityKind::User, USER_PREFIX.to_owned()),
            Role::Server => {
                let address = config.applications.first().map(|a| a.address);
                let net = Ipv6Net::new(address.unwrap_or("2002:b16:212c:2::".parse().unwrap()), 64)
                    .unwrap()
                    .trunc();
                (EntityKind::System, net.to_string())
            }
        };
        let lease = self.lease(kind, &prefix, keypair.public(), "node");
        self.write(&config.lease_file, lease.as_bytes(), 0o644);
        if let Some(psk) = &config.psk_file {
            self.write(
                psk,
                b"UFNLUFNLUFNLUFNLUFNLUFNLUFNLUFNLUFNLUFNLUFM=\n",
                0o600,
            );
        }
        for (i, peer) in config.peers.iter().enumerate() {
            let key = StaticKeypair::from_private([0x20 + i as u8; 32]).public();
            let prefix = format!("2002:b16:212c:{:x}::/64", 0x100 + i);
            let lease = self.lease(EntityKind::System, &prefix, key, &format!("peer{i}"));
            self.write(&peer.lease_file, lease.as_bytes(), 0o644);
        }
        path
    }
}

/// `text` with the value of its top-level `authority-key` replaced.
fn replace_authority_key(text: &str, key: &str) -> String {
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.starts_with("authority-key") {
                found = true;
                format!("authority-key = \"{key}\"")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(found, "no authority-key line");
    lines.join("\n") + "\n"
}

fn minimal(role: &str) -> String {
    format!(
        "role = \"{role}\"\nprivate-key-file = \"node.key\"\nauthority-key = \"GpAIETEtVL5Jb7luU0Eunbry/aAYHZaFiXGWJa8/i5o=\"\nlease-file = \"node.lease\"\n"
    )
}

fn seed() -> [u8; 32] {
    [9; 32]
}

#[test]
fn example_configs_parse_verbatim() {
    for (name, text) in [("client", CLIENT_EXAMPLE), ("server", SERVER_EXAMPLE)] {
        let config = Config::parse(text, Path::new("/etc/permanet/tunneld.toml"))
            .unwrap_or_else(|e| panic!("{name} example: {e}"));
        assert_eq!(config.role.as_str(), name);
    }
}

#[test]
fn example_configs_build_a_node() {
    for text in [CLIENT_EXAMPLE, SERVER_EXAMPLE] {
        let fixture = Fixture::new();
        let path = fixture.install(text);
        let prepared = prepare(&path, now(), seed()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepared.peers.len(), prepared.config.peers.len());
        assert_eq!(prepared.node.peers().count(), prepared.config.peers.len());
        let s = summary(&prepared);
        assert!(s.contains(&prepared.node.public_key().to_string()), "{s}");
    }
}

#[test]
fn prepare_builds_the_node_from_key_and_lease() {
    let fixture = Fixture::new();
    let path = fixture.install(&(minimal("server")
        + "[[applications]]\nname = \"wiki\"\naddress = \"2002:b16:212c:2::10\"\nports = [80]\nbackend = \"127.0.0.1:8080\"\n[[peers]]\nlease-file = \"peers/a.lease\"\nendpoint = \"192.0.2.9:4500\"\n"));
    let prepared = prepare(&path, now(), seed()).unwrap();
    let keypair = StaticKeypair::from_private([0x11; 32]);
    assert_eq!(*prepared.node.public_key(), keypair.public());
    assert_eq!(
        prepared.node.local_lease().lease().prefix.to_string(),
        "2002:b16:212c:2::/64"
    );
    let id = prepared.peers[0];
    assert_eq!(
        prepared
            .node
            .route(&"2002:b16:212c:100::1".parse().unwrap()),
        Some(id)
    );
    assert!(prepared.node.peer(id).is_some());
}

/// Builds the standard server fixture, lets `tamper` break one thing, and
/// returns the error of loading it.
fn server_error(extra: &str, tamper: impl FnOnce(&Fixture, &Config)) -> ConfigError {
    let fixture = Fixture::new();
    let path = fixture.install(&(minimal("server") + extra));
    let config = Config::load(&path).unwrap();
    tamper(&fixture, &config);
    prepare(&path, now(), seed()).unwrap_err()
}

fn assert_names(err: &ConfigError, file_suffix: &str, key: &str, fragment: &str) {
    let msg = err.to_string();
    assert_eq!(err.key(), Some(key), "{msg}");
    let file_part = msg.split(": ").next().unwrap();
    assert!(file_part.ends_with(file_suffix), "{msg}");
    assert!(msg.contains(&format!(": {key}: ")), "{msg}");
    assert!(msg.contains(fragment), "{key}: {msg}");
}

#[test]
fn world_readable_key_file_is_refused() {
    let err = server_error("", |_, c| {
        fs::set_permissions(&c.private_key_file, fs::Permissions::from_mode(0o644)).unwrap();
    });
    assert!(matches!(
        err.problem(),
        Some(Problem::InsecureMode { mode: 0o644, .. })
    ));
    assert_names(
        &err,
        "tunneld.toml",
        "private-key-file",
        "node.key: mode 0644 is too open",
    );
}

#[test]
fn file_errors_name_file_key_and_problem() {
    let apps = "[[applications]]\nname = \"wiki\"\naddress = \"2002:b16:212c:2::10\"\nports = [80]\nbackend = \"127.0.0.1:8080\"\n[[applications]]\nname = \"mail\"\naddress = \"2002:b16:212c:3::5\"\nports = [25]\nbackend = \"127.0.0.1:25\"\n";
    let peer = "[[peers]]\nlease-file = \"peers/a.lease\"\n";
    let two_peers =
        "[[peers]]\nlease-file = \"peers/a.lease\"\n[[peers]]\nlease-file = \"peers/b.lease\"\n";

    // Application outside the lease prefix: install() leases the first
    // application's /64, the second lies in another.
    let err = server_error(apps, |_, _| {});
    assert_names(
        &err,
        "tunneld.toml",
        "applications[1].address",
        "2002:b16:212c:3::5 is outside this node's prefix 2002:b16:212c:2::/64",
    );

    let err = server_error("", |_, c| fs::remove_file(&c.private_key_file).unwrap());
    assert_names(
        &err,
        "tunneld.toml",
        "private-key-file",
        "node.key: No such file",
    );

    let err = server_error("", |f, c| f.write(&c.private_key_file, b"garbage", 0o600));
    assert_names(&err, "tunneld.toml", "private-key-file", "44 characters");

    let err = server_error("psk-file = \"psk\"\n", |f, c| {
        f.write(c.psk_file.as_ref().unwrap(), b"x", 0o640)
    });
    assert_names(&err, "tunneld.toml", "psk-file", "mode 0640 is too open");

    let err = server_error("", |_, c| fs::remove_file(&c.lease_file).unwrap());
    assert_names(
        &err,
        "tunneld.toml",
        "lease-file",
        "node.lease: No such file",
    );

    let err = server_error("", |f, c| {
        f.write(&c.lease_file, b"NOT A LEASE AT ALL", 0o644)
    });
    assert_names(
        &err,
        "tunneld.toml",
        "lease-file",
        "node.lease: not a permanet lease",
    );

    // Signed by another authority.
    let err = server_error("", |f, c| {
        let other = LeaseAuthority::from_seed([0x77; 32]);
        let lease = f.lease(
            EntityKind::System,
            "2002:b16:212c:2::/64",
            PublicKey([1; 32]),
            "x",
        );
        let mut l = lease.lease().clone();
        l.public_key = StaticKeypair::from_private([0x11; 32]).public().0;
        f.write(&c.lease_file, other.sign(&l).unwrap().as_bytes(), 0o644);
    });
    assert!(matches!(
        err.problem(),
        Some(Problem::Lease {
            error: LeaseError::UnknownAuthority,
            ..
        })
    ));
    assert_names(&err, "tunneld.toml", "lease-file", "unknown authority");

    // Expired.
    let err = server_error("", |f, c| {
        let key = StaticKeypair::from_private([0x11; 32]).public();
        let lease = f.lease_valid(
            EntityKind::System,
            "2002:b16:212c:2::/64",
            key,
            "node",
            NOW_SECS - 7200,
            NOW_SECS - 3600,
        );
        f.write(&c.lease_file, lease.as_bytes(), 0o644);
    });
    assert_names(&err, "tunneld.toml", "lease-file", "lease expired");

    // Lease for another key.
    let err = server_error("", |f, c| {
        let lease = f.lease(
            EntityKind::System,
            "2002:b16:212c:2::/64",
            PublicKey([3; 32]),
            "x",
        );
        f.write(&c.lease_file, lease.as_bytes(), 0o644);
    });
    assert_names(
        &err,
        "tunneld.toml",
        "lease-file",
        "private-key-file holds the key of",
    );

    // A user lease in the server role.
    let err = server_error("", |f, c| {
        let key = StaticKeypair::from_private([0x11; 32]).public();
        let lease = f.lease(EntityKind::User, USER_PREFIX, key, "alice");
        f.write(&c.lease_file, lease.as_bytes(), 0o644);
    });
    assert_names(
        &err,
        "tunneld.toml",
        "lease-file",
        "a user lease cannot be used with role = \"server\"",
    );

    // A peer lease that is bad.
    let err = server_error(peer, |f, c| f.write(&c.peers[0].lease_file, b"", 0o644));
    assert_names(
        &err,
        "tunneld.toml",
        "peers[0].lease-file",
        "a.lease: truncated lease",
    );

    // A peer lease for our own key.
    let err = server_error(peer, |f, c| {
        let key = StaticKeypair::from_private([0x11; 32]).public();
        let lease = f.lease(EntityKind::System, "2002:b16:212c:9::/64", key, "me");
        f.write(&c.peers[0].lease_file, lease.as_bytes(), 0o644);
    });
    assert_names(
        &err,
        "tunneld.toml",
        "peers[0].lease-file",
        "this node's own key",
    );

    // Two peers with one key: the node refuses the second.
    let err = server_error(two_peers, |_, c| {
        fs::copy(&c.peers[0].lease_file, &c.peers[1].lease_file).unwrap();
    });
    assert!(matches!(
        err.problem(),
        Some(Problem::Peer {
            error: AddPeerError::Duplicate,
            ..
        })
    ));
    assert_names(
        &err,
        "tunneld.toml",
        "peers[1].lease-file",
        "b.lease: a peer with this public key",
    );
}

#[test]
fn client_role_needs_a_user_lease() {
    let fixture = Fixture::new();
    let path = fixture.install(&minimal("client"));
    let prepared = prepare(&path, now(), seed()).unwrap();
    assert_eq!(
        prepared.config.persistent_keepalive,
        Some(Duration::from_secs(25))
    );
    let config = Config::load(&path).unwrap();
    let key = StaticKeypair::from_private([0x11; 32]).public();
    let lease = fixture.lease(EntityKind::System, "2002:b16:212c:2::/64", key, "sys");
    fixture.write(&config.lease_file, lease.as_bytes(), 0o644);
    let err = prepare(&path, now(), seed()).unwrap_err();
    assert_names(&err, "tunneld.toml", "lease-file", "expected a user lease");
}
