//! Entry points for the fuzz targets in `fuzz/`.
//!
//! Each function takes arbitrary bytes and drives one parser or state
//! machine with them. They live in the library (not in `fuzz/`) so the same
//! code also replays the committed corpus in an ordinary `cargo test`
//! (`tests/fuzz_corpus.rs`), on stable Rust, in CI. They never panic on any
//! input: a panic is the bug a fuzzer looks for. Where a round trip is
//! defined (parse → emit → parse), they assert it, so a fuzzer also finds
//! parsers and emitters that disagree.
#![allow(clippy::unwrap_used, clippy::expect_used)] // asserts are the point here

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::aead::AeadProvider;
use crate::esp::{EspKeyMaterial, InboundSa, OutboundSa, NEXT_HEADER_IPV6};
use crate::handshake::{
    HandshakePayload, InitiatorHandshake, ReceivedPayload, ResponderHandshake, StaticKeypair,
};
use crate::lease::{parse_unverified, EntityKind, Lease, LeaseAuthority, SignedLease};
use crate::node::{Node, NodeConfig};
use crate::session::PeerConfig;
use crate::time::{Now, UnixTime};
use crate::wire::{self, ControlRepr};

const KEYS: EspKeyMaterial = EspKeyMaterial {
    key: [0x42; 32],
    salt: [1, 2, 3, 4],
};

/// ESP decapsulation of arbitrary bytes, then of a genuine packet whose
/// ciphertext the input overwrites (so the fuzzer reaches padding checks
/// only after authentication fails — which it must).
pub fn esp_decapsulate(data: &[u8]) {
    let mut inbound = InboundSa::new(0x1234, &KEYS, AeadProvider::Ring);
    let mut buf = data.to_vec();
    let _ = inbound.decapsulate(&mut buf);

    // A genuine packet carrying the input must come back unchanged.
    let mut outbound = OutboundSa::new(0x1234, &KEYS, AeadProvider::Ring);
    let mut out = vec![0u8; crate::esp::encapsulated_len(data.len())];
    let len = outbound
        .encapsulate(data, NEXT_HEADER_IPV6, &mut out)
        .expect("buffer sized by encapsulated_len")
        .len();
    out.truncate(len);
    let mut inbound = InboundSa::new(0x1234, &KEYS, AeadProvider::Ring);
    let mut copy = out.clone();
    let d = inbound.decapsulate(&mut copy).expect("genuine packet");
    assert_eq!(d.payload, data);
    // The same packet twice is a replay.
    let mut again = out.clone();
    assert!(inbound.decapsulate(&mut again).is_err());
    // Any corruption of the genuine packet is refused.
    if let Some((first, rest)) = data.split_first() {
        let at = usize::from(*first) % out.len();
        let mut bad = out;
        bad[at] ^= rest.first().copied().unwrap_or(1).max(1);
        let mut fresh = InboundSa::new(0x1234, &KEYS, AeadProvider::Ring);
        assert!(fresh.decapsulate(&mut bad).is_err());
    }
}

/// Control-message parsing, with the emit round trip.
pub fn control(data: &[u8]) {
    let _ = wire::classify(data);
    if let Ok(repr) = ControlRepr::parse(data) {
        let mut out = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut out).expect("buffer sized by buffer_len");
        assert_eq!(&out[..n], data, "emit(parse(x)) != x");
    }
}

/// Noise handshake messages: arbitrary bytes as an initiation to a
/// responder, and as a response to an initiator in flight; and the payload
/// parser with its round trip.
pub fn handshake(data: &[u8]) {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let responder = StaticKeypair::from_private([0x11; 32]);
    let initiator = StaticKeypair::from_private([0x22; 32]);
    let _ = ResponderHandshake::read_initiation(&responder, data, &mut rng);

    let payload = HandshakePayload {
        spi: 0x1000,
        timestamp: UnixTime::from_secs(1).tai64n(),
        lease: b"lease",
    };
    let mut out = vec![0u8; 4096];
    if let Ok((mut state, _)) = InitiatorHandshake::start(
        &initiator,
        &responder.public(),
        None,
        &payload,
        &mut rng,
        &mut out,
    ) {
        let _ = state.finish(data);
    }
    if let Ok(parsed) = ReceivedPayload::parse(data) {
        let again = HandshakePayload {
            spi: parsed.spi,
            timestamp: parsed.timestamp,
            lease: &parsed.lease,
        };
        let mut buf = vec![0u8; again.buffer_len()];
        let n = again.emit(&mut buf).expect("buffer sized by buffer_len");
        assert_eq!(&buf[..n], data, "emit(parse(x)) != x");
    }
}

/// Lease parsing and verification.
pub fn lease(data: &[u8]) {
    let authority = LeaseAuthority::from_seed([1; 32]);
    if let Ok(lease) = parse_unverified(data) {
        // Whatever parses must re-sign to a lease that parses the same.
        if let Ok(signed) = authority.sign(&lease) {
            assert_eq!(
                parse_unverified(signed.as_bytes()).expect("own output"),
                lease
            );
        }
    }
    let _ = SignedLease::verify(
        data,
        &authority.public_key(),
        UnixTime::from_secs(1_800_000_000),
    );
}

/// Whole datagrams into a node that has a peer and an SA with it: the path
/// every packet from the network takes.
pub fn node_datagram(data: &[u8]) {
    let start = Instant::now();
    let now = Now {
        instant: start,
        unix: UnixTime::from_secs(1_800_000_000),
    };
    let authority = LeaseAuthority::from_seed([7; 32]);
    let issue = |seed: [u8; 32], name: &str, kind, prefix: &str| {
        let keypair = StaticKeypair::from_private(seed);
        let lease = Lease {
            kind,
            serial: 1,
            not_before: UnixTime::from_secs(1_700_000_000),
            not_after: UnixTime::from_secs(1_900_000_000),
            public_key: keypair.public().0,
            prefix: prefix.parse().expect("literal"),
            name: name.to_owned(),
            dn: format!("cn={name}"),
            groups: vec![],
        };
        (keypair, authority.sign(&lease).expect("valid lease"))
    };
    let (a_key, a_lease) = issue([1; 32], "alice", EntityKind::User, "2002:102:304:1::a/128");
    let (b_key, b_lease) = issue([2; 32], "bob", EntityKind::System, "2002:b16:212c:1::/64");
    let mut a = Node::new(
        NodeConfig::new(a_key, authority.public_key(), a_lease),
        [3; 32],
    );
    let mut b_config = NodeConfig::new(b_key, authority.public_key(), b_lease.clone());
    b_config.accept_unknown_peers = true;
    let mut b = Node::new(b_config, [4; 32]);
    let a_addr: SocketAddr = "44.55.66.77:4500".parse().expect("literal");
    let b_addr: SocketAddr = "11.22.33.44:4500".parse().expect("literal");
    let peer = a
        .add_peer(b_lease, PeerConfig::default(), start)
        .expect("fresh node");
    // Bring the tunnel up so ESP with live SPIs is reachable.
    let mut buf = vec![0u8; 2048];
    let _ = a.encapsulate(now, peer, &[0x60; 40], &mut buf);
    for _ in 0..3 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.handle_datagram(now, a_addr, &mut t.contents);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.handle_datagram(now, b_addr, &mut t.contents);
        }
    }
    // The input, as a datagram to each side, from a known and an unknown address.
    let stranger: SocketAddr = "9.9.9.9:9".parse().expect("literal");
    for (node, from) in [(&mut b, a_addr), (&mut a, b_addr)] {
        for src in [from, stranger] {
            let mut copy = data.to_vec();
            let _ = node.handle_datagram(now, src, &mut copy);
            node.handle_timeout(now.advanced(Duration::from_secs(1)));
            while node.poll_transmit().is_some() {}
        }
    }
    // The live SPI with the input as the rest of the packet.
    let live_spi = b
        .peers()
        .flat_map(|p| p.security_associations(start))
        .map(|sa| sa.inbound_spi)
        .next();
    if let Some(spi) = live_spi {
        let mut forged = spi.to_be_bytes().to_vec();
        forged.extend_from_slice(data);
        let _ = b.handle_datagram(now, a_addr, &mut forged);
    }
}
