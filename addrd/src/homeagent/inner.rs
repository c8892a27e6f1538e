//! The home agent's IPv6 host: what addrd answers on its overlay address.
//!
//! addrd is no router: every inner packet it accepts is addressed to its
//! own overlay address (the `::1` of the infrastructure subnet). It
//! answers:
//! - UDP to port 53: a DNS query, handed to the zone ([`Inner::Dns`]);
//! - ICMPv6 Echo Request: an Echo Reply (`ping` the home agent);
//! - UDP to any other port: Destination Unreachable, port unreachable
//!   (RFC 4443 §3.1 code 4);
//! - a TCP segment: a reset (RFC 9293 §3.10.7.1: no listener), so a
//!   resolver falling back to TCP fails at once instead of timing out.
//!
//! Everything else is dropped with a reason ([`InnerDrop`]): not for this
//! address, malformed, a bad checksum, an extension header or another
//! upper layer, ICMPv6 other than Echo Request (errors are never
//! answered, RFC 4443 §2.4 e). Packets are parsed and written with
//! smoltcp's wire module, checksums included.

use std::net::{Ipv6Addr, SocketAddrV6};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv6Packet, Ipv6Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// The IPv6 minimum MTU: an ICMPv6 error is never longer (RFC 4443 §2.4 c).
const MIN_MTU: usize = 1280;
/// Hop limit of what the home agent sends.
const HOP_LIMIT: u8 = 64;
const IPV6_HEADER_LEN: usize = 40;
const UDP_HEADER_LEN: usize = 8;

/// What to do with an inner packet addressed to the home agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Inner<'a> {
    /// A DNS query over UDP: answer it with [`udp_packet`] from `server`
    /// to `client`.
    Dns {
        /// The querier.
        client: SocketAddrV6,
        /// The home agent's address and port 53.
        server: SocketAddrV6,
        /// The DNS message.
        query: &'a [u8],
    },
    /// An answer to send back at once (Echo Reply, port unreachable, TCP
    /// reset). ICMPv6 errors are rate-limited by the caller.
    Reply {
        /// The packet.
        packet: Vec<u8>,
        /// Whether it is an ICMPv6 error (subject to the rate limit).
        is_error: bool,
    },
    /// Nothing to answer.
    Dropped(InnerDrop),
}

/// Why an inner packet got no answer. Each has a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InnerDrop {
    /// Not a well-formed IPv6 packet (or its UDP, TCP or ICMPv6 inside).
    Malformed,
    /// A UDP, TCP or ICMPv6 checksum that does not verify.
    BadChecksum,
    /// Addressed to another address: the home agent routes nothing.
    NotForUs,
    /// An extension header or an upper layer other than UDP, TCP and
    /// ICMPv6.
    Unsupported,
    /// ICMPv6 other than Echo Request (errors, replies, neighbor
    /// discovery).
    IcmpIgnored,
    /// A TCP reset (never answered with a reset, RFC 9293).
    TcpReset,
}

impl InnerDrop {
    /// Every reason, for counters.
    pub const ALL: [InnerDrop; 6] = [
        InnerDrop::Malformed,
        InnerDrop::BadChecksum,
        InnerDrop::NotForUs,
        InnerDrop::Unsupported,
        InnerDrop::IcmpIgnored,
        InnerDrop::TcpReset,
    ];

    /// A stable snake_case label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            InnerDrop::Malformed => "malformed",
            InnerDrop::BadChecksum => "bad_checksum",
            InnerDrop::NotForUs => "not_for_us",
            InnerDrop::Unsupported => "unsupported",
            InnerDrop::IcmpIgnored => "icmp_ignored",
            InnerDrop::TcpReset => "tcp_reset",
        }
    }
}

/// Decide what `packet` (an inner IPv6 packet that passed cryptokey
/// routing) asks of the home agent at `own`.
pub fn classify(packet: &[u8], own: Ipv6Addr) -> Inner<'_> {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Inner::Dropped(InnerDrop::Malformed);
    };
    let Ok(ip_repr) = Ipv6Repr::parse(&ip) else {
        return Inner::Dropped(InnerDrop::Malformed);
    };
    if ip_repr.dst_addr != own {
        return Inner::Dropped(InnerDrop::NotForUs);
    }
    let source = ip_repr.src_addr;
    if source.is_unspecified() || source.is_multicast() {
        return Inner::Dropped(InnerDrop::Malformed);
    }
    let payload = ip.payload();
    let caps = ChecksumCapabilities::default();
    match ip_repr.next_header {
        IpProtocol::Udp => {
            let Ok(udp) = UdpPacket::new_checked(payload) else {
                return Inner::Dropped(InnerDrop::Malformed);
            };
            if !udp.verify_checksum(&IpAddress::Ipv6(source), &IpAddress::Ipv6(own)) {
                return Inner::Dropped(InnerDrop::BadChecksum);
            }
            let Ok(udp_repr) =
                UdpRepr::parse(&udp, &IpAddress::Ipv6(source), &IpAddress::Ipv6(own), &caps)
            else {
                return Inner::Dropped(InnerDrop::Malformed);
            };
            if udp_repr.dst_port == DNS_PORT {
                Inner::Dns {
                    client: SocketAddrV6::new(source, udp_repr.src_port, 0, 0),
                    server: SocketAddrV6::new(own, DNS_PORT, 0, 0),
                    query: udp.payload(),
                }
            } else {
                port_unreachable(packet, &ip_repr)
            }
        }
        IpProtocol::Tcp => {
            let Ok(tcp) = TcpPacket::new_checked(payload) else {
                return Inner::Dropped(InnerDrop::Malformed);
            };
            if !tcp.verify_checksum(&IpAddress::Ipv6(source), &IpAddress::Ipv6(own)) {
                return Inner::Dropped(InnerDrop::BadChecksum);
            }
            let Ok(tcp_repr) =
                TcpRepr::parse(&tcp, &IpAddress::Ipv6(source), &IpAddress::Ipv6(own), &caps)
            else {
                return Inner::Dropped(InnerDrop::Malformed);
            };
            tcp_reset(&ip_repr, &tcp_repr)
        }
        IpProtocol::Icmpv6 => {
            let Ok(icmp) = Icmpv6Packet::new_checked(payload) else {
                return Inner::Dropped(InnerDrop::Malformed);
            };
            if !icmp.verify_checksum(&source, &own) {
                return Inner::Dropped(InnerDrop::BadChecksum);
            }
            match Icmpv6Repr::parse(&source, &own, &icmp, &caps) {
                Ok(Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => {
                    let reply = Icmpv6Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    };
                    Inner::Reply {
                        packet: icmp_packet(own, source, &reply),
                        is_error: false,
                    }
                }
                Ok(_) => Inner::Dropped(InnerDrop::IcmpIgnored),
                Err(_) => Inner::Dropped(InnerDrop::Malformed),
            }
        }
        _ => Inner::Dropped(InnerDrop::Unsupported),
    }
}

/// A UDP datagram from `from` to `to` carrying `payload`, checksummed.
pub fn udp_packet(from: SocketAddrV6, to: SocketAddrV6, payload: &[u8]) -> Vec<u8> {
    let udp_len = UDP_HEADER_LEN + payload.len();
    let ip_repr = Ipv6Repr {
        src_addr: *from.ip(),
        dst_addr: *to.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: HOP_LIMIT,
    };
    let mut buf = vec![0u8; IPV6_HEADER_LEN + udp_len];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf);
    ip_repr.emit(&mut ip);
    let udp_repr = UdpRepr {
        src_port: from.port(),
        dst_port: to.port(),
    };
    udp_repr.emit(
        &mut UdpPacket::new_unchecked(ip.payload_mut()),
        &IpAddress::Ipv6(*from.ip()),
        &IpAddress::Ipv6(*to.ip()),
        payload.len(),
        |out| out.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// Destination Unreachable, port unreachable, quoting as much of
/// `offending` as fits in the minimum MTU.
fn port_unreachable<'a>(offending: &[u8], ip_repr: &Ipv6Repr) -> Inner<'a> {
    // IPv6 header, ICMPv6 header (8), the quoted packet.
    let room = MIN_MTU - IPV6_HEADER_LEN - 8;
    let Some(quoted) = offending.get(IPV6_HEADER_LEN..).map(|rest| {
        let len = rest.len().min(room - IPV6_HEADER_LEN);
        rest.get(..len).unwrap_or_default()
    }) else {
        return Inner::Dropped(InnerDrop::Malformed);
    };
    let error = Icmpv6Repr::DstUnreachable {
        reason: Icmpv6DstUnreachable::PortUnreachable,
        header: *ip_repr,
        data: quoted,
    };
    Inner::Reply {
        packet: icmp_packet(ip_repr.dst_addr, ip_repr.src_addr, &error),
        is_error: true,
    }
}

/// An ICMPv6 message from `from` to `to`.
fn icmp_packet(from: Ipv6Addr, to: Ipv6Addr, message: &Icmpv6Repr<'_>) -> Vec<u8> {
    let ip_repr = Ipv6Repr {
        src_addr: from,
        dst_addr: to,
        next_header: IpProtocol::Icmpv6,
        payload_len: message.buffer_len(),
        hop_limit: HOP_LIMIT,
    };
    let mut buf = vec![0u8; IPV6_HEADER_LEN + message.buffer_len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf);
    ip_repr.emit(&mut ip);
    message.emit(
        &from,
        &to,
        &mut Icmpv6Packet::new_unchecked(ip.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// The reset answering a segment to a port nobody listens on (RFC 9293
/// §3.10.7.1): a segment with ACK gets `seq = its ack`; one without gets
/// `seq = 0, ack = its seq + its length`.
fn tcp_reset<'a>(ip_repr: &Ipv6Repr, segment: &TcpRepr<'_>) -> Inner<'a> {
    if segment.control == TcpControl::Rst {
        return Inner::Dropped(InnerDrop::TcpReset);
    }
    let (seq_number, ack_number) = match segment.ack_number {
        Some(ack) => (ack, None),
        None => (
            TcpSeqNumber(0),
            Some(segment.seq_number + segment.segment_len()),
        ),
    };
    let reset = TcpRepr {
        src_port: segment.dst_port,
        dst_port: segment.src_port,
        control: TcpControl::Rst,
        seq_number,
        ack_number,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let (from, to) = (ip_repr.dst_addr, ip_repr.src_addr);
    let out_ip = Ipv6Repr {
        src_addr: from,
        dst_addr: to,
        next_header: IpProtocol::Tcp,
        payload_len: reset.buffer_len(),
        hop_limit: HOP_LIMIT,
    };
    let mut buf = vec![0u8; IPV6_HEADER_LEN + reset.buffer_len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut buf);
    out_ip.emit(&mut ip);
    reset.emit(
        &mut TcpPacket::new_unchecked(ip.payload_mut()),
        &IpAddress::Ipv6(from),
        &IpAddress::Ipv6(to),
        &ChecksumCapabilities::default(),
    );
    Inner::Reply {
        packet: buf,
        is_error: false,
    }
}

/// The home agent's own address in [`check`].
pub const FUZZ_OWN_ADDRESS: Ipv6Addr = Ipv6Addr::new(0xfd42, 0x7065, 0x726d, 0, 0, 0, 0, 1);

/// The fuzz target's entry point (`fuzz/fuzz_targets/homeagent_inner.rs`,
/// its corpus replayed by `tests/fuzz_corpus.rs`): classify `packet` for
/// [`FUZZ_OWN_ADDRESS`]; any answer must parse back as IPv6 from that
/// address, within the minimum MTU for an error. Panics (a bug) otherwise.
pub fn check(packet: &[u8]) {
    match classify(packet, FUZZ_OWN_ADDRESS) {
        Inner::Reply { packet, is_error } => {
            let ip = Ipv6Packet::new_checked(&packet[..]);
            assert!(
                ip.is_ok_and(|ip| ip.src_addr() == FUZZ_OWN_ADDRESS),
                "answer is not IPv6 from the home agent"
            );
            assert!(
                !is_error || packet.len() <= MIN_MTU,
                "error longer than 1280"
            );
        }
        Inner::Dns { server, query, .. } => {
            assert_eq!(*server.ip(), FUZZ_OWN_ADDRESS);
            assert!(query.len() < packet.len());
        }
        Inner::Dropped(_) => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn own() -> Ipv6Addr {
        "fd42:7065:726d::1".parse().unwrap()
    }

    fn alice() -> Ipv6Addr {
        "fd42:7065:726d:1::a1".parse().unwrap()
    }

    fn query_packet(port: u16, payload: &[u8]) -> Vec<u8> {
        udp_packet(
            SocketAddrV6::new(alice(), 40_000, 0, 0),
            SocketAddrV6::new(own(), port, 0, 0),
            payload,
        )
    }

    #[test]
    fn a_dns_query_is_handed_over_and_answered_back() {
        let packet = query_packet(DNS_PORT, b"query bytes");
        let Inner::Dns {
            client,
            server,
            query,
        } = classify(&packet, own())
        else {
            panic!("not a DNS query");
        };
        assert_eq!(client, SocketAddrV6::new(alice(), 40_000, 0, 0));
        assert_eq!(server, SocketAddrV6::new(own(), 53, 0, 0));
        assert_eq!(query, b"query bytes");

        // The answer parses back with the addresses swapped and a valid
        // checksum.
        let answer = udp_packet(server, client, b"answer");
        let ip = Ipv6Packet::new_checked(&answer[..]).unwrap();
        assert_eq!(ip.src_addr(), own());
        assert_eq!(ip.dst_addr(), alice());
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv6(own()), &IpAddress::Ipv6(alice())));
        assert_eq!((udp.src_port(), udp.dst_port()), (53, 40_000));
        assert_eq!(udp.payload(), b"answer");
    }

    #[test]
    fn a_corrupted_checksum_is_dropped() {
        let mut packet = query_packet(DNS_PORT, b"query");
        *packet.last_mut().unwrap() ^= 0x01;
        assert_eq!(
            classify(&packet, own()),
            Inner::Dropped(InnerDrop::BadChecksum)
        );
    }

    #[test]
    fn other_destinations_and_truncations_are_dropped() {
        let packet = query_packet(DNS_PORT, b"q");
        let other: Ipv6Addr = "fd42:7065:726d::2".parse().unwrap();
        assert_eq!(
            classify(&packet, other),
            Inner::Dropped(InnerDrop::NotForUs)
        );
        for len in 0..packet.len() {
            assert!(
                matches!(classify(&packet[..len], own()), Inner::Dropped(_)),
                "len {len}"
            );
        }
    }

    #[test]
    fn an_echo_request_gets_its_reply() {
        let request = Icmpv6Repr::EchoRequest {
            ident: 7,
            seq_no: 9,
            data: b"ping",
        };
        let packet = icmp_packet(alice(), own(), &request);
        let Inner::Reply { packet, is_error } = classify(&packet, own()) else {
            panic!("no reply");
        };
        assert!(!is_error);
        let ip = Ipv6Packet::new_checked(&packet[..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (own(), alice()));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        let repr =
            Icmpv6Repr::parse(&own(), &alice(), &icmp, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq_no: 9,
                data: b"ping"
            }
        );
        // A reply is never answered.
        let reply = icmp_packet(alice(), own(), &repr);
        assert_eq!(
            classify(&reply, own()),
            Inner::Dropped(InnerDrop::IcmpIgnored)
        );
    }

    #[test]
    fn another_udp_port_is_unreachable() {
        let packet = query_packet(123, &[0xAB; 2000]);
        let Inner::Reply {
            packet: error,
            is_error,
        } = classify(&packet, own())
        else {
            panic!("no error");
        };
        assert!(is_error);
        assert!(error.len() <= MIN_MTU);
        let ip = Ipv6Packet::new_checked(&error[..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&own(), &alice()));
        assert_eq!(icmp.msg_code(), 4);
        // The quote starts with the offending packet's header.
        assert_eq!(&ip.payload()[8..48], &packet[..40]);
    }

    #[test]
    fn a_syn_gets_a_reset_and_a_reset_gets_nothing() {
        let syn = TcpRepr {
            src_port: 40_001,
            dst_port: 53,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1000),
            ack_number: None,
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let mut packet = vec![0u8; 40 + syn.buffer_len()];
        let mut ip = Ipv6Packet::new_unchecked(&mut packet);
        Ipv6Repr {
            src_addr: alice(),
            dst_addr: own(),
            next_header: IpProtocol::Tcp,
            payload_len: syn.buffer_len(),
            hop_limit: 64,
        }
        .emit(&mut ip);
        syn.emit(
            &mut TcpPacket::new_unchecked(ip.payload_mut()),
            &IpAddress::Ipv6(alice()),
            &IpAddress::Ipv6(own()),
            &ChecksumCapabilities::default(),
        );
        let Inner::Reply { packet: reset, .. } = classify(&packet, own()) else {
            panic!("no reset");
        };
        let ip = Ipv6Packet::new_checked(&reset[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let repr = TcpRepr::parse(
            &tcp,
            &IpAddress::Ipv6(own()),
            &IpAddress::Ipv6(alice()),
            &ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(repr.control, TcpControl::Rst);
        assert_eq!(repr.ack_number, Some(TcpSeqNumber(1001)));
        assert_eq!((repr.src_port, repr.dst_port), (53, 40_001));
        // The reset itself is not answered.
        let swapped = {
            let mut p = reset.clone();
            let mut ip = Ipv6Packet::new_unchecked(&mut p);
            ip.set_src_addr(alice());
            ip.set_dst_addr(own());
            let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
            tcp.fill_checksum(&IpAddress::Ipv6(alice()), &IpAddress::Ipv6(own()));
            p
        };
        assert_eq!(
            classify(&swapped, own()),
            Inner::Dropped(InnerDrop::TcpReset)
        );
    }
}
