//! Shared by the WBXML tests: the corpus of decks under `tests/wml/`, the
//! deliberate differences from kannel's compiler, and the normalisations
//! that undo exactly those differences on a decoded document.
#![allow(dead_code)]

use std::path::PathBuf;

use wap_adapter::wbxml::{decode, Charset, Content, Document, Element, Piece};

/// A deliberate difference between our compiler and kannel's `wml_tester`
/// (documented in docs/architecture.md, "wap-adapter: WBXML").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    /// kannel has no token for `pre` (WML 1.2+): it writes a LITERAL tag
    /// with "pre" appended to the string table, and it collapses and trims
    /// the white space inside like any text. We write token 0x1B and keep
    /// the white space.
    Pre,
    /// kannel trims the white space at the edges of a text node unless a
    /// neighbour is an emphasis element (b, big, em, i, small, strong, u),
    /// which glues words to links ("see<a>this</a>now"). We treat `a`,
    /// `anchor` and `img` as inline too.
    InlineNeighbour,
    /// kannel (through libxml2) sees `xml:lang` and `xml:space` as `lang`
    /// and `space` in the xml namespace, finds no token for them, and
    /// writes LITERAL attributes named "lang" and "space" (so a decompiled
    /// deck loses the `xml:` prefix). We write tokens 0x50, 0x62 and 0x63.
    XmlAttributes,
}

/// One deck of the corpus.
#[derive(Debug)]
pub struct Deck {
    /// File name under tests/wml/.
    pub file: &'static str,
    /// Output charset (also the input charset given to wml_tester -c).
    pub charset: Charset,
    /// The differences this deck exercises.
    pub differences: &'static [Difference],
}

const fn deck(file: &'static str, charset: Charset, differences: &'static [Difference]) -> Deck {
    Deck {
        file,
        charset,
        differences,
    }
}

/// The corpus.
pub const DECKS: &[Deck] = &[
    deck(
        "variables.wml",
        Charset::Utf8,
        &[Difference::InlineNeighbour],
    ),
    deck("forms.wml", Charset::Utf8, &[]),
    deck("pre.wml", Charset::Utf8, &[Difference::Pre]),
    deck("entities.wml", Charset::Utf8, &[]),
    deck("utf8.wml", Charset::Utf8, &[]),
    deck("latin1.wml", Charset::Iso8859_1, &[]),
    deck("tables.wml", Charset::Utf8, &[]),
    deck("quirks.wml", Charset::Utf8, &[Difference::InlineNeighbour]),
    deck("events.wml", Charset::Utf8, &[Difference::InlineNeighbour]),
    deck("longtext.wml", Charset::Utf8, &[]),
    deck("links.wml", Charset::Utf8, &[Difference::InlineNeighbour]),
    deck(
        "wml13.wml",
        Charset::Utf8,
        &[Difference::InlineNeighbour, Difference::XmlAttributes],
    ),
];

/// The path of a corpus file.
pub fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wml")
        .join(file)
}

/// Reads a corpus file.
pub fn read(file: &str) -> Vec<u8> {
    let p = path(file);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{B}' | '\u{C}' | '\r')
}

fn is_emphasis(c: Option<&Content>) -> bool {
    matches!(c, Some(Content::Element(e)) if matches!(
        e.name.as_str(), "b" | "big" | "em" | "i" | "small" | "strong" | "u"))
}

fn is_link_or_image(c: Option<&Content>) -> bool {
    matches!(c, Some(Content::Element(e)) if matches!(e.name.as_str(), "a" | "anchor" | "img"))
}

/// kannel's white-space shrinking (a run of two stays two spaces, longer
/// runs become one).
fn shrink(text: &str) -> String {
    let mut out = String::new();
    let mut run = 0;
    for c in text.chars() {
        if is_c_space(c) {
            run += 1;
            continue;
        }
        out.extend(std::iter::repeat_n(' ', if run >= 3 { 1 } else { run }));
        run = 0;
        out.push(c);
    }
    out.extend(std::iter::repeat_n(' ', if run >= 3 { 1 } else { run }));
    out
}

/// Trims the white space at the ends of a text run (first and last text
/// piece).
fn strip(pieces: &mut Vec<Piece>) {
    if let Some(Piece::Text(t)) = pieces.first_mut() {
        *t = t.trim_start_matches(is_c_space).to_string();
    }
    if let Some(Piece::Text(t)) = pieces.last_mut() {
        *t = t.trim_end_matches(is_c_space).to_string();
    }
    pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
}

/// Undoes [`Difference::Pre`] on our decoded output: text inside `pre` is
/// shrunk and trimmed the way kannel treats all text.
pub fn undo_pre(doc: &mut Document) {
    fn walk(e: &mut Element, in_pre: bool) {
        let in_pre = in_pre || e.name == "pre";
        let n = e.content.len();
        for i in 0..n {
            let keep_edges = in_pre
                && (is_emphasis(i.checked_sub(1).and_then(|j| e.content.get(j)))
                    || is_emphasis(e.content.get(i + 1)));
            match &mut e.content[i] {
                Content::Element(c) => walk(c, in_pre),
                Content::Text(pieces) if in_pre => {
                    for p in pieces.iter_mut() {
                        if let Piece::Text(t) = p {
                            *t = shrink(t);
                        }
                    }
                    if !keep_edges {
                        strip(pieces);
                    }
                }
                Content::Text(_) => {}
            }
        }
        e.content
            .retain(|c| !matches!(c, Content::Text(p) if p.is_empty()));
    }
    walk(&mut doc.root, false);
}

/// Undoes [`Difference::InlineNeighbour`] on our decoded output: text next
/// to `a`, `anchor` or `img` (and not next to an emphasis element) is
/// trimmed, and dropped when nothing is left.
pub fn undo_inline_neighbour(doc: &mut Document) {
    fn walk(e: &mut Element) {
        let n = e.content.len();
        for i in 0..n {
            let before = i.checked_sub(1).and_then(|j| e.content.get(j));
            let after = e.content.get(i + 1);
            let trim = !is_emphasis(before)
                && !is_emphasis(after)
                && (is_link_or_image(before) || is_link_or_image(after));
            match &mut e.content[i] {
                Content::Element(c) => walk(c),
                Content::Text(pieces) if trim => strip(pieces),
                Content::Text(_) => {}
            }
        }
        e.content
            .retain(|c| !matches!(c, Content::Text(p) if p.is_empty()));
    }
    walk(&mut doc.root);
}

/// Undoes [`Difference::XmlAttributes`] on our decoded output.
pub fn undo_xml_attributes(doc: &mut Document) {
    fn walk(e: &mut Element) {
        for a in &mut e.attributes {
            if let Some(local) = a.name.strip_prefix("xml:") {
                a.name = local.to_string();
            }
        }
        for c in &mut e.content {
            if let Content::Element(child) = c {
                walk(child);
            }
        }
    }
    walk(&mut doc.root);
}

/// The string-table entries kannel adds for the differences (literal
/// names, in the order it meets them), which our table does not have.
/// They are appended after our table: exact as long as the deck has no
/// variables or other literals (which kannel appends in the same pass).
pub fn extra_table_entries(doc: &Document, differences: &[Difference]) -> Vec<u8> {
    fn walk(e: &Element, differences: &[Difference], names: &mut Vec<String>) {
        let mut add = |n: &str| {
            if !names.iter().any(|m| m == n) {
                names.push(n.to_string());
            }
        };
        if differences.contains(&Difference::Pre) && e.name == "pre" {
            add("pre");
        }
        if differences.contains(&Difference::XmlAttributes) {
            for a in &e.attributes {
                if let Some(local) = a.name.strip_prefix("xml:") {
                    add(local);
                }
            }
        }
        for c in &e.content {
            if let Content::Element(child) = c {
                walk(child, differences, names);
            }
        }
    }
    let mut names = Vec::new();
    walk(&doc.root, differences, &mut names);
    names
        .iter()
        .flat_map(|n| n.bytes().chain(std::iter::once(0)))
        .collect()
}

/// Applies the undo of each difference to our decoded document.
pub fn undo(doc: &mut Document, differences: &[Difference]) {
    for d in differences {
        match d {
            Difference::Pre => undo_pre(doc),
            Difference::InlineNeighbour => undo_inline_neighbour(doc),
            Difference::XmlAttributes => undo_xml_attributes(doc),
        }
    }
}

/// Hex dump for assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Decodes, panicking with a hex dump.
pub fn decoded(bytes: &[u8], what: &str) -> Document {
    decode(bytes).unwrap_or_else(|e| panic!("{what}: {e}\n{}", hex(bytes)))
}

/// Compares our output with kannel's for one deck, modulo exactly the
/// deck's listed differences.
pub fn compare(name: &str, ours: &[u8], kannel: &[u8], differences: &[Difference]) {
    if differences.is_empty() {
        assert!(
            ours == kannel,
            "{name}: output differs from wml_tester\nours:\n{}\nkannel:\n{}",
            hex(ours),
            hex(kannel)
        );
        return;
    }
    assert!(
        ours != kannel,
        "{name}: listed differences {differences:?} but the bytes are identical"
    );
    let mut ours_doc = decoded(ours, name);
    let kannel_doc = decoded(kannel, "wml_tester output");
    let mut expected_table = ours_doc.string_table.clone();
    expected_table.extend(extra_table_entries(&ours_doc, differences));
    assert_eq!(
        kannel_doc.string_table, expected_table,
        "{name}: string tables differ beyond the listed differences"
    );
    undo(&mut ours_doc, differences);
    ours_doc.string_table = kannel_doc.string_table.clone();
    assert_eq!(
        ours_doc, kannel_doc,
        "{name}: decoded trees differ beyond {differences:?}"
    );
}
