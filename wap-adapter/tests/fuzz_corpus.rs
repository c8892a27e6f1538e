//! Replays the committed fuzz corpus of the `html2wml` target
//! (`fuzz/corpus/html2wml/*`) through the checks the fuzz target makes, so
//! every input a fuzzer once found interesting stays a regression test on
//! stable Rust: the converter accepts it, its deck is well-formed WML that
//! `wml_to_html` reads back, and reading the input as WML does not panic.

use std::path::Path;

use wap_adapter::convert::{
    html_to_wml, html_to_wml_cards, wml_to_html, Html2WmlOptions, SourceLengthBound,
};

const URL: &str = "http://fuzz.example/dir/page.html?q=1";

#[test]
fn html2wml_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/html2wml");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let deck = html_to_wml(&data, URL, &Html2WmlOptions::default(), &SourceLengthBound)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
            panic!(
                "{}: the deck does not read back: {e}\n{deck}",
                path.display()
            );
        }
        let decks = html_to_wml_cards(
            &data,
            URL,
            "card",
            &Html2WmlOptions::default(),
            &SourceLengthBound,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for deck in decks {
            if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
                panic!(
                    "{}: a card deck does not read back: {e}\n{deck}",
                    path.display()
                );
            }
        }
        let _ = wml_to_html(&data, URL);
        inputs += 1;
    }
    assert!(
        inputs >= 10,
        "corpus in {} has {inputs} inputs",
        dir.display()
    );
}
