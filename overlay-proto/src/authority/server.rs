//! addrd's side of the authority channel.
#![deny(clippy::indexing_slicing)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroize;

use super::client::handshake_drop;
use super::crypto::{DataHeader, SessionCrypto};
use super::message::{MessageError, Request, RequestId, Response};
use super::{AuthorityCounters, AuthorityDrop};
use crate::cookie::{self, CookieChecker, MacKeys, MAC_LEN};
use crate::handshake::{
    Channel, HandshakePayload, Psk, PublicKey, ResponderHandshake, StaticKeypair,
};
use crate::node::Transmit;
use crate::ratelimit::{LoadMonitor, RateLimitConfig, RateLimiter, DEFAULT_LOAD_THRESHOLD};
use crate::time::{Now, Tai64N, UnixTime};
use crate::wire::{ControlPacket, CookieReplyRepr, InitiationRepr, MessageType, ResponseRepr};

/// How often [`AuthorityServer::handle_timeout`] sweeps expired state.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// addrd's limits and timing for the channel.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// addrd's static key (the one terminals pin).
    pub keypair: StaticKeypair,
    /// A pre-shared key every terminal must also use, if configured.
    pub psk: Option<Psk>,
    /// Most sessions held; beyond, the oldest is dropped.
    pub max_sessions: usize,
    /// Most sessions held per client key; beyond, its oldest is dropped.
    pub max_sessions_per_client: usize,
    /// Most client records (replay timestamps and response caches).
    pub max_clients: usize,
    /// Session lifetime from its handshake.
    pub session_lifetime: Duration,
    /// How far a first initiation's timestamp may be from our clock.
    pub initiation_freshness: Duration,
    /// How long an answer stays cached for retransmitted requests.
    pub response_cache_lifetime: Duration,
    /// Cached answers per client key.
    pub responses_per_client: usize,
    /// Per-source handshake rate.
    pub rate_limit: RateLimitConfig,
    /// Initiations per second above which cookies are required.
    pub load_threshold: u32,
}

impl ServerConfig {
    /// The defaults for `keypair`.
    pub fn new(keypair: StaticKeypair, psk: Option<Psk>) -> Self {
        ServerConfig {
            keypair,
            psk,
            max_sessions: 65_536,
            max_sessions_per_client: 3,
            max_clients: 65_536,
            session_lifetime: Duration::from_secs(180),
            initiation_freshness: Duration::from_secs(180),
            response_cache_lifetime: Duration::from_secs(120),
            responses_per_client: 16,
            rate_limit: RateLimitConfig::default(),
            load_threshold: DEFAULT_LOAD_THRESHOLD,
        }
    }
}

/// The server's name for a session (its own session id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

/// A request to execute, from an authenticated client.
#[derive(Debug)]
pub struct Incoming {
    /// The session it came on; answer with [`AuthorityServer::respond`].
    pub session: SessionId,
    /// The client's static public key, authenticated by the handshake: the
    /// key a login's lease is issued for.
    pub client_key: PublicKey,
    /// Where the request came from (for per-source rate limits and audit
    /// logs).
    pub src: SocketAddr,
    /// The client's id for the request.
    pub request_id: RequestId,
    /// The request.
    pub request: Request,
}

/// Why [`AuthorityServer::respond`] did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The response cannot be encoded (a field out of bounds).
    #[error("response cannot be encoded: {0}")]
    Encode(#[from] MessageError),
    /// No session of that id is (or recently was) held.
    #[error("unknown session")]
    UnknownSession,
    /// The request is not waiting for an answer (already answered, or
    /// forgotten).
    #[error("request not pending")]
    NotPending,
}

struct Session {
    client: PublicKey,
    remote: u32,
    crypto: SessionCrypto,
    created: Instant,
    src: SocketAddr,
}

enum Cached {
    InProgress,
    Done(Vec<u8>),
}

struct CacheEntry {
    id: RequestId,
    state: Cached,
    at: Instant,
}

struct ClientRecord {
    last_timestamp: Tai64N,
    last_seen: Instant,
    sessions: VecDeque<u32>,
    cache: VecDeque<CacheEntry>,
}

/// addrd's end of the authority channel; see the
/// [module documentation](super).
///
/// ```text
/// handle_datagram(now, src, &mut buf) -> Option<Incoming>   execute it, then
/// respond(now, session, request_id, response)
/// poll_transmit()                       handshake responses, cookie replies, answers
/// poll_timeout() / handle_timeout(now)  sweeping expired sessions and caches
/// ```
pub struct AuthorityServer {
    config: ServerConfig,
    cookies: CookieChecker,
    load: LoadMonitor,
    rate: RateLimiter,
    rng: ChaCha20Rng,
    sessions: HashMap<u32, Session>,
    /// Sessions in creation order, for expiry and eviction.
    order: VecDeque<(Instant, u32)>,
    /// Expired sessions' owners, so a late answer still reaches the cache.
    retired: HashMap<u32, (PublicKey, Instant)>,
    retired_order: VecDeque<(Instant, u32)>,
    clients: HashMap<PublicKey, ClientRecord>,
    transmits: VecDeque<Transmit>,
    counters: AuthorityCounters,
    next_sweep: Option<Instant>,
    last_full_sweep: Option<Instant>,
}

impl AuthorityServer {
    /// A server with the default limits.
    pub fn new(keypair: StaticKeypair, psk: Option<Psk>, seed: [u8; 32]) -> Self {
        Self::with_config(ServerConfig::new(keypair, psk), seed)
    }

    /// A server with the given limits.
    pub fn with_config(config: ServerConfig, seed: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        AuthorityServer {
            cookies: CookieChecker::new(&config.keypair.public(), &mut rng),
            load: LoadMonitor::new(config.load_threshold),
            rate: RateLimiter::new(config.rate_limit),
            rng,
            sessions: HashMap::new(),
            order: VecDeque::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            clients: HashMap::new(),
            transmits: VecDeque::new(),
            counters: AuthorityCounters::default(),
            next_sweep: None,
            last_full_sweep: None,
            config,
        }
    }

    /// Handles a datagram of the authority channel. Returns a request to
    /// execute, at most once per `(client key, request id)`: retransmissions
    /// are answered from the cache (or dropped while the first copy is being
    /// executed). Every refused datagram is counted.
    pub fn handle_datagram(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &mut [u8],
    ) -> Option<Incoming> {
        self.schedule_sweep(now.instant);
        match self.dispatch(now, src, datagram) {
            Ok(incoming) => incoming,
            Err(reason) => {
                self.counters.record(reason);
                None
            }
        }
    }

    /// Answers request `request_id` that came on `session`. The answer is
    /// cached for the client's retransmissions (also on a later session)
    /// and sent now if the session is still held.
    pub fn respond(
        &mut self,
        now: Now,
        session: SessionId,
        request_id: RequestId,
        response: Response,
    ) -> Result<(), RespondError> {
        let mut record = vec![0u8; response.buffer_len()];
        response.emit(request_id, &mut record)?;
        let client = match self.sessions.get(&session.0) {
            Some(s) => s.client,
            None => {
                self.retired
                    .get(&session.0)
                    .ok_or(RespondError::UnknownSession)?
                    .0
            }
        };
        let entry = self
            .clients
            .get_mut(&client)
            .and_then(|c| c.cache.iter_mut().find(|e| e.id == request_id))
            .filter(|e| matches!(e.state, Cached::InProgress))
            .ok_or(RespondError::NotPending)?;
        entry.at = now.instant;
        if let Some(s) = self.sessions.get_mut(&session.0) {
            if let Some(contents) = s.crypto.seal(s.remote, &record) {
                self.transmits.push_back(Transmit {
                    destination: s.src,
                    contents,
                });
            }
        }
        entry.state = Cached::Done(record);
        self.schedule_sweep(now.instant);
        Ok(())
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should sweep, if
    /// anything is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Forgets expired sessions, cached answers, client records and rate
    /// limiter entries.
    pub fn handle_timeout(&mut self, now: Now) {
        if self.next_sweep.is_some_and(|t| t <= now.instant) {
            self.next_sweep = None;
            self.sweep(now.instant);
            self.schedule_sweep(now.instant);
        }
    }

    /// The server's counters.
    pub fn counters(&self) -> &AuthorityCounters {
        &self.counters
    }

    /// Sessions held.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Forces the cookie defence on or off (tests, and an operator
    /// expecting a flood).
    pub fn set_under_load(&mut self, forced: bool) {
        self.load.set_forced(forced);
    }

    fn dispatch(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Option<Incoming>, AuthorityDrop> {
        let message_type = ControlPacket::new_checked(&*datagram)
            .map_err(|_| AuthorityDrop::Malformed)?
            .message_type();
        match message_type {
            MessageType::AuthorityInitiation => {
                self.handle_initiation(now, src, datagram).map(|()| None)
            }
            MessageType::AuthorityData => self.handle_data(now, src, datagram),
            _ => Err(AuthorityDrop::UnexpectedMessage),
        }
    }

    fn handle_initiation(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), AuthorityDrop> {
        let repr = InitiationRepr::parse_as(datagram, MessageType::AuthorityInitiation)
            .map_err(|_| AuthorityDrop::Malformed)?;
        let packet = ControlPacket::new_checked(datagram).map_err(|_| AuthorityDrop::Malformed)?;
        let before_mac1 = packet.bytes_before_mac1().ok_or(AuthorityDrop::Malformed)?;
        if !self.cookies.verify_mac1(before_mac1, &repr.mac1) {
            return Err(AuthorityDrop::BadMac1);
        }
        let before_mac2 = packet.bytes_before_mac2().ok_or(AuthorityDrop::Malformed)?;
        self.load.record(now.instant);
        if self.load.under_load(now.instant)
            && !self
                .cookies
                .verify_mac2(now.instant, src, before_mac2, &repr.mac2)
        {
            self.send_cookie_reply(now, src, repr.sender_spi, &repr.mac1);
            return Err(AuthorityDrop::CookieRequired);
        }
        if !self.rate.allow(src.ip(), now.instant) {
            return Err(AuthorityDrop::RateLimited);
        }
        let (responder, client_key, payload) = ResponderHandshake::read_initiation_on(
            Channel::Authority,
            &self.config.keypair,
            repr.noise,
            &mut self.rng,
        )
        .map_err(handshake_drop)?;
        if payload.spi != repr.sender_spi || !payload.lease.is_empty() {
            return Err(AuthorityDrop::HandshakePayload);
        }
        match self.clients.get(&client_key) {
            Some(c) if payload.timestamp <= c.last_timestamp => {
                return Err(AuthorityDrop::ReplayedInitiation)
            }
            Some(_) => {}
            None => {
                if !is_fresh(
                    payload.timestamp,
                    now.unix,
                    self.config.initiation_freshness,
                ) {
                    return Err(AuthorityDrop::StaleInitiation);
                }
                if self.clients.len() >= self.config.max_clients {
                    // A full table is swept at most once a second, so a
                    // flood of new keys cannot make every initiation scan it.
                    if self.last_full_sweep.is_none_or(|t| {
                        now.instant.saturating_duration_since(t) >= Duration::from_secs(1)
                    }) {
                        self.last_full_sweep = Some(now.instant);
                        self.sweep(now.instant);
                    }
                    if self.clients.len() >= self.config.max_clients {
                        return Err(AuthorityDrop::TooManyClients);
                    }
                }
            }
        }
        let local = self.allocate_session_id();
        let ours = HandshakePayload {
            spi: local,
            timestamp: now.unix.tai64n(),
            lease: &[],
        };
        let mut noise = [0u8; crate::handshake::MIN_RESPONSE_LEN];
        let (noise_len, keys) = responder
            .write_response(self.config.psk.as_ref(), &ours, &mut noise)
            .map_err(handshake_drop)?;
        let response = ResponseRepr {
            sender_spi: local,
            receiver_spi: payload.spi,
            noise: noise.get(..noise_len).ok_or(AuthorityDrop::Malformed)?,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut message = vec![0u8; response.buffer_len()];
        response
            .emit_as(&mut message, MessageType::AuthorityResponse)
            .map_err(|_| AuthorityDrop::Malformed)?;
        {
            let mut packet = ControlPacket::new_checked(&mut message[..])
                .map_err(|_| AuthorityDrop::Malformed)?;
            let covered = packet.bytes_before_mac1().ok_or(AuthorityDrop::Malformed)?;
            let mac1 = cookie::mac1(&MacKeys::new(&client_key), covered);
            packet
                .set_mac1(&mac1)
                .map_err(|_| AuthorityDrop::Malformed)?;
        }
        let record = self
            .clients
            .entry(client_key)
            .or_insert_with(|| ClientRecord {
                last_timestamp: payload.timestamp,
                last_seen: now.instant,
                sessions: VecDeque::new(),
                cache: VecDeque::new(),
            });
        record.last_timestamp = payload.timestamp;
        record.last_seen = now.instant;
        record.sessions.push_back(local);
        let mut evict = Vec::new();
        while record.sessions.len() > self.config.max_sessions_per_client {
            if let Some(old) = record.sessions.pop_front() {
                evict.push(old);
            }
        }
        for old in evict {
            self.retire(old, now.instant);
        }
        self.sessions.insert(
            local,
            Session {
                client: client_key,
                remote: payload.spi,
                crypto: SessionCrypto::new(&keys),
                created: now.instant,
                src,
            },
        );
        self.order.push_back((now.instant, local));
        while self.sessions.len() > self.config.max_sessions {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            if self.sessions.contains_key(&oldest) {
                self.retire(oldest, now.instant);
                self.counters.sessions_evicted += 1;
            }
        }
        self.counters.handshakes += 1;
        self.transmits.push_back(Transmit {
            destination: src,
            contents: message,
        });
        Ok(())
    }

    fn handle_data(
        &mut self,
        now: Now,
        src: SocketAddr,
        datagram: &mut [u8],
    ) -> Result<Option<Incoming>, AuthorityDrop> {
        let header = DataHeader::parse(datagram)?;
        let created = self
            .sessions
            .get(&header.receiver)
            .ok_or(AuthorityDrop::UnknownSession)?
            .created;
        if now.instant.saturating_duration_since(created) >= self.config.session_lifetime {
            self.retire(header.receiver, now.instant);
            return Err(AuthorityDrop::SessionExpired);
        }
        let session = self
            .sessions
            .get_mut(&header.receiver)
            .ok_or(AuthorityDrop::UnknownSession)?;
        let record = session.crypto.open(datagram)?;
        let parsed = Request::parse(record);
        // The plaintext may hold a password: wipe it from the caller's
        // buffer now that it is parsed.
        record.zeroize();
        let (request_id, request) = parsed.map_err(|_| AuthorityDrop::BadRecord)?;
        // Authenticated: the client is at `src` now (roaming, NAT).
        session.src = src;
        let client_key = session.client;
        let local = header.receiver;
        let cache_limit = self.config.responses_per_client;
        let client = self
            .clients
            .entry(client_key)
            .or_insert_with(|| ClientRecord {
                last_timestamp: Tai64N::default(),
                last_seen: now.instant,
                sessions: VecDeque::new(),
                cache: VecDeque::new(),
            });
        client.last_seen = now.instant;
        match client.cache.iter().find(|e| e.id == request_id) {
            Some(CacheEntry {
                state: Cached::Done(answer),
                ..
            }) => {
                let answer = answer.clone();
                if let Some(s) = self.sessions.get_mut(&local) {
                    if let Some(contents) = s.crypto.seal(s.remote, &answer) {
                        self.transmits.push_back(Transmit {
                            destination: s.src,
                            contents,
                        });
                    }
                }
                self.counters.duplicates_answered += 1;
                return Ok(None);
            }
            Some(CacheEntry {
                state: Cached::InProgress,
                ..
            }) => return Err(AuthorityDrop::RequestInProgress),
            None => {}
        }
        if client.cache.len() >= cache_limit {
            // Forget the oldest answered request first.
            let at = client
                .cache
                .iter()
                .position(|e| matches!(e.state, Cached::Done(_)))
                .unwrap_or(0);
            client.cache.remove(at);
        }
        client.cache.push_back(CacheEntry {
            id: request_id,
            state: Cached::InProgress,
            at: now.instant,
        });
        self.counters.requests += 1;
        Ok(Some(Incoming {
            session: SessionId(local),
            client_key,
            src,
            request_id,
            request,
        }))
    }

    fn send_cookie_reply(
        &mut self,
        now: Now,
        src: SocketAddr,
        receiver: u32,
        mac1: &[u8; MAC_LEN],
    ) {
        let body = self
            .cookies
            .make_reply(now.instant, src, mac1, &mut self.rng);
        let repr = CookieReplyRepr {
            receiver_spi: receiver,
            nonce: body.nonce,
            encrypted_cookie: body.encrypted_cookie,
        };
        let mut contents = vec![0u8; repr.buffer_len()];
        if repr
            .emit_as(&mut contents, MessageType::AuthorityCookieReply)
            .is_ok()
        {
            self.counters.cookie_replies_sent += 1;
            self.transmits.push_back(Transmit {
                destination: src,
                contents,
            });
        }
    }

    fn allocate_session_id(&mut self) -> u32 {
        loop {
            let candidate = self.rng.next_u32();
            if candidate >= crate::esp::MIN_SPI
                && !self.sessions.contains_key(&candidate)
                && !self.retired.contains_key(&candidate)
            {
                return candidate;
            }
        }
    }

    /// Drops a session's keys, remembering its owner for late answers.
    fn retire(&mut self, id: u32, now: Instant) {
        if let Some(s) = self.sessions.remove(&id) {
            self.retired.insert(id, (s.client, now));
            self.retired_order.push_back((now, id));
            if let Some(c) = self.clients.get_mut(&s.client) {
                c.sessions.retain(|&x| x != id);
            }
        }
        while self.retired.len() > self.config.max_sessions {
            match self.retired_order.pop_front() {
                Some((_, old)) => {
                    self.retired.remove(&old);
                }
                None => break,
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let lifetime = self.config.session_lifetime;
        while let Some(&(created, id)) = self.order.front() {
            if now.saturating_duration_since(created) < lifetime {
                break;
            }
            self.order.pop_front();
            self.retire(id, now);
        }
        let cache_lifetime = self.config.response_cache_lifetime;
        while let Some(&(at, id)) = self.retired_order.front() {
            if now.saturating_duration_since(at) < cache_lifetime {
                break;
            }
            self.retired_order.pop_front();
            self.retired.remove(&id);
        }
        // A client record outlives the freshness window of its last
        // initiation, so an old initiation can never be replayed.
        let keep = self
            .config
            .initiation_freshness
            .max(cache_lifetime)
            .max(lifetime);
        self.clients.retain(|_, c| {
            c.cache
                .retain(|e| now.saturating_duration_since(e.at) < cache_lifetime);
            !c.sessions.is_empty() || now.saturating_duration_since(c.last_seen) < keep
        });
        self.rate.sweep(now);
    }

    fn schedule_sweep(&mut self, now: Instant) {
        let holding =
            !self.sessions.is_empty() || !self.clients.is_empty() || !self.retired.is_empty();
        if holding && self.next_sweep.is_none() {
            self.next_sweep = Some(now + SWEEP_INTERVAL);
        }
    }
}

impl std::fmt::Debug for AuthorityServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityServer")
            .field("public", &self.config.keypair.public())
            .field("sessions", &self.sessions.len())
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// Whether `timestamp` is within `window` of `now` either way.
fn is_fresh(timestamp: Tai64N, now: UnixTime, window: Duration) -> bool {
    let low = UnixTime::from_duration(now.as_duration().saturating_sub(window)).tai64n();
    let high = now.saturating_add(window).tai64n();
    timestamp >= low && timestamp <= high
}
