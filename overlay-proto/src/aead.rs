//! ChaCha20-Poly1305 AEAD (RFC 8439) behind one small in-place interface.
//!
//! ESP seals and opens packets where they lie: the caller's buffer holds the
//! plaintext, the cipher overwrites it with ciphertext, and the 16-byte tag
//! travels separately (it becomes the ESP ICV). [`EspAead`] is exactly that
//! contract. Two providers implement it: [`RingChaCha20Poly1305`] (ring, the
//! default, with assembly for every common CPU) and
//! [`RustCryptoChaCha20Poly1305`] (pure Rust, the `chacha20poly1305` crate).
//! [`EspCipher`] picks one at run time by enum dispatch, so the code above it
//! is neither generic nor boxed. Keys are expanded once, when the security
//! association is created; nothing here allocates.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::KeyInit;

/// ChaCha20-Poly1305 key length in bytes.
pub const KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 nonce length in bytes (RFC 8439 §2.8).
pub const NONCE_LEN: usize = 12;
/// Poly1305 tag length in bytes.
pub const TAG_LEN: usize = 16;
/// Longest plaintext one nonce can protect: 2^32 - 1 ChaCha20 blocks of 64
/// bytes after the Poly1305 key block (RFC 8439 §2.8). Both providers refuse
/// longer inputs; see [`EspAead::seal_in_place`] for what that means here.
pub const MAX_INPUT_LEN: u64 = ((1 << 32) - 1) * 64;

/// An AEAD open failed: the tag does not match the key, nonce, associated
/// data and ciphertext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AeadError;

/// In-place AEAD with a detached tag, as ESP needs it.
pub trait EspAead: Send + Sync {
    /// Encrypts `in_out` in place and returns the tag over `aad` and the
    /// ciphertext.
    ///
    /// `nonce` must never repeat under one key. Inputs longer than
    /// [`MAX_INPUT_LEN`] (which ESP never produces) fail closed: `in_out` is
    /// zeroed and the returned tag is all zeros, so no plaintext leaves and
    /// the receiver rejects the packet.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN];

    /// Verifies `tag` over `aad` and the ciphertext in `in_out`, then
    /// decrypts `in_out` in place.
    ///
    /// On error the contents of `in_out` are unspecified and must not be
    /// used.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError>;
}

/// Which ChaCha20-Poly1305 implementation a security association uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AeadProvider {
    /// ring's implementation (assembly on x86-64, AArch64, ARM).
    #[default]
    Ring,
    /// RustCrypto's `chacha20poly1305` crate (portable Rust, SIMD on x86).
    RustCrypto,
}

/// ChaCha20-Poly1305 from ring.
///
/// ring keeps the key in its own opaque type and offers no way to wipe it,
/// so the key bytes are not zeroized when this is dropped.
pub struct RingChaCha20Poly1305 {
    key: ring::aead::LessSafeKey,
}

impl RingChaCha20Poly1305 {
    /// Expands `key` for sealing and opening.
    #[allow(clippy::expect_used)]
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        // `UnboundKey::new` fails only when the key length differs from the
        // algorithm's, and the type fixes it at 32 = CHACHA20_POLY1305.key_len().
        let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, key)
            .expect("a 32-byte key is always valid for ChaCha20-Poly1305");
        Self {
            key: ring::aead::LessSafeKey::new(unbound),
        }
    }
}

impl EspAead for RingChaCha20Poly1305 {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        match self
            .key
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), in_out)
        {
            Ok(tag) => tag_bytes(tag.as_ref()),
            Err(ring::error::Unspecified) => fail_closed(in_out),
        }
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*nonce);
        self.key
            .open_in_place_separate_tag(
                nonce,
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(*tag),
                in_out,
                0..,
            )
            .map(|_| ())
            .map_err(|ring::error::Unspecified| AeadError)
    }
}

impl std::fmt::Debug for RingChaCha20Poly1305 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RingChaCha20Poly1305 { .. }")
    }
}

/// ChaCha20-Poly1305 from RustCrypto's `chacha20poly1305` crate. Its key is
/// zeroized on drop.
pub struct RustCryptoChaCha20Poly1305 {
    cipher: chacha20poly1305::ChaCha20Poly1305,
}

impl RustCryptoChaCha20Poly1305 {
    /// Takes a copy of `key` for sealing and opening.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: chacha20poly1305::ChaCha20Poly1305::new(key.into()),
        }
    }
}

impl EspAead for RustCryptoChaCha20Poly1305 {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        match self
            .cipher
            .encrypt_in_place_detached(nonce.into(), aad, in_out)
        {
            Ok(tag) => tag.into(),
            Err(chacha20poly1305::Error) => fail_closed(in_out),
        }
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        self.cipher
            .decrypt_in_place_detached(nonce.into(), aad, in_out, tag.into())
            .map_err(|chacha20poly1305::Error| AeadError)
    }
}

impl std::fmt::Debug for RustCryptoChaCha20Poly1305 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RustCryptoChaCha20Poly1305 { .. }")
    }
}

/// A ChaCha20-Poly1305 key bound to the provider chosen at run time.
///
/// ring's key type is sized for its largest algorithm (about 540 bytes);
/// it stays inline rather than boxed so that sealing never chases a pointer
/// and creating an SA does not allocate.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum EspCipher {
    /// ring's implementation.
    Ring(RingChaCha20Poly1305),
    /// RustCrypto's implementation.
    RustCrypto(RustCryptoChaCha20Poly1305),
}

impl EspCipher {
    /// Expands `key` with `provider`.
    pub fn new(provider: AeadProvider, key: &[u8; KEY_LEN]) -> Self {
        match provider {
            AeadProvider::Ring => Self::Ring(RingChaCha20Poly1305::new(key)),
            AeadProvider::RustCrypto => Self::RustCrypto(RustCryptoChaCha20Poly1305::new(key)),
        }
    }

    /// The provider behind this key.
    pub fn provider(&self) -> AeadProvider {
        match self {
            Self::Ring(_) => AeadProvider::Ring,
            Self::RustCrypto(_) => AeadProvider::RustCrypto,
        }
    }
}

impl EspAead for EspCipher {
    #[inline]
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> [u8; TAG_LEN] {
        match self {
            Self::Ring(c) => c.seal_in_place(nonce, aad, in_out),
            Self::RustCrypto(c) => c.seal_in_place(nonce, aad, in_out),
        }
    }

    #[inline]
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        match self {
            Self::Ring(c) => c.open_in_place(nonce, aad, in_out, tag),
            Self::RustCrypto(c) => c.open_in_place(nonce, aad, in_out, tag),
        }
    }
}

/// Copies a provider's tag into an array. Both providers always produce
/// exactly [`TAG_LEN`] bytes.
fn tag_bytes(tag: &[u8]) -> [u8; TAG_LEN] {
    let mut out = [0; TAG_LEN];
    if let Some(src) = tag.get(..TAG_LEN) {
        out.copy_from_slice(src);
    }
    out
}

/// The failure path of [`EspAead::seal_in_place`]: wipe the plaintext and
/// return a tag no receiver will accept.
#[cold]
fn fail_closed(in_out: &mut [u8]) -> [u8; TAG_LEN] {
    in_out.fill(0);
    [0; TAG_LEN]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng};

    const PROVIDERS: [AeadProvider; 2] = [AeadProvider::Ring, AeadProvider::RustCrypto];

    /// RFC 8439 §2.8.2.
    #[test]
    fn rfc8439_aead_vector() {
        let key: [u8; 32] =
            hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 12] = hex::decode("070000004041424344454647")
            .unwrap()
            .try_into()
            .unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ciphertext = hex::decode(concat!(
            "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6",
            "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36",
            "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
            "3ff4def08e4b7a9de576d26586cec64b6116",
        ))
        .unwrap();
        let tag: [u8; 16] = hex::decode("1ae10b594f09e26a7e902ecbd0600691")
            .unwrap()
            .try_into()
            .unwrap();

        for provider in PROVIDERS {
            let cipher = EspCipher::new(provider, &key);
            assert_eq!(cipher.provider(), provider);
            let mut buf = plaintext.to_vec();
            assert_eq!(
                cipher.seal_in_place(&nonce, &aad, &mut buf),
                tag,
                "{provider:?}"
            );
            assert_eq!(buf, ciphertext, "{provider:?}");
            cipher.open_in_place(&nonce, &aad, &mut buf, &tag).unwrap();
            assert_eq!(buf, plaintext, "{provider:?}");

            let mut bad_tag = tag;
            bad_tag[15] ^= 0x01;
            let mut buf = ciphertext.clone();
            assert_eq!(
                cipher.open_in_place(&nonce, &aad, &mut buf, &bad_tag),
                Err(AeadError)
            );
        }
    }

    /// Both providers agree on random inputs, and each rejects any single
    /// flipped bit in nonce, AAD, ciphertext or tag.
    #[test]
    fn providers_agree_and_reject_tampering() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x7634_8439);
        let random: Vec<usize> = (0..64).map(|_| rng.gen_range(0..=9000)).collect();
        let lengths = (0..=300)
            .chain((301..=9000).step_by(97))
            .chain([1400, 8900, 9000])
            .chain(random);
        for len in lengths {
            let mut key = [0u8; 32];
            let mut nonce = [0u8; 12];
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut nonce);
            let mut aad = vec![0u8; rng.gen_range(0..=24)];
            rng.fill_bytes(&mut aad);
            let mut plaintext = vec![0u8; len];
            rng.fill_bytes(&mut plaintext);

            let ring = RingChaCha20Poly1305::new(&key);
            let rust = RustCryptoChaCha20Poly1305::new(&key);
            let mut a = plaintext.clone();
            let mut b = plaintext.clone();
            let tag_a = ring.seal_in_place(&nonce, &aad, &mut a);
            let tag_b = rust.seal_in_place(&nonce, &aad, &mut b);
            assert_eq!((&a, tag_a), (&b, tag_b), "len {len}");

            for opener in [&ring as &dyn EspAead, &rust] {
                let mut buf = a.clone();
                opener
                    .open_in_place(&nonce, &aad, &mut buf, &tag_a)
                    .unwrap();
                assert_eq!(buf, plaintext, "len {len}");

                let mut bad_nonce = nonce;
                bad_nonce[rng.gen_range(0..12)] ^= 1 << rng.gen_range(0..8);
                let mut buf = a.clone();
                assert_eq!(
                    opener.open_in_place(&bad_nonce, &aad, &mut buf, &tag_a),
                    Err(AeadError)
                );

                let mut bad_tag = tag_a;
                bad_tag[rng.gen_range(0..16)] ^= 1 << rng.gen_range(0..8);
                let mut buf = a.clone();
                assert_eq!(
                    opener.open_in_place(&nonce, &aad, &mut buf, &bad_tag),
                    Err(AeadError)
                );

                if !aad.is_empty() {
                    let mut bad_aad = aad.clone();
                    let i = rng.gen_range(0..bad_aad.len());
                    bad_aad[i] ^= 1 << rng.gen_range(0..8);
                    let mut buf = a.clone();
                    assert_eq!(
                        opener.open_in_place(&nonce, &bad_aad, &mut buf, &tag_a),
                        Err(AeadError)
                    );
                }
                if len > 0 {
                    let mut buf = a.clone();
                    buf[rng.gen_range(0..len)] ^= 1 << rng.gen_range(0..8);
                    assert_eq!(
                        opener.open_in_place(&nonce, &aad, &mut buf, &tag_a),
                        Err(AeadError)
                    );
                }
            }
        }
    }

    #[test]
    fn debug_hides_key() {
        let key = [0xab; 32];
        for provider in PROVIDERS {
            let shown = format!("{:?}", EspCipher::new(provider, &key));
            assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        }
    }
}
