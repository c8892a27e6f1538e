//! Userspace mode: a smoltcp IPv6/TCP stack on the tunnel's inner-packet
//! port, for nodes without a TUN device (DESIGN §10).
//!
//! A [`UserspaceStack`] owns a smoltcp [`Interface`] (medium IP) whose
//! device is the mode's end of a [`ChannelPort`](crate::dataplane::ChannelPort):
//! decrypted packets from `inbound` are its receive queue, the packets it
//! sends go to `outbound`. One task runs [`UserspaceStack::run`], which polls
//! the interface whenever a packet arrives, a stream asks for it or
//! smoltcp's own timer expires. Other tasks reach the stack through a
//! [`StackHandle`]:
//! - [`StackHandle::connect`] opens a TCP connection into the overlay and
//!   returns an [`OverlayStream`] (tokio `AsyncRead + AsyncWrite`);
//! - [`StackHandle::listen`] accepts TCP connections on an address of this
//!   node's prefix ([`OverlayListener`]);
//! - [`StackHandle::bind_udp`] binds a UDP socket ([`OverlayUdpSocket`]) on
//!   an address of the prefix.
//!
//! On top of those, the two roles: [`serve_socks`] is the client's SOCKS5
//! proxy (RFC 1928, CONNECT only) and [`serve_application`] forwards each
//! connection to an application's address to its local backend, after a
//! PROXY protocol v2 header ([`proxy_v2_header`]) that names the overlay
//! source and destination; [`serve_application_udp`] does the same for UDP
//! flows, one PROXY header per datagram.
//!
//! Every byte a stream carries sits in one of the socket's bounded smoltcp
//! buffers ([`TCP_BUFFER`] each way) or in the fixed buffers of a copy, so
//! a slow side stalls the other instead of growing a queue. UDP sockets
//! have bounded packet buffers ([`UDP_BUFFER`]): a datagram that does not
//! fit is dropped and counted, as UDP allows. The stack state
//! is behind one `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use ipnet::Ipv6Net;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, trace};

use crate::dataplane::PortChannels;

/// Receive and send buffer of every TCP socket, each way.
pub const TCP_BUFFER: usize = 256 * 1024;

/// Payload bytes of each UDP socket's receive and send buffer.
pub const UDP_BUFFER: usize = 64 * 1024;

/// Datagrams each UDP socket's receive and send buffer holds (enough
/// that the byte budget, [`UDP_BUFFER`], is the limit in practice).
pub const UDP_BUFFER_PACKETS: usize = 256;

/// How long a UDP flow of [`serve_application_udp`] lives without a
/// datagram either way.
pub const UDP_FLOW_IDLE: Duration = Duration::from_secs(60);

/// UDP flows [`serve_application_udp`] keeps per application port; the
/// least recently active is evicted for a new one.
pub const UDP_FLOWS: usize = 1024;

/// Length of an IPv6 header plus a UDP header.
const UDP6_OVERHEAD: usize = 40 + 8;

/// Packets the stack queues for `outbound` before it stops sending.
const TX_QUEUE: usize = 64;

/// Inbound packets taken from the channel per poll.
const RX_BATCH: usize = 64;

/// Listening sockets kept per [`OverlayListener`], and accepted
/// connections waiting for [`OverlayListener::accept`].
const BACKLOG: usize = 4;

/// Buffer of each direction of a proxied connection.
const COPY_BUFFER: usize = 64 * 1024;

/// How long a SOCKS5 client may take to send its greeting and request.
const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// First port of the ephemeral range (RFC 6335).
const EPHEMERAL_FIRST: u16 = 49_152;

/// The PROXY protocol v2 signature.
const PROXY_V2_SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Length of a PROXY v2 header for TCP or UDP over IPv6.
pub const PROXY_V2_IPV6_LEN: usize = 16 + 36;

/// The transport a PROXY v2 header names (its family-protocol byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyTransport {
    /// TCP over IPv6 (`AF_INET6`, `STREAM`: 0x21).
    Stream,
    /// UDP over IPv6 (`AF_INET6`, `DGRAM`: 0x22).
    Dgram,
}

/// What a [`UserspaceStack`] needs to know about its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// This node's permanent address: the source of its connections.
    pub address: Ipv6Addr,
    /// The addresses this node answers for (its lease prefix; contains
    /// `address` and its applications' addresses).
    pub prefix: Ipv6Net,
    /// The overlay (inner) MTU.
    pub mtu: u16,
    /// How long [`StackHandle::connect`] waits for the peer's SYN-ACK.
    pub connect_timeout: Duration,
}

impl StackConfig {
    /// A configuration with the default MTU and a 10 s connect timeout.
    pub fn new(address: Ipv6Addr, prefix: Ipv6Net) -> StackConfig {
        StackConfig {
            address,
            prefix,
            mtu: crate::config::DEFAULT_MTU,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a connection into the overlay failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The peer answered with a reset: nothing listens there.
    #[error("connection refused")]
    Refused,
    /// No answer within the connect timeout (no peer routes the address,
    /// or the peer is down).
    #[error("connection timed out")]
    TimedOut,
    /// smoltcp refused the destination (unspecified or multicast address,
    /// port 0).
    #[error("destination not addressable")]
    Unaddressable,
    /// Every ephemeral port is in use.
    #[error("no free local port")]
    NoPort,
    /// The stack has stopped.
    #[error("userspace stack stopped")]
    Stopped,
}

impl ConnectError {
    /// A stable snake_case label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectError::Refused => "refused",
            ConnectError::TimedOut => "timed_out",
            ConnectError::Unaddressable => "unaddressable",
            ConnectError::NoPort => "no_port",
            ConnectError::Stopped => "stopped",
        }
    }
}

/// What the stack counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCounters {
    /// Inbound packets whose destination is outside the prefix, or that
    /// are not IPv6 (dropped).
    pub foreign_inbound: u64,
    /// Connections accepted on listeners.
    pub accepted: u64,
    /// Connections reset because the listener's queue was full.
    pub accept_overflow: u64,
    /// Connections opened with [`StackHandle::connect`].
    pub connected: u64,
    /// Inbound UDP datagrams to a port no UDP socket is bound to (smoltcp
    /// drops them and answers port unreachable).
    pub udp_no_socket: u64,
    /// Inbound UDP datagrams dropped because the socket's receive buffer
    /// was full.
    pub udp_rx_full: u64,
    /// UDP datagrams dropped by [`OverlayUdpSocket::send_to`] because the
    /// socket's send buffer was full.
    pub udp_tx_full: u64,
    /// UDP flows [`serve_application_udp`] evicted to make room.
    pub udp_flows_evicted: u64,
    /// UDP flows [`serve_application_udp`] ended after [`UDP_FLOW_IDLE`].
    pub udp_flows_expired: u64,
}

/// The userspace TCP/IP stack. See the module documentation.
#[derive(Debug)]
pub struct UserspaceStack {
    shared: Arc<Shared>,
    channels: PortChannels,
}

/// A cheap, clonable way to use a running [`UserspaceStack`].
#[derive(Clone, Debug)]
pub struct StackHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the stack task: a stream moved data or changed state.
    poll: Notify,
    stopped: AtomicBool,
    config: StackConfig,
}

struct State {
    iface: Interface,
    device: ChannelDevice,
    sockets: SocketSet<'static>,
    clock: std::time::Instant,
    listeners: Vec<ListenerEntry>,
    /// Sockets whose stream was dropped: removed once closed.
    released: Vec<SocketHandle>,
    next_port: u16,
    counters: StackCounters,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("listeners", &self.listeners.len())
            .field("released", &self.released.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

struct ListenerEntry {
    endpoint: SocketAddrV6,
    listening: Vec<SocketHandle>,
    accepted: mpsc::Sender<SocketHandle>,
}

impl UserspaceStack {
    /// A stack on the mode's ends of a channel port, and its handle.
    pub fn new(config: StackConfig, channels: PortChannels) -> (UserspaceStack, StackHandle) {
        let mut device = ChannelDevice {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu: usize::from(config.mtu),
        };
        let clock = std::time::Instant::now();
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ip);
        iface_config.random_seed = rand::random();
        let mut iface = Interface::new(iface_config, &mut device, smoltcp_now(clock));
        iface.update_ip_addrs(|addrs| {
            // Capacity is at least one address; the vector starts empty.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(config.address), 128));
        });
        // Accept every address of the prefix (applications' addresses) as
        // local, and send everything else to the tunnel.
        iface.set_any_ip(true);
        iface.routes_mut().update(|routes| {
            let _ = routes.push(smoltcp::iface::Route {
                cidr: IpCidr::new(
                    IpAddress::Ipv6(config.prefix.network()),
                    config.prefix.prefix_len(),
                ),
                via_router: IpAddress::Ipv6(config.address),
                preferred_until: None,
                expires_at: None,
            });
        });
        let _ = iface.routes_mut().add_default_ipv6_route(config.address);
        let span = u32::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        let next_port = EPHEMERAL_FIRST
            .saturating_add(u16::try_from(rand::random::<u32>() % span).unwrap_or_default());
        let state = State {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            clock,
            listeners: Vec::new(),
            released: Vec::new(),
            next_port,
            counters: StackCounters::default(),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            poll: Notify::new(),
            stopped: AtomicBool::new(false),
            config,
        });
        let handle = StackHandle {
            shared: shared.clone(),
        };
        (UserspaceStack { shared, channels }, handle)
    }

    /// Run the stack until the tunnel closes the port or
    /// [`StackHandle::shutdown`] is called. Every connection is then
    /// aborted, and dropping the stack closes the port.
    pub async fn run(self) {
        let UserspaceStack {
            shared,
            mut channels,
        } = self;
        loop {
            if shared.stopped.load(Ordering::Acquire) {
                break;
            }
            let (delay, pending_tx) = {
                let mut state = shared.lock();
                state.poll();
                // Hand over what fits without waiting.
                while let Some(packet) = state.device.tx.pop_front() {
                    match channels.outbound.try_send(packet) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(packet)) => {
                            state.device.tx.push_front(packet);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            state.device.tx.clear();
                            break;
                        }
                    }
                }
                let now = state.now();
                let State { iface, sockets, .. } = &mut *state;
                let delay = iface.poll_delay(now, sockets);
                (delay, !state.device.tx.is_empty())
            };
            let sleep = tokio::time::sleep(delay.map_or(Duration::from_secs(3600), |d| {
                Duration::from_micros(d.micros())
            }));
            tokio::select! {
                packet = channels.inbound.recv() => match packet {
                    Some(packet) => {
                        let mut state = shared.lock();
                        state.push_inbound(&shared.config, packet);
                        for _ in 1..RX_BATCH {
                            match channels.inbound.try_recv() {
                                Ok(packet) => state.push_inbound(&shared.config, packet),
                                Err(_) => break,
                            }
                        }
                    }
                    None => break,
                },
                permit = channels.outbound.reserve(), if pending_tx => match permit {
                    Ok(permit) => {
                        if let Some(packet) = shared.lock().device.tx.pop_front() {
                            permit.send(packet);
                        }
                    }
                    Err(_) => break,
                },
                () = shared.poll.notified() => {}
                // While packets wait for room in `outbound`, smoltcp has
                // nothing it can send: wait for the room, not the timer
                // (which may already be due, and would spin).
                () = sleep, if !pending_tx => {}
            }
        }
        shared.stopped.store(true, Ordering::Release);
        let mut state = shared.lock();
        for (_, socket) in state.sockets.iter_mut() {
            match socket {
                smoltcp::socket::Socket::Tcp(socket) => socket.abort(),
                // Wakes its receivers, which then see the stack stopped.
                smoltcp::socket::Socket::Udp(socket) => socket.close(),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        state.listeners.clear();
        info!("userspace stack stopped");
    }
}

impl State {
    fn now(&self) -> smoltcp::time::Instant {
        smoltcp_now(self.clock)
    }

    fn push_inbound(&mut self, config: &StackConfig, packet: Vec<u8>) {
        let ours = packet
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .is_some_and(|dst| config.prefix.contains(&Ipv6Addr::from(dst)))
            && packet.first().is_some_and(|b| b >> 4 == 6);
        if ours && !self.udp_room(&packet) {
            trace!(len = packet.len(), "UDP datagram dropped");
        } else if ours {
            self.device.rx.push_back(packet);
        } else {
            self.counters.foreign_inbound += 1;
            trace!(len = packet.len(), "inbound packet not for this node");
        }
    }

    /// Whether an inbound packet may go to smoltcp: false (and counted)
    /// for a UDP datagram whose socket's receive buffer cannot take it.
    /// Datagrams to no socket go on (and are counted): smoltcp answers
    /// them with a port unreachable. Only UDP directly after the IPv6
    /// header is checked; the check does not see datagrams still waiting
    /// in the device queue, so smoltcp may rarely drop one uncounted.
    fn udp_room(&mut self, packet: &[u8]) -> bool {
        const NEXT_HEADER_UDP: u8 = 0x11;
        if packet.get(6) != Some(&NEXT_HEADER_UDP) {
            return true;
        }
        let (Some(dst), Some(port)) = (
            packet
                .get(24..40)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from),
            packet
                .get(42..44)
                .and_then(|b| <[u8; 2]>::try_from(b).ok())
                .map(u16::from_be_bytes),
        ) else {
            return true;
        };
        let payload = packet.len().saturating_sub(UDP6_OVERHEAD);
        let socket = self.sockets.iter().find_map(|(_, socket)| match socket {
            smoltcp::socket::Socket::Udp(socket) => {
                let bound = socket.endpoint();
                let accepts =
                    bound.port == port && bound.addr.is_none_or(|a| a == IpAddress::Ipv6(dst));
                accepts.then_some(socket)
            }
            #[allow(unreachable_patterns)]
            _ => None,
        });
        match socket {
            None => {
                self.counters.udp_no_socket += 1;
                true
            }
            Some(socket) => {
                let room =
                    socket.recv_queue().saturating_add(payload) <= socket.payload_recv_capacity();
                if !room {
                    self.counters.udp_rx_full += 1;
                }
                room
            }
        }
    }

    /// A free ephemeral port for a UDP socket.
    fn free_udp_port(&mut self) -> Option<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            if !self.udp_port_taken(port, None) {
                return Some(port);
            }
        }
        None
    }

    /// Whether a UDP socket is bound to `port` on `addr` (`None`: any).
    fn udp_port_taken(&self, port: u16, addr: Option<Ipv6Addr>) -> bool {
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Udp(socket) => {
                let bound = socket.endpoint();
                bound.port == port
                    && match (bound.addr, addr) {
                        (Some(a), Some(b)) => a == IpAddress::Ipv6(b),
                        _ => true,
                    }
            }
            #[allow(unreachable_patterns)]
            _ => false,
        })
    }

    /// Poll the interface, hand accepted sockets to their listeners and
    /// remove released sockets that have closed.
    fn poll(&mut self) {
        let now = self.now();
        let State {
            iface,
            device,
            sockets,
            ..
        } = self;
        iface.poll(now, device, sockets);
        self.service_listeners();
        self.released.retain(|&handle| {
            let state = self.sockets.get::<tcp::Socket>(handle).state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if done {
                self.sockets.remove(handle);
            }
            !done
        });
    }

    fn service_listeners(&mut self) {
        let State {
            listeners,
            sockets,
            counters,
            released,
            ..
        } = self;
        listeners.retain_mut(|entry| {
            if entry.accepted.is_closed() {
                for handle in entry.listening.drain(..) {
                    sockets.remove(handle);
                }
                return false;
            }
            for slot in entry.listening.iter_mut() {
                let socket = sockets.get_mut::<tcp::Socket>(*slot);
                if socket.is_listening() {
                    continue;
                }
                let fresh = match listening_socket(entry.endpoint) {
                    Ok(socket) => sockets.add(socket),
                    Err(error) => {
                        debug!(%error, "cannot listen again");
                        continue;
                    }
                };
                let handle = std::mem::replace(slot, fresh);
                match entry.accepted.try_send(handle) {
                    Ok(()) => counters.accepted += 1,
                    Err(_) => {
                        counters.accept_overflow += 1;
                        sockets.get_mut::<tcp::Socket>(handle).abort();
                        // Removed once the reset is out.
                        released.push(handle);
                    }
                }
            }
            true
        });
    }

    fn free_port(&mut self, dst: SocketAddrV6) -> Option<u16> {
        for _ in 0..=(u16::MAX - EPHEMERAL_FIRST) {
            let port = self.next_port;
            self.next_port = if port == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                port + 1
            };
            let taken = self.sockets.iter().any(|(_, socket)| match socket {
                smoltcp::socket::Socket::Tcp(socket) => {
                    socket.local_endpoint().is_some_and(|e| e.port == port)
                        && socket.remote_endpoint().is_none_or(|r| r == endpoint(dst))
                }
                #[allow(unreachable_patterns)]
                _ => false,
            });
            if !taken {
                return Some(port);
            }
        }
        None
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves smoltcp state that is still
        // memory safe; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StackHandle {
    /// This stack's configuration.
    pub fn config(&self) -> &StackConfig {
        &self.shared.config
    }

    /// What the stack counted so far.
    pub fn counters(&self) -> StackCounters {
        self.shared.lock().counters
    }

    /// Stop the stack; [`UserspaceStack::run`] returns soon after.
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.poll.notify_one();
    }

    /// Open a TCP connection from this node's address to `dst` through the
    /// overlay, waiting up to the configured connect timeout.
    pub async fn connect(&self, dst: SocketAddrV6) -> Result<OverlayStream, ConnectError> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(ConnectError::Stopped);
        }
        let handle = {
            let mut state = self.shared.lock();
            let port = state.free_port(dst).ok_or(ConnectError::NoPort)?;
            let mut socket = tcp_socket();
            let local = IpEndpoint::new(IpAddress::Ipv6(self.shared.config.address), port);
            socket
                .connect(state.iface.context(), endpoint(dst), local)
                .map_err(|_| ConnectError::Unaddressable)?;
            state.sockets.add(socket)
        };
        self.shared.poll.notify_one();
        let stream = OverlayStream {
            shared: self.shared.clone(),
            handle,
        };
        let established = poll_fn(|cx| {
            let mut state = self.shared.lock();
            let socket = state.sockets.get_mut::<tcp::Socket>(handle);
            match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => {
                    socket.register_send_waker(cx.waker());
                    Poll::Pending
                }
                tcp::State::Closed => Poll::Ready(Err(ConnectError::Refused)),
                _ => Poll::Ready(Ok(())),
            }
        });
        match tokio::time::timeout(self.shared.config.connect_timeout, established).await {
            Ok(Ok(())) => {
                self.shared.lock().counters.connected += 1;
                Ok(stream)
            }
            Ok(Err(_)) if self.shared.stopped.load(Ordering::Acquire) => Err(ConnectError::Stopped),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ConnectError::TimedOut),
        }
    }

    /// Accept TCP connections to `endpoint`, an address of this node's
    /// prefix.
    pub fn listen(&self, endpoint: SocketAddrV6) -> io::Result<OverlayListener> {
        if !self.shared.config.prefix.contains(endpoint.ip()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{endpoint} is outside this node's prefix"),
            ));
        }
        let (accepted_tx, accepted) = mpsc::channel(BACKLOG);
        let mut state = self.shared.lock();
        let mut listening = Vec::with_capacity(BACKLOG);
        for _ in 0..BACKLOG {
            let socket = listening_socket(endpoint).map_err(io::Error::other)?;
            listening.push(state.sockets.add(socket));
        }
        state.listeners.push(ListenerEntry {
            endpoint,
            listening,
            accepted: accepted_tx,
        });
        Ok(OverlayListener {
            shared: self.shared.clone(),
            endpoint,
            accepted,
        })
    }
}

impl StackHandle {
    /// Bind a UDP socket on `local`, an address of this node's prefix;
    /// the unspecified address means this node's address, port 0 an
    /// ephemeral port.
    pub fn bind_udp(&self, local: SocketAddrV6) -> io::Result<OverlayUdpSocket> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                ConnectError::Stopped,
            ));
        }
        let ip = if local.ip().is_unspecified() {
            self.shared.config.address
        } else {
            *local.ip()
        };
        if !self.shared.config.prefix.contains(&ip) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{ip} is outside this node's prefix"),
            ));
        }
        let mut state = self.shared.lock();
        let port = match local.port() {
            0 => state
                .free_udp_port()
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, ConnectError::NoPort))?,
            port if state.udp_port_taken(port, Some(ip)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("UDP [{ip}]:{port} is already bound"),
                ));
            }
            port => port,
        };
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_BUFFER_PACKETS],
                vec![0; UDP_BUFFER],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket
            .bind(IpListenEndpoint {
                addr: Some(IpAddress::Ipv6(ip)),
                port,
            })
            .map_err(io::Error::other)?;
        let handle = state.sockets.add(socket);
        Ok(OverlayUdpSocket {
            shared: self.shared.clone(),
            handle,
            local: SocketAddrV6::new(ip, port, 0, 0),
        })
    }
}

/// A UDP socket in the userspace stack, bound to one address and port.
/// Dropping it unbinds it (datagrams still queued are discarded).
#[derive(Debug)]
pub struct OverlayUdpSocket {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddrV6,
}

impl OverlayUdpSocket {
    /// The address and port bound.
    pub fn local_addr(&self) -> SocketAddrV6 {
        self.local
    }

    /// Queue one datagram to `dst`. When the send buffer is full the
    /// datagram is dropped and counted ([`StackCounters::udp_tx_full`]),
    /// and this still returns its length: UDP may lose datagrams. A
    /// datagram larger than the overlay MTU allows is an error
    /// (`InvalidInput`): the stack does not fragment.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddrV6) -> io::Result<usize> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                ConnectError::Stopped,
            ));
        }
        let max = usize::from(self.shared.config.mtu).saturating_sub(UDP6_OVERHEAD);
        if data.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {}-byte datagram exceeds the {max}-byte limit",
                    data.len()
                ),
            ));
        }
        {
            let mut state = self.shared.lock();
            let sent = state
                .sockets
                .get_mut::<udp::Socket>(self.handle)
                .send_slice(data, endpoint(dst));
            match sent {
                Ok(()) => {}
                Err(udp::SendError::BufferFull) => {
                    state.counters.udp_tx_full += 1;
                    trace!(%dst, len = data.len(), "UDP send buffer full; datagram dropped");
                }
                Err(udp::SendError::Unaddressable) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        ConnectError::Unaddressable,
                    ));
                }
            }
        }
        self.shared.poll.notify_one();
        Ok(data.len())
    }

    /// Wait for the next datagram: its length and source. A datagram
    /// longer than `buf` is truncated to it (the rest is discarded).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV6)> {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if self.shared.stopped.load(Ordering::Acquire) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    ConnectError::Stopped,
                )));
            }
            let socket = state.sockets.get_mut::<udp::Socket>(self.handle);
            match socket.recv() {
                Ok((payload, meta)) => {
                    let len = payload.len().min(buf.len());
                    if let (Some(to), Some(from)) = (buf.get_mut(..len), payload.get(..len)) {
                        to.copy_from_slice(from);
                    }
                    // Only IPv6 exists in this stack.
                    let from = socket_addr(meta.endpoint).unwrap_or(SocketAddrV6::new(
                        Ipv6Addr::UNSPECIFIED,
                        0,
                        0,
                        0,
                    ));
                    Poll::Ready(Ok((len, from)))
                }
                Err(_) => {
                    socket.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for OverlayUdpSocket {
    fn drop(&mut self) {
        self.shared.lock().sockets.remove(self.handle);
    }
}

/// Connections accepted on one overlay address and port.
#[derive(Debug)]
pub struct OverlayListener {
    shared: Arc<Shared>,
    endpoint: SocketAddrV6,
    accepted: mpsc::Receiver<SocketHandle>,
}

impl OverlayListener {
    /// The address and port listened on.
    pub fn local_addr(&self) -> SocketAddrV6 {
        self.endpoint
    }

    /// The next connection (it may still be completing its handshake:
    /// reads and writes wait for it). `None` once the stack has stopped.
    pub async fn accept(&mut self) -> Option<OverlayStream> {
        let handle = self.accepted.recv().await?;
        Some(OverlayStream {
            shared: self.shared.clone(),
            handle,
        })
    }
}

impl Drop for OverlayListener {
    fn drop(&mut self) {
        // Connections accepted but never taken: close them; the stack
        // removes the listening sockets once it sees the channel closed.
        self.accepted.close();
        while let Ok(handle) = self.accepted.try_recv() {
            drop(OverlayStream {
                shared: self.shared.clone(),
                handle,
            });
        }
        self.shared.poll.notify_one();
    }
}

/// One TCP connection in the userspace stack. Dropping it closes the
/// connection gracefully (FIN after the queued data).
#[derive(Debug)]
pub struct OverlayStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl OverlayStream {
    /// This end's address and port.
    pub fn local_addr(&self) -> Option<SocketAddrV6> {
        let state = self.shared.lock();
        socket_addr(
            state
                .sockets
                .get::<tcp::Socket>(self.handle)
                .local_endpoint()?,
        )
    }

    /// The other end's address and port.
    pub fn peer_addr(&self) -> Option<SocketAddrV6> {
        let state = self.shared.lock();
        socket_addr(
            state
                .sockets
                .get::<tcp::Socket>(self.handle)
                .remote_endpoint()?,
        )
    }

    /// Reset the connection instead of closing it gracefully.
    pub fn abort(self) {
        self.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .abort();
        self.shared.poll.notify_one();
    }
}

impl Drop for OverlayStream {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.sockets.get_mut::<tcp::Socket>(self.handle).close();
        state.released.push(self.handle);
        drop(state);
        self.shared.poll.notify_one();
    }
}

impl AsyncRead for OverlayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.can_recv() {
            let read = socket
                .recv_slice(buf.initialize_unfilled())
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionReset, e))?;
            buf.advance(read);
            drop(state);
            // The window opened: let the stack tell the peer.
            self.shared.poll.notify_one();
            return Poll::Ready(Ok(()));
        }
        let waiting = opening(socket) || socket.may_recv();
        if waiting {
            socket.register_recv_waker(cx.waker());
            Poll::Pending
        } else {
            // FIN received, or closed: end of stream.
            Poll::Ready(Ok(()))
        }
    }
}

/// Still in its opening handshake, so worth waiting for. (An accepted
/// socket back in Listen was reset during its handshake: it is closed for
/// its stream, and neither this nor `may_recv`/`may_send` holds.)
fn opening(socket: &tcp::Socket<'_>) -> bool {
    matches!(
        socket.state(),
        tcp::State::SynSent | tcp::State::SynReceived
    )
}

impl AsyncWrite for OverlayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        let socket = state.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.can_send() {
            let written = socket
                .send_slice(data)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))?;
            drop(state);
            self.shared.poll.notify_one();
            return Poll::Ready(Ok(written));
        }
        let waiting = opening(socket) || socket.may_send();
        if waiting {
            socket.register_send_waker(cx.waker());
            Poll::Pending
        } else {
            Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .close();
        self.shared.poll.notify_one();
        Poll::Ready(Ok(()))
    }
}

/// The smoltcp device over the port's channels: the stack task moves
/// packets between these queues and the channels.
struct ChannelDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);

struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl Device for ChannelDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        (self.tx.len() < TX_QUEUE).then_some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

fn smoltcp_now(clock: std::time::Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(
        i64::try_from(clock.elapsed().as_micros()).unwrap_or(i64::MAX),
    )
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    socket.set_congestion_control(tcp::CongestionControl::Cubic);
    socket.set_nagle_enabled(false);
    socket
}

fn listening_socket(at: SocketAddrV6) -> Result<tcp::Socket<'static>, tcp::ListenError> {
    let mut socket = tcp_socket();
    socket.listen(IpListenEndpoint {
        addr: Some(IpAddress::Ipv6(*at.ip())),
        port: at.port(),
    })?;
    Ok(socket)
}

fn endpoint(addr: SocketAddrV6) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv6(*addr.ip()), addr.port())
}

fn socket_addr(endpoint: IpEndpoint) -> Option<SocketAddrV6> {
    match endpoint.addr {
        IpAddress::Ipv6(ip) => Some(SocketAddrV6::new(ip, endpoint.port, 0, 0)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// A PROXY protocol v2 header (PROXY command, `transport` over IPv6)
/// saying the connection or datagram came from `source` to `destination`.
pub fn proxy_v2_header(
    source: SocketAddrV6,
    destination: SocketAddrV6,
    transport: ProxyTransport,
) -> [u8; PROXY_V2_IPV6_LEN] {
    let family = match transport {
        ProxyTransport::Stream => 0x21,
        ProxyTransport::Dgram => 0x22,
    };
    let mut header = [0u8; PROXY_V2_IPV6_LEN];
    let fields = PROXY_V2_SIGNATURE
        .iter()
        .copied()
        // Version 2, PROXY; the family and protocol; 36 address bytes.
        .chain([0x21, family, 0x00, 0x24])
        .chain(source.ip().octets())
        .chain(destination.ip().octets())
        .chain(source.port().to_be_bytes())
        .chain(destination.port().to_be_bytes());
    for (slot, byte) in header.iter_mut().zip(fields) {
        *slot = byte;
    }
    header
}

/// Server role: accept connections to the application's overlay
/// `address` and forward each one to `backend` (a local TCP address),
/// after a PROXY protocol v2 header. Runs until the stack stops.
pub async fn serve_application(
    stack: StackHandle,
    address: SocketAddrV6,
    backend: SocketAddr,
) -> io::Result<()> {
    let mut listener = stack.listen(address)?;
    info!(%address, %backend, "serving application");
    while let Some(stream) = listener.accept().await {
        tokio::spawn(forward_to_backend(stream, address, backend));
    }
    Ok(())
}

async fn forward_to_backend(mut stream: OverlayStream, address: SocketAddrV6, backend: SocketAddr) {
    let Some(source) = stream.peer_addr() else {
        return;
    };
    let mut local = match TcpStream::connect(backend).await {
        Ok(local) => local,
        Err(error) => {
            debug!(%error, %backend, "backend unreachable; resetting the connection");
            stream.abort();
            return;
        }
    };
    let _ = local.set_nodelay(true);
    if let Err(error) = local
        .write_all(&proxy_v2_header(source, address, ProxyTransport::Stream))
        .await
    {
        debug!(%error, "writing the PROXY header failed");
        stream.abort();
        return;
    }
    match tokio::io::copy_bidirectional_with_sizes(
        &mut stream,
        &mut local,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => trace!(%source, up, down, "application connection closed"),
        Err(error) => debug!(%source, %error, "application connection failed"),
    }
}

/// One overlay source's flow to the backend.
struct UdpFlow {
    socket: Arc<UdpSocket>,
    /// Last datagram either way, shared with the reply task.
    active: Arc<Mutex<tokio::time::Instant>>,
    replies: tokio::task::JoinHandle<()>,
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Server role: receive UDP datagrams on the application's overlay
/// `address` and forward them to `backend` (a local UDP address), each
/// prefixed with a PROXY protocol v2 header (DGRAM). Each overlay source
/// gets its own flow: a host socket connected to the backend whose replies
/// go back to that source from `address`. A flow ends after
/// [`UDP_FLOW_IDLE`] without traffic; at most [`UDP_FLOWS`] exist, the
/// least recently active is evicted for a new one. Runs until the stack
/// stops.
pub async fn serve_application_udp(
    stack: StackHandle,
    address: SocketAddrV6,
    backend: SocketAddr,
) -> io::Result<()> {
    let overlay = Arc::new(stack.bind_udp(address)?);
    info!(%address, %backend, "serving application (UDP)");
    let mut flows: HashMap<SocketAddrV6, UdpFlow> = HashMap::new();
    let mut datagram = vec![0u8; PROXY_V2_IPV6_LEN + usize::from(u16::MAX)];
    let mut sweep = tokio::time::interval(UDP_FLOW_IDLE / 4);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let payload = datagram.get_mut(PROXY_V2_IPV6_LEN..).unwrap_or_default();
        let (len, source) = tokio::select! {
            received = overlay.recv_from(payload) => match received {
                Ok(received) => received,
                Err(error) if stack.shared.stopped.load(Ordering::Acquire) => {
                    debug!(%error, %address, "UDP application stops with the stack");
                    return Ok(());
                }
                Err(error) => return Err(error),
            },
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                let before = flows.len();
                flows.retain(|_, flow| now.duration_since(lock(&flow.active)) < UDP_FLOW_IDLE);
                let expired = before - flows.len();
                if expired > 0 {
                    stack.shared.lock().counters.udp_flows_expired += expired as u64;
                    trace!(%address, expired, "idle UDP flows ended");
                }
                continue;
            }
        };
        let flow = match flows.get(&source) {
            Some(flow) => flow,
            None => {
                if flows.len() >= UDP_FLOWS {
                    let oldest = flows
                        .iter()
                        .min_by_key(|(_, flow)| lock(&flow.active))
                        .map(|(source, _)| *source);
                    if let Some(oldest) = oldest {
                        flows.remove(&oldest);
                        stack.shared.lock().counters.udp_flows_evicted += 1;
                    }
                }
                let flow = match udp_flow(&overlay, source, backend).await {
                    Ok(flow) => flow,
                    Err(error) => {
                        debug!(%error, %backend, "cannot open a UDP flow to the backend");
                        continue;
                    }
                };
                flows.entry(source).or_insert(flow)
            }
        };
        touch(&flow.active);
        let header = proxy_v2_header(source, address, ProxyTransport::Dgram);
        if let Some(head) = datagram.get_mut(..PROXY_V2_IPV6_LEN) {
            head.copy_from_slice(&header);
        }
        let message = datagram.get(..PROXY_V2_IPV6_LEN + len).unwrap_or_default();
        if let Err(error) = flow.socket.send(message).await {
            debug!(%error, %source, "sending to the UDP backend failed");
        }
    }
}

/// A host socket connected to `backend` for `source`'s flow, and the task
/// that sends its replies back to `source`.
async fn udp_flow(
    overlay: &Arc<OverlayUdpSocket>,
    source: SocketAddrV6,
    backend: SocketAddr,
) -> io::Result<UdpFlow> {
    let any: SocketAddr = match backend {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(backend).await?;
    let socket = Arc::new(socket);
    let active = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let replies = tokio::spawn({
        let socket = socket.clone();
        let active = active.clone();
        let overlay = overlay.clone();
        async move {
            let mut buf = vec![0u8; usize::from(u16::MAX)];
            loop {
                let len = match socket.recv(&mut buf).await {
                    Ok(len) => len,
                    // ICMP errors from the backend (port unreachable):
                    // the flow stays until idle.
                    Err(error) => {
                        trace!(%error, %source, "UDP backend error");
                        continue;
                    }
                };
                touch(&active);
                let reply = buf.get(..len).unwrap_or_default();
                if let Err(error) = overlay.send_to(reply, source).await {
                    debug!(%error, %source, "UDP reply not sent");
                    if error.kind() == io::ErrorKind::NotConnected {
                        return;
                    }
                }
            }
        }
    });
    Ok(UdpFlow {
        socket,
        active,
        replies,
    })
}

fn lock<T: Copy>(mutex: &Mutex<T>) -> T {
    *mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn touch(active: &Mutex<tokio::time::Instant>) {
    *active.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
}

/// SOCKS5 reply codes (RFC 1928 §6).
mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

const SOCKS_VERSION: u8 = 0x05;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Client role: a SOCKS5 proxy (RFC 1928) on `listener` whose CONNECTs
/// open connections through the overlay. No authentication; CONNECT only;
/// IPv6 addresses, and domain names only when they are IPv6 literals.
/// Runs until accepting fails.
pub async fn serve_socks(listener: TcpListener, stack: StackHandle) -> io::Result<()> {
    info!(listen = ?listener.local_addr().ok(), "SOCKS5 proxy listening");
    loop {
        let (client, from) = listener.accept().await?;
        let stack = stack.clone();
        tokio::spawn(async move {
            if let Err(error) = socks_session(client, &stack).await {
                debug!(%from, %error, "SOCKS5 session ended");
            }
        });
    }
}

/// A SOCKS5 request that cannot be served, with the reply it gets.
#[derive(Debug)]
struct Refusal(u8);

async fn socks_session(mut client: TcpStream, stack: &StackHandle) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let request = tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, socks_handshake(&mut client))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let dst = match request {
        Ok(dst) => dst,
        Err(Refusal(code)) => {
            client.write_all(&socks_reply(code, None)).await?;
            return Ok(());
        }
    };
    let mut stream = match stack.connect(dst).await {
        Ok(stream) => stream,
        Err(error) => {
            let code = match error {
                ConnectError::Refused => reply::CONNECTION_REFUSED,
                ConnectError::TimedOut => reply::HOST_UNREACHABLE,
                _ => reply::GENERAL_FAILURE,
            };
            debug!(%dst, %error, "SOCKS5 CONNECT failed");
            client.write_all(&socks_reply(code, None)).await?;
            return Ok(());
        }
    };
    client
        .write_all(&socks_reply(reply::SUCCEEDED, stream.local_addr()))
        .await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut stream, COPY_BUFFER, COPY_BUFFER)
        .await?;
    Ok(())
}

/// Method negotiation and the request. The outer error ends the session
/// without a reply; a [`Refusal`] gets one.
async fn socks_handshake(client: &mut TcpStream) -> io::Result<Result<SocketAddrV6, Refusal>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let [version, count] = head;
    if version != SOCKS_VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(count)];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&METHOD_NO_AUTH) {
        client
            .write_all(&[SOCKS_VERSION, METHOD_NONE_ACCEPTABLE])
            .await?;
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "client offers no acceptable method",
        ));
    }
    client.write_all(&[SOCKS_VERSION, METHOD_NO_AUTH]).await?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let [version, command, _reserved, atyp] = request;
    if version != SOCKS_VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    // Read the whole address before answering, whatever it is.
    let ip = match atyp {
        ATYP_IPV4 => {
            let mut addr = [0u8; 4];
            client.read_exact(&mut addr).await?;
            None
        }
        ATYP_IPV6 => {
            let mut addr = [0u8; 16];
            client.read_exact(&mut addr).await?;
            Some(Ok(Ipv6Addr::from(addr)))
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            Some(parse_ipv6_literal(&name).ok_or(Refusal(reply::HOST_UNREACHABLE)))
        }
        _ => {
            return Ok(Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED)));
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    if command != CMD_CONNECT {
        return Ok(Err(Refusal(reply::COMMAND_NOT_SUPPORTED)));
    }
    let ip = match ip {
        None => return Ok(Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED))),
        Some(Err(refusal)) => return Ok(Err(refusal)),
        Some(Ok(ip)) => ip,
    };
    Ok(Ok(SocketAddrV6::new(ip, u16::from_be_bytes(port), 0, 0)))
}

/// A domain name that is an IPv6 literal, with or without brackets.
fn parse_ipv6_literal(name: &[u8]) -> Option<Ipv6Addr> {
    let name = std::str::from_utf8(name).ok()?;
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match name.parse::<IpAddr>().ok()? {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    }
}

/// A reply: the code and the bound address (`::`, port 0 when none).
fn socks_reply(code: u8, bound: Option<SocketAddrV6>) -> [u8; 22] {
    let bound = bound.unwrap_or(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut reply = [0u8; 22];
    let fields = [SOCKS_VERSION, code, 0x00, ATYP_IPV6]
        .into_iter()
        .chain(bound.ip().octets())
        .chain(bound.port().to_be_bytes());
    for (slot, byte) in reply.iter_mut().zip(fields) {
        *slot = byte;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_v2_header_known_bytes() {
        let src: SocketAddrV6 = "[2002:102:304:1::a]:49152".parse().unwrap();
        let dst: SocketAddrV6 = "[2002:b16:212c:1::80]:443".parse().unwrap();
        for (transport, family) in [
            (ProxyTransport::Stream, "21"),
            (ProxyTransport::Dgram, "22"),
        ] {
            let header = proxy_v2_header(src, dst, transport);
            let expected = [
                "0d0a0d0a000d0a515549540a", // signature
                "21",                       // v2, PROXY
                family,                     // AF_INET6, STREAM or DGRAM
                "0024",                     // 36 bytes follow
                "200201020304000100000000000000 0a",
                "20020b16212c00010000000000000080",
                "c000",
                "01bb",
            ]
            .concat()
            .replace(' ', "");
            assert_eq!(hex::encode(header), expected, "{transport:?}");
        }
    }

    #[test]
    fn ipv6_literals_only() {
        let cases: &[(&str, Option<&str>)] = &[
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("192.0.2.1", None),
            ("example.org", None),
            ("[2001:db8::1", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                parse_ipv6_literal(name.as_bytes()),
                want.map(|w| w.parse().unwrap()),
                "{name}"
            );
        }
        assert_eq!(parse_ipv6_literal(&[0xff, 0xfe]), None);
    }

    #[test]
    fn socks_reply_layout() {
        let bound: SocketAddrV6 = "[2001:db8::2]:1080".parse().unwrap();
        let r = socks_reply(reply::SUCCEEDED, Some(bound));
        assert_eq!(r[..4], [0x05, 0x00, 0x00, 0x04]);
        assert_eq!(r[4..20], bound.ip().octets());
        assert_eq!(r[20..], [0x04, 0x38]);
        let r = socks_reply(reply::COMMAND_NOT_SUPPORTED, None);
        assert_eq!(r[1], 0x07);
        assert!(r[4..].iter().all(|&b| b == 0));
    }
}
