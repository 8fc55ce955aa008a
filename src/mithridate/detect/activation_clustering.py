"""Activation clustering, per class, with a poisoned-or-not verdict and no poison rate to supply.

Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava (2018, "Detecting backdoor attacks
on deep neural networks by activation clustering", AAAI SafeAI workshop): reduce each class's
last-hidden-layer activations to 10 independent components (FastICA) and split them in two with k-means;
a poisoned class splits into its clean rows and the poison. Which cluster is poison, and whether there is
any, the paper decides by exclusionary reclassification (retrain without the cluster, see where its rows
go), relative size or silhouette. ART's ``ActivationDefence`` defaults to calling the smaller cluster of
*every* class poison, so it flags a large share of clean data.

Here, per class of ``representation.features`` (the penultimate layer of the network trained on the
poisoned data):

1. PCA then FastICA to ``n_components`` components, k-means with two clusters;
2. each cluster in turn is the candidate group and the other the core; the verdict of
   :mod:`.backdoor_base` (exclusionary reclassification without retraining: a model of the other classes
   reads the group's content, and the group must fit shifted copies of other classes better than a
   sub-population of its own) picks the cluster that fits best, if any fits;
3. its copies are flagged. No relative size is assumed, so a class that is half poison is handled too.

Each row's score is its silhouette-style margin ``(b - a) / max(a, b)`` in the reduced space, ``a`` its
distance to its own cluster's centre and ``b`` to the other's, signed negative in the larger cluster.

>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=(600, 8)), np.repeat([0, 1, 2], 200)
>>> x[y == 1, 0] += 6; x[y == 2, 1] += 6   # three clean classes
>>> flags, _, verdicts = activation_clustering(x, y)
>>> int(flags.sum()), [v.poisoned for v in verdicts]
(0, [False, False, False])
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning

from mithridate.detect.backdoor_base import BackdoorDetector, ClassVerdict, Proposal, classwise_verdicts


def two_clusters(x: np.ndarray, n_components: int = 10, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(cluster, margin)`` of each row of one class ``x`` (n, d): its k-means cluster (0, 1) on the
    ICA-reduced activations and its margin ``(b - a) / max(a, b)``."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    p = int(min(n_components, x.shape[1], len(x) - 1))
    z = PCA(p, random_state=random_state).fit_transform(x)
    z = z[:, z.std(0) > 1e-9 * max(z.std(), 1e-300)]
    if z.shape[1] > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            z = FastICA(z.shape[1], whiten="unit-variance", max_iter=1000,
                        random_state=random_state).fit_transform(z)
    km = KMeans(2, n_init=10, random_state=random_state).fit(z)
    distances = km.transform(z)
    own = distances[np.arange(len(z)), km.labels_]
    other = distances[np.arange(len(z)), 1 - km.labels_]
    return km.labels_, (other - own) / np.maximum(np.maximum(own, other), 1e-12)


def activation_clustering(features: np.ndarray, y: np.ndarray, n_components: int = 10, random_state: int = 0,
                          n_classes: int | None = None, geometry: np.ndarray | None = None,
                          ) -> tuple[np.ndarray, np.ndarray, list[ClassVerdict]]:
    """``(flags, scores, verdicts)`` for every row of ``features`` labelled ``y`` (one verdict per scored
    class; its ``threshold`` is the group cluster's mean margin). Either cluster may be the poison: both
    are judged, the smaller first."""
    def propose(x: np.ndarray) -> Proposal:
        cluster, margin = two_clusters(x, n_components, random_state)
        larger = int(np.bincount(cluster, minlength=2).argmax())
        groups = [(cluster == k, float(margin[cluster == k].mean())) for k in (1 - larger, larger)]
        return np.where(cluster == larger, -margin, margin), groups

    return classwise_verdicts(features, y, propose, random_state, n_classes, geometry)


class ActivationClustering(BackdoorDetector):
    """Chen et al.'s activation clustering per class on the penultimate layer, with a poisoned-class verdict.

    ``classes_``: one dict per scored class (cluster size, copy fit, verdict); ``poisoned_classes_``:
    codes of the classes found poisoned.
    """

    name = "activation_clustering"
    method = "activation clustering"

    def __init__(self, n_components: int = 10, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def verdicts(self, features, y, n_classes, geometry=None):
        return activation_clustering(features, y, self.n_components, self.random_state, n_classes, geometry)

    def note(self, verdict, row, scores):
        return (f"row's k-means margin {abs(scores[row]):.2f} (the {len(verdict.group)}-row cluster's mean "
                f"{verdict.threshold:.2f})")
