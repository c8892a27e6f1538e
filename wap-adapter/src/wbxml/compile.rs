//! The WML -> WBXML compiler (WAP-192-WBXML §5, WAP-191-WML §14).
//!
//! Encoding choices follow kannel's `wml_compiler.c` so the output can be
//! compared byte for byte with it: the string table holds the text and
//! attribute-value strings (alphanumeric-trimmed, longer than four bytes)
//! that occur more than once, then the repeated words of the others, then
//! variable names and literal tag and attribute names as they are met; each
//! string is searched for table entries in table order (first occurrence of
//! each); attribute values take the first matching attribute-start prefix
//! and then one pass over the value tokens in list order; text is
//! whitespace-normalised as kannel does (runs of three or more white-space
//! characters become one space, a run of two becomes two spaces, and the
//! ends are trimmed unless a neighbour is an inline element).
//!
//! Deliberate differences from kannel (see `docs/architecture.md`):
//! `pre` is tokenised (0x1B) and its white space kept; text next to `a`,
//! `anchor` and `img` keeps its edge space as it does next to emphasis
//! elements; `xml:lang` and `xml:space` are tokenised (kannel writes literal
//! `lang` and `space`); malformed variables and bad `setvar` names are errors
//! instead of being dropped; characters ISO-8859-1 cannot hold become ENTITY
//! tokens; the string table is written in the document charset; `Www.` is
//! not encoded as the `www.` token.

use std::collections::HashMap;

use thiserror::Error;

use super::source::{self, Element, Node};
use super::tokens::{self, AttributeStart};
use super::{push_mb_u_int32, Charset, WmlVersion};

/// The WBXML version byte written (WBXML 1.1, as kannel writes by default;
/// the 1.1 and 1.3 formats are the same for WML).
const WBXML_VERSION: u8 = 0x01;

/// Deepest element nesting the compiler accepts.
pub const MAX_SOURCE_DEPTH: usize = 64;

/// Strings of this many bytes or fewer never go into the string table.
const STRING_TABLE_MIN: usize = 4;

/// Options of [`compile_wml`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileOptions {
    /// Charset of the strings in the output.
    pub charset: Charset,
    /// Put repeated strings and variable names in the string table (true by
    /// default). When false, text and variables are inline (`STR_I`,
    /// `EXT_I_n`); literal tag or attribute names still use the table.
    pub string_table: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            charset: Charset::Utf8,
            string_table: true,
        }
    }
}

/// Why a deck could not be compiled.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompileError {
    /// The XML is not well-formed.
    #[error("WML is not well-formed XML at byte {position}: {message}")]
    Xml {
        /// Byte offset in the input.
        position: u64,
        /// The parser's message.
        message: String,
    },
    /// The XML declaration names an encoding other than UTF-8, US-ASCII or
    /// ISO-8859-1.
    #[error("unsupported input encoding {0}")]
    UnsupportedEncoding(String),
    /// An entity WML does not define.
    #[error("unknown entity &{0};")]
    UnknownEntity(String),
    /// No root element.
    #[error("no root element")]
    NoRootElement,
    /// Elements nested deeper than the limit.
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A `$` that does not start a valid variable reference.
    #[error("invalid variable reference in {text:?}")]
    InvalidVariable {
        /// The text holding it.
        text: String,
    },
    /// A `setvar` without a valid variable name.
    #[error("setvar with an invalid or missing name")]
    InvalidSetvarName,
    /// A `do` element with neither `name` nor `type`.
    #[error("do element with neither name nor type")]
    UnnamedDo,
    /// Two `do` elements of the same name in one card or template.
    #[error("two do elements named {0:?} in one card or template")]
    DuplicateDo(String),
}

/// Compiles a WML deck to WBXML (WMLC).
pub fn compile_wml(wml: &[u8], options: &CompileOptions) -> Result<Vec<u8>, CompileError> {
    let deck = source::parse(wml, MAX_SOURCE_DEPTH)?;
    let version = deck
        .public_id
        .as_deref()
        .and_then(WmlVersion::from_fpi)
        .unwrap_or(WmlVersion::Wml11);
    let mut encoder = Encoder {
        body: Vec::new(),
        table: StringTable::default(),
        charset: options.charset,
        use_table: options.string_table,
    };
    if options.string_table {
        encoder.build_string_table(&deck.root);
    }
    encoder.element(&deck.root, false)?;

    let mut out = vec![WBXML_VERSION];
    push_mb_u_int32(&mut out, version.public_id());
    push_mb_u_int32(&mut out, options.charset.mib_enum());
    push_mb_u_int32(&mut out, len_u32(encoder.table.bytes.len()));
    out.extend_from_slice(&encoder.table.bytes);
    out.extend_from_slice(&encoder.body);
    Ok(out)
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The string table being built: entries in insertion order with their
/// offsets, an index of them, and the encoded table.
#[derive(Debug, Default)]
struct StringTable {
    entries: Vec<(Vec<u8>, u32)>,
    index: HashMap<Vec<u8>, u32>,
    bytes: Vec<u8>,
}

impl StringTable {
    /// The offset of `s` (already encoded), adding it if new.
    fn add(&mut self, s: Vec<u8>) -> u32 {
        if let Some(offset) = self.index.get(&s) {
            return *offset;
        }
        let offset = len_u32(self.bytes.len());
        self.bytes.extend_from_slice(&s);
        self.bytes.push(0);
        self.index.insert(s.clone(), offset);
        self.entries.push((s, offset));
        offset
    }
}

/// Variable substitution mode (WAP-191-WML §10.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VarEscape {
    Escape,
    Unescape,
    NoEscape,
}

/// A piece of a string: text, or a variable reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Variable(String, VarEscape),
}

struct Encoder {
    body: Vec<u8>,
    table: StringTable,
    charset: Charset,
    use_table: bool,
}

impl Encoder {
    // ---- string table construction -------------------------------------

    /// Fills the table with the repeated strings, then the repeated words of
    /// the strings that did not repeat.
    fn build_string_table(&mut self, root: &Element) {
        let mut strings = Vec::new();
        collect_strings(root, &mut strings);
        let counted = count_unique(strings);
        let mut rejected = Vec::new();
        for (s, count) in counted {
            if count > 1 && s.len() > STRING_TABLE_MIN {
                self.add_table_string(&s);
            } else {
                rejected.push(s);
            }
        }
        let words = rejected
            .iter()
            .flat_map(|s| split_words(s).map(str::to_string))
            .collect();
        for (w, count) in count_unique(words) {
            if count > 1 && w.len() > STRING_TABLE_MIN {
                self.add_table_string(&w);
            }
        }
    }

    /// Adds a collected string if it can be held in the output charset
    /// without control characters (which could be mistaken for tokens).
    fn add_table_string(&mut self, s: &str) {
        if s.chars().any(|c| c.is_control()) {
            return;
        }
        if let Some(bytes) = self.encode_all(s) {
            self.table.add(bytes);
        }
    }

    /// `s` in the output charset, if every character fits.
    fn encode_all(&self, s: &str) -> Option<Vec<u8>> {
        match self.charset {
            Charset::Utf8 => Some(s.as_bytes().to_vec()),
            Charset::Iso8859_1 => s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect(),
        }
    }

    // ---- elements and attributes ---------------------------------------

    fn element(&mut self, e: &Element, in_pre: bool) -> Result<(), CompileError> {
        if e.name == "card" || e.name == "template" {
            check_do_names(e)?;
        }
        if e.name == "setvar" && !setvar_name_is_valid(e) {
            return Err(CompileError::InvalidSetvarName);
        }
        let has_content = match e.children.as_slice() {
            [] => false,
            [Node::Text(t)] => !t.bytes().all(is_c_space),
            _ => true,
        };
        let mut bits = 0;
        if has_content {
            bits |= tokens::TAG_HAS_CONTENT;
        }
        if !e.attributes.is_empty() {
            bits |= tokens::TAG_HAS_ATTRIBUTES;
        }
        match tokens::tag_token(&e.name) {
            Some(token) => self.body.push(token | bits),
            None => {
                self.body.push(tokens::LITERAL | bits);
                let offset = self.literal_name(&e.name);
                push_mb_u_int32(&mut self.body, offset);
            }
        }
        for (name, value) in &e.attributes {
            self.attribute(name, value)?;
        }
        if !e.attributes.is_empty() {
            self.body.push(tokens::END);
        }
        if has_content {
            let in_pre = in_pre || e.name == "pre";
            for (i, child) in e.children.iter().enumerate() {
                let before = i.checked_sub(1).and_then(|j| e.children.get(j));
                let after = e.children.get(i + 1);
                match child {
                    Node::Element(c) => self.element(c, in_pre)?,
                    Node::Text(t) => self.text(t, in_pre, before, after)?,
                    Node::CData(c) => self.apply_string_table(c),
                    Node::Other => {}
                }
            }
            self.body.push(tokens::END);
        }
        Ok(())
    }

    /// The table offset of a tag or attribute name without a token.
    fn literal_name(&mut self, name: &str) -> u32 {
        let bytes = self
            .encode_all(name)
            .unwrap_or_else(|| name.as_bytes().to_vec());
        self.table.add(bytes)
    }

    fn attribute(&mut self, name: &str, value: &str) -> Result<(), CompileError> {
        let starts = || tokens::ATTRIBUTE_STARTS.iter().filter(|a| a.name == name);
        let prefixed: Option<&AttributeStart> = if value.is_empty() {
            None
        } else {
            starts().find(|a| !a.prefix.is_empty() && value.starts_with(a.prefix))
        };
        let (token, coded) = match prefixed.or_else(|| starts().find(|a| a.prefix.is_empty())) {
            Some(a) if prefixed.is_some() => (a.token, a.prefix.len()),
            Some(a) => (a.token, 0),
            None => {
                self.body.push(tokens::LITERAL);
                let offset = self.literal_name(name);
                push_mb_u_int32(&mut self.body, offset);
                (tokens::LITERAL, 0)
            }
        };
        if token != tokens::LITERAL {
            self.body.push(token);
        }
        let rest = value.get(coded..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(());
        }
        let default_escape = if name == "href" {
            VarEscape::Escape
        } else {
            VarEscape::NoEscape
        };
        if rest.contains('$') {
            return self.string_with_variables(rest, default_escape);
        }
        let value_tokens = if tokens::URL_ATTRIBUTE_STARTS.contains(&token) {
            tokens::URL_VALUE_TOKENS
        } else {
            tokens::VALUE_TOKENS
        };
        let mut remaining = rest;
        for (text, token) in value_tokens {
            if let Some(at) = remaining.find(text) {
                if at > 0 {
                    self.apply_string_table(remaining.get(..at).unwrap_or_default());
                }
                self.body.push(*token);
                remaining = remaining.get(at + text.len()..).unwrap_or_default();
            }
        }
        if !remaining.is_empty() {
            self.apply_string_table(remaining);
        }
        Ok(())
    }

    // ---- text ----------------------------------------------------------

    fn text(
        &mut self,
        text: &str,
        in_pre: bool,
        before: Option<&Node>,
        after: Option<&Node>,
    ) -> Result<(), CompileError> {
        let text = if in_pre {
            text.to_string()
        } else {
            let shrunk = shrink_blanks(text);
            if is_inline(before) || is_inline(after) {
                shrunk
            } else {
                strip_blanks(&shrunk).to_string()
            }
        };
        if text.is_empty() {
            return Ok(());
        }
        self.string_with_variables(&text, VarEscape::NoEscape)
    }

    /// Encodes text that may hold variable references.
    fn string_with_variables(
        &mut self,
        text: &str,
        default_escape: VarEscape,
    ) -> Result<(), CompileError> {
        let pieces = split_variables(text, default_escape)?;
        for (i, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Text(t) => {
                    // kannel adds a variable's name to the string table
                    // before it writes the text in front of the variable,
                    // so that text may refer to the name.
                    if let (true, Some(Piece::Variable(name, _))) =
                        (self.use_table, pieces.get(i + 1))
                    {
                        self.literal_name(name);
                    }
                    self.apply_string_table(t);
                }
                Piece::Variable(name, escape) => self.variable(name, *escape),
            }
        }
        Ok(())
    }

    fn variable(&mut self, name: &str, escape: VarEscape) {
        let index = match escape {
            VarEscape::Escape => 0,
            VarEscape::Unescape => 1,
            VarEscape::NoEscape => 2,
        };
        if self.use_table {
            let offset = self.literal_name(name);
            self.body.push(tokens::EXT_T_0 + index);
            push_mb_u_int32(&mut self.body, offset);
        } else {
            self.body.push(tokens::EXT_I_0 + index);
            self.push_terminated(name);
        }
    }

    /// Writes `text` as inline strings and string-table references; in
    /// ISO-8859-1, characters it cannot hold become ENTITY tokens.
    fn apply_string_table(&mut self, text: &str) {
        if self.charset == Charset::Iso8859_1 {
            let mut run = String::new();
            for c in text.chars() {
                if u32::from(c) <= 0xFF {
                    run.push(c);
                } else {
                    if !run.is_empty() {
                        self.apply_encoded(&std::mem::take(&mut run));
                    }
                    self.body.push(tokens::ENTITY);
                    push_mb_u_int32(&mut self.body, u32::from(c));
                }
            }
            if !run.is_empty() || text.is_empty() {
                self.apply_encoded(&run);
            }
        } else {
            self.apply_encoded(text);
        }
    }

    /// Writes a string whose characters all fit the charset: each table
    /// entry longer than four bytes, in table order, replaces its first
    /// occurrence.
    fn apply_encoded(&mut self, text: &str) {
        let Some(mut s) = self.encode_all(text) else {
            return;
        };
        if !self.use_table {
            self.body.push(tokens::STR_I);
            self.body.extend_from_slice(&s);
            self.body.push(0);
            return;
        }
        let mut starts_with_reference = false;
        let mut ends_with_reference = false;
        for (entry, offset) in &self.table.entries {
            if entry.len() <= STRING_TABLE_MIN {
                continue;
            }
            let Some(at) = find(&s, entry) else {
                continue;
            };
            let mut reference = Vec::with_capacity(8);
            if s.len() == entry.len() {
                reference.push(tokens::STR_T);
                push_mb_u_int32(&mut reference, *offset);
                s = reference;
                starts_with_reference = true;
                ends_with_reference = true;
                continue;
            }
            if at + entry.len() == s.len() {
                ends_with_reference = true;
            }
            if at == 0 {
                starts_with_reference = true;
            }
            s.drain(at..at + entry.len());
            if at > 0 {
                reference.push(0);
            }
            reference.push(tokens::STR_T);
            push_mb_u_int32(&mut reference, *offset);
            if at < s.len() {
                reference.push(tokens::STR_I);
            }
            s.splice(at..at, reference);
        }
        if !starts_with_reference {
            self.body.push(tokens::STR_I);
        }
        self.body.extend_from_slice(&s);
        if !ends_with_reference {
            self.body.push(0);
        }
    }

    fn push_terminated(&mut self, s: &str) {
        let bytes = self.encode_all(s).unwrap_or_else(|| s.as_bytes().to_vec());
        self.body.extend_from_slice(&bytes);
        self.body.push(0);
    }
}

// ---- helpers -------------------------------------------------------------

/// C `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// kannel's white-space shrinking: every white-space character becomes a
/// space, and a run of three or more becomes one space (a run of two stays
/// two spaces).
fn shrink_blanks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = 0usize;
    for c in text.chars() {
        if is_c_space_char(c) {
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

fn is_c_space_char(c: char) -> bool {
    c.is_ascii() && is_c_space(c as u8)
}

fn strip_blanks(text: &str) -> &str {
    text.trim_matches(is_c_space_char)
}

/// Trims bytes that are not ASCII alphanumerics from both ends (C `isalnum`
/// in the C locale, byte-wise: a trailing non-ASCII character goes whole).
fn strip_non_alphanumerics(text: &str) -> &str {
    text.trim_matches(|c: char| !c.is_ascii_alphanumeric())
}

/// Words separated by white space.
fn split_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(is_c_space_char).filter(|w| !w.is_empty())
}

/// Unique strings with their counts, in order of first appearance.
fn count_unique(strings: Vec<String>) -> Vec<(String, usize)> {
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for s in strings {
        match position.get(&s).and_then(|&i| counted.get_mut(i)) {
            Some((_, n)) => *n += 1,
            None => {
                position.insert(s.clone(), counted.len());
                counted.push((s, 1));
            }
        }
    }
    counted
}

/// The string-table candidates of a subtree, in document order: attribute
/// values, then text, white-space-normalised and trimmed.
fn collect_strings(e: &Element, out: &mut Vec<String>) {
    for (_, value) in &e.attributes {
        if !value.is_empty() {
            push_candidate(value, out);
        }
    }
    for child in &e.children {
        match child {
            Node::Element(c) => collect_strings(c, out),
            Node::Text(t) => push_candidate(t, out),
            Node::CData(_) | Node::Other => {}
        }
    }
}

fn push_candidate(text: &str, out: &mut Vec<String>) {
    let shrunk = shrink_blanks(text);
    let mut s = strip_blanks(&shrunk);
    if s.len() > STRING_TABLE_MIN {
        s = strip_non_alphanumerics(s);
    }
    if s.len() > STRING_TABLE_MIN {
        out.push(s.to_string());
    }
}

/// Elements whose neighbouring text keeps its edge white space.
fn is_inline(node: Option<&Node>) -> bool {
    matches!(node, Some(Node::Element(e)) if matches!(
        e.name.as_str(),
        "b" | "big" | "em" | "i" | "small" | "strong" | "u" | "a" | "anchor" | "img"
    ))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn attribute<'a>(e: &'a Element, name: &str) -> Option<&'a str> {
    e.attributes
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn check_do_names(e: &Element) -> Result<(), CompileError> {
    let mut seen: Vec<&str> = Vec::new();
    for child in &e.children {
        let Node::Element(d) = child else { continue };
        if d.name != "do" {
            continue;
        }
        let name = attribute(d, "name")
            .or_else(|| attribute(d, "type"))
            .ok_or(CompileError::UnnamedDo)?;
        if seen.contains(&name) {
            return Err(CompileError::DuplicateDo(name.to_string()));
        }
        seen.push(name);
    }
    Ok(())
}

fn setvar_name_is_valid(e: &Element) -> bool {
    attribute(e, "name").is_some_and(is_variable_name)
}

/// WAP-191-WML §10.3.1: `( "_" | alpha ) *( "_" | alnum )`.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Splits text into literal pieces (with `$$` as `$`) and variables.
fn split_variables(text: &str, default_escape: VarEscape) -> Result<Vec<Piece>, CompileError> {
    let invalid = || CompileError::InvalidVariable {
        text: text.to_string(),
    };
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(rest.get(..at).unwrap_or_default());
        let after = rest.get(at + 1..).unwrap_or_default();
        let (name, escape, consumed) = if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        } else if let Some(tail) = after.strip_prefix('(') {
            let close = tail.find(')').ok_or_else(invalid)?;
            let inner = tail.get(..close).unwrap_or_default();
            let (name, escape) = match inner.split_once(':') {
                Some((name, mode)) => {
                    let escape = match mode.to_ascii_lowercase().as_str() {
                        "escape" | "e" => VarEscape::Escape,
                        "unesc" | "u" => VarEscape::Unescape,
                        "noesc" | "n" => VarEscape::NoEscape,
                        _ => return Err(invalid()),
                    };
                    (name, escape)
                }
                None => (inner, default_escape),
            };
            (name, escape, close + 2)
        } else {
            let end = after
                .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
                .unwrap_or(after.len());
            (after.get(..end).unwrap_or_default(), default_escape, end)
        };
        if !is_variable_name(name) {
            return Err(invalid());
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Variable(name.to_string(), escape));
        rest = after.get(consumed..).unwrap_or_default();
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(wml: &str) -> Vec<u8> {
        compile_wml(wml.as_bytes(), &CompileOptions::default()).unwrap()
    }

    #[test]
    fn kannel_hello_deck() {
        // The bytes kannel's wml_tester writes for its hello.wml.
        let wml = r#"<?xml version="1.0"?>
<!DOCTYPE wml PUBLIC "-//WAPFORUM//DTD WML 1.1//EN"
 "http://www.wapforum.org/DTD/wml_1.1.xml">
<wml>
<card id="main" title="Hello, world" newcontext="true">
        <p>Hello, world.</p>
</card>
</wml>"#;
        let expected = [
            0x01, 0x04, 0x6a, 0x0d, b'H', b'e', b'l', b'l', b'o', b',', b' ', b'w', b'o', b'r',
            b'l', b'd', 0x00, 0x7f, 0xe7, 0x55, 0x03, b'm', b'a', b'i', b'n', 0x00, 0x36, 0x83,
            0x00, 0x23, 0x01, 0x60, 0x83, 0x00, 0x03, b'.', 0x00, 0x01, 0x01, 0x01,
        ];
        assert_eq!(compile(wml), expected);
    }

    #[test]
    fn shrink_blanks_matches_kannel() {
        assert_eq!(shrink_blanks("a  b\n c   d\te \n\n f"), "a  b  c d e f");
        assert_eq!(shrink_blanks("\u{A0}x"), "\u{A0}x");
    }

    #[test]
    fn variables_split_and_validate() {
        let p = split_variables("a$x-$(y:u)$$b$(z)", VarEscape::NoEscape).unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text("a".into()),
                Piece::Variable("x".into(), VarEscape::NoEscape),
                Piece::Text("-".into()),
                Piece::Variable("y".into(), VarEscape::Unescape),
                Piece::Text("$b".into()),
                Piece::Variable("z".into(), VarEscape::NoEscape),
            ]
        );
        for bad in ["$", "$ x", "$(x", "$()", "$(x:bogus)", "$(1a)", "$(a-b)"] {
            assert!(
                matches!(
                    split_variables(bad, VarEscape::NoEscape),
                    Err(CompileError::InvalidVariable { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn variables_inline_without_string_table() {
        let out = compile_wml(
            b"<wml><card><p>$(n:e)</p></card></wml>",
            &CompileOptions {
                charset: Charset::Utf8,
                string_table: false,
            },
        )
        .unwrap();
        assert_eq!(
            out,
            [0x01, 0x04, 0x6a, 0x00, 0x7f, 0x67, 0x60, 0x40, b'n', 0, 0x01, 0x01, 0x01]
        );
    }

    #[test]
    fn latin1_entities_for_unencodable_characters() {
        let out = compile_wml(
            "<wml><card><p>é€</p></card></wml>".as_bytes(),
            &CompileOptions {
                charset: Charset::Iso8859_1,
                string_table: true,
            },
        )
        .unwrap();
        assert_eq!(
            out,
            [
                0x01, 0x04, 0x04, 0x00, 0x7f, 0x67, 0x60, 0x03, 0xE9, 0x00, 0x02, 0xC1, 0x2C, 0x01,
                0x01, 0x01
            ]
        );
    }

    #[test]
    fn semantic_errors() {
        assert_eq!(
            compile_wml(
                b"<wml><card><do type=\"a\"/><do type=\"a\"/></card></wml>",
                &CompileOptions::default()
            ),
            Err(CompileError::DuplicateDo("a".into()))
        );
        assert_eq!(
            compile_wml(
                b"<wml><card><setvar name=\"1x\" value=\"\"/></card></wml>",
                &CompileOptions::default()
            ),
            Err(CompileError::InvalidSetvarName)
        );
    }
}
