#![no_main]
//! Fuzz target: wap-adapter's CGI response parser
//! (`wap_adapter::adapter::cgi::parse_response`, RFC 3875 §6) on arbitrary
//! program output. Never panics.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = wap_adapter::adapter::cgi::parse_response(data, 4096);
});
