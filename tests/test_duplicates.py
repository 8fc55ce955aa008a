"""Duplicates and conflicts: injected exact and near copies in real tables and images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from mithridate.data import Dataset, demo
from mithridate.detect.duplicates import Duplicates, row_hashes
from mithridate.represent import Representation, TableEncoder


def with_copies(ds: Dataset, rows: np.ndarray, labels: np.ndarray, noise: float = 0.0,
                seed: int = 0) -> Dataset:
    """``ds`` with copies of ``rows`` appended under ``labels``; ``noise`` is relative to each column's s.d."""
    rng = np.random.default_rng(seed)
    if ds.kind == "table":
        copies = ds.features.iloc[rows].reset_index(drop=True)
        if noise:
            copies = copies + rng.normal(0, noise, copies.shape) * ds.features.std().to_numpy()
        features = pd.concat([ds.features, copies], ignore_index=True)
    else:
        copies = np.array(ds.features[rows])
        if noise:
            copies = copies + rng.normal(0, noise * float(np.std(ds.features)), copies.shape).astype(np.float32)
        features = np.concatenate([ds.features, copies])
    return Dataset(features, np.r_[ds.y, labels], ds.classes, name=ds.name)


def representation(ds: Dataset, proba: np.ndarray | None = None) -> Representation:
    if ds.kind == "table":
        features = TableEncoder().fit_transform(ds.features)
    else:
        features = np.asarray(ds.features, dtype=np.float32).reshape(ds.n_rows, -1)
    if proba is None:
        proba = np.full((ds.n_rows, ds.n_classes), 1 / ds.n_classes)
    return Representation(features, proba, "test")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Per-class problems are small: extra BLAS/OpenMP threads only fight over a shared CPU."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def clean():
    return {name: demo(name) for name in ("breast_cancer", "wine", "digits")}


def test_clean_data_has_no_exact_duplicates_and_few_near_ones(clean):
    # Measured: no flag on breast_cancer and wine; one near pair (distance 5.3, typical 16) in digits.
    for name, ds in clean.items():
        det = Duplicates().fit(ds, representation(ds))
        assert not any("exact" in e for e in det.evidence_), name
        assert det.flags_.sum() <= (0 if ds.kind == "table" else 3), name
        assert 0 < det.threshold_ < det.typical_


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_exact_copies_with_other_labels_are_conflicts(clean, name):
    ds = clean[name]
    rng = np.random.default_rng(1)
    rows = rng.choice(ds.n_rows, 12, replace=False)
    poisoned = with_copies(ds, rows, (ds.y[rows] + 1) % ds.n_classes)
    truth_label = np.r_[ds.y, ds.y[rows]]
    proba = np.eye(ds.n_classes)[truth_label] * 0.8 + 0.2 / ds.n_classes  # a model that knows the truth
    det = Duplicates().fit(poisoned, representation(poisoned, proba))
    involved = np.r_[rows, np.arange(ds.n_rows, poisoned.n_rows)]
    assert det.flags_[involved].all()
    assert det.flags_.sum() == len(involved)  # no clean row is called a duplicate
    assert all("exact duplicate" in e and "conflicting labels" in e for e in det.evidence_[involved])
    np.testing.assert_array_equal(det.suggested_label_[ds.n_rows:], ds.y[rows])
    assert (det.suggested_label_[rows] == -1).all()
    assert len(set(det.groups_[involved])) == len(rows)
    assert (det.scores_[involved] == 2).all() and (det.scores_[det.groups_ < 0] < 1).all()


def test_same_label_copies_keep_one(clean):
    ds = clean["wine"]
    rows = np.arange(0, 178, 20)
    poisoned = with_copies(ds, np.r_[rows, rows], np.r_[ds.y[rows], ds.y[rows]])  # two extra copies each
    det = Duplicates().fit(poisoned, representation(poisoned))
    assert not det.flags_[rows].any() and det.flags_[ds.n_rows:].all()
    assert det.flags_.sum() == 2 * len(rows)
    assert "one copy is kept" in det.evidence_[ds.n_rows]


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_near_copies_are_found(clean, name):
    # Copies with noise of 1% of each column's s.d.: every copy found, no clean row flagged.
    ds = clean[name]
    rng = np.random.default_rng(2)
    rows = rng.choice(ds.n_rows, 15, replace=False)
    labels = ds.y[rows].copy()
    labels[:5] = (labels[:5] + 1) % ds.n_classes  # five of them also conflict
    poisoned = with_copies(ds, rows, labels, noise=0.01)
    det = Duplicates().fit(poisoned, representation(poisoned))
    copies = np.arange(ds.n_rows, poisoned.n_rows)
    assert det.flags_[copies].all()
    assert det.flags_[rows[:5]].all() and not det.flags_[rows[5:]].any()
    assert det.flags_.sum() == 15 + 5
    assert all("near duplicate" in e for e in det.evidence_[copies])
    assert all("conflicting" in e for e in det.evidence_[copies[:5]])


def test_image_duplicates_and_conflicts(clean):
    ds = clean["digits"]
    rng = np.random.default_rng(3)
    rows = rng.choice(ds.n_rows, 20, replace=False)
    exact = with_copies(ds, rows[:10], (ds.y[rows[:10]] + 3) % 10)
    near = with_copies(exact, rows[10:], ds.y[rows[10:]], noise=0.01)
    det = Duplicates().fit(near, representation(near))
    exact_copies = np.arange(ds.n_rows, ds.n_rows + 10)
    near_copies = np.arange(ds.n_rows + 10, near.n_rows)
    assert det.flags_[rows[:10]].all() and det.flags_[exact_copies].all()
    assert all("conflicting" in e for e in det.evidence_[exact_copies])
    assert det.flags_[near_copies].all()
    clean_rows = np.ones(near.n_rows, bool)
    clean_rows[np.r_[rows, exact_copies, near_copies]] = False
    assert det.flags_[clean_rows].sum() <= 2


def test_row_hashes_see_every_column():
    table = pd.DataFrame({"a": [1.0, 1.0, 1.0, np.nan, np.nan], "b": ["x", "x", "y", "z", "z"]})
    h = row_hashes(table)
    assert h[0] == h[1] != h[2] and h[3] == h[4]
    images = np.zeros((3, 4, 4), np.uint8)
    images[2, 1, 1] = 1
    h = row_hashes(images)
    assert h[0] == h[1] != h[2]
