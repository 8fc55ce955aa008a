"""Iterative trimmed loss (Shen & Sanghavi 2019, "Learning with bad training data via iterative trimmed
loss minimization", ICML): train, set aside the rows the model explains worst, train again on the rest,
repeat; the final network never sees the rows set aside.

Two departures, both so that no poison rate is asked of the user:

- **Losses out of fold.** A network trained on a row learns its label, flipped or not (a small network
  fits digits with 40% random flips to near zero training loss), so each row is read by networks that
  never saw it: the rows are split in ``folds``, and each part is scored by a network trained on the kept
  rows of the others.
- **The cut from the data.** A row is set aside when those networks prefer another class to its label,
  i.e. when its loss exceeds the loss at which another class wins. Each round's networks learn from
  the rows the last round kept, so they are cleaner, and a row wrongly set aside comes back.

Two rules that estimate a share instead were tried on wine, breast_cancer and digits with 20% and 40% flips
(one-off experiments, not in ``benchmarks/harden_flips.py``, which measures this rule): a two-component
Gaussian mixture on the losses (as DivideMix does) set aside 24-53% of the rows at 20% flips (on
log-losses it split the clean rows themselves; digits 20%: 0.956 test accuracy against 0.961 for this
rule), and trimming by confident learning's per-class counts was level at 20% and worse at 40% on wine
(0.80 against 0.87).

>>> from mithridate.attacks import RandomFlip
>>> from mithridate.data import demo
>>> poisoned = RandomFlip(rate=0.2, random_state=0).poison(demo("wine"))
>>> trainer = TrimmedLoss(random_state=0).fit(poisoned.dataset)
>>> aside = trainer.set_aside_
>>> int((aside & poisoned.mask).sum()) > 4 * int((aside & ~poisoned.mask).sum())   # mostly the flipped rows
True
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedKFold

from mithridate.data import Dataset
from mithridate.errors import MithridateError
from mithridate.harden.base import Trainer, register
from mithridate.harden.member import Member


@register
class TrimmedLoss(Trainer):
    """Iterative trimmed loss read out of fold; ``rounds`` of trimming, ``folds`` parts per round.

    After :meth:`fit`: ``set_aside_`` (bool per row trained on: the data's rows, less any whose label is not
    among declared ``classes``), ``members_`` (one network on the kept rows).
    """

    name = "trimmed"

    def __init__(self, rounds: int = 2, folds: int = 2, classes: list | None = None, network: str = "auto",
                 epochs: int | None = None, random_state: int = 0):
        super().__init__(classes, network, epochs, random_state)
        self.rounds, self.folds = rounds, folds

    def usable_folds(self, dataset: Dataset) -> int:
        """``folds``, fewer when the smallest class has fewer rows; 0 when no class has two rows."""
        counts = np.bincount(dataset.y)
        if counts.max() < 2:
            return 0
        return int(max(2, min(self.folds, counts[counts > 0].min())))

    def out_of_fold_proba(self, dataset: Dataset, keep: np.ndarray, folds: int, seed: int) -> np.ndarray:
        """Each row's class probabilities under a network trained on the kept rows of the other folds."""
        proba = np.zeros((dataset.n_rows, dataset.n_classes))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state + seed)
        with warnings.catch_warnings():  # a class with fewer rows than folds: its rows go where they can
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            splits = list(splitter.split(np.zeros(dataset.n_rows), dataset.y))
        for i, (train, held) in enumerate(splits):
            rows = train[keep[train]]
            if len(np.unique(dataset.y[rows])) < 2:  # too little kept to learn from: read with all rows
                rows = train
            member = self._member(dataset, rows, seed=1 + 100 * seed + i)
            proba[held] = member.proba(dataset.take(held).features)
        return proba

    def _fit(self, dataset: Dataset) -> tuple[list[Member], dict]:
        if self.rounds < 1 or self.folds < 2:
            raise MithridateError(f"rounds must be >= 1 and folds >= 2, got {self.rounds} and {self.folds}")
        keep = np.ones(dataset.n_rows, dtype=bool)
        shares = []
        folds = self.usable_folds(dataset)
        for r in range(self.rounds if folds else 0):  # one row per class: nothing can be read out of fold
            aside = self.out_of_fold_proba(dataset, keep, folds, r).argmax(axis=1) != dataset.y
            # a class is never trimmed away whole: its rows would all look wrong to models without it
            for c in np.unique(dataset.y):
                if not (~aside & (dataset.y == c)).any():
                    aside[dataset.y == c] = False
            shares.append(round(float(aside.mean()), 4))
            if (aside == ~keep).all():
                break
            keep = ~aside
        self.set_aside_ = ~keep
        member = self._member(dataset, np.flatnonzero(keep))
        report = {"set_aside": {"another class preferred by networks that never saw the row": int((~keep).sum())},
                  "rows_trained": int(keep.sum()), "trimmed_share_by_round": shares, "folds": folds}
        return [member], report
