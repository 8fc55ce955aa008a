"""``mithridate attack``: the poisoned copy in the input's format, its ground truth, and one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.data import demo, load, save

runner = CliRunner()


def attack(*args: str):
    return runner.invoke(app, ["attack", *map(str, args)])


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory):
    return save(demo("wine"), tmp_path_factory.mktemp("data") / "wine.csv")


def test_label_flip_on_a_csv_writes_csv_and_truth(wine_csv, tmp_path):
    out, truth = tmp_path / "poisoned.csv", tmp_path / "truth.csv"
    res = attack("flip", wine_csv, "--out", out, "--truth", truth, "--label", "target", "--rate", "0.2",
                 "--seed", "3")
    assert res.exit_code == 0, res.output
    original, poisoned = load(wine_csv, "target"), load(out, "target")
    t = pd.read_csv(truth)
    assert list(t.columns) == ["row", "poisoned"] and len(t) == original.n_rows
    changed = original.labels != poisoned.labels
    np.testing.assert_array_equal(t["poisoned"].to_numpy(), changed)
    assert changed.sum() == round(0.2 * original.n_rows)
    pd.testing.assert_frame_equal(original.features, poisoned.features)
    assert f"poisoned {changed.sum()} of 178 rows" in res.output


def test_feature_trigger_csv_to_parquet_with_evaluation(wine_csv, tmp_path):
    out, truth = tmp_path / "poisoned.parquet", tmp_path / "truth.csv"
    res = attack("feature", wine_csv, "--out", out, "--truth", truth, "--target", "class_2", "--rate", "0.1",
                 "--columns", "alcohol, proline", "--evaluate")
    assert res.exit_code == 0, res.output
    poisoned, t = load(out, "target"), pd.read_csv(truth)
    rows = t["poisoned"].to_numpy()
    assert rows.sum() == round(0.1 * 178) and set(poisoned.labels[rows]) == {"class_2"}
    assert poisoned.features.loc[rows, "proline"].nunique() == 1
    assert "poisoned data" in res.output and "attack success" in res.output and "accuracy drop" in res.output


def test_patch_backdoor_on_demo_digits_writes_npz(tmp_path):
    out, truth = tmp_path / "digits.npz", tmp_path / "truth.csv"
    res = attack("patch", "demo:digits", "--out", out, "--truth", truth, "--target", "7", "--size", "2",
                 "--location", "top-left", "--rate", "0.05")
    assert res.exit_code == 0, res.output
    original, poisoned, t = demo("digits"), load(out), pd.read_csv(truth)
    rows = t["poisoned"].to_numpy()
    assert rows.sum() == round(0.05 * original.n_rows) == int((original.labels != poisoned.labels).sum())
    assert set(poisoned.labels[rows]) == {7}
    diff = (np.asarray(original.features) != np.asarray(poisoned.features)).reshape(len(rows), -1).any(1)
    assert not diff[~rows].any() and (poisoned.features[rows][:, :2, :2] == np.array([[16, 0], [0, 16]])).all()


@pytest.mark.parametrize(("args", "message"), [
    (["flip", "missing.csv"], "no such file"),
    (["flip", "WINE", "--label", "nope"], "unknown label column 'nope'"),
    (["poison-ivy", "WINE", "--label", "target"], "unknown attack 'poison-ivy'"),
    (["flip", "WINE", "--label", "target", "--rate", "1.5"], "poison rate must be in (0, 1]"),
    (["flip", "WINE", "--label", "target", "--size", "3"], "takes no option size"),
    (["patch", "WINE", "--label", "target"], "needs image data"),
    (["flip", "WINE", "--label", "target", "--out-suffix", ".npz"], "does not match the input's format"),
    (["feature", "WINE", "--label", "target", "--columns", "colour"], "unknown trigger columns"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(args, message, wine_csv, tmp_path):
    suffix = ".csv"
    if "--out-suffix" in args:
        suffix = args[args.index("--out-suffix") + 1]
        args = args[:args.index("--out-suffix")]
    out, truth = tmp_path / f"poisoned{suffix}", tmp_path / "truth.csv"
    args = [str(wine_csv) if a == "WINE" else a for a in args]
    res = attack(*args, "--out", out, "--truth", truth)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert list(tmp_path.iterdir()) == []


def test_help_explains_every_kind():
    res = runner.invoke(app, ["attack", "--help"], env={"COLUMNS": "160"})
    assert res.exit_code == 0
    for kind in ("flip", "targeted-flip", "adversarial-flip", "patch", "blend", "feature", "feature-collision",
                 "clean-label-backdoor"):
        assert f"• {kind}: " in res.output, kind  # one bullet per kind, read as prose
