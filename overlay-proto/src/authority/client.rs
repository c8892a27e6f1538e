//! The terminal's side of the authority channel.
#![deny(clippy::indexing_slicing)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::crypto::{DataHeader, SessionCrypto};
use super::message::{MessageError, Request, RequestId, Response};
use super::{AuthorityCounters, AuthorityDrop};
use crate::cookie::{self, CookieJar, MacKeys, MAC_LEN};
use crate::handshake::{
    Channel, HandshakeError, HandshakePayload, InitiatorHandshake, Psk, PublicKey, StaticKeypair,
};
use crate::node::Transmit;
use crate::time::{Now, UnixTime};
use crate::wire::{ControlPacket, CookieReplyRepr, InitiationRepr, MessageType, ResponseRepr};

/// The client's timing. The defaults are the tunnel handshake's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientTimers {
    /// First retransmission of a request or initiation (then doubling).
    pub retry_initial: Duration,
    /// Longest interval between retransmissions.
    pub retry_max: Duration,
    /// A request not answered within this time fails with
    /// [`ClientError::Timeout`].
    pub request_timeout: Duration,
    /// Sending on a session older than this starts a new handshake.
    pub rekey_after: Duration,
    /// A session older than this is no longer used (addrd drops sessions
    /// at 180 s; this leaves a margin).
    pub session_usable: Duration,
    /// After this many sends of one request on one session without an
    /// answer, a new handshake starts (addrd may have restarted and lost
    /// the session); the request then continues on the new session.
    pub sends_before_rehandshake: u32,
}

impl Default for ClientTimers {
    fn default() -> Self {
        ClientTimers {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            request_timeout: Duration::from_secs(30),
            rekey_after: Duration::from_secs(120),
            session_usable: Duration::from_secs(170),
            sends_before_rehandshake: 3,
        }
    }
}

/// What an [`AuthorityClient`] needs to know.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The terminal's static key: its tunnel key and its login identity.
    pub keypair: StaticKeypair,
    /// addrd's pinned static public key.
    pub server_key: PublicKey,
    /// Where addrd is.
    pub server: SocketAddr,
    /// A pre-shared key configured for addrd, if any.
    pub psk: Option<Psk>,
    /// Timing.
    pub timers: ClientTimers,
}

/// Why a request produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No answer within [`ClientTimers::request_timeout`] (addrd
    /// unreachable, or it never completed a handshake: a wrong pinned key
    /// ends here too).
    #[error("addrd did not answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be encoded (a field out of bounds).
    #[error("request cannot be encoded: {0}")]
    Encode(#[from] MessageError),
    /// addrd answered with a response that does not answer this kind of
    /// request (for example `Renewed` to a login): a bug on addrd's side.
    #[error("unexpected {response} answer to a {request} request")]
    UnexpectedResponse {
        /// [`Request::kind_name`] of the request.
        request: &'static str,
        /// [`Response::kind_name`] of the answer.
        response: &'static str,
    },
}

/// Whether `response` is a possible answer to a request of kind `request`.
fn answers(request: &'static str, response: &Response) -> bool {
    match response {
        Response::ServerBusy { .. } | Response::Error { .. } => true,
        Response::LoginOk { .. } | Response::LoginRefused { .. } => request == "login",
        Response::Renewed { .. } => request == "renew",
        Response::LoginNeeded { .. } => request != "login",
        Response::Netmap(_) => request == "netmap",
        Response::Location(_) | Response::NotBound => request == "where_is",
    }
}

/// One request waiting for its answer.
struct Outstanding {
    /// The encoded record (wiped on drop: a login holds the password).
    record: Zeroizing<Vec<u8>>,
    /// [`Request::kind_name`].
    kind: &'static str,
    deadline: Instant,
    next_retry: Instant,
    backoff: Duration,
    /// Sends on the current session.
    sends_on_session: u32,
}

struct Established {
    local: u32,
    remote: u32,
    crypto: SessionCrypto,
    at: Instant,
}

struct Pending {
    state: InitiatorHandshake,
    local: u32,
    next_retry: Instant,
    backoff: Duration,
}

/// The terminal's end of the authority channel; see the
/// [module documentation](super).
///
/// ```text
/// send(now, request) -> RequestId
/// handle_datagram(now, src, &mut buf)   datagrams from addrd
/// poll_transmit() -> Transmit           datagrams to send
/// poll_timeout() / handle_timeout(now)  retransmissions, give-up
/// poll_response() -> (RequestId, Result<Response, ClientError>)
/// ```
pub struct AuthorityClient {
    config: ClientConfig,
    own_macs: MacKeys,
    jar: CookieJar,
    rng: ChaCha20Rng,
    current: Option<Established>,
    previous: Option<Established>,
    pending: Option<Pending>,
    last_timestamp: UnixTime,
    next_id: u64,
    outstanding: BTreeMap<RequestId, Outstanding>,
    responses: VecDeque<(RequestId, Result<Response, ClientError>)>,
    transmits: VecDeque<Transmit>,
    counters: AuthorityCounters,
}

impl AuthorityClient {
    /// A client with no session yet; nothing is sent until the first
    /// [`send`](Self::send).
    pub fn new(config: ClientConfig, seed: [u8; 32], now: Now) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let next_id = rng.next_u64();
        AuthorityClient {
            own_macs: MacKeys::new(&config.keypair.public()),
            jar: CookieJar::new(&config.server_key),
            rng,
            current: None,
            previous: None,
            pending: None,
            last_timestamp: UnixTime::from_duration(
                now.unix
                    .as_duration()
                    .saturating_sub(Duration::from_nanos(1)),
            ),
            next_id,
            outstanding: BTreeMap::new(),
            responses: VecDeque::new(),
            transmits: VecDeque::new(),
            counters: AuthorityCounters::default(),
            config,
        }
    }

    /// Sends `request` (after a handshake if there is no usable session)
    /// and returns the id its answer will carry in
    /// [`poll_response`](Self::poll_response).
    pub fn send(&mut self, now: Now, request: Request) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let mut record = Zeroizing::new(vec![0u8; request.buffer_len()]);
        if let Err(e) = request.emit(id, &mut record) {
            self.responses.push_back((id, Err(ClientError::Encode(e))));
            return id;
        }
        let kind = request.kind_name();
        drop(request);
        let backoff = self.config.timers.retry_initial;
        let next_retry = now.instant + self.jitter(backoff);
        self.outstanding.insert(
            id,
            Outstanding {
                record,
                kind,
                deadline: now.instant + self.config.timers.request_timeout,
                next_retry,
                backoff,
                sends_on_session: 0,
            },
        );
        self.counters.requests += 1;
        self.expire_sessions(now);
        if self.current.is_some() {
            self.transmit_request(id);
            self.maybe_rekey(now);
        } else if self.pending.is_none() {
            self.start_handshake(now, self.config.timers.retry_initial);
        }
        id
    }

    /// Handles a datagram that came from addrd (any authority message type;
    /// the driver routes by [`MessageType::is_authority`]). `src` is not
    /// checked: addrd may answer from another address of a multi-homed
    /// host, and every message authenticates itself.
    pub fn handle_datagram(&mut self, now: Now, src: SocketAddr, datagram: &mut [u8]) {
        let _ = src;
        if let Err(reason) = self.dispatch(now, datagram) {
            self.counters.record(reason);
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next answered (or failed) request.
    pub fn poll_response(&mut self) -> Option<(RequestId, Result<Response, ClientError>)> {
        self.responses.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if anything
    /// waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self
            .outstanding
            .values()
            .map(|o| o.next_retry.min(o.deadline))
            .min();
        let handshake = self.pending.as_ref().map(|p| p.next_retry);
        requests.into_iter().chain(handshake).min()
    }

    /// Retransmits what is due, gives up requests past their deadline, and
    /// restarts or abandons the handshake.
    pub fn handle_timeout(&mut self, now: Now) {
        self.expire_sessions(now);
        let timers = self.config.timers;
        let due: Vec<RequestId> = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.next_retry.min(o.deadline) <= now.instant)
            .map(|(id, _)| *id)
            .collect();
        let mut need_handshake = false;
        for id in due {
            let Some(o) = self.outstanding.get_mut(&id) else {
                continue;
            };
            if o.deadline <= now.instant {
                self.outstanding.remove(&id);
                self.counters.timeouts += 1;
                self.responses
                    .push_back((id, Err(ClientError::Timeout(timers.request_timeout))));
                continue;
            }
            o.backoff = (o.backoff * 2).min(timers.retry_max);
            let backoff = o.backoff;
            let stale = o.sends_on_session >= timers.sends_before_rehandshake;
            let next = now.instant + self.jitter(backoff);
            if let Some(o) = self.outstanding.get_mut(&id) {
                o.next_retry = next;
            }
            if self.current.is_some() {
                self.counters.retransmissions += 1;
                self.transmit_request(id);
                need_handshake |= stale;
            } else {
                need_handshake = true;
            }
        }
        if let Some(pending) = &self.pending {
            if pending.next_retry <= now.instant {
                if self.outstanding.is_empty() {
                    self.pending = None;
                } else {
                    let backoff = (pending.backoff * 2).min(timers.retry_max);
                    self.start_handshake(now, backoff);
                }
            }
        } else if need_handshake && !self.outstanding.is_empty() {
            self.start_handshake(now, timers.retry_initial);
        }
        self.maybe_rekey(now);
    }

    /// The client's counters.
    pub fn counters(&self) -> &AuthorityCounters {
        &self.counters
    }

    /// Whether a session with addrd is established and usable.
    pub fn is_established(&self) -> bool {
        self.current.is_some()
    }

    /// Requests waiting for an answer.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Points the client at a new address for addrd (the next datagrams go
    /// there).
    pub fn set_server(&mut self, server: SocketAddr) {
        self.config.server = server;
    }

    fn dispatch(&mut self, now: Now, datagram: &mut [u8]) -> Result<(), AuthorityDrop> {
        let message_type = ControlPacket::new_checked(&*datagram)
            .map_err(|_| AuthorityDrop::Malformed)?
            .message_type();
        match message_type {
            MessageType::AuthorityResponse => self.handle_response(now, datagram),
            MessageType::AuthorityCookieReply => self.handle_cookie_reply(now, datagram),
            MessageType::AuthorityData => self.handle_data(datagram),
            _ => Err(AuthorityDrop::UnexpectedMessage),
        }
    }

    fn handle_response(&mut self, now: Now, datagram: &[u8]) -> Result<(), AuthorityDrop> {
        let repr = ResponseRepr::parse_as(datagram, MessageType::AuthorityResponse)
            .map_err(|_| AuthorityDrop::Malformed)?;
        let packet = ControlPacket::new_checked(datagram).map_err(|_| AuthorityDrop::Malformed)?;
        let covered = packet.bytes_before_mac1().ok_or(AuthorityDrop::Malformed)?;
        if !bool::from(cookie::mac1(&self.own_macs, covered).ct_eq(&repr.mac1)) {
            return Err(AuthorityDrop::BadMac1);
        }
        let pending = self
            .pending
            .as_mut()
            .filter(|p| p.local == repr.receiver_spi)
            .ok_or(AuthorityDrop::UnexpectedHandshake)?;
        let (payload, keys) = pending.state.finish(repr.noise).map_err(handshake_drop)?;
        if payload.spi != repr.sender_spi || !payload.lease.is_empty() {
            return Err(AuthorityDrop::HandshakePayload);
        }
        let local = pending.local;
        self.pending = None;
        self.previous = self.current.take();
        self.current = Some(Established {
            local,
            remote: payload.spi,
            crypto: SessionCrypto::new(&keys),
            at: now.instant,
        });
        self.counters.handshakes += 1;
        // Everything that waited goes out now, on the new session.
        let ids: Vec<RequestId> = self.outstanding.keys().copied().collect();
        for id in ids {
            if let Some(o) = self.outstanding.get_mut(&id) {
                o.sends_on_session = 0;
            }
            self.transmit_request(id);
        }
        Ok(())
    }

    fn handle_cookie_reply(&mut self, now: Now, datagram: &[u8]) -> Result<(), AuthorityDrop> {
        let repr = CookieReplyRepr::parse_as(datagram, MessageType::AuthorityCookieReply)
            .map_err(|_| AuthorityDrop::Malformed)?;
        let backoff = self
            .pending
            .as_ref()
            .filter(|p| p.local == repr.receiver_spi)
            .map(|p| p.backoff)
            .ok_or(AuthorityDrop::UnexpectedHandshake)?;
        self.jar
            .consume_reply(now.instant, &repr.nonce, &repr.encrypted_cookie)
            .map_err(|_| AuthorityDrop::BadCookieReply)?;
        // Bound to our initiation's mac1: retry at once with a mac2.
        self.start_handshake(now, backoff);
        Ok(())
    }

    fn handle_data(&mut self, datagram: &mut [u8]) -> Result<(), AuthorityDrop> {
        let header = DataHeader::parse(datagram)?;
        let session = [self.current.as_mut(), self.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|s| s.local == header.receiver)
            .ok_or(AuthorityDrop::UnknownSession)?;
        let record = session.crypto.open(datagram)?;
        let (id, response) = Response::parse(record).map_err(|_| AuthorityDrop::BadRecord)?;
        let request = self
            .outstanding
            .remove(&id)
            .ok_or(AuthorityDrop::UnsolicitedResponse)?
            .kind;
        let answer = if answers(request, &response) {
            Ok(response)
        } else {
            Err(ClientError::UnexpectedResponse {
                request,
                response: response.kind_name(),
            })
        };
        self.responses.push_back((id, answer));
        Ok(())
    }

    fn transmit_request(&mut self, id: RequestId) {
        let (Some(session), Some(o)) = (self.current.as_mut(), self.outstanding.get_mut(&id))
        else {
            return;
        };
        if let Some(contents) = session.crypto.seal(session.remote, &o.record) {
            o.sends_on_session += 1;
            self.transmits.push_back(Transmit {
                destination: self.config.server,
                contents,
            });
        }
    }

    fn start_handshake(&mut self, now: Now, backoff: Duration) {
        let local = loop {
            let candidate = self.rng.next_u32();
            let taken = [self.current.as_ref(), self.previous.as_ref()]
                .into_iter()
                .flatten()
                .any(|s| s.local == candidate);
            if candidate >= crate::esp::MIN_SPI && !taken {
                break candidate;
            }
        };
        // Strictly increasing timestamps, even within one clock tick.
        let unix = now
            .unix
            .max(self.last_timestamp.saturating_add(Duration::from_nanos(1)));
        self.last_timestamp = unix;
        let payload = HandshakePayload {
            spi: local,
            timestamp: unix.tai64n(),
            lease: &[],
        };
        let mut noise = [0u8; crate::handshake::MIN_INITIATION_LEN];
        let Ok((state, noise_len)) = InitiatorHandshake::start_on(
            Channel::Authority,
            &self.config.keypair,
            &self.config.server_key,
            self.config.psk.as_ref(),
            &payload,
            &mut self.rng,
            &mut noise,
        ) else {
            return;
        };
        let repr = InitiationRepr {
            sender_spi: local,
            noise: noise.get(..noise_len).unwrap_or_default(),
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut message = vec![0u8; repr.buffer_len()];
        if repr
            .emit_as(&mut message, MessageType::AuthorityInitiation)
            .is_err()
        {
            return;
        }
        if seal_macs(&mut message, &mut self.jar, now.instant).is_none() {
            return;
        }
        self.pending = Some(Pending {
            state,
            local,
            next_retry: now.instant + self.jitter(backoff),
            backoff,
        });
        self.transmits.push_back(Transmit {
            destination: self.config.server,
            contents: message,
        });
    }

    fn maybe_rekey(&mut self, now: Now) {
        let old = self.current.as_ref().is_some_and(|s| {
            now.instant.saturating_duration_since(s.at) >= self.config.timers.rekey_after
        });
        if old && self.pending.is_none() && !self.outstanding.is_empty() {
            self.start_handshake(now, self.config.timers.retry_initial);
        }
    }

    fn expire_sessions(&mut self, now: Now) {
        let usable = self.config.timers.session_usable;
        let expired = |s: &Option<Established>| {
            s.as_ref()
                .is_some_and(|s| now.instant.saturating_duration_since(s.at) >= usable)
        };
        if expired(&self.previous) {
            self.previous = None;
        }
        if expired(&self.current) {
            self.current = None;
        }
    }

    /// `d` plus up to 25 % random jitter.
    fn jitter(&mut self, d: Duration) -> Duration {
        let extra = d / 4;
        let nanos = u64::try_from(extra.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return d;
        }
        d + Duration::from_nanos(self.rng.next_u64() % nanos)
    }
}

impl std::fmt::Debug for AuthorityClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityClient")
            .field("server", &self.config.server)
            .field("server_key", &self.config.server_key)
            .field("established", &self.current.is_some())
            .field("handshaking", &self.pending.is_some())
            .field("outstanding", &self.outstanding.len())
            .finish_non_exhaustive()
    }
}

/// Fills in mac1 and mac2 of an emitted initiation.
fn seal_macs(message: &mut [u8], jar: &mut CookieJar, now: Instant) -> Option<()> {
    let mut packet = ControlPacket::new_checked(&mut *message).ok()?;
    let mac1 = jar.mac1(packet.bytes_before_mac1()?);
    packet.set_mac1(&mac1).ok()?;
    let mac2 = jar.mac2(now, packet.bytes_before_mac2()?);
    packet.set_mac2(&mac2).ok()?;
    Some(())
}

pub(super) fn handshake_drop(e: HandshakeError) -> AuthorityDrop {
    match e {
        HandshakeError::Payload(_) => AuthorityDrop::HandshakePayload,
        _ => AuthorityDrop::HandshakeFailed,
    }
}
