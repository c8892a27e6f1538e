//! Who a request comes from: its overlay source address resolved to the
//! user (name, kind, groups) through the local tunneld's verified leases.
//!
//! Every packet tunneld delivers carries, as its inner source, an address of
//! the lease that authenticated its security association (cryptokey
//! routing, DESIGN §3). So the source address of a request *is* the
//! authenticated identity; what it stands for is in that peer's lease, which
//! tunneld verified. [`Resolver`] asks tunneld's control socket `peer
//! <address>` (one line; the JSON answer is tunneld's `PeerAnswer`:
//! `{"lease":{...}}` or `{"unknown":"<address>"}`) and caches each answer
//! until the lease's `not_after`. Unknown addresses are not cached (a peer
//! whose handshake completes a moment later is known at once).

use std::collections::HashMap;
use std::io;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use overlay_proto::counters::Labelled;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::config::IdentityConfig;

/// Entries the cache keeps before it drops the expired ones, then all.
const CACHE_ENTRIES: usize = 4096;

/// Longest answer line read from tunneld.
const MAX_ANSWER: u64 = 64 * 1024;

/// An authenticated requester: what its verified lease says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The overlay source address of the request.
    pub address: Ipv6Addr,
    /// The lease's short name, e.g. `alice`.
    pub name: String,
    /// `user`, `application` or `system`.
    pub kind: String,
    /// The lease's groups.
    pub groups: Vec<String>,
    /// End of the lease's validity, Unix seconds (exclusive).
    pub not_after: u64,
}

impl Identity {
    /// Whether this identity may use an application that allows
    /// `allowed` groups: any one of them suffices; an empty list lets
    /// every identity in.
    pub fn is_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty() || allowed.iter().any(|g| self.groups.contains(g))
    }
}

/// What tunneld knows of an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A peer's lease, valid now, holds the address.
    Known(Arc<Identity>),
    /// No valid lease holds it.
    Unknown,
}

/// Why an address could not be resolved (tunneld not asked or no answer).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The control socket could not be reached or the exchange failed.
    #[error("tunneld control socket {socket}: {error}")]
    Io {
        /// The socket.
        socket: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// tunneld did not answer in time.
    #[error("tunneld control socket {0}: no answer in time")]
    Timeout(PathBuf),
    /// tunneld answered with an error (e.g. an older tunneld without the
    /// `peer` request).
    #[error("tunneld refused the peer request: {0}")]
    Refused(String),
    /// The answer is not a `PeerAnswer`.
    #[error("tunneld's answer is not understood: {0}")]
    BadAnswer(String),
}

/// Resolves overlay source addresses to [`Identity`]s through tunneld, with
/// a cache that keeps each identity until its lease expires.
#[derive(Debug)]
pub struct Resolver {
    socket: PathBuf,
    timeout: Duration,
    cache: Mutex<HashMap<Ipv6Addr, Arc<Identity>>>,
    counters: ResolverCounters,
}

#[derive(Debug, Default)]
struct ResolverCounters {
    cache_hits: AtomicU64,
    queries: AtomicU64,
    unknown: AtomicU64,
    failures: AtomicU64,
}

impl Resolver {
    /// A resolver asking the tunneld of `config`.
    pub fn new(config: &IdentityConfig) -> Self {
        Resolver {
            socket: config.tunneld_socket.clone(),
            timeout: config.timeout,
            cache: Mutex::new(HashMap::new()),
            counters: ResolverCounters::default(),
        }
    }

    /// Who `address` is now (wall clock).
    pub async fn resolve(&self, address: Ipv6Addr) -> Result<Lookup, IdentityError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.resolve_at(address, now).await
    }

    /// Who `address` is at `now_unix` (seconds): from the cache while the
    /// cached lease is valid, else from tunneld.
    pub async fn resolve_at(
        &self,
        address: Ipv6Addr,
        now_unix: u64,
    ) -> Result<Lookup, IdentityError> {
        if let Some(identity) = self.cached(address, now_unix) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Lookup::Known(identity));
        }
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let answer = match tokio::time::timeout(self.timeout, self.ask(address)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(error);
            }
            Err(_) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                return Err(IdentityError::Timeout(self.socket.clone()));
            }
        };
        match answer {
            PeerAnswer::Lease(lease) if lease.holds(address) && now_unix < lease.not_after => {
                let identity = Arc::new(Identity {
                    address,
                    name: lease.name,
                    kind: lease.kind,
                    groups: lease.groups,
                    not_after: lease.not_after,
                });
                self.remember(Arc::clone(&identity), now_unix);
                Ok(Lookup::Known(identity))
            }
            PeerAnswer::Lease(lease) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(IdentityError::BadAnswer(format!(
                    "lease {} ({}) does not hold {address} now",
                    lease.name, lease.address
                )))
            }
            PeerAnswer::Unknown(about) if about.parse() == Ok(address) => {
                self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                Ok(Lookup::Unknown)
            }
            PeerAnswer::Unknown(about) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(IdentityError::BadAnswer(format!(
                    "an answer about {about}, not {address}"
                )))
            }
            PeerAnswer::Error(message) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                Err(IdentityError::Refused(message))
            }
        }
    }

    /// Forget every cached identity (SIGHUP).
    pub fn flush(&self) {
        self.lock().clear();
    }

    /// The resolver's counters.
    pub fn counters(&self) -> Vec<Labelled> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Labelled::new(
                "identity_cache_hits",
                "sources found in the lease cache",
                get(&c.cache_hits),
            ),
            Labelled::new(
                "identity_queries",
                "peer requests sent to tunneld",
                get(&c.queries),
            ),
            Labelled::new(
                "identity_unknown",
                "sources no valid lease holds",
                get(&c.unknown),
            ),
            Labelled::new(
                "identity_failures",
                "peer requests that failed (tunneld unreachable, slow or not understood)",
                get(&c.failures),
            ),
        ]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv6Addr, Arc<Identity>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cached(&self, address: Ipv6Addr, now_unix: u64) -> Option<Arc<Identity>> {
        let mut cache = self.lock();
        match cache.get(&address) {
            Some(identity) if now_unix < identity.not_after => Some(Arc::clone(identity)),
            Some(_) => {
                cache.remove(&address);
                None
            }
            None => None,
        }
    }

    fn remember(&self, identity: Arc<Identity>, now_unix: u64) {
        let mut cache = self.lock();
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, i| now_unix < i.not_after);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(identity.address, identity);
    }

    async fn ask(&self, address: Ipv6Addr) -> Result<PeerAnswer, IdentityError> {
        let io_error = |error| IdentityError::Io {
            socket: self.socket.clone(),
            error,
        };
        let mut stream = UnixStream::connect(&self.socket).await.map_err(io_error)?;
        stream
            .write_all(format!("peer {address}\n").as_bytes())
            .await
            .map_err(io_error)?;
        let mut line = String::new();
        BufReader::new(stream.take(MAX_ANSWER))
            .read_line(&mut line)
            .await
            .map_err(io_error)?;
        parse_answer(&line)
    }
}

/// tunneld's answer to `peer <address>` (tunneld::control::PeerAnswer, plus
/// its `{"error": ...}` for a refused request).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PeerAnswer {
    Lease(PeerLease),
    Unknown(String),
    Error(String),
}

#[derive(Debug, Deserialize)]
struct PeerLease {
    name: String,
    kind: String,
    address: String,
    groups: Vec<String>,
    not_after: u64,
}

impl PeerLease {
    /// Whether the lease's prefix holds `address`.
    fn holds(&self, address: Ipv6Addr) -> bool {
        let Some((network, len)) = self.address.split_once('/') else {
            return false;
        };
        let (Ok(network), Ok(len)) = (network.parse::<Ipv6Addr>(), len.parse::<u32>()) else {
            return false;
        };
        if len > 128 {
            return false;
        }
        let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
        u128::from(network) & mask == u128::from(address) & mask
    }
}

fn parse_answer(line: &str) -> Result<PeerAnswer, IdentityError> {
    if line.is_empty() {
        return Err(IdentityError::BadAnswer("empty answer".into()));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| IdentityError::BadAnswer(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn answers_parse() {
        let lease = r#"{"lease":{"name":"alice","dn":"uid=alice","kind":"user","address":"2002:b16:212c:1::1234/128","groups":["staff"],"serial":3,"not_before":1,"not_after":99}}"#;
        let PeerAnswer::Lease(l) = parse_answer(lease).unwrap() else {
            panic!()
        };
        assert!(l.holds("2002:b16:212c:1::1234".parse().unwrap()));
        assert!(!l.holds("2002:b16:212c:1::1235".parse().unwrap()));
        assert!(matches!(
            parse_answer(r#"{"unknown":"2002::1"}"#).unwrap(),
            PeerAnswer::Unknown(_)
        ));
        assert!(matches!(
            parse_answer(r#"{"error":"unknown request"}"#).unwrap(),
            PeerAnswer::Error(_)
        ));
        for bad in ["", "{}", "not json", r#"{"lease":{}}"#] {
            assert!(
                matches!(parse_answer(bad), Err(IdentityError::BadAnswer(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn group_membership() {
        let identity = Identity {
            address: Ipv6Addr::LOCALHOST,
            name: "a".into(),
            kind: "user".into(),
            groups: vec!["staff".into(), "wap".into()],
            not_after: 9,
        };
        assert!(identity.is_allowed(&[]));
        assert!(identity.is_allowed(&["admins".into(), "wap".into()]));
        assert!(!identity.is_allowed(&["admins".into()]));
        // Compared exactly, as tunneld does.
        assert!(!identity.is_allowed(&["Staff".into()]));
    }
}
