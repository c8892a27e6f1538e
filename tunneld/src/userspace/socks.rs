//! Client role: the SOCKS5 proxy (RFC 1928, CONNECT).
//!
//! A domain name is an IPv6 literal or an overlay name, which the
//! [`OverlayResolver`] turns into an address; the host's resolver is never
//! asked. Replies (RFC 1928 §6) by cause:
//!
//! | cause | reply |
//! |-------|-------|
//! | name outside the overlay zone (never resolved) | 0x02 not allowed by ruleset |
//! | ICMPv6 administratively prohibited (access control) | 0x02 not allowed by ruleset |
//! | ICMPv6 no route (no peer routes the address) | 0x03 network unreachable |
//! | overlay name unknown, connect timed out, ICMPv6 address unreachable | 0x04 host unreachable |
//! | reset by the peer | 0x05 connection refused |
//! | BIND, UDP ASSOCIATE | 0x07 command not supported |
//! | IPv4 address or IPv4 literal | 0x08 address type not supported |
//! | anything else (resolver down, no free port) | 0x01 general failure |

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::stack::{ConnectError, StackHandle};
use super::{COPY_BUFFER, SOCKS_HANDSHAKE_TIMEOUT};
use crate::names::{OverlayResolver, ResolveError};

/// SOCKS5 reply codes (RFC 1928 §6).
mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const NETWORK_UNREACHABLE: u8 = 0x03;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

const SOCKS_VERSION: u8 = 0x05;
const METHOD_NO_AUTH: u8 = 0x00;
const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// Client role: a SOCKS5 proxy (RFC 1928) on `listener` whose CONNECTs
/// open connections through the overlay. No authentication; CONNECT only;
/// IPv6 addresses, and domain names: IPv6 literals, or overlay names that
/// `resolver` answers (see the module documentation for the replies).
/// Runs until accepting fails.
pub async fn serve_socks(
    listener: TcpListener,
    stack: StackHandle,
    resolver: Arc<dyn OverlayResolver>,
) -> io::Result<()> {
    info!(listen = ?listener.local_addr().ok(), "SOCKS5 proxy listening");
    loop {
        let (client, from) = listener.accept().await?;
        let stack = stack.clone();
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Err(error) = socks_session(client, &stack, &*resolver).await {
                debug!(%from, %error, "SOCKS5 session ended");
            }
        });
    }
}

/// A SOCKS5 request that cannot be served, with the reply it gets.
#[derive(Debug)]
struct Refusal(u8);

/// Where a CONNECT goes.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// An address (or an IPv6 literal).
    Address(SocketAddrV6),
    /// A name to resolve in the overlay, and the port.
    Name(String, u16),
}

async fn socks_session(
    mut client: TcpStream,
    stack: &StackHandle,
    resolver: &dyn OverlayResolver,
) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let request = tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, socks_handshake(&mut client))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let dst = match request {
        Ok(Target::Address(dst)) => Ok(dst),
        Ok(Target::Name(name, port)) => match resolver.resolve(&name).await {
            Ok(ip) => {
                debug!(%name, %ip, "SOCKS5 name resolved in the overlay");
                Ok(SocketAddrV6::new(ip, port, 0, 0))
            }
            Err(error) => {
                debug!(%name, %error, "SOCKS5 name not resolved");
                Err(Refusal(resolve_reply(&error)))
            }
        },
        Err(refusal) => Err(refusal),
    };
    let dst = match dst {
        Ok(dst) => dst,
        Err(Refusal(code)) => {
            client.write_all(&socks_reply(code, None)).await?;
            return Ok(());
        }
    };
    let mut stream = match stack.connect(dst).await {
        Ok(stream) => stream,
        Err(error) => {
            debug!(%dst, %error, "SOCKS5 CONNECT failed");
            client
                .write_all(&socks_reply(connect_reply(error), None))
                .await?;
            return Ok(());
        }
    };
    client
        .write_all(&socks_reply(reply::SUCCEEDED, stream.local_addr()))
        .await?;
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut stream, COPY_BUFFER, COPY_BUFFER)
        .await?;
    Ok(())
}

/// The reply to a failed overlay connect.
fn connect_reply(error: ConnectError) -> u8 {
    match error {
        ConnectError::Prohibited => reply::NOT_ALLOWED,
        ConnectError::NoRoute => reply::NETWORK_UNREACHABLE,
        ConnectError::TimedOut | ConnectError::Unreachable => reply::HOST_UNREACHABLE,
        ConnectError::Refused => reply::CONNECTION_REFUSED,
        _ => reply::GENERAL_FAILURE,
    }
}

/// The reply to a name the resolver did not answer.
fn resolve_reply(error: &ResolveError) -> u8 {
    match error {
        ResolveError::OutsideZone => reply::NOT_ALLOWED,
        ResolveError::NotFound => reply::HOST_UNREACHABLE,
        _ => reply::GENERAL_FAILURE,
    }
}

/// Method negotiation and the request. The outer error ends the session
/// without a reply; a [`Refusal`] gets one.
async fn socks_handshake(client: &mut TcpStream) -> io::Result<Result<Target, Refusal>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let [version, count] = head;
    if version != SOCKS_VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(count)];
    client.read_exact(&mut methods).await?;
    if !methods.contains(&METHOD_NO_AUTH) {
        client
            .write_all(&[SOCKS_VERSION, METHOD_NONE_ACCEPTABLE])
            .await?;
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "client offers no acceptable method",
        ));
    }
    client.write_all(&[SOCKS_VERSION, METHOD_NO_AUTH]).await?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let [version, command, _reserved, atyp] = request;
    if version != SOCKS_VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not SOCKS5"));
    }
    // Read the whole address before answering, whatever it is.
    let host = match atyp {
        ATYP_IPV4 => {
            let mut addr = [0u8; 4];
            client.read_exact(&mut addr).await?;
            Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED))
        }
        ATYP_IPV6 => {
            let mut addr = [0u8; 16];
            client.read_exact(&mut addr).await?;
            Ok(Host::Address(Ipv6Addr::from(addr)))
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            parse_domain(&name)
        }
        _ => {
            return Ok(Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED)));
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    if command != CMD_CONNECT {
        return Ok(Err(Refusal(reply::COMMAND_NOT_SUPPORTED)));
    }
    Ok(host.map(|host| match host {
        Host::Address(ip) => Target::Address(SocketAddrV6::new(ip, port, 0, 0)),
        Host::Name(name) => Target::Name(name, port),
    }))
}

/// A request's host before the port is read.
#[derive(Debug, PartialEq, Eq)]
enum Host {
    Address(Ipv6Addr),
    Name(String),
}

/// A SOCKS domain name: an IPv6 literal (with or without brackets), an
/// IPv4 literal (refused: the overlay is IPv6), or a name for the overlay
/// resolver. Bytes that are not UTF-8 are no name of the overlay.
fn parse_domain(name: &[u8]) -> Result<Host, Refusal> {
    let Ok(name) = std::str::from_utf8(name) else {
        return Err(Refusal(reply::NOT_ALLOWED));
    };
    let literal = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match literal.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => Ok(Host::Address(ip)),
        Ok(IpAddr::V4(_)) => Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED)),
        Err(_) => Ok(Host::Name(name.to_owned())),
    }
}

/// A reply: the code and the bound address (`::`, port 0 when none).
fn socks_reply(code: u8, bound: Option<SocketAddrV6>) -> [u8; 22] {
    let bound = bound.unwrap_or(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut reply = [0u8; 22];
    let fields = [SOCKS_VERSION, code, 0x00, ATYP_IPV6]
        .into_iter()
        .chain(bound.ip().octets())
        .chain(bound.port().to_be_bytes());
    for (slot, byte) in reply.iter_mut().zip(fields) {
        *slot = byte;
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_names_and_literals() {
        let v6 = |s: &str| Ok(Host::Address(s.parse().unwrap()));
        let name = |s: &str| Ok(Host::Name(s.into()));
        let cases: Vec<(&[u8], Result<Host, u8>)> = vec![
            (b"2001:db8::1", v6("2001:db8::1")),
            (b"[2001:db8::1]", v6("2001:db8::1")),
            (b"192.0.2.1", Err(0x08)),
            (b"[192.0.2.1]", Err(0x08)),
            (b"example.org", name("example.org")),
            (
                b"alice.users.permanet.internal",
                name("alice.users.permanet.internal"),
            ),
            (b"[2001:db8::1", name("[2001:db8::1")),
            (b"", name("")),
            (&[0xff, 0xfe], Err(0x02)),
        ];
        for (raw, want) in cases {
            let got = parse_domain(raw).map_err(|Refusal(code)| code);
            assert_eq!(got, want, "{raw:?}");
        }
    }

    #[test]
    fn reply_codes_by_cause() {
        assert_eq!(resolve_reply(&ResolveError::OutsideZone), 0x02);
        assert_eq!(resolve_reply(&ResolveError::NotFound), 0x04);
        assert_eq!(resolve_reply(&ResolveError::Unavailable("x".into())), 0x01);
        assert_eq!(connect_reply(ConnectError::Prohibited), 0x02);
        assert_eq!(connect_reply(ConnectError::NoRoute), 0x03);
        assert_eq!(connect_reply(ConnectError::Unreachable), 0x04);
        assert_eq!(connect_reply(ConnectError::TimedOut), 0x04);
        assert_eq!(connect_reply(ConnectError::Refused), 0x05);
        assert_eq!(connect_reply(ConnectError::NoPort), 0x01);
    }

    #[test]
    fn socks_reply_layout() {
        let bound: SocketAddrV6 = "[2001:db8::2]:1080".parse().unwrap();
        let r = socks_reply(reply::SUCCEEDED, Some(bound));
        assert_eq!(r[..4], [0x05, 0x00, 0x00, 0x04]);
        assert_eq!(r[4..20], bound.ip().octets());
        assert_eq!(r[20..], [0x04, 0x38]);
        let r = socks_reply(reply::COMMAND_NOT_SUPPORTED, None);
        assert_eq!(r[1], 0x07);
        assert!(r[4..].iter().all(|&b| b == 0));
    }
}
