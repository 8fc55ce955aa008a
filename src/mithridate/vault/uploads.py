"""The ingest gate: uploads into quarantine, their checks, approval and rejection.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import select, update

from mithridate.errors import DataError
from mithridate.vault import ingest
from mithridate.vault.access import (
    POLICY,
    check_name,
)
from mithridate.vault.audit import now
from mithridate.vault.db import audit, uploads, versions
from mithridate.vault.errors import Conflict, IntegrityError, NotFound, TooLarge, VaultError
from mithridate.vault.primitives import digest, random_id
from mithridate.vault.refs import (
    _Moved,
    check_filename,
    check_source,
    parse_ref,
)
from mithridate.vault.seals import sealed
from mithridate.vault.store import Blob, manifest_key, sign_document, upload_key


class UploadOps:
    """The ingest gate: uploads into quarantine, their checks, approval and rejection."""

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
