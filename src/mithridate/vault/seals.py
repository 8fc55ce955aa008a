"""Seals on the catalog's mutable rows (users, tokens, uploads; models, aliases, dataset marks and
responses), signed by the vault's key.

A row's seal is the vault's Ed25519 signature over its content (canonical JSON, with the row's kind). An
insider who edits a role, revives a token, swaps a token's hash or reopens a rejected upload breaks the
seal; a row replayed from an older, validly sealed state is caught by cross-checking the audit log
(a revocation or a decision is an entry there). Versions need no seal: their signed manifest is the truth.

>>> from mithridate.vault.primitives import Signer
>>> signer = Signer.generate()
>>> row = {"name": "tina", "roles": "trainer", "created": "t", "created_by": "admin", "active": True}
>>> sealed(signer.public_hex, "users", {**row, "seal": seal(signer, "users", row)})
True
>>> sealed(signer.public_hex, "users", {**row, "roles": "admin", "seal": seal(signer, "users", row)})
False
"""

from __future__ import annotations

from collections.abc import Mapping

from mithridate.vault.primitives import Signer, verify_signature
from mithridate.vault.store import canonical

FIELDS = {
    "users": ("name", "roles", "created", "created_by", "active"),
    "tokens": ("id", "user", "hash", "created", "revoked"),  # "user": the owner's name, not a row id
    "uploads": ("id", "dataset", "filename", "source", "uploader", "created", "status", "checks_passed", "rows",
                "size", "manifest", "manifest_sha256", "decided_by", "decided_at", "reason", "version"),
    "models": ("name", "number", "format", "size", "manifest", "manifest_sha256", "created", "created_by", "status",
               "reason"),
    "aliases": ("model", "alias", "number", "updated", "updated_by"),
    "dataset_marks": ("dataset", "number", "status", "reason", "created", "created_by"),
    "responses": ("id", "created", "actor", "cause", "detail", "undone_by", "undone_at"),
}


def content(kind: str, row: Mapping) -> bytes:
    def plain(value):
        return value if value is None or isinstance(value, str) else (bool(value) if isinstance(value, bool)
                                                                         else int(value))
    return canonical({"kind": kind, **{f: plain(row[f]) for f in FIELDS[kind]}})


def seal(signer: Signer, kind: str, row: Mapping) -> str:
    return signer.sign(content(kind, row))


def sealed(public_hex: str, kind: str, row: Mapping) -> bool:
    """Whether ``row`` (with its ``seal``) is exactly as the vault wrote it."""
    return bool(row.get("seal")) and verify_signature(public_hex, content(kind, row), str(row["seal"]))
