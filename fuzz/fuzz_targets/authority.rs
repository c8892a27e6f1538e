#![no_main]
//! Fuzz target: see `overlay_proto::fuzzing::authority`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    overlay_proto::fuzzing::authority(data);
});
