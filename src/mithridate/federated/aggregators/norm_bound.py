"""Norm bounding (Sun, Kairouz, Suresh & McMahan 2019, "Can you really backdoor federated learning?"):
clip every update to L2 norm ``max_norm`` and take the (bounded-weight) mean. It does not remove a
malicious client but caps its pull on the model at ``max_norm / n``, which defeats boosted (scaled)
updates such as model replacement. ``max_norm=None`` uses the median update norm of the round.

Linear once clipping is done by the clients, so it also runs over secure aggregation.

>>> import numpy as np
>>> NormBound(max_norm=1.0)(np.array([[0.5, 0.0], [0.0, 100.0]]))
array([0.25, 0.5 ])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import DEFAULT_MAX_WEIGHT_RATIO, AggregationError, Aggregator
from mithridate.federated.aggregators.centered_clipping import clip_rows


def norm_bounded_mean(x: np.ndarray, max_norm: float, weights: np.ndarray | None = None) -> np.ndarray:
    clipped = clip_rows(x, max_norm)
    return clipped.mean(axis=0) if weights is None else weights @ clipped


class NormBound(Aggregator):
    """Clip to ``max_norm`` (default: the median norm), then average."""

    name = "norm_bound"
    linear = True

    def __init__(self, max_norm: float | None = None, max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(None, max_weight_ratio)
        self.max_norm = max_norm

    def max_malicious(self, n: int) -> int:
        return 0

    def requirement(self) -> str:
        return "norm bounding limits each client's influence to max_norm/n but has breakdown point 0"

    def _aggregate(self, x, w, **context):
        if self.max_norm is not None and self.max_norm <= 0:
            raise AggregationError(f"norm_bound max_norm must be > 0, got {self.max_norm}")
        bound = float(np.median(np.linalg.norm(x, axis=1))) if self.max_norm is None else self.max_norm
        self.bound_ = bound
        return norm_bounded_mean(x, bound, w)
