"""The scan end to end on real data with injected poison, its files, and the scan/sanitize commands."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mithridate.attacks.label_flip import RandomFlip
from mithridate.cli import app
from mithridate.data import demo, load, save
from mithridate.detect import Scan, make_detectors
from mithridate.errors import DataError
from mithridate.sanitize import ScanResampler, sanitize

runner = CliRunner()


@pytest.fixture(scope="module")
def flipped_wine():
    return RandomFlip(rate=0.15, random_state=1).poison(demo("wine"))


@pytest.fixture(scope="module")
def scanned(flipped_wine):
    return Scan(random_state=0).fit(flipped_wine.dataset)


def test_scan_finds_flipped_labels_and_suggests_the_original(flipped_wine, scanned):
    f = scanned.report_.findings
    flagged, truth = f["flagged"].to_numpy(), flipped_wine.mask
    precision = (flagged & truth).sum() / flagged.sum()
    recall = (flagged & truth).sum() / truth.sum()
    assert recall >= 0.8 and precision >= 0.7, (precision, recall)
    original = demo("wine").labels
    relabel = (f["action"] == "relabel").to_numpy() & truth
    assert relabel.sum() >= 0.7 * truth.sum()
    assert (f["suggested_label"].to_numpy()[relabel] == original[relabel]).mean() >= 0.9


def test_findings_contract(flipped_wine, scanned):
    f = scanned.report_.findings
    assert list(f.columns[:6]) == ["row", "row_id", "label", "score", "flagged", "severity"]
    assert {"kinds", "suggested_label", "action", "reasons", "notes", "fingerprint"} <= set(f.columns)
    np.testing.assert_array_equal(f["row"], np.arange(flipped_wine.dataset.n_rows))
    flagged = f["flagged"].to_numpy()
    assert f["score"][flagged].min() >= 0.5 > f["score"][~flagged].max()
    assert (f["kinds"][flagged] != "").all() and (f["kinds"][~flagged] == "").all()
    assert (f["suggested_label"][~flagged] == "").all() and (f["action"][~flagged] == "").all()
    assert set(f["severity"][flagged]) <= {"poison", "suspect"}
    assert set(f["severity"][~flagged]) <= {"note", ""}
    noted = (f["severity"] == "note").to_numpy()
    assert (f["notes"][noted] != "").all() and (f["reasons"][noted] == "").all()
    assert set(f["fingerprint"]) == {flipped_wine.dataset.fingerprint()}
    summary = scanned.report_.summary
    assert summary["fingerprint"] == flipped_wine.dataset.fingerprint()
    assert summary["flagged"] == summary["severity"]["poison"] + summary["severity"]["suspect"]
    for info in summary["detectors"].values():  # an abstaining detector says why
        assert info["abstained"] == (info["flagged"] + info["notes"] == 0) and bool(info["why"]) == info["abstained"]


def test_report_files(scanned, tmp_path):
    from mithridate.report import write_scan_report

    paths = write_scan_report(scanned.report_, tmp_path)
    findings = pd.read_csv(paths["findings"], keep_default_na=False)
    assert len(findings) == 178 and findings["flagged"].sum() == scanned.report_.summary["flagged"]
    summary = json.loads(paths["summary"].read_text())
    assert summary["rows"] == 178 and set(summary["detectors"]) == {d.name for d in scanned.detectors_}
    html = paths["report"].read_text()
    assert html.count("data:image/png;base64") >= 4 and "Most suspicious rows" in html


def test_clean_data_gets_few_flags():
    scan = Scan(random_state=0).fit(demo("wine"))
    assert scan.report_.summary["flagged_share"] <= 0.03  # measured 0.011


def test_relabel_policy_cuts_label_noise(flipped_wine, scanned):
    clean = demo("wine")
    result = sanitize(flipped_wine.dataset, scanned.report_.findings, "relabel")
    kept = result.dataset
    noise_before = flipped_wine.mask.mean()
    noise_after = (kept.y != clean.y[kept.row_id]).mean()
    assert noise_before >= 0.14 and noise_after <= 0.075, noise_after
    assert kept.n_rows >= 0.9 * clean.n_rows


def test_resampler_follows_fit_resample(flipped_wine):
    X = flipped_wine.dataset.features.to_numpy()
    y = np.asarray(flipped_wine.dataset.labels, dtype=str)
    resampler = ScanResampler(policy="drop", detectors=make_detectors(["label_issues"], "table"))
    X_out, y_out = resampler.fit_resample(X, y)
    assert len(X_out) == len(y_out) == 178 - resampler.findings_["flagged"].sum()
    np.testing.assert_array_equal(X_out, X[resampler.sample_indices_])
    assert (y_out != y[resampler.sample_indices_]).sum() == 0


def test_unknown_detector_is_a_clear_error():
    with pytest.raises(DataError, match="unknown detector 'nope'"):
        make_detectors(["nope"], "table")


def test_cli_scan_then_sanitize(flipped_wine, tmp_path):
    data = tmp_path / "wine.csv"
    save(flipped_wine.dataset, data)
    out = tmp_path / "scan"
    result = runner.invoke(app, ["scan", str(data), "--label", "target", "--out", str(out),
                                 "--detectors", "label_issues,duplicates", "--no-html"])
    assert result.exit_code == 0, result.output
    findings = pd.read_csv(out / "findings.csv", keep_default_na=False)
    assert len(findings) == 178 and findings["flagged"].sum() > 0
    assert not (out / "report.html").exists()

    clean = tmp_path / "clean.csv"
    result = runner.invoke(app, ["sanitize", str(data), "--label", "target", "--findings",
                                 str(out / "findings.csv"), "--policy", "quarantine", "--out", str(clean)])
    assert result.exit_code == 0, result.output
    kept, held = load(clean, "target"), load(tmp_path / "clean.quarantine.csv", "target")
    assert kept.n_rows + held.n_rows == 178 and held.n_rows == findings["flagged"].sum()
    changes = pd.read_csv(tmp_path / "clean.changes.csv")
    assert len(changes) == held.n_rows and changes["reason"].notna().all()


def test_cli_sanitize_refuses_other_data_and_never_overwrites_inputs(flipped_wine, scanned, tmp_path):
    data, other = tmp_path / "wine.csv", tmp_path / "other.csv"
    save(flipped_wine.dataset, data)
    save(demo("wine"), other)  # same rows, the labels before flipping
    findings = tmp_path / "findings.csv"
    scanned.report_.findings.to_csv(findings, index=False)
    before = {p: p.read_bytes() for p in (data, other, findings)}
    result = runner.invoke(app, ["sanitize", str(other), "--label", "target", "--findings", str(findings),
                                 "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "made from other data" in result.output
    for out in (data, findings):
        result = runner.invoke(app, ["sanitize", str(data), "--label", "target", "--findings", str(findings),
                                     "--out", str(out)])
        assert result.exit_code == 2 and "would overwrite" in result.output, result.output
    result = runner.invoke(app, ["sanitize", str(data), "--label", "target", "--findings", str(findings),
                                 "--policy", "quarantine", "--out", str(tmp_path / "c.csv"),
                                 "--quarantine", str(data)])
    assert result.exit_code == 2 and "would overwrite" in result.output
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "c.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "missing.csv", "--out", "o"], "no such file"),
        (["scan", "demo:wine", "--out", "o", "--detectors", "nope"], "unknown detector"),
        (["sanitize", "demo:wine", "--findings", "missing.csv", "--out", "x.csv"], "no such findings file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.csv").exists()
