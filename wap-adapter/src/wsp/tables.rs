//! The assigned-number tables of WAP-230-WSP Appendix A: field names
//! (Table 39, code page 1, up to encoding version 1.4), content types
//! (Table 40, up to 1.4), parameters (Table 38), character sets (Table 42,
//! IANA MIBenum), languages (Table 41), methods (Table 34), and the token
//! tables of §8.4.2 (Cache-Control, Content-Encoding, Accept-Ranges,
//! Content-Disposition). Lookups by name are ASCII case-insensitive.

/// A WSP encoding version (§8.4.2.70): `major.minor`, stored as
/// `major << 4 | minor`. It decides which assigned numbers may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EncodingVersion(u8);

impl EncodingVersion {
    /// WSP 1.1.
    pub const V1_1: EncodingVersion = EncodingVersion(0x11);
    /// WSP 1.2 (what Kannel's encoder uses).
    pub const V1_2: EncodingVersion = EncodingVersion(0x12);
    /// WSP 1.3.
    pub const V1_3: EncodingVersion = EncodingVersion(0x13);
    /// WSP 1.4, the newest this codec knows the tables of.
    pub const V1_4: EncodingVersion = EncodingVersion(0x14);

    /// The version `major.minor` (major 1–7, minor 0–15).
    pub fn new(major: u8, minor: u8) -> EncodingVersion {
        EncodingVersion(((major & 0x07) << 4) | (minor & 0x0f))
    }

    /// Major version.
    pub fn major(self) -> u8 {
        self.0 >> 4
    }

    /// Minor version.
    pub fn minor(self) -> u8 {
        self.0 & 0x0f
    }
}

impl std::fmt::Display for EncodingVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major(), self.minor())
    }
}

const V11: EncodingVersion = EncodingVersion::V1_1;
const V12: EncodingVersion = EncodingVersion::V1_2;
const V13: EncodingVersion = EncodingVersion::V1_3;
const V14: EncodingVersion = EncodingVersion::V1_4;
const V15: EncodingVersion = EncodingVersion(0x15);
const V16: EncodingVersion = EncodingVersion(0x16);

/// How a header's value is encoded (the grammar of its §8.4.2 section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Accept (§8.4.2.7): media ranges with parameters and q.
    Accept,
    /// Accept-Charset (§8.4.2.8).
    AcceptCharset,
    /// Accept-Encoding (§8.4.2.9).
    AcceptEncoding,
    /// Accept-Language (§8.4.2.10).
    AcceptLanguage,
    /// Accept-Ranges (§8.4.2.11).
    AcceptRanges,
    /// An Integer-value: Age, Content-Length, Max-Forwards,
    /// Bearer-Indication.
    Integer,
    /// Allow, Public: well-known methods or tokens.
    Method,
    /// Cache-Control (§8.4.2.15).
    CacheControl,
    /// Connection (§8.4.2.16).
    Connection,
    /// Content-Encoding, Transfer-Encoding's sibling table (§8.4.2.18).
    ContentEncoding,
    /// Content-Language (§8.4.2.19).
    ContentLanguage,
    /// Content-MD5 (§8.4.2.21): 16 octets, shown in base64.
    Md5,
    /// Content-Type (§8.4.2.24).
    ContentType,
    /// A Date-value: Date, Expires, Last-Modified, If-(Un)Modified-Since,
    /// X-Wap-Tod.
    Date,
    /// A Text-string (URIs, User-Agent, Server, Host, From, Via, …).
    Text,
    /// An entity tag or `*` (ETag, If-Match, If-None-Match).
    EntityTag,
    /// If-Range: an entity tag or a date.
    IfRange,
    /// Pragma (§8.4.2.33).
    Pragma,
    /// Retry-After (§8.4.2.44).
    RetryAfter,
    /// Transfer-Encoding (§8.4.2.46).
    TransferEncoding,
    /// Vary, Trailer: field names.
    FieldName,
    /// Content-Disposition (§8.4.2.53).
    ContentDisposition,
    /// X-Wap-Application-Id, Accept-Application: an URI or a number.
    ApplicationId,
    /// Push-Flag: a Short-integer.
    ShortInteger,
    /// Encoding-Version (§8.4.2.70).
    EncodingVersion,
    /// Authorization, Proxy-Authorization (§8.4.2.14): Basic or a scheme
    /// with parameters.
    Credentials,
    /// WWW-Authenticate, Proxy-Authenticate (§8.4.2.52): Basic or a scheme,
    /// a realm and parameters.
    Challenge,
    /// Range (§8.4.2.42): byte ranges.
    Range,
    /// Warning (§8.4.2.51): code, agent, text.
    Warning,
    /// Cookie (§8.4.2.68): decoded to RFC 6265 `name=value` pairs; encoded
    /// as an application header.
    Cookie,
    /// Set-Cookie (§8.4.2.67): decoded to `name=value; attr=…`; encoded as
    /// an application header.
    SetCookie,
    /// A structured value this codec does not decode (Content-Range,
    /// Profile-Diff, TE, Expect, X-Wap-Security, …): text values pass,
    /// others are reported.
    Opaque,
}

/// One row of Table 39: a well-known field name on code page 1.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Its code (without the high bit).
    pub code: u8,
    /// Its canonical name.
    pub name: &'static str,
    /// The encoding version that assigned it.
    pub since: EncodingVersion,
    /// How its value is encoded.
    pub kind: FieldKind,
}

const fn field(code: u8, name: &'static str, since: EncodingVersion, kind: FieldKind) -> Field {
    Field {
        code,
        name,
        since,
        kind,
    }
}

use FieldKind as K;

/// Table 39 (code page 1) up to encoding version 1.4. Names assigned
/// twice (Accept-Charset, Accept-Encoding, Cache-Control, Content-Range,
/// Content-Disposition, Profile-Warning) appear under both codes; the
/// encoder uses the first, which every version decodes.
pub const FIELDS: &[Field] = &[
    field(0x00, "Accept", V11, K::Accept),
    field(0x01, "Accept-Charset", V11, K::AcceptCharset),
    field(0x02, "Accept-Encoding", V11, K::AcceptEncoding),
    field(0x03, "Accept-Language", V11, K::AcceptLanguage),
    field(0x04, "Accept-Ranges", V11, K::AcceptRanges),
    field(0x05, "Age", V11, K::Integer),
    field(0x06, "Allow", V11, K::Method),
    field(0x07, "Authorization", V11, K::Credentials),
    field(0x08, "Cache-Control", V11, K::CacheControl),
    field(0x09, "Connection", V11, K::Connection),
    field(0x0a, "Content-Base", V11, K::Text),
    field(0x0b, "Content-Encoding", V11, K::ContentEncoding),
    field(0x0c, "Content-Language", V11, K::ContentLanguage),
    field(0x0d, "Content-Length", V11, K::Integer),
    field(0x0e, "Content-Location", V11, K::Text),
    field(0x0f, "Content-MD5", V11, K::Md5),
    field(0x10, "Content-Range", V11, K::Opaque),
    field(0x11, "Content-Type", V11, K::ContentType),
    field(0x12, "Date", V11, K::Date),
    field(0x13, "Etag", V11, K::EntityTag),
    field(0x14, "Expires", V11, K::Date),
    field(0x15, "From", V11, K::Text),
    field(0x16, "Host", V11, K::Text),
    field(0x17, "If-Modified-Since", V11, K::Date),
    field(0x18, "If-Match", V11, K::EntityTag),
    field(0x19, "If-None-Match", V11, K::EntityTag),
    field(0x1a, "If-Range", V11, K::IfRange),
    field(0x1b, "If-Unmodified-Since", V11, K::Date),
    field(0x1c, "Location", V11, K::Text),
    field(0x1d, "Last-Modified", V11, K::Date),
    field(0x1e, "Max-Forwards", V11, K::Integer),
    field(0x1f, "Pragma", V11, K::Pragma),
    field(0x20, "Proxy-Authenticate", V11, K::Challenge),
    field(0x21, "Proxy-Authorization", V11, K::Credentials),
    field(0x22, "Public", V11, K::Method),
    field(0x23, "Range", V11, K::Range),
    field(0x24, "Referer", V11, K::Text),
    field(0x25, "Retry-After", V11, K::RetryAfter),
    field(0x26, "Server", V11, K::Text),
    field(0x27, "Transfer-Encoding", V11, K::TransferEncoding),
    field(0x28, "Upgrade", V11, K::Text),
    field(0x29, "User-Agent", V11, K::Text),
    field(0x2a, "Vary", V11, K::FieldName),
    field(0x2b, "Via", V11, K::Text),
    field(0x2c, "Warning", V11, K::Warning),
    field(0x2d, "WWW-Authenticate", V11, K::Challenge),
    field(0x2e, "Content-Disposition", V11, K::ContentDisposition),
    field(0x2f, "X-Wap-Application-Id", V12, K::ApplicationId),
    field(0x30, "X-Wap-Content-URI", V12, K::Text),
    field(0x31, "X-Wap-Initiator-URI", V12, K::Text),
    field(0x32, "Accept-Application", V12, K::ApplicationId),
    field(0x33, "Bearer-Indication", V12, K::Integer),
    field(0x34, "Push-Flag", V12, K::ShortInteger),
    field(0x35, "Profile", V12, K::Text),
    field(0x36, "Profile-Diff", V12, K::Opaque),
    field(0x37, "Profile-Warning", V12, K::Opaque),
    field(0x38, "Expect", V13, K::Opaque),
    field(0x39, "TE", V13, K::Opaque),
    field(0x3a, "Trailer", V13, K::FieldName),
    field(0x3b, "Accept-Charset", V13, K::AcceptCharset),
    field(0x3c, "Accept-Encoding", V13, K::AcceptEncoding),
    field(0x3d, "Cache-Control", V13, K::CacheControl),
    field(0x3e, "Content-Range", V13, K::Opaque),
    field(0x3f, "X-Wap-Tod", V13, K::Date),
    field(0x40, "Content-ID", V13, K::Text),
    field(0x41, "Set-Cookie", V13, K::SetCookie),
    field(0x42, "Cookie", V13, K::Cookie),
    field(0x43, "Encoding-Version", V13, K::EncodingVersion),
    field(0x44, "Profile-Warning", V14, K::Opaque),
    field(0x45, "Content-Disposition", V14, K::ContentDisposition),
    field(0x46, "X-Wap-Security", V14, K::Opaque),
    field(0x47, "Cache-Control", V14, K::CacheControl),
];

/// The field with well-known code `code`, if assigned (by any version:
/// a decoder accepts newer codes than it was asked to produce).
pub fn field_by_code(code: u8) -> Option<&'static Field> {
    FIELDS.get(usize::from(code)).filter(|f| f.code == code)
}

/// The first field named `name` that `version` may use.
pub fn field_by_name(name: &str, version: EncodingVersion) -> Option<&'static Field> {
    FIELDS
        .iter()
        .find(|f| f.since <= version && f.name.eq_ignore_ascii_case(name))
}

/// The field kind for `name` whatever the version (for text headers).
pub fn kind_by_name(name: &str) -> Option<FieldKind> {
    FIELDS
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.kind)
}

/// Table 40 (as OMNA maintains it): well-known content types, by code,
/// with the version that assigned each. The encoder uses codes up to its
/// target version (1.4 at most in practice); the decoder knows them all.
pub const CONTENT_TYPES: &[(&str, EncodingVersion)] = &[
    ("*/*", V11),
    ("text/*", V11),
    ("text/html", V11),
    ("text/plain", V11),
    ("text/x-hdml", V11),
    ("text/x-ttml", V11),
    ("text/x-vCalendar", V11),
    ("text/x-vCard", V11),
    ("text/vnd.wap.wml", V11),
    ("text/vnd.wap.wmlscript", V11),
    ("text/vnd.wap.wta-event", V11),
    ("multipart/*", V11),
    ("multipart/mixed", V11),
    ("multipart/form-data", V11),
    ("multipart/byteranges", V11),
    ("multipart/alternative", V11),
    ("application/*", V11),
    ("application/java-vm", V11),
    ("application/x-www-form-urlencoded", V11),
    ("application/x-hdmlc", V11),
    ("application/vnd.wap.wmlc", V11),
    ("application/vnd.wap.wmlscriptc", V11),
    ("application/vnd.wap.wta-eventc", V11),
    ("application/vnd.wap.uaprof", V11),
    ("application/vnd.wap.wtls-ca-certificate", V11),
    ("application/vnd.wap.wtls-user-certificate", V11),
    ("application/x-x509-ca-cert", V11),
    ("application/x-x509-user-cert", V11),
    ("image/*", V11),
    ("image/gif", V11),
    ("image/jpeg", V11),
    ("image/tiff", V11),
    ("image/png", V11),
    ("image/vnd.wap.wbmp", V11),
    ("application/vnd.wap.multipart.*", V11),
    ("application/vnd.wap.multipart.mixed", V11),
    ("application/vnd.wap.multipart.form-data", V11),
    ("application/vnd.wap.multipart.byteranges", V11),
    ("application/vnd.wap.multipart.alternative", V11),
    ("application/xml", V11),
    ("text/xml", V11),
    ("application/vnd.wap.wbxml", V11),
    ("application/x-x968-cross-cert", V11),
    ("application/x-x968-ca-cert", V11),
    ("application/x-x968-user-cert", V11),
    ("text/vnd.wap.si", V11),
    ("application/vnd.wap.sic", V12),
    ("text/vnd.wap.sl", V12),
    ("application/vnd.wap.slc", V12),
    ("text/vnd.wap.co", V12),
    ("application/vnd.wap.coc", V12),
    ("application/vnd.wap.multipart.related", V12),
    ("application/vnd.wap.sia", V12),
    ("text/vnd.wap.connectivity-xml", V13),
    ("application/vnd.wap.connectivity-wbxml", V13),
    ("application/pkcs7-mime", V14),
    ("application/vnd.wap.hashed-certificate", V14),
    ("application/vnd.wap.signed-certificate", V14),
    ("application/vnd.wap.cert-response", V14),
    ("application/xhtml+xml", V14),
    ("application/wml+xml", V14),
    ("text/css", V14),
    ("application/vnd.wap.mms-message", V14),
    ("application/vnd.wap.rollover-certificate", V14),
    ("application/vnd.wap.locc+wbxml", V15),
    ("application/vnd.wap.loc+xml", V15),
    ("application/vnd.syncml.dm+wbxml", V15),
    ("application/vnd.syncml.dm+xml", V15),
    ("application/vnd.syncml.notification", V15),
    ("application/vnd.wap.xhtml+xml", V15),
    ("application/vnd.wv.csp.cir", V15),
    ("application/vnd.oma.dd+xml", V15),
    ("application/vnd.oma.drm.message", V15),
    ("application/vnd.oma.drm.content", V15),
    ("application/vnd.oma.drm.rights+xml", V15),
    ("application/vnd.oma.drm.rights+wbxml", V15),
    ("application/vnd.wv.csp+xml", V15),
    ("application/vnd.wv.csp+wbxml", V15),
    ("application/vnd.syncml.ds.notification", V15),
    ("audio/*", V16),
    ("video/*", V16),
    ("application/vnd.oma.dd2+xml", V16),
    ("application/mikey", V16),
];

/// Content types registered with OMNA under numbers above the WSP table
/// (0x0201 and up): decoded, never chosen by the encoder (they need a
/// Long-integer, and the text is as short for most).
pub const REGISTERED_CONTENT_TYPES: &[(&str, u64)] = &[
    ("application/vnd.uplanet.cacheop-wbxml", 0x0201),
    ("application/vnd.uplanet.signal", 0x0202),
    ("application/vnd.uplanet.alert-wbxml", 0x0203),
    ("application/vnd.uplanet.list-wbxml", 0x0204),
    ("application/vnd.uplanet.listcmd-wbxml", 0x0205),
    ("application/vnd.uplanet.channel-wbxml", 0x0206),
    ("application/vnd.uplanet.provisioning-status-uri", 0x0207),
    ("x-wap.multipart/vnd.uplanet.header-set", 0x0208),
    ("application/vnd.uplanet.bearer-choice-wbxml", 0x0209),
    ("application/vnd.phonecom.mmc-wbxml", 0x020a),
    ("application/vnd.nokia.syncset+wbxml", 0x020b),
    ("image/x-up-wpng", 0x020c),
    ("application/iota.mmc-wbxml", 0x0300),
    ("application/iota.mmc-xml", 0x0301),
    ("application/vnd.syncml+xml", 0x0302),
    ("application/vnd.syncml+wbxml", 0x0303),
    ("text/vnd.wap.emn+xml", 0x0304),
    ("text/calendar", 0x0305),
    ("application/vnd.omads-email+xml", 0x0306),
    ("application/vnd.omads-file+xml", 0x0307),
    ("application/vnd.omads-folder+xml", 0x0308),
    ("text/directory;profile=vCard", 0x0309),
    ("application/vnd.wap.emn+wbxml", 0x030a),
];

/// The content type with well-known code `code`.
pub fn content_type_by_code(code: u64) -> Option<&'static str> {
    if let Some((name, _)) = CONTENT_TYPES.get(usize::try_from(code).ok()?) {
        return Some(name);
    }
    REGISTERED_CONTENT_TYPES
        .iter()
        .find(|(_, c)| *c == code)
        .map(|(name, _)| *name)
}

/// The well-known code of content type `name` that `version` may use.
pub fn content_type_code(name: &str, version: EncodingVersion) -> Option<u8> {
    CONTENT_TYPES
        .iter()
        .position(|(n, since)| *since <= version && n.eq_ignore_ascii_case(name))
        .and_then(|code| u8::try_from(code).ok())
}

/// Table 42 (the charsets WSP lists, plus common IANA MIBenums a WAP
/// client sends): name and MIBenum.
pub const CHARSETS: &[(&str, u64)] = &[
    ("us-ascii", 3),
    ("iso-8859-1", 4),
    ("iso-8859-2", 5),
    ("iso-8859-3", 6),
    ("iso-8859-4", 7),
    ("iso-8859-5", 8),
    ("iso-8859-6", 9),
    ("iso-8859-7", 10),
    ("iso-8859-8", 11),
    ("iso-8859-9", 12),
    ("shift_JIS", 17),
    ("euc-jp", 18),
    ("euc-kr", 38),
    ("iso-2022-jp", 39),
    ("utf-8", 106),
    ("iso-8859-15", 111),
    ("iso-10646-ucs-2", 1000),
    ("utf-16be", 1013),
    ("utf-16le", 1014),
    ("utf-16", 1015),
    ("gb2312", 2025),
    ("big5", 2026),
    ("koi8-r", 2084),
    ("windows-1252", 2252),
];

/// The charset name of MIBenum `mib`.
pub fn charset_by_mib(mib: u64) -> Option<&'static str> {
    CHARSETS.iter().find(|(_, m)| *m == mib).map(|(n, _)| *n)
}

/// The MIBenum of charset `name`.
pub fn charset_mib(name: &str) -> Option<u64> {
    CHARSETS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, m)| *m)
}

/// Table 41: ISO 639 language codes. Some numbers are above 127 (the table
/// is like that) and so take a Long-integer.
pub const LANGUAGES: &[(&str, u64)] = &[
    ("aa", 0x01),
    ("ab", 0x02),
    ("af", 0x03),
    ("am", 0x04),
    ("ar", 0x05),
    ("as", 0x06),
    ("ay", 0x07),
    ("az", 0x08),
    ("ba", 0x09),
    ("be", 0x0a),
    ("bg", 0x0b),
    ("bh", 0x0c),
    ("bi", 0x0d),
    ("bn", 0x0e),
    ("bo", 0x0f),
    ("br", 0x10),
    ("ca", 0x11),
    ("co", 0x12),
    ("cs", 0x13),
    ("cy", 0x14),
    ("da", 0x15),
    ("de", 0x16),
    ("dz", 0x17),
    ("el", 0x18),
    ("en", 0x19),
    ("eo", 0x1a),
    ("es", 0x1b),
    ("et", 0x1c),
    ("eu", 0x1d),
    ("fa", 0x1e),
    ("fi", 0x1f),
    ("fj", 0x20),
    ("fo", 0x82),
    ("fr", 0x22),
    ("fy", 0x83),
    ("ga", 0x24),
    ("gd", 0x25),
    ("gl", 0x26),
    ("gn", 0x27),
    ("gu", 0x28),
    ("ha", 0x29),
    ("he", 0x2a),
    ("hi", 0x2b),
    ("hr", 0x2c),
    ("hu", 0x2d),
    ("hy", 0x2e),
    ("ia", 0x84),
    ("id", 0x30),
    ("ie", 0x86),
    ("ik", 0x87),
    ("is", 0x33),
    ("it", 0x34),
    ("iu", 0x89),
    ("ja", 0x36),
    ("jw", 0x37),
    ("ka", 0x38),
    ("kk", 0x39),
    ("kl", 0x8a),
    ("km", 0x3b),
    ("kn", 0x3c),
    ("ko", 0x3d),
    ("ks", 0x3e),
    ("ku", 0x3f),
    ("ky", 0x40),
    ("la", 0x8b),
    ("ln", 0x42),
    ("lo", 0x43),
    ("lt", 0x44),
    ("lv", 0x45),
    ("mg", 0x46),
    ("mi", 0x47),
    ("mk", 0x48),
    ("ml", 0x49),
    ("mn", 0x4a),
    ("mo", 0x4b),
    ("mr", 0x4c),
    ("ms", 0x4d),
    ("mt", 0x4e),
    ("my", 0x4f),
    ("na", 0x81),
    ("ne", 0x51),
    ("nl", 0x52),
    ("no", 0x53),
    ("oc", 0x54),
    ("om", 0x55),
    ("or", 0x56),
    ("pa", 0x57),
    ("pl", 0x58),
    ("ps", 0x59),
    ("pt", 0x5a),
    ("qu", 0x5b),
    ("rm", 0x8c),
    ("rn", 0x5d),
    ("ro", 0x5e),
    ("ru", 0x5f),
    ("rw", 0x60),
    ("sa", 0x61),
    ("sd", 0x62),
    ("sg", 0x63),
    ("sh", 0x64),
    ("si", 0x65),
    ("sk", 0x66),
    ("sl", 0x67),
    ("sm", 0x68),
    ("sn", 0x69),
    ("so", 0x6a),
    ("sq", 0x6b),
    ("sr", 0x6c),
    ("ss", 0x6d),
    ("st", 0x6e),
    ("su", 0x6f),
    ("sv", 0x70),
    ("sw", 0x71),
    ("ta", 0x72),
    ("te", 0x73),
    ("tg", 0x74),
    ("th", 0x75),
    ("ti", 0x76),
    ("tk", 0x77),
    ("tl", 0x78),
    ("tn", 0x79),
    ("to", 0x7a),
    ("tr", 0x7b),
    ("ts", 0x7c),
    ("tt", 0x7d),
    ("tw", 0x7e),
    ("ug", 0x7f),
    ("uk", 0x50),
    ("ur", 0x21),
    ("uz", 0x23),
    ("vi", 0x2f),
    ("vo", 0x85),
    ("wo", 0x31),
    ("xh", 0x32),
    ("yi", 0x88),
    ("yo", 0x35),
    ("za", 0x3a),
    ("zh", 0x41),
    ("zu", 0x5c),
];

/// The language of code `code` (`*` for 0, Any-language).
pub fn language_by_code(code: u64) -> Option<&'static str> {
    if code == 0 {
        return Some("*");
    }
    LANGUAGES.iter().find(|(_, c)| *c == code).map(|(n, _)| *n)
}

/// The code of language `name` (0 for `*`).
pub fn language_code(name: &str) -> Option<u64> {
    if name == "*" {
        return Some(0);
    }
    LANGUAGES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
}

/// How a well-known parameter's value is encoded (Table 38).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Q-value.
    Q,
    /// Well-known-charset.
    Charset,
    /// Version-value.
    Version,
    /// Integer-value.
    Integer,
    /// Text-string (deprecated 1.1–1.3 forms of name, filename, …).
    TextString,
    /// Text-value (Token-text, Quoted-string or No-value).
    TextValue,
    /// Field-name.
    FieldName,
    /// Short-integer.
    ShortInteger,
    /// Constrained-encoding (a content type).
    ContentType,
    /// Delta-seconds (Integer-value).
    DeltaSeconds,
    /// Date-value.
    Date,
    /// No-value (an octet 0).
    NoValue,
}

/// Table 38: well-known parameters by code.
pub const PARAMS: &[(&str, EncodingVersion, ParamKind)] = &[
    ("q", V11, ParamKind::Q),
    ("charset", V11, ParamKind::Charset),
    ("level", V11, ParamKind::Version),
    ("type", V11, ParamKind::Integer),
    ("uaprof", V11, ParamKind::TextValue),
    ("name", V11, ParamKind::TextString),
    ("filename", V11, ParamKind::TextString),
    ("differences", V11, ParamKind::FieldName),
    ("padding", V11, ParamKind::ShortInteger),
    ("type", V12, ParamKind::ContentType),
    ("start", V12, ParamKind::TextString),
    ("start-info", V12, ParamKind::TextString),
    ("comment", V13, ParamKind::TextString),
    ("domain", V13, ParamKind::TextString),
    ("max-age", V13, ParamKind::DeltaSeconds),
    ("path", V13, ParamKind::TextString),
    ("secure", V13, ParamKind::NoValue),
    ("sec", V14, ParamKind::ShortInteger),
    ("mac", V14, ParamKind::TextValue),
    ("creation-date", V14, ParamKind::Date),
    ("modification-date", V14, ParamKind::Date),
    ("read-date", V14, ParamKind::Date),
    ("size", V14, ParamKind::Integer),
    ("name", V14, ParamKind::TextValue),
    ("filename", V14, ParamKind::TextValue),
    ("start", V14, ParamKind::TextValue),
    ("start-info", V14, ParamKind::TextValue),
    ("comment", V14, ParamKind::TextValue),
    ("domain", V14, ParamKind::TextValue),
    ("path", V14, ParamKind::TextValue),
];

/// The well-known parameter with code `code`: name and value kind.
pub fn param_by_code(code: u64) -> Option<(&'static str, ParamKind)> {
    PARAMS
        .get(usize::try_from(code).ok()?)
        .map(|(name, _, kind)| (*name, *kind))
}

/// The code and kind to encode parameter `name` with at `version`: the
/// first assignment usable there (so `name` is 0x05 Text-string before
/// 1.4; the multipart `type` (0x09) is never chosen by name).
pub fn param_code(name: &str, version: EncodingVersion) -> Option<(u8, ParamKind)> {
    PARAMS
        .iter()
        .enumerate()
        .filter(|(code, _)| *code != 0x09)
        .find(|(_, (n, since, _))| *since <= version && n.eq_ignore_ascii_case(name))
        .and_then(|(code, (_, _, kind))| Some((u8::try_from(code).ok()?, *kind)))
}

/// Cache-Control directives (§8.4.2.15), by code.
pub const CACHE_CONTROL: &[&str] = &[
    "no-cache",
    "no-store",
    "max-age",
    "max-stale",
    "min-fresh",
    "only-if-cached",
    "public",
    "private",
    "no-transform",
    "must-revalidate",
    "proxy-revalidate",
    "s-maxage",
];

/// Content codings (§8.4.2.18), by code.
pub const ENCODINGS: &[&str] = &["gzip", "compress", "deflate"];

/// Accept-Ranges values (§8.4.2.11), by code.
pub const RANGES: &[&str] = &["none", "bytes"];

/// Content-Disposition types (§8.4.2.53), by code.
pub const DISPOSITIONS: &[&str] = &["form-data", "attachment", "inline"];

/// Well-known methods (Table 34) used in Allow and Public.
pub const METHODS: &[(&str, u8)] = &[
    ("GET", 0x40),
    ("OPTIONS", 0x41),
    ("HEAD", 0x42),
    ("DELETE", 0x43),
    ("TRACE", 0x44),
    ("POST", 0x60),
    ("PUT", 0x61),
];

/// Push application ids (OMNA) with well-known numbers: the common ones.
pub const APPLICATION_IDS: &[(&str, u64)] = &[
    ("x-wap-application:*", 0x00),
    ("x-wap-application:push.sia", 0x01),
    ("x-wap-application:wml.ua", 0x02),
    ("x-wap-application:wta.ua", 0x03),
    ("x-wap-application:mms.ua", 0x04),
    ("x-wap-application:push.syncml", 0x05),
    ("x-wap-application:loc.ua", 0x06),
    ("x-wap-application:syncml.dm", 0x07),
    ("x-wap-application:drm.ua", 0x08),
    ("x-wap-application:emn.ua", 0x09),
    ("x-wap-application:wv.ua", 0x0a),
];

/// Index of `name` in a token table (case-insensitive).
pub fn token_code(table: &[&str], name: &str) -> Option<u8> {
    table
        .iter()
        .position(|t| t.eq_ignore_ascii_case(name))
        .and_then(|i| u8::try_from(i).ok())
}

/// The token with code `code` in a token table.
pub fn token_by_code(table: &'static [&'static str], code: u8) -> Option<&'static str> {
    table.get(usize::from(code)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_table_is_indexed_by_code() {
        for (i, f) in FIELDS.iter().enumerate() {
            assert_eq!(usize::from(f.code), i, "{}", f.name);
        }
        assert_eq!(
            field_by_name("cache-control", EncodingVersion::V1_4)
                .unwrap()
                .code,
            0x08
        );
        assert!(field_by_name("Encoding-Version", EncodingVersion::V1_2).is_none());
        assert_eq!(
            field_by_name("Encoding-Version", EncodingVersion::V1_3)
                .unwrap()
                .code,
            0x43
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type_code("text/vnd.wap.wml", EncodingVersion::V1_1),
            Some(0x08)
        );
        assert_eq!(
            content_type_code("application/vnd.wap.wmlc", EncodingVersion::V1_1),
            Some(0x14)
        );
        assert_eq!(
            content_type_code("application/xhtml+xml", EncodingVersion::V1_2),
            None
        );
        assert_eq!(
            content_type_code("application/xhtml+xml", EncodingVersion::V1_4),
            Some(0x3b)
        );
        assert_eq!(
            content_type_by_code(0x3e),
            Some("application/vnd.wap.mms-message")
        );
        assert_eq!(
            param_code("name", EncodingVersion::V1_2),
            Some((0x05, ParamKind::TextString))
        );
        assert_eq!(
            param_code("name", EncodingVersion::V1_4),
            Some((0x05, ParamKind::TextString))
        );
        assert_eq!(
            param_code("type", EncodingVersion::V1_4),
            Some((0x03, ParamKind::Integer))
        );
    }
}
