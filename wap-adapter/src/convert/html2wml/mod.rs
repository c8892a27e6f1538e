//! HTML to WML 1.3 (WAP-191-WML): html5ever parses the page (recovering
//! from broken markup as browsers do), [`extract`] reduces the DOM to
//! paragraphs of text, links and form controls, and [`deck`] writes them as
//! a deck of cards that each fit the client's SDU size once compiled.

mod deck;
mod extract;
mod model;

use html5ever::tendril::TendrilSink;
use html5ever::{parse_document, ParseOpts};
use markup5ever_rcdom::RcDom;

use super::{parse_page_url, CompiledSize, ConvertError, Html2WmlOptions};

/// Converts an HTML page to a WML 1.3 deck.
///
/// `html` is the page as received: UTF-8, or else read as Windows-1252 (the
/// superset of ISO-8859-1 browsers read legacy pages as); `page_url` the
/// absolute URL it came from, against which links are resolved. The deck is
/// split into cards so that each card, compiled alone as a one-card deck and
/// measured by `sizer`, is at most `options.max_card_size` bytes;
/// consecutive cards are linked with previous/next links (`#c2`). Broken
/// markup never fails the conversion: the only errors are a page URL that is
/// not absolute and a size bound too small for any card.
///
/// The whole deck can be bigger than the bound; a client whose SDU size
/// cannot take it is served by [`html_to_wml_cards`].
pub fn html_to_wml(
    html: &[u8],
    page_url: &str,
    options: &Html2WmlOptions,
    sizer: &dyn CompiledSize,
) -> Result<String, ConvertError> {
    let page_url = parse_page_url(page_url)?;
    let page = read_page(html, &page_url, options);
    let links = deck::CardLinks::Fragment;
    let cards = deck::split(&page, options.max_card_size, sizer, &links)?;
    deck::whole_deck(&page, &cards, &links)
}

/// Converts an HTML page to one WML 1.3 deck per card, each within
/// `options.max_card_size` compiled bytes (as measured by `sizer`), for
/// clients that cannot take the whole deck at once.
///
/// The previous/next links of card N point at `page_url` with the query
/// parameter `card_param` set to N-1 and N+1 (any `card_param` already in
/// `page_url` is replaced), written per `options.link_style`; the adapter
/// serves a request carrying `card_param` by converting the page without it
/// and sending that card (element N-1 of the result).
pub fn html_to_wml_cards(
    html: &[u8],
    page_url: &str,
    card_param: &str,
    options: &Html2WmlOptions,
    sizer: &dyn CompiledSize,
) -> Result<Vec<String>, ConvertError> {
    let page_url = parse_page_url(page_url)?;
    let page = read_page(html, &page_url, options);
    let mut target = page_url.clone();
    let kept: Vec<(String, String)> = page_url
        .query_pairs()
        .filter(|(k, _)| k != card_param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    target.set_fragment(None);
    target
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(card_param, "");
    let links = deck::CardLinks::Query {
        prefix: extract::format_link(&target, &page_url, options.link_style),
    };
    let cards = deck::split(&page, options.max_card_size, sizer, &links)?;
    (1..=cards.len())
        .map(|number| deck::single_card_deck(&page, &cards, number, &links))
        .collect()
}

/// Parses the page and reduces it to the page model.
fn read_page(html: &[u8], page_url: &url::Url, options: &Html2WmlOptions) -> model::Page {
    let opts = ParseOpts {
        tree_builder: html5ever::tree_builder::TreeBuilderOpts {
            // Scripts never run on a WAP client: read <noscript> as markup.
            scripting_enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let dom = match std::str::from_utf8(html) {
        Ok(text) => parse_document(RcDom::default(), opts).one(text),
        Err(_) => parse_document(RcDom::default(), opts).one(windows_1252(html)),
    };
    extract::extract(&dom.document, page_url, options.link_style)
}

/// Decodes Windows-1252 (ISO-8859-1 with printable characters in
/// 0x80..=0x9F; its five unassigned bytes become U+FFFD).
fn windows_1252(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '€', '\u{FFFD}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{FFFD}', 'Ž',
        '\u{FFFD}', '\u{FFFD}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ',
        '\u{FFFD}', 'ž', 'Ÿ',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH
                .get(usize::from(b - 0x80))
                .copied()
                .unwrap_or('\u{FFFD}'),
            _ => char::from(b),
        })
        .collect()
}

#[cfg(test)]
mod tests;
