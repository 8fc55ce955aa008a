"""The vault: every operation, each authorised by role and recorded in the audit log.

>>> import tempfile, pathlib, io
>>> root = pathlib.Path(tempfile.mkdtemp()) / "v"
>>> vault, admin = Vault.init(root, checks="none")
>>> alice = vault.add_user(admin, "alice", ["contributor"])
>>> upload = vault.put(alice, "toy", io.BytesIO(b"x,label\\n1,a\\n2,b\\n"), "toy.csv", source="web")
>>> upload["status"]
'quarantined'

Every public method takes the caller's API token first; the same methods, with the same arguments,
exist on :class:`mithridate.vault.client.RemoteVault`, so the CLI drives a local vault and the HTTPS
service alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from mithridate.vault import ingest
from mithridate.vault.access import (
    Throttle,
    check_name,
    new_token,
)
from mithridate.vault.audit import AuditLog, now
from mithridate.vault.auditing import AuditOps
from mithridate.vault.backends import Backend, make_backend
from mithridate.vault.config import (
    CONFIG,
    DEFAULT_CHECKS,
    Config,
    check_config,
    config_path,
    read_config,
    write_config,
)
from mithridate.vault.crypto import (
    Keyring,
    load_provider,
    open_record,
    random_key,
    wrap_record,
    write_key_file,
)
from mithridate.vault.db import Database, sqlite_url
from mithridate.vault.documents import DocumentOps
from mithridate.vault.errors import Conflict, IntegrityError, VaultError
from mithridate.vault.identity import IdentityOps
from mithridate.vault.keys import KeyOps
from mithridate.vault.models import ModelOps
from mithridate.vault.primitives import Signer, random_id, same
from mithridate.vault.refs import (
    DB_PASSWORD_ENV,
    MAX_CHUNK,
    MIN_CHUNK,
    PUBLIC_KEY_ENV,
    parse_ref,
    without_password,
)
from mithridate.vault.store import CHUNK_SIZE, ChunkStore
from mithridate.vault.uploads import UploadOps
from mithridate.vault.versions import VersionOps


class Vault(IdentityOps, DocumentOps, UploadOps, VersionOps, AuditOps, KeyOps, ModelOps):
    """A vault folder (configuration, key file), its storage backend and its catalog, opened."""

    def __init__(self, root: Path, config: Config, db: Database, backend: Backend, keyring: Keyring,
                 signer: Signer):
        self.root = Path(root)
        self.config = config
        self.db = db
        self.backend = backend
        self.keyring = keyring
        self.signer = signer
        self.store = ChunkStore(backend, keyring, config.chunk_size)
        self.audit = AuditLog(db, signer.public_hex, signer)
        self._verified: dict[tuple[str, str], str] = {}
        self._lock_fd: int | None = None
        self._named_key: tuple = (None, None)  # (vault.json's stat, the key id it names)
        keyring.guard = self._check_key_named
        keyring.wrap_lock = lambda: self._key_lock(exclusive=False)
        self._revoked: set[str] = set()
        self.throttle = Throttle()
        self._refused: dict[str, int] = {}
        self._carried: dict[str, frozenset[str]] = {}  # a version manifest -> the uploads its rows came from

    # --- opening ------------------------------------------------------------------------------------
    @classmethod
    def init(cls, root: str | Path, *, admin: str = "admin", storage: dict | None = None, db_url: str | None = None,
             key: dict | None = None, checks: str = DEFAULT_CHECKS, auto_approve: bool = False,
             chunk_size: int = CHUNK_SIZE, max_upload_bytes: int | None = None) -> tuple[Vault, str]:
        """Create a vault and its first admin; returns the vault and the admin's token (shown once)."""
        root = Path(root)
        if config_path(root).exists() or (root.exists() and any(root.iterdir())):
            raise Conflict(f"{root}: not empty; a vault is created in a new or empty folder")
        check_name(admin, "user name")
        ingest.resolve_checks(checks)
        if not MIN_CHUNK <= int(chunk_size) <= MAX_CHUNK:
            raise VaultError(f"chunk size must be {MIN_CHUNK} bytes to {MAX_CHUNK >> 20} MiB, got {chunk_size}")
        if max_upload_bytes is not None and max_upload_bytes < 1:
            raise VaultError(f"the upload limit must be positive, got {max_upload_bytes}")
        stored_db = without_password(db_url)
        root.mkdir(parents=True, exist_ok=True)
        key = dict(key or {"source": "file", "path": "keys/master.key"})
        if key["source"] == "file":
            path = Path(key["path"])
            write_key_file(path if path.is_absolute() else root / path, random_key())
        provider = load_provider(key, root)
        key["id"] = provider.key_id
        backend = make_backend(storage or {"kind": "local"}, root)
        storage = {k: v for k, v in (storage or {"kind": "local"}).items() if k != "create_bucket"}
        keyring = Keyring(backend, {provider.key_id: provider}, provider.key_id)
        signer = Signer.generate()
        config = Config(id=random_id(8), created=now(), public_key=signer.public_hex, key=key,
                        storage=storage, db=stored_db, checks=checks, auto_approve=auto_approve,
                        chunk_size=chunk_size, max_upload_bytes=max_upload_bytes,
                        signing_key=wrap_record(provider, signer.private_bytes(), "signing-key").decode())
        db = Database(cls._db_url(root, config, db_url))
        db.migrate()
        vault = cls(root, config, db, backend, keyring, signer)
        token, token_id, token_hash = new_token()
        with db.begin() as conn:
            vault.audit.append(conn, "system", "vault.init", str(root), "ok",
                               {"vault": config.id, "storage": backend.describe(), "key": key["source"],
                                "checks": checks, "auto_approve": auto_approve})
            vault._insert_user(conn, admin, frozenset({"admin"}), "system", token_id, token_hash)
            vault.audit.append(conn, "system", "user.add", admin, "ok", {"roles": ["admin"], "token": token_id})
        write_config(root, config, signer, create=True)
        vault._checkpoint()
        return vault, token

    @staticmethod
    def _db_url(root: Path, config: Config, override: str | None = None) -> str:
        """The catalog's URL: given, or ``$MITHRIDATE_VAULT_DB``, or the configuration's (whose password,
        never stored, comes from ``$MITHRIDATE_VAULT_DB_PASSWORD``), or SQLite in the folder."""
        url = override or os.environ.get("MITHRIDATE_VAULT_DB") or config.db
        if url is None:
            path = root / "vault.db"
            if not path.exists():  # SQLite gives its -wal and -shm files the database file's mode
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            return sqlite_url(path)
        if os.environ.get(DB_PASSWORD_ENV) and not override and not os.environ.get("MITHRIDATE_VAULT_DB"):
            from sqlalchemy.engine import make_url

            return make_url(url).set(password=os.environ[DB_PASSWORD_ENV]).render_as_string(hide_password=False)
        return url

    @classmethod
    def open(cls, root: str | Path, db_url: str | None = None, migrate: bool = False,
             public_key: str | None = None) -> Vault:
        """Open a vault folder, checking its configuration, master key and signing key first. With
        ``public_key`` (or ``$MITHRIDATE_VAULT_PUBLIC_KEY``), refuse a vault signed by any other key: an
        insider who replaces the whole folder with a vault of their own cannot pass it off."""
        root = Path(root)
        config, doc = read_config(root)
        pinned = (public_key or os.environ.get(PUBLIC_KEY_ENV) or "").strip().lower()
        if pinned and not same(pinned, str(config.public_key)):
            raise IntegrityError(f"{CONFIG}: the vault's public key {str(config.public_key)[:16]}... is not the pinned "
                                 f"one {pinned[:16]}... (${PUBLIC_KEY_ENV}): the vault was replaced")
        # only the key source is used before the signature is checked (plugins must be allowed, see
        # load_provider); the signing key travels wrapped in vault.json, so storage and catalog named
        # by an edited file are never touched
        provider = load_provider(config.key, root)
        if provider.key_id != config.key.get("id"):
            where = config.key.get("path", f"${config.key.get('var', 'key')}")
            raise IntegrityError(f"{where}: not the vault's master key (key id {provider.key_id}, the vault "
                                 f"expects {config.key.get('id')}): altered or wrong key")
        providers = {provider.key_id: provider}
        if config.retiring_key:
            old = load_provider(config.retiring_key, root)
            providers[old.key_id] = old
        signer = None
        if config.signing_key:
            signer = Signer(open_record(providers, config.signing_key, "signing-key", f"{CONFIG}: signing key"))
            check_config(doc, signer)
        backend = make_backend(config.storage, root)
        keyring = Keyring(backend, providers, provider.key_id)
        if signer is None:  # a vault made before 0.3 keeps its signing key in storage
            signer = keyring.signer()
            check_config(doc, signer)
        db = Database(cls._db_url(root, config, db_url))
        if migrate:
            unsealed = db.schema_version() == "0001_initial"
            db.migrate()
        else:
            db.check_schema()
        backend.sweep()
        vault = cls(root, config, db, backend, keyring, signer)
        if migrate and unsealed:
            vault._seal_all()
        return vault

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None
        self.db.dispose()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        """What anyone may know: the vault's id and public key (to check signatures), its policy."""
        return {"vault": self.config.id, "public_key": self.config.public_key, "format": self.config.format,
                "checks": self.config.checks, "auto_approve": self.config.auto_approve,
                "max_upload_bytes": self.config.max_upload_bytes}


__all__ = ["Vault", "parse_ref"]
