//! Shared by the HTTP front tests: a fake tunneld control socket, and an
//! HTTP backend on loopback that records every request and answers with
//! what the test makes of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// Leases a fake tunneld knows, by address: user name and groups.
pub type Leases = HashMap<Ipv6Addr, (&'static str, Vec<&'static str>)>;

/// A Unix socket `tunneld.sock` in a directory, answering
/// `peer <address>` from its leases as tunneld's control socket does;
/// counts the requests. Stops when dropped.
pub struct FakeTunneld {
    asked: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeTunneld {
    pub fn start(dir: &Path, leases: Leases) -> FakeTunneld {
        let socket = dir.join("tunneld.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let asked = Arc::new(Mutex::new(0));
        let counter = Arc::clone(&asked);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *counter.lock().unwrap() += 1;
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                BufReader::new(read).read_line(&mut line).await.unwrap();
                let address = line.trim_end().strip_prefix("peer ").unwrap();
                let answer = match leases.get(&address.parse().unwrap()) {
                    Some((name, groups)) => serde_json::json!({ "lease": {
                        "name": name, "dn": format!("uid={name}"), "kind": "user",
                        "address": format!("{address}/128"), "groups": groups,
                        "serial": 1, "not_before": 0, "not_after": u64::from(u32::MAX),
                    }}),
                    None => serde_json::json!({ "unknown": address }),
                };
                write
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
            }
        });
        FakeTunneld { asked, task }
    }

    /// How many `peer` questions it was asked.
    pub fn asked(&self) -> u32 {
        *self.asked.lock().unwrap()
    }
}

impl Drop for FakeTunneld {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// The values of header `name` (lower case), in order.
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A recording HTTP backend on 127.0.0.1; stops when dropped.
pub struct Backend {
    pub address: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    /// Serve every request with `respond`'s answer, after `delay`.
    pub async fn serve(
        delay: Duration,
        respond: impl Fn(&Seen) -> hyper::Response<Full<Bytes>> + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let respond = Arc::new(respond);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                let respond = Arc::clone(&respond);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let record = Arc::clone(&record);
                            let respond = Arc::clone(&respond);
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.unwrap().to_bytes();
                                let seen = Seen {
                                    uri: parts.uri.to_string(),
                                    headers: parts
                                        .headers
                                        .iter()
                                        .map(|(n, v)| {
                                            (n.to_string(), v.to_str().unwrap().to_owned())
                                        })
                                        .collect(),
                                    body: body.to_vec(),
                                };
                                record.lock().unwrap().push(seen.clone());
                                tokio::time::sleep(delay).await;
                                Ok::<_, Infallible>(respond(&seen))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            address,
            seen,
            task,
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}
