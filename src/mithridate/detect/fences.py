"""Data-driven thresholds shared by the outlier detectors: Tukey's fences, per class.

Tukey (1977, *Exploratory Data Analysis*) calls a value "far out" when it lies more than three
interquartile ranges beyond the quartiles. The quartiles come from the data itself, so the threshold
needs no contamination rate, and on clean data it flags only the far tail (a Gaussian sample puts about
one value in 300,000 beyond it). Detectors apply it to a scale where their score is roughly symmetric
(a logarithm or a cube root), and per class, since each class has its own spread.

>>> excess = tukey_excess(np.r_[np.arange(100.0), 1000.0])
>>> bool(excess[-1] > FAR_OUT), bool((excess[:-1] > FAR_OUT).any())
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FAR_OUT = 3.0
"""Tukey's "far out" multiple of the interquartile range."""

MIN_CLASS_SIZE = 10
"""Classes with fewer rows are not scored by the per-class detectors: quartiles of so few values mean
nothing."""


def tukey_excess(values: np.ndarray) -> np.ndarray:
    """``(value - Q3) / IQR``: how many interquartile ranges each value lies above the upper quartile.

    Values above :data:`FAR_OUT` are Tukey's far-out values. A zero IQR (ties) falls back to the
    median absolute deviation, then to 1.
    """
    values = np.asarray(values, dtype=np.float64)
    q1, q3 = np.percentile(values, [25, 75])
    spread = q3 - q1
    if spread <= 0:
        spread = 2 * np.median(np.abs(values - np.median(values))) or 1.0
    return (values - q3) / spread


def tukey_lower_fence(values: np.ndarray, k: float = FAR_OUT) -> float:
    """``Q1 - k * IQR``: below it lie the values far out on the low side."""
    q1, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(q1 - k * (q3 - q1))


def classes_to_score(y: np.ndarray, min_size: int = MIN_CLASS_SIZE) -> Iterator[tuple[int, np.ndarray]]:
    """``(class code, row positions)`` for each class with at least ``min_size`` rows."""
    y = np.asarray(y)
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        if len(rows) >= min_size:
            yield int(c), rows


def far_out_per_class(scores: np.ndarray, y: np.ndarray, min_class_size: int = MIN_CLASS_SIZE,
                      log: bool = True) -> np.ndarray:
    """Tukey excess (in interquartile ranges above Q3) of each row's score within its class."""
    excess = np.full(len(scores), -np.inf)
    for _, rows in classes_to_score(y, min_class_size):
        values = scores[rows]
        excess[rows] = tukey_excess(np.log(np.maximum(values, 1e-12)) if log else values)
    return excess
