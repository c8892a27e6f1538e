//! The control socket: how `tunneld status` (and `tunneld login`) ask the
//! running daemon.
//!
//! The daemon listens on a Unix stream socket (default
//! `/run/permanet/tunneld.sock`, mode 0600, in a directory it creates with
//! mode 0700). A client writes one request line and reads one JSON
//! document back, then the daemon closes the connection. Requests:
//! `status`, answered with a [`Report`] built from the data plane's
//! [`Status`] snapshot and the node's fixed [`Identity`]; and `reload`
//! (what `tunneld login` sends after it wrote a new lease), which asks the
//! daemon to reload as on SIGHUP and answers `{"reload":"requested"}`; and
//! `peer <IPv6 address>` (what wap-adapter asks to know who a request's
//! overlay source is), answered with a [`PeerAnswer`]: the verified lease of
//! the peer whose lease prefix holds that address, or `unknown`. The
//! socket is mode 0600 in a 0700 directory: only the daemon's user (or
//! root) can ask any of them.
//!
//! [`ControlSocket::bind`] replaces a stale socket file (one nobody
//! answers on) and refuses to steal a live one; dropping the
//! [`ControlSocket`] removes the file.

use overlay_proto::counters::Labelled;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use overlay_proto::authority::LoginNeededReason;
use overlay_proto::node::Node;
use overlay_proto::session::{SaRole, SaStatus};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::dataplane::{Status, TunnelHandle};
use crate::startup;
use crate::userspace::StackHandle;

/// Longest request line accepted, newline included.
const MAX_REQUEST: u64 = 256;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The status request line.
pub const STATUS_REQUEST: &str = "status";

/// The reload request line.
pub const RELOAD_REQUEST: &str = "reload";

/// The peer request's word; the line is `peer <IPv6 address>`.
pub const PEER_REQUEST: &str = "peer";

/// What does not change while the daemon runs: this node (and, in
/// userspace mode, the stack whose counters the report carries).
#[derive(Clone, Debug)]
pub struct Identity {
    interface: Interface,
    userspace: Option<StackHandle>,
    /// With `[addrd]`: `Some(reason)` while addrd wants a new login.
    login_needed: Option<watch::Receiver<Option<LoginNeededReason>>>,
    /// Where `reload` requests go (the daemon's main loop).
    reload: Option<mpsc::Sender<()>>,
}

impl Identity {
    /// Reads the node's lease and its peers' leases before the node is
    /// handed to the data plane; `listen` is the bound UDP address.
    pub fn new(config: &Config, node: &Node, listen: std::net::SocketAddr) -> Self {
        let lease = node.local_lease().lease();
        Identity {
            interface: Interface {
                name: lease.name.clone(),
                public_key: node.public_key().to_string(),
                addresses: vec![lease.prefix.to_string()],
                listen: listen.to_string(),
                listen_port: listen.port(),
                role: config.role.as_str().to_owned(),
                mode: config.mode.as_str().to_owned(),
                tun_device: (config.mode == crate::config::Mode::Tun)
                    .then(|| config.tun_name.clone()),
            },
            userspace: None,
            login_needed: None,
            reload: None,
        }
    }

    /// Reports show whether addrd wants a new login (`[addrd]`).
    pub fn with_login_needed(
        mut self,
        login_needed: watch::Receiver<Option<LoginNeededReason>>,
    ) -> Self {
        self.login_needed = Some(login_needed);
        self
    }

    /// `reload` requests are sent to `reload`.
    pub fn with_reload(mut self, reload: mpsc::Sender<()>) -> Self {
        self.reload = Some(reload);
        self
    }

    /// Reports also carry `stack`'s counters (userspace mode).
    pub fn with_userspace(mut self, stack: StackHandle) -> Self {
        self.userspace = Some(stack);
        self
    }

    /// The report for `status`, taken at `now_unix` (seconds).
    pub fn report(&self, status: &Status, now_unix: u64) -> Report {
        let peers = status
            .peers
            .iter()
            .map(|p| PeerReport {
                id: p.id.0,
                public_key: p.public_key.to_string(),
                name: Some(p.name.clone()),
                lease_prefix: Some(p.lease_prefix.to_string()),
                security_associations: p.security_associations.iter().map(SaReport::from).collect(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                latest_handshake: p.last_handshake.map(|t| t.as_secs()),
                handshake_in_flight: p.handshake_in_flight,
                queued: p.queued,
                persistent_keepalive: p.persistent_keepalive.map(|d| d.as_secs()),
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
                rx_packets: p.stats.rx_packets,
                tx_packets: p.stats.tx_packets,
                handshakes: p.stats.handshakes,
                spoofed_sources: p.stats.spoofed_sources,
            })
            .collect();
        let n = &status.node;
        Report {
            now: now_unix,
            interface: self.interface.clone(),
            peers,
            counters: to_map(n.totals()),
            drops: n
                .iter_drops()
                .map(|(reason, count)| (reason.as_str().to_owned(), count))
                .collect(),
            dataplane: to_map(status.dataplane.labelled()),
            userspace: self
                .userspace
                .as_ref()
                .map(|stack| to_map(stack.counters().labelled()))
                .unwrap_or_default(),
            lease: LeaseReport {
                serial: status.local_lease.serial,
                not_before: status.local_lease.not_before.as_secs(),
                not_after: status.local_lease.not_after.as_secs(),
            },
            reload: ReloadReport {
                applied: status.reload.applied,
                failed: status.reload.failed,
                last_error: status.reload.last_error.clone(),
            },
            login_needed: self
                .login_needed
                .as_ref()
                .and_then(|rx| rx.borrow().map(|reason| format!("{reason:?}"))),
        }
    }
}

fn to_map(counters: impl IntoIterator<Item = Labelled>) -> BTreeMap<String, u64> {
    counters
        .into_iter()
        .map(|c| (c.name.to_owned(), c.value))
        .collect()
}

/// The answer to `status`, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The daemon's wall clock when it answered, in Unix seconds.
    pub now: u64,
    /// This node.
    pub interface: Interface,
    /// Every peer, ordered by handle.
    pub peers: Vec<PeerReport>,
    /// The node's event counters, by name.
    pub counters: BTreeMap<String, u64>,
    /// Every drop reason's label with its count, zeros included.
    pub drops: BTreeMap<String, u64>,
    /// The data plane's own counters, by name.
    pub dataplane: BTreeMap<String, u64>,
    /// The userspace stack's counters, by name (empty in TUN mode).
    #[serde(default)]
    pub userspace: BTreeMap<String, u64>,
    /// This node's lease as the data plane holds it (renewals show here).
    #[serde(default)]
    pub lease: LeaseReport,
    /// SIGHUP reloads.
    #[serde(default)]
    pub reload: ReloadReport,
    /// With `[addrd]`: addrd's reason while it refuses to renew until
    /// `tunneld login` is run again; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_needed: Option<String>,
}

/// This node's lease, in a [`Report`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// Its serial.
    pub serial: u64,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity, Unix seconds.
    pub not_after: u64,
}

/// SIGHUP reloads, in a [`Report`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused; the daemon kept its previous config.
    pub failed: u64,
    /// Why the last reload was refused (cleared by a successful one).
    pub last_error: Option<String>,
}

/// This node in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The name in this node's lease.
    pub name: String,
    /// This node's static key, base64.
    pub public_key: String,
    /// This node's lease prefix.
    pub addresses: Vec<String>,
    /// The UDP socket's address.
    pub listen: String,
    /// Its port.
    pub listen_port: u16,
    /// `client` or `server`.
    pub role: String,
    /// `userspace` or `tun`.
    pub mode: String,
    /// The TUN device's name (tun mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun_device: Option<String>,
}

/// One security association in a [`PeerReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaReport {
    /// `current`, `previous` (replaced by a rekey, still receiving) or
    /// `unconfirmed` (made as responder, not used by the peer yet).
    pub role: String,
    /// SPI the peer sends to, hex.
    pub inbound_spi: String,
    /// SPI we send to, hex.
    pub outbound_spi: String,
    /// Seconds since its handshake.
    pub age_secs: u64,
    /// Whether this node initiated that handshake.
    pub initiator: bool,
    /// Packets sent on it.
    pub packets_sent: u64,
}

impl From<&SaStatus> for SaReport {
    fn from(sa: &SaStatus) -> Self {
        SaReport {
            role: match sa.role {
                SaRole::Current => "current",
                SaRole::Previous => "previous",
                SaRole::Unconfirmed => "unconfirmed",
            }
            .to_owned(),
            inbound_spi: format!("{:#010x}", sa.inbound_spi),
            outbound_spi: format!("{:#010x}", sa.outbound_spi),
            age_secs: sa.age.as_secs(),
            initiator: sa.initiator,
            packets_sent: sa.packets_sent,
        }
    }
}

/// One peer in a [`Report`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The node's handle.
    pub id: u64,
    /// Its static key, base64.
    pub public_key: String,
    /// The name in its lease.
    pub name: Option<String>,
    /// Its lease prefix.
    pub lease_prefix: Option<String>,
    /// Its security associations.
    #[serde(default)]
    pub security_associations: Vec<SaReport>,
    /// Where packets for it go.
    pub endpoint: Option<String>,
    /// When its last handshake completed, in Unix seconds.
    pub latest_handshake: Option<u64>,
    /// Whether this node is initiating a handshake with it.
    pub handshake_in_flight: bool,
    /// Packets waiting for that handshake.
    pub queued: usize,
    /// Inner bytes received.
    pub rx_bytes: u64,
    /// Inner bytes sent.
    pub tx_bytes: u64,
    /// Inner packets received.
    pub rx_packets: u64,
    /// Inner packets sent.
    pub tx_packets: u64,
    /// Handshakes completed with it.
    pub handshakes: u64,
    /// Its packets dropped for an inner source outside its lease.
    pub spoofed_sources: u64,
    /// Persistent keepalive interval in seconds, if any.
    #[serde(default)]
    pub persistent_keepalive: Option<u64>,
}

impl Report {
    /// The `wg show`-like text `tunneld status` prints.
    pub fn human(&self) -> String {
        let i = &self.interface;
        let mut s = String::new();
        let _ = writeln!(s, "interface: {}", i.name);
        let _ = writeln!(s, "  public key: {}", i.public_key);
        let _ = writeln!(s, "  listening port: {}", i.listen_port);
        let _ = writeln!(s, "  addresses: {}", i.addresses.join(", "));
        let _ = writeln!(s, "  role: {}, mode: {}", i.role, i.mode);
        if let Some(device) = &i.tun_device {
            let _ = writeln!(s, "  device: {device}");
        }
        if let Some(reason) = &self.login_needed {
            let _ = writeln!(
                s,
                "  login needed: addrd will not renew the lease ({reason}); run `tunneld login`"
            );
        }
        let _ = writeln!(
            s,
            "  lease: serial {}, expires in {} s",
            self.lease.serial,
            self.lease.not_after.saturating_sub(self.now)
        );
        for p in &self.peers {
            let _ = writeln!(s, "\npeer: {}", p.public_key);
            if let Some(name) = &p.name {
                let _ = writeln!(s, "  name: {name}");
            }
            if let Some(endpoint) = &p.endpoint {
                let _ = writeln!(s, "  endpoint: {endpoint}");
            }
            if let Some(prefix) = &p.lease_prefix {
                let _ = writeln!(s, "  allowed ips: {prefix}");
            }
            match p.latest_handshake {
                Some(at) => {
                    let ago = self.now.saturating_sub(at);
                    let _ = writeln!(s, "  latest handshake: {ago} seconds ago");
                }
                None if p.handshake_in_flight => {
                    let _ = writeln!(s, "  latest handshake: (none, one in progress)");
                }
                None => {}
            }
            let _ = writeln!(
                s,
                "  transfer: {} received, {} sent",
                bytes(p.rx_bytes),
                bytes(p.tx_bytes)
            );
            if let Some(secs) = p.persistent_keepalive {
                let _ = writeln!(s, "  persistent keepalive: every {secs} seconds");
            }
            for sa in &p.security_associations {
                let _ = writeln!(
                    s,
                    "  sa {}: in {} out {}, {} s old, {} packets sent",
                    sa.role, sa.inbound_spi, sa.outbound_spi, sa.age_secs, sa.packets_sent
                );
            }
        }
        if let Some(error) = &self.reload.last_error {
            let _ = writeln!(
                s,
                "\nlast reload failed ({} applied, {} failed): {error}",
                self.reload.applied, self.reload.failed
            );
        }
        for (title, counters) in [
            ("drops", &self.drops),
            ("data plane", &self.dataplane),
            ("userspace", &self.userspace),
        ] {
            let nonzero: Vec<_> = counters.iter().filter(|(_, n)| **n > 0).collect();
            if !nonzero.is_empty() {
                let _ = writeln!(s, "\n{title}:");
                for (label, n) in nonzero {
                    let _ = writeln!(s, "  {label}: {n}");
                }
            }
        }
        s
    }
}

/// `wg`-style byte counts: B, KiB, MiB, GiB, TiB with two decimals.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Precision loss above 2^53 bytes does not show in two decimals.
    #[allow(clippy::cast_precision_loss)]
    let mut value = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.2} {unit}")
}

/// The answer to `peer <address>`, as JSON: `{"lease": {...}}` or
/// `{"unknown": "<address>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerAnswer {
    /// A peer's lease holds the address and is valid now.
    Lease(PeerLease),
    /// No peer with a lease valid now holds the address.
    Unknown(String),
}

impl PeerAnswer {
    /// The answer for `address` from `status`'s peers at `now_unix`
    /// (seconds): the first peer whose lease prefix holds the address and
    /// whose lease is valid at that time.
    pub fn find(status: &Status, address: std::net::Ipv6Addr, now_unix: u64) -> PeerAnswer {
        status
            .peers
            .iter()
            .map(|p| &p.lease)
            .find(|lease| {
                lease.contains_source(&address)
                    && lease.not_before.as_secs() <= now_unix
                    && now_unix < lease.not_after.as_secs()
            })
            .map_or_else(
                || PeerAnswer::Unknown(address.to_string()),
                |lease| PeerAnswer::Lease(PeerLease::from(lease)),
            )
    }
}

/// A peer's verified lease in a [`PeerAnswer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLease {
    /// Short name, e.g. `alice`.
    pub name: String,
    /// Directory DN.
    pub dn: String,
    /// `user`, `application` or `system`.
    pub kind: String,
    /// The lease prefix (a /128 for users and applications).
    pub address: String,
    /// Group names.
    pub groups: Vec<String>,
    /// The lease's serial.
    pub serial: u64,
    /// Start of validity, Unix seconds.
    pub not_before: u64,
    /// End of validity (exclusive), Unix seconds.
    pub not_after: u64,
}

impl From<&overlay_proto::lease::Lease> for PeerLease {
    fn from(lease: &overlay_proto::lease::Lease) -> Self {
        PeerLease {
            name: lease.name.clone(),
            dn: lease.dn.clone(),
            kind: lease.kind.as_str().to_owned(),
            address: lease.prefix.to_string(),
            groups: lease.groups.clone(),
            serial: lease.serial,
            not_before: lease.not_before.as_secs(),
            not_after: lease.not_after.as_secs(),
        }
    }
}

pub use daemon_kit::control::{BindError, ControlSocket};

/// Bind tunneld's control socket at `path` (see [`ControlSocket::bind`]:
/// a second tunneld on the same socket is refused).
pub async fn bind(path: &Path) -> Result<ControlSocket, BindError> {
    ControlSocket::bind(path, "tunneld").await
}

/// Answer requests on `socket` until the future is dropped; one task per
/// connection.
pub async fn serve(socket: &ControlSocket, handle: TunnelHandle, identity: Arc<Identity>) {
    socket
        .serve(|stream| {
            let handle = handle.clone();
            let identity = Arc::clone(&identity);
            async move { answer(stream, &handle, &identity).await }
        })
        .await;
}

async fn answer(stream: UnixStream, handle: &TunnelHandle, identity: &Identity) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if line.is_empty() {
        // Closed without a request (e.g. a probe that the daemon is up).
        return Ok(());
    }
    let response = match line.trim_end() {
        STATUS_REQUEST => match handle.status().await {
            Some(status) => {
                let report = identity.report(&status, startup::now().unix.as_secs());
                serde_json::to_string(&report).map_err(io::Error::other)?
            }
            None => error_json("the data plane has stopped"),
        },
        RELOAD_REQUEST => match &identity.reload {
            Some(reload) if reload.send(()).await.is_ok() => {
                serde_json::json!({ "reload": "requested" }).to_string()
            }
            _ => error_json("this daemon does not take reload requests"),
        },
        line => match line.split_once(' ') {
            Some((PEER_REQUEST, address)) => match address.trim().parse() {
                Ok(address) => match handle.status().await {
                    Some(status) => {
                        let now = startup::now().unix.as_secs();
                        let answer = PeerAnswer::find(&status, address, now);
                        serde_json::to_string(&answer).map_err(io::Error::other)?
                    }
                    None => error_json("the data plane has stopped"),
                },
                Err(_) => error_json("peer: not an IPv6 address"),
            },
            _ => error_json("unknown request"),
        },
    };
    write.write_all(response.as_bytes()).await?;
    write.write_all(b"\n").await?;
    write.shutdown().await
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_view_shows_handshake_age_transfer_and_nonzero_drops() {
        let peer = |name: Option<&str>, latest_handshake| PeerReport {
            id: 1,
            public_key: "PEERKEY=".to_owned(),
            name: name.map(str::to_owned),
            lease_prefix: name.map(|_| "2002:b16:212c:2::/64".to_owned()),
            security_associations: vec![],
            endpoint: Some("192.0.2.1:4500".to_owned()),
            latest_handshake,
            handshake_in_flight: latest_handshake.is_none(),
            queued: 0,
            rx_bytes: 2048,
            tx_bytes: 100,
            rx_packets: 2,
            tx_packets: 1,
            handshakes: 1,
            spoofed_sources: 0,
            persistent_keepalive: name.map(|_| 25),
        };
        let report = Report {
            now: 1_000,
            interface: Interface {
                name: "node".to_owned(),
                public_key: "OURKEY=".to_owned(),
                addresses: vec!["2002:b16:212c:1::1234/128".to_owned()],
                listen: "0.0.0.0:4500".to_owned(),
                listen_port: 4500,
                role: "client".to_owned(),
                mode: "userspace".to_owned(),
                tun_device: None,
            },
            peers: vec![peer(Some("srv"), Some(988)), peer(None, None)],
            counters: BTreeMap::new(),
            drops: [
                ("unknown_spi", 3),
                ("bad_mac1", 0),
                ("esp_replay_duplicate", 1),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            dataplane: [("no_route", 2), ("too_big", 0), ("icmp_sent", 2)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            userspace: [("forwarded", 5), ("forward_failed", 0)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            lease: LeaseReport {
                serial: 3,
                not_before: 0,
                not_after: 4_600,
            },
            reload: ReloadReport {
                applied: 1,
                failed: 2,
                last_error: Some("t.toml: mtu: changed".to_owned()),
            },
            login_needed: None,
        };
        let expected = "\
interface: node
  public key: OURKEY=
  listening port: 4500
  addresses: 2002:b16:212c:1::1234/128
  role: client, mode: userspace
  lease: serial 3, expires in 3600 s

peer: PEERKEY=
  name: srv
  endpoint: 192.0.2.1:4500
  allowed ips: 2002:b16:212c:2::/64
  latest handshake: 12 seconds ago
  transfer: 2.00 KiB received, 100 B sent
  persistent keepalive: every 25 seconds

peer: PEERKEY=
  endpoint: 192.0.2.1:4500
  latest handshake: (none, one in progress)
  transfer: 2.00 KiB received, 100 B sent

last reload failed (1 applied, 2 failed): t.toml: mtu: changed

drops:
  esp_replay_duplicate: 1
  unknown_spi: 3

data plane:
  icmp_sent: 2
  no_route: 2

userspace:
  forwarded: 5
";
        assert_eq!(report.human(), expected);
        // The JSON round-trips into the same report (the client parses it).
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn byte_units() {
        for (n, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1536, "1.50 KiB"),
            (5 * 1024 * 1024, "5.00 MiB"),
            (3 << 30, "3.00 GiB"),
            (7 << 40, "7.00 TiB"),
            (7 << 50, "7168.00 TiB"),
        ] {
            assert_eq!(bytes(n), text, "{n}");
        }
    }
}
