//! The data plane over real UDP on 127.0.0.1: a client tunnel with the
//! server as its configured peer, a server tunnel that accepts any peer with
//! a valid lease, inner packets through their channel ports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::net::{Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::node::{self, client_addr, server_addr, ClientSpec};
use overlay_proto::aead::AeadProvider;
use overlay_proto::esp::{EspKeyMaterial, InboundSa, NEXT_HEADER_IPV6};

use overlay_proto::node::Node;
use overlay_proto::sim::ipv6_packet;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tunneld::access::AccessPolicy;
use tunneld::config::Application;
use tunneld::dataplane::{ChannelPort, PortChannels, Stopped, Tunnel, TunnelHandle};
use tunneld::keylog::KeyLog;

/// Inner packets in the bulk test, each way.
const PACKETS: u32 = 10_000;
/// Size of each inner packet.
const PACKET_LEN: usize = 1_400;
/// Packets in flight per direction: small enough that loopback socket
/// buffers never overflow, so every packet must arrive.
const WINDOW: u32 = 32;
/// Deadline of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

struct Side {
    handle: TunnelHandle,
    io: PortChannels,
    task: JoinHandle<(Node, Stopped)>,
    udp: SocketAddr,
}

struct Pair {
    client: Side,
    server: Side,
}

/// A running tunnel on `socket` with a channel port, set up by
/// `configure` (access policy, MTU, key log).
fn spawn(
    node: Node,
    socket: UdpSocket,
    configure: impl FnOnce(Tunnel<ChannelPort>) -> Tunnel<ChannelPort>,
) -> Side {
    let (port, io) = ChannelPort::new(1024);
    let (tunnel, handle) = Tunnel::new(node, socket, port).unwrap();
    let tunnel = configure(tunnel);
    let udp = tunnel.local_addr().unwrap();
    let task = tokio::spawn(tunnel.run());
    Side {
        handle,
        io,
        task,
        udp,
    }
}

async fn pair() -> Pair {
    pair_with(&[], AccessPolicy::allow_all()).await
}

/// A pair whose client lease lists `client_groups` and whose server
/// enforces `policy`.
async fn pair_with(client_groups: &[&str], policy: AccessPolicy) -> Pair {
    let client_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_udp = server_socket.local_addr().unwrap();
    pair_over(
        client_groups,
        policy,
        client_socket,
        server_socket,
        server_udp,
        None,
    )
    .await
}

/// A pair over the given sockets; the client knows the server at
/// `server_endpoint` and, given a key log, exports its SA keys there.
async fn pair_over(
    client_groups: &[&str],
    policy: AccessPolicy,
    client_socket: UdpSocket,
    server_socket: UdpSocket,
    server_endpoint: SocketAddr,
    client_key_log: Option<KeyLog>,
) -> Pair {
    let client_spec = ClientSpec {
        groups: client_groups,
        export_keys: client_key_log.is_some(),
        ..ClientSpec::default()
    };
    let (client_node, server_node) = node::nodes(client_spec, server_endpoint);
    let server = spawn(server_node, server_socket, |t| t.with_access_policy(policy));
    let client = spawn(client_node, client_socket, |t| match client_key_log {
        Some(key_log) => t.with_key_log(key_log),
        None => t,
    });
    Pair { client, server }
}

/// Inner packet `i` from `src` to `dst`: `PACKET_LEN` bytes, the index and
/// a pattern that depends on it.
fn packet(src: Ipv6Addr, dst: Ipv6Addr, i: u32) -> Vec<u8> {
    let mut payload = vec![0u8; PACKET_LEN - 48];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    let mut x = i.wrapping_mul(0x9e37_79b9) | 1;
    for b in &mut payload[4..] {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let p = ipv6_packet(src, dst, &payload);
    assert_eq!(p.len(), PACKET_LEN);
    p
}

fn index(packet: &[u8]) -> u32 {
    u32::from_be_bytes(packet[48..52].try_into().unwrap())
}

/// Sends `count` packets from `src` to `dst` into `tx`, at most `WINDOW`
/// ahead of what came out of `rx`, and checks every one arrives, byte for
/// byte, exactly once.
async fn transfer(
    tx: mpsc::Sender<Vec<u8>>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    count: u32,
) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let mut seen = vec![false; count as usize];
    let (mut sent, mut received) = (0u32, 0u32);
    while received < count {
        while sent < count && sent - received < WINDOW {
            tx.send(packet(src, dst, sent)).await.unwrap();
            sent += 1;
        }
        let p = rx.recv().await.expect("port closed");
        let i = index(&p);
        assert!(i < count, "index {i} out of range");
        assert_eq!(p, packet(src, dst, i), "packet {i} changed on the way");
        assert!(!seen[i as usize], "packet {i} arrived twice");
        seen[i as usize] = true;
        received += 1;
    }
    (tx, rx)
}

/// The next packet out of a port; fails unless one comes within
/// [`DEADLINE`].
async fn next_packet(port: &mut mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    timeout(DEADLINE, port.recv())
        .await
        .expect("no packet within the deadline")
        .expect("port closed")
}

/// One packet client → server (the handshake), then one back.
async fn warm_up(pair: &mut Pair) {
    let c2s = packet(client_addr(), server_addr(), 0);
    pair.client.io.outbound.send(c2s.clone()).await.unwrap();
    let got = next_packet(&mut pair.server.io.inbound).await;
    assert_eq!(got, c2s);
    let s2c = packet(server_addr(), client_addr(), 0);
    pair.server.io.outbound.send(s2c.clone()).await.unwrap();
    let got = next_packet(&mut pair.client.io.inbound).await;
    assert_eq!(got, s2c);
}

async fn stop(side: Side) -> SocketAddr {
    side.handle.shutdown();
    let (_, stopped) = timeout(DEADLINE, side.task).await.unwrap().unwrap();
    assert_eq!(stopped, Stopped::Shutdown);
    side.udp
}

#[tokio::test]
async fn bulk_packets_arrive_unchanged_both_ways() {
    let mut pair = pair().await;
    warm_up(&mut pair).await;

    let Pair {
        mut client,
        mut server,
    } = pair;
    let started = std::time::Instant::now();
    let up = tokio::spawn(transfer(
        client.io.outbound.clone(),
        server.io.inbound,
        client_addr(),
        server_addr(),
        PACKETS,
    ));
    let down = tokio::spawn(transfer(
        server.io.outbound.clone(),
        client.io.inbound,
        server_addr(),
        client_addr(),
        PACKETS,
    ));
    (_, server.io.inbound) = timeout(DEADLINE, up).await.unwrap().unwrap();
    (_, client.io.inbound) = timeout(DEADLINE, down).await.unwrap().unwrap();
    eprintln!(
        "{} packets of {PACKET_LEN} bytes each way in {:?}",
        PACKETS,
        started.elapsed()
    );

    let total = u64::from(PACKETS) + 1;
    let client_status = client.handle.status().await.unwrap();
    let server_status = server.handle.status().await.unwrap();
    for status in [&client_status, &server_status] {
        assert_eq!(status.node.packets_sent, total);
        assert_eq!(status.node.packets_received, total);
        assert_eq!(status.node.total_drops(), 0, "{:?}", status.node);
        assert_eq!(status.dataplane.no_route, 0);
        assert_eq!(status.dataplane.deliver_errors, 0);
        assert_eq!(status.peers.len(), 1);
        let peer = &status.peers[0];
        assert_eq!(peer.stats.tx_packets, total);
        assert_eq!(peer.stats.rx_packets, total);
        assert_eq!(peer.stats.rx_bytes, total * PACKET_LEN as u64);
        assert!(peer.last_handshake.is_some());
    }
    assert_eq!(server_status.peers[0].endpoint, Some(client.udp));
    assert_eq!(client_status.peers[0].endpoint, Some(server.udp));
    // The status names each peer by its lease and shows the SA in use.
    assert_eq!(client_status.peers[0].name, "server");
    let sas = &client_status.peers[0].security_associations;
    assert_eq!(sas.len(), 1, "{sas:?}");
    assert_eq!(sas[0].role, overlay_proto::session::SaRole::Current);
    assert!(sas[0].initiator);
    assert_eq!(sas[0].packets_sent, total);

    stop(client).await;
    stop(server).await;
}

/// Packets in one burst of the burst test: more than the tunnel takes from
/// its port per wakeup and more than one GSO send carries, few enough that
/// a burst fits the smallest default socket buffer (`net.core.rmem_max`
/// 212,992 bytes, doubled by the kernel) without root.
const BURST: u32 = 100;
/// Bursts in the burst test.
const BURSTS: u32 = 30;

/// Bursts of packets queued at once, each wholly in the port before the
/// tunnel reads it: the tunnel takes them in batches, seals them into one
/// send queue and sends runs of them per system call (GSO), the other side
/// receives them in batches (recvmmsg, GRO). Every packet must arrive
/// unchanged, exactly once and in order, and every counter must count
/// datagrams, not batches.
#[tokio::test]
async fn bursts_arrive_whole_and_in_order() {
    let mut pair = pair().await;
    warm_up(&mut pair).await;
    let client_before = pair.client.handle.status().await.unwrap();
    let server_before = pair.server.handle.status().await.unwrap();

    for burst in 0..BURSTS {
        let first = burst * BURST;
        for i in first..first + BURST {
            pair.client
                .io
                .outbound
                .send(packet(client_addr(), server_addr(), i))
                .await
                .unwrap();
        }
        for i in first..first + BURST {
            let got = timeout(DEADLINE, pair.server.io.inbound.recv())
                .await
                .unwrap_or_else(|_| panic!("packet {i} did not arrive"))
                .unwrap();
            assert_eq!(index(&got), i, "out of order");
            assert_eq!(got, packet(client_addr(), server_addr(), i));
        }
    }

    let total = u64::from(BURST * BURSTS);
    let client = pair.client.handle.status().await.unwrap();
    let server = pair.server.handle.status().await.unwrap();
    assert_eq!(
        client.dataplane.datagrams_sent - client_before.dataplane.datagrams_sent,
        total
    );
    assert_eq!(client.dataplane.send_errors, 0);
    assert_eq!(
        server.dataplane.datagrams_received - server_before.dataplane.datagrams_received,
        total
    );
    assert_eq!(server.dataplane.recv_errors, 0);
    assert_eq!(
        server.node.packets_received - server_before.node.packets_received,
        total
    );
    assert_eq!(server.node.total_drops(), 0, "{:?}", server.node);
    assert!(pair.server.io.inbound.try_recv().is_err(), "nothing extra");

    stop(pair.client).await;
    stop(pair.server).await;
}

#[tokio::test]
async fn unrouted_destination_is_counted_and_not_sent() {
    let mut pair = pair().await;
    warm_up(&mut pair).await;
    let before = pair.client.handle.status().await.unwrap();

    let nowhere: Ipv6Addr = "2001:db8::1".parse().unwrap();
    pair.client
        .io
        .outbound
        .send(packet(client_addr(), nowhere, 1))
        .await
        .unwrap();
    // Not IPv6 at all.
    pair.client.io.outbound.send(vec![0x45; 60]).await.unwrap();
    // The port is a queue: once this one arrives, the two before it were
    // handled.
    let marker = packet(client_addr(), server_addr(), 2);
    pair.client.io.outbound.send(marker.clone()).await.unwrap();
    let got = next_packet(&mut pair.server.io.inbound).await;
    assert_eq!(got, marker);

    let after = pair.client.handle.status().await.unwrap();
    assert_eq!(after.dataplane.no_route, before.dataplane.no_route + 1);
    assert_eq!(
        after.dataplane.malformed_inner,
        before.dataplane.malformed_inner + 1
    );
    // Only the marker left the client, and only the marker arrived.
    assert_eq!(after.node.packets_sent, before.node.packets_sent + 1);
    assert_eq!(
        after.dataplane.datagrams_sent,
        before.dataplane.datagrams_sent + 1
    );
    assert!(pair.server.io.inbound.try_recv().is_err());

    stop(pair.client).await;
    stop(pair.server).await;
}

#[tokio::test]
async fn shutdown_returns_and_releases_the_socket() {
    let mut pair = pair().await;
    warm_up(&mut pair).await;
    let client_udp = stop(pair.client).await;
    let server_udp = stop(pair.server).await;
    UdpSocket::bind(client_udp).await.unwrap();
    UdpSocket::bind(server_udp).await.unwrap();
}

#[tokio::test]
async fn closing_the_port_or_dropping_the_handle_stops_the_tunnel() {
    let Pair { client, server } = pair().await;

    let Side {
        io, task, handle, ..
    } = client;
    drop(io);
    let (_, stopped) = timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(stopped, Stopped::PortClosed);
    assert!(handle.status().await.is_none());

    let Side { handle, task, .. } = server;
    drop(handle);
    let (_, stopped) = timeout(DEADLINE, task).await.unwrap().unwrap();
    assert_eq!(stopped, Stopped::Shutdown);
}

fn staff_app() -> Ipv6Addr {
    "2002:b16:212c:1::80".parse().unwrap()
}

fn open_app() -> Ipv6Addr {
    "2002:b16:212c:1::81".parse().unwrap()
}

/// The server's applications: one for staff only, one for anyone.
fn policy() -> AccessPolicy {
    let app = |name: &str, address, groups: &[&str]| Application {
        name: name.into(),
        address,
        ports: vec![80],
        backend: Some("127.0.0.1:8080".parse().unwrap()),
        allowed_groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    AccessPolicy::from_applications(&[
        app("staff-wiki", staff_app(), &["staff"]),
        app("open-wiki", open_app(), &[]),
    ])
}

#[tokio::test]
async fn non_member_is_prohibited_and_told_so() {
    let mut pair = pair_with(&["students"], policy()).await;
    warm_up(&mut pair).await;

    let offending = packet(client_addr(), staff_app(), 1);
    pair.client
        .io
        .outbound
        .send(offending.clone())
        .await
        .unwrap();
    // The same queue and the same SA: once this one arrives, the server
    // has handled the one before it.
    let marker = packet(client_addr(), open_app(), 2);
    pair.client.io.outbound.send(marker.clone()).await.unwrap();
    let got = next_packet(&mut pair.server.io.inbound).await;
    assert_eq!(got, marker, "only the open application's packet");
    assert!(pair.server.io.inbound.try_recv().is_err());

    let error = next_packet(&mut pair.client.io.inbound).await;
    assert_eq!(error.len(), 1280, "cut at the minimum MTU");
    assert_eq!(error[0] >> 4, 6);
    assert_eq!(error[6], 58, "ICMPv6");
    assert_eq!(error[7], 64, "hop limit");
    assert_eq!(&error[8..24], &staff_app().octets(), "from the application");
    assert_eq!(&error[24..40], &client_addr().octets(), "to the sender");
    assert_eq!(
        (error[40], error[41]),
        (1, 1),
        "administratively prohibited"
    );
    assert_eq!(&error[48..88], &offending[..40], "quotes the IPv6 header");
    assert_eq!(&error[48..], &offending[..1280 - 48]);

    let status = pair.server.handle.status().await.unwrap();
    assert_eq!(status.dataplane.prohibited, 1);
    assert_eq!(status.dataplane.icmp_sent, 1);
    assert_eq!(status.dataplane.icmp_suppressed, 0);
    assert_eq!(status.dataplane.deliver_errors, 0);

    stop(pair.client).await;
    stop(pair.server).await;
}

#[tokio::test]
async fn member_reaches_the_restricted_application() {
    let mut pair = pair_with(&["students", "staff"], policy()).await;
    warm_up(&mut pair).await;
    for (i, destination) in [staff_app(), open_app()].into_iter().enumerate() {
        let p = packet(client_addr(), destination, i as u32);
        pair.client.io.outbound.send(p.clone()).await.unwrap();
        let got = next_packet(&mut pair.server.io.inbound).await;
        assert_eq!(got, p);
    }
    let status = pair.server.handle.status().await.unwrap();
    assert_eq!(status.dataplane.prohibited, 0);
    assert_eq!(status.dataplane.icmp_sent, 0);
    assert!(pair.client.io.inbound.try_recv().is_err());
    stop(pair.client).await;
    stop(pair.server).await;
}

#[tokio::test]
async fn prohibited_errors_are_rate_limited() {
    const FLOOD: u32 = 40;
    let mut pair = pair_with(&["students"], policy()).await;
    warm_up(&mut pair).await;
    for i in 0..FLOOD {
        let p = packet(client_addr(), staff_app(), i);
        pair.client.io.outbound.send(p).await.unwrap();
    }
    let marker = packet(client_addr(), open_app(), FLOOD);
    pair.client.io.outbound.send(marker.clone()).await.unwrap();
    let got = next_packet(&mut pair.server.io.inbound).await;
    assert_eq!(got, marker);

    let status = pair.server.handle.status().await.unwrap();
    let counters = status.dataplane;
    assert_eq!(counters.prohibited, u64::from(FLOOD));
    assert_eq!(
        counters.icmp_sent + counters.icmp_suppressed,
        u64::from(FLOOD)
    );
    // A burst of 10, then 10 per second: 40 packets over loopback take far
    // less than the 3 s it would need to answer them all.
    assert!(counters.icmp_sent >= 10, "{counters:?}");
    assert!(counters.icmp_suppressed > 0, "{counters:?}");
    // Every error that was sent arrives.
    for _ in 0..counters.icmp_sent {
        let error = next_packet(&mut pair.client.io.inbound).await;
        assert_eq!((error[40], error[41]), (1, 1));
    }
    stop(pair.client).await;
    stop(pair.server).await;
}

/// A client tunnel alone, limited to `mtu`: what it answers into its own
/// port needs no server.
async fn lone_client(mtu: u16) -> Side {
    let server_udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (client_node, _server) =
        node::nodes(ClientSpec::default(), server_udp.local_addr().unwrap());
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    spawn(client_node, socket, |t| t.with_mtu(mtu))
}

/// Checks `error` is an ICMPv6 error from the client's own address to it,
/// with a valid checksum (smoltcp's parser as the oracle), quoting the
/// start of `offending`; returns smoltcp's view of it.
fn parse_error<'a>(error: &'a [u8], offending: &[u8]) -> smoltcp::wire::Icmpv6Repr<'a> {
    use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, Ipv6Packet};
    assert_eq!(error.len(), offending.len().min(1232) + 48);
    let ip = Ipv6Packet::new_checked(error).unwrap();
    assert_eq!(ip.src_addr(), client_addr(), "from this node");
    assert_eq!(ip.dst_addr(), client_addr(), "to the sender");
    assert_eq!(ip.hop_limit(), 64);
    assert_eq!(&error[48..], &offending[..error.len() - 48]);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&client_addr(), &client_addr()));
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    Icmpv6Repr::parse(&client_addr(), &client_addr(), &icmp, &caps).unwrap()
}

#[tokio::test]
async fn unroutable_and_oversized_packets_come_back_as_icmpv6_errors() {
    use smoltcp::wire::{Icmpv6DstUnreachable, Icmpv6Repr};
    const MTU: u16 = 1280;
    let mut client = lone_client(MTU).await;
    let nowhere: Ipv6Addr = "2001:db8::1".parse().unwrap();

    // No peer routes 2001:db8::/32: Destination Unreachable, no route.
    let unroutable = ipv6_packet(client_addr(), nowhere, b"anyone there?");
    client.io.outbound.send(unroutable.clone()).await.unwrap();
    let error = next_packet(&mut client.io.inbound).await;
    match parse_error(&error, &unroutable) {
        Icmpv6Repr::DstUnreachable { reason, header, .. } => {
            assert_eq!(reason, Icmpv6DstUnreachable::NoRoute);
            assert_eq!(header.dst_addr, nowhere);
        }
        other => panic!("{other:?}"),
    }

    // The server routes, but 1400 bytes exceed the 1280-byte MTU: Packet
    // Too Big with the MTU, quoting the first 1232 bytes.
    let oversized = packet(client_addr(), server_addr(), 1);
    assert!(oversized.len() > usize::from(MTU));
    client.io.outbound.send(oversized.clone()).await.unwrap();
    let error = next_packet(&mut client.io.inbound).await;
    match parse_error(&error, &oversized) {
        Icmpv6Repr::PktTooBig { mtu, header, .. } => {
            assert_eq!(mtu, u32::from(MTU));
            assert_eq!(header.dst_addr, server_addr());
        }
        other => panic!("{other:?}"),
    }

    // An unroutable ICMPv6 error and an unroutable non-first fragment get
    // no answer (RFC 4443 §2.4 e); the port is a queue, so once the
    // answer to the marker after them arrives, both were handled.
    let mut icmp_error = ipv6_packet(client_addr(), nowhere, &[0; 16]);
    icmp_error[6] = 58;
    icmp_error[40] = 1;
    let mut fragment = ipv6_packet(client_addr(), nowhere, &[0; 16]);
    fragment[6] = 44;
    fragment[40] = 17;
    fragment[43] = 8 << 3;
    let marker = ipv6_packet(client_addr(), nowhere, b"marker");
    for p in [icmp_error, fragment, marker.clone()] {
        client.io.outbound.send(p).await.unwrap();
    }
    let error = next_packet(&mut client.io.inbound).await;
    assert_eq!(&error[48..], &marker[..], "only the marker is answered");

    let d = client.handle.status().await.unwrap().dataplane;
    assert_eq!((d.no_route, d.too_big), (4, 1), "{d:?}");
    assert_eq!((d.icmp_sent, d.icmp_suppressed), (3, 2), "{d:?}");
    assert_eq!(d.datagrams_sent, 0, "nothing went out: {d:?}");

    // A flood is rate limited: the burst left (10 - 5 tokens), then 10 per
    // second; every error sent arrives.
    const FLOOD: u64 = 40;
    for i in 0..FLOOD {
        let p = ipv6_packet(client_addr(), nowhere, &i.to_be_bytes());
        client.io.outbound.send(p).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let flood = loop {
        let d = client.handle.status().await.unwrap().dataplane;
        if d.no_route == 4 + FLOOD {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (sent, suppressed) = (flood.icmp_sent - 3, flood.icmp_suppressed - 2);
    assert_eq!(sent + suppressed, FLOOD, "{flood:?}");
    assert!(sent >= 5 && suppressed > 0, "{flood:?}");
    for _ in 0..sent {
        let error = next_packet(&mut client.io.inbound).await;
        assert_eq!((error[40], error[41]), (1, 0));
    }
    assert!(client.io.inbound.try_recv().is_err());
    stop(client).await;
}

/// One line of the ESP key log (docs/wire-format.md §7), checked field by
/// field against the format.
struct KeyLogLine {
    spi: u32,
    direction: String,
    local: SocketAddr,
    remote: SocketAddr,
    keys: EspKeyMaterial,
}

/// `s` is exactly `digits` lower-case hex digits.
fn lower_hex(s: &str, digits: usize) -> Vec<u8> {
    assert_eq!(s.len(), digits, "{s:?} is not {digits} hex digits");
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{s:?} is not lower-case hex"
    );
    hex::decode(s).unwrap()
}

fn parse_key_log_line(line: &str) -> KeyLogLine {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    let spi = u32::from_be_bytes(lower_hex(fields[0], 8).try_into().unwrap());
    assert!(["in", "out"].contains(&fields[1]), "{line:?}");
    KeyLogLine {
        spi,
        direction: fields[1].to_owned(),
        local: fields[2].parse().unwrap(),
        remote: fields[3].parse().unwrap(),
        keys: EspKeyMaterial {
            key: lower_hex(fields[4], 64).try_into().unwrap(),
            salt: lower_hex(fields[5], 8).try_into().unwrap(),
        },
    }
}

/// A UDP relay between the client and the server that keeps a copy of
/// every datagram: client → server in the first channel, server → client
/// in the second.
fn relay(
    socket: UdpSocket,
    client: SocketAddr,
    server: SocketAddr,
) -> (
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Vec<u8>>,
    mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (up_tx, up) = mpsc::unbounded_channel();
    let (down_tx, down) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (len, src) = socket.recv_from(&mut buf).await.unwrap();
            let datagram = buf[..len].to_vec();
            let (to, copy) = if src == client {
                (server, &up_tx)
            } else if src == server {
                (client, &down_tx)
            } else {
                continue;
            };
            socket.send_to(&datagram, to).await.unwrap();
            let _ = copy.send(datagram);
        }
    });
    (task, up, down)
}

/// Decrypts the first captured datagram of `line`'s SPI with the logged
/// key alone, and returns the inner packet.
fn decrypt_first(captured: &mut mpsc::UnboundedReceiver<Vec<u8>>, line: &KeyLogLine) -> Vec<u8> {
    let mut sa = InboundSa::new(line.spi, &line.keys, AeadProvider::RustCrypto);
    while let Ok(mut datagram) = captured.try_recv() {
        if datagram.get(..4) != Some(&line.spi.to_be_bytes()[..]) {
            continue; // handshake, keepalive, another SA
        }
        let plain = sa.decapsulate(&mut datagram).unwrap();
        assert_eq!(plain.next_header, NEXT_HEADER_IPV6);
        return plain.payload.to_vec();
    }
    panic!("no captured datagram with SPI {:08x}", line.spi);
}

#[tokio::test]
async fn key_log_decrypts_captured_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esp-keys.log");
    let client_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client_udp = client_socket.local_addr().unwrap();
    let server_udp = server_socket.local_addr().unwrap();
    let relay_udp = relay_socket.local_addr().unwrap();
    let (relay_task, mut up, mut down) = relay(relay_socket, client_udp, server_udp);

    let mut pair = pair_over(
        &[],
        AccessPolicy::allow_all(),
        client_socket,
        server_socket,
        relay_udp,
        Some(KeyLog::open(&path).unwrap()),
    )
    .await;
    // packet 0 each way: the handshake, then one datagram per direction.
    warm_up(&mut pair).await;
    let status = pair.client.handle.status().await.unwrap();
    assert_eq!(status.dataplane.keylog_errors, 0);
    stop(pair.client).await;
    stop(pair.server).await;
    relay_task.abort();

    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.ends_with('\n'), "{} bytes", text.len());
    let lines: Vec<KeyLogLine> = text.lines().map(parse_key_log_line).collect();
    assert_eq!(lines.len(), 2, "one SA, two directions");
    let (inbound, outbound) = (&lines[0], &lines[1]);
    assert_eq!(inbound.direction, "in");
    assert_eq!(outbound.direction, "out");
    assert_ne!(inbound.spi, outbound.spi);
    assert_ne!(inbound.keys, outbound.keys);
    for line in &lines {
        assert_eq!(line.local, client_udp, "the bound address");
        assert_eq!(line.remote, relay_udp, "the server as the client sees it");
    }

    // Independent of both tunnels: the logged keys open what was on the
    // wire, each direction with its own line.
    assert_eq!(
        decrypt_first(&mut up, outbound),
        packet(client_addr(), server_addr(), 0)
    );
    assert_eq!(
        decrypt_first(&mut down, inbound),
        packet(server_addr(), client_addr(), 0)
    );
}

#[test]
fn key_log_refuses_a_readable_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esp-keys.log");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = KeyLog::open(Path::new(&path)).unwrap_err();
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("0644"), "{message}");
}
