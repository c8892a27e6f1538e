//! Client role: port forwards. TCP: each connection accepted on a local
//! listener is carried through the overlay to one fixed destination. UDP:
//! each local client's datagrams are relayed to one fixed destination from
//! an overlay socket of its own, and the destination's replies go back to
//! that client.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, info, trace};

use super::application::UdpFlowLimits;
use super::stack::StackHandle;
use super::udp::OverlayUdpSocket;
use super::COPY_BUFFER;

/// Client role: accept TCP connections on `listener` and carry each one
/// through the overlay to `to`, both ways, half-close included (a FIN from
/// either side reaches the other while the other direction goes on). A
/// connection whose overlay connect fails is closed at once and counted
/// ([`StackCounters::forward_failed`](super::StackCounters::forward_failed)).
/// Runs until accepting fails.
pub async fn serve_port_forward(
    listener: TcpListener,
    stack: StackHandle,
    to: SocketAddrV6,
) -> io::Result<()> {
    info!(listen = ?listener.local_addr().ok(), %to, "port forward listening");
    loop {
        let (client, from) = listener.accept().await?;
        tokio::spawn(forward(client, stack.clone(), to, from));
    }
}

async fn forward(
    mut client: TcpStream,
    stack: StackHandle,
    to: SocketAddrV6,
    from: std::net::SocketAddr,
) {
    let _ = client.set_nodelay(true);
    let mut stream = match stack.connect(to).await {
        Ok(stream) => stream,
        Err(error) => {
            stack.count(|c| c.forward_failed += 1);
            debug!(%from, %to, %error, "port forward: overlay connect failed; closing");
            return;
        }
    };
    stack.count(|c| c.forwarded += 1);
    match tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut stream,
        COPY_BUFFER,
        COPY_BUFFER,
    )
    .await
    {
        Ok((up, down)) => trace!(%from, %to, up, down, "port forward closed"),
        Err(error) => {
            debug!(%from, %to, %error, "port forward failed");
            stream.abort();
        }
    }
}

/// One local client's flow: its overlay socket and the task that sends
/// the destination's replies back to it.
struct ForwardFlow {
    overlay: Arc<OverlayUdpSocket>,
    /// Last datagram either way, shared with the reply task.
    active: Arc<Mutex<tokio::time::Instant>>,
    replies: tokio::task::JoinHandle<()>,
}

impl Drop for ForwardFlow {
    fn drop(&mut self) {
        self.replies.abort();
    }
}

/// Client role: relay the datagrams each local client sends to `socket`
/// through the overlay to `to`, and `to`'s replies back to that client.
/// Each local client (source address and port) gets its own overlay
/// socket on this node's address and an ephemeral port, so the
/// destination sees one overlay source per client. Datagrams from the
/// overlay socket's peer other than `to` are ignored. Flows end after
/// [`UDP_FLOW_IDLE`](super::UDP_FLOW_IDLE) without traffic; at most
/// [`UDP_FLOWS`](super::UDP_FLOWS) exist, the least recently active is
/// evicted for a new one (both counted). Runs until receiving on `socket`
/// fails.
pub async fn serve_udp_port_forward(
    socket: UdpSocket,
    stack: StackHandle,
    to: SocketAddrV6,
) -> io::Result<()> {
    serve_udp_port_forward_with(socket, stack, to, UdpFlowLimits::default()).await
}

/// [`serve_udp_port_forward`] with other flow limits.
pub async fn serve_udp_port_forward_with(
    socket: UdpSocket,
    stack: StackHandle,
    to: SocketAddrV6,
    limits: UdpFlowLimits,
) -> io::Result<()> {
    let idle = limits.idle.max(Duration::from_millis(4));
    let max_flows = limits.max_flows.max(1);
    let local = Arc::new(socket);
    info!(listen = ?local.local_addr().ok(), %to, "UDP port forward listening");
    let mut flows: HashMap<SocketAddr, ForwardFlow> = HashMap::new();
    let mut datagram = vec![0u8; usize::from(u16::MAX)];
    let mut sweep = tokio::time::interval(idle / 4);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (len, client) = tokio::select! {
            received = local.recv_from(&mut datagram) => match received {
                Ok(received) => received,
                // ICMP errors for replies to a client that went away.
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(error) => return Err(error),
            },
            _ = sweep.tick() => {
                let now = tokio::time::Instant::now();
                let before = flows.len();
                flows.retain(|_, flow| now.duration_since(instant(&flow.active)) < idle);
                let expired = before - flows.len();
                if expired > 0 {
                    stack.count(|c| c.udp_flows_expired += expired as u64);
                    trace!(%to, expired, "idle UDP forward flows ended");
                }
                continue;
            }
        };
        if !flows.contains_key(&client) {
            if flows.len() >= max_flows {
                let oldest = flows
                    .iter()
                    .min_by_key(|(_, flow)| instant(&flow.active))
                    .map(|(client, _)| *client);
                if let Some(oldest) = oldest {
                    flows.remove(&oldest);
                    stack.count(|c| c.udp_flows_evicted += 1);
                }
            }
            match forward_flow(&stack, &local, client, to) {
                Ok(flow) => {
                    stack.count(|c| c.udp_forward_flows += 1);
                    flows.insert(client, flow);
                }
                Err(error) => {
                    stack.count(|c| c.udp_forward_dropped += 1);
                    debug!(%error, %client, %to, "UDP port forward: no overlay socket; datagram dropped");
                    continue;
                }
            }
        }
        let Some(flow) = flows.get(&client) else {
            continue;
        };
        touch(&flow.active);
        let payload = datagram.get(..len).unwrap_or_default();
        if let Err(error) = flow.overlay.send_to(payload, to).await {
            stack.count(|c| c.udp_forward_dropped += 1);
            debug!(%error, %client, %to, "UDP port forward: datagram not sent");
        }
    }
}

/// A flow for `client`: an overlay socket on this node's address and an
/// ephemeral port, and the task relaying `to`'s replies to `client`.
fn forward_flow(
    stack: &StackHandle,
    local: &Arc<UdpSocket>,
    client: SocketAddr,
    to: SocketAddrV6,
) -> io::Result<ForwardFlow> {
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0);
    let overlay = Arc::new(stack.bind_udp(any)?);
    let active = Arc::new(Mutex::new(tokio::time::Instant::now()));
    let replies = tokio::spawn({
        let overlay = overlay.clone();
        let local = local.clone();
        let active = active.clone();
        let stack = stack.clone();
        async move {
            let mut buf = vec![0u8; usize::from(u16::MAX)];
            loop {
                let (len, from) = match overlay.recv_from(&mut buf).await {
                    Ok(received) => received,
                    Err(error) => {
                        debug!(%error, %client, "UDP port forward: overlay socket closed");
                        return;
                    }
                };
                if from != to {
                    trace!(%from, %to, "UDP port forward: datagram from another source ignored");
                    continue;
                }
                touch(&active);
                let reply = buf.get(..len).unwrap_or_default();
                if let Err(error) = local.send_to(reply, client).await {
                    stack.count(|c| c.udp_forward_dropped += 1);
                    debug!(%error, %client, "UDP port forward: reply not sent");
                }
            }
        }
    });
    Ok(ForwardFlow {
        overlay,
        active,
        replies,
    })
}

fn instant(mutex: &Mutex<tokio::time::Instant>) -> tokio::time::Instant {
    *mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn touch(active: &Mutex<tokio::time::Instant>) {
    *active.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
}
