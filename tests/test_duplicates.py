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


def test_clean_data_has_no_flags_and_few_notes(clean):
    # Measured: nothing on breast_cancer and wine; one near pair (distance 5.3, typical 16) in digits.
    for name, ds in clean.items():
        det = Duplicates().fit(ds, representation(ds))
        assert not any("exact" in e for e in det.evidence_), name
        assert not det.flags_.any(), name
        assert det.found_.sum() <= (0 if ds.kind == "table" else 3), name
        assert 0 < det.threshold_ < det.typical_


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_a_minority_label_among_copies_is_a_label_issue(clean, name):
    """Each of 12 rows copied twice, one copy relabelled: 2 against 1, the odd one out is flagged."""
    ds = clean[name]
    rows = np.random.default_rng(1).choice(ds.n_rows, 12, replace=False)
    poisoned = with_copies(ds, np.r_[rows, rows], np.r_[ds.y[rows], (ds.y[rows] + 1) % ds.n_classes])
    det = Duplicates().fit(poisoned, representation(poisoned))
    odd = np.arange(ds.n_rows + len(rows), poisoned.n_rows)
    assert det.flags_[odd].all() and det.flags_.sum() == len(odd)
    assert set(det.severity_[odd]) == {"poison"}
    np.testing.assert_array_equal(det.suggested_label_[odd], ds.y[rows])
    assert all("exact copy" in e and "2 of the 3 copies say" in e for e in det.evidence_[odd])
    assert len(set(det.groups_[odd])) == len(rows)


def test_evenly_split_copies_are_a_note(clean):
    ds = clean["wine"]
    rows = np.arange(0, 178, 15)
    poisoned = with_copies(ds, rows, (ds.y[rows] + 1) % ds.n_classes)  # one copy each, other label
    det = Duplicates().fit(poisoned, representation(poisoned))
    involved = np.r_[rows, np.arange(ds.n_rows, poisoned.n_rows)]
    assert not det.flags_.any()
    assert (det.severity_[involved] == "note").all() and det.found_.sum() == len(involved)
    assert all("evenly split" in e for e in det.evidence_[involved])


def test_same_label_copies_are_notes_and_keep_one(clean):
    ds = clean["wine"]
    rows = np.arange(0, 178, 20)
    poisoned = with_copies(ds, np.r_[rows, rows], np.r_[ds.y[rows], ds.y[rows]])  # two extra copies each
    det = Duplicates().fit(poisoned, representation(poisoned))
    assert not det.flags_.any()
    assert not det.found_[rows].any() and (det.severity_[ds.n_rows:] == "note").all()
    assert "one copy is kept" in det.evidence_[ds.n_rows]


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_near_copies_are_found(clean, name):
    # Copies with noise of 1% of each column's s.d.: every copy found, no clean row noted.
    ds = clean[name]
    rows = np.random.default_rng(2).choice(ds.n_rows, 15, replace=False)
    labels = ds.y[rows].copy()
    labels[:5] = (labels[:5] + 1) % ds.n_classes  # five of them also conflict
    poisoned = with_copies(ds, rows, labels, noise=0.01)
    det = Duplicates().fit(poisoned, representation(poisoned))
    copies = np.arange(ds.n_rows, poisoned.n_rows)
    assert det.found_[copies].all()
    assert det.found_[rows[:5]].all() and not det.found_[rows[5:]].any()
    assert det.found_.sum() == 15 + 5 and not det.flags_.any()  # a near copy of a table row may be real
    assert all("near copy" in e for e in det.evidence_[copies])


def test_image_duplicates_and_conflicts(clean):
    ds = clean["digits"]
    rows = np.random.default_rng(3).choice(ds.n_rows, 20, replace=False)
    twice = np.r_[rows[:10], rows[:10]]
    exact = with_copies(ds, twice, np.r_[ds.y[rows[:10]], (ds.y[rows[:10]] + 3) % 10])
    near = with_copies(exact, rows[10:], ds.y[rows[10:]], noise=0.01)
    det = Duplicates().fit(near, representation(near))
    odd = np.arange(ds.n_rows + 10, ds.n_rows + 20)
    near_copies = np.arange(ds.n_rows + 20, near.n_rows)
    assert det.flags_[odd].all() and (det.suggested_label_[odd] == ds.y[rows[:10]]).all()
    assert (det.severity_[near_copies] == "note").all()
    clean_rows = np.ones(near.n_rows, bool)
    clean_rows[np.r_[rows, np.arange(ds.n_rows, near.n_rows)]] = False
    assert not det.flags_[clean_rows].any() and det.found_[clean_rows].sum() <= 2


def test_natural_repeats_say_nothing():
    """A table of three discrete columns repeats rows by nature; conflicting labels among them are the
    label-issue detector's business, not evidence of copying."""
    rng = np.random.default_rng(4)
    table = pd.DataFrame({"sex": rng.choice(["f", "m"], 600), "class": rng.integers(1, 4, 600),
                          "age": rng.integers(0, 8, 600) * 10})
    labels = np.where(rng.random(600) < 0.5, "yes", "no")
    ds = Dataset.from_labels(table, labels)
    det = Duplicates().fit(ds, representation(ds))
    assert (det.groups_ >= 0).mean() > 0.9
    assert not det.found_.any()
    assert "natural" in det.abstain_
    # copies of rows that share a value no other row has (a many-valued column) are unusual, though
    table = table.assign(income=rng.normal(size=600).round(6))
    copied = Dataset.from_labels(pd.concat([table, table.iloc[[0, 0]]], ignore_index=True),
                                 np.concatenate([labels, [labels[0], "yes" if labels[0] == "no" else "no"]]))
    det = Duplicates().fit(copied, representation(copied))
    assert det.found_[[601]].all() and det.flags_.sum() == 1 and det.flags_[601]


def test_row_hashes_see_every_column():
    table = pd.DataFrame({"a": [1.0, 1.0, 1.0, np.nan, np.nan], "b": ["x", "x", "y", "z", "z"]})
    h = row_hashes(table)
    assert h[0] == h[1] != h[2] and h[3] == h[4]
    images = np.zeros((3, 4, 4), np.uint8)
    images[2, 1, 1] = 1
    h = row_hashes(images)
    assert h[0] == h[1] != h[2]
