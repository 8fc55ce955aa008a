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

Which rows: in a class declared poisoned, each row is judged on its own by :class:`CopyModel`: is it
better explained as a row of some other class moved by that source's shift, or as a member of the class
(Gaussians with their covariances, refitted until the copies settle)? The suspicious group and the rest
of the class each get the share of copies that their rows' likelihood ratios imply (EM), so a row outside
the group must be clearly a copy where copies are rare there, and less so where half the class is
poisoned. The rows are decided in the pixels when the network was ours (a stamped or blended trigger is
one shift there), else in the features. On a 5,000-image MNIST sample with a 1% blended trigger, the
earlier rule (distances to shifted class means, in the features) flagged the 50 poisoned rows and 15
clean ones; the copy model flags 3 clean ones. With half of a class poisoned (a 10% blended trigger) the
features' copy model finds 0.64 of the copies, the pixels' all of them. See docs/scan.md for the
benchmark, triggers that were not looked at while building included.

>>> mixing(np.array([1, 1, 2, 3]))  # doctest: +ELLIPSIS
2.82...
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import classes_to_score
from mithridate.errors import DataError
from mithridate.represent import Representation

MIN_GROUP = 3
"""A suspicious group needs at least this many rows to be judged."""

MIN_SOURCES = 2.0
"""The group must look like at least this many classes (its mixing): a backdoor fed from several sources."""

MAX_DIMS = 256
"""Content models read at most this many principal components of the features."""

COPY_DIMS = 20
"""The copy model (which rows of a poisoned class are copies) reads this many principal components."""

SHIFT_PRIOR_ROWS = 10
"""A source class's own shift is shrunk towards the common shift as if by this many rows."""


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
    copy_ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))  # flagged rows: log-likelihood, copy/member
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


def cholesky(covariance: np.ndarray, ridge: float) -> np.ndarray:
    """The lower Cholesky factor of ``covariance`` plus ``ridge`` on its diagonal (a class whose rows are all
    alike stays proper)."""
    return np.linalg.cholesky(covariance + ridge * np.eye(len(covariance)))


def gaussian_loglik(z: np.ndarray, mean: np.ndarray, chol: np.ndarray) -> np.ndarray:
    """Log-density of each row of ``z`` under a Gaussian (``chol``: its covariance's Cholesky factor), up to
    the constant all Gaussians here share."""
    w = solve_triangular(chol, (z - mean).T, lower=True).T
    return -0.5 * (w ** 2).sum(1) - np.log(np.diag(chol)).sum()


def prior_log_odds(ratio: np.ndarray, max_iter: int = 200) -> float:
    """Log-odds of the share of copies among rows whose copy-over-member log-likelihood ratios are
    ``ratio``: the maximum-likelihood mixing share (EM), so that a side where copies are rare asks more
    of each row."""
    share = 0.5
    for _ in range(max_iter):
        posterior = 1 / (1 + np.exp(-np.clip(ratio + np.log(share / (1 - share)), -50, 50)))
        new = float(np.clip(posterior.mean(), 1e-6, 1 - 1e-6))
        if abs(new - share) < 1e-6:
            break
        share = new
    return float(np.log(share / (1 - share)))


class CopyModel:
    """Which rows of a poisoned class are shifted copies of other classes, decided row by row.

    In the first :data:`COPY_DIMS` principal components of a geometry, every class ``j`` is a Gaussian
    (mean and Ledoit-Wolf covariance of its rows). A row of class ``c`` is a copy when a mixture of the
    other classes' Gaussians, each moved by its source's shift, explains it better than a Gaussian of the
    class's remaining rows does; shifts and the remaining rows are refitted until the copies settle.
    Each source class has its own shift, shrunk towards the common one by :data:`SHIFT_PRIOR_ROWS` rows
    (a network does not move every class by the same vector, and a source with few copies borrows
    strength from the others). Covariances matter: the class's own tail (a slanted "0") is far from the
    class mean but well inside its Gaussian, which a distance to the mean alone could not tell
    (measured on MNIST with a 1% blended trigger: 15 clean rows flagged beside the 50 poisoned with
    distances, 3 with Gaussians).
    """

    def __init__(self, geometry: np.ndarray, y: np.ndarray, random_state: int = 0):
        x = np.asarray(geometry, dtype=np.float64).reshape(len(geometry), -1)
        dims = int(min(COPY_DIMS, x.shape[1], max(1, len(x) - 1)))
        self.z = PCA(dims, random_state=random_state).fit_transform(x) if x.shape[1] > dims else x - x.mean(0)
        self.ridge = 1e-6 * max(float(self.z.var(0).mean()), 1e-12)
        self.y = np.asarray(y)
        self._gaussians: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def gaussian(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Class ``j``'s mean and the Cholesky factor of its covariance (computed once)."""
        if j not in self._gaussians:
            zj = self.z[self.y == j]
            self._gaussians[j] = zj.mean(0), cholesky(LedoitWolf().fit(zj).covariance_, self.ridge)
        return self._gaussians[j]

    def loglik(self, z: np.ndarray, j: int) -> np.ndarray:
        return gaussian_loglik(z, *self.gaussian(j))

    def copies(self, c: int, rows: np.ndarray, start: np.ndarray,
               max_iter: int = 20) -> tuple[np.ndarray, np.ndarray]:
        """``(mask, ratio)`` over ``rows`` (the rows of class ``c``): the copies, refined from the suspicious group
        ``start``. A row is a copy when its log-likelihood ratio (copy over member) plus the log-odds of
        the share of copies on its side of the group (:func:`prior_log_odds`) is positive: outside the
        group, where copies are usually rare, a row must be clearly better explained as a copy. ``ratio``:
        each row's log-likelihood ratio, copy over member."""
        sources = [j for j in np.unique(self.y) if j != c and (self.y == j).sum() >= MIN_GROUP]
        group = np.asarray(start, dtype=bool)
        z, copy = self.z[rows], group.copy()
        ratio = np.full(len(rows), -np.inf)
        if not sources:
            return np.zeros(len(rows), dtype=bool), ratio
        means = np.array([self.gaussian(j)[0] for j in sources])
        for _ in range(max_iter):
            if copy.sum() < MIN_GROUP or (~copy).sum() < MIN_GROUP:
                break
            common = z[copy].mean(0) - means.mean(0)
            for _ in range(max_iter):  # each copy's source <-> the common shift, to a fixed point
                source = np.array([self.loglik(z[copy] - common, j) for j in sources]).argmax(0)
                new_common = (z[copy] - means[source]).mean(0)
                if np.allclose(new_common, common):
                    break
                common = new_common
            loglik = []
            for i, j in enumerate(sources):
                mine = z[copy][source == i]
                own = mine.mean(0) - means[i] if len(mine) else common
                shift = (len(mine) * own + SHIFT_PRIOR_ROWS * common) / (len(mine) + SHIFT_PRIOR_ROWS)
                loglik.append(self.loglik(z - shift, j))
            as_copy = logsumexp(loglik, axis=0) - np.log(len(sources))
            as_member = gaussian_loglik(z, z[~copy].mean(0), cholesky(LedoitWolf().fit(z[~copy]).covariance_,
                                                                       self.ridge))
            ratio = np.nan_to_num(as_copy - as_member, nan=-np.inf)  # neither explains it: not a copy
            new = np.zeros(len(rows), dtype=bool)
            for side in (group, ~group):
                new[side] = ratio[side] + prior_log_odds(ratio[side]) > 0
            if (new == copy).all():
                break
            copy = new
        return (copy if MIN_GROUP <= copy.sum() < len(copy) else np.zeros(len(rows), dtype=bool)), ratio

    def fit_of(self, group: np.ndarray, looks_like: np.ndarray) -> float:
        """R2 of the rows ``group`` as the means of the classes they look like plus one shift (``copy_fit``)."""
        means = np.array([self.gaussian(j)[0] for j in looks_like])
        return copy_fit(self.z[group], means)[0]


def judge(verdict: ClassVerdict, content: ContentModel, n_classes: int, second_look: bool = False,
          copy_models: Sequence[CopyModel] = ()) -> ClassVerdict:
    """Fill in ``verdict``: is its group shifted copies of other classes (poisoned) or a natural
    sub-population? If poisoned, which of its rows are copies. A ``second_look`` (a smaller group of a
    class already judged once) must look like one more class, and like more classes than the rest of
    its class: copies come from elsewhere, a natural tail from the class itself.

    The rows are decided by the first of ``copy_models`` in which the group fits shifted copies (the last
    one decides otherwise): the geometry the labels are judged in first (an image's pixels, where a
    stamped or blended trigger *is* one shift and the copy keeps its source's shape), then the
    network's features (where any trigger becomes roughly one shift)."""
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
        models = list(copy_models) or [CopyModel(x, content.y, content.random_state)]
        model = next(m for m in models if m is models[-1] or m.fit_of(verdict.group, g) > 0)
        keep, ratio = model.copies(verdict.cls, rows, np.arange(len(rows)) < len(verdict.group))
        verdict.flagged, verdict.looks_like, verdict.copy_ratio = rows[keep], labels[keep], ratio[keep]
    return verdict


Proposal = tuple[np.ndarray, list[tuple[np.ndarray, float]]]
"""One class's row scores and its candidate groups: each a mask over the class's rows and the threshold
that made it."""


def classwise_verdicts(features: np.ndarray, y: np.ndarray, propose: Callable[[np.ndarray], Proposal],
                       random_state: int = 0, n_classes: int | None = None, geometry: np.ndarray | None = None,
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
    copy_models = [CopyModel(features, y, random_state)]
    if geometry is not None:
        geometry = np.asarray(geometry, dtype=np.float64).reshape(len(geometry), -1)
        if len(geometry) != len(features) or not np.isfinite(geometry).all():
            raise DataError(f"the geometry needs {len(features)} rows of finite numbers, got {len(geometry)} rows")
        copy_models.insert(0, CopyModel(geometry, y, random_state))
    verdicts = []
    for c, rows in classes_to_score(y):
        scores[rows], groups = propose(features[rows])
        candidates = [judge(ClassVerdict(c, rows[g], rows[~g], t), content, n_classes, i > 0, copy_models)
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
        for row, looks, ratio in zip(v.flagged, v.looks_like, v.copy_ratio, strict=True):
            evidence[row] = (f"{method}: class {classes[v.cls]!r} looks poisoned ({v.why}); {note(v, row)}; "
                             f"the row looks like class {classes[looks]!r} with a trigger: as a shifted copy of "
                             f"another class it is e^{ratio:.0f} times likelier than as a member of its class")
    return flags, evidence


class BackdoorDetector(Detector):
    """What the backdoor detectors share: per-class verdicts on the representation, flags only in classes
    found poisoned, ``classes_`` (one dict per scored class) and ``poisoned_classes_`` (their codes).
    Subclasses set ``name`` and ``method`` and implement :meth:`verdicts` and :meth:`note`."""

    skip_flagged_by = ("label_issues",)
    method = "backdoor detector"

    @abstractmethod
    def verdicts(self, features: np.ndarray, y: np.ndarray, n_classes: int,
                 geometry: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[ClassVerdict]]:
        """The functional core's ``(flags, scores, verdicts)``; ``geometry``: where rows are decided first
        (see :func:`judge`)."""

    def note(self, verdict: ClassVerdict, row: int, scores: np.ndarray) -> str:
        """What the evidence says about one flagged row."""
        return f"row score {scores[row]:.3g} (the class's cut: {verdict.threshold:.3g})"

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        geometry = representation.label_features  # pixels when we trained the network, else None
        _, scores, verdicts = self.verdicts(representation.features, dataset.y, dataset.n_classes, geometry)
        self.classes_ = [v.as_dict(dataset.classes) for v in verdicts]
        self.poisoned_classes_ = [v.cls for v in verdicts if v.poisoned]
        self.abstain_ = "" if self.poisoned_classes_ else "no class looks poisoned"
        # summary.json names the classes found backdoored: their flagged rows are the backdoor finding
        self.summary_ = {"poisoned_classes": [str(dataset.classes[c]) for c in self.poisoned_classes_]}
        flags, evidence = flags_and_evidence(dataset.n_rows, verdicts, dataset.classes, self.method,
                                             lambda v, row: self.note(v, row, scores))
        return self._set(scores, flags, evidence)
