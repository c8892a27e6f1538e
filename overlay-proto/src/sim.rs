//! A deterministic network for driving nodes without sockets or clocks.
//!
//! [`Simulation`] holds a few [`Node`]s, each at a UDP address, a fake clock
//! and an in-memory network that loses, duplicates, delays and reorders
//! datagrams with a seeded RNG, so every run with the same seed is the same
//! run. Hosts can be moved to a new address at any moment (a NAT rebinding,
//! or a terminal roaming to another carrier): datagrams still addressed to
//! the old address are lost, like on a real NAT.
//!
//! It drives nodes exactly as a daemon does: datagrams in through
//! [`Node::handle_datagram`], timers through [`Node::poll_timeout`] and
//! [`Node::handle_timeout`], datagrams out through [`Node::poll_transmit`].
//! The protocol tests and the `sim` example use it; it is public so the
//! daemons' own tests can use it too.
//!
//! Other sans-IO state machines (the authority client and server, wrapped
//! with a test's logic) join the same network as [`Endpoint`]s.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::handshake::StaticKeypair;
use crate::lease::{EntityKind, Lease, LeaseAuthority, SignedLease};
use crate::node::{Event, Node, Outgoing, Received, Transmit};
use crate::session::PeerId;
use crate::time::{Now, UnixTime};
use crate::wire::{self, DatagramKind, MessageType};

/// How the simulated network treats each datagram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConditions {
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a datagram is held back by `reorder_delay`, so later
    /// ones overtake it.
    pub reorder: f64,
    /// One-way delay.
    pub delay: Duration,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
}

impl LinkConditions {
    /// A perfect link with 5 ms one-way delay.
    pub const PERFECT: LinkConditions = LinkConditions {
        loss: 0.0,
        duplicate: 0.0,
        reorder: 0.0,
        delay: Duration::from_millis(5),
        reorder_delay: Duration::from_millis(15),
    };
}

impl Default for LinkConditions {
    fn default() -> Self {
        LinkConditions::PERFECT
    }
}

/// Index of a host in a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// An inner packet a host's node delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The peer it came from.
    pub peer: PeerId,
    /// The inner packet.
    pub packet: Vec<u8>,
}

/// A node at an address.
#[derive(Debug)]
pub struct Host {
    /// Name used in traces.
    pub name: String,
    /// The node.
    pub node: Node,
    /// The address other hosts see this host at.
    pub address: SocketAddr,
    /// Inner packets delivered, in order.
    pub inbox: Vec<Delivered>,
    /// Events the node reported, in order.
    pub events: Vec<Event>,
}

/// A sans-IO state machine other than a [`Node`] on the simulated network,
/// driven the same way: datagrams in, transmits out, timers.
pub trait Endpoint: Any + fmt::Debug {
    /// A datagram arrived from `src`.
    fn handle_datagram(&mut self, now: Now, src: SocketAddr, datagram: &mut [u8]);
    /// The next datagram to send.
    fn poll_transmit(&mut self) -> Option<Transmit>;
    /// When [`handle_timeout`](Self::handle_timeout) is due.
    fn poll_timeout(&self) -> Option<Instant>;
    /// A timer fired.
    fn handle_timeout(&mut self, now: Now);
    /// For [`Simulation::with_endpoint`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Index of an [`Endpoint`] in a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub usize);

#[derive(Debug)]
struct EndpointHost {
    name: String,
    address: SocketAddr,
    endpoint: Box<dyn Endpoint>,
}

/// What the network did, in total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Lost on the way.
    pub lost: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back and overtaken.
    pub reordered: u64,
    /// Arrived at a host (duplicates counted).
    pub delivered: u64,
    /// Arrived at an address no host has (any more).
    pub unroutable: u64,
}

/// One line of a readable trace.
#[derive(Clone, Debug)]
pub struct TraceLine {
    /// Simulated time since the start.
    pub at: Duration,
    /// What happened.
    pub what: String,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:>9.3}s] {}", self.at.as_secs_f64(), self.what)
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    arrival: Instant,
    order: u64,
    from: SocketAddr,
    to: SocketAddr,
    tag: Option<u64>,
    bytes: Vec<u8>,
}

/// A deterministic network of nodes. See the module documentation.
#[derive(Debug)]
pub struct Simulation {
    start: Instant,
    now: Now,
    rng: ChaCha20Rng,
    hosts: Vec<Host>,
    endpoints: Vec<EndpointHost>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    /// Conditions applied to every datagram sent from now on.
    pub link: LinkConditions,
    /// What the network did.
    pub stats: NetworkStats,
    /// Tags of datagrams the network delivered at least once, by receiver.
    pub delivered_tags: HashSet<(HostId, u64)>,
    /// Every datagram sent, with sender address and destination, when
    /// capturing is on (for replay tests).
    pub capture: Option<Vec<(SocketAddr, SocketAddr, Vec<u8>)>>,
    /// The trace, when tracing is on.
    pub trace: Option<Vec<TraceLine>>,
    buffer: Vec<u8>,
}

impl Simulation {
    /// An empty network at wall-clock time `unix`, randomness from `seed`.
    pub fn new(seed: u64, unix: UnixTime, link: LinkConditions) -> Self {
        let start = Instant::now();
        Simulation {
            start,
            now: Now {
                instant: start,
                unix,
            },
            rng: ChaCha20Rng::seed_from_u64(seed),
            hosts: Vec::new(),
            endpoints: Vec::new(),
            in_flight: BinaryHeap::new(),
            order: 0,
            link,
            stats: NetworkStats::default(),
            delivered_tags: HashSet::new(),
            capture: None,
            trace: None,
            buffer: vec![0u8; 70_000],
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Now {
        self.now
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now.instant - self.start
    }

    /// 32 bytes from the simulation's RNG (seed for a node).
    pub fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    /// Put a node on the network at `address`.
    pub fn add_host(&mut self, name: &str, node: Node, address: SocketAddr) -> HostId {
        self.hosts.push(Host {
            name: name.to_owned(),
            node,
            address,
            inbox: Vec::new(),
            events: Vec::new(),
        });
        HostId(self.hosts.len() - 1)
    }

    /// Put an [`Endpoint`] on the network at `address`.
    pub fn add_endpoint(
        &mut self,
        name: &str,
        endpoint: Box<dyn Endpoint>,
        address: SocketAddr,
    ) -> EndpointId {
        self.endpoints.push(EndpointHost {
            name: name.to_owned(),
            address,
            endpoint,
        });
        EndpointId(self.endpoints.len() - 1)
    }

    /// Runs `f` on endpoint `id` (which must be a `T`) at the current time,
    /// then puts what it wants to send on the network. `None` if the
    /// endpoint is not a `T`.
    pub fn with_endpoint<T: Endpoint, R>(
        &mut self,
        id: EndpointId,
        f: impl FnOnce(&mut T, Now) -> R,
    ) -> Option<R> {
        let now = self.now;
        let endpoint = self.endpoints.get_mut(id.0)?;
        let result = endpoint
            .endpoint
            .as_any_mut()
            .downcast_mut::<T>()
            .map(|e| f(e, now));
        self.drain_endpoint(id.0);
        result
    }

    /// A host.
    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.0]
    }

    /// A host, mutably.
    pub fn host_mut(&mut self, id: HostId) -> &mut Host {
        &mut self.hosts[id.0]
    }

    /// Move a host to a new address (NAT rebinding, roaming).
    pub fn rebind(&mut self, id: HostId, address: SocketAddr) {
        let old = std::mem::replace(&mut self.hosts[id.0].address, address);
        let name = self.hosts[id.0].name.clone();
        self.log(format!("{name}: moved from {old} to {address}"));
    }

    /// Send an inner packet from `host` to its `peer`.
    pub fn send(&mut self, host: HostId, peer: PeerId, inner: &[u8]) -> SendOutcome {
        self.send_tagged(host, peer, inner, None)
    }

    /// Send an inner packet and remember `tag` with its datagram, so a test
    /// can tell which packets the network delivered.
    pub fn send_tagged(
        &mut self,
        host: HostId,
        peer: PeerId,
        inner: &[u8],
        tag: Option<u64>,
    ) -> SendOutcome {
        let now = self.now;
        let mut buffer = std::mem::take(&mut self.buffer);
        let from = self.hosts[host.0].address;
        let outcome = match self.hosts[host.0]
            .node
            .encapsulate(now, peer, inner, &mut buffer)
        {
            Outgoing::Send {
                destination,
                datagram,
            } => {
                let bytes = datagram.to_vec();
                self.transmit(from, destination, bytes, tag);
                SendOutcome::Sent
            }
            Outgoing::Queued => SendOutcome::Queued,
            Outgoing::Dropped(reason) => SendOutcome::Dropped(reason),
        };
        self.buffer = buffer;
        self.drain(host);
        outcome
    }

    /// Inject raw bytes as if `from` had sent them to `to`.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.transmit(from, to, bytes, None);
    }

    /// Run until simulated time reaches `deadline`.
    pub fn run_until(&mut self, deadline: Instant) {
        while self.step(deadline) {}
        if self.now.instant < deadline {
            self.now = self.now.advanced(deadline - self.now.instant);
        }
    }

    /// Run for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now.instant + d;
        self.run_until(deadline);
    }

    /// Run until `done` holds or `limit` of simulated time has passed.
    /// Returns whether `done` held.
    pub fn run_until_condition(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Simulation) -> bool,
    ) -> bool {
        let deadline = self.now.instant + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(deadline) {
                if self.now.instant < deadline {
                    self.now = self.now.advanced(deadline - self.now.instant);
                }
                return done(self);
            }
        }
    }

    /// Process the next event before `deadline`. False when there is none.
    fn step(&mut self, deadline: Instant) -> bool {
        let next_arrival = self.in_flight.peek().map(|Reverse(d)| d.arrival);
        let next_timer = self
            .hosts
            .iter()
            .filter_map(|h| h.node.poll_timeout())
            .chain(
                self.endpoints
                    .iter()
                    .filter_map(|e| e.endpoint.poll_timeout()),
            )
            .min();
        let next = match (next_arrival, next_timer) {
            (Some(a), Some(t)) => a.min(t),
            (Some(a), None) => a,
            (None, Some(t)) => t,
            (None, None) => return false,
        };
        if next > deadline {
            return false;
        }
        if next > self.now.instant {
            self.now = self.now.advanced(next - self.now.instant);
        }
        if next_arrival == Some(next) {
            if let Some(Reverse(datagram)) = self.in_flight.pop() {
                self.deliver(datagram);
            }
        } else {
            let now = self.now;
            for i in 0..self.hosts.len() {
                if self.hosts[i]
                    .node
                    .poll_timeout()
                    .is_some_and(|t| t <= now.instant)
                {
                    self.hosts[i].node.handle_timeout(now);
                    self.drain(HostId(i));
                }
            }
            for i in 0..self.endpoints.len() {
                if self.endpoints[i]
                    .endpoint
                    .poll_timeout()
                    .is_some_and(|t| t <= now.instant)
                {
                    self.endpoints[i].endpoint.handle_timeout(now);
                    self.drain_endpoint(i);
                }
            }
        }
        true
    }

    fn deliver(&mut self, mut datagram: InFlight) {
        let Some(i) = self.hosts.iter().position(|h| h.address == datagram.to) else {
            if let Some(e) = self.endpoints.iter().position(|e| e.address == datagram.to) {
                self.stats.delivered += 1;
                let now = self.now;
                self.endpoints[e]
                    .endpoint
                    .handle_datagram(now, datagram.from, &mut datagram.bytes);
                self.drain_endpoint(e);
                return;
            }
            self.stats.unroutable += 1;
            return;
        };
        self.stats.delivered += 1;
        if let Some(tag) = datagram.tag {
            self.delivered_tags.insert((HostId(i), tag));
        }
        let now = self.now;
        let host = &mut self.hosts[i];
        let received = host
            .node
            .handle_datagram(now, datagram.from, &mut datagram.bytes);
        let note = match received {
            Received::Packet { peer, packet } => {
                host.inbox.push(Delivered {
                    peer,
                    packet: packet.to_vec(),
                });
                None
            }
            Received::Dropped(reason) => Some(format!(
                "{}: dropped datagram from {}: {reason}",
                host.name, datagram.from
            )),
            Received::Control | Received::Keepalive { .. } => None,
        };
        if let Some(note) = note {
            self.log(note);
        }
        self.drain(HostId(i));
    }

    /// Move a host's transmits onto the network and its events into its log.
    fn drain(&mut self, id: HostId) {
        let from = self.hosts[id.0].address;
        while let Some(t) = self.hosts[id.0].node.poll_transmit() {
            self.transmit(from, t.destination, t.contents, None);
        }
        while let Some(event) = self.hosts[id.0].node.poll_event() {
            let name = &self.hosts[id.0].name;
            let line = format!("{name}: {}", describe_event(&event));
            self.hosts[id.0].events.push(event);
            self.log(line);
        }
    }

    fn drain_endpoint(&mut self, i: usize) {
        let from = self.endpoints[i].address;
        while let Some(t) = self.endpoints[i].endpoint.poll_transmit() {
            self.transmit(from, t.destination, t.contents, None);
        }
    }

    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>, tag: Option<u64>) {
        self.stats.sent += 1;
        if self.trace.is_some() {
            let sender = self.name_of(from);
            let receiver = self.name_of(to);
            let line = format!(
                "{sender} -> {receiver}: {} ({} bytes)",
                describe_datagram(&bytes),
                bytes.len()
            );
            self.log(line);
        }
        if let Some(capture) = self.capture.as_mut() {
            capture.push((from, to, bytes.clone()));
        }
        if self.chance(self.link.loss) {
            self.stats.lost += 1;
            self.log("   ...lost".to_owned());
            return;
        }
        let copies = if self.chance(self.link.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for copy in 0..copies {
            let mut delay = self.link.delay + Duration::from_micros(copy * 700);
            if self.chance(self.link.reorder) {
                self.stats.reordered += 1;
                delay += self.link.reorder_delay;
            }
            self.order += 1;
            self.in_flight.push(Reverse(InFlight {
                arrival: self.now.instant + delay,
                order: self.order,
                from,
                to,
                tag,
                bytes: bytes.clone(),
            }));
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn name_of(&self, address: SocketAddr) -> String {
        self.hosts
            .iter()
            .map(|h| (h.address, &h.name))
            .chain(self.endpoints.iter().map(|e| (e.address, &e.name)))
            .find(|(a, _)| *a == address)
            .map_or_else(|| address.to_string(), |(_, name)| name.clone())
    }

    fn log(&mut self, what: String) {
        let at = self.elapsed();
        if let Some(trace) = self.trace.as_mut() {
            trace.push(TraceLine { at, what });
        }
    }
}

/// What [`Simulation::send`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Encapsulated and on the network.
    Sent,
    /// Waiting for a handshake.
    Queued,
    /// Refused.
    Dropped(crate::counters::DropReason),
}

fn describe_datagram(bytes: &[u8]) -> String {
    match wire::classify(bytes) {
        Ok(DatagramKind::Keepalive) => "NAT keepalive".to_owned(),
        Ok(DatagramKind::Esp { spi }) => format!("ESP spi={spi:#010x}"),
        Ok(DatagramKind::Control) => {
            match wire::ControlPacket::new_checked(bytes).map(|p| p.message_type()) {
                Ok(MessageType::HandshakeInitiation) => "handshake initiation".to_owned(),
                Ok(MessageType::HandshakeResponse) => "handshake response".to_owned(),
                Ok(MessageType::CookieReply) => "cookie reply".to_owned(),
                Ok(MessageType::AuthorityInitiation) => "authority initiation".to_owned(),
                Ok(MessageType::AuthorityResponse) => "authority response".to_owned(),
                Ok(MessageType::AuthorityCookieReply) => "authority cookie reply".to_owned(),
                Ok(MessageType::AuthorityData) => "authority data".to_owned(),
                Err(_) => "malformed control packet".to_owned(),
            }
        }
        Err(_) => "malformed datagram".to_owned(),
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::HandshakeCompleted { peer, initiator } => format!(
            "handshake with peer {} completed as {}",
            peer.0,
            if *initiator { "initiator" } else { "responder" }
        ),
        Event::PeerLearned { peer } => format!("learned peer {} from its lease", peer.0),
        Event::PeerReplaced { old, new } => format!("peer {} replaced by peer {}", old.0, new.0),
        Event::EndpointChanged { peer, from, to } => match from {
            Some(from) => format!("peer {} moved from {from} to {to}", peer.0),
            None => format!("peer {} is at {to}", peer.0),
        },
        Event::HandshakeTimedOut {
            peer,
            dropped_packets,
        } => format!(
            "handshake with peer {} given up, {dropped_packets} packets dropped",
            peer.0
        ),
        Event::LeaseExpired { peer } => format!("lease of peer {} expired", peer.0),
        Event::SaKeys(k) => format!(
            "new SA with peer {}: in {:#010x}, out {:#010x}",
            k.peer.0, k.inbound_spi, k.outbound_spi
        ),
    }
}

/// What a test entity's lease says.
#[derive(Clone, Debug)]
pub struct IdentitySpec<'a> {
    /// Short name.
    pub name: &'a str,
    /// User, application or system.
    pub kind: EntityKind,
    /// Its address (/128) or system virtual network (/64).
    pub prefix: Ipv6Net,
    /// Group memberships.
    pub groups: &'a [&'a str],
    /// Start of validity.
    pub valid_from: UnixTime,
    /// How long the lease is valid.
    pub lifetime: Duration,
    /// Lease serial.
    pub serial: u64,
}

/// Issue a key pair (from `seed`) and a signed lease for a test entity.
pub fn issue_identity(
    authority: &LeaseAuthority,
    seed: [u8; 32],
    spec: &IdentitySpec<'_>,
) -> (StaticKeypair, SignedLease) {
    let keypair = StaticKeypair::from_private(seed);
    let lease = Lease {
        kind: spec.kind,
        serial: spec.serial,
        not_before: spec.valid_from,
        not_after: spec.valid_from.saturating_add(spec.lifetime),
        public_key: keypair.public().0,
        prefix: spec.prefix,
        name: spec.name.to_owned(),
        dn: format!("uid={},ou=people,dc=example,dc=org", spec.name),
        groups: spec.groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    #[allow(clippy::expect_used)]
    let signed = authority.sign(&lease).expect("test lease is well-formed");
    (keypair, signed)
}

/// Build an inner IPv6 packet (UDP, no checksum checks here) from `src` to
/// `dst` carrying `payload`.
pub fn ipv6_packet(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut p = Vec::with_capacity(40 + udp_len);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.push(17);
    p.push(64);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39]);
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}
