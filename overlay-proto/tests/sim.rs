//! Deterministic simulation tests: two nodes over an in-memory network with
//! a fake clock, seeded randomness, loss, duplication, reordering and NAT
//! rebinding.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use overlay_proto::counters::DropReason;
use overlay_proto::handshake::{Psk, StaticKeypair};
use overlay_proto::lease::{EntityKind, LeaseAuthority, SignedLease};
use overlay_proto::node::{Event, Node, NodeConfig};
use overlay_proto::session::{PeerConfig, PeerId};
use overlay_proto::sim::{
    ipv6_packet, issue_identity, HostId, IdentitySpec, LinkConditions, SendOutcome, Simulation,
};
use overlay_proto::time::UnixTime;

const DAY: Duration = Duration::from_secs(24 * 3600);

const T0: u64 = 1_800_000_000;

struct World {
    sim: Simulation,
    alice: HostId,
    bob: HostId,
    /// Bob as alice knows him.
    bob_at_alice: PeerId,
    alice_addr: Ipv6Addr,
    bob_addr: Ipv6Addr,
    authority: LeaseAuthority,
}

fn alice_endpoint() -> SocketAddr {
    "44.55.66.77:40000".parse().unwrap()
}

fn bob_endpoint() -> SocketAddr {
    "11.22.33.44:4500".parse().unwrap()
}

/// Alice is a user; bob is a server whose system virtual network sits in
/// the 6to4 prefix of his own IPv4 (11.22.33.44), so alice derives his
/// endpoint from his address. Bob accepts any user with a valid lease.
fn world(seed: u64, link: LinkConditions) -> World {
    world_with(seed, link, |_| {}, |_| {})
}

fn bob_identity(authority: &LeaseAuthority) -> (StaticKeypair, SignedLease) {
    issue_identity(
        authority,
        [2; 32],
        &IdentitySpec {
            name: "bob",
            kind: EntityKind::System,
            prefix: "2002:b16:212c:1::/64".parse().unwrap(),
            groups: &[],
            valid_from: UnixTime::from_secs(T0 - 60),
            serial: 1,
            lifetime: DAY,
        },
    )
}

fn alice_identity(
    authority: &LeaseAuthority,
    serial: u64,
    valid_from: UnixTime,
    lifetime: Duration,
) -> (StaticKeypair, SignedLease) {
    issue_identity(
        authority,
        [1; 32],
        &IdentitySpec {
            name: "alice",
            kind: EntityKind::User,
            prefix: "2002:102:304:1::a/128".parse().unwrap(),
            groups: &["staff"],
            valid_from,
            serial,
            lifetime,
        },
    )
}

/// `alice_cfg` may replace alice's lease (its key must stay alice's).
fn world_with(
    seed: u64,
    link: LinkConditions,
    alice_cfg: impl FnOnce(&mut NodeConfig),
    bob_cfg: impl FnOnce(&mut NodeConfig),
) -> World {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut sim = Simulation::new(seed, UnixTime::from_secs(T0), link);
    let (bob_key, bob_lease) = bob_identity(&authority);
    let (alice_key, alice_lease) = alice_identity(&authority, 1, UnixTime::from_secs(T0 - 60), DAY);
    let mut alice_config = NodeConfig::new(alice_key, authority.public_key(), alice_lease);
    alice_cfg(&mut alice_config);
    let mut bob_config = NodeConfig::new(bob_key, authority.public_key(), bob_lease.clone());
    bob_config.accept_unknown_peers = true;
    bob_cfg(&mut bob_config);
    let mut alice_node = Node::new(alice_config, sim.seed());
    let bob_node = Node::new(bob_config, sim.seed());
    let bob_at_alice = alice_node
        .add_peer(bob_lease, PeerConfig::default(), sim.now().instant)
        .unwrap();
    let alice = sim.add_host("alice", alice_node, alice_endpoint());
    let bob = sim.add_host("bob", bob_node, bob_endpoint());
    World {
        sim,
        alice,
        bob,
        bob_at_alice,
        alice_addr: "2002:102:304:1::a".parse().unwrap(),
        bob_addr: "2002:b16:212c:1::1".parse().unwrap(),
        authority,
    }
}

impl World {
    /// Another terminal on the network, with bob as its configured peer.
    fn add_terminal(
        &mut self,
        name: &str,
        key: StaticKeypair,
        lease: SignedLease,
        seed: [u8; 32],
        address: &str,
    ) -> (HostId, PeerId) {
        let bob_lease = self.sim.host(self.bob).node.local_lease().clone();
        let mut node = Node::new(
            NodeConfig::new(key, self.authority.public_key(), lease),
            seed,
        );
        let now = self.sim.now().instant;
        let bob = node
            .add_peer(bob_lease, PeerConfig::default(), now)
            .unwrap();
        (self.sim.add_host(name, node, address.parse().unwrap()), bob)
    }

    /// Configure alice as a peer of bob's (so bob can initiate too).
    fn bob_knows_alice(&mut self) -> PeerId {
        let alice_lease = self.sim.host(self.alice).node.local_lease().clone();
        let now = self.sim.now().instant;
        let config = PeerConfig {
            endpoint: Some(alice_endpoint()),
            ..PeerConfig::default()
        };
        self.sim
            .host_mut(self.bob)
            .node
            .add_peer(alice_lease, config, now)
            .unwrap()
    }

    /// Handshake initiations alice sent, as captured: (from, to, bytes).
    fn initiations_from_alice(&self) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
        let capture = self.sim.capture.as_ref().expect("capture is on");
        let initiations: Vec<_> = capture
            .iter()
            .filter(|(from, _, b)| *from == alice_endpoint() && b.get(4) == Some(&1))
            .cloned()
            .collect();
        assert!(!initiations.is_empty(), "no initiation captured");
        initiations
    }

    fn alice_at_bob(&self) -> Option<PeerId> {
        let key = *self.sim.host(self.alice).node.public_key();
        self.sim.host(self.bob).node.peer_by_key(&key)
    }

    fn to_bob(&self, tag: u64) -> Vec<u8> {
        ipv6_packet(self.alice_addr, self.bob_addr, &payload(tag))
    }

    fn to_alice(&self, tag: u64) -> Vec<u8> {
        ipv6_packet(self.bob_addr, self.alice_addr, &payload(tag))
    }

    /// Send a packet alice → bob once a second until bob has one (a lost
    /// data packet is not retransmitted by the tunnel, as on any IP link).
    fn establish(&mut self) {
        let packet = self.to_bob(0);
        let bob = self.bob;
        for _ in 0..60 {
            self.sim.send(self.alice, self.bob_at_alice, &packet);
            if self
                .sim
                .run_until_condition(Duration::from_secs(1), |s| !s.host(bob).inbox.is_empty())
            {
                return;
            }
        }
        panic!("tunnel did not come up in 60 simulated seconds");
    }
}

/// A payload that names its tag and is long enough to be worth forging.
fn payload(tag: u64) -> Vec<u8> {
    let mut p = tag.to_be_bytes().to_vec();
    p.extend((0..200u32).map(|i| (tag as u32).wrapping_mul(31).wrapping_add(i) as u8));
    p
}

fn tag_of(packet: &[u8]) -> u64 {
    u64::from_be_bytes(packet[48..56].try_into().unwrap())
}

#[test]
fn handshake_completes_under_20_percent_loss() {
    let link = LinkConditions {
        loss: 0.20,
        ..LinkConditions::PERFECT
    };
    let mut retried = 0;
    for seed in 0..30 {
        let mut w = world(seed, link);
        w.establish();
        let alice = &w.sim.host(w.alice).node;
        assert_eq!(alice.counters().handshakes_completed, 1, "seed {seed}");
        if alice.counters().initiations_sent > 1 {
            retried += 1;
        }
        // The delivered packet is the one alice sent, unaltered.
        assert_eq!(
            w.sim.host(w.bob).inbox[0].packet,
            w.to_bob(0),
            "seed {seed}"
        );
    }
    // With 20 % loss some of 30 runs must have needed a retransmission;
    // otherwise the loss model is not doing anything.
    assert!(retried > 0);
}

#[test]
fn ten_minutes_with_rekeys_deliver_exactly_what_the_network_delivered() {
    let link = LinkConditions {
        loss: 0.05,
        duplicate: 0.03,
        reorder: 0.10,
        delay: Duration::from_millis(10),
        reorder_delay: Duration::from_millis(25),
    };
    let mut w = world(42, link);
    w.establish();
    let alice_at_bob = w.alice_at_bob().expect("bob learned alice");
    let mut sent: HashMap<u64, Vec<u8>> = HashMap::new();
    let start = w.sim.now().instant;
    let mut tag = 1u64;
    while w.sim.now().instant - start < Duration::from_secs(600) {
        let a = w.to_bob(tag);
        assert_eq!(
            w.sim.send_tagged(w.alice, w.bob_at_alice, &a, Some(tag)),
            SendOutcome::Sent
        );
        sent.insert(tag, a);
        let b = w.to_alice(tag + 1);
        assert_eq!(
            w.sim.send_tagged(w.bob, alice_at_bob, &b, Some(tag + 1)),
            SendOutcome::Sent
        );
        sent.insert(tag + 1, b);
        tag += 2;
        w.sim.run_for(Duration::from_millis(50));
    }
    w.sim.run_for(Duration::from_secs(1));

    for (host, other) in [(w.bob, w.alice), (w.alice, w.bob)] {
        let mut got = HashSet::new();
        for d in &w.sim.host(host).inbox {
            let t = tag_of(&d.packet);
            if t == 0 {
                continue; // the packet that brought the tunnel up
            }
            assert!(got.insert(t), "tag {t} delivered twice");
            assert_eq!(Some(&d.packet), sent.get(&t), "tag {t} altered or forged");
        }
        let network: HashSet<u64> = w
            .sim
            .delivered_tags
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(
            got,
            network,
            "{} did not get exactly what the network delivered",
            w.sim.host(host).name
        );
        assert!(got.len() > 5000);
        let counters = w.sim.host(host).node.counters();
        assert_eq!(counters.drops(DropReason::EspAuthenticationFailed), 0);
        assert_eq!(counters.drops(DropReason::SpoofedSource), 0);
        let _ = other;
    }
    let alice_peer = w.sim.host(w.alice).node.peer(w.bob_at_alice).unwrap();
    assert!(
        alice_peer.stats().handshakes >= 5,
        "expected the first handshake and at least 4 rekeys, got {}",
        alice_peer.stats().handshakes
    );
    assert!(w.sim.stats.duplicated > 0 && w.sim.stats.lost > 0 && w.sim.stats.reordered > 0);
    // Duplicates the network made were refused by the replay window.
    assert!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::EspReplayDuplicate)
            > 0
    );
}

#[test]
fn spoofed_inner_source_is_dropped_and_counted() {
    let mut w = world(3, LinkConditions::PERFECT);
    w.establish();
    let before = w.sim.host(w.bob).inbox.len();
    // Alice's node is "compromised": it sends with another user's address.
    let mallory: Ipv6Addr = "2002:102:304:1::b".parse().unwrap();
    let forged = ipv6_packet(mallory, w.bob_addr, b"transfer all the money");
    assert_eq!(
        w.sim.send(w.alice, w.bob_at_alice, &forged),
        SendOutcome::Sent
    );
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.host(w.bob).inbox.len(), before);
    assert_eq!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::SpoofedSource),
        1
    );
    let alice_at_bob = w.alice_at_bob().unwrap();
    assert_eq!(
        w.sim
            .host(w.bob)
            .node
            .peer(alice_at_bob)
            .unwrap()
            .stats()
            .spoofed_sources,
        1
    );
    // A genuine packet still goes through.
    let genuine = w.to_bob(9);
    w.sim.send(w.alice, w.bob_at_alice, &genuine);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.host(w.bob).inbox.last().unwrap().packet, genuine);
}

#[test]
fn replayed_initiation_is_refused() {
    let mut w = world(4, LinkConditions::PERFECT);
    w.sim.capture = Some(Vec::new());
    w.establish();
    let initiation = w.initiations_from_alice().swap_remove(0);
    let handshakes = w.sim.host(w.bob).node.counters().handshakes_completed;
    w.sim.run_for(Duration::from_secs(5));
    // An attacker replays it, from alice's address and from its own.
    w.sim
        .inject(initiation.0, initiation.1, initiation.2.clone());
    w.sim
        .inject("99.1.2.3:5555".parse().unwrap(), initiation.1, initiation.2);
    w.sim.run_for(Duration::from_secs(1));
    let bob = &w.sim.host(w.bob).node;
    assert_eq!(bob.counters().drops(DropReason::ReplayedInitiation), 2);
    assert_eq!(bob.counters().handshakes_completed, handshakes);
    // The replay did not move alice's endpoint at bob.
    let alice_at_bob = w.alice_at_bob().unwrap();
    assert_eq!(
        bob.peer(alice_at_bob).unwrap().endpoint(),
        Some(alice_endpoint())
    );
}

#[test]
fn nat_rebinding_is_followed_without_a_new_handshake() {
    let mut w = world(5, LinkConditions::PERFECT);
    w.establish();
    let alice_at_bob = w.alice_at_bob().unwrap();
    let handshakes = w.sim.host(w.alice).node.counters().handshakes_completed;
    let moved: SocketAddr = "44.55.66.77:61001".parse().unwrap();
    w.sim.rebind(w.alice, moved);
    let up = w.to_bob(1);
    w.sim.send(w.alice, w.bob_at_alice, &up);
    w.sim.run_for(Duration::from_millis(100));
    let bob = &w.sim.host(w.bob).node;
    assert_eq!(bob.peer(alice_at_bob).unwrap().endpoint(), Some(moved));
    assert!(w.sim.host(w.bob).events.iter().any(|e| matches!(
        e,
        Event::EndpointChanged { to, .. } if *to == moved
    )));
    // Bob's answer reaches alice at her new address.
    let down = w.to_alice(2);
    assert_eq!(w.sim.send(w.bob, alice_at_bob, &down), SendOutcome::Sent);
    w.sim.run_for(Duration::from_millis(100));
    assert_eq!(w.sim.host(w.alice).inbox.last().unwrap().packet, down);
    assert_eq!(
        w.sim.host(w.alice).node.counters().handshakes_completed,
        handshakes
    );
    assert_eq!(w.sim.stats.unroutable, 0);
}

#[test]
fn under_load_the_responder_demands_a_cookie_and_the_initiator_complies() {
    let mut w = world(6, LinkConditions::PERFECT);
    w.sim.host_mut(w.bob).node.set_under_load(true);
    w.establish();
    let bob = w.sim.host(w.bob).node.counters();
    assert_eq!(bob.cookie_replies_sent, 1);
    assert_eq!(bob.drops(DropReason::CookieRequired), 1);
    assert_eq!(bob.handshakes_completed, 1);
    assert_eq!(w.sim.host(w.alice).node.counters().initiations_sent, 2);
}

#[test]
fn a_flood_of_initiations_from_one_source_is_rate_limited_under_load() {
    let mut w = world(7, LinkConditions::PERFECT);
    w.sim.capture = Some(Vec::new());
    w.sim.host_mut(w.bob).node.set_under_load(true);
    w.establish();
    // Replaying captured initiations (which carry a valid cookie for alice's
    // address) is rate limited before any DH work is done.
    let initiations: Vec<_> = w.initiations_from_alice();
    let last = initiations.last().unwrap().clone();
    for _ in 0..50 {
        w.sim.inject(last.0, last.1, last.2.clone());
    }
    w.sim.run_for(Duration::from_millis(100));
    let bob = w.sim.host(w.bob).node.counters();
    assert!(bob.drops(DropReason::HandshakeRateLimited) >= 40, "{bob:?}");
}

#[test]
fn handshake_retransmits_with_backoff_then_gives_up() {
    let mut w = world(
        8,
        LinkConditions {
            loss: 1.0,
            ..LinkConditions::PERFECT
        },
    );
    let packet = w.to_bob(1);
    assert_eq!(
        w.sim.send(w.alice, w.bob_at_alice, &packet),
        SendOutcome::Queued
    );
    w.sim.run_for(Duration::from_secs(20));
    let sent_20s = w.sim.host(w.alice).node.counters().initiations_sent;
    // 1 s, 2 s, 4 s, 8 s, 8 s … (+ jitter): about 5 attempts in 20 s.
    assert!(
        (4..=6).contains(&sent_20s),
        "{sent_20s} initiations in 20 s"
    );
    w.sim.run_for(Duration::from_secs(80));
    let alice = &w.sim.host(w.alice);
    assert!(alice.events.iter().any(|e| matches!(
        e,
        Event::HandshakeTimedOut {
            dropped_packets: 1,
            ..
        }
    )));
    assert_eq!(alice.node.counters().drops(DropReason::HandshakeTimeout), 1);
    assert!(!alice
        .node
        .peer(w.bob_at_alice)
        .unwrap()
        .handshake_in_flight());
    // The next packet starts a new round, and with the link back it works.
    w.sim.link = LinkConditions::PERFECT;
    w.establish();
}

#[test]
fn an_unknown_peer_is_refused_when_the_node_does_not_learn_peers() {
    let mut w = world_with(
        9,
        LinkConditions::PERFECT,
        |_| {},
        |bob| bob.accept_unknown_peers = false,
    );
    let packet = w.to_bob(1);
    w.sim.send(w.alice, w.bob_at_alice, &packet);
    w.sim.run_for(Duration::from_secs(2));
    assert!(w.sim.host(w.bob).inbox.is_empty());
    assert!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::UnknownPeer)
            >= 1
    );
    assert_eq!(w.sim.host(w.bob).node.counters().handshakes_completed, 0);
}

#[test]
fn a_lease_from_another_authority_is_refused() {
    let mut w = world(10, LinkConditions::PERFECT);
    let rogue = LeaseAuthority::from_seed([9; 32]);
    let (key, lease) = issue_identity(
        &rogue,
        [5; 32],
        &IdentitySpec {
            name: "eve",
            kind: EntityKind::User,
            prefix: "2002:102:304:1::e/128".parse().unwrap(),
            groups: &[],
            valid_from: UnixTime::from_secs(T0 - 60),
            serial: 1,
            lifetime: DAY,
        },
    );
    let (eve, bob_at_eve) = w.add_terminal("eve", key, lease, [3; 32], "5.6.7.8:4500");
    let packet = ipv6_packet("2002:102:304:1::e".parse().unwrap(), w.bob_addr, b"hi");
    w.sim.send(eve, bob_at_eve, &packet);
    w.sim.run_for(Duration::from_secs(2));
    let bob = &w.sim.host(w.bob).node;
    assert!(bob.counters().drops(DropReason::BadLease) >= 1);
    assert_eq!(bob.counters().handshakes_completed, 0);
    assert!(w.sim.host(w.bob).inbox.is_empty());
}

#[test]
fn one_way_traffic_is_rekeyed_without_loss() {
    // Only bob (the responder) sends; alice answers with nothing but the
    // passive keepalives the protocol makes, and those carry her rekeys.
    let mut w = world(11, LinkConditions::PERFECT);
    w.establish();
    let alice_at_bob = w.alice_at_bob().unwrap();
    let start = w.sim.now().instant;
    let mut tag = 1u64;
    while w.sim.now().instant - start < Duration::from_secs(600) {
        let packet = w.to_alice(tag);
        assert_eq!(
            w.sim.send_tagged(w.bob, alice_at_bob, &packet, Some(tag)),
            SendOutcome::Sent,
            "bob could not send at {:?}",
            w.sim.now().instant - start
        );
        tag += 1;
        w.sim.run_for(Duration::from_millis(100));
    }
    w.sim.run_for(Duration::from_secs(1));
    let got: Vec<u64> = w
        .sim
        .host(w.alice)
        .inbox
        .iter()
        .map(|d| tag_of(&d.packet))
        .collect();
    assert_eq!(
        got,
        (1..tag).collect::<Vec<_>>(),
        "lost or reordered on a perfect link"
    );
    let alice = &w.sim.host(w.alice).node;
    assert!(alice.counters().keepalives_sent > 0);
    // One handshake, then one rekey every ~120 s: no extra ones.
    let handshakes = alice.peer(w.bob_at_alice).unwrap().stats().handshakes;
    assert!(
        (5..=6).contains(&handshakes),
        "{handshakes} handshakes in 600 s"
    );
    assert_eq!(
        w.sim.host(w.bob).node.counters().handshakes_completed,
        handshakes
    );
}

#[test]
fn a_new_terminal_with_a_new_key_takes_over_the_address() {
    let mut w = world(12, LinkConditions::PERFECT);
    w.establish();
    let old_alice = w.alice_at_bob().unwrap();
    // Alice logs in from a new phone: new key, newer lease, same address.
    let (key, lease) = issue_identity(
        &w.authority,
        [21; 32],
        &IdentitySpec {
            name: "alice",
            kind: EntityKind::User,
            prefix: "2002:102:304:1::a/128".parse().unwrap(),
            groups: &["staff"],
            valid_from: UnixTime::from_secs(T0 - 10),
            serial: 2,
            lifetime: DAY,
        },
    );
    let (phone, bob_at_phone) = w.add_terminal("phone", key, lease, [4; 32], "77.1.2.3:4500");
    let packet = w.to_bob(77);
    w.sim.send(phone, bob_at_phone, &packet);
    w.sim.run_for(Duration::from_secs(2));
    let bob = w.sim.host(w.bob);
    let new_alice = bob.node.route(&w.alice_addr).unwrap();
    assert_ne!(new_alice, old_alice);
    assert!(bob.node.peer(old_alice).is_none());
    assert!(bob.events.iter().any(
        |e| matches!(e, Event::PeerReplaced { old, new } if *old == old_alice && *new == new_alice)
    ));
    assert_eq!(bob.inbox.last().unwrap().packet, packet);
    // The old terminal's SA is gone with it.
    let old_packet = w.to_bob(78);
    w.sim.send(w.alice, w.bob_at_alice, &old_packet);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::UnknownSpi),
        1
    );
    // And the old lease cannot win the address back.
    w.sim.run_for(Duration::from_secs(20));
    assert_eq!(w.sim.host(w.bob).node.route(&w.alice_addr), Some(new_alice));
}

#[test]
fn simultaneous_initiations_converge() {
    // Both sides know each other and both have something to say at once.
    let mut w = world(13, LinkConditions::PERFECT);
    let alice_at_bob = w.bob_knows_alice();
    let (a, b) = (w.to_bob(1), w.to_alice(2));
    assert_eq!(w.sim.send(w.alice, w.bob_at_alice, &a), SendOutcome::Queued);
    assert_eq!(w.sim.send(w.bob, alice_at_bob, &b), SendOutcome::Queued);
    w.sim.run_for(Duration::from_secs(1));
    assert_eq!(w.sim.host(w.bob).inbox.first().map(|d| &d.packet), Some(&a));
    assert_eq!(
        w.sim.host(w.alice).inbox.first().map(|d| &d.packet),
        Some(&b)
    );
    // Afterwards every packet goes through in both directions.
    for tag in 10..110 {
        let (a, b) = (w.to_bob(tag), w.to_alice(tag));
        assert_eq!(w.sim.send(w.alice, w.bob_at_alice, &a), SendOutcome::Sent);
        assert_eq!(w.sim.send(w.bob, alice_at_bob, &b), SendOutcome::Sent);
        w.sim.run_for(Duration::from_millis(20));
    }
    assert_eq!(w.sim.host(w.bob).inbox.len(), 101);
    assert_eq!(w.sim.host(w.alice).inbox.len(), 101);
    assert_eq!(w.sim.host(w.bob).node.counters().total_drops(), 0);
    assert_eq!(w.sim.host(w.alice).node.counters().total_drops(), 0);
}

#[test]
fn an_expired_lease_stops_traffic_and_a_renewed_one_restores_it() {
    let authority = LeaseAuthority::from_seed([7; 32]);
    // Alice's lease runs out 240 s into the run.
    let short = alice_identity(
        &authority,
        1,
        UnixTime::from_secs(T0 - 60),
        Duration::from_secs(300),
    )
    .1;
    let mut w = world_with(14, LinkConditions::PERFECT, |a| a.lease = short, |_| {});
    w.establish();
    let alice_at_bob = w.alice_at_bob().unwrap();
    let mut tag = 1;
    let mut run = |w: &mut World, seconds: u64| {
        for _ in 0..seconds * 10 {
            let (a, b) = (w.to_bob(tag), w.to_alice(tag));
            w.sim.send(w.alice, w.bob_at_alice, &a);
            w.sim.send(w.bob, alice_at_bob, &b);
            tag += 1;
            w.sim.run_for(Duration::from_millis(100));
        }
    };
    run(&mut w, 230);
    let before = w.sim.host(w.bob).inbox.len();
    assert!(before >= 2299);
    run(&mut w, 30);
    // Expired at 240 s: a few packets at most after that moment.
    let after = w.sim.host(w.bob).inbox.len();
    assert!(
        after - before <= 101,
        "{} delivered after expiry",
        after - before
    );
    assert!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::LeaseExpired)
            > 0
    );
    assert!(
        w.sim
            .host(w.bob)
            .node
            .counters()
            .drops(DropReason::LeaseExpired)
            > 0
    );
    let stalled = w.sim.host(w.bob).inbox.len();
    run(&mut w, 10);
    assert_eq!(
        w.sim.host(w.bob).inbox.len(),
        stalled,
        "traffic flowed on an expired lease"
    );
    // Alice renews (addrd gives her serial 2); her next handshake carries it.
    let renewed = alice_identity(&authority, 2, w.sim.now().unix, DAY).1;
    w.sim.host_mut(w.alice).node.set_local_lease(renewed);
    run(&mut w, 30);
    assert!(
        w.sim.host(w.bob).inbox.len() > stalled + 100,
        "traffic did not resume"
    );
}

#[test]
fn a_psk_must_match_on_both_sides() {
    let psk: Psk = Psk::from_bytes([0x5a; 32]);
    // Alice uses a PSK, bob has none: the handshake fails at alice.
    let mut w = world_with(
        15,
        LinkConditions::PERFECT,
        |a| a.psk = Some(psk.clone()),
        |_| {},
    );
    let packet = w.to_bob(1);
    w.sim.send(w.alice, w.bob_at_alice, &packet);
    w.sim.run_for(Duration::from_secs(10));
    assert!(w.sim.host(w.bob).inbox.is_empty());
    assert!(
        w.sim
            .host(w.alice)
            .node
            .counters()
            .drops(DropReason::HandshakeFailed)
            >= 1
    );
    // With the same PSK on both, it works.
    let mut w = world_with(
        16,
        LinkConditions::PERFECT,
        |a| a.psk = Some(psk.clone()),
        |b| b.psk = Some(psk.clone()),
    );
    w.establish();
}

#[test]
fn an_old_initiation_replayed_into_a_restarted_node_is_refused() {
    let mut w = world(17, LinkConditions::PERFECT);
    w.sim.capture = Some(Vec::new());
    w.establish();
    let initiation = w.initiations_from_alice().swap_remove(0);
    w.sim.run_for(Duration::from_secs(600));
    // Bob restarts: he remembers no timestamps.
    let (key, lease) = bob_identity(&w.authority);
    let mut config = NodeConfig::new(key, w.authority.public_key(), lease);
    config.accept_unknown_peers = true;
    w.sim.host_mut(w.bob).node = Node::new(config, [8; 32]);
    w.sim
        .inject("99.1.2.3:5555".parse().unwrap(), initiation.1, initiation.2);
    w.sim.run_for(Duration::from_secs(1));
    let bob = &w.sim.host(w.bob).node;
    assert_eq!(bob.counters().drops(DropReason::StaleInitiation), 1);
    assert_eq!(bob.counters().handshakes_completed, 0);
    assert!(w
        .sim
        .host(w.bob)
        .node
        .peers()
        .all(|p| p.endpoint() != Some("99.1.2.3:5555".parse().unwrap())));
}

#[test]
fn a_responder_whose_key_confirmation_is_lost_sends_its_queue_soon() {
    let mut w = world(18, LinkConditions::PERFECT);
    let alice_at_bob = w.bob_knows_alice();
    let first = w.to_bob(1);
    w.sim.send(w.alice, w.bob_at_alice, &first);
    let bob = w.bob;
    assert!(w.sim.run_until_condition(Duration::from_secs(1), |s| s
        .host(bob)
        .node
        .counters()
        .handshakes_completed
        == 1));
    // The response is on its way; alice's first packet, bob's key
    // confirmation, will be lost.
    w.sim.link.loss = 1.0;
    let reply = w.to_alice(2);
    assert_eq!(w.sim.send(w.bob, alice_at_bob, &reply), SendOutcome::Queued);
    w.sim.run_for(Duration::from_millis(500));
    w.sim.link.loss = 0.0;
    let sent_at = w.sim.now().instant;
    let alice = w.alice;
    assert!(
        w.sim
            .run_until_condition(Duration::from_secs(30), |s| !s.host(alice).inbox.is_empty()),
        "bob's queued packet never arrived"
    );
    let waited = w.sim.now().instant - sent_at;
    assert!(
        waited < Duration::from_secs(7),
        "bob's packet waited {waited:?}"
    );
    assert_eq!(w.sim.host(w.alice).inbox[0].packet, reply);
    assert_eq!(w.sim.host(w.bob).node.queued_bytes(), 0);
}

#[test]
fn persistent_keepalive_can_be_started_and_stopped_at_runtime() {
    let mut w = world(31, LinkConditions::default());
    w.establish();
    let (alice, peer) = (w.alice, w.bob_at_alice);
    // Let the passive keepalive after the data packet go out.
    w.sim.run_for(Duration::from_secs(30));
    let sent = |w: &World| w.sim.host(alice).node.counters().keepalives_sent;
    let idle = sent(&w);
    w.sim.run_for(Duration::from_secs(60));
    assert_eq!(sent(&w), idle, "no keepalive without an interval");

    let now = w.sim.now().instant;
    assert!(w.sim.host_mut(alice).node.set_persistent_keepalive(
        peer,
        Some(Duration::from_secs(5)),
        now
    ));
    let node = &w.sim.host(alice).node;
    assert_eq!(
        node.peer(peer).unwrap().persistent_keepalive(),
        Some(Duration::from_secs(5))
    );
    w.sim.run_for(Duration::from_secs(60));
    let with = sent(&w);
    assert!(
        with >= idle + 10,
        "{with} keepalives after 60 s at 5 s, from {idle}"
    );

    let now = w.sim.now().instant;
    assert!(w
        .sim
        .host_mut(alice)
        .node
        .set_persistent_keepalive(peer, None, now));
    w.sim.run_for(Duration::from_secs(60));
    assert_eq!(sent(&w), with, "keepalives stopped");
    assert!(!w
        .sim
        .host_mut(alice)
        .node
        .set_persistent_keepalive(PeerId(999), None, now));
}

#[test]
fn an_authority_message_reaching_a_node_is_dropped_and_counted() {
    let mut w = world(9, LinkConditions::PERFECT);
    w.establish();
    // A well-formed authority initiation (type 0x04): the driver should
    // have given it to its authority client or server, not to the node.
    let mut datagram = vec![0, 0, 0, 0, 0x04, 0, 0, 0, 0, 0, 0x10, 0];
    datagram.extend_from_slice(&[0x5a; 32 + 32]);
    w.sim.inject(alice_endpoint(), bob_endpoint(), datagram);
    w.sim.run_for(Duration::from_millis(100));
    let bob = &w.sim.host(w.bob).node;
    assert_eq!(bob.counters().drops(DropReason::AuthorityMessage), 1);
}
