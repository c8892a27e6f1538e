//! WML <-> WBXML: the WMLC compiler and decompiler.
//!
//! [`compile_wml`] turns a WML 1.1/1.2/1.3 deck into WAP Binary XML
//! (WAP-192-WBXML, token tables of WAP-191-WML §14): tags, attribute starts
//! with their value prefixes and attribute values are tokenised, repeated
//! strings go into the string table, variables (`$var`, `$(var)`,
//! `$(var:escape|unesc|noesc)`) become extension tokens, entities are
//! resolved to characters, and the output is UTF-8 (MIBenum 106) or
//! ISO-8859-1 (MIBenum 4). The XML is parsed with quick-xml.
//!
//! The compiler follows the encoding choices of kannel's WML compiler (its
//! string-table heuristics, whitespace normalisation and value-token search
//! order), so that its output can be compared byte for byte with that
//! independent implementation; the deliberate differences are listed in
//! `docs/architecture.md` ("wap-adapter: WBXML") and in
//! `wap-adapter/tests/wbxml_oracle.rs`.
//!
//! [`decompile`] reads WMLC back into well-formed WML text; [`decode`] gives
//! the decoded tree. The decoder is bounded (nesting depth [`MAX_DEPTH`]) and
//! reports malformed input as a typed [`DecompileError`], never a panic.
#![deny(clippy::indexing_slicing)]

mod compile;
mod decode;
mod source;
pub mod tokens;

pub use compile::{compile_wml, CompileError, CompileOptions};
pub use decode::{
    decode, decompile, Attribute, Content, DecompileError, Document, Element, Escape, Piece,
    MAX_DEPTH,
};

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/wbxml_decode.rs`)
/// and their corpus replay test.
#[doc(hidden)]
pub mod fuzzing {
    use super::{compile_wml, decode, CompileError, CompileOptions};

    /// Decodes `data`; when it is a valid document, its decompiled text must
    /// be well-formed WML that compiles (it may still break a WML rule the
    /// compiler checks, such as two `do` elements of one name), and the
    /// recompiled deck must decode again. Panics on a violated invariant.
    pub fn wbxml_decode(data: &[u8]) {
        let Ok(doc) = decode(data) else {
            return;
        };
        let text = doc.to_wml();
        match compile_wml(text.as_bytes(), &CompileOptions::default()) {
            Ok(again) => {
                if let Err(e) = decode(&again) {
                    panic!("recompiled deck does not decode: {e}\n{text}");
                }
            }
            Err(CompileError::DuplicateDo(_) | CompileError::UnnamedDo)
            | Err(CompileError::InvalidSetvarName) => {}
            Err(e) => panic!("decompiled text does not compile: {e}\n{text}"),
        }
    }
}

/// Character set of the WBXML strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Charset {
    /// UTF-8, IANA MIBenum 106.
    #[default]
    Utf8,
    /// ISO-8859-1 (Latin-1), IANA MIBenum 4.
    Iso8859_1,
}

impl Charset {
    /// The IANA MIBenum written in the WBXML header.
    pub fn mib_enum(self) -> u32 {
        match self {
            Charset::Utf8 => 106,
            Charset::Iso8859_1 => 4,
        }
    }

    /// The charset of a MIBenum (US-ASCII, 3, reads as UTF-8, its superset).
    pub fn from_mib_enum(mib: u32) -> Option<Charset> {
        match mib {
            106 | 3 => Some(Charset::Utf8),
            4 => Some(Charset::Iso8859_1),
            _ => None,
        }
    }

    /// The charset's name as in a `Content-Type` parameter.
    pub fn name(self) -> &'static str {
        match self {
            Charset::Utf8 => "UTF-8",
            Charset::Iso8859_1 => "ISO-8859-1",
        }
    }
}

/// WML version, as named by the deck's DOCTYPE and by the WBXML public
/// identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WmlVersion {
    /// WML 1.1 (public identifier 0x04).
    Wml11,
    /// WML 1.2 (public identifier 0x09).
    Wml12,
    /// WML 1.3 (public identifier 0x0A).
    Wml13,
}

impl WmlVersion {
    /// The WBXML public identifier (WAP-192-WBXML §7.2.1).
    pub fn public_id(self) -> u32 {
        match self {
            WmlVersion::Wml11 => 0x04,
            WmlVersion::Wml12 => 0x09,
            WmlVersion::Wml13 => 0x0A,
        }
    }

    /// The version of a WBXML public identifier.
    pub fn from_public_id(id: u32) -> Option<WmlVersion> {
        match id {
            0x04 => Some(WmlVersion::Wml11),
            0x09 => Some(WmlVersion::Wml12),
            0x0A => Some(WmlVersion::Wml13),
            _ => None,
        }
    }

    /// The formal public identifier of the DOCTYPE.
    pub fn fpi(self) -> &'static str {
        match self {
            WmlVersion::Wml11 => "-//WAPFORUM//DTD WML 1.1//EN",
            WmlVersion::Wml12 => "-//WAPFORUM//DTD WML 1.2//EN",
            WmlVersion::Wml13 => "-//WAPFORUM//DTD WML 1.3//EN",
        }
    }

    /// The version of a DOCTYPE formal public identifier.
    pub fn from_fpi(fpi: &str) -> Option<WmlVersion> {
        [WmlVersion::Wml11, WmlVersion::Wml12, WmlVersion::Wml13]
            .into_iter()
            .find(|v| v.fpi() == fpi)
    }

    /// The system identifier (DTD URL) written in a DOCTYPE.
    pub fn dtd_url(self) -> &'static str {
        match self {
            WmlVersion::Wml11 => "http://www.wapforum.org/DTD/wml_1.1.xml",
            WmlVersion::Wml12 => "http://www.wapforum.org/DTD/wml12.dtd",
            WmlVersion::Wml13 => "http://www.wapforum.org/DTD/wml13.dtd",
        }
    }
}

/// Appends `value` as a WBXML `mb_u_int32` (7 bits per byte, most
/// significant first, high bit set on all but the last byte).
pub(crate) fn push_mb_u_int32(out: &mut Vec<u8>, value: u32) {
    let mut groups = [0u8; 5];
    let mut n = 0;
    let mut v = value;
    for slot in groups.iter_mut() {
        *slot = (v & 0x7F) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for (i, group) in groups.iter().take(n).enumerate().rev() {
        out.push(if i == 0 { *group } else { *group | 0x80 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mb_u_int32_encodings() {
        for (value, bytes) in [
            (0u32, &[0x00][..]),
            (0x7F, &[0x7F]),
            (0x80, &[0x81, 0x00]),
            (0xA0, &[0x81, 0x20]),
            (0x3FFF, &[0xFF, 0x7F]),
            (0x4000, &[0x81, 0x80, 0x00]),
            (u32::MAX, &[0x8F, 0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = Vec::new();
            push_mb_u_int32(&mut out, value);
            assert_eq!(out, bytes, "{value:#x}");
        }
    }

    #[test]
    fn versions_and_charsets_round_trip() {
        for v in [WmlVersion::Wml11, WmlVersion::Wml12, WmlVersion::Wml13] {
            assert_eq!(WmlVersion::from_public_id(v.public_id()), Some(v));
            assert_eq!(WmlVersion::from_fpi(v.fpi()), Some(v));
        }
        for c in [Charset::Utf8, Charset::Iso8859_1] {
            assert_eq!(Charset::from_mib_enum(c.mib_enum()), Some(c));
        }
    }
}
