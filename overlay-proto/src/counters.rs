//! Drop reasons and counters.
//!
//! Every datagram or inner packet the core refuses is counted under exactly
//! one [`DropReason`]. The reasons are a flat enum so a counter update is an
//! array increment on the hot path, and so `status` output and Prometheus
//! metrics can list every reason by a stable snake_case name, including the
//! ones that stayed at zero.

#![deny(clippy::indexing_slicing)]

use std::fmt;

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )*) => {
        /// Why a datagram, handshake message or inner packet was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];

            /// Stable snake_case label, used as the metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( DropReason::$variant => $label, )*
                }
            }
        }
    };
}

drop_reasons! {
    // --- datagram framing
    /// A datagram that is neither ESP, a control packet nor a NAT keepalive.
    MalformedDatagram => "malformed_datagram",
    /// A control packet that failed to parse.
    MalformedControl => "malformed_control",
    /// An authority-channel message (for addrd's login channel), which the
    /// driver should have handed to its authority client or server.
    AuthorityMessage => "authority_message",
    /// ESP with an SPI that names no security association here.
    UnknownSpi => "unknown_spi",
    /// ESP shorter than its fixed fields.
    EspTruncated => "esp_truncated",
    /// ESP whose ICV did not verify.
    EspAuthenticationFailed => "esp_authentication_failed",
    /// ESP sequence number already received.
    EspReplayDuplicate => "esp_replay_duplicate",
    /// ESP sequence number behind the anti-replay window.
    EspReplayTooOld => "esp_replay_too_old",
    /// ESP padding or pad length inconsistent after decryption.
    EspBadPadding => "esp_bad_padding",
    /// Any other ESP framing error.
    EspMalformed => "esp_malformed",
    /// ESP for a security association older than the reject-after time.
    SaExpired => "sa_expired",
    /// A decrypted payload with a next-header value we do not carry.
    UnsupportedNextHeader => "unsupported_next_header",
    /// A decrypted payload that is not a well-formed IPv6 packet.
    MalformedInnerPacket => "malformed_inner_packet",
    /// Cryptokey routing: inner source address outside the peer's lease.
    SpoofedSource => "spoofed_source",
    // --- handshake
    /// A handshake message whose mac1 did not verify.
    BadMac1 => "bad_mac1",
    /// Under load, an initiation without a valid mac2: answered with a cookie.
    CookieRequired => "cookie_required",
    /// Under load, the source exceeded its handshake rate.
    HandshakeRateLimited => "handshake_rate_limited",
    /// Initiation repeated too soon after the last accepted one from that peer.
    HandshakeFlood => "handshake_flood",
    /// Noise decryption or authentication failed.
    HandshakeFailed => "handshake_failed",
    /// The handshake payload (SPI, timestamp, lease field) was malformed.
    HandshakePayload => "handshake_payload",
    /// An initiation whose timestamp is not newer than the last accepted one.
    ReplayedInitiation => "replayed_initiation",
    /// A static key with no configured peer, and unknown peers not accepted.
    UnknownPeer => "unknown_peer",
    /// The peer's lease did not verify (signature, authority, validity).
    BadLease => "bad_lease",
    /// The lease is valid but for another key than the Noise static key.
    LeaseKeyMismatch => "lease_key_mismatch",
    /// The node already holds its maximum number of peers.
    TooManyPeers => "too_many_peers",
    /// A response or cookie reply that matches no handshake in flight.
    UnexpectedHandshakeMessage => "unexpected_handshake_message",
    /// A cookie reply that failed to decrypt.
    BadCookieReply => "bad_cookie_reply",
    /// A packet that waited for a handshake which was given up.
    HandshakeTimeout => "handshake_timeout",
    /// A first initiation whose timestamp is too far from our clock.
    StaleInitiation => "stale_initiation",
    /// The peer's lease has expired or is not valid yet.
    LeaseExpired => "lease_expired",
    // --- sending
    /// No endpoint is known for the peer and none can be derived.
    NoEndpoint => "no_endpoint",
    /// The queue of packets waiting for a handshake was full.
    QueueFull => "queue_full",
    /// The caller's output buffer was too small.
    BufferTooSmall => "buffer_too_small",
    /// The destination names no peer.
    NoSuchPeer => "no_such_peer",
    /// The outbound sequence space is exhausted (needs a rekey).
    SequenceExhausted => "sequence_exhausted",
    /// The inner packet is larger than any ESP packet may be.
    PacketTooLarge => "packet_too_large",
    /// Our own lease could not be placed into a handshake.
    LocalLeaseUnusable => "local_lease_unusable",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter, named for status reports and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labelled {
    /// Stable snake_case name (a JSON key, part of a metric name).
    pub name: &'static str,
    /// What it counts, in a few words (a metric's help text).
    pub help: &'static str,
    /// Its value.
    pub value: u64,
}

impl Labelled {
    /// A named counter.
    pub const fn new(name: &'static str, help: &'static str, value: u64) -> Labelled {
        Labelled { name, help, value }
    }
}

/// Node-wide counters: one per drop reason, plus the traffic totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    drops: [u64; DropReason::ALL.len()],
    /// NAT keepalives (`0xFF`) received.
    pub nat_keepalives_received: u64,
    /// Authenticated ESP dummy packets (next header 59) received.
    pub keepalives_received: u64,
    /// ESP dummy packets sent.
    pub keepalives_sent: u64,
    /// Handshakes completed, either role.
    pub handshakes_completed: u64,
    /// Handshakes given up after the retry deadline.
    pub handshake_timeouts: u64,
    /// Initiations sent, including retransmissions.
    pub initiations_sent: u64,
    /// Cookie replies sent.
    pub cookie_replies_sent: u64,
    /// Inner packets delivered to the driver.
    pub packets_received: u64,
    /// Inner packets encapsulated.
    pub packets_sent: u64,
    /// Authenticated packets that moved a peer to a new endpoint.
    pub endpoint_changes: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: [0; DropReason::ALL.len()],
            nat_keepalives_received: 0,
            keepalives_received: 0,
            keepalives_sent: 0,
            handshakes_completed: 0,
            handshake_timeouts: 0,
            initiations_sent: 0,
            cookie_replies_sent: 0,
            packets_received: 0,
            packets_sent: 0,
            endpoint_changes: 0,
        }
    }
}

impl Counters {
    /// Count one drop.
    #[inline]
    pub fn record(&mut self, reason: DropReason) {
        if let Some(slot) = self.drops.get_mut(reason as usize) {
            *slot = slot.saturating_add(1);
        }
    }

    /// How often `reason` happened.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// Sum of all drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every traffic total (not the drops: [`Counters::iter_drops`]), named.
    pub fn totals(&self) -> [Labelled; 10] {
        [
            Labelled::new(
                "nat_keepalives_received",
                "NAT keepalives received",
                self.nat_keepalives_received,
            ),
            Labelled::new(
                "keepalives_received",
                "authenticated ESP keepalives received",
                self.keepalives_received,
            ),
            Labelled::new(
                "keepalives_sent",
                "ESP keepalives sent",
                self.keepalives_sent,
            ),
            Labelled::new(
                "handshakes_completed",
                "handshakes completed, either role",
                self.handshakes_completed,
            ),
            Labelled::new(
                "handshake_timeouts",
                "handshakes given up",
                self.handshake_timeouts,
            ),
            Labelled::new(
                "initiations_sent",
                "handshake initiations sent, retransmissions included",
                self.initiations_sent,
            ),
            Labelled::new(
                "cookie_replies_sent",
                "cookie replies sent",
                self.cookie_replies_sent,
            ),
            Labelled::new(
                "packets_received",
                "inner packets delivered by the node",
                self.packets_received,
            ),
            Labelled::new(
                "packets_sent",
                "inner packets encapsulated",
                self.packets_sent,
            ),
            Labelled::new(
                "endpoint_changes",
                "peers moved to a new endpoint",
                self.endpoint_changes,
            ),
        ]
    }

    /// Every drop reason with its count, zeros included.
    pub fn iter_drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops(*r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn labels_are_unique_and_snake_case() {
        let mut seen = HashSet::new();
        for r in DropReason::ALL {
            let s = r.as_str();
            assert!(seen.insert(s), "duplicate label {s}");
            assert!(s
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
        assert_eq!(seen.len(), DropReason::ALL.len());
    }

    #[test]
    fn record_counts_only_that_reason() {
        let mut c = Counters::default();
        c.record(DropReason::SpoofedSource);
        c.record(DropReason::SpoofedSource);
        c.record(DropReason::UnknownSpi);
        assert_eq!(c.drops(DropReason::SpoofedSource), 2);
        assert_eq!(c.drops(DropReason::UnknownSpi), 1);
        assert_eq!(c.drops(DropReason::BadMac1), 0);
        assert_eq!(c.total_drops(), 3);
        assert_eq!(c.iter_drops().count(), DropReason::ALL.len());
    }
}
