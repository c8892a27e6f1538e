//! HTML -> WML on a corpus of realistic pages (tests/html/): every deck is
//! well-formed, valid against the WML 1.3 DTD (xmllint, tests/dtd/wml13.dtd),
//! and every card compiles within the SDU size, measured with the library's
//! conservative bound and, when installed, with kannel's independent WML
//! compiler (`wml_tester`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a test failure

use std::path::{Path, PathBuf};
use std::process::Command;

use html5ever::tendril::TendrilSink;
use markup5ever_rcdom::RcDom;
use quick_xml::events::Event;
use quick_xml::Reader;
use wap_adapter::convert::{
    html_to_wml, html_to_wml_cards, wml_to_html, CompiledSize, Html2WmlOptions, SourceLengthBound,
    DEFAULT_SDU_SIZE,
};

const PAGE_URL: &str = "http://shop.example/dir/page.html";
const XMLLINT: &str = "/usr/bin/xmllint";
const WML_TESTER: &str = "/usr/lib/kannel/test/wml_tester";

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut pages: Vec<(String, Vec<u8>)> = std::fs::read_dir(crate_dir().join("tests/html"))
        .expect("tests/html is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("page is readable"))
        })
        .collect();
    pages.sort();
    assert!(pages.len() >= 10, "the corpus has its ten pages");
    pages
}

fn convert(html: &[u8], bound: usize) -> String {
    html_to_wml(
        html,
        PAGE_URL,
        &Html2WmlOptions::with_max_card_size(bound),
        &SourceLengthBound,
    )
    .expect("conversion succeeds")
}

/// Parses `xml` completely; the error if it is not well-formed.
fn well_formed(xml: &str) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut depth = 0i64;
    let mut roots = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("at {}: {e}", reader.error_position())),
        }
    }
    if depth != 0 || roots != 1 {
        return Err(format!("depth {depth}, {roots} root elements"));
    }
    Ok(())
}

/// The cards of a deck, each as a complete one-card deck.
fn cards_as_decks(deck: &str) -> Vec<String> {
    let head_end = deck.find("<wml>").expect("deck has <wml>") + "<wml>".len();
    let head = &deck[..head_end];
    let mut out = Vec::new();
    let mut rest = &deck[head_end..];
    while let Some(start) = rest.find("<card") {
        let end = rest.find("</card>").expect("card is closed") + "</card>".len();
        out.push(format!("{head}\n{}\n</wml>\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// Deletes a scratch file even when the test fails.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn scratch(name: &str, contents: &[u8]) -> TempFile {
    let path =
        std::env::temp_dir().join(format!("permanet-html2wml-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("scratch file is writable");
    TempFile(path)
}

fn xmllint_validate(name: &str, deck: &str) -> Result<(), String> {
    let file = scratch(&format!("{name}.wml"), deck.as_bytes());
    let dtd = crate_dir().join("tests/dtd/wml13.dtd");
    let out = Command::new(XMLLINT)
        .args(["--nonet", "--noout", "--dtdvalid"])
        .arg(&dtd)
        .arg(&file.0)
        .output()
        .map_err(|e| format!("running xmllint: {e}"))?;
    // xmllint warns that it may not load the system identifier (no network);
    // validity errors make it fail.
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(())
}

/// The size kannel's WML compiler gives a one-card deck.
fn kannel_compiled_len(name: &str, deck: &str) -> usize {
    let file = scratch(&format!("{name}.wml"), deck.as_bytes());
    let out = Command::new(WML_TESTER)
        .arg("-b")
        .arg(&file.0)
        .output()
        .expect("wml_tester runs");
    assert!(out.status.success(), "wml_tester compiles {name}: {deck}");
    assert!(!out.stdout.is_empty(), "wml_tester output for {name}");
    out.stdout.len()
}

#[test]
fn every_corpus_deck_is_well_formed_and_every_card_within_the_bound() {
    for bound in [DEFAULT_SDU_SIZE, 600, 3000] {
        for (name, html) in corpus() {
            let deck = convert(&html, bound);
            if let Err(e) = well_formed(&deck) {
                panic!("{name} (bound {bound}) is not well-formed: {e}\n{deck}");
            }
            let cards = cards_as_decks(&deck);
            assert!(!cards.is_empty(), "{name}: at least one card");
            for (i, card) in cards.iter().enumerate() {
                let size = SourceLengthBound.compiled_len(card);
                assert!(
                    size <= bound,
                    "{name} card {} is {size} > {bound}:\n{card}",
                    i + 1
                );
            }
        }
    }
}

#[test]
fn every_corpus_page_served_card_by_card_gives_valid_decks_within_the_bound() {
    let validate = Path::new(XMLLINT).exists();
    if !validate {
        println!("permanet-test-skipped: every_corpus_page_served_card_by_card_gives_valid_decks_within_the_bound (DTD part): {XMLLINT} is absent (Debian package libxml2-utils)");
    }
    for (name, html) in corpus() {
        let decks = html_to_wml_cards(
            &html,
            PAGE_URL,
            "wap-card",
            &Html2WmlOptions::default(),
            &SourceLengthBound,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let whole = convert(&html, DEFAULT_SDU_SIZE);
        assert!(decks.len() >= cards_as_decks(&whole).len(), "{name}");
        for (i, deck) in decks.iter().enumerate() {
            well_formed(deck).unwrap_or_else(|e| panic!("{name} card {}: {e}", i + 1));
            assert!(
                SourceLengthBound.compiled_len(deck) <= DEFAULT_SDU_SIZE,
                "{name}: {deck}"
            );
            if validate && i < 3 {
                if let Err(e) = xmllint_validate(&format!("{name}-card{i}"), deck) {
                    panic!("{name} card {} is not valid WML 1.3: {e}\n{deck}", i + 1);
                }
            }
        }
    }
}

#[test]
fn every_corpus_deck_is_valid_wml_1_3() {
    if !Path::new(XMLLINT).exists() {
        println!("permanet-test-skipped: every_corpus_deck_is_valid_wml_1_3: {XMLLINT} is absent (Debian package libxml2-utils)");
        return;
    }
    for (name, html) in corpus() {
        let deck = convert(&html, DEFAULT_SDU_SIZE);
        if let Err(e) = xmllint_validate(&name, &deck) {
            panic!("{name} is not valid WML 1.3: {e}\n{deck}");
        }
    }
}

#[test]
fn the_size_bound_is_above_what_kannels_compiler_produces() {
    if !Path::new(WML_TESTER).exists() {
        println!("permanet-test-skipped: the_size_bound_is_above_what_kannels_compiler_produces: {WML_TESTER} is absent (Debian package kannel-extras)");
        return;
    }
    let mut checked = 0;
    for (name, html) in corpus() {
        let deck = convert(&html, DEFAULT_SDU_SIZE);
        for (i, card) in cards_as_decks(&deck).iter().enumerate() {
            let compiled = kannel_compiled_len(&format!("{name}-{i}"), card);
            let bound = SourceLengthBound.compiled_len(card);
            assert!(
                compiled <= bound && compiled <= DEFAULT_SDU_SIZE,
                "{name} card {}: kannel compiles it to {compiled} bytes, bound {bound}",
                i + 1
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "the corpus gives many cards ({checked})");
}

#[test]
fn the_long_article_is_split_into_linked_cards() {
    let (_, html) = corpus()
        .into_iter()
        .find(|(n, _)| n == "article.html")
        .expect("article.html");
    assert!(html.len() > 30_000);
    let deck = convert(&html, DEFAULT_SDU_SIZE);
    let cards = cards_as_decks(&deck);
    assert!(cards.len() > 25, "{} cards", cards.len());
    let n = cards.len();
    assert!(cards[0].contains("href=\"#c2\">Next &gt;&gt;</a>"));
    assert!(!cards[0].contains("Prev"));
    assert!(cards[1].contains("href=\"#c1\">&lt;&lt; Prev</a>") && cards[1].contains("#c3"));
    assert!(cards[n - 1].contains(&format!("#c{}", n - 1)) && !cards[n - 1].contains("Next"));
    // Nothing lost: every word of the page is in the deck, in order.
    assert!(deck.contains("Averyveryveryverylongwordwithoutanyspaces"));
    assert!(deck.contains("xxxend"));
}

#[test]
fn dump_corpus_when_asked() {
    let Ok(dir) = std::env::var("PERMANET_DUMP_WML") else {
        return;
    };
    for (name, html) in corpus() {
        let deck = convert(&html, DEFAULT_SDU_SIZE);
        std::fs::write(Path::new(&dir).join(name.replace(".html", ".wml")), deck)
            .expect("dump is writable");
    }
}

/// A small deterministic generator (xorshift64*), so the soup is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Random tag soup from the elements and attributes the converter handles
/// (and some it does not), unbalanced on purpose.
fn tag_soup(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "<p>",
        "</p>",
        "<div>",
        "</div>",
        "<b>",
        "</b>",
        "<i>",
        "<em>",
        "</em>",
        "<strong>",
        "<u>",
        "<big>",
        "<small>",
        "<br>",
        "<h1>",
        "</h1>",
        "<h4>",
        "<a href='/x?$y'>",
        "<a href='javascript:z()'>",
        "<a>",
        "</a>",
        "<img src=i alt='pic $'>",
        "<img>",
        "<ul>",
        "<ol>",
        "<li>",
        "</li>",
        "</ul>",
        "</ol>",
        "<table>",
        "<tr>",
        "<td>",
        "<th>",
        "</td>",
        "</tr>",
        "</table>",
        "<form action='/f' method=post>",
        "<form>",
        "</form>",
        "<input name='q w'>",
        "<input type=password name=p>",
        "<input type=hidden name=h value='$1'>",
        "<input type=radio name=r value=a>",
        "<input type=radio name=r value=b checked>",
        "<input type=checkbox name=c value=1>",
        "<label>",
        "</label>",
        "<label for=x>",
        "<select name=s>",
        "<option>o1",
        "<option value=2 selected>o2",
        "<optgroup label=g>",
        "</select>",
        "<textarea name=t>",
        "</textarea>",
        "<button>Go</button>",
        "<pre>",
        "</pre>",
        "<script>x<p>y</script>",
        "<style>p{}</style>",
        "<!-- c -->",
        "<meta http-equiv=refresh content='1;url=/r'>",
        "<title>T $ &amp;</title>",
        "word ",
        "two words ",
        "$",
        "$$(v) ",
        "&eacute;",
        "&#0;",
        "\u{1}",
        "日本語 ",
        "&nbsp;",
        "<",
        ">",
        "&",
        "\"",
        "'",
        "\n",
        "<hr>",
        "<dl><dt>d",
        "<noscript>n",
        "<svg><p>s</svg>",
        "<center>",
        "<font>",
        "<base href='/b/'>",
    ];
    let n = 20 + rng.next() % 300;
    (0..n).map(|_| rng.pick(PIECES)).collect()
}

#[test]
fn random_tag_soup_gives_valid_decks_within_the_bound() {
    let validate = Path::new(XMLLINT).exists();
    if !validate {
        println!("permanet-test-skipped: random_tag_soup_gives_valid_decks_within_the_bound (DTD part): {XMLLINT} is absent (Debian package libxml2-utils)");
    }
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for round in 0..60 {
        let soup = tag_soup(&mut rng);
        let bound = [600, DEFAULT_SDU_SIZE][round % 2];
        let deck = convert(soup.as_bytes(), bound);
        if let Err(e) = well_formed(&deck) {
            panic!("round {round}: not well-formed: {e}\n{soup}\n{deck}");
        }
        for card in cards_as_decks(&deck) {
            assert!(
                SourceLengthBound.compiled_len(&card) <= bound,
                "round {round}: {card}"
            );
        }
        // And the deck reads back as WML into an HTML5 page without errors.
        let page = wml_to_html(deck.as_bytes(), PAGE_URL)
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{deck}"));
        let dom =
            html5ever::parse_document(RcDom::default(), Default::default()).one(page.as_str());
        let errors = dom.errors.borrow().len();
        assert_eq!(errors, 0, "round {round}: HTML5 errors in\n{page}");
        if validate {
            if let Err(e) = xmllint_validate(&format!("soup{round}"), &deck) {
                panic!("round {round}: not valid WML 1.3: {e}\n{soup}\n{deck}");
            }
        }
    }
}

/// The compiled size as kannel's WML compiler gives it (a deck it cannot
/// compile is too big for any bound).
struct KannelSizer;

impl CompiledSize for KannelSizer {
    fn compiled_len(&self, wml: &str) -> usize {
        let file = scratch("sizer.wml", wml.as_bytes());
        match Command::new(WML_TESTER).arg("-b").arg(&file.0).output() {
            Ok(out) if out.status.success() && !out.stdout.is_empty() => out.stdout.len(),
            _ => usize::MAX,
        }
    }
}

#[test]
fn decks_split_with_kannels_compiler_as_the_sizer_fit_exactly_its_measure() {
    if !Path::new(WML_TESTER).exists() {
        println!("permanet-test-skipped: decks_split_with_kannels_compiler_as_the_sizer_fit_exactly_its_measure: {WML_TESTER} is absent (Debian package kannel-extras)");
        return;
    }
    for (name, html) in corpus() {
        if !["news.html", "search.html", "table.html", "lists.html"].contains(&name.as_str()) {
            continue;
        }
        let options = Html2WmlOptions::with_max_card_size(DEFAULT_SDU_SIZE);
        let deck = html_to_wml(&html, PAGE_URL, &options, &KannelSizer)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let estimated = convert(&html, DEFAULT_SDU_SIZE);
        let cards = cards_as_decks(&deck);
        for (i, card) in cards.iter().enumerate() {
            let compiled = kannel_compiled_len(&format!("{name}-k{i}"), card);
            assert!(
                compiled <= DEFAULT_SDU_SIZE,
                "{name} card {}: {compiled} bytes",
                i + 1
            );
        }
        // The real measure packs at least as tightly as the upper bound.
        assert!(
            cards.len() <= cards_as_decks(&estimated).len(),
            "{name}: {} cards with kannel, {} with the bound",
            cards.len(),
            cards_as_decks(&estimated).len()
        );
    }
}
