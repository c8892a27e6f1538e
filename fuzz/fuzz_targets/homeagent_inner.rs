#![no_main]
//! Fuzz target: what addrd's home agent makes of an inner packet
//! (`addrd::homeagent::inner::classify`, the packet addressed to the
//! home agent's own address): no input may panic, and every answer it
//! builds is a well-formed IPv6 packet.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    addrd::homeagent::inner::check(data);
});
