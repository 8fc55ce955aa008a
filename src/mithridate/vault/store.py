"""Content-addressed, encrypted, write-once chunk storage and signed manifests.

A file is cut into fixed-size chunks (8 MiB by default). Each chunk is named by the SHA-256 of its
plaintext, encrypted under its own data key (:mod:`mithridate.vault.crypto`) and written once to
``objects/<2 hex>/<sha256>``; an identical chunk is stored once. The ordered chunk list, its Merkle root
(RFC 6962 hashing: leaves and inner nodes domain-separated) and the size make a :class:`Blob`, which
manifests reference. Streaming: at most a few chunks are ever in memory, whatever the file's size.

Manifests are canonical JSON (sorted keys, no spaces) ``{"body": ..., "key": ..., "signature": ...}``
signed with the vault's Ed25519 key, stored write-once under a name that carries their own hash.

>>> merkle_root([]) == digest(b"")
True
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from mithridate.vault.crypto import Keyring, decrypt_object, encrypt_object
from mithridate.vault.errors import IntegrityError, NotFound, TooLarge
from mithridate.vault.primitives import Signer, digest, same, verify_signature

CHUNK_SIZE = 8 << 20


def object_key(object_id: str) -> str:
    return f"objects/{object_id[:2]}/{object_id}"


def merkle_root(leaves: list[str]) -> str:
    """Merkle tree hash (RFC 6962 section 2.1) over hex leaf hashes."""
    if not leaves:
        return digest(b"")
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in leaves]
    while len(level) > 1:
        nxt = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


@dataclass(frozen=True)
class Blob:
    """A stored byte stream: ``chunks`` as ``(sha256, size)`` pairs, total ``size``, Merkle ``root``."""

    chunks: tuple[tuple[str, int], ...]
    size: int
    root: str

    def to_dict(self) -> dict:
        return {"chunks": [[c, n] for c, n in self.chunks], "size": self.size, "root": self.root}

    @classmethod
    def from_dict(cls, d: dict) -> Blob:
        return cls(tuple((str(c), int(n)) for c, n in d["chunks"]), int(d["size"]), str(d["root"]))


def _fill(stream: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes, looping over short reads (sockets, pipes)."""
    parts, got = [], 0
    while got < size:
        part = stream.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class ChunkStore:
    """Write and read :class:`Blob` s through a backend and a keyring.

    ``workers`` threads hash, encrypt and write chunks while the next one is read (hashing, AES-GCM and
    file I/O release the GIL); at most ``2 * workers + 1`` chunks are in memory at once.
    """

    def __init__(self, backend, keyring: Keyring, chunk_size: int = CHUNK_SIZE, workers: int = 2):
        self.backend = backend
        self.keyring = keyring
        self.chunk_size = chunk_size
        self.workers = workers

    def _store_chunk(self, data: bytes) -> tuple[str, int]:
        object_id = hashlib.sha256(data).hexdigest()
        key = object_key(object_id)
        with self.keyring.wrap_lock():  # `Vault.collect` never removes a chunk between this check and its use
            if not self.backend.exists(key):
                self.backend.put_once(key, encrypt_object(object_id, data, self.keyring))
        return object_id, len(data)

    def write(self, stream: BinaryIO, limit: int | None = None) -> Blob:
        """Store everything ``stream`` yields; raises :class:`TooLarge` past ``limit`` bytes."""
        chunks: list[tuple[str, int]] = []
        pending: deque = deque()
        total = 0
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            while True:
                data = _fill(stream, self.chunk_size)
                if not data:
                    break
                total += len(data)
                if limit is not None and total > limit:
                    raise TooLarge(f"upload exceeds the limit of {limit} bytes")
                pending.append(pool.submit(self._store_chunk, data))
                del data
                while len(pending) > 2 * self.workers:
                    chunks.append(pending.popleft().result())
            while pending:
                chunks.append(pending.popleft().result())
        return Blob(tuple(chunks), total, merkle_root([c for c, _ in chunks]))

    def write_bytes(self, data: bytes) -> Blob:
        return self.write(io.BytesIO(data))

    def read_chunk(self, object_id: str) -> bytes:
        key = object_key(object_id)
        try:
            blob = self.backend.get(key)
        except NotFound:
            raise IntegrityError(f"{key}: missing") from None
        return decrypt_object(object_id, blob, self.keyring, key, content_hash=object_id)

    def read(self, blob: Blob) -> Iterator[bytes]:
        """The plaintext, chunk by chunk, each authenticated and hash-checked before it is yielded."""
        if not same(merkle_root([c for c, _ in blob.chunks]), blob.root):
            raise IntegrityError("chunk list does not match its Merkle root")
        for object_id, size in blob.chunks:
            data = self.read_chunk(object_id)
            if len(data) != size:
                raise IntegrityError(f"{object_key(object_id)}: {len(data)} bytes, the manifest says {size}")
            yield data

    def read_all(self, blob: Blob) -> bytes:
        return b"".join(self.read(blob))

    def open(self, blob: Blob) -> io.BufferedReader:
        """A seekable, read-only file over ``blob``, one authenticated chunk in memory at a time."""
        return io.BufferedReader(BlobFile(self, blob), buffer_size=1 << 20)


class BlobFile(io.RawIOBase):
    """The plaintext of a :class:`Blob` as a seekable raw file (readers such as pandas and pyarrow
    stream from it); each chunk is read, authenticated and hash-checked when first touched."""

    def __init__(self, store: ChunkStore, blob: Blob):
        if not same(merkle_root([c for c, _ in blob.chunks]), blob.root):
            raise IntegrityError("chunk list does not match its Merkle root")
        self.store, self.blob = store, blob
        self.starts = [0]
        for _, size in blob.chunks:
            self.starts.append(self.starts[-1] + size)
        self.pos, self._index, self._data = 0, -1, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.blob.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        if self.pos >= self.blob.size:
            return 0
        import bisect

        index = bisect.bisect_right(self.starts, self.pos) - 1
        if index != self._index:
            object_id, size = self.blob.chunks[index]
            data = self.store.read_chunk(object_id)
            if len(data) != size:
                raise IntegrityError(f"{object_key(object_id)}: {len(data)} bytes, the manifest says {size}")
            self._index, self._data = index, data
        offset = self.pos - self.starts[index]
        n = min(len(buffer), len(self._data) - offset)
        buffer[:n] = self._data[offset:offset + n]
        self.pos += n
        return n


# --- signed documents ----------------------------------------------------------------------------------
def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign_document(body: dict, signer: Signer) -> bytes:
    return canonical({"body": body, "key": signer.public_hex, "signature": signer.sign(canonical(body))})


def open_document(raw: bytes, public_hex: str, where: str) -> dict:
    """The body of a signed document; :class:`IntegrityError` naming ``where`` unless it verifies."""
    try:
        doc = json.loads(raw)
        body, key, signature = doc["body"], doc["key"], doc["signature"]
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{where}: unreadable (altered)") from None
    if not same(str(key), public_hex):
        raise IntegrityError(f"{where}: signed by another key ({str(key)[:16]}...)")
    if not verify_signature(public_hex, canonical(body), str(signature)):
        raise IntegrityError(f"{where}: signature invalid (altered)")
    return body


def manifest_key(dataset: str, number: int, raw: bytes) -> str:
    return f"manifests/{dataset}/{number}.{digest(raw)[:16]}.json"


def upload_key(upload_id: str) -> str:
    return f"uploads/{upload_id}.json"
