"""Label flipping: the attacker changes labels, not inputs.

- :class:`RandomFlip`: a share of all rows gets a uniformly random *other* label (symmetric noise).
- :class:`TargetedFlip`: a share of class A's rows is relabelled B ("spam" to "not spam").

See Biggio, Nelson & Laskov, "Support vector machines under adversarial label noise" (ACML 2011).

>>> from mithridate.data import demo
>>> p = RandomFlip(rate=0.1, random_state=0).poison(demo("wine"))
>>> p.n_poisoned
18
"""

from __future__ import annotations

import numpy as np

from mithridate.attacks.base import Attack, Poisoned, resolve_class
from mithridate.data import Dataset
from mithridate.errors import DataError


def _n_of(rate: float, n: int) -> int:
    return max(1, round(rate * n))


class RandomFlip(Attack):
    """Flip ``rate`` of all rows to a random other class."""

    name = "flip"

    def __init__(self, rate: float = 0.1, random_state: int = 0):
        self._check_rate(rate)
        self.rate = rate
        self.random_state = random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        rng = self._rng()
        rows = rng.choice(dataset.n_rows, _n_of(self.rate, dataset.n_rows), replace=False)
        y = dataset.y.copy()
        shift = rng.integers(1, dataset.n_classes, size=len(rows))
        y[rows] = (y[rows] + shift) % dataset.n_classes
        mask = np.zeros(dataset.n_rows, bool)
        mask[rows] = True
        return Poisoned(dataset.replace(y=y), mask, self)


class TargetedFlip(Attack):
    """Relabel ``rate`` of the rows of class ``source`` as class ``target``."""

    name = "targeted-flip"

    def __init__(self, source: int | str | None = None, target: int | str | None = None, rate: float = 0.1,
                 random_state: int = 0):
        self._check_rate(rate)
        self.source, self.target, self.rate, self.random_state = source, target, rate, random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        src = resolve_class(dataset, self.source, "source")
        dst = resolve_class(dataset, self.target, "target")
        if src == dst:
            raise DataError("source and target classes must differ")
        candidates = np.flatnonzero(dataset.y == src)
        rows = self._rng().choice(candidates, _n_of(self.rate, len(candidates)), replace=False)
        y = dataset.y.copy()
        y[rows] = dst
        mask = np.zeros(dataset.n_rows, bool)
        mask[rows] = True
        return Poisoned(dataset.replace(y=y), mask, self, {"source": src, "target": dst})
