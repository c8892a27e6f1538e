//! Server role: application forwarding (TCP and UDP) to local backends
//! with a PROXY protocol v2 header.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tracing::{debug, info, trace};

use super::stack::StackHandle;
use super::tcp::OverlayStream;
use super::udp::OverlayUdpSocket;
use super::{COPY_BUFFER, UDP_FLOWS, UDP_FLOW_IDLE};

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

/// How many UDP flows [`serve_application_udp_with`] keeps per application
/// port, and how long a flow lives without traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFlowLimits {
    /// A flow ends after this long without a datagram either way (checked
    /// every quarter of it).
    pub idle: Duration,
    /// Flows kept at once (at least one); the least recently active is
    /// evicted for a new one.
    pub max_flows: usize,
}

impl Default for UdpFlowLimits {
    /// [`UDP_FLOW_IDLE`] and [`UDP_FLOWS`].
    fn default() -> UdpFlowLimits {
        UdpFlowLimits {
            idle: UDP_FLOW_IDLE,
            max_flows: UDP_FLOWS,
        }
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
    serve_application_udp_with(stack, address, backend, UdpFlowLimits::default()).await
}

/// [`serve_application_udp`] with other flow limits.
pub async fn serve_application_udp_with(
    stack: StackHandle,
    address: SocketAddrV6,
    backend: SocketAddr,
    limits: UdpFlowLimits,
) -> io::Result<()> {
    let idle = limits.idle.max(Duration::from_millis(4));
    let max_flows = limits.max_flows.max(1);
    let overlay = Arc::new(stack.bind_udp(address)?);
    info!(%address, %backend, "serving application (UDP)");
    let mut flows: HashMap<SocketAddrV6, UdpFlow> = HashMap::new();
    let mut datagram = vec![0u8; PROXY_V2_IPV6_LEN + usize::from(u16::MAX)];
    let mut sweep = tokio::time::interval(idle / 4);
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
                flows.retain(|_, flow| now.duration_since(lock(&flow.active)) < idle);
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
                if flows.len() >= max_flows {
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
}
