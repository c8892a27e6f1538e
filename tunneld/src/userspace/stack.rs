//! The stack driver: the smoltcp interface, its task and the handle
//! other tasks reach it through.

use overlay_proto::counters::Labelled;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::Ipv6Net;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, trace};

use crate::dataplane::PortChannels;

use super::device::{smoltcp_now, ChannelDevice};
use super::tcp::listening_socket;
use super::{EPHEMERAL_FIRST, RX_BATCH};

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
    /// An ICMPv6 "administratively prohibited" (or another policy code:
    /// source address failed ingress/egress policy, reject route) came
    /// back: access control refused the connection.
    #[error("connection prohibited by the destination's access control")]
    Prohibited,
    /// An ICMPv6 "no route to destination" came back: no peer routes the
    /// address.
    #[error("no route to the destination")]
    NoRoute,
    /// Another ICMPv6 Destination Unreachable came back (address
    /// unreachable, beyond the scope of the source address).
    #[error("destination unreachable")]
    Unreachable,
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
            ConnectError::Prohibited => "prohibited",
            ConnectError::NoRoute => "no_route",
            ConnectError::Unreachable => "unreachable",
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
    /// UDP datagrams dropped by
    /// [`OverlayUdpSocket::send_to`](super::OverlayUdpSocket::send_to)
    /// because the socket's send buffer was full.
    pub udp_tx_full: u64,
    /// UDP flows [`serve_application_udp`](super::serve_application_udp)
    /// or a UDP port forward
    /// ([`serve_udp_port_forward`](super::serve_udp_port_forward))
    /// evicted to make room.
    pub udp_flows_evicted: u64,
    /// UDP flows [`serve_application_udp`](super::serve_application_udp)
    /// or a UDP port forward ended after
    /// [`UDP_FLOW_IDLE`](super::UDP_FLOW_IDLE).
    pub udp_flows_expired: u64,
    /// Connects failed by an ICMPv6 Destination Unreachable for their SYN
    /// (smoltcp leaves ICMP to the stack; see [`ConnectError`]).
    pub connects_failed_by_icmp: u64,
    /// Connections a port forward carried into the overlay.
    pub forwarded: u64,
    /// Connections a port forward closed because the overlay connect
    /// failed.
    pub forward_failed: u64,
    /// Flows (one per local client) UDP port forwards opened.
    pub udp_forward_flows: u64,
    /// Datagrams UDP port forwards dropped: no overlay socket for a new
    /// flow, or the datagram could not be sent either way.
    pub udp_forward_dropped: u64,
}

impl StackCounters {
    /// Every counter, named, for status reports and metrics.
    pub fn labelled(&self) -> [Labelled; 14] {
        [
            Labelled::new(
                "foreign_inbound",
                "inbound packets not for the stack's prefix",
                self.foreign_inbound,
            ),
            Labelled::new("accepted", "connections accepted", self.accepted),
            Labelled::new(
                "accept_overflow",
                "connections reset on a full accept queue",
                self.accept_overflow,
            ),
            Labelled::new("connected", "connections opened", self.connected),
            Labelled::new(
                "udp_no_socket",
                "UDP datagrams to a port without a socket",
                self.udp_no_socket,
            ),
            Labelled::new(
                "udp_rx_full",
                "UDP datagrams dropped on a full receive buffer",
                self.udp_rx_full,
            ),
            Labelled::new(
                "udp_tx_full",
                "UDP datagrams dropped on a full send buffer",
                self.udp_tx_full,
            ),
            Labelled::new(
                "udp_flows_evicted",
                "UDP flows evicted to make room",
                self.udp_flows_evicted,
            ),
            Labelled::new(
                "udp_flows_expired",
                "UDP flows ended when idle",
                self.udp_flows_expired,
            ),
            Labelled::new(
                "connects_failed_by_icmp",
                "connects failed by an ICMPv6 error for their SYN",
                self.connects_failed_by_icmp,
            ),
            Labelled::new(
                "forwarded",
                "connections carried by port forwards",
                self.forwarded,
            ),
            Labelled::new(
                "forward_failed",
                "port-forward connections closed on a failed connect",
                self.forward_failed,
            ),
            Labelled::new(
                "udp_forward_flows",
                "UDP port-forward flows opened",
                self.udp_forward_flows,
            ),
            Labelled::new(
                "udp_forward_dropped",
                "UDP port-forward datagrams dropped",
                self.udp_forward_dropped,
            ),
        ]
    }
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
    pub(super) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Wakes the stack task: a stream moved data or changed state.
    pub(super) poll: Notify,
    pub(super) stopped: AtomicBool,
    pub(super) config: StackConfig,
}

pub(super) struct State {
    pub(super) iface: Interface,
    pub(super) device: ChannelDevice,
    pub(super) sockets: SocketSet<'static>,
    pub(super) clock: std::time::Instant,
    pub(super) listeners: Vec<ListenerEntry>,
    /// Sockets whose stream was dropped: removed once closed.
    pub(super) released: Vec<SocketHandle>,
    /// Why opening connections failed, when an ICMPv6 error said so;
    /// taken by their connect.
    pub(super) connect_failures: HashMap<SocketHandle, ConnectError>,
    pub(super) next_port: u16,
    pub(super) counters: StackCounters,
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

pub(super) struct ListenerEntry {
    pub(super) endpoint: SocketAddrV6,
    pub(super) listening: Vec<SocketHandle>,
    pub(super) accepted: mpsc::Sender<SocketHandle>,
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
            connect_failures: HashMap::new(),
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
    pub(super) fn now(&self) -> smoltcp::time::Instant {
        smoltcp_now(self.clock)
    }

    fn push_inbound(&mut self, config: &StackConfig, packet: Vec<u8>) {
        let ours = packet
            .get(24..40)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .is_some_and(|dst| config.prefix.contains(&Ipv6Addr::from(dst)))
            && packet.first().is_some_and(|b| b >> 4 == 6);
        if ours {
            self.fail_connect_on_icmp(config.address, &packet);
        }
        if ours && !self.udp_room(&packet) {
            trace!(len = packet.len(), "UDP datagram dropped");
        } else if ours {
            self.device.rx.push_back(packet);
        } else {
            self.counters.foreign_inbound += 1;
            trace!(len = packet.len(), "inbound packet not for this node");
        }
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
                self.connect_failures.remove(&handle);
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
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
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

    /// Change the counters (for the services built on the stack).
    pub(super) fn count(&self, change: impl FnOnce(&mut StackCounters)) {
        change(&mut self.shared.lock().counters);
    }

    /// Stop the stack; [`UserspaceStack::run`] returns soon after.
    pub fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.poll.notify_one();
    }
}
