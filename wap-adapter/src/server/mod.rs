//! The fronts: listeners that turn what arrives on an application's
//! addresses into [`Adapter`](crate::adapter::Adapter) requests.
//!
//! [`http`] serves HTTP/1.1 (TCP); [`wap`] serves WSP connectionless on
//! UDP 9200 and WSP over WTP on UDP 9201, using the hooks here: [`WapPort::of_destination`] to tell which WAP layer a
//! userspace-mode datagram is for (tunneld sends every port of an
//! application to one backend address; the PROXY header's destination port
//! tells them apart), [`proxied_datagram`] to take the PROXY header off a
//! datagram, and [`ServerCounters`] for what the fronts refuse.

pub mod http;
pub mod proxy_header;
pub mod wap;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use overlay_proto::counters::Labelled;
use tokio::io::AsyncReadExt;

use crate::config::{WSP_CONNECTIONLESS_PORT, WTP_PORT};
use proxy_header::{ProxyHeaderError, PREFIX_LEN};

/// Which WAP layer a datagram is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WapPort {
    /// WSP connectionless (port 9200).
    Connectionless,
    /// WSP over WTP (port 9201).
    Transaction,
}

impl WapPort {
    /// The layer a datagram sent to `port` (the PROXY header's destination
    /// port, in userspace mode) is for; `None` for other ports.
    pub fn of_destination(port: u16) -> Option<WapPort> {
        match port {
            WSP_CONNECTIONLESS_PORT => Some(WapPort::Connectionless),
            WTP_PORT => Some(WapPort::Transaction),
            _ => None,
        }
    }
}

/// Why a connection or datagram on a PROXY listener was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyRefusal {
    /// The header did not parse.
    #[error("bad PROXY v2 header: {0}")]
    Header(#[from] ProxyHeaderError),
    /// A valid header, but not tunneld's (LOCAL, or not IPv6).
    #[error("PROXY v2 header without an IPv6 source")]
    NotOverlay,
    /// The header did not arrive within `header-timeout`.
    #[error("no PROXY v2 header in time")]
    Timeout,
    /// The connection failed while the header was read.
    #[error("reading the PROXY v2 header: {0}")]
    Io(#[from] io::Error),
}

/// A userspace-mode datagram split into its overlay source, its overlay
/// destination and its payload (tunneld's replies need no header: each
/// source has its own flow socket in tunneld).
pub fn proxied_datagram(datagram: &[u8]) -> Result<(SocketAddr, SocketAddr, &[u8]), ProxyRefusal> {
    let header = proxy_header::parse(datagram)?;
    let (source, destination) = header.overlay_addresses().ok_or(ProxyRefusal::NotOverlay)?;
    let payload = datagram.get(header.len..).unwrap_or_default();
    Ok((source, destination, payload))
}

/// Read exactly one PROXY v2 header from `stream` (nothing after it), within
/// `timeout`; the overlay source and destination.
pub async fn read_proxy_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(SocketAddr, SocketAddr), ProxyRefusal> {
    let read = async {
        let mut header = vec![0u8; PREFIX_LEN];
        stream.read_exact(&mut header).await?;
        let len = proxy_header::header_len(&header)?;
        header.resize(len, 0);
        if let Some(rest) = header.get_mut(PREFIX_LEN..) {
            stream.read_exact(rest).await?;
        }
        let header = proxy_header::parse(&header)?;
        header.overlay_addresses().ok_or(ProxyRefusal::NotOverlay)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ProxyRefusal::Timeout))
}

/// What the fronts count (shared by an application's listeners).
#[derive(Debug, Default)]
pub struct ServerCounters {
    connections: AtomicU64,
    proxy_refused: AtomicU64,
    bad_requests: AtomicU64,
}

impl ServerCounters {
    /// A connection accepted.
    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection or datagram refused for its PROXY header.
    pub fn proxy_refused(&self) {
        self.proxy_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused before the adapter (body too large or unreadable).
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters.
    pub fn labelled(&self) -> Vec<Labelled> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Labelled::new(
                "connections",
                "connections accepted",
                get(&self.connections),
            ),
            Labelled::new(
                "proxy_refused",
                "connections or datagrams refused: no valid PROXY v2 header from tunneld",
                get(&self.proxy_refused),
            ),
            Labelled::new(
                "bad_requests",
                "requests refused before the adapter (body too large or unreadable)",
                get(&self.bad_requests),
            ),
        ]
    }

    /// The value of the counter `name` (tests, status).
    pub fn value(&self, name: &str) -> Option<u64> {
        self.labelled()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.value)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wap_ports() {
        assert_eq!(WapPort::of_destination(9200), Some(WapPort::Connectionless));
        assert_eq!(WapPort::of_destination(9201), Some(WapPort::Transaction));
        assert_eq!(WapPort::of_destination(80), None);
    }

    #[tokio::test]
    async fn stream_headers_are_read_exactly() {
        let mut bytes = proxy_header::SIGNATURE.to_vec();
        bytes.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        bytes.extend_from_slice(&"2002::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        bytes.extend_from_slice(&"2002::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        bytes.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]);
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let mut reader = &bytes[..];
        let (source, destination) = read_proxy_header(&mut reader, Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(source, "[2002::1]:12345".parse().unwrap());
        assert_eq!(destination, "[2002::2]:80".parse().unwrap());
        assert_eq!(reader, b"GET / HTTP/1.1\r\n");

        let (source, _, payload) = proxied_datagram(&bytes).unwrap();
        assert_eq!(source.port(), 12345);
        assert_eq!(payload, b"GET / HTTP/1.1\r\n");

        let mut missing: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let refused = read_proxy_header(&mut missing, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                ProxyRefusal::Header(ProxyHeaderError::BadSignature)
            ),
            "{refused}"
        );
    }
}
