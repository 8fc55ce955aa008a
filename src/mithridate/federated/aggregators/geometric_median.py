"""Geometric median by the smoothed Weiszfeld algorithm: Robust Federated Aggregation (RFA; Pillutla,
Kakade & Harchaoui 2019/2022, "Robust aggregation for federated learning").

The point minimising the weighted sum of Euclidean distances to the updates; it withstands any minority of
malicious clients (breakdown point 1/2) and, unlike the coordinate-wise median, is rotation-invariant.
Each Weiszfeld step is a weighted mean with weights ``w_i / max(nu, ||z - x_i||)``; ``nu`` smooths the
division so the iteration is stable when ``z`` lands on an update.

>>> import numpy as np
>>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [100.0, 100.0]])
>>> bool(np.linalg.norm(GeometricMedian()(x)) < 1)
True
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import DEFAULT_MAX_WEIGHT_RATIO, Aggregator, distances_to, matvec


def geometric_median(x: np.ndarray, weights: np.ndarray | None = None, nu: float = 1e-6,
                     max_iter: int = 100, tol: float = 1e-6) -> tuple[np.ndarray, int]:
    """Smoothed Weiszfeld from the weighted mean; returns ``(median, iterations)``."""
    n = x.shape[0]
    alpha = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    z = matvec(alpha, x)
    dist = distances_to(x, z)
    objective = alpha @ dist
    for it in range(1, max_iter + 1):
        beta = alpha / np.maximum(nu, dist)
        z = matvec(beta / beta.sum(), x)
        dist = distances_to(x, z)
        new = alpha @ dist
        if abs(objective - new) <= tol * max(new, 1e-12):
            return z, it
        objective = new
    return z, max_iter


class GeometricMedian(Aggregator):
    """RFA's geometric median (uniform weights unless ``weighted=True``); tolerates f < n/2."""

    name = "geometric_median"
    translation_equivariant = True

    def __init__(self, num_malicious: int | None = None, nu: float = 1e-6, max_iter: int = 100,
                 tol: float = 1e-6, weighted: bool = False, max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.nu, self.max_iter, self.tol, self.weighted = nu, max_iter, tol, weighted

    def max_malicious(self, n: int) -> int:
        return (n - 1) // 2

    def requirement(self) -> str:
        return "f < n/2"

    def _aggregate(self, x, w, **context):
        self.resolve_malicious(x.shape[0])
        z, self.n_iter_ = geometric_median(x, w if self.weighted else None, self.nu, self.max_iter, self.tol)
        return z
