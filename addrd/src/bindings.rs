//! The home agent's binding cache (DESIGN §6): permanent address → the UDP
//! endpoint the entity was last *seen* at on the authenticated path, with
//! a sequence number and a lifetime, like a Mobile IPv6 binding.
//!
//! # Only authenticated traffic updates a binding
//!
//! [`BindingCache::update`] takes an [`AuthenticatedEndpoint`], which has
//! private fields and exactly one maker, [`BindingObserver`], which reads
//! them from what overlay-proto's [`Node`] reports:
//! - [`Event::EndpointChanged`]: the node authenticated a handshake or
//!   an ESP packet from a new endpoint (roaming, NAT rebinding);
//! - [`Event::HandshakeCompleted`]: a handshake with the peer completed;
//!   its endpoint is where the authenticated message came from;
//! - [`BindingObserver::authenticated_packet`]: the driver just got
//!   `Received::Packet { peer, .. }` from [`Node::handle_datagram`] (an
//!   ESP packet that decrypted and passed cryptokey routing), which keeps
//!   a binding alive while the entity talks.
//!
//! In every case the endpoint is [`Peer::endpoint`] as the node set it
//! from an authenticated datagram — never an address a packet *claims* —
//! and the address is the one of the peer's verified lease. A peer that
//! has not completed a handshake yet (its endpoint may only be configured)
//! yields nothing. The caller cannot build an [`AuthenticatedEndpoint`]
//! from an arbitrary address and endpoint.
//!
//! # Sequence numbers
//!
//! The observer stamps each observation with a sequence number, strictly
//! increasing in the order the node reported them (the node's event queue
//! and `handle_datagram` results come out in the order datagrams were
//! authenticated). The cache refuses an update whose sequence is not
//! higher than the binding's ([`BindingError::Stale`]), so an observation
//! processed late — handed between tasks, queued behind a newer one — can
//! never move a binding back to an old endpoint. Bindings are soft state
//! (DESIGN §14): a restarted addrd starts with an empty cache and a new
//! observer, and clients re-register by talking. Keep one observer per
//! cache; one made later for the same cache comes from
//! [`BindingObserver::continuing`].
//!
//! # Lifetime and expiry
//!
//! An update sets the binding's expiry to `now + lifetime` (from
//! [`BindingCacheConfig::lifetime`]), but never beyond the end of the
//! entity's lease: a binding does not outlive the lease that proved it.
//! Renewals (any newer observation) extend it. Time is always passed in
//! ([`Now`]); the cache never reads a clock. [`BindingCache::expire`]
//! removes expired bindings and [`BindingCache::next_expiry`] tells the
//! driver when to call it; lookups never return an expired binding even
//! before it is removed.
//!
//! # Bounded size, and why a flood cannot evict anyone
//!
//! The cache holds at most [`BindingCacheConfig::capacity`] bindings.
//! There is **no eviction**: when it is full, an update for an address
//! that has no binding yet is refused with [`BindingError::Full`] (after
//! removing expired bindings), and a legitimate binding leaves only by
//! expiring or by [`BindingCache::remove`] (revocation). Updates for an
//! address already bound always succeed. Creating a binding takes a
//! completed Noise handshake with a lease signed by the authority, and a
//! lease names one address, so whoever holds *k* valid leases can occupy
//! at most *k* entries however many packets or endpoints they use;
//! spoofed or unauthenticated packets never reach the cache. Set the
//! capacity above the number of entities in the directory and `Full`
//! cannot happen to a legitimate entity.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use overlay_proto::lease::SignedLease;
use overlay_proto::node::{Event, Node};
use overlay_proto::session::{Peer, PeerId};
use overlay_proto::time::Now;

/// Default binding lifetime: a live entity is seen at least every rekey
/// interval (120 s) while it talks, and NAT keepalives (25 s) keep its
/// SAs' endpoint fresh; 300 s outlives both with margin.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Default capacity: comfortably above the largest directory addrd is
/// sized for.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// Where an authenticated peer was seen. Only [`BindingObserver`] makes
/// one; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedEndpoint {
    address: Ipv6Addr,
    endpoint: SocketAddr,
    sequence: u64,
    lease: SignedLease,
}

impl AuthenticatedEndpoint {
    /// The entity's permanent address (a system's `::1`).
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// The UDP endpoint it was seen at.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    /// The observation's sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The verified lease that authenticated it.
    pub fn lease(&self) -> &SignedLease {
        &self.lease
    }
}

/// Turns what a [`Node`] reports into [`AuthenticatedEndpoint`]s, numbered
/// in the order observed. One per node; see the module documentation.
#[derive(Debug, Default)]
pub struct BindingObserver {
    next_sequence: u64,
}

impl BindingObserver {
    /// An observer whose first observation has sequence 1: for a new,
    /// empty cache.
    pub fn new() -> BindingObserver {
        BindingObserver::default()
    }

    /// An observer numbering above every sequence `cache` has seen: for
    /// a cache that outlives its observer (a node replaced at runtime),
    /// so the new observations are not all refused as stale.
    pub fn continuing(cache: &BindingCache) -> BindingObserver {
        BindingObserver {
            next_sequence: cache.highest_sequence,
        }
    }

    /// The endpoint an event of `node` proves, if it proves one:
    /// [`Event::EndpointChanged`] (its `to`) and
    /// [`Event::HandshakeCompleted`] (the peer's endpoint now). Call it for
    /// every event, in the order [`Node::poll_event`] returns them.
    pub fn event(&mut self, node: &Node, event: &Event) -> Option<AuthenticatedEndpoint> {
        match *event {
            Event::EndpointChanged { peer, to, .. } => {
                let peer = node.peer(peer)?;
                self.observe(peer, to)
            }
            Event::HandshakeCompleted { peer, .. } => {
                let peer = node.peer(peer)?;
                self.observe(peer, peer.endpoint()?)
            }
            _ => None,
        }
    }

    /// The endpoint of `peer` right after [`Node::handle_datagram`]
    /// returned `Received::Packet { peer, .. }` for it (call it then, and
    /// only then: that packet was authenticated and its source is now the
    /// peer's endpoint).
    pub fn authenticated_packet(
        &mut self,
        node: &Node,
        peer: PeerId,
    ) -> Option<AuthenticatedEndpoint> {
        let peer = node.peer(peer)?;
        self.observe(peer, peer.endpoint()?)
    }

    fn observe(&mut self, peer: &Peer, endpoint: SocketAddr) -> Option<AuthenticatedEndpoint> {
        // Before a completed handshake the endpoint may be one the driver
        // configured, not one the peer proved.
        peer.last_handshake()?;
        self.next_sequence += 1;
        Some(AuthenticatedEndpoint {
            address: lease_address(peer.lease()),
            endpoint,
            sequence: self.next_sequence,
            lease: peer.lease().clone(),
        })
    }
}

/// The address a lease's binding is kept under: a user's or application's
/// /128, a system's `::1` of its system virtual network.
pub fn lease_address(lease: &SignedLease) -> Ipv6Addr {
    lease.lease().address()
}

/// How the cache is bounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingCacheConfig {
    /// Most bindings held. See the module documentation.
    pub capacity: usize,
    /// How long a binding lives after its last update (capped by its
    /// lease).
    pub lifetime: Duration,
}

impl Default for BindingCacheConfig {
    fn default() -> BindingCacheConfig {
        BindingCacheConfig {
            capacity: DEFAULT_CAPACITY,
            lifetime: DEFAULT_LIFETIME,
        }
    }
}

/// One binding, as a lookup returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The permanent address.
    pub address: Ipv6Addr,
    /// Where it is now.
    pub endpoint: SocketAddr,
    /// Sequence number of the last update.
    pub sequence: u64,
    /// When it was first seen at this endpoint.
    pub since: Instant,
    /// When it was last updated.
    pub updated: Instant,
    /// When it expires unless renewed.
    pub expires: Instant,
    /// The lease that authenticated the last update.
    pub lease: SignedLease,
}

impl Binding {
    /// Time since the last update.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.updated)
    }

    /// Time left before it expires.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires.saturating_duration_since(now)
    }
}

/// What an accepted update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// A new binding.
    Created,
    /// The binding moved to a new endpoint (roaming, NAT rebinding).
    Moved {
        /// The endpoint before.
        from: SocketAddr,
    },
    /// Same endpoint, lifetime renewed.
    Renewed,
}

/// Why an update was refused. Each has a counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The binding has a sequence at least as high: the update is older
    /// than what the cache knows.
    #[error("stale binding update for {address}: sequence {offered} is not above {current}")]
    Stale {
        /// The address.
        address: Ipv6Addr,
        /// The binding's sequence.
        current: u64,
        /// The update's.
        offered: u64,
    },
    /// The cache is full and the address has no binding yet.
    #[error("binding cache full ({capacity} bindings): no binding for {address}")]
    Full {
        /// The address refused.
        address: Ipv6Addr,
        /// The capacity.
        capacity: usize,
    },
    /// The lease that authenticated the observation has already ended.
    #[error("lease of {address} has ended: no binding")]
    LeaseEnded {
        /// The address.
        address: Ipv6Addr,
    },
}

/// Counters of the binding cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindingCounters {
    /// Bindings created.
    pub created: u64,
    /// Bindings moved to a new endpoint.
    pub moved: u64,
    /// Bindings renewed at the same endpoint.
    pub renewed: u64,
    /// Updates refused as stale.
    pub stale: u64,
    /// Updates refused because the cache was full.
    pub full: u64,
    /// Updates refused because their lease had ended.
    pub lease_ended: u64,
    /// Bindings removed by expiry.
    pub expired: u64,
    /// Bindings removed by [`BindingCache::remove`].
    pub removed: u64,
}

/// The binding cache. See the module documentation.
#[derive(Debug)]
pub struct BindingCache {
    config: BindingCacheConfig,
    bindings: BTreeMap<Ipv6Addr, Binding>,
    /// (expiry, address) of every binding: the expiry order.
    expiries: BTreeSet<(Instant, Ipv6Addr)>,
    /// The highest sequence ever accepted.
    highest_sequence: u64,
    counters: BindingCounters,
}

impl BindingCache {
    /// An empty cache.
    pub fn new(config: BindingCacheConfig) -> BindingCache {
        BindingCache {
            config,
            bindings: BTreeMap::new(),
            expiries: BTreeSet::new(),
            highest_sequence: 0,
            counters: BindingCounters::default(),
        }
    }

    /// Record where an authenticated entity was seen. See the module
    /// documentation for what is refused and why.
    pub fn update(
        &mut self,
        now: Now,
        seen: AuthenticatedEndpoint,
    ) -> Result<UpdateOutcome, BindingError> {
        let address = seen.address;
        let lease_left = seen
            .lease
            .lease()
            .not_after
            .as_duration()
            .checked_sub(now.unix.as_duration())
            .filter(|left| !left.is_zero());
        let Some(lease_left) = lease_left else {
            self.counters.lease_ended += 1;
            return Err(BindingError::LeaseEnded { address });
        };
        let expires = now.instant + self.config.lifetime.min(lease_left);
        let highest = self.highest_sequence.max(seen.sequence);

        if let Some(binding) = self.bindings.get_mut(&address) {
            if seen.sequence <= binding.sequence {
                self.counters.stale += 1;
                return Err(BindingError::Stale {
                    address,
                    current: binding.sequence,
                    offered: seen.sequence,
                });
            }
            let outcome = if binding.endpoint == seen.endpoint {
                self.counters.renewed += 1;
                UpdateOutcome::Renewed
            } else {
                self.counters.moved += 1;
                binding.since = now.instant;
                UpdateOutcome::Moved {
                    from: std::mem::replace(&mut binding.endpoint, seen.endpoint),
                }
            };
            self.expiries.remove(&(binding.expires, address));
            self.expiries.insert((expires, address));
            self.highest_sequence = highest;
            binding.sequence = seen.sequence;
            binding.updated = now.instant;
            binding.expires = expires;
            if binding.lease != seen.lease {
                binding.lease = seen.lease;
            }
            return Ok(outcome);
        }

        if self.bindings.len() >= self.config.capacity {
            self.expire(now.instant);
        }
        if self.bindings.len() >= self.config.capacity {
            self.counters.full += 1;
            return Err(BindingError::Full {
                address,
                capacity: self.config.capacity,
            });
        }
        self.counters.created += 1;
        self.highest_sequence = highest;
        self.expiries.insert((expires, address));
        self.bindings.insert(
            address,
            Binding {
                address,
                endpoint: seen.endpoint,
                sequence: seen.sequence,
                since: now.instant,
                updated: now.instant,
                expires,
                lease: seen.lease,
            },
        );
        Ok(UpdateOutcome::Created)
    }

    /// Where `address` is now ("where is X"), unless its binding has
    /// expired.
    pub fn lookup(&self, now: Instant, address: &Ipv6Addr) -> Option<&Binding> {
        self.bindings
            .get(address)
            .filter(|binding| binding.expires > now)
    }

    /// Every live binding, by address (for `addrd bindings`).
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = &Binding> + '_ {
        self.bindings
            .values()
            .filter(move |binding| binding.expires > now)
    }

    /// Remove every binding expired at `now`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(&(expires, address)) = self.expiries.first() {
            if expires > now {
                break;
            }
            self.expiries.pop_first();
            self.bindings.remove(&address);
            removed += 1;
        }
        self.counters.expired += removed as u64;
        removed
    }

    /// When the next binding expires (call [`BindingCache::expire`] then).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.first().map(|&(expires, _)| expires)
    }

    /// Drop `address`'s binding now (revocation). Returns it.
    pub fn remove(&mut self, address: &Ipv6Addr) -> Option<Binding> {
        let binding = self.bindings.remove(address)?;
        self.expiries.remove(&(binding.expires, *address));
        self.counters.removed += 1;
        Some(binding)
    }

    /// Bindings held (expired ones not yet removed included).
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether the cache holds no binding.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// The counters.
    pub fn counters(&self) -> BindingCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_proto::lease::{EntityKind, Lease, LeaseAuthority};
    use overlay_proto::time::UnixTime;

    const T0: u64 = 1_800_000_000;

    fn signed_lease(name: &str, prefix: &str, not_after: u64) -> SignedLease {
        let authority = LeaseAuthority::from_seed([7; 32]);
        let lease = Lease {
            kind: EntityKind::User,
            serial: 1,
            not_before: UnixTime::from_secs(T0 - 60),
            not_after: UnixTime::from_secs(not_after),
            public_key: [1; 32],
            prefix: prefix.parse().unwrap(),
            name: name.into(),
            dn: format!("uid={name},ou=people,dc=example,dc=org"),
            groups: Vec::new(),
        };
        authority.sign(&lease).unwrap()
    }

    /// What a [`BindingObserver`] would report (tests only: built directly).
    fn seen(address: &str, endpoint: &str, sequence: u64) -> AuthenticatedEndpoint {
        AuthenticatedEndpoint {
            address: address.parse().unwrap(),
            endpoint: endpoint.parse().unwrap(),
            sequence,
            lease: signed_lease("alice", &format!("{address}/128"), T0 + 3600),
        }
    }

    /// A fake clock.
    struct Clock(Now);

    impl Clock {
        fn new() -> Clock {
            Clock(Now {
                instant: Instant::now(),
                unix: UnixTime::from_secs(T0),
            })
        }

        fn advance(&mut self, secs: u64) -> Now {
            self.0 = self.0.advanced(Duration::from_secs(secs));
            self.0
        }
    }

    fn cache(capacity: usize) -> BindingCache {
        BindingCache::new(BindingCacheConfig {
            capacity,
            lifetime: Duration::from_secs(300),
        })
    }

    const ALICE: &str = "fd00:1:2:1::a";

    #[test]
    fn update_then_lookup() {
        let mut clock = Clock::new();
        let mut cache = cache(10);
        let now = clock.0;
        assert_eq!(
            cache.update(now, seen(ALICE, "192.0.2.1:4500", 1)),
            Ok(UpdateOutcome::Created)
        );
        let address: Ipv6Addr = ALICE.parse().unwrap();
        let binding = cache.lookup(now.instant, &address).unwrap();
        assert_eq!(binding.endpoint, "192.0.2.1:4500".parse().unwrap());
        assert_eq!(binding.sequence, 1);
        assert_eq!(binding.lease.lease().name, "alice");
        assert_eq!(binding.expires, now.instant + Duration::from_secs(300));

        let later = clock.advance(10);
        let binding = cache.lookup(later.instant, &address).unwrap();
        assert_eq!(binding.age(later.instant), Duration::from_secs(10));
        assert_eq!(binding.remaining(later.instant), Duration::from_secs(290));
        assert!(cache
            .lookup(later.instant, &"fd00:1:2:1::b".parse().unwrap())
            .is_none());

        // Roaming: a newer observation from elsewhere moves it.
        assert_eq!(
            cache.update(later, seen(ALICE, "198.51.100.7:61000", 2)),
            Ok(UpdateOutcome::Moved {
                from: "192.0.2.1:4500".parse().unwrap()
            })
        );
        let binding = cache.lookup(later.instant, &address).unwrap();
        assert_eq!(binding.endpoint, "198.51.100.7:61000".parse().unwrap());
        assert_eq!(binding.since, later.instant);
        assert_eq!(cache.counters().created, 1);
        assert_eq!(cache.counters().moved, 1);
    }

    #[test]
    fn stale_update_never_overwrites_a_newer_one() {
        let clock = Clock::new();
        let mut cache = cache(10);
        cache
            .update(clock.0, seen(ALICE, "198.51.100.7:61000", 5))
            .unwrap();
        for sequence in [4, 5, 1] {
            assert_eq!(
                cache.update(clock.0, seen(ALICE, "192.0.2.1:4500", sequence)),
                Err(BindingError::Stale {
                    address: ALICE.parse().unwrap(),
                    current: 5,
                    offered: sequence,
                })
            );
        }
        let binding = cache
            .lookup(clock.0.instant, &ALICE.parse().unwrap())
            .unwrap();
        assert_eq!(binding.endpoint, "198.51.100.7:61000".parse().unwrap());
        assert_eq!(binding.sequence, 5);
        assert_eq!(cache.counters().stale, 3);
    }

    #[test]
    fn bindings_expire_and_renewal_extends_them() {
        let mut clock = Clock::new();
        let mut cache = cache(10);
        let address: Ipv6Addr = ALICE.parse().unwrap();
        let start = clock.0.instant;
        cache
            .update(clock.0, seen(ALICE, "192.0.2.1:4500", 1))
            .unwrap();
        cache
            .update(clock.0, seen("fd00:1:2:1::b", "192.0.2.2:4500", 2))
            .unwrap();
        assert_eq!(
            cache.next_expiry(),
            Some(clock.0.instant + Duration::from_secs(300))
        );

        // Alice renews at 200 s; b does not.
        let renewal = clock.advance(200);
        assert_eq!(
            cache.update(renewal, seen(ALICE, "192.0.2.1:4500", 3)),
            Ok(UpdateOutcome::Renewed)
        );
        let at_300 = clock.advance(100);
        assert!(cache
            .lookup(at_300.instant, &"fd00:1:2:1::b".parse().unwrap())
            .is_none());
        assert_eq!(cache.iter(at_300.instant).count(), 1);
        assert_eq!(cache.expire(at_300.instant), 1);
        assert_eq!(cache.len(), 1);
        let binding = cache.lookup(at_300.instant, &address).unwrap();
        assert_eq!(binding.since, start, "renewal keeps `since`");
        assert_eq!(binding.sequence, 3);
        assert_eq!(binding.expires, renewal.instant + Duration::from_secs(300));
        assert_eq!(cache.next_expiry(), Some(binding.expires));

        let at_500 = clock.advance(200);
        assert!(cache.lookup(at_500.instant, &address).is_none());
        assert_eq!(cache.expire(at_500.instant), 1);
        assert!(cache.is_empty());
        assert_eq!(cache.next_expiry(), None);
        assert_eq!(cache.counters().expired, 2);
        assert_eq!(cache.counters().renewed, 1);
    }

    #[test]
    fn a_binding_never_outlives_its_lease() {
        let clock = Clock::new();
        let mut cache = cache(10);
        let mut short = seen(ALICE, "192.0.2.1:4500", 1);
        short.lease = signed_lease("alice", "fd00:1:2:1::a/128", T0 + 30);
        cache.update(clock.0, short).unwrap();
        let binding = cache
            .lookup(clock.0.instant, &ALICE.parse().unwrap())
            .unwrap();
        assert_eq!(binding.expires, clock.0.instant + Duration::from_secs(30));

        let mut ended = seen("fd00:1:2:1::b", "192.0.2.2:4500", 2);
        ended.lease = signed_lease("bob", "fd00:1:2:1::b/128", T0);
        assert_eq!(
            cache.update(clock.0, ended),
            Err(BindingError::LeaseEnded {
                address: "fd00:1:2:1::b".parse().unwrap()
            })
        );
        assert_eq!(cache.counters().lease_ended, 1);
    }

    #[test]
    fn a_full_cache_refuses_newcomers_and_keeps_every_binding() {
        let mut clock = Clock::new();
        let mut cache = cache(3);
        for (i, address) in ["fd00::1", "fd00::2", "fd00::3"].iter().enumerate() {
            cache
                .update(clock.0, seen(address, "192.0.2.1:4500", i as u64 + 1))
                .unwrap();
        }
        // A flood of new addresses: refused, nobody evicted.
        for i in 0..1000u64 {
            let address = format!("fd00::1:{i:x}");
            assert_eq!(
                cache.update(clock.0, seen(&address, "203.0.113.9:1", 100 + i)),
                Err(BindingError::Full {
                    address: address.parse().unwrap(),
                    capacity: 3
                })
            );
        }
        assert_eq!(cache.counters().full, 1000);
        assert_eq!(cache.iter(clock.0.instant).count(), 3);
        // Bound addresses still update when full.
        assert_eq!(
            cache.update(clock.0, seen("fd00::2", "192.0.2.99:4500", 2000)),
            Ok(UpdateOutcome::Moved {
                from: "192.0.2.1:4500".parse().unwrap()
            })
        );
        // Room comes back by expiry (checked before refusing) or removal.
        assert!(cache.remove(&"fd00::1".parse().unwrap()).is_some());
        assert_eq!(
            cache.update(clock.0, seen("fd00::4", "192.0.2.4:1", 2001)),
            Ok(UpdateOutcome::Created)
        );
        let later = clock.advance(301);
        assert_eq!(
            cache.update(later, seen("fd00::5", "192.0.2.5:1", 2002)),
            Ok(UpdateOutcome::Created)
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.counters().removed, 1);
    }

    #[test]
    fn a_continuing_observer_numbers_above_the_cache() {
        let clock = Clock::new();
        let mut cache = cache(10);
        cache
            .update(clock.0, seen(ALICE, "192.0.2.1:4500", 41))
            .unwrap();
        cache
            .update(clock.0, seen("fd00::1", "192.0.2.1:4500", 7))
            .unwrap();
        assert_eq!(BindingObserver::continuing(&cache).next_sequence, 41);
        assert_eq!(BindingObserver::new().next_sequence, 0);
    }

    #[test]
    fn iteration_is_by_address() {
        let clock = Clock::new();
        let mut cache = cache(10);
        for (sequence, address) in ["fd00::3", "fd00::1", "fd00::2"].iter().enumerate() {
            cache
                .update(
                    clock.0,
                    seen(address, "192.0.2.1:4500", sequence as u64 + 1),
                )
                .unwrap();
        }
        let order: Vec<String> = cache
            .iter(clock.0.instant)
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(order, ["fd00::1", "fd00::2", "fd00::3"]);
    }

    #[test]
    fn systems_are_bound_under_their_system_address() {
        let authority = LeaseAuthority::from_seed([7; 32]);
        let lease = Lease {
            kind: EntityKind::System,
            serial: 1,
            not_before: UnixTime::from_secs(T0),
            not_after: UnixTime::from_secs(T0 + 60),
            public_key: [2; 32],
            prefix: "2002:c633:640a:1::/64".parse().unwrap(),
            name: "app1".into(),
            dn: "cn=app1,ou=systems,dc=example,dc=org".into(),
            groups: Vec::new(),
        };
        let signed = authority.sign(&lease).unwrap();
        assert_eq!(
            lease_address(&signed),
            "2002:c633:640a:1::1".parse::<Ipv6Addr>().unwrap()
        );
    }
}
