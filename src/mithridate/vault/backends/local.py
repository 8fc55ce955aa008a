"""A local folder as write-once storage.

A write goes to a private temporary file, is flushed to disk, then *linked* into place: ``link(2)``
fails when the name exists, so an object is never replaced, and a killed writer leaves at most an
unreferenced temporary file (swept on the next open), never a half-written object. Stored objects are
made read-only. A local folder cannot stop its owner's ``rm``; the tamper-evidence (hashes, signatures,
the audit chain, ``mithridate vault verify``) is what protects it, and S3 Object Lock is the production
answer (:mod:`mithridate.vault.backends.s3`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from mithridate.vault.backends import Backend, check_key
from mithridate.vault.errors import NotFound

TMP = "tmp"


class LocalBackend(Backend):
    collects = True

    def __init__(self, root: Path, fsync: bool = True):
        self.root = Path(root)
        self.fsync = fsync
        (self.root / TMP).mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _path(self, key: str) -> Path:
        return self.root / key

    def _write_tmp(self, data: bytes) -> str:
        fd, tmp = tempfile.mkstemp(dir=self.root / TMP, prefix="w-")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self, path: Path) -> None:
        if self.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def put_once(self, key: str, data: bytes) -> bool:
        check_key(key, mutable=False)
        target = self._path(key)
        if target.exists():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        try:
            os.chmod(tmp, 0o444)
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        self._sync_dir(target.parent)
        return True

    def put_mutable(self, key: str, data: bytes) -> None:
        check_key(key, mutable=True)
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        self._sync_dir(target.parent)

    def get(self, key: str) -> bytes:
        check_key(key, mutable=key.startswith("keys/"))
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{key}: not in storage") from None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.exists():
            return
        for dirpath, _, files in os.walk(base):
            for name in sorted(files):
                yield Path(dirpath, name).relative_to(self.root).as_posix()

    def protect(self, keys: list[str], retain_until: datetime | None, legal_hold: bool | None) -> None:
        """Nothing a folder can enforce beyond read-only files; the hold is recorded in the catalog."""

    def modified(self, key: str) -> float:
        """When the object was written (seconds since the epoch)."""
        return self._path(key).stat().st_mtime

    def collect(self, key: str) -> int:
        """Remove a write-once object that nothing refers to (only :meth:`Vault.collect` calls this, for
        chunks no signed document names); returns the bytes freed."""
        check_key(key, mutable=False)
        path = self._path(key)
        size = path.stat().st_size
        path.unlink()
        return size

    def delete_mutable(self, key: str) -> None:
        check_key(key, mutable=True)
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def sweep(self, older_than: float = 3600.0) -> int:
        """Remove temporary files killed writers left (never anything else; not a live writer's)."""
        removed = 0
        limit = time.time() - older_than
        for tmp in (self.root / TMP).glob("w-*"):
            with contextlib.suppress(FileNotFoundError):
                if tmp.stat().st_mtime < limit:
                    tmp.unlink()
                    removed += 1
        return removed
