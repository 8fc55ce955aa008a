"""Client-level DP: the noise scale matches what the accountant charges; rules that would void the claim
are refused."""

from __future__ import annotations

import numpy as np
import pytest

from mithridate.federated import make_aggregator
from mithridate.federated.dp import ClientDP, DPError, epsilon_for, noise_multiplier_for
from mithridate.federated.simulate import simulate

pytest.importorskip("dp_accounting")


def test_calibrated_noise_spends_exactly_the_target_epsilon():
    z = noise_multiplier_for(4.0, 1e-5, rounds=10)
    assert epsilon_for(z, 1e-5, 10) == pytest.approx(4.0, rel=1e-2)
    assert epsilon_for(0.9 * z, 1e-5, 10) > 4.2  # less noise would overspend
    sampled = noise_multiplier_for(4.0, 1e-5, rounds=10, sampling_rate=0.1)
    assert sampled < z  # subsampling amplifies privacy


def test_single_round_rdp_bound_is_close_to_the_exact_gaussian_epsilon():
    import dp_accounting

    z = 1.5
    exact = dp_accounting.get_epsilon_gaussian(z, 1e-5)
    ours = epsilon_for(z, 1e-5, 1)
    assert exact <= ours < 1.5 * exact


def test_noise_added_is_the_one_the_accountant_charges_for():
    clip, m, rounds = 0.5, 50, 10
    dp = ClientDP(epsilon=4.0, delta=1e-5, clip=clip, random_state=0)
    dp.prepare(make_aggregator("mean"), expected_clients=m, rounds=rounds)
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(rounds):
        updates = rng.normal(size=(m, 4000))
        updates *= 3 / np.linalg.norm(updates, axis=1, keepdims=True)  # all longer than the clip
        clipped_mean = updates.sum(axis=0) * (clip / 3) / m
        outs.append(dp.aggregate(updates) - clipped_mean)
    measured = np.concatenate(outs).std()
    assert measured == pytest.approx(dp.noise_multiplier_ * clip / m, rel=0.02)
    assert dp.epsilon_spent() == pytest.approx(4.0, rel=1e-2)
    assert dp.history_ == sorted(dp.history_)  # epsilon grows round by round
    assert epsilon_for(measured * m / clip, 1e-5, rounds) == pytest.approx(dp.epsilon_spent(), rel=0.05)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "krum", "bulyan", "geometric_median", "default"])
def test_rules_with_larger_sensitivity_are_refused(name):
    dp = ClientDP(epsilon=4.0)
    with pytest.raises(DPError, match="more than clip/m"):
        dp.prepare(make_aggregator(name), expected_clients=20, rounds=5)


def test_centered_clipping_is_private_only_with_one_iteration():
    with pytest.raises(DPError, match="iterations=1"):
        ClientDP(4.0).prepare(make_aggregator("centered_clipping"), 20, 5)
    ClientDP(4.0).prepare(make_aggregator("centered_clipping", iterations=1), 20, 5)


def test_adaptive_clipping_tracks_the_median_norm_and_keeps_the_budget():
    dp = ClientDP(epsilon=8.0, clip=10.0, adaptive_clip=True, sigma_count=5.0, random_state=1)
    dp.prepare(make_aggregator("mean"), expected_clients=100, rounds=30)
    assert dp.update_noise_multiplier_ > dp.noise_multiplier_
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = rng.normal(size=(100, 50))
        x *= rng.uniform(0.5, 1.5, size=(100, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
        dp.aggregate(x)
    assert 0.6 < dp.clip_ < 1.6
    assert dp.epsilon_spent() == pytest.approx(8.0, rel=1e-2)


def test_simulation_reports_the_spent_epsilon_each_round():
    result = simulate("mean", "none", clients=20, rounds=4, seed=0, dp=ClientDP(epsilon=8.0, clip=0.5))
    eps = [r.epsilon for r in result.history]
    assert eps == sorted(eps) and result.epsilon == pytest.approx(8.0, rel=1e-2)
    assert result.to_dict()["epsilon"] == result.epsilon
