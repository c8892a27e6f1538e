//! The WBXML -> WML decoder and decompiler (WAP-192-WBXML §5.3-§5.8, WML
//! code page 0 of WAP-191-WML §14.3).
//!
//! [`decode`] reads the header (version, public identifier, charset, string
//! table) and the body into a [`Document`] tree, with string-table
//! references and attribute-value tokens resolved and variables kept as
//! [`Piece::Variable`]. It never recurses (an explicit stack bounded by
//! [`MAX_DEPTH`]) and turns every malformation into a [`DecompileError`].
//! [`decompile`] writes the tree as well-formed WML text (UTF-8).

use thiserror::Error;

use super::tokens;
use super::{Charset, WmlVersion};

/// Deepest element nesting the decoder accepts.
pub const MAX_DEPTH: usize = 64;

/// Why a WBXML document could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecompileError {
    /// The input ends inside the header, a string or a token's operand.
    #[error("truncated WBXML at byte {offset}")]
    Truncated {
        /// Where more input was needed.
        offset: usize,
    },
    /// An `mb_u_int32` longer than five bytes or above 2^32 - 1.
    #[error("malformed mb_u_int32 at byte {offset}")]
    BadMbUInt32 {
        /// Where it starts.
        offset: usize,
    },
    /// A token that WML's code page 0 does not define.
    #[error("unknown token {token:#04x} at byte {offset}")]
    UnknownToken {
        /// The token.
        token: u8,
        /// Where it is.
        offset: usize,
    },
    /// A token that is not allowed where it appears.
    #[error("unexpected token {token:#04x} at byte {offset}")]
    UnexpectedToken {
        /// The token.
        token: u8,
        /// Where it is.
        offset: usize,
    },
    /// A switch to a code page WML does not have.
    #[error("unknown code page {page} at byte {offset}")]
    UnknownCodePage {
        /// The page.
        page: u8,
        /// Where the switch is.
        offset: usize,
    },
    /// A string-table reference outside the table (or to an unterminated
    /// string).
    #[error("string table offset {offset} out of range (table is {len} bytes)")]
    StringTableOffset {
        /// The offset.
        offset: u32,
        /// The table's length.
        len: usize,
    },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A charset other than UTF-8, US-ASCII or ISO-8859-1.
    #[error("unsupported charset (MIBenum {0})")]
    UnsupportedCharset(u32),
    /// A public identifier that is not WML 1.1, 1.2 or 1.3.
    #[error("not a WML document (public identifier {0})")]
    UnknownPublicId(String),
    /// A string that is not valid in the document's charset.
    #[error("string at byte {offset} is not valid in the document charset")]
    InvalidString {
        /// Where it starts.
        offset: usize,
    },
    /// A character XML 1.0 cannot hold.
    #[error("character U+{0:04X} cannot appear in XML")]
    InvalidCharacter(u32),
    /// A literal tag or attribute name that is not an XML name.
    #[error("invalid element or attribute name {0:?}")]
    InvalidName(String),
    /// A variable name that is not `( "_" | alpha ) *( "_" | alnum )`.
    #[error("invalid variable name {0:?}")]
    InvalidVariableName(String),
    /// The same attribute twice on one element.
    #[error("attribute {0:?} repeated")]
    DuplicateAttribute(String),
    /// Bytes after the root element.
    #[error("data after the root element at byte {offset}")]
    TrailingData {
        /// Where it starts.
        offset: usize,
    },
}

/// A decoded WML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// WBXML version byte (0x01 = 1.1, 0x03 = 1.3).
    pub wbxml_version: u8,
    /// WML version from the public identifier.
    pub version: WmlVersion,
    /// Charset of the strings.
    pub charset: Charset,
    /// The string table, as bytes.
    pub string_table: Vec<u8>,
    /// The root element.
    pub root: Element,
}

/// A decoded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Tag name.
    pub name: String,
    /// Attributes in document order.
    pub attributes: Vec<Attribute>,
    /// Content in document order.
    pub content: Vec<Content>,
}

/// A decoded attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// Its value.
    pub value: Vec<Piece>,
}

/// Element content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A child element.
    Element(Element),
    /// Character data (consecutive strings merged).
    Text(Vec<Piece>),
}

/// A piece of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A variable reference.
    Variable {
        /// Variable name.
        name: String,
        /// Substitution mode.
        escape: Escape,
    },
}

/// Variable substitution mode (WAP-191-WML §10.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// URL-escape the value (`:escape`, extension token 0).
    Escape,
    /// URL-unescape the value (`:unesc`, extension token 1).
    Unescape,
    /// Substitute as is (`:noesc`, extension token 2).
    NoEscape,
}

/// Decodes WMLC into well-formed WML text.
pub fn decompile(wbxml: &[u8]) -> Result<String, DecompileError> {
    Ok(decode(wbxml)?.to_wml())
}

/// Decodes WMLC into a [`Document`].
pub fn decode(wbxml: &[u8]) -> Result<Document, DecompileError> {
    let mut r = Reader {
        bytes: wbxml,
        at: 0,
    };
    let wbxml_version = r.byte()?;
    let public_id = r.mb_u_int32()?;
    let index = if public_id == 0 {
        Some(r.mb_u_int32()?)
    } else {
        None
    };
    let mib = if wbxml_version == 0 {
        106
    } else {
        r.mb_u_int32()?
    };
    let charset = Charset::from_mib_enum(mib).ok_or(DecompileError::UnsupportedCharset(mib))?;
    let table_len = r.mb_u_int32()?;
    let table = r.take(usize::try_from(table_len).unwrap_or(usize::MAX))?;
    let mut d = Decoder {
        r,
        table,
        charset,
        page: 0,
    };
    let version = match index {
        None => WmlVersion::from_public_id(public_id)
            .ok_or_else(|| DecompileError::UnknownPublicId(format!("{public_id:#x}")))?,
        Some(index) => {
            let fpi = d.table_string(index)?;
            WmlVersion::from_fpi(&fpi).ok_or(DecompileError::UnknownPublicId(fpi))?
        }
    };
    let root = d.body()?;
    Ok(Document {
        wbxml_version,
        version,
        charset,
        string_table: table.to_vec(),
        root,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecompileError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(DecompileError::Truncated { offset: self.at })?;
        self.at += 1;
        Ok(b)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecompileError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecompileError::Truncated { offset: self.at })?;
        let s = self
            .bytes
            .get(self.at..end)
            .ok_or(DecompileError::Truncated { offset: self.at })?;
        self.at = end;
        Ok(s)
    }

    /// WAP-192-WBXML §5.1: at most five bytes, value within 32 bits.
    fn mb_u_int32(&mut self) -> Result<u32, DecompileError> {
        let start = self.at;
        let mut value: u64 = 0;
        for _ in 0..5 {
            let b = self.byte()?;
            value = (value << 7) | u64::from(b & 0x7F);
            if b & 0x80 == 0 {
                return u32::try_from(value)
                    .map_err(|_| DecompileError::BadMbUInt32 { offset: start });
            }
        }
        Err(DecompileError::BadMbUInt32 { offset: start })
    }

    /// A NUL-terminated string's bytes (without the NUL).
    fn terminated(&mut self) -> Result<&'a [u8], DecompileError> {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecompileError::Truncated {
                offset: self.bytes.len(),
            })?;
        let s = self.take(len)?;
        self.at += 1;
        Ok(s)
    }
}

struct Decoder<'a> {
    r: Reader<'a>,
    table: &'a [u8],
    charset: Charset,
    page: u8,
}

/// What the content loop is filling.
enum Slot {
    Root,
    Child,
}

impl Decoder<'_> {
    fn text(&self, bytes: &[u8], offset: usize) -> Result<String, DecompileError> {
        let s = match self.charset {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map_err(|_| DecompileError::InvalidString { offset })?
                .to_string(),
            Charset::Iso8859_1 => bytes.iter().map(|&b| char::from(b)).collect(),
        };
        if let Some(c) = s.chars().find(|&c| !is_xml_char(c)) {
            return Err(DecompileError::InvalidCharacter(u32::from(c)));
        }
        Ok(s)
    }

    fn table_string(&self, offset: u32) -> Result<String, DecompileError> {
        let out_of_range = DecompileError::StringTableOffset {
            offset,
            len: self.table.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range.clone())?;
        let rest = self.table.get(start..).ok_or(out_of_range.clone())?;
        let len = rest.iter().position(|&b| b == 0).ok_or(out_of_range)?;
        self.text(rest.get(..len).unwrap_or_default(), start)
    }

    fn inline_string(&mut self) -> Result<String, DecompileError> {
        let at = self.r.at;
        let bytes = self.r.terminated()?;
        self.text(bytes, at)
    }

    fn entity(&mut self) -> Result<String, DecompileError> {
        let cp = self.r.mb_u_int32()?;
        let c = char::from_u32(cp)
            .filter(|&c| is_xml_char(c))
            .ok_or(DecompileError::InvalidCharacter(cp))?;
        Ok(c.to_string())
    }

    fn switch_page(&mut self) -> Result<(), DecompileError> {
        let offset = self.r.at;
        let page = self.r.byte()?;
        if page != 0 {
            return Err(DecompileError::UnknownCodePage { page, offset });
        }
        self.page = page;
        Ok(())
    }

    /// A piece of character data for the token just read, if it is one.
    fn piece(&mut self, token: u8) -> Result<Option<Piece>, DecompileError> {
        let piece = match token {
            tokens::ENTITY => Piece::Text(self.entity()?),
            tokens::STR_I => Piece::Text(self.inline_string()?),
            tokens::STR_T => {
                let offset = self.r.mb_u_int32()?;
                Piece::Text(self.table_string(offset)?)
            }
            tokens::EXT_I_0 | tokens::EXT_I_1 | tokens::EXT_I_2 => Piece::Variable {
                escape: escape_of(token - tokens::EXT_I_0),
                name: variable_name(self.inline_string()?)?,
            },
            tokens::EXT_T_0 | tokens::EXT_T_1 | tokens::EXT_T_2 => {
                let offset = self.r.mb_u_int32()?;
                Piece::Variable {
                    escape: escape_of(token - tokens::EXT_T_0),
                    name: variable_name(self.table_string(offset)?)?,
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(piece))
    }

    /// The body: optional PIs, the root element, optional PIs.
    fn body(&mut self) -> Result<Element, DecompileError> {
        let mut root = None;
        let mut stack: Vec<Element> = Vec::new();
        loop {
            let offset = self.r.at;
            let Some(token) = self.r.peek() else {
                // The body ends inside an element or before the root.
                return match root {
                    Some(root) if stack.is_empty() => Ok(root),
                    _ => Err(DecompileError::Truncated { offset }),
                };
            };
            self.r.at += 1;
            let slot = if stack.is_empty() {
                Slot::Root
            } else {
                Slot::Child
            };
            match token {
                tokens::SWITCH_PAGE => self.switch_page()?,
                tokens::PI => self.skip_pi()?,
                tokens::END => {
                    let done = stack
                        .pop()
                        .ok_or(DecompileError::UnexpectedToken { token, offset })?;
                    attach(&mut stack, &mut root, done);
                }
                tokens::EXT_0 | tokens::EXT_1 | tokens::EXT_2 | tokens::OPAQUE => {
                    return Err(DecompileError::UnknownToken { token, offset });
                }
                _ => {
                    if let Some(piece) = self.piece(token)? {
                        let Some(parent) = stack.last_mut() else {
                            return Err(DecompileError::UnexpectedToken { token, offset });
                        };
                        push_piece(&mut parent.content, piece);
                        continue;
                    }
                    if matches!(slot, Slot::Root) && root.is_some() {
                        return Err(DecompileError::TrailingData { offset });
                    }
                    let element = self.tag(token, offset)?;
                    if token & tokens::TAG_HAS_CONTENT != 0 {
                        if stack.len() >= MAX_DEPTH {
                            return Err(DecompileError::TooDeep { limit: MAX_DEPTH });
                        }
                        stack.push(element);
                    } else {
                        attach(&mut stack, &mut root, element);
                    }
                }
            }
        }
    }

    /// A tag token and its attributes.
    fn tag(&mut self, token: u8, offset: usize) -> Result<Element, DecompileError> {
        let name = if token & 0x3F == tokens::LITERAL {
            let index = self.r.mb_u_int32()?;
            xml_name(self.table_string(index)?)?
        } else {
            tokens::tag_name(token & 0x3F)
                .filter(|_| self.page == 0)
                .ok_or(DecompileError::UnknownToken { token, offset })?
                .to_string()
        };
        let mut element = Element {
            name,
            attributes: Vec::new(),
            content: Vec::new(),
        };
        if token & tokens::TAG_HAS_ATTRIBUTES != 0 {
            self.attributes(&mut element.attributes)?;
        }
        Ok(element)
    }

    /// Attribute tokens up to the END of the list.
    fn attributes(&mut self, attributes: &mut Vec<Attribute>) -> Result<(), DecompileError> {
        loop {
            let offset = self.r.at;
            let token = self.r.byte()?;
            match token {
                tokens::END => return Ok(()),
                tokens::SWITCH_PAGE => self.switch_page()?,
                tokens::LITERAL => {
                    let index = self.r.mb_u_int32()?;
                    let name = xml_name(self.table_string(index)?)?;
                    start_attribute(attributes, name, "")?;
                }
                tokens::PI | tokens::OPAQUE | tokens::EXT_0 | tokens::EXT_1 | tokens::EXT_2 => {
                    return Err(DecompileError::UnexpectedToken { token, offset });
                }
                _ => {
                    if let Some(piece) = self.piece(token)? {
                        let current = attributes
                            .last_mut()
                            .ok_or(DecompileError::UnexpectedToken { token, offset })?;
                        push_piece(&mut current.value, piece);
                    } else if token < 0x80 {
                        let start = tokens::attribute_start(token)
                            .ok_or(DecompileError::UnknownToken { token, offset })?;
                        start_attribute(attributes, start.name.to_string(), start.prefix)?;
                    } else {
                        let text = tokens::value_text(token)
                            .ok_or(DecompileError::UnknownToken { token, offset })?;
                        let current = attributes
                            .last_mut()
                            .ok_or(DecompileError::UnexpectedToken { token, offset })?;
                        push_piece(&mut current.value, Piece::Text(text.to_string()));
                    }
                }
            }
        }
    }

    /// A processing instruction (target and value tokens up to END), which
    /// WML has no use for: read and dropped.
    fn skip_pi(&mut self) -> Result<(), DecompileError> {
        let mut ignored = Vec::new();
        self.attributes(&mut ignored)
    }
}

fn escape_of(index: u8) -> Escape {
    match index {
        0 => Escape::Escape,
        1 => Escape::Unescape,
        _ => Escape::NoEscape,
    }
}

/// `name` if it is a WML variable name (WAP-191-WML §10.3.1).
fn variable_name(name: String) -> Result<String, DecompileError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if ok {
        Ok(name)
    } else {
        Err(DecompileError::InvalidVariableName(name))
    }
}

fn attach(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.content.push(Content::Element(element)),
        None => *root = Some(element),
    }
}

fn start_attribute(
    attributes: &mut Vec<Attribute>,
    name: String,
    prefix: &str,
) -> Result<(), DecompileError> {
    if attributes.iter().any(|a| a.name == name) {
        return Err(DecompileError::DuplicateAttribute(name));
    }
    let mut value = Vec::new();
    if !prefix.is_empty() {
        value.push(Piece::Text(prefix.to_string()));
    }
    attributes.push(Attribute { name, value });
    Ok(())
}

/// Appends a piece, merging text into a preceding text piece.
fn push_piece<T: PieceSink>(sink: &mut T, piece: Piece) {
    sink.push_piece(piece);
}

trait PieceSink {
    fn push_piece(&mut self, piece: Piece);
}

impl PieceSink for Vec<Piece> {
    fn push_piece(&mut self, piece: Piece) {
        if let (Piece::Text(new), Some(Piece::Text(last))) = (&piece, self.last_mut()) {
            last.push_str(new);
            return;
        }
        self.push(piece);
    }
}

impl PieceSink for Vec<Content> {
    fn push_piece(&mut self, piece: Piece) {
        if let Some(Content::Text(pieces)) = self.last_mut() {
            pieces.push_piece(piece);
        } else {
            self.push(Content::Text(vec![piece]));
        }
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `name` if it is an XML name (ASCII subset: letters, digits, `_ : . -`).
fn xml_name(name: String) -> Result<String, DecompileError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'));
    if ok {
        Ok(name)
    } else {
        Err(DecompileError::InvalidName(name))
    }
}

// ---- WML text output -------------------------------------------------------

impl Document {
    /// The document as WML text: XML declaration (UTF-8), DOCTYPE of its
    /// version, and the elements without added white space.
    pub fn to_wml(&self) -> String {
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE wml PUBLIC \"{}\" \"{}\">\n",
            self.version.fpi(),
            self.version.dtd_url()
        );
        write_element(&mut out, &self.root);
        out.push('\n');
        out
    }
}

/// Writes an element with an explicit stack instead of recursion.
fn write_element(out: &mut String, root: &Element) {
    enum Step<'a> {
        Open(&'a Element),
        Text(&'a [Piece]),
        Close(&'a str),
    }
    let mut steps = vec![Step::Open(root)];
    while let Some(step) = steps.pop() {
        match step {
            Step::Close(name) => {
                out.push_str("</");
                out.push_str(name);
                out.push('>');
            }
            Step::Text(pieces) => write_pieces(out, pieces, Escape::NoEscape, false),
            Step::Open(e) => {
                out.push('<');
                out.push_str(&e.name);
                for a in &e.attributes {
                    out.push(' ');
                    out.push_str(&a.name);
                    out.push_str("=\"");
                    let default = if a.name == "href" {
                        Escape::Escape
                    } else {
                        Escape::NoEscape
                    };
                    write_pieces(out, &a.value, default, true);
                    out.push('"');
                }
                if e.content.is_empty() {
                    out.push_str("/>");
                    continue;
                }
                out.push('>');
                steps.push(Step::Close(&e.name));
                for c in e.content.iter().rev() {
                    steps.push(match c {
                        Content::Element(child) => Step::Open(child),
                        Content::Text(pieces) => Step::Text(pieces),
                    });
                }
            }
        }
    }
}

fn write_pieces(out: &mut String, pieces: &[Piece], default: Escape, in_attribute: bool) {
    for p in pieces {
        match p {
            Piece::Text(t) => {
                for c in t.chars() {
                    match c {
                        '&' => out.push_str("&amp;"),
                        '<' => out.push_str("&lt;"),
                        '>' => out.push_str("&gt;"),
                        '"' if in_attribute => out.push_str("&quot;"),
                        '\t' | '\n' if in_attribute => {
                            out.push_str(&format!("&#{};", u32::from(c)))
                        }
                        '\r' => out.push_str("&#13;"),
                        '$' => out.push_str("$$"),
                        c => out.push(c),
                    }
                }
            }
            Piece::Variable { name, escape } => {
                out.push_str("$(");
                out.push_str(name);
                if *escape != default {
                    out.push_str(match escape {
                        Escape::Escape => ":escape",
                        Escape::Unescape => ":unesc",
                        Escape::NoEscape => ":noesc",
                    });
                }
                out.push(')');
            }
        }
    }
}
