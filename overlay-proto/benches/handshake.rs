//! Handshake throughput: how many initiations one core can answer.
//!
//! `responder` is the figure the target is about: `read_initiation` +
//! `write_response` on pre-built initiations from a small set of initiators,
//! as rekeys with known peers are; the responder's static-static cache hits.
//! `responder_cache_miss` answers initiations from more distinct initiators
//! than the cache holds, cycled, so every one misses (a first contact).
//! `full_round` adds the initiator's two calls. The raw X25519 costs are
//! there for context: a responder does four variable-base Diffie-Hellman
//! operations (es, ss, ee, se; ss is cached for known peers) and one
//! base-point multiplication (its ephemeral key) per handshake. The handshake
//! uses aws-lc (`x25519_aws_lc_*`); the curve25519-dalek figures are those of
//! the reference implementations its tests compare it with, and of the
//! Edwards-form path the handshake used before.
#![allow(clippy::expect_used, reason = "benchmark on inputs it built itself")]

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use curve25519_dalek::MontgomeryPoint;
use overlay_proto::handshake::{
    HandshakePayload, InitiatorHandshake, ResponderHandshake, StaticKeypair, MAX_INITIATION_LEN,
    MAX_RESPONSE_LEN, SS_CACHE_CAPACITY,
};
use overlay_proto::time::UnixTime;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// Distinct initiator keys of the repeated mix.
const INITIATORS: usize = 64;
/// Pre-built initiations of the repeated mix, cycled through.
const MESSAGES: usize = 1024;
/// Distinct initiator keys (one initiation each) of the cache-miss run.
const FRESH_INITIATORS: usize = 2 * SS_CACHE_CAPACITY;
/// A lease of realistic size (an Ed25519-signed lease is a few hundred bytes).
const LEASE: [u8; 300] = [0x5a; 300];

fn payload(spi: u32) -> HandshakePayload<'static> {
    HandshakePayload {
        spi,
        timestamp: UnixTime::from_secs(1_700_000_000).tai64n(),
        lease: &LEASE,
    }
}

/// `count` initiations to `responder`, the i-th from `initiators[i % len]`.
fn initiations(
    initiators: &[StaticKeypair],
    responder: &StaticKeypair,
    count: usize,
    rng: &mut StdRng,
) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut msg = vec![0u8; MAX_INITIATION_LEN];
            let (_, len) = InitiatorHandshake::start(
                &initiators[i % initiators.len()],
                &responder.public(),
                None,
                &payload(0x1000),
                rng,
                &mut msg,
            )
            .expect("initiation");
            msg.truncate(len);
            msg
        })
        .collect()
}

/// Answers `initiations` in turn, one per iteration.
fn bench_responder(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    responder: &StaticKeypair,
    initiations: &[Vec<u8>],
    rng: &mut StdRng,
) {
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let mut next = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            let msg = &initiations[next % initiations.len()];
            next += 1;
            let (pending, initiator, _payload) =
                ResponderHandshake::read_initiation(responder, msg, rng).expect("read initiation");
            black_box(initiator);
            let (len, keys) = pending
                .write_response(None, &payload(0x2000), &mut out)
                .expect("write response");
            black_box((len, keys))
        })
    });
}

fn handshakes(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let responder = StaticKeypair::generate(&mut rng);
    let initiators: Vec<StaticKeypair> = (0..INITIATORS)
        .map(|_| StaticKeypair::generate(&mut rng))
        .collect();
    let repeated = initiations(&initiators, &responder, MESSAGES, &mut rng);
    let fresh_initiators: Vec<StaticKeypair> = (0..FRESH_INITIATORS)
        .map(|_| StaticKeypair::generate(&mut rng))
        .collect();
    let fresh = initiations(&fresh_initiators, &responder, FRESH_INITIATORS, &mut rng);

    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));

    bench_responder(&mut group, "responder", &responder, &repeated, &mut rng);
    bench_responder(
        &mut group,
        "responder_cache_miss",
        &responder,
        &fresh,
        &mut rng,
    );

    let mut next = 0;
    group.bench_function("responder_read_initiation_only", |b| {
        b.iter(|| {
            let msg = &repeated[next % MESSAGES];
            next += 1;
            black_box(
                ResponderHandshake::read_initiation(&responder, msg, &mut rng)
                    .expect("read initiation"),
            )
        })
    });

    let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
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

    let mut a_bytes = [0u8; 32];
    rng.fill_bytes(&mut a_bytes);
    let a = x25519_dalek::StaticSecret::from(a_bytes);
    let b_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(&mut rng));
    group.bench_function("x25519_diffie_hellman", |b| {
        b.iter(|| black_box(a.diffie_hellman(black_box(&b_public))))
    });
    // The same result through the Edwards form.
    let b_point = MontgomeryPoint(b_public.to_bytes());
    group.bench_function("x25519_edwards_form", |b| {
        b.iter(|| {
            black_box(
                black_box(b_point)
                    .to_edwards(0)
                    .map(|e| e.mul_clamped(a_bytes).to_montgomery()),
            )
        })
    });
    group.bench_function("x25519_base_point", |b| {
        b.iter(|| black_box(x25519_dalek::PublicKey::from(black_box(&a))))
    });
    // aws-lc, as the handshake computes it: a key made once and reused, and
    // the ephemeral key's making (which derives the public key).
    let a_key = agreement::PrivateKey::from_private_key(&agreement::X25519, &a_bytes)
        .expect("X25519 private key");
    let b_bytes = b_public.to_bytes();
    group.bench_function("x25519_aws_lc_agree", |b| {
        b.iter(|| {
            let peer = UnparsedPublicKey::new(&agreement::X25519, black_box(&b_bytes));
            agreement::agree(&a_key, peer, (), |secret| {
                <[u8; 32]>::try_from(secret).map_err(|_| ())
            })
            .expect("agree")
        })
    });
    group.bench_function("x25519_aws_lc_keygen", |b| {
        b.iter(|| {
            let key =
                agreement::PrivateKey::from_private_key(&agreement::X25519, black_box(&a_bytes))
                    .expect("X25519 private key");
            let public = key.compute_public_key().expect("public key");
            black_box((
                key,
                <[u8; 32]>::try_from(public.as_ref()).expect("32 bytes"),
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, handshakes);
criterion_main!(benches);
