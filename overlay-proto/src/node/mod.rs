//! A node: one local identity, its peers, and the datagrams between them.
//!
//! [`Node`] is the sans-IO endpoint a daemon drives, in the quinn style:
//! - inputs: [`Node::handle_datagram`] for every UDP datagram received,
//!   [`Node::encapsulate`] for every inner IPv6 packet to send,
//!   [`Node::handle_timeout`] when [`Node::poll_timeout`] says so;
//! - outputs: [`Node::poll_transmit`] (handshake messages, cookie replies,
//!   keepalives and packets that waited for a handshake), and
//!   [`Node::poll_event`] (handshakes completed, endpoints changed, peers
//!   learned from leases, handshakes given up).
//!
//! The data path ([`Node::encapsulate`], and ESP in
//! [`Node::handle_datagram`]) writes into and borrows from the caller's
//! buffers and allocates nothing. Control-plane messages are rare and
//! allocate freely.
//!
//! The node owns the SPI table (every inbound SPI is unique on the node),
//! the cookie defence against handshake floods, per-source rate limits, and
//! the cryptokey routing table: each peer's lease prefix routes to it, and a
//! decrypted packet whose inner source is outside the lease that
//! authenticated it is dropped and counted.

#![deny(clippy::indexing_slicing)]

mod control;
mod timers;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::addr::{six_to_four_endpoint, Ipv4Policy};
use crate::aead::AeadProvider;
use crate::cookie::CookieChecker;
use crate::counters::{Counters, DropReason};
use crate::esp::{self, EspError, NEXT_HEADER_IPV6, NEXT_HEADER_NONE};
use crate::handshake::{HandshakeError, Psk, PublicKey, StaticKeypair};
use crate::lease::{AuthorityKey, EntityKind, SignedLease};
use crate::ratelimit::{LoadMonitor, RateLimitConfig, RateLimiter};
use crate::replay::ReplayError;
use crate::session::{Peer, PeerConfig, PeerId, SaKeyLog, SealError, Slot, Timers};
use crate::time::Now;
use crate::wire::{self, DatagramKind};

/// Default UDP port (RFC 3948 NAT-T).
pub const DEFAULT_PORT: u16 = 4500;

/// Largest inner packet the node will encapsulate (IPv6 without jumbograms).
pub const MAX_INNER_PACKET: usize = 65_535;

const HANDSHAKE_BUF: usize = 4096;
const IPV6_HEADER_LEN: usize = 40;

/// Settings of a node.
#[derive(Debug)]
pub struct NodeConfig {
    /// This node's static key pair.
    pub keypair: StaticKeypair,
    /// The authority whose signature makes a lease valid.
    pub authority: AuthorityKey,
    /// This node's own lease, sent in every handshake.
    pub lease: SignedLease,
    /// Protocol timers.
    pub timers: Timers,
    /// AEAD implementation for ESP.
    pub aead: AeadProvider,
    /// Accept initiations from keys not added with [`Node::add_peer`] when
    /// they carry a valid lease for that key (server role).
    pub accept_unknown_peers: bool,
    /// Upper bound on peers, configured and learned.
    pub max_peers: usize,
    /// Packets kept per peer while a handshake runs.
    pub queue_limit: usize,
    /// Bytes kept in all peers' queues together.
    pub queue_bytes_limit: usize,
    /// Pre-shared key for peers learned from leases (and for configured
    /// peers without one of their own).
    pub psk: Option<Psk>,
    /// Port used for endpoints derived from 6to4 addresses.
    pub default_port: u16,
    /// Which IPv4 addresses a 6to4 address may map to.
    pub ipv4_policy: Ipv4Policy,
    /// Per-source handshake rate limit applied under load.
    pub rate_limit: RateLimitConfig,
    /// Initiations per second above which the node demands cookies.
    pub load_threshold: u32,
    /// Emit [`Event::SaKeys`] for every new SA (decrypting captures only).
    pub dangerous_export_keys: bool,
}

impl NodeConfig {
    /// A configuration with the protocol defaults.
    pub fn new(keypair: StaticKeypair, authority: AuthorityKey, lease: SignedLease) -> Self {
        NodeConfig {
            keypair,
            authority,
            lease,
            timers: Timers::DEFAULT,
            aead: AeadProvider::default(),
            accept_unknown_peers: false,
            max_peers: 100_000,
            queue_limit: 64,
            queue_bytes_limit: 32 << 20,
            psk: None,
            default_port: DEFAULT_PORT,
            ipv4_policy: Ipv4Policy::default(),
            rate_limit: RateLimitConfig::default(),
            load_threshold: 1000,
            dangerous_export_keys: false,
        }
    }
}

/// A datagram the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// UDP destination.
    pub destination: SocketAddr,
    /// UDP payload.
    pub contents: Vec<u8>,
}

/// Something the driver may want to act on or log.
#[derive(Clone, Debug)]
pub enum Event {
    /// A handshake completed and a new SA is installed.
    HandshakeCompleted {
        /// The peer.
        peer: PeerId,
        /// Whether this node initiated it.
        initiator: bool,
    },
    /// A peer was created from a valid lease in an initiation.
    PeerLearned {
        /// The new peer.
        peer: PeerId,
    },
    /// A peer was removed because a newer lease for the same address
    /// arrived with another key (new terminal, rotated key).
    PeerReplaced {
        /// The removed peer.
        old: PeerId,
        /// The peer that now owns the address.
        new: PeerId,
    },
    /// An authenticated packet arrived from a new endpoint (roaming, NAT
    /// rebinding); replies now go there.
    EndpointChanged {
        /// The peer.
        peer: PeerId,
        /// Previous endpoint.
        from: Option<SocketAddr>,
        /// New endpoint.
        to: SocketAddr,
    },
    /// A handshake was given up; its waiting packets were dropped.
    HandshakeTimedOut {
        /// The peer.
        peer: PeerId,
        /// Packets dropped with it.
        dropped_packets: usize,
    },
    /// The peer's lease has expired (or is not valid yet): nothing is sent
    /// to or accepted from it until the driver supplies a fresh one
    /// (`Node::update_peer_lease`) or the peer brings one in a handshake.
    LeaseExpired {
        /// The peer.
        peer: PeerId,
    },
    /// Keys of a new SA (only with `dangerous_export_keys`).
    SaKeys(SaKeyLog),
}

/// What became of a received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A decrypted inner IPv6 packet from `peer`, its source address checked
    /// against the peer's lease. Borrows the datagram buffer.
    Packet {
        /// Who sent it.
        peer: PeerId,
        /// The inner IPv6 packet.
        packet: &'a [u8],
    },
    /// A handshake or cookie message, fully handled.
    Control,
    /// A keepalive: the NAT byte `0xFF` (`peer` is `None`: anyone can
    /// send it) or an authenticated ESP dummy packet from `peer`.
    Keepalive {
        /// The peer of an authenticated keepalive.
        peer: Option<PeerId>,
    },
    /// Refused and counted.
    Dropped(DropReason),
}

/// What became of an inner packet handed to [`Node::encapsulate`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing<'o> {
    /// Send `datagram` (a slice of the caller's buffer) to `destination`.
    Send {
        /// UDP destination.
        destination: SocketAddr,
        /// ESP packet.
        datagram: &'o [u8],
    },
    /// Held until a handshake completes; it will come out of
    /// [`Node::poll_transmit`].
    Queued,
    /// Refused and counted.
    Dropped(DropReason),
}

/// Why [`Node::add_peer`] refused a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// A peer with this static key exists.
    #[error("a peer with this public key already exists")]
    Duplicate,
    /// Another peer's lease already routes this prefix.
    #[error("another peer already owns prefix {0}")]
    PrefixTaken(Ipv6Net),
    /// The node is at `max_peers`.
    #[error("the node already has its maximum number of peers")]
    TooManyPeers,
    /// No peer has this handle.
    #[error("no such peer")]
    NoSuchPeer,
    /// A renewed lease must keep the key and prefix and not go back in serial.
    #[error("the lease is for another key or prefix, or older than the one held")]
    LeaseMismatch,
}

/// The sans-IO endpoint. See the module documentation.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    local_public: PublicKey,
    rng: ChaCha20Rng,
    cookies: CookieChecker,
    rate: RateLimiter,
    load: LoadMonitor,
    peers: HashMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    by_prefix: HashMap<Ipv6Net, PeerId>,
    prefix_lens: BTreeSet<u8>,
    spis: HashMap<u32, PeerId>,
    next_peer_id: u64,
    queued_bytes: usize,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    next_sweep: Option<Instant>,
}

impl Node {
    /// A node with no peers. `seed` feeds every random choice the node makes
    /// (SPIs, ephemeral keys, jitter, cookie secrets): drivers pass 32 bytes
    /// from the OS, simulations a fixed seed.
    pub fn new(config: NodeConfig, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let local_public = config.keypair.public();
        let cookies = CookieChecker::new(&local_public, &mut rng);
        let rate = RateLimiter::new(config.rate_limit);
        let load = LoadMonitor::new(config.load_threshold);
        Node {
            config,
            local_public,
            rng,
            cookies,
            rate,
            load,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_prefix: HashMap::new(),
            prefix_lens: BTreeSet::new(),
            spis: HashMap::new(),
            next_peer_id: 1,
            queued_bytes: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            next_sweep: None,
        }
    }

    // ----------------------------------------------------------------- peers

    /// Add a peer known from its (already verified) lease. Without a PSK of
    /// its own it uses the node's.
    pub fn add_peer(
        &mut self,
        lease: SignedLease,
        mut config: PeerConfig,
        now: Instant,
    ) -> Result<PeerId, AddPeerError> {
        let key = PublicKey(lease.lease().public_key);
        if self.by_key.contains_key(&key) {
            return Err(AddPeerError::Duplicate);
        }
        let prefix = lease.lease().prefix;
        if self.by_prefix.contains_key(&prefix) {
            return Err(AddPeerError::PrefixTaken(prefix));
        }
        if self.peers.len() >= self.config.max_peers {
            return Err(AddPeerError::TooManyPeers);
        }
        if config.psk.is_none() {
            config.psk.clone_from(&self.config.psk);
        }
        Ok(self.insert_peer(key, lease, config, now))
    }

    /// Give a peer a renewed lease (from a netmap refresh). It must be for
    /// the same key and prefix and not older than the one held.
    pub fn update_peer_lease(
        &mut self,
        id: PeerId,
        lease: SignedLease,
        now: Instant,
    ) -> Result<(), AddPeerError> {
        let peer = self.peers.get_mut(&id).ok_or(AddPeerError::NoSuchPeer)?;
        let (new, old) = (lease.lease(), peer.lease.lease());
        if new.public_key != old.public_key || new.prefix != old.prefix || new.serial < old.serial {
            return Err(AddPeerError::LeaseMismatch);
        }
        peer.lease = lease;
        // Timers stopped when the old lease expired start again.
        if let Some(interval) = peer.config.persistent_keepalive {
            peer.persistent_due.get_or_insert(now + interval);
        }
        Ok(())
    }

    /// Change a peer's persistent keepalive (a config reload). `None`
    /// stops it; an interval below [`MIN_PERSISTENT_KEEPALIVE`] is raised
    /// to it. The first keepalive is due one interval from `now`. Returns
    /// `false` for an unknown peer.
    ///
    /// [`MIN_PERSISTENT_KEEPALIVE`]: crate::session::MIN_PERSISTENT_KEEPALIVE
    pub fn set_persistent_keepalive(
        &mut self,
        id: PeerId,
        interval: Option<Duration>,
        now: Instant,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let interval = interval.map(|d| d.max(crate::session::MIN_PERSISTENT_KEEPALIVE));
        peer.config.persistent_keepalive = interval;
        peer.persistent_due = interval.map(|d| now + d);
        true
    }

    /// Remove a peer and everything it owns.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(mut peer) = self.peers.remove(&id) else {
            return false;
        };
        for spi in peer.clear_sas() {
            self.spis.remove(&spi);
        }
        self.queued_bytes -= queue_bytes(&peer.queue);
        self.by_key.remove(&peer.public_key);
        let prefix = peer.lease.lease().prefix;
        if self.by_prefix.get(&prefix) == Some(&id) {
            self.by_prefix.remove(&prefix);
        }
        true
    }

    /// A peer by handle.
    pub fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    /// A peer by static key.
    pub fn peer_by_key(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    /// All peers, in no particular order.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    /// Cryptokey routing: the peer whose lease prefix contains `destination`
    /// (longest prefix first).
    pub fn route(&self, destination: &Ipv6Addr) -> Option<PeerId> {
        self.prefix_lens.iter().rev().find_map(|len| {
            let net = Ipv6Net::new(*destination, *len).ok()?.trunc();
            self.by_prefix.get(&net).copied()
        })
    }

    /// This node's static public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.local_public
    }

    /// This node's lease.
    pub fn local_lease(&self) -> &SignedLease {
        &self.config.lease
    }

    /// Replace this node's lease (renewal); the next handshake carries it.
    pub fn set_local_lease(&mut self, lease: SignedLease) {
        self.config.lease = lease;
    }

    /// Node-wide counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Bytes waiting in all peers' handshake queues.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Force (or stop forcing) the cookie defence, e.g. when the driver's
    /// handshake queue is deep.
    pub fn set_under_load(&mut self, forced: bool) {
        self.load.set_forced(forced);
    }

    // ------------------------------------------------------------- outputs

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----------------------------------------------------------- data path

    /// Encapsulate one inner IPv6 packet for `peer` into `out`.
    ///
    /// `out` needs [`esp::encapsulated_len`] of the packet's length. Without
    /// a usable SA the packet is copied into the peer's bounded queue and a
    /// handshake starts; it comes out of [`Node::poll_transmit`] later.
    pub fn encapsulate<'o>(
        &mut self,
        now: Now,
        peer: PeerId,
        inner: &[u8],
        out: &'o mut [u8],
    ) -> Outgoing<'o> {
        if inner.len() > MAX_INNER_PACKET {
            return self.drop_outgoing(DropReason::PacketTooLarge);
        }
        let timers = self.config.timers;
        let Some(p) = self.peers.get_mut(&peer) else {
            return self.drop_outgoing(DropReason::NoSuchPeer);
        };
        if p.lease.lease().check_validity(now.unix).is_err() {
            return self.drop_outgoing(DropReason::LeaseExpired);
        }
        let Some(destination) = peer_endpoint(p, &self.config) else {
            return self.drop_outgoing(DropReason::NoEndpoint);
        };
        let sealed = match p.seal(now.instant, &timers, inner, NEXT_HEADER_IPV6, out) {
            Ok(sealed) => sealed,
            Err(SealError::NoSa) => return self.queue_for_handshake(now, peer, inner),
            Err(SealError::Esp(e)) => return self.drop_outgoing(drop_reason_for_send(&e)),
        };
        let in_flight = p.handshake.is_some();
        self.counters.packets_sent += 1;
        if sealed.wants_rekey && !in_flight {
            self.start_handshake(now, peer, false);
        }
        match out.get(..sealed.len) {
            Some(datagram) => Outgoing::Send {
                destination,
                datagram,
            },
            None => self.drop_outgoing(DropReason::BufferTooSmall),
        }
    }

    /// Handle one UDP datagram from `src`. ESP is authenticated and
    /// decrypted in place; control messages are answered through
    /// [`Node::poll_transmit`].
    pub fn handle_datagram<'a>(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &'a mut [u8],
    ) -> Received<'a> {
        match wire::classify(datagram) {
            Ok(DatagramKind::Esp { spi }) => self.handle_esp(now, src, spi, datagram),
            Ok(DatagramKind::Control) => match self.handle_control(now, src, datagram) {
                Ok(()) => Received::Control,
                Err(reason) => self.drop_received(reason),
            },
            Ok(DatagramKind::Keepalive) => {
                self.counters.nat_keepalives_received += 1;
                Received::Keepalive { peer: None }
            }
            Err(_) => self.drop_received(DropReason::MalformedDatagram),
        }
    }

    fn handle_esp<'a>(
        &mut self,
        now: Now,
        src: SocketAddr,
        spi: u32,
        datagram: &'a mut [u8],
    ) -> Received<'a> {
        let timers = self.config.timers;
        let Some(&id) = self.spis.get(&spi) else {
            return self.drop_received(DropReason::UnknownSpi);
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.drop_received(DropReason::UnknownSpi);
        };
        let Some(slot) = peer.slot_for_inbound(spi) else {
            // The SPI of a handshake still in flight: nothing can use it yet.
            return self.drop_received(DropReason::UnknownSpi);
        };
        if peer.lease.lease().check_validity(now.unix).is_err() {
            return self.drop_received(DropReason::LeaseExpired);
        }
        let Some(sa) = peer.sa_mut(slot) else {
            return self.drop_received(DropReason::UnknownSpi);
        };
        if sa.expired(now.instant, &timers) {
            return self.drop_received(DropReason::SaExpired);
        }
        let newest_before = sa.inbound.replay_window().top();
        let wants_rekey = slot == Slot::Current && sa.wants_rekey_on_receive(now.instant, &timers);
        let decapsulated = match sa.inbound.decapsulate(datagram) {
            Ok(d) => d,
            Err(e) => return self.drop_received(drop_reason_for_esp(&e)),
        };
        // Authenticated from here on.
        let (freed, promoted) = if slot == Slot::Next {
            peer.promote_next()
        } else {
            (Vec::new(), false)
        };
        peer.on_received(
            now.instant,
            decapsulated.next_header == NEXT_HEADER_IPV6,
            &timers,
        );
        // Only the newest packet moves the peer: a delayed or replayed one
        // from an old address cannot pull it back.
        let moved = (decapsulated.seq > newest_before && peer.endpoint != Some(src))
            .then(|| peer.endpoint.replace(src));
        let in_flight = peer.handshake.is_some();
        let flush = promoted && !peer.queue.is_empty();
        let verdict = match decapsulated.next_header {
            NEXT_HEADER_IPV6 => match inner_source(decapsulated.payload) {
                Some(source) if peer.lease.lease().contains_source(&source) => {
                    peer.stats.rx_packets += 1;
                    peer.stats.rx_bytes += decapsulated.payload.len() as u64;
                    Received::Packet {
                        peer: id,
                        packet: decapsulated.payload,
                    }
                }
                Some(_) => {
                    peer.stats.spoofed_sources += 1;
                    Received::Dropped(DropReason::SpoofedSource)
                }
                None => Received::Dropped(DropReason::MalformedInnerPacket),
            },
            NEXT_HEADER_NONE => Received::Keepalive { peer: Some(id) },
            _ => Received::Dropped(DropReason::UnsupportedNextHeader),
        };
        for spi in freed {
            self.spis.remove(&spi);
        }
        if let Some(from) = moved {
            self.endpoint_changed(id, from, src);
        }
        if flush {
            self.flush_queue(now, id);
        }
        if wants_rekey && !in_flight {
            self.start_handshake(now, id, false);
        }
        match verdict {
            Received::Packet { .. } => self.counters.packets_received += 1,
            Received::Keepalive { .. } => self.counters.keepalives_received += 1,
            Received::Dropped(reason) => self.counters.record(reason),
            Received::Control => {}
        }
        verdict
    }

    /// Keep a packet until a handshake completes, within the per-peer and
    /// node-wide bounds (oldest packets go first), and start the handshake.
    fn queue_for_handshake<'o>(&mut self, now: Now, id: PeerId, inner: &[u8]) -> Outgoing<'o> {
        let (limit, budget) = (self.config.queue_limit, self.config.queue_bytes_limit);
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.drop_outgoing(DropReason::NoSuchPeer);
        };
        let mut evicted = 0u64;
        // Evict this peer's oldest packets only if that makes room: when the
        // other peers' queues hold the budget, only the new packet goes.
        let others = self.queued_bytes - queue_bytes(&peer.queue);
        while others + inner.len() <= budget
            && (peer.queue.len() >= limit || self.queued_bytes + inner.len() > budget)
        {
            let Some(old) = peer.queue.pop_front() else {
                break;
            };
            self.queued_bytes -= old.len();
            evicted += 1;
        }
        let fits = limit > 0 && self.queued_bytes + inner.len() <= budget;
        if fits {
            peer.queue.push_back(inner.to_vec());
            self.queued_bytes += inner.len();
        }
        // A responder whose fresh SA awaits the initiator's first packet
        // does not start a crossing handshake: the confirmation flushes.
        let awaiting_confirmation = peer
            .next
            .as_ref()
            .is_some_and(|sa| sa.age(now.instant) < timers.rekey_timeout);
        let start = peer.handshake.is_none() && !awaiting_confirmation;
        for _ in 0..evicted {
            self.counters.record(DropReason::QueueFull);
        }
        if start {
            self.start_handshake(now, id, false);
        }
        if fits {
            Outgoing::Queued
        } else {
            self.drop_outgoing(DropReason::QueueFull)
        }
    }

    /// Send what waited for the handshake. Returns whether anything went.
    fn flush_queue(&mut self, now: Now, id: PeerId) -> bool {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let queued = std::mem::take(&mut peer.queue);
        self.queued_bytes -= queue_bytes(&queued);
        let Some(destination) = peer_endpoint(peer, &self.config) else {
            for _ in &queued {
                self.counters.record(DropReason::NoEndpoint);
            }
            return false;
        };
        let mut sent = 0u64;
        let mut wants_rekey = false;
        for inner in &queued {
            let mut contents = vec![0u8; esp::encapsulated_len(inner.len())];
            match peer.seal(now.instant, &timers, inner, NEXT_HEADER_IPV6, &mut contents) {
                Ok(sealed) => {
                    contents.truncate(sealed.len);
                    wants_rekey |= sealed.wants_rekey;
                    sent += 1;
                    self.transmits.push_back(Transmit {
                        destination,
                        contents,
                    });
                }
                Err(SealError::NoSa) => self.counters.record(DropReason::SaExpired),
                Err(SealError::Esp(e)) => self.counters.record(drop_reason_for_send(&e)),
            }
        }
        let in_flight = peer.handshake.is_some();
        self.counters.packets_sent += sent;
        if wants_rekey && !in_flight {
            self.start_handshake(now, id, false);
        }
        sent > 0
    }

    /// Send an authenticated dummy packet (next header 59). Returns whether
    /// one went.
    fn send_keepalive(&mut self, now: Now, id: PeerId) -> bool {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        if peer.lease.lease().check_validity(now.unix).is_err() {
            return false;
        }
        let Some(destination) = peer_endpoint(peer, &self.config) else {
            return false;
        };
        let mut contents = vec![0u8; esp::encapsulated_len(0)];
        let Ok(sealed) = peer.seal(now.instant, &timers, &[], NEXT_HEADER_NONE, &mut contents)
        else {
            return false;
        };
        contents.truncate(sealed.len);
        let in_flight = peer.handshake.is_some();
        self.counters.keepalives_sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents,
        });
        if sealed.wants_rekey && !in_flight {
            self.start_handshake(now, id, false);
        }
        true
    }

    // -------------------------------------------------------------- helpers

    fn insert_peer(
        &mut self,
        key: PublicKey,
        lease: SignedLease,
        config: PeerConfig,
        now: Instant,
    ) -> PeerId {
        let id = PeerId(self.next_peer_id);
        self.next_peer_id += 1;
        let prefix = lease.lease().prefix;
        self.by_key.insert(key, id);
        self.by_prefix.insert(prefix, id);
        self.prefix_lens.insert(prefix.prefix_len());
        self.peers
            .insert(id, Peer::new(id, key, lease, config, now));
        id
    }

    /// Drop a peer's queue, counting every packet under `reason`. Returns
    /// how many there were.
    fn drop_queue(&mut self, id: PeerId, reason: DropReason) -> usize {
        let Some(peer) = self.peers.get_mut(&id) else {
            return 0;
        };
        let queued = std::mem::take(&mut peer.queue);
        self.queued_bytes -= queue_bytes(&queued);
        for _ in &queued {
            self.counters.record(reason);
        }
        queued.len()
    }

    /// Forward secrecy for the node's own randomness: replace the RNG's key
    /// with its own output after every handshake, so the memory of a later
    /// compromised process cannot recompute earlier ephemeral keys.
    fn ratchet_rng(&mut self) {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(seed.as_mut());
        self.rng = ChaCha20Rng::from_seed(*seed);
    }

    fn endpoint_changed(&mut self, peer: PeerId, from: Option<SocketAddr>, to: SocketAddr) {
        if from.is_some() {
            self.counters.endpoint_changes += 1;
        }
        self.events
            .push_back(Event::EndpointChanged { peer, from, to });
    }

    fn drop_received<'a>(&mut self, reason: DropReason) -> Received<'a> {
        self.counters.record(reason);
        Received::Dropped(reason)
    }

    fn drop_outgoing<'o>(&mut self, reason: DropReason) -> Outgoing<'o> {
        self.counters.record(reason);
        Outgoing::Dropped(reason)
    }
}

fn queue_bytes(queue: &VecDeque<Vec<u8>>) -> usize {
    queue.iter().map(Vec::len).sum()
}

/// The source address of an inner IPv6 packet, if it is one.
fn inner_source(packet: &[u8]) -> Option<Ipv6Addr> {
    let header = packet.get(..IPV6_HEADER_LEN)?;
    if header.first()? >> 4 != 6 {
        return None;
    }
    let payload_len = u16::from_be_bytes([*header.get(4)?, *header.get(5)?]) as usize;
    if IPV6_HEADER_LEN + payload_len != packet.len() {
        return None;
    }
    let src: [u8; 16] = header.get(8..24)?.try_into().ok()?;
    Some(Ipv6Addr::from(src))
}

/// Where packets for `peer` go: the endpoint learned from authenticated
/// traffic or configured, else — for systems and applications, which own
/// their 6to4 prefix — the IPv4 address inside their address. (A user's
/// address is in the home agent's prefix, so it says nothing about where
/// the user is.)
fn peer_endpoint(peer: &Peer, config: &NodeConfig) -> Option<SocketAddr> {
    peer.endpoint.or_else(|| {
        let lease = peer.lease.lease();
        if lease.kind == EntityKind::User {
            return None;
        }
        six_to_four_endpoint(
            &lease.prefix.addr(),
            config.default_port,
            config.ipv4_policy,
        )
        .ok()
        .map(SocketAddr::V4)
    })
}

/// A random SPI ≥ 256 not yet used on this node.
fn allocate_spi(rng: &mut ChaCha20Rng, used: &HashMap<u32, PeerId>) -> u32 {
    loop {
        let spi = rng.next_u32();
        if spi >= esp::MIN_SPI && !used.contains_key(&spi) {
            return spi;
        }
    }
}

/// Exponential backoff with up to 25 % jitter, never zero.
fn retry_delay(timers: &Timers, attempts: u32, rng: &mut ChaCha20Rng) -> Duration {
    let base = timers
        .handshake_retry_initial
        .saturating_mul(1u32 << attempts.min(16))
        .min(timers.handshake_retry_max)
        .max(Duration::from_millis(10));
    let jitter_ms = (base.as_millis() as u64 / 4).max(1);
    base + Duration::from_millis(rng.next_u64() % jitter_ms)
}

fn drop_reason_for_esp(e: &EspError) -> DropReason {
    match e {
        EspError::Truncated => DropReason::EspTruncated,
        EspError::AuthenticationFailed => DropReason::EspAuthenticationFailed,
        EspError::Replay(ReplayError::Duplicate) => DropReason::EspReplayDuplicate,
        EspError::Replay(_) => DropReason::EspReplayTooOld,
        EspError::BadPadding => DropReason::EspBadPadding,
        _ => DropReason::EspMalformed,
    }
}

fn drop_reason_for_send(e: &EspError) -> DropReason {
    match e {
        EspError::SequenceExhausted => DropReason::SequenceExhausted,
        EspError::BufferTooSmall => DropReason::BufferTooSmall,
        _ => DropReason::PacketTooLarge,
    }
}

fn drop_reason_for_handshake(e: &HandshakeError) -> DropReason {
    match e {
        HandshakeError::Payload(_) => DropReason::HandshakePayload,
        _ => DropReason::HandshakeFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6(src: &str, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[59, 64]);
        p.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn inner_source_reads_only_well_formed_ipv6() {
        let good = ipv6("2002::1", b"abc");
        assert_eq!(inner_source(&good), Some("2002::1".parse().unwrap()));
        // Every truncation, a wrong version, and a length field that lies.
        for n in 0..good.len() {
            assert_eq!(inner_source(&good[..n]), None, "truncated to {n}");
        }
        let mut v4 = good.clone();
        v4[0] = 0x45;
        assert_eq!(inner_source(&v4), None);
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(inner_source(&longer), None);
    }

    #[test]
    fn retry_delay_backs_off_with_bounded_jitter_and_never_zero() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let t = Timers::DEFAULT;
        for (attempts, base) in [(0u32, 1u64), (1, 2), (2, 4), (3, 8), (4, 8), (40, 8)] {
            for _ in 0..100 {
                let d = retry_delay(&t, attempts, &mut rng);
                let base = Duration::from_secs(base);
                assert!(d >= base && d < base + base / 4, "{attempts}: {d:?}");
            }
        }
        let zero = Timers {
            handshake_retry_initial: Duration::ZERO,
            ..Timers::DEFAULT
        };
        assert!(retry_delay(&zero, 0, &mut rng) >= Duration::from_millis(10));
    }

    #[test]
    fn spis_are_reserved_aware_and_unique() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let mut used = HashMap::new();
        for _ in 0..10_000 {
            let spi = allocate_spi(&mut rng, &used);
            assert!(spi >= esp::MIN_SPI);
            assert!(used.insert(spi, PeerId(1)).is_none());
        }
    }
}
