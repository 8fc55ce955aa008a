"""The protocol every streaming monitor follows, the alarm it raises, and its state as JSON.

A monitor is configured in ``__init__`` (above all ``ert``: the expected number of events between false
alarms that the user accepts), learns from a verified reference in :meth:`Monitor.fit` (which calibrates
its threshold by simulation, :mod:`mithridate.monitor.calibrate`), then reads the live stream with
:meth:`Monitor.update`, a batch of events at a time, and returns the alarms that batch raised. Its whole
state (settings, what it learned, its running statistics, the events seen) is a JSON document
(:meth:`Monitor.state`, :func:`load_state`), so a restarted or second worker carries on where it stopped;
no pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

import numpy as np
from sklearn.base import BaseEstimator

from mithridate.data import atomic_path
from mithridate.errors import MithridateError


class MonitorError(MithridateError, ValueError):
    """A monitor cannot be built or fed as asked."""


@dataclass
class Alarm:
    """One alarm: the event (0-based, over everything the monitor has read) at which ``detector``'s
    ``statistic`` reached ``threshold``; ``signal`` says what moved, in words."""

    event: int
    detector: str
    signal: str
    statistic: float
    threshold: float
    severity: str = "alarm"

    def to_dict(self) -> dict:
        return asdict(self)


class Monitor(BaseEstimator, ABC):
    """Base class: subclasses set ``name`` and implement :meth:`fit`, :meth:`update` and the two halves of
    their state, :meth:`_learned` / :meth:`_restore`."""

    name = "monitor"

    @abstractmethod
    def fit(self, reference: np.ndarray, names: list[str] | None = None) -> Self:
        """Learn the reference (rows x features) and calibrate the alarm threshold to ``ert``."""

    @abstractmethod
    def update(self, batch: np.ndarray) -> list[Alarm]:
        """Read a batch of events (rows x features, in time order); the alarms it raised."""

    @abstractmethod
    def _learned(self) -> dict:
        """What fit learned and the running statistics, as JSON-safe values."""

    @abstractmethod
    def _restore(self, learned: dict) -> None:
        """The inverse of :meth:`_learned`."""

    @staticmethod
    def example(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A reference and a 600-event stream that shifts, of the kind this monitor reads (for the
        protocol check every registered monitor passes)."""
        return rng.normal(size=(500, 3)), rng.normal(size=(600, 3)) + np.array([0.0, 1.0, 0.0])

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise MonitorError(f"{self.name}: fit it on a reference before update")

    def state(self) -> dict:
        """Settings, learned values and running statistics: a JSON-safe dict."""
        self._check_fitted()
        return {"monitor": self.name, "params": self.get_params(), "learned": self._learned()}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state` as JSON (atomically: a crash leaves the old file)."""
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.state()))
        return path


def load_state(state: dict | str | Path) -> Monitor:
    """A monitor from :meth:`Monitor.state` (or a file :meth:`Monitor.save` wrote), ready to update."""
    from mithridate.monitor.registry import MONITORS

    if not isinstance(state, dict):
        try:
            state = json.loads(Path(state).read_text())
        except (OSError, ValueError) as error:
            raise MonitorError(f"cannot read a monitor state from {state}: {error}") from None
    name = state.get("monitor")
    if name not in MONITORS:
        raise MonitorError(f"unknown monitor {name!r} in the state (known: {', '.join(MONITORS)})")
    try:
        monitor = MONITORS[name](**state.get("params", {}))
        monitor._restore(state["learned"])
    except (KeyError, TypeError, ValueError) as error:
        raise MonitorError(f"the {name} state is incomplete or altered ({type(error).__name__}: {error})") from None
    return monitor


__all__ = ["Alarm", "Monitor", "MonitorError", "load_state"]
