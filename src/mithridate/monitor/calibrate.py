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
    """Per stream: the first step (1-based) whose running maximum reaches ``threshold``, and whether it did
    (each row is non-decreasing, so a binary search per stream finds it)."""
    length = running_max.shape[1]
    times = np.array([np.searchsorted(row, threshold, side="left") for row in running_max]) + 1
    hit = times <= length
    return np.minimum(times, length), hit


def censored_mean(times: np.ndarray, hit: np.ndarray) -> float:
    """The mean run length from first-alarm ``times`` of which only those with ``hit`` alarmed (the others
    are where the stream ended): time observed over alarms seen, the exponential maximum-likelihood
    estimate, which stays unbiased when some streams outlast the simulation.

    >>> censored_mean(np.array([10, 30, 100]), np.array([True, True, False]))
    70.0
    """
    hits = int(np.sum(hit))
    return float(np.sum(times) / hits) if hits else float("inf")


def mean_run_length(running_max: np.ndarray, threshold: float) -> float:
    """The mean run length at ``threshold``, censored streams included (:func:`censored_mean`)."""
    return censored_mean(*first_passages(running_max, threshold))


def threshold_for_ert(running_max: np.ndarray, ert: float, tolerance: float = 0.005) -> float:
    """The threshold whose mean run length over the simulated streams is ``ert`` (bisection; the mean run
    length grows with the threshold)."""
    if ert < 1:
        raise MithridateError(f"ert must be at least 1 event, got {ert}")
    # just above the largest value simulated: no stream alarms there (a chart that never moves, such as a
    # tail chart over 0/1 columns, gets a threshold it never reaches)
    lo, hi = float(running_max[:, 0].min()), float(np.nextafter(running_max[:, -1].max(), np.inf))
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


def joint_thresholds(paths: list[np.ndarray], ert: float) -> list[float]:
    """One threshold per detector of a bank, run on the same simulated streams, such that the bank (an alarm
    when any detector reaches its threshold) has mean run length ``ert``. Each detector gets the threshold
    of the same marginal run length ``c * ert``, ``c`` found by bisection between 1 and the number of
    detectors: the dependence between detectors is kept, not assumed away.

    >>> rng = np.random.default_rng(1)
    >>> a = np.maximum.accumulate(rng.exponential(size=(200, 3000)), axis=1)
    >>> b = np.maximum.accumulate(rng.exponential(size=(200, 3000)), axis=1)
    >>> ha, hb = joint_thresholds([a, b], ert=100)
    >>> joint = np.minimum(first_passages(a, ha)[0], first_passages(b, hb)[0])
    >>> bool(85 < joint.mean() < 118)
    True
    """
    if len(paths) == 1:
        return [threshold_for_ert(paths[0], ert)]

    def bank(c: float) -> tuple[list[float], float]:
        hs = [threshold_for_ert(p, c * ert) for p in paths]
        passages = [first_passages(p, h) for p, h in zip(paths, hs, strict=True)]
        return hs, censored_mean(np.min([t for t, _ in passages], axis=0), np.any([h for _, h in passages], axis=0))

    lo, hi = 1.0, float(len(paths))
    for _ in range(30):
        mid = (lo + hi) / 2
        if bank(mid)[1] < ert:
            lo = mid
        else:
            hi = mid
        if hi - lo < 0.005:
            break
    return bank(hi)[0]


__all__ = ["censored_mean", "first_passages", "joint_thresholds", "mean_run_length", "threshold_for_ert"]
