"""The protocol every robust aggregator follows, and what they share: input checks, bounded weights.

An aggregator takes the clients' updates as one ``(clients, parameters)`` array (each row a flattened model
update) and returns one update. Configuration lives in ``__init__``; :meth:`Aggregator.fit` aggregates and
leaves ``aggregate_`` (the update) and ``suspicion_`` (per client: its distance to the aggregate over the
median distance, so 1 is typical; the input of :class:`~mithridate.federated.reputation.Reputation`).
Calling the object returns the update directly. Each rule states how many malicious clients it tolerates
(:meth:`Aggregator.max_malicious`) and refuses, with a one-line :class:`~mithridate.errors.MithridateError`,
a configuration it cannot defend.

Self-reported example counts are never trusted as they come: :func:`bound_weights` caps each count at
``max_weight_ratio`` times the median count before normalising, so one client claiming a million examples
weighs at most a few honest clients.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import BaseEstimator

from mithridate.errors import MithridateError

DEFAULT_MAX_WEIGHT_RATIO = 2.0


class AggregationError(MithridateError, ValueError):
    """A rule cannot run on these updates with this configuration."""


def check_updates(updates, finite: bool = True) -> np.ndarray:
    """The updates as a 2-D float array ``(clients, parameters)``; a clear error otherwise. ``finite=False``
    skips the NaN/inf scan (for rules whose output shows a non-finite input anyway)."""
    x = np.asarray(updates)
    if x.ndim == 1:
        raise AggregationError("updates must be (clients, parameters); got a single vector")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise AggregationError(f"updates must be a non-empty (clients, parameters) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if finite and not np.isfinite(x.sum(dtype=np.float64)) and not np.isfinite(x).all():  # one pass
        raise AggregationError("updates contain NaN or infinite values (drop those clients first)")
    return x


def bound_weights(counts, n: int, max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO) -> np.ndarray:
    """Normalised client weights from self-reported example ``counts``, each capped at ``max_weight_ratio``
    times the median count (``None`` trusts the counts as they are, as Flower does). ``counts=None``: equal."""
    if counts is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(counts, dtype=np.float64).reshape(-1)
    if len(w) != n:
        raise AggregationError(f"{len(w)} weights for {n} clients")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise AggregationError("client weights must be finite, non-negative and not all zero")
    if max_weight_ratio is not None:
        if max_weight_ratio < 1:
            raise AggregationError(f"max_weight_ratio must be >= 1, got {max_weight_ratio}")
        w = np.minimum(w, max_weight_ratio * np.median(w))
    return w / w.sum()


def column_chunks(x: np.ndarray, budget: int = 1 << 20, whole_below: int = 0) -> tuple[range, int]:
    """Column offsets splitting ``x`` into blocks of about ``budget`` values (bounded temporary memory);
    one block when ``x`` has fewer than ``whole_below`` values."""
    if x.size < whole_below:
        return range(0, x.shape[1], max(1, x.shape[1])), max(1, x.shape[1])
    step = max(1, budget // max(1, x.shape[0]))
    return range(0, x.shape[1], step), step


def by_column_blocks(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, budget: int = 1 << 22,
                     serial_below: int = 1 << 20) -> np.ndarray:
    """``fn`` (a column-wise reduction: an (n, k) block in, k values out) over blocks of columns of ``x`` of
    about ``budget`` values each (bounded temporary memory), on one thread per CPU: numpy's partition and
    sort release the GIL, so a median over 2 cores takes about 0.6 of the time. Inputs under
    ``serial_below`` values run in one call."""
    n, d = x.shape
    workers = os.cpu_count() or 1
    if x.size < serial_below or workers == 1:
        return np.asarray(fn(x))
    step = max(1, min(budget // max(n, 1), -(-d // workers)))
    out = np.empty(d, dtype=np.result_type(x.dtype, np.float32))

    def one(start: int) -> None:
        out[start:start + step] = fn(x[:, start:start + step])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(0, d, step)))
    return out


def matvec(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``w @ x`` in the dtype of ``x`` (a float64 ``w`` would silently copy a float32 ``x`` to float64)."""
    return np.asarray(w, dtype=x.dtype) @ x


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """Squared L2 distances between rows via the Gram matrix of the rows relative to the first row (which
    avoids most of the cancellation of ``|a|^2 + |b|^2 - 2ab`` on long, similar vectors such as model
    parameters), summed in float64 over column blocks so the temporary memory stays small."""
    n = x.shape[0]
    gram = np.zeros((n, n))
    starts, step = column_chunks(x, 1 << 22)
    for start in starts:
        block = x[:, start:start + step] - x[0, start:start + step]
        gram += block @ block.T
    sq = np.diag(gram)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0)


def distances_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """L2 distance of each row to ``center`` without an (n, d) temporary."""
    c = np.asarray(center, dtype=x.dtype)
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64) - 2 * (x @ c).astype(np.float64) + float(c @ c)
    return np.sqrt(np.maximum(sq, 0.0))


def distance_suspicion(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Each client's L2 distance to ``center`` divided by the median distance (1 = typical)."""
    d = distances_to(x, center)
    scale = np.median(d)
    return d / scale if scale > 0 else np.where(d > 0, np.inf, 0.0)


class Aggregator(BaseEstimator, ABC):
    """Base class. Subclasses set ``name`` and implement :meth:`_aggregate` and :meth:`max_malicious`.

    ``fit(updates, weights=None, **context)``: ``weights`` are self-reported example counts (bounded by
    :func:`bound_weights`); ``context`` carries what some rules need (FLTrust's ``server_update``).
    """

    name = "aggregator"
    #: whether ``rule(x + c) == rule(x) + c``: the strategy can then aggregate parameters, not updates
    translation_equivariant = False
    #: whether each output coordinate depends only on that coordinate (so layers can be aggregated apart)
    coordinatewise = False
    #: whether the rule is linear in the updates, so it can run over secure aggregation (see docs/federated.md)
    linear = False

    def __init__(self, num_malicious: int | None = None, max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO):
        self.num_malicious = num_malicious
        self.max_weight_ratio = max_weight_ratio

    @abstractmethod
    def max_malicious(self, n: int) -> int:
        """The most malicious clients among ``n`` this rule is designed to withstand."""

    def resolve_malicious(self, n: int) -> int:
        """``num_malicious`` checked against what the rule tolerates with ``n`` clients (``None``: the most)."""
        most = self.max_malicious(n)
        f = most if self.num_malicious is None else int(self.num_malicious)
        if f < 0:
            raise AggregationError(f"num_malicious must be >= 0, got {f}")
        if f > most:
            raise AggregationError(
                f"{self.name} cannot withstand {f} malicious clients out of {n} (at most {most}: "
                f"{self.requirement()}); use more clients or a rule with a higher breakdown point")
        return f

    def requirement(self) -> str:
        """The condition on n and f, in words (for error messages and docs)."""
        return ""

    def fit(self, updates, weights=None, *, suspicion: bool = True, **context) -> Aggregator:
        """Aggregate; ``suspicion=False`` skips ``suspicion_`` (two passes over the updates)."""
        # a coordinate-wise rule's output is non-finite where its input was (median propagates NaN): check that
        x = check_updates(updates, finite=not self.coordinatewise)
        w = bound_weights(weights, x.shape[0], self.max_weight_ratio)
        agg = np.asarray(self._aggregate(x, w, **context))
        if self.coordinatewise and not np.isfinite(agg).all():
            raise AggregationError("updates contain NaN or infinite values (drop those clients first)")
        self.aggregate_ = agg.astype(x.dtype, copy=False)
        if suspicion:
            self.suspicion_ = distance_suspicion(x, agg)
        return self

    def left_out(self, n: int) -> np.ndarray:
        """Which of the ``n`` clients of the last :meth:`fit` the rule itself gave no weight (a screening rule
        sets ``screened_``, the reason per client, ``""`` for kept); all False for rules that keep everyone."""
        screened = getattr(self, "screened_", None)
        if screened is None or len(screened) != n:
            return np.zeros(n, dtype=bool)
        return np.asarray(screened) != ""

    def __call__(self, updates, weights=None, **context) -> np.ndarray:
        return self.fit(updates, weights, **context).aggregate_

    @abstractmethod
    def _aggregate(self, x: np.ndarray, w: np.ndarray, **context) -> np.ndarray:
        """The rule itself on checked updates ``x`` (clients x parameters) and bounded weights ``w``."""

