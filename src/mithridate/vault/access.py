"""Identity and access: users, API tokens, roles with least privilege, separation of duties.

Roles and what each may do (:data:`PERMISSIONS` is the single source of truth):

- ``admin``: manage users and tokens, rotate the master key, set retention and legal holds, verify.
  An admin does not read data or the audit log by virtue of the role.
- ``steward``: inspect quarantined uploads, approve or reject them (never their own), trace a source,
  cut a version without a source's rows.
- ``contributor``: upload into quarantine, see uploads.
- ``trainer``: read approved versions.
- ``auditor``: read the audit log, trace, verify.

A token is ``mth_<id>_<secret>``; the vault keeps only the id and an Argon2id hash of the secret
(RFC 9106; OWASP's minimum parameters, m=19 MiB, t=2), so a stolen catalog yields no usable token.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mithridate.vault.errors import VaultError

ROLES = ("admin", "steward", "contributor", "trainer", "auditor")

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
    if not NAME.match(name or ""):
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
    match = TOKEN.match((token or "").strip())
    return (match.group(1), match.group(2)) if match else None


def token_matches(stored_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(stored_hash, secret)
    except (VerificationError, InvalidHashError):
        return False
