//! The primitive value encodings of WAP-230-WSP §8.4.2.1–§8.4.2.3: short and
//! long integers, Integer-value, Text-string, Quoted-string, Token-text,
//! Value-length, Date-value, Q-value and Version-value, as a bounds-checked
//! reader over borrowed octets and a set of append-to-`Vec` writers.

use std::time::{Duration, SystemTime};

use super::error::{Result, WspError};
use super::uintvar;

/// The Quote octet (§8.4.2.1) that prefixes a Text-string whose first
/// character has the high bit set.
pub const QUOTE: u8 = 0x7f;
/// The octet that starts a Quoted-string (`"`).
pub const QUOTED_STRING: u8 = 0x22;
/// Value-length octet meaning "a uintvar length follows" (§8.4.2.2).
pub const LENGTH_QUOTE: u8 = 0x1f;

/// A cursor over WSP octets. Every read is bounds-checked and returns a
/// [`WspError`] naming the absolute offset (`base` + position) on failure.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`, which start at offset `base` of the PDU.
    pub fn new(bytes: &'a [u8], base: usize) -> Self {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Absolute offset of the next octet.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The octets not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }

    /// True when every octet has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Consume and return all the octets not read yet.
    pub fn take_rest(&mut self) -> &'a [u8] {
        let rest = self.rest();
        self.pos = self.bytes.len();
        rest
    }

    /// The next octet, not consumed.
    pub fn peek(&self, what: &'static str) -> Result<u8> {
        self.rest().first().copied().ok_or(WspError::Truncated {
            offset: self.offset(),
            what,
        })
    }

    /// One octet.
    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        let octet = self.peek(what)?;
        self.pos += 1;
        Ok(octet)
    }

    /// `len` octets, or [`WspError::LengthBeyondPdu`] naming `len_offset`
    /// (where the length came from).
    pub fn take(&mut self, len: usize, len_offset: usize) -> Result<&'a [u8]> {
        let rest = self.rest();
        let taken = rest.get(..len).ok_or(WspError::LengthBeyondPdu {
            offset: len_offset,
            length: len,
            available: rest.len(),
        })?;
        self.pos += len;
        Ok(taken)
    }

    /// A sub-reader over the next `len` octets (consumed here).
    pub fn sub(&mut self, len: usize, len_offset: usize) -> Result<Reader<'a>> {
        let base = self.offset();
        let bytes = self.take(len, len_offset)?;
        Ok(Reader::new(bytes, base))
    }

    /// A uintvar (§8.1.2).
    pub fn uintvar(&mut self) -> Result<u32> {
        let (value, len) = uintvar::decode(self.rest(), self.offset())?;
        self.pos += len;
        Ok(value)
    }

    /// A uintvar used as a length, checked against the octets left.
    pub fn uintvar_length(&mut self) -> Result<usize> {
        let offset = self.offset();
        let len = self.uintvar()? as usize;
        let available = self.rest().len();
        if len > available {
            return Err(WspError::LengthBeyondPdu {
                offset,
                length: len,
                available,
            });
        }
        Ok(len)
    }

    /// Octets up to (not including) the next NUL, which is consumed.
    pub fn nul_terminated(&mut self) -> Result<&'a [u8]> {
        let rest = self.rest();
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WspError::UnterminatedText {
                offset: self.offset(),
            })?;
        self.pos += end + 1;
        Ok(rest.get(..end).unwrap_or_default())
    }

    /// A Text-string (§8.4.2.1): optional Quote octet, text, NUL.
    pub fn text_string(&mut self) -> Result<String> {
        if self.peek("text string")? == QUOTE {
            self.pos += 1;
        }
        Ok(text_from_octets(self.nul_terminated()?))
    }

    /// Value-length (§8.4.2.2): a short length (0–30) or 31 and a uintvar;
    /// checked against the octets left.
    pub fn value_length(&mut self) -> Result<usize> {
        let offset = self.offset();
        match self.u8("value length")? {
            len @ 0..=30 => {
                let len = usize::from(len);
                let available = self.rest().len();
                if len > available {
                    return Err(WspError::LengthBeyondPdu {
                        offset,
                        length: len,
                        available,
                    });
                }
                Ok(len)
            }
            LENGTH_QUOTE => self.uintvar_length(),
            _ => Err(WspError::BadValue {
                offset,
                what: "value length",
            }),
        }
    }

    /// A Short-integer (§8.4.2.1): one octet with the high bit set.
    pub fn short_integer(&mut self) -> Result<u8> {
        let offset = self.offset();
        let octet = self.u8("short integer")?;
        if octet & 0x80 == 0 {
            return Err(WspError::BadValue {
                offset,
                what: "short integer",
            });
        }
        Ok(octet & 0x7f)
    }

    /// A Long-integer (§8.4.2.1): Short-length (1–30) then big-endian
    /// octets; values wider than 64 bits are refused.
    pub fn long_integer(&mut self) -> Result<u64> {
        let offset = self.offset();
        let len = self.u8("long integer")?;
        if len == 0 || len > 30 {
            return Err(WspError::BadValue {
                offset,
                what: "long integer length",
            });
        }
        let octets = self.take(usize::from(len), offset)?;
        let significant: &[u8] = match octets.iter().position(|&b| b != 0) {
            Some(first) => octets.get(first..).unwrap_or_default(),
            None => &[],
        };
        if significant.len() > 8 {
            return Err(WspError::BadValue {
                offset,
                what: "long integer wider than 64 bits",
            });
        }
        Ok(significant
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// An Integer-value (§8.4.2.3): Short-integer or Long-integer.
    pub fn integer_value(&mut self) -> Result<u64> {
        if self.peek("integer value")? & 0x80 != 0 {
            Ok(u64::from(self.short_integer()?))
        } else {
            self.long_integer()
        }
    }

    /// A Q-value (§8.4.2.3), in thousandths (0–999).
    pub fn q_value(&mut self) -> Result<u16> {
        let offset = self.offset();
        let raw = self.uintvar()?;
        match raw {
            1..=100 => Ok(((raw - 1) * 10) as u16),
            101..=1099 => Ok((raw - 100) as u16),
            _ => Err(WspError::BadValue {
                offset,
                what: "q-value",
            }),
        }
    }

    /// A Version-value (§8.4.2.3), rendered as `major` or `major.minor`.
    pub fn version_value(&mut self) -> Result<String> {
        if self.peek("version value")? & 0x80 != 0 {
            Ok(version_text(self.short_integer()?))
        } else {
            self.text_string()
        }
    }

    /// A Date-value (§8.4.2.3): Long-integer seconds since 1970, rendered
    /// as an HTTP date (RFC 7231 IMF-fixdate).
    pub fn date_value(&mut self) -> Result<String> {
        let offset = self.offset();
        let seconds = self.long_integer()?;
        date_text(seconds).ok_or(WspError::BadValue {
            offset,
            what: "date beyond year 9999",
        })
    }
}

/// Text from header octets: UTF-8 when it is valid UTF-8, otherwise each
/// octet as the ISO-8859-1 character of that value (WSP text is octets).
pub fn text_from_octets(octets: &[u8]) -> String {
    match std::str::from_utf8(octets) {
        Ok(text) => text.to_owned(),
        Err(_) => octets.iter().map(|&b| char::from(b)).collect(),
    }
}

/// `major[.minor]` for a short-integer version (minor 15 means none).
pub fn version_text(short: u8) -> String {
    let major = (short >> 4) & 0x07;
    let minor = short & 0x0f;
    if minor == 0x0f {
        format!("{major}")
    } else {
        format!("{major}.{minor}")
    }
}

/// The version as a short-integer value (without the high bit), when it
/// has the form `major` or `major.minor` with major 1–7 and minor 0–14.
pub fn version_short(text: &str) -> Option<u8> {
    let (major, minor) = match text.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (text, None),
    };
    let major: u8 = major.parse().ok().filter(|m| (1..=7).contains(m))?;
    let minor: u8 = match minor {
        None => 0x0f,
        Some(minor) => minor.parse().ok().filter(|m| *m <= 14)?,
    };
    Some((major << 4) | minor)
}

/// An HTTP date for `seconds` since 1970, or `None` past year 9999.
pub fn date_text(seconds: u64) -> Option<String> {
    if seconds > 253_402_300_799 {
        return None;
    }
    let time = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(seconds))?;
    Some(httpdate::fmt_http_date(time))
}

/// Seconds since 1970 of an HTTP date in any of the three HTTP/1.1 forms.
pub fn date_seconds(text: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(text.trim()).ok()?;
    time.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// `q` in thousandths rendered like HTTP: `0.5`, `0.25`, `0.003`, `0.0`.
pub fn q_text(thousandths: u16) -> String {
    let mut digits = format!("{thousandths:03}");
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    format!("0.{digits}")
}

/// Parse an HTTP q-value (`0`, `0.5`, `1.000`) into thousandths
/// (1000 for 1).
pub fn q_parse(text: &str) -> Option<u16> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0'));
    let value = int * 1000 + thousandths;
    (value <= 1000).then_some(value)
}

/// Append a Q-value (§8.4.2.3) for `thousandths` (0–999), in the two-digit
/// form when it has no third decimal.
pub fn put_q_value(thousandths: u16, out: &mut Vec<u8>) {
    let raw = if thousandths % 10 == 0 {
        u32::from(thousandths / 10) + 1
    } else {
        u32::from(thousandths) + 100
    };
    uintvar::encode(raw, out);
}

/// Append a Short-integer (`value` < 128).
pub fn put_short_integer(value: u8, out: &mut Vec<u8>) {
    out.push(value | 0x80);
}

/// Append a Long-integer: the fewest big-endian octets (at least one).
pub fn put_long_integer(value: u64, out: &mut Vec<u8>) {
    let octets = value.to_be_bytes();
    let skip = octets.iter().take_while(|&&b| b == 0).count().min(7);
    let significant = octets.get(skip..).unwrap_or_default();
    out.push(significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Append an Integer-value: Short-integer below 128, else Long-integer.
pub fn put_integer_value(value: u64, out: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(short) if short < 0x80 => put_short_integer(short, out),
        _ => put_long_integer(value, out),
    }
}

/// Append a Value-length for `len` (§8.4.2.2).
pub fn put_value_length(len: usize, out: &mut Vec<u8>) -> Result<()> {
    if len <= 30 {
        out.push(len as u8);
    } else {
        let len = u32::try_from(len).map_err(|_| WspError::Unencodable {
            what: "value length",
            reason: format!("{len} octets"),
        })?;
        out.push(LENGTH_QUOTE);
        uintvar::encode(len, out);
    }
    Ok(())
}

/// Append `body` preceded by its Value-length.
pub fn put_with_length(body: &[u8], out: &mut Vec<u8>) -> Result<()> {
    put_value_length(body.len(), out)?;
    out.extend_from_slice(body);
    Ok(())
}

/// Append a Text-string: the Quote octet first when the text starts with
/// an octet at or above 128 (§8.4.2.1) or, outside the grammar's TEXT but
/// so that a decoder cannot take it for a length or a Quote, below 32 or
/// 127; then the text and NUL. NULs inside the text cannot be carried and
/// are refused.
pub fn put_text_string(text: &str, out: &mut Vec<u8>) -> Result<()> {
    if text.as_bytes().contains(&0) {
        return Err(WspError::Unencodable {
            what: "text string",
            reason: "contains NUL".into(),
        });
    }
    if text
        .as_bytes()
        .first()
        .is_some_and(|&b| !(0x20..0x7f).contains(&b))
    {
        out.push(QUOTE);
    }
    out.extend_from_slice(text.as_bytes());
    out.push(0);
    Ok(())
}

/// Append a Token-text (`token` NUL); the caller checks it is a token.
pub fn put_token_text(token: &str, out: &mut Vec<u8>) -> Result<()> {
    put_text_string(token, out)
}

/// Append a Quoted-string (§8.4.2.1): `"` then the content (already
/// unquoted) and NUL.
pub fn put_quoted_string(content: &str, out: &mut Vec<u8>) -> Result<()> {
    if content.as_bytes().contains(&0) {
        return Err(WspError::Unencodable {
            what: "quoted string",
            reason: "contains NUL".into(),
        });
    }
    out.push(QUOTED_STRING);
    out.extend_from_slice(content.as_bytes());
    out.push(0);
    Ok(())
}

/// True for an HTTP token (RFC 7230 tchar+).
pub fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for (value, bytes) in [
            (0u64, vec![0x80]),
            (127, vec![0xff]),
            (128, vec![0x01, 0x80]),
            (0x0100_0000, vec![0x04, 0x01, 0, 0, 0]),
            (
                u64::MAX,
                vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ] {
            let mut out = Vec::new();
            put_integer_value(value, &mut out);
            assert_eq!(out, bytes, "{value}");
            assert_eq!(Reader::new(&bytes, 0).integer_value(), Ok(value));
        }
        // A long integer of value 0 is one zero octet.
        let mut out = Vec::new();
        put_long_integer(0, &mut out);
        assert_eq!(out, [1, 0]);
        // Leading zero octets are tolerated; 9 significant octets are not.
        assert_eq!(Reader::new(&[3, 0, 0, 5], 0).long_integer(), Ok(5));
        assert!(Reader::new(&[9, 1, 0, 0, 0, 0, 0, 0, 0, 0], 0)
            .long_integer()
            .is_err());
        assert!(Reader::new(&[0], 0).long_integer().is_err());
        assert!(Reader::new(&[4, 1], 0).long_integer().is_err());
    }

    #[test]
    fn texts() {
        let mut out = Vec::new();
        put_text_string("abc", &mut out).unwrap();
        put_text_string("\u{e9}t\u{e9}", &mut out).unwrap();
        put_quoted_string("x y", &mut out).unwrap();
        assert_eq!(&out[..4], b"abc\0");
        assert_eq!(out[4], QUOTE);
        let mut reader = Reader::new(&out, 0);
        assert_eq!(reader.text_string().unwrap(), "abc");
        assert_eq!(reader.text_string().unwrap(), "\u{e9}t\u{e9}");
        assert_eq!(reader.u8("").unwrap(), QUOTED_STRING);
        assert_eq!(reader.text_string().unwrap(), "x y");
        assert!(reader.is_empty());
        assert!(put_text_string("a\0b", &mut out).is_err());
        assert_eq!(
            Reader::new(b"abc", 7).text_string(),
            Err(WspError::UnterminatedText { offset: 7 })
        );
        // A leading control character is quoted so it is not read as a length.
        let mut out = Vec::new();
        put_text_string("\tx", &mut out).unwrap();
        assert_eq!(out, [QUOTE, b'\t', b'x', 0]);
        assert_eq!(Reader::new(&out, 0).text_string().unwrap(), "\tx");
        // Latin-1 octets that are not UTF-8 still decode.
        assert_eq!(
            Reader::new(&[0x7f, 0xe9, 0], 0).text_string().unwrap(),
            "\u{e9}"
        );
    }

    #[test]
    fn value_lengths() {
        let mut out = Vec::new();
        put_value_length(30, &mut out).unwrap();
        put_value_length(31, &mut out).unwrap();
        put_value_length(300, &mut out).unwrap();
        assert_eq!(out, [30, 0x1f, 31, 0x1f, 0x82, 0x2c]);
        assert!(matches!(
            Reader::new(&[5, 1, 2], 0).value_length(),
            Err(WspError::LengthBeyondPdu {
                length: 5,
                available: 2,
                ..
            })
        ));
        assert!(Reader::new(&[0x20], 0).value_length().is_err());
    }

    #[test]
    fn q_values() {
        for (text, thousandths, raw) in [
            ("0.0", 0u16, vec![0x01]),
            ("0.5", 500, vec![0x33]),
            ("0.9", 900, vec![0x5b]),
            ("0.99", 990, vec![0x64]),
            ("0.003", 3, vec![0x67]),
            ("0.333", 333, vec![0x83, 0x31]),
        ] {
            assert_eq!(q_parse(text), Some(thousandths), "{text}");
            let mut out = Vec::new();
            put_q_value(thousandths, &mut out);
            assert_eq!(out, raw, "{text}");
            let back = Reader::new(&raw, 0).q_value().unwrap();
            assert_eq!(back, thousandths);
            assert_eq!(q_text(back), text);
        }
        assert_eq!(q_parse("1.000"), Some(1000));
        assert_eq!(q_parse("1.5"), None);
        assert_eq!(q_parse("0.1234"), None);
        assert!(Reader::new(&[0x00], 0).q_value().is_err());
        assert!(Reader::new(&[0x88, 0x4c], 0).q_value().is_err());
    }

    #[test]
    fn versions_and_dates() {
        assert_eq!(version_text(0x1f), "1");
        assert_eq!(version_text(0x13), "1.3");
        assert_eq!(version_short("1.3"), Some(0x13));
        assert_eq!(version_short("1"), Some(0x1f));
        assert_eq!(version_short("8.1"), None);
        assert_eq!(version_short("1.15"), None);
        assert_eq!(
            date_text(784_887_151).unwrap(),
            "Tue, 15 Nov 1994 08:12:31 GMT"
        );
        assert_eq!(
            date_seconds("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(date_seconds("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(date_text(u64::MAX), None);
        assert!(
            Reader::new(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 0)
                .date_value()
                .is_err()
        );
    }
}
