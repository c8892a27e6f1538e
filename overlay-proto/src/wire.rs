//! Datagram classification and control-packet framing on the UDP port
//! (default 4500), following the RFC 3948 conventions.
//!
//! Every datagram that arrives on the overlay port is exactly one of three
//! things, told apart by its first bytes ([`classify`]):
//!
//! * a **NAT keepalive**: the single byte `0xFF` ([`NAT_KEEPALIVE`]);
//! * a **control packet**: the 4-byte non-ESP marker `00 00 00 00`
//!   ([`NON_ESP_MARKER`]), then a message type ([`MessageType`]);
//! * an **ESP packet**: the first four bytes are its SPI, which is never
//!   zero (that value is the marker) and never in the reserved range
//!   `1..=255` (RFC 4303 §2.1).
//!
//! The control messages (handshake initiation, handshake response, cookie
//! reply) are parsed smoltcp-style: [`ControlPacket`] is a checked view over
//! a buffer, and [`InitiationRepr`], [`ResponseRepr`] and
//! [`CookieReplyRepr`] are the high-level representations with
//! `parse`/`emit`/`buffer_len`. The Noise handshake message inside
//! initiations and responses is opaque here; the handshake module owns it.
//! The MAC helpers ([`ControlPacket::bytes_before_mac1`],
//! [`ControlPacket::set_mac1`] and friends) name the exact bytes that
//! `mac1` and `mac2` cover, so the cookie module computes them over the same
//! bytes the receiver checks. `docs/wire-format.md` has the byte diagrams.
#![deny(clippy::indexing_slicing)]

use core::ops::Range;

/// The RFC 3948 non-ESP marker that starts every control packet: four zero
/// bytes where an ESP packet has its (never zero) SPI.
pub const NON_ESP_MARKER: [u8; 4] = [0x00, 0x00, 0x00, 0x00];

/// The RFC 3948 NAT keepalive: a datagram of exactly this one byte.
pub const NAT_KEEPALIVE: [u8; 1] = [0xFF];

/// The smallest SPI usable on the wire (defined with ESP).
pub use crate::esp::MIN_SPI;

/// Length of the control header: marker (4), message type (1), reserved (3).
pub const HEADER_LEN: usize = 8;

/// Length of an SPI field.
pub const SPI_LEN: usize = 4;

/// Length of each of `mac1` and `mac2`, and of the cookie fields (defined
/// with the MACs in [`crate::cookie`]).
pub use crate::cookie::{COOKIE_NONCE_LEN, ENCRYPTED_COOKIE_LEN, MAC_LEN};

/// Smallest Noise message accepted in an initiation or response: one
/// ephemeral X25519 public key.
pub const MIN_NOISE_LEN: usize = 32;

/// Largest Noise message accepted in an initiation or response. A Noise
/// `IKpsk2` initiation carrying the largest lease (2048 bytes) plus the
/// handshake payload header is about 2.2 KB; this leaves room for future
/// payload fields while bounding what a peer can make us process.
pub const MAX_NOISE_LEN: usize = 4096;

/// Smallest valid handshake initiation (Noise message of [`MIN_NOISE_LEN`]).
pub const INITIATION_MIN_LEN: usize = HEADER_LEN + SPI_LEN + MIN_NOISE_LEN + 2 * MAC_LEN;

/// Smallest valid handshake response (Noise message of [`MIN_NOISE_LEN`]).
pub const RESPONSE_MIN_LEN: usize = HEADER_LEN + 2 * SPI_LEN + MIN_NOISE_LEN + 2 * MAC_LEN;

/// The one valid length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = HEADER_LEN + SPI_LEN + COOKIE_NONCE_LEN + ENCRYPTED_COOKIE_LEN;

/// Smallest valid authority data message: header, receiver session (4),
/// counter (8) and the AEAD tag (16) around an empty plaintext.
pub const AUTHORITY_DATA_MIN_LEN: usize = HEADER_LEN + SPI_LEN + 8 + 16;

/// Largest control packet accepted or emitted: a handshake response with a
/// Noise message of [`MAX_NOISE_LEN`] (4144 bytes). Anything longer is
/// refused before any field is looked at.
pub const MAX_CONTROL_LEN: usize = HEADER_LEN + 2 * SPI_LEN + MAX_NOISE_LEN + 2 * MAC_LEN;

/// Why a datagram or control packet was refused. Each variant is a separate
/// drop counter; [`WireError::as_str`] is its stable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram has no bytes at all.
    #[error("empty datagram")]
    Empty,
    /// The datagram ends before a field it must contain.
    #[error("truncated datagram")]
    Truncated,
    /// The control packet is longer than [`MAX_CONTROL_LEN`].
    #[error("control packet longer than the maximum")]
    TooLong,
    /// A fixed-length control message has bytes after its last field.
    #[error("trailing bytes after the control message")]
    TrailingBytes,
    /// The bytes do not start with the non-ESP marker.
    #[error("missing non-ESP marker")]
    NotControl,
    /// An SPI (of an ESP packet or inside a control message) is in the
    /// reserved range `0..=255`.
    #[error("reserved SPI")]
    ReservedSpi,
    /// The reserved bytes of a control header are not zero.
    #[error("non-zero reserved bytes in control header")]
    NonZeroReserved,
    /// The control message type is not one this version knows.
    #[error("unknown control message type {0:#04x}")]
    UnknownMessageType(u8),
    /// The control message has a known type, but not the one the caller
    /// asked to parse (or it has no MACs and the caller asked for them).
    #[error("unexpected control message type {0:?}")]
    UnexpectedMessageType(MessageType),
    /// The Noise message is shorter than [`MIN_NOISE_LEN`].
    #[error("Noise message too short")]
    NoiseTooShort,
    /// The Noise message is longer than [`MAX_NOISE_LEN`].
    #[error("Noise message too long")]
    NoiseTooLong,
    /// The output buffer given to `emit` is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
}

impl WireError {
    /// A stable snake_case label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            WireError::Empty => "empty",
            WireError::Truncated => "truncated",
            WireError::TooLong => "too_long",
            WireError::TrailingBytes => "trailing_bytes",
            WireError::NotControl => "not_control",
            WireError::ReservedSpi => "reserved_spi",
            WireError::NonZeroReserved => "non_zero_reserved",
            WireError::UnknownMessageType(_) => "unknown_message_type",
            WireError::UnexpectedMessageType(_) => "unexpected_message_type",
            WireError::NoiseTooShort => "noise_too_short",
            WireError::NoiseTooLong => "noise_too_long",
            WireError::BufferTooSmall => "buffer_too_small",
        }
    }
}

/// What a datagram received on the overlay port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// The single byte `0xFF`: a NAT keepalive, to be dropped silently.
    Keepalive,
    /// Starts with the non-ESP marker: parse with [`ControlPacket`] /
    /// [`ControlRepr`].
    Control,
    /// An ESP packet for the inbound SA with this SPI (at least
    /// [`MIN_SPI`]).
    Esp {
        /// The SPI in the first four bytes.
        spi: u32,
    },
}

/// Tells what a datagram is from its first bytes (RFC 3948 §2).
///
/// Only the prefix is looked at: a `Control` or `Esp` answer says which
/// parser to hand the datagram to, and that parser checks the rest. A
/// datagram of one byte other than `0xFF`, or of two or three bytes, is
/// `Truncated` (`FF 00` is not a keepalive).
pub fn classify(datagram: &[u8]) -> Result<DatagramKind, WireError> {
    match datagram {
        [] => Err(WireError::Empty),
        [0xFF] => Ok(DatagramKind::Keepalive),
        [a, b, c, d, ..] => match u32::from_be_bytes([*a, *b, *c, *d]) {
            0 => Ok(DatagramKind::Control),
            1..=0xFF => Err(WireError::ReservedSpi),
            spi => Ok(DatagramKind::Esp { spi }),
        },
        _ => Err(WireError::Truncated),
    }
}

/// The control message types, the byte after the non-ESP marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// First handshake message, initiator to responder.
    HandshakeInitiation = 0x01,
    /// Second handshake message, responder to initiator.
    HandshakeResponse = 0x02,
    /// Stateless cookie sent instead of a response when under load.
    CookieReply = 0x03,
    /// Authority channel (terminal to addrd): handshake initiation, laid
    /// out like [`MessageType::HandshakeInitiation`] (see
    /// [`crate::authority`]).
    AuthorityInitiation = 0x04,
    /// Authority channel: handshake response, laid out like
    /// [`MessageType::HandshakeResponse`].
    AuthorityResponse = 0x05,
    /// Authority channel: cookie reply, laid out like
    /// [`MessageType::CookieReply`].
    AuthorityCookieReply = 0x06,
    /// Authority channel: a sealed request or response
    /// (`receiver_session | counter | ciphertext | tag`).
    AuthorityData = 0x07,
}

impl MessageType {
    /// Smallest valid length of a control packet of this type.
    pub const fn min_len(self) -> usize {
        match self {
            MessageType::HandshakeInitiation => INITIATION_MIN_LEN,
            MessageType::HandshakeResponse => RESPONSE_MIN_LEN,
            MessageType::CookieReply => COOKIE_REPLY_LEN,
            MessageType::AuthorityInitiation => INITIATION_MIN_LEN,
            MessageType::AuthorityResponse => RESPONSE_MIN_LEN,
            MessageType::AuthorityCookieReply => COOKIE_REPLY_LEN,
            MessageType::AuthorityData => AUTHORITY_DATA_MIN_LEN,
        }
    }

    /// Whether messages of this type end with `mac1 | mac2`.
    pub const fn has_macs(self) -> bool {
        matches!(
            self,
            MessageType::HandshakeInitiation
                | MessageType::HandshakeResponse
                | MessageType::AuthorityInitiation
                | MessageType::AuthorityResponse
        )
    }

    /// Whether the message belongs to the authority channel (terminal to
    /// addrd) rather than to the tunnel: a driver hands those datagrams to
    /// its `AuthorityClient` or `AuthorityServer`, not to its `Node`.
    pub const fn is_authority(self) -> bool {
        matches!(
            self,
            MessageType::AuthorityInitiation
                | MessageType::AuthorityResponse
                | MessageType::AuthorityCookieReply
                | MessageType::AuthorityData
        )
    }

    /// Whether the message is a fixed-length cookie reply (of either
    /// channel).
    pub const fn is_cookie_reply(self) -> bool {
        matches!(
            self,
            MessageType::CookieReply | MessageType::AuthorityCookieReply
        )
    }
}

impl TryFrom<u8> for MessageType {
    type Error = WireError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0x01 => Ok(MessageType::HandshakeInitiation),
            0x02 => Ok(MessageType::HandshakeResponse),
            0x03 => Ok(MessageType::CookieReply),
            0x04 => Ok(MessageType::AuthorityInitiation),
            0x05 => Ok(MessageType::AuthorityResponse),
            0x06 => Ok(MessageType::AuthorityCookieReply),
            0x07 => Ok(MessageType::AuthorityData),
            other => Err(WireError::UnknownMessageType(other)),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(value: MessageType) -> Self {
        value as u8
    }
}

/// A checked view of a control packet: the header is valid (marker, known
/// type, zero reserved bytes) and the buffer is long enough for the fixed
/// fields of its type and no longer than [`MAX_CONTROL_LEN`].
///
/// The per-message fields are read by the `Repr`s; the view itself gives the
/// MAC helpers, which work on any buffer (including one just emitted with
/// zero MACs that the caller is about to fill in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket<T: AsRef<[u8]>> {
    buffer: T,
    message_type: MessageType,
}

impl<T: AsRef<[u8]>> ControlPacket<T> {
    /// Checks the header and length of `buffer` and wraps it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.is_empty() {
            return Err(WireError::Empty);
        }
        if bytes.len() > MAX_CONTROL_LEN {
            return Err(WireError::TooLong);
        }
        let Some(([m0, m1, m2, m3, ty, r0, r1, r2], _)) = bytes.split_first_chunk::<HEADER_LEN>()
        else {
            return Err(WireError::Truncated);
        };
        if [*m0, *m1, *m2, *m3] != NON_ESP_MARKER {
            return Err(WireError::NotControl);
        }
        let message_type = MessageType::try_from(*ty)?;
        if [*r0, *r1, *r2] != [0x00; 3] {
            return Err(WireError::NonZeroReserved);
        }
        if bytes.len() < message_type.min_len() {
            return Err(WireError::Truncated);
        }
        if message_type.is_cookie_reply() && bytes.len() > COOKIE_REPLY_LEN {
            return Err(WireError::TrailingBytes);
        }
        Ok(ControlPacket {
            buffer,
            message_type,
        })
    }

    /// The message type from the header.
    pub fn message_type(&self) -> MessageType {
        self.message_type
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The bytes after the 8-byte header.
    pub fn body(&self) -> &[u8] {
        self.as_bytes().get(HEADER_LEN..).unwrap_or_default()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Where `mac1` sits in the packet, or `None` for a cookie reply.
    pub fn mac1_range(&self) -> Option<Range<usize>> {
        self.mac_ranges().map(|(mac1, _)| mac1)
    }

    /// Where `mac2` sits in the packet, or `None` for a cookie reply.
    pub fn mac2_range(&self) -> Option<Range<usize>> {
        self.mac_ranges().map(|(_, mac2)| mac2)
    }

    /// The bytes `mac1` is computed over: from the marker up to, not
    /// including, `mac1`. `None` for a cookie reply.
    pub fn bytes_before_mac1(&self) -> Option<&[u8]> {
        let range = self.mac1_range()?;
        self.as_bytes().get(..range.start)
    }

    /// The bytes `mac2` is computed over: from the marker up to, not
    /// including, `mac2` (so `mac1` is covered). `None` for a cookie reply.
    pub fn bytes_before_mac2(&self) -> Option<&[u8]> {
        let range = self.mac2_range()?;
        self.as_bytes().get(..range.start)
    }

    /// The `mac1` field, or `None` for a cookie reply.
    pub fn mac1(&self) -> Option<[u8; MAC_LEN]> {
        let range = self.mac1_range()?;
        self.as_bytes().get(range)?.try_into().ok()
    }

    /// The `mac2` field, or `None` for a cookie reply.
    pub fn mac2(&self) -> Option<[u8; MAC_LEN]> {
        let range = self.mac2_range()?;
        self.as_bytes().get(range)?.try_into().ok()
    }

    fn mac_ranges(&self) -> Option<(Range<usize>, Range<usize>)> {
        if !self.message_type.has_macs() {
            return None;
        }
        let end = self.as_bytes().len();
        let mac2_start = end.checked_sub(MAC_LEN)?;
        let mac1_start = mac2_start.checked_sub(MAC_LEN)?;
        Some((mac1_start..mac2_start, mac2_start..end))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ControlPacket<T> {
    /// Overwrites `mac1` (after the caller computed it over
    /// [`bytes_before_mac1`](Self::bytes_before_mac1)).
    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) -> Result<(), WireError> {
        let range = self
            .mac1_range()
            .ok_or(WireError::UnexpectedMessageType(self.message_type))?;
        self.write_at(range, mac)
    }

    /// Overwrites `mac2` (after the caller computed it over
    /// [`bytes_before_mac2`](Self::bytes_before_mac2)).
    pub fn set_mac2(&mut self, mac: &[u8; MAC_LEN]) -> Result<(), WireError> {
        let range = self
            .mac2_range()
            .ok_or(WireError::UnexpectedMessageType(self.message_type))?;
        self.write_at(range, mac)
    }

    fn write_at(&mut self, range: Range<usize>, bytes: &[u8]) -> Result<(), WireError> {
        let field = self
            .buffer
            .as_mut()
            .get_mut(range)
            .ok_or(WireError::Truncated)?;
        field.copy_from_slice(bytes);
        Ok(())
    }
}

/// A handshake initiation:
/// `marker | 01 | 000000 | sender_spi | noise | mac1 | mac2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiationRepr<'a> {
    /// The initiator's inbound SPI for the new SA (≥ [`MIN_SPI`]); the
    /// response is addressed to it.
    pub sender_spi: u32,
    /// The opaque Noise `IK` first message.
    pub noise: &'a [u8],
    /// MAC keyed with the responder's static public key.
    pub mac1: [u8; MAC_LEN],
    /// MAC keyed with a cookie, or zeros.
    pub mac2: [u8; MAC_LEN],
}

impl<'a> InitiationRepr<'a> {
    /// Parses a complete control packet that must be an initiation.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        Self::parse_as(bytes, MessageType::HandshakeInitiation)
    }

    /// Parses a complete control packet that must be an initiation of the
    /// given type ([`MessageType::HandshakeInitiation`] or
    /// [`MessageType::AuthorityInitiation`], which share the layout).
    pub fn parse_as(bytes: &'a [u8], message_type: MessageType) -> Result<Self, WireError> {
        let packet = ControlPacket::new_checked(bytes)?;
        expect_type(&packet, message_type)?;
        let (sender_spi, rest) = read_spi(body_of(bytes))?;
        let NoiseAndMacs { noise, mac1, mac2 } = split_noise_and_macs(rest)?;
        Ok(InitiationRepr {
            sender_spi,
            noise,
            mac1,
            mac2,
        })
    }

    /// Length of the emitted packet.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + SPI_LEN + self.noise.len() + 2 * MAC_LEN
    }

    /// Writes the packet to the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.emit_as(buf, MessageType::HandshakeInitiation)
    }

    /// Writes the packet with the given message type (see
    /// [`parse_as`](Self::parse_as)).
    pub fn emit_as(&self, buf: &mut [u8], message_type: MessageType) -> Result<usize, WireError> {
        check_spi(self.sender_spi)?;
        check_noise_len(self.noise.len())?;
        let len = self.buffer_len();
        let mut w = Writer::new(buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?);
        w.put(&header(message_type))?;
        w.put(&self.sender_spi.to_be_bytes())?;
        w.put(self.noise)?;
        w.put(&self.mac1)?;
        w.put(&self.mac2)?;
        Ok(len)
    }
}

/// A handshake response:
/// `marker | 02 | 000000 | sender_spi | receiver_spi | noise | mac1 | mac2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRepr<'a> {
    /// The responder's inbound SPI for the new SA (≥ [`MIN_SPI`]).
    pub sender_spi: u32,
    /// The initiation's `sender_spi`, echoed so the initiator finds its
    /// pending handshake.
    pub receiver_spi: u32,
    /// The opaque Noise `IK` second message.
    pub noise: &'a [u8],
    /// MAC keyed with the initiator's static public key.
    pub mac1: [u8; MAC_LEN],
    /// MAC keyed with a cookie, or zeros.
    pub mac2: [u8; MAC_LEN],
}

impl<'a> ResponseRepr<'a> {
    /// Parses a complete control packet that must be a response.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        Self::parse_as(bytes, MessageType::HandshakeResponse)
    }

    /// Parses a complete control packet that must be a response of the
    /// given type ([`MessageType::HandshakeResponse`] or
    /// [`MessageType::AuthorityResponse`], which share the layout).
    pub fn parse_as(bytes: &'a [u8], message_type: MessageType) -> Result<Self, WireError> {
        let packet = ControlPacket::new_checked(bytes)?;
        expect_type(&packet, message_type)?;
        let (sender_spi, rest) = read_spi(body_of(bytes))?;
        let (receiver_spi, rest) = read_spi(rest)?;
        let NoiseAndMacs { noise, mac1, mac2 } = split_noise_and_macs(rest)?;
        Ok(ResponseRepr {
            sender_spi,
            receiver_spi,
            noise,
            mac1,
            mac2,
        })
    }

    /// Length of the emitted packet.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 2 * SPI_LEN + self.noise.len() + 2 * MAC_LEN
    }

    /// Writes the packet to the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.emit_as(buf, MessageType::HandshakeResponse)
    }

    /// Writes the packet with the given message type (see
    /// [`parse_as`](Self::parse_as)).
    pub fn emit_as(&self, buf: &mut [u8], message_type: MessageType) -> Result<usize, WireError> {
        check_spi(self.sender_spi)?;
        check_spi(self.receiver_spi)?;
        check_noise_len(self.noise.len())?;
        let len = self.buffer_len();
        let mut w = Writer::new(buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?);
        w.put(&header(message_type))?;
        w.put(&self.sender_spi.to_be_bytes())?;
        w.put(&self.receiver_spi.to_be_bytes())?;
        w.put(self.noise)?;
        w.put(&self.mac1)?;
        w.put(&self.mac2)?;
        Ok(len)
    }
}

/// A cookie reply: `marker | 03 | 000000 | receiver_spi | nonce |
/// encrypted_cookie`, always [`COOKIE_REPLY_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReplyRepr {
    /// The `sender_spi` of the initiation (or response) being answered.
    pub receiver_spi: u32,
    /// Random XChaCha20-Poly1305 nonce.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// The 16-byte cookie sealed with its 16-byte tag.
    pub encrypted_cookie: [u8; ENCRYPTED_COOKIE_LEN],
}

impl CookieReplyRepr {
    /// Parses a complete control packet that must be a cookie reply.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        Self::parse_as(bytes, MessageType::CookieReply)
    }

    /// Parses a complete control packet that must be a cookie reply of the
    /// given type ([`MessageType::CookieReply`] or
    /// [`MessageType::AuthorityCookieReply`], which share the layout).
    pub fn parse_as(bytes: &[u8], message_type: MessageType) -> Result<Self, WireError> {
        let packet = ControlPacket::new_checked(bytes)?;
        expect_type(&packet, message_type)?;
        let (receiver_spi, rest) = read_spi(body_of(bytes))?;
        let (nonce, rest) = rest
            .split_first_chunk::<COOKIE_NONCE_LEN>()
            .ok_or(WireError::Truncated)?;
        let (encrypted_cookie, rest) = rest
            .split_first_chunk::<ENCRYPTED_COOKIE_LEN>()
            .ok_or(WireError::Truncated)?;
        if !rest.is_empty() {
            return Err(WireError::TrailingBytes);
        }
        Ok(CookieReplyRepr {
            receiver_spi,
            nonce: *nonce,
            encrypted_cookie: *encrypted_cookie,
        })
    }

    /// Length of the emitted packet ([`COOKIE_REPLY_LEN`]).
    pub fn buffer_len(&self) -> usize {
        COOKIE_REPLY_LEN
    }

    /// Writes the packet to the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        self.emit_as(buf, MessageType::CookieReply)
    }

    /// Writes the packet with the given message type (see
    /// [`parse_as`](Self::parse_as)).
    pub fn emit_as(&self, buf: &mut [u8], message_type: MessageType) -> Result<usize, WireError> {
        check_spi(self.receiver_spi)?;
        let len = self.buffer_len();
        let mut w = Writer::new(buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?);
        w.put(&header(message_type))?;
        w.put(&self.receiver_spi.to_be_bytes())?;
        w.put(&self.nonce)?;
        w.put(&self.encrypted_cookie)?;
        Ok(len)
    }
}

/// Any control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRepr<'a> {
    /// A handshake initiation.
    Initiation(InitiationRepr<'a>),
    /// A handshake response.
    Response(ResponseRepr<'a>),
    /// A cookie reply.
    CookieReply(CookieReplyRepr),
}

impl<'a> ControlRepr<'a> {
    /// Parses a complete control packet of any type.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        match ControlPacket::new_checked(bytes)?.message_type() {
            MessageType::HandshakeInitiation => InitiationRepr::parse(bytes).map(Self::Initiation),
            MessageType::HandshakeResponse => ResponseRepr::parse(bytes).map(Self::Response),
            MessageType::CookieReply => CookieReplyRepr::parse(bytes).map(Self::CookieReply),
            // The authority channel's messages are parsed by
            // `crate::authority`, not by the tunnel's control plane.
            other => Err(WireError::UnexpectedMessageType(other)),
        }
    }

    /// The message type.
    pub fn message_type(&self) -> MessageType {
        match self {
            ControlRepr::Initiation(_) => MessageType::HandshakeInitiation,
            ControlRepr::Response(_) => MessageType::HandshakeResponse,
            ControlRepr::CookieReply(_) => MessageType::CookieReply,
        }
    }

    /// Length of the emitted packet.
    pub fn buffer_len(&self) -> usize {
        match self {
            ControlRepr::Initiation(repr) => repr.buffer_len(),
            ControlRepr::Response(repr) => repr.buffer_len(),
            ControlRepr::CookieReply(repr) => repr.buffer_len(),
        }
    }

    /// Writes the packet to the start of `buf` and returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        match self {
            ControlRepr::Initiation(repr) => repr.emit(buf),
            ControlRepr::Response(repr) => repr.emit(buf),
            ControlRepr::CookieReply(repr) => repr.emit(buf),
        }
    }
}

fn header(message_type: MessageType) -> [u8; HEADER_LEN] {
    let [m0, m1, m2, m3] = NON_ESP_MARKER;
    [m0, m1, m2, m3, message_type.into(), 0x00, 0x00, 0x00]
}

fn expect_type<T: AsRef<[u8]>>(
    packet: &ControlPacket<T>,
    expected: MessageType,
) -> Result<(), WireError> {
    match packet.message_type() {
        found if found == expected => Ok(()),
        found => Err(WireError::UnexpectedMessageType(found)),
    }
}

fn body_of(bytes: &[u8]) -> &[u8] {
    bytes.get(HEADER_LEN..).unwrap_or_default()
}

fn check_spi(spi: u32) -> Result<u32, WireError> {
    if spi < MIN_SPI {
        Err(WireError::ReservedSpi)
    } else {
        Ok(spi)
    }
}

fn check_noise_len(len: usize) -> Result<(), WireError> {
    if len < MIN_NOISE_LEN {
        Err(WireError::NoiseTooShort)
    } else if len > MAX_NOISE_LEN {
        Err(WireError::NoiseTooLong)
    } else {
        Ok(())
    }
}

fn read_spi(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    let (spi, rest) = bytes
        .split_first_chunk::<SPI_LEN>()
        .ok_or(WireError::Truncated)?;
    Ok((check_spi(u32::from_be_bytes(*spi))?, rest))
}

/// The tail shared by initiations and responses.
struct NoiseAndMacs<'a> {
    noise: &'a [u8],
    mac1: [u8; MAC_LEN],
    mac2: [u8; MAC_LEN],
}

/// Splits `noise | mac1 | mac2` and checks the Noise length.
fn split_noise_and_macs(bytes: &[u8]) -> Result<NoiseAndMacs<'_>, WireError> {
    let (rest, mac2) = bytes
        .split_last_chunk::<MAC_LEN>()
        .ok_or(WireError::Truncated)?;
    let (noise, mac1) = rest
        .split_last_chunk::<MAC_LEN>()
        .ok_or(WireError::Truncated)?;
    check_noise_len(noise.len())?;
    Ok(NoiseAndMacs {
        noise,
        mac1: *mac1,
        mac2: *mac2,
    })
}

/// Sequential writer over an output slice that never panics.
struct Writer<'b> {
    rest: &'b mut [u8],
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8]) -> Self {
        Writer { rest: buf }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest
            .split_at_mut_checked(bytes.len())
            .ok_or(WireError::BufferTooSmall)?;
        head.copy_from_slice(bytes);
        self.rest = tail;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 distinct bytes, so a field written in the wrong place shows.
    const NOISE32: [u8; 32] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f,
    ];
    const MAC_A: [u8; 16] = [0xa1; 16];
    const MAC_B: [u8; 16] = [0xb2; 16];

    /// Initiation, sender SPI 0x0102_0304, Noise = NOISE32, mac1 = a1.., mac2 = b2...
    const INITIATION_BYTES: [u8; 76] = [
        0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // marker, type, reserved
        0x01, 0x02, 0x03, 0x04, // sender_spi
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f, // noise
        0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1,
        0xa1, // mac1
        0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2,
        0xb2, // mac2
    ];

    /// Response, sender SPI 0xdead_beef, receiver SPI 0x0102_0304.
    const RESPONSE_BYTES: [u8; 80] = [
        0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // marker, type, reserved
        0xde, 0xad, 0xbe, 0xef, // sender_spi
        0x01, 0x02, 0x03, 0x04, // receiver_spi
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f, // noise
        0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1, 0xa1,
        0xa1, // mac1
        0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2, 0xb2,
        0xb2, // mac2
    ];

    /// Cookie reply, receiver SPI 0x0000_0100, nonce 0x40.., sealed cookie 0x50...
    const COOKIE_REPLY_BYTES: [u8; 68] = [
        0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, // marker, type, reserved
        0x00, 0x00, 0x01, 0x00, // receiver_spi
        0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e,
        0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, // nonce
        0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e,
        0x6f, 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d,
        0x7e, 0x7f, // encrypted_cookie
    ];

    fn initiation() -> InitiationRepr<'static> {
        InitiationRepr {
            sender_spi: 0x0102_0304,
            noise: &NOISE32,
            mac1: MAC_A,
            mac2: MAC_B,
        }
    }

    fn response() -> ResponseRepr<'static> {
        ResponseRepr {
            sender_spi: 0xdead_beef,
            receiver_spi: 0x0102_0304,
            noise: &NOISE32,
            mac1: MAC_A,
            mac2: MAC_B,
        }
    }

    fn cookie_reply() -> CookieReplyRepr {
        let mut nonce = [0u8; 24];
        for (i, b) in nonce.iter_mut().enumerate() {
            *b = 0x40 + i as u8;
        }
        let mut encrypted_cookie = [0u8; 32];
        for (i, b) in encrypted_cookie.iter_mut().enumerate() {
            *b = 0x60 + i as u8;
        }
        CookieReplyRepr {
            receiver_spi: 0x0000_0100,
            nonce,
            encrypted_cookie,
        }
    }

    fn emit_vec(repr: &ControlRepr<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; repr.buffer_len()];
        let n = repr.emit(&mut buf).unwrap();
        assert_eq!(n, buf.len());
        buf
    }

    #[test]
    fn constants_are_what_the_docs_say() {
        assert_eq!(INITIATION_MIN_LEN, 76);
        assert_eq!(RESPONSE_MIN_LEN, 80);
        assert_eq!(COOKIE_REPLY_LEN, 68);
        assert_eq!(MAX_CONTROL_LEN, 4144);
    }

    #[test]
    fn emits_known_bytes() {
        assert_eq!(
            emit_vec(&ControlRepr::Initiation(initiation())),
            INITIATION_BYTES
        );
        assert_eq!(emit_vec(&ControlRepr::Response(response())), RESPONSE_BYTES);
        assert_eq!(
            emit_vec(&ControlRepr::CookieReply(cookie_reply())),
            COOKIE_REPLY_BYTES
        );
    }

    #[test]
    fn parses_known_bytes() {
        assert_eq!(
            InitiationRepr::parse(&INITIATION_BYTES).unwrap(),
            initiation()
        );
        assert_eq!(ResponseRepr::parse(&RESPONSE_BYTES).unwrap(), response());
        assert_eq!(
            CookieReplyRepr::parse(&COOKIE_REPLY_BYTES).unwrap(),
            cookie_reply()
        );
        assert_eq!(
            ControlRepr::parse(&INITIATION_BYTES).unwrap(),
            ControlRepr::Initiation(initiation())
        );
        assert_eq!(
            ControlRepr::parse(&RESPONSE_BYTES).unwrap(),
            ControlRepr::Response(response())
        );
        assert_eq!(
            ControlRepr::parse(&COOKIE_REPLY_BYTES).unwrap(),
            ControlRepr::CookieReply(cookie_reply())
        );
    }

    #[test]
    fn round_trips_every_noise_length_bound() {
        for len in [MIN_NOISE_LEN, 33, 100, 2162, MAX_NOISE_LEN] {
            let noise: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let reprs = [
                ControlRepr::Initiation(InitiationRepr {
                    sender_spi: MIN_SPI,
                    noise: &noise,
                    mac1: MAC_A,
                    mac2: [0; 16],
                }),
                ControlRepr::Response(ResponseRepr {
                    sender_spi: u32::MAX,
                    receiver_spi: MIN_SPI,
                    noise: &noise,
                    mac1: [0; 16],
                    mac2: MAC_B,
                }),
            ];
            for repr in reprs {
                let bytes = emit_vec(&repr);
                assert!(bytes.len() <= MAX_CONTROL_LEN);
                assert_eq!(ControlRepr::parse(&bytes).unwrap(), repr);
            }
        }
        let repr = ControlRepr::CookieReply(cookie_reply());
        assert_eq!(ControlRepr::parse(&emit_vec(&repr)).unwrap(), repr);
    }

    #[test]
    fn emit_leaves_the_rest_of_a_larger_buffer_alone() {
        let mut buf = [0xEE; 100];
        let n = initiation().emit(&mut buf).unwrap();
        assert_eq!(n, 76);
        assert_eq!(buf[..n], INITIATION_BYTES);
        assert!(buf[n..].iter().all(|&b| b == 0xEE));
    }

    #[test]
    fn emit_into_a_short_buffer_is_an_error() {
        let reprs = [
            ControlRepr::Initiation(initiation()),
            ControlRepr::Response(response()),
            ControlRepr::CookieReply(cookie_reply()),
        ];
        for repr in reprs {
            for len in 0..repr.buffer_len() {
                let mut buf = vec![0u8; len];
                assert_eq!(repr.emit(&mut buf), Err(WireError::BufferTooSmall));
            }
        }
    }

    #[test]
    fn every_truncation_of_a_minimal_message_is_refused() {
        for full in [
            &INITIATION_BYTES[..],
            &RESPONSE_BYTES[..],
            &COOKIE_REPLY_BYTES[..],
        ] {
            for len in 0..full.len() {
                let short = &full[..len];
                let expected = if len == 0 {
                    WireError::Empty
                } else {
                    WireError::Truncated
                };
                assert_eq!(ControlRepr::parse(short), Err(expected), "len {len}");
                assert_eq!(
                    ControlPacket::new_checked(short).err(),
                    Some(expected),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn truncating_a_longer_message_never_panics_or_invents_bytes() {
        let noise = [0x5a; 48];
        let repr = InitiationRepr {
            sender_spi: 0x1000,
            noise: &noise,
            mac1: MAC_A,
            mac2: MAC_B,
        };
        let bytes = emit_vec(&ControlRepr::Initiation(repr));
        for len in 0..bytes.len() {
            match InitiationRepr::parse(&bytes[..len]) {
                // Shorter Noise with shifted MACs is well-formed; mac1 catches it.
                Ok(parsed) => assert_eq!(parsed.buffer_len(), len),
                Err(e) => assert!(len < INITIATION_MIN_LEN, "{e:?} at {len}"),
            }
        }
    }

    #[test]
    fn reserved_spis_are_refused_on_parse_and_emit() {
        for spi in [0u32, 1, 0xFF] {
            let mut bytes = INITIATION_BYTES;
            bytes[8..12].copy_from_slice(&spi.to_be_bytes());
            assert_eq!(InitiationRepr::parse(&bytes), Err(WireError::ReservedSpi));

            let mut bytes = RESPONSE_BYTES;
            bytes[12..16].copy_from_slice(&spi.to_be_bytes());
            assert_eq!(ResponseRepr::parse(&bytes), Err(WireError::ReservedSpi));
            let mut bytes = RESPONSE_BYTES;
            bytes[8..12].copy_from_slice(&spi.to_be_bytes());
            assert_eq!(ResponseRepr::parse(&bytes), Err(WireError::ReservedSpi));

            let mut bytes = COOKIE_REPLY_BYTES;
            bytes[8..12].copy_from_slice(&spi.to_be_bytes());
            assert_eq!(CookieReplyRepr::parse(&bytes), Err(WireError::ReservedSpi));

            let mut buf = [0u8; 256];
            let repr = InitiationRepr {
                sender_spi: spi,
                ..initiation()
            };
            assert_eq!(repr.emit(&mut buf), Err(WireError::ReservedSpi));
            let repr = ResponseRepr {
                receiver_spi: spi,
                ..response()
            };
            assert_eq!(repr.emit(&mut buf), Err(WireError::ReservedSpi));
            let repr = CookieReplyRepr {
                receiver_spi: spi,
                ..cookie_reply()
            };
            assert_eq!(repr.emit(&mut buf), Err(WireError::ReservedSpi));
        }
        let mut bytes = INITIATION_BYTES;
        bytes[8..12].copy_from_slice(&0x100u32.to_be_bytes());
        assert_eq!(InitiationRepr::parse(&bytes).unwrap().sender_spi, 0x100);
    }

    #[test]
    fn non_zero_reserved_bytes_are_refused() {
        for full in [
            &INITIATION_BYTES[..],
            &RESPONSE_BYTES[..],
            &COOKIE_REPLY_BYTES[..],
        ] {
            for pos in 5..8 {
                for value in [0x01, 0x80, 0xFF] {
                    let mut bytes = full.to_vec();
                    bytes[pos] = value;
                    assert_eq!(ControlRepr::parse(&bytes), Err(WireError::NonZeroReserved));
                }
            }
        }
    }

    #[test]
    fn unknown_message_types_are_refused() {
        for ty in [0x00, 0x08, 0x7F, 0xFF] {
            let mut bytes = INITIATION_BYTES;
            bytes[4] = ty;
            assert_eq!(
                ControlRepr::parse(&bytes),
                Err(WireError::UnknownMessageType(ty))
            );
            assert_eq!(
                MessageType::try_from(ty),
                Err(WireError::UnknownMessageType(ty))
            );
        }
        for ty in [
            MessageType::HandshakeInitiation,
            MessageType::HandshakeResponse,
            MessageType::CookieReply,
        ] {
            assert_eq!(MessageType::try_from(u8::from(ty)), Ok(ty));
        }
    }

    #[test]
    fn a_repr_refuses_another_message_type() {
        assert_eq!(
            InitiationRepr::parse(&RESPONSE_BYTES),
            Err(WireError::UnexpectedMessageType(
                MessageType::HandshakeResponse
            ))
        );
        assert_eq!(
            ResponseRepr::parse(&INITIATION_BYTES),
            Err(WireError::UnexpectedMessageType(
                MessageType::HandshakeInitiation
            ))
        );
        assert_eq!(
            CookieReplyRepr::parse(&INITIATION_BYTES),
            Err(WireError::UnexpectedMessageType(
                MessageType::HandshakeInitiation
            ))
        );
    }

    #[test]
    fn a_missing_marker_is_not_control() {
        let mut bytes = INITIATION_BYTES;
        bytes[3] = 0x01;
        assert_eq!(
            ControlPacket::new_checked(&bytes[..]).err(),
            Some(WireError::NotControl)
        );
    }

    #[test]
    fn noise_length_bounds_are_enforced() {
        // 31-byte Noise: a valid-looking header, one byte short.
        let mut bytes = INITIATION_BYTES.to_vec();
        bytes.remove(12);
        assert_eq!(InitiationRepr::parse(&bytes), Err(WireError::Truncated));

        // Noise one byte over the limit, packet still under MAX_CONTROL_LEN.
        let noise = vec![0u8; MAX_NOISE_LEN + 1];
        let mut bytes = header(MessageType::HandshakeInitiation).to_vec();
        bytes.extend_from_slice(&0x1000u32.to_be_bytes());
        bytes.extend_from_slice(&noise);
        bytes.extend_from_slice(&[0u8; 32]);
        assert!(bytes.len() <= MAX_CONTROL_LEN);
        assert_eq!(InitiationRepr::parse(&bytes), Err(WireError::NoiseTooLong));

        let mut buf = vec![0u8; MAX_CONTROL_LEN + 64];
        let short = [0u8; MIN_NOISE_LEN - 1];
        for noise in [&short[..], &noise[..]] {
            let expected = if noise.len() < MIN_NOISE_LEN {
                WireError::NoiseTooShort
            } else {
                WireError::NoiseTooLong
            };
            let repr = InitiationRepr {
                noise,
                ..initiation()
            };
            assert_eq!(repr.emit(&mut buf), Err(expected));
            let repr = ResponseRepr {
                noise,
                ..response()
            };
            assert_eq!(repr.emit(&mut buf), Err(expected));
        }
    }

    #[test]
    fn oversized_packets_are_refused_before_parsing() {
        let mut bytes = vec![0u8; MAX_CONTROL_LEN + 1];
        bytes[4] = 0x02;
        assert_eq!(ControlRepr::parse(&bytes), Err(WireError::TooLong));
        // Even with garbage in the header: the length check comes first.
        let bytes = vec![0xFFu8; MAX_CONTROL_LEN + 1];
        assert_eq!(
            ControlPacket::new_checked(&bytes[..]).err(),
            Some(WireError::TooLong)
        );
    }

    #[test]
    fn cookie_reply_with_trailing_bytes_is_refused() {
        let mut bytes = COOKIE_REPLY_BYTES.to_vec();
        bytes.push(0x00);
        assert_eq!(
            CookieReplyRepr::parse(&bytes),
            Err(WireError::TrailingBytes)
        );
        assert_eq!(ControlRepr::parse(&bytes), Err(WireError::TrailingBytes));
    }

    #[test]
    fn mac_helpers_name_the_covered_bytes() {
        let packet = ControlPacket::new_checked(&INITIATION_BYTES[..]).unwrap();
        assert_eq!(packet.message_type(), MessageType::HandshakeInitiation);
        assert_eq!(packet.mac1_range(), Some(44..60));
        assert_eq!(packet.mac2_range(), Some(60..76));
        assert_eq!(packet.bytes_before_mac1(), Some(&INITIATION_BYTES[..44]));
        assert_eq!(packet.bytes_before_mac2(), Some(&INITIATION_BYTES[..60]));
        assert_eq!(packet.mac1(), Some(MAC_A));
        assert_eq!(packet.mac2(), Some(MAC_B));
        assert_eq!(packet.body(), &INITIATION_BYTES[8..]);

        let packet = ControlPacket::new_checked(&RESPONSE_BYTES[..]).unwrap();
        assert_eq!(packet.mac1_range(), Some(48..64));
        assert_eq!(packet.bytes_before_mac1(), Some(&RESPONSE_BYTES[..48]));
        assert_eq!(packet.bytes_before_mac2(), Some(&RESPONSE_BYTES[..64]));

        let packet = ControlPacket::new_checked(&COOKIE_REPLY_BYTES[..]).unwrap();
        assert_eq!(packet.mac1_range(), None);
        assert_eq!(packet.bytes_before_mac1(), None);
        assert_eq!(packet.mac2(), None);
    }

    #[test]
    fn macs_can_be_filled_in_after_emit() {
        let repr = InitiationRepr {
            mac1: [0; 16],
            mac2: [0; 16],
            ..initiation()
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).unwrap();
        let mut packet = ControlPacket::new_checked(&mut buf[..]).unwrap();
        packet.set_mac1(&MAC_A).unwrap();
        packet.set_mac2(&MAC_B).unwrap();
        assert_eq!(buf, INITIATION_BYTES);

        let mut buf = COOKIE_REPLY_BYTES;
        let mut packet = ControlPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!(
            packet.set_mac1(&MAC_A),
            Err(WireError::UnexpectedMessageType(MessageType::CookieReply))
        );
        assert_eq!(buf, COOKIE_REPLY_BYTES);
    }

    #[test]
    fn classify_table() {
        use DatagramKind::*;
        let cases: &[(&[u8], Result<DatagramKind, WireError>)] = &[
            (&[], Err(WireError::Empty)),
            (&[0xFF], Ok(Keepalive)),
            (&[0x00], Err(WireError::Truncated)),
            (&[0xFE], Err(WireError::Truncated)),
            (&[0xFF, 0x00], Err(WireError::Truncated)),
            (&[0xFF, 0xFF], Err(WireError::Truncated)),
            (&[0x00, 0x00, 0x00], Err(WireError::Truncated)),
            (&[0x00, 0x00, 0x00, 0x00], Ok(Control)),
            (&[0x00, 0x00, 0x00, 0x00, 0x01], Ok(Control)),
            (&INITIATION_BYTES, Ok(Control)),
            (&[0x00, 0x00, 0x00, 0x01], Err(WireError::ReservedSpi)),
            (&[0x00, 0x00, 0x00, 0xFF, 0x00], Err(WireError::ReservedSpi)),
            (&[0x00, 0x00, 0x01, 0x00], Ok(Esp { spi: 0x100 })),
            (
                &[0xFF, 0x00, 0x00, 0x00, 0x00],
                Ok(Esp { spi: 0xFF00_0000 }),
            ),
            (
                &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1],
                Ok(Esp { spi: 0xdead_beef }),
            ),
        ];
        for (datagram, expected) in cases {
            assert_eq!(classify(datagram), *expected, "{datagram:02x?}");
        }
        assert_eq!(classify(&NAT_KEEPALIVE), Ok(Keepalive));
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            WireError::Empty,
            WireError::Truncated,
            WireError::TooLong,
            WireError::TrailingBytes,
            WireError::NotControl,
            WireError::ReservedSpi,
            WireError::NonZeroReserved,
            WireError::UnknownMessageType(0),
            WireError::UnexpectedMessageType(MessageType::CookieReply),
            WireError::NoiseTooShort,
            WireError::NoiseTooLong,
            WireError::BufferTooSmall,
        ];
        let mut labels: Vec<_> = all.iter().map(WireError::as_str).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn authority_types_share_the_layouts_under_their_own_type_byte() {
        let mut buf = vec![0u8; 256];
        let n = initiation()
            .emit_as(&mut buf, MessageType::AuthorityInitiation)
            .unwrap();
        let mut expected = INITIATION_BYTES;
        expected[4] = 0x04;
        assert_eq!(buf[..n], expected);
        assert_eq!(
            InitiationRepr::parse_as(&buf[..n], MessageType::AuthorityInitiation).unwrap(),
            initiation()
        );
        // The tunnel's parsers refuse it, and the other way round.
        assert_eq!(
            InitiationRepr::parse(&buf[..n]),
            Err(WireError::UnexpectedMessageType(
                MessageType::AuthorityInitiation
            ))
        );
        assert_eq!(
            ControlRepr::parse(&buf[..n]),
            Err(WireError::UnexpectedMessageType(
                MessageType::AuthorityInitiation
            ))
        );
        assert!(
            InitiationRepr::parse_as(&INITIATION_BYTES, MessageType::AuthorityInitiation).is_err()
        );

        let n = response()
            .emit_as(&mut buf, MessageType::AuthorityResponse)
            .unwrap();
        assert_eq!(buf[4], 0x05);
        assert_eq!(
            ResponseRepr::parse_as(&buf[..n], MessageType::AuthorityResponse).unwrap(),
            response()
        );
        let n = cookie_reply()
            .emit_as(&mut buf, MessageType::AuthorityCookieReply)
            .unwrap();
        assert_eq!(buf[4], 0x06);
        assert_eq!(
            CookieReplyRepr::parse_as(&buf[..n], MessageType::AuthorityCookieReply).unwrap(),
            cookie_reply()
        );
        let mut long = buf[..n].to_vec();
        long.push(0);
        assert_eq!(
            CookieReplyRepr::parse_as(&long, MessageType::AuthorityCookieReply),
            Err(WireError::TrailingBytes)
        );
        // A data message needs header, session, counter and tag.
        let mut data = [0u8; AUTHORITY_DATA_MIN_LEN];
        data[4] = 0x07;
        assert!(ControlPacket::new_checked(&data[..]).is_ok());
        assert_eq!(
            ControlPacket::new_checked(&data[..AUTHORITY_DATA_MIN_LEN - 1]).err(),
            Some(WireError::Truncated)
        );
        for (ty, authority) in [
            (MessageType::HandshakeInitiation, false),
            (MessageType::HandshakeResponse, false),
            (MessageType::CookieReply, false),
            (MessageType::AuthorityInitiation, true),
            (MessageType::AuthorityResponse, true),
            (MessageType::AuthorityCookieReply, true),
            (MessageType::AuthorityData, true),
        ] {
            assert_eq!(ty.is_authority(), authority);
            assert_eq!(MessageType::try_from(u8::from(ty)), Ok(ty));
        }
    }
}
