//! WSP header encoding and decoding (WAP-230-WSP §8.4): between a block of
//! encoded headers and HTTP-style `(name, value)` text pairs.
//!
//! Decoding ([`decode_headers`]) turns every well-known field of code page 1
//! (Table 39, up to encoding version 1.4) and every application header into
//! text; one encoded header gives one pair, in order. A header whose value
//! does not parse (or uses an encoding this codec does not implement, such as
//! the credentials of Authorization) is *not* dropped silently and does not
//! lose the others: it is left out of [`DecodedHeaders::headers`] and
//! reported in [`DecodedHeaders::errors`] with its offset and name, and
//! decoding goes on with the next header (the extent of every value is known
//! from its first octet, §8.4.1.2). Only a broken extent (a length running
//! past the block, a missing NUL) ends decoding, again as an error entry.
//! Headers on code pages other than 1 (after a shift, §8.4.2.6) are skipped
//! the same way, as [`WspError::UnknownCodePage`] entries.
//!
//! Encoding ([`encode_headers`]) splits comma lists into one encoded header
//! per element where the field's grammar is a list (Accept, Cache-Control,
//! Allow, …), uses the compact forms of §8.4.2 for the fields and values it
//! knows, and falls back, losslessly, to the well-known name with a text
//! value where the grammar allows text, or else to an application header
//! (Token-text name, Text-string value): unknown names always pass through
//! as text. Names assigned at more than one code (Accept-Charset 0x01 and
//! 0x3B, …) are written with the first, which every version decodes.

pub(crate) mod decode;
pub(crate) mod encode;

pub use decode::decode_headers;
pub use encode::encode_headers;

use super::error::WspError;

/// Headers as ordered HTTP-style `(name, value)` pairs; repeated names are
/// kept as separate entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Append a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The first value of `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Remove every header named `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.entries.len()
    }

    /// The pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The pairs as a slice.
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs, consumed.
    pub fn into_vec(self) -> Vec<(String, String)> {
        self.entries
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(entries: Vec<(String, String)>) -> Headers {
        Headers { entries }
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        Headers {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// The result of decoding a header block: the headers that decoded, and one
/// error entry per header that did not (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodedHeaders {
    /// The decoded headers, in order.
    pub headers: Headers,
    /// The headers left out, with why; empty for a clean block.
    pub errors: Vec<WspError>,
}
