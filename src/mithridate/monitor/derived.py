"""What the banks over derived features share: a :class:`~mithridate.monitor.cusum.CusumBank` (mean charts,
one threshold calibrated to ``ert``) run on features computed from each event, such as the products of
feature pairs (:mod:`.correlation`) or random Fourier features (:mod:`.kernel`)."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from mithridate.monitor.base import Alarm, Monitor, MonitorError, load_state
from mithridate.monitor.cusum import CusumBank


class DerivedBank(Monitor):
    """Subclasses compute the derived features (:meth:`_derive`, ``width_`` of them) and say in words what
    an alarm on one of them means (:meth:`_reads`)."""

    @staticmethod
    def example(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        stream = rng.normal(size=(600, 3))
        stream[:, 2] = 0.8 * stream[:, 0] + 0.6 * stream[:, 2]  # a joint change, the marginals unchanged
        return rng.normal(size=(500, 3)), stream

    @abstractmethod
    def _derive(self, x: np.ndarray) -> np.ndarray:
        """The derived features of events ``x`` (rows x ``width_``)."""

    @abstractmethod
    def _reads(self, signal: str) -> str:
        """What the inner bank's alarm ``signal`` ("mean of NAME up") means, in words."""

    def _fit_inner(self, reference: np.ndarray, names: list[str]) -> None:
        self.width_ = len(names)
        self.inner_ = CusumBank(ert=self.ert, shift=self.shift, cap=self.cap, tail=None, streams=self.streams,
                                random_state=self.random_state).fit(self._derive(reference), names)
        self.threshold_ = self.inner_.threshold_

    def update(self, batch: np.ndarray) -> list[Alarm]:
        self._check_fitted()
        x = np.asarray(batch, dtype=np.float64)
        x = x.reshape(1, -1) if x.ndim < 2 else x
        if x.ndim != 2 or (x.shape[1] != self.n_features_in_ and len(x)):
            raise MonitorError(f"events must have the reference's {self.n_features_in_} features, got shape "
                               f"{x.shape}")
        alarms = self.inner_.update(self._derive(x) if len(x) else np.zeros((0, self.width_)))
        for alarm in alarms:
            alarm.detector, alarm.signal = self.name, self._reads(alarm.signal)
        return alarms

    @property
    def events_(self) -> int:
        return self.inner_.events_

    def _inner_state(self) -> dict:
        return {"inner": self.inner_.state()}

    def _restore_inner(self, learned: dict) -> None:
        self.inner_ = load_state(learned["inner"])
        self.width_, self.threshold_ = self.inner_.n_features_in_, self.inner_.threshold_
