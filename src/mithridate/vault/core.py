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
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select, update

from mithridate.data import Dataset
from mithridate.errors import DataError
from mithridate.vault import ingest
from mithridate.vault.access import (
    POLICY,
    RESERVED,
    Principal,
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
    DEFAULT_CHECKS,
    Config,
    check_config,
    config_path,
    read_config,
    write_config,
)
from mithridate.vault.crypto import Keyring, load_provider, random_key, write_key_file
from mithridate.vault.db import Database, sqlite_url, tokens, uploads, users, versions
from mithridate.vault.errors import AccessDenied, Conflict, IntegrityError, NotFound, VaultError
from mithridate.vault.primitives import Signer, digest, random_id, same
from mithridate.vault.store import CHUNK_SIZE, Blob, ChunkStore, manifest_key, open_document, sign_document, upload_key

REF = re.compile(r"^(?P<dataset>[^@]+)(@(?P<number>\d+))?$")
MAX_SOURCE = 255


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``"train@3"`` -> ``("train", 3)``; ``"train"`` -> ``("train", None)`` (the newest version)."""
    match = REF.match(ref or "")
    if not match:
        raise VaultError(f"invalid version reference {ref!r} (use DATASET or DATASET@NUMBER)")
    check_name(match["dataset"], "dataset name")
    return match["dataset"], None if match["number"] is None else int(match["number"])


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


def schema_of(dataset: Dataset) -> dict:
    if dataset.kind == "table":
        columns = {str(c): str(t) for c, t in dataset.features.dtypes.items()}
        return {"kind": "table", "columns": columns, "classes": [str(c) for c in dataset.classes]}
    return {"kind": "image", "shape": list(dataset.features.shape[1:]), "dtype": str(dataset.features.dtype),
            "classes": [str(c) for c in dataset.classes]}


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
        keyring.store_signer(signer)
        config = Config(id=random_id(8), created=now(), public_key=signer.public_hex, key=key,
                        storage=storage, db=db_url, checks=checks, auto_approve=auto_approve,
                        chunk_size=chunk_size, max_upload_bytes=max_upload_bytes)
        db = Database(cls._db_url(root, config))
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
        return vault, token

    @staticmethod
    def _db_url(root: Path, config: Config, override: str | None = None) -> str:
        import os

        return override or os.environ.get("MITHRIDATE_VAULT_DB") or config.db or sqlite_url(root / "vault.db")

    @classmethod
    def open(cls, root: str | Path, db_url: str | None = None, migrate: bool = False) -> Vault:
        """Open a vault folder, checking its configuration, master key and signing key first."""
        root = Path(root)
        config, doc = read_config(root)
        provider = load_provider(config.key, root)
        if provider.key_id != config.key.get("id"):
            where = config.key.get("path", f"${config.key.get('var', 'key')}")
            raise IntegrityError(f"{where}: not the vault's master key (key id {provider.key_id}, the vault "
                                 f"expects {config.key.get('id')}): altered or wrong key")
        providers = {provider.key_id: provider}
        if config.retiring_key:
            old = load_provider(config.retiring_key, root)
            providers[old.key_id] = old
        backend = make_backend(config.storage, root)
        keyring = Keyring(backend, providers, provider.key_id)
        signer = keyring.signer()
        check_config(doc, signer)
        db = Database(cls._db_url(root, config, db_url))
        if migrate:
            db.migrate()
        else:
            db.check_schema()
        if hasattr(backend, "sweep"):
            backend.sweep()
        return cls(root, config, db, backend, keyring, signer)

    def close(self) -> None:
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

    # --- identity -----------------------------------------------------------------------------------
    def _principal(self, token: str | None) -> Principal | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        token_id, secret = parsed
        query = (select(users.c.name, users.c.roles, users.c.active, tokens.c.hash, tokens.c.revoked)
                 .join(users, users.c.id == tokens.c.user_id).where(tokens.c.id == token_id))
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.revoked or not row.active:
            return None
        # Argon2 is slow on purpose; a token this process already verified against this very hash is
        # recognised by its SHA-256 (revocation still applies: the catalog row is read every time)
        seen = self._verified.get((token_id, row.hash))
        if seen is None or not same(seen, digest(secret.encode())):
            if not token_matches(row.hash, secret):
                return None
            self._verified[(token_id, row.hash)] = digest(secret.encode())
        return Principal(row.name, frozenset(row.roles.split(",")))

    def _deny(self, actor: str, action: str, target: str, reason: str, detail: dict | None = None) -> AccessDenied:
        self.audit.record(actor, action, target, "denied", {"reason": reason, **(detail or {})})
        return AccessDenied(reason)

    def authorize(self, token: str | None, action: str, target: str = "") -> Principal:
        """The caller, if their role allows ``action``; otherwise an audited :class:`AccessDenied`."""
        principal = self._principal(token)
        if principal is None:
            parsed = parse_token(token)
            raise self._deny("anonymous", action, target, "invalid, revoked or missing token",
                             {"token": parsed[0]} if parsed else None)
        if not principal.may(action):
            needs = " or ".join(sorted(allowed_roles(action)))
            raise self._deny(principal.name, action, target,
                             f"{principal.name} ({', '.join(sorted(principal.roles))}) may not {action}: "
                             f"needs the {needs} role")
        return principal

    def whoami(self, token: str) -> dict:
        principal = self._principal(token)
        if principal is None:
            raise self._deny("anonymous", "whoami", "", "invalid, revoked or missing token")
        return {"name": principal.name, "roles": sorted(principal.roles)}

    def _insert_user(self, conn, name: str, roles: frozenset[str], by: str, token_id: str, token_hash: str) -> None:
        if conn.execute(select(users.c.id).where(users.c.name == name)).first() is not None:
            raise Conflict(f"user {name!r} exists")
        user_id = conn.execute(users.insert().values(name=name, roles=",".join(sorted(roles)), created=now(),
                                                     created_by=by, active=True)).inserted_primary_key[0]
        conn.execute(tokens.insert().values(id=token_id, user_id=user_id, hash=token_hash, created=now(),
                                            revoked=False))

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
            self.audit.append(conn, principal.name, "user.revoke", name, "ok")

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

    def _version(self, ref: str) -> tuple[str, dict]:
        dataset, number = parse_ref(ref)
        with self.db.engine.connect() as conn:
            row = self._version_row(conn, dataset, number)
        if row is None:
            raise NotFound(f"no version {ref}" if number is not None else f"no approved version of {dataset!r}")
        return f"{dataset}@{row.number}", self._document(row.manifest, row.manifest_sha256)

    def _provenance(self, body: dict) -> ingest.Provenance:
        return ingest.Provenance.from_bytes(self.store.read_all(Blob.from_dict(body["provenance"])))

    def _dataset_of(self, body: dict) -> Dataset:
        return ingest.parse(self.store.read_all(Blob.from_dict(body["file"])), body["file"]["name"], body["label"])

    # --- ingest -------------------------------------------------------------------------------------
    def put(self, token: str, dataset: str, stream: BinaryIO, filename: str, source: str,
            label: str | None = None) -> dict:
        """Upload a file into quarantine, with per-row provenance; the policy's checks run on it."""
        principal = self.authorize(token, "upload.put", dataset)
        check_name(dataset, "dataset name")
        check_source(source)
        filename = check_filename(filename)
        fmt = ingest.file_format(filename)
        blob = self.store.write(stream, limit=self.config.max_upload_bytes)
        data = self.store.read_all(blob)  # parse exactly what was stored, authenticated
        try:
            if not data:
                raise DataError(f"{filename}: the file is empty")
            parsed = ingest.parse(data, filename, label)
        except DataError as exc:
            self.audit.record(principal.name, "upload.put", dataset, "error",
                              {"reason": str(exc), "root": blob.root, "size": blob.size, "source": source})
            raise VaultError(f"not a usable dataset, nothing quarantined: {exc}") from None
        hashes = ingest.row_hashes(data, filename)
        del data
        if len(hashes) != parsed.n_rows:
            raise VaultError(f"{filename}: {parsed.n_rows} rows loaded but {len(hashes)} hashed")
        upload_id = "u-" + random_id(8)
        created = now()
        origin = {"upload": upload_id, "source": source, "uploader": principal.name, "time": created}
        provenance = self.store.write_bytes(ingest.Provenance.single(hashes, origin).to_bytes())
        baseline = None
        if ingest.resolve_checks(self.config.checks):
            with contextlib.suppress(NotFound):
                baseline = self._dataset_of(self._version(dataset)[1])
        results = ingest.run_checks(self.config.checks, parsed, baseline)
        passed = all(r.passed for r in results)
        body = {"format": "mithridate-vault/upload/1", "upload": upload_id, "dataset": dataset,
                "file": {"name": filename, "format": fmt, **blob.to_dict()}, "rows": parsed.n_rows,
                "schema": schema_of(parsed), "label": label, "source": source, "uploader": principal.name,
                "created": created, "provenance": provenance.to_dict(), "checks_policy": self.config.checks,
                "checks": [r.to_dict() for r in results], "checks_passed": passed}
        raw = sign_document(body, self.signer)
        key = upload_key(upload_id)
        self.backend.put_once(key, raw)
        with self.db.begin() as conn:
            conn.execute(uploads.insert().values(
                id=upload_id, dataset=dataset, filename=filename, source=source, uploader=principal.name,
                created=created, status="quarantined", checks_passed=passed, rows=parsed.n_rows, size=blob.size,
                manifest=key, manifest_sha256=digest(raw)))
            self.audit.append(conn, principal.name, "upload.put", f"{dataset}/{upload_id}", "ok",
                              {"source": source, "rows": parsed.n_rows, "size": blob.size, "root": blob.root,
                               "manifest_sha256": digest(raw), "checks_passed": passed})
        result = {"upload": upload_id, "dataset": dataset, "status": "quarantined", "rows": parsed.n_rows,
                  "checks": [r.to_dict() for r in results], "checks_passed": passed, "version": None}
        if self.config.auto_approve and passed:
            result["version"] = self._approve(upload_id, POLICY, forced=False)
            result["status"] = "approved"
        return result

    def _upload_row(self, conn, upload_id: str):
        row = conn.execute(select(uploads).where(uploads.c.id == upload_id)).first()
        if row is None:
            raise NotFound(f"no upload {upload_id!r}")
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
        return {**self._document(row.manifest, row.manifest_sha256), "status": row.status,
                "decided_by": row.decided_by, "version": row.version, "reason": row.reason}

    def read_upload(self, token: str, upload_id: str) -> tuple[dict, Iterator[bytes]]:
        """A quarantined (or decided) upload's bytes, for the steward who judges it."""
        principal = self.authorize(token, "upload.read", upload_id)
        with self.db.engine.connect() as conn:
            row = self._upload_row(conn, upload_id)
        body = self._document(row.manifest, row.manifest_sha256)
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
        if not row.checks_passed and not force:
            raise Conflict(f"upload {upload_id} failed its checks; review it (vault upload {upload_id}) and "
                           "approve with --force, or reject it")
        return self._approve(upload_id, principal.name, forced=not row.checks_passed)

    def _approve(self, upload_id: str, approver: str, forced: bool) -> str:
        with self.db.begin() as conn:
            row = self._upload_row(conn, upload_id)
            self.db.lock(conn, f"dataset:{row.dataset}")
            row = self._upload_row(conn, upload_id)
            if row.status != "quarantined":
                raise Conflict(f"upload {upload_id} is already {row.status}")
            body = self._document(row.manifest, row.manifest_sha256)
            latest = self._version_row(conn, row.dataset, None)
            parent = None if latest is None else self._document(latest.manifest, latest.manifest_sha256)
            provenance = ingest.Provenance.from_bytes(self.store.read_all(Blob.from_dict(body["provenance"])))
            provenance = provenance.inherit(None if parent is None else self._provenance(parent))
            number = 1 if latest is None else latest.number + 1
            ref = self._commit_version(conn, row.dataset, number, {
                "kind": "upload", "parent": None if latest is None else latest.number, "upload": upload_id,
                "file": body["file"], "rows": body["rows"], "schema": body["schema"], "label": body["label"],
                "uploaded_by": body["uploader"], "created_by": approver, "checks": body["checks"],
                "checks_forced": forced}, provenance)
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(
                status="approved", decided_by=approver, decided_at=now(), version=number))
            return ref

    def _commit_version(self, conn, dataset: str, number: int, fields: dict, provenance: ingest.Provenance) -> str:
        """Write the version's provenance and signed manifest, then its catalog row and audit entry."""
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
        return ref

    def reject(self, token: str, upload_id: str, reason: str = "") -> None:
        """Reject a quarantined upload. Its bytes stay stored, for forensics; it never becomes a version."""
        principal = self.authorize(token, "upload.reject", upload_id)
        with self.db.begin() as conn:
            row = self._upload_row(conn, upload_id)
            if row.status != "quarantined":
                raise Conflict(f"upload {upload_id} is already {row.status}")
            conn.execute(update(uploads).where(uploads.c.id == upload_id).values(
                status="rejected", decided_by=principal.name, decided_at=now(), reason=reason[:2000]))
            self.audit.append(conn, principal.name, "upload.reject", upload_id, "ok", {"reason": reason[:2000]})

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
            row = self._version_row(conn, dataset, number)
        if row is None:
            raise NotFound(f"no version {ref}" if number is not None else f"no approved version of {dataset!r}")
        self._document(row.manifest, row.manifest_sha256)
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
            body = self._document(row.manifest, row.manifest_sha256)
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
            latest = self._version_row(conn, dataset, None)
            origin_row = latest if base is None else self._version_row(conn, dataset, base)
            if origin_row is None:
                raise NotFound(f"no version {dataset}@{base}" if base else f"no approved version of {dataset!r}")
            body = self._document(origin_row.manifest, origin_row.manifest_sha256)
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
            return self._commit_version(conn, dataset, latest.number + 1, {
                "kind": "cut", "parent": origin_row.number, "upload": None,
                "file": {"name": filename, "format": body["file"]["format"], **blob.to_dict()},
                "rows": parsed.n_rows, "schema": schema_of(parsed), "label": body["label"],
                "uploaded_by": None, "created_by": principal.name, "checks": [],
                "removed": {"excluded_sources": sorted(sources), "removed_rows": len(drop)}}, kept)

    # --- audit --------------------------------------------------------------------------------------
    def log(self, token: str, after: int = 0, limit: int | None = None, action: str | None = None) -> list[dict]:
        principal = self.authorize(token, "audit.read")
        entries = self.audit.entries(after, limit, action)
        self.audit.record(principal.name, "audit.read", "", "ok", {"after": after, "entries": len(entries)})
        return entries

    def verify(self, token: str) -> dict:
        """Re-check every chunk, manifest, signature, key and the audit chain; see :mod:`.verify`."""
        from mithridate.vault.verify import verify_vault

        principal = self.authorize(token, "vault.verify")
        report = verify_vault(self)
        self.audit.record(principal.name, "vault.verify", "", "ok" if not report["problems"] else "failed",
                          {"problems": len(report["problems"]), **report["checked"]})
        return report

    # --- keys and retention -------------------------------------------------------------------------
    def rotate_key(self, token: str, new_key: dict | None = None) -> dict:
        """Re-wrap every data key (and the signing key) under a new master key; no data is re-written.

        ``new_key``: a key spec (see :func:`~mithridate.vault.crypto.load_provider`); by default a new
        key file beside the current one. The old key file is removed once nothing needs it. Run it with
        no other process writing to the vault (the service runs it itself). Resumes if interrupted.
        """
        import os

        principal = self.authorize(token, "key.rotate")
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
            write_config(self.root, self.config, self.signer)
            self.keyring.switch(provider)
        rewrapped = self.keyring.rewrap_all()
        old_id = old_spec["id"]
        self.config.retiring_key = None
        write_config(self.root, self.config, self.signer)
        self.keyring.providers.pop(old_id, None)
        if old_spec["source"] == "file":
            path = Path(old_spec["path"])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path if path.is_absolute() else self.root / path)
        self.audit.record(principal.name, "key.rotate", self.config.key["id"], "ok",
                          {"from": old_id, "to": self.config.key["id"], "rewrapped": rewrapped})
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
                until = datetime.fromisoformat(retain_until)
            except ValueError:
                raise VaultError(f"invalid date {retain_until!r} (ISO 8601, e.g. 2031-01-01)") from None
        with self.db.begin() as conn:
            row = self._version_row(conn, dataset, number)
            if row is None:
                raise NotFound(f"no version {ref}")
            values: dict = {}
            if legal_hold is not None:
                values["legal_hold"] = legal_hold
            if until is not None:
                if row.retain_until and datetime.fromisoformat(row.retain_until) > until:
                    raise Conflict(f"{ref} is retained until {row.retain_until}; retention can only be extended")
                values["retain_until"] = until.isoformat()
            if not values:
                raise VaultError("set --hold/--release and/or --retain-until")
            body = self._document(row.manifest, row.manifest_sha256)
            keys = [row.manifest] + [f"objects/{c[:2]}/{c}" for c, _ in
                                     body["file"]["chunks"] + body["provenance"]["chunks"]]
            self.backend.protect(keys, until, legal_hold)
            conn.execute(update(versions).where(versions.c.dataset == dataset, versions.c.number == number)
                         .values(**values))
            self.audit.append(conn, principal.name, "version.hold", ref, "ok",
                              {k: v for k, v in values.items()})
        return {"version": ref, **values}


__all__ = ["Vault", "parse_ref"]
