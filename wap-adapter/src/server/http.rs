//! The HTTP/1.1 front (hyper 1's server) on an application's listening
//! address.
//!
//! In TUN mode the socket peer is the overlay source. On a PROXY listener
//! (userspace mode) each connection must start with tunneld's PROXY v2
//! header, read within `header-timeout`; a connection without a valid one
//! is closed unanswered and counted (`proxy_refused`). Request heads are
//! bounded by `max-header-bytes` and `header-timeout` (hyper), bodies by
//! `max-body-bytes` (413) and `backend-timeout` (408). Every request goes to
//! the application's [`Adapter`]. At most `max-connections` connections
//! are served at once; further ones wait in the listen backlog.
//! [`HttpServer::serve`] stops accepting when told to shut down, lets running requests finish (hyper's graceful
//! shutdown) for at most [`DRAIN_TIMEOUT`], then drops the rest.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::{read_proxy_header, ServerCounters};
use crate::adapter::{plain, Adapter, Front, Origin};
use crate::config::Limits;

/// Longest wait for running requests after a shutdown request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One application's HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    listener: TcpListener,
    proxied: bool,
    adapter: Arc<Adapter>,
    limits: Limits,
    counters: Arc<ServerCounters>,
}

impl HttpServer {
    /// Bind `address`; connections carry a PROXY v2 header if `proxied`.
    pub async fn bind(
        address: SocketAddr,
        proxied: bool,
        adapter: Arc<Adapter>,
        limits: Limits,
        counters: Arc<ServerCounters>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        Ok(HttpServer {
            listener,
            proxied,
            adapter,
            limits,
            counters,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` becomes true (or its sender is dropped), then
    /// drain (see the module docs).
    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let mut connections = JoinSet::new();
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        info!(application = %self.adapter.name(), address = ?self.local_addr().ok(), proxied = self.proxied, "serving HTTP");
        loop {
            tokio::select! {
                // At max-connections, wait for one to end before accepting.
                accepted = accept(&self.listener, &permits) => match accepted {
                    Ok((stream, peer, permit)) => {
                        self.counters.connection();
                        let task = Connection {
                            proxied: self.proxied,
                            adapter: Arc::clone(&self.adapter),
                            limits: self.limits,
                            counters: Arc::clone(&self.counters),
                        };
                        let stopped = shutdown.clone();
                        connections.spawn(async move {
                            task.serve(stream, peer, stopped).await;
                            drop(permit);
                        });
                    }
                    Err(error) => {
                        warn!(%error, "HTTP accept failed");
                        // EMFILE and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        drop(self.listener);
        let running = connections.len();
        if running > 0 {
            debug!(application = %self.adapter.name(), running, "draining HTTP connections");
        }
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(application = %self.adapter.name(), left = connections.len(), "connections still open after the drain timeout; closing them");
            connections.shutdown().await;
        }
    }
}

/// The next connection, once a permit is free.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection permits closed"))?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, permit))
}

/// What one connection's task needs.
struct Connection {
    proxied: bool,
    adapter: Arc<Adapter>,
    limits: Limits,
    counters: Arc<ServerCounters>,
}

impl Connection {
    async fn serve(
        self,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (source, destination) = if self.proxied {
            match read_proxy_header(&mut stream, self.limits.header_timeout).await {
                Ok(addresses) => addresses,
                Err(refusal) => {
                    self.counters.proxy_refused();
                    warn!(application = %self.adapter.name(), %peer, %refusal, "connection refused");
                    return;
                }
            }
        } else {
            match stream.local_addr() {
                Ok(local) => (peer, local),
                Err(_) => return,
            }
        };
        let origin = Origin {
            source,
            destination,
            front: Front::Http,
        };
        let this = Arc::new(self);
        let service = {
            let this = Arc::clone(&this);
            hyper::service::service_fn(move |request| {
                let this = Arc::clone(&this);
                async move { Ok::<_, Infallible>(this.respond(request, origin).await) }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(this.limits.header_timeout)
            .max_buf_size(this.limits.max_header_bytes)
            .serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = served {
            debug!(application = %this.adapter.name(), %source, %error, "HTTP connection ended");
        }
    }

    async fn respond(&self, request: Request<Incoming>, origin: Origin) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let collected = tokio::time::timeout(
            self.limits.backend_timeout,
            Limited::new(body, self.limits.max_body_bytes).collect(),
        )
        .await;
        let body = match collected {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) => {
                self.counters.bad_request();
                let too_large = error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, text) = if too_large {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
                } else {
                    (StatusCode::BAD_REQUEST, "unreadable request body\n")
                };
                return plain(status, text).map(Full::new);
            }
            Err(_) => {
                self.counters.bad_request();
                return plain(StatusCode::REQUEST_TIMEOUT, "request body too slow\n")
                    .map(Full::new);
            }
        };
        self.adapter
            .handle(Request::from_parts(parts, body), origin)
            .await
            .map(Full::new)
    }
}
