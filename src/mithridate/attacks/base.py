"""The red team's protocol: configure an attack in ``__init__``, call ``poison(dataset)``.

Every attack is seeded (``random_state``) and deterministic, and returns a :class:`Poisoned`: the poisoned
dataset plus the ground-truth mask of the rows it touched, so defences can be scored against it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mithridate.data import Dataset
from mithridate.errors import DataError


@dataclass(frozen=True, eq=False)
class Poisoned:
    """The output of an attack: ``dataset`` (poisoned copy), ``mask`` (True where a row was touched)."""

    dataset: Dataset
    mask: np.ndarray
    attack: Attack
    info: dict = field(default_factory=dict)

    @property
    def n_poisoned(self) -> int:
        return int(self.mask.sum())

    def truth(self) -> pd.DataFrame:
        """The ground truth as a table with columns ``row`` (0-based position) and ``poisoned``."""
        return pd.DataFrame({"row": np.arange(len(self.mask)), "poisoned": self.mask.astype(bool)})


class Attack(BaseEstimator, ABC):
    """Base class of all attacks. Subclasses set ``name`` and implement :meth:`poison`."""

    name = "attack"

    @abstractmethod
    def poison(self, dataset: Dataset) -> Poisoned:
        """A poisoned copy of ``dataset`` and the mask of the rows touched."""

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(getattr(self, "random_state", 0))

    @staticmethod
    def _check_rate(rate: float) -> None:
        if not 0 < rate <= 1:
            raise DataError(f"poison rate must be in (0, 1], got {rate}")



def resolve_class(dataset: Dataset, label: int | str | None, what: str = "target") -> int:
    """A class code from a class name or code; ``None`` is an error naming the choices."""
    if label is None:
        raise DataError(f"choose a {what} class (one of {list(dataset.classes)})")
    try:
        return dataset.class_code(label)
    except DataError:
        if isinstance(label, (int, np.integer)) and 0 <= label < dataset.n_classes:
            return int(label)  # a class code for data whose classes are names
        raise
