"""The README's main job end to end: the scan finds both attacks and sanitizing undoes the backdoor."""

from __future__ import annotations

import json

import pytest

from mithridate.demo import run_demo


@pytest.mark.slow
def test_demo_detects_sanitizes_and_restores_the_model(tmp_path):
    results = run_demo(tmp_path, seed=0)
    detection = results["detection"]["all"]
    assert detection["precision"] >= 0.9 and detection["recall"] >= 0.95, detection  # measured 0.94, 0.97
    assert results["detection"]["patch backdoor"]["recall"] >= 0.95
    models = results["models"]
    assert models["poisoned"]["attack_success_rate"] >= 0.9  # the attack worked ...
    assert models["sanitized"]["attack_success_rate"] < 0.05  # ... and sanitizing undid it
    assert models["sanitized"]["accuracy"] >= models["clean"]["accuracy"] - 0.01
    rel = results["relabelled"]
    assert rel["rows"] > 0 and rel["restored_original_label"] >= 0.8 * rel["rows"]  # measured 55 of 63
    for name in ("findings.csv", "summary.json", "report.html", "poisoned.npz", "sanitized.npz", "demo.json"):
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "demo.json").read_text())["rows"] == 1347
