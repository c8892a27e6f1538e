//! The overlay DNS server on loopback, asked by two independent clients:
//! hickory-client (always, over UDP and TCP) and BIND's `dig` (when
//! installed; skipped with a message otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use addrd::directory::Entity;
use addrd::dns::{DnsServer, OverlayZone, ZoneConfig, ZoneHandle};
use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::op::ResponseCode;
use hickory_client::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::udp::UdpClientStream;
use overlay_proto::lease::EntityKind;

const ALICE: &str = "fd00:1:2:1::a";
const WIKI: &str = "2002:c633:640a:1::10";
const APP1: &str = "2002:c633:640a:1::1";

fn entity(kind: EntityKind, name: &str, address: Option<&str>) -> Entity {
    Entity {
        dn: format!("cn={name},dc=example,dc=org"),
        name: name.into(),
        kind,
        groups: Vec::new(),
        disabled: false,
        address: address.map(|a| a.parse().unwrap()),
        allowed_groups: Vec::new(),
        system: None,
        public_ipv4: None,
    }
}

fn directory() -> Vec<Entity> {
    vec![
        entity(EntityKind::User, "alice", Some(ALICE)),
        entity(EntityKind::User, "bob", None),
        entity(EntityKind::User, "not_a_label", Some("fd00:1:2:1::99")),
        entity(EntityKind::Application, "wiki", Some(WIKI)),
        entity(EntityKind::System, "app1", Some(APP1)),
    ]
}

fn config() -> ZoneConfig {
    let mut config = ZoneConfig::new(OverlayZone::default());
    config.reverse_prefixes = vec!["fd00:1:2::/48".parse().unwrap()];
    config.nameserver = Some("fd00:1:2::53".parse().unwrap());
    config
}

/// What a client saw.
#[derive(Debug)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<String>,
    /// Types of the records in the authority section.
    authority: Vec<RecordType>,
}

#[derive(Clone, Copy, Debug)]
enum Transport {
    Udp,
    Tcp,
}

async fn ask(
    server: SocketAddr,
    transport: Transport,
    name: &str,
    record_type: RecordType,
) -> Reply {
    let provider = TokioRuntimeProvider::new();
    let (mut client, background) = match transport {
        Transport::Udp => {
            let stream = UdpClientStream::builder(server, provider)
                .with_timeout(Some(Duration::from_secs(5)))
                .build();
            let (client, background) = Client::connect(stream).await.unwrap();
            (client, tokio::spawn(background))
        }
        Transport::Tcp => {
            let (stream, sender) =
                TcpClientStream::new(server, None, Some(Duration::from_secs(5)), provider);
            let (client, background) = Client::new(stream, sender, None).await.unwrap();
            (client, tokio::spawn(background))
        }
    };
    let response = client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, record_type)
        .await
        .unwrap();
    background.abort();
    Reply {
        code: response.response_code(),
        authoritative: response.authoritative(),
        answers: response
            .answers()
            .iter()
            .map(|r| match r.data() {
                RData::AAAA(a) => a.0.to_string(),
                RData::PTR(p) => p.0.to_string(),
                other => other.to_string(),
            })
            .collect(),
        authority: response
            .name_servers()
            .iter()
            .map(|r| r.record_type())
            .collect(),
    }
}

struct Fixture {
    zone: ZoneHandle,
    server: DnsServer,
}

async fn start() -> Fixture {
    let (zone, report) = ZoneHandle::new(config(), &directory(), 100).unwrap();
    assert_eq!(report.published, 3);
    assert_eq!(report.skipped.len(), 1);
    let server = DnsServer::bind(zone.clone(), &["127.0.0.1:0".parse().unwrap()])
        .await
        .unwrap();
    Fixture { zone, server }
}

fn reverse(address: &str) -> String {
    addrd::dns::reverse_name(address.parse::<Ipv6Addr>().unwrap(), 32).to_ascii()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hickory_client_over_udp_and_tcp() {
    let fixture = start().await;
    let server = fixture.server.local_addrs()[0];
    for transport in [Transport::Udp, Transport::Tcp] {
        let t = transport;
        // A user, an application, a system; the case of the question does
        // not matter.
        let user = ask(
            server,
            t,
            "Alice.USERS.permanet.internal.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(user.code, ResponseCode::NoError, "{t:?}");
        assert!(user.authoritative, "{t:?}");
        assert_eq!(user.answers, [ALICE], "{t:?}");
        let app = ask(server, t, "wiki.apps.permanet.internal.", RecordType::AAAA).await;
        assert_eq!(app.answers, [WIKI], "{t:?}");
        let system = ask(
            server,
            t,
            "app1.systems.permanet.internal.",
            RecordType::AAAA,
        )
        .await;
        assert_eq!(system.answers, [APP1], "{t:?}");

        // Reverse lookups, in the configured and in a derived (6to4 /48)
        // reverse zone.
        for (address, name) in [
            (ALICE, "alice.users.permanet.internal."),
            (WIKI, "wiki.apps.permanet.internal."),
            (APP1, "app1.systems.permanet.internal."),
        ] {
            let ptr = ask(server, t, &reverse(address), RecordType::PTR).await;
            assert_eq!(ptr.code, ResponseCode::NoError, "{t:?} {address}");
            assert!(ptr.authoritative);
            assert_eq!(ptr.answers, [name], "{t:?}");
        }

        // NXDOMAIN: no address (bob), skipped name, wrong kind, unknown
        // address in a reverse zone served. SOA in the authority section.
        for name in [
            "bob.users.permanet.internal.",
            "not_a_label.users.permanet.internal.",
            "alice.apps.permanet.internal.",
            reverse("fd00:1:2:1::b").as_str(),
        ] {
            let nx = ask(server, t, name, RecordType::AAAA).await;
            assert_eq!(nx.code, ResponseCode::NXDomain, "{t:?} {name}");
            assert!(nx.authoritative);
            assert!(nx.answers.is_empty());
            assert_eq!(nx.authority, [RecordType::SOA], "{t:?} {name}");
        }

        // NODATA: an A query for an existing name, and an empty
        // non-terminal.
        for name in ["alice.users.permanet.internal.", "users.permanet.internal."] {
            let nodata = ask(server, t, name, RecordType::A).await;
            assert_eq!(nodata.code, ResponseCode::NoError, "{t:?} {name}");
            assert!(nodata.answers.is_empty(), "{t:?} {name}");
            assert_eq!(nodata.authority, [RecordType::SOA], "{t:?} {name}");
        }

        // Outside every zone: refused, never looked up elsewhere.
        for name in ["example.org.", "internal.", "1.0.0.2.ip6.arpa."] {
            let refused = ask(server, t, name, RecordType::AAAA).await;
            assert_eq!(refused.code, ResponseCode::Refused, "{t:?} {name}");
            assert!(refused.answers.is_empty());
        }

        // The apex: SOA and NS; the NS has an address.
        let soa = ask(server, t, "permanet.internal.", RecordType::SOA).await;
        assert_eq!(soa.answers.len(), 1);
        assert!(
            soa.answers[0].starts_with("ns.permanet.internal. hostmaster.permanet.internal. 100 "),
            "{:?}",
            soa.answers
        );
        let ns = ask(server, t, "permanet.internal.", RecordType::NS).await;
        assert_eq!(ns.answers, ["ns.permanet.internal."]);
        let ns_address = ask(server, t, "ns.permanet.internal.", RecordType::AAAA).await;
        assert_eq!(ns_address.answers, ["fd00:1:2::53"]);
    }
    let counters = fixture.zone.counters();
    assert_eq!(counters.skipped_entities, 1);
    assert_eq!(counters.refused, 6);
    assert_eq!(counters.nxdomain, 8);
    assert_eq!(counters.nodata, 4);
    fixture.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_swap_is_seen_by_the_next_query() {
    let fixture = start().await;
    let server = fixture.server.local_addrs()[0];
    let dave = "dave.users.permanet.internal.";
    assert_eq!(
        ask(server, Transport::Udp, dave, RecordType::AAAA)
            .await
            .code,
        ResponseCode::NXDomain
    );

    let mut entities = directory();
    entities.push(entity(EntityKind::User, "dave", Some("fd00:1:2:1::d")));
    entities.retain(|e| e.name != "wiki");
    let report = fixture.zone.replace(&entities);
    assert_eq!(report.published, 3);
    assert_eq!(fixture.zone.serial(), 101);

    let added = ask(server, Transport::Udp, dave, RecordType::AAAA).await;
    assert_eq!(added.answers, ["fd00:1:2:1::d"]);
    let ptr = ask(
        server,
        Transport::Tcp,
        &reverse("fd00:1:2:1::d"),
        RecordType::PTR,
    )
    .await;
    assert_eq!(ptr.answers, [dave]);
    let removed = ask(
        server,
        Transport::Udp,
        "wiki.apps.permanet.internal.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(removed.code, ResponseCode::NXDomain);
    let soa = ask(
        server,
        Transport::Udp,
        "permanet.internal.",
        RecordType::SOA,
    )
    .await;
    assert!(soa.answers[0].contains(" 101 "), "{:?}", soa.answers);
    assert_eq!(fixture.zone.counters().rebuilds, 2);
    fixture.server.shutdown().await.unwrap();
}

/// `dig` (BIND 9): status, flags and answers of one query.
fn dig(
    server: SocketAddr,
    tcp: bool,
    name: &str,
    record_type: &str,
) -> (String, bool, Vec<String>) {
    let mut command = Command::new("dig");
    command
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+norecurse", "+time=3", "+tries=1", "+nocookie"]);
    if tcp {
        command.arg("+tcp");
    }
    let output = command.arg(name).arg(record_type).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "dig failed: {text}");
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_owned();
    let authoritative = text
        .lines()
        .any(|line| line.contains(";; flags:") && line.split(';').any(|part| part.contains(" aa")));
    let answers = text
        .split(";; ANSWER SECTION:\n")
        .nth(1)
        .map(|section| {
            section
                .lines()
                .take_while(|line| !line.is_empty())
                .filter_map(|line| line.split_whitespace().last().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (status, authoritative, answers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_agrees() {
    if Command::new("dig").arg("-v").output().is_err() {
        eprintln!("skipped: dig not installed (apt-get install bind9-dnsutils)");
        return;
    }
    let fixture = start().await;
    let server = fixture.server.local_addrs()[0];
    let cases = [
        (
            "alice.users.permanet.internal",
            "AAAA",
            "NOERROR",
            vec![ALICE.to_owned()],
        ),
        (
            "WIKI.apps.permanet.internal",
            "AAAA",
            "NOERROR",
            vec![WIKI.to_owned()],
        ),
        (
            "app1.systems.permanet.internal",
            "AAAA",
            "NOERROR",
            vec![APP1.to_owned()],
        ),
        (
            reverse(ALICE).as_str(),
            "PTR",
            "NOERROR",
            vec!["alice.users.permanet.internal.".to_owned()],
        ),
        (
            reverse(WIKI).as_str(),
            "PTR",
            "NOERROR",
            vec!["wiki.apps.permanet.internal.".to_owned()],
        ),
        ("bob.users.permanet.internal", "AAAA", "NXDOMAIN", vec![]),
        ("alice.users.permanet.internal", "A", "NOERROR", vec![]),
        ("example.org", "AAAA", "REFUSED", vec![]),
        (
            "permanet.internal",
            "NS",
            "NOERROR",
            vec!["ns.permanet.internal.".to_owned()],
        ),
    ]
    .map(|(name, record_type, status, answers)| (name.to_owned(), record_type, status, answers));
    for (name, record_type, status, answers) in cases {
        for tcp in [false, true] {
            let (got_status, authoritative, got_answers) = tokio::task::spawn_blocking({
                let name = name.clone();
                move || dig(server, tcp, &name, record_type)
            })
            .await
            .unwrap();
            assert_eq!(got_status, status, "{name} {record_type} tcp={tcp}");
            assert_eq!(got_answers, answers, "{name} {record_type} tcp={tcp}");
            if status != "REFUSED" {
                assert!(authoritative, "{name} {record_type} tcp={tcp}");
            }
        }
    }
    // Zone transfers are refused: dig prints no header, only the failure.
    let output = tokio::task::spawn_blocking(move || {
        Command::new("dig")
            .arg(format!("@{}", server.ip()))
            .args(["-p", &server.port().to_string(), "+time=3", "+tries=1"])
            .args(["permanet.internal", "AXFR"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Transfer failed"), "{text}");
    assert!(!text.contains("AAAA"), "{text}");
    fixture.server.shutdown().await.unwrap();
}

/// Send `message` over UDP and read the reply (deadline 5 s).
async fn exchange(
    server: SocketAddr,
    message: &[u8],
) -> Option<hickory_client::proto::op::Message> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(message, server).await.unwrap();
    let mut buffer = [0u8; 4096];
    let received = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buffer)).await;
    let length = received.ok()?.unwrap();
    Some(hickory_client::proto::op::Message::from_vec(&buffer[..length]).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_and_the_server_keeps_answering() {
    use hickory_client::proto::op::{Message, OpCode, Query};
    let fixture = start().await;
    let server = fixture.server.local_addrs()[0];
    let alice = Name::from_str("alice.users.permanet.internal.").unwrap();

    // Garbage: no answer worth parsing is required, but nothing breaks.
    for garbage in [&b""[..], &[0xff; 3], &[0u8; 12], &[0x41; 600]] {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(garbage, server).await.unwrap();
    }

    // An UPDATE: not implemented.
    let mut update = Message::new();
    update.set_id(1).set_op_code(OpCode::Update);
    update.add_query(Query::query(alice.clone(), RecordType::AAAA));
    let reply = exchange(server, &update.to_vec().unwrap()).await.unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NotImp);

    // Class CHAOS: refused.
    let mut chaos = Message::new();
    let mut query = Query::query(alice.clone(), RecordType::AAAA);
    query.set_query_class(DNSClass::CH);
    chaos.set_id(2).add_query(query);
    let reply = exchange(server, &chaos.to_vec().unwrap()).await.unwrap();
    assert_eq!(reply.response_code(), ResponseCode::Refused);

    // Two questions: FORMERR.
    let mut two = Message::new();
    two.set_id(3);
    two.add_query(Query::query(alice.clone(), RecordType::AAAA));
    two.add_query(Query::query(alice.clone(), RecordType::A));
    let reply = exchange(server, &two.to_vec().unwrap()).await.unwrap();
    assert_eq!(reply.response_code(), ResponseCode::FormErr);

    // Still serving.
    let reply = ask(
        server,
        Transport::Udp,
        "alice.users.permanet.internal.",
        RecordType::AAAA,
    )
    .await;
    assert_eq!(reply.answers, [ALICE]);
    let counters = fixture.zone.counters();
    assert!(counters.malformed >= 2, "{counters:?}");
    fixture.server.shutdown().await.unwrap();
}
