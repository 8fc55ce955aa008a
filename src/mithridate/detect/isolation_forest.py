"""Isolation forest outliers, per class: rows that random splits isolate quickly.

Liu, Ting & Zhou (2008), "Isolation Forest", ICDM. A row that lies apart from its class needs few random
axis-parallel cuts to be isolated; the paper's anomaly score ``s = 2 ** (-E[h] / c(psi))`` turns the mean
path length ``E[h]`` into a number in (0, 1), near 1 for anomalies and about 0.5 or less for ordinary rows.
The paper's defaults are kept: 100 trees, each grown on 256 rows.

A forest is grown per class on ``representation.features`` (a poisoned row is an outlier *of the class it
claims*). Threshold, data-driven: a row is flagged when ``log s`` is far out in its class (Tukey's fence,
:mod:`mithridate.detect.fences`), so no contamination rate is needed.

>>> from mithridate.data import demo
>>> from mithridate.represent import Representation, TableEncoder
>>> ds = demo("wine")
>>> rep = Representation(TableEncoder().fit_transform(ds.features), np.full((178, 3), 1 / 3), "table")
>>> det = IsolationOutliers().fit(ds, rep)
>>> det.scores_.shape, int(det.flags_.sum()) < 5
((178,), True)
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.ensemble import IsolationForest

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import FAR_OUT, MIN_CLASS_SIZE, classes_to_score, far_out_per_class
from mithridate.represent import Representation


def isolation_scores(features: np.ndarray, y: np.ndarray, n_estimators: int = 100,
                     random_state: int = 0, min_class_size: int = MIN_CLASS_SIZE) -> np.ndarray:
    """The paper's anomaly score ``s`` in (0, 1) of each row within its class (0 for classes too small)."""
    features = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    scores = np.zeros(len(features))
    for _, rows in classes_to_score(y, min_class_size):
        forest = IsolationForest(n_estimators=n_estimators, random_state=random_state).fit(features[rows])
        scores[rows] = -forest.score_samples(features[rows])
    return scores


class IsolationOutliers(Detector):
    """Per-class isolation forest; flags rows whose score is far out in their class."""

    name = "isolation_forest"

    def __init__(self, n_estimators: int = 100, far_out: float = FAR_OUT, random_state: int = 0):
        self.n_estimators = n_estimators
        self.far_out = far_out
        self.random_state = random_state

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        scores = isolation_scores(representation.features, dataset.y, self.n_estimators, self.random_state)
        self.excess_ = far_out_per_class(scores, dataset.y)
        flags = self.excess_ > self.far_out
        classes = np.asarray(dataset.classes, dtype=object)
        evidence = np.array(
            [f"isolated quickly within class {classes[c]!r}: isolation score {s:.2f}, "
             f"{e:.1f} IQR above the class's upper quartile (log scale)" if f else ""
             for c, s, e, f in zip(dataset.y, scores, self.excess_, flags, strict=True)], dtype=object)
        return self._set(scores, flags, evidence)
