//! ICMPv6 errors the data plane sends back to the sender of a packet it
//! cannot carry.
//!
//! Three builders over caller buffers, all Destination Unreachable or
//! Packet Too Big (RFC 4443 §3.1, §3.2):
//! - [`prohibited`]: code 1, "communication with destination
//!   administratively prohibited", the answer to a packet the [access
//!   policy](crate::access) refuses, sent from the refused destination;
//! - [`no_route`]: code 0, "no route to destination", the answer to an
//!   inner packet whose destination no peer's lease covers. Code 0, not 3
//!   ("address unreachable"): the cryptokey routing table is this node's
//!   routing table and it has no entry for the destination, which is the
//!   case RFC 4443 gives code 0 for; code 3 is for a destination a route
//!   leads to but that cannot be resolved on the link (as a failed
//!   neighbor discovery). Sent from this node's own address (§2.2);
//! - [`packet_too_big`]: type 2 with the tunnel MTU, the answer to an
//!   inner packet longer than the tunnel carries, also from this node's
//!   address.
//!
//! [`IcmpLimiter`] (overlay-proto's, shared with addrd's home agent) is
//! the token bucket that keeps a flood of refused
//! packets from becoming a flood of errors (RFC 4443 §2.4 f). Following
//! RFC 4443 §2.4 e, no error answers an ICMPv6 error, a packet from the
//! unspecified or a multicast source, a packet to a multicast destination
//! (Packet Too Big excepted, §2.4 e.3), or a non-first fragment (whose
//! upper layer is unknown).
#![deny(clippy::indexing_slicing)]

use std::net::Ipv6Addr;

/// The IPv6 minimum MTU: an ICMPv6 error, IPv6 header included, is never
/// longer (RFC 4443 §2.4 c).
pub const MIN_MTU: usize = 1280;

/// Length of the fixed IPv6 header.
const IPV6_HEADER_LEN: usize = 40;
/// Length of the ICMPv6 error header: type, code, checksum, 4 unused bytes.
const ICMPV6_ERROR_HEADER_LEN: usize = 8;
/// Next-header value of ICMPv6.
const NEXT_HEADER_ICMPV6: u8 = 0x3a;
/// ICMPv6 type Destination Unreachable.
const TYPE_DESTINATION_UNREACHABLE: u8 = 0x01;
/// Its code "no route to destination".
const CODE_NO_ROUTE: u8 = 0x00;
/// Its code "communication with destination administratively prohibited".
const CODE_ADMINISTRATIVELY_PROHIBITED: u8 = 0x01;
/// ICMPv6 type Packet Too Big.
const TYPE_PACKET_TOO_BIG: u8 = 0x02;
/// ICMPv6 types below this are errors.
const FIRST_INFORMATIONAL_TYPE: u8 = 0x80;
/// Hop limit of the errors we originate.
const HOP_LIMIT: u8 = 64;
/// Extension headers walked before giving up on finding the upper layer.
const MAX_EXTENSION_HEADERS: usize = 8;

/// Why no ICMPv6 error answers a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoAnswer {
    /// Not an IPv6 packet, or truncated before the upper-layer header.
    #[error("not a complete IPv6 packet")]
    Malformed,
    /// The packet is itself an ICMPv6 error.
    #[error("the packet is an ICMPv6 error")]
    IcmpError,
    /// A non-first fragment: its upper layer is unknown.
    #[error("the packet is a non-first fragment")]
    Fragment,
    /// The source is unspecified or multicast, or the destination is
    /// multicast.
    #[error("unspecified or multicast address")]
    Address,
    /// The output buffer is shorter than the error.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl NoAnswer {
    /// A stable snake_case label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoAnswer::Malformed => "malformed",
            NoAnswer::IcmpError => "icmp_error",
            NoAnswer::Fragment => "fragment",
            NoAnswer::Address => "address",
            NoAnswer::BufferTooSmall => "buffer_too_small",
        }
    }
}

/// Write into `out` the IPv6 packet that answers `offending` with an
/// ICMPv6 Destination Unreachable, code 1 (administratively prohibited),
/// and return its length (at most [`MIN_MTU`]).
///
/// The error goes from the offending packet's destination to its source,
/// with hop limit 64, and quotes as much of the offending packet as fits in
/// [`MIN_MTU`] bytes. `out` needs `min(MIN_MTU, 48 + offending.len())`
/// bytes.
pub fn prohibited(offending: &[u8], out: &mut [u8]) -> Result<usize, NoAnswer> {
    check_answerable(offending, false)?;
    let (_, destination) = addresses(offending).ok_or(NoAnswer::Malformed)?;
    build(
        [
            TYPE_DESTINATION_UNREACHABLE,
            CODE_ADMINISTRATIVELY_PROHIBITED,
        ],
        [0; 4],
        destination,
        offending,
        out,
    )
}

/// Write into `out` the IPv6 packet that answers `offending` with an
/// ICMPv6 Destination Unreachable, code 0 (no route to destination), from
/// `source` (this node's address), and return its length. Otherwise like
/// [`prohibited`].
pub fn no_route(offending: &[u8], source: Ipv6Addr, out: &mut [u8]) -> Result<usize, NoAnswer> {
    check_answerable(offending, false)?;
    build(
        [TYPE_DESTINATION_UNREACHABLE, CODE_NO_ROUTE],
        [0; 4],
        source.octets(),
        offending,
        out,
    )
}

/// Write into `out` the IPv6 packet that answers `offending` with an
/// ICMPv6 Packet Too Big carrying `mtu` (the largest packet the next hop
/// takes), from `source` (this node's address), and return its length.
/// Unlike the other errors it may answer a packet to a multicast
/// destination (RFC 4443 §2.4 e.3). Otherwise like [`prohibited`].
pub fn packet_too_big(
    offending: &[u8],
    source: Ipv6Addr,
    mtu: u32,
    out: &mut [u8],
) -> Result<usize, NoAnswer> {
    check_answerable(offending, true)?;
    build(
        [TYPE_PACKET_TOO_BIG, 0x00],
        mtu.to_be_bytes(),
        source.octets(),
        offending,
        out,
    )
}

/// The error `[type, code]` with the 4-byte field after the checksum set
/// to `word`, from `answer_source` to the offending packet's source,
/// quoting as much of `offending` as fits in [`MIN_MTU`].
fn build(
    type_code: [u8; 2],
    word: [u8; 4],
    answer_source: [u8; 16],
    offending: &[u8],
    out: &mut [u8],
) -> Result<usize, NoAnswer> {
    let (answer_destination, _) = addresses(offending).ok_or(NoAnswer::Malformed)?;
    let quoted_len = offending
        .len()
        .min(MIN_MTU - IPV6_HEADER_LEN - ICMPV6_ERROR_HEADER_LEN);
    let quoted = offending.get(..quoted_len).ok_or(NoAnswer::Malformed)?;
    let icmp_len = ICMPV6_ERROR_HEADER_LEN + quoted_len;
    let total = IPV6_HEADER_LEN + icmp_len;
    let out = out.get_mut(..total).ok_or(NoAnswer::BufferTooSmall)?;
    let (header, icmp) = out
        .split_at_mut_checked(IPV6_HEADER_LEN)
        .ok_or(NoAnswer::BufferTooSmall)?;
    let payload_len = u16::try_from(icmp_len).map_err(|_| NoAnswer::BufferTooSmall)?;
    header.fill(0);
    header
        .iter_mut()
        .zip(
            [0x60, 0x00, 0x00, 0x00]
                .into_iter()
                .chain(payload_len.to_be_bytes())
                .chain([NEXT_HEADER_ICMPV6, HOP_LIMIT])
                .chain(answer_source)
                .chain(answer_destination),
        )
        .for_each(|(slot, byte)| *slot = byte);
    let (icmp_header, body) = icmp
        .split_at_mut_checked(ICMPV6_ERROR_HEADER_LEN)
        .ok_or(NoAnswer::BufferTooSmall)?;
    icmp_header
        .iter_mut()
        .zip(type_code.into_iter().chain([0x00, 0x00]).chain(word))
        .for_each(|(slot, byte)| *slot = byte);
    body.copy_from_slice(quoted);
    let checksum = icmpv6_checksum(&answer_source, &answer_destination, icmp);
    if let Some(slot) = icmp.get_mut(2..4) {
        slot.copy_from_slice(&checksum.to_be_bytes());
    }
    Ok(total)
}

/// The ICMPv6 checksum of `message` (checksum field zero) between `source`
/// and `destination`: the one's complement of the one's-complement sum of
/// the IPv6 pseudo-header and the message (RFC 4443 §2.3, RFC 8200 §8.1).
fn icmpv6_checksum(source: &[u8; 16], destination: &[u8; 16], message: &[u8]) -> u16 {
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = match *pair {
                [hi, lo] => u16::from_be_bytes([hi, lo]),
                [hi] => u16::from_be_bytes([hi, 0]),
                _ => 0,
            };
            sum += u64::from(word);
        }
    };
    add(source);
    add(destination);
    add(&length.to_be_bytes());
    add(&[0, 0, 0, NEXT_HEADER_ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves `sum` at most 0xffff.
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// The source and destination of an IPv6 header.
fn addresses(packet: &[u8]) -> Option<([u8; 16], [u8; 16])> {
    let source = packet.get(8..24)?.try_into().ok()?;
    let destination = packet.get(24..40)?.try_into().ok()?;
    Some((source, destination))
}

/// Whether RFC 4443 §2.4 e lets us answer `packet` with an error;
/// `to_multicast`: even when its destination is multicast (Packet Too
/// Big).
fn check_answerable(packet: &[u8], to_multicast: bool) -> Result<(), NoAnswer> {
    let header = packet.get(..IPV6_HEADER_LEN).ok_or(NoAnswer::Malformed)?;
    if header.first().map(|b| b >> 4) != Some(6) {
        return Err(NoAnswer::Malformed);
    }
    let (source, destination) = addresses(packet).ok_or(NoAnswer::Malformed)?;
    let (source, destination) = (Ipv6Addr::from(source), Ipv6Addr::from(destination));
    if source.is_unspecified()
        || source.is_multicast()
        || (destination.is_multicast() && !to_multicast)
    {
        return Err(NoAnswer::Address);
    }
    let mut next = *header.get(6).ok_or(NoAnswer::Malformed)?;
    let mut offset = IPV6_HEADER_LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let ext = packet.get(offset..).ok_or(NoAnswer::Malformed)?;
        match next {
            NEXT_HEADER_ICMPV6 => {
                let message_type = *ext.first().ok_or(NoAnswer::Malformed)?;
                return if message_type < FIRST_INFORMATIONAL_TYPE {
                    Err(NoAnswer::IcmpError)
                } else {
                    Ok(())
                };
            }
            // Hop-by-hop, routing, destination options: (len + 1) × 8.
            0x00 | 0x2b | 0x3c => {
                let len = *ext.get(1).ok_or(NoAnswer::Malformed)?;
                next = *ext.first().ok_or(NoAnswer::Malformed)?;
                offset += (usize::from(len) + 1) * 8;
            }
            // Fragment: 8 bytes; only the first fragment shows the upper
            // layer.
            0x2c => {
                let Some(&[fragment_next, _, hi, lo, _, _, _, _]) = ext.get(..8) else {
                    return Err(NoAnswer::Malformed);
                };
                if u16::from_be_bytes([hi, lo]) >> 3 != 0 {
                    return Err(NoAnswer::Fragment);
                }
                next = fragment_next;
                offset += 8;
            }
            // Authentication header: (len + 2) × 4.
            0x33 => {
                let len = *ext.get(1).ok_or(NoAnswer::Malformed)?;
                next = *ext.first().ok_or(NoAnswer::Malformed)?;
                offset += (usize::from(len) + 2) * 4;
            }
            // Any other upper layer (TCP, UDP, ...) or no next header.
            _ => return Ok(()),
        }
    }
    // Too many extension headers to tell: stay quiet.
    Err(NoAnswer::Malformed)
}

pub use overlay_proto::ratelimit::IcmpLimiter;

#[cfg(test)]
mod tests {
    use super::*;
    use overlay_proto::sim::ipv6_packet;
    use smoltcp::wire::{Icmpv6Message, Icmpv6Packet, Icmpv6Repr, Ipv6Packet};

    fn client() -> Ipv6Addr {
        "2002:102:304:1::a".parse().unwrap()
    }

    fn app() -> Ipv6Addr {
        "2002:b16:212c:1::80".parse().unwrap()
    }

    /// Checks `answer` with smoltcp's parser and checksum as the oracle.
    fn check_with_smoltcp(answer: &[u8], offending: &[u8]) {
        let ip = Ipv6Packet::new_checked(answer).unwrap();
        assert_eq!(ip.src_addr(), app());
        assert_eq!(ip.dst_addr(), client());
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(usize::from(ip.payload_len()), answer.len() - 40);
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&app(), &client()));
        assert_eq!(icmp.msg_type(), Icmpv6Message::DstUnreachable);
        assert_eq!(icmp.msg_code(), 1);
        assert_eq!(&ip.payload()[4..8], &[0, 0, 0, 0]);
        let quoted = &ip.payload()[8..];
        assert_eq!(quoted, &offending[..quoted.len()]);
    }

    #[test]
    fn hand_computed_checksum() {
        // One's-complement sum by hand, 16-bit words of the pseudo-header
        // (::1 → ::2, length 8, next header 58) and the message
        // 01 01 0000 0000 0000:
        //   0x0001 + 0x0002 + 0x0008 + 0x003a + 0x0101 = 0x0146
        // checksum = !0x0146 = 0xfeb9.
        let source = Ipv6Addr::LOCALHOST.octets();
        let destination = "::2".parse::<Ipv6Addr>().unwrap().octets();
        let message = [0x01, 0x01, 0, 0, 0, 0, 0, 0];
        assert_eq!(icmpv6_checksum(&source, &destination, &message), 0xfeb9);
        // One more byte 0xab: an odd length pads it to the word 0xab00,
        // and the length word becomes 0x0009:
        //   0x0146 + 0x0001 + 0xab00 = 0xac47, checksum = !0xac47 = 0x53b8.
        let message = [0x01, 0x01, 0, 0, 0, 0, 0, 0, 0xab];
        assert_eq!(icmpv6_checksum(&source, &destination, &message), 0x53b8);
    }

    #[test]
    fn small_packet_quoted_whole() {
        let offending = ipv6_packet(client(), app(), b"hello");
        let mut out = vec![0xee; 2000];
        let len = prohibited(&offending, &mut out).unwrap();
        assert_eq!(len, 40 + 8 + offending.len());
        check_with_smoltcp(&out[..len], &offending);
        // Exactly enough room works, one byte less does not.
        let mut exact = vec![0; len];
        assert_eq!(prohibited(&offending, &mut exact), Ok(len));
        assert_eq!(exact, out[..len]);
        assert_eq!(
            prohibited(&offending, &mut exact[..len - 1]),
            Err(NoAnswer::BufferTooSmall)
        );
    }

    #[test]
    fn large_packets_are_cut_at_the_minimum_mtu() {
        for payload in [1280 - 48 - 8 - 1, 1280 - 48 - 8, 1280 - 48 - 7, 1452, 9000] {
            let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
            let offending = ipv6_packet(client(), app(), &body);
            let mut out = vec![0; 10_000];
            let len = prohibited(&offending, &mut out).unwrap();
            assert_eq!(len, (48 + offending.len()).min(MIN_MTU), "{payload}");
            check_with_smoltcp(&out[..len], &offending);
        }
    }

    #[test]
    fn refuses_what_must_not_be_answered() {
        let mut icmp_error = ipv6_packet(client(), app(), &[0; 32]);
        icmp_error[6] = 58;
        icmp_error[40] = 1; // Destination Unreachable
        let mut echo_request = icmp_error.clone();
        echo_request[40] = 128;
        let mut multicast_source = ipv6_packet(client(), app(), b"x");
        multicast_source[8] = 0xff;
        let mut multicast_destination = ipv6_packet(client(), app(), b"x");
        multicast_destination[24] = 0xff;
        let mut unspecified = ipv6_packet(client(), app(), b"x");
        unspecified[8..24].fill(0);
        // Hop-by-hop (8 bytes) then an ICMPv6 error.
        let mut behind_hop_by_hop = ipv6_packet(client(), app(), &[0; 32]);
        behind_hop_by_hop[6] = 0;
        behind_hop_by_hop[40] = 58;
        behind_hop_by_hop[41] = 0;
        behind_hop_by_hop[48] = 3; // Time Exceeded
                                   // Fragment header, offset 8 (non-first).
        let mut later_fragment = ipv6_packet(client(), app(), &[0; 32]);
        later_fragment[6] = 44;
        later_fragment[40] = 17;
        later_fragment[42] = 0;
        later_fragment[43] = 8 << 3;
        let mut first_fragment = later_fragment.clone();
        first_fragment[43] = 0;
        let mut ipv4 = ipv6_packet(client(), app(), b"x");
        ipv4[0] = 0x45;
        let cases: Vec<(&str, Vec<u8>, Result<(), NoAnswer>)> = vec![
            ("udp", ipv6_packet(client(), app(), b"x"), Ok(())),
            ("icmp error", icmp_error, Err(NoAnswer::IcmpError)),
            ("echo request", echo_request, Ok(())),
            ("multicast src", multicast_source, Err(NoAnswer::Address)),
            (
                "multicast dst",
                multicast_destination,
                Err(NoAnswer::Address),
            ),
            ("unspecified", unspecified, Err(NoAnswer::Address)),
            ("hop-by-hop", behind_hop_by_hop, Err(NoAnswer::IcmpError)),
            ("later fragment", later_fragment, Err(NoAnswer::Fragment)),
            ("first fragment", first_fragment, Ok(())),
            ("ipv4", ipv4, Err(NoAnswer::Malformed)),
            ("short", vec![0x60; 39], Err(NoAnswer::Malformed)),
        ];
        for (name, packet, expected) in cases {
            let mut out = vec![0; 2000];
            let got = prohibited(&packet, &mut out).map(|_| ());
            assert_eq!(got, expected, "{name}");
        }
        assert_eq!(NoAnswer::IcmpError.as_str(), "icmp_error");
    }

    fn node() -> Ipv6Addr {
        "2002:102:304:1::1".parse().unwrap()
    }

    /// Parses `answer` with smoltcp (checksum verified) as an ICMPv6
    /// message from `node()` to `client()`.
    fn parse_from_node(answer: &[u8]) -> Icmpv6Repr<'_> {
        let ip = Ipv6Packet::new_checked(answer).unwrap();
        assert_eq!(ip.src_addr(), node());
        assert_eq!(ip.dst_addr(), client());
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&node(), &client()), "checksum");
        Icmpv6Repr::parse(
            &node(),
            &client(),
            &icmp,
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap()
    }

    #[test]
    fn no_route_known_bytes() {
        let nowhere: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let offending = ipv6_packet(client(), nowhere, b"hi");
        let mut out = vec![0; 2000];
        let len = no_route(&offending, node(), &mut out).unwrap();
        let expected = [
            "60000000",                         // version 6, class 0, flow 0
            "003a",                             // payload: 8 + 50 bytes
            "3a40",                             // ICMPv6, hop limit 64
            "20020102030400010000000000000001", // from this node
            "2002010203040001000000000000000a", // to the sender
            "0100",                             // Destination Unreachable, no route
            "2a71",                             // checksum
            "00000000",                         // unused
        ]
        .concat();
        assert_eq!(hex::encode(&out[..48]), expected);
        assert_eq!(&out[48..len], &offending[..]);
        match parse_from_node(&out[..len]) {
            Icmpv6Repr::DstUnreachable {
                reason: smoltcp::wire::Icmpv6DstUnreachable::NoRoute,
                header,
                data,
            } => {
                assert_eq!(header.src_addr, client());
                assert_eq!(header.dst_addr, nowhere);
                assert_eq!(data, &offending[40..]);
            }
            other => panic!("{other:?}"),
        }
        // What must not be answered is not, as for the other errors.
        let mut icmp_error = offending.clone();
        icmp_error[6] = 58;
        icmp_error[40] = 1;
        assert_eq!(
            no_route(&icmp_error, node(), &mut out),
            Err(NoAnswer::IcmpError)
        );
        let mut to_multicast = offending.clone();
        to_multicast[24] = 0xff;
        assert_eq!(
            no_route(&to_multicast, node(), &mut out),
            Err(NoAnswer::Address)
        );
    }

    #[test]
    fn packet_too_big_known_bytes() {
        let body: Vec<u8> = (0..1500u32 - 48).map(|i| i as u8).collect();
        let offending = ipv6_packet(client(), app(), &body);
        assert_eq!(offending.len(), 1500);
        let mut out = vec![0; 2000];
        let len = packet_too_big(&offending, node(), 1380, &mut out).unwrap();
        assert_eq!(len, MIN_MTU, "cut at the minimum MTU");
        let expected = [
            "60000000",
            "04d8", // payload: 1280 - 40 bytes
            "3a40",
            "20020102030400010000000000000001",
            "2002010203040001000000000000000a",
            "0200",     // Packet Too Big, code 0
            "9361",     // checksum
            "00000564", // MTU 1380
        ]
        .concat();
        assert_eq!(hex::encode(&out[..48]), expected);
        assert_eq!(&out[48..len], &offending[..MIN_MTU - 48]);
        match parse_from_node(&out[..len]) {
            Icmpv6Repr::PktTooBig { mtu, header, .. } => {
                assert_eq!(mtu, 1380);
                assert_eq!(header.dst_addr, app());
            }
            other => panic!("{other:?}"),
        }
        // Packet Too Big may answer a packet to a multicast group; never
        // one from a multicast source, nor a later fragment.
        let mut to_multicast = offending.clone();
        to_multicast[24] = 0xff;
        assert!(packet_too_big(&to_multicast, node(), 1380, &mut out).is_ok());
        let mut from_multicast = offending.clone();
        from_multicast[8] = 0xff;
        assert_eq!(
            packet_too_big(&from_multicast, node(), 1380, &mut out),
            Err(NoAnswer::Address)
        );
        let mut later_fragment = offending.clone();
        later_fragment[6] = 44;
        later_fragment[40] = 17;
        later_fragment[43] = 8 << 3;
        assert_eq!(
            packet_too_big(&later_fragment, node(), 1380, &mut out),
            Err(NoAnswer::Fragment)
        );
    }
}
