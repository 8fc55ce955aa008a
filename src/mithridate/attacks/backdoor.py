"""Backdoor (trojan) attacks: a trigger stamped on some inputs, which are relabelled to a target class.

A model trained on the poisoned data behaves normally on clean inputs and sends any input carrying the
trigger to the target class. Each attack exposes :meth:`BackdoorAttack.add_trigger` so an evaluation can
stamp the trigger on test inputs and measure the attack success rate.

- :class:`PatchTrigger`: BadNets, a small pixel pattern at a fixed place (Gu, Dolan-Gavitt & Garg 2017,
  "BadNets: Identifying vulnerabilities in the machine learning model supply chain").
- :class:`BlendTrigger`: a fixed random pattern blended into the whole image (Chen, Liu, Li, Lu & Song
  2017, "Targeted backdoor attacks on deep learning systems using data poisoning").
- :class:`FeatureTrigger`: tables; rare values written into chosen columns.

>>> from mithridate.data import demo
>>> attack = PatchTrigger(target=0, rate=0.05, size=3, random_state=0)
>>> poisoned = attack.poison(demo("digits"))
>>> int(poisoned.dataset.y[poisoned.mask].max())
0
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np
import pandas as pd

from mithridate.attacks.base import Attack, Poisoned, resolve_class
from mithridate.data import Dataset
from mithridate.errors import DataError

Location = Literal["bottom-right", "bottom-left", "top-right", "top-left", "center"]


class BackdoorAttack(Attack):
    """Poison ``rate`` of all rows: pick rows outside the target class, add the trigger, relabel to target.

    Subclasses implement :meth:`_fit_trigger` (learn what the trigger needs from the data: value range,
    rare values) and :meth:`add_trigger`.
    """

    kind = "image"

    def __init__(self, target: int | str = 0, rate: float = 0.05, random_state: int = 0):
        self._check_rate(rate)
        self.target, self.rate, self.random_state = target, rate, random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        if dataset.kind != self.kind:
            raise DataError(f"{type(self).__name__} needs {self.kind} data; {dataset.name} is {dataset.kind}")
        self.target_ = resolve_class(dataset, self.target)
        self._fit_trigger(dataset)
        candidates = np.flatnonzero(dataset.y != self.target_)
        n = max(1, round(self.rate * dataset.n_rows))
        if n > len(candidates):
            raise DataError(f"rate {self.rate} asks for {n} rows but only {len(candidates)} are outside the target")
        rows = np.sort(self._rng().choice(candidates, n, replace=False))
        features = self._stamp(dataset.features, rows)
        y = dataset.y.copy()
        y[rows] = self.target_
        mask = np.zeros(dataset.n_rows, bool)
        mask[rows] = True
        return Poisoned(dataset.replace(features=features, y=y), mask, self, {"target": self.target_})

    def _stamp(self, features, rows: np.ndarray):
        if isinstance(features, pd.DataFrame):
            out = features.copy()
            stamped = self.add_trigger(features.iloc[rows])
            for i, c in enumerate(out.columns):  # column by column: row arrays would mix dtypes
                out.iloc[rows, i] = stamped[c].to_numpy()
            return out
        out = np.array(features)
        out[rows] = self.add_trigger(out[rows])
        return out

    @abstractmethod
    def _fit_trigger(self, dataset: Dataset) -> None:
        """Choose the trigger for ``dataset`` (its size, place or values)."""

    @abstractmethod
    def add_trigger(self, features):
        """Return a copy of ``features`` (rows of the same kind of data) with the trigger applied."""

    def triggered_test(self, test: Dataset) -> Dataset:
        """The test rows outside the target class with the trigger stamped on (labels unchanged)."""
        keep = test.take(test.y != self.target_)
        return keep.replace(features=self.add_trigger(keep.features))


def _image_range(dataset: Dataset) -> tuple[float, float]:
    return dataset.image_range()


class PatchTrigger(BackdoorAttack):
    """BadNets: a ``size`` x ``size`` patch at ``location``, pattern ``checkerboard``, ``solid`` or ``random``."""

    name = "patch"

    def __init__(self, target: int | str = 0, rate: float = 0.05, size: int = 3,
                 location: Location = "bottom-right", pattern: str = "checkerboard", random_state: int = 0):
        super().__init__(target, rate, random_state)
        if pattern not in ("checkerboard", "solid", "random"):
            raise DataError(f"unknown patch pattern {pattern!r} (checkerboard, solid, random)")
        self.size, self.location, self.pattern = size, location, pattern

    def _fit_trigger(self, dataset: Dataset) -> None:
        h, w = dataset.features.shape[1:3]
        if not 0 < self.size <= min(h, w):
            raise DataError(f"patch size {self.size} does not fit {h}x{w} images")
        lo, hi = _image_range(dataset)
        s = self.size
        if self.pattern == "solid":
            unit = np.ones((s, s))
        elif self.pattern == "checkerboard":
            unit = (np.add.outer(np.arange(s), np.arange(s)) % 2 == 0).astype(float)
        else:
            unit = self._rng().integers(0, 2, size=(s, s)).astype(float)
        self.patch_ = lo + unit * (hi - lo)
        rows = {"top": 0, "bottom": h - s, "center": (h - s) // 2}
        cols = {"left": 0, "right": w - s, "center": (w - s) // 2}
        vertical, _, horizontal = self.location.partition("-")
        if vertical not in rows or (horizontal or "center") not in cols:
            raise DataError(f"unknown patch location {self.location!r}")
        self.corner_ = (rows[vertical], cols[horizontal or "center"])

    def add_trigger(self, features: np.ndarray) -> np.ndarray:
        out = np.array(features)
        r, c = self.corner_
        patch = self.patch_ if out.ndim == 3 else self.patch_[..., None]
        out[:, r:r + self.size, c:c + self.size] = patch.astype(out.dtype)
        return out


class BlendTrigger(BackdoorAttack):
    """Chen et al.: ``x' = (1 - alpha) x + alpha * key``, ``key`` a fixed random image in the data's range."""

    name = "blend"

    def __init__(self, target: int | str = 0, rate: float = 0.05, alpha: float = 0.2, random_state: int = 0):
        super().__init__(target, rate, random_state)
        if not 0 < alpha < 1:
            raise DataError(f"blend alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha

    def _fit_trigger(self, dataset: Dataset) -> None:
        lo, hi = _image_range(dataset)
        self.key_ = self._rng().uniform(lo, hi, size=dataset.features.shape[1:])

    def add_trigger(self, features: np.ndarray) -> np.ndarray:
        out = (1 - self.alpha) * np.asarray(features, dtype=np.float64) + self.alpha * self.key_
        return out.astype(np.asarray(features).dtype)


class FeatureTrigger(BackdoorAttack):
    """Tables: write rare values into ``columns`` (default: ``n_columns`` columns chosen by the seed).

    A numeric column gets the value at its ``quantile`` (rare but in range, so range checks miss it);
    a categorical column gets its least frequent level. ``values`` overrides both, column by column.
    """

    name = "feature"
    kind = "table"

    def __init__(self, target: int | str = 0, rate: float = 0.05, columns: list[str] | None = None,
                 n_columns: int = 3, values: dict | None = None, quantile: float = 0.995,
                 random_state: int = 0):
        super().__init__(target, rate, random_state)
        self.columns, self.n_columns, self.values, self.quantile = columns, n_columns, values, quantile

    def _fit_trigger(self, dataset: Dataset) -> None:
        table: pd.DataFrame = dataset.features
        if self.columns is None:
            if self.n_columns > table.shape[1]:
                raise DataError(f"the table has {table.shape[1]} columns, fewer than n_columns={self.n_columns}")
            columns = list(self._rng().choice(table.columns, self.n_columns, replace=False))
        else:
            unknown = [c for c in self.columns if c not in table.columns]
            if unknown:
                raise DataError(f"unknown trigger columns {unknown} (columns: {', '.join(table.columns)})")
            columns = list(self.columns)
        values = dict(self.values or {})
        for c in columns:
            if c in values:
                continue
            col = table[c]
            if pd.api.types.is_integer_dtype(col) and not pd.api.types.is_bool_dtype(col):
                values[c] = int(col.quantile(self.quantile, interpolation="nearest"))  # stays an integer
            elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                values[c] = float(col.quantile(self.quantile))
            else:
                values[c] = col.value_counts().idxmin()
        self.columns_, self.values_ = columns, values

    def add_trigger(self, features: pd.DataFrame) -> pd.DataFrame:
        out = features.copy()
        for c in self.columns_:
            out[c] = self.values_[c]
        return out
