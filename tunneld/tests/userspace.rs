//! Userspace mode over real UDP on 127.0.0.1: two tunnels as in
//! `tests/dataplane.rs`, each with a smoltcp stack on its channel port; the
//! client's SOCKS5 proxy reaches an application the server forwards to a
//! backend on 127.0.0.1 with a PROXY v2 header; UDP flows go the same way
//! to a UDP backend, one PROXY v2 (DGRAM) header per datagram.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::node::{self, client_addr, server_addr, ClientSpec, CLIENT_PREFIX, SERVER_PREFIX};
use overlay_proto::counters::DropReason;
use overlay_proto::lease::{EntityKind, Lease};
use overlay_proto::node::Node;
use overlay_proto::session::Timers;
use overlay_proto::time::UnixTime;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tunneld::access::AccessPolicy;
use tunneld::config::Application;
use tunneld::dataplane::{ChannelPort, Tunnel, TunnelHandle};
use tunneld::names::{LeaseResolver, OverlayZone};
use tunneld::userspace::{
    proxy_v2_header, serve_application, serve_application_udp, serve_application_udp_with,
    serve_port_forward, serve_socks, serve_udp_port_forward_with, OverlayUdpSocket, ProxyTransport,
    StackConfig, StackHandle, UdpFlowLimits, UserspaceStack,
};

/// Bytes sent through the proxy and echoed back.
const TRANSFER: usize = 100 * 1024 * 1024;
/// Deadline of every wait in these tests.
const DEADLINE: Duration = Duration::from_secs(120);
/// The client stack's connect timeout: how long an unrouted CONNECT waits.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

const APP_PORT: u16 = 8080;

fn app_addr() -> SocketAddrV6 {
    SocketAddrV6::new("2002:b16:212c:1::80".parse().unwrap(), APP_PORT, 0, 0)
}

/// A running tunnel and its stack; the stack is shut down when dropped.
struct Side {
    tunnel: TunnelHandle,
    stack: StackHandle,
    /// The client's overlay names (empty on the server).
    resolver: Arc<LeaseResolver>,
}

impl Drop for Side {
    fn drop(&mut self) {
        self.stack.shutdown();
    }
}

fn spawn(
    node: Node,
    socket: UdpSocket,
    config: StackConfig,
    policy: AccessPolicy,
    resolver: Arc<LeaseResolver>,
) -> Side {
    let (port, channels) = ChannelPort::new(1024);
    let (tunnel, tunnel_handle) = Tunnel::new(node, socket, port).unwrap();
    let tunnel = tunnel.with_access_policy(policy);
    tokio::spawn(tunnel.run());
    let (stack, stack_handle) = UserspaceStack::new(config, channels);
    tokio::spawn(stack.run());
    Side {
        tunnel: tunnel_handle,
        stack: stack_handle,
        resolver,
    }
}

/// Client and server tunnels with stacks; the client's SOCKS5 address.
async fn setup() -> (Side, Side, SocketAddr) {
    setup_with(AccessPolicy::allow_all(), Timers::DEFAULT).await
}

/// [`setup`] with `policy` enforced by the server's tunnel (the client's
/// lease lists no group) and the client node running `client_timers`
/// (tests shorten the rekey interval to rekey during a transfer).
async fn setup_with(policy: AccessPolicy, client_timers: Timers) -> (Side, Side, SocketAddr) {
    let server_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_udp = server_socket.local_addr().unwrap();
    let client_spec = ClientSpec {
        timers: client_timers,
        ..ClientSpec::default()
    };
    let (client_node, server_node) = node::nodes(client_spec, server_udp);
    let server = spawn(
        server_node,
        server_socket,
        StackConfig::new(server_addr(), SERVER_PREFIX.parse().unwrap()),
        policy,
        Arc::new(LeaseResolver::new(OverlayZone::default())),
    );

    // The client resolves overlay names from the leases it holds: its own
    // and the server's ("server", a system).
    let resolver = Arc::new(LeaseResolver::from_node(
        OverlayZone::default(),
        &client_node,
    ));
    let client_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut client_config = StackConfig::new(client_addr(), CLIENT_PREFIX.parse().unwrap());
    client_config.connect_timeout = CONNECT_TIMEOUT;
    let client = spawn(
        client_node,
        client_socket,
        client_config,
        AccessPolicy::allow_all(),
        resolver,
    );

    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks_addr = socks.local_addr().unwrap();
    tokio::spawn(serve_socks(
        socks,
        client.stack.clone(),
        client.resolver.clone(),
    ));
    (client, server, socks_addr)
}

/// A backend on 127.0.0.1 that reads the PROXY v2 header, reports it and
/// echoes everything after it.
async fn echo_backend() -> (SocketAddr, oneshot::Receiver<[u8; 52]>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, header) = oneshot::channel();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 52];
        conn.read_exact(&mut head).await.unwrap();
        report.send(head).unwrap();
        let (mut rd, mut wr) = conn.split();
        tokio::io::copy(&mut rd, &mut wr).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    (addr, header)
}

/// SOCKS5 no-auth greeting (the proxy must choose it), then `command`
/// for `address` (its ATYP byte first) and `port`; returns the 22-byte
/// reply.
async fn socks_send(
    socks: SocketAddr,
    command: u8,
    address: &[u8],
    port: u16,
) -> (TcpStream, [u8; 22]) {
    let mut conn = TcpStream::connect(socks).await.unwrap();
    conn.write_all(&[0x05, 0x01, 0x00]).await.unwrap();
    let mut method = [0u8; 2];
    conn.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [0x05, 0x00]);
    let mut request = vec![0x05, command, 0x00];
    request.extend_from_slice(address);
    request.extend_from_slice(&port.to_be_bytes());
    conn.write_all(&request).await.unwrap();
    let mut reply = [0u8; 22];
    timeout(DEADLINE, conn.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    (conn, reply)
}

/// [`socks_send`] for an IPv6 address.
async fn socks_request(socks: SocketAddr, command: u8, dst: SocketAddrV6) -> (TcpStream, [u8; 22]) {
    let mut address = vec![0x04];
    address.extend_from_slice(&dst.ip().octets());
    socks_send(socks, command, &address, dst.port()).await
}

/// [`socks_send`]: CONNECT to a domain name.
async fn socks_name_request(socks: SocketAddr, name: &str, port: u16) -> (TcpStream, [u8; 22]) {
    let mut address = vec![0x03, u8::try_from(name.len()).unwrap()];
    address.extend_from_slice(name.as_bytes());
    socks_send(socks, 0x01, &address, port).await
}

/// Writes `data` to an echoing `conn`, half-closes it and reads until the
/// peer closes (within [`DEADLINE`]); what came back.
async fn echo(mut conn: TcpStream, data: &[u8]) -> Vec<u8> {
    conn.write_all(data).await.unwrap();
    conn.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    timeout(DEADLINE, conn.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    echoed
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn socks_connect_echoes_100_mib_with_proxy_header_across_rekeys() {
    // The client rekeys every second, so the SAs change under the transfer.
    let fast_rekey = Timers {
        rekey_after: Duration::from_secs(1),
        ..Timers::DEFAULT
    };
    let (client, server, socks) = setup_with(AccessPolicy::allow_all(), fast_rekey).await;
    let (backend, header) = echo_backend().await;
    tokio::spawn(serve_application(server.stack.clone(), app_addr(), backend));

    let (conn, reply) = timeout(DEADLINE, socks_request(socks, 0x01, app_addr()))
        .await
        .unwrap();
    assert_eq!(reply[..4], [0x05, 0x00, 0x00, 0x04], "reply {reply:?}");
    assert_eq!(
        Ipv6Addr::from(<[u8; 16]>::try_from(&reply[4..20]).unwrap()),
        client_addr()
    );

    let data = pattern(TRANSFER);
    let sent_digest = Sha256::digest(&data);
    let started = std::time::Instant::now();
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn(async move {
        wr.write_all(&data).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let reader = tokio::spawn(async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let n = rd.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        (total, hasher.finalize())
    });
    timeout(DEADLINE, writer).await.unwrap().unwrap();
    let (total, received_digest) = timeout(DEADLINE, reader).await.unwrap().unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "{TRANSFER} bytes up and echoed back through SOCKS5 in {elapsed:?} ({:.1} Mbit/s each way)",
        TRANSFER as f64 * 8.0 / elapsed.as_secs_f64() / 1e6
    );
    assert_eq!(total, TRANSFER);
    assert_eq!(received_digest, sent_digest);
    // Make-before-break: several rekeys happened and no ESP packet was lost
    // to them (a drop would be hidden by TCP, so check the counters).
    for side in [&client, &server] {
        let status = side.tunnel.status().await.unwrap();
        assert!(status.node.handshakes_completed >= 3, "{:?}", status.node);
        for reason in [
            DropReason::UnknownSpi,
            DropReason::SaExpired,
            DropReason::EspAuthenticationFailed,
            DropReason::EspReplayTooOld,
        ] {
            assert_eq!(status.node.drops(reason), 0, "{reason}: {:?}", status.node);
        }
    }

    let header = timeout(DEADLINE, header).await.unwrap().unwrap();
    let bound = SocketAddrV6::new(
        client_addr(),
        u16::from_be_bytes([reply[20], reply[21]]),
        0,
        0,
    );
    assert_eq!(
        header,
        proxy_v2_header(bound, app_addr(), ProxyTransport::Stream)
    );
    assert_eq!(header[..12], *b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(header[16..32], client_addr().octets());
    assert_eq!(header[32..48], app_addr().ip().octets());
    assert_eq!(header[50..52], APP_PORT.to_be_bytes());

    let status = client.tunnel.status().await.unwrap();
    assert_eq!(status.node.total_drops(), 0, "{:?}", status.node);
    assert_eq!(client.stack.counters().connected, 1);
    assert_eq!(server.stack.counters().accepted, 1);
}

#[tokio::test]
async fn socks_failures_get_replies() {
    let (client, _server, socks) = setup().await;

    // Nobody routes 2001:db8::/32: the client's tunnel answers the SYN with
    // an ICMPv6 "no route", which fails the connect at once.
    let nowhere = SocketAddrV6::new("2001:db8::1".parse().unwrap(), 80, 0, 0);
    let started = std::time::Instant::now();
    let (_, reply) = timeout(DEADLINE, socks_request(socks, 0x01, nowhere))
        .await
        .unwrap();
    assert_eq!(reply[1], 0x03, "network unreachable, reply {reply:?}");
    assert!(started.elapsed() < CONNECT_TIMEOUT, "not by the timeout");
    assert_eq!(client.stack.counters().connects_failed_by_icmp, 1);
    let dataplane = client.tunnel.status().await.unwrap().dataplane;
    // The SYN, and the reset smoltcp sends when the connect is aborted.
    assert!(dataplane.no_route >= 1, "{dataplane:?}");
    assert_eq!(dataplane.icmp_sent, dataplane.no_route, "{dataplane:?}");

    // The server's stack answers for its prefix: nothing listens on port
    // 81 of the application's address, so it resets.
    let closed = SocketAddrV6::new(*app_addr().ip(), 81, 0, 0);
    let (_, reply) = timeout(DEADLINE, socks_request(socks, 0x01, closed))
        .await
        .unwrap();
    assert_eq!(reply[1], 0x05, "connection refused, reply {reply:?}");

    // BIND (0x02) and UDP ASSOCIATE (0x03).
    for command in [0x02, 0x03] {
        let (_, reply) = timeout(DEADLINE, socks_request(socks, command, app_addr()))
            .await
            .unwrap();
        assert_eq!(reply[..2], [0x05, 0x07], "command {command}");
    }

    // An IPv4 address.
    let (_, reply) = socks_send(socks, 0x01, &[0x01, 192, 0, 2, 1], 80).await;
    assert_eq!(reply[1], 0x08);

    // A domain name outside the overlay zone: not allowed (never resolved).
    let (_, reply) = socks_name_request(socks, "example.org", 80).await;
    assert_eq!(reply[1], 0x02);

    // No acceptable method: 0xff and the connection ends.
    let mut conn = TcpStream::connect(socks).await.unwrap();
    conn.write_all(&[0x05, 0x01, 0x02]).await.unwrap();
    let mut method = [0u8; 2];
    timeout(DEADLINE, conn.read_exact(&mut method))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(method, [0x05, 0xff]);
}

#[tokio::test]
async fn ipv6_literal_domain_connects() {
    let (_client, server, socks) = setup().await;
    let (backend, header) = echo_backend().await;
    tokio::spawn(serve_application(server.stack.clone(), app_addr(), backend));

    let name = format!("[{}]", app_addr().ip());
    let (conn, reply) = socks_name_request(socks, &name, APP_PORT).await;
    assert_eq!(reply[1], 0x00);

    assert_eq!(echo(conn, b"hello overlay").await, b"hello overlay");
    let header = timeout(DEADLINE, header).await.unwrap().unwrap();
    assert_eq!(header[16..32], client_addr().octets());
}

#[tokio::test]
async fn socks_connect_from_a_non_member_fails() {
    let staff_only = Application {
        name: "staff-app".into(),
        address: *app_addr().ip(),
        ports: vec![APP_PORT],
        backend: Some("127.0.0.1:9".parse().unwrap()),
        allowed_groups: vec!["staff".into()],
    };
    let (client, server, socks) = setup_with(
        AccessPolicy::from_applications(&[staff_only]),
        Timers::DEFAULT,
    )
    .await;
    let (backend, _header) = echo_backend().await;
    tokio::spawn(serve_application(server.stack.clone(), app_addr(), backend));

    let started = std::time::Instant::now();
    let (_, reply) = timeout(DEADLINE, socks_request(socks, 0x01, app_addr()))
        .await
        .unwrap();
    // The server's ICMPv6 "administratively prohibited" fails the connect
    // at once: not allowed by ruleset.
    assert_eq!(reply[1], 0x02, "CONNECT must be refused, reply {reply:?}");
    assert!(started.elapsed() < CONNECT_TIMEOUT, "not by the timeout");
    assert_eq!(client.stack.counters().connects_failed_by_icmp, 1);
    // The SYNs never reached the server's stack, let alone the backend.
    assert_eq!(server.stack.counters().accepted, 0);
    let dataplane = server.tunnel.status().await.unwrap().dataplane;
    assert!(dataplane.prohibited > 0, "{dataplane:?}");
    assert!(dataplane.icmp_sent > 0, "{dataplane:?}");
    assert_eq!(client.stack.counters().connected, 0);
}

/// A lease for the application at [`app_addr`], as addrd's netmap would
/// hand it to the client.
fn wiki_lease() -> Lease {
    Lease {
        kind: EntityKind::Application,
        serial: 1,
        not_before: UnixTime::from_secs(0),
        not_after: UnixTime::from_secs(u64::from(u32::MAX)),
        public_key: [9; 32],
        prefix: format!("{}/128", app_addr().ip()).parse().unwrap(),
        name: "wiki".into(),
        dn: "cn=wiki".into(),
        groups: Vec::new(),
    }
}

#[tokio::test]
async fn overlay_names_resolve_and_connect_end_to_end() {
    let (client, server, socks) = setup().await;
    // An application the client knows by its lease, and the server system
    // (its peer) by the server's lease.
    client.resolver.learn(&wiki_lease());
    let (backend, header) = echo_backend().await;
    tokio::spawn(serve_application(server.stack.clone(), app_addr(), backend));
    let system = SocketAddrV6::new(server_addr(), 7000, 0, 0);
    let (system_backend, system_header) = echo_backend().await;
    tokio::spawn(serve_application(
        server.stack.clone(),
        system,
        system_backend,
    ));

    for (name, port, header, dst) in [
        ("wiki.apps.permanet.internal", APP_PORT, header, app_addr()),
        (
            "Server.Systems.Permanet.Internal.",
            7000,
            system_header,
            system,
        ),
    ] {
        let (conn, reply) = socks_name_request(socks, name, port).await;
        assert_eq!(reply[1], 0x00, "{name}: reply {reply:?}");
        assert_eq!(&reply[4..20], &client_addr().octets(), "bound address");
        assert_eq!(echo(conn, name.as_bytes()).await, name.as_bytes());
        let header = timeout(DEADLINE, header).await.unwrap().unwrap();
        assert_eq!(header[16..32], client_addr().octets(), "{name}");
        assert_eq!(header[32..48], dst.ip().octets(), "{name}");
        assert_eq!(header[50..52], port.to_be_bytes(), "{name}");
    }
    assert_eq!(client.stack.counters().connected, 2);
}

#[tokio::test]
async fn overlay_name_failures_get_replies_and_never_reach_the_host_resolver() {
    let (client, _server, socks) = setup().await;

    // In the zone, but no such entity (or the wrong kind): host unreachable.
    for name in [
        "nobody.users.permanet.internal",
        "server.users.permanet.internal",
        "server.hosts.permanet.internal",
    ] {
        let (_, reply) = socks_name_request(socks, name, 80).await;
        assert_eq!(reply[1], 0x04, "{name}: reply {reply:?}");
    }

    // "localhost" is a name the host resolves (to 127.0.0.1 or ::1): a
    // listener waits there on the port asked for. The proxy refuses the
    // name as outside the overlay zone (not allowed by ruleset) and never
    // looks it up, so nothing connects to the listener, before or after
    // the reply.
    let host_v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host_v4.local_addr().unwrap().port();
    let host_v6 = std::net::TcpListener::bind(("::1", port)).ok();
    for name in [
        "localhost",
        "localhost.",
        "example.org",
        "permanet.internal",
    ] {
        let (_, reply) = socks_name_request(socks, name, port).await;
        assert_eq!(reply[1], 0x02, "{name}: reply {reply:?}");
    }
    for listener in std::iter::once(&host_v4).chain(host_v6.as_ref()) {
        listener.set_nonblocking(true).unwrap();
        let accepted = listener.accept();
        assert!(
            matches!(&accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the proxy reached the host: {accepted:?}"
        );
    }
    assert_eq!(client.stack.counters().connected, 0);
    let dataplane = client.tunnel.status().await.unwrap().dataplane;
    assert_eq!(dataplane.no_route, 0, "no packet for any of these names");
}

/// Wait until `condition` holds, polling every 10 ms, or fail at [`DEADLINE`].
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_port_forward_carries_a_connection_both_ways_with_half_close() {
    let (client, server, _socks) = setup().await;
    let (backend, header) = echo_backend().await;
    tokio::spawn(serve_application(server.stack.clone(), app_addr(), backend));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(serve_port_forward(
        listener,
        client.stack.clone(),
        app_addr(),
    ));

    // 4 MiB up while the echo comes down; then a FIN up (half-close): the
    // echo of everything still arrives, then the backend's FIN.
    let payload = pattern(4 * 1024 * 1024);
    let conn = TcpStream::connect(local).await.unwrap();
    let (mut rd, mut wr) = conn.into_split();
    let writer = tokio::spawn({
        let payload = payload.clone();
        async move {
            wr.write_all(&payload).await.unwrap();
            wr.shutdown().await.unwrap();
            wr
        }
    });
    let mut echoed = Vec::new();
    timeout(DEADLINE, rd.read_to_end(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    let _wr = writer.await.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echo differs");
    let header = timeout(DEADLINE, header).await.unwrap().unwrap();
    let expected = proxy_v2_header(
        SocketAddrV6::new(
            client_addr(),
            u16::from_be_bytes([header[48], header[49]]),
            0,
            0,
        ),
        app_addr(),
        ProxyTransport::Stream,
    );
    assert_eq!(
        header, expected,
        "PROXY header names the client and the application"
    );
    assert_eq!(client.stack.counters().forwarded, 1);

    // A forward to a port nobody serves: the overlay connect is refused,
    // the local connection is closed at once and the failure counted.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = listener.local_addr().unwrap();
    let closed = SocketAddrV6::new(*app_addr().ip(), 81, 0, 0);
    tokio::spawn(serve_port_forward(listener, client.stack.clone(), closed));
    let mut conn = TcpStream::connect(refused).await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(DEADLINE, conn.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "closed, got {read:?}");
    let stack = client.stack.clone();
    wait_for("forward_failed counted", || {
        stack.counters().forward_failed == 1
    })
    .await;
    assert_eq!(client.stack.counters().forwarded, 1);
}

/// One datagram a UDP backend received: its PROXY v2 header (the first
/// 52 bytes), what followed, and the host address it came from (one per
/// flow).
struct Datagram {
    header: Vec<u8>,
    payload: Vec<u8>,
    from: SocketAddr,
}

/// A UDP backend on 127.0.0.1 that reports each datagram, then echoes its
/// payload to the sender.
async fn udp_backend() -> (SocketAddr, UnboundedReceiver<Datagram>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.unwrap();
            let (header, payload) = buf[..len].split_at(len.min(52));
            let datagram = Datagram {
                header: header.to_vec(),
                payload: payload.to_vec(),
                from,
            };
            report.send(datagram).unwrap();
            socket.send_to(payload, from).await.unwrap();
        }
    });
    (addr, reports)
}

/// A UDP application at [`app_addr`] on `server`'s stack served by a
/// [`udp_backend`]; what the backend reports.
async fn udp_echo_application(server: &Side) -> UnboundedReceiver<Datagram> {
    let (backend, reports) = udp_backend().await;
    tokio::spawn(serve_application_udp(
        server.stack.clone(),
        app_addr(),
        backend,
    ));
    reports
}

/// A UDP socket on `side`'s stack, on its own address and an ephemeral
/// port.
fn bind_any(side: &Side) -> OverlayUdpSocket {
    let any = SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0);
    side.stack.bind_udp(any).unwrap()
}

/// Send `data` to `dst` and wait for its echo, resending every 500 ms
/// while `resend` (the first datagram may meet the tunnel handshake, or
/// arrive before the application's socket is bound).
async fn udp_round_trip(
    socket: &tunneld::userspace::OverlayUdpSocket,
    dst: SocketAddrV6,
    data: &[u8],
    resend: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    loop {
        socket.send_to(data, dst).await.unwrap();
        let wait = if resend {
            Duration::from_millis(500)
        } else {
            DEADLINE
        };
        match timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(received) => {
                let (len, from) = received.unwrap();
                assert_eq!(from, dst);
                return buf[..len].to_vec();
            }
            Err(_) if resend => continue,
            Err(_) => panic!("no echo within {DEADLINE:?}"),
        }
    }
}

/// Send `data` from `socket` to `dst` until its echo comes back (every
/// 500 ms: the first may meet the handshake or a socket not yet bound;
/// echoes of earlier datagrams are skipped), then return the host address
/// the backend saw it from.
async fn flow_source(
    socket: &OverlayUdpSocket,
    dst: SocketAddrV6,
    data: &[u8],
    reports: &mut UnboundedReceiver<Datagram>,
) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 2048];
    'send: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no echo of {data:?}"
        );
        socket.send_to(data, dst).await.unwrap();
        let resend = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(resend, socket.recv_from(&mut buf)).await {
                Ok(received) => {
                    let (len, _) = received.unwrap();
                    if buf[..len] == *data {
                        break 'send;
                    }
                }
                Err(_) => continue 'send,
            }
        }
    }
    loop {
        let datagram = timeout(DEADLINE, reports.recv()).await.unwrap().unwrap();
        if datagram.payload == data {
            return datagram.from;
        }
    }
}

#[tokio::test]
async fn udp_flows_end_when_idle_and_the_least_recent_is_evicted() {
    let (client, server, _socks) = setup().await;

    // Idle expiry: a flow quiet for 300 ms ends; the next datagram from the
    // same overlay source opens a new flow (a new host socket).
    let (backend, mut reports) = udp_backend().await;
    let short = UdpFlowLimits {
        idle: Duration::from_millis(300),
        max_flows: UDP_TEST_FLOWS,
    };
    tokio::spawn(serve_application_udp_with(
        server.stack.clone(),
        app_addr(),
        backend,
        short,
    ));
    let w = bind_any(&client);
    let first = flow_source(&w, app_addr(), b"w1", &mut reports).await;
    let stack = server.stack.clone();
    wait_for("the idle flow expired", || {
        stack.counters().udp_flows_expired == 1
    })
    .await;
    let second = flow_source(&w, app_addr(), b"w2", &mut reports).await;
    assert_ne!(first, second, "a new flow after expiry");
    assert_eq!(server.stack.counters().udp_flows_evicted, 0);

    // Eviction: two flows at most, idle never reached; a third source
    // evicts the least recently active flow, which then starts afresh.
    let (backend, mut reports) = udp_backend().await;
    let game = SocketAddrV6::new(*app_addr().ip(), 9090, 0, 0);
    let two = UdpFlowLimits {
        idle: Duration::from_secs(3600),
        max_flows: 2,
    };
    tokio::spawn(serve_application_udp_with(
        server.stack.clone(),
        game,
        backend,
        two,
    ));
    let [a, b, c] = [(); 3].map(|()| bind_any(&client));
    let a1 = flow_source(&a, game, b"a1", &mut reports).await;
    let b1 = flow_source(&b, game, b"b1", &mut reports).await;
    assert_ne!(a1, b1);
    assert_eq!(flow_source(&a, game, b"a2", &mut reports).await, a1);
    // Full: c evicts b, the least recently active.
    let c1 = flow_source(&c, game, b"c1", &mut reports).await;
    assert_eq!(server.stack.counters().udp_flows_evicted, 1);
    assert_eq!(
        flow_source(&a, game, b"a3", &mut reports).await,
        a1,
        "a kept"
    );
    // b comes back on a new flow and evicts c (a was active since).
    let b2 = flow_source(&b, game, b"b2", &mut reports).await;
    assert_ne!(b2, b1, "b's flow was evicted");
    assert_eq!(server.stack.counters().udp_flows_evicted, 2);
    assert_eq!(
        flow_source(&a, game, b"a4", &mut reports).await,
        a1,
        "a kept"
    );
    assert_ne!(
        flow_source(&c, game, b"c2", &mut reports).await,
        c1,
        "c evicted"
    );
    assert_eq!(server.stack.counters().udp_flows_evicted, 3);
    assert_eq!(
        server.stack.counters().udp_flows_expired,
        1,
        "none by idle here"
    );
}

/// Flows of the idle-expiry service: more than the test opens.
const UDP_TEST_FLOWS: usize = 16;

#[tokio::test]
async fn a_udp_flow_echoes_100_datagrams_with_proxy_headers() {
    let (client, server, _socks) = setup().await;
    let mut reports = udp_echo_application(&server).await;
    let socket = bind_any(&client);
    let local = socket.local_addr();
    assert_eq!(*local.ip(), client_addr());
    assert_ne!(local.port(), 0);

    let mut sizes: Vec<usize> = (0..100).map(|i| 1 + (i * 397) % 1200).collect();
    sizes[99] = 1200;
    let data = pattern(1200 * 100);
    let mut offset = 0;
    for (i, &size) in sizes.iter().enumerate() {
        let sent = &data[offset..offset + size];
        offset += size;
        let echoed = timeout(DEADLINE, udp_round_trip(&socket, app_addr(), sent, i == 0))
            .await
            .unwrap();
        assert_eq!(echoed, sent, "datagram {i} ({size} bytes)");
    }

    // Every datagram the backend saw (including resends of the first)
    // carried the DGRAM header naming the client's address and port.
    let expected = proxy_v2_header(local, app_addr(), ProxyTransport::Dgram);
    assert_eq!(expected[13], 0x22);
    let mut seen = 0;
    while let Ok(datagram) = reports.try_recv() {
        assert_eq!(datagram.header, expected);
        seen += 1;
    }
    assert!(seen >= 100, "{seen}");

    let counters = client.stack.counters();
    assert_eq!(counters.udp_tx_full, 0, "{counters:?}");
    assert_eq!(counters.udp_rx_full, 0, "{counters:?}");
    let counters = server.stack.counters();
    assert_eq!(counters.udp_tx_full, 0, "{counters:?}");
    assert_eq!(counters.udp_rx_full, 0, "{counters:?}");
    assert_eq!(counters.udp_flows_evicted, 0, "{counters:?}");
}

#[tokio::test]
async fn a_udp_datagram_to_a_port_without_service_is_dropped_and_counted() {
    let (client, server, _socks) = setup().await;
    let _reports = udp_echo_application(&server).await;
    let socket = bind_any(&client);
    // Establish the tunnel (and the application's socket) first.
    let echoed = timeout(
        DEADLINE,
        udp_round_trip(&socket, app_addr(), b"first", true),
    )
    .await
    .unwrap();
    assert_eq!(echoed, b"first");
    assert_eq!(server.stack.counters().udp_no_socket, 0);

    let closed = SocketAddrV6::new(*app_addr().ip(), 81, 0, 0);
    socket.send_to(b"nobody here", closed).await.unwrap();
    wait_for("the datagram to be counted", || {
        server.stack.counters().udp_no_socket != 0
    })
    .await;
    assert_eq!(server.stack.counters().udp_no_socket, 1);

    // Both stacks and the application's flow still work.
    let echoed = timeout(
        DEADLINE,
        udp_round_trip(&socket, app_addr(), b"again", false),
    )
    .await
    .unwrap();
    assert_eq!(echoed, b"again");
}

#[tokio::test]
async fn udp_bind_rules_and_full_send_buffer() {
    let (_port, channels) = ChannelPort::new(16);
    // The stack never runs: nothing drains the send buffer.
    let (_stack, handle) = UserspaceStack::new(
        StackConfig::new(server_addr(), SERVER_PREFIX.parse().unwrap()),
        channels,
    );
    let socket = handle.bind_udp(app_addr()).unwrap();
    assert_eq!(socket.local_addr(), app_addr());
    let error = handle.bind_udp(app_addr()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    let other = SocketAddrV6::new(server_addr(), APP_PORT, 0, 0);
    handle.bind_udp(other).unwrap();
    let outside = SocketAddrV6::new(client_addr(), 5353, 0, 0);
    let error = handle.bind_udp(outside).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrNotAvailable);

    let dst = SocketAddrV6::new(client_addr(), 9, 0, 0);
    let too_big = vec![0u8; 1380 - 48 + 1];
    let error = socket.send_to(&too_big, dst).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    let datagram = vec![0u8; 1200];
    for _ in 0..100 {
        assert_eq!(socket.send_to(&datagram, dst).await.unwrap(), 1200);
    }
    // 64 KiB hold 54 of them; the rest are dropped and counted.
    assert_eq!(handle.counters().udp_tx_full, 100 - 54);

    // Dropping the socket frees its port.
    drop(socket);
    handle.bind_udp(app_addr()).unwrap();
}

/// Send `data` from the host socket `local` to the forward until its echo
/// comes back (resent every 500 ms: the first may meet the handshake);
/// then the PROXY v2 source the backend saw for it (one overlay source per
/// local client).
async fn forwarded_echo(
    local: &UdpSocket,
    forward: SocketAddr,
    data: &[u8],
    reports: &mut UnboundedReceiver<Datagram>,
) -> SocketAddrV6 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 2048];
    'send: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no echo of {data:?}"
        );
        local.send_to(data, forward).await.unwrap();
        let resend = tokio::time::Instant::now() + Duration::from_millis(500);
        loop {
            match tokio::time::timeout_at(resend, local.recv_from(&mut buf)).await {
                Ok(received) => {
                    let (len, from) = received.unwrap();
                    assert_eq!(from, forward, "the reply comes from the forward");
                    if buf[..len] == *data {
                        break 'send;
                    }
                }
                Err(_) => continue 'send,
            }
        }
    }
    loop {
        let datagram = timeout(DEADLINE, reports.recv()).await.unwrap().unwrap();
        if datagram.payload == data {
            assert_eq!(&datagram.header[..12], b"\r\n\r\n\0\r\nQUIT\n");
            let ip: [u8; 16] = datagram.header[16..32].try_into().unwrap();
            let port = u16::from_be_bytes([datagram.header[48], datagram.header[49]]);
            return SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0);
        }
    }
}

#[tokio::test]
async fn a_udp_port_forward_relays_each_local_client_through_its_own_overlay_flow() {
    let (client, server, _socks) = setup().await;
    let mut reports = udp_echo_application(&server).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let forward = socket.local_addr().unwrap();
    let limits = UdpFlowLimits {
        idle: Duration::from_millis(400),
        max_flows: 2,
    };
    tokio::spawn(serve_udp_port_forward_with(
        socket,
        client.stack.clone(),
        app_addr(),
        limits,
    ));

    // Two local clients: each gets its echo back, through its own overlay
    // source on the client's address.
    let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let source_a = forwarded_echo(&a, forward, b"from a", &mut reports).await;
    let source_b = forwarded_echo(&b, forward, b"from b", &mut reports).await;
    assert_eq!(*source_a.ip(), client_addr());
    assert_eq!(*source_b.ip(), client_addr());
    assert_ne!(
        source_a.port(),
        source_b.port(),
        "one overlay flow per client"
    );
    // a again: the same flow.
    assert_eq!(
        forwarded_echo(&a, forward, b"a again", &mut reports).await,
        source_a
    );
    assert_eq!(client.stack.counters().udp_forward_flows, 2);

    // A third client with max_flows 2: the least recently active flow (b)
    // is evicted.
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    forwarded_echo(&c, forward, b"from c", &mut reports).await;
    assert_eq!(client.stack.counters().udp_flows_evicted, 1);
    assert_eq!(client.stack.counters().udp_forward_flows, 3);

    // Too big for the overlay MTU: dropped and counted, the forward goes on.
    a.send_to(&vec![0u8; 4000], forward).await.unwrap();
    let stack = client.stack.clone();
    wait_for("an oversized datagram counted", || {
        stack.counters().udp_forward_dropped == 1
    })
    .await;

    // Idle: every flow ends; a's next datagram opens a new one.
    let stack = client.stack.clone();
    wait_for("idle forward flows expired", || {
        stack.counters().udp_flows_expired >= 2
    })
    .await;
    let again = forwarded_echo(&a, forward, b"a after idle", &mut reports).await;
    assert_ne!(again, source_a, "a new overlay flow after idle expiry");
    assert_eq!(client.stack.counters().udp_forward_flows, 4);
}
