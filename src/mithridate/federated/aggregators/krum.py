"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui & Stainer 2017, "Machine learning with adversaries:
Byzantine tolerant gradient descent").

Each client is scored by the sum of squared distances to its ``n - f - 2`` nearest other clients; Krum keeps
the single best-scored update, Multi-Krum averages the ``m`` best (weighted by bounded example counts).
Both need ``n >= 2f + 3``. Unlike Flower's ``Krum`` (``num_malicious_nodes=0`` by default, which protects
nothing), ``num_malicious=None`` assumes the most the rule can withstand, ``(n - 3) // 2``.

>>> import numpy as np
>>> x = np.array([[0.0], [0.1], [0.2], [0.15], [50.0]])
>>> Krum(num_malicious=1)(x)
array([0.15])
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import (
    DEFAULT_MAX_WEIGHT_RATIO,
    AggregationError,
    Aggregator,
    matvec,
    pairwise_sq_distances,
)


def krum_scores(x: np.ndarray, num_malicious: int, sq_dist: np.ndarray | None = None) -> np.ndarray:
    """Sum of squared distances from each row to its ``n - f - 2`` nearest other rows."""
    d = pairwise_sq_distances(x) if sq_dist is None else sq_dist
    n = d.shape[0]
    k = max(1, n - num_malicious - 2)
    nearest = np.sort(d, axis=1)[:, 1:k + 1]
    return nearest.sum(axis=1)


def multi_krum_select(x: np.ndarray, num_malicious: int, m: int, sq_dist: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``m`` best Krum scores (stable order, best first)."""
    return np.argsort(krum_scores(x, num_malicious, sq_dist), kind="stable")[:m]


def multi_krum(x: np.ndarray, num_malicious: int, m: int = 1, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean of the ``m`` rows Krum scores best (``m=1``: Krum)."""
    keep = multi_krum_select(x, num_malicious, m)
    return matvec(_selected_weights(keep, x.shape[0], weights), x)


def _selected_weights(keep: np.ndarray, n: int, weights: np.ndarray | None) -> np.ndarray:
    """Weights over all rows: the selected rows' weights renormalised, zero elsewhere (no row copy)."""
    full = np.zeros(n)
    full[keep] = 1.0 if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    return full / full.sum()


class Krum(Aggregator):
    """Krum (``m=1``) and Multi-Krum (``m > 1``; default for Multi-Krum ``n - f``). Needs ``n >= 2f + 3``."""

    name = "krum"
    translation_equivariant = True

    def __init__(self, num_malicious: int | None = None, m: int | None = 1,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.m = m

    def max_malicious(self, n: int) -> int:
        return max(-1, (n - 3) // 2)

    def requirement(self) -> str:
        return "n >= 2f + 3"

    def _aggregate(self, x, w, **context):
        n = x.shape[0]
        if n < 3:
            raise AggregationError(f"{self.name} needs at least 3 clients, got {n}")
        f = self.resolve_malicious(n)
        m = n - f if self.m is None else int(self.m)
        if not 1 <= m <= n:
            raise AggregationError(f"{self.name}: m must be between 1 and {n}, got {m}")
        d = pairwise_sq_distances(x)
        scores = krum_scores(x, f, d)
        keep = np.argsort(scores, kind="stable")[:m]
        self.selected_ = keep
        return matvec(_selected_weights(keep, n, w), x)


class MultiKrum(Krum):
    """Multi-Krum: average the ``m`` (default ``n - f``) best Krum-scored updates."""

    name = "multi_krum"

    def __init__(self, num_malicious: int | None = None, m: int | None = None,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, m, max_weight_ratio)
