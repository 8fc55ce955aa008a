"""The secure data vault: write-once, encrypted, signed, audited storage for training data.

Only authorised people upload or modify training data (roles, separation of duties); an upload lands
in quarantine with per-row provenance, is checked, and becomes a verified version only when a steward
(or the policy) approves it; stored versions are content-addressed, encrypted at rest (envelope
AES-256-GCM) and never overwritten; every action lands in a hash-chained, signed audit log; and
``verify`` names anything altered. See ``docs/vault.md``.

- :class:`~mithridate.vault.core.Vault`: a vault opened in this process (folder, storage, catalog);
- :class:`~mithridate.vault.client.RemoteVault`: the same methods over HTTPS (``mithridate serve``);
- :func:`connect`: either, from a path or an ``https://`` URL; both satisfy
  :class:`~mithridate.vault.api.VaultAPI`.
"""

from __future__ import annotations

from mithridate.vault.api import VaultAPI
from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, Throttled, TooLarge, VaultError


def connect(location: str, **client_options) -> VaultAPI:
    """A :class:`Vault` for a folder, or a :class:`RemoteVault` for an ``https://`` URL."""
    if location.startswith(("https://", "http://")):
        from mithridate.vault.client import RemoteVault

        return RemoteVault(location, **client_options)
    from mithridate.vault.core import Vault

    return Vault.open(location)


def __getattr__(name: str):
    if name == "Vault":
        from mithridate.vault.core import Vault

        return Vault
    raise AttributeError(name)


__all__ = ["AccessDenied", "Conflict", "IntegrityError", "NotFound", "Throttled", "TooLarge", "Vault", "VaultAPI",
           "VaultError", "connect"]
