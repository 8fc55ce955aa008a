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

import contextlib
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select, update

from mithridate.data import Dataset
from mithridate.errors import DataError
from mithridate.vault import ingest
from mithridate.vault.access import (
    CLIENT,
    POLICY,
    RESERVED,
    Principal,
    Throttle,
    allowed_roles,
    check_name,
    check_roles,
    new_token,
    parse_token,
    token_matches,
)
from mithridate.vault.audit import AuditLog, now
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
    object_key_id,
    open_record,
    random_key,
    wrap_record,
    write_key_file,
)
from mithridate.vault.db import Database, audit, sqlite_url, tokens, uploads, users, versions
from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, Throttled, TooLarge, VaultError
from mithridate.vault.primitives import Signer, digest, random_id, same
from mithridate.vault.seals import seal, sealed
from mithridate.vault.store import CHUNK_SIZE, Blob, ChunkStore, manifest_key, open_document, sign_document, upload_key

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


class Vault:
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
        keyring.guard = self._check_key_named
        keyring.wrap_lock = lambda: self._key_lock(exclusive=False)
        self._revoked: set[str] = set()
        self.throttle = Throttle()
        self._refused: dict[str, int] = {}

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

    # --- the service lock and the key every wrap must use -------------------------------------------
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
        try:
            named = json.loads(config_path(self.root).read_bytes())["config"]["key"]["id"]
        except (OSError, ValueError, KeyError, TypeError):
            raise IntegrityError(f"{CONFIG}: unreadable (altered?); nothing was written") from None
        if named != current:
            raise IntegrityError(f"{CONFIG} names master key {named}, but this process wraps with {current}: "
                                 "another process rotated the key; restart this one (nothing was written)")

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        """What anyone may know: the vault's id and public key (to check signatures), its policy."""
        return {"vault": self.config.id, "public_key": self.config.public_key, "format": self.config.format,
                "checks": self.config.checks, "auto_approve": self.config.auto_approve,
                "max_upload_bytes": self.config.max_upload_bytes}

    # --- identity -----------------------------------------------------------------------------------
    def _principal(self, token: str | None) -> Principal | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        with self.db.engine.connect() as conn:
            found = self._identity(conn, token_id)
        if found is None:
            return None
        user, token = found
        problem = self._identity_problem(user, token)
        if problem:
            self.audit.record("anonymous", "auth", token_id, "denied", {"reason": problem})
            raise IntegrityError(f"{problem}; run `mithridate vault verify`")
        if token["revoked"] or not user["active"]:
            return None
        # Argon2 is slow on purpose; a token this process already verified against this very hash is
        # recognised by its SHA-256 (revocation still applies: the catalog row is read every time)
        seen = self._verified.get((token_id, token["hash"]))
        if seen is None or not same(seen, digest(secret.encode())):
            if not token_matches(token["hash"], secret):
                return None
            self._verified[(token_id, token["hash"])] = digest(secret.encode())
        return Principal(user["name"], frozenset(user["roles"].split(",")))

    def _identity(self, conn, token_id: str) -> tuple[dict, dict] | None:
        """The user and token rows of ``token_id`` (the token's ``user`` is its owner's name), or None."""
        query = (select(users, tokens.c.id.label("token_id"), tokens.c.hash, tokens.c.created.label("token_created"),
                        tokens.c.revoked, tokens.c.seal.label("token_seal"))
                 .join(tokens, users.c.id == tokens.c.user_id).where(tokens.c.id == token_id))
        row = conn.execute(query).first()
        if row is None:
            return None
        r = row._mapping
        user = {k: r[k] for k in ("name", "roles", "created", "created_by", "active", "seal")}
        token = {"id": r["token_id"], "user": r["name"], "hash": r["hash"], "created": r["token_created"],
                 "revoked": r["revoked"], "seal": r["token_seal"]}
        revoked_at = conn.execute(select(audit.c.seq).where(
            audit.c.action == "user.revoke", audit.c.target == r["name"], audit.c.outcome == "ok").limit(1)).scalar()
        revoked_at = f"audit entry {revoked_at}" if revoked_at else None
        if not revoked_at and (r["name"] in self._revoked or self.backend.exists(f"{REVOKED}{r['name']}.json")):
            self._revoked.add(r["name"])
            revoked_at = f"{REVOKED}{r['name']}.json"
        user["revoked_at"] = revoked_at
        return user, token

    def _identity_problem(self, user: dict, token: dict) -> str:
        """Why these rows cannot be trusted (edited behind the vault's back), or ''."""
        if not sealed(self.config.public_key, "users", user):
            return f"catalog: the row of user {user['name']} was altered (seal invalid)"
        if not sealed(self.config.public_key, "tokens", token):
            return f"catalog: the row of token {token['id']} (user {user['name']}) was altered (seal invalid)"
        if user["revoked_at"] and (user["active"] or not token["revoked"]):
            return (f"catalog: user {user['name']} was revoked ({user['revoked_at']}) but the "
                    "catalog lets them in (rows replayed)")
        return ""

    def _seal_rows(self, conn, kind: str, where) -> None:
        """(Re)seal the ``kind`` rows matching ``where`` after the vault itself wrote them."""
        if kind == "tokens":
            query = (select(tokens, users.c.name.label("user")).join(users, users.c.id == tokens.c.user_id)
                     .where(where))
        else:
            query = select({"users": users, "uploads": uploads}[kind]).where(where)
        table = {"users": users, "tokens": tokens, "uploads": uploads}[kind]
        for row in conn.execute(query).all():
            conn.execute(update(table).where(table.c.id == row.id).values(seal=seal(self.signer, kind, row._mapping)))

    def _seal_all(self) -> None:
        """Seal every row of a catalog migrated from before seals existed (``vault migrate``)."""
        with self.db.begin() as conn:
            for kind, table in (("users", users), ("tokens", tokens), ("uploads", uploads)):
                self._seal_rows(conn, kind, table.c.seal.is_(None))
            self.audit.append(conn, "system", "catalog.seal", "", "ok")

    def _deny(self, actor: str, action: str, target: str, reason: str, detail: dict | None = None) -> AccessDenied:
        self.audit.record(actor, action, target, "denied", {"reason": reason, **(detail or {})})
        return AccessDenied(reason)

    def _authenticate(self, token: str | None, action: str, target: str) -> Principal:
        """The token's principal. Failures are throttled per client and per token id: past the limit a
        request is refused at once, and the flood is logged as counted entries (after 1, 10, 100, ...
        refusals), never a row each."""
        parsed = parse_token(token)
        client = f"client {CLIENT.get()}"
        keys = [client] + ([f"token {parsed[0]}"] if parsed else [])
        hit = self.throttle.blocked([client])  # a flooding client is refused outright
        if hit is not None:
            raise self._throttled(*hit)
        # a token id under attack from many addresses still lets its owner in: only failures are refused
        hit = self.throttle.blocked(keys[1:])
        principal = self._principal(token)
        if principal is None:
            self.throttle.failed(keys)
            if hit is not None:
                raise self._throttled(*hit)
            raise self._deny("anonymous", action, target, "invalid, revoked or missing token",
                             {"token": parsed[0]} if parsed else None)
        return principal

    def _throttled(self, key: str, wait: float) -> Throttled:
        """A refusal for a throttled key, logged as a count after 1, 10, 100, ... of them."""
        refused = self._refused[key] = self._refused.get(key, 0) + 1
        if refused == 10 ** (len(str(refused)) - 1):
            self.audit.record("anonymous", "auth.throttled", key, "denied",
                              {"refused": refused, "limit": self.throttle.limit, "window_s": self.throttle.window})
        return Throttled(f"too many failed authentications ({key}); retry in {wait:.0f} s", wait)

    def authorize(self, token: str | None, action: str, target: str = "") -> Principal:
        """The caller, if their role allows ``action``; otherwise an audited :class:`AccessDenied`."""
        principal = self._authenticate(token, action, target)
        if not principal.may(action):
            needs = " or ".join(sorted(allowed_roles(action)))
            raise self._deny(principal.name, action, target,
                             f"{principal.name} ({', '.join(sorted(principal.roles))}) may not {action}: "
                             f"needs the {needs} role")
        return principal

    def whoami(self, token: str) -> dict:
        principal = self._authenticate(token, "whoami", "")
        return {"name": principal.name, "roles": sorted(principal.roles)}

    def _insert_user(self, conn, name: str, roles: frozenset[str], by: str, token_id: str, token_hash: str) -> None:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
            raise Conflict(f"user {name!r} exists")
        user_id = conn.execute(users.insert().values(name=name, roles=",".join(sorted(roles)), created=now(),
                                                     created_by=by, active=True)).inserted_primary_key[0]
        conn.execute(tokens.insert().values(id=token_id, user_id=user_id, hash=token_hash, created=now(),
                                            revoked=False))
        self._seal_rows(conn, "users", users.c.id == user_id)
        self._seal_rows(conn, "tokens", tokens.c.user_id == user_id)

    def add_user(self, token: str, name: str, roles: list[str]) -> str:
        """Create a user with ``roles``; returns their API token (stored only as a hash: shown once)."""
        principal = self.authorize(token, "user.add", name)
        check_name(name, "user name")
        if name in RESERVED:
            raise VaultError(f"{name!r} is reserved")
        role_set = check_roles(list(roles))
        new, token_id, token_hash = new_token()
        with self.db.begin() as conn:
            self._insert_user(conn, name, role_set, principal.name, token_id, token_hash)
            self.audit.append(conn, principal.name, "user.add", name, "ok",
                              {"roles": sorted(role_set), "token": token_id})
        self._checkpoint()
        return new

    def users(self, token: str) -> list[dict]:
        self.authorize(token, "user.list")
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(users.c.name, users.c.roles, users.c.created, users.c.created_by,
                                       users.c.active).order_by(users.c.id))
            return [{**dict(r._mapping), "roles": r.roles.split(",")} for r in rows]

    def revoke_user(self, token: str, name: str) -> None:
        """Deactivate a user and revoke all their tokens (the last active admin cannot be revoked)."""
        principal = self.authorize(token, "user.revoke", name)
        with self.db.begin() as conn:
            row = conn.execute(select(users.c.id, users.c.roles, users.c.active).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            if "admin" in row.roles.split(","):
                admins = conn.execute(select(func.count()).select_from(users).where(
                    users.c.active.is_(True), users.c.roles.like("%admin%"))).scalar()
                if admins <= 1:
                    raise Conflict("cannot revoke the last active admin")
            conn.execute(update(users).where(users.c.id == row.id).values(active=False))
            conn.execute(update(tokens).where(tokens.c.user_id == row.id).values(revoked=True))
            self._seal_rows(conn, "users", users.c.id == row.id)
            self._seal_rows(conn, "tokens", tokens.c.user_id == row.id)
            self.audit.append(conn, principal.name, "user.revoke", name, "ok")
        # outside the catalog, write-once: a catalog row replayed from before the revocation cannot undo it
        self.backend.put_once(f"{REVOKED}{name}.json", sign_document(
            {"format": "mithridate-vault/revocation/1", "user": name, "by": principal.name, "time": now()},
            self.signer))
        self._revoked.add(name)
        self._checkpoint()

    # --- reading stored documents ------------------------------------------------------------------
    def _document(self, key: str, sha: str | None = None) -> dict:
        try:
            raw = self.backend.get(key)
        except NotFound:
            raise IntegrityError(f"{key}: missing") from None
        if sha is not None and not same(digest(raw), sha):
            raise IntegrityError(f"{key}: altered (its hash differs from the catalog's)")
        return open_document(raw, self.config.public_key, key)

    def _version_row(self, conn, dataset: str, number: int | None):
        query = select(versions).where(versions.c.dataset == dataset)
        query = (query.where(versions.c.number == number) if number is not None
                 else query.order_by(versions.c.number.desc()).limit(1))
        return conn.execute(query).first()

    def _newest_row(self, conn, dataset: str):
        """The newest version's row, refusing a catalog that lost newer versions whose signed commit
        records are stored (a catalog rolled back would otherwise serve, or number anew, an older one)."""
        # the records first: one is written only after its version's row committed, so a row committed
        # while we look cannot pass for a rolled-back one
        committed = list(self.backend.list(f"{COMMITTED}{dataset}/"))
        row = self._version_row(conn, dataset, None)
        newest = row.number if row is not None else 0
        for key in committed:
            number = key.rsplit("/", 1)[-1].split(".", 1)[0]
            if number.isdigit() and int(number) > newest:
                raise IntegrityError(f"{dataset}@{int(number)}: the vault signed its commit ({key}) but the "
                                     "catalog has no row for it: the catalog was rolled back; run "
                                     "`mithridate vault verify`")
        return row

    def _version_document(self, row) -> dict:
        """A version's signed manifest, checked to be the one its row names (not another version's)."""
        body = self._document(row.manifest, row.manifest_sha256)
        if (body.get("dataset"), body.get("version")) != (row.dataset, row.number):
            raise IntegrityError(f"{row.dataset}@{row.number}: the catalog points at the manifest of "
                                 f"{body.get('dataset')}@{body.get('version')} (repointed); run "
                                 "`mithridate vault verify`")
        record = f"{COMMITTED}{row.dataset}/{row.number}.json"
        try:  # a manifest of the right number that was never committed (a killed approval's) is refused
            committed = open_document(self.backend.get(record), self.config.public_key, record).get("manifest")
        except NotFound:
            committed = row.manifest  # committed before commit records existed, or its record is yet to come
        if committed != row.manifest:
            raise IntegrityError(f"{row.dataset}@{row.number}: the catalog points at {row.manifest}, but the vault "
                                 f"committed {committed} ({record}); run `mithridate vault verify`")
        return body

    def _upload_document(self, row) -> dict:
        """An upload's signed manifest, checked to be this upload's."""
        body = self._document(row.manifest, row.manifest_sha256)
        if body.get("upload") != row.id:
            raise IntegrityError(f"upload {row.id}: the catalog points at the manifest of upload {body.get('upload')} "
                                 "(repointed); run `mithridate vault verify`")
        return body

    def _version(self, ref: str) -> tuple[str, dict]:
        dataset, number = parse_ref(ref)
        with self.db.engine.connect() as conn:
            row = self._version_row(conn, dataset, number) if number is not None else self._newest_row(conn, dataset)
        if row is None:
            raise NotFound(f"no version {ref}" if number is not None else f"no approved version of {dataset!r}")
        return f"{dataset}@{row.number}", self._version_document(row)

    def _provenance(self, body: dict) -> ingest.Provenance:
        return ingest.Provenance.from_bytes(self.store.read_all(Blob.from_dict(body["provenance"])))

    def _read_upload(self, blob: Blob, filename: str, label: str | None) -> ingest.Upload:
        """An upload read from storage, authenticated chunk by chunk (large tables stream)."""
        return ingest.read_upload(lambda: self.store.open(blob), blob.size, filename, label)

    def _dataset_of(self, body: dict) -> Dataset:
        """A version's data as the checks see it (a uniform sample of a large table)."""
        return self._read_upload(Blob.from_dict(body["file"]), body["file"]["name"], body["label"]).dataset

    # --- ingest -------------------------------------------------------------------------------------
    def put(self, token: str, dataset: str, stream: BinaryIO, filename: str, source: str,
            label: str | None = None) -> dict:
        """Upload a file into quarantine, with per-row provenance; the policy's checks run on it."""
        principal = self.authorize(token, "upload.put", dataset)
        check_name(dataset, "dataset name")
        check_source(source)
        filename = check_filename(filename)
        fmt = ingest.file_format(filename)
        upload_id = "u-" + random_id(8)
        attempt = f"{dataset}/{upload_id}"
        # logged before the bytes arrive: an upload killed midway leaves this entry with no outcome,
        # which `verify` lists (its chunks, unreferenced, too)
        self.audit.record(principal.name, "upload.start", attempt, "ok", {"source": source, "file": filename})
        try:
            blob = self.store.write(stream, limit=self.config.max_upload_bytes)
        except TooLarge as exc:
            self.audit.record(principal.name, "upload.put", attempt, "refused", {"reason": str(exc), "source": source})
            raise
        try:  # read exactly what was stored, authenticated
            parsed = self._read_upload(blob, filename, label)
        except DataError as exc:
            self.audit.record(principal.name, "upload.put", attempt, "error",
                              {"reason": str(exc), "root": blob.root, "size": blob.size, "source": source})
            raise VaultError(f"not a usable dataset, nothing quarantined: {exc}") from None
        hashes = parsed.hashes
        created = now()
        origin = {"upload": upload_id, "source": source, "uploader": principal.name, "time": created}
        provenance = self.store.write_bytes(ingest.Provenance.single(hashes, origin).to_bytes())
        against, results = self._check_upload(dataset, parsed, self.config.checks)
        passed = all(r.passed for r in results)
        body = {"format": "mithridate-vault/upload/1", "upload": upload_id, "dataset": dataset,
                "file": {"name": filename, "format": fmt, **blob.to_dict()}, "rows": parsed.n_rows,
                "schema": parsed.schema, "checked_rows": parsed.dataset.n_rows, "label": label, "source": source,
                "uploader": principal.name,
                "created": created, "provenance": provenance.to_dict(), "checks_policy": self.config.checks,
                "checked_against": against,
                "checks": [r.to_dict() for r in results], "checks_passed": passed}
        raw = sign_document(body, self.signer)
        key = upload_key(upload_id)
        self.backend.put_once(key, raw)
        with self.db.begin() as conn:
            conn.execute(uploads.insert().values(
                id=upload_id, dataset=dataset, filename=filename, source=source, uploader=principal.name,
                created=created, status="quarantined", checks_passed=passed, rows=parsed.n_rows, size=blob.size,
                manifest=key, manifest_sha256=digest(raw)))
            self._seal_rows(conn, "uploads", uploads.c.id == upload_id)
            self.audit.append(conn, principal.name, "upload.put", f"{dataset}/{upload_id}", "ok",
                              {"source": source, "rows": parsed.n_rows, "size": blob.size, "root": blob.root,
                               "manifest_sha256": digest(raw), "checks_passed": passed})
        self._checkpoint()
        result = {"upload": upload_id, "dataset": dataset, "status": "quarantined", "rows": parsed.n_rows,
                  "checks": [r.to_dict() for r in results], "checks_passed": passed, "version": None}
        if self.config.auto_approve and passed:
            result["version"] = self._approve(upload_id, POLICY, forced=False)
            result["status"] = "approved"
        return result

    def _check_upload(self, dataset: str, parsed: ingest.Upload, policy: str
                      ) -> tuple[int | None, list[ingest.CheckResult]]:
        """``(the version checked against, results)``: the policy's checks on an upload, against the
        dataset's newest version (the number is recorded, and the approval re-checks if it changed)."""
        baseline, baseline_schema, against = None, None, None
        with contextlib.suppress(NotFound):
            ref, base_body = self._version(dataset)
            against = parse_ref(ref)[1]
            if ingest.resolve_checks(policy):
                baseline, baseline_schema = self._dataset_of(base_body), base_body["schema"]
        return against, ingest.run_checks(policy, parsed.dataset, baseline, schemas=(parsed.schema, baseline_schema))

    def _upload_row(self, conn, upload_id: str):
        """The upload's catalog row, checked: sealed, and its status the one the audit log decided."""
        row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        if row is None:
            raise NotFound(f"no upload {upload_id!r}")
        if not sealed(self.config.public_key, "uploads", row._mapping):
            raise IntegrityError(f"catalog: the row of upload {upload_id} was altered (seal invalid); "
                                 "run `mithridate vault verify`")
        decided = conn.execute(select(audit.c.seq, audit.c.action).where(
            audit.c.action.in_(("upload.approve", "upload.reject")), audit.c.target == upload_id,
            audit.c.outcome == "ok").limit(1)).first()
        if decided is not None and row.status == "quarantined":
            raise IntegrityError(f"catalog: upload {upload_id} was decided (audit entry {decided.seq}, "
                                 f"{decided.action}) but the catalog says quarantined (rows replayed)")
        return row

    def uploads(self, token: str, status: str | None = None, dataset: str | None = None) -> list[dict]:
        self.authorize(token, "upload.list", dataset or "")
        query = select(uploads).order_by(uploads.c.created)
        if status:
            query = query.where(uploads.c.status == status)
        if dataset:
            query = query.where(uploads.c.dataset == dataset)
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def upload(self, token: str, upload_id: str) -> dict:
        """An upload's manifest (file, rows, checks and their results) and its status."""
        self.authorize(token, "upload.list", upload_id)
        with self.db.engine.connect() as conn:
            row = self._upload_row(conn, upload_id)
        return {**self._upload_document(row), "status": row.status,
                "decided_by": row.decided_by, "version": row.version, "reason": row.reason}

    def read_upload(self, token: str, upload_id: str) -> tuple[dict, Iterator[bytes]]:
        """A quarantined (or decided) upload's bytes, for the steward who judges it."""
        principal = self.authorize(token, "upload.read", upload_id)
        with self.db.engine.connect() as conn:
            row = self._upload_row(conn, upload_id)
        body = self._upload_document(row)
        self.audit.record(principal.name, "upload.read", upload_id, "ok")
        return body, self.store.read(Blob.from_dict(body["file"]))

    def approve(self, token: str, upload_id: str, force: bool = False) -> str:
        """Turn a quarantined upload into the dataset's next verified version; returns ``DATASET@N``.

        Nobody approves their own upload. An upload whose checks failed needs ``force``.
        """
        principal = self.authorize(token, "upload.approve", upload_id)
        with self.db.engine.connect() as conn:
            row = self._upload_row(conn, upload_id)
        if row.uploader == principal.name:
            raise self._deny(principal.name, "upload.approve", upload_id,
                             "separation of duties: nobody approves their own upload")
        if row.status != "quarantined":
            raise Conflict(f"upload {upload_id} is already {row.status}")
        body = self._upload_document(row)
        for _ in range(10):  # approvals of the same dataset may race: re-check against what they committed
            recheck = None
            with self.db.engine.connect() as conn:
                latest = self._newest_row(conn, row.dataset)
            current = None if latest is None else latest.number
            stale = "checked_against" in body and body["checked_against"] != current
            if stale and not force:
                # the dataset moved on (or its newest version was hidden while the upload was checked):
                # the recorded results are about another baseline, so check again against the newest
                parsed = self._read_upload(Blob.from_dict(body["file"]), body["file"]["name"], body["label"])
                recheck = self._check_upload(row.dataset, parsed, body.get("checks_policy", self.config.checks))
                passed = all(r.passed for r in recheck[1])
            else:
                passed = body["checks_passed"]
            if not passed and not force:
                again = f" (re-run against {row.dataset}@{current}, newer than what it was checked against)" \
                    if recheck else ""
                raise Conflict(f"upload {upload_id} failed its checks{again}; review it (vault upload {upload_id}) "
                               "and approve with --force, or reject it")
            try:
                # forced: the checks failed, or the approver took the upload past checks made on another baseline
                return self._approve(upload_id, principal.name, forced=not passed or (stale and force),
                                     recheck=recheck)
            except _Moved:
                continue
        raise Conflict(f"{row.dataset} keeps gaining versions while {upload_id} is approved; approve again")

    def _approve(self, upload_id: str, approver: str, forced: bool,
                 recheck: tuple[int | None, list] | None = None) -> str:
        with self.db.begin() as conn:
            row = self._upload_row(conn, upload_id)
            self.db.lock(conn, f"dataset:{row.dataset}")
            row = self._upload_row(conn, upload_id)
            if row.status != "quarantined":
                raise Conflict(f"upload {upload_id} is already {row.status}")
            body = self._upload_document(row)
            latest = self._newest_row(conn, row.dataset)
            parent = None if latest is None else self._version_document(latest)
            provenance = ingest.Provenance.from_bytes(self.store.read_all(Blob.from_dict(body["provenance"])))
            provenance = provenance.inherit(None if parent is None else self._provenance(parent))
            number = 1 if latest is None else latest.number + 1
            parent_number = None if latest is None else latest.number
            against, checks = recheck if recheck is not None else (body.get("checked_against", parent_number),
                                                                   body["checks"])
            if against != parent_number and not forced:
                raise _Moved()
            ref, key = self._commit_version(conn, row.dataset, number, {
                "kind": "upload", "parent": parent_number, "upload": upload_id,
                "file": body["file"], "rows": body["rows"], "schema": body["schema"], "label": body["label"],
                "uploaded_by": body["uploader"], "created_by": approver,
                "checks": [c.to_dict() if hasattr(c, "to_dict") else c for c in checks], "checked_against": against,
                "checks_forced": forced}, provenance)
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(
                status="approved", decided_by=approver, decided_at=now(), version=number))
            self._seal_rows(conn, "uploads", uploads.c.id == upload_id)
        self._checkpoint(commit=(ref, key))
        return ref

    def _commit_version(self, conn, dataset: str, number: int, fields: dict, provenance: ingest.Provenance
                        ) -> tuple[str, str]:
        """Write the version's provenance and signed manifest, then its catalog row and audit entry;
        returns ``(DATASET@N, manifest key)``."""
        prov_blob = self.store.write_bytes(provenance.to_bytes())
        seq, head = self.audit.head(conn)
        body = {"format": "mithridate-vault/version/1", "dataset": dataset, "version": number,
                "created": now(), "provenance": prov_blob.to_dict(), "sources": provenance.sources(),
                "after_audit": {"seq": seq, "hash": head}, **fields}
        raw = sign_document(body, self.signer)
        key = manifest_key(dataset, number, raw)
        self.backend.put_once(key, raw)
        conn.execute(versions.insert().values(
            dataset=dataset, number=number, kind=fields["kind"], parent=fields["parent"],
            upload_id=fields.get("upload"), rows=fields["rows"], size=fields["file"]["size"], manifest=key,
            manifest_sha256=digest(raw), created=body["created"], created_by=fields["created_by"],
            legal_hold=False))
        ref = f"{dataset}@{number}"
        action = "upload.approve" if fields["kind"] == "upload" else "version.cut"
        self.audit.append(conn, fields["created_by"], action, fields.get("upload") or ref, "ok",
                          {"version": ref, "manifest": key, "manifest_sha256": digest(raw),
                           "forced": fields.get("checks_forced", False), **fields.get("removed", {})})
        return ref, key

    def reject(self, token: str, upload_id: str, reason: str = "") -> None:
        """Reject a quarantined upload. Its bytes stay stored, for forensics; it never becomes a version."""
        principal = self.authorize(token, "upload.reject", upload_id)
        with self.db.begin() as conn:
            row = self._upload_row(conn, upload_id)
            if row.status != "quarantined":
                raise Conflict(f"upload {upload_id} is already {row.status}")
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(
                status="rejected", decided_by=principal.name, decided_at=now(), reason=reason[:2000]))
            self._seal_rows(conn, "uploads", uploads.c.id == upload_id)
            self.audit.append(conn, principal.name, "upload.reject", upload_id, "ok", {"reason": reason[:2000]})
        self._checkpoint()

    # --- versions -----------------------------------------------------------------------------------
    def datasets(self, token: str) -> list[dict]:
        self.authorize(token, "version.list")
        query = (select(versions.c.dataset, func.count().label("versions"), func.max(versions.c.number).label("latest"))
                 .group_by(versions.c.dataset).order_by(versions.c.dataset))
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def versions(self, token: str, dataset: str) -> list[dict]:
        self.authorize(token, "version.list", dataset)
        query = select(versions).where(versions.c.dataset == dataset).order_by(versions.c.number)
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def manifest(self, token: str, ref: str) -> dict:
        self.authorize(token, "version.list", ref)
        return self._version(ref)[1]

    def signed_manifest(self, token: str, ref: str) -> bytes:
        """A version's manifest exactly as stored and signed (clients check the signature themselves)."""
        self.authorize(token, "version.list", ref)
        dataset, number = parse_ref(ref)
        with self.db.engine.connect() as conn:
            row = self._version_row(conn, dataset, number) if number is not None else self._newest_row(conn, dataset)
        if row is None:
            raise NotFound(f"no version {ref}" if number is not None else f"no approved version of {dataset!r}")
        self._version_document(row)
        return self.backend.get(row.manifest)

    def read(self, token: str, ref: str) -> tuple[dict, Iterator[bytes]]:
        """An approved version's bytes (exactly what was uploaded), chunk by chunk, each authenticated."""
        principal = self.authorize(token, "version.read", ref)
        full, body = self._version(ref)
        self.audit.record(principal.name, "version.read", full, "ok", {"root": body["file"]["root"]})
        return body, self.store.read(Blob.from_dict(body["file"]))

    # --- provenance ---------------------------------------------------------------------------------
    def trace(self, token: str, source: str) -> dict:
        """Every version and row that came from ``source``, and every upload from it."""
        principal = self.authorize(token, "trace", source)
        found = []
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(versions).order_by(versions.c.dataset, versions.c.number)).all()
            ups = conn.execute(select(uploads.c.id, uploads.c.dataset, uploads.c.status, uploads.c.rows,
                                      uploads.c.uploader, uploads.c.created, uploads.c.version)
                               .where(uploads.c.source == source).order_by(uploads.c.created)).all()
        for row in rows:
            body = self._version_document(row)
            if source not in body["sources"]:
                continue
            positions = self._provenance(body).rows_from({source})
            found.append({"version": f"{row.dataset}@{row.number}", "rows": positions.tolist(),
                          "count": len(positions), "total": body["rows"]})
        self.audit.record(principal.name, "trace", source, "ok", {"versions": len(found), "uploads": len(ups)})
        return {"source": source, "versions": found, "uploads": [dict(u._mapping) for u in ups]}

    def cut(self, token: str, dataset: str, exclude_sources: list[str], base: int | None = None) -> str:
        """A new version of ``dataset``: its newest version (or ``base``) without the sources' rows."""
        principal = self.authorize(token, "version.cut", dataset)
        check_name(dataset, "dataset name")
        sources = {check_source(s) for s in exclude_sources}
        if not sources:
            raise VaultError("name at least one source to exclude")
        with self.db.begin() as conn:
            self.db.lock(conn, f"dataset:{dataset}")
            latest = self._newest_row(conn, dataset)
            origin_row = latest if base is None else self._version_row(conn, dataset, base)
            if origin_row is None:
                raise NotFound(f"no version {dataset}@{base}" if base else f"no approved version of {dataset!r}")
            body = self._version_document(origin_row)
            provenance = self._provenance(body)
            drop = provenance.rows_from(sources)
            if len(drop) == 0:
                raise Conflict(f"{dataset}@{origin_row.number} has no rows from {', '.join(sorted(sources))}")
            if len(drop) == body["rows"]:
                raise Conflict(f"every row of {dataset}@{origin_row.number} comes from those sources")
            filename = body["file"]["name"]
            data = ingest.without_rows(self.store.read_all(Blob.from_dict(body["file"])), filename, drop)
            parsed = ingest.parse(data, filename, body["label"])
            keep = ingest.np.setdiff1d(ingest.np.arange(body["rows"]), drop)
            hashes = ingest.row_hashes(data, filename)
            kept = ingest.Provenance(hashes, provenance.origin[keep], provenance.origins)
            blob = self.store.write_bytes(data)
            ref, key = self._commit_version(conn, dataset, latest.number + 1, {
                "kind": "cut", "parent": origin_row.number, "upload": None,
                "file": {"name": filename, "format": body["file"]["format"], **blob.to_dict()},
                "rows": parsed.n_rows, "schema": ingest.schema_of(parsed), "label": body["label"],
                "uploaded_by": None, "created_by": principal.name, "checks": [],
                "removed": {"excluded_sources": sorted(sources), "removed_rows": len(drop)}}, kept)
        self._checkpoint(commit=(ref, key))
        return ref

    # --- audit --------------------------------------------------------------------------------------
    def log(self, token: str, after: int = 0, limit: int | None = None, action: str | None = None) -> list[dict]:
        principal = self.authorize(token, "audit.read")
        entries = self.audit.entries(after, limit, action)
        self.audit.record(principal.name, "audit.read", "", "ok", {"after": after, "entries": len(entries)})
        return entries

    def _checkpoint(self, commit: tuple[str, str] | None = None) -> dict:
        """Sign the audit log's head and keep it in write-once storage, outside the catalog (as
        transparency logs publish signed tree heads): a catalog restored from an older copy, or a log
        whose tail was cut, no longer holds the heads it signed. Written after every change of state,
        once it is committed; with ``commit`` (``(DATASET@N, manifest key)``, a new version) also as the
        version's commit record ``committed/DATASET/N.json``, which a catalog that lost the version
        contradicts (a manifest alone may be a killed writer's, never committed)."""
        with self.db.engine.connect() as conn:
            seq, head = self.audit.head(conn)
        body = {"format": HEAD_FORMAT, "vault": self.config.id, "seq": seq, "hash": head, "time": now()}
        if commit is not None:
            body.update(version=commit[0], manifest=commit[1])
        raw = sign_document(body, self.signer)
        self.backend.put_once(f"{CHECKPOINTS}{seq:012d}.json", raw)
        if commit is not None:
            dataset, number = parse_ref(commit[0])
            self.backend.put_once(f"{COMMITTED}{dataset}/{number}.json", raw)
        return json.loads(raw)

    def head(self, token: str) -> dict:
        """The audit log's signed head, for an auditor to keep outside the vault (an external witness):
        ``verify(witness=head)`` later proves the log still contains it, unchanged."""
        self.authorize(token, "audit.read")
        return self._checkpoint()

    def verify(self, token: str, witness: dict | None = None) -> dict:
        """Re-check every chunk, manifest, signature, key, catalog row and the audit chain, and that the
        log holds every signed head (and ``witness``, a head an auditor kept); see :mod:`.verify`."""
        from mithridate.vault.verify import verify_vault

        principal = self.authorize(token, "vault.verify")
        report = verify_vault(self, witness)
        self.audit.record(principal.name, "vault.verify", "", "ok" if not report["problems"] else "failed",
                          {"problems": len(report["problems"]), **report["checked"]})
        return report

    def collect(self, token: str, older_than: float = 86400.0) -> dict:
        """Remove encrypted chunks that no signed document in storage refers to (left by uploads that were
        refused or killed while streaming) and their data keys, if older than ``older_than`` seconds (a
        live upload's chunks are younger). Only where the storage allows it: S3 Object Lock keeps them."""
        principal = self.authorize(token, "storage.collect")
        if not self.backend.collects:
            raise VaultError(f"{self.backend.describe()} keeps every object until its retention ends; "
                             "unreferenced chunks stay (unreadable without a manifest)")
        import time

        removed, freed = 0, 0
        with self._key_lock(exclusive=True):  # no upload checks for, or writes, a chunk meanwhile
            referenced: set[str] = set()
            for key in [*self.backend.list("manifests"), *self.backend.list("uploads")]:
                body = open_document(self.backend.get(key), self.config.public_key, key)
                for part in ("file", "provenance"):
                    referenced.update(c for c, _ in body[part]["chunks"])
            now_s = time.time()
            for key in list(self.backend.list("objects")):
                object_id = key.rsplit("/", 1)[-1]
                if object_id in referenced or now_s - self.backend.modified(key) < older_than:
                    continue
                dek = object_key_id(self.backend.get(key)).hex()
                freed += self.backend.collect(key)
                self.backend.delete_mutable(f"keys/dek/{dek}")
                removed += 1
        self.audit.record(principal.name, "storage.collect", "", "ok", {"objects": removed, "bytes": freed,
                                                                        "older_than_s": older_than})
        self._checkpoint()
        return {"objects": removed, "bytes": freed}

    # --- keys and retention -------------------------------------------------------------------------
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


__all__ = ["Vault", "parse_ref"]
