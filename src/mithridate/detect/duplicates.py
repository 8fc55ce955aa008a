"""Duplicates and conflicts: exact and near copies of a row, and copies that disagree on the label.

Copies are a cheap poisoning lever: duplicating a row multiplies its weight in training, and a copy with
another label is a label flip that the original cannot outvote. Two notions:

- **exact**: identical raw inputs (the table row's values, the image's bytes), found by hashing each row;
- **near**: rows closer in the (standardised) representation than the data's own nearest-neighbour
  distances allow: far out on the low side of the distribution of each row's distance to its nearest other
  row (Tukey's lower fence, three interquartile ranges below the first quartile, on a log scale: near
  copies are typically orders of magnitude closer than natural neighbours). Near pairs are looked for among
  each row's :data:`NEAR_NEIGHBOURS` nearest neighbours (the scan's shared neighbour search); a bigger
  cluster of near copies is still found whole, as a chain.

Rows linked by either relation form a group (connected components). Repeats are only suspicious when they
are unusual for the data: a table of a few discrete columns repeats rows naturally (three columns of
two, three and ten values make at most 60 distinct rows), an image set almost never does. A group is
**unusual** when it has a near copy, when the data are images, or when the rows share a value that no other
row has in a column of many values (at least :data:`MANY_VALUES` distinct ones, at least half of them
seen once): agreement there is what copying leaves. Then:

- copies that agree on their label are a data-quality note (no action): one copy is kept by ``drop``;
- copies with conflicting labels and a strict majority: the minority rows are label issues (``poison``)
  with the majority label suggested (in tables, for exact copies only: a near copy of a table row may be
  another real row); an evenly split group is ambiguity (a note: nothing says which copy is right; the
  label-issue detector, which also sees these rows, may).

Repeats that are natural for the data say nothing by themselves (the label-issue detector judges their
labels with the rest of the data) and are not reported.

>>> import pandas as pd
>>> from mithridate.data import Dataset
>>> from mithridate.represent import Representation, TableEncoder
>>> rng = np.random.default_rng(0)
>>> table = pd.DataFrame({"a": rng.normal(size=30), "b": rng.normal(size=30)})
>>> table = pd.concat([table, table.iloc[[0, 0]]], ignore_index=True)   # two copies of row 0
>>> ds = Dataset.from_labels(table, ["x"] * 15 + ["y"] * 15 + ["x", "y"])
>>> rep = Representation(TableEncoder().fit_transform(table), np.full((32, 2), 0.5), "table")
>>> det = Duplicates().fit(ds, rep)
>>> det.severity_[[0, 30, 31]].tolist(), int(det.suggested_label_[31]), int(det.found_.sum())
(['', '', 'poison'], 0, 1)
"""

from __future__ import annotations

import hashlib
from typing import Self

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import FAR_OUT, tukey_lower_fence
from mithridate.represent import Representation

NEAR_NEIGHBOURS = 10
"""How many nearest neighbours of each row are checked for near copies."""

MANY_VALUES = 10
"""A column with at least this many distinct values, at least half of them seen once, has values that
rows share only by copying."""


def row_hashes(features: pd.DataFrame | np.ndarray) -> np.ndarray:
    """One hash per row of the raw inputs: equal rows, equal hashes."""
    if isinstance(features, pd.DataFrame):
        return pd.util.hash_pandas_object(features, index=False).to_numpy()
    flat = np.ascontiguousarray(features).reshape(len(features), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in flat])


def near_threshold(nn_distance: np.ndarray, k: float = FAR_OUT) -> tuple[float, float]:
    """``(threshold, typical)``: the low far-out fence of the positive nearest-neighbour distances (log
    scale) and their median. ``threshold`` is 0 (exact copies only) when too few distances are positive."""
    positive = nn_distance[nn_distance > 0]
    if len(positive) < 4:
        return 0.0, float(np.median(positive)) if len(positive) else 0.0
    return float(np.exp(tukey_lower_fence(np.log(positive), k))), float(np.median(positive))


def duplicate_groups(hashes: np.ndarray, distances: np.ndarray, neighbours: np.ndarray, k: float = FAR_OUT,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """``(group, exact, nn_distance, threshold, typical)`` from row ``hashes`` and each row's nearest other
    rows (``distances`` and positions ``neighbours``, (n, m), nearest first): a group id per row (rows in no
    group get a group of their own), whether the row has an exact copy, its distance to the nearest other
    row, the near-duplicate distance threshold and the median nearest-neighbour distance."""
    n = len(hashes)
    _, key, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    key = key.reshape(-1)
    exact = counts[key] > 1
    nn_distance = distances[:, 0] if distances.shape[1] else np.zeros(n)
    threshold, typical = near_threshold(nn_distance, k)
    near = distances <= threshold if threshold > 0 else np.zeros(distances.shape, dtype=bool)
    rows = np.r_[np.arange(n), np.nonzero(near)[0]]  # link each row to a node for its hash, and near pairs
    cols = np.r_[key + n, neighbours[near]]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n + key.max() + 1,) * 2)
    _, component = connected_components(graph, directed=False)
    return component[:n], exact, nn_distance, threshold, typical


def copy_columns(table: pd.DataFrame, many: int = MANY_VALUES) -> list[str]:
    """Columns whose values rows share only by copying: at least ``many`` distinct values, at least half
    of them seen once."""
    out = []
    for column in table.columns:
        counts = table[column].value_counts(dropna=True)
        if len(counts) >= many and (counts == 1).sum() >= len(counts) / 2:
            out.append(column)
    return out


def unusual_groups(features: pd.DataFrame | np.ndarray, group: np.ndarray, exact: np.ndarray,
                   near: np.ndarray) -> np.ndarray:
    """Per row: whether its group is unusual for the data (see the module docstring). ``group``: group id
    per row; ``exact``/``near``: whether the row has an exact / a near copy."""
    n = len(group)
    sizes = np.bincount(group)
    in_group = sizes[group] > 1
    if not isinstance(features, pd.DataFrame):
        return in_group
    unusual = np.zeros(n, dtype=bool)
    has_near = np.bincount(group, weights=near.astype(float)) > 0
    unusual |= in_group & has_near[group]
    for column in copy_columns(features):
        codes = pd.factorize(features[column], use_na_sentinel=True)[0]
        count = np.bincount(codes[codes >= 0], minlength=1)[np.maximum(codes, 0)]
        # exact copies holding every row with this value (a near link already makes the group unusual)
        unusual |= in_group & exact & (codes >= 0) & (count == sizes[group])
    return unusual


class Duplicates(Detector):
    """Exact (hash of raw inputs) and near (representation) copies: notes where unusual for the data,
    label issues where copies conflict with a clear majority.

    ``groups_``: a group id per row (-1 for rows with no copy); ``unusual_``: the row's group is unusual
    for the data; ``threshold_``: the near-duplicate distance; ``typical_``: the median distance from a
    row to its nearest neighbour.
    """

    name = "duplicates"
    finds = "note"

    def __init__(self, far_out: float = FAR_OUT, max_listed: int = 5):
        self.far_out = far_out
        self.max_listed = max_listed

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        y = dataset.y
        n = dataset.n_rows
        distances, neighbours = representation.neighbours(NEAR_NEIGHBOURS)
        group, exact, nn_distance, self.threshold_, self.typical_ = duplicate_groups(
            row_hashes(dataset.features), distances, neighbours, self.far_out)
        sizes = np.bincount(group)
        in_group = sizes[group] > 1
        near = in_group & ~exact
        self.groups_ = np.where(in_group, np.unique(group, return_inverse=True)[1].reshape(-1), -1)
        self.unusual_ = unusual_groups(dataset.features, group, exact, near)
        closeness = np.where(exact, 1.0, 1 - np.minimum(nn_distance / max(self.typical_, 1e-12), 1))
        scores = closeness.copy()
        severity = np.full(n, "", dtype=object)
        suggested = np.full(n, -1, dtype=np.int64)
        evidence = np.full(n, "", dtype=object)
        classes = np.asarray(dataset.classes, dtype=object)
        for g in np.unique(group[self.unusual_]):
            members = np.flatnonzero(group == g)
            labels, counts = np.unique(y[members], return_counts=True)
            top = int(labels[np.argmax(counts)])
            majority = counts.max() > len(members) / 2
            conflict = len(labels) > 1
            if conflict:
                scores[members] += 1
            for i in members:
                others = members[members != i]
                listed = ", ".join(str(r) for r in dataset.row_id[others[: self.max_listed]])
                listed += f" and {len(others) - self.max_listed} more" if len(others) > self.max_listed else ""
                how = ("exact copy" if exact[i] else
                       f"near copy (distance {nn_distance[i]:.3g}; a typical nearest neighbour is at "
                       f"{self.typical_:.3g}, the threshold {self.threshold_:.3g})")
                if not conflict:
                    if i != members[0]:
                        severity[i] = "note"
                        evidence[i] = (f"{how} of row(s) {listed}, same label {classes[y[i]]!r}, unusual for "
                                       f"this data; one copy is kept")
                elif majority and y[i] != top and (exact[i] or dataset.kind == "image"):
                    severity[i], suggested[i] = "poison", top
                    evidence[i] = (f"{how} of row(s) {listed}: {counts.max()} of the {len(members)} copies "
                                   f"say {classes[top]!r}, this one {classes[y[i]]!r}")
                elif not majority:
                    severity[i] = "note"
                    names = ", ".join(repr(c) for c in classes[labels])
                    evidence[i] = f"{how} of row(s) {listed}; the copies are evenly split ({names})"
                elif y[i] != top:
                    severity[i] = "note"
                    evidence[i] = (f"{how} of row(s) {listed}: {counts.max()} of the {len(members)} say "
                                   f"{classes[top]!r}, this one {classes[y[i]]!r}")
        self.summary_ = {"copies": int(in_group.sum()), "unusual": int(self.unusual_.sum())}
        self.abstain_ = (f"{int(in_group.sum())} rows repeat, natural here" if in_group.any()
                         else "no copies") if not self.unusual_.any() else ""
        return self._set(scores, severity != "", evidence, suggested, severity=severity)
