"""Robust aggregators: parity with Flower's strategies, robustness, refusals, bounded weights, reputation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from mithridate.federated import NAMES, AggregationError, aggregate, make_aggregator
from mithridate.federated.aggregators import Bulyan, CenteredClipping, bound_weights
from mithridate.federated.aggregators.nnm import nnm
from mithridate.federated.reputation import Reputation


def _honest_and_bad(n=20, f=4, d=50, seed=0, bad_value=50.0):
    rng = np.random.default_rng(seed)
    honest = rng.normal(1.0, 0.3, size=(n - f, d))
    bad = np.full((f, d), bad_value) + rng.normal(0, 0.1, size=(f, d))
    return np.vstack([honest, bad]), honest.mean(axis=0)


ROBUST = ["median", "trimmed_mean", "krum", "multi_krum", "bulyan", "geometric_median", "centered_clipping",
          "default", "nnm_median", "nnm_krum"]


@pytest.mark.parametrize("name", ROBUST)
def test_robust_rules_ignore_a_minority_of_huge_updates(name):
    x, honest_mean = _honest_and_bad()
    err = np.linalg.norm(aggregate(name, x, num_malicious=4) - honest_mean)
    naive = np.linalg.norm(aggregate("mean", x) - honest_mean)
    assert naive > 50
    assert err < 0.3 * np.sqrt(x.shape[1]), err  # closer than a typical honest update is to the honest mean


def test_norm_bound_caps_a_boosted_update():
    x, honest_mean = _honest_and_bad(f=1, bad_value=1e4)
    err = np.linalg.norm(aggregate("norm_bound", x) - honest_mean)
    assert err < 1.0


def test_fltrust_ignores_updates_that_point_away_from_the_server():
    x, honest_mean = _honest_and_bad(f=8, bad_value=-30.0)
    out = aggregate("fltrust", x, server_update=honest_mean + 0.05)
    assert np.linalg.norm(out - honest_mean) < 0.5
    with pytest.raises(AggregationError, match="server_update"):
        aggregate("fltrust", x)


@pytest.mark.parametrize("name, n, f, needs", [("krum", 6, 2, "2f \\+ 3"), ("multi_krum", 4, 1, "2f \\+ 3"),
                                               ("bulyan", 10, 2, "4f \\+ 3"), ("median", 6, 3, "n/2"),
                                               ("trimmed_mean", 6, 3, "2f"), ("default", 6, 3, "n/2")])
def test_refuses_configurations_it_cannot_defend(name, n, f, needs):
    x = np.random.default_rng(0).normal(size=(n, 5))
    with pytest.raises(AggregationError, match=needs):
        aggregate(name, x, num_malicious=f)


def test_bad_input_and_unknown_names_are_one_line_errors():
    with pytest.raises(AggregationError, match="unknown aggregator"):
        aggregate("fedsomething", np.ones((3, 2)))
    with pytest.raises(AggregationError, match="no option"):
        aggregate("median", np.ones((3, 2)), m=2)
    with pytest.raises(AggregationError, match="NaN"):
        aggregate("mean", np.array([[1.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(AggregationError, match="single vector"):
        aggregate("mean", np.ones(4))


def test_self_reported_counts_are_bounded():
    x = np.vstack([np.zeros((9, 3)), np.full((1, 3), 10.0)])
    counts = [50] * 9 + [10**6]
    w = bound_weights(counts, 10)
    assert w[-1] == pytest.approx(2 * 50 / (9 * 50 + 100))
    assert aggregate("mean", x, weights=counts)[0] < 2.5  # FedAvg with raw counts would give ~10
    assert aggregate("mean", x, weights=counts, max_weight_ratio=None)[0] > 9.9


def test_geometric_median_minimises_the_sum_of_distances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 3))
    ours = aggregate("geometric_median", x, tol=1e-10, nu=1e-12, max_iter=1000)
    ref = minimize(lambda z: np.linalg.norm(x - z, axis=1).sum(), x.mean(0), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    assert np.linalg.norm(x - ours, axis=1).sum() <= np.linalg.norm(x - ref, axis=1).sum() + 1e-8


def test_centered_clipping_moves_at_most_tau_per_iteration_per_client():
    x = np.zeros((10, 4))
    x[0] = 1e6
    out = CenteredClipping(tau=1.0, iterations=1, center=np.zeros(4))(x)
    assert np.linalg.norm(out) == pytest.approx(0.1)


def test_centered_clipping_keeps_its_center_across_rounds():
    cc = make_aggregator("centered_clipping")
    x, _honest_mean = _honest_and_bad()
    cc(x)
    assert np.allclose(cc.center_, cc.aggregate_)


def test_nnm_mixes_each_update_with_its_nearest_neighbours():
    x = np.array([[0.0], [1.0], [2.0], [90.0]])
    assert nnm(x, 1).ravel().tolist() == [1.0, 1.0, 1.0, pytest.approx(31.0)]


def test_every_registered_name_aggregates():
    x, _ = _honest_and_bad(n=15, f=2)
    for name in NAMES:
        extra = {"server_update": x[:13].mean(0)} if name == "fltrust" else {}
        assert aggregate(name, x, **extra).shape == (x.shape[1],)


def test_reputation_excludes_a_repeat_offender_and_no_one_else():
    rng = np.random.default_rng(0)
    rep, agg = Reputation(), make_aggregator("median")
    for _ in range(6):
        x = rng.normal(1.0, 0.3, size=(10, 20))
        x[3] = -5.0
        allowed = rep.allowed(range(10))
        agg.fit(x[allowed])
        rep.update(np.arange(10)[allowed], agg.suspicion_)
    assert rep.allowed(range(10)).tolist() == [i != 3 for i in range(10)]


# -- parity with Flower's own strategies, on the same client updates ----------------------------------

flwr = pytest.importorskip("flwr")


def _replies(x, counts):
    import time

    from flwr.app import Array, ArrayRecord, Metadata, MetricRecord, RecordDict
    from flwr.app.message.message import make_message

    out = []
    for i, (row, c) in enumerate(zip(x, counts, strict=True)):
        content = RecordDict({
            "arrays": ArrayRecord({"w": Array(row[:30].reshape(5, 6).copy()), "b": Array(row[30:].copy())}),
            "metrics": MetricRecord({"num-examples": int(c)}),
        })
        md = Metadata(run_id=1, message_id=str(i), src_node_id=i + 1, dst_node_id=0, reply_to_message_id="0",
                      group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
        out.append(make_message(md, content))
    return out


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum", "bulyan"])
def test_parity_with_flower(rule):
    from flwr.serverapp import strategy as fs

    rng = np.random.default_rng(3)
    x = rng.normal(size=(15, 40)).astype(np.float32)
    x[:3] += 5  # three outliers so the selections matter
    counts = rng.integers(10, 100, size=15)
    flower, ours = {
        "median": (fs.FedMedian(), {}),
        "trimmed_mean": (fs.FedTrimmedAvg(beta=0.2), {"beta": 0.2}),
        "krum": (fs.Krum(num_malicious_nodes=3), {"num_malicious": 3}),
        "multi_krum": (fs.MultiKrum(num_malicious_nodes=3, num_nodes_to_select=6), {"num_malicious": 3, "m": 6}),
        "bulyan": (fs.Bulyan(num_malicious_nodes=3), {"num_malicious": 3}),
    }[rule]
    arrays, _ = flower.aggregate_train(1, _replies(x, counts))
    theirs = np.concatenate([arrays["w"].numpy().ravel(), arrays["b"].numpy().ravel()])
    mine = aggregate(rule, x, weights=counts, max_weight_ratio=None, **ours)
    np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)


def test_big_inputs_aggregated_in_parallel_blocks_match_the_plain_formula():
    # 1.2M values: above by_column_blocks' serial threshold, so the blocks run on threads
    x = np.random.default_rng(5).normal(size=(20, 60_000)).astype(np.float32)
    ordered = np.sort(x, axis=0)
    np.testing.assert_array_equal(aggregate("median", x), np.median(x, axis=0))
    np.testing.assert_allclose(aggregate("trimmed_mean", x), ordered[4:16].mean(axis=0), rtol=1e-5, atol=1e-6)
    rows = Bulyan(num_malicious=4).fit(x, suspicion=False)
    kept = x[rows.selected_]
    closest = np.take_along_axis(kept, np.argsort(np.abs(kept - np.median(kept, axis=0)), axis=0)[:4], axis=0)
    np.testing.assert_allclose(rows.aggregate_, closest.mean(axis=0), rtol=1e-5, atol=1e-6)
