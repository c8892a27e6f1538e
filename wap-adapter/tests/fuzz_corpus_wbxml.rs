//! Replays the committed fuzz corpus of the `wbxml_decode` target
//! (`fuzz/corpus/wbxml_decode/*`) through
//! `wap_adapter::wbxml::fuzzing::wbxml_decode`, the function the fuzz target
//! calls, so every input a fuzzer once found interesting stays a regression
//! test on stable Rust.

mod corpus_common;

#[test]
fn wbxml_decode_corpus() {
    let inputs = corpus_common::inputs("wbxml_decode");
    for (_, data) in &inputs {
        wap_adapter::wbxml::fuzzing::wbxml_decode(data);
    }
    assert!(
        !inputs.is_empty(),
        "no corpus in {}",
        corpus_common::dir("wbxml_decode").display()
    );
}

/// A deterministic stand-in for a short fuzzing run on stable Rust: byte
/// flips, insertions, deletions and truncations of the corpus inputs.
#[test]
fn corpus_mutations_never_panic() {
    let seeds: Vec<Vec<u8>> = corpus_common::inputs("wbxml_decode")
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000u64 {
        let seed = &seeds[(round as usize) % seeds.len()];
        let mut data = seed.clone();
        for _ in 0..=(next() % 4) {
            if data.is_empty() {
                break;
            }
            let at = (next() as usize) % data.len();
            match next() % 4 {
                0 => data[at] = next() as u8,
                1 => data.insert(at, next() as u8),
                2 => {
                    data.remove(at);
                }
                _ => data.truncate(at),
            }
        }
        wap_adapter::wbxml::fuzzing::wbxml_decode(&data);
    }
}
