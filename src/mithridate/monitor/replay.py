"""Replay a recorded stream (a CSV/Parquet table, row order = time) through the default monitor, as it
would have run live: the reference is a baseline profile (``mithridate baseline``), read once; the stream
is read in chunks, each row an event, encoded the baseline's way (robust z-scores, missing indicators,
one-hot levels).

>>> import tempfile, pathlib
>>> from mithridate.data import demo
>>> from mithridate.validate.profile import Baseline
>>> wine = demo("wine").features.sample(frac=1, random_state=0)  # the file is sorted by class: shuffle
>>> profile = Baseline(random_state=0).fit(demo("wine")).profile_
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> shifted = wine.assign(alcohol=wine["alcohol"] + 1.5)
>>> pd.concat([wine, shifted]).to_csv(folder / "stream.csv", index=False)
>>> result = replay(folder / "stream.csv", profile, ert=1000)
>>> result.first_alarm_row >= 178, "alcohol" in result.alarms[0].signal
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mithridate.data.io import read_table
from mithridate.errors import DataError
from mithridate.monitor.base import Alarm
from mithridate.monitor.cusum import CusumBank
from mithridate.validate.profile import Profile


@dataclass
class ReplayResult:
    """What a replay found: the alarms (``event`` = the stream's 0-based row), rows read, seconds spent
    (reading and monitoring; calibration apart), the ERT and the calibrated threshold."""

    alarms: list[Alarm]
    events: int
    seconds: float
    calibration_seconds: float
    ert: float
    threshold: float

    @property
    def first_alarm_row(self) -> int | None:
        return self.alarms[0].event if self.alarms else None

    def alarms_frame(self) -> pd.DataFrame:
        rows = [{"row": a.event, "detector": a.detector, "signal": a.signal, "statistic": a.statistic,
                 "threshold": a.threshold, "severity": a.severity} for a in self.alarms]
        return pd.DataFrame(rows, columns=["row", "detector", "signal", "statistic", "threshold", "severity"])

    def summary(self) -> dict:
        return {"first_alarm_row": self.first_alarm_row, "alarms": len(self.alarms), "events": self.events,
                "events_per_second": round(self.events / max(self.seconds, 1e-9)), "ert": self.ert,
                "threshold": self.threshold, "calibration_seconds": round(self.calibration_seconds, 3)}


def reference_matrix(profile: Profile) -> tuple[np.ndarray, list[str]]:
    """The baseline's sample, encoded the baseline's way, and the encoded feature names."""
    if profile.kind == "image":
        raise DataError("replay reads tables; this baseline is of images")
    sample = profile.prepared_sample()
    return profile.encoding.transform(sample.num, sample.cat), profile.encoding.names()


def replay(stream: str | Path, profile: Profile, ert: float = 1000, shift: float = 0.5, chunk_rows: int = 10_000,
           on_chunk: Callable[[int], None] | None = None, random_state: int = 0) -> ReplayResult:
    """Feed ``stream`` row by row to a :class:`CusumBank` fitted on ``profile`` and calibrated to ``ert``;
    ``on_chunk(rows_read)`` after each chunk (progress)."""
    reference, names = reference_matrix(profile)
    t0 = time.perf_counter()
    monitor = CusumBank(ert=ert, shift=shift, random_state=random_state).fit(reference, names)
    calibration = time.perf_counter() - t0
    alarms: list[Alarm] = []
    t0 = time.perf_counter()
    for frame in read_table(stream, Path(stream).name, chunksize=chunk_rows):
        prepared = profile.prepare(frame)
        if prepared.missing_columns:
            raise DataError(f"{stream}: the stream lacks the baseline's columns "
                            f"{', '.join(prepared.missing_columns[:5])}")
        alarms += monitor.update(profile.encoding.transform(prepared.num, prepared.cat))
        if on_chunk is not None:
            on_chunk(monitor.events_)
    return ReplayResult(alarms, monitor.events_, time.perf_counter() - t0, calibration, float(ert),
                        monitor.threshold_)


__all__ = ["ReplayResult", "reference_matrix", "replay"]
