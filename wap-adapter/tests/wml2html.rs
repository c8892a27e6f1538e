//! WML -> HTML: decks become HTML5 pages that html5ever (a browser's
//! parser) reads without a single parse error, with cards as sections,
//! tasks as forms and links, and variables from the query string.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a test failure

use html5ever::tendril::TendrilSink;
use markup5ever_rcdom::RcDom;
use wap_adapter::convert::{
    html_to_wml, wml_to_html, ConvertError, Html2WmlOptions, SourceLengthBound,
};

const URL: &str = "http://wapapp.example/deck.wml";

fn html(wml: &str, url: &str) -> String {
    let out = wml_to_html(wml.as_bytes(), url).unwrap();
    let errors = html5_errors(&out);
    assert!(errors.is_empty(), "HTML5 parse errors {errors:?} in\n{out}");
    out
}

/// The parse errors html5ever reports for a page.
fn html5_errors(page: &str) -> Vec<String> {
    let dom = html5ever::parse_document(RcDom::default(), Default::default()).one(page);
    let errors = dom.errors.borrow().iter().map(|e| e.to_string()).collect();
    errors
}

fn deck(cards: &str) -> String {
    format!("<?xml version=\"1.0\"?>\n<!DOCTYPE wml PUBLIC \"-//WAPFORUM//DTD WML 1.1//EN\" \"http://www.wapforum.org/DTD/wml_1.1.xml\">\n<wml>{cards}</wml>")
}

#[test]
fn cards_become_sections_with_their_titles_and_links_between_them() {
    let out = html(
        &deck("<card id=\"one\" title=\"First\"><p>Hello <b>bold</b> <big>big</big><br/><a href=\"#two\">next</a></p></card>\
               <card id=\"two\" title=\"Second\"><p align=\"center\">There &amp; back &nbsp;<a href=\"/x?a=1&amp;b=2\">x</a></p></card>"),
        URL,
    );
    assert!(out.starts_with("<!DOCTYPE html>"));
    assert!(out.contains("<title>First</title>"));
    assert!(out.contains("<section id=\"one\"><h1>First</h1><div>Hello <b>bold</b> <span style=\"font-size:larger\">big</span><br/><a href=\"#two\">next</a></div></section>"), "{out}");
    assert!(out.contains("<section id=\"two\"><h1>Second</h1><div style=\"text-align:center\">There &amp; back \u{a0}<a href=\"/x?a=1&amp;b=2\">x</a></div></section>"), "{out}");
}

#[test]
fn a_post_task_becomes_a_form_with_the_cards_fields_renamed() {
    let out = html(
        &deck("<card id=\"login\"><p>User <input name=\"u\" size=\"8\"/> Password <input name=\"p\" type=\"password\"/>\
               <select name=\"lang\" value=\"fr\"><option value=\"en\">English</option><option value=\"fr\">Français</option></select>\
               <do type=\"accept\" label=\"Log in\"><go href=\"/login\" method=\"post\">\
               <postfield name=\"user\" value=\"$(u)\"/><postfield name=\"pass\" value=\"$(p:e)\"/>\
               <postfield name=\"language\" value=\"$(lang)\"/><postfield name=\"v\" value=\"2\"/></go></do></p></card>"),
        URL,
    );
    assert!(
        out.contains("<input type=\"text\" name=\"user\" value=\"\" form=\"f1\" size=\"8\"/>"),
        "{out}"
    );
    assert!(
        out.contains("<input type=\"password\" name=\"pass\" value=\"\" form=\"f1\"/>"),
        "{out}"
    );
    assert!(out.contains("<select name=\"language\" form=\"f1\"><option value=\"en\">English</option><option value=\"fr\" selected=\"selected\">Français</option></select>"), "{out}");
    assert!(out.contains("<form id=\"f1\" action=\"/login\" method=\"post\" style=\"display:inline\"><input type=\"hidden\" name=\"v\" value=\"2\"/><button type=\"submit\">Log in</button></form>"), "{out}");
}

#[test]
fn a_get_with_variables_in_its_query_becomes_a_get_form() {
    let out = html(
        &deck("<card><p><input name=\"q\"/><anchor>Search<go href=\"/find?q=$(q:e)&amp;lang=en\"/></anchor> <anchor>Back<prev/></anchor></p></card>"),
        URL,
    );
    assert!(
        out.contains("<input type=\"text\" name=\"q\" value=\"\" form=\"f1\"/>"),
        "{out}"
    );
    assert!(out.contains("<form id=\"f1\" action=\"/find\" method=\"get\" style=\"display:inline\"><input type=\"hidden\" name=\"lang\" value=\"en\"/><button type=\"submit\">Search</button></form>"), "{out}");
    assert!(
        out.contains("<a href=\"javascript:history.back()\">Back</a>"),
        "{out}"
    );
}

#[test]
fn a_plain_go_is_a_link() {
    let out = html(
        &deck("<card><do type=\"options\" label=\"Home\"><go href=\"/\"/></do></card>"),
        URL,
    );
    assert!(out.contains("<a href=\"/\">Home</a>"), "{out}");
}

#[test]
fn variables_come_from_the_query_or_stay_visible() {
    let out = html(
        &deck("<card title=\"Hi $(name)\"><p>Hello $(name), you owe $$5. $unknown and $(other:e) stay.\
               <a href=\"/p?n=$(name:e)\">me</a><input name=\"name\"/></p></card>"),
        "http://wapapp.example/deck.wml?name=J%C3%BCrg+%26+co",
    );
    assert!(out.contains("<h1>Hi Jürg &amp; co</h1>"), "{out}");
    assert!(
        out.contains("Hello Jürg &amp; co, you owe $5. $unknown and $(other:e) stay."),
        "{out}"
    );
    assert!(
        out.contains("<a href=\"/p?n=J%C3%BCrg+%26+co\">me</a>"),
        "{out}"
    );
    assert!(
        out.contains("<input type=\"text\" name=\"name\" value=\"Jürg &amp; co\"/>"),
        "{out}"
    );
}

#[test]
fn a_timer_becomes_a_meta_refresh() {
    let out = html(
        &deck("<card id=\"splash\"><onevent type=\"ontimer\"><go href=\"#main\"/></onevent><timer value=\"25\"/><p>Welcome</p></card><card id=\"main\"><p>Main</p></card>"),
        URL,
    );
    assert!(
        out.contains("<meta http-equiv=\"refresh\" content=\"3; url=#main\"/>"),
        "{out}"
    );
    let out = html(
        &deck("<card ontimer=\"/next\"><timer value=\"10\"/><p>x</p></card>"),
        URL,
    );
    assert!(out.contains("content=\"1; url=/next\""), "{out}");
    let out = html(&deck("<card onenterforward=\"/go\"><p>x</p></card>"), URL);
    assert!(out.contains("content=\"0; url=/go\""), "{out}");
}

#[test]
fn tables_images_and_fieldsets_are_kept() {
    let out = html(
        &deck("<card><p><table columns=\"2\"><tr><td>a</td><td>b</td></tr></table><img src=\"logo.wbmp\" alt=\"Logo\"/>\
               <fieldset title=\"Who\"><input name=\"n\"/></fieldset></p></card>"),
        URL,
    );
    assert!(
        out.contains("<table><tr><td>a</td><td>b</td></tr></table>"),
        "{out}"
    );
    assert!(
        out.contains("<img src=\"http://wapapp.example/logo.wbmp\" alt=\"Logo\"/>"),
        "{out}"
    );
    assert!(
        out.contains(
            "<fieldset><legend>Who</legend><input type=\"text\" name=\"n\" value=\"\"/></fieldset>"
        ),
        "{out}"
    );
}

#[test]
fn latin1_decks_are_read() {
    let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><wml><card><p>caf".to_vec();
    bytes.push(0xe9);
    bytes.extend_from_slice(b"</p></card></wml>");
    let out = wml_to_html(&bytes, URL).unwrap();
    assert!(out.contains("<div>café</div>"), "{out}");
}

#[test]
fn broken_decks_are_refused_with_a_typed_error() {
    assert!(matches!(
        wml_to_html(b"<wml><card><p>x</card></wml>", URL),
        Err(ConvertError::MalformedWml { .. })
    ));
    assert!(matches!(
        wml_to_html(b"<wml><card>", URL),
        Err(ConvertError::MalformedWml { .. })
    ));
    assert!(matches!(
        wml_to_html(b"<html><body/></html>", URL),
        Err(ConvertError::NotWml { .. })
    ));
    assert!(matches!(
        wml_to_html(b"", URL),
        Err(ConvertError::NotWml { .. })
    ));
    let deep = format!(
        "<wml><card><p>{}x{}</p></card></wml>",
        "<b>".repeat(200),
        "</b>".repeat(200)
    );
    assert!(matches!(
        wml_to_html(deep.as_bytes(), URL),
        Err(ConvertError::TooDeep { .. })
    ));
    assert!(matches!(
        wml_to_html(b"<wml/>", "not a url"),
        Err(ConvertError::PageUrl { .. })
    ));
}

#[test]
fn kannels_sample_decks_convert() {
    for path in [
        "/usr/lib/kannel/test/hello.wml",
        "/usr/lib/kannel/test/testcase.wml",
    ] {
        let Ok(wml) = std::fs::read(path) else {
            println!("permanet-test-skipped: kannels_sample_decks_convert: {path} is absent (Debian package kannel-extras)");
            continue;
        };
        let out = wml_to_html(&wml, URL).unwrap();
        assert!(html5_errors(&out).is_empty(), "{path}:\n{out}");
    }
}

#[test]
fn every_html_corpus_page_survives_the_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/html");
    let mut pages = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let page = std::fs::read(&path).unwrap();
        let wml = html_to_wml(
            &page,
            "http://shop.example/p.html",
            &Html2WmlOptions::default(),
            &SourceLengthBound,
        )
        .unwrap();
        let out = wml_to_html(wml.as_bytes(), "http://shop.example/p.html").unwrap();
        let errors = html5_errors(&out);
        assert!(errors.is_empty(), "{}: {errors:?}\n{out}", path.display());
        pages += 1;
    }
    assert!(pages >= 10);
}

#[test]
fn the_html5_error_check_catches_broken_pages() {
    assert!(!html5_errors("<!DOCTYPE html><p></div><form><form>").is_empty());
    assert!(!html5_errors("<html><p/>").is_empty());
}
