//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! same entry points the fuzz targets use, so every input a fuzzer once
//! found interesting stays a regression test on stable Rust and in CI.

#![allow(clippy::expect_used)] // test code: a panic is a test failure

use std::path::Path;

use overlay_proto::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        run(&data);
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus for {target} in {}", dir.display());
}

#[test]
fn esp_decapsulate_corpus() {
    replay("esp_decapsulate", fuzzing::esp_decapsulate);
}

#[test]
fn authority_corpus() {
    replay("authority", fuzzing::authority);
}

#[test]
fn control_corpus() {
    replay("control", fuzzing::control);
}

#[test]
fn handshake_corpus() {
    replay("handshake", fuzzing::handshake);
}

#[test]
fn lease_corpus() {
    replay("lease", fuzzing::lease);
}

#[test]
fn node_datagram_corpus() {
    replay("node_datagram", fuzzing::node_datagram);
}
