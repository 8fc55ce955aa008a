"""Reading signed documents and catalog rows, each checked against the other.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part.
"""

from __future__ import annotations

from sqlalchemy import select

from mithridate.data import Dataset
from mithridate.vault import ingest
from mithridate.vault.db import versions
from mithridate.vault.errors import IntegrityError, NotFound
from mithridate.vault.primitives import digest, same
from mithridate.vault.refs import (
    COMMITTED,
    parse_ref,
)
from mithridate.vault.store import Blob, open_document


class DocumentOps:
    """Reading signed documents and catalog rows, each checked against the other."""

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
