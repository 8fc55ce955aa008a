"""The scan: one representation, many detectors, one ranked report (the Datalab-like orchestrator).

>>> from mithridate.data import demo
>>> from mithridate.attacks import RandomFlip
>>> poisoned = RandomFlip(rate=0.1, random_state=0).poison(demo("wine"))
>>> report = Scan().fit(poisoned.dataset).report_   # doctest: +SKIP
>>> report.findings.sort_values("score", ascending=False).head()   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Self

import numpy as np
from sklearn.base import clone

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import FDR
from mithridate.detect.findings import Report
from mithridate.detect.registry import make_detectors
from mithridate.errors import DataError
from mithridate.represent import Representation, represent
from mithridate.scale import Engine

Progress = Callable[[str], None]


class Scan:
    """Scan a training set for poisoned rows.

    ``detectors``: instances following :class:`~mithridate.detect.base.Detector` (default: every
    detector suited to the data's kind). ``embeddings`` / ``model`` / ``layer``: choose the
    representation (see :func:`mithridate.represent.represent`). ``fdr``: the false discovery rate at
    which the detectors of unusual rows report notes (see :mod:`mithridate.detect.findings`). After
    :meth:`fit`: ``representation_``, ``detectors_`` (fitted) and ``report_`` (a
    :class:`~mithridate.detect.findings.Report`). ``engine``: where the representation's models are fitted
    (a :class:`~mithridate.scale.Engine`; default: this process).
    """

    def __init__(self, detectors: Sequence[Detector] | None = None, *, embeddings: np.ndarray | None = None,
                 model=None, layer: str | None = None, folds: int = 5, fdr: float = FDR, random_state: int = 0,
                 engine: Engine | None = None):
        if not 0 < fdr < 1:
            raise DataError(f"the false discovery rate must be in (0, 1), got {fdr}")
        self.detectors = detectors
        self.fdr = fdr
        self.embeddings = embeddings
        self.model = model
        self.layer = layer
        self.folds = folds
        self.random_state = random_state
        self.engine = engine

    def fit(self, dataset: Dataset, representation: Representation | None = None,
            progress: Progress | None = None) -> Self:
        if representation is None:
            representation = represent(
                dataset, embeddings=self.embeddings, model=self.model, layer=self.layer, folds=self.folds,
                random_state=self.random_state, progress=progress, engine=self.engine,
            )
        if len(representation.features) != dataset.n_rows:
            raise DataError(f"representation has {len(representation.features)} rows, data {dataset.n_rows}")
        # fitted copies (scikit-learn's clone): the caller's detectors stay as they were given
        detectors = ([clone(d) for d in self.detectors] if self.detectors is not None
                     else make_detectors(None, dataset.kind))
        for detector in detectors:
            if progress:
                progress(f"running {detector.name}")
            explained = np.zeros(dataset.n_rows, bool)
            for earlier in detectors:
                if earlier.name in detector.skip_flagged_by and hasattr(earlier, "flags_"):
                    explained |= earlier.flags_
            if explained.any():
                detector.fit(dataset.take(~explained), representation.take(~explained))
                detector._expand(~explained)
            else:
                detector.fit(dataset, representation)
        self.representation_, self.detectors_ = representation, detectors
        self.report_ = Report.from_detectors(dataset, representation, detectors, self.fdr)
        return self


__all__ = ["Scan"]
