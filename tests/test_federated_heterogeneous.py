"""The default rule with heterogeneous clients (issue 16): the attacks are performed, the screens must stop
them, and without an attack the default must be FedAvg. Reduced from benchmarks/federated_robustness.py
(8 rounds, one seed), thresholds a margin below what that run measures."""

import numpy as np
import pytest

from mithridate.federated.aggregators import ScreenedMean, make_aggregator
from mithridate.federated.simulate import simulate

ROUNDS = 8


def _heterogeneous(rng, n=12, d=40):
    """Honest updates that share a direction weakly and differ a lot (non-IID clients)."""
    common = np.zeros(d)
    common[0] = 3.0
    return common + rng.normal(0, 1.0, size=(n, d)) * rng.uniform(0.5, 1.5, size=(n, 1))


def test_without_an_attack_no_screen_fires_and_the_rule_is_the_mean():
    rng = np.random.default_rng(0)
    x = _heterogeneous(rng)
    rule = ScreenedMean(stateful=False)
    np.testing.assert_allclose(rule(x), x.mean(axis=0), rtol=1e-6)
    assert (rule.screened_ == "").all() and (rule.group_sizes_ == 1).all()


def test_colluders_sending_one_vector_get_one_voice():
    rng = np.random.default_rng(1)
    honest = _heterogeneous(rng)
    crafted = honest.mean(axis=0) - 1.5 * honest.std(axis=0)  # ALIE: aligned, short, inside the spread
    x = np.vstack([honest, np.repeat(crafted[None], 8, axis=0)])
    rule = ScreenedMean(stateful=False)
    ours = rule(x)
    assert (rule.group_sizes_[-8:] == 8).all() and (rule.group_sizes_[:12] == 1).all()
    truth = honest.mean(axis=0)
    assert np.linalg.norm(ours - truth) < 0.3 * np.linalg.norm(x.mean(axis=0) - truth)


def test_oversized_and_opposite_updates_are_left_out():
    rng = np.random.default_rng(2)
    honest = _heterogeneous(rng)
    boosted = 6.0 * honest[:3]  # model replacement: an honest-looking update, scaled
    flipped = -honest[3:6]  # sign flip at honest length
    rule = ScreenedMean()
    rule(honest)  # round 1 sets the reference (the server's momentum)
    agg = rule(np.vstack([honest, boosted, flipped]))
    assert rule.screened_[12:15].tolist() == ["size"] * 3
    assert rule.screened_[15:].tolist() == ["direction"] * 3
    assert (rule.screened_[:12] == "").all()
    np.testing.assert_allclose(agg, honest.mean(axis=0), rtol=1e-6)


def test_default_is_the_screened_mean_and_refuses_a_majority():
    assert isinstance(make_aggregator("default"), ScreenedMean)
    with pytest.raises(ValueError, match="n/2"):
        make_aggregator("default", num_malicious=10).fit(np.ones((20, 3)))


@pytest.mark.parametrize("attack", ["ipm", "alie", "min_max", "sign_flip"])
def test_default_holds_with_dirichlet_clients_where_mean_and_the_old_default_fail(attack):
    runs = {rule: simulate(rule, attack, clients=20, rounds=ROUNDS, malicious=0.3, alpha=0.5, seed=0)
            for rule in ("default", "mean", "nnm_centered_clipping")}
    ours = runs["default"].final_accuracy
    assert ours >= 0.6
    assert ours >= runs["mean"].final_accuracy + 0.05
    assert ours >= runs["nnm_centered_clipping"].final_accuracy + 0.05


def test_default_stops_the_backdoor_with_dirichlet_clients():
    result = simulate("default", "backdoor", clients=20, rounds=ROUNDS, malicious=0.3, alpha=0.5, seed=0)
    assert result.attack_success_rate <= 0.05
    assert simulate("mean", "backdoor", clients=20, rounds=ROUNDS, malicious=0.3, alpha=0.5,
                    seed=0).attack_success_rate >= 0.5  # the attack works when nothing stops it


@pytest.mark.parametrize("alpha", [None, 0.5, 0.1])
def test_without_attack_the_default_costs_nothing(alpha):
    ours = simulate("default", "none", clients=20, rounds=ROUNDS, alpha=alpha, seed=0).final_accuracy
    fedavg = simulate("mean", "none", clients=20, rounds=ROUNDS, alpha=alpha, seed=0).final_accuracy
    assert ours >= fedavg - 0.02


def test_a_zero_or_reversed_round_does_not_lock_the_rule_up():
    """A round whose aggregate is zero (or whose honest updates all point against the last aggregate) left a
    zero reference: every later update had cosine 0 and was screened, so training stopped for good."""
    rng = np.random.default_rng(4)
    honest = _heterogeneous(rng)
    rule = make_aggregator("default")
    rule(honest)
    rule(-honest)  # the honest updates all reverse (an overshoot): nothing passes the direction screen
    rule(np.zeros_like(honest))  # a round of zero updates
    after = rule(honest)
    assert np.linalg.norm(after) > 0.5 * np.linalg.norm(honest.mean(axis=0))
    assert (rule.screened_ == "").sum() >= len(honest) // 2
