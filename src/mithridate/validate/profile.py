"""The baseline profile: a compact, file-backed summary of verified data that new batches are tested against.

:class:`Baseline` streams through a dataset (or a CSV/Parquet file, chunk by chunk, see
:func:`profile_file`) and builds a :class:`Profile` holding, with memory that does not grow with rows:

- per numeric column: count, missing and invalid counts, mean, standard deviation, range, a quantile
  sketch (DDSketch, :mod:`mithridate.validate.sketches`) and the quantiles read from it;
- per categorical column: the frequency of each level (at most ``max_levels``; rarer levels pooled);
- the pairwise Pearson correlation of the numeric columns, class counts, per-class means, standard
  deviations, missing rates and level frequencies;
- a uniform sample of ``sample_size`` rows (bottom-k, so it is the same however the data is chunked), which
  the two-sample tests compare batches with;
- the encoding parameters (:class:`~mithridate.validate.encoding.Encoding`) and a small label model with its
  held-out agreement (:mod:`mithridate.validate.labels`);
- for images, the PCA projection the batch is read through (images are validated as a table of
  projections: the learned representation summary is the projections' sketches, moments and correlations).

A profile is saved as JSON (everything in one text file) or Parquet (the sample as the table, the rest as
JSON in the file's metadata); neither can execute code on load, unlike pickle.

>>> from mithridate.data import demo
>>> profile = Baseline(random_state=0).fit(demo("wine")).profile_
>>> profile.n_rows, len(profile.numeric)
(178, 13)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd

from mithridate.data import Dataset, atomic_path, data_format, load
from mithridate.data.dataset import check_finite
from mithridate.errors import DataError
from mithridate.represent.table import column_kinds
from mithridate.validate.encoding import (
    Encoding,
    ImageProjection,
    coerce_table,
    label_text,
    robust_scale,
    sort_classes,
)
from mithridate.validate.labels import LabelModel, fit_label_model
from mithridate.validate.sketches import BottomK, CoMoments, Moments, QuantileSketch

FORMAT, VERSION = "mithridate-baseline", 1
LABEL = "__label__"
"""Column of the stored sample holding class codes."""
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
OTHER = "__other__"


@dataclass
class Profile:
    """A baseline's summary. Build one with :class:`Baseline`; save with :meth:`save`, read with :meth:`load`.

    ``columns`` maps each feature column to its summary (a dict of plain numbers and strings); ``sample``
    holds ``sample_size`` rows of the baseline (features as read, :data:`LABEL` as class codes).
    """

    kind: str
    n_rows: int
    label_name: str | None
    classes: list[str]
    class_counts: list[int]
    numeric: list[str]
    categorical: list[str]
    columns: dict[str, dict]
    sketch: QuantileSketch
    correlation: np.ndarray
    per_class: dict[str, dict]
    encoding: Encoding
    sample: pd.DataFrame
    label_model: LabelModel | None = None
    heldout: dict | None = None
    image: ImageProjection | None = None
    meta: dict = field(default_factory=dict)
    _prepared: Prepared | None = field(default=None, init=False, repr=False, compare=False)

    # --- reading batches the way the baseline was read ---------------------------------------------
    def prepare(self, batch: Dataset | pd.DataFrame, labels=None) -> Prepared:
        """Align a batch with the baseline: its columns coerced to the baseline's kinds, its labels mapped to
        the baseline's classes (``-1`` for a label the baseline never had), images projected."""
        if isinstance(batch, Dataset):
            labels = batch.labels if labels is None else labels
            row_id, features = np.asarray(batch.row_id), batch.features
        else:
            row_id, features = np.arange(len(batch)), batch
        if self.kind == "image":
            if isinstance(features, pd.DataFrame):
                raise DataError("the baseline is of images; the batch is a table")
            shape = list(np.shape(features)[1:])
            if shape != self.image.shape:
                raise DataError(f"batch images are {shape}, baseline images {self.image.shape}")
            features = self.image.transform(features)
        elif not isinstance(features, pd.DataFrame):
            raise DataError("the baseline is a table; the batch is images")
        features = features.set_axis([str(c) for c in features.columns], axis=1)
        present = set(features.columns)
        wanted = self.numeric + self.categorical
        missing = [c for c in wanted if c not in present]
        if len(missing) == len(wanted):
            raise DataError(f"the batch has none of the baseline's columns ({', '.join(wanted[:8])}, ...)")
        extra = [c for c in features.columns if c not in set(wanted) and c != self.label_name]
        full = features.reindex(columns=wanted)
        num, cat, invalid = coerce_table(full, self.numeric, self.categorical)
        y, unknown = None, {}
        if labels is not None:
            text = label_text(labels)
            codes = {c: i for i, c in enumerate(self.classes)}
            y = np.array([codes.get(t, -1) for t in text], dtype=np.int64)
            unknown = dict(Counter(t for t, code in zip(text, y, strict=True) if code < 0))
        return Prepared(num, cat, y, row_id, invalid, missing, extra, unknown)

    def prepared_sample(self) -> Prepared:
        """The baseline sample, read once and kept (do not modify the profile's sample afterwards)."""
        if self._prepared is None:
            num, cat, invalid = coerce_table(self.sample, self.numeric, self.categorical)
            y = self.sample[LABEL].to_numpy(dtype=np.int64) if LABEL in self.sample else None
            self._prepared = Prepared(num, cat, y, np.arange(len(self.sample)), invalid, [], [], {})
        return self._prepared

    def quantiles(self, column: str) -> dict[float, float]:
        return {float(q): v for q, v in self.columns[column]["quantiles"].items()}

    # --- files ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Everything but the sample, as plain JSON-able values."""
        return {
            "format": FORMAT, "version": VERSION, "kind": self.kind, "n_rows": self.n_rows,
            "label_name": self.label_name, "classes": self.classes, "class_counts": self.class_counts,
            "numeric": self.numeric, "categorical": self.categorical, "columns": self.columns,
            "sketch": self.sketch.to_dict(), "correlation": np.round(self.correlation, 6).tolist(),
            "per_class": self.per_class, "encoding": self.encoding.to_dict(),
            "label_model": None if self.label_model is None else self.label_model.to_dict(),
            "heldout": self.heldout, "image": None if self.image is None else self.image.to_dict(),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write to ``.json`` or ``.parquet`` (atomically)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".parquet", ".pq"):
            raise DataError(f"{path}: save a baseline as .json or .parquet")
        with atomic_path(path) as tmp:
            if suffix == ".json":
                doc = self.to_dict()
                doc["sample"] = {c: _plain_column(self.sample[c]) for c in self.sample.columns}
                tmp.write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                table = pa.Table.from_pandas(self.sample, preserve_index=False)
                meta = dict(table.schema.metadata or {})
                meta[b"mithridate.profile"] = json.dumps(_json_safe(self.to_dict()), allow_nan=False).encode()
                pq.write_table(table.replace_schema_metadata(meta), tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such baseline file")
        try:
            if path.suffix.lower() == ".json":
                doc = json.loads(path.read_text())
                sample = pd.DataFrame(doc.pop("sample"))
            else:
                import pyarrow.parquet as pq

                table = pq.read_table(path)
                raw = (table.schema.metadata or {}).get(b"mithridate.profile")
                if raw is None:
                    raise DataError(f"{path}: a Parquet file, but not a mithridate baseline")
                doc, sample = json.loads(raw), table.to_pandas()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: cannot read as a baseline: {str(exc).splitlines()[0]}") from exc
        if doc.get("format") != FORMAT:
            raise DataError(f"{path}: not a mithridate baseline")
        return cls.from_dict(doc, sample)

    @classmethod
    def from_dict(cls, d: dict, sample: pd.DataFrame) -> Profile:
        d = _json_restore(d)
        for c in d["numeric"]:
            sample[c] = pd.to_numeric(sample[c]).astype(np.float64)
        for c in d["categorical"]:
            sample[c] = sample[c].astype(object).where(sample[c].notna(), None)
        return cls(
            kind=d["kind"], n_rows=int(d["n_rows"]), label_name=d["label_name"], classes=list(d["classes"]),
            class_counts=[int(v) for v in d["class_counts"]], numeric=list(d["numeric"]),
            categorical=list(d["categorical"]), columns=d["columns"], sketch=QuantileSketch.from_dict(d["sketch"]),
            correlation=np.asarray(d["correlation"], dtype=np.float64).reshape(len(d["numeric"]), -1),
            per_class=d["per_class"], encoding=Encoding.from_dict(d["encoding"]), sample=sample,
            label_model=None if d["label_model"] is None else LabelModel.from_dict(d["label_model"]),
            heldout=d["heldout"], image=None if d["image"] is None else ImageProjection.from_dict(d["image"]),
            meta=d.get("meta", {}),
        )


@dataclass
class Prepared:
    """A batch read the baseline's way: ``num`` (n, numeric) float with NaN, ``cat`` (n, categorical) text or
    None, ``y`` class codes (-1: a label the baseline never had; ``None``: no labels), the batch's row ids,
    per numeric column the count of values that did not parse as numbers, and schema differences."""

    num: np.ndarray
    cat: np.ndarray
    y: np.ndarray | None
    row_id: np.ndarray
    invalid: np.ndarray
    missing_columns: list[str]
    extra_columns: list[str]
    unknown_labels: dict[str, int]

    def __len__(self) -> int:
        return len(self.num)

    def take(self, rows: np.ndarray) -> Prepared:
        return Prepared(self.num[rows], self.cat[rows], None if self.y is None else self.y[rows],
                        self.row_id[rows], self.invalid, self.missing_columns, self.extra_columns,
                        self.unknown_labels)


def _plain_column(s: pd.Series) -> list:
    if pd.api.types.is_numeric_dtype(s):
        values = s.to_numpy(dtype=np.float64)
        return [None if np.isnan(v) else float(f"{v:.9g}") for v in values]
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in s.tolist()]


def _json_safe(value):
    """Replace non-finite floats (JSON has none) by tagged strings; :func:`_json_restore` undoes it."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return "nan" if np.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _json_restore(value):
    if isinstance(value, dict):
        return {k: _json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_restore(v) for v in value]
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return value


# --- building -------------------------------------------------------------------------------------------
class _Builder:
    """Accumulates one pass over table chunks (features and label text)."""

    def __init__(self, numeric: list[str], categorical: list[str], sample_size: int, max_levels: int,
                 seed: int):
        self.numeric, self.categorical, self.max_levels = numeric, categorical, max_levels
        p = len(numeric)
        self.moments, self.sketch, self.comoments = Moments(p), QuantileSketch(p), CoMoments(p)
        self.invalid = np.zeros(p, dtype=np.int64)
        self.levels = [Counter() for _ in categorical]
        self.other = np.zeros(len(categorical), dtype=np.int64)
        self.cat_missing = np.zeros(len(categorical), dtype=np.int64)
        self.labels: Counter = Counter()
        self.class_moments: dict[str, Moments] = {}
        self.class_levels: dict[str, list[Counter]] = {}
        self.sample = BottomK(sample_size, seed)
        self.n = 0

    def add(self, features: pd.DataFrame, labels: np.ndarray) -> None:
        num, cat, invalid = coerce_table(features, self.numeric, self.categorical)
        self.n += len(num)
        self.invalid += invalid
        self.moments.add(num)
        self.sketch.add(num)
        self.comoments.add(num)
        for j in range(len(self.categorical)):
            present = cat[:, j] != None  # noqa: E711  (elementwise on an object array)
            self.cat_missing[j] += int((~present).sum())
            self._count_levels(self.levels[j], cat[present, j], j)
        self.labels.update(labels.tolist())
        for name in np.unique(labels):
            rows = labels == name
            self.class_moments.setdefault(name, Moments(len(self.numeric))).add(num[rows])
            counters = self.class_levels.setdefault(name, [Counter() for _ in self.categorical])
            for j, counter in enumerate(counters):
                values = cat[rows, j]
                counter.update(values[values != None].tolist())  # noqa: E711
        frame = pd.DataFrame(num, columns=self.numeric)
        for j, c in enumerate(self.categorical):
            frame[c] = cat[:, j]
        frame[LABEL] = labels
        self.sample.add(frame)

    def _count_levels(self, counter: Counter, values: np.ndarray, j: int) -> None:
        counts = Counter(values.tolist())
        if len(counter) + len(counts) <= self.max_levels:
            counter.update(counts)
            return
        for level, k in counts.items():  # past the cap only levels already seen keep their own count
            if level in counter or len(counter) < self.max_levels:
                counter[level] += k
            else:
                self.other[j] += k


class Baseline:
    """Profile a verified dataset (scikit-learn style: configure, :meth:`fit`, read ``profile_``).

    ``sample_size``: rows kept for the two-sample tests. ``chunk_rows``: rows per chunk when streaming.
    ``max_levels``: levels counted per categorical column. ``top_levels``: levels one-hot encoded for the
    multivariate tests and the label model. ``n_components``: principal axes kept for images.
    ``label_model``: train the model of the label-conditional test.
    """

    def __init__(self, sample_size: int = 10_000, chunk_rows: int = 100_000, max_levels: int = 1000,
                 top_levels: int = 20, n_components: int = 32, label_model: bool = True, random_state: int = 0):
        self.sample_size = sample_size
        self.chunk_rows = chunk_rows
        self.max_levels = max_levels
        self.top_levels = top_levels
        self.n_components = n_components
        self.label_model = label_model
        self.random_state = random_state

    def fit(self, dataset: Dataset) -> Self:
        """Profile an in-memory dataset (it is still read in chunks of ``chunk_rows``)."""
        labels = np.asarray(dataset.classes, dtype=object)
        image = None
        if dataset.kind == "image":
            lo, hi = dataset.image_range()
            image = ImageProjection.fit(dataset.features, lo, hi, self.n_components,
                                        random_state=self.random_state)

        def chunks() -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
            for start in range(0, dataset.n_rows, self.chunk_rows):
                stop = min(start + self.chunk_rows, dataset.n_rows)
                features = (dataset.features.iloc[start:stop] if image is None
                            else image.transform(dataset.features[start:stop]))
                yield features, labels[dataset.y[start:stop]]

        self.profile_ = self.fit_chunks(chunks(), label_name=dataset.label_name, image=image,
                                        name=dataset.name, classes=[str(c) for c in dataset.classes])
        return self

    def fit_chunks(self, chunks: Iterable[tuple[pd.DataFrame, np.ndarray]], label_name: str | None = None,
                   image: ImageProjection | None = None, name: str = "data",
                   classes: list[str] | None = None) -> Profile:
        """Profile a stream of ``(features, labels)`` chunks; memory is bounded by the chunk size."""
        from threadpoolctl import threadpool_limits

        # Thin products over chunks and small networks: BLAS threads gain little here and, on a busy
        # machine, spin against other processes and cost many times the work.
        with threadpool_limits(1, user_api="blas"):
            return self._fit_chunks(chunks, label_name, image, name, classes)

    def _fit_chunks(self, chunks, label_name, image, name, classes) -> Profile:
        builder: _Builder | None = None
        seen = 0
        for features, labels in chunks:
            if len(features) == 0:
                continue
            check_finite(features, name, seen)
            seen += len(features)
            if builder is None:
                numeric, categorical = column_kinds(features)
                builder = _Builder([str(c) for c in numeric], [str(c) for c in categorical], self.sample_size,
                                   self.max_levels, self.random_state)
                columns = list(features.columns)
            elif list(features.columns) != columns:
                raise DataError(f"{name}: the columns changed between chunks")
            features = features.set_axis([str(c) for c in features.columns], axis=1)
            text = label_text(labels)
            if pd.isna(pd.Series(labels)).any():
                raise DataError(f"{name}: {int(pd.isna(pd.Series(labels)).sum())} rows have no label")
            builder.add(features, text)
        if builder is None:
            raise DataError(f"{name}: no rows to profile")
        return self._finish(builder, label_name, image, name, classes)

    def _finish(self, b: _Builder, label_name: str | None, image: ImageProjection | None, name: str,
                classes: list[str] | None) -> Profile:
        classes = list(classes) if classes is not None else []
        classes += [c for c in sort_classes(b.labels) if c not in classes]
        code = {c: i for i, c in enumerate(classes)}
        m = b.moments
        columns: dict[str, dict] = {}
        empty = [c for j, c in enumerate(b.numeric) if not m.n[j]]
        if empty:
            raise DataError(f"{name}: column {empty[0]!r} has no value in any row (all missing): drop it, or "
                            "fill it, before profiling")
        for j, c in enumerate(b.numeric):
            lo, hi = (float(m.min[j]), float(m.max[j])) if m.n[j] else (np.nan, np.nan)
            qs = b.sketch.quantile(j, QUANTILES, lo, hi)
            columns[c] = {"kind": "numeric", "count": int(m.n[j]), "missing": int(m.missing[j]),
                          "invalid": int(b.invalid[j]), "mean": float(m.mean[j]), "std": float(m.std[j]),
                          "min": lo, "max": hi, "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, qs,
                                                                                              strict=True)}}
        for j, c in enumerate(b.categorical):
            counter = b.levels[j]
            columns[c] = {"kind": "categorical", "count": int(sum(counter.values()) + b.other[j]),
                          "missing": int(b.cat_missing[j]), "levels": dict(counter.most_common()),
                          "other": int(b.other[j]), "n_levels": len(counter)}
        per_class = {}
        for cls in (c for c in classes if b.labels[c]):
            cm = b.class_moments[cls]
            per_class[cls] = {
                "count": int(b.labels[cls]),
                "numeric": {c: {"mean": float(cm.mean[j]), "std": float(cm.std[j]),
                                "missing": int(cm.missing[j])} for j, c in enumerate(b.numeric)},
                "categorical": {c: dict(b.class_levels[cls][j].most_common(self.top_levels))
                                for j, c in enumerate(b.categorical)},
            }
        q25 = np.array([columns[c]["quantiles"]["0.25"] for c in b.numeric])
        q50 = np.array([columns[c]["quantiles"]["0.5"] for c in b.numeric])
        q75 = np.array([columns[c]["quantiles"]["0.75"] for c in b.numeric])
        encoding = Encoding(
            b.numeric, np.nan_to_num(q50), robust_scale(q25, q75, m.std), [bool(k > 0) for k in m.missing],
            b.categorical, [[lvl for lvl, _ in b.levels[j].most_common(self.top_levels)]
                            for j in range(len(b.categorical))])
        sample = b.sample.rows.copy()
        sample[LABEL] = sample[LABEL].map(code).astype(np.int64)
        profile = Profile(
            kind="table" if image is None else "image", n_rows=b.n, label_name=label_name, classes=classes,
            class_counts=[int(b.labels[c]) for c in classes], numeric=b.numeric, categorical=b.categorical,
            columns=columns, sketch=b.sketch, correlation=b.comoments.correlation(), per_class=per_class,
            encoding=encoding, sample=sample, image=image,
            meta={"name": name, "sample_size": self.sample_size, "random_state": self.random_state,
                  "chunk_rows": self.chunk_rows},
        )
        if self.label_model and len(classes) >= 2:
            s = profile.prepared_sample()
            z = encoding.transform(s.num, s.cat)
            profile.label_model, profile.heldout = fit_label_model(z, s.y, len(classes),
                                                                   random_state=self.random_state)
        return profile


def profile(dataset: Dataset, **options) -> Profile:
    """The baseline profile of an in-memory dataset (``options`` as for :class:`Baseline`)."""
    return Baseline(**options).fit(dataset).profile_


def resolve_label(path: str | Path, label: str | None) -> str:
    """The label column of a CSV/TSV or Parquet file: ``label`` if it exists, else a conventional name."""
    from mithridate.data.io import DEFAULT_LABEL_COLUMNS

    path = Path(path)
    try:
        if data_format(path) == "parquet":
            import pyarrow.parquet as pq

            columns = [str(c) for c in pq.read_schema(path).names]
        else:
            columns = [str(c) for c in pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",",
                                                   nrows=0).columns]
    except Exception as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from exc
    if label is None:
        label = next((c for c in DEFAULT_LABEL_COLUMNS if c in columns), None)
        if label is None:
            raise DataError(f"{path.name}: name the label column with --label (columns: {', '.join(columns)})")
    if label not in columns:
        raise DataError(f"{path.name}: unknown label column {label!r} (columns: {', '.join(columns)})")
    return label


def read_chunks(path: str | Path, label: str, chunk_rows: int = 100_000
                ) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """``(features, labels)`` chunks of a CSV/TSV or Parquet file, never the whole table in memory."""
    path = Path(path)
    fmt = data_format(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows)
            frames: Iterable[pd.DataFrame] = (b.to_pandas() for b in batches)
        else:
            frames = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", chunksize=chunk_rows)
        for frame in frames:
            frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
            yield frame.drop(columns=[label]), frame[label].to_numpy()
    except DataError:
        raise
    except Exception as exc:  # parsers raise many types; the user needs the reason
        raise DataError(f"{path}: cannot read as {fmt}: {str(exc).splitlines()[0]}") from exc


def profile_file(path: str | Path, label: str | None = None, **options) -> Profile:
    """Profile a file. CSV/TSV and Parquet stream in chunks; other formats (``.npz``, image folders,
    ``demo:NAME``) are loaded whole with :func:`mithridate.data.load`."""
    text = str(path)
    if text.startswith("demo:") or not Path(path).exists() or data_format(path) not in ("csv", "parquet"):
        return Baseline(**options).fit(load(path, label)).profile_
    label = resolve_label(path, label)
    baseline = Baseline(**options)
    return baseline.fit_chunks(read_chunks(path, label, baseline.chunk_rows), label_name=label,
                               name=Path(path).name)
