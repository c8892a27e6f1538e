//! The home agent on the overlay, against a real `addrd run` (embedded
//! directory, example organisation): a terminal logs in on the login
//! channel, takes addrd's own lease from its netmap and talks to addrd's
//! overlay address through a real overlay-proto [`Node`] over UDP on
//! loopback. DNS answers come through the tunnel; the binding cache
//! follows the terminal when it roams to a new socket; servers locate it
//! with `WhereIs`, and nobody else may.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::time::{Duration, Instant};

use addrd::dns::reverse_name;
use addrd::homeagent::inner::udp_packet;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use netns_tests::wait_until;
use overlay_proto::authority::{ErrorCode, LoginNeededReason, Request, Response};
use overlay_proto::esp;
use overlay_proto::handshake::StaticKeypair;
use overlay_proto::lease::{AuthorityKey, EntityKind, SignedLease};
use overlay_proto::node::{Node, NodeConfig, Outgoing, Received};
use overlay_proto::session::{PeerConfig, PeerId};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, UdpPacket};

#[allow(dead_code)] // each test binary uses part of it
mod common;

use common::terminal::{now, Terminal};
use common::{text, Setup, DEADLINE, REFERENCE};

const ALICE_PASSWORD: &str = "alice-lab-password";

/// A second system that hosts no application: no user may be located by
/// it.
const APP2: &str = "
dn: cn=app2,ou=systems,dc=example,dc=org
objectClass: permanetSystem
cn: app2
description: a server hosting nothing
";

/// A terminal's tunnel to addrd: a node with the terminal's key and lease,
/// addrd as its one peer, on its own UDP socket.
struct Tunnel {
    node: Node,
    socket: UdpSocket,
    addrd: PeerId,
    buffer: Vec<u8>,
}

impl Tunnel {
    fn new(
        keypair: StaticKeypair,
        lease: SignedLease,
        authority: AuthorityKey,
        addrd_lease: SignedLease,
        endpoint: SocketAddr,
    ) -> Tunnel {
        let mut node = Node::new(NodeConfig::new(keypair, authority, lease), [7; 32]);
        let addrd = node
            .add_peer(
                addrd_lease,
                PeerConfig {
                    psk: None,
                    endpoint: Some(endpoint),
                    persistent_keepalive: None,
                },
                Instant::now(),
            )
            .unwrap();
        Tunnel {
            node,
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            addrd,
            buffer: vec![0; 65_536],
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Roam: the same node from a new UDP socket (a new NAT mapping).
    fn roam(&mut self) {
        self.socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    }

    fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.socket.send_to(&t.contents, t.destination).unwrap();
        }
    }

    /// Send `packet` to addrd and return the first inner packet that comes
    /// back.
    fn exchange(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; esp::encapsulated_len(packet.len())];
        match self.node.encapsulate(now(), self.addrd, packet, &mut out) {
            Outgoing::Send {
                destination,
                datagram,
            } => {
                self.socket.send_to(datagram, destination).unwrap();
            }
            Outgoing::Queued => {}
            Outgoing::Dropped(reason) => panic!("not sent: {reason:?}"),
        }
        let start = Instant::now();
        loop {
            self.flush();
            assert!(start.elapsed() < DEADLINE, "no answer through the tunnel");
            self.socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            if let Ok((len, src)) = self.socket.recv_from(&mut self.buffer) {
                if let Received::Packet { packet, .. } =
                    self.node
                        .handle_datagram(now(), src, &mut self.buffer[..len])
                {
                    let packet = packet.to_vec();
                    self.flush();
                    return packet;
                }
            }
            self.node.handle_timeout(now());
        }
    }
}

/// A DNS query for `name` of type `record_type`, from `client` to addrd.
fn dns_query(client: Ipv6Addr, addrd: Ipv6Addr, name: &Name, record_type: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(0x5151)
        .set_message_type(MessageType::Query)
        .add_query(Query::query(name.clone(), record_type));
    udp_packet(
        SocketAddrV6::new(client, 33_333, 0, 0),
        SocketAddrV6::new(addrd, 53, 0, 0),
        &message.to_vec().unwrap(),
    )
}

/// The DNS message in an inner UDP packet from addrd's port 53, its
/// checksum verified.
fn dns_answer(packet: &[u8], client: Ipv6Addr, addrd: Ipv6Addr) -> Message {
    let ip = Ipv6Packet::new_checked(packet).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (addrd, client));
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(udp.verify_checksum(&addrd.into(), &client.into()));
    assert_eq!((udp.src_port(), udp.dst_port()), (53, 33_333));
    let message = Message::from_vec(udp.payload()).unwrap();
    assert_eq!(message.id(), 0x5151);
    message
}

fn ping(from: Ipv6Addr, to: Ipv6Addr, seq_no: u16) -> Vec<u8> {
    let echo = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no,
        data: b"where am I",
    };
    let mut packet = vec![0u8; 40 + echo.buffer_len()];
    let mut ip = Ipv6Packet::new_unchecked(&mut packet);
    Ipv6Repr {
        src_addr: from,
        dst_addr: to,
        next_header: IpProtocol::Icmpv6,
        payload_len: echo.buffer_len(),
        hop_limit: 64,
    }
    .emit(&mut ip);
    echo.emit(
        &from,
        &to,
        &mut Icmpv6Packet::new_unchecked(ip.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    packet
}

/// `addrd bindings --json`: the binding of `address`, if any.
fn binding(setup: &Setup, address: Ipv6Addr) -> Option<serde_json::Value> {
    let out = setup.addrd_ok(&["bindings", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter()
        .find(|b| b["address"].as_str() == Some(address.to_string().as_str()))
}

/// Issue a lease for `name` (a system) to a fresh key; the key and lease.
fn server(setup: &Setup, name: &str, authority: &AuthorityKey) -> (StaticKeypair, SignedLease) {
    let keypair = StaticKeypair::generate(&mut rand::rngs::OsRng);
    let public = setup.path(&format!("{name}.pub"));
    let lease_file = setup.path(&format!("{name}.lease"));
    setup.write(
        &format!("{name}.pub"),
        format!("{}\n", keypair.public()).as_bytes(),
        0o644,
    );
    let out = setup.issue_lease(name, &public, &lease_file, &["--kind", "system"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lease =
        SignedLease::verify(&std::fs::read(&lease_file).unwrap(), authority, now().unix).unwrap();
    (keypair, lease)
}

#[test]
fn dns_bindings_and_where_is_through_the_overlay() {
    let setup = Setup::with_edits(REFERENCE, &[]);
    OpenOptions::new()
        .append(true)
        .open(setup.path("ldap/example-org.ldif"))
        .unwrap()
        .write_all(APP2.as_bytes())
        .unwrap();
    let authority = setup.authority();
    let daemon = setup.start_login();
    let overlay: Ipv6Addr = setup.status()["overlay_address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Log in; addrd's own lease comes first in the netmap.
    let mut terminal = Terminal::new(&setup, daemon.channel);
    let lease = terminal.login_lease("alice", ALICE_PASSWORD, &authority);
    let alice = lease.lease().address();
    let Response::Netmap(page) = terminal
        .ask(Request::Netmap {
            since_version: 0,
            cursor: 0,
        })
        .unwrap()
    else {
        panic!("no netmap")
    };
    let addrd_lease = SignedLease::verify(&page.leases[0], &authority, now().unix).unwrap();
    assert_eq!(addrd_lease.lease().address(), overlay);
    assert_eq!(addrd_lease.lease().kind, EntityKind::System);
    let mut tunnel = Tunnel::new(
        terminal.keypair.clone(),
        lease.clone(),
        authority,
        addrd_lease,
        daemon.channel,
    );

    // DNS on addrd's overlay address: an application's AAAA, a user's
    // PTR, NXDOMAIN for a name that does not exist.
    let zone = "permanet.internal.";
    let wiki: Ipv6Addr = setup.address_of("wiki").parse().unwrap();
    let name = Name::from_ascii(format!("wiki.apps.{zone}")).unwrap();
    let answer = dns_answer(
        &tunnel.exchange(&dns_query(alice, overlay, &name, RecordType::AAAA)),
        alice,
        overlay,
    );
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(answer.authoritative());
    let addresses: Vec<Ipv6Addr> = answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::AAAA(aaaa) => Some(aaaa.0),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, [wiki]);

    let reverse = reverse_name(alice, 32);
    let answer = dns_answer(
        &tunnel.exchange(&dns_query(alice, overlay, &reverse, RecordType::PTR)),
        alice,
        overlay,
    );
    let names: Vec<String> = answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(ptr) => Some(ptr.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(names, [format!("alice.users.{zone}")]);

    let nowhere = Name::from_ascii(format!("nobody.users.{zone}")).unwrap();
    let answer = dns_answer(
        &tunnel.exchange(&dns_query(alice, overlay, &nowhere, RecordType::AAAA)),
        alice,
        overlay,
    );
    assert_eq!(answer.response_code(), ResponseCode::NXDomain);

    // The binding is where the tunnel's packets came from.
    let first = binding(&setup, alice).expect("no binding for alice");
    assert_eq!(first["endpoint"], tunnel.local_addr().to_string());
    assert_eq!(first["name"], "alice");

    // Roaming: the same SA from a new socket. The echo reply goes to the
    // new endpoint, and the binding follows with a higher sequence.
    tunnel.roam();
    let reply = tunnel.exchange(&ping(alice, overlay, 2));
    let ip = Ipv6Packet::new_checked(&reply[..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    let repr =
        Icmpv6Repr::parse(&overlay, &alice, &icmp, &ChecksumCapabilities::default()).unwrap();
    assert!(
        matches!(repr, Icmpv6Repr::EchoReply { seq_no: 2, .. }),
        "{repr:?}"
    );
    let moved = binding(&setup, alice).unwrap();
    assert_eq!(moved["endpoint"], tunnel.local_addr().to_string());
    assert!(moved["sequence"].as_u64() > first["sequence"].as_u64());

    // WhereIs: app1 hosts applications alice's groups reach, so its
    // server may locate her; the answer carries her lease.
    let (app1_key, app1_lease) = server(&setup, "app1", &authority);
    let mut app1 = Terminal::with_key(&setup, daemon.channel, app1_key);
    let where_is = |lease: &SignedLease, address| Request::WhereIs {
        lease: lease.as_bytes().to_vec(),
        address,
    };
    let Response::Location(location) = app1.ask(where_is(&app1_lease, alice)).unwrap() else {
        panic!("no location")
    };
    assert_eq!(location.endpoint, tunnel.local_addr());
    assert_eq!(
        Some(location.sequence),
        moved["sequence"].as_u64(),
        "the answer is the binding's"
    );
    assert!(location.expires_in_secs > 0);
    let located = SignedLease::verify(&location.lease, &authority, now().unix).unwrap();
    assert_eq!(located.lease().name, "alice");
    assert_eq!(located.as_bytes(), lease.as_bytes());

    // An entity not seen: not bound.
    let bob: Ipv6Addr = setup.address_of("bob").parse().unwrap();
    assert_eq!(
        app1.ask(where_is(&app1_lease, bob)).unwrap(),
        Response::NotBound
    );

    // Who may not know: a user (even about herself), a server that hosts
    // nothing alice may reach, and a lease presented by another key.
    let not_authorized = Response::Error {
        code: ErrorCode::NotAuthorized,
    };
    assert_eq!(
        terminal.ask(where_is(&lease, alice)).unwrap(),
        not_authorized
    );
    let (app2_key, app2_lease) = server(&setup, "app2", &authority);
    let mut app2 = Terminal::with_key(&setup, daemon.channel, app2_key);
    assert_eq!(
        app2.ask(where_is(&app2_lease, alice)).unwrap(),
        not_authorized
    );
    assert_eq!(
        terminal.ask(where_is(&app1_lease, alice)).unwrap(),
        Response::LoginNeeded {
            reason: LoginNeededReason::KeyMismatch
        }
    );

    // Counted: the queries, the answers, the moves and the refusals.
    wait_until(
        "home agent counters",
        DEADLINE,
        || {
            let status = setup.status();
            let count = |label: &str| status["login"][label].as_u64().unwrap_or(0);
            count("homeagent.dns_queries") == 3
                && count("homeagent.dns_answers") == 3
                && count("homeagent.binding_moves") >= 1
                && count("homeagent.replies") == 1
                && count("channel.where_is") == 5
                && count("channel.where_is_refused") == 3
        },
        || setup.status().to_string(),
    );
    daemon.stop();
}
