//! Peers and their security associations.
//!
//! A [`Peer`] is everything one node knows about one remote entity: its
//! static key and verified lease, where it currently is (its endpoint), up to
//! three security associations, the handshake it may have in flight, the
//! packets waiting for that handshake, and the timers that drive keepalives,
//! retransmission, rekeying and expiry.
//!
//! SAs are kept in three slots so a rekey is make-before-break:
//! - `current`: the SA outbound traffic uses;
//! - `previous`: the SA `current` replaced; only its inbound half is used,
//!   so packets the peer sent before it switched still arrive, until the SA
//!   reaches the reject-after age;
//! - `next`: an SA this node made as handshake *responder* and which the
//!   peer has not used yet. It becomes `current` when the first packet
//!   arrives on it (key confirmation); until then the responder keeps
//!   sending on the old SA, which the initiator still accepts.
//!
//! The [`crate::node::Node`] owns the peers and feeds them; this module holds
//! the per-peer rules so they can be read (and tested) in one place.

#![deny(clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::aead::AeadProvider;
use crate::cookie::CookieJar;
use crate::esp::{EspKeyMaterial, InboundSa, OutboundSa};
use crate::handshake::{InitiatorHandshake, Psk, PublicKey, SaKeys};
use crate::lease::SignedLease;
use crate::time::{Tai64N, UnixTime};

/// Protocol timers and limits (DESIGN.md §5). The defaults are the
/// protocol's; tests shorten nothing but may use them to reason about time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// An initiator rekeys once its SA is this old and it sends.
    pub rekey_after: Duration,
    /// No SA is used, in either direction, once it is this old.
    pub reject_after: Duration,
    /// An initiator rekeys once it has sent this many packets on an SA.
    pub rekey_after_messages: u64,
    /// No SA sends more than this many packets.
    pub reject_after_messages: u64,
    /// First handshake retransmission delay; doubled on every attempt.
    pub handshake_retry_initial: Duration,
    /// Ceiling of the retransmission delay.
    pub handshake_retry_max: Duration,
    /// Give up a handshake (and drop its queue) after this long.
    pub handshake_give_up: Duration,
    /// Passive keepalive: after receiving data, send something within this.
    pub keepalive: Duration,
    /// After sending data with no answer for `keepalive + this`, start a
    /// new handshake (the peer may have lost its state).
    pub rekey_timeout: Duration,
    /// Minimum interval between two initiations accepted from one peer.
    pub initiation_min_interval: Duration,
}

impl Timers {
    /// Protocol defaults.
    pub const DEFAULT: Timers = Timers {
        rekey_after: Duration::from_secs(120),
        reject_after: Duration::from_secs(180),
        rekey_after_messages: 1 << 60,
        reject_after_messages: u64::MAX - (1 << 13),
        handshake_retry_initial: Duration::from_secs(1),
        handshake_retry_max: Duration::from_secs(8),
        handshake_give_up: Duration::from_secs(90),
        keepalive: Duration::from_secs(10),
        rekey_timeout: Duration::from_secs(5),
        initiation_min_interval: Duration::from_millis(20),
    };

    /// An initiator whose SA is this old rekeys when it *receives*, so a
    /// flow that only comes in is rekeyed before its SA expires.
    pub fn rekey_on_receive_after(&self) -> Duration {
        self.reject_after
            .saturating_sub(self.keepalive)
            .saturating_sub(self.rekey_timeout)
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers::DEFAULT
    }
}

/// A node-local handle on a peer. Never reused within one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// Per-peer settings a driver supplies when adding a peer.
#[derive(Clone, Debug, Default)]
pub struct PeerConfig {
    /// Pre-shared key mixed into the handshake (both sides must agree).
    pub psk: Option<Psk>,
    /// Where to send until an authenticated packet says otherwise.
    pub endpoint: Option<SocketAddr>,
    /// Send an authenticated keepalive at least this often (NAT bindings).
    pub persistent_keepalive: Option<Duration>,
}

/// Shortest persistent keepalive interval honoured.
pub const MIN_PERSISTENT_KEEPALIVE: Duration = Duration::from_secs(1);

/// A packet sealed by [`Peer::seal`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sealed {
    /// Length of the ESP packet written.
    pub(crate) len: usize,
    /// The SA is due for a rekey.
    pub(crate) wants_rekey: bool,
}

/// Why [`Peer::seal`] could not send.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SealError {
    /// No current SA that may still send.
    NoSa,
    /// ESP refused (buffer too small, sequence numbers exhausted).
    Esp(crate::esp::EspError),
}

/// Which SA slot an inbound SPI belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}

/// One security association: both directions of the ESP keys one
/// handshake produced.
pub(crate) struct SecurityAssociation {
    pub(crate) outbound: OutboundSa,
    pub(crate) inbound: InboundSa,
    pub(crate) created: Instant,
    /// Whether this node was the handshake initiator.
    pub(crate) initiator: bool,
}

impl SecurityAssociation {
    pub(crate) fn new(
        keys: &SaKeys,
        local_spi: u32,
        remote_spi: u32,
        provider: AeadProvider,
        created: Instant,
        initiator: bool,
    ) -> Self {
        SecurityAssociation {
            outbound: OutboundSa::new(remote_spi, &keys.outbound, provider),
            inbound: InboundSa::new(local_spi, &keys.inbound, provider),
            created,
            initiator,
        }
    }

    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    pub(crate) fn expired(&self, now: Instant, timers: &Timers) -> bool {
        self.age(now) >= timers.reject_after
    }

    /// Can this SA still carry an outbound packet?
    pub(crate) fn can_send(&self, now: Instant, timers: &Timers) -> bool {
        !self.expired(now, timers) && self.outbound.next_seq() < timers.reject_after_messages
    }

    /// Should the node start a rekey because it is sending on this SA?
    pub(crate) fn wants_rekey_on_send(&self, now: Instant, timers: &Timers) -> bool {
        self.outbound.next_seq() >= timers.rekey_after_messages
            || (self.initiator && self.age(now) >= timers.rekey_after)
    }

    /// Should the node start a rekey because it received on this SA?
    pub(crate) fn wants_rekey_on_receive(&self, now: Instant, timers: &Timers) -> bool {
        self.initiator && self.age(now) >= timers.rekey_on_receive_after()
    }
}

impl std::fmt::Debug for SecurityAssociation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityAssociation")
            .field("inbound_spi", &self.inbound.spi())
            .field("outbound_spi", &self.outbound.spi())
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

/// A handshake this node initiated and is waiting an answer for.
pub(crate) struct PendingHandshake {
    pub(crate) state: InitiatorHandshake,
    /// The inbound SPI proposed in this initiation.
    pub(crate) local_spi: u32,
    /// When the first attempt of this handshake round was sent.
    pub(crate) first_attempt: Instant,
    /// When to retransmit (with a fresh initiation).
    pub(crate) retry_at: Instant,
    /// Attempts sent so far in this round.
    pub(crate) attempts: u32,
}

impl std::fmt::Debug for PendingHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingHandshake")
            .field("local_spi", &self.local_spi)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Traffic totals for one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Inner bytes received (decrypted payload).
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Handshakes completed with this peer.
    pub handshakes: u64,
    /// Packets dropped because their inner source was outside the lease.
    pub spoofed_sources: u64,
}

/// Everything a node knows about one remote entity.
pub struct Peer {
    pub(crate) id: PeerId,
    pub(crate) public_key: PublicKey,
    pub(crate) lease: SignedLease,
    pub(crate) config: PeerConfig,
    pub(crate) endpoint: Option<SocketAddr>,
    pub(crate) current: Option<Box<SecurityAssociation>>,
    pub(crate) previous: Option<Box<SecurityAssociation>>,
    pub(crate) next: Option<Box<SecurityAssociation>>,
    pub(crate) handshake: Option<Box<PendingHandshake>>,
    pub(crate) cookie_jar: CookieJar,
    pub(crate) queue: VecDeque<Vec<u8>>,
    /// Newest initiation timestamp accepted from this peer.
    pub(crate) last_initiation_timestamp: Option<Tai64N>,
    /// When that initiation was accepted.
    pub(crate) last_initiation_at: Option<Instant>,
    /// When we last sent anything (data or keepalive) to the peer.
    pub(crate) last_sent: Option<Instant>,
    /// When we last received anything authenticated from the peer.
    pub(crate) last_received: Option<Instant>,
    /// Passive keepalive: set when data arrives, cleared by any send.
    pub(crate) keepalive_due: Option<Instant>,
    /// Dead-peer detection: set when data is sent, cleared by any receive.
    pub(crate) new_handshake_due: Option<Instant>,
    /// Persistent keepalive deadline.
    pub(crate) persistent_due: Option<Instant>,
    /// Wall-clock time of the last completed handshake.
    pub(crate) last_handshake: Option<UnixTime>,
    pub(crate) stats: PeerStats,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.id)
            .field("public_key", &self.public_key)
            .field("name", &self.lease.lease().name)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Peer {
    pub(crate) fn new(
        id: PeerId,
        public_key: PublicKey,
        lease: SignedLease,
        config: PeerConfig,
        now: Instant,
    ) -> Self {
        let mut config = config;
        // A zero interval would make the keepalive due forever.
        config.persistent_keepalive = config
            .persistent_keepalive
            .map(|d| d.max(MIN_PERSISTENT_KEEPALIVE));
        let persistent_due = config.persistent_keepalive.map(|d| now + d);
        Peer {
            id,
            cookie_jar: CookieJar::new(&public_key),
            public_key,
            lease,
            endpoint: config.endpoint,
            config,
            current: None,
            previous: None,
            next: None,
            handshake: None,
            queue: VecDeque::new(),
            last_initiation_timestamp: None,
            last_initiation_at: None,
            last_sent: None,
            last_received: None,
            keepalive_due: None,
            new_handshake_due: None,
            persistent_due,
            last_handshake: None,
            stats: PeerStats::default(),
        }
    }

    /// This peer's handle.
    pub fn id(&self) -> PeerId {
        self.id
    }

    /// The peer's static public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// The peer's verified lease.
    pub fn lease(&self) -> &SignedLease {
        &self.lease
    }

    /// Its persistent keepalive interval, if any.
    pub fn persistent_keepalive(&self) -> Option<Duration> {
        self.config.persistent_keepalive
    }

    /// Where packets for the peer go.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// Traffic totals.
    pub fn stats(&self) -> PeerStats {
        self.stats
    }

    /// Wall-clock time of the last completed handshake.
    pub fn last_handshake(&self) -> Option<UnixTime> {
        self.last_handshake
    }

    /// Whether a handshake initiated by this node is in flight.
    pub fn handshake_in_flight(&self) -> bool {
        self.handshake.is_some()
    }

    /// Packets waiting for a handshake.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// A snapshot of the peer's SAs for status output.
    pub fn security_associations(&self, now: Instant) -> Vec<SaStatus> {
        let mut out = Vec::with_capacity(3);
        for (slot, sa) in [
            (SaRole::Current, &self.current),
            (SaRole::Previous, &self.previous),
            (SaRole::Unconfirmed, &self.next),
        ] {
            if let Some(sa) = sa {
                out.push(SaStatus {
                    role: slot,
                    inbound_spi: sa.inbound.spi(),
                    outbound_spi: sa.outbound.spi(),
                    age: sa.age(now),
                    initiator: sa.initiator,
                    packets_sent: sa.outbound.next_seq().saturating_sub(1),
                });
            }
        }
        out
    }

    /// The inbound SPIs this peer owns in the node's SPI table.
    pub(crate) fn inbound_spis(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|sa| sa.inbound.spi())
            .chain(self.handshake.as_ref().map(|h| h.local_spi))
    }

    pub(crate) fn slot_for_inbound(&self, spi: u32) -> Option<Slot> {
        let is = |sa: &Option<Box<SecurityAssociation>>| {
            sa.as_ref().is_some_and(|sa| sa.inbound.spi() == spi)
        };
        if is(&self.current) {
            Some(Slot::Current)
        } else if is(&self.next) {
            Some(Slot::Next)
        } else if is(&self.previous) {
            Some(Slot::Previous)
        } else {
            None
        }
    }

    pub(crate) fn sa_mut(&mut self, slot: Slot) -> Option<&mut SecurityAssociation> {
        match slot {
            Slot::Current => self.current.as_deref_mut(),
            Slot::Previous => self.previous.as_deref_mut(),
            Slot::Next => self.next.as_deref_mut(),
        }
    }

    /// Install an SA this node initiated: it is confirmed by the response,
    /// so it becomes current at once. Returns the SPI freed, if any.
    pub(crate) fn install_initiated(&mut self, sa: SecurityAssociation) -> Vec<u32> {
        let mut freed = Vec::new();
        if let Some(old) = self.previous.take() {
            freed.push(old.inbound.spi());
        }
        self.previous = self.current.take();
        self.current = Some(Box::new(sa));
        freed
    }

    /// Install an SA this node responded to: it waits for confirmation.
    /// Returns the SPI freed, if any.
    pub(crate) fn install_responded(&mut self, sa: SecurityAssociation) -> Vec<u32> {
        let mut freed = Vec::new();
        if let Some(old) = self.next.replace(Box::new(sa)) {
            freed.push(old.inbound.spi());
        }
        freed
    }

    /// Key confirmation: the peer used the `next` SA, so it becomes current
    /// — unless `current` is newer (a handshake this node initiated
    /// completed meanwhile), in which case `next` only keeps receiving, as
    /// `previous`. Returns the SPIs freed and whether `next` became current.
    pub(crate) fn promote_next(&mut self) -> (Vec<u32>, bool) {
        let mut freed = Vec::new();
        let Some(next) = self.next.take() else {
            return (freed, false);
        };
        if let Some(old) = self.previous.take() {
            freed.push(old.inbound.spi());
        }
        let newer_current = self
            .current
            .as_ref()
            .is_some_and(|current| current.created > next.created);
        if newer_current {
            self.previous = Some(next);
            (freed, false)
        } else {
            self.previous = self.current.take();
            self.current = Some(next);
            (freed, true)
        }
    }

    /// Drop every SA older than the reject-after time. Returns freed SPIs.
    pub(crate) fn expire_sas(&mut self, now: Instant, timers: &Timers) -> Vec<u32> {
        let mut freed = Vec::new();
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|sa| sa.expired(now, timers)) {
                if let Some(sa) = slot.take() {
                    freed.push(sa.inbound.spi());
                }
            }
        }
        freed
    }

    /// Drop all SAs and the pending handshake (peer removed or lease gone).
    pub(crate) fn clear_sas(&mut self) -> Vec<u32> {
        let spis: Vec<u32> = self.inbound_spis().collect();
        self.current = None;
        self.previous = None;
        self.next = None;
        self.handshake = None;
        spis
    }

    /// The SA to send on, if it may still send.
    pub(crate) fn sending_sa(
        &mut self,
        now: Instant,
        timers: &Timers,
    ) -> Option<&mut SecurityAssociation> {
        self.current
            .as_deref_mut()
            .filter(|sa| sa.can_send(now, timers))
    }

    /// Encapsulate `inner` on the current SA into `out`, and account for it
    /// (timers, traffic totals). The one send path for data, flushed queues
    /// and keepalives.
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        timers: &Timers,
        inner: &[u8],
        next_header: u8,
        out: &mut [u8],
    ) -> Result<Sealed, SealError> {
        let sa = self.sending_sa(now, timers).ok_or(SealError::NoSa)?;
        let wants_rekey = sa.wants_rekey_on_send(now, timers);
        let len = sa
            .outbound
            .encapsulate(inner, next_header, out)
            .map_err(SealError::Esp)?
            .len();
        let data = next_header != crate::esp::NEXT_HEADER_NONE;
        self.on_sent(now, data, timers);
        if data {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += inner.len() as u64;
        }
        Ok(Sealed { len, wants_rekey })
    }

    /// Record that something was sent: cancels the passive keepalive and
    /// pushes the persistent keepalive out.
    pub(crate) fn on_sent(&mut self, now: Instant, data: bool, timers: &Timers) {
        self.last_sent = Some(now);
        self.keepalive_due = None;
        if data && self.new_handshake_due.is_none() {
            self.new_handshake_due = Some(now + timers.keepalive + timers.rekey_timeout);
        }
        if let Some(interval) = self.config.persistent_keepalive {
            self.persistent_due = Some(now + interval);
        }
    }

    /// Record that something authenticated arrived.
    pub(crate) fn on_received(&mut self, now: Instant, data: bool, timers: &Timers) {
        self.last_received = Some(now);
        self.new_handshake_due = None;
        if data && self.keepalive_due.is_none() {
            self.keepalive_due = Some(now + timers.keepalive);
        }
    }

    /// The earliest instant at which [`crate::node::Node::handle_timeout`]
    /// has work for this peer. Every deadline reported here is consumed or
    /// moved by that work, so a driver never spins.
    pub(crate) fn next_deadline(&self, timers: &Timers) -> Option<Instant> {
        let sa_expiry = [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
            .map(|sa| sa.created + timers.reject_after);
        [
            self.handshake.as_ref().map(|h| h.retry_at),
            self.keepalive_due,
            self.new_handshake_due,
            self.persistent_due,
            self.stranded_queue_due(timers),
        ]
        .into_iter()
        .flatten()
        .chain(sa_expiry)
        .min()
    }

    /// When packets queued with no handshake of our own in flight must
    /// start one: at once if nothing can carry them, or once a responder SA
    /// has waited `rekey_timeout` for its key confirmation in vain.
    pub(crate) fn stranded_queue_due(&self, timers: &Timers) -> Option<Instant> {
        if self.queue.is_empty() || self.handshake.is_some() || self.current.is_some() {
            return None;
        }
        match &self.next {
            Some(next) => Some(next.created + timers.rekey_timeout),
            None => self.last_sent.or(self.last_received),
        }
    }
}

/// What an SA is doing, for status output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaRole {
    /// Outbound traffic uses it.
    Current,
    /// Replaced by a rekey; inbound still accepted until it expires.
    Previous,
    /// Made as responder; waiting for the peer to use it.
    Unconfirmed,
}

/// Status of one SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaStatus {
    /// Slot.
    pub role: SaRole,
    /// SPI the peer sends to.
    pub inbound_spi: u32,
    /// SPI we send to.
    pub outbound_spi: u32,
    /// Time since the handshake that made it.
    pub age: Duration,
    /// Whether this node initiated that handshake.
    pub initiator: bool,
    /// Packets sent on it.
    pub packets_sent: u64,
}

/// An SA's keys, exported only when the driver asked for a key log.
#[derive(Clone, Debug)]
pub struct SaKeyLog {
    /// The peer.
    pub peer: PeerId,
    /// SPI of inbound ESP.
    pub inbound_spi: u32,
    /// SPI of outbound ESP.
    pub outbound_spi: u32,
    /// Inbound key and salt.
    pub inbound: EspKeyMaterial,
    /// Outbound key and salt.
    pub outbound: EspKeyMaterial,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timers_follow_the_design() {
        let t = Timers::default();
        assert_eq!(t.rekey_after, Duration::from_secs(120));
        assert_eq!(t.reject_after, Duration::from_secs(180));
        assert_eq!(t.rekey_after_messages, 1 << 60);
        assert!(t.rekey_on_receive_after() > t.rekey_after);
        assert!(t.rekey_on_receive_after() < t.reject_after);
    }
}
