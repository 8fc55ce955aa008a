"""Label issues (label flipping): rows whose given label the data's views of them contradict.

Each row is judged by up to three views that fail in different ways (an ensemble filter, as in Brodley &
Friedl, "Identifying mislabeled training data", JAIR 11, 1999):

- **the model**: out-of-fold predicted probabilities of the representation's reference model (every row
  predicted by a model that never saw it; gradient boosting for tables, a CNN for images);
- **the neighbourhood**: the labels of the row's nearest neighbours in a geometry that never saw the labels
  (the encoded table, your embeddings, an image's pixels: ``Representation.label_geometry``; a network
  trained on all rows has learned the flipped labels too), averaged over several neighbourhood sizes
  (Bahri, Jiang & Gupta, "Deep k-NN for Noisy Labels", ICML 2020);
- **a linear model**: out-of-fold probabilities of a logistic regression on the standardised geometry.

How much each view counts is learned from the data at hand: the views are mixed with the weights (on a
0.1 grid of the simplex) under which the mixture gives the given labels the highest likelihood. A view
that cannot tell the classes apart on this data (neighbours in a table whose columns are mostly
irrelevant to the label; a linear model on curved classes) gets little weight; on real tables the model
alone is weakest at ranking, the three together strongest. The likelihood rewards a view that learned
the given labels, flipped ones included, which is why no view may have seen them.

How many rows to flag is estimated from the data, never supplied, **per class pair**: for each given class
``i`` and other class ``j``, the geometric mean of three estimates of the number of rows labelled ``i``
that belong to ``j``: (a) the rows whose mixture prefers ``j`` to ``i`` (runs high: it includes rows that
are merely ambiguous), and the ``[i, j]`` cell of the *confident joint* (Northcutt, Jiang & Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 70, 2021; per-class thresholds at the
mean self-confidence, calibrated to the class counts) of (b) the model's probabilities and (c) the
mixture's. The median lets no single estimate run away ((a) on hard tables, (b) where the model is
over-confident): natural confusion spread thin over many pairs stays small in each, while a targeted flip
(one class moved into one other) makes all three large in one pair. A class's budget is the sum over its
pairs; its rows with the largest margin (best other class minus given class) are flagged, up to it.
(Rounding each pair's estimate instead, ten classes' 90 pairs each rounding a fraction up, flagged 14
clean digits among 69 flags; the geometric mean of the three instead of the median measured 0.005 more
F1 on the suite's tables and flagged up to 4.4 points more of clean ones than cleanlab.)

A flagged row is ``poison`` when every view with weight prefers another class, ``suspect`` when only the
mixture does (the views disagree). Its suggested label is the mixture's most probable other class.

Measured on the 40 real tables of ``benchmarks/scan_suite.py`` (flips of 10% and 30% at random, 10%
targeted and 10% adversarial), against cleanlab's ``find_label_issues`` on the same out-of-fold
probabilities: see docs/scan.md.

>>> from mithridate.attacks import RandomFlip
>>> from mithridate.data import demo
>>> from mithridate.represent import represent
>>> poisoned = RandomFlip(rate=0.1, random_state=0).poison(demo("wine"))
>>> detector = LabelIssues().fit(poisoned.dataset, represent(poisoned.dataset))
>>> int(poisoned.mask.sum()), int((detector.flags_ & poisoned.mask).sum()) >= 15
(18, True)
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import NamedTuple, Self

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.errors import DataError
from mithridate.represent import Representation, nearest_neighbours, standardise

NEIGHBOURS = (5, 10, 20, 40)
WEIGHT_STEP = 0.1


class LabelIssueResult(NamedTuple):
    scores: np.ndarray  # (n,) the mixture's margin (best other class minus given class), in [-1, 1]
    flags: np.ndarray  # (n,) bool
    suggested: np.ndarray  # (n,) suggested class code where flagged, else -1
    posterior: np.ndarray  # (n, k) the weighted mixture of the views
    views: dict  # view name -> (n, k) class probabilities
    weights: dict  # view name -> weight in the mixture
    neighbours: np.ndarray  # (n, m) labels of each row's nearest neighbours, nearest first ((n, 0) without)
    estimate: np.ndarray  # (k, k) estimated number of rows labelled i that belong to j (the flag budget)
    unanimous: np.ndarray  # (n,) bool: every weighted view prefers another class than the given one


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


def neighbour_votes(neighbours: np.ndarray, n_classes: int, sizes: Sequence[int] = NEIGHBOURS) -> np.ndarray:
    """Share of each row's nearest ``s`` neighbours (``neighbours``: their labels, nearest first) carrying
    each label, averaged over the neighbourhood sizes ``s`` in ``sizes``. Shape ``(n, n_classes)``."""
    sizes = sorted({min(int(s), neighbours.shape[1]) for s in np.atleast_1d(sizes)})
    counts = np.cumsum(neighbours[:, :, None] == np.arange(n_classes), axis=1)
    return np.mean([counts[:, s - 1] / s for s in sizes], axis=0)


def linear_proba(features: np.ndarray, labels: np.ndarray, n_classes: int, folds: int = 5,
                 random_state: int = 0) -> np.ndarray | None:
    """Out-of-fold class probabilities of a logistic regression on the standardised ``features``; ``None``
    when a class has too few rows for two folds."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_classes)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2 or len(np.unique(labels)) < 2:
        return None
    x = standardise(features)
    proba = np.zeros((len(labels), n_classes))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, held in splitter.split(x, labels):
            model = LogisticRegression(C=1.0, max_iter=300).fit(x[train], labels[train])
            proba[np.ix_(held, model.classes_)] = model.predict_proba(x[held])
    return proba


def view_weights(labels: np.ndarray, views: Sequence[np.ndarray], step: float = WEIGHT_STEP) -> np.ndarray:
    """Weights (on a ``step`` grid of the simplex) under which ``sum(w * view)`` gives ``labels`` the highest
    mean log-likelihood.

    >>> y = np.array([0, 0, 1, 1])
    >>> sharp, flat = np.eye(2)[y] * 0.9 + 0.05, np.full((4, 2), 0.5)
    >>> view_weights(y, [sharp, flat]).tolist()
    [1.0, 0.0]
    """
    rows = np.arange(len(labels))
    given = [np.asarray(v, dtype=np.float64)[rows, labels] for v in views]
    grid = np.round(np.arange(0, 1 + step / 2, step), 10)
    best, chosen = -np.inf, np.eye(len(views))[0]
    for head in itertools.product(grid, repeat=len(views) - 1):
        if sum(head) > 1 + 1e-9:
            continue
        w = np.array([*head, 1 - sum(head)])
        score = np.mean(np.log(np.clip(sum(wi * g for wi, g in zip(w, given, strict=True)), 1e-6, 1)))
        if score > best + 1e-12:
            best, chosen = score, w
    return chosen


def pair_budget(labels: np.ndarray, posterior: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """``E[i, j]``: estimated number of rows labelled ``i`` that belong to ``j`` (zero diagonal): the
    median of the rows whose ``posterior`` prefers ``j`` to ``i`` and of the confident joint's ``[i, j]``
    cell under ``proba`` and under ``posterior``."""
    k = proba.shape[1]
    best, margin = margins(labels, posterior)
    rejected = margin > 0
    counts = np.zeros((k, k))
    np.add.at(counts, (labels[rejected], best[rejected]), 1.0)
    estimates = np.array([counts, confident_joint(labels, proba)[0], confident_joint(labels, posterior)[0]])
    off = ~np.eye(k, dtype=bool)
    return np.median(estimates, axis=0) * off


def label_issue_scores(labels, proba, features=None, *, n_neighbors: Sequence[int] = NEIGHBOURS,
                       neighbours: np.ndarray | None = None, linear: np.ndarray | None = None,
                       folds: int = 5, random_state: int = 0) -> LabelIssueResult:
    """Score, flag and relabel label issues from out-of-fold ``proba`` (n, k) and a geometry ``features``
    (n, d) (see the module docstring). ``neighbours``: positions of each row's nearest other rows, nearest
    first, if already known; ``linear``: the linear view's out-of-fold probabilities, if already known.
    Without a geometry the model alone decides.

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
    views = {"model": proba}
    nearest = np.zeros((n, 0), dtype=np.int64)
    if n >= 3 and (features is not None or neighbours is not None):
        if neighbours is None:
            neighbours = nearest_neighbours(np.asarray(features).reshape(n, -1), max(np.atleast_1d(n_neighbors)))[1]
        nearest = labels[neighbours]
        views["neighbours"] = neighbour_votes(nearest, k, n_neighbors)
    if linear is None and features is not None and n >= 3:
        linear = linear_proba(np.asarray(features).reshape(n, -1), labels, k, folds, random_state)
    if linear is not None:
        views["linear"] = np.asarray(linear, dtype=np.float64)
    weights = view_weights(labels, list(views.values()))
    posterior = sum(w * v for w, v in zip(weights, views.values(), strict=True))
    best, scores = margins(labels, posterior)
    estimate = pair_budget(labels, posterior, proba)
    flags = np.zeros(n, dtype=bool)
    for i, budget in enumerate(np.round(estimate.sum(axis=1)).astype(int)):
        members = np.flatnonzero((labels == i) & (scores > 0))
        flags[members[np.argsort(-scores[members], kind="stable")[:budget]]] = True
    suggested = np.where(flags, best, -1)
    weighted = [v for w, v in zip(weights, views.values(), strict=True) if w > 0]
    unanimous = np.all([margins(labels, v)[1] > 0 for v in weighted], axis=0)
    return LabelIssueResult(scores, flags, suggested, posterior, views, dict(zip(views, weights, strict=True)),
                            nearest, estimate, unanimous)


class LabelIssues(Detector):
    """Flag rows whose label the data's views contradict (per class pair, up to an estimated count);
    suggest a label.

    ``n_neighbors``: the neighbourhood sizes whose label shares are averaged; ``folds``: for the linear
    view's out-of-fold probabilities.

    After :meth:`fit`: the protocol's attributes (``severity_`` is ``poison`` where every weighted view
    rejects the label, ``suspect`` where only their mixture does), ``posterior_`` (the mixture),
    ``weights_`` (view name -> weight), ``estimated_errors_`` ((k, k) rows labelled i estimated to belong
    to j).
    """

    name = "label_issues"

    def __init__(self, n_neighbors: Sequence[int] = NEIGHBOURS, folds: int = 5, random_state: int = 0):
        self.n_neighbors = n_neighbors
        self.folds = folds
        self.random_state = random_state

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        neighbours = features = None
        if representation.label_geometry.size:
            features = representation.label_geometry
            neighbours = representation.neighbours(max(np.atleast_1d(self.n_neighbors)), "labels")[1]
        result = label_issue_scores(dataset.y, representation.proba, features, n_neighbors=self.n_neighbors,
                                    neighbours=neighbours, folds=self.folds, random_state=self.random_state)
        names = np.asarray(dataset.classes, dtype=object)
        evidence = np.full(dataset.n_rows, "", dtype=object)
        nearest = result.neighbours[:, :10]
        for i in np.flatnonzero(result.flags):
            given, other = dataset.y[i], result.suggested[i]
            said = [f"model {result.views['model'][i, given]:.2f} vs {result.views['model'][i, other]:.2f}"]
            if nearest.size:
                said.append(f"{int(np.sum(nearest[i] == other))}/{nearest.shape[1]} nearest neighbours say "
                            f"{names[other]}")
            if "linear" in result.views:
                said.append(f"linear {result.views['linear'][i, given]:.2f} vs {result.views['linear'][i, other]:.2f}")
            evidence[i] = (f"label issue: given {names[given]}, the data says {names[other]} ("
                           + "; ".join(said) + f"); rows labelled {names[given]} that look like {names[other]} in "
                           f"this data: about {result.estimate[given, other]:.0f}")
        self.posterior_, self.weights_ = result.posterior, result.weights
        self.abstain_ = "" if result.flags.any() else "no label the data contradicts"
        self.estimated_errors_ = result.estimate
        severity = np.where(result.flags, np.where(result.unanimous, "poison", "suspect"), "")
        self.summary_ = {"weights": {v: round(float(w), 2) for v, w in result.weights.items()},
                         "poison": int((severity == "poison").sum()), "suspect": int((severity == "suspect").sum())}
        return self._set(result.scores, result.flags, evidence, result.suggested, severity=severity)


__all__ = ["LabelIssueResult", "LabelIssues", "confident_joint", "label_issue_scores", "linear_proba", "margins",
           "neighbour_votes", "off_diagonal", "pair_budget", "view_weights"]
