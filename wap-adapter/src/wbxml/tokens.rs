//! WBXML global tokens (WAP-192-WBXML §5.8.4) and the WML token tables of
//! code page 0 (WAP-191-WML §14.3: tag tokens, attribute start tokens with
//! their value prefixes, attribute value tokens), shared by WML 1.1, 1.2 and
//! 1.3.
//!
//! The order of [`ATTRIBUTE_STARTS`], [`VALUE_TOKENS`] and [`URL_VALUE_TOKENS`]
//! is part of the encoding: the compiler takes the first matching prefix of
//! an attribute start and searches value tokens in list order, the way the
//! reference compiler (kannel's `wml_compiler.c`) does, so that the same
//! deck compiles to the same bytes.

/// Switch to another code page (followed by the page number).
pub const SWITCH_PAGE: u8 = 0x00;
/// End of an attribute list or of an element's content.
pub const END: u8 = 0x01;
/// A character entity (followed by an `mb_u_int32` code point).
pub const ENTITY: u8 = 0x02;
/// An inline string (followed by a string terminated per the charset).
pub const STR_I: u8 = 0x03;
/// A tag or attribute name taken from the string table.
pub const LITERAL: u8 = 0x04;
/// Inline-string extension tokens 0, 1, 2 (WML: escaped, unescaped and
/// unconverted variable, name inline).
pub const EXT_I_0: u8 = 0x40;
/// See [`EXT_I_0`].
pub const EXT_I_1: u8 = 0x41;
/// See [`EXT_I_0`].
pub const EXT_I_2: u8 = 0x42;
/// A processing instruction.
pub const PI: u8 = 0x43;
/// String-table extension tokens 0, 1, 2 (WML: escaped, unescaped and
/// unconverted variable, name in the string table).
pub const EXT_T_0: u8 = 0x80;
/// See [`EXT_T_0`].
pub const EXT_T_1: u8 = 0x81;
/// See [`EXT_T_0`].
pub const EXT_T_2: u8 = 0x82;
/// A string-table reference (followed by an `mb_u_int32` offset).
pub const STR_T: u8 = 0x83;
/// Single-byte extension tokens (unused in WML).
pub const EXT_0: u8 = 0xC0;
/// See [`EXT_0`].
pub const EXT_1: u8 = 0xC1;
/// See [`EXT_0`].
pub const EXT_2: u8 = 0xC2;
/// Opaque data (followed by a length and that many bytes).
pub const OPAQUE: u8 = 0xC3;
/// The "has attributes" bit of a tag token.
pub const TAG_HAS_ATTRIBUTES: u8 = 0x80;
/// The "has content" bit of a tag token.
pub const TAG_HAS_CONTENT: u8 = 0x40;

/// WML tag tokens (code page 0). `pre` is the WML 1.2 addition.
pub const TAGS: &[(&str, u8)] = &[
    ("pre", 0x1B),
    ("a", 0x1C),
    ("td", 0x1D),
    ("tr", 0x1E),
    ("table", 0x1F),
    ("p", 0x20),
    ("postfield", 0x21),
    ("anchor", 0x22),
    ("access", 0x23),
    ("b", 0x24),
    ("big", 0x25),
    ("br", 0x26),
    ("card", 0x27),
    ("do", 0x28),
    ("em", 0x29),
    ("fieldset", 0x2A),
    ("go", 0x2B),
    ("head", 0x2C),
    ("i", 0x2D),
    ("img", 0x2E),
    ("input", 0x2F),
    ("meta", 0x30),
    ("noop", 0x31),
    ("prev", 0x32),
    ("onevent", 0x33),
    ("optgroup", 0x34),
    ("option", 0x35),
    ("refresh", 0x36),
    ("select", 0x37),
    ("small", 0x38),
    ("strong", 0x39),
    ("template", 0x3B),
    ("timer", 0x3C),
    ("u", 0x3D),
    ("setvar", 0x3E),
    ("wml", 0x3F),
];

/// One attribute start token: the attribute, the value prefix it stands
/// for (empty for the bare attribute) and the token.
#[derive(Debug, Clone, Copy)]
pub struct AttributeStart {
    /// Attribute name.
    pub name: &'static str,
    /// The start of the value this token encodes ("" for none).
    pub prefix: &'static str,
    /// The token.
    pub token: u8,
}

const fn start(name: &'static str, prefix: &'static str, token: u8) -> AttributeStart {
    AttributeStart {
        name,
        prefix,
        token,
    }
}

/// Attribute start tokens (WAP-191-WML §14.3.3), in matching order.
pub const ATTRIBUTE_STARTS: &[AttributeStart] = &[
    start("accept-charset", "", 0x05),
    start("accesskey", "", 0x5E),
    start("align", "", 0x52),
    start("align", "bottom", 0x06),
    start("align", "center", 0x07),
    start("align", "left", 0x08),
    start("align", "middle", 0x09),
    start("align", "right", 0x0A),
    start("align", "top", 0x0B),
    start("alt", "", 0x0C),
    start("cache-control", "no-cache", 0x64),
    start("class", "", 0x54),
    start("columns", "", 0x53),
    start("content", "", 0x0D),
    start("content", "application/vnd.wap.wmlc;charset=", 0x5C),
    start("domain", "", 0x0F),
    start("emptyok", "false", 0x10),
    start("emptyok", "true", 0x11),
    start("enctype", "", 0x5F),
    start("enctype", "application/x-www-form-urlencoded", 0x60),
    start("enctype", "multipart/form-data", 0x61),
    start("format", "", 0x12),
    start("forua", "false", 0x56),
    start("forua", "true", 0x57),
    start("height", "", 0x13),
    start("href", "", 0x4A),
    start("href", "http://", 0x4B),
    start("href", "https://", 0x4C),
    start("hspace", "", 0x14),
    start("http-equiv", "", 0x5A),
    start("http-equiv", "Content-Type", 0x5B),
    start("http-equiv", "Expires", 0x5D),
    start("id", "", 0x55),
    start("ivalue", "", 0x15),
    start("iname", "", 0x16),
    start("label", "", 0x18),
    start("localsrc", "", 0x19),
    start("maxlength", "", 0x1A),
    start("method", "get", 0x1B),
    start("method", "post", 0x1C),
    start("mode", "nowrap", 0x1D),
    start("mode", "wrap", 0x1E),
    start("multiple", "false", 0x1F),
    start("multiple", "true", 0x20),
    start("name", "", 0x21),
    start("newcontext", "false", 0x22),
    start("newcontext", "true", 0x23),
    start("onenterbackward", "", 0x25),
    start("onenterforward", "", 0x26),
    start("onpick", "", 0x24),
    start("ontimer", "", 0x27),
    start("optional", "false", 0x28),
    start("optional", "true", 0x29),
    start("path", "", 0x2A),
    start("scheme", "", 0x2E),
    start("sendreferer", "false", 0x2F),
    start("sendreferer", "true", 0x30),
    start("size", "", 0x31),
    start("src", "", 0x32),
    start("src", "http://", 0x58),
    start("src", "https://", 0x59),
    start("ordered", "true", 0x33),
    start("ordered", "false", 0x34),
    start("tabindex", "", 0x35),
    start("title", "", 0x36),
    start("type", "", 0x37),
    start("type", "accept", 0x38),
    start("type", "delete", 0x39),
    start("type", "help", 0x3A),
    start("type", "password", 0x3B),
    start("type", "onpick", 0x3C),
    start("type", "onenterbackward", 0x3D),
    start("type", "onenterforward", 0x3E),
    start("type", "ontimer", 0x3F),
    start("type", "options", 0x45),
    start("type", "prev", 0x46),
    start("type", "reset", 0x47),
    start("type", "text", 0x48),
    start("type", "vnd.", 0x49),
    start("value", "", 0x4D),
    start("vspace", "", 0x4E),
    start("width", "", 0x4F),
    start("xml:lang", "", 0x50),
    start("xml:space", "preserve", 0x62),
    start("xml:space", "default", 0x63),
];

/// Attribute value tokens used in values that are not URLs, in search order.
pub const VALUE_TOKENS: &[(&str, u8)] = &[
    ("accept", 0x89),
    ("bottom", 0x8A),
    ("clear", 0x8B),
    ("delete", 0x8C),
    ("help", 0x8D),
    ("middle", 0x93),
    ("nowrap", 0x94),
    ("onenterbackward", 0x96),
    ("onenterforward", 0x97),
    ("onpick", 0x95),
    ("ontimer", 0x98),
    ("options", 0x99),
    ("password", 0x9A),
    ("reset", 0x9B),
    ("text", 0x9D),
    ("top", 0x9E),
    ("unknown", 0x9F),
    ("wrap", 0xA0),
];

/// Attribute value tokens used in URL values (`href`, `src`), in search
/// order.
pub const URL_VALUE_TOKENS: &[(&str, u8)] = &[
    ("www.", 0xA1),
    (".com/", 0x85),
    (".edu/", 0x86),
    (".net/", 0x87),
    (".org/", 0x88),
    ("http://", 0x8E),
    ("http://www.", 0x8F),
    ("https://", 0x90),
    ("https://www.", 0x91),
];

/// The attribute start tokens whose value is a URL.
pub const URL_ATTRIBUTE_STARTS: &[u8] = &[0x4A, 0x4B, 0x4C, 0x32, 0x58, 0x59];

/// The tag of a token (without its content and attribute bits).
pub fn tag_name(token: u8) -> Option<&'static str> {
    TAGS.iter().find(|(_, t)| *t == token).map(|(n, _)| *n)
}

/// The token of a tag.
pub fn tag_token(name: &str) -> Option<u8> {
    TAGS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The attribute start of a token (below 0x80).
pub fn attribute_start(token: u8) -> Option<&'static AttributeStart> {
    ATTRIBUTE_STARTS.iter().find(|a| a.token == token)
}

/// The text an attribute value token (0x80 and above) stands for.
pub fn value_text(token: u8) -> Option<&'static str> {
    URL_VALUE_TOKENS
        .iter()
        .chain(VALUE_TOKENS)
        .find(|(_, t)| *t == token)
        .map(|(s, _)| *s)
}
