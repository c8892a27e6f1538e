//! WSP PDUs (WAP-230-WSP §8.2, Table 34): decoding and encoding of the
//! session (Connect, ConnectReply, Redirect, Disconnect, Suspend, Resume),
//! method (Get and its variants, Post and Put, Reply) and push PDUs, in
//! connectionless mode (a TID octet first, §8.2.1) or connection mode (the
//! PDU is the user data of a WTP transaction).

use super::capabilities::Capabilities;
use super::codec::{self, Reader};
use super::error::{Result, WspError};
use super::headers::{self, Headers};
use super::tables::EncodingVersion;
use super::uintvar;

/// PDU type codes (Table 34).
pub mod pdu_type {
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// ConnectReply.
    pub const CONNECT_REPLY: u8 = 0x02;
    /// Redirect.
    pub const REDIRECT: u8 = 0x03;
    /// Reply.
    pub const REPLY: u8 = 0x04;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x05;
    /// Push.
    pub const PUSH: u8 = 0x06;
    /// ConfirmedPush.
    pub const CONFIRMED_PUSH: u8 = 0x07;
    /// Suspend.
    pub const SUSPEND: u8 = 0x08;
    /// Resume.
    pub const RESUME: u8 = 0x09;
    /// Get (first of the Get PDU range 0x40–0x5F).
    pub const GET: u8 = 0x40;
    /// Post (first of the Post PDU range 0x60–0x7F).
    pub const POST: u8 = 0x60;
}

/// How PDUs are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Connectionless WSP over WDP (port 9200): each PDU starts with a
    /// one-octet transaction identifier.
    Connectionless,
    /// Connection-mode WSP over WTP (port 9201): no TID in the PDU.
    Connection,
}

/// A request method: the PDU type of a Get-class or Post-class PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET (0x40).
    Get,
    /// OPTIONS (0x41).
    Options,
    /// HEAD (0x42).
    Head,
    /// DELETE (0x43).
    Delete,
    /// TRACE (0x44).
    Trace,
    /// POST (0x60).
    Post,
    /// PUT (0x61).
    Put,
    /// An unassigned or extended method (0x45–0x5F with Get's layout,
    /// 0x62–0x7F with Post's).
    Other(u8),
}

impl Method {
    /// The method of PDU type `code`, if it is a Get- or Post-class type.
    pub fn from_pdu_type(code: u8) -> Option<Method> {
        Some(match code {
            0x40 => Method::Get,
            0x41 => Method::Options,
            0x42 => Method::Head,
            0x43 => Method::Delete,
            0x44 => Method::Trace,
            0x60 => Method::Post,
            0x61 => Method::Put,
            0x45..=0x5f | 0x62..=0x7f => Method::Other(code),
            _ => return None,
        })
    }

    /// Its PDU type code.
    pub fn pdu_type(self) -> u8 {
        match self {
            Method::Get => 0x40,
            Method::Options => 0x41,
            Method::Head => 0x42,
            Method::Delete => 0x43,
            Method::Trace => 0x44,
            Method::Post => 0x60,
            Method::Put => 0x61,
            Method::Other(code) => code,
        }
    }

    /// True for the Post-class layout (content type, headers and data).
    pub fn has_body(self) -> bool {
        self.pdu_type() >= 0x60
    }

    /// The HTTP method name (`X-WSP-0xNN` for unassigned codes).
    pub fn http_name(self) -> String {
        match self {
            Method::Get => "GET".into(),
            Method::Options => "OPTIONS".into(),
            Method::Head => "HEAD".into(),
            Method::Delete => "DELETE".into(),
            Method::Trace => "TRACE".into(),
            Method::Post => "POST".into(),
            Method::Put => "PUT".into(),
            Method::Other(code) => format!("X-WSP-{code:#04X}"),
        }
    }
}

/// One redirect address (§8.2.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectAddress {
    /// Bearer type, when included.
    pub bearer_type: Option<u8>,
    /// Port number, when included.
    pub port: Option<u16>,
    /// The address octets (at most 63).
    pub address: Vec<u8>,
}

/// A WSP PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// Connect (client → server).
    Connect {
        /// Protocol version octet (major in the high nibble; 0x10 = 1.0).
        version: u8,
        /// Proposed capabilities.
        capabilities: Capabilities,
        /// Session headers.
        headers: Headers,
    },
    /// ConnectReply (server → client).
    ConnectReply {
        /// The session id the server assigned.
        session_id: u32,
        /// Negotiated capabilities.
        capabilities: Capabilities,
        /// Headers.
        headers: Headers,
    },
    /// Redirect (server → client).
    Redirect {
        /// Flags: 0x80 permanent, 0x40 reuse security session.
        flags: u8,
        /// Where to go instead.
        addresses: Vec<RedirectAddress>,
    },
    /// Disconnect.
    Disconnect {
        /// The session being closed.
        session_id: u32,
    },
    /// Suspend.
    Suspend {
        /// The session being suspended.
        session_id: u32,
    },
    /// Resume.
    Resume {
        /// The session being resumed.
        session_id: u32,
        /// Capabilities.
        capabilities: Capabilities,
        /// Headers.
        headers: Headers,
    },
    /// A Get-class request (Get, Options, Head, Delete, Trace, …).
    Get {
        /// The method (its PDU type).
        method: Method,
        /// The request URI.
        uri: String,
        /// Request headers.
        headers: Headers,
    },
    /// A Post-class request (Post, Put, …).
    Post {
        /// The method (its PDU type).
        method: Method,
        /// The request URI.
        uri: String,
        /// The body's content type (with parameters).
        content_type: String,
        /// Request headers.
        headers: Headers,
        /// The body.
        data: Vec<u8>,
    },
    /// Reply.
    Reply {
        /// WSP status code ([`super::status`]).
        status: u8,
        /// The body's content type (with parameters).
        content_type: String,
        /// Response headers.
        headers: Headers,
        /// The body.
        data: Vec<u8>,
    },
    /// Push or ConfirmedPush.
    Push {
        /// ConfirmedPush (0x07) rather than Push (0x06).
        confirmed: bool,
        /// The content type.
        content_type: String,
        /// Headers.
        headers: Headers,
        /// The pushed content.
        data: Vec<u8>,
    },
}

impl Pdu {
    /// Its PDU type code.
    pub fn pdu_type(&self) -> u8 {
        match self {
            Pdu::Connect { .. } => pdu_type::CONNECT,
            Pdu::ConnectReply { .. } => pdu_type::CONNECT_REPLY,
            Pdu::Redirect { .. } => pdu_type::REDIRECT,
            Pdu::Disconnect { .. } => pdu_type::DISCONNECT,
            Pdu::Suspend { .. } => pdu_type::SUSPEND,
            Pdu::Resume { .. } => pdu_type::RESUME,
            Pdu::Get { method, .. } | Pdu::Post { method, .. } => method.pdu_type(),
            Pdu::Reply { .. } => pdu_type::REPLY,
            Pdu::Push {
                confirmed: false, ..
            } => pdu_type::PUSH,
            Pdu::Push {
                confirmed: true, ..
            } => pdu_type::CONFIRMED_PUSH,
        }
    }
}

/// A decoded PDU with what came around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedPdu {
    /// The TID octet (connectionless mode only).
    pub tid: Option<u8>,
    /// The PDU.
    pub pdu: Pdu,
    /// Headers that were left out because they did not decode (see
    /// [`super::headers`]); the PDU itself is still good.
    pub header_errors: Vec<WspError>,
}

/// The encoding version used for header blocks inside PDUs when decoding:
/// every assigned code is accepted.
const DECODE_VERSION: EncodingVersion = EncodingVersion::V1_4;

/// Decode one PDU. Malformed framing (truncation, a bad uintvar, a length
/// beyond the PDU, an unknown type, trailing octets after a PDU that has
/// no data part) is an error; a bad header value is only an entry in
/// [`DecodedPdu::header_errors`].
pub fn decode(bytes: &[u8], mode: Mode) -> Result<DecodedPdu> {
    let mut reader = Reader::new(bytes, 0);
    let tid = match mode {
        Mode::Connectionless => Some(reader.u8("TID")?),
        Mode::Connection => None,
    };
    let mut header_errors = Vec::new();
    let code = reader.u8("PDU type")?;
    let pdu = match code {
        pdu_type::CONNECT | pdu_type::CONNECT_REPLY | pdu_type::RESUME => {
            let first = if code == pdu_type::CONNECT {
                u32::from(reader.u8("version")?)
            } else {
                reader.uintvar()?
            };
            let caps_len = reader.uintvar()? as usize;
            let headers_len = if code == pdu_type::RESUME {
                None
            } else {
                Some(reader.uintvar()? as usize)
            };
            let caps_offset = reader.offset();
            let caps = reader.take(caps_len, caps_offset)?;
            let capabilities = Capabilities::decode(caps, caps_offset)?;
            let headers_offset = reader.offset();
            let header_bytes = match headers_len {
                Some(len) => reader.take(len, headers_offset)?,
                None => reader.take_rest(),
            };
            let decoded =
                headers::decode::decode_headers_at(header_bytes, headers_offset, DECODE_VERSION);
            header_errors = decoded.errors;
            let headers = decoded.headers;
            match code {
                pdu_type::CONNECT => Pdu::Connect {
                    version: first as u8,
                    capabilities,
                    headers,
                },
                pdu_type::CONNECT_REPLY => Pdu::ConnectReply {
                    session_id: first,
                    capabilities,
                    headers,
                },
                _ => Pdu::Resume {
                    session_id: first,
                    capabilities,
                    headers,
                },
            }
        }
        pdu_type::REDIRECT => {
            let flags = reader.u8("redirect flags")?;
            let mut addresses = Vec::new();
            while !reader.is_empty() {
                addresses.push(redirect_address(&mut reader)?);
            }
            Pdu::Redirect { flags, addresses }
        }
        pdu_type::DISCONNECT => Pdu::Disconnect {
            session_id: reader.uintvar()?,
        },
        pdu_type::SUSPEND => Pdu::Suspend {
            session_id: reader.uintvar()?,
        },
        pdu_type::REPLY | pdu_type::PUSH | pdu_type::CONFIRMED_PUSH => {
            let status = if code == pdu_type::REPLY {
                reader.u8("status")?
            } else {
                0
            };
            let (content_type, headers, errors) = typed_headers(&mut reader)?;
            header_errors = errors;
            let data = reader.take_rest().to_vec();
            if code == pdu_type::REPLY {
                Pdu::Reply {
                    status,
                    content_type,
                    headers,
                    data,
                }
            } else {
                Pdu::Push {
                    confirmed: code == pdu_type::CONFIRMED_PUSH,
                    content_type,
                    headers,
                    data,
                }
            }
        }
        _ => match Method::from_pdu_type(code) {
            Some(method) if !method.has_body() => {
                let len_offset = reader.offset();
                let uri_len = reader.uintvar()? as usize;
                let uri = codec::text_from_octets(reader.take(uri_len, len_offset)?);
                let headers_offset = reader.offset();
                let decoded = headers::decode::decode_headers_at(
                    reader.take_rest(),
                    headers_offset,
                    DECODE_VERSION,
                );
                header_errors = decoded.errors;
                Pdu::Get {
                    method,
                    uri,
                    headers: decoded.headers,
                }
            }
            Some(method) => {
                let len_offset = reader.offset();
                let uri_len = reader.uintvar()? as usize;
                let headers_len_offset = reader.offset();
                let headers_len = reader.uintvar()? as usize;
                let uri = codec::text_from_octets(reader.take(uri_len, len_offset)?);
                let mut block = reader.sub(headers_len, headers_len_offset)?;
                let (content_type, headers, errors) = content_type_and_headers(&mut block)?;
                header_errors = errors;
                Pdu::Post {
                    method,
                    uri,
                    content_type,
                    headers,
                    data: reader.take_rest().to_vec(),
                }
            }
            None => return Err(WspError::UnknownPduType(code)),
        },
    };
    if !reader.is_empty() {
        return Err(WspError::TrailingData {
            count: reader.rest().len(),
        });
    }
    Ok(DecodedPdu {
        tid,
        pdu,
        header_errors,
    })
}

/// HeadersLen (uintvar), then ContentType and Headers within that length
/// (Reply, Push).
fn typed_headers(reader: &mut Reader<'_>) -> Result<(String, Headers, Vec<WspError>)> {
    let len_offset = reader.offset();
    let len = reader.uintvar()? as usize;
    let mut block = reader.sub(len, len_offset)?;
    content_type_and_headers(&mut block)
}

/// A Content-type value followed by headers, filling `block`.
fn content_type_and_headers(block: &mut Reader<'_>) -> Result<(String, Headers, Vec<WspError>)> {
    let content_type = headers::decode::content_type_value(block)?;
    let offset = block.offset();
    let decoded = headers::decode::decode_headers_at(block.take_rest(), offset, DECODE_VERSION);
    Ok((content_type, decoded.headers, decoded.errors))
}

/// One redirect address.
fn redirect_address(reader: &mut Reader<'_>) -> Result<RedirectAddress> {
    let first = reader.u8("redirect address")?;
    let bearer_type = if first & 0x80 != 0 {
        Some(reader.u8("bearer type")?)
    } else {
        None
    };
    let port = if first & 0x40 != 0 {
        let octets = reader.take(2, reader.offset())?;
        Some(u16::from_be_bytes([
            octets.first().copied().unwrap_or(0),
            octets.get(1).copied().unwrap_or(0),
        ]))
    } else {
        None
    };
    let len_offset = reader.offset();
    let address = reader.take(usize::from(first & 0x3f), len_offset)?.to_vec();
    Ok(RedirectAddress {
        bearer_type,
        port,
        address,
    })
}

/// Encode `pdu`; `tid` is `Some` in connectionless mode (the TID octet is
/// written first) and `None` in connection mode. Header blocks are encoded
/// for encoding `version`.
pub fn encode(pdu: &Pdu, tid: Option<u8>, version: EncodingVersion) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if let Some(tid) = tid {
        out.push(tid);
    }
    out.push(pdu.pdu_type());
    match pdu {
        Pdu::Connect {
            version: protocol,
            capabilities,
            headers,
        } => {
            out.push(*protocol);
            session_body(capabilities, Some(headers), version, &mut out)?;
        }
        Pdu::ConnectReply {
            session_id,
            capabilities,
            headers,
        } => {
            uintvar::encode(*session_id, &mut out);
            session_body(capabilities, Some(headers), version, &mut out)?;
        }
        Pdu::Resume {
            session_id,
            capabilities,
            headers,
        } => {
            uintvar::encode(*session_id, &mut out);
            let caps = capabilities.encode()?;
            put_len(caps.len(), &mut out)?;
            out.extend_from_slice(&caps);
            out.extend_from_slice(&headers::encode_headers(headers, version)?);
        }
        Pdu::Redirect { flags, addresses } => {
            out.push(*flags);
            for address in addresses {
                if address.address.len() > 0x3f {
                    return Err(WspError::Unencodable {
                        what: "redirect address",
                        reason: format!("{} octets (at most 63)", address.address.len()),
                    });
                }
                let mut first = address.address.len() as u8;
                if address.bearer_type.is_some() {
                    first |= 0x80;
                }
                if address.port.is_some() {
                    first |= 0x40;
                }
                out.push(first);
                if let Some(bearer) = address.bearer_type {
                    out.push(bearer);
                }
                if let Some(port) = address.port {
                    out.extend_from_slice(&port.to_be_bytes());
                }
                out.extend_from_slice(&address.address);
            }
        }
        Pdu::Disconnect { session_id } | Pdu::Suspend { session_id } => {
            uintvar::encode(*session_id, &mut out);
        }
        Pdu::Get { uri, headers, .. } => {
            put_len(uri.len(), &mut out)?;
            out.extend_from_slice(uri.as_bytes());
            out.extend_from_slice(&headers::encode_headers(headers, version)?);
        }
        Pdu::Post {
            uri,
            content_type,
            headers,
            data,
            ..
        } => {
            let block = typed_block(content_type, headers, version)?;
            put_len(uri.len(), &mut out)?;
            put_len(block.len(), &mut out)?;
            out.extend_from_slice(uri.as_bytes());
            out.extend_from_slice(&block);
            out.extend_from_slice(data);
        }
        Pdu::Reply {
            status,
            content_type,
            headers,
            data,
        } => {
            out.push(*status);
            let block = typed_block(content_type, headers, version)?;
            put_len(block.len(), &mut out)?;
            out.extend_from_slice(&block);
            out.extend_from_slice(data);
        }
        Pdu::Push {
            content_type,
            headers,
            data,
            ..
        } => {
            let block = typed_block(content_type, headers, version)?;
            put_len(block.len(), &mut out)?;
            out.extend_from_slice(&block);
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

/// CapabilitiesLen, HeadersLen, Capabilities, Headers.
fn session_body(
    capabilities: &Capabilities,
    headers: Option<&Headers>,
    version: EncodingVersion,
    out: &mut Vec<u8>,
) -> Result<()> {
    let caps = capabilities.encode()?;
    let header_bytes = match headers {
        Some(headers) => headers::encode_headers(headers, version)?,
        None => Vec::new(),
    };
    put_len(caps.len(), out)?;
    put_len(header_bytes.len(), out)?;
    out.extend_from_slice(&caps);
    out.extend_from_slice(&header_bytes);
    Ok(())
}

/// Content-type value then headers.
fn typed_block(content_type: &str, headers: &Headers, version: EncodingVersion) -> Result<Vec<u8>> {
    let mut block = Vec::new();
    headers::encode::content_type_value(content_type, version, &mut block)?;
    block.extend_from_slice(&headers::encode_headers(headers, version)?);
    Ok(block)
}

/// A length as a uintvar.
fn put_len(len: usize, out: &mut Vec<u8>) -> Result<()> {
    let len = u32::try_from(len).map_err(|_| WspError::Unencodable {
        what: "length",
        reason: format!("{len} octets"),
    })?;
    uintvar::encode(len, out);
    Ok(())
}
