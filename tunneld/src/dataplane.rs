//! The UDP data plane: one socket, one [`Node`], one inner-packet port.
//!
//! A [`Tunnel`] drives the sans-IO protocol core the way
//! `overlay_proto::sim` does, with a real socket and the real clock. One
//! task runs [`Tunnel::run`], a `tokio::select!` loop over four inputs:
//! - UDP datagrams, a batch per wakeup ([`crate::udp`]):
//!   [`Node::handle_datagram`]; decrypted inner packets go
//!   out through the port if the [`AccessPolicy`] allows them (server role:
//!   the peer's lease groups against the destination application's
//!   allowed groups), else they are counted and answered, rate-limited,
//!   with an ICMPv6 "administratively prohibited" through the tunnel;
//! - inner IPv6 packets from the port, the first one awaited and up to
//!   [`INNER_BATCH`] more taken while ready ([`InnerPort::try_recv`]): the
//!   destination address picks the peer ([`Node::route`], cryptokey
//!   routing), [`Node::encapsulate`] seals the packet into the send queue;
//!   a packet no peer routes, or longer than the tunnel MTU
//!   ([`Tunnel::with_mtu`]), is answered, rate-limited, with an ICMPv6
//!   "no route" or Packet Too Big into the port;
//! - the node's timer ([`Node::poll_timeout`], [`Node::handle_timeout`]);
//! - control: status requests, shutdown and runtime changes (SIGHUP
//!   reloads, lease renewals: [`crate::reload`]) from a [`TunnelHandle`].
//!
//! After every input the loop queues what [`Node::poll_transmit`] holds,
//! sends the whole queue in as few system calls as it can (UDP GSO,
//! waiting for the socket rather than dropping) and logs what
//! [`Node::poll_event`] reports; with a [`KeyLog`] attached
//! ([`Tunnel::with_key_log`]) it also writes the keys of every new SA there
//! (the tracing log only ever names SPIs). The per-packet path reuses one
//! receive batch, one inner buffer and one send queue, all allocated when
//! the tunnel is built, takes no lock and allocates nothing (control
//! messages allocate, in the core).
//!
//! The *port* ([`InnerPort`]) is the seam to the mode: a TUN device, or
//! the userspace stack that serves port forwards and SOCKS5. It reads
//! inner packets into the tunnel's buffer (waiting for the first, then
//! taking what is ready) and takes decrypted packets by reference, so a TUN
//! device implements it with one `read` and one `write` per packet.
//! [`ChannelPort`] implements it over two
//! `tokio::sync::mpsc` channels, for the userspace stack and for tests.

use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Instant;

use overlay_proto::counters::{Counters, Labelled};
use overlay_proto::esp;
use overlay_proto::handshake::PublicKey;
use overlay_proto::node::{Event, Node, Outgoing, Received, MAX_INNER_PACKET};
use overlay_proto::session::{PeerId, PeerStats, SaKeyLog, SaStatus};
use overlay_proto::time::UnixTime;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, trace, warn};

use crate::access::{AccessPolicy, Verdict};
use crate::icmp::{self, IcmpLimiter};
use crate::keylog::KeyLog;
use crate::reload::{self, Applied, ChangeSet, ReloadError, ReloadStatus};
use crate::startup;
use crate::udp::{BatchSocket, RecvBatch, TransmitQueue};

/// Inner packets the loop takes from the port per wakeup, beyond the one
/// it waited for, before it sends what they became.
pub const INNER_BATCH: usize = 64;

/// Decrypted packets the loop delivers to the port before it lets the
/// mode's tasks run.
const DELIVER_BATCH: usize = 64;

/// Datagrams the send queue holds before it is flushed early.
const SEND_BATCH: usize = 128;

/// Bytes of the send queue: [`SEND_BATCH`] full-size datagrams of an
/// Ethernet path, and never less than one of the largest.
const SEND_QUEUE_BYTES: usize = {
    let batch = SEND_BATCH * 1_500;
    let largest = esp::encapsulated_len(MAX_INNER_PACKET);
    if batch > largest {
        batch
    } else {
        largest
    }
};

/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;

/// Status requests waiting for the loop.
const STATUS_QUEUE: usize = 4;

/// Where inner IPv6 packets enter and leave the tunnel: the mode's side.
///
/// The tunnel calls [`InnerPort::recv`] inside `tokio::select!`, so it must
/// be cancel safe: if the future is dropped before it completes, no packet
/// may be lost half-read (a TUN read and `mpsc::Receiver::recv` are).
pub trait InnerPort: Send {
    /// Wait for the next inner packet to send, write it into `buf` (which
    /// holds [`MAX_INNER_PACKET`] bytes) and return its length. `None`
    /// when the mode has closed the port: the tunnel then stops.
    fn recv<'a>(&'a mut self, buf: &'a mut [u8])
        -> impl Future<Output = Option<usize>> + Send + 'a;

    /// The next inner packet if one is ready now, like
    /// [`InnerPort::recv`] without the wait: `None` when none is ready
    /// (or the port is closed, which the next `recv` reports). The tunnel
    /// calls it after `recv` to take a batch per wakeup. The default
    /// never has one ready, so every packet costs one wakeup.
    fn try_recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let _ = buf;
        None
    }

    /// Hand a decrypted inner packet to the mode without waiting. An error
    /// (queue full, device gone) drops the packet; the tunnel counts it.
    fn deliver(&mut self, packet: &[u8]) -> io::Result<()>;
}

/// An [`InnerPort`] over two bounded `mpsc` channels of packets.
///
/// The mode holds the other ends ([`PortChannels`]). Each packet is one
/// `Vec<u8>` handed over whole; a decrypted packet the mode has no room
/// for is dropped, like a full TUN queue drops it.
#[derive(Debug)]
pub struct ChannelPort {
    from_mode: mpsc::Receiver<Vec<u8>>,
    to_mode: mpsc::Sender<Vec<u8>>,
}

/// The mode's ends of a [`ChannelPort`].
#[derive(Debug)]
pub struct PortChannels {
    /// Inner IPv6 packets to send through the tunnel. Dropping every
    /// sender closes the port and stops the tunnel.
    pub outbound: mpsc::Sender<Vec<u8>>,
    /// Decrypted inner IPv6 packets that came out of the tunnel.
    pub inbound: mpsc::Receiver<Vec<u8>>,
}

impl ChannelPort {
    /// A port whose channels each hold up to `capacity` packets.
    pub fn new(capacity: usize) -> (ChannelPort, PortChannels) {
        let (outbound, from_mode) = mpsc::channel(capacity);
        let (to_mode, inbound) = mpsc::channel(capacity);
        (
            ChannelPort { from_mode, to_mode },
            PortChannels { outbound, inbound },
        )
    }
}

impl InnerPort for ChannelPort {
    async fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let packet = self.from_mode.recv().await?;
            if let Some(len) = copy_inner(&packet, buf) {
                return Some(len);
            }
        }
    }

    fn try_recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            let packet = self.from_mode.try_recv().ok()?;
            if let Some(len) = copy_inner(&packet, buf) {
                return Some(len);
            }
        }
    }

    fn deliver(&mut self, packet: &[u8]) -> io::Result<()> {
        self.to_mode.try_send(packet.to_vec()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => io::ErrorKind::WouldBlock.into(),
            mpsc::error::TrySendError::Closed(_) => io::ErrorKind::BrokenPipe.into(),
        })
    }
}

/// Copy a packet from the mode into the tunnel's inner buffer; `None`
/// (logged) for one larger than any IPv6 packet without jumbograms.
fn copy_inner(packet: &[u8], buf: &mut [u8]) -> Option<usize> {
    match buf.get_mut(..packet.len()) {
        Some(slot) => {
            slot.copy_from_slice(packet);
            Some(packet.len())
        }
        None => {
            debug!(len = packet.len(), "inner packet too large for the tunnel");
            None
        }
    }
}

/// What the data plane itself counted, beside the node's [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneCounters {
    /// UDP datagrams received.
    pub datagrams_received: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// Inner packets from the port whose destination no peer's lease
    /// covers (dropped; answered with an ICMPv6 Destination Unreachable,
    /// code 0 "no route").
    pub no_route: u64,
    /// Inner packets from the port longer than the tunnel MTU
    /// ([`Tunnel::with_mtu`]; dropped; answered with an ICMPv6 Packet Too
    /// Big).
    pub too_big: u64,
    /// Inner packets from the port that are not IPv6 (dropped).
    pub malformed_inner: u64,
    /// Decrypted packets the port refused (dropped).
    pub deliver_errors: u64,
    /// Decrypted packets the access policy refused (dropped): the peer's
    /// lease groups do not meet the destination application's.
    pub prohibited: u64,
    /// ICMPv6 errors sent back: "administratively prohibited" through the
    /// tunnel, "no route" and Packet Too Big into the port.
    pub icmp_sent: u64,
    /// Prohibited, unrouted or too-big packets not answered: over the
    /// ICMPv6 rate limit, or an ICMPv6 error, a non-first fragment, or
    /// from a multicast source (RFC 4443 §2.4), or the port had no room.
    pub icmp_suppressed: u64,
    /// Receive failures (each a batch that was not read).
    pub recv_errors: u64,
    /// Datagrams the socket refused with an error (dropped).
    pub send_errors: u64,
    /// SAs whose keys could not be written to the key log.
    pub keylog_errors: u64,
}

impl DataplaneCounters {
    /// Every counter, named, for status reports and metrics.
    pub fn labelled(&self) -> [Labelled; 12] {
        [
            Labelled::new(
                "datagrams_received",
                "UDP datagrams received",
                self.datagrams_received,
            ),
            Labelled::new("datagrams_sent", "UDP datagrams sent", self.datagrams_sent),
            Labelled::new(
                "no_route",
                "inner packets without a peer for their destination",
                self.no_route,
            ),
            Labelled::new(
                "too_big",
                "inner packets longer than the tunnel MTU",
                self.too_big,
            ),
            Labelled::new(
                "malformed_inner",
                "inner packets that are not IPv6",
                self.malformed_inner,
            ),
            Labelled::new(
                "deliver_errors",
                "decrypted packets the mode refused",
                self.deliver_errors,
            ),
            Labelled::new(
                "prohibited",
                "decrypted packets refused by the access policy",
                self.prohibited,
            ),
            Labelled::new("icmp_sent", "ICMPv6 errors sent", self.icmp_sent),
            Labelled::new(
                "icmp_suppressed",
                "packets that earned an ICMPv6 error not sent",
                self.icmp_suppressed,
            ),
            Labelled::new("recv_errors", "UDP receive failures", self.recv_errors),
            Labelled::new("send_errors", "UDP send failures", self.send_errors),
            Labelled::new(
                "keylog_errors",
                "SAs whose keys the key log could not take",
                self.keylog_errors,
            ),
        ]
    }
}

/// One peer, as a status command shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The node's handle.
    pub id: PeerId,
    /// Its static key.
    pub public_key: PublicKey,
    /// The name in its lease.
    pub name: String,
    /// Its lease prefix: the addresses it may use and that route to it.
    pub lease_prefix: ipnet::Ipv6Net,
    /// Its verified lease as the node holds it (the control socket's
    /// `peer` request answers with it).
    pub lease: overlay_proto::lease::Lease,
    /// Its security associations.
    pub security_associations: Vec<SaStatus>,
    /// Where packets for it go now.
    pub endpoint: Option<SocketAddr>,
    /// Traffic totals.
    pub stats: PeerStats,
    /// When its last handshake completed.
    pub last_handshake: Option<UnixTime>,
    /// Whether a handshake is running.
    pub handshake_in_flight: bool,
    /// Packets waiting for that handshake.
    pub queued: usize,
    /// Its persistent keepalive interval, if any.
    pub persistent_keepalive: Option<std::time::Duration>,
}

/// A snapshot of a running tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The node's counters.
    pub node: Counters,
    /// The data plane's own counters.
    pub dataplane: DataplaneCounters,
    /// Every peer, ordered by handle.
    pub peers: Vec<PeerStatus>,
    /// SIGHUP reloads applied and refused.
    pub reload: ReloadStatus,
    /// This node's lease as the node holds it now.
    pub local_lease: LeaseSummary,
}

/// What a status shows of a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSummary {
    /// Its serial.
    pub serial: u64,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity.
    pub not_after: UnixTime,
}

impl LeaseSummary {
    /// The summary of `lease`.
    pub fn of(lease: &overlay_proto::lease::SignedLease) -> Self {
        let lease = lease.lease();
        LeaseSummary {
            serial: lease.serial,
            not_before: lease.not_before,
            not_after: lease.not_after,
        }
    }
}

/// Why [`Tunnel::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// [`TunnelHandle::shutdown`] was called, or every handle was dropped.
    Shutdown,
    /// The mode closed the port.
    PortClosed,
}

/// Controls a running [`Tunnel`] from other tasks. Dropping the last
/// handle stops the tunnel.
#[derive(Clone, Debug)]
pub struct TunnelHandle {
    shutdown: watch::Sender<bool>,
    status: mpsc::Sender<oneshot::Sender<Status>>,
    updates: mpsc::Sender<Update>,
}

/// Where a [`ChangeSet`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateSource {
    /// A config reload (SIGHUP): counted in [`Status::reload`].
    Reload,
    /// A lease source's renewal or netmap refresh ([`crate::leases`]).
    Leases,
}

/// A runtime change sent to the loop.
#[derive(Debug)]
enum Update {
    Apply {
        change: Box<ChangeSet>,
        source: UpdateSource,
        reply: oneshot::Sender<Result<Applied, ReloadError>>,
    },
    ReloadFailed(String),
}

impl TunnelHandle {
    /// Apply `change` between two packets, whole or not at all
    /// ([`reload::apply`]).
    pub async fn update(
        &self,
        change: ChangeSet,
        source: UpdateSource,
    ) -> Result<Applied, ReloadError> {
        let (reply, answer) = oneshot::channel();
        let update = Update::Apply {
            change: Box::new(change),
            source,
            reply,
        };
        self.updates
            .send(update)
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Record a reload refused before it reached the data plane (invalid
    /// config, restart-only key), for `status`.
    pub async fn reload_failed(&self, error: String) {
        let _ = self.updates.send(Update::ReloadFailed(error)).await;
    }

    /// Ask the loop to stop; [`Tunnel::run`] returns soon after.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// A snapshot of the node's counters and peers. `None` once the
    /// tunnel has stopped.
    pub async fn status(&self) -> Option<Status> {
        let (reply, answer) = oneshot::channel();
        self.status.send(reply).await.ok()?;
        answer.await.ok()
    }
}

/// The data plane: a node, its UDP socket and an inner-packet port. See
/// the module documentation.
#[derive(Debug)]
pub struct Tunnel<P> {
    node: Node,
    socket: BatchSocket,
    port: P,
    shutdown: watch::Receiver<bool>,
    status: mpsc::Receiver<oneshot::Sender<Status>>,
    updates: mpsc::Receiver<Update>,
    reload: ReloadStatus,
    counters: DataplaneCounters,
    /// Who may reach which application.
    access: AccessPolicy,
    /// Rate limit of the ICMPv6 errors the tunnel originates.
    icmp_limiter: IcmpLimiter,
    /// ICMPv6 errors being built.
    icmp: Vec<u8>,
    /// Longest inner packet carried (`None`: up to [`MAX_INNER_PACKET`]).
    mtu: Option<u16>,
    /// Where the keys of new SAs go (`dangerous-esp-keylog`).
    key_log: Option<KeyLog>,
    /// Received datagrams, decrypted in place.
    received: RecvBatch,
    /// Inner packets read from the port.
    inner: Vec<u8>,
    /// Datagrams to send, sealed in place, sent when the loop has handled
    /// its batch of input.
    transmits: TransmitQueue,
}

impl<P: InnerPort> Tunnel<P> {
    /// A tunnel over a bound socket, and the handle that controls it.
    /// Fails if the socket refuses the options batched I/O needs.
    pub fn new(node: Node, socket: UdpSocket, port: P) -> io::Result<(Self, TunnelHandle)> {
        let socket = BatchSocket::new(socket)?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (status_tx, status) = mpsc::channel(STATUS_QUEUE);
        let (updates_tx, updates) = mpsc::channel(STATUS_QUEUE);
        let tunnel = Tunnel {
            node,
            socket,
            port,
            shutdown,
            status,
            updates,
            reload: ReloadStatus::default(),
            counters: DataplaneCounters::default(),
            access: AccessPolicy::allow_all(),
            icmp_limiter: IcmpLimiter::default(),
            icmp: vec![0; icmp::MIN_MTU],
            mtu: None,
            key_log: None,
            received: RecvBatch::new(),
            inner: vec![0; MAX_INNER_PACKET],
            transmits: TransmitQueue::new(SEND_BATCH, SEND_QUEUE_BYTES),
        };
        let handle = TunnelHandle {
            shutdown: shutdown_tx,
            status: status_tx,
            updates: updates_tx,
        };
        Ok((tunnel, handle))
    }

    /// [`Tunnel::new`] with a socket bound to `listen` (the config's
    /// `listen`).
    pub async fn bind(node: Node, listen: SocketAddr, port: P) -> io::Result<(Self, TunnelHandle)> {
        let socket = UdpSocket::bind(listen).await?;
        Tunnel::new(node, socket, port)
    }

    /// The tunnel with `policy` checked on every decrypted packet (server
    /// role). Without it the tunnel delivers every packet.
    pub fn with_access_policy(mut self, policy: AccessPolicy) -> Self {
        self.access = policy;
        self
    }

    /// The tunnel with inner packets from the port limited to `mtu` bytes
    /// (the config's `mtu`): a longer one is dropped and answered with an
    /// ICMPv6 Packet Too Big carrying `mtu`. Without it the tunnel carries
    /// packets up to [`MAX_INNER_PACKET`].
    pub fn with_mtu(mut self, mtu: u16) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// The tunnel with the keys of every new SA written to `key_log`.
    /// Only for decrypting captures: the node must also have
    /// `dangerous_export_keys` set, or there is nothing to write.
    pub fn with_key_log(mut self, key_log: KeyLog) -> Self {
        self.key_log = Some(key_log);
        self
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The node, e.g. to read counters before or after running.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Drive the node until shutdown or until the port closes. Returns the
    /// node (the socket is closed) and why it stopped.
    pub async fn run(mut self) -> (Node, Stopped) {
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        let mut status_open = true;
        let mut updates_open = true;
        // Packets the node may have queued before the loop started (peers
        // with persistent keepalive, handshakes started by the caller).
        self.drain().await;
        self.flush().await;
        let stopped = loop {
            let deadline = self.node.poll_timeout();
            if deadline != armed {
                if let Some(at) = deadline {
                    timer.as_mut().reset(at.into());
                }
                armed = deadline;
            }
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break Stopped::Shutdown;
                    }
                }
                request = self.status.recv(), if status_open => match request {
                    Some(reply) => {
                        let _ = reply.send(self.snapshot());
                    }
                    None => status_open = false,
                },
                update = self.updates.recv(), if updates_open => match update {
                    Some(update) => self.on_update(update),
                    None => updates_open = false,
                },
                readable = self.socket.readable() => match readable {
                    Ok(()) => self.on_readable().await,
                    Err(error) => {
                        self.counters.recv_errors += 1;
                        debug!(%error, "UDP socket failed");
                    }
                },
                len = self.port.recv(&mut self.inner) => match len {
                    Some(len) => {
                        self.on_inner(len).await;
                        for _ in 0..INNER_BATCH {
                            let Some(len) = self.port.try_recv(&mut self.inner) else {
                                break;
                            };
                            self.on_inner(len).await;
                        }
                    }
                    None => break Stopped::PortClosed,
                },
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.node.handle_timeout(startup::now());
                }
            }
            self.drain().await;
            self.flush().await;
        };
        info!(?stopped, "data plane stopped");
        (self.node, stopped)
    }

    /// A snapshot of the counters and peers.
    pub fn snapshot(&self) -> Status {
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = self
            .node
            .peers()
            .map(|p| PeerStatus {
                id: p.id(),
                public_key: *p.public_key(),
                name: p.lease().lease().name.clone(),
                lease_prefix: p.lease().lease().prefix,
                lease: p.lease().lease().clone(),
                security_associations: p.security_associations(now),
                endpoint: p.endpoint(),
                stats: p.stats(),
                last_handshake: p.last_handshake(),
                handshake_in_flight: p.handshake_in_flight(),
                queued: p.queued(),
                persistent_keepalive: p.persistent_keepalive(),
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        Status {
            node: self.node.counters().clone(),
            dataplane: self.counters,
            peers,
            reload: self.reload.clone(),
            local_lease: LeaseSummary::of(self.node.local_lease()),
        }
    }

    /// Apply a runtime change, or record a reload that failed outside.
    fn on_update(&mut self, update: Update) {
        let (change, source, reply) = match update {
            Update::Apply {
                change,
                source,
                reply,
            } => (change, source, reply),
            Update::ReloadFailed(error) => {
                self.reload.record(Err(error));
                return;
            }
        };
        let result = reload::apply(&mut self.node, &mut self.access, *change, Instant::now());
        if source == UpdateSource::Reload {
            self.reload
                .record(result.as_ref().map(|_| ()).map_err(ToString::to_string));
        }
        let _ = reply.send(result);
    }

    /// Receive one batch of datagrams and handle each.
    async fn on_readable(&mut self) {
        // Taken out of `self` (no allocation) so each datagram can be
        // handled with `&mut self`.
        let mut received = std::mem::take(&mut self.received);
        match self.socket.try_recv(&mut received) {
            Ok(_) => {
                for (n, (src, datagram)) in received.datagrams().enumerate() {
                    self.on_datagram(datagram, src).await;
                    // One receive may bring thousands of datagrams (GRO):
                    // let the mode's tasks on this runtime take what was
                    // delivered before its queue overflows.
                    if (n + 1) % DELIVER_BATCH == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => {
                self.counters.recv_errors += 1;
                debug!(%error, "UDP receive failed");
            }
        }
        self.received = received;
    }

    async fn on_datagram(&mut self, datagram: &mut [u8], src: SocketAddr) {
        self.counters.datagrams_received += 1;
        let now = startup::now();
        match self.node.handle_datagram(now, src, datagram) {
            Received::Packet { peer, packet } => {
                // The core checked the inner source against the peer's
                // lease: the lease is the packet's identity.
                let verdict = match (ipv6_destination(packet), self.node.peer(peer)) {
                    (Some(destination), Some(p)) => {
                        self.access.allows(&destination, p.lease().lease())
                    }
                    _ => Verdict::Allowed,
                };
                if let Verdict::Prohibited { application } = verdict {
                    self.counters.prohibited += 1;
                    trace!(
                        peer = peer.0,
                        application,
                        "packet prohibited by the access policy"
                    );
                    if !self.icmp_limiter.allow(now.instant) {
                        self.counters.icmp_suppressed += 1;
                        return;
                    }
                    let len = match icmp::prohibited(packet, &mut self.icmp) {
                        Ok(len) => len,
                        Err(reason) => {
                            self.counters.icmp_suppressed += 1;
                            trace!(reason = reason.as_str(), "prohibited packet not answered");
                            return;
                        }
                    };
                    self.make_room(esp::encapsulated_len(len)).await;
                    let Some(error) = self.icmp.get(..len) else {
                        return;
                    };
                    match self
                        .node
                        .encapsulate(now, peer, error, self.transmits.free_space())
                    {
                        Outgoing::Send {
                            destination,
                            datagram,
                        } => {
                            self.counters.icmp_sent += 1;
                            let len = datagram.len();
                            self.queued(len, destination);
                        }
                        Outgoing::Queued => self.counters.icmp_sent += 1,
                        Outgoing::Dropped(reason) => {
                            trace!(peer = peer.0, %reason, "ICMPv6 error dropped");
                        }
                    }
                    return;
                }
                if let Err(error) = self.port.deliver(packet) {
                    self.counters.deliver_errors += 1;
                    trace!(%error, "decrypted packet dropped by the port");
                }
            }
            Received::Dropped(reason) => trace!(%src, %reason, "datagram dropped"),
            Received::Control | Received::Keepalive { .. } => {}
        }
    }

    async fn on_inner(&mut self, len: usize) {
        self.make_room(esp::encapsulated_len(len)).await;
        let Some(packet) = self.inner.get(..len) else {
            return;
        };
        let Some(destination) = ipv6_destination(packet) else {
            self.counters.malformed_inner += 1;
            return;
        };
        let Some(peer) = self.node.route(&destination) else {
            self.counters.no_route += 1;
            trace!(%destination, "no peer routes this destination");
            self.answer_inner(len, InnerRefusal::NoRoute);
            return;
        };
        if let Some(mtu) = self.mtu.filter(|&mtu| len > usize::from(mtu)) {
            self.counters.too_big += 1;
            trace!(%destination, len, mtu, "inner packet exceeds the tunnel MTU");
            self.answer_inner(len, InnerRefusal::TooBig { mtu });
            return;
        }
        match self
            .node
            .encapsulate(startup::now(), peer, packet, self.transmits.free_space())
        {
            Outgoing::Send {
                destination,
                datagram,
            } => {
                let len = datagram.len();
                self.queued(len, destination);
            }
            Outgoing::Queued => {}
            Outgoing::Dropped(reason) => trace!(peer = peer.0, %reason, "inner packet dropped"),
        }
    }

    /// Answer the refused inner packet `self.inner[..len]` with an ICMPv6
    /// error back into the port, from this node's address, within the
    /// ICMPv6 rate limit.
    fn answer_inner(&mut self, len: usize, refusal: InnerRefusal) {
        let Some(packet) = self.inner.get(..len) else {
            return;
        };
        if !self.icmp_limiter.allow(Instant::now()) {
            self.counters.icmp_suppressed += 1;
            return;
        }
        let source = node_address(&self.node);
        let built = match refusal {
            InnerRefusal::NoRoute => icmp::no_route(packet, source, &mut self.icmp),
            InnerRefusal::TooBig { mtu } => {
                icmp::packet_too_big(packet, source, u32::from(mtu), &mut self.icmp)
            }
        };
        let error = match built {
            Ok(error_len) => self.icmp.get(..error_len).unwrap_or_default(),
            Err(reason) => {
                self.counters.icmp_suppressed += 1;
                trace!(
                    reason = reason.as_str(),
                    "refused inner packet not answered"
                );
                return;
            }
        };
        match self.port.deliver(error) {
            Ok(()) => self.counters.icmp_sent += 1,
            Err(error) => {
                self.counters.icmp_suppressed += 1;
                trace!(%error, "ICMPv6 error dropped by the port");
            }
        }
    }

    /// Queue what the node wants sent and log its events.
    async fn drain(&mut self) {
        while let Some(transmit) = self.node.poll_transmit() {
            self.make_room(transmit.contents.len()).await;
            if !self
                .transmits
                .push(&transmit.contents, transmit.destination)
            {
                // Larger than the whole queue: the node never builds one.
                self.counters.send_errors += 1;
                debug!(len = transmit.contents.len(), "datagram too large to send");
            }
        }
        while let Some(event) = self.node.poll_event() {
            log_event(&event);
            if let Event::SaKeys(keys) = &event {
                self.write_key_log(keys);
            }
        }
    }

    /// Append an SA's keys to the key log, if there is one. A failure is
    /// logged and counted; the tunnel runs on.
    fn write_key_log(&mut self, keys: &SaKeyLog) {
        let Some(key_log) = &mut self.key_log else {
            return;
        };
        let remote = self.node.peer(keys.peer).and_then(|p| p.endpoint());
        let written = match self.socket.local_addr() {
            Ok(local) => key_log
                .write(keys, local, remote)
                .map_err(|e| e.to_string()),
            Err(error) => Err(format!("reading the UDP socket address: {error}")),
        };
        if let Err(error) = written {
            self.counters.keylog_errors += 1;
            warn!(
                peer = keys.peer.0,
                inbound_spi = keys.inbound_spi,
                outbound_spi = keys.outbound_spi,
                %error,
                "SA keys not written to the key log"
            );
        }
    }
}

impl<P: InnerPort> Tunnel<P> {
    /// Send every queued datagram; the queue is empty afterwards.
    async fn flush(&mut self) {
        if self.transmits.is_empty() {
            return;
        }
        let sent = self.socket.send(&mut self.transmits).await;
        self.counters.datagrams_sent += sent.datagrams;
        self.counters.send_errors += sent.failed;
    }

    /// Queue the datagram of `len` bytes just sealed into the send queue's
    /// free space. [`Tunnel::make_room`] made room for it, so this cannot
    /// fail; if it did, the datagram would be counted as a send error.
    fn queued(&mut self, len: usize, destination: SocketAddr) {
        if !self.transmits.commit(len, destination) {
            self.counters.send_errors += 1;
        }
    }

    /// Make room in the send queue for a datagram of `len` bytes, sending
    /// what it holds if it is full.
    async fn make_room(&mut self, len: usize) {
        if !self.transmits.has_room(len) {
            self.flush().await;
        }
    }
}

/// Why an inner packet from the port is not carried.
#[derive(Clone, Copy, Debug)]
enum InnerRefusal {
    /// No peer's lease covers its destination.
    NoRoute,
    /// It is longer than the tunnel MTU.
    TooBig { mtu: u16 },
}

/// This node's own address, the source of the ICMPv6 errors it originates
/// (RFC 4443 §2.2): a user's or application's /128, or a system's `::1`
/// of its system virtual network.
fn node_address(node: &Node) -> Ipv6Addr {
    node.local_lease().lease().address()
}

/// The destination address of an IPv6 packet, if it is one.
fn ipv6_destination(packet: &[u8]) -> Option<Ipv6Addr> {
    let header = packet.get(..IPV6_HEADER_LEN)?;
    if header.first()? >> 4 != 6 {
        return None;
    }
    let dst: [u8; 16] = header.get(24..40)?.try_into().ok()?;
    Some(Ipv6Addr::from(dst))
}

fn log_event(event: &Event) {
    match event {
        Event::HandshakeCompleted { peer, initiator } => {
            info!(peer = peer.0, initiator, "handshake completed");
        }
        Event::PeerLearned { peer } => info!(peer = peer.0, "peer learned from its lease"),
        Event::PeerReplaced { old, new } => {
            info!(old = old.0, new = new.0, "peer replaced by a newer lease");
        }
        Event::EndpointChanged { peer, from, to } => {
            info!(peer = peer.0, ?from, %to, "peer endpoint changed");
        }
        Event::HandshakeTimedOut {
            peer,
            dropped_packets,
        } => warn!(peer = peer.0, dropped_packets, "handshake given up"),
        Event::LeaseExpired { peer } => warn!(peer = peer.0, "peer lease expired"),
        // The key log gets the keys (Tunnel::write_key_log); never log them.
        Event::SaKeys(keys) => debug!(
            peer = keys.peer.0,
            inbound_spi = keys.inbound_spi,
            outbound_spi = keys.outbound_spi,
            "new SA keys exported"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_destination_reads_only_ipv6_headers() {
        let mut packet = vec![0u8; 48];
        packet[0] = 0x60;
        packet[24..40].copy_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            ipv6_destination(&packet),
            Some("2001:db8::7".parse().unwrap())
        );
        for n in 0..IPV6_HEADER_LEN {
            assert_eq!(ipv6_destination(&packet[..n]), None, "truncated to {n}");
        }
        packet[0] = 0x45;
        assert_eq!(ipv6_destination(&packet), None);
    }
}
