//! Authority data messages: framing, sealing and opening with a session's
//! keys, and the anti-replay window.
#![deny(clippy::indexing_slicing)]

use zeroize::Zeroize;

use super::{AuthorityDrop, DATA_HEADER_LEN, DATA_TAG_LEN, MAX_DATA_LEN};
use crate::aead::{AeadProvider, EspAead, EspCipher, NONCE_LEN};
use crate::esp::EspKeyMaterial;
use crate::handshake::SaKeys;
use crate::replay::{ReplayError, ReplayWindow};
use crate::wire::{MessageType, NON_ESP_MARKER};

/// The keys and counters of one established session, one direction each.
pub(super) struct SessionCrypto {
    send: EspCipher,
    send_salt: [u8; 4],
    next_counter: u64,
    recv: EspCipher,
    recv_salt: [u8; 4],
    window: ReplayWindow,
}

/// The clear header of a data message.
pub(super) struct DataHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl DataHeader {
    /// Reads the header of a data message (the control header must already
    /// say `AuthorityData`), checking the length bounds.
    pub fn parse(datagram: &[u8]) -> Result<Self, AuthorityDrop> {
        if datagram.len() < DATA_HEADER_LEN + DATA_TAG_LEN || datagram.len() > MAX_DATA_LEN {
            return Err(AuthorityDrop::Malformed);
        }
        let (_, rest) = datagram
            .split_first_chunk::<{ crate::wire::HEADER_LEN }>()
            .ok_or(AuthorityDrop::Malformed)?;
        let (receiver, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(AuthorityDrop::Malformed)?;
        let (counter, _) = rest
            .split_first_chunk::<8>()
            .ok_or(AuthorityDrop::Malformed)?;
        Ok(DataHeader {
            receiver: u32::from_be_bytes(*receiver),
            counter: u64::from_be_bytes(*counter),
        })
    }
}

impl SessionCrypto {
    pub fn new(keys: &SaKeys) -> Self {
        SessionCrypto {
            send: cipher(&keys.outbound),
            send_salt: keys.outbound.salt,
            next_counter: 1,
            recv: cipher(&keys.inbound),
            recv_salt: keys.inbound.salt,
            window: ReplayWindow::new(),
        }
    }

    /// Seals `record` into a data message for the peer's session
    /// `receiver`.
    pub fn seal(&mut self, receiver: u32, record: &[u8]) -> Option<Vec<u8>> {
        let counter = self.next_counter;
        // 2^64 messages never happen; refuse rather than reuse a nonce.
        self.next_counter = counter.checked_add(1)?;
        let len = DATA_HEADER_LEN + record.len() + DATA_TAG_LEN;
        if len > MAX_DATA_LEN {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&NON_ESP_MARKER);
        out.extend_from_slice(&[u8::from(MessageType::AuthorityData), 0, 0, 0]);
        out.extend_from_slice(&receiver.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(record);
        let (aad, body) = out.split_at_mut(DATA_HEADER_LEN);
        let tag = self
            .send
            .seal_in_place(&nonce(&self.send_salt, counter), aad, body);
        out.extend_from_slice(&tag);
        Some(out)
    }

    /// Checks the replay window, authenticates and decrypts `datagram` in
    /// place, records the counter, and returns the plaintext record.
    pub fn open<'a>(&mut self, datagram: &'a mut [u8]) -> Result<&'a mut [u8], AuthorityDrop> {
        let header = DataHeader::parse(datagram)?;
        self.window.check(header.counter).map_err(replay_drop)?;
        let (aad, rest) = datagram.split_at_mut(DATA_HEADER_LEN);
        let body_len = rest
            .len()
            .checked_sub(DATA_TAG_LEN)
            .ok_or(AuthorityDrop::Malformed)?;
        let (body, tag) = rest.split_at_mut(body_len);
        let tag: &[u8; DATA_TAG_LEN] = (&*tag).try_into().map_err(|_| AuthorityDrop::Malformed)?;
        if self
            .recv
            .open_in_place(&nonce(&self.recv_salt, header.counter), aad, body, tag)
            .is_err()
        {
            body.zeroize();
            return Err(AuthorityDrop::DecryptFailed);
        }
        self.window.update(header.counter).map_err(replay_drop)?;
        Ok(body)
    }
}

fn cipher(keys: &EspKeyMaterial) -> EspCipher {
    EspCipher::new(AeadProvider::Ring, &keys.key)
}

fn nonce(salt: &[u8; 4], counter: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    let (s, c) = nonce.split_at_mut(4);
    s.copy_from_slice(salt);
    c.copy_from_slice(&counter.to_be_bytes());
    nonce
}

fn replay_drop(e: ReplayError) -> AuthorityDrop {
    match e {
        ReplayError::Duplicate | ReplayError::Zero => AuthorityDrop::ReplayDuplicate,
        ReplayError::TooOld => AuthorityDrop::ReplayTooOld,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn pair() -> (SessionCrypto, SessionCrypto) {
        let a = EspKeyMaterial {
            key: [1; 32],
            salt: [1, 2, 3, 4],
        };
        let b = EspKeyMaterial {
            key: [2; 32],
            salt: [5, 6, 7, 8],
        };
        let client = SessionCrypto::new(&SaKeys {
            outbound: a.clone(),
            inbound: b.clone(),
        });
        let server = SessionCrypto::new(&SaKeys {
            outbound: b,
            inbound: a,
        });
        (client, server)
    }

    #[test]
    fn seal_open_known_header_and_replay() {
        let (mut client, mut server) = pair();
        let sealed = client.seal(0x1234, b"hello").unwrap();
        assert_eq!(
            sealed[..DATA_HEADER_LEN],
            [0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(sealed.len(), DATA_HEADER_LEN + 5 + DATA_TAG_LEN);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        let mut copy = sealed.clone();
        assert_eq!(server.open(&mut copy).unwrap(), b"hello");
        let mut again = sealed.clone();
        assert_eq!(server.open(&mut again), Err(AuthorityDrop::ReplayDuplicate));
        // Any flipped bit is refused, header included.
        let next = client.seal(0x1234, b"world").unwrap();
        for i in 0..next.len() {
            let mut bad = next.clone();
            bad[i] ^= 0x01;
            assert!(server.open(&mut bad).is_err(), "bit flip at {i}");
        }
        let mut good = next.clone();
        assert_eq!(server.open(&mut good).unwrap(), b"world");
        // The server's own direction has its own keys.
        let back = server.seal(0x99, b"x").unwrap();
        let mut copy = back.clone();
        assert_eq!(client.open(&mut copy).unwrap(), b"x");
    }

    #[test]
    fn bounds_are_checked() {
        let (_, mut server) = pair();
        let mut short = vec![0u8; DATA_HEADER_LEN + DATA_TAG_LEN - 1];
        assert_eq!(server.open(&mut short), Err(AuthorityDrop::Malformed));
        let mut long = vec![0u8; MAX_DATA_LEN + 1];
        assert_eq!(server.open(&mut long), Err(AuthorityDrop::Malformed));
        let (mut client, _) = pair();
        assert!(client
            .seal(
                1,
                &vec![0u8; MAX_DATA_LEN - DATA_HEADER_LEN - DATA_TAG_LEN + 1]
            )
            .is_none());
    }
}
