"""Canary inputs: a fixed set of requests whose answers the known-good model gave, asked again of the model
that serves now. A model swapped, re-trained on poisoned data or altered in place answers some of them
differently; the check says which, before users see it.

Canaries are chosen by the team: verified examples of each class, hard cases near the decision boundary
(where a poisoned model moves first), and probes stamped with suspected triggers. The recorded answers
(probabilities) are the reference; a canary alarms when its predicted class changes or its probabilities
move by more than ``tolerance`` (0 for a deterministic model served as validated). The state is plain JSON.

>>> from sklearn.linear_model import LogisticRegression
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 4)); y = (x[:, 0] > 0).astype(int)
>>> good = LogisticRegression().fit(x, y)
>>> check = CanaryCheck(tolerance=1e-9).fit(x[:20], good.predict_proba(x[:20]))
>>> check.check(good.predict_proba(x[:20]))
[]
>>> flipped = LogisticRegression().fit(x, np.where(x[:, 1] > 1.5, 1, y))  # a few labels poisoned
>>> len(check.check(flipped.predict_proba(x[:20]))) > 0
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np

from mithridate.data import atomic_path
from mithridate.monitor.base import Alarm, MonitorError


class CanaryCheck:
    """Answers to fixed canary inputs, recorded from the known-good model, compared with the serving one's."""

    name = "canary"

    def __init__(self, tolerance: float = 1e-6):
        self.tolerance = tolerance

    def fit(self, canaries: np.ndarray, expected: np.ndarray, names: list[str] | None = None) -> Self:
        """``canaries`` (kept so they can be asked again) and the known-good model's probabilities for them."""
        x, p = np.asarray(canaries), np.asarray(expected, dtype=np.float64)
        if len(x) == 0 or p.ndim != 2 or len(p) != len(x):
            raise MonitorError(f"give one row of probabilities per canary: {len(x)} canaries, probabilities "
                               f"of shape {p.shape}")
        self.canaries_, self.expected_ = x, p
        self.names_ = list(names) if names is not None else [f"canary {i}" for i in range(len(x))]
        self.checks_ = 0
        return self

    def check(self, answered: np.ndarray) -> list[Alarm]:
        """The serving model's probabilities for :attr:`canaries_`; an alarm per canary that moved."""
        if not hasattr(self, "expected_"):
            raise MonitorError("canary: fit it on the known-good model's answers first")
        p = np.asarray(answered, dtype=np.float64)
        if p.shape != self.expected_.shape:
            raise MonitorError(f"expected probabilities of shape {self.expected_.shape}, got {p.shape}")
        moved = np.abs(p - self.expected_).max(axis=1)
        was, now = self.expected_.argmax(axis=1), p.argmax(axis=1)
        alarms = []
        for i in np.flatnonzero((moved > self.tolerance) | (was != now)):
            what = (f"class {was[i]} -> {now[i]}" if was[i] != now[i] else f"probabilities moved by {moved[i]:.3g}")
            alarms.append(Alarm(self.checks_, self.name, f"{self.names_[i]}: {what}", float(moved[i]),
                                self.tolerance, severity="alarm" if was[i] != now[i] else "warning"))
        self.checks_ += 1
        return alarms

    def save(self, path: str | Path) -> Path:
        """The canaries and their recorded answers as JSON (never a pickle)."""
        path = Path(path)
        body = {"monitor": self.name, "tolerance": self.tolerance, "canaries": self.canaries_.tolist(),
                "expected": self.expected_.tolist(), "names": self.names_}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(body))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CanaryCheck:
        try:
            body = json.loads(Path(path).read_text())
            return cls(body["tolerance"]).fit(np.asarray(body["canaries"]), np.asarray(body["expected"]),
                                              body["names"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MonitorError(f"{path}: not a canary file ({type(exc).__name__}: {exc})") from None
