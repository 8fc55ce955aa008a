"""Bagging with its certificate (Jia, Cao & Gong 2021, "Intrinsic certified robustness of bagging against
data poisoning attacks", AAAI): ``members`` networks, each trained on ``sample`` rows drawn at random with
replacement; the prediction is the plurality vote.

A member's sample avoids every one of ``r`` poisoned rows with a probability that only ``r``, the rows and
the sample size fix, and members that saw no poisoned row vote as they would have on the clean data. So a
vote whose winner leads by enough cannot be overturned by ``r`` rows, whatever they hold. The vote shares
are estimated from the members (Clopper-Pearson bounds, Bonferroni over both sides of every class,
confidence ``1 - alpha`` per prediction), so each prediction's certificate holds with probability at least
``1 - alpha`` over the training's sampling, not always as DPA's does. It is about the vote of infinitely
many members, which ``members`` estimate; it assumes the poisoned data is sampled with the same sample size
``k`` (``training.json``'s ``members_sample``; pass ``sample=`` to retrain with it), and draws the attacker
cannot predict: ``random_state=None`` (the default) takes them from the operating system's entropy and
records no seed. A prediction whose winner the members cannot tell apart from its rival gets radius -1.

The radius counts rows inserted or removed, as :mod:`.dpa` and :mod:`.finite` do (a changed row is one of
each). With ``i`` rows inserted and ``d`` removed from ``n``, the rows both sets share are ``o = n - d``,
and with ``a = (o / n)^k``, ``b = (o / (n - d + i))^k`` the winner ``A`` keeps its lead over every ``B``
when ``b (p_A - 1 + a) / a > b p_B / a + 1 - b`` (the paper's Theorem 1, written for insertions and
removals); the radius is the largest ``r`` for which that holds for every split ``i + d = r``.

>>> from mithridate.data import demo, split
>>> train, test = split(demo("breast_cancer"), seed=0)
>>> bag = Bagging(members=30, epochs=20, random_state=0).fit(train)
>>> pred, radius = bag.certify(test.features)
>>> float((pred == test.y).mean()) > 0.9, int(radius.max()) > 0
(True, True)
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta

from mithridate.data import Dataset
from mithridate.errors import MithridateError
from mithridate.harden.base import VoteEnsemble, register


def share_bounds(counts: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson lower bound of the winner's vote share and upper bound of every other class's, each
    at ``1 - alpha / (2 classes)`` (Bonferroni over both bounds of every class: the winner is picked from the
    same counts), from ``(n, classes)`` vote counts.

    >>> lower, upper = share_bounds(np.array([[20, 0]]), 0.05)
    >>> round(float(lower[0]), 3), round(float(upper[0, 1]), 3)
    (0.803, 0.197)
    """
    n_members, n_classes = int(counts[0].sum()), counts.shape[1]
    level = alpha / (2 * n_classes)
    top = counts.max(axis=1)
    lower = np.where(top > 0, beta.ppf(level, top, n_members - top + 1), 0.0)
    upper = np.where(counts < n_members, beta.ppf(1 - level, counts + 1, n_members - counts), 1.0)
    return lower, upper


def bagging_radius(p_a: np.ndarray, p_b: np.ndarray, rows: int, sample: int, chunk: int = 256) -> np.ndarray:
    """The largest number of rows inserted or removed that cannot change a vote whose winner's share is at
    least ``p_a`` and whose strongest rival's is at most ``p_b`` (see the module docstring); -1 where
    ``p_a <= p_b`` (not even the vote is certain). More rows can only do more, so the radius is found by
    bisection, every split of ``r`` into insertions and removals checked at once, ``chunk`` rows at a time.

    >>> bagging_radius(np.array([0.95, 0.6, 0.4]), np.array([0.05, 0.4, 0.5]), rows=1000, sample=20).tolist()
    [32, 9, -1]
    """
    p_a, p_b = np.asarray(p_a, dtype=np.float64), np.asarray(p_b, dtype=np.float64)
    if len(p_a) > chunk:
        return np.concatenate([bagging_radius(p_a[i:i + chunk], p_b[i:i + chunk], rows, sample, chunk)
                               for i in range(0, len(p_a), chunk)])
    gap = p_a - p_b
    # removals alone (a = (1 - r/n)^k > 1 - gap) bound the radius from above
    hi = np.floor(rows * (1 - np.clip(1 - gap, 0.0, 1.0) ** (1 / sample))).astype(np.int64)
    hi = np.where(gap > 0, np.clip(hi, 0, rows - 1), 0)
    lo = np.zeros_like(hi)

    def holds(r: np.ndarray) -> np.ndarray:
        d = np.arange(int(r.max()) + 1)[None, :]  # rows removed; the rest of r inserted
        inserted = np.maximum(r[:, None] - d, 0)
        a = ((rows - d) / rows) ** sample
        b = ((rows - d) / (rows - d + inserted)) ** sample
        ok = b * (p_a[:, None] - 1 + a) / a > b * p_b[:, None] / a + 1 - b
        return (ok | (d > r[:, None])).all(axis=1)

    while (lo < hi).any():
        mid = (lo + hi + 1) // 2
        good = holds(mid)
        lo, hi = np.where(good, mid, lo), np.where(good, hi, mid - 1)
    return np.where(gap > 0, lo, -1)


@register
class Bagging(VoteEnsemble):
    """``members`` networks on random samples of ``sample`` rows with replacement (default: a fiftieth of
    the rows, at least 10); certified with confidence ``1 - alpha`` (see the module docstring)."""

    name = "bagging"

    def __init__(self, members: int = 50, sample: int | None = None, alpha: float = 0.001,
                 classes: list | None = None, network: str = "auto", epochs: int | None = None,
                 random_state: int | None = None):
        super().__init__(classes, network, epochs, random_state)
        self.members, self.sample, self.alpha = members, sample, alpha

    def buckets(self) -> int:  # what load checks the saved members against
        return self.members

    def sample_size(self, rows: int) -> int:
        return int(self.sample) if self.sample is not None else max(10, rows // 50)

    def _fit(self, dataset: Dataset):
        k = self.sample_size(dataset.n_rows)
        if self.members < 1 or k < 1 or not 0 < self.alpha < 1:
            raise MithridateError(f"members and sample must be >= 1 and alpha in (0, 1), got {self.members}, "
                                  f"{k} and {self.alpha}")
        rng = np.random.default_rng(self.random_state)  # None: the operating system's entropy
        members = [self._member(dataset, rng.integers(0, dataset.n_rows, size=k), seed=i)
                   for i in range(self.members)]
        return members, {"members_sample": k, "alpha": self.alpha,
                         "sampling_seed": "drawn from the operating system, not recorded"
                         if self.random_state is None else "fixed and recorded: an attacker can predict the samples",
                         "certificate": "rows inserted or removed, with probability >= 1 - alpha per prediction over "
                                        "the training's sampling, for retraining with the same sample size "
                                        "(Jia, Cao & Gong 2021)"}

    def certify(self, features) -> tuple[np.ndarray, np.ndarray]:
        counts = self.vote_counts(features)
        pred = counts.argmax(axis=1)  # ties to the smaller class
        lower, upper = share_bounds(counts, self.alpha)
        upper[np.arange(len(pred)), pred] = -np.inf
        # the rows it was trained on: the report's, after any label not among declared classes was set aside
        return pred, bagging_radius(lower, upper.max(axis=1), int(self.report_["rows"]),
                                    int(self.report_["members_sample"]))
