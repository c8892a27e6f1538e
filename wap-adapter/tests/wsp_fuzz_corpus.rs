//! Replays the committed corpus of the `wsp_decode` fuzz target
//! (`fuzz/corpus/wsp_decode/*`) through the same checks the target makes,
//! so every input a fuzzer once found interesting stays a regression test
//! on stable Rust: no panic, and a decoded PDU or header block that
//! re-encodes decodes again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a test failure

mod corpus_common;

use wap_adapter::wsp::capabilities::Capabilities;
use wap_adapter::wsp::pdu::{self, Mode};
use wap_adapter::wsp::{decode_headers, encode_headers, EncodingVersion};

/// The fuzz target's body (fuzz/fuzz_targets/wsp_decode.rs); returns how
/// many PDUs decoded.
fn exercise(data: &[u8]) -> usize {
    let mut pdus = 0;
    for mode in [Mode::Connectionless, Mode::Connection] {
        if let Ok(decoded) = pdu::decode(data, mode) {
            pdus += 1;
            if let Ok(bytes) = pdu::encode(&decoded.pdu, decoded.tid, EncodingVersion::V1_4) {
                if let Err(e) = pdu::decode(&bytes, mode) {
                    panic!("re-encoded {:?} does not decode: {e}", decoded.pdu);
                }
            }
        }
    }
    let headers = decode_headers(data, EncodingVersion::V1_4);
    if let Ok(bytes) = encode_headers(&headers.headers, EncodingVersion::V1_4) {
        let again = decode_headers(&bytes, EncodingVersion::V1_4);
        assert!(
            again.errors.is_empty(),
            "{:?} re-encoded: {:?}",
            headers.headers,
            again.errors
        );
    }
    let _ = Capabilities::decode(data, 0);
    pdus
}

#[test]
fn wsp_decode_corpus() {
    let corpus = corpus_common::inputs("wsp_decode");
    let mut pdus = 0;
    for (_, data) in &corpus {
        pdus += exercise(data);
    }
    let inputs = corpus.len();
    assert!(
        inputs >= 40,
        "only {inputs} inputs in {}",
        corpus_common::dir("wsp_decode").display()
    );
    // The fakewap seeds are real PDUs.
    assert!(pdus >= 8, "{pdus}");
}
