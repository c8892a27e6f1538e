//! Replays the committed WTP fuzz corpora (`fuzz/corpus/wtp_*/`) through
//! the entry points the fuzz targets use, so every input a fuzzer found
//! interesting stays a regression test on stable Rust.

#![allow(clippy::expect_used)] // test code: a panic is a test failure

mod corpus_common;

use wap_adapter::wtp::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = corpus_common::inputs(target);
    for (_, data) in &inputs {
        run(data);
    }
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} in {}",
        corpus_common::dir(target).display()
    );
}

#[test]
fn wtp_decode_corpus() {
    replay("wtp_decode", fuzzing::wtp_decode);
}

#[test]
fn wtp_responder_corpus() {
    replay("wtp_responder", fuzzing::wtp_responder);
}

/// Every truncation and every single-octet change (a few values per
/// position) of every corpus input, through both entry points: a cheap,
/// deterministic stand-in for a fuzzing run on stable Rust.
#[test]
fn wtp_corpus_mutations() {
    for target in ["wtp_decode", "wtp_responder"] {
        for (_, data) in corpus_common::inputs(target) {
            for len in 0..data.len().min(64) {
                fuzzing::wtp_decode(data.get(..len).unwrap_or_default());
                fuzzing::wtp_responder(data.get(..len).unwrap_or_default());
            }
            for i in 0..data.len().min(64) {
                for value in [0x00, 0x07, 0x80, 0xfe, data.get(i).map_or(0, |b| b ^ 0x04)] {
                    let mut mutated = data.clone();
                    if let Some(b) = mutated.get_mut(i) {
                        *b = value;
                    }
                    fuzzing::wtp_decode(&mutated);
                    fuzzing::wtp_responder(&mutated);
                }
            }
        }
    }
}
