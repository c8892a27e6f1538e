//! The binding cache fed by a real overlay-proto node in the deterministic
//! simulator: a user's terminal handshakes with the home agent, roams to a
//! new endpoint, and the cache follows only what the node authenticated.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use addrd::bindings::{
    BindingCache, BindingCacheConfig, BindingError, BindingObserver, UpdateOutcome,
};
use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::node::{Node, NodeConfig};
use overlay_proto::session::{PeerConfig, PeerId};
use overlay_proto::sim::{
    ipv6_packet, issue_identity, HostId, IdentitySpec, LinkConditions, Simulation,
};
use overlay_proto::time::UnixTime;

const T0: u64 = 1_800_000_000;
const HOUR: Duration = Duration::from_secs(3600);

struct World {
    sim: Simulation,
    terminal: HostId,
    home: HostId,
    home_at_terminal: PeerId,
    alice: Ipv6Addr,
    home_addr: Ipv6Addr,
}

fn world() -> World {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let mut sim = Simulation::new(11, UnixTime::from_secs(T0), LinkConditions::PERFECT);
    let valid_from = UnixTime::from_secs(T0 - 60);
    let (home_key, home_lease) = issue_identity(
        &authority,
        [2; 32],
        &IdentitySpec {
            name: "addrd",
            kind: EntityKind::System,
            prefix: "2002:c633:6401::/64".parse().unwrap(),
            groups: &[],
            valid_from,
            lifetime: HOUR,
            serial: 1,
        },
    );
    let (alice_key, alice_lease) = issue_identity(
        &authority,
        [1; 32],
        &IdentitySpec {
            name: "alice",
            kind: EntityKind::User,
            prefix: "2002:c633:6401:1::a/128".parse().unwrap(),
            groups: &["staff"],
            valid_from,
            lifetime: HOUR,
            serial: 1,
        },
    );
    let mut home_config = NodeConfig::new(home_key, authority.public_key(), home_lease.clone());
    home_config.accept_unknown_peers = true;
    let home_node = Node::new(home_config, sim.seed());
    let mut terminal_node = Node::new(
        NodeConfig::new(alice_key, authority.public_key(), alice_lease),
        sim.seed(),
    );
    // The terminal's config names addrd's endpoint.
    let home_endpoint: SocketAddr = "198.51.100.1:4500".parse().unwrap();
    let home_config = PeerConfig {
        endpoint: Some(home_endpoint),
        ..PeerConfig::default()
    };
    let home_at_terminal = terminal_node
        .add_peer(home_lease, home_config, sim.now().instant)
        .unwrap();
    let home = sim.add_host("addrd", home_node, home_endpoint);
    let terminal = sim.add_host("alice", terminal_node, "203.0.113.5:40000".parse().unwrap());
    World {
        sim,
        terminal,
        home,
        home_at_terminal,
        alice: "2002:c633:6401:1::a".parse().unwrap(),
        home_addr: "2002:c633:6401::1".parse().unwrap(),
    }
}

impl World {
    /// Alice sends one packet to the home agent; wait until it arrives.
    fn talk(&mut self, tag: u8) {
        let packet = ipv6_packet(self.alice, self.home_addr, &[tag]);
        let home = self.home;
        let before = self.sim.host(home).inbox.len();
        for _ in 0..10 {
            self.sim.send(self.terminal, self.home_at_terminal, &packet);
            if self.sim.run_until_condition(Duration::from_secs(1), |s| {
                s.host(home).inbox.len() > before
            }) {
                return;
            }
        }
        panic!("packet {tag} never reached the home agent");
    }
}

/// The home agent's driver: every event and every delivered packet since
/// the last call goes through the observer into the cache, in order.
struct Driver {
    observer: BindingObserver,
    cache: BindingCache,
    events_seen: usize,
    inbox_seen: usize,
    outcomes: Vec<Result<UpdateOutcome, BindingError>>,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            observer: BindingObserver::new(),
            cache: BindingCache::new(BindingCacheConfig::default()),
            events_seen: 0,
            inbox_seen: 0,
            outcomes: Vec::new(),
        }
    }

    fn drain(&mut self, world: &World) {
        let host = world.sim.host(world.home);
        let now = world.sim.now();
        for event in &host.events[self.events_seen..] {
            if let Some(seen) = self.observer.event(&host.node, event) {
                self.outcomes.push(self.cache.update(now, seen));
            }
        }
        self.events_seen = host.events.len();
        for delivered in &host.inbox[self.inbox_seen..] {
            if let Some(seen) = self
                .observer
                .authenticated_packet(&host.node, delivered.peer)
            {
                self.outcomes.push(self.cache.update(now, seen));
            }
        }
        self.inbox_seen = host.inbox.len();
    }
}

#[test]
fn the_cache_follows_a_roaming_terminal() {
    let mut world = world();
    let mut driver = Driver::new();
    world.talk(1);
    driver.drain(&world);
    let now = world.sim.now();
    let binding = driver.cache.lookup(now.instant, &world.alice).unwrap();
    let first: SocketAddr = "203.0.113.5:40000".parse().unwrap();
    assert_eq!(binding.endpoint, first);
    assert_eq!(binding.lease.lease().name, "alice");
    assert_eq!(driver.outcomes.first(), Some(&Ok(UpdateOutcome::Created)));
    assert!(
        driver.outcomes.iter().all(Result::is_ok),
        "{:?}",
        driver.outcomes
    );

    // Roaming: the next authenticated packet comes from a new endpoint.
    let moved: SocketAddr = "192.0.2.77:51000".parse().unwrap();
    world.sim.rebind(world.terminal, moved);
    world.talk(2);
    driver.drain(&world);
    let now = world.sim.now();
    let binding = driver.cache.lookup(now.instant, &world.alice).unwrap();
    assert_eq!(binding.endpoint, moved);
    assert!(driver
        .outcomes
        .contains(&Ok(UpdateOutcome::Moved { from: first })));
    let sequence = binding.sequence;

    // Unauthenticated datagrams claiming alice's old endpoint change nothing.
    world
        .sim
        .inject(first, "198.51.100.1:4500".parse().unwrap(), vec![0u8; 64]);
    world
        .sim
        .inject(first, "198.51.100.1:4500".parse().unwrap(), vec![0xff]);
    world.sim.run_for(Duration::from_millis(100));
    driver.drain(&world);
    let binding = driver
        .cache
        .lookup(world.sim.now().instant, &world.alice)
        .unwrap();
    assert_eq!(binding.endpoint, moved);
    assert_eq!(binding.sequence, sequence);

    // Talking renews; silence expires it (300 s default lifetime).
    world.sim.run_for(Duration::from_secs(200));
    world.talk(3);
    driver.drain(&world);
    let renewed_at = world.sim.now().instant;
    assert_eq!(driver.outcomes.last(), Some(&Ok(UpdateOutcome::Renewed)));
    let binding = driver.cache.lookup(renewed_at, &world.alice).unwrap();
    assert_eq!(binding.expires, renewed_at + Duration::from_secs(300));
    world.sim.run_for(Duration::from_secs(301));
    let later = world.sim.now().instant;
    driver.drain(&world);
    assert!(driver.cache.lookup(later, &world.alice).is_none());
    assert_eq!(driver.cache.expire(later), 1);
    assert!(driver.cache.is_empty());
}

#[test]
fn an_observation_processed_late_is_refused() {
    let mut world = world();
    // A configured endpoint that no handshake has proved yet is no binding.
    let terminal = &world.sim.host(world.terminal).node;
    let mut observer = BindingObserver::new();
    assert_eq!(
        terminal.peer(world.home_at_terminal).unwrap().endpoint(),
        Some("198.51.100.1:4500".parse().unwrap())
    );
    assert!(observer
        .authenticated_packet(terminal, world.home_at_terminal)
        .is_none());
    world.talk(1);
    let host = world.sim.host(world.home);
    let peer = host.inbox[0].peer;
    let older = observer.authenticated_packet(&host.node, peer).unwrap();
    let newer = observer.authenticated_packet(&host.node, peer).unwrap();
    assert!(newer.sequence() > older.sequence());
    assert_eq!(newer.address(), world.alice);
    let mut cache = BindingCache::new(BindingCacheConfig::default());
    let now = world.sim.now();
    assert_eq!(cache.update(now, newer), Ok(UpdateOutcome::Created));
    assert!(matches!(
        cache.update(now, older),
        Err(BindingError::Stale { .. })
    ));
    assert_eq!(cache.counters().stale, 1);
}
