"""Label issues (label flipping): rows whose given label both the model and the neighbourhood contradict.

Each row is judged by two views that do not share a failure mode:

- **the model**: out-of-fold predicted probabilities (every row predicted by a model that never saw it);
- **the neighbourhood**: the labels of the row's nearest neighbours in the representation's geometry
  (standardised encoded table or network embedding), averaged over several neighbourhood sizes
  (k-NN label consistency; Bahri, Jiang & Gupta, "Deep k-NN for Noisy Labels", ICML 2020). It does not
  depend on the model's calibration, which is poor for boosted trees on small noisy tables.

A row's score is the *weaker* view's margin: the smaller of the two views' (best other class minus given
class). It is positive only when both views prefer another class, which is the flag's precondition.

How many rows of each class to flag is estimated from the data, never supplied: the median of three
estimates of the number of wrong labels in each class, (a) the rows whose label both views reject, and the
off-diagonal of the *confident joint* (Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70, 2021; per-class thresholds at the mean self-confidence, calibrated
to the class counts) of (b) the model's probabilities and (c) the averaged posterior of the two views.
(a) runs high (it includes rows that are merely atypical); (b) runs high when the model is poorly
calibrated; (c) runs low when the network has partly learned the flipped labels (flipped rows are then
less confident than typical members of their true class). The rows of a class with the highest scores are
flagged, up to that count. Without a geometry the model alone decides, by confident learning's
prune-by-noise-rate.

Each flagged row's suggested label is the most probable other class under the averaged posterior.

>>> from mithridate.attacks import RandomFlip
>>> from mithridate.data import demo
>>> from mithridate.represent import represent
>>> poisoned = RandomFlip(rate=0.1, random_state=0).poison(demo("wine"))
>>> detector = LabelIssues().fit(poisoned.dataset, represent(poisoned.dataset))
>>> int(detector.flags_.sum()), int((detector.flags_ & poisoned.mask).sum())  # 18 flipped rows
(19, 17)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Self

import numpy as np

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.errors import DataError
from mithridate.represent import Representation, nearest_neighbours

NEIGHBOURS = (5, 10, 20, 40)


class LabelIssueResult(NamedTuple):
    scores: np.ndarray  # (n,) the weaker view's margin (best other class minus given class), in [-1, 1]
    flags: np.ndarray  # (n,) bool
    suggested: np.ndarray  # (n,) suggested class code where flagged, else -1
    posterior: np.ndarray  # (n, k) the averaged posterior of the views
    votes: np.ndarray  # (n, k) share of neighbours carrying each label (zeros without a geometry)
    neighbours: np.ndarray  # (n, m) labels of each row's nearest neighbours, nearest first ((n, 0) without)
    estimate: np.ndarray  # (k,) estimated number of wrong labels per class (the flag budget)


def margins(labels: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best class other than the given one, and its probability minus the given class's."""
    rows = np.arange(len(labels))
    others = np.array(proba, dtype=np.float64)
    others[rows, labels] = -np.inf
    best = others.argmax(axis=1)
    return best, others[rows, best] - proba[rows, labels]


def confident_joint(labels: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated confident joint ``C[given, true]`` (rows sum to the class counts) and the thresholds.

    A row counts towards ``C[i, j]`` when its given label is ``i`` and ``j`` is the most probable of the
    classes whose probability reaches their threshold (the class's mean self-confidence).
    """
    n, k = proba.shape
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.bincount(labels, weights=proba[np.arange(n), labels], minlength=k)
    thresholds = np.divide(sums, counts, out=np.ones(k), where=counts > 0)
    above = proba >= thresholds - 1e-12
    confident = above.any(axis=1)
    true = np.where(above, proba, -np.inf).argmax(axis=1)
    joint = np.zeros((k, k))
    np.add.at(joint, (labels[confident], true[confident]), 1.0)
    totals = joint.sum(axis=1, keepdims=True)
    joint = np.where(totals > 0, joint / np.maximum(totals, 1.0) * counts[:, None], np.diag(counts))
    return joint, thresholds


def off_diagonal(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Confident learning's estimate of the number of wrong labels in each class."""
    joint, _ = confident_joint(labels, proba)
    return joint.sum(axis=1) - np.diag(joint)


def prune_by_noise_rate(labels: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Confident learning's filter: for every off-diagonal cell ``C[i, j]`` of the confident joint, flag
    that many rows labelled ``i`` with the largest margin ``p_j - p_i``; keep only rows whose most probable
    class is not the given one."""
    joint, _ = confident_joint(labels, proba)
    flags = np.zeros(len(labels), dtype=bool)
    for i, j in zip(*np.nonzero(~np.eye(len(joint), dtype=bool)), strict=True):
        count = round(joint[i, j])
        if count:
            members = np.flatnonzero(labels == i)
            order = np.argsort(proba[members, i] - proba[members, j], kind="stable")
            flags[members[order[:count]]] = True
    return flags & (proba.argmax(axis=1) != labels)


def nearest_labels(labels: np.ndarray, features: np.ndarray, n_neighbors: int) -> np.ndarray:
    """The labels of each row's ``n_neighbors`` nearest other rows in standardised ``features``, nearest
    first: shape ``(n, n_neighbors)``."""
    return labels[nearest_neighbours(np.asarray(features).reshape(len(labels), -1), n_neighbors)[1]]


def neighbour_votes(neighbours: np.ndarray, n_classes: int, sizes: Sequence[int] = NEIGHBOURS) -> np.ndarray:
    """Share of each row's nearest ``s`` neighbours (``neighbours``: their labels, nearest first) carrying
    each label, averaged over the neighbourhood sizes ``s`` in ``sizes``. Shape ``(n, n_classes)``."""
    sizes = sorted({min(int(s), neighbours.shape[1]) for s in np.atleast_1d(sizes)})
    counts = np.cumsum(neighbours[:, :, None] == np.arange(n_classes), axis=1)
    return np.mean([counts[:, s - 1] / s for s in sizes], axis=0)


def label_issue_scores(labels, proba, features=None, *, n_neighbors: Sequence[int] = NEIGHBOURS,
                       neighbours: np.ndarray | None = None) -> LabelIssueResult:
    """Score, flag and relabel label issues from out-of-fold ``proba`` (n, k) and a geometry ``features``
    (n, d) (see the module docstring). Without ``features`` the model alone decides (confident learning).
    ``neighbours``: the positions of each row's nearest other rows, nearest first, if already known.

    >>> p = np.array([[.9, .1], [.8, .2], [.7, .3], [.2, .8], [.1, .9], [.95, .05]])
    >>> label_issue_scores(np.array([0, 0, 0, 1, 1, 1]), p).flags.tolist()
    [False, False, False, False, False, True]
    """
    labels = np.asarray(labels, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n, k = proba.shape
    if len(labels) != n:
        raise DataError(f"{len(labels)} labels but {n} probability rows")
    if labels.min() < 0 or labels.max() >= k:
        raise DataError(f"labels must be class codes 0..{k - 1}")
    _, model_margin = margins(labels, proba)
    if (features is None and neighbours is None) or n < 3:
        neighbours, votes = np.zeros((n, 0), dtype=np.int64), np.zeros((n, k))
        posterior, scores = proba, model_margin
        flags = prune_by_noise_rate(labels, proba)
        estimate = off_diagonal(labels, proba)
    else:
        if neighbours is None:
            neighbours = nearest_labels(labels, features, max(np.atleast_1d(n_neighbors)))
        else:
            neighbours = labels[neighbours]
        votes = neighbour_votes(neighbours, k, n_neighbors)
        posterior = (proba + votes) / 2
        scores = np.minimum(model_margin, margins(labels, votes)[1])
        rejected = scores > 0
        estimate = np.median([np.bincount(labels[rejected], minlength=k), off_diagonal(labels, proba),
                              off_diagonal(labels, posterior)], axis=0)
        flags = np.zeros(n, dtype=bool)
        for c in range(k):
            members = np.flatnonzero(rejected & (labels == c))
            flags[members[np.argsort(-scores[members], kind="stable")[:round(estimate[c])]]] = True
    suggested, _ = margins(labels, posterior)
    return LabelIssueResult(scores, flags, np.where(flags, suggested, -1), posterior, votes, neighbours,
                            estimate)


class LabelIssues(Detector):
    """Flag rows whose label the out-of-fold model and the neighbourhood both contradict; suggest a label.

    ``n_neighbors``: the neighbourhood sizes whose label shares are averaged.

    After :meth:`fit`: the protocol's ``scores_`` / ``flags_`` / ``evidence_`` / ``suggested_label_``,
    ``posterior_`` (the averaged class probabilities of the two views), ``votes_`` (neighbour shares) and
    ``estimated_errors_`` (estimated number of wrong labels per class).
    """

    name = "label_issues"

    def __init__(self, n_neighbors: Sequence[int] = NEIGHBOURS):
        self.n_neighbors = n_neighbors

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        neighbours = None
        if representation.features.size:
            neighbours = representation.neighbours(max(np.atleast_1d(self.n_neighbors)))[1]
        result = label_issue_scores(dataset.y, representation.proba, n_neighbors=self.n_neighbors,
                                    neighbours=neighbours)
        nearest = result.neighbours[:, :10]
        names = np.asarray(dataset.classes, dtype=object)
        evidence = np.full(dataset.n_rows, "", dtype=object)
        for i in np.flatnonzero(result.flags):
            given, other = dataset.y[i], result.suggested[i]
            text = (f"label issue: given {names[given]}, model {representation.proba[i, given]:.2f} vs "
                    f"{names[other]} {representation.proba[i, other]:.2f}")
            if nearest.size:
                agree = int(np.sum(nearest[i] == other))
                text += f"; {agree}/{nearest.shape[1]} nearest neighbours say {names[other]}"
            evidence[i] = text
        self.posterior_, self.votes_, self.estimated_errors_ = result.posterior, result.votes, result.estimate
        return self._set(result.scores, result.flags, evidence, result.suggested)


__all__ = ["LabelIssueResult", "LabelIssues", "confident_joint", "label_issue_scores", "margins",
           "nearest_labels", "neighbour_votes", "off_diagonal", "prune_by_noise_rate"]
