//! The SOCKS5 proxy's resolver with addrd's DNS behind it (DESIGN §9).
//!
//! [`OverlayDnsResolver`] answers a name first from the leases this node
//! holds ([`LeaseResolver`]: no round trip, and it works while addrd is
//! unreachable). A name in the zone that no held lease names — another
//! user, an application whose system's lease is all the netmap carries —
//! is asked of addrd's DNS: an AAAA query from this node's address,
//! through the stack and the tunnel, to port 53 of addrd's overlay
//! address. That address is the one of the lease carrying addrd's pinned
//! key (`addrd.public-key`), which every user's netmap has; until the
//! node holds it there is nothing to ask ([`ResolveError::Unavailable`]).
//!
//! A query waits [`QUERY_TIMEOUT`] for its answer and is sent
//! [`QUERY_ATTEMPTS`] times. The answer must come from addrd's address
//! and port 53, carry the query's id and question and be a response;
//! anything else is ignored and counted. NXDOMAIN or no AAAA record is
//! [`ResolveError::NotFound`] (SOCKS 0x04); no answer or a server
//! failure is [`ResolveError::Unavailable`] (SOCKS 0x01). A name outside
//! the zone never leaves the node ([`ResolveError::OutsideZone`]).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use overlay_proto::handshake::PublicKey;
use tracing::debug;

use super::stack::StackHandle;
use crate::names::{LeaseResolver, OverlayResolver, ResolveError, ResolveFuture};

/// How long one query waits for its answer.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times a query is sent before the name is unavailable.
pub const QUERY_ATTEMPTS: usize = 2;

/// The DNS port.
const DNS_PORT: u16 = 53;

/// Largest answer read (EDNS-less answers are at most 512 bytes).
const ANSWER_BUFFER: usize = 1500;

/// The resolver. See the module documentation.
#[derive(Debug)]
pub struct OverlayDnsResolver {
    leases: Arc<LeaseResolver>,
    stack: StackHandle,
    addrd_key: PublicKey,
    counters: DnsCounters,
}

/// What the resolver counts.
#[derive(Debug, Default)]
struct DnsCounters {
    from_leases: AtomicU64,
    queries: AtomicU64,
    answers: AtomicU64,
    not_found: AtomicU64,
    timeouts: AtomicU64,
    ignored: AtomicU64,
}

impl OverlayDnsResolver {
    /// A resolver over `leases` that asks the DNS of the addrd whose
    /// static key is `addrd_key` through `stack`.
    pub fn new(
        leases: Arc<LeaseResolver>,
        stack: StackHandle,
        addrd_key: PublicKey,
    ) -> OverlayDnsResolver {
        OverlayDnsResolver {
            leases,
            stack,
            addrd_key,
            counters: DnsCounters::default(),
        }
    }

    /// Counters by label: `dns.from_leases`, `dns.queries`, `dns.answers`,
    /// `dns.not_found`, `dns.timeouts`, `dns.ignored`.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        [
            ("dns.from_leases", &c.from_leases),
            ("dns.queries", &c.queries),
            ("dns.answers", &c.answers),
            ("dns.not_found", &c.not_found),
            ("dns.timeouts", &c.timeouts),
            ("dns.ignored", &c.ignored),
        ]
        .into_iter()
        .map(|(label, value)| (label, value.load(Ordering::Relaxed)))
        .collect()
    }

    async fn ask_addrd(&self, name: &str) -> Result<Ipv6Addr, ResolveError> {
        let Some(server) = self.leases.address_of_key(&self.addrd_key) else {
            return Err(ResolveError::Unavailable(
                "addrd's overlay address is not known yet (no netmap)".to_owned(),
            ));
        };
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let question = Name::from_ascii(&fqdn).map_err(|_| ResolveError::NotFound)?;
        let server = SocketAddrV6::new(server, DNS_PORT, 0, 0);
        let socket = self
            .stack
            .bind_udp(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0))
            .map_err(|e| ResolveError::Unavailable(format!("DNS socket: {e}")))?;
        let mut buf = vec![0u8; ANSWER_BUFFER];
        for _ in 0..QUERY_ATTEMPTS {
            let id: u16 = rand::random();
            let mut query = Message::new();
            query
                .set_id(id)
                .set_message_type(MessageType::Query)
                .set_op_code(OpCode::Query)
                .set_recursion_desired(false)
                .add_query(Query::query(question.clone(), RecordType::AAAA));
            let bytes = query
                .to_vec()
                .map_err(|e| ResolveError::Unavailable(format!("DNS query: {e}")))?;
            self.counters.queries.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = socket.send_to(&bytes, server).await {
                return Err(ResolveError::Unavailable(format!("DNS query: {e}")));
            }
            let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
                loop {
                    let (len, from) = match socket.recv_from(&mut buf).await {
                        Ok(received) => received,
                        Err(e) => return Err(ResolveError::Unavailable(format!("DNS: {e}"))),
                    };
                    match buf.get(..len).map(Message::from_vec) {
                        Some(Ok(answer))
                            if from == server
                                && answer.id() == id
                                && answer.message_type() == MessageType::Response
                                && answer.queries() == query.queries() =>
                        {
                            return Ok(answer)
                        }
                        _ => {
                            self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .await;
            match answer {
                Ok(Ok(answer)) => {
                    self.counters.answers.fetch_add(1, Ordering::Relaxed);
                    return self.address_in(&answer, &question);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    debug!(%name, %server, "DNS query timed out");
                }
            }
        }
        Err(ResolveError::Unavailable(format!(
            "addrd's DNS at {server} did not answer"
        )))
    }

    /// The AAAA of `question` in `answer`.
    fn address_in(&self, answer: &Message, question: &Name) -> Result<Ipv6Addr, ResolveError> {
        match answer.response_code() {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => {
                self.counters.not_found.fetch_add(1, Ordering::Relaxed);
                return Err(ResolveError::NotFound);
            }
            other => {
                return Err(ResolveError::Unavailable(format!(
                    "addrd's DNS answered {other}"
                )))
            }
        }
        let found = answer
            .answers()
            .iter()
            .find_map(|record| match record.data() {
                RData::AAAA(aaaa)
                    if record.name().eq_case(question) || record.name() == question =>
                {
                    Some(aaaa.0)
                }
                _ => None,
            });
        found.ok_or_else(|| {
            self.counters.not_found.fetch_add(1, Ordering::Relaxed);
            ResolveError::NotFound
        })
    }
}

impl OverlayResolver for OverlayDnsResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> ResolveFuture<'a> {
        Box::pin(async move {
            match self.leases.lookup(name) {
                Ok(address) => {
                    self.counters.from_leases.fetch_add(1, Ordering::Relaxed);
                    Ok(address)
                }
                Err(ResolveError::NotFound) => self.ask_addrd(name).await,
                Err(other) => Err(other),
            }
        })
    }
}
