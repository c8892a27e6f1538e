//! The data path through whole nodes: `Node::encapsulate` on one side and
//! `Node::handle_datagram` on the other (SPI lookup, ESP, replay window,
//! cryptokey-routing check, counters), next to plain ESP encapsulate +
//! decapsulate on the same sizes, so the node's own overhead shows.

#![allow(clippy::unwrap_used, clippy::panic)] // a benchmark that goes wrong must stop

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use overlay_proto::aead::AeadProvider;
use overlay_proto::esp::{
    encapsulated_len, EspKeyMaterial, InboundSa, OutboundSa, NEXT_HEADER_IPV6,
};
use overlay_proto::lease::{EntityKind, LeaseAuthority};
use overlay_proto::node::{Node, NodeConfig, Outgoing, Received};
use overlay_proto::session::{PeerConfig, PeerId};
use overlay_proto::sim::{ipv6_packet, issue_identity, IdentitySpec};
use overlay_proto::time::{Now, UnixTime};

const SIZES: [usize; 3] = [64, 1400, 8900];

struct Pair {
    a: Node,
    b: Node,
    peer: PeerId,
    now: Now,
    a_addr: SocketAddr,
}

fn pair() -> Pair {
    let authority = LeaseAuthority::from_seed([7; 32]);
    let from = UnixTime::from_secs(1_800_000_000 - 60);
    let day = Duration::from_secs(86_400);
    let (bk, bl) = issue_identity(
        &authority,
        [2; 32],
        &IdentitySpec {
            name: "bob",
            kind: EntityKind::System,
            prefix: "2002:b16:212c:1::/64".parse().unwrap(),
            groups: &[],
            valid_from: from,
            serial: 1,
            lifetime: day,
        },
    );
    let (ak, al) = issue_identity(
        &authority,
        [1; 32],
        &IdentitySpec {
            name: "alice",
            kind: EntityKind::User,
            prefix: "2002:102:304:1::a/128".parse().unwrap(),
            groups: &[],
            valid_from: from,
            serial: 1,
            lifetime: day,
        },
    );
    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(1_800_000_000),
    };
    let mut b_config = NodeConfig::new(bk, authority.public_key(), bl.clone());
    b_config.accept_unknown_peers = true;
    let mut a = Node::new(NodeConfig::new(ak, authority.public_key(), al), [3; 32]);
    let mut b = Node::new(b_config, [4; 32]);
    let peer = a.add_peer(bl, PeerConfig::default(), now.instant).unwrap();
    let a_addr: SocketAddr = "44.55.66.77:4500".parse().unwrap();
    let b_addr: SocketAddr = "11.22.33.44:4500".parse().unwrap();
    let mut buf = vec![0u8; 128];
    let probe = ipv6_packet(
        "2002:102:304:1::a".parse().unwrap(),
        "2002:b16:212c:1::1".parse().unwrap(),
        b"up",
    );
    let _ = a.encapsulate(now, peer, &probe, &mut buf);
    for _ in 0..3 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.handle_datagram(now, a_addr, &mut t.contents);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.handle_datagram(now, b_addr, &mut t.contents);
        }
    }
    Pair {
        a,
        b,
        peer,
        now,
        a_addr,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_path");
    group.sample_size(30);
    for size in SIZES {
        let inner = ipv6_packet(
            "2002:102:304:1::a".parse().unwrap(),
            "2002:b16:212c:1::1".parse().unwrap(),
            &vec![0xab; size - 48],
        );
        group.throughput(Throughput::Bytes(size as u64));

        let mut p = pair();
        let mut out = vec![0u8; encapsulated_len(size)];
        group.bench_with_input(
            BenchmarkId::new("node_encap_decap", size),
            &inner,
            |bench, inner| {
                bench.iter(|| {
                    let len = match p.a.encapsulate(p.now, p.peer, inner, &mut out) {
                        Outgoing::Send { datagram, .. } => datagram.len(),
                        other => panic!("not sent: {other:?}"),
                    };
                    match p.b.handle_datagram(p.now, p.a_addr, &mut out[..len]) {
                        Received::Packet { packet, .. } => packet.len(),
                        other => panic!("not delivered: {other:?}"),
                    }
                })
            },
        );

        let keys = EspKeyMaterial {
            key: [0x42; 32],
            salt: [1, 2, 3, 4],
        };
        let mut outbound = OutboundSa::new(0x1234, &keys, AeadProvider::Ring);
        let mut inbound = InboundSa::new(0x1234, &keys, AeadProvider::Ring);
        group.bench_with_input(
            BenchmarkId::new("esp_encap_decap", size),
            &inner,
            |bench, inner| {
                bench.iter(|| {
                    let len = outbound
                        .encapsulate(inner, NEXT_HEADER_IPV6, &mut out)
                        .unwrap()
                        .len();
                    inbound.decapsulate(&mut out[..len]).unwrap().payload.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
