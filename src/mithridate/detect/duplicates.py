"""Duplicates and conflicts: exact and near copies of a row, and copies that disagree on the label.

Copies are a cheap poisoning lever: duplicating a row multiplies its weight in training, and a copy with
another label (a "conflict") is a label flip that the original cannot outvote. Two notions:

- **exact**: identical raw inputs (the table row's values, the image's bytes), found by hashing each row;
- **near**: rows closer in the (standardised) representation than the data's own nearest-neighbour
  distances allow.
  The threshold is data-driven: the distance from each row to its nearest other row is computed, and a
  pair counts as near when its distance is far out on the low side of that distribution (Tukey's lower
  fence, three interquartile ranges below the first quartile, on a log scale: near copies are typically
  orders of magnitude closer than natural neighbours). Near pairs are looked for among each row's
  :data:`NEAR_NEIGHBOURS` nearest neighbours (the scan's shared neighbour search); a bigger cluster of
  near copies is still found whole, as a chain.

Rows linked by either relation form a group (connected components). A group with more than one label is
a conflict: all its rows are flagged, and the label the out-of-fold model favours for the group is
suggested to rows that carry another one. A group with a single label is flagged except for its first
row, so removing the flagged rows keeps one copy.

>>> import pandas as pd
>>> from mithridate.data import Dataset
>>> from mithridate.represent import Representation, TableEncoder
>>> table = pd.DataFrame({"a": [1.0, 1.0, 2.0, 3.0, 5.0], "b": [0.0, 0.0, 1.0, 4.0, 2.0]})
>>> ds = Dataset.from_labels(table, ["x", "y", "x", "y", "x"])
>>> rep = Representation(TableEncoder().fit_transform(table), np.full((5, 2), 0.5), "table")
>>> Duplicates().fit(ds, rep).flags_.tolist()
[True, True, False, False, False]
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


class Duplicates(Detector):
    """Exact (hash of raw inputs) and near (representation) duplicates; conflicts where labels differ.

    ``groups_``: a group id per row (-1 for rows with no copy); ``threshold_``: the near-duplicate
    distance; ``typical_``: the median distance from a row to its nearest neighbour.
    """

    name = "duplicates"

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
        self.groups_ = np.where(in_group, np.unique(group, return_inverse=True)[1].reshape(-1), -1)
        closeness = np.where(exact, 1.0, 1 - np.minimum(nn_distance / max(self.typical_, 1e-12), 1))
        scores, flags = closeness.copy(), np.zeros(n, dtype=bool)
        suggested = np.full(n, -1, dtype=np.int64)
        evidence = np.full(n, "", dtype=object)
        classes = np.asarray(dataset.classes, dtype=object)
        for g in np.unique(group[in_group]):
            members = np.flatnonzero(group == g)
            labels = np.unique(y[members])
            conflict = len(labels) > 1
            if conflict:
                consensus = int(np.argmax(representation.proba[members].mean(0)))
                scores[members] += 1
                flags[members] = True
                suggested[members] = np.where(y[members] != consensus, consensus, -1)
            else:
                flags[members[1:]] = True
            for i in members:
                others = members[members != i]
                listed = ", ".join(str(r) for r in dataset.row_id[others[: self.max_listed]])
                listed += f" and {len(others) - self.max_listed} more" if len(others) > self.max_listed else ""
                how = ("exact duplicate" if exact[i] else
                       f"near duplicate (distance {nn_distance[i]:.3g}; a typical nearest neighbour is at "
                       f"{self.typical_:.3g}, the threshold {self.threshold_:.3g})")
                if conflict:
                    names = ", ".join(repr(c) for c in classes[labels])
                    evidence[i] = (f"{how} of row(s) {listed} with conflicting labels ({names}); the model "
                                   f"favours {classes[consensus]!r}")
                elif flags[i]:
                    evidence[i] = f"{how} of row(s) {listed}, same label {classes[y[i]]!r}; one copy is kept"
        return self._set(scores, flags, evidence, suggested)
