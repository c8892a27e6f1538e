//! The requests and responses of the authority channel: the plaintext
//! records sealed inside authority data messages.
//!
//! Every record is `kind u8 | request_id u64 | body`, all integers
//! big-endian, every variable field length-prefixed. Requests have kinds
//! `0x01..=0x04`, responses `0x81..=0x89`; a response carries the id of the
//! request it answers. `docs/wire-format.md` has the tables. Parsing never
//! panics and refuses trailing bytes, so `emit(parse(x)) == x` for every
//! accepted `x` (the fuzz target checks it).
//!
//! Leases travel as the opaque bytes of a [`crate::lease::SignedLease`]: the
//! receiver verifies them with the authority key like any other lease, so a
//! compromised channel cannot forge one.
#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::Ipv6Net;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::handshake::PublicKey;
use crate::lease::MAX_LEASE_LEN;

/// Length of the record header: kind (1) and request id (8).
pub const RECORD_HEADER_LEN: usize = 1 + 8;

/// Longest user name in a login request, in bytes.
pub const MAX_USER_LEN: usize = 255;

/// Longest password in a login request, in bytes.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Longest record: a netmap page or a login answer carrying one lease of
/// [`MAX_LEASE_LEN`] bytes, with room for the fixed fields.
pub const MAX_RECORD_LEN: usize = MAX_LEASE_LEN + 64;

/// The identifier of a request, chosen by the client, echoed by the answer.
/// The server executes each `(client key, request id)` once and answers a
/// retransmission from its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

/// Why a record was refused (parse) or could not be written (emit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The record ends before a field it must contain.
    #[error("record truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("trailing bytes after the record")]
    TrailingBytes,
    /// The record is longer than [`MAX_RECORD_LEN`].
    #[error("record too long")]
    TooLong,
    /// The kind byte is not one this version knows.
    #[error("unknown record kind {0:#04x}")]
    UnknownKind(u8),
    /// A response where a request was expected, or the other way round.
    #[error("record of the wrong direction")]
    WrongDirection,
    /// The user name is empty, longer than [`MAX_USER_LEN`] or not UTF-8.
    #[error("bad user name")]
    BadUser,
    /// The password is empty or longer than [`MAX_PASSWORD_LEN`].
    #[error("bad password length")]
    BadPassword,
    /// A lease is empty or longer than [`MAX_LEASE_LEN`].
    #[error("bad lease length")]
    BadLease,
    /// A netmap lists more entries than its length field can hold.
    #[error("too many netmap entries")]
    TooManyEntries,
    /// A removed entry of unknown kind, or a prefix longer than 128 bits.
    #[error("bad removed entry")]
    BadRemoved,
    /// A flag byte other than 0 or 1.
    #[error("bad flag byte")]
    BadFlag,
    /// An endpoint's address family is neither 4 nor 6.
    #[error("bad endpoint address family")]
    BadEndpoint,
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl MessageError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageError::Truncated => "record_truncated",
            MessageError::TrailingBytes => "record_trailing_bytes",
            MessageError::TooLong => "record_too_long",
            MessageError::UnknownKind(_) => "record_unknown_kind",
            MessageError::WrongDirection => "record_wrong_direction",
            MessageError::BadUser => "record_bad_user",
            MessageError::BadPassword => "record_bad_password",
            MessageError::BadLease => "record_bad_lease",
            MessageError::TooManyEntries => "record_too_many_entries",
            MessageError::BadRemoved => "record_bad_removed",
            MessageError::BadFlag => "record_bad_flag",
            MessageError::BadEndpoint => "record_bad_endpoint",
            MessageError::BufferTooSmall => "record_buffer_too_small",
        }
    }
}

/// A password, wiped from memory when dropped and never shown by `Debug`.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Takes ownership of the bytes (wiped on drop).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Password(bytes)
    }

    /// Copies `bytes` into a new password; the caller wipes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Password(Zeroizing::new(bytes.to_vec()))
    }

    /// The password bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for Password {
    /// Constant time in the contents (not in the length).
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for Password {}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What a terminal asks addrd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Log in: check `user`'s password in the directory and issue a lease
    /// for the Noise static key of the channel. Kind `0x01`, body
    /// `user_len u8 | user | password_len u16 | password`.
    Login {
        /// The directory user name (UTF-8, 1..=255 bytes).
        user: String,
        /// The password (1..=1024 bytes).
        password: Password,
    },
    /// Renew the lease the terminal holds, without the password. Kind
    /// `0x02`, body `lease_len u16 | lease`.
    Renew {
        /// The encoded signed lease the client holds.
        lease: Vec<u8>,
    },
    /// Fetch the netmap (one page). Kind `0x03`, body
    /// `since_version u64 | cursor u64`.
    Netmap {
        /// The version the client holds (0: none, send everything).
        since_version: u64,
        /// 0 for the first page, else a `next_cursor` of the previous page.
        cursor: u64,
    },
    /// Where is the entity with this permanent address (the home agent's
    /// binding)? Asked by servers: `lease` is the asker's own lease (a
    /// system's or an application's, for the channel's static key), which
    /// addrd verifies before it answers. Kind `0x04`, body `lease_len u16
    /// | lease | address [16]`.
    WhereIs {
        /// The encoded signed lease of the asker.
        lease: Vec<u8>,
        /// The permanent address looked up.
        address: Ipv6Addr,
    },
}

/// Why addrd wants a fresh login instead of renewing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoginNeededReason {
    /// The lease has expired (or is not one addrd issued).
    LeaseExpired,
    /// The session is older than the maximum session age.
    SessionTooOld,
    /// The account is disabled or was removed from the directory.
    AccountDisabled,
    /// The key was revoked (`addrd revoke`).
    Revoked,
    /// The lease is for another key than the channel's static key.
    KeyMismatch,
    /// A reason this version does not know, kept for logging.
    Other(u8),
}

impl LoginNeededReason {
    /// The wire code.
    pub const fn code(self) -> u8 {
        match self {
            LoginNeededReason::LeaseExpired => 1,
            LoginNeededReason::SessionTooOld => 2,
            LoginNeededReason::AccountDisabled => 3,
            LoginNeededReason::Revoked => 4,
            LoginNeededReason::KeyMismatch => 5,
            LoginNeededReason::Other(code) => code,
        }
    }

    /// The reason of a wire code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => LoginNeededReason::LeaseExpired,
            2 => LoginNeededReason::SessionTooOld,
            3 => LoginNeededReason::AccountDisabled,
            4 => LoginNeededReason::Revoked,
            5 => LoginNeededReason::KeyMismatch,
            other => LoginNeededReason::Other(other),
        }
    }
}

/// A generic failure answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request was well-formed but makes no sense (e.g. a renewal of a
    /// lease that does not parse).
    BadRequest,
    /// The request kind is not supported by this addrd.
    Unsupported,
    /// The directory cannot be reached; try again later.
    DirectoryUnavailable,
    /// Anything else on addrd's side.
    Internal,
    /// The asker may not have this answer (a user asking where another
    /// entity is, a server asking for a user who cannot reach it).
    NotAuthorized,
    /// A code this version does not know, kept for logging.
    Other(u16),
}

impl ErrorCode {
    /// The wire code.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::Unsupported => 2,
            ErrorCode::DirectoryUnavailable => 3,
            ErrorCode::Internal => 4,
            ErrorCode::NotAuthorized => 5,
            ErrorCode::Other(code) => code,
        }
    }

    /// The error of a wire code.
    pub const fn from_code(code: u16) -> Self {
        match code {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::Unsupported,
            3 => ErrorCode::DirectoryUnavailable,
            4 => ErrorCode::Internal,
            5 => ErrorCode::NotAuthorized,
            other => ErrorCode::Other(other),
        }
    }
}

/// An entry a netmap removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Removed {
    /// The entity with this static key is gone (tag `0x01`, 32 bytes).
    Key(PublicKey),
    /// The entity on this prefix is gone (tag `0x02`, address (16) and
    /// prefix length (1)).
    Prefix(Ipv6Net),
}

impl Removed {
    const fn encoded_len(&self) -> usize {
        match self {
            Removed::Key(_) => 1 + 32,
            Removed::Prefix(_) => 1 + 16 + 1,
        }
    }
}

/// One page of the netmap.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NetmapPage {
    /// The netmap version this page belongs to.
    pub version: u64,
    /// Encoded signed leases of peers the client may reach.
    pub leases: Vec<Vec<u8>>,
    /// Entries removed since the client's `since_version`.
    pub removed: Vec<Removed>,
    /// The cursor of the next page, `None` on the last page.
    pub next_cursor: Option<u64>,
}

/// A binding of the home agent, as [`Response::Location`] carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The UDP endpoint the entity was last seen at on the authenticated
    /// path.
    pub endpoint: SocketAddr,
    /// The binding's sequence number (higher is newer).
    pub sequence: u64,
    /// Seconds the binding stays valid without a newer observation.
    pub expires_in_secs: u32,
    /// The encoded signed lease that authenticated the entity there.
    pub lease: Vec<u8>,
}

impl Location {
    /// `family u8 (4 or 6) | address (4 or 16) | port u16 | sequence u64 |
    /// expires_in_secs u32 | lease_len u16 | lease`.
    fn body_len(&self) -> usize {
        let address = match self.endpoint {
            SocketAddr::V4(_) => 4,
            SocketAddr::V6(_) => 16,
        };
        1 + address + 2 + 8 + 4 + 2 + self.lease.len()
    }
}

/// What addrd answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Login accepted. Kind `0x81`, body `netmap_version u64 | lease_len
    /// u16 | lease`.
    LoginOk {
        /// The new lease for the channel's static key.
        lease: Vec<u8>,
        /// The current netmap version (fetch it with [`Request::Netmap`]).
        netmap_version: u64,
    },
    /// Login refused: the same answer for every reason (unknown user, wrong
    /// password, disabled account, rate limit), so it tells an attacker
    /// nothing. Kind `0x82`, body `retry_after_secs u32`.
    LoginRefused {
        /// Seconds before another attempt can succeed.
        retry_after_secs: u32,
    },
    /// Renewal accepted. Kind `0x83`, body `lease_len u16 | lease`.
    Renewed {
        /// The new lease.
        lease: Vec<u8>,
    },
    /// Renewal refused: log in again. Kind `0x84`, body `reason u8`.
    LoginNeeded {
        /// Why.
        reason: LoginNeededReason,
    },
    /// A netmap page. Kind `0x85`, body `version u64 | more u8 |
    /// next_cursor u64 | lease_count u16 | (lease_len u16 | lease)* |
    /// removed_count u16 | removed*`.
    Netmap(NetmapPage),
    /// addrd is overloaded; try again later. Kind `0x86`, body
    /// `retry_after_secs u32`.
    ServerBusy {
        /// Seconds to wait.
        retry_after_secs: u32,
    },
    /// The request failed. Kind `0x87`, body `code u16`.
    Error {
        /// Why.
        code: ErrorCode,
    },
    /// The binding asked for with [`Request::WhereIs`]. Kind `0x88`, body
    /// as [`Location`] documents.
    Location(Location),
    /// No binding for that address (the entity has not been seen lately,
    /// or no entity has the address). Kind `0x89`, empty body.
    NotBound,
}

const KIND_LOGIN: u8 = 0x01;
const KIND_RENEW: u8 = 0x02;
const KIND_NETMAP: u8 = 0x03;
const KIND_WHERE_IS: u8 = 0x04;
const KIND_LOGIN_OK: u8 = 0x81;
const KIND_LOGIN_REFUSED: u8 = 0x82;
const KIND_RENEWED: u8 = 0x83;
const KIND_LOGIN_NEEDED: u8 = 0x84;
const KIND_NETMAP_PAGE: u8 = 0x85;
const KIND_SERVER_BUSY: u8 = 0x86;
const KIND_ERROR: u8 = 0x87;
const KIND_LOCATION: u8 = 0x88;
const KIND_NOT_BOUND: u8 = 0x89;

impl Request {
    /// Length of the encoded record (header included).
    pub fn buffer_len(&self) -> usize {
        RECORD_HEADER_LEN
            + match self {
                Request::Login { user, password } => 1 + user.len() + 2 + password.expose().len(),
                Request::Renew { lease } => 2 + lease.len(),
                Request::Netmap { .. } => 16,
                Request::WhereIs { lease, .. } => 2 + lease.len() + 16,
            }
    }

    /// Writes the record for request `id` to the front of `out` and returns
    /// its length.
    pub fn emit(&self, id: RequestId, out: &mut [u8]) -> Result<usize, MessageError> {
        let len = self.buffer_len();
        if len > MAX_RECORD_LEN {
            return Err(MessageError::TooLong);
        }
        let mut w = Writer::new(out.get_mut(..len).ok_or(MessageError::BufferTooSmall)?);
        match self {
            Request::Login { user, password } => {
                if user.is_empty() || user.len() > MAX_USER_LEN {
                    return Err(MessageError::BadUser);
                }
                let password = password.expose();
                if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
                    return Err(MessageError::BadPassword);
                }
                w.header(KIND_LOGIN, id)?;
                w.u8(u8::try_from(user.len()).map_err(|_| MessageError::BadUser)?)?;
                w.put(user.as_bytes())?;
                w.u16(u16::try_from(password.len()).map_err(|_| MessageError::BadPassword)?)?;
                w.put(password)?;
            }
            Request::Renew { lease } => {
                w.header(KIND_RENEW, id)?;
                w.lease(lease)?;
            }
            Request::Netmap {
                since_version,
                cursor,
            } => {
                w.header(KIND_NETMAP, id)?;
                w.u64(*since_version)?;
                w.u64(*cursor)?;
            }
            Request::WhereIs { lease, address } => {
                w.header(KIND_WHERE_IS, id)?;
                w.lease(lease)?;
                w.put(&address.octets())?;
            }
        }
        Ok(len)
    }

    /// Parses a request record.
    pub fn parse(bytes: &[u8]) -> Result<(RequestId, Request), MessageError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(MessageError::TooLong);
        }
        let mut r = Reader(bytes);
        let kind = r.u8()?;
        let id = RequestId(r.u64()?);
        let request = match kind {
            KIND_LOGIN => {
                let user_len = usize::from(r.u8()?);
                let user = r.take(user_len)?;
                if user.is_empty() {
                    return Err(MessageError::BadUser);
                }
                let user = std::str::from_utf8(user).map_err(|_| MessageError::BadUser)?;
                let password_len = usize::from(r.u16()?);
                if password_len == 0 || password_len > MAX_PASSWORD_LEN {
                    return Err(MessageError::BadPassword);
                }
                let password = Password::from_slice(r.take(password_len)?);
                Request::Login {
                    user: user.to_owned(),
                    password,
                }
            }
            KIND_RENEW => Request::Renew { lease: r.lease()? },
            KIND_NETMAP => Request::Netmap {
                since_version: r.u64()?,
                cursor: r.u64()?,
            },
            KIND_WHERE_IS => Request::WhereIs {
                lease: r.lease()?,
                address: Ipv6Addr::from(r.array::<16>()?),
            },
            other if other & 0x80 != 0 && is_response_kind(other) => {
                return Err(MessageError::WrongDirection)
            }
            other => return Err(MessageError::UnknownKind(other)),
        };
        r.finish()?;
        Ok((id, request))
    }

    /// A short name for logs ("login", "renew", "netmap"); never the
    /// contents.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Request::Login { .. } => "login",
            Request::Renew { .. } => "renew",
            Request::Netmap { .. } => "netmap",
            Request::WhereIs { .. } => "where_is",
        }
    }
}

impl Response {
    /// Length of the encoded record (header included).
    pub fn buffer_len(&self) -> usize {
        RECORD_HEADER_LEN
            + match self {
                Response::LoginOk { lease, .. } => 8 + 2 + lease.len(),
                Response::LoginRefused { .. } | Response::ServerBusy { .. } => 4,
                Response::Renewed { lease } => 2 + lease.len(),
                Response::LoginNeeded { .. } => 1,
                Response::Netmap(page) => netmap_body_len(page),
                Response::Error { .. } => 2,
                Response::Location(location) => location.body_len(),
                Response::NotBound => 0,
            }
    }

    /// Writes the record answering request `id` to the front of `out` and
    /// returns its length.
    pub fn emit(&self, id: RequestId, out: &mut [u8]) -> Result<usize, MessageError> {
        let len = self.buffer_len();
        if len > MAX_RECORD_LEN {
            return Err(MessageError::TooLong);
        }
        let mut w = Writer::new(out.get_mut(..len).ok_or(MessageError::BufferTooSmall)?);
        match self {
            Response::LoginOk {
                lease,
                netmap_version,
            } => {
                w.header(KIND_LOGIN_OK, id)?;
                w.u64(*netmap_version)?;
                w.lease(lease)?;
            }
            Response::LoginRefused { retry_after_secs } => {
                w.header(KIND_LOGIN_REFUSED, id)?;
                w.u32(*retry_after_secs)?;
            }
            Response::Renewed { lease } => {
                w.header(KIND_RENEWED, id)?;
                w.lease(lease)?;
            }
            Response::LoginNeeded { reason } => {
                w.header(KIND_LOGIN_NEEDED, id)?;
                w.u8(reason.code())?;
            }
            Response::Netmap(page) => {
                w.header(KIND_NETMAP_PAGE, id)?;
                w.u64(page.version)?;
                w.u8(u8::from(page.next_cursor.is_some()))?;
                w.u64(page.next_cursor.unwrap_or(0))?;
                w.u16(u16::try_from(page.leases.len()).map_err(|_| MessageError::TooManyEntries)?)?;
                for lease in &page.leases {
                    w.lease(lease)?;
                }
                w.u16(
                    u16::try_from(page.removed.len()).map_err(|_| MessageError::TooManyEntries)?,
                )?;
                for removed in &page.removed {
                    match removed {
                        Removed::Key(key) => {
                            w.u8(0x01)?;
                            w.put(key.as_bytes())?;
                        }
                        Removed::Prefix(net) => {
                            w.u8(0x02)?;
                            w.put(&net.addr().octets())?;
                            w.u8(net.prefix_len())?;
                        }
                    }
                }
            }
            Response::ServerBusy { retry_after_secs } => {
                w.header(KIND_SERVER_BUSY, id)?;
                w.u32(*retry_after_secs)?;
            }
            Response::Error { code } => {
                w.header(KIND_ERROR, id)?;
                w.u16(code.code())?;
            }
            Response::Location(location) => {
                w.header(KIND_LOCATION, id)?;
                match location.endpoint.ip() {
                    IpAddr::V4(v4) => {
                        w.u8(4)?;
                        w.put(&v4.octets())?;
                    }
                    IpAddr::V6(v6) => {
                        w.u8(6)?;
                        w.put(&v6.octets())?;
                    }
                }
                w.u16(location.endpoint.port())?;
                w.u64(location.sequence)?;
                w.u32(location.expires_in_secs)?;
                w.lease(&location.lease)?;
            }
            Response::NotBound => w.header(KIND_NOT_BOUND, id)?,
        }
        Ok(len)
    }

    /// Parses a response record.
    pub fn parse(bytes: &[u8]) -> Result<(RequestId, Response), MessageError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(MessageError::TooLong);
        }
        let mut r = Reader(bytes);
        let kind = r.u8()?;
        let id = RequestId(r.u64()?);
        let response = match kind {
            KIND_LOGIN_OK => {
                let netmap_version = r.u64()?;
                Response::LoginOk {
                    lease: r.lease()?,
                    netmap_version,
                }
            }
            KIND_LOGIN_REFUSED => Response::LoginRefused {
                retry_after_secs: r.u32()?,
            },
            KIND_RENEWED => Response::Renewed { lease: r.lease()? },
            KIND_LOGIN_NEEDED => Response::LoginNeeded {
                reason: LoginNeededReason::from_code(r.u8()?),
            },
            KIND_NETMAP_PAGE => {
                let version = r.u64()?;
                let more = r.u8()?;
                let cursor = r.u64()?;
                let next_cursor = match more {
                    0 if cursor == 0 => None,
                    1 => Some(cursor),
                    _ => return Err(MessageError::BadFlag),
                };
                let count = usize::from(r.u16()?);
                let mut leases = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    leases.push(r.lease()?);
                }
                let count = usize::from(r.u16()?);
                let mut removed = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    removed.push(match r.u8()? {
                        0x01 => Removed::Key(PublicKey(r.array::<32>()?)),
                        0x02 => {
                            let addr = Ipv6Addr::from(r.array::<16>()?);
                            let len = r.u8()?;
                            Removed::Prefix(
                                Ipv6Net::new(addr, len).map_err(|_| MessageError::BadRemoved)?,
                            )
                        }
                        _ => return Err(MessageError::BadRemoved),
                    });
                }
                Response::Netmap(NetmapPage {
                    version,
                    leases,
                    removed,
                    next_cursor,
                })
            }
            KIND_SERVER_BUSY => Response::ServerBusy {
                retry_after_secs: r.u32()?,
            },
            KIND_ERROR => Response::Error {
                code: ErrorCode::from_code(r.u16()?),
            },
            KIND_LOCATION => {
                let ip = match r.u8()? {
                    4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                    6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                    _ => return Err(MessageError::BadEndpoint),
                };
                let port = r.u16()?;
                Response::Location(Location {
                    endpoint: SocketAddr::new(ip, port),
                    sequence: r.u64()?,
                    expires_in_secs: r.u32()?,
                    lease: r.lease()?,
                })
            }
            KIND_NOT_BOUND => Response::NotBound,
            KIND_LOGIN | KIND_RENEW | KIND_NETMAP | KIND_WHERE_IS => {
                return Err(MessageError::WrongDirection)
            }
            other => return Err(MessageError::UnknownKind(other)),
        };
        r.finish()?;
        Ok((id, response))
    }

    /// A short name for logs; never the contents.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Response::LoginOk { .. } => "login_ok",
            Response::LoginRefused { .. } => "login_refused",
            Response::Renewed { .. } => "renewed",
            Response::LoginNeeded { .. } => "login_needed",
            Response::Netmap(_) => "netmap",
            Response::ServerBusy { .. } => "server_busy",
            Response::Error { .. } => "error",
            Response::Location(_) => "location",
            Response::NotBound => "not_bound",
        }
    }
}

/// Fills a netmap page from `leases` and `removed`, in order, so that the
/// page's record stays within `budget` bytes (for example
/// [`super::TARGET_RECORD_LEN`]); returns the page (with `next_cursor`
/// `None`: the caller sets it) and how many leases and removed entries it
/// took. A first lease too large for the budget is taken alone (a lease is
/// at most [`MAX_LEASE_LEN`] bytes, so the record stays within
/// [`MAX_RECORD_LEN`]); removals are only added once every lease is in.
pub fn fill_netmap_page(
    version: u64,
    leases: &[Vec<u8>],
    removed: &[Removed],
    budget: usize,
) -> (NetmapPage, usize, usize) {
    let mut page = NetmapPage {
        version,
        ..NetmapPage::default()
    };
    // The fixed fields, with the largest cursor the caller may add.
    let mut len = RECORD_HEADER_LEN + netmap_body_len(&page);
    for lease in leases {
        let more = 2 + lease.len();
        let alone = page.leases.is_empty() && len + more <= MAX_RECORD_LEN;
        if len + more > budget && !alone {
            break;
        }
        if page.leases.len() == usize::from(u16::MAX) {
            break;
        }
        len += more;
        page.leases.push(lease.clone());
    }
    let took_leases = page.leases.len();
    if took_leases == leases.len() {
        for entry in removed {
            if len + entry.encoded_len() > budget || page.removed.len() == usize::from(u16::MAX) {
                break;
            }
            len += entry.encoded_len();
            page.removed.push(*entry);
        }
    }
    let took_removed = page.removed.len();
    (page, took_leases, took_removed)
}

fn netmap_body_len(page: &NetmapPage) -> usize {
    8 + 1
        + 8
        + 2
        + page.leases.iter().map(|l| 2 + l.len()).sum::<usize>()
        + 2
        + page.removed.iter().map(Removed::encoded_len).sum::<usize>()
}

fn is_response_kind(kind: u8) -> bool {
    (KIND_LOGIN_OK..=KIND_NOT_BOUND).contains(&kind)
}

/// Writes fields into a slice of exactly the record's length.
struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Writer { out, at: 0 }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), MessageError> {
        let end = self.at + bytes.len();
        self.out
            .get_mut(self.at..end)
            .ok_or(MessageError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), MessageError> {
        self.put(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), MessageError> {
        self.put(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), MessageError> {
        self.put(&v.to_be_bytes())
    }

    fn u64(&mut self, v: u64) -> Result<(), MessageError> {
        self.put(&v.to_be_bytes())
    }

    fn header(&mut self, kind: u8, id: RequestId) -> Result<(), MessageError> {
        self.u8(kind)?;
        self.u64(id.0)
    }

    fn lease(&mut self, lease: &[u8]) -> Result<(), MessageError> {
        if lease.is_empty() || lease.len() > MAX_LEASE_LEN {
            return Err(MessageError::BadLease);
        }
        self.u16(u16::try_from(lease.len()).map_err(|_| MessageError::BadLease)?)?;
        self.put(lease)
    }
}

/// Reads fields from the front of a record.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(MessageError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(MessageError::Truncated)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, MessageError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        self.array().map(u64::from_be_bytes)
    }

    fn lease(&mut self) -> Result<Vec<u8>, MessageError> {
        let len = usize::from(self.u16()?);
        if len == 0 || len > MAX_LEASE_LEN {
            return Err(MessageError::BadLease);
        }
        Ok(self.take(len)?.to_vec())
    }

    fn finish(self) -> Result<(), MessageError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(MessageError::TrailingBytes)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn emit_request(id: u64, request: &Request) -> Vec<u8> {
        let mut out = vec![0u8; request.buffer_len()];
        assert_eq!(request.emit(RequestId(id), &mut out).unwrap(), out.len());
        out
    }

    fn emit_response(id: u64, response: &Response) -> Vec<u8> {
        let mut out = vec![0u8; response.buffer_len()];
        assert_eq!(response.emit(RequestId(id), &mut out).unwrap(), out.len());
        out
    }

    #[test]
    fn login_known_bytes() {
        let request = Request::Login {
            user: "alice".to_owned(),
            password: Password::from_slice(b"pw"),
        };
        let bytes = emit_request(0x0102_0304_0506_0708, &request);
        assert_eq!(
            bytes,
            [
                0x01, 1, 2, 3, 4, 5, 6, 7, 8, // kind, id
                5, b'a', b'l', b'i', b'c', b'e', // user
                0, 2, b'p', b'w', // password
            ]
        );
        assert_eq!(
            Request::parse(&bytes).unwrap(),
            (RequestId(0x0102_0304_0506_0708), request)
        );
    }

    #[test]
    fn renew_and_netmap_known_bytes() {
        let renew = Request::Renew {
            lease: vec![0xAA, 0xBB, 0xCC],
        };
        let bytes = emit_request(9, &renew);
        assert_eq!(
            bytes,
            [0x02, 0, 0, 0, 0, 0, 0, 0, 9, 0, 3, 0xAA, 0xBB, 0xCC]
        );
        assert_eq!(Request::parse(&bytes).unwrap(), (RequestId(9), renew));

        let netmap = Request::Netmap {
            since_version: 7,
            cursor: 0x100,
        };
        let bytes = emit_request(1, &netmap);
        assert_eq!(
            bytes,
            [3, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(Request::parse(&bytes).unwrap(), (RequestId(1), netmap));
    }

    #[test]
    fn responses_known_bytes() {
        let cases: Vec<(Response, Vec<u8>)> = vec![
            (
                Response::LoginOk {
                    lease: vec![0x11, 0x22],
                    netmap_version: 3,
                },
                vec![
                    0x81, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3, 0, 2, 0x11, 0x22,
                ],
            ),
            (
                Response::LoginRefused {
                    retry_after_secs: 0x0102_0304,
                },
                vec![0x82, 0, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4],
            ),
            (
                Response::Renewed { lease: vec![0x33] },
                vec![0x83, 0, 0, 0, 0, 0, 0, 0, 5, 0, 1, 0x33],
            ),
            (
                Response::LoginNeeded {
                    reason: LoginNeededReason::Revoked,
                },
                vec![0x84, 0, 0, 0, 0, 0, 0, 0, 5, 4],
            ),
            (
                Response::ServerBusy {
                    retry_after_secs: 2,
                },
                vec![0x86, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 2],
            ),
            (
                Response::Error {
                    code: ErrorCode::DirectoryUnavailable,
                },
                vec![0x87, 0, 0, 0, 0, 0, 0, 0, 5, 0, 3],
            ),
            (
                Response::Netmap(NetmapPage {
                    version: 2,
                    leases: vec![vec![0x44]],
                    removed: vec![
                        Removed::Key(PublicKey([0x55; 32])),
                        Removed::Prefix("2002:b16:2c21::1/128".parse().unwrap()),
                    ],
                    next_cursor: Some(6),
                }),
                {
                    let mut v = vec![0x85, 0, 0, 0, 0, 0, 0, 0, 5];
                    v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 6]);
                    v.extend_from_slice(&[0, 1, 0, 1, 0x44, 0, 2, 0x01]);
                    v.extend_from_slice(&[0x55; 32]);
                    v.extend_from_slice(&[
                        0x02, 0x20, 0x02, 0x0b, 0x16, 0x2c, 0x21, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 128,
                    ]);
                    v
                },
            ),
        ];
        for (response, bytes) in cases {
            assert_eq!(emit_response(5, &response), bytes, "{response:?}");
            assert_eq!(Response::parse(&bytes).unwrap(), (RequestId(5), response));
        }
    }

    #[test]
    fn where_is_and_its_answers_known_bytes() {
        let request = Request::WhereIs {
            lease: vec![0xAA, 0xBB],
            address: "fd00::1".parse().unwrap(),
        };
        let bytes = emit_request(2, &request);
        let mut expected = vec![0x04, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0xAA, 0xBB, 0xfd];
        expected.extend_from_slice(&[0; 14]);
        expected.push(1);
        assert_eq!(bytes, expected);
        assert_eq!(Request::parse(&bytes).unwrap(), (RequestId(2), request));

        let v4 = Response::Location(Location {
            endpoint: "192.0.2.7:4500".parse().unwrap(),
            sequence: 0x0102,
            expires_in_secs: 300,
            lease: vec![0x66],
        });
        let bytes = emit_response(3, &v4);
        assert_eq!(
            bytes,
            [
                0x88, 0, 0, 0, 0, 0, 0, 0, 3, // kind, id
                4, 192, 0, 2, 7, 0x11, 0x94, // family, address, port
                0, 0, 0, 0, 0, 0, 1, 2, // sequence
                0, 0, 1, 0x2c, // expires in
                0, 1, 0x66, // lease
            ]
        );
        assert_eq!(Response::parse(&bytes).unwrap(), (RequestId(3), v4));

        let v6 = Response::Location(Location {
            endpoint: "[2001:db8::9]:1".parse().unwrap(),
            sequence: 1,
            expires_in_secs: 1,
            lease: vec![1; 3],
        });
        let bytes = emit_response(3, &v6);
        assert_eq!(bytes.len(), 9 + 1 + 16 + 2 + 8 + 4 + 2 + 3);
        assert_eq!(bytes[9], 6);
        assert_eq!(Response::parse(&bytes).unwrap(), (RequestId(3), v6));
        let mut bad_family = bytes.clone();
        bad_family[9] = 5;
        assert_eq!(Response::parse(&bad_family), Err(MessageError::BadEndpoint));

        let bytes = emit_response(4, &Response::NotBound);
        assert_eq!(bytes, [0x89, 0, 0, 0, 0, 0, 0, 0, 4]);
        assert_eq!(
            Response::parse(&bytes).unwrap(),
            (RequestId(4), Response::NotBound)
        );
        let bytes = emit_response(
            4,
            &Response::Error {
                code: ErrorCode::NotAuthorized,
            },
        );
        assert_eq!(bytes, [0x87, 0, 0, 0, 0, 0, 0, 0, 4, 0, 5]);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let records = [
            emit_request(
                1,
                &Request::Login {
                    user: "bob".into(),
                    password: Password::from_slice(b"secret"),
                },
            ),
            emit_request(1, &Request::Renew { lease: vec![1; 40] }),
            emit_request(
                1,
                &Request::WhereIs {
                    lease: vec![1; 40],
                    address: Ipv6Addr::LOCALHOST,
                },
            ),
            emit_response(
                1,
                &Response::Location(Location {
                    endpoint: "192.0.2.1:9".parse().unwrap(),
                    sequence: 1,
                    expires_in_secs: 2,
                    lease: vec![1; 30],
                }),
            ),
            emit_response(
                1,
                &Response::Netmap(NetmapPage {
                    version: 1,
                    leases: vec![vec![1; 10], vec![2; 20]],
                    removed: vec![Removed::Key(PublicKey([3; 32]))],
                    next_cursor: None,
                }),
            ),
        ];
        for record in &records {
            let is_request = record[0] < 0x80;
            for len in 0..record.len() {
                let short = &record[..len];
                if is_request {
                    assert!(Request::parse(short).is_err(), "len {len}");
                } else {
                    assert!(Response::parse(short).is_err(), "len {len}");
                }
            }
            let mut long = record.clone();
            long.push(0);
            if is_request {
                assert_eq!(Request::parse(&long), Err(MessageError::TrailingBytes));
                assert_eq!(Response::parse(record), Err(MessageError::WrongDirection));
            } else {
                assert_eq!(Response::parse(&long), Err(MessageError::TrailingBytes));
                assert_eq!(Request::parse(record), Err(MessageError::WrongDirection));
            }
        }
    }

    #[test]
    fn bad_fields_are_refused_on_emit_and_parse() {
        let mut buf = vec![0u8; 4096];
        let empty_password = Request::Login {
            user: "a".into(),
            password: Password::from_slice(b""),
        };
        assert_eq!(
            empty_password.emit(RequestId(1), &mut buf),
            Err(MessageError::BadPassword)
        );
        let empty_user = Request::Login {
            user: String::new(),
            password: Password::from_slice(b"x"),
        };
        assert_eq!(
            empty_user.emit(RequestId(1), &mut buf),
            Err(MessageError::BadUser)
        );
        let long_user = Request::Login {
            user: "u".repeat(256),
            password: Password::from_slice(b"x"),
        };
        assert_eq!(
            long_user.emit(RequestId(1), &mut buf),
            Err(MessageError::BadUser)
        );
        let big_lease = Request::Renew {
            lease: vec![0; MAX_LEASE_LEN + 1],
        };
        assert_eq!(
            big_lease.emit(RequestId(1), &mut buf),
            Err(MessageError::BadLease)
        );
        assert_eq!(
            Request::Renew { lease: vec![] }.emit(RequestId(1), &mut buf),
            Err(MessageError::BadLease)
        );
        // Zero-length password and non-UTF-8 user on the wire.
        let bytes = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, b'a', 0, 0];
        assert_eq!(Request::parse(&bytes), Err(MessageError::BadPassword));
        let bytes = [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xFF, 0, 1, b'x'];
        assert_eq!(Request::parse(&bytes), Err(MessageError::BadUser));
        assert_eq!(
            Request::parse(&[0x7F, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(MessageError::UnknownKind(0x7F))
        );
        // A netmap flag other than 0/1, and a prefix longer than 128.
        let page = Response::Netmap(NetmapPage {
            version: 1,
            removed: vec![Removed::Prefix("2002::/16".parse().unwrap())],
            ..NetmapPage::default()
        });
        let mut bytes = emit_response(1, &page);
        bytes[17] = 2;
        assert_eq!(Response::parse(&bytes), Err(MessageError::BadFlag));
        let mut bytes = emit_response(1, &page);
        *bytes.last_mut().unwrap() = 129;
        assert_eq!(Response::parse(&bytes), Err(MessageError::BadRemoved));
        // too small a buffer
        let mut small = [0u8; 5];
        assert_eq!(
            Request::Netmap {
                since_version: 0,
                cursor: 0
            }
            .emit(RequestId(1), &mut small),
            Err(MessageError::BufferTooSmall)
        );
    }

    #[test]
    fn password_never_shows_in_debug() {
        let request = Request::Login {
            user: "alice".into(),
            password: Password::from_slice(b"hunter2-very-secret"),
        };
        let shown = format!("{request:?} {request:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Password(..)"));
    }

    #[test]
    fn netmap_pages_fill_to_the_budget() {
        let leases: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 300]).collect();
        let removed = [Removed::Key(PublicKey([9; 32])); 3];
        let mut offset = 0;
        let mut pages = 0;
        let mut removed_seen = 0;
        while offset < leases.len() || removed_seen < removed.len() {
            let (mut page, took, took_removed) =
                fill_netmap_page(4, &leases[offset..], &removed[removed_seen..], 1355);
            assert!(took + took_removed > 0);
            page.next_cursor = Some(u64::MAX);
            assert!(Response::Netmap(page).buffer_len() <= 1355);
            offset += took;
            removed_seen += took_removed;
            pages += 1;
        }
        assert_eq!(pages, 13);
        // One lease larger than the budget still goes, alone.
        let big = vec![vec![1u8; MAX_LEASE_LEN], vec![2u8; 10]];
        let (page, took, _) = fill_netmap_page(1, &big, &[], 1355);
        assert_eq!(took, 1);
        assert!(Response::Netmap(page).buffer_len() <= MAX_RECORD_LEN);
    }
}
