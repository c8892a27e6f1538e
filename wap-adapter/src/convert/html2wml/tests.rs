//! One test per conversion rule of issue #5's "Content adaptation" list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;
use crate::convert::{LinkStyle, SourceLengthBound};

const URL: &str = "http://app.example/shop/page.html?x=1";

/// A bound large enough that nothing is split.
const NO_SPLIT: usize = 1_000_000;

fn convert_with(html: &str, options: &Html2WmlOptions) -> String {
    html_to_wml(html.as_bytes(), URL, options, &SourceLengthBound).unwrap()
}

fn wml(html: &str) -> String {
    convert_with(html, &Html2WmlOptions::with_max_card_size(NO_SPLIT))
}

/// The content of the only card, without the card element.
fn body(html: &str) -> String {
    let deck = wml(html);
    let start = deck.find("<card").unwrap();
    let start = start + deck[start..].find('>').unwrap() + 1;
    let end = deck.find("</card>").unwrap();
    deck[start..end].replace('\n', "")
}

#[test]
fn deck_has_prolog_doctype_and_one_card() {
    let deck = wml("<p>hi</p>");
    assert!(deck.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.3//EN\" \"http://www.wapforum.org/DTD/wml13.dtd\">\n<wml>"));
    assert_eq!(deck.matches("<card").count(), 1);
    assert!(deck.trim_end().ends_with("</card></wml>"));
}

#[test]
fn title_becomes_the_card_title() {
    let deck = wml("<title>  My\n shop </title><p>x</p>");
    assert!(
        deck.contains("<card id=\"c1\" title=\"My shop\">"),
        "{deck}"
    );
}

#[test]
fn headings_paragraphs_emphasis_and_line_breaks() {
    assert_eq!(
        body("<h1>Top</h1><h3>Sub</h3><p>a <b>b</b> <i>i</i> <em>e</em> <strong>s</strong> <u>u</u><br>next</p><div>d</div>"),
        "<p><big><b>Top</b></big></p><p><b>Sub</b></p><p>a <b>b</b> <i>i</i> <em>e</em> <strong>s</strong> <u>u</u><br/>next</p><p>d</p>"
    );
    assert_eq!(
        body("<p><b>bold <i>both</i></b></p>"),
        "<p><b>bold </b><b><i>both</i></b></p>"
    );
}

#[test]
fn whitespace_is_collapsed_and_empty_paragraphs_dropped() {
    assert_eq!(body("<p>  a \n\n b  </p><p> </p><p>\t</p>"), "<p>a b</p>");
}

#[test]
fn links_are_adapter_relative_on_the_same_origin_and_absolute_elsewhere() {
    assert_eq!(
        body("<a href='other.html'>o</a> <a href='/x?a=1&amp;b=2#f'>x</a> <a href='http://elsewhere.example/p'>e</a> <a href='//cdn.example/c'>c</a>"),
        "<p><a href=\"/shop/other.html\">o</a> <a href=\"/x?a=1&amp;b=2#f\">x</a> <a href=\"http://elsewhere.example/p\">e</a> <a href=\"http://cdn.example/c\">c</a></p>"
    );
}

#[test]
fn links_can_be_written_absolute() {
    let mut options = Html2WmlOptions::with_max_card_size(NO_SPLIT);
    options.link_style = LinkStyle::Absolute;
    let deck = convert_with("<a href='other.html'>o</a>", &options);
    assert!(
        deck.contains("<a href=\"http://app.example/shop/other.html\">o</a>"),
        "{deck}"
    );
}

#[test]
fn base_href_changes_what_links_resolve_against() {
    assert_eq!(
        body("<head><base href='/docs/'></head><a href='a.html'>a</a>"),
        "<p><a href=\"/docs/a.html\">a</a></p>"
    );
}

#[test]
fn javascript_links_are_dropped_and_their_text_kept() {
    assert_eq!(
        body("<p><a href='javascript:go()'>Go</a> <a href=' JavaScript:x'>X</a> <a href='vbscript:y'>Y</a></p>"),
        "<p>Go X Y</p>"
    );
}

#[test]
fn a_link_without_text_gets_its_image_alt_or_a_placeholder() {
    assert_eq!(
        body("<a href='/h'><img src='h.png' alt='Home'></a> <a href='/e'><img src='e.png'></a>"),
        "<p><a href=\"/h\">[Home]</a> <a href=\"/e\">[link]</a></p>"
    );
}

#[test]
fn images_become_their_alt_text() {
    assert_eq!(
        body("<p>A <img src='a.png' alt='cat'> and <img src='b.png'>.</p>"),
        "<p>A [cat] and .</p>"
    );
}

#[test]
fn forms_become_inputs_and_a_do_go_with_postfields() {
    let b = body(
        "<form action='/login' method='POST'>\
         <input type='hidden' name='token' value='t1'>\
         <input name='user' value='ann' size='10' maxlength='20'>\
         <input type='password' name='pw'>\
         <input type='submit' name='go' value='Sign in'></form>",
    );
    assert_eq!(
        b,
        "<p><input name=\"user\" value=\"ann\" size=\"10\" maxlength=\"20\"/><input name=\"pw\" type=\"password\"/>\
         <do type=\"accept\" name=\"submit1\" label=\"Sign in\"><go href=\"/login\" method=\"post\">\
         <postfield name=\"token\" value=\"t1\"/><postfield name=\"user\" value=\"$(user)\"/>\
         <postfield name=\"pw\" value=\"$(pw)\"/><postfield name=\"go\" value=\"Sign in\"/></go></do></p>"
    );
}

#[test]
fn a_form_without_action_submits_to_the_page_by_get() {
    let b = body("<form><input name='q'></form>");
    assert!(
        b.contains("<go href=\"/shop/page.html?x=1\"><postfield name=\"q\" value=\"$(q)\"/></go>"),
        "{b}"
    );
}

#[test]
fn a_form_opened_between_table_rows_keeps_its_controls() {
    // The HTML parser leaves such a form empty; its controls follow it.
    let b = body(
        "<table><form action='/t' method='post'><tr><td>Name <input name='n'></td></tr>\
         <tr><td><input type='submit' value='Send'></td></tr></form></table>\
         <form action='/u'><input name='m'></form>",
    );
    assert!(
        b.contains("<do type=\"accept\" name=\"submit1\" label=\"Send\"><go href=\"/t\" method=\"post\"><postfield name=\"n\" value=\"$(n)\"/></go></do>"),
        "{b}"
    );
    assert!(
        b.contains("<go href=\"/u\"><postfield name=\"m\" value=\"$(m)\"/></go>"),
        "{b}"
    );
    assert!(
        b.find("submit1").unwrap() < b.find("<input name=\"m\"/>").unwrap(),
        "{b}"
    );
}

#[test]
fn a_form_with_a_script_action_has_no_submission() {
    let b = body("<form action='javascript:send()'><input name='q'></form>");
    assert!(
        !b.contains("<do") && b.contains("<input name=\"q\"/>"),
        "{b}"
    );
}

#[test]
fn variable_names_are_legal_and_unique_across_the_deck() {
    let b = body(
        "<form action='/a'><input name='q'></form><form action='/b'><input name='q'>\
         <input name='user[email]'><input name='2nd'></form>",
    );
    assert!(
        b.contains("<input name=\"q\"/>") && b.contains("<input name=\"q_2\"/>"),
        "{b}"
    );
    assert!(
        b.contains("<postfield name=\"q\" value=\"$(q_2)\"/>"),
        "{b}"
    );
    assert!(
        b.contains("<input name=\"user_email_\"/>")
            && b.contains("<postfield name=\"user[email]\" value=\"$(user_email_)\"/>"),
        "{b}"
    );
    assert!(b.contains("<input name=\"f2nd\"/>"), "{b}");
    assert_eq!(b.matches("name=\"submit").count(), 2);
    assert!(b.contains("name=\"submit1\"") && b.contains("name=\"submit2\""));
}

#[test]
fn radio_buttons_become_one_select_and_checkboxes_a_multiple_select() {
    let b = body(
        "<form action='/s'>\
         <input type='radio' name='size' value='s'> Small\
         <input type='radio' name='size' value='l' checked> Large\
         <label><input type='checkbox' name='x' value='cheese' checked> Cheese</label>\
         <input type='checkbox' name='x' value='ham' id='h'><label for='h'>Ham</label>\
         </form>",
    );
    assert!(
        b.contains("<select name=\"size\" value=\"l\"><option value=\"s\">Small</option><option value=\"l\">Large</option></select>"),
        "{b}"
    );
    assert!(
        b.contains("<select name=\"x\" multiple=\"true\" value=\"cheese\"><option value=\"cheese\">Cheese</option><option value=\"ham\">Ham</option></select>"),
        "{b}"
    );
    // Labels are not repeated as text.
    assert_eq!(b.matches("Small").count(), 1);
    assert_eq!(b.matches("Ham").count(), 1);
    assert!(b.contains(
        "<postfield name=\"size\" value=\"$(size)\"/><postfield name=\"x\" value=\"$(x)\"/>"
    ));
}

#[test]
fn selects_keep_options_and_the_selected_one() {
    let b = body(
        "<form action='/s'><select name='c'><option>One</option>\
         <optgroup label='g'><option value='2' selected>Two</option></optgroup></select>\
         <select name='m' multiple><option selected>a</option><option selected>b</option></select>\
         <select name='empty'></select></form>",
    );
    assert!(b.contains("<select name=\"c\" value=\"2\"><option value=\"One\">One</option><option value=\"2\">Two</option></select>"), "{b}");
    assert!(
        b.contains("<select name=\"m\" multiple=\"true\" value=\"a;b\">"),
        "{b}"
    );
    assert!(
        !b.contains("name=\"empty\""),
        "a select without options is dropped: {b}"
    );
}

#[test]
fn hidden_fields_become_postfields() {
    let b =
        body("<form action='/h' method='post'><input type='hidden' name='id' value='42'></form>");
    assert!(
        b.contains("<postfield name=\"id\" value=\"42\"/>") && !b.contains("<input"),
        "{b}"
    );
}

#[test]
fn textarea_becomes_an_input() {
    let b = body("<form action='/t'><textarea name='msg'>Hello\n  world</textarea></form>");
    assert!(
        b.contains("<input name=\"msg\" value=\"Hello world\"/>"),
        "{b}"
    );
}

#[test]
fn tables_are_flattened_row_by_row_with_separators() {
    assert_eq!(
        body("<table><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td><td>3</td></tr></table>"),
        "<p><b>A</b> | <b>B</b></p><p>1 | 2 | 3</p>"
    );
    // Empty cells leave no dangling separator.
    assert_eq!(
        body("<table><tr><td>a</td><td> </td><td>b</td><td></td></tr></table>"),
        "<p>a | b</p>"
    );
    // A nested table keeps its cells apart too.
    assert_eq!(
        body("<table><tr><td>out<table><tr><td>x</td><td>y</td></tr></table></td><td>z</td></tr></table>"),
        "<p>out</p><p>x | y</p><p>| z</p>"
    );
}

#[test]
fn nested_lists_have_markers_and_indentation() {
    assert_eq!(
        body("<ul><li>a<ol><li>one</li><li>two<ul><li>deep</li></ul></li></ol></li><li>b</li></ul>"),
        "<p>* a</p><p>\u{a0}\u{a0}1. one</p><p>\u{a0}\u{a0}2. two</p><p>\u{a0}\u{a0}\u{a0}\u{a0}* deep</p><p>* b</p>"
    );
}

#[test]
fn scripts_styles_and_comments_are_dropped() {
    assert_eq!(
        body("<style>p{}</style><p>a<script>document.write('<b>x</b>')</script><!-- c -->b</p><noscript>n</noscript>"),
        "<p>ab</p><p>n</p>"
    );
}

#[test]
fn dollar_signs_are_escaped_everywhere() {
    let deck = wml("<title>$1</title><p>cost $5 $(x)</p><a href='/p?a=$b'>$</a><form action='/f$'><input name='n' value='$v'><input type='hidden' name='h$' value='$'></form>");
    assert!(deck.contains("title=\"$$1\""));
    assert!(deck.contains("cost $$5 $$(x)"));
    assert!(deck.contains("<a href=\"/p?a=$$b\">$$</a>"));
    assert!(
        deck.contains("value=\"$$v\"") && deck.contains("<postfield name=\"h$$\" value=\"$$\"/>")
    );
    assert!(deck.contains("<go href=\"/f$$\">"));
    // The only single `$` left are variable references.
    let singles = deck.replace("$$", "").matches('$').count();
    assert_eq!(singles, deck.matches("$(n)").count());
}

#[test]
fn entities_become_utf8_characters() {
    let b = body("<p>&eacute;&nbsp;&euro;&#x263A;&#9731; &amp; &lt;x&gt; &quot;</p>");
    assert_eq!(b, "<p>é\u{a0}€☺☃ &amp; &lt;x&gt; \"</p>");
}

#[test]
fn characters_xml_cannot_carry_are_dropped() {
    let b = body("<p>a\u{1}b&#x1;c\u{b}d&#xFFFF;e</p>");
    assert_eq!(b, "<p>abcde</p>");
}

#[test]
fn meta_refresh_becomes_a_timer() {
    let deck = wml("<meta http-equiv='refresh' content='3;url=next.html'><p>wait</p>");
    assert!(deck.contains("<onevent type=\"ontimer\"><go href=\"/shop/next.html\"/></onevent><timer value=\"30\"/>"), "{deck}");
    let deck = wml("<meta http-equiv='REFRESH' content='0'><p>x</p>");
    assert!(
        deck.contains("<go href=\"/shop/page.html?x=1\"/></onevent><timer value=\"1\"/>"),
        "{deck}"
    );
    let deck = wml("<meta http-equiv='refresh' content='2; url=javascript:x()'><p>x</p>");
    assert!(!deck.contains("timer"), "{deck}");
}

#[test]
fn cards_are_split_by_compiled_size_with_previous_and_next_links() {
    let html: String = (1..=60)
        .map(|i| format!("<p>Paragraph number {i} of the page.</p>"))
        .collect();
    let bound = 500;
    let deck = convert_with(
        &format!("<title>T</title>{html}"),
        &Html2WmlOptions::with_max_card_size(bound),
    );
    let cards: Vec<&str> = deck.split("<card ").skip(1).collect();
    assert!(cards.len() > 4, "{} cards", cards.len());
    for (i, card) in cards.iter().enumerate() {
        let card = card.split("</card>").next().unwrap();
        let one = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.3//EN\" \"http://www.wapforum.org/DTD/wml13.dtd\">\n<wml>\n<card {card}</card></wml>\n");
        assert!(
            SourceLengthBound.compiled_len(&one) <= bound,
            "card {i}: {one}"
        );
        let n = i + 1;
        assert!(card.starts_with(&format!("id=\"c{n}\" title=\"T\"")));
        assert_eq!(
            card.contains(&format!("<a href=\"#c{}\">&lt;&lt; Prev</a>", n - 1)),
            n > 1
        );
        assert_eq!(
            card.contains(&format!("<a href=\"#c{}\">Next &gt;&gt;</a>", n + 1)),
            n < cards.len()
        );
    }
    // Every paragraph is there once, in order.
    let mut at = 0;
    for i in 1..=60 {
        let needle = format!("Paragraph number {i} of");
        let found = deck[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{needle}"));
        at += found + needle.len();
    }
}

#[test]
fn a_paragraph_bigger_than_a_card_is_cut_at_word_boundaries() {
    let words: Vec<String> = (0..400).map(|i| format!("word{i}")).collect();
    let html = format!("<p>{}</p>", words.join(" "));
    let deck = convert_with(&html, &Html2WmlOptions::with_max_card_size(600));
    assert!(deck.matches("<card").count() > 3);
    // Each card's text is a run of whole words; together they are the
    // paragraph.
    let mut seen = Vec::new();
    for card in deck.split("<card ").skip(1) {
        let p = card
            .split("<p>")
            .nth(1)
            .unwrap()
            .split("</p>")
            .next()
            .unwrap();
        seen.extend(p.split(' ').map(str::to_owned));
    }
    assert_eq!(seen, words);
}

#[test]
fn a_word_bigger_than_a_card_is_cut_at_character_boundaries() {
    let word = "é".repeat(1000);
    let deck = convert_with(
        &format!("<p>{word}</p>"),
        &Html2WmlOptions::with_max_card_size(400),
    );
    let text: String = deck
        .split("<card ")
        .skip(1)
        .map(|c| {
            c.split("<p>")
                .nth(1)
                .unwrap()
                .split("</p>")
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, word);
}

#[test]
fn a_choice_list_bigger_than_a_card_keeps_what_fits_and_says_so() {
    let options: String = (0..300)
        .map(|i| format!("<option value='v{i}'>Country number {i}</option>"))
        .collect();
    let deck = convert_with(
        &format!("<form action='/c'><select name='c'>{options}</select></form>"),
        &Html2WmlOptions::with_max_card_size(800),
    );
    assert!(deck.contains("more choices not shown]"), "{deck}");
    assert!(deck.contains("<option value=\"v0\">"));
    assert!(deck.contains("<postfield name=\"c\" value=\"$(c)\"/>"));
}

#[test]
fn the_timer_is_on_the_first_card_only() {
    let html: String = (1..=40)
        .map(|i| format!("<p>Paragraph {i} with some words in it.</p>"))
        .collect();
    let deck = convert_with(
        &format!("<meta http-equiv=refresh content='9;url=/n'>{html}"),
        &Html2WmlOptions::with_max_card_size(500),
    );
    assert_eq!(deck.matches("<timer").count(), 1);
    assert!(deck
        .split("<card ")
        .nth(1)
        .unwrap()
        .contains("<timer value=\"90\"/>"));
}

#[test]
fn a_bound_below_an_empty_card_is_an_error() {
    let err = html_to_wml(
        b"<p>x</p>",
        URL,
        &Html2WmlOptions::with_max_card_size(100),
        &SourceLengthBound,
    )
    .unwrap_err();
    assert!(
        matches!(err, ConvertError::CardSizeTooSmall { bound: 100, .. }),
        "{err}"
    );
}

#[test]
fn a_relative_page_url_is_an_error() {
    let err = html_to_wml(
        b"<p>x</p>",
        "/relative",
        &Html2WmlOptions::default(),
        &SourceLengthBound,
    )
    .unwrap_err();
    assert!(matches!(err, ConvertError::PageUrl { .. }), "{err}");
}

#[test]
fn empty_and_binary_input_give_a_card() {
    for input in [&b""[..], b"\xff\xfe\x00\x01garbage\x80", b"<<<>>>&&&;"] {
        let deck =
            html_to_wml(input, URL, &Html2WmlOptions::default(), &SourceLengthBound).unwrap();
        assert_eq!(deck.matches("<card").count(), 1, "{deck}");
    }
}

#[test]
fn very_deep_nesting_neither_overflows_nor_loses_text() {
    let html = format!(
        "{}deep text{}",
        "<div><span>".repeat(5000),
        "</span></div>".repeat(5000)
    );
    let deck = html_to_wml(
        html.as_bytes(),
        URL,
        &Html2WmlOptions::default(),
        &SourceLengthBound,
    )
    .unwrap();
    assert!(deck.contains("deep text"));
}

/// A sizer that cannot compile anything: every card is too big.
struct Refuses;

impl CompiledSize for Refuses {
    fn compiled_len(&self, _wml: &str) -> usize {
        usize::MAX
    }
}

#[test]
fn a_sizer_that_cannot_measure_fails_the_conversion() {
    let err = html_to_wml(b"<p>x</p>", URL, &Html2WmlOptions::default(), &Refuses).unwrap_err();
    assert!(
        matches!(err, ConvertError::CardSizeTooSmall { .. }),
        "{err}"
    );
}

#[test]
fn pages_that_are_not_utf8_are_read_as_windows_1252() {
    let b = body_bytes(b"<p>caf\xe9 \x80 \x93quoted\x94 \x81</p>");
    assert_eq!(
        b,
        "<p>caf\u{e9} \u{20ac} \u{201c}quoted\u{201d} \u{fffd}</p>"
    );
    // UTF-8 stays UTF-8.
    assert_eq!(body_bytes("<p>café €</p>".as_bytes()), "<p>café €</p>");
}

fn body_bytes(html: &[u8]) -> String {
    let deck = html_to_wml(
        html,
        URL,
        &Html2WmlOptions::with_max_card_size(NO_SPLIT),
        &SourceLengthBound,
    )
    .unwrap();
    let start = deck.find("<card").unwrap();
    let start = start + deck[start..].find('>').unwrap() + 1;
    let end = deck.find("</card>").unwrap();
    deck[start..end].replace('\n', "")
}

#[test]
fn cards_can_be_served_one_deck_each_linked_by_a_query_parameter() {
    let html: String = (1..=40)
        .map(|i| format!("<p>Paragraph {i} with a few words in it.</p>"))
        .collect();
    let html = format!("<meta http-equiv=refresh content='9;url=/n'>{html}");
    let options = Html2WmlOptions::with_max_card_size(600);
    let url = "http://app.example/shop/page.html?x=1&card=7#frag";
    let decks =
        html_to_wml_cards(html.as_bytes(), url, "card", &options, &SourceLengthBound).unwrap();
    let whole = html_to_wml(html.as_bytes(), url, &options, &SourceLengthBound).unwrap();
    // Longer links than `#cN`: at least as many cards.
    assert!(decks.len() >= whole.matches("<card").count());
    assert!(decks.len() > 3);
    for (i, deck) in decks.iter().enumerate() {
        let n = i + 1;
        assert_eq!(deck.matches("<card").count(), 1, "{deck}");
        assert!(SourceLengthBound.compiled_len(deck) <= 600, "{deck}");
        assert!(deck.contains(&format!("<card id=\"c{n}\"")));
        assert_eq!(
            deck.contains(&format!(
                "<a href=\"/shop/page.html?x=1&amp;card={}\">&lt;&lt; Prev</a>",
                n - 1
            )),
            n > 1,
            "{deck}"
        );
        assert_eq!(
            deck.contains(&format!(
                "<a href=\"/shop/page.html?x=1&amp;card={}\">Next &gt;&gt;</a>",
                n + 1
            )),
            n < decks.len(),
            "{deck}"
        );
        assert_eq!(deck.contains("<timer"), n == 1);
    }
    let mut absolute = Html2WmlOptions::with_max_card_size(600);
    absolute.link_style = LinkStyle::Absolute;
    let decks =
        html_to_wml_cards(html.as_bytes(), url, "card", &absolute, &SourceLengthBound).unwrap();
    assert!(
        decks[0].contains("<a href=\"http://app.example/shop/page.html?x=1&amp;card=2\">Next"),
        "{}",
        decks[0]
    );
}
