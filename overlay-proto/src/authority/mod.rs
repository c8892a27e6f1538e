//! The authority channel: how a terminal (tunneld) logs in to addrd, renews
//! its lease and fetches its netmap, over the overlay's UDP port.
//!
//! The channel reuses the tunnel's building blocks with its own message
//! types behind the non-ESP marker (see [`crate::wire::MessageType`]):
//!
//! 1. **Handshake.** The terminal runs Noise `IKpsk2` to addrd's pinned
//!    static key ([`crate::handshake`] with [`Channel::Authority`]: its own
//!    prologue and key labels). The payload is the tunnel's, with the
//!    sender's *session id* in the SPI field, a TAI64N timestamp that addrd
//!    requires to increase per client key (and, for a key it has not seen
//!    in the last 180 s, to be within 180 s of its clock), and an empty
//!    lease. mac1/mac2 and cookie replies defend addrd exactly as they
//!    defend a node ([`crate::cookie`], [`crate::ratelimit`]).
//! 2. **Data.** Each side then seals records with ChaCha20-Poly1305 under
//!    the handshake's keys: `marker | 07 | 000000 | receiver_session u32 |
//!    counter u64 | ciphertext | tag`, the nonce being the 4-byte salt and
//!    the counter, the 20-byte header the associated data. Counters start
//!    at 1 and never repeat; the receiver keeps an anti-replay window
//!    ([`crate::replay`]).
//! 3. **Requests.** One request, one response ([`message`]). The client
//!    picks request ids (from a random start, so a restarted client does
//!    not reuse them) and retransmits with exponential backoff; the server
//!    executes each `(client key, request id)` once and answers
//!    retransmissions from a cache, on whatever session they arrive.
//!
//! The password only ever travels in a data message, after the handshake
//! completed, so it is protected by the session's forward-secret keys; it
//! sits in [`message::Password`] (wiped on drop, hidden from `Debug`).
//!
//! Datagrams stay within [`TARGET_DATAGRAM_LEN`] (1400 bytes) except those
//! carrying one lease longer than about 1300 bytes (a lease may be 2048):
//! those are allowed up to [`MAX_DATA_LEN`] and rely on IPv4
//! fragmentation. Netmaps are paged by bytes ([`message::fill_netmap_page`])
//! so a page of many leases never exceeds the target.
//!
//! [`AuthorityClient`] is the terminal's side, [`AuthorityServer`] addrd's.
//! Like the rest of this crate they read no clock and open no socket.
#![deny(clippy::indexing_slicing)]

mod client;
mod crypto;
pub mod message;
mod server;

pub use client::{AuthorityClient, ClientConfig, ClientError, ClientTimers};
pub use message::{
    fill_netmap_page, ErrorCode, Location, LoginNeededReason, MessageError, NetmapPage, Password,
    Removed, Request, RequestId, Response,
};
pub use server::{AuthorityServer, Incoming, RespondError, ServerConfig, SessionId};

use std::fmt;

pub use crate::handshake::Channel;
use crate::wire::HEADER_LEN;

/// Length of the authority data header: control header (8), receiver
/// session (4), counter (8). It is the AEAD's associated data.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 4 + 8;

/// Length of the AEAD tag at the end of a data message.
pub const DATA_TAG_LEN: usize = 16;

/// The datagram size the channel stays within, except for a message that
/// carries one large lease.
pub const TARGET_DATAGRAM_LEN: usize = 1400;

/// The record size that keeps a data message within
/// [`TARGET_DATAGRAM_LEN`] (1364 bytes); netmap pages are filled to it.
pub const TARGET_RECORD_LEN: usize = TARGET_DATAGRAM_LEN - DATA_HEADER_LEN - DATA_TAG_LEN;

/// Largest data message (2148 bytes): a record of
/// [`message::MAX_RECORD_LEN`] sealed. Longer ones are refused unread.
pub const MAX_DATA_LEN: usize = DATA_HEADER_LEN + message::MAX_RECORD_LEN + DATA_TAG_LEN;

macro_rules! authority_drops {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, )*) => {
        /// Why the authority client or server refused a datagram.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum AuthorityDrop {
            $( $(#[$doc])* $variant, )*
        }

        impl AuthorityDrop {
            /// Every reason, in declaration order.
            pub const ALL: &'static [AuthorityDrop] = &[ $( AuthorityDrop::$variant, )* ];

            /// Stable snake_case label, used as the metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( AuthorityDrop::$variant => $label, )*
                }
            }
        }
    };
}

authority_drops! {
    /// Not a well-formed authority message (framing, lengths).
    Malformed => "malformed",
    /// A message type this side does not accept (e.g. an initiation at the
    /// client, or a tunnel message).
    UnexpectedMessage => "unexpected_message",
    /// A handshake message whose mac1 did not verify.
    BadMac1 => "bad_mac1",
    /// Under load, an initiation without a valid mac2: answered with a
    /// cookie reply.
    CookieRequired => "cookie_required",
    /// The source exceeded its handshake rate.
    RateLimited => "rate_limited",
    /// Noise decryption or authentication failed (wrong key, tampering).
    HandshakeFailed => "handshake_failed",
    /// The handshake payload was malformed (session id, lease field).
    HandshakePayload => "handshake_payload",
    /// An initiation whose timestamp is not newer than the last accepted
    /// one from that key.
    ReplayedInitiation => "replayed_initiation",
    /// A first initiation whose timestamp is too far from our clock.
    StaleInitiation => "stale_initiation",
    /// The server holds its maximum number of client records.
    TooManyClients => "too_many_clients",
    /// A response or cookie reply that matches no handshake in flight.
    UnexpectedHandshake => "unexpected_handshake",
    /// A cookie reply that failed to decrypt.
    BadCookieReply => "bad_cookie_reply",
    /// A data message for a session this side does not hold.
    UnknownSession => "unknown_session",
    /// A data message on a session past its lifetime.
    SessionExpired => "session_expired",
    /// A data message counter already received (a replay or a network
    /// duplicate).
    ReplayDuplicate => "replay_duplicate",
    /// A data message counter behind the replay window.
    ReplayTooOld => "replay_too_old",
    /// A data message that did not authenticate.
    DecryptFailed => "decrypt_failed",
    /// An authenticated record that does not parse.
    BadRecord => "bad_record",
    /// A retransmitted request whose first copy is still being executed.
    RequestInProgress => "request_in_progress",
    /// A response to no outstanding request (a duplicate answer, or one
    /// that came after the request timed out).
    UnsolicitedResponse => "unsolicited_response",
}

impl fmt::Display for AuthorityDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counters of an authority client or server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorityCounters {
    drops: [u64; AuthorityDrop::ALL.len()],
    /// Handshakes completed.
    pub handshakes: u64,
    /// Requests sent (client) or executed (server), first copies only.
    pub requests: u64,
    /// Requests retransmitted (client).
    pub retransmissions: u64,
    /// Retransmitted requests answered from the response cache (server).
    pub duplicates_answered: u64,
    /// Requests given up with a timeout (client).
    pub timeouts: u64,
    /// Cookie replies sent (server).
    pub cookie_replies_sent: u64,
    /// Sessions dropped before their time to make room (server).
    pub sessions_evicted: u64,
}

impl AuthorityCounters {
    /// Counts one refused datagram.
    pub fn record(&mut self, reason: AuthorityDrop) {
        if let Some(slot) = self.drops.get_mut(reason as usize) {
            *slot += 1;
        }
    }

    /// How many datagrams were refused for `reason`.
    pub fn drops(&self, reason: AuthorityDrop) -> u64 {
        self.drops.get(reason as usize).copied().unwrap_or(0)
    }

    /// All refused datagrams.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Every reason with its count, zeros included, in declaration order.
    pub fn iter_drops(&self) -> impl Iterator<Item = (AuthorityDrop, u64)> + '_ {
        AuthorityDrop::ALL.iter().map(|&r| (r, self.drops(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_what_the_docs_say() {
        assert_eq!(DATA_HEADER_LEN, 20);
        assert_eq!(TARGET_RECORD_LEN, 1364);
        assert_eq!(MAX_DATA_LEN, 2148);
        const { assert!(MAX_DATA_LEN <= crate::wire::MAX_CONTROL_LEN) };
    }

    #[test]
    fn drop_labels_are_distinct_and_counted() {
        let mut labels: Vec<_> = AuthorityDrop::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), AuthorityDrop::ALL.len());
        let mut counters = AuthorityCounters::default();
        for (i, r) in AuthorityDrop::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            counters.record(*r);
        }
        assert_eq!(counters.total_drops(), AuthorityDrop::ALL.len() as u64);
    }
}
