//! Decoding of WSP header blocks (WAP-230-WSP §8.4.1–§8.4.2) into text
//! pairs; see the parent module for the error policy.

use base64::Engine as _;

use super::{DecodedHeaders, Headers};
use crate::wsp::codec::{self, Reader, QUOTED_STRING};
use crate::wsp::error::{Result, WspError};
use crate::wsp::tables::{self, EncodingVersion, FieldKind, ParamKind};

/// The Shift-delimiter octet (§8.4.2.6).
const SHIFT: u8 = 0x7f;
/// The default header code page.
const DEFAULT_PAGE: u8 = 1;

/// Decode a block of encoded headers. `version` is the encoding version the
/// peer announced; every assigned code is accepted whatever it is (a newer
/// code from an older peer is still unambiguous), so it is only kept for
/// symmetry with [`super::encode_headers`] and future tables.
pub fn decode_headers(bytes: &[u8], version: EncodingVersion) -> DecodedHeaders {
    decode_headers_at(bytes, 0, version)
}

/// [`decode_headers`] for a block that starts at `base` in its PDU (offsets
/// in errors are then PDU offsets).
pub(crate) fn decode_headers_at(
    bytes: &[u8],
    base: usize,
    _version: EncodingVersion,
) -> DecodedHeaders {
    let mut out = DecodedHeaders::default();
    let mut reader = Reader::new(bytes, base);
    let mut page = DEFAULT_PAGE;
    while !reader.is_empty() {
        if let Err(error) = one_header(&mut reader, &mut page, &mut out.headers, &mut out.errors) {
            out.errors.push(error);
            break;
        }
    }
    out
}

/// Read one header (or shift); a value that does not parse becomes an
/// entry in `errors`, a broken extent is returned as `Err`.
fn one_header(
    reader: &mut Reader<'_>,
    page: &mut u8,
    headers: &mut Headers,
    errors: &mut Vec<WspError>,
) -> Result<()> {
    let offset = reader.offset();
    let first = reader.peek("header")?;
    match first {
        SHIFT => {
            reader.u8("shift")?;
            *page = reader.u8("page identity")?;
        }
        0x01..=0x1f => {
            reader.u8("short-cut shift")?;
            *page = first;
        }
        0x00 => {
            return Err(WspError::BadValue {
                offset,
                what: "header field name",
            })
        }
        0x80..=0xff => {
            reader.u8("field name")?;
            let code = first & 0x7f;
            let value_offset = reader.offset();
            let mut value = value_extent(reader)?;
            if *page != DEFAULT_PAGE {
                errors.push(WspError::UnknownCodePage {
                    offset,
                    page: *page,
                    code,
                });
                return Ok(());
            }
            let Some(field) = tables::field_by_code(code) else {
                errors.push(WspError::HeaderValue {
                    offset: value_offset,
                    name: format!("code {code:#04x}"),
                    reason: "unassigned well-known field name",
                });
                return Ok(());
            };
            match field_value(field.kind, &mut value) {
                Ok(text) => headers.push(field.name, text),
                Err(error) => errors.push(WspError::HeaderValue {
                    offset: value_offset,
                    name: field.name.to_owned(),
                    reason: reason(&error),
                }),
            }
        }
        0x20..=0x7e => {
            let name = codec::text_from_octets(reader.nul_terminated()?);
            let value_offset = reader.offset();
            let mut value = value_extent(reader)?;
            if value.rest() == [0] {
                // An empty Text-string.
                headers.push(name, "");
                return Ok(());
            }
            if value.peek("application header value")? < 0x20 {
                errors.push(WspError::HeaderValue {
                    offset: value_offset,
                    name,
                    reason: "application header value is not text",
                });
                return Ok(());
            }
            match value.text_string() {
                Ok(text) => headers.push(name, text),
                Err(error) => errors.push(WspError::HeaderValue {
                    offset: value_offset,
                    name,
                    reason: reason(&error),
                }),
            }
        }
    }
    Ok(())
}

/// A short reason for a value error, for [`WspError::HeaderValue`].
fn reason(error: &WspError) -> &'static str {
    match error {
        WspError::HeaderValue { reason, .. } => reason,
        WspError::BadValue { what, .. } => what,
        WspError::Truncated { what, .. } => what,
        WspError::UnterminatedText { .. } => "unterminated text",
        WspError::LengthBeyondPdu { .. } => "length beyond value",
        WspError::UintvarTooLong { .. } | WspError::UintvarOverflow { .. } => "bad uintvar",
        _ => "malformed value",
    }
}

/// Consume one field value from the header stream and return a reader
/// over all of it (first octet included). Its extent follows from the
/// first octet (§8.4.1.2): a short-integer is one octet, a text runs to
/// its NUL, a length-prefixed value carries its length.
fn value_extent<'a>(reader: &mut Reader<'a>) -> Result<Reader<'a>> {
    let start = reader.offset();
    let rest = reader.rest();
    let mut probe = reader.clone();
    match probe.peek("header value")? {
        0x80..=0xff => {
            probe.u8("value")?;
        }
        0x20..=0x7f => {
            probe.nul_terminated()?;
        }
        _ => {
            let len = probe.value_length()?;
            probe.take(len, start)?;
        }
    }
    let len = probe.offset() - start;
    let bytes = rest.get(..len).unwrap_or_default();
    *reader = probe;
    Ok(Reader::new(bytes, start))
}

/// Error for a value form the field's grammar does not have.
fn unexpected(offset: usize) -> WspError {
    WspError::BadValue {
        offset,
        what: "value form for this field",
    }
}

/// Decode one field value (the whole value in `v`) according to `kind`.
fn field_value(kind: FieldKind, v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    let first = v.peek("header value")?;
    // A value-length of 0: an empty value, whatever the field.
    if first == 0 && v.rest().len() == 1 {
        return Ok(String::new());
    }
    match kind {
        FieldKind::Accept | FieldKind::ContentType => content_general(v),
        FieldKind::AcceptCharset => general_with_q(v, charset_value),
        FieldKind::AcceptLanguage => general_with_q(v, language_value),
        FieldKind::AcceptEncoding => {
            general_with_q(v, |v| token_or_text(v, tables::ENCODINGS, "content coding"))
        }
        FieldKind::AcceptRanges => token_or_text(v, tables::RANGES, "range unit"),
        FieldKind::ContentEncoding => token_or_text(v, tables::ENCODINGS, "content coding"),
        FieldKind::TransferEncoding => token_or_text(v, &["chunked"], "transfer coding"),
        FieldKind::Connection => token_or_text(v, &["close"], "connection token"),
        FieldKind::Integer => match first {
            0x20..=0x7f => v.text_string(),
            _ => Ok(v.integer_value()?.to_string()),
        },
        FieldKind::ShortInteger => match first {
            0x20..=0x7f => v.text_string(),
            _ => Ok(v.integer_value()?.to_string()),
        },
        FieldKind::Method => match first {
            0x80..=0xff => {
                let code = v.short_integer()?;
                tables::METHODS
                    .iter()
                    .find(|(_, c)| *c == code)
                    .map(|(name, _)| (*name).to_owned())
                    .ok_or(WspError::BadValue {
                        offset,
                        what: "unknown method code",
                    })
            }
            0x20..=0x7f => v.text_string(),
            _ => Err(unexpected(offset)),
        },
        FieldKind::CacheControl => cache_control(v),
        FieldKind::ContentLanguage => language_value(v),
        FieldKind::Md5 => {
            let len = v.value_length()?;
            let digest = v.take(len, offset)?;
            if digest.len() != 16 {
                return Err(WspError::BadValue {
                    offset,
                    what: "MD5 digest not 16 octets",
                });
            }
            Ok(base64::engine::general_purpose::STANDARD.encode(digest))
        }
        FieldKind::Date => match first {
            0x20..=0x7f => v.text_string(),
            0x00..=0x1e => v.date_value(),
            _ => Err(unexpected(offset)),
        },
        FieldKind::Text | FieldKind::EntityTag => text_value_field(v),
        FieldKind::IfRange => match first {
            0x00..=0x1e => v.date_value(),
            _ => text_value_field(v),
        },
        FieldKind::Pragma => match first {
            0x80 => {
                v.u8("pragma")?;
                Ok("no-cache".to_owned())
            }
            0x20..=0x7f => v.text_string(),
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                let (name, value) = parameter(&mut body)?;
                Ok(match value {
                    Some(value) => format!("{name}={value}"),
                    None => name,
                })
            }
            _ => Err(unexpected(offset)),
        },
        FieldKind::RetryAfter => match first {
            0x20..=0x7f => v.text_string(),
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                match body.u8("retry-after form")? {
                    0x80 => body.date_value(),
                    0x81 => Ok(body.integer_value()?.to_string()),
                    _ => Err(WspError::BadValue {
                        offset,
                        what: "retry-after form",
                    }),
                }
            }
            _ => Err(unexpected(offset)),
        },
        FieldKind::FieldName => field_name(v),
        FieldKind::ContentDisposition => match first {
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                let mut text = token_or_text(&mut body, tables::DISPOSITIONS, "disposition")?;
                parameters(&mut body, &mut text)?;
                Ok(text)
            }
            _ => token_or_text(v, tables::DISPOSITIONS, "disposition"),
        },
        FieldKind::ApplicationId => match first {
            0x20..=0x7f => v.text_string(),
            _ => {
                let id = v.integer_value()?;
                Ok(tables::APPLICATION_IDS
                    .iter()
                    .find(|(_, c)| *c == id)
                    .map(|(n, _)| (*n).to_owned())
                    .unwrap_or_else(|| id.to_string()))
            }
        },
        FieldKind::EncodingVersion => match first {
            0x00..=0x1f => Err(WspError::HeaderValue {
                offset,
                name: "Encoding-Version".into(),
                reason: "code-page encoding versions are not decoded",
            }),
            _ => v.version_value(),
        },
        FieldKind::Credentials | FieldKind::Challenge => {
            authentication(kind == FieldKind::Challenge, v)
        }
        FieldKind::Range => {
            let len = v.value_length()?;
            let mut body = v.sub(len, offset)?;
            match body.u8("range form")? {
                0x80 => {
                    let first = body.uintvar()?;
                    if body.is_empty() {
                        Ok(format!("bytes={first}-"))
                    } else {
                        Ok(format!("bytes={first}-{}", body.uintvar()?))
                    }
                }
                0x81 => Ok(format!("bytes=-{}", body.uintvar()?)),
                _ => Err(WspError::BadValue {
                    offset,
                    what: "range form",
                }),
            }
        }
        FieldKind::Warning => match first {
            0x80..=0xff => Ok(warn_code(v.short_integer()?).to_string()),
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                let code = warn_code(body.short_integer()?);
                let agent = body.text_string()?;
                let text = text_value_field(&mut body)?;
                Ok(format!("{code} {agent} {text}"))
            }
            _ => v.text_string(),
        },
        FieldKind::Cookie => match first {
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                body.version_value()?;
                let mut pairs = Vec::new();
                while !body.is_empty() {
                    let info_offset = body.offset();
                    let info_len = body.value_length()?;
                    let mut info = body.sub(info_len, info_offset)?;
                    let name = info.text_string()?;
                    let value = info.text_string()?;
                    // Cookie-path and Cookie-domain may follow: RFC 6265
                    // cookies do not carry them back to the server.
                    pairs.push(format!("{name}={value}"));
                }
                Ok(pairs.join("; "))
            }
            _ => text_value_field(v),
        },
        FieldKind::SetCookie => match first {
            0x00..=0x1f => {
                let len = v.value_length()?;
                let mut body = v.sub(len, offset)?;
                body.version_value()?;
                let name = body.text_string()?;
                let value = body.text_string()?;
                let mut text = format!("{name}={value}");
                parameters(&mut body, &mut text)?;
                Ok(text)
            }
            _ => text_value_field(v),
        },
        FieldKind::Opaque => match first {
            0x20..=0x7f => text_value_field(v),
            _ => Err(WspError::HeaderValue {
                offset,
                name: String::new(),
                reason: "structured value of this field is not decoded",
            }),
        },
    }
}

/// A Text-string field value. A leading octet 0x22 is read the ways
/// encoders use it: before a text that is itself quoted (`"floop"`,
/// `W/"x"`) or `*`, it is only a marker (Kannel's entity tags) and the
/// text is the value; before a text ending in `"`, it is the text's own
/// opening quote (a Text-string starting with `"`); otherwise it is a
/// §8.4.2.1 Quoted-string whose quotes were removed, and they are put back.
fn text_value_field(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    match v.peek("text")? {
        QUOTED_STRING => {
            v.u8("quote")?;
            let content = codec::text_from_octets(v.nul_terminated()?);
            if content.starts_with('"') || content.starts_with("W/\"") || content == "*" {
                Ok(content)
            } else if content.ends_with('"') {
                Ok(format!("\"{content}"))
            } else {
                Ok(format!("\"{content}\""))
            }
        }
        0x20..=0x7f => v.text_string(),
        _ => Err(unexpected(offset)),
    }
}

/// A Short-integer looked up in `table`, or a Token-text / Text-string.
fn token_or_text(
    v: &mut Reader<'_>,
    table: &'static [&'static str],
    what: &'static str,
) -> Result<String> {
    let offset = v.offset();
    match v.peek(what)? {
        0x80..=0xff => {
            let code = v.short_integer()?;
            tables::token_by_code(table, code)
                .map(str::to_owned)
                .ok_or(WspError::BadValue { offset, what })
        }
        0x20..=0x7f => v.text_string(),
        _ => Err(unexpected(offset)),
    }
}

/// A value that is either the plain form `plain` reads, or a general form
/// (Value-length, the same value, optional Q-value) rendered `value; q=…`.
fn general_with_q(
    v: &mut Reader<'_>,
    plain: impl Fn(&mut Reader<'_>) -> Result<String>,
) -> Result<String> {
    let offset = v.offset();
    if v.peek("value")? > 0x1f {
        return plain(v);
    }
    let len = v.value_length()?;
    let mut body = v.sub(len, offset)?;
    let mut text = plain(&mut body)?;
    if !body.is_empty() {
        let q = body.q_value()?;
        text.push_str("; q=");
        text.push_str(&codec::q_text(q));
    }
    Ok(text)
}

/// A charset: Any-charset (0x80), a MIBenum (Integer-value) or text.
/// Unknown MIBenums are rendered as their number.
fn charset_value(v: &mut Reader<'_>) -> Result<String> {
    match v.peek("charset")? {
        0x80 => {
            v.u8("charset")?;
            Ok("*".to_owned())
        }
        0x20..=0x7f => v.text_string(),
        _ => {
            let mib = v.integer_value()?;
            Ok(tables::charset_by_mib(mib)
                .map(str::to_owned)
                .unwrap_or_else(|| mib.to_string()))
        }
    }
}

/// A language: Any-language (0x80), a Table 41 code (Short- or
/// Long-integer) or text.
fn language_value(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    match v.peek("language")? {
        0x20..=0x7f => v.text_string(),
        _ => {
            let code = v.integer_value()?;
            tables::language_by_code(code)
                .map(str::to_owned)
                .ok_or(WspError::BadValue {
                    offset,
                    what: "unknown language code",
                })
        }
    }
}

/// A Field-name: a well-known code or a Token-text.
fn field_name(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    match v.peek("field name")? {
        0x80..=0xff => {
            let code = v.short_integer()?;
            tables::field_by_code(code)
                .map(|f| f.name.to_owned())
                .ok_or(WspError::BadValue {
                    offset,
                    what: "unknown field name code",
                })
        }
        0x20..=0x7f => v.text_string(),
        _ => Err(unexpected(offset)),
    }
}

/// Content-general-form (§8.4.2.24) or Accept's general form (§8.4.2.7):
/// a media type (code or text) and its parameters, rendered
/// `type/sub; p=v; q=0.5`.
fn content_general(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    let first = v.peek("content type")?;
    if first > 0x1f {
        return media(v);
    }
    let len = v.value_length()?;
    let mut body = v.sub(len, offset)?;
    let mut text = media(&mut body)?;
    parameters(&mut body, &mut text)?;
    Ok(text)
}

/// A media type: Short-integer or Long-integer code, or Extension-media.
fn media(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    match v.peek("media type")? {
        0x20..=0x7f => v.text_string(),
        0x00 => {
            // Extension-media may be an empty string (No-value).
            v.u8("media type")?;
            Ok(String::new())
        }
        _ => {
            let code = v.integer_value()?;
            tables::content_type_by_code(code)
                .map(str::to_owned)
                .ok_or(WspError::BadValue {
                    offset,
                    what: "unknown content type code",
                })
        }
    }
}

/// Every remaining parameter in `body`, appended to `text` as `; p=v`.
fn parameters(body: &mut Reader<'_>, text: &mut String) -> Result<()> {
    while !body.is_empty() {
        let (name, value) = parameter(body)?;
        text.push_str("; ");
        text.push_str(&name);
        if let Some(value) = value {
            text.push('=');
            text.push_str(&value);
        }
    }
    Ok(())
}

/// One Parameter (§8.4.2.4): typed (well-known code and its typed value)
/// or untyped (Token-text name and Integer-value or Text-value). `None`
/// for a parameter without a value.
fn parameter(v: &mut Reader<'_>) -> Result<(String, Option<String>)> {
    let offset = v.offset();
    if (0x20..=0x7f).contains(&v.peek("parameter")?) {
        let name = v.text_string()?;
        let value = untyped_value(v)?;
        return Ok((name, value));
    }
    let code = v.integer_value()?;
    let (name, kind) = tables::param_by_code(code).ok_or(WspError::BadValue {
        offset,
        what: "unknown parameter code",
    })?;
    let value_offset = v.offset();
    let first = v.peek("parameter value")?;
    let value = match kind {
        ParamKind::Q => Some(codec::q_text(v.q_value()?)),
        ParamKind::Charset => Some(charset_value(v)?),
        ParamKind::Version => Some(v.version_value()?),
        ParamKind::Integer | ParamKind::DeltaSeconds | ParamKind::ShortInteger => match first {
            0x20..=0x7f => text_param(v)?,
            _ => Some(v.integer_value()?.to_string()),
        },
        ParamKind::TextString | ParamKind::TextValue => text_param(v)?,
        ParamKind::FieldName => Some(field_name(v)?),
        ParamKind::ContentType => Some(media(v)?),
        ParamKind::Date => Some(v.date_value()?),
        ParamKind::NoValue => {
            if v.u8("no-value")? != 0 {
                return Err(WspError::BadValue {
                    offset: value_offset,
                    what: "parameter expecting no value",
                });
            }
            None
        }
    };
    Ok((name.to_owned(), value))
}

/// Untyped-value: Integer-value or Text-value.
fn untyped_value(v: &mut Reader<'_>) -> Result<Option<String>> {
    match v.peek("parameter value")? {
        0x20..=0x7f | 0x00 => text_param(v),
        _ => Ok(Some(v.integer_value()?.to_string())),
    }
}

/// Text-value (§8.4.2.3): No-value (`None`), a Quoted-string (rendered
/// with its quotes) or a Token-text (rendered bare unless it is empty or
/// has white space, `;`, `,`, `"` or `\\`, which would break the
/// parameter apart; then quoted).
fn text_param(v: &mut Reader<'_>) -> Result<Option<String>> {
    match v.peek("text value")? {
        0x00 => {
            v.u8("no-value")?;
            Ok(None)
        }
        QUOTED_STRING => {
            v.u8("quote")?;
            let content = codec::text_from_octets(v.nul_terminated()?);
            Ok(Some(format!("\"{content}\"")))
        }
        _ => {
            let text = v.text_string()?;
            let bare = !text.is_empty()
                && !text
                    .contains(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | '"' | '\\'));
            Ok(Some(if bare {
                text
            } else {
                format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
            }))
        }
    }
}

/// Cache-Control (§8.4.2.15).
fn cache_control(v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    let first = v.peek("cache directive")?;
    if first > 0x1f {
        return token_or_text(v, tables::CACHE_CONTROL, "cache directive");
    }
    let len = v.value_length()?;
    let mut body = v.sub(len, offset)?;
    if (0x20..=0x7f).contains(&body.peek("cache directive")?) {
        // Cache-extension: Token-text then a Parameter value.
        let name = body.text_string()?;
        return Ok(match untyped_value(&mut body)? {
            Some(value) => format!("{name}={value}"),
            None => name,
        });
    }
    let code = body.short_integer()?;
    let name = tables::token_by_code(tables::CACHE_CONTROL, code).ok_or(WspError::BadValue {
        offset,
        what: "cache directive",
    })?;
    match name {
        "no-cache" | "private" => {
            let mut fields = Vec::new();
            while !body.is_empty() {
                fields.push(field_name(&mut body)?);
            }
            Ok(format!("{name}=\"{}\"", fields.join(", ")))
        }
        _ if body.is_empty() => Ok(name.to_owned()),
        _ => Ok(format!("{name}={}", body.integer_value()?)),
    }
}

/// The Content-type value at the start of a Reply, Push or Post header
/// block (§8.2.3.1, §8.4.2.24). An empty value (value-length 0) is `""`.
pub(crate) fn content_type_value(block: &mut Reader<'_>) -> Result<String> {
    let mut v = value_extent(block)?;
    if v.rest() == [0] {
        return Ok(String::new());
    }
    content_general(&mut v)
}

/// The HTTP warn-code for a WSP one (§8.4.2.51 drops the first digit):
/// 14 is 214, 99 is 299, the others 1xx.
fn warn_code(code: u8) -> u16 {
    match code {
        14 => 214,
        99 => 299,
        code => 100 + u16::from(code),
    }
}

/// Credentials (Authorization) or a Challenge (WWW-Authenticate): Basic
/// (0x80) with user and password (rendered `Basic base64(user:password)`)
/// or realm, or a scheme Token-text with (for a challenge) a realm and
/// parameters, rendered `Scheme realm="r", p="v"`.
fn authentication(challenge: bool, v: &mut Reader<'_>) -> Result<String> {
    let offset = v.offset();
    if v.peek("authentication")? > 0x1f {
        return text_value_field(v);
    }
    let len = v.value_length()?;
    let mut body = v.sub(len, offset)?;
    let basic = body.peek("authentication scheme")? == 0x80;
    let scheme = if basic {
        body.u8("basic")?;
        "Basic".to_owned()
    } else {
        body.text_string()?
    };
    let mut params = Vec::new();
    if challenge {
        let realm = body.text_string()?;
        params.push(format!("realm=\"{realm}\""));
    } else if basic {
        let user = body.text_string()?;
        let password = body.text_string()?;
        let cookie = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        return Ok(format!("Basic {cookie}"));
    }
    while !body.is_empty() {
        let (name, value) = parameter(&mut body)?;
        params.push(match value {
            Some(value) => format!("{name}={value}"),
            None => name,
        });
    }
    if params.is_empty() {
        Ok(scheme)
    } else {
        Ok(format!("{scheme} {}", params.join(", ")))
    }
}
