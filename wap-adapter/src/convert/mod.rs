//! Content adaptation between the web and WAP terminals (WAP-191-WML, WML 1.3).
//!
//! [`html_to_wml`] turns a backend's HTML page into a WML 1.3 deck for WAP
//! clients: the page is parsed with html5ever (so broken markup is recovered
//! the way browsers recover it), reduced to paragraphs of text, links and form
//! controls, and written with quick-xml's writer, so the deck is always
//! well-formed; it is valid against the WML 1.3 DTD. The deck is split into
//! cards whose *compiled* (WBXML) size each stays within the client's SDU size,
//! measured by a [`CompiledSize`] the caller passes in, with previous/next
//! links between the cards.
//!
//! [`wml_to_html`] does the reverse for browsers reaching a WML-only
//! application: cards become sections, `do`/`go`/`postfield` become forms,
//! timers become a meta refresh, and variables are substituted from the
//! request's query string.
#![deny(clippy::indexing_slicing)]

mod html2wml;
mod wml2html;

pub use html2wml::{html_to_wml, html_to_wml_cards};
pub use wml2html::wml_to_html;

/// The default client SDU size (bytes): the largest compiled card the
/// converter produces when the client announced nothing else.
pub const DEFAULT_SDU_SIZE: usize = 1400;

/// The WML 1.3 public identifier written in every deck's DOCTYPE.
pub const WML13_PUBLIC_ID: &str = "-//WAPFORUM//DTD WML 1.3//EN";

/// The WML 1.3 system identifier written in every deck's DOCTYPE.
pub const WML13_SYSTEM_ID: &str = "http://www.wapforum.org/DTD/wml13.dtd";

/// Measures how many bytes a WML deck takes once compiled to WBXML.
///
/// The card splitter depends only on this trait: the adapter passes the real
/// WBXML compiler, tests may pass an estimator such as [`SourceLengthBound`].
pub trait CompiledSize {
    /// The compiled size of `wml`, a complete WML deck (prolog, DOCTYPE,
    /// `<wml>`), in bytes. An implementation that cannot compile the deck
    /// must return a value above any SDU size (for example `usize::MAX`), so
    /// that the splitter never trusts a deck it could not measure.
    fn compiled_len(&self, wml: &str) -> usize;
}

/// A conservative upper bound of a deck's compiled (WBXML) size, computed
/// from its XML text alone.
///
/// WBXML replaces every tag and known attribute by a one-byte token and every
/// end tag by one byte, and drops the XML prolog and DOCTYPE (which become a
/// four-byte header); the only things that can grow are strings: an inline
/// string costs two bytes more than its text (`STR_I` and the terminating
/// NUL), and a character outside the deck's charset may be written as an
/// `ENTITY` token (one byte plus a multi-byte integer of up to five bytes,
/// against at least two bytes of UTF-8). The bound therefore counts the XML
/// text's length, plus two bytes per markup delimiter (`<` and `=`, each of
/// which may open a string: a text node after a tag, an attribute value) and
/// four bytes per non-ASCII character. The XML text already spends more than
/// that on tags (`<p>…</p>` is seven bytes, two once compiled), so the figure
/// is always above what a WML compiler produces; it is useful until (and
/// besides) the real compiler.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceLengthBound;

impl CompiledSize for SourceLengthBound {
    fn compiled_len(&self, wml: &str) -> usize {
        let delimiters = wml.bytes().filter(|b| matches!(b, b'<' | b'=')).count();
        let non_ascii = wml.chars().filter(|c| !c.is_ascii()).count();
        wml.len()
            .saturating_add(delimiters.saturating_mul(2))
            .saturating_add(non_ascii.saturating_mul(4))
    }
}

/// How the HTML converter writes the links it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkStyle {
    /// Every link is resolved against the page's URL (or its `<base href>`)
    /// and written absolute.
    Absolute,
    /// Links to the page's own origin are written as an absolute path
    /// (`/path?query`), so the WAP client keeps asking the adapter, which
    /// serves the application on that path; other links are absolute.
    #[default]
    AdapterRelative,
}

/// Options of [`html_to_wml`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Html2WmlOptions {
    /// The largest compiled size of one card (bytes), normally the client's
    /// SDU size. Each card, compiled alone as a one-card deck, stays within
    /// it.
    pub max_card_size: usize,
    /// How links are written.
    pub link_style: LinkStyle,
}

impl Default for Html2WmlOptions {
    fn default() -> Self {
        Self {
            max_card_size: DEFAULT_SDU_SIZE,
            link_style: LinkStyle::default(),
        }
    }
}

impl Html2WmlOptions {
    /// Options with the given card size bound and the default link style.
    pub fn with_max_card_size(max_card_size: usize) -> Self {
        Self {
            max_card_size,
            ..Self::default()
        }
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The page URL the links are resolved against is not an absolute URL.
    #[error("page URL {url:?} is not an absolute URL: {source}")]
    PageUrl {
        /// The URL as given.
        url: String,
        /// Why it did not parse.
        source: url::ParseError,
    },
    /// The card size bound is too small to hold even an empty card with its
    /// navigation links.
    #[error("card size bound {bound} is below the {needed} bytes an empty card needs")]
    CardSizeTooSmall {
        /// The bound asked for.
        bound: usize,
        /// The compiled size of the smallest card the converter can write.
        needed: usize,
    },
    /// A card came out bigger than the bound although it was measured
    /// within it while the deck was split (a size measure that is not
    /// monotonic).
    #[error("card {card} compiles to {size} bytes, above the bound of {bound}")]
    CardTooLarge {
        /// The card's number (1-based).
        card: usize,
        /// Its compiled size.
        size: usize,
        /// The bound.
        bound: usize,
    },
    /// The WML input is not well-formed XML.
    #[error("WML is not well-formed at byte {position}: {reason}")]
    MalformedWml {
        /// Byte offset of the error in the input.
        position: u64,
        /// The XML parser's explanation.
        reason: String,
    },
    /// The WML input's root element is not `wml`.
    #[error("WML root element is {found:?}, not \"wml\"")]
    NotWml {
        /// The root element found.
        found: String,
    },
    /// The WML input nests elements deeper than the converter follows.
    #[error("WML nests elements deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
    /// Writing the output failed (an internal error: the writer writes to
    /// memory).
    #[error("writing the output: {0}")]
    Write(#[from] std::io::Error),
}

/// Parses the page URL the converters resolve links against.
fn parse_page_url(page_url: &str) -> Result<url::Url, ConvertError> {
    url::Url::parse(page_url).map_err(|source| ConvertError::PageUrl {
        url: page_url.to_owned(),
        source,
    })
}

/// Whether `c` may appear in an XML 1.0 document (the `Char` production).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Makes `text` a WML literal: every `$` becomes `$$` (WAP-191-WML
/// §10.3.1, so no variable is referenced by accident) and characters XML
/// cannot carry are dropped. Every literal text and attribute value the
/// converter writes goes through it.
fn escape_dollar(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|c| is_xml_char(*c)) {
        if c == '$' {
            out.push('$');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_length_bound_counts_text_delimiters_and_non_ascii() {
        let b = SourceLengthBound;
        assert_eq!(b.compiled_len("abc"), 3);
        assert_eq!(b.compiled_len("<p>x</p>"), 8 + 4);
        assert_eq!(b.compiled_len("<a href=\"x\">é</a>"), 18 + 6 + 4);
    }

    #[test]
    fn xml_chars_exclude_controls_and_non_characters() {
        assert!(is_xml_char('a') && is_xml_char('\n') && is_xml_char('é'));
        assert!(!is_xml_char('\u{1}') && !is_xml_char('\u{FFFE}') && !is_xml_char('\u{0}'));
    }

    #[test]
    fn dollar_is_doubled() {
        assert_eq!(escape_dollar("costs $5 or $$"), "costs $$5 or $$$$");
        assert_eq!(escape_dollar("a\u{1}b\u{FFFF}"), "ab");
    }
}
