"""Multivariate tests: shifts no single column shows, on the baseline's encoding of the rows.

- :func:`mmd_test`: maximum mean discrepancy with a Gaussian kernel (bandwidth: the median pairwise
  distance) and a permutation test (Gretton, Borgwardt, Rasch, Schölkopf & Smola 2012, "A kernel
  two-sample test", JMLR). The p-value comes from a gamma distribution matched to the permutation
  statistics' mean and variance (Gretton, Fukumizu, Harchaoui & Sriperumbudur 2009), so it is not floored at
  1 / (permutations + 1) and survives a correction for hundreds of tests.
- :func:`classifier_test`: classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting classifier
  two-sample tests", ICLR): a gradient-boosted model learns to tell batch rows from baseline rows on one
  half; on the other half, the Mann-Whitney test of its scores (equivalently, its AUC against 0.5) gives an
  exact p-value.
- :func:`correlation_test`: the squared distance between the batch's and the baseline's correlation
  matrices of the numeric columns, against its permutation distribution (gamma-matched as above).

Each subsamples (``max_rows`` per side) so a million-row batch costs what a thousand-row one does.

>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + [0.5, 0, 0]
>>> stat, p, p_perm = mmd_test(a, b, permutations=100, random_state=0)
>>> p < 0.01
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from mithridate.validate.results import Check

TESTS = ("mmd", "classifier", "correlation")  # MULTIVARIATE's keys (a test checks they agree)


def _subsample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[np.sort(rng.choice(len(x), k, replace=False))]


def gamma_pvalue(observed: float, null: np.ndarray) -> float:
    """Upper tail of a gamma matched to the mean and variance of ``null`` (clipped into (0, 1])."""
    mean, var = float(np.mean(null)), float(np.var(null, ddof=1))
    if mean <= 0 or var <= 0:
        return float((1 + np.sum(null >= observed)) / (1 + len(null)))
    return float(max(stats.gamma.sf(observed, mean**2 / var, scale=var / mean), 1e-300))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 200, random_state: int = 0
             ) -> tuple[float, float, float]:
    """``(MMD², gamma-matched p-value, permutation p-value)`` of samples ``x`` and ``y`` (rows)."""
    rng = np.random.default_rng(random_state)
    z = np.vstack([x, y]).astype(np.float64)
    d2 = cdist(z, z, "sqeuclidean")
    upper = d2[np.triu_indices(len(z), 1)]
    bandwidth2 = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    k = np.exp(-d2 / bandwidth2)
    nx, ny = len(x), len(y)
    signs = np.r_[np.full(nx, 1.0 / nx), np.full(ny, -1.0 / ny)]
    observed = float(signs @ k @ signs)
    perm = np.stack([rng.permutation(signs) for _ in range(permutations)], axis=1)
    null = np.sum(perm * (k @ perm), axis=0)
    return observed, gamma_pvalue(observed, null), float((1 + np.sum(null >= observed)) / (1 + permutations))


def classifier_test(x: np.ndarray, y: np.ndarray, random_state: int = 0) -> tuple[float, float]:
    """``(AUC, one-sided p-value)``: can a model tell rows of ``y`` from rows of ``x`` on held-out rows?"""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split

    z = np.vstack([x, y])
    t = np.r_[np.zeros(len(x)), np.ones(len(y))]
    z_tr, z_te, t_tr, t_te = train_test_split(z, t, test_size=0.5, stratify=t, random_state=random_state)
    model = HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15, learning_rate=0.1,
                                           early_stopping=False, random_state=random_state)
    with threadpool_limits(1, user_api="openmp"):  # a few thousand rows: threads cost more than they give
        score = model.fit(z_tr, t_tr).predict_proba(z_te)[:, 1]
    res = stats.mannwhitneyu(score[t_te == 1], score[t_te == 0], alternative="greater")
    auc = float(res.statistic) / ((t_te == 1).sum() * (t_te == 0).sum())
    return auc, float(res.pvalue)


def _corr(x: np.ndarray) -> np.ndarray:
    c = np.corrcoef(x, rowvar=False)
    return np.nan_to_num(np.atleast_2d(c))


def correlation_test(x: np.ndarray, y: np.ndarray, permutations: int = 100, random_state: int = 0
                     ) -> tuple[float, float, np.ndarray]:
    """``(sum of squared correlation differences, gamma-matched p-value, difference matrix)``."""
    rng = np.random.default_rng(random_state)
    iu = np.triu_indices(x.shape[1], 1)

    def stat(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
        diff = _corr(b) - _corr(a)
        return float(np.sum(diff[iu] ** 2)), diff

    observed, diff = stat(x, y)
    z, nx = np.vstack([x, y]), len(x)
    null = np.empty(permutations)
    for b in range(permutations):
        order = rng.permutation(len(z))
        null[b] = stat(z[order[:nx]], z[order[nx:]])[0]
    return observed, gamma_pvalue(observed, null), diff


def multivariate_checks(base: np.ndarray, batch: np.ndarray, names: list[str], numeric: int, tests=None,
                        max_rows: int = 1000, permutations: int = 200, random_state: int = 0) -> list[Check]:
    """The multivariate tests on encoded rows (``base``: the baseline sample, ``batch``); the first
    ``numeric`` encoded columns are the numeric ones (the correlation test uses those)."""
    # Hundreds of small matrix products: BLAS threads cost more than they give (and stall a busy machine).
    with threadpool_limits(1, user_api="blas"):
        return _multivariate_checks(base, batch, names, numeric, tests, max_rows, permutations, random_state)


@dataclass
class Samples:
    """What the multivariate tests read: subsamples of the encoded baseline (``xb``) and batch (``yb``), and
    the random state they keep drawing from, in the order the tests run."""

    xb: np.ndarray
    yb: np.ndarray
    names: list[str]
    numeric: int
    max_rows: int
    permutations: int
    random_state: int
    rng: np.random.Generator


def _mmd(s: Samples) -> Check:
    x, y = _subsample(s.xb, min(len(s.yb), s.max_rows // 2), s.rng), _subsample(s.yb, s.max_rows // 2, s.rng)
    stat, p, p_perm = mmd_test(x, y, s.permutations, s.random_state)
    return Check("mmd", "mmd", "multivariate", None, stat, p, stat, "mmd2",
                 f"{len(x)} + {len(y)} rows, {s.permutations} permutations (permutation p {p_perm:.3g})")


def _classifier(s: Samples) -> Check:
    x = _subsample(s.xb, len(s.yb), s.rng)
    auc, p = classifier_test(x, s.yb, s.random_state)
    return Check("classifier", "classifier", "multivariate", None, auc, p, auc, "auc",
                 f"a model tells batch rows from baseline rows with AUC {auc:.3f} (0.5: it cannot)")


def _correlation(s: Samples) -> Check | None:
    if s.numeric < 2:
        return None
    varying = [j for j in range(s.numeric) if np.std(s.xb[:, j]) > 0 and np.std(s.yb[:, j]) > 0]
    if len(varying) < 2:
        return None
    stat, p, diff = correlation_test(s.xb[:, varying], s.yb[:, varying], max(50, s.permutations // 2),
                                     s.random_state)
    i, j = np.unravel_index(np.argmax(np.abs(np.triu(diff, 1))), diff.shape)
    a, b = s.names[varying[i]], s.names[varying[j]]
    return Check("correlation", "correlation", "multivariate", None, stat, p, float(abs(diff[i, j])),
                 "max_abs_corr_diff", f"largest change: corr({a}, {b}) {diff[i, j]:+.2f}")


MULTIVARIATE: dict[str, Callable[[Samples], Check | None]] = {
    "mmd": _mmd, "classifier": _classifier, "correlation": _correlation}
"""The multivariate tests, in the order they run (and draw from the random state)."""


def _multivariate_checks(base: np.ndarray, batch: np.ndarray, names: list[str], numeric: int, tests,
                         max_rows: int, permutations: int, random_state: int) -> list[Check]:
    tests = set(TESTS if tests is None else tests)
    rng = np.random.default_rng(random_state)
    if len(batch) < 10 or len(base) < 10:
        return []
    xb = _subsample(base, 2 * max_rows, rng)
    yb = _subsample(batch, max_rows, rng)
    s = Samples(xb, yb, names, numeric, max_rows, permutations, random_state, rng)
    return [check for name, test in MULTIVARIATE.items() if name in tests and (check := test(s)) is not None]
