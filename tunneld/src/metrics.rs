//! The Prometheus endpoint (`metrics-listen`, off unless set).
//!
//! `GET /metrics` answers with every counter the daemon keeps, in the
//! OpenMetrics text format (which Prometheus scrapes natively; counters end
//! in `_total`, the document in `# EOF`). Nothing is counted twice: at each
//! scrape the server asks the data plane for a [`Status`] snapshot through
//! its [`TunnelHandle`] (the same message `tunneld status` uses) and reads
//! the userspace stack's [`StackCounters`], then [`render`]s a fresh
//! registry from them. The packet path therefore carries no metric, no
//! atomic and no lock of its own.
//!
//! Families (all prefixed `tunneld_`):
//! - `build_info{version}`;
//! - `node_<counter>_total`: the protocol core's counters; `drops_total{reason}`:
//!   one series per [`overlay_proto::counters::DropReason`], labelled by its
//!   stable [`as_str`](overlay_proto::counters::DropReason::as_str) name;
//! - `dataplane_<counter>_total`: [`crate::dataplane::DataplaneCounters`];
//! - `stack_<counter>_total`: the userspace stack's [`StackCounters`];
//! - `peer_{rx,tx}_{bytes,packets}_total`, `peer_handshakes_total`,
//!   `peer_spoofed_sources_total`, `peer_security_associations` and
//!   `peer_last_handshake_age_seconds`, labelled `peer` (the lease name)
//!   and `public_key` (base64);
//! - `peers` (all peers) and `metrics_peers_omitted`;
//! - `reloads_total{result}` (SIGHUP);
//! - `lease_serial` and `lease_not_after_seconds`: this node's lease (alert
//!   on `tunneld_lease_not_after_seconds - time()`).
//!
//! Label cardinality is bounded: the drop family has a fixed set of
//! reasons, and per-peer series are exported for at most
//! [`MAX_PEER_SERIES`] peers (those with the lowest handles, i.e. the
//! longest known); the rest are counted in `metrics_peers_omitted`. A
//! server that accepts many users should scrape the totals and use
//! `tunneld status --json` for the long tail.
//!
//! The HTTP side is hyper's HTTP/1 server: request heads are limited to
//! [`MAX_REQUEST_HEAD`] bytes and [`HEADER_TIMEOUT`], each connection
//! serves one request, at most [`MAX_CONNECTIONS`] are served at once, any
//! other path is `404` and any other method `405`. Request bodies are never
//! read.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::dataplane::{Status, TunnelHandle};
use crate::userspace::{StackCounters, StackHandle};

/// Peers exported with their own series; see the module documentation.
pub const MAX_PEER_SERIES: usize = 256;

/// Largest request head (request line and headers) read, in bytes
/// (hyper's minimum buffer).
pub const MAX_REQUEST_HEAD: usize = 8192;

/// How long a client may take to send its request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The path that serves the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listener could not be bound.
    #[error("metrics-listen = \"{addr}\": cannot listen: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Where a scrape reads its figures.
#[derive(Clone, Debug)]
pub struct MetricsSource {
    tunnel: TunnelHandle,
    stack: Option<StackHandle>,
}

impl MetricsSource {
    /// Figures from a running tunnel and, in userspace mode, its stack.
    pub fn new(tunnel: TunnelHandle, stack: Option<StackHandle>) -> Self {
        MetricsSource { tunnel, stack }
    }

    /// The metrics document now; `None` once the tunnel has stopped.
    pub async fn scrape(&self) -> Option<String> {
        let status = self.tunnel.status().await?;
        let stack = self.stack.as_ref().map(StackHandle::counters);
        Some(render(&status, stack.as_ref()))
    }
}

/// The metrics endpoint: a bound listener, served by [`MetricsServer::serve`].
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Bind `addr` (the config's `metrics-listen`).
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Answer scrapes until the task is dropped.
    pub async fn serve(self, source: MetricsSource) {
        let source = Arc::new(source);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    warn!(%error, "metrics accept failed");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = Arc::clone(&source);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let source = Arc::clone(&source);
                    async move { Ok::<_, Infallible>(respond(&request, &source).await) }
                });
                // One request per connection (scrapers reconnect), so a
                // connection lives at most one header timeout plus one
                // scrape.
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(false)
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_HEAD)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    debug!(%error, "metrics connection failed");
                }
                drop(permit);
            });
        }
    }
}

/// The answer to one request.
async fn respond(request: &Request<Incoming>, source: &MetricsSource) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(StatusCode::NOT_FOUND, "not found; try /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match source.scrape().await {
        Some(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            );
            response
        }
        None => plain(StatusCode::SERVICE_UNAVAILABLE, "the data plane stopped\n"),
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

type Labels = Vec<(String, String)>;

/// The metrics document for `status` and, in userspace mode, the stack's
/// counters. See the module documentation for the families.
pub fn render(status: &Status, stack: Option<&StackCounters>) -> String {
    let mut registry = Registry::with_prefix("tunneld");
    registry.register(
        "build",
        "tunneld build information",
        Info::new(vec![(
            "version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        )]),
    );
    let n = &status.node;
    for c in n.totals() {
        registry.register(
            format!("node_{}", c.name),
            c.help,
            ConstCounter::new(c.value),
        );
    }
    let drops = Family::<Labels, prometheus_client::metrics::counter::Counter>::default();
    for (reason, count) in n.iter_drops() {
        drops
            .get_or_create(&vec![("reason".to_owned(), reason.as_str().to_owned())])
            .inc_by(count);
    }
    registry.register("drops", "datagrams and packets dropped, by reason", drops);
    for c in status.dataplane.labelled() {
        registry.register(
            format!("dataplane_{}", c.name),
            c.help,
            ConstCounter::new(c.value),
        );
    }
    for c in stack.iter().flat_map(|s| s.labelled()) {
        registry.register(
            format!("stack_{}", c.name),
            c.help,
            ConstCounter::new(c.value),
        );
    }
    let reloads = Family::<Labels, prometheus_client::metrics::counter::Counter>::default();
    for (result, count) in [
        ("applied", status.reload.applied),
        ("failed", status.reload.failed),
    ] {
        reloads
            .get_or_create(&vec![("result".to_owned(), result.to_owned())])
            .inc_by(count);
    }
    registry.register("reloads", "SIGHUP config reloads, by result", reloads);
    let lease = &status.local_lease;
    let seconds = |t: overlay_proto::time::UnixTime| i64::try_from(t.as_secs()).unwrap_or(i64::MAX);
    registry.register(
        "lease_serial",
        "serial of this node's lease",
        ConstGauge::new(i64::try_from(lease.serial).unwrap_or(i64::MAX)),
    );
    registry.register(
        "lease_not_after_seconds",
        "end of validity of this node's lease, Unix time",
        ConstGauge::new(seconds(lease.not_after)),
    );
    register_peers(&mut registry, status);
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

fn register_peers(registry: &mut Registry, status: &Status) {
    type CounterFamily = Family<Labels, prometheus_client::metrics::counter::Counter>;
    let count = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    registry.register(
        "peers",
        "peers the node holds",
        ConstGauge::new(count(status.peers.len())),
    );
    registry.register(
        "metrics_peers_omitted",
        "peers without their own series (over the per-peer limit)",
        ConstGauge::new(count(status.peers.len().saturating_sub(MAX_PEER_SERIES))),
    );
    let rx_bytes = CounterFamily::default();
    let tx_bytes = CounterFamily::default();
    let rx_packets = CounterFamily::default();
    let tx_packets = CounterFamily::default();
    let handshakes = CounterFamily::default();
    let spoofed = CounterFamily::default();
    let sas = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let now = crate::startup::now().unix;
    for peer in status.peers.iter().take(MAX_PEER_SERIES) {
        let labels = vec![
            ("peer".to_owned(), peer.name.clone()),
            ("public_key".to_owned(), peer.public_key.to_string()),
        ];
        rx_bytes.get_or_create(&labels).inc_by(peer.stats.rx_bytes);
        tx_bytes.get_or_create(&labels).inc_by(peer.stats.tx_bytes);
        rx_packets
            .get_or_create(&labels)
            .inc_by(peer.stats.rx_packets);
        tx_packets
            .get_or_create(&labels)
            .inc_by(peer.stats.tx_packets);
        handshakes
            .get_or_create(&labels)
            .inc_by(peer.stats.handshakes);
        spoofed
            .get_or_create(&labels)
            .inc_by(peer.stats.spoofed_sources);
        sas.get_or_create(&labels)
            .set(count(peer.security_associations.len()));
        if let Some(at) = peer.last_handshake {
            let seconds = now.as_secs().saturating_sub(at.as_secs());
            // Ages are far below 2^53 seconds.
            #[allow(clippy::cast_precision_loss)]
            age.get_or_create(&labels).set(seconds as f64);
        }
    }
    registry.register(
        "peer_rx_bytes",
        "inner bytes received from the peer",
        rx_bytes,
    );
    registry.register("peer_tx_bytes", "inner bytes sent to the peer", tx_bytes);
    registry.register(
        "peer_rx_packets",
        "inner packets received from the peer",
        rx_packets,
    );
    registry.register(
        "peer_tx_packets",
        "inner packets sent to the peer",
        tx_packets,
    );
    registry.register(
        "peer_handshakes",
        "handshakes completed with the peer",
        handshakes,
    );
    registry.register(
        "peer_spoofed_sources",
        "packets from the peer with a source outside its lease",
        spoofed,
    );
    registry.register(
        "peer_security_associations",
        "security associations held with the peer",
        sas,
    );
    registry.register(
        "peer_last_handshake_age_seconds",
        "seconds since the last completed handshake with the peer",
        age,
    );
}
