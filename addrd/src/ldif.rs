//! An LDIF (RFC 2849) reader for content records: the file format of the
//! embedded directory, the same file `ldapadd`/`slapadd` load into slapd.
//!
//! [`parse`] turns a whole file into [`LdifEntry`]s: an optional
//! `version: 1` line, records separated by blank lines, `#` comments
//! (folded comment lines included), line folding (a line that starts with
//! one space continues the previous one), `attr: value`, `attr:: base64`,
//! multi-valued attributes, case-insensitive attribute names, `\n` or
//! `\r\n` line ends. Change records other than `changetype: add` and
//! `attr:< URL` values (which would make the reader open files) are refused
//! with a typed error. Every error names the line it was found on; no input
//! makes the reader panic.
//!
//! No well-kept Rust crate reads LDIF (crates.io has FFI bindings to
//! OpenLDAP's C `libldap` only), hence this module.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;

/// The largest LDIF file the reader accepts: far above any organisation's
/// directory, low enough that a wrong path cannot exhaust memory.
pub const MAX_INPUT_LEN: usize = 256 * 1024 * 1024;

/// One content record: a DN and its attributes.
#[derive(Clone, PartialEq, Eq)]
pub struct LdifEntry {
    /// The DN as written (base64-decoded when given with `dn::`).
    pub dn: String,
    /// The line the record starts on (1-based).
    pub line: usize,
    /// Attribute descriptions, lowercased, to their values in file order.
    attributes: BTreeMap<String, Vec<Vec<u8>>>,
}

impl LdifEntry {
    /// The values of `attribute` (case-insensitive), in file order.
    pub fn values(&self, attribute: &str) -> &[Vec<u8>] {
        self.attributes
            .get(&attribute.to_ascii_lowercase())
            .map_or(&[], Vec::as_slice)
    }

    /// The values of `attribute` as UTF-8 text.
    pub fn text_values(&self, attribute: &str) -> Result<Vec<&str>, ValueError> {
        self.values(attribute)
            .iter()
            .map(|v| {
                std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8 {
                    attribute: attribute.to_owned(),
                })
            })
            .collect()
    }

    /// The single value of `attribute` as UTF-8 text: `None` when absent,
    /// an error when it has several values.
    pub fn single_text(&self, attribute: &str) -> Result<Option<&str>, ValueError> {
        let values = self.text_values(attribute)?;
        match values.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            _ => Err(ValueError::MultipleValues {
                attribute: attribute.to_owned(),
            }),
        }
    }

    /// Whether the entry has `objectClass: class` (case-insensitive).
    pub fn has_object_class(&self, class: &str) -> bool {
        self.values("objectclass")
            .iter()
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(class.as_bytes()))
    }

    /// The attribute descriptions present, lowercased.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.attributes.keys().map(String::as_str)
    }
}

/// Values are not printed: `userPassword` holds password hashes.
impl fmt::Debug for LdifEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdifEntry")
            .field("dn", &self.dn)
            .field("line", &self.line)
            .field("attributes", &self.attributes.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// An attribute value could not be read as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// A value that must be text is not UTF-8.
    #[error("{attribute}: value is not UTF-8")]
    NotUtf8 {
        /// The attribute.
        attribute: String,
    },
    /// A single-valued attribute has several values.
    #[error("{attribute}: more than one value")]
    MultipleValues {
        /// The attribute.
        attribute: String,
    },
}

/// The LDIF file is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LdifError {
    /// The line (1-based) the problem was found on.
    pub line: usize,
    /// What is wrong.
    pub kind: LdifErrorKind,
}

/// What is wrong with an LDIF file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LdifErrorKind {
    /// The file is larger than [`MAX_INPUT_LEN`].
    #[error("file larger than {MAX_INPUT_LEN} bytes")]
    TooLarge,
    /// A `version:` other than 1.
    #[error("unsupported LDIF version")]
    UnsupportedVersion,
    /// A record does not start with `dn:`.
    #[error("record does not start with dn:")]
    MissingDn,
    /// A line has no `:` after the attribute description.
    #[error("no ':' after the attribute name")]
    MissingColon,
    /// The attribute description is empty or has characters outside
    /// letters, digits, `-`, `.` and `;`.
    #[error("invalid attribute name")]
    InvalidAttributeName,
    /// A continuation line (starting with a space) follows nothing.
    #[error("continuation line without a line to continue")]
    StrayContinuation,
    /// A `::` value is not valid base64.
    #[error("invalid base64 value")]
    InvalidBase64,
    /// A plain value is not UTF-8, or a `dn` is not UTF-8.
    #[error("value is not UTF-8")]
    NotUtf8,
    /// A plain value starts with `:` or `<`, or contains NUL or CR.
    #[error("value is not a SAFE-STRING (RFC 2849)")]
    UnsafeValue,
    /// `attr:< URL`: values from URLs are not read.
    #[error("URL values (':<') are not supported")]
    UrlValue,
    /// A change record other than `changetype: add`.
    #[error("change records are not supported (only content records and changetype: add)")]
    ChangeRecord,
    /// The `dn` is empty.
    #[error("empty dn")]
    EmptyDn,
}

/// Parse a whole LDIF file of content records.
pub fn parse(input: &[u8]) -> Result<Vec<LdifEntry>, LdifError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(LdifError {
            line: 1,
            kind: LdifErrorKind::TooLarge,
        });
    }
    let mut entries = Vec::new();
    for (index, record) in records(input)?.iter().enumerate() {
        if let Some(entry) = parse_record(record, index == 0)? {
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// A logical (unfolded) line and the physical line it starts on.
#[derive(Debug)]
struct LogicalLine {
    line: usize,
    text: Vec<u8>,
}

/// Split the input into records of unfolded, comment-free lines.
fn records(input: &[u8]) -> Result<Vec<Vec<LogicalLine>>, LdifError> {
    let mut records = Vec::new();
    let mut current: Vec<LogicalLine> = Vec::new();
    // Whether the last logical line was a comment (its continuations are
    // part of the comment).
    let mut in_comment = false;
    let mut any_line = false;
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix(b" ") {
            if in_comment {
                continue;
            }
            match current.last_mut() {
                Some(last) if any_line => last.text.extend_from_slice(rest),
                _ => {
                    return Err(LdifError {
                        line,
                        kind: LdifErrorKind::StrayContinuation,
                    })
                }
            }
            continue;
        }
        if raw.is_empty() {
            in_comment = false;
            any_line = false;
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            continue;
        }
        if raw.first() == Some(&b'#') {
            in_comment = true;
            continue;
        }
        in_comment = false;
        any_line = true;
        current.push(LogicalLine {
            line,
            text: raw.to_vec(),
        });
    }
    if !current.is_empty() {
        records.push(current);
    }
    Ok(records)
}

/// The attribute description and the rest (after the first `:`).
fn split_name(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = text.iter().position(|&b| b == b':')?;
    Some((text.get(..colon)?, text.get(colon + 1..)?))
}

/// One record; `first` allows the leading `version: 1` line.
fn parse_record(record: &[LogicalLine], leading: bool) -> Result<Option<LdifEntry>, LdifError> {
    let Some(first) = record.first() else {
        return Ok(None);
    };
    // A leading `version:` record with nothing else is not an entry.
    let (name, value) = attribute_line(first)?;
    if leading && name == "version" {
        if value != b"1" {
            return Err(LdifError {
                line: first.line,
                kind: LdifErrorKind::UnsupportedVersion,
            });
        }
        return match record.get(1..) {
            Some(rest) if !rest.is_empty() => parse_record(rest, false),
            _ => Ok(None),
        };
    }
    if name != "dn" {
        return Err(LdifError {
            line: first.line,
            kind: LdifErrorKind::MissingDn,
        });
    }
    let dn = String::from_utf8(value).map_err(|_| LdifError {
        line: first.line,
        kind: LdifErrorKind::NotUtf8,
    })?;
    if dn.trim().is_empty() {
        return Err(LdifError {
            line: first.line,
            kind: LdifErrorKind::EmptyDn,
        });
    }
    let mut attributes: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (position, line) in record.iter().enumerate().skip(1) {
        let (name, value) = attribute_line(line)?;
        if name == "changetype" {
            if position == 1 && value.eq_ignore_ascii_case(b"add") {
                continue;
            }
            return Err(LdifError {
                line: line.line,
                kind: LdifErrorKind::ChangeRecord,
            });
        }
        attributes.entry(name).or_default().push(value);
    }
    Ok(Some(LdifEntry {
        dn,
        line: first.line,
        attributes,
    }))
}

/// One `name: value` / `name:: base64` line: the lowercased name and the
/// decoded value.
fn attribute_line(line: &LogicalLine) -> Result<(String, Vec<u8>), LdifError> {
    let error = |kind| LdifError {
        line: line.line,
        kind,
    };
    let (name, rest) = split_name(&line.text).ok_or(error(LdifErrorKind::MissingColon))?;
    let valid_name = !name.is_empty()
        && name.first().is_some_and(u8::is_ascii_alphanumeric)
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b';'));
    if !valid_name {
        return Err(error(LdifErrorKind::InvalidAttributeName));
    }
    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
    let value = match rest.first() {
        Some(b':') => {
            let encoded = rest.get(1..).unwrap_or(&[]).trim_ascii();
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| error(LdifErrorKind::InvalidBase64))?
        }
        Some(b'<') => return Err(error(LdifErrorKind::UrlValue)),
        _ => {
            let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
            let value = rest.get(start..).unwrap_or(&[]);
            if matches!(value.first(), Some(b':' | b'<'))
                || value.iter().any(|&b| b == 0 || b == b'\r')
            {
                return Err(error(LdifErrorKind::UnsafeValue));
            }
            if std::str::from_utf8(value).is_err() {
                return Err(error(LdifErrorKind::NotUtf8));
            }
            value.to_vec()
        }
    };
    Ok((name, value))
}

/// A DN in a canonical form for comparisons: RDNs lowercased, spaces
/// around `,`, `+` and `=` removed, runs of inner spaces made one. Escapes
/// are kept as written; the directory vocabulary needs nothing more (`member`, `memberOf` and
/// reservation holders compare DNs written by the same tools).
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut escaped = false;
    // Spaces seen since the last character written; written only when
    // something other than a separator follows.
    let mut spaces = 0;
    // Whether the last character written was an unescaped separator.
    let mut after_separator = true;
    for c in dn.trim().chars() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            ',' | '+' | '=' => {
                spaces = 0;
                out.push(c);
                after_separator = true;
            }
            ' ' => spaces += 1,
            _ => {
                if !after_separator && spaces > 0 {
                    out.push(' ');
                }
                spaces = 0;
                after_separator = false;
                if c == '\\' {
                    escaped = true;
                    out.push(c);
                } else {
                    out.extend(c.to_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    const SAMPLE: &str = "\
version: 1

# The people.
# A folded comment
 line that goes on.
dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
objectclass: permanetEntity
UID: alice
cn: Alice
  Example
description:: w6lsw6h2ZQ==
mail: alice@example.org
mail: a@example.org
userPassword: {SSHA}abc

dn:: Y249c3RhZmYsb3U9Z3JvdXBzLGRjPWV4YW1wbGUsZGM9b3Jn
changetype: add
objectClass: groupOfNames
cn: staff
member: uid=alice,ou=people,dc=example,dc=org
";

    #[test]
    fn reads_records_folding_base64_comments_and_multiple_values() {
        let entries = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        let alice = &entries[0];
        assert_eq!(alice.dn, "uid=alice,ou=people,dc=example,dc=org");
        assert_eq!(alice.line, 6);
        assert!(alice.has_object_class("INETORGPERSON"));
        assert!(alice.has_object_class("permanetEntity"));
        assert_eq!(alice.single_text("uid").unwrap(), Some("alice"));
        // Folding removes the newline and exactly one space.
        assert_eq!(alice.single_text("cn").unwrap(), Some("Alice Example"));
        assert_eq!(alice.single_text("Description").unwrap(), Some("élève"));
        assert_eq!(
            alice.text_values("mail").unwrap(),
            ["alice@example.org", "a@example.org"]
        );
        assert!(alice.single_text("mail").is_err());
        assert_eq!(alice.single_text("nothing").unwrap(), None);
        let staff = &entries[1];
        assert_eq!(staff.dn, "cn=staff,ou=groups,dc=example,dc=org");
        assert_eq!(staff.line, 17);
        assert_eq!(staff.values("member").len(), 1);
        // Values never reach Debug output.
        assert!(!format!("{alice:?}").contains("SSHA"));
    }

    #[test]
    fn crlf_line_ends_and_trailing_blank_lines() {
        let text = "dn: cn=a,dc=x\r\ncn: a\r\n\r\n\r\ndn: cn=b,dc=x\r\ncn: b\r\n\r\n";
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].single_text("cn").unwrap(), Some("b"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, LdifErrorKind)] = &[
            ("dn: cn=a\ncn a\n", 2, LdifErrorKind::MissingColon),
            ("cn: a\n", 1, LdifErrorKind::MissingDn),
            ("dn: cn=a\n\n cn: a\n", 3, LdifErrorKind::StrayContinuation),
            ("dn: cn=a\ncn:: !!!\n", 2, LdifErrorKind::InvalidBase64),
            (
                "dn: cn=a\ncn:< file:///etc/shadow\n",
                2,
                LdifErrorKind::UrlValue,
            ),
            (
                "dn: cn=a\nchangetype: delete\n",
                2,
                LdifErrorKind::ChangeRecord,
            ),
            ("dn: cn=a\nc n: x\n", 2, LdifErrorKind::InvalidAttributeName),
            ("dn: cn=a\n: x\n", 2, LdifErrorKind::InvalidAttributeName),
            (
                "version: 2\n\ndn: cn=a\n",
                1,
                LdifErrorKind::UnsupportedVersion,
            ),
            ("dn:\ncn: x\n", 1, LdifErrorKind::EmptyDn),
            ("dn: cn=a\ncn: a\0b\n", 2, LdifErrorKind::UnsafeValue),
            ("dn: cn=a\ncn: \u{ff}\n", 2, LdifErrorKind::NotUtf8),
        ];
        for (text, line, kind) in cases {
            let mut bytes = text.as_bytes().to_vec();
            if text.contains('\u{ff}') {
                bytes = b"dn: cn=a\ncn: \xff\n".to_vec();
            }
            let error = parse(&bytes).unwrap_err();
            assert_eq!((error.line, &error.kind), (*line, kind), "{text:?}");
        }
    }

    #[test]
    fn normalized_dns_compare_case_and_space_insensitively() {
        assert_eq!(
            normalize_dn(" UID=Alice, ou=People ,DC=example,dc=org "),
            "uid=alice,ou=people,dc=example,dc=org"
        );
        assert_eq!(normalize_dn("cn=Big  Group,dc=x"), "cn=big group,dc=x");
        assert_eq!(normalize_dn("cn=a\\, b,dc=x"), "cn=a\\, b,dc=x");
    }

    /// Fuzz-style: random bytes, and random mutations of a valid file,
    /// never make the reader panic; whatever it accepts has non-empty DNs.
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = SmallRng::seed_from_u64(0x1d1f);
        let alphabet = b"dn: \n\r#:=,<abcuid0 \t\xff\x00";
        for round in 0..20_000 {
            let len = rng.gen_range(0..200);
            let bytes: Vec<u8> = if round % 2 == 0 {
                (0..len).map(|_| rng.gen()).collect()
            } else if round % 4 == 1 {
                (0..len)
                    .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                    .collect()
            } else {
                let mut bytes = SAMPLE.as_bytes().to_vec();
                for _ in 0..rng.gen_range(1..8) {
                    let at = rng.gen_range(0..bytes.len());
                    match rng.gen_range(0..3) {
                        0 => bytes[at] = rng.gen(),
                        1 => {
                            bytes.remove(at);
                        }
                        _ => bytes.insert(at, alphabet[rng.gen_range(0..alphabet.len())]),
                    }
                }
                bytes
            };
            if let Ok(entries) = parse(&bytes) {
                for entry in entries {
                    assert!(!entry.dn.trim().is_empty());
                }
            }
        }
    }
}
