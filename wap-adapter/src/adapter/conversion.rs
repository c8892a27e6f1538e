//! Content adaptation: the backend's answer made readable by the client
//! that asked (DESIGN §12, issue #5 "Content adaptation").
//!
//! Before the backend is called, [`Converter::prepare`] reads the request
//! into a [`Plan`]: whether the client wants WML (it came through the WAP
//! front, or its `Accept` prefers WML to HTML), whether it takes compiled
//! WML (`application/vnd.wap.wmlc` in `Accept`) and in which charset
//! (`Accept-Charset`: UTF-8 unless only ISO-8859-1 is accepted), the SDU
//! size each card must fit (the WAP front's [`WapClient`], else the
//! application's `sdu-size`), and which card of a split page it asked for:
//! the [`CARD_PARAM`] query parameter is taken off the URI, so the backend
//! never sees it. A WAP client's `Accept-Encoding` is removed too, so the
//! backend answers with a body the converters can read.
//!
//! After the backend answered, [`Converter::adapt`] applies, per the
//! application's `conversions`:
//! - HTML or XHTML to a client that wants WML: [`html_to_wml_cards`], each
//!   card compiled alone within the SDU size as measured by the real WBXML
//!   compiler ([`WbxmlSize`]); the card asked for is served, its
//!   previous/next links carrying [`CARD_PARAM`] on the adapter's own URL;
//!   a card number past the end serves the last card, a missing or
//!   unreadable one the first;
//! - WML (from the backend or from HTML) to a client that takes WMLC:
//!   [`compile_wml`], `application/vnd.wap.wmlc`; otherwise converted WML
//!   is sent as `text/vnd.wap.wml; charset=utf-8` and the backend's WML
//!   untouched;
//! - WML (or WMLC) to a browser (HTTP front, no WML type in `Accept`):
//!   [`wml_to_html`], `text/html; charset=utf-8`.
//!
//! A converted response gets a new `Content-Length`, loses `ETag`,
//! `Content-MD5` and `Accept-Ranges` (they described the backend's bytes);
//! every HTML, WML or WMLC response gets `Vary: Accept`. Any other body
//! (images, text, JSON...), a `HEAD`, an empty body and statuses 1xx, 204,
//! 206 and 304 pass untouched. A conversion that fails (a typed
//! [`ConversionError`], logged) gives 502 and counts; a conversion the
//! application turned off counts as skipped and the body passes as the
//! backend sent it. Conversions run on tokio's blocking pool: bodies are
//! already bounded by `max-body-bytes`, but parsing and compiling a large
//! page is CPU work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{
    HeaderValue, ACCEPT, ACCEPT_CHARSET, ACCEPT_ENCODING, ACCEPT_RANGES, CONTENT_ENCODING,
    CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, VARY,
};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use overlay_proto::counters::Labelled;
use tracing::warn;

use super::{plain, Front, Origin, WapClient};
use crate::config::Conversions;
use crate::convert::{
    html_to_wml_cards, wml_to_html, CompiledSize, ConvertError, Html2WmlOptions, SourceLengthBound,
};
use crate::wbxml::{compile_wml, decompile, Charset, CompileError, CompileOptions, DecompileError};

/// The query parameter naming the card of a split page (1-based). Taken off
/// the request before the backend sees it.
pub const CARD_PARAM: &str = "_card";

/// WML's media type.
pub const WML_TYPE: &str = "text/vnd.wap.wml";
/// Compiled WML's (WBXML) media type.
pub const WMLC_TYPE: &str = "application/vnd.wap.wmlc";
/// HTML's media type.
const HTML_TYPE: &str = "text/html";

/// Media types read as HTML.
const HTML_TYPES: [&str; 3] = [
    HTML_TYPE,
    "application/xhtml+xml",
    "application/vnd.wap.xhtml+xml",
];

/// Names of ISO-8859-1 (IANA aliases) in `Accept-Charset`.
const LATIN1_NAMES: [&str; 8] = [
    "iso-8859-1",
    "iso_8859-1",
    "iso_8859-1:1987",
    "iso-ir-100",
    "latin1",
    "l1",
    "ibm819",
    "cp819",
];

/// What the request asks of the adaptation, read before the backend is
/// called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The client wants WML (WAP front, or `Accept` prefers WML to HTML).
    pub wants_wml: bool,
    /// The client takes compiled WML (`application/vnd.wap.wmlc`).
    pub accepts_wmlc: bool,
    /// A browser: HTTP front and no WML type in `Accept`.
    pub browser: bool,
    /// The charset WMLC is compiled in.
    pub charset: Charset,
    /// The card asked for (1-based; 1 when the request named none).
    pub card: usize,
    /// The compiled size each card must fit.
    pub sdu_size: usize,
    /// The request's absolute URL without [`CARD_PARAM`] (links are
    /// resolved against it).
    pub page_url: String,
    /// A `HEAD` request: nothing is converted.
    pub head: bool,
}

/// Why a conversion failed (the client gets 502).
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// HTML could not be converted to WML.
    #[error("HTML to WML: {0}")]
    Html2Wml(ConvertError),
    /// WML could not be converted to HTML.
    #[error("WML to HTML: {0}")]
    Wml2Html(ConvertError),
    /// WML could not be compiled.
    #[error("WML to WBXML: {0}")]
    Wbxml(CompileError),
    /// The backend's WMLC could not be read.
    #[error("decompiling the backend's WMLC: {0}")]
    Decompile(DecompileError),
    /// The body is content-encoded (compressed): nothing to convert.
    #[error("the backend's body is content-encoded ({0})")]
    Encoded(String),
    /// The converter returned no card at all.
    #[error("HTML to WML gave no card")]
    NoCard,
    /// The conversion task ended abnormally.
    #[error("conversion task: {0}")]
    Task(String),
}

/// The compiled size of a deck as the real WBXML compiler writes it
/// (`options`: charset and string table as the client will get them); a
/// deck it cannot compile is measured by [`SourceLengthBound`], an upper
/// bound of any compiler's output.
#[derive(Debug, Clone)]
pub struct WbxmlSize(pub CompileOptions);

impl CompiledSize for WbxmlSize {
    fn compiled_len(&self, wml: &str) -> usize {
        match compile_wml(wml.as_bytes(), &self.0) {
            Ok(bytes) => bytes.len(),
            Err(_) => SourceLengthBound.compiled_len(wml),
        }
    }
}

/// One application's content adaptation.
#[derive(Debug)]
pub struct Converter {
    conversions: Conversions,
    sdu_size: usize,
    counters: Arc<ConversionCounters>,
}

/// Counters per conversion: done, failed (502), skipped (turned off).
#[derive(Debug, Default)]
struct ConversionCounters {
    html2wml: Outcomes,
    wml2html: Outcomes,
    wbxml: Outcomes,
    /// Conversion tasks that ended abnormally (a bug: a panic).
    aborted: AtomicU64,
}

#[derive(Debug, Default)]
struct Outcomes {
    done: AtomicU64,
    failed: AtomicU64,
    off: AtomicU64,
}

/// Which conversion, for the counters.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Html2Wml,
    Wml2Html,
    Wbxml,
}

impl ConversionCounters {
    fn of(&self, kind: Kind) -> &Outcomes {
        match kind {
            Kind::Html2Wml => &self.html2wml,
            Kind::Wml2Html => &self.wml2html,
            Kind::Wbxml => &self.wbxml,
        }
    }
}

/// What a body is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Html,
    Wml,
    Wmlc,
    Other,
}

impl Converter {
    /// The adaptation of an application with `conversions` and `sdu_size`
    /// (its default card bound).
    pub fn new(conversions: Conversions, sdu_size: usize) -> Self {
        Converter {
            conversions,
            sdu_size,
            counters: Arc::default(),
        }
    }

    /// Reads `request` into a [`Plan`], taking [`CARD_PARAM`] off its URI
    /// and, for a client that wants WML, `Accept-Encoding` off its headers.
    pub fn prepare(&self, request: &mut Request<Bytes>, origin: Origin) -> Plan {
        let headers = request.headers();
        let accept = joined(headers, ACCEPT);
        let wml_q = explicit_quality(&accept, WML_TYPE).max(explicit_quality(&accept, WMLC_TYPE));
        let html_q = explicit_quality(&accept, HTML_TYPE);
        let wants_wml = match origin.front {
            // A WAP client wants WML unless it says it prefers HTML.
            Front::Wap => html_q <= wml_q,
            Front::Http => wml_q > 0 && wml_q > html_q,
        };
        let accepts_wmlc = explicit_quality(&accept, WMLC_TYPE) > 0;
        let browser = origin.front == Front::Http && wml_q <= 0;
        let charset = wmlc_charset(&joined(headers, ACCEPT_CHARSET));
        // The WAP front's limit is on the whole WSP Reply: the card leaves
        // room for the Reply's status, lengths, content type and headers.
        let sdu_size = request
            .extensions()
            .get::<WapClient>()
            .map(|client| client.sdu_size)
            .filter(|&size| size > 0)
            .map_or(self.sdu_size, |size| size.saturating_sub(WSP_REPLY_MARGIN));
        let mut card = 1;
        if wants_wml {
            let (uri, asked) = take_card_param(request.uri());
            if let Some(asked) = asked {
                card = asked.max(1);
            }
            *request.uri_mut() = uri;
            request.headers_mut().remove(ACCEPT_ENCODING);
        }
        Plan {
            wants_wml,
            accepts_wmlc,
            browser,
            charset,
            card,
            sdu_size,
            page_url: page_url(request, origin),
            head: request.method() == Method::HEAD,
        }
    }

    /// The backend's `response` adapted per `plan` (see the module docs).
    pub async fn adapt(&self, response: Response<Bytes>, plan: Plan) -> Response<Bytes> {
        let conversions = self.conversions;
        let counters = Arc::clone(&self.counters);
        let task =
            tokio::task::spawn_blocking(move || adapt_now(conversions, &counters, response, &plan));
        match task.await {
            Ok(response) => response,
            Err(error) => {
                // Only a panic (a bug) gets here; the response is lost
                // with it.
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                let error = ConversionError::Task(error.to_string());
                warn!(%error, "content conversion failed");
                failure()
            }
        }
    }

    /// The counters, `conversion_<kind>_<done|failed|off>` and
    /// `conversion_aborted`.
    pub fn counters(&self) -> Vec<Labelled> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            Labelled::new(
                "conversion_html2wml_done",
                "HTML pages converted to WML",
                get(&c.html2wml.done),
            ),
            Labelled::new(
                "conversion_html2wml_failed",
                "HTML to WML conversions failed (502)",
                get(&c.html2wml.failed),
            ),
            Labelled::new(
                "conversion_html2wml_off",
                "HTML to a WML client passed as is: html2wml off",
                get(&c.html2wml.off),
            ),
            Labelled::new(
                "conversion_wml2html_done",
                "WML decks converted to HTML",
                get(&c.wml2html.done),
            ),
            Labelled::new(
                "conversion_wml2html_failed",
                "WML to HTML conversions failed (502)",
                get(&c.wml2html.failed),
            ),
            Labelled::new(
                "conversion_wml2html_off",
                "WML to a browser passed as is: wml2html off",
                get(&c.wml2html.off),
            ),
            Labelled::new(
                "conversion_wbxml_done",
                "WML decks compiled to WBXML",
                get(&c.wbxml.done),
            ),
            Labelled::new(
                "conversion_wbxml_failed",
                "WML to WBXML compilations failed (502)",
                get(&c.wbxml.failed),
            ),
            Labelled::new(
                "conversion_wbxml_off",
                "WML to a WMLC client sent as text: wbxml off",
                get(&c.wbxml.off),
            ),
            Labelled::new(
                "conversion_aborted",
                "conversion tasks that ended abnormally (502)",
                get(&c.aborted),
            ),
        ]
    }
}

/// The adaptation itself (blocking: parsing and compiling).
fn adapt_now(
    conversions: Conversions,
    counters: &ConversionCounters,
    response: Response<Bytes>,
    plan: &Plan,
) -> Response<Bytes> {
    let status = response.status();
    if plan.head
        || response.body().is_empty()
        || status.is_informational()
        || matches!(
            status,
            StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return response;
    }
    let body = body_kind(response.headers());
    if body == Body::Other {
        return response;
    }
    let (mut parts, bytes) = response.into_parts();
    add_vary(&mut parts.headers, "Accept");
    let step = match (body, plan.wants_wml, plan.browser) {
        (Body::Html, true, _) => Step::Html2Wml,
        (Body::Wml, true, _) => Step::WmlOut,
        (Body::Wml | Body::Wmlc, false, true) => Step::Wml2Html,
        _ => return Response::from_parts(parts, bytes),
    };
    let enabled = match step {
        Step::Html2Wml => conversions.html2wml,
        Step::Wml2Html => conversions.wml2html,
        Step::WmlOut => true,
    };
    if !enabled {
        let kind = if step == Step::Html2Wml {
            Kind::Html2Wml
        } else {
            Kind::Wml2Html
        };
        counters.of(kind).off.fetch_add(1, Ordering::Relaxed);
        return Response::from_parts(parts, bytes);
    }
    let compile = plan.accepts_wmlc && step != Step::Wml2Html;
    if compile && !conversions.wbxml {
        counters.wbxml.off.fetch_add(1, Ordering::Relaxed);
    }
    let compile = compile && conversions.wbxml;
    if step == Step::WmlOut && !compile {
        // The backend's WML, as it sent it.
        return Response::from_parts(parts, bytes);
    }
    let kind = match step {
        Step::Html2Wml => Kind::Html2Wml,
        Step::Wml2Html => Kind::Wml2Html,
        Step::WmlOut => Kind::Wbxml,
    };
    if let Some(encoding) = parts
        .headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
    {
        return failed(
            counters,
            kind,
            ConversionError::Encoded(encoding.to_owned()),
        );
    }
    let options = CompileOptions {
        charset: if compile { plan.charset } else { Charset::Utf8 },
        string_table: true,
    };
    let converted = match step {
        Step::Html2Wml => html2wml(&bytes, plan, &options).map(|wml| {
            counters.html2wml.done.fetch_add(1, Ordering::Relaxed);
            (
                Bytes::from(wml.into_bytes()),
                "text/vnd.wap.wml; charset=utf-8",
            )
        }),
        Step::WmlOut => Ok((bytes, WML_TYPE)),
        Step::Wml2Html => {
            let wml = if body == Body::Wmlc {
                decompile(&bytes)
                    .map(String::into_bytes)
                    .map_err(ConversionError::Decompile)
            } else {
                Ok(bytes.to_vec())
            };
            wml.and_then(|wml| wml_to_html(&wml, &plan.page_url).map_err(ConversionError::Wml2Html))
                .map(|html| (Bytes::from(html.into_bytes()), "text/html; charset=utf-8"))
        }
    };
    let (mut body, mut content_type) = match converted {
        Ok(converted) => converted,
        Err(error) => return failed(counters, kind, error),
    };
    if compile {
        match compile_wml(&body, &options) {
            Ok(wmlc) => {
                counters.wbxml.done.fetch_add(1, Ordering::Relaxed);
                body = Bytes::from(wmlc);
                content_type = WMLC_TYPE;
            }
            Err(error) => return failed(counters, Kind::Wbxml, ConversionError::Wbxml(error)),
        }
        add_vary(&mut parts.headers, "Accept-Charset");
    }
    if step == Step::Wml2Html {
        counters.wml2html.done.fetch_add(1, Ordering::Relaxed);
    }
    let headers = &mut parts.headers;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    for stale in [ETAG, ACCEPT_RANGES] {
        headers.remove(stale);
    }
    headers.remove("content-md5");
    Response::from_parts(parts, body)
}

/// What [`adapt_now`] does with a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// HTML to WML (then maybe WMLC).
    Html2Wml,
    /// The backend's WML to a WML client (maybe compiled).
    WmlOut,
    /// WML or WMLC to HTML.
    Wml2Html,
}

/// Octets of a WAP client's SDU left for the WSP Reply around a card
/// (status, header and body lengths, content type, headers such as
/// `Vary`): the WAP front answers 413 to a Reply over the SDU.
pub const WSP_REPLY_MARGIN: usize = 64;

/// The card `plan` asks for, converted from `html`.
fn html2wml(html: &[u8], plan: &Plan, options: &CompileOptions) -> Result<String, ConversionError> {
    let sizer = WbxmlSize(options.clone());
    let cards = html_to_wml_cards(
        html,
        &plan.page_url,
        CARD_PARAM,
        &Html2WmlOptions::with_max_card_size(plan.sdu_size),
        &sizer,
    )
    .map_err(ConversionError::Html2Wml)?;
    let index = plan.card.min(cards.len()).saturating_sub(1);
    cards.into_iter().nth(index).ok_or(ConversionError::NoCard)
}

/// Counts and logs a failed conversion; the 502 the client gets.
fn failed(counters: &ConversionCounters, kind: Kind, error: ConversionError) -> Response<Bytes> {
    counters.of(kind).failed.fetch_add(1, Ordering::Relaxed);
    warn!(%error, "content conversion failed");
    failure()
}

/// The response to a failed conversion.
fn failure() -> Response<Bytes> {
    let mut response = plain(StatusCode::BAD_GATEWAY, "content conversion failed\n");
    add_vary(response.headers_mut(), "Accept");
    response
}

/// What the `Content-Type` says the body is.
fn body_kind(headers: &HeaderMap) -> Body {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return Body::Other;
    };
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if HTML_TYPES.contains(&media.as_str()) {
        Body::Html
    } else if media == WML_TYPE {
        Body::Wml
    } else if media == WMLC_TYPE {
        Body::Wmlc
    } else {
        Body::Other
    }
}

/// Adds `name` to `Vary` unless it is there (or `*` is).
fn add_vary(headers: &mut HeaderMap, name: &'static str) {
    let present = headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(name));
    if !present {
        headers.append(VARY, HeaderValue::from_static(name));
    }
}

/// Every value of header `name`, joined with `,`.
fn joined(headers: &HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// Quality of a media type or charset not listed (below any listed one,
/// `q=0` included).
const NOT_LISTED: i32 = -1;

/// The elements of an `Accept`-style list: each token (lowercased) with its
/// quality in thousandths (`q` missing or unreadable: 1000).
fn accept_list(value: &str) -> impl Iterator<Item = (String, i32)> + '_ {
    value.split(',').filter_map(|element| {
        let mut params = element.split(';');
        let token = params.next()?.trim().to_ascii_lowercase();
        if token.is_empty() {
            return None;
        }
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1000, |(_, v)| quality(v.trim()));
        Some((token, q))
    })
}

/// A `q` value in thousandths (unreadable: 1000, as if absent).
fn quality(value: &str) -> i32 {
    match value.parse::<f32>() {
        Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as i32,
        _ => 1000,
    }
}

/// The quality `accept` gives `media` by name (wildcards ignored: a
/// `*/*` says nothing about WML); [`NOT_LISTED`] if it does not name it.
fn explicit_quality(accept: &str, media: &str) -> i32 {
    accept_list(accept)
        .filter(|(token, _)| token == media)
        .map(|(_, q)| q)
        .max()
        .unwrap_or(NOT_LISTED)
}

/// The charset WMLC is compiled in: ISO-8859-1 when `accept_charset`
/// accepts it and neither UTF-8 nor `*`; UTF-8 otherwise.
fn wmlc_charset(accept_charset: &str) -> Charset {
    let mut latin1 = false;
    let mut utf8 = false;
    for (token, _) in accept_list(accept_charset).filter(|(_, q)| *q > 0) {
        if LATIN1_NAMES.contains(&token.as_str()) {
            latin1 = true;
        } else if token == "utf-8" || token == "utf8" || token == "*" {
            utf8 = true;
        }
    }
    if latin1 && !utf8 {
        Charset::Iso8859_1
    } else {
        Charset::Utf8
    }
}

/// `uri` without [`CARD_PARAM`], and the card it named (`Some(0)` for an
/// unreadable number). The other query parameters keep their bytes.
fn take_card_param(uri: &Uri) -> (Uri, Option<usize>) {
    let Some(query) = uri.query() else {
        return (uri.clone(), None);
    };
    let mut card = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let mut decoded = url::form_urlencoded::parse(pair.as_bytes());
        match decoded.next() {
            Some((key, value)) if key == CARD_PARAM => {
                card = Some(value.trim().parse::<usize>().unwrap_or(0));
            }
            _ => kept.push(pair),
        }
    }
    if card.is_none() {
        return (uri.clone(), None);
    }
    let path = uri.path();
    let path_and_query = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    match Uri::from_parts(parts) {
        Ok(uri) => (uri, card),
        Err(_) => (uri.clone(), card),
    }
}

/// The request's absolute URL: its own if absolute (WSP), else `http://`,
/// the `Host` header (or the application's address) and the path.
fn page_url(request: &Request<Bytes>, origin: Origin) -> String {
    let uri = request.uri();
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let path_and_query = if path_and_query.starts_with('/') {
        path_and_query.to_owned()
    } else {
        format!("/{path_and_query}")
    };
    let destination = if origin.destination.port() == 80 {
        format!("[{}]", origin.destination.ip())
    } else {
        origin.destination.to_string()
    };
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        request
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let scheme = uri.scheme_str().unwrap_or("http");
    for authority in authority.iter().chain(std::iter::once(&destination)) {
        let candidate = format!("{scheme}://{authority}{path_and_query}");
        if url::Url::parse(&candidate).is_ok() {
            return candidate;
        }
    }
    format!("http://{destination}/")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn origin(front: Front) -> Origin {
        Origin {
            source: "[2002::1]:4000".parse().unwrap(),
            destination: "[2002::10]:80".parse().unwrap(),
            front,
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
        let mut builder = Request::builder().uri(uri);
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(Bytes::new()).unwrap()
    }

    fn plan(front: Front, headers: &[(&str, &str)]) -> Plan {
        let converter = Converter::new(Conversions::default(), 1400);
        converter.prepare(&mut request("/p", headers), origin(front))
    }

    #[test]
    fn who_wants_wml() {
        let wml = [("accept", "text/vnd.wap.wml")];
        assert!(plan(Front::Http, &wml).wants_wml);
        assert!(!plan(Front::Http, &wml).browser);
        let both = [("accept", "text/html, text/vnd.wap.wml;q=0.5")];
        assert!(!plan(Front::Http, &both).wants_wml);
        assert!(
            !plan(Front::Http, &both).browser,
            "it reads WML: no wml2html"
        );
        let any = [("accept", "*/*")];
        assert!(!plan(Front::Http, &any).wants_wml);
        assert!(plan(Front::Http, &any).browser);
        assert!(plan(Front::Http, &[]).browser);
        let wmlc = [("accept", "application/vnd.wap.wmlc, */*")];
        assert!(plan(Front::Http, &wmlc).wants_wml && plan(Front::Http, &wmlc).accepts_wmlc);
        assert!(plan(Front::Wap, &[]).wants_wml);
        assert!(plan(Front::Wap, &any).wants_wml);
        assert!(!plan(Front::Wap, &both).wants_wml, "prefers HTML");
        assert!(!plan(Front::Wap, &[]).browser);
    }

    #[test]
    fn charset_is_latin1_only_when_nothing_else_is_accepted() {
        for (value, expected) in [
            ("", Charset::Utf8),
            ("iso-8859-1", Charset::Iso8859_1),
            ("ISO-8859-1;q=0.9, latin1", Charset::Iso8859_1),
            ("iso-8859-1, utf-8", Charset::Utf8),
            ("iso-8859-1, *", Charset::Utf8),
            ("iso-8859-1, utf-8;q=0", Charset::Iso8859_1),
            ("us-ascii", Charset::Utf8),
        ] {
            assert_eq!(wmlc_charset(value), expected, "{value:?}");
        }
    }

    #[test]
    fn card_param_is_taken_off_and_the_rest_kept_byte_for_byte() {
        let (uri, card) = take_card_param(&"/a?x=%20y&_card=3&z".parse().unwrap());
        assert_eq!(uri, "/a?x=%20y&z");
        assert_eq!(card, Some(3));
        let (uri, card) = take_card_param(&"/a?_card=zz".parse().unwrap());
        assert_eq!(uri, "/a");
        assert_eq!(card, Some(0));
        let (uri, card) = take_card_param(&"http://h/a?q=1".parse().unwrap());
        assert_eq!(uri, "http://h/a?q=1");
        assert_eq!(card, None);
        let (uri, _) = take_card_param(&"http://h/a?_card=2".parse().unwrap());
        assert_eq!(uri, "http://h/a");

        let converter = Converter::new(Conversions::default(), 1400);
        let mut req = request(
            "/p?_card=2&k=v",
            &[("host", "app.example"), ("accept-encoding", "gzip")],
        );
        let plan = converter.prepare(&mut req, origin(Front::Wap));
        assert_eq!(plan.card, 2);
        assert_eq!(plan.page_url, "http://app.example/p?k=v");
        assert_eq!(req.uri(), "/p?k=v");
        assert!(req.headers().get(ACCEPT_ENCODING).is_none());

        // A browser's card parameter is the backend's business.
        let mut req = request("/p?_card=2", &[("accept-encoding", "gzip")]);
        let plan = converter.prepare(&mut req, origin(Front::Http));
        assert_eq!(plan.card, 1);
        assert_eq!(plan.page_url, "http://[2002::10]/p?_card=2");
        assert_eq!(req.uri(), "/p?_card=2");
        assert!(req.headers().get(ACCEPT_ENCODING).is_some());
    }

    #[test]
    fn sdu_size_comes_from_the_wap_client_when_it_said_one() {
        let converter = Converter::new(Conversions::default(), 1400);
        let mut req = request("/p", &[]);
        req.extensions_mut().insert(WapClient { sdu_size: 600 });
        assert_eq!(
            converter.prepare(&mut req, origin(Front::Wap)).sdu_size,
            600 - WSP_REPLY_MARGIN
        );
        let mut req = request("/p", &[]);
        req.extensions_mut().insert(WapClient { sdu_size: 0 });
        assert_eq!(
            converter.prepare(&mut req, origin(Front::Wap)).sdu_size,
            1400
        );
    }

    #[test]
    fn a_bad_host_header_falls_back_to_the_application_address() {
        let req = request("/p?q", &[("host", "bad host/")]);
        assert_eq!(page_url(&req, origin(Front::Http)), "http://[2002::10]/p?q");
    }

    #[test]
    fn compiled_size_falls_back_to_the_source_bound() {
        let sizer = WbxmlSize(CompileOptions::default());
        let deck = "<?xml version=\"1.0\"?><wml><card><p>hi</p></card></wml>";
        assert_eq!(
            sizer.compiled_len(deck),
            compile_wml(deck.as_bytes(), &CompileOptions::default())
                .unwrap()
                .len()
        );
        assert_eq!(
            sizer.compiled_len("<wml>"),
            SourceLengthBound.compiled_len("<wml>")
        );
    }
}
