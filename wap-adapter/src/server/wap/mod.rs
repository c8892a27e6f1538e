//! The WAP front: WSP connectionless on UDP 9200 ([`connectionless`]) and
//! WSP over WTP on UDP 9201 ([`session`]), feeding the application's
//! [`Adapter`] like the HTTP front does.
//!
//! Listeners ([`WapServer::bind`]):
//! - TUN mode ([`Listeners::Direct`]): one UDP socket on `wsp-listen`, one on
//!   `wtp-listen`; the overlay source is the datagram's sender.
//! - Userspace mode ([`Listeners::Proxied`]): one UDP socket on
//!   `proxy-protocol-listen` (the same address as the HTTP front's TCP
//!   listener) gets the datagrams of both ports, each starting with
//!   tunneld's PROXY v2 header ([`proxied_datagram`]); the header's
//!   destination port picks the layer ([`WapPort::of_destination`]) and its
//!   source is the client's identity. Replies go to the UDP sender with no
//!   header (tunneld has one flow socket per overlay source). A datagram
//!   without a valid header, or for another port, is dropped and counted
//!   (`proxy_refused` in [`ServerCounters`], `wap_other_port` here).
//!
//! Requests become `http::Request<Bytes>`s: the method's name, the URI made
//! absolute against the application (`http://[address]/path` for a bare
//! path; absolute URIs are kept, bytes outside URI syntax percent-encoded),
//! the WSP headers as HTTP headers (a Post's content type as
//! `Content-Type`; `Host` from the URI if the client sent none; headers
//! HTTP cannot carry are dropped and counted), and the
//! [`WapClient`](crate::adapter::WapClient) extension with the client's SDU
//! size. Client-sent `X-Permanet-*` headers are passed on for the adapter
//! to strip. The response becomes a WSP Reply: status through
//! [`status::http_to_wsp`] (403 is 0x43), content type and headers encoded
//! with [`encode_headers`] (hop-by-hop headers and `Content-Length`
//! dropped, as is any single header the encoder refuses).
//!
//! Size: a Reply must fit the client's SDU — the negotiated Client-SDU-Size
//! in a session, and for connectionless WSP (no SAR, no negotiation) the
//! application's `sdu-size` (WSP's default SDU is 1400, the config's
//! default), at most one UDP datagram. A larger Reply is sent again without
//! its headers if that fits, and otherwise replaced by a short 413 Reply
//! (status 0x4D), counted as `wap_reply_too_large`. The client's SDU is
//! what [`WapClient::sdu_size`](crate::adapter::WapClient) says, so
//! converted decks can be made to fit it.
//!
//! At most `max-connections` requests per application run at once across
//! both WAP layers (each as its own task, so a slow backend never stalls a
//! socket); beyond that the client gets 503 at once (`wap_overloaded`).
//! [`WapServer::serve`] stops on shutdown after the running requests are
//! answered (at most [`DRAIN_TIMEOUT`](super::http::DRAIN_TIMEOUT)).

pub mod connectionless;
pub mod session;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use overlay_proto::counters::Labelled;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::http::DRAIN_TIMEOUT;
use super::{proxied_datagram, ServerCounters, WapPort};
use crate::adapter::{remove_hop_by_hop, Adapter, Front, Origin, WapClient};
use crate::config::{Application, Limits, Listeners};
use crate::wsp::pdu::{self, Method, Pdu};
use crate::wsp::{encode_headers, status, EncodingVersion, Headers};
use crate::wtp::{WtpConfig, WtpCounters};

/// The header encoding used for Replies and ConnectReplies (what Kannel
/// writes; every WAP 1.x client decodes it).
pub const ENCODING_VERSION: EncodingVersion = EncodingVersion::V1_2;

/// Largest UDP payload over IPv4 (the loopback hop to tunneld in
/// userspace mode): the bound of a connectionless Reply.
pub const MAX_DATAGRAM: usize = 65_507;

/// WSP abort reasons (WAP-230-WSP Table 35), the user reason of a WTP Abort.
pub mod abort_reason {
    /// Protocol error, illegal PDU received.
    pub const PROTOERR: u8 = 0xE0;
    /// Session has been disconnected.
    pub const DISCONNECT: u8 = 0xE1;
    /// Peer congested, cannot process the SDU.
    pub const CONGESTION: u8 = 0xE4;
    /// The number of outstanding method requests exceeds the MOR.
    pub const MOREXCEEDED: u8 = 0xE7;
}

/// Bounds of the WTP sessions of one application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session with no datagram from its client for this long (and no
    /// request running) is ended.
    pub idle_timeout: Duration,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions at once from one overlay source address.
    pub max_sessions_per_address: usize,
    /// Most outstanding methods granted per session (Method-MOR).
    pub method_mor: u8,
}

impl Default for SessionLimits {
    /// 10 minutes idle, 4096 sessions, 16 per address, Method-MOR 4.
    fn default() -> Self {
        SessionLimits {
            idle_timeout: Duration::from_secs(600),
            max_sessions: 4096,
            max_sessions_per_address: 16,
            method_mor: 4,
        }
    }
}

/// What the WAP front needs of an application's config.
#[derive(Clone, Debug)]
pub struct WapSettings {
    /// `sdu-size`: the largest Client-SDU-Size granted, and the connectionless
    /// Reply bound.
    pub sdu_size: u32,
    /// `[limits]`: `max-connections` bounds the requests running at once.
    pub limits: Limits,
    /// Session bounds.
    pub sessions: SessionLimits,
    /// The WTP responder's tuning.
    pub wtp: WtpConfig,
}

impl WapSettings {
    /// The settings of `app` with default session and WTP tuning; WTP waits
    /// for an answer at least as long as the backend may take.
    pub fn new(app: &Application, limits: Limits) -> Self {
        let mut wtp = WtpConfig::default();
        wtp.result_timeout = wtp
            .result_timeout
            .max(limits.connect_timeout + limits.backend_timeout + Duration::from_secs(5));
        WapSettings {
            sdu_size: app.sdu_size,
            limits,
            sessions: SessionLimits::default(),
            wtp,
        }
    }

    /// The connectionless Reply bound.
    fn connectionless_limit(&self) -> usize {
        (self.sdu_size as usize).min(MAX_DATAGRAM)
    }
}

/// What the WAP front counts, and refuses (on top of [`ServerCounters`]'s
/// `proxy_refused`); shared by an application's WAP listeners.
#[derive(Debug, Default)]
pub struct WapCounters {
    datagrams: AtomicU64,
    other_port: AtomicU64,
    queue_full: AtomicU64,
    malformed: AtomicU64,
    header_errors: AtomicU64,
    unexpected_pdus: AtomicU64,
    requests: AtomicU64,
    bad_requests: AtomicU64,
    overloaded: AtomicU64,
    reply_too_large: AtomicU64,
    reply_headers_dropped: AtomicU64,
    sessions_opened: AtomicU64,
    sessions_replaced: AtomicU64,
    sessions_refused_total: AtomicU64,
    sessions_refused_address: AtomicU64,
    sessions_disconnected: AtomicU64,
    sessions_suspended: AtomicU64,
    sessions_expired: AtomicU64,
    resumes_refused: AtomicU64,
    no_session: AtomicU64,
    wrong_session_id: AtomicU64,
    mor_exceeded: AtomicU64,
    peers_refused: AtomicU64,
    results_lost: AtomicU64,
    wtp: Mutex<WtpCounters>,
}

/// Increment.
fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl WapCounters {
    /// Record the WTP responder's counters (the session loop does, after
    /// each step).
    fn set_wtp(&self, counters: &WtpCounters) {
        let mut wtp = self.wtp.lock().unwrap_or_else(|e| e.into_inner());
        if *wtp != *counters {
            *wtp = counters.clone();
        }
    }

    /// The counters, `wap_` first, then the WTP responder's (`wtp_`).
    pub fn labelled(&self) -> Vec<Labelled> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = vec![
            Labelled::new(
                "wap_datagrams",
                "WAP datagrams received",
                get(&self.datagrams),
            ),
            Labelled::new(
                "wap_other_port",
                "proxied datagrams for a port other than 9200/9201, dropped",
                get(&self.other_port),
            ),
            Labelled::new(
                "wap_queue_full",
                "WTP datagrams dropped: the session loop was behind",
                get(&self.queue_full),
            ),
            Labelled::new(
                "wap_malformed",
                "WSP PDUs that did not decode (dropped, or aborted PROTOERR)",
                get(&self.malformed),
            ),
            Labelled::new(
                "wap_header_errors",
                "WSP request headers that did not decode, or HTTP cannot carry (dropped)",
                get(&self.header_errors),
            ),
            Labelled::new(
                "wap_unexpected_pdus",
                "WSP PDUs a client does not send, or in the wrong transaction class",
                get(&self.unexpected_pdus),
            ),
            Labelled::new(
                "wap_requests",
                "WSP requests handed to the adapter",
                get(&self.requests),
            ),
            Labelled::new(
                "wap_bad_requests",
                "WSP requests refused before the adapter: unusable URI or method (400)",
                get(&self.bad_requests),
            ),
            Labelled::new(
                "wap_overloaded",
                "WSP requests refused: max-connections running (503)",
                get(&self.overloaded),
            ),
            Labelled::new(
                "wap_reply_too_large",
                "Replies over the client's SDU, replaced by 413",
                get(&self.reply_too_large),
            ),
            Labelled::new(
                "wap_reply_headers_dropped",
                "response headers WSP could not encode, or left out to fit the SDU",
                get(&self.reply_headers_dropped),
            ),
            Labelled::new(
                "wap_sessions_opened",
                "WSP sessions connected",
                get(&self.sessions_opened),
            ),
            Labelled::new(
                "wap_sessions_replaced",
                "sessions ended by a new Connect from the same client",
                get(&self.sessions_replaced),
            ),
            Labelled::new(
                "wap_sessions_refused_total",
                "Connects refused: too many sessions",
                get(&self.sessions_refused_total),
            ),
            Labelled::new(
                "wap_sessions_refused_address",
                "Connects refused: too many sessions from one address",
                get(&self.sessions_refused_address),
            ),
            Labelled::new(
                "wap_sessions_disconnected",
                "sessions ended by Disconnect",
                get(&self.sessions_disconnected),
            ),
            Labelled::new(
                "wap_sessions_suspended",
                "sessions ended by Suspend (resume is not offered)",
                get(&self.sessions_suspended),
            ),
            Labelled::new(
                "wap_sessions_expired",
                "idle sessions ended",
                get(&self.sessions_expired),
            ),
            Labelled::new(
                "wap_resumes_refused",
                "Resumes refused (aborted DISCONNECT)",
                get(&self.resumes_refused),
            ),
            Labelled::new(
                "wap_no_session",
                "methods outside a session (aborted DISCONNECT)",
                get(&self.no_session),
            ),
            Labelled::new(
                "wap_wrong_session_id",
                "Disconnects or Suspends naming another session (ignored)",
                get(&self.wrong_session_id),
            ),
            Labelled::new(
                "wap_mor_exceeded",
                "methods over the session's Method-MOR (aborted MOREXCEEDED)",
                get(&self.mor_exceeded),
            ),
            Labelled::new(
                "wap_peers_refused",
                "WTP datagrams dropped: too many clients known",
                get(&self.peers_refused),
            ),
            Labelled::new(
                "wap_results_lost",
                "answers whose WTP transaction was gone (aborted or timed out)",
                get(&self.results_lost),
            ),
        ];
        let w = self.wtp.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (name, help, value) in [
            (
                "wtp_datagrams",
                "WTP datagrams handled",
                w.datagrams_received,
            ),
            (
                "wtp_malformed",
                "WTP datagrams that did not decode",
                w.malformed,
            ),
            (
                "wtp_unexpected_pdus",
                "WTP PDUs an initiator does not send",
                w.unexpected_pdus,
            ),
            (
                "wtp_unknown_transaction",
                "WTP PDUs for no transaction",
                w.unknown_transaction,
            ),
            (
                "wtp_version_refused",
                "WTP invokes of another version",
                w.version_refused,
            ),
            ("wtp_invokes", "WTP invokes handed up", w.invokes_delivered),
            (
                "wtp_tid_verifications",
                "WTP TID verifications",
                w.tid_verifications,
            ),
            (
                "wtp_tid_verification_failed",
                "WTP TID verifications failed",
                w.tid_verification_failed,
            ),
            (
                "wtp_results_acknowledged",
                "WTP results acknowledged",
                w.results_acknowledged,
            ),
            (
                "wtp_result_packets",
                "WTP result packets sent",
                w.result_packets_sent,
            ),
            (
                "wtp_retransmissions",
                "WTP packets retransmitted",
                w.retransmissions,
            ),
            (
                "wtp_nacks_received",
                "WTP Negative Acks received",
                w.nacks_received,
            ),
            (
                "wtp_aborts_received",
                "WTP Aborts received",
                w.aborts_received,
            ),
            ("wtp_aborts_sent", "WTP Aborts sent", w.aborts_sent),
            (
                "wtp_no_response",
                "WTP results never acknowledged",
                w.no_response,
            ),
            (
                "wtp_result_timeouts",
                "WTP invokes not answered in time",
                w.result_timeouts,
            ),
            (
                "wtp_refused",
                "WTP segmented invokes or transactions refused (size, groups, limits)",
                w.refused_too_large
                    + w.refused_too_many_groups
                    + w.refused_inconsistent
                    + w.refused_segmented_class0
                    + w.refused_peer_limit
                    + w.refused_total_limit,
            ),
        ] {
            out.push(Labelled::new(name, help, value));
        }
        out
    }

    /// The value of the counter `name` (tests, status).
    pub fn value(&self, name: &str) -> Option<u64> {
        self.labelled()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }
}

/// What the WAP tasks share.
#[derive(Debug)]
struct Shared {
    adapter: Arc<Adapter>,
    settings: WapSettings,
    counters: Arc<WapCounters>,
    server_counters: Arc<ServerCounters>,
    /// One permit per running request (`max-connections`).
    in_flight: Arc<Semaphore>,
    /// One permit per connectionless answer not yet sent (the drain waits
    /// for them all).
    sending: Arc<Semaphore>,
}

/// Permits of [`Shared::sending`]: more than requests can ever run.
const SENDING_PERMITS: u32 = 1 << 20;

/// The sockets of one application's WAP front.
#[derive(Debug)]
enum Sockets {
    Direct {
        wsp: Arc<UdpSocket>,
        wtp: Arc<UdpSocket>,
    },
    Proxied {
        socket: Arc<UdpSocket>,
    },
}

/// One application's WAP listeners.
#[derive(Debug)]
pub struct WapServer {
    sockets: Sockets,
    shared: Arc<Shared>,
}

impl WapServer {
    /// Bind the UDP sockets of `listeners` (`wsp` and `wtp`, or the proxied
    /// `listen` address).
    pub async fn bind(
        listeners: Listeners,
        adapter: Arc<Adapter>,
        settings: WapSettings,
        server_counters: Arc<ServerCounters>,
        counters: Arc<WapCounters>,
    ) -> io::Result<Self> {
        let sockets = match listeners {
            Listeners::Direct { wsp, wtp, .. } => Sockets::Direct {
                wsp: Arc::new(UdpSocket::bind(wsp).await?),
                wtp: Arc::new(UdpSocket::bind(wtp).await?),
            },
            Listeners::Proxied { listen } => Sockets::Proxied {
                socket: Arc::new(UdpSocket::bind(listen).await?),
            },
        };
        let in_flight = Arc::new(Semaphore::new(settings.limits.max_connections));
        Ok(WapServer {
            sockets,
            shared: Arc::new(Shared {
                adapter,
                settings,
                counters,
                server_counters,
                in_flight,
                sending: Arc::new(Semaphore::new(SENDING_PERMITS as usize)),
            }),
        })
    }

    /// The bound addresses: `[wsp, wtp]` (direct) or `[listen]` (proxied).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        match &self.sockets {
            Sockets::Direct { wsp, wtp } => Ok(vec![wsp.local_addr()?, wtp.local_addr()?]),
            Sockets::Proxied { socket } => Ok(vec![socket.local_addr()?]),
        }
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped); then
    /// take no new requests, answer the running ones (at most
    /// [`DRAIN_TIMEOUT`]) and return.
    pub async fn serve(self, shutdown: watch::Receiver<bool>) {
        let addresses = self.local_addrs_string();
        let shared = self.shared;
        let name = shared.adapter.name().to_owned();
        info!(application = %name, %addresses, "serving WAP");
        let (wtp_in, wtp_rx) = mpsc::channel(INBOUND_QUEUE);
        let mut receivers = JoinSet::new();
        let wtp_socket = match self.sockets {
            Sockets::Direct { wsp, wtp } => {
                receivers.spawn(receive_direct(
                    Arc::clone(&shared),
                    wsp,
                    WapPort::Connectionless,
                    wtp_in.clone(),
                    shutdown.clone(),
                ));
                receivers.spawn(receive_direct(
                    Arc::clone(&shared),
                    Arc::clone(&wtp),
                    WapPort::Transaction,
                    wtp_in,
                    shutdown.clone(),
                ));
                wtp
            }
            Sockets::Proxied { socket } => {
                receivers.spawn(receive_proxied(
                    Arc::clone(&shared),
                    Arc::clone(&socket),
                    wtp_in,
                    shutdown.clone(),
                ));
                socket
            }
        };
        let started = tokio::time::Instant::now();
        session::Transactions::new(Arc::clone(&shared), wtp_socket)
            .run(wtp_rx, shutdown)
            .await;
        receivers.abort_all();
        // Connectionless requests still running: wait until all are sent.
        let left = DRAIN_TIMEOUT.saturating_sub(started.elapsed().min(DRAIN_TIMEOUT));
        let drained = tokio::time::timeout(left.max(Duration::from_millis(1)), async {
            let _ = shared.sending.acquire_many(SENDING_PERMITS).await;
        })
        .await;
        if drained.is_err() {
            warn!(application = %name, "WAP requests still running after the drain timeout; dropping them");
        }
        debug!(application = %name, "WAP front stopped");
    }

    fn local_addrs_string(&self) -> String {
        match self.local_addrs() {
            Ok(addresses) => addresses
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            Err(error) => error.to_string(),
        }
    }
}

/// WTP datagrams waiting for the session loop.
const INBOUND_QUEUE: usize = 1024;

/// Largest datagram read.
const RECEIVE_BUFFER: usize = 65_536;

/// Pause after a failed receive.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A WTP datagram for the session loop.
#[derive(Debug)]
struct Inbound {
    /// The UDP sender (where replies go).
    peer: SocketAddr,
    /// The overlay source and destination.
    origin: Origin,
    /// The WTP PDU(s).
    datagram: Vec<u8>,
}

/// Whether `shutdown` says stop.
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Read a direct (TUN-mode) socket of `port`'s layer.
async fn receive_direct(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    port: WapPort,
    wtp: mpsc::Sender<Inbound>,
    shutdown: watch::Receiver<bool>,
) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                // ICMP errors reported on the socket and the like: nothing
                // to answer; do not spin on a lasting one.
                debug!(%error, "WAP receive failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        bump(&shared.counters.datagrams);
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let origin = Origin {
            source: peer,
            destination: local,
            front: Front::Wap,
        };
        dispatch(
            &shared, &socket, port, peer, origin, datagram, &wtp, &shutdown,
        )
        .await;
    }
}

/// Read the proxied (userspace-mode) socket: each datagram starts with a
/// PROXY v2 header.
async fn receive_proxied(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    wtp: mpsc::Sender<Inbound>,
    shutdown: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(error) => {
                debug!(%error, "WAP receive failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        bump(&shared.counters.datagrams);
        let Some(datagram) = buf.get(..len) else {
            continue;
        };
        let (source, destination, payload) = match proxied_datagram(datagram) {
            Ok(parts) => parts,
            Err(refusal) => {
                shared.server_counters.proxy_refused();
                debug!(application = %shared.adapter.name(), %peer, %refusal, "WAP datagram refused");
                continue;
            }
        };
        let Some(port) = WapPort::of_destination(destination.port()) else {
            bump(&shared.counters.other_port);
            debug!(application = %shared.adapter.name(), %peer, %destination, "proxied datagram for a port that is not WAP");
            continue;
        };
        let origin = Origin {
            source,
            destination,
            front: Front::Wap,
        };
        dispatch(
            &shared, &socket, port, peer, origin, payload, &wtp, &shutdown,
        )
        .await;
    }
}

/// Hand a datagram to its layer.
#[allow(clippy::too_many_arguments)]
async fn dispatch(
    shared: &Arc<Shared>,
    socket: &Arc<UdpSocket>,
    port: WapPort,
    peer: SocketAddr,
    origin: Origin,
    payload: &[u8],
    wtp: &mpsc::Sender<Inbound>,
    shutdown: &watch::Receiver<bool>,
) {
    match port {
        WapPort::Connectionless => {
            if !stopping(shutdown) {
                connectionless::handle(shared, socket, peer, origin, payload).await;
            }
        }
        WapPort::Transaction => {
            let inbound = Inbound {
                peer,
                origin,
                datagram: payload.to_vec(),
            };
            if wtp.try_send(inbound).is_err() {
                bump(&shared.counters.queue_full);
            }
        }
    }
}

/// A request for the adapter from a WSP method.
struct WspRequest {
    method: Method,
    uri: String,
    /// A Post's content type.
    content_type: Option<String>,
    headers: Headers,
    body: Vec<u8>,
}

impl WspRequest {
    /// The request in `pdu`, if it is a method.
    fn of(pdu: Pdu) -> Option<WspRequest> {
        match pdu {
            Pdu::Get {
                method,
                uri,
                headers,
            } => Some(WspRequest {
                method,
                uri,
                content_type: None,
                headers,
                body: Vec::new(),
            }),
            Pdu::Post {
                method,
                uri,
                content_type,
                headers,
                data,
            } => Some(WspRequest {
                method,
                uri,
                content_type: Some(content_type),
                headers,
                body: data,
            }),
            _ => None,
        }
    }

    /// Whether the response carries no body (HEAD).
    fn is_head(&self) -> bool {
        self.method == Method::Head
    }

    /// The HTTP request for the adapter; `Err` with why it is refused (400).
    fn to_http(
        &self,
        origin: &Origin,
        sdu_size: usize,
        counters: &WapCounters,
    ) -> Result<Request<Bytes>, &'static str> {
        let method = http::Method::from_bytes(self.method.http_name().as_bytes())
            .map_err(|_| "unusable method")?;
        let uri = absolute_uri(&self.uri, origin.destination.ip())?;
        let mut request = Request::new(Bytes::from(self.body.clone()));
        *request.method_mut() = method;
        let headers = request.headers_mut();
        for (name, value) in self.headers.iter() {
            let parsed = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            );
            match parsed {
                (Ok(name), Ok(value)) => {
                    if name != CONTENT_LENGTH {
                        headers.append(name, value);
                    }
                }
                _ => bump(&counters.header_errors),
            }
        }
        if let Some(content_type) = &self.content_type {
            match HeaderValue::from_str(content_type) {
                Ok(value) => {
                    headers.insert(CONTENT_TYPE, value);
                }
                Err(_) => bump(&counters.header_errors),
            }
        }
        if !headers.contains_key(HOST) {
            if let Some(authority) = uri.authority() {
                if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                    headers.insert(HOST, value);
                }
            }
        }
        *request.uri_mut() = uri;
        request.extensions_mut().insert(WapClient { sdu_size });
        Ok(request)
    }
}

/// `uri` as an absolute `http` URI: a bare path is taken against the
/// application (`http://[address]/path`); bytes outside URI syntax are
/// percent-encoded.
fn absolute_uri(uri: &str, application: IpAddr) -> Result<Uri, &'static str> {
    let escaped = escape_uri(uri);
    let text = if escaped.starts_with('/') {
        match application {
            IpAddr::V6(address) => format!("http://[{address}]{escaped}"),
            IpAddr::V4(address) => format!("http://{address}{escaped}"),
        }
    } else {
        escaped
    };
    let parsed: Uri = text.parse().map_err(|_| "unusable URI")?;
    match parsed.scheme_str() {
        Some(scheme)
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {}
        _ => return Err("not an http URI"),
    }
    if parsed.authority().is_none() {
        return Err("URI without a host");
    }
    Ok(parsed)
}

/// `uri` with control octets, spaces, non-ASCII octets and the characters
/// URIs never carry as `%XX`.
fn escape_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    for byte in uri.bytes() {
        if byte.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The WSP Reply for `response` (connectionless if `tid` is given), at
/// most `limit` octets (0: no limit); see the module docs.
fn reply_pdu(
    response: Response<Bytes>,
    head: bool,
    tid: Option<u8>,
    limit: usize,
    counters: &WapCounters,
) -> Vec<u8> {
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let mut headers = Headers::new();
    for (name, value) in &parts.headers {
        if name == CONTENT_TYPE || name == CONTENT_LENGTH {
            continue;
        }
        let Ok(value) = value.to_str() else {
            bump(&counters.reply_headers_dropped);
            continue;
        };
        let single: Headers = [(name.as_str(), value)].into_iter().collect();
        if encode_headers(&single, ENCODING_VERSION).is_ok() {
            headers.push(name.as_str(), value);
        } else {
            bump(&counters.reply_headers_dropped);
        }
    }
    let data = if head { Vec::new() } else { body.to_vec() };
    let status = status::http_to_wsp(parts.status.as_u16());
    let encode = |content_type: &str, headers: &Headers| {
        pdu::encode(
            &Pdu::Reply {
                status,
                content_type: content_type.to_owned(),
                headers: headers.clone(),
                data: data.clone(),
            },
            tid,
            ENCODING_VERSION,
        )
    };
    let encoded = encode(&content_type, &headers)
        .or_else(|_| {
            bump(&counters.reply_headers_dropped);
            encode("application/octet-stream", &headers)
        })
        .or_else(|_| encode("application/octet-stream", &Headers::new()));
    let fits = |bytes: &Vec<u8>| limit == 0 || bytes.len() <= limit;
    match encoded {
        Ok(bytes) if fits(&bytes) => return bytes,
        Ok(bytes) if !headers.is_empty() => {
            if let Ok(bare) = encode(&content_type, &Headers::new()) {
                if fits(&bare) {
                    counters
                        .reply_headers_dropped
                        .fetch_add(headers.len() as u64, Ordering::Relaxed);
                    return bare;
                }
            }
            debug!(size = bytes.len(), limit, "WSP Reply over the client's SDU");
        }
        Ok(bytes) => debug!(size = bytes.len(), limit, "WSP Reply over the client's SDU"),
        Err(error) => {
            warn!(%error, "WSP Reply not encodable");
            return error_reply(
                StatusCode::BAD_GATEWAY,
                "response not encodable for WSP\n",
                tid,
            );
        }
    }
    bump(&counters.reply_too_large);
    error_reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        "the response is larger than this client can take\n",
        tid,
    )
}

/// A short `text/plain` Reply with `status` (always encodable, well under
/// any SDU).
fn error_reply(status: StatusCode, text: &str, tid: Option<u8>) -> Vec<u8> {
    let pdu = Pdu::Reply {
        status: status::http_to_wsp(status.as_u16()),
        content_type: "text/plain".into(),
        headers: Headers::new(),
        data: text.as_bytes().to_vec(),
    };
    pdu::encode(&pdu, tid, ENCODING_VERSION).unwrap_or_else(|_| {
        // Unreachable: a well-known content type and no headers.
        let mut bytes: Vec<u8> = tid.into_iter().collect();
        bytes.extend_from_slice(&[0x04, status::http_to_wsp(status.as_u16()), 0x01, 0x83]);
        bytes
    })
}

/// The Reply for a refusal made before the adapter (400, 503).
fn refusal_reply(status: StatusCode, tid: Option<u8>) -> Vec<u8> {
    let reason = status.canonical_reason().unwrap_or("refused");
    error_reply(status, &format!("{reason}\n"), tid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::adapter::plain;
    use crate::wsp::pdu::{decode, Mode};

    #[test]
    fn uris_are_made_absolute_against_the_application() {
        let app: IpAddr = "2002::10".parse().unwrap();
        assert_eq!(
            absolute_uri("/a b?q=é", app).unwrap(),
            "http://[2002::10]/a%20b?q=%C3%A9"
        );
        assert_eq!(
            absolute_uri("http://wiki.example/x", app).unwrap(),
            "http://wiki.example/x"
        );
        assert!(absolute_uri("wtai://wp/mc;123", app).is_err());
        assert!(absolute_uri("index.wml", app).is_err());
        assert!(absolute_uri("", app).is_err());
    }

    #[test]
    fn replies_carry_status_type_and_headers_and_fit_the_sdu() {
        let counters = WapCounters::default();
        let mut response = plain(StatusCode::FORBIDDEN, "no");
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        let bytes = reply_pdu(response, false, Some(7), 0, &counters);
        let decoded = decode(&bytes, Mode::Connectionless).unwrap();
        assert_eq!(decoded.tid, Some(7));
        let Pdu::Reply {
            status,
            content_type,
            headers,
            data,
        } = decoded.pdu
        else {
            panic!("{:?}", decoded.pdu)
        };
        assert_eq!(status, 0x43);
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(headers.get("cache-control"), Some("no-cache"));
        assert_eq!(headers.get("connection"), None);
        assert_eq!(data, b"no");

        let big = Response::new(Bytes::from(vec![b'x'; 2000]));
        let bytes = reply_pdu(big, false, None, 1400, &counters);
        let Pdu::Reply { status, .. } = decode(&bytes, Mode::Connection).unwrap().pdu else {
            panic!()
        };
        assert_eq!(status, 0x4D, "413");
        assert_eq!(counters.value("wap_reply_too_large"), Some(1));

        // Over the SDU with headers, within it without: sent bare.
        // 1360 octets and application/octet-stream as text (no WSP code).
        let mut near = Response::new(Bytes::from(vec![b'x'; 1360]));
        near.headers_mut().insert(
            "x-long",
            HeaderValue::from_static("aaaaaaaaaaaaaaaaaaaaaaaaa"),
        );
        let bytes = reply_pdu(near, false, None, 1400, &counters);
        assert!(bytes.len() <= 1400);
        let Pdu::Reply { status, data, .. } = decode(&bytes, Mode::Connection).unwrap().pdu else {
            panic!()
        };
        assert_eq!((status, data.len()), (0x20, 1360));
    }
}
