"""Label flipping: the attacker changes labels, not inputs.

- :class:`RandomFlip`: a share of all rows gets a uniformly random *other* label (symmetric noise).
- :class:`TargetedFlip`: a share of class A's rows is relabelled B ("spam" to "not spam").
- :class:`AdversarialFlip`: the flips that hurt a model most, chosen greedily against a surrogate.

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


class AdversarialFlip(Attack):
    """Flip the ``rate`` of rows whose new labels hurt a model most: greedy, loss-maximising label flips.

    The attacker's surrogate is a logistic regression on the encoded table (or the flattened, range-scaled
    images). Following ALFA (Xiao, Xiao & Eckert, "Adversarial label flips attack on support vector
    machines", ECAI 2012), flips are chosen so that a model refit on the tainted labels *agrees* with them
    while the model fit on the true labels *disagrees*: the flip of row ``i`` to class ``c`` scores
    ``loss_clean(i, c) - loss_tainted(i, c)``. The ALFA objective is relaxed into ``rounds`` greedy rounds,
    each refitting the tainted surrogate and adding ``1/rounds`` of the budget, the first round taking the
    rows the clean surrogate is surest of, flipped to their least likely class (Biggio, Nelson & Laskov,
    "Support vector machines under adversarial label noise", ACML 2011). Coherent flips move the decision
    boundary instead of sprinkling noise, so they cost far more accuracy than :class:`RandomFlip` at the
    same rate.

    The surrogates see a random ``subsample`` of the rows (drawn from ``random_state``), as an attacker
    who does not hold the whole training set would; this is what the seed changes.

    >>> from mithridate.data import demo
    >>> p = AdversarialFlip(rate=0.1, random_state=0).poison(demo("wine"))
    >>> p.n_poisoned
    18
    """

    name = "adversarial-flip"

    def __init__(self, rate: float = 0.1, rounds: int = 5, subsample: float = 0.8, C: float = 1.0,
                 random_state: int = 0):
        self._check_rate(rate)
        if rounds < 1:
            raise DataError(f"rounds must be at least 1, got {rounds}")
        if not 0 < subsample <= 1:
            raise DataError(f"subsample must be in (0, 1], got {subsample}")
        self.rate, self.rounds, self.subsample, self.C, self.random_state = rate, rounds, subsample, C, random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        X = surrogate_features(dataset)
        n = dataset.n_rows
        seen = np.sort(self._rng().choice(n, max(2, round(self.subsample * n)), replace=False))
        y = adversarial_flips(X, dataset.y, dataset.n_classes, _n_of(self.rate, n), seen, self.rounds, self.C)
        mask = y != dataset.y
        return Poisoned(dataset.replace(y=y), mask, self)


def surrogate_features(dataset: Dataset) -> np.ndarray:
    """What the attacker's linear surrogate reads: the encoded table, or flattened images scaled to [0, 1]."""
    if dataset.kind == "table":
        from mithridate.represent import TableEncoder

        return TableEncoder().fit_transform(dataset.features)
    lo, hi = dataset.image_range()
    x = np.asarray(dataset.features, dtype=np.float32).reshape(dataset.n_rows, -1)
    return (x - lo) / max(hi - lo, 1e-12)


def _surrogate_loss(X: np.ndarray, y: np.ndarray, n_classes: int, seen: np.ndarray, C: float) -> np.ndarray:
    """Cross-entropy of every row under every class, for a logistic regression fit on rows ``seen``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=C, max_iter=2000).fit(X[seen], y[seen])
    proba = np.zeros((len(X), n_classes))
    proba[:, model.classes_] = model.predict_proba(X)
    return -np.log(np.clip(proba, 1e-12, 1.0))


def adversarial_flips(X: np.ndarray, y: np.ndarray, n_classes: int, n_flips: int, seen: np.ndarray,
                      rounds: int = 5, C: float = 1.0) -> np.ndarray:
    """Labels with ``n_flips`` rows flipped greedily (see :class:`AdversarialFlip`); ``seen``: surrogate rows."""
    if n_flips > len(y):
        raise DataError(f"cannot flip {n_flips} of {len(y)} rows")
    rows = np.arange(len(y))
    clean_loss = _surrogate_loss(X, y, n_classes, seen, C)
    tainted = y.copy()
    flipped = np.zeros(len(y), bool)
    for r in range(rounds):
        score = clean_loss - _surrogate_loss(X, tainted, n_classes, seen, C) if r else clean_loss.copy()
        score[rows, y] = -np.inf
        best = score.argmax(1)
        gain = score[rows, best]
        gain[flipped] = -np.inf
        take = round(n_flips * (r + 1) / rounds) - int(flipped.sum())
        chosen = np.argsort(-gain, kind="stable")[:take]
        tainted[chosen] = best[chosen]
        flipped[chosen] = True
    return tainted
