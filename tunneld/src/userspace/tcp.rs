//! TCP in the stack: connections into the overlay ([`StackHandle::connect`]),
//! listeners ([`OverlayListener`]) and the streams both give ([`OverlayStream`]).

use std::future::poll_fn;
use std::io;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{
    Icmpv6DstUnreachable, Icmpv6Message, Icmpv6Packet, IpAddress, IpEndpoint, IpListenEndpoint,
    IpProtocol, Ipv6Packet,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tracing::trace;

use super::stack::{ConnectError, ListenerEntry, Shared, StackHandle, State};
use super::{endpoint, socket_addr, BACKLOG, EPHEMERAL_FIRST, TCP_BUFFER};

impl StackHandle {
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
                tcp::State::Closed => Poll::Ready(Err(state
                    .connect_failures
                    .remove(&handle)
                    .unwrap_or(ConnectError::Refused))),
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

impl State {
    /// Fail the opening connection an inbound ICMPv6 Destination
    /// Unreachable is about: smoltcp does not surface ICMP to TCP sockets,
    /// so the stack looks at each inbound packet before smoltcp does.
    /// Only a connect still in SYN-SENT fails (a hard error ends only an
    /// opening connection, RFC 5927 §4.1), and only for an error from the
    /// address the SYN went to or from `own` (this node's address: its
    /// tunnel's "no route"). A peer's packets carry only its own addresses
    /// (cryptokey routing), so no peer can fail connects to another.
    pub(super) fn fail_connect_on_icmp(&mut self, own: Ipv6Addr, packet: &[u8]) {
        const NEXT_HEADER_ICMPV6: u8 = 0x3a;
        if packet.get(6) != Some(&NEXT_HEADER_ICMPV6) {
            return;
        }
        let Some((from, reason, quoted)) = destination_unreachable(packet) else {
            return;
        };
        if quoted.next_header != IpProtocol::Tcp || (from != quoted.dst_addr && from != own) {
            return;
        }
        let Some((local_port, remote_port)) = quoted.ports else {
            return;
        };
        let local = IpEndpoint::new(IpAddress::Ipv6(quoted.src_addr), local_port);
        let remote = IpEndpoint::new(IpAddress::Ipv6(quoted.dst_addr), remote_port);
        let error = match reason {
            Icmpv6DstUnreachable::NoRoute => ConnectError::NoRoute,
            Icmpv6DstUnreachable::AdminProhibit
            | Icmpv6DstUnreachable::FailedPolicy
            | Icmpv6DstUnreachable::RejectRoute => ConnectError::Prohibited,
            Icmpv6DstUnreachable::PortUnreachable => ConnectError::Refused,
            _ => ConnectError::Unreachable,
        };
        let opening = self
            .sockets
            .iter_mut()
            .find_map(|(handle, socket)| match socket {
                smoltcp::socket::Socket::Tcp(socket)
                    if socket.state() == tcp::State::SynSent
                        && socket.local_endpoint() == Some(local)
                        && socket.remote_endpoint() == Some(remote) =>
                {
                    socket.abort();
                    Some(handle)
                }
                _ => None,
            });
        if let Some(handle) = opening {
            trace!(%remote, %error, "connect failed by an ICMPv6 error");
            self.connect_failures.insert(handle, error);
            self.counters.connects_failed_by_icmp += 1;
        }
    }

    pub(super) fn free_port(&mut self, dst: SocketAddrV6) -> Option<u16> {
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

/// The quoted packet of an ICMPv6 error: its addresses, protocol and,
/// when the quote reaches them, its first four upper-layer bytes as ports.
struct Quoted {
    src_addr: Ipv6Addr,
    dst_addr: Ipv6Addr,
    next_header: IpProtocol,
    ports: Option<(u16, u16)>,
}

/// The source, reason and quoted packet of an ICMPv6 Destination
/// Unreachable with a valid checksum (smoltcp's parser); `None` for
/// anything else.
fn destination_unreachable(packet: &[u8]) -> Option<(Ipv6Addr, Icmpv6DstUnreachable, Quoted)> {
    let ip = Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Icmpv6 {
        return None;
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
    let (from, to) = (ip.src_addr(), ip.dst_addr());
    if !icmp.verify_checksum(&from, &to) || icmp.msg_type() != Icmpv6Message::DstUnreachable {
        return None;
    }
    let reason = Icmpv6DstUnreachable::from(icmp.msg_code());
    // The quote may be cut short: read the header by hand, not with
    // `Ipv6Packet::new_checked` (which wants the whole payload).
    let quote = icmp.payload();
    let addr = |range: std::ops::Range<usize>| {
        quote
            .get(range)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(Ipv6Addr::from)
    };
    let port = |at: usize| {
        quote
            .get(at..at + 2)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map(u16::from_be_bytes)
    };
    let quoted = Quoted {
        src_addr: addr(8..24)?,
        dst_addr: addr(24..40)?,
        next_header: IpProtocol::from(*quote.get(6)?),
        ports: port(40).zip(port(42)),
    };
    Some((from, reason, quoted))
}

pub(super) fn tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    socket.set_congestion_control(tcp::CongestionControl::Cubic);
    socket.set_nagle_enabled(false);
    socket
}

pub(super) fn listening_socket(at: SocketAddrV6) -> Result<tcp::Socket<'static>, tcp::ListenError> {
    let mut socket = tcp_socket();
    socket.listen(IpListenEndpoint {
        addr: Some(IpAddress::Ipv6(*at.ip())),
        port: at.port(),
    })?;
    Ok(socket)
}
