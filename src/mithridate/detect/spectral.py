"""Spectral signatures, per class, with a poisoned-or-not verdict and no poison rate to supply.

Tran, Li & Madry (2018, "Spectral signatures in backdoor attacks", NeurIPS): in the learned
representation of a class, the poisoned rows shift the mean far enough that the top singular vector of
the centred class points at them; each row's score is its squared projection onto that vector. The paper
(and ART's ``SpectralSignatureDefense``) then removes ``1.5 x`` an assumed poison rate from *every*
class, and ART reads the network's last layer (the logits) rather than the penultimate one.

Here, per class of ``representation.features`` (the penultimate layer of the network trained on the
poisoned data):

1. score ``((x_i - mean) . v)^2`` with ``v`` the top right singular vector of the centred class;
2. the suspicious group is the upper side of Otsu's split of the log scores, on the side of the mean
   where the projections have their long tail (the class's own scores set the cut; no poison rate);
3. the class is declared poisoned only if its group fits shifted copies of other classes better than a
   sub-population of its own (:mod:`.backdoor_base`); its rows that are such copies are flagged, nothing
   elsewhere.

A backdoor fed from many source classes spreads its poison over many directions, so one direction
separates it less well than SPECTRE's whitened scores (:mod:`.spectre`) do.

>>> rng = np.random.default_rng(0)
>>> x, y = rng.normal(size=(600, 8)), np.repeat([0, 1, 2], 200)
>>> x[y == 1, 0] += 6; x[y == 2, 1] += 6   # three clean classes
>>> flags, _, verdicts = spectral_signatures(x, y)
>>> int(flags.sum()), [v.poisoned for v in verdicts]
(0, [False, False, False])
"""

from __future__ import annotations

import numpy as np

from mithridate.detect.backdoor_base import BackdoorDetector, ClassVerdict, Proposal, classwise_verdicts, log_otsu


def signature_projections(x: np.ndarray) -> np.ndarray:
    """Projection of each centred row of one class ``x`` (n, d) onto the top right singular vector of the
    centred class, signed so that the longer tail (positive skewness) is positive. Tran et al.'s score is
    its square."""
    centred = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    centred = centred - centred.mean(0)
    projection = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    return projection if (projection ** 3).sum() >= 0 else -projection


def spectral_signatures(features: np.ndarray, y: np.ndarray, random_state: int = 0,
                        n_classes: int | None = None, geometry: np.ndarray | None = None,
                        ) -> tuple[np.ndarray, np.ndarray, list[ClassVerdict]]:
    """``(flags, scores, verdicts)`` for every row of ``features`` labelled ``y`` (one verdict per scored
    class)."""
    def propose(x: np.ndarray) -> Proposal:
        projection = signature_projections(x)
        s = projection ** 2
        cut = log_otsu(s)
        return s, [((s > cut) & (projection > 0), cut)]  # the poison sits on one side: the long tail's

    return classwise_verdicts(features, y, propose, random_state, n_classes, geometry)


class SpectralSignatures(BackdoorDetector):
    """Tran et al.'s spectral signatures per class on the penultimate layer, with a poisoned-class verdict.

    ``classes_``: one dict per scored class (group size, copy fit, verdict); ``poisoned_classes_``: codes
    of the classes found poisoned.
    """

    name = "spectral"
    method = "spectral signature"

    def __init__(self, random_state: int = 0):
        self.random_state = random_state

    def verdicts(self, features, y, n_classes, geometry=None):
        return spectral_signatures(features, y, self.random_state, n_classes, geometry)
