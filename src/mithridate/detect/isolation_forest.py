"""Isolation forest outliers, per class: rows that random splits isolate quickly.

Liu, Ting & Zhou (2008), "Isolation Forest", ICDM. A row that lies apart from its class needs few random
axis-parallel cuts to be isolated; the paper's anomaly score ``s = 2 ** (-E[h] / c(psi))`` turns the mean
path length ``E[h]`` into a number in (0, 1), near 1 for anomalies and about 0.5 or less for ordinary rows.
The paper's defaults are kept: 100 trees, each grown on 256 rows.

A forest is grown per class on ``representation.features`` (a poisoned row is an outlier *of the class it
claims*). Each row's p-value is that of ``log s`` against its class's empirical null
(:func:`mithridate.detect.fences.null_pvalues`); rows found at the false discovery rate ``fdr`` are
data-quality notes: an outlier alone is no evidence of poisoning.

>>> from mithridate.data import demo
>>> from mithridate.represent import Representation, TableEncoder
>>> ds = demo("wine")
>>> rep = Representation(TableEncoder().fit_transform(ds.features), np.full((178, 3), 1 / 3), "table")
>>> det = IsolationOutliers().fit(ds, rep)
>>> det.scores_.shape, int(det.found_.sum()) < 5, int(det.flags_.sum())
((178,), True, 0)
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from mithridate.detect.base import ClassOutliers
from mithridate.detect.fences import FDR, MIN_CLASS_SIZE, classes_to_score


def isolation_scores(features: np.ndarray, y: np.ndarray, n_estimators: int = 100,
                     random_state: int = 0, min_class_size: int = MIN_CLASS_SIZE) -> np.ndarray:
    """The paper's anomaly score ``s`` in (0, 1) of each row within its class (0 for classes too small)."""
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    scores = np.zeros(len(features))
    for _, rows in classes_to_score(y, min_class_size):
        forest = IsolationForest(n_estimators=n_estimators, random_state=random_state).fit(features[rows])
        scores[rows] = -forest.score_samples(features[rows])
    return scores


class IsolationOutliers(ClassOutliers):
    """Per-class isolation forest; notes rows that are unusual for their class (empirical null, FDR)."""

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 100, fdr: float = FDR, random_state: int = 0):
        self.n_estimators = n_estimators
        self.fdr = fdr
        self.random_state = random_state

    def row_scores(self, features: np.ndarray, y: np.ndarray) -> np.ndarray:
        return isolation_scores(features, y, self.n_estimators, self.random_state)

    def describe(self, label: str, score: float) -> str:
        return f"isolated quickly within class {label}: isolation score {score:.2f}"
