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
from mithridate.monitor.error_rate import ErrorRate
from mithridate.monitor.kernel import KernelBank
from mithridate.validate.encoding import label_text
from mithridate.validate.profile import LABEL, Profile


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


def encode(profile: Profile, frame: pd.DataFrame, source: str = "the stream") -> np.ndarray:
    """Rows of a table encoded the baseline's way (the columns the reference matrix has, in its order)."""
    prepared = profile.prepare(frame)
    if prepared.missing_columns:
        raise DataError(f"{source}: it lacks the baseline's columns {', '.join(prepared.missing_columns[:5])}")
    return profile.encoding.transform(prepared.num, prepared.cat)


def reference_errors(profile: Profile, prediction: str) -> np.ndarray:
    """1 where the baseline sample's ``prediction`` column differs from its label, else 0."""
    if profile.label_name is None or LABEL not in profile.sample:
        raise DataError("the baseline has no label column: make it with --label to watch the error rate")
    truth = np.asarray(profile.classes, dtype=object)[profile.sample[LABEL].to_numpy(dtype=np.int64)]
    return (label_text(sample_column(profile, prediction)) != label_text(truth)).astype(float)


def reference_disagreement(profile: Profile, prediction: str, agreement: str) -> np.ndarray:
    """1 where the baseline sample's served prediction differs from the trusted reference model's, else 0."""
    return (label_text(sample_column(profile, prediction)) != label_text(sample_column(profile, agreement))
            ).astype(float)


def sample_column(profile: Profile, column: str) -> pd.Series:
    if column not in profile.sample:
        raise DataError(f"the baseline has no column {column!r}: include the model's predictions in the data "
                        "the baseline is made from")
    return profile.sample[column]


def replay(stream: str | Path, profile: Profile, ert: float = 1000, shift: float = 0.5, chunk_rows: int = 10_000,
           prediction: str | None = None, on_chunk: Callable[[int], None] | None = None,
           random_state: int = 0, label: str | None = None, agreement: str | None = None,
           kernel: bool = False) -> ReplayResult:
    """Feed ``stream`` row by row to a :class:`CusumBank` fitted on ``profile``; with ``prediction`` (the
    column holding the model's predicted class, in the baseline and the stream) also to an
    :class:`ErrorRate` chart, which reads the rows whose label has arrived (column ``label``, by default
    the baseline's label column; non-empty). With ``agreement`` (the column holding a trusted reference
    model's predicted class), a third chart watches how often the served prediction disagrees with it, on
    every row: a backdoor firing on triggered traffic shows there before any label arrives. With ``kernel``,
    a :class:`KernelBank` also reads the encoded rows (a change of their joint distribution). With ``m``
    monitors each is calibrated to ``m`` times ``ert``, so together they alarm falsely no more often than every
    ``ert`` events. ``on_chunk(rows_read)`` after each chunk (progress)."""
    if label is not None and not prediction:
        raise DataError("a label column is read only with a prediction column (the error-rate chart)")
    if agreement is not None and not prediction:
        raise DataError("--agreement compares a reference model's predictions with --prediction: give both")
    reference, names = reference_matrix(profile)
    t0 = time.perf_counter()
    each = ert * (1 + bool(prediction) + bool(agreement) + bool(kernel))
    monitor = CusumBank(ert=each, shift=shift, random_state=random_state).fit(reference, names)
    joint = KernelBank(ert=each, shift=shift, random_state=random_state).fit(reference) if kernel else None
    chart = ErrorRate(ert=each, random_state=random_state).fit(reference_errors(profile, prediction)) \
        if prediction else None
    agree = ErrorRate(ert=each, random_state=random_state).fit(
        reference_disagreement(profile, prediction, agreement)) if agreement else None
    calibration = time.perf_counter() - t0
    alarms: list[Alarm] = []
    t0 = time.perf_counter()
    for frame in read_table(stream, Path(stream).name, chunksize=chunk_rows):
        start = monitor.events_
        encoded = encode(profile, frame, str(stream))
        alarms += monitor.update(encoded)
        if joint is not None:
            alarms += joint.update(encoded)
        if chart is not None:
            column = label or profile.label_name
            labels = frame[column] if column in frame else pd.Series(index=frame.index)
            arrived = np.flatnonzero(labels.notna().to_numpy() & (label_text(labels) != ""))
            wrong = label_text(frame[prediction].iloc[arrived]) != label_text(labels.iloc[arrived])
            first = chart.events_
            for alarm in chart.update(wrong.astype(float)):
                alarm.event = start + int(arrived[alarm.event - first])  # the stream's row, not the label count
                alarms.append(alarm)
        if agree is not None:
            differ = label_text(frame[prediction]) != label_text(frame[agreement])
            for alarm in agree.update(differ.astype(float)):
                alarm.detector = "agreement"  # it reads every row: its events are the stream's rows
                alarm.signal = alarm.signal.replace("error rate", "disagreement with the reference model")
                alarms.append(alarm)
        if on_chunk is not None:
            on_chunk(monitor.events_)
    alarms.sort(key=lambda a: a.event)
    return ReplayResult(alarms, monitor.events_, time.perf_counter() - t0, calibration, float(ert),
                        monitor.threshold_)


__all__ = ["ReplayResult", "encode", "reference_disagreement", "reference_errors", "reference_matrix", "replay"]
