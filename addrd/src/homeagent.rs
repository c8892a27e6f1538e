//! The home agent on the overlay (DESIGN §6, §9): addrd's own tunnel node.
//!
//! addrd is a peer of the overlay like any server. It holds a system lease
//! of its own — the infrastructure subnet (`::/64` of the overlay /48,
//! subnet 0), whose `::1` is addrd's overlay address — for the login
//! channel's static key, signed by its own authority, and it runs an
//! overlay-proto [`Node`] on the login channel's UDP socket (the login
//! channel demultiplexes: authority messages to the authority server,
//! everything else here). The Noise protocols of the two differ
//! (`Noise_IKpsk2` with the tunnel's prologue here, the authority
//! channel's own prologue there), so the one static key serves both with
//! separate transcripts. Every user's netmap carries this lease, so a
//! terminal that logged in adds addrd as a peer and keeps an SA to it.
//!
//! What the node's authenticated traffic is used for:
//! - **The binding cache.** Each handshake, each data packet and each
//!   authenticated keepalive from a peer goes through
//!   [`BindingObserver`] into the [`BindingCache`], so a binding always
//!   holds the endpoint the peer was last *seen* at (roaming and NAT
//!   rebinding move it; nothing a packet claims does). Clients send a
//!   keepalive every 25 s, which keeps their binding and their NAT
//!   mapping alive. Servers ask where an entity is with the authority
//!   channel's `WhereIs` (see [`crate::channel`]).
//! - **The overlay DNS.** A UDP query to `[overlay address]:53` comes out
//!   of [`HomeAgent::handle_datagram`] as a [`DnsQuery`]; the caller
//!   answers it from the zone and hands the answer to
//!   [`HomeAgent::send_dns_answer`].
//! - **A small host** ([`inner`]): Echo Replies, port unreachable for
//!   other UDP ports, resets for TCP.
//!
//! Peers learned from leases are removed when their lease expires. The
//! node never initiates: it answers whoever completes a handshake with a
//! lease signed by the authority.

pub mod inner;

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use overlay_proto::addr::Ipv4Policy;
use overlay_proto::esp;
use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{AuthorityKey, SignedLease};
use overlay_proto::node::{Event, Node, NodeConfig, Outgoing, Received, Transmit};
use overlay_proto::ratelimit::IcmpLimiter;
use overlay_proto::session::PeerId;
use overlay_proto::time::Now;
use tracing::debug;

use crate::bindings::{BindingCache, BindingError, BindingObserver, UpdateOutcome};
use inner::{Inner, InnerDrop};

/// What the home agent is built from.
#[derive(Debug)]
pub struct HomeAgentConfig {
    /// The login channel's static key pair.
    pub keypair: StaticKeypair,
    /// The authority whose leases peers present.
    pub authority: AuthorityKey,
    /// addrd's own lease (see the module documentation).
    pub lease: SignedLease,
    /// Which IPv4 addresses 6to4 addresses may map to.
    pub ipv4_policy: Ipv4Policy,
}

/// A DNS query that arrived through the tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsQuery {
    /// The querier (its overlay address and port).
    pub client: SocketAddrV6,
    /// addrd's overlay address, port 53.
    pub server: SocketAddrV6,
    /// The DNS message.
    pub message: Vec<u8>,
}

/// The home agent's node, bindings and host. See the module
/// documentation.
#[derive(Debug)]
pub struct HomeAgent {
    node: Node,
    observer: BindingObserver,
    bindings: Arc<Mutex<BindingCache>>,
    address: Ipv6Addr,
    transmits: VecDeque<Transmit>,
    /// ICMPv6 errors: ten per second, in bursts of ten (RFC 4443 §2.4 f).
    icmp: IcmpLimiter,
    counters: HomeAgentCounters,
    buffer: Vec<u8>,
}

/// What the home agent counts beyond the node's own counters.
#[derive(Clone, Debug, Default)]
struct HomeAgentCounters {
    dns_queries: u64,
    dns_answers: u64,
    replies: u64,
    icmp_rate_limited: u64,
    no_route: u64,
    binding_updates: u64,
    binding_moves: u64,
    binding_refusals: BTreeMap<&'static str, u64>,
    peers_expired: u64,
    inner_drops: BTreeMap<InnerDrop, u64>,
}

impl HomeAgent {
    /// A home agent whose observations go to `bindings`. `seed` feeds the
    /// node's random choices (32 bytes from the OS).
    pub fn new(
        config: HomeAgentConfig,
        bindings: Arc<Mutex<BindingCache>>,
        seed: [u8; 32],
    ) -> HomeAgent {
        let address = config.lease.lease().address();
        let mut node_config = NodeConfig::new(config.keypair, config.authority, config.lease);
        node_config.accept_unknown_peers = true;
        node_config.ipv4_policy = config.ipv4_policy;
        let observer = BindingObserver::continuing(&lock(&bindings));
        HomeAgent {
            node: Node::new(node_config, seed),
            observer,
            bindings,
            address,
            transmits: VecDeque::new(),
            icmp: IcmpLimiter::default(),
            counters: HomeAgentCounters::default(),
            buffer: Vec::new(),
        }
    }

    /// addrd's overlay address.
    pub fn address(&self) -> Ipv6Addr {
        self.address
    }

    /// The lease the node presents.
    pub fn lease(&self) -> &SignedLease {
        self.node.local_lease()
    }

    /// Present `lease` from now on (a renewal of addrd's own lease).
    pub fn set_lease(&mut self, lease: SignedLease) {
        self.node.set_local_lease(lease);
    }

    /// The binding cache the home agent feeds.
    pub fn bindings(&self) -> &Arc<Mutex<BindingCache>> {
        &self.bindings
    }

    /// Handle a datagram that is not an authority message. A DNS query
    /// comes back for the caller to answer; everything else is handled
    /// here (answers go out through [`HomeAgent::poll_transmit`]).
    pub fn handle_datagram(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &mut [u8],
    ) -> Option<DnsQuery> {
        let mut query = None;
        let mut reply = None;
        match self.node.handle_datagram(now, src, datagram) {
            Received::Packet { peer, packet } => {
                if let Some(seen) = self.observer.authenticated_packet(&self.node, peer) {
                    update(&self.bindings, &mut self.counters, now, seen);
                }
                match inner::classify(packet, self.address) {
                    Inner::Dns {
                        client,
                        server,
                        query: message,
                    } => {
                        self.counters.dns_queries += 1;
                        query = Some(DnsQuery {
                            client,
                            server,
                            message: message.to_vec(),
                        });
                    }
                    Inner::Reply { packet, is_error } => reply = Some((packet, is_error)),
                    Inner::Dropped(reason) => {
                        *self.counters.inner_drops.entry(reason).or_default() += 1;
                    }
                }
            }
            Received::Keepalive { peer: Some(peer) } => {
                if let Some(seen) = self.observer.authenticated_packet(&self.node, peer) {
                    update(&self.bindings, &mut self.counters, now, seen);
                }
            }
            Received::Keepalive { peer: None } | Received::Control | Received::Dropped(_) => {}
        }
        if let Some((packet, is_error)) = reply {
            if is_error && !self.icmp.allow(now.instant) {
                self.counters.icmp_rate_limited += 1;
            } else {
                self.counters.replies += 1;
                self.send_inner(now, &packet);
            }
        }
        self.drain_events(now);
        query
    }

    /// Send `answer` to the DNS `query`.
    pub fn send_dns_answer(&mut self, now: Now, query: &DnsQuery, answer: &[u8]) {
        let packet = inner::udp_packet(query.server, query.client, answer);
        self.counters.dns_answers += 1;
        self.send_inner(now, &packet);
        self.drain_events(now);
    }

    /// Run the node's timers and expire bindings.
    pub fn handle_timeout(&mut self, now: Now) {
        self.node.handle_timeout(now);
        self.drain_events(now);
        lock(&self.bindings).expire(now.instant);
    }

    /// When [`HomeAgent::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let node = self.node.poll_timeout();
        let bindings = lock(&self.bindings).next_expiry();
        match (node, bindings) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits
            .pop_front()
            .or_else(|| self.node.poll_transmit())
    }

    /// Every counter: `homeagent.*` for the home agent's own, `overlay.*`
    /// for the node's (totals and drops by reason).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let c = &self.counters;
        let mut out = BTreeMap::new();
        for (label, value) in [
            ("peers", self.node.peers().count() as u64),
            ("dns_queries", c.dns_queries),
            ("dns_answers", c.dns_answers),
            ("replies", c.replies),
            ("icmp_rate_limited", c.icmp_rate_limited),
            ("no_route", c.no_route),
            ("binding_updates", c.binding_updates),
            ("binding_moves", c.binding_moves),
            ("peers_expired", c.peers_expired),
        ] {
            out.insert(format!("homeagent.{label}"), value);
        }
        for (reason, value) in &c.binding_refusals {
            out.insert(format!("homeagent.binding_refused.{reason}"), *value);
        }
        for reason in InnerDrop::ALL {
            let value = c.inner_drops.get(&reason).copied().unwrap_or(0);
            out.insert(format!("homeagent.inner_drop.{}", reason.as_str()), value);
        }
        let node = self.node.counters();
        for total in node.totals() {
            out.insert(format!("overlay.{}", total.name), total.value);
        }
        for &reason in overlay_proto::counters::DropReason::ALL {
            out.insert(
                format!("overlay.drop.{}", reason.as_str()),
                node.drops(reason),
            );
        }
        out
    }

    /// Encapsulate an inner packet to whichever peer owns its destination.
    fn send_inner(&mut self, now: Now, packet: &[u8]) {
        let Some(destination) = packet
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
        else {
            return;
        };
        let Some(peer) = self.node.route(&destination) else {
            self.counters.no_route += 1;
            return;
        };
        self.buffer.resize(esp::encapsulated_len(packet.len()), 0);
        match self.node.encapsulate(now, peer, packet, &mut self.buffer) {
            Outgoing::Send {
                destination,
                datagram,
            } => self.transmits.push_back(Transmit {
                destination,
                contents: datagram.to_vec(),
            }),
            // Queued: it leaves with the handshake; dropped: counted by
            // the node.
            Outgoing::Queued | Outgoing::Dropped(_) => {}
        }
    }

    /// Feed the node's events to the binding cache; forget peers whose
    /// lease ended.
    fn drain_events(&mut self, now: Now) {
        let mut expired: Vec<PeerId> = Vec::new();
        while let Some(event) = self.node.poll_event() {
            if let Some(seen) = self.observer.event(&self.node, &event) {
                update(&self.bindings, &mut self.counters, now, seen);
            }
            if let Event::LeaseExpired { peer } = event {
                expired.push(peer);
            }
        }
        for peer in expired {
            if self.node.remove_peer(peer) {
                self.counters.peers_expired += 1;
            }
        }
    }
}

/// One observation into the cache, counted.
fn update(
    bindings: &Mutex<BindingCache>,
    counters: &mut HomeAgentCounters,
    now: Now,
    seen: crate::bindings::AuthenticatedEndpoint,
) {
    let address = seen.address();
    match lock(bindings).update(now, seen) {
        Ok(outcome) => {
            counters.binding_updates += 1;
            if let UpdateOutcome::Moved { from } = outcome {
                counters.binding_moves += 1;
                debug!(%address, %from, "binding moved");
            }
        }
        Err(e) => {
            let label = match e {
                BindingError::Stale { .. } => "stale",
                BindingError::Full { .. } => "full",
                BindingError::LeaseEnded { .. } => "lease_ended",
            };
            *counters.binding_refusals.entry(label).or_default() += 1;
            debug!(%address, error = %e, "binding update refused");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
