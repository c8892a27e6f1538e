//! Client role: the SOCKS5 proxy (RFC 1928, CONNECT).

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use super::stack::{ConnectError, StackHandle};
use super::{COPY_BUFFER, SOCKS_HANDSHAKE_TIMEOUT};

/// SOCKS5 reply codes (RFC 1928 §6).
mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
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
/// IPv6 addresses, and domain names only when they are IPv6 literals.
/// Runs until accepting fails.
pub async fn serve_socks(listener: TcpListener, stack: StackHandle) -> io::Result<()> {
    info!(listen = ?listener.local_addr().ok(), "SOCKS5 proxy listening");
    loop {
        let (client, from) = listener.accept().await?;
        let stack = stack.clone();
        tokio::spawn(async move {
            if let Err(error) = socks_session(client, &stack).await {
                debug!(%from, %error, "SOCKS5 session ended");
            }
        });
    }
}

/// A SOCKS5 request that cannot be served, with the reply it gets.
#[derive(Debug)]
struct Refusal(u8);

async fn socks_session(mut client: TcpStream, stack: &StackHandle) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let request = tokio::time::timeout(SOCKS_HANDSHAKE_TIMEOUT, socks_handshake(&mut client))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    let dst = match request {
        Ok(dst) => dst,
        Err(Refusal(code)) => {
            client.write_all(&socks_reply(code, None)).await?;
            return Ok(());
        }
    };
    let mut stream = match stack.connect(dst).await {
        Ok(stream) => stream,
        Err(error) => {
            let code = match error {
                ConnectError::Refused => reply::CONNECTION_REFUSED,
                ConnectError::TimedOut => reply::HOST_UNREACHABLE,
                _ => reply::GENERAL_FAILURE,
            };
            debug!(%dst, %error, "SOCKS5 CONNECT failed");
            client.write_all(&socks_reply(code, None)).await?;
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

/// Method negotiation and the request. The outer error ends the session
/// without a reply; a [`Refusal`] gets one.
async fn socks_handshake(client: &mut TcpStream) -> io::Result<Result<SocketAddrV6, Refusal>> {
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
    let ip = match atyp {
        ATYP_IPV4 => {
            let mut addr = [0u8; 4];
            client.read_exact(&mut addr).await?;
            None
        }
        ATYP_IPV6 => {
            let mut addr = [0u8; 16];
            client.read_exact(&mut addr).await?;
            Some(Ok(Ipv6Addr::from(addr)))
        }
        ATYP_DOMAIN => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            Some(parse_ipv6_literal(&name).ok_or(Refusal(reply::HOST_UNREACHABLE)))
        }
        _ => {
            return Ok(Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED)));
        }
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    if command != CMD_CONNECT {
        return Ok(Err(Refusal(reply::COMMAND_NOT_SUPPORTED)));
    }
    let ip = match ip {
        None => return Ok(Err(Refusal(reply::ADDRESS_TYPE_NOT_SUPPORTED))),
        Some(Err(refusal)) => return Ok(Err(refusal)),
        Some(Ok(ip)) => ip,
    };
    Ok(Ok(SocketAddrV6::new(ip, u16::from_be_bytes(port), 0, 0)))
}

/// A domain name that is an IPv6 literal, with or without brackets.
fn parse_ipv6_literal(name: &[u8]) -> Option<Ipv6Addr> {
    let name = std::str::from_utf8(name).ok()?;
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    match name.parse::<IpAddr>().ok()? {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
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
    fn ipv6_literals_only() {
        let cases: &[(&str, Option<&str>)] = &[
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("192.0.2.1", None),
            ("example.org", None),
            ("[2001:db8::1", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                parse_ipv6_literal(name.as_bytes()),
                want.map(|w| w.parse().unwrap()),
                "{name}"
            );
        }
        assert_eq!(parse_ipv6_literal(&[0xff, 0xfe]), None);
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
