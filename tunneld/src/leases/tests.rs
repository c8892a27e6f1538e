//! The renewal schedule on a fake clock, the file source with leases
//! verified at chosen times.

#![allow(clippy::unwrap_used)]

use std::fs;

use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::sim::{issue_identity, IdentitySpec};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::*;

const T0: u64 = 1_800_000_000;
const HOUR: Duration = Duration::from_secs(3600);

fn at(secs: u64) -> UnixTime {
    UnixTime::from_secs(secs)
}

fn lease_from(seed: u8, prefix: &str, serial: u64, from: u64, lifetime: Duration) -> SignedLease {
    let prefix: ipnet::Ipv6Net = prefix.parse().unwrap();
    let kind = if prefix.prefix_len() == 128 {
        EntityKind::User
    } else {
        EntityKind::System
    };
    issue_identity(
        &LeaseAuthority::from_seed([7; 32]),
        [seed; 32],
        &IdentitySpec {
            name: "n",
            kind,
            prefix,
            groups: &[],
            valid_from: at(from),
            lifetime,
            serial,
        },
    )
    .1
}

fn own(serial: u64, from: u64, lifetime: Duration) -> SignedLease {
    lease_from(1, "2002:b16:212c:1::1234/128", serial, from, lifetime)
}

#[test]
fn renewals_fall_in_the_jittered_window_and_spread_out() {
    let lease = own(1, T0, HOUR);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let s = RenewalSchedule::new(RenewalPolicy::default(), lease.lease(), &mut rng);
        let next = s.next_attempt().as_secs();
        // Half the lifetime ± 10 %: 1440 s..2160 s after not_before.
        assert!(
            (T0 + 1440..=T0 + 2160).contains(&next),
            "{seed}: {}",
            next - T0
        );
        seen.insert(next);
    }
    assert!(
        seen.len() > 100,
        "only {} distinct renewal times",
        seen.len()
    );
}

#[test]
fn failures_back_off_to_the_cap_and_never_past_the_lease_end() {
    let lease = own(1, T0, HOUR);
    let held = lease.lease();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut s = RenewalSchedule::new(RenewalPolicy::default(), held, &mut rng);
    // The fake clock: each retry happens when it is due.
    let mut now = at(T0 + 1800);
    let mut delays = Vec::new();
    for _ in 0..10 {
        assert_eq!(s.failed(held, now, &mut rng), Urgency::Calm);
        let next = s.next_attempt();
        delays.push(next.as_duration() - now.as_duration());
        now = next;
    }
    for (i, d) in delays.iter().enumerate() {
        let base = Duration::from_secs((1u64 << i).min(60));
        assert!(*d >= base && *d <= base + base / 4, "retry {i}: {d:?}");
    }
    assert_eq!(s.failures(), 10);

    // In the last 20 % of the lifetime the failures become warnings.
    let late = at(T0 + 3600 - 600);
    match s.failed(held, late, &mut rng) {
        Urgency::ExpiresSoon { remaining } => assert_eq!(remaining, Duration::from_secs(600)),
        other => panic!("{other:?}"),
    }
    // A retry is never scheduled after the lease's end.
    let last = at(T0 + 3600 - 10);
    assert!(matches!(
        s.failed(held, last, &mut rng),
        Urgency::ExpiresSoon { .. }
    ));
    assert_eq!(s.next_attempt(), held.not_after);
    // At and after the end: expired, still retrying at the capped backoff.
    let end = at(T0 + 3600);
    assert_eq!(s.failed(held, end, &mut rng), Urgency::Expired);
    let wait = s.next_attempt().as_duration() - end.as_duration();
    assert!(wait >= Duration::from_secs(60) && wait <= Duration::from_secs(75));

    // A renewal starts over: next renewal in the new lease's window.
    let renewed = own(2, T0 + 3600, HOUR);
    s.renewed(renewed.lease(), &mut rng);
    assert_eq!(s.failures(), 0);
    let next = s.next_attempt().as_secs();
    assert!((T0 + 3600 + 1440..=T0 + 3600 + 2160).contains(&next));
}

#[test]
fn only_a_longer_lease_for_the_same_key_and_prefix_renews() {
    let held = own(3, T0, HOUR);
    let held = held.lease();
    assert!(is_renewal(held, own(4, T0 + 1800, HOUR).lease()));
    // Same end, higher serial: a reissue counts.
    assert!(is_renewal(held, own(4, T0, HOUR).lease()));
    // The same lease again, an older one, a shorter one.
    assert!(!is_renewal(held, own(3, T0, HOUR).lease()));
    assert!(!is_renewal(held, own(2, T0 + 1800, HOUR).lease()));
    assert!(!is_renewal(held, own(4, T0, HOUR / 2).lease()));
    // Another key or prefix.
    assert!(!is_renewal(
        held,
        lease_from(2, "2002:b16:212c:1::1234/128", 4, T0 + 60, HOUR).lease()
    ));
    assert!(!is_renewal(
        held,
        lease_from(1, "2002:b16:212c:1::9/128", 4, T0 + 60, HOUR).lease()
    ));
}

#[tokio::test]
async fn the_file_source_rereads_and_verifies_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let own_path = dir.path().join("own.lease");
    let peer_path = dir.path().join("peer.lease");
    let bad_path = dir.path().join("bad.lease");
    fs::write(&own_path, own(1, T0, HOUR).as_bytes()).unwrap();
    let peer = lease_from(2, "2002:b16:212c:2::/64", 1, T0, HOUR);
    fs::write(&peer_path, peer.as_bytes()).unwrap();
    fs::write(&bad_path, b"not a lease").unwrap();
    let files = LeaseFiles {
        authority: LeaseAuthority::from_seed([7; 32]).public_key(),
        own_key: StaticKeypair::from_private([1; 32]).public(),
        own: own_path.clone(),
        peers: vec![bad_path, peer_path],
    };
    let (publish, files_rx) = watch::channel(files.clone());
    let mut source = FileLeaseSource::new(files_rx);

    let set = source.fetch(at(T0 + 10)).await.unwrap();
    assert_eq!(set.own.lease().serial, 1);
    assert_eq!(set.peers, [peer]);
    assert_eq!(set.problems.len(), 1);
    assert!(
        set.problems[0].starts_with("peers[0].lease-file: "),
        "{:?}",
        set.problems
    );

    // Past its end the lease does not verify: a clear error, no lease.
    let error = source.fetch(at(T0 + 3601)).await.unwrap_err();
    assert!(matches!(error, LeaseSourceError::File(_)), "{error}");
    assert!(error.to_string().starts_with("lease-file: "), "{error}");

    // An external tool renews the file: the next fetch has it.
    fs::write(&own_path, own(2, T0 + 1800, HOUR).as_bytes()).unwrap();
    let set = source.fetch(at(T0 + 3601)).await.unwrap();
    assert_eq!(set.own.lease().serial, 2);

    // A lease for another key is refused.
    let other = dir.path().join("other.lease");
    fs::write(
        &other,
        lease_from(9, "2002:b16:212c:1::1234/128", 5, T0, HOUR).as_bytes(),
    )
    .unwrap();
    publish.send_replace(LeaseFiles {
        own: other,
        ..files
    });
    let error = source.fetch(at(T0 + 10)).await.unwrap_err();
    assert!(
        matches!(error, LeaseSourceError::WrongKey { .. }),
        "{error}"
    );
}

#[test]
fn addrd_from_the_netmap_is_reached_at_its_endpoint_with_keepalives() {
    let home = lease_from(9, "fd42:7065:726d::/64", 1, 0, Duration::from_secs(3600));
    let other = lease_from(10, "2002:b16:212c:1::/64", 1, 0, Duration::from_secs(3600));
    let addrd = Addrd {
        endpoint: "192.0.2.10:4500".parse().unwrap(),
        public_key: PublicKey(home.lease().public_key),
    };
    let settings = netmap_peer_settings(&home, Some(&addrd));
    assert_eq!(settings.endpoint, Some(addrd.endpoint));
    assert_eq!(
        settings.persistent_keepalive,
        Some(crate::config::DEFAULT_CLIENT_KEEPALIVE)
    );
    // Any other peer: its 6to4 address gives the endpoint; the node's
    // default keepalive.
    for settings in [
        netmap_peer_settings(&other, Some(&addrd)),
        netmap_peer_settings(&home, None),
    ] {
        assert_eq!(settings.endpoint, None);
        assert_eq!(settings.persistent_keepalive, None);
    }
}
