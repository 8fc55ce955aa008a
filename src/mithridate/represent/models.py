"""Reference models that take a :class:`~mithridate.data.Dataset`'s features directly.

Tables: :class:`TableEncoder` then histogram gradient boosting. Images: :class:`CNNClassifier`.
Both expose ``fit(features, y)``, ``predict_proba(features)``, ``predict(features)`` and ``embed(features)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from mithridate.represent.cnn import CNNClassifier
from mithridate.represent.table import TableEncoder


class TableModel:
    """Encoded table features, then :class:`~sklearn.ensemble.HistGradientBoostingClassifier`."""

    def __init__(self, random_state: int = 0, max_iter: int = 200):
        # early stopping (on a 10% hold-out, for n > 10,000) keeps big tables fast and stops before the
        # trees memorise noisy labels
        self.random_state = random_state
        self.max_iter = max_iter

    def fit(self, table: pd.DataFrame, y: np.ndarray, n_classes: int | None = None) -> TableModel:
        self.encoder_ = TableEncoder().fit(table)
        self.n_classes_ = int(n_classes or (np.max(y) + 1))
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter, early_stopping="auto", random_state=self.random_state
        ).fit(self.encoder_.transform(table), y)
        return self

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        proba = np.zeros((len(table), self.n_classes_))
        proba[:, self.model_.classes_] = self.model_.predict_proba(self.encoder_.transform(table))
        return proba

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(table).argmax(1)

    def embed(self, table: pd.DataFrame) -> np.ndarray:
        return self.encoder_.transform(table)


def reference_model(kind: str, random_state: int = 0, **options) -> TableModel | CNNClassifier:
    """The default model for ``kind`` (``"table"`` or ``"image"``)."""
    if kind == "table":
        return TableModel(random_state=random_state, **options)
    return CNNClassifier(random_state=random_state, **options)
