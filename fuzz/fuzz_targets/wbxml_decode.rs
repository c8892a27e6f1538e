#![no_main]
//! Fuzz target: see `wap_adapter::wbxml::fuzzing::wbxml_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wap_adapter::wbxml::fuzzing::wbxml_decode(data);
});
