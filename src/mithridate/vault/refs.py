"""What the vault's parts share: names and limits, version references, the small checks on input."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from mithridate.vault.access import (
    check_name,
)
from mithridate.vault.errors import Conflict, VaultError

REF = re.compile(r"^(?P<dataset>[^@]+)(@(?P<number>\d+))?$")
MAX_SOURCE = 255
MIN_CHUNK, MAX_CHUNK = 4096, 1 << 30
DB_PASSWORD_ENV = "MITHRIDATE_VAULT_DB_PASSWORD"
CHECKPOINTS = "checkpoints/"
COMMITTED = "committed/"
HEAD_FORMAT = "mithridate-vault/head/1"
SERVE_LOCK = "serve.lock"
KEY_LOCK = "keys.lock"
PUBLIC_KEY_ENV = "MITHRIDATE_VAULT_PUBLIC_KEY"
REVOKED = "revoked/"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"train@3"`` -> ``("train", 3)``; ``"train"`` -> ``("train", None)`` (the newest version)."""
    match = REF.match(ref or "")
    if not match:
        raise VaultError(f"invalid version reference {ref!r} (use DATASET or DATASET@NUMBER)")
    check_name(match["dataset"], "dataset name")
    if match["number"] is not None and (len(match["number"]) > 9 or int(match["number"]) < 1):
        raise VaultError(f"invalid version number in {ref!r} (1 to 999999999)")
    return match["dataset"], None if match["number"] is None else int(match["number"])


def without_password(url: str | None) -> str | None:
    """A database URL as ``vault.json`` may keep it: with its password removed (passwords come from
    ``$MITHRIDATE_VAULT_DB_PASSWORD`` or a URL in ``$MITHRIDATE_VAULT_DB``, never from a file others read)."""
    if url is None:
        return None
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        raise VaultError("invalid database URL (e.g. postgresql+psycopg://user@host/db)") from None
    if not parsed.password:
        return url
    from sqlalchemy.engine import URL

    return URL.create(parsed.drivername, parsed.username, None, parsed.host, parsed.port, parsed.database,
                      parsed.query).render_as_string(hide_password=False)


def aware(moment: datetime) -> datetime:
    """A date without a time zone is taken as UTC, so dates with and without one compare."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_source(source: str) -> str:
    if not source or len(source) > MAX_SOURCE or not source.isprintable():
        raise VaultError(f"invalid source {source!r}: 1-{MAX_SOURCE} printable characters")
    return source


def check_filename(filename: str) -> str:
    """The upload's file name (its last path part): printable, no quotes or backslashes, 1-255 characters."""
    name = Path(filename or "").name
    if not name or len(name) > 255 or not name.isprintable() or any(c in name for c in '"\\'):
        raise VaultError(f"invalid file name {filename!r}")
    return name


class _Moved(Conflict):
    """The dataset gained a version between an approval's checks and its commit (retried)."""
