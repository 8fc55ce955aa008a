"""Screened mean, our ``default``: the (bounded-weight) mean of the updates that pass three screens, each
aimed at a way malicious updates must differ from honest ones to do harm, none of which asks honest
clients to look alike (so it holds when their data differ, which the distance-based rules do not):

1. **Size.** An update longer than ``max_norm_ratio`` (2) times the median update norm is left out. Boosted
   model replacement, scaled sign flips and noise need length to matter; honest updates on digits stayed
   within 1.7x the median even under Dirichlet 0.1 label skew (``benchmarks/federated_robustness.py``).
2. **One voice per crafted vector.** Updates closer to one another than ``duplicate_ratio`` (0.1) times the
   median nearest-neighbour distance share one client's weight: omniscient colluders (ALIE, IPM, Min-Max,
   Min-Sum) send one vector many times, and honest clients, whose data and batches differ, never do
   (the insight of FoolsGold; Fung, Yoon & Beschastnikh 2020).
3. **Direction.** An update whose cosine with the reference is at most ``min_cosine`` (0) is left out: the
   reference is the previous round's aggregate (the server's momentum, as in centered clipping,
   Karimireddy, He & Jaggi 2021), or in the first round (and whenever no update agrees with the
   reference, or it is zero) the coordinate-wise median of one update per group.
   Sign flips, IPM and label-flipping clients point away from where the honest majority is going.

Then the admitted updates are averaged with the bounded example-count weights. Without an attack no
screen fires and the rule is the mean (within noise of FedAvg at every heterogeneity level measured); a
screen that fires shows in ``screened_`` (``size``, ``direction``) and ``group_sizes_``.

Breakdown point: each screen's statistic (median norm, median nearest-neighbour distance, the reference)
is set by the honest majority while f < n/2. Past the screens, an admitted malicious update is at most
``max_norm_ratio`` times the typical honest length and points with the honest direction, so f of them
move the aggregate by at most ``max_norm_ratio * f / (number admitted)`` median norms per round. It does
not stop an attacker who stays short, distinct and aligned (a small, slow drift). The screens read only
norms, distances and cosines, so :func:`screen` runs as well on numbers two servers open from secret shares
(:mod:`mithridate.federated.secagg.two_server`); one server that sees only the sum cannot run it.

>>> import numpy as np
>>> honest = np.array([[1.0, 0.2], [0.8, -0.1], [1.1, 0.0], [0.9, 0.3]])
>>> crafted = np.repeat([[-0.5, 0.0]], 3, axis=0)  # three colluders, one vector
>>> rule = ScreenedMean(stateful=False)
>>> rule(np.vstack([honest, crafted])).round(2)
array([0.95, 0.1 ])
>>> rule.screened_.tolist()
['', '', '', '', 'direction', 'direction', 'direction']
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mithridate.federated.aggregators.base import (
    DEFAULT_MAX_WEIGHT_RATIO,
    AggregationError,
    Aggregator,
    matvec,
    pairwise_sq_distances,
)


def duplicate_groups(sq_distances: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a squared-distance matrix: how many rows (itself included) lie within ``ratio`` times the
    median nearest-neighbour distance of it (1 for a row unlike any other), and whether it is the first row
    of its group."""
    n = sq_distances.shape[0]
    if n < 3 or ratio <= 0:
        return np.ones(n, dtype=np.int64), np.ones(n, dtype=bool)
    d = np.sqrt(np.maximum(sq_distances, 0.0))
    np.fill_diagonal(d, np.inf)
    near = d <= ratio * float(np.median(d.min(axis=1)))
    first, seen = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for i in range(n):
        if not seen[i]:
            first[i] = True
            seen |= near[i]
            seen[i] = True
    return 1 + near.sum(axis=1), first


def screen(norms: np.ndarray, sq_distances: Callable[[np.ndarray], np.ndarray],
           reference_cosines: np.ndarray | None, robust_cosines: Callable[[np.ndarray], np.ndarray],
           max_norm_ratio: float = 2.0, duplicate_ratio: float = 0.1,
           min_cosine: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The three screens on what they read of the updates, so they run as well on plain updates as on
    numbers opened from secret shares (:mod:`mithridate.federated.secagg.two_server`): per update its norm,
    ``sq_distances(rows)`` among the given rows, its cosine with the reference (``None``: no reference yet)
    and ``robust_cosines(first)``, its cosine with a robust centre of the updates marked ``first`` (one per
    group). Returns the reason each update is left out (``""``: kept) and its group size."""
    reason = np.where(norms > max_norm_ratio * np.median(norms), "size", "").astype(object)
    sized = np.flatnonzero(reason == "")
    groups, first = np.ones(len(norms), dtype=np.int64), np.zeros(len(norms), dtype=bool)
    groups[sized], first[sized] = duplicate_groups(sq_distances(sized), duplicate_ratio)
    cos = robust_cosines(first) if reference_cosines is None else reference_cosines
    passed = (reason == "") & (cos > min_cosine)
    if reference_cosines is not None and not passed[sized].any():  # nothing agrees (an overshoot): start again
        passed = (reason == "") & (robust_cosines(first) > min_cosine)
    reason[(reason == "") & ~passed] = "direction"
    return reason, groups


def cosines(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine of each row with ``reference`` (0 for a zero row or reference)."""
    dots = (x @ np.asarray(reference, dtype=x.dtype)).astype(np.float64)
    scale = np.linalg.norm(x, axis=1) * np.linalg.norm(reference)
    return np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)


class ScreenedMean(Aggregator):
    """Mean of the updates that pass the size, duplicate and direction screens (see the module docstring).

    ``stateful=True`` keeps the aggregate as the next round's reference (``reference_``); a ``reference=``
    passed to :meth:`fit` overrides it for that call.
    """

    name = "screened_mean"

    def __init__(self, num_malicious: int | None = None, max_norm_ratio: float = 2.0, duplicate_ratio: float = 0.1,
                 min_cosine: float = 0.0, stateful: bool = True,
                 max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        super().__init__(num_malicious, max_weight_ratio)
        self.max_norm_ratio, self.duplicate_ratio = max_norm_ratio, duplicate_ratio
        self.min_cosine, self.stateful = min_cosine, stateful

    def max_malicious(self, n: int) -> int:
        return (n - 1) // 2

    def requirement(self) -> str:
        return "f < n/2"

    def _aggregate(self, x, w, reference=None, **context):
        self.resolve_malicious(x.shape[0])
        if self.max_norm_ratio < 1:
            raise AggregationError(f"screened_mean max_norm_ratio must be >= 1, got {self.max_norm_ratio}")
        if reference is None and self.stateful:
            reference = getattr(self, "reference_", None)
        if reference is None or np.shape(reference) != (x.shape[1],) or not np.any(reference):
            reference = None
        reason, groups = screen(
            np.linalg.norm(x, axis=1), lambda rows: pairwise_sq_distances(x[rows]),
            None if reference is None else cosines(x, reference),
            lambda first: cosines(x, np.median(x[first], axis=0)),  # the first round's reference
            self.max_norm_ratio, self.duplicate_ratio, self.min_cosine)
        weights = np.where(reason == "", w / groups, 0.0)
        agg = (matvec(weights / weights.sum(), x) if weights.sum() > 0 else np.zeros(x.shape[1], x.dtype))
        self.screened_, self.group_sizes_ = reason, groups
        if self.stateful and np.any(agg):  # a zero aggregate points nowhere: keep the last reference
            self.reference_ = agg
        return agg

