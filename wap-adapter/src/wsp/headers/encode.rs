//! Encoding of HTTP-style header pairs into a WSP header block
//! (WAP-230-WSP §8.4.1–§8.4.2); see the parent module for the fallbacks.

use base64::Engine as _;

use super::Headers;
use crate::wsp::codec::{self, QUOTED_STRING};
use crate::wsp::error::{Result, WspError};
use crate::wsp::tables::{self, EncodingVersion, Field, FieldKind, ParamKind};

/// Accept-Encoding's 1.3 code, the one whose grammar has the general form.
const ACCEPT_ENCODING_V13: u8 = 0x3c;

/// Encode `headers` for a peer speaking encoding `version`. Fails only for
/// what no form can carry: a name that is not an HTTP token, or a NUL in a
/// value.
pub fn encode_headers(headers: &Headers, version: EncodingVersion) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (name, value) in headers.iter() {
        encode_header(name, value.trim(), version, &mut out)?;
    }
    Ok(out)
}

/// Encode one header (possibly as several, for a list).
fn encode_header(
    name: &str,
    value: &str,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<()> {
    let Some(field) = tables::field_by_name(name, version) else {
        return application_header(name, value, out);
    };
    if value.is_empty() {
        out.push(0x80 | field.code);
        out.push(0);
        return Ok(());
    }
    let elements: Vec<String> = match field.kind {
        FieldKind::Range => range_elements(value),
        FieldKind::Credentials | FieldKind::Challenge => auth_groups(value),
        FieldKind::Warning => split_list(value).into_iter().map(str::to_owned).collect(),
        kind if is_list(kind) || field.name == "Via" => {
            split_list(value).into_iter().map(str::to_owned).collect()
        }
        _ => vec![value.to_owned()],
    };
    for element in &elements {
        let mut encoded = Vec::new();
        match element_value(field, element, version, &mut encoded) {
            Ok(true)
                if field.kind == FieldKind::AcceptEncoding && encoded.first() < Some(&0x20) =>
            {
                // The general form (with a Q-value) came with code 0x3C in
                // 1.3; before that an application header keeps the q.
                if version >= EncodingVersion::V1_3 {
                    out.push(0x80 | ACCEPT_ENCODING_V13);
                    out.extend_from_slice(&encoded);
                } else {
                    application_header(field.name, element, out)?;
                }
            }
            Ok(true) => {
                out.push(0x80 | field.code);
                out.extend_from_slice(&encoded);
            }
            Ok(false) => application_header(field.name, element, out)?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Fields whose HTTP value is a comma-separated list.
fn is_list(kind: FieldKind) -> bool {
    matches!(
        kind,
        FieldKind::Accept
            | FieldKind::AcceptCharset
            | FieldKind::AcceptEncoding
            | FieldKind::AcceptLanguage
            | FieldKind::Method
            | FieldKind::CacheControl
            | FieldKind::Connection
            | FieldKind::ContentEncoding
            | FieldKind::ContentLanguage
            | FieldKind::Pragma
            | FieldKind::TransferEncoding
            | FieldKind::FieldName
    )
}

/// An application header: Token-text name, Text-string value.
fn application_header(name: &str, value: &str, out: &mut Vec<u8>) -> Result<()> {
    if !codec::is_token(name) {
        return Err(WspError::Unencodable {
            what: "header name",
            reason: format!("{name:?} is not a token"),
        });
    }
    codec::put_token_text(name, out)?;
    codec::put_text_string(value, out)
}

/// Split an HTTP list on commas outside quoted strings, trimming and
/// dropping empty elements.
pub(crate) fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(value.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value.get(start..).unwrap_or_default());
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// Split `media; a=b; c="d;e"` into the first item and its parameters.
fn split_params(value: &str) -> (&str, Vec<(&str, Option<&str>)>) {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                items.push(value.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(value.get(start..).unwrap_or_default());
    let mut items = items.into_iter().map(str::trim);
    let first = items.next().unwrap_or_default();
    let params = items
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p, None),
        })
        .collect();
    (first, params)
}

/// The content of a quoted string, or `None` when `text` is not quoted.
fn unquote(text: &str) -> Option<&str> {
    text.strip_prefix('"')?.strip_suffix('"')
}

/// Encode one element's value into `out`. `Ok(false)`: this element has no
/// well-known form and goes out as an application header instead.
fn element_value(
    field: &Field,
    value: &str,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<bool> {
    match field.kind {
        FieldKind::Accept | FieldKind::ContentType => content_general(value, version, out),
        FieldKind::AcceptCharset => with_q(value, out, |item, body| {
            if item == "*" {
                body.push(0x80);
                return Ok(true);
            }
            match tables::charset_mib(item) {
                Some(mib) => codec::put_integer_value(mib, body),
                None if codec::is_token(item) => codec::put_token_text(item, body)?,
                None => return Ok(false),
            }
            Ok(true)
        }),
        FieldKind::AcceptLanguage => with_q(value, out, |item, body| {
            match tables::language_code(item) {
                Some(code) => codec::put_integer_value(code, body),
                None if codec::is_token(item) => codec::put_token_text(item, body)?,
                None => return Ok(false),
            }
            Ok(true)
        }),
        FieldKind::AcceptEncoding => with_q(value, out, |item, body| {
            match tables::token_code(tables::ENCODINGS, item) {
                Some(code) => codec::put_short_integer(code, body),
                None if codec::is_token(item) => codec::put_token_text(item, body)?,
                None => return Ok(false),
            }
            Ok(true)
        }),
        FieldKind::AcceptRanges => token_or_text(tables::RANGES, value, out),
        FieldKind::ContentEncoding => token_or_text(tables::ENCODINGS, value, out),
        FieldKind::TransferEncoding => token_or_text(&["chunked"], value, out),
        FieldKind::Connection => token_or_text(&["close"], value, out),
        FieldKind::Integer => match value.parse::<u64>() {
            Ok(n) => {
                codec::put_integer_value(n, out);
                Ok(true)
            }
            Err(_) => Ok(false),
        },
        FieldKind::ShortInteger => match value.parse::<u8>() {
            Ok(n) if n < 0x80 => {
                codec::put_short_integer(n, out);
                Ok(true)
            }
            _ => Ok(false),
        },
        FieldKind::Method => {
            match tables::METHODS
                .iter()
                .find(|(m, _)| m.eq_ignore_ascii_case(value))
            {
                Some((_, code)) => codec::put_short_integer(*code, out),
                None => codec::put_text_string(value, out)?,
            }
            Ok(true)
        }
        FieldKind::CacheControl => cache_control(value, version, out),
        FieldKind::ContentLanguage => {
            match tables::language_code(value) {
                Some(code) => codec::put_integer_value(code, out),
                None => codec::put_text_string(value, out)?,
            }
            Ok(true)
        }
        FieldKind::Md5 => match base64::engine::general_purpose::STANDARD.decode(value) {
            Ok(digest) if digest.len() == 16 => {
                codec::put_with_length(&digest, out)?;
                Ok(true)
            }
            _ => Ok(false),
        },
        FieldKind::Date => match codec::date_seconds(value) {
            Some(seconds) => {
                codec::put_long_integer(seconds, out);
                Ok(true)
            }
            None => Ok(false),
        },
        FieldKind::Text => {
            text_value_field(value, out)?;
            Ok(true)
        }
        FieldKind::EntityTag => {
            // Kannel's form: a Quoted-string octet, then the tag with its
            // quotes (or `*`); the decoder reads both this and the spec form.
            codec::put_quoted_string(value, out)?;
            Ok(true)
        }
        FieldKind::IfRange => {
            match codec::date_seconds(value) {
                Some(seconds) => codec::put_long_integer(seconds, out),
                None => codec::put_quoted_string(value, out)?,
            }
            Ok(true)
        }
        FieldKind::Pragma => {
            if value.eq_ignore_ascii_case("no-cache") {
                out.push(0x80);
                return Ok(true);
            }
            let (name, param_value) = match value.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (value, None),
            };
            if !codec::is_token(name) {
                return Ok(false);
            }
            let mut body = Vec::new();
            untyped_parameter(name, param_value, &mut body)?;
            codec::put_with_length(&body, out)?;
            Ok(true)
        }
        FieldKind::RetryAfter => {
            let mut body = Vec::new();
            if let Ok(seconds) = value.parse::<u64>() {
                body.push(0x81);
                codec::put_integer_value(seconds, &mut body);
            } else if let Some(date) = codec::date_seconds(value) {
                body.push(0x80);
                codec::put_long_integer(date, &mut body);
            } else {
                return Ok(false);
            }
            codec::put_with_length(&body, out)?;
            Ok(true)
        }
        FieldKind::FieldName => {
            field_name(value, version, out)?;
            Ok(true)
        }
        FieldKind::ContentDisposition => {
            let (disposition, params) = split_params(value);
            let mut body = Vec::new();
            match tables::token_code(tables::DISPOSITIONS, disposition) {
                Some(code) => codec::put_short_integer(code, &mut body),
                None if codec::is_token(disposition) => {
                    codec::put_token_text(disposition, &mut body)?
                }
                None => return Ok(false),
            }
            for (name, value) in params {
                if !parameter(name, value, version, &mut body)? {
                    return Ok(false);
                }
            }
            codec::put_with_length(&body, out)?;
            Ok(true)
        }
        FieldKind::ApplicationId => {
            if let Ok(id) = value.parse::<u64>() {
                codec::put_integer_value(id, out);
            } else if let Some((_, id)) = tables::APPLICATION_IDS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(value))
            {
                codec::put_integer_value(*id, out);
            } else {
                codec::put_text_string(value, out)?;
            }
            Ok(true)
        }
        FieldKind::EncodingVersion => {
            match codec::version_short(value) {
                Some(short) => codec::put_short_integer(short, out),
                None => codec::put_text_string(value, out)?,
            }
            Ok(true)
        }
        FieldKind::Credentials => credentials(value, version, out),
        FieldKind::Challenge => challenge(value, version, out),
        FieldKind::Range => range(value, out),
        FieldKind::Warning => warning(value, out),
        // The encoded cookie forms carry versions and positional path and
        // domain that RFC 6265 cookies do not have: an application header
        // (as Kannel does) keeps the value exactly.
        FieldKind::Cookie | FieldKind::SetCookie | FieldKind::Opaque => Ok(false),
    }
}

/// `bytes=a-b, c-` as one `bytes=…` element per range (the whole value
/// when it is not a byte-range set).
fn range_elements(value: &str) -> Vec<String> {
    let Some(rest) = value
        .strip_prefix("bytes")
        .and_then(|r| r.trim_start().strip_prefix('='))
    else {
        return vec![value.to_owned()];
    };
    split_list(rest)
        .into_iter()
        .map(|spec| format!("bytes={spec}"))
        .collect()
}

/// One byte range (§8.4.2.42): Byte-range (0x80) first [last], or
/// Suffix-byte-range (0x81) length.
fn range(value: &str, out: &mut Vec<u8>) -> Result<bool> {
    let Some(spec) = value.strip_prefix("bytes=") else {
        return Ok(false);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(false);
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u32>().ok();
    let mut body = Vec::new();
    match (first.is_empty(), last.is_empty()) {
        (true, false) => {
            let Some(n) = number(last) else {
                return Ok(false);
            };
            body.push(0x81);
            crate::wsp::uintvar::encode(n, &mut body);
        }
        (false, _) => {
            let Some(a) = number(first) else {
                return Ok(false);
            };
            body.push(0x80);
            crate::wsp::uintvar::encode(a, &mut body);
            if !last.is_empty() {
                let Some(b) = number(last) else {
                    return Ok(false);
                };
                crate::wsp::uintvar::encode(b, &mut body);
            }
        }
        (true, true) => return Ok(false),
    }
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// Group an Authorization / WWW-Authenticate list into one element per
/// credential or challenge: an item of the form `token SP x` (x not `=`)
/// starts a new one.
fn auth_groups(value: &str) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for item in split_list(value) {
        let starts_new = match item.split_once(char::is_whitespace) {
            Some((scheme, rest)) => codec::is_token(scheme) && !rest.trim_start().starts_with('='),
            None => !item.contains('='),
        };
        match groups.last_mut() {
            Some(group) if !starts_new => {
                group.push_str(", ");
                group.push_str(item);
            }
            _ => groups.push(item.to_owned()),
        }
    }
    if groups.is_empty() {
        groups.push(value.to_owned());
    }
    groups
}

/// `Scheme rest` split at the first white space.
fn scheme_and_rest(value: &str) -> (&str, &str) {
    match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) => (scheme, rest.trim()),
        None => (value, ""),
    }
}

/// `name=value` items of an authentication parameter list.
fn auth_params(rest: &str) -> Vec<(&str, Option<&str>)> {
    split_list(rest)
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p, None),
        })
        .collect()
}

/// Credentials (§8.4.2.14): Basic user and password, or a scheme and its
/// parameters.
fn credentials(value: &str, version: EncodingVersion, out: &mut Vec<u8>) -> Result<bool> {
    let (scheme, rest) = scheme_and_rest(value);
    if !codec::is_token(scheme) {
        return Ok(false);
    }
    let mut body = Vec::new();
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(cookie) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return Ok(false);
        };
        let Ok(cookie) = String::from_utf8(cookie) else {
            return Ok(false);
        };
        let Some((user, password)) = cookie.split_once(':') else {
            return Ok(false);
        };
        if user.contains('\0') || password.contains('\0') {
            return Ok(false);
        }
        body.push(0x80);
        codec::put_text_string(user, &mut body)?;
        codec::put_text_string(password, &mut body)?;
    } else {
        codec::put_token_text(scheme, &mut body)?;
        for (name, value) in auth_params(rest) {
            if !parameter(name, value, version, &mut body)? {
                return Ok(false);
            }
        }
    }
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// A Challenge (§8.4.2.52): Basic and its realm, or a scheme, its realm
/// and the other parameters (realm first, as the grammar has it).
fn challenge(value: &str, version: EncodingVersion, out: &mut Vec<u8>) -> Result<bool> {
    let (scheme, rest) = scheme_and_rest(value);
    if !codec::is_token(scheme) {
        return Ok(false);
    }
    let params = auth_params(rest);
    let Some(realm) = params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("realm"))
        .and_then(|(_, v)| *v)
    else {
        return Ok(false);
    };
    let realm = unquote(realm).unwrap_or(realm);
    let others = params
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("realm"));
    let mut body = Vec::new();
    let basic = scheme.eq_ignore_ascii_case("basic");
    if basic {
        body.push(0x80);
    } else {
        codec::put_token_text(scheme, &mut body)?;
    }
    codec::put_text_string(realm, &mut body)?;
    for (name, value) in others {
        if basic || !parameter(name, *value, version, &mut body)? {
            return Ok(false);
        }
    }
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// A Warning (§8.4.2.51): code (its last two digits), agent and quoted
/// text. A warn-date, or a code whose last two digits do not give it back
/// (199), has no encoding: `Ok(false)`.
fn warning(value: &str, out: &mut Vec<u8>) -> Result<bool> {
    let mut parts = value.splitn(3, ' ');
    let (Some(code), Some(agent), Some(text)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(false);
    };
    let Ok(code) = code.parse::<u16>() else {
        return Ok(false);
    };
    let short = (code % 100) as u8;
    let back = match short {
        14 => 214,
        99 => 299,
        s => 100 + u16::from(s),
    };
    let text = text.trim();
    if back != code || !text.starts_with('"') || !text.ends_with('"') || text.len() < 2 {
        return Ok(false);
    }
    // Exactly one quoted string: no unescaped quote inside.
    let inner = text.get(1..text.len() - 1).unwrap_or_default();
    let mut escaped = false;
    for c in inner.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Ok(false),
            _ => {}
        }
    }
    let mut body = Vec::new();
    codec::put_short_integer(short, &mut body);
    codec::put_text_string(agent, &mut body)?;
    codec::put_text_string(text, &mut body)?;
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// A text field value. A value starting with `"` gets the Quoted-string
/// octet in front (else a decoder would take its quote for that octet).
fn text_value_field(value: &str, out: &mut Vec<u8>) -> Result<()> {
    if value.starts_with('"') {
        codec::put_quoted_string(value, out)
    } else {
        codec::put_text_string(value, out)
    }
}

/// A value from a token table as a Short-integer, else as text.
fn token_or_text(table: &[&str], value: &str, out: &mut Vec<u8>) -> Result<bool> {
    match tables::token_code(table, value) {
        Some(code) => codec::put_short_integer(code, out),
        None => text_value_field(value, out)?,
    }
    Ok(true)
}

/// A Field-name: well-known code when `version` has one, else Token-text.
fn field_name(value: &str, version: EncodingVersion, out: &mut Vec<u8>) -> Result<()> {
    match tables::field_by_name(value, version) {
        Some(field) => codec::put_short_integer(field.code, out),
        None => codec::put_token_text(value, out)?,
    }
    Ok(())
}

/// `item[; q=x]`: the plain form when there is no q (and the item is a
/// Short-integer or text), else Value-length, item, Q-value. `item`
/// writes the item and says whether it could.
fn with_q(
    value: &str,
    out: &mut Vec<u8>,
    item: impl Fn(&str, &mut Vec<u8>) -> Result<bool>,
) -> Result<bool> {
    let (name, params) = split_params(value);
    let mut q = None;
    for (param, param_value) in params {
        if !param.eq_ignore_ascii_case("q") {
            return Ok(false);
        }
        match param_value.and_then(codec::q_parse) {
            Some(v) => q = Some(v),
            None => return Ok(false),
        }
    }
    let mut body = Vec::new();
    if !item(name, &mut body)? {
        return Ok(false);
    }
    let q = q.filter(|&q| q < 1000);
    let plain = body.first().is_some_and(|&b| b >= 0x20);
    match q {
        None if plain => out.extend_from_slice(&body),
        None => codec::put_with_length(&body, out)?,
        Some(q) => {
            codec::put_q_value(q, &mut body);
            codec::put_with_length(&body, out)?;
        }
    }
    Ok(true)
}

/// Content-general-form / Accept-general-form, or the plain code or text
/// when there are no parameters.
fn content_general(value: &str, version: EncodingVersion, out: &mut Vec<u8>) -> Result<bool> {
    let (media, params) = split_params(value);
    let mut body = Vec::new();
    match tables::content_type_code(media, version) {
        Some(code) => codec::put_short_integer(code, &mut body),
        None if media.contains('/') && !media.contains(char::is_whitespace) => {
            codec::put_text_string(media, &mut body)?
        }
        None => return Ok(false),
    }
    if params.is_empty() {
        out.extend_from_slice(&body);
        return Ok(true);
    }
    for (name, param_value) in params {
        if name.eq_ignore_ascii_case("q") && param_value.and_then(codec::q_parse) == Some(1000) {
            continue;
        }
        if !parameter(name, param_value, version, &mut body)? {
            return Ok(false);
        }
    }
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// One parameter, typed when `name` is well-known at `version` and the
/// value fits its type, else untyped. `Ok(false)` when neither can carry
/// it (a name that is not a token).
fn parameter(
    name: &str,
    value: Option<&str>,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<bool> {
    if let Some((code, kind)) = tables::param_code(name, version) {
        let mut typed = Vec::new();
        codec::put_short_integer(code, &mut typed);
        if typed_value(kind, value, version, &mut typed)? {
            out.extend_from_slice(&typed);
            return Ok(true);
        }
    }
    if !codec::is_token(name) {
        return Ok(false);
    }
    untyped_parameter(name, value, out)?;
    Ok(true)
}

/// An untyped parameter: Token-text name, Text-value (a quoted value as a
/// Quoted-string, no value as No-value).
fn untyped_parameter(name: &str, value: Option<&str>, out: &mut Vec<u8>) -> Result<()> {
    codec::put_token_text(name, out)?;
    text_value(value, out)
}

/// A Text-value: No-value, Quoted-string (for a quoted HTTP value) or
/// Token-text.
fn text_value(value: Option<&str>, out: &mut Vec<u8>) -> Result<()> {
    match value {
        None | Some("") => out.push(0),
        Some(v) => match unquote(v) {
            Some(content) => codec::put_quoted_string(content, out)?,
            None if v.starts_with('"') => {
                out.push(QUOTED_STRING);
                codec::put_text_string(v, out)?
            }
            None => codec::put_text_string(v, out)?,
        },
    }
    Ok(())
}

/// A typed parameter value; `Ok(false)` when `value` does not fit `kind`.
fn typed_value(
    kind: ParamKind,
    value: Option<&str>,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let Some(value) = value else {
        if kind == ParamKind::NoValue {
            out.push(0);
            return Ok(true);
        }
        return Ok(false);
    };
    let bare = unquote(value).unwrap_or(value);
    match kind {
        ParamKind::Q => match codec::q_parse(bare) {
            Some(q) if q < 1000 => codec::put_q_value(q, out),
            _ => return Ok(false),
        },
        ParamKind::Charset => match tables::charset_mib(bare) {
            Some(mib) => codec::put_integer_value(mib, out),
            None if bare == "*" => out.push(0x80),
            None => return Ok(false),
        },
        ParamKind::Version => match codec::version_short(bare) {
            Some(short) => codec::put_short_integer(short, out),
            None => codec::put_text_string(bare, out)?,
        },
        ParamKind::Integer | ParamKind::DeltaSeconds => match bare.parse::<u64>() {
            Ok(n) => codec::put_integer_value(n, out),
            Err(_) => return Ok(false),
        },
        ParamKind::ShortInteger => match bare.parse::<u8>() {
            Ok(n) if n < 0x80 => codec::put_short_integer(n, out),
            _ => return Ok(false),
        },
        ParamKind::TextString | ParamKind::TextValue => text_value(Some(value), out)?,
        ParamKind::FieldName => {
            if !codec::is_token(bare) {
                return Ok(false);
            }
            field_name(bare, version, out)?
        }
        ParamKind::ContentType => match tables::content_type_code(bare, version) {
            Some(code) => codec::put_short_integer(code, out),
            None => codec::put_text_string(bare, out)?,
        },
        ParamKind::Date => match codec::date_seconds(bare) {
            Some(seconds) => codec::put_long_integer(seconds, out),
            None => return Ok(false),
        },
        ParamKind::NoValue => return Ok(false),
    }
    Ok(true)
}

/// Cache-Control directive (§8.4.2.15).
fn cache_control(value: &str, version: EncodingVersion, out: &mut Vec<u8>) -> Result<bool> {
    let (name, directive_value) = match value.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (value, None),
    };
    let code = tables::token_code(tables::CACHE_CONTROL, name);
    let mut body = Vec::new();
    match (code, directive_value) {
        (Some(code), None) => {
            codec::put_short_integer(code, out);
            return Ok(true);
        }
        (Some(code @ (0 | 7)), Some(fields)) => {
            codec::put_short_integer(code, &mut body);
            for field in split_list(unquote(fields).unwrap_or(fields)) {
                if !codec::is_token(field) {
                    return Ok(false);
                }
                field_name(field, version, &mut body)?;
            }
        }
        (Some(code @ (2 | 3 | 4 | 11)), Some(seconds)) => {
            let Ok(seconds) = seconds.parse::<u64>() else {
                return Ok(false);
            };
            codec::put_short_integer(code, &mut body);
            codec::put_integer_value(seconds, &mut body);
        }
        (None, None) => {
            text_value_field(value, out)?;
            return Ok(true);
        }
        (None, Some(ext)) if codec::is_token(name) => {
            untyped_parameter(name, Some(ext), &mut body)?;
        }
        _ => return Ok(false),
    }
    codec::put_with_length(&body, out)?;
    Ok(true)
}

/// The Content-type value of a Reply, Push or Post: the well-known or
/// general form, or a Text-string when the value does not parse as a
/// media type with parameters; `""` as value-length 0.
pub(crate) fn content_type_value(
    value: &str,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<()> {
    let value = value.trim();
    if value.is_empty() {
        out.push(0);
        return Ok(());
    }
    let mut encoded = Vec::new();
    if content_general(value, version, &mut encoded)? {
        out.extend_from_slice(&encoded);
        Ok(())
    } else {
        codec::put_text_string(value, out)
    }
}
