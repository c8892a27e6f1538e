#![no_main]
//! Fuzz target: the WSP decoders (`wap_adapter::wsp`): PDUs in both modes,
//! header blocks and capabilities. No input may panic, and whatever PDU
//! decodes and re-encodes must decode again (the encoder's output is
//! always readable by the decoder).

use wap_adapter::wsp::capabilities::Capabilities;
use wap_adapter::wsp::pdu::{self, Mode};
use wap_adapter::wsp::{decode_headers, encode_headers, EncodingVersion};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Connectionless, Mode::Connection] {
        if let Ok(decoded) = pdu::decode(data, mode) {
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
        assert!(again.errors.is_empty(), "{:?} re-encoded: {:?}", headers.headers, again.errors);
    }
    let _ = Capabilities::decode(data, 0);
});
