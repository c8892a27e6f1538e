//! Replays the committed fuzz corpora of wap-adapter's targets
//! (`fuzz/corpus/proxy_header/*`, `fuzz/corpus/cgi_response/*`) through the
//! entry points the fuzz targets use, with the targets' checks, so every
//! input a fuzzer once found interesting stays a regression test on stable
//! Rust.

#![allow(clippy::unwrap_used)] // test code: a panic is a test failure

mod corpus_common;

use wap_adapter::server::proxy_header::{header_len, parse, PREFIX_LEN};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let inputs = corpus_common::inputs(target);
    assert!(
        !inputs.is_empty(),
        "no corpus in {}",
        corpus_common::dir(target).display()
    );
    inputs
}

#[test]
fn proxy_header_corpus() {
    let mut parsed = Vec::new();
    for (name, data) in corpus("proxy_header") {
        if let Ok(header) = parse(&data) {
            assert!(
                header.len >= PREFIX_LEN && header.len <= data.len(),
                "{name}"
            );
            assert_eq!(header_len(&data), Ok(header.len), "{name}");
            parsed.push(name.clone());
        }
        let _ = wap_adapter::server::proxied_datagram(&data);
    }
    // The seeds tunneld's own headers came from parse.
    assert!(parsed.contains(&"tunneld-stream".to_owned()), "{parsed:?}");
    assert!(
        parsed.contains(&"tunneld-datagram".to_owned()),
        "{parsed:?}"
    );
    let datagram = corpus("proxy_header")
        .into_iter()
        .find(|(n, _)| n == "tunneld-datagram")
        .unwrap()
        .1;
    let (_, _, payload) = wap_adapter::server::proxied_datagram(&datagram).unwrap();
    assert_eq!(payload, b"\x01\x40\x60\x00payload");
}

#[test]
fn cgi_response_corpus() {
    let mut ok = 0;
    for (_, data) in corpus("cgi_response") {
        ok += usize::from(wap_adapter::adapter::cgi::parse_response(&data, 4096).is_ok());
    }
    assert_eq!(ok, 4, "document, status and both redirects parse");
}
