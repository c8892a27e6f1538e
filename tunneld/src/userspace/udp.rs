//! UDP in the stack: [`OverlayUdpSocket`] and the inbound checks that keep
//! its bounded buffers honest.

use std::future::poll_fn;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpListenEndpoint};
use tracing::trace;

use super::stack::{ConnectError, Shared, StackHandle, State};
use super::{
    endpoint, socket_addr, EPHEMERAL_FIRST, UDP6_OVERHEAD, UDP_BUFFER, UDP_BUFFER_PACKETS,
};

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
    /// datagram is dropped and counted
    /// ([`StackCounters::udp_tx_full`](super::StackCounters::udp_tx_full)),
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

impl State {
    /// Whether an inbound packet may go to smoltcp: false (and counted)
    /// for a UDP datagram whose socket's receive buffer cannot take it.
    /// Datagrams to no socket go on (and are counted): smoltcp answers
    /// them with a port unreachable. Only UDP directly after the IPv6
    /// header is checked; the check does not see datagrams still waiting
    /// in the device queue, so smoltcp may rarely drop one uncounted.
    pub(super) fn udp_room(&mut self, packet: &[u8]) -> bool {
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
    pub(super) fn free_udp_port(&mut self) -> Option<u16> {
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
    pub(super) fn udp_port_taken(&self, port: u16, addr: Option<Ipv6Addr>) -> bool {
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
}
