//! ESP (RFC 4303) with ChaCha20-Poly1305 (RFC 7634) inside RFC 3948 UDP framing.

use zeroize::{Zeroize, ZeroizeOnDrop};

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
