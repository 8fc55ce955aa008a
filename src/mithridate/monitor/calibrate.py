"""Calibration by simulation: the alarm threshold that gives a detector a chosen expected run length (ERT),
the mean number of events between false alarms on data like the reference.

A detector's statistic is run on ``streams`` null streams drawn from the reference (rows resampled with
replacement, so the columns keep their joint distribution and a bank of detectors is calibrated jointly,
not as if independent). For each stream the running maximum of the statistic is kept; the run length for
a threshold ``h`` is the first time that maximum reaches ``h``. Streams that never reach it within the
simulated length are censored, and the mean run length is the exponential maximum-likelihood estimate
(time observed over alarms seen), which stays unbiased when some streams outlast the simulation.

>>> rng = np.random.default_rng(0)
>>> paths = np.maximum.accumulate(rng.exponential(size=(50, 400)), axis=1)
>>> h = threshold_for_ert(paths, ert=100)
>>> 80 < mean_run_length(paths, h) < 125
True
"""

from __future__ import annotations

import numpy as np

from mithridate.errors import MithridateError


def first_passages(running_max: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Per stream: the first step (1-based) whose running maximum reaches ``threshold``, and whether it did."""
    reached = running_max >= threshold
    hit = reached[:, -1]
    return np.where(hit, reached.argmax(axis=1) + 1, running_max.shape[1]), hit


def mean_run_length(running_max: np.ndarray, threshold: float) -> float:
    """The mean run length at ``threshold``, censored streams included (exponential MLE)."""
    times, hit = first_passages(running_max, threshold)
    return float(times.sum() / max(int(hit.sum()), 1)) if hit.any() else float("inf")


def threshold_for_ert(running_max: np.ndarray, ert: float, tolerance: float = 0.01) -> float:
    """The threshold whose mean run length over the simulated streams is ``ert`` (bisection; the mean run
    length grows with the threshold)."""
    if ert < 1:
        raise MithridateError(f"ert must be at least 1 event, got {ert}")
    lo, hi = float(running_max[:, 0].min()), float(running_max[:, -1].max())
    if mean_run_length(running_max, hi) < ert:
        raise MithridateError(f"simulated streams of {running_max.shape[1]} events are too short for ert={ert}")
    for _ in range(60):
        mid = (lo + hi) / 2
        if mean_run_length(running_max, mid) < ert:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tolerance * max(abs(hi), 1e-12):
            break
    return hi


__all__ = ["first_passages", "mean_run_length", "threshold_for_ert"]
