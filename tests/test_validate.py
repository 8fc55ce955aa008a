"""Validation of new batches against a verified baseline: calibration on clean batches, power on poisoned ones,
the profile file (no pickle, streamed), row-level sanitization, the policy and the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from mithridate.attacks.backdoor import FeatureTrigger
from mithridate.attacks.label_flip import RandomFlip
from mithridate.data import Dataset, demo, save, split
from mithridate.errors import DataError
from mithridate.validate import Baseline, Gate, Policy, Profile, profile, profile_file
from mithridate.validate.multiple_testing import adjust
from mithridate.validate.multivariate import classifier_test, mmd_test


def synthetic(n: int, seed: int = 0) -> Dataset:
    """A mixed table: 12 numeric columns (one with 3% missing values), 3 categorical made by binning, 3 classes."""
    X, y = make_classification(n_samples=n, n_features=15, n_informative=8, n_redundant=3, n_classes=3,
                               class_sep=1.2, random_state=seed)
    table = pd.DataFrame(X, columns=[f"x{i}" for i in range(15)])
    for i in (12, 13, 14):
        table[f"x{i}"] = pd.cut(table[f"x{i}"], [-np.inf, -1, 0, 1, np.inf], labels=list("abcd")).astype(str)
    table.loc[np.random.default_rng(seed).random(n) < 0.03, "x0"] = np.nan
    return Dataset.from_labels(table, np.array(["red", "green", "blue"])[y], name="synthetic")


@pytest.fixture(scope="module")
def world():
    population = synthetic(16_000)
    base = population.take(np.arange(6000))
    pool = population.take(np.arange(6000, 16_000))
    return profile(base, sample_size=4000, random_state=0), base, pool


def batches(pool: Dataset, n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield pool.take(np.sort(rng.choice(pool.n_rows, size, replace=False)))


CHEAP = {"tests": ["ks", "histogram", "missing", "range", "chi2", "unseen", "label_shift", "label_agreement"],
         "rows": {"action": "keep"}}


def test_clean_batches_fail_at_most_at_alpha(world):
    prof, _, pool = world
    verdicts = [Gate(CHEAP).check(prof, b) for b in batches(pool, 40, 500, seed=1)]
    failures = sum(v.verdict == "fail" for v in verdicts)
    # alpha = 5% of 40 batches is 2 expected; more than 6 has probability 0.3% for a calibrated gate.
    assert failures <= 6, [v.reasons for v in verdicts if v.verdict == "fail"]
    assert all(v.summary["tests"] >= 40 for v in verdicts)


def test_multivariate_p_values_are_calibrated_and_powerful():
    rng = np.random.default_rng(0)
    null_mmd = [mmd_test(rng.normal(size=(80, 4)), rng.normal(size=(80, 4)), 100, s)[1] for s in range(15)]
    null_c2st = [classifier_test(rng.normal(size=(150, 4)), rng.normal(size=(150, 4)), s)[1] for s in range(15)]
    assert sum(p < 0.05 for p in null_mmd) <= 3 and sum(p < 0.05 for p in null_c2st) <= 3
    assert np.mean(null_mmd) > 0.3 and np.mean(null_c2st) > 0.3
    shifted = rng.normal(size=(150, 4)) + np.array([0.6, 0, 0, 0])
    assert mmd_test(rng.normal(size=(150, 4)), shifted, 100, 0)[1] < 1e-4
    assert classifier_test(rng.normal(size=(150, 4)), shifted, 0)[1] < 0.01


def test_label_flips_fail_the_gate(world):
    prof, _, pool = world
    batch = next(batches(pool, 1, 1000, seed=2))
    verdict = Gate().check(prof, RandomFlip(rate=0.1, random_state=0).poison(batch).dataset)
    assert verdict.verdict == "fail"
    failed = {c.name for c in verdict.checks if not c.passed}
    assert "label_agreement" in failed
    agreement = next(c for c in verdict.checks if c.name == "label_agreement")
    assert agreement.effect_size > 0.04  # the model agrees with ~9% fewer labels


def test_feature_trigger_backdoor_fails_the_gate(world):
    prof, _, pool = world
    batch = next(batches(pool, 1, 1000, seed=3))
    attack = FeatureTrigger(target="red", rate=0.05, columns=["x3", "x7"], random_state=0)
    verdict = Gate().check(prof, attack.poison(batch).dataset)
    assert verdict.verdict == "fail"
    failed_columns = {c.column for c in verdict.checks if not c.passed and c.column}
    assert failed_columns & {"x3", "x7"}


def test_shifted_feature_fails_and_is_named(world):
    prof, _, pool = world
    batch = next(batches(pool, 1, 1000, seed=4))
    features = batch.features.copy()
    features["x5"] += 0.4 * prof.columns["x5"]["std"]
    verdict = Gate().check(prof, batch.replace(features=features))
    assert verdict.verdict == "fail"
    ks = next(c for c in verdict.checks if c.name == "ks:x5")
    assert not ks.passed and 0.25 < ks.effect_size < 0.6  # Wasserstein in robust s.d. ~ the 0.4 s.d. shift
    assert verdict.table.iloc[0]["column"] == "x5"


def test_row_sanitization_quarantines_extreme_rows_with_reasons(world):
    prof, _, pool = world
    batch = next(batches(pool, 1, 400, seed=5))
    features = batch.features.copy()
    features.loc[[10, 20], "x4"] = 40.0  # far beyond anything the baseline saw
    features.loc[30, "x9"] = -35.0
    verdict = Gate({"tests": ["ks"]}).check(prof, batch.replace(features=features))
    removed = dict(zip(verdict.rows["row"], verdict.rows["reason"], strict=True))
    assert {10, 20, 30} <= set(removed)
    assert "x4=40" in removed[10] and "x9=-35" in removed[30]
    assert len(removed) <= 3 + 0.02 * batch.n_rows  # few clean rows go with them
    assert verdict.clean.n_rows == batch.n_rows - len(removed)
    assert verdict.quarantined.n_rows == len(removed)


def test_profile_round_trips_without_pickle(world, tmp_path, monkeypatch):
    prof, _, pool = world
    batch = next(batches(pool, 1, 300, seed=6))
    before = Gate(CHEAP).check(prof, batch).table
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle used"))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle used"))
    for name in ("base.json", "base.parquet"):
        path = prof.save(tmp_path / name)
        loaded = Profile.load(path)
        assert loaded.to_dict() == json.loads(json.dumps(prof.to_dict()))
        pd.testing.assert_frame_equal(Gate(CHEAP).check(loaded, batch).table, before)
    json.loads((tmp_path / "base.json").read_text())  # plain JSON
    with pytest.raises(DataError):
        Profile.load(save(pool.take(np.arange(5)), tmp_path / "not_a_baseline.parquet"))


def test_chunked_profile_matches_in_memory(world, tmp_path):
    _, base, _ = world
    path = save(base, tmp_path / "base.csv")
    streamed = profile_file(path, "label", sample_size=500, chunk_rows=700, label_model=False)
    whole = profile(base, sample_size=500, chunk_rows=10**6, label_model=False)
    assert streamed.n_rows == whole.n_rows == base.n_rows
    assert streamed.classes == whole.classes and streamed.class_counts == whole.class_counts
    assert streamed.numeric == whole.numeric and streamed.categorical == whole.categorical
    for c in whole.numeric:
        a, b = streamed.columns[c], whole.columns[c]
        assert a["missing"] == b["missing"] and a["min"] == b["min"] and a["max"] == b["max"]
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-9) and a["std"] == pytest.approx(b["std"], rel=1e-9)
        for q in ("0.05", "0.25", "0.5", "0.75", "0.95"):  # DDSketch: within 1% of the distance to the centre
            assert a["quantiles"][q] == pytest.approx(b["quantiles"][q], abs=0.03 * (1 + abs(b["quantiles"][q])))
    for c in whole.categorical:
        assert streamed.columns[c]["levels"] == whole.columns[c]["levels"]
    np.testing.assert_allclose(streamed.correlation, whole.correlation, atol=1e-9)
    pd.testing.assert_frame_equal(streamed.sample, whole.sample)  # bottom-k: the same rows however chunked
    exact = base.features[whole.numeric].quantile([0.25, 0.5, 0.75])
    for c in whole.numeric:  # 1% of the distance to the centre (~1.5 here at most), plus rank rounding
        for q in (0.25, 0.5, 0.75):
            assert whole.columns[c]["quantiles"][str(q)] == pytest.approx(exact.loc[q, c], abs=0.04)


def test_profiling_memory_does_not_grow_with_rows(tmp_path):
    import tracemalloc

    peaks = []
    for n in (8000, 32_000):
        path = save(synthetic(n, seed=1), tmp_path / f"t{n}.csv")
        tracemalloc.start()
        prof = profile_file(path, "label", sample_size=1000, chunk_rows=2000, label_model=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert prof.n_rows == n
    assert peaks[1] < 1.3 * peaks[0], peaks  # 4x the rows, about the same peak


def test_images_baseline_and_flips():
    digits = demo("digits")
    base, batch = split(digits, test_size=0.3, seed=0)
    prof = Baseline(n_components=16, random_state=0).fit(base).profile_
    assert prof.kind == "image" and len(prof.numeric) == 16
    assert Gate(CHEAP).check(prof, batch).verdict != "fail"
    assert Gate(CHEAP).check(prof, RandomFlip(rate=0.1, random_state=0).poison(batch).dataset).verdict == "fail"


def test_policy_yaml(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("alpha: 0.01\ncorrection: holm\ntests: [ks, chi2]\nrows: {far_out: 5}\n")
    policy = Policy.load(path)
    assert (policy.alpha, policy.correction, policy.tests, policy.rows.far_out) == (0.01, "holm", ["ks", "chi2"], 5)
    path.write_text("alpha: 0.01\nalpah: 0.2\n")
    with pytest.raises(DataError, match="alpah"):
        Policy.load(path)
    path.write_text("tests: [kss]\n")
    with pytest.raises(DataError, match="kss"):
        Policy.load(path)


def test_multiple_testing_adjustments():
    p = [0.01, 0.04, 0.03, 0.5]
    np.testing.assert_allclose(adjust(p, "holm"), [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(adjust(p, "bh"), [0.04, 0.0533333, 0.0533333, 0.5], rtol=1e-5)
    np.testing.assert_allclose(adjust(p, "bonferroni"), [0.04, 0.16, 0.12, 1.0])


def test_cli_exit_codes_and_report(world, tmp_path):
    from typer.testing import CliRunner

    from mithridate.cli import app

    _, base, pool = world
    runner = CliRunner()
    save(base.take(np.arange(3000)), tmp_path / "base.csv")
    result = runner.invoke(app, ["baseline", str(tmp_path / "base.csv"), "--out", str(tmp_path / "b.parquet"),
                                 "--label", "label", "--sample-size", "2000"])
    assert result.exit_code == 0, result.output
    clean, shifted = batches(pool, 2, 600, seed=7)
    save(clean, tmp_path / "clean.csv")
    features = shifted.features.copy()
    features["x6"] += 2.5  # about 0.6 standard deviations
    save(shifted.replace(features=features), tmp_path / "shifted.csv")
    policy = tmp_path / "p.yaml"
    policy.write_text("tests: [ks, histogram, missing, range, chi2, unseen, label_shift, label_agreement]\n")
    common = ["--baseline", str(tmp_path / "b.parquet"), "--policy", str(policy)]
    ok = runner.invoke(app, ["validate", str(tmp_path / "clean.csv"), *common, "--out", str(tmp_path / "r0")])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["validate", str(tmp_path / "shifted.csv"), *common, "--out", str(tmp_path / "r1")])
    assert bad.exit_code == 1, bad.output
    verdict = json.loads((tmp_path / "r1" / "verdict.json").read_text())
    assert verdict["verdict"] == "fail" and any(t["name"] == "ks:x6" and not t["passed"] for t in verdict["tests"])
    report = (tmp_path / "r1" / "report.html").read_text()
    assert "Worst columns" in report and "x6" in report.split("Worst columns")[1][:400] and "<img" in report
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.csv"), *common, "--out", str(tmp_path / "r2")])
    assert missing.exit_code == 2
    no_policy = runner.invoke(app, ["validate", str(tmp_path / "clean.csv"), "--baseline",
                                    str(tmp_path / "b.parquet"), "--policy", str(tmp_path / "none.yaml"),
                                    "--out", str(tmp_path / "r3")])
    assert no_policy.exit_code == 2
    not_baseline = runner.invoke(app, ["validate", str(tmp_path / "clean.csv"), "--baseline",
                                       str(tmp_path / "clean.csv"), "--out", str(tmp_path / "r4")])
    assert not_baseline.exit_code == 2
