//! [`apply`] on a real node: renewals, additions, removals, keepalives,
//! all or nothing; [`restart_only_changes`] names the key.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::node::NodeConfig;
use overlay_proto::sim::{issue_identity, IdentitySpec};

use super::*;

const T0: u64 = 1_800_000_000;
const HOUR: Duration = Duration::from_secs(3600);

const NO_SETTINGS: PeerSettings = PeerSettings {
    endpoint: None,
    persistent_keepalive: None,
};

fn identity(
    authority: &LeaseAuthority,
    seed: u8,
    name: &str,
    prefix: &str,
    serial: u64,
) -> (StaticKeypair, SignedLease) {
    issue_identity(
        authority,
        [seed; 32],
        &IdentitySpec {
            name,
            kind: EntityKind::System,
            prefix: prefix.parse().unwrap(),
            groups: &[],
            valid_from: UnixTime::from_secs(T0),
            lifetime: HOUR * serial as u32,
            serial,
        },
    )
}

fn lease(authority: &LeaseAuthority, seed: u8, prefix: &str, serial: u64) -> SignedLease {
    identity(authority, seed, "peer", prefix, serial).1
}

/// A node "me" with peers 2 and 3.
fn node(authority: &LeaseAuthority) -> Node {
    let (key, own) = identity(authority, 1, "me", "2002:b16:212c:1::/64", 1);
    let mut node = Node::new(NodeConfig::new(key, authority.public_key(), own), [9; 32]);
    let now = Instant::now();
    for (seed, prefix) in [(2, "2002:b16:212c:2::/64"), (3, "2002:b16:212c:3::/64")] {
        node.add_peer(
            lease(authority, seed, prefix, 1),
            PeerConfig::default(),
            now,
        )
        .unwrap();
    }
    node
}

fn key(authority: &LeaseAuthority, seed: u8) -> PublicKey {
    PublicKey(lease(authority, seed, "2002::/64", 1).lease().public_key)
}

#[test]
fn apply_renews_adds_removes_and_changes_keepalives() {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut node = node(&authority);
    let mut access = AccessPolicy::allow_all();
    let (_, own2) = identity(&authority, 1, "me", "2002:b16:212c:1::/64", 2);
    let change = ChangeSet {
        local_lease: Some(own2.clone()),
        peers: vec![
            PeerUpdate {
                lease: lease(&authority, 2, "2002:b16:212c:2::/64", 2),
                settings: Some(PeerSettings {
                    endpoint: None,
                    persistent_keepalive: Some(Duration::from_secs(7)),
                }),
            },
            PeerUpdate {
                lease: lease(&authority, 4, "2002:b16:212c:3::/64", 1),
                settings: Some(NO_SETTINGS),
            },
        ],
        // Peer 4 takes peer 3's prefix in the same change.
        remove: vec![key(&authority, 3)],
        access: None,
    };
    let applied = apply(&mut node, &mut access, change, Instant::now()).unwrap();
    assert_eq!(
        applied,
        Applied {
            local_lease: true,
            added: 1,
            updated: 1,
            removed: 1,
            access: false,
        }
    );
    assert_eq!(*node.local_lease(), own2);
    let two = node
        .peer(node.peer_by_key(&key(&authority, 2)).unwrap())
        .unwrap();
    assert_eq!(two.lease().lease().serial, 2);
    assert_eq!(two.persistent_keepalive(), Some(Duration::from_secs(7)));
    assert!(node.peer_by_key(&key(&authority, 3)).is_none());
    assert_eq!(
        node.route(&"2002:b16:212c:3::1".parse().unwrap()),
        node.peer_by_key(&key(&authority, 4))
    );
}

#[test]
fn apply_is_all_or_nothing() {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut node = node(&authority);
    let mut access = AccessPolicy::allow_all();
    let before = node.local_lease().clone();
    let (_, own2) = identity(&authority, 1, "me", "2002:b16:212c:1::/64", 2);
    let bad = [
        // A peer's renewed lease with another prefix.
        ChangeSet {
            local_lease: Some(own2.clone()),
            peers: vec![PeerUpdate {
                lease: lease(&authority, 2, "2002:b16:212c:9::/64", 2),
                settings: None,
            }],
            ..ChangeSet::default()
        },
        // A new peer on a prefix a staying peer owns.
        ChangeSet {
            local_lease: Some(own2.clone()),
            peers: vec![PeerUpdate {
                lease: lease(&authority, 4, "2002:b16:212c:3::/64", 1),
                settings: Some(NO_SETTINGS),
            }],
            ..ChangeSet::default()
        },
        // An older own lease.
        ChangeSet {
            local_lease: Some(lease(&authority, 1, "2002:b16:212c:1::/64", 1)),
            remove: vec![key(&authority, 3)],
            ..ChangeSet::default()
        },
    ];
    // Make the held own lease serial 2 first, so serial 1 is older.
    apply(
        &mut node,
        &mut access,
        ChangeSet {
            local_lease: Some(own2.clone()),
            ..ChangeSet::default()
        },
        Instant::now(),
    )
    .unwrap();
    assert_ne!(*node.local_lease(), before);
    for (i, change) in bad.into_iter().enumerate() {
        let error = apply(&mut node, &mut access, change, Instant::now()).unwrap_err();
        assert!(matches!(error, ReloadError::Refused { .. }), "{i}: {error}");
        assert_eq!(node.peers().count(), 2, "{i}: nothing removed");
        assert_eq!(*node.local_lease(), own2, "{i}: own lease kept");
        let two = node
            .peer(node.peer_by_key(&key(&authority, 2)).unwrap())
            .unwrap();
        assert_eq!(two.lease().lease().serial, 1, "{i}: peer lease kept");
    }
}

#[test]
fn apply_replaces_the_access_policy() {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut node = node(&authority);
    let mut access = AccessPolicy::allow_all();
    let config = Config::parse(
        "role = \"server\"\nprivate-key-file = \"k\"\n\
         authority-key = \"GpAIETEtVL5Jb7luU0Eunbry/aAYHZaFiXGWJa8/i5o=\"\nlease-file = \"l\"\n\
         [[applications]]\nname = \"wiki\"\naddress = \"2002:b16:212c:1::10\"\nports = [80]\n\
         backend = \"127.0.0.1:8080\"\nallowed-groups = [\"staff\"]\n",
        Path::new("/e/t.toml"),
    )
    .unwrap();
    let policy = AccessPolicy::from_applications(&config.applications);
    assert_ne!(policy, access);
    let change = ChangeSet {
        access: Some(policy.clone()),
        ..ChangeSet::default()
    };
    let applied = apply(&mut node, &mut access, change.clone(), Instant::now()).unwrap();
    assert!(applied.access);
    assert_eq!(access, policy);
    // The same policy again changes nothing.
    let applied = apply(&mut node, &mut access, change, Instant::now()).unwrap();
    assert_eq!(applied, Applied::default());
}

#[test]
fn renewals_skip_unknown_peers_and_older_leases() {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut node = node(&authority);
    let mut access = AccessPolicy::allow_all();
    let renew = |lease| PeerUpdate {
        lease,
        settings: None,
    };
    // Peer 2 holds serial 3 (e.g. brought in a handshake).
    let change = ChangeSet {
        peers: vec![renew(lease(&authority, 2, "2002:b16:212c:2::/64", 3))],
        ..ChangeSet::default()
    };
    let applied = apply(&mut node, &mut access, change, Instant::now()).unwrap();
    assert_eq!(applied.updated, 1);
    let change = ChangeSet {
        peers: vec![
            // An older file, a peer the node does not hold, a renewal.
            renew(lease(&authority, 2, "2002:b16:212c:2::/64", 2)),
            renew(lease(&authority, 5, "2002:b16:212c:5::/64", 1)),
            renew(lease(&authority, 3, "2002:b16:212c:3::/64", 2)),
        ],
        ..ChangeSet::default()
    };
    let applied = apply(&mut node, &mut access, change, Instant::now()).unwrap();
    assert_eq!((applied.added, applied.updated), (0, 1));
    assert!(node.peer_by_key(&key(&authority, 5)).is_none());
    let serial = |node: &Node, seed| {
        let id = node.peer_by_key(&key(&authority, seed)).unwrap();
        node.peer(id).unwrap().lease().lease().serial
    };
    assert_eq!((serial(&node, 2), serial(&node, 3)), (3, 2));
    // From a config too, an older lease is skipped, settings applied.
    let change = ChangeSet {
        peers: vec![PeerUpdate {
            lease: lease(&authority, 2, "2002:b16:212c:2::/64", 1),
            settings: Some(PeerSettings {
                endpoint: None,
                persistent_keepalive: Some(Duration::from_secs(9)),
            }),
        }],
        ..ChangeSet::default()
    };
    let applied = apply(&mut node, &mut access, change, Instant::now()).unwrap();
    assert_eq!(applied.updated, 1);
    assert_eq!(serial(&node, 2), 3);
    // A renewal with another prefix is still refused.
    let change = ChangeSet {
        peers: vec![renew(lease(&authority, 3, "2002:b16:212c:7::/64", 9))],
        ..ChangeSet::default()
    };
    assert!(apply(&mut node, &mut access, change, Instant::now()).is_err());
}

#[test]
fn restart_only_keys_are_named() {
    let base = "role = \"server\"\nprivate-key-file = \"key\"\nauthority-key = \"GpAIETEtVL5Jb7luU0Eunbry/aAYHZaFiXGWJa8/i5o=\"\nlease-file = \"lease.bin\"\n";
    let parse =
        |extra: &str| Config::parse(&format!("{base}{extra}"), Path::new("/e/t.toml")).unwrap();
    let old = parse("mtu = 1380\nlog-level = \"info\"\n");
    assert!(restart_only_changes(
        &old,
        &parse("mtu = 1380\nlog-level = \"debug\"\npersistent-keepalive = 9\n")
    )
    .is_ok());
    // Applications: allowed-groups reload, anything else needs a restart.
    let app = |groups: &str, backend: &str| {
        parse(&format!(
            "mtu = 1380\nlog-level = \"info\"\n[[applications]]\nname = \"wiki\"\n\
             address = \"2002:b16:212c:2::10\"\nports = [80]\nbackend = \"{backend}\"\n\
             allowed-groups = [{groups}]\n"
        ))
    };
    let wiki = app("\"staff\"", "127.0.0.1:8080");
    assert!(restart_only_changes(&wiki, &app("\"students\"", "127.0.0.1:8080")).is_ok());
    assert!(restart_only_changes(&wiki, &app("", "127.0.0.1:8080")).is_ok());
    for changed in [app("\"staff\"", "127.0.0.1:8081"), old.clone()] {
        match restart_only_changes(&wiki, &changed) {
            Err(ReloadError::RestartNeeded { key, .. }) => assert_eq!(key, "applications"),
            other => panic!("{other:?}"),
        }
    }
    for (extra, key) in [
        ("mtu = 1300\n", "mtu"),
        ("mtu = 1380\nlisten = \"127.0.0.1:9\"\n", "listen"),
        (
            "mtu = 1380\nmetrics-listen = \"127.0.0.1:9100\"\n",
            "metrics-listen",
        ),
        ("mtu = 1380\nmode = \"tun\"\n", "mode"),
        ("mtu = 1380\ntun-name = \"pn1\"\n", "tun-name"),
        (
            "mtu = 1380\noverlay-zone = \"corp.example\"\n",
            "overlay-zone",
        ),
    ] {
        match restart_only_changes(&old, &parse(extra)) {
            Err(ReloadError::RestartNeeded { key: named, .. }) => assert_eq!(named, key),
            other => panic!("{extra}: {other:?}"),
        }
    }
}

#[test]
fn reload_status_counts_and_clears_the_last_error() {
    let mut status = ReloadStatus::default();
    status.record(Err("bad".to_owned()));
    assert_eq!((status.applied, status.failed), (0, 1));
    assert_eq!(status.last_error.as_deref(), Some("bad"));
    status.record(Ok(()));
    assert_eq!(
        (status.applied, status.failed, status.last_error),
        (1, 1, None)
    );
}
