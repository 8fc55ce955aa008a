"""Sanitization policies: nothing modified in place, every change has its reason, findings must match."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mithridate.data import demo
from mithridate.errors import DataError
from mithridate.sanitize import read_findings, sanitize


@pytest.fixture
def wine_and_findings():
    ds = demo("wine")
    flagged = np.zeros(ds.n_rows, bool)
    flagged[[3, 10, 50]] = True
    findings = pd.DataFrame({
        "row": np.arange(ds.n_rows),
        "score": np.where(flagged, 0.9, 0.1),
        "flagged": flagged,
        "kinds": np.where(flagged, "label_issues", ""),
        "suggested_label": ["class_2" if i == 3 else "" for i in range(ds.n_rows)],
        "reasons": np.where(flagged, "because", ""),
        "fingerprint": ds.fingerprint(),
    })
    return ds, findings


def test_drop_removes_flagged_rows_and_keeps_ids(wine_and_findings):
    ds, findings = wine_and_findings
    before = ds.y.copy()
    result = sanitize(ds, findings, "drop")
    assert result.dataset.n_rows == ds.n_rows - 3
    assert not set(result.dataset.row_id) & {3, 10, 50}
    assert list(result.changes["action"]) == ["drop"] * 3 and set(result.changes["reason"]) == {"because"}
    np.testing.assert_array_equal(ds.y, before)


def test_relabel_uses_suggestion_and_drops_the_rest(wine_and_findings):
    ds, findings = wine_and_findings
    result = sanitize(ds, findings, "relabel")
    assert result.dataset.n_rows == ds.n_rows - 2
    pos = int(np.flatnonzero(result.dataset.row_id == 3)[0])
    assert result.dataset.labels[pos] == "class_2"
    changes = result.changes.set_index("row")
    assert changes.loc[3, "action"] == "relabel" and changes.loc[3, "new_label"] == "class_2"
    assert changes.loc[10, "action"] == "drop"


def test_quarantine_sets_rows_aside(wine_and_findings):
    ds, findings = wine_and_findings
    result = sanitize(ds, findings, "quarantine")
    assert result.quarantined is not None and sorted(result.quarantined.row_id) == [3, 10, 50]
    assert result.dataset.n_rows + result.quarantined.n_rows == ds.n_rows


def test_mismatched_findings_and_bad_policy_are_refused(wine_and_findings, tmp_path):
    ds, findings = wine_and_findings
    with pytest.raises(DataError, match="describe 177 rows"):
        sanitize(ds, findings.iloc[:-1], "drop")
    with pytest.raises(DataError, match="unknown policy"):
        sanitize(ds, findings, "burn")
    (tmp_path / "f.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a findings file"):
        read_findings(tmp_path / "f.csv")
    findings.drop(columns="fingerprint").to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(DataError, match="no fingerprint"):
        read_findings(tmp_path / "old.csv")


def test_findings_from_other_data_are_refused(wine_and_findings):
    """Same number of rows, one label changed: positions would point at the wrong rows' story."""
    ds, findings = wine_and_findings
    y = ds.y.copy()
    y[0] = (y[0] + 1) % ds.n_classes
    with pytest.raises(DataError, match="made from other data"):
        sanitize(ds.replace(y=y), findings, "drop")
    with pytest.raises(DataError, match="made from other data"):
        sanitize(ds.take(np.arange(ds.n_rows)[::-1]), findings, "drop")


def test_notes_are_never_acted_on(wine_and_findings):
    ds, findings = wine_and_findings
    findings = findings.assign(severity=np.where(findings["flagged"], "poison", ""))
    findings.loc[[0, 1], "severity"] = "note"
    result = sanitize(ds, findings, "drop")
    assert {0, 1} <= set(result.dataset.row_id) and result.dataset.n_rows == ds.n_rows - 3


def test_findings_round_trip_through_csv(wine_and_findings, tmp_path):
    ds, findings = wine_and_findings
    findings.to_csv(tmp_path / "findings.csv", index=False)
    again = read_findings(tmp_path / "findings.csv")
    result = sanitize(ds, again, "relabel")
    assert result.changes["action"].tolist().count("relabel") == 1
