"""The detectors' protocol (scikit-learn style).

Configure in ``__init__``; ``fit(dataset, representation)`` learns and returns ``self``, leaving:

- ``scores_``: float per row, higher is more suspicious (scale is the detector's own);
- ``flags_``: bool per row, from a documented, data-driven threshold (no poison rate to supply);
- ``evidence_``: str per row, why it was flagged ("" where it was not);
- ``suggested_label_``: int class code per row where relabelling is the fix, -1 elsewhere.

Each detector file keeps its algorithm as a plain function (arrays in, arrays out) and wraps it in a
:class:`Detector` subclass; the scan (:mod:`mithridate.detect.scan`) composes detectors into one report.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np

from mithridate.data import Dataset
from mithridate.represent import Representation


class Detector(ABC):
    """Base class: subclasses set ``name`` and implement :meth:`fit`, ending with :meth:`_set`."""

    name = "detector"
    skip_flagged_by: tuple[str, ...] = ()
    """Names of detectors that run first in a scan and whose flagged rows this one should not see (a
    backdoor detector looks for a group sharing one shift; rows already explained as wrong labels would
    only blur that group)."""

    @abstractmethod
    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        """Learn from ``dataset`` seen through ``representation``; set the protocol's attributes."""

    def _set(self, scores, flags, evidence=None, suggested_label=None) -> Self:
        n = len(scores)
        self.scores_ = np.asarray(scores, dtype=np.float64)
        self.flags_ = np.asarray(flags, dtype=bool)
        if evidence is None:
            evidence = np.where(self.flags_, self.name, "")
        self.evidence_ = np.asarray(evidence, dtype=object)
        self.suggested_label_ = (np.full(n, -1, dtype=np.int64) if suggested_label is None
                                 else np.asarray(suggested_label, dtype=np.int64))
        return self

    def _expand(self, rows: np.ndarray) -> None:
        """Spread results fitted on ``rows`` (a mask) back to all rows; the others score lowest, unflagged."""
        n = len(rows)
        low = self.scores_.min() if len(self.scores_) else 0.0
        scores, flags = np.full(n, low), np.zeros(n, bool)
        evidence, suggested = np.full(n, "", dtype=object), np.full(n, -1, dtype=np.int64)
        scores[rows], flags[rows], evidence[rows], suggested[rows] = (
            self.scores_, self.flags_, self.evidence_, self.suggested_label_)
        self._set(scores, flags, evidence, suggested)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.endswith("_"))
        return f"{type(self).__name__}({params})"
