//! Userspace mode: a smoltcp IPv6/TCP stack on the tunnel's inner-packet
//! port, for nodes without a TUN device (DESIGN §10).
//!
//! A [`UserspaceStack`] owns a smoltcp [`Interface`](smoltcp::iface::Interface) (medium IP) whose
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
//! proxy (RFC 1928, CONNECT only; names through [`OverlayDnsResolver`]
//! with `[addrd]`), [`serve_port_forward`] and
//! [`serve_udp_port_forward`] its TCP and UDP port forwards, and [`serve_application`] forwards each
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
//!
//! One job per file: `stack` (the interface, its task, [`StackHandle`]),
//! `device` (the smoltcp device over the channels), `tcp`
//! ([`OverlayStream`], [`OverlayListener`]), `udp` ([`OverlayUdpSocket`]),
//! `socks` (the client's proxy), `dns` (its resolver asking addrd's DNS),
//! `forward` (its port forwards) and `application` (the server's
//! forwarding and PROXY v2).

mod application;
mod device;
mod dns;
mod forward;
mod socks;
mod stack;
mod tcp;
mod udp;

use std::net::SocketAddrV6;
use std::time::Duration;

use smoltcp::wire::{IpAddress, IpEndpoint};

pub use application::{
    proxy_v2_header, serve_application, serve_application_udp, serve_application_udp_with,
    ProxyTransport, UdpFlowLimits, PROXY_V2_IPV6_LEN,
};
pub use dns::{OverlayDnsResolver, QUERY_ATTEMPTS, QUERY_TIMEOUT};
pub use forward::{serve_port_forward, serve_udp_port_forward, serve_udp_port_forward_with};
pub use socks::serve_socks;
pub use stack::{ConnectError, StackConfig, StackCounters, StackHandle, UserspaceStack};
pub use tcp::{OverlayListener, OverlayStream};
pub use udp::OverlayUdpSocket;

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
pub(crate) const UDP6_OVERHEAD: usize = 40 + 8;

/// Packets the stack queues for `outbound` before it stops sending.
pub(crate) const TX_QUEUE: usize = 64;

/// Inbound packets taken from the channel per poll.
pub(crate) const RX_BATCH: usize = 64;

/// Listening sockets kept per [`OverlayListener`], and accepted
/// connections waiting for [`OverlayListener::accept`].
pub(crate) const BACKLOG: usize = 4;

/// Buffer of each direction of a proxied connection.
pub(crate) const COPY_BUFFER: usize = 64 * 1024;

/// How long a SOCKS5 client may take to send its greeting and request.
pub(crate) const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// First port of the ephemeral range (RFC 6335).
pub(crate) const EPHEMERAL_FIRST: u16 = 49_152;

pub(crate) fn endpoint(addr: SocketAddrV6) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv6(*addr.ip()), addr.port())
}

pub(crate) fn socket_addr(endpoint: IpEndpoint) -> Option<SocketAddrV6> {
    match endpoint.addr {
        IpAddress::Ipv6(ip) => Some(SocketAddrV6::new(ip, endpoint.port, 0, 0)),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
