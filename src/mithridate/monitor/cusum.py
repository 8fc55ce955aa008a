"""A bank of two-sided CUSUM charts, one per feature, with one threshold calibrated for the whole bank.

Each feature is standardised with the reference's mean and standard deviation; per event the chart for
feature ``j`` adds ``z_j - k`` to its upward sum and ``-z_j - k`` to its downward sum, each floored at zero
(Page 1954). ``k`` is half the ``shift`` the bank is tuned to (in standard deviations), which makes the
chart the quickest detector of that shift among those with the same false-alarm rate (Lorden 1971;
Moustakides 1986). The bank alarms when any sum reaches the threshold; then every sum restarts at zero.

The threshold is not a per-test significance level: it is set by simulation
(:mod:`mithridate.monitor.calibrate`) so that the **bank** raises a false alarm every ``ert`` events on
average, on streams resampled from the reference, which keeps the features' dependence. (A per-feature
threshold at the same level would alarm about as often as the number of features times more.) Each
simulated stream is read with the mean and deviation of a bootstrap replicate of the reference, so the
calibration allows for the reference being a sample (Gandy & Kvaloy 2013): a small reference gets a higher
threshold rather than false alarms from its own estimation error.

Standardised values are capped at ``cap`` (4) standard deviations, so one extreme event (a rare level, a
heavy tail) cannot raise an alarm alone. Missing values count as the reference mean: no evidence either
way. Constant reference features are left out.

Assumes the events of a stream are independent given the data's distribution; a stream whose rows are
autocorrelated (sessions, sorted exports) alarms sooner than ``ert`` says.

>>> rng = np.random.default_rng(0)
>>> bank = CusumBank(ert=2000, streams=100, random_state=0).fit(rng.normal(size=(2000, 3)))
>>> bank.update(rng.normal(size=(100, 3)))
[]
>>> alarm = bank.update(rng.normal(size=(200, 3)) + [0, 1, 0])[0]
>>> alarm.signal, alarm.event < 140
('mean of x1 up', True)
"""

from __future__ import annotations

from typing import Self

import numpy as np

from mithridate.monitor.base import Alarm, Monitor, MonitorError
from mithridate.monitor.calibrate import threshold_for_ert


def estimation_errors(z: np.ndarray, streams: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per simulated stream, the mean and standard deviation a reference of this size could have had: those
    of a bootstrap replicate of ``z`` (standardised), shape (streams, features) each."""
    shift, scale = np.empty((streams, z.shape[1])), np.empty((streams, z.shape[1]))
    for b in range(streams):
        replicate = z[rng.integers(len(z), size=len(z))]
        shift[b], scale[b] = replicate.mean(axis=0), replicate.std(axis=0)
    return shift, np.where(scale > 0, scale, 1.0)


def cusum_paths(z: np.ndarray, k: float, streams: int, length: int, rng: np.random.Generator,
                cap: float = np.inf) -> np.ndarray:
    """Running maximum of the bank's statistic on ``streams`` streams of ``length`` rows resampled from the
    standardised reference ``z``: shape (streams, length), float32. Each stream is standardised with the
    mean and deviation of its own bootstrap replicate of the reference, so the threshold allows for the
    reference being a finite sample (the live mean is never exactly the reference's)."""
    shift, scale = estimation_errors(z, streams, rng)
    pos = np.zeros((streams, z.shape[1]))
    neg = np.zeros((streams, z.shape[1]))
    out = np.empty((streams, length), dtype=np.float32)
    best = np.zeros(streams)
    chunk = max(1, 4_000_000 // max(1, streams * z.shape[1]))
    for start in range(0, length, chunk):
        rows = rng.integers(len(z), size=(min(chunk, length - start), streams))
        for i, idx in enumerate(rows):
            x = np.clip((z[idx] - shift) / scale, -cap, cap)
            np.maximum(pos + x - k, 0.0, out=pos)
            np.maximum(neg - x - k, 0.0, out=neg)
            np.maximum(best, np.maximum(pos.max(axis=1), neg.max(axis=1)), out=best)
            out[:, start + i] = best
    return out


class CusumBank(Monitor):
    """Per-feature two-sided CUSUM charts tuned to a mean shift of ``shift`` standard deviations, one
    threshold calibrated on ``streams`` simulated streams so the bank's false alarms come every ``ert``
    events on average."""

    name = "cusum"

    def __init__(self, ert: float = 1000, shift: float = 0.5, cap: float = 4.0, streams: int = 200,
                 random_state: int = 0):
        self.ert, self.shift, self.cap, self.streams, self.random_state = ert, shift, cap, streams, random_state

    def fit(self, reference: np.ndarray, names: list[str] | None = None) -> Self:
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or len(x) < 30:
            raise MonitorError(f"the reference must be at least 30 rows x features, got shape {x.shape}")
        if self.shift <= 0:
            raise MonitorError(f"shift must be > 0 standard deviations, got {self.shift}")
        names = [f"x{j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
        if len(names) != x.shape[1]:
            raise MonitorError(f"{len(names)} names for {x.shape[1]} features")
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        keep = np.isfinite(std) & (std > 0)
        if not keep.any():
            raise MonitorError("every reference feature is constant: nothing to monitor")
        self.names_ = [n for n, k in zip(names, keep, strict=True) if k]
        self.mean_, self.std_, self.columns_ = mean[keep], std[keep], np.flatnonzero(keep)
        z = np.nan_to_num((x[:, keep] - self.mean_) / self.std_)
        length = int(max(200, 4 * self.ert))
        paths = cusum_paths(z, self.shift / 2, self.streams, length, np.random.default_rng(self.random_state),
                            self.cap)
        self.threshold_ = threshold_for_ert(paths, self.ert)
        self.pos_, self.neg_, self.events_ = np.zeros(len(keep.nonzero()[0])), np.zeros(int(keep.sum())), 0
        return self

    def update(self, batch: np.ndarray) -> list[Alarm]:
        self._check_fitted()
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != len(self.columns_) and x.shape[1] <= self.columns_.max():
            raise MonitorError(f"events have {x.shape[1]} features; the reference had more")
        z = np.clip(np.nan_to_num((x[:, self.columns_] - self.mean_) / self.std_), -self.cap, self.cap)
        k, h, alarms = self.shift / 2, self.threshold_, []
        pos, neg = self.pos_, self.neg_
        for i, row in enumerate(z):
            np.maximum(pos + row - k, 0.0, out=pos)
            np.maximum(neg - row - k, 0.0, out=neg)
            top_pos, top_neg = pos.max(), neg.max()
            if max(top_pos, top_neg) >= h:
                up = top_pos >= top_neg
                j = int(pos.argmax() if up else neg.argmax())
                alarms.append(Alarm(self.events_ + i, self.name, f"mean of {self.names_[j]} {'up' if up else 'down'}",
                                    float(max(top_pos, top_neg)), float(h)))
                pos[:] = 0.0
                neg[:] = 0.0
        self.events_ += len(z)
        return alarms

    def _learned(self) -> dict:
        return {"names": self.names_, "mean": self.mean_.tolist(), "std": self.std_.tolist(),
                "columns": self.columns_.tolist(), "threshold": self.threshold_, "pos": self.pos_.tolist(),
                "neg": self.neg_.tolist(), "events": self.events_}

    def _restore(self, learned: dict) -> None:
        self.names_ = list(learned["names"])
        self.mean_, self.std_ = np.asarray(learned["mean"], float), np.asarray(learned["std"], float)
        self.columns_ = np.asarray(learned["columns"], dtype=np.int64)
        self.threshold_ = float(learned["threshold"])
        self.pos_, self.neg_ = np.asarray(learned["pos"], float), np.asarray(learned["neg"], float)
        self.events_ = int(learned["events"])


__all__ = ["CusumBank", "cusum_paths"]
