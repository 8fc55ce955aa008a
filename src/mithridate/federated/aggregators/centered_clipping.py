"""Centered clipping (Karimireddy, He & Jaggi 2021, "Learning from history for Byzantine robust
optimization"): starting from a center ``v`` (the previous round's aggregate, i.e. the server momentum),
repeat ``v <- v + mean_i clip(x_i - v, tau)``, where ``clip`` scales a vector down to L2 norm ``tau``.
Each client moves the result by at most ``tau / n`` per iteration, whatever it sends.

With no history (the stateless ``aggregate()`` call, or the first round) the center is the coordinate-wise
median. ``tau=None`` picks, at each iteration, the median of the clients' distances to the center, so the
honest majority is barely clipped. The object keeps ``center_`` between calls (``stateful=True``), which is
the momentum form the paper analyses. Designed for a minority of malicious clients (f < n/2; the paper's
guarantees are for small fractions).

>>> import numpy as np
>>> x = np.array([[1.0, 0.0], [1.1, 0.0], [0.9, 0.1], [50.0, 50.0]])
>>> bool(np.linalg.norm(CenteredClipping(stateful=False)(x) - [1.0, 0.03]) < 0.6)
True
"""

from __future__ import annotations

import numpy as np

from mithridate.federated.aggregators.base import DEFAULT_MAX_WEIGHT_RATIO, AggregationError, Aggregator


def clip_rows(x: np.ndarray, max_norm: float | np.ndarray) -> np.ndarray:
    """Scale each row down to L2 norm at most ``max_norm`` (rows within the bound are unchanged)."""
    norms = np.linalg.norm(x, axis=1)
    scale = np.minimum(1.0, np.asarray(max_norm) / np.maximum(norms, 1e-300))
    return x * scale[:, None].astype(x.dtype)


def centered_clipping(x: np.ndarray, center: np.ndarray, tau: float | None = None, iterations: int = 3,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """``iterations`` steps of ``v <- v + sum_i w_i clip(x_i - v, tau)`` from ``center``."""
    v = np.asarray(center, dtype=np.float64)
    w = np.full(x.shape[0], 1.0 / x.shape[0]) if weights is None else weights
    for _ in range(iterations):
        dev = x - v
        radius = np.median(np.linalg.norm(dev, axis=1)) if tau is None else tau
        v = v + w @ clip_rows(dev, radius)
    return v


class CenteredClipping(Aggregator):
    """Centered clipping around the previous aggregate (or the coordinate-wise median)."""

    name = "centered_clipping"
    linear = True  # one iteration with a fixed tau and a public center: clients can clip, the server sums

    def __init__(self, num_malicious: int | None = None, tau: float | None = None, iterations: int = 3,
                 stateful: bool = True, center: np.ndarray | None = None,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.tau, self.iterations, self.stateful, self.center = tau, iterations, stateful, center

    def max_malicious(self, n: int) -> int:
        return (n - 1) // 2

    def requirement(self) -> str:
        return "f < n/2"

    def _aggregate(self, x, w, center=None, **context):
        self.resolve_malicious(x.shape[0])
        if self.tau is not None and self.tau <= 0:
            raise AggregationError(f"centered_clipping tau must be > 0, got {self.tau}")
        if center is None:
            center = self.center
        if center is None and self.stateful:
            center = getattr(self, "center_", None)
        if center is None or np.shape(center) != (x.shape[1],):
            center = np.median(x, axis=0)
        v = centered_clipping(x, center, self.tau, self.iterations, w)
        if self.stateful:
            self.center_ = v
        return v
