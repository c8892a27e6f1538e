//! Shared by the fuzz-corpus replay tests: the committed corpus of a fuzz
//! target (`fuzz/corpus/<target>/*`), read once and in a stable order, so
//! every input a fuzzer once found interesting stays a regression test on
//! stable Rust.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The directory of `target`'s committed corpus.
pub fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every input of `target`'s corpus as (file name, contents), sorted by
/// name. An unreadable directory or file is a test failure that names it;
/// an empty corpus is left to the caller to refuse.
pub fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = dir(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, data)
        })
        .collect();
    inputs.sort();
    inputs
}
