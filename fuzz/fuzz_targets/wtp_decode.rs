#![no_main]
//! Fuzz target: see `wap_adapter::wtp::fuzzing::wtp_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wap_adapter::wtp::fuzzing::wtp_decode(data);
});
