"""Clustering outliers, per class: small, tight groups of rows that sit apart from the rest of their class.

Poisoned rows are often made alike (copies with a trigger, perturbations of one seed, one crafted pattern)
and labelled into one class, so in a representation they form a small tight cluster next to, not inside,
the class's own mass (Chen et al. 2018, "Detecting backdoor attacks on deep neural networks by activation
clustering"). Each row alone may look ordinary to an outlier score: they are suspicious *as a group*.

Per class, on the first (up to 10) principal components of ``representation.features``, two clusterings
propose candidate groups: HDBSCAN (Campello, Moulavi & Sander 2013, "Density-based clustering based on
hierarchical density estimates", PAKDD), which isolates small dense groups however few they are, and
k-means for k = 2..10 (Lloyd 1982, k-means++ seeding), which proposes larger ones. Each candidate is judged
by the silhouette of the two-way split {group, rest of the class} (Rousseeuw 1987, "Silhouettes: a
graphical aid to the interpretation and validation of cluster analysis", J. Comput. Appl. Math.): for a
member, ``s = (b - a) / max(a, b)`` with ``a`` its mean distance to the group and ``b`` to the rest of the
class. A group is flagged, all its rows together, when

- it is small: at least ``min_size`` rows and at most ``max_share`` of its class;
- it is well apart: its mean silhouette is at least 0.7, what Kaufman & Rousseeuw (1990, *Finding Groups
  in Data*) call a strong structure, and far out (Tukey's fence, :mod:`mithridate.detect.fences`) among
  the silhouettes of all candidate groups of the data, i.e. beyond the data's own natural sub-structure
  (clean digits, breast_cancer and wine give fences of 0.55-0.78 and best groups of 0.46-0.70, a planted
  group of near-copies about 0.95);
- it is tight: its mean internal distance is below the median distance between rows of the rest of the
  class (a loose scatter of far rows is a job for the per-row outlier detectors).

These are scale-free properties of the data's own geometry; no contamination rate is involved. A flagged
group's rows carry the p-value of its silhouette against the empirical null of all candidates'
silhouettes (:func:`mithridate.detect.fences.null_pvalues`). What the detector finds are data-quality
notes: real data has tight sub-populations too, and a group alone is no evidence of poisoning (the
backdoor detectors test whether a group is shifted copies of other classes).

Big classes are clustered on a random sample of :data:`MAX_CLUSTERED_ROWS` rows (HDBSCAN's cost grows
faster than linearly), every other row joining the cluster of its nearest sampled row; a group then needs
``min_size`` rows in the sample, so in a class of 100,000 rows a group of fewer than about 50 can be missed
(the per-row and duplicate detectors still see its rows).

>>> from mithridate.data import demo
>>> from mithridate.represent import Representation, TableEncoder
>>> ds = demo("wine")
>>> rep = Representation(TableEncoder().fit_transform(ds.features), np.full((178, 3), 1 / 3), "table")
>>> int(ClusterOutliers().fit(ds, rep).flags_.sum())
0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
from scipy.spatial.distance import cdist, pdist
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from mithridate.data import Dataset
from mithridate.detect.base import Detector
from mithridate.detect.fences import FAR_OUT, MIN_CLASS_SIZE, classes_to_score, null_pvalues
from mithridate.represent import Representation

STRONG_STRUCTURE = 0.7
"""Kaufman & Rousseeuw's silhouette level for a strong structure."""

MAX_CLUSTERED_ROWS = 10_000
"""Rows per class the clusterings run on; bigger classes are sampled."""


@dataclass(frozen=True)
class Group:
    """A candidate group: its rows (positions in the class), split silhouette and tightness."""

    members: np.ndarray
    silhouette: float
    spread: float  # mean distance between members
    rest_spread: float  # median distance between rows of the rest of the class
    k: int

    def tight(self) -> bool:
        return self.spread < self.rest_spread


def subsample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``size`` of ``rows`` (all of them if there are few), in order."""
    return rows if len(rows) <= size else np.sort(rng.choice(rows, size, replace=False))


def split_silhouette(x: np.ndarray, members: np.ndarray, rest: np.ndarray) -> float:
    """Mean silhouette of ``members`` in the two-way split {members, rest} (either may be a sample)."""
    a = cdist(x[members], x[members]).sum(1) / max(len(members) - 1, 1)
    b = cdist(x[members], x[rest]).mean(1)
    return float(np.mean((b - a) / np.maximum(np.maximum(a, b), 1e-12)))


def candidate_groups(x: np.ndarray, max_k: int = 10, min_size: int = 5, max_share: float = 1 / 3,
                     n_components: int = 10, sample: int = 2000, max_rows: int = MAX_CLUSTERED_ROWS,
                     random_state: int = 0) -> list[Group]:
    """Every small cluster that HDBSCAN or k-means (k = 2..max_k) finds in one class's rows ``x``, best
    silhouette first. Distances are estimated on samples of at most ``sample`` rows. A class of more than
    ``max_rows`` rows is clustered on a random sample of that many (HDBSCAN's cost grows faster than
    linearly), and every other row joins the cluster of its nearest sampled row."""
    n = len(x)
    rng = np.random.default_rng(random_state)
    z = np.asarray(x, dtype=np.float64).reshape(n, -1)
    p = min(n_components, z.shape[1], n - 1)
    if p < z.shape[1]:
        z = PCA(p, random_state=random_state).fit_transform(z)
    fitted = subsample(np.arange(n), max_rows, rng)
    nearest = None if len(fitted) == n else \
        NearestNeighbors(n_neighbors=1).fit(z[fitted]).kneighbors(z, return_distance=False)[:, 0]

    def spread(labels: np.ndarray) -> np.ndarray:
        return labels if nearest is None else labels[nearest]

    partitions = [(0, spread(HDBSCAN(min_cluster_size=min_size, copy=True).fit_predict(z[fitted])))]
    partitions += [(k, spread(KMeans(k, n_init=3, random_state=random_state).fit_predict(z[fitted])))
                   for k in range(2, min(max_k, len(fitted) // min_size) + 1)]
    groups, seen = [], set()
    for k, labels in partitions:
        for c in range(labels.max() + 1):
            members = np.flatnonzero(labels == c)
            key = members.tobytes()
            if not min_size <= len(members) <= max_share * n or key in seen:
                continue
            seen.add(key)
            inside = subsample(members, sample, rng)
            rest = subsample(np.setdiff1d(np.arange(n), members), sample, rng)
            groups.append(Group(members, split_silhouette(z, inside, rest),
                                float(np.mean(pdist(z[inside]))), float(np.median(pdist(z[rest]))), k))
    return sorted(groups, key=lambda g: -g.silhouette)


def cluster_outliers(features: np.ndarray, y: np.ndarray, min_size: int = 5, max_share: float = 1 / 3,
                     min_silhouette: float = STRONG_STRUCTURE, max_k: int = 10, random_state: int = 0,
                     ) -> tuple[np.ndarray, np.ndarray, list[Group], float, np.ndarray]:
    """``(scores, group_of_row, groups, threshold, pvalues)``: each row's best split silhouette among the
    small groups it belongs to (0 if none), the index in ``groups`` of the flagged group it is in (-1 if
    none), the flagged groups (``members`` as positions in ``features``; they do not overlap), the
    silhouette threshold used (``min_silhouette`` or, if higher, Tukey's far-out fence of all candidates'
    silhouettes) and the p-value of each flagged group's silhouette among the candidates' (one per group)."""
    features = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    scores = np.zeros(len(features))
    candidates: list[Group] = []
    for _, rows in classes_to_score(y, max(MIN_CLASS_SIZE, 2 * min_size)):
        for g in candidate_groups(features[rows], max_k, min_size, max_share, random_state=random_state):
            members = rows[g.members]
            scores[members] = np.maximum(scores[members], g.silhouette)
            candidates.append(Group(members, g.silhouette, g.spread, g.rest_spread, g.k))
    silhouettes = np.array([g.silhouette for g in candidates])
    threshold = min_silhouette
    if len(silhouettes) >= 4:
        q1, q3 = np.percentile(silhouettes, [25, 75])
        threshold = max(threshold, float(q3 + FAR_OUT * (q3 - q1)))
    group_of = np.full(len(features), -1, dtype=np.int64)
    flagged: list[Group] = []
    for g in sorted(candidates, key=lambda g: -g.silhouette):
        if g.silhouette >= threshold and g.tight() and (group_of[g.members] < 0).all():
            group_of[g.members] = len(flagged)
            flagged.append(g)
    null = null_pvalues(np.r_[silhouettes, [g.silhouette for g in flagged]],
                        np.zeros(len(silhouettes) + len(flagged), dtype=np.int64), min_class_size=4)
    return scores, group_of, flagged, threshold, null[len(silhouettes):]


class ClusterOutliers(Detector):
    """Per-class HDBSCAN and k-means with split silhouettes; notes small, tight, well-separated groups.

    ``groups_``: the group of each row (-1 if none); ``group_info_``: one dict per group.
    """

    name = "clusters"
    finds = "note"

    def __init__(self, min_size: int = 5, max_share: float = 1 / 3, min_silhouette: float = STRONG_STRUCTURE,
                 max_k: int = 10, random_state: int = 0):
        self.min_size = min_size
        self.max_share = max_share
        self.min_silhouette = min_silhouette
        self.max_k = max_k
        self.random_state = random_state

    def fit(self, dataset: Dataset, representation: Representation) -> Self:
        scores, self.groups_, groups, self.threshold_, group_p = cluster_outliers(
            representation.features, dataset.y, self.min_size, self.max_share, self.min_silhouette,
            self.max_k, self.random_state)
        counts = np.bincount(dataset.y, minlength=dataset.n_classes)
        evidence = np.full(dataset.n_rows, "", dtype=object)
        pvalues = np.ones(dataset.n_rows)
        self.group_info_ = []
        for gid, g in enumerate(groups):
            pvalues[g.members] = group_p[gid]
            c = int(dataset.y[g.members[0]])
            label = dataset.classes[c]
            self.group_info_.append({"group": gid, "class": label, "rows": dataset.row_id[g.members].tolist(),
                                     "silhouette": g.silhouette, "share": len(g.members) / counts[c]})
            evidence[g.members] = (
                f"member of group {gid}: {len(g.members)} rows of class {label!r} "
                f"({len(g.members) / counts[c]:.0%} of it) forming a tight cluster apart from the rest "
                f"(split silhouette {g.silhouette:.2f}, spread {g.spread / g.rest_spread:.2f} of the class's; "
                f"p = {group_p[gid]:.1e} among the data's candidate groups)")
        return self._set(scores, self.groups_ >= 0, evidence, pvalues=pvalues)
