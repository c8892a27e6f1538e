//! Client role: TCP port forwards. Each connection accepted on a local
//! listener is carried through the overlay to one fixed destination.

use std::io;
use std::net::SocketAddrV6;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, trace};

use super::stack::StackHandle;
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
