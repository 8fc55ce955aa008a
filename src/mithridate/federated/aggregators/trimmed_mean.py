"""Coordinate-wise trimmed mean (Yin et al. 2018, "Byzantine-robust distributed learning: towards optimal
statistical rates"): per parameter, drop the ``k`` largest and ``k`` smallest values and average the rest.
It withstands ``k`` malicious clients if ``n > 2k``. ``beta`` (a fraction, as in Flower's FedTrimmedAvg)
sets ``k = int(beta * n)``; ``num_malicious`` sets ``k`` directly. Weights are ignored.

>>> import numpy as np
>>> TrimmedMean(num_malicious=1)(np.array([[0.0], [1.0], [2.0], [100.0]]))
array([1.5])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import (
    DEFAULT_MAX_WEIGHT_RATIO,
    AggregationError,
    Aggregator,
    by_column_blocks,
)


def trimmed_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of each column without its ``k`` smallest and ``k`` largest values."""
    n = x.shape[0]
    if not 0 <= 2 * k < n:
        raise AggregationError(f"cannot trim {k} from each side of {n} clients")
    if k == 0:
        return x.mean(axis=0)

    def block_mean(block: np.ndarray) -> np.ndarray:
        return np.partition(block, (k, n - k - 1), axis=0)[k:n - k].mean(axis=0)

    return by_column_blocks(block_mean, x).astype(x.dtype, copy=False)


class TrimmedMean(Aggregator):
    """Trim ``num_malicious`` (or ``int(beta * n)``, default ``beta=0.2``) values from each side."""

    name = "trimmed_mean"
    translation_equivariant = True
    coordinatewise = True

    def __init__(self, num_malicious: int | None = None, beta: float | None = None,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.beta = beta

    def max_malicious(self, n: int) -> int:
        return (n - 1) // 2

    def requirement(self) -> str:
        return "n > 2f"

    def trim(self, n: int) -> int:
        if self.num_malicious is not None and self.beta is not None:
            raise AggregationError("give trimmed_mean either num_malicious or beta, not both")
        if self.num_malicious is None:
            beta = 0.2 if self.beta is None else self.beta
            if not 0 <= beta < 0.5:
                raise AggregationError(f"trimmed_mean beta must be in [0, 0.5), got {beta}")
            return int(beta * n)
        return self.resolve_malicious(n)

    def _aggregate(self, x, w, **context):
        return trimmed_mean(x, self.trim(x.shape[0]))
