//! The Noise `IKpsk2` handshake that authenticates two peers and keys their
//! security associations.
//!
//! Every handshake is `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` with the
//! prologue `"permanet v1"`, run through `snow`. The initiator knows the
//! responder's static key (from a verified lease) and sends it its own,
//! encrypted, in message 1 (`-> e, es, s, ss`); the responder answers with
//! message 2 (`<- e, ee, se, psk`). When no pre-shared key is configured an
//! all-zero one is mixed in, as WireGuard does, so the pattern never changes.
//!
//! Both messages carry a [`HandshakePayload`]: the sender's inbound ESP SPI, a
//! TAI64N timestamp and the sender's lease. The responder side is split in two
//! ([`ResponderHandshake::read_initiation`] then
//! [`ResponderHandshake::write_response`]) so the caller can check the
//! initiator's identity, lease and timestamp (refusing replayed or older
//! initiations) before it spends the second half of the Diffie-Hellman work.
//!
//! The authority channel (a terminal's login channel to addrd,
//! [`crate::authority`]) runs the same handshake with [`Channel::Authority`]:
//! its own prologue ([`AUTHORITY_PROLOGUE`]) and key labels, so no message of
//! one channel can complete a handshake of the other.
//!
//! When the handshake completes, both sides derive the ESP key material of
//! both directions from the raw Noise split with [`derive_sa_keys`]
//! (HKDF-SHA256, salted with the handshake hash, domain-separated labels).
//!
//! The module never reads a clock or the operating system's RNG: the
//! ephemeral keys are drawn from the caller's RNG, so a seeded simulation
//! replays the same bytes.
//!
//! Each [`StaticKeypair`] remembers the static-static Diffie-Hellman result
//! (`ss`) with up to [`SS_CACHE_CAPACITY`] remote static keys, as WireGuard
//! precomputes it per peer, so that a rekey with a known peer costs one
//! Diffie-Hellman operation less; the Diffie-Hellman operations themselves
//! are aws-lc's (see `x25519.rs`). Only authenticated
//! initiations and our own initiations add entries. A cache hit shows in the
//! responder's timing; which peers a node talks to is no secret from an
//! observer of its traffic anyway.
#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, CryptoRngCore, RngCore};
use sha2::Sha256;
use snow::error::InitStage;
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::esp::EspKeyMaterial;
use crate::time::Tai64N;
use crate::x25519::{self, SsCache};

/// The Noise protocol name. Changing it changes every derived key.
pub const NOISE_PROTOCOL: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";

/// The Noise prologue, mixed into the handshake hash by both sides.
pub const PROLOGUE: &[u8] = b"permanet v1";

/// The Noise prologue of the authority channel (terminal to addrd; see
/// [`crate::authority`]): a different prologue, so a message of one channel
/// can never complete a handshake of the other.
pub const AUTHORITY_PROLOGUE: &[u8] = b"permanet v1 authority";

/// HKDF info for the authority channel's initiator→responder key.
pub const INFO_AUTHORITY_INITIATOR_TO_RESPONDER: &[u8] =
    b"permanet v1 authority initiator->responder";

/// HKDF info for the authority channel's responder→initiator key.
pub const INFO_AUTHORITY_RESPONDER_TO_INITIATOR: &[u8] =
    b"permanet v1 authority responder->initiator";

/// Which protocol a handshake keys: the tunnel's ESP security associations
/// or the authority channel. The two use different Noise prologues and key
/// derivation labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Channel {
    /// The tunnel between two nodes ([`PROLOGUE`]).
    #[default]
    Tunnel,
    /// A terminal's channel to addrd ([`AUTHORITY_PROLOGUE`]).
    Authority,
}

impl Channel {
    /// The Noise prologue of this channel.
    pub const fn prologue(self) -> &'static [u8] {
        match self {
            Channel::Tunnel => PROLOGUE,
            Channel::Authority => AUTHORITY_PROLOGUE,
        }
    }

    const fn labels(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Channel::Tunnel => (INFO_INITIATOR_TO_RESPONDER, INFO_RESPONDER_TO_INITIATOR),
            Channel::Authority => (
                INFO_AUTHORITY_INITIATOR_TO_RESPONDER,
                INFO_AUTHORITY_RESPONDER_TO_INITIATOR,
            ),
        }
    }
}

/// Longest lease a handshake payload may carry, in bytes (the lease
/// format's own limit).
pub use crate::lease::MAX_LEASE_LEN;

/// Smallest SPI a payload may announce (the ESP limit).
pub use crate::esp::MIN_SPI;

/// Length of the fixed part of a payload: SPI, timestamp, lease length.
pub const PAYLOAD_HEADER_LEN: usize = 4 + Tai64N::LEN + 2;

/// Longest encoded payload.
pub const MAX_PAYLOAD_LEN: usize = PAYLOAD_HEADER_LEN + MAX_LEASE_LEN;

/// Bytes a Noise message 1 adds around its payload: `e` (32), encrypted `s`
/// (32 + 16), payload tag (16).
pub const INITIATION_OVERHEAD: usize = KEY_LEN + KEY_LEN + TAG_LEN + TAG_LEN;

/// Bytes a Noise message 2 adds around its payload: `e` (32), payload tag (16).
pub const RESPONSE_OVERHEAD: usize = KEY_LEN + TAG_LEN;

/// Shortest valid Noise message 1 (empty lease).
pub const MIN_INITIATION_LEN: usize = INITIATION_OVERHEAD + PAYLOAD_HEADER_LEN;

/// Longest valid Noise message 1.
pub const MAX_INITIATION_LEN: usize = INITIATION_OVERHEAD + MAX_PAYLOAD_LEN;

/// Shortest valid Noise message 2 (empty lease).
pub const MIN_RESPONSE_LEN: usize = RESPONSE_OVERHEAD + PAYLOAD_HEADER_LEN;

/// Longest valid Noise message 2.
pub const MAX_RESPONSE_LEN: usize = RESPONSE_OVERHEAD + MAX_PAYLOAD_LEN;

/// How many remote static keys a [`StaticKeypair`] remembers the
/// static-static Diffie-Hellman result with (about 300 bytes each). Beyond
/// that, an entry not used since the cache last looked at it is replaced
/// (CLOCK).
pub const SS_CACHE_CAPACITY: usize = 1024;

/// HKDF info for the initiator→responder ESP key material.
pub const INFO_INITIATOR_TO_RESPONDER: &[u8] = b"permanet v1 esp initiator->responder";

/// HKDF info for the responder→initiator ESP key material.
pub const INFO_RESPONDER_TO_INITIATOR: &[u8] = b"permanet v1 esp responder->initiator";

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Position of the PSK token in `IKpsk2`.
const PSK_POSITION: u8 = 2;
/// The PSK mixed in when none is configured.
const ZERO_PSK: [u8; KEY_LEN] = [0; KEY_LEN];
/// ESP key (32) ‖ salt (4).
const ESP_OKM_LEN: usize = 36;

/// Length of the Noise message 1 that carries a lease of `lease_len` bytes.
pub const fn initiation_len(lease_len: usize) -> usize {
    INITIATION_OVERHEAD + PAYLOAD_HEADER_LEN + lease_len
}

/// Length of the Noise message 2 that carries a lease of `lease_len` bytes.
pub const fn response_len(lease_len: usize) -> usize {
    RESPONSE_OVERHEAD + PAYLOAD_HEADER_LEN + lease_len
}

/// Why a handshake message was refused or could not be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The message is shorter than the smallest valid message.
    #[error("handshake message too short")]
    MessageTooShort,
    /// The message is longer than the largest valid message.
    #[error("handshake message too long")]
    MessageTooLong,
    /// The message did not authenticate: wrong responder key, mismatched
    /// PSK, tampering, or a response to another initiation.
    #[error("handshake message failed to decrypt")]
    Decrypt,
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order
    /// point as its ephemeral or static key.
    #[error("peer public key is of low order")]
    LowOrderKey,
    /// Noise refused the message's layout.
    #[error("malformed handshake message")]
    MalformedMessage,
    /// The decrypted payload is invalid.
    #[error("bad handshake payload: {0}")]
    Payload(#[from] PayloadError),
    /// The output buffer cannot hold the message.
    #[error("output buffer too small for the handshake message")]
    BufferTooSmall,
    /// The handshake is not in a state that accepts this call (for example a
    /// second response to an initiation that already completed).
    #[error("handshake in unexpected state")]
    UnexpectedState,
    /// Noise could not be set up (a bug, never caused by a peer).
    #[error("noise setup failed")]
    Setup,
}

impl HandshakeError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            HandshakeError::MessageTooShort => "message_too_short",
            HandshakeError::MessageTooLong => "message_too_long",
            HandshakeError::Decrypt => "decrypt",
            HandshakeError::LowOrderKey => "low_order_key",
            HandshakeError::MalformedMessage => "malformed_message",
            HandshakeError::Payload(e) => e.as_str(),
            HandshakeError::BufferTooSmall => "buffer_too_small",
            HandshakeError::UnexpectedState => "unexpected_state",
            HandshakeError::Setup => "setup",
        }
    }

    fn from_noise(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt => HandshakeError::Decrypt,
            snow::Error::Dh => HandshakeError::LowOrderKey,
            snow::Error::Input => HandshakeError::MalformedMessage,
            snow::Error::State(_) => HandshakeError::UnexpectedState,
            _ => HandshakeError::Setup,
        }
    }
}

/// Why a handshake payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Shorter than its header, or than the lease length it announces.
    #[error("payload truncated")]
    Truncated,
    /// Bytes follow the lease.
    #[error("trailing bytes after the lease")]
    TrailingBytes,
    /// The SPI is below 256 (reserved by RFC 4303).
    #[error("reserved SPI")]
    ReservedSpi,
    /// The lease is longer than [`MAX_LEASE_LEN`].
    #[error("lease too long")]
    LeaseTooLong,
    /// The output buffer cannot hold the payload.
    #[error("output buffer too small for the payload")]
    BufferTooSmall,
}

impl PayloadError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            PayloadError::Truncated => "payload_truncated",
            PayloadError::TrailingBytes => "payload_trailing_bytes",
            PayloadError::ReservedSpi => "payload_reserved_spi",
            PayloadError::LeaseTooLong => "payload_lease_too_long",
            PayloadError::BufferTooSmall => "payload_buffer_too_small",
        }
    }
}

/// Why a key in text form was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not 44 characters ending in a single `=`.
    #[error("key must be 44 characters of padded base64")]
    Length,
    /// A character outside the standard base64 alphabet.
    #[error("invalid base64 character in key")]
    Character,
    /// The unused low bits of the last character are not zero.
    #[error("non-canonical base64 key")]
    NonCanonical,
}

impl KeyParseError {
    /// A stable snake_case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyParseError::Length => "key_length",
            KeyParseError::Character => "key_character",
            KeyParseError::NonCanonical => "key_non_canonical",
        }
    }
}

/// An X25519 public key. Displayed and parsed as standard padded base64, as
/// `wg` shows keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for PublicKey {
    fn from(bytes: [u8; 32]) -> Self {
        PublicKey(bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_base64(&self.0, f)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PublicKey(")?;
        write_base64(&self.0, f)?;
        f.write_str(")")
    }
}

impl FromStr for PublicKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(|k| PublicKey(*k))
    }
}

/// A local X25519 static key pair. The private half is zeroized on drop and
/// never shown by `Debug`.
///
/// It also carries the private key in aws-lc's form and the cache of
/// static-static Diffie-Hellman results with recently seen remote static
/// keys (see the module documentation), both shared by its clones and wiped
/// when the last of them is dropped or zeroized.
#[derive(Clone)]
pub struct StaticKeypair {
    private: [u8; 32],
    public: PublicKey,
    /// `None` once zeroized.
    agreement: Option<Arc<x25519::PrivateKey>>,
    ss_cache: Arc<Mutex<SsCache>>,
}

impl StaticKeypair {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut private = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(private.as_mut());
        Self::from_private(*private)
    }

    /// The key pair of a stored private key (any 32 bytes; X25519 clamps).
    ///
    /// # Panics
    ///
    /// If aws-lc cannot allocate the key (as Rust aborts when it cannot
    /// allocate); aws-lc accepts every 32-byte X25519 private key.
    pub fn from_private(private: [u8; 32]) -> Self {
        #[allow(
            clippy::expect_used,
            reason = "aws-lc takes any 32 bytes; it only fails when out of memory"
        )]
        let agreement = x25519::PrivateKey::new(&private).expect("aws-lc X25519 key");
        StaticKeypair {
            private,
            public: PublicKey(*agreement.public_key()),
            agreement: Some(Arc::new(agreement)),
            ss_cache: Arc::new(Mutex::new(SsCache::new(SS_CACHE_CAPACITY))),
        }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The private key bytes, for writing a key file.
    pub fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }
}

impl Zeroize for StaticKeypair {
    /// Zeroizes the private key and the cached results (also those of the
    /// clones, which can recompute them), and detaches this key pair from
    /// the clones' cache and from aws-lc's key (freed, and wiped, with the
    /// last clone). A zeroized key pair can no longer handshake.
    fn zeroize(&mut self) {
        self.private.zeroize();
        self.agreement = None;
        if let Ok(mut cache) = self.ss_cache.lock() {
            cache.clear();
        }
        self.ss_cache = Arc::new(Mutex::new(SsCache::new(SS_CACHE_CAPACITY)));
    }
}

impl Drop for StaticKeypair {
    fn drop(&mut self) {
        // The cache and aws-lc's key wipe their secrets when their last
        // owner goes.
        self.private.zeroize();
    }
}

impl ZeroizeOnDrop for StaticKeypair {}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A 256-bit pre-shared key mixed into the handshake (`psk2`), zeroized on
/// drop. Parsed from base64 like `wg`'s `PresharedKey`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Psk([u8; 32]);

impl Psk {
    /// A PSK from its bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Psk(bytes)
    }

    /// A fresh random PSK.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut psk = Psk([0; 32]);
        rng.fill_bytes(&mut psk.0);
        psk
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(..)")
    }
}

impl FromStr for Psk {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_key(s).map(|k| Psk(*k))
    }
}

/// The payload a side sends inside its Noise message.
///
/// Wire layout: `spi u32 BE | timestamp TAI64N (12) | lease_len u16 BE | lease`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakePayload<'a> {
    /// The SPI the sender will receive on (chosen by the sender, ≥ 256).
    pub spi: u32,
    /// When the sender built the message; initiations must be strictly newer
    /// than the last accepted one from the same peer.
    pub timestamp: Tai64N,
    /// The sender's encoded lease (opaque here).
    pub lease: &'a [u8],
}

impl HandshakePayload<'_> {
    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        PAYLOAD_HEADER_LEN + self.lease.len()
    }

    /// Writes the payload to the front of `out` and returns its length.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, PayloadError> {
        if self.spi < MIN_SPI {
            return Err(PayloadError::ReservedSpi);
        }
        if self.lease.len() > MAX_LEASE_LEN {
            return Err(PayloadError::LeaseTooLong);
        }
        let lease_len = u16::try_from(self.lease.len()).map_err(|_| PayloadError::LeaseTooLong)?;
        let out = out
            .get_mut(..self.buffer_len())
            .ok_or(PayloadError::BufferTooSmall)?;
        let (spi, rest) = out.split_at_mut(4);
        let (timestamp, rest) = rest.split_at_mut(Tai64N::LEN);
        let (len, lease) = rest.split_at_mut(2);
        spi.copy_from_slice(&self.spi.to_be_bytes());
        timestamp.copy_from_slice(self.timestamp.as_bytes());
        len.copy_from_slice(&lease_len.to_be_bytes());
        lease.copy_from_slice(self.lease);
        Ok(self.buffer_len())
    }
}

/// A payload received from the peer, after authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedPayload {
    /// The SPI the peer receives on: our outbound SPI.
    pub spi: u32,
    /// The peer's timestamp.
    pub timestamp: Tai64N,
    /// The peer's lease, still to be verified by the caller.
    pub lease: Vec<u8>,
}

impl ReceivedPayload {
    /// Parses a decrypted payload.
    pub fn parse(bytes: &[u8]) -> Result<Self, PayloadError> {
        let (spi, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(PayloadError::Truncated)?;
        let (timestamp, rest) = rest
            .split_first_chunk::<{ Tai64N::LEN }>()
            .ok_or(PayloadError::Truncated)?;
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(PayloadError::Truncated)?;
        let spi = u32::from_be_bytes(*spi);
        if spi < MIN_SPI {
            return Err(PayloadError::ReservedSpi);
        }
        let lease_len = usize::from(u16::from_be_bytes(*len));
        if lease_len > MAX_LEASE_LEN {
            return Err(PayloadError::LeaseTooLong);
        }
        let (lease, trailing) = rest
            .split_at_checked(lease_len)
            .ok_or(PayloadError::Truncated)?;
        if !trailing.is_empty() {
            return Err(PayloadError::TrailingBytes);
        }
        Ok(ReceivedPayload {
            spi,
            timestamp: Tai64N(*timestamp),
            lease: lease.to_vec(),
        })
    }
}

/// Which side of the handshake the local host played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sent message 1.
    Initiator,
    /// Answered with message 2.
    Responder,
}

/// The ESP key material of a new security association, oriented to the local
/// role: `outbound` seals what we send, `inbound` opens what we receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaKeys {
    /// Keys for packets we send.
    pub outbound: EspKeyMaterial,
    /// Keys for packets we receive.
    pub inbound: EspKeyMaterial,
}

/// Derives both directions' ESP key material from the raw Noise split.
///
/// For each direction: HKDF-SHA256 with salt = the Noise handshake hash,
/// ikm = that direction's split key, info = [`INFO_INITIATOR_TO_RESPONDER`]
/// or [`INFO_RESPONDER_TO_INITIATOR`], expanded to 36 bytes = key (32) ‖
/// salt (4). The result is oriented to `role`.
pub fn derive_sa_keys(
    role: Role,
    k_i2r: &[u8; 32],
    k_r2i: &[u8; 32],
    handshake_hash: &[u8; 32],
) -> SaKeys {
    derive_channel_keys(Channel::Tunnel, role, k_i2r, k_r2i, handshake_hash)
}

/// [`derive_sa_keys`] with the labels of `channel`.
fn derive_channel_keys(
    channel: Channel,
    role: Role,
    k_i2r: &[u8; 32],
    k_r2i: &[u8; 32],
    handshake_hash: &[u8; 32],
) -> SaKeys {
    let (info_i2r, info_r2i) = channel.labels();
    let i2r = esp_key_material(k_i2r, handshake_hash, info_i2r);
    let r2i = esp_key_material(k_r2i, handshake_hash, info_r2i);
    match role {
        Role::Initiator => SaKeys {
            outbound: i2r,
            inbound: r2i,
        },
        Role::Responder => SaKeys {
            outbound: r2i,
            inbound: i2r,
        },
    }
}

/// An initiation in flight: message 1 was written, message 2 is awaited.
pub struct InitiatorHandshake {
    state: HandshakeState,
    keys: Arc<HandshakeKeys>,
    channel: Channel,
}

impl InitiatorHandshake {
    /// Writes Noise message 1 (`-> e, es, s, ss`) carrying `payload` to the
    /// front of `out` and returns the pending handshake and the bytes
    /// written ([`initiation_len`] of the lease length).
    ///
    /// `psk` is the pre-shared key configured for `remote`, if any. The
    /// ephemeral key is drawn from `rng`.
    pub fn start(
        local: &StaticKeypair,
        remote: &PublicKey,
        psk: Option<&Psk>,
        payload: &HandshakePayload<'_>,
        rng: &mut impl CryptoRngCore,
        out: &mut [u8],
    ) -> Result<(InitiatorHandshake, usize), HandshakeError> {
        Self::start_on(Channel::Tunnel, local, remote, psk, payload, rng, out)
    }

    /// [`start`](Self::start) for the given channel's prologue and keys.
    pub fn start_on(
        channel: Channel,
        local: &StaticKeypair,
        remote: &PublicKey,
        psk: Option<&Psk>,
        payload: &HandshakePayload<'_>,
        rng: &mut impl CryptoRngCore,
        out: &mut [u8],
    ) -> Result<(InitiatorHandshake, usize), HandshakeError> {
        let mut plain = [0u8; MAX_PAYLOAD_LEN];
        let plain_len = payload.emit(&mut plain)?;
        let plain = plain.get(..plain_len).ok_or(HandshakeError::Setup)?;
        let out = out
            .get_mut(..INITIATION_OVERHEAD + plain_len)
            .ok_or(HandshakeError::BufferTooSmall)?;
        let psk = psk.map_or(&ZERO_PSK, |p| &p.0);
        let params = noise_params()?;
        let keys = Arc::new(HandshakeKeys::new(local, SsToken::RemoteStatic(remote.0)));
        let resolver = Resolver::new(Arc::clone(&keys), rng);
        let mut state = snow::Builder::with_resolver(params, Box::new(resolver))
            .prologue(channel.prologue())
            .local_private_key(&local.private)
            .remote_public_key(&remote.0)
            .psk(PSK_POSITION, psk)
            .build_initiator()
            .map_err(HandshakeError::from_noise)?;
        let written = state
            .write_message(plain, out)
            .map_err(HandshakeError::from_noise)?;
        keys.commit_ss(&remote.0);
        Ok((
            InitiatorHandshake {
                state,
                keys,
                channel,
            },
            written,
        ))
    }

    /// Reads Noise message 2 (`<- e, ee, se, psk`) and returns the
    /// responder's payload and the new SA keys.
    ///
    /// Takes `&mut self` rather than `self` so that a forged or corrupted
    /// response does not kill the pending initiation: after an error other
    /// than a bad payload, the genuine response can still be read. After a
    /// success, further calls fail with [`HandshakeError::UnexpectedState`].
    pub fn finish(
        &mut self,
        response_noise: &[u8],
    ) -> Result<(ReceivedPayload, SaKeys), HandshakeError> {
        check_len(response_noise, MIN_RESPONSE_LEN, MAX_RESPONSE_LEN)?;
        let mut plain = [0u8; MAX_PAYLOAD_LEN];
        let plain_len = self
            .state
            .read_message(response_noise, &mut plain)
            .map_err(HandshakeError::from_noise);
        // `se` is not a static-static result: never cached.
        self.keys.discard_pending();
        let plain_len = plain_len?;
        let payload = ReceivedPayload::parse(plain.get(..plain_len).ok_or(HandshakeError::Setup)?)?;
        let keys = split(&mut self.state, Role::Initiator, self.channel)?;
        Ok((payload, keys))
    }
}

impl fmt::Debug for InitiatorHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InitiatorHandshake { .. }")
    }
}

/// A received, authenticated initiation that has not been answered yet.
pub struct ResponderHandshake {
    state: HandshakeState,
    channel: Channel,
}

impl ResponderHandshake {
    /// Reads Noise message 1 addressed to `local` and returns the pending
    /// response, the initiator's static public key and its payload.
    ///
    /// This costs two of the responder's four Diffie-Hellman operations. The
    /// caller should now look the initiator up, verify its lease and refuse
    /// a timestamp that is not newer than the last accepted one, then call
    /// [`ResponderHandshake::write_response`]. The responder's ephemeral key
    /// is drawn from `rng`.
    pub fn read_initiation(
        local: &StaticKeypair,
        initiation_noise: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(ResponderHandshake, PublicKey, ReceivedPayload), HandshakeError> {
        Self::read_initiation_on(Channel::Tunnel, local, initiation_noise, rng)
    }

    /// [`read_initiation`](Self::read_initiation) for the given channel's
    /// prologue and keys.
    pub fn read_initiation_on(
        channel: Channel,
        local: &StaticKeypair,
        initiation_noise: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(ResponderHandshake, PublicKey, ReceivedPayload), HandshakeError> {
        check_len(initiation_noise, MIN_INITIATION_LEN, MAX_INITIATION_LEN)?;
        let params = noise_params()?;
        let keys = Arc::new(HandshakeKeys::new(local, SsToken::SecondStaticDh));
        let resolver = Resolver::new(Arc::clone(&keys), rng);
        let mut state = snow::Builder::with_resolver(params, Box::new(resolver))
            .prologue(channel.prologue())
            .local_private_key(&local.private)
            .build_responder()
            .map_err(HandshakeError::from_noise)?;
        let mut plain = [0u8; MAX_PAYLOAD_LEN];
        let plain_len = state
            .read_message(initiation_noise, &mut plain)
            .map_err(HandshakeError::from_noise)?;
        let initiator: [u8; 32] = state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
            .ok_or(HandshakeError::UnexpectedState)?;
        // The message authenticated: the initiator holds that static key.
        keys.commit_ss(&initiator);
        let payload = ReceivedPayload::parse(plain.get(..plain_len).ok_or(HandshakeError::Setup)?)?;
        Ok((
            ResponderHandshake { state, channel },
            PublicKey(initiator),
            payload,
        ))
    }

    /// Writes Noise message 2 (`<- e, ee, se, psk`) carrying `payload` to
    /// the front of `out`; returns the bytes written ([`response_len`] of the
    /// lease length) and the new SA keys.
    ///
    /// `psk` is the pre-shared key configured for the initiator's key, if
    /// any; it must match the initiator's or the initiator will fail to
    /// decrypt the response.
    pub fn write_response(
        mut self,
        psk: Option<&Psk>,
        payload: &HandshakePayload<'_>,
        out: &mut [u8],
    ) -> Result<(usize, SaKeys), HandshakeError> {
        let mut plain = [0u8; MAX_PAYLOAD_LEN];
        let plain_len = payload.emit(&mut plain)?;
        let plain = plain.get(..plain_len).ok_or(HandshakeError::Setup)?;
        let out = out
            .get_mut(..RESPONSE_OVERHEAD + plain_len)
            .ok_or(HandshakeError::BufferTooSmall)?;
        let psk = psk.map_or(&ZERO_PSK, |p| &p.0);
        self.state
            .set_psk(PSK_POSITION.into(), psk)
            .map_err(HandshakeError::from_noise)?;
        let written = self
            .state
            .write_message(plain, out)
            .map_err(HandshakeError::from_noise)?;
        let keys = split(&mut self.state, Role::Responder, self.channel)?;
        Ok((written, keys))
    }
}

impl fmt::Debug for ResponderHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponderHandshake { .. }")
    }
}

fn check_len(message: &[u8], min: usize, max: usize) -> Result<(), HandshakeError> {
    if message.len() < min {
        Err(HandshakeError::MessageTooShort)
    } else if message.len() > max {
        Err(HandshakeError::MessageTooLong)
    } else {
        Ok(())
    }
}

fn noise_params() -> Result<NoiseParams, HandshakeError> {
    NOISE_PROTOCOL.parse().map_err(|_| HandshakeError::Setup)
}

/// Derives the SA keys of a finished handshake.
fn split(
    state: &mut HandshakeState,
    role: Role,
    channel: Channel,
) -> Result<SaKeys, HandshakeError> {
    if !state.is_handshake_finished() {
        return Err(HandshakeError::UnexpectedState);
    }
    let hash: [u8; 32] = state
        .get_handshake_hash()
        .try_into()
        .map_err(|_| HandshakeError::Setup)?;
    let (k_i2r, k_r2i) = state.dangerously_get_raw_split();
    let (k_i2r, k_r2i) = (Zeroizing::new(k_i2r), Zeroizing::new(k_r2i));
    Ok(derive_channel_keys(channel, role, &k_i2r, &k_r2i, &hash))
}

fn esp_key_material(ikm: &[u8; 32], handshake_hash: &[u8; 32], info: &[u8]) -> EspKeyMaterial {
    let hkdf = Hkdf::<Sha256>::new(Some(handshake_hash), ikm);
    let mut okm = Zeroizing::new([0u8; ESP_OKM_LEN]);
    #[allow(
        clippy::expect_used,
        reason = "36 bytes is far below HKDF-SHA256's 8160-byte output limit"
    )]
    hkdf.expand(info, okm.as_mut())
        .expect("HKDF-SHA256 can expand to 36 bytes");
    let mut keys = EspKeyMaterial {
        key: [0; 32],
        salt: [0; 4],
    };
    for (dst, src) in keys
        .key
        .iter_mut()
        .chain(keys.salt.iter_mut())
        .zip(okm.iter())
    {
        *dst = *src;
    }
    keys
}

/// The key material of one handshake, shared by the two X25519 instances
/// snow builds (`s` and `e`) and by the handshake itself.
struct HandshakeKeys {
    local: StaticKeypair,
    memo: Mutex<Memo>,
    /// Which DH with the local static key is `ss`, the only one the cache
    /// may answer: looking up `es` too would let anyone time whether we
    /// talk to the node whose key they send as their ephemeral.
    ss_token: SsToken,
    /// DHs done with the local static key so far in this handshake.
    static_dhs: std::sync::atomic::AtomicU8,
}

/// How a handshake recognises its `ss` DH.
#[derive(Clone, Copy)]
enum SsToken {
    /// Initiator: `ss` is the DH with the responder's known static key
    /// (its other static DH, `se`, is with the responder's ephemeral).
    RemoteStatic([u8; 32]),
    /// Responder: message 1 is `e, es, s, ss`, so `ss` is the second DH with
    /// the local static key (the first, `es`, is with the initiator's
    /// ephemeral, which the initiator chooses freely).
    SecondStaticDh,
}

/// The static-static candidates computed with the local static key during
/// this handshake, by remote key, held until the message that used them
/// authenticated.
#[derive(Default)]
struct Memo {
    pending: [Option<Held>; 2],
}

/// A result computed with the local static key.
struct Held {
    remote: [u8; 32],
    shared: Zeroizing<[u8; 32]>,
}

impl HandshakeKeys {
    fn new(local: &StaticKeypair, ss_token: SsToken) -> Self {
        HandshakeKeys {
            local: local.clone(),
            memo: Mutex::new(Memo::default()),
            ss_token,
            static_dhs: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// Counts a DH with the local static key and says whether it is `ss`.
    fn is_ss(&self, remote: &[u8; 32]) -> bool {
        let n = self
            .static_dhs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.ss_token {
            SsToken::RemoteStatic(known) => bool::from(known.ct_eq(remote)),
            SsToken::SecondStaticDh => n == 1,
        }
    }

    /// The local static key's result with `remote`, if the cache has it.
    fn cached_ss(&self, remote: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        self.local.ss_cache.lock().ok()?.shared(remote)
    }

    /// Holds a result computed with the local static key until the
    /// handshake knows whether it was `ss`.
    fn hold(&self, remote: &[u8; 32], shared: &Zeroizing<[u8; 32]>) {
        if let Ok(mut memo) = self.memo.lock() {
            if let Some(free) = memo.pending.iter_mut().find(|p| p.is_none()) {
                *free = Some(Held {
                    remote: *remote,
                    shared: shared.clone(),
                });
            }
        }
    }

    /// Caches the held result with `remote_static` (the `ss` of a message
    /// that authenticated) and drops the others.
    fn commit_ss(&self, remote_static: &[u8; 32]) {
        let Ok(mut memo) = self.memo.lock() else {
            return;
        };
        let ss = memo
            .pending
            .iter_mut()
            .find(|p| p.as_ref().is_some_and(|h| &h.remote == remote_static))
            .and_then(Option::take);
        memo.pending = Default::default();
        drop(memo);
        if let (Some(ss), Ok(mut cache)) = (ss, self.local.ss_cache.lock()) {
            cache.insert(&ss.remote, &ss.shared);
        }
    }

    /// Drops the held results (zeroizing them).
    fn discard_pending(&self) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.pending = Default::default();
        }
    }
}

/// A snow resolver that uses snow's default hash and cipher but our own
/// X25519 (aws-lc's, caching, refusing low-order points, reusing the local
/// static key's aws-lc form) and an RNG seeded from the caller's RNG.
struct Resolver {
    seed: Zeroizing<[u8; 32]>,
    keys: Arc<HandshakeKeys>,
}

impl Resolver {
    fn new(keys: Arc<HandshakeKeys>, rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Resolver { seed, keys }
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(*self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                private: [0; 32],
                public: [0; 32],
                key: None,
                is_local_static: false,
                keys: Arc::clone(&self.keys),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The per-handshake RNG handed to snow (it draws the ephemeral key).
struct SeededRandom(ChaCha20Rng);

impl RngCore for SeededRandom {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for SeededRandom {}

impl Random for SeededRandom {}

/// X25519 for snow, by aws-lc (see [`crate::x25519`]).
///
/// Unlike snow's default, `dh` fails on an all-zero (non-contributory)
/// result, as WireGuard requires; `set` with the local static private key
/// reuses the key pair's aws-lc key and public key instead of a base-point
/// multiplication; and with the local static key, `dh` uses the
/// static-static cache.
#[derive(Zeroize, ZeroizeOnDrop)]
struct X25519 {
    /// The bytes snow set or generated (it may ask for them back).
    private: [u8; 32],
    public: [u8; 32],
    /// aws-lc's form of `private`; `None` before a key is set, or if aws-lc
    /// failed to take it (then `dh` fails).
    #[zeroize(skip)]
    key: Option<Arc<x25519::PrivateKey>>,
    is_local_static: bool,
    #[zeroize(skip)]
    keys: Arc<HandshakeKeys>,
}

impl X25519 {
    fn set_private(&mut self, private: [u8; 32]) {
        self.is_local_static = bool::from(private.ct_eq(&self.keys.local.private));
        if self.is_local_static {
            self.key = self.keys.local.agreement.clone();
            self.public = self.keys.local.public.0;
        } else {
            self.key = x25519::PrivateKey::new(&private).map(Arc::new);
            self.public = self.key.as_ref().map_or([0; 32], |k| *k.public_key());
        }
        self.private = private;
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        // snow only passes keys we gave it, which are always 32 bytes.
        let private = privkey.try_into().unwrap_or([0; 32]);
        self.set_private(private);
    }

    fn generate(&mut self, rng: &mut dyn Random) {
        let mut private = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(private.as_mut());
        self.set_private(*private);
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let theirs: &[u8; 32] = pubkey
            .get(..KEY_LEN)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        // Not a peer's doing: `HandshakeError::Setup`.
        let key = self
            .key
            .as_deref()
            .ok_or(snow::Error::Init(InitStage::GetDhImpl))?;
        // Only ever non-zero results are cached, and only `ss` may be
        // answered from the cache (see `SsToken`).
        let ss = self.is_local_static && self.keys.is_ss(theirs);
        if let Some(shared) = ss.then(|| self.keys.cached_ss(theirs)).flatten() {
            out.copy_from_slice(shared.as_ref());
            return Ok(());
        }
        let shared = key.diffie_hellman(theirs).ok_or(snow::Error::Dh)?;
        if self.is_local_static {
            self.keys.hold(theirs, &shared);
        }
        out.copy_from_slice(shared.as_ref());
        Ok(())
    }
}

/// Writes 32 bytes as standard padded base64 (44 characters).
fn write_base64(bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    use fmt::Write;
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let sextet = ((n >> (18 - 6 * i)) & 0x3f) as u8;
                f.write_char(base64_char(sextet))?;
            } else {
                f.write_char('=')?;
            }
        }
    }
    Ok(())
}

/// Parses 44 characters of standard padded base64 into 32 bytes.
fn decode_key(s: &str) -> Result<Zeroizing<[u8; 32]>, KeyParseError> {
    let (body, padding) = s
        .as_bytes()
        .split_at_checked(43)
        .ok_or(KeyParseError::Length)?;
    if padding != b"=" {
        return Err(KeyParseError::Length);
    }
    let mut out = Zeroizing::new([0u8; 32]);
    let mut slots = out.iter_mut();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        acc = (acc << 6) | u32::from(base64_value(c).ok_or(KeyParseError::Character)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let slot = slots.next().ok_or(KeyParseError::Length)?;
            *slot = (acc >> bits) as u8;
            acc &= (1 << bits) - 1;
        }
    }
    // 43 × 6 = 258 bits: 32 bytes and two unused bits, which must be zero.
    if acc != 0 {
        return Err(KeyParseError::NonCanonical);
    }
    Ok(out)
}

fn base64_char(sextet: u8) -> char {
    char::from(match sextet {
        0..=25 => b'A' + sextet,
        26..=51 => b'a' + (sextet - 26),
        52..=61 => b'0' + (sextet - 52),
        62 => b'+',
        _ => b'/',
    })
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::UnixTime;

    const INITIATOR_LEASE: &[u8] = b"initiator lease";
    const RESPONDER_LEASE: &[u8] = b"responder lease";

    fn rng(seed: u8) -> ChaCha20Rng {
        ChaCha20Rng::from_seed([seed; 32])
    }

    fn initiator_payload() -> HandshakePayload<'static> {
        HandshakePayload {
            spi: 0x1000_0001,
            timestamp: UnixTime::from_secs(1_700_000_000).tai64n(),
            lease: INITIATOR_LEASE,
        }
    }

    fn responder_payload() -> HandshakePayload<'static> {
        HandshakePayload {
            spi: 0x2000_0002,
            timestamp: UnixTime::from_secs(1_700_000_001).tai64n(),
            lease: RESPONDER_LEASE,
        }
    }

    fn keypairs() -> (StaticKeypair, StaticKeypair) {
        let initiator = StaticKeypair::from_private(core::array::from_fn(|i| i as u8 + 0x01));
        let responder = StaticKeypair::from_private(core::array::from_fn(|i| i as u8 + 0x41));
        (initiator, responder)
    }

    /// Message 1 from the fixed initiator to the fixed responder.
    fn initiation(psk: Option<&Psk>, seed: u8) -> (InitiatorHandshake, Vec<u8>) {
        let (initiator, responder) = keypairs();
        let mut msg = vec![0u8; MAX_INITIATION_LEN];
        let (hs, len) = InitiatorHandshake::start(
            &initiator,
            &responder.public(),
            psk,
            &initiator_payload(),
            &mut rng(seed),
            &mut msg,
        )
        .unwrap();
        msg.truncate(len);
        (hs, msg)
    }

    /// Runs both sides; returns (message 1, message 2, initiator keys,
    /// responder keys).
    fn full_handshake(
        initiator_psk: Option<&Psk>,
        responder_psk: Option<&Psk>,
        seeds: (u8, u8),
    ) -> Result<(Vec<u8>, Vec<u8>, SaKeys, SaKeys), HandshakeError> {
        let (initiator, responder) = keypairs();
        let (mut hs, msg1) = initiation(initiator_psk, seeds.0);
        assert_eq!(msg1.len(), initiation_len(INITIATOR_LEASE.len()));

        let (pending, initiator_key, received) =
            ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(seeds.1))?;
        assert_eq!(initiator_key, initiator.public());
        assert_eq!(received.spi, 0x1000_0001);
        assert_eq!(received.timestamp, initiator_payload().timestamp);
        assert_eq!(received.lease, INITIATOR_LEASE);

        let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
        let (len, responder_keys) =
            pending.write_response(responder_psk, &responder_payload(), &mut msg2)?;
        msg2.truncate(len);
        assert_eq!(len, response_len(RESPONDER_LEASE.len()));

        let (received, initiator_keys) = hs.finish(&msg2)?;
        assert_eq!(received.spi, 0x2000_0002);
        assert_eq!(received.timestamp, responder_payload().timestamp);
        assert_eq!(received.lease, RESPONDER_LEASE);
        Ok((msg1, msg2, initiator_keys, responder_keys))
    }

    #[test]
    fn handshake_completes_and_keys_mirror() {
        let psk = Psk::from_bytes([0x5a; 32]);
        for psk in [None, Some(&psk)] {
            let (_, _, i, r) = full_handshake(psk, psk, (1, 2)).unwrap();
            assert_eq!(i.outbound, r.inbound);
            assert_eq!(i.inbound, r.outbound);
            assert_ne!(i.outbound, i.inbound);
        }
    }

    #[test]
    fn psk_changes_the_keys() {
        let psk = Psk::from_bytes([0x5a; 32]);
        let (_, _, without, _) = full_handshake(None, None, (1, 2)).unwrap();
        let (_, _, with, _) = full_handshake(Some(&psk), Some(&psk), (1, 2)).unwrap();
        assert_ne!(without.outbound, with.outbound);
        // An explicit all-zero PSK is the same as none.
        let zero = Psk::from_bytes([0; 32]);
        let (_, _, zero_keys, _) = full_handshake(Some(&zero), None, (1, 2)).unwrap();
        assert_eq!(zero_keys, without);
    }

    #[test]
    fn mismatched_psk_fails_at_the_initiator() {
        let a = Psk::from_bytes([0x5a; 32]);
        let b = Psk::from_bytes([0xa5; 32]);
        let cases: [(Option<&Psk>, Option<&Psk>); 3] =
            [(Some(&a), Some(&b)), (Some(&a), None), (None, Some(&b))];
        for (initiator_psk, responder_psk) in cases {
            assert_eq!(
                full_handshake(initiator_psk, responder_psk, (1, 2)).unwrap_err(),
                HandshakeError::Decrypt
            );
        }
    }

    #[test]
    fn initiation_to_the_wrong_responder_fails() {
        let (_, msg1) = initiation(None, 1);
        let other = StaticKeypair::from_private([0x77; 32]);
        let err = ResponderHandshake::read_initiation(&other, &msg1, &mut rng(2)).unwrap_err();
        assert_eq!(err, HandshakeError::Decrypt);
    }

    #[test]
    fn every_tampered_byte_of_message_1_is_refused() {
        let (_, responder) = keypairs();
        let (_, msg1) = initiation(None, 1);
        for i in 0..msg1.len() {
            let mut bad = msg1.clone();
            bad[i] ^= 0x01;
            let err = ResponderHandshake::read_initiation(&responder, &bad, &mut rng(2));
            assert_eq!(err.unwrap_err(), HandshakeError::Decrypt, "byte {i}");
        }
    }

    #[test]
    fn every_tampered_byte_of_message_2_is_refused_and_the_genuine_one_still_works() {
        let (_, responder) = keypairs();
        let (mut hs, msg1) = initiation(None, 1);
        let (pending, _, _) =
            ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(2)).unwrap();
        let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
        let (len, responder_keys) = pending
            .write_response(None, &responder_payload(), &mut msg2)
            .unwrap();
        msg2.truncate(len);
        for i in 0..msg2.len() {
            let mut bad = msg2.clone();
            bad[i] ^= 0x80;
            assert_eq!(
                hs.finish(&bad).unwrap_err(),
                HandshakeError::Decrypt,
                "byte {i}"
            );
        }
        let (_, initiator_keys) = hs.finish(&msg2).unwrap();
        assert_eq!(initiator_keys.outbound, responder_keys.inbound);
        assert_eq!(
            hs.finish(&msg2).unwrap_err(),
            HandshakeError::UnexpectedState
        );
    }

    /// Every point of small order (every X25519 result with it is zero),
    /// also with the ignored high bit set, as the initiator's ephemeral key.
    #[test]
    fn low_order_ephemeral_is_refused() {
        let (_, responder) = keypairs();
        let (_, msg1) = initiation(None, 1);
        let low_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        for hex in low_order {
            let mut point: [u8; 32] = hex_array(hex);
            for high_bit in [0, 0x80] {
                point[31] |= high_bit;
                let mut bad = msg1.clone();
                bad[..32].copy_from_slice(&point);
                let err = ResponderHandshake::read_initiation(&responder, &bad, &mut rng(2));
                assert_eq!(err.unwrap_err(), HandshakeError::LowOrderKey, "{hex}");
            }
        }
        assert_eq!(ss_cache_len(&responder), 0);
    }

    /// A zeroized key pair refuses to handshake (a local fault, not the
    /// peer's) instead of using an all-zero key.
    #[test]
    fn zeroized_keypair_cannot_handshake() {
        let (mut initiator, responder) = keypairs();
        initiator.zeroize();
        let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
        let err = InitiatorHandshake::start(
            &initiator,
            &responder.public(),
            None,
            &initiator_payload(),
            &mut rng(1),
            &mut msg1,
        );
        assert_eq!(err.unwrap_err(), HandshakeError::Setup);
    }

    #[test]
    fn message_lengths_are_checked_before_noise() {
        let (_, responder) = keypairs();
        let (mut hs, msg1) = initiation(None, 1);
        let cases: [(&[u8], HandshakeError); 3] = [
            (&[], HandshakeError::MessageTooShort),
            (
                &msg1[..MIN_INITIATION_LEN - 1],
                HandshakeError::MessageTooShort,
            ),
            (
                &[0u8; MAX_INITIATION_LEN + 1],
                HandshakeError::MessageTooLong,
            ),
        ];
        for (msg, want) in cases {
            let err = ResponderHandshake::read_initiation(&responder, msg, &mut rng(2));
            assert_eq!(err.unwrap_err(), want);
        }
        assert_eq!(
            hs.finish(&[0u8; MIN_RESPONSE_LEN - 1]).unwrap_err(),
            HandshakeError::MessageTooShort
        );
        assert_eq!(
            hs.finish(&[0u8; MAX_RESPONSE_LEN + 1]).unwrap_err(),
            HandshakeError::MessageTooLong
        );
    }

    #[test]
    fn output_buffers_too_small_are_reported() {
        let (initiator, responder) = keypairs();
        let mut small = [0u8; MIN_INITIATION_LEN];
        let err = InitiatorHandshake::start(
            &initiator,
            &responder.public(),
            None,
            &initiator_payload(),
            &mut rng(1),
            &mut small,
        );
        assert_eq!(err.unwrap_err(), HandshakeError::BufferTooSmall);

        let (_, msg1) = initiation(None, 1);
        let (pending, _, _) =
            ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(2)).unwrap();
        let mut small = [0u8; MIN_RESPONSE_LEN];
        let err = pending.write_response(None, &responder_payload(), &mut small);
        assert_eq!(err.unwrap_err(), HandshakeError::BufferTooSmall);
    }

    #[test]
    fn invalid_local_payload_is_refused_before_noise() {
        let (initiator, responder) = keypairs();
        let long_lease = [0u8; MAX_LEASE_LEN + 1];
        let cases = [
            (
                HandshakePayload {
                    spi: 0xff,
                    ..initiator_payload()
                },
                PayloadError::ReservedSpi,
            ),
            (
                HandshakePayload {
                    lease: &long_lease,
                    ..initiator_payload()
                },
                PayloadError::LeaseTooLong,
            ),
        ];
        for (payload, want) in cases {
            let mut out = [0u8; 2 * MAX_INITIATION_LEN];
            let err = InitiatorHandshake::start(
                &initiator,
                &responder.public(),
                None,
                &payload,
                &mut rng(1),
                &mut out,
            );
            assert_eq!(err.unwrap_err(), HandshakeError::Payload(want));
        }
    }

    #[test]
    fn ephemeral_keys_come_from_the_callers_rng() {
        let (_, a) = initiation(None, 1);
        let (_, b) = initiation(None, 1);
        let (_, c) = initiation(None, 9);
        assert_eq!(a, b);
        assert_ne!(a[..32], c[..32]);
    }

    /// Known answers produced by `tests/vectors/handshake-ikpsk2-gen.py`, an
    /// independent Python implementation of Noise IKpsk2 and of our payload
    /// and key derivation. Any change of pattern, prologue, payload layout,
    /// RNG plumbing or KDF breaks this test.
    #[test]
    fn full_handshake_known_answers() {
        let text = include_str!("../tests/vectors/handshake-ikpsk2.txt");
        let mut cases = 0;
        for section in text.split("\n[").skip(1) {
            let field = |name: &str| -> Vec<u8> {
                let line = section
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(" = "))
                    .unwrap_or_else(|| panic!("missing {name}"));
                hex::decode(line).unwrap()
            };
            let array = |name: &str| -> [u8; 32] { field(name).try_into().unwrap() };
            let seed = |name: &str| ChaCha20Rng::from_seed(array(name));

            let initiator = StaticKeypair::from_private(array("initiator_private"));
            let responder = StaticKeypair::from_private(array("responder_private"));
            let psk = Psk::from_bytes(array("psk"));

            let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
            let (mut hs, len) = InitiatorHandshake::start(
                &initiator,
                &responder.public(),
                Some(&psk),
                &initiator_payload(),
                &mut seed("initiator_rng_seed"),
                &mut msg1,
            )
            .unwrap();
            assert_eq!(msg1[..len], field("initiation"));

            let (pending, _, _) = ResponderHandshake::read_initiation(
                &responder,
                &msg1[..len],
                &mut seed("responder_rng_seed"),
            )
            .unwrap();
            let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
            let (len, responder_keys) = pending
                .write_response(Some(&psk), &responder_payload(), &mut msg2)
                .unwrap();
            assert_eq!(msg2[..len], field("response"));

            let (_, keys) = hs.finish(&msg2[..len]).unwrap();
            assert_eq!(keys.outbound.key[..], field("i2r_key"));
            assert_eq!(keys.outbound.salt[..], field("i2r_salt"));
            assert_eq!(keys.inbound.key[..], field("r2i_key"));
            assert_eq!(keys.inbound.salt[..], field("r2i_salt"));
            assert_eq!(responder_keys.outbound, keys.inbound);
            assert_eq!(responder_keys.inbound, keys.outbound);
            cases += 1;
        }
        assert_eq!(cases, 2);
    }

    /// Expected bytes computed independently with Python's `hmac`/`hashlib`
    /// (RFC 5869 HKDF-SHA256: PRK = HMAC(salt = hash, ikm), T1 = HMAC(PRK,
    /// info ‖ 01), T2 = HMAC(PRK, T1 ‖ info ‖ 02), first 36 bytes) on
    /// k_i2r = 00..1f, k_r2i = 20..3f, handshake hash = 40..5f.
    #[test]
    fn derive_sa_keys_known_answer() {
        let k_i2r: [u8; 32] = core::array::from_fn(|i| i as u8);
        let k_r2i: [u8; 32] = core::array::from_fn(|i| i as u8 + 0x20);
        let hash: [u8; 32] = core::array::from_fn(|i| i as u8 + 0x40);
        let i2r = EspKeyMaterial {
            key: hex_array("c854676467e493d1ecd4cff8068e845ebcee16883eebb61fd9bd60a6d4243e18"),
            salt: hex_array("e7ed454c"),
        };
        let r2i = EspKeyMaterial {
            key: hex_array("2dc135eb1498a9f16bed57724773b6b5f04c2f16499d915780387a40a8344461"),
            salt: hex_array("df804b4d"),
        };
        let initiator = derive_sa_keys(Role::Initiator, &k_i2r, &k_r2i, &hash);
        assert_eq!(initiator.outbound, i2r);
        assert_eq!(initiator.inbound, r2i);
        let responder = derive_sa_keys(Role::Responder, &k_i2r, &k_r2i, &hash);
        assert_eq!(responder.outbound, r2i);
        assert_eq!(responder.inbound, i2r);
    }

    fn hex_array<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn payload_round_trips() {
        let lease = [0xabu8; MAX_LEASE_LEN];
        for lease in [&[][..], INITIATOR_LEASE, &lease[..]] {
            let payload = HandshakePayload {
                spi: MIN_SPI,
                timestamp: UnixTime::from_secs(42).tai64n(),
                lease,
            };
            let mut buf = vec![0u8; MAX_PAYLOAD_LEN + 1];
            let len = payload.emit(&mut buf).unwrap();
            assert_eq!(len, payload.buffer_len());
            let parsed = ReceivedPayload::parse(&buf[..len]).unwrap();
            assert_eq!(parsed.spi, payload.spi);
            assert_eq!(parsed.timestamp, payload.timestamp);
            assert_eq!(parsed.lease, lease);
        }
    }

    #[test]
    fn payload_wire_layout() {
        let payload = HandshakePayload {
            spi: 0x0102_0304,
            timestamp: Tai64N([0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0x05]),
            lease: &[0xaa, 0xbb],
        };
        let mut buf = [0u8; 20];
        assert_eq!(payload.emit(&mut buf), Ok(20));
        assert_eq!(
            buf,
            [
                0x01, 0x02, 0x03, 0x04, 0x40, 0, 0, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0x05, 0x00, 0x02,
                0xaa, 0xbb
            ]
        );
        assert_eq!(
            payload.emit(&mut [0u8; 19]),
            Err(PayloadError::BufferTooSmall)
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        let mut good = vec![0x00, 0x00, 0x01, 0x00];
        good.extend_from_slice(&[0u8; 12]);
        good.extend_from_slice(&[0x00, 0x02, 0xaa, 0xbb]);
        assert!(ReceivedPayload::parse(&good).is_ok());

        let with = |i: usize, b: u8| {
            let mut v = good.clone();
            v[i] = b;
            v
        };
        let mut trailing = good.clone();
        trailing.push(0);
        let mut long = good[..16].to_vec();
        long.extend_from_slice(&[0x08, 0x01]);
        long.extend_from_slice(&[0u8; 0x801]);
        let cases: Vec<(Vec<u8>, PayloadError)> = vec![
            (vec![], PayloadError::Truncated),
            (good[..3].to_vec(), PayloadError::Truncated),
            (good[..17].to_vec(), PayloadError::Truncated),
            (good[..19].to_vec(), PayloadError::Truncated),
            (trailing, PayloadError::TrailingBytes),
            (with(2, 0x00), PayloadError::ReservedSpi),
            (with(17, 0x03), PayloadError::Truncated),
            (long, PayloadError::LeaseTooLong),
        ];
        for (bytes, want) in cases {
            assert_eq!(ReceivedPayload::parse(&bytes), Err(want), "{bytes:02x?}");
        }
    }

    /// RFC 7748 §6.1 Alice's key pair.
    #[test]
    fn static_keypair_derives_the_rfc7748_public_key() {
        let kp = StaticKeypair::from_private(hex_array(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        assert_eq!(
            kp.public().0,
            hex_array::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            kp.public().to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
        let debug = format!("{kp:?}");
        assert!(debug.contains("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="));
        assert!(!debug.contains("dwdt"), "{debug}");
        assert!(!debug.to_lowercase().contains("77076d0a"));
        assert_eq!(format!("{:?}", Psk::from_bytes([7; 32])), "Psk(..)");
    }

    fn ss_cache_len(kp: &StaticKeypair) -> usize {
        kp.ss_cache.lock().unwrap().len()
    }

    fn ss_cached(kp: &StaticKeypair, remote: &PublicKey) -> Option<[u8; 32]> {
        kp.ss_cache.lock().unwrap().shared(&remote.0).map(|s| *s)
    }

    /// DH(local static, remote static) by the Montgomery ladder.
    fn ss_by_ladder(kp: &StaticKeypair, remote: &PublicKey) -> [u8; 32] {
        x25519_dalek::StaticSecret::from(kp.private)
            .diffie_hellman(&x25519_dalek::PublicKey::from(remote.0))
            .to_bytes()
    }

    #[test]
    fn only_the_ss_dh_may_be_answered_from_the_cache() {
        let local = StaticKeypair::from_private([0x31; 32]);
        let (remote_static, other) = ([0x42; 32], [0x43; 32]);
        // Responder: `es` (first static DH) never, `ss` (second) yes.
        let responder = HandshakeKeys::new(&local, SsToken::SecondStaticDh);
        assert!(!responder.is_ss(&remote_static));
        assert!(responder.is_ss(&remote_static));
        assert!(!responder.is_ss(&remote_static));
        // Initiator: only the DH with the responder's known static key.
        let initiator = HandshakeKeys::new(&local, SsToken::RemoteStatic(remote_static));
        assert!(!initiator.is_ss(&other));
        assert!(initiator.is_ss(&remote_static));
    }

    #[test]
    fn static_static_results_are_cached_after_authentication_only() {
        let (initiator, responder) = keypairs();
        let (_, msg1) = initiation(None, 1);
        // Tampered initiations add nothing.
        let mut bad = msg1.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(ResponderHandshake::read_initiation(&responder, &bad, &mut rng(2)).is_err());
        assert_eq!(ss_cache_len(&responder), 0);

        let (pending, initiator_key, _) =
            ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(2)).unwrap();
        // Exactly `ss`, not `es` (with the initiator's ephemeral key).
        assert_eq!(ss_cache_len(&responder), 1);
        assert_eq!(
            ss_cached(&responder, &initiator_key),
            Some(ss_by_ladder(&responder, &initiator.public()))
        );
        let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
        pending
            .write_response(None, &responder_payload(), &mut msg2)
            .unwrap();
        assert_eq!(ss_cache_len(&responder), 1);
    }

    #[test]
    fn initiator_caches_its_static_static_result() {
        let (initiator, responder) = keypairs();
        let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
        let (mut hs, len) = InitiatorHandshake::start(
            &initiator,
            &responder.public(),
            None,
            &initiator_payload(),
            &mut rng(1),
            &mut msg1,
        )
        .unwrap();
        assert_eq!(ss_cache_len(&initiator), 1);
        assert_eq!(
            ss_cached(&initiator, &responder.public()),
            Some(ss_by_ladder(&initiator, &responder.public()))
        );
        let (pending, _, _) =
            ResponderHandshake::read_initiation(&responder, &msg1[..len], &mut rng(2)).unwrap();
        let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
        let (len, _) = pending
            .write_response(None, &responder_payload(), &mut msg2)
            .unwrap();
        hs.finish(&msg2[..len]).unwrap();
        // `se` (with the responder's ephemeral key) is not cached.
        assert_eq!(ss_cache_len(&initiator), 1);
    }

    /// A warm cache changes no byte: the same seeds give the same messages
    /// and keys as with fresh key pairs, for many handshakes in a row.
    #[test]
    fn cached_handshakes_give_the_same_bytes() {
        let (initiator, responder) = keypairs();
        let psk = Psk::from_bytes([0x5a; 32]);
        for round in 0..4u8 {
            let mut results = Vec::new();
            for (i, r) in [(initiator.clone(), responder.clone()), keypairs()] {
                let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
                let (mut hs, len) = InitiatorHandshake::start(
                    &i,
                    &r.public(),
                    Some(&psk),
                    &initiator_payload(),
                    &mut rng(round),
                    &mut msg1,
                )
                .unwrap();
                msg1.truncate(len);
                let (pending, _, _) =
                    ResponderHandshake::read_initiation(&r, &msg1, &mut rng(round + 100)).unwrap();
                let mut msg2 = vec![0u8; MAX_RESPONSE_LEN];
                let (len, responder_keys) = pending
                    .write_response(Some(&psk), &responder_payload(), &mut msg2)
                    .unwrap();
                msg2.truncate(len);
                let (_, initiator_keys) = hs.finish(&msg2).unwrap();
                results.push((msg1, msg2, initiator_keys, responder_keys));
            }
            assert_eq!(results[0], results[1], "round {round}");
        }
        // The clones shared the originals' caches.
        assert_eq!(ss_cache_len(&initiator), 1);
        assert_eq!(ss_cache_len(&responder), 1);
    }

    #[test]
    fn many_initiators_stay_within_the_cache_capacity() {
        let (_, responder) = keypairs();
        let mut r = rng(3);
        for _ in 0..3 {
            let initiator = StaticKeypair::generate(&mut r);
            let mut msg1 = vec![0u8; MAX_INITIATION_LEN];
            let (_, len) = InitiatorHandshake::start(
                &initiator,
                &responder.public(),
                None,
                &initiator_payload(),
                &mut r,
                &mut msg1,
            )
            .unwrap();
            let (_, key, _) =
                ResponderHandshake::read_initiation(&responder, &msg1[..len], &mut r).unwrap();
            assert_eq!(
                ss_cached(&responder, &key),
                Some(ss_by_ladder(&responder, &key))
            );
        }
        assert_eq!(ss_cache_len(&responder), 3);
        assert!(ss_cache_len(&responder) <= SS_CACHE_CAPACITY);
    }

    #[test]
    fn zeroizing_a_keypair_clears_and_detaches_its_cache() {
        let (initiator, responder) = keypairs();
        let mut clone = responder.clone();
        let (_, msg1) = initiation(None, 1);
        ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(2)).unwrap();
        assert_eq!(ss_cache_len(&clone), 1);
        clone.zeroize();
        assert_eq!(clone.private_bytes(), &[0; 32]);
        assert_eq!(ss_cache_len(&responder), 0);
        assert!(!Arc::ptr_eq(&clone.ss_cache, &responder.ss_cache));
        // The original still works and refills its cache.
        ResponderHandshake::read_initiation(&responder, &msg1, &mut rng(2)).unwrap();
        assert_eq!(
            ss_cached(&responder, &initiator.public()),
            Some(ss_by_ladder(&responder, &initiator.public()))
        );
        assert_eq!(ss_cache_len(&clone), 0);
    }

    #[test]
    fn handshake_types_are_send_and_keypairs_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<StaticKeypair>();
        send::<InitiatorHandshake>();
        send::<ResponderHandshake>();
    }

    #[test]
    fn generated_keypairs_are_distinct_and_consistent() {
        let mut r = rng(5);
        let a = StaticKeypair::generate(&mut r);
        let b = StaticKeypair::generate(&mut r);
        assert_ne!(a.public(), b.public());
        assert_eq!(
            StaticKeypair::from_private(*a.private_bytes()).public(),
            a.public()
        );
    }

    /// Encodings checked against Python's `base64.b64encode`.
    #[test]
    fn public_keys_parse_and_print_as_base64() {
        let cases: [([u8; 32], &str); 3] = [
            (
                core::array::from_fn(|i| i as u8 + 1),
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=",
            ),
            ([0xff; 32], "//////////////////////////////////////////8="),
            ([0; 32], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ];
        for (bytes, text) in cases {
            assert_eq!(PublicKey(bytes).to_string(), text);
            assert_eq!(
                format!("{:?}", PublicKey(bytes)),
                format!("PublicKey({text})")
            );
            assert_eq!(text.parse::<PublicKey>(), Ok(PublicKey(bytes)));
        }
        let bad = [
            ("", KeyParseError::Length),
            (
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
                KeyParseError::Length,
            ),
            (
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA==",
                KeyParseError::Length,
            ),
            (
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAA",
                KeyParseError::Length,
            ),
            (
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHy-=",
                KeyParseError::Character,
            ),
            (
                "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyB=",
                KeyParseError::NonCanonical,
            ),
        ];
        for (text, want) in bad {
            assert_eq!(text.parse::<PublicKey>(), Err(want), "{text}");
        }
        assert!("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
            .parse::<Psk>()
            .is_ok());
    }

    #[test]
    fn error_labels_are_distinct() {
        let errors = [
            HandshakeError::MessageTooShort,
            HandshakeError::MessageTooLong,
            HandshakeError::Decrypt,
            HandshakeError::LowOrderKey,
            HandshakeError::MalformedMessage,
            HandshakeError::Payload(PayloadError::Truncated),
            HandshakeError::Payload(PayloadError::TrailingBytes),
            HandshakeError::Payload(PayloadError::ReservedSpi),
            HandshakeError::Payload(PayloadError::LeaseTooLong),
            HandshakeError::Payload(PayloadError::BufferTooSmall),
            HandshakeError::BufferTooSmall,
            HandshakeError::UnexpectedState,
            HandshakeError::Setup,
        ];
        let labels: std::collections::HashSet<_> = errors.iter().map(|e| e.as_str()).collect();
        assert_eq!(labels.len(), errors.len());
    }
}
