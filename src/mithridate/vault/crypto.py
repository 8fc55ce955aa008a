"""Envelope encryption at rest: master keys, data keys, encrypted objects and the vault's signing key.

Every stored object is AES-256-GCM encrypted under its own random 256-bit data key. Data keys are
stored apart from the data (``keys/dek/<id>`` in the storage backend), wrapped by the master key; so a key
rotation re-wraps a few hundred bytes per object and never re-writes the (write-once) data. The master
key comes from a key file, an environment variable, or any :class:`KeyProvider` (a KMS): see
:func:`load_provider`.

Object layout: ``MAGIC | data-key id (16 bytes) | nonce | ciphertext | tag``; the associated data binds
the magic, the data-key id and the object's name (the SHA-256 of its plaintext), so an object moved to
another name, a swapped key reference or a flipped byte all fail authentication, and the plaintext's
hash is checked again after decryption.

>>> provider = MasterKey(random_key())
>>> blob = provider.wrap(b"k" * 32, "example")
>>> provider.unwrap(blob, "example") == b"k" * 32
True
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from mithridate.vault.errors import IntegrityError, NotFound, VaultError
from mithridate.vault.primitives import (
    Signer,
    derive,
    digest,
    mac,
    random_id,
    random_key,
    same,
    seal,
    unseal,
)

OBJECT_MAGIC = b"MTHVOB1\n"
DEK_ID_BYTES = 16
KEY_ENV = "MITHRIDATE_VAULT_KEY"
PLUGINS_ENV = "MITHRIDATE_VAULT_KEY_PLUGINS"
BUILTIN_PLUGINS = frozenset({"mithridate.vault.crypto:AwsKms"})


@runtime_checkable
class KeyProvider(Protocol):
    """What wraps data keys: a local master key or a KMS. ``key_id`` names the wrapping key."""

    key_id: str

    def wrap(self, key: bytes, context: str) -> bytes: ...

    def unwrap(self, blob: bytes, context: str) -> bytes: ...


class MasterKey:
    """A 256-bit master secret held by this process (from a key file or an environment variable).

    Separate keys are derived per purpose (HKDF): one wraps data keys, one yields the public key id
    (a check value: a wrong or altered master key is recognised before anything is decrypted).
    """

    def __init__(self, secret: bytes, origin: str = "master key"):
        if len(secret) != 32:
            raise IntegrityError(f"{origin}: a master key is 32 bytes, this one is {len(secret)}")
        self._kek = derive(secret, "kek/v1")
        self.key_id = mac(derive(secret, "key-id/v1"), b"mithridate-vault key check")[:24]
        self.origin = origin

    def wrap(self, key: bytes, context: str) -> bytes:
        return seal(self._kek, key, f"wrap:{context}".encode())

    def unwrap(self, blob: bytes, context: str) -> bytes:
        return unseal(self._kek, blob, f"wrap:{context}".encode(), context)


def encode_key(secret: bytes) -> str:
    return base64.b64encode(secret).decode()


def decode_key(text: str, origin: str) -> MasterKey:
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise IntegrityError(f"{origin}: not a base64 master key (altered?)") from None
    return MasterKey(secret, origin)


def write_key_file(path: Path, secret: bytes) -> None:
    """Create a key file readable by its owner only; never overwrites an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(encode_key(secret) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_provider(spec: dict, root: Path) -> KeyProvider:
    """The key provider a vault's configuration names.

    - ``{"source": "file", "path": "keys/master.key"}`` (relative to the vault folder, or absolute);
    - ``{"source": "env", "var": "MITHRIDATE_VAULT_KEY"}``: base64 of 32 bytes;
    - ``{"source": "plugin", "factory": "package.module:make", "options": {...}}``: ``make(**options)``
      returns a :class:`KeyProvider` (e.g. a cloud KMS client; see :class:`AwsKms`). The file only
      *names* the plugin: it is imported only if it is built in or the operator allows it in
      ``$MITHRIDATE_VAULT_KEY_PLUGINS`` (comma-separated), since this runs before the configuration's
      signature can be checked (the signing key is unwrapped with this very provider).
    """
    source = spec.get("source")
    if source == "file":
        path = Path(spec["path"])
        path = path if path.is_absolute() else root / path
        if not path.exists():
            raise VaultError(f"{path}: master key file not found")
        return decode_key(path.read_text(), spec["path"])
    if source == "env":
        var = spec.get("var", KEY_ENV)
        if not os.environ.get(var):
            raise VaultError(f"the master key is expected in the environment variable {var}, which is not set")
        return decode_key(os.environ[var], f"${var}")
    if source == "plugin":
        allowed = BUILTIN_PLUGINS | {p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()}
        if spec.get("factory") not in allowed:
            raise VaultError(f"the key plugin {spec.get('factory')!r} is not allowed: plugins are built in "
                             f"({', '.join(sorted(BUILTIN_PLUGINS))}) or allowed by the operator in ${PLUGINS_ENV}")
        module, _, name = spec["factory"].partition(":")
        provider = getattr(importlib.import_module(module), name)(**spec.get("options", {}))
        if not isinstance(provider, KeyProvider):
            raise VaultError(f"{spec['factory']} did not return a key provider (needs key_id, wrap, unwrap)")
        return provider
    raise VaultError(f"unknown master key source {source!r} (file, env or plugin)")


class AwsKms:
    """Wrap data keys with AWS KMS (``Encrypt``/``Decrypt`` with an encryption context); boto3 client.

    Configure as ``{"source": "plugin", "factory": "mithridate.vault.crypto:AwsKms",
    "options": {"key_id": "arn:aws:kms:...", "region": "eu-west-1"}}``.
    """

    def __init__(self, key_id: str, region: str | None = None, endpoint_url: str | None = None):
        import boto3

        self.key_id = key_id
        self._kms = boto3.client("kms", region_name=region, endpoint_url=endpoint_url)

    def wrap(self, key: bytes, context: str) -> bytes:
        return self._kms.encrypt(KeyId=self.key_id, Plaintext=key,
                                 EncryptionContext={"mithridate": context})["CiphertextBlob"]

    def unwrap(self, blob: bytes, context: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self._kms.decrypt(CiphertextBlob=blob, KeyId=self.key_id,
                                     EncryptionContext={"mithridate": context})["Plaintext"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException"):
                raise IntegrityError(f"{context}: KMS refused to unwrap ({code}: altered or another key)") from None
            raise


def wrap_record(provider: KeyProvider, key: bytes, context: str) -> bytes:
    """``key`` wrapped by ``provider``, as a small JSON record naming the wrapping key."""
    return json.dumps({"kek": provider.key_id,
                       "wrapped": base64.b64encode(provider.wrap(key, context)).decode()}).encode()


def open_record(providers: dict[str, KeyProvider], raw: bytes | str, context: str, where: str) -> bytes:
    """The key inside a record from :func:`wrap_record`; :class:`IntegrityError` unless it authenticates."""
    try:
        record = json.loads(raw)
        wrapped = base64.b64decode(record["wrapped"], validate=True)
        kek = record["kek"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{where}: unreadable key record (altered)") from None
    if kek not in providers:
        raise IntegrityError(f"{where}: wrapped under an unknown master key {kek!r} (altered, or the key "
                             "is missing)")
    try:
        return providers[kek].unwrap(wrapped, context)
    except IntegrityError:
        raise IntegrityError(f"{where}: the key cannot be unwrapped (altered, or wrong master key)"
                             ) from None


# --- data keys ----------------------------------------------------------------------------------------
DEK_PREFIX = "keys/dek/"
SIGNING_KEY = "keys/signing"


class Keyring:
    """Data keys, each wrapped by the master key and kept in the backend's mutable ``keys/`` namespace.

    ``providers`` maps key ids to providers: the current one, plus the retiring one during a rotation.
    ``guard(current)``, if given, runs before every wrap and raises if ``current`` is no longer the key
    the vault names (another process rotated it: wrapping under the retired key would lose the data).
    """

    def __init__(self, backend, providers: dict[str, KeyProvider], current: str,
                 guard: Callable[[str], None] | None = None,
                 wrap_lock: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.backend = backend
        self.providers = providers
        self.current = current
        self.guard = guard
        self.wrap_lock = wrap_lock  # held while wrapping; a rotation in another process holds it exclusively
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._switching = threading.Lock()

    def _record(self, key: bytes, context: str) -> bytes:
        return wrap_record(self.providers[self.current], key, context)

    def _open_record(self, raw: bytes, context: str, where: str) -> bytes:
        return open_record(self.providers, raw, context, where)

    def new_data_key(self) -> tuple[bytes, bytes]:
        """A fresh random data key, stored wrapped; returns ``(id, key)``."""
        dek_id = os.urandom(DEK_ID_BYTES)
        key = random_key()
        with self._switching, self.wrap_lock():  # no rotation, here or elsewhere, interleaves with a wrap
            if self.guard is not None:
                self.guard(self.current)
            self.backend.put_mutable(DEK_PREFIX + dek_id.hex(), self._record(key, f"dek/{dek_id.hex()}"))
        return dek_id, key

    def switch(self, provider: KeyProvider, announce: Callable[[], None] = lambda: None) -> None:
        """Make ``provider`` the wrapping key; data keys wrapped from now on use it (rotation, step one).
        ``announce`` (writing the configuration that names it) runs under the same lock."""
        with self._switching:
            announce()
            self.providers[provider.key_id] = provider
            self.current = provider.key_id

    def data_key(self, dek_id: bytes) -> bytes:
        name = dek_id.hex()
        with self._lock:
            if name in self._cache:
                return self._cache[name]
        where = DEK_PREFIX + name
        try:
            raw = self.backend.get(where)
        except NotFound:
            raise IntegrityError(f"{where}: data key missing") from None
        key = self._open_record(raw, f"dek/{name}", where)
        with self._lock:
            self._cache[name] = key
        return key

    def rewrap(self, where: str, context: str) -> bool:
        """Re-wrap one record under the current key; False if it already was."""
        raw = self.backend.get(where)
        if json.loads(raw).get("kek") == self.current:
            return False
        key = self._open_record(raw, context, where)
        self.backend.put_mutable(where, self._record(key, context))
        return True

    def rewrap_all(self) -> int:
        """Re-wrap every data key and the signing key under the current master key (resumable)."""
        count = 0
        for where in self.backend.list(DEK_PREFIX):
            count += self.rewrap(where, f"dek/{where.removeprefix(DEK_PREFIX)}")
        if self.backend.exists(SIGNING_KEY):  # vaults made before the signing key moved into vault.json
            count += self.rewrap(SIGNING_KEY, "signing-key")
        return count

    # --- vaults made before the signing key moved into vault.json kept it beside the data keys ---
    def signer(self) -> Signer:
        try:
            raw = self.backend.get(SIGNING_KEY)
        except NotFound:
            raise IntegrityError(f"{SIGNING_KEY}: the vault's signing key is missing") from None
        return Signer(self._open_record(raw, "signing-key", SIGNING_KEY))


# --- objects -----------------------------------------------------------------------------------------
def _aad(dek_id: bytes, name: str) -> bytes:
    return OBJECT_MAGIC + dek_id + name.encode()


def encrypt_object(name: str, plaintext: bytes, keyring: Keyring) -> bytes:
    """Encrypt one object under a new data key; ``name`` is bound as associated data."""
    dek_id, key = keyring.new_data_key()
    return OBJECT_MAGIC + dek_id + seal(key, plaintext, _aad(dek_id, name))


def object_key_id(blob: bytes) -> bytes:
    return blob[len(OBJECT_MAGIC):len(OBJECT_MAGIC) + DEK_ID_BYTES]


def decrypt_object(name: str, blob: bytes, keyring: Keyring, where: str, content_hash: str | None = None
                   ) -> bytes:
    """Decrypt and authenticate; with ``content_hash``, also check the plaintext's SHA-256."""
    head = len(OBJECT_MAGIC) + DEK_ID_BYTES
    if len(blob) < head or blob[:len(OBJECT_MAGIC)] != OBJECT_MAGIC:
        raise IntegrityError(f"{where}: not a vault object (header altered or truncated)")
    dek_id = object_key_id(blob)
    plaintext = unseal(keyring.data_key(dek_id), blob[head:], _aad(dek_id, name), where)
    if content_hash is not None and not same(digest(plaintext), content_hash):
        raise IntegrityError(f"{where}: content does not match its hash")
    return plaintext


__all__ = [
    "KEY_ENV",
    "AwsKms",
    "KeyProvider",
    "Keyring",
    "MasterKey",
    "decode_key",
    "decrypt_object",
    "encrypt_object",
    "load_provider",
    "random_id",
    "random_key",
    "write_key_file",
]
