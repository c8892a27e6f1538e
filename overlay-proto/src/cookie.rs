//! The handshake's denial-of-service defence: mac1, mac2 and the stateless
//! cookie reply, as in WireGuard (whitepaper §5.4.4 and §5.4.7).
//!
//! Every handshake message ends with two 16-byte MACs. `mac1` is keyed with
//! a hash of the *responder's* static public key, so only someone who knows
//! whom they are talking to can produce it: a responder checks it before any
//! Diffie-Hellman work and silently drops messages without it. `mac2` is
//! keyed with a *cookie*: under load the responder stops doing
//! Diffie-Hellman for messages without a valid `mac2` and instead answers
//! with a cookie reply, an encrypted MAC of the sender's IP address and port
//! under a secret that rotates every two minutes. Only a sender that can
//! receive at that address learns the cookie, so a spoofed flood cannot make
//! the responder spend work, and the responder keeps no per-sender state.
//!
//! [`CookieChecker`] is the responder side, [`CookieJar`] the initiator
//! side. Neither reads a clock nor the system RNG: `now` and an RNG are
//! passed in.
#![deny(clippy::indexing_slicing)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::handshake::PublicKey;

/// Length of mac1, mac2 and the cookie.
pub const MAC_LEN: usize = 16;

/// Length of the cookie reply's XChaCha20-Poly1305 nonce.
pub const COOKIE_NONCE_LEN: usize = 24;

/// Length of the encrypted cookie: cookie (16) ‖ tag (16).
pub const ENCRYPTED_COOKIE_LEN: usize = MAC_LEN + 16;

/// How long the responder issues cookies under one secret before drawing a
/// new one.
pub const COOKIE_SECRET_ROTATION: Duration = Duration::from_secs(120);

/// How long the responder accepts cookies made under a secret, counted from
/// the secret's first use. A cookie issued at the end of the secret's
/// rotation period thus stays valid for a full [`COOKIE_LIFETIME`].
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(240);

/// How long an initiator uses a cookie it received (WireGuard's
/// `Cookie-Refresh-Time`).
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

const LABEL_MAC1: &[u8; 8] = b"mac1----";
const LABEL_COOKIE: &[u8; 8] = b"cookie--";

/// Why a cookie reply was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CookieError {
    /// No initiation is waiting for a cookie (none sent, or its reply was
    /// already consumed).
    #[error("cookie reply without a pending initiation")]
    Unsolicited,
    /// The reply did not decrypt: tampered, from another responder, or for
    /// another initiation.
    #[error("cookie reply failed to decrypt")]
    Decrypt,
}

impl CookieError {
    /// A stable snake_case label for drop counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            CookieError::Unsolicited => "cookie_unsolicited",
            CookieError::Decrypt => "cookie_decrypt",
        }
    }
}

/// The two keys derived from a responder's static public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MacKeys {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
}

impl MacKeys {
    /// mac1_key = BLAKE2s-256("mac1----" ‖ key), cookie_key =
    /// BLAKE2s-256("cookie--" ‖ key).
    pub fn new(responder_public: &PublicKey) -> Self {
        let derive = |label: &[u8; 8]| -> [u8; 32] {
            Blake2s256::new()
                .chain_update(label)
                .chain_update(responder_public.as_bytes())
                .finalize()
                .into()
        };
        MacKeys {
            mac1_key: derive(LABEL_MAC1),
            cookie_key: derive(LABEL_COOKIE),
        }
    }
}

impl fmt::Debug for MacKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKeys { .. }")
    }
}

/// mac1 of a message: keyed BLAKE2s-128 under `keys`' mac1 key over all the
/// message's bytes before the mac1 field.
pub fn mac1(keys: &MacKeys, bytes_before_mac1: &[u8]) -> [u8; MAC_LEN] {
    keyed_mac(&keys.mac1_key, &[bytes_before_mac1])
}

/// mac2 of a message: keyed BLAKE2s-128 under `cookie` over all the
/// message's bytes before the mac2 field (including mac1).
pub fn mac2(cookie: &[u8; MAC_LEN], bytes_before_mac2: &[u8]) -> [u8; MAC_LEN] {
    keyed_mac(cookie, &[bytes_before_mac2])
}

/// The body of a cookie reply (the wire module adds the header and the
/// receiver index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieReplyBody {
    /// Random XChaCha20-Poly1305 nonce.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// The cookie, encrypted under the cookie key with the initiation's mac1
    /// as associated data.
    pub encrypted_cookie: [u8; ENCRYPTED_COOKIE_LEN],
}

/// Responder side: verifies mac1 and mac2 and makes cookie replies.
///
/// It holds at most two cookie secrets. A secret is first used by
/// [`CookieChecker::make_reply`]; replies use it until it is
/// [`COOKIE_SECRET_ROTATION`] old, then a new one is drawn and the old one is
/// kept as the previous secret. mac2 is accepted under either secret while
/// that secret is younger than [`COOKIE_SECRET_MAX_AGE`], so a cookie issued
/// just before a rotation lives out its [`COOKIE_LIFETIME`], and nothing
/// issued under a secret two rotations old is accepted.
pub struct CookieChecker {
    keys: MacKeys,
    current: CookieSecret,
    previous: Option<CookieSecret>,
}

impl CookieChecker {
    /// A checker for messages addressed to `local_public`. The first secret
    /// is drawn from `rng` now; its age counts from its first use.
    pub fn new(local_public: &PublicKey, rng: &mut impl CryptoRngCore) -> Self {
        CookieChecker {
            keys: MacKeys::new(local_public),
            current: CookieSecret::generate(rng, None),
            previous: None,
        }
    }

    /// Whether `mac1` is right for a message to us (constant time).
    pub fn verify_mac1(&self, bytes_before_mac1: &[u8], mac1: &[u8; MAC_LEN]) -> bool {
        self::mac1(&self.keys, bytes_before_mac1).ct_eq(mac1).into()
    }

    /// Whether `mac2` proves that the sender at `src` holds a cookie we
    /// issued recently. Forgets a previous secret that has expired.
    pub fn verify_mac2(
        &mut self,
        now: Instant,
        src: SocketAddr,
        bytes_before_mac2: &[u8],
        mac2: &[u8; MAC_LEN],
    ) -> bool {
        if self.previous.as_ref().is_some_and(|s| !s.accepts(now)) {
            self.previous = None;
        }
        let mut ok = subtle::Choice::from(0);
        for secret in std::iter::once(&self.current).chain(&self.previous) {
            if secret.accepts(now) {
                let cookie = secret.cookie(src);
                ok |= self::mac2(&cookie, bytes_before_mac2).ct_eq(mac2);
            }
        }
        ok.into()
    }

    /// A cookie reply for the initiation with `mac1` that came from `src`.
    /// Rotates the secret first if it is due, drawing from `rng`.
    pub fn make_reply(
        &mut self,
        now: Instant,
        src: SocketAddr,
        mac1: &[u8; MAC_LEN],
        rng: &mut impl CryptoRngCore,
    ) -> CookieReplyBody {
        match self.current.first_use {
            None => self.current.first_use = Some(now),
            Some(t) if now.saturating_duration_since(t) >= COOKIE_SECRET_ROTATION => {
                let next = CookieSecret::generate(rng, Some(now));
                self.previous = Some(std::mem::replace(&mut self.current, next));
            }
            Some(_) => {}
        }
        let mut cookie = self.current.cookie(src);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        #[allow(
            clippy::expect_used,
            reason = "XChaCha20-Poly1305 only refuses plaintexts of more than 256 GiB"
        )]
        let tag = XChaCha20Poly1305::new(&self.keys.cookie_key.into())
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut cookie)
            .expect("a 16-byte cookie encrypts");
        let mut encrypted_cookie = [0u8; ENCRYPTED_COOKIE_LEN];
        for (dst, src) in encrypted_cookie.iter_mut().zip(cookie.iter().chain(&tag)) {
            *dst = *src;
        }
        CookieReplyBody {
            nonce,
            encrypted_cookie,
        }
    }
}

impl fmt::Debug for CookieChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieChecker")
            .field("current_first_use", &self.current.first_use)
            .field("has_previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// Initiator side, one per peer: computes mac1 and mac2 for messages to that
/// peer and keeps the cookie the peer sent.
pub struct CookieJar {
    keys: MacKeys,
    last_mac1: Option<[u8; MAC_LEN]>,
    cookie: Option<ReceivedCookie>,
}

impl CookieJar {
    /// A jar for messages to `remote_public`.
    pub fn new(remote_public: &PublicKey) -> Self {
        CookieJar {
            keys: MacKeys::new(remote_public),
            last_mac1: None,
            cookie: None,
        }
    }

    /// mac1 of an outgoing message; remembered, to decrypt a cookie reply to
    /// it.
    pub fn mac1(&mut self, bytes_before_mac1: &[u8]) -> [u8; MAC_LEN] {
        let mac = mac1(&self.keys, bytes_before_mac1);
        self.last_mac1 = Some(mac);
        mac
    }

    /// Decrypts and stores the cookie of a reply to our last message. A
    /// reply is accepted once.
    pub fn consume_reply(
        &mut self,
        now: Instant,
        nonce: &[u8; COOKIE_NONCE_LEN],
        encrypted_cookie: &[u8; ENCRYPTED_COOKIE_LEN],
    ) -> Result<(), CookieError> {
        let mac1 = self.last_mac1.ok_or(CookieError::Unsolicited)?;
        let (cookie, tag) = encrypted_cookie
            .split_first_chunk::<MAC_LEN>()
            .ok_or(CookieError::Decrypt)?;
        let mut cookie = *cookie;
        XChaCha20Poly1305::new(&self.keys.cookie_key.into())
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &mac1,
                &mut cookie,
                Tag::from_slice(tag),
            )
            .map_err(|_| CookieError::Decrypt)?;
        self.cookie = Some(ReceivedCookie {
            cookie,
            received: now,
        });
        self.last_mac1 = None;
        Ok(())
    }

    /// mac2 of an outgoing message: under the cookie if we hold one younger
    /// than [`COOKIE_LIFETIME`], otherwise all zeros.
    pub fn mac2(&self, now: Instant, bytes_before_mac2: &[u8]) -> [u8; MAC_LEN] {
        match &self.cookie {
            Some(c) if now.saturating_duration_since(c.received) < COOKIE_LIFETIME => {
                mac2(&c.cookie, bytes_before_mac2)
            }
            _ => [0; MAC_LEN],
        }
    }
}

impl fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieJar")
            .field("awaiting_reply", &self.last_mac1.is_some())
            .field("cookie_received", &self.cookie.as_ref().map(|c| c.received))
            .finish_non_exhaustive()
    }
}

struct ReceivedCookie {
    cookie: [u8; MAC_LEN],
    received: Instant,
}

impl Drop for ReceivedCookie {
    fn drop(&mut self) {
        self.cookie.zeroize();
    }
}

struct CookieSecret {
    secret: [u8; 32],
    /// When the first reply used it; `None` until then.
    first_use: Option<Instant>,
}

impl CookieSecret {
    fn generate(rng: &mut impl CryptoRngCore, first_use: Option<Instant>) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        CookieSecret { secret, first_use }
    }

    /// Whether cookies made under this secret are still accepted. An unused
    /// secret made no cookie, so none is accepted.
    fn accepts(&self, now: Instant) -> bool {
        self.first_use
            .is_some_and(|t| now.saturating_duration_since(t) < COOKIE_SECRET_MAX_AGE)
    }

    /// The cookie of `src`: BLAKE2s-128 under the secret over the IP address
    /// (4 or 16 bytes, IPv4-mapped IPv6 taken as IPv4) and the port (big
    /// endian).
    fn cookie(&self, src: SocketAddr) -> [u8; MAC_LEN] {
        let port = src.port().to_be_bytes();
        match src.ip().to_canonical() {
            IpAddr::V4(ip) => keyed_mac(&self.secret, &[&ip.octets(), &port]),
            IpAddr::V6(ip) => keyed_mac(&self.secret, &[&ip.octets(), &port]),
        }
    }
}

impl Drop for CookieSecret {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Keyed BLAKE2s with a 128-bit output (RFC 7693 keyed mode, as WireGuard's
/// `MAC`) over the concatenation of `parts`.
fn keyed_mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    #[allow(
        clippy::expect_used,
        reason = "keys here are 16 or 32 bytes, within BLAKE2s's 1..=32"
    )]
    let mut mac =
        <Blake2sMac<U16> as KeyInit>::new_from_slice(key).expect("BLAKE2s key of 16 or 32 bytes");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    const RESPONDER: PublicKey = PublicKey([0x42; 32]);

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([7; 32])
    }

    fn hex_array<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn src() -> SocketAddr {
        "198.51.100.7:4500".parse().unwrap()
    }

    /// Expected values from Python's `hashlib.blake2s` (plain for the key
    /// derivation; `key=…, digest_size=16` for the MACs) with public key
    /// 01..20, message 40..7f and cookie a0..af.
    #[test]
    fn macs_known_answers() {
        let keys = MacKeys::new(&PublicKey(core::array::from_fn(|i| i as u8 + 1)));
        assert_eq!(
            keys.mac1_key,
            hex_array::<32>("121b33018813efaa1d3128cdec1392897828e98831f01822c250ddfdf7090183")
        );
        assert_eq!(
            keys.cookie_key,
            hex_array::<32>("2f87e1b72843ca5c7d1f3d56271f4a9e22cd2c8f01c86b1b88bd8fb7d7871de1")
        );
        let msg: Vec<u8> = (0x40..0x80).collect();
        assert_eq!(
            mac1(&keys, &msg),
            hex_array::<16>("b79e4d441bd222e42bb7d2547569f513")
        );
        assert_eq!(
            mac1(&keys, &[]),
            hex_array::<16>("31ea2316cecba46e089a4daf3e31d998")
        );
        let cookie: [u8; 16] = core::array::from_fn(|i| i as u8 + 0xa0);
        assert_eq!(
            mac2(&cookie, &msg),
            hex_array::<16>("37d2bbc78809b3e45aa9e823be60b4dc")
        );
    }

    #[test]
    fn mac1_verifies_only_for_the_right_key_and_bytes() {
        let checker = CookieChecker::new(&RESPONDER, &mut rng());
        let mut jar = CookieJar::new(&RESPONDER);
        let msg = b"initiation bytes before mac1";
        let mac = jar.mac1(msg);
        assert!(checker.verify_mac1(msg, &mac));

        let mut bad_mac = mac;
        bad_mac[15] ^= 1;
        assert!(!checker.verify_mac1(msg, &bad_mac));
        assert!(!checker.verify_mac1(b"initiation bytes before mac2", &mac));
        let other = CookieJar::new(&PublicKey([0x43; 32])).mac1(msg);
        assert!(!checker.verify_mac1(msg, &other));
    }

    /// Runs initiation → cookie reply → consume at `t0`; returns the jar.
    fn jar_with_cookie(checker: &mut CookieChecker, t0: Instant, msg: &[u8]) -> CookieJar {
        let mut jar = CookieJar::new(&RESPONDER);
        let mac1 = jar.mac1(msg);
        let reply = checker.make_reply(t0, src(), &mac1, &mut rng());
        jar.consume_reply(t0, &reply.nonce, &reply.encrypted_cookie)
            .unwrap();
        jar
    }

    #[test]
    fn mac2_with_a_valid_cookie_passes_only_from_the_same_address() {
        let t0 = Instant::now();
        let mut r = rng();
        let mut checker = CookieChecker::new(&RESPONDER, &mut r);
        let jar = jar_with_cookie(&mut checker, t0, b"initiation");
        let msg = b"initiation with mac1";
        let mac2 = jar.mac2(t0, msg);
        assert_ne!(mac2, [0; 16]);
        assert!(checker.verify_mac2(t0, src(), msg, &mac2));

        let others = [
            "198.51.100.7:4501",
            "198.51.100.8:4500",
            "[2001:db8::7]:4500",
        ];
        for other in others {
            assert!(
                !checker.verify_mac2(t0, other.parse().unwrap(), msg, &mac2),
                "{other}"
            );
        }
        // An IPv4-mapped IPv6 source is the same host.
        let mapped = "[::ffff:198.51.100.7]:4500".parse().unwrap();
        assert!(checker.verify_mac2(t0, mapped, msg, &mac2));
        assert!(!checker.verify_mac2(t0, src(), b"other bytes", &mac2));
        assert!(!checker.verify_mac2(t0, src(), msg, &[0; 16]));
    }

    #[test]
    fn cookies_survive_one_rotation_but_not_two() {
        let t0 = Instant::now();
        let mut r = rng();
        let mut checker = CookieChecker::new(&RESPONDER, &mut r);
        let jar = jar_with_cookie(&mut checker, t0, b"initiation");
        let msg = b"initiation with mac1";
        let mac2 = jar.mac2(t0, msg);

        // First rotation (a reply to someone else after 130 s).
        let t1 = t0 + Duration::from_secs(130);
        checker.make_reply(t1, "203.0.113.1:1".parse().unwrap(), &[1; 16], &mut r);
        assert!(checker.previous.is_some());
        assert!(checker.verify_mac2(t1, src(), msg, &mac2));

        // Second rotation.
        let t2 = t1 + Duration::from_secs(130);
        checker.make_reply(t2, "203.0.113.1:1".parse().unwrap(), &[1; 16], &mut r);
        assert!(!checker.verify_mac2(t2, src(), msg, &mac2));
    }

    #[test]
    fn cookies_expire_with_their_secret_even_without_rotation() {
        let t0 = Instant::now();
        let mut checker = CookieChecker::new(&RESPONDER, &mut rng());
        let jar = jar_with_cookie(&mut checker, t0, b"initiation");
        let msg = b"initiation with mac1";
        let mac2 = jar.mac2(t0, msg);
        let just_before = t0 + COOKIE_SECRET_MAX_AGE - Duration::from_millis(1);
        assert!(checker.verify_mac2(just_before, src(), msg, &mac2));
        assert!(!checker.verify_mac2(t0 + COOKIE_SECRET_MAX_AGE, src(), msg, &mac2));
    }

    #[test]
    fn unused_secret_accepts_nothing() {
        let t0 = Instant::now();
        let mut checker = CookieChecker::new(&RESPONDER, &mut rng());
        assert!(!checker.verify_mac2(t0, src(), b"m", &[0; 16]));
    }

    #[test]
    fn jar_mac2_is_zero_without_a_fresh_cookie() {
        let t0 = Instant::now();
        let mut checker = CookieChecker::new(&RESPONDER, &mut rng());
        let empty = CookieJar::new(&RESPONDER);
        assert_eq!(empty.mac2(t0, b"m"), [0; 16]);

        let jar = jar_with_cookie(&mut checker, t0, b"initiation");
        let young = t0 + COOKIE_LIFETIME - Duration::from_millis(1);
        assert_ne!(jar.mac2(young, b"m"), [0; 16]);
        assert_eq!(jar.mac2(t0 + COOKIE_LIFETIME, b"m"), [0; 16]);
    }

    #[test]
    fn reply_decrypts_only_with_the_mac1_it_answers() {
        let t0 = Instant::now();
        let mut checker = CookieChecker::new(&RESPONDER, &mut rng());
        let mut jar = CookieJar::new(&RESPONDER);
        let first = jar.mac1(b"first initiation");
        let reply = checker.make_reply(t0, src(), &first, &mut rng());
        jar.mac1(b"second initiation");
        assert_eq!(
            jar.consume_reply(t0, &reply.nonce, &reply.encrypted_cookie),
            Err(CookieError::Decrypt)
        );
        assert_eq!(jar.mac2(t0, b"m"), [0; 16]);
    }

    #[test]
    fn tampered_or_foreign_replies_fail() {
        let t0 = Instant::now();
        let mut checker = CookieChecker::new(&RESPONDER, &mut rng());
        let mut jar = CookieJar::new(&RESPONDER);
        let mac1 = jar.mac1(b"initiation");
        let reply = checker.make_reply(t0, src(), &mac1, &mut rng());

        for i in 0..COOKIE_NONCE_LEN {
            let mut nonce = reply.nonce;
            nonce[i] ^= 1;
            let got = jar.consume_reply(t0, &nonce, &reply.encrypted_cookie);
            assert_eq!(got, Err(CookieError::Decrypt), "nonce byte {i}");
        }
        for i in 0..ENCRYPTED_COOKIE_LEN {
            let mut ct = reply.encrypted_cookie;
            ct[i] ^= 1;
            let got = jar.consume_reply(t0, &reply.nonce, &ct);
            assert_eq!(got, Err(CookieError::Decrypt), "cookie byte {i}");
        }
        // A reply from another responder (other cookie key) fails too.
        let mut other = CookieChecker::new(&PublicKey([0x43; 32]), &mut rng());
        let foreign = other.make_reply(t0, src(), &mac1, &mut rng());
        assert_eq!(
            jar.consume_reply(t0, &foreign.nonce, &foreign.encrypted_cookie),
            Err(CookieError::Decrypt)
        );
        // The genuine reply is accepted once.
        assert_eq!(
            jar.consume_reply(t0, &reply.nonce, &reply.encrypted_cookie),
            Ok(())
        );
        assert_eq!(
            jar.consume_reply(t0, &reply.nonce, &reply.encrypted_cookie),
            Err(CookieError::Unsolicited)
        );
    }

    #[test]
    fn unsolicited_reply_is_refused() {
        let mut jar = CookieJar::new(&RESPONDER);
        let got = jar.consume_reply(Instant::now(), &[0; 24], &[0; 32]);
        assert_eq!(got, Err(CookieError::Unsolicited));
        assert_ne!(
            CookieError::Unsolicited.as_str(),
            CookieError::Decrypt.as_str()
        );
    }
}
