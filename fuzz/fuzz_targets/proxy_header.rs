#![no_main]
//! Fuzz target: wap-adapter's PROXY v2 parser
//! (`wap_adapter::server::proxy_header`), as a proxy-protocol listener
//! meets it on a datagram (the whole input) and on a stream (the prefix,
//! then the rest). Never panics; a parsed header lies within the input, and
//! both ways agree.

use wap_adapter::server::proxy_header::{header_len, parse, PREFIX_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    if let Ok(header) = &parsed {
        assert!(header.len >= PREFIX_LEN && header.len <= data.len());
        assert_eq!(header_len(data), Ok(header.len));
        let _ = header.overlay_addresses();
    }
    let _ = wap_adapter::server::proxied_datagram(data);
});
