//! ESP (RFC 4303) with ChaCha20-Poly1305 (RFC 7634) inside RFC 3948 UDP framing.
//!
//! This is the data path. One ESP packet, as it sits in a UDP datagram:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI) >= 256          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (low 32 bits)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 IV = 64-bit sequence number                   |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |       inner packet (IPv6), padding 1, 2, 3, ...               |  ^
//! ~                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+  | encrypted,
//! |                               |  Pad Length   | Next Header   |  v 4-aligned
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+ ---
//! |                  ICV (Poly1305 tag, 16 bytes)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The nonce is the SA's 4-byte salt followed by the IV; the associated data
//! is SPI ‖ sequence high ‖ sequence low (extended sequence numbers, RFC 7634
//! §2.1). The IV is the sequence number itself, which never repeats within
//! an SA. An SPI below 256 is never an ESP packet: 0 is the RFC 3948 non-ESP
//! marker in front of control messages, and 1..=255 are reserved.
//!
//! [`OutboundSa`] seals, either copying the inner packet into an output
//! buffer or in place inside a buffer with headroom and tailroom.
//! [`InboundSa`] checks the replay window, authenticates and decrypts in
//! place, and lends the caller the inner packet inside the same buffer.
//! Neither allocates, and every reason to drop a packet is its own
//! [`EspError`] variant.
#![deny(clippy::indexing_slicing)]

use core::ops::Range;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::aead::{AeadProvider, EspAead, EspCipher, NONCE_LEN, TAG_LEN};
use crate::replay::{ReplayError, ReplayWindow};

/// Key material for one direction of a security association: the 256-bit
/// ChaCha20-Poly1305 key and the 32-bit salt that prefixes the IV in the
/// nonce (RFC 7634 §2).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct EspKeyMaterial {
    /// AEAD key.
    pub key: [u8; 32],
    /// Nonce salt.
    pub salt: [u8; 4],
}

impl std::fmt::Debug for EspKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EspKeyMaterial { .. }")
    }
}

/// SPI and low sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// Explicit IV (RFC 7634 §2).
pub const ESP_IV_LEN: usize = 8;
/// Integrity check value: the Poly1305 tag.
pub const ESP_ICV_LEN: usize = TAG_LEN;
/// Pad Length and Next Header, the fixed part of the trailer.
pub const ESP_TRAILER_LEN: usize = 2;
/// Next Header for a tunnelled IPv6 packet.
pub const NEXT_HEADER_IPV6: u8 = 41;
/// Next Header of a dummy packet (RFC 4303 §2.6), used as keepalive.
pub const NEXT_HEADER_NONE: u8 = 59;
/// Smallest SPI that names an ESP security association: `0` is the RFC 3948
/// non-ESP marker and `1..=255` are reserved by IANA (RFC 4303 §2.1).
pub const MIN_SPI: u32 = 0x100;
/// Shortest well-formed ESP packet: header, IV, an empty payload padded to
/// the 4-byte alignment of the trailer, ICV.
pub const ESP_MIN_PACKET_LEN: usize = encapsulated_len(0);
/// Most bytes ESP adds to an inner packet (with minimal padding).
pub const ESP_OVERHEAD_MAX: usize =
    ESP_HEADER_LEN + ESP_IV_LEN + (ESP_ALIGN - 1) + ESP_TRAILER_LEN + ESP_ICV_LEN;

/// The ciphertext ends on a 4-byte boundary (RFC 4303 §2.4).
const ESP_ALIGN: usize = 4;
/// Header and IV: where the ciphertext starts.
const CIPHERTEXT_OFFSET: usize = ESP_HEADER_LEN + ESP_IV_LEN;

/// Length of the ESP packet that carries an `inner_len`-byte inner packet.
/// Saturates at `usize::MAX` for absurd lengths.
pub const fn encapsulated_len(inner_len: usize) -> usize {
    CIPHERTEXT_OFFSET
        .saturating_add(padded_len(inner_len))
        .saturating_add(ESP_ICV_LEN)
}

/// The largest inner packet whose ESP packet fits in `esp_len_budget` bytes,
/// or 0 when the budget is below [`ESP_MIN_PACKET_LEN`].
pub const fn max_inner_len(esp_len_budget: usize) -> usize {
    let ciphertext = esp_len_budget.saturating_sub(CIPHERTEXT_OFFSET + ESP_ICV_LEN);
    (ciphertext / ESP_ALIGN * ESP_ALIGN).saturating_sub(ESP_TRAILER_LEN)
}

/// Reads the SPI of a datagram that should be an ESP packet, to find its
/// inbound SA.
pub fn peek_spi(datagram: &[u8]) -> Result<u32, EspError> {
    if datagram.len() < ESP_MIN_PACKET_LEN {
        return Err(EspError::Truncated);
    }
    let spi = u32::from_be_bytes(array_at(datagram, 0));
    if spi < MIN_SPI {
        return Err(EspError::ReservedSpi);
    }
    Ok(spi)
}

/// Why an ESP packet was not built or not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EspError {
    /// Shorter than [`ESP_MIN_PACKET_LEN`].
    #[error("ESP packet truncated")]
    Truncated,
    /// SPI below [`MIN_SPI`]: a non-ESP marker or a reserved value.
    #[error("reserved SPI")]
    ReservedSpi,
    /// The ciphertext does not end on a 4-byte boundary.
    #[error("ESP ciphertext not 4-byte aligned")]
    Misaligned,
    /// The packet belongs to another SA.
    #[error("SPI does not match the security association")]
    SpiMismatch,
    /// The replay window refused the sequence number.
    #[error("replayed packet: {0}")]
    Replay(#[from] ReplayError),
    /// The ICV did not verify.
    #[error("ESP authentication failed")]
    AuthenticationFailed,
    /// Authentic, but the pad length or the padding bytes are wrong.
    #[error("bad ESP padding")]
    BadPadding,
    /// The output buffer cannot hold the ESP packet.
    #[error("buffer too small for the ESP packet")]
    BufferTooSmall,
    /// In-place encapsulation: fewer than `ESP_HEADER_LEN + ESP_IV_LEN`
    /// bytes before the inner packet.
    #[error("not enough headroom before the inner packet")]
    InsufficientHeadroom,
    /// In-place encapsulation: the inner range is reversed or outside the
    /// buffer.
    #[error("inner packet range outside the buffer")]
    InvalidRange,
    /// The SA has used its last sequence number; it must be replaced.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
}

impl EspError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::ReservedSpi => "reserved_spi",
            Self::Misaligned => "misaligned",
            Self::SpiMismatch => "spi_mismatch",
            Self::Replay(ReplayError::Duplicate) => "replay_duplicate",
            Self::Replay(ReplayError::TooOld) => "replay_too_old",
            Self::Replay(ReplayError::Zero) => "replay_zero",
            Self::AuthenticationFailed => "authentication_failed",
            Self::BadPadding => "bad_padding",
            Self::BufferTooSmall => "buffer_too_small",
            Self::InsufficientHeadroom => "insufficient_headroom",
            Self::InvalidRange => "invalid_range",
            Self::SequenceExhausted => "sequence_exhausted",
        }
    }
}

/// A read-only view of an ESP packet's fields (smoltcp style). Construct
/// with [`EspPacket::new_checked`]; the accessors then never fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps `buffer` after checking that it is long enough, its ciphertext
    /// is 4-byte aligned and its SPI is not reserved.
    pub fn new_checked(buffer: T) -> Result<Self, EspError> {
        let bytes = buffer.as_ref();
        peek_spi(bytes)?;
        if (bytes.len() - CIPHERTEXT_OFFSET - ESP_ICV_LEN) % ESP_ALIGN != 0 {
            return Err(EspError::Misaligned);
        }
        Ok(Self { buffer })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Security Parameters Index.
    pub fn spi(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), 0))
    }

    /// Low 32 bits of the sequence number.
    pub fn seq_low(&self) -> u32 {
        u32::from_be_bytes(array_at(self.buffer.as_ref(), 4))
    }

    /// Explicit IV.
    pub fn iv(&self) -> [u8; ESP_IV_LEN] {
        array_at(self.buffer.as_ref(), ESP_HEADER_LEN)
    }

    /// Encrypted payload, padding and trailer.
    pub fn ciphertext(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        bytes
            .get(CIPHERTEXT_OFFSET..bytes.len().saturating_sub(ESP_ICV_LEN))
            .unwrap_or_default()
    }

    /// Integrity check value.
    pub fn icv(&self) -> [u8; ESP_ICV_LEN] {
        let bytes = self.buffer.as_ref();
        array_at(bytes, bytes.len().saturating_sub(ESP_ICV_LEN))
    }
}

/// The sending half of a security association.
#[derive(Debug)]
pub struct OutboundSa {
    crypto: SaCrypto,
    next_seq: u64,
}

impl OutboundSa {
    /// A new outbound SA towards the peer that chose `spi`, using 64-bit
    /// extended sequence numbers. The key is expanded here, once.
    ///
    /// `spi` must be at least [`MIN_SPI`]; with a reserved SPI every
    /// encapsulation fails with [`EspError::ReservedSpi`], so this SA can
    /// never emit something that reads as a control message.
    pub fn new(spi: u32, keys: &EspKeyMaterial, provider: AeadProvider) -> Self {
        Self {
            crypto: SaCrypto::new(spi, keys, provider, SeqSpace::Extended),
            next_seq: 1,
        }
    }

    /// An outbound SA with plain 32-bit sequence numbers (no ESN): only the
    /// low half is authenticated and the SA is exhausted after 2^32 - 2
    /// packets. Exists to reproduce RFC 7634 Appendix A; permanet always
    /// uses [`OutboundSa::new`].
    pub fn dangerous_new_without_esn(
        spi: u32,
        keys: &EspKeyMaterial,
        provider: AeadProvider,
    ) -> Self {
        Self {
            crypto: SaCrypto::new(spi, keys, provider, SeqSpace::Short),
            next_seq: 1,
        }
    }

    /// The SPI stamped on every packet.
    pub fn spi(&self) -> u32 {
        self.crypto.spi
    }

    /// The sequence number the next packet will carry. Starts at 1, so it
    /// is also one more than the number of packets sealed so far.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Seals `inner` into `out` and returns the ESP packet, the first
    /// [`encapsulated_len`]`(inner.len())` bytes of `out`. On error no
    /// sequence number is used.
    pub fn encapsulate<'o>(
        &mut self,
        inner: &[u8],
        next_header: u8,
        out: &'o mut [u8],
    ) -> Result<&'o [u8], EspError> {
        let packet = stage(inner, out)?;
        let seq = self.take_seq()?;
        self.crypto
            .seal(seq, &seq.to_be_bytes(), packet, inner.len(), next_header)?;
        Ok(packet)
    }

    /// Seals the inner packet at `buf[inner]` where it lies.
    ///
    /// The caller leaves `ESP_HEADER_LEN + ESP_IV_LEN` bytes of headroom
    /// before `inner` and room for padding, trailer and ICV after it
    /// (`ESP_OVERHEAD_MAX - 16` bytes always suffice). Returns the range of
    /// `buf` holding the finished ESP packet, which starts 16 bytes before
    /// `inner`. On error `buf` is unchanged and no sequence number is used.
    pub fn encapsulate_in_place(
        &mut self,
        buf: &mut [u8],
        inner: Range<usize>,
        next_header: u8,
    ) -> Result<Range<usize>, EspError> {
        if inner.start > inner.end || inner.end > buf.len() {
            return Err(EspError::InvalidRange);
        }
        let inner_len = inner.end - inner.start;
        let start = inner
            .start
            .checked_sub(CIPHERTEXT_OFFSET)
            .ok_or(EspError::InsufficientHeadroom)?;
        let end = start
            .checked_add(encapsulated_len(inner_len))
            .ok_or(EspError::BufferTooSmall)?;
        let packet = buf.get_mut(start..end).ok_or(EspError::BufferTooSmall)?;
        let seq = self.take_seq()?;
        self.crypto
            .seal(seq, &seq.to_be_bytes(), packet, inner_len, next_header)?;
        Ok(start..end)
    }

    /// Test hook: seals `inner` with an explicit sequence number and IV,
    /// without touching the SA's counter, to reproduce published vectors
    /// whose IV is not the sequence number. Repeating a (seq, IV) pair
    /// repeats the nonce and destroys confidentiality: never call this
    /// outside tests.
    #[doc(hidden)]
    pub fn dangerous_seal_with_iv<'o>(
        &self,
        seq: u64,
        iv: &[u8; ESP_IV_LEN],
        inner: &[u8],
        next_header: u8,
        out: &'o mut [u8],
    ) -> Result<&'o [u8], EspError> {
        let packet = stage(inner, out)?;
        self.crypto
            .seal(seq, iv, packet, inner.len(), next_header)?;
        Ok(packet)
    }

    /// Reserves the next sequence number.
    #[inline]
    fn take_seq(&mut self) -> Result<u64, EspError> {
        if self.crypto.spi < MIN_SPI {
            return Err(EspError::ReservedSpi);
        }
        let seq = self.next_seq;
        if seq >= self.crypto.space.limit() {
            return Err(EspError::SequenceExhausted);
        }
        self.next_seq = seq + 1;
        Ok(seq)
    }
}

/// A decrypted packet, borrowed from the buffer it arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapsulated<'p> {
    /// Full (inferred) sequence number.
    pub seq: u64,
    /// Next Header: [`NEXT_HEADER_IPV6`] for data, [`NEXT_HEADER_NONE`] for
    /// a dummy packet.
    pub next_header: u8,
    /// The inner packet, without padding and trailer.
    pub payload: &'p [u8],
}

impl Decapsulated<'_> {
    /// Whether this is a dummy packet (RFC 4303 §2.6): authentic, counted as
    /// a keepalive, but never delivered.
    pub fn is_dummy(&self) -> bool {
        self.next_header == NEXT_HEADER_NONE
    }
}

/// The receiving half of a security association.
#[derive(Debug)]
pub struct InboundSa {
    crypto: SaCrypto,
    replay: ReplayWindow,
}

impl InboundSa {
    /// A new inbound SA for the `spi` this host chose, using 64-bit
    /// extended sequence numbers. The key is expanded here, once.
    pub fn new(spi: u32, keys: &EspKeyMaterial, provider: AeadProvider) -> Self {
        Self {
            crypto: SaCrypto::new(spi, keys, provider, SeqSpace::Extended),
            replay: ReplayWindow::new(),
        }
    }

    /// An inbound SA with plain 32-bit sequence numbers (no ESN), the
    /// counterpart of [`OutboundSa::dangerous_new_without_esn`].
    pub fn dangerous_new_without_esn(
        spi: u32,
        keys: &EspKeyMaterial,
        provider: AeadProvider,
    ) -> Self {
        Self {
            crypto: SaCrypto::new(spi, keys, provider, SeqSpace::Short),
            replay: ReplayWindow::new(),
        }
    }

    /// The SPI this SA accepts.
    pub fn spi(&self) -> u32 {
        self.crypto.spi
    }

    /// The replay window; its top is the highest authenticated sequence
    /// number.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Authenticates and decrypts `packet` in place and returns the inner
    /// packet inside it.
    ///
    /// Order of checks: format and SPI, then the replay window (before any
    /// cryptography, so replays are cheap to drop), then the ICV; only an
    /// authentic packet moves the replay window, and only then are padding
    /// and trailer looked at. A dummy packet comes back like any other;
    /// see [`Decapsulated::is_dummy`]. On error the contents of `packet`
    /// are unspecified.
    ///
    /// With extended sequence numbers a packet from below the window is
    /// read as belonging 2^32 ahead (RFC 4303 Appendix A), so it fails as
    /// [`EspError::AuthenticationFailed`] rather than as too old.
    pub fn decapsulate<'p>(&mut self, packet: &'p mut [u8]) -> Result<Decapsulated<'p>, EspError> {
        let (spi, seq_low, iv) = {
            let view = EspPacket::new_checked(&*packet)?;
            (view.spi(), view.seq_low(), view.iv())
        };
        if spi != self.crypto.spi {
            return Err(EspError::SpiMismatch);
        }
        let seq = match self.crypto.space {
            SeqSpace::Extended => self.replay.infer_seq(seq_low),
            SeqSpace::Short => u64::from(seq_low),
        };
        self.replay.check(seq)?;

        let (_, rest) = packet
            .split_first_chunk_mut::<CIPHERTEXT_OFFSET>()
            .ok_or(EspError::Truncated)?;
        let (plaintext, icv) = rest
            .split_last_chunk_mut::<ESP_ICV_LEN>()
            .ok_or(EspError::Truncated)?;
        self.crypto.open(seq, &iv, plaintext, icv)?;
        self.replay.update(seq)?;

        let plaintext: &'p [u8] = plaintext;
        let (rest, &[pad_len, next_header]) = plaintext
            .split_last_chunk::<ESP_TRAILER_LEN>()
            .ok_or(EspError::Truncated)?;
        let payload_len = rest
            .len()
            .checked_sub(usize::from(pad_len))
            .ok_or(EspError::BadPadding)?;
        let (payload, padding) = rest
            .split_at_checked(payload_len)
            .ok_or(EspError::BadPadding)?;
        // Default padding is 1, 2, 3, ... (RFC 4303 §2.4).
        if !padding
            .iter()
            .zip(1..=u8::MAX)
            .all(|(&byte, value)| byte == value)
        {
            return Err(EspError::BadPadding);
        }
        Ok(Decapsulated {
            seq,
            next_header,
            payload,
        })
    }
}

/// Which sequence number space an SA uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SeqSpace {
    /// 64-bit extended sequence numbers; the high half is in the AAD.
    Extended,
    /// Plain 32-bit sequence numbers (RFC 4303 without ESN). Only for
    /// interoperating with RFC 7634's example.
    Short,
}

impl SeqSpace {
    /// The first sequence number the sender may not use: it stops one short
    /// of the counter's maximum so the counter itself never wraps.
    fn limit(self) -> u64 {
        match self {
            Self::Extended => u64::MAX,
            Self::Short => u64::from(u32::MAX),
        }
    }
}

/// Associated data: SPI ‖ seq high ‖ seq low, or SPI ‖ seq for 32-bit SAs.
struct Aad {
    bytes: [u8; 12],
    len: usize,
}

impl Aad {
    #[inline]
    fn new(space: SeqSpace, spi: u32, seq: u64) -> Self {
        let mut bytes = [0; 12];
        let [s0, s1, s2, s3] = spi.to_be_bytes();
        let [h0, h1, h2, h3, l0, l1, l2, l3] = seq.to_be_bytes();
        match space {
            SeqSpace::Extended => {
                bytes = [s0, s1, s2, s3, h0, h1, h2, h3, l0, l1, l2, l3];
                Self { bytes, len: 12 }
            }
            SeqSpace::Short => {
                bytes[..8].copy_from_slice(&[s0, s1, s2, s3, l0, l1, l2, l3]);
                Self { bytes, len: 8 }
            }
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }
}

/// What both halves of an SA hold: SPI, salt, the expanded key and the
/// sequence number space. Seals and opens one packet at a time.
struct SaCrypto {
    spi: u32,
    salt: [u8; 4],
    cipher: EspCipher,
    space: SeqSpace,
}

impl SaCrypto {
    fn new(spi: u32, keys: &EspKeyMaterial, provider: AeadProvider, space: SeqSpace) -> Self {
        Self {
            spi,
            salt: keys.salt,
            cipher: EspCipher::new(provider, &keys.key),
            space,
        }
    }

    /// Nonce: salt ‖ IV (RFC 7634 §2).
    #[inline]
    fn nonce(&self, iv: &[u8; ESP_IV_LEN]) -> [u8; NONCE_LEN] {
        let [s0, s1, s2, s3] = self.salt;
        let [i0, i1, i2, i3, i4, i5, i6, i7] = *iv;
        [s0, s1, s2, s3, i0, i1, i2, i3, i4, i5, i6, i7]
    }

    /// Writes header, IV, padding and trailer around the inner packet
    /// already at `packet[16..16 + inner_len]`, encrypts, and writes the
    /// ICV. `packet.len()` must be `encapsulated_len(inner_len)`; callers
    /// check that before reserving a sequence number, so the error is
    /// unreachable.
    #[inline]
    fn seal(
        &self,
        seq: u64,
        iv: &[u8; ESP_IV_LEN],
        packet: &mut [u8],
        inner_len: usize,
        next_header: u8,
    ) -> Result<(), EspError> {
        let (header, rest) = packet
            .split_first_chunk_mut::<CIPHERTEXT_OFFSET>()
            .ok_or(EspError::BufferTooSmall)?;
        let (plaintext, icv) = rest
            .split_last_chunk_mut::<ESP_ICV_LEN>()
            .ok_or(EspError::BufferTooSmall)?;
        let (padding, trailer) = plaintext
            .get_mut(inner_len..)
            .and_then(|tail| tail.split_last_chunk_mut::<ESP_TRAILER_LEN>())
            .ok_or(EspError::BufferTooSmall)?;

        let [s0, s1, s2, s3] = self.spi.to_be_bytes();
        // Truncation intended: the low half goes in the header.
        let [l0, l1, l2, l3] = (seq as u32).to_be_bytes();
        let [i0, i1, i2, i3, i4, i5, i6, i7] = *iv;
        *header = [
            s0, s1, s2, s3, l0, l1, l2, l3, i0, i1, i2, i3, i4, i5, i6, i7,
        ];
        for (byte, value) in padding.iter_mut().zip(1..=u8::MAX) {
            *byte = value;
        }
        // At most ESP_ALIGN - 1 bytes of padding, so the length fits.
        *trailer = [padding.len() as u8, next_header];

        let aad = Aad::new(self.space, self.spi, seq);
        *icv = self
            .cipher
            .seal_in_place(&self.nonce(iv), aad.as_slice(), plaintext);
        Ok(())
    }

    /// Verifies and decrypts `ciphertext` in place.
    #[inline]
    fn open(
        &self,
        seq: u64,
        iv: &[u8; ESP_IV_LEN],
        ciphertext: &mut [u8],
        icv: &[u8; ESP_ICV_LEN],
    ) -> Result<(), EspError> {
        let aad = Aad::new(self.space, self.spi, seq);
        self.cipher
            .open_in_place(&self.nonce(iv), aad.as_slice(), ciphertext, icv)
            .map_err(|_| EspError::AuthenticationFailed)
    }
}

impl Drop for SaCrypto {
    fn drop(&mut self) {
        // The key is wiped by the cipher where the provider allows it.
        self.salt.zeroize();
    }
}

impl std::fmt::Debug for SaCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaCrypto")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("provider", &self.cipher.provider())
            .field("space", &self.space)
            .finish_non_exhaustive()
    }
}

/// Copies `inner` to its place in `out` and returns the `out` prefix that
/// will hold the ESP packet.
fn stage<'o>(inner: &[u8], out: &'o mut [u8]) -> Result<&'o mut [u8], EspError> {
    let packet = out
        .get_mut(..encapsulated_len(inner.len()))
        .ok_or(EspError::BufferTooSmall)?;
    packet
        .get_mut(CIPHERTEXT_OFFSET..)
        .and_then(|rest| rest.get_mut(..inner.len()))
        .ok_or(EspError::BufferTooSmall)?
        .copy_from_slice(inner);
    Ok(packet)
}

/// Ciphertext length for an `inner_len`-byte inner packet: payload, padding
/// and trailer, rounded up to 4 bytes.
const fn padded_len(inner_len: usize) -> usize {
    let unpadded = inner_len.saturating_add(ESP_TRAILER_LEN);
    match unpadded.checked_next_multiple_of(ESP_ALIGN) {
        Some(len) => len,
        None => usize::MAX,
    }
}

/// Copies `N` bytes at `offset`; zeros if out of range (callers check
/// lengths first, so that never happens).
#[inline]
fn array_at<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    bytes
        .get(offset..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    const PROVIDERS: [AeadProvider; 2] = [AeadProvider::Ring, AeadProvider::RustCrypto];
    const SPI: u32 = 0x1234_5678;

    fn keys(seed: u8) -> EspKeyMaterial {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        EspKeyMaterial {
            key,
            salt: [0xa0, seed, 0xa2, 0xa3],
        }
    }

    fn pair(provider: AeadProvider) -> (OutboundSa, InboundSa) {
        let k = keys(0x42);
        (
            OutboundSa::new(SPI, &k, provider),
            InboundSa::new(SPI, &k, provider),
        )
    }

    fn seal_vec(out: &mut OutboundSa, inner: &[u8], next_header: u8) -> Vec<u8> {
        let mut buf = vec![0u8; encapsulated_len(inner.len())];
        out.encapsulate(inner, next_header, &mut buf)
            .unwrap()
            .to_vec()
    }

    /// RFC 7634 Appendix A, both directions, byte for byte. The example
    /// uses 32-bit sequence numbers (AAD = SPI ‖ seq) and an IV that is not
    /// the sequence number.
    #[test]
    fn rfc7634_appendix_a() {
        let keymat = hex::decode(concat!(
            "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f",
            "a0a1a2a3",
        ))
        .unwrap();
        let keys = EspKeyMaterial {
            key: keymat[..32].try_into().unwrap(),
            salt: keymat[32..].try_into().unwrap(),
        };
        let spi = 0x0102_0304;
        let seq = 5;
        let iv: [u8; 8] = hex::decode("1011121314151617").unwrap().try_into().unwrap();
        // ICMP echo request 198.51.100.5 -> 192.0.2.5 in IPv4; tunnel mode
        // so Next Header is 4 (IPv4).
        let inner = hex::decode(concat!(
            "45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec10",
            "0007362708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20212223",
            "2425262728292a2b2c2d2e2f3031323334353637",
        ))
        .unwrap();
        assert_eq!(inner.len(), 84);
        let esp = hex::decode(concat!(
            "01020304",         // SPI
            "00000005",         // sequence number
            "1011121314151617", // IV
            "24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c6",
            "14ee8099d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3",
            "cbec163fac469b502773f6fb94e664da9165b82829f641e0",
            "76aaa8266b7fb0f7b11b369907e1ad43", // ICV
        ))
        .unwrap();
        assert_eq!(esp.len(), encapsulated_len(inner.len()));

        for provider in PROVIDERS {
            let out = OutboundSa::dangerous_new_without_esn(spi, &keys, provider);
            let mut buf = [0u8; 200];
            let sealed = out
                .dangerous_seal_with_iv(seq, &iv, &inner, 4, &mut buf)
                .unwrap();
            assert_eq!(hex::encode(sealed), hex::encode(&esp), "{provider:?}");

            let view = EspPacket::new_checked(&esp[..]).unwrap();
            assert_eq!(view.spi(), spi);
            assert_eq!(view.seq_low(), 5);
            assert_eq!(view.iv(), iv);
            assert_eq!(view.ciphertext(), &esp[16..104]);
            assert_eq!(view.icv()[..], esp[104..]);
            assert_eq!(peek_spi(&esp), Ok(spi));

            let mut inb = InboundSa::dangerous_new_without_esn(spi, &keys, provider);
            let mut packet = esp.clone();
            let d = inb.decapsulate(&mut packet).unwrap();
            assert_eq!((d.seq, d.next_header, d.payload), (5, 4, &inner[..]));
            // The plaintext in the buffer ends with padding 01 02, pad
            // length 2 and next header 4, as printed in the RFC.
            assert_eq!(packet[16..104][84..], [0x01, 0x02, 0x02, 0x04]);

            // The ESN default authenticates the high half too, so the same
            // bytes do not verify there.
            let mut esn = InboundSa::new(spi, &keys, provider);
            let mut packet = esp.clone();
            assert_eq!(
                esn.decapsulate(&mut packet),
                Err(EspError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn round_trip_every_length() {
        for provider in PROVIDERS {
            let (mut out, mut inb) = pair(provider);
            let mut buf = vec![0u8; encapsulated_len(9000)];
            let inner: Vec<u8> = (0..9000u32).map(|i| (i * 7 + 3) as u8).collect();
            for len in 0..=9000usize {
                let inner = &inner[..len];
                let n = out
                    .encapsulate(inner, NEXT_HEADER_IPV6, &mut buf)
                    .unwrap()
                    .len();
                assert_eq!(n, encapsulated_len(len));
                assert_eq!((n - 32) % 4, 0);
                assert!(n - len <= ESP_OVERHEAD_MAX);
                let d = inb.decapsulate(&mut buf[..n]).unwrap();
                assert_eq!(d.seq, len as u64 + 1);
                assert_eq!(d.next_header, NEXT_HEADER_IPV6);
                assert!(!d.is_dummy());
                assert_eq!(d.payload, inner, "{provider:?} len {len}");
            }
            assert_eq!(out.next_seq(), 9002);
            assert_eq!(inb.replay_window().top(), 9001);
        }
    }

    #[test]
    fn providers_interoperate() {
        let k = keys(7);
        let mut ring_out = OutboundSa::new(SPI, &k, AeadProvider::Ring);
        let mut rc_out = OutboundSa::new(SPI, &k, AeadProvider::RustCrypto);
        let mut rc_in = InboundSa::new(SPI, &k, AeadProvider::RustCrypto);
        for len in [0, 1, 63, 64, 1400, 8900] {
            let inner = vec![0x5a; len];
            let a = seal_vec(&mut ring_out, &inner, NEXT_HEADER_IPV6);
            let mut b = seal_vec(&mut rc_out, &inner, NEXT_HEADER_IPV6);
            assert_eq!(a, b);
            assert_eq!(rc_in.decapsulate(&mut b).unwrap().payload, &inner[..]);
        }
    }

    #[test]
    fn tampering_any_byte_fails_and_leaves_the_window() {
        for provider in PROVIDERS {
            let (mut out, mut inb) = pair(provider);
            out.next_seq = 1000;
            let packet = seal_vec(&mut out, &[0x60; 61], NEXT_HEADER_IPV6);
            for i in 0..packet.len() {
                for flip in [0x01, 0x80] {
                    let mut bad = packet.clone();
                    bad[i] ^= flip;
                    let expected = match i {
                        0..4 => EspError::SpiMismatch,
                        _ => EspError::AuthenticationFailed,
                    };
                    assert_eq!(
                        inb.decapsulate(&mut bad),
                        Err(expected),
                        "{provider:?} byte {i}"
                    );
                }
            }
            assert_eq!(inb.replay_window().top(), 0);
            let mut good = packet.clone();
            assert_eq!(inb.decapsulate(&mut good).unwrap().seq, 1000);
        }
    }

    #[test]
    fn replays_are_refused_before_authentication() {
        for provider in PROVIDERS {
            let (mut out, mut inb) = pair(provider);
            let first = seal_vec(&mut out, b"first", NEXT_HEADER_IPV6);
            inb.decapsulate(&mut first.clone()).unwrap();
            assert_eq!(
                inb.decapsulate(&mut first.clone()),
                Err(EspError::Replay(ReplayError::Duplicate))
            );
            // A replay with a corrupted ICV is still reported as a replay:
            // the window is checked first.
            let mut forged = first.clone();
            *forged.last_mut().unwrap() ^= 1;
            assert_eq!(
                inb.decapsulate(&mut forged),
                Err(EspError::Replay(ReplayError::Duplicate))
            );

            // With ESN a packet from below the window is taken to be 2^32
            // ahead (RFC 4303 Appendix A) and so fails authentication.
            let late = seal_vec(&mut out, b"late", NEXT_HEADER_IPV6);
            out.next_seq = 2 + crate::replay::REPLAY_WINDOW + 1;
            inb.decapsulate(&mut seal_vec(&mut out, b"ahead", NEXT_HEADER_IPV6))
                .unwrap();
            assert_eq!(
                inb.decapsulate(&mut late.clone()),
                Err(EspError::AuthenticationFailed)
            );
            assert_eq!(
                inb.replay_window().top(),
                2 + crate::replay::REPLAY_WINDOW + 1
            );

            // Without ESN it is plainly too old.
            let k = keys(0x42);
            let mut out = OutboundSa::dangerous_new_without_esn(SPI, &k, provider);
            let mut inb = InboundSa::dangerous_new_without_esn(SPI, &k, provider);
            let late = seal_vec(&mut out, b"late", NEXT_HEADER_IPV6);
            out.next_seq = 1 + crate::replay::REPLAY_WINDOW + 1;
            inb.decapsulate(&mut seal_vec(&mut out, b"ahead", NEXT_HEADER_IPV6))
                .unwrap();
            assert_eq!(
                inb.decapsulate(&mut late.clone()),
                Err(EspError::Replay(ReplayError::TooOld))
            );
        }
    }

    #[test]
    fn truncated_and_malformed_inputs() {
        let (mut out, mut inb) = pair(AeadProvider::Ring);
        let packet = seal_vec(&mut out, &[1, 2, 3, 4, 5], NEXT_HEADER_IPV6);
        assert_eq!(ESP_MIN_PACKET_LEN, 36);
        for len in 0..ESP_MIN_PACKET_LEN {
            let mut short = packet[..len.min(packet.len())].to_vec();
            short.resize(len, 0);
            assert_eq!(peek_spi(&short), Err(EspError::Truncated), "len {len}");
            assert_eq!(EspPacket::new_checked(&short[..]), Err(EspError::Truncated));
            assert_eq!(
                inb.decapsulate(&mut short),
                Err(EspError::Truncated),
                "len {len}"
            );
        }
        for len in [37, 38, 39, 41, 1401] {
            let mut odd = packet.clone();
            odd.resize(len, 0);
            assert_eq!(
                inb.decapsulate(&mut odd),
                Err(EspError::Misaligned),
                "len {len}"
            );
        }
        for spi in [0u32, 1, 0xff] {
            let mut reserved = packet.clone();
            reserved[..4].copy_from_slice(&spi.to_be_bytes());
            assert_eq!(peek_spi(&reserved), Err(EspError::ReservedSpi));
            assert_eq!(inb.decapsulate(&mut reserved), Err(EspError::ReservedSpi));
        }
        let mut other = packet.clone();
        other[..4].copy_from_slice(&MIN_SPI.to_be_bytes());
        assert_eq!(inb.decapsulate(&mut other), Err(EspError::SpiMismatch));

        // Random garbage of every shape never panics and never verifies.
        let mut rng = rand::rngs::StdRng::seed_from_u64(4303);
        for _ in 0..20_000 {
            let mut junk = vec![0u8; rng.gen_range(0..200)];
            rng.fill_bytes(&mut junk);
            if rng.gen_bool(0.5) && junk.len() >= 4 {
                junk[..4].copy_from_slice(&SPI.to_be_bytes());
            }
            assert!(inb.decapsulate(&mut junk).is_err());
        }
        assert_eq!(inb.replay_window().top(), 0);
    }

    /// Seals a hand-made plaintext (payload, padding and trailer already in
    /// place) so padding checks run on authentic packets.
    fn seal_raw(out: &OutboundSa, seq: u64, plaintext: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        packet.extend_from_slice(&out.spi().to_be_bytes());
        packet.extend_from_slice(&(seq as u32).to_be_bytes());
        packet.extend_from_slice(&seq.to_be_bytes());
        let mut ct = plaintext.to_vec();
        let aad = Aad::new(SeqSpace::Extended, out.spi(), seq);
        let tag = out.crypto.cipher.seal_in_place(
            &out.crypto.nonce(&seq.to_be_bytes()),
            aad.as_slice(),
            &mut ct,
        );
        packet.extend_from_slice(&ct);
        packet.extend_from_slice(&tag);
        packet
    }

    type PaddingOutcome = Result<&'static [u8], EspError>;

    #[test]
    fn padding_checks() {
        let mut long_padding = vec![0xee; 3];
        long_padding.extend(1..=255u8);
        long_padding.extend([255, NEXT_HEADER_IPV6]);
        // (plaintext, expected payload or error)
        let cases: Vec<(Vec<u8>, PaddingOutcome)> = vec![
            (vec![0xaa, 0xbb, 0, 41], Ok(&[0xaa, 0xbb])),
            (vec![0xaa, 1, 1, 41], Ok(&[0xaa])),
            (vec![1, 2, 2, 41], Ok(&[])),
            (long_padding, Ok(&[0xee; 3])),
            (vec![0xaa, 2, 1, 41], Err(EspError::BadPadding)),
            (vec![1, 1, 2, 41], Err(EspError::BadPadding)),
            (vec![0, 0, 2, 41], Err(EspError::BadPadding)),
            (vec![1, 2, 3, 41], Err(EspError::BadPadding)),
            (vec![0xaa, 0xbb, 0xff, 41], Err(EspError::BadPadding)),
            (
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xfe, 41],
                Err(EspError::BadPadding),
            ),
        ];
        for provider in PROVIDERS {
            let (out, mut inb) = pair(provider);
            for (seq, (plaintext, expected)) in (1u64..).zip(&cases) {
                let mut packet = seal_raw(&out, seq, plaintext);
                let got = inb.decapsulate(&mut packet).map(|d| d.payload.to_vec());
                assert_eq!(got, expected.map(<[u8]>::to_vec), "{plaintext:02x?}");
                // Authentic packets consume their sequence number even when
                // the padding is bad.
                assert_eq!(inb.replay_window().top(), seq);
            }
        }
    }

    #[test]
    fn keepalive_is_a_dummy_packet() {
        for provider in PROVIDERS {
            let (mut out, mut inb) = pair(provider);
            let mut packet = seal_vec(&mut out, &[], NEXT_HEADER_NONE);
            assert_eq!(packet.len(), ESP_MIN_PACKET_LEN);
            let d = inb.decapsulate(&mut packet).unwrap();
            assert!(d.is_dummy());
            assert_eq!(
                (d.seq, d.next_header, d.payload),
                (1, NEXT_HEADER_NONE, &[][..])
            );
        }
    }

    /// The sender crosses 2^32 and skips numbers (lost packets); the
    /// receiver infers the high half from its window both ways.
    #[test]
    fn esn_across_the_32_bit_boundary() {
        for provider in PROVIDERS {
            let (mut out, mut inb) = pair(provider);
            out.next_seq = (1 << 32) - 3;
            let p = |out: &mut OutboundSa| seal_vec(out, b"x", NEXT_HEADER_IPV6);
            let a = p(&mut out); // 2^32 - 3
            let b = p(&mut out); // 2^32 - 2, arrives late
            for _ in 0..100 {
                p(&mut out); // lost
            }
            let c = p(&mut out); // 2^32 + 99
            assert_eq!(u32::from_be_bytes(c[4..8].try_into().unwrap()), 99);

            assert_eq!(inb.decapsulate(&mut a.clone()).unwrap().seq, (1 << 32) - 3);
            assert_eq!(inb.decapsulate(&mut c.clone()).unwrap().seq, (1 << 32) + 99);
            assert_eq!(inb.decapsulate(&mut b.clone()).unwrap().seq, (1 << 32) - 2);
            assert_eq!(
                inb.decapsulate(&mut b.clone()),
                Err(EspError::Replay(ReplayError::Duplicate))
            );
            assert_eq!(inb.replay_window().top(), (1 << 32) + 99);

            // A jump far ahead, but by less than 2^32 - window, is still
            // inferred; a jump past that range cannot be (the high half is
            // taken one too low) and fails authentication.
            let top = inb.replay_window().top();
            out.next_seq = top + (1 << 32) - crate::replay::REPLAY_WINDOW - 1;
            let d = p(&mut out);
            assert_eq!(
                inb.decapsulate(&mut d.clone()).unwrap().seq,
                out.next_seq - 1
            );
            let top = inb.replay_window().top();
            out.next_seq = top + (1 << 32) - crate::replay::REPLAY_WINDOW;
            let e = p(&mut out);
            assert_eq!(
                inb.decapsulate(&mut e.clone()),
                Err(EspError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn in_place_equals_copying() {
        for provider in PROVIDERS {
            let (mut a, _) = pair(provider);
            let (mut b, _) = pair(provider);
            for len in [0usize, 1, 2, 3, 4, 5, 100, 1400, 1401, 1402, 1403] {
                let inner: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x3c).collect();
                let copied = seal_vec(&mut a, &inner, NEXT_HEADER_IPV6);

                let head = 16 + 5; // extra slack before the headroom
                let mut buf = vec![0xcc; head + len + ESP_OVERHEAD_MAX - 16 + 7];
                buf[head..head + len].copy_from_slice(&inner);
                let range = b
                    .encapsulate_in_place(&mut buf, head..head + len, NEXT_HEADER_IPV6)
                    .unwrap();
                assert_eq!(range, head - 16..head - 16 + copied.len());
                assert_eq!(buf[range], copied[..], "{provider:?} len {len}");
            }
        }
    }

    #[test]
    fn buffer_errors_use_no_sequence_number() {
        let (mut out, _) = pair(AeadProvider::Ring);
        let inner = [9u8; 10];
        let need = encapsulated_len(10);
        assert_eq!(need, 44);
        let mut small = vec![0u8; need - 1];
        assert_eq!(
            out.encapsulate(&inner, 41, &mut small),
            Err(EspError::BufferTooSmall)
        );

        let mut buf = vec![0u8; 64];
        let cases = [
            (15..25, EspError::InsufficientHeadroom),
            (0..10, EspError::InsufficientHeadroom),
            (30..60, EspError::BufferTooSmall),
            (16..65, EspError::InvalidRange),
            #[allow(clippy::reversed_empty_ranges)]
            (20..19, EspError::InvalidRange),
        ];
        for (range, expected) in cases {
            let before = buf.clone();
            assert_eq!(
                out.encapsulate_in_place(&mut buf, range.clone(), 41),
                Err(expected),
                "{range:?}"
            );
            assert_eq!(buf, before);
        }
        assert_eq!(out.next_seq(), 1);
        assert_eq!(out.encapsulate_in_place(&mut buf, 16..26, 41), Ok(0..44));
        assert_eq!(out.next_seq(), 2);
    }

    #[test]
    fn outbound_refuses_reserved_spi() {
        for spi in [0, 1, MIN_SPI - 1] {
            let mut out = OutboundSa::new(spi, &keys(3), AeadProvider::Ring);
            let mut buf = [0u8; 64];
            assert_eq!(
                out.encapsulate(b"x", 41, &mut buf),
                Err(EspError::ReservedSpi)
            );
            assert_eq!(
                out.encapsulate_in_place(&mut buf, 16..20, 41),
                Err(EspError::ReservedSpi)
            );
            assert_eq!(out.next_seq(), 1);
        }
    }

    #[test]
    fn sequence_numbers_never_wrap() {
        for (mut out, last) in [
            (pair(AeadProvider::Ring).0, u64::MAX - 1),
            (
                OutboundSa::dangerous_new_without_esn(SPI, &keys(1), AeadProvider::Ring),
                u64::from(u32::MAX) - 1,
            ),
        ] {
            out.next_seq = last;
            let mut buf = [0u8; 64];
            let packet = out.encapsulate(b"", 41, &mut buf).unwrap();
            assert_eq!(packet[8..16], last.to_be_bytes());
            for _ in 0..3 {
                assert_eq!(
                    out.encapsulate(b"", 41, &mut buf),
                    Err(EspError::SequenceExhausted)
                );
                assert_eq!(
                    out.encapsulate_in_place(&mut buf, 16..16, 41),
                    Err(EspError::SequenceExhausted)
                );
            }
            assert_eq!(out.next_seq(), last + 1);
        }
    }

    #[test]
    fn lengths() {
        // (inner, encapsulated)
        for (inner, esp) in [
            (0, 36),
            (1, 36),
            (2, 36),
            (3, 40),
            (84, 120),
            (1380, 1416),
            (1438, 1472),
        ] {
            assert_eq!(encapsulated_len(inner), esp, "{inner}");
        }
        assert_eq!(ESP_OVERHEAD_MAX, 37);
        assert_eq!(max_inner_len(1472), 1438);
        assert_eq!(max_inner_len(0), 0);
        for budget in ESP_MIN_PACKET_LEN..2000 {
            let max = max_inner_len(budget);
            assert!(encapsulated_len(max) <= budget, "{budget}");
            assert!(encapsulated_len(max + 1) > budget, "{budget}");
        }
        assert_eq!(encapsulated_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            EspError::Truncated,
            EspError::ReservedSpi,
            EspError::Misaligned,
            EspError::SpiMismatch,
            EspError::Replay(ReplayError::Duplicate),
            EspError::Replay(ReplayError::TooOld),
            EspError::Replay(ReplayError::Zero),
            EspError::AuthenticationFailed,
            EspError::BadPadding,
            EspError::BufferTooSmall,
            EspError::InsufficientHeadroom,
            EspError::InvalidRange,
            EspError::SequenceExhausted,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(EspError::as_str).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn debug_hides_keys() {
        let (out, inb) = pair(AeadProvider::RustCrypto);
        for shown in [
            format!("{out:?}"),
            format!("{inb:?}"),
            format!("{:?}", keys(0x42)),
        ] {
            assert!(!shown.contains("66") && !shown.contains("0x42"), "{shown}");
        }
    }
}
