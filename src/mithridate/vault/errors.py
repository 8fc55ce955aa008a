"""What the vault raises. Each is one clear line a user (or a script, through the exit code) can act on."""

from __future__ import annotations

from mithridate.errors import MithridateError


class VaultError(MithridateError):
    """A vault operation cannot be done as asked (bad name, bad state, unreadable vault)."""


class AccessDenied(VaultError):
    """The caller is unknown or lacks the role for the action. Every denial is also an audit entry."""


class NotFound(VaultError):
    """No such dataset, version, upload or user."""


class Conflict(VaultError):
    """The action clashes with the vault's state (an upload already decided, a name taken)."""


class IntegrityError(VaultError):
    """Stored bytes, a signature or a key do not check out: altered, truncated or a wrong key.

    Raised instead of ever returning bytes that failed authentication.
    """


class TooLarge(VaultError):
    """An upload exceeds the configured size limit."""


class Throttled(AccessDenied):
    """Too many failed authentications from this client or for this token id: refused for a while."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after
