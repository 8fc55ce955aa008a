"""The audit log, its signed heads, verification and collecting unreferenced chunks.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

import json

from mithridate.vault.audit import now
from mithridate.vault.crypto import (
    object_key_id,
)
from mithridate.vault.errors import VaultError
from mithridate.vault.refs import (
    CHECKPOINTS,
    COMMITTED,
    HEAD_FORMAT,
    parse_ref,
)
from mithridate.vault.store import open_document, sign_document


class AuditOps:
    """The audit log, its signed heads, verification and collecting unreferenced chunks."""

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
            for key in [*self.backend.list("manifests"), *self.backend.list("uploads"), *self.backend.list("models")]:
                body = open_document(self.backend.get(key), self.config.public_key, key)
                for part in ("file", "provenance"):
                    referenced.update(c for c, _ in body.get(part, {"chunks": []})["chunks"])
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
