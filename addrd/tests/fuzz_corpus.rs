//! Replays the committed fuzz corpus of the `ldif` target
//! (`fuzz/corpus/ldif/*`) through `addrd::embedded::check_ldif`, the entry
//! point the fuzz target uses, so every input a fuzzer once found
//! interesting stays a regression test on stable Rust.

use std::path::Path;

#[test]
fn ldif_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ldif");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let _ = addrd::embedded::check_ldif(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
    // The example organisation, a seed, is checked clean.
    let example = std::fs::read(dir.join("example-org")).unwrap();
    let report = addrd::embedded::check_ldif(&example).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.users, 4);
}

/// The `homeagent_inner` target's corpus (`fuzz/corpus/homeagent_inner`:
/// a DNS query, an echo request, a TCP SYN, UDP to another port, a bad
/// checksum), each input and every truncation and single-byte change of
/// it, through `addrd::homeagent::inner::check`.
#[test]
fn homeagent_inner_corpus() {
    use addrd::homeagent::inner::{check, classify, Inner, FUZZ_OWN_ADDRESS};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/homeagent_inner");
    let mut inputs = 0;
    let mut answered = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if !matches!(classify(&data, FUZZ_OWN_ADDRESS), Inner::Dropped(_)) {
            answered += 1;
        }
        for len in 0..=data.len() {
            check(&data[..len]);
        }
        for i in 0..data.len() {
            let mut changed = data.clone();
            changed[i] ^= 0xA5;
            check(&changed);
        }
        inputs += 1;
    }
    assert_eq!(inputs, 5, "corpus of {}", dir.display());
    // The seeds are what they say: all but the bad checksum get an answer
    // or a DNS hand-over.
    assert_eq!(answered, 4);
}
