"""Mergeable summaries that stream through a table in chunks with memory that does not grow with rows.

- :class:`QuantileSketch`: DDSketch (Masson, Rim & Lee 2019, "DDSketch: a fast and fully-mergeable quantile
  sketch with relative-error guarantees", VLDB): logarithmic buckets, so every quantile is within 1% of a
  true value, and two sketches merge by adding counts (the result does not depend on how rows were chunked).
- :class:`Moments`: count, mean and variance per column (Welford 1962; Chan, Golub & LeVeque 1979 for the
  merge), with minimum, maximum and missing counts.
- :class:`CoMoments`: pairwise sums for Pearson correlations over pairwise-complete rows.
- :class:`BottomK`: a uniform sample of ``k`` rows without replacement: every row gets a hash of its global
  position as key and the ``k`` smallest keys are kept (bottom-k sampling, Cohen & Kaplan 2007), so the
  sample is the same however the stream is chunked.

>>> s = QuantileSketch(1)
>>> s.add(np.arange(1, 10001, dtype=float)[:, None])
>>> bool(abs(s.quantile(0, 0.5) - 5000) < 50)
True
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = float(np.log(GAMMA))
MIN_MAGNITUDE, MAX_MAGNITUDE = 1e-9, 1e15
"""Magnitudes below ``MIN_MAGNITUDE`` share the zero bucket; above ``MAX_MAGNITUDE``, the last bucket."""
_K_LO = int(np.floor(np.log(MIN_MAGNITUDE) / _LOG_GAMMA))
_K_HI = int(np.ceil(np.log(MAX_MAGNITUDE) / _LOG_GAMMA))
_K = _K_HI - _K_LO + 1
N_BUCKETS = 2 * _K + 1
"""Buckets per column, ordered by value: negative buckets, the zero bucket, positive buckets."""


def bucket_index(values: np.ndarray) -> np.ndarray:
    """The bucket of each value (same shape), ordered by value; ``-1`` for NaN."""
    x = np.asarray(values, dtype=np.float64)
    a = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.ceil(np.log(np.where(a >= MIN_MAGNITUDE, a, 1.0)) / _LOG_GAMMA)
    pos = np.clip(np.nan_to_num(k, nan=0.0), _K_LO, _K_HI).astype(np.int64) - _K_LO
    idx = np.where(x > 0, _K + 1 + pos, _K - 1 - pos)
    idx = np.where(a < MIN_MAGNITUDE, _K, idx)
    return np.where(np.isnan(x), -1, idx)


def bucket_value(index: np.ndarray | int) -> np.ndarray:
    """A value representing each bucket (within ``RELATIVE_ACCURACY`` of every value in it)."""
    i = np.asarray(index, dtype=np.int64)
    pos = np.where(i > _K, i - _K - 1, _K - 1 - i)
    magnitude = 2 * GAMMA ** (pos + _K_LO).astype(np.float64) / (GAMMA + 1)
    return np.where(i == _K, 0.0, np.where(i > _K, magnitude, -magnitude))


class QuantileSketch:
    """A DDSketch per column: ``counts`` is (columns, :data:`N_BUCKETS`).

    Values are sketched relative to ``center`` (the first chunk's median of each column): the accuracy is
    relative to the distance from it, so a column living far from zero (years, prices) keeps its resolution.
    """

    def __init__(self, n_columns: int):
        self.counts = np.zeros((n_columns, N_BUCKETS), dtype=np.int64)
        self.center: np.ndarray | None = None

    def index(self, values: np.ndarray) -> np.ndarray:
        """The bucket of each value of an (n, columns) block (``-1`` for NaN)."""
        return bucket_index(np.asarray(values, dtype=np.float64) - self.center)

    def index_column(self, column: int, values: np.ndarray) -> np.ndarray:
        """The buckets of 1-d ``values`` of one column."""
        return bucket_index(np.asarray(values, dtype=np.float64) - self.center[column])

    def add(self, values: np.ndarray) -> None:
        """Add an (n, columns) block of values (NaN ignored)."""
        values = np.asarray(values, dtype=np.float64)
        if self.center is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
                self.center = np.nan_to_num(np.nanmedian(values, axis=0)) if len(values) else np.zeros(
                    values.shape[1])
        idx = self.index(values)
        p = self.counts.shape[0]
        flat = (idx + np.arange(p) * N_BUCKETS)[idx >= 0]
        self.counts += np.bincount(flat, minlength=p * N_BUCKETS).reshape(p, N_BUCKETS)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        self.counts += other.counts
        return self

    def quantile(self, column: int, q, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
        """Quantile(s) ``q`` of a column, clamped to ``[lo, hi]`` (pass the exact min and max)."""
        counts = self.counts[column]
        n = counts.sum()
        if n == 0:
            return np.full(np.shape(q), np.nan)
        cum = np.cumsum(counts)
        rank = np.asarray(q, dtype=np.float64) * (n - 1)
        return np.clip(bucket_value(np.searchsorted(cum, rank, side="right")) + self.center[column], lo, hi)

    def to_dict(self) -> list[dict]:
        """Sparse form for files: each column's center, its non-empty buckets and their counts."""
        center = np.zeros(len(self.counts)) if self.center is None else self.center
        out = []
        for row, c in zip(self.counts, center, strict=True):
            nz = np.flatnonzero(row)
            out.append({"center": float(c), "bucket": nz.tolist(), "count": row[nz].tolist()})
        return out

    @classmethod
    def from_dict(cls, data: list[dict]) -> QuantileSketch:
        sketch = cls(len(data))
        sketch.center = np.array([float(col["center"]) for col in data])
        for j, col in enumerate(data):
            sketch.counts[j, np.asarray(col["bucket"], dtype=np.int64)] = np.asarray(col["count"], dtype=np.int64)
        return sketch


TAIL_FRACTIONS = (0.01, *np.round(np.arange(0.05, 0.951, 0.05), 2).tolist(), 0.99)
"""Default cut points: twenty equal-mass groups, with the outer 1% split off each tail (where a rare value
written into many rows, the signature of a tabular trigger, stands out)."""


def mass_cuts(counts: np.ndarray, fractions=TAIL_FRACTIONS) -> np.ndarray:
    """Bucket indices splitting one column's sketch at the cumulative ``fractions`` of its mass.

    Group ``g`` holds buckets ``cuts[g-1] <= i < cuts[g]``; a bucket is never split, so columns with few
    distinct values get fewer groups. Map values with ``np.searchsorted(cuts, sketch.index_column(j, v), "right")``.
    """
    cum = np.cumsum(counts)
    total = cum[-1] if len(cum) else 0
    if total == 0:
        return np.array([], dtype=np.int64)
    cuts = np.unique(np.searchsorted(cum, total * np.asarray(fractions), side="left") + 1)
    return cuts[(cuts > 0) & (cuts < len(counts)) & (cum[np.minimum(cuts, len(cum)) - 1] < total)]


class Moments:
    """Per-column count, mean, sum of squared deviations, min, max and missing count, mergeable."""

    def __init__(self, n_columns: int):
        self.n = np.zeros(n_columns)
        self.mean = np.zeros(n_columns)
        self.m2 = np.zeros(n_columns)
        self.min = np.full(n_columns, np.inf)
        self.max = np.full(n_columns, -np.inf)
        self.missing = np.zeros(n_columns, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64)
        present = ~np.isnan(x)
        n = present.sum(axis=0).astype(np.float64)
        self.missing += (~present).sum(axis=0)
        if not n.any():
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(x, axis=0) / np.maximum(n, 1), 0.0)
            m2 = np.nansum((x - mean) ** 2, axis=0)
            self.min = np.fmin(self.min, np.nanmin(np.where(present, x, np.inf), axis=0))
            self.max = np.fmax(self.max, np.nanmax(np.where(present, x, -np.inf), axis=0))
        self._merge(n, mean, m2)

    def _merge(self, n: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        total = self.n + n
        delta = mean - self.mean
        safe = np.maximum(total, 1)
        self.mean = self.mean + delta * n / safe
        self.m2 = self.m2 + m2 + delta**2 * self.n * n / safe
        self.n = total

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.maximum(self.n - 1, 1))


class CoMoments:
    """Pairwise-complete sums for the Pearson correlation of every pair of columns.

    Values are shifted by the first chunk's column means before summing, so the sums do not lose precision
    on columns far from zero; the correlation does not depend on the shift.
    """

    def __init__(self, n_columns: int):
        p = n_columns
        self.shift: np.ndarray | None = None
        self.n, self.sx, self.sxx, self.sxy = (np.zeros((p, p)) for _ in range(4))

    def add(self, values: np.ndarray) -> None:
        x = np.asarray(values, dtype=np.float64)
        if self.shift is None:
            with warnings.catch_warnings():  # an all-missing column: its mean is nan, made 0 below
                warnings.simplefilter("ignore", RuntimeWarning)
                self.shift = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(x.shape[1])
        m = (~np.isnan(x)).astype(np.float64)
        x0 = np.nan_to_num(x - self.shift)
        self.n += m.T @ m
        self.sx += x0.T @ m  # sx[i, j]: sum of column i over rows where j is present too
        self.sxx += (x0**2).T @ m
        self.sxy += x0.T @ x0

    def correlation(self) -> np.ndarray:
        n = np.maximum(self.n, 1)
        cov = self.sxy - self.sx * self.sx.T / n
        var_i = self.sxx - self.sx**2 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(var_i * var_i.T)
        r = np.where(np.isfinite(r), np.clip(r, -1, 1), 0.0)
        np.fill_diagonal(r, 1.0)
        return r


def row_keys(start: int, n: int, seed: int) -> np.ndarray:
    """A pseudo-random 64-bit key per global row position ``start .. start + n - 1`` (splitmix64)."""
    with np.errstate(over="ignore"):
        z = (np.arange(start, start + n, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(0x632BE59BD9B4E019))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class BottomK:
    """A uniform sample of ``k`` rows of a stream of DataFrame chunks (the rows with the smallest keys)."""

    def __init__(self, k: int, seed: int = 0):
        self.k, self.seed = k, seed
        self.keys = np.array([], dtype=np.uint64)
        self.rows: pd.DataFrame | None = None
        self.seen = 0

    def add(self, chunk: pd.DataFrame) -> None:
        keys = row_keys(self.seen, len(chunk), self.seed)
        self.seen += len(chunk)
        if len(self.keys) >= self.k:
            keep = np.flatnonzero(keys < self.keys.max())
        elif len(keys) > self.k:
            keep = np.argpartition(keys, self.k - 1)[: self.k]
        else:
            keep = np.arange(len(keys))
        if not len(keep):
            return
        part = chunk.iloc[keep].reset_index(drop=True)
        keys = np.concatenate([self.keys, keys[keep]])
        rows = part if self.rows is None else pd.concat([self.rows, part], ignore_index=True)
        order = np.argsort(keys, kind="stable")[: self.k]
        self.keys, self.rows = keys[order], rows.iloc[order].reset_index(drop=True)
