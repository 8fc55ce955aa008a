"""The weighted mean (FedAvg, McMahan et al. 2017, "Communication-efficient learning of deep networks from
decentralized data"). Not robust: one client can move it anywhere. Weights are bounded self-reported counts.

>>> import numpy as np
>>> Mean()(np.array([[0.0, 2.0], [2.0, 4.0]]))
array([1., 3.])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import Aggregator, matvec


def weighted_mean(x: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``sum_i w_i x_i`` with ``w`` summing to one (equal weights by default)."""
    if weights is None:
        return x.mean(axis=0)
    return matvec(weights, x)


class Mean(Aggregator):
    """FedAvg's weighted mean. Tolerates no malicious client."""

    name = "mean"
    linear = True
    translation_equivariant = True

    def max_malicious(self, n: int) -> int:
        return 0

    def requirement(self) -> str:
        return "the mean has breakdown point 0"

    def _aggregate(self, x, w, **context):
        return weighted_mean(x, w)
