"""The model's error rate as labels arrive: a Bernoulli CUSUM on "this prediction was wrong".

Inputs can look unchanged while what they mean has moved (concept drift, or poisoned training that only
shows on some inputs); then only the error rate says so, once the true labels come in. The reference is
the model's errors on a verified hold-out (never its training data, which it fits better than new data):
``n`` events, ``e`` of them wrong. The chart adds ``log(p1/p0)`` per error and ``log((1-p1)/(1-p0))``
per correct prediction, floored at zero (Reynolds & Stoumbos 1999), tuned to a rise of ``rise`` (5
points) above the reference rate ``p0``. It alarms when the sum reaches a threshold calibrated by
simulation to ``ert`` events between false alarms.

The reference rate is an estimate, and a true rate only a little higher makes a chart tuned to small rises
alarm far sooner. So by default the simulated streams err at the ``guarantee`` (90%) quantile of the rate's
posterior, Beta(e + 1, n - e + 1): with that probability over the hold-out's sampling, false alarms come no
more often than every ``ert`` events (guaranteed conditional performance, Gandy & Kvaloy 2013). Its run
lengths are long on average (+88% to +226% averaged over 40 hold-outs at ERT 1,000, more at 10,000).
``guarantee=None`` instead draws each stream's rate from the posterior, so the threshold gives ``ert``
averaged over the hold-outs a verified sample of that size could have been (the promise the input monitors
make; within 15% of ``ert`` in 5 of 6 measured cells, ``benchmarks/monitor_concept.py``). That average is
carried by the hold-outs that read the rate low, so with few errors in the hold-out the typical run is much
shorter: a 400-row hold-out with 3 disagreements alarmed at event 58 of an ERT of 3,000. Hence the default.

>>> rng = np.random.default_rng(0)
>>> chart = ErrorRate(ert=2000, random_state=0).fit(rng.random(2000) < 0.1)
>>> chart.update(rng.random(500) < 0.1)
[]
>>> alarm = chart.update(rng.random(500) < 0.25)[0]
>>> alarm.signal, 500 <= alarm.event < 700
('error rate up (reference 10.5%)', True)
"""

from __future__ import annotations

from typing import Self

import numpy as np
from scipy.stats import beta

from mithridate.monitor.base import Alarm, Monitor, MonitorError
from mithridate.monitor.calibrate import threshold_for_ert


def error_paths(rate: float | np.ndarray, steps: tuple[float, float], streams: int, length: int,
                rng: np.random.Generator) -> np.ndarray:
    """Running maximum of the chart on ``streams`` simulated streams erring at ``rate`` (one rate, or one
    per stream): shape (streams, length), float32."""
    hit, miss = steps
    out = np.empty((streams, length), dtype=np.float32)
    s, best = np.zeros(streams), np.zeros(streams)
    chunk = 4096
    for start in range(0, length, chunk):
        wrong = rng.random((min(chunk, length - start), streams)) < rate
        for i, w in enumerate(wrong):
            np.maximum(s + np.where(w, hit, miss), 0.0, out=s)
            np.maximum(best, s, out=best)
            out[:, start + i] = best
    return out


class ErrorRate(Monitor):
    """A Bernoulli CUSUM on the 0/1 error indicator, tuned to a rise of ``rise`` over the reference rate
    and calibrated so that, for 90% of hold-outs (``guarantee``), false alarms come no more often than every
    ``ert`` events; ``guarantee=None``: every ``ert`` events averaged over hold-outs."""

    name = "error_rate"

    def __init__(self, ert: float = 1000, rise: float = 0.05, guarantee: float | None = 0.9, streams: int = 400,
                 random_state: int = 0):
        self.ert, self.rise, self.guarantee = ert, rise, guarantee
        self.streams, self.random_state = streams, random_state

    @staticmethod
    def example(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return (rng.random((500, 1)) < 0.1).astype(float), (rng.random((600, 1)) < 0.3).astype(float)

    @staticmethod
    def _errors(values) -> np.ndarray:
        e = np.asarray(values, dtype=np.float64)
        e = e.reshape(-1, 1) if e.ndim < 2 else e
        if e.ndim != 2 or e.shape[1] != 1 or not np.isin(e, (0.0, 1.0)).all():
            raise MonitorError("error_rate reads one column of 0/1 values: 1 where the prediction was wrong")
        return e[:, 0]

    def fit(self, reference, names: list[str] | None = None) -> Self:
        e = self._errors(reference)
        if len(e) < 30:
            raise MonitorError(f"the reference must hold at least 30 predictions, got {len(e)}")
        if not 0 < self.rise < 1:
            raise MonitorError(f"rise must be in (0, 1), got {self.rise}")
        self.n_, self.wrong_ = len(e), int(e.sum())
        if self.wrong_ > 0.9 * self.n_:
            raise MonitorError(f"the reference is wrong {self.wrong_ / self.n_:.0%} of the time: pass 1 where the "
                               "prediction was wrong, not where it was right")
        p0 = (self.wrong_ + 0.5) / (self.n_ + 1)
        p1 = min(p0 + self.rise, 0.999)
        self.rate_ = self.wrong_ / self.n_
        self.steps_ = (float(np.log(p1 / p0)), float(np.log((1 - p1) / (1 - p0))))
        if self.guarantee is not None and not 0 < self.guarantee < 1:
            raise MonitorError(f"guarantee must be in (0, 1) or None, got {self.guarantee}")
        # streams at rates below the reference's run long: cut at 4 x ERT, their tail is guessed too short
        length = int(max(400, (4 if self.guarantee else 10) * self.ert))
        if self.streams * length > 4e8:
            if self.streams * 400 > 4e8:
                raise MonitorError(f"streams={self.streams} is too many to simulate here: choose fewer")
            raise MonitorError(f"ert={self.ert:g} is too long to calibrate here: choose at most "
                               f"{int(4e8 // self.streams // (4 if self.guarantee else 10)):,}")
        rng = np.random.default_rng(self.random_state)
        posterior = beta(self.wrong_ + 1, self.n_ - self.wrong_ + 1)
        rates = (posterior.rvs(self.streams, random_state=rng) if self.guarantee is None
                 else float(posterior.ppf(self.guarantee)))
        paths = error_paths(rates, self.steps_, self.streams, length, rng)
        self.threshold_ = threshold_for_ert(paths, self.ert)
        self.sum_, self.events_ = 0.0, 0
        return self

    def update(self, batch) -> list[Alarm]:
        self._check_fitted()
        e = self._errors(batch)
        steps = np.where(e > 0, *self.steps_)
        alarms, s = [], self.sum_
        for i, step in enumerate(steps):
            s = max(0.0, s + step)
            if s >= self.threshold_:
                alarms.append(Alarm(self.events_ + i, self.name, f"error rate up (reference {self.rate_:.1%})",
                                    float(s), float(self.threshold_)))
                s = 0.0
        self.sum_, self.events_ = s, self.events_ + len(e)
        return alarms

    def _learned(self) -> dict:
        return {"n": self.n_, "wrong": self.wrong_, "rate": self.rate_, "steps": list(self.steps_),
                "threshold": self.threshold_, "sum": self.sum_, "events": self.events_}

    def _restore(self, learned: dict) -> None:
        self.n_, self.wrong_, self.rate_ = int(learned["n"]), int(learned["wrong"]), float(learned["rate"])
        self.steps_ = tuple(float(v) for v in learned["steps"])
        self.threshold_, self.sum_ = float(learned["threshold"]), float(learned["sum"])
        self.events_ = int(learned["events"])


__all__ = ["ErrorRate", "error_paths"]
