//! Ed25519-signed leases: the authority's statement that an X25519 static
//! key speaks for an entity and its permanent address or prefix.
//!
//! `addrd` (the lease authority) signs a [`Lease`] binding an entity's name,
//! directory DN, kind, permanent IPv6 address (a /128 for users and
//! applications, the /64 system virtual network for a system), X25519 public
//! key, groups and validity window. Leases travel inside handshakes and in
//! netmaps; any `tunneld` verifies them offline with the authority's public
//! key ([`SignedLease::verify`]). After an SA is authenticated by a lease,
//! every decrypted packet's inner source must pass
//! [`Lease::contains_source`] (cryptokey routing).
//!
//! The binary format v1 is fixed-layout, big-endian, and documented byte by
//! byte in `docs/wire-format.md`; the committed vectors under
//! `overlay-proto/tests/vectors/` pin it. The signature is pure Ed25519 over
//! a domain-separation context followed by every byte before the signature,
//! and verification uses `verify_strict` (no small-order keys, canonical
//! `S`). Parsing refuses anything not produced by a conforming signer, even
//! when the signature is good.
#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use ipnet::Ipv6Net;
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::time::UnixTime;

/// The four magic bytes that start a v1 lease: `"PNL1"`.
pub const MAGIC: [u8; 4] = *b"PNL1";

/// The format version this module reads and writes.
pub const VERSION: u8 = 0x01;

/// What the signature covers first: `"permanet-lease-v1"` and a NUL byte.
/// It keeps a lease signature from being valid for any other message the
/// same Ed25519 key might ever sign.
pub const SIGNATURE_CONTEXT: &[u8; 18] = b"permanet-lease-v1\0";

/// Length of the authority key id: the first 8 bytes of SHA-256 of the
/// authority's Ed25519 public key.
pub const KEY_ID_LEN: usize = 8;

/// Length of the Ed25519 signature at the end.
pub const SIGNATURE_LEN: usize = 64;

/// Largest encoded lease, signature included. The handshake carries the
/// lease, so this bounds the handshake messages; it is enforced on emit and
/// on parse.
pub const MAX_LEASE_LEN: usize = 2048;

/// Longest entity name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Longest directory DN, in bytes of UTF-8.
pub const MAX_DN_LEN: usize = 1024;

/// Most groups a lease may list.
pub const MAX_GROUPS: usize = 64;

/// Longest group name, in bytes of UTF-8.
pub const MAX_GROUP_LEN: usize = 255;

/// How far a verifier's clock may lag the authority's: a lease is accepted
/// up to this long before its `not_before`. `not_after` gets no tolerance.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Bytes before the variable-length fields: magic (4), version (1), kind (1),
/// flags (2), serial (8), not_before (8), not_after (8), key id (8), public
/// key (32), address (16), prefix length (1).
const FIXED_LEN: usize = 89;

/// Why a lease was refused. Each variant is a separate counter;
/// [`LeaseError::as_str`] is its stable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The bytes end before a field the lease must contain.
    #[error("truncated lease")]
    Truncated,
    /// The lease is longer than [`MAX_LEASE_LEN`].
    #[error("lease longer than {MAX_LEASE_LEN} bytes")]
    TooLong,
    /// There are bytes after the signature.
    #[error("trailing bytes after the lease signature")]
    TrailingBytes,
    /// The bytes do not start with `"PNL1"`.
    #[error("not a permanet lease (bad magic)")]
    BadMagic,
    /// The version byte is not 1.
    #[error("unsupported lease version {0}")]
    UnsupportedVersion(u8),
    /// The entity kind byte is not 1, 2 or 3.
    #[error("unknown entity kind {0}")]
    UnknownKind(u8),
    /// The flags field is not zero.
    #[error("non-zero lease flags")]
    NonZeroFlags,
    /// `not_after` is not after `not_before`.
    #[error("lease validity window is empty")]
    InvalidWindow,
    /// The X25519 public key is all zeros.
    #[error("invalid entity public key")]
    BadPublicKey,
    /// The prefix length does not fit the kind, host bits are set, or the
    /// address is unspecified, loopback, link-local or multicast.
    #[error("invalid lease address or prefix")]
    BadPrefix,
    /// The name is empty, too long or has characters outside `[a-z0-9._-]`
    /// (or starts with `-` or `.`).
    #[error("invalid entity name")]
    BadName,
    /// The DN is empty, too long, not UTF-8 or has control characters.
    #[error("invalid entity DN")]
    BadDn,
    /// A group name is empty, not UTF-8, or has a comma or control character.
    #[error("invalid group name")]
    BadGroup,
    /// A group is listed twice.
    #[error("group listed twice")]
    DuplicateGroup,
    /// More than [`MAX_GROUPS`] groups.
    #[error("more than {MAX_GROUPS} groups")]
    TooManyGroups,
    /// The authority public key is not a valid Ed25519 point or is weak.
    #[error("invalid authority public key")]
    BadAuthorityKey,
    /// The lease names a different authority key than the one given.
    #[error("lease signed by an unknown authority")]
    UnknownAuthority,
    /// The Ed25519 signature does not verify.
    #[error("bad lease signature")]
    BadSignature,
    /// `now` is before `not_before` by more than [`CLOCK_SKEW`].
    #[error("lease not yet valid")]
    NotYetValid,
    /// `now` is at or after `not_after`.
    #[error("lease expired")]
    Expired,
}

impl LeaseError {
    /// A stable snake_case label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseError::Truncated => "truncated",
            LeaseError::TooLong => "too_long",
            LeaseError::TrailingBytes => "trailing_bytes",
            LeaseError::BadMagic => "bad_magic",
            LeaseError::UnsupportedVersion(_) => "unsupported_version",
            LeaseError::UnknownKind(_) => "unknown_kind",
            LeaseError::NonZeroFlags => "non_zero_flags",
            LeaseError::InvalidWindow => "invalid_window",
            LeaseError::BadPublicKey => "bad_public_key",
            LeaseError::BadPrefix => "bad_prefix",
            LeaseError::BadName => "bad_name",
            LeaseError::BadDn => "bad_dn",
            LeaseError::BadGroup => "bad_group",
            LeaseError::DuplicateGroup => "duplicate_group",
            LeaseError::TooManyGroups => "too_many_groups",
            LeaseError::BadAuthorityKey => "bad_authority_key",
            LeaseError::UnknownAuthority => "unknown_authority",
            LeaseError::BadSignature => "bad_signature",
            LeaseError::NotYetValid => "not_yet_valid",
            LeaseError::Expired => "expired",
        }
    }
}

/// What kind of directory entry a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntityKind {
    /// A person; leased a /128 under the home prefix's user subnet.
    User = 0x01,
    /// An application on a server; leased a /128 in its system's SVN.
    Application = 0x02,
    /// A server system; leased its whole /64 system virtual network.
    System = 0x03,
}

impl EntityKind {
    /// The prefix length a lease of this kind must have.
    pub const fn prefix_len(self) -> u8 {
        match self {
            EntityKind::User | EntityKind::Application => 128,
            EntityKind::System => 64,
        }
    }

    /// A stable lowercase label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Application => "application",
            EntityKind::System => "system",
        }
    }
}

impl TryFrom<u8> for EntityKind {
    type Error = LeaseError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0x01 => Ok(EntityKind::User),
            0x02 => Ok(EntityKind::Application),
            0x03 => Ok(EntityKind::System),
            other => Err(LeaseError::UnknownKind(other)),
        }
    }
}

impl From<EntityKind> for u8 {
    fn from(value: EntityKind) -> Self {
        value as u8
    }
}

/// The statement an authority signs: this X25519 key speaks for this entity
/// and these addresses, in this window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// User, application or system.
    pub kind: EntityKind,
    /// Authority-assigned serial; a renewal carries a higher one.
    pub serial: u64,
    /// Start of validity. Whole seconds on the wire (sub-seconds are
    /// dropped when signing).
    pub not_before: UnixTime,
    /// End of validity (exclusive). Whole seconds on the wire.
    pub not_after: UnixTime,
    /// The entity's X25519 static public key.
    pub public_key: [u8; 32],
    /// The permanent address (/128) or system virtual network (/64).
    pub prefix: Ipv6Net,
    /// Short name, e.g. `alice` or `wiki`.
    pub name: String,
    /// The entity's directory DN.
    pub dn: String,
    /// Group names, compared exactly (byte for byte) by [`Lease::is_member`].
    pub groups: Vec<String>,
}

impl Lease {
    /// The cryptokey-routing check: is `source` (the inner source of a
    /// packet decrypted on an SA this lease authenticated) one of this
    /// lease's addresses?
    pub fn contains_source(&self, source: &Ipv6Addr) -> bool {
        self.prefix.contains(source)
    }

    /// The address the entity's name stands for (DNS, SOCKS5): a user's or
    /// application's /128, a system's system address (`::1` of its system
    /// virtual network).
    pub fn address(&self) -> Ipv6Addr {
        match (
            self.kind,
            crate::addr::SystemVirtualNetwork::from_prefix(self.prefix),
        ) {
            (EntityKind::System, Ok(svn)) => svn.system_address(),
            _ => self.prefix.addr(),
        }
    }

    /// Whether the lease lists `group` (exact, case-sensitive match: the
    /// authority writes group names in one canonical form).
    pub fn is_member(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Whether the lease lists any of `groups`.
    pub fn member_of_any(&self, groups: &[impl AsRef<str>]) -> bool {
        groups.iter().any(|g| self.is_member(g.as_ref()))
    }

    /// Whether the lease is valid at `now`: not more than [`CLOCK_SKEW`]
    /// before `not_before`, and before `not_after`.
    pub fn check_validity(&self, now: UnixTime) -> Result<(), LeaseError> {
        if now.saturating_add(CLOCK_SKEW) < self.not_before {
            return Err(LeaseError::NotYetValid);
        }
        if now >= self.not_after {
            return Err(LeaseError::Expired);
        }
        Ok(())
    }

    /// Length of the signed encoding of this lease, signature included.
    pub fn encoded_len(&self) -> usize {
        let groups: usize = self.groups.iter().map(|g| 1 + g.len()).sum();
        FIXED_LEN + 1 + self.name.len() + 2 + self.dn.len() + 1 + groups + SIGNATURE_LEN
    }

    /// Checks every field constraint of format v1 (the same checks a parser
    /// applies): a non-empty window, a non-zero key, a prefix that fits the
    /// kind with zero host bits, well-formed name, DN and groups, and an
    /// encoding no longer than [`MAX_LEASE_LEN`].
    pub fn validate(&self) -> Result<(), LeaseError> {
        if self.not_after.as_secs() <= self.not_before.as_secs() {
            return Err(LeaseError::InvalidWindow);
        }
        if self.public_key == [0u8; 32] {
            return Err(LeaseError::BadPublicKey);
        }
        validate_prefix(self.kind, &self.prefix)?;
        validate_name(&self.name)?;
        validate_dn(&self.dn)?;
        validate_groups(&self.groups)?;
        if self.encoded_len() > MAX_LEASE_LEN {
            return Err(LeaseError::TooLong);
        }
        Ok(())
    }
}

/// Parses a signed lease without checking its signature or validity
/// window, for inspection tools and fuzzing. Never trust the result.
pub fn parse_unverified(bytes: &[u8]) -> Result<Lease, LeaseError> {
    decode(bytes).map(|decoded| decoded.lease)
}

/// The lease authority's Ed25519 signing key (held by `addrd`).
pub struct LeaseAuthority {
    signing_key: SigningKey,
    public: AuthorityKey,
}

impl LeaseAuthority {
    /// The authority with this 32-byte Ed25519 seed (the RFC 8032 private
    /// key). The argument is wiped after use.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let mut seed = seed;
        let signing_key = SigningKey::from_bytes(&seed);
        seed.zeroize();
        let public = AuthorityKey::from_verifying_key(signing_key.verifying_key());
        LeaseAuthority {
            signing_key,
            public,
        }
    }

    /// A new random authority.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut *seed);
        Self::from_seed(*seed)
    }

    /// The seed, for writing the key to a 0600 file. Wiped when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing_key.to_bytes())
    }

    /// The public half, which verifiers are configured with.
    pub fn public_key(&self) -> AuthorityKey {
        self.public
    }

    /// Validates `lease` and signs it. The returned lease is the one the
    /// bytes encode (times truncated to whole seconds).
    pub fn sign(&self, lease: &Lease) -> Result<SignedLease, LeaseError> {
        lease.validate()?;
        let mut bytes = Vec::with_capacity(lease.encoded_len());
        encode_body(lease, &self.public.key_id(), &mut bytes)?;
        let signature = self.signing_key.sign(&signing_input(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        let decoded = decode(&bytes)?;
        Ok(SignedLease {
            lease: decoded.lease,
            authority_key_id: decoded.key_id,
            bytes,
        })
    }
}

impl ZeroizeOnDrop for LeaseAuthority {}

impl fmt::Debug for LeaseAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseAuthority")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An authority's Ed25519 public key, which verifiers trust.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthorityKey {
    key: VerifyingKey,
    id: [u8; KEY_ID_LEN],
}

impl AuthorityKey {
    /// Reads a 32-byte Ed25519 public key; refuses encodings that are not a
    /// curve point and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, LeaseError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| LeaseError::BadAuthorityKey)?;
        if key.is_weak() {
            return Err(LeaseError::BadAuthorityKey);
        }
        Ok(Self::from_verifying_key(key))
    }

    /// The 32-byte public key.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The first 8 bytes of SHA-256 of the public key, as written in leases.
    pub fn key_id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    fn from_verifying_key(key: VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; KEY_ID_LEN];
        for (out, byte) in id.iter_mut().zip(digest.iter()) {
            *out = *byte;
        }
        AuthorityKey { key, id }
    }
}

impl fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthorityKey(")?;
        for byte in self.key.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        write!(f, ")")
    }
}

/// A lease together with the exact signed bytes it was read from (or
/// signed into), ready to be sent in a handshake or netmap.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedLease {
    lease: Lease,
    authority_key_id: [u8; KEY_ID_LEN],
    bytes: Vec<u8>,
}

impl SignedLease {
    /// Parses `bytes`, checks they were signed by `authority`, and checks
    /// the validity window at `now`.
    pub fn verify(
        bytes: &[u8],
        authority: &AuthorityKey,
        now: UnixTime,
    ) -> Result<SignedLease, LeaseError> {
        let signed = Self::verify_signature_only(bytes, authority)?;
        signed.lease.check_validity(now)?;
        Ok(signed)
    }

    /// Parses `bytes` and checks they were signed by `authority`, without
    /// looking at the clock (for tooling and renewal logic, which call
    /// [`Lease::check_validity`] themselves).
    pub fn verify_signature_only(
        bytes: &[u8],
        authority: &AuthorityKey,
    ) -> Result<SignedLease, LeaseError> {
        let decoded = decode(bytes)?;
        if decoded.key_id != authority.key_id() {
            return Err(LeaseError::UnknownAuthority);
        }
        let signature = Signature::from_bytes(&decoded.signature);
        authority
            .key
            .verify_strict(&signing_input(decoded.signed), &signature)
            .map_err(|_| LeaseError::BadSignature)?;
        Ok(SignedLease {
            lease: decoded.lease,
            authority_key_id: decoded.key_id,
            bytes: bytes.to_vec(),
        })
    }

    /// The verified lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The id of the authority key that signed it.
    pub fn authority_key_id(&self) -> [u8; KEY_ID_LEN] {
        self.authority_key_id
    }

    /// The signed encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The signed encoding, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl fmt::Debug for SignedLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedLease")
            .field("lease", &self.lease)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A structurally valid lease split into its parts; nothing verified yet.
struct Decoded<'a> {
    lease: Lease,
    key_id: [u8; KEY_ID_LEN],
    /// Every byte before the signature.
    signed: &'a [u8],
    signature: [u8; SIGNATURE_LEN],
}

fn decode(bytes: &[u8]) -> Result<Decoded<'_>, LeaseError> {
    if bytes.len() > MAX_LEASE_LEN {
        return Err(LeaseError::TooLong);
    }
    let mut r = Reader::new(bytes);
    if r.array::<4>()? != MAGIC {
        return Err(LeaseError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(LeaseError::UnsupportedVersion(version));
    }
    let kind = EntityKind::try_from(r.u8()?)?;
    if r.u16()? != 0 {
        return Err(LeaseError::NonZeroFlags);
    }
    let serial = r.u64()?;
    let not_before = UnixTime::from_secs(r.u64()?);
    let not_after = UnixTime::from_secs(r.u64()?);
    let key_id = r.array::<KEY_ID_LEN>()?;
    let public_key = r.array::<32>()?;
    let address = Ipv6Addr::from(r.array::<16>()?);
    let prefix = Ipv6Net::new(address, r.u8()?).map_err(|_| LeaseError::BadPrefix)?;
    let name_len = usize::from(r.u8()?);
    let name = ascii_or(r.take(name_len)?, LeaseError::BadName)?;
    let dn_len = usize::from(r.u16()?);
    let dn = utf8_or(r.take(dn_len)?, LeaseError::BadDn)?;
    let group_count = usize::from(r.u8()?);
    if group_count > MAX_GROUPS {
        return Err(LeaseError::TooManyGroups);
    }
    let mut groups = Vec::with_capacity(group_count);
    for _ in 0..group_count {
        let len = usize::from(r.u8()?);
        groups.push(utf8_or(r.take(len)?, LeaseError::BadGroup)?);
    }
    let signed_len = r.position();
    let signature = r.array::<SIGNATURE_LEN>()?;
    if !r.is_empty() {
        return Err(LeaseError::TrailingBytes);
    }
    let signed = bytes.get(..signed_len).ok_or(LeaseError::Truncated)?;
    let lease = Lease {
        kind,
        serial,
        not_before,
        not_after,
        public_key,
        prefix,
        name,
        dn,
        groups,
    };
    lease.validate()?;
    Ok(Decoded {
        lease,
        key_id,
        signed,
        signature,
    })
}

/// Writes every field before the signature. Lengths that do not fit their
/// length field are refused, so this never truncates even on an
/// unvalidated lease.
fn encode_body(
    lease: &Lease,
    key_id: &[u8; KEY_ID_LEN],
    out: &mut Vec<u8>,
) -> Result<(), LeaseError> {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(lease.kind.into());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&lease.serial.to_be_bytes());
    out.extend_from_slice(&lease.not_before.as_secs().to_be_bytes());
    out.extend_from_slice(&lease.not_after.as_secs().to_be_bytes());
    out.extend_from_slice(key_id);
    out.extend_from_slice(&lease.public_key);
    out.extend_from_slice(&lease.prefix.addr().octets());
    out.push(lease.prefix.prefix_len());
    let name_len = u8::try_from(lease.name.len()).map_err(|_| LeaseError::BadName)?;
    out.push(name_len);
    out.extend_from_slice(lease.name.as_bytes());
    let dn_len = u16::try_from(lease.dn.len()).map_err(|_| LeaseError::BadDn)?;
    out.extend_from_slice(&dn_len.to_be_bytes());
    out.extend_from_slice(lease.dn.as_bytes());
    let group_count = u8::try_from(lease.groups.len()).map_err(|_| LeaseError::TooManyGroups)?;
    out.push(group_count);
    for group in &lease.groups {
        let len = u8::try_from(group.len()).map_err(|_| LeaseError::BadGroup)?;
        out.push(len);
        out.extend_from_slice(group.as_bytes());
    }
    Ok(())
}

/// The message Ed25519 signs: the context, then the lease body.
fn signing_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(SIGNATURE_CONTEXT.len() + body.len());
    input.extend_from_slice(SIGNATURE_CONTEXT);
    input.extend_from_slice(body);
    input
}

fn validate_prefix(kind: EntityKind, prefix: &Ipv6Net) -> Result<(), LeaseError> {
    let addr = prefix.addr();
    let link_local = addr
        .segments()
        .first()
        .is_some_and(|s| s & 0xffc0 == 0xfe80);
    if prefix.prefix_len() != kind.prefix_len()
        || addr != prefix.network()
        || addr.is_unspecified()
        || addr.is_loopback()
        || addr.is_multicast()
        || link_local
    {
        return Err(LeaseError::BadPrefix);
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<(), LeaseError> {
    let bytes = name.as_bytes();
    let allowed = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_');
    match bytes.first() {
        None | Some(b'-' | b'.') => Err(LeaseError::BadName),
        Some(_) if bytes.len() > MAX_NAME_LEN || !bytes.iter().all(allowed) => {
            Err(LeaseError::BadName)
        }
        Some(_) => Ok(()),
    }
}

fn validate_dn(dn: &str) -> Result<(), LeaseError> {
    if dn.is_empty() || dn.len() > MAX_DN_LEN || dn.chars().any(char::is_control) {
        return Err(LeaseError::BadDn);
    }
    Ok(())
}

fn validate_groups(groups: &[String]) -> Result<(), LeaseError> {
    if groups.len() > MAX_GROUPS {
        return Err(LeaseError::TooManyGroups);
    }
    for (i, group) in groups.iter().enumerate() {
        if group.is_empty()
            || group.len() > MAX_GROUP_LEN
            || group.chars().any(|c| c == ',' || c.is_control())
        {
            return Err(LeaseError::BadGroup);
        }
        if groups.iter().take(i).any(|earlier| earlier == group) {
            return Err(LeaseError::DuplicateGroup);
        }
    }
    Ok(())
}

fn ascii_or(bytes: &[u8], error: LeaseError) -> Result<String, LeaseError> {
    if bytes.is_ascii() {
        utf8_or(bytes, error)
    } else {
        Err(error)
    }
}

fn utf8_or(bytes: &[u8], error: LeaseError) -> Result<String, LeaseError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| error)
}

/// Sequential big-endian reader that never panics.
struct Reader<'a> {
    bytes: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, rest: bytes }
    }

    fn position(&self) -> usize {
        self.bytes.len() - self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LeaseError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(LeaseError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LeaseError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(LeaseError::Truncated)?;
        self.rest = tail;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, LeaseError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, LeaseError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, LeaseError> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const AUTHORITY_SEED: [u8; 32] = [0x01; 32];
    const OTHER_SEED: [u8; 32] = [0x09; 32];
    const NOT_BEFORE: u64 = 1_700_000_000;
    const NOT_AFTER: u64 = 1_700_003_600;
    const KEY_ID_OFFSET: usize = 32;

    const VECTORS: [(&str, &str); 3] = [
        (
            "lease-user-v1.hex",
            include_str!("../tests/vectors/lease-user-v1.hex"),
        ),
        (
            "lease-application-v1.hex",
            include_str!("../tests/vectors/lease-application-v1.hex"),
        ),
        (
            "lease-system-v1.hex",
            include_str!("../tests/vectors/lease-system-v1.hex"),
        ),
    ];

    fn authority() -> LeaseAuthority {
        LeaseAuthority::from_seed(AUTHORITY_SEED)
    }

    fn user_lease() -> Lease {
        Lease {
            kind: EntityKind::User,
            serial: 7,
            not_before: UnixTime::from_secs(NOT_BEFORE),
            not_after: UnixTime::from_secs(NOT_AFTER),
            public_key: [0x42; 32],
            prefix: "2002:c000:201:1::a1/128".parse().unwrap(),
            name: "alice".into(),
            dn: "uid=alice,ou=people,dc=example,dc=org".into(),
            groups: vec!["staff".into(), "wap-users".into()],
        }
    }

    fn system_lease() -> Lease {
        Lease {
            kind: EntityKind::System,
            prefix: "2002:c633:6401:1::/64".parse().unwrap(),
            name: "srv1".into(),
            dn: "cn=srv1,ou=systems,dc=example,dc=org".into(),
            groups: vec![],
            ..user_lease()
        }
    }

    fn during() -> UnixTime {
        UnixTime::from_secs(NOT_BEFORE + 10)
    }

    /// Signs a body without validating it, as a buggy or hostile authority
    /// could: the parser must still refuse what v1 forbids.
    fn sign_unchecked(lease: &Lease, authority: &LeaseAuthority) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_body(lease, &authority.public_key().key_id(), &mut bytes).unwrap();
        let signature = authority.signing_key.sign(&signing_input(&bytes));
        bytes.extend_from_slice(&signature.to_bytes());
        bytes
    }

    /// Replaces the signature of (patched) lease bytes with a good one.
    fn resign(bytes: &mut Vec<u8>, authority: &LeaseAuthority) {
        bytes.truncate(bytes.len() - SIGNATURE_LEN);
        let signature = authority.signing_key.sign(&signing_input(bytes));
        bytes.extend_from_slice(&signature.to_bytes());
    }

    /// A committed vector file: `# field: value` inputs and the hex bytes.
    struct Vector {
        name: &'static str,
        fields: BTreeMap<String, Vec<String>>,
        bytes: Vec<u8>,
    }

    impl Vector {
        fn parse(name: &'static str, text: &str) -> Vector {
            let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut hex_text = String::new();
            for line in text.lines() {
                if let Some(comment) = line.strip_prefix('#') {
                    if let Some((key, value)) = comment.trim().split_once(": ") {
                        fields
                            .entry(key.to_owned())
                            .or_default()
                            .push(value.to_owned());
                    }
                } else {
                    hex_text.extend(line.chars().filter(|c| !c.is_whitespace()));
                }
            }
            let bytes = hex::decode(&hex_text).unwrap_or_else(|e| panic!("{name}: bad hex: {e}"));
            Vector {
                name,
                fields,
                bytes,
            }
        }

        fn field(&self, key: &str) -> &str {
            match self.fields.get(key).map(Vec::as_slice) {
                Some([value]) => value,
                other => panic!("{}: want one {key:?} line, got {other:?}", self.name),
            }
        }

        fn hex32(&self, key: &str) -> [u8; 32] {
            hex::decode(self.field(key)).unwrap().try_into().unwrap()
        }

        fn lease(&self) -> Lease {
            let kind = match self.field("kind") {
                "user" => EntityKind::User,
                "application" => EntityKind::Application,
                "system" => EntityKind::System,
                other => panic!("{}: kind {other}", self.name),
            };
            Lease {
                kind,
                serial: self.field("serial").parse().unwrap(),
                not_before: UnixTime::from_secs(self.field("not-before").parse().unwrap()),
                not_after: UnixTime::from_secs(self.field("not-after").parse().unwrap()),
                public_key: self.hex32("public-key"),
                prefix: self.field("prefix").parse().unwrap(),
                name: self.field("name").to_owned(),
                dn: self.field("dn").to_owned(),
                groups: self.fields.get("group").cloned().unwrap_or_default(),
            }
        }
    }

    fn vectors() -> Vec<Vector> {
        VECTORS
            .iter()
            .map(|(name, text)| Vector::parse(name, text))
            .collect()
    }

    #[test]
    fn committed_vectors_match_their_inputs() {
        for v in vectors() {
            let authority = LeaseAuthority::from_seed(v.hex32("authority-seed"));
            let public = authority.public_key();
            assert_eq!(
                public.to_bytes(),
                v.hex32("authority-public-key"),
                "{}",
                v.name
            );
            assert_eq!(
                hex::encode(public.key_id()),
                v.field("authority-key-id"),
                "{}",
                v.name
            );
            let signed = authority.sign(&v.lease()).unwrap();
            assert_eq!(
                hex::encode(signed.as_bytes()),
                hex::encode(&v.bytes),
                "{}: re-emitted bytes differ from the committed vector",
                v.name
            );
        }
    }

    #[test]
    fn committed_vectors_verify() {
        for v in vectors() {
            let key = AuthorityKey::from_bytes(&v.hex32("authority-public-key")).unwrap();
            let lease = v.lease();
            let signed = SignedLease::verify(&v.bytes, &key, lease.not_before).unwrap();
            assert_eq!(signed.lease(), &lease, "{}", v.name);
            assert_eq!(signed.as_bytes(), &v.bytes[..]);
            assert_eq!(
                hex::encode(signed.authority_key_id()),
                v.field("authority-key-id")
            );
            assert_eq!(parse_unverified(&v.bytes).unwrap(), lease);
            assert_eq!(lease.encoded_len(), v.bytes.len());
        }
    }

    /// Reads the user vector by the byte offsets documented in
    /// docs/wire-format.md, without the parser.
    #[test]
    fn user_vector_has_the_documented_layout() {
        let v = vectors().into_iter().next().unwrap();
        let b = &v.bytes;
        assert_eq!(&b[0..4], b"PNL1");
        assert_eq!(b[4], 0x01, "version");
        assert_eq!(b[5], 0x01, "kind user");
        assert_eq!(&b[6..8], &[0, 0], "flags");
        assert_eq!(u64::from_be_bytes(b[8..16].try_into().unwrap()), 1);
        assert_eq!(
            u64::from_be_bytes(b[16..24].try_into().unwrap()),
            NOT_BEFORE
        );
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), NOT_AFTER);
        assert_eq!(hex::encode(&b[32..40]), "34750f98bd59fcfc");
        assert_eq!(&b[40..72], &v.hex32("public-key"));
        assert_eq!(hex::encode(&b[72..88]), "2002c0000201000100000000000000a1");
        assert_eq!(b[88], 128, "prefix_len");
        assert_eq!(b[89], 5, "name_len");
        assert_eq!(&b[90..95], b"alice");
        let dn = "uid=alice,ou=people,dc=example,dc=org";
        assert_eq!(u16::from_be_bytes([b[95], b[96]]), dn.len() as u16);
        let at = 97 + dn.len();
        assert_eq!(&b[97..at], dn.as_bytes());
        assert_eq!(b[at], 2, "group_count");
        assert_eq!(&b[at + 1..at + 7], b"\x05staff");
        assert_eq!(&b[at + 7..at + 17], b"\x09wap-users");
        assert_eq!(b.len(), at + 17 + SIGNATURE_LEN);
    }

    #[test]
    fn sign_then_verify_round_trips_every_kind() {
        let app = Lease {
            kind: EntityKind::Application,
            prefix: "2002:c633:6401:1::80/128".parse().unwrap(),
            name: "wiki".into(),
            ..user_lease()
        };
        for lease in [user_lease(), app, system_lease()] {
            let signed = authority().sign(&lease).unwrap();
            assert_eq!(signed.lease(), &lease);
            let verified =
                SignedLease::verify(signed.as_bytes(), &authority().public_key(), during())
                    .unwrap();
            assert_eq!(verified, signed);
            assert_eq!(verified.into_bytes().len(), lease.encoded_len());
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = authority().sign(&user_lease()).unwrap().into_bytes();
        let key = authority().public_key();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                let result = SignedLease::verify_signature_only(&flipped, &key);
                assert!(result.is_err(), "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = authority().sign(&user_lease()).unwrap().into_bytes();
        let key = authority().public_key();
        for len in 0..bytes.len() {
            assert_eq!(
                parse_unverified(&bytes[..len]),
                Err(LeaseError::Truncated),
                "len {len}"
            );
            assert_eq!(
                SignedLease::verify(&bytes[..len], &key, during()),
                Err(LeaseError::Truncated)
            );
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = authority().sign(&user_lease()).unwrap().into_bytes();
        bytes.push(0x00);
        assert_eq!(parse_unverified(&bytes), Err(LeaseError::TrailingBytes));
        assert_eq!(
            SignedLease::verify(&bytes, &authority().public_key(), during()),
            Err(LeaseError::TrailingBytes)
        );
    }

    #[test]
    fn another_authority_is_unknown() {
        let other = LeaseAuthority::from_seed(OTHER_SEED);
        let bytes = other.sign(&user_lease()).unwrap().into_bytes();
        assert_eq!(
            SignedLease::verify(&bytes, &authority().public_key(), during()),
            Err(LeaseError::UnknownAuthority)
        );
    }

    #[test]
    fn a_borrowed_key_id_does_not_help_a_forger() {
        // Signed by `other`, but claiming the real authority's key id.
        let other = LeaseAuthority::from_seed(OTHER_SEED);
        let mut bytes = authority().sign(&user_lease()).unwrap().into_bytes();
        resign(&mut bytes, &other);
        assert_eq!(
            &bytes[KEY_ID_OFFSET..KEY_ID_OFFSET + KEY_ID_LEN],
            &authority().public_key().key_id()
        );
        assert_eq!(
            SignedLease::verify(&bytes, &authority().public_key(), during()),
            Err(LeaseError::BadSignature)
        );
    }

    #[test]
    fn validity_window_with_skew_on_not_before_only() {
        let bytes = authority().sign(&user_lease()).unwrap().into_bytes();
        let key = authority().public_key();
        let at = |secs: u64| SignedLease::verify(&bytes, &key, UnixTime::from_secs(secs));
        let cases = [
            (0, Err(LeaseError::NotYetValid)),
            (NOT_BEFORE - 61, Err(LeaseError::NotYetValid)),
            (NOT_BEFORE - 60, Ok(())),
            (NOT_BEFORE - 1, Ok(())),
            (NOT_BEFORE, Ok(())),
            (NOT_AFTER - 1, Ok(())),
            (NOT_AFTER, Err(LeaseError::Expired)),
            (NOT_AFTER + 60, Err(LeaseError::Expired)),
            (u64::MAX, Err(LeaseError::Expired)),
        ];
        for (secs, expected) in cases {
            assert_eq!(at(secs).map(|_| ()), expected, "at {secs}");
        }
        // Sub-second precision of `now` counts.
        let just_before_end = UnixTime::from_duration(Duration::new(NOT_AFTER - 1, 999_999_999));
        assert!(SignedLease::verify(&bytes, &key, just_before_end).is_ok());
        let just_too_early = UnixTime::from_duration(Duration::new(NOT_BEFORE - 61, 999_999_999));
        assert_eq!(
            SignedLease::verify(&bytes, &key, just_too_early).err(),
            Some(LeaseError::NotYetValid)
        );
        // The signature-only check ignores the clock.
        assert!(SignedLease::verify_signature_only(&bytes, &key).is_ok());
    }

    #[test]
    fn empty_window_is_refused() {
        for (nb, na) in [(NOT_BEFORE, NOT_BEFORE), (NOT_AFTER, NOT_BEFORE)] {
            let lease = Lease {
                not_before: UnixTime::from_secs(nb),
                not_after: UnixTime::from_secs(na),
                ..user_lease()
            };
            assert_eq!(authority().sign(&lease), Err(LeaseError::InvalidWindow));
            let bytes = sign_unchecked(&lease, &authority());
            assert_eq!(parse_unverified(&bytes), Err(LeaseError::InvalidWindow));
        }
    }

    #[test]
    fn sub_second_times_are_truncated_when_signing() {
        let lease = Lease {
            not_before: UnixTime::from_duration(Duration::new(NOT_BEFORE, 900_000_000)),
            not_after: UnixTime::from_duration(Duration::new(NOT_AFTER, 1)),
            ..user_lease()
        };
        let signed = authority().sign(&lease).unwrap();
        assert_eq!(signed.lease(), &user_lease());
    }

    #[test]
    fn names_are_checked() {
        let long_ok = "a".repeat(MAX_NAME_LEN);
        let too_long = "a".repeat(MAX_NAME_LEN + 1);
        let cases: &[(&str, bool)] = &[
            ("alice", true),
            ("a", true),
            ("0", true),
            ("_svc", true),
            ("a-b.c_d9", true),
            ("a.", true),
            (&long_ok, true),
            ("", false),
            ("Alice", false),
            ("ALICE", false),
            (&too_long, false),
            ("-alice", false),
            (".alice", false),
            ("al ice", false),
            ("al/ice", false),
            ("al@ice", false),
            ("alïce", false),
            ("al\0ice", false),
        ];
        for (name, ok) in cases {
            let lease = Lease {
                name: (*name).to_owned(),
                ..user_lease()
            };
            let expected = if *ok {
                Ok(())
            } else {
                Err(LeaseError::BadName)
            };
            assert_eq!(lease.validate(), expected, "{name:?}");
            assert_eq!(authority().sign(&lease).map(|_| ()), expected, "{name:?}");
            if name.len() <= 255 {
                let bytes = sign_unchecked(&lease, &authority());
                let parsed = SignedLease::verify(&bytes, &authority().public_key(), during());
                assert_eq!(parsed.map(|_| ()), expected, "{name:?}");
            }
        }
    }

    #[test]
    fn dns_are_checked() {
        let long_ok = format!("cn={}", "x".repeat(MAX_DN_LEN - 3));
        let too_long = format!("cn={}", "x".repeat(MAX_DN_LEN - 2));
        let cases: &[(&str, bool)] = &[
            ("uid=alice,ou=people,dc=example,dc=org", true),
            ("cn=Jörg Müller,ou=people,dc=example,dc=org", true),
            (&long_ok, true),
            ("", false),
            (&too_long, false),
            ("uid=al\0ice", false),
            ("uid=alice\r\nX-Injected: 1", false),
            ("uid=alice\t", false),
        ];
        for (dn, ok) in cases {
            let lease = Lease {
                dn: (*dn).to_owned(),
                groups: vec![],
                ..user_lease()
            };
            let expected = if *ok { Ok(()) } else { Err(LeaseError::BadDn) };
            assert_eq!(lease.validate(), expected, "{dn:?}");
            let bytes = sign_unchecked(&lease, &authority());
            assert_eq!(parse_unverified(&bytes).map(|_| ()), expected, "{dn:?}");
        }
        // Invalid UTF-8 can only come from the wire.
        let mut bytes = sign_unchecked(&user_lease(), &authority());
        let dn_at = FIXED_LEN + 1 + "alice".len() + 2;
        bytes[dn_at] = 0xFF;
        resign(&mut bytes, &authority());
        assert_eq!(parse_unverified(&bytes), Err(LeaseError::BadDn));
    }

    #[test]
    fn groups_are_checked() {
        let long_ok = "g".repeat(MAX_GROUP_LEN);
        let cases: &[(&[&str], Result<(), LeaseError>)] = &[
            (&[], Ok(())),
            (&["staff"], Ok(())),
            (&["Staff", "staff"], Ok(())),
            (&["équipe rédaction"], Ok(())),
            (&[&long_ok], Ok(())),
            (&[""], Err(LeaseError::BadGroup)),
            (&["a,b"], Err(LeaseError::BadGroup)),
            (&["a\0b"], Err(LeaseError::BadGroup)),
            (&["a\nb"], Err(LeaseError::BadGroup)),
            (&["staff", "staff"], Err(LeaseError::DuplicateGroup)),
            (&["a", "b", "a"], Err(LeaseError::DuplicateGroup)),
        ];
        for (groups, expected) in cases {
            let lease = Lease {
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                ..user_lease()
            };
            assert_eq!(lease.validate(), *expected, "{groups:?}");
            let bytes = sign_unchecked(&lease, &authority());
            assert_eq!(
                parse_unverified(&bytes).map(|_| ()),
                *expected,
                "{groups:?}"
            );
        }
        let lease = Lease {
            groups: vec!["g".repeat(MAX_GROUP_LEN + 1)],
            ..user_lease()
        };
        assert_eq!(lease.validate(), Err(LeaseError::BadGroup));
        assert_eq!(authority().sign(&lease), Err(LeaseError::BadGroup));
    }

    #[test]
    fn more_than_64_groups_are_refused() {
        let groups = |n: usize| (0..n).map(|i| format!("g{i}")).collect::<Vec<_>>();
        let ok = Lease {
            groups: groups(MAX_GROUPS),
            ..user_lease()
        };
        assert!(authority().sign(&ok).is_ok());
        let too_many = Lease {
            groups: groups(MAX_GROUPS + 1),
            ..user_lease()
        };
        assert_eq!(authority().sign(&too_many), Err(LeaseError::TooManyGroups));
        let bytes = sign_unchecked(&too_many, &authority());
        assert_eq!(parse_unverified(&bytes), Err(LeaseError::TooManyGroups));
        let way_too_many = Lease {
            groups: groups(256),
            ..user_lease()
        };
        assert_eq!(
            authority().sign(&way_too_many),
            Err(LeaseError::TooManyGroups)
        );
    }

    #[test]
    fn max_lease_len_is_enforced_on_emit_and_parse() {
        // 89 + 1 + 5 + 2 + 1024 + 1 + 50 * 15 + 64 = 1936: fill up to the limit.
        let mut lease = Lease {
            dn: "x".repeat(MAX_DN_LEN),
            groups: (0..50)
                .map(|i| format!("{i:02}{}", "g".repeat(12)))
                .collect(),
            ..user_lease()
        };
        let fill = MAX_LEASE_LEN - lease.encoded_len();
        lease.groups[0].push_str(&"g".repeat(fill));
        assert_eq!(lease.encoded_len(), MAX_LEASE_LEN);
        let signed = authority().sign(&lease).unwrap();
        assert_eq!(signed.as_bytes().len(), MAX_LEASE_LEN);
        assert!(
            SignedLease::verify(signed.as_bytes(), &authority().public_key(), during()).is_ok()
        );

        lease.groups[0].push('g');
        assert_eq!(lease.validate(), Err(LeaseError::TooLong));
        assert_eq!(authority().sign(&lease), Err(LeaseError::TooLong));
        let bytes = sign_unchecked(&lease, &authority());
        assert_eq!(bytes.len(), MAX_LEASE_LEN + 1);
        assert_eq!(parse_unverified(&bytes), Err(LeaseError::TooLong));
        assert_eq!(
            parse_unverified(&vec![0u8; 100_000]),
            Err(LeaseError::TooLong)
        );
    }

    #[test]
    fn header_fields_are_checked_even_under_a_good_signature() {
        let good = sign_unchecked(&user_lease(), &authority());
        let cases: &[(usize, u8, LeaseError)] = &[
            (0, b'X', LeaseError::BadMagic),
            (3, b'2', LeaseError::BadMagic),
            (4, 0x00, LeaseError::UnsupportedVersion(0)),
            (4, 0x02, LeaseError::UnsupportedVersion(2)),
            (5, 0x00, LeaseError::UnknownKind(0)),
            (5, 0x04, LeaseError::UnknownKind(4)),
            (6, 0x80, LeaseError::NonZeroFlags),
            (7, 0x01, LeaseError::NonZeroFlags),
            (5, 0x03, LeaseError::BadPrefix), // a system lease with a /128
            (88, 129, LeaseError::BadPrefix),
            (88, 64, LeaseError::BadPrefix),
            (88, 0, LeaseError::BadPrefix),
        ];
        for (offset, value, expected) in cases {
            let mut bytes = good.clone();
            bytes[*offset] = *value;
            resign(&mut bytes, &authority());
            assert_eq!(parse_unverified(&bytes), Err(*expected), "byte {offset}");
            assert_eq!(
                SignedLease::verify(&bytes, &authority().public_key(), during()),
                Err(*expected),
                "byte {offset}"
            );
        }
    }

    #[test]
    fn prefixes_must_fit_the_kind() {
        let cases: &[(EntityKind, &str, bool)] = &[
            (EntityKind::User, "2002:c000:201:1::a1/128", true),
            (EntityKind::User, "fd12:3456:789a:1::5/128", true),
            (EntityKind::Application, "2002:c633:6401:1::80/128", true),
            (EntityKind::System, "2002:c633:6401:1::/64", true),
            (EntityKind::User, "2002:c000:201:1::/64", false),
            (EntityKind::Application, "2002:c633:6401:1::/64", false),
            (EntityKind::System, "2002:c633:6401:1::1/128", false),
            (EntityKind::System, "2002:c633:6401:1::1/64", false),
            (EntityKind::User, "::/128", false),
            (EntityKind::User, "::1/128", false),
            (EntityKind::User, "ff02::1/128", false),
            (EntityKind::User, "fe80::1/128", false),
            (EntityKind::System, "fe80::/64", false),
        ];
        for (kind, prefix, ok) in cases {
            let lease = Lease {
                kind: *kind,
                prefix: prefix.parse().unwrap(),
                ..user_lease()
            };
            let expected = if *ok {
                Ok(())
            } else {
                Err(LeaseError::BadPrefix)
            };
            assert_eq!(lease.validate(), expected, "{kind:?} {prefix}");
            let bytes = sign_unchecked(&lease, &authority());
            assert_eq!(parse_unverified(&bytes).map(|_| ()), expected);
        }
    }

    #[test]
    fn an_all_zero_public_key_is_refused() {
        let lease = Lease {
            public_key: [0; 32],
            ..user_lease()
        };
        assert_eq!(authority().sign(&lease), Err(LeaseError::BadPublicKey));
        let bytes = sign_unchecked(&lease, &authority());
        assert_eq!(parse_unverified(&bytes), Err(LeaseError::BadPublicKey));
    }

    #[test]
    fn cryptokey_routing_checks_the_source_against_the_prefix() {
        let user = user_lease();
        assert!(user.contains_source(&"2002:c000:201:1::a1".parse().unwrap()));
        assert!(!user.contains_source(&"2002:c000:201:1::a2".parse().unwrap()));
        assert!(!user.contains_source(&"::".parse().unwrap()));

        let system = system_lease();
        for inside in [
            "2002:c633:6401:1::1",
            "2002:c633:6401:1::80",
            "2002:c633:6401:1:ffff:ffff:ffff:ffff",
        ] {
            assert!(system.contains_source(&inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "2002:c633:6401:2::1",
            "2002:c633:6401::1",
            "2002:c000:201:1::a1",
        ] {
            assert!(
                !system.contains_source(&outside.parse().unwrap()),
                "{outside}"
            );
        }
    }

    #[test]
    fn group_membership() {
        let lease = user_lease();
        assert!(lease.is_member("staff"));
        assert!(lease.is_member("wap-users"));
        assert!(!lease.is_member("Staff"));
        assert!(!lease.is_member("staf"));
        assert!(!lease.is_member(""));
        assert!(lease.member_of_any(&["admins", "wap-users"]));
        assert!(lease.member_of_any(&[String::from("staff")]));
        assert!(!lease.member_of_any(&["admins", "guests"]));
        let nothing: [&str; 0] = [];
        assert!(!lease.member_of_any(&nothing));
        assert!(!system_lease().member_of_any(&["staff"]));
    }

    #[test]
    fn authority_keys() {
        let public = authority().public_key();
        assert_eq!(AuthorityKey::from_bytes(&public.to_bytes()), Ok(public));
        assert_eq!(hex::encode(public.key_id()), "34750f98bd59fcfc");
        assert_ne!(
            LeaseAuthority::from_seed(OTHER_SEED).public_key().key_id(),
            public.key_id()
        );
        // The identity point is a valid encoding but a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 0x01;
        assert_eq!(
            AuthorityKey::from_bytes(&identity),
            Err(LeaseError::BadAuthorityKey)
        );
        assert_eq!(
            AuthorityKey::from_bytes(&[0u8; 32]),
            Err(LeaseError::BadAuthorityKey)
        );
        assert_eq!(authority().seed().as_slice(), &AUTHORITY_SEED);
    }

    #[test]
    fn generated_authorities_sign_and_verify() {
        use rand::{rngs::StdRng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let a = LeaseAuthority::generate(&mut rng);
        let b = LeaseAuthority::generate(&mut rng);
        assert_ne!(a.public_key(), b.public_key());
        let bytes = a.sign(&user_lease()).unwrap().into_bytes();
        assert!(SignedLease::verify(&bytes, &a.public_key(), during()).is_ok());
        assert_eq!(
            SignedLease::verify(&bytes, &b.public_key(), during()),
            Err(LeaseError::UnknownAuthority)
        );
    }

    #[test]
    fn debug_never_shows_the_seed() {
        let text = format!("{:?}", authority());
        assert!(!text.contains(&hex::encode(AUTHORITY_SEED)));
        assert!(!text.contains("[1, 1, 1"));
        assert!(text.contains("8a88e3dd"), "{text}");
    }

    #[test]
    fn error_labels_are_distinct() {
        let all = [
            LeaseError::Truncated,
            LeaseError::TooLong,
            LeaseError::TrailingBytes,
            LeaseError::BadMagic,
            LeaseError::UnsupportedVersion(0),
            LeaseError::UnknownKind(0),
            LeaseError::NonZeroFlags,
            LeaseError::InvalidWindow,
            LeaseError::BadPublicKey,
            LeaseError::BadPrefix,
            LeaseError::BadName,
            LeaseError::BadDn,
            LeaseError::BadGroup,
            LeaseError::DuplicateGroup,
            LeaseError::TooManyGroups,
            LeaseError::BadAuthorityKey,
            LeaseError::UnknownAuthority,
            LeaseError::BadSignature,
            LeaseError::NotYetValid,
            LeaseError::Expired,
        ];
        let mut labels: Vec<_> = all.iter().map(LeaseError::as_str).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all.len());
    }

    /// Prints the hex of each committed vector's inputs, for regenerating
    /// the files after a deliberate format change (`--ignored --nocapture`).
    #[test]
    #[ignore = "prints vector bytes; run by hand after a format change"]
    fn print_vectors() {
        for v in vectors() {
            let authority = LeaseAuthority::from_seed(v.hex32("authority-seed"));
            let bytes = authority.sign(&v.lease()).unwrap().into_bytes();
            println!("{}", v.name);
            for line in bytes.chunks(32) {
                println!("{}", hex::encode(line));
            }
        }
    }
}
