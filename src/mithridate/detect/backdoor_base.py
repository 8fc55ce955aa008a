"""Shared by the backdoor detectors (spectral signatures, activation clustering, SPECTRE): the per-class
verdict "is this class poisoned?", the estimate of which of its rows are, and the rows' evidence.

Every backdoor detector proposes, in each class, a suspicious group (rows far out on its own score) and
the rest (the core). On clean data such a group always exists: classes have natural sub-populations
(digits "1" with and without a base stroke, "9"s that resemble "8"s), and a detector that flags the
far side of every class (as ART's filters do) flags clean data too. What sets a dirty-label backdoor
apart is where the group's rows *come from*: the attacker stamps one trigger on rows of other classes and
relabels them, so in the penultimate layer of the network trained on them each poisoned row is its
source row moved by (nearly) one common shift, the trigger's. The verdict tests exactly that.

1. Content, as in Chen et al.'s exclusionary reclassification (2018) but without retraining the
   network: a linear model fitted on the *other* classes (it never saw the class under test, nor
   therefore the trigger, so it reads only content) names the class each row of the group looks like.
2. Copy model: each group row is the mean of the class it looks like plus one common shift ``t``, fitted
   by least squares. Blob model: each group row is the group's mean plus noise. Both spend one vector.
3. ``R2 = 1 - SS(copy) / SS(blob)``. The class is declared poisoned when ``R2 > 0`` and the group looks
   like two classes or more (``exp`` of the entropy of its content labels, Hill's effective number,
   at least 2; with one class the copy model *is* the blob model): its outlying rows are better
   explained as shifted copies of other classes than as a sub-population of their own.

Measured on digits, 12 networks (3 clean; patch and blend triggers at 1-10% aimed at classes 0, 2, 3, 5
and 7), with SPECTRE's groups: the 120 clean classes give R2 from -3.8 to -0.14 (a sub-population is
one blob, and copies of several classes with one shift do not fit it); the 9 targeted classes give 0.20
to 0.61. The rule has no threshold to tune and needs no poison rate. It assumes a dirty-label backdoor
fed from several source classes (BadNets, blended triggers): with a single source class (or two classes
in all) the copy model is one class plus a shift, no better than the blob, so nothing is flagged; on
clean wine and breast_cancer tables nothing is flagged either.

Which rows: the rows of the group of a poisoned class that a shifted copy of some other class (``t``
refitted on the kept rows, to a fixed point) explains better than the mean of the class's other rows
does, so the clean tail of the class that fell into the group is dropped; and the rows below the group's
cut that such a copy explains at least as well as it explains the median kept row, so poisoned rows the
cut missed are recovered (with half of digits' class 0 poisoned by a blended trigger, 9 of the 180
poisoned rows sat below it) while atypical clean rows stay.

>>> mixing(np.array([1, 1, 2, 3]))  # doctest: +ELLIPSIS
2.82...
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import classes_to_score
from mithridate.represent import Representation

MIN_GROUP = 3
"""A suspicious group needs at least this many rows to be judged."""

MIN_SOURCES = 2.0
"""The group must look like at least this many classes (its mixing): a backdoor fed from several sources."""

MAX_DIMS = 256
"""Content models read at most this many principal components of the features."""


def log_otsu(values: np.ndarray) -> float:
    """Otsu's threshold (1979, "A threshold selection method from gray-level histograms", IEEE SMC) on
    ``log(values)``: the cut that maximises the between-group variance of the two sides. Returned on the
    original scale; values strictly above it form the upper group."""
    v = np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-300))
    order = np.sort(v)
    n = len(order)
    if n < 2 or order[0] == order[-1]:
        return float(np.exp(order[-1]))
    k = np.arange(1, n)
    cum = np.cumsum(order)[:-1]
    below, above = cum / k, (order.sum() - cum) / (n - k)
    between = k * (n - k) * (below - above) ** 2
    between[order[1:] == order[:-1]] = -1  # cut only between distinct values
    i = int(np.argmax(between))
    return float(np.exp((order[i] + order[i + 1]) / 2))


def mixing(labels: np.ndarray) -> float:
    """Effective number of distinct values in ``labels``: ``exp`` of their Shannon entropy (1 for none)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return 1.0
    p = np.unique(labels, return_counts=True)[1] / len(labels)
    return float(np.exp(-(p * np.log(p)).sum()))


class ContentModel:
    """Leave-one-class-out content models on one feature matrix: for class ``c``, a multinomial logistic
    regression fitted on the rows of all other classes predicts what the rows of ``c`` look like."""

    def __init__(self, features: np.ndarray, y: np.ndarray, random_state: int = 0):
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        self.raw = x
        if x.shape[1] > MAX_DIMS:
            x = PCA(MAX_DIMS, random_state=random_state).fit_transform(x)
        # one global scale, not per column: a unit that only the trigger lights is ~0 in other classes,
        # and per-column standardising would blow it up
        self.x = (x - x.mean(0)) / (x.std() or 1.0)
        self.y = np.asarray(y)
        self.random_state = random_state
        self._labels: dict[int, np.ndarray] = {}

    def labels(self, c: int, rows: np.ndarray) -> np.ndarray:
        """What the rows ``rows`` (of class ``c``) look like to a model of the other classes."""
        if c not in self._labels:
            others = self.y != c
            present = np.unique(self.y[others])
            labels = np.full(len(self.y), present[0] if len(present) else -1)
            if len(present) >= 2:  # with one other class, every row "looks like" it
                model = LogisticRegression(C=0.1, tol=1e-3, max_iter=500, random_state=self.random_state)
                model.fit(self.x[others], self.y[others])
                mine = np.flatnonzero(~others)
                labels[mine] = model.predict(self.x[mine])
            self._labels[c] = labels
        return self._labels[c][rows]


@dataclass
class ClassVerdict:
    """One class's verdict. ``group``, ``core`` and ``flagged`` are row positions in the dataset."""

    cls: int
    group: np.ndarray
    core: np.ndarray
    threshold: float
    poisoned: bool = False
    fit: float = float("nan")  # R2 of the copy model against the blob model
    group_mixing: float = float("nan")
    core_mixing: float = float("nan")
    flagged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    looks_like: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    why: str = ""

    def as_dict(self, classes: tuple) -> dict:
        return {"class": classes[self.cls], "rows": len(self.group) + len(self.core), "group": len(self.group),
                "flagged": len(self.flagged), "threshold": self.threshold, "copy_fit": self.fit,
                "group_mixing": self.group_mixing, "core_mixing": self.core_mixing, "poisoned": self.poisoned,
                "why": self.why}


def copy_fit(x: np.ndarray, means: np.ndarray) -> tuple[float, np.ndarray]:
    """``(R2, t)``: rows ``x`` modelled as ``means`` (one row per row of ``x``) plus one common shift ``t``,
    against ``x``'s own mean."""
    offsets = x - means
    t = offsets.mean(0)
    blob = ((x - x.mean(0)) ** 2).sum()
    return (float(1 - ((offsets - t) ** 2).sum() / blob) if blob > 0 else 0.0), t


def copies(x: np.ndarray, group: np.ndarray, centres: np.ndarray, max_iter: int = 20) -> np.ndarray:
    """Which rows of a class (``x``) are shifted copies of other classes (centres ``centres``), starting from
    the rows in ``group`` (a mask); the shift is refitted on the kept rows until nothing changes.

    A row's ratio is its distance to the nearest shifted centre over its distance to the mean of the class's
    other rows. A group row is kept when its ratio is below 1 (a copy explains it better); a row outside the
    group must do at least as well as the median kept group row (it must look like a typical copy, not
    merely an atypical member of its class)."""
    keep = group.copy()
    for _ in range(max_iter):
        if keep.sum() == 0 or keep.all():
            break
        t = x[keep].mean(0) - centres.mean(0)
        for _ in range(max_iter):  # nearest shifted centre <-> shift, to a fixed point
            nearest = cdist(x[keep] - t, centres).argmin(1)
            t_new = (x[keep] - centres[nearest]).mean(0)
            if np.allclose(t_new, t):
                break
            t = t_new
        ratio = cdist(x - t, centres).min(1) / np.maximum(np.linalg.norm(x - x[~keep].mean(0), axis=1), 1e-12)
        new = group & (ratio < 1)
        if new.any():
            new |= ~group & (ratio <= np.median(ratio[new]))
        if (new == keep).all() or new.all():  # the whole class is never a copy of others
            break
        keep = new
    return keep


def judge(verdict: ClassVerdict, content: ContentModel, n_classes: int, second_look: bool = False) -> ClassVerdict:
    """Fill in ``verdict``: is its group shifted copies of other classes (poisoned) or a natural
    sub-population? If poisoned, which of its rows are copies. A ``second_look`` (a smaller group of a
    class already judged once) must look like one more class, and like more classes than the rest of
    its class: copies come from elsewhere, a natural tail from the class itself."""
    if len(verdict.group) < MIN_GROUP:
        verdict.why = f"no group of {MIN_GROUP} or more outlying rows"
        return verdict
    x = content.raw
    rows = np.r_[verdict.group, verdict.core]
    labels = content.labels(verdict.cls, rows)
    g, c = labels[:len(verdict.group)], labels[len(verdict.group):]
    verdict.group_mixing, verdict.core_mixing = mixing(g), mixing(c)
    others = [j for j in range(n_classes) if j != verdict.cls and (content.y == j).any()]
    centres = np.array([x[content.y == j].mean(0) for j in range(n_classes)]) if others else None
    if centres is None or (g < 0).any():
        verdict.why = "no other class to compare with"
        return verdict
    verdict.fit, _ = copy_fit(x[verdict.group], centres[g])
    # with one content class the copy model *is* the blob model (R2 = 0 up to rounding): ask for two at least
    mixed = (verdict.group_mixing >= MIN_SOURCES + 1 and verdict.group_mixing > verdict.core_mixing
             if second_look else verdict.group_mixing >= MIN_SOURCES)
    verdict.poisoned = bool(mixed and verdict.fit > 0)
    verdict.why = (f"its {len(verdict.group)} outlying rows fit shifted copies of other classes "
                   f"{'better' if verdict.poisoned else 'worse'} than one sub-population "
                   f"(R2 {verdict.fit:+.2f}; they look like {verdict.group_mixing:.1f} classes, "
                   f"the rest like {verdict.core_mixing:.1f})")
    if verdict.poisoned:
        keep = copies(x[rows], np.arange(len(rows)) < len(verdict.group), centres[others])
        verdict.flagged, verdict.looks_like = rows[keep], labels[keep]
    return verdict


Proposal = tuple[np.ndarray, list[tuple[np.ndarray, float]]]
"""One class's row scores and its candidate groups: each a mask over the class's rows and the threshold
that made it."""


def classwise_verdicts(features: np.ndarray, y: np.ndarray, propose: Callable[[np.ndarray], Proposal],
                       random_state: int = 0, n_classes: int | None = None,
                       ) -> tuple[np.ndarray, np.ndarray, list[ClassVerdict]]:
    """``(flags, scores, verdicts)`` for every row of ``features`` labelled ``y``: ``propose`` scores each
    class's rows and names candidate groups, largest first; each candidate is judged, and the class's
    verdict is its first poisoned candidate or else its first. (Not the best-fitting one: the purest few
    copies always fit best, and a small group leaves most copies to the recovery step; on digits with a 5%
    blended trigger that kept half of them.) Candidates after the first are extra looks at the class, so
    they must look like one more source class, and like more classes than the rest of the class (on
    digits, half of class 4's natural tail, looking like 3.4 classes against 5.3 for the rest, fitted
    copies with R2 +0.05)."""
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    y = np.asarray(y)
    n_classes = int(n_classes or y.max() + 1)
    scores = np.zeros(len(features))
    content = ContentModel(features, y, random_state)
    verdicts = []
    for c, rows in classes_to_score(y):
        scores[rows], groups = propose(features[rows])
        candidates = [judge(ClassVerdict(c, rows[g], rows[~g], t), content, n_classes, second_look=i > 0)
                      for i, (g, t) in enumerate(groups)]
        poisoned = [v for v in candidates if v.poisoned]
        verdicts.append(poisoned[0] if poisoned else candidates[0])
    flags = np.zeros(len(features), dtype=bool)
    for v in verdicts:
        flags[v.flagged] = True
    return flags, scores, verdicts


def flags_and_evidence(n: int, verdicts: list[ClassVerdict], classes: tuple, method: str,
                       note: Callable[[ClassVerdict, int], str]) -> tuple[np.ndarray, np.ndarray]:
    """Flag the copies of every poisoned class. Each flagged row's evidence names its class, why the class
    looks poisoned, the detector's ``note`` on the row and the class the row looks like."""
    flags = np.zeros(n, dtype=bool)
    evidence = np.full(n, "", dtype=object)
    for v in verdicts:
        flags[v.flagged] = True
        for row, looks in zip(v.flagged, v.looks_like, strict=True):
            evidence[row] = (f"{method}: class {classes[v.cls]!r} looks poisoned ({v.why}); {note(v, row)}; "
                             f"the row looks like class {classes[looks]!r} moved by the class's common shift")
    return flags, evidence


class BackdoorDetector(Detector):
    """What the backdoor detectors share: per-class verdicts on the representation, flags only in classes
    found poisoned, ``classes_`` (one dict per scored class) and ``poisoned_classes_`` (their codes).
    Subclasses set ``name`` and ``method`` and implement :meth:`verdicts` and :meth:`note`."""

    skip_flagged_by = ("label_issues",)
    method = "backdoor detector"

    @abstractmethod
    def verdicts(self, features: np.ndarray, y: np.ndarray,
                 n_classes: int) -> tuple[np.ndarray, np.ndarray, list[ClassVerdict]]:
        """The functional core's ``(flags, scores, verdicts)``."""

    def note(self, verdict: ClassVerdict, row: int, scores: np.ndarray) -> str:
        """What the evidence says about one flagged row."""
        return f"row score {scores[row]:.3g} beyond the class threshold {verdict.threshold:.3g}"

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        _, scores, verdicts = self.verdicts(representation.features, dataset.y, dataset.n_classes)
        self.classes_ = [v.as_dict(dataset.classes) for v in verdicts]
        self.poisoned_classes_ = [v.cls for v in verdicts if v.poisoned]
        self.abstain_ = "" if self.poisoned_classes_ else "no class looks poisoned"
        flags, evidence = flags_and_evidence(dataset.n_rows, verdicts, dataset.classes, self.method,
                                             lambda v, row: self.note(v, row, scores))
        return self._set(scores, flags, evidence)
