"""The ingest gate's data side: reading an upload, per-row provenance, the checks, cutting rows out.

- :func:`parse`: the stored bytes as a :class:`~mithridate.data.Dataset` (CSV/TSV, Parquet, npz), by
  :func:`mithridate.data.load_bytes` (the loader's own rules); what cannot be loaded never reaches quarantine.
- :func:`read_upload`: the same for an upload in storage; a large table streams (:class:`Upload`).
- :func:`row_hashes`: a SHA-256 per row over the row's exact content (cell text for CSV), so a row
  carried from one version to the next keeps its provenance and a crafted row cannot collide with it.
- :class:`Provenance`: per row, the upload it first came from (and so its source, uploader and time).
- Checks: callables ``check(dataset, baseline) -> CheckResult`` run on every upload; ``baseline`` is
  the newest approved version (or None). Built in: ``schema`` (columns and classes agree with the
  baseline), ``scan`` (:class:`mithridate.detect.Scan`: no class looks backdoored, and no more rows
  are flagged than in the baseline beyond chance),
  ``validate`` (:class:`mithridate.validate.Gate` against a profile of the baseline). The policy names
  them (``"schema,scan"``; ``"none"``); :func:`register_check` adds your own.
- :func:`without_rows`: the same file format minus some rows (for ``vault cut``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import PurePath

import numpy as np
import pandas as pd

from mithridate.data import Dataset, load_bytes, read_table, table_dataset
from mithridate.errors import DataError
from mithridate.vault.errors import VaultError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


def file_format(filename: str) -> str:
    suffix = PurePath(filename).suffix.lower()
    if suffix not in FORMATS:
        raise VaultError(f"{filename}: the vault stores .csv, .tsv, .parquet or .npz files")
    return FORMATS[suffix]


def parse(data: bytes, filename: str, label: str | None) -> Dataset:
    """The upload as a dataset, by the rules of :func:`mithridate.data.load` (:func:`~mithridate.data.io.
    load_bytes`); DataError if it is not one."""
    file_format(filename)
    return load_bytes(data, filename, label)


def row_hashes(data: bytes, filename: str) -> np.ndarray:
    """SHA-256 of each row's content, shape ``(n, 32)``, in file order."""
    fmt = file_format(filename)
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        n = len(arrays["y"])
        per_row = [a for k, a in sorted(arrays.items()) if a.ndim >= 1 and len(a) == n]
        out = np.empty((n, 32), dtype=np.uint8)
        for i in range(n):
            h = hashlib.sha256()
            for a in per_row:
                h.update(np.ascontiguousarray(a[i]).tobytes())
                h.update(b"\x1e")
            out[i] = np.frombuffer(h.digest(), dtype=np.uint8)
        return out
    cells = read_table(io.BytesIO(data), filename, as_text=True).to_numpy(dtype=object)
    out = np.empty((len(cells), 32), dtype=np.uint8)
    for i, row in enumerate(cells):
        out[i] = np.frombuffer(hashlib.sha256(json.dumps(row.tolist()).encode()).digest(), dtype=np.uint8)
    return out


# --- large uploads, streamed ---------------------------------------------------------------------------
IN_MEMORY_BYTES = 32 << 20
"""Uploads up to this size are read whole; larger tables stream (memory bounded by a chunk and a sample)."""
SAMPLE_ROWS = 100_000
"""Rows of a large table the checks see: a uniform random sample (schema and row hashes cover every row)."""
STREAM_ROWS = 50_000


@dataclass
class Upload:
    """What the gate learns from an upload: the data the checks see (all of it, or a uniform sample of a
    large table), and what covers every row: the count, each row's hash and the schema."""

    dataset: Dataset
    n_rows: int
    hashes: np.ndarray
    schema: dict
    sampled: bool = False


def schema_of(dataset: Dataset) -> dict:
    if dataset.kind == "table":
        columns = {str(c): str(t) for c, t in dataset.features.dtypes.items()}
        return {"kind": "table", "columns": columns, "classes": [str(c) for c in dataset.classes]}
    return {"kind": "image", "shape": list(dataset.features.shape[1:]), "dtype": str(dataset.features.dtype),
            "classes": [str(c) for c in dataset.classes]}


def read_upload(open_stream: Callable[[], io.RawIOBase], size: int, filename: str, label: str | None,
                sample_rows: int = SAMPLE_ROWS, seed: int = 0) -> Upload:
    """Read an upload the way :func:`parse` and :func:`row_hashes` do; a table over
    :data:`IN_MEMORY_BYTES` streams twice (``open_stream()`` reopens it): once as text for the row
    hashes, the labels and the count, once typed for a uniform sample of ``sample_rows`` rows and the
    column types, so memory stays near one chunk plus the sample whatever the file's size."""
    fmt = file_format(filename)
    name = PurePath(filename).name
    if fmt == "npz" or size <= IN_MEMORY_BYTES:
        with open_stream() as fh:
            data = fh.read()
        if not data:
            raise DataError(f"{filename}: the file is empty")
        dataset = parse(data, filename, label)
        hashes = row_hashes(data, filename)
        if len(hashes) != dataset.n_rows:
            raise VaultError(f"{filename}: {dataset.n_rows} rows loaded but {len(hashes)} hashed")
        return Upload(dataset, dataset.n_rows, hashes, schema_of(dataset))
    try:
        return _stream_table(open_stream, name, label, sample_rows, seed)
    except (DataError, VaultError):
        raise
    except Exception as exc:
        raise DataError(f"{filename}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from exc


def _chunks(open_stream, name: str, as_text: bool):
    """The table in chunks of :data:`STREAM_ROWS` rows, read as :func:`read_table` reads it whole."""
    with open_stream() as fh:
        yield from read_table(fh, name, as_text=as_text, chunksize=STREAM_ROWS)


def _stream_table(open_stream, name: str, label: str | None, sample_rows: int, seed: int) -> Upload:
    from mithridate.data.dataset import check_finite
    from mithridate.data.io import DEFAULT_LABEL_COLUMNS

    hashes, n, columns = [], 0, None
    for chunk in _chunks(open_stream, name, as_text=True):
        columns = [str(c) for c in chunk.columns]
        cells = chunk.to_numpy(dtype=object)
        part = np.empty((len(cells), 32), dtype=np.uint8)
        for i, row in enumerate(cells):
            part[i] = np.frombuffer(hashlib.sha256(json.dumps(row.tolist()).encode()).digest(), dtype=np.uint8)
        hashes.append(part)
        n += len(cells)
    if not n or columns is None:
        raise DataError(f"{name}: the table has no rows")
    label = label or next((c for c in DEFAULT_LABEL_COLUMNS if c in columns), None)
    if label is None or label not in columns:
        raise DataError(f"{name}: name the label column with --label (columns: {', '.join(columns)})"
                        if label is None else f"{name}: unknown label column {label!r} (columns: {', '.join(columns)})")
    keep = np.sort(np.random.default_rng(seed).choice(n, min(n, sample_rows), replace=False))
    parts, kinds, classes, start = [], {}, set(), 0
    for chunk in _chunks(open_stream, name, as_text=False):
        chunk = chunk.set_axis([str(c) for c in chunk.columns], axis=1)
        features = chunk.drop(columns=[label])
        check_finite(features, name, start)
        missing = int(chunk[label].isna().sum())
        if missing:
            raise DataError(f"{name}: {missing} rows have no label (first near row {start})")
        classes.update(chunk[label].tolist())
        for col, dtype in chunk.dtypes.items():
            kinds.setdefault(col, set()).add(str(dtype))
        local = keep[(keep >= start) & (keep < start + len(chunk))] - start
        parts.append(chunk.iloc[local])
        start += len(chunk)
    sample = pd.concat(parts, ignore_index=True)
    dtypes = {col: _common(found) for col, found in kinds.items()}
    sample = sample.astype({c: t for c, t in dtypes.items() if str(sample[c].dtype) != t})
    dataset = table_dataset(sample, label, name=name)
    ordered = sorted(classes, key=str) if dtypes[label] == "object" else sorted(classes)
    schema = {"kind": "table", "columns": {c: t for c, t in dtypes.items() if c != label},
              "classes": [str(c) for c in ordered]}
    return Upload(dataset, n, np.concatenate(hashes), schema, sampled=n > len(keep))


def _common(dtypes: set[str]) -> str:
    """The type a column read whole would get, from the types its chunks got."""
    if len(dtypes) == 1:
        return next(iter(dtypes))
    if dtypes <= {"int64", "float64"}:
        return "float64"
    return "object"


# --- provenance --------------------------------------------------------------------------------------
@dataclass
class Provenance:
    """Per row of a file: ``origin[i]`` indexes ``origins`` (dicts: upload, source, uploader, time)."""

    hashes: np.ndarray
    origin: np.ndarray
    origins: list[dict]

    @classmethod
    def single(cls, hashes: np.ndarray, origin: dict) -> Provenance:
        return cls(hashes, np.zeros(len(hashes), dtype=np.int32), [origin])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        meta = np.frombuffer(json.dumps(self.origins, sort_keys=True).encode(), dtype=np.uint8)
        np.savez(buffer, hashes=self.hashes, origin=self.origin, origins=meta)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Provenance:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return cls(archive["hashes"], archive["origin"].astype(np.int32),
                       json.loads(archive["origins"].tobytes()))

    def inherit(self, parent: Provenance | None) -> Provenance:
        """This file's rows, each keeping the origin it had in ``parent`` if it was there already."""
        if parent is None:
            return self
        first: dict[bytes, int] = {}
        for h, o in zip(parent.hashes, parent.origin, strict=True):
            first.setdefault(h.tobytes(), int(o))
        origins: list[dict] = []
        index: dict[str, int] = {}

        def slot(o: dict) -> int:
            key = json.dumps(o, sort_keys=True)
            if key not in index:
                index[key] = len(origins)
                origins.append(o)
            return index[key]

        origin = np.empty(len(self.hashes), dtype=np.int32)
        for i, (h, own) in enumerate(zip(self.hashes, self.origin, strict=True)):
            inherited = first.get(h.tobytes())
            origin[i] = slot(parent.origins[inherited] if inherited is not None else self.origins[int(own)])
        return Provenance(self.hashes, origin, origins)

    def rows_from(self, sources: set[str]) -> np.ndarray:
        """Positions of the rows whose origin's source is in ``sources``."""
        bad = np.array([o["source"] in sources for o in self.origins], dtype=bool)
        return np.flatnonzero(bad[self.origin]) if len(self.origin) else np.array([], dtype=int)

    def take(self, keep: np.ndarray) -> Provenance:
        return Provenance(self.hashes[keep], self.origin[keep], self.origins)

    def sources(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o, n in zip(*np.unique(self.origin, return_counts=True), strict=True):
            counts[self.origins[int(o)]["source"]] = counts.get(self.origins[int(o)]["source"], 0) + int(n)
        return dict(sorted(counts.items()))


def without_rows(data: bytes, filename: str, drop: np.ndarray) -> bytes:
    """The file minus the rows at positions ``drop``, in its own format (cell text kept for CSV/TSV)."""
    fmt = file_format(filename)
    buffer = io.BytesIO()
    if fmt == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        n = len(arrays["y"])
        keep = np.setdiff1d(np.arange(n), drop)
        np.savez_compressed(buffer, **{k: (a[keep] if a.ndim >= 1 and len(a) == n else a) for k, a in arrays.items()})
        return buffer.getvalue()
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        keep = np.setdiff1d(np.arange(table.num_rows), drop)
        pq.write_table(table.take(keep), buffer)
        return buffer.getvalue()
    table = read_table(io.BytesIO(data), filename, as_text=True)
    keep = np.setdiff1d(np.arange(len(table)), drop)
    table.iloc[keep].to_csv(buffer, index=False, sep="\t" if fmt == "tsv" else ",")
    return buffer.getvalue()


# --- checks -----------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str
    flagged_rows: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


IngestCheck = Callable[[Dataset, "Dataset | None"], CheckResult]


def schema_check(dataset: Dataset, baseline: Dataset | None) -> CheckResult:
    """The upload has the baseline's kind, columns (or image shape) and no classes it never had."""
    return compare_schemas(schema_of(dataset), None if baseline is None else schema_of(baseline))


def scan_check(dataset: Dataset, baseline: Dataset | None, alpha: float = 0.01, margin: float = 0.02,
               ) -> CheckResult:
    """Scan the upload for poisoned rows (:class:`mithridate.detect.Scan`). Real data carries its own label
    noise, so no fixed share of flagged rows tells poison from a hard table; the check fails when

    - a backdoor detector finds a class poisoned (its outlying rows are shifted copies of other classes), or
    - the upload's flagged share exceeds the baseline's (the newest approved version, scanned the same way)
      by more than ``margin`` and by more than chance (one-sided two-proportion z-test at ``alpha``).

    The first version has no baseline: it passes unless a class looks backdoored, and its flagged share is
    stated for the steward who approves it."""
    from scipy import stats

    from mithridate.detect.scan import Scan

    scan = Scan(folds=3).fit(dataset)
    flagged = np.flatnonzero(scan.report_.flagged)
    share = len(flagged) / dataset.n_rows
    stated = f"{len(flagged)} of {dataset.n_rows} rows flagged ({share:.1%})"
    backdoored = sorted({str(dataset.classes[c]) for d in scan.detectors_
                         for c in getattr(d, "poisoned_classes_", [])})
    if backdoored:
        return CheckResult("scan", False, f"{stated}; classes {backdoored} look backdoored", flagged.tolist())
    if baseline is None:
        return CheckResult("scan", True, f"{stated}; first version: no baseline to compare with",
                           flagged.tolist())
    base = Scan(folds=3).fit(baseline).report_.flagged
    base_share = float(base.mean())
    pooled = (len(flagged) + base.sum()) / (dataset.n_rows + len(base))
    spread = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / dataset.n_rows + 1 / len(base)))
    p_value = float(stats.norm.sf((share - base_share) / spread))
    worse = share > base_share + margin and p_value < alpha
    return CheckResult("scan", not worse,
                       f"{stated}; the baseline {base_share:.1%} (one-sided p = {p_value:.2g}; fails above "
                       f"+{margin:.0%} at p < {alpha})", flagged.tolist())


def validate_check(dataset: Dataset, baseline: Dataset | None) -> CheckResult:
    """Gate the upload against a profile of the baseline (:mod:`mithridate.validate`); fail on ``fail``."""
    if baseline is None:
        return CheckResult("validate", True, "first version: no baseline to validate against")
    from mithridate.validate import Gate, profile

    verdict = Gate().check(profile(baseline), dataset)
    reasons = "; ".join(getattr(verdict, "reasons", []) or [])[:500]
    return CheckResult("validate", verdict.verdict != "fail", f"verdict {verdict.verdict}" +
                       (f": {reasons}" if reasons else ""))


CHECKS: dict[str, IngestCheck] = {"schema": schema_check, "scan": scan_check, "validate": validate_check}


def register_check(name: str, check: IngestCheck) -> None:
    """Make ``check`` available to vault policies under ``name``."""
    CHECKS[name] = check


def resolve_checks(policy: str) -> list[tuple[str, IngestCheck]]:
    names = [n.strip() for n in (policy or "none").split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise VaultError(f"unknown check {unknown[0]!r} (known: {', '.join(CHECKS)}, or none)")
    return [(n, CHECKS[n]) for n in names]


def compare_schemas(new: dict, old: dict | None) -> CheckResult:
    """The ``schema`` check on two schemas (:func:`schema_of`, or a large upload's, which covers every row
    while the checks see a sample)."""
    if old is None:
        return CheckResult("schema", True, "first version: nothing to compare with")
    if new["kind"] != old["kind"]:
        return CheckResult("schema", False, f"{new['kind']} data, the dataset holds {old['kind']} data")
    problems = []
    if new["kind"] == "table":
        missing = [c for c in old["columns"] if c not in new["columns"]]
        extra = [c for c in new["columns"] if c not in old["columns"]]
        if missing:
            problems.append(f"missing columns {missing}")
        if extra:
            problems.append(f"new columns {extra}")
    elif new["shape"] != old["shape"]:
        problems.append(f"image shape {tuple(new['shape'])} vs {tuple(old['shape'])}")
    new_classes = sorted(set(new["classes"]) - set(old["classes"]))
    if new_classes:
        problems.append(f"classes never seen before {new_classes}")
    return CheckResult("schema", not problems, "; ".join(problems) or "same schema as the baseline")


def run_checks(policy: str, dataset: Dataset, baseline: Dataset | None,
               schemas: tuple[dict, dict | None] | None = None) -> list[CheckResult]:
    """Every check the policy names; ``schemas`` (the upload's and the baseline's) stand in for the
    datasets' own in the ``schema`` check when those are samples."""
    results = []
    for name, check in resolve_checks(policy):
        try:
            if name == "schema" and check is schema_check and schemas is not None:
                results.append(compare_schemas(*schemas))
                continue
            results.append(check(dataset, baseline))
        except Exception as exc:  # a check that crashes fails the upload; it never lets it through
            results.append(CheckResult(name, False, f"check crashed: {type(exc).__name__}: {exc}"[:500]))
    return results
