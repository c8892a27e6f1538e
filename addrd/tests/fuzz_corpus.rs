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
