"""Built-in demo data from what scikit-learn ships (no download): digits (images) and tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import datasets

from mithridate.data.dataset import Dataset
from mithridate.errors import DataError

DEMOS = ("digits", "breast_cancer", "wine")


def demo(name: str = "digits") -> Dataset:
    """``digits``: 1,797 8x8 grey images (values 0-16), 10 classes.
    ``breast_cancer``: 569 rows x 30 numeric columns, 2 classes.
    ``wine``: 178 rows x 13 numeric columns, 3 classes."""
    if name == "digits":
        bunch = datasets.load_digits()
        return Dataset(
            features=bunch.images.astype(np.float32), y=bunch.target, classes=tuple(range(10)), name="digits"
        )
    if name in ("breast_cancer", "wine"):
        bunch = getattr(datasets, f"load_{name}")()
        return Dataset.from_labels(
            pd.DataFrame(bunch.data, columns=list(bunch.feature_names)),
            np.asarray(bunch.target_names)[bunch.target].astype(str),
            label_name="target",
            name=name,
        )
    raise DataError(f"unknown demo dataset {name!r} (choose from {', '.join(DEMOS)})")
