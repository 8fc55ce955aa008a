"""Coordinate-wise median (Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-robust distributed learning:
towards optimal statistical rates"). Each parameter is the median of the clients' values; it withstands any
minority of malicious clients (f < n/2). Weights are ignored (as in Flower's FedMedian).

>>> import numpy as np
>>> Median()(np.array([[0.0, 1.0], [1.0, 2.0], [100.0, -50.0]]))
array([1., 1.])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import Aggregator, by_column_blocks


def coordinate_median(x: np.ndarray) -> np.ndarray:
    """Column medians, over column blocks in parallel (bounded temporary memory)."""
    return by_column_blocks(lambda block: np.median(block, axis=0), x).astype(x.dtype, copy=False)


class Median(Aggregator):
    """Coordinate-wise median; tolerates f < n/2."""

    name = "median"
    translation_equivariant = True
    coordinatewise = True

    def max_malicious(self, n: int) -> int:
        return (n - 1) // 2

    def requirement(self) -> str:
        return "f < n/2"

    def _aggregate(self, x, w, **context):
        self.resolve_malicious(x.shape[0])
        return coordinate_median(x)
