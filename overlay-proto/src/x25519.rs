//! X25519 (RFC 7748) for the handshake, computed by aws-lc.
//!
//! aws-lc's X25519 (s2n-bignum's formally verified assembly on x86-64 and
//! AArch64) takes about half the time of curve25519-dalek's, even with the
//! latter on its AVX2 backend: the handshake spends most of its time in
//! X25519. A [`PrivateKey`] is aws-lc's key, made once from the 32 private
//! bytes (which also derives the public key: a base-point multiplication)
//! and reused for every agreement with it. aws-lc keeps the key in memory it
//! allocated itself and wipes it when freeing it (`OPENSSL_free` cleanses);
//! the shared secrets it returns are zeroized too.
//!
//! An all-zero result (the peer sent a point of small order, so the result
//! does not depend on our key) is refused: aws-lc's `X25519()` fails on it,
//! and [`PrivateKey::diffie_hellman`] checks it again. Every other u, on the
//! curve or on its twist, canonical or not, gives RFC 7748's answer.
//!
//! The tests check aws-lc against two independent implementations from
//! curve25519-dalek: the Montgomery ladder (x25519-dalek) and the Edwards
//! form (map u to an Edwards point, multiply, map back; the ladder for twist
//! points, which have no Edwards point).
//!
//! [`SsCache`] keeps, per local static key, the static-static results
//! `DH(s_local, s_remote)` of recently seen remote static keys, as WireGuard
//! precomputes them: a rekey with a known peer then skips one of its
//! Diffie-Hellman operations. Each secret lives in its own allocation, never
//! moved, and is zeroized on eviction and drop.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;

use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Length of private keys, public keys and shared secrets.
const LEN: usize = 32;

/// An X25519 private key held by aws-lc, with its public key.
pub(crate) struct PrivateKey {
    key: agreement::PrivateKey,
    public: [u8; LEN],
}

impl PrivateKey {
    /// The key of `private` (any 32 bytes: X25519 clamps), or `None` when
    /// aws-lc fails, which it only does when it cannot allocate.
    pub(crate) fn new(private: &[u8; LEN]) -> Option<Self> {
        let key = agreement::PrivateKey::from_private_key(&agreement::X25519, private).ok()?;
        let public = key.compute_public_key().ok()?.as_ref().try_into().ok()?;
        Some(PrivateKey { key, public })
    }

    /// The public key.
    pub(crate) fn public_key(&self) -> &[u8; LEN] {
        &self.public
    }

    /// `X25519(self, peer)` for any 32 bytes `peer`, or `None` when the
    /// result is all zeros (a low-order point). aws-lc's other failure,
    /// failing to allocate, cannot be told apart and also gives `None`.
    pub(crate) fn diffie_hellman(&self, peer: &[u8; LEN]) -> Option<Zeroizing<[u8; LEN]>> {
        let peer = UnparsedPublicKey::new(&agreement::X25519, peer);
        let shared = agreement::agree(&self.key, peer, (), |secret| {
            let mut shared = Zeroizing::new([0u8; LEN]);
            if secret.len() != LEN {
                return Err(());
            }
            shared.copy_from_slice(secret);
            Ok(shared)
        })
        .ok()?;
        // aws-lc already refuses it; the cache and Noise rely on it.
        if bool::from(shared.ct_eq(&[0u8; LEN])) {
            None
        } else {
            Some(shared)
        }
    }
}

/// Static-static Diffie-Hellman results of one local static key, per remote
/// static key, bounded to a capacity with CLOCK (second chance) eviction.
pub(crate) struct SsCache {
    capacity: usize,
    /// Remote public key → index into `slots`.
    index: HashMap<[u8; LEN], usize>,
    /// Boxed so that growing the vector moves pointers, never the secrets
    /// (a reallocation would leave copies in freed memory). Never longer
    /// than `capacity`.
    #[allow(
        clippy::vec_box,
        reason = "the boxes keep the secrets in place when the vector grows"
    )]
    slots: Vec<Box<Slot>>,
    /// The CLOCK hand: the next eviction candidate.
    hand: usize,
}

struct Slot {
    remote: [u8; LEN],
    shared: Zeroizing<[u8; LEN]>,
    referenced: bool,
}

impl SsCache {
    /// An empty cache that will hold up to `capacity` keys.
    pub(crate) fn new(capacity: usize) -> Self {
        SsCache {
            capacity,
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
        }
    }

    /// The remembered result with `remote`, marking it recently used.
    pub(crate) fn shared(&mut self, remote: &[u8; LEN]) -> Option<Zeroizing<[u8; LEN]>> {
        let slot = self.slots.get_mut(*self.index.get(remote)?)?;
        slot.referenced = true;
        Some(slot.shared.clone())
    }

    /// Remembers `shared` = DH(local static, `remote`), evicting (and
    /// zeroizing) another entry if the cache is full.
    pub(crate) fn insert(&mut self, remote: &[u8; LEN], shared: &[u8; LEN]) {
        if let Some(slot) = self.index.get(remote).and_then(|&i| self.slots.get_mut(i)) {
            slot.shared.copy_from_slice(shared);
            slot.referenced = true;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(*remote, self.slots.len());
            let mut slot = Box::new(Slot {
                remote: *remote,
                shared: Zeroizing::new([0; LEN]),
                referenced: false,
            });
            slot.shared.copy_from_slice(shared);
            self.slots.push(slot);
            return;
        }
        // Full (or zero capacity): CLOCK. Every referenced slot passed over
        // loses its mark, so this ends within one turn.
        for _ in 0..=self.slots.len() {
            let Some(slot) = self.slots.get_mut(self.hand) else {
                return;
            };
            let victim = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.index.remove(&slot.remote);
            slot.shared.copy_from_slice(shared);
            slot.remote = *remote;
            self.index.insert(*remote, victim);
            return;
        }
    }

    /// Forgets (and zeroizes) every entry.
    pub(crate) fn clear(&mut self) {
        // Dropping a slot zeroizes its secret.
        self.slots.clear();
        self.index.clear();
        self.hand = 0;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::MontgomeryPoint;
    use rand::{RngCore, SeedableRng};

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// aws-lc, as the handshake computes it; all zeros when refused.
    fn aws_lc(private: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        PrivateKey::new(private)
            .unwrap()
            .diffie_hellman(u)
            .map_or([0; 32], |s| *s)
    }

    fn aws_lc_public(private: &[u8; 32]) -> [u8; 32] {
        *PrivateKey::new(private).unwrap().public_key()
    }

    /// Reference: the Montgomery ladder, as x25519-dalek computes it.
    fn ladder(private: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::StaticSecret::from(*private)
            .diffie_hellman(&x25519_dalek::PublicKey::from(*u))
            .to_bytes()
    }

    /// Reference: through the Edwards form with curve25519-dalek (u(−P) =
    /// u(P), so the sign chosen is irrelevant). `None` for a u on the twist,
    /// which has no Edwards point.
    fn edwards(private: &[u8; 32], u: &[u8; 32]) -> Option<[u8; 32]> {
        let point = MontgomeryPoint(*u).to_edwards(0)?;
        Some(point.mul_clamped(*private).to_montgomery().to_bytes())
    }

    fn is_on_twist(u: &[u8; 32]) -> bool {
        MontgomeryPoint(*u).to_edwards(0).is_none()
    }

    /// aws-lc against both references; returns aws-lc's result.
    fn cross_checked(private: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        let shared = aws_lc(private, u);
        assert_eq!(shared, ladder(private, u), "ladder, u = {u:02x?}");
        if let Some(by_edwards) = edwards(private, u) {
            assert_eq!(shared, by_edwards, "Edwards form, u = {u:02x?}");
        }
        shared
    }

    /// RFC 7748 §5.2 (the u-coordinates have the high bit set or are
    /// non-canonical) and §6.1 (Alice and Bob).
    #[test]
    fn rfc7748_vectors() {
        let cases = [
            (
                "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
                "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
                "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
            ),
            (
                "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
                "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
                "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
            ),
            (
                "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
                "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
            ),
            (
                "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
                "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
            ),
        ];
        for (scalar, u, want) in cases {
            assert_eq!(cross_checked(&hex32(scalar), &hex32(u)), hex32(want), "{u}");
        }
        // §6.1: the public keys.
        for (private, public) in [
            (
                "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
                "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            ),
            (
                "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
                "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            ),
        ] {
            assert_eq!(aws_lc_public(&hex32(private)), hex32(public));
            assert_eq!(
                MontgomeryPoint::mul_base_clamped(hex32(private)).to_bytes(),
                hex32(public)
            );
        }
    }

    /// RFC 7748 §5.2: k = u = 9, then k, u ← X25519(k, u), k; every step
    /// also by the ladder.
    #[test]
    fn rfc7748_iterated() {
        let mut k = [0u8; 32];
        k[0] = 9;
        let mut u = k;
        for i in 1..=1000 {
            let next = aws_lc(&k, &u);
            assert_eq!(next, ladder(&k, &u), "iteration {i}");
            u = k;
            k = next;
            if i == 1 {
                assert_eq!(
                    k,
                    hex32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
                );
            }
        }
        assert_eq!(
            k,
            hex32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
        );
    }

    /// Random 32-byte u: half on the curve, half on the twist, half with the
    /// ignored high bit set.
    #[test]
    fn aws_lc_matches_the_references_on_random_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7748);
        let (mut curve, mut twist) = (0, 0);
        for _ in 0..600 {
            let mut private = [0u8; 32];
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut private);
            rng.fill_bytes(&mut u);
            if is_on_twist(&u) {
                twist += 1;
            } else {
                curve += 1;
            }
            assert_ne!(cross_checked(&private, &u), [0; 32]);
        }
        assert!(curve > 200 && twist > 200, "curve {curve} twist {twist}");
    }

    #[test]
    fn aws_lc_matches_the_references_on_real_public_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(25519);
        for _ in 0..200 {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut a);
            rng.fill_bytes(&mut b);
            let (a_public, b_public) = (aws_lc_public(&a), aws_lc_public(&b));
            assert_eq!(
                b_public,
                x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b)).to_bytes()
            );
            assert_eq!(b_public, MontgomeryPoint::mul_base_clamped(b).to_bytes());
            assert!(!is_on_twist(&b_public));
            assert_eq!(cross_checked(&a, &b_public), cross_checked(&b, &a_public));
        }
    }

    /// The points of small order (and their non-canonical encodings, with
    /// the ignored high bit set or u ≥ p), and the twist's special u = −1:
    /// the references give all zeros, and aws-lc refuses them.
    #[test]
    fn low_order_and_special_points() {
        let low_order = [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut private = [0u8; 32];
        rng.fill_bytes(&mut private);
        let key = PrivateKey::new(&private).unwrap();
        for hex in low_order {
            let u = hex32(hex);
            let mut high = u;
            high[31] |= 0x80;
            for u in [u, high] {
                assert!(key.diffie_hellman(&u).is_none(), "{u:02x?}");
                assert_eq!(ladder(&private, &u), [0; 32], "{u:02x?}");
                assert_eq!(edwards(&private, &u).unwrap_or([0; 32]), [0; 32]);
            }
        }
        // u = −1 (ec..7f) is on the twist, and of order 2 there.
        assert!(is_on_twist(&hex32(low_order[4])));
        // u = p + 9 is the base point, non-canonically encoded.
        let mut nine_plus_p = hex32(low_order[5]);
        nine_plus_p[0] = 0xf6;
        let mut nine = [0u8; 32];
        nine[0] = 9;
        assert_eq!(
            cross_checked(&private, &nine_plus_p),
            aws_lc(&private, &nine)
        );
        assert_eq!(cross_checked(&private, &nine), *key.public_key());
    }

    fn entry(i: u8) -> ([u8; 32], [u8; 32]) {
        (aws_lc_public(&[i; 32]), [i; 32])
    }

    #[test]
    fn cache_remembers_and_evicts_with_second_chance() {
        let mut cache = SsCache::new(3);
        assert!(cache.shared(&[1; 32]).is_none());
        for i in 1..=3 {
            let (remote, shared) = entry(i);
            cache.insert(&remote, &shared);
        }
        assert_eq!(cache.len(), 3);
        // Using 1 gives it a second chance: 2, the oldest unused, goes.
        assert_eq!(*cache.shared(&entry(1).0).unwrap(), [1; 32]);
        let (remote, shared) = entry(4);
        cache.insert(&remote, &shared);
        assert_eq!(cache.len(), 3);
        let present = |cache: &mut SsCache, i: u8| cache.shared(&entry(i).0).is_some();
        assert!(!present(&mut cache, 2));
        for i in [1, 3, 4] {
            assert!(present(&mut cache, i), "{i}");
            assert_eq!(*cache.shared(&entry(i).0).unwrap(), [i; 32]);
        }
        // Re-inserting a known key replaces its value, not another entry.
        cache.insert(&entry(4).0, &[0x44; 32]);
        assert_eq!(cache.len(), 3);
        assert_eq!(*cache.shared(&entry(4).0).unwrap(), [0x44; 32]);

        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(!present(&mut cache, 1));
    }

    #[test]
    fn cache_never_grows_past_its_capacity() {
        let mut cache = SsCache::new(8);
        for i in 0..100u8 {
            let (remote, shared) = entry(i);
            cache.insert(&remote, &shared);
            assert_eq!(cache.len(), usize::from(i + 1).min(8));
            assert_eq!(cache.index.len(), cache.len());
            assert_eq!(*cache.shared(&remote).unwrap(), shared);
        }
        let mut empty = SsCache::new(0);
        let (remote, shared) = entry(1);
        empty.insert(&remote, &shared);
        assert!(empty.shared(&remote).is_none());
    }
}
