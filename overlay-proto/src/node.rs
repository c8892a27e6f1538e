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
use crate::handshake::{
    HandshakeError, HandshakePayload, InitiatorHandshake, PublicKey, ResponderHandshake,
    StaticKeypair,
};
use crate::lease::{AuthorityKey, SignedLease};
use crate::ratelimit::{LoadMonitor, RateLimitConfig, RateLimiter};
use crate::replay::ReplayError;
use crate::session::{
    Peer, PeerConfig, PeerId, PendingHandshake, SaKeyLog, SecurityAssociation, Slot, Timers,
};
use crate::time::Now;
use crate::wire::{self, CookieReplyRepr, DatagramKind, InitiationRepr, MessageType, ResponseRepr};

/// Default UDP port (RFC 3948 NAT-T).
pub const DEFAULT_PORT: u16 = 4500;

/// Largest inner packet the node will encapsulate (IPv6 without jumbograms).
pub const MAX_INNER_PACKET: usize = 65_535;

const MAC_LEN: usize = 16;
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
    /// A keepalive (NAT `0xFF` or an authenticated ESP dummy packet).
    Keepalive,
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
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            next_sweep: None,
        }
    }

    // ----------------------------------------------------------------- peers

    /// Add a peer known from its (already verified) lease.
    pub fn add_peer(
        &mut self,
        lease: SignedLease,
        config: PeerConfig,
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
        Ok(self.insert_peer(key, lease, config, now))
    }

    /// Remove a peer and everything it owns.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(mut peer) = self.peers.remove(&id) else {
            return false;
        };
        for spi in peer.clear_sas() {
            self.spis.remove(&spi);
        }
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

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timers = &self.config.timers;
        self.peers
            .values()
            .filter_map(|p| p.next_deadline(timers))
            .chain(self.next_sweep)
            .min()
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
        let endpoint = p.endpoint.or_else(|| derived_endpoint(p, &self.config));
        let Some(destination) = endpoint else {
            return self.drop_outgoing(DropReason::NoEndpoint);
        };
        let Some(sa) = p.sending_sa(now.instant, &timers) else {
            return self.queue_for_handshake(now, peer, inner);
        };
        let wants_rekey = sa.wants_rekey_on_send(now.instant, &timers);
        let len = match sa.outbound.encapsulate(inner, NEXT_HEADER_IPV6, out) {
            Ok(datagram) => datagram.len(),
            Err(e) => return self.drop_outgoing(drop_reason_for_send(&e)),
        };
        p.on_sent(now.instant, true, &timers);
        p.stats.tx_packets += 1;
        p.stats.tx_bytes += inner.len() as u64;
        let in_flight = p.handshake.is_some();
        self.counters.packets_sent += 1;
        if wants_rekey && !in_flight {
            self.start_handshake(now, peer, false);
        }
        match out.get(..len) {
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
            Ok(DatagramKind::Control) => self.handle_control(now, src, datagram),
            Ok(DatagramKind::Keepalive) => {
                self.counters.nat_keepalives_received += 1;
                Received::Keepalive
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
        let Some(sa) = peer.sa_mut(slot) else {
            return self.drop_received(DropReason::UnknownSpi);
        };
        if sa.expired(now.instant, &timers) {
            return self.drop_received(DropReason::SaExpired);
        }
        let newest_before = sa.inbound.replay_window().top();
        let wants_rekey = sa.wants_rekey_on_receive(now.instant, &timers);
        let decapsulated = match sa.inbound.decapsulate(datagram) {
            Ok(d) => d,
            Err(e) => return self.drop_received(drop_reason_for_esp(&e)),
        };
        // Authenticated from here on.
        let mut freed = Vec::new();
        if slot == Slot::Next {
            freed = peer.promote_next();
        }
        let data = decapsulated.next_header == NEXT_HEADER_IPV6;
        peer.on_received(now.instant, data, &timers);
        if decapsulated.seq > newest_before && peer.endpoint != Some(src) {
            let from = peer.endpoint.replace(src);
            self.counters.endpoint_changes += 1;
            self.events.push_back(Event::EndpointChanged {
                peer: id,
                from,
                to: src,
            });
        }
        let in_flight = peer.handshake.is_some();
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
            NEXT_HEADER_NONE => Received::Keepalive,
            _ => Received::Dropped(DropReason::UnsupportedNextHeader),
        };
        for spi in freed {
            self.spis.remove(&spi);
        }
        if wants_rekey && !in_flight {
            self.start_handshake(now, id, false);
        }
        match verdict {
            Received::Packet { .. } => self.counters.packets_received += 1,
            Received::Keepalive => self.counters.keepalives_received += 1,
            Received::Dropped(reason) => self.counters.record(reason),
            Received::Control => {}
        }
        verdict
    }

    // -------------------------------------------------------- control plane

    fn handle_control(&mut self, now: Now, src: SocketAddr, datagram: &[u8]) -> Received<'static> {
        let kind = match wire::ControlPacket::new_checked(datagram) {
            Ok(packet) => packet.message_type(),
            Err(_) => return self.drop_received(DropReason::MalformedControl),
        };
        let result = match kind {
            MessageType::HandshakeInitiation => self.handle_initiation(now, src, datagram),
            MessageType::HandshakeResponse => self.handle_response(now, src, datagram),
            MessageType::CookieReply => self.handle_cookie_reply(now, datagram),
        };
        match result {
            Ok(()) => Received::Control,
            Err(reason) => self.drop_received(reason),
        }
    }

    fn handle_initiation(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let repr = InitiationRepr::parse(datagram).map_err(|_| DropReason::MalformedControl)?;
        let (before_mac1, before_mac2) = mac_spans(datagram)?;
        if !self.cookies.verify_mac1(before_mac1, &repr.mac1) {
            return Err(DropReason::BadMac1);
        }
        self.load.record(now.instant);
        if self.load.under_load(now.instant) {
            if !self
                .cookies
                .verify_mac2(now.instant, src, before_mac2, &repr.mac2)
            {
                self.send_cookie_reply(now, src, repr.sender_spi, &repr.mac1);
                return Err(DropReason::CookieRequired);
            }
            if !self.rate.allow(src.ip(), now.instant) {
                self.schedule_sweep(now.instant);
                return Err(DropReason::HandshakeRateLimited);
            }
            self.schedule_sweep(now.instant);
        }
        let (responder, initiator_key, payload) =
            ResponderHandshake::read_initiation(&self.config.keypair, repr.noise, &mut self.rng)
                .map_err(|e| drop_reason_for_handshake(&e))?;
        if payload.spi != repr.sender_spi {
            return Err(DropReason::HandshakePayload);
        }
        let id = self.peer_for_initiation(now, &initiator_key, &payload.lease)?;
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return Err(DropReason::UnknownPeer);
        };
        if peer
            .last_initiation_timestamp
            .is_some_and(|last| payload.timestamp <= last)
        {
            return Err(DropReason::ReplayedInitiation);
        }
        if peer.last_initiation_at.is_some_and(|at| {
            now.instant.saturating_duration_since(at) < timers.initiation_min_interval
        }) {
            return Err(DropReason::HandshakeFlood);
        }
        peer.last_initiation_timestamp = Some(payload.timestamp);
        peer.last_initiation_at = Some(now.instant);

        let local_spi = allocate_spi(&mut self.rng, &self.spis);
        let our_payload = HandshakePayload {
            spi: local_spi,
            timestamp: now.unix.tai64n(),
            lease: self.config.lease.as_bytes(),
        };
        let mut noise = [0u8; HANDSHAKE_BUF];
        let (noise_len, keys) = responder
            .write_response(peer.config.psk.as_ref(), &our_payload, &mut noise)
            .map_err(|e| drop_reason_for_handshake(&e))?;
        let noise = noise.get(..noise_len).ok_or(DropReason::BufferTooSmall)?;
        let response = ResponseRepr {
            sender_spi: local_spi,
            receiver_spi: payload.spi,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let message = seal_control(
            response.buffer_len(),
            |buf| response.emit(buf),
            peer,
            now.instant,
        )?;
        let sa = SecurityAssociation::new(
            &keys,
            local_spi,
            payload.spi,
            self.config.aead,
            now.instant,
            false,
        );
        let freed = peer.install_responded(sa);
        peer.stats.handshakes += 1;
        peer.last_handshake = Some(now.unix);
        let from = peer.endpoint.replace(src);
        let keylog = self.config.dangerous_export_keys.then(|| SaKeyLog {
            peer: id,
            inbound_spi: local_spi,
            outbound_spi: payload.spi,
            inbound: keys.inbound.clone(),
            outbound: keys.outbound.clone(),
        });
        for spi in freed {
            self.spis.remove(&spi);
        }
        self.spis.insert(local_spi, id);
        if from != Some(src) {
            self.counters.endpoint_changes += u64::from(from.is_some());
            self.events.push_back(Event::EndpointChanged {
                peer: id,
                from,
                to: src,
            });
        }
        self.transmits.push_back(Transmit {
            destination: src,
            contents: message,
        });
        self.counters.handshakes_completed += 1;
        self.events.push_back(Event::HandshakeCompleted {
            peer: id,
            initiator: false,
        });
        if let Some(k) = keylog {
            self.events.push_back(Event::SaKeys(k));
        }
        Ok(())
    }

    /// Find the peer an initiation comes from, or learn it from its lease.
    fn peer_for_initiation(
        &mut self,
        now: Now,
        key: &PublicKey,
        lease_bytes: &[u8],
    ) -> Result<PeerId, DropReason> {
        if let Some(&id) = self.by_key.get(key) {
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if peer.lease.as_bytes() == lease_bytes {
                // Same lease as before: only its validity window can change.
                if peer.lease.lease().not_after <= now.unix {
                    return Err(DropReason::BadLease);
                }
                return Ok(id);
            }
            let lease = self.verify_peer_lease(now, key, lease_bytes)?;
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if lease.lease().prefix != peer.lease.lease().prefix
                || lease.lease().serial < peer.lease.lease().serial
            {
                return Err(DropReason::BadLease);
            }
            peer.lease = lease;
            return Ok(id);
        }
        if !self.config.accept_unknown_peers {
            return Err(DropReason::UnknownPeer);
        }
        let lease = self.verify_peer_lease(now, key, lease_bytes)?;
        let prefix = lease.lease().prefix;
        let replaced = match self.by_prefix.get(&prefix) {
            Some(&old) => {
                let old_serial = self.peers.get(&old).map_or(0, |p| p.lease.lease().serial);
                if lease.lease().serial <= old_serial {
                    return Err(DropReason::BadLease);
                }
                Some(old)
            }
            None => None,
        };
        if replaced.is_none() && self.peers.len() >= self.config.max_peers {
            return Err(DropReason::TooManyPeers);
        }
        if let Some(old) = replaced {
            self.remove_peer(old);
        }
        let id = self.insert_peer(*key, lease, PeerConfig::default(), now.instant);
        self.events.push_back(Event::PeerLearned { peer: id });
        if let Some(old) = replaced {
            self.events.push_back(Event::PeerReplaced { old, new: id });
        }
        Ok(id)
    }

    fn verify_peer_lease(
        &self,
        now: Now,
        key: &PublicKey,
        lease_bytes: &[u8],
    ) -> Result<SignedLease, DropReason> {
        let lease = SignedLease::verify(lease_bytes, &self.config.authority, now.unix)
            .map_err(|_| DropReason::BadLease)?;
        if lease.lease().public_key != key.0 {
            return Err(DropReason::LeaseKeyMismatch);
        }
        Ok(lease)
    }

    fn handle_response(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DropReason> {
        let repr = ResponseRepr::parse(datagram).map_err(|_| DropReason::MalformedControl)?;
        let (before_mac1, _) = mac_spans(datagram)?;
        if !self.cookies.verify_mac1(before_mac1, &repr.mac1) {
            return Err(DropReason::BadMac1);
        }
        let id = *self
            .spis
            .get(&repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let pending = peer
            .handshake
            .as_mut()
            .filter(|h| h.local_spi == repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        // A forged or corrupted response leaves the handshake state intact,
        // so the genuine response can still complete it.
        let local_spi = pending.local_spi;
        let (payload, keys) = pending
            .state
            .finish(repr.noise)
            .map_err(|e| drop_reason_for_handshake(&e))?;
        if payload.spi != repr.sender_spi {
            return Err(DropReason::HandshakePayload);
        }
        let key = peer.public_key;
        if payload.lease != peer.lease.as_bytes() {
            let lease = self.verify_peer_lease(now, &key, &payload.lease)?;
            let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
            if lease.lease().prefix == peer.lease.lease().prefix
                && lease.lease().serial >= peer.lease.lease().serial
            {
                peer.lease = lease;
            }
        }
        let timers = self.config.timers;
        let peer = self.peers.get_mut(&id).ok_or(DropReason::UnknownPeer)?;
        let sa = SecurityAssociation::new(
            &keys,
            local_spi,
            payload.spi,
            self.config.aead,
            now.instant,
            true,
        );
        peer.handshake = None;
        let freed = peer.install_initiated(sa);
        peer.stats.handshakes += 1;
        peer.last_handshake = Some(now.unix);
        peer.on_received(now.instant, false, &timers);
        let from = peer.endpoint;
        if from != Some(src) {
            peer.endpoint = Some(src);
        }
        for spi in freed {
            self.spis.remove(&spi);
        }
        if from != Some(src) {
            self.counters.endpoint_changes += u64::from(from.is_some());
            self.events.push_back(Event::EndpointChanged {
                peer: id,
                from,
                to: src,
            });
        }
        self.counters.handshakes_completed += 1;
        self.events.push_back(Event::HandshakeCompleted {
            peer: id,
            initiator: true,
        });
        if self.config.dangerous_export_keys {
            self.events.push_back(Event::SaKeys(SaKeyLog {
                peer: id,
                inbound_spi: local_spi,
                outbound_spi: payload.spi,
                inbound: keys.inbound.clone(),
                outbound: keys.outbound.clone(),
            }));
        }
        self.flush_queue(now, id);
        Ok(())
    }

    fn handle_cookie_reply(&mut self, now: Now, datagram: &[u8]) -> Result<(), DropReason> {
        let repr = CookieReplyRepr::parse(datagram).map_err(|_| DropReason::MalformedControl)?;
        let id = *self
            .spis
            .get(&repr.receiver_spi)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        let peer = self
            .peers
            .get_mut(&id)
            .ok_or(DropReason::UnexpectedHandshakeMessage)?;
        if peer
            .handshake
            .as_ref()
            .is_none_or(|h| h.local_spi != repr.receiver_spi)
        {
            return Err(DropReason::UnexpectedHandshakeMessage);
        }
        peer.cookie_jar
            .consume_reply(now.instant, &repr.nonce, &repr.encrypted_cookie)
            .map_err(|_| DropReason::BadCookieReply)
    }

    fn send_cookie_reply(
        &mut self,
        now: Now,
        src: SocketAddr,
        receiver_spi: u32,
        mac1: &[u8; MAC_LEN],
    ) {
        let body = self
            .cookies
            .make_reply(now.instant, src, mac1, &mut self.rng);
        let repr = CookieReplyRepr {
            receiver_spi,
            nonce: body.nonce,
            encrypted_cookie: body.encrypted_cookie,
        };
        let mut contents = vec![0u8; repr.buffer_len()];
        if repr.emit(&mut contents).is_ok() {
            self.counters.cookie_replies_sent += 1;
            self.transmits.push_back(Transmit {
                destination: src,
                contents,
            });
        }
    }

    /// Start (or, with `retransmit`, retry) a handshake with `id`.
    fn start_handshake(&mut self, now: Now, id: PeerId, retransmit: bool) {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(destination) = peer
            .endpoint
            .or_else(|| derived_endpoint(peer, &self.config))
        else {
            self.counters.record(DropReason::NoEndpoint);
            return;
        };
        let (first_attempt, attempts) = match (&peer.handshake, retransmit) {
            (Some(h), true) => (h.first_attempt, h.attempts),
            _ => (now.instant, 0),
        };
        if let Some(old) = peer.handshake.take() {
            self.spis.remove(&old.local_spi);
        }
        let local_spi = allocate_spi(&mut self.rng, &self.spis);
        let payload = HandshakePayload {
            spi: local_spi,
            timestamp: now.unix.tai64n(),
            lease: self.config.lease.as_bytes(),
        };
        let mut noise = [0u8; HANDSHAKE_BUF];
        let started = InitiatorHandshake::start(
            &self.config.keypair,
            &peer.public_key,
            peer.config.psk.as_ref(),
            &payload,
            &mut self.rng,
            &mut noise,
        );
        let (state, noise_len) = match started {
            Ok(s) => s,
            Err(_) => {
                self.counters.record(DropReason::LocalLeaseUnusable);
                return;
            }
        };
        let Some(noise) = noise.get(..noise_len) else {
            return;
        };
        let initiation = InitiationRepr {
            sender_spi: local_spi,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let Ok(message) = seal_control(
            initiation.buffer_len(),
            |buf| initiation.emit(buf),
            peer,
            now.instant,
        ) else {
            self.counters.record(DropReason::LocalLeaseUnusable);
            return;
        };
        let delay = retry_delay(&timers, attempts, &mut self.rng);
        peer.handshake = Some(Box::new(PendingHandshake {
            state,
            local_spi,
            first_attempt,
            retry_at: now.instant + delay,
            attempts: attempts + 1,
        }));
        // Sending an initiation is not data: dead-peer detection restarts.
        peer.new_handshake_due = None;
        self.spis.insert(local_spi, id);
        self.counters.initiations_sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents: message,
        });
    }

    fn queue_for_handshake<'o>(&mut self, now: Now, id: PeerId, inner: &[u8]) -> Outgoing<'o> {
        let limit = self.config.queue_limit;
        let Some(peer) = self.peers.get_mut(&id) else {
            return self.drop_outgoing(DropReason::NoSuchPeer);
        };
        let mut overflowed = false;
        if peer.queue.len() >= limit {
            peer.queue.pop_front();
            overflowed = true;
        }
        if limit > 0 {
            peer.queue.push_back(inner.to_vec());
        }
        let in_flight = peer.handshake.is_some();
        if overflowed || limit == 0 {
            self.counters.record(DropReason::QueueFull);
        }
        if !in_flight {
            self.start_handshake(now, id, false);
        }
        if limit == 0 {
            Outgoing::Dropped(DropReason::QueueFull)
        } else {
            Outgoing::Queued
        }
    }

    /// Send what waited for the handshake; if nothing did, send a keepalive
    /// so the responder gets its key confirmation at once.
    fn flush_queue(&mut self, now: Now, id: PeerId) {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(destination) = peer.endpoint else {
            return;
        };
        let queued = std::mem::take(&mut peer.queue);
        let mut sent = 0usize;
        let mut bytes = 0u64;
        if let Some(sa) = peer.sending_sa(now.instant, &timers) {
            for inner in queued.iter() {
                let mut contents = vec![0u8; esp::encapsulated_len(inner.len())];
                match sa
                    .outbound
                    .encapsulate(inner, NEXT_HEADER_IPV6, &mut contents)
                {
                    Ok(d) => {
                        let n = d.len();
                        contents.truncate(n);
                        sent += 1;
                        bytes += inner.len() as u64;
                        self.transmits.push_back(Transmit {
                            destination,
                            contents,
                        });
                    }
                    Err(e) => self.counters.record(drop_reason_for_send(&e)),
                }
            }
        }
        if sent > 0 {
            peer.on_sent(now.instant, true, &timers);
            peer.stats.tx_packets += sent as u64;
            peer.stats.tx_bytes += bytes;
            self.counters.packets_sent += sent as u64;
        } else {
            self.send_keepalive(now, id);
        }
    }

    fn send_keepalive(&mut self, now: Now, id: PeerId) -> bool {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let Some(destination) = peer
            .endpoint
            .or_else(|| derived_endpoint(peer, &self.config))
        else {
            return false;
        };
        let Some(sa) = peer.sending_sa(now.instant, &timers) else {
            return false;
        };
        let wants_rekey = sa.wants_rekey_on_send(now.instant, &timers);
        let mut contents = vec![0u8; esp::encapsulated_len(0)];
        let Ok(len) = sa
            .outbound
            .encapsulate(&[], NEXT_HEADER_NONE, &mut contents)
            .map(|d| d.len())
        else {
            return false;
        };
        contents.truncate(len);
        peer.on_sent(now.instant, false, &timers);
        let in_flight = peer.handshake.is_some();
        self.counters.keepalives_sent += 1;
        self.transmits.push_back(Transmit {
            destination,
            contents,
        });
        if wants_rekey && !in_flight {
            self.start_handshake(now, id, false);
        }
        true
    }

    // --------------------------------------------------------------- timers

    /// Run every timer that is due: handshake retransmission and give-up,
    /// keepalives, dead-peer detection, SA expiry.
    pub fn handle_timeout(&mut self, now: Now) {
        let timers = self.config.timers;
        let t = now.instant;
        if self.next_sweep.is_some_and(|s| s <= t) {
            self.rate.sweep(t);
            self.next_sweep = (!self.rate.is_empty()).then(|| t + Duration::from_secs(1));
        }
        let due: Vec<PeerId> = self
            .peers
            .values()
            .filter(|p| p.next_deadline(&timers).is_some_and(|d| d <= t))
            .map(|p| p.id)
            .collect();
        for id in due {
            self.peer_timeout(now, id);
        }
    }

    fn peer_timeout(&mut self, now: Now, id: PeerId) {
        let timers = self.config.timers;
        let t = now.instant;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        for spi in peer.expire_sas(t, &timers) {
            self.spis.remove(&spi);
        }
        let retry = peer
            .handshake
            .as_ref()
            .filter(|h| h.retry_at <= t)
            .map(|h| h.first_attempt);
        if let Some(first_attempt) = retry {
            if t.saturating_duration_since(first_attempt) >= timers.handshake_give_up {
                let dropped = peer.queue.len();
                peer.queue.clear();
                if let Some(h) = peer.handshake.take() {
                    self.spis.remove(&h.local_spi);
                }
                peer.new_handshake_due = None;
                self.counters.record(DropReason::HandshakeTimeout);
                self.events.push_back(Event::HandshakeTimedOut {
                    peer: id,
                    dropped_packets: dropped,
                });
            } else {
                self.start_handshake(now, id, true);
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.keepalive_due.is_some_and(|d| d <= t) {
            peer.keepalive_due = None;
            self.send_keepalive(now, id);
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.new_handshake_due.is_some_and(|d| d <= t) {
            peer.new_handshake_due = None;
            if peer.handshake.is_none() {
                self.start_handshake(now, id, false);
            }
        }
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let (Some(due), Some(interval)) = (peer.persistent_due, peer.config.persistent_keepalive)
        {
            if due <= t && !self.send_keepalive(now, id) {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.persistent_due = Some(t + interval);
                    if peer.handshake.is_none() {
                        self.start_handshake(now, id, false);
                    }
                }
            }
        }
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

    fn schedule_sweep(&mut self, now: Instant) {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now + Duration::from_secs(1));
        }
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

/// Emit a control message and fill in its mac1 (keyed by the receiver's
/// static key) and mac2 (from a cookie the receiver gave us, if fresh).
fn seal_control(
    buffer_len: usize,
    emit: impl FnOnce(&mut [u8]) -> Result<usize, wire::WireError>,
    peer: &mut Peer,
    now: Instant,
) -> Result<Vec<u8>, DropReason> {
    let mut message = vec![0u8; buffer_len];
    let len = emit(&mut message).map_err(|_| DropReason::BufferTooSmall)?;
    message.truncate(len);
    let mac1_at = len
        .checked_sub(2 * MAC_LEN)
        .ok_or(DropReason::BufferTooSmall)?;
    let mac2_at = len - MAC_LEN;
    let mac1 = peer
        .cookie_jar
        .mac1(message.get(..mac1_at).unwrap_or_default());
    if let Some(slot) = message.get_mut(mac1_at..mac2_at) {
        slot.copy_from_slice(&mac1);
    }
    let mac2 = peer
        .cookie_jar
        .mac2(now, message.get(..mac2_at).unwrap_or_default());
    if let Some(slot) = message.get_mut(mac2_at..) {
        slot.copy_from_slice(&mac2);
    }
    Ok(message)
}

/// The bytes covered by mac1 and by mac2 of a handshake message.
fn mac_spans(datagram: &[u8]) -> Result<(&[u8], &[u8]), DropReason> {
    let len = datagram.len();
    let before_mac1 = len
        .checked_sub(2 * MAC_LEN)
        .and_then(|n| datagram.get(..n))
        .ok_or(DropReason::MalformedControl)?;
    let before_mac2 = datagram
        .get(..len - MAC_LEN)
        .ok_or(DropReason::MalformedControl)?;
    Ok((before_mac1, before_mac2))
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

/// An endpoint derived from the peer's 6to4 prefix, if it has one.
fn derived_endpoint(peer: &Peer, config: &NodeConfig) -> Option<SocketAddr> {
    let addr = peer.lease.lease().prefix.addr();
    six_to_four_endpoint(&addr, config.default_port, config.ipv4_policy)
        .ok()
        .map(SocketAddr::V4)
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

/// Exponential backoff with up to 25 % jitter.
fn retry_delay(timers: &Timers, attempts: u32, rng: &mut ChaCha20Rng) -> Duration {
    let base = timers
        .handshake_retry_initial
        .saturating_mul(1u32 << attempts.min(16))
        .min(timers.handshake_retry_max);
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
