"""The tamper-evident audit log: every action, allowed or denied, appended to a hash chain.

Entry ``n`` stores the hash of entry ``n - 1`` (``prev``) and its own hash, SHA-256 over the canonical
JSON of its fields, which the vault's Ed25519 key signs. Editing an entry breaks its hash; recomputing
the hash breaks the signature (the key is wrapped by the master key); deleting or reordering entries
breaks the sequence and the ``prev`` links. Appends are serialised (a database lock) so the chain never
forks, and an action's entry is written in the same transaction as the action. Version manifests
record the chain head they followed, so even dropping the newest entries is detected up to the last
version (see :func:`verify_chain`). This is the classic secure-logging construction (Schneier & Kelsey,
"Secure audit logs to support computer forensics", ACM TISSEC 1999), with public-key signatures.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Connection, func, select

from mithridate.vault.db import Database, audit
from mithridate.vault.primitives import Signer, digest, same, verify_signature
from mithridate.vault.store import canonical

GENESIS = "0" * 64
FIELDS = ("seq", "time", "actor", "action", "target", "outcome", "detail", "prev")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def printable(text: str) -> str:
    """Control characters escaped (a denied request's target is whatever the caller sent)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in str(text))


def entry_hash(entry: dict) -> str:
    return digest(canonical({k: entry[k] for k in FIELDS}))


class AuditLog:
    def __init__(self, db: Database, public_hex: str, signer: Signer | None = None):
        self.db = db
        self.public_hex = public_hex
        self.signer = signer

    def head(self, conn: Connection) -> tuple[int, str]:
        row = conn.execute(select(audit.c.seq, audit.c.hash).order_by(audit.c.seq.desc()).limit(1)).first()
        return (0, GENESIS) if row is None else (int(row.seq), row.hash)

    def append(self, conn: Connection, actor: str, action: str, target: str, outcome: str = "ok",
               detail: dict | None = None) -> dict:
        """Append one entry inside the caller's transaction (which then commits it with the action)."""
        if self.signer is None:
            raise RuntimeError("this vault handle cannot sign audit entries")
        self.db.lock(conn, "audit")
        seq, prev = self.head(conn)
        entry = {"seq": seq + 1, "time": now(), "actor": printable(actor)[:64], "action": action,
                 "target": printable(target)[:255],
                 "outcome": outcome, "detail": canonical(detail or {}).decode(), "prev": prev}
        entry["hash"] = entry_hash(entry)
        entry["signature"] = self.signer.sign(bytes.fromhex(entry["hash"]))
        conn.execute(audit.insert().values(**entry))
        return entry

    def record(self, actor: str, action: str, target: str, outcome: str, detail: dict | None = None) -> dict:
        """Append in a transaction of its own (denials, whose action never happens)."""
        with self.db.begin() as conn:
            return self.append(conn, actor, action, target, outcome, detail)

    def entries(self, after: int = 0, limit: int | None = None, action: str | None = None) -> list[dict]:
        query = select(audit).where(audit.c.seq > after).order_by(audit.c.seq)
        if action:
            query = query.where(audit.c.action == action)
        if limit:
            query = query.limit(limit)
        with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            row["seq"] = int(row["seq"])
        return rows

    def count(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(audit)).scalar() or 0)


def verify_chain(entries: list[dict], public_hex: str, intact: set[int] | None = None) -> list[str]:
    """Every problem in the chain, one line each, naming the entry (empty when intact); ``intact``, if
    given, collects the sequence numbers of the entries whose hash and signature hold."""
    problems: list[str] = []
    expected_seq, prev = 1, GENESIS
    for entry in entries:
        seq = entry["seq"]
        if seq != expected_seq:
            if seq > expected_seq:
                gap = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                problems.append(f"audit log: entries {gap} missing (deleted)")
            else:
                problems.append(f"audit log entry {seq}: out of order or duplicated")
        if not same(entry["prev"], prev):
            problems.append(f"audit log entry {seq}: does not follow the entry before it (chain broken)")
        if not same(entry_hash(entry), entry["hash"]):
            problems.append(f"audit log entry {seq}: content altered (hash mismatch)")
        elif not verify_signature(public_hex, bytes.fromhex(entry["hash"]), entry["signature"]):
            problems.append(f"audit log entry {seq}: signature invalid (altered)")
        elif intact is not None:
            intact.add(seq)
        expected_seq, prev = seq + 1, entry["hash"]
    return problems


def detail(entry: dict) -> dict:
    try:
        return json.loads(entry["detail"])
    except ValueError:
        return {}
