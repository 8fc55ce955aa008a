"""Outlier detectors (isolation forest, LOF, clusters, correlations) on real data with planted anomalies.

Representations are built directly (encoded tables, raw pixels) so no model is trained. Measured figures
(seeds as below) are in comments; thresholds sit a margin below them.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mithridate.data import Dataset, demo
from mithridate.detect.clusters import ClusterOutliers
from mithridate.detect.correlations import CorrelationOutliers
from mithridate.detect.isolation_forest import IsolationOutliers
from mithridate.detect.lof import LocalOutliers
from mithridate.represent import Representation, TableEncoder

DETECTORS = (IsolationOutliers, LocalOutliers, ClusterOutliers, CorrelationOutliers)


def representation(ds: Dataset) -> Representation:
    """Encoded table or raw pixels, uniform probabilities: cheap, no model."""
    if ds.kind == "table":
        features = TableEncoder().fit_transform(ds.features)
    else:
        features = np.asarray(ds.features, dtype=np.float32).reshape(ds.n_rows, -1)
    return Representation(features, np.full((ds.n_rows, ds.n_classes), 1 / ds.n_classes), "test")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Per-class problems are small: extra BLAS/OpenMP threads only fight over a shared CPU."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def clean():
    return {name: demo(name) for name in ("breast_cancer", "wine", "digits")}


# Measured shares of clean rows noted (breast_cancer, wine, digits pixels), at the default 5% FDR:
# isolation forest 0% / 1.1% / 0%; LOF 0.9% / 3.9% / 0.4%; clusters 0 / 0 / 0; correlations 0.2% / 0% / 0.1%.
@pytest.mark.parametrize(("detector", "limit"), [(IsolationOutliers, 0.03), (LocalOutliers, 0.05),
                                                 (ClusterOutliers, 0.01), (CorrelationOutliers, 0.03)])
def test_clean_data_gets_few_notes_and_no_flags(clean, detector, limit):
    for name, ds in clean.items():
        det = detector().fit(ds, representation(ds))
        assert det.found_.mean() <= limit, (name, det.found_.mean())
        assert not det.flags_.any()  # unusual is not poisoned: notes only
        assert set(det.severity_) <= {"note", ""}
        assert det.scores_.shape == (ds.n_rows,) and np.isfinite(det.scores_).all()
        assert ((det.pvalues_ >= 0) & (det.pvalues_ <= 1)).all()
        assert all(bool(e) for e in det.evidence_[det.found_])


def planted_cluster(ds: Dataset, cls: int, size: int, seed: int) -> tuple[Dataset, np.ndarray]:
    """``size`` rows of class ``cls`` replaced by near-copies of one row shifted 2.5 s.d. on 5 columns."""
    rng = np.random.default_rng(seed)
    table = ds.features.copy()
    rows = rng.choice(np.flatnonzero(ds.y == cls), size, replace=False)
    sd = table.std().to_numpy()
    cols = rng.choice(table.shape[1], 5, replace=False)
    shift = np.zeros(table.shape[1])
    shift[cols] = 2.5 * sd[cols] * rng.choice([-1, 1], 5)
    table.loc[rows] = table.loc[rows[0]].to_numpy() + shift + rng.normal(0, 0.1, (size, table.shape[1])) * sd
    truth = np.zeros(ds.n_rows, bool)
    truth[rows] = True
    return ds.replace(features=table), truth


@pytest.mark.parametrize(("cls", "size", "seed"), [(0, 6, 2), (0, 15, 0), (1, 30, 1)])
def test_planted_tight_cluster_is_flagged_as_one_group(clean, cls, size, seed):
    # Measured: every planted row found in all 18 (class, size 6/15/30, seed 0-2) cases, no other row.
    ds, truth = planted_cluster(clean["breast_cancer"], cls, size, seed)
    det = ClusterOutliers().fit(ds, representation(ds))
    assert det.found_[truth].all()
    assert det.found_[~truth].sum() <= 1
    assert len(set(det.groups_[truth])) == 1 and det.groups_[truth][0] >= 0
    assert f"group {det.groups_[truth][0]}" in det.evidence_[np.flatnonzero(truth)[0]]
    assert det.group_info_[det.groups_[truth][0]]["class"] == ds.classes[cls]


def test_planted_image_cluster_is_flagged(clean):
    ds = clean["digits"]
    rng = np.random.default_rng(0)
    images = np.array(ds.features)
    rows = rng.choice(np.flatnonzero(ds.y == 3), 12, replace=False)
    eight = images[np.flatnonzero(ds.y == 8)[0]]
    images[rows] = np.clip(eight + rng.normal(0, 1.0, (12, 8, 8)), 0, 16)  # an "8" pattern labelled 3
    poisoned = ds.replace(features=images)
    det = ClusterOutliers().fit(poisoned, representation(poisoned))
    truth = np.zeros(ds.n_rows, bool)
    truth[rows] = True
    assert det.found_[truth].all() and det.found_[~truth].sum() <= 2
    assert len(set(det.groups_[truth])) == 1


def shuffled_columns(ds: Dataset, cls: int, n: int, seed: int) -> tuple[Dataset, np.ndarray]:
    """In ``n`` rows of class ``cls``, 'mean radius', 'mean perimeter' and 'mean area' each permuted
    independently among those rows: every value stays plausible, their agreement breaks."""
    rng = np.random.default_rng(seed)
    table = ds.features.copy()
    rows = rng.choice(np.flatnonzero(ds.y == cls), n, replace=False)
    cols = ["mean radius", "mean perimeter", "mean area"]
    for col in cols:
        table.loc[rows, col] = table.loc[rng.permutation(rows), col].to_numpy()
    changed = np.zeros(ds.n_rows, bool)
    changed[rows] = (table.loc[rows, cols].to_numpy() != ds.features.loc[rows, cols].to_numpy()).any(1)
    return ds.replace(features=table), changed


@pytest.mark.parametrize(("cls", "seed"), [(0, 0), (1, 1)])
def test_broken_correlations_are_found_and_named(clean, cls, seed):
    # Measured: recall 0.97 / 0.77, precision 0.83 / 0.88 (the rest are the data's own far-out rows).
    ds, changed = shuffled_columns(clean["breast_cancer"], cls, 30, seed)
    det = CorrelationOutliers().fit(ds, representation(ds))
    recall = det.found_[changed].mean()
    precision = det.found_[changed].sum() / det.found_.sum()
    assert recall >= 0.7 and precision >= 0.75, (recall, precision)
    named = [("'mean radius'" in e or "'mean perimeter'" in e or "'mean area'" in e)
             for e in det.evidence_[changed & det.found_]]
    assert np.mean(named) >= 0.9
    # each broken row's worst residual is on one of the shuffled columns
    worst = np.abs(det.residuals_[changed & det.found_]).argmax(1)
    assert np.isin(worst, [0, 2, 3]).mean() >= 0.9  # columns 0, 2, 3: radius, perimeter, area


def test_extreme_but_consistent_rows_are_not_correlation_breaks(clean):
    # Scaling whole rows up keeps their columns in step: the copula model must not call that a break.
    ds = clean["breast_cancer"]
    det = CorrelationOutliers().fit(ds, representation(ds))
    biggest = np.argsort(-ds.features["mean area"].to_numpy())[:10]
    assert det.found_[biggest].sum() <= 2


@pytest.fixture(scope="module")
def odd_digits(clean):
    """15 digits rotated by 90 degrees and 15 replaced by uniform noise, labels unchanged."""
    ds = clean["digits"]
    rng = np.random.default_rng(0)
    images = np.array(ds.features)
    rows = rng.choice(ds.n_rows, 30, replace=False)
    rotated, noise = rows[:15], rows[15:]
    images[rotated] = np.rot90(images[rotated], k=1, axes=(1, 2))
    images[noise] = rng.uniform(0, 16, (15, 8, 8))
    poisoned = ds.replace(features=images)
    return poisoned, representation(poisoned), rotated, noise


# Measured (seed 0): rotated / noise recall, clean rows noted among 1767:
# isolation forest 0.73 / 1.00, 1; LOF 1.00 / 1.00, 9; correlations 0.73 / 1.00, 6.
@pytest.mark.parametrize(("detector", "rotated_recall", "max_fp"), [
    (IsolationOutliers, 0.6, 10), (LocalOutliers, 0.9, 25), (CorrelationOutliers, 0.6, 20)])
def test_rotated_and_noise_digits_are_outliers(odd_digits, detector, rotated_recall, max_fp):
    ds, rep, rotated, noise = odd_digits
    det = detector().fit(ds, rep)
    assert det.found_[noise].all()
    assert det.found_[rotated].mean() >= rotated_recall
    clean_rows = np.ones(ds.n_rows, bool)
    clean_rows[np.r_[rotated, noise]] = False
    assert det.found_[clean_rows].sum() <= max_fp
    # the odd images rank above every clean row's median score
    assert np.median(det.scores_[noise]) > np.quantile(det.scores_[clean_rows], 0.99)


def test_small_classes_are_left_alone():
    ds = demo("wine")
    keep = np.r_[np.flatnonzero(ds.y == 0), np.flatnonzero(ds.y == 1), np.flatnonzero(ds.y == 2)[:5]]
    small = ds.take(keep)
    for detector in DETECTORS:
        det = detector().fit(small, representation(small))
        assert not det.found_[small.y == 2].any()
