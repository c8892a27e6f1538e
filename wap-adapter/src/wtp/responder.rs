//! The WTP responder (WAP-224-WTP §8 and the responder state tables of
//! §10.2), sans-IO: datagrams and time go in through `handle_*`, events,
//! datagrams and the next timeout come out through `poll_*`. No socket, no
//! clock.
//!
//! One state machine per (peer address, TID). Class 0 invokes are handed up
//! at once and leave no state (they never go through TID verification: real
//! clients send the WSP Disconnect as a class-0 Invoke reusing the TID of the
//! transaction just finished). Class 1 and 2 invokes first pass the TID test
//! (§8.8.3): the TID cache keeps the last TID seen from each peer; an invoke
//! from an unknown peer, one with TIDnew set, or one whose TID is not newer
//! than the cached one within half the TID space gets an Ack with TIDve, and
//! is handed up only when the initiator answers with an Ack carrying TIDok.
//!
//! Timers (one deadline per machine): A, the hold-on Ack sent when the user
//! has not produced the result in time (§8.4); R, the retransmission of the
//! result group in flight, at most `max_retransmissions` times before the
//! transaction is aborted with NORESPONSE; W, how long a finished class 1
//! transaction (and a pending TID verification) keeps answering duplicates;
//! the re-sent Negative Ack of an incomplete segmented invoke and the
//! reassembly timeout that drops one left idle; and a bound on
//! how long the user may take to answer.
//!
//! Deliberate choices, for real clients: timer A sends the hold-on Ack
//! whether or not U/P is set (the user's [`Responder::acknowledge`] sends it
//! earlier), so a slow result never leaves the initiator retransmitting; an
//! invoke with U/P set that fitted
//! in one packet gets its Ack before its Result (a POST client may wait for
//! that Ack before it accepts any Result); a segmented invoke does not (the
//! Result acknowledges its last group, and kannel's fakewap, waiting for the
//! Result, would spin on an Ack). An Ack carrying TIDok outside a TID
//! verification is ignored (fakewap answers every Ack with one).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::pdu::{
    decode_datagram, Abort, AbortReason, Ack, Invoke, NegativeAck, Pdu, ProviderAbortReason,
    Segment, Tpi, TransactionClass, OPTION_MAX_GROUP_SIZE, OPTION_MAX_RECEIVE_UNIT,
    TID_DIRECTION_BIT, WTP_VERSION,
};
use super::sar::{AckOutcome, Outgoing, Reassembly, Refusal, MAX_PACKETS};

/// Octets of a Segmented Result's fixed header (the per-packet overhead).
const SEGMENT_HEADER: usize = 4;

/// Tuning of the responder.
#[derive(Debug, Clone)]
pub struct WtpConfig {
    /// Timer A: send a hold-on Ack if the result is not ready after this.
    pub hold_on_delay: Duration,
    /// Timer R: retransmit an unacknowledged result group after this.
    pub retry_interval: Duration,
    /// Retransmissions of a result group (and re-sent Negative Acks)
    /// before the transaction is aborted.
    pub max_retransmissions: u32,
    /// Timer W: how long a class 1 transaction answers duplicates after its
    /// Ack, and how long a TID verification waits for TIDok.
    pub wait_timeout: Duration,
    /// How long the user may take to answer an invoke before it is aborted.
    pub result_timeout: Duration,
    /// Re-send the Negative Ack of a segmented invoke that is still missing packets after this.
    pub nack_delay: Duration,
    /// Drop a segmented invoke when no packet of it arrived for this long
    /// (its group trailer may be lost; the initiator resends it on its own timer).
    pub reassembly_timeout: Duration,
    /// Result payload octets per packet unless the peer's is set or smaller.
    pub segment_size: usize,
    /// Packets per segment group of a result (further limited by the peer's Maximum Group Size).
    pub max_group_packets: usize,
    /// Largest segmented invoke accepted, octets.
    pub max_message_size: usize,
    /// Most segment groups in one segmented invoke.
    pub max_groups: usize,
    /// Most concurrent class 1/2 transactions with one peer.
    pub max_transactions_per_peer: usize,
    /// Most concurrent class 1/2 transactions in total.
    pub max_transactions: usize,
    /// Most peers whose last TID is remembered (least recently seen forgotten first).
    pub tid_cache_peers: usize,
    /// Verify the TID of the first class 1/2 invoke from a peer not in the TID cache.
    pub verify_unknown_peers: bool,
}

impl Default for WtpConfig {
    fn default() -> Self {
        Self {
            hold_on_delay: Duration::from_millis(500),
            retry_interval: Duration::from_secs(2),
            max_retransmissions: 4,
            wait_timeout: Duration::from_secs(10),
            result_timeout: Duration::from_secs(120),
            nack_delay: Duration::from_secs(1),
            reassembly_timeout: Duration::from_secs(30),
            segment_size: 1400,
            max_group_packets: 4,
            max_message_size: 256 * 1024,
            max_groups: 64,
            max_transactions_per_peer: 32,
            max_transactions: 4096,
            tid_cache_peers: 65_536,
            verify_unknown_peers: true,
        }
    }
}

/// One transaction as the user sees it: the peer, its TID (without the
/// direction bit) and a serial that tells apart reuses of the same TID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId {
    peer: SocketAddr,
    tid: u16,
    serial: u64,
}

impl TxId {
    /// The initiator's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The transaction's TID, without the direction bit.
    pub fn tid(&self) -> u16 {
        self.tid
    }
}

/// What the responder tells its user (WSP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WtpEvent {
    /// TR-Invoke.ind: a complete (reassembled, TID-verified) invoke.
    Invoke {
        /// The transaction.
        tx: TxId,
        /// Its class: 0 needs nothing back, 1 an acknowledgement, 2 a result.
        class: TransactionClass,
        /// U/P: the initiator asked for a user acknowledgement ([`Responder::acknowledge`]).
        user_ack: bool,
        /// The user data (a WSP PDU).
        user_data: Vec<u8>,
    },
    /// TR-Abort.ind: the peer aborted, or WTP gave up.
    Aborted {
        /// The transaction.
        tx: TxId,
        /// Why.
        reason: AbortReason,
    },
    /// TR-Result.cnf: the initiator acknowledged the whole result.
    ResultAcknowledged {
        /// The transaction.
        tx: TxId,
    },
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The WTP PDU.
    pub contents: Vec<u8>,
}

/// A request the user made that the responder cannot carry out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WtpError {
    /// No such transaction (finished, aborted, timed out, or class 0).
    #[error("no such WTP transaction")]
    UnknownTransaction,
    /// The transaction is not waiting for this (e.g. a second result).
    #[error("WTP transaction is not waiting for {0}")]
    WrongState(&'static str),
    /// A result for a class 0 or class 1 transaction.
    #[error("WTP class {0:?} transactions have no result")]
    NoResultForClass(TransactionClass),
    /// A result that needs more than 256 packets at the peer's segment size.
    #[error("WTP result of {size} octets exceeds {max} octets (256 packets)")]
    ResultTooLarge {
        /// The result's size.
        size: usize,
        /// The most that fits.
        max: usize,
    },
}

/// Counters of everything the responder did and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WtpCounters {
    /// Datagrams handed to [`Responder::handle_datagram`].
    pub datagrams_received: u64,
    /// Datagrams that did not decode.
    pub malformed: u64,
    /// PDUs with the direction bit set (sent by a responder), or of a type an initiator never sends.
    pub unexpected_pdus: u64,
    /// PDUs for no known transaction.
    pub unknown_transaction: u64,
    /// Invokes with a WTP version other than 0 (answered with an Abort).
    pub version_refused: u64,
    /// Invokes handed up.
    pub invokes_delivered: u64,
    /// Class 0 invokes among them.
    pub class0_delivered: u64,
    /// Duplicate invokes (or invoke packets) answered from state.
    pub duplicate_invokes: u64,
    /// TID verifications started (Ack with TIDve sent).
    pub tid_verifications: u64,
    /// TID verifications that ended with TIDok.
    pub tid_verified: u64,
    /// TID verifications that timed out or were aborted.
    pub tid_verification_failed: u64,
    /// Acks ignored: TIDok outside a verification, stale group, wrong state.
    pub stray_acks: u64,
    /// Acks sent (invoke, hold-on, group, TIDve, duplicates).
    pub acks_sent: u64,
    /// Results whose every group was acknowledged.
    pub results_acknowledged: u64,
    /// Result packets sent, first transmissions.
    pub result_packets_sent: u64,
    /// Result packets retransmitted (timer R or Negative Ack).
    pub retransmissions: u64,
    /// Negative Acks received.
    pub nacks_received: u64,
    /// Negative Acks sent.
    pub nacks_sent: u64,
    /// Aborts received.
    pub aborts_received: u64,
    /// Aborts sent.
    pub aborts_sent: u64,
    /// Transactions aborted after the maximum retransmissions (NORESPONSE).
    pub no_response: u64,
    /// Transactions dropped because the user did not answer in time.
    pub result_timeouts: u64,
    /// Segmented invokes refused: larger than the maximum message size.
    pub refused_too_large: u64,
    /// Segmented invokes refused: more groups than the maximum.
    pub refused_too_many_groups: u64,
    /// Segmented invokes refused: inconsistent trailers.
    pub refused_inconsistent: u64,
    /// Segmented class 0 invokes ignored (class 0 has no SAR).
    pub refused_segmented_class0: u64,
    /// Invokes refused: the peer has too many transactions.
    pub refused_peer_limit: u64,
    /// Invokes refused: too many transactions in total.
    pub refused_total_limit: u64,
    /// Peers forgotten by the TID cache to make room.
    pub tid_cache_evictions: u64,
    /// PDUs that failed to encode (a bug: never expected).
    pub encode_errors: u64,
}

/// Where one transaction is (the responder states of §10.2, plus reassembly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Ack(TIDve) sent; waiting for the initiator's Ack(TIDok).
    TidOkWait,
    /// Receiving the packets of a segmented invoke.
    Receiving,
    /// Class 2, handed up, waiting for the user's result (timer A, then the result timeout).
    InvokeRespWait,
    /// Class 1 with U/P, handed up, waiting for the user's acknowledgement.
    AckWait,
    /// Result group in flight, waiting for its Ack (timer R).
    ResultRespWait,
    /// Class 1 acknowledged; answering duplicates until timer W.
    WaitTimeout,
}

#[derive(Debug)]
struct Machine {
    serial: u64,
    class: TransactionClass,
    user_ack: bool,
    state: State,
    reassembly: Reassembly,
    /// Whether the invoke came in more than one packet.
    segmented: bool,
    /// The invoke's last packet (its TTR), once handed up.
    last_psn: u8,
    /// Whether the invoke's (last group's) Ack has been sent.
    ack_sent: bool,
    result: Option<Outgoing>,
    deadline: Instant,
    /// When the user's time to answer runs out; while receiving, when the
    /// reassembly times out.
    answer_by: Instant,
    retries: u32,
    /// The peer's Maximum Group Size option, octets.
    max_group_bytes: Option<usize>,
    /// The peer's Maximum Receive Unit option, octets.
    mru: Option<usize>,
}

impl Machine {
    fn tx(&self, key: (SocketAddr, u16)) -> TxId {
        TxId {
            peer: key.0,
            tid: key.1,
            serial: self.serial,
        }
    }

    /// Whether the invoke has been handed to the user.
    fn delivered(&self) -> bool {
        !matches!(self.state, State::TidOkWait | State::Receiving)
    }
}

/// Whether a machine stays after an input.
enum Keep {
    Yes,
    No,
}

/// The WTP responder: all transactions of one UDP endpoint.
#[derive(Debug)]
pub struct Responder {
    config: WtpConfig,
    machines: HashMap<(SocketAddr, u16), Machine>,
    per_peer: HashMap<SocketAddr, usize>,
    /// Last TID seen from each peer, and when.
    tid_cache: HashMap<SocketAddr, (u16, Instant)>,
    segment_sizes: HashMap<SocketAddr, usize>,
    events: VecDeque<WtpEvent>,
    transmits: VecDeque<Transmit>,
    next_serial: u64,
    counters: WtpCounters,
}

/// Whether `tid` is newer than `last` in the 15-bit TID space (§8.8.3:
/// within the half of the space that follows `last`).
fn tid_is_newer(tid: u16, last: u16) -> bool {
    let distance = tid.wrapping_sub(last) & 0x7fff;
    distance != 0 && distance < 0x4000
}

impl Responder {
    /// A responder with no transactions.
    pub fn new(config: WtpConfig) -> Self {
        Self {
            config,
            machines: HashMap::new(),
            per_peer: HashMap::new(),
            tid_cache: HashMap::new(),
            segment_sizes: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            next_serial: 0,
            counters: WtpCounters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> &WtpCounters {
        &self.counters
    }

    /// Class 1/2 transactions in progress.
    pub fn transactions(&self) -> usize {
        self.machines.len()
    }

    /// Result payload octets per packet for `peer` (its negotiated SDU/MRU
    /// capability); overrides the configured default for that peer.
    pub fn set_peer_segment_size(&mut self, peer: SocketAddr, size: usize) {
        self.segment_sizes.insert(peer, size.max(1));
    }

    /// Forget `peer`'s segment size (its session ended): results to it use
    /// the configured default again.
    pub fn forget_peer_segment_size(&mut self, peer: SocketAddr) {
        self.segment_sizes.remove(&peer);
    }

    /// The next event for the user.
    pub fn poll_event(&mut self) -> Option<WtpEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// When [`Responder::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machines.values().map(|m| m.deadline).min()
    }

    /// One datagram from `peer`.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, datagram: &[u8]) {
        self.counters.datagrams_received += 1;
        let pdus = match decode_datagram(datagram) {
            Ok(pdus) => pdus,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        for pdu in pdus {
            self.handle_pdu(now, peer, pdu);
        }
    }

    /// Run the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(SocketAddr, u16)> = self
            .machines
            .iter()
            .filter(|(_, m)| m.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.with_machine(key, |this, m| this.on_timer(now, key, m));
        }
    }

    /// TR-Result.req: send the result of class 2 transaction `tx`.
    pub fn send_result(&mut self, now: Instant, tx: TxId, result: Vec<u8>) -> Result<(), WtpError> {
        let key = (tx.peer, tx.tid);
        let segment_size = self.segment_size(tx.peer, self.machines.get(&key).and_then(|m| m.mru));
        let group_cap = self.config.max_group_packets;
        let retry_interval = self.config.retry_interval;
        let m = self.machine_mut(tx)?;
        if m.class != TransactionClass::Class2 {
            return Err(WtpError::NoResultForClass(m.class));
        }
        if m.state != State::InvokeRespWait {
            return Err(WtpError::WrongState("a result"));
        }
        let group_packets = m.max_group_bytes.map_or(group_cap, |bytes| {
            (bytes / segment_size).clamp(1, group_cap)
        });
        let size = result.len();
        let outgoing =
            Outgoing::new(result, segment_size, group_packets).ok_or(WtpError::ResultTooLarge {
                size,
                max: segment_size * MAX_PACKETS,
            })?;
        let ack_first = m.user_ack && !m.ack_sent && !m.segmented;
        m.ack_sent = true;
        m.state = State::ResultRespWait;
        m.retries = 0;
        m.deadline = now + retry_interval;
        m.result = Some(outgoing);
        if ack_first {
            self.send_ack(key.0, key.1, false, false, None);
        }
        self.send_group(key, false);
        Ok(())
    }

    /// TR-Invoke.res: the user accepted invoke `tx`; for an invoke with U/P
    /// set this sends its Ack (a class 2 result may follow later).
    pub fn acknowledge(&mut self, now: Instant, tx: TxId) -> Result<(), WtpError> {
        let key = (tx.peer, tx.tid);
        let wait = self.config.wait_timeout;
        let m = self.machine_mut(tx)?;
        let psn = m.segmented.then_some(m.last_psn);
        match m.state {
            State::AckWait => {
                m.state = State::WaitTimeout;
                m.ack_sent = true;
                m.deadline = now + wait;
            }
            State::InvokeRespWait if !m.ack_sent => {
                m.ack_sent = true;
                m.deadline = m.answer_by;
            }
            State::InvokeRespWait => return Ok(()),
            _ => return Err(WtpError::WrongState("an acknowledgement")),
        }
        self.send_ack(key.0, key.1, false, false, psn);
        Ok(())
    }

    /// TR-Abort.req: abort `tx` with the user's reason code (WSP's, e.g. 0xE0 PROTOERR).
    pub fn abort(&mut self, _now: Instant, tx: TxId, reason: u8) -> Result<(), WtpError> {
        self.machine_mut(tx)?;
        self.remove_machine((tx.peer, tx.tid));
        self.send_abort(tx.peer, tx.tid, AbortReason::User(reason));
        Ok(())
    }

    fn machine_mut(&mut self, tx: TxId) -> Result<&mut Machine, WtpError> {
        match self.machines.get_mut(&(tx.peer, tx.tid)) {
            Some(m) if m.serial == tx.serial => Ok(m),
            _ => Err(WtpError::UnknownTransaction),
        }
    }

    fn segment_size(&self, peer: SocketAddr, mru: Option<usize>) -> usize {
        let base = self
            .segment_sizes
            .get(&peer)
            .copied()
            .unwrap_or(self.config.segment_size);
        let from_mru = mru.map_or(usize::MAX, |mru| mru.saturating_sub(SEGMENT_HEADER));
        base.min(from_mru).max(1)
    }

    /// Take machine `key` out, run `f`, put it back unless it is finished.
    fn with_machine(
        &mut self,
        key: (SocketAddr, u16),
        f: impl FnOnce(&mut Self, &mut Machine) -> Keep,
    ) {
        let Some(mut m) = self.machines.remove(&key) else {
            return;
        };
        match f(self, &mut m) {
            Keep::Yes => {
                self.machines.insert(key, m);
            }
            Keep::No => self.release_peer_slot(key.0),
        }
    }

    fn remove_machine(&mut self, key: (SocketAddr, u16)) {
        if self.machines.remove(&key).is_some() {
            self.release_peer_slot(key.0);
        }
    }

    fn release_peer_slot(&mut self, peer: SocketAddr) {
        if let Entry::Occupied(mut e) = self.per_peer.entry(peer) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    fn handle_pdu(&mut self, now: Instant, peer: SocketAddr, pdu: Pdu) {
        if pdu.tid() & TID_DIRECTION_BIT != 0 {
            self.counters.unexpected_pdus += 1;
            return;
        }
        let key = (peer, pdu.tid());
        match pdu {
            Pdu::Invoke(invoke) => self.on_invoke(now, key, invoke),
            Pdu::SegmentedInvoke(segment) => self.on_segment(now, key, segment),
            Pdu::Ack(ack) => self.on_ack(now, key, ack),
            Pdu::NegativeAck(nack) => self.on_nack(now, key, nack),
            Pdu::Abort(abort) => self.on_abort(key, abort),
            Pdu::Result(_) | Pdu::SegmentedResult(_) => self.counters.unexpected_pdus += 1,
        }
    }

    fn on_invoke(&mut self, now: Instant, key: (SocketAddr, u16), invoke: Invoke) {
        if invoke.version != WTP_VERSION {
            self.counters.version_refused += 1;
            self.send_abort(
                key.0,
                key.1,
                AbortReason::Provider(ProviderAbortReason::WtpVersionOne),
            );
            return;
        }
        if invoke.class == TransactionClass::Class0 {
            if invoke.gtr || !invoke.ttr {
                self.counters.refused_segmented_class0 += 1;
                return;
            }
            let tx = TxId {
                peer: key.0,
                tid: key.1,
                serial: self.serial(),
            };
            self.counters.invokes_delivered += 1;
            self.counters.class0_delivered += 1;
            self.events.push_back(WtpEvent::Invoke {
                tx,
                class: TransactionClass::Class0,
                user_ack: invoke.user_ack,
                user_data: invoke.user_data,
            });
            return;
        }
        if self.machines.contains_key(&key) {
            let segment = Segment {
                tid: invoke.tid,
                gtr: invoke.gtr,
                ttr: invoke.ttr,
                rid: invoke.rid,
                psn: 0,
                tpis: Vec::new(),
                user_data: invoke.user_data,
            };
            self.on_segment(now, key, segment);
            return;
        }
        if self.machines.len() >= self.config.max_transactions {
            self.counters.refused_total_limit += 1;
            self.send_abort(
                key.0,
                key.1,
                AbortReason::Provider(ProviderAbortReason::CapTempExceeded),
            );
            return;
        }
        if self.per_peer.get(&key.0).copied().unwrap_or(0) >= self.config.max_transactions_per_peer
        {
            self.counters.refused_peer_limit += 1;
            self.send_abort(
                key.0,
                key.1,
                AbortReason::Provider(ProviderAbortReason::CapTempExceeded),
            );
            return;
        }
        let verify = self.tid_needs_verification(now, key, invoke.tid_new);
        let option = |id| {
            invoke
                .tpis
                .iter()
                .find_map(|t: &Tpi| t.option_uint(id))
                .map(|v| v as usize)
        };
        let mut m = Machine {
            serial: self.serial(),
            class: invoke.class,
            user_ack: invoke.user_ack,
            state: State::Receiving,
            reassembly: Reassembly::default(),
            segmented: invoke.gtr || !invoke.ttr,
            last_psn: 0,
            ack_sent: false,
            result: None,
            deadline: now + self.config.nack_delay,
            answer_by: now + self.config.reassembly_timeout,
            retries: 0,
            max_group_bytes: option(OPTION_MAX_GROUP_SIZE),
            mru: option(OPTION_MAX_RECEIVE_UNIT),
        };
        let inserted = m.reassembly.insert(
            0,
            invoke.gtr,
            invoke.ttr,
            &invoke.user_data,
            self.config.max_message_size,
            self.config.max_groups,
        );
        if let Err(refusal) = inserted {
            self.refuse(key, refusal);
            return;
        }
        *self.per_peer.entry(key.0).or_insert(0) += 1;
        self.machines.insert(key, m);
        if verify {
            self.counters.tid_verifications += 1;
            let wait = self.config.wait_timeout;
            self.with_machine(key, |this, m| {
                m.state = State::TidOkWait;
                m.deadline = now + wait;
                this.send_ack(key.0, key.1, true, false, None);
                Keep::Yes
            });
        } else {
            self.with_machine(key, |this, m| this.progress(now, key, m));
        }
    }

    /// The TID test of §8.8.3; updates the cache when the TID is accepted.
    fn tid_needs_verification(
        &mut self,
        now: Instant,
        key: (SocketAddr, u16),
        tid_new: bool,
    ) -> bool {
        let (peer, tid) = key;
        match self.tid_cache.get(&peer).copied() {
            _ if tid_new => {
                self.tid_cache.remove(&peer);
                true
            }
            None => {
                if self.config.verify_unknown_peers {
                    true
                } else {
                    self.cache_tid(now, peer, tid);
                    false
                }
            }
            Some((last, _)) if tid_is_newer(tid, last) => {
                self.cache_tid(now, peer, tid);
                false
            }
            Some(_) => true,
        }
    }

    fn cache_tid(&mut self, now: Instant, peer: SocketAddr, tid: u16) {
        if !self.tid_cache.contains_key(&peer)
            && self.tid_cache.len() >= self.config.tid_cache_peers
        {
            let oldest = self
                .tid_cache
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.tid_cache.remove(&oldest);
                self.counters.tid_cache_evictions += 1;
            }
        }
        self.tid_cache.insert(peer, (tid, now));
    }

    fn refuse(&mut self, key: (SocketAddr, u16), refusal: Refusal) {
        let reason = match refusal {
            Refusal::TooLarge => {
                self.counters.refused_too_large += 1;
                ProviderAbortReason::MessageTooLarge
            }
            Refusal::TooManyGroups => {
                self.counters.refused_too_many_groups += 1;
                ProviderAbortReason::MessageTooLarge
            }
            Refusal::Inconsistent => {
                self.counters.refused_inconsistent += 1;
                ProviderAbortReason::ProtoErr
            }
        };
        self.send_abort(key.0, key.1, AbortReason::Provider(reason));
    }

    fn on_segment(&mut self, now: Instant, key: (SocketAddr, u16), segment: Segment) {
        if !self.machines.contains_key(&key) {
            self.counters.unknown_transaction += 1;
            return;
        }
        let (max_bytes, max_groups) = (self.config.max_message_size, self.config.max_groups);
        self.with_machine(key, |this, m| match m.state {
            State::TidOkWait | State::Receiving => {
                match m.reassembly.insert(
                    segment.psn,
                    segment.gtr,
                    segment.ttr,
                    &segment.user_data,
                    max_bytes,
                    max_groups,
                ) {
                    Err(refusal) => {
                        this.refuse(key, refusal);
                        Keep::No
                    }
                    Ok(true) if m.state == State::Receiving => {
                        m.retries = 0;
                        m.answer_by = now + this.config.reassembly_timeout;
                        this.progress(now, key, m)
                    }
                    Ok(true) => Keep::Yes,
                    Ok(false) => {
                        this.counters.duplicate_invokes += 1;
                        if m.state == State::TidOkWait {
                            this.send_ack(key.0, key.1, true, true, None);
                        } else if segment.gtr && m.reassembly.is_acked_trailer(segment.psn) {
                            this.send_ack(key.0, key.1, false, true, Some(segment.psn));
                        }
                        Keep::Yes
                    }
                }
            }
            _ => {
                this.counters.duplicate_invokes += 1;
                // A retransmitted last packet: its Ack was lost (or not sent yet).
                let last = segment.ttr || (segment.psn == 0 && !m.segmented);
                if last && m.ack_sent && m.state != State::ResultRespWait {
                    let psn = m.segmented.then_some(m.last_psn);
                    this.send_ack(key.0, key.1, false, true, psn);
                }
                Keep::Yes
            }
        });
    }

    /// After the TID test passed or a packet arrived: acknowledge complete
    /// groups, ask for missing packets, hand up a complete invoke.
    fn progress(&mut self, now: Instant, key: (SocketAddr, u16), m: &mut Machine) -> Keep {
        m.state = State::Receiving;
        if !m.reassembly.is_complete() {
            for psn in m.reassembly.take_complete_groups() {
                self.send_ack(key.0, key.1, false, false, Some(psn));
            }
            let missing = m.reassembly.missing();
            if !missing.is_empty() {
                self.send_nack(key.0, key.1, false, missing);
            }
            m.deadline = now + self.config.nack_delay;
            return Keep::Yes;
        }
        let message = std::mem::take(&mut m.reassembly);
        m.last_psn = message.last_psn().unwrap_or(0);
        self.counters.invokes_delivered += 1;
        self.events.push_back(WtpEvent::Invoke {
            tx: m.tx(key),
            class: m.class,
            user_ack: m.user_ack,
            user_data: message.into_message(),
        });
        m.answer_by = now + self.config.result_timeout;
        match (m.class, m.user_ack) {
            (TransactionClass::Class1, false) => {
                m.ack_sent = true;
                m.state = State::WaitTimeout;
                m.deadline = now + self.config.wait_timeout;
                let psn = m.segmented.then_some(m.last_psn);
                self.send_ack(key.0, key.1, false, false, psn);
            }
            (TransactionClass::Class1, true) => {
                m.state = State::AckWait;
                m.deadline = m.answer_by;
            }
            _ => {
                m.state = State::InvokeRespWait;
                m.deadline = now + self.config.hold_on_delay;
            }
        }
        Keep::Yes
    }

    fn on_ack(&mut self, now: Instant, key: (SocketAddr, u16), ack: Ack) {
        if !self.machines.contains_key(&key) {
            self.counters.unknown_transaction += 1;
            return;
        }
        self.with_machine(key, |this, m| {
            if ack.tid_verify {
                if m.state != State::TidOkWait {
                    this.counters.stray_acks += 1;
                    return Keep::Yes;
                }
                this.counters.tid_verified += 1;
                this.cache_tid(now, key.0, key.1);
                return this.progress(now, key, m);
            }
            if m.state != State::ResultRespWait {
                this.counters.stray_acks += 1;
                return Keep::Yes;
            }
            let Some(result) = m.result.as_mut() else {
                return Keep::No;
            };
            match result.ack(ack.psn()) {
                AckOutcome::Stale => {
                    this.counters.stray_acks += 1;
                    Keep::Yes
                }
                AckOutcome::NextGroup => {
                    m.retries = 0;
                    m.deadline = now + this.config.retry_interval;
                    this.send_current_group(key, m, false);
                    Keep::Yes
                }
                AckOutcome::Done => {
                    this.counters.results_acknowledged += 1;
                    this.events
                        .push_back(WtpEvent::ResultAcknowledged { tx: m.tx(key) });
                    Keep::No
                }
            }
        });
    }

    fn on_nack(&mut self, now: Instant, key: (SocketAddr, u16), nack: NegativeAck) {
        self.counters.nacks_received += 1;
        if !self.machines.contains_key(&key) {
            self.counters.unknown_transaction += 1;
            return;
        }
        self.with_machine(key, |this, m| {
            if m.state != State::ResultRespWait {
                this.counters.stray_acks += 1;
                return Keep::Yes;
            }
            m.retries += 1;
            if m.retries > this.config.max_retransmissions {
                return this.give_up(key, m);
            }
            m.deadline = now + this.config.retry_interval;
            let Some(result) = m.result.as_ref() else {
                return Keep::No;
            };
            let Some((start, end)) = result.current_group() else {
                return Keep::No;
            };
            let missing: Vec<u8> = if nack.missing.is_empty() {
                (start..=end).collect()
            } else {
                nack.missing
                    .iter()
                    .copied()
                    .filter(|p| (start..=end).contains(p))
                    .collect()
            };
            let tid = key.1 | TID_DIRECTION_BIT;
            for psn in missing {
                if let Some(pdu) = result.packet(tid, psn, true) {
                    this.counters.retransmissions += 1;
                    this.transmit(key.0, &pdu);
                }
            }
            Keep::Yes
        });
    }

    fn on_abort(&mut self, key: (SocketAddr, u16), abort: Abort) {
        self.counters.aborts_received += 1;
        if !self.machines.contains_key(&key) {
            self.counters.unknown_transaction += 1;
            return;
        }
        self.with_machine(key, |this, m| {
            if m.delivered() {
                this.events.push_back(WtpEvent::Aborted {
                    tx: m.tx(key),
                    reason: abort.reason,
                });
            } else if m.state == State::TidOkWait {
                this.counters.tid_verification_failed += 1;
            }
            Keep::No
        });
    }

    fn on_timer(&mut self, now: Instant, key: (SocketAddr, u16), m: &mut Machine) -> Keep {
        if m.deadline > now {
            return Keep::Yes;
        }
        match m.state {
            State::TidOkWait => {
                self.counters.tid_verification_failed += 1;
                Keep::No
            }
            State::Receiving => {
                let missing = m.reassembly.missing();
                if !missing.is_empty() {
                    m.retries += 1;
                }
                if m.retries > self.config.max_retransmissions || now >= m.answer_by {
                    self.counters.no_response += 1;
                    let reason = AbortReason::Provider(ProviderAbortReason::NoResponse);
                    self.send_abort(key.0, key.1, reason);
                    return Keep::No;
                }
                if !missing.is_empty() {
                    self.send_nack(key.0, key.1, true, missing);
                }
                m.deadline = (now + self.config.nack_delay).min(m.answer_by);
                Keep::Yes
            }
            State::InvokeRespWait if !m.ack_sent && now < m.answer_by => {
                // Timer A: the result is slow; a hold-on Ack stops the initiator's retransmissions.
                m.ack_sent = true;
                m.deadline = m.answer_by;
                let psn = m.segmented.then_some(m.last_psn);
                self.send_ack(key.0, key.1, false, false, psn);
                Keep::Yes
            }
            State::InvokeRespWait | State::AckWait => {
                self.counters.result_timeouts += 1;
                let reason = AbortReason::Provider(ProviderAbortReason::NoResponse);
                self.send_abort(key.0, key.1, reason);
                self.events.push_back(WtpEvent::Aborted {
                    tx: m.tx(key),
                    reason,
                });
                Keep::No
            }
            State::ResultRespWait => {
                m.retries += 1;
                if m.retries > self.config.max_retransmissions {
                    return self.give_up(key, m);
                }
                m.deadline = now + self.config.retry_interval;
                // Timer R: the last packet of the group again, with RID; the
                // initiator answers with an Ack or a Negative Ack of what it lacks.
                if let Some(result) = m.result.as_ref() {
                    if let Some((_, end)) = result.current_group() {
                        if let Some(pdu) = result.packet(key.1 | TID_DIRECTION_BIT, end, true) {
                            self.counters.retransmissions += 1;
                            self.transmit(key.0, &pdu);
                        }
                    }
                }
                Keep::Yes
            }
            State::WaitTimeout => Keep::No,
        }
    }

    fn give_up(&mut self, key: (SocketAddr, u16), m: &Machine) -> Keep {
        self.counters.no_response += 1;
        let reason = AbortReason::Provider(ProviderAbortReason::NoResponse);
        self.send_abort(key.0, key.1, reason);
        self.events.push_back(WtpEvent::Aborted {
            tx: m.tx(key),
            reason,
        });
        Keep::No
    }

    /// Send the result group in flight of machine `key` (still in the map).
    fn send_group(&mut self, key: (SocketAddr, u16), rid: bool) {
        if let Some(m) = self.machines.remove(&key) {
            self.send_current_group(key, &m, rid);
            self.machines.insert(key, m);
        }
    }

    fn send_current_group(&mut self, key: (SocketAddr, u16), m: &Machine, rid: bool) {
        let Some(result) = m.result.as_ref() else {
            return;
        };
        let Some((start, end)) = result.current_group() else {
            return;
        };
        for psn in start..=end {
            if let Some(pdu) = result.packet(key.1 | TID_DIRECTION_BIT, psn, rid) {
                self.counters.result_packets_sent += 1;
                self.transmit(key.0, &pdu);
            }
        }
    }

    fn send_ack(
        &mut self,
        peer: SocketAddr,
        tid: u16,
        tid_verify: bool,
        rid: bool,
        psn: Option<u8>,
    ) {
        self.counters.acks_sent += 1;
        let pdu = Pdu::Ack(Ack {
            tid: tid | TID_DIRECTION_BIT,
            tid_verify,
            rid,
            tpis: psn.map(Tpi::PacketSequenceNumber).into_iter().collect(),
        });
        self.transmit(peer, &pdu);
    }

    fn send_nack(&mut self, peer: SocketAddr, tid: u16, rid: bool, mut missing: Vec<u8>) {
        self.counters.nacks_sent += 1;
        missing.truncate(255);
        let pdu = Pdu::NegativeAck(NegativeAck {
            tid: tid | TID_DIRECTION_BIT,
            rid,
            missing,
            tpis: Vec::new(),
        });
        self.transmit(peer, &pdu);
    }

    fn send_abort(&mut self, peer: SocketAddr, tid: u16, reason: AbortReason) {
        self.counters.aborts_sent += 1;
        let pdu = Pdu::Abort(Abort {
            tid: tid | TID_DIRECTION_BIT,
            reason,
            tpis: Vec::new(),
        });
        self.transmit(peer, &pdu);
    }

    fn transmit(&mut self, destination: SocketAddr, pdu: &Pdu) {
        match pdu.encode() {
            Ok(contents) => self.transmits.push_back(Transmit {
                destination,
                contents,
            }),
            Err(_) => self.counters.encode_errors += 1,
        }
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tid_window() {
        assert!(tid_is_newer(2, 1));
        assert!(!tid_is_newer(1, 1));
        assert!(!tid_is_newer(1, 2));
        assert!(tid_is_newer(0, 0x7fff));
        assert!(tid_is_newer(0x3fff, 0));
        assert!(!tid_is_newer(0x4000, 0));
    }
}
