//! Connection-mode WSP over WTP (WAP-230-WSP §7.1.2 and §8.2, UDP 9201):
//! one [`Responder`] per listener socket, driven by one task that owns the
//! socket's WTP state: datagrams, the responder's timer and the answers of
//! finished requests come in; the responder's events and datagrams go out.
//!
//! Sessions are kept per client (the UDP sender: in userspace mode one
//! tunneld flow socket per overlay source): a Connect (a class 2 invoke) is
//! answered with a ConnectReply granting [`negotiate`]d capabilities — the
//! Client-SDU-Size at most the application's `sdu-size`, the Server-SDU-Size
//! at most what WTP reassembles, Method-MOR at most
//! [`SessionLimits::method_mor`], no Protocol Options (no push, no resume) —
//! and a new server session id (a uintvar). The granted Client-SDU-Size is
//! given to the adapter as [`WapClient`](crate::adapter::WapClient) and, if
//! smaller than the responder's segment size, to WTP as this peer's segment
//! size. A second Connect from a client replaces its session.
//!
//! Get- and Post-class methods (class 2 invokes) inside a session go to the
//! adapter as their own tasks; their Replies come back to this loop, which
//! hands them to the responder as the transaction's result (WTP segments
//! large ones). An invoke with U/P set is acknowledged at once (a POST
//! client may wait for that Ack before it accepts a Result). Refusals:
//! - a method outside a session: WTP Abort, WSP reason DISCONNECT;
//! - over the session's Method-MOR: Abort MOREXCEEDED;
//! - over `max-connections` requests running, or while shutting down: a
//!   503 Reply;
//! - a Connect over [`SessionLimits::max_sessions`] or
//!   [`SessionLimits::max_sessions_per_address`] (per overlay source
//!   address): Abort CONGESTION;
//! - a PDU that does not decode, or one a client never sends: Abort
//!   PROTOERR (class 2), else dropped;
//! - each counted ([`WapCounters`](super::WapCounters)).
//!
//! Disconnect (class 0, often reusing the TID of the transaction just
//! finished; the responder hands class 0 up without TID checks) ends the
//! session if it names it (otherwise it is ignored and counted). Suspend
//! ends the session too: Session Resume is never granted, so there is
//! nothing to resume, and a Resume is aborted with DISCONNECT (the client
//! connects again). A session with no datagram for
//! [`SessionLimits::idle_timeout`] and no method outstanding expires.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::{
    abort_reason, bump, refusal_reply, reply_pdu, stopping, Inbound, Shared, WspRequest,
    ENCODING_VERSION,
};
use crate::adapter::Origin;
use crate::server::http::DRAIN_TIMEOUT;
use crate::wsp::capabilities::{negotiate, Capabilities, ServerLimits};
use crate::wsp::pdu::{self, Mode, Pdu};
use crate::wsp::Headers;
use crate::wtp::{Responder, TransactionClass, TxId, WtpError, WtpEvent};

/// How often idle sessions are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Most clients whose overlay identity is remembered at once (each one
/// that sent a WTP datagram within the idle timeout).
const MAX_PEERS: usize = 65_536;

/// One WSP session.
#[derive(Debug)]
struct Session {
    /// The server session id granted.
    id: u32,
    /// Who connected.
    origin: Origin,
    /// The granted Client-SDU-Size (0: no limit).
    sdu_size: usize,
    /// The granted Method-MOR.
    method_mor: usize,
    /// Methods handed up whose result is not yet confirmed.
    outstanding: usize,
}

/// A client the loop has heard from.
#[derive(Debug)]
struct Peer {
    /// Its overlay source and destination (latest datagram).
    origin: Origin,
    /// When its last datagram arrived.
    last_seen: Instant,
}

/// A finished request's Reply.
#[derive(Debug)]
struct Answer {
    tx: TxId,
    reply: Vec<u8>,
}

/// The WTP state of one listener socket.
pub(super) struct Transactions {
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    responder: Responder,
    peers: HashMap<SocketAddr, Peer>,
    sessions: HashMap<SocketAddr, Session>,
    per_address: HashMap<IpAddr, usize>,
    /// Methods handed to the adapter (or whose result is in flight), by
    /// transaction, with their client.
    pending: HashMap<TxId, SocketAddr>,
    next_session_id: u32,
    answers: mpsc::UnboundedSender<Answer>,
    answered: Option<mpsc::UnboundedReceiver<Answer>>,
    stopping: bool,
}

impl Transactions {
    /// The WTP state of `socket`.
    pub(super) fn new(shared: Arc<Shared>, socket: Arc<UdpSocket>) -> Self {
        let responder = Responder::new(shared.settings.wtp.clone());
        let (answers, answered) = mpsc::unbounded_channel();
        Transactions {
            shared,
            socket,
            responder,
            peers: HashMap::new(),
            sessions: HashMap::new(),
            per_address: HashMap::new(),
            pending: HashMap::new(),
            next_session_id: 1,
            answers,
            answered: Some(answered),
            stopping: false,
        }
    }

    /// Run until shut down and drained (the methods running answered and
    /// their results acknowledged, or [`DRAIN_TIMEOUT`]).
    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(mut answered) = self.answered.take() else {
            return;
        };
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        let mut drain_by = None;
        loop {
            if drain_by.is_none() && stopping(&shutdown) {
                self.stopping = true;
                drain_by = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            if let Some(by) = drain_by {
                if self.pending.is_empty() || Instant::now() >= by {
                    break;
                }
            }
            let timer = self.responder.poll_timeout();
            let wake = match (timer, drain_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map_or_else(far_future, tokio::time::Instant::from_std);
            tokio::select! {
                received = inbound.recv() => match received {
                    Some(inbound) => self.on_datagram(inbound),
                    None => break,
                },
                Some(answer) = answered.recv() => self.on_answer(answer),
                () = tokio::time::sleep_until(wake) => {
                    self.responder.handle_timeout(Instant::now());
                }
                _ = sweep.tick() => self.sweep(Instant::now()),
                _ = shutdown.changed(), if drain_by.is_none() => {}
            }
            self.pump().await;
        }
        if !self.pending.is_empty() {
            info!(application = %self.shared.adapter.name(), left = self.pending.len(), "WTP transactions still open after the drain timeout");
        }
        self.pump().await;
    }

    /// One WTP datagram.
    fn on_datagram(&mut self, inbound: Inbound) {
        let now = Instant::now();
        let Inbound {
            peer,
            origin,
            datagram,
        } = inbound;
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            bump(&self.shared.counters.peers_refused);
            return;
        }
        // In userspace mode a flow socket serves one overlay source; if it
        // ever claims another, the old session is not its session.
        if self
            .sessions
            .get(&peer)
            .is_some_and(|s| s.origin.source != origin.source)
        {
            self.end_session(peer);
            bump(&self.shared.counters.sessions_replaced);
        }
        self.peers.insert(
            peer,
            Peer {
                origin,
                last_seen: now,
            },
        );
        self.responder.handle_datagram(now, peer, &datagram);
    }

    /// Events out to their handlers, then datagrams out to the socket.
    async fn pump(&mut self) {
        while let Some(event) = self.responder.poll_event() {
            self.on_event(event);
        }
        while let Some(transmit) = self.responder.poll_transmit() {
            if let Err(error) = self
                .socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                debug!(peer = %transmit.destination, %error, "WTP send failed");
            }
        }
        self.shared.counters.set_wtp(self.responder.counters());
    }

    fn on_event(&mut self, event: WtpEvent) {
        match event {
            WtpEvent::Invoke {
                tx,
                class,
                user_ack,
                user_data,
            } => self.on_invoke(tx, class, user_ack, &user_data),
            WtpEvent::Aborted { tx, reason } => {
                debug!(peer = %tx.peer(), tid = tx.tid(), ?reason, "WTP transaction aborted");
                self.finish(tx);
            }
            WtpEvent::ResultAcknowledged { tx } => self.finish(tx),
        }
    }

    /// A method's transaction is over: it no longer counts against the MOR.
    fn finish(&mut self, tx: TxId) {
        if let Some(peer) = self.pending.remove(&tx) {
            if let Some(session) = self.sessions.get_mut(&peer) {
                session.outstanding = session.outstanding.saturating_sub(1);
            }
        }
    }

    fn on_invoke(&mut self, tx: TxId, class: TransactionClass, user_ack: bool, data: &[u8]) {
        let now = Instant::now();
        let counters = Arc::clone(&self.shared.counters);
        let decoded = match pdu::decode(data, Mode::Connection) {
            Ok(decoded) => decoded,
            Err(error) => {
                bump(&counters.malformed);
                debug!(peer = %tx.peer(), %error, "malformed WSP PDU");
                self.refuse(tx, class, abort_reason::PROTOERR);
                return;
            }
        };
        if !decoded.header_errors.is_empty() {
            counters
                .header_errors
                .fetch_add(decoded.header_errors.len() as u64, Ordering::Relaxed);
        }
        let peer = tx.peer();
        match decoded.pdu {
            Pdu::Connect { capabilities, .. } if class == TransactionClass::Class2 => {
                self.connect(tx, &capabilities);
            }
            Pdu::Disconnect { session_id } | Pdu::Suspend { session_id } => {
                let suspend = matches!(decoded.pdu, Pdu::Suspend { .. });
                match self.sessions.get(&peer) {
                    Some(session) if session.id == session_id => {
                        self.end_session(peer);
                        bump(if suspend {
                            &counters.sessions_suspended
                        } else {
                            &counters.sessions_disconnected
                        });
                    }
                    _ => bump(&counters.wrong_session_id),
                }
                self.refuse(tx, class, abort_reason::DISCONNECT);
            }
            Pdu::Resume { .. } => {
                bump(&counters.resumes_refused);
                self.refuse(tx, class, abort_reason::DISCONNECT);
            }
            pdu @ (Pdu::Get { .. } | Pdu::Post { .. }) if class == TransactionClass::Class2 => {
                if let Some(request) = WspRequest::of(pdu) {
                    self.method(now, tx, user_ack, request);
                }
            }
            _ => {
                bump(&counters.unexpected_pdus);
                self.refuse(tx, class, abort_reason::PROTOERR);
            }
        }
    }

    /// End `tx` without a result: class 2 is aborted with `reason`, class 1
    /// acknowledged (it asked for nothing more), class 0 needs nothing.
    fn refuse(&mut self, tx: TxId, class: TransactionClass, reason: u8) {
        let now = Instant::now();
        let done = match class {
            TransactionClass::Class2 => self.responder.abort(now, tx, reason),
            TransactionClass::Class1 => self.responder.acknowledge(now, tx),
            TransactionClass::Class0 => Ok(()),
        };
        if let Err(error) = done {
            debug!(peer = %tx.peer(), %error, "WTP transaction already gone");
        }
    }

    /// A Connect: a new session, or a refusal.
    fn connect(&mut self, tx: TxId, offer: &Capabilities) {
        let now = Instant::now();
        let peer = tx.peer();
        let counters = Arc::clone(&self.shared.counters);
        if self.sessions.contains_key(&peer) {
            self.end_session(peer);
            bump(&counters.sessions_replaced);
        }
        let Some(origin) = self.peers.get(&peer).map(|p| p.origin) else {
            self.refuse(tx, TransactionClass::Class2, abort_reason::PROTOERR);
            return;
        };
        let limits = self.shared.settings.sessions;
        if self.stopping || self.sessions.len() >= limits.max_sessions {
            bump(&counters.sessions_refused_total);
            self.refuse(tx, TransactionClass::Class2, abort_reason::CONGESTION);
            return;
        }
        let address = origin.source.ip();
        if self.per_address.get(&address).copied().unwrap_or(0) >= limits.max_sessions_per_address {
            bump(&counters.sessions_refused_address);
            info!(application = %self.shared.adapter.name(), source = %origin.source, "WSP Connect refused: too many sessions from this address");
            self.refuse(tx, TransactionClass::Class2, abort_reason::CONGESTION);
            return;
        }
        let wtp = &self.shared.settings.wtp;
        let ours = ServerLimits {
            max_client_sdu_size: self.shared.settings.sdu_size,
            max_server_sdu_size: u32::try_from(wtp.max_message_size).unwrap_or(u32::MAX),
            protocol_options: 0,
            method_mor: limits.method_mor.max(1),
            push_mor: 1,
            extended_methods: Vec::new(),
            header_code_pages: Vec::new(),
        };
        let granted = negotiate(offer, &ours);
        let sdu_size = granted.effective_client_sdu_size() as usize;
        let method_mor = usize::from(granted.method_mor.unwrap_or(1).max(1));
        let id = self.next_session_id;
        self.next_session_id = self.next_session_id.checked_add(1).unwrap_or(1);
        let reply = Pdu::ConnectReply {
            session_id: id,
            capabilities: granted,
            headers: Headers::new(),
        };
        let encoded = match pdu::encode(&reply, None, ENCODING_VERSION) {
            Ok(encoded) => encoded,
            Err(error) => {
                debug!(%error, "ConnectReply not encodable");
                self.refuse(tx, TransactionClass::Class2, abort_reason::PROTOERR);
                return;
            }
        };
        if sdu_size != 0 && sdu_size < wtp.segment_size {
            self.responder.set_peer_segment_size(peer, sdu_size);
        }
        if let Err(error) = self.responder.send_result(now, tx, encoded) {
            debug!(%peer, %error, "ConnectReply not sent");
            self.responder.forget_peer_segment_size(peer);
            return;
        }
        bump(&counters.sessions_opened);
        *self.per_address.entry(address).or_insert(0) += 1;
        debug!(application = %self.shared.adapter.name(), %peer, source = %origin.source, session = id, sdu_size, "WSP session connected");
        self.sessions.insert(
            peer,
            Session {
                id,
                origin,
                sdu_size,
                method_mor,
                outstanding: 0,
            },
        );
    }

    /// A Get- or Post-class method in class 2 invoke `tx`.
    fn method(&mut self, now: Instant, tx: TxId, user_ack: bool, request: WspRequest) {
        let peer = tx.peer();
        let counters = Arc::clone(&self.shared.counters);
        let Some(session) = self.sessions.get_mut(&peer) else {
            bump(&counters.no_session);
            self.refuse(tx, TransactionClass::Class2, abort_reason::DISCONNECT);
            return;
        };
        if session.outstanding >= session.method_mor {
            bump(&counters.mor_exceeded);
            self.refuse(tx, TransactionClass::Class2, abort_reason::MOREXCEEDED);
            return;
        }
        let origin = session.origin;
        let sdu_size = session.sdu_size;
        let permit = if self.stopping {
            None
        } else {
            Arc::clone(&self.shared.in_flight).try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            bump(&counters.overloaded);
            self.answer_now(
                now,
                tx,
                refusal_reply(StatusCode::SERVICE_UNAVAILABLE, None),
            );
            return;
        };
        let http = match request.to_http(&origin, sdu_size, &counters) {
            Ok(http) => http,
            Err(why) => {
                bump(&counters.bad_requests);
                debug!(%peer, why, "WSP request refused");
                self.answer_now(now, tx, refusal_reply(StatusCode::BAD_REQUEST, None));
                return;
            }
        };
        if user_ack {
            // TR-Invoke.res at once: a POST client waits for this Ack.
            if let Err(error) = self.responder.acknowledge(now, tx) {
                debug!(%peer, %error, "WTP acknowledgement not sent");
            }
        }
        session.outstanding += 1;
        self.pending.insert(tx, peer);
        bump(&counters.requests);
        let shared = Arc::clone(&self.shared);
        let answers = self.answers.clone();
        let head = request.is_head();
        tokio::spawn(async move {
            let response = shared.adapter.handle(http, origin).await;
            let reply = reply_pdu(response, head, None, sdu_size, &shared.counters);
            // Free before the client can see the answer and ask again.
            drop(permit);
            // The loop is gone only at shutdown, after the drain.
            let _ = answers.send(Answer { tx, reply });
        });
    }

    /// Answer `tx` with `reply` (no adapter involved).
    fn answer_now(&mut self, now: Instant, tx: TxId, reply: Vec<u8>) {
        if self.responder.send_result(now, tx, reply).is_err() {
            bump(&self.shared.counters.results_lost);
        }
    }

    /// A request's Reply is ready.
    fn on_answer(&mut self, answer: Answer) {
        let now = Instant::now();
        let Answer { tx, reply } = answer;
        let sent = match self.responder.send_result(now, tx, reply) {
            Err(WtpError::ResultTooLarge { size, max }) => {
                debug!(peer = %tx.peer(), size, max, "Reply over what WTP can segment");
                bump(&self.shared.counters.reply_too_large);
                let refusal = refusal_reply(StatusCode::PAYLOAD_TOO_LARGE, None);
                self.responder.send_result(now, tx, refusal)
            }
            other => other,
        };
        if let Err(error) = sent {
            debug!(peer = %tx.peer(), %error, "Reply for a transaction that is gone");
            bump(&self.shared.counters.results_lost);
            self.finish(tx);
        }
    }

    /// End `peer`'s session (its running methods still get their results).
    fn end_session(&mut self, peer: SocketAddr) {
        let Some(session) = self.sessions.remove(&peer) else {
            return;
        };
        let address = session.origin.source.ip();
        if let Some(count) = self.per_address.get_mut(&address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_address.remove(&address);
            }
        }
        self.responder.forget_peer_segment_size(peer);
        debug!(%peer, session = session.id, "WSP session ended");
    }

    /// Expire idle sessions, and forget clients with neither a session nor
    /// a recent datagram.
    fn sweep(&mut self, now: Instant) {
        let idle = self.shared.settings.sessions.idle_timeout;
        let expired: Vec<SocketAddr> = self
            .sessions
            .iter()
            .filter(|(peer, session)| {
                session.outstanding == 0
                    && self
                        .peers
                        .get(peer)
                        .is_none_or(|p| now.saturating_duration_since(p.last_seen) >= idle)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            self.end_session(peer);
            bump(&self.shared.counters.sessions_expired);
        }
        let sessions = &self.sessions;
        self.peers.retain(|peer, p| {
            sessions.contains_key(peer) || now.saturating_duration_since(p.last_seen) < idle
        });
    }
}

/// A deadline that never comes (no timer armed).
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
