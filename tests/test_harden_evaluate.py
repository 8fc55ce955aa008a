"""The attack x defence matrix (``mithridate evaluate``): each cell measures what it claims, the adaptive
round plays its moves, and a written config reproduces the matrix. Small seeded tables."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.data import demo
from mithridate.errors import DataError
from mithridate.harden.matrix import Plan, evaluate


@pytest.fixture(scope="module")
def flips():
    plan = Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.2}], "defences": ["none", "trimmed", "scan"],
                           "seed": 0})
    return evaluate(demo("breast_cancer"), plan)


def cell(matrix, attack, adaptation, defence) -> pd.Series:
    c = matrix.cells
    found = c[(c.attack == attack) & (c.adaptation == adaptation) & (c.defence == defence)]
    assert len(found) == 1, (attack, adaptation, defence)
    return found.iloc[0]


def test_flips_cost_accuracy_and_trimmed_training_wins_it_back(flips):
    clean, flipped = cell(flips, "clean", "as planned", "none"), cell(flips, "flip 20%", "as planned", "none")
    assert flipped.poisoned_rows == round(0.2 * flips.data["train_rows"])
    assert clean.accuracy > 0.9 and flipped.accuracy < clean.accuracy - 0.03
    assert cell(flips, "flip 20%", "as planned", "trimmed").accuracy > flipped.accuracy + 0.03
    assert np.isnan(flipped.attack_success)  # untargeted: its effect is the accuracy


def test_the_scan_cell_scores_detection_and_the_evasive_move_keeps_only_what_it_missed(flips):
    scanned = cell(flips, "flip 20%", "as planned", "scan")
    assert scanned.detect_recall > 0.6 and scanned.detect_precision > 0.6
    missed = round(scanned.poisoned_rows * (1 - scanned.detect_recall))
    evasive = cell(flips, "flip 20%", "evasive", "scan")
    assert evasive.poisoned_rows == missed > 0
    assert cell(flips, "flip 20%", "half rate", "scan").poisoned_rows == round(0.1 * flips.data["train_rows"])


def test_the_worst_case_is_the_worst_move(flips):
    worst = flips.worst_case().set_index("defence")
    for defence in ("none", "trimmed", "scan"):
        moves = flips.cells[(flips.cells.attack == "flip 20%") & (flips.cells.defence == defence)]
        assert {"as planned", "adversarial"} <= set(moves.adaptation)
        assert worst.loc[defence, "accuracy"] == moves.accuracy.min()
    # adversarial flips hurt the undefended model more than random ones at the same rate
    assert worst.loc["none", "worst_move"] == "adversarial"


def test_a_backdoor_succeeds_undefended_and_certified_cells_report_their_radii():
    plan = Plan.from_dict({"attacks": [{"kind": "feature", "rate": 0.1, "target": 0}],
                           "defences": ["none", "dpa"], "options": {"dpa": {"partitions": 10}}, "radii": [1, 2, 4]})
    matrix = evaluate(demo("breast_cancer"), plan)
    assert cell(matrix, "feature 10% target=0", "as planned", "none").attack_success > 0.8
    dpa = cell(matrix, "feature 10% target=0", "as planned", "dpa")
    certified = [dpa[f"certified_at_{r}"] for r in (1, 2, 4)]
    assert certified == sorted(certified, reverse=True) and certified[0] <= dpa.accuracy
    assert np.isnan(cell(matrix, "feature 10% target=0", "as planned", "none").certified_at_1)


def test_a_plan_is_checked_whole_before_anything_runs(monkeypatch):
    with pytest.raises(DataError, match="unknown defence 'scan\\+scan'"):
        Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.1}], "defences": ["none", "scan+scan"]})
    with pytest.raises(DataError, match="seed sets random_state"):
        Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.1, "random_state": 3}], "defences": ["none"]})
    with pytest.raises(DataError, match="at least one attack"):
        Plan.from_dict({"attacks": [], "defences": ["none"]})
    with pytest.raises(DataError, match="listed twice"):  # 1.5% and 1.5%: one cache key, one label
        Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.015}, {"kind": "flip", "rate": "0.015"}],
                        "defences": ["none"]})
    for bad in ({"adapt": "no"}, {"radii": 5}, {"radii": [1.5]}, {"seed": -1}, {"options": {"dpaa": {}}}):
        with pytest.raises(DataError):
            Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.1}], "defences": ["none"], **bad})
    # an attack the data cannot take (a source class with no rows to give) fails before any training
    plan = Plan.from_dict({"attacks": [{"kind": "flip", "rate": 0.1},
                                       {"kind": "targeted-flip", "rate": 0.1, "source": 1, "target": 1}],
                           "defences": ["none"]})
    monkeypatch.setattr(Plan, "trainer", lambda *a: pytest.fail("trained before the plan was checked"))
    with pytest.raises(DataError, match="must differ"):
        evaluate(demo("wine"), plan)


def test_the_evasive_move_restores_rows_exactly_and_keeps_dtypes():
    from mithridate.attacks import FeatureTrigger
    from mithridate.data import Dataset
    from mithridate.harden.matrix import _withdraw

    table = pd.DataFrame({"a": np.arange(40.0), "b": pd.Categorical(["x", "y"] * 20),
                          "c": pd.array([1, None] * 20, dtype="Int64")})
    train = Dataset.from_labels(table, ["p", "q"] * 20)
    poisoned = FeatureTrigger(target="p", rate=0.25, columns=["a", "b"], random_state=0).poison(train)
    caught = poisoned.mask & (np.arange(40) < 20)
    kept = _withdraw(train, poisoned, caught)
    assert list(kept.dataset.features.dtypes) == list(poisoned.dataset.features.dtypes)
    pd.testing.assert_frame_equal(kept.dataset.features[caught], train.features[caught])
    pd.testing.assert_frame_equal(kept.dataset.features[~caught], poisoned.dataset.features[~caught])
    assert (kept.dataset.y[caught] == train.y[caught]).all() and (kept.mask == poisoned.mask & ~caught).all()


def test_the_worst_case_of_a_backdoor_is_its_most_successful_move():
    from mithridate.harden.matrix import Matrix

    cells = pd.DataFrame({"attack": ["patch 5%"] * 3, "adaptation": ["as planned", "evasive", "half rate"],
                          "defence": ["scan"] * 3, "accuracy": [0.99, 0.98, 0.97],
                          "attack_success": [0.01, 0.40, 0.05]})
    worst = Matrix(cells, None, {}, 0.0).worst_case().iloc[0]
    assert (worst.worst_move, worst.attack_success, worst.first_round_success) == ("evasive", 0.40, 0.01)


def test_evaluate_command_writes_the_matrix_and_its_config_reproduces_it(tmp_path):
    runner = CliRunner()
    config = tmp_path / "plan.yaml"
    config.write_text(yaml.safe_dump({"attacks": [{"kind": "targeted-flip", "rate": 0.3, "source": 0, "target": 1},
                                                  {"kind": "flip", "rate": 0.2}],
                                      "defences": ["none", "dpa"], "options": {"dpa": {"partitions": 5}},
                                      "seed": 3}))
    first = runner.invoke(app, ["evaluate", "demo:wine", "--config", str(config), "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "worst attack success per defence" in first.output
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert files == {"matrix.csv", "matrix.json", "report.html", "config.yaml"}
    again = runner.invoke(app, ["evaluate", "demo:wine", "--config", str(tmp_path / "a" / "config.yaml"),
                                "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    a, b = (pd.read_csv(tmp_path / d / "matrix.csv").drop(columns="seconds") for d in "ab")
    pd.testing.assert_frame_equal(a, b)
    success = a[a.attack.str.startswith("targeted")].set_index("defence").attack_success
    assert success["none"] > 0.15  # measured 0.27: 30% of class 0 moved to class 1 shows in its test rows
    document = json.loads((tmp_path / "a" / "matrix.json").read_text())
    assert document["plan"]["seed"] == 3 and len(document["cells"]) == len(a) == 8  # clean 2, planned 4, moves 2
    assert set(a.adaptation) == {"as planned", "adversarial"}
    assert "<img" in (tmp_path / "a" / "report.html").read_text()
