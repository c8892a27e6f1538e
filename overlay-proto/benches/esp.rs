//! Data-path throughput: raw ChaCha20-Poly1305 against full ESP processing,
//! for both AEAD providers and three inner packet sizes.
//!
//! `aead_seal_open` is the ceiling ESP is measured against:
//! `esp_encap_decap` should reach at least 60% of it.

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use overlay_proto::aead::{AeadProvider, EspAead, EspCipher};
use overlay_proto::esp::{
    encapsulated_len, EspKeyMaterial, InboundSa, OutboundSa, ESP_HEADER_LEN, ESP_IV_LEN,
    NEXT_HEADER_IPV6,
};

const SIZES: [usize; 3] = [64, 1400, 8900];
const PROVIDERS: [AeadProvider; 2] = [AeadProvider::Ring, AeadProvider::RustCrypto];
const SPI: u32 = 0x0badc0de;
const NONCE: [u8; 12] = [0xa0, 0xa1, 0xa2, 0xa3, 0, 0, 0, 0, 0, 0, 0, 1];
/// Same shape as ESP's associated data: SPI ‖ seq high ‖ seq low.
const AAD: [u8; 12] = [0x0b, 0xad, 0xc0, 0xde, 0, 0, 0, 0, 0, 0, 0, 1];

fn keys() -> EspKeyMaterial {
    EspKeyMaterial {
        key: [0x42; 32],
        salt: [0xa0, 0xa1, 0xa2, 0xa3],
    }
}

fn check<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("benchmark setup failed: {e:?}"),
    }
}

fn data_path(c: &mut Criterion) {
    for provider in PROVIDERS {
        let mut group = c.benchmark_group(format!("{provider:?}"));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let inner = vec![0x60; size];
            let cipher = EspCipher::new(provider, &keys().key);

            group.bench_function(BenchmarkId::new("aead_seal", size), |b| {
                let mut buf = inner.clone();
                b.iter(|| {
                    cipher.seal_in_place(black_box(&NONCE), black_box(&AAD), black_box(&mut buf))
                })
            });

            let mut sealed = inner.clone();
            let tag = cipher.seal_in_place(&NONCE, &AAD, &mut sealed);
            group.bench_function(BenchmarkId::new("aead_open", size), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| {
                        check(cipher.open_in_place(black_box(&NONCE), black_box(&AAD), buf, &tag))
                    },
                    BatchSize::SmallInput,
                )
            });

            group.bench_function(BenchmarkId::new("aead_seal_open", size), |b| {
                let mut buf = inner.clone();
                b.iter(|| {
                    let tag = cipher.seal_in_place(black_box(&NONCE), black_box(&AAD), &mut buf);
                    check(cipher.open_in_place(black_box(&NONCE), black_box(&AAD), &mut buf, &tag));
                })
            });

            group.bench_function(BenchmarkId::new("esp_encap", size), |b| {
                let mut out = OutboundSa::new(SPI, &keys(), provider);
                let mut buf = vec![0; encapsulated_len(size)];
                b.iter(|| {
                    check(out.encapsulate(black_box(&inner), NEXT_HEADER_IPV6, &mut buf)).len()
                })
            });

            group.bench_function(BenchmarkId::new("esp_encap_in_place", size), |b| {
                let mut out = OutboundSa::new(SPI, &keys(), provider);
                let head = ESP_HEADER_LEN + ESP_IV_LEN;
                let mut buf = vec![0; encapsulated_len(size)];
                b.iter(|| {
                    // The previous iteration left ciphertext there; sealing
                    // it again costs the same.
                    check(out.encapsulate_in_place(
                        black_box(&mut buf),
                        head..head + size,
                        NEXT_HEADER_IPV6,
                    ))
                })
            });

            // Decapsulation needs a fresh replay window per packet: each
            // iteration gets a new inbound SA (built outside the timing)
            // and an intact copy of a packet with sequence number 1.
            let packet = {
                let mut out = OutboundSa::new(SPI, &keys(), provider);
                let mut buf = vec![0; encapsulated_len(size)];
                check(out.encapsulate(&inner, NEXT_HEADER_IPV6, &mut buf)).to_vec()
            };
            {
                let mut inb = InboundSa::new(SPI, &keys(), provider);
                let mut p = packet.clone();
                assert_eq!(check(inb.decapsulate(&mut p)).payload, &inner[..]);
            }
            group.bench_function(BenchmarkId::new("esp_decap", size), |b| {
                b.iter_batched_ref(
                    || (InboundSa::new(SPI, &keys(), provider), packet.clone()),
                    |(inb, p)| check(inb.decapsulate(black_box(p))).payload.len(),
                    BatchSize::SmallInput,
                )
            });

            group.bench_function(BenchmarkId::new("esp_encap_decap", size), |b| {
                let mut out = OutboundSa::new(SPI, &keys(), provider);
                let mut inb = InboundSa::new(SPI, &keys(), provider);
                let mut buf = vec![0; encapsulated_len(size)];
                b.iter(|| {
                    let n =
                        check(out.encapsulate(black_box(&inner), NEXT_HEADER_IPV6, &mut buf)).len();
                    check(inb.decapsulate(&mut buf[..n])).payload.len()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, data_path);
criterion_main!(benches);
