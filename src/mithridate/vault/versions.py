"""Approved versions: listing, reading, tracing a source, cutting its rows out.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, select

from mithridate.vault import ingest
from mithridate.vault.access import (
    check_name,
)
from mithridate.vault.db import uploads, versions
from mithridate.vault.errors import Conflict, NotFound, VaultError
from mithridate.vault.refs import (
    check_source,
    parse_ref,
)
from mithridate.vault.store import Blob


class VersionOps:
    """Approved versions: listing, reading, tracing a source, cutting its rows out."""

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
