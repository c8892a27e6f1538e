//! Handshake throughput: how many initiations one core can answer.
//!
//! `responder` is the figure the target is about: `read_initiation` +
//! `write_response` on pre-built initiations from many distinct initiators.
//! `full_round` adds the initiator's two calls. The raw X25519 costs are
//! there for context: a responder does four variable-base Diffie-Hellman
//! operations (es, ss, ee, se) and one base-point multiplication (its
//! ephemeral key) per handshake.
#![allow(clippy::expect_used, reason = "benchmark on inputs it built itself")]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use overlay_proto::handshake::{
    HandshakePayload, InitiatorHandshake, ResponderHandshake, StaticKeypair, MAX_INITIATION_LEN,
    MAX_RESPONSE_LEN,
};
use overlay_proto::time::UnixTime;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Distinct initiator keys.
const INITIATORS: usize = 64;
/// Pre-built initiations, cycled through.
const MESSAGES: usize = 1024;
/// A lease of realistic size (an Ed25519-signed lease is a few hundred bytes).
const LEASE: [u8; 300] = [0x5a; 300];

fn payload(spi: u32) -> HandshakePayload<'static> {
    HandshakePayload {
        spi,
        timestamp: UnixTime::from_secs(1_700_000_000).tai64n(),
        lease: &LEASE,
    }
}

fn handshakes(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let responder = StaticKeypair::generate(&mut rng);
    let initiators: Vec<StaticKeypair> = (0..INITIATORS)
        .map(|_| StaticKeypair::generate(&mut rng))
        .collect();
    let initiations: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| {
            let mut msg = vec![0u8; MAX_INITIATION_LEN];
            let (_, len) = InitiatorHandshake::start(
                &initiators[i % INITIATORS],
                &responder.public(),
                None,
                &payload(0x1000),
                &mut rng,
                &mut msg,
            )
            .expect("initiation");
            msg.truncate(len);
            msg
        })
        .collect();

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let mut next = 0;
    group.bench_function("responder", |b| {
        b.iter(|| {
            let msg = &initiations[next % MESSAGES];
            next += 1;
            let (pending, initiator, _payload) =
                ResponderHandshake::read_initiation(&responder, msg, &mut rng)
                    .expect("read initiation");
            black_box(initiator);
            let (len, keys) = pending
                .write_response(None, &payload(0x2000), &mut out)
                .expect("write response");
            black_box((len, keys))
        })
    });

    let mut next = 0;
    group.bench_function("responder_read_initiation_only", |b| {
        b.iter(|| {
            let msg = &initiations[next % MESSAGES];
            next += 1;
            black_box(
                ResponderHandshake::read_initiation(&responder, msg, &mut rng)
                    .expect("read initiation"),
            )
        })
    });

    let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
    let mut next = 0;
    group.bench_function("full_round", |b| {
        b.iter(|| {
            let initiator = &initiators[next % INITIATORS];
            next += 1;
            let (mut hs, len) = InitiatorHandshake::start(
                initiator,
                &responder.public(),
                None,
                &payload(0x1000),
                &mut rng,
                &mut msg1,
            )
            .expect("initiation");
            let (pending, _, _) =
                ResponderHandshake::read_initiation(&responder, &msg1[..len], &mut rng)
                    .expect("read initiation");
            let (len, _) = pending
                .write_response(None, &payload(0x2000), &mut out)
                .expect("write response");
            black_box(hs.finish(&out[..len]).expect("finish"))
        })
    });

    let a = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
    let b_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng));
    group.bench_function("x25519_diffie_hellman", |b| {
        b.iter(|| black_box(a.diffie_hellman(black_box(&b_public))))
    });
    group.bench_function("x25519_base_point", |b| {
        b.iter(|| black_box(x25519_dalek::PublicKey::from(black_box(&a))))
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
