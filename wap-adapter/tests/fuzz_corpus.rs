//! Replays the committed fuzz corpus of the `html2wml` target
//! (`fuzz/corpus/html2wml/*`) through the checks the fuzz target makes, so
//! every input a fuzzer once found interesting stays a regression test on
//! stable Rust: the converter accepts it, its deck is well-formed WML that
//! `wml_to_html` reads back, and reading the input as WML does not panic.

mod corpus_common;

use wap_adapter::convert::{
    html_to_wml, html_to_wml_cards, wml_to_html, Html2WmlOptions, SourceLengthBound,
};

const URL: &str = "http://fuzz.example/dir/page.html?q=1";

#[test]
fn html2wml_corpus() {
    let corpus = corpus_common::inputs("html2wml");
    for (name, data) in &corpus {
        let deck = html_to_wml(data, URL, &Html2WmlOptions::default(), &SourceLengthBound)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
            panic!("{name}: the deck does not read back: {e}\n{deck}");
        }
        let decks = html_to_wml_cards(
            data,
            URL,
            "card",
            &Html2WmlOptions::default(),
            &SourceLengthBound,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for deck in decks {
            if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
                panic!("{name}: a card deck does not read back: {e}\n{deck}");
            }
        }
        let _ = wml_to_html(data, URL);
    }
    let inputs = corpus.len();
    assert!(
        inputs >= 10,
        "corpus in {} has {inputs} inputs",
        corpus_common::dir("html2wml").display()
    );
}
