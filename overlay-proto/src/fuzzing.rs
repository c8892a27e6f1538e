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
use crate::authority::{
    AuthorityClient, AuthorityServer, ClientConfig, ClientTimers, Password, Request, Response,
};
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

/// The authority channel: request and response records with their emit
/// round trip; arbitrary bytes as datagrams to a server and a client; then a
/// genuine session carrying a request built from the input (which must
/// arrive unchanged and be answered), and the input spliced after the
/// genuine data header (which must never authenticate).
pub fn authority(data: &[u8]) {
    if let Ok((id, request)) = Request::parse(data) {
        let mut out = vec![0u8; request.buffer_len()];
        let n = request
            .emit(id, &mut out)
            .expect("buffer sized by buffer_len");
        assert_eq!(&out[..n], data, "emit(parse(x)) != x");
    }
    if let Ok((id, response)) = Response::parse(data) {
        let mut out = vec![0u8; response.buffer_len()];
        let n = response
            .emit(id, &mut out)
            .expect("buffer sized by buffer_len");
        assert_eq!(&out[..n], data, "emit(parse(x)) != x");
    }

    let now = Now {
        instant: Instant::now(),
        unix: UnixTime::from_secs(1_800_000_000),
    };
    let server_addr: SocketAddr = "10.0.0.1:4500".parse().expect("literal");
    let client_addr: SocketAddr = "10.0.0.2:4500".parse().expect("literal");
    let server_keys = StaticKeypair::from_private([0x31; 32]);
    let mut server = AuthorityServer::new(server_keys.clone(), None, [1; 32]);
    let config = ClientConfig {
        keypair: StaticKeypair::from_private([0x32; 32]),
        server_key: server_keys.public(),
        server: server_addr,
        psk: None,
        timers: ClientTimers::default(),
    };
    let mut client = AuthorityClient::new(config, [2; 32], now);
    assert!(server
        .handle_datagram(now, client_addr, &mut data.to_vec())
        .is_none());
    client.handle_datagram(now, server_addr, &mut data.to_vec());

    let request = match data.split_first() {
        Some((0, rest)) => Request::Login {
            user: String::from_utf8_lossy(rest.get(..32).unwrap_or(rest)).into_owned(),
            password: Password::from_slice(rest),
        },
        _ => Request::Renew {
            lease: data.to_vec(),
        },
    };
    let encodable = request
        .emit(crate::authority::RequestId(0), &mut [0u8; 4096])
        .is_ok();
    let id = client.send(now, request.clone());
    let mut last_data = None;
    let mut received = None;
    for _ in 0..8 {
        while let Some(t) = client.poll_transmit() {
            last_data = Some(t.contents.clone());
            let mut bytes = t.contents;
            if let Some(incoming) = server.handle_datagram(now, client_addr, &mut bytes) {
                assert_eq!(incoming.request, request);
                assert_eq!(incoming.request_id, id);
                received = Some(incoming.request_id);
                server
                    .respond(
                        now,
                        incoming.session,
                        incoming.request_id,
                        Response::ServerBusy {
                            retry_after_secs: 1,
                        },
                    )
                    .expect("pending request");
            }
        }
        while let Some(t) = server.poll_transmit() {
            let mut bytes = t.contents;
            client.handle_datagram(now, server_addr, &mut bytes);
        }
    }
    assert_eq!(received.is_some(), encodable);
    let answer = client
        .poll_response()
        .expect("an answer or an encode error");
    assert_eq!(answer.0, id);
    assert_eq!(answer.1.is_ok(), encodable);
    if let Some(genuine) = last_data {
        let mut forged = genuine
            .get(..crate::authority::DATA_HEADER_LEN)
            .unwrap_or_default()
            .to_vec();
        // A counter the window has not seen.
        if let Some(c) = forged.get_mut(12) {
            *c ^= 0x80;
        }
        forged.extend_from_slice(data);
        assert!(server
            .handle_datagram(now, client_addr, &mut forged)
            .is_none());
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

/// Two nodes with a tunnel between them, driven by a script the input
/// spells out: each step is an opcode byte, then a length byte and that many
/// bytes. Genuine traffic between the nodes flows after every step, so the
/// fuzzer can interleave forged, truncated and replayed datagrams with real
/// handshakes, rekeys, keepalives and timer expiries.
///
/// Opcodes (low 3 bits): 0/1 — the bytes as a datagram to bob / alice from
/// the other's address; 2 — the bytes to bob from a stranger; 3 — alice sends
/// the bytes as an inner packet; 4 — the clock jumps `len` seconds;
/// 5 — the last genuine datagram is replayed; 6 — the bytes after the live
/// SPI of bob's current SA; 7 — the next genuine datagram is lost.
pub fn node_datagram(data: &[u8]) {
    let mut pair = Pair::new();
    let mut script = data;
    while let [op, len, rest @ ..] = script {
        let n = usize::from(*len).min(rest.len());
        let (bytes, tail) = rest.split_at(n);
        script = tail;
        match op & 7 {
            0 => pair.deliver_to_b(pair.a_addr, bytes.to_vec()),
            1 => pair.deliver_to_a(bytes.to_vec()),
            2 => pair.deliver_to_b("9.9.9.9:9".parse().expect("literal"), bytes.to_vec()),
            3 => pair.a_sends(bytes),
            4 => pair.advance(Duration::from_secs(u64::from(*len))),
            5 => {
                if let Some(last) = pair.last.clone() {
                    pair.deliver_to_b(pair.a_addr, last.clone());
                    pair.deliver_to_a(last);
                }
            }
            6 => {
                let live = pair
                    .b
                    .peers()
                    .flat_map(|p| p.security_associations(pair.start))
                    .map(|sa| sa.inbound_spi)
                    .next();
                if let Some(spi) = live {
                    let mut forged = spi.to_be_bytes().to_vec();
                    forged.extend_from_slice(bytes);
                    pair.deliver_to_b(pair.a_addr, forged);
                }
            }
            _ => pair.lose_next = true,
        }
        pair.pump();
    }
}

/// Two nodes and the genuine traffic between them, for [`node_datagram`].
struct Pair {
    a: Node,
    b: Node,
    peer: crate::session::PeerId,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    start: Instant,
    now: Now,
    last: Option<Vec<u8>>,
    lose_next: bool,
}

impl Pair {
    fn new() -> Self {
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
        let b = Node::new(b_config, [4; 32]);
        let peer = a
            .add_peer(b_lease, PeerConfig::default(), start)
            .expect("fresh node");
        let mut pair = Pair {
            a,
            b,
            peer,
            a_addr: "44.55.66.77:4500".parse().expect("literal"),
            b_addr: "11.22.33.44:4500".parse().expect("literal"),
            start,
            now,
            last: None,
            lose_next: false,
        };
        // Bring the tunnel up so ESP with live SPIs is reachable.
        pair.a_sends(&[0x60; 40]);
        pair.pump();
        pair
    }

    fn a_sends(&mut self, inner: &[u8]) {
        let mut buf = vec![0u8; crate::esp::encapsulated_len(inner.len())];
        if let crate::node::Outgoing::Send { datagram, .. } =
            self.a.encapsulate(self.now, self.peer, inner, &mut buf)
        {
            let datagram = datagram.to_vec();
            self.deliver_to_b(self.a_addr, datagram);
        }
    }

    fn deliver_to_a(&mut self, mut datagram: Vec<u8>) {
        let _ = self.a.handle_datagram(self.now, self.b_addr, &mut datagram);
    }

    fn deliver_to_b(&mut self, from: SocketAddr, mut datagram: Vec<u8>) {
        let _ = self.b.handle_datagram(self.now, from, &mut datagram);
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now.advanced(by);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
    }

    /// Exchange genuine datagrams until both nodes are quiet (bounded).
    fn pump(&mut self) {
        for _ in 0..8 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.last = Some(t.contents.clone());
                if !std::mem::take(&mut self.lose_next) {
                    self.deliver_to_b(self.a_addr, t.contents);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.last = Some(t.contents.clone());
                if !std::mem::take(&mut self.lose_next) {
                    self.deliver_to_a(t.contents);
                }
            }
            while self.a.poll_event().is_some() || self.b.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
    }
}
