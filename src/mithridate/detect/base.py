"""The detectors' protocol (scikit-learn style).

Configure in ``__init__``; ``fit(dataset, representation)`` learns and returns ``self``, leaving:

- ``scores_``: float per row, higher is more suspicious (scale is the detector's own);
- ``flags_``: bool per row, from a documented, data-driven threshold (no poison rate to supply);
- ``evidence_``: str per row, why it was flagged ("" where it was not);
- ``suggested_label_``: int class code per row where relabelling is the fix, -1 elsewhere;
- ``severity_``: str per row: ``poison`` (suspected poisoning: act on it), ``suspect`` (likely poisoning, the
  evidence disagrees with itself), ``note`` (unusual but no sign of poisoning: a data-quality remark with no
  action) or ``""``; ``flags_`` is True where it is ``poison`` or ``suspect``;
- ``pvalues_``: float per row against the detector's null fitted on the data at hand, for detectors that
  find unusual rows (the scan controls the false discovery rate across them); NaN for detectors that
  estimate how many rows a poisoning mechanism touched instead (label issues, backdoors).

Each detector file keeps its algorithm as a plain function (arrays in, arrays out) and wraps it in a
:class:`Detector` subclass; the scan (:mod:`mithridate.detect.scan`) composes detectors into one report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np
from sklearn.base import BaseEstimator

from mithridate.data import Dataset
from mithridate.represent import Representation


class Detector(BaseEstimator, ABC):
    """Base class: subclasses set ``name`` and implement :meth:`fit`, ending with :meth:`_set`."""

    name = "detector"
    finds = "poison"
    """What this detector's findings are by default: ``poison`` or ``note``."""
    skip_flagged_by: tuple[str, ...] = ()
    """Names of detectors that run first in a scan and whose flagged rows this one should not see (a
    backdoor detector looks for a group sharing one shift; rows already explained as wrong labels would
    only blur that group)."""

    @abstractmethod
    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        """Learn from ``dataset`` seen through ``representation``; set the protocol's attributes."""

    def _set(self, scores, found, evidence=None, suggested_label=None, *, severity=None,
             pvalues=None) -> Self:
        """Set the protocol's attributes from ``found`` (the rows this detector reports) and, per row,
        ``severity`` (default: :attr:`finds` where found) and ``pvalues`` (default: NaN)."""
        n = len(scores)
        found = np.asarray(found, dtype=bool)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        if severity is None:
            severity = np.where(found, self.finds, "")
        self.severity_ = np.asarray(severity, dtype=object)
        self.flags_ = np.isin(self.severity_, ("poison", "suspect"))
        if evidence is None:
            evidence = np.where(found, self.name, "")
        self.evidence_ = np.asarray(evidence, dtype=object)
        self.suggested_label_ = (np.full(n, -1, dtype=np.int64) if suggested_label is None
                                 else np.asarray(suggested_label, dtype=np.int64))
        self.pvalues_ = np.full(n, np.nan) if pvalues is None else np.asarray(pvalues, dtype=np.float64)
        return self

    @property
    def found_(self) -> np.ndarray:
        """Rows this detector reports, flagged or noted."""
        return self.severity_ != ""

    def _expand(self, rows: np.ndarray) -> None:
        """Spread results fitted on ``rows`` (a mask) back to all rows; the others score lowest, unflagged."""
        n = len(rows)
        low = self.scores_.min() if len(self.scores_) else 0.0
        scores, severity, pvalues = np.full(n, low), np.full(n, "", dtype=object), np.full(n, np.nan)
        evidence, suggested = np.full(n, "", dtype=object), np.full(n, -1, dtype=np.int64)
        scores[rows], severity[rows], evidence[rows], suggested[rows], pvalues[rows] = (
            self.scores_, self.severity_, self.evidence_, self.suggested_label_, self.pvalues_)
        self._set(scores, severity != "", evidence, suggested, severity=severity, pvalues=pvalues)

class ClassOutliers(Detector):
    """Base of the per-class outlier detectors (isolation forest, LOF): a subclass scores each row within
    its class (:meth:`row_scores`, higher is more unusual, positive) and says what the score means
    (:meth:`describe`); the base turns ``log`` scores into p-values against each class's empirical null and
    notes what the false discovery rate ``fdr`` finds. An outlier alone is no evidence of poisoning."""

    finds = "note"
    fdr: float

    @abstractmethod
    def row_scores(self, features: np.ndarray, y: np.ndarray) -> np.ndarray:
        """One positive score per row, within its class."""

    @abstractmethod
    def describe(self, label: str, score: float) -> str:
        """Why a row is noted, before its p-value."""

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        from mithridate.detect.fences import discoveries, null_pvalues

        scores = self.row_scores(representation.features, dataset.y)
        pvalues = null_pvalues(np.log(np.maximum(scores, 1e-12)), dataset.y)
        classes = np.asarray(dataset.classes, dtype=object)
        evidence = np.array([f"{self.describe(repr(classes[c]), s)} (p = {p:.1e})" if p <= self.fdr else ""
                             for c, s, p in zip(dataset.y, scores, pvalues, strict=True)], dtype=object)
        return self._set(scores, discoveries(pvalues, self.fdr), evidence, pvalues=pvalues)
