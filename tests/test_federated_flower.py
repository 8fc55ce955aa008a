"""Flower integration: our strategy inside a real ``flwr`` simulation, the strategy's aggregate_train on
hand-made replies, and the client mods."""

from __future__ import annotations

import time

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Metadata, MetricRecord, RecordDict  # noqa: E402
from flwr.app.message.message import make_message  # noqa: E402

from mithridate.federated.dp import ClientDP  # noqa: E402
from mithridate.federated.flower import RobustStrategy, clip_mod, flatten, malicious_mod, unflatten  # noqa: E402


class _Grid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def _msg(content, src=0, dst=0, kind="train"):
    md = Metadata(run_id=1, message_id=f"{src}-{dst}", src_node_id=src, dst_node_id=dst, reply_to_message_id="",
                  group_id="1", created_at=time.time(), ttl=3600.0, message_type=kind)
    return make_message(md, content)


def _global():
    return ArrayRecord({"w": Array(np.zeros((4, 5), np.float32)), "b": Array(np.zeros(3, np.float32))})


def _reply(node, update, count=50):
    g = _global()
    return _msg(RecordDict({"arrays": unflatten(flatten(g) + update, g),
                            "metrics": MetricRecord({"num-examples": count, "loss": 1.0})}), src=node)


@pytest.fixture
def identity(monkeypatch):
    """The run/task identity Flower sets inside a real run (needed to build instruction messages)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attr, 1)


def _start(strategy, rnd, n=10):
    return list(strategy.configure_train(rnd, _global(), ConfigRecord(), _Grid(n)))


def test_strategy_aggregates_updates_robustly_and_reports_whom_it_left_out(identity):
    rng = np.random.default_rng(0)
    strategy = RobustStrategy("default", fraction_evaluate=0.0)
    for rnd in range(1, 6):
        sent = _start(strategy, rnd)
        assert len(sent) == 10
        replies = [_reply(i, rng.normal(1.0, 0.1, 23).astype(np.float32)) for i in range(1, 9)]
        replies += [_reply(i, np.full(23, -20.0, np.float32), count=10**6) for i in (9, 10)]
        arrays, metrics = strategy.aggregate_train(rnd, replies)
        assert abs(flatten(arrays).mean() - 1.0) < 0.1
    assert strategy.excluded_[5] == [9, 10]
    assert metrics["excluded-clients"] == 2
    assert arrays["w"].numpy().shape == (4, 5) and arrays["w"].numpy().dtype == np.float32


def test_strategy_never_trusts_raw_example_counts(identity):
    strategy = RobustStrategy("mean", fraction_evaluate=0.0)
    _start(strategy, 1)
    replies = [_reply(i, np.zeros(23, np.float32)) for i in range(1, 10)]
    replies.append(_reply(10, np.full(23, 10.0, np.float32), count=10**6))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert flatten(arrays).max() < 2.5  # Flower's FedAvg would return ~10


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum"])
def test_strategy_equals_the_functional_rule_on_the_same_updates(identity, rule):
    from mithridate.federated import aggregate

    rng = np.random.default_rng(1)
    strategy = RobustStrategy(rule, reputation=False, fraction_evaluate=0.0)
    _start(strategy, 1)
    x = rng.normal(size=(10, 23)).astype(np.float32)
    arrays, _ = strategy.aggregate_train(1, [_reply(i + 1, x[i]) for i in range(10)])
    np.testing.assert_allclose(flatten(arrays), aggregate(rule, x), rtol=1e-5, atol=1e-6)


def test_strategy_with_dp_reports_epsilon_and_refuses_krum(identity):
    strategy = RobustStrategy("mean", dp=ClientDP(epsilon=5.0, clip=1.0), num_rounds=3, expected_clients=10,
                              fraction_evaluate=0.0)
    for rnd in (1, 2, 3):
        _start(strategy, rnd)
        _, metrics = strategy.aggregate_train(rnd, [_reply(i, np.ones(23, np.float32)) for i in range(1, 11)])
    assert metrics["epsilon"] == pytest.approx(5.0, rel=1e-2)
    with pytest.raises(ValueError, match="clip/m"):
        RobustStrategy("krum", dp=ClientDP(epsilon=5.0), num_rounds=3, expected_clients=10)


def _context(pid=0, parts=5):
    return Context(run_id=1, node_id=1, node_config={"partition-id": pid, "num-partitions": parts},
                   state=RecordDict(), run_config={})


def _call(mod, update, pid=0):
    incoming = _msg(RecordDict({"arrays": _global(), "config": ConfigRecord()}))

    def app(message, context):
        return _reply(1, update)

    return flatten(mod(incoming, _context(pid), app).content["arrays"])


def test_clip_mod_bounds_the_update_norm():
    out = _call(clip_mod(1.0), np.full(23, 3.0, np.float32))
    assert np.linalg.norm(out) == pytest.approx(1.0, rel=1e-5)
    small = np.full(23, 0.01, np.float32)
    np.testing.assert_allclose(_call(clip_mod(1.0), small), small)


def test_malicious_mod_only_touches_the_chosen_clients():
    mod = malicious_mod("sign_flip", lambda ctx: ctx.node_config["partition-id"] == 0)
    np.testing.assert_allclose(_call(mod, np.ones(23, np.float32), pid=0), -4.0)
    np.testing.assert_allclose(_call(mod, np.ones(23, np.float32), pid=1), 1.0)


@pytest.mark.slow
def test_real_flower_simulation_robust_beats_fedavg_and_secure_aggregation_survives_dropouts():
    """One real Flower simulation (Ray backend, 6 SuperNodes, 2 sign-flipping): FedAvg, our strategy, then
    secure aggregation with one node dropping before masking and one after."""
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation

    from mithridate.federated.flower_digits import digits_accuracy, digits_client_app, initial_arrays
    from mithridate.federated.secagg.flower import secagg_mod, secure_fedavg

    results = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        for name, strategy in [("fedavg", FedAvg(fraction_evaluate=0.0)),
                               ("ours", RobustStrategy("default", fraction_evaluate=0.0))]:
            res = strategy.start(grid=grid, initial_arrays=initial_arrays(), num_rounds=3)
            results[name] = digits_accuracy(res.arrays)
        results["secure"] = secure_fedavg(grid, initial_arrays(), num_rounds=2, clip=1.0, dropout=0.2).rounds

    app = digits_client_app(n_malicious=2, attack="sign_flip", mods=[secagg_mod], drop={4: "unmask", 5: "masked"})
    run_simulation(server, app, num_supernodes=6,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    assert results["fedavg"] < 0.3
    assert results["ours"] > 0.6
    for info in results["secure"]:
        assert "aborted" not in info, info
        assert info["survivors"] == 5 and info["dropped"] == 1  # node 5 dropped before masking
