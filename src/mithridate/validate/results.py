"""One record per test of a batch against a baseline: what was tested, how strongly, and the verdict."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd


@dataclass
class Check:
    """The result of one test.

    ``name`` is unique in a run (``"ks:age"``, ``"mmd"``); ``test`` the kind of test (``"ks"``); ``family``
    one of ``column``, ``multivariate``, ``label``, ``schema``. ``p_value`` is ``None`` for a score without
    one. ``effect_size`` is on the scale ``effect`` names (e.g. ``"psi"``). ``p_adjusted`` and ``passed``
    are set by the gate after multiple-testing correction.
    """

    name: str
    test: str
    family: str
    column: str | None
    statistic: float
    p_value: float | None
    effect_size: float | None
    effect: str
    detail: str = ""
    p_adjusted: float | None = None
    passed: bool = True

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def checks_frame(checks: list[Check]) -> pd.DataFrame:
    columns = list(Check.__dataclass_fields__)
    return pd.DataFrame([asdict(c) for c in checks], columns=columns)
