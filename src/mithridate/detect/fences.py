"""Data-driven thresholds shared by the detectors: Tukey's fences, empirical-null p-values, and false
discovery rate control.

**Empirical null.** Detectors of unusual rows turn their scores into p-values against a null fitted to the
data at hand: per class, a logistic distribution with the median and the interquartile range of the
class's scores, on a scale where they are roughly symmetric. The bulk of a class is what "usual" means
for this data (Efron 2004, "Large-scale simultaneous hypothesis testing: the choice of a null
hypothesis", JASA 99), so no contamination rate or outside reference is needed. The logistic's
exponential tails are heavier than a normal's, as real scores' are: a normal null fitted to the same bulk
reported 6% of clean breast_cancer rows as outliers at a 5% false discovery rate, the logistic 1%, about
what Tukey's far-out fence gives (three IQRs beyond the quartiles is p = 5e-4).

**False discovery rate.** :func:`discoveries` applies Benjamini & Hochberg (1995) at level :data:`FDR`:
among the rows it reports, the expected share that the null explains is at most that level.

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
from scipy import stats

FAR_OUT = 3.0
"""Tukey's "far out" multiple of the interquartile range."""

FDR = 0.05
"""Default false discovery rate of the scan's findings of unusual rows."""

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


def null_pvalues(scores: np.ndarray, y: np.ndarray, min_class_size: int = MIN_CLASS_SIZE) -> np.ndarray:
    """One-sided (upper) p-value of each score against its class's empirical null: a logistic distribution
    with the class's median and interquartile range (twice the upper quartile's distance from the median
    when that is larger; the MAD's, then 1, when both are zero). Classes smaller than ``min_class_size``
    get 1.

    >>> p = null_pvalues(np.r_[np.linspace(-1, 1, 99), 8.0], np.zeros(100, int))
    >>> bool(p[-1] < 1e-6), bool(p[:-1].min() > 0.01)
    (True, True)
    """
    scores = np.asarray(scores, dtype=np.float64)
    p = np.ones(len(scores))
    for _, rows in classes_to_score(y, min_class_size):
        values = scores[rows]
        centre = np.median(values)
        q1, q3 = np.percentile(values, [25, 75])
        # the upper half's spread, doubled: scores bounded below (LOF near 1, distances near 0) have a
        # squeezed lower half that would make the null too narrow for the upper tail it is judged on
        iqr = 2 * max(q3 - centre, (q3 - q1) / 2) or 2 * np.median(np.abs(values - centre)) or 1.0
        p[rows] = stats.logistic.sf((values - centre) / (iqr / (2 * np.log(3))))
    return p


def discoveries(pvalues: np.ndarray, fdr: float = FDR) -> np.ndarray:
    """Benjamini-Hochberg at level ``fdr`` over all finite ``pvalues`` (NaN: untested, never a discovery).

    >>> discoveries(np.array([1e-6, 0.04, 0.5, np.nan]), 0.05).tolist()
    [True, False, False, False]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    found = np.zeros(p.shape, dtype=bool)
    tested = np.isfinite(p)
    if tested.any():
        found[tested] = stats.false_discovery_control(np.clip(p[tested], 0, 1), method="bh") <= fdr
    return found
