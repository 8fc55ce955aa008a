"""Where the vault's bytes live: a local folder (the embedded default) or S3 with Object Lock.

A backend has two namespaces. Everything outside ``keys/`` is **write-once**: :meth:`Backend.put_once`
never replaces an existing object, and there is no delete at all. ``keys/`` holds the wrapped data keys
and the wrapped signing key, which a key rotation re-wraps in place (:meth:`Backend.put_mutable`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mithridate.vault.errors import VaultError

MUTABLE_PREFIX = "keys/"


class Backend(Protocol):
    def put_once(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` unless the key exists; True if written, False if it existed."""

    def put_mutable(self, key: str, data: bytes) -> None:
        """Atomically replace a ``keys/`` record."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises :class:`~mithridate.vault.errors.NotFound`."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def protect(self, keys: list[str], retain_until: datetime | None, legal_hold: bool | None) -> None:
        """Set a retention date and/or legal hold on write-once objects (where the storage enforces it)."""

    def describe(self) -> str: ...

    # --- optional: what only some storages can do (the defaults say "not here") ---
    #: whether :meth:`collect` may remove unreferenced write-once objects (never under S3 Object Lock)
    collects = False

    def sweep(self) -> int:
        """Remove what killed writers left outside the namespaces (temporary files); returns how many."""
        return 0

    def anomalies(self) -> list[str]:
        """What the storage itself can tell is wrong (e.g. an object with several versions), one line each."""
        return []

    def modified(self, key: str) -> float:
        """When ``key`` was written (seconds since the epoch)."""
        raise VaultError(f"{self.describe()} does not report write times")

    def collect(self, key: str) -> int:
        """Remove a write-once object nothing refers to; returns the bytes freed."""
        raise VaultError(f"{self.describe()} keeps every object until its retention ends")

    def delete_mutable(self, key: str) -> None:
        """Remove a ``keys/`` record (the data key of a collected object)."""
        raise VaultError(f"{self.describe()} keeps every record")


def check_key(key: str, mutable: bool) -> None:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise VaultError(f"invalid storage key {key!r}")
    if mutable != key.startswith(MUTABLE_PREFIX):
        kind = "mutable" if mutable else "write-once"
        raise VaultError(f"{key}: not in the {kind} namespace")


def make_backend(spec: dict, root: Path) -> Backend:
    """The backend a vault's configuration names: ``{"kind": "local"}`` or ``{"kind": "s3", ...}``."""
    kind = spec.get("kind", "local")
    if kind == "local":
        from mithridate.vault.backends.local import LocalBackend

        path = Path(spec.get("path", "."))
        return LocalBackend(path if path.is_absolute() else root / path, fsync=spec.get("fsync", True))
    if kind == "s3":
        from mithridate.vault.backends.s3 import S3Backend

        return S3Backend(**{k: v for k, v in spec.items() if k != "kind"})
    raise VaultError(f"unknown storage kind {kind!r} (local or s3)")
