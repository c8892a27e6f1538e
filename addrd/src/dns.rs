//! The overlay DNS zone (DESIGN §9): addrd answers authoritatively for
//! `NAME.users.ZONE`, `NAME.apps.ZONE` and `NAME.systems.ZONE` (AAAA, the
//! entity's permanent address) and for the matching `ip6.arpa` names (PTR
//! back to that name), over UDP and TCP.
//!
//! - [`Zone::build`] builds an immutable [`Zone`] from a directory snapshot
//!   (`Vec<Entity>`; entities without an address are not published,
//!   names that are not DNS labels are skipped, logged and counted;
//!   disabled entities stay published: the address is theirs for ever,
//!   and whether anyone may reach it is the leases' business).
//! - [`ZoneHandle`] holds the zone being served and replaces it
//!   atomically: the daemon rebuilds it after allocations and reloads
//!   ([`ZoneHandle::replace`]); the next query sees the new zone, a query
//!   in flight finishes on the old one. No restart.
//! - [`DnsServer`] serves a handle on any number of local addresses
//!   (`[dns] listen`), each on UDP and TCP, with hickory-server's
//!   listeners. On addrd's overlay address the home agent
//!   ([`crate::homeagent`]) receives the queries through the tunnel and
//!   answers them with [`ZoneHandle::answer_udp`]: the same handler, the
//!   same counters.
//!
//! Answers: AAAA/PTR/SOA/NS/ANY as stored; NOERROR with an empty answer
//! and the SOA in the authority section (NODATA) for a name that exists
//! with other types (an A query for a user) or has names below it
//! (`users.ZONE`, the nibbles of `ip6.arpa`); NXDOMAIN with the SOA for a
//! name in a zone served that does not exist; REFUSED for a name outside
//! every zone, a class other than IN, and zone transfers; NOTIMP for
//! opcodes other than QUERY; FORMERR for anything but one question.
//! Every record and negative answer has a TTL of [`DEFAULT_TTL`] (60 s)
//! unless the config says otherwise; the AA bit is set on every answer
//! from a zone.
//!
//! Names are spelled exactly as tunneld's SOCKS resolver spells them
//! (`tunneld::names`): lowercase, `users`/`apps`/`systems`, the default
//! zone `permanet.internal`; queries match case-insensitively.

mod zone;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_server::authority::{MessageRequest, MessageResponse, MessageResponseBuilder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::ServerFuture;

use crate::directory::Entity;

pub use zone::{
    reverse_name, Answer, BadZone, BuildReport, OverlayZone, SkipReason, SkippedEntity, Zone,
    ZoneConfig, ZoneConfigError, DEFAULT_TTL, DEFAULT_ZONE,
};

/// How long an idle TCP connection is kept.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest UDP response offered to an EDNS client (DNS flag day 2020).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Tries at binding TCP to the port the kernel picked for UDP when the
/// caller asked for port 0.
const EPHEMERAL_BIND_TRIES: usize = 16;

/// The zone being served, replaceable at runtime. Cheap to clone (all
/// clones share one zone and one set of counters).
#[derive(Clone, Debug)]
pub struct ZoneHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ZoneConfig,
    /// Held while a zone is rebuilt, so two rebuilds cannot both take
    /// the same serial or install in the wrong order.
    rebuilding: Mutex<()>,
    current: RwLock<Arc<Zone>>,
    counters: DnsCounters,
}

impl ZoneHandle {
    /// Build the first zone from `entities` with SOA serial `serial` (the
    /// daemon passes the Unix time in seconds, so a restarted addrd's
    /// serial is still higher). Skipped entities are logged and counted.
    pub fn new(
        config: ZoneConfig,
        entities: &[Entity],
        serial: u32,
    ) -> Result<(ZoneHandle, BuildReport), ZoneConfigError> {
        let (zone, report) = Zone::build(&config, entities, serial)?;
        let counters = DnsCounters::default();
        log_report(&report, serial, &counters);
        let handle = ZoneHandle {
            shared: Arc::new(Shared {
                config,
                rebuilding: Mutex::new(()),
                current: RwLock::new(Arc::new(zone)),
                counters,
            }),
        };
        Ok((handle, report))
    }

    /// Rebuild the zone from a new snapshot and serve it from the next
    /// query on. The serial goes up by one (RFC 1982 arithmetic). Queries
    /// are answered from the old zone while the new one is built;
    /// concurrent calls are serialised (the last call's snapshot wins).
    pub fn replace(&self, entities: &[Entity]) -> BuildReport {
        let _rebuilding = self
            .shared
            .rebuilding
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let serial = self.serial().wrapping_add(1);
        // The config was validated by `new`, so building cannot fail; if
        // it somehow did, the old zone keeps being served.
        let (zone, report) = match Zone::build(&self.shared.config, entities, serial) {
            Ok(built) => built,
            Err(error) => {
                tracing::error!(%error, "DNS zone not rebuilt");
                return BuildReport::default();
            }
        };
        log_report(&report, serial, &self.shared.counters);
        *self
            .shared
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(zone);
        report
    }

    /// The zone served now.
    pub fn zone(&self) -> Arc<Zone> {
        Arc::clone(
            &self
                .shared
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// The serial of the zone served now.
    pub fn serial(&self) -> u32 {
        self.zone().serial()
    }

    /// The config the zone is built with.
    pub fn config(&self) -> &ZoneConfig {
        &self.shared.config
    }

    /// What the server has answered so far.
    pub fn counters(&self) -> DnsCountersSnapshot {
        self.shared.counters.snapshot()
    }

    /// Answer one DNS message that arrived over UDP from `src` by another
    /// way than a [`DnsServer`] socket (the home agent's tunnel), with the
    /// same handler and counters. `None` (counted as malformed) for bytes
    /// that are not a DNS message; the answer never exceeds 512 bytes, or
    /// the EDNS payload size the query offers (at most 1232).
    pub async fn answer_udp(&self, message: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let Ok(request) = MessageRequest::from_bytes(message) else {
            let counters = &self.shared.counters;
            counters.queries.fetch_add(1, Ordering::Relaxed);
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let request = Request::new(request, src, Protocol::Udp);
        let capture = Capture::default();
        let handler = ZoneRequestHandler { zone: self.clone() };
        handler.handle_request(&request, capture.clone()).await;
        let answer = capture
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        answer
    }
}

/// A [`ResponseHandler`] that keeps the encoded answer instead of sending
/// it ([`ZoneHandle::answer_udp`]).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> std::io::Result<ResponseInfo> {
        // RFC 1035 §4.2.1 without EDNS; the handler clamps the EDNS size.
        let max_size = response
            .get_edns()
            .as_ref()
            .map_or(512, |edns| edns.max_payload().max(512));
        let mut buffer = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buffer);
        encoder.set_max_size(max_size);
        let info = response
            .destructive_emit(&mut encoder)
            .map_err(std::io::Error::other)?;
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(buffer);
        Ok(info)
    }
}

fn log_report(report: &BuildReport, serial: u32, counters: &DnsCounters) {
    for skipped in &report.skipped {
        tracing::warn!(dn = %skipped.dn, name = %skipped.name, reason = %skipped.reason, "entity not published in DNS");
    }
    counters
        .skipped_entities
        .fetch_add(report.skipped.len() as u64, Ordering::Relaxed);
    counters.rebuilds.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        serial,
        published = report.published,
        skipped = report.skipped.len(),
        "DNS zone built"
    );
}

/// Counters of the DNS server, shared by every listener.
#[derive(Debug, Default)]
struct DnsCounters {
    queries: AtomicU64,
    answered: AtomicU64,
    nodata: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    malformed: AtomicU64,
    send_failures: AtomicU64,
    rebuilds: AtomicU64,
    skipped_entities: AtomicU64,
}

/// A copy of the DNS counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsCountersSnapshot {
    /// Requests received.
    pub queries: u64,
    /// NOERROR answers with records.
    pub answered: u64,
    /// NOERROR answers without records (the name exists, not the type).
    pub nodata: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// REFUSED: outside the zones, not class IN, zone transfers.
    pub refused: u64,
    /// FORMERR, NOTIMP and BADVERS answers.
    pub malformed: u64,
    /// Answers that could not be sent.
    pub send_failures: u64,
    /// Zones built (the first one included).
    pub rebuilds: u64,
    /// Entities left out of a zone, summed over every build.
    pub skipped_entities: u64,
}

impl DnsCounters {
    fn snapshot(&self) -> DnsCountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DnsCountersSnapshot {
            queries: get(&self.queries),
            answered: get(&self.answered),
            nodata: get(&self.nodata),
            nxdomain: get(&self.nxdomain),
            refused: get(&self.refused),
            malformed: get(&self.malformed),
            send_failures: get(&self.send_failures),
            rebuilds: get(&self.rebuilds),
            skipped_entities: get(&self.skipped_entities),
        }
    }
}

/// Why the DNS server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A listening socket could not be bound.
    #[error("DNS: cannot bind {protocol} {address}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address asked for.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listeners failed while shutting down.
    #[error("DNS: shutdown: {0}")]
    Shutdown(String),
}

/// The DNS server: UDP and TCP listeners on each address, answering from
/// a [`ZoneHandle`]. Runs on the current tokio runtime until
/// [`DnsServer::shutdown`] (dropping it also stops the listeners).
pub struct DnsServer {
    server: ServerFuture<ZoneRequestHandler>,
    local_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addrs", &self.local_addrs)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// Listen on every address of `listen`, UDP and TCP on the same port
    /// (with port 0, the port the kernel picks for UDP). Must be called
    /// inside a tokio runtime.
    pub async fn bind(zone: ZoneHandle, listen: &[SocketAddr]) -> Result<DnsServer, DnsError> {
        let mut server = ServerFuture::new(ZoneRequestHandler { zone });
        let mut local_addrs = Vec::with_capacity(listen.len());
        for &address in listen {
            let (udp, tcp) = bind_pair(address).await?;
            let local = udp.local_addr().map_err(|source| DnsError::Bind {
                protocol: "udp",
                address,
                source,
            })?;
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT);
            tracing::info!(%local, "DNS listening (UDP and TCP)");
            local_addrs.push(local);
        }
        Ok(DnsServer {
            server,
            local_addrs,
        })
    }

    /// The addresses listened on (with the ports actually bound).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Stop every listener and wait for them.
    pub async fn shutdown(mut self) -> Result<(), DnsError> {
        self.server
            .shutdown_gracefully()
            .await
            .map_err(|e| DnsError::Shutdown(e.to_string()))
    }
}

/// Bind UDP then TCP on the same address and port.
async fn bind_pair(
    address: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), DnsError> {
    let tries = if address.port() == 0 {
        EPHEMERAL_BIND_TRIES
    } else {
        1
    };
    let mut last_error = None;
    for _ in 0..tries {
        let udp = tokio::net::UdpSocket::bind(address)
            .await
            .map_err(|source| DnsError::Bind {
                protocol: "udp",
                address,
                source,
            })?;
        let port = udp.local_addr().map_err(|source| DnsError::Bind {
            protocol: "udp",
            address,
            source,
        })?;
        match tokio::net::TcpListener::bind(port).await {
            Ok(tcp) => return Ok((udp, tcp)),
            // The kernel's UDP port is taken for TCP: pick another.
            Err(source) => last_error = Some(source),
        }
    }
    Err(DnsError::Bind {
        protocol: "tcp",
        address,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no attempt made")),
    })
}

/// hickory-server's seam: one request in, one response out.
#[derive(Debug)]
struct ZoneRequestHandler {
    zone: ZoneHandle,
}

#[async_trait::async_trait]
impl RequestHandler for ZoneRequestHandler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let counters = &self.zone.shared.counters;
        counters.queries.fetch_add(1, Ordering::Relaxed);

        // EDNS: answer with EDNS when asked, version 0 only (RFC 6891).
        let mut response_edns = None;
        if let Some(edns) = request.edns() {
            let mut ours = Edns::new();
            ours.set_version(0);
            ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            if edns.version() > 0 {
                ours.set_rcode_high(ResponseCode::BADVERS.high());
                let mut header = Header::response_from_request(request.header());
                header.set_response_code(ResponseCode::BADVERS);
                let mut builder = MessageResponseBuilder::from_message_request(request);
                builder.edns(ours);
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                return send(
                    counters,
                    response_handle
                        .send_response(builder.build_no_records(header))
                        .await,
                );
            }
            response_edns = Some(ours);
        }

        let error = |code: ResponseCode| {
            let mut response = MessageResponseBuilder::from_message_request(request)
                .error_msg(request.header(), code);
            if let Some(edns) = response_edns.clone() {
                response.set_edns(edns);
            }
            response
        };
        if request.message_type() != MessageType::Query {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return send(
                counters,
                response_handle
                    .send_response(error(ResponseCode::FormErr))
                    .await,
            );
        }
        if request.op_code() != OpCode::Query {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return send(
                counters,
                response_handle
                    .send_response(error(ResponseCode::NotImp))
                    .await,
            );
        }
        let Ok(info) = request.request_info() else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            return send(
                counters,
                response_handle
                    .send_response(error(ResponseCode::FormErr))
                    .await,
            );
        };
        let query = info.query;
        let answer = match (query.query_class(), query.query_type()) {
            (DNSClass::IN, RecordType::AXFR | RecordType::IXFR) => Answer::Refused,
            (DNSClass::IN, record_type) => self.zone.zone().resolve(query.name(), record_type),
            _ => Answer::Refused,
        };

        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(false);
        let (answers, soa): (Vec<Record>, Vec<Record>) = match answer {
            Answer::Refused => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return send(
                    counters,
                    response_handle
                        .send_response(error(ResponseCode::Refused))
                        .await,
                );
            }
            Answer::Records(records) => {
                counters.answered.fetch_add(1, Ordering::Relaxed);
                (records, Vec::new())
            }
            Answer::NoData(soa) => {
                counters.nodata.fetch_add(1, Ordering::Relaxed);
                (Vec::new(), vec![soa])
            }
            Answer::NxDomain(soa) => {
                counters.nxdomain.fetch_add(1, Ordering::Relaxed);
                header.set_response_code(ResponseCode::NXDomain);
                (Vec::new(), vec![soa])
            }
        };
        header.set_authoritative(true);
        let mut response = MessageResponseBuilder::from_message_request(request).build(
            header,
            answers.iter(),
            std::iter::empty(),
            soa.iter(),
            std::iter::empty(),
        );
        if let Some(edns) = response_edns {
            response.set_edns(edns);
        }
        send(counters, response_handle.send_response(response).await)
    }
}

/// Count a failed send; hand back what hickory-server reports.
fn send(counters: &DnsCounters, sent: std::io::Result<ResponseInfo>) -> ResponseInfo {
    match sent {
        Ok(info) => info,
        Err(error) => {
            counters.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "DNS response not sent");
            let mut header = Header::new();
            header.set_response_code(ResponseCode::ServFail);
            ResponseInfo::from(header)
        }
    }
}
