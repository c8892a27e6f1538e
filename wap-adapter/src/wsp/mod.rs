//! WSP, the Wireless Session Protocol (WAP-230-WSP), as a sans-IO codec:
//! no sockets and no clock, octets in and values out.
//!
//! - [`uintvar`] and [`codec`]: the primitive encodings (§8.1.2, §8.4.2.1–3).
//! - [`tables`]: the assigned numbers (Appendix A).
//! - [`headers`]: header blocks to and from HTTP-style text pairs (§8.4).
//! - [`pdu`]: the PDUs (§8.2), connectionless and connection-mode.
//! - [`capabilities`]: Connect capabilities and their negotiation (§8.3).
//! - [`status`]: HTTP ↔ WSP status codes (§8.2.2.3, Table 36).
//!
//! Nothing here panics on input: every malformed octet sequence is a
//! [`WspError`].
#![deny(clippy::indexing_slicing)]

pub mod capabilities;
pub mod codec;
pub mod error;
pub mod headers;
pub mod pdu;
pub mod status;
pub mod tables;
pub mod uintvar;

pub use error::WspError;
pub use headers::{decode_headers, encode_headers, DecodedHeaders, Headers};
pub use tables::EncodingVersion;
