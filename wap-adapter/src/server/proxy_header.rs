//! PROXY protocol version 2 headers (HAProxy's "The PROXY protocol", §2.2),
//! as tunneld's userspace mode puts them before each forwarded TCP
//! connection and each UDP datagram (tunneld/src/userspace/application.rs).
//!
//! sans-IO: [`header_len`] says from the fixed 16-byte prefix how long the
//! whole header is, [`parse`] reads a complete header (and, for a datagram,
//! says where the payload starts). Only version 2 is accepted (no text
//! version 1). TLVs after the addresses are skipped. A PROXY listener
//! refuses a connection or datagram whose header does not parse, is a
//! `LOCAL` command, or has no IPv6 source: tunneld always sends `PROXY` with
//! IPv6 addresses, so anything else did not come from it.
//!
//! Crates considered: `ppp` 2.3 needs thiserror 1 (a second thiserror in
//! the tree); the format is small and fixed, so it is parsed here, with a
//! fuzz target (`fuzz/fuzz_targets/proxy_header.rs`).

#![deny(clippy::indexing_slicing)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Length of the fixed part: signature, version/command, family/protocol,
/// length.
pub const PREFIX_LEN: usize = 16;

/// Longest header accepted (addresses plus TLVs); tunneld sends 52 bytes.
pub const MAX_HEADER_LEN: usize = 512;

/// The header's command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The proxy's own connection (health check): no client addresses.
    Local,
    /// A relayed connection: the addresses are the client's.
    Proxy,
}

/// The relayed transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `UNSPEC`.
    Unspecified,
    /// `STREAM` (TCP).
    Stream,
    /// `DGRAM` (UDP).
    Datagram,
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// `LOCAL` or `PROXY`.
    pub command: Command,
    /// The transport byte's protocol.
    pub transport: Transport,
    /// Source and destination, for `AF_INET` and `AF_INET6`; `None` for
    /// `AF_UNSPEC` (and `AF_UNIX`, whose paths are not kept).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// The header's whole length; a datagram's payload starts here.
    pub len: usize,
}

impl ProxyHeader {
    /// The overlay source and destination if this header is what tunneld
    /// sends (`PROXY`, IPv6 addresses); `None` otherwise.
    pub fn overlay_addresses(&self) -> Option<(SocketAddr, SocketAddr)> {
        match (self.command, self.addresses) {
            (Command::Proxy, Some((source @ SocketAddr::V6(_), destination))) => {
                Some((source, destination))
            }
            _ => None,
        }
    }
}

/// Why bytes are not a PROXY v2 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyHeaderError {
    /// Fewer bytes than the header needs.
    #[error("truncated: {needed} bytes needed, {got} given")]
    Truncated {
        /// The header's length (or the prefix's, if it is incomplete).
        needed: usize,
        /// The bytes given.
        got: usize,
    },
    /// Not the v2 signature (a v1 text header, or no header at all).
    #[error("no PROXY v2 signature")]
    BadSignature,
    /// A version other than 2.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A command other than LOCAL (0) or PROXY (1).
    #[error("unknown command {0}")]
    UnknownCommand(u8),
    /// An address family outside UNSPEC, INET, INET6, UNIX.
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    /// A transport protocol outside UNSPEC, STREAM, DGRAM.
    #[error("unknown transport protocol {0}")]
    UnknownTransport(u8),
    /// The length field is shorter than the family's addresses.
    #[error("length {len} too short for the address family (needs {needed})")]
    ShortAddresses {
        /// The length field.
        len: usize,
        /// The addresses' size.
        needed: usize,
    },
    /// A header longer than [`MAX_HEADER_LEN`].
    #[error("header of {0} bytes is too long")]
    TooLong(usize),
}

impl ProxyHeaderError {
    /// A stable snake_case label for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyHeaderError::Truncated { .. } => "truncated",
            ProxyHeaderError::BadSignature => "bad_signature",
            ProxyHeaderError::UnsupportedVersion(_) => "unsupported_version",
            ProxyHeaderError::UnknownCommand(_) => "unknown_command",
            ProxyHeaderError::UnknownFamily(_) => "unknown_family",
            ProxyHeaderError::UnknownTransport(_) => "unknown_transport",
            ProxyHeaderError::ShortAddresses { .. } => "short_addresses",
            ProxyHeaderError::TooLong(_) => "too_long",
        }
    }
}

/// The whole header's length from its first [`PREFIX_LEN`] bytes (checks
/// the signature, version and command; the rest is checked by [`parse`]).
pub fn header_len(prefix: &[u8]) -> Result<usize, ProxyHeaderError> {
    let truncated = ProxyHeaderError::Truncated {
        needed: PREFIX_LEN,
        got: prefix.len(),
    };
    let Some(signature) = prefix.get(..SIGNATURE.len()) else {
        // A short prefix that already differs is no header at all.
        return Err(if SIGNATURE.starts_with(prefix) {
            truncated
        } else {
            ProxyHeaderError::BadSignature
        });
    };
    if signature != SIGNATURE {
        return Err(ProxyHeaderError::BadSignature);
    }
    let (Some(&version_command), Some(&len_hi), Some(&len_lo)) =
        (prefix.get(12), prefix.get(14), prefix.get(15))
    else {
        return Err(truncated);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::UnsupportedVersion(version_command >> 4));
    }
    if version_command & 0x0f > 1 {
        return Err(ProxyHeaderError::UnknownCommand(version_command & 0x0f));
    }
    let len = PREFIX_LEN + usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if len > MAX_HEADER_LEN {
        return Err(ProxyHeaderError::TooLong(len));
    }
    Ok(len)
}

/// Parse the header at the start of `bytes` (which may go on: a datagram's
/// payload, or nothing else for a stream).
pub fn parse(bytes: &[u8]) -> Result<ProxyHeader, ProxyHeaderError> {
    let len = header_len(bytes)?;
    let Some(header) = bytes.get(..len) else {
        return Err(ProxyHeaderError::Truncated {
            needed: len,
            got: bytes.len(),
        });
    };
    let (Some(&version_command), Some(&family_transport), Some(body)) =
        (header.get(12), header.get(13), header.get(PREFIX_LEN..))
    else {
        return Err(ProxyHeaderError::Truncated {
            needed: PREFIX_LEN,
            got: header.len(),
        });
    };
    let command = if version_command & 0x0f == 0 {
        Command::Local
    } else {
        Command::Proxy
    };
    let transport = match family_transport & 0x0f {
        0 => Transport::Unspecified,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        other => return Err(ProxyHeaderError::UnknownTransport(other)),
    };
    let needed = match family_transport >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        other => return Err(ProxyHeaderError::UnknownFamily(other)),
    };
    let short = ProxyHeaderError::ShortAddresses {
        len: body.len(),
        needed,
    };
    let addresses = match family_transport >> 4 {
        1 => {
            let a = body.get(..12).ok_or(short)?;
            let ip = |at: usize| -> Result<Ipv4Addr, ProxyHeaderError> {
                let octets: [u8; 4] = a
                    .get(at..at + 4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(short)?;
                Ok(Ipv4Addr::from(octets))
            };
            Some((
                SocketAddr::new(ip(0)?.into(), port(a, 8).ok_or(short)?),
                SocketAddr::new(ip(4)?.into(), port(a, 10).ok_or(short)?),
            ))
        }
        2 => {
            let a = body.get(..36).ok_or(short)?;
            let ip = |at: usize| -> Result<Ipv6Addr, ProxyHeaderError> {
                let octets: [u8; 16] = a
                    .get(at..at + 16)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(short)?;
                Ok(Ipv6Addr::from(octets))
            };
            Some((
                SocketAddr::new(ip(0)?.into(), port(a, 32).ok_or(short)?),
                SocketAddr::new(ip(16)?.into(), port(a, 34).ok_or(short)?),
            ))
        }
        3 => {
            body.get(..216).ok_or(short)?;
            None
        }
        _ => None,
    };
    Ok(ProxyHeader {
        command,
        transport,
        addresses,
        len,
    })
}

fn port(bytes: &[u8], at: usize) -> Option<u16> {
    let pair: [u8; 2] = bytes.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(pair))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// tunneld's header for [2002:102:304:1::a]:49152 -> [2002:b16:212c:1::80]:443
    /// (its known-bytes test, tunneld/src/userspace/application.rs).
    fn tunneld_header(family: &str) -> Vec<u8> {
        hex::decode(
            [
                "0d0a0d0a000d0a515549540a21",
                family,
                "0024",
                "2002010203040001000000000000000a",
                "20020b16212c00010000000000000080",
                "c00001bb",
            ]
            .concat(),
        )
        .unwrap()
    }

    #[test]
    fn tunneld_headers_parse() {
        for (family, transport) in [("21", Transport::Stream), ("22", Transport::Datagram)] {
            let mut bytes = tunneld_header(family);
            assert_eq!(header_len(&bytes[..16]).unwrap(), 52);
            bytes.extend_from_slice(b"payload");
            let header = parse(&bytes).unwrap();
            assert_eq!(header.transport, transport);
            assert_eq!(header.command, Command::Proxy);
            assert_eq!(header.len, 52);
            assert_eq!(&bytes[header.len..], b"payload");
            let (source, destination) = header.overlay_addresses().unwrap();
            assert_eq!(source, "[2002:102:304:1::a]:49152".parse().unwrap());
            assert_eq!(destination, "[2002:b16:212c:1::80]:443".parse().unwrap());
        }
    }

    #[test]
    fn ipv4_local_unspec_and_tlvs() {
        let mut v4 = SIGNATURE.to_vec();
        v4.extend_from_slice(&[0x21, 0x11, 0x00, 0x0f]);
        v4.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2, 0x30, 0x39, 0x00, 0x50]);
        v4.extend_from_slice(&[0x04, 0x00, 0x00]); // an empty NOOP TLV
        let header = parse(&v4).unwrap();
        assert_eq!(header.len, 31);
        assert_eq!(
            header.addresses,
            Some((
                "192.0.2.1:12345".parse().unwrap(),
                "192.0.2.2:80".parse().unwrap()
            ))
        );
        assert_eq!(
            header.overlay_addresses(),
            None,
            "not IPv6: not from tunneld"
        );

        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        let header = parse(&local).unwrap();
        assert_eq!(header.command, Command::Local);
        assert_eq!(header.addresses, None);
        assert_eq!(header.overlay_addresses(), None);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let good = tunneld_header("21");
        let with = |at: usize, byte: u8| {
            let mut b = good.clone();
            b[at] = byte;
            b
        };
        let cases: Vec<(Vec<u8>, ProxyHeaderError)> = vec![
            (
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                ProxyHeaderError::BadSignature,
            ),
            (
                b"PROXY TCP6 ::1 ::1 1 2\r\n".to_vec(),
                ProxyHeaderError::BadSignature,
            ),
            (
                good[..5].to_vec(),
                ProxyHeaderError::Truncated { needed: 16, got: 5 },
            ),
            (
                good[..40].to_vec(),
                ProxyHeaderError::Truncated {
                    needed: 52,
                    got: 40,
                },
            ),
            (with(12, 0x11), ProxyHeaderError::UnsupportedVersion(1)),
            (with(12, 0x22), ProxyHeaderError::UnknownCommand(2)),
            (with(13, 0x51), ProxyHeaderError::UnknownFamily(5)),
            (with(13, 0x23), ProxyHeaderError::UnknownTransport(3)),
            (
                with(15, 0x10),
                ProxyHeaderError::ShortAddresses {
                    len: 16,
                    needed: 36,
                },
            ),
            (with(14, 0x02), ProxyHeaderError::TooLong(16 + 0x224)),
        ];
        for (bytes, error) in cases {
            assert_eq!(parse(&bytes).unwrap_err(), error, "{}", hex::encode(&bytes));
        }
    }
}
