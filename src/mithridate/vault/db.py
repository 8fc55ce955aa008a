"""The vault's catalog: users, tokens, uploads, versions and the audit log, in SQLite or PostgreSQL.

SQLAlchemy Core; the schema is created and upgraded by Alembic migrations (``vault/migrations``), run
by :meth:`Database.migrate` (``mithridate vault init`` and ``mithridate serve`` call it). SQLite is the
embedded default (WAL journal; every transaction ``BEGIN IMMEDIATE``, so writers queue instead of
failing); PostgreSQL serves a multi-user deployment, where :meth:`Database.lock` takes a
transaction-scoped advisory lock to serialise what must be serial (version numbers, the audit chain).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine

from mithridate.vault.errors import VaultError

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("roles", String(200), nullable=False),
    Column("created", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("seal", String(128)),
)

tokens = Table(
    "tokens", metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("hash", String(200), nullable=False),
    Column("created", String(40), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("seal", String(128)),
)

uploads = Table(
    "uploads", metadata,
    Column("id", String(40), primary_key=True),
    Column("dataset", String(64), nullable=False, index=True),
    Column("filename", String(255), nullable=False),
    Column("source", String(255), nullable=False, index=True),
    Column("uploader", String(64), nullable=False),
    Column("created", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("checks_passed", Boolean, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("manifest", String(255), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("decided_by", String(64)),
    Column("decided_at", String(40)),
    Column("reason", Text),
    Column("version", Integer),
    Column("seal", String(128)),
)

versions = Table(
    "versions", metadata,
    Column("dataset", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("parent", Integer),
    Column("upload_id", String(40)),
    Column("rows", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("manifest", String(255), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("created", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("legal_hold", Boolean, nullable=False, default=False),
    Column("retain_until", String(40)),
)

audit = Table(
    "audit", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("time", String(40), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("target", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Index("ix_audit_action_target", "action", "target"),
)

# --- the model registry (models.py): models, their aliases, dataset marks and derivations, responses ---
models = Table(
    "models", metadata,
    Column("name", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("format", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("manifest", String(255), nullable=False),
    Column("manifest_sha256", String(64), nullable=False),
    Column("created", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("seal", String(128)),
)

aliases = Table(
    "aliases", metadata,
    Column("model", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("number", Integer),  # None: pointing nowhere (no clean version was left)
    Column("updated", String(40), nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("seal", String(128)),
)

dataset_marks = Table(
    "dataset_marks", metadata,
    Column("dataset", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("status", String(16), nullable=False),  # poisoned, or cleared by an undo
    Column("reason", Text, nullable=False),
    Column("created", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("seal", String(128)),
)

derivations = Table(
    "derivations", metadata,
    Column("child", String(80), primary_key=True),  # DATASET@N
    Column("parents", Text, nullable=False),  # JSON list of DATASET@N
    Column("record", String(255), nullable=False),  # its signed, write-once record in storage
    Column("created", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
)

responses = Table(
    "responses", metadata,
    Column("id", String(40), primary_key=True),
    Column("created", String(40), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("cause", Text, nullable=False),
    Column("detail", Text, nullable=False),  # JSON: marks, quarantined models and their old status, moves
    Column("undone_by", String(64)),
    Column("undone_at", String(40)),
    Column("seal", String(128)),
)

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0003_model_registry"  # the newest migration's revision (a test keeps the two in step)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


class Database:
    """An engine plus the few things every caller needs: transactions, locks, migrations."""

    def __init__(self, url: str):
        self.url = url
        self.sqlite = url.startswith("sqlite")
        self.engine = self._engine(url)

    def _engine(self, url: str) -> Engine:
        if not self.sqlite:
            return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_connection, _record):
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            # writers take the lock up front (no deadlocking lock upgrades); readers never wait (WAL)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("vault_write") else "BEGIN")

        return engine

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed if the block succeeds, rolled back otherwise."""
        with self.engine.connect() as conn:
            conn.execution_options(vault_write=True)
            with conn.begin():
                yield conn

    def lock(self, conn: Connection, name: str) -> None:
        """Serialise on ``name`` until the transaction ends (SQLite transactions already are serial)."""
        if self.sqlite:
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_version(self) -> str | None:
        """The catalog's migration revision, or None if it has none yet."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:
            return None

    def check_schema(self) -> None:
        """Refuse a catalog whose schema is older or newer than this code (run ``vault migrate``)."""
        head = SCHEMA_HEAD
        try:
            with self.engine.connect() as conn:
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception as exc:
            raise VaultError(f"cannot read the vault catalog ({self.safe_url()}): {str(exc).splitlines()[0]}"
                             ) from None
        if current != head:
            raise VaultError(f"the vault catalog is at schema {current}, this code needs {head}: "
                             "run `mithridate vault migrate`")

    def safe_url(self) -> str:
        """The URL without its password."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
