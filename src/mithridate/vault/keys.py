"""Locks, the master key every wrap must use, key rotation, retention and legal holds.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from sqlalchemy import update

from mithridate.vault.access import (
    Principal,
)
from mithridate.vault.config import (
    CONFIG,
    config_path,
    write_config,
)
from mithridate.vault.crypto import (
    load_provider,
    random_key,
    wrap_record,
    write_key_file,
)
from mithridate.vault.db import versions
from mithridate.vault.errors import Conflict, IntegrityError, NotFound, VaultError
from mithridate.vault.primitives import random_id
from mithridate.vault.refs import (
    KEY_LOCK,
    SERVE_LOCK,
    aware,
    parse_ref,
)


class KeyOps:
    """Locks, the master key every wrap must use, key rotation, retention and legal holds."""

    def _take_lock(self) -> int | None:
        import fcntl

        fd = os.open(self.root / SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @contextlib.contextmanager
    def _key_lock(self, exclusive: bool) -> Iterator[None]:
        """``keys.lock`` in the vault folder: every process holds it shared while it wraps a data key, a
        rotation holds it exclusively, so no process wraps under a key another is retiring."""
        import fcntl

        fd = os.open(self.root / KEY_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def serving(self) -> None:
        """Hold the vault's service lock for as long as this handle is open (``mithridate serve`` does):
        a key rotation from another process is then refused instead of pulling the key from under it."""
        if self._lock_fd is None:
            self._lock_fd = self._take_lock()
            if self._lock_fd is None:
                raise Conflict(f"{self.root}: another process serves this vault or rotates its key "
                               f"(it holds {SERVE_LOCK})")

    def _check_key_named(self, current: str) -> None:
        """Raise unless ``vault.json`` still names ``current`` as the master key (checked before each wrap)."""
        path = config_path(self.root)
        try:  # a stat per wrap; the file is read again only when it changed
            stamp = path.stat()
            stamp = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
            if self._named_key[0] != stamp:
                self._named_key = (stamp, json.loads(path.read_bytes())["config"]["key"]["id"])
            named = self._named_key[1]
        except (OSError, ValueError, KeyError, TypeError):
            raise IntegrityError(f"{CONFIG}: unreadable (altered?); nothing was written") from None
        if named != current:
            raise IntegrityError(f"{CONFIG} names master key {named}, but this process wraps with {current}: "
                                 "another process rotated the key; restart this one (nothing was written)")

    def rotate_key(self, token: str, new_key: dict | None = None) -> dict:
        """Re-wrap every data key (and the signing key) under a new master key; no data is re-written.

        ``new_key``: a key spec (see :func:`~mithridate.vault.crypto.load_provider`); by default a new
        key file beside the current one. The old key file is removed once nothing needs it. Refused
        while another process serves the vault (rotate through the service instead); a process that
        still holds the old key refuses to wrap with it. Resumes if interrupted.
        """
        principal = self.authorize(token, "key.rotate")
        lock = None
        if self._lock_fd is None:  # not the service itself: refuse while it runs, and keep it from starting
            lock = self._take_lock()
            if lock is None:
                raise Conflict(f"{self.root}: the vault is being served (a process holds {SERVE_LOCK}); rotate the "
                               "key through the service (--vault https://...) or stop it first")
        try:
            with self._key_lock(exclusive=True):
                return self._rotate_key(principal, new_key)
        finally:
            if lock is not None:
                os.close(lock)

    def _rotate_key(self, principal: Principal, new_key: dict | None) -> dict:
        old_spec = self.config.retiring_key or self.config.key
        if self.config.retiring_key is None:
            if new_key is None:
                new_key = {"source": "file", "path": f"keys/master-{random_id(4)}.key"}
            new_key = dict(new_key)
            if new_key["source"] == "file":
                path = Path(new_key["path"])
                write_key_file(path if path.is_absolute() else self.root / path, random_key())
            provider = load_provider(new_key, self.root)
            new_key["id"] = provider.key_id
            if provider.key_id == self.config.key["id"]:
                raise Conflict("the new master key is the current one")
            self.config.retiring_key, self.config.key = self.config.key, new_key
            self.keyring.switch(provider, lambda: write_config(self.root, self.config, self.signer))
        rewrapped = self.keyring.rewrap_all()
        old_id = old_spec["id"]
        self.config.retiring_key = None
        self.config.signing_key = wrap_record(self.keyring.providers[self.keyring.current],
                                              self.signer.private_bytes(), "signing-key").decode()
        write_config(self.root, self.config, self.signer)
        self.keyring.providers.pop(old_id, None)
        if old_spec["source"] == "file":
            path = Path(old_spec["path"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path if path.is_absolute() else self.root / path)
        self.audit.record(principal.name, "key.rotate", self.config.key["id"], "ok",
                          {"from": old_id, "to": self.config.key["id"], "rewrapped": rewrapped})
        self._checkpoint()
        return {"key": self.config.key["id"], "previous": old_id, "rewrapped": rewrapped}

    def hold(self, token: str, ref: str, legal_hold: bool | None = None, retain_until: str | None = None) -> dict:
        """Set a legal hold (on/off) and/or extend the retention date of a version (never shorten it)."""
        principal = self.authorize(token, "version.hold", ref)
        dataset, number = parse_ref(ref)
        if number is None:
            raise VaultError("name the version (DATASET@NUMBER)")
        until = None
        if retain_until is not None:
            try:
                until = aware(datetime.fromisoformat(retain_until))
            except (ValueError, TypeError):
                raise VaultError(f"invalid date {retain_until!r} (ISO 8601, e.g. 2031-01-01)") from None
        with self.db.begin() as conn:
            row = self._version_row(conn, dataset, number)
            if row is None:
                raise NotFound(f"no version {ref}")
            values: dict = {}
            if legal_hold is not None:
                values["legal_hold"] = legal_hold
            if until is not None:
                if row.retain_until and aware(datetime.fromisoformat(row.retain_until)) > until:
                    raise Conflict(f"{ref} is retained until {row.retain_until}; retention can only be extended")
                values["retain_until"] = until.isoformat()
            if not values:
                raise VaultError("set --hold/--release and/or --retain-until")
            body = self._version_document(row)
            keys = [row.manifest] + [f"objects/{c[:2]}/{c}" for c, _ in
                                     body["file"]["chunks"] + body["provenance"]["chunks"]]
            self.backend.protect(keys, until, legal_hold)
            conn.execute(update(versions).where(versions.c.dataset == dataset, versions.c.number == number)
                         .values(**values))
            self.audit.append(conn, principal.name, "version.hold", ref, "ok",
                              {k: v for k, v in values.items()})
        self._checkpoint()
        return {"version": ref, **values}
