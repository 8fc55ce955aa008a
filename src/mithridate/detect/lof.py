"""Local outlier factor, per class: rows in a sparser neighbourhood than their neighbours'.

Breunig, Kriegel, Ng & Sander (2000), "LOF: identifying density-based local outliers", SIGMOD. The LOF of a
row is the mean local reachability density of its ``k`` nearest neighbours divided by its own: about 1
inside a cluster, well above 1 for a row that sits in a sparser place than the rows around it. Unlike a
global distance, it adapts to classes made of dense and loose regions.

Computed per class on ``representation.features`` with ``k = min(20, n_class - 1)`` (the paper's advice:
10 to 20 neighbours). Each row's p-value is that of ``log LOF`` against its class's empirical null
(:func:`mithridate.detect.fences.null_pvalues`); rows found at the false discovery rate ``fdr`` are
data-quality notes.

>>> from mithridate.data import demo
>>> from mithridate.represent import Representation, TableEncoder
>>> ds = demo("wine")
>>> rep = Representation(TableEncoder().fit_transform(ds.features), np.full((178, 3), 1 / 3), "table")
>>> det = LocalOutliers().fit(ds, rep)
>>> bool(det.scores_.min() > 0.5), int(det.found_.sum()) < 10, int(det.flags_.sum())
(True, True, 0)
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import LocalOutlierFactor

from mithridate.detect.base import ClassOutliers
from mithridate.detect.fences import FDR, MIN_CLASS_SIZE, classes_to_score


def lof_scores(features: np.ndarray, y: np.ndarray, n_neighbors: int = 20,
               min_class_size: int = MIN_CLASS_SIZE) -> np.ndarray:
    """The local outlier factor of each row within its class (1 for classes too small to score)."""
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    scores = np.ones(len(features))
    for _, rows in classes_to_score(y, min_class_size):
        # Identical rows have infinite density; the paper's remedy is to count distinct neighbours, so
        # each distinct row is scored once and its copies share the score.
        distinct, copy_of = np.unique(features[rows], axis=0, return_inverse=True)
        if len(distinct) < 3:
            continue
        lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, len(distinct) - 1)).fit(distinct)
        scores[rows] = -lof.negative_outlier_factor_[copy_of.reshape(-1)]
    return scores


class LocalOutliers(ClassOutliers):
    """Per-class local outlier factor; notes rows in unusually sparse places of their class (FDR)."""

    name = "lof"

    def __init__(self, n_neighbors: int = 20, fdr: float = FDR):
        self.n_neighbors = n_neighbors
        self.fdr = fdr

    def row_scores(self, features: np.ndarray, y: np.ndarray) -> np.ndarray:
        return lof_scores(features, y, self.n_neighbors)

    def describe(self, label: str, score: float) -> str:
        return f"sparse neighbourhood within class {label}: local outlier factor {score:.2f}"
