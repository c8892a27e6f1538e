#![no_main]
//! Fuzz target: the HTML -> WML converter (`wap_adapter::convert`). No input
//! may panic; every input gives a deck (and one deck per card), each
//! well-formed WML (the WML reader of `wml_to_html` accepts it). The same
//! bytes read as WML must not panic either.

use wap_adapter::convert::{
    html_to_wml, html_to_wml_cards, wml_to_html, Html2WmlOptions, SourceLengthBound,
};

const URL: &str = "http://fuzz.example/dir/page.html?q=1";

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let deck = match html_to_wml(data, URL, &Html2WmlOptions::default(), &SourceLengthBound) {
        Ok(deck) => deck,
        Err(e) => panic!("html_to_wml refused an input: {e}"),
    };
    if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
        panic!("html_to_wml wrote a deck its own reader refuses: {e}\n{deck}");
    }
    match html_to_wml_cards(
        data,
        URL,
        "card",
        &Html2WmlOptions::default(),
        &SourceLengthBound,
    ) {
        Ok(decks) => {
            for deck in decks {
                if let Err(e) = wml_to_html(deck.as_bytes(), URL) {
                    panic!("html_to_wml_cards wrote a deck its own reader refuses: {e}\n{deck}");
                }
            }
        }
        Err(e) => panic!("html_to_wml_cards refused an input: {e}"),
    }
    let _ = wml_to_html(data, URL);
});
