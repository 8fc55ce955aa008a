"""The fenced low-level part: the only module that touches cryptographic primitives.

Everything comes from the ``cryptography`` package (OpenSSL underneath); nothing here is home-made.
Callers use the small, misuse-resistant functions below, never the primitives directly:

- :func:`seal` / :func:`unseal`: AES-256-GCM with a fresh random 96-bit nonce per call and associated
  data; a failed tag check raises :class:`~mithridate.vault.errors.IntegrityError`, so altered bytes or a
  wrong key can never come back as plaintext.
- :func:`derive`: HKDF-SHA256, to give every purpose of one master secret its own key.
- :class:`Signer` / :func:`verify_signature`: Ed25519 (RFC 8032).
- :func:`digest` / :func:`Hasher`: SHA-256.

Nonces: each data key encrypts exactly one object, and the master key wraps at most a few million data
keys, far below the 2^32 random-nonce bound NIST SP 800-38D sets per key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mithridate.vault.errors import IntegrityError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
Hasher = hashlib.sha256


def random_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def random_id(n_bytes: int = 16) -> str:
    return os.urandom(n_bytes).hex()


def digest(data: bytes) -> str:
    """SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: ``nonce || ciphertext || tag``, authenticating ``aad`` too."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes, what: str) -> bytes:
    """Inverse of :func:`seal`; raises :class:`IntegrityError` naming ``what`` if anything is off."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise IntegrityError(f"{what}: truncated ({len(blob)} bytes)")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise IntegrityError(f"{what}: authentication failed (altered, or encrypted under another key)") from None


def derive(secret: bytes, purpose: str) -> bytes:
    """A 256-bit key for one ``purpose`` from a master secret (HKDF-SHA256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"mithridate-vault/{purpose}".encode()).derive(secret)


def mac(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 as hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def same(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(a, b)


class Signer:
    """An Ed25519 signing key (RFC 8032)."""

    def __init__(self, private: bytes):
        self._key = Ed25519PrivateKey.from_private_bytes(private)

    @classmethod
    def generate(cls) -> Signer:
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption()))

    def private_bytes(self) -> bytes:
        return self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption())

    @property
    def public_hex(self) -> str:
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw).hex()

    def sign(self, data: bytes) -> str:
        return self._key.sign(data).hex()


def verify_signature(public_hex: str, data: bytes, signature_hex: str) -> bool:
    """True when ``signature_hex`` is a valid Ed25519 signature of ``data`` under ``public_hex``."""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex), data)
    except (InvalidSignature, ValueError):
        return False
    return True
