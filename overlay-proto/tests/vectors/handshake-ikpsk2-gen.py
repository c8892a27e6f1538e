#!/usr/bin/env python3
"""Independent reference for handshake-ikpsk2.txt.

A from-scratch Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s (Noise spec rev. 34)
plus permanet's payload and ESP key derivation, written without snow. It uses
Python's hashlib/hmac and the `cryptography` package (X25519, ChaCha20,
ChaCha20-Poly1305). The ephemeral keys follow the Rust code's RNG chain: the
caller's rand_chacha ChaCha20Rng (seeded with 32 fixed bytes) gives 32 bytes
that seed a second ChaCha20Rng, whose first 32 bytes are the ephemeral private
key. rand_chacha's ChaCha20Rng output is the ChaCha20 keystream with counter
and stream id 0, i.e. ChaCha20 with a 16-byte all-zero "nonce" here.

Run: python3 handshake-ikpsk2-gen.py > handshake-ikpsk2.txt
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization

PROTOCOL = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"permanet v1"
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def chacha_rng(seed, n):
    enc = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    return enc.update(bytes(n))


def pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes(*RAW)


def dh(priv, pub_):
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub_))


def hash_(data):
    return hashlib.blake2s(data).digest()


def hmac_(key, data):
    return hmac.new(key, data, hashlib.blake2s).digest()


def noise_hkdf(ck, ikm, n):
    temp = hmac_(ck, ikm)
    outs, prev = [], b""
    for i in range(1, n + 1):
        prev = hmac_(temp, prev + bytes([i]))
        outs.append(prev)
    return outs


class Symmetric:
    def __init__(self):
        self.h = hash_(PROTOCOL) if len(PROTOCOL) > 32 else PROTOCOL.ljust(32, b"\0")
        self.ck = self.h
        self.k = None
        self.n = 0

    def mix_hash(self, data):
        self.h = hash_(self.h + data)

    def mix_key(self, ikm):
        self.ck, k = noise_hkdf(self.ck, ikm, 2)
        self.k, self.n = k, 0

    def mix_key_and_hash(self, ikm):
        self.ck, th, k = noise_hkdf(self.ck, ikm, 3)
        self.mix_hash(th)
        self.k, self.n = k, 0

    def _nonce(self):
        nonce = bytes(4) + struct.pack("<Q", self.n)
        self.n += 1
        return nonce

    def encrypt_and_hash(self, p):
        c = ChaCha20Poly1305(self.k).encrypt(self._nonce(), p, self.h)
        self.mix_hash(c)
        return c

    def decrypt_and_hash(self, c):
        p = ChaCha20Poly1305(self.k).decrypt(self._nonce(), c, self.h)
        self.mix_hash(c)
        return p


def hkdf_sha256(salt, ikm, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


def payload(spi, unix_secs, lease):
    tai = struct.pack(">QI", (1 << 62) + 10 + unix_secs, 0)
    return struct.pack(">I", spi) + tai + struct.pack(">H", len(lease)) + lease


def handshake(name, i_priv, r_priv, psk, i_seed, r_seed, p1, p2):
    i_pub, r_pub = pub(i_priv), pub(r_priv)
    i_e = chacha_rng(chacha_rng(i_seed, 32), 32)
    r_e = chacha_rng(chacha_rng(r_seed, 32), 32)

    # Initiator writes message 1: -> e, es, s, ss
    ini = Symmetric()
    ini.mix_hash(PROLOGUE)
    ini.mix_hash(r_pub)
    e = pub(i_e)
    msg1 = e
    ini.mix_hash(e)
    ini.mix_key(e)
    ini.mix_key(dh(i_e, r_pub))
    msg1 += ini.encrypt_and_hash(i_pub)
    ini.mix_key(dh(i_priv, r_pub))
    msg1 += ini.encrypt_and_hash(p1)

    # Responder reads message 1 and writes message 2: <- e, ee, se, psk
    res = Symmetric()
    res.mix_hash(PROLOGUE)
    res.mix_hash(r_pub)
    re = msg1[:32]
    res.mix_hash(re)
    res.mix_key(re)
    res.mix_key(dh(r_priv, re))
    rs = res.decrypt_and_hash(msg1[32:80])
    assert rs == i_pub
    res.mix_key(dh(r_priv, rs))
    assert res.decrypt_and_hash(msg1[80:]) == p1
    e = pub(r_e)
    msg2 = e
    res.mix_hash(e)
    res.mix_key(e)
    res.mix_key(dh(r_e, re))
    res.mix_key(dh(r_e, rs))
    res.mix_key_and_hash(psk)
    msg2 += res.encrypt_and_hash(p2)

    # Initiator reads message 2.
    ini.mix_hash(msg2[:32])
    ini.mix_key(msg2[:32])
    ini.mix_key(dh(i_e, msg2[:32]))
    ini.mix_key(dh(i_priv, msg2[:32]))
    ini.mix_key_and_hash(psk)
    assert ini.decrypt_and_hash(msg2[32:]) == p2
    assert ini.h == res.h and ini.ck == res.ck

    k_i2r, k_r2i = noise_hkdf(ini.ck, b"", 2)
    i2r = hkdf_sha256(ini.h, k_i2r, b"permanet v1 esp initiator->responder", 36)
    r2i = hkdf_sha256(ini.h, k_r2i, b"permanet v1 esp responder->initiator", 36)

    print(f"[{name}]")
    for k, v in [
        ("initiator_private", i_priv), ("responder_private", r_priv), ("psk", psk),
        ("initiator_rng_seed", i_seed), ("responder_rng_seed", r_seed),
        ("initiation", msg1), ("response", msg2), ("handshake_hash", ini.h),
        ("i2r_key", i2r[:32]), ("i2r_salt", i2r[32:]),
        ("r2i_key", r2i[:32]), ("r2i_salt", r2i[32:]),
    ]:
        print(f"{k} = {v.hex()}")
    print()


print("# Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, prologue \"permanet v1\", permanet payloads")
print("# (spi 0x10000001 / 0x20000002, TAI64N of Unix 1700000000 / 1700000001, leases")
print("# b\"initiator lease\" / b\"responder lease\") and ESP keys (HKDF-SHA256).")
print("# Generated by handshake-ikpsk2-gen.py, an implementation independent of snow.")
print()
i_priv = bytes(range(0x01, 0x21))
r_priv = bytes(range(0x41, 0x61))
p1 = payload(0x10000001, 1700000000, b"initiator lease")
p2 = payload(0x20000002, 1700000001, b"responder lease")
handshake("with-psk", i_priv, r_priv, bytes([0x5A] * 32), bytes([0x01] * 32), bytes([0x02] * 32), p1, p2)
handshake("without-psk", i_priv, r_priv, bytes(32), bytes([0x03] * 32), bytes([0x04] * 32), p1, p2)
