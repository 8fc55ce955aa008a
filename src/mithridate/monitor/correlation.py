"""A bank of CUSUM charts on the products of standardised feature pairs: a change in how two features move
together, with each one's mean and spread unchanged.

The per-feature charts of :class:`~mithridate.monitor.cusum.CusumBank` cannot see such a change (measured
in ``benchmarks/monitor_streams.py``: a correlation going from 0 to 0.8 was found no sooner than a false
alarm). The mean of ``z_i * z_j`` over events is the correlation of features ``i`` and ``j``, so mean
charts on the products watch every correlation at once. This bank is exactly a :class:`CusumBank`
(mean charts only, one threshold for the whole bank, calibrated by simulation to ``ert``) over the
``d (d - 1) / 2`` products, so its cost grows with the square of the number of features: about 1,200
charts at 50 features.

>>> rng = np.random.default_rng(0)
>>> bank = CorrelationBank(ert=2000, streams=100, random_state=0).fit(rng.normal(size=(3000, 4)))
>>> x = rng.normal(size=(400, 4))
>>> x[:, 2] = 0.8 * x[:, 0] + 0.6 * x[:, 2]  # x0 and x2 now move together; each keeps its mean and spread
>>> bank.update(x)[0].signal
'correlation of x0 and x2 up'
"""

from __future__ import annotations

from typing import Self

import numpy as np

from mithridate.monitor.base import MonitorError
from mithridate.monitor.derived import DerivedBank


class CorrelationBank(DerivedBank):
    """Mean charts on every pairwise product of the standardised features (see the module docstring)."""

    name = "correlation"

    def __init__(self, ert: float = 1000, shift: float = 0.5, cap: float = 4.0, streams: int = 400,
                 random_state: int = 0):
        self.ert, self.shift, self.cap, self.streams, self.random_state = ert, shift, cap, streams, random_state

    def _derive(self, x: np.ndarray) -> np.ndarray:
        z = np.nan_to_num((x - self.mean_) / self.std_)
        return z[:, self.pairs_[0]] * z[:, self.pairs_[1]]

    def _reads(self, signal: str) -> str:
        pair, direction = signal.removeprefix("mean of ").rsplit(" ", 1)
        a, b = pair.split("*", 1)
        return f"correlation of {a} and {b} {direction}"

    def fit(self, reference: np.ndarray, names: list[str] | None = None) -> Self:
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] < 2:
            raise MonitorError(f"correlations need at least two features, got shape {x.shape}")
        names = [f"x{j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
        if len(names) != x.shape[1]:
            raise MonitorError(f"{len(names)} names for {x.shape[1]} features")
        self.n_features_in_ = x.shape[1]
        std = np.nanstd(x, axis=0)
        keep = np.flatnonzero(np.isfinite(std) & (std > 0))
        if len(keep) < 2:
            raise MonitorError("fewer than two features vary in the reference: no correlation to watch")
        self.mean_, self.std_ = np.nanmean(x, axis=0), np.where(std > 0, std, 1.0)
        i, j = np.triu_indices(len(keep), k=1)
        self.pairs_ = np.array([keep[i], keep[j]])
        self.names_ = names
        self._fit_inner(x, [f"{names[a]}*{names[b]}" for a, b in self.pairs_.T])
        return self

    def _learned(self) -> dict:
        return {"features": self.n_features_in_, "names": self.names_, "mean": self.mean_.tolist(),
                "std": self.std_.tolist(), "pairs": self.pairs_.tolist(), **self._inner_state()}

    def _restore(self, learned: dict) -> None:
        self.n_features_in_, self.names_ = int(learned["features"]), list(learned["names"])
        self.mean_, self.std_ = np.asarray(learned["mean"], float), np.asarray(learned["std"], float)
        self.pairs_ = np.asarray(learned["pairs"], dtype=np.int64)
        self._restore_inner(learned)


__all__ = ["CorrelationBank"]
