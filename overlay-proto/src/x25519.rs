//! X25519 (RFC 7748) for the handshake, made cheaper in two ways.
//!
//! A variable-base X25519 goes through the Edwards form: the peer's
//! u-coordinate is mapped to an Edwards point, multiplied by the clamped
//! scalar, and mapped back. The result only depends on u (the sign of the
//! Edwards x-coordinate is irrelevant since u(−P) = u(P)), so it is the same
//! as the Montgomery ladder's, and curve25519-dalek runs the Edwards
//! multiplication on its AVX2 backend when the CPU has one, which the ladder
//! never uses. A u-coordinate on the quadratic twist has no Edwards point:
//! those fall back to the ladder, so every input gives the ladder's answer.
//! Both ways are constant time in the secret scalar; only the public point is
//! examined.
//!
//! [`SsCache`] keeps, per local static key, the static-static results
//! `DH(s_local, s_remote)` of recently seen remote static keys, as WireGuard
//! precomputes them: a rekey with a known peer then skips one of its
//! Diffie-Hellman operations. Each secret lives in its own allocation, never
//! moved, and is zeroized on eviction and drop.
#![deny(clippy::indexing_slicing)]

use std::collections::HashMap;

use curve25519_dalek::{EdwardsPoint, MontgomeryPoint};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The X25519 public key of `private`: a base-point multiplication.
pub(crate) fn public_key(private: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(*private).to_bytes()
}

/// A peer's X25519 public key, with its Edwards form computed once so that
/// several Diffie-Hellman operations with it share the conversion.
#[derive(Clone, Copy)]
pub(crate) struct RemotePoint {
    u: [u8; 32],
    /// `None` when u is on the twist: the ladder is used then.
    edwards: Option<EdwardsPoint>,
}

impl RemotePoint {
    /// Prepares `u` (any 32 bytes, as X25519 accepts).
    pub(crate) fn new(u: [u8; 32]) -> Self {
        RemotePoint {
            u,
            edwards: MontgomeryPoint(u).to_edwards(0),
        }
    }

    /// The public key bytes as received.
    pub(crate) fn u(&self) -> &[u8; 32] {
        &self.u
    }

    /// `X25519(private, u)`, or `None` when the result is all zeros (a
    /// low-order point: the result would not depend on `private`).
    pub(crate) fn diffie_hellman(&self, private: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let mut shared = match self.edwards {
            Some(point) => {
                let mut product = point.mul_clamped(*private);
                let u = product.to_montgomery();
                product.zeroize();
                u
            }
            None => MontgomeryPoint(self.u).mul_clamped(*private),
        };
        let bytes = Zeroizing::new(shared.to_bytes());
        shared.zeroize();
        if bool::from(bytes.ct_eq(&[0u8; 32])) {
            None
        } else {
            Some(bytes)
        }
    }

    #[cfg(test)]
    fn is_on_twist(&self) -> bool {
        self.edwards.is_none()
    }
}

/// Static-static Diffie-Hellman results of one local static key, per remote
/// static key, bounded to a capacity with CLOCK (second chance) eviction.
///
/// The remote's [`RemotePoint`] is kept too: the ephemeral Diffie-Hellman
/// with that key (`se` at the responder, `es` at the initiator) then skips
/// its conversion to the Edwards form.
pub(crate) struct SsCache {
    capacity: usize,
    /// Remote public key → index into `slots`.
    index: HashMap<[u8; 32], usize>,
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
    remote: RemotePoint,
    shared: Zeroizing<[u8; 32]>,
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
    pub(crate) fn shared(&mut self, remote: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
        let slot = self.slots.get_mut(*self.index.get(remote)?)?;
        slot.referenced = true;
        Some(slot.shared.clone())
    }

    /// The prepared point of a remembered remote key.
    pub(crate) fn point(&self, remote: &[u8; 32]) -> Option<RemotePoint> {
        let slot = self.slots.get(*self.index.get(remote)?)?;
        Some(slot.remote)
    }

    /// Remembers `shared` = DH(local static, `remote`), evicting (and
    /// zeroizing) another entry if the cache is full.
    pub(crate) fn insert(&mut self, remote: RemotePoint, shared: &[u8; 32]) {
        if let Some(slot) = self
            .index
            .get(remote.u())
            .and_then(|&i| self.slots.get_mut(i))
        {
            slot.shared.copy_from_slice(shared);
            slot.referenced = true;
            return;
        }
        if self.slots.len() < self.capacity {
            self.index.insert(remote.u, self.slots.len());
            let mut slot = Box::new(Slot {
                remote,
                shared: Zeroizing::new([0; 32]),
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
            self.index.remove(slot.remote.u());
            slot.shared.copy_from_slice(shared);
            slot.remote = remote;
            self.index.insert(remote.u, victim);
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
    use rand::{RngCore, SeedableRng};

    fn hex32(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The ladder, as x25519-dalek computes it.
    fn ladder(private: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        x25519_dalek::StaticSecret::from(*private)
            .diffie_hellman(&x25519_dalek::PublicKey::from(*u))
            .to_bytes()
    }

    fn fast(private: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
        RemotePoint::new(*u)
            .diffie_hellman(private)
            .map_or([0; 32], |s| *s)
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
            assert_eq!(ladder(&hex32(scalar), &hex32(u)), hex32(want), "{u}");
            assert_eq!(fast(&hex32(scalar), &hex32(u)), hex32(want), "{u}");
        }
        // §6.1: the public keys.
        assert_eq!(
            public_key(&hex32(
                "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
            )),
            hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
    }

    /// RFC 7748 §5.2: k = u = 9, then k, u ← X25519(k, u), k.
    #[test]
    fn rfc7748_iterated() {
        let mut k = [0u8; 32];
        k[0] = 9;
        let mut u = k;
        for i in 1..=1000 {
            let next = fast(&k, &u);
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

    #[test]
    fn edwards_path_matches_the_ladder_on_random_points() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7748);
        let (mut curve, mut twist) = (0, 0);
        for _ in 0..600 {
            let mut private = [0u8; 32];
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut private);
            rng.fill_bytes(&mut u);
            let point = RemotePoint::new(u);
            if point.is_on_twist() {
                twist += 1;
            } else {
                curve += 1;
            }
            assert_eq!(fast(&private, &u), ladder(&private, &u), "{u:02x?}");
        }
        // About half of all u are on the twist: both paths were exercised.
        assert!(curve > 200 && twist > 200, "curve {curve} twist {twist}");
    }

    #[test]
    fn edwards_path_matches_the_ladder_on_real_public_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(25519);
        for _ in 0..200 {
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut a);
            rng.fill_bytes(&mut b);
            let b_public = public_key(&b);
            assert!(!RemotePoint::new(b_public).is_on_twist());
            assert_eq!(fast(&a, &b_public), ladder(&a, &b_public));
            assert_eq!(fast(&a, &b_public), fast(&b, &public_key(&a)));
        }
    }

    /// The points of small order (and their non-canonical encodings, with
    /// the ignored high bit set or u ≥ p), and the twist's special u = −1:
    /// all give an all-zero result, which is refused, or the ladder's.
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
        for hex in low_order {
            let u = hex32(hex);
            let mut high = u;
            high[31] |= 0x80;
            for u in [u, high] {
                let point = RemotePoint::new(u);
                // u = −1 (ec..7f) is on the twist, and of order 2 there.
                assert!(point.diffie_hellman(&private).is_none(), "{u:02x?}");
                assert_eq!(ladder(&private, &u), [0; 32], "{u:02x?}");
            }
        }
        assert!(RemotePoint::new(hex32(low_order[4])).is_on_twist());
        // u = p + 9 is the base point, non-canonically encoded.
        let mut nine_plus_p = hex32(low_order[5]);
        nine_plus_p[0] = 0xf6;
        let mut nine = [0u8; 32];
        nine[0] = 9;
        assert_eq!(fast(&private, &nine_plus_p), fast(&private, &nine));
        assert_eq!(fast(&private, &nine_plus_p), ladder(&private, &nine_plus_p));
        assert_eq!(fast(&private, &nine), public_key(&private));
    }

    fn entry(i: u8) -> (RemotePoint, [u8; 32]) {
        let u = public_key(&[i; 32]);
        (RemotePoint::new(u), [i; 32])
    }

    #[test]
    fn cache_remembers_and_evicts_with_second_chance() {
        let mut cache = SsCache::new(3);
        assert!(cache.shared(&[1; 32]).is_none());
        for i in 1..=3 {
            let (point, shared) = entry(i);
            cache.insert(point, &shared);
        }
        assert_eq!(cache.len(), 3);
        // Using 1 gives it a second chance: 2, the oldest unused, goes.
        let one = *entry(1).0.u();
        assert_eq!(*cache.shared(&one).unwrap(), [1; 32]);
        let (point, shared) = entry(4);
        cache.insert(point, &shared);
        assert_eq!(cache.len(), 3);
        let present = |cache: &mut SsCache, i: u8| cache.shared(entry(i).0.u()).is_some();
        assert!(!present(&mut cache, 2));
        for i in [1, 3, 4] {
            assert!(present(&mut cache, i), "{i}");
            assert_eq!(*cache.shared(entry(i).0.u()).unwrap(), [i; 32]);
            assert_eq!(cache.point(entry(i).0.u()).unwrap().u(), entry(i).0.u());
        }
        // Re-inserting a known key replaces its value, not another entry.
        cache.insert(entry(4).0, &[0x44; 32]);
        assert_eq!(cache.len(), 3);
        assert_eq!(*cache.shared(entry(4).0.u()).unwrap(), [0x44; 32]);

        cache.clear();
        assert_eq!(cache.len(), 0);
        assert!(!present(&mut cache, 1));
    }

    #[test]
    fn cache_never_grows_past_its_capacity() {
        let mut cache = SsCache::new(8);
        for i in 0..100u8 {
            let (point, shared) = entry(i);
            cache.insert(point, &shared);
            assert_eq!(cache.len(), usize::from(i + 1).min(8));
            assert_eq!(cache.index.len(), cache.len());
            assert_eq!(*cache.shared(point.u()).unwrap(), shared);
        }
        let mut empty = SsCache::new(0);
        let (point, shared) = entry(1);
        empty.insert(point, &shared);
        assert!(empty.shared(point.u()).is_none());
    }
}
