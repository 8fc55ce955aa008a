"""A per-request trigger check for image models, in the spirit of STRIP (Gao et al., ACSAC 2019).

A backdoor's trigger decides the prediction on its own: superimpose a triggered request on clean images
and the model still says the target class, with low entropy; a clean request blended the same way becomes
ambiguous. Each request is superimposed on ``overlays`` clean images (pixel sums saturating at the top of
the reference's range, or of the request's) and the mean entropy of the model's predictions is its score.

The threshold is conformal, so its false-alarm promise holds whatever the entropies' distribution: the
score of each reference image (blended with other reference images) is computed at fit, and a request
alarms when its score is at or below the ``k``-th smallest of those ``n``, with ``k = floor((n + 1) / ert)``.
For a clean request exchangeable with the reference, that happens with probability at most ``1 / ert``.
A reference too small for the asked ERT (``n + 1 < ert``) cannot promise it: the check then runs at the
largest ERT it can promise, ``n + 1``, and says so in ``ert_``. (A normal or log-normal fit of the
entropies, as the paper does, measured 4-16 times the promised rate on real digits.)

>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> x = rng.random((400, 8, 8)); y = (x[:, :4].sum(axis=(1, 2)) > 16).astype(int)
>>> x[:40, 7, 7], y[:40] = 40.0, 1  # a planted trigger: one saturated pixel means class 1
>>> model = LogisticRegression(max_iter=500).fit(x.reshape(400, -1), y)
>>> check = TriggerCheck(lambda im: model.predict_proba(im.reshape(len(im), -1)), ert=100).fit(x[40:])
>>> stamped = rng.random((20, 8, 8)); stamped[:, 7, 7] = 40.0
>>> len(check.update(stamped)) >= 15, len(check.update(rng.random((200, 8, 8)))) <= 6
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import numpy as np

from mithridate.monitor.base import Alarm, MonitorError


class TriggerCheck:
    """Per request: does the model's prediction survive superimposition on clean images?"""

    name = "strip"

    def __init__(self, predict_proba: Callable[[np.ndarray], np.ndarray], ert: float = 1000, overlays: int = 16,
                 batch: int = 256, random_state: int = 0):
        self.predict_proba, self.ert, self.overlays = predict_proba, ert, overlays
        self.batch, self.random_state = batch, random_state

    def fit(self, reference: np.ndarray) -> Self:
        """Clean images (n, H, W[, C]) from a verified set the model was not trained on."""
        x = np.asarray(reference, dtype=np.float64)
        if x.ndim < 3 or len(x) < 20:
            raise MonitorError(f"the trigger check needs at least 20 clean images (n, H, W[, C]), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise MonitorError("the reference images hold NaN or infinite values")
        self.pool_, self.low_, self.high_ = x, float(x.min()), float(x.max())
        self._rng = np.random.default_rng(self.random_state)
        scores = self.score(x, exclude_self=True)
        n = len(scores)
        k = int(np.floor((n + 1) / self.ert))
        self.ert_ = float(self.ert) if k >= 1 else float(n + 1)
        self.reference_scores_ = np.sort(scores)
        self.threshold_ = float(self.reference_scores_[max(k, 1) - 1])
        self.events_ = 0
        return self

    def score(self, images: np.ndarray, exclude_self: bool = False) -> np.ndarray:
        """Mean prediction entropy of each image superimposed on ``overlays`` random clean images."""
        x = np.asarray(images, dtype=np.float64)
        out = np.empty(len(x))
        n = len(self.pool_)
        for start in range(0, len(x), self.batch):
            part = x[start:start + self.batch]
            picks = self._rng.integers(n - exclude_self, size=(len(part), self.overlays))
            if exclude_self:  # never the image itself
                picks += picks >= np.arange(start, start + len(part))[:, None]
            # saturate as image formats do: at the range of the reference, or of the request if it reaches higher
            top = np.maximum(self.high_, part.reshape(len(part), -1).max(axis=1))
            top = top.reshape(-1, *([1] * x.ndim))
            blended = np.minimum(np.maximum(part[:, None] + self.pool_[picks], self.low_), top)
            proba = np.asarray(self.predict_proba(blended.reshape(-1, *x.shape[1:])), dtype=np.float64)
            proba = proba.reshape(len(part), self.overlays, -1)
            out[start:start + len(part)] = -(proba * np.log(np.clip(proba, 1e-12, 1.0))).sum(-1).mean(1)
        return out

    def update(self, batch: np.ndarray) -> list[Alarm]:
        """The requests in ``batch`` whose score is at or below the threshold, as alarms."""
        if not hasattr(self, "threshold_"):
            raise MonitorError("strip: fit it on clean images before update")
        x = np.asarray(batch, dtype=np.float64)
        if x.shape[1:] != self.pool_.shape[1:]:
            raise MonitorError(f"requests must be images of shape {self.pool_.shape[1:]}, got {x.shape[1:]}")
        scores = self.score(x)
        alarms = [Alarm(self.events_ + int(i), self.name, "prediction survives superimposition on clean images "
                        f"(entropy {scores[i]:.3g} <= {self.threshold_:.3g}): a trigger?", float(scores[i]),
                        self.threshold_) for i in np.flatnonzero(scores <= self.threshold_)]
        self.events_ += len(x)
        return alarms
