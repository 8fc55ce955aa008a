"""The model registry: models with the data they were trained on, serving aliases, and the response that
follows a poisoned dataset or a bad model to everything it reached and rolls each alias back.

One part of :class:`~mithridate.vault.core.Vault`, which inherits every part: models live in the vault's
storage (encrypted chunks, a signed write-once record each), their rows and aliases in its catalog (sealed),
every action in its audit log.

>>> import tempfile, pathlib, io, json
>>> from mithridate.vault import Vault
>>> vault, admin = Vault.init(pathlib.Path(tempfile.mkdtemp()) / "v", checks="none", auto_approve=True)
>>> alice, tom, stew, dee = (vault.add_user(admin, n, [r]) for n, r in
...     [("alice", "contributor"), ("tom", "trainer"), ("stew", "steward"), ("dee", "deployer")])
>>> for source in ("web", "crowd"):
...     _ = vault.put(alice, "train", io.BytesIO(b"x,label\\n1,a\\n2,b\\n"), "t.csv", source=source)
>>> weights = io.BytesIO(json.dumps({"coef": [1.0]}).encode())
>>> vault.add_model(tom, "fraud", weights, "w.json", ["train@1"])
'fraud@1'
>>> vault.add_model(tom, "fraud", io.BytesIO(b'{"coef": [2.0]}'), "w.json", ["train@2"])
'fraud@2'
>>> for n in (1, 2):
...     _ = vault.promote(stew, f"fraud@{n}")
>>> vault.set_alias(dee, "fraud", "champion", 2)["new"]
2
>>> response = vault.quarantine_dataset(stew, ["train@2"], reason="crowd labels were flipped")
>>> response["moves"]
[{'model': 'fraud', 'alias': 'champion', 'old': 2, 'new': 1}]
>>> vault.resolve(dee, "fraud@champion")["model"]
'fraud@1'
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import select, update

from mithridate.vault.access import check_name
from mithridate.vault.audit import now
from mithridate.vault.db import aliases, dataset_marks, derivations, models, responses, versions
from mithridate.vault.errors import Conflict, IntegrityError, NotFound, VaultError
from mithridate.vault.lineage import (
    CANDIDATE,
    KNOWN_GOOD,
    QUARANTINED,
    Blast,
    blast_radius,
    downstream,
    rollback_plan,
    split_ref,
)
from mithridate.vault.primitives import digest, random_id
from mithridate.vault.refs import check_filename, parse_ref
from mithridate.vault.seals import sealed
from mithridate.vault.store import Blob, open_document, sign_document

MODEL_FORMAT = "mithridate-vault/model/1"
DERIVATION_FORMAT = "mithridate-vault/derivation/1"
DERIVATIONS = "derivations/"
FORMATS = {".safetensors": "safetensors", ".onnx": "onnx", ".json": "json"}
MAX_MODEL_BYTES = 4 << 30
SEALED_AS = {"models": "model", "aliases": "alias", "dataset_marks": "the mark on", "responses": "response"}


def model_format(data: bytes, filename: str) -> str:
    """The file's format, checked from its bytes: safetensors, ONNX or JSON. Pickle-based files (``.pkl``,
    ``.pt``, ``.joblib``, a zip holding a pickle) are refused: loading one runs whatever code it carries.

    >>> model_format(b'{"coef": [1]}', "w.json")
    'json'
    >>> model_format(b"\\x80\\x04K.", "w.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mithridate.vault.errors.VaultError: w.json: a pickle; ... (loading a pickle runs code)
    """
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if data[:1] == b"\x80" or (data[:2] == b"PK" and _zip_holds_pickle(data)):
        raise VaultError(f"{filename}: a pickle; register safetensors, ONNX or JSON weights (loading a pickle "
                         "runs code)")
    if suffix not in FORMATS:
        raise VaultError(f"{filename}: register .safetensors, .onnx or .json weights (pickle-based formats such "
                         "as .pkl, .pt and .joblib run code when loaded)")
    kind = FORMATS[suffix]
    try:
        if kind == "json":
            json.loads(data)
        elif kind == "safetensors":
            from safetensors.numpy import load

            load(data)
        elif data[:1] != b"\x08":  # an ONNX ModelProto opens with field 1, ir_version (a varint)
            raise ValueError("not an ONNX model")
    except Exception as exc:
        raise VaultError(f"{filename}: not a valid {kind} file ({str(exc).splitlines()[0][:120]})") from None
    return kind


def _zip_holds_pickle(data: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return any(n.endswith((".pkl", "data.pkl")) for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def check_metrics(metrics: dict | None) -> dict:
    """Holdout metrics: names to finite numbers."""
    out = {}
    for name, value in (metrics or {}).items():
        check_name(str(name), "metric name")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise VaultError(f"metric {name!r} must be a finite number, got {value!r}")
        out[str(name)] = float(value)
    return out


def model_ref(ref: str) -> tuple[str, int]:
    name, number = parse_ref(ref)
    if number is None:
        raise VaultError(f"name a model version as MODEL@NUMBER, got {ref!r}")
    return name, number


class ModelOps:
    """Models, aliases, lineage and the response to a poisoning."""

    # --- models -------------------------------------------------------------------------------------
    def add_model(self, token: str, name: str, stream: BinaryIO, filename: str, datasets: list[str],
                  parent: str | None = None, metrics: dict | None = None) -> str:
        """Register a model's weights as ``NAME@N`` (a candidate), with the dataset versions it was trained
        on and the model it was fine-tuned from. A model whose lineage already reaches data marked poisoned
        is registered quarantined."""
        principal = self.authorize(token, "model.add", name)
        check_name(name, "model name")
        filename = check_filename(filename)
        data = stream.read(MAX_MODEL_BYTES + 1)
        if len(data) > MAX_MODEL_BYTES:
            raise VaultError(f"{filename}: over {MAX_MODEL_BYTES >> 30} GiB")
        kind = model_format(data, filename)
        metrics = check_metrics(metrics)
        used = sorted({self._dataset_ref(ref) for ref in datasets})
        if not used:
            raise VaultError("name the dataset version(s) the model was trained on (DATASET@N)")
        with self.db.engine.connect() as conn:
            for ref in used:
                if self._version_row(conn, *split_ref(ref)) is None:
                    raise NotFound(f"no dataset version {ref}")
            if parent is not None:
                parent = "{}@{}".format(*model_ref(parent))
                if self._model_row(conn, parent) is None:
                    raise NotFound(f"no model {parent}")
        blob = self.store.write_bytes(data)
        with self.db.begin() as conn:
            self.db.lock(conn, "registry")  # numbering, and no response commits unseen meanwhile
            last = conn.execute(select(models.c.number).where(models.c.name == name)
                                .order_by(models.c.number.desc()).limit(1)).scalar()
            number = (last or 0) + 1
            body = {"format": MODEL_FORMAT, "vault": self.config.id, "model": name, "number": number,
                    "file": {"name": filename, "format": kind, **blob.to_dict()}, "sha256": digest(data),
                    "datasets": used, "parent": parent, "metrics": metrics, "created": now(),
                    "created_by": principal.name}
            blast = self._blast(conn)  # trained on data already marked poisoned: quarantined from the start
            tainted = bool(set(used) & blast.datasets) or parent in blast.models
            raw = sign_document(body, self.signer)
            sha = digest(raw)
            key = f"models/{name}/{number}.{sha[:16]}.json"
            self.backend.put_once(key, raw)  # last before the row: a failure leaves at most an orphan record
            conn.execute(models.insert().values(name=name, number=number, format=kind, size=len(data), manifest=key,
                                                manifest_sha256=sha, created=body["created"],
                                                created_by=principal.name, status=QUARANTINED if tainted else CANDIDATE,
                                                reason="trained on data marked poisoned" if tainted else None))
            self._seal_rows(conn, "models", (models.c.name == name) & (models.c.number == number))
            self.audit.append(conn, principal.name, "model.add", f"{name}@{number}", "ok",
                              {"datasets": used, "parent": parent, "sha256": body["sha256"]})
        self._checkpoint()
        return f"{name}@{number}"

    def models(self, token: str, name: str | None = None) -> list[dict]:
        self.authorize(token, "model.list", name or "")
        out = []
        for row in self._sealed("models", models.c.name, name):
            body = self._model_document(row)
            out.append({"model": f"{row.name}@{row.number}", "status": row.status, "format": row.format,
                        "datasets": body["datasets"], "parent": body["parent"], "metrics": body["metrics"],
                        "created": row.created, "created_by": row.created_by, "reason": row.reason})
        return out

    def signed_model(self, token: str, ref: str) -> bytes:
        """A model's record exactly as stored and signed (remote clients check the signature themselves)."""
        self.authorize(token, "model.read", ref)
        with self.db.engine.connect() as conn:
            row = self._model_row(conn, ref, required=True)
        self._model_document(row)
        return self.backend.get(row.manifest)

    def read_model(self, token: str, ref: str) -> tuple[dict, Iterator[bytes]]:
        """A model's signed record and its weights, chunk by chunk, each authenticated."""
        principal = self.authorize(token, "model.read", ref)
        with self.db.engine.connect() as conn:
            row = self._model_row(conn, ref, required=True)
        body = self._model_document(row)
        self.audit.record(principal.name, "model.read", ref, "ok", {"sha256": body["sha256"]})
        return body, self.store.read(Blob.from_dict(body["file"]))

    def promote(self, token: str, ref: str, reason: str = "") -> dict:
        """Mark a model version known-good (evaluated on a trusted holdout): a target for rollbacks. A model
        whose lineage reaches a poisoned dataset version, or that is quarantined, cannot be."""
        principal = self.authorize(token, "model.promote", ref)
        with self.db.begin() as conn:
            self.db.lock(conn, "registry")
            self._clean(conn, ref, "be known-good")
            self._set_status(conn, ref, KNOWN_GOOD, reason or None)
            self.audit.append(conn, principal.name, "model.promote", ref, "ok", {"reason": reason})
        self._checkpoint()
        return {"model": ref, "status": KNOWN_GOOD}

    # --- aliases ------------------------------------------------------------------------------------
    def set_alias(self, token: str, model: str, alias: str, number: int) -> dict:
        """Point ``MODEL@ALIAS`` at version ``number`` (one atomic change of one row)."""
        principal = self.authorize(token, "model.alias", f"{model}@{alias}")
        check_name(alias, "alias")
        if alias.isdigit():
            raise VaultError(f"an alias is a name, not a number: {alias!r}")
        ref = f"{model}@{int(number)}"
        with self.db.begin() as conn:
            self.db.lock(conn, "registry")
            self._clean(conn, ref, "serve")
            old = self._alias_number(conn, model, alias)
            self._move(conn, model, alias, int(number), principal.name)
            self.audit.append(conn, principal.name, "model.alias", f"{model}@{alias}", "ok",
                              {"old": old, "new": int(number)})
        self._checkpoint()
        return {"model": model, "alias": alias, "old": old, "new": int(number)}

    def aliases(self, token: str, model: str | None = None) -> list[dict]:
        self.authorize(token, "model.list", model or "")
        rows = self._sealed("aliases", aliases.c.model, model)
        return [{"model": r.model, "alias": r.alias, "number": r.number, "updated": r.updated,
                 "updated_by": r.updated_by} for r in rows]

    def resolve(self, token: str, ref: str) -> dict:
        """What ``MODEL@ALIAS`` (or ``MODEL@N``) serves: the version, its status and its record's hash.
        A serving process calls this (or reads :meth:`read_model`); an alias row edited outside the vault
        fails its seal here."""
        self.authorize(token, "model.read", ref)
        name, _, target = ref.rpartition("@")
        check_name(name, "model name")
        with self.db.engine.connect() as conn:
            if not target.isdigit():
                row = conn.execute(select(aliases).where(aliases.c.model == name, aliases.c.alias == target)).first()
                if row is None:
                    raise NotFound(f"no alias {ref}")
                self._check_seal("aliases", row, f"alias {ref}")
                if row.number is None:
                    raise NotFound(f"{ref} points at no model: every version was quarantined")
                target = str(row.number)
            model = self._model_row(conn, f"{name}@{target}", required=True)
        body = self._model_document(model)
        return {"model": f"{name}@{target}", "status": model.status, "sha256": body["sha256"],
                "format": model.format}

    # --- lineage --------------------------------------------------------------------------------------
    def derive(self, token: str, child: str, parents: list[str]) -> dict:
        """Declare that dataset version ``child`` was made from ``parents`` (features, a join, a
        relabelling): a poisoning of a parent then reaches the child and what was trained on it. Recorded
        once, signed, in write-once storage. A child made from data already marked poisoned is reached at
        once: the models trained on it are quarantined and their aliases moved, as by the mark itself."""
        principal = self.authorize(token, "dataset.derive", child)
        child = self._dataset_ref(child)
        parents = sorted({self._dataset_ref(p) for p in parents} - {child})
        if not parents:
            raise VaultError("name at least one parent dataset version other than the child")
        with self.db.begin() as conn:
            for ref in [child, *parents]:
                if self._version_row(conn, *split_ref(ref)) is None:
                    raise NotFound(f"no dataset version {ref}")
            if conn.execute(select(derivations.c.child).where(derivations.c.child == child)).first():
                raise Conflict(f"{child}'s derivation is already recorded")
            if child in downstream(self._lineage(conn)[0], parents):
                raise Conflict(f"{child} is an ancestor of one of its parents")
            body = {"format": DERIVATION_FORMAT, "vault": self.config.id, "child": child, "parents": parents,
                    "created": now(), "created_by": principal.name}
            key = f"{DERIVATIONS}{child.replace('@', '/')}.json"
            self.backend.put_once(key, sign_document(body, self.signer))
            conn.execute(derivations.insert().values(child=child, parents=json.dumps(parents), record=key,
                                                     created=body["created"], created_by=principal.name))
            self.audit.append(conn, principal.name, "dataset.derive", child, "ok", {"parents": parents})
        self._checkpoint()
        with self.db.engine.connect() as conn:
            reached = child in self._blast(conn).datasets
        if reached:  # made from data already marked poisoned: what was trained on it is reached now
            self._respond(principal.name, "dataset.derive", [], [], f"{child} derives from data marked poisoned",
                          dry_run=False)
        return {"child": child, "parents": parents, "reached_by_poison": reached}

    def lineage(self, token: str, ref: str) -> dict:
        """Downstream of a dataset version (``DATASET@N``: derived versions, models trained on them and
        their fine-tunes), or upstream of a model (``model:NAME@N``: its parents and every version they
        and it were trained on, with their ancestors)."""
        self.authorize(token, "model.list", ref)
        with self.db.engine.connect() as conn:
            parents, trained, tuned, statuses = self._lineage(conn)
        if ref.startswith("model:"):
            name, number = model_ref(ref[len("model:"):])
            chain, current = [], f"{name}@{number}"
            if current not in trained:
                raise NotFound(f"no model {current}")
            while current:
                chain.append(current)
                current = tuned.get(current)
            data = set().union(*(trained[m] for m in chain))
            upstream = downstream(parents, data)  # along the parents: upstream
            return {"model": chain[0], "fine_tuned_from": chain[1:], "trained_on": sorted(data),
                    "datasets_upstream": sorted(upstream - data)}
        ref = self._dataset_ref(ref)
        blast = blast_radius(parents, trained, tuned, [ref])
        return {"dataset": ref, "derived": sorted(blast.datasets - {ref}),
                "models": [{"model": m, "status": statuses[m]} for m in sorted(blast.models, key=_order)]}

    # --- the response -----------------------------------------------------------------------------------
    def quarantine_dataset(self, token: str, refs: list[str] | None = None, source: str | None = None,
                           reason: str = "", dry_run: bool = False) -> dict:
        """Mark dataset versions poisoned (``refs``, or every version holding rows from ``source``, by the
        vault's provenance), quarantine every model they reached, and move each alias serving one of them
        to the newest known-good model with a clean lineage, or to none (``stranded``). One transaction:
        every alias is either moved or not. Run again, it changes nothing; :meth:`undo` reverses it."""
        principal = self.authorize(token, "dataset.quarantine", source or ",".join(refs or []))
        if bool(refs) == bool(source):
            raise VaultError("name dataset versions or a source, not both and not neither")
        if source is not None:
            marked = sorted(v["version"] for v in self.trace(token, source)["versions"])
            if not marked:
                raise NotFound(f"no approved version holds rows from {source!r}")
        else:
            marked = sorted({self._dataset_ref(r) for r in refs})
        cause = reason or (f"rows from source {source}" if source else "marked poisoned")
        return self._respond(principal.name, "dataset.quarantine", marked, [], cause, dry_run)

    def rollback(self, token: str, ref: str, reason: str = "", dry_run: bool = False) -> dict:
        """Quarantine model ``ref`` (a monitor alarm on it, a failed audit) and its fine-tunes, and move each
        alias serving one of them back, as :meth:`quarantine_dataset` does."""
        principal = self.authorize(token, "model.rollback", ref)
        target = "{}@{}".format(*model_ref(ref))
        return self._respond(principal.name, "model.rollback", [], [target], reason or "rolled back", dry_run)

    def undo(self, token: str, response_id: str) -> dict:
        """Reverse a response: dataset versions it marked are cleared, models it quarantined get their old
        status and aliases it moved go back (where nobody moved them since), except what is still reached by
        data marked poisoned or by another quarantined model: that stays as it is (``kept``). Undoing a
        response that marked data takes the role that may mark it."""
        principal = self.authorize(token, "model.rollback", response_id)
        with self.db.engine.connect() as conn:  # checked before the write lock: a denial is audited at once
            row = conn.execute(select(responses).where(responses.c.id == response_id)).first()
        if row is not None and json.loads(row.detail)["marked"]:
            self.authorize(token, "dataset.quarantine", response_id)
        with self.db.begin() as conn:
            self.db.lock(conn, "registry")
            row = conn.execute(select(responses).where(responses.c.id == response_id)).first()
            if row is None:
                raise NotFound(f"no response {response_id!r}")
            self._check_seal("responses", row, f"response {response_id}")
            if row.undone_by:
                raise Conflict(f"response {response_id} was undone by {row.undone_by} at {row.undone_at}")
            detail = json.loads(row.detail)
            for ref in detail["marked"]:
                dataset, number = split_ref(ref)
                where = (dataset_marks.c.dataset == dataset) & (dataset_marks.c.number == number)
                conn.execute(update(dataset_marks).where(where).values(status="cleared"))
                self._seal_rows(conn, "dataset_marks", where)
            parents, trained, tuned, statuses = self._lineage(conn)
            others = [m for m, s in statuses.items() if s == QUARANTINED and m not in detail["quarantined"]]
            still = blast_radius(parents, trained, tuned, self._marks(conn), others).models
            restored, moved_since, kept = [], [], []
            for ref, old in detail["quarantined"].items():
                if ref in still:
                    kept.append(ref)
                else:
                    self._set_status(conn, ref, old, None)
            for move in detail["moves"]:
                back = None if move["old"] is None else f"{move['model']}@{move['old']}"
                if self._alias_number(conn, move["model"], move["alias"]) != move["new"]:
                    moved_since.append(move)
                elif back in still or back in kept:
                    kept.append(f"{move['model']}@{move['alias']}")
                else:
                    self._move(conn, move["model"], move["alias"], move["old"], principal.name)
                    restored.append(move)
            conn.execute(update(responses).where(responses.c.id == response_id)
                         .values(undone_by=principal.name, undone_at=now()))
            self._seal_rows(conn, "responses", responses.c.id == response_id)
            self.audit.append(conn, principal.name, "response.undo", response_id, "ok",
                              {"restored": restored, "moved_since": moved_since, "kept": kept})
        self._checkpoint()
        return {"response": response_id, "restored": restored, "moved_since": moved_since, "kept": kept}

    def responses(self, token: str) -> list[dict]:
        self.authorize(token, "model.list")
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(responses).order_by(responses.c.created)).all()
        for row in rows:
            self._check_seal("responses", row, f"response {row.id}")
        return [{"response": r.id, "created": r.created, "actor": r.actor, "cause": r.cause,
                 **json.loads(r.detail), "undone_by": r.undone_by} for r in rows]

    def _respond(self, actor: str, action: str, marked: list[str], bad_models: list[str], cause: str,
                 dry_run: bool) -> dict:
        with self.db.begin() as conn:
            self.db.lock(conn, "registry")
            for ref in marked:
                if self._version_row(conn, *split_ref(ref)) is None:
                    raise NotFound(f"no dataset version {ref}")
            for ref in bad_models:
                self._model_row(conn, ref, required=True)
            parents, trained, tuned, statuses = self._lineage(conn)
            already = self._marks(conn)
            quarantined = [m for m, s in statuses.items() if s == QUARANTINED]
            blast = blast_radius(parents, trained, tuned, [*already, *marked], [*bad_models, *quarantined])
            current = {(r.model, r.alias): r.number for r in conn.execute(select(aliases)).all()}
            moves = rollback_plan(current, statuses, blast.models)
            quarantine = {m: statuses[m] for m in sorted(blast.models, key=_order) if statuses[m] != QUARANTINED}
            new_marks = [r for r in marked if r not in already]
            result = {"response": None, "cause": cause, "dry_run": dry_run, "marked": new_marks,
                      "datasets_reached": sorted(blast.datasets), "quarantined": quarantine,
                      "moves": [m.to_dict() for m in moves],
                      "stranded": [f"{m.model}@{m.alias}" for m in moves if m.new is None]}
            changed = bool(new_marks or quarantine or moves)
            if dry_run or not changed:
                self.audit.append(conn, actor, action, ",".join(marked + bad_models), "ok",
                                  {"dry_run": dry_run, "changes": changed})
                return result
            for ref in new_marks:
                dataset, number = split_ref(ref)
                conn.execute(dataset_marks.delete().where(dataset_marks.c.dataset == dataset,
                                                          dataset_marks.c.number == number))
                conn.execute(dataset_marks.insert().values(dataset=dataset, number=number, status="poisoned",
                                                           reason=cause, created=now(), created_by=actor))
                self._seal_rows(conn, "dataset_marks", (dataset_marks.c.dataset == dataset)
                                & (dataset_marks.c.number == number))
            for ref in quarantine:
                self._set_status(conn, ref, QUARANTINED, cause)
            for move in moves:
                self._move(conn, move.model, move.alias, move.new, actor)
            result["response"] = random_id(8)
            detail = {k: result[k] for k in ("marked", "quarantined", "moves", "stranded")}
            conn.execute(responses.insert().values(id=result["response"], created=now(), actor=actor, cause=cause,
                                                   detail=json.dumps(detail, sort_keys=True)))
            self._seal_rows(conn, "responses", responses.c.id == result["response"])
            self.audit.append(conn, actor, action, ",".join(marked + bad_models), "ok",
                              {"response": result["response"], **detail})
        self._checkpoint()
        return result

    # --- the catalog side ---------------------------------------------------------------------------------
    def _dataset_ref(self, ref: str) -> str:
        dataset, number = parse_ref(ref)
        if number is None:
            raise VaultError(f"name a dataset version as DATASET@NUMBER, got {ref!r}")
        return f"{dataset}@{number}"

    def _model_row(self, conn, ref: str, required: bool = False):
        name, number = model_ref(ref)
        row = conn.execute(select(models).where(models.c.name == name, models.c.number == number)).first()
        if row is None and required:
            raise NotFound(f"no model {name}@{number}")
        if row is not None:
            self._check_seal("models", row, f"model {name}@{number}")
        return row

    def _clean(self, conn, ref: str, to: str) -> None:
        """Refuse ``ref`` (to serve, to be known-good) if quarantined or its lineage reaches poisoned data."""
        row = self._model_row(conn, ref, required=True)
        if row.status == QUARANTINED:
            raise Conflict(f"{ref} is quarantined ({row.reason}); it cannot {to}")
        if ref in self._blast(conn).models:
            raise Conflict(f"{ref} was trained on data marked poisoned; it cannot {to}")

    def _model_document(self, row) -> dict:
        body = self._document(row.manifest, row.manifest_sha256)
        if (body.get("model"), body.get("number")) != (row.name, row.number):
            raise IntegrityError(f"{row.name}@{row.number}: the catalog points at the record of "
                                 f"{body.get('model')}@{body.get('number')} (repointed)")
        return body

    def _sealed(self, kind: str, column, value: str | None) -> list:
        """The ``kind`` rows (where ``column`` is ``value``, if given) in key order, each seal checked."""
        table = column.table
        query = select(table).order_by(*table.primary_key.columns)
        if value is not None:
            query = query.where(column == value)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query).all()
        for row in rows:
            key = "@".join(str(row._mapping[c.name]) for c in table.primary_key.columns)
            self._check_seal(kind, row, f"{SEALED_AS[kind]} {key}")
        return rows

    def _check_seal(self, kind: str, row, what: str) -> None:
        if not sealed(self.config.public_key, kind, row._mapping):
            raise IntegrityError(f"{what}: its catalog row was altered outside the vault (seal invalid); "
                                 "run `mithridate vault verify`")

    def _set_status(self, conn, ref: str, status: str, reason: str | None) -> None:
        name, number = split_ref(ref)
        where = (models.c.name == name) & (models.c.number == number)
        conn.execute(update(models).where(where).values(status=status, reason=reason))
        self._seal_rows(conn, "models", where)

    def _alias_number(self, conn, model: str, alias: str) -> int | None:
        row = conn.execute(select(aliases).where(aliases.c.model == model, aliases.c.alias == alias)).first()
        if row is None:
            return None
        self._check_seal("aliases", row, f"alias {model}@{alias}")
        return row.number

    def _move(self, conn, model: str, alias: str, number: int | None, actor: str) -> None:
        where = (aliases.c.model == model) & (aliases.c.alias == alias)
        if conn.execute(select(aliases.c.model).where(where)).first() is None:
            conn.execute(aliases.insert().values(model=model, alias=alias, number=number, updated=now(),
                                                 updated_by=actor))
        else:
            conn.execute(update(aliases).where(where).values(number=number, updated=now(), updated_by=actor))
        self._seal_rows(conn, "aliases", where)

    def _marks(self, conn) -> list[str]:
        rows = conn.execute(select(dataset_marks)).all()
        for row in rows:
            self._check_seal("dataset_marks", row, f"the mark on {row.dataset}@{row.number}")
        return [f"{r.dataset}@{r.number}" for r in rows if r.status == "poisoned"]

    def _lineage(self, conn) -> tuple[dict, dict, dict, dict]:
        """The graph from signed records only (version manifests and their provenance, derivation records,
        model records), so an edited catalog row cannot hide a model from a response: dataset parents,
        models' training data, models' parents, and models' statuses (from sealed rows).

        A version's parents are the versions whose new rows it carries (by the vault's per-row provenance:
        a version built on top of a poisoned batch carries it, a cut without its source does not), the
        versions it was declared derived from, and, for a cut of a cut, that cut."""
        parents: dict[str, set[str]] = {}
        introduced, carried, cut_of, kinds = {}, {}, {}, {}
        for row in conn.execute(select(versions)).all():
            ref = f"{row.dataset}@{row.number}"
            body = self._version_document(row)
            kinds[ref] = row.kind
            if body.get("upload"):
                introduced[body["upload"]] = ref
            if row.kind == "cut":
                cut_of[ref] = f"{row.dataset}@{body['parent']}"
            if row.manifest not in self._carried:  # versions never change: read each provenance once
                provenance = self._provenance(body)  # its origins list may name uploads no row is left from
                used = [provenance.origins[i] for i in set(provenance.origin.tolist())]
                self._carried[row.manifest] = frozenset(o["upload"] for o in used if o.get("upload"))
            carried[ref] = self._carried[row.manifest]
        for ref, uploads in carried.items():
            parents[ref] = {introduced[u] for u in uploads if u in introduced and introduced[u] != ref}
        for ref, parent in cut_of.items():
            if kinds.get(parent) == "cut":
                parents[ref].add(parent)
        for key in self.backend.list(DERIVATIONS):
            body = open_document(self.backend.get(key), self.config.public_key, key)
            parents.setdefault(body["child"], set()).update(body["parents"])
        trained, tuned, statuses = {}, {}, {}
        for row in conn.execute(select(models)).all():
            ref = f"{row.name}@{row.number}"
            self._check_seal("models", row, f"model {ref}")
            body = self._model_document(row)
            trained[ref], tuned[ref], statuses[ref] = set(body["datasets"]), body["parent"], row.status
        return parents, trained, tuned, statuses

    def _blast(self, conn) -> Blast:
        """What data marked poisoned and quarantined models reach (a fine-tune of a quarantined model too)."""
        parents, trained, tuned, statuses = self._lineage(conn)
        return blast_radius(parents, trained, tuned, self._marks(conn),
                            [m for m, s in statuses.items() if s == QUARANTINED])


def _order(ref: str) -> tuple[str, int]:
    return split_ref(ref)
