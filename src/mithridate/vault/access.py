"""Identity and access: users, API tokens, roles with least privilege, separation of duties.

Roles and what each may do (:data:`PERMISSIONS` is the single source of truth):

- ``admin``: manage users and tokens, rotate the master key, set retention and legal holds, verify.
  An admin does not read data or the audit log by virtue of the role.
- ``steward``: inspect quarantined uploads, approve or reject them (never their own), trace a source,
  cut a version without a source's rows.
- ``contributor``: upload into quarantine, see uploads.
- ``trainer``: read approved versions.
- ``auditor``: read the audit log, trace, verify.
- ``deployer``: move a model's serving aliases, roll them back when a model or its data turns out bad.

The model registry: trainers register models (with the versions they were trained on), stewards mark
a model known-good or a dataset version poisoned (which rolls back what it reached), deployers move aliases.

A token is ``mth_<id>_<secret>``; the vault keeps only the id and an Argon2id hash of the secret
(RFC 9106; OWASP's minimum parameters, m=19 MiB, t=2), so a stolen catalog yields no usable token.
"""

from __future__ import annotations

import base64
import contextvars
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mithridate.vault.errors import VaultError

ROLES = ("admin", "steward", "contributor", "trainer", "auditor", "deployer")

PERMISSIONS: dict[str, frozenset[str]] = {
    "user.add": frozenset({"admin"}),
    "user.list": frozenset({"admin", "auditor"}),
    "user.revoke": frozenset({"admin"}),
    "key.rotate": frozenset({"admin"}),
    "version.hold": frozenset({"admin"}),
    "vault.verify": frozenset({"admin", "auditor"}),
    "upload.put": frozenset({"contributor"}),
    "upload.list": frozenset({"contributor", "steward", "auditor"}),
    "upload.read": frozenset({"steward"}),
    "upload.approve": frozenset({"steward"}),
    "upload.reject": frozenset({"steward"}),
    "version.list": frozenset({"trainer", "steward", "contributor", "auditor"}),
    "version.read": frozenset({"trainer"}),
    "version.cut": frozenset({"steward"}),
    "trace": frozenset({"steward", "auditor"}),
    "audit.read": frozenset({"auditor"}),
    "storage.collect": frozenset({"admin"}),
    "model.add": frozenset({"trainer"}),
    "model.list": frozenset({"trainer", "steward", "auditor", "deployer"}),
    "model.read": frozenset({"trainer", "deployer"}),
    "model.promote": frozenset({"steward"}),
    "model.alias": frozenset({"deployer"}),
    "dataset.derive": frozenset({"trainer", "steward"}),
    "dataset.quarantine": frozenset({"steward"}),
    "model.rollback": frozenset({"steward", "deployer"}),
}
ACTIONS = tuple(PERMISSIONS)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
TOKEN = re.compile(r"^mth_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
# the principal an auto-approving policy acts as; no user can take this name
POLICY = "policy"
RESERVED = {POLICY, "anonymous", "system"}

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]

    def may(self, action: str) -> bool:
        return bool(self.roles & PERMISSIONS[action])


def allowed_roles(action: str) -> frozenset[str]:
    return PERMISSIONS[action]


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):  # fullmatch: "$" would let "name\n" through
        raise VaultError(f"invalid {what} {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def check_roles(roles: list[str] | tuple[str, ...]) -> frozenset[str]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise VaultError(f"unknown role {unknown[0]!r}" if unknown else "give at least one role"
                         + f" (roles: {', '.join(ROLES)})")
    return frozenset(roles)


def new_token() -> tuple[str, str, str]:
    """A fresh token: ``(token, id, argon2 hash of the secret)``; only the last two are stored."""
    token_id = os.urandom(16).hex()
    secret = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    return f"mth_{token_id}_{secret}", token_id, _hasher.hash(secret)


def parse_token(token: str | None) -> tuple[str, str] | None:
    """``(id, secret)`` of a well-formed token, else None."""
    match = TOKEN.fullmatch((token or "").strip())
    return (match.group(1), match.group(2)) if match else None


def token_matches(stored_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("mithridate_vault_client", default="local")
"""Who is calling, as the service sees them (its address); set per request by the service."""


class Throttle:
    """Failed authentications per key (a client address, a token id) in a sliding window.

    Past ``limit`` failures within ``window`` seconds a key is refused at once, without checking its
    token or writing an audit entry per attempt (the vault records floods as counted entries).

    >>> t = Throttle(limit=2, window=60, clock=lambda: 0.0)
    >>> t.failed(["client a"]); t.failed(["client a"]); t.blocked(["client a", "token x"])
    ('client a', 60.0)
    >>> t.blocked(["client b"]) is None
    True
    """

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def blocked(self, keys: list[str]) -> tuple[str, float] | None:
        """``(key, seconds to wait)`` for the first key over its limit, else None."""
        now = self.clock()
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.limit:
                    return key, max(times[-self.limit] + self.window - now, 1.0)
        return None

    def failed(self, keys: list[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)
                if len(self._failures) > 100_000:  # a spray of keys: keep memory bounded
                    self._failures.pop(next(iter(self._failures)))
