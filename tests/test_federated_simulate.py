"""The in-process simulator on digits: attacks hurt FedAvg, our default holds; the CLI contract."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mithridate.federated.simulate import partition, simulate

ROUNDS = 20


@pytest.fixture(scope="module")
def fedavg_clean():
    return simulate("mean", "none", clients=20, rounds=ROUNDS, seed=0).final_accuracy


def test_sign_flipping_breaks_fedavg_and_not_the_default(fedavg_clean):
    assert fedavg_clean > 0.88
    assert simulate("mean", "sign_flip", clients=20, rounds=ROUNDS, seed=0).final_accuracy < 0.3
    result = simulate("default", "sign_flip", clients=20, rounds=ROUNDS, seed=0)
    assert result.final_accuracy >= fedavg_clean - 0.03
    assert result.history[-1].excluded == result.malicious_ids  # the screens left out exactly the flippers


@pytest.mark.parametrize("attack", ["alie", "ipm", "min_max", "gaussian", "label_flip"])
def test_default_holds_accuracy_within_three_points(attack, fedavg_clean):
    result = simulate("default", attack, clients=20, rounds=ROUNDS, seed=0)
    assert len(result.malicious_ids) == 4
    assert result.final_accuracy >= fedavg_clean - 0.03, result.final_accuracy


def test_model_replacement_backdoors_fedavg_but_not_the_default(fedavg_clean):
    plain = simulate("mean", "backdoor", clients=20, rounds=ROUNDS, seed=0)
    assert plain.attack_success_rate > 0.8
    ours = simulate("default", "backdoor", clients=20, rounds=ROUNDS, seed=0)
    assert ours.attack_success_rate < 0.1
    assert ours.final_accuracy >= fedavg_clean - 0.03


def test_fltrust_with_a_small_root_set_resists_sign_flipping():
    assert simulate("fltrust", "sign_flip", clients=20, rounds=10, seed=1).final_accuracy > 0.8


def test_dirichlet_partition_covers_every_row_once():
    import numpy as np

    y = np.repeat(np.arange(10), 30)
    parts = partition(y, 7, alpha=0.3, rng=np.random.default_rng(0))
    assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    top_share = max(np.bincount(y[p], minlength=10).max() / max(len(p), 1) for p in parts)
    assert top_share > 0.3  # label skew: IID shards hold about 0.1 of each class


def test_cli_fl_simulate_writes_results_and_plot(tmp_path):
    from mithridate.cli import app

    res = CliRunner().invoke(app, ["fl", "simulate", "--aggregator", "default", "--attack", "backdoor",
                                   "--malicious", "0.2", "--clients", "20", "--rounds", "6",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "round   6" in res.output and "attack success" in res.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert {"final_accuracy", "attack_success_rate"} <= set(data)
    assert len(data["rounds"]) == 6
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_cli_refuses_an_indefensible_configuration(tmp_path):
    from mithridate.cli import app

    res = CliRunner().invoke(app, ["fl", "simulate", "--aggregator", "bulyan", "--clients", "10",
                                   "--num-malicious", "3", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "4f + 3" in res.output


def test_cli_says_when_a_run_goes_beyond_the_rule_or_an_option_would_be_ignored(tmp_path):
    from mithridate.cli import app

    ignored = CliRunner().invoke(app, ["fl", "simulate", "--dropout", "0.2", "--out", str(tmp_path / "a")])
    assert ignored.exit_code == 2 and "--secure" in ignored.stderr and not (tmp_path / "a").exists()
    args = ["fl", "simulate", "--aggregator", "median", "--attack", "sign_flip", "--malicious", "0.6",
            "--clients", "5", "--rounds", "1"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert refused.exit_code == 2 and not (tmp_path / "b").exists()
    assert "beyond what median is built to withstand (at most 2" in " ".join(refused.stderr.split())
    krum = CliRunner().invoke(app, ["fl", "simulate", "--aggregator", "krum", "--attack", "ipm", "--malicious", "0.6",
                                    "--out", str(tmp_path / "k")])
    assert krum.exit_code == 2 and "krum" in krum.stderr and not (tmp_path / "k").exists()
    beyond = CliRunner().invoke(app, [*args, "--allow-beyond", "--out", str(tmp_path / "c")])
    assert beyond.exit_code == 0, beyond.output
    assert "expect it to fail" in " ".join(beyond.stderr.split())


def test_cli_fl_simulate_with_dp_reports_epsilon(tmp_path):
    pytest.importorskip("dp_accounting")
    from mithridate.cli import app

    res = CliRunner().invoke(app, ["fl", "simulate", "--aggregator", "mean", "--dp-epsilon", "4", "--rounds", "3",
                                   "--clients", "10", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "results.json").read_text())
    assert abs(data["epsilon"] - 4.0) < 0.05
    assert "epsilon 4.0" in res.output


def test_strong_label_skew_gives_every_client_rows():
    """Dirichlet 0.1 over 20 clients left some with no rows, and the simulation crashed on an empty shard."""
    import numpy as np

    y = np.repeat(np.arange(10), 135)
    for seed in range(5):
        parts = partition(y, 20, alpha=0.1, rng=np.random.default_rng(seed))
        assert min(len(p) for p in parts) >= len(y) // (10 * 20)  # a tenth of a fair share
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    result = simulate("mean", "none", clients=20, rounds=1, alpha=0.1, seed=2)
    assert 0 <= result.final_accuracy <= 1


def test_backdoor_clients_with_skewed_shards_stamp_what_they_can():
    """A backdoor client whose Dirichlet shard is mostly the target class crashed the simulation."""
    result = simulate("mean", "backdoor", clients=20, rounds=1, alpha=0.1, malicious=0.3, seed=0)
    assert result.attack_success_rate is not None
