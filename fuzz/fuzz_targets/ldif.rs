#![no_main]
//! Fuzz target: the embedded directory's LDIF reader and vocabulary
//! (`addrd::embedded::check_ldif`): no input may panic.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = addrd::embedded::check_ldif(data);
});
