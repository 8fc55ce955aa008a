"""Nearest-neighbour mixing (NNM; Allouah, Farhadkhani, Guerraoui, Gupta, Pinot & Stephan 2023, "Fixing by
mixing: a recipe for optimal Byzantine ML under heterogeneity"): before aggregating, replace each update by
the mean of its ``n - f`` nearest updates (itself included), then run any robust rule on the mixed updates.
Mixing pulls honest updates together and dilutes malicious ones, which makes rules such as Krum, the
median or centered clipping reach the optimal error under heterogeneous (non-IID) clients. Needs f < n/2.

>>> import numpy as np
>>> from mithridate.federated.aggregators.median import Median
>>> x = np.array([[0.0], [1.0], [2.0], [90.0]])
>>> NearestNeighborMixing(Median(), num_malicious=1)(x)
array([1.])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import DEFAULT_MAX_WEIGHT_RATIO, Aggregator, pairwise_sq_distances


def nnm(x: np.ndarray, num_malicious: int) -> np.ndarray:
    """Each row replaced by the mean of its ``n - f`` nearest rows (itself included)."""
    n = x.shape[0]
    k = n - num_malicious
    order = np.argsort(pairwise_sq_distances(x), axis=1, kind="stable")[:, :k]
    mix = np.zeros((n, n))
    np.put_along_axis(mix, order, 1.0 / k, axis=1)
    return (mix @ x).astype(x.dtype, copy=False)


class NearestNeighborMixing(Aggregator):
    """NNM as a pre-aggregation step in front of ``then`` (another :class:`Aggregator`)."""

    name = "nnm"

    def __init__(self, then: Aggregator, num_malicious: int | None = None,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.then = then

    def max_malicious(self, n: int) -> int:
        return min((n - 1) // 2, self.then.max_malicious(n))

    def requirement(self) -> str:
        return f"f < n/2 and {self.then.requirement()}"

    @property
    def translation_equivariant(self) -> bool:  # mixing is; the result is if the next rule is
        return self.then.translation_equivariant

    def _aggregate(self, x, w, **context):
        f = self.resolve_malicious(x.shape[0])
        mixed = nnm(x, f)
        return self.then.fit(mixed, w, suspicion=False, **context).aggregate_
