"""A bank of CUSUM charts, per feature a mean chart each way and a tail-rate chart each way, with thresholds
calibrated for the whole bank.

Each feature is standardised with the reference's mean and standard deviation; per event the chart for
feature ``j`` adds ``z_j - k`` to its upward sum and ``-z_j - k`` to its downward sum, each floored at zero
(Page 1954). ``k`` is half the ``shift`` the bank is tuned to (in standard deviations), which makes the
chart the quickest detector of that shift among those with the same false-alarm rate (Lorden 1971;
Moustakides 1986).

The **tail-rate** charts watch how often a feature leaves the reference's central range: above its
``1 - tail`` quantile (0.999) or below its ``tail`` quantile, or further out so that at least 10 reference
rows lie beyond (a sample's extremes say little about the population's). Each is a Bernoulli CUSUM
(Reynolds & Stoumbos 1999) tuned to a ``tail_ratio``-fold (10x) rise of that rate. They catch what a mean
chart, with its values capped, lets through: a rare, extreme value that becomes less rare. A backdoor
trigger stamped on 1% of the traffic is one.

The bank alarms when any chart reaches its family's threshold; then every sum restarts at zero.

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
>>> alarm.signal, alarm.event < 160
('mean of x1 up', True)
"""

from __future__ import annotations

from typing import Self

import numpy as np

from mithridate.monitor.base import Alarm, Monitor, MonitorError
from mithridate.monitor.calibrate import joint_thresholds


def bootstrap_references(z: np.ndarray, streams: int, tail: float | None, rng: np.random.Generator) -> dict:
    """What a reference of this size could have been, per simulated stream, each (streams, features): the
    mean and deviation of a bootstrap replicate of ``z`` (standardised), and tail thresholds whose
    population coverage is drawn from its exact law. The mass above the ``c+1``-th largest of ``n``
    values is Beta(c + 1, n - c), whatever the distribution. (A bootstrap cannot draw values beyond the
    sample's extremes, so it understates how wrong an extreme quantile can be, and long runs alarmed too
    soon.)"""
    n, d = z.shape
    shift, scale = np.empty((streams, d)), np.empty((streams, d))
    for b in range(streams):
        counts = np.bincount(rng.integers(n, size=n), minlength=n)
        shift[b] = counts @ z / n
        scale[b] = np.sqrt(np.maximum(counts @ (z - shift[b]) ** 2 / n, 0.0))
    out = {"shift": shift, "scale": np.where(scale > 0, scale, 1.0)}
    if tail:
        ordered = np.sort(z, axis=0)
        hi_ref, lo_ref = np.quantile(z, 1 - tail, axis=0), np.quantile(z, tail, axis=0)
        above, below = (z > hi_ref).sum(axis=0), (z < lo_ref).sum(axis=0)
        mass_above = rng.beta(above + 1, np.maximum(n - above, 1), size=(streams, d))
        mass_below = rng.beta(below + 1, np.maximum(n - below, 1), size=(streams, d))
        cols = np.arange(d)
        out["hi"] = ordered[np.clip(np.ceil((1 - mass_above) * n).astype(int) - 1, 0, n - 1), cols]
        out["lo"] = ordered[np.clip(np.floor(mass_below * n).astype(int), 0, n - 1), cols]
        # the Beta law is for continuous values: where the threshold sits among tied values (0/1 indicators,
        # counts) a drawn position lands on the tie and the rate jumps; there the reference rate stands
        tied_hi = ordered[np.maximum(n - above - 1, 0), cols] == ordered[np.maximum(n - above - 2, 0), cols]
        tied_lo = ordered[np.minimum(below, n - 1), cols] == ordered[np.minimum(below + 1, n - 1), cols]
        out["hi"][:, tied_hi] = hi_ref[tied_hi]
        out["lo"][:, tied_lo] = lo_ref[tied_lo]
    else:
        out["hi"], out["lo"] = np.full((streams, d), np.inf), np.full((streams, d), -np.inf)
    return out


def bank_paths(z: np.ndarray, k: float, cap: float, tails: dict | None, streams: int, length: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """Running maxima of the mean charts and (with ``tails``: the per-feature increments ``up``/``down``,
    each ``(hit, miss)``) of the tail-rate charts, on ``streams`` streams of ``length`` rows resampled from
    the standardised reference ``z``, each read as a bootstrap replicate of the reference would read it
    (its mean, deviation and quantiles), so the thresholds allow for the reference being a sample."""
    boot = bootstrap_references(z, streams, None if tails is None else tails["tail"], rng)
    d = z.shape[1]
    pos, neg = np.zeros((streams, d)), np.zeros((streams, d))
    up, down = np.zeros((streams, d)), np.zeros((streams, d))
    out = [np.empty((streams, length), dtype=np.float32) for _ in range(1 if tails is None else 2)]
    best = [np.zeros(streams) for _ in out]
    chunk = max(1, 4_000_000 // max(1, streams * d))
    for start in range(0, length, chunk):
        rows = rng.integers(len(z), size=(min(chunk, length - start), streams))
        for i, idx in enumerate(rows):
            raw = z[idx]
            x = np.clip((raw - boot["shift"]) / boot["scale"], -cap, cap)
            np.maximum(pos + x - k, 0.0, out=pos)
            np.maximum(neg - x - k, 0.0, out=neg)
            np.maximum(best[0], np.maximum(pos.max(axis=1), neg.max(axis=1)), out=best[0])
            out[0][:, start + i] = best[0]
            if tails is not None:
                np.maximum(up + np.where(raw > boot["hi"], *tails["up"]), 0.0, out=up)
                np.maximum(down + np.where(raw < boot["lo"], *tails["down"]), 0.0, out=down)
                np.maximum(best[1], np.maximum(up.max(axis=1), down.max(axis=1)), out=best[1])
                out[1][:, start + i] = best[1]
    return out


def bernoulli_increments(exceed: np.ndarray, n: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the log-likelihood-ratio steps of a Bernoulli CUSUM for a rate rising ``ratio``-fold
    from the reference's (smoothed so a rate never seen is not zero): on a hit and on a miss."""
    p0 = (exceed.sum(axis=0) + 0.5) / (n + 1)
    p1 = np.minimum(ratio * p0, 0.5)
    return np.log(p1 / p0), np.log((1 - p1) / (1 - p0))


class CusumBank(Monitor):
    """Per feature, mean charts tuned to a shift of ``shift`` standard deviations and tail-rate charts
    tuned to a ``tail_ratio``-fold rise of the rate beyond the reference's ``tail`` quantiles (``tail=None``:
    mean charts only); thresholds calibrated jointly on ``streams`` simulated streams so the bank's false
    alarms come every ``ert`` events on average."""

    name = "cusum"

    def __init__(self, ert: float = 1000, shift: float = 0.5, cap: float = 4.0, tail: float | None = 0.001,
                 tail_ratio: float = 10.0, streams: int = 400, random_state: int = 0):
        self.ert, self.shift, self.cap, self.tail, self.tail_ratio = ert, shift, cap, tail, tail_ratio
        self.streams, self.random_state = streams, random_state

    def fit(self, reference: np.ndarray, names: list[str] | None = None) -> Self:
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim != 2 or len(x) < 30:
            raise MonitorError(f"the reference must be at least 30 rows x features, got shape {x.shape}")
        if self.shift <= 0:
            raise MonitorError(f"shift must be > 0 standard deviations, got {self.shift}")
        if self.tail is not None and not (0 < self.tail < 0.5 and self.tail_ratio > 1):
            raise MonitorError("tail must be in (0, 0.5) and tail_ratio > 1")
        names = [f"x{j}" for j in range(x.shape[1])] if names is None else [str(n) for n in names]
        if len(names) != x.shape[1]:
            raise MonitorError(f"{len(names)} names for {x.shape[1]} features")
        self.n_features_in_ = x.shape[1]
        mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
        keep = np.isfinite(std) & (std > 0)
        if not keep.any():
            raise MonitorError("every reference feature is constant: nothing to monitor")
        self.names_ = [n for n, k in zip(names, keep, strict=True) if k]
        self.mean_, self.std_, self.columns_ = mean[keep], std[keep], np.flatnonzero(keep)
        z = np.nan_to_num((x[:, keep] - self.mean_) / self.std_)
        tails = None
        if self.tail is not None:
            # at least 50 reference rows beyond each quantile: a sample's extremes say little of the population's
            self.tail_ = min(0.25, max(self.tail, 50 / len(z)))
            self.lo_, self.hi_ = np.quantile(z, self.tail_, axis=0), np.quantile(z, 1 - self.tail_, axis=0)
            tails = {"tail": self.tail_, "up": bernoulli_increments(z > self.hi_, len(z), self.tail_ratio),
                     "down": bernoulli_increments(z < self.lo_, len(z), self.tail_ratio)}
            self.up_steps_, self.down_steps_ = np.array(tails["up"]), np.array(tails["down"])
        length = int(max(400, 4 * self.ert * (1 if tails is None else 2)))
        if self.streams * length * (1 if tails is None else 2) > 4e8:
            raise MonitorError(f"calibrating to ert={self.ert:g} with {self.streams} streams would simulate "
                               f"{self.streams * length:,} events: choose an ert of at most 100,000")
        paths = bank_paths(z, self.shift / 2, self.cap, tails, self.streams, length,
                           np.random.default_rng(self.random_state))
        self.thresholds_ = joint_thresholds(paths, self.ert)
        self.threshold_ = self.thresholds_[0]
        d = int(keep.sum())
        self.pos_, self.neg_, self.up_, self.down_, self.events_ = (*(np.zeros(d) for _ in range(4)), 0)
        return self

    def level(self) -> float:
        """The largest running statistic over its calibrated threshold now: an alarm at 1 (a gauge to plot)."""
        self._check_fitted()
        top = max(self.pos_.max(initial=0.0), self.neg_.max(initial=0.0)) / self.thresholds_[0]
        if self.tail is not None:
            top = max(top, self.up_.max(initial=0.0) / self.thresholds_[1],
                      self.down_.max(initial=0.0) / self.thresholds_[1])
        return float(top)

    def update(self, batch: np.ndarray) -> list[Alarm]:
        self._check_fitted()
        x = np.asarray(batch, dtype=np.float64)
        if x.ndim < 2:  # one feature: a list of events; several: one event
            x = x.reshape(-1, 1) if self.n_features_in_ == 1 else x.reshape(1, -1)
        if x.ndim != 2 or (x.shape[1] != self.n_features_in_ and len(x)):
            raise MonitorError(f"events must have the reference's {self.n_features_in_} features, got shape "
                               f"{x.shape}")
        raw = np.nan_to_num((x[:, self.columns_] - self.mean_) / self.std_)
        z = np.clip(raw, -self.cap, self.cap) - self.shift / 2  # the mean charts' steps, up (down: -z - shift)
        tails = self.tail is not None
        if tails:  # the tail charts' steps, per event and feature
            step_up = np.where(raw > self.hi_, *self.up_steps_)
            step_down = np.where(raw < self.lo_, *self.down_steps_)
        h_mean, h_tail = self.thresholds_[0], (self.thresholds_[1] if tails else np.inf)
        pos, neg, up, down, alarms = self.pos_, self.neg_, self.up_, self.down_, []
        k2 = self.shift
        for i, row in enumerate(z):
            np.maximum(pos + row, 0.0, out=pos)
            np.maximum(neg - row - k2, 0.0, out=neg)
            top = max(pos.max(), neg.max()) / h_mean
            if tails:
                np.maximum(up + step_up[i], 0.0, out=up)
                np.maximum(down + step_down[i], 0.0, out=down)
                top = max(top, up.max() / h_tail, down.max() / h_tail)
            if top >= 1:
                alarms.append(self._alarm(pos, neg, up, down, h_mean, h_tail, self.events_ + i))
                for sums in (pos, neg, up, down):
                    sums[:] = 0.0
        self.events_ += len(z)
        return alarms

    def _alarm(self, pos, neg, up, down, h_mean, h_tail, event) -> Alarm:
        """The alarm these sums raise: the chart furthest past its threshold names the signal."""
        over = [(pos.max() / h_mean, pos, "mean of {} up", h_mean),
                (neg.max() / h_mean, neg, "mean of {} down", h_mean)]
        if np.isfinite(h_tail):
            pct = f"{100 * (1 - self.tail_):.3g}"
            over += [(up.max() / h_tail, up, f"rate of {{}} above its reference {pct}th percentile up", h_tail),
                     (down.max() / h_tail, down, f"rate of {{}} below its reference "
                      f"{100 * self.tail_:.3g}th percentile up", h_tail)]
        _, sums, text, h = max(over, key=lambda o: o[0])
        j = int(sums.argmax())
        return Alarm(event, self.name, text.format(self.names_[j]), float(sums[j]), float(h))

    def _learned(self) -> dict:
        out = {"features": self.n_features_in_, "names": self.names_, "mean": self.mean_.tolist(),
               "std": self.std_.tolist(),
               "columns": self.columns_.tolist(), "thresholds": list(map(float, self.thresholds_)),
               "pos": self.pos_.tolist(), "neg": self.neg_.tolist(), "up": self.up_.tolist(),
               "down": self.down_.tolist(), "events": self.events_}
        if self.tail is not None:
            out |= {"tail": self.tail_, "lo": self.lo_.tolist(), "hi": self.hi_.tolist(),
                    "up_steps": self.up_steps_.tolist(),
                    "down_steps": self.down_steps_.tolist()}
        return out

    def _restore(self, learned: dict) -> None:
        self.n_features_in_ = int(learned["features"])
        self.names_ = list(learned["names"])
        self.mean_, self.std_ = np.asarray(learned["mean"], float), np.asarray(learned["std"], float)
        self.columns_ = np.asarray(learned["columns"], dtype=np.int64)
        self.thresholds_ = [float(h) for h in learned["thresholds"]]
        self.threshold_ = self.thresholds_[0]
        for key in ("pos", "neg", "up", "down"):
            setattr(self, f"{key}_", np.asarray(learned[key], float))
        self.events_ = int(learned["events"])
        if self.tail is not None:
            self.tail_ = float(learned["tail"])
            self.lo_, self.hi_ = np.asarray(learned["lo"], float), np.asarray(learned["hi"], float)
            self.up_steps_ = np.asarray(learned["up_steps"], float)
            self.down_steps_ = np.asarray(learned["down_steps"], float)


__all__ = ["CusumBank", "bank_paths", "bernoulli_increments", "bootstrap_references"]
