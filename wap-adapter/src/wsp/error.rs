//! Errors of the WSP codec (WAP-230-WSP §8): one enum for every way a PDU,
//! a header or a primitive can be malformed, and for values the encoder
//! cannot express.

use thiserror::Error;

/// A malformed WSP PDU, header block or primitive, or a value that cannot be
/// encoded. Every variant says where (octet offset into the input that was
/// being decoded, where one applies) so that a counter or a log line can
/// name it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WspError {
    /// The input ended inside a field.
    #[error("truncated at offset {offset}: {what}")]
    Truncated {
        /// Offset where the missing octets should have been.
        offset: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A uintvar (§8.1.2) had more than five octets.
    #[error("uintvar at offset {offset} is longer than 5 octets")]
    UintvarTooLong {
        /// Offset of the uintvar's first octet.
        offset: usize,
    },
    /// A five-octet uintvar whose value does not fit in 32 bits.
    #[error("uintvar at offset {offset} overflows 32 bits")]
    UintvarOverflow {
        /// Offset of the uintvar's first octet.
        offset: usize,
    },
    /// A length field points past the end of the PDU or of its enclosing
    /// value.
    #[error("length {length} at offset {offset} runs past the end ({available} octets left)")]
    LengthBeyondPdu {
        /// Offset of the length field.
        offset: usize,
        /// The length it announced.
        length: usize,
        /// Octets actually left.
        available: usize,
    },
    /// The PDU type octet (Table 34) is not one this codec knows.
    #[error("unknown PDU type {0:#04x}")]
    UnknownPduType(u8),
    /// A text string (§8.4.2.1) had no terminating NUL.
    #[error("text string at offset {offset} has no terminating NUL")]
    UnterminatedText {
        /// Offset of the string's first octet.
        offset: usize,
    },
    /// A value that is well framed but does not follow its grammar.
    #[error("bad {what} at offset {offset}")]
    BadValue {
        /// Offset of the value.
        offset: usize,
        /// Which grammar rule it broke.
        what: &'static str,
    },
    /// A header whose value this codec cannot decode (an encoding it does
    /// not implement, or a code it does not know).
    #[error("header {name} at offset {offset}: {reason}")]
    HeaderValue {
        /// Offset of the header's value.
        offset: usize,
        /// The header's name (or `code 0xNN` for an unknown well-known code).
        name: String,
        /// Why it was not decoded.
        reason: &'static str,
    },
    /// A well-known header on a code page other than 1 (§8.4.2.6): its
    /// value is skipped, the following headers are still decoded.
    #[error("header {code:#04x} on code page {page} at offset {offset} skipped")]
    UnknownCodePage {
        /// Offset of the header.
        offset: usize,
        /// The code page in force.
        page: u8,
        /// The field code on that page.
        code: u8,
    },
    /// A value given to an encoder that the encoding cannot carry.
    #[error("cannot encode {what}: {reason}")]
    Unencodable {
        /// What was being encoded.
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// Octets left after a PDU that has no room for trailing data.
    #[error("{count} trailing octets after the PDU")]
    TrailingData {
        /// How many.
        count: usize,
    },
}

impl WspError {
    /// A short fixed label for the kind of error, for counters and logs
    /// (`wsp_errors_total{kind="truncated"}`).
    pub fn label(&self) -> &'static str {
        match self {
            WspError::Truncated { .. } => "truncated",
            WspError::UintvarTooLong { .. } => "uintvar_too_long",
            WspError::UintvarOverflow { .. } => "uintvar_overflow",
            WspError::LengthBeyondPdu { .. } => "length_beyond_pdu",
            WspError::UnknownPduType(_) => "unknown_pdu_type",
            WspError::UnterminatedText { .. } => "unterminated_text",
            WspError::BadValue { .. } => "bad_value",
            WspError::HeaderValue { .. } => "header_value",
            WspError::UnknownCodePage { .. } => "unknown_code_page",
            WspError::Unencodable { .. } => "unencodable",
            WspError::TrailingData { .. } => "trailing_data",
        }
    }
}

/// Result alias for the WSP codec.
pub type Result<T> = std::result::Result<T, WspError>;
